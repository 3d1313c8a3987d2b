/** createLocalSync: the shop's localSync calls, queued durably and sent in batches. */

import { Outbox, type Entry } from "./outbox.js";
import type {
  AuthUserLike,
  CartItemRecord,
  Collection,
  Operation,
  OrderRecord,
  ProductRecord,
  ProfileRecord,
  RowRecord,
  ServerError,
  UserRoleRecord,
  WishlistItemRecord,
} from "./records.js";
import { defaultStorage, defaultTabId, type StorageAdapter } from "./storage.js";

/** Returns the user's Supabase access token; `forceRefresh` after the server answered 401. */
export type AccessTokenGetter = (context: { forceRefresh: boolean }) =>
  Promise<string | null | undefined> | string | null | undefined;

export interface LocalSyncOptions {
  /** Where FitKart Sync listens. Default `http://localhost:5000`. */
  baseUrl?: string;
  /** The user's access token, e.g. `async () => (await supabase.auth.getSession()).data.session?.access_token`. */
  getAccessToken?: AccessTokenGetter;
  /** Where the outbox is kept. Default: localStorage when present, else memory. */
  storage?: StorageAdapter;
  /** The fetch to use. Default: the global one. */
  fetch?: typeof fetch;
  /** Operations per request (the server's FITKART_MAX_BATCH is the ceiling). Default 500. */
  maxBatch?: number;
  /** Queue length past which queued upserts of one record are merged. Default 5000. */
  maxQueue?: number;
  /** How long a burst of changes is gathered before sending. Default 50 ms. */
  flushDelayMs?: number;
  /** First retry delay after a failure; doubles each time, with jitter. Default 1 s. */
  retryBaseMs?: number;
  /** Longest retry delay. Default 60 s. */
  retryMaxMs?: number;
  /** How often pending changes are retried anyway. Default 15 s. */
  flushIntervalMs?: number;
  /** Prefix of the storage keys. Default `fitkart-sync`. */
  storageKey?: string;
  /** This tab's queue. Default: an id kept in sessionStorage (one queue per tab, kept across reloads). */
  tabId?: string;
  /** Queues of other tabs silent this long are taken over. Default 60 s. */
  staleQueueMs?: number;
  /** Start the retry timer and listen for `online` events. Default true. */
  autoStart?: boolean;
  /** Randomness for the jitter (tests pass a fixed one). */
  random?: () => number;
}

/** What the client is doing, for a status badge or for tests. */
export interface SyncStatus {
  pending: number;
  flushing: boolean;
  lastError: string | null;
  lastSyncedAt: number | null;
  nextRetryAt: number | null;
  rejected: number;
  overCapacity: boolean;
}

/** An operation the server refused for good (invalid or not allowed); it was taken off the queue. */
export interface Rejection {
  operation: Operation;
  error: ServerError;
}

export interface LocalSync {
  /** Mirror a profile: a supabase-js user (`{id, email, user_metadata}`) or a profiles row. */
  syncProfile(user: AuthUserLike | ProfileRecord): Promise<void>;
  /** Mirror a cart row: the full row, or only `{id, quantity}`. */
  syncCartItem(item: CartItemRecord): Promise<void>;
  deleteCartItem(id: string): Promise<void>;
  clearCart(userId: string): Promise<void>;
  syncOrder(order: OrderRecord): Promise<void>;
  syncWishlistItem(item: WishlistItemRecord): Promise<void>;
  deleteWishlistItem(userId: string, productId: string): Promise<void>;
  clearWishlist(userId: string): Promise<void>;
  syncProduct(product: ProductRecord): Promise<void>;
  syncUserRole(role: UserRoleRecord): Promise<void>;
  /** Queue any upsert or delete. */
  enqueue(operation: Operation): Promise<void>;
  /** Send what is queued; resolves (never rejects) with the status once the attempt is over. */
  flush(options?: { keepalive?: boolean }): Promise<SyncStatus>;
  status(): SyncStatus;
  /** Hear about every status change; returns the unsubscribe function. */
  subscribe(listener: (status: SyncStatus) => void): () => void;
  /** Hear about operations the server refused for good. */
  onRejected(listener: (rejection: Rejection) => void): () => void;
  /** Stop timers and listeners (the queue stays in storage). */
  stop(): void;
}

const DONE: Promise<void> = Promise.resolve();
// Whole-request answers worth retrying: the token, the server's address rules or its load may change.
const RETRYABLE_STATUSES = new Set([401, 403, 408, 425, 429]);
// Per-operation answers worth retrying; a 403 there is a row the caller may not touch: final.
const RETRYABLE_RESULTS = new Set([408, 425, 429]);

class LocalSyncClient implements LocalSync {
  private readonly outbox: Outbox;
  private readonly baseUrl: string;
  private readonly fetcher: typeof fetch;
  private readonly random: () => number;
  private readonly statusListeners = new Set<(status: SyncStatus) => void>();
  private readonly rejectionListeners = new Set<(rejection: Rejection) => void>();
  private batchSize: number;
  private inflight: Promise<void> | null = null;
  private failures = 0;
  private lastError: string | null = null;
  private lastSyncedAt: number | null = null;
  private nextRetryAt: number | null = null;
  private rejected = 0;
  private soon: ReturnType<typeof setTimeout> | null = null;
  private interval: ReturnType<typeof setInterval> | null = null;
  private readonly onOnline = () => void this.flushNow();

  constructor(private readonly options: LocalSyncOptions) {
    this.baseUrl = (options.baseUrl ?? "http://localhost:5000").replace(/\/+$/, "");
    this.fetcher = options.fetch ?? ((...args: Parameters<typeof fetch>) => globalThis.fetch(...args));
    this.random = options.random ?? Math.random;
    this.batchSize = options.maxBatch ?? 500;
    const prefix = `${options.storageKey ?? "fitkart-sync"}:queue:`;
    this.outbox = new Outbox(options.storage ?? defaultStorage(), prefix + (options.tabId ?? defaultTabId()),
      options.maxQueue ?? 5000);
    this.outbox.adoptStale(prefix, options.staleQueueMs ?? 60_000);
    if (options.autoStart ?? true) {
      this.start();
    }
  }

  syncProfile(user: AuthUserLike | ProfileRecord): Promise<void> {
    if (typeof (user as ProfileRecord).user_id === "string") {
      return this.upsert("profiles", user as ProfileRecord);
    }
    const auth = user as AuthUserLike;
    return this.upsert("profiles", {
      user_id: auth.id,
      email: auth.email ?? undefined,
      full_name: auth.user_metadata?.full_name ?? undefined,
      avatar_url: auth.user_metadata?.avatar_url ?? undefined,
    });
  }

  syncCartItem(item: CartItemRecord): Promise<void> {
    return this.upsert("cart_items", item);
  }

  deleteCartItem(id: string): Promise<void> {
    return this.enqueue({ op: "delete", collection: "cart_items", record: { id } });
  }

  clearCart(userId: string): Promise<void> {
    return this.enqueue({ op: "delete", collection: "cart_items", record: { user_id: userId } });
  }

  syncOrder(order: OrderRecord): Promise<void> {
    return this.upsert("orders", order);
  }

  syncWishlistItem(item: WishlistItemRecord): Promise<void> {
    return this.upsert("wishlist_items", item);
  }

  deleteWishlistItem(userId: string, productId: string): Promise<void> {
    return this.enqueue({ op: "delete", collection: "wishlist_items", record: { user_id: userId, product_id: productId } });
  }

  clearWishlist(userId: string): Promise<void> {
    return this.enqueue({ op: "delete", collection: "wishlist_items", record: { user_id: userId } });
  }

  syncProduct(product: ProductRecord): Promise<void> {
    return this.upsert("products", product);
  }

  syncUserRole(role: UserRoleRecord): Promise<void> {
    return this.upsert("user_roles", role);
  }

  enqueue(operation: Operation): Promise<void> {
    try {
      // JSON round trip: a plain copy, without undefined fields, exactly as it will be sent.
      const record = JSON.parse(JSON.stringify(operation.record ?? {})) as RowRecord;
      this.outbox.push({ op: operation.op, collection: operation.collection, record });
      this.scheduleFlush();
    } catch (error) {
      this.lastError = `could not queue a change: ${String(error)}`;
    }
    this.notify();
    return DONE;
  }

  flush(options: { keepalive?: boolean } = {}): Promise<SyncStatus> {
    if (!this.inflight) {
      this.inflight = this.drain(options.keepalive ?? false)
        .catch((error: unknown) => {
          this.outbox.release();
          this.failed(String(error));
        })
        .finally(() => {
          this.inflight = null;
          this.notify();
        });
      this.notify();
    }
    return this.inflight.then(() => this.status());
  }

  status(): SyncStatus {
    return {
      pending: this.outbox.size,
      flushing: this.inflight !== null,
      lastError: this.lastError ?? this.outbox.storageError,
      lastSyncedAt: this.lastSyncedAt,
      nextRetryAt: this.nextRetryAt,
      rejected: this.rejected,
      overCapacity: this.outbox.overCapacity,
    };
  }

  subscribe(listener: (status: SyncStatus) => void): () => void {
    this.statusListeners.add(listener);
    return () => void this.statusListeners.delete(listener);
  }

  onRejected(listener: (rejection: Rejection) => void): () => void {
    this.rejectionListeners.add(listener);
    return () => void this.rejectionListeners.delete(listener);
  }

  stop(): void {
    if (this.soon) clearTimeout(this.soon);
    if (this.interval) clearInterval(this.interval);
    this.soon = this.interval = null;
    const events = globalThis as { removeEventListener?: (type: string, listener: () => void) => void };
    events.removeEventListener?.("online", this.onOnline);
  }

  private start(): void {
    const every = this.options.flushIntervalMs ?? 15_000;
    this.interval = unref(setInterval(() => {
      if (this.outbox.size > 0 && (this.nextRetryAt === null || Date.now() >= this.nextRetryAt)) {
        void this.flush();
      }
    }, every));
    const events = globalThis as { addEventListener?: (type: string, listener: () => void) => void };
    events.addEventListener?.("online", this.onOnline);
    if (this.outbox.size > 0) {
      this.scheduleFlush();
    }
  }

  private upsert(collection: Collection, record: RowRecord): Promise<void> {
    return this.enqueue({ op: "upsert", collection, record });
  }

  /** Send soon, unless a back-off is running: a burst of changes goes out as one batch. */
  private scheduleFlush(): void {
    if (this.soon || this.nextRetryAt !== null) {
      return;
    }
    this.soon = unref(setTimeout(() => {
      this.soon = null;
      void this.flush();
    }, this.options.flushDelayMs ?? 50));
  }

  /** Back online: retry at once, forgetting the back-off. */
  private flushNow(): void {
    this.failures = 0;
    this.nextRetryAt = null;
    void this.flush();
  }

  /** Send batches from the head of the queue until it is empty or a send fails. */
  private async drain(keepalive: boolean): Promise<void> {
    this.outbox.adoptStale(`${this.options.storageKey ?? "fitkart-sync"}:queue:`, this.options.staleQueueMs ?? 60_000);
    while (this.outbox.size > 0) {
      const batch = this.outbox.take(this.batchSize);
      let response: Response;
      try {
        response = await this.send(batch, keepalive);
      } catch (error) {
        this.outbox.release(batch);
        this.failed(`server unreachable: ${String(error)}`);
        return;
      }
      if (response.status === 413 && batch.length > 1) {
        this.outbox.release(batch);
        this.batchSize = Math.max(1, Math.floor(batch.length / 2)); // the server's limit is lower
        continue;
      }
      if (response.ok) {
        const body = (await response.json()) as { results?: unknown[] };
        if (!this.settle(batch, body.results ?? [])) {
          return;
        }
        continue;
      }
      const error = await readError(response);
      if (!RETRYABLE_STATUSES.has(response.status) && response.status >= 400 && response.status < 500) {
        this.reject(batch, error); // the whole batch refused as invalid: retrying cannot help
        continue;
      }
      this.outbox.release(batch);
      this.failed(`HTTP ${response.status}: ${error.message ?? error.status ?? "error"}`);
      return;
    }
    this.failures = 0;
    this.nextRetryAt = null;
    this.lastError = null;
    this.lastSyncedAt = Date.now();
  }

  /** POST one batch with the access token; on a 401, fetch a fresh token and try once more. */
  private async send(batch: Entry[], keepalive: boolean): Promise<Response> {
    const body = JSON.stringify({
      operations: batch.map(({ op, collection, record }) => ({ op, collection, record })),
    });
    const post = async (forceRefresh: boolean) => {
      const headers: Record<string, string> = { "Content-Type": "application/json" };
      const token = this.options.getAccessToken ? await this.options.getAccessToken({ forceRefresh }) : null;
      if (token) {
        headers.Authorization = `Bearer ${token}`;
      }
      return this.fetcher(`${this.baseUrl}/api/sync/batch`, { method: "POST", headers, body, keepalive });
    };
    const response = await post(false);
    if (response.status === 401 && this.options.getAccessToken) {
      return post(true);
    }
    return response;
  }

  /** Apply per-operation results; false when one must be retried (the rest waits behind it). */
  private settle(batch: Entry[], results: unknown[]): boolean {
    const done: number[] = [];
    for (const [index, entry] of batch.entries()) {
      const result = results[index] as { error?: ServerError } | undefined;
      const code = result?.error?.code;
      if (result && !result.error) {
        done.push(entry.seq);
      } else if (code !== undefined && code >= 400 && code < 500 && !RETRYABLE_RESULTS.has(code)) {
        done.push(entry.seq);
        this.announce(entry, result!.error!);
      } else {
        this.outbox.remove(done);
        this.outbox.release(batch);
        this.failed(`operation ${index + 1} of a batch failed: ${result?.error?.message ?? "no result"}`);
        return false;
      }
    }
    this.outbox.remove(done);
    return true;
  }

  private reject(batch: Entry[], error: ServerError): void {
    for (const entry of batch) {
      this.announce(entry, error);
    }
    this.outbox.remove(batch.map((entry) => entry.seq));
  }

  /** Report an operation the server refused for good; the server keeps it in sync_rejects. */
  private announce(entry: Entry, error: ServerError): void {
    this.rejected += 1;
    this.lastError = `${entry.op} ${entry.collection} refused: ${error.message ?? error.status ?? error.code}`;
    const rejection: Rejection = { operation: { op: entry.op, collection: entry.collection, record: entry.record }, error };
    for (const listener of this.rejectionListeners) {
      try {
        listener(rejection);
      } catch {
        // a listener's failure is its own
      }
    }
  }

  /** Remember the failure and retry later: exponential back-off with jitter, capped. */
  private failed(message: string): void {
    this.failures += 1;
    this.lastError = message;
    const ceiling = Math.min(this.options.retryMaxMs ?? 60_000,
      (this.options.retryBaseMs ?? 1000) * 2 ** (this.failures - 1));
    const delay = ceiling / 2 + this.random() * (ceiling / 2);
    this.nextRetryAt = Date.now() + delay;
    if (this.soon) clearTimeout(this.soon);
    this.soon = unref(setTimeout(() => {
      this.soon = null;
      this.nextRetryAt = null;
      void this.flush();
    }, delay));
  }

  private notify(): void {
    const status = this.status();
    for (const listener of this.statusListeners) {
      try {
        listener(status);
      } catch {
        // a listener's failure is its own
      }
    }
  }
}

async function readError(response: Response): Promise<ServerError> {
  try {
    const body = (await response.json()) as ServerError;
    return { ...body, code: body.code ?? response.status };
  } catch {
    return { code: response.status, status: response.statusText };
  }
}

/** Let Node exit while a timer is pending (browsers have no unref). */
function unref<T>(timer: T): T {
  (timer as { unref?: () => void }).unref?.();
  return timer;
}

/** A localSync client with its own outbox. */
export function createLocalSync(options: LocalSyncOptions = {}): LocalSync {
  return new LocalSyncClient(options);
}

/** createLocalSync: the shop's localSync calls, queued durably and sent in batches by one tab per origin. */

import { Coordination, type Message, type SenderState } from "./coordination.js";
import { IndexedDbStore, hasIndexedDb } from "./indexeddb.js";
import {
  KEYS,
  type AuthUserLike,
  type CartItemRecord,
  type Collection,
  type Operation,
  type OrderRecord,
  type ProductRecord,
  type ProfileRecord,
  type RowRecord,
  type ServerError,
  type UserRoleRecord,
  type WishlistItemRecord,
} from "./records.js";
import {
  ANYONE, MemoryStore, identify, mayBeSentBy, type ChangeVersion, type OutboxStore, type QueuedOperation,
  type StoredRejection,
} from "./store.js";
import { tokenSubject } from "./token.js";

/** Returns the user's Supabase access token; `forceRefresh` after the server answered 401. */
export type AccessTokenGetter = (context: { forceRefresh: boolean }) =>
  Promise<string | null | undefined> | string | null | undefined;

/** Something the client could not do and the app should hear about. */
export type SyncError =
  /** Storage refused to keep these operations (quota, private mode): they are not queued. */
  | { kind: "storage"; message: string; operations: Operation[] }
  /** Not an operation the server takes (unknown collection or op): not queued. */
  | { kind: "invalid"; message: string; operations: Operation[] }
  /** The kept rejections passed `maxRejected`: the oldest were forgotten. */
  | { kind: "rejections-evicted"; message: string; count: number };

export interface LocalSyncOptions {
  /** Where FitKart Sync listens. Default `http://localhost:5000`. */
  baseUrl?: string;
  /** The user's access token, e.g. `async () => (await supabase.auth.getSession()).data.session?.access_token`. */
  getAccessToken?: AccessTokenGetter;
  /** Where the outbox is kept. Default: IndexedDB (database `name`) when present, else memory. */
  store?: OutboxStore;
  /** Name of the IndexedDB database, the sender's Web Lock and the BroadcastChannel. Default `fitkart-sync`. */
  name?: string;
  /** The fetch to use. Default: the global one. */
  fetch?: typeof fetch;
  /** Operations per request (the server's FITKART_MAX_BATCH is the ceiling). Default 500. */
  maxBatch?: number;
  /** Queue length past which `status().overCapacity` is set (nothing is dropped). Default 10,000. */
  maxQueue?: number;
  /** Refused operations kept until acknowledged; past it the oldest go (reported to `onError`). Default 500. */
  maxRejected?: number;
  /** How long a burst of changes is gathered before sending. Default 50 ms. */
  flushDelayMs?: number;
  /** First retry delay after a failure; doubles each time, with jitter. Default 1 s. */
  retryBaseMs?: number;
  /** Longest retry delay. Default 15 s. */
  retryMaxMs?: number;
  /**
   * A batch request unanswered this long is abandoned and retried later, so a hung proxy or a half-open
   * connection cannot freeze the sender. Default 60 s (the server answers within its 10 s database timeout).
   */
  requestTimeoutMs?: number;
  /** Compete to be the sender and listen for online, visibility and focus events. Default true. */
  autoStart?: boolean;
  /** Hear about operations storage refused and rejections forgotten. */
  onError?: (error: SyncError) => void;
  /** Randomness for the jitter (tests pass a fixed one). */
  random?: () => number;
}

/** What the client is doing, for a status badge or for tests. */
export interface SyncStatus {
  /** Operations waiting that the signed-in user (or anyone) may send. */
  pending: number;
  /** Operations of other users, waiting until they sign in again (`parkedOwners()`). */
  parked: number;
  /** Operations the server refused for good, kept until `acknowledgeRejections()`. */
  rejected: number;
  /** This tab is the origin's sender. */
  sender: boolean;
  flushing: boolean;
  lastError: string | null;
  /** Why storage last refused an operation; null once a write succeeds again. */
  storageError: string | null;
  lastSyncedAt: number | null;
  nextRetryAt: number | null;
  /** More than `maxQueue` operations wait. */
  overCapacity: boolean;
}

/** An operation the server refused for good; it is kept until acknowledged. */
export interface Rejection {
  seq: number;
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
  /** Queue any upsert or delete; resolves once it is stored (never rejects: see `onError`). */
  enqueue(operation: Operation): Promise<void>;
  /** Send what is queued (through the sender tab); resolves (never rejects) with the status once it is over. */
  flush(options?: { keepalive?: boolean }): Promise<SyncStatus>;
  status(): SyncStatus;
  /** Hear about every status change; returns the unsubscribe function. */
  subscribe(listener: (status: SyncStatus) => void): () => void;
  /** Hear about operations the server refused for good (in every tab). */
  onRejected(listener: (rejection: Rejection) => void): () => void;
  /** Hear about operations storage refused and rejections forgotten. */
  onError(listener: (error: SyncError) => void): () => void;
  /** The kept rejections, oldest first. */
  rejections(): Promise<Rejection[]>;
  /** Forget kept rejections (all when no sequence numbers are given); returns how many. */
  acknowledgeRejections(seqs?: number[]): Promise<number>;
  /** Queued operations, oldest first: all, or one owner's (user id); at most `limit` (default 1000). */
  queued(options?: { owner?: string; limit?: number }): Promise<QueuedOperation[]>;
  /** Users other than the signed-in one with operations waiting for them, and how many. */
  parkedOwners(): Promise<{ owner: string; count: number }[]>;
  /** Delete queued operations for good: these sequence numbers, or all of one user's. */
  discard(filter: { owner?: string; seqs?: number[] }): Promise<number>;
  /** Recount the queue now (status() is otherwise refreshed after every change). */
  refresh(): Promise<SyncStatus>;
  /** Stop timers and listeners, and hand the sender's role to another tab (the queue stays stored). */
  stop(): void;
}

/** Consecutive operations sent as one: upserts of one record merge (later fields win). */
interface Group extends Operation {
  seqs: number[];
  identity: string | null;
  owner: string;
  /** The newest merged operation's version: the server answers an older one than it applied `stale`. */
  version: ChangeVersion;
}

const DONE: Promise<void> = Promise.resolve();
// Whole-request answers that blame the body: one of its operations is at fault (too deep, too large, invalid).
const SPLITTABLE_STATUSES = new Set([400, 413, 422]);
// Per-operation answers worth retrying; a 403 there is a row the caller may not touch: final.
const RETRYABLE_RESULTS = new Set([408, 425, 429]);
// A flush asked of the sender tab resolves after this long even if the sender never answers.
const FLUSH_ANSWER_MS = 30_000;
// The probe of /healthz gives up after this long: a hung server is an unreachable one.
const PROBE_TIMEOUT_MS = 5_000;
const ENQUEUES_PER_WRITE = 1000;


/** A queued change not yet written to the store, with the owner it was made for. */
interface Unwritten {
  operation: Operation;
  owner: Promise<string>;
  /** When the change was made (ms since the epoch): its version's time. */
  madeAt: number;
  written: () => void;
}

class LocalSyncClient implements LocalSync {
  private readonly store: OutboxStore;
  private readonly ownsStore: boolean;
  private readonly coordination: Coordination;
  private readonly baseUrl: string;
  private readonly fetcher: typeof fetch;
  private readonly random: () => number;
  private readonly maxBatch: number;
  private readonly statusListeners = new Set<(status: SyncStatus) => void>();
  private readonly rejectionListeners = new Set<(rejection: Rejection) => void>();
  private readonly errorListeners = new Set<(error: SyncError) => void>();
  private readonly flushAnswers = new Map<string, () => void>();
  private readonly unwritten: Unwritten[] = [];
  private writing: Promise<void> | null = null;
  /** Operations read for the next request: halved while whole requests are refused, doubled back after. */
  private window: number;
  /** The window never grows back past a size the server refused whole, until the operation at fault is found. */
  private ceiling: number;
  private inflight: Promise<void> | null = null;
  private failures = 0;
  private sender = false;
  private stopped = false;
  private state: SenderState = { flushing: false, lastError: null, lastSyncedAt: null, nextRetryAt: null };
  private storageError: string | null = null;
  private counts = { total: 0, sendable: 0, rejected: 0 };
  private counting: Promise<void> | null = null;
  private recount = false;
  private user: string | undefined;
  private soon: ReturnType<typeof setTimeout> | null = null;
  private readonly nudge = () => void this.wake(true);
  private readonly onVisibility = () => {
    if ((globalThis as { document?: Document }).document?.visibilityState === "visible") this.nudge();
  };

  constructor(private readonly options: LocalSyncOptions) {
    this.baseUrl = (options.baseUrl ?? "http://localhost:5000").replace(/\/+$/, "");
    this.fetcher = options.fetch ?? ((...args: Parameters<typeof fetch>) => globalThis.fetch(...args));
    this.random = options.random ?? Math.random;
    this.maxBatch = this.window = this.ceiling = Math.max(1, options.maxBatch ?? 500);
    const name = options.name ?? "fitkart-sync";
    this.ownsStore = options.store === undefined;
    this.store = options.store ?? (hasIndexedDb() ? new IndexedDbStore(name) : new MemoryStore());
    // Without tokens, every operation may be sent by anyone.
    this.user = options.getAccessToken ? ANYONE : undefined;
    this.coordination = new Coordination(name, (message) => this.hear(message));
    if (options.autoStart ?? true) {
      this.start();
    } else {
      this.sender = true; // driven by hand (tests, scripts): this client sends when asked
    }
    void this.currentUser().then(() => this.refresh());
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
    if (!(operation?.collection in KEYS) || (operation.op !== "upsert" && operation.op !== "delete")) {
      // Refused alone, here: queued, it would fail the write of every change made beside it.
      const message = `not an operation of the batch endpoint: ${String(operation?.op)} ${String(operation?.collection)}`;
      this.report({ kind: "invalid", message, operations: [operation] });
      return DONE;
    }
    let record: RowRecord;
    try {
      // JSON round trip: a plain copy, without undefined fields, exactly as it will be sent.
      record = JSON.parse(JSON.stringify(operation.record ?? {})) as RowRecord;
    } catch (error) {
      this.refused([operation], `could not queue a change: ${String(error)}`);
      return DONE;
    }
    const copy: Operation = { op: operation.op, collection: operation.collection, record };
    return new Promise<void>((written) => {
      // The owner is asked now, while the user who made the change is the signed-in one.
      this.unwritten.push({ operation: copy, owner: this.ownerOf(record), madeAt: Date.now(), written });
      this.writing ??= this.writeUnwritten();
    });
  }

  flush(options: { keepalive?: boolean } = {}): Promise<SyncStatus> {
    if (!this.sender) {
      return this.askSender();
    }
    this.failures = 0;
    this.clearRetry();
    return this.drainOnce(options.keepalive ?? false).then(() => this.refresh());
  }

  status(): SyncStatus {
    return {
      pending: this.counts.sendable,
      parked: this.counts.total - this.counts.sendable,
      rejected: this.counts.rejected,
      sender: this.sender,
      ...this.state,
      lastError: this.storageError ?? this.state.lastError,
      storageError: this.storageError,
      overCapacity: this.counts.total > (this.options.maxQueue ?? 10_000),
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

  onError(listener: (error: SyncError) => void): () => void {
    this.errorListeners.add(listener);
    return () => void this.errorListeners.delete(listener);
  }

  async rejections(): Promise<Rejection[]> {
    return (await this.store.rejections()).map(({ seq, operation, error }) => ({ seq, operation, error }));
  }

  async acknowledgeRejections(seqs?: number[]): Promise<number> {
    const forgotten = await this.store.acknowledge(seqs);
    this.changed();
    return forgotten;
  }

  queued(options: { owner?: string; limit?: number } = {}): Promise<QueuedOperation[]> {
    return this.store.list(options.owner, options.limit ?? 1000);
  }

  async parkedOwners(): Promise<{ owner: string; count: number }[]> {
    await this.currentUser();
    return [...(await this.store.owners())]
      .filter(([owner]) => owner !== ANYONE && owner !== this.user && this.user !== undefined)
      .map(([owner, count]) => ({ owner, count }));
  }

  async discard(filter: { owner?: string; seqs?: number[] }): Promise<number> {
    if (filter.owner === undefined && filter.seqs === undefined) {
      return 0; // discarding everything takes saying so: an owner or the sequence numbers
    }
    const discarded = await this.store.discard(filter);
    this.changed();
    return discarded;
  }

  async refresh(): Promise<SyncStatus> {
    this.recount = true;
    while (this.counting) {
      await this.counting;
    }
    if (this.recount) {
      this.recount = false;
      this.counting = this.store.counts(this.user).then((counts) => {
        this.counts = counts;
      }, () => undefined).finally(() => (this.counting = null));
      await this.counting;
      this.notify();
    }
    return this.status();
  }

  stop(): void {
    this.stopped = true;
    this.clearRetry();
    const events = globalThis as { removeEventListener?: (type: string, listener: () => void) => void };
    events.removeEventListener?.("online", this.nudge);
    events.removeEventListener?.("focus", this.nudge);
    (globalThis as { document?: Document }).document?.removeEventListener("visibilitychange", this.onVisibility);
    this.coordination.close();
    this.sender = false;
    if (this.ownsStore) {
      // After pending writes: a change queued just before stop() is still stored.
      void (this.writing ?? DONE).then(() => this.store.close());
    }
  }

  private start(): void {
    const events = globalThis as { addEventListener?: (type: string, listener: () => void) => void };
    events.addEventListener?.("online", this.nudge);
    events.addEventListener?.("focus", this.nudge);
    (globalThis as { document?: Document }).document?.addEventListener("visibilitychange", this.onVisibility);
    this.coordination.elect(() => {
      if (this.stopped) return;
      this.sender = true;
      this.notify();
      void this.flush(); // whatever earlier sessions and closed tabs left behind
    });
  }

  private upsert(collection: Collection, record: RowRecord): Promise<void> {
    return this.enqueue({ op: "upsert", collection, record });
  }

  /** The user an operation is made for: its row's `user_id`, else the signed-in user. */
  private async ownerOf(record: RowRecord): Promise<string> {
    if (typeof record.user_id === "string") {
      return record.user_id;
    }
    return (await this.currentUser()) ?? ANYONE;
  }

  /** The signed-in user, from the token's `sub` (undefined when no tokens are used). */
  private async currentUser(): Promise<string | undefined> {
    try {
      await this.token(false);
    } catch {
      // the app's token getter failed: keep the last user known
    }
    return this.user;
  }

  /** Write queued changes to the store in call order, many per transaction, then tell the sender. */
  private async writeUnwritten(): Promise<void> {
    await DONE; // let the rest of this task's changes join the first write
    while (this.unwritten.length > 0) {
      const chunk = this.unwritten.splice(0, ENQUEUES_PER_WRITE);
      const owners = await Promise.all(chunk.map((change) => change.owner));
      try {
        await this.store.append(chunk.map(({ operation, madeAt }, index) => ({
          ...operation, owner: owners[index]!, identity: identify(operation), queuedAt: madeAt })));
        this.storageError = null;
        // Counted at once, so status() agrees with the write as soon as enqueue resolves.
        const sendable = owners.filter((owner) => mayBeSentBy(owner, this.user)).length;
        this.counts = { ...this.counts, total: this.counts.total + chunk.length,
          sendable: this.counts.sendable + sendable };
        this.notify();
      } catch (error) {
        this.refused(chunk.map((change) => change.operation), `could not store ${chunk.length} change(s): ${describe(error)}`);
      }
      chunk.forEach((change) => change.written());
    }
    this.writing = null;
    if (this.sender) {
      this.scheduleFlush();
    } else {
      this.coordination.post({ type: "work", now: false });
    }
  }

  /** Storage refused these changes: say so everywhere it can be heard. */
  private refused(operations: Operation[], message: string): void {
    this.storageError = message;
    this.report({ kind: "storage", message, operations });
    this.notify();
  }

  /** A reason to send now (online, visible, focus): the sender drains, another tab tells it to. */
  private wake(now: boolean): void {
    if (this.sender) {
      if (now) {
        void this.flush();
      } else {
        this.scheduleFlush();
      }
    } else {
      this.coordination.post({ type: "work", now });
    }
  }

  private hear(message: Message): void {
    switch (message.type) {
      case "work":
        void this.refresh();
        if (this.sender && message.flushId) {
          const id = message.flushId;
          void this.flush().then(() => this.coordination.post({ type: "state", state: this.state, flushId: id }));
        } else if (this.sender) {
          this.wake(message.now);
        }
        break;
      case "state":
        if (!this.sender) {
          this.state = message.state;
          void this.refresh();
        }
        if (message.flushId) {
          this.flushAnswers.get(message.flushId)?.();
        }
        break;
      case "changed":
        void this.refresh();
        break;
      case "rejected":
        this.announce({ seq: message.seq, operation: message.operation, error: message.error });
        void this.refresh();
        break;
    }
  }

  /** flush() from a tab that does not send: ask the sender, and wait for its answer (bounded). */
  private async askSender(): Promise<SyncStatus> {
    await this.writing; // this tab's own changes are stored before the sender is asked to send them
    const flushId = `${Date.now().toString(36)}-${this.random().toString(36).slice(2)}`;
    return new Promise<void>((answered) => {
      const timer = setTimeout(answered, FLUSH_ANSWER_MS);
      this.flushAnswers.set(flushId, () => {
        clearTimeout(timer);
        answered();
      });
      this.coordination.post({ type: "work", now: true, flushId });
    }).then(() => {
      this.flushAnswers.delete(flushId);
      return this.sender ? this.flush() : this.refresh();
    });
  }

  /** One drain at a time; a flush during a drain waits for it and drains again (it may have missed new work). */
  private drainOnce(keepalive: boolean): Promise<void> {
    const previous = this.inflight ?? DONE;
    const next: Promise<void> = previous.then(() => this.drain(keepalive)).catch((error: unknown) => {
      this.failed(`could not send: ${describe(error)}`);
    }).finally(() => {
      if (this.inflight === next) this.inflight = null;
      this.setState({ flushing: this.inflight !== null });
    });
    this.inflight = next;
    this.setState({ flushing: true });
    return next;
  }

  /** Send batches of the signed-in user's operations, oldest first, until none is left or a send fails. */
  private async drain(keepalive: boolean): Promise<void> {
    await this.writing;
    if (this.state.nextRetryAt !== null) {
      return; // a drain queued behind one that failed: the back-off decides when to try again
    }
    let rejected = false;
    for (;;) {
      const token = await this.token(false);
      const user = this.user;
      const operations = await this.store.head(user, this.window);
      if (operations.length === 0) {
        break;
      }
      const batch = coalesce(operations);
      let response: Response | null;
      try {
        response = await this.send(batch, token, user, keepalive);
      } catch (error) {
        this.failed(`server unreachable: ${describe(error)}`);
        return;
      }
      if (response === null) {
        // The fresh token is another user's (or none): the batch is not theirs to send. Go on with the new
        // user's operations if the session now names them; a getter that still answers the old token is a
        // session in flux: try later rather than loop.
        await this.token(false);
        if (this.user !== user) {
          continue;
        }
        this.failed("the access token was refused and its refresh names another user (or none)");
        return;
      }
      if (response.ok) {
        const body = (await response.json()) as { results?: unknown[] };
        const settled = await this.settle(batch, Array.isArray(body.results) ? body.results : []);
        rejected ||= settled.rejected;
        if (!settled.done) {
          return;
        }
        this.window = Math.min(this.ceiling, this.window * 2); // recover after a split
        this.changed();
        continue;
      }
      const error = await readError(response);
      // A 400 or 422 in another shape than the server's (a gateway, a wrong baseUrl) says nothing about the data.
      const aboutTheData = response.status === 413 || (typeof error.message === "string" && error.fromServer === true);
      if (!SPLITTABLE_STATUSES.has(response.status) || !aboutTheData) {
        // 5xx, 429, a refused token, a 404 from a wrong address or a proxy: not the data's fault, so kept.
        this.failed(`HTTP ${response.status}: ${error.message ?? error.status ?? "error"}`);
        return;
      }
      // The whole request refused for its content (malformed, too large): halve it until the one at fault is alone.
      if (batch.length > 1) {
        // A server whose FITKART_MAX_BATCH is lower refuses by count: the ceiling walks down to it.
        this.ceiling = Math.max(1, operations.length - 1);
        this.window = Math.max(1, Math.floor(operations.length / 2));
        continue;
      }
      const { fromServer: _, ...answer } = error;
      await this.reject([{ group: batch[0]!, error: answer }]);
      rejected = true;
      this.window = this.ceiling = this.maxBatch; // the one at fault is set aside: the rest go in full batches
      this.changed();
    }
    this.failures = 0;
    // A drain that set operations aside keeps saying so (status().rejected counts them too).
    this.setState({ ...(rejected ? {} : { lastError: null }), lastSyncedAt: Date.now(), nextRetryAt: null });
  }

  /** The access token, and the signed-in user it names. */
  private async token(forceRefresh: boolean): Promise<string | null> {
    if (!this.options.getAccessToken) {
      return null;
    }
    try {
      const token = (await this.options.getAccessToken({ forceRefresh })) ?? null;
      this.user = tokenSubject(token) ?? ANYONE;
      return token;
    } catch (error) {
      throw new Error(`the access token getter failed: ${describe(error)}`);
    }
  }

  /**
   * POST one batch of `user`'s operations with their token; on a 401, fetch a fresh token and
   * try once more, unless it names another user (null: the batch is not theirs to send).
   */
  private async send(batch: Group[], token: string | null, user: string | undefined,
    keepalive: boolean): Promise<Response | null> {
    const body = JSON.stringify({
      operations: batch.map(({ op, collection, record, version }) => ({ op, collection, record, version })),
    });
    const post = (bearer: string | null) => {
      const headers: Record<string, string> = { "Content-Type": "application/json" };
      if (bearer) {
        headers.Authorization = `Bearer ${bearer}`;
      }
      return this.fetcher(`${this.baseUrl}/api/sync/batch`, { method: "POST", headers, body, keepalive,
        signal: AbortSignal.timeout(this.options.requestTimeoutMs ?? 60_000) });
    };
    const response = await post(token);
    if (response.status !== 401 || !this.options.getAccessToken) {
      return response;
    }
    const fresh = await this.token(true);
    return this.user === user ? post(fresh) : null;
  }

  /** Apply per-operation results; false when one must be retried (the rest waits behind it). */
  private async settle(batch: Group[], results: unknown[]): Promise<{ done: boolean; rejected: boolean }> {
    const done: number[] = [];
    const refused: { group: Group; error: ServerError }[] = [];
    let retry: string | null = null;
    for (const [index, group] of batch.entries()) {
      const found = results[index];
      const result = typeof found === "object" && found !== null ? found as { error?: ServerError } : undefined;
      const code = result?.error?.code;
      if (result && !result.error) {
        done.push(...group.seqs);
      } else if (code !== undefined && code >= 400 && code < 500 && !RETRYABLE_RESULTS.has(code)) {
        refused.push({ group, error: result!.error! });
      } else {
        const reason = result?.error ? result.error.message ?? `code ${String(code)}` : "no result";
        retry = `operation ${index + 1} of a batch failed: ${reason}`;
        break;
      }
    }
    await this.store.remove(done);
    await this.reject(refused);
    if (retry !== null) {
      this.failed(retry);
      return { done: false, rejected: refused.length > 0 };
    }
    return { done: true, rejected: refused.length > 0 };
  }

  /** Keep refused operations apart (bounded), and tell every tab. */
  private async reject(refused: { group: Group; error: ServerError }[]): Promise<void> {
    if (refused.length === 0) {
      return;
    }
    const rejections: StoredRejection[] = refused.map(({ group, error }) => ({
      seq: group.seqs[0]!, seqs: group.seqs, owner: group.owner, error, rejectedAt: Date.now(),
      operation: { op: group.op, collection: group.collection, record: group.record } }));
    const evicted = await this.store.reject(rejections, this.options.maxRejected ?? 500);
    if (evicted > 0) {
      this.report({ kind: "rejections-evicted", count: evicted,
        message: `${evicted} old rejection(s) forgotten: more than ${this.options.maxRejected ?? 500} kept` });
    }
    for (const { seq, operation, error } of rejections) {
      this.setState({ lastError: `${operation.op} ${operation.collection} refused: ${error.message ?? error.status ?? error.code}` });
      this.announce({ seq, operation, error });
      this.coordination.post({ type: "rejected", seq, operation, error });
    }
  }

  private announce(rejection: Rejection): void {
    for (const listener of this.rejectionListeners) {
      try {
        listener(rejection);
      } catch {
        // a listener's failure is its own
      }
    }
  }

  private report(error: SyncError): void {
    for (const listener of [this.options.onError, ...this.errorListeners]) {
      try {
        listener?.(error);
      } catch {
        // a listener's failure is its own
      }
    }
  }

  /** Send soon, unless a retry is already set: a burst of changes goes out as one batch. */
  private scheduleFlush(): void {
    if (this.soon || this.stopped || !(this.options.autoStart ?? true)) {
      return;
    }
    this.soon = setTimeout(() => {
      this.soon = null;
      void this.drainOnce(false);
    }, this.options.flushDelayMs ?? 50);
    unref(this.soon);
  }

  /** Remember the failure; after an exponential, jittered, capped delay, probe /healthz and send if it answers. */
  private failed(message: string): void {
    this.failures += 1;
    const ceiling = Math.min(this.options.retryMaxMs ?? 15_000, (this.options.retryBaseMs ?? 1000) * 2 ** (this.failures - 1));
    const delay = ceiling / 2 + this.random() * (ceiling / 2);
    this.clearRetry();
    this.setState({ lastError: message, nextRetryAt: Date.now() + delay });
    if (this.stopped || !(this.options.autoStart ?? true)) {
      return; // driven by hand: the caller retries
    }
    this.soon = setTimeout(() => {
      this.soon = null;
      void this.probe();
    }, delay);
    unref(this.soon);
  }

  /** The light check before a retry: is the server there at all? */
  private async probe(): Promise<void> {
    try {
      const response = await this.fetcher(`${this.baseUrl}/healthz`, {
        signal: AbortSignal.timeout(PROBE_TIMEOUT_MS), cache: "no-store" });
      if (!response.ok) {
        throw new Error(`HTTP ${response.status}`);
      }
    } catch (error) {
      this.failed(`server unreachable: ${describe(error)}`);
      return;
    }
    this.setState({ nextRetryAt: null });
    void this.drainOnce(false);
  }

  private clearRetry(): void {
    if (this.soon) clearTimeout(this.soon);
    this.soon = null;
    this.setState({ nextRetryAt: null });
  }

  /** The queue changed here: recount, and tell the other tabs to. */
  private changed(): void {
    void this.refresh();
    this.coordination.post({ type: "changed" });
  }

  private setState(change: Partial<SenderState>): void {
    this.state = { ...this.state, ...change };
    if (this.sender) {
      this.coordination.post({ type: "state", state: this.state });
    }
    this.notify();
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

/** Consecutive upserts of one record (and one owner) become one operation; nothing else merges. */
export function coalesce(operations: QueuedOperation[]): Group[] {
  const groups: Group[] = [];
  for (const { seq, op, collection, record, identity, owner, queuedAt } of operations) {
    const version = { at: queuedAt, seq };
    const last = groups[groups.length - 1];
    // An operation of no known owner joins the owner's row before it: it goes with the same token.
    if (last && op === "upsert" && last.op === "upsert" && identity !== null && last.identity === identity &&
        (last.owner === owner || owner === ANYONE)) {
      last.record = { ...last.record, ...record };
      last.seqs.push(seq);
      last.version = version;
    } else {
      groups.push({ seqs: [seq], op, collection, record: { ...record }, identity, owner, version });
    }
  }
  return groups;
}

/** The answer of a refused request; `fromServer` when it has FitKart Sync's error shape (JSON with a message). */
async function readError(response: Response): Promise<ServerError & { fromServer?: boolean }> {
  try {
    const body = (await response.json()) as ServerError;
    const fromServer = typeof body === "object" && body !== null && typeof body.message === "string";
    return { ...body, code: body.code ?? response.status, fromServer };
  } catch {
    return { code: response.status, status: response.statusText, fromServer: false };
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/** Let Node exit while a timer is pending (browsers have no unref). */
function unref(timer: unknown): void {
  (timer as { unref?: () => void }).unref?.();
}

/** A localSync client with its own outbox. */
export function createLocalSync(options: LocalSyncOptions = {}): LocalSync {
  return new LocalSyncClient(options);
}

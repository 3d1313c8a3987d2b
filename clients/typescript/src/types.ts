/** The client's public shapes: its options, its status, what it reports, and the LocalSync calls. */

import type { AuthUserLike, CartItemRecord, Operation, OrderRecord, ProductRecord, ProfileRecord, ServerError,
  UserRoleRecord, WishlistItemRecord } from "./records.js";
import type { OutboxStore, QueuedOperation } from "./store.js";

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
  /**
   * supabase-js's `supabase.auth` (anything with its `onAuthStateChange`): the client then knows who is signed in
   * the moment it changes, so each change belongs to the user signed in when it was made, and a user's waiting
   * changes are sent as soon as they sign in again. Without it, call `userChanged()` on every sign-in and sign-out.
   */
  auth?: AuthEvents;
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
  /**
   * The signed-in user changed (a sign-in, a sign-out, an account switch): give their access token, or null when
   * no one is signed in. Not needed with the `auth` option. Changes made after it belong to that user, and their
   * waiting changes are sent now.
   */
  userChanged(accessToken: string | null | undefined): void;
  /** Stop timers and listeners, and hand the sender's role to another tab (the queue stays stored). */
  stop(): void;
}


/** A session as supabase-js hands it to `onAuthStateChange` listeners (only what the client reads). */
export interface SessionLike {
  access_token?: string | null;
  user?: { id?: string | null } | null;
}

/** supabase-js's `supabase.auth`, as far as the client uses it. */
export interface AuthEvents {
  onAuthStateChange(callback: (event: string, session: SessionLike | null) => void):
    { data: { subscription: { unsubscribe(): void } } };
}

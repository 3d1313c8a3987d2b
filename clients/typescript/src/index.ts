/**
 * @fitkart/local-sync: mirror FitKart's Supabase writes into FitKart Sync, durably.
 *
 * `localSync` is a drop-in for the shop's old service (same method names); it is created
 * on first use with the options given to `configureLocalSync`, if any.
 */

import { createLocalSync } from "./client.js";
import type { LocalSync, LocalSyncOptions } from "./types.js";

export { coalesce } from "./batching.js";
export { createLocalSync } from "./client.js";
export { SERVER_HEADER } from "./transport.js";
export type {
  AccessTokenGetter, AuthEvents, LocalSync, LocalSyncOptions, Rejection, SessionLike, SyncError, SyncStatus,
} from "./types.js";
export { IndexedDbStore } from "./indexeddb.js";
export * from "./records.js";
export {
  ANYONE, MemoryStore, identify, type ChangeVersion, type OutboxStore, type QueuedOperation, type StoredRejection,
} from "./store.js";
export { tokenSubject } from "./token.js";

let shared: LocalSync | undefined;
let sharedOptions: LocalSyncOptions = {};

/** Set the options of the shared `localSync` (call before its first use). */
export function configureLocalSync(options: LocalSyncOptions): void {
  shared?.stop();
  shared = undefined;
  sharedOptions = options;
}

/** The shared client, made on first use. */
function sharedClient(): LocalSync {
  shared ??= createLocalSync(sharedOptions);
  return shared;
}

/** The drop-in replacement for the shop's `localSync` service. */
export const localSync: LocalSync = new Proxy({} as LocalSync, {
  get(_target, name: string | symbol) {
    const client = sharedClient() as unknown as Record<string | symbol, unknown>;
    const value = client[name];
    return typeof value === "function" ? value.bind(client) : value;
  },
});

export default localSync;

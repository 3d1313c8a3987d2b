/**
 * The durable outbox: every change is written to storage before any network call, and
 * leaves it only when the server has acknowledged it.
 */

import { CLEARABLE, KEYS, type Operation } from "./records.js";
import type { StorageAdapter } from "./storage.js";

/** A queued operation with its place in the queue and what it touches. */
export interface Entry extends Operation {
  seq: number;
  /** The record's identity: same identity, same record. */
  identity: string;
  /** A delete that may reach any record of its collection (clear, or by id on a compound key). */
  broad: boolean;
}

interface Persisted {
  version: 1;
  heartbeat: number;
  nextSeq: number;
  entries: Entry[];
}

/** The identity of the record an operation names, and whether it may reach others too. */
export function identify(operation: Operation, seq: number): { identity: string; broad: boolean } {
  const key = KEYS[operation.collection];
  const record = operation.record;
  if (key.every((name) => typeof record[name] === "string")) {
    return { identity: `${operation.collection}|${key.map((name) => record[name]).join("|")}`, broad: false };
  }
  // A delete by user (clear) or by Supabase id on a compound key: it may touch any record.
  const broad = operation.op === "delete" && (CLEARABLE.has(operation.collection) || key.length > 1);
  return { identity: `${operation.collection}|#${seq}`, broad };
}

export class Outbox {
  private entries: Entry[] = [];
  private nextSeq = 1;
  /** Entries being sent now: never merged into, so an acknowledgement covers exactly what was sent. */
  readonly sealed = new Set<number>();
  /** Set when storage refused a write (quota): the queue still lives in memory. */
  storageError: string | null = null;

  constructor(
    private readonly storage: StorageAdapter,
    readonly storageKey: string,
    private readonly maxEntries: number,
    private readonly now: () => number = Date.now,
  ) {
    const saved = this.read(storageKey);
    if (saved) {
      this.entries = saved.entries;
      this.nextSeq = saved.nextSeq;
    }
  }

  get size(): number {
    return this.entries.length;
  }

  /** More entries than the configured bound, after merging all that could be merged. */
  get overCapacity(): boolean {
    return this.entries.length > this.maxEntries;
  }

  /** A copy of the queue, oldest first. */
  list(): Entry[] {
    return this.entries.map((entry) => ({ ...entry, record: { ...entry.record } }));
  }

  /** Append an operation; consecutive upserts of one record merge; persist before returning. */
  push(operation: Operation): void {
    const seq = this.nextSeq++;
    const { identity, broad } = identify(operation, seq);
    const tail = this.entries[this.entries.length - 1];
    if (operation.op === "upsert" && tail && tail.op === "upsert" && tail.identity === identity &&
        !this.sealed.has(tail.seq)) {
      tail.record = { ...tail.record, ...operation.record };
    } else {
      this.entries.push({ ...operation, record: { ...operation.record }, seq, identity, broad });
    }
    if (this.overCapacity) {
      this.compact();
    }
    this.save();
  }

  /** The oldest `count` entries, sealed until acknowledged or released. */
  take(count: number): Entry[] {
    const batch = this.entries.slice(0, count);
    for (const entry of batch) {
      this.sealed.add(entry.seq);
    }
    return batch;
  }

  /** Forget entries the server acknowledged (or refused for good). */
  remove(seqs: Iterable<number>): void {
    const gone = new Set(seqs);
    this.entries = this.entries.filter((entry) => !gone.has(entry.seq));
    for (const seq of gone) {
      this.sealed.delete(seq);
    }
    this.save();
  }

  /** Unseal entries whose sending failed (all of them when none are named); they stay queued, in order. */
  release(entries?: Entry[]): void {
    if (!entries) {
      this.sealed.clear();
      return;
    }
    for (const entry of entries) {
      this.sealed.delete(entry.seq);
    }
  }

  /**
   * Merge the oldest coalescible upserts into later upserts of the same record, until the
   * queue fits its bound again. Nothing is dropped: a queue of distinct changes stays whole.
   */
  compact(): void {
    for (let i = 0; i < this.entries.length && this.overCapacity; ) {
      const first = this.entries[i]!;
      const later = this.mergeTarget(i);
      if (later === undefined) {
        i += 1;
        continue;
      }
      later.record = { ...first.record, ...later.record };
      this.entries.splice(i, 1);
    }
  }

  /** The next upsert of the same record as entry `index`, if nothing in between touches it. */
  private mergeTarget(index: number): Entry | undefined {
    const first = this.entries[index]!;
    if (first.op !== "upsert" || this.sealed.has(first.seq)) {
      return undefined;
    }
    for (const entry of this.entries.slice(index + 1)) {
      if (entry.collection !== first.collection) {
        continue;
      }
      if (entry.broad) {
        return undefined; // a clear in between: order matters
      }
      if (entry.identity === first.identity) {
        return entry.op === "upsert" && !this.sealed.has(entry.seq) ? entry : undefined;
      }
    }
    return undefined;
  }

  /** Take over queues of tabs gone quiet for `staleMs`, appending their entries in order. */
  adoptStale(prefix: string, staleMs: number): number {
    let adopted = 0;
    for (const key of this.storage.keys()) {
      if (!key.startsWith(prefix) || key === this.storageKey) {
        continue;
      }
      const other = this.read(key);
      if (!other || this.now() - other.heartbeat < staleMs) {
        continue;
      }
      this.storage.removeItem(key);
      for (const entry of other.entries) {
        const seq = this.nextSeq++;
        this.entries.push({ ...entry, seq, ...identify(entry, seq) });
        adopted += 1;
      }
    }
    if (adopted > 0) {
      this.save();
    }
    return adopted;
  }

  /** Write the queue, with a heartbeat that tells other tabs this one is alive. */
  save(): void {
    const state: Persisted = { version: 1, heartbeat: this.now(), nextSeq: this.nextSeq, entries: this.entries };
    try {
      this.storage.setItem(this.storageKey, JSON.stringify(state));
      this.storageError = null;
    } catch (error) {
      this.storageError = `could not persist the outbox: ${String(error)}`;
    }
  }

  private read(key: string): Persisted | null {
    try {
      const text = this.storage.getItem(key);
      const state = text ? (JSON.parse(text) as Persisted) : null;
      return state && state.version === 1 && Array.isArray(state.entries) ? state : null;
    } catch {
      return null;
    }
  }
}

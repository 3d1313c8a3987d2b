/**
 * What the outbox keeps: one record per operation, appended with a sequence number the store
 * assigns, removed only when the server has answered it. Rejected operations are kept apart
 * until the app acknowledges them.
 */

import { KEYS, type Operation, type ServerError } from "./records.js";

/** The owner of operations made for no known user (no token, no `user_id`): anyone may send them. */
export const ANYONE = "";

/** An operation as stored: its place in the client-wide order, its owner and the record it names. */
export interface QueuedOperation extends Operation {
  /** Client-wide order, assigned by the store at enqueue: sends follow it across tabs and sessions. */
  seq: number;
  /** The user it was made for (`ANYONE` when unknown): it is sent only with that user's token. */
  owner: string;
  /** The record it names (null: a clear, or a delete by Supabase id): upserts of one record may merge. */
  identity: string | null;
  /**
   * When the change was made (ms since the epoch), never earlier than any change queued before it in
   * this store (the store keeps it so, whatever the clock does): with `seq`, the change's version.
   */
  queuedAt: number;
}

/**
 * A change's version as the server reads it: later changes to a record carry larger ones (compared
 * as `at`, then `seq`), so a request that lands after a newer one is answered `stale`.
 */
export interface ChangeVersion {
  at: number;
  seq: number;
}

/** An operation the server refused for good, kept until the app acknowledges it. */
export interface StoredRejection {
  /** The first operation's sequence number. */
  seq: number;
  /** Every queued operation merged into the refused one (consecutive upserts of one record). */
  seqs: number[];
  operation: Operation;
  owner: string;
  error: ServerError;
  rejectedAt: number;
}

/** How many operations wait, and how many of them `owner` may send now. */
export interface StoreCounts {
  total: number;
  /** Operations of `owner` and of `ANYONE` (all of them when no owner is given). */
  sendable: number;
  rejected: number;
}

/** The outbox's storage: IndexedDB in a browser (indexeddb.ts), memory elsewhere. */
export interface OutboxStore {
  /**
   * Append operations in the order given, in one write; returns their sequence numbers. Each `queuedAt`
   * is raised to the latest one this store has handed out, so versions keep increasing when the clock
   * is set back (across sessions too).
   */
  append(operations: Omit<QueuedOperation, "seq">[]): Promise<number[]>;
  /** The oldest `count` operations `owner` may send (its own and `ANYONE`'s), by sequence; `undefined`: anyone's. */
  head(owner: string | undefined, count: number): Promise<QueuedOperation[]>;
  /** Forget operations the server acknowledged. */
  remove(seqs: number[]): Promise<void>;
  /** Move operations to the rejected list in one write, keeping its newest `limit`; returns how many old ones went. */
  reject(rejections: StoredRejection[], limit: number): Promise<number>;
  /** The kept rejections, oldest first. */
  rejections(): Promise<StoredRejection[]>;
  /** Forget kept rejections (all when no sequence numbers are given); returns how many. */
  acknowledge(seqs?: number[]): Promise<number>;
  /** Queued operations, oldest first: all, or one owner's; at most `limit`. */
  list(owner: string | undefined, limit: number): Promise<QueuedOperation[]>;
  /** Each owner with queued operations, and how many. */
  owners(): Promise<Map<string, number>>;
  /** Delete queued operations: these sequence numbers, or all of one owner's (neither: none); returns how many. */
  discard(filter: { owner?: string; seqs?: number[] }): Promise<number>;
  counts(owner: string | undefined): Promise<StoreCounts>;
  close(): void;
}

/** The record an operation names (same identity, same record); null for a clear or a delete by Supabase id. */
export function identify(operation: Operation): string | null {
  const key = KEYS[operation.collection];
  if (!key.every((name) => typeof operation.record[name] === "string")) {
    return null;
  }
  return `${operation.collection}|${key.map((name) => operation.record[name]).join("|")}`;
}

/** A store that lives as long as the page or process (no IndexedDB: tests, server-side rendering). */
export class MemoryStore implements OutboxStore {
  private operations: QueuedOperation[] = [];
  private rejected: StoredRejection[] = [];
  private nextSeq = 1;
  private clock = 0;

  async append(operations: Omit<QueuedOperation, "seq">[]): Promise<number[]> {
    return operations.map((operation) => {
      const seq = this.nextSeq++;
      this.clock = Math.max(this.clock, operation.queuedAt);
      this.operations.push(copy({ ...operation, queuedAt: this.clock, seq }));
      return seq;
    });
  }

  async head(owner: string | undefined, count: number): Promise<QueuedOperation[]> {
    return this.operations.filter((operation) => mayBeSentBy(operation.owner, owner)).slice(0, count).map(copy);
  }

  async remove(seqs: number[]): Promise<void> {
    const gone = new Set(seqs);
    this.operations = this.operations.filter((operation) => !gone.has(operation.seq));
  }

  async reject(rejections: StoredRejection[], limit: number): Promise<number> {
    await this.remove(rejections.flatMap((rejection) => rejection.seqs));
    this.rejected.push(...rejections.map(copy));
    const evicted = Math.max(0, this.rejected.length - limit);
    this.rejected.splice(0, evicted);
    return evicted;
  }

  async rejections(): Promise<StoredRejection[]> {
    return this.rejected.map(copy);
  }

  async acknowledge(seqs?: number[]): Promise<number> {
    const before = this.rejected.length;
    const gone = seqs && new Set(seqs);
    this.rejected = gone ? this.rejected.filter((rejection) => !gone.has(rejection.seq)) : [];
    return before - this.rejected.length;
  }

  async list(owner: string | undefined, limit: number): Promise<QueuedOperation[]> {
    return this.operations.filter((operation) => owner === undefined || operation.owner === owner)
      .slice(0, limit).map(copy);
  }

  async owners(): Promise<Map<string, number>> {
    const owners = new Map<string, number>();
    for (const { owner } of this.operations) {
      owners.set(owner, (owners.get(owner) ?? 0) + 1);
    }
    return owners;
  }

  async discard(filter: { owner?: string; seqs?: number[] }): Promise<number> {
    if (filter.owner === undefined && filter.seqs === undefined) {
      return 0;
    }
    const before = this.operations.length;
    const seqs = filter.seqs && new Set(filter.seqs);
    this.operations = this.operations.filter((operation) =>
      !((seqs === undefined || seqs.has(operation.seq)) && (filter.owner === undefined || operation.owner === filter.owner)));
    return before - this.operations.length;
  }

  async counts(owner: string | undefined): Promise<StoreCounts> {
    return {
      total: this.operations.length,
      sendable: this.operations.filter((operation) => mayBeSentBy(operation.owner, owner)).length,
      rejected: this.rejected.length,
    };
  }

  close(): void {}
}

/** Whether a token of `sender` (undefined: tokens are not used) may send an operation of `owner`. */
export function mayBeSentBy(owner: string, sender: string | undefined): boolean {
  return sender === undefined || owner === ANYONE || owner === sender;
}

/** A deep copy, as storage would give back. */
function copy<T>(value: T): T {
  return structuredClone(value);
}

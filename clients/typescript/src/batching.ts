/** What goes in one request: queued operations merged into groups, how many to read, and each group's result. */

import type { Operation, ServerError } from "./records.js";
import { ANYONE, type ChangeVersion, type QueuedOperation } from "./store.js";

/** Consecutive operations sent as one: upserts of one record merge (later fields win). */
export interface Group extends Operation {
  seqs: number[];
  identity: string | null;
  owner: string;
  /** The newest merged operation's version: the server answers an older one than it applied `stale`. */
  version: ChangeVersion;
  /** Names the operation in the request; the server echoes it in the operation's result. */
  ref: string;
}

/** A result of a batch as the server gives it: an outcome, or the refusal in its place. */
export interface OperationResult {
  ref?: unknown;
  error?: ServerError;
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
      groups.push({ seqs: [seq], op, collection, record: { ...record }, identity, owner, version, ref: String(seq) });
    }
  }
  return groups;
}

/**
 * Each group's result, found by the `ref` it echoes: a proxy that reorders the results moves no answer to another
 * operation. A group whose ref no result names has none (it is tried again). Only a server that echoes no ref at
 * all (one older than refs) is read by position.
 */
export function resultsFor(batch: Group[], results: unknown[]): (OperationResult | undefined)[] {
  const objects = results.map((found) => (typeof found === "object" && found !== null ? found as OperationResult
    : undefined));
  if (!objects.some((result) => typeof result?.ref === "string")) {
    return batch.map((_, index) => objects[index]);
  }
  const byRef = new Map<string, OperationResult>();
  for (const result of objects) {
    if (typeof result?.ref === "string" && !byRef.has(result.ref)) {
      byRef.set(result.ref, result);
    }
  }
  return batch.map((group) => byRef.get(group.ref));
}

/**
 * How many operations the next request reads: halved while the server refuses whole requests for their body,
 * until the operation at fault is alone; doubled back after each answered request, never past a size the server
 * refused (a lower FITKART_MAX_BATCH is learnt), until the operation at fault is set aside.
 */
export class BatchWindow {
  size: number;
  private ceiling: number;
  /** Whole requests refused in a row: the pause before the next halved one doubles with it. */
  splits = 0;

  constructor(private readonly most: number) {
    this.size = this.ceiling = most;
  }

  /** A request of `count` operations was refused whole: the next one reads half as many. */
  halve(count: number): void {
    this.ceiling = Math.max(1, count - 1);
    this.size = Math.max(1, Math.floor(count / 2));
    this.splits += 1;
  }

  /** A gateway refused a request of `count` operations for its size: try half as many next time, learning no
   * ceiling (a gateway's limit is not the server's, and it may be lifted). */
  shrink(count: number): void {
    this.size = Math.max(1, Math.floor(count / 2));
  }

  /** A request was answered: read twice as many next time (up to the ceiling). */
  grow(): void {
    this.size = Math.min(this.ceiling, this.size * 2);
    this.splits = 0;
  }

  /** The operation at fault is set aside: the rest go in full batches again. */
  reset(): void {
    this.size = this.ceiling = this.most;
    this.splits = 0;
  }
}

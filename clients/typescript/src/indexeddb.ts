/**
 * The outbox in IndexedDB (through `idb`): one record per operation, appended in its own
 * transaction, so an enqueue costs the same with 10 or 10,000 operations waiting. IndexedDB
 * is shared by every tab of the origin and survives closing the browser.
 */

import { openDB, type DBSchema, type IDBPDatabase } from "idb";

import { ANYONE, type OutboxStore, type QueuedOperation, type StoreCounts, type StoredRejection } from "./store.js";

interface OutboxSchema extends DBSchema {
  operations: { key: number; value: QueuedOperation; indexes: { byOwner: [string, number] } };
  rejections: { key: number; value: StoredRejection };
  /** The latest `queuedAt` handed out (key "clock"): a clock set back cannot make versions go backwards. */
  meta: { key: string; value: number };
}

type Database = IDBPDatabase<OutboxSchema>;

/** Every sequence number of one owner, in order. */
function ownerRange(owner: string): IDBKeyRange {
  return IDBKeyRange.bound([owner, -Infinity], [owner, Infinity]);
}

export class IndexedDbStore implements OutboxStore {
  private readonly database: Promise<Database>;

  /** Open (or create) the database `name` with the global `indexedDB`. */
  constructor(name: string) {
    this.database = openDB<OutboxSchema>(name, 2, {
      upgrade(database, oldVersion) {
        if (oldVersion < 1) {
          // autoIncrement: the store hands out the client-wide order, whichever tab appends.
          const operations = database.createObjectStore("operations", { keyPath: "seq", autoIncrement: true });
          operations.createIndex("byOwner", ["owner", "seq"]);
          database.createObjectStore("rejections", { keyPath: "seq" });
        }
        if (oldVersion < 2) {
          database.createObjectStore("meta");
        }
      },
      blocking(_current, _next, event) {
        // A newer version of this package wants to upgrade in another tab: let it.
        (event.target as IDBDatabase).close();
      },
    });
  }

  async append(operations: Omit<QueuedOperation, "seq">[]): Promise<number[]> {
    const transaction = (await this.database).transaction(["operations", "meta"], "readwrite");
    const meta = transaction.objectStore("meta");
    let clock = (await meta.get("clock")) ?? 0;
    const added = operations.map((operation) => {
      clock = Math.max(clock, operation.queuedAt);
      return transaction.objectStore("operations").add({ ...operation, queuedAt: clock } as QueuedOperation);
    });
    void meta.put(clock, "clock");
    const [seqs] = await Promise.all([Promise.all(added), transaction.done]);
    return seqs;
  }

  async head(owner: string | undefined, count: number): Promise<QueuedOperation[]> {
    const database = await this.database;
    if (owner === undefined) {
      return database.getAll("operations", undefined, count);
    }
    const transaction = database.transaction("operations");
    const [own, anyone] = await Promise.all([
      transaction.store.index("byOwner").getAll(ownerRange(owner), count),
      owner === ANYONE ? [] : transaction.store.index("byOwner").getAll(ownerRange(ANYONE), count),
    ]);
    return [...own, ...anyone].sort((a, b) => a.seq - b.seq).slice(0, count);
  }

  async remove(seqs: number[]): Promise<void> {
    const transaction = (await this.database).transaction("operations", "readwrite");
    await Promise.all([...seqs.map((seq) => transaction.store.delete(seq)), transaction.done]);
  }

  async reject(rejections: StoredRejection[], limit: number): Promise<number> {
    const transaction = (await this.database).transaction(["operations", "rejections"], "readwrite");
    const operations = transaction.objectStore("operations");
    const kept = transaction.objectStore("rejections");
    for (const rejection of rejections) {
      rejection.seqs.forEach((seq) => void operations.delete(seq));
      void kept.put(rejection);
    }
    let evicted = 0;
    let excess = (await kept.count()) - limit;
    for (let cursor = excess > 0 ? await kept.openCursor() : null; cursor && excess > 0; excess -= 1) {
      await cursor.delete();
      evicted += 1;
      cursor = await cursor.continue();
    }
    await transaction.done;
    return evicted;
  }

  async rejections(): Promise<StoredRejection[]> {
    return (await this.database).getAll("rejections");
  }

  async acknowledge(seqs?: number[]): Promise<number> {
    const transaction = (await this.database).transaction("rejections", "readwrite");
    const before = await transaction.store.count();
    if (seqs) {
      await Promise.all(seqs.map((seq) => transaction.store.delete(seq)));
    } else {
      await transaction.store.clear();
    }
    const after = await transaction.store.count();
    await transaction.done;
    return before - after;
  }

  async list(owner: string | undefined, limit: number): Promise<QueuedOperation[]> {
    const database = await this.database;
    return owner === undefined
      ? database.getAll("operations", undefined, limit)
      : database.getAllFromIndex("operations", "byOwner", ownerRange(owner), limit);
  }

  async owners(): Promise<Map<string, number>> {
    const index = (await this.database).transaction("operations").store.index("byOwner");
    const owners = new Map<string, number>();
    let cursor = await index.openKeyCursor();
    while (cursor) {
      const owner = cursor.key[0];
      owners.set(owner, await index.count(ownerRange(owner)));
      cursor = await cursor.continue([owner, Infinity]); // jump to the next owner
    }
    return owners;
  }

  async discard(filter: { owner?: string; seqs?: number[] }): Promise<number> {
    if (filter.owner === undefined && filter.seqs === undefined) {
      return 0;
    }
    const transaction = (await this.database).transaction("operations", "readwrite");
    const candidates = filter.seqs ?? await transaction.store.index("byOwner").getAllKeys(ownerRange(filter.owner!));
    let discarded = 0;
    for (const seq of candidates) {
      const operation = await transaction.store.get(seq);
      if (operation && (filter.owner === undefined || operation.owner === filter.owner)) {
        await transaction.store.delete(seq);
        discarded += 1;
      }
    }
    await transaction.done;
    return discarded;
  }

  async counts(owner: string | undefined): Promise<StoreCounts> {
    const transaction = (await this.database).transaction(["operations", "rejections"]);
    const index = transaction.objectStore("operations").index("byOwner");
    const [total, own, anyone, rejected] = await Promise.all([
      transaction.objectStore("operations").count(),
      owner === undefined ? 0 : index.count(ownerRange(owner)),
      owner === undefined || owner === ANYONE ? 0 : index.count(ownerRange(ANYONE)),
      transaction.objectStore("rejections").count(),
    ]);
    return { total, sendable: owner === undefined ? total : own + anyone, rejected };
  }

  close(): void {
    void this.database.then((database) => database.close(), () => undefined);
  }
}

/** Whether this context has IndexedDB. */
export function hasIndexedDb(): boolean {
  return typeof (globalThis as { indexedDB?: unknown }).indexedDB === "object" &&
    (globalThis as { indexedDB?: unknown }).indexedDB !== null;
}

/** The outbox store's contract, run on both stores: MemoryStore and IndexedDbStore (on fake-indexeddb). */

import "fake-indexeddb/auto";

import assert from "node:assert/strict";
import { after, describe, test } from "node:test";

import { IndexedDbStore } from "../src/indexeddb.js";
import type { Operation } from "../src/records.js";
import { ANYONE, MemoryStore, identify, type OutboxStore, type QueuedOperation, type StoredRejection } from "../src/store.js";
import { uniqueName } from "./helpers.js";

const A = "user-a";
const B = "user-b";

/** A queued cart delete of `id` made for `owner`. */
function op(id: string, owner: string = ANYONE): Omit<QueuedOperation, "seq"> {
  const operation: Operation = { op: "delete", collection: "cart_items", record: { id } };
  return { ...operation, owner, identity: identify(operation), queuedAt: 1_700_000_000_000 };
}

/** The rejection of the operations `seqs` (the first names it), with a 422. */
function rejection(seqs: number[], owner: string = ANYONE): StoredRejection {
  return { seq: seqs[0]!, seqs, owner, rejectedAt: 1_700_000_000_000,
    operation: { op: "delete", collection: "cart_items", record: { id: `r${seqs[0]}` } },
    error: { code: 422, status: "Unprocessable Entity", message: "Invalid record." } };
}

const ids = (operations: QueuedOperation[]) => operations.map((operation) => operation.record.id);

const stores: [string, () => OutboxStore][] = [
  ["MemoryStore", () => new MemoryStore()],
  ["IndexedDbStore", () => new IndexedDbStore(uniqueName("store"))],
];

for (const [kind, make] of stores) {
  describe(`${kind} contract`, () => {
    const opened: OutboxStore[] = [];
    after(() => opened.forEach((store) => store.close()));

    /** A fresh store holding `operations`, and their sequence numbers. */
    async function storeWith(...operations: Omit<QueuedOperation, "seq">[]): Promise<[OutboxStore, number[]]> {
      const store = make();
      opened.push(store);
      return [store, operations.length > 0 ? await store.append(operations) : []];
    }

    /** append returns one increasing sequence number per operation, in call order, across appends. */
    test("append returns increasing sequence numbers in call order", async () => {
      const [store, first] = await storeWith(op("1"), op("2"), op("3"));
      const second = await store.append([op("4")]);
      const third = await store.append([op("5"), op("6")]);
      const seqs = [...first, ...second, ...third];
      assert.equal(seqs.length, 6);
      seqs.slice(1).forEach((seq, index) => assert.ok(seq > seqs[index]!, `${seqs.join(",")} do not increase`));
      const stored = await store.head(undefined, 10);
      assert.deepEqual(stored.map((operation) => operation.seq), seqs);
      assert.deepEqual(ids(stored), ["1", "2", "3", "4", "5", "6"]);
      assert.deepEqual(stored[0], { ...op("1"), seq: seqs[0] });
    });

    /** head(owner, n) is that owner's and ANYONE's operations merged in sequence order; head(undefined, n) everyone's. */
    test("head merges the owner's and anyone's operations in sequence order", async () => {
      const [store] = await storeWith(op("a1", A), op("x1"), op("b1", B), op("a2", A), op("x2"), op("b2", B), op("a3", A));
      assert.deepEqual(ids(await store.head(A, 10)), ["a1", "x1", "a2", "x2", "a3"]);
      assert.deepEqual(ids(await store.head(A, 3)), ["a1", "x1", "a2"]);
      assert.deepEqual(ids(await store.head(B, 10)), ["x1", "b1", "x2", "b2"]);
      assert.deepEqual(ids(await store.head(ANYONE, 10)), ["x1", "x2"]);
      assert.deepEqual(ids(await store.head(undefined, 10)), ["a1", "x1", "b1", "a2", "x2", "b2", "a3"]);
      assert.deepEqual(ids(await store.head(undefined, 2)), ["a1", "x1"]);
      assert.deepEqual(ids(await store.head("nobody", 10)), ["x1", "x2"]);
    });

    /** remove forgets exactly the operations named; unknown sequence numbers are ignored. */
    test("remove forgets the operations named", async () => {
      const [store, seqs] = await storeWith(op("1"), op("2", A), op("3"));
      await store.remove([seqs[0]!, seqs[2]!, 9999]);
      assert.deepEqual(ids(await store.head(undefined, 10)), ["2"]);
      await store.remove([]);
      assert.equal((await store.counts(undefined)).total, 1);
    });

    /** reject moves every one of a rejection's seqs to the rejected list, oldest first. */
    test("reject moves all of a rejection's operations to the rejected list", async () => {
      const [store, seqs] = await storeWith(op("1", A), op("2", A), op("3", A), op("4"));
      const evicted = await store.reject([rejection([seqs[0]!, seqs[1]!], A), rejection([seqs[3]!])], 10);
      assert.equal(evicted, 0);
      assert.deepEqual(ids(await store.head(undefined, 10)), ["3"]);
      const kept = await store.rejections();
      assert.deepEqual(kept, [rejection([seqs[0]!, seqs[1]!], A), rejection([seqs[3]!])]);
      assert.deepEqual(await store.counts(A), { total: 1, sendable: 1, rejected: 2 });
    });

    /** Past `limit` kept rejections, the oldest go, and reject says how many. */
    test("reject evicts the oldest rejections beyond the limit and returns how many", async () => {
      const [store, seqs] = await storeWith(op("1"), op("2"), op("3"), op("4"), op("5"));
      assert.equal(await store.reject([rejection([seqs[0]!]), rejection([seqs[1]!])], 3), 0);
      assert.equal(await store.reject([rejection([seqs[2]!]), rejection([seqs[3]!]), rejection([seqs[4]!])], 3), 2);
      assert.deepEqual((await store.rejections()).map((kept) => kept.seq), seqs.slice(2));
      assert.equal((await store.counts(undefined)).total, 0);
    });

    /** acknowledge forgets the rejections named (by their first seq) or all of them, returning how many. */
    test("acknowledge forgets some or all rejections", async () => {
      const [store, seqs] = await storeWith(op("1"), op("2"), op("3"), op("4"));
      await store.reject([rejection([seqs[0]!]), rejection([seqs[1]!, seqs[2]!]), rejection([seqs[3]!])], 10);
      assert.equal(await store.acknowledge([seqs[1]!, 9999]), 1);
      assert.deepEqual((await store.rejections()).map((kept) => kept.seq), [seqs[0], seqs[3]]);
      assert.equal(await store.acknowledge(), 2);
      assert.deepEqual(await store.rejections(), []);
      assert.equal(await store.acknowledge(), 0);
    });

    /** list gives queued operations oldest first: all, or exactly one owner's (ANYONE's only for ""), at most `limit`. */
    test("list gives all or one owner's operations, up to the limit", async () => {
      const [store] = await storeWith(op("a1", A), op("x1"), op("b1", B), op("a2", A), op("a3", A));
      assert.deepEqual(ids(await store.list(undefined, 100)), ["a1", "x1", "b1", "a2", "a3"]);
      assert.deepEqual(ids(await store.list(undefined, 2)), ["a1", "x1"]);
      assert.deepEqual(ids(await store.list(A, 100)), ["a1", "a2", "a3"]);
      assert.deepEqual(ids(await store.list(A, 2)), ["a1", "a2"]);
      assert.deepEqual(ids(await store.list(ANYONE, 100)), ["x1"]);
      assert.deepEqual(ids(await store.list("nobody", 100)), []);
    });

    /** owners counts the queued operations of each owner. */
    test("owners counts operations per owner", async () => {
      const [empty] = await storeWith();
      assert.deepEqual(await empty.owners(), new Map());
      const [store] = await storeWith(op("a1", A), op("x1"), op("b1", B), op("a2", A), op("x2"));
      assert.deepEqual(await store.owners(), new Map([[ANYONE, 2], [A, 2], [B, 1]]));
    });

    /** discard deletes the operations named, or one owner's, or those named that are that owner's; returns how many. */
    test("discard by seqs and by owner", async () => {
      const [store, seqs] = await storeWith(op("a1", A), op("x1"), op("b1", B), op("a2", A), op("b2", B));
      assert.equal(await store.discard({ seqs: [seqs[1]!, 9999] }), 1);
      assert.deepEqual(ids(await store.head(undefined, 10)), ["a1", "b1", "a2", "b2"]);
      assert.equal(await store.discard({ owner: A }), 2);
      assert.deepEqual(ids(await store.head(undefined, 10)), ["b1", "b2"]);
      assert.equal(await store.discard({ owner: A }), 0);
      assert.equal(await store.discard({ owner: B, seqs: [seqs[0]!, seqs[2]!] }), 1);
      assert.deepEqual(ids(await store.head(undefined, 10)), ["b2"]);
    });

    /** counts: every queued operation, those `owner` may send (own and anyone's; all for undefined), the rejections. */
    test("counts gives total, sendable and rejected", async () => {
      const [store, seqs] = await storeWith(op("a1", A), op("x1"), op("b1", B), op("a2", A), op("b2", B));
      await store.reject([rejection([seqs[4]!], B)], 10);
      assert.deepEqual(await store.counts(A), { total: 4, sendable: 3, rejected: 1 });
      assert.deepEqual(await store.counts(B), { total: 4, sendable: 2, rejected: 1 });
      assert.deepEqual(await store.counts(ANYONE), { total: 4, sendable: 1, rejected: 1 });
      assert.deepEqual(await store.counts(undefined), { total: 4, sendable: 4, rejected: 1 });
      assert.deepEqual(await store.counts("nobody"), { total: 4, sendable: 1, rejected: 1 });
    });
  });
}

/** Two IndexedDbStores on one database (two tabs) share one queue and one sequence. */
test("IndexedDbStore: two stores on one database share the queue and the sequence", async () => {
  const name = uniqueName("store-shared");
  const [tabA, tabB] = [new IndexedDbStore(name), new IndexedDbStore(name)];
  try {
    const seqs = [...await tabA.append([op("1")]), ...await tabB.append([op("2")]), ...await tabA.append([op("3")])];
    seqs.slice(1).forEach((seq, index) => assert.ok(seq > seqs[index]!));
    assert.deepEqual(ids(await tabB.head(undefined, 10)), ["1", "2", "3"]);
    await tabB.remove([seqs[0]!]);
    assert.deepEqual(ids(await tabA.head(undefined, 10)), ["2", "3"]);
  } finally {
    tabA.close();
    tabB.close();
  }
});

/** Unit tests of the client against a fake fetch; the outbox is the real IndexedDbStore on fake-indexeddb. */

import "fake-indexeddb/auto";

import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";

import {
  MemoryStore,
  createLocalSync,
  tokenSubject,
  type LocalSync,
  type Collection,
  type LocalSyncOptions,
  type Operation,
  type Rejection,
  type SyncError,
  type SyncStatus,
} from "../src/index.js";
import {
  FakeServer,
  FlakyStore,
  fakeAuth,
  OTHER,
  USER,
  acknowledged,
  cartRow,
  deferred,
  jwt,
  settle,
  uniqueName,
  waitFor,
  type Answer,
  type SentBatch,
} from "./helpers.js";

const ID1 = "0b5d8f1e-6a7c-4e0a-9a51-3f4b2c1d0e9f";
const ID2 = "1c6e9a2f-7b8d-4f1b-8b62-4a5c3d2e1f0a";
const ID3 = "2d7fab30-8c9e-4a2c-9c73-5b6d4e3f2a1b";
const ID4 = "3e80bc41-9daf-4b3d-8d84-6c7e5f4a3b2c";
const TOKEN = jwt(USER);
const TOKEN_OTHER = jwt(OTHER);

const clients: LocalSync[] = [];
afterEach(() => clients.splice(0).forEach((sync) => sync.stop()));

/** A client driven by hand (`autoStart: false`) on its own IndexedDB database, without jitter. */
function client(server: FakeServer, options: LocalSyncOptions = {}): LocalSync {
  const sync = createLocalSync({ fetch: server.fetch, name: uniqueName(), autoStart: false, random: () => 1, ...options });
  clients.push(sync);
  return sync;
}

/** A whole-request refusal with the server's error body. */
/** FitKart Sync's own refusal of a whole request; its 413 names a body limit every test body passes. */
function refusal(code: number, message: string): Answer {
  return { status: code, body: { code, status: code === 413 ? "Payload Too Large" : "Bad Request", message,
    ...(code === 413 ? { errors: { max_bytes: 64 } } : {}) } };
}

const opsOf = (batch: SentBatch) => batch.operations.map((o) => `${o.op} ${String(o.record.id ?? o.record.user_id)}`);

describe("queueing", () => {
  /** A change is written to the store before any request, and enqueue resolves only once it is stored. */
  test("a change is stored before any network call; the call resolves once it is stored", async () => {
    const server = new FakeServer();
    const store = new FlakyStore();
    const gate = deferred();
    store.gate = gate.promise;
    const sync = client(server, { store, autoStart: true, flushDelayMs: 1,
      fetch: (input, init) => {
        store.events.push("sent");
        return server.fetch(input, init);
      } });
    let resolved = false;
    const call = sync.syncCartItem(cartRow(ID1)).then(() => (resolved = true));
    await settle();
    assert.equal(resolved, false, "resolved before the store took the change");
    assert.equal(server.sent.length, 0);
    gate.resolve();
    await call;
    assert.equal((await store.list(undefined, 10)).length, 1);
    await waitFor(() => server.sent.length === 1, "the timer's send");
    assert.deepEqual(store.events, ["stored 1", "sent"]);
  });

  /** With the default (IndexedDB) store, an awaited change is listed by queued() and nothing was sent. */
  test("an awaited change is in the IndexedDB outbox, with its owner and identity, before any request", async () => {
    const server = new FakeServer();
    const sync = client(server);
    const before = Date.now();
    await sync.syncCartItem(cartRow(ID1));
    await sync.deleteCartItem(ID2);
    const queued = await sync.queued();
    assert.equal(server.sent.length, 0);
    assert.deepEqual(queued.map(({ op, collection, record, owner, identity }) => ({ op, collection, record, owner, identity })), [
      { op: "upsert", collection: "cart_items", record: cartRow(ID1), owner: USER, identity: `cart_items|${ID1}` },
      { op: "delete", collection: "cart_items", record: { id: ID2 }, owner: "", identity: `cart_items|${ID2}` },
    ]);
    assert.ok(queued[0]!.seq < queued[1]!.seq);
    assert.ok(queued[0]!.queuedAt >= before && queued[0]!.queuedAt <= Date.now());
    assert.equal(sync.status().pending, 2, "status() counts a change as soon as enqueue resolves");
    assert.equal((await sync.refresh()).pending, 2);
  });

  /** flush sends the whole queue, in order, in one POST to <baseUrl>/api/sync/batch, and empties it. */
  test("flush sends the queue in order through the batch endpoint and empties it", async () => {
    const server = new FakeServer();
    const sync = client(server, { baseUrl: "http://sync.test:5000/" });
    await sync.syncProfile({ id: USER, email: "asha@example.com", user_metadata: { full_name: "Asha" } });
    await sync.syncCartItem(cartRow(ID1));
    await sync.deleteCartItem(ID2);
    await sync.clearWishlist(USER);
    const status = await sync.flush();
    assert.equal(status.pending, 0);
    assert.equal(status.lastError, null);
    assert.ok(status.lastSyncedAt !== null);
    assert.equal(server.sent.length, 1);
    assert.equal(server.sent[0]!.url, "http://sync.test:5000/api/sync/batch");
    assert.equal(server.sent[0]!.headers["Content-Type"], "application/json");
    assert.deepEqual(server.operations, [
      { op: "upsert", collection: "profiles", record: { user_id: USER, email: "asha@example.com", full_name: "Asha" } },
      { op: "upsert", collection: "cart_items", record: cartRow(ID1) },
      { op: "delete", collection: "cart_items", record: { id: ID2 } },
      { op: "delete", collection: "wishlist_items", record: { user_id: USER } },
    ]);
    assert.deepEqual(await sync.queued(), []);
  });

  /** Each operation carries its version (when it was made, its outbox sequence); merged upserts the newest. */
  test("every operation is sent with a version that grows with each change, merged upserts with the last", async () => {
    const server = new FakeServer();
    const sync = client(server);
    const before = Date.now();
    await sync.syncCartItem(cartRow(ID1));
    await sync.syncCartItem({ id: ID1, quantity: 3 });
    await sync.deleteCartItem(ID2);
    const queued = await sync.queued();
    await sync.flush();
    const versions = server.sent[0]!.versions;
    assert.equal(server.sent[0]!.operations.length, 2, "the two upserts of one row go as one");
    assert.deepEqual(versions, [{ at: queued[1]!.queuedAt, seq: queued[1]!.seq },
      { at: queued[2]!.queuedAt, seq: queued[2]!.seq }]);
    assert.ok(versions[0]!.at >= before && versions[1]!.at >= versions[0]!.at && versions[1]!.seq > versions[0]!.seq);
  });

  /** A clock set back (a reopened browser, a corrected time) cannot make a later change look older. */
  test("versions keep growing when the clock goes back, across sessions of one outbox", async () => {
    const name = uniqueName();
    const realNow = Date.now;
    const server = new FakeServer();
    try {
      const first = client(server, { name });
      await first.syncCartItem(cartRow(ID1));
      first.stop();
      Date.now = () => realNow() - 3_600_000;
      const second = client(server, { name });
      await second.syncCartItem({ id: ID1, quantity: 5 });
      const [older, newer] = await second.queued();
      assert.ok(newer!.queuedAt >= older!.queuedAt, `${newer!.queuedAt} < ${older!.queuedAt}`);
    } finally {
      Date.now = realNow;
    }
  });

  /** Each method queues its operation: the collection, upsert or delete, and the record it names. */
  test("every method maps to its operation", async () => {
    const server = new FakeServer();
    const sync = client(server);
    await sync.syncProfile({ id: USER, email: "asha@example.com",
      user_metadata: { full_name: "Asha Rao", avatar_url: "https://cdn.test/a.png", locale: "en-IN" } });
    await sync.syncCartItem(cartRow(ID1));
    await sync.deleteCartItem(ID2);
    await sync.clearCart(USER);
    await sync.syncOrder({ id: ID3, user_id: USER, status: "pending", total_amount: 10, items: [] });
    await sync.syncWishlistItem({ user_id: USER, product_id: ID2 });
    await sync.deleteWishlistItem(USER, ID2);
    await sync.clearWishlist(USER);
    await sync.syncProduct({ id: ID4, seller_id: USER, name: "Linen Kurta" });
    await sync.syncUserRole({ user_id: USER, role: "customer" });
    await sync.syncProfile({ user_id: OTHER, full_name: "Ravi", email: null });
    await sync.enqueue({ op: "delete", collection: "orders", record: { id: ID3 } });
    await sync.flush();
    assert.deepEqual(server.operations, [
      { op: "upsert", collection: "profiles",
        record: { user_id: USER, email: "asha@example.com", full_name: "Asha Rao", avatar_url: "https://cdn.test/a.png" } },
      { op: "upsert", collection: "cart_items", record: cartRow(ID1) },
      { op: "delete", collection: "cart_items", record: { id: ID2 } },
      { op: "delete", collection: "cart_items", record: { user_id: USER } },
      { op: "upsert", collection: "orders", record: { id: ID3, user_id: USER, status: "pending", total_amount: 10, items: [] } },
      { op: "upsert", collection: "wishlist_items", record: { user_id: USER, product_id: ID2 } },
      { op: "delete", collection: "wishlist_items", record: { user_id: USER, product_id: ID2 } },
      { op: "delete", collection: "wishlist_items", record: { user_id: USER } },
      { op: "upsert", collection: "products", record: { id: ID4, seller_id: USER, name: "Linen Kurta" } },
      { op: "upsert", collection: "user_roles", record: { user_id: USER, role: "customer" } },
      { op: "upsert", collection: "profiles", record: { user_id: OTHER, full_name: "Ravi", email: null } },
      { op: "delete", collection: "orders", record: { id: ID3 } },
    ]);
  });

  /** A record is copied when queued: changing the caller's object afterwards changes nothing queued. */
  test("the queued record is a copy of the caller's object", async () => {
    const server = new FakeServer();
    const sync = client(server);
    const row = cartRow(ID1);
    const pending = sync.syncCartItem(row);
    row.quantity = 99;
    await pending;
    await sync.flush();
    assert.equal(server.operations[0]!.record.quantity, 1);
  });

  /** Consecutive upserts of one record go out as one operation (later fields win); every one is acknowledged. */
  test("consecutive upserts of one record merge into one operation and are all acknowledged", async () => {
    const server = new FakeServer();
    const sync = client(server, { getAccessToken: () => TOKEN });
    await sync.syncCartItem(cartRow(ID1));
    await sync.syncCartItem({ id: ID1, quantity: 2 });
    await sync.syncCartItem({ id: ID1, quantity: 3, color: null });
    assert.equal((await sync.queued()).length, 3);
    const status = await sync.flush();
    assert.deepEqual(server.sent.map((batch) => batch.operations), [
      [{ op: "upsert", collection: "cart_items", record: cartRow(ID1, { quantity: 3, color: null }) }]]);
    assert.deepEqual(await sync.queued(), []);
    assert.deepEqual([status.pending, status.rejected, status.lastError], [0, 0, null]);
  });

  /** An upsert then a delete of the record keeps both, in order: a delete is never absorbed. */
  test("an upsert then a delete of one record keeps both", async () => {
    const server = new FakeServer();
    const sync = client(server, { getAccessToken: () => TOKEN });
    await sync.syncCartItem(cartRow(ID1));
    await sync.syncCartItem({ id: ID1, quantity: 2 });
    await sync.deleteCartItem(ID1);
    await sync.syncCartItem(cartRow(ID1, { quantity: 9 }));
    await sync.flush();
    assert.deepEqual(server.operations, [
      { op: "upsert", collection: "cart_items", record: cartRow(ID1, { quantity: 2 }) },
      { op: "delete", collection: "cart_items", record: { id: ID1 } },
      { op: "upsert", collection: "cart_items", record: cartRow(ID1, { quantity: 9 }) },
    ]);
    assert.deepEqual(await sync.queued(), []);
  });

  /** Upserts of one record with another record's change or a clear between them are sent apart, in order. */
  test("upserts separated by another record's change or by a clear stay apart", async () => {
    const server = new FakeServer();
    const sync = client(server, { getAccessToken: () => TOKEN });
    await sync.syncCartItem({ id: ID1, quantity: 2 });
    await sync.syncCartItem({ id: ID2, quantity: 1 });
    await sync.syncCartItem({ id: ID1, quantity: 3 });
    await sync.syncCartItem({ id: ID3, quantity: 1 });
    await sync.clearCart(USER);
    await sync.syncCartItem({ id: ID3, quantity: 2 });
    await sync.syncWishlistItem({ user_id: USER, product_id: ID4 });
    await sync.clearWishlist(USER);
    await sync.syncWishlistItem({ user_id: USER, product_id: ID4 });
    await sync.flush();
    assert.deepEqual(server.operations.map((o) => [o.op, o.collection, o.record]), [
      ["upsert", "cart_items", { id: ID1, quantity: 2 }],
      ["upsert", "cart_items", { id: ID2, quantity: 1 }],
      ["upsert", "cart_items", { id: ID1, quantity: 3 }],
      ["upsert", "cart_items", { id: ID3, quantity: 1 }],
      ["delete", "cart_items", { user_id: USER }],
      ["upsert", "cart_items", { id: ID3, quantity: 2 }],
      ["upsert", "wishlist_items", { user_id: USER, product_id: ID4 }],
      ["delete", "wishlist_items", { user_id: USER }],
      ["upsert", "wishlist_items", { user_id: USER, product_id: ID4 }],
    ]);
  });

  /** A change made while an earlier upsert of its record is on its way is sent after it, not acknowledged with it. */
  test("a change made while its record is being sent is not lost in the acknowledgement", async () => {
    const server = new FakeServer();
    const gate = deferred();
    server.gate = gate.promise;
    const sync = client(server);
    await sync.syncCartItem(cartRow(ID1));
    const sending = sync.flush();
    await waitFor(() => server.sent.length === 1, "the first batch to be on its way");
    await sync.syncCartItem({ id: ID1, quantity: 5 });
    gate.resolve();
    server.gate = null;
    const status = await sending;
    assert.equal(status.pending, 0);
    assert.deepEqual(server.operations.map((o) => o.record.quantity), [1, 5]);
    assert.equal(server.sent.length, 2);
  });

  /** Past maxQueue operations the status says overCapacity; nothing is dropped. */
  test("more than maxQueue operations set overCapacity and are all kept", async () => {
    const server = new FakeServer();
    const sync = client(server, { maxQueue: 2 });
    for (const id of [ID1, ID2, ID3]) {
      await sync.deleteCartItem(id);
    }
    const status = await sync.refresh();
    assert.deepEqual([status.pending, status.overCapacity], [3, true]);
    assert.equal((await sync.flush()).overCapacity, false);
    assert.equal(server.operations.length, 3);
  });
});

describe("tabs and reloads", () => {
  /** Two clients on one name (two tabs) share one store and one sequence: either sends both tabs' changes in call order. */
  test("two tabs share one outbox: interleaved changes are sent in call order by either", async () => {
    const server = new FakeServer();
    const name = uniqueName("tabs");
    const tabA = client(server, { name });
    const tabB = client(server, { name });
    await tabA.syncCartItem(cartRow(ID1));
    await tabB.deleteCartItem(ID2);
    await tabA.syncCartItem({ id: ID3, quantity: 2 });
    await tabB.syncCartItem(cartRow(ID1, { quantity: 5 }));
    const queued = await tabA.queued();
    assert.deepEqual(queued.map((o) => o.record.id), [ID1, ID2, ID3, ID1]);
    assert.deepEqual(await tabB.queued(), queued);
    assert.equal((await tabB.flush()).pending, 0);
    assert.deepEqual(server.sent.map(opsOf), [[`upsert ${ID1}`, `delete ${ID2}`, `upsert ${ID3}`, `upsert ${ID1}`]]);
    assert.deepEqual(await tabA.queued(), []);
    await waitFor(() => tabA.status().pending === 0, "the other tab to hear the queue changed");

    await tabB.deleteCartItem(ID4);
    await tabA.deleteCartItem(ID3);
    await tabA.flush();
    assert.deepEqual(server.sent.map(opsOf)[1], [`delete ${ID4}`, `delete ${ID3}`]);
    assert.deepEqual(await tabB.queued(), []);
  });

  /** A reload (a new client on the same name) sends what the old one queued, even a change made just before stop(). */
  test("a new client on the same name (a reload) sends what the old one queued", async () => {
    const server = new FakeServer();
    server.answer = () => new Error("offline");
    const name = uniqueName("reload");
    const before = client(server, { name });
    await before.syncCartItem(cartRow(ID1));
    await before.deleteCartItem(ID2);
    assert.equal((await before.flush()).pending, 2);
    void before.syncCartItem({ id: ID3, quantity: 1 });
    before.stop();

    const online = new FakeServer();
    const after = client(online, { name });
    await waitFor(async () => (await after.queued()).length === 3, "the change made before stop() to be stored");
    assert.equal((await after.refresh()).pending, 3);
    const status = await after.flush();
    assert.deepEqual(online.sent.map(opsOf), [[`upsert ${ID1}`, `delete ${ID2}`, `upsert ${ID3}`]]);
    assert.equal(status.pending, 0);
    assert.deepEqual(await after.queued(), []);
  });
});

describe("rejections", () => {
  /** Operations refused with 422 or 403 are kept as rejections and announced; the others are acknowledged. */
  test("per-operation 422 and 403 are kept as rejections; the others are acknowledged", async () => {
    const server = new FakeServer();
    server.answer = () => ({ status: 200, body: { results: [
      { result: "created", record: {} },
      { error: { code: 422, status: "Unprocessable Entity", message: "Invalid record.", errors: { quantity: ["bad"] } } },
      { error: { code: 403, status: "Forbidden", message: "This record belongs to another user." } },
      { deleted: 0 },
    ] } });
    const sync = client(server);
    const heard: Rejection[] = [];
    sync.onRejected((rejection) => heard.push(rejection));
    await sync.syncCartItem(cartRow(ID1));
    await sync.syncCartItem({ id: ID2, quantity: -1 });
    await sync.syncCartItem({ id: ID3, quantity: 1 });
    await sync.deleteCartItem(ID1);
    const seqs = (await sync.queued()).map((o) => o.seq);
    const status = await sync.flush();
    assert.equal(status.pending, 0);
    assert.equal(status.rejected, 2);
    assert.deepEqual(await sync.queued(), []);
    const expected: Rejection[] = [
      { seq: seqs[1]!, operation: { op: "upsert", collection: "cart_items", record: { id: ID2, quantity: -1 } },
        error: { code: 422, status: "Unprocessable Entity", message: "Invalid record.", errors: { quantity: ["bad"] } } },
      { seq: seqs[2]!, operation: { op: "upsert", collection: "cart_items", record: { id: ID3, quantity: 1 } },
        error: { code: 403, status: "Forbidden", message: "This record belongs to another user." } },
    ];
    assert.deepEqual(heard, expected);
    assert.deepEqual(await sync.rejections(), expected);
  });

  /** Per-operation 408, 425, 429 or a missing result are retried: that operation and the rest stay queued. */
  test("a retryable per-operation result keeps it and the rest queued", async () => {
    const server = new FakeServer();
    server.answer = () => ({ status: 200, body: { results: [
      { result: "created", record: {} },
      { error: { code: 429, status: "Too Many Requests", message: "Slow down." } },
    ] } });
    const sync = client(server);
    await sync.deleteCartItem(ID1);
    await sync.deleteCartItem(ID2);
    await sync.deleteCartItem(ID3);
    const status = await sync.flush();
    assert.deepEqual((await sync.queued()).map((o) => o.record.id), [ID2, ID3]);
    assert.deepEqual([status.pending, status.rejected], [2, 0]);
    assert.match(status.lastError!, /Slow down/);
    assert.ok(status.nextRetryAt !== null);
  });

  /** A rejection is announced in every tab: onRejected listeners of another client on the same name hear it. */
  test("onRejected listeners of the other tabs hear a rejection", async () => {
    const server = new FakeServer();
    server.answer = () => ({ status: 200, body: { results: [{ error: { code: 422, message: "Invalid record." } }] } });
    const name = uniqueName("tabs-rejected");
    const [sender, other] = [client(server, { name }), client(server, { name })];
    const heard: Rejection[] = [];
    other.onRejected((rejection) => heard.push(rejection));
    await sender.deleteCartItem(ID1);
    await sender.flush();
    await waitFor(() => heard.length === 1, "the other tab to hear the rejection");
    assert.deepEqual(heard[0]!.operation, { op: "delete", collection: "cart_items", record: { id: ID1 } });
    await waitFor(() => other.status().rejected === 1, "the other tab to count the rejection");
  });

  /** Rejections are stored: a new client on the same name lists them until acknowledgeRejections(). */
  test("rejections survive a new client on the same name until acknowledged", async () => {
    const server = new FakeServer();
    server.answer = (batch) => ({ status: 200, body: { results: batch.operations.map(() => (
      { error: { code: 422, status: "Unprocessable Entity", message: "Invalid record." } })) } });
    const name = uniqueName("rejections");
    const first = client(server, { name });
    await first.deleteCartItem(ID1);
    await first.syncCartItem({ id: ID2, quantity: -1 });
    await first.deleteCartItem(ID3);
    assert.equal((await first.flush()).rejected, 3);
    first.stop();

    const second = client(new FakeServer(), { name });
    assert.equal((await second.refresh()).rejected, 3);
    const kept = await second.rejections();
    assert.deepEqual(kept.map((r) => r.operation.record.id), [ID1, ID2, ID3]);
    assert.equal(await second.acknowledgeRejections([kept[1]!.seq]), 1);
    assert.deepEqual((await second.rejections()).map((r) => r.operation.record.id), [ID1, ID3]);
    assert.equal(await second.acknowledgeRejections(), 2);
    assert.deepEqual(await second.rejections(), []);
    assert.equal((await second.refresh()).rejected, 0);
  });

  /** Past maxRejected kept rejections the oldest are forgotten, and onError hears "rejections-evicted". */
  test("more rejections than maxRejected evict the oldest and are reported", async () => {
    const server = new FakeServer();
    server.answer = (batch) => ({ status: 200, body: { results: batch.operations.map(() => (
      { error: { code: 422, status: "Unprocessable Entity", message: "Invalid record." } })) } });
    const errors: SyncError[] = [];
    const sync = client(server, { maxRejected: 2, onError: (error) => errors.push(error) });
    for (const id of [ID1, ID2, ID3]) {
      await sync.deleteCartItem(id);
    }
    const status = await sync.flush();
    assert.equal(status.rejected, 2);
    assert.deepEqual((await sync.rejections()).map((r) => r.operation.record.id), [ID2, ID3]);
    assert.equal(errors.length, 1);
    assert.equal(errors[0]!.kind, "rejections-evicted");
    assert.equal((errors[0] as { count: number }).count, 1);
    assert.match(errors[0]!.message, /forgotten/);
  });

  for (const code of [400, 413]) {
    /** A whole request refused (400, 413) is halved until the one at fault is alone; it is rejected, the rest delivered. */
    test(`a whole-request ${code} splits the batch until the bad operation is alone`, async () => {
      const server = new FakeServer();
      const bad = ID3;
      server.answer = (batch) => (batch.operations.some((o) => o.record.id === bad)
        ? refusal(code, "Invalid batch.") : acknowledged(batch));
      const sync = client(server);
      const heard: Rejection[] = [];
      sync.onRejected((rejection) => heard.push(rejection));
      const ids = [ID1, ID2, ID3, ID4, "5f9a0b1c-2d3e-4f5a-8b6c-7d8e9f0a1b2c"];
      for (const id of ids) {
        await sync.deleteCartItem(id);
      }
      const status = await sync.flush();
      const delivered = server.sent.filter((batch) => !batch.operations.some((o) => o.record.id === bad));
      assert.deepEqual(delivered.flatMap((batch) => batch.operations.map((o) => o.record.id)), ids.filter((id) => id !== bad));
      assert.ok(server.sent.length <= 8, `${server.sent.length} requests: ${JSON.stringify(server.sent.map(opsOf))}`);
      assert.deepEqual([status.pending, status.rejected], [0, 1]);
      const expected = { op: "delete", collection: "cart_items", record: { id: bad } };
      assert.deepEqual((await sync.rejections()).map((r) => [r.operation, r.error]),
        [[expected, (refusal(code, "Invalid batch.") as { body: unknown }).body]]);
      assert.deepEqual(heard.map((r) => r.operation), [expected]);
    });
  }

  /** After a split the batch size grows back: a later burst of 20 (maxBatch 20) goes out in a few requests. */
  test("after a split the batch size recovers", async () => {
    const server = new FakeServer();
    const bad = "bad-0000";
    server.answer = (batch) => (batch.operations.some((o) => o.record.id === bad)
      ? refusal(400, "Invalid batch.") : acknowledged(batch));
    const sync = client(server, { maxBatch: 20 });
    for (const id of ["a", "b", bad, "c", "d"]) {
      await sync.deleteCartItem(id);
    }
    assert.deepEqual([(await sync.flush()).rejected, server.operations.length > 0], [1, true]);
    const split = server.sent.length;
    const burst = Array.from({ length: 20 }, (_, index) => `burst-${index}`);
    for (const id of burst) {
      await sync.deleteCartItem(id);
    }
    assert.equal((await sync.flush()).pending, 0);
    const requests = server.sent.slice(split);
    assert.deepEqual(requests.flatMap((batch) => batch.operations.map((o) => o.record.id)), burst);
    assert.equal(requests.length, 1, `the burst took ${requests.length} requests: ${requests.map((b) => b.operations.length)}`);
  });

  /** A server that takes fewer operations per batch than maxBatch (413 by count): the size settles below its limit. */
  test("a server's lower batch limit is learnt, not hit on every other request", async () => {
    const server = new FakeServer();
    server.answer = (batch) => (batch.operations.length > 7 ? refusal(413, "More than 7 operations.") : acknowledged(batch));
    const sync = client(server, { maxBatch: 64 });
    const ids = Array.from({ length: 100 }, (_, index) => `row-${index}`);
    for (const id of ids) {
      await sync.deleteCartItem(id);
    }
    const status = await sync.flush();
    assert.deepEqual([status.pending, status.rejected], [0, 0]);
    const accepted = server.sent.filter((batch) => batch.operations.length <= 7);
    assert.deepEqual(accepted.flatMap((batch) => batch.operations.map((o) => o.record.id)), ids);
    const refused = server.sent.filter((batch) => batch.operations.length > 7).length;
    assert.ok(refused <= 10, `${refused} of ${server.sent.length} requests refused`);
  });

  /** A batch larger than maxBatch goes out in maxBatch-sized requests, in order. */
  test("maxBatch bounds the operations per request", async () => {
    const server = new FakeServer();
    const sync = client(server, { maxBatch: 2 });
    for (const id of [ID1, ID2, ID3, ID4]) {
      await sync.deleteCartItem(id);
    }
    await sync.flush();
    assert.deepEqual(server.sent.map(opsOf), [[`delete ${ID1}`, `delete ${ID2}`], [`delete ${ID3}`, `delete ${ID4}`]]);
  });
});

describe("answers that blame no operation", () => {
  /** A hung server (no answer, ever) is abandoned after requestTimeoutMs: the queue is kept and flush() resolves. */
  test("a request that is never answered times out and keeps the queue", async () => {
    let calls = 0;
    const hung: typeof fetch = (_input, init) => {
      calls += 1;
      return new Promise<Response>((_resolve, reject) => {
        init?.signal?.addEventListener("abort", () => reject(init.signal!.reason));
      });
    };
    const sync = createLocalSync({ fetch: hung, name: uniqueName(), autoStart: false, requestTimeoutMs: 50 });
    clients.push(sync);
    await sync.syncCartItem(cartRow(ID1));
    const alive = setInterval(() => undefined, 10); // AbortSignal.timeout's timer does not keep Node running
    const status = await sync.flush().finally(() => clearInterval(alive));
    assert.equal(calls, 1);
    assert.deepEqual([status.pending, status.rejected, status.flushing], [1, 0, false]);
    assert.match(status.lastError!, /unreachable: TimeoutError/);
  });

  /** A 400 in another shape than the server's (a gateway, a wrong baseUrl) is retried: nothing is set aside. */
  test("a whole-request 400 without the server's error body keeps every operation", async () => {
    const server = new FakeServer();
    server.answer = () => ({ status: 400, body: "<html>Bad Request</html>" });
    const sync = client(server);
    for (const id of [ID1, ID2, ID3, ID4]) {
      await sync.deleteCartItem(id);
    }
    const status = await sync.flush();
    assert.deepEqual([status.pending, status.rejected, server.sent.length], [4, 0, 1]);
    assert.match(status.lastError!, /HTTP 400/);
  });

  /** An operation of no known collection is refused alone at enqueue; the changes made beside it are stored. */
  test("an unknown collection is reported as invalid and spoils nothing else", async () => {
    const server = new FakeServer();
    const errors: SyncError[] = [];
    const sync = client(server, { onError: (error) => errors.push(error) });
    void sync.syncCartItem(cartRow(ID1));
    void sync.enqueue({ op: "upsert", collection: "cart_item" as Collection, record: { id: ID2 } });
    await sync.syncCartItem(cartRow(ID3));
    assert.deepEqual(errors.map((error) => error.kind), ["invalid"]);
    assert.deepEqual((await sync.queued()).map((operation) => operation.record.id), [ID1, ID3]);
    assert.equal(sync.status().storageError, null);
  });

  /** A drain that set an operation aside keeps saying so in lastError. */
  test("lastError names a rejection made during the drain that just ended", async () => {
    const server = new FakeServer();
    server.answer = (batch) => (batch.operations.some((o) => o.record.id === ID2)
      ? refusal(400, "Record nested deeper than 32 levels.") : acknowledged(batch));
    const sync = client(server);
    for (const id of [ID1, ID2, ID3]) {
      await sync.deleteCartItem(id);
    }
    const status = await sync.flush();
    assert.deepEqual([status.pending, status.rejected], [0, 1]);
    assert.match(status.lastError!, /refused: Record nested/);
  });
});

describe("answers a gateway can give", () => {
  /** A 413 or a 400 with a JSON message but without the server's header is a gateway's: kept, nothing split. */
  for (const code of [400, 413]) {
    test(`a whole-request ${code} in the server's shape but without its header keeps every operation`, async () => {
      const server = new FakeServer();
      server.answer = () => ({ ...refusal(code, "blocked"), gateway: true });
      const sync = client(server, { maxRejected: 1 });
      for (const id of [ID1, ID2, ID3]) {
        await sync.deleteCartItem(id);
      }
      const status = await sync.flush();
      assert.deepEqual([status.pending, status.rejected, server.sent.length], [3, 0, 1]);
      assert.match(status.lastError!, new RegExp(`HTTP ${code}`));
    });
  }

  /** A gateway's body limit refusing a batch of several: fewer are tried next time, after the back-off. */
  test("a gateway's 413 for several changes makes the next request smaller, setting nothing aside", async () => {
    const server = new FakeServer();
    server.answer = (batch) => (batch.operations.length > 2 ? { ...refusal(413, "Too large."), gateway: true }
      : acknowledged(batch));
    const sync = client(server, { maxBatch: 8 });
    for (let index = 0; index < 8; index += 1) {
      await sync.deleteCartItem(`row-${index}`);
    }
    for (let attempt = 0; attempt < 4 && sync.status().pending + (await sync.refresh()).pending > 0; attempt += 1) {
      await sync.flush();
    }
    assert.deepEqual(server.sent.map((batch) => batch.operations.length).slice(0, 3), [8, 4, 2]);
    assert.equal((await sync.refresh()).rejected, 0);
  });

  /** A fetch of another realm (undici, an iframe's, a test double) answers what is not this realm's Response. */
  test("an answer that is not this realm's Response is read all the same", async () => {
    const fetcher = (async (_url: string, init?: RequestInit) => {
      const operations = (JSON.parse(String(init?.body)) as { operations: { ref: string }[] }).operations;
      return { ok: true, status: 200, headers: new Headers({ "FitKart-Sync": "test" }),
        json: async () => ({ results: operations.map(({ ref }) => ({ deleted: 1, ref })) }) };
    }) as unknown as typeof fetch;
    const sync = createLocalSync({ fetch: fetcher, name: uniqueName(), autoStart: false });
    clients.push(sync);
    await sync.deleteCartItem(ID1);
    assert.deepEqual([(await sync.flush()).pending, sync.status().lastError], [0, null]);
  });

  /** The server's own 413 for one change smaller than the limit it names is no verdict on that change. */
  test("a 413 for a lone change below the body limit the server names keeps it", async () => {
    const server = new FakeServer();
    server.answer = () => ({ status: 413, body: { code: 413, message: "Too large.", errors: { max_bytes: 1_000_000 } } });
    const sync = client(server);
    await sync.deleteCartItem(ID1);
    const status = await sync.flush();
    assert.deepEqual([status.pending, status.rejected], [1, 0]);
  });

  /** Results come back reversed (a proxy): each is matched by its ref, so the refused one is the one set aside. */
  test("results are matched to operations by their ref, whatever their order", async () => {
    const server = new FakeServer();
    server.answer = (batch) => ({ status: 200, raw: true, body: { results: batch.operations.map((operation, index) => (
      operation.record.id === ID2 ? { error: { code: 422, message: "Invalid record." }, ref: batch.refs[index] }
        : { deleted: 1, ref: batch.refs[index] })).reverse() } });
    const sync = client(server);
    for (const id of [ID1, ID2, ID3]) {
      await sync.deleteCartItem(id);
    }
    const status = await sync.flush();
    assert.deepEqual([status.pending, status.rejected], [0, 1]);
    assert.deepEqual((await sync.rejections()).map((r) => r.operation.record.id), [ID2]);
    assert.equal(new Set(server.sent[0]!.refs).size, 3);
  });

  /** A result naming no operation sent (or none for one) leaves that operation queued. */
  test("an operation no result names is kept", async () => {
    const server = new FakeServer();
    server.answer = () => ({ status: 200, raw: true, body: { results: [{ deleted: 1, ref: "not-sent" }] } });
    const sync = client(server);
    await sync.deleteCartItem(ID1);
    const status = await sync.flush();
    assert.deepEqual([status.pending, status.rejected], [1, 0]);
  });

  /** A 429 with Retry-After: flush() sends nothing until it has passed, and nextRetryAt is no sooner. */
  test("Retry-After holds every send until it has passed", async () => {
    const server = new FakeServer();
    server.answer = () => ({ status: 429, body: { code: 429, message: "Slow down." }, headers: { "Retry-After": "30" } });
    const sync = client(server);
    await sync.deleteCartItem(ID1);
    const before = Date.now();
    const status = await sync.flush();
    assert.ok(status.nextRetryAt! >= before + 30_000, `next retry in ${status.nextRetryAt! - before} ms`);
    await sync.flush();
    await sync.flush();
    assert.equal(server.sent.length, 1);
  });
});

describe("who owns a change", () => {
  /** With supabase-js's auth events, a change belongs to the user signed in when it was made, however slowly the
   * token getter answers. */
  test("a change made before another user signs in stays the first user's", async () => {
    const server = new FakeServer();
    const { auth, emit } = fakeAuth();
    let token = TOKEN;
    const slow = deferred();
    const sync = client(server, { auth, getAccessToken: async () => {
      await slow.promise;
      return token;
    } });
    emit("INITIAL_SESSION", TOKEN);
    const made = sync.deleteCartItem(ID1); // by USER
    token = TOKEN_OTHER;
    emit("SIGNED_IN", TOKEN_OTHER);
    slow.resolve();
    await made;
    assert.deepEqual((await sync.queued()).map((o) => o.owner), [USER]);
  });

  /** A getter still answering the old session after an auth event: nothing of the new user's goes with it. */
  test("a batch holds only its token's user's changes, whoever the events say is signed in", async () => {
    const server = new FakeServer();
    const { auth, emit } = fakeAuth();
    const sync = client(server, { auth, getAccessToken: () => TOKEN }); // a session cache not yet refreshed
    emit("INITIAL_SESSION", TOKEN);
    emit("SIGNED_IN", TOKEN_OTHER);
    await sync.deleteCartItem(ID1); // the other user's change
    const status = await sync.flush();
    assert.deepEqual(server.sent.flatMap(opsOf), []);
    assert.deepEqual([(await sync.queued()).map((o) => o.owner), status.pending], [[OTHER], 1]);
  });

  /** A getter call made before userChanged() and answered after it undoes nothing the app said. */
  test("a slow getter's older answer does not undo userChanged", async () => {
    const server = new FakeServer();
    const slow = deferred();
    let late = false;
    const sync = client(server, { getAccessToken: async () => {
      if (late) await slow.promise; // answers late, with the session as it was when asked
      return TOKEN;
    } });
    await sync.deleteCartItem(ID1); // USER's
    late = true;
    await sync.syncCartItem(cartRow(ID3)); // asks the getter in the background: it answers after userChanged
    sync.userChanged(TOKEN_OTHER);
    slow.resolve();
    await settle();
    late = false;
    await sync.deleteCartItem(ID2);
    assert.deepEqual((await sync.queued()).map((o) => o.owner), [USER, USER, OTHER]);
  });

  /** userChanged() tells the client of a sign-in without auth events: later changes are that user's. */
  test("userChanged makes the next change the new user's", async () => {
    const server = new FakeServer();
    let token: string | null = TOKEN;
    const sync = client(server, { getAccessToken: () => token });
    await sync.deleteCartItem(ID1);
    token = TOKEN_OTHER;
    sync.userChanged(token);
    await sync.deleteCartItem(ID2);
    assert.deepEqual((await sync.queued()).map((o) => o.owner), [USER, OTHER]);
  });
});

describe("failures and retries", () => {
  /** A 5xx keeps the whole queue; lastError says what happened and nextRetryAt when the next try is. */
  test("a server error keeps the queue, sets lastError and nextRetryAt", async () => {
    const server = new FakeServer();
    server.answer = () => ({ status: 503, body: { code: 503, message: "database unreachable" } });
    const sync = client(server, { retryBaseMs: 1000 });
    await sync.syncCartItem(cartRow(ID1));
    await sync.deleteCartItem(ID2);
    const before = Date.now();
    const status = await sync.flush();
    assert.equal(status.pending, 2);
    assert.match(status.lastError!, /HTTP 503: database unreachable/);
    assert.ok(status.nextRetryAt! >= before + 500 && status.nextRetryAt! <= Date.now() + 1000, String(status.nextRetryAt));
    assert.equal((await sync.queued()).length, 2);
    server.answer = acknowledged;
    const after = await sync.flush();
    assert.deepEqual([after.pending, after.lastError, after.nextRetryAt], [0, null, null]);
    assert.deepEqual(server.sent.at(-1)!.operations.map((o) => o.op), ["upsert", "delete"]);
  });

  /** A 404 means no batch endpoint there (a wrong baseUrl, a proxy): the queue is kept, nothing is rejected. */
  test("a whole-request 404 keeps the queue instead of rejecting its operations", async () => {
    const server = new FakeServer();
    server.answer = () => ({ status: 404, body: { code: 404, status: "Not Found", message: "No such route." } });
    const sync = client(server);
    for (const id of [ID1, ID2, ID3]) {
      await sync.deleteCartItem(id);
    }
    const status = await sync.flush();
    assert.deepEqual([status.pending, status.rejected], [3, 0]);
    assert.deepEqual(await sync.rejections(), []);
    assert.match(status.lastError ?? "", /404/);
  });

  for (const random of [1, 0, 0.5]) {
    /** Retry delays double from retryBaseMs up to retryMaxMs (default 15 s), each jittered to (1 + random) / 2 of it. */
    test(`back-off is exponential, jittered between half and all of the delay, capped at 15 s (random ${random})`,
      async (t) => {
        t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_700_000_000_000 });
        const server = new FakeServer();
        server.healthy = false;
        server.answer = () => new Error("connection refused");
        const sync = client(server, { store: new MemoryStore(), autoStart: true, random: () => random });
        await settle(); // the sender's first drain, on an empty queue, is over
        await sync.syncCartItem(cartRow(ID1));
        await sync.flush();
        const delays: number[] = [];
        for (let attempt = 0; attempt < 8; attempt += 1) {
          const { nextRetryAt } = sync.status();
          assert.ok(nextRetryAt !== null, `no retry set after failure ${attempt + 1}`);
          delays.push(nextRetryAt - Date.now());
          const probes = server.probes;
          t.mock.timers.tick(nextRetryAt - Date.now());
          await settle();
          assert.equal(server.probes, probes + 1, "the timer probes /healthz once the delay has passed");
        }
        sync.stop();
        const ceilings = [1000, 2000, 4000, 8000, 15_000, 15_000, 15_000, 15_000];
        assert.deepEqual(delays, ceilings.map((ceiling) => ceiling / 2 + random * (ceiling / 2)));
        assert.equal(server.sent.length, 1, "no batch is sent while /healthz fails");
      });
  }

  /** retryMaxMs caps the delay, whatever the number of failures. */
  test("retryMaxMs caps the back-off", async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_700_000_000_000 });
    const server = new FakeServer();
    server.healthy = false;
    server.answer = () => new Error("connection refused");
    const sync = client(server, { store: new MemoryStore(), autoStart: true, retryBaseMs: 100, retryMaxMs: 300 });
    await settle(); // the sender's first drain, on an empty queue, is over
    await sync.deleteCartItem(ID1);
    await sync.flush();
    const delays: number[] = [];
    for (let attempt = 0; attempt < 4; attempt += 1) {
      const nextRetryAt = sync.status().nextRetryAt!;
      delays.push(nextRetryAt - Date.now());
      t.mock.timers.tick(nextRetryAt - Date.now());
      await settle();
    }
    sync.stop();
    assert.deepEqual(delays, [100, 200, 300, 300]);
  });

  /** A fetch that throws (at once or later) is a retryable failure: flush resolves, the queue stays, lastError says why. */
  test("a fetch that throws is a retryable failure, not an exception", async () => {
    for (const fetch of [
      (() => { throw new TypeError("fetch failed"); }) as typeof globalThis.fetch,
      (() => Promise.reject(new TypeError("fetch failed"))) as typeof globalThis.fetch,
    ]) {
      const sync = client(new FakeServer(), { fetch });
      await sync.syncCartItem(cartRow(ID1));
      const flushed = sync.flush();
      await assert.doesNotReject(flushed);
      const status = await flushed;
      assert.equal(status.pending, 1);
      assert.match(status.lastError!, /unreachable: TypeError: fetch failed/);
      assert.ok(status.nextRetryAt !== null);
      assert.equal((await sync.queued()).length, 1);
    }
  });

  /** With autoStart, after a failure the client probes /healthz, sends no batch while it fails, and drains once it answers. */
  test("after a failure the timer probes /healthz and drains on its own once the server is healthy", async () => {
    const server = new FakeServer();
    server.healthy = false;
    server.answer = () => new Error("offline");
    const sync = client(server, { autoStart: true, flushDelayMs: 1, retryBaseMs: 10, retryMaxMs: 20 });
    await sync.syncCartItem(cartRow(ID1));
    await waitFor(() => server.probes >= 1, "the timer to probe /healthz after the first send failed");
    const sent = server.sent.length;
    assert.ok(sent >= 1);
    await waitFor(() => server.probes >= 4, "the timer to probe /healthz again");
    assert.equal(server.sent.length, sent, "a batch was sent while /healthz failed");
    assert.equal((await sync.queued()).length, 1);
    assert.match(sync.status().lastError!, /unreachable/);
    server.answer = acknowledged;
    server.healthy = true;
    await waitFor(() => sync.status().pending === 0 && server.sent.length === sent + 1, "the drain after /healthz answered 200");
    assert.deepEqual(await sync.queued(), []);
    assert.equal(sync.status().lastError, null);
    assert.deepEqual(server.sent.at(-1)!.operations, [{ op: "upsert", collection: "cart_items", record: cartRow(ID1) }]);
  });

  /** With autoStart, a burst of changes goes out in one batch after flushDelayMs, without flush(). */
  test("with autoStart a burst of changes is sent on its own, as one batch", async () => {
    const server = new FakeServer();
    const sync = client(server, { autoStart: true, flushDelayMs: 20 });
    void sync.deleteCartItem(ID1);
    void sync.deleteCartItem(ID2);
    await sync.deleteCartItem(ID3);
    await waitFor(() => sync.status().pending === 0 && server.sent.length > 0, "the timer's send");
    assert.deepEqual(server.sent.map(opsOf), [[`delete ${ID1}`, `delete ${ID2}`, `delete ${ID3}`]]);
  });
});

describe("tokens", () => {
  /** The token goes in `Authorization: Bearer`; without a getter no Authorization header is sent. */
  test("the access token goes in the Authorization header; none without a getter", async () => {
    const server = new FakeServer();
    const withToken = client(server, { getAccessToken: async () => TOKEN });
    await withToken.syncCartItem(cartRow(ID1));
    await withToken.flush();
    const without = client(server);
    await without.syncCartItem(cartRow(ID2));
    await without.flush();
    assert.equal(server.sent.length, 2);
    assert.equal(server.sent[0]!.headers.Authorization, `Bearer ${TOKEN}`);
    assert.equal(server.sent[1]!.headers.Authorization, undefined);
  });

  /** A 401 asks the getter once with forceRefresh and resends with the fresh token. */
  test("a 401 refreshes the token once and resends", async () => {
    const server = new FakeServer();
    const [expired, fresh] = [jwt(USER, { exp: 1 }), jwt(USER, { exp: 4_000_000_000 })];
    server.answer = (batch) => (batch.headers.Authorization === `Bearer ${fresh}` ? acknowledged(batch)
      : { status: 401, body: { code: 401, message: "Invalid token." } });
    const asked: boolean[] = [];
    const sync = client(server, { getAccessToken: ({ forceRefresh }) => {
      asked.push(forceRefresh);
      return forceRefresh ? fresh : expired;
    } });
    await sync.syncCartItem(cartRow(ID1));
    const status = await sync.flush();
    assert.equal(status.pending, 0);
    assert.equal(asked.filter(Boolean).length, 1);
    assert.deepEqual(server.sent.map((batch) => batch.headers.Authorization), [`Bearer ${expired}`, `Bearer ${fresh}`]);
    assert.deepEqual(server.sent[1]!.operations, server.sent[0]!.operations);
  });

  /** A 401 that the fresh token does not cure keeps the queue for later (auth is not the data's fault). */
  test("a token that stays refused keeps the queue", async () => {
    const server = new FakeServer();
    server.answer = () => ({ status: 401, body: { code: 401, message: "Invalid token." } });
    const sync = client(server, { getAccessToken: () => TOKEN });
    await sync.syncCartItem(cartRow(ID1));
    const status = await sync.flush();
    assert.equal(status.pending, 1);
    assert.equal(server.sent.length, 2);
    assert.match(status.lastError!, /401/);
  });

  /** tokenSubject reads `sub` from a JWT's payload (base64url, UTF-8); null for a malformed or missing token. */
  test("tokenSubject: a valid, a malformed and a missing token", () => {
    assert.equal(tokenSubject(TOKEN), USER);
    assert.equal(tokenSubject(jwt("ümlaut-user-ß-✓")), "ümlaut-user-ß-✓");
    const part = (value: string) => Buffer.from(value).toString("base64url");
    for (const malformed of ["not-a-jwt", "a.!!!.c", `a.${part("not json")}.c`, `a.${part(JSON.stringify({ role: "x" }))}.c`,
      `a.${part(JSON.stringify({ sub: 42 }))}.c`, "a..c", "."]) {
      assert.equal(tokenSubject(malformed), null, malformed);
    }
    assert.equal(tokenSubject(null), null);
    assert.equal(tokenSubject(undefined), null);
    assert.equal(tokenSubject(""), null);
  });
});

describe("ownership", () => {
  /** An operation is owned by its record's user_id, else by the signed-in user (the token's sub), else by anyone. */
  test("operations are owned by the record's user_id, else the token's subject", async () => {
    const server = new FakeServer();
    let token: string | null = TOKEN;
    const sync = client(server, { getAccessToken: () => token });
    await sync.syncCartItem(cartRow(ID1));
    await sync.deleteCartItem(ID2);
    await sync.syncCartItem(cartRow(ID3, { user_id: OTHER }));
    await sync.syncProduct({ id: ID4, seller_id: USER });
    token = null;
    sync.userChanged(token); // signed out: what follows is no one's
    await sync.deleteCartItem(ID4);
    assert.deepEqual((await sync.queued()).map((o) => [o.record.id, o.owner]),
      [[ID1, USER], [ID2, USER], [ID3, OTHER], [ID4, USER], [ID4, ""]]);
    assert.deepEqual((await sync.queued({ owner: USER })).map((o) => o.record.id), [ID1, ID2, ID4]);
    assert.equal((await sync.queued({ limit: 2 })).length, 2);
  });

  /** Another user's operations are parked (not sent) while B is signed in; they go out with A's token once A is back. */
  test("a switch of user parks the previous user's operations until they sign in again", async () => {
    const server = new FakeServer();
    let token = TOKEN;
    const sync = client(server, { getAccessToken: () => token });
    await sync.syncCartItem(cartRow(ID1));
    await sync.deleteCartItem(ID2);
    token = TOKEN_OTHER;
    await sync.syncCartItem(cartRow(ID3, { user_id: OTHER }));
    await sync.deleteCartItem(ID4);
    const asOther = await sync.flush();
    assert.deepEqual(server.sent.map((batch) => batch.headers.Authorization), [`Bearer ${TOKEN_OTHER}`]);
    assert.deepEqual(server.sent.map(opsOf), [[`upsert ${ID3}`, `delete ${ID4}`]]);
    assert.deepEqual([asOther.pending, asOther.parked], [0, 2]);
    assert.deepEqual(await sync.parkedOwners(), [{ owner: USER, count: 2 }]);

    token = TOKEN;
    const asUser = await sync.flush();
    assert.deepEqual(server.sent.map((batch) => batch.headers.Authorization), [`Bearer ${TOKEN_OTHER}`, `Bearer ${TOKEN}`]);
    assert.deepEqual(server.sent.map(opsOf)[1], [`upsert ${ID1}`, `delete ${ID2}`]);
    assert.deepEqual([asUser.pending, asUser.parked], [0, 0]);
    assert.deepEqual(await sync.parkedOwners(), []);
  });

  /** Operations made for no one (no token, no user_id) are sent by whoever is signed in. */
  test("operations of anyone are sent with the signed-in user's token", async () => {
    const server = new FakeServer();
    let token: string | null = null;
    const sync = client(server, { getAccessToken: () => token });
    await sync.deleteCartItem(ID1);
    token = TOKEN_OTHER;
    await sync.deleteCartItem(ID2);
    const status = await sync.flush();
    assert.equal(status.pending, 0);
    assert.deepEqual(server.sent.map((batch) => [batch.headers.Authorization, ...opsOf(batch)]),
      [[`Bearer ${TOKEN_OTHER}`, `delete ${ID1}`, `delete ${ID2}`]]);
  });

  /** discard({owner}) deletes a user's queued operations for good; discard({seqs}) those named; discard({}) nothing. */
  test("discard removes a user's operations, or the ones named", async () => {
    const server = new FakeServer();
    let token = TOKEN;
    const sync = client(server, { getAccessToken: () => token });
    await sync.syncCartItem(cartRow(ID1));
    await sync.deleteCartItem(ID2);
    token = TOKEN_OTHER;
    sync.userChanged(token);
    await sync.deleteCartItem(ID3);
    await sync.deleteCartItem(ID4);
    assert.equal((await sync.refresh()).parked, 2);
    assert.equal(await sync.discard({}), 0);
    assert.equal(await sync.discard({ owner: USER }), 2);
    assert.deepEqual(await sync.queued({ owner: USER }), []);
    assert.deepEqual(await sync.parkedOwners(), []);
    const [first] = await sync.queued();
    assert.equal(await sync.discard({ seqs: [first!.seq] }), 1);
    assert.deepEqual((await sync.queued()).map((o) => o.record.id), [ID4]);
    const status = await sync.refresh();
    assert.deepEqual([status.pending, status.parked], [1, 0]);
  });

  /** A 401 whose refreshed token names another user: the batch is not resent with that token; theirs go with it. */
  test("a 401 whose refreshed token names another user does not send the batch with that token", async () => {
    const server = new FakeServer();
    let token = TOKEN;
    server.answer = (batch) => (batch.headers.Authorization === `Bearer ${TOKEN}`
      ? { status: 401, body: { code: 401, message: "Invalid token." } } : acknowledged(batch));
    const sync = client(server, { getAccessToken: ({ forceRefresh }) => {
      if (forceRefresh) token = TOKEN_OTHER; // the session now is another user's
      return token;
    } });
    await sync.syncCartItem(cartRow(ID1));
    await sync.syncCartItem(cartRow(ID2, { user_id: OTHER }));
    const status = await sync.flush();
    const withOther = server.sent.filter((batch) => batch.headers.Authorization === `Bearer ${TOKEN_OTHER}`);
    assert.deepEqual(withOther.map(opsOf), [[`upsert ${ID2}`]]);
    assert.deepEqual((await sync.queued()).map((o) => [o.record.id, o.owner]), [[ID1, USER]]);
    assert.deepEqual([status.pending, status.parked], [0, 1]);
  });

  for (const [who, refreshed] of [["no token (signed out)", null], ["another user's token", TOKEN_OTHER]] as const) {
    /** A 401 whose refresh gives no token or another user's ends the drain: the batch is not resent in a loop. */
    test(`a 401 whose refresh gives ${who} does not resend in a loop`, async () => {
      const server = new FakeServer();
      server.answer = (batch, index) => (index >= 20 ? new Error("the test's safety valve")
        : batch.headers.Authorization === `Bearer ${TOKEN}` ? { status: 401, body: { code: 401, message: "Invalid token." } }
          : acknowledged(batch));
      // A stateless getter: the cached (expired) session of USER, and a refresh that names someone else.
      const sync = client(server, { getAccessToken: ({ forceRefresh }) => (forceRefresh ? refreshed : TOKEN) });
      await sync.syncCartItem(cartRow(ID1));
      const status = await sync.flush();
      assert.ok(server.sent.length <= 3, `${server.sent.length} requests for one flush`);
      assert.equal((await sync.queued()).length, 1);
      assert.ok(status.lastError !== null);
    });
  }
});

describe("storage failures and status", () => {
  /** A store that refuses a write never makes a call throw: onError hears "storage" and status().storageError is set. */
  test("a store whose append throws: onError and storageError, cleared by a later successful write", async () => {
    const server = new FakeServer();
    const store = new FlakyStore();
    store.failing = true;
    const fromOption: SyncError[] = [];
    const fromListener: SyncError[] = [];
    const sync = client(server, { store, onError: (error) => fromOption.push(error) });
    sync.onError((error) => fromListener.push(error));
    await assert.doesNotReject(sync.syncCartItem(cartRow(ID1)));
    assert.equal(fromOption.length, 1);
    assert.deepEqual(fromListener, fromOption);
    const error = fromOption[0]!;
    assert.equal(error.kind, "storage");
    assert.match(error.message, /QuotaExceededError/);
    assert.deepEqual((error as { operations: Operation[] }).operations,
      [{ op: "upsert", collection: "cart_items", record: cartRow(ID1) }]);
    assert.match(sync.status().storageError!, /QuotaExceededError/);
    assert.match(sync.status().lastError!, /QuotaExceededError/);
    assert.deepEqual(await sync.queued(), []);

    store.failing = false;
    await sync.syncCartItem(cartRow(ID2));
    assert.equal(sync.status().storageError, null);
    assert.equal((await sync.flush()).lastError, null);
    assert.deepEqual(server.operations.map((o) => o.record.id), [ID2]);
  });

  /** A record that cannot be serialised (a BigInt) is refused the same way, without throwing. */
  test("a record that cannot be queued is reported as a storage error, not thrown", async () => {
    const errors: SyncError[] = [];
    const sync = client(new FakeServer(), { onError: (error) => errors.push(error) });
    await assert.doesNotReject(sync.syncCartItem({ id: ID1, quantity: 1n as unknown as number }));
    assert.deepEqual(errors.map((error) => error.kind), ["storage"]);
    assert.match(sync.status().storageError!, /could not queue/);
    assert.deepEqual(await sync.queued(), []);
  });

  /** Status listeners hear every change: pending goes up to 1 when a change is stored, then to 0 once sent. */
  test("status listeners hear changes", async () => {
    const server = new FakeServer();
    const sync = client(server);
    const seen: SyncStatus[] = [];
    const unsubscribe = sync.subscribe((status) => seen.push(status));
    await sync.syncCartItem(cartRow(ID1));
    await waitFor(() => seen.some((status) => status.pending === 1), "a status with the change pending");
    await sync.flush();
    const firstPending = seen.findIndex((status) => status.pending === 1);
    assert.ok(seen.slice(firstPending).some((status) => status.flushing), "no status while flushing");
    assert.equal(seen.at(-1)!.pending, 0);
    assert.equal(seen.at(-1)!.flushing, false);
    unsubscribe();
    const heard = seen.length;
    await sync.deleteCartItem(ID2);
    await sync.refresh();
    assert.equal(seen.length, heard, "an unsubscribed listener was called");
  });

  /** Without a token getter, no user is parked. */
  test("parkedOwners is empty without a token getter", async () => {
    const sync = client(new FakeServer());
    await sync.syncCartItem(cartRow(ID1));
    await sync.syncCartItem(cartRow(ID2, { user_id: OTHER }));
    assert.deepEqual(await sync.parkedOwners(), []);
    assert.deepEqual([(await sync.refresh()).pending, sync.status().parked], [2, 0]);
  });
});

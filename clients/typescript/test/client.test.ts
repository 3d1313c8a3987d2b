/** Unit tests of the client and its outbox, against a fake fetch. */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { createLocalSync, memoryStorage, type LocalSyncOptions, type Rejection, type StorageAdapter } from "../src/index.js";
import { FakeServer, USER, cartRow, deferred, waitFor } from "./helpers.js";

const ID1 = "0b5d8f1e-6a7c-4e0a-9a51-3f4b2c1d0e9f";
const ID2 = "1c6e9a2f-7b8d-4f1b-8b62-4a5c3d2e1f0a";
const ID3 = "2d7fab30-8c9e-4a2c-9c73-5b6d4e3f2a1b";

function client(server: FakeServer, options: LocalSyncOptions = {}) {
  return createLocalSync({ fetch: server.fetch, storage: memoryStorage(), autoStart: false, random: () => 1,
    flushDelayMs: 60_000, ...options });
}

describe("queueing", () => {
  test("a change is in storage before any network call, and calls return at once", async () => {
    const server = new FakeServer();
    const storage = memoryStorage();
    const sync = client(server, { storage });
    const returned = sync.syncCartItem(cartRow(ID1));
    assert.ok(returned instanceof Promise);
    assert.equal(server.sent.length, 0);
    const [key] = storage.keys();
    assert.match(storage.getItem(key!)!, new RegExp(ID1));
    assert.equal(sync.status().pending, 1);
  });

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
    assert.equal(server.sent.length, 1);
    assert.equal(server.sent[0]!.url, "http://sync.test:5000/api/sync/batch");
    assert.deepEqual(server.operations, [
      { op: "upsert", collection: "profiles", record: { user_id: USER, email: "asha@example.com", full_name: "Asha" } },
      { op: "upsert", collection: "cart_items", record: cartRow(ID1) },
      { op: "delete", collection: "cart_items", record: { id: ID2 } },
      { op: "delete", collection: "wishlist_items", record: { user_id: USER } },
    ]);
  });

  test("every old and new method maps to its operation", async () => {
    const server = new FakeServer();
    const sync = client(server);
    await sync.syncProfile({ user_id: USER, full_name: "Asha" });
    await sync.syncOrder({ id: ID1, user_id: USER, total_amount: 10, items: [] });
    await sync.syncWishlistItem({ user_id: USER, product_id: ID2 });
    await sync.deleteWishlistItem(USER, ID2);
    await sync.clearCart(USER);
    await sync.syncProduct({ id: ID3, seller_id: USER });
    await sync.syncUserRole({ user_id: USER, role: "customer" });
    await sync.flush();
    assert.deepEqual(server.operations.map((o) => `${o.op} ${o.collection}`), [
      "upsert profiles", "upsert orders", "upsert wishlist_items", "delete wishlist_items", "delete cart_items",
      "upsert products", "upsert user_roles"]);
    assert.deepEqual(server.operations[3]!.record, { user_id: USER, product_id: ID2 });
  });

  test("consecutive upserts of one record merge; an upsert then a delete keeps the delete", async () => {
    const server = new FakeServer();
    const sync = client(server);
    await sync.syncCartItem(cartRow(ID1));
    await sync.syncCartItem({ id: ID1, quantity: 2 });
    await sync.syncCartItem({ id: ID1, quantity: 3 });
    await sync.deleteCartItem(ID1);
    await sync.syncCartItem(cartRow(ID1, { quantity: 9 }));
    assert.equal(sync.status().pending, 3);
    await sync.flush();
    assert.deepEqual(server.operations, [
      { op: "upsert", collection: "cart_items", record: cartRow(ID1, { quantity: 3 }) },
      { op: "delete", collection: "cart_items", record: { id: ID1 } },
      { op: "upsert", collection: "cart_items", record: cartRow(ID1, { quantity: 9 }) },
    ]);
  });

  test("upserts of one record separated by another record's change do not merge on the way in", async () => {
    const server = new FakeServer();
    const sync = client(server);
    await sync.syncCartItem({ id: ID1, quantity: 2 });
    await sync.syncCartItem({ id: ID2, quantity: 1 });
    await sync.syncCartItem({ id: ID1, quantity: 3 });
    assert.equal(sync.status().pending, 3);
  });
});

describe("the bound", () => {
  test("past maxQueue the oldest coalescible upserts merge first; nothing is dropped", async () => {
    const server = new FakeServer();
    const sync = client(server, { maxQueue: 3 });
    for (const [id, quantity] of [[ID1, 1], [ID2, 1], [ID1, 2], [ID2, 2], [ID1, 3]] as const) {
      await sync.syncCartItem({ id, quantity });
    }
    // ID1 q1 merged into ID1 q2 at the fourth change, ID2 q1 into ID2 q2 at the fifth: back to three.
    assert.equal(sync.status().pending, 3);
    assert.equal(sync.status().overCapacity, false);
    await sync.flush();
    assert.deepEqual(server.operations.map((o) => o.record),
      [{ id: ID1, quantity: 2 }, { id: ID2, quantity: 2 }, { id: ID1, quantity: 3 }]);
  });

  test("a clear between two upserts of a record keeps them apart", async () => {
    const server = new FakeServer();
    const sync = client(server, { maxQueue: 2 });
    await sync.syncCartItem({ id: ID1, quantity: 1 });
    await sync.clearCart(USER);
    await sync.syncCartItem({ id: ID1, quantity: 2 });
    assert.equal(sync.status().pending, 3);
    assert.equal(sync.status().overCapacity, true);
    await sync.flush();
    assert.deepEqual(server.operations.map((o) => o.op), ["upsert", "delete", "upsert"]);
  });

  test("distinct changes past the bound are all kept and the status says so", async () => {
    const server = new FakeServer();
    const sync = client(server, { maxQueue: 2 });
    for (const id of [ID1, ID2, ID3]) {
      await sync.syncCartItem({ id, quantity: 1 });
    }
    assert.deepEqual([sync.status().pending, sync.status().overCapacity], [3, true]);
  });
});

describe("answers from the server", () => {
  test("an operation refused with 422 or 403 is dropped and reported; the others are acknowledged", async () => {
    const server = new FakeServer();
    server.answer = () => ({ status: 200, body: { results: [
      { result: "created", record: {} },
      { error: { code: 422, status: "Unprocessable Entity", message: "Invalid record." } },
      { error: { code: 403, status: "Forbidden", message: "This record belongs to another user." } },
      { deleted: 0 },
    ] } });
    const sync = client(server);
    const rejections: Rejection[] = [];
    sync.onRejected((rejection) => rejections.push(rejection));
    await sync.syncCartItem(cartRow(ID1));
    await sync.syncCartItem({ id: ID2, quantity: -1 });
    await sync.syncCartItem({ id: ID3, quantity: 1 });
    await sync.deleteCartItem(ID1);
    const status = await sync.flush();
    assert.equal(status.pending, 0);
    assert.equal(status.rejected, 2);
    assert.deepEqual(rejections.map((r) => [r.operation.record.id, r.error.code]), [[ID2, 422], [ID3, 403]]);
  });

  test("a server error keeps the queue and backs off exponentially with jitter, capped", async () => {
    const server = new FakeServer();
    server.answer = () => ({ status: 503, body: { code: 503, message: "database unreachable" } });
    const sync = client(server, { retryBaseMs: 1000, retryMaxMs: 3000 });
    await sync.syncCartItem(cartRow(ID1));
    // nextRetryAt is a moment during the flush plus the delay, so the delay lies between nextRetryAt - after and
    // nextRetryAt - before: exact bounds, however long the flush takes on a busy machine.
    const delays: [number, number][] = [];
    for (let attempt = 0; attempt < 4; attempt += 1) {
      const before = Date.now();
      const status = await sync.flush();
      const after = Date.now();
      assert.equal(status.pending, 1);
      assert.match(status.lastError!, /503/);
      delays.push([status.nextRetryAt! - after, status.nextRetryAt! - before]);
    }
    sync.stop();
    const expected = [1000, 2000, 3000, 3000]; // the capped exponential (random() = 1: no jitter)
    expected.forEach((delay, index) => {
      const [least, most] = delays[index]!;
      assert.ok(least <= delay && delay <= most, `attempt ${index + 1}: ${delay} ms not in [${least}, ${most}]`);
    });
  });

  test("the jitter spreads retries between half and all of the delay", async () => {
    // random() = r puts the retry at (1 + r) / 2 of the 1000 ms delay; bounded exactly as in the test above.
    for (const [random, delay] of [[0, 500], [0.5, 750], [0.99, 995]] as const) {
      const server = new FakeServer();
      server.answer = () => new Error("connection refused");
      const sync = client(server, { retryBaseMs: 1000, random: () => random });
      await sync.syncCartItem(cartRow(ID1));
      const before = Date.now();
      const status = await sync.flush();
      const after = Date.now();
      sync.stop();
      const [least, most] = [status.nextRetryAt! - after, status.nextRetryAt! - before];
      assert.ok(least <= delay && delay <= most, `random ${random}: ${delay} ms not in [${least}, ${most}]`);
      assert.match(status.lastError!, /unreachable/);
    }
  });

  test("a failed batch is retried whole, in order, and succeeds later", async () => {
    const server = new FakeServer();
    let down = true;
    const defaultAnswer = server.answer;
    server.answer = (batch, index) => (down ? new Error("ECONNREFUSED") : defaultAnswer(batch, index));
    const sync = client(server);
    await sync.syncCartItem(cartRow(ID1));
    await sync.deleteCartItem(ID2);
    await sync.flush();
    down = false;
    const status = await sync.flush();
    sync.stop();
    assert.equal(status.pending, 0);
    assert.deepEqual(server.sent.at(-1)!.operations.map((o) => o.op), ["upsert", "delete"]);
  });

  test("413 halves the batch size", async () => {
    const server = new FakeServer();
    const defaultAnswer = server.answer;
    server.answer = (batch, index) => (batch.operations.length > 2 ? { status: 413, body: { code: 413 } }
      : defaultAnswer(batch, index));
    const sync = client(server, { maxBatch: 5 });
    for (const id of [ID1, ID2, ID3]) {
      await sync.deleteCartItem(id);
    }
    assert.equal((await sync.flush()).pending, 0);
    assert.deepEqual(server.sent.map((b) => b.operations.length), [3, 1, 1, 1]);
  });

  test("a whole batch refused as invalid is dropped and reported, not retried forever", async () => {
    const server = new FakeServer();
    server.answer = () => ({ status: 422, body: { code: 422, message: "Invalid batch." } });
    const sync = client(server);
    await sync.syncCartItem(cartRow(ID1));
    const status = await sync.flush();
    assert.deepEqual([status.pending, status.rejected], [0, 1]);
  });
});

describe("tokens", () => {
  test("the access token goes in the Authorization header; none without a getter", async () => {
    const server = new FakeServer();
    const withToken = client(server, { getAccessToken: async () => "token-1" });
    await withToken.syncCartItem(cartRow(ID1));
    await withToken.flush();
    const without = client(server);
    await without.syncCartItem(cartRow(ID2));
    await without.flush();
    assert.equal(server.sent[0]!.headers.Authorization, "Bearer token-1");
    assert.equal(server.sent[1]!.headers.Authorization, undefined);
  });

  test("a 401 refreshes the token once and resends", async () => {
    const server = new FakeServer();
    const defaultAnswer = server.answer;
    server.answer = (batch, index) => (batch.headers.Authorization === "Bearer fresh" ? defaultAnswer(batch, index)
      : { status: 401, body: { code: 401, message: "Invalid token." } });
    const asked: boolean[] = [];
    const sync = client(server, { getAccessToken: ({ forceRefresh }) => {
      asked.push(forceRefresh);
      return forceRefresh ? "fresh" : "expired";
    } });
    await sync.syncCartItem(cartRow(ID1));
    const status = await sync.flush();
    assert.equal(status.pending, 0);
    assert.deepEqual(asked, [false, true]);
    assert.equal(server.sent.length, 2);
  });

  test("a token that stays refused keeps the queue for later (auth is not the data's fault)", async () => {
    const server = new FakeServer();
    server.answer = () => ({ status: 401, body: { code: 401, message: "Invalid token." } });
    const sync = client(server, { getAccessToken: () => "bad" });
    await sync.syncCartItem(cartRow(ID1));
    const status = await sync.flush();
    sync.stop();
    assert.equal(status.pending, 1);
    assert.equal(server.sent.length, 2);
    assert.match(status.lastError!, /401/);
  });
});

describe("durability and tabs", () => {
  test("a new client on the same storage (a reload) sends what the old one queued", async () => {
    const server = new FakeServer();
    server.answer = () => new Error("offline");
    const storage = memoryStorage();
    const before = client(server, { storage, tabId: "tab-a" });
    await before.syncCartItem(cartRow(ID1));
    await before.deleteCartItem(ID2);
    await before.flush();
    before.stop();
    const online = new FakeServer();
    const after = client(online, { storage, tabId: "tab-a" });
    assert.equal(after.status().pending, 2);
    await after.flush();
    assert.deepEqual(online.operations.map((o) => o.op), ["upsert", "delete"]);
    assert.equal(after.status().pending, 0);
  });

  test("tabs keep separate queues; a tab gone quiet has its queue taken over once", async () => {
    const storage = memoryStorage();
    const server = new FakeServer();
    server.answer = () => new Error("offline");
    const tabA = client(server, { storage, tabId: "a", staleQueueMs: 60_000 });
    const tabB = client(server, { storage, tabId: "b", staleQueueMs: 60_000 });
    await tabA.syncCartItem(cartRow(ID1));
    await tabB.syncCartItem(cartRow(ID2));
    assert.deepEqual([tabA.status().pending, tabB.status().pending], [1, 1]);
    tabA.stop();
    tabB.stop();
    const online = new FakeServer();
    const survivor = client(online, { storage, tabId: "b", staleQueueMs: 0 });
    assert.equal(survivor.status().pending, 2);
    await survivor.flush();
    assert.deepEqual(online.operations.map((o) => o.record.id).sort(), [ID1, ID2].sort());
    assert.deepEqual(storage.keys(), ["fitkart-sync:queue:b"]);
  });

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
    await sending;
    assert.equal(sync.status().pending, 0);
    assert.deepEqual(server.operations.map((o) => o.record.quantity), [1, 5]);
    assert.equal(server.sent.length, 2); // the later change went in a batch of its own
  });

  test("a storage that refuses writes never makes a call throw; the change still goes out", async () => {
    const server = new FakeServer();
    const full: StorageAdapter = { ...memoryStorage(), setItem: () => { throw new Error("QuotaExceededError"); } };
    const sync = client(server, { storage: full });
    await assert.doesNotReject(sync.syncCartItem(cartRow(ID1)));
    assert.match(sync.status().lastError!, /persist/);
    await sync.flush();
    assert.equal(server.operations.length, 1);
  });

  test("a fetch that throws at once is a retryable failure, not an exception", async () => {
    const sync = createLocalSync({ storage: memoryStorage(), autoStart: false,
      fetch: () => { throw new TypeError("fetch failed"); } });
    await sync.syncCartItem(cartRow(ID1));
    const status = await sync.flush();
    sync.stop();
    assert.equal(status.pending, 1);
    assert.match(status.lastError!, /fetch failed/);
  });

  test("status listeners hear changes", async () => {
    const server = new FakeServer();
    const sync = client(server);
    const seen: number[] = [];
    const unsubscribe = sync.subscribe((status) => seen.push(status.pending));
    await sync.syncCartItem(cartRow(ID1));
    await sync.flush();
    unsubscribe();
    assert.equal(seen[0], 1);
    assert.equal(seen.at(-1), 0);
  });
});

describe("retry triggers", () => {
  test("the timer retries pending changes once the back-off has passed", async () => {
    const server = new FakeServer();
    let down = true;
    const defaultAnswer = server.answer;
    server.answer = (batch, index) => (down ? new Error("offline") : defaultAnswer(batch, index));
    const sync = createLocalSync({ fetch: server.fetch, storage: memoryStorage(), flushDelayMs: 1,
      flushIntervalMs: 10, retryBaseMs: 20, retryMaxMs: 20 });
    try {
      await sync.syncCartItem(cartRow(ID1));
      // No flush by hand: the first send and the retry after it are the timer's.
      await waitFor(() => server.sent.length >= 2, "the timer to send, fail and retry");
      assert.equal(sync.status().pending, 1);
      down = false;
      await waitFor(() => sync.status().pending === 0, "a retry by the timer once the server answers");
    } finally {
      sync.stop();
    }
  });

  test("the browser's online event flushes at once, forgetting the back-off", async () => {
    const target = new EventTarget();
    const events = globalThis as unknown as Record<string, unknown>;
    events.addEventListener = target.addEventListener.bind(target);
    events.removeEventListener = target.removeEventListener.bind(target);
    try {
      const server = new FakeServer();
      let down = true;
      const defaultAnswer = server.answer;
      server.answer = (batch, index) => (down ? new Error("offline") : defaultAnswer(batch, index));
      const sync = createLocalSync({ fetch: server.fetch, storage: memoryStorage(), retryBaseMs: 60_000,
        flushIntervalMs: 60_000 });
      await sync.syncCartItem(cartRow(ID1));
      await sync.flush();
      assert.ok(sync.status().nextRetryAt! > Date.now() + 20_000);
      down = false;
      target.dispatchEvent(new Event("online"));
      // Sent well before the back-off (over 20 s away) and the timer (60 s) could: the online event did it.
      await waitFor(() => sync.status().pending === 0, "the flush the online event starts", 10_000);
      sync.stop();
    } finally {
      delete events.addEventListener;
      delete events.removeEventListener;
    }
  });
});

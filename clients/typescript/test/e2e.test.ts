/**
 * End to end: the client against the real Flask server on the real database.
 *
 * Run by the Python suite (tests/test_typescript_client.py), which starts the database and sets
 * FITKART_E2E_PYTHON and FITKART_E2E_MONGODB_URI. Without them these tests fail (they never skip):
 * run them through the Python suite, or `npm run test:unit` for the unit tests alone.
 * Each client's outbox is the real IndexedDbStore, on fake-indexeddb.
 */

import "fake-indexeddb/auto";

import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { createHmac, randomUUID } from "node:crypto";
import { createServer } from "node:net";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { MongoClient, type Db } from "mongodb";

import { createLocalSync, type LocalSync, type LocalSyncOptions } from "../src/index.js";

const PYTHON = process.env.FITKART_E2E_PYTHON;
const MONGODB_URI = process.env.FITKART_E2E_MONGODB_URI;
const ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
const SECRET = "e2e-jwt-secret-with-at-least-32-characters";

if (!(PYTHON && MONGODB_URI)) {
  throw new Error("The end-to-end tests need FITKART_E2E_PYTHON (a Python with this repository's server installed) " +
    "and FITKART_E2E_MONGODB_URI (a database to use). Run them from the repository root with " +
    "`.venv/bin/pytest tests/test_typescript_client.py`, which starts the database and sets both; " +
    "run the unit tests alone with `npm run test:unit` in clients/typescript.");
}

let outboxes = 0;

/** An outbox (IndexedDB database) name no other client of this run uses. */
function uniqueName(): string {
  outboxes += 1;
  return `fitkart-e2e-${process.pid}-${outboxes}`;
}

/** A TCP port nobody listens on now. */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

/** `flask run` of this repository on a port, until stopped. */
class SyncServer {
  private process: ChildProcess | null = null;

  constructor(readonly port: number, private readonly env: Record<string, string> = {}) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    this.process = spawn(PYTHON!, ["-m", "flask", "--app", "fitkart_server", "run", "--host", "127.0.0.1",
      "--port", String(this.port)], {
      cwd: ROOT,
      env: { ...process.env, FITKART_MONGODB_URI: MONGODB_URI!, FLASK_DEBUG: "0",
        FITKART_DECIMAL_MODE: process.env.FITKART_E2E_DECIMAL_MODE ?? "double", ...this.env },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let log = "";
    this.process.stderr!.on("data", (chunk: Buffer) => (log += chunk.toString()));
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        if ((await fetch(`${this.url}/readyz`)).ok) return;
      } catch {
        // not listening yet
      }
      if (this.process.exitCode !== null || Date.now() > deadline) {
        throw new Error(`the sync server did not start: ${log.slice(-2000)}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  async stop(): Promise<void> {
    const child = this.process;
    this.process = null;
    if (child && child.exitCode === null) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
    }
  }
}

/** An HS256 token like a Supabase access token of `userId`. */
function accessToken(userId: string, expiresIn: number): string {
  const encode = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const body = `${encode({ alg: "HS256", typ: "JWT" })}.${encode({
    sub: userId, role: "authenticated", aud: "authenticated", iat: now, exp: now + expiresIn })}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

/** Documents of a collection without the mirror's own fields, in key order. */
async function stored(db: Db, collection: string): Promise<Record<string, unknown>[]> {
  return db.collection(collection).find({}, { projection: { _id: 0, _fitkart: 0 } }).sort({ _id: 1 }).toArray();
}

describe("against the real server", () => {
  let mongo: MongoClient;
  let db: Db;
  const servers: SyncServer[] = [];
  const clients: LocalSync[] = [];

  before(async () => {
    mongo = new MongoClient(MONGODB_URI!, { serverSelectionTimeoutMS: 5000 });
    db = mongo.db();
  });

  after(async () => {
    clients.forEach((local) => local.stop());
    await Promise.all(servers.map((server) => server.stop()));
    await mongo?.close();
  });

  async function server(env: Record<string, string> = {}): Promise<SyncServer> {
    const created = new SyncServer(await freePort(), env);
    servers.push(created);
    return created;
  }

  /** A client driven by hand (`autoStart: false`), on an outbox of its own unless `name` is given. */
  function client(url: string, options: LocalSyncOptions = {}): LocalSync {
    const local = createLocalSync({ baseUrl: url, name: uniqueName(), autoStart: false, ...options });
    clients.push(local);
    return local;
  }

  /** Changes made while the server is down are kept, and once it is up they become exactly the expected documents. */
  test("server down: changes queue; server up: the queue drains into exactly the expected documents", async () => {
    await db.dropDatabase();
    const sync = await server();
    const local = client(sync.url);
    const user = randomUUID();
    const [kurta, jeans, saree, scarf] = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
    const first = { id: randomUUID(), user_id: user, product_id: kurta, size: "M", color: "indigo", quantity: 1,
      created_at: "2025-12-19T14:24:01.000+00:00" };
    const second = { id: randomUUID(), user_id: user, product_id: jeans, size: "32", color: null, quantity: 1,
      created_at: "2025-12-19T14:24:02.000+00:00" };
    const order = { id: randomUUID(), user_id: user, status: "pending", total_amount: 4497, items: [
      { id: first.id, product_id: kurta, name: "Linen Kurta", price: 1499, quantity: 3, size: "M", image: "k.jpg" }],
      shipping_address: { city: "Bengaluru" }, created_at: "2025-12-19T14:25:00.000+00:00",
      updated_at: "2025-12-19T14:25:00.000+00:00" };

    await local.syncProfile({ id: user, email: "asha@example.com", user_metadata: { full_name: "Asha Rao" } });
    await local.syncCartItem(first);
    await local.syncCartItem(second);
    await local.syncCartItem({ id: first.id, quantity: 3 });
    await local.deleteCartItem(second.id);
    await local.syncWishlistItem({ user_id: user, product_id: saree });
    await local.syncWishlistItem({ user_id: user, product_id: scarf });
    await local.deleteWishlistItem(user, scarf);
    await local.syncOrder(order);

    const down = await local.flush();
    assert.equal(down.pending, 9);
    assert.match(down.lastError!, /unreachable/);
    assert.equal((await stored(db, "cart_items")).length, 0);

    await sync.start();
    const up = await local.flush();
    assert.deepEqual([up.pending, up.rejected, up.lastError], [0, 0, null]);

    assert.deepEqual(await stored(db, "profiles"), [{ user_id: user, email: "asha@example.com", full_name: "Asha Rao" }]);
    assert.deepEqual(await stored(db, "cart_items"), [{ ...first, quantity: 3, created_at: new Date(first.created_at) }]);
    assert.deepEqual(await stored(db, "wishlist_items"), [{ user_id: user, product_id: saree }]);
    const orders = await stored(db, "orders");
    assert.equal(orders.length, 1);
    assert.deepEqual({ ...orders[0], total_amount: Number(orders[0]!.total_amount) },
      { ...order, created_at: new Date(order.created_at), updated_at: new Date(order.updated_at) });
    assert.equal(await db.collection("sync_rejects").countDocuments(), 0);
  });

  /** A request held by the network past the client's timeout, landing after its retry, is stale: the newer stays. */
  test("a request that lands after its retry changes nothing: its version is older", async () => {
    await db.dropDatabase();
    const sync = await server();
    await sync.start();
    const held: { url: string; init: RequestInit }[] = [];
    let holding = false;
    const local = client(sync.url, { requestTimeoutMs: 300, fetch: (input, init) => {
      if (!holding) {
        return fetch(input, init);
      }
      holding = false;
      held.push({ url: String(input), init: { method: init?.method, headers: init?.headers, body: init?.body } });
      // A slow network: nothing comes back before the client's own timeout aborts the request.
      return new Promise<Response>((_resolve, reject) => init?.signal?.addEventListener("abort",
        () => reject(init.signal!.reason)));
    } });
    const row = { id: randomUUID(), user_id: randomUUID(), product_id: randomUUID(), size: "M", quantity: 1,
      created_at: "2025-12-19T14:24:01.000+00:00" };
    await local.syncCartItem(row);
    assert.equal((await local.flush()).pending, 0);
    await local.syncCartItem({ id: row.id, quantity: 2 });
    holding = true;
    assert.equal((await local.flush()).pending, 1, "the held request timed out: the change is still queued");
    await local.syncCartItem({ id: row.id, quantity: 3 });
    assert.equal((await local.flush()).pending, 0);
    const late = await fetch(held[0]!.url, held[0]!.init);
    assert.deepEqual(((await late.json()) as { results: { result: string }[] }).results.map((r) => r.result), ["stale"]);
    assert.equal((await stored(db, "cart_items"))[0]!.quantity, 3);
  });

  /** A new client on the same name (a reload) finds and sends what the old one queued. */
  test("a reload (a new client on the same name) loses nothing queued while the server was down", async () => {
    await db.dropDatabase();
    const sync = await server();
    const name = uniqueName();
    const ids = [randomUUID(), randomUUID(), randomUUID()];
    const before = client(sync.url, { name });
    for (const id of ids) {
      await before.syncCartItem({ id, user_id: randomUUID(), product_id: randomUUID(), size: "S" });
    }
    await before.deleteCartItem(ids[2]!);
    assert.equal((await before.flush()).pending, 4);
    before.stop();

    await sync.start();
    const after = client(sync.url, { name });
    assert.equal((await after.refresh()).pending, 4);
    assert.equal((await after.flush()).pending, 0);
    assert.deepEqual(await after.queued(), []);
    const storedIds = (await stored(db, "cart_items")).map((doc) => doc.id as string);
    assert.deepEqual(storedIds.sort(), ids.slice(0, 2).sort());
  });

  /** With authentication on, the bearer token is sent; a 401 asks for a fresh token once; no token: 401, queue kept. */
  test("with authentication on, the token is sent, and a 401 refreshes it once", async () => {
    await db.dropDatabase();
    const sync = await server({ SUPABASE_JWT_SECRET: SECRET });
    await sync.start();
    const user = randomUUID();
    const asked: boolean[] = [];
    const local = client(sync.url, {
      getAccessToken: ({ forceRefresh }) => {
        asked.push(forceRefresh);
        return accessToken(user, forceRefresh ? 3600 : -3600); // the first one has expired
      },
    });
    const item = { id: randomUUID(), user_id: user, product_id: randomUUID(), size: "L" };
    await local.syncCartItem(item);
    const status = await local.flush();
    assert.deepEqual([status.pending, status.rejected, status.lastError], [0, 0, null]);
    // Exactly one forced refresh; the other calls read the current token (to know who is signed in).
    assert.equal(asked.filter(Boolean).length, 1, `asked: ${asked.join()}`);
    assert.deepEqual((await stored(db, "cart_items")).map((doc) => doc.id), [item.id]);

    const anonymous = client(sync.url);
    await anonymous.syncCartItem({ ...item, quantity: 5 });
    const refused = await anonymous.flush();
    assert.equal(refused.pending, 1);
    assert.match(refused.lastError!, /401/);
  });

  /** A write the server refuses for good (403) becomes a rejection; another user's row is parked, not sent. */
  test("another user's row is refused for good: dropped from the queue, kept by the server", async () => {
    await db.dropDatabase();
    const sync = await server({ SUPABASE_JWT_SECRET: SECRET });
    await sync.start();
    const [me, other] = [randomUUID(), randomUUID()];
    const theirs = { id: randomUUID(), user_id: other, product_id: randomUUID(), size: "L" };
    const owner = client(sync.url, { getAccessToken: () => accessToken(other, 3600) });
    await owner.syncCartItem(theirs);
    const created = await owner.flush();
    assert.deepEqual([created.pending, created.rejected, created.lastError], [0, 0, null]);

    const local = client(sync.url, { getAccessToken: () => accessToken(me, 3600) });
    const refused: unknown[] = [];
    local.onRejected((rejection) => refused.push(rejection.operation.record));
    // A whole row made out to me (the token's user) under the id of a row that is the other user's.
    const taken = { ...theirs, user_id: me, quantity: 9 };
    await local.syncCartItem(taken);
    const mine = { id: randomUUID(), user_id: me, product_id: randomUUID(), size: "L" };
    await local.syncCartItem(mine);
    // Another user's row: parked until they sign in here, never sent with my token.
    await local.syncCartItem({ id: randomUUID(), user_id: other, product_id: randomUUID(), size: "M" });
    const status = await local.flush();
    assert.deepEqual([status.pending, status.parked, status.rejected], [0, 1, 1]);
    assert.deepEqual(refused, [taken]);
    assert.equal((await local.rejections())[0]!.error.code, 403);
    assert.deepEqual(await local.parkedOwners(), [{ owner: other, count: 1 }]);
    const cart = await stored(db, "cart_items");
    assert.deepEqual(cart.map((doc) => doc.id).sort(), [theirs.id, mine.id].sort());
    assert.notEqual(cart.find((doc) => doc.id === theirs.id)!.quantity, 9);
    assert.equal(await db.collection("sync_rejects").countDocuments({ status: 403 }), 1);
  });
});

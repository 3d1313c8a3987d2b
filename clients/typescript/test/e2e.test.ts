/**
 * End to end: the client against the real Flask server on the real database.
 *
 * Run by the Python suite (tests/test_typescript_client.py), which starts the database and
 * sets FITKART_E2E_PYTHON and FITKART_E2E_MONGODB_URI. Without them these tests skip,
 * unless FITKART_E2E_REQUIRED=1 makes that a failure.
 */

import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { createHmac, randomUUID } from "node:crypto";
import { createServer } from "node:net";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { MongoClient, type Db } from "mongodb";

import { createLocalSync, memoryStorage, type LocalSyncOptions } from "../src/index.js";

const PYTHON = process.env.FITKART_E2E_PYTHON;
const MONGODB_URI = process.env.FITKART_E2E_MONGODB_URI;
const REQUIRED = process.env.FITKART_E2E_REQUIRED === "1";
const ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
const SECRET = "e2e-jwt-secret-with-at-least-32-characters";

if (REQUIRED && !(PYTHON && MONGODB_URI)) {
  throw new Error("FITKART_E2E_REQUIRED=1 but FITKART_E2E_PYTHON or FITKART_E2E_MONGODB_URI is not set");
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

describe("against the real server", { skip: !(PYTHON && MONGODB_URI) && "needs FITKART_E2E_PYTHON and FITKART_E2E_MONGODB_URI" }, () => {
  let mongo: MongoClient;
  let db: Db;
  const servers: SyncServer[] = [];

  before(async () => {
    mongo = new MongoClient(MONGODB_URI!, { serverSelectionTimeoutMS: 5000 });
    db = mongo.db();
  });

  after(async () => {
    await Promise.all(servers.map((server) => server.stop()));
    await mongo?.close();
  });

  async function server(env: Record<string, string> = {}): Promise<SyncServer> {
    const created = new SyncServer(await freePort(), env);
    servers.push(created);
    return created;
  }

  function client(url: string, options: LocalSyncOptions = {}) {
    return createLocalSync({ baseUrl: url, storage: memoryStorage(), autoStart: false, ...options });
  }

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

  test("a reload (a new client on the same storage) loses nothing queued while the server was down", async () => {
    await db.dropDatabase();
    const sync = await server();
    const storage = memoryStorage();
    const ids = [randomUUID(), randomUUID(), randomUUID()];
    const before = client(sync.url, { storage, tabId: "reloaded" });
    for (const id of ids) {
      await before.syncCartItem({ id, user_id: randomUUID(), product_id: randomUUID(), size: "S" });
    }
    await before.deleteCartItem(ids[2]!);
    assert.equal((await before.flush()).pending, 4);
    before.stop();

    await sync.start();
    const after = client(sync.url, { storage, tabId: "reloaded" });
    assert.equal(after.status().pending, 4);
    assert.equal((await after.flush()).pending, 0);
    const storedIds = (await stored(db, "cart_items")).map((doc) => doc.id as string);
    assert.deepEqual(storedIds.sort(), ids.slice(0, 2).sort());
  });

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
    assert.deepEqual([status.pending, status.rejected], [0, 0]);
    assert.deepEqual(asked, [false, true]);
    assert.deepEqual((await stored(db, "cart_items")).map((doc) => doc.id), [item.id]);

    const anonymous = client(sync.url);
    await anonymous.syncCartItem({ ...item, quantity: 5 });
    const refused = await anonymous.flush();
    anonymous.stop();
    assert.equal(refused.pending, 1);
    assert.match(refused.lastError!, /401/);
  });

  test("another user's row is refused for good: dropped from the queue, kept by the server", async () => {
    await db.dropDatabase();
    const sync = await server({ SUPABASE_JWT_SECRET: SECRET });
    await sync.start();
    const [me, other] = [randomUUID(), randomUUID()];
    const local = client(sync.url, { getAccessToken: () => accessToken(me, 3600) });
    await local.syncCartItem({ id: randomUUID(), user_id: other, product_id: randomUUID(), size: "L" });
    await local.syncCartItem({ id: randomUUID(), user_id: me, product_id: randomUUID(), size: "L" });
    const status = await local.flush();
    assert.deepEqual([status.pending, status.rejected], [0, 1]);
    assert.deepEqual((await stored(db, "cart_items")).map((doc) => doc.user_id), [me]);
    assert.equal(await db.collection("sync_rejects").countDocuments({ status: 403 }), 1);
  });
});

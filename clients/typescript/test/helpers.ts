/** A fake FitKart Sync for unit tests: records each batch, answers as a handler says, and a settable /healthz. */

import type { CartItemRecord, Operation } from "../src/records.js";
import { SERVER_HEADER } from "../src/transport.js";
import type { AuthEvents, SessionLike } from "../src/types.js";
import { MemoryStore, type ChangeVersion, type QueuedOperation } from "../src/store.js";

export interface SentBatch {
  url: string;
  headers: Record<string, string>;
  /** The operations as sent, without their versions. */
  operations: Operation[];
  /** Each operation's version, in order. */
  versions: (ChangeVersion | undefined)[];
  /** Each operation's ref, in order. */
  refs: (string | undefined)[];
}

/**
 * An answer of the fake server: FitKart Sync's own (its header; each result echoing its operation's `ref`, by
 * position) unless `gateway` (a proxy's answer: no header) or `raw` (results left as given); `headers` added.
 */
export type Answer = { status: number; body?: unknown; gateway?: boolean; raw?: boolean;
  headers?: Record<string, string> } | Error;

/** The answer of a server that acknowledges every operation of a batch. */
export function acknowledged(batch: SentBatch): Answer {
  return {
    status: 200,
    body: { results: batch.operations.map((op) => (op.op === "delete" ? { deleted: 1 } : { result: "created", record: op.record })) },
  };
}

/**
 * fetch that records batches (POST /api/sync/batch); `answer` decides each response (default: every operation
 * acknowledged). A GET of /healthz is answered 200 or 503 by `healthy`, counted in `probes`, not recorded as a batch.
 */
export class FakeServer {
  readonly sent: SentBatch[] = [];
  answer: (batch: SentBatch, index: number) => Answer = acknowledged;
  /** Resolves pending batch responses only once this promise does, when set. */
  gate: Promise<void> | null = null;
  /** What GET /healthz says: 200 when true, 503 when false. */
  healthy = true;
  /** How many times /healthz was asked. */
  probes = 0;

  readonly fetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const url = String(input);
    if ((init?.method ?? "GET") === "GET" && new URL(url).pathname === "/healthz") {
      this.probes += 1;
      return json(this.healthy ? 200 : 503, this.healthy ? { status: "ok" } : { code: 503, message: "down" });
    }
    const sent = (JSON.parse(String(init?.body)) as { operations: (Operation & { version?: ChangeVersion;
      ref?: string })[] }).operations;
    const batch: SentBatch = {
      url,
      headers: Object.fromEntries(Object.entries((init?.headers ?? {}) as Record<string, string>)),
      operations: sent.map(({ version: _version, ref: _ref, ...operation }) => operation),
      versions: sent.map(({ version }) => version),
      refs: sent.map(({ ref }) => ref),
    };
    this.sent.push(batch);
    const answer = this.answer(batch, this.sent.length - 1);
    if (this.gate) {
      await this.gate;
    }
    if (answer instanceof Error) {
      throw answer;
    }
    const body = answer.body as { results?: unknown[] } | undefined;
    const echoed = !answer.raw && Array.isArray(body?.results)
      ? { ...body, results: body.results.map((result, index) => (typeof result === "object" && result !== null
        ? { ...result, ref: batch.refs[index] } : result)) }
      : answer.body;
    return json(answer.status, echoed ?? {}, { ...(answer.gateway ? {} : { [SERVER_HEADER]: "test" }),
      ...answer.headers });
  };

  /** All operations sent so far, in order. */
  get operations(): Operation[] {
    return this.sent.flatMap((batch) => batch.operations);
  }
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });
}

/** A promise and the function that resolves it. */
export function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((done) => (resolve = done));
  return { promise, resolve };
}

export const USER = "5b0e6f8a-3c1d-4f2e-9a7b-1c2d3e4f5a6b";
export const OTHER = "7d1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b";

/** A cart row as Supabase returns it. */
export function cartRow(id: string, fields: Record<string, unknown> = {}): CartItemRecord {
  return { id, user_id: USER, product_id: "9c8b7a6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", size: "M", color: "indigo",
    quantity: 1, created_at: "2025-12-19T14:24:22.123456+00:00", ...fields };
}

/** An unsigned JWT whose payload has `sub` (and any other claims): enough for the client, which does not verify. */
export function jwt(sub: string, claims: Record<string, unknown> = {}): string {
  const encode = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${encode({ alg: "HS256", typ: "JWT" })}.${encode({ sub, role: "authenticated", ...claims })}.c2lnbmF0dXJl`;
}

let databases = 0;

/** A database name no other test uses (each test gets its own IndexedDB outbox). */
export function uniqueName(prefix = "fitkart-test"): string {
  databases += 1;
  return `${prefix}-${process.pid}-${databases}`;
}

/** A memory store whose writes can be made to fail (quota, private mode), or to wait. */
export class FlakyStore extends MemoryStore {
  failing = false;
  gate: Promise<void> | null = null;
  readonly events: string[] = [];

  override async append(operations: Omit<QueuedOperation, "seq">[]): Promise<number[]> {
    if (this.gate) {
      await this.gate;
    }
    if (this.failing) {
      throw new DOMException("The quota has been exceeded.", "QuotaExceededError");
    }
    const seqs = await super.append(operations);
    this.events.push(`stored ${seqs.length}`);
    return seqs;
  }
}

/**
 * Resolve once `condition()` holds, checking every few milliseconds; reject after `timeoutMs`.
 * The deadline is generous (a busy machine may take long); how soon the condition holds is not what is tested.
 */
export async function waitFor(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Let pending promises and I/O callbacks run (works while setTimeout is mocked). */
export async function settle(rounds = 20): Promise<void> {
  for (let round = 0; round < rounds; round += 1) {
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** supabase-js's `supabase.auth` as far as the client uses it; `emit` tells its listeners of a session change. */
export function fakeAuth(): { auth: AuthEvents; emit: (event: string, token: string | null) => void } {
  const listeners: ((event: string, session: SessionLike | null) => void)[] = [];
  const auth: AuthEvents = { onAuthStateChange: (callback) => {
    listeners.push(callback);
    return { data: { subscription: { unsubscribe: () => undefined } } };
  } };
  const emit = (event: string, token: string | null) =>
    listeners.forEach((listener) => listener(event, token ? { access_token: token } : null));
  return { auth, emit };
}

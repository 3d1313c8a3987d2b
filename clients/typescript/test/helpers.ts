/** A fake FitKart Sync for unit tests: records each batch and answers as a handler says. */

import type { CartItemRecord, Operation } from "../src/records.js";

export interface SentBatch {
  url: string;
  headers: Record<string, string>;
  operations: Operation[];
}

type Answer = { status: number; body?: unknown } | Error;

/** fetch that records batches; `answer` decides each response (default: every operation acknowledged). */
export class FakeServer {
  readonly sent: SentBatch[] = [];
  answer: (batch: SentBatch, index: number) => Answer = (batch) => ({
    status: 200,
    body: { results: batch.operations.map((op) => (op.op === "delete" ? { deleted: 1 } : { result: "created", record: op.record })) },
  });
  /** Resolves pending responses only when `release` is called, when set. */
  gate: Promise<void> | null = null;

  readonly fetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const batch: SentBatch = {
      url: String(input),
      headers: Object.fromEntries(Object.entries((init?.headers ?? {}) as Record<string, string>)),
      operations: (JSON.parse(String(init?.body)) as { operations: Operation[] }).operations,
    };
    this.sent.push(batch);
    const answer = this.answer(batch, this.sent.length - 1);
    if (this.gate) {
      await this.gate;
    }
    if (answer instanceof Error) {
      throw answer;
    }
    return new Response(JSON.stringify(answer.body ?? {}), {
      status: answer.status,
      headers: { "Content-Type": "application/json" },
    });
  };

  /** All operations sent so far, in order. */
  get operations(): Operation[] {
    return this.sent.flatMap((batch) => batch.operations);
  }
}

/** A promise and the function that resolves it. */
export function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((done) => (resolve = done));
  return { promise, resolve };
}

export const USER = "5b0e6f8a-3c1d-4f2e-9a7b-1c2d3e4f5a6b";

/** A cart row as Supabase returns it. */
export function cartRow(id: string, fields: Record<string, unknown> = {}): CartItemRecord {
  return { id, user_id: USER, product_id: "9c8b7a6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", size: "M", color: "indigo",
    quantity: 1, created_at: "2025-12-19T14:24:22.123456+00:00", ...fields };
}

/**
 * Resolve once `condition()` holds, checking every few milliseconds; reject after `timeoutMs`.
 * The deadline is generous (a busy machine may take long); how soon the condition holds is not what is tested.
 */
export async function waitFor(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

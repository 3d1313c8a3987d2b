/**
 * The requests to FitKart Sync, and what an answer means: results to settle, a body the server refused (the data's
 * fault: split it, or set the one operation aside), or a failure that is nobody's data's fault (kept, retried).
 */

import type { Group } from "./batching.js";
import type { ServerError } from "./records.js";
import { describe } from "./util.js";

/** The header FitKart Sync puts on every answer of its own: a gateway's answer does not carry it by accident. */
export const SERVER_HEADER = "FitKart-Sync";
// Whole-request answers that may blame the body: one of its operations is at fault (too deep, too large, invalid).
const SPLITTABLE_STATUSES = new Set([400, 413, 422]);
// Answers whose Retry-After is heeded: "too many requests" and "unavailable"; any other failure backs off as ever.
const RETRY_AFTER_STATUSES = new Set([429, 503]);
// The longest Retry-After taken as said: a gateway's "come back tomorrow" must not park the queue for a day.
const RETRY_AFTER_MOST_MS = 15 * 60_000;
// The probe of /healthz gives up after this long: a hung server is an unreachable one.
const PROBE_TIMEOUT_MS = 5_000;

export type Outcome =
  /** Answered: each operation's result (matched by `resultsFor`). */
  | { kind: "results"; results: unknown[] }
  /** The server itself refused the request for its body: one of its operations is at fault. */
  | { kind: "refused"; error: ServerError }
  /**
   * Nobody's data's fault (unreachable, 5xx, 429, a gateway's refusal, a wrong address): kept, tried again;
   * `smaller` when a gateway refused a request of several operations for its size (fewer are tried next).
   */
  | { kind: "failed"; message: string; retryAfterMs: number | null; smaller?: boolean }
  /** A 401, and the refreshed token names another user (or none): the batch is not theirs to send. */
  | { kind: "not-theirs" };

/** A fresh token after a 401, or `false` when it is not the batch owner's. */
export type Refresh = () => Promise<string | null | false>;

export class Transport {
  constructor(private readonly baseUrl: string, private readonly fetcher: typeof fetch,
    private readonly timeoutMs: number) {}

  /** POST one batch with `token`; on a 401 send it once more with a fresh token, if it is still the owner's. */
  async send(batch: Group[], token: string | null, refresh: Refresh | null, keepalive: boolean): Promise<Outcome> {
    const body = JSON.stringify({
      operations: batch.map(({ op, collection, record, version, ref }) => ({ op, collection, record, version, ref })),
    });
    let sent = await this.post(body, token, keepalive);
    if ("response" in sent && sent.response.status === 401 && refresh) {
      const fresh = await refresh();
      if (fresh === false) {
        return { kind: "not-theirs" };
      }
      sent = await this.post(body, fresh, keepalive);
    }
    if (!("response" in sent)) {
      return { kind: "failed", message: `server unreachable: ${describe(sent.error)}`, retryAfterMs: null };
    }
    return classify(sent.response, batch.length, new TextEncoder().encode(body).length);
  }

  /** Whether the server answers /healthz; why not, when it does not. */
  async unhealthy(): Promise<string | null> {
    try {
      const response = await this.fetcher(`${this.baseUrl}/healthz`, {
        signal: AbortSignal.timeout(PROBE_TIMEOUT_MS), cache: "no-store" });
      return response.ok ? null : `server unreachable: HTTP ${response.status}`;
    } catch (error) {
      return `server unreachable: ${describe(error)}`;
    }
  }

  /** The response, or what the fetch threw (abandoned after the timeout, refused, offline). */
  private async post(body: string, bearer: string | null,
    keepalive: boolean): Promise<{ response: Response } | { error: unknown }> {
    const headers: Record<string, string> = { "Content-Type": "application/json" };
    if (bearer) {
      headers.Authorization = `Bearer ${bearer}`;
    }
    try {
      return { response: await this.fetcher(`${this.baseUrl}/api/sync/batch`, { method: "POST", headers, body,
        keepalive, signal: AbortSignal.timeout(this.timeoutMs) }) };
    } catch (error) {
      return { error };
    }
  }
}

/**
 * What an answer to a batch of `count` operations (`bytes` long) means. A whole-request refusal blames the data
 * only when FitKart Sync itself says so (its header, its JSON error) with a status about the body; a lone
 * operation refused for size only when it is larger than the limit the server names.
 */
export async function classify(response: Response, count: number, bytes: number): Promise<Outcome> {
  if (response.ok) {
    const body = await response.json().catch(() => null) as { results?: unknown } | null;
    if (Array.isArray(body?.results)) {
      return { kind: "results", results: body.results };
    }
    return { kind: "failed", message: `HTTP ${response.status} without results`, retryAfterMs: null };
  }
  const error = await readError(response);
  const fromServer = response.headers.get(SERVER_HEADER) !== null && typeof error.message === "string";
  const aboutTheBody = SPLITTABLE_STATUSES.has(response.status) &&
    (response.status !== 413 || count > 1 || bytes > limitOf(error));
  if (fromServer && aboutTheBody) {
    return { kind: "refused", error };
  }
  return { kind: "failed", message: `HTTP ${response.status}: ${error.message ?? error.status ?? "error"}`,
    retryAfterMs: RETRY_AFTER_STATUSES.has(response.status) ? retryAfterMs(response) : null,
    smaller: response.status === 413 && !fromServer && count > 1 };
}

/** The body limit a 413 of the server names (`errors.max_bytes`); none named: no size is known to be too large. */
function limitOf(error: ServerError): number {
  const named = (error.errors as { max_bytes?: unknown } | undefined)?.max_bytes;
  return typeof named === "number" ? named : Number.POSITIVE_INFINITY;
}

/** An answer's `Retry-After` (seconds, or an HTTP date) in milliseconds from now, at most 15 minutes; null: none. */
export function retryAfterMs(response: Response): number | null {
  const header = response.headers.get("Retry-After")?.trim();
  if (!header) {
    return null;
  }
  const ms = /^\d+$/.test(header) ? Number(header) * 1000 : Date.parse(header) - Date.now();
  return Number.isFinite(ms) ? Math.min(Math.max(0, ms), RETRY_AFTER_MOST_MS) : null;
}

/** The JSON error of a refused request, or what the response says when it has none. */
async function readError(response: Response): Promise<ServerError> {
  try {
    const body = (await response.json()) as ServerError;
    if (typeof body === "object" && body !== null) {
      return { ...body, code: body.code ?? response.status };
    }
  } catch {
    // not JSON: a gateway's page
  }
  return { code: response.status, status: response.statusText };
}

/**
 * The sender tab's loop: batches of the signed-in user's operations, oldest first, until none is left or a send
 * fails; then a jittered back-off (never shorter than a Retry-After), a probe of /healthz, and the next drain.
 */

import { BatchWindow, coalesce, resultsFor, type Group } from "./batching.js";
import type { SenderState } from "./coordination.js";
import type { SignedIn } from "./owner.js";
import type { ServerError } from "./records.js";
import type { OutboxStore, StoredRejection } from "./store.js";
import { Transport, type Refresh } from "./transport.js";
import type { LocalSyncOptions, SyncError } from "./types.js";
import { DONE, describe, unref } from "./util.js";

// Per-operation answers worth retrying; a 403 there is a row the caller may not touch: final.
const RETRYABLE_RESULTS = new Set([408, 425, 429]);
// The first pause between two halvings of a refused request; it doubles with each (up to retryBaseMs).
const SPLIT_PAUSE_MS = 50;

/** What the sender needs of the client it sends for. */
export interface SenderHost {
  readonly store: OutboxStore;
  readonly signedIn: SignedIn;
  readonly options: LocalSyncOptions;
  readonly random: () => number;
  state(): SenderState;
  setState(change: Partial<SenderState>): void;
  /** The queue changed here: recount, and tell the other tabs. */
  changed(): void;
  /** Operations set aside: tell the app, here and in every tab. */
  rejected(rejection: StoredRejection): void;
  report(error: SyncError): void;
  /** Resolves once the changes enqueued so far are stored. */
  written(): Promise<void>;
  /** Whether timers may send on their own (started automatically, and not stopped). */
  automatic(): boolean;
}

export class Sender {
  private readonly window: BatchWindow;
  private readonly transport: Transport;
  private inflight: Promise<void> | null = null;
  private failures = 0;
  /** One timer: the gathering of a burst before a send, or the pause before a retry. */
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** Nothing is sent before this moment (ms since the epoch): the Retry-After last asked for. */
  private notBefore = 0;
  private stopped = false;

  constructor(private readonly host: SenderHost, baseUrl: string, fetcher: typeof fetch) {
    const options = host.options;
    this.window = new BatchWindow(Math.max(1, options.maxBatch ?? 500));
    this.transport = new Transport(baseUrl, fetcher, options.requestTimeoutMs ?? 60_000);
  }

  /** Send now, forgetting the back-off; while a Retry-After holds, nothing (its timer sends when it ends). */
  flush(keepalive: boolean): Promise<void> {
    if (Date.now() < this.notBefore) {
      return DONE;
    }
    this.failures = 0;
    this.clearRetry();
    return this.drainOnce(keepalive);
  }

  /** Send soon, unless a send or a retry is already set: a burst of changes goes out as one batch. */
  soon(): void {
    if (this.timer || !this.host.automatic()) {
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.drainOnce(false);
    }, this.host.options.flushDelayMs ?? 50);
    unref(this.timer);
  }

  stop(): void {
    this.stopped = true;
    this.clearRetry();
  }

  /** One drain at a time; a flush during a drain waits for it and drains again (it may have missed new work). */
  private drainOnce(keepalive: boolean): Promise<void> {
    const previous = this.inflight ?? DONE;
    const next: Promise<void> = previous.then(() => this.drain(keepalive)).catch((error: unknown) => {
      this.failed(`could not send: ${describe(error)}`, null);
    }).finally(() => {
      if (this.inflight === next) this.inflight = null;
      this.host.setState({ flushing: this.inflight !== null });
    });
    this.inflight = next;
    this.host.setState({ flushing: true });
    return next;
  }

  private async drain(keepalive: boolean): Promise<void> {
    await this.host.written();
    if (this.host.state().nextRetryAt !== null) {
      return; // a drain queued behind one that failed: the back-off decides when to try again
    }
    const { store, signedIn } = this.host;
    // Each batch goes with a token and holds only that token's user's operations (and no one's).
    let rejected = false;
    for (;;) {
      const { token, user } = await signedIn.token(false);
      const operations = await store.head(user, this.window.size);
      if (operations.length === 0) {
        break;
      }
      const batch = coalesce(operations);
      const outcome = await this.transport.send(batch, token, this.refreshFor(user), keepalive);
      if (outcome.kind === "not-theirs") {
        // Go on with the new user's operations if the session now names them; a getter that still answers the
        // old token is a session in flux: try later rather than loop.
        if ((await signedIn.token(false)).user !== user) {
          continue;
        }
        this.failed("the access token was refused and its refresh names another user (or none)", null);
        return;
      }
      if (outcome.kind === "failed") {
        if (outcome.smaller) {
          this.window.shrink(operations.length); // paced by the back-off, and nothing set aside
        }
        this.failed(outcome.message, outcome.retryAfterMs);
        return;
      }
      if (outcome.kind === "results") {
        const settled = await this.settle(batch, outcome.results);
        rejected ||= settled.rejected;
        if (!settled.done) {
          return;
        }
        this.window.grow();
        this.host.changed();
        continue;
      }
      // The server refused the whole request for its body: halve it until the operation at fault is alone.
      if (batch.length > 1) {
        this.window.halve(operations.length);
        const retryBase = this.host.options.retryBaseMs ?? 1000;
        await pause(Math.min(retryBase, SPLIT_PAUSE_MS * 2 ** (this.window.splits - 1)));
        if (this.stopped) {
          return;
        }
        continue;
      }
      await this.reject([{ group: batch[0]!, error: outcome.error }]);
      rejected = true;
      this.window.reset(); // the one at fault is set aside: the rest go in full batches
      this.host.changed();
    }
    this.failures = 0;
    this.notBefore = 0;
    // A drain that set operations aside keeps saying so (status().rejected counts them too).
    this.host.setState({ ...(rejected ? {} : { lastError: null }), lastSyncedAt: Date.now(), nextRetryAt: null });
  }

  /** After a 401: a fresh token, if it still names `user` (else the batch is not theirs to send). */
  private refreshFor(user: string | undefined): Refresh | null {
    if (!this.host.options.getAccessToken) {
      return null;
    }
    return async () => {
      const fresh = await this.host.signedIn.token(true);
      return fresh.user === user ? fresh.token : false;
    };
  }

  /** Apply per-operation results; false when one must be retried (the rest waits behind it). */
  private async settle(batch: Group[], results: unknown[]): Promise<{ done: boolean; rejected: boolean }> {
    const done: number[] = [];
    const refused: { group: Group; error: ServerError }[] = [];
    let retry: string | null = null;
    for (const [index, result] of resultsFor(batch, results).entries()) {
      const group = batch[index]!;
      const code = result?.error?.code;
      if (result && !result.error) {
        done.push(...group.seqs);
      } else if (code !== undefined && code >= 400 && code < 500 && !RETRYABLE_RESULTS.has(code)) {
        refused.push({ group, error: result!.error! });
      } else {
        const reason = result?.error ? result.error.message ?? `code ${String(code)}` : "no result";
        retry = `operation ${index + 1} of a batch failed: ${reason}`;
        break;
      }
    }
    await this.host.store.remove(done);
    await this.reject(refused);
    if (retry !== null) {
      this.failed(retry, null);
    }
    return { done: retry === null, rejected: refused.length > 0 };
  }

  /** Keep refused operations apart (bounded: the oldest go first, reported), and tell every tab. */
  private async reject(refused: { group: Group; error: ServerError }[]): Promise<void> {
    if (refused.length === 0) {
      return;
    }
    const most = this.host.options.maxRejected ?? 500;
    const rejections: StoredRejection[] = refused.map(({ group, error }) => ({
      seq: group.seqs[0]!, seqs: group.seqs, owner: group.owner, error, rejectedAt: Date.now(),
      operation: { op: group.op, collection: group.collection, record: group.record } }));
    const evicted = await this.host.store.reject(rejections, most);
    if (evicted > 0) {
      this.host.report({ kind: "rejections-evicted", count: evicted,
        message: `${evicted} old rejection(s) forgotten: more than ${most} kept` });
    }
    rejections.forEach((rejection) => this.host.rejected(rejection));
  }

  /** Remember the failure; after an exponential, jittered, capped delay (at least any Retry-After), probe. */
  private failed(message: string, retryAfterMs: number | null): void {
    const options = this.host.options;
    this.failures += 1;
    const ceiling = Math.min(options.retryMaxMs ?? 15_000, (options.retryBaseMs ?? 1000) * 2 ** (this.failures - 1));
    let delay = ceiling / 2 + this.host.random() * (ceiling / 2);
    if (retryAfterMs !== null) {
      this.notBefore = Date.now() + retryAfterMs;
      delay = Math.max(delay, retryAfterMs);
    }
    this.clearRetry();
    this.host.setState({ lastError: message, nextRetryAt: Date.now() + delay });
    if (!this.host.automatic()) {
      return; // driven by hand: the caller retries
    }
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.probe();
    }, delay);
    unref(this.timer);
  }

  /** The light check before a retry: is the server there at all? */
  private async probe(): Promise<void> {
    const unhealthy = await this.transport.unhealthy();
    if (unhealthy !== null) {
      this.failed(unhealthy, null);
      return;
    }
    this.host.setState({ nextRetryAt: null });
    void this.drainOnce(false);
  }

  private clearRetry(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.host.setState({ nextRetryAt: null });
  }
}

function pause(ms: number): Promise<void> {
  return new Promise((resume) => setTimeout(resume, ms));
}

/**
 * One sender per origin: the tab holding the Web Lock sends, every tab enqueues, and a
 * BroadcastChannel tells the sender there is work and tells every tab what the sender did.
 */

import type { ServerError, Operation } from "./records.js";

/** What the sender reports to every tab. */
export interface SenderState {
  flushing: boolean;
  lastError: string | null;
  lastSyncedAt: number | null;
  nextRetryAt: number | null;
}

/** Messages between the tabs of one origin. */
export type Message =
  /** A tab appended operations, or saw a reason to retry now (online, visible, focus, `flush()`). */
  | { type: "work"; now: boolean; flushId?: string }
  /** The sender's state; `flushId` answers a `flush()` of another tab once its drain is over. */
  | { type: "state"; state: SenderState; flushId?: string }
  /** The queue changed (sent, rejected, discarded): recount. */
  | { type: "changed" }
  /** The server refused an operation for good. */
  | { type: "rejected"; seq: number; operation: Operation; error: ServerError };

type LockManager = {
  request(name: string, options: { signal: AbortSignal }, callback: () => Promise<void>): Promise<void>;
};

export class Coordination {
  private readonly channel: BroadcastChannel | null;
  private readonly abort = new AbortController();
  private release: (() => void) | null = null;

  constructor(private readonly name: string, onMessage: (message: Message) => void) {
    this.channel = typeof BroadcastChannel === "function" ? new BroadcastChannel(name) : null;
    if (this.channel) {
      this.channel.onmessage = (event: MessageEvent<Message>) => onMessage(event.data);
      (this.channel as { unref?: () => void }).unref?.(); // Node: do not keep the process alive
    }
  }

  /**
   * Call `onElected` once this context becomes the sender: when it holds the origin's lock,
   * which it keeps until `close()` or the tab goes away (then the next waiting tab gets it).
   * Without Web Locks (Node, old browsers) every client is its own sender.
   */
  elect(onElected: () => void): void {
    const locks = (globalThis as { navigator?: { locks?: LockManager } }).navigator?.locks;
    if (!locks) {
      onElected();
      return;
    }
    locks.request(`${this.name}:sender`, { signal: this.abort.signal }, () => {
      onElected();
      return new Promise<void>((resolve) => (this.release = resolve));
    }).catch(() => undefined); // aborted by close() while waiting
  }

  post(message: Message): void {
    try {
      this.channel?.postMessage(message);
    } catch {
      // the channel is closed: this client is stopping
    }
  }

  close(): void {
    this.abort.abort();
    this.release?.();
    this.channel?.close();
  }
}

/** What `status()` says: the queue's counts (recounted from the store), the sender's state, storage's last refusal. */

import type { SenderState } from "./coordination.js";
import { Listeners } from "./events.js";
import type { OutboxStore } from "./store.js";
import type { SyncStatus } from "./types.js";

export class StatusBoard {
  readonly listeners = new Listeners<SyncStatus>();
  /** The sender's state: this tab's own when it sends, else the sender tab's last word. */
  senderState: SenderState = { flushing: false, lastError: null, lastSyncedAt: null, nextRetryAt: null };
  /** Why storage last refused a change; null once a write succeeds again. */
  storageError: string | null = null;
  private counts = { total: 0, sendable: 0, rejected: 0 };
  private counting: Promise<void> | null = null;
  private recount = false;

  constructor(private readonly store: OutboxStore, private readonly user: () => string | undefined,
    private readonly maxQueue: number, private readonly isSender: () => boolean) {}

  status(): SyncStatus {
    return {
      pending: this.counts.sendable,
      parked: this.counts.total - this.counts.sendable,
      rejected: this.counts.rejected,
      sender: this.isSender(),
      ...this.senderState,
      lastError: this.storageError ?? this.senderState.lastError,
      storageError: this.storageError,
      overCapacity: this.counts.total > this.maxQueue,
    };
  }

  /** Recount from the store (one count at a time; a recount asked meanwhile runs once after it). */
  async refresh(): Promise<SyncStatus> {
    this.recount = true;
    while (this.counting) {
      await this.counting;
    }
    if (this.recount) {
      this.recount = false;
      this.counting = this.store.counts(this.user()).then((counts) => {
        this.counts = counts;
      }, () => undefined).finally(() => (this.counting = null));
      await this.counting;
      this.notify();
    }
    return this.status();
  }

  /** Changes just stored, `sendable` of them by the signed-in user: counted at once, so status() agrees. */
  stored(count: number, sendable: number): void {
    this.storageError = null;
    this.counts = { ...this.counts, total: this.counts.total + count, sendable: this.counts.sendable + sendable };
    this.notify();
  }

  notify(): void {
    this.listeners.emit(this.status());
  }
}

/**
 * createLocalSync: the shop's localSync calls, queued durably and sent in batches by one tab per origin.
 *
 * This module is the public API and the wiring: changes are stored here (in call order, each with its owner,
 * owner.ts), counted for `status()`, and sent by the sender tab's loop (sender.ts), which batches them
 * (batching.ts) and reads each answer (transport.ts); tabs coordinate in coordination.ts.
 */

import { Coordination, type Message, type SenderState } from "./coordination.js";
import { Listeners } from "./events.js";
import { IndexedDbStore, hasIndexedDb } from "./indexeddb.js";
import { SignedIn } from "./owner.js";
import {
  KEYS, type AuthUserLike, type CartItemRecord, type Collection, type Operation, type OrderRecord, type ProductRecord,
  type ProfileRecord, type RowRecord, type UserRoleRecord, type WishlistItemRecord,
} from "./records.js";
import { Sender } from "./sender.js";
import { StatusBoard } from "./status.js";
import { ANYONE, MemoryStore, identify, mayBeSentBy, type OutboxStore, type QueuedOperation, type StoredRejection } from "./store.js";
import type { LocalSync, LocalSyncOptions, Rejection, SyncError, SyncStatus } from "./types.js";
import { DONE, describe } from "./util.js";

// A flush asked of the sender tab resolves after this long even if the sender never answers.
const FLUSH_ANSWER_MS = 30_000;
const ENQUEUES_PER_WRITE = 1000;

/** A queued change not yet written to the store, with the owner it was made for. */
interface Unwritten {
  operation: Operation;
  /** Known at once once the client knows who is signed in (see SignedIn.ownerOf). */
  owner: string | Promise<string>;
  /** When the change was made (ms since the epoch): its version's time. */
  madeAt: number;
  written: () => void;
}

class LocalSyncClient implements LocalSync {
  private readonly store: OutboxStore;
  private readonly signedIn: SignedIn;
  private readonly random: () => number;
  private readonly ownsStore: boolean;
  private readonly coordination: Coordination;
  private readonly sending: Sender;
  private readonly rejectionListeners = new Listeners<Rejection>();
  private readonly errorListeners = new Listeners<SyncError>();
  private readonly flushAnswers = new Map<string, () => void>();
  private readonly unwritten: Unwritten[] = [];
  private writing: Promise<void> | null = null;
  private sender = false;
  private stopped = false;
  private readonly board: StatusBoard;
  private readonly nudge = () => void this.wake(true);
  private readonly onVisibility = () => {
    if ((globalThis as { document?: Document }).document?.visibilityState === "visible") this.nudge();
  };

  constructor(private readonly options: LocalSyncOptions) {
    const baseUrl = (options.baseUrl ?? "http://localhost:5000").replace(/\/+$/, "");
    const fetcher = options.fetch ?? ((...args: Parameters<typeof fetch>) => globalThis.fetch(...args));
    this.random = options.random ?? Math.random;
    const name = options.name ?? "fitkart-sync";
    this.ownsStore = options.store === undefined;
    this.store = options.store ?? (hasIndexedDb() ? new IndexedDbStore(name) : new MemoryStore());
    this.board = new StatusBoard(this.store, () => this.signedIn.user, options.maxQueue ?? 10_000, () => this.sender);
    this.coordination = new Coordination(name, (message) => this.hear(message));
    // A user signing in (again) gets their waiting changes sent now; every tab recounts what it may send.
    this.signedIn = new SignedIn(options.getAccessToken, () => queueMicrotask(() => this.userSwitched()),
      options.auth);
    this.sending = new Sender({
      store: this.store, signedIn: this.signedIn, options, random: this.random,
      state: () => this.board.senderState,
      setState: (change) => this.setState(change),
      changed: () => this.changed(),
      rejected: (rejection) => this.rejected(rejection),
      report: (error) => this.report(error),
      written: () => this.writing ?? DONE,
      automatic: () => this.automatic(),
    }, baseUrl, fetcher);
    if (options.autoStart ?? true) {
      this.start();
    } else {
      this.sender = true; // driven by hand (tests, scripts): this client sends when asked
    }
    void this.signedIn.current().then(() => this.refresh());
  }

  syncProfile(user: AuthUserLike | ProfileRecord): Promise<void> {
    if (typeof (user as ProfileRecord).user_id === "string") {
      return this.upsert("profiles", user as ProfileRecord);
    }
    const auth = user as AuthUserLike;
    return this.upsert("profiles", {
      user_id: auth.id,
      email: auth.email ?? undefined,
      full_name: auth.user_metadata?.full_name ?? undefined,
      avatar_url: auth.user_metadata?.avatar_url ?? undefined,
    });
  }

  syncCartItem(item: CartItemRecord): Promise<void> {
    return this.upsert("cart_items", item);
  }

  deleteCartItem(id: string): Promise<void> {
    return this.enqueue({ op: "delete", collection: "cart_items", record: { id } });
  }

  clearCart(userId: string): Promise<void> {
    return this.enqueue({ op: "delete", collection: "cart_items", record: { user_id: userId } });
  }

  syncOrder(order: OrderRecord): Promise<void> {
    return this.upsert("orders", order);
  }

  syncWishlistItem(item: WishlistItemRecord): Promise<void> {
    return this.upsert("wishlist_items", item);
  }

  deleteWishlistItem(userId: string, productId: string): Promise<void> {
    return this.enqueue({ op: "delete", collection: "wishlist_items", record: { user_id: userId, product_id: productId } });
  }

  clearWishlist(userId: string): Promise<void> {
    return this.enqueue({ op: "delete", collection: "wishlist_items", record: { user_id: userId } });
  }

  syncProduct(product: ProductRecord): Promise<void> {
    return this.upsert("products", product);
  }

  syncUserRole(role: UserRoleRecord): Promise<void> {
    return this.upsert("user_roles", role);
  }

  enqueue(operation: Operation): Promise<void> {
    if (!(operation?.collection in KEYS) || (operation.op !== "upsert" && operation.op !== "delete")) {
      // Refused alone, here: queued, it would fail the write of every change made beside it.
      const message = `not an operation of the batch endpoint: ${String(operation?.op)} ${String(operation?.collection)}`;
      this.report({ kind: "invalid", message, operations: [operation] });
      return DONE;
    }
    let record: RowRecord;
    try {
      // JSON round trip: a plain copy, without undefined fields, exactly as it will be sent.
      record = JSON.parse(JSON.stringify(operation.record ?? {})) as RowRecord;
    } catch (error) {
      this.refused([operation], `could not queue a change: ${String(error)}`);
      return DONE;
    }
    const copy: Operation = { op: operation.op, collection: operation.collection, record };
    return new Promise<void>((written) => {
      // The owner is taken now, while the user who made the change is the signed-in one.
      this.unwritten.push({ operation: copy, owner: this.signedIn.ownerOf(record), madeAt: Date.now(), written });
      this.writing ??= this.writeUnwritten();
    });
  }

  flush(options: { keepalive?: boolean } = {}): Promise<SyncStatus> {
    if (!this.sender) {
      return this.askSender();
    }
    return this.sending.flush(options.keepalive ?? false).then(() => this.refresh());
  }

  status(): SyncStatus {
    return this.board.status();
  }

  subscribe(listener: (status: SyncStatus) => void): () => void {
    return this.board.listeners.add(listener);
  }

  onRejected(listener: (rejection: Rejection) => void): () => void {
    return this.rejectionListeners.add(listener);
  }

  onError(listener: (error: SyncError) => void): () => void {
    return this.errorListeners.add(listener);
  }

  async rejections(): Promise<Rejection[]> {
    return (await this.store.rejections()).map(({ seq, operation, error }) => ({ seq, operation, error }));
  }

  async acknowledgeRejections(seqs?: number[]): Promise<number> {
    const forgotten = await this.store.acknowledge(seqs);
    this.changed();
    return forgotten;
  }

  queued(options: { owner?: string; limit?: number } = {}): Promise<QueuedOperation[]> {
    return this.store.list(options.owner, options.limit ?? 1000);
  }

  async parkedOwners(): Promise<{ owner: string; count: number }[]> {
    const user = await this.signedIn.current();
    return [...(await this.store.owners())]
      .filter(([owner]) => owner !== ANYONE && owner !== user && user !== undefined)
      .map(([owner, count]) => ({ owner, count }));
  }

  async discard(filter: { owner?: string; seqs?: number[] }): Promise<number> {
    if (filter.owner === undefined && filter.seqs === undefined) {
      return 0; // discarding everything takes saying so: an owner or the sequence numbers
    }
    const discarded = await this.store.discard(filter);
    this.changed();
    return discarded;
  }

  refresh(): Promise<SyncStatus> {
    return this.board.refresh();
  }

  userChanged(accessToken: string | null | undefined): void {
    this.signedIn.userChanged(accessToken);
  }

  stop(): void {
    this.stopped = true;
    this.sending.stop();
    this.signedIn.stop();
    const events = globalThis as { removeEventListener?: (type: string, listener: () => void) => void };
    events.removeEventListener?.("online", this.nudge);
    events.removeEventListener?.("focus", this.nudge);
    (globalThis as { document?: Document }).document?.removeEventListener("visibilitychange", this.onVisibility);
    this.coordination.close();
    this.sender = false;
    if (this.ownsStore) {
      // After pending writes: a change queued just before stop() is still stored.
      void (this.writing ?? DONE).then(() => this.store.close());
    }
  }

  /** The sender's state changed (this tab's, when it sends): tell the listeners, and the other tabs. */
  private setState(change: Partial<SenderState>): void {
    this.board.senderState = { ...this.board.senderState, ...change };
    if (this.sender) {
      this.coordination.post({ type: "state", state: this.board.senderState });
    }
    this.board.notify();
  }

  /** The queue changed here: recount, and tell the other tabs to. */
  private changed(): void {
    void this.refresh();
    this.coordination.post({ type: "changed" });
  }

  /** Operations set aside: say so here, and in every tab. */
  private rejected({ seq, operation, error }: StoredRejection): void {
    this.setState({ lastError: `${operation.op} ${operation.collection} refused: ${error.message ?? error.status ?? error.code}` });
    this.announce({ seq, operation, error });
    this.coordination.post({ type: "rejected", seq, operation, error });
  }

  private report(error: SyncError): void {
    this.errorListeners.emit(error, this.options.onError);
  }

  /** Whether timers may send on their own (started automatically, and not stopped). */
  private automatic(): boolean {
    return !this.stopped && (this.options.autoStart ?? true);
  }

  private start(): void {
    const events = globalThis as { addEventListener?: (type: string, listener: () => void) => void };
    events.addEventListener?.("online", this.nudge);
    events.addEventListener?.("focus", this.nudge);
    (globalThis as { document?: Document }).document?.addEventListener("visibilitychange", this.onVisibility);
    this.coordination.elect(() => {
      if (this.stopped) return;
      this.sender = true;
      this.board.notify();
      void this.flush(); // whatever earlier sessions and closed tabs left behind
    });
  }

  private upsert(collection: Collection, record: RowRecord): Promise<void> {
    return this.enqueue({ op: "upsert", collection, record });
  }

  /** Another user is signed in (or none): recount what may be sent, and send what now may. */
  private userSwitched(): void {
    void this.refresh();
    if (this.automatic()) {
      this.wake(true); // driven by hand, the caller sends
    }
  }

  /** Write queued changes to the store in call order, many per transaction, then tell the sender. */
  private async writeUnwritten(): Promise<void> {
    await DONE; // let the rest of this task's changes join the first write
    while (this.unwritten.length > 0) {
      const chunk = this.unwritten.splice(0, ENQUEUES_PER_WRITE);
      const owners = await Promise.all(chunk.map((change) => change.owner));
      try {
        await this.store.append(chunk.map(({ operation, madeAt }, index) => ({
          ...operation, owner: owners[index]!, identity: identify(operation), queuedAt: madeAt })));
        this.board.stored(chunk.length, owners.filter((owner) => mayBeSentBy(owner, this.signedIn.user)).length);
      } catch (error) {
        this.refused(chunk.map((change) => change.operation), `could not store ${chunk.length} change(s): ${describe(error)}`);
      }
      chunk.forEach((change) => change.written());
    }
    this.writing = null;
    if (this.sender) {
      this.sending.soon();
    } else {
      this.coordination.post({ type: "work", now: false });
    }
  }

  /** Storage refused these changes: say so everywhere it can be heard. */
  private refused(operations: Operation[], message: string): void {
    this.board.storageError = message;
    this.report({ kind: "storage", message, operations });
    this.board.notify();
  }

  /** A reason to send now (online, visible, focus, a user signing in): the sender drains, another tab tells it. */
  private wake(now: boolean): void {
    if (this.sender) {
      if (now) {
        void this.flush();
      } else {
        this.sending.soon();
      }
    } else {
      this.coordination.post({ type: "work", now });
    }
  }

  private hear(message: Message): void {
    switch (message.type) {
      case "work":
        void this.refresh();
        if (this.sender && message.flushId) {
          const id = message.flushId;
          void this.flush().then(() => this.coordination.post({ type: "state", state: this.board.senderState, flushId: id }));
        } else if (this.sender) {
          this.wake(message.now);
        }
        break;
      case "state":
        if (!this.sender) {
          this.board.senderState = message.state;
          void this.refresh();
        }
        if (message.flushId) {
          this.flushAnswers.get(message.flushId)?.();
        }
        break;
      case "changed":
        void this.refresh();
        break;
      case "rejected":
        this.announce({ seq: message.seq, operation: message.operation, error: message.error });
        void this.refresh();
        break;
    }
  }

  /** flush() from a tab that does not send: ask the sender, and wait for its answer (bounded). */
  private async askSender(): Promise<SyncStatus> {
    await this.writing; // this tab's own changes are stored before the sender is asked to send them
    const flushId = `${Date.now().toString(36)}-${this.random().toString(36).slice(2)}`;
    return new Promise<void>((answered) => {
      const timer = setTimeout(answered, FLUSH_ANSWER_MS);
      this.flushAnswers.set(flushId, () => {
        clearTimeout(timer);
        answered();
      });
      this.coordination.post({ type: "work", now: true, flushId });
    }).then(() => {
      this.flushAnswers.delete(flushId);
      return this.sender ? this.flush() : this.refresh();
    });
  }

  private announce(rejection: Rejection): void {
    this.rejectionListeners.emit(rejection);
  }

}

/** A localSync client with its own outbox. */
export function createLocalSync(options: LocalSyncOptions = {}): LocalSync {
  return new LocalSyncClient(options);
}

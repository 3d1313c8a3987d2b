/**
 * Who is signed in, and so who owns each change: the row's `user_id`, else the user signed in when the change was
 * made, as last learnt from supabase-js's auth events, `userChanged()` or a token the getter answered.
 */

import type { RowRecord } from "./records.js";
import { ANYONE } from "./store.js";
import { tokenSubject } from "./token.js";
import type { AccessTokenGetter, AuthEvents, SessionLike } from "./types.js";
import { describe } from "./util.js";

export class SignedIn {
  /** The signed-in user (`ANYONE`: no one); undefined when no tokens are used, so anyone may send anything. */
  user: string | undefined;
  /** Whether `user` was learnt yet (a token answered, an auth event, `userChanged()`), rather than assumed. */
  private known = false;
  /** Whether auth events tell of every sign-in and sign-out (else each change asks the getter for the next one). */
  private readonly watching: boolean;
  /** Counts what the app told (auth events, `userChanged()`): a getter's answer to a call made before is older. */
  private told = 0;
  private readonly unsubscribe: () => void;

  constructor(private readonly getter: AccessTokenGetter | undefined, private readonly changed: () => void,
    auth?: AuthEvents) {
    this.user = getter ? ANYONE : undefined;
    // Without a token getter nothing is sent as anyone in particular: who signs in does not matter.
    const subscription = getter ? auth?.onAuthStateChange((_event, session) => this.tell(subjectOf(session))) : null;
    this.watching = Boolean(subscription);
    this.unsubscribe = () => subscription?.data.subscription.unsubscribe();
  }

  /**
   * The access token and the user it names (`ANYONE`: none; undefined without a getter: no tokens used). With auth
   * events, who is signed in is learnt from them alone: a getter answering late with an older session must not
   * undo a sign-in it did not see. Requests are sent for the token's own user, never for `user`.
   */
  async token(forceRefresh: boolean): Promise<{ token: string | null; user: string | undefined }> {
    if (!this.getter) {
      return { token: null, user: undefined };
    }
    const told = this.told;
    let token: string | null;
    try {
      token = (await this.getter({ forceRefresh })) ?? null;
    } catch (error) {
      throw new Error(`the access token getter failed: ${describe(error)}`);
    }
    const subject = tokenSubject(token);
    if ((!this.watching || !this.known) && told === this.told) {
      this.learn(subject);
    }
    return { token, user: subject ?? ANYONE };
  }

  /** The signed-in user now, asking the getter (undefined when no tokens are used). */
  async current(): Promise<string | undefined> {
    try {
      await this.token(false);
    } catch {
      // the app's token getter failed: keep the last user known
    }
    return this.user;
  }

  /**
   * The owner of a change made now: its row's `user_id`, else the user signed in at this moment, as last learnt.
   * Only before anyone is learnt is the getter asked and waited for. Without auth events the getter is asked in
   * the background too, so a sign-in or sign-out the app did not tell of is learnt by the next change.
   */
  ownerOf(record: RowRecord): string | Promise<string> {
    const known = this.known || this.user === undefined;
    if (known && !this.watching) {
      void this.current();
    }
    if (typeof record.user_id === "string") {
      return record.user_id;
    }
    return known ? this.user ?? ANYONE : this.current().then((user) => user ?? ANYONE);
  }

  /** The app says who is signed in now (an access token, or null for no one). */
  userChanged(token: string | null | undefined): void {
    if (this.getter) {
      this.tell(tokenSubject(token));
    }
  }

  stop(): void {
    this.unsubscribe();
  }

  /** The app says who is signed in: it outranks any getter answer to a call made before. */
  private tell(subject: string | null): void {
    this.told += 1;
    this.learn(subject);
  }

  /**
   * A user learnt (null: no one signed in). A different one than a user known before is told to `changed`; the
   * first one learnt is not (each tab learns it as it loads, and the sender sends at its election anyway).
   */
  private learn(subject: string | null): void {
    const user = subject ?? ANYONE;
    const switched = this.known && user !== this.user;
    this.user = user;
    this.known = true;
    if (switched) {
      this.changed();
    }
  }
}

function subjectOf(session: SessionLike | null): string | null {
  return session?.user?.id ?? tokenSubject(session?.access_token) ?? null;
}


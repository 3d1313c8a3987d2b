/** Small helpers every module of the client uses. */

export const DONE: Promise<void> = Promise.resolve();

/** An error as one line. */
export function describe(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/** Let Node exit while a timer is pending (browsers have no unref). */
export function unref(timer: unknown): unknown {
  (timer as { unref?: () => void }).unref?.();
  return timer;
}

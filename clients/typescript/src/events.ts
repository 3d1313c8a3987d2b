/** The app's listeners: status changes, rejections and errors, each heard by all, none able to break the client. */

export class Listeners<Event> {
  private readonly listeners = new Set<(event: Event) => void>();

  /** Add a listener; returns the function that removes it. */
  add(listener: (event: Event) => void): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  /** Tell every listener (and `also`, the listener given as an option); a listener's failure is its own. */
  emit(event: Event, also?: (event: Event) => void): void {
    for (const listener of [...(also ? [also] : []), ...this.listeners]) {
      try {
        listener(event);
      } catch {
        // a listener's failure is its own
      }
    }
  }
}

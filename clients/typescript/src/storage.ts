/** Where the outbox lives: localStorage in a browser, memory elsewhere, or anything alike. */

/** The part of the Web Storage API the outbox needs, plus listing keys. */
export interface StorageAdapter {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
  keys(): string[];
}

/** A storage that lives as long as the process (tests, server-side rendering). */
export function memoryStorage(): StorageAdapter {
  const items = new Map<string, string>();
  return {
    getItem: (key) => items.get(key) ?? null,
    setItem: (key, value) => void items.set(key, value),
    removeItem: (key) => void items.delete(key),
    keys: () => [...items.keys()],
  };
}

/** Adapt a Web Storage object (`localStorage`). */
export function webStorage(storage: Storage): StorageAdapter {
  return {
    getItem: (key) => storage.getItem(key),
    setItem: (key, value) => storage.setItem(key, value),
    removeItem: (key) => storage.removeItem(key),
    keys: () => Array.from({ length: storage.length }, (_, index) => storage.key(index)).filter(
      (key): key is string => key !== null,
    ),
  };
}

/** localStorage when the page has a usable one, memory otherwise. */
export function defaultStorage(): StorageAdapter {
  try {
    const storage = (globalThis as { localStorage?: Storage }).localStorage;
    if (storage) {
      const probe = "fitkart-sync:probe";
      storage.setItem(probe, "1");
      storage.removeItem(probe);
      return webStorage(storage);
    }
  } catch {
    // private mode or storage disabled: fall through
  }
  return memoryStorage();
}

/**
 * This tab's id: kept in sessionStorage, which survives a reload of the tab but is not
 * shared with other tabs, so each tab owns one queue. "main" where there are no tabs.
 */
export function defaultTabId(): string {
  try {
    const session = (globalThis as { sessionStorage?: Storage }).sessionStorage;
    if (session) {
      const key = "fitkart-sync:tab";
      let id = session.getItem(key);
      if (!id) {
        id = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
        session.setItem(key, id);
      }
      return id;
    }
  } catch {
    // no session storage: one queue
  }
  return "main";
}

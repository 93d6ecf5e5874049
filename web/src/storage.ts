// The page's own preferences (open tabs, theme) in localStorage, kept in
// memory instead where the browser denies storage (the chat embedded by
// another site, with third-party storage blocked): they then last for the visit.

const memory = new Map<string, string>();

function local(): Storage | null {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

/** The saved value of `key`, or null. */
export function loadPref(key: string): string | null {
  try {
    const store = local();
    if (store) return store.getItem(key);
  } catch {
    // Denied on use: fall back to memory.
  }
  return memory.get(key) ?? null;
}

/** Saves `value` under `key`. */
export function savePref(key: string, value: string): void {
  try {
    const store = local();
    if (store) {
      store.setItem(key, value);
      return;
    }
  } catch {
    // Denied or full: fall back to memory.
  }
  memory.set(key, value);
}

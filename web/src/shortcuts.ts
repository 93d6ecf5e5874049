// Keyboard shortcuts: one table, matched against key events. None takes a key
// the browser keeps for itself (Ctrl/Cmd+T, +W, +N, +L, +R, +Tab, ...). Pure.

export type Action =
  | "newChat"
  | "search"
  | "nextTab"
  | "prevTab"
  | "closeTab"
  | "focusComposer"
  | "stop"
  | "help";

export interface Shortcut {
  action: Action;
  /** `mod` is Ctrl, or Cmd on Apple platforms. */
  mod?: boolean;
  shift?: boolean;
  alt?: boolean;
  /** KeyboardEvent.code (layout-independent) or, when `key` is set, KeyboardEvent.key. */
  code?: string;
  key?: string;
  /** Also fires while typing in a text field. */
  inInput?: boolean;
}

export const SHORTCUTS: Shortcut[] = [
  { action: "newChat", mod: true, shift: true, code: "KeyO", inInput: true },
  { action: "search", mod: true, code: "KeyK", inInput: true },
  { action: "nextTab", alt: true, shift: true, code: "ArrowDown", inInput: true },
  { action: "prevTab", alt: true, shift: true, code: "ArrowUp", inInput: true },
  { action: "closeTab", alt: true, shift: true, code: "KeyX", inInput: true },
  { action: "focusComposer", shift: true, code: "Escape", inInput: true },
  { action: "stop", code: "Escape", inInput: true },
  { action: "help", key: "?" },
  { action: "help", mod: true, code: "Slash", inInput: true },
];

/** Keys the browser (or OS) owns: a shortcut here must never use them. */
export const BROWSER_KEYS: { mod?: boolean; shift?: boolean; alt?: boolean; code: string }[] = [
  { mod: true, code: "KeyT" },
  { mod: true, code: "KeyW" },
  { mod: true, code: "KeyN" },
  { mod: true, code: "KeyL" },
  { mod: true, code: "KeyR" },
  { mod: true, code: "KeyF" },
  { mod: true, code: "KeyP" },
  { mod: true, code: "KeyS" },
  { mod: true, code: "KeyD" },
  { mod: true, code: "KeyH" },
  { mod: true, code: "KeyJ" },
  { mod: true, code: "Tab" },
  { mod: true, shift: true, code: "KeyT" },
  { mod: true, shift: true, code: "KeyW" },
  { mod: true, shift: true, code: "KeyN" },
  { mod: true, shift: true, code: "Tab" },
  { mod: true, code: "PageUp" },
  { mod: true, code: "PageDown" },
  { alt: true, code: "ArrowLeft" },
  { alt: true, code: "ArrowRight" },
  { alt: true, code: "Home" },
  { code: "F5" },
  { code: "F6" },
];

/** The part of a KeyboardEvent that matters. */
export interface KeyLike {
  key: string;
  code: string;
  ctrlKey: boolean;
  metaKey: boolean;
  shiftKey: boolean;
  altKey: boolean;
}

export function isApple(platform: string): boolean {
  return /Mac|iPhone|iPad|iPod/i.test(platform);
}

/** The action for a key event, or null. `inInput`: focus is in a text field. */
export function match(e: KeyLike, apple: boolean, inInput: boolean): Action | null {
  const mod = apple ? e.metaKey : e.ctrlKey;
  const otherMod = apple ? e.ctrlKey : e.metaKey;
  if (otherMod) return null;
  for (const s of SHORTCUTS) {
    if (inInput && !s.inInput) continue;
    if (s.key !== undefined) {
      // A printed character: shift is part of the character itself.
      if (e.key === s.key && !!s.mod === mod && !!s.alt === e.altKey) return s.action;
      continue;
    }
    if (e.code === s.code && !!s.mod === mod && !!s.shift === e.shiftKey && !!s.alt === e.altKey) return s.action;
  }
  return null;
}

const CODE_NAMES: Record<string, string> = {
  ArrowDown: "↓",
  ArrowUp: "↑",
  Escape: "Esc",
  Slash: "/",
  Enter: "Enter",
};

/** How a shortcut is written in the help overlay, e.g. `Ctrl+Shift+O`. */
export function describe(s: Shortcut, apple: boolean): string[] {
  const keys: string[] = [];
  if (s.mod) keys.push(apple ? "⌘" : "Ctrl");
  if (s.alt) keys.push(apple ? "⌥" : "Alt");
  if (s.shift) keys.push(apple ? "⇧" : "Shift");
  if (s.key) keys.push(s.key);
  else if (s.code) keys.push(CODE_NAMES[s.code] ?? s.code.replace(/^Key/, ""));
  return keys;
}

import assert from "node:assert/strict";
import { test } from "node:test";
import { BROWSER_KEYS, SHORTCUTS, describe, match, type KeyLike } from "../src/shortcuts.ts";

const key = (code: string, k: string, mods: Partial<KeyLike> = {}): KeyLike => ({
  key: k,
  code,
  ctrlKey: false,
  metaKey: false,
  shiftKey: false,
  altKey: false,
  ...mods,
});

test("no shortcut takes a key the browser keeps (Ctrl/Cmd+T, +W, ...)", () => {
  for (const s of SHORTCUTS) {
    for (const b of BROWSER_KEYS) {
      const same = s.code === b.code && !!s.mod === !!b.mod && !!s.shift === !!b.shift && !!s.alt === !!b.alt;
      assert.ok(!same, `${s.action} uses a browser key ${JSON.stringify(b)}`);
    }
  }
  for (const apple of [false, true]) {
    for (const code of ["KeyT", "KeyW", "KeyN", "KeyL", "Tab"]) {
      const mods = apple ? { metaKey: true } : { ctrlKey: true };
      assert.equal(match(key(code, code.slice(-1).toLowerCase(), mods), apple, false), null);
      assert.equal(match(key(code, code.slice(-1).toLowerCase(), { ...mods, shiftKey: true }), apple, false), null);
    }
  }
});

test("Ctrl on Linux and Windows, Cmd on a Mac", () => {
  assert.equal(match(key("KeyK", "k", { ctrlKey: true }), false, true), "search");
  assert.equal(match(key("KeyK", "k", { metaKey: true }), true, true), "search");
  assert.equal(match(key("KeyK", "k", { metaKey: true }), false, true), null);
  assert.equal(match(key("KeyO", "O", { ctrlKey: true, shiftKey: true }), false, false), "newChat");
});

test("tab keys, composer focus and stop", () => {
  assert.equal(match(key("ArrowDown", "ArrowDown", { altKey: true, shiftKey: true }), false, true), "nextTab");
  assert.equal(match(key("ArrowUp", "ArrowUp", { altKey: true, shiftKey: true }), false, true), "prevTab");
  assert.equal(match(key("KeyX", "X", { altKey: true, shiftKey: true }), false, true), "closeTab");
  assert.equal(match(key("Escape", "Escape", { shiftKey: true }), false, false), "focusComposer");
  assert.equal(match(key("Escape", "Escape"), false, true), "stop");
});

test("? opens help outside text fields only; plain letters do nothing", () => {
  assert.equal(match(key("Slash", "?", { shiftKey: true }), false, false), "help");
  assert.equal(match(key("Slash", "?", { shiftKey: true }), false, true), null);
  assert.equal(match(key("KeyA", "a"), false, false), null);
  assert.equal(match(key("Enter", "Enter"), false, true), null);
});

test("help shows each shortcut with platform names", () => {
  const newChat = SHORTCUTS.find((s) => s.action === "newChat");
  assert.ok(newChat);
  assert.deepEqual(describe(newChat, false), ["Ctrl", "Shift", "O"]);
  assert.deepEqual(describe(newChat, true), ["⌘", "⇧", "O"]);
});

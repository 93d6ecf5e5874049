import assert from "node:assert/strict";
import { test } from "node:test";
import { chooseNew, stepBranch, visiblePath } from "../src/branches.ts";

// greeting g; user u1 → a1; regenerated a2; then u2 after a2; then an edit of u1 as u1b → a3.
const msgs = [
  { id: "g", parent_id: null },
  { id: "u1", parent_id: "g" },
  { id: "a1", parent_id: "u1" },
  { id: "a2", parent_id: "u1" },
  { id: "u2", parent_id: "a2" },
  { id: "a4", parent_id: "u2" },
  { id: "u1b", parent_id: "g" },
  { id: "a3", parent_id: "u1b" },
];
const ids = (p: { message: { id: string } }[]) => p.map((e) => e.message.id);

test("by default the path leads to the newest message (the branch the server continues)", () => {
  const path = visiblePath(msgs);
  assert.deepEqual(ids(path), ["g", "u1b", "a3"]);
  assert.equal(path[1].index, 1);
  assert.equal(path[1].count, 2);
  assert.deepEqual(path[1].siblings, ["u1", "u1b"]);
});

test("stepping back to the first version shows its own newest descendants", () => {
  const path = visiblePath(msgs);
  const chosen = stepBranch({}, path[1], -1);
  const back = visiblePath(msgs, chosen);
  assert.deepEqual(ids(back), ["g", "u1", "a2", "u2", "a4"]);
  assert.equal(back[2].index, 1);
  assert.equal(back[2].count, 2);
  const older = visiblePath(msgs, stepBranch(chosen, back[2], -1));
  assert.deepEqual(ids(older), ["g", "u1", "a1"]);
});

test("steps past either end change nothing", () => {
  const path = visiblePath(msgs);
  assert.deepEqual(stepBranch({}, path[1], 1), {});
  assert.deepEqual(stepBranch({}, path[0], -1), {});
});

test("a new message is chosen over an older choice", () => {
  const chosen = { g: "u1" };
  assert.deepEqual(ids(visiblePath(msgs, chooseNew(chosen, { id: "u1b", parent_id: "g" }))), ["g", "u1b", "a3"]);
});

test("several roots (an edited first message without a greeting) are siblings", () => {
  const m = [
    { id: "u1", parent_id: null },
    { id: "a1", parent_id: "u1" },
    { id: "u1b", parent_id: null },
  ];
  const path = visiblePath(m);
  assert.deepEqual(ids(path), ["u1b"]);
  assert.equal(path[0].count, 2);
});

test("unknown parents and cycles do not hang or drop everything", () => {
  assert.deepEqual(ids(visiblePath([{ id: "x", parent_id: "missing" }])), ["x"]);
  assert.deepEqual(ids(visiblePath([])), []);
});

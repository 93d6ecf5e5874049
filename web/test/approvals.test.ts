import assert from "node:assert/strict";
import { test } from "node:test";
import { historyItem, type Approval, type Message } from "../src/api.ts";
import { approvalFor, outcomeOf, outcomeText, prettyArguments } from "../src/approval-view.ts";
import { visiblePath } from "../src/branches.ts";
import { LANGUAGES, translator } from "../src/i18n.ts";
import { turnEvents } from "../src/stream.ts";

const NOW = Date.parse("2026-12-01T10:00:00Z");

function approval(over: Partial<Approval> = {}): Approval {
  return {
    id: "ap1",
    session_id: "s1",
    message_id: "m2",
    tool_call_id: "call-1",
    tool: "delete_file",
    arguments: '{"path":"/tmp/x"}',
    state: "pending",
    expires_at: "2026-12-01T10:10:00Z",
    decided_by: null,
    reason: null,
    ...over,
  };
}

test("arguments are pretty-printed JSON; other text is shown as it came", () => {
  assert.equal(prettyArguments('{"path":"/tmp/x","n":[1,2]}'), '{\n  "path": "/tmp/x",\n  "n": [\n    1,\n    2\n  ]\n}');
  assert.equal(prettyArguments("  "), "{}");
  assert.equal(prettyArguments("{not json"), "{not json");
  // Text that looks like markup is returned as text (the view sets it with a text node).
  assert.equal(prettyArguments('{"html":"<img onerror=x>"}'), '{\n  "html": "<img onerror=x>"\n}');
});

test("a pending approval past its time counts as expired; decided ones keep their state", () => {
  assert.equal(outcomeOf(approval(), NOW), "pending");
  assert.equal(outcomeOf(approval({ expires_at: "2026-12-01T09:59:59Z" }), NOW), "expired");
  assert.equal(outcomeOf(approval({ state: "approved", expires_at: "2026-12-01T09:00:00Z" }), NOW), "approved");
  assert.equal(outcomeOf(approval({ state: "rejected" }), NOW), "rejected");
  assert.equal(outcomeOf(approval({ state: "expired" }), NOW), "expired");
  assert.equal(outcomeOf(approval({ expires_at: "" }), NOW), "pending");
});

test("outcomes read as sentences: the reason, who decided unless it was the visitor", () => {
  const t = translator("en");
  assert.equal(outcomeText(t, approval({ state: "approved", decided_by: "visitor:abc" }), NOW), "Approved.");
  assert.equal(outcomeText(t, approval({ state: "approved", decided_by: "admin" }), NOW), "Approved by admin.");
  assert.equal(outcomeText(t, approval({ state: "rejected", reason: " not that file " }), NOW), "Rejected: not that file");
  assert.equal(outcomeText(t, approval({ state: "rejected", reason: "" }), NOW), "Rejected.");
  assert.match(outcomeText(t, approval({ state: "expired" }), NOW), /^Expired/);
  assert.match(outcomeText(t, approval(), NOW), /waits for your approval/);
  // Every language has every approval string, with its placeholders.
  for (const [lang, strings] of Object.entries(LANGUAGES)) {
    assert.match(strings.approvalTitle, /\{tool\}/, lang);
    assert.match(strings.rejectedWhy, /\{reason\}/, lang);
    assert.match(strings.approvedBy, /\{who\}/, lang);
    for (const key of ["approve", "reject", "rejectReason", "rejectSend", "expiredNote", "approvalArgs"] as const) {
      assert.ok(strings[key].trim(), `${lang}: ${key}`);
    }
  }
});

test("a call finds its approval by call id and asking message", () => {
  const call = { id: "call-1", type: "function" as const, function: { name: "delete_file", arguments: "{}" } };
  const list = [approval({ id: "other", tool_call_id: "call-1", message_id: "m9" }), approval()];
  assert.equal(approvalFor(list, "m2", call)?.id, "ap1");
  assert.equal(approvalFor(list, "m3", { ...call, id: "call-2" }), undefined);
});

test("the stream's approval event becomes an approval; its chunk carries no text", () => {
  const data = JSON.stringify({
    id: "chatcmpl-1",
    object: "chat.completion.chunk",
    choices: [],
    approval: { id: "ap1", session_id: "s1", tool: "delete_file", arguments: '{"path":"/tmp/x"}', expires_at: "2026-12-01T10:10:00.000Z" },
  });
  assert.deepEqual(turnEvents(data), [
    {
      kind: "approval",
      approval: { id: "ap1", session_id: "s1", tool: "delete_file", arguments: '{"path":"/tmp/x"}', expires_at: "2026-12-01T10:10:00.000Z" },
    },
  ]);
  // Incomplete approval objects are ignored rather than shown half.
  assert.deepEqual(turnEvents(JSON.stringify({ choices: [], approval: { id: "x" } })), []);
});

test("tool calls and results go back in the history as stored, and stay on the shown path", () => {
  const m = (id: string, parent: string | null, role: Message["role"], extra: Partial<Message> = {}): Message => ({
    id,
    session_id: "s1",
    parent_id: parent,
    role,
    content: "",
    model: null,
    error: null,
    created_at: "2026-12-01T10:00:00Z",
    ...extra,
  });
  const calls = [{ id: "call-1", type: "function" as const, function: { name: "delete_file", arguments: '{"path":"/tmp/x"}' } }];
  const messages = [
    m("u1", null, "user", { content: "Delete it" }),
    m("a1", "u1", "assistant", { tool_calls: calls }),
    m("t1", "a1", "tool", { content: "deleted /tmp/x", tool_call_id: "call-1" }),
    m("a2", "t1", "assistant", { content: "Done." }),
  ];
  assert.deepEqual(
    visiblePath(messages).map((e) => e.message.id),
    ["u1", "a1", "t1", "a2"],
  );
  assert.deepEqual(messages.map(historyItem), [
    { role: "user", content: "Delete it" },
    { role: "assistant", content: "", tool_calls: calls },
    { role: "tool", content: "deleted /tmp/x", tool_call_id: "call-1" },
    { role: "assistant", content: "Done." },
  ]);
});

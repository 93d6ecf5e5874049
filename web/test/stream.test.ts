import assert from "node:assert/strict";
import { test } from "node:test";
import { SseParser, readTurn, turnEvents, type TurnEvent } from "../src/stream.ts";

const chunk = (content: string) =>
  JSON.stringify({ object: "chat.completion.chunk", choices: [{ index: 0, delta: { content }, finish_reason: null }] });

test("events split across arbitrary chunk boundaries come out whole", () => {
  const stream = `data: ${chunk("Hel")}\n\ndata: ${chunk("lo")}\r\n\r\n: keep-alive\n\ndata: [DONE]\n\n`;
  for (let cut = 1; cut < stream.length; cut++) {
    const p = new SseParser();
    const events = [...p.push(stream.slice(0, cut)), ...p.push(stream.slice(cut)), ...p.end()];
    assert.deepEqual(
      events.map((e) => e.data),
      [chunk("Hel"), chunk("lo"), "[DONE]"],
      `cut at ${cut}`,
    );
  }
});

test("multi-line data, event names and a final event without blank line", () => {
  const p = new SseParser();
  const events = [...p.push("event: session\ndata: a\ndata: b\n\nid: 3\ndata:c"), ...p.end()];
  assert.deepEqual(events, [
    { event: "session", data: "a\nb" },
    { event: "message", data: "c" },
  ]);
});

test("a \\r split from its \\n does not make an extra blank line", () => {
  const p = new SseParser();
  const a = p.push("data: x\r");
  const b = p.push("\ndata: y\r\n\r\n");
  assert.deepEqual([...a, ...b].map((e) => e.data), ["x\ny"]);
});

test("OpenAI chunks become deltas, finish, usage and done", () => {
  assert.deepEqual(turnEvents(JSON.stringify({ choices: [{ delta: { role: "assistant", content: "" } }] })), []);
  assert.deepEqual(turnEvents(chunk("hi")), [{ kind: "delta", text: "hi" }]);
  assert.deepEqual(turnEvents(JSON.stringify({ choices: [{ delta: {}, finish_reason: "stop" }] })), [
    { kind: "finish", reason: "stop" },
  ]);
  assert.deepEqual(
    turnEvents(JSON.stringify({ choices: [], usage: { prompt_tokens: 3, completion_tokens: 5, total_tokens: 8 } })),
    [{ kind: "usage", promptTokens: 3, completionTokens: 5 }],
  );
  assert.deepEqual(turnEvents("[DONE]"), [{ kind: "done" }]);
});

test("a mid-stream error event and unreadable data are errors", () => {
  const err = JSON.stringify({ error: { code: "upstream_stream_failed", message: "the answer was cut off: reset", type: "server_error" } });
  assert.deepEqual(turnEvents(err), [{ kind: "error", code: "upstream_stream_failed", message: "the answer was cut off: reset" }]);
  assert.equal(turnEvents("{not json")[0].kind, "error");
});

test("readTurn reads a byte stream with multi-byte characters split across reads", async () => {
  const text = `data: ${chunk("שלום ✓")}\n\ndata: [DONE]\n\n`;
  const bytes = new TextEncoder().encode(text);
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      for (let i = 0; i < bytes.length; i += 5) c.enqueue(bytes.slice(i, i + 5));
      c.close();
    },
  });
  const out: TurnEvent[] = [];
  for await (const e of readTurn(body)) out.push(e);
  assert.deepEqual(out, [{ kind: "delta", text: "שלום ✓" }, { kind: "done" }]);
});

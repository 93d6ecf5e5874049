// The official OpenAI Node SDK (`openai` from npm) as a real client of the
// agent runtime (mock LLM upstream, SQLite), started by web/dev/runtime.mjs:
// a chat, client-side tools round trip (whole and streamed), structured
// output accepted, an unsupported field refused by name.
// Run: ./test.sh (after `cargo build -p agent-runtime -p mock-llm --bins`).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import OpenAI from "openai";
import { startRuntime } from "../../web/dev/runtime.mjs";

const USER = "node-sdk-user";
let runtime;
let client;

before(async () => {
  runtime = await startRuntime();
  client = new OpenAI({
    // Channels are total: the SDK talks to a declared channel's routes.
    baseURL: `${runtime.base}/channels/web/v1`,
    apiKey: runtime.apiKey,
    maxRetries: 0,
    timeout: 30_000,
    defaultHeaders: { "x-switchboard-user": USER },
  });
});

after(() => runtime?.stop());

const tools = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "The weather in a city",
      parameters: { type: "object", properties: { city: { type: "string" } } },
    },
  },
];

async function sessionsApi(path) {
  const response = await fetch(`${runtime.base}/channels/web${path}`, {
    headers: { authorization: `Bearer ${runtime.apiKey}`, "x-switchboard-user": USER },
  });
  assert.equal(response.status, 200, path);
  return response.json();
}

test("a plain chat answers", async () => {
  const reply = await client.chat.completions.create({
    model: "demo",
    messages: [{ role: "user", content: "hello from node" }],
  });
  assert.equal(reply.choices[0].message.content, "Echo: hello from node");
  assert.ok(reply.usage.total_tokens > 0);
});

test("client-side tools round trip, whole, and stay in the stored history", async () => {
  const question = { role: "user", content: "weather in Bern" };
  const called = await client.chat.completions.create({ model: "demo", messages: [question], tools, tool_choice: "auto" });
  const choice = called.choices[0];
  assert.equal(choice.finish_reason, "tool_calls");
  assert.equal(choice.message.content, null);
  const [call] = choice.message.tool_calls;
  assert.equal(call.type, "function");
  assert.equal(call.function.name, "get_weather");
  assert.deepEqual(JSON.parse(call.function.arguments), { text: "weather in Bern" });

  const answer = await client.chat.completions.create({
    model: "demo",
    tools,
    messages: [question, choice.message, { role: "tool", tool_call_id: call.id, content: "Fog, 4 C" }],
  });
  assert.equal(answer.choices[0].finish_reason, "stop");
  assert.equal(answer.choices[0].message.content, "Tool results: Fog, 4 C");

  const sessions = await sessionsApi("/api/sessions?limit=100");
  const bern = sessions.data.filter((s) => s.title === "weather in Bern");
  assert.equal(bern.length, 1, JSON.stringify(sessions.data));
  const { data: messages } = await sessionsApi(`/api/sessions/${bern[0].id}/messages?limit=100`);
  assert.deepEqual(
    messages.map((m) => m.role),
    ["user", "assistant", "tool", "assistant"],
  );
  assert.equal(messages[1].tool_calls[0].id, call.id);
  assert.equal(messages[2].tool_call_id, call.id);
});

test("client-side tools round trip, streamed", async () => {
  const stream = await client.chat.completions.create({
    model: "demo",
    stream: true,
    stream_options: { include_usage: true },
    tools,
    messages: [{ role: "user", content: "weather in Graz" }],
  });
  const calls = [];
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      for (const piece of choice.delta.tool_calls ?? []) {
        calls[piece.index] ??= { id: "", name: "", arguments: "" };
        if (piece.id) calls[piece.index].id = piece.id;
        if (piece.function?.name) calls[piece.index].name += piece.function.name;
        if (piece.function?.arguments) calls[piece.index].arguments += piece.function.arguments;
      }
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  assert.equal(finish, "tool_calls");
  assert.equal(calls.length, 1);
  assert.ok(calls[0].id);
  assert.equal(calls[0].name, "get_weather");
  assert.deepEqual(JSON.parse(calls[0].arguments), { text: "weather in Graz" });
  assert.ok(usage?.completion_tokens > 0);

  // The SDK's own stream helper assembles the same call.
  const runner = client.chat.completions.stream({
    model: "demo",
    tools,
    messages: [{ role: "user", content: "weather in Linz" }],
  });
  const completion = await runner.finalChatCompletion();
  assert.equal(completion.choices[0].message.tool_calls[0].function.name, "get_weather");
});

test("structured output is accepted; an unsupported field is refused by name", async () => {
  const structured = await client.chat.completions.create({
    model: "demo",
    messages: [{ role: "user", content: "json please" }],
    response_format: {
      type: "json_schema",
      json_schema: { name: "answer", schema: { type: "object", properties: { a: { type: "string" } } } },
    },
    seed: 1,
    stop: ["END"],
  });
  assert.equal(structured.choices[0].message.content, "Echo: json please");
  await assert.rejects(
    client.chat.completions.create({ model: "demo", messages: [{ role: "user", content: "x" }], logprobs: true }),
    (error) => {
      assert.ok(error instanceof OpenAI.BadRequestError, String(error));
      assert.equal(error.status, 400);
      assert.equal(error.param, "logprobs");
      return true;
    },
  );
});

import assert from "node:assert/strict";
import { test } from "node:test";
import { normalize } from "../src/config.ts";
import { highlight, queryTerms } from "../src/highlight.ts";
import { LANGUAGES, direction, pickLanguage, translator } from "../src/i18n.ts";
import { changeFromEvent } from "../src/sync.ts";

test("search terms are marked wherever they occur, case-insensitively", () => {
  const terms = queryTerms("Kubernetes  operator!");
  assert.deepEqual(terms, ["kubernetes", "operator"]);
  const segs = highlight("A kubernetes Operator, operators", terms);
  assert.deepEqual(
    segs.filter((s) => s.hit).map((s) => s.text),
    ["kubernetes", "Operator", "operator"],
  );
  assert.equal(segs.map((s) => s.text).join(""), "A kubernetes Operator, operators");
  assert.deepEqual(highlight("abc", []), [{ text: "abc", hit: false }]);
});

test("every language has every string; he and ar are right to left", () => {
  const keys = Object.keys(LANGUAGES.en).sort();
  for (const [lang, strings] of Object.entries(LANGUAGES)) {
    assert.deepEqual(Object.keys(strings).sort(), keys, lang);
    for (const k of keys) assert.ok((strings as Record<string, string>)[k].length > 0, `${lang}.${k}`);
  }
  assert.equal(direction("he"), "rtl");
  assert.equal(direction("ar-EG"), "rtl");
  assert.equal(direction("de"), "ltr");
  assert.equal(pickLanguage("ru-RU"), "ru");
  assert.equal(pickLanguage("xx"), "en");
  assert.equal(translator("de")("rateLimited", { s: 7 }), "Zu viele Nachrichten. Nächster Versuch in 7 s möglich.");
});

test("config defaults come from the page path", () => {
  const c = normalize({ channel: "support", language: "he" }, "/channels/support/");
  assert.equal(c.apiBase, "/channels/support");
  assert.equal(c.title, "support");
  assert.equal(c.greeting, null);
  assert.deepEqual(c.features, { history: true, search: true, streaming: true });
  assert.equal(c.csrf.header, "x-csrf-token");
  assert.equal(c.events, null);
});

test("live-sync events name a session or the whole list", () => {
  assert.deepEqual(changeFromEvent('{"type":"session.updated","session_id":"s1"}'), { kind: "session", id: "s1" });
  assert.deepEqual(changeFromEvent('{"type":"sessions.changed"}'), { kind: "sessions" });
  assert.equal(changeFromEvent("nope"), null);
});

test("API errors keep the code, the message and Retry-After", async () => {
  const { toError } = await import("../src/api.ts");
  const limited = await toError(
    new Response(JSON.stringify({ error: { code: "rate_limited", message: "slow down", type: "rate_limit_error" } }), {
      status: 429,
      headers: { "retry-after": "17", "content-type": "application/json" },
    }),
  );
  assert.equal(limited.status, 429);
  assert.equal(limited.code, "rate_limited");
  assert.equal(limited.message, "slow down");
  assert.equal(limited.retryAfter, 17);
  const plain = await toError(new Response("gateway down", { status: 502, statusText: "Bad Gateway" }));
  assert.equal(plain.code, "http_502");
  assert.equal(plain.retryAfter, null);
});

// The chat page in Debian's Chromium, driven by playwright-core, against the
// real agent runtime (mock LLM upstream, SQLite), which serves the page itself.
// Run: npm run browser-test (after ./setup.sh and a cargo build of the binaries).

import assert from "node:assert/strict";
import { readFileSync, mkdirSync } from "node:fs";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startRuntime } from "../dev/runtime.mjs";

const here = dirname(fileURLToPath(import.meta.url));
// Screenshots go to test-results/ (ignored); WEB_SCREENSHOTS=../docs refreshes the committed ones.
const docs = resolve(here, "..", process.env.WEB_SCREENSHOTS ?? "test-results");
const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";

let runtime;
let server;
let browser;
/** Every request any page made, to check none left the origin. */
const requests = [];
/** Console errors and CSP violations (none expected). */
const problems = [];

/** Two other sites: one allowed to embed the chat, one not. */
const sites = {};

function hostSite(title) {
  const page = (chat) =>
    `<!doctype html><html lang="en"><head><title>${title}</title></head><body><h1>${title}</h1>` +
    `<script src="${chat}/channels/web/assets/embed.js" data-label="Chat with us"></script></body></html>`;
  return new Promise((ok) => {
    const s = createServer((req, res) => {
      // `?chat=` picks the chat's address (default: the runtime as started).
      const chat = new URL(req.url, "http://host").searchParams.get("chat") ?? server.url;
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      res.end(page(chat));
    });
    s.listen(0, "127.0.0.1", () => ok({ url: `http://127.0.0.1:${s.address().port}`, close: () => s.close() }));
  });
}

before(async () => {
  sites.allowed = await hostSite("Allowed shop");
  sites.other = await hostSite("Other site");
  // The runtime serves the page, its assets, identity and live sync itself.
  runtime = await startRuntime({ allowedOrigins: [sites.allowed.url] });
  server = { url: runtime.base, close: async () => {} };
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--lang=en-US"] });
});

after(async () => {
  await browser?.close();
  await server?.close();
  runtime?.stop();
  sites.allowed?.close();
  sites.other?.close();
});

async function context(options = {}) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "en-US", ...options });
  await ctx.grantPermissions(["clipboard-read", "clipboard-write"], { origin: server.url });
  ctx.on("request", (r) => requests.push(r.url()));
  return ctx;
}

async function open(ctx, channel = "web") {
  const page = await ctx.newPage();
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`${page.url()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`${page.url()}: ${e.message}`));
  await page.goto(`${server.url}/channels/${channel}/`);
  await page.waitForSelector('.app[data-ready="true"]');
  return page;
}

/** Sends `text` from the composer and waits for the answer to finish. */
async function send(page, text) {
  const users = await page.locator(".msg.user").count();
  await page.fill("#composer", text);
  await page.press("#composer", "Enter");
  // Done when the stored turn shows: one more user message and no live answer.
  await page.waitForFunction(
    (n) => document.querySelectorAll(".msg.user").length > n && !document.querySelector(".msg.live"),
    users,
    { timeout: 20000 },
  );
}

async function axe(page, label) {
  await page.evaluate(`${AXE};0`);
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await window.axe.run(document, { resultTypes: ["violations"] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 3) }));
  });
  const serious = result.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(serious, [], `${label}: ${JSON.stringify(serious, null, 1)}`);
  return result;
}

test("first visit: title, greeting, English left to right, timings", async () => {
  const ctx = await context();
  const page = await open(ctx);
  assert.equal(await page.title(), "Switchboard support");
  assert.equal(await page.getAttribute("html", "dir"), "ltr");
  const greeting = page.locator(".msg.assistant").first();
  assert.match(await greeting.innerText(), /Hello! I am the Switchboard demo agent/);
  // The greeting's Markdown is rendered, not shown raw.
  assert.equal(await greeting.locator("strong").innerText(), "Switchboard");
  await axe(page, "first visit");
  await ctx.close();
  // Timings: the median of five first visits, each in a fresh context (empty cache).
  const paints = [];
  const ready = [];
  for (let i = 0; i < 5; i++) {
    const c = await context();
    const p = await open(c);
    const t = await p.evaluate(() => ({
      paint: performance.getEntriesByName("first-contentful-paint")[0]?.startTime,
      ready: performance.getEntriesByName("switchboard:interactive")[0]?.startTime,
    }));
    paints.push(t.paint);
    ready.push(t.ready);
    await c.close();
  }
  const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  console.log(`# first contentful paint ${median(paints).toFixed(0)} ms, interactive ${median(ready).toFixed(0)} ms (median of 5, headless Chromium)`);
  assert.ok(median(ready) < 5000, `interactive after ${median(ready)} ms`);
});

test("send: the answer streams in, then stays after a reload", async () => {
  const ctx = await context();
  const page = await open(ctx);
  await page.fill("#composer", "Tell me about streams [[mock: chunk_delay=60; words=30]]");
  await page.press("#composer", "Enter");
  // Partial text shows while the answer is still being written.
  const live = page.locator(".msg.live .body");
  await live.filter({ hasText: "alpha" }).waitFor();
  const partial = await live.innerText();
  await page.locator(".msg.live").waitFor({ state: "detached", timeout: 20000 });
  const final = await page.locator(".msg.assistant").last().innerText();
  assert.ok(final.split(/\s+/).length >= 30, final);
  assert.ok(partial.length < final.length, "text arrived in pieces");
  // The tab and sidebar now show the chat; a reload brings it back.
  await page.locator(".session .stitle", { hasText: "Tell me about streams" }).waitFor();
  await page.reload();
  await page.waitForSelector('.app[data-ready="true"]');
  await page.locator(".msg.user", { hasText: "Tell me about streams" }).waitFor();
  assert.match(await page.locator(".msg.assistant").last().innerText(), /alpha bravo charlie/);
  await ctx.close();
});

test("stop mid-stream keeps the partial answer, marked as stopped", async () => {
  const ctx = await context();
  const page = await open(ctx);
  await page.fill("#composer", "A long one please [[mock: chunk_delay=80; words=300]]");
  await page.press("#composer", "Enter");
  await page.locator(".msg.live .body", { hasText: "bravo" }).waitFor();
  assert.equal(await page.getAttribute("#send", "aria-label"), "Stop");
  await page.click("#send");
  await page.locator(".msg.live").waitFor({ state: "detached" });
  const note = page.locator(".msg.assistant .note-stopped");
  await note.waitFor({ timeout: 10000 });
  const words = (await page.locator(".msg.assistant").last().locator(".body").innerText()).split(/\s+/).length;
  assert.ok(words > 1 && words < 300, `partial answer of ${words} words`);
  await page.reload();
  await page.waitForSelector('.app[data-ready="true"]');
  await page.locator(".msg.assistant .note-stopped").waitFor();
  await ctx.close();
});

test("regenerate and edit make branches; the arrows move between them", async () => {
  const ctx = await context();
  const page = await open(ctx);
  await send(page, "first question");
  await page.locator(".msg.assistant").last().getByRole("button", { name: "Regenerate" }).click();
  await page.locator(".msg.live").waitFor({ state: "detached", timeout: 20000 });
  const answer = page.locator(".msg.assistant").last();
  await answer.locator(".branch-pos", { hasText: "2/2" }).waitFor();
  await answer.getByRole("button", { name: "Previous version" }).click();
  await page.locator(".msg.assistant").last().locator(".branch-pos", { hasText: "1/2" }).waitFor();
  // Edit the question: a new branch with its own answer.
  await page.locator(".msg.user").last().getByRole("button", { name: "Edit" }).click();
  await page.fill(".edit-area", "second question");
  await page.press(".edit-area", "Enter");
  await page.locator(".msg.live").waitFor({ state: "detached", timeout: 20000 });
  const user = page.locator(".msg.user").last();
  await user.locator(".branch-pos", { hasText: "2/2" }).waitFor();
  assert.match(await page.locator(".msg.assistant").last().innerText(), /Echo: second question/);
  await user.getByRole("button", { name: "Previous version" }).click();
  await page.locator(".msg.user").last().locator(".branch-pos", { hasText: "1/2" }).waitFor();
  assert.match(await page.locator(".msg.user").last().innerText(), /first question/);
  // The older branch still holds its two answers.
  await page.locator(".msg.assistant").last().locator(".branch-pos", { hasText: "/2" }).waitFor();
  // Continuing the older branch after switching sends that branch's history.
  await send(page, "follow-up on the first");
  assert.match(await page.locator(".msg.user").nth(0).innerText(), /first question/);
  await axe(page, "branches");
  await ctx.close();
});

test("fallback answers and broken streams are shown as such", async () => {
  const ctx = await context();
  const page = await open(ctx);
  await send(page, "fail please [[mock: status=500]]");
  await page.locator(".msg.assistant.fallback .note-fallback").waitFor();
  await send(page, "cut me off [[mock: fault=reset; after=3; words=40]]");
  await page.locator(".msg.assistant").last().locator(".note-error").waitFor();
  await ctx.close();
});

test("search finds an older chat and highlights the hit", async () => {
  const ctx = await context();
  const page = await open(ctx);
  await send(page, "Where is Zanzibar on the map?");
  await page.keyboard.press("Control+Shift+O");
  await page.keyboard.press("Control+k");
  assert.equal(await page.evaluate(() => document.activeElement?.id), "search");
  await page.keyboard.type("zanzibar");
  const hit = page.locator(".results .session").first();
  await hit.waitFor();
  assert.equal((await hit.locator("mark").first().innerText()).toLowerCase(), "zanzibar");
  await axe(page, "search results");
  await hit.locator(".open").click();
  await page.locator(".msg.user", { hasText: "Where is Zanzibar" }).waitFor();
  await ctx.close();
});

test("rename, pin, archive, delete with undo", async () => {
  const ctx = await context();
  const page = await open(ctx);
  await send(page, "chat one");
  await page.keyboard.press("Control+Shift+O");
  await send(page, "chat two");
  const item = (title) => page.locator(".session", { has: page.locator(".stitle", { hasText: title }) });
  // Rename.
  await item("chat one").getByRole("button", { name: /^Rename/ }).click();
  await page.fill(".rename-input", "Renamed chat");
  await page.press(".rename-input", "Enter");
  await item("Renamed chat").waitFor();
  // Pin: pinned comes first.
  await item("Renamed chat").getByRole("button", { name: /^Pin/ }).click();
  await page.locator("#sec-pinned").waitFor();
  assert.equal(await page.locator(".sessions .stitle").first().innerText(), "Renamed chat");
  // Archive, undo.
  await item("chat two").getByRole("button", { name: /^Archive/ }).click();
  await page.locator(".toast", { hasText: "Chat archived." }).waitFor();
  await page.locator("details.archived").waitFor();
  await page.locator(".toast").getByRole("button", { name: "Undo" }).click();
  await page.locator("details.archived").waitFor({ state: "detached" });
  // Delete, undo: still there after the toast's time.
  await item("chat two").getByRole("button", { name: /^Delete/ }).click();
  await item("chat two").waitFor({ state: "detached" });
  await page.locator(".toast").getByRole("button", { name: "Undo" }).click();
  await item("chat two").waitFor();
  // Delete for good: gone after a reload too.
  await item("chat two").getByRole("button", { name: /^Delete/ }).click();
  await page.locator(".toast.show").waitFor({ state: "detached", timeout: 10000 }).catch(() => undefined);
  await page.waitForFunction(() => !document.querySelector(".toast.show"), null, { timeout: 10000 });
  await page.reload();
  await page.waitForSelector('.app[data-ready="true"]');
  await item("Renamed chat").waitFor();
  assert.equal(await item("chat two").count(), 0);
  await axe(page, "sidebar");
  await ctx.close();
});

test("message text with script, onerror images and javascript: links stays inert", async () => {
  const ctx = await context();
  const page = await open(ctx);
  const payloads = [
    "<script>window.pwned=1</script>",
    '<img src=x onerror="window.pwned=2">',
    "[click me](javascript:window.pwned=3)",
    "<a href=\"javascript:window.pwned=4\">link</a>",
  ];
  for (const p of payloads) await send(page, p);
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  assert.equal(await page.locator(".log img, .log script, .log iframe").count(), 0);
  assert.equal(await page.locator('.log a[href^="javascript" i]').count(), 0);
  // The text is shown as written (the mock echoes it back).
  await page.locator(".msg.assistant", { hasText: "<script>window.pwned=1</script>" }).waitFor();
  await page.locator(".msg.assistant", { hasText: "click me" }).first().click();
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  await ctx.close();
});

test("code blocks get a working copy button", async () => {
  const ctx = await context();
  const page = await open(ctx);
  await send(page, "Code:\n\n```\nlet x = 1;\n```");
  const block = page.locator(".msg.assistant .codeblock").last();
  await block.getByRole("button", { name: "Copy" }).click();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), "let x = 1;");
  await ctx.close();
});

test("Hebrew and Arabic channels lay out right to left", async () => {
  for (const [channel, lang, newChat] of [
    ["web-he", "he", "צ'אט חדש"],
    ["web-ar", "ar", "محادثة جديدة"],
  ]) {
    const ctx = await context();
    const page = await open(ctx, channel);
    assert.equal(await page.getAttribute("html", "dir"), "rtl");
    assert.equal(await page.getAttribute("html", "lang"), lang);
    assert.equal(await page.locator("#new-chat").innerText(), newChat);
    const side = await page.locator(".sidebar").boundingBox();
    const main = await page.locator(".main").boundingBox();
    assert.ok(side.x > main.x, "the sidebar sits on the right");
    await send(page, lang === "he" ? "שלום עולם" : "مرحبا بالعالم");
    await axe(page, channel);
    if (lang === "he") {
      mkdirSync(docs, { recursive: true });
      await page.screenshot({ path: join(docs, "web-chat-rtl.png") });
    }
    await ctx.close();
  }
});

test("a disabled channel says so; a rate-limited one gives the retry time", async () => {
  let ctx = await context();
  let page = await open(ctx, "web-off");
  await page.locator(".banner-disabled", { hasText: "switched off" }).waitFor();
  assert.ok(await page.locator("#composer").isDisabled());
  assert.ok(await page.locator("#send").isDisabled());
  await ctx.close();
  // Limits count per unix minute: start the three messages with 15 s of it left.
  const left = 60_000 - (Date.now() % 60_000);
  if (left < 15_000) await new Promise((resolve) => setTimeout(resolve, left + 50));
  ctx = await context();
  page = await open(ctx, "web-limited");
  // Two messages per minute per visitor on this channel: the third is refused.
  await send(page, "one");
  await send(page, "two");
  await page.fill("#composer", "three");
  await page.press("#composer", "Enter");
  const banner = page.locator(".banner-rate");
  await banner.waitFor();
  assert.match(await banner.innerText(), /Too many messages\. You can send again in \d+ s\./);
  assert.ok(await page.locator("#send").isDisabled());
  await ctx.close();
});

test("two windows of one visitor stay in sync live; another visitor sees nothing", async () => {
  const a = await context();
  const pageA = await open(a);
  const b = await context({ storageState: await a.storageState() });
  const pageB = await open(b);
  const other = await context();
  const pageC = await open(other);
  await send(pageA, "shared between windows");
  const started = Date.now();
  await pageB.locator(".session .stitle", { hasText: "shared between windows" }).waitFor({ timeout: 3000 });
  const ms = Date.now() - started;
  assert.ok(ms < 1000, `appeared after ${ms} ms`);
  // A rename in B shows in A.
  await pageB.locator(".session", { hasText: "shared between windows" }).getByRole("button", { name: /^Rename/ }).click();
  await pageB.fill(".rename-input", "renamed in B");
  await pageB.press(".rename-input", "Enter");
  await pageA.locator(".tab", { hasText: "renamed in B" }).waitFor({ timeout: 3000 });
  await pageC.reload();
  await pageC.waitForSelector('.app[data-ready="true"]');
  assert.equal(await pageC.locator(".session").count(), 0);
  await Promise.all([a.close(), b.close(), other.close()]);
});

test("cross-site and token-less requests are refused; the key never reaches the browser", async () => {
  const ctx = await context();
  const page = await open(ctx);
  const cookies = await ctx.cookies();
  const jar = cookies.map((c) => `${c.name}=${c.value}`).join("; ");
  const csrf = cookies.find((c) => c.name === "switchboard_csrf")?.value;
  const post = (headers) =>
    fetch(`${server.url}/channels/web/api/sessions`, { method: "POST", headers: { "content-type": "application/json", cookie: jar, ...headers }, body: "{}" });
  assert.equal((await post({ origin: "http://evil.example", "x-csrf-token": csrf })).status, 403);
  assert.equal((await post({})).status, 403);
  assert.equal((await post({ "x-csrf-token": csrf })).status, 201);
  const visitor = cookies.find((c) => c.name === "switchboard_visitor");
  assert.ok(visitor.httpOnly, "the visitor cookie is HttpOnly");
  assert.equal(await page.evaluate(() => document.cookie.includes("switchboard_visitor")), false);
  const html = await (await fetch(`${server.url}/channels/web/`)).text();
  const config = await (await fetch(`${server.url}/channels/web/config.json`)).text();
  assert.ok(!html.includes(runtime.apiKey) && !config.includes(runtime.apiKey));
  const response = await fetch(`${server.url}/channels/web/`);
  assert.match(response.headers.get("content-security-policy"), /script-src 'self'/);
  assert.match(response.headers.get("content-security-policy"), /frame-ancestors 'self' http:\/\/127\.0\.0\.1:\d+$/);
  await ctx.close();
});

test("keyboard: shortcuts, help overlay, tabs", async () => {
  const ctx = await context();
  const page = await open(ctx);
  await send(page, "tab one");
  await page.keyboard.press("Control+Shift+O");
  await send(page, "tab two");
  assert.equal(await page.locator(".tablist li").count(), 2);
  await page.keyboard.press("Alt+Shift+ArrowUp");
  assert.match(await page.locator('.tab[aria-current="page"]').innerText(), /tab one/);
  await page.keyboard.press("Alt+Shift+ArrowDown");
  assert.match(await page.locator('.tab[aria-current="page"]').innerText(), /tab two/);
  await page.keyboard.press("Shift+Escape");
  assert.equal(await page.evaluate(() => document.activeElement?.id), "composer");
  await page.locator(".log").focus();
  await page.keyboard.press("Shift+?");
  await page.locator("dialog.help[open]").waitFor();
  await axe(page, "help");
  await page.keyboard.press("Escape");
  await page.locator("dialog.help[open]").waitFor({ state: "detached" });
  await page.keyboard.press("Alt+Shift+X");
  assert.equal(await page.locator(".tablist li").count(), 1);
  // Keyboard only: Tab reaches the composer and Enter sends.
  await page.keyboard.press("Shift+Escape");
  await page.keyboard.type("typed only");
  await page.keyboard.press("Enter");
  await page.locator(".msg.assistant", { hasText: "Echo: typed only" }).waitFor();
  await ctx.close();
});

test("keyboard only: Tab reaches every control, in a sensible order", async () => {
  const ctx = await context();
  const page = await open(ctx);
  await send(page, "reachable by keyboard");
  await page.locator("body").focus();
  const seen = [];
  for (let i = 0; i < 40; i++) {
    await page.keyboard.press("Tab");
    seen.push(
      await page.evaluate(() => {
        const e = document.activeElement;
        return e ? e.id || e.getAttribute("aria-label") || e.className : "";
      }),
    );
  }
  for (const want of ["new-chat", "search", "Rename: reachable by keyboard", "Delete: reachable by keyboard", "Edit", "Regenerate", "composer"]) {
    assert.ok(seen.includes(want), `${want} not reached: ${seen.join(" | ")}`);
  }
  assert.ok(seen.indexOf("new-chat") < seen.indexOf("search") && seen.indexOf("search") < seen.indexOf("composer"));
  await ctx.close();
});

test("screenshots of the main screens, light and dark", async () => {
  mkdirSync(docs, { recursive: true });
  for (const scheme of ["light", "dark"]) {
    const ctx = await context({ colorScheme: scheme });
    const page = await open(ctx);
    // The mock LLM echoes the question, so the answer shows the Markdown rendered.
    await send(page, "Is this the right way to restart **the demo**?\n\n```sh\nkubectl rollout restart deployment/demo\nkubectl rollout status deployment/demo\n```\n\n- the pods roll one by one\n- see `kubectl get pods`");
    await page.keyboard.press("Control+Shift+O");
    await send(page, "What languages do you speak?");
    await page.locator(".session").first().getByRole("button", { name: /^Pin/ }).click();
    await page.locator("#sec-pinned").waitFor();
    await page.locator(".tab").first().click();
    await axe(page, `conversation ${scheme}`);
    await page.screenshot({ path: join(docs, `web-chat-${scheme}.png`) });
    await ctx.close();
  }
});

test("a channel without history, search or streaming still chats (Russian UI)", async () => {
  const ctx = await context();
  const page = await open(ctx, "web-plain");
  assert.equal(await page.getAttribute("html", "lang"), "ru");
  assert.equal(await page.locator("#new-chat").innerText(), "Новый чат");
  assert.ok(await page.locator("#search").isDisabled());
  await send(page, "первый вопрос");
  await page.locator(".msg.assistant", { hasText: "Echo: первый вопрос" }).waitFor();
  await send(page, "второй вопрос");
  await page.locator(".msg.assistant").last().getByRole("button", { name: "Сгенерировать заново" }).click();
  await page.locator(".msg.assistant").last().locator(".branch-pos", { hasText: "2/2" }).waitFor();
  assert.equal(await page.locator(".banner").isVisible(), false, "no error shown");
  await axe(page, "web-plain");
  await ctx.close();
});

test("behind an auth proxy: the user comes from its header; without it the API refuses", async () => {
  const bare = await fetch(`${server.url}/channels/web-proxy/api/sessions`);
  assert.equal(bare.status, 401);
  const ctx = await context();
  const page = await open(ctx, "web-proxy");
  await page.locator(".banner-error", { hasText: "x-forwarded-user" }).waitFor();
  await ctx.close();
  const alice = await context({ extraHTTPHeaders: { "x-forwarded-user": "alice" } });
  const pageA = await open(alice, "web-proxy");
  await send(pageA, "note from alice");
  assert.equal((await alice.cookies()).some((c) => c.name === "switchboard_visitor"), false, "no visitor cookie");
  // The same user in another browser sees the chat; another user does not.
  const again = await context({ extraHTTPHeaders: { "x-forwarded-user": "alice" } });
  const pageA2 = await open(again, "web-proxy");
  await pageA2.locator(".session .stitle", { hasText: "note from alice" }).waitFor();
  const bob = await context({ extraHTTPHeaders: { "x-forwarded-user": "bob" } });
  const pageB = await open(bob, "web-proxy");
  assert.equal(await pageB.locator(".session").count(), 0);
  await Promise.all([alice.close(), again.close(), bob.close()]);
});

test("an allowed site embeds the chat as a panel; another site cannot frame it", async () => {
  const ctx = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  const page = await ctx.newPage();
  await page.goto(sites.allowed.url);
  await page.getByRole("button", { name: "Chat with us" }).click();
  const chat = page.frameLocator("iframe");
  await chat.locator('.app.embed[data-ready="true"]').waitFor();
  await chat.locator("#composer").fill("hello from the widget");
  await chat.locator("#composer").press("Enter");
  await chat.locator(".msg.assistant", { hasText: "Echo: hello from the widget" }).waitFor();
  // The chat list is a drawer in the panel.
  await chat.getByRole("button", { name: "Chat list" }).click();
  await chat.locator(".session .stitle", { hasText: "hello from the widget" }).waitFor();
  await ctx.close();

  const other = await browser.newContext();
  const page2 = await other.newPage();
  const refused = new Promise((ok) =>
    page2.on("console", (m) => /frame-ancestors/.test(m.text()) && ok(m.text())),
  );
  await page2.goto(sites.other.url);
  await page2.getByRole("button", { name: "Chat with us" }).click();
  assert.match(await refused, /has been blocked/);
  assert.equal(await page2.frameLocator("iframe").locator(".app").count(), 0);
  await other.close();
});

test("embedded by another site over https: the visitor's partitioned cookies carry the chat", async () => {
  // The chat on another site than the shop (localhost, a secure context where
  // Secure cookies are kept, against the shop at 127.0.0.1), seen through an
  // ingress that terminated TLS (X-Forwarded-Proto: https): only cookies made
  // for third-party use (SameSite=None; Secure; Partitioned) reach the frame.
  const chat = server.url.replace("127.0.0.1", "localhost");
  const shop = `${sites.allowed.url}/?chat=${encodeURIComponent(chat)}`;
  const ctx = await browser.newContext({
    viewport: { width: 1200, height: 800 },
    extraHTTPHeaders: { "x-forwarded-proto": "https" },
  });
  const page = await ctx.newPage();
  const refusals = [];
  page.on("response", (r) => r.url().startsWith(chat) && r.status() >= 400 && refusals.push(`${r.status()} ${r.url()}`));
  await page.goto(shop);
  await page.getByRole("button", { name: "Chat with us" }).click();
  let frame = page.frameLocator("iframe");
  await frame.locator('.app.embed[data-ready="true"]').waitFor();
  await frame.locator("#composer").fill("hello across sites");
  await frame.locator("#composer").press("Enter");
  await frame.locator(".msg.assistant", { hasText: "Echo: hello across sites" }).waitFor();
  assert.deepEqual(refusals, []);
  // Partitioned cookies are kept under the shop's site.
  const cookies = (await ctx.cookies()).filter((c) => c.domain === "localhost");
  const visitor = cookies.find((c) => c.name === "switchboard_visitor");
  assert.ok(visitor, JSON.stringify(cookies));
  assert.equal(visitor.sameSite, "None");
  assert.equal(visitor.secure, true);
  assert.equal(visitor.httpOnly, true);
  assert.equal(visitor.partitionKey, "http://127.0.0.1");
  const csrf = cookies.find((c) => c.name === "switchboard_csrf");
  assert.equal(csrf?.sameSite, "None");
  // The same visitor after a reload of the shop: the chat is still theirs.
  await page.reload();
  await page.getByRole("button", { name: "Chat with us" }).click();
  frame = page.frameLocator("iframe");
  await frame.locator('.app.embed[data-ready="true"]').waitFor();
  await frame.getByRole("button", { name: "Chat list" }).click();
  await frame.locator(".session .stitle", { hasText: "hello across sites" }).waitFor();
  assert.deepEqual(refusals, []);
  await ctx.close();
});

test("no request left the page's origin; no console errors or CSP violations", () => {
  const origin = new URL(server.url).origin;
  const foreign = requests.filter((u) => !u.startsWith(origin) && !u.startsWith("data:"));
  assert.deepEqual(foreign, []);
  assert.ok(requests.length > 50);
  // Expected: the auth-proxy channel without its header (401), the rate limit (429), the disabled channel (503).
  assert.deepEqual(problems.filter((p) => !/status of (401|429|503)/.test(p)), []);
});

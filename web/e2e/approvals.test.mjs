// Tool calls that wait for the visitor's approval, in Debian's Chromium driven
// by playwright-core: the real runtime (mock LLM upstream, SQLite) offers the
// tools of a real MCP server (tests/mcp/server.py, the official MCP Python
// SDK), and the mock model asks for `delete_file`, which needs approval.
// Approve, reject with a reason, a reload while the call waits, and a call
// nobody decided in time. Run with the other browser tests (npm run browser-test).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { after, before, test } from "node:test";
import { chromium } from "playwright-core";
import { ADMIN_KEY, startMcpServer, startRuntime } from "../dev/runtime.mjs";

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const CHANNELS = [{ name: "web", language: "en", title: "Tools chat", greeting: "Hi! I can use tools." }];
const DELETE = (path) => `Delete it [[mock: tools=delete_file; args={"path":"${path}"}]]`;

let mcp;
let runtime;
/** A second runtime whose approvals expire after 3 s. */
let hasty;
let browser;
/** Every request any page made, with whether it carried an Authorization header. */
const requests = [];
const problems = [];

function tools(mcpUrl, approvalTimeoutSeconds) {
  return {
    sources: [{ name: "files", url: mcpUrl, timeoutSeconds: 10 }],
    requireApproval: ["delete_file"],
    approvalTimeoutSeconds,
    maxSteps: 3,
  };
}

before(async () => {
  mcp = await startMcpServer();
  runtime = await startRuntime({ channels: CHANNELS, tools: tools(mcp.url, 600) });
  hasty = await startRuntime({ channels: CHANNELS, tools: tools(mcp.url, 3) });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--lang=en-US"] });
});

after(async () => {
  await browser?.close();
  runtime?.stop();
  hasty?.stop();
  mcp?.stop();
});

async function open(base = runtime.base) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "en-US" });
  ctx.on("request", (r) => requests.push({ url: r.url(), method: r.method(), auth: "authorization" in r.headers() }));
  const page = await ctx.newPage();
  page.on("console", (m) => m.type() === "error" && problems.push(`${page.url()}: ${m.text()}`));
  page.on("pageerror", (e) => problems.push(`${page.url()}: ${e.message}`));
  await page.goto(`${base}/channels/web/`);
  await page.waitForSelector('.app[data-ready="true"]');
  return { ctx, page };
}

/** Sends `text` and waits until the turn waits for an approval: its card. */
async function askForApproval(page, text) {
  await page.fill("#composer", text);
  await page.press("#composer", "Enter");
  const card = page.locator('.approval[data-state="pending"]');
  await card.waitFor({ timeout: 30000 });
  return card;
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
}

/** The session's stored messages, read by the page itself (its cookie). */
async function stored(page) {
  return page.evaluate(async () => {
    const tabs = JSON.parse(localStorage.getItem("switchboard:web:tabs") ?? "{}");
    const id = tabs.tabs?.[tabs.active ?? 0];
    const r = await fetch(`/channels/web/api/sessions/${id}/messages?limit=100`, { credentials: "same-origin" });
    return (await r.json()).data;
  });
}

test("approve: the pending call shows with its arguments; approved, its result reaches the streamed answer", async () => {
  const { ctx, page } = await open();
  const card = await askForApproval(page, DELETE("/tmp/x"));
  assert.match(await card.locator(".approval-title").innerText(), /delete_file/);
  // The arguments, pretty-printed.
  assert.equal(await card.locator("pre").innerText(), '{\n  "path": "/tmp/x"\n}');
  // The answer is still open (the turn waits), and the page is accessible as it stands.
  assert.equal(await page.locator(".msg.live").count(), 1);
  await axe(page, "a pending approval");
  await card.getByRole("button", { name: "Approve" }).click();
  await page.locator(".msg.live").waitFor({ state: "detached", timeout: 30000 });
  await page.locator(".msg.assistant", { hasText: "Tool results: deleted /tmp/x" }).waitFor();
  const decided = page.locator('.approval[data-state="approved"]');
  await decided.waitFor();
  assert.equal(await decided.locator(".approval-outcome").innerText(), "Approved.");
  assert.equal(await decided.getByRole("button").count(), 0, "a decided call has no buttons");
  // Stored as the runtime ran it: the call, its result, the answer.
  const roles = (await stored(page)).map((m) => m.role);
  assert.deepEqual(roles.slice(-4), ["user", "assistant", "tool", "assistant"]);
  // A next message continues the same branch (the tool steps went back as stored);
  // `tools=none` makes the mock answer without calling a tool.
  await page.fill("#composer", "thanks [[mock: tools=none]]");
  await page.press("#composer", "Enter");
  await page.locator(".msg.assistant", { hasText: "Echo: thanks" }).waitFor({ timeout: 20000 });
  await page.locator(".msg.live").waitFor({ state: "detached" });
  const after = await stored(page);
  assert.equal(after.filter((m) => m.role === "user").length, 2, JSON.stringify(after.map((m) => m.role)));
  assert.equal(after.at(-2).parent_id, after.at(-3).id, "the new message follows the stored answer");
  await ctx.close();
});

test("reject with a reason, by keyboard: the model is told why", async () => {
  const { ctx, page } = await open();
  const card = await askForApproval(page, DELETE("/etc/passwd"));
  // Keyboard only: focus Reject, open the reason field, type, send with Enter.
  await card.getByRole("button", { name: "Reject" }).focus();
  await page.keyboard.press("Enter");
  const reason = card.getByLabel("Reason (optional, the assistant is told)");
  await reason.waitFor();
  assert.equal(await reason.evaluate((e) => e === document.activeElement), true, "the reason field has focus");
  // Escape goes back to the two buttons; Reject again.
  await page.keyboard.press("Escape");
  await card.getByRole("button", { name: "Approve" }).waitFor();
  assert.equal(await page.locator(".msg.live").count(), 1, "Escape in the card does not stop the answer");
  await card.getByRole("button", { name: "Reject" }).click();
  await reason.fill("not that file");
  await axe(page, "the reason field");
  await page.keyboard.press("Enter");
  await page.locator(".msg.live").waitFor({ state: "detached", timeout: 30000 });
  await page.locator(".msg.assistant", { hasText: "rejected by a person: not that file" }).waitFor();
  const decided = page.locator('.approval[data-state="rejected"]');
  assert.equal(await decided.locator(".approval-outcome").innerText(), "Rejected: not that file");
  await ctx.close();
});

test("a reload while the call waits shows it again, decidable; decided, the answer streams on and the outcome stays", async () => {
  const { ctx, page } = await open();
  await askForApproval(page, DELETE("/tmp/reloaded"));
  await page.reload();
  await page.waitForSelector('.app[data-ready="true"]');
  const card = page.locator('.approval[data-state="pending"]');
  await card.waitFor({ timeout: 20000 });
  assert.equal(await card.locator("pre").innerText(), '{\n  "path": "/tmp/reloaded"\n}');
  await card.getByRole("button", { name: "Approve" }).focus();
  await page.keyboard.press("Enter");
  const decided = page.locator('.approval[data-state="approved"]');
  await decided.waitFor();
  // The turn went on in the runtime (the tool ran, its result is stored) and
  // the answer to it streams into the page.
  await page.locator(".msg.assistant", { hasText: "Tool results: deleted /tmp/reloaded" }).waitFor({ timeout: 30000 });
  await page.locator(".msg.live").waitFor({ state: "detached", timeout: 30000 });
  const messages = await stored(page);
  assert.equal(messages.filter((m) => m.role === "tool" && m.content === "deleted /tmp/reloaded").length, 1, "the tool ran once");
  // After another reload the decision is still shown.
  await page.reload();
  await page.waitForSelector('.app[data-ready="true"]');
  await page.locator('.approval[data-state="approved"]').waitFor({ timeout: 20000 });
  await ctx.close();
});

test("an operator's decision and an expired call show as such", async () => {
  // The operator decides through the admin API with the admin key (never in the page).
  const { ctx, page } = await open();
  await askForApproval(page, DELETE("/tmp/by-admin"));
  const pending = await (await fetch(`${runtime.base}/api/admin/approvals`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } })).json();
  const id = pending.data.find((a) => a.arguments.includes("/tmp/by-admin"))?.id;
  assert.ok(id, JSON.stringify(pending));
  const r = await fetch(`${runtime.base}/api/admin/approvals/${id}`, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ approve: false, reason: "change freeze" }),
  });
  assert.equal(r.status, 200, await r.text());
  await page.locator(".msg.live").waitFor({ state: "detached", timeout: 30000 });
  const decided = page.locator('.approval[data-state="rejected"]');
  await decided.waitFor();
  assert.equal(await decided.locator(".approval-outcome").innerText(), "Rejected: change freeze");
  await ctx.close();
  // Nobody decides within 3 s.
  const slow = await open(hasty.base);
  await askForApproval(slow.page, DELETE("/tmp/late"));
  await slow.page.locator(".msg.live").waitFor({ state: "detached", timeout: 30000 });
  await slow.page.locator(".msg.assistant", { hasText: "within 3 seconds (expired)" }).waitFor();
  const expired = slow.page.locator('.approval[data-state="expired"]');
  await expired.waitFor();
  assert.match(await expired.locator(".approval-outcome").innerText(), /^Expired/);
  await slow.ctx.close();
});

test("decisions went through the channel's own routes with the visitor's cookie, never a key", () => {
  const decisions = requests.filter((r) => r.method === "POST" && /\/approvals\//.test(r.url));
  assert.ok(decisions.length >= 3, JSON.stringify(decisions));
  for (const d of decisions) {
    assert.match(new URL(d.url).pathname, /^\/channels\/web\/api\/sessions\/[^/]+\/approvals\/[^/]+$/);
    assert.equal(d.auth, false, d.url);
  }
  assert.deepEqual(requests.filter((r) => r.auth), []);
  assert.deepEqual(problems, []);
});

// Starts the mock LLM and the agent runtime (SQLite in a temp dir) as child
// processes for the dev server and the browser tests; stops them by pid.
// Binaries: $AGENT_RUNTIME_BIN and $MOCK_LLM_BIN, else $CARGO_TARGET_DIR/debug,
// else the repository's target/debug (build them with
// `cargo build -p agent-runtime -p switchboard-tests --bins`).

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync, openSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** The channels the harness serves: every shape the page must handle. */
export const CHANNELS = [
  { name: "web", language: "en", title: "Switchboard support", greeting: "Hello! I am the **Switchboard** demo agent. Ask me anything." },
  { name: "web-de", language: "de", title: "Switchboard Hilfe", greeting: "Hallo! Wie kann ich helfen?" },
  { name: "web-he", language: "he", title: "תמיכה", greeting: "שלום! איך אפשר לעזור?" },
  { name: "web-ar", language: "ar", title: "الدعم", greeting: "مرحبًا! كيف يمكنني المساعدة؟" },
  { name: "web-ru", language: "ru", title: "Поддержка", greeting: "Здравствуйте! Чем помочь?" },
  { name: "web-off", language: "en", title: "Closed chat", greeting: "Hi", enabled: false },
  { name: "web-limited", language: "en", title: "Limited chat", greeting: "Hi", rateLimit: { requestsPerMinutePerUser: 2 } },
  // No readable history, no search, no streaming: the page keeps the visit's turns itself.
  { name: "web-plain", language: "ru", title: "Простой чат", greeting: "Здравствуйте!", features: { history: false, search: false, streaming: false } },
  // Behind an auth proxy: the user comes from this header; requests without it are refused.
  { name: "web-proxy", language: "en", title: "Staff chat", greeting: "Hi, colleague.", trustedHeader: "x-forwarded-user" },
];

export const ALL_FEATURES = { history: true, search: true, streaming: true };

export const API_KEY = "dev-tenant-key-not-for-browsers";
export const ADMIN_KEY = "dev-admin-key-not-for-browsers";

function binary(name, envName) {
  const candidates = [
    process.env[envName],
    process.env.CARGO_TARGET_DIR && join(process.env.CARGO_TARGET_DIR, "debug", name),
    join(repo, "target", "debug", name),
  ].filter(Boolean);
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new Error(`${name} not found (tried ${candidates.join(", ")}); set ${envName}`);
  return found;
}

export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.on("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

async function waitFor(url, deadlineMs, child, name, anyAnswer = false) {
  const until = Date.now() + deadlineMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}`);
    try {
      const r = await fetch(url);
      if (r.ok || anyAnswer) return;
    } catch {
      // not up yet
    }
    if (Date.now() > until) throw new Error(`${name} did not answer ${url} in time`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function yaml(value) {
  return JSON.stringify(value); // JSON is YAML
}

/**
 * The MCP test server (tests/mcp/server.py, the official MCP Python SDK) on a
 * free port: resolves to { url, stop() } once it prints its ready line. Python
 * from $SWITCHBOARD_PYTHON, else the repository's .switchboard/venv (made by
 * hack/python-env.sh when missing).
 */
export async function startMcpServer() {
  let python = process.env.SWITCHBOARD_PYTHON;
  if (!python) {
    python = join(repo, ".switchboard", "venv", "bin", "python");
    const made = spawn("bash", [join(repo, "hack", "python-env.sh")], { stdio: ["ignore", "inherit", "inherit"] });
    const code = await new Promise((ok) => made.on("exit", ok));
    if (code !== 0) throw new Error(`hack/python-env.sh failed (${code})`);
  }
  const port = await freePort();
  const child = spawn(python, [join(repo, "tests", "mcp", "server.py"), String(port)], { stdio: ["ignore", "pipe", "ignore"] });
  const stop = () => {
    if (child.exitCode === null) child.kill("SIGTERM");
  };
  await new Promise((ok, fail) => {
    let seen = "";
    const timer = setTimeout(() => fail(new Error("the MCP server printed no ready line in 120 s")), 120000);
    child.stdout.on("data", (chunk) => {
      seen += chunk;
      if (seen.includes("mcp server ready on ")) {
        clearTimeout(timer);
        ok();
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      fail(new Error(`the MCP server exited with ${code}`));
    });
  });
  return { url: `http://127.0.0.1:${port}/mcp`, stop };
}

/**
 * Starts mock + runtime; resolves to { base, apiKey, dir, stop() }. `tools`:
 * the runtime's tools section (sources, requireApproval, ...), none by default.
 */
export async function startRuntime({ channels = CHANNELS, allowedOrigins = [], port: wanted = 0, tools = null } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "sb-web-"));
  const mockPort = await freePort();
  const port = wanted || (await freePort());
  const log = openSync(join(dir, "processes.log"), "a");
  const mock = spawn(binary("mock-llm", "MOCK_LLM_BIN"), ["--listen", `127.0.0.1:${mockPort}`], {
    stdio: ["ignore", log, log],
  });
  const config = {
    agent: { name: "demo" },
    model: { provider: "openai", name: "mock-gpt", baseUrl: `http://127.0.0.1:${mockPort}/v1`, apiKeyEnv: "UPSTREAM_KEY", timeoutSeconds: 5 },
    systemPrompt: "You are the demo agent.",
    database: { sqlitePath: join(dir, "rt.db") },
    fallbackResponses: { en: "Sorry, the assistant cannot answer right now.", de: "Entschuldigung, gerade keine Antwort möglich." },
    channels: channels.map((c) => ({
      name: c.name,
      type: "web",
      enabled: c.enabled !== false,
      language: c.language,
      greeting: c.greeting,
      features: c.features ?? ALL_FEATURES,
      ...(c.rateLimit ? { rateLimit: c.rateLimit } : {}),
      // The runtime serves the page itself: its title, the auth proxy's header.
      web: { title: c.title, ...(c.trustedHeader ? { trustedHeader: c.trustedHeader } : {}) },
      // The sites allowed to embed the chat (the browser test's host page).
      ...(c.name === "web" && allowedOrigins.length ? { allowedOrigins } : {}),
    })),
    ...(tools ? { tools } : {}),
  };
  writeFileSync(join(dir, "agent.yaml"), yaml(config));
  const runtime = spawn(
    binary("agent-runtime", "AGENT_RUNTIME_BIN"),
    ["--config", join(dir, "agent.yaml"), "--listen", `127.0.0.1:${port}`],
    {
      stdio: ["ignore", log, log],
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        SWITCHBOARD_API_KEY: API_KEY,
        SWITCHBOARD_ADMIN_KEY: ADMIN_KEY,
        UPSTREAM_KEY: "sk-upstream-dev",
        RUST_LOG: "warn",
      },
    },
  );
  const stop = () => {
    for (const child of [runtime, mock]) if (child.exitCode === null) child.kill("SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(`http://127.0.0.1:${mockPort}/`, 20000, mock, "mock-llm", true);
    await waitFor(`http://127.0.0.1:${port}/readyz`, 30000, runtime, "agent-runtime");
  } catch (e) {
    stop();
    throw e;
  }
  return { base: `http://127.0.0.1:${port}`, apiKey: API_KEY, dir, channels, stop };
}

// `node dev/runtime.mjs [--port 8787]`: the harness for working on the page
// (the runtime embeds web/dist at build time: `npm run build`, then
// `cargo build -p agent-runtime`, then restart this).
async function main() {
  const args = process.argv.slice(2);
  const at = args.indexOf("--port");
  const runtime = await startRuntime({ port: at >= 0 ? Number(args[at + 1]) : 8787 });
  console.log(`chat: ${runtime.base}/channels/web/  (also ${CHANNELS.map((c) => c.name).join(", ")}; SQLite in ${runtime.dir})`);
  const quit = () => {
    runtime.stop();
    process.exit(0);
  };
  process.on("SIGINT", quit);
  process.on("SIGTERM", quit);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}

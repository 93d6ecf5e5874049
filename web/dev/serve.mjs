// Development server for the chat page, and a working model of the routes the
// runtime must add (web/README.md, "Server contract"). It serves web/dist under
// /channels/{name}/ with the production headers, answers config.json, gives
// each browser a visitor cookie and a CSRF cookie, checks both on the API, and
// proxies /channels/{name}/api and /v1 to an agent runtime, adding the
// tenant's API key and the visitor as the trusted user header (the browser
// never sees the key). It also serves the live-sync event stream.
//
//   node dev/serve.mjs                 start mock LLM + runtime, serve on :8787
//   node dev/serve.mjs --port 0        any free port (printed)
//   RUNTIME_URL=http://127.0.0.1:8080 SWITCHBOARD_API_KEY=... node dev/serve.mjs
//
// No dependencies beyond Node itself.

import { createHash, randomBytes } from "node:crypto";
import { readFileSync, existsSync } from "node:fs";
import { createServer } from "node:http";
import { dirname, join, normalize, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ALL_FEATURES, CHANNELS, startRuntime } from "./runtime.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const DIST = resolve(here, "../dist");

/** The page's Content-Security-Policy; `frameAncestors` are the origins allowed to embed it. */
export function csp(frameAncestors = []) {
  return [...CSP_BASE, `frame-ancestors ${frameAncestors.length ? ["'self'", ...frameAncestors].join(" ") : "'none'"}`].join("; ");
}

const CSP_BASE = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
];

const SECURITY_HEADERS = {
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
  "permissions-policy": "camera=(), microphone=(), geolocation=()",
};

const TYPES = { ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".html": "text/html; charset=utf-8", ".json": "application/json" };

const VISITOR_COOKIE = "switchboard_visitor";
const CSRF_COOKIE = "switchboard_csrf";
const CSRF_HEADER = "x-csrf-token";

function cookies(req) {
  const out = {};
  for (const part of (req.headers.cookie ?? "").split(";")) {
    const at = part.indexOf("=");
    if (at > 0) out[part.slice(0, at).trim()] = decodeURIComponent(part.slice(at + 1).trim());
  }
  return out;
}

function json(res, status, body, headers = {}) {
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store", ...headers });
  res.end(JSON.stringify(body));
}

function apiError(res, status, code, message) {
  json(res, status, { error: { code, message, type: "invalid_request_error" } });
}

/**
 * Starts the server. `runtime`: { base, apiKey, channels }. Resolves to
 * { url, port, close() }.
 */
export function startDevServer({ runtime, port = 8787, host = "127.0.0.1", dist = DIST, allowedOrigins = [] }) {
  const channels = new Map(runtime.channels.map((c) => [c.name, c]));
  // Live sync: visitor → set of open event-stream responses.
  const listeners = new Map();
  const publish = (visitor, event) => {
    for (const res of listeners.get(visitor) ?? []) res.write(`data: ${JSON.stringify(event)}\n\n`);
  };

  const server = createServer(async (req, res) => {
    try {
      await handle(req, res);
    } catch (e) {
      if (!res.headersSent) apiError(res, 500, "dev_server_error", String(e));
      else res.destroy();
    }
  });

  async function handle(req, res) {
    const url = new URL(req.url, `http://${req.headers.host}`);
    if (url.pathname === "/" || url.pathname === "/favicon.ico") {
      res.writeHead(url.pathname === "/" ? 302 : 404, { location: "/channels/web/" });
      return res.end();
    }
    const m = /^\/channels\/([a-z0-9-]+)(\/.*)?$/.exec(url.pathname);
    if (!m) return apiError(res, 404, "not_found", "no such route");
    const name = m[1];
    const rest = m[2] ?? "";
    const channel = channels.get(name);
    if (!channel) return apiError(res, 404, "channel_not_found", `no channel ${name}`);
    if (rest === "") {
      res.writeHead(308, { location: `/channels/${name}/` });
      return res.end();
    }
    const jar = cookies(req);
    let visitor = jar[VISITOR_COOKIE];
    const set = [];
    // Behind an auth proxy the user is the proxy's header and no visitor cookie is issued.
    const proxied = channel.trustedHeader ? req.headers[channel.trustedHeader] : undefined;
    if (channel.trustedHeader) visitor = typeof proxied === "string" && proxied ? proxied : undefined;
    else if (!visitor || !/^[a-z0-9]{16,64}$/.test(visitor)) {
      visitor = randomBytes(12).toString("hex");
      // The runtime signs this value (HMAC) so it cannot be forged; the dev server does not.
      set.push(`${VISITOR_COOKIE}=${visitor}; Path=/channels/${name}/; HttpOnly; SameSite=Lax; Max-Age=31536000`);
    }
    if (!jar[CSRF_COOKIE]) set.push(`${CSRF_COOKIE}=${randomBytes(16).toString("hex")}; Path=/channels/${name}/; SameSite=Strict; Max-Age=31536000`);

    if (req.method === "GET" && (rest === "/" || rest === "/index.html")) {
      const body = readFileSync(join(dist, "index.html"));
      const origins = [...(channel.allowedOrigins ?? []), ...allowedOrigins];
      res.writeHead(200, {
        ...SECURITY_HEADERS,
        "content-security-policy": csp(origins),
        "content-type": TYPES[".html"],
        "cache-control": "no-cache",
        "set-cookie": set,
      });
      return res.end(body);
    }
    if (req.method === "GET" && rest.startsWith("/assets/")) {
      const file = normalize(join(dist, rest));
      if (!file.startsWith(join(dist, "assets")) || !existsSync(file)) return apiError(res, 404, "not_found", "no such asset");
      const ext = file.slice(file.lastIndexOf("."));
      const bytes = readFileSync(file);
      // Immutable only under the URL index.html uses (?v=<content hash>).
      const current = createHash("sha256").update(bytes).digest("hex").slice(0, 12);
      const widget = rest === "/assets/embed.js";
      res.writeHead(200, {
        ...SECURITY_HEADERS,
        "content-security-policy": csp(),
        "content-type": TYPES[ext] ?? "application/octet-stream",
        "cache-control": url.searchParams.get("v") === current ? "public, max-age=31536000, immutable" : "no-cache",
        // Other sites load the widget script; everything else stays same-origin.
        "cross-origin-resource-policy": widget ? "cross-origin" : "same-origin",
      });
      return res.end(bytes);
    }
    if (req.method === "GET" && rest === "/config.json") {
      res.writeHead(200, { "content-type": "application/json", "cache-control": "no-cache", "set-cookie": set });
      return res.end(
        JSON.stringify({
          channel: name,
          title: channel.title ?? name,
          greeting: channel.greeting ?? null,
          language: channel.language ?? "en",
          apiBase: `/channels/${name}`,
          features: channel.features ?? ALL_FEATURES,
          events: `/channels/${name}/api/events`,
          csrf: { header: CSRF_HEADER, cookie: CSRF_COOKIE },
        }),
      );
    }
    if (!(rest.startsWith("/api/") || rest.startsWith("/v1/"))) return apiError(res, 404, "not_found", "no such route");

    // Cross-site protection: a state-changing request must come from this
    // origin and carry the CSRF cookie's value in the header.
    const unsafe = !["GET", "HEAD", "OPTIONS"].includes(req.method);
    const origin = req.headers.origin;
    if (origin && origin !== `http://${req.headers.host}`) return apiError(res, 403, "cross_origin", "requests from other sites are refused");
    if (unsafe && (!jar[CSRF_COOKIE] || req.headers[CSRF_HEADER] !== jar[CSRF_COOKIE])) {
      return apiError(res, 403, "csrf_failed", "missing or wrong CSRF token; reload the page");
    }
    if (channel.trustedHeader && !visitor) {
      return apiError(res, 401, "unauthenticated", `this chat needs the ${channel.trustedHeader} header of the auth proxy`);
    }
    if (!channel.trustedHeader && !jar[VISITOR_COOKIE]) {
      // An API call from a browser that never loaded the page has no visitor yet.
      return apiError(res, 401, "no_visitor", "open the chat page first");
    }

    if (req.method === "GET" && rest === "/api/events") {
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no" });
      res.write("retry: 2000\n: connected\n\n");
      if (!listeners.has(visitor)) listeners.set(visitor, new Set());
      listeners.get(visitor).add(res);
      const ping = setInterval(() => res.write(": ping\n\n"), 15000);
      req.on("close", () => {
        clearInterval(ping);
        listeners.get(visitor)?.delete(res);
      });
      return;
    }

    // Proxy to the runtime. Never forward what the browser says about identity.
    const headers = {};
    for (const [k, v] of Object.entries(req.headers)) {
      if (["host", "cookie", "authorization", "x-switchboard-user", "x-switchboard-channel", "origin", "referer", CSRF_HEADER, "connection", "content-length"].includes(k)) continue;
      headers[k] = v;
    }
    headers.authorization = `Bearer ${runtime.apiKey}`;
    headers["x-switchboard-user"] = channel.trustedHeader ? `proxy:${visitor}` : `visitor:${visitor}`;
    const body = unsafe ? await new Promise((ok) => {
      const parts = [];
      req.on("data", (c) => parts.push(c));
      req.on("end", () => ok(Buffer.concat(parts)));
    }) : undefined;
    const abort = new AbortController();
    res.on("close", () => abort.abort());
    let upstream;
    try {
      upstream = await fetch(`${runtime.base}/channels/${name}${rest}${url.search}`, { method: req.method, headers, body, signal: abort.signal });
    } catch (e) {
      return apiError(res, 502, "runtime_unreachable", String(e));
    }
    const out = {};
    upstream.headers.forEach((v, k) => {
      if (!["content-length", "content-encoding", "transfer-encoding", "connection"].includes(k)) out[k] = v;
    });
    res.writeHead(upstream.status, out);
    let sessionId = upstream.headers.get("x-session-id") ?? /^\/api\/sessions\/([^/?]+)/.exec(rest)?.[1];
    if (sessionId === "search" || sessionId === "summaries") sessionId = undefined;
    const chunks = [];
    try {
      for await (const chunk of upstream.body ?? []) {
        res.write(chunk);
        if (unsafe && !sessionId && chunks.length < 4) chunks.push(chunk);
      }
    } catch {
      // The browser went away (stop button): the runtime keeps the partial answer.
    }
    res.end();
    if (unsafe && upstream.ok) {
      if (!sessionId) {
        try {
          sessionId = JSON.parse(Buffer.concat(chunks).toString()).id;
        } catch {
          sessionId = undefined;
        }
      }
      publish(visitor, sessionId ? { type: "session.changed", session_id: sessionId } : { type: "sessions.changed" });
    }
  }

  return new Promise((ok) => {
    server.listen(port, host, () => {
      const actual = server.address().port;
      ok({
        url: `http://${host}:${actual}`,
        port: actual,
        close: () =>
          new Promise((done) => {
            for (const set of listeners.values()) for (const r of set) r.end();
            server.closeAllConnections?.();
            server.close(() => done());
          }),
      });
    });
  });
}

async function main() {
  const args = process.argv.slice(2);
  const portArg = args.indexOf("--port");
  const port = portArg >= 0 ? Number(args[portArg + 1]) : 8787;
  let runtime;
  if (process.env.RUNTIME_URL) {
    runtime = { base: process.env.RUNTIME_URL, apiKey: process.env.SWITCHBOARD_API_KEY ?? "", channels: CHANNELS, stop() {} };
  } else {
    runtime = await startRuntime();
    console.log(`runtime ${runtime.base} (mock LLM, SQLite in ${runtime.dir})`);
  }
  const server = await startDevServer({ runtime, port });
  console.log(`chat: ${server.url}/channels/web/  (also ${CHANNELS.map((c) => c.name).join(", ")})`);
  const quit = async () => {
    await server.close();
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

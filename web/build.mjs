// Builds the chat page into web/dist (committed; the runtime embeds it):
//   dist/index.html            the page (no inline script or style)
//   dist/assets/app.js         the page: one ES module, minified
//   dist/assets/style.css      its stylesheet, minified
//   dist/assets/embed.js       the widget script other (allowed) sites include
// The names are fixed (the runtime embeds three known files); index.html refers
// to them as `assets/app.js?v=HASH` so the URL changes with the content and
// the assets can be cached as immutable.
//   dist/manifest.json         each file with its size, gzipped size and sha256
// The output depends only on the sources and the locked esbuild version.
// Flags: --out DIR (default dist), --tests (also bundle test/*.test.ts into .build/test).

import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const outIndex = args.indexOf("--out");
const out = outIndex >= 0 ? args[outIndex + 1] : join(here, "dist");

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "assets"), { recursive: true });

const result = await build({
  absWorkingDir: here,
  entryPoints: { app: "src/main.ts", style: "src/style.css", embed: "src/embed.ts" },
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2022", "chrome109", "firefox115", "safari16"],
  outdir: join(out, "assets"),
  entryNames: "[name]",
  legalComments: "none",
  charset: "utf8",
  metafile: true,
  write: true,
  logLevel: "warning",
});

let js = "";
let css = "";
for (const file of Object.keys(result.metafile.outputs)) {
  const name = file.split("/").pop();
  if (name === "app.js") js = name;
  else if (name === "style.css") css = name;
}
const version = (file) => createHash("sha256").update(readFileSync(join(out, "assets", file))).digest("hex").slice(0, 12);
js = `${js}?v=${version(js)}`;
css = `${css}?v=${version(css)}`;
const html = readFileSync(join(here, "src/index.html"), "utf8").replace("{{js}}", js).replace("{{css}}", css);
writeFileSync(join(out, "index.html"), html);

const manifest = { files: {} };
let total = 0;
let totalGz = 0;
for (const rel of ["index.html", ...readdirSync(join(out, "assets")).sort().map((f) => `assets/${f}`)]) {
  const bytes = readFileSync(join(out, rel));
  const gz = gzipSync(bytes, { level: 9 }).length;
  total += bytes.length;
  totalGz += gz;
  manifest.files[rel] = { bytes: bytes.length, gzip: gz, sha256: createHash("sha256").update(bytes).digest("hex") };
}
manifest.total = { bytes: total, gzip: totalGz };
writeFileSync(join(out, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
if (!args.includes("--quiet")) console.log(`web/dist: ${total} bytes, ${totalGz} gzipped (${js}, ${css})`);

if (args.includes("--tests")) {
  const tests = readdirSync(join(here, "test")).filter((f) => f.endsWith(".test.ts"));
  rmSync(join(here, ".build/test"), { recursive: true, force: true });
  await build({
    absWorkingDir: here,
    entryPoints: tests.map((f) => `test/${f}`),
    bundle: true,
    platform: "node",
    format: "esm",
    outdir: join(here, ".build/test"),
    outExtension: { ".js": ".mjs" },
    external: ["node:*"],
    logLevel: "warning",
  });
}

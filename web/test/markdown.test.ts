import assert from "node:assert/strict";
import { test } from "node:test";
import { parse, safeHref } from "../src/markdown.ts";
import { ALLOWED_ATTRIBUTES, renderBlocks, type MiniDocument, type MiniElement } from "../src/render.ts";

// A fake DOM that records exactly what the renderer builds.
interface FakeNode {
  tag?: string;
  text?: string;
  attrs: Record<string, string>;
  children: FakeNode[];
  textContent: string | null;
  className: string;
}
function fakeDoc(): MiniDocument {
  return {
    createElement(tag: string) {
      const n: FakeNode = {
        tag,
        attrs: {},
        children: [],
        textContent: null,
        className: "",
      };
      return Object.assign(n, {
        appendChild(c: unknown) {
          n.children.push(c as FakeNode);
          return c;
        },
        setAttribute(k: string, v: string) {
          n.attrs[k] = v;
        },
      }) as unknown as MiniElement;
    },
    createTextNode(text: string) {
      return { text, attrs: {}, children: [], textContent: text, className: "" };
    },
  };
}
function render(md: string): FakeNode {
  const doc = fakeDoc();
  const root = doc.createElement("div");
  renderBlocks(doc, root, parse(md), { copyLabel: "Copy" });
  return root as unknown as FakeNode;
}
function walk(n: FakeNode, f: (n: FakeNode) => void): void {
  f(n);
  n.children.forEach((c) => walk(c, f));
}
function text(n: FakeNode): string {
  if (n.text !== undefined) return n.text;
  if (n.textContent !== null) return n.textContent;
  return n.children.map(text).join("");
}
const SAFE_TAGS = new Set("div p h3 h4 h5 h6 hr blockquote ol ul li pre code span button br em strong del a table thead tbody tr th td".split(" "));

const PAYLOADS = [
  "<script>window.pwned=1</script>",
  '<img src=x onerror="window.pwned=1">',
  "[click me](javascript:window.pwned=1)",
  "[tab](java\tscript:alert(1))",
  "[upper](JAVASCRIPT:alert(1))",
  "[data](data:text/html,<script>alert(1)</script>)",
  "[vb](vbscript:msgbox(1))",
  "[proto](//evil.example/x)",
  '<a href="javascript:alert(1)">x</a>',
  "<svg onload=alert(1)>",
  "<iframe src=javascript:alert(1)></iframe>",
  "**bold <img src=x onerror=alert(1)>**",
  "```html\n<script>alert(1)</script>\n```",
];

test("XSS payloads stay text: only safe tags, no event attributes, no script URLs", () => {
  for (const p of PAYLOADS) {
    const root = render(p);
    walk(root, (n) => {
      if (n.tag) {
        assert.ok(SAFE_TAGS.has(n.tag), `${p}: tag ${n.tag}`);
        for (const [k, v] of Object.entries(n.attrs)) {
          assert.ok(ALLOWED_ATTRIBUTES.has(k), `${p}: attribute ${k}`);
          assert.ok(!/^on/i.test(k), `${p}: event attribute ${k}`);
          if (k === "href") assert.match(v, /^(https?:|mailto:|[^:]*$)/i, `${p}: href ${v}`);
        }
      }
    });
  }
  // The raw HTML is shown as the text it is.
  assert.equal(text(render("<script>x</script>")), "<script>x</script>");
  assert.equal(text(render("[click me](javascript:alert(1))")), "click me");
});

test("safeHref keeps web and mail links and relative paths only", () => {
  assert.equal(safeHref("https://example.org/a?b#c"), "https://example.org/a?b#c");
  assert.equal(safeHref("mailto:a@b.c"), "mailto:a@b.c");
  assert.equal(safeHref("/docs/x"), "/docs/x");
  for (const bad of ["javascript:x", " JaVaScRiPt:x", "java\nscript:x", "data:text/html,x", "vbscript:x", "//evil", "file:///etc/passwd"]) {
    assert.equal(safeHref(bad), null, bad);
  }
});

test("code blocks keep their text and get a copy button; an unclosed fence streams as code", () => {
  const root = render("Here:\n\n```rust\nfn main() { println!(\"<b>\"); }\n```\nafter");
  const codes: FakeNode[] = [];
  const buttons: FakeNode[] = [];
  walk(root, (n) => {
    if (n.tag === "code") codes.push(n);
    if (n.tag === "button") buttons.push(n);
  });
  assert.equal(codes[0].textContent, 'fn main() { println!("<b>"); }');
  assert.equal(codes[0].attrs["data-lang"], "rust");
  assert.equal(buttons.length, 1);
  assert.equal(buttons[0].attrs["aria-label"], "Copy");
  const open = parse("```py\nprint(1)\n");
  assert.deepEqual(open, [{ t: "code", lang: "py", text: "print(1)", open: true }]);
});

test("common Markdown: headings, lists, emphasis, inline code, links, tables, quotes", () => {
  const blocks = parse("# Title\n\n- one\n- **two**\n\n1. a\n2. b\n\n> quoted\n\n| a | b |\n|---|--:|\n| 1 | 2 |\n\nSee [docs](https://x.org) and `code` and snake_case_name.");
  assert.deepEqual(
    blocks.map((b) => b.t),
    ["h", "list", "list", "quote", "table", "p"],
  );
  const root = render("*em* and _em_ and ~~gone~~ and https://a.org/x.");
  const tags: string[] = [];
  walk(root, (n) => n.tag && tags.push(n.tag));
  assert.deepEqual(tags, ["div", "p", "em", "em", "del", "a"]);
  assert.equal(text(render("snake_case_name")), "snake_case_name");
});

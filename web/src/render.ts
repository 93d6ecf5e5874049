// Markdown blocks (markdown.ts) to DOM nodes. Only createElement, createTextNode,
// textContent and a fixed set of attributes are used: no HTML string is ever
// parsed, so nothing in a message can become markup or script.

import type { Block, Inline } from "./markdown.ts";

/** The part of `Document` used here (a fake one serves the unit tests). */
export interface MiniDocument {
  createElement(tag: string): MiniElement;
  createTextNode(text: string): unknown;
}

export interface MiniElement {
  appendChild(node: unknown): unknown;
  setAttribute(name: string, value: string): void;
  textContent: string | null;
  className: string;
}

export interface RenderOptions {
  /** Label of the copy button on code blocks. */
  copyLabel: string;
  /** Called when a copy button is made, to wire the click (the page does it; tests skip it). */
  onCopyButton?: (button: MiniElement, text: string) => void;
}

/** Attributes this renderer may set, and nothing else. */
export const ALLOWED_ATTRIBUTES = new Set(["href", "rel", "target", "class", "start", "type", "aria-label", "data-lang"]);

function el(doc: MiniDocument, tag: string, attrs: Record<string, string> = {}): MiniElement {
  const e = doc.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (!ALLOWED_ATTRIBUTES.has(k)) throw new Error(`attribute ${k} not allowed`);
    e.setAttribute(k, v);
  }
  return e;
}

export function renderBlocks(doc: MiniDocument, parent: MiniElement, blocks: Block[], opts: RenderOptions): void {
  for (const b of blocks) parent.appendChild(renderBlock(doc, b, opts));
}

function renderBlock(doc: MiniDocument, b: Block, opts: RenderOptions): MiniElement {
  switch (b.t) {
    case "p": {
      const p = el(doc, "p");
      renderInline(doc, p, b.children);
      return p;
    }
    case "h": {
      // Headings inside an answer sit below the page's own h1/h2.
      const h = el(doc, `h${Math.min(6, b.level + 2)}`);
      renderInline(doc, h, b.children);
      return h;
    }
    case "hr":
      return el(doc, "hr");
    case "quote": {
      const q = el(doc, "blockquote");
      renderBlocks(doc, q, b.children, opts);
      return q;
    }
    case "list": {
      const attrs: Record<string, string> = {};
      if (b.ordered && b.start !== 1) attrs.start = String(b.start);
      const list = el(doc, b.ordered ? "ol" : "ul", attrs);
      for (const item of b.items) {
        const li = el(doc, "li");
        // A one-paragraph item renders without its <p> (tight list).
        if (item.length === 1 && item[0].t === "p") renderInline(doc, li, item[0].children);
        else renderBlocks(doc, li, item, opts);
        list.appendChild(li);
      }
      return list;
    }
    case "code": {
      const wrap = el(doc, "div", { class: "codeblock" });
      const bar = el(doc, "div", { class: "codebar" });
      const lang = el(doc, "span", { class: "lang" });
      lang.textContent = b.lang;
      bar.appendChild(lang);
      const copy = el(doc, "button", { type: "button", class: "copy", "aria-label": opts.copyLabel });
      copy.textContent = opts.copyLabel;
      opts.onCopyButton?.(copy, b.text);
      bar.appendChild(copy);
      wrap.appendChild(bar);
      const pre = el(doc, "pre");
      const code = el(doc, "code", b.lang ? { "data-lang": b.lang } : {});
      code.textContent = b.text;
      pre.appendChild(code);
      wrap.appendChild(pre);
      return wrap;
    }
    case "table": {
      const scroll = el(doc, "div", { class: "tablewrap" });
      const table = el(doc, "table");
      const thead = el(doc, "thead");
      const hr = el(doc, "tr");
      b.head.forEach((cell, i) => {
        const th = el(doc, "th", b.align[i] ? { class: `al-${b.align[i]}` } : {});
        renderInline(doc, th, cell);
        hr.appendChild(th);
      });
      thead.appendChild(hr);
      table.appendChild(thead);
      const tbody = el(doc, "tbody");
      for (const row of b.rows) {
        const tr = el(doc, "tr");
        row.forEach((cell, i) => {
          const td = el(doc, "td", b.align[i] ? { class: `al-${b.align[i]}` } : {});
          renderInline(doc, td, cell);
          tr.appendChild(td);
        });
        tbody.appendChild(tr);
      }
      table.appendChild(tbody);
      scroll.appendChild(table);
      return scroll;
    }
  }
}

export function renderInline(doc: MiniDocument, parent: MiniElement, nodes: Inline[]): void {
  for (const n of nodes) {
    switch (n.t) {
      case "text":
        parent.appendChild(doc.createTextNode(n.text));
        break;
      case "br":
        parent.appendChild(el(doc, "br"));
        break;
      case "code": {
        const c = el(doc, "code");
        c.textContent = n.text;
        parent.appendChild(c);
        break;
      }
      case "em":
      case "strong":
      case "del": {
        const e = el(doc, n.t);
        renderInline(doc, e, n.children);
        parent.appendChild(e);
        break;
      }
      case "link": {
        const a = el(doc, "a", { href: n.href, rel: "noopener noreferrer nofollow", target: "_blank" });
        renderInline(doc, a, n.children);
        parent.appendChild(a);
        break;
      }
    }
  }
}

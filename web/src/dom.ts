// Building DOM nodes: elements with attributes and children, icon buttons.
// Text always goes in as text nodes.

import { icon } from "./icons.ts";

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | boolean | undefined> = {},
  ...children: (Node | string | null | undefined | false)[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (k === "class") e.className = String(v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return e;
}

export function iconButton(name: string, label: string, onClick: (e: MouseEvent) => void, cls = "icon-btn"): HTMLButtonElement {
  const b = h("button", { type: "button", class: cls, "aria-label": label, title: label }, icon(name));
  b.addEventListener("click", onClick);
  return b;
}

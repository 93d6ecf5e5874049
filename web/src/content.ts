// Message content on the page: Markdown rendered into an element (through
// markdown.ts and render.ts, never as HTML), and copying text with feedback.

import { h } from "./dom.ts";
import type { Translate } from "./i18n.ts";
import { icon } from "./icons.ts";
import { parse } from "./markdown.ts";
import { renderBlocks, type MiniDocument, type MiniElement } from "./render.ts";

export function fillMarkdown(target: HTMLElement, text: string, t: Translate): void {
  const frag = document.createDocumentFragment() as unknown as MiniElement;
  renderBlocks(document as unknown as MiniDocument, frag, parse(text), {
    copyLabel: t("copy"),
    onCopyButton: (button, code) => {
      const b = button as unknown as HTMLButtonElement;
      b.addEventListener("click", () => void copyText(b, code, t));
    },
  });
  target.replaceChildren(frag as unknown as Node);
}

export async function copyText(button: HTMLButtonElement, text: string, t: Translate): Promise<void> {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = h("textarea", { class: "sr-only" });
    area.value = text;
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  const before = button.textContent;
  const label = button.getAttribute("aria-label");
  button.textContent = button.classList.contains("copy") ? t("copied") : "";
  if (!button.classList.contains("copy")) button.appendChild(icon("check"));
  button.setAttribute("aria-label", t("copied"));
  window.setTimeout(() => {
    if (button.classList.contains("copy")) button.textContent = before;
    else button.replaceChildren(icon("copy"));
    if (label) button.setAttribute("aria-label", label);
  }, 1500);
}

// One message of the conversation: its text (plain for the user, Markdown for
// answers), notes for fallback, stopped and failed answers, and its actions
// (branch arrows, edit, copy, regenerate).

import type { Message } from "./api.ts";
import type { PathEntry } from "./branches.ts";
import { copyText, fillMarkdown } from "./content.ts";
import { h, iconButton } from "./dom.ts";
import type { Translate } from "./i18n.ts";

/** A message as shown: stored, or pending (sent but not stored yet). */
export type Shown = Pick<Message, "id" | "parent_id" | "role" | "content" | "model" | "error"> & { pending?: boolean };

/** What the message's buttons do; null: a message shown without actions. */
export interface MessageActions {
  /** The message is being edited (a user message). */
  editing: boolean;
  onEdit(text: string): void;
  onEditing(on: boolean): void;
  onStep(step: number): void;
  onRegenerate(): void;
}

export function messageView(t: Translate, entry: PathEntry<Shown>, actions: MessageActions | null): HTMLElement {
const m = entry.message;
  const isUser = m.role === "user";
  const art = h("article", {
    class: `msg ${m.role}${m.model === "fallback" ? " fallback" : ""}${m.error && m.model !== "fallback" ? " has-error" : ""}`,
    "aria-label": isUser ? t("you") : t("assistant"),
    "data-id": m.id,
  });
  if (isUser && actions?.editing) {
    const area = h("textarea", { class: "edit-area", "aria-label": t("edit") });
    area.value = m.content;
    const save = h("button", { type: "submit", class: "primary" }, t("send"));
    const cancel = h("button", { type: "button" }, t("cancel"));
    const form = h("form", { class: "edit-form" }, area, h("div", { class: "row" }, cancel, save));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      actions.onEdit(area.value);
    });
    area.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        actions.onEdit(area.value);
      } else if (e.key === "Escape") {
        e.preventDefault();
        e.stopPropagation();
        actions.onEditing(false);
      }
    });
    cancel.addEventListener("click", () => actions.onEditing(false));
    art.appendChild(form);
    queueMicrotask(() => area.focus());
    return art;
  }
  if (m.model === "fallback") art.appendChild(h("p", { class: "note note-fallback" }, t("fallback")));
  const body = h("div", { class: isUser ? "body plain" : "body markdown", dir: "auto" });
  if (isUser) body.textContent = m.content;
  else fillMarkdown(body, m.content, t);
  if (m.content) art.appendChild(body);
  if (m.error && m.model !== "fallback" && !m.pending) {
    const stopped = /disconnect|cancel/i.test(m.error);
    const text = stopped ? t("stopped") : m.content ? t("cutOff", { msg: m.error }) : t("failed", { msg: m.error });
    art.appendChild(h("p", { class: stopped ? "note note-stopped" : "note note-error", role: stopped ? undefined : "note" }, text));
  }
  if (!actions) return art;
  const bar = h("div", { class: "msg-actions" });
  if (entry.count > 1) {
    const nav = h("span", { class: "branches", role: "group", "aria-label": t("branchOf", { i: entry.index + 1, n: entry.count }) });
    const prev = iconButton("left", t("prevBranch"), () => actions.onStep(-1));
    const next = iconButton("right", t("nextBranch"), () => actions.onStep(1));
    prev.disabled = entry.index === 0;
    next.disabled = entry.index === entry.count - 1;
    nav.append(prev, h("span", { class: "branch-pos" }, `${entry.index + 1}/${entry.count}`), next);
    bar.appendChild(nav);
  }
  if (isUser) {
    bar.appendChild(iconButton("pencil", t("edit"), () => actions.onEditing(true)));
  } else {
    const copy = iconButton("copy", t("copy"), () => void copyText(copy, m.content, t));
    bar.appendChild(copy);
    if (m.parent_id) bar.appendChild(iconButton("refresh", t("regenerate"), () => actions.onRegenerate()));
  }
  art.appendChild(bar);
  return art;
}

// The keyboard shortcut overlay (`?`): a modal dialog listing the shortcut table.

import { h } from "./dom.ts";
import type { StringKey, Translate } from "./i18n.ts";
import { SHORTCUTS, describe, type Action } from "./shortcuts.ts";

export function buildHelp(t: Translate, apple: boolean): HTMLDialogElement {
  const names: Record<Action, StringKey> = {
    newChat: "kNewChat",
    search: "kSearch",
    nextTab: "kNextTab",
    prevTab: "kPrevTab",
    closeTab: "kCloseTab",
    focusComposer: "kFocus",
    stop: "kStop",
    help: "kHelp",
  };
  const rows: HTMLElement[] = [];
  const seen = new Set<Action>();
  const keys = (parts: string[]) => h("td", {}, ...parts.flatMap((k, i) => [i ? "+" : "", h("kbd", {}, k)]));
  for (const s of SHORTCUTS) {
    if (seen.has(s.action)) continue;
    seen.add(s.action);
    rows.push(h("tr", {}, h("th", { scope: "row" }, t(names[s.action])), keys(describe(s, apple))));
  }
  rows.push(h("tr", {}, h("th", { scope: "row" }, t("kSend")), keys(["Enter"])));
  rows.push(h("tr", {}, h("th", { scope: "row" }, t("kNewline")), keys(["Shift", "Enter"])));
  const close = h("button", { type: "button", class: "close-help" }, t("close"));
  const dialog = h(
    "dialog",
    { class: "help", "aria-labelledby": "help-title" },
    h("h2", { id: "help-title" }, t("shortcuts")),
    h("table", {}, h("tbody", {}, ...rows)),
    close,
  );
  close.addEventListener("click", () => dialog.close());
  return dialog;
}

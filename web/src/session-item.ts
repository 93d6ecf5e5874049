// One chat in the sidebar: its title (search hits marked), the best-matching
// snippet in search results, an inline rename field, and its action buttons.

import type { Session } from "./api.ts";
import { h, iconButton } from "./dom.ts";
import { highlight } from "./highlight.ts";
import type { Translate } from "./i18n.ts";

export interface SessionItemOptions {
  /** Open in the shown tab. */
  current: boolean;
  /** Show the rename field instead of the title. */
  renaming: boolean;
  /** Search words to mark. */
  terms: string[];
  /** Best-matching text of a search hit. */
  snippet?: string;
  onOpen(): void;
  onRenaming(on: boolean): void;
  onRename(title: string): void;
  onAction(action: "pin" | "unpin" | "archive" | "unarchive"): void;
  onDelete(): void;
}

export function sessionItem(t: Translate, s: Session, o: SessionItemOptions): HTMLLIElement {
  const { current, terms, snippet } = o;
  const title = s.title || t("untitled");
  const li = h("li", { class: `session${current ? " current" : ""}${s.pinned ? " pinned" : ""}`, "data-id": s.id });
  if (o.renaming) {
    const input = h("input", { type: "text", class: "rename-input", value: title, "aria-label": t("renamePrompt"), maxlength: "200" });
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        o.onRename(input.value);
      } else if (e.key === "Escape") {
        e.preventDefault();
        e.stopPropagation();
        o.onRenaming(false);
      }
    });
    input.addEventListener("blur", () => o.onRename(input.value));
    li.appendChild(input);
    queueMicrotask(() => {
      input.focus();
      input.select();
    });
    return li;
  }
  const open = h("button", { type: "button", class: "open", "aria-current": current ? "page" : undefined, "data-focus-key": `open:${s.id}` });
  const titleEl = h("span", { class: "stitle", dir: "auto" });
  for (const seg of highlight(title, terms)) titleEl.appendChild(seg.hit ? h("mark", {}, seg.text) : document.createTextNode(seg.text));
  open.appendChild(titleEl);
  if (snippet && snippet !== s.title) {
    const snip = h("span", { class: "snippet", dir: "auto" });
    for (const seg of highlight(snippet, terms)) snip.appendChild(seg.hit ? h("mark", {}, seg.text) : document.createTextNode(seg.text));
    open.appendChild(snip);
  }
  open.addEventListener("click", () => o.onOpen());
  const withKey = (b: HTMLButtonElement, key: string) => {
    b.dataset.focusKey = `${key}:${s.id}`;
    return b;
  };
  const actions = h(
    "span",
    { class: "actions" },
    withKey(
      iconButton("pencil", `${t("rename")}: ${title}`, () => o.onRenaming(true)),
      "rename",
    ),
    withKey(iconButton(s.pinned ? "unpin" : "pin", `${t(s.pinned ? "unpin" : "pin")}: ${title}`, () => o.onAction(s.pinned ? "unpin" : "pin")), "pin"),
    withKey(
      iconButton(s.status === "archived" ? "unarchive" : "archive", `${t(s.status === "archived" ? "unarchive" : "archive")}: ${title}`, () =>
        o.onAction(s.status === "archived" ? "unarchive" : "archive"),
      ),
      "archive",
    ),
    withKey(iconButton("trash", `${t("delete")}: ${title}`, () => o.onDelete()), "delete"),
  );
  li.append(open, actions);
  return li;
}

// Tool calls in the conversation: a call that waits for the visitor's
// approval (the tool, its arguments pretty-printed, Approve and Reject with an
// optional reason), the outcome once decided or expired, and a short note for
// calls that needed no approval. Pure helpers first (unit-tested), then the
// DOM builders.

import type { Approval, ToolCall } from "./api.ts";
import { h } from "./dom.ts";
import type { Translate } from "./i18n.ts";

export type Outcome = "pending" | "approved" | "rejected" | "expired";

/** The arguments as indented JSON; text that is not JSON stays as it is. */
export function prettyArguments(text: string): string {
  const trimmed = text.trim();
  if (!trimmed) return "{}";
  try {
    return JSON.stringify(JSON.parse(trimmed), null, 2);
  } catch {
    return text;
  }
}

/** Where an approval stands at `now`: a pending one past its time is expired. */
export function outcomeOf(a: Pick<Approval, "state" | "expires_at">, now = Date.now()): Outcome {
  if (a.state !== "pending") return a.state;
  const at = Date.parse(a.expires_at);
  return Number.isFinite(at) && at < now ? "expired" : "pending";
}

/** The sentence shown for an approval that is no longer pending. */
export function outcomeText(t: Translate, a: Pick<Approval, "state" | "expires_at" | "decided_by" | "reason">, now = Date.now()): string {
  switch (outcomeOf(a, now)) {
    case "approved": {
      // The visitor's own decision needs no name; an operator's or a colleague's does.
      const who = a.decided_by && !a.decided_by.startsWith("visitor:") ? a.decided_by : null;
      return who ? t("approvedBy", { who }) : t("approvedNote");
    }
    case "rejected":
      return a.reason?.trim() ? t("rejectedWhy", { reason: a.reason.trim() }) : t("rejectedNote");
    case "expired":
      return t("expiredNote");
    default:
      return t("approvalWaiting");
  }
}

/** The approval of `call` among `approvals` (asked for by message `messageId`). */
export function approvalFor(approvals: Approval[], messageId: string, call: ToolCall): Approval | undefined {
  return approvals.find((a) => a.tool_call_id === call.id && (!a.message_id || a.message_id === messageId));
}

/** Decides an approval; rejects with an Error whose message the card shows. */
export type Decide = (approve: boolean, reason: string) => Promise<void>;

let serial = 0;

/**
 * One approval as a card: pending, the tool, its arguments and the two
 * buttons (Reject opens a reason field first); decided, the outcome. With
 * `decide` null the card only shows (no buttons).
 */
export function approvalView(t: Translate, approval: Approval, decide: Decide | null, now = Date.now()): HTMLElement {
  const outcome = outcomeOf(approval, now);
  const id = `approval-${++serial}`;
  const card = h("section", {
    class: `approval approval-${outcome}`,
    "aria-labelledby": `${id}-title`,
    "data-approval": approval.id,
    "data-state": outcome,
  });
  card.append(
    h("p", { class: "approval-title", id: `${id}-title`, dir: "auto" }, t("approvalTitle", { tool: approval.tool })),
    h(
      "figure",
      { class: "approval-args" },
      h("figcaption", {}, t("approvalArgs")),
      h("pre", { tabindex: "0", dir: "ltr" }, h("code", {}, prettyArguments(approval.arguments))),
    ),
  );
  if (outcome !== "pending" || !decide) {
    card.appendChild(h("p", { class: `approval-outcome outcome-${outcome}`, dir: "auto" }, outcomeText(t, approval, now)));
    return card;
  }
  const status = h("p", { class: "approval-status", role: "status", "aria-live": "polite" });
  const actions = h("div", { class: "approval-actions" });
  card.append(actions, status);
  const run = async (approve: boolean, reason: string) => {
    for (const control of actions.querySelectorAll<HTMLButtonElement | HTMLTextAreaElement>("button, textarea")) control.disabled = true;
    status.textContent = t("deciding");
    try {
      await decide(approve, reason);
    } catch (e) {
      status.textContent = t("error", { msg: e instanceof Error ? e.message : String(e) });
      for (const control of actions.querySelectorAll<HTMLButtonElement | HTMLTextAreaElement>("button, textarea")) control.disabled = false;
    }
  };
  const buttons = (focus: boolean) => {
    const approve = h("button", { type: "button", class: "primary approve" }, t("approve"));
    const reject = h("button", { type: "button", class: "reject" }, t("reject"));
    approve.addEventListener("click", () => void run(true, ""));
    reject.addEventListener("click", () => rejectForm());
    actions.replaceChildren(approve, reject);
    if (focus) reject.focus();
  };
  const rejectForm = () => {
    const areaId = `${id}-reason`;
    const area = h("textarea", { id: areaId, class: "reason", rows: "2", maxlength: "2000", dir: "auto" });
    const send = h("button", { type: "submit", class: "danger" }, t("rejectSend"));
    const cancel = h("button", { type: "button" }, t("cancel"));
    const form = h("form", { class: "reject-form" }, h("label", { for: areaId }, t("rejectReason")), area, h("div", { class: "row" }, cancel, send));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      void run(false, area.value);
    });
    area.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        void run(false, area.value);
      } else if (e.key === "Escape") {
        e.preventDefault();
        e.stopPropagation();
        buttons(true);
      }
    });
    cancel.addEventListener("click", () => buttons(true));
    actions.replaceChildren(form);
    area.focus();
  };
  buttons(false);
  return card;
}

/**
 * An assistant message that called server-side tools: its text, if any, and
 * per call the approval card (`card` returns it when the call needed one) or
 * a one-line note.
 */
export function toolUseView(
  t: Translate,
  message: { id: string; content: string; tool_calls?: ToolCall[] | null },
  card: (call: ToolCall) => HTMLElement | null,
  body: HTMLElement | null,
): HTMLElement {
  const art = h("article", { class: "msg assistant tool-use", "aria-label": t("assistant"), "data-id": message.id });
  if (body && message.content) art.appendChild(body);
  for (const call of message.tool_calls ?? []) {
    art.appendChild(card(call) ?? h("p", { class: "note note-tool", dir: "auto" }, t("toolUsed", { tool: call.function.name })));
  }
  return art;
}

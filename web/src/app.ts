// The chat page: sidebar (pinned, recent, archived, search), tabs of open
// chats, the conversation with its branches, and the composer. State lives in
// one object; each region is redrawn from it with DOM calls (no HTML strings).

import { Api, ApiError, historyItem, type Approval, type Message, type SearchHit, type Session, type ToolCall } from "./api.ts";
import { approvalFor, approvalView, outcomeOf, outcomeText, toolUseView } from "./approval-view.ts";
import { stepBranch, visiblePath, type PathEntry } from "./branches.ts";
import type { ChatConfig } from "./config.ts";
import { queryTerms } from "./highlight.ts";
import { direction, pickLanguage, translator, type Translate } from "./i18n.ts";
import { fillMarkdown } from "./content.ts";
import { h, iconButton } from "./dom.ts";
import { buildHelp } from "./help.ts";
import { icon } from "./icons.ts";
import { messageView, type Shown } from "./message-view.ts";
import { sessionItem } from "./session-item.ts";
import { loadPref, savePref } from "./storage.ts";
import { isApple, match } from "./shortcuts.ts";
import { Sync, type Change } from "./sync.ts";

interface Live {
  controller: AbortController;
  /** Messages shown above the live answer (the branch it continues). */
  before: Shown[];
  text: string;
  error: string | null;
  stopped: boolean;
  /** Tool calls this turn waits (or waited) on, as the stream announced them. */
  approvals: Approval[];
  /** Where the text stood when the last approval was asked for (text after it streams below the cards). */
  cut: number;
}

interface Tab {
  key: string;
  /** null: a draft (no session yet). */
  id: string | null;
  messages: Message[];
  /** The session's approvals of tool calls (read when a message called tools). */
  approvals: Approval[];
  chosen: Record<string, string>;
  live: Live | null;
  loaded: boolean;
  editing: string | null;
  /** Counts reads of the messages and turns started: a read answered after a newer one began is dropped. */
  reads: number;
}

type Banner = { kind: "disabled" | "rate" | "error"; text: string; until?: number } | null;

const DELETE_DELAY_MS = 6000;

export class App {
  private readonly t: Translate;
  private readonly api: Api;
  private readonly sync: Sync;
  private readonly apple = isApple(navigator.platform || navigator.userAgent);
  private readonly storeKey: string;

  private sessions: Session[] = [];
  private archived: Session[] = [];
  private hits: SearchHit[] | null = null;
  private query = "";
  private tabs: Tab[] = [];
  private active = 0;
  private banner: Banner = null;
  private renaming: string | null = null;
  private pendingDeletes = new Map<string, number>();
  private toastTimer = 0;
  private bannerTimer = 0;
  private syncTimer = 0;
  private syncPending: Change[] = [];

  // Regions.
  private root!: HTMLElement;
  private nav!: HTMLElement;
  private tabBar!: HTMLElement;
  private log!: HTMLElement;
  private bannerEl!: HTMLElement;
  private composer!: HTMLTextAreaElement;
  private sendBtn!: HTMLButtonElement;
  private searchInput!: HTMLInputElement;
  private toast!: HTMLElement;
  private help!: HTMLDialogElement;
  private themeBtn!: HTMLButtonElement;
  private menuBtn!: HTMLButtonElement;
  private announcer!: HTMLElement;
  private liveBody: HTMLElement | null = null;
  /** Approval cards by approval id, kept while their outcome stays (a reason being typed survives redraws). */
  private cards = new Map<string, { key: string; el: HTMLElement }>();
  /** Messages whose tool calls were decided here without this page's stream (after a reload): their answer is resumed. */
  private resume = new Set<string>();
  private liveFrame = 0;

  constructor(private readonly config: ChatConfig) {
    this.t = translator(config.language);
    this.api = new Api({
      base: config.apiBase,
      csrfHeader: config.csrf.header,
      csrfCookie: config.csrf.cookie,
      csrfToken: config.csrf.token,
    });
    this.storeKey = `switchboard:${config.channel}`;
    this.sync = new Sync(config.channel, config.events, (c) => this.onRemoteChange(c));
  }

  // ---------------------------------------------------------------- start

  async start(mount: HTMLElement): Promise<void> {
    const lang = pickLanguage(this.config.language);
    document.documentElement.lang = this.config.language || lang;
    document.documentElement.dir = direction(lang);
    document.title = this.config.title;
    this.applyTheme(loadPref(`${this.storeKey}:theme`) ?? "auto");
    this.build(mount);
    this.restoreTabs();
    // The list and the open chats load together, while the page draws.
    const loading = Promise.all([this.refreshLists(), ...this.tabs.map((tab) => this.loadTab(tab))]);
    this.renderAll();
    document.addEventListener("keydown", (e) => this.onKey(e));
    window.addEventListener("pagehide", () => this.flushDeletes());
    await loading;
    this.root.dataset.ready = "true";
    performance.mark("switchboard:interactive");
  }

  private build(mount: HTMLElement): void {
    const t = this.t;
    this.searchInput = h("input", {
      type: "search",
      id: "search",
      class: "search",
      placeholder: t("searchPlaceholder"),
      "aria-label": t("search"),
      autocomplete: "off",
      disabled: !this.config.features.search,
    });
    let searchTimer = 0;
    this.searchInput.addEventListener("input", () => {
      window.clearTimeout(searchTimer);
      searchTimer = window.setTimeout(() => void this.runSearch(this.searchInput.value), 200);
    });
    this.searchInput.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && this.searchInput.value) {
        e.preventDefault();
        e.stopPropagation();
        this.searchInput.value = "";
        void this.runSearch("");
      }
    });
    this.themeBtn = iconButton("auto", t("theme"), () => this.cycleTheme());
    const sidebar = h(
      "aside",
      { class: "sidebar", id: "sidebar", "aria-label": t("menu") },
      h(
        "div",
        { class: "brand" },
        h("h1", { class: "title" }, this.config.title),
        this.themeBtn,
        iconButton("keyboard", t("shortcuts"), () => this.showHelp()),
      ),
      h(
        "button",
        { type: "button", class: "new-chat", id: "new-chat" },
        icon("plus"),
        h("span", {}, t("newChat")),
      ),
      h("div", { role: "search", class: "search-wrap" }, icon("search"), this.searchInput),
      (this.nav = h("nav", { class: "session-nav", "aria-label": t("sessions") })),
    );
    sidebar.querySelector("#new-chat")?.addEventListener("click", () => this.newChat());
    this.tabBar = h("nav", { class: "tabs", "aria-label": t("tabs") });
    this.menuBtn = iconButton("menu", t("menu"), () => this.toggleSidebar(), "icon-btn menu-btn");
    this.menuBtn.setAttribute("aria-expanded", "false");
    this.menuBtn.setAttribute("aria-controls", "sidebar");
    this.bannerEl = h("div", { class: "banner", role: "alert", hidden: true });
    // The conversation is redrawn whole; a screen reader hears each finished answer from the announcer instead.
    this.log = h("section", { class: "log", "aria-label": t("conversation"), tabindex: "0" });
    this.announcer = h("div", { class: "sr-only", role: "status", "aria-live": "polite" });
    this.composer = h("textarea", {
      id: "composer",
      rows: "1",
      placeholder: t("composerPlaceholder"),
      "aria-label": t("composer"),
    });
    this.composer.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        void this.submit();
      }
    });
    this.composer.addEventListener("input", () => this.autosize());
    this.sendBtn = h("button", { type: "submit", class: "send", id: "send" });
    const form = h(
      "form",
      { class: "composer", "aria-label": t("composer") },
      h("label", { class: "sr-only", for: "composer" }, t("composer")),
      this.composer,
      this.sendBtn,
    );
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (this.tab().live) this.stop();
      else void this.submit();
    });
    const main = h("main", { class: "main" }, h("div", { class: "topbar" }, this.menuBtn, this.tabBar), this.bannerEl, this.log, form);
    // An open drawer closes on a click beside it.
    main.addEventListener(
      "click",
      (e) => {
        if (this.root.classList.contains("sidebar-open") && !(e.target as HTMLElement).closest(".menu-btn")) {
          e.stopPropagation();
          e.preventDefault();
          this.toggleSidebar();
        }
      },
      true,
    );
    this.toast = h("div", { class: "toast", role: "status", "aria-live": "polite" });
    this.help = buildHelp(this.t, this.apple);
    const embedded = new URLSearchParams(location.search).has("embed");
    this.root = h("div", { class: embedded ? "app embed" : "app" }, sidebar, main, this.toast, this.help, this.announcer);
    // On a narrow screen or in the embed panel the sidebar is a drawer: choosing a chat closes it.
    sidebar.addEventListener("click", (e) => {
      if ((e.target as HTMLElement).closest(".open, #new-chat") && this.root.classList.contains("sidebar-open")) this.toggleSidebar();
    });
    mount.replaceChildren(this.root);
  }

  // ---------------------------------------------------------------- tabs

  private tab(): Tab {
    return this.tabs[this.active];
  }

  private newTab(id: string | null): Tab {
    return { key: Math.random().toString(36).slice(2), id, messages: [], approvals: [], chosen: {}, live: null, loaded: id === null, editing: null, reads: 0 };
  }

  private restoreTabs(): void {
    if (!this.config.features.history) {
      this.tabs = [this.newTab(null)];
      this.active = 0;
      return;
    }
    let saved: { tabs?: string[]; active?: number } = {};
    try {
      saved = JSON.parse(loadPref(`${this.storeKey}:tabs`) ?? "{}");
    } catch {
      saved = {};
    }
    const ids = Array.isArray(saved.tabs) ? saved.tabs.filter((x) => typeof x === "string").slice(0, 12) : [];
    this.tabs = ids.map((id) => this.newTab(id));
    if (this.tabs.length === 0) this.tabs.push(this.newTab(null));
    this.active = Math.min(Math.max(0, Number(saved.active) || 0), this.tabs.length - 1);
  }

  private saveTabs(): void {
    if (!this.config.features.history) return;
    const ids = this.tabs.map((t) => t.id).filter((x): x is string => x !== null);
    const activeId = this.tab().id;
    savePref(
      `${this.storeKey}:tabs`,
      JSON.stringify({ tabs: ids, active: activeId ? ids.indexOf(activeId) : ids.length }),
    );
  }

  private openSession(id: string): void {
    const at = this.tabs.findIndex((t) => t.id === id);
    if (at >= 0) {
      this.active = at;
    } else {
      const current = this.tab();
      const tab = this.newTab(id);
      // A blank draft is replaced rather than kept beside the opened chat.
      if (current.id === null && !current.live) this.tabs[this.active] = tab;
      else {
        this.tabs.push(tab);
        this.active = this.tabs.length - 1;
      }
      void this.loadTab(tab);
    }
    this.saveTabs();
    this.renderAll();
    this.composer.focus();
  }

  private newChat(): void {
    const draft = this.tabs.findIndex((t) => t.id === null);
    if (draft >= 0) this.active = draft;
    else {
      this.tabs.push(this.newTab(null));
      this.active = this.tabs.length - 1;
    }
    this.saveTabs();
    this.renderAll();
    this.composer.focus();
  }

  private closeTab(index: number): void {
    const tab = this.tabs[index];
    if (!tab) return;
    tab.live?.controller.abort();
    this.tabs.splice(index, 1);
    if (this.tabs.length === 0) this.tabs.push(this.newTab(null));
    if (this.active >= this.tabs.length || this.active > index) this.active = Math.max(0, this.active - 1);
    this.saveTabs();
    this.renderAll();
  }

  private switchTab(step: number): void {
    const n = this.tabs.length;
    this.active = (this.active + step + n) % n;
    this.saveTabs();
    this.renderAll();
    this.tabBar.querySelector<HTMLElement>('[aria-current="page"]')?.focus();
  }

  private async loadTab(tab: Tab): Promise<void> {
    if (tab.id === null || !this.config.features.history) return;
    const read = ++tab.reads;
    try {
      const messages = await this.api.messages(tab.id);
      // Approvals matter only where a message called tools.
      const approvals = messages.some((m) => m.tool_calls?.length) ? await this.api.approvals(tab.id) : null;
      // Answered out of order (a slow read, sent before a turn or a newer read): older than what is shown.
      if (read !== tab.reads) return;
      if (approvals) tab.approvals = approvals;
      tab.messages = messages;
      tab.loaded = true;
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        const at = this.tabs.indexOf(tab);
        if (at >= 0) this.closeTab(at);
        return;
      }
      this.showError(e);
    }
    // An edit in progress is not redrawn under the user's hands.
    if (this.tab() === tab && !tab.editing && !tab.live) this.renderConversation();
    this.renderTabs();
    this.resumeAnswer(tab);
  }

  // ---------------------------------------------------------------- lists

  private async refreshLists(): Promise<void> {
    if (!this.config.features.history) return;
    try {
      const [active, archived] = await Promise.all([this.api.sessions("active"), this.api.sessions("archived")]);
      this.sessions = active;
      this.archived = archived;
      if (this.banner?.kind === "disabled") this.setBanner(null);
    } catch (e) {
      this.showError(e);
    }
    if (this.query) await this.runSearch(this.query);
    this.renderSidebar();
    this.renderTabs();
  }

  private async runSearch(q: string): Promise<void> {
    this.query = q.trim();
    if (!this.query) {
      this.hits = null;
      this.renderSidebar();
      return;
    }
    try {
      const hits = await this.api.search(this.query);
      if (q.trim() === this.query) this.hits = hits;
    } catch (e) {
      this.showError(e);
    }
    this.renderSidebar();
  }

  private title(id: string | null): string {
    if (id === null) return this.t("untitled");
    const s = this.sessions.find((x) => x.id === id) ?? this.archived.find((x) => x.id === id);
    if (s?.title) return s.title;
    const tab = this.tabs.find((x) => x.id === id);
    const first = tab?.messages.find((m) => m.role === "user");
    return first ? first.content.slice(0, 60) : this.t("untitled");
  }

  // ---------------------------------------------------------------- actions

  private async act(s: Session, action: "pin" | "unpin" | "archive" | "unarchive"): Promise<void> {
    try {
      await this.api.action(s.id, action);
      if (action === "archive") {
        this.showToast(this.t("archivedToast"), async () => {
          await this.api.action(s.id, "unarchive");
          this.changed({ kind: "session", id: s.id });
        });
      }
      this.changed({ kind: "session", id: s.id });
    } catch (e) {
      this.showError(e);
    }
  }

  private remove(s: Session): void {
    // The delete is sent when the toast closes; Undo cancels it.
    this.sessions = this.sessions.filter((x) => x.id !== s.id);
    this.archived = this.archived.filter((x) => x.id !== s.id);
    if (this.hits) this.hits = this.hits.filter((x) => x.session.id !== s.id);
    const at = this.tabs.findIndex((x) => x.id === s.id);
    if (at >= 0) this.closeTab(at);
    const commit = () => {
      this.pendingDeletes.delete(s.id);
      this.api
        .remove(s.id)
        .then(() => this.changed({ kind: "session", id: s.id }))
        .catch((e) => this.showError(e));
    };
    this.pendingDeletes.set(s.id, window.setTimeout(commit, DELETE_DELAY_MS));
    this.renderSidebar();
    this.showToast(this.t("deleted"), async () => {
      window.clearTimeout(this.pendingDeletes.get(s.id));
      this.pendingDeletes.delete(s.id);
      await this.refreshLists();
    });
  }

  private flushDeletes(): void {
    for (const [id, timer] of this.pendingDeletes) {
      window.clearTimeout(timer);
      void this.api.remove(id, true).catch(() => undefined);
    }
    this.pendingDeletes.clear();
  }

  private async rename(s: Session, title: string): Promise<void> {
    this.renaming = null;
    const clean = title.trim();
    const before = s.title;
    const changed = clean && clean !== (s.title ?? "");
    if (changed) s.title = clean;
    this.renderSidebar();
    this.renderTabs();
    this.nav.querySelector<HTMLElement>(`[data-focus-key="rename:${CSS.escape(s.id)}"]`)?.focus();
    if (!changed) return;
    try {
      await this.api.rename(s.id, clean);
      this.changed({ kind: "session", id: s.id });
    } catch (e) {
      s.title = before;
      this.showError(e);
      this.renderSidebar();
    }
  }

  /** A change made here: refresh, and tell the other tabs. */
  private changed(change: Change): void {
    this.sync.announce(change);
    void this.refreshLists();
  }

  private onRemoteChange(change: Change): void {
    this.syncPending.push(change);
    window.clearTimeout(this.syncTimer);
    this.syncTimer = window.setTimeout(() => {
      const changes = this.syncPending;
      this.syncPending = [];
      void this.refreshLists();
      const ids = new Set(changes.map((c) => c.id).filter(Boolean));
      for (const tab of this.tabs) {
        if (tab.id && !tab.live && (ids.has(tab.id) || changes.some((c) => c.kind === "sessions"))) void this.loadTab(tab);
      }
    }, 100);
  }

  // ---------------------------------------------------------------- chat

  /** The branch shown in `tab`. */
  private path(tab: Tab): PathEntry<Message>[] {
    // Tool results stay on the path (the next answer's parent); they are not shown.
    return visiblePath(
      tab.messages.filter((m) => m.role !== "system"),
      tab.chosen,
    );
  }

  private async submit(): Promise<void> {
    const text = this.composer.value;
    if (!text.trim() || this.tab().live) return;
    if (this.banner?.kind === "rate" && (this.banner.until ?? 0) > Date.now()) return;
    this.composer.value = "";
    this.autosize();
    const tab = this.tab();
    const path: Shown[] = this.path(tab).map((e) => e.message);
    if (tab.id === null && this.config.greeting) {
      path.push({ id: "greeting", parent_id: null, role: "assistant", content: this.config.greeting, model: null, error: null, pending: true });
    }
    await this.runTurn(tab, path, text);
  }

  /** Streams an answer after `before` (plus a new user message `text`, when given). */
  private async runTurn(tab: Tab, before: Shown[], text: string | null): Promise<void> {
    const shown: Shown[] = [...before];
    if (text !== null) {
      shown.push({ id: "pending-user", parent_id: null, role: "user", content: text, model: null, error: null, pending: true });
    }
    const live: Live = { controller: new AbortController(), before: shown, text: "", error: null, stopped: false, approvals: [], cut: 0 };
    tab.live = live;
    // A read sent before this turn must not replace what the turn stores.
    tab.reads++;
    this.setBanner(this.banner?.kind === "disabled" ? null : this.banner);
    this.renderConversation();
    this.renderComposer();
    try {
      if (tab.id === null) {
        const session = await this.api.createSession();
        tab.id = session.id;
        if (this.config.features.history) {
          tab.messages = await this.api.messages(session.id);
          // The stored greeting replaces the one shown from the config.
          live.before = [...tab.messages, ...shown.filter((m) => m.pending && m.role === "user")];
        } else {
          // No readable history: the greeting shown is the one the runtime stored.
          live.before = shown.map((m) => (m.role === "assistant" ? { ...m, pending: false } : m));
        }
        this.saveTabs();
        this.changed({ kind: "session", id: session.id });
      }
      const history = live.before
        .filter((m) => !(m.role === "assistant" && m.error && !m.content))
        .map(historyItem);
      for await (const ev of this.api.chat(tab.id, history, live.controller.signal, this.config.features.streaming)) {
        if (ev.kind === "delta") {
          live.text += ev.text;
          this.scheduleLive();
        } else if (ev.kind === "error") {
          live.error = ev.message;
        } else if (ev.kind === "approval") {
          live.approvals.push({ ...ev.approval, state: "pending" });
          live.cut = live.text.length;
          if (this.tab() === tab) this.renderConversation();
          // Heard, not focused: a stray Enter must not approve a call.
          this.announcer.textContent = `${this.t("approvalTitle", { tool: ev.approval.tool })} ${this.t("approvalWaiting")}`;
        }
      }
    } catch (e) {
      if (!(e instanceof Error && e.name === "AbortError")) {
        live.error = e instanceof ApiError ? e.message : String(e);
        this.showError(e);
        // Refused before anything was stored: give the text back.
        const refused = e instanceof ApiError && (e.status === 429 || e.code === "channel_disabled" || e.code === "shutting_down");
        if (refused && text !== null && this.tab() === tab && !this.composer.value) this.composer.value = text;
      }
    }
    const id = tab.id;
    tab.live = null;
    tab.chosen = {};
    // The turn is over: a refusal's banner and the send button agree now, not after the reload below.
    this.renderComposer();
    if (live.text && this.tab() === tab) this.announcer.textContent = `${this.t("assistant")}: ${live.text.slice(0, 600)}`;
    if (id && !this.config.features.history) {
      // The channel keeps no readable history: the page keeps this visit's turns itself.
      this.keepLocally(tab, live, text);
    } else if (id) {
      await this.loadTab(tab);
      // A stopped answer is stored once the runtime notices the disconnect: look again shortly.
      if (live.stopped) for (const ms of [300, 1200]) window.setTimeout(() => void this.loadTab(tab), ms);
      this.changed({ kind: "session", id });
    }
    this.renderConversation();
    this.renderComposer();
  }

  private keepLocally(tab: Tab, live: Live, text: string | null): void {
    const base = live.before.filter((m) => !m.pending) as Message[];
    const now = new Date().toISOString();
    const local = (role: Message["role"], content: string, parent: string | null, error: string | null): Message => ({
      id: `local-${Math.random().toString(36).slice(2)}`,
      session_id: tab.id ?? "",
      parent_id: parent,
      role,
      content,
      model: null,
      error,
      created_at: now,
    });
    const kept = [...base];
    let parent = base.length ? base[base.length - 1].id : null;
    if (text !== null) {
      const user = local("user", text, parent, null);
      kept.push(user);
      parent = user.id;
    }
    if (live.text || live.error) kept.push(local("assistant", live.text, parent, live.stopped ? "client disconnected" : live.error));
    // Earlier branches stay reachable: keep every message seen, newest last.
    const seen = new Set(kept.map((m) => m.id));
    tab.messages = [...tab.messages.filter((m) => !seen.has(m.id)), ...kept];
    tab.loaded = true;
  }

  private stop(): void {
    const live = this.tab().live;
    if (!live) return;
    live.stopped = true;
    live.controller.abort();
  }

  private regenerate(tab: Tab, entry: PathEntry<Message>): void {
    if (tab.live) return;
    const path = this.path(tab).map((e) => e.message);
    const at = path.findIndex((m) => m.id === entry.message.id);
    void this.runTurn(tab, path.slice(0, at), null);
  }

  private edit(tab: Tab, entry: PathEntry<Message>, text: string): void {
    tab.editing = null;
    if (tab.live || !text.trim()) return this.renderConversation();
    const path = this.path(tab).map((e) => e.message);
    const at = path.findIndex((m) => m.id === entry.message.id);
    void this.runTurn(tab, path.slice(0, at), text);
  }

  private scheduleLive(): void {
    if (this.liveFrame) return;
    this.liveFrame = requestAnimationFrame(() => {
      this.liveFrame = 0;
      const live = this.tab().live;
      if (live && this.liveBody) {
        const stick = this.nearBottom();
        fillMarkdown(this.liveBody, live.text.slice(live.cut), this.t);
        if (stick) this.log.scrollTop = this.log.scrollHeight;
      }
    });
  }

  // ---------------------------------------------------------------- errors

  private showError(e: unknown): void {
    if (e instanceof ApiError) {
      if (e.code === "channel_disabled") return this.setBanner({ kind: "disabled", text: this.t("disabled") });
      if (e.status === 429) {
        const secs = e.retryAfter ?? 5;
        return this.setBanner({ kind: "rate", text: "", until: Date.now() + secs * 1000 });
      }
      if (e.status === 0) return this.setBanner({ kind: "error", text: this.t("networkError") });
      if (e.status === 503 || e.status === 504) return this.setBanner({ kind: "error", text: this.t("unavailable") });
      if (e.status === 404) return this.setBanner({ kind: "error", text: this.t("notFound") });
      return this.setBanner({ kind: "error", text: this.t("error", { msg: e.message }) });
    }
    this.setBanner({ kind: "error", text: this.t("error", { msg: String(e) }) });
  }

  private setBanner(b: Banner): void {
    this.banner = b;
    window.clearInterval(this.bannerTimer);
    if (b?.kind === "rate") {
      this.bannerTimer = window.setInterval(() => {
        this.renderBanner();
        if ((b.until ?? 0) <= Date.now()) {
          window.clearInterval(this.bannerTimer);
          this.renderComposer();
        }
      }, 1000);
    }
    this.renderBanner();
    this.renderComposer();
  }

  private showToast(text: string, undo?: () => Promise<void>): void {
    window.clearTimeout(this.toastTimer);
    const children: Node[] = [h("span", {}, text)];
    if (undo) {
      const b = h("button", { type: "button", class: "undo" }, this.t("undo"));
      b.addEventListener("click", () => {
        this.toast.replaceChildren();
        this.toast.classList.remove("show");
        void undo().catch((e) => this.showError(e));
      });
      children.push(b);
    }
    this.toast.replaceChildren(...children);
    this.toast.classList.add("show");
    this.toastTimer = window.setTimeout(() => {
      this.toast.classList.remove("show");
      this.toast.replaceChildren();
    }, DELETE_DELAY_MS);
  }

  // ---------------------------------------------------------------- keys

  private onKey(e: KeyboardEvent): void {
    if (e.key === "Escape" && !e.shiftKey && this.root.classList.contains("sidebar-open")) {
      e.preventDefault();
      this.toggleSidebar();
      this.menuBtn.focus();
      return;
    }
    const target = e.target as HTMLElement | null;
    const inInput = !!target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
    const action = match(e, this.apple, inInput);
    if (!action) return;
    if (action === "stop" && !this.tab().live) return;
    if (action === "help" && this.help.open) return;
    e.preventDefault();
    switch (action) {
      case "newChat":
        return this.newChat();
      case "search":
        this.searchInput.focus();
        return this.searchInput.select();
      case "nextTab":
        return this.switchTab(1);
      case "prevTab":
        return this.switchTab(-1);
      case "closeTab":
        return this.closeTab(this.active);
      case "focusComposer":
        return this.composer.focus();
      case "stop":
        return this.stop();
      case "help":
        return this.showHelp();
    }
  }

  private toggleSidebar(): void {
    const open = this.root.classList.toggle("sidebar-open");
    this.menuBtn.setAttribute("aria-expanded", String(open));
    if (open) this.root.querySelector<HTMLElement>("#new-chat")?.focus();
  }

  private showHelp(): void {
    if (!this.help.open) this.help.showModal();
  }

  // ---------------------------------------------------------------- theme

  private applyTheme(theme: string): void {
    const value = ["light", "dark"].includes(theme) ? theme : "auto";
    document.documentElement.dataset.theme = value;
    if (this.themeBtn) {
      const label = `${this.t("theme")}: ${this.t(value === "light" ? "themeLight" : value === "dark" ? "themeDark" : "themeAuto")}`;
      this.themeBtn.replaceChildren(icon(value === "light" ? "sun" : value === "dark" ? "moon" : "auto"));
      this.themeBtn.setAttribute("aria-label", label);
      this.themeBtn.title = label;
    }
  }

  private cycleTheme(): void {
    const now = document.documentElement.dataset.theme;
    const next = now === "auto" ? "light" : now === "light" ? "dark" : "auto";
    savePref(`${this.storeKey}:theme`, next);
    this.applyTheme(next);
  }

  // ---------------------------------------------------------------- render

  private renderAll(): void {
    this.applyTheme(document.documentElement.dataset.theme ?? "auto");
    this.renderSidebar();
    this.renderTabs();
    this.renderBanner();
    this.renderConversation();
    this.renderComposer();
  }

  private renderSidebar(): void {
    // A title being typed is not redrawn under the user's hands; renaming ends with a redraw.
    if (this.renaming && this.nav.querySelector(".rename-input")) return;
    const t = this.t;
    const focusedAction = (document.activeElement as HTMLElement | null)?.dataset?.focusKey;
    const parts: Node[] = [];
    if (this.hits !== null) {
      const terms = queryTerms(this.query);
      const list = h("ul", { class: "sessions results", "aria-label": t("search") });
      for (const hit of this.hits) list.appendChild(this.sessionItem(hit.session, terms, hit.snippet));
      parts.push(list);
      if (this.hits.length === 0) parts.push(h("p", { class: "empty" }, t("noResults")));
    } else {
      const visible = this.sessions.filter((s) => !this.pendingDeletes.has(s.id));
      const pinned = visible.filter((s) => s.pinned);
      const recent = visible.filter((s) => !s.pinned);
      const section = (label: string, items: Session[], id: string) => {
        if (!items.length) return;
        const heading = h("h2", { id, class: "section" }, label);
        const list = h("ul", { class: "sessions", "aria-labelledby": id });
        for (const s of items) list.appendChild(this.sessionItem(s));
        parts.push(heading, list);
      };
      section(t("pinned"), pinned, "sec-pinned");
      section(t("recent"), recent, "sec-recent");
      const archived = this.archived.filter((s) => !this.pendingDeletes.has(s.id));
      if (archived.length) {
        const list = h("ul", { class: "sessions" });
        for (const s of archived) list.appendChild(this.sessionItem(s));
        const details = h("details", { class: "archived" }, h("summary", {}, `${t("archived")} (${archived.length})`), list);
        if (this.root.querySelector("details.archived")?.hasAttribute("open")) details.open = true;
        parts.push(details);
      }
    }
    this.nav.replaceChildren(...parts);
    if (focusedAction) this.nav.querySelector<HTMLElement>(`[data-focus-key="${CSS.escape(focusedAction)}"]`)?.focus();
  }

  private sessionItem(s: Session, terms: string[] = [], snippet?: string): HTMLLIElement {
    return sessionItem(this.t, s, {
      current: this.tab().id === s.id,
      renaming: this.renaming === s.id,
      terms,
      snippet,
      onOpen: () => this.openSession(s.id),
      onRenaming: (on) => {
        this.renaming = on ? s.id : null;
        this.renderSidebar();
        if (!on) this.nav.querySelector<HTMLElement>(`[data-focus-key="rename:${CSS.escape(s.id)}"]`)?.focus();
      },
      onRename: (title) => {
        if (this.renaming === s.id) void this.rename(s, title);
      },
      onAction: (action) => void this.act(s, action),
      onDelete: () => this.remove(s),
    });
  }

  private renderTabs(): void {
    const t = this.t;
    const list = h("ul", { class: "tablist" });
    this.tabs.forEach((tab, i) => {
      const current = i === this.active;
      const label = this.title(tab.id);
      const b = h("button", { type: "button", class: "tab", "aria-current": current ? "page" : undefined, title: label }, h("span", { dir: "auto" }, label));
      b.addEventListener("click", () => {
        this.active = i;
        this.saveTabs();
        this.renderAll();
      });
      b.addEventListener("auxclick", (e) => {
        if (e.button === 1) this.closeTab(i);
      });
      const close = iconButton("x", `${t("closeTab")}: ${label}`, () => this.closeTab(i), "icon-btn tab-close");
      list.appendChild(h("li", { class: current ? "current" : "" }, b, close));
    });
    const add = iconButton("plus", t("newChat"), () => this.newChat(), "icon-btn tab-new");
    this.tabBar.replaceChildren(list, add);
  }

  private renderBanner(): void {
    const b = this.banner;
    if (!b) {
      this.bannerEl.hidden = true;
      this.bannerEl.replaceChildren();
      return;
    }
    let text = b.text;
    if (b.kind === "rate") {
      const left = Math.ceil(((b.until ?? 0) - Date.now()) / 1000);
      text = left > 0 ? this.t("rateLimited", { s: left }) : this.t("rateLimitedNow");
    }
    this.bannerEl.hidden = false;
    this.bannerEl.className = `banner banner-${b.kind}`;
    const close = iconButton("x", this.t("close"), () => this.setBanner(null));
    this.bannerEl.replaceChildren(h("span", {}, text));
    if (b.kind !== "disabled") this.bannerEl.appendChild(close);
  }

  private renderComposer(): void {
    const live = !!this.tab()?.live;
    const limited = this.banner?.kind === "rate" && (this.banner.until ?? 0) > Date.now();
    this.sendBtn.replaceChildren(icon(live ? "stop" : "send"));
    this.sendBtn.setAttribute("aria-label", this.t(live ? "stop" : "send"));
    this.sendBtn.title = this.t(live ? "stop" : "send");
    this.sendBtn.classList.toggle("stop", live);
    const off = this.banner?.kind === "disabled";
    this.sendBtn.disabled = !live && (limited || off);
    this.composer.disabled = off;
  }

  private nearBottom(): boolean {
    return this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 80;
  }

  private renderConversation(): void {
    const tab = this.tab();
    const stick = this.nearBottom() || !!tab.live;
    const items: Node[] = [];
    this.liveBody = null;
    if (tab.live) {
      const live = tab.live;
      for (const m of live.before) {
        if (m.role !== "tool") items.push(this.messageView(tab, { message: m as Message, index: 0, count: 1, siblings: [m.id] }, false));
      }
      if (live.approvals.length) {
        // The calls this turn waits on, outside the busy answer so they can be read and used.
        const before = h("div", { class: "body markdown", dir: "auto" });
        fillMarkdown(before, live.text.slice(0, live.cut), this.t);
        const art = h("article", { class: "msg assistant tool-use", "aria-label": this.t("assistant") });
        if (live.cut > 0) art.appendChild(before);
        for (const a of live.approvals) art.appendChild(this.approvalCard(tab, a));
        items.push(art);
      }
      const waiting = live.approvals.some((a) => outcomeOf(a) === "pending");
      const body = h("div", { class: "body markdown", dir: "auto" });
      fillMarkdown(body, live.text.slice(live.cut), this.t);
      this.liveBody = body;
      items.push(
        h(
          "article",
          { class: "msg assistant live", "aria-busy": "true", "aria-label": this.t("assistant") },
          body,
          live.text.length > live.cut || waiting ? null : h("div", { class: "typing", "aria-label": this.t("streaming") }, h("span"), h("span"), h("span")),
        ),
      );
    } else {
      const path = this.path(tab);
      if (tab.id === null || (tab.loaded && path.length === 0)) {
        if (this.config.greeting) {
          const greet: Shown = { id: "greeting", parent_id: null, role: "assistant", content: this.config.greeting, model: null, error: null };
          items.push(this.messageView(tab, { message: greet as Message, index: 0, count: 1, siblings: ["greeting"] }, false));
        }
      } else if (!tab.loaded) {
        items.push(h("p", { class: "loading" }, this.t("loading")));
      }
      for (const entry of path) if (entry.message.role !== "tool") items.push(this.messageView(tab, entry, true));
    }
    this.log.setAttribute("aria-busy", tab.live ? "true" : "false");
    this.log.replaceChildren(...items);
    if (stick) this.log.scrollTop = this.log.scrollHeight;
  }

  private messageView(tab: Tab, entry: PathEntry<Message>, interactive: boolean): HTMLElement {
    const m = entry.message;
    if (m.role === "assistant" && m.tool_calls?.length) {
      const body = h("div", { class: "body markdown", dir: "auto" });
      fillMarkdown(body, m.content, this.t);
      return toolUseView(this.t, m, (call) => this.callCard(tab, m, call), body);
    }
    if (!interactive) return messageView(this.t, entry as PathEntry<Shown>, null);
    return messageView(this.t, entry as PathEntry<Shown>, {
      editing: tab.editing === entry.message.id,
      onEdit: (text) => this.edit(tab, entry, text),
      onEditing: (on) => {
        tab.editing = on ? entry.message.id : null;
        this.renderConversation();
      },
      onStep: (step) => {
        tab.chosen = stepBranch(tab.chosen, entry, step);
        this.renderConversation();
      },
      onRegenerate: () => this.regenerate(tab, entry),
    });
  }

  // ---------------------------------------------------------------- approvals

  /** The approval card of `call` (made by stored message `m`), when the call needed one. */
  private callCard(tab: Tab, m: Message, call: ToolCall): HTMLElement | null {
    const approval = approvalFor(tab.approvals, m.id, call);
    return approval ? this.approvalCard(tab, approval) : null;
  }

  /** A card for `approval`, the same element while its outcome stays. */
  private approvalCard(tab: Tab, approval: Approval): HTMLElement {
    const outcome = outcomeOf(approval);
    const key = `${outcome}:${approval.decided_by ?? ""}:${approval.reason ?? ""}`;
    const cached = this.cards.get(approval.id);
    if (cached?.key === key) return cached.el;
    const el = approvalView(this.t, approval, (approve, reason) => this.decide(tab, approval, approve, reason));
    this.cards.set(approval.id, { key, el });
    if (outcome === "pending") {
      // Redrawn when it runs out (the turn then goes on with a rejection).
      const left = Date.parse(approval.expires_at) - Date.now();
      if (Number.isFinite(left)) {
        window.setTimeout(() => {
          if (tab.live) this.renderConversation();
          else void this.loadTab(tab);
        }, Math.min(Math.max(left + 1500, 0), 2 ** 31 - 1));
      }
    }
    return el;
  }

  /** Sends the visitor's decision on `approval`; the card then shows the outcome. */
  private async decide(tab: Tab, approval: Approval, approve: boolean, reason: string): Promise<void> {
    const session = approval.session_id || tab.id;
    if (!session) return;
    let decided: Approval;
    try {
      decided = await this.api.decide(session, approval.id, approve, reason);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 409)) throw e;
      // Decided meanwhile (another tab, an operator) or expired: show how it stands.
      const all = await this.api.approvals(session);
      decided = all.find((a) => a.id === approval.id) ?? { ...approval, state: "expired" };
    }
    const merge = (list: Approval[]) => list.map((a) => (a.id === decided.id ? { ...a, ...decided } : a));
    tab.approvals = tab.approvals.some((a) => a.id === decided.id) ? merge(tab.approvals) : [...tab.approvals, decided];
    if (tab.live) tab.live.approvals = merge(tab.live.approvals);
    this.announcer.textContent = outcomeText(this.t, decided);
    if (this.tab() === tab) {
      this.renderConversation();
      this.log.querySelector<HTMLElement>(`[data-approval="${CSS.escape(decided.id)}"]`)?.setAttribute("tabindex", "-1");
      this.log.querySelector<HTMLElement>(`[data-approval="${CSS.escape(decided.id)}"]`)?.focus();
    }
    this.changed({ kind: "session", id: session });
    // Without this page's stream (after a reload) the turn goes on in the runtime: look for its answer.
    if (!tab.live) {
      if (decided.message_id) this.resume.add(decided.message_id);
      for (const ms of [500, 1500, 3500, 7000]) window.setTimeout(() => void this.loadTab(tab), ms);
    }
  }

  /**
   * A turn whose page left while it waited for an approval runs the tool once
   * decided, but its next answer is cut off (nobody reads its stream). Once the
   * tool results are stored, that answer is asked for again here, streamed
   * into this page (a regeneration: the cut-off one stays as a branch).
   */
  private resumeAnswer(tab: Tab): void {
    if (tab.live || !this.resume.size) return;
    const path = this.path(tab);
    const at = path.findIndex((e) => this.resume.has(e.message.id));
    if (at < 0) return;
    let next = at + 1;
    while (path[next]?.message.role === "tool") next++;
    const answer = path[next]?.message;
    if (next === at + 1 || !answer) return; // the results are not stored yet: look again later
    this.resume.delete(path[at].message.id);
    if (answer.role === "assistant" && answer.error && /disconnect/i.test(answer.error)) this.regenerate(tab, path[next]);
  }

  private autosize(): void {
    this.composer.style.height = "auto";
    this.composer.style.height = `${Math.min(this.composer.scrollHeight, 240)}px`;
  }
}


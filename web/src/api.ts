// The runtime's sessions and OpenAI-compatible APIs as the page uses them:
// same-origin requests with the visitor's cookie, a CSRF header on every
// state-changing request, errors turned into one typed value.

import { readTurn, type TurnEvent } from "./stream.ts";

export interface Session {
  id: string;
  title: string | null;
  status: "active" | "archived" | "deleted";
  pinned: boolean;
  message_count: number;
  created_at: string;
  updated_at: string;
  last_message_at: string | null;
}

/** A tool call an assistant message made (OpenAI's shape). */
export interface ToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

export interface Message {
  id: string;
  session_id: string;
  parent_id: string | null;
  role: "user" | "assistant" | "system" | "tool";
  content: string;
  model: string | null;
  error: string | null;
  created_at: string;
  /** The tools an assistant message called (server-side tools the runtime ran). */
  tool_calls?: ToolCall[] | null;
  /** The call a tool message answers. */
  tool_call_id?: string | null;
}

/** A server-side tool call that waits (or waited) for a person's approval. */
export interface Approval {
  id: string;
  session_id: string;
  /** The assistant message that asked for the call (absent in a stream's event). */
  message_id?: string;
  tool_call_id?: string;
  tool: string;
  /** The call's arguments: JSON text as the model wrote it. */
  arguments: string;
  state: "pending" | "approved" | "rejected" | "expired";
  expires_at: string;
  decided_by?: string | null;
  reason?: string | null;
}

/** One message of the history sent with a turn (the branch as stored). */
export interface HistoryItem {
  role: string;
  content: string;
  tool_calls?: ToolCall[];
  tool_call_id?: string;
}

export interface SearchHit {
  session: Session;
  score: number;
  snippet: string;
}

/**
 * A stored (or shown) message as the runtime wants it back in a turn's
 * history: tool calls and tool results included, so the branch is recognised
 * as the one stored.
 */
export function historyItem(m: Pick<Message, "role" | "content" | "tool_calls" | "tool_call_id">): HistoryItem {
  const item: HistoryItem = { role: m.role, content: m.content };
  if (m.tool_calls && m.tool_calls.length) item.tool_calls = m.tool_calls;
  if (m.tool_call_id) item.tool_call_id = m.tool_call_id;
  return item;
}

/** A failed request: HTTP status (0 for no answer at all), the API's code and message, and Retry-After. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly retryAfter: number | null = null,
  ) {
    super(message);
  }
}

export interface ApiOptions {
  /** The channel's base path, e.g. `/channels/web` (no trailing slash). */
  base: string;
  /** Header that carries the CSRF token. */
  csrfHeader: string;
  /** Where the token is read: a cookie of this name. */
  csrfCookie: string;
  /** Or a fixed token (from the config or a meta tag). */
  csrfToken?: string;
}

const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

function cookie(name: string): string | undefined {
  if (typeof document === "undefined") return undefined;
  for (const part of document.cookie.split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) return decodeURIComponent(v.join("="));
  }
  return undefined;
}

/** Reads an API error body `{"error": {"code", "message"}}` into an ApiError. */
export async function toError(response: Response): Promise<ApiError> {
  const retry = response.headers.get("retry-after");
  const retryAfter = retry !== null && /^\d+$/.test(retry) ? Number(retry) : null;
  let code = `http_${response.status}`;
  let message = response.statusText || `HTTP ${response.status}`;
  try {
    const body = (await response.json()) as { error?: { code?: string; message?: string } };
    if (body.error?.code) code = body.error.code;
    if (body.error?.message) message = body.error.message;
  } catch {
    // Not JSON: keep the status line.
  }
  return new ApiError(response.status, code, message, retryAfter);
}

export class Api {
  constructor(private readonly opts: ApiOptions) {}

  private headers(method: string, extra: Record<string, string> = {}): Record<string, string> {
    const h: Record<string, string> = { accept: "application/json", ...extra };
    if (UNSAFE.has(method)) {
      const token = this.opts.csrfToken ?? cookie(this.opts.csrfCookie);
      if (token) h[this.opts.csrfHeader] = token;
    }
    return h;
  }

  async request<T>(method: string, path: string, body?: unknown, init: RequestInit = {}): Promise<T> {
    let response: Response;
    try {
      response = await fetch(this.opts.base + path, {
        method,
        credentials: "same-origin",
        headers: this.headers(method, body === undefined ? {} : { "content-type": "application/json" }),
        body: body === undefined ? undefined : JSON.stringify(body),
        ...init,
      });
    } catch (e) {
      if ((e as Error).name === "AbortError") throw e;
      throw new ApiError(0, "network", (e as Error).message);
    }
    if (!response.ok) throw await toError(response);
    return (await response.json()) as T;
  }

  async sessions(status: "active" | "archived"): Promise<Session[]> {
    const page = await this.request<{ data: Session[] }>(
      "GET",
      `/api/sessions?status=${status}&sort=updated_at&order=desc&limit=100`,
    );
    return page.data;
  }

  async search(q: string): Promise<SearchHit[]> {
    const page = await this.request<{ data: SearchHit[] }>("GET", `/api/sessions/search?q=${encodeURIComponent(q)}&limit=30`);
    return page.data;
  }

  createSession(): Promise<Session> {
    return this.request<Session>("POST", "/api/sessions", {});
  }

  session(id: string): Promise<Session> {
    return this.request<Session>("GET", `/api/sessions/${encodeURIComponent(id)}`);
  }

  /** Every message of a session (all branches), oldest first. */
  async messages(id: string): Promise<Message[]> {
    const all: Message[] = [];
    for (let offset = 0; ; offset += 100) {
      const page = await this.request<{ data: Message[]; pagination: { has_more: boolean } }>(
        "GET",
        `/api/sessions/${encodeURIComponent(id)}/messages?limit=100&offset=${offset}`,
      );
      all.push(...page.data);
      if (!page.pagination.has_more) return all;
    }
  }

  /** A session's approvals of tool calls, pending and decided, oldest first. */
  async approvals(id: string): Promise<Approval[]> {
    const list = await this.request<{ data: Approval[] }>("GET", `/api/sessions/${encodeURIComponent(id)}/approvals`);
    return list.data;
  }

  /** Approves or rejects (with an optional reason) a pending tool call. */
  decide(id: string, approval: string, approve: boolean, reason?: string): Promise<Approval> {
    const body = approve ? { approve } : { approve, ...(reason?.trim() ? { reason: reason.trim() } : {}) };
    return this.request<Approval>(
      "POST",
      `/api/sessions/${encodeURIComponent(id)}/approvals/${encodeURIComponent(approval)}`,
      body,
    );
  }

  rename(id: string, title: string): Promise<Session> {
    return this.request<Session>("PATCH", `/api/sessions/${encodeURIComponent(id)}`, { title });
  }

  action(id: string, action: "pin" | "unpin" | "archive" | "unarchive"): Promise<Session> {
    return this.request<Session>("POST", `/api/sessions/${encodeURIComponent(id)}/${action}`);
  }

  remove(id: string, keepalive = false): Promise<Session> {
    return this.request<Session>("DELETE", `/api/sessions/${encodeURIComponent(id)}`, undefined, { keepalive });
  }

  /**
   * Streams an answer to `history` (the shown branch, newest last) in session
   * `id`. The runtime stores what is new (an edit or regeneration becomes a
   * branch) and streams the answer; aborting `signal` stops it (the runtime
   * keeps the partial answer).
   */
  async *chat(
    id: string,
    history: HistoryItem[],
    signal: AbortSignal,
    stream = true,
  ): AsyncGenerator<TurnEvent> {
    let response: Response;
    try {
      response = await fetch(`${this.opts.base}/v1/chat/completions`, {
        method: "POST",
        credentials: "same-origin",
        headers: this.headers("POST", {
          "content-type": "application/json",
          accept: stream ? "text/event-stream" : "application/json",
          "x-conversation-id": id,
        }),
        body: JSON.stringify(
          stream ? { messages: history, stream: true, stream_options: { include_usage: true } } : { messages: history },
        ),
        signal,
      });
    } catch (e) {
      if ((e as Error).name === "AbortError") return;
      throw new ApiError(0, "network", (e as Error).message);
    }
    if (!response.ok) throw await toError(response);
    if (!stream) {
      // A channel that does not stream: the whole answer at once.
      const body = (await response.json()) as { choices?: { message?: { content?: string } }[] };
      const text = body.choices?.[0]?.message?.content ?? "";
      if (text) yield { kind: "delta", text };
      yield { kind: "done" };
      return;
    }
    if (!response.body) throw new ApiError(0, "network", "empty response");
    try {
      yield* readTurn(response.body);
    } catch (e) {
      if ((e as Error).name === "AbortError" || signal.aborted) return;
      throw new ApiError(0, "network", (e as Error).message);
    }
  }
}

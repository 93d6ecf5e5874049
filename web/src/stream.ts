// Server-sent events as the runtime streams them (OpenAI chunk format): a pure,
// incremental parser that takes text as it arrives and yields turn events.

/** One SSE event's data (the `data:` lines joined with `\n`). */
export interface SseEvent {
  event: string;
  data: string;
}

/** Splits an SSE byte stream (already decoded to text) into events. */
export class SseParser {
  private buffer = "";
  private data: string[] = [];
  private event = "";

  /** Feeds text; returns the events completed by it. */
  push(text: string): SseEvent[] {
    this.buffer += text;
    const out: SseEvent[] = [];
    for (;;) {
      const nl = this.buffer.search(/\r\n|\r|\n/);
      if (nl < 0) break;
      // A lone \r at the very end may be the first half of \r\n: wait for more.
      if (this.buffer[nl] === "\r" && nl === this.buffer.length - 1) break;
      const width = this.buffer.startsWith("\r\n", nl) ? 2 : 1;
      const line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + width);
      this.line(line, out);
    }
    return out;
  }

  /** Ends the stream: a last event without its blank line still counts. */
  end(): SseEvent[] {
    const out: SseEvent[] = [];
    if (this.buffer) this.line(this.buffer, out);
    this.buffer = "";
    this.line("", out);
    return out;
  }

  private line(line: string, out: SseEvent[]): void {
    if (line === "") {
      if (this.data.length) out.push({ event: this.event || "message", data: this.data.join("\n") });
      this.data = [];
      this.event = "";
      return;
    }
    if (line.startsWith(":")) return; // comment / keep-alive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
  }
}

/** A tool call the turn waits on, as the stream announces it. */
export interface ApprovalRequest {
  id: string;
  session_id: string;
  tool: string;
  arguments: string;
  expires_at: string;
}

/** What a streamed turn tells the page. */
export type TurnEvent =
  | { kind: "delta"; text: string }
  | { kind: "approval"; approval: ApprovalRequest }
  | { kind: "finish"; reason: string }
  | { kind: "usage"; promptTokens: number; completionTokens: number }
  | { kind: "error"; code: string; message: string }
  | { kind: "done" };

interface Chunk {
  choices?: { delta?: { content?: string | null }; finish_reason?: string | null }[];
  usage?: { prompt_tokens?: number; completion_tokens?: number } | null;
  error?: { code?: string; message?: string };
  /** A chunk with no choices carrying `approval`: the turn waits for a person's decision on a tool call. */
  approval?: Partial<ApprovalRequest> | null;
}

/** Interprets one SSE data payload of an OpenAI-style chat stream. */
export function turnEvents(data: string): TurnEvent[] {
  if (data === "[DONE]") return [{ kind: "done" }];
  let chunk: Chunk;
  try {
    chunk = JSON.parse(data) as Chunk;
  } catch {
    return [{ kind: "error", code: "malformed_stream", message: "the answer stream could not be read" }];
  }
  if (chunk.error) {
    return [
      {
        kind: "error",
        code: String(chunk.error.code ?? "stream_error"),
        message: String(chunk.error.message ?? "the answer stream failed"),
      },
    ];
  }
  const out: TurnEvent[] = [];
  const a = chunk.approval;
  if (a && typeof a.id === "string" && typeof a.session_id === "string" && typeof a.tool === "string") {
    out.push({
      kind: "approval",
      approval: {
        id: a.id,
        session_id: a.session_id,
        tool: a.tool,
        arguments: typeof a.arguments === "string" ? a.arguments : "",
        expires_at: typeof a.expires_at === "string" ? a.expires_at : "",
      },
    });
  }
  for (const choice of chunk.choices ?? []) {
    const text = choice.delta?.content;
    if (typeof text === "string" && text !== "") out.push({ kind: "delta", text });
    if (choice.finish_reason) out.push({ kind: "finish", reason: choice.finish_reason });
  }
  if (chunk.usage) {
    out.push({
      kind: "usage",
      promptTokens: chunk.usage.prompt_tokens ?? 0,
      completionTokens: chunk.usage.completion_tokens ?? 0,
    });
  }
  return out;
}

/** Reads a fetch body as turn events. */
export async function* readTurn(body: ReadableStream<Uint8Array>): AsyncGenerator<TurnEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parser = new SseParser();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      const events = done ? parser.end() : parser.push(decoder.decode(value, { stream: true }));
      for (const e of events) yield* turnEvents(e.data);
      if (done) return;
    }
  } finally {
    reader.releaseLock();
  }
}

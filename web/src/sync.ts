// Live sync between the visitor's tabs: changes made here are announced on a
// BroadcastChannel (other tabs of this browser, no server needed) and arrive
// from the runtime's event stream (other browsers and devices of the same
// visitor). Either way the page is told "session X changed" and reloads it.

export interface Change {
  /** `sessions` (the list changed) or `session` (one session and its messages). */
  kind: "sessions" | "session";
  id?: string;
}

/** Parses one event of the runtime's stream (`data: {"type": "...", "session_id": "..."}`). */
export function changeFromEvent(data: string): Change | null {
  try {
    const e = JSON.parse(data) as { type?: string; session_id?: string };
    if (typeof e.type !== "string") return null;
    if (e.session_id && typeof e.session_id === "string") return { kind: "session", id: e.session_id };
    return { kind: "sessions" };
  } catch {
    return null;
  }
}

export class Sync {
  private channel: BroadcastChannel | null = null;
  private source: EventSource | null = null;
  readonly tabId = Math.random().toString(36).slice(2);

  constructor(name: string, events: string | null, onChange: (c: Change) => void) {
    if (typeof BroadcastChannel !== "undefined") {
      this.channel = new BroadcastChannel(`switchboard:${name}`);
      this.channel.onmessage = (e: MessageEvent<Change & { from?: string }>) => {
        if (e.data && e.data.from !== this.tabId) onChange(e.data);
      };
    }
    if (events && typeof EventSource !== "undefined") {
      this.source = new EventSource(events, { withCredentials: true });
      this.source.onmessage = (e) => {
        const change = changeFromEvent(e.data);
        if (change) onChange(change);
      };
      // EventSource reconnects by itself (the server sends `retry:`); after a reconnect, catch up.
      let opened = false;
      this.source.onopen = () => {
        if (opened) onChange({ kind: "sessions" });
        opened = true;
      };
    }
  }

  announce(change: Change): void {
    this.channel?.postMessage({ ...change, from: this.tabId });
  }
}

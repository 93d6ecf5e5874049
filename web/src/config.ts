// The page's configuration, served by the runtime next to the page (see
// web/README.md for the contract): `<meta name="switchboard-config">` when the
// server inlines it, else `GET config.json` relative to the page.

export interface ChatConfig {
  /** The ChatChannel's name. */
  channel: string;
  /** Shown in the header and the document title. */
  title: string;
  /** First assistant message of a new chat. */
  greeting: string | null;
  /** UI language (BCP 47); he and ar lay out right to left. */
  language: string;
  /** Base path of the channel's API, e.g. `/channels/web` (no trailing slash). */
  apiBase: string;
  /** Served features (history, search, streaming). */
  features: { history: boolean; search: boolean; streaming: boolean };
  /** Server-sent events of the visitor's session changes; null when not served. */
  events: string | null;
  /** CSRF: header to send and cookie to read the token from. */
  csrf: { header: string; cookie: string; token?: string };
}

export function normalize(raw: Partial<ChatConfig> & Record<string, unknown>, pagePath: string): ChatConfig {
  const base = pagePath.replace(/\/+$/, "");
  const features = (raw.features ?? {}) as Partial<ChatConfig["features"]>;
  const csrf = (raw.csrf ?? {}) as Partial<ChatConfig["csrf"]>;
  return {
    channel: String(raw.channel ?? "web"),
    title: String(raw.title ?? raw.channel ?? "Chat"),
    greeting: typeof raw.greeting === "string" && raw.greeting.trim() ? raw.greeting : null,
    language: String(raw.language ?? "en"),
    apiBase: String(raw.apiBase ?? base).replace(/\/+$/, ""),
    features: {
      history: features.history !== false,
      search: features.search !== false,
      streaming: features.streaming !== false,
    },
    events: typeof raw.events === "string" ? raw.events : null,
    csrf: {
      header: String(csrf.header ?? "x-csrf-token"),
      cookie: String(csrf.cookie ?? "switchboard_csrf"),
      token: typeof csrf.token === "string" ? csrf.token : undefined,
    },
  };
}

export async function loadConfig(): Promise<ChatConfig> {
  const meta = document.querySelector<HTMLMetaElement>('meta[name="switchboard-config"]');
  const dir = location.pathname.replace(/[^/]*$/, "");
  if (meta?.content) return normalize(JSON.parse(meta.content), dir);
  const response = await fetch(`${dir}config.json`, { credentials: "same-origin", headers: { accept: "application/json" } });
  if (!response.ok) throw new Error(`config.json: HTTP ${response.status}`);
  return normalize(await response.json(), dir);
}

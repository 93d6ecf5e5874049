// A small Markdown reader for chat answers: text in, a tree of plain objects
// out. There is no HTML in the tree at all: raw HTML in the text stays text,
// and a link keeps its target only when it is http(s), mailto or relative.
// render.ts turns the tree into DOM nodes with textContent. Pure.

export type Inline =
  | { t: "text"; text: string }
  | { t: "code"; text: string }
  | { t: "em" | "strong" | "del"; children: Inline[] }
  | { t: "link"; href: string; children: Inline[] }
  | { t: "br" };

export type Block =
  | { t: "p"; children: Inline[] }
  | { t: "h"; level: number; children: Inline[] }
  | { t: "code"; lang: string; text: string; open: boolean }
  | { t: "quote"; children: Block[] }
  | { t: "list"; ordered: boolean; start: number; items: Block[][] }
  | { t: "hr" }
  | { t: "table"; head: Inline[][]; rows: Inline[][][]; align: ("left" | "right" | "center" | "")[] };

/** The link target kept, or null when it could run code or is not a URL. */
export function safeHref(raw: string): string | null {
  const href = raw.trim();
  // Browsers ignore tabs and newlines inside a scheme ("java\tscript:"), so do we.
  const squashed = href.replace(/[\u0000-\u0020\u007f]/g, "").toLowerCase();
  const scheme = /^([a-z][a-z0-9+.-]*):/.exec(squashed);
  if (scheme) {
    return ["http", "https", "mailto"].includes(scheme[1]) ? href : null;
  }
  if (squashed.startsWith("//")) return null; // another origin without a scheme
  return href === "" ? null : href;
}

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:\s+(.*?))?\s*#*\s*$/;
const HR = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const BULLET = /^( {0,3})([-*+])\s+(.*)$/;
const ORDERED = /^( {0,3})(\d{1,9})[.)]\s+(.*)$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const TABLE_SEP = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;

/** Parses Markdown into blocks. An unclosed code fence (mid-stream) is kept open. */
export function parse(source: string): Block[] {
  return blocks(source.replace(/\r\n?/g, "\n").split("\n"));
}

function blocks(lines: string[]): Block[] {
  const out: Block[] = [];
  let para: string[] = [];
  const flush = () => {
    if (para.length) out.push({ t: "p", children: inline(para.join("\n")) });
    para = [];
  };
  for (let i = 0; i < lines.length; ) {
    const line = lines[i];
    const fence = FENCE.exec(line);
    if (fence) {
      flush();
      const marker = fence[1];
      const body: string[] = [];
      let j = i + 1;
      let open = true;
      for (; j < lines.length; j++) {
        const close = lines[j].trim();
        if (close.startsWith(marker[0].repeat(marker.length)) && /^(`+|~+)$/.test(close)) {
          open = false;
          break;
        }
        body.push(lines[j]);
      }
      // Mid-stream, the line after the last one is still empty: not part of the code.
      if (open && body.length && body[body.length - 1] === "") body.pop();
      out.push({ t: "code", lang: fence[2].slice(0, 30), text: body.join("\n"), open });
      i = j + 1;
      continue;
    }
    if (line.trim() === "") {
      flush();
      i++;
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      flush();
      out.push({ t: "h", level: heading[1].length, children: inline(heading[2] ?? "") });
      i++;
      continue;
    }
    if (HR.test(line)) {
      flush();
      out.push({ t: "hr" });
      i++;
      continue;
    }
    if (QUOTE.test(line)) {
      flush();
      const inner: string[] = [];
      while (i < lines.length && QUOTE.test(lines[i])) {
        inner.push((QUOTE.exec(lines[i]) as RegExpExecArray)[1]);
        i++;
      }
      out.push({ t: "quote", children: blocks(inner) });
      continue;
    }
    const listStart = BULLET.exec(line) ?? ORDERED.exec(line);
    if (listStart && (para.length === 0 || BULLET.test(line) || listStart[2] === "1")) {
      flush();
      const ordered = !BULLET.test(line);
      const items: string[][] = [];
      while (i < lines.length) {
        const l = lines[i];
        const m = ordered ? ORDERED.exec(l) : BULLET.exec(l);
        if (m) {
          items.push([m[3]]);
          i++;
          continue;
        }
        // Continuation: indented lines (or blank lines followed by indented ones) belong to the item.
        if (items.length && /^\s{2,}\S/.test(l)) {
          items[items.length - 1].push(l.replace(/^\s{2,4}/, ""));
          i++;
          continue;
        }
        if (items.length && l.trim() === "" && i + 1 < lines.length && /^\s{2,}\S/.test(lines[i + 1])) {
          items[items.length - 1].push("");
          i++;
          continue;
        }
        break;
      }
      out.push({
        t: "list",
        ordered,
        start: ordered ? Number(listStart[2]) : 1,
        items: items.map((item) => blocks(item)),
      });
      continue;
    }
    if (line.includes("|") && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1]) && lines[i + 1].includes("-")) {
      flush();
      const head = cells(line);
      const align = cells(lines[i + 1]).map((c) => {
        const l = c.startsWith(":");
        const r = c.endsWith(":");
        return l && r ? "center" : r ? "right" : l ? "left" : "";
      }) as ("left" | "right" | "center" | "")[];
      i += 2;
      const rows: Inline[][][] = [];
      while (i < lines.length && lines[i].includes("|") && lines[i].trim() !== "") {
        rows.push(cells(lines[i]).map(inline));
        i++;
      }
      out.push({ t: "table", head: head.map(inline), rows, align });
      continue;
    }
    para.push(line);
    i++;
  }
  flush();
  return out;
}

function cells(line: string): string[] {
  let l = line.trim();
  if (l.startsWith("|")) l = l.slice(1);
  if (l.endsWith("|") && !l.endsWith("\\|")) l = l.slice(0, -1);
  return l.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
}

const ESCAPABLE = "\\`*_{}[]()#+-.!|~<>";

/** Parses inline Markdown. */
export function inline(text: string): Inline[] {
  const out: Inline[] = [];
  let buf = "";
  const push = (node: Inline) => {
    if (buf) out.push({ t: "text", text: buf });
    buf = "";
    out.push(node);
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "\\" && i + 1 < text.length && ESCAPABLE.includes(text[i + 1])) {
      buf += text[i + 1];
      i += 2;
      continue;
    }
    if (c === "\\" && text[i + 1] === "\n") {
      push({ t: "br" });
      i += 2;
      continue;
    }
    if (c === "\n") {
      // Two trailing spaces make a hard break; otherwise a soft one (kept as a break: chat text is line-oriented).
      buf = buf.replace(/ +$/, "");
      push({ t: "br" });
      i++;
      continue;
    }
    if (c === "`") {
      let run = 1;
      while (text[i + run] === "`") run++;
      const fence = "`".repeat(run);
      const end = text.indexOf(fence, i + run);
      if (end > 0) {
        let code = text.slice(i + run, end);
        if (/^ .* $/.test(code)) code = code.slice(1, -1);
        push({ t: "code", text: code });
        i = end + run;
        continue;
      }
      buf += fence;
      i += run;
      continue;
    }
    if (c === "[") {
      const link = parseLink(text, i);
      if (link) {
        const href = safeHref(link.href);
        if (href) push({ t: "link", href, children: inline(link.label) });
        else {
          // An unsafe target: the label stays, as plain text, with no link at all.
          for (const n of inline(link.label)) push(n);
        }
        i = link.end;
        continue;
      }
    }
    if (c === "<") {
      const auto = /^<(https?:\/\/[^\s<>]+|mailto:[^\s<>]+)>/i.exec(text.slice(i));
      if (auto) {
        push({ t: "link", href: auto[1], children: [{ t: "text", text: auto[1] }] });
        i += auto[0].length;
        continue;
      }
    }
    if (c === "h" && (i === 0 || /[\s(]/.test(text[i - 1]))) {
      const bare = /^https?:\/\/[^\s<>()]*[^\s<>().,;:!?'"]/.exec(text.slice(i));
      if (bare) {
        push({ t: "link", href: bare[0], children: [{ t: "text", text: bare[0] }] });
        i += bare[0].length;
        continue;
      }
    }
    if (c === "*" || c === "_" || c === "~") {
      const emph = parseEmphasis(text, i);
      if (emph) {
        push(emph.node);
        i = emph.end;
        continue;
      }
    }
    buf += c;
    i++;
  }
  if (buf) out.push({ t: "text", text: buf });
  return out;
}

function parseLink(text: string, at: number): { label: string; href: string; end: number } | null {
  let depth = 0;
  let j = at;
  for (; j < text.length; j++) {
    if (text[j] === "\\") {
      j++;
      continue;
    }
    if (text[j] === "[") depth++;
    else if (text[j] === "]" && --depth === 0) break;
  }
  if (j >= text.length || text[j + 1] !== "(") return null;
  // The target runs to the ")" that balances the "(" (URLs may hold parentheses).
  let close = -1;
  for (let k = j + 2, parens = 1; k < text.length; k++) {
    if (text[k] === "\\") {
      k++;
      continue;
    }
    if (text[k] === "(") parens++;
    else if (text[k] === ")" && --parens === 0) {
      close = k;
      break;
    }
  }
  if (close < 0) return null;
  let href = text.slice(j + 2, close).trim();
  const titled = /^(\S+)\s+["'].*["']$/.exec(href);
  if (titled) href = titled[1];
  if (href.startsWith("<") && href.endsWith(">")) href = href.slice(1, -1);
  return { label: text.slice(at + 1, j), href, end: close + 1 };
}

function parseEmphasis(text: string, at: number): { node: Inline; end: number } | null {
  const c = text[at];
  const double = text[at + 1] === c;
  if (c === "~" && !double) return null;
  const marker = double ? c + c : c;
  const start = at + marker.length;
  if (start >= text.length || /\s/.test(text[start])) return null;
  // Intraword underscores (snake_case) are not emphasis.
  if (c === "_" && at > 0 && /[\p{L}\p{N}]/u.test(text[at - 1])) return null;
  let end = text.indexOf(marker, start);
  while (end > 0 && (/\s/.test(text[end - 1]) || (!double && text[end + 1] === c))) {
    if (!double && text[end + 1] === c) {
      end = text.indexOf(marker, end + 2);
      continue;
    }
    end = text.indexOf(marker, end + 1);
  }
  if (end <= start) return null;
  if (c === "_" && /[\p{L}\p{N}]/u.test(text[end + marker.length] ?? "")) return null;
  const children = inline(text.slice(start, end));
  const t = c === "~" ? "del" : double ? "strong" : "em";
  return { node: { t, children }, end: end + marker.length };
}

/** The plain text of inline nodes (for titles and copy). */
export function plainText(nodes: Inline[]): string {
  return nodes
    .map((n) => (n.t === "text" || n.t === "code" ? n.text : n.t === "br" ? "\n" : "children" in n ? plainText(n.children) : ""))
    .join("");
}

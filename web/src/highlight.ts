// Search hits: the words of a query and the text split into plain and marked
// segments (rendered as text nodes and <mark>, never as HTML). Pure.

export interface Segment {
  text: string;
  hit: boolean;
}

/** The words a query searches for (as the runtime's full-text search splits them). */
export function queryTerms(query: string): string[] {
  const words = query
    .toLowerCase()
    .split(/[^\p{L}\p{N}_]+/u)
    .filter((w) => w.length > 0);
  return [...new Set(words)].sort((a, b) => b.length - a.length);
}

/** `text` cut into segments, marking every occurrence of a term (case-insensitive, prefix of a word too). */
export function highlight(text: string, terms: string[]): Segment[] {
  if (terms.length === 0 || text === "") return text ? [{ text, hit: false }] : [];
  const lower = text.toLowerCase();
  const marks: boolean[] = new Array(text.length).fill(false);
  for (const term of terms) {
    let from = 0;
    for (;;) {
      const at = lower.indexOf(term, from);
      if (at < 0) break;
      for (let i = at; i < at + term.length; i++) marks[i] = true;
      from = at + term.length;
    }
  }
  const out: Segment[] = [];
  for (let i = 0; i < text.length; ) {
    let j = i;
    while (j < text.length && marks[j] === marks[i]) j++;
    out.push({ text: text.slice(i, j), hit: marks[i] });
    i = j;
  }
  return out;
}

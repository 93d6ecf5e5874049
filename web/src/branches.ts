// Branches of a conversation: the API stores every message with its parent, so
// edits and regenerations are siblings. This module picks the path shown and
// says where each shown message stands among its siblings. Pure.

export interface Node {
  id: string;
  parent_id: string | null;
}

/** A shown message with its place among its siblings. */
export interface PathEntry<M extends Node> {
  message: M;
  /** 0-based index among siblings (oldest first). */
  index: number;
  /** Number of siblings including itself. */
  count: number;
  /** Sibling ids, oldest first. */
  siblings: string[];
}

const ROOT = "";

function key(parent: string | null): string {
  return parent ?? ROOT;
}

/**
 * The path through `messages` (oldest first, as the API lists them). At each
 * fork, `chosen` (sibling group key → message id; the key is the parent id,
 * `""` for the root) wins; otherwise the child leading to the newest message,
 * which is the branch the server continues.
 */
export function visiblePath<M extends Node>(messages: M[], chosen: Record<string, string> = {}): PathEntry<M>[] {
  const order = new Map<string, number>();
  const byId = new Map<string, M>();
  messages.forEach((m, i) => {
    order.set(m.id, i);
    byId.set(m.id, m);
  });
  const children = new Map<string, M[]>();
  for (const m of messages) {
    // A parent the page does not have is treated as the root.
    const k = m.parent_id && byId.has(m.parent_id) ? m.parent_id : ROOT;
    const list = children.get(k);
    if (list) list.push(m);
    else children.set(k, [m]);
  }
  // Newest descendant index of each message (itself included).
  const newest = new Map<string, number>();
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i];
    const own = Math.max(newest.get(m.id) ?? -1, i);
    newest.set(m.id, own);
    const p = m.parent_id;
    if (p && byId.has(p)) newest.set(p, Math.max(newest.get(p) ?? -1, own));
  }
  const path: PathEntry<M>[] = [];
  let k = ROOT;
  const seen = new Set<string>();
  for (;;) {
    const group = children.get(k);
    if (!group || group.length === 0) break;
    let pick = group.find((m) => m.id === chosen[k]);
    if (!pick) {
      pick = group.reduce((a, b) => ((newest.get(b.id) ?? 0) > (newest.get(a.id) ?? 0) ? b : a));
    }
    if (seen.has(pick.id)) break; // a cycle in bad data
    seen.add(pick.id);
    path.push({
      message: pick,
      index: group.indexOf(pick),
      count: group.length,
      siblings: group.map((m) => m.id),
    });
    k = pick.id;
  }
  return path;
}

/** The choice that shows the sibling `step` places from `entry` (wrapping not allowed). */
export function stepBranch<M extends Node>(
  chosen: Record<string, string>,
  entry: PathEntry<M>,
  step: number,
): Record<string, string> {
  const next = entry.index + step;
  if (next < 0 || next >= entry.count) return chosen;
  return { ...chosen, [key(entry.message.parent_id)]: entry.siblings[next] };
}

/** Forgets the choices below a new message so the new branch shows. */
export function chooseNew(chosen: Record<string, string>, message: Node): Record<string, string> {
  return { ...chosen, [key(message.parent_id)]: message.id };
}

export function groupKey(message: Node): string {
  return key(message.parent_id);
}

// The exec events the extension keeps, split by scope: those of processes
// under the filter (and their descendants), and every other exec on the
// machine. On a busy machine the others are nearly all noise (grep, env,
// readlink of other jobs, thousands a minute), so each part is bounded on
// its own: noise never evicts the processes a person is testing.
//
// "Under the filter" starts at a process that runs under the emulator's shim
// (the exec's underShim flag) or that owns a socket the filter reported, and
// takes in every exec whose parent pid, or own earlier image, is in scope.
// Scope is decided as execs arrive; a socket seen later brings its process's
// earlier execs (and theirs) in. No `vscode` import.
import type { ExecView } from '../shared/helperProtocol';

/** nke.execScope: Exec Events shows the processes under the filter, or every exec on the machine. */
export type ExecScope = 'underFilter' | 'machine';

/** The process tree of one scope, built once per change. */
export interface ExecTree {
  roots: ExecView[];
  childrenOf: ReadonlyMap<string, ExecView[]>;
  parentOf: ReadonlyMap<string, ExecView>;
  /** execs in this tree, oldest first */
  all: ExecView[];
}

const byArrival = (a: ExecView, b: ExecView) => Number(a.id) - Number(b.id) || (a.id < b.id ? -1 : 1);

export class ExecStore {
  /** In arrival order (Map keeps insertion order; a late-scoped exec moves to the end). */
  private readonly scopedById = new Map<string, ExecView>();
  private readonly otherById = new Map<string, ExecView>();
  private readonly scopedPids = new Set<number>();
  /** Execs outside the scope seen since the last clear (kept or not): the views say how many they hide. */
  private hiddenSeen = 0;
  private version = 0;
  private cache = new Map<ExecScope, { version: number; tree: ExecTree }>();

  constructor(private limit: number) {}

  get size(): number {
    return this.scopedById.size + this.otherById.size;
  }

  /** How many execs outside the scope the filter reported (since Clear). */
  get hiddenCount(): number {
    return this.hiddenSeen;
  }

  get scopedCount(): number {
    return this.scopedById.size;
  }

  /** Every exec kept, oldest first. */
  all(): ExecView[] {
    return [...this.scopedById.values(), ...this.otherById.values()].sort(byArrival);
  }

  isInScope(e: ExecView): boolean {
    return this.scopedById.has(e.id);
  }

  /** Adds (or updates: a path completed) one exec; true when something changed. */
  add(e: ExecView): void {
    this.version++;
    if (this.scopedById.has(e.id)) {
      this.scopedById.set(e.id, e);
      return;
    }
    const known = this.otherById.has(e.id);
    if (e.underShim || this.scopedPids.has(e.pid) || this.scopedPids.has(e.ppid)) {
      this.otherById.delete(e.id);
      this.scopedById.set(e.id, e);
      this.scopedPids.add(e.pid);
      if (known) this.hiddenSeen--;
      this.trim(this.scopedById, true);
      return;
    }
    this.otherById.set(e.id, e);
    if (!known) this.hiddenSeen++;
    this.trim(this.otherById, false);
  }

  /**
   * A process owns a socket the filter reported: it is under the filter.
   * Its execs already kept, and their descendants, move into the scope.
   */
  noteSocketOwner(pid: number): boolean {
    if (!pid || this.scopedPids.has(pid)) return false;
    this.scopedPids.add(pid);
    let moved = false;
    // One pass in arrival order: a child arrives after the parent it descends from.
    for (const e of [...this.otherById.values()]) {
      if (this.scopedPids.has(e.pid) || this.scopedPids.has(e.ppid)) {
        this.otherById.delete(e.id);
        this.scopedById.set(e.id, e);
        this.scopedPids.add(e.pid);
        this.hiddenSeen--;
        moved = true;
      }
    }
    if (moved) {
      this.version++;
      this.trim(this.scopedById, true);
    }
    return moved;
  }

  setLimit(limit: number): boolean {
    this.limit = limit;
    const a = this.trim(this.scopedById, true);
    const b = this.trim(this.otherById, false);
    return a || b;
  }

  clear(): void {
    this.scopedById.clear();
    this.otherById.clear();
    this.scopedPids.clear();
    this.hiddenSeen = 0;
    this.version++;
  }

  /** The latest exec of a pid (any scope): a socket's process path and ancestry. */
  latestOfPid(pid: number): ExecView | undefined {
    let best: ExecView | undefined;
    for (const m of [this.scopedById, this.otherById]) {
      for (const e of m.values()) if (e.pid === pid && (!best || byArrival(e, best) > 0)) best = e;
    }
    return best;
  }

  /**
   * The tree by ppid of one scope. An exec's parent is the earlier image of
   * its own pid when there is one (exec without fork: `env` became `sh`),
   * else the newest exec of its ppid before it (a pid may exec several
   * times; a child belongs to the image that forked it).
   */
  tree(scope: ExecScope): ExecTree {
    const hit = this.cache.get(scope);
    if (hit && hit.version === this.version) return hit.tree;
    const all = scope === 'machine' ? this.all() : [...this.scopedById.values()].sort(byArrival);
    const latestByPid = new Map<number, ExecView>();
    const parentOf = new Map<string, ExecView>();
    const childrenOf = new Map<string, ExecView[]>();
    const roots: ExecView[] = [];
    for (const e of all) {
      const parent = latestByPid.get(e.pid) ?? latestByPid.get(e.ppid);
      if (parent && parent.id !== e.id) {
        parentOf.set(e.id, parent);
        let kids = childrenOf.get(parent.id);
        if (!kids) childrenOf.set(parent.id, (kids = []));
        kids.push(e);
      } else roots.push(e);
      latestByPid.set(e.pid, e);
    }
    const tree = { roots, childrenOf, parentOf, all };
    this.cache.set(scope, { version: this.version, tree });
    return tree;
  }

  /**
   * Drops the oldest beyond the limit. In the scope, a parent whose children
   * are kept stays (the tree keeps parents that exited), unless only parents
   * are left to drop.
   */
  private trim(m: Map<string, ExecView>, keepParents: boolean): boolean {
    let excess = m.size - this.limit;
    if (excess <= 0) return false;
    this.version++;
    if (keepParents) {
      const parentPids = new Set<number>();
      for (const e of m.values()) parentPids.add(e.ppid);
      const seenPid = new Set<number>();
      const reexec = new Set<string>();
      // An image replaced by a later exec of the same pid is a parent too.
      for (const e of [...m.values()].reverse()) {
        if (seenPid.has(e.pid)) reexec.add(e.id);
        seenPid.add(e.pid);
      }
      for (const e of [...m.values()]) {
        if (excess <= 0) break;
        if (parentPids.has(e.pid) || reexec.has(e.id)) continue;
        m.delete(e.id);
        excess--;
      }
    }
    // Deleting while iterating a Map is safe; no copy of the whole map per exec.
    for (const id of m.keys()) {
      if (excess-- <= 0) break;
      m.delete(id);
    }
    return true;
  }
}

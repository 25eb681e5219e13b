// The diff of the working bytes against the bytes the filter held: which
// working bytes are changed or inserted, and where original bytes were
// deleted. Common prefix and suffix first (an edit is usually local), then
// Myers' O(ND) diff on what is left, with a bound on D and on the work so a
// wholesale rewrite of 1 MiB stays fast: past the bound the middle is
// reported as changed, plus the surplus as inserted or deleted.

export const enum Mark {
  Same = 0,
  Changed = 1,
  Inserted = 2,
}

export interface ByteDiff {
  /** One mark per working byte. */
  marks: Uint8Array;
  /** Working offset -> how many original bytes were deleted just before it (offset == length: at the end). */
  deletions: Map<number, number>;
  changed: number;
  inserted: number;
  deleted: number;
}

const enum Op {
  Equal,
  Delete,
  Insert,
}

/** Myers' shortest edit script of a -> b, or undefined past maxD edits or `budget` steps. */
function myers(a: Uint8Array, b: Uint8Array, maxD: number, budget: number): Op[] | undefined {
  const n = a.length;
  const m = b.length;
  const max = Math.min(n + m, maxD);
  const off = max + 1;
  const v = new Int32Array(2 * max + 3);
  const trace: Int32Array[] = [];
  let work = 0;
  for (let d = 0; d <= max; d++) {
    trace.push(v.slice());
    for (let k = -d; k <= d; k += 2) {
      let x = k === -d || (k !== d && v[k - 1 + off] < v[k + 1 + off]) ? v[k + 1 + off] : v[k - 1 + off] + 1;
      let y = x - k;
      while (x < n && y < m && a[x] === b[y]) {
        x++;
        y++;
      }
      work += 1 + x - v[k + off];
      v[k + off] = x;
      if (x >= n && y >= m) return backtrack(trace, n, m, d, off);
    }
    if (work > budget) return undefined;
  }
  return undefined;
}

function backtrack(trace: Int32Array[], n: number, m: number, dEnd: number, off: number): Op[] {
  const ops: Op[] = [];
  let x = n;
  let y = m;
  for (let d = dEnd; d > 0; d--) {
    const v = trace[d];
    const k = x - y;
    const prevK = k === -d || (k !== d && v[k - 1 + off] < v[k + 1 + off]) ? k + 1 : k - 1;
    const prevX = v[prevK + off];
    const prevY = prevX - prevK;
    while (x > prevX && y > prevY) {
      ops.push(Op.Equal);
      x--;
      y--;
    }
    ops.push(x === prevX ? Op.Insert : Op.Delete);
    x = prevX;
    y = prevY;
  }
  while (x > 0 && y > 0) {
    ops.push(Op.Equal);
    x--;
    y--;
  }
  return ops.reverse();
}

export function diffBytes(
  original: Uint8Array,
  working: Uint8Array,
  maxD = 256,
  budget = 1_000_000,
): ByteDiff {
  const marks = new Uint8Array(working.length);
  const deletions = new Map<number, number>();
  const diff: ByteDiff = { marks, deletions, changed: 0, inserted: 0, deleted: 0 };
  const n = original.length;
  const m = working.length;
  let p = 0;
  while (p < n && p < m && original[p] === working[p]) p++;
  let s = 0;
  while (s < n - p && s < m - p && original[n - 1 - s] === working[m - 1 - s]) s++;
  const a = original.subarray(p, n - s);
  const b = working.subarray(p, m - s);
  if (!a.length && !b.length) return diff;
  const ops = myers(a, b, maxD, budget);
  if (!ops) {
    // Too different to align cheaply: the shorter length changed, the rest inserted or deleted.
    const changed = Math.min(a.length, b.length);
    marks.fill(Mark.Changed, p, p + changed);
    marks.fill(Mark.Inserted, p + changed, p + b.length);
    diff.changed = changed;
    diff.inserted = b.length - changed;
    diff.deleted = a.length - changed;
    if (diff.deleted) deletions.set(p + b.length, diff.deleted);
    return diff;
  }
  // Runs of deletes and inserts between equal bytes: paired up they are changed bytes.
  let w = p;
  for (let i = 0; i < ops.length;) {
    if (ops[i] === Op.Equal) {
      w++;
      i++;
      continue;
    }
    let dels = 0;
    let ins = 0;
    for (; i < ops.length && ops[i] !== Op.Equal; i++) {
      if (ops[i] === Op.Delete) dels++;
      else ins++;
    }
    const changed = Math.min(dels, ins);
    for (let j = 0; j < ins; j++) marks[w + j] = j < changed ? Mark.Changed : Mark.Inserted;
    diff.changed += changed;
    diff.inserted += ins - changed;
    if (dels > changed) {
      deletions.set(w + ins, (deletions.get(w + ins) ?? 0) + dels - changed);
      diff.deleted += dels - changed;
    }
    w += ins;
  }
  return diff;
}

// Search in the working bytes: text (UTF-8) or hex bytes with `??` for any
// byte ("FF ?? 0A"). A pattern is a list of byte values, -1 for a wildcard.

export type SearchMode = 'text' | 'hex';

export type ParsedPattern = { ok: true; pattern: Int16Array } | { ok: false; error: string };

export function parsePattern(input: string, mode: SearchMode): ParsedPattern {
  if (mode === 'text') {
    const bytes = new TextEncoder().encode(input);
    return bytes.length
      ? { ok: true, pattern: Int16Array.from(bytes) }
      : { ok: false, error: 'type something to find' };
  }
  const compact = input.replace(/\s+/g, '');
  if (!compact) return { ok: false, error: 'type hex bytes to find, ?? for any byte' };
  if (compact.length % 2) return { ok: false, error: `"${input}" has an odd number of hex digits` };
  const pattern = new Int16Array(compact.length / 2);
  for (let i = 0; i < pattern.length; i++) {
    const pair = compact.slice(2 * i, 2 * i + 2);
    if (pair === '??') pattern[i] = -1;
    else if (/^[0-9a-fA-F]{2}$/.test(pair)) pattern[i] = parseInt(pair, 16);
    else return { ok: false, error: `"${pair}" is not a hex byte (two digits 0-9 a-f, or ??)` };
  }
  return { ok: true, pattern };
}

function matchesAt(hay: Uint8Array, pat: Int16Array, at: number): boolean {
  for (let j = 0; j < pat.length; j++) if (pat[j] !== -1 && hay[at + j] !== pat[j]) return false;
  return true;
}

/** The first match starting at or after `from` (before `from`, backwards), wrapping around; -1 if none. */
export function findMatch(hay: Uint8Array, pat: Int16Array, from: number, backwards = false): number {
  const last = hay.length - pat.length;
  if (last < 0) return -1;
  const count = last + 1;
  for (let step = 0; step < count; step++) {
    const at = backwards
      ? (((from - 1 - step) % count) + count) % count
      : (((from + step) % count) + count) % count;
    if (matchesAt(hay, pat, at)) return at;
  }
  return -1;
}

/** How many matches there are (non-overlapping), counted up to `limit`. */
export function countMatches(hay: Uint8Array, pat: Int16Array, limit = 10000): number {
  let n = 0;
  for (let at = 0; at + pat.length <= hay.length && n < limit;) {
    if (matchesAt(hay, pat, at)) {
      n++;
      at += pat.length;
    } else at++;
  }
  return n;
}

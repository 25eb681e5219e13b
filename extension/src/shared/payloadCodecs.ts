// The two editable forms of a held payload: lossless text and a hex dump.
// Pure code (no `vscode`, no Node built-ins): the extension host's payload
// documents, the webview editor and plain mocha all use these same functions.
//
// Text form. Valid UTF-8 is shown as it is, except what an editor would hide,
// change or drop; those bytes, every byte that is not valid UTF-8, and the
// escape character itself are escapes, so decodeText(encodeText(b)) is b for
// every byte string. Escapes:
//   \\        the backslash (0x5c)
//   \r        CR (0x0d): an editor normalises raw line ends, so CR is never raw
//   \t        a tab at the end of a line (trimmed by editors if raw); a tab
//             elsewhere is raw
//   \xHH      any byte (two hex digits), e.g. \x00; used for control
//             characters, invalid UTF-8, and code points an editor hides or
//             treats as line ends (C1 controls, U+2028/9, bidi and zero-width
//             format characters, U+FEFF which would read as a BOM), and for a
//             space at the end of a line
//   \n, \0    accepted when typed (LF, NUL); never produced
// A raw line break is the byte LF (0x0a); CRLF typed in a CRLF document is LF
// too. Anything else after a backslash is an error at its line and column.
//
// Hex form. Lines of `offset: hh hh ... |ascii|`, 16 bytes a line. On parse
// the offset (hex digits and a colon at the start of a line) and the ASCII
// gutter (from the first `|` to the end of the line) are ignored, so bytes are
// inserted and deleted by editing lines; every other token must be exactly two
// hex digits. Blank lines are ignored.

/** One syntax error, 0-based like an editor position; `length` characters from `column`. */
export interface PayloadSyntaxError {
  line: number;
  column: number;
  length: number;
  message: string;
}

export type PayloadDecodeResult =
  { ok: true; bytes: Uint8Array } | { ok: false; errors: PayloadSyntaxError[] };

/** The two document forms; the payload documents and the webview editor pick one by kind. */
export interface PayloadCodec {
  readonly kind: 'text' | 'hex';
  encode(bytes: Uint8Array): string;
  decode(text: string): PayloadDecodeResult;
}

/** Errors reported per decode: enough to fix a paste, few enough to read. */
const MAX_ERRORS = 100;

const HEX = '0123456789abcdef';

function hex2(b: number): string {
  return HEX[b >> 4] + HEX[b & 15];
}

/**
 * Code points shown as escapes although valid: ones an editor treats as line
 * ends (C1 NEL, U+2028/9), strips (U+FEFF as a BOM), or renders invisibly or
 * reordered (C0/C1 controls, zero-width and bidi format characters), which
 * would make hostile bytes look like something else.
 */
function hiddenCodePoint(cp: number): boolean {
  return (
    cp < 0x20 ||
    (cp >= 0x7f && cp <= 0x9f) ||
    cp === 0xad ||
    cp === 0x061c ||
    cp === 0x115f ||
    cp === 0x1160 ||
    cp === 0x180e ||
    (cp >= 0x200b && cp <= 0x200f) ||
    (cp >= 0x2028 && cp <= 0x202e) ||
    (cp >= 0x2060 && cp <= 0x206f) ||
    cp === 0x3164 ||
    cp === 0xfeff ||
    cp === 0xffa0 ||
    (cp >= 0xfff0 && cp <= 0xfffb)
  );
}

/**
 * Length of the valid UTF-8 sequence at b[i] (1..4), or 0 when it is not one:
 * overlong forms, surrogates (U+D800..DFFF) and code points past U+10FFFF are
 * invalid, as in the Unicode standard's well-formed table.
 */
function utf8SequenceAt(b: Uint8Array, i: number): { len: number; cp: number } | undefined {
  const c0 = b[i];
  if (c0 < 0x80) return { len: 1, cp: c0 };
  const cont = (k: number) => i + k < b.length && (b[i + k] & 0xc0) === 0x80;
  if (c0 >= 0xc2 && c0 <= 0xdf) {
    return cont(1) ? { len: 2, cp: ((c0 & 0x1f) << 6) | (b[i + 1] & 0x3f) } : undefined;
  }
  if (c0 >= 0xe0 && c0 <= 0xef) {
    if (!cont(1) || !cont(2)) return undefined;
    const c1 = b[i + 1];
    if (c0 === 0xe0 && c1 < 0xa0) return undefined; // overlong
    if (c0 === 0xed && c1 > 0x9f) return undefined; // surrogate
    return { len: 3, cp: ((c0 & 0x0f) << 12) | ((c1 & 0x3f) << 6) | (b[i + 2] & 0x3f) };
  }
  if (c0 >= 0xf0 && c0 <= 0xf4) {
    if (!cont(1) || !cont(2) || !cont(3)) return undefined;
    const c1 = b[i + 1];
    if (c0 === 0xf0 && c1 < 0x90) return undefined; // overlong
    if (c0 === 0xf4 && c1 > 0x8f) return undefined; // > U+10FFFF
    return {
      len: 4,
      cp: ((c0 & 0x07) << 18) | ((c1 & 0x3f) << 12) | ((b[i + 2] & 0x3f) << 6) | (b[i + 3] & 0x3f),
    };
  }
  return undefined;
}

/** Payload bytes as lossless text (see the file comment for the escapes). */
export function encodeText(bytes: Uint8Array): string {
  const out: string[] = [];
  // A raw space or tab just before a line end (or the end) is escaped, so an
  // editor's "trim trailing whitespace" cannot remove a payload byte.
  const endLine = () => {
    const last = out[out.length - 1];
    if (last === ' ') out[out.length - 1] = '\\x20';
    else if (last === '\t') out[out.length - 1] = '\\t';
  };
  for (let i = 0; i < bytes.length;) {
    const seq = utf8SequenceAt(bytes, i);
    if (!seq) {
      out.push('\\x' + hex2(bytes[i]));
      i++;
      continue;
    }
    const { len, cp } = seq;
    if (cp === 0x0a) {
      endLine();
      out.push('\n');
    } else if (cp === 0x5c) out.push('\\\\');
    else if (cp === 0x0d) out.push('\\r');
    else if (cp === 0x09) out.push('\t');
    else if (hiddenCodePoint(cp)) {
      for (let k = 0; k < len; k++) out.push('\\x' + hex2(bytes[i + k]));
    } else out.push(String.fromCodePoint(cp));
    i += len;
  }
  endLine();
  return out.join('');
}

/** Appends a code point's UTF-8 bytes. */
function pushUtf8(out: number[], cp: number): void {
  if (cp < 0x80) out.push(cp);
  else if (cp < 0x800) out.push(0xc0 | (cp >> 6), 0x80 | (cp & 0x3f));
  else if (cp < 0x10000) out.push(0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
  else out.push(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3f), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
}

const isHexDigit = (c: string | undefined) => c !== undefined && /^[0-9a-fA-F]$/.test(c);

/** The bytes of a text-form payload, or every error with its line and column. */
export function decodeText(text: string): PayloadDecodeResult {
  const out: number[] = [];
  const errors: PayloadSyntaxError[] = [];
  let line = 0;
  let lineStart = 0;
  const fail = (at: number, length: number, message: string) => {
    if (errors.length < MAX_ERRORS) errors.push({ line, column: at - lineStart, length, message });
  };
  for (let i = 0; i < text.length;) {
    const ch = text[i];
    if (ch === '\n' || ch === '\r') {
      // A raw line end (LF, or CRLF from a CRLF document) is one LF byte. A
      // lone raw CR is never produced by encodeText; read literally.
      if (ch === '\r' && text[i + 1] !== '\n') {
        out.push(0x0d);
        i++;
        continue;
      }
      out.push(0x0a);
      i += ch === '\r' ? 2 : 1;
      line++;
      lineStart = i;
      continue;
    }
    if (ch === '\\') {
      const e = text[i + 1];
      if (e === '\\') out.push(0x5c);
      else if (e === 'r') out.push(0x0d);
      else if (e === 'n') out.push(0x0a);
      else if (e === 't') out.push(0x09);
      else if (e === '0') out.push(0x00);
      else if (e === 'x') {
        if (isHexDigit(text[i + 2]) && isHexDigit(text[i + 3])) {
          out.push(parseInt(text.slice(i + 2, i + 4), 16));
          i += 4;
          continue;
        }
        fail(i, Math.min(4, text.length - i), '\\x needs two hex digits (\\x00 to \\xff)');
        i += 2;
        continue;
      } else if (e === undefined || e === '\n' || e === '\r') {
        fail(i, 1, 'a lone backslash at the end of a line: write \\\\ for a backslash');
        i += 1;
        continue;
      } else {
        fail(i, 2, `unknown escape \\${e}: write \\\\ for a backslash, or \\xHH for any byte`);
        i += 2;
        continue;
      }
      i += 2;
      continue;
    }
    const cp = text.codePointAt(i)!;
    if (cp >= 0xd800 && cp <= 0xdfff) {
      // A lone surrogate has no UTF-8 form: refusing beats guessing U+FFFD.
      fail(i, 1, `lone UTF-16 surrogate U+${cp.toString(16).toUpperCase()}: it has no bytes; use \\xHH`);
      i++;
      continue;
    }
    pushUtf8(out, cp);
    i += cp > 0xffff ? 2 : 1;
  }
  return errors.length ? { ok: false, errors } : { ok: true, bytes: Uint8Array.from(out) };
}

/** Bytes per hex dump line. */
export const HEX_BYTES_PER_LINE = 16;

/** Payload bytes as `00000000: 47 45 54 20 ... |GET ...|` lines (LF-separated, no final LF). */
export function encodeHex(bytes: Uint8Array): string {
  const lines: string[] = [];
  const width = bytes.length > 0xffffffff ? 16 : 8;
  for (let off = 0; off < bytes.length; off += HEX_BYTES_PER_LINE) {
    const row = bytes.subarray(off, off + HEX_BYTES_PER_LINE);
    let hexPart = '';
    let ascii = '';
    for (let k = 0; k < HEX_BYTES_PER_LINE; k++) {
      if (k === 8) hexPart += ' ';
      if (k < row.length) {
        hexPart += hex2(row[k]) + ' ';
        // Printable ASCII only: the gutter is never a place for hostile text.
        ascii += row[k] >= 0x20 && row[k] < 0x7f ? String.fromCharCode(row[k]) : '.';
      } else hexPart += '   ';
    }
    lines.push(`${off.toString(16).padStart(width, '0')}: ${hexPart} |${ascii}|`);
  }
  return lines.join('\n');
}

/** The bytes of a hex dump, or every error with its line and column. */
export function decodeHex(text: string): PayloadDecodeResult {
  const out: number[] = [];
  const errors: PayloadSyntaxError[] = [];
  const lines = text.split('\n');
  for (let line = 0; line < lines.length; line++) {
    let s = lines[line];
    if (s.endsWith('\r')) s = s.slice(0, -1);
    const gutter = s.indexOf('|');
    if (gutter >= 0) s = s.slice(0, gutter);
    let col = 0;
    const offset = /^\s*[0-9a-fA-F]+:/.exec(s);
    if (offset) col = offset[0].length;
    const tokens = /\S+/g;
    tokens.lastIndex = col;
    for (let m = tokens.exec(s); m; m = tokens.exec(s)) {
      if (/^[0-9a-fA-F]{2}$/.test(m[0])) {
        out.push(parseInt(m[0], 16));
        continue;
      }
      if (errors.length < MAX_ERRORS) {
        const shown = m[0].length > 12 ? `${m[0].slice(0, 12)}…` : m[0];
        errors.push({
          line,
          column: m.index,
          length: m[0].length,
          message: `"${shown}" is not a byte: write two hex digits (00 to ff) per byte, separated by spaces; the ASCII column starts with |`,
        });
      }
    }
  }
  return errors.length ? { ok: false, errors } : { ok: true, bytes: Uint8Array.from(out) };
}

export const textCodec: PayloadCodec = { kind: 'text', encode: encodeText, decode: decodeText };
export const hexCodec: PayloadCodec = { kind: 'hex', encode: encodeHex, decode: decodeHex };

export function codecFor(kind: 'text' | 'hex'): PayloadCodec {
  return kind === 'text' ? textCodec : hexCodec;
}

/** "line 3, column 14: ..." (1-based, as editors show positions). */
export function formatSyntaxError(e: PayloadSyntaxError): string {
  return `line ${e.line + 1}, column ${e.column + 1}: ${e.message}`;
}

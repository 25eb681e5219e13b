// How `nke show` prints a held chunk and how `nke verdict|stage --hex` reads
// an edit back. Payload bytes are hostile: nothing but printable ASCII
// reaches the terminal unescaped.
//   hex dump  `offset: hh hh ... |ascii|`, 16 bytes a line; on reading, the
//             offset and the ASCII gutter are ignored, so bytes are inserted
//             or deleted by editing the hex, and a bad token is an error
//             naming its line, never a guess.
//   text      printable ASCII and LF as they are; `\\` for a backslash,
//             `\xHH` for every other byte.

const BYTES_PER_LINE = 16;

export function encodeHexDump(bytes: Uint8Array): string {
  const lines: string[] = [];
  for (let off = 0; off < bytes.length; off += BYTES_PER_LINE) {
    const row = bytes.subarray(off, off + BYTES_PER_LINE);
    let hex = '';
    let ascii = '';
    for (let k = 0; k < BYTES_PER_LINE; k++) {
      if (k === 8) hex += ' ';
      if (k < row.length) {
        hex += `${row[k].toString(16).padStart(2, '0')} `;
        ascii += row[k] >= 0x20 && row[k] < 0x7f ? String.fromCharCode(row[k]) : '.';
      } else hex += '   ';
    }
    lines.push(`${off.toString(16).padStart(8, '0')}: ${hex} |${ascii}|`);
  }
  return lines.join('\n');
}

export class HexDumpError extends Error {}

/** The bytes of a hex dump (offsets and ASCII gutters ignored); throws HexDumpError naming the line. */
export function decodeHexDump(text: string): Buffer {
  const out: number[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const bar = raw.indexOf('|');
    let line = bar >= 0 ? raw.slice(0, bar) : raw;
    line = line.replace(/^\s*[0-9a-fA-F]+:/, '');
    for (const tok of line.trim().split(/\s+/)) {
      if (!tok) continue;
      if (!/^[0-9a-fA-F]{2}$/.test(tok)) {
        throw new HexDumpError(
          `line ${i + 1}: "${tok.slice(0, 20)}" is not a byte (two hex digits); the offset before ":" and the text after "|" are ignored`,
        );
      }
      out.push(parseInt(tok, 16));
    }
  });
  return Buffer.from(out);
}

/** Bytes as escaped text: safe on a terminal, readable where the bytes are text. */
export function encodeEscapedText(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) {
    if (b === 0x5c) s += '\\\\';
    else if (b === 0x0a || (b >= 0x20 && b < 0x7f)) s += String.fromCharCode(b);
    else s += `\\x${b.toString(16).padStart(2, '0')}`;
  }
  return s;
}

// The payload documents' two codecs (extension/src/shared/payloadCodecs.ts):
// every byte string survives text -> bytes and hex -> bytes exactly, what an
// editor would hide or rewrite never appears raw, and a bad line is an error
// at its exact line and column.
import { strict as assert } from 'node:assert';
import {
  decodeHex,
  decodeText,
  encodeHex,
  encodeText,
  formatSyntaxError,
  type PayloadDecodeResult,
} from '../../extension/src/shared/payloadCodecs';

const bytes = (...b: number[]) => Uint8Array.from(b);
const utf8 = (s: string) => new TextEncoder().encode(s);

function decoded(r: PayloadDecodeResult): Uint8Array {
  if (!r.ok) assert.fail(`decode failed: ${r.errors.map(formatSyntaxError).join('; ')}`);
  return r.bytes;
}

function roundTrips(b: Uint8Array, what: string): void {
  const text = encodeText(b);
  assert.deepEqual(decoded(decodeText(text)), b, `text round trip of ${what}: ${JSON.stringify(text)}`);
  // An editor with CRLF line ends hands back CRLF: still the same bytes.
  assert.deepEqual(decoded(decodeText(text.replace(/\n/g, '\r\n'))), b, `CRLF text round trip of ${what}`);
  const hex = encodeHex(b);
  assert.deepEqual(decoded(decodeHex(hex)), b, `hex round trip of ${what}`);
  assert.deepEqual(decoded(decodeHex(hex.replace(/\n/g, '\r\n'))), b, `CRLF hex round trip of ${what}`);
}

/** What the text form must never contain raw: an editor would change or hide it. */
function assertEditorSafe(text: string, what: string): void {
  assert.ok(!text.includes('\r'), `raw CR in the text form of ${what}`);
  assert.ok(!/[ \t](\n|$)/.test(text), `raw space/tab at a line end in the text form of ${what}`);
  // C0 (but tab and LF), DEL, C1, bidi/zero-width/format characters, line and
  // paragraph separators, BOM, lone surrogates.
  const hidden =
    /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff0-\ufffb\ud800-\udfff]/u;
  assert.ok(!hidden.test(text), `a hidden character in ${what}: ${JSON.stringify(text)}`);
}

/** A deterministic generator (xorshift), so a failure reproduces. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}

describe('payload codecs: text and hex forms of held bytes', () => {
  it('all 256 byte values in one payload round-trip through both forms', () => {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    roundTrips(all, 'bytes 0..255');
    assertEditorSafe(encodeText(all), 'bytes 0..255');
    const reversed = Uint8Array.from(all).reverse();
    roundTrips(reversed, 'bytes 255..0');
  });

  it('every single byte, and every byte between two letters, round-trips', () => {
    for (let b = 0; b < 256; b++) {
      roundTrips(bytes(b), `byte ${b}`);
      roundTrips(bytes(0x61, b, 0x62), `a, byte ${b}, b`);
      assertEditorSafe(encodeText(bytes(0x61, b, 0x20)), `a, byte ${b}, space`);
    }
  });

  it('NUL, CR, LF, CRLF and lone CR round-trip; LF is a line break, CR an escape', () => {
    const http = utf8('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal(encodeText(http), 'GET / HTTP/1.1\\r\nHost: x\\r\n\\r\n');
    roundTrips(http, 'an HTTP request');
    for (const b of [
      bytes(0),
      bytes(0, 0, 0),
      bytes(13),
      bytes(10),
      bytes(13, 10),
      bytes(10, 13),
      bytes(13, 13, 10, 10),
    ]) {
      roundTrips(b, JSON.stringify([...b]));
    }
    assert.equal(encodeText(bytes(0, 10, 0)), '\\x00\n\\x00');
  });

  it('the escape character itself, and text that looks like an escape, round-trip', () => {
    assert.equal(encodeText(utf8('a\\b')), 'a\\\\b');
    for (const s of ['\\', '\\\\', '\\x41', '\\n', '\\r', 'C:\\temp\\new', '\\\n', 'x\\']) {
      roundTrips(utf8(s), JSON.stringify(s));
    }
    assert.deepEqual(decoded(decodeText('\\x41\\n\\0\\t')), bytes(0x41, 0x0a, 0, 9));
  });

  it('invalid UTF-8 becomes \\xHH escapes and round-trips (truncated, overlong, surrogates, > U+10FFFF)', () => {
    const cases: [number[], string][] = [
      [[0x80], '\\x80'],
      [[0xc3], '\\xc3'],
      [[0xc3, 0x28], '\\xc3('],
      [[0xc0, 0x80], '\\xc0\\x80'],
      [[0xe0, 0x80, 0x80], '\\xe0\\x80\\x80'],
      [[0xed, 0xa0, 0x80], '\\xed\\xa0\\x80'],
      [[0xf4, 0x90, 0x80, 0x80], '\\xf4\\x90\\x80\\x80'],
      [[0xf5, 0x80, 0x80, 0x80], '\\xf5\\x80\\x80\\x80'],
      [[0xe2, 0x82], '\\xe2\\x82'],
      [[0xff, 0xfe], '\\xff\\xfe'],
    ];
    for (const [b, text] of cases) {
      assert.equal(encodeText(Uint8Array.from(b)), text);
      roundTrips(Uint8Array.from(b), text);
    }
  });

  it('valid UTF-8 is shown as it is; what an editor hides or rewrites is escaped', () => {
    assert.equal(encodeText(utf8('héllo wörld ✓ 日本 😀\ttab')), 'héllo wörld ✓ 日本 😀\ttab');
    // BOM at the start (an editor would drop it), bidi override, zero-width
    // space, line separator, NEL, DEL.
    assert.equal(encodeText(utf8('\ufeffa')), '\\xef\\xbb\\xbfa');
    assert.equal(encodeText(utf8('x\u202ey')), 'x\\xe2\\x80\\xaey');
    assert.equal(encodeText(utf8('x\u200by')), 'x\\xe2\\x80\\x8by');
    assert.equal(encodeText(utf8('x\u2028y')), 'x\\xe2\\x80\\xa8y');
    assert.equal(encodeText(utf8('x\u0085y')), 'x\\xc2\\x85y');
    assert.equal(encodeText(bytes(0x7f)), '\\x7f');
    // A space or tab before a line end survives "trim trailing whitespace".
    assert.equal(encodeText(utf8('a \nb\t\nc ')), 'a\\x20\nb\\t\nc\\x20');
    assert.equal(encodeText(utf8('a  b')), 'a  b');
  });

  it('random byte strings round-trip through both forms (fuzz, 3000 cases)', () => {
    const r = rng(0x5eed);
    const pieces = [
      () => Math.floor(r() * 256),
      () => 0x5c,
      () => 0x0a,
      () => 0x0d,
      () => 0x20,
      () => 0x09,
      () => 0x78,
    ];
    for (let n = 0; n < 3000; n++) {
      const len = Math.floor(r() * (n % 10 === 0 ? 600 : 40));
      const out: number[] = [];
      while (out.length < len) {
        const pick = r();
        if (pick < 0.5) out.push(pieces[Math.floor(r() * pieces.length)]());
        else if (pick < 0.8) out.push(0x20 + Math.floor(r() * 95));
        else out.push(...utf8(String.fromCodePoint((Math.floor(r() * 0x10ffff) & ~0x800) | 0x80)));
      }
      const b = Uint8Array.from(out.slice(0, len));
      const text = encodeText(b);
      assert.deepEqual(decoded(decodeText(text)), b, `case ${n}: ${JSON.stringify([...b])}`);
      assertEditorSafe(text, `case ${n}`);
      assert.deepEqual(decoded(decodeHex(encodeHex(b))), b, `hex case ${n}`);
    }
  });

  it('a bad escape is an error at its line and column; nothing is guessed', () => {
    const r = decodeText('first line\nsecond \\q here\nthird \\x4g\nlast \\');
    assert.ok(!r.ok);
    assert.deepEqual(
      r.errors.map((e) => [e.line, e.column, e.length]),
      [
        [1, 7, 2],
        [2, 6, 4],
        [3, 5, 1],
      ],
    );
    assert.match(formatSyntaxError(r.errors[0]), /^line 2, column 8: unknown escape \\q/);
    assert.match(r.errors[1].message, /\\x needs two hex digits/);
    assert.match(r.errors[2].message, /lone backslash/);
    const s = decodeText('ok \ud800 no');
    assert.ok(!s.ok);
    assert.deepEqual([s.errors[0].line, s.errors[0].column], [0, 3]);
    assert.match(s.errors[0].message, /lone UTF-16 surrogate U\+D800/);
  });

  it('hex dump lines: offset, 16 bytes in two groups, printable ASCII gutter', () => {
    const b = utf8('GET / HTTP/1.1\r\nHost: example\r\n');
    assert.equal(
      encodeHex(b),
      '00000000: 47 45 54 20 2f 20 48 54  54 50 2f 31 2e 31 0d 0a  |GET / HTTP/1.1..|\n' +
        '00000010: 48 6f 73 74 3a 20 65 78  61 6d 70 6c 65 0d 0a     |Host: example..|',
    );
    assert.equal(encodeHex(new Uint8Array(0)), '');
    assert.deepEqual(decoded(decodeHex('')), new Uint8Array(0));
    // hostile bytes never reach the gutter raw
    assert.equal(
      encodeHex(utf8('\u202e|')),
      '00000000: e2 80 ae 7c                                       |...||',
    );
  });

  it('hex: offsets and the gutter are ignored, so bytes are inserted and deleted by editing lines', () => {
    const dump = encodeHex(utf8('abcdefghijklmnopqrstuvwxyz'));
    const lines = dump.split('\n');
    // delete "b", insert two bytes on a line of their own (no offset), keep a blank line
    const edited = [lines[0].replace(' 62 ', ' '), '21 21', '', lines[1]].join('\n');
    assert.equal(Buffer.from(decoded(decodeHex(edited))).toString(), 'acdefghijklmnop!!qrstuvwxyz');
    // a stale offset and a wrong gutter change nothing
    assert.deepEqual(decoded(decodeHex('ffff0000: 41 42 |not what it says|')), utf8('AB'));
    assert.deepEqual(decoded(decodeHex('41 42 43')), utf8('ABC'));
  });

  it('hex: a bad token is an error at its exact line and column', () => {
    const r = decodeHex('00000000: 41 42\n00000010: 41 4g 42 |AgB|\n5 7c\n00000020: 41 tail-without-bar');
    assert.ok(!r.ok);
    assert.deepEqual(
      r.errors.map((e) => [e.line, e.column, e.length]),
      [
        [1, 13, 2],
        [2, 0, 1],
        [3, 13, 16],
      ],
    );
    assert.match(
      formatSyntaxError(r.errors[0]),
      /^line 2, column 14: "4g" is not a byte: write two hex digits/,
    );
  });
});

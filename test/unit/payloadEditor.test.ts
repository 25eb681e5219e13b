// The payload editor's pure parts, as the webview runs them: the byte diff
// against the original, search patterns, the data inspector, splices.
import * as assert from 'node:assert/strict';
import { applySplice, inverseSplice, spliceError } from '../../extension/src/shared/payloadEditorProtocol';
import { diffBytes, Mark } from '../../webview/src/byteDiff';
import { countMatches, findMatch, parsePattern } from '../../webview/src/byteSearch';
import { countdownFrom, countdownText } from '../../webview/src/countdown';
import { bytesFromPaste } from '../../webview/src/hexGrid';
import { inspect } from '../../webview/src/inspector';
import { spliceBetween } from '../../webview/src/textPane';

const b = (s: string) => new TextEncoder().encode(s);

describe('payload editor: diff against the original', () => {
  it('marks 10 inserted and 3 deleted bytes and nothing else', () => {
    const d = diffBytes(b('abcdefghijklmnopqrstuvwxyz'), b('ab0123456789cdefghijklmnostuvwxyz'));
    assert.equal(d.inserted, 10);
    assert.equal(d.deleted, 3);
    assert.equal(d.changed, 0);
    assert.deepEqual([...d.marks.slice(2, 12)], new Array(10).fill(Mark.Inserted));
    assert.deepEqual([...d.deletions], [[25, 3]]);
  });
  it('pairs a replaced run into changed bytes, the surplus deleted', () => {
    const d = diffBytes(b('GET /a'), b('PUT /'));
    assert.equal(d.changed, 2); // G->P, E->U
    assert.equal(d.deleted, 1);
    assert.equal(d.inserted, 0);
  });
  it('is empty for equal bytes, and bounded for a wholesale rewrite of 1 MiB', () => {
    assert.equal(diffBytes(b('same'), b('same')).changed, 0);
    const a = new Uint8Array(1 << 20).map((_, i) => i * 7);
    const z = new Uint8Array((1 << 20) + 5).map((_, i) => i * 13 + 1);
    const t0 = Date.now();
    const d = diffBytes(a, z);
    assert.ok(Date.now() - t0 < 5000);
    assert.equal(d.changed + d.inserted, z.length);
    assert.equal(d.changed + d.deleted, a.length);
  });
});

describe('payload editor: search', () => {
  it('finds hex with ?? wildcards, next and previous, wrapping', () => {
    const hay = Uint8Array.of(0xff, 1, 0x0a, 0, 0xff, 2, 0x0a);
    const p = parsePattern('FF ?? 0A', 'hex');
    assert.ok(p.ok);
    if (!p.ok) return;
    assert.equal(findMatch(hay, p.pattern, 0), 0);
    assert.equal(findMatch(hay, p.pattern, 1), 4);
    assert.equal(findMatch(hay, p.pattern, 5), 0);
    assert.equal(findMatch(hay, p.pattern, 4, true), 0);
    assert.equal(countMatches(hay, p.pattern), 2);
  });
  it('names what is wrong with a hex pattern', () => {
    assert.deepEqual(parsePattern('F', 'hex'), { ok: false, error: '"F" has an odd number of hex digits' });
    assert.equal(parsePattern('zz', 'hex').ok, false);
    const t = parsePattern('é', 'text');
    assert.ok(t.ok && t.pattern.length === 2);
  });
});

describe('payload editor: data inspector', () => {
  it('reads integers of every width, both byte orders, and UTF-8', () => {
    const bytes = Uint8Array.of(0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x41);
    const rows = Object.fromEntries(inspect(bytes, 0, 2).map((r) => [r.label, r.value]));
    assert.equal(rows['uint8'], '254');
    assert.equal(rows['int8'], '-2');
    assert.equal(rows['uint16 LE'], '65534');
    assert.equal(rows['uint16 BE'], '65279');
    assert.equal(rows['int32 LE'], '-2');
    assert.equal(rows['int64 LE'], '-2');
    assert.equal(rows['uint64 LE'], '18446744073709551614');
    const end = Object.fromEntries(inspect(bytes, 8, 1).map((r) => [r.label, r.value]));
    assert.equal(end['uint16 LE'], 'not enough bytes');
    assert.equal(end['UTF-8'], '"A"');
  });
});

describe('payload editor: splices and paste', () => {
  it('applies and inverts a splice, and refuses one that does not fit', () => {
    const before = b('hello world');
    const s = { offset: 6, deleteCount: 5, insert: b('there!') };
    const after = applySplice(before, s);
    assert.equal(new TextDecoder().decode(after), 'hello there!');
    assert.deepEqual(applySplice(after, inverseSplice(before, s)), before);
    assert.match(spliceError(3, { offset: 2, deleteCount: 2, insert: b('') })!, /does not fit 3 bytes/);
  });
  it('the text pane sends only the bytes between the common prefix and suffix', () => {
    assert.deepEqual(spliceBetween(b('GET /original HTTP'), b('GET /edited HTTP')), {
      offset: 5,
      deleteCount: 8,
      insert: b('edited'),
    });
  });
  it('pasted hex pairs are bytes in the hex pane, anything else its UTF-8', () => {
    assert.deepEqual(bytesFromPaste('47 45 54', true), Uint8Array.of(0x47, 0x45, 0x54));
    assert.deepEqual(bytesFromPaste('47 45 54', false), b('47 45 54'));
    assert.deepEqual(bytesFromPaste('GET', true), b('GET'));
  });
});

describe('payload editor: the header countdown runs on the extension clock', () => {
  it('shows the time left the extension computed, whatever the webview clock says', () => {
    const extensionNow = 1_700_000_000_000;
    const webviewNow = extensionNow - 3_600_000; // the webview's clock an hour behind
    const c = countdownFrom(
      { kind: 'held', deadline: extensionNow + 5000, keptUntil: extensionNow + 70_000, now: extensionNow },
      webviewNow,
    );
    assert.equal(countdownText(c, webviewNow), '5.0 s left · kept held while open, up to 70 s');
    assert.equal(countdownText(c, webviewNow + 2000), '3.0 s left · kept held while open, up to 68 s');
    assert.equal(countdownText(c, webviewNow + 80_000), '0.0 s left');
  });
  it('says nothing of keeping when no editor keeps it past the deadline', () => {
    const c = countdownFrom({ kind: 'held', deadline: 10_000, now: 4_000 }, 9_999_000);
    assert.equal(countdownText(c, 9_999_500), '5.5 s left');
  });
});

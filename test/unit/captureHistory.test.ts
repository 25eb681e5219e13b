// The capture history's index and ring (extension/src/helper/captureHistory.ts)
// and its export: gaps (reported by the filter, and jumps the helper sees in
// the stream offsets) become holes Wireshark flags; the oldest entries go
// first when the ring or the index is full; held chunks keep their place
// until their verdict. Bytes are written to the ring as the addon does (at
// the head, wrapping: test/helper/ringWriter.ts); read back by the real tshark.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { exportToFile } from '../../extension/src/helper/captureExport';
import { CaptureHistory, Fate } from '../../extension/src/helper/captureHistory';
import { RingWriter } from '../helper/ringWriter';

const tshark = (args: string[]) => {
  const r = spawnSync('tshark', args, { encoding: 'utf8' });
  if (r.error) {
    throw new Error(`cannot run tshark (bash scripts/setup-system.sh installs it): ${r.error.message}`);
  }
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
};

const LOCAL = { family: 4 as const, addr: Uint8Array.from([127, 0, 0, 1]), port: 40000 };
const REMOTE = { family: 4 as const, addr: Uint8Array.from([127, 0, 0, 1]), port: 8080 };
const OUT = 2;
const IN = 1;

describe('capture history', function () {
  this.timeout(60000);
  let dir: string;
  let h: CaptureHistory | undefined;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nke-history-test-'));
  });
  afterEach(() => {
    h?.dispose();
    h = undefined;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** A history with a writer attached and one connected TCP socket "1:1" of curl. */
  function open(limitBytes: number, maxEntries?: number): { h: CaptureHistory; w: RingWriter } {
    h = new CaptureHistory({ limitBytes, parentDir: dir, maxEntries });
    const w = new RingWriter(h.spillTarget());
    h.attachWriter(w);
    h.socketAttached('1:1', { pid: 42, process: 'curl', family: 4, protocol: 'tcp' });
    h.socketAddrs('1:1', LOCAL, REMOTE, 'local', 1_000_000);
    return { h, w };
  }

  let chunk = 1n;
  function data(
    hist: CaptureHistory,
    w: RingWriter,
    dir2: number,
    offset: number,
    bytes: string,
    held = false,
  ) {
    const b = Buffer.from(bytes);
    const id = chunk++;
    hist.data(
      '1:1',
      { chunkId: id, direction: dir2, flags: 0, streamOffset: offset, size: b.length, held },
      w.captureWrite(b),
      2_000_000 + Number(id),
    );
    hist.flush();
    return id;
  }

  it('the spill file is unlinked at once and its private directory is 0700', () => {
    const { h: hist } = open(4096);
    const [sub] = fs.readdirSync(dir);
    assert.equal(fs.statSync(path.join(dir, sub)).mode & 0o777, 0o700);
    assert.deepEqual(fs.readdirSync(path.join(dir, sub)), []);
    hist.dispose();
    h = undefined;
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  it('gaps the filter reports and jumps in the stream offsets become holes Wireshark flags', async () => {
    const { h: hist, w } = open(1 << 20);
    data(hist, w, OUT, 0, 'GET / HTTP/1.0\r\n\r\n');
    data(hist, w, IN, 0, 'HTTP/1.0 200 OK\r\n\r\n');
    hist.gap('1:1', IN, 19, 1000, 0, 1, 3_000_000); // NKE_GAP_NO_BUFFER
    data(hist, w, IN, 1019, 'after the reported gap');
    data(hist, w, IN, 1041 + 500, 'after a jump the helper saw');
    hist.socketClosed('1:1', 4_000_000);
    hist.flush();
    assert.deepEqual(
      { gaps: hist.status().gaps, gapBytes: hist.status().gapBytes },
      { gaps: 2, gapBytes: 1500 },
    );
    const file = path.join(dir, 'gaps.pcapng');
    const r = await exportToFile(hist, file, { tool: 'test', transport: 'test' });
    assert.equal(r.gaps, 2);
    const expert = tshark(['-r', file, '-q', '-z', 'expert']);
    assert.doesNotMatch(expert, /Errors \(/);
    assert.match(expert, /Previous segment\(s\) not captured/);
    const comments = tshark(['-r', file, '-T', 'fields', '-e', 'frame.comment']);
    assert.match(
      comments,
      /\[1000 bytes before this passed by the filter without a report: no free buffer \(fail-open\)\]/,
    );
    assert.match(comments, /\[500 bytes before this not reported to this helper/);
    const follow = tshark(['-r', file, '-q', '-z', 'follow,tcp,ascii,0']);
    assert.match(follow, /1000 bytes missing in capture file/);
    assert.match(follow, /500 bytes missing in capture file/);
  });

  it('oldest out: a full ring evicts the entries it overwrote; the export starts with a hole there', async () => {
    const { h: hist, w } = open(1000);
    for (let i = 0; i < 20; i++) data(hist, w, OUT, i * 100, String(i % 10).repeat(100));
    const st = hist.status();
    assert.equal(st.bytesKept, 1000);
    assert.ok(st.evicted >= 10, `evicted ${st.evicted}`);
    // What is left is the newest bytes and nothing overwritten.
    const file = path.join(dir, 'ring.pcapng');
    await exportToFile(hist, file, { tool: 'test', transport: 'test' });
    const raw = tshark(['-r', file, '-q', '-z', 'follow,tcp,raw,0']);
    const hex = raw
      .split('\n')
      .filter((l) => /^[0-9a-f]+$/.test(l))
      .join('');
    // Follow marks the hole in front ("[N bytes missing in capture file]"), then the newest bytes.
    const m = /^\[(\d+) bytes missing in capture file\]\0?([^]*)$/.exec(Buffer.from(hex, 'hex').toString());
    assert.ok(m, `a hole in front: ${hex.slice(0, 80)}`);
    const kept = m[2];
    assert.ok(kept.length > 0 && kept.length <= 1000, `kept ${kept.length}`);
    assert.equal(Number(m[1]) + kept.length, 2000, 'hole + kept = everything sent');
    const want = [...Array(20).keys()].map((i) => String(i % 10).repeat(100)).join('');
    assert.ok(want.endsWith(kept), 'what is kept is the newest bytes');
    assert.match(tshark(['-r', file, '-q', '-z', 'expert']), /Previous segment\(s\) not captured/);
  });

  it('a full index evicts its oldest entries too; a held chunk evicted before its verdict is forgotten', () => {
    const { h: hist, w } = open(1 << 20, 4);
    const held = data(hist, w, OUT, 0, 'held', true);
    assert.ok(hist.isPending(held));
    for (let i = 0; i < 6; i++) data(hist, w, IN, i, 'x');
    assert.equal(hist.status().entries, 4);
    assert.equal(hist.isPending(held), false);
    hist.decide(held, Fate.Allowed, 5); // late verdict on an evicted chunk: nothing happens
    assert.equal(hist.nextEntry - hist.firstEntry, 4);
  });

  it('edits keep both: the bytes sent and the original, each read back from the ring', () => {
    const { h: hist, w } = open(1 << 20);
    const id = data(hist, w, OUT, 0, 'original', true);
    hist.decide(id, Fate.Edited, 9_000_000, Buffer.from('the edited, longer bytes'));
    const e = hist.entry(hist.nextEntry - 1)!;
    assert.equal(e.fate, Fate.Edited);
    assert.equal(hist.read(e.dataAt, e.size)!.toString(), 'original');
    assert.equal(hist.read(e.editAt, e.editLen)!.toString(), 'the edited, longer bytes');
    assert.equal(e.fateUs, 9_000_000);
  });

  it('a failed export leaves the existing file as it was', async () => {
    const { h: hist, w } = open(4096);
    data(hist, w, OUT, 0, 'x');
    const file = path.join(dir, 'keep.pcapng');
    fs.writeFileSync(file, 'precious');
    await assert.rejects(
      exportToFile(hist, path.join(dir, 'no-such-dir', 'x.pcapng'), { tool: 't', transport: 't' }),
      /cannot create .*no-such-dir/,
    );
    await assert.rejects(
      exportToFile(hist, 'relative.pcapng', { tool: 't', transport: 't' }),
      /absolute path/,
    );
    assert.equal(fs.readFileSync(file, 'utf8'), 'precious');
  });
});

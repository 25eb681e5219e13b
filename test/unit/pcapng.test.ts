// The pcapng writer and the synthesized conversations, read back by the
// real tshark: block framing, checksums (validated), sequence numbers across
// a gap ("previous segment not captured"), the 32-bit wrap, large chunks in
// segments, not-sent bytes outside the TCP stream, UDP over IPv6.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import {
  initialSequence,
  TcpConversation,
  UdpFlow,
  type Frame,
} from '../../extension/src/capture/conversation';
import { finishChecksum, onesSum } from '../../extension/src/capture/packets';
import {
  enhancedPacketBlock,
  LINKTYPE_ETHERNET,
  PcapngWriter,
  sectionHeaderBlock,
} from '../../extension/src/capture/pcapng';

function tshark(args: string[]): string {
  const r = spawnSync('tshark', args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.error) {
    throw new Error(`cannot run tshark (bash scripts/setup-system.sh installs it): ${r.error.message}`);
  }
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

const CHECKSUMS = [
  '-o',
  'ip.check_checksum:TRUE',
  '-o',
  'tcp.check_checksum:TRUE',
  '-o',
  'udp.check_checksum:TRUE',
];

const v4 = (port: number, last = 1) => ({
  family: 4 as const,
  addr: Uint8Array.from([10, 0, 0, last]),
  port,
});
const v6 = (port: number, last = 1) => ({
  family: 6 as const,
  addr: Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), last]),
  port,
});

/** Writes frames (interface 0 = IPv4, 1 = IPv6) to a temp file; returns its path. */
async function capture(frames: [number, Frame][]): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nke-pcapng-test-'));
  const file = path.join(dir, 't.pcapng');
  const out: Buffer[] = [];
  const w = new PcapngWriter(async (pieces) => void out.push(...pieces), 4096);
  w.begin({ os: 'Test OS', userAppl: 'pcapng.test' }, [
    { linkType: LINKTYPE_ETHERNET, name: 'nke-ipv4' },
    { linkType: LINKTYPE_ETHERNET, name: 'nke-ipv6' },
  ]);
  for (const [iface, f] of frames) {
    w.packet({
      interfaceId: iface,
      timeUs: f.timeUs,
      frame: f.frame,
      comment: f.comment,
      direction: f.direction,
    });
    await w.maybeFlush();
  }
  await w.flush();
  fs.writeFileSync(file, Buffer.concat(out));
  return file;
}

const on = (iface: number, frames: Frame[]) => frames.map((f) => [iface, f] as [number, Frame]);
const lines = (s: string) => s.split('\n').filter(Boolean);

describe('pcapng: blocks', () => {
  it('a section header is 4-byte aligned, names the OS and the tool, and repeats its length at the end', () => {
    const b = sectionHeaderBlock({ os: 'Linux 6.1', userAppl: 'NKE Workbench', comment: 'ü' });
    assert.equal(b.length % 4, 0);
    assert.equal(b.readUInt32LE(0), 0x0a0d0d0a);
    assert.equal(b.readUInt32LE(4), b.length);
    assert.equal(b.readUInt32LE(b.length - 4), b.length);
    assert.equal(b.readUInt32LE(8), 0x1a2b3c4d);
    assert.ok(b.includes('Linux 6.1') && b.includes('NKE Workbench') && b.includes(Buffer.from('ü')));
  });

  it('an enhanced packet block pads odd frames and keeps the payload Buffer as it is (no copy)', () => {
    const payload = Buffer.from('abc');
    const parts = enhancedPacketBlock({
      interfaceId: 1,
      timeUs: 2 ** 40 + 7,
      frame: [payload],
      comment: 'x',
    });
    assert.ok(parts.includes(payload));
    const b = Buffer.concat(parts);
    assert.equal(b.length % 4, 0);
    assert.equal(b.readUInt32LE(4), b.length);
    assert.equal(b.readUInt32LE(8), 1);
    assert.equal(b.readUInt32LE(12) * 2 ** 32 + b.readUInt32LE(16), 2 ** 40 + 7);
    assert.equal(b.readUInt32LE(20), 3);
  });

  it('the one complement sum carries an odd byte across pieces', () => {
    const whole = Buffer.from([1, 2, 3, 4, 5, 6, 7]);
    const split = [whole.subarray(0, 3), whole.subarray(3, 4), whole.subarray(4)];
    assert.equal(finishChecksum(onesSum(split)), finishChecksum(onesSum([whole])));
  });

  it('the word-at-a-time sum equals RFC 1071 byte pairs, at any alignment and split', () => {
    const naive = (b: Uint8Array) => {
      let s = 0;
      for (let i = 0; i < b.length; i += 2) s += (b[i] << 8) | (i + 1 < b.length ? b[i + 1] : 0);
      return finishChecksum(s);
    };
    let seed = 12345;
    const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
    for (let trial = 0; trial < 200; trial++) {
      const pool = Buffer.alloc(5000);
      for (let i = 0; i < pool.length; i++) pool[i] = Math.floor(rnd() * 256);
      const start = Math.floor(rnd() * 7);
      const bytes = pool.subarray(start, start + 100 + Math.floor(rnd() * 4000));
      const cut = Math.floor(rnd() * bytes.length);
      const pieces = [bytes.subarray(0, cut), bytes.subarray(cut)];
      assert.equal(finishChecksum(onesSum(pieces)), naive(bytes), `trial ${trial}`);
    }
  });
});

describe('pcapng: synthesized conversations read back by tshark', function () {
  this.timeout(60000); // each tshark run loads every dissector: seconds on a loaded machine
  it('handshake, data both ways, a gap, not-sent bytes, FIN: no expert errors, checksums valid, Follow is the delivered bytes', async () => {
    const t = 1_700_000_000_000_000;
    const c = new TcpConversation(v4(40000, 1), v4(8080, 2), 'local', 3);
    const frames = [
      ...c.open(t, 'open'),
      ...c.data('out', t + 1, Buffer.from('GET / HTTP/1.0\r\n\r\n'), 'request'),
      ...c.notSent('out', t + 2, Buffer.from('GET /original'), 'original, not sent'),
      ...c.data('in', t + 3, Buffer.from('HTTP/1.0 200 OK\r\n\r\nhel'), 'response'),
    ];
    c.skip('in', 4);
    frames.push(...c.data('in', t + 4, Buffer.from('world'), 'after the gap'), ...c.close(t + 5, 'close'));
    const file = await capture(on(0, frames));
    const expert = tshark(['-r', file, '-q', '-z', 'expert', ...CHECKSUMS]);
    assert.doesNotMatch(expert, /Errors \(/);
    assert.doesNotMatch(expert, /[Cc]hecksum/);
    assert.match(expert, /Previous segment\(s\) not captured/);
    const follow = tshark(['-r', file, '-q', '-z', 'follow,tcp,ascii,0']);
    assert.match(follow, /GET \/ HTTP\/1\.0/);
    assert.doesNotMatch(follow, /original/);
    assert.match(follow, /4 bytes missing in capture file/);
    const flags = lines(tshark(['-r', file, '-Y', 'tcp', '-T', 'fields', '-e', 'tcp.flags.str']));
    assert.equal(flags[0].replace(/·/g, '').trim(), 'S');
    assert.equal(flags.filter((f) => f.includes('F')).length, 2);
    const comments = lines(tshark(['-r', file, '-T', 'fields', '-e', 'frame.comment']));
    assert.equal(comments.length, frames.length);
  });

  it('sequence numbers wrap at 2^32 without a break in the stream', async () => {
    // Find a seed whose ISN is a few bytes below the wrap.
    let seed = 0;
    while (initialSequence(seed, 0) < 2 ** 32 - 100) seed++;
    const c = new TcpConversation(v4(1000), v4(2000, 2), 'local', seed);
    const frames = [...c.open(1, 'open')];
    for (let i = 0; i < 10; i++) frames.push(...c.data('out', 2 + i, Buffer.alloc(50, 65 + i), `chunk ${i}`));
    const file = await capture(on(0, frames));
    const expert = tshark(['-r', file, '-q', '-z', 'expert', ...CHECKSUMS]);
    assert.doesNotMatch(expert, /Errors \(|Warns \(/);
    const raw = tshark(['-r', file, '-q', '-z', 'follow,tcp,raw,0']);
    const sent = Buffer.concat([...Array(10).keys()].map((i) => Buffer.alloc(50, 65 + i))).toString('hex');
    const got = raw
      .split('\n')
      .filter((l) => /^[0-9a-f]+$/.test(l))
      .join('');
    assert.equal(got, sent, 'the 500 bytes, in order, across the wrap');
  });

  it('a 300 000-byte chunk goes out in segments that reassemble; an IPv6 TCP conversation too', async () => {
    const big = Buffer.alloc(300_000);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
    const c = new TcpConversation(v6(5000), v6(443, 2), 'remote', 9);
    const frames = [...c.open(1, 'open'), ...c.data('in', 2, big, 'big'), ...c.close(3, 'close')];
    assert.ok(frames.length >= 3 + 5 + 3);
    assert.match(frames[3].comment, /\[segment 1\/\d\]/);
    const file = await capture(on(1, frames));
    assert.doesNotMatch(tshark(['-r', file, '-q', '-z', 'expert', ...CHECKSUMS]), /Errors \(/);
    const raw = tshark(['-r', file, '-q', '-z', 'follow,tcp,raw,0']);
    const nodes = /Node 0: (.*)\n/.exec(raw)![1];
    assert.match(nodes, /:443$/, 'the remote end sent the SYN (an accepted connection)');
    // The remote end is node 0: its lines are the ones without a tab.
    const got = Buffer.from(
      raw
        .split('\n')
        .filter((l) => /^[0-9a-f]+$/.test(l))
        .join(''),
      'hex',
    );
    assert.equal(got.length, big.length);
    assert.ok(got.equals(big), 'the reassembled bytes are the chunk');
  });

  it('UDP over IPv6: one datagram each, a datagram to another peer, the not-sent one outside UDP', async () => {
    const u = new UdpFlow(v6(40001), v6(40053, 2));
    const frames = [
      u.datagram('out', 1, Buffer.from('query'), 'q'),
      u.datagram('in', 2, Buffer.from('answer'), 'a'),
      u.datagram('out', 3, Buffer.from('elsewhere'), 'e', v6(9999, 3)),
      ...u.notSent('out', 4, Buffer.from('dropped'), 'd'),
    ];
    const file = await capture(on(1, frames));
    assert.doesNotMatch(
      tshark(['-r', file, '-q', '-z', 'expert', ...CHECKSUMS, '-d', 'udp.port==40053,data']),
      /Errors \(/,
    );
    const got = lines(
      tshark([
        '-r',
        file,
        '-d',
        'udp.port==40053,data',
        '-T',
        'fields',
        '-e',
        'ipv6.dst',
        '-e',
        'udp.dstport',
        '-e',
        'udp.payload',
        '-e',
        'ipv6.nxt',
      ]),
    ).map((l) => l.split('\t'));
    assert.deepEqual(got, [
      ['2001:db8::2', '40053', Buffer.from('query').toString('hex'), '17'],
      ['2001:db8::1', '40001', Buffer.from('answer').toString('hex'), '17'],
      ['2001:db8::3', '9999', Buffer.from('elsewhere').toString('hex'), '17'],
      ['2001:db8::2', '', '', '253'],
    ]);
  });
});

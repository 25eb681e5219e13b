// What the filter saw, in Wireshark: real programs under the emulator, the
// helper's capture history exported as pcapng (`nke export` against the
// helper's control socket, and the engine's own export) and read back with
// the real tshark: Follow TCP Stream gives exactly the bytes the real server
// and the real client received (one request edited longer, one response
// chunk dropped), no malformed packets, comments naming the process and the
// verdicts; an IPv6 UDP exchange datagram for datagram.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { ControlServer } from '../../extension/src/helper/controlServer';
import { serveControl } from '../../extension/src/helper/controlServer';
import { FilterEngine } from '../../extension/src/helper/engine';
import type { PendingEntry } from '../../extension/src/helper/model';
import { makePrivateDir } from '../../extension/src/shared/tokenSocket';
import { closeRecordingServers, recordingServer, root, runUnder, useEmulator, waitFor } from './emu-support';
import { expertErrors, fields, followTcp } from './tshark';

const nke = path.join(root, 'dist/nke.js');

/** `nke ARGS` as a child (asynchronously: its helper is this very process). */
function runNke(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = spawn(process.execPath, [nke, ...args], { env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d) => (stdout += d));
  p.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve) => p.on('exit', (code) => resolve({ code, stdout, stderr })));
}

// The client: one request, then everything the server sends until it
// closes, printed as hex (what the client received, exactly).
const HTTP_CLIENT = [
  'python3',
  '-c',
  [
    'import socket,sys',
    's=socket.create_connection(("127.0.0.1",int(sys.argv[1])))',
    's.sendall(sys.argv[2].encode())',
    'got=b""',
    'while True:',
    ' d=s.recv(65536)',
    ' if not d: break',
    ' got+=d',
    'sys.stdout.write(got.hex())',
  ].join('\n'),
];

const REQUEST = 'GET /index.html HTTP/1.1\r\nHost: capture.test\r\n\r\n';
const EDITED = 'GET /index.html HTTP/1.1\r\nHost: capture.test\r\nX-Edited-By: nke-workbench\r\n\r\n';
const BODY_A = 'first half|';
const DROPPED = 'DROPPED-BY-THE-FILTER';
const BODY_B = 'second half';
const HEAD = `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${BODY_A.length + BODY_B.length}\r\nConnection: close\r\n\r\n`;

/**
 * A real HTTP server (not under the filter) that records what it received;
 * once a whole request is in, it answers in three writes 300 ms apart (so
 * they reach the client as three chunks): head + first half, a chunk the
 * test drops, the second half; then it closes. The Content-Length counts
 * only what the client will get.
 */
function httpServer(): Promise<{ port: number; received: () => Buffer; close: () => void }> {
  const got: Buffer[] = [];
  const server = net.createServer((sock) => {
    let answered = false;
    sock.on('data', (d) => {
      got.push(d);
      if (answered || !Buffer.concat(got).includes('\r\n\r\n')) return;
      answered = true;
      sock.write(HEAD + BODY_A);
      setTimeout(() => sock.write(DROPPED), 300);
      setTimeout(() => sock.end(BODY_B), 600);
    });
    sock.on('error', () => {});
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        port: (server.address() as net.AddressInfo).port,
        received: () => Buffer.concat(got),
        close: () => server.close(),
      }),
    ),
  );
}

describe('capture history exported as pcapng (tshark reads it back)', function () {
  this.timeout(90000);
  const emu = useEmulator(); // the addon in this process finds the same emulator
  let dir: string;
  let savedCliDir: string | undefined;
  let engine: FilterEngine;
  let control: ControlServer | undefined;
  before(() => {
    dir = makePrivateDir('nke-capture-test-');
    savedCliDir = process.env.NKE_CLI_DIR;
    process.env.NKE_CLI_DIR = path.join(dir, 'cli'); // this test's own control socket
  });
  after(() => {
    if (savedCliDir === undefined) delete process.env.NKE_CLI_DIR;
    else process.env.NKE_CLI_DIR = savedCliDir;
    fs.rmSync(dir, { recursive: true, force: true });
  });
  beforeEach(() => {
    engine = new FilterEngine({ captureHistoryBytes: 8 * 2 ** 20 });
  });
  afterEach(() => {
    control?.close();
    control = undefined;
    engine.dispose();
    closeRecordingServers();
  });

  it('an HTTP exchange with a request edited longer and a response chunk dropped: Follow TCP Stream is what each side received', async () => {
    const server = await httpServer();
    try {
      // Both directions of the client's socket to the server are held; the
      // test decides each chunk as it comes.
      engine.setRules({ default: 'report', intercept: [{ action: 'hold', remotePort: server.port }] });
      engine.connect();
      control = await serveControl(engine);
      const decided: string[] = [];
      engine.on('pending', (p: PendingEntry) => {
        const bytes = engine.getPayload(p.view.id).toString('latin1');
        if (p.view.direction === 'out' && bytes === REQUEST) {
          engine.verdict(p.view.id, 'replace', Buffer.from(EDITED));
          decided.push('edited request');
        } else if (p.view.direction === 'in' && bytes === DROPPED) {
          engine.verdict(p.view.id, 'drop');
          decided.push('dropped response chunk');
        } else {
          engine.verdict(p.view.id, 'allow');
          decided.push(`allowed ${p.view.direction} ${bytes.length}`);
        }
      });
      const client = runUnder(emu, [...HTTP_CLIENT, String(server.port), REQUEST]);
      const r = await client.done;
      assert.equal(r.code, 0, r.stderr);
      const clientGot = Buffer.from(r.stdout.trim(), 'hex');
      assert.equal(clientGot.toString(), HEAD + BODY_A + BODY_B, `decisions: ${decided.join(', ')}`);
      assert.equal(server.received().toString(), EDITED);
      assert.ok(
        decided.includes('edited request') && decided.includes('dropped response chunk'),
        decided.join(', '),
      );
      // The socket's detach (its FIN in the capture) reaches the history.
      await waitFor(() => engine.model.closedSockets.size > 0, 5000, 'the client socket to close');

      const file = path.join(dir, 'http.pcapng');
      const ex = await runNke(['export', '--pcapng', file]);
      assert.equal(ex.code, 0, ex.stderr);
      assert.match(ex.stderr, /wrote .*http\.pcapng: \d+ packets/);

      assert.equal(expertErrors(file), '', 'no expert errors (malformed packets) in the exported file');
      const streams = fields(file, `tcp.port == ${server.port}`, ['tcp.stream']).map((f) => Number(f[0]));
      assert.ok(streams.length > 0, 'the conversation is in the file');
      assert.ok(
        streams.every((s) => s === streams[0]),
        'one TCP conversation',
      );
      const follow = followTcp(file, streams[0]);
      // Node 0 is the client (it sent the SYN: the socket connected out).
      assert.match(follow.nodes[1], new RegExp(`:${server.port}$`));
      assert.equal(
        follow.sent[0].toString('latin1'),
        server.received().toString('latin1'),
        'client -> server',
      );
      assert.equal(follow.sent[1].toString('latin1'), clientGot.toString('latin1'), 'server -> client');

      const comments = fields(file, 'frame.comment', ['frame.comment']).map((f) => f.join(' '));
      assert.ok(comments.length > 0);
      assert.ok(
        comments.every((c) => /^python3 \(pid \d+\) socket \d+:\d+/.test(c)),
        `every comment names the process: ${comments.find((c) => !c.startsWith('python3'))}`,
      );
      assert.ok(comments.some((c) => /out: held, edited: the peer received these/.test(c)));
      assert.ok(comments.some((c) => /out: held, edited: ORIGINAL of \d+ bytes, not sent/.test(c)));
      assert.ok(comments.some((c) => /in: held, dropped: NOT DELIVERED/.test(c)));
      // The original request and the dropped chunk are in the file, outside the stream.
      const notSent = fields(file, 'ip.proto == 253', ['data.data']).map((f) =>
        Buffer.from(f[0], 'hex').toString(),
      );
      assert.deepEqual(notSent.sort(), [DROPPED, REQUEST].sort());
    } finally {
      server.close();
    }
  });

  it('a 1 MiB history under 3 MiB of traffic keeps the newest bytes exactly, every hole marked', async () => {
    engine.dispose();
    engine = new FilterEngine({ captureHistoryBytes: 2 ** 20 });
    engine.setRules({ default: 'report' });
    engine.connect();
    const server = await recordingServer();
    try {
      const total = 3 * 2 ** 20;
      const prog = runUnder(emu, [
        'python3',
        '-c',
        'import socket,sys\ns=socket.create_connection(("127.0.0.1",int(sys.argv[1])))\n' +
          'b=bytes(i*7%251 for i in range(65536))\nfor k in range(48): s.sendall(b[k%7:]+b[:k%7])\ns.close()',
        String(server.port),
      ]);
      assert.equal((await prog.done).code, 0);
      const sent = await server.whenBytes(total, 30000);
      await waitFor(() => engine.model.closedSockets.size > 0, 5000, 'the socket to close');
      const st = engine.snapshot().capture!;
      assert.equal(st.limitBytes, 2 ** 20);
      assert.ok(st.evicted > 0, 'the oldest chunks went');
      const file = path.join(dir, 'ring.pcapng');
      await engine.exportPcapng(file);
      assert.ok(
        fs.statSync(file).size < 1.2 * 2 ** 20,
        `the file holds about the ring: ${fs.statSync(file).size}`,
      );
      assert.equal(expertErrors(file), '');
      const stream = Number(fields(file, `tcp.port == ${server.port}`, ['tcp.stream'])[0][0]);
      // Follow TCP Stream: the evicted front is one hole; a loaded machine
      // may also have chunks the filter passed pool-full (fail-open), each a
      // hole where it was. Every byte Follow shows is the server's at that
      // offset.
      const out = followTcp(file, stream).sent[0].toString('latin1');
      const marker = /\[(\d+) bytes missing in capture file\]\0?/g;
      let at = 0;
      let shown = 0;
      let last = 0;
      const holes: number[] = [];
      const check = (end: number) => {
        const piece = Buffer.from(out.slice(last, end), 'latin1');
        assert.ok(piece.equals(sent.subarray(at, at + piece.length)), `the bytes at ${at} are the server's`);
        at += piece.length;
        shown += piece.length;
      };
      for (const m of out.matchAll(marker)) {
        check(m.index);
        holes.push(Number(m[1]));
        at += Number(m[1]);
        last = m.index + m[0].length;
      }
      check(out.length);
      assert.ok(holes.length > 0 && out.startsWith('['), 'Follow starts with the hole');
      assert.ok(shown > 0 && shown <= 2 ** 20, `kept ${shown}`);
      // A hole after the last data (chunks passed unreported at the end)
      // has no segment behind it in Follow: the FIN's sequence number counts
      // it, and the FIN's comment names it.
      const fin = fields(file, `tcp.dstport == ${server.port} && tcp.flags.fin == 1`, [
        'tcp.seq',
        'frame.comment',
      ])[0];
      assert.equal(Number(fin[0]) - 1, sent.length, 'the stream counts every byte the server received');
      if (at < sent.length) {
        assert.match(fin[1], /bytes before this .*passed by the filter without a report/, fin[1]);
      }
      const unreported = sent.length - shown - holes[0];
      assert.ok(
        unreported <= st.gapBytes,
        `holes behind the front (${unreported} bytes) are gaps the filter reported (${st.gapBytes})`,
      );
    } finally {
      server.close();
    }
  });

  it('an IPv6 UDP exchange exports and reads back datagram for datagram', async () => {
    const server = dgram.createSocket('udp6');
    const answers = new Map<string, string>();
    server.on('message', (m, from) => {
      const reply = `re:${m.toString()}`;
      answers.set(m.toString(), reply);
      server.send(reply, from.port, from.address);
    });
    await new Promise<void>((r) => server.bind(0, '::1', () => r()));
    const port = server.address().port;
    try {
      engine.setRules({ default: 'report' });
      engine.connect();
      const messages = ['one', 'two two', 'three three three', 'four'];
      const client = runUnder(emu, [
        'python3',
        '-c',
        [
          'import socket,sys',
          's=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)',
          's.bind(("::1",0))',
          'for m in sys.argv[2:]:',
          ' s.sendto(m.encode(),("::1",int(sys.argv[1])))',
          ' d,a=s.recvfrom(65536)',
          ' print(d.decode())',
        ].join('\n'),
        String(port),
        ...messages,
      ]);
      const r = await client.done;
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(
        r.stdout.trim().split('\n'),
        messages.map((m) => `re:${m}`),
      );
      await waitFor(
        () => (engine.model.counters.dataChunks ?? 0) >= 8,
        5000,
        'the 8 datagrams to be reported',
      );

      const file = path.join(dir, 'udp6.pcapng');
      const result = await engine.exportPcapng(file);
      assert.ok(result.packets >= 8);
      assert.equal(expertErrors(file), '');
      const got = fields(file, `udp.port == ${port}`, ['ipv6.src', 'ipv6.dst', 'udp.dstport', 'udp.payload']);
      const want = messages.flatMap((m) => [
        ['::1', '::1', String(port), Buffer.from(m).toString('hex')],
        ['::1', '::1', '', Buffer.from(`re:${m}`).toString('hex')],
      ]);
      assert.equal(got.length, want.length, `datagrams: ${JSON.stringify(got)}`);
      got.forEach((g, i) => {
        assert.equal(g[0], want[i][0]);
        assert.equal(g[1], want[i][1]);
        if (want[i][2]) assert.equal(g[2], want[i][2], `datagram ${i} goes to the server`);
        else assert.notEqual(g[2], String(port), `datagram ${i} comes from the server`);
        assert.equal(g[3], want[i][3], `datagram ${i} payload`);
      });
      // The IPv6 interface of the file carries them.
      const ifaces = fields(file, `udp.port == ${port}`, ['frame.interface_name']).map((f) => f[0]);
      assert.ok(
        ifaces.every((n) => n === 'nke-ipv6'),
        ifaces.join(','),
      );
    } finally {
      server.close();
    }
  });
});

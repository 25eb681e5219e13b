// The emulator's endpoints are private to their user, one nke-emud serves a
// directory, and exec paths of any length arrive whole: real nke-emud, real
// shim, the real CLI (dist/nke.js with the addon), real programs. The cases
// that need a second uid run as root (CI does) with uid 65534 (nobody) as
// the other user, and are skipped otherwise.
'use strict';
const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '../..');
const build = path.join(root, 'native/emu/build');
const EMUD = path.join(build, 'nke-emud');
const CLIENT = path.join(build, 'test-client');
const SHIM = path.join(build, 'libnkeshim.so');
const CLI = path.join(root, 'dist/nke.js');
const ADDON = path.join(root, 'native/addon/build/Release/nke_addon.node');
const NOBODY = 65534;

const children = new Set();

/** Spawns a child; collects stdout lines and stderr; waitLine(re) resolves on a matching line. */
function start(cmd, args, opts = {}) {
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  children.add(p);
  p.lines = [];
  p.stderrText = '';
  let buf = '';
  p.stdout.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      p.lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
  p.stderr.on('data', (d) => (p.stderrText += d));
  p.exited = new Promise((res) =>
    p.on('exit', (code, sig) => {
      children.delete(p);
      res({ code, sig });
    }),
  );
  p.waitLine = async (re, ms = 10000) => {
    for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 20))) {
      const hit = p.lines.find((l) => re.test(l));
      if (hit) return hit;
      if (p.exitCode !== null || p.signalCode !== null) break;
    }
    throw new Error(
      `${path.basename(cmd)}: no line matching ${re}; stdout: ${p.lines.join(' | ')}; stderr: ${p.stderrText}`,
    );
  };
  return p;
}

function kill(p, sig = 'SIGTERM') {
  if (p.exitCode === null && p.signalCode === null) p.kill(sig);
  return p.exited;
}

/** Runs to completion; resolves { code, stdout, stderr }. */
function run(cmd, args, opts = {}, ms = 30000) {
  return new Promise((resolve, reject) => {
    const p = start(cmd, args, opts);
    const t = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} timed out; stderr: ${p.stderrText}`));
    }, ms);
    p.exited.then(({ code }) => {
      clearTimeout(t);
      resolve({ code, stdout: p.lines.join('\n'), stderr: p.stderrText });
    });
  });
}

function startDaemon(rt, args = []) {
  return start(EMUD, args, { env: { ...process.env, NKE_EMU_DIR: rt } });
}

/** Echoes what a connection sent, with the bytes recorded: proves what a program sent. */
function recordingServer() {
  return new Promise((resolve) => {
    const got = [];
    const srv = net.createServer((s) => {
      const parts = [];
      s.on('data', (d) => parts.push(d));
      s.on('end', () => {
        got.push(Buffer.concat(parts).toString('latin1'));
        s.end('ok');
      });
      s.on('error', () => {});
    });
    srv.listen(0, '127.0.0.1', () => resolve({ srv, port: srv.address().port, got }));
  });
}

const PY_SEND = `
import socket, sys
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
s.sendall(sys.argv[2].encode())
s.shutdown(socket.SHUT_WR)
print(s.recv(100).decode())
`;

// A vendor lookup on kev.sock (nke_emu_kev_ctl, GET_VENDOR): prints the reply's status and vendor_code.
const PY_KEV_VENDOR = `
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
s.send(struct.pack('<8I', 0x51454b4e, 1, 0, 0, 0, 0, 0, 0) + b'com.nkeworkbench'.ljust(200, b'\\0'))
r = s.recv(300)
print('status %d vendor_code %d' % struct.unpack('<2I', r[8:16]))
`;

let dir;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nke-endpoints-'));
});
afterEach(async () => {
  for (const c of [...children]) await kill(c, 'SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

function needRoot(ctx, also = []) {
  if (process.getuid() !== 0) ctx.skip();
  for (const tool of also) if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) ctx.skip();
}

describe('emulator endpoints: private to their user', function () {
  this.timeout(90000);

  it('an impostor in the /tmp fallback (its directory, or its listener in ours) gets nothing; the program runs unfiltered and says why once; nke status refuses it by name', async function () {
    needRoot(this, ['unshare', 'setpriv']);
    const r = await run(
      'unshare',
      [
        '-m',
        '--propagation',
        'private',
        process.execPath,
        path.join(__dirname, 'private-tmp-scenario.js'),
        root,
      ],
      {},
      80000,
    );
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    const res = JSON.parse(r.stdout.trim().split('\n').pop());
    assert.equal(res.error, undefined, res.error);
    assert.equal(res.fallback, `/tmp/nke-emu-${process.getuid()}`);
    const who = new RegExp(`uid ${NOBODY} \\(nobody\\)`);
    for (const mode of ['owner', 'peer']) {
      const s = res[mode];
      // Not one byte reached the impostor; in "owner" not even a connection.
      assert.equal(s.impostor.bytes, 0, `${mode}: ${JSON.stringify(s.impostor)}`);
      if (mode === 'owner') assert.equal(s.impostor.connections, 0, JSON.stringify(s.impostor));
      // The program ran, unfiltered: the real server got exactly what it sent.
      assert.equal(s.victim.code, 0, s.victim.stderr);
      assert.deepEqual(s.received, ['user=alice password=secret 0', 'user=alice password=secret 1']);
      assert.equal(s.victim.stdout.trim(), 'ok;ok;');
      // Said once, naming the impostor, on the program's stderr.
      const said = s.victim.stderr.match(/libnkeshim: .*runs unfiltered\./g) ?? [];
      assert.equal(said.length, 1, s.victim.stderr);
      assert.match(said[0], who);
      assert.match(
        said[0],
        mode === 'owner' ? /belongs to uid 65534 \(nobody\)/ : /served by pid \d+ of uid 65534/,
      );
      assert.match(said[0], /python3 runs unfiltered/);
      // nke status refuses it by name, and says it is not connected.
      assert.equal(s.status.code, 3, s.status.stdout + s.status.stderr);
      assert.match(s.status.stdout, /^filter: not connected/m);
      assert.match(s.status.stdout, /error: NKE_NOT_PRIVATE: /);
      assert.match(s.status.stdout, who);
      assert.match(
        s.status.stdout,
        mode === 'owner' ? /\/tmp\/nke-emu-\d+ belongs to/ : /ctl\.sock is served by pid \d+/,
      );
    }
  });

  it('a second uid that reaches the socket (permissions opened on purpose) is told "not permitted by the filter (uid 65534)" by the CLI', async function () {
    needRoot(this, ['setpriv']);
    const rt = path.join(dir, 'rt');
    const emud = startDaemon(rt);
    await emud.waitLine(/^nke-emud ready/);
    // Opened on purpose: the other uid owns the directory (so its own check
    // passes) and may write to the sockets; only nke-emud's SO_PEERCRED
    // check stands in the way. The CLI and the addon are copied where that
    // uid can read them.
    const bin = path.join(dir, 'bin');
    fs.mkdirSync(bin);
    fs.copyFileSync(CLI, path.join(bin, 'nke.js'));
    fs.copyFileSync(ADDON, path.join(bin, 'nke_addon.node'));
    fs.chmodSync(dir, 0o711);
    fs.chmodSync(bin, 0o755);
    fs.chownSync(rt, NOBODY, NOBODY);
    for (const s of ['ctl.sock', 'kev.sock']) fs.chmodSync(path.join(rt, s), 0o777);
    const r = await run(
      'setpriv',
      [
        '--reuid',
        String(NOBODY),
        '--regid',
        String(NOBODY),
        '--clear-groups',
        process.execPath,
        path.join(bin, 'nke.js'),
        'status',
      ],
      {
        env: {
          PATH: process.env.PATH,
          HOME: '/',
          NKE_EMU_DIR: rt,
          NKE_ADDON: path.join(bin, 'nke_addon.node'),
          NKE_CLI_DIR: path.join(bin, 'none'),
        },
      },
    );
    assert.equal(r.code, 3, r.stdout + r.stderr); // the filter is unavailable
    assert.match(r.stdout, /error: NKE_NOT_PERMITTED: not permitted by the filter \(uid 65534\)/);
    assert.match(r.stdout, new RegExp(`serves uid ${process.getuid()} and root only`));
    assert.match(emud.stderrText, /refused peer pid \d+ uid 65534/);
    // Its event socket is answered too: NKE_EMU_KEV_EPERM (1), vendor_code = its uid.
    const kevAsked = spawnSync(
      'setpriv',
      [
        '--reuid',
        String(NOBODY),
        '--regid',
        String(NOBODY),
        '--clear-groups',
        '/usr/bin/python3',
        '-c',
        PY_KEV_VENDOR,
        path.join(rt, 'kev.sock'),
      ],
      { encoding: 'utf8' },
    );
    assert.equal(kevAsked.stdout.trim(), `status 1 vendor_code ${NOBODY}`, kevAsked.stderr);
    // Its own user still gets in, once the directory is its own again.
    fs.chownSync(rt, process.getuid(), process.getgid());
    const mine = await run(process.execPath, [CLI, 'status'], {
      env: { ...process.env, NKE_EMU_DIR: rt, NKE_CLI_DIR: path.join(dir, 'cli') },
    });
    assert.equal(mine.code, 0, mine.stdout + mine.stderr);
    assert.match(mine.stdout, /^filter: connected \(emulator\)/m);
    assert.match(mine.stdout, /^since the filter started: .*, 0 late answers skipped,/m);
  });

  it('the CLI refuses a runtime directory that is open to others, and one that is a symlink, sending nothing', async function () {
    const rt = path.join(dir, 'rt');
    const emud = startDaemon(rt);
    await emud.waitLine(/^nke-emud ready/);
    const env = { ...process.env, NKE_EMU_DIR: rt, NKE_CLI_DIR: path.join(dir, 'cli') };
    fs.chmodSync(rt, 0o755);
    let r = await run(process.execPath, [CLI, 'status'], { env });
    assert.equal(r.code, 3);
    assert.match(r.stdout, /error: NKE_NOT_PRIVATE: .* is open to other users \(mode 0755\)/);
    fs.chmodSync(rt, 0o700);
    fs.symlinkSync(rt, path.join(dir, 'link'));
    r = await run(process.execPath, [CLI, 'status'], {
      env: { ...env, NKE_EMU_DIR: path.join(dir, 'link') },
    });
    assert.equal(r.code, 3);
    assert.match(r.stdout, /error: NKE_NOT_PRIVATE: .*link is a symbolic link/);
    // Nothing got as far as nke-emud: no client ever opened.
    assert.doesNotMatch(emud.stderrText, /user client gone/);
    r = await run(process.execPath, [CLI, 'status'], { env });
    assert.equal(r.code, 0, r.stdout + r.stderr);
  });
});

describe('emulator endpoints: one nke-emud per directory', function () {
  this.timeout(60000);

  it("a second nke-emud on a live directory exits non-zero naming the first one's pid; the first keeps serving", async function () {
    const rt = path.join(dir, 'rt');
    const first = startDaemon(rt);
    await first.waitLine(/^nke-emud ready/);
    const second = startDaemon(rt);
    const { code } = await second.exited;
    assert.equal(code, 3, second.stderrText);
    assert.match(second.stderrText, new RegExp(`already served by nke-emud pid ${first.pid}\\b`));
    assert.equal(second.lines.length, 0, 'the second one never said ready');
    assert.equal(first.exitCode, null);
    // The first one still owns every endpoint: its user client edits a
    // program's bytes through its shim link.
    const client = start(CLIENT, ['--dir', rt, '--out', 'upper', '--in', 'pass']);
    await client.waitLine(/^ready/);
    const server = await recordingServer();
    const r = await run('python3', ['-c', PY_SEND, String(server.port), 'still served'], {
      env: { ...process.env, LD_PRELOAD: SHIM, NKE_EMU_DIR: rt },
    });
    server.srv.close();
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(server.got, ['STILL SERVED']);
  });

  it('takes over the stale sockets of one that died', async function () {
    const rt = path.join(dir, 'rt');
    const dead = startDaemon(rt);
    await dead.waitLine(/^nke-emud ready/);
    await kill(dead, 'SIGKILL');
    assert.ok(fs.existsSync(path.join(rt, 'ctl.sock')), 'a dead nke-emud leaves its sockets');
    const next = startDaemon(rt);
    await next.waitLine(/^nke-emud ready/);
    const client = start(CLIENT, ['--dir', rt, '--out', 'pass', '--in', 'pass']);
    await client.waitLine(/^ready/);
    assert.equal(fs.readFileSync(path.join(rt, 'nke-emud.lock'), 'utf8').trim(), String(next.pid));
  });
});

describe('late verdicts (kext/core response rule)', function () {
  this.timeout(60000);

  it('an answer that comes after the deadline is skipped, not refused, and counted in stale_entries', async function () {
    const rt = path.join(dir, 'rt');
    const emud = startDaemon(rt);
    await emud.waitLine(/^nke-emud ready/);
    // The filter releases a held chunk after 200 ms; this client answers the
    // first chunk of each flow after 700: its verdict and release are stale.
    const client = start(CLIENT, [
      '--dir',
      rt,
      '--out',
      'pass',
      '--in',
      'pass',
      '--timeout-ms',
      '200',
      '--hold-first-ms',
      '700',
    ]);
    await client.waitLine(/^ready/);
    const server = await recordingServer();
    const r = await run('python3', ['-c', PY_SEND, String(server.port), 'late answer'], {
      env: { ...process.env, LD_PRELOAD: SHIM, NKE_EMU_DIR: rt },
    });
    server.srv.close();
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(server.got, ['late answer']); // released unchanged at the deadline
    // Both first chunks (the request out, the answer in) were late.
    for (const end = Date.now() + 5000; client.lines.filter((l) => l === 'answered-first').length < 2;) {
      assert.ok(Date.now() < end, client.lines.join(' | '));
      await new Promise((res) => setTimeout(res, 20));
    }
    assert.equal(client.lines.filter((l) => l === 'released 1').length, 2); // NKE_RELEASE_TIMEOUT
    // The filter's state record (once a second) counts a verdict and a
    // release of each, all skipped; none of them refused.
    const state = await client.waitLine(/^state .* stale 4 /, 5000);
    assert.match(state, / rejected 0$/);
    assert.ok(!client.lines.some((l) => / stale ([5-9]|\d\d)/.test(l)), client.lines.join(' | '));
    assert.doesNotMatch(client.stderrText, /respond .*error/);
  });
});

describe('exec paths of any length', function () {
  this.timeout(60000);

  /** A copy of /bin/true whose absolute path is exactly `len` bytes (components of 100 to 200). */
  function binaryAtPathOf(len) {
    let p = fs.realpathSync(dir);
    // Each step leaves at least 101 bytes, so the file's own name is 100..200.
    while (len - p.length > 201) p = path.join(p, 'd'.repeat(Math.min(200, len - p.length - 102)));
    p = path.join(p, 'x'.repeat(len - p.length - 1));
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.copyFileSync('/bin/true', p);
    fs.chmodSync(p, 0o755);
    assert.equal(p.length, len);
    return p;
  }

  it('an exec of a binary whose absolute path is 4000 bytes is reported whole (kev reassembler and nke watch)', async function () {
    const rt = path.join(dir, 'rt');
    const emud = startDaemon(rt);
    await emud.waitLine(/^nke-emud ready/);
    const bin = binaryAtPathOf(4000);
    const kev = start(CLIENT, ['--dir', rt, '--kev']);
    await kev.waitLine(/^ready kev limit 224$/);
    const watch = start(process.execPath, [CLI, 'watch', '--json'], {
      env: { ...process.env, NKE_EMU_DIR: rt, NKE_CLI_DIR: path.join(dir, 'cli') },
    });
    for (const end = Date.now() + 10000; !fs.existsSync(path.join(dir, 'cli', 'control.sock'));) {
      assert.ok(Date.now() < end, `nke watch did not start: ${watch.stderrText}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const r = await run('/bin/sh', ['-c', 'exec "$0"', bin], {
      env: { ...process.env, LD_PRELOAD: SHIM, NKE_EMU_DIR: rt },
    });
    assert.equal(r.code, 0, r.stderr);
    // The C reassembler (kext/core, as the addon runs it): complete, 4000 bytes, the very path.
    const line = await kev.waitLine(/^exec .* 4000 /);
    const [, , , , complete, len, ...rest] = line.split(' ');
    assert.equal(complete, '1', line.slice(0, 80));
    assert.equal(Number(len), 4000);
    assert.equal(rest.join(' '), bin);
    // Through the addon and the helper to the CLI's JSON.
    const json = await watch.waitLine(/"kind":"exec".*xxxx/);
    const ev = JSON.parse(json);
    assert.equal(ev.path, bin);
    assert.equal(ev.complete, true);
    assert.equal(ev.truncated, false);
    assert.doesNotMatch(emud.stderrText, /truncated|cannot be sent/);
  });
});

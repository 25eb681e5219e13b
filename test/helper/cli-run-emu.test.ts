// `nke` as a tool people script, against the real emulator and real
// programs: `nke run` leaves the program's stdio alone (its stdout is
// byte-exact the server's body) and writes its events to stderr or -o FILE;
// it starts nke-emud when none answers and leaves none behind; `nke status`
// lists a held chunk, `nke show --hex` prints its bytes and an edit of that
// dump reaches the server exactly; a rewrite split across writes 200 ms
// apart is applied; as root, exec events stay within the program's tree.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { makePrivateDir } from '../../extension/src/shared/tokenSocket';
import { closeRecordingServers, recordingServer, root, sender, useEmulator } from './emu-support';

const nke = path.join(root, 'dist/nke.js');

interface Done {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** Runs nke asynchronously (the servers live in this process: a blocking spawnSync would starve them). */
function nkeAsync(
  env: NodeJS.ProcessEnv,
  args: string[],
): { proc: ChildProcess; done: Promise<Done>; stderr(): string } {
  const proc = spawn(process.execPath, [nke, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  let stderr = '';
  proc.stdout!.on('data', (d: Buffer) => out.push(d));
  proc.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<Done>((resolve) =>
    proc.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr })),
  );
  return { proc, done, stderr: () => stderr };
}

/** A real HTTP server (not under the filter) answering every GET with `body`. */
async function bodyServer(body: Buffer): Promise<{ url: string; close(): void }> {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return { url: `http://127.0.0.1:${port}/body`, close: () => server.close() };
}

/** Polls an async probe until it yields a value (one probe at a time). */
async function poll<T>(probe: () => Promise<T | undefined>, ms: number, what: string): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface PendingLine {
  id: string;
  size: number;
  direction: string;
  process: string;
  timeLeftMs: number;
}

/** The first chunk `nke status --json` lists as pending, once there is one. */
function firstPending(env: NodeJS.ProcessEnv, run?: { stderr(): string }): Promise<PendingLine> {
  let last = '';
  return poll(
    async () => {
      const s = await nkeAsync(env, ['status', '--json']).done;
      last = `status exit ${s.code}: ${s.stdout.toString()}${s.stderr}`;
      if (s.code !== 0) return undefined;
      return (JSON.parse(s.stdout.toString()) as { pending: PendingLine[] }).pending[0];
    },
    20000,
    'nke status --json to list a held chunk',
  ).catch((e: Error) => {
    throw new Error(`${e.message}; last ${last}${run ? `; nke run's stderr:\n${run.stderr()}` : ''}`);
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

describe('nke CLI as a tool: clean stdio, starts what it needs, shows what it holds', function () {
  this.timeout(90000);
  const emu = useEmulator();
  let dir: string;
  let env: NodeJS.ProcessEnv;
  before(() => {
    dir = makePrivateDir('nke-cli-run-');
    env = { ...process.env, NKE_EMU_DIR: emu.dir, NKE_CLI_DIR: path.join(dir, 'cli') };
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  afterEach(() => closeRecordingServers());

  /** `nke run --rules F -- ...program`, F holding (for holdTimeoutMs) what goes to `port`; everything else passes. */
  function runHolding(port: number, holdTimeoutMs: number, program: string[], direction?: 'out') {
    const rules = path.join(dir, `hold-${port}.json`);
    const hold = { action: 'hold', remotePort: port, ...(direction && { direction }) };
    fs.writeFileSync(rules, JSON.stringify({ default: 'pass', holdTimeoutMs, intercept: [hold] }));
    return nkeAsync(env, ['run', '--rules', rules, '--', ...program]);
  }

  it("nke run -- curl -s URL: stdout is byte-exact the server's body, events on stderr; -o FILE --json: one JSON object a line", async () => {
    const body = crypto.randomBytes(300 * 1024);
    const server = await bodyServer(body);
    try {
      const r = await nkeAsync(env, ['run', '--', 'curl', '-s', server.url]).done;
      assert.equal(r.code, 0, r.stderr);
      assert.equal(
        Buffer.compare(r.stdout, body),
        0,
        `stdout holds ${r.stdout.length} bytes, the body ${body.length}`,
      );
      assert.match(r.stderr, /^socket \d+:\d+ open tcp pid \d+ \(curl\)$/m);
      assert.match(r.stderr, /^data \d+ socket \d+:\d+ in \d+ bytes$/m);
      assert.match(r.stderr, /^program \d+ exited with status 0$/m);
      // The emulator was already running: nke used it and left it running.
      assert.doesNotMatch(r.stderr, /started nke-emud/);
      assert.equal(emu.proc.exitCode, null, 'the running nke-emud is not stopped by nke run');

      const events = path.join(dir, 'events.jsonl');
      const j = await nkeAsync(env, ['run', '-o', events, '--json', '--', 'curl', '-s', server.url]).done;
      assert.equal(j.code, 0, j.stderr);
      assert.equal(Buffer.compare(j.stdout, body), 0);
      const lines = fs.readFileSync(events, 'utf8').split('\n');
      assert.equal(lines.pop(), '', 'the file ends with a newline');
      const objs = lines.map((l, i) => {
        try {
          return JSON.parse(l) as { kind: string; size?: number; direction?: string };
        } catch (e) {
          throw new Error(`events.jsonl line ${i + 1} is not JSON: ${l}: ${(e as Error).message}`);
        }
      });
      for (const o of objs) assert.equal(typeof o.kind, 'string');
      const kinds = new Set(objs.map((o) => o.kind));
      for (const k of ['socket-open', 'data', 'socket-close', 'program-exit']) {
        assert.ok(kinds.has(k), `a ${k} line`);
      }
      const bytesIn = objs
        .filter((o) => o.kind === 'data' && o.direction === 'in')
        .reduce((n, o) => n + o.size!, 0);
      assert.ok(bytesIn > body.length, `the data lines count the response (${bytesIn} bytes in)`);
      assert.doesNotMatch(j.stderr, /^(socket|data) /m, 'with -o, no event on stderr');
    } finally {
      server.close();
    }
  });

  it("exits with the program's status; a program that is not there is 127", async () => {
    const r = await nkeAsync(env, ['run', '--', 'sh', '-c', 'exit 7']).done;
    assert.equal(r.code, 7, r.stderr);
    const k = await nkeAsync(env, ['run', '--', 'sh', '-c', 'kill -TERM $$']).done;
    assert.equal(k.code, 128 + 15, k.stderr);
    const missing = await nkeAsync(env, ['run', '--', 'no-such-program-nke-test']).done;
    assert.equal(missing.code, 127, missing.stderr);
  });

  it('with no nke-emud running: nke run -- python3 client.py works, and the nke-emud it started is gone after', async () => {
    const runtime = path.join(dir, 'fresh-emu');
    const freshEnv = { ...env, NKE_EMU_DIR: runtime };
    const server = await recordingServer();
    const client = path.join(dir, 'client.py');
    fs.writeFileSync(
      client,
      'import socket,sys\ns=socket.create_connection(("127.0.0.1",int(sys.argv[1])))\ns.sendall(b"hello from client.py")\ns.close()\nprint("client done")\n',
    );
    const r = await nkeAsync(freshEnv, ['run', '--', 'python3', client, String(server.port)]).done;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), 'client done\n');
    assert.equal((await server.whenBytes(20)).toString(), 'hello from client.py');
    const started = /started nke-emud \(pid (\d+)\) in (.*); it stops when this nke exits/.exec(r.stderr);
    assert.ok(started, `nke says it started nke-emud:\n${r.stderr}`);
    assert.equal(started[2], runtime);
    // The one nke-emud of that directory wrote its pid in the lock it held.
    const pid = Number(fs.readFileSync(path.join(runtime, 'nke-emud.lock'), 'utf8').trim());
    assert.equal(pid, Number(started[1]));
    assert.match(r.stderr, /^socket \d+:\d+ open tcp pid \d+ \(python3/m, 'the program was filtered');
    assert.equal(alive(pid), false, `nke-emud pid ${pid} is still running`);

    // --no-start refuses instead, exit 3, and starts nothing.
    const refused = await nkeAsync(freshEnv, ['run', '--no-start', '--', 'true']).done;
    assert.equal(refused.code, 3, refused.stderr);
    assert.match(refused.stderr, /the NKE emulator is not running.*--no-start/);
    assert.equal(Number(fs.readFileSync(path.join(runtime, 'nke-emud.lock'), 'utf8').trim()), pid);
  });

  it('a held chunk: status --json lists it, show --hex prints its bytes, verdict replace --hex of an edited dump reaches the server exactly', async () => {
    const server = await recordingServer();
    const rules = path.join(dir, 'hold.jsonc');
    fs.writeFileSync(
      rules,
      `// hold what goes to the test server\n{ "default": "pass", "holdTimeoutMs": 60000,\n  "intercept": [ { "action": "hold", "remotePort": ${server.port}, "direction": "out" }, ] }\n`,
    );
    const original = 'GET /original HTTP/1.0\r\n\r\n';
    // One write, then the socket stays open until the answer has gone
    // through (the test makes `done`; 30 s at most), however slow the
    // machine: a close would release the chunk before the test answers it.
    const done = path.join(dir, 'answered');
    const run = nkeAsync(env, [
      'run',
      '--rules',
      rules,
      '--',
      'python3',
      '-c',
      'import os,socket,sys,time\ns=socket.create_connection(("127.0.0.1",int(sys.argv[1])))\ns.sendall(sys.argv[2].encode())\nfor _ in range(300):\n  if os.path.exists(sys.argv[3]): break\n  time.sleep(0.1)\ns.close()',
      String(server.port),
      original,
      done,
    ]);
    try {
      const p = await firstPending(env, run);
      assert.equal(p.size, original.length);
      assert.equal(p.direction, 'out');
      assert.match(p.process, /^python3/);
      assert.ok(p.timeLeftMs > 30000 && p.timeLeftMs <= 60000, `time left ${p.timeLeftMs} ms`);
      const text = await nkeAsync(env, ['status']).done;
      assert.match(
        text.stdout.toString(),
        new RegExp(`^ {2}${p.id} +out +${original.length} +\\d+\\.\\d s `, 'm'),
      );
      assert.match(text.stdout.toString(), /^now: .*1 chunk held awaiting a verdict/m);

      const shown = await nkeAsync(env, ['show', p.id, '--hex']).done;
      assert.equal(shown.code, 0, shown.stderr);
      const dump = shown.stdout.toString();
      assert.equal(
        dump,
        '00000000: 47 45 54 20 2f 6f 72 69  67 69 6e 61 6c 20 48 54  |GET /original HT|\n' +
          '00000010: 54 50 2f 31 2e 30 0d 0a  0d 0a                    |TP/1.0....|\n',
      );
      // The edit a person makes in that dump: "o" -> "O" at offset 5, two
      // bytes inserted before the line end; offsets and gutters stay stale.
      const edited = dump.replace('2f 6f 72', '2f 4f 72').replace('2e 30 0d 0a', '2e 30 21 21 0d 0a');
      const file = path.join(dir, 'edited.hex');
      fs.writeFileSync(file, edited);
      const v = await nkeAsync(env, ['verdict', p.id, 'replace', '--hex', file]).done;
      assert.equal(v.code, 0, v.stderr);
      const want = 'GET /Original HTTP/1.0!!\r\n\r\n';
      assert.equal((await server.whenBytes(want.length)).toString(), want);
      fs.writeFileSync(done, '');
      const r = await run.done;
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, new RegExp(`^pending ${p.id}: out ${original.length} bytes`, 'm'));
      assert.match(r.stderr, new RegExp(`^verdict ${p.id} replace ${want.length} bytes$`, 'm'));
      await new Promise((res) => setTimeout(res, 200));
      assert.equal(server.received().toString(), want, 'nothing else reached the server');

      // After nke run exited: the record it left names how the chunk ended, exit 5.
      const late = await nkeAsync(env, ['verdict', p.id, 'allow']).done;
      assert.equal(late.code, 5, late.stderr);
      assert.match(
        late.stderr,
        new RegExp(
          `payload ${p.id} was already answered \\(Reinject Edited\\) at [\\d:]+; nke run \\(pid \\d+\\) exited at`,
        ),
      );
      // An id that no run held: nothing to ask, exit 4.
      const never = await nkeAsync(env, ['verdict', '987654321', 'allow']).done;
      assert.equal(never.code, 4, never.stderr);
      assert.match(never.stderr, /no nke watch or nke run is running/);
    } finally {
      run.proc.kill('SIGTERM');
      await run.done;
    }
  });

  it('nke extend keeps a held chunk past its deadline; the cap and a bad duration are refused before anything is sent', async () => {
    const server = await recordingServer();
    const holdTimeoutMs = 3000;
    const run = runHolding(
      server.port,
      holdTimeoutMs,
      [...sender(30), String(server.port), 'extend-me'],
      'out',
    );
    try {
      const p = await firstPending(env, run);
      const firstDeadline = Date.now() + p.timeLeftMs;
      const ok = await nkeAsync(env, ['extend', p.id, '15s']).done;
      assert.equal(ok.code, 0, ok.stderr);
      assert.match(
        ok.stderr,
        new RegExp(`^nke: chunk ${p.id}: held until \\d\\d:\\d\\d:\\d\\d \\(1[0-5]\\.\\d s left\\)`),
      );
      const bad = await nkeAsync(env, ['extend', p.id, 'soon']).done;
      assert.equal(bad.code, 2, bad.stderr);
      assert.match(
        bad.stderr,
        /DURATION is how long from now to keep chunk \d+ held: 90, 90s, 2m or 1500ms; got soon/,
      );
      const over = await nkeAsync(env, ['extend', p.id, '11m']).done;
      assert.equal(over.code, 1, over.stderr);
      assert.match(over.stderr, /at most 10 minutes in all, so it can be kept at most [\d.]+ s more/);
      // Past its first deadline: still held, nothing at the server.
      await new Promise((r) => setTimeout(r, Math.max(0, firstDeadline - Date.now()) + 1000));
      const still = await nkeAsync(env, ['status', '--json']).done;
      const listed = (JSON.parse(still.stdout.toString()) as { pending: PendingLine[] }).pending;
      assert.ok(
        listed.some((q) => q.id === p.id),
        `chunk ${p.id} is still held: ${still.stdout.toString()}`,
      );
      assert.equal(server.received().length, 0, 'nothing reached the server while held');
      const v = await nkeAsync(env, ['verdict', p.id, 'allow']).done;
      assert.equal(v.code, 0, v.stderr);
      assert.equal((await server.whenBytes('extend-me'.length)).toString(), 'extend-me');
      // Answered: extend says so, exit 5.
      const late = await nkeAsync(env, ['extend', p.id, '10s']).done;
      assert.equal(late.code, 5, late.stderr);
      assert.match(late.stderr, new RegExp(`payload ${p.id} was already answered \\(Reinject Original\\)`));
    } finally {
      run.proc.kill('SIGTERM');
      await run.done;
    }
  });

  it("a verdict after the chunk's deadline, while nke run goes on, says the filter released it at its deadline", async () => {
    const server = await recordingServer();
    const flag = path.join(dir, 'seen-released');
    const run = runHolding(server.port, 1500, [
      'python3',
      '-c',
      'import os,socket,sys,time\ns=socket.create_connection(("127.0.0.1",int(sys.argv[1])))\ns.sendall(b"on time")\n' +
        'while not os.path.exists(sys.argv[2]): time.sleep(0.05)\ns.close()',
      String(server.port),
      flag,
    ]);
    try {
      const p = await firstPending(env, run);
      // Not answered: at its deadline the filter sends the original on.
      assert.equal((await server.whenBytes(7)).toString(), 'on time');
      const late = await poll(
        async () => {
          const v = await nkeAsync(env, ['verdict', p.id, 'drop']).done;
          return v.code === 5 ? v : undefined;
        },
        10000,
        'the late verdict to be refused',
      );
      assert.match(
        late.stderr,
        new RegExp(
          `payload ${p.id} was already released \\(its deadline passed\\) at [\\d:]+: the filter sent the original bytes`,
        ),
      );
      fs.writeFileSync(flag, '');
      const r = await run.done;
      assert.equal(r.code, 0, r.stderr);
      assert.match(
        r.stderr,
        new RegExp(
          `^released ${p.id} by the filter: its deadline passed, the filter sent the original bytes$`,
          'm',
        ),
      );
      assert.equal(server.received().toString(), 'on time', 'the drop came too late: nothing else changed');
    } finally {
      fs.writeFileSync(flag, '');
      await run.done;
    }
  });

  it('a chunk still held when nke run exits: a later verdict says it was released when that run exited', async () => {
    const server = await recordingServer();
    // The program starts a sender in the background and exits once the test
    // saw its chunk held; the sender keeps its socket open meanwhile.
    const flag = path.join(dir, 'seen-held');
    const senderLine = `${sender(3)
      .map((a) => `'${a.replace(/'/g, "'\\''")}'`)
      .join(' ')} ${server.port} kept`;
    const run = runHolding(server.port, 60000, [
      'sh',
      '-c',
      `${senderLine} & while [ ! -e ${flag} ]; do sleep 0.05; done`,
    ]);
    // A failure before the flag must not leave this run holding the filter for the next tests.
    const p = await firstPending(env, run).finally(() => fs.writeFileSync(flag, ''));
    const r = await run.done;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`released 1 pending chunk unchanged on exit \\(${p.id}\\)`));
    // Its client gone, the filter sent the original on.
    assert.equal((await server.whenBytes(4)).toString(), 'kept');
    const late = await nkeAsync(env, ['verdict', p.id, 'drop']).done;
    assert.equal(late.code, 5, late.stderr);
    assert.match(
      late.stderr,
      new RegExp(`payload ${p.id} was released when nke run \\(pid \\d+\\) exited at`),
    );
  });

  it('a rewrite rule whose match is split across two writes 200 ms apart is applied', async () => {
    const server = await recordingServer();
    const rules = path.join(dir, 'rewrite.jsonc');
    fs.writeFileSync(
      rules,
      `{ "default": "pass", // everything else passes\n  "rewrite": [ { "find": "password", "replace": "REDACTED", "remotePort": ${server.port} } ] }\n`,
    );
    const r = await nkeAsync(env, [
      'run',
      '--rules',
      rules,
      '--',
      ...sender(0.2),
      String(server.port),
      'user=x pass',
      'word=y ',
      'end',
    ]).done;
    assert.equal(r.code, 0, r.stderr);
    const want = 'user=x REDACTED=y end';
    assert.equal((await server.whenBytes(want.length)).toString(), want);
    await new Promise((res) => setTimeout(res, 200));
    assert.equal(server.received().toString(), want);
    assert.match(r.stderr, /^verdict \d+ rewrite 18 bytes$/m);
    assert.doesNotMatch(r.stderr, /went out unrewritten/);
  });

  it('as root: nke run -- sh -c "/bin/true; curl ..." prints the execs of its own tree and none of other processes', async function () {
    if (process.getuid?.() !== 0) this.skip(); // the kernel's process connector reports every exec only to root
    const server = await bodyServer(Buffer.from('ok'));
    // Another process of this machine, not under nke, exec'ing all the time.
    const other = spawn('sh', ['-c', 'while :; do /bin/true; sleep 0.02; done'], { stdio: 'ignore' });
    try {
      // /bin/true, not the shell's builtin: an exec to see.
      const prog = ['sh', '-c', `/bin/true; curl -s -o /dev/null ${server.url}; echo done`];
      const parse = (f: string) =>
        fs
          .readFileSync(f, 'utf8')
          .split('\n')
          .filter((l) => l)
          .map((l) => JSON.parse(l) as { kind: string; pid: number; ppid: number; path: string });
      // --execs all: the connector reports the other process's execs too (the scoping below is what removes them).
      const allFile = path.join(dir, 'all.jsonl');
      const all = await nkeAsync(env, ['run', '--json', '-o', allFile, '--execs', 'all', '--', ...prog]).done;
      assert.equal(all.code, 0, all.stderr);
      assert.ok(
        parse(allFile).some((e) => e.kind === 'exec' && e.ppid === other.pid),
        "with --execs all, the other process's execs are there",
      );

      const treeFile = path.join(dir, 'tree.jsonl');
      const r = await nkeAsync(env, ['run', '--json', '-o', treeFile, '--', ...prog]).done;
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.toString(), 'done\n');
      const lines = parse(treeFile);
      const sh = lines.find((e) => e.kind === 'program-exit')!.pid;
      const execs = lines.filter((e) => e.kind === 'exec');
      assert.ok(
        execs.some((e) => e.ppid === sh && path.basename(e.path) === 'true'),
        `the exec of true (child of sh ${sh}) in ${JSON.stringify(execs)}`,
      );
      assert.ok(
        execs.some((e) => (e.ppid === sh || e.pid === sh) && path.basename(e.path) === 'curl'),
        'the exec of curl',
      );
      for (const e of execs) {
        // The launcher (nke-emu, which becomes sh) runs `$(cd "$(dirname "$0")" && pwd)`
        // first: that dirname is a grandchild of sh, through a subshell that
        // forks without exec, and is in the tree whenever the subshell still
        // lives when its exec is read (/proc tells its parent then).
        const launcherOwn = e.ppid !== sh && path.basename(e.path) === 'dirname';
        assert.ok(
          e.pid === sh || e.ppid === sh || launcherOwn,
          `exec outside the program's tree: ${JSON.stringify(e)}`,
        );
      }
    } finally {
      other.kill('SIGKILL');
      server.close();
    }
  });
});

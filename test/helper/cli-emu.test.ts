// The `nke` CLI (dist/nke.js) against the real emulator and real programs:
// `run` with a rewrite rule and with a hold rule answered by `verdict` from a
// second process, `run --json` lines, `status`, and errors that name the cause.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { makePrivateDir } from '../../extension/src/shared/tokenSocket';
import { closeRecordingServers, recordingServer, root, useEmulator, sender, waitFor } from './emu-support';

const nke = path.join(root, 'dist/nke.js');
// Each argument one write, 100 ms apart.
const SENDER = sender(0.1);

// One write, the socket kept open 3 s: a held chunk of a socket closed before
// its verdict is discarded by the filter (NKE_RELEASE_SOCKET_GONE), and the
// verdict here comes from a second process started after the hold.
const HOLDING_SENDER = sender(3);

describe('nke CLI with the emulator', function () {
  this.timeout(60000);
  const emu = useEmulator();
  let dir: string;
  let env: NodeJS.ProcessEnv;
  before(() => {
    dir = makePrivateDir('nke-cli-emu-');
    env = { ...process.env, NKE_EMU_DIR: emu.dir, NKE_CLI_DIR: path.join(dir, 'cli') };
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  afterEach(() => closeRecordingServers());
  const run = (...args: string[]) => spawnSync(process.execPath, [nke, ...args], { env, encoding: 'utf8' });
  const rulesFile = (name: string, rules: unknown) => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, JSON.stringify(rules));
    return f;
  };

  it('status connects to the running emulator and exits 0', () => {
    const r = run('status', '--json');
    assert.equal(r.status, 0, r.stderr);
    const s = JSON.parse(r.stdout);
    assert.equal(s.connected, true);
    assert.equal(s.transport, 'emulator');
  });

  it('run --rules with a rewrite rule: the real server receives the rewritten bytes', async () => {
    const server = await recordingServer();
    const rules = rulesFile('rewrite.json', {
      default: 'pass',
      rewrite: [{ find: 'cat', replace: 'tiger', remotePort: server.port }],
    });
    const r = run('run', '--rules', rules, '--', ...SENDER, String(server.port), 'a cat ', 'and a dog');
    assert.equal(r.status, 0, r.stderr);
    const want = 'a tiger and a dog';
    assert.equal((await server.whenBytes(want.length)).toString(), want);
  });

  it('run --json with a hold rule: pending line, verdict replace from a second process, events parse', async () => {
    const server = await recordingServer();
    const rules = rulesFile('hold.json', {
      default: 'pass',
      intercept: [{ action: 'hold', remotePort: server.port, direction: 'out' }],
      holdTimeoutMs: 60000,
    });
    const child = spawn(
      process.execPath,
      [nke, 'run', '--json', '--rules', rules, '--', ...HOLDING_SENDER, String(server.port), 'GET /original'],
      { env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    // The program's stdout is its own; nke's JSON lines go to stderr with its other messages.
    const lines = () =>
      err
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { kind: string; id?: string });
    await waitFor(() => lines().some((l) => l.kind === 'pending'), 15000, 'a pending line');
    const id = lines().find((l) => l.kind === 'pending')!.id!;

    // Errors while it runs: an unknown payload id names the cause (exit 5: not held).
    const unknown = run('verdict', '999999999', 'allow');
    assert.equal(unknown.status, 5);
    assert.match(
      unknown.stderr,
      /verdict on 999999999: payload 999999999 is not held \(the helper does not know it/,
    );

    const edited = path.join(dir, 'edited.txt');
    fs.writeFileSync(edited, 'GET /replaced/by/verdict');
    const v = run('verdict', id, 'replace', edited);
    assert.equal(v.status, 0, `${v.stderr}\n--- run stdout:\n${out}\n--- run stderr:\n${err}`);
    assert.equal(await exited, 0, err);
    assert.equal(out, '', "nothing of nke on the program's stdout");
    assert.equal((await server.whenBytes(24)).toString(), 'GET /replaced/by/verdict');
    const kinds = new Set(lines().map((l) => l.kind));
    for (const k of ['socket-open', 'data', 'verdict', 'exec', 'pending']) {
      assert.ok(kinds.has(k), `a ${k} line in ${[...kinds].join(', ')}`);
    }
  });

  it('a bad rules file fails before the program runs, naming file and cause (exit 2)', () => {
    const bad = rulesFile('bad.json', { default: 'maybe' });
    const marker = path.join(dir, 'ran');
    const r = run('run', '--rules', bad, '--', 'touch', marker);
    assert.equal(r.status, 2);
    assert.match(
      r.stderr,
      /bad\.json: rules\.default: is "hold", "report" or "pass"; got a string \("maybe"\)/,
    );
    assert.equal(fs.existsSync(marker), false);
  });

  it('the nke.interceptRules array form is a rules file too', async () => {
    const server = await recordingServer();
    const rules = rulesFile('array.json', [{ action: 'hold', remotePort: server.port, direction: 'out' }]);
    const child = spawn(
      process.execPath,
      [nke, 'run', '--json', '--rules', rules, '--', ...HOLDING_SENDER, String(server.port), 'array form'],
      { env, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    await waitFor(() => /"kind":"pending"/.test(err), 15000, 'a pending line');
    const id = (JSON.parse(err.split('\n').find((l) => l.includes('"kind":"pending"'))!) as { id: string })
      .id;
    const v = run('verdict', id, 'drop');
    assert.equal(v.status, 0, v.stderr);
    assert.equal(await exited, 0, err);
    assert.equal(server.received().length, 0, 'dropped');
  });

  it('with no emulator running and --no-start: status and run exit 3 naming the cause', () => {
    const none = { ...env, NKE_EMU_DIR: path.join(dir, 'no-emu') };
    const run = (...args: string[]) =>
      spawnSync(process.execPath, [nke, ...args], { env: none, encoding: 'utf8' });
    const s = run('status');
    assert.equal(s.status, 3);
    assert.match(s.stdout, /NKE_EMU_NOT_RUNNING/);
    const marker = path.join(dir, 'ran-no-start');
    const r = run('run', '--no-start', '--', 'touch', marker);
    assert.equal(r.status, 3);
    assert.match(r.stderr, /cannot connect to the filter: the NKE emulator is not running/);
    assert.equal(fs.existsSync(marker), false, 'the program did not run');
  });
});

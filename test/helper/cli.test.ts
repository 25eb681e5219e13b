// The `nke` CLI (dist/nke.js) where no emulator runs: every failure names its
// cause and exits with the status `nke --help` documents. With the emulator:
// cli-emu.test.ts, cli-run-emu.test.ts.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { makePrivateDir } from '../../extension/src/shared/tokenSocket';

const root = path.resolve(__dirname, '../../..');
const nke = path.join(root, 'dist/nke.js');

describe('nke CLI without a filter', function () {
  this.timeout(20000);
  let dir: string;
  let env: NodeJS.ProcessEnv;
  before(() => {
    dir = makePrivateDir('nke-cli-test-');
    // An emulator directory where nothing listens, and a private control dir.
    env = { ...process.env, NKE_EMU_DIR: path.join(dir, 'emu'), NKE_CLI_DIR: path.join(dir, 'cli') };
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const run = (...args: string[]) => spawnSync(process.execPath, [nke, ...args], { env, encoding: 'utf8' });
  const runAsync = (...args: string[]) =>
    new Promise<{ status: number | null; stderr: string }>((resolve) => {
      const p = spawn(process.execPath, [nke, ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      p.stderr.on('data', (d) => (stderr += d));
      p.on('close', (status) => resolve({ status, stderr }));
    });

  it('status says the emulator is not running (and where) and exits 3; it never starts one', () => {
    const r = run('status');
    assert.equal(r.status, 3);
    assert.match(r.stdout, /not connected/);
    assert.match(r.stdout, /NKE_EMU_NOT_RUNNING: the NKE emulator is not running/);
    assert.match(r.stdout, /nke watch and nke run start one/);
    const j = run('status', '--json');
    assert.equal(j.status, 3);
    const s = JSON.parse(j.stdout);
    assert.equal(s.connected, false);
    assert.equal(s.error.code, 'NKE_EMU_NOT_RUNNING');
    assert.deepEqual(s.pending, []);
    assert.equal(fs.existsSync(path.join(dir, 'emu')), false, 'status created no runtime directory');
  });

  it('watch --no-start fails with the cause (exit 3) when no emulator answers', () => {
    const r = run('watch', '--json', '--no-start');
    assert.equal(r.status, 3);
    assert.match(
      r.stderr,
      /cannot connect to the filter: the NKE emulator is not running .*--no-start was given/,
    );
  });

  it('a rules file is validated before anything else, naming file, field and shape (exit 2)', () => {
    const bad = path.join(dir, 'bad.json');
    fs.writeFileSync(bad, JSON.stringify({ intercept: [{ action: 'hold', remotePort: 99999 }] }));
    const r = run('watch', '--rules', bad);
    assert.equal(r.status, 2);
    assert.match(
      r.stderr,
      /bad\.json: rules\.intercept\[0\]\.remotePort: a port is 0\.\.65535 or \[min, max\]/,
    );
    fs.writeFileSync(bad, '{\n  "default": "hold"\n  "intercept": []\n}');
    assert.match(
      run('watch', '--rules', bad).stderr,
      /bad\.json: line 3, column 3: expected "," or "}" after the value of "default"/,
    );
    const missing = run('watch', '--rules', path.join(dir, 'missing.json'));
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /cannot read rules file/);
  });

  it('verdict without a running watch names the missing control socket (exit 4)', () => {
    const r = run('verdict', '12', 'allow');
    assert.equal(r.status, 4);
    assert.match(r.stderr, /no nke watch or nke run is running \(no control socket in .*cli\)/);
    assert.equal(run('show', '12').status, 4);
  });

  it('usage errors exit 2 and name what is wrong', async () => {
    // The cases run side by side: each is a node start-up, mostly waiting for a CPU on a loaded machine.
    const cases: [string[], RegExp | undefined, number][] = [
      [['verdict', 'abc', 'allow'], /ID is a pending chunk's id, a number/, 2],
      [['verdict', '1', 'maybe'], /the action is allow, drop or replace; got maybe/, 2],
      [['verdict', '1', 'allow', 'file'], /FILE is only for replace/, 2],
      [['run'], /no program given/, 2],
      [['run', '--execs', 'some', '--', 'true'], /--execs is all, tree, none; got "some"/, 2],
      [['watch', '--frob'], /unknown option --frob \(nke watch --help lists them\)/, 2],
      [['watch', '-o'], /--output needs a value \(--output FILE\)/, 2],
      [['show', '1', '--hex', '--raw'], /--hex or --raw, not both/, 2],
      [['frobnicate'], /unknown command frobnicate; the commands are run, watch, status/, 2],
      [[], undefined, 2],
      [['help'], undefined, 0],
      [['--help'], undefined, 0],
    ];
    await Promise.all(
      cases.map(async ([args, pattern, status]) => {
        const r = await runAsync(...args);
        assert.equal(r.status, status, `${args.join(' ')}: ${r.stderr}`);
        if (pattern) assert.match(r.stderr, pattern);
      }),
    );
  });

  it('refuses a control directory other users could enter', () => {
    const open = path.join(dir, 'open');
    fs.mkdirSync(open, { mode: 0o777 });
    fs.chmodSync(open, 0o777);
    const r = spawnSync(process.execPath, [nke, 'verdict', '1', 'allow'], {
      env: { ...env, NKE_CLI_DIR: open },
      encoding: 'utf8',
    });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /control directory .*\/open is open to other users \(mode 0777\)/);
  });
});

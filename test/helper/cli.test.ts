// The `nke` CLI (dist/nke.js) where no emulator runs: every failure names its
// cause and exits non-zero. With the emulator: emu.test.ts.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
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

  it('status says the emulator is not running and exits 1', () => {
    const r = run('status');
    assert.equal(r.status, 1);
    assert.match(r.stdout, /not connected/);
    assert.match(r.stdout, /NKE_EMU_NOT_RUNNING: the NKE emulator is not running/);
    const j = run('status', '--json');
    assert.equal(j.status, 1);
    const s = JSON.parse(j.stdout);
    assert.equal(s.connected, false);
    assert.equal(s.error.code, 'NKE_EMU_NOT_RUNNING');
  });

  it('watch fails with the cause when the filter cannot be opened', () => {
    const r = run('watch', '--json');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /cannot connect to the filter: the NKE emulator is not running/);
  });

  it('a rules file is validated before anything else, naming file and field', () => {
    const bad = path.join(dir, 'bad.json');
    fs.writeFileSync(bad, JSON.stringify({ intercept: [{ action: 'hold', remotePort: 99999 }] }));
    const r = run('watch', '--rules', bad);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /bad\.json: rules\.intercept\[0\]\.remotePort/);
    fs.writeFileSync(bad, '{ not json');
    assert.match(run('watch', '--rules', bad).stderr, /not valid JSON/);
    assert.match(run('watch', '--rules', path.join(dir, 'missing.json')).stderr, /cannot read rules file/);
  });

  it('verdict without a running watch names the missing control socket', () => {
    const r = run('verdict', '12', 'allow');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /no nke watch or nke run is running/);
  });

  it('usage errors exit 2', () => {
    assert.equal(run('verdict', 'abc', 'allow').status, 2);
    assert.equal(run('verdict', '1', 'maybe').status, 2);
    assert.equal(run('verdict', '1', 'replace').status, 2);
    assert.equal(run('run').status, 2);
    assert.equal(run('frobnicate').status, 2);
    assert.equal(run().status, 2);
    assert.equal(run('help').status, 0);
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

// NKE: Show Kernel Log for an emulator this window did not start: the lines
// a real nke-emud writes to its log file reach the output channel, and a log
// file that is not private to this user is refused.
import * as assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { EmulatorLogTail, LOG_TAIL_BACKLOG } from '../../../extension/src/filter/emulatorLogTail';
import { NKE_EMU_LOG_FILE } from '../../../extension/src/shared/abi';

const root = path.resolve(__dirname, '../../../..');
const emud = path.join(root, 'native/emu/build/nke-emud');

function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (cond()) return resolve();
      if (Date.now() - t0 > ms) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 20);
    };
    tick();
  });
}

function startEmud(dir: string): Promise<ChildProcess> {
  const p = spawn(emud, [], {
    env: { ...process.env, NKE_EMU_DIR: dir, NKE_EMU_NO_PROC_CONNECTOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    p.stdout!.on('data', (d) => String(d).includes('nke-emud ready') && resolve(p));
    p.on('exit', (code) => reject(new Error(`nke-emud exited (${code})`)));
  });
}

function stop(p: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (p.exitCode !== null || p.signalCode !== null) return resolve();
    p.on('exit', () => resolve());
    p.kill('SIGTERM');
  });
}

describe('emulator log tail (NKE: Show Kernel Log for an emulator started elsewhere)', function () {
  this.timeout(20000);
  let dir: string;
  let tail: EmulatorLogTail | undefined;
  const emuds: ChildProcess[] = [];

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nke-logtail-'));
  });
  afterEach(async () => {
    tail?.stop();
    for (const p of emuds.splice(0)) await stop(p);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('shows what a running nke-emud logged, then what the next nke-emud in the directory logs', async () => {
    const first = await startEmud(dir);
    emuds.push(first);
    const file = path.join(dir, NKE_EMU_LOG_FILE);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600, 'nke-emud makes its log private');
    const lines: string[] = [];
    tail = new EmulatorLogTail({ runtimeDir: dir, line: (l) => lines.push(l), pollMs: 50 });
    tail.start();
    // What nke-emud said at start, written by the real binary.
    assert.ok(
      lines.some((l) => new RegExp(`^nke-emud\\[${first.pid}\\] main: exec events from the shim`).test(l)),
      lines.join('\n'),
    );
    await stop(first);
    const second = await startEmud(dir);
    emuds.push(second);
    await until(
      () => lines.some((l) => l.startsWith(`nke-emud[${second.pid}] main:`)),
      5000,
      "the second nke-emud's lines",
    );
    assert.ok(
      lines.some((l) => /log started over/.test(l)),
      lines.join('\n'),
    );
  });

  it('shows at most the last 64 KiB of an existing log, from a whole line', () => {
    const file = path.join(dir, NKE_EMU_LOG_FILE);
    const line = 'x'.repeat(99);
    fs.writeFileSync(file, `${line}\n`.repeat(2000) + 'last line\n', { mode: 0o600 });
    const lines: string[] = [];
    tail = new EmulatorLogTail({ runtimeDir: dir, line: (l) => lines.push(l) });
    tail.start();
    assert.equal(lines[lines.length - 1], 'last line');
    assert.ok(
      lines.slice(0, -1).every((l) => l === line),
      'no partial first line',
    );
    const shown = lines.reduce((n, l) => n + l.length + 1, 0);
    assert.ok(
      shown <= LOG_TAIL_BACKLOG && shown > LOG_TAIL_BACKLOG - 100,
      `${shown} bytes in ${lines.length} lines`,
    );
  });

  it('refuses a log file that others can read, and a symbolic link', () => {
    const file = path.join(dir, NKE_EMU_LOG_FILE);
    fs.writeFileSync(file, 'secret\n', { mode: 0o644 });
    fs.chmodSync(file, 0o644);
    const lines: string[] = [];
    tail = new EmulatorLogTail({ runtimeDir: dir, line: (l) => lines.push(l) });
    tail.start();
    tail.stop();
    assert.deepEqual(lines, [`[NKE Workbench] ${file} has mode 644 (not 600): not showing it`]);

    fs.rmSync(file);
    const other = path.join(dir, 'other');
    fs.writeFileSync(other, 'secret\n', { mode: 0o600 });
    fs.symlinkSync(other, file);
    lines.length = 0;
    tail = new EmulatorLogTail({ runtimeDir: dir, line: (l) => lines.push(l) });
    tail.start();
    assert.deepEqual(lines, [`[NKE Workbench] ${file} is not a regular file: not showing it`]);
  });
});

// Starts the real Linux emulator (native/emu/build/nke-emud) in a private
// runtime directory and runs real programs under its launcher
// (native/emu/build/nke-emu). Used by the helper's emulator tests.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { makePrivateDir } from '../../extension/src/shared/tokenSocket';

export const root = path.resolve(__dirname, '../../..');
export const emud = path.join(root, 'native/emu/build/nke-emud');
export const launcher = path.join(root, 'native/emu/build/nke-emu');

export interface Emulator {
  dir: string;
  env: NodeJS.ProcessEnv;
  proc: ChildProcess;
  stop(): Promise<void>;
}

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function startEmulator(): Promise<Emulator> {
  if (!fs.existsSync(emud) || !fs.existsSync(launcher)) {
    throw new Error(`the emulator is not built (${emud}, ${launcher}): merge branch emu and run npm install`);
  }
  const dir = path.join(makePrivateDir('nke-emu-test-'), 'run');
  fs.mkdirSync(dir, { mode: 0o700 });
  const env = { ...process.env, NKE_EMU_DIR: dir };
  const proc = spawn(emud, [], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr += d));
  await waitFor(
    () => fs.existsSync(path.join(dir, 'ctl.sock')) || proc.exitCode !== null,
    10000,
    'nke-emud to listen',
  );
  if (proc.exitCode !== null) throw new Error(`nke-emud exited ${proc.exitCode}: ${stderr}`);
  return {
    dir,
    env,
    proc,
    stop: async () => {
      if (proc.exitCode === null) {
        proc.kill('SIGTERM');
        await new Promise((r) => proc.once('exit', r));
      }
      fs.rmSync(path.dirname(dir), { recursive: true, force: true });
    },
  };
}

/**
 * In a describe block: one emulator for the block (before), stopped after
 * it; while it runs, NKE_EMU_DIR names it, so the addon in this process (an
 * engine, `nke`, a helper it starts) finds the same emulator. The handle
 * is filled in by the before hook.
 */
export function useEmulator(): Emulator {
  const emu = {} as Emulator;
  let saved: string | undefined;
  before(async () => {
    Object.assign(emu, await startEmulator());
    saved = process.env.NKE_EMU_DIR;
    process.env.NKE_EMU_DIR = emu.dir;
  });
  after(async () => {
    if (saved === undefined) delete process.env.NKE_EMU_DIR;
    else process.env.NKE_EMU_DIR = saved;
    await emu.stop?.();
  });
  return emu;
}

/** Runs argv under the emulator's launcher; resolves with exit code and output. */
export function runUnder(
  emu: Emulator,
  argv: string[],
): { proc: ChildProcess; done: Promise<{ code: number | null; stdout: string; stderr: string }> } {
  const proc = spawn(launcher, ['run', '--', ...argv], { env: emu.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (d) => (stdout += d));
  proc.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    proc.on('exit', (code) => resolve({ code, stdout, stderr })),
  );
  return { proc, done };
}

/**
 * A real client program: python3 connects to 127.0.0.1:argv[1], sends each
 * further argument as one write, `gapSeconds` apart (also after the last one,
 * so the socket stays open that long), then closes.
 */
export function sender(gapSeconds: number): string[] {
  return [
    'python3',
    '-c',
    `import socket,sys,time\ns=socket.create_connection(("127.0.0.1",int(sys.argv[1])))\nfor a in sys.argv[2:]:\n s.sendall(a.encode()); time.sleep(${gapSeconds})\ns.close()`,
  ];
}

export { closeRecordingServers, recordingServer } from '../support/recordingServer';

export { waitFor };

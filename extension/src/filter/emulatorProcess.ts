// The Linux emulator of the kext (native/emu/build/nke-emud) as the extension
// starts it for NKE: Load Filter: where its runtime directory is, and a
// daemon that this window started and stops again on Unload / deactivate.
// No `vscode` import.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ActionableError } from '../commands/actionableError';
import { NKE_EMU_CTL_SOCK, NKE_EMU_DIR_ENV } from '../shared/abi';
import { assertPrivateDir } from '../shared/privateDir';

export interface EmulatorOptions {
  /** folder with nke-emud, nke-emu, libnkeshim.so */
  binDir: string;
  /** resolveEmulatorRuntimeDir (privateDir.ts) */
  runtimeDir: string;
  log: (line: string) => void;
  /**
   * The starter stops it itself when it is done (the CLI): run it in its own
   * process group, so a Ctrl-C meant for the program under the filter does
   * not end the filter first, and on Linux have the kernel end it if the
   * starter dies without stopping it (setpriv --pdeathsig), so none is left
   * behind.
   */
  tiedToStarter?: boolean;
}

let pdeathsigWrapper: string[] | null | undefined;

/** ['setpriv', '--pdeathsig', 'TERM', '--'] where util-linux's setpriv has the option; else null. */
function parentDeathWrapper(): string[] | null {
  if (pdeathsigWrapper !== undefined) return pdeathsigWrapper;
  pdeathsigWrapper = null;
  if (process.platform === 'linux') {
    const r = spawnSync('setpriv', ['--help'], { encoding: 'utf8', timeout: 5000 });
    if (r.status === 0 && r.stdout.includes('--pdeathsig')) {
      pdeathsigWrapper = ['setpriv', '--pdeathsig', 'TERM', '--'];
    }
  }
  return pdeathsigWrapper;
}

/** An nke-emud this window started; stop() ends it (held data is released by its fail-open policy). */
/** Path of one of the emulator's programs; an error with Open Settings when it is not built. */
export function emulatorBinary(binDir: string, name: 'nke-emud' | 'nke-emu'): string {
  const file = path.join(binDir, name);
  if (!fs.existsSync(file)) {
    throw new ActionableError(
      `emulator not built: ${file} is missing (run npm run build, or set nke.emulatorDir)`,
      {
        title: 'Open Settings',
        command: 'workbench.action.openSettings',
        args: ['nke.emulatorDir'],
      },
    );
  }
  return file;
}

export class EmulatorProcess {
  private constructor(
    private readonly child: ChildProcess,
    readonly runtimeDir: string,
  ) {}

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Starts nke-emud and resolves once its control socket exists (new, not a stale one). */
  static async start(o: EmulatorOptions, timeoutMs = 10000): Promise<EmulatorProcess> {
    const daemon = emulatorBinary(o.binDir, 'nke-emud');
    // The runtime directory holds the user-client sockets: 0700, ours only.
    // One that exists already and is someone else's is refused here, with the
    // same words nke-emud would log.
    fs.mkdirSync(o.runtimeDir, { recursive: true, mode: 0o700 });
    assertPrivateDir(
      o.runtimeDir,
      "the emulator's runtime directory",
      'set nke.emulatorRuntimeDir (or NKE_EMU_DIR) to a directory of your own',
    );
    const ctl = path.join(o.runtimeDir, NKE_EMU_CTL_SOCK);
    const since = Date.now();
    const wrapper = o.tiedToStarter ? parentDeathWrapper() : null;
    const argv = wrapper ? [...wrapper, daemon] : [daemon];
    const child = spawn(argv[0], argv.slice(1), {
      env: { ...process.env, [NKE_EMU_DIR_ENV]: o.runtimeDir },
      stdio: ['ignore', 'ignore', 'pipe'],
      detached: !!o.tiedToStarter,
    });
    let stderr = '';
    child.stderr!.on('data', (d) => {
      stderr = (stderr + d).slice(-4096);
      for (const line of String(d).trimEnd().split('\n')) o.log(`nke-emud: ${line}`);
    });
    const failed = new Promise<Error>((resolve) => {
      child.once('error', (e) => resolve(new Error(`cannot start ${daemon}: ${e.message}`)));
      child.once('exit', (code, sig) =>
        resolve(
          new Error(`nke-emud exited (${sig ?? `code ${code}`}) at start: ${stderr.trim() || 'no output'}`),
        ),
      );
    });
    let early: Error | undefined;
    void failed.then((e) => (early = e));
    for (const end = Date.now() + timeoutMs; !early;) {
      const st = fs.statSync(ctl, { throwIfNoEntry: false });
      if (st && st.mtimeMs >= since - 1000) break;
      if (Date.now() > end) {
        child.kill('SIGTERM');
        throw new Error(`nke-emud did not create ${ctl} within ${timeoutMs} ms`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    if (early) throw early;
    o.log(`started nke-emud (pid ${child.pid}) in ${o.runtimeDir}`);
    return new EmulatorProcess(child, o.runtimeDir);
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
  }
}

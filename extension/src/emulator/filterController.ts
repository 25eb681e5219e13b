// NKE: Load Filter / Unload Filter. On Linux (nke.mode "emulator"): make sure
// an emulator answers in the runtime directory (start nke-emud from
// nke.emulatorDir if none does), then connect. The kext path on macOS is not
// here yet (see loadKext). No `vscode` import: settings come in as a function.
import path from 'node:path';
import { ActionableError } from '../commands/actionableError';
import { EmulatorNotRunningError, type HelperSession, type SessionLog } from '../helperClient/helperSession';
import type { FilterMode } from '../model/workbenchModel';
import { EmulatorProcess, emulatorRuntimeDir } from './emulatorProcess';

export interface FilterControllerOptions {
  session: HelperSession;
  extensionRoot: string;
  settings: () => { mode: FilterMode; emulatorDir: string; emulatorRuntimeDir: string };
  log: SessionLog;
}

export class FilterController {
  /** The nke-emud this window started, if any: only that one is ours to stop. */
  private emulator?: EmulatorProcess;

  constructor(private readonly o: FilterControllerOptions) {}

  /** Folder with nke-emud, nke-emu and libnkeshim.so. */
  binDir(): string {
    return this.o.settings().emulatorDir || path.join(this.o.extensionRoot, 'native', 'emu', 'build');
  }

  /** Where the emulator's sockets are; the helper and Run Program Under Filter use the same. */
  runtimeDir(): string {
    return emulatorRuntimeDir(this.o.settings().emulatorRuntimeDir);
  }

  /** The pid of the nke-emud this window started (tests and the log). */
  get emulatorPid(): number | undefined {
    return this.emulator?.running ? this.emulator.pid : undefined;
  }

  async load(): Promise<void> {
    if (this.o.settings().mode === 'kext') return this.loadKext();
    try {
      await this.o.session.connect();
      return;
    } catch (e) {
      if (!(e instanceof EmulatorNotRunningError)) throw e;
      this.o.log.info(`no emulator answers in ${this.runtimeDir()}: starting nke-emud`);
    }
    if (this.emulator?.running) await this.emulator.stop(); // ours, but its endpoint is gone
    this.emulator = await EmulatorProcess.start({
      binDir: this.binDir(),
      runtimeDir: this.runtimeDir(),
      log: (line) => this.o.log.info(line),
    });
    await this.o.session.connect();
  }

  async unload(): Promise<void> {
    if (this.o.settings().mode === 'kext') return this.loadKext();
    if (!this.emulator?.running) {
      throw new ActionableError(
        `the emulator in ${this.runtimeDir()} was not started by this window; stop it where it was started (NKE: Disconnect detaches from it)`,
        { title: 'Disconnect', command: 'nke.disconnect' },
      );
    }
    await this.o.session.disconnect();
    await this.emulator.stop();
    this.o.log.info('stopped nke-emud');
    this.emulator = undefined;
  }

  // TODO(kext): build with the kext Makefile, load with kextutil (<= 10.15) or
  // `kmutil load -p` (11+) through an administrator prompt, diagnose with
  // `kextutil -t -n` / `kmutil print-diagnostics` (a TaskProvider, DESIGN.md).
  // Until then the workbench connects to a kext loaded by hand.
  private loadKext(): Promise<void> {
    return Promise.reject(
      new ActionableError(
        process.platform === 'darwin'
          ? 'loading and unloading the kext from the workbench is not implemented yet: load it with `sudo kmutil load -p <path>/NKEWorkbench.kext` (macOS 11+) or `sudo kextutil` (10.15 and older), then run NKE: Connect'
          : 'nke.mode is "kext" but the kext only loads on macOS; use the emulator on Linux',
        { title: 'Open Settings', command: 'workbench.action.openSettings', args: ['nke.mode'] },
      ),
    );
  }

  /** Stops the emulator this window started (deactivation). */
  async dispose(): Promise<void> {
    await this.emulator?.stop();
  }
}

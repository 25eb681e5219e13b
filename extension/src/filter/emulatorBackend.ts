// The emulator backend (nke.mode "emulator"; Linux, or a Mac without the
// kext): Load makes sure an emulator answers in the runtime directory,
// starting nke-emud from nke.emulatorDir when none does, then connects the
// helper. nke-emud's own messages go to their own output channel (the
// `emulatorOutput` port): its stderr when this window started it, else its
// log file in the runtime directory (EmulatorLogTail). No `vscode` import.
import path from 'node:path';
import { ActionableError } from '../commands/actionableError';
import { EmulatorNotRunningError, type HelperSession, type SessionLog } from '../helperClient/helperSession';
import { EmulatorLogTail } from './emulatorLogTail';
import { EmulatorProcess } from './emulatorProcess';
import { resolveEmulatorRuntimeDir } from '../shared/privateDir';
import type { FilterBackend, FilterBackendStatus, StepReporter } from './filterBackend';

export interface EmulatorBackendOptions {
  session: HelperSession;
  extensionRoot: string;
  settings: () => { emulatorDir: string; emulatorRuntimeDir: string };
  log: SessionLog;
  /** One line of nke-emud's stderr (the "NKE Emulator" output channel). */
  emulatorOutput: (line: string) => void;
  /** Shows nke-emud's output channel. */
  showEmulatorOutput: () => void;
}

export class EmulatorBackend implements FilterBackend {
  readonly kind = 'emulator' as const;
  /** The nke-emud this window started, if any: only that one is ours to stop. */
  private emulator?: EmulatorProcess;
  /** Follows the log of an emulator someone else started (NKE: Show Kernel Log). */
  private tail?: EmulatorLogTail;

  constructor(private readonly o: EmulatorBackendOptions) {}

  /** Folder with nke-emud, nke-emu and libnkeshim.so. */
  binDir(): string {
    return this.o.settings().emulatorDir || path.join(this.o.extensionRoot, 'native', 'emu', 'build');
  }

  /** Where the emulator's sockets are; the helper and Run Program Under Filter use the same. */
  runtimeDir(): string {
    return resolveEmulatorRuntimeDir(this.o.settings().emulatorRuntimeDir);
  }

  /** The pid of the nke-emud this window started (tests and the log). */
  get emulatorPid(): number | undefined {
    return this.emulator?.running ? this.emulator.pid : undefined;
  }

  async load(progress: StepReporter): Promise<void> {
    progress.step(`connecting to the emulator in ${this.runtimeDir()}`);
    try {
      await this.o.session.connect();
      return;
    } catch (e) {
      if (!(e instanceof EmulatorNotRunningError)) throw e;
      this.o.log.info(`no emulator answers in ${this.runtimeDir()}: starting nke-emud`);
    }
    if (this.emulator?.running) await this.emulator.stop(); // ours, but its endpoint is gone
    progress.step('starting nke-emud');
    this.stopTail(); // its stderr comes here from now on
    this.o.emulatorOutput(`starting nke-emud in ${this.runtimeDir()}`);
    this.emulator = await EmulatorProcess.start({
      binDir: this.binDir(),
      runtimeDir: this.runtimeDir(),
      log: (line) => this.o.emulatorOutput(line),
    });
    this.o.log.info(`started nke-emud (pid ${this.emulator.pid}) in ${this.runtimeDir()}`);
    progress.step(`nke-emud started (pid ${this.emulator.pid}); connecting the helper`);
    await this.o.session.connect();
  }

  async unload(progress: StepReporter): Promise<void> {
    if (!this.emulator?.running) {
      throw new ActionableError(
        `the emulator in ${this.runtimeDir()} was not started by this window; stop it where it was started (NKE: Disconnect detaches from it)`,
        { title: 'Disconnect', command: 'nke.disconnect' },
      );
    }
    progress.step('disconnecting the helper');
    await this.o.session.disconnect();
    progress.step(`stopping nke-emud (pid ${this.emulator.pid})`);
    await this.emulator.stop();
    this.o.log.info('stopped nke-emud');
    this.o.emulatorOutput('nke-emud stopped (NKE: Unload Filter)');
    this.emulator = undefined;
  }

  async connect(): Promise<void> {
    await this.o.session.connect();
  }

  status(): FilterBackendStatus {
    const pid = this.emulatorPid;
    return {
      kind: 'emulator',
      loadedByThisWindow: pid !== undefined,
      detail:
        pid !== undefined
          ? `nke-emud (pid ${pid}) started by this window in ${this.runtimeDir()}`
          : `the emulator in ${this.runtimeDir()} (not started by this window)`,
    };
  }

  log(): Promise<void> {
    if (this.emulatorPid === undefined) {
      // Not ours: its stderr is where it was started, but it writes the same
      // lines to its log file in the runtime directory.
      const dir = this.runtimeDir();
      if (this.tail && this.tail.runtimeDir !== dir) {
        this.stopTail(); // nke.emulatorRuntimeDir changed
      }
      if (!this.tail?.running) {
        this.tail = new EmulatorLogTail({ runtimeDir: dir, line: (l) => this.o.emulatorOutput(l) });
        this.o.emulatorOutput(
          `following the log of the emulator in ${dir} (${this.tail.file}; not started by this window)`,
        );
        this.tail.start();
      }
    }
    this.o.showEmulatorOutput();
    return Promise.resolve();
  }

  private stopTail(): void {
    this.tail?.stop();
    this.tail = undefined;
  }

  async dispose(): Promise<void> {
    this.stopTail();
    await this.emulator?.stop();
  }
}

// The emulator backend (nke.mode "emulator"; Linux, or a Mac without the
// kext): Load makes sure an emulator answers in the runtime directory,
// starting nke-emud from nke.emulatorDir when none does, then connects the
// helper. nke-emud's own messages go to their own output channel (the
// `emulatorOutput` port). No `vscode` import.
import path from 'node:path';
import { ActionableError } from '../commands/actionableError';
import { EmulatorNotRunningError, type HelperSession, type SessionLog } from '../helperClient/helperSession';
import { EmulatorProcess, emulatorRuntimeDir } from './emulatorProcess';
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

  constructor(private readonly o: EmulatorBackendOptions) {}

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
      // Its stderr is where it was started (npm start prints it in its console).
      this.o.emulatorOutput(
        `the emulator in ${this.runtimeDir()} was not started by this window: its messages go to the console that started it (NKE: Load Filter with no emulator running starts one whose messages come here)`,
      );
    }
    this.o.showEmulatorOutput();
    return Promise.resolve();
  }

  async dispose(): Promise<void> {
    await this.emulator?.stop();
  }
}

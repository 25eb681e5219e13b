// The FilterBackend the commands hold: at each call, the backend nke.mode
// names (the setting may change while the window is open). No `vscode` import.
import type { FilterMode } from '../model/workbenchModel';
import type { EmulatorBackend } from './emulatorBackend';
import type { FilterBackend, FilterBackendStatus, StepReporter } from './filterBackend';
import type { KextBackend } from './kextBackend';

export class FilterByMode implements FilterBackend {
  constructor(
    readonly emulator: EmulatorBackend,
    readonly kext: KextBackend,
    private readonly mode: () => FilterMode,
  ) {}

  private get current(): FilterBackend {
    return this.mode() === 'kext' ? this.kext : this.emulator;
  }

  get kind(): FilterMode {
    return this.current.kind;
  }

  /** The pid of the nke-emud this window started (tests and the log). */
  get emulatorPid(): number | undefined {
    return this.emulator.emulatorPid;
  }

  load(progress: StepReporter): Promise<void> {
    return this.current.load(progress);
  }

  unload(progress: StepReporter): Promise<void> {
    return this.current.unload(progress);
  }

  connect(): Promise<void> {
    return this.current.connect();
  }

  status(): FilterBackendStatus {
    return this.current.status();
  }

  log(): Promise<void> {
    return this.current.log();
  }

  async dispose(): Promise<void> {
    await Promise.all([this.emulator.dispose(), this.kext.dispose()]);
  }
}

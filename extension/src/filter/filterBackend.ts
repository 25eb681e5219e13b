// The one interface the commands use to reach a filter, whichever is behind
// the views (docs/architecture.md, Components): the Linux emulator
// (emulatorBackend.ts) or the macOS kext (kextBackend.ts). No `vscode`
// import: the window's pieces (tasks, progress, output channels) come in as
// ports, so the backends' decisions are tested without VS Code.
import type { FilterMode } from '../model/workbenchModel';

/** Where a backend reports the step it is on (one progress notification shows them). */
export interface StepReporter {
  step(message: string): void;
}

/** What a backend says about itself (the log, tests; the Filter view reads the model). */
export interface FilterBackendStatus {
  kind: FilterMode;
  /** true when this window loaded the filter (started nke-emud, or loaded the kext). */
  loadedByThisWindow: boolean;
  /** One line for people: what is loaded, where, by whom. */
  detail: string;
}

export interface FilterBackend {
  readonly kind: FilterMode;
  /** NKE: Load Filter: make the filter answer (start or build and load it), then connect the helper. */
  load(progress: StepReporter): Promise<void>;
  /** NKE: Unload Filter: disconnect this window's helper first, then stop or unload the filter. */
  unload(progress: StepReporter): Promise<void>;
  /** NKE: Connect: attach the helper to a filter that is already loaded. */
  connect(): Promise<void>;
  status(): FilterBackendStatus;
  /** NKE: Show Kernel Log: the filter's own messages (kernel log stream, or nke-emud's output). */
  log(): Promise<void>;
  /** Stops what this window started (deactivation). */
  dispose(): Promise<void>;
}

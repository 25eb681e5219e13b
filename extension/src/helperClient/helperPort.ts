// What the extension asks of the helper process (see DESIGN.md: the helper
// owns the addon, the filter connection and the live model feed). The client
// that implements this over JSON-RPC is written separately; until one is set,
// every command that needs it fails with HelperUnavailableError.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ActionableError } from '../commands/commandWrapper';

export type PayloadVerdict = 'reinjectOriginal' | 'drop';

export interface HelperPort {
  /** Builds (kext mode), loads and opens the filter. */
  loadFilter(): Promise<void>;
  unloadFilter(): Promise<void>;
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  /** Paused: the filter passes everything through without deferring. */
  setInterceptionPaused(paused: boolean): Promise<void>;
  releasePayload(id: string, verdict: PayloadVerdict): Promise<void>;
  readonly onDidExit?: (listener: (reason: string) => void) => { dispose(): void };
}

export class HelperUnavailableError extends ActionableError {
  constructor(reason: string) {
    super(`helper process not available: ${reason}`, {
      title: 'Open Settings',
      command: 'workbench.action.openSettings',
      args: ['nke.'],
    });
    this.name = 'HelperUnavailableError';
  }
}

/** Holds the helper connection of this window, if any. */
export class HelperSlot {
  private port: HelperPort | undefined;

  constructor(private readonly extensionRoot: string) {}

  set(port: HelperPort | undefined): void {
    this.port = port;
  }

  get current(): HelperPort | undefined {
    return this.port;
  }

  /** The connected helper, or an error saying why there is none and what to do. */
  require(): HelperPort {
    if (this.port) return this.port;
    const entry = path.join(this.extensionRoot, 'dist', 'helper.js');
    if (!fs.existsSync(entry)) {
      throw new HelperUnavailableError(`${entry} is not built (run npm run build in the extension's folder)`);
    }
    throw new HelperUnavailableError(
      'no helper process is connected to this window (the helper client is not part of this build yet)',
    );
  }
}

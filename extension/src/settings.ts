// Typed access to the nke.* settings declared in package.json.
import * as vscode from 'vscode';
import type { FilterMode } from './model/workbenchModel';

export interface NkeSettings {
  mode: FilterMode;
  /** Folder holding nke-emud, nke-emu and libnkeshim.so; empty = the extension's native/emu/build. */
  emulatorDir: string;
  holdTimeoutMs: number;
  historyLimit: number;
}

export function readSettings(): NkeSettings {
  const c = vscode.workspace.getConfiguration('nke');
  return {
    mode: c.get<FilterMode>('mode', 'emulator'),
    emulatorDir: c.get<string>('emulatorDir', ''),
    holdTimeoutMs: c.get<number>('holdTimeoutMs', 5000),
    historyLimit: c.get<number>('historyLimit', 1000),
  };
}

// What the in-host tests against the real emulator share: the extension's
// API, a private emulator runtime directory set in the settings, and the
// clean-up after each test (programs killed, recording servers closed) and
// after the file (Unload Filter, the settings put back, the directory gone).
import * as assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { NkeWorkbenchApi } from '../../extension/src/extension';
import { closeRecordingServers } from '../support/recordingServer';

export const extensionId = 'nkeworkbench.nke-workbench';

export function label(item: vscode.TreeItem): string {
  return typeof item.label === 'string' ? item.label : (item.label?.label ?? '');
}

/** Polls `fn` every `everyMs` until it returns something truthy. */
export async function until<T>(
  what: string,
  fn: () => T | undefined | false,
  ms = 15000,
  everyMs = 50,
): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export interface LiveSession {
  api: NkeWorkbenchApi;
  /** the private directory of this file's tests; the emulator's runtime directory is `runtimeDir` in it */
  tmp: string;
  runtimeDir: string;
  /** native/emu/build/nke-emu of the extension under test */
  launcher: string;
  /** programs the tests start: killed after each test */
  programs: ChildProcess[];
}

/**
 * In a describe block: the extension activated, nke.emulatorRuntimeDir a
 * private directory and `settings` set (before), NKE: Load Filter run when
 * `loadFilter`; after each test the programs killed and the recording
 * servers closed; after the block the filter unloaded and every setting
 * put back. The handle is filled in by the before hook.
 */
export function useLiveSession(
  prefix: string,
  settings: Record<string, unknown>,
  opts: { loadFilter: boolean },
): LiveSession {
  const s = { programs: [] as ChildProcess[] } as LiveSession;
  const config = () => vscode.workspace.getConfiguration('nke');
  before(async () => {
    const ext = vscode.extensions.getExtension<NkeWorkbenchApi>(extensionId);
    assert.ok(ext, `${extensionId} is not loaded in this extension host`);
    s.api = await ext.activate();
    s.launcher = path.join(ext.extensionPath, 'native/emu/build/nke-emu');
    assert.ok(fs.existsSync(s.launcher), `${s.launcher} is not built (npm run build)`);
    s.tmp = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    s.runtimeDir = path.join(s.tmp, 'run');
    await config().update('emulatorRuntimeDir', s.runtimeDir, vscode.ConfigurationTarget.Global);
    for (const [k, v] of Object.entries(settings)) {
      await config().update(k, v, vscode.ConfigurationTarget.Global);
    }
    if (opts.loadFilter) {
      await vscode.commands.executeCommand('workbench.view.extension.nke');
      await vscode.commands.executeCommand('nke.loadFilter');
      assert.equal(s.api.model.link.status, 'connected', JSON.stringify(s.api.model.link));
    }
  });
  afterEach(() => {
    for (const p of s.programs.splice(0)) p.kill('SIGKILL');
    closeRecordingServers();
  });
  after(async () => {
    await vscode.commands.executeCommand('nke.unloadFilter');
    for (const k of ['emulatorRuntimeDir', ...Object.keys(settings)]) {
      await config().update(k, undefined, vscode.ConfigurationTarget.Global);
    }
    if (s.tmp) fs.rmSync(s.tmp, { recursive: true, force: true });
  });
  return s;
}

// Composes the filter behind the commands: the `nke` task provider, the
// emulator backend (nke-emud's output in the "NKE Emulator" channel) and the
// kext backend (the tasks run in their terminals, the Mac's tools run
// directly), behind one FilterByMode.
import { execFile } from 'node:child_process';
import path from 'node:path';
import * as vscode from 'vscode';
import type { HelperSession } from '../helperClient/helperSession';
import { readSettings } from '../settings';
import { type KextTarget } from '../tasks/kextCommandLines';
import { macOsOfThisMachine, NkeTaskProvider, registerNkeTasks } from '../tasks/nkeTaskProvider';
import { runTaskToEnd } from '../tasks/taskRunner';
import { EmulatorBackend } from './emulatorBackend';
import { resolveEmulatorRuntimeDir } from '../shared/privateDir';
import { FilterByMode } from './filterByMode';
import { type CommandResult, KextBackend } from './kextBackend';

export interface FilterWindow {
  filter: FilterByMode;
  tasks: NkeTaskProvider;
  disposable: vscode.Disposable;
}

function run(command: string, args: string[]): Promise<CommandResult> {
  return new Promise((resolve) => {
    execFile(command, args, { encoding: 'utf8', timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ code, stdout: stdout ?? '', stderr: stderr || (err && code === null ? err.message : '') });
    });
  });
}

/** Where the addon task builds the helper's addon on a Mac (per extension version and arch). */
export function macAddonDir(context: vscode.ExtensionContext): string {
  const version = (context.extension.packageJSON as { version?: string }).version ?? 'dev';
  return path.join(context.globalStorageUri.fsPath, `addon-${version}-${process.platform}-${process.arch}`);
}

/** The helper's addon built on this Mac (NKE_ADDON for a root helper). */
export function macAddonPath(context: vscode.ExtensionContext): string {
  return path.join(macAddonDir(context), 'nke_addon.node');
}

/** nke.kextBuilt / nke.kextLoaded: the walkthrough's completion events for its Mac steps. */
function registerTaskContexts(): vscode.Disposable {
  const keys: Partial<Record<string, string>> = {
    'kext-build': 'nke.kextBuilt',
    'kext-load': 'nke.kextLoaded',
  };
  return vscode.tasks.onDidEndTaskProcess((e) => {
    const def = e.execution.task.definition;
    const key = def.type === 'nke' ? keys[String(def.task)] : undefined;
    if (key && e.exitCode === 0) void vscode.commands.executeCommand('setContext', key, true);
  });
}

export function registerFilter(o: {
  context: vscode.ExtensionContext;
  session: HelperSession;
  log: vscode.LogOutputChannel;
}): FilterWindow {
  const root = o.context.extensionPath;
  const emulatorOutput = vscode.window.createOutputChannel('NKE Emulator');
  const kext = (): KextTarget => {
    const s = readSettings();
    return { dir: s.kextDir || path.join(root, 'kext'), bundle: s.kextBundle, bundleId: s.kextBundleId };
  };
  const addonOutDir = () => macAddonDir(o.context);
  const emulator = new EmulatorBackend({
    session: o.session,
    extensionRoot: root,
    settings: readSettings,
    log: o.log,
    emulatorOutput: (line) => emulatorOutput.appendLine(line),
    showEmulatorOutput: () => emulatorOutput.show(true),
  });
  const tasks = new NkeTaskProvider({
    extensionRoot: root,
    platform: process.platform,
    macOs: macOsOfThisMachine(),
    kext,
    emulatorSourceDir: () => readSettings().emulatorSourceDir || path.join(root, 'native', 'emu'),
    emulatorBinDir: () => emulator.binDir(),
    emulatorRuntimeDir: () => resolveEmulatorRuntimeDir(readSettings().emulatorRuntimeDir),
    addonOutDir,
  });
  const kextBackend = new KextBackend({
    session: o.session,
    log: o.log,
    platform: process.platform,
    macOs: macOsOfThisMachine(),
    kext,
    addonPath: () => macAddonPath(o.context),
    runTask: (name, transcript) => runTaskToEnd(tasks.task(name, { transcript })),
    exec: run,
    showLog: async () => {
      await vscode.tasks.executeTask(tasks.task('kext-log'));
    },
  });
  const filter = new FilterByMode(emulator, kextBackend, () => readSettings().mode);
  return {
    filter,
    tasks,
    disposable: vscode.Disposable.from(emulatorOutput, registerNkeTasks(tasks), registerTaskContexts()),
  };
}

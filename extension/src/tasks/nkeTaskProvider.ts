// The `nke` TaskProvider: the kext's build / load / unload / diagnose / log
// tasks (on the folder nke.kextDir names), the emulator's build and start,
// and the helper addon's build on macOS. Build tasks use the extension's
// problem matcher ($nke-clang, package.json), so compile errors land in the
// Problems view; load and diagnose use $nke-kext for missing symbols and
// dependencies. On Linux the macOS-only tasks say so and exit non-zero.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import * as vscode from 'vscode';
import { addonBuildPlan } from './addonBuildPlan';
import { withAbsoluteDiagnostics } from './compilerOutput';
import { withKextDiagnostics } from './kextDiagnostics';
import {
  type KextTarget,
  kextCommandLine,
  type KextTaskKind,
  type MacOs,
  needsMacOsCommandLine,
  shQuote,
  withTranscript,
} from './kextCommandLines';
import {
  isNkeTaskName,
  type NkeTaskDefinition,
  nkeTaskLabels,
  type NkeTaskName,
  nkeTaskNames,
  needsMacOs,
} from './nkeTaskDefinition';

export interface NkeTaskEnvironment {
  extensionRoot: string;
  platform: NodeJS.Platform;
  /** The Mac the tasks run on (sw_vers); only asked on macOS. */
  macOs: () => MacOs;
  kext: () => KextTarget;
  /** folder whose Makefile builds the emulator (nke.emulatorSourceDir) */
  emulatorSourceDir: () => string;
  emulatorBinDir: () => string;
  emulatorRuntimeDir: () => string;
  /** where the macOS addon is built (the extension's global storage) */
  addonOutDir: () => string;
}

/** Options of a task the extension runs itself (Load Filter), not listed in Run Task. */
export interface NkeTaskOptions {
  /** also write the task's output to this file */
  transcript?: string;
}

/** `sw_vers -productVersion` of this Mac, asked once. */
export function macOsOfThisMachine(): () => MacOs {
  let cached: MacOs | undefined;
  return () =>
    (cached ??= { version: execFileSync('sw_vers', ['-productVersion'], { encoding: 'utf8' }).trim() });
}

const bash = { executable: '/bin/bash', shellArgs: ['-c'] };

export class NkeTaskProvider implements vscode.TaskProvider {
  static readonly type = 'nke';

  constructor(private readonly env: NkeTaskEnvironment) {}

  provideTasks(): vscode.Task[] {
    return nkeTaskNames.map((name) => this.task(name));
  }

  resolveTask(task: vscode.Task): vscode.Task | undefined {
    const name = (task.definition as Partial<NkeTaskDefinition>).task;
    if (!isNkeTaskName(name)) return undefined;
    return this.task(name, {}, task.definition as NkeTaskDefinition);
  }

  /** The task `name`, as Run Task offers it or as Load Filter runs it. */
  task(name: NkeTaskName, opts: NkeTaskOptions = {}, definition?: NkeTaskDefinition): vscode.Task {
    const def: NkeTaskDefinition = definition ?? { type: 'nke', task: name };
    const label = nkeTaskLabels[name];
    const { commandLine, cwd, matchers, background } = this.commandFor(name, label);
    const line = opts.transcript ? withTranscript(commandLine, opts.transcript) : commandLine;
    const task = new vscode.Task(
      def,
      vscode.TaskScope.Workspace,
      label,
      'nke',
      new vscode.ShellExecution(line, { cwd, ...bash, env: this.envFor(name) }),
      matchers,
    );
    if (name.endsWith('-build')) task.group = vscode.TaskGroup.Build;
    task.isBackground = background;
    // Shown in the terminal: sudo may ask for a password there.
    task.presentationOptions = {
      reveal: vscode.TaskRevealKind.Always,
      panel: vscode.TaskPanelKind.Dedicated,
    };
    task.detail = this.detail(name);
    return task;
  }

  private commandFor(
    name: NkeTaskName,
    label: string,
  ): { commandLine: string; cwd: string; matchers: string[]; background: boolean } {
    const { env } = this;
    if (needsMacOs(name) && env.platform !== 'darwin') {
      return {
        commandLine: needsMacOsCommandLine(`nke: ${label}`, env.platform),
        cwd: env.extensionRoot,
        matchers: [],
        background: false,
      };
    }
    switch (name) {
      case 'emulator-build': {
        const dir = env.emulatorSourceDir();
        return {
          commandLine: withAbsoluteDiagnostics(`make -C ${shQuote(dir)}`, dir),
          cwd: dir,
          matchers: ['$nke-clang'],
          background: false,
        };
      }
      case 'emulator-start':
        return {
          commandLine: `mkdir -p -m 0700 ${shQuote(env.emulatorRuntimeDir())} && exec ${shQuote(path.join(env.emulatorBinDir(), 'nke-emud'))}`,
          cwd: env.extensionRoot,
          matchers: [],
          background: true,
        };
      case 'addon-build':
        return {
          commandLine: withAbsoluteDiagnostics(
            addonBuildPlan(process.arch, env.addonOutDir()).commandLine,
            env.extensionRoot,
          ),
          cwd: env.extensionRoot,
          matchers: ['$nke-clang'],
          background: false,
        };
      default: {
        const kind = name.slice('kext-'.length) as KextTaskKind;
        const k = env.kext();
        let commandLine = kextCommandLine(kind, env.macOs(), k);
        const matchers: string[] = [];
        if (kind === 'build') {
          commandLine = withAbsoluteDiagnostics(commandLine, k.dir);
          matchers.push('$nke-clang');
        }
        if (kind === 'load' || kind === 'diagnose') {
          commandLine = withKextDiagnostics(
            commandLine,
            path.join(k.dir, k.bundle, 'Contents', 'Info.plist'),
          );
          matchers.push('$nke-kext');
        }
        return { commandLine, cwd: k.dir, matchers, background: kind === 'log' };
      }
    }
  }

  private envFor(name: NkeTaskName): Record<string, string> | undefined {
    return name === 'emulator-start' ? { NKE_EMU_DIR: this.env.emulatorRuntimeDir() } : undefined;
  }

  private detail(name: NkeTaskName): string {
    if (needsMacOs(name) && this.env.platform !== 'darwin') return 'macOS only';
    switch (name) {
      case 'emulator-build':
      case 'emulator-start':
        return name === 'emulator-build'
          ? `make in ${this.env.emulatorSourceDir()}`
          : `nke-emud in ${this.env.emulatorRuntimeDir()}`;
      case 'addon-build':
        return `the helper's addon with the Xcode toolchain, into ${this.env.addonOutDir()}`;
      default:
        return `${this.env.kext().bundleId} in ${this.env.kext().dir}`;
    }
  }
}

export function registerNkeTasks(provider: NkeTaskProvider): vscode.Disposable {
  return vscode.tasks.registerTaskProvider(NkeTaskProvider.type, provider);
}

// The kext backend (nke.mode "kext" on macOS). Load Filter: build the kext
// (`nke: kext build`), see which copy is loaded, load this build (`nke: kext
// load`, sudo asks in the task terminal), build the helper's addon on first
// use (`nke: addon build (macOS)`), start the helper as root through an
// administrator prompt, connect. Each failed step is explained from its
// output (kextLoadDiagnosis.ts). The tasks and the Mac's tools come in as
// ports, so this runs without VS Code in tests. No `vscode` import.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ActionableError } from '../commands/actionableError';
import type { HelperSession, SessionLog } from '../helperClient/helperSession';
import { type KextTarget, loadedKextQuery, type MacOs } from '../tasks/kextCommandLines';
import type { NkeTaskName } from '../tasks/nkeTaskDefinition';
import type { FilterBackend, FilterBackendStatus, StepReporter } from './filterBackend';
import {
  diagnoseLoadFailure,
  diagnoseUnloadFailure,
  type KextDiagnosis,
  loadedCopyState,
  olderCopyLoaded,
  parseBinaryUuids,
  parseLoadedKext,
  showOutputAction,
} from './kextLoadDiagnosis';

export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface KextBackendOptions {
  session: HelperSession;
  log: SessionLog;
  platform: NodeJS.Platform;
  macOs: () => MacOs;
  kext: () => KextTarget;
  /** the helper's addon built for this Mac (absent until the addon build task ran) */
  addonPath: () => string;
  /** Runs an `nke` task in its terminal, its output also written to `transcript`; resolves with its exit code. */
  runTask: (name: NkeTaskName, transcript: string) => Promise<number | undefined>;
  /** Runs a program without a terminal (csrutil, kmutil showloaded, dwarfdump, uname). */
  exec: (command: string, args: string[]) => Promise<CommandResult>;
  /** Opens the kernel log stream (the `nke: kext log` task). */
  showLog: () => Promise<void>;
}

export class KextError extends ActionableError {
  constructor(
    readonly diagnosis: KextDiagnosis,
    step: string,
  ) {
    super(`${step}: ${diagnosis.message}`, diagnosis.action);
    this.name = 'KextError';
  }
}

export class KextBackend implements FilterBackend {
  readonly kind = 'kext' as const;
  private loadedHere = false;
  private readonly transcripts = fs.mkdtempSync(path.join(os.tmpdir(), 'nke-kext-steps-'));

  constructor(private readonly o: KextBackendOptions) {
    fs.chmodSync(this.transcripts, 0o700);
  }

  private requireMac(): void {
    if (this.o.platform !== 'darwin') {
      throw new ActionableError(
        `nke.mode is "kext" but the kext loads on macOS only (this is ${this.o.platform}): open the folder on a test Mac with Remote-SSH, or use the emulator here`,
        { title: 'Open Settings', command: 'workbench.action.openSettings', args: ['nke.mode'] },
      );
    }
  }

  private transcript(step: string): string {
    const file = path.join(this.transcripts, `${step}.log`);
    fs.rmSync(file, { force: true });
    return file;
  }

  private read(file: string): string {
    return fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  }

  private async situation() {
    const [machine, sip] = await Promise.all([
      this.o.exec('uname', ['-m']),
      this.o.exec('csrutil', ['status']),
    ]);
    return { macOs: this.o.macOs(), machine: machine.stdout.trim(), csrutilStatus: sip.stdout || undefined };
  }

  async load(progress: StepReporter): Promise<void> {
    this.requireMac();
    const k = this.o.kext();
    progress.step(`1/5 building ${k.bundle} (nke: kext build)`);
    const build = this.transcript('build');
    const built = await this.o.runTask('kext-build', build);
    if (built !== 0) {
      throw new KextError(
        {
          problem: 'build-failed',
          message: `make exited ${built ?? 'without a status'}; the compiler's errors are in the Problems view`,
          action: { title: 'Show Problems', command: 'workbench.actions.view.problems' },
        },
        'building the kext failed',
      );
    }

    progress.step('2/5 checking which copy of the kext is loaded');
    const q = loadedKextQuery(this.o.macOs(), k.bundleId);
    const loaded = parseLoadedKext((await this.o.exec(q.command, q.args)).stdout, k.bundleId);
    const binary = path.join(k.dir, k.bundle, 'Contents', 'MacOS', path.basename(k.bundle, '.kext'));
    const uuids = parseBinaryUuids((await this.o.exec('dwarfdump', ['--uuid', binary])).stdout);
    const state = loadedCopyState(loaded, uuids);
    if (state === 'older-copy') throw new KextError(olderCopyLoaded(loaded), 'loading the kext');
    if (state === 'not-loaded') {
      progress.step('3/5 loading the kext (nke: kext load; sudo asks for your password in its terminal)');
      const t = this.transcript('load');
      const code = await this.o.runTask('kext-load', t);
      if (code !== 0) {
        throw new KextError(
          diagnoseLoadFailure(this.read(t), code, await this.situation(), t),
          'loading the kext failed',
        );
      }
      this.loadedHere = true;
    } else {
      progress.step(`3/5 this build is already loaded (${loaded?.bundleId} ${loaded?.version})`);
    }

    if (!fs.existsSync(this.o.addonPath())) {
      progress.step("4/5 building the helper's addon for this Mac (first use; nke: addon build)");
      const t = this.transcript('addon');
      const code = await this.o.runTask('addon-build', t);
      if (code !== 0 || !fs.existsSync(this.o.addonPath())) {
        throw new ActionableError(
          `building the helper's addon failed (exit ${code ?? 'unknown'}): install the Xcode command line tools (xcode-select --install) and load again; compiler errors are in the Problems view`,
          showOutputAction(t),
        );
      }
    } else {
      progress.step("4/5 the helper's addon is built");
    }

    progress.step('5/5 starting the helper as root (administrator prompt) and connecting');
    await this.o.session.connect();
  }

  async unload(progress: StepReporter): Promise<void> {
    this.requireMac();
    // The kext refuses (EBUSY) while a user client is open: ours goes first.
    progress.step("disconnecting this window's helper");
    await this.o.session.disconnect();
    progress.step('unloading the kext (nke: kext unload; sudo asks in its terminal)');
    const t = this.transcript('unload');
    const code = await this.o.runTask('kext-unload', t);
    if (code !== 0) {
      throw new KextError(diagnoseUnloadFailure(this.read(t), code, t), 'unloading the kext failed');
    }
    this.loadedHere = false;
  }

  async connect(): Promise<void> {
    this.requireMac();
    await this.o.session.connect();
  }

  status(): FilterBackendStatus {
    const k = this.o.kext();
    return {
      kind: 'kext',
      loadedByThisWindow: this.loadedHere,
      detail: `${k.bundleId} (${path.join(k.dir, k.bundle)})${this.loadedHere ? ', loaded by this window' : ''}`,
    };
  }

  async log(): Promise<void> {
    this.requireMac();
    await this.o.showLog();
  }

  async dispose(): Promise<void> {
    // A loaded kext stays loaded when the window closes: unloading is a
    // decision (EBUSY while sockets live), never a side effect.
    fs.rmSync(this.transcripts, { recursive: true, force: true });
  }
}

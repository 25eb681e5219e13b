// How `nke watch` and `nke run` reach a filter: the kext where the addon
// speaks IOKit (macOS), else the emulator, starting nke-emud in the user's
// private runtime directory when none answers there (unless --no-start) and
// stopping the one they started when they are done. The decisions are pure
// functions (unit-tested for both platforms: the kext cannot load here); the
// rest runs them.
import fs from 'node:fs';
import path from 'node:path';
import { EmulatorProcess } from '../filter/emulatorProcess';
import { EngineError, type FilterEngine } from '../helper/engine';
import type { NkeErrorCode } from '../shared/helperProtocol';
import { resolveEmulatorRuntimeDir } from '../shared/privateDir';
import { CliError, ExitCode } from './cliArgs';

export type Transport = 'emulator' | 'iokit';

/** What to do after the first attempt to open the filter failed with `code`. */
export function nextStepAfterFailure(
  transport: Transport,
  code: NkeErrorCode,
  noStart: boolean,
): 'start-emulator' | 'give-up' {
  // Only a directory where no emulator answers gets one of ours: a refused
  // directory (NKE_NOT_PRIVATE), a busy filter or a missing kext stay as they are.
  return transport === 'emulator' && code === 'NKE_EMU_NOT_RUNNING' && !noStart
    ? 'start-emulator'
    : 'give-up';
}

/** Why the filter is unavailable, and what to do, for the error `nke` exits 3 with. */
export function unavailableMessage(
  transport: Transport,
  code: NkeErrorCode,
  cause: string,
  runtimeDir: string,
  noStart: boolean,
): string {
  if (transport === 'iokit') {
    if (code === 'NKE_NOT_LOADED') {
      return `${cause}: nke uses the kext on macOS and does not load it itself (that needs sudo and may need approval); load it first (NKE: Load Filter in VS Code, or sudo make -C kext load), then run nke again`;
    }
    if (code === 'NKE_NOT_PERMITTED') return `${cause}: run nke as root (sudo nke ...) to use the kext`;
  }
  if (code === 'NKE_BUSY') {
    return `${cause}: the filter serves one client at a time; stop the other nke watch / nke run, or Disconnect in VS Code`;
  }
  if (code === 'NKE_EMU_NOT_RUNNING' && noStart) {
    return `${cause} (in ${runtimeDir}) and --no-start was given: start it (native/emu/build/nke-emu daemon), or leave out --no-start and nke starts one for as long as it runs`;
  }
  return cause;
}

/** The program's argv under the filter: through the emulator's launcher (LD_PRELOAD), or as it is under the kext. */
export function programArgv(transport: Transport, cmd: readonly string[], launcher: () => string): string[] {
  return transport === 'iokit' ? [...cmd] : [launcher(), 'run', '--', ...cmd];
}

/** Folder of the emulator's programs: $NKE_EMU_BIN_DIR, else native/emu/build next to this bundle. */
export function emulatorBinDir(): string {
  if (process.env.NKE_EMU_BIN_DIR) return process.env.NKE_EMU_BIN_DIR;
  if (process.env.NKE_EMU_LAUNCHER) return path.dirname(process.env.NKE_EMU_LAUNCHER);
  for (const up of ['..', '../..', '../../..']) {
    const dir = path.resolve(__dirname, up, 'native/emu/build');
    if (fs.existsSync(path.join(dir, 'nke-emu'))) return dir;
  }
  throw new CliError(
    'the emulator is not built (native/emu/build/nke-emu is missing): run npm install, or set NKE_EMU_BIN_DIR to the folder with nke-emud, nke-emu and libnkeshim.so',
    ExitCode.filterUnavailable,
  );
}

export function emulatorLauncher(): string {
  return process.env.NKE_EMU_LAUNCHER ?? path.join(emulatorBinDir(), 'nke-emu');
}

const BUSY_RETRY_MS = 3000;

/** The filter a watch or run holds, and the nke-emud it started (if it did). */
export interface FilterAccess {
  transport: Transport;
  /** the runtime directory (emulator) */
  runtimeDir?: string;
  /** the nke-emud this process started; stopped by close() */
  started?: EmulatorProcess;
  /** stops what this process started (the engine is disposed by its owner first) */
  close(): Promise<void>;
}

function connectOnce(
  engine: FilterEngine,
): { ok: true } | { ok: false; code: NkeErrorCode; message: string } {
  try {
    engine.connect();
    return { ok: true };
  } catch (e) {
    const err = e as EngineError;
    return { ok: false, code: err instanceof EngineError ? err.code : 'NKE_ERROR', message: err.message };
  }
}

/**
 * Connects the engine to the filter, starting nke-emud when the emulator's
 * directory has none (see nextStepAfterFailure). `say` gets one line for
 * people (stderr) when nke-emud is started.
 */
export async function openFilter(
  engine: FilterEngine,
  transport: Transport,
  o: { noStart: boolean; say: (line: string) => void },
): Promise<FilterAccess> {
  const runtimeDir = transport === 'emulator' ? resolveEmulatorRuntimeDir() : undefined;
  let first = connectOnce(engine);
  // `nke status` with no watch or run opens the filter for a moment: a
  // client that is gone again within BUSY_RETRY_MS is not "another client".
  for (const end = Date.now() + BUSY_RETRY_MS; !first.ok && first.code === 'NKE_BUSY' && Date.now() < end;) {
    await new Promise((r) => setTimeout(r, 100));
    first = connectOnce(engine);
  }
  if (first.ok) return { transport, runtimeDir, close: async () => {} };
  if (nextStepAfterFailure(transport, first.code, o.noStart) === 'give-up') {
    throw new CliError(
      `cannot connect to the filter: ${unavailableMessage(transport, first.code, first.message, runtimeDir ?? '', o.noStart)}`,
      ExitCode.filterUnavailable,
    );
  }
  const lines: string[] = [];
  let started: EmulatorProcess | undefined;
  try {
    started = await EmulatorProcess.start({
      binDir: emulatorBinDir(),
      runtimeDir: runtimeDir!,
      log: (l) => lines.push(l),
      tiedToStarter: true,
    });
  } catch (e) {
    // Another nke started one in the same directory meanwhile (one per
    // directory: ours exits naming it): use that one.
    const again = connectOnce(engine);
    if (again.ok) return { transport, runtimeDir, close: async () => {} };
    if (e instanceof CliError) throw e;
    throw new CliError(
      `cannot start the emulator in ${runtimeDir}: ${(e as Error).message}`,
      ExitCode.filterUnavailable,
    );
  }
  const second = connectOnce(engine);
  if (!second.ok) {
    await started.stop();
    throw new CliError(
      `started nke-emud in ${runtimeDir} but cannot connect to it: ${second.message}${lines.length ? `\n${lines.slice(-5).join('\n')}` : ''}`,
      ExitCode.filterUnavailable,
    );
  }
  o.say(`started nke-emud (pid ${started.pid}) in ${runtimeDir}; it stops when this nke exits`);
  return {
    transport,
    runtimeDir,
    started,
    close: () => started!.stop(),
  };
}

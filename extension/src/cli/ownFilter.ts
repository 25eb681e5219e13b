// `nke watch` and `nke run`: this process becomes the filter's client (one
// client at a time), starts nke-emud when none answers (filterAccess.ts),
// serves the control socket so `nke status|show|verdict|extend` from another
// terminal reach its live model, and writes events to its event log. `run`
// wraps a program the way strace and time do: the program's stdin, stdout
// and stderr are its own, and nke exits with the program's status.
import { spawn } from 'node:child_process';
import os from 'node:os';
import { FilterEngine } from '../helper/engine';
import type { NativeAddon } from '../helper/native';
import { ControlBusyError, serveControl } from '../helper/controlServer';
import { controlDir, ControlDirError } from '../shared/controlSocket';
import type { RulesConfig } from '../shared/helperProtocol';
import {
  CliError,
  type CommandSpec,
  ExitCode,
  intOption,
  type OptionSpec,
  type ParsedArgs,
  UsageError,
} from './cliArgs';
import {
  EXEC_SCOPES,
  EventLog,
  type EventOutput,
  type ExecScope,
  fileOutput,
  streamOutput,
} from './eventLog';
import { emulatorLauncher, type FilterAccess, openFilter, programArgv, type Transport } from './filterAccess';
import { ENDED_KEPT, writeOwnerExit } from './ownerRecord';
import { readRulesFile } from './rulesFile';

/** Capture history kept by `watch` and `run` unless --capture-mib says otherwise. */
const DEFAULT_CAPTURE_MIB = 64;

export interface OwnOptions {
  command: 'watch' | 'run';
  rules?: RulesConfig;
  eventRing?: number;
  /** capture history kept for nke export / Wireshark, in bytes (absent or 0: none) */
  captureBytes?: number;
  noStart: boolean;
  log: EventLog;
  /** a line for people on stderr ("nke: ...") */
  say: (line: string) => void;
  /** tests: a stand-in for the native addon (e.g. one that speaks IOKit) */
  addon?: NativeAddon;
}

export interface Owner {
  engine: FilterEngine;
  access: FilterAccess;
  /** ends the session with this exit status (idempotent) */
  stop(code: number): void;
}

/** Runs the engine in this process with a control socket; resolves with the exit status once stopped. */
export async function ownFilter(o: OwnOptions, body: (owner: Owner) => void): Promise<number> {
  const engine = new FilterEngine({
    eventRingLimit: o.eventRing,
    captureHistoryBytes: o.captureBytes,
    // The engine's info lines (connected, session) are not news to someone who ran nke.
    log: (level, message) => level !== 'info' && o.say(`${level}: ${message}`),
    addon: o.addon,
  });
  if (o.rules) engine.setRules(o.rules); // validated when the file was read
  const transport = (engine.status(false).transport === 'iokit' ? 'iokit' : 'emulator') as Transport;
  const access = await openFilter(engine, transport, { noStart: o.noStart, say: o.say });
  let control: Awaited<ReturnType<typeof serveControl>>;
  let dir: string;
  try {
    dir = controlDir(true);
    control = await serveControl(engine);
  } catch (e) {
    engine.dispose();
    await access.close();
    if (e instanceof ControlBusyError) {
      throw new CliError(`${e.message}: stop it first, or give this one another NKE_CLI_DIR`);
    }
    if (e instanceof ControlDirError) throw new CliError(e.message);
    throw e;
  }
  engine.on('update', (b) => o.log.onUpdate(b));

  return new Promise<number>((resolve) => {
    let done = false;
    const stop = (code: number) => {
      if (done) return;
      done = true;
      engine.flushUpdates();
      const pending = [...engine.model.pending.keys()];
      const ended = [...engine.model.endedPending].slice(-ENDED_KEPT);
      control.close(); // no new verdicts from here on
      engine.dispose(); // closing the client makes the filter release what it holds (fail-open)
      writeOwnerExit(dir, { pid: process.pid, command: o.command, exitedAt: Date.now(), pending, ended });
      if (pending.length) {
        o.say(
          `released ${pending.length} pending chunk${pending.length > 1 ? 's' : ''} unchanged on exit (${pending.join(', ')}): the filter sends the originals on`,
        );
      }
      void access
        .close()
        .then(() => o.log.close())
        .then(() => resolve(code));
    };
    engine.on('filterClosed', (e) => {
      o.log.note('filter-closed', { code: e.code, message: e.message }, `filter closed: ${e.message}`);
      if (o.command === 'watch') {
        o.say(`the filter went away: ${e.message}`);
        stop(ExitCode.filterLost);
      } else {
        o.say(`the filter went away (${e.message}): the program goes on unfiltered`);
      }
    });
    body({ engine, access, stop });
  });
}

/** The options watch and run share; only what --execs defaults to differs. */
function ownerOptions(execsHelp: string): OptionSpec[] {
  return [
    { name: '--json', help: 'events as JSON, one object a line' },
    { name: '--output', short: '-o', value: 'FILE', help: 'write events to FILE (created or truncated)' },
    {
      name: '--rules',
      value: 'FILE',
      help: 'intercept and rewrite rules (JSON with comments; - for stdin;\nnke rules --example shows the format)',
    },
    { name: '--execs', value: 'all|tree|none', choices: EXEC_SCOPES, help: execsHelp },
    { name: '--no-start', help: 'fail (exit 3) when no emulator answers instead of starting nke-emud' },
    {
      name: '--event-ring',
      value: 'N',
      help: "events the helper's ring keeps for nke/history (default 100000)",
    },
    {
      name: '--capture-mib',
      value: 'N',
      help: `capture history kept for nke export and Wireshark, in MiB (default ${DEFAULT_CAPTURE_MIB}; 0: none)`,
    },
  ];
}

/** Event log, rules and the rest of what both commands take, validated before anything starts. */
function prepareOwner(
  args: ParsedArgs,
  command: 'watch' | 'run',
  defaultOut: NodeJS.WritableStream,
  execs: ExecScope,
  socketOwnersAreRoots: boolean,
): {
  log: EventLog;
  rules?: RulesConfig;
  eventRing?: number;
  captureBytes: number;
  noStart: boolean;
  say: (l: string) => void;
} {
  const rulesFile = args.values.get('--rules');
  const rules = rulesFile === undefined ? undefined : readRulesFile(rulesFile);
  const eventRing = intOption(args, command, '--event-ring', 1, 10_000_000);
  const captureMiB = intOption(args, command, '--capture-mib', 0, 1024 * 1024) ?? DEFAULT_CAPTURE_MIB;
  const file = args.values.get('--output');
  let out: EventOutput;
  try {
    out = file ? fileOutput(file) : streamOutput(defaultOut);
  } catch (e) {
    throw new CliError(`nke ${command}: cannot write events to ${file}: ${(e as Error).message}`);
  }
  const log = new EventLog(out, args.flags.has('--json'), execs, [], socketOwnersAreRoots);
  return {
    log,
    rules,
    eventRing,
    captureBytes: captureMiB * 2 ** 20,
    noStart: args.flags.has('--no-start'),
    say: (l) => void process.stderr.write(`nke: ${l}\n`),
  };
}

export const watchCommand: CommandSpec = {
  name: 'watch',
  summary: 'hold the filter and print its events until stopped (Ctrl-C)',
  usage: 'nke watch [--json] [-o FILE] [--rules FILE] [--execs all|tree|none] [--no-start]',
  description:
    "Becomes the filter's client: prints every socket, data and exec event (to stdout, or to\n" +
    '-o FILE) and holds what the rules say to hold. Answer held chunks from another terminal\n' +
    '(nke status, nke show ID, nke verdict ID ...). Starts nke-emud when no emulator answers in\n' +
    'the runtime directory ($NKE_EMU_DIR, else $XDG_RUNTIME_DIR/nke-emu, else /tmp/nke-emu-UID)\n' +
    'and stops it on exit; on macOS it uses the loaded kext. Exits 0 when stopped by SIGINT,\n' +
    'SIGTERM or SIGHUP; what was still held is released unchanged.',
  options: ownerOptions(
    'which exec events to print: all (default), tree (processes whose sockets the\nfilter sees, and their children), none',
  ),
  async run(args) {
    if (args.positional.length) throw new UsageError(`nke watch: unexpected argument ${args.positional[0]}`);
    const execs = (args.values.get('--execs') ?? 'all') as ExecScope;
    const s = prepareOwner(args, 'watch', process.stdout, execs, true);
    return ownFilter({ command: 'watch', ...s }, ({ stop }) => {
      for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(sig, () => stop(ExitCode.ok));
    });
  },
};

/** The exit status a shell gives for a child that ended with code or signal. */
export function statusOf(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  return 128 + ((signal && os.constants.signals[signal]) || 0);
}

/** How long after the program exits its last notifications (socket closes, verdicts) are awaited. */
const SETTLE_MS = 200;

export interface RunOptions extends OwnOptions {
  cmd: string[];
}

/** `nke run` without its command line: the program under the filter, its status returned. */
export function runProgram(o: RunOptions): Promise<number> {
  return ownFilter(o, ({ engine, access, stop }) => {
    let argv: string[];
    try {
      argv = programArgv(access.transport, o.cmd, emulatorLauncher);
    } catch (e) {
      o.say((e as Error).message);
      stop(ExitCode.cannotRun);
      return;
    }
    const child = spawn(argv[0], argv.slice(1), { stdio: 'inherit' });
    if (child.pid) o.log.addRoot(child.pid);
    // A terminal's Ctrl-C (and Ctrl-\) reaches the program itself: it decides
    // whether to stop, and nke follows it. A SIGTERM or SIGHUP sent to nke
    // alone is passed on.
    const ignore = () => {};
    const forward = (sig: NodeJS.Signals) => () => void child.kill(sig);
    const handlers: [NodeJS.Signals, () => void][] = [
      ['SIGINT', ignore],
      ['SIGQUIT', ignore],
      ['SIGTERM', forward('SIGTERM')],
      ['SIGHUP', forward('SIGHUP')],
    ];
    for (const [sig, h] of handlers) process.on(sig, h);
    const unhook = () => {
      for (const [sig, h] of handlers) process.off(sig, h);
    };
    child.on('error', (e: NodeJS.ErrnoException) => {
      unhook();
      o.say(`cannot run ${argv[0]}: ${e.message}`);
      stop(e.code === 'EACCES' ? 126 : ExitCode.cannotRun);
    });
    child.on('exit', (code, signal) => {
      unhook();
      const status = statusOf(code, signal);
      // Let the last notifications of the program arrive before stopping;
      // its exit is the log's last line.
      setTimeout(() => {
        engine.flushUpdates();
        o.log.note(
          'program-exit',
          { pid: child.pid, status, signal },
          `program ${child.pid} exited${signal ? ` on ${signal}` : ''} with status ${status}`,
        );
        stop(status);
      }, SETTLE_MS);
    });
  });
}

export const runCommand: CommandSpec = {
  name: 'run',
  summary: 'run a program under the filter; its stdio stays its own, events go to stderr',
  usage: 'nke run [--json] [-o FILE] [--rules FILE] [--execs all|tree|none] [--no-start] [--] CMD [ARGS...]',
  description:
    "Runs CMD under the filter (the emulator's shim on Linux; on macOS with the kext loaded,\n" +
    "as it is) as its client for as long as CMD runs. CMD's stdin, stdout and stderr are left\n" +
    "alone; nke's events go to stderr, or to -o FILE. nke exits with CMD's status (128+N when\n" +
    'signal N ended it). Held chunks are answered from another terminal (nke status, nke show,\n' +
    'nke verdict). Starts nke-emud when no emulator answers and stops it when CMD is done.\n' +
    'Ctrl-C goes to CMD; a SIGTERM or SIGHUP sent to nke is passed on to it.',
  options: ownerOptions(
    "which exec events to print: tree (default: CMD's own process tree),\nall (every exec the filter reports: as root, the whole machine's), none",
  ),
  takesProgram: true,
  async run(args) {
    if (!args.rest.length) {
      throw new UsageError('nke run: no program given (nke run [OPTIONS] -- CMD [ARGS...])');
    }
    const execs = (args.values.get('--execs') ?? 'tree') as ExecScope;
    const s = prepareOwner(args, 'run', process.stderr, execs, false);
    return runProgram({ command: 'run', cmd: [...args.rest], ...s });
  },
};

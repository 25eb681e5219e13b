// `nke`: the helper, headless. Everything the UI shows can be scripted.
//
//   nke status [--json]
//   nke watch [--json] [--rules FILE] [--history N] [--capture-mib N]
//   nke run [--json] [--rules FILE] [--capture-mib N] -- CMD [ARGS...]
//   nke verdict ID allow|drop|replace [FILE]
//   nke export --pcapng FILE [--socket ID ...] [--process NAME]
//   nke extcap --extcap-interfaces | --extcap-dlts | --extcap-config | --capture --fifo PATH | --install
//
// `watch` and `run` own the filter client (one client at a time) and listen
// on a control socket in a private per-user directory so that `verdict`,
// `status`, `export` and `extcap` from another terminal (or Wireshark) reach
// the same live model; so does the helper of a VS Code window. Errors name
// the cause and exit non-zero.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { MessageConnection } from 'vscode-jsonrpc';
import * as P from '../shared/helperProtocol';
import {
  connectControl as connectControlSocket,
  ControlDirError,
  controlDir as controlDirOf,
} from '../shared/controlSocket';
import { FilterEngine } from '../helper/engine';
import { ControlBusyError, serveControl } from '../helper/controlServer';
import {
  extcapConfigText,
  extcapDltsText,
  extcapInterfacesText,
  ExtcapUsageError,
  installLauncher,
  parseExtcapArgs,
  personalExtcapDirs,
} from '../capture/extcap';

/** Capture history kept by `watch` and `run` unless --capture-mib says otherwise. */
const DEFAULT_CAPTURE_MIB = 64;

class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

const USAGE = `usage:
  nke status [--json]
  nke watch [--json] [--rules FILE] [--history N] [--capture-mib N]
  nke run [--json] [--rules FILE] [--capture-mib N] -- CMD [ARGS...]
  nke verdict ID allow|drop|replace [FILE]
  nke export --pcapng FILE [--socket ID ...] [--process NAME]
  nke extcap --install [--dir DIR]        (Wireshark runs the other extcap steps itself)`;

/** Private per-user directory of the control socket (shared/controlSocket.ts). */
function controlDir(create: boolean): string {
  try {
    return controlDirOf(create);
  } catch (e) {
    if (e instanceof ControlDirError) throw new CliError(e.message);
    throw e;
  }
}

async function connectControl(): Promise<MessageConnection | undefined> {
  controlDir(false); // a foreign or open directory is refused with its reason
  return connectControlSocket();
}

function readRules(file: string | undefined): unknown {
  if (!file) return undefined;
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new CliError(`cannot read rules file ${file}: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CliError(`rules file ${file} is not valid JSON: ${(e as Error).message}`);
  }
}

function fmtEndpoint(e?: P.Endpoint): string {
  return e ? `${e.address.includes(':') ? `[${e.address}]` : e.address}:${e.port}` : '-';
}

function fmtEvent(ev: P.HistoryEvent): string {
  switch (ev.kind) {
    case 'socket-open':
      return `socket ${ev.socketId} open ${ev.protocol} pid ${ev.pid} (${ev.process})`;
    case 'socket-state':
      return `socket ${ev.socketId} ${ev.state} ${fmtEndpoint(ev.local)} -> ${fmtEndpoint(ev.remote)}`;
    case 'socket-close':
      return `socket ${ev.socketId} closed in ${ev.bytesIn} out ${ev.bytesOut}`;
    case 'data':
      return `data ${ev.chunkId} socket ${ev.socketId} ${ev.direction} ${ev.size} bytes${ev.held ? ' held' : ''}`;
    case 'verdict':
      return `verdict ${ev.chunkId} ${ev.action} ${ev.size} bytes`;
    case 'data-gap':
      return `gap socket ${ev.socketId} ${ev.direction} ${ev.size} bytes passed unreported (${ev.reason})`;
    case 'released':
      return `released ${ev.chunkId} by the filter (${ev.reason})`;
    case 'exec':
      return `exec ${ev.pid} (parent ${ev.ppid}) ${ev.path}${ev.complete ? '' : ' [incomplete]'}${ev.truncated ? ' [truncated]' : ''}`;
  }
}

function statusLines(s: P.FilterStatus): string {
  const lines = [
    `filter: ${s.connected ? 'connected' : 'not connected'} (${s.transport})${s.paused ? ', paused' : ''}`,
  ];
  if (s.sessionId) lines.push(`session: ${s.sessionId}`);
  if (s.error) lines.push(`error: ${s.error.code}: ${s.error.message}`);
  if (s.state) for (const [k, v] of Object.entries(s.state)) lines.push(`  ${k}: ${v}`);
  return lines.join('\n');
}

async function cmdStatus(json: boolean): Promise<number> {
  const conn = await connectControl();
  let status: P.FilterStatus;
  if (conn) {
    status = await conn.sendRequest(P.GetStatus);
    conn.dispose();
  } else {
    // No watch/run owns the filter: open it briefly ourselves.
    const engine = new FilterEngine();
    try {
      engine.connect();
    } catch {
      // status carries the cause
    }
    status = engine.status();
    engine.dispose();
  }
  process.stdout.write(json ? `${JSON.stringify(status)}\n` : `${statusLines(status)}\n`);
  return status.connected ? 0 : 1;
}

/** Runs the engine in this process with a control socket; resolves when stopped. */
async function ownFilter(
  json: boolean,
  rulesFile: string | undefined,
  history: number | undefined,
  captureMiB: number,
  body: (engine: FilterEngine, stop: (code: number) => void) => void,
): Promise<number> {
  const rules = readRules(rulesFile);
  const engine = new FilterEngine({
    historyLimit: history,
    captureHistoryBytes: captureMiB * 2 ** 20,
    log: (level, message) => process.stderr.write(`nke: ${level}: ${message}\n`),
  });
  if (rules !== undefined) {
    try {
      engine.setRules(rules);
    } catch (e) {
      throw new CliError(`rules file ${rulesFile}: ${(e as Error).message}`);
    }
  }
  try {
    engine.connect();
  } catch (e) {
    throw new CliError(`cannot connect to the filter: ${(e as Error).message}`);
  }
  let control: Awaited<ReturnType<typeof serveControl>>;
  try {
    controlDir(true);
    control = await serveControl(engine);
  } catch (e) {
    engine.dispose();
    if (e instanceof ControlBusyError) throw new CliError(`another nke watch/run is running: ${e.message}`);
    throw e;
  }

  const out = (line: string) => process.stdout.write(`${line}\n`);
  engine.on('update', (b) => {
    for (const ev of b.events) out(json ? JSON.stringify(ev) : fmtEvent(ev));
    for (const p of b.pendingAdded) {
      out(
        json
          ? JSON.stringify({ kind: 'pending', ...p })
          : `pending ${p.id}: ${p.direction} ${p.size} bytes, pid ${p.pid} (${p.process}) ${fmtEndpoint(p.local)} -> ${fmtEndpoint(p.remote)}; nke verdict ${p.id} allow|drop|replace FILE`,
      );
    }
  });

  return new Promise<number>((resolve) => {
    let done = false;
    const stop = (code: number) => {
      if (done) return;
      done = true;
      engine.flushUpdates();
      engine.dispose();
      control.close();
      resolve(code);
    };
    engine.on('filterClosed', (e) => {
      process.stderr.write(`nke: the filter went away: ${e.message}\n`);
      stop(1);
    });
    process.once('SIGINT', () => stop(130));
    process.once('SIGTERM', () => stop(143));
    body(engine, stop);
  });
}

function emuLauncher(): string {
  if (process.env.NKE_EMU_LAUNCHER) return process.env.NKE_EMU_LAUNCHER;
  for (const up of ['..', '../..']) {
    const p = path.resolve(__dirname, up, 'native/emu/build/nke-emu');
    if (fs.existsSync(p)) return p;
  }
  throw new CliError(
    'the emulator launcher native/emu/build/nke-emu is not built: run npm install (or set NKE_EMU_LAUNCHER)',
  );
}

async function cmdRun(
  json: boolean,
  rulesFile: string | undefined,
  captureMiB: number,
  cmd: string[],
): Promise<number> {
  if (!cmd.length) throw new CliError(`nke run: no command after --\n${USAGE}`, 2);
  const launcher = emuLauncher();
  return ownFilter(json, rulesFile, undefined, captureMiB, (_engine, stop) => {
    const child = spawn(launcher, ['run', '--', ...cmd], {
      // With --json, stdout carries only JSON lines: the program's own
      // output goes to stderr instead of being lost.
      stdio: ['inherit', json ? process.stderr : 'inherit', 'inherit'],
    });
    child.on('error', (e) => {
      process.stderr.write(`nke run: cannot start ${launcher}: ${e.message}\n`);
      stop(127);
    });
    child.on('exit', (code, signal) => {
      // Let the last notifications of the program arrive before stopping.
      setTimeout(() => stop(code ?? (signal ? 128 + (os.constants.signals[signal] ?? 0) : 1)), 200);
    });
  });
}

async function cmdVerdict(
  id: string | undefined,
  action: string | undefined,
  file: string | undefined,
): Promise<number> {
  if (!id || !/^\d+$/.test(id)) {
    throw new CliError(`nke verdict: ID must be a pending payload id (a number)\n${USAGE}`, 2);
  }
  if (action !== 'allow' && action !== 'drop' && action !== 'replace') {
    throw new CliError(`nke verdict: action must be allow, drop or replace\n${USAGE}`, 2);
  }
  let base64: string | undefined;
  if (action === 'replace') {
    if (!file) throw new CliError('nke verdict: replace needs FILE with the new bytes (- for stdin)', 2);
    try {
      base64 = (file === '-' ? fs.readFileSync(0) : fs.readFileSync(file)).toString('base64');
    } catch (e) {
      throw new CliError(`cannot read ${file}: ${(e as Error).message}`);
    }
  } else if (file) throw new CliError(`nke verdict: FILE is only for replace`, 2);
  const conn = await connectControl();
  if (!conn) {
    throw new CliError(`no nke watch or nke run is running (no control socket in ${controlDir(false)})`);
  }
  try {
    await conn.sendRequest(P.Verdict, { id, action, base64 });
  } catch (e) {
    throw new CliError(`verdict on ${id} failed: ${(e as Error).message}`);
  } finally {
    conn.dispose();
  }
  return 0;
}

function noHelper(): CliError {
  return new CliError(
    `no NKE helper is running (no control socket in ${controlDir(false)}): the capture history lives in the ` +
      'helper that owns the filter; start `nke watch` or connect the workbench in VS Code',
  );
}

async function cmdExport(
  file: string | undefined,
  sockets: string[],
  processName: string | undefined,
): Promise<number> {
  if (!file) throw new CliError(`nke export: --pcapng FILE is required\n${USAGE}`, 2);
  for (const id of sockets) {
    if (!/^\d+:\d+$/.test(id)) {
      throw new CliError(`nke export: --socket ${id}: a socket id looks like 3:1`, 2);
    }
  }
  const conn = await connectControl();
  if (!conn) throw noHelper();
  try {
    const r = await conn.sendRequest(P.ExportPcapng, {
      path: path.resolve(file),
      sockets: sockets.length ? sockets : undefined,
      process: processName,
      owner: process.getuid && process.getgid ? { uid: process.getuid(), gid: process.getgid() } : undefined,
    });
    process.stderr.write(
      `nke: wrote ${r.path}: ${r.packets} packets, ${r.sockets} sockets, ${r.chunks} chunks, ${r.gaps} gaps marked, ${r.bytes} bytes\n`,
    );
    return 0;
  } catch (e) {
    throw new CliError(`export to ${file} failed: ${(e as Error).message}`);
  } finally {
    conn.dispose();
  }
}

/** Wireshark's extcap steps (it runs them itself), and --install of the launcher. */
async function cmdExtcap(argv: string[]): Promise<number> {
  let req;
  try {
    req = parseExtcapArgs(argv);
  } catch (e) {
    if (e instanceof ExtcapUsageError) throw new CliError(e.message, 2);
    throw e;
  }
  switch (req.step) {
    case 'interfaces':
      process.stdout.write(extcapInterfacesText());
      return 0;
    case 'dlts':
      process.stdout.write(extcapDltsText());
      return 0;
    case 'config':
      process.stdout.write(extcapConfigText());
      return 0;
    case 'install': {
      const dirs = req.dir ? [path.resolve(req.dir)] : personalExtcapDirs();
      for (const f of installLauncher(dirs, process.execPath, path.resolve(__filename))) {
        process.stdout.write(`${f}\n`);
      }
      return 0;
    }
    case 'capture': {
      // Wireshark shows what goes to stderr when a capture fails.
      const conn = await connectControl();
      if (!conn) throw noHelper();
      const quit = () => {
        conn.dispose(); // the helper ends the stream with this connection
        process.exit(0);
      };
      process.once('SIGTERM', quit);
      process.once('SIGINT', quit);
      try {
        await conn.sendRequest(P.StreamCapture, {
          path: path.resolve(req.fifo!),
          sockets: req.sockets,
          process: req.process,
          fromHistory: req.withHistory,
        });
        return 0;
      } catch (e) {
        throw new CliError(`live capture failed: ${(e as Error).message}`);
      } finally {
        conn.dispose();
      }
    }
  }
}

async function main(argv: string[]): Promise<number> {
  // extcap: Wireshark's own argument syntax (--opt=value); parsed on its own.
  if (argv[0] === 'extcap') return cmdExtcap(argv.slice(1));
  const dd = argv.indexOf('--');
  const opts = dd >= 0 ? argv.slice(0, dd) : argv;
  const rest = dd >= 0 ? argv.slice(dd + 1) : [];
  const [cmd, ...args] = opts;
  const flag = (name: string) => {
    const i = args.indexOf(name);
    if (i < 0) return false;
    args.splice(i, 1);
    return true;
  };
  const value = (name: string) => {
    const i = args.indexOf(name);
    if (i < 0) return undefined;
    if (i + 1 >= args.length) throw new CliError(`${name} needs a value`, 2);
    return args.splice(i, 2)[1];
  };
  const json = flag('--json');
  const rules = value('--rules');
  const captureArg = value('--capture-mib');
  const captureMiB = captureArg === undefined ? DEFAULT_CAPTURE_MIB : Number(captureArg);
  if (!Number.isInteger(captureMiB) || captureMiB < 0 || captureMiB > 1024 * 1024) {
    throw new CliError('--capture-mib must be an integer number of MiB >= 0 (0: keep no capture history)', 2);
  }
  const pcapng = value('--pcapng');
  const processName = value('--process');
  const sockets: string[] = [];
  for (let s = value('--socket'); s !== undefined; s = value('--socket')) sockets.push(s);
  const historyArg = value('--history');
  const history = historyArg === undefined ? undefined : Number(historyArg);
  if (history !== undefined && (!Number.isInteger(history) || history < 1)) {
    throw new CliError('--history must be a positive integer', 2);
  }
  const noExtra = () => {
    if (args.length) throw new CliError(`unexpected argument ${args[0]}\n${USAGE}`, 2);
  };
  switch (cmd) {
    case 'status':
      noExtra();
      return cmdStatus(json);
    case 'watch':
      noExtra();
      return ownFilter(json, rules, history, captureMiB, () => {});
    case 'run':
      noExtra();
      return cmdRun(json, rules, captureMiB, rest);
    case 'export':
      noExtra();
      return cmdExport(pcapng, sockets, processName);
    case 'verdict':
      return cmdVerdict(args[0], args[1], args[2]);
    case undefined:
    case '--help':
    case 'help':
      process.stdout.write(`${USAGE}\n`);
      return cmd ? 0 : 2;
    default:
      throw new CliError(`unknown command ${cmd}\n${USAGE}`, 2);
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: Error & { exitCode?: number }) => {
    process.stderr.write(`nke: ${e.message}\n`);
    process.exit(e.exitCode ?? 1);
  },
);

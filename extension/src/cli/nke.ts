// `nke`: the helper, headless. Everything the UI shows can be scripted.
//
//   nke status [--json]
//   nke watch [--json] [--rules FILE] [--history N]
//   nke run [--json] [--rules FILE] -- CMD [ARGS...]
//   nke verdict ID allow|drop|replace [FILE]
//
// `watch` and `run` own the filter client (one client at a time) and listen
// on a control socket in a private per-user directory so that `verdict` and
// `status` from another terminal reach the same live model. Errors name the
// cause and exit non-zero.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { MessageConnection } from 'vscode-jsonrpc';
import * as P from '../shared/helperProtocol';
import { privateDirProblem } from '../shared/privateDir';
import { connectWithToken, newToken, TokenServer } from '../shared/tokenSocket';
import { FilterEngine } from '../helper/engine';
import { serveHelperProtocol } from '../helper/service';

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
  nke watch [--json] [--rules FILE] [--history N]
  nke run [--json] [--rules FILE] -- CMD [ARGS...]
  nke verdict ID allow|drop|replace [FILE]`;

/**
 * Private per-user directory of the control socket; refuses one that is not
 * a real directory of this user (or root) closed to others (privateDir.ts):
 * `status` and `verdict` send its token to whatever listens there.
 */
function controlDir(create: boolean): string {
  const dir =
    process.env.NKE_CLI_DIR ??
    (process.env.XDG_RUNTIME_DIR
      ? path.join(process.env.XDG_RUNTIME_DIR, 'nke-cli')
      : path.join(os.tmpdir(), `nke-cli-${process.getuid?.() ?? 0}`));
  if (create) fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const problem = privateDirProblem(
    dir,
    'the nke control directory',
    'set NKE_CLI_DIR to a directory of your own',
  );
  if (problem) throw new CliError(problem);
  return dir;
}

async function connectControl(): Promise<MessageConnection | undefined> {
  const dir = controlDir(false);
  const sock = path.join(dir, 'control.sock');
  const tokenFile = path.join(dir, 'token');
  if (!fs.existsSync(sock) || !fs.existsSync(tokenFile)) return undefined;
  try {
    const { connection } = await connectWithToken(sock, fs.readFileSync(tokenFile, 'utf8').trim());
    connection.listen();
    return connection;
  } catch (e) {
    if ((e as { code?: string }).code === 'NKE_NO_HELPER') return undefined; // stale socket of a dead watch
    throw e;
  }
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
  body: (engine: FilterEngine, stop: (code: number) => void) => void,
): Promise<number> {
  const rules = readRules(rulesFile);
  const engine = new FilterEngine({
    historyLimit: history,
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
  const dir = controlDir(true);
  const sockPath = path.join(dir, 'control.sock');
  const tokenFile = path.join(dir, 'token');
  if (fs.existsSync(sockPath)) {
    // Another watch may be alive; if it answers, refuse to start a second owner.
    const other = await connectControl().catch(() => undefined);
    if (other) {
      other.dispose();
      engine.dispose();
      throw new CliError(`another nke watch/run is running (control socket ${sockPath})`);
    }
    fs.rmSync(sockPath, { force: true });
  }
  const token = newToken();
  fs.writeFileSync(tokenFile, token, { mode: 0o600 });
  const server = new TokenServer(sockPath, token, true);
  await server.listen();
  server.on('connection', (conn) => {
    const unwire = serveHelperProtocol(conn, engine);
    conn.onClose(unwire);
    conn.listen();
  });

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
      server.close();
      fs.rmSync(tokenFile, { force: true });
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

async function cmdRun(json: boolean, rulesFile: string | undefined, cmd: string[]): Promise<number> {
  if (!cmd.length) throw new CliError(`nke run: no command after --\n${USAGE}`, 2);
  const launcher = emuLauncher();
  return ownFilter(json, rulesFile, undefined, (_engine, stop) => {
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

async function main(argv: string[]): Promise<number> {
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
      return ownFilter(json, rules, history, () => {});
    case 'run':
      noExtra();
      return cmdRun(json, rules, rest);
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

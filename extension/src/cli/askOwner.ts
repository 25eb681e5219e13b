// Commands that ask the running `nke watch` / `nke run` (through its control
// socket) about what it holds, and answer held chunks: status, show,
// verdict. Each says why when there is nothing to ask, or when the chunk is
// no longer held.
import fs from 'node:fs';
import type { MessageConnection } from 'vscode-jsonrpc';
import { ResponseError } from 'vscode-jsonrpc';
import { FilterEngine } from '../helper/engine';
import { connectControl, controlDir, ControlDirError } from '../shared/controlSocket';
import * as P from '../shared/helperProtocol';
import { NKE_HOLD_TOTAL_MAX_MS } from '../shared/abi';
import { resolveEmulatorRuntimeDir } from '../shared/privateDir';
import { CliError, type CommandSpec, ExitCode, UsageError } from './cliArgs';
import { printable, timeLeft } from './eventLog';
import { readOwnerExit, releasedAtExit } from './ownerRecord';
import { decodeHexDump, encodeEscapedText, encodeHexDump, HexDumpError } from './payloadForms';

export function dirOrFail(): string {
  try {
    return controlDir(false);
  } catch (e) {
    if (e instanceof ControlDirError) throw new CliError(e.message);
    throw e;
  }
}

export async function connectOwner(): Promise<MessageConnection | undefined> {
  dirOrFail(); // a directory that is not private is refused with its reason
  try {
    return await connectControl();
  } catch (e) {
    throw new CliError(`cannot reach the running nke watch / nke run: ${(e as Error).message}`);
  }
}

/** The error for a chunk id when no watch or run is there to ask. */
function noOwner(id?: string): CliError {
  const dir = dirOrFail();
  const released = id === undefined ? undefined : releasedAtExit(readOwnerExit(dir), id);
  if (released) return new CliError(released, ExitCode.released);
  return new CliError(
    `no nke watch or nke run is running (no control socket in ${dir}): chunks are held only while one is; start one (nke watch --rules FILE, or nke run --rules FILE -- CMD)`,
    ExitCode.noOwner,
  );
}

function checkId(command: string, id: string | undefined): string {
  if (!id || !/^\d+$/.test(id)) {
    throw new UsageError(
      `nke ${command}: ID is a pending chunk's id, a number (nke status lists them); got ${id ?? 'nothing'}`,
    );
  }
  return id;
}

/** A helper error about one chunk, as an exit: no longer held (5) or refused (1). */
function chunkError(id: string, what: string, e: unknown): CliError {
  if (e instanceof ResponseError && e.code === P.HelperErrorCode.UnknownPayload) {
    return new CliError(`${what} ${id}: ${e.message}`, ExitCode.released);
  }
  return new CliError(`${what} ${id} failed: ${(e as Error).message}`);
}

async function withOwner<T>(id: string | undefined, fn: (c: MessageConnection) => Promise<T>): Promise<T> {
  const conn = await connectOwner();
  if (!conn) throw noOwner(id);
  try {
    return await fn(conn);
  } finally {
    conn.dispose();
  }
}

// ---- status -------------------------------------------------------------------

export interface StatusReport extends P.FilterStatus {
  /** the nke watch / nke run that holds the filter, when one answers */
  heldBy?: { pid: number };
  /** chunks held for a person now, with the ms left before the filter releases each */
  pending: (P.PendingView & { timeLeftMs: number })[];
}

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

function fmtEndpoint(e?: P.Endpoint): string {
  return e ? `${e.address.includes(':') ? `[${e.address}]` : e.address}:${e.port}` : '-';
}

/** `nke status` for people. */
export function statusText(r: StatusReport): string {
  const lines: string[] = [];
  const st = r.state;
  lines.push(
    `filter: ${r.connected ? 'connected' : 'not connected'} (${r.transport})${r.sessionId ? `, session ${r.sessionId}` : ''}${st ? `, capture ${st.captureMode}` : ''}${r.paused ? ', paused' : ''}`,
  );
  if (r.error) lines.push(`error: ${r.error.code}: ${r.error.message}`);
  lines.push(
    r.heldBy
      ? `held by: nke watch/run pid ${r.heldBy.pid} (verdicts go through it)`
      : 'held by: no nke watch or nke run (nothing is held for you)',
  );
  if (st) {
    const n = st.now;
    lines.push(
      `now: ${plural(n.socketsLive, 'socket')}, ${plural(n.chunksHeld, 'chunk')} held awaiting a verdict, ${plural(n.bytesKept, 'byte')} kept, ${n.buffersInUse} buffers in use`,
    );
    const t = st.sinceStart;
    lines.push(
      `since the filter started: ${plural(t.socketsAttached, 'socket')} attached, ${plural(t.chunksHeld, 'chunk')} held (${plural(t.bytesHeld, 'byte')}), ` +
        `${t.chunksReported} reported, ${t.chunksAutoReleased} released by the filter, ${t.chunksDropped} dropped, ${t.chunksModified} modified, ` +
        `${t.chunksQueued} queued behind held data, ${t.chunksPassedPoolFull} passed with no buffer free, ${t.chunksPassedBudget} passed over the byte budget, ` +
        `${t.staleEntries} late answers skipped, ${t.notificationsLost} notifications lost, ${t.socketsUntracked} sockets untracked, ${t.responsesRejected} responses rejected`,
    );
  }
  if (!r.pending.length) {
    if (r.heldBy) lines.push('pending now: none');
    return lines.join('\n');
  }
  lines.push(`pending now (${r.pending.length}):`);
  const rows = [
    ['ID', 'DIR', 'SIZE', 'LEFT', 'SOCKET', 'PID', 'PROCESS', 'PEER', 'STAGED EDIT'],
    ...r.pending.map((p) => [
      p.id,
      p.direction,
      String(p.size),
      timeLeft(Date.now() + p.timeLeftMs),
      p.socketId,
      String(p.pid),
      printable(p.process),
      fmtEndpoint(p.remote),
      p.staged ? `${p.staged.size} bytes` : '-',
    ]),
  ];
  const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  for (const row of rows) {
    lines.push(
      `  ${row
        .map((v, c) => v.padEnd(widths[c]))
        .join('  ')
        .trimEnd()}`,
    );
  }
  return lines.join('\n');
}

async function gatherStatus(): Promise<StatusReport> {
  const conn = await connectOwner();
  if (conn) {
    try {
      const hello = await conn.sendRequest(P.Hello);
      const snap = await conn.sendRequest(P.GetSnapshot);
      const now = Date.now();
      return {
        ...snap.filter,
        heldBy: { pid: hello.pid },
        pending: snap.pending.map((p) => ({ ...p, timeLeftMs: Math.max(0, p.deadline - now) })),
      };
    } finally {
      conn.dispose();
    }
  }
  // No watch or run holds the filter: open it briefly ourselves (never start one).
  const engine = new FilterEngine();
  try {
    engine.connect();
  } catch {
    // the status carries the cause
  }
  const status = engine.status();
  engine.dispose();
  if (status.error?.code === 'NKE_EMU_NOT_RUNNING') {
    status.error = {
      ...status.error,
      message: `${status.error.message} (in ${resolveEmulatorRuntimeDir()}; nke watch and nke run start one for as long as they run)`,
    };
  }
  return { ...status, pending: [] };
}

export const statusCommand: CommandSpec = {
  name: 'status',
  summary: "the filter's state and the chunks held now (id, socket, process, size, time left)",
  usage: 'nke status [--json]',
  description:
    'Asks the running nke watch / nke run, or, when none runs, opens the filter briefly (it\n' +
    'never starts nke-emud). Numbers are labelled for what they count: what the filter holds\n' +
    'now, and totals since the filter started. Exits 0 when the filter answers, 3 when not.',
  options: [
    { name: '--json', help: 'one JSON object: the filter status, heldBy, pending[] with timeLeftMs' },
  ],
  async run(args) {
    if (args.positional.length) throw new UsageError(`nke status: unexpected argument ${args.positional[0]}`);
    const r = await gatherStatus();
    process.stdout.write(args.flags.has('--json') ? `${JSON.stringify(r)}\n` : `${statusText(r)}\n`);
    return r.connected ? ExitCode.ok : ExitCode.filterUnavailable;
  },
};

// ---- show -----------------------------------------------------------------------

export const showCommand: CommandSpec = {
  name: 'show',
  summary: "print a held chunk's bytes (escaped text, hex dump, or raw)",
  usage: 'nke show ID [--hex | --raw] [--staged]',
  description:
    'Prints the bytes of held chunk ID (nke status lists the ids). Default: a header line, then\n' +
    'the bytes as text with every byte that is not printable ASCII or LF escaped (\\xHH, \\\\).\n' +
    '--hex: a hex dump only (offset: bytes |ascii|), which nke verdict ID replace --hex FILE\n' +
    'reads back, so an edit made in it is exact. --raw: the bytes as they are, to a file or a\n' +
    'pipe (refused on a terminal: payload bytes could drive it).',
  options: [
    { name: '--hex', help: 'a hex dump, editable and read back by verdict/stage --hex' },
    { name: '--raw', help: 'the bytes as they are (not to a terminal)' },
    { name: '--staged', help: 'the edit staged for it (nke stage) instead of the original' },
  ],
  async run(args) {
    const [rawId, ...extra] = args.positional;
    const id = checkId('show', rawId);
    if (extra.length) throw new UsageError(`nke show: unexpected argument ${extra[0]}`);
    const hex = args.flags.has('--hex');
    const raw = args.flags.has('--raw');
    if (hex && raw) throw new UsageError('nke show: --hex or --raw, not both');
    if (raw && process.stdout.isTTY) {
      throw new UsageError(
        `nke show --raw writes the chunk's bytes as they are, which could drive your terminal: redirect it (nke show ${id} --raw > FILE), or use --hex`,
      );
    }
    const staged = args.flags.has('--staged');
    const { payload, view } = await withOwner(id, async (c) => {
      let payload: { size: number; base64: string };
      try {
        payload = await c.sendRequest(P.GetPayload, { id, staged: staged || undefined });
      } catch (e) {
        throw chunkError(id, 'chunk', e);
      }
      const snap = await c.sendRequest(P.GetSnapshot);
      return { payload, view: snap.pending.find((p) => p.id === id) };
    });
    const bytes = Buffer.from(payload.base64, 'base64');
    if (raw) {
      process.stdout.write(bytes);
      return ExitCode.ok;
    }
    if (hex) {
      process.stdout.write(bytes.length ? `${encodeHexDump(bytes)}\n` : '');
      return ExitCode.ok;
    }
    const head = view
      ? `chunk ${id}: ${view.direction} ${view.size} bytes, socket ${view.socketId}, pid ${view.pid} (${printable(view.process)}) -> ${fmtEndpoint(view.remote)}, released unchanged in ${timeLeft(view.deadline)}${staged ? `; the staged edit (${bytes.length} bytes):` : ''}`
      : `chunk ${id}: ${bytes.length} bytes`;
    process.stdout.write(`${head}\n${encodeEscapedText(bytes)}\n`);
    return ExitCode.ok;
  },
};

// ---- verdict and stage ----------------------------------------------------------

/** The bytes of FILE (- for stdin), a hex dump when hex. */
function readEdit(command: string, file: string, hex: boolean): Buffer {
  let data: Buffer;
  try {
    data = file === '-' ? fs.readFileSync(0) : fs.readFileSync(file);
  } catch (e) {
    throw new UsageError(`nke ${command}: cannot read ${file}: ${(e as Error).message}`);
  }
  if (!hex) return data;
  try {
    return decodeHexDump(data.toString('utf8'));
  } catch (e) {
    if (e instanceof HexDumpError) {
      throw new UsageError(`nke ${command}: ${file === '-' ? '(stdin)' : file}: ${e.message}`);
    }
    throw e;
  }
}

export const verdictCommand: CommandSpec = {
  name: 'verdict',
  summary: 'answer a held chunk: allow (original), drop, or replace with new bytes',
  usage: 'nke verdict ID allow|drop|replace [FILE|-] [--hex]',
  description:
    'allow: the original bytes go on. drop: they are discarded. replace FILE: the bytes of FILE\n' +
    '(- for stdin; --hex: a hex dump as nke show --hex prints it) go on instead, longer or\n' +
    'shorter than the original; replace without FILE sends the edit staged with nke stage.\n' +
    'Goes through the running nke watch / nke run. A chunk no longer held exits 5 and says why\n' +
    '(its deadline passed, its socket closed, the nke that held it exited).',
  options: [{ name: '--hex', help: 'FILE is a hex dump (nke show ID --hex), offsets and |ascii| ignored' }],
  async run(args) {
    const [rawId, action, file, ...extra] = args.positional;
    const id = checkId('verdict', rawId);
    if (action !== 'allow' && action !== 'drop' && action !== 'replace') {
      throw new UsageError(`nke verdict: the action is allow, drop or replace; got ${action ?? 'nothing'}`);
    }
    if (extra.length) throw new UsageError(`nke verdict: unexpected argument ${extra[0]}`);
    if (action !== 'replace' && file !== undefined) {
      throw new UsageError(`nke verdict: FILE is only for replace (nke verdict ${id} replace FILE)`);
    }
    if (action !== 'replace' && args.flags.has('--hex')) {
      throw new UsageError('nke verdict: --hex is only for replace FILE');
    }
    const bytes = file === undefined ? undefined : readEdit('verdict', file, args.flags.has('--hex'));
    await withOwner(id, async (c) => {
      try {
        await c.sendRequest(P.Verdict, { id, action, base64: bytes?.toString('base64') });
      } catch (e) {
        throw chunkError(id, 'verdict on', e);
      }
    });
    return ExitCode.ok;
  },
};

export const stageCommand: CommandSpec = {
  name: 'stage',
  summary: 'keep an edit for a held chunk in the helper, to send later with verdict ID replace',
  usage: 'nke stage ID FILE|- [--hex] | nke stage ID --clear',
  description:
    'Stages the bytes of FILE (- for stdin; --hex: a hex dump) as the edit of held chunk ID. Nothing\n' +
    'is sent: nke status shows the staged edit, nke show ID --staged prints it, nke verdict ID\n' +
    'replace sends it. --clear forgets it.',
  options: [
    { name: '--hex', help: 'FILE is a hex dump (nke show ID --hex)' },
    { name: '--clear', help: 'forget the staged edit' },
  ],
  async run(args) {
    const [rawId, file, ...extra] = args.positional;
    const id = checkId('stage', rawId);
    if (extra.length) throw new UsageError(`nke stage: unexpected argument ${extra[0]}`);
    const clear = args.flags.has('--clear');
    if (clear === (file !== undefined)) throw new UsageError('nke stage: give FILE (or -), or --clear');
    const bytes = file === undefined ? undefined : readEdit('stage', file, args.flags.has('--hex'));
    const view = await withOwner(id, async (c) => {
      try {
        return await c.sendRequest(P.StageEdit, { id, base64: bytes?.toString('base64') });
      } catch (e) {
        throw chunkError(id, 'staging an edit for', e);
      }
    });
    process.stderr.write(
      `nke: chunk ${id}: ${view.staged ? `${view.staged.size} bytes staged (nke verdict ${id} replace sends them)` : 'no staged edit'}; released unchanged in ${timeLeft(view.deadline)} unless answered\n`,
    );
    return ExitCode.ok;
  },
};

// ---- extend ---------------------------------------------------------------------

/** "90", "90s", "2m", "1500ms": a duration in ms. */
function parseDuration(text: string | undefined): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text ?? '');
  if (!m) return undefined;
  const unit = m[2] === 'ms' ? 1 : m[2] === 'm' ? 60000 : 1000;
  return Math.round(Number(m[1]) * unit);
}

export const extendCommand: CommandSpec = {
  name: 'extend',
  summary: 'keep a held chunk held longer (time to edit it)',
  usage: 'nke extend ID DURATION',
  description:
    'Asks the filter to hold chunk ID until DURATION from now (90, 90s, 2m or 1500ms; plain\n' +
    'numbers are seconds) instead of releasing it unchanged at its deadline. The filter never\n' +
    `moves a deadline earlier and never holds a chunk more than ${NKE_HOLD_TOTAL_MAX_MS / 60000} minutes in all since it\n` +
    'was held; the new deadline is printed. A chunk no longer held exits 5 and says why.',
  options: [],
  async run(args) {
    const [rawId, rawDuration, ...extra] = args.positional;
    const id = checkId('extend', rawId);
    if (extra.length) throw new UsageError(`nke extend: unexpected argument ${extra[0]}`);
    const ms = parseDuration(rawDuration);
    if (ms === undefined || ms < 1) {
      throw new UsageError(
        `nke extend: DURATION is how long from now to keep chunk ${id} held: 90, 90s, 2m or 1500ms; got ${rawDuration ?? 'nothing'}`,
      );
    }
    const view = await withOwner(id, async (c) => {
      const held = (await c.sendRequest(P.GetSnapshot)).pending.find((p) => p.id === id);
      // The ABI counts a hold from when the chunk was held; a person counts from now.
      // Not held: the helper says why (answered, released and how).
      const holdMs = held ? Date.now() + ms - held.heldAt : Math.min(ms, NKE_HOLD_TOTAL_MAX_MS);
      if (held && holdMs > NKE_HOLD_TOTAL_MAX_MS) {
        throw new CliError(
          `nke extend: chunk ${id} was held ${timeLeftSince(held.heldAt)} ago; the filter holds a chunk at most ${NKE_HOLD_TOTAL_MAX_MS / 60000} minutes in all, so it can be kept at most ${((held.heldAt + NKE_HOLD_TOTAL_MAX_MS - Date.now()) / 1000).toFixed(1)} s more`,
        );
      }
      try {
        return await c.sendRequest(P.ExtendHold, { id, holdMs: Math.max(1, Math.round(holdMs)) });
      } catch (e) {
        throw chunkError(id, 'extending', e);
      }
    });
    process.stderr.write(
      `nke: chunk ${id}: held until ${new Date(view.deadline).toTimeString().slice(0, 8)} (${timeLeft(view.deadline)} left), then released unchanged unless answered\n`,
    );
    return ExitCode.ok;
  },
};

function timeLeftSince(at: number): string {
  return `${((Date.now() - at) / 1000).toFixed(1)} s`;
}

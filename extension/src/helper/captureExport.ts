// The capture history as pcapng: every socket a conversation of synthesized
// packets (capture/conversation.ts) carrying the bytes as the peer received
// them, each packet commented with the process, pid, socket and what the
// filter and the helper did with the bytes.
//
// One loop serves a file export and a live stream (Wireshark's extcap) alike:
// entries are taken in history order; a held chunk without a verdict yet
// holds back the rest of its socket (its sequence numbers depend on what is
// sent), never other sockets. A file export ends when it reaches the end of
// the history, writing what is still held as not sent (so far); a live
// stream waits for more until it is aborted or its reader goes away.
//
// Memory: one chunk's bytes at a time, plus at most a batch of output; the
// sink's promise is awaited before the next batch (backpressure).
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { CaptureExportResult, NkeErrorCode } from '../shared/helperProtocol';
import { type Direction, type Frame, TcpConversation, UdpFlow } from '../capture/conversation';
import type { Endpoint } from '../capture/packets';
import { LINKTYPE_ETHERNET, PcapngWriter } from '../capture/pcapng';
import {
  type CaptureEndpoint,
  type CaptureEntry,
  type CaptureHistory,
  type CaptureSocket,
  EntryKind,
  Fate,
  originalDelivered,
} from './captureHistory';

/** nke_data flags used here (shared/abi.ts names them; the history keeps the raw bits). */
const DATA_F_DATAGRAM = 0x2;

export interface ExportSelection {
  /** socket ids ("slot:gen"); empty or absent: all */
  sockets?: readonly string[];
  /** only sockets of processes with this name */
  process?: string;
}

export interface ExportSummary {
  packets: number;
  bytes: number;
  sockets: number;
  /** chunks whose bytes are in the file (as sent or as not sent) */
  chunks: number;
  /** holes marked: bytes passed unreported, or gone from the history */
  gaps: number;
}

export interface ExportOptions extends ExportSelection {
  /** shb_userappl, e.g. "NKE Workbench 0.1.0 (emulator)" */
  tool: string;
  /** which filter the bytes came from, for the section comment */
  transport: string;
  /** keep streaming new entries until aborted (extcap) */
  live?: {
    signal: AbortSignal;
    /** also what the history holds from before the stream began */
    fromHistory?: boolean;
  };
  /**
   * The user the file is for, when the helper runs as root (kext mode on
   * macOS): the export is handed to them, not left to root.
   */
  owner?: { uid: number; gid: number };
}

const TEST_NET: Record<4 | 6, [Uint8Array, Uint8Array]> = {
  // RFC 5737 / RFC 3849 documentation addresses: an endpoint the filter never reported.
  4: [Uint8Array.from([192, 0, 2, 1]), Uint8Array.from([192, 0, 2, 2])],
  6: [
    Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 1]),
    Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 2]),
  ],
};

const isUnspecified = (e: CaptureEndpoint) => e.addr.every((b) => b === 0);
const isLoopback = (e: CaptureEndpoint) =>
  e.family === 4 ? e.addr[0] === 127 : e.addr.subarray(0, 15).every((b) => b === 0) && e.addr[15] === 1;

/** The endpoints a socket's packets use; made up (and said so) where the filter did not report them. */
function endpoints(
  s: CaptureSocket,
  peer?: CaptureEndpoint,
): { local: Endpoint; remote: Endpoint; madeUp: boolean } {
  const fam = s.family;
  let madeUp = false;
  let remote: Endpoint | undefined = peer ?? s.remote;
  if (!remote || remote.family !== fam) {
    remote = { family: fam, addr: TEST_NET[fam][1], port: 0 };
    madeUp = true;
  }
  let local: Endpoint | undefined = s.local;
  if (!local || local.family !== fam) {
    local = { family: fam, addr: TEST_NET[fam][0], port: 0 };
    madeUp = true;
  } else if (isUnspecified(local)) {
    // Bound to the wildcard address: the packets need a source. Loopback
    // traffic came from loopback; otherwise a documentation address says so.
    local = { ...local, addr: isLoopback(remote) ? remote.addr : TEST_NET[fam][0] };
  }
  return { local, remote, madeUp };
}

const GAP_WHY: Record<number, string> = {
  0: 'not reported to this helper (it connected later, or capture was off for them)',
  1: 'passed by the filter without a report: no free buffer (fail-open)',
  2: 'passed by the filter without a report: its notification queue was full',
};

function fateText(f: Fate, dir: Direction): string {
  const notSent = dir === 'out' ? 'NOT SENT to the peer' : 'NOT DELIVERED to the process';
  switch (f) {
    case Fate.Reported:
      return 'reported (passed unchanged)';
    case Fate.Allowed:
      return 'held, allowed (original)';
    case Fate.AutoPassed:
      return 'held, passed by the helper (original)';
    case Fate.ReleasedSent:
      return 'held, released unchanged by the filter (deadline or client gone)';
    case Fate.Dropped:
      return `held, dropped: ${notSent}`;
    case Fate.Merged:
      return `held, rewritten by a rule together with the chunk before it: this original ${notSent}`;
    case Fate.ReleasedDiscarded:
      return `held, discarded by the filter (the socket closed first): ${notSent}`;
    case Fate.InjectFailed:
      return `held, re-injection failed in the stack: ${notSent}`;
    case Fate.Pending:
      return `held, no verdict yet when exported: ${notSent} (so far)`;
    default:
      return 'held';
  }
}

/** A note on holes grows to this many characters; later holes are only counted. */
const NOTE_MAX = 400;

/** Adds a hole's description to a note, bounded (a comment must fit an option: < 64 KiB). */
function addNote(note: string, text: string): string {
  if (note.length + text.length <= NOTE_MAX) return note + text;
  const m = /\[and (\d+) more holes\]$/.exec(note);
  return m
    ? note.replace(/\[and \d+ more holes\]$/, `[and ${Number(m[1]) + 1} more holes]`)
    : `${note} [and 1 more holes]`;
}

interface Conversation {
  socket: CaptureSocket;
  tcp?: TcpConversation;
  udp?: UdpFlow;
  prefix: string;
  /** holes in each direction not yet shown on a packet of that direction */
  note: { in: string; out: string };
  /** directions with an entry written already (the first one places the stream) */
  started: { in: boolean; out: boolean };
}

export class CaptureExport {
  private readonly convs = new Map<number, Conversation>();
  /** entries held back behind a held chunk without a verdict, per socket */
  private readonly waiting = new Map<number, number[]>();
  private readonly summary: ExportSummary = { packets: 0, bytes: 0, sockets: 0, chunks: 0, gaps: 0 };
  private readonly wanted?: Set<string>;

  constructor(
    private readonly history: CaptureHistory,
    private readonly writer: PcapngWriter,
    private readonly opts: ExportOptions,
  ) {
    if (opts.sockets?.length) this.wanted = new Set(opts.sockets);
  }

  private selected(s: CaptureSocket | undefined): s is CaptureSocket {
    if (!s) return false;
    if (this.wanted && !this.wanted.has(s.id)) return false;
    if (this.opts.process && s.process !== this.opts.process) return false;
    return true;
  }

  async run(): Promise<ExportSummary> {
    const h = this.history;
    this.writer.begin(
      {
        os: `${os.type()} ${os.release()} ${os.arch()}`,
        hardware: `${os.cpus()[0]?.model?.trim() ?? 'unknown CPU'} (${os.arch()})`,
        userAppl: this.opts.tool,
        comment:
          `What the NKE socket filter (${this.opts.transport}) saw. The payload bytes are real; ` +
          'the Ethernet/IP/TCP/UDP headers, handshakes and teardowns are synthesized consistently ' +
          '(a socket filter sees data, not packets). Every packet names its process, pid and socket.',
      },
      [
        {
          linkType: LINKTYPE_ETHERNET,
          name: 'nke-ipv4',
          description: 'IPv4 sockets seen by the NKE socket filter',
        },
        {
          linkType: LINKTYPE_ETHERNET,
          name: 'nke-ipv6',
          description: 'IPv6 sockets seen by the NKE socket filter',
        },
      ],
    );
    // A live stream starts now unless asked for the history too.
    let cursor = this.opts.live && !this.opts.live.fromHistory ? h.nextEntry : h.firstEntry;
    const signal = this.opts.live?.signal;
    for (;;) {
      if (signal?.aborted) break;
      const seen = h.version;
      cursor = Math.max(cursor, h.firstEntry); // cleared or evicted meanwhile
      const end = h.nextEntry;
      let n = 0;
      for (; cursor < end; cursor++) {
        const e = h.entry(cursor);
        if (!e || !this.selected(e.socket)) continue;
        const queue = this.waiting.get(e.socket.ref);
        if (queue || (e.kind === EntryKind.Data && e.fate === Fate.Pending)) {
          if (queue) queue.push(e.no);
          else this.waiting.set(e.socket.ref, [e.no]);
          continue;
        }
        this.emit(e);
        await this.writer.maybeFlush();
        if (++n % 2048 === 0) await new Promise<void>((r) => setImmediate(r)); // let the engine run
      }
      await this.drainWaiting(false);
      if (!this.opts.live) break;
      await this.writer.flush(); // live: what there is now, at once
      // What came in while this pass ran is taken at once, not at the next change.
      if (h.version === seen) await this.changed(signal!);
    }
    if (!this.opts.live) await this.drainWaiting(true);
    await this.writer.flush();
    this.summary.packets = this.writer.packets;
    this.summary.bytes = this.writer.bytesWritten;
    return this.summary;
  }

  /** Emits held-back entries whose chunk got its verdict; `all`: the rest too (export end). */
  private async drainWaiting(all: boolean): Promise<void> {
    for (const [ref, queue] of this.waiting) {
      while (queue.length) {
        const e = this.history.entry(queue[0]);
        if (e && e.kind === EntryKind.Data && e.fate === Fate.Pending && !all) break;
        queue.shift();
        if (e) this.emit(e);
        else this.evicted(ref);
        await this.writer.maybeFlush();
      }
      if (!queue.length) this.waiting.delete(ref);
    }
  }

  private changed(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        off();
        signal.removeEventListener('abort', done);
        resolve();
      };
      const off = this.history.onChange(done);
      signal.addEventListener('abort', done);
    });
  }

  private conversation(s: CaptureSocket, e: CaptureEntry): Conversation {
    let c = this.convs.get(s.ref);
    if (c) return c;
    const datagram = s.protocol === 'udp' || (s.protocol === 'other' && (e.flags & DATA_F_DATAGRAM) !== 0);
    const { local, remote, madeUp } = endpoints(s);
    c = {
      socket: s,
      prefix: `${s.process || 'unknown process'} (pid ${s.pid || '?'}) socket ${s.id}`,
      note: { in: '', out: '' },
      started: { in: false, out: false },
    };
    if (madeUp) c.prefix += ' [addresses not reported by the filter: made up]';
    if (datagram) c.udp = new UdpFlow(local, remote);
    else {
      c.tcp = new TcpConversation(local, remote, s.initiator === 'remote' ? 'remote' : 'local', s.ref);
      this.put(
        e.socket!,
        c.tcp.open(
          e.timeUs,
          `${c.prefix}: TCP handshake synthesized by NKE Workbench` +
            (s.initiator === 'unknown' ? ' (the connection began before the helper saw it)' : ''),
        ),
      );
    }
    this.convs.set(s.ref, c);
    this.summary.sockets++;
    return c;
  }

  private put(s: CaptureSocket, frames: Frame[]): void {
    const interfaceId = s.family === 6 ? 1 : 0;
    for (const f of frames) {
      this.writer.packet({
        interfaceId,
        timeUs: f.timeUs,
        frame: f.frame,
        comment: f.comment,
        direction: f.direction,
      });
    }
  }

  /** A socket's held-back entry was evicted before it could be written. */
  private evicted(ref: number): void {
    const c = this.convs.get(ref);
    if (c) {
      this.summary.gaps++;
      c.note.in = c.note.out = ' [earlier bytes are no longer in the capture history]';
    }
  }

  private emit(e: CaptureEntry): void {
    const s = e.socket!;
    if (e.kind === EntryKind.Close) {
      const c = this.convs.get(s.ref);
      if (c?.tcp) {
        this.put(s, c.tcp.close(e.timeUs, `${c.prefix}: closed (FIN synthesized)`, c.note));
        c.note = { in: '', out: '' };
      }
      return;
    }
    const c = this.conversation(s, e);
    if (e.kind === EntryKind.Connect) return;
    const dir = e.direction;
    if (!c.started[dir]) {
      // The first bytes of a direction in this file: a stream that began
      // before them (a live capture started later) starts with a hole there.
      c.started[dir] = true;
      if (e.streamOffset > 0) {
        this.lost(c, dir, e.streamOffset, `the first ${e.streamOffset} bytes are not in this capture`);
      }
    }
    if (e.kind === EntryKind.Gap) {
      this.summary.gaps++;
      c.tcp?.skip(dir, e.size);
      c.note[dir] = addNote(
        c.note[dir],
        ` [${e.size} bytes before this ${GAP_WHY[e.gapReason] ?? 'were not reported'}]`,
      );
      return;
    }
    const what = `${c.prefix} ${dir}`;
    const note = c.note[dir];
    c.note[dir] = '';
    const original = this.history.read(e.dataAt, e.size);
    const t = e.fate === Fate.Reported ? e.timeUs : e.fateUs;
    if (e.fate === Fate.Edited || e.fate === Fate.Rewritten) {
      const how = e.fate === Fate.Edited ? 'held, edited' : 'held, rewritten by a rule';
      const sent = this.history.read(e.editAt, e.editLen);
      if (sent) {
        this.deliver(
          c,
          dir,
          t,
          sent,
          `${what}: ${how}: the peer received these ${e.editLen} bytes (the original ${e.size} bytes follow, not sent)${note}`,
          e,
        );
      } else {
        this.lost(
          c,
          dir,
          e.editLen,
          `${what}: ${how}: the ${e.editLen} bytes sent are no longer in the capture history`,
        );
      }
      if (original) {
        this.summary.chunks++;
        this.notSent(
          c,
          dir,
          t,
          original,
          `${what}: ${how}: ORIGINAL of ${e.size} bytes, not sent (the peer received the edited bytes)`,
          e,
        );
      }
      return;
    }
    if (originalDelivered(e.fate)) {
      if (original) this.deliver(c, dir, t, original, `${what}: ${fateText(e.fate, dir)}${note}`, e);
      else {
        this.lost(c, dir, e.size, `${what}: ${e.size} bytes no longer in the capture history (oldest out)`);
      }
      return;
    }
    // Not delivered (dropped, merged into a rewrite, discarded, still held).
    if (original) {
      this.summary.chunks++;
      this.notSent(c, dir, t, original, `${what}: ${fateText(e.fate, dir)}${note}`, e);
    }
    if (note) c.note[dir] = note; // still to be shown on the next segment that went through
  }

  private deliver(
    c: Conversation,
    dir: Direction,
    t: number,
    bytes: Buffer,
    comment: string,
    e: CaptureEntry,
  ): void {
    this.summary.chunks++;
    if (c.tcp) this.put(c.socket, c.tcp.data(dir, t, bytes, comment));
    else this.put(c.socket, [c.udp!.datagram(dir, t, bytes, comment, this.peerOf(c, e))]);
  }

  private notSent(
    c: Conversation,
    dir: Direction,
    t: number,
    bytes: Buffer,
    comment: string,
    e: CaptureEntry,
  ): void {
    if (c.tcp) this.put(c.socket, c.tcp.notSent(dir, t, bytes, comment));
    else this.put(c.socket, c.udp!.notSent(dir, t, bytes, comment, this.peerOf(c, e)));
  }

  /** Bytes that went through but are gone from the ring: a hole in the sequence space. */
  private lost(c: Conversation, dir: Direction, size: number, why: string): void {
    this.summary.gaps++;
    c.tcp?.skip(dir, size);
    c.note[dir] = addNote(c.note[dir], ` [${why}]`);
  }

  private peerOf(c: Conversation, e: CaptureEntry): Endpoint | undefined {
    if (!e.peer || e.peer.family !== c.socket.family) return undefined;
    return e.peer;
  }
}

/** Writes the selected part of the history to `writer`; resolves with what went in. */
export function exportCapture(
  history: CaptureHistory,
  writer: PcapngWriter,
  opts: ExportOptions,
): Promise<ExportSummary> {
  return new CaptureExport(history, writer, opts).run();
}

// ---- where the pcapng goes ---------------------------------------------------

/** A refused export target or a missing history: the message says what to do. */
export class CaptureTargetError extends Error {
  constructor(
    readonly code: NkeErrorCode,
    message: string,
  ) {
    super(message);
  }
}

function requireAbsolute(p: string, what: string): void {
  if (typeof p !== 'string' || !path.isAbsolute(p)) {
    throw new CaptureTargetError(
      'NKE_BAD_PATH',
      `${what} must be an absolute path, got ${JSON.stringify(p)}`,
    );
  }
}

/**
 * Exports to a file: written as `FILE.nke-partial-PID` (0600) and renamed
 * over FILE only when complete, so a failed export leaves an existing FILE
 * as it was.
 */
export async function exportToFile(
  history: CaptureHistory,
  file: string,
  opts: ExportOptions,
): Promise<CaptureExportResult> {
  requireAbsolute(file, 'the export file');
  const partial = `${file}.nke-partial-${process.pid}`;
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(
      partial,
      // A new file, never one that is there (a link planted under that name
      // would otherwise be followed or truncated by a root helper).
      fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
      0o600,
    );
  } catch (e) {
    throw new CaptureTargetError('NKE_EXPORT_FILE', `cannot create ${partial}: ${(e as Error).message}`);
  }
  try {
    if (opts.owner && process.getuid?.() === 0) await fh.chown(opts.owner.uid, opts.owner.gid);
    const writer = new PcapngWriter(async (pieces) => {
      // writev, and again from where a short write stopped.
      const rest = pieces;
      while (rest.length) {
        let n = (await fh.writev(rest)).bytesWritten;
        while (rest.length && n >= rest[0].length) n -= rest.shift()!.length;
        if (n > 0) rest[0] = rest[0].subarray(n);
      }
    });
    const summary = await exportCapture(history, writer, opts);
    await fh.close();
    await fs.promises.rename(partial, file);
    return { path: file, ...summary };
  } catch (e) {
    await fh.close().catch(() => {});
    await fs.promises.rm(partial, { force: true });
    throw e instanceof CaptureTargetError
      ? e
      : new CaptureTargetError('NKE_EXPORT_FILE', `writing ${file} failed: ${(e as Error).message}`);
  }
}

/** Opens a FIFO for writing without blocking on a reader that may never come. */
async function openFifo(fifo: string, signal: AbortSignal): Promise<number> {
  const st = await fs.promises.stat(fifo).catch((e: Error) => {
    throw new CaptureTargetError('NKE_FIFO', `cannot use ${fifo}: ${e.message}`);
  });
  if (!st.isFIFO()) {
    throw new CaptureTargetError('NKE_FIFO', `${fifo} is not a FIFO (Wireshark's extcap --fifo names one)`);
  }
  for (;;) {
    try {
      // O_NONBLOCK: fails with ENXIO while no reader has it open, instead of
      // hanging a thread; the pipe is then driven by a libuv pipe handle.
      return fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENXIO') {
        throw new CaptureTargetError('NKE_FIFO', `cannot open ${fifo}: ${(e as Error).message}`);
      }
    }
    if (signal.aborted) throw new CaptureTargetError('NKE_FIFO', `nobody opened ${fifo} for reading`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Streams live pcapng into a FIFO until `signal` aborts or the reader closes
 * its end (EPIPE). Backpressure from the pipe: a slow reader slows the
 * stream, never the helper's memory.
 */
export async function streamToFifo(
  history: CaptureHistory,
  fifo: string,
  opts: ExportOptions,
  signal: AbortSignal,
  fromHistory = false,
): Promise<CaptureExportResult> {
  requireAbsolute(fifo, 'the FIFO');
  const stop = new AbortController();
  const onAbort = () => stop.abort();
  signal.addEventListener('abort', onAbort);
  const fd = await openFifo(fifo, stop.signal);
  const pipe = new net.Socket({ fd, readable: false, writable: true });
  let broken: Error | undefined;
  pipe.on('error', (e) => {
    broken = e; // EPIPE: the reader went away
    stop.abort();
  });
  pipe.on('close', () => stop.abort());
  const sink = (pieces: Buffer[]) =>
    new Promise<void>((resolve) => {
      if (broken || stop.signal.aborted) return resolve(); // nothing more goes anywhere
      pipe.cork();
      let ok = true;
      for (const b of pieces) ok = pipe.write(b);
      pipe.uncork();
      if (ok) return resolve();
      const done = () => {
        pipe.off('drain', done);
        stop.signal.removeEventListener('abort', done);
        resolve();
      };
      pipe.on('drain', done);
      stop.signal.addEventListener('abort', done);
    });
  try {
    const summary = await exportCapture(history, new PcapngWriter(sink, 256 * 1024), {
      ...opts,
      live: { signal: stop.signal, fromHistory },
    });
    return { path: fifo, ...summary };
  } finally {
    signal.removeEventListener('abort', onAbort);
    pipe.destroy();
  }
}

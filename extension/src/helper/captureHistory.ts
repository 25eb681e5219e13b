// The helper's capture history: the payload bytes of every chunk the filter
// reported, held, edited or dropped, per socket and direction, in order,
// with timestamps, so that what the filter saw can be exported as pcapng
// (captureExport.ts) or streamed to Wireshark live.
//
// Bounded, oldest out, and never in memory:
//  - the bytes go to a ring file (the addon's CaptureSpill writes each chunk
//    from the shared buffers on its reader thread; edits go through the same
//    ring) in a private directory; the file is unlinked at once, so the
//    kernel frees it when the helper ends, however it ends;
//  - here there is only a fixed-width index (typed arrays, grown on demand
//    up to a cap derived from the size): where each entry's bytes are, its
//    socket, direction, stream offset, time and fate.
// An entry whose bytes the ring has since overwritten is evicted; so is the
// oldest entry when the index is full.
//
// Gaps: bytes the filter passed without reporting them (NKE_NT_DATA_GAP, or
// a jump in a flow's stream offsets the helper sees itself) are entries of
// their own, with a length and no bytes, so an export marks the hole
// instead of splicing the bytes around it.
//
// JS thread only (the addon's writes are ordered by its own head; see
// native/addon/src/capture_spill.h for when bytes read back are intact).
import fs from 'node:fs';
import path from 'node:path';
import type { CaptureStatus } from '../shared/helperProtocol';
import { makePrivateDir } from '../shared/tokenSocket';

export const enum EntryKind {
  /** the socket connected (or was first seen): where a TCP handshake goes */
  Connect = 1,
  Data = 2,
  /** bytes passed without a report */
  Gap = 3,
  /** the socket detached: where the FIN goes */
  Close = 4,
}

/** What became of a chunk's bytes. */
export const enum Fate {
  /** not held: passed as it came */
  Reported = 1,
  /** held, no verdict yet */
  Pending = 2,
  /** held; a person allowed the original */
  Allowed = 3,
  /** held; the helper's rules (or a pause) passed the original */
  AutoPassed = 4,
  /** held; a person's replacement went out instead */
  Edited = 5,
  /** held; a rewrite rule's bytes went out instead (they may cover later chunks too) */
  Rewritten = 6,
  /** held; its bytes went out inside an earlier chunk's rewrite */
  Merged = 7,
  /** held; dropped by a person */
  Dropped = 8,
  /** held; the filter released it (deadline, client gone): the original went out */
  ReleasedSent = 9,
  /** held; its socket went away first: discarded */
  ReleasedDiscarded = 10,
  /** held; re-injecting it failed in the stack */
  InjectFailed = 11,
}

/** Whether the original bytes of a chunk with this fate reached the peer. */
export function originalDelivered(f: Fate): boolean {
  return f === Fate.Reported || f === Fate.Allowed || f === Fate.AutoPassed || f === Fate.ReleasedSent;
}

export interface CaptureEndpoint {
  family: 4 | 6;
  /** 4 or 16 bytes, network order */
  addr: Uint8Array;
  port: number;
}

/** A socket as the history knows it (the newest facts: addresses come after attach). */
export interface CaptureSocket {
  /** the history's own number for it: socket ids repeat across filter restarts */
  ref: number;
  /** "slot:gen", as the views and the CLI name it */
  id: string;
  pid: number;
  process: string;
  family: 4 | 6;
  protocol: 'tcp' | 'udp' | 'other';
  local?: CaptureEndpoint;
  remote?: CaptureEndpoint;
  /** who connected: 'local' (connect), 'remote' (accept), unknown (adopted) */
  initiator: 'local' | 'remote' | 'unknown';
  /** last entry that names it (older sockets are forgotten with their entries) */
  lastEntry: number;
  closed: boolean;
}

/** One index entry, copied out (its fields as numbers). */
export interface CaptureEntry {
  no: number;
  kind: EntryKind;
  fate: Fate;
  socket: CaptureSocket | undefined;
  direction: 'in' | 'out';
  /** NKE_DATA_F_DATAGRAM etc. of the chunk */
  flags: number;
  streamOffset: number;
  size: number;
  /** logical ring position of the original bytes; -1: not kept */
  dataAt: number;
  /** logical ring position of the bytes sent instead (Edited, Rewritten); -1: none or not kept */
  editAt: number;
  editLen: number;
  /** the datagram's own peer (sendto/recvfrom), if it had one */
  peer: CaptureEndpoint | undefined;
  chunkId: number;
  /** when the filter saw it, µs since 1970 */
  timeUs: number;
  /** when its fate was decided (= timeUs for what was only reported) */
  fateUs: number;
  /** Gap: why (enum nke_gap_reason; 0: seen by the helper as a jump in stream offsets) */
  gapReason: number;
}

/** The parts of the addon's FilterClient the history writes through while the filter is open. */
export interface SpillWriter {
  captureWrite(bytes: Buffer): number;
  captureStatus(): { head: number; writeErrors: number; lastError: string } | undefined;
}

export interface CaptureHistoryOptions {
  /** ring bytes (the setting nke.captureHistoryMiB, in bytes) */
  limitBytes: number;
  /** directory for the private spill directory (default: the OS temp directory) */
  parentDir?: string;
  /** index entries kept at most (default: from limitBytes) */
  maxEntries?: number;
}

/** Index entries per MiB of ring when no cap is given: room for 512-byte chunks on average. */
const ENTRIES_PER_MIB = 2048;
const MIN_ENTRIES = 4096;
const MAX_ENTRIES_DEFAULT = 2_000_000;
/**
 * Ring bytes written ahead at start (see prefill()): about 1.4 s of the
 * helper's start per GiB on the test machine. Beyond, the first lap pays for
 * its pages itself, on the reader thread, and the filter may pass chunks
 * unreported (gaps) while it does.
 */
const PREFILL_MAX = 2 ** 30;
/** Entries looked at per batch for overwritten bytes (see evictOverwritten()). */
const EVICT_SCAN = 4096;
/** Distinct datagram peers remembered (a UDP server may see many). */
const MAX_PEERS = 65536;

/** µs since 1970 from the filter's monotonic ns (the clock of process.hrtime on Linux and macOS). */
export class FilterClock {
  private readonly offsetUs: number;
  constructor() {
    this.offsetUs = Date.now() * 1000 - Number(process.hrtime.bigint() / 1000n);
  }
  toWallUs(timeNs: number): number {
    const now = Date.now() * 1000;
    if (!timeNs) return now;
    const us = timeNs / 1000 + this.offsetUs;
    // A filter on another clock (or none): the helper's own time is the best guess.
    return Math.abs(us - now) > 3600e6 ? now : us;
  }
}

/** The index, one typed array per field (fixed width: no object per entry). */
interface Columns {
  kind: Uint8Array;
  fate: Uint8Array;
  dir: Uint8Array;
  flags: Uint8Array;
  sockRef: Uint32Array;
  size: Uint32Array;
  editLen: Uint32Array;
  peer: Int32Array;
  streamOff: Float64Array;
  dataAt: Float64Array;
  editAt: Float64Array;
  timeUs: Float64Array;
  fateUs: Float64Array;
  /** Data: the chunk id; Gap: its reason */
  chunkId: Float64Array;
}

function makeColumns(n: number): Columns {
  return {
    kind: new Uint8Array(n),
    fate: new Uint8Array(n),
    dir: new Uint8Array(n),
    flags: new Uint8Array(n),
    sockRef: new Uint32Array(n),
    size: new Uint32Array(n),
    editLen: new Uint32Array(n),
    peer: new Int32Array(n),
    streamOff: new Float64Array(n),
    dataAt: new Float64Array(n),
    editAt: new Float64Array(n),
    timeUs: new Float64Array(n),
    fateUs: new Float64Array(n),
    chunkId: new Float64Array(n),
  };
}

export class CaptureHistory {
  readonly limitBytes: number;
  private readonly dir: string;
  private readonly file: string;
  /** the ring file, for reading (the addon writes through its own dup) */
  private fd: number;
  private writer?: SpillWriter;
  /** the head while no writer is attached (the last one's, or 0) */
  private idleHead = 0;

  private readonly maxEntries: number;
  /** entry e lives at e % cap while first <= e < next */
  private cap = 0;
  private first = 0;
  private next = 0;
  private c: Columns = makeColumns(0);

  private nextRef = 1;
  /** by ref; pruned when their last entry is evicted */
  private readonly sockets = new Map<number, CaptureSocket>();
  /** current socket of each "slot:gen" */
  private readonly current = new Map<string, CaptureSocket>();
  /** next stream offset per flow (ref * 4 + direction) */
  private readonly flowNext = new Map<number, number>();
  /** held chunks awaiting a fate: chunk id -> entry number */
  private readonly pending = new Map<number, number>();
  private readonly peers: CaptureEndpoint[] = [];
  private readonly peerIndex = new Map<string, number>();

  private counters = { evicted: 0, gaps: 0, gapBytes: 0 };
  private readonly listeners = new Set<() => void>();
  private changed = false;

  constructor(opts: CaptureHistoryOptions) {
    if (!Number.isSafeInteger(opts.limitBytes) || opts.limitBytes < 1) {
      throw new RangeError(`capture history size must be a positive number of bytes, got ${opts.limitBytes}`);
    }
    this.limitBytes = opts.limitBytes;
    this.maxEntries =
      opts.maxEntries ??
      Math.min(
        MAX_ENTRIES_DEFAULT,
        Math.max(MIN_ENTRIES, Math.ceil((opts.limitBytes / 2 ** 20) * ENTRIES_PER_MIB)),
      );
    this.dir = opts.parentDir
      ? fs.mkdtempSync(path.join(opts.parentDir, 'nke-capture-'))
      : makePrivateDir('nke-capture-');
    fs.chmodSync(this.dir, 0o700);
    this.file = path.join(this.dir, 'history.bin');
    this.fd = fs.openSync(this.file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    // Unlinked now: the bytes stay reachable through the descriptors only,
    // and nothing is left on disk when the helper ends, even by SIGKILL.
    fs.rmSync(this.file);
    this.prefill();
    this.grow(Math.min(this.maxEntries, MIN_ENTRIES));
  }

  /**
   * Writes zeros over the first PREFILL_MAX bytes of the ring now, before
   * anything else writes it. The first write to a page of a new file costs
   * the kernel about ten times an overwrite (allocating and accounting the
   * page: 1.4 s against 0.15 s of CPU per GiB on the 2-CPU test machine),
   * and the addon's reader thread does those writes on the data path.
   */
  private prefill(): void {
    const n = Math.min(this.limitBytes, PREFILL_MAX);
    const zeros = Buffer.alloc(Math.min(n, 1 << 20));
    for (let at = 0; at < n; at += zeros.length) {
      fs.writeSync(this.fd, zeros, 0, Math.min(zeros.length, n - at), at);
    }
  }

  /** The capture option of FilterClient.open(): where the addon writes chunk bytes. */
  spillTarget(): { fd: number; size: number; head: number } {
    return { fd: this.fd, size: this.limitBytes, head: this.head };
  }

  /** The open filter client now writes the ring (its head continues ours). */
  attachWriter(w: SpillWriter): void {
    this.writer = w;
  }

  /** The filter client closed: its head is where the ring stands. */
  detachWriter(): void {
    if (this.writer) this.idleHead = this.writer.captureStatus()?.head ?? this.idleHead;
    this.writer = undefined;
  }

  /** Logical position of the next byte the ring will take. */
  get head(): number {
    return this.writer?.captureStatus()?.head ?? this.idleHead;
  }

  get firstEntry(): number {
    return this.first;
  }

  get nextEntry(): number {
    return this.next;
  }

  status(): CaptureStatus {
    const st = this.writer?.captureStatus();
    const head = st?.head ?? this.idleHead;
    return {
      limitBytes: this.limitBytes,
      bytesKept: Math.min(head, this.limitBytes),
      entries: this.next - this.first,
      evicted: this.counters.evicted,
      gaps: this.counters.gaps,
      gapBytes: this.counters.gapBytes,
      writeError: st?.lastError || undefined,
    };
  }

  /** Calls `fn` (at most once per engine batch) when entries were added or decided. */
  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Counts the batches that added or decided something (a live export compares it). */
  version = 0;

  /** End of one batch of notifications: tell the listeners (live exports) once. */
  flush(): void {
    this.evictOverwritten();
    if (!this.changed) return;
    this.changed = false;
    this.version++;
    for (const fn of [...this.listeners]) fn();
  }

  // ---- sockets -------------------------------------------------------------

  /** A socket attached: a new history socket, even when its id was seen before. */
  socketAttached(
    id: string,
    info: { pid: number; process: string; family: 4 | 6; protocol: CaptureSocket['protocol'] },
  ): void {
    const s: CaptureSocket = {
      ref: this.nextRef++,
      id,
      ...info,
      initiator: 'unknown',
      lastEntry: this.next,
      closed: false,
    };
    this.sockets.set(s.ref, s);
    this.current.set(id, s);
  }

  /** The current socket of an id; one attached before the helper connected is adopted. */
  private socket(id: string): CaptureSocket {
    let s = this.current.get(id);
    if (!s) {
      s = {
        ref: this.nextRef++,
        id,
        pid: 0,
        process: '',
        family: 4,
        protocol: 'other',
        initiator: 'unknown',
        lastEntry: this.next,
        closed: false,
      };
      this.sockets.set(s.ref, s);
      this.current.set(id, s);
    }
    return s;
  }

  /** What the live model learned later (adopted sockets: process, protocol). */
  socketInfo(
    id: string,
    info: Partial<Pick<CaptureSocket, 'pid' | 'process' | 'family' | 'protocol'>>,
  ): void {
    const s = this.socket(id);
    for (const [k, v] of Object.entries(info)) {
      if (v !== undefined && v !== '' && v !== 0) (s as unknown as Record<string, unknown>)[k] = v;
    }
  }

  /** CONNECT_IN / CONNECT_OUT / BOUND / LISTEN: addresses; a connect is where the handshake goes. */
  socketAddrs(
    id: string,
    local: CaptureEndpoint | undefined,
    remote: CaptureEndpoint | undefined,
    connect: 'local' | 'remote' | undefined,
    timeUs: number,
  ): void {
    const s = this.socket(id);
    if (local) s.local = local;
    if (remote) s.remote = remote;
    if (local) s.family = local.family;
    else if (remote) s.family = remote.family;
    if (connect && s.initiator === 'unknown') {
      s.initiator = connect;
      this.add(EntryKind.Connect, s, 0, 0, 0, 0, -1, timeUs);
    }
  }

  socketClosed(id: string, timeUs: number): void {
    const s = this.current.get(id);
    if (!s) return;
    s.closed = true;
    this.current.delete(id);
    this.add(EntryKind.Close, s, 0, 0, 0, 0, -1, timeUs);
  }

  // ---- data ----------------------------------------------------------------

  private flowKey(s: CaptureSocket, dir: number): number {
    return s.ref * 4 + dir;
  }

  /**
   * A data chunk (reported or held) whose bytes the addon wrote at `dataAt`
   * (-1: not kept). A jump in the flow's stream offsets before it is a gap.
   */
  data(
    id: string,
    n: {
      chunkId: bigint;
      direction: number;
      flags: number;
      streamOffset: number;
      size: number;
      held: boolean;
      peer?: CaptureEndpoint;
    },
    dataAt: number,
    timeUs: number,
  ): void {
    const s = this.socket(id);
    this.implicitGap(s, n.direction, n.streamOffset, n.flags, timeUs);
    const e = this.add(EntryKind.Data, s, n.direction, n.flags, n.streamOffset, n.size, dataAt, timeUs);
    const i = e % this.cap;
    this.c.fate[i] = n.held ? Fate.Pending : Fate.Reported;
    this.c.chunkId[i] = Number(n.chunkId);
    this.c.peer[i] = n.peer ? this.internPeer(n.peer) : -1;
    if (n.held) this.pending.set(Number(n.chunkId), e);
    this.flowNext.set(this.flowKey(s, n.direction), n.streamOffset + n.size);
  }

  /** NKE_NT_DATA_GAP: `size` bytes at streamOffset passed unreported. */
  gap(
    id: string,
    direction: number,
    streamOffset: number,
    size: number,
    flags: number,
    reason: number,
    timeUs: number,
  ): void {
    const s = this.socket(id);
    this.implicitGap(s, direction, streamOffset, flags, timeUs);
    this.addGap(s, direction, streamOffset, size, flags, reason, timeUs);
    this.flowNext.set(this.flowKey(s, direction), streamOffset + size);
  }

  private implicitGap(
    s: CaptureSocket,
    direction: number,
    streamOffset: number,
    flags: number,
    timeUs: number,
  ): void {
    const expected = this.flowNext.get(this.flowKey(s, direction)) ?? 0;
    if (streamOffset > expected) {
      this.addGap(s, direction, expected, streamOffset - expected, flags, 0, timeUs);
    }
  }

  private addGap(
    s: CaptureSocket,
    direction: number,
    at: number,
    size: number,
    flags: number,
    reason: number,
    timeUs: number,
  ): void {
    const e = this.add(EntryKind.Gap, s, direction, flags, at, size, -1, timeUs);
    this.c.chunkId[e % this.cap] = reason; // a gap has no chunk: the field holds its reason
    this.counters.gaps++;
    this.counters.gapBytes += size;
  }

  /**
   * The fate of a held chunk. `sent`: the bytes that went out instead of the
   * original (Edited, Rewritten), kept in the ring too.
   */
  decide(chunkId: bigint | string | number, fate: Fate, timeUs: number, sent?: Buffer): void {
    const id = Number(chunkId);
    const e = this.pending.get(id);
    if (e === undefined) return;
    this.pending.delete(id);
    if (e < this.first) return; // evicted meanwhile
    const i = e % this.cap;
    this.c.fate[i] = fate;
    this.c.fateUs[i] = timeUs;
    if (sent) {
      this.c.editLen[i] = sent.length;
      this.c.editAt[i] = this.writeBytes(sent);
    }
    this.changed = true;
  }

  /** Every held chunk still awaiting a fate gets this one (the filter client closed). */
  releaseAllPending(fate: Fate, timeUs: number): void {
    for (const id of [...this.pending.keys()]) this.decide(id, fate, timeUs);
  }

  /** Whether a held chunk still awaits its fate here. */
  isPending(chunkId: bigint | string | number): boolean {
    return this.pending.has(Number(chunkId));
  }

  private writeBytes(b: Buffer): number {
    if (!this.writer || b.length > this.limitBytes) return -1;
    try {
      return this.writer.captureWrite(b);
    } catch {
      return -1; // filter gone meanwhile: the edit is described, its bytes not kept
    }
  }

  private internPeer(p: CaptureEndpoint): number {
    const key = `${p.family}/${Buffer.from(p.addr).toString('hex')}/${p.port}`;
    let i = this.peerIndex.get(key);
    if (i === undefined) {
      if (this.peers.length >= MAX_PEERS) return -1;
      i = this.peers.length;
      this.peers.push(p);
      this.peerIndex.set(key, i);
    }
    return i;
  }

  // ---- the index -----------------------------------------------------------

  private add(
    kind: EntryKind,
    s: CaptureSocket,
    direction: number,
    flags: number,
    streamOffset: number,
    size: number,
    dataAt: number,
    timeUs: number,
  ): number {
    if (this.next - this.first >= this.cap) {
      if (this.cap < this.maxEntries) this.grow(Math.min(this.maxEntries, this.cap * 2));
      else this.evictOldest();
    }
    const e = this.next++;
    const i = e % this.cap;
    this.c.kind[i] = kind;
    this.c.fate[i] = 0;
    this.c.dir[i] = direction;
    this.c.flags[i] = flags;
    this.c.sockRef[i] = s.ref;
    this.c.size[i] = size;
    this.c.editLen[i] = 0;
    this.c.peer[i] = -1;
    this.c.streamOff[i] = streamOffset;
    this.c.dataAt[i] = dataAt;
    this.c.editAt[i] = -1;
    this.c.timeUs[i] = timeUs;
    this.c.fateUs[i] = timeUs;
    this.c.chunkId[i] = 0;
    s.lastEntry = e;
    this.changed = true;
    return e;
  }

  /** Re-lays the ring into columns of `cap` entries (entry e at e % cap). */
  private grow(cap: number): void {
    const next = makeColumns(cap);
    for (const k of Object.keys(next) as (keyof Columns)[]) {
      const from = this.c[k];
      const to = next[k];
      for (let e = this.first; e < this.next; e++) to[e % cap] = from[e % this.cap];
    }
    this.c = next;
    this.cap = cap;
  }

  private evictOldest(): void {
    const i = this.first % this.cap;
    if (this.c.kind[i] === EntryKind.Data) {
      this.counters.evicted++;
      if (this.c.fate[i] === Fate.Pending) this.pending.delete(this.c.chunkId[i]);
    }
    const ref = this.c.sockRef[i];
    this.first++;
    const s = this.sockets.get(ref);
    if (s && s.lastEntry < this.first && (s.closed || this.current.get(s.id) !== s)) {
      this.sockets.delete(ref);
      for (const d of [1, 2]) this.flowNext.delete(ref * 4 + d);
    }
  }

  /** Oldest out: entries whose bytes the ring has overwritten go, and what came before them. */
  private evictOverwritten(): void {
    const head = this.head;
    let last = -1;
    // Entries are in ring order: the scan stops at the first whose bytes are
    // intact. Entries without bytes (gaps, opens, closes, chunks not kept)
    // are passed over, at most EVICT_SCAN of them a batch so that a long run
    // of them (a disk that is full) costs nothing per batch; they go with the
    // next overwritten entry behind them, or when the index is full.
    for (let e = this.first, seen = 0; e < this.next && seen < EVICT_SCAN; e++, seen++) {
      const i = e % this.cap;
      const at = this.c.dataAt[i];
      if (this.c.kind[i] !== EntryKind.Data || at < 0) continue;
      if (head > at + this.limitBytes) last = e;
      else break;
    }
    while (this.first <= last) this.evictOldest();
  }

  /** A copy of entry `e` (undefined once evicted). */
  entry(e: number): CaptureEntry | undefined {
    if (e < this.first || e >= this.next) return undefined;
    const i = e % this.cap;
    const kind = this.c.kind[i] as EntryKind;
    const peer = this.c.peer[i];
    return {
      no: e,
      kind,
      fate: this.c.fate[i] as Fate,
      socket: this.sockets.get(this.c.sockRef[i]),
      direction: this.c.dir[i] === 1 ? 'in' : 'out',
      flags: this.c.flags[i],
      streamOffset: this.c.streamOff[i],
      size: this.c.size[i],
      dataAt: this.c.dataAt[i],
      editAt: this.c.editAt[i],
      editLen: this.c.editLen[i],
      peer: peer >= 0 ? this.peers[peer] : undefined,
      chunkId: kind === EntryKind.Data ? this.c.chunkId[i] : 0,
      timeUs: this.c.timeUs[i],
      fateUs: this.c.fateUs[i],
      gapReason: kind === EntryKind.Gap ? this.c.chunkId[i] : 0,
    };
  }

  /**
   * The `len` bytes at logical position `at`, or undefined when they are not
   * (or no longer) in the ring: read, then checked against the head, so bytes
   * overwritten while being read are never returned.
   */
  read(at: number, len: number): Buffer | undefined {
    if (at < 0) return undefined;
    const out = Buffer.allocUnsafe(len);
    let done = 0;
    while (done < len) {
      const pos = (at + done) % this.limitBytes;
      const take = Math.min(len - done, this.limitBytes - pos);
      const n = fs.readSync(this.fd, out, done, take, pos);
      if (n <= 0) return undefined;
      done += n;
    }
    return this.head <= at + this.limitBytes ? out : undefined;
  }

  /** Forgets every entry (NKE: Clear); live sockets stay known. */
  clear(): void {
    this.first = this.next;
    this.pending.clear();
    for (const [ref, s] of this.sockets) if (this.current.get(s.id) !== s) this.sockets.delete(ref);
    this.changed = true;
  }

  dispose(): void {
    this.listeners.clear();
    this.writer = undefined;
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// pcapng (the capture file format of Wireshark and tcpdump) as a stream of
// blocks: one Section Header Block, one Interface Description Block per
// interface, then Enhanced Packet Blocks. Written from the block layouts of
// the pcapng specification (draft-ietf-opsawg-pcapng): every block is
// type, total length, body, total length again; bodies and option values are
// padded to 32 bits; little-endian throughout (the byte-order magic says so).
//
// Pure: no vscode, no file system. PcapngWriter hands its bytes to a sink
// (a file, a FIFO to Wireshark) in batches and waits for the sink, so a
// writer that produces faster than the sink drains keeps its memory flat.

const BLOCK_SHB = 0x0a0d0d0a;
const BLOCK_IDB = 0x00000001;
const BLOCK_EPB = 0x00000006;
const BYTE_ORDER_MAGIC = 0x1a2b3c4d;

const OPT_COMMENT = 1;
const SHB_HARDWARE = 2;
const SHB_OS = 3;
const SHB_USERAPPL = 4;
const IF_NAME = 2;
const IF_DESCRIPTION = 3;
const IF_TSRESOL = 9;
const IF_OS = 12;
const EPB_FLAGS = 2;

/** LINKTYPE_ETHERNET: frames start with a 14-byte Ethernet header. */
export const LINKTYPE_ETHERNET = 1;

const pad4 = (n: number) => (n + 3) & ~3;

/** One option: code, length, value padded to 32 bits. */
function option(code: number, value: Buffer): Buffer {
  const b = Buffer.alloc(4 + pad4(value.length));
  b.writeUInt16LE(code, 0);
  b.writeUInt16LE(value.length, 2);
  value.copy(b, 4);
  return b;
}

/** Options in order, terminated by opt_endofopt (none: no bytes at all). */
function options(list: [number, Buffer | undefined][]): Buffer {
  const parts = list.filter(([, v]) => v !== undefined).map(([c, v]) => option(c, v!));
  if (!parts.length) return Buffer.alloc(0);
  parts.push(Buffer.alloc(4)); // opt_endofopt (code 0, length 0)
  return Buffer.concat(parts);
}

/** A UTF-8 option value (comments and names are UTF-8 strings, not terminated). */
const text = (s: string | undefined) => (s === undefined || s === '' ? undefined : Buffer.from(s, 'utf8'));

/** type, total length, body..., total length. */
function block(type: number, body: Buffer[]): Buffer {
  const bodyLen = body.reduce((n, b) => n + b.length, 0);
  const total = 12 + bodyLen;
  const head = Buffer.alloc(8);
  head.writeUInt32LE(type, 0);
  head.writeUInt32LE(total, 4);
  const tail = Buffer.alloc(4);
  tail.writeUInt32LE(total, 0);
  return Buffer.concat([head, ...body, tail]);
}

export interface SectionInfo {
  /** shb_hardware */
  hardware?: string;
  /** shb_os: the host OS */
  os?: string;
  /** shb_userappl: the tool that wrote the section */
  userAppl?: string;
  comment?: string;
}

/** The Section Header Block: byte-order magic, version 1.0, section length unknown (-1). */
export function sectionHeaderBlock(info: SectionInfo): Buffer {
  const fixed = Buffer.alloc(16);
  fixed.writeUInt32LE(BYTE_ORDER_MAGIC, 0);
  fixed.writeUInt16LE(1, 4);
  fixed.writeUInt16LE(0, 6);
  fixed.writeBigInt64LE(-1n, 8);
  return block(BLOCK_SHB, [
    fixed,
    options([
      [OPT_COMMENT, text(info.comment)],
      [SHB_HARDWARE, text(info.hardware)],
      [SHB_OS, text(info.os)],
      [SHB_USERAPPL, text(info.userAppl)],
    ]),
  ]);
}

export interface InterfaceInfo {
  linkType: number;
  /** 0: no limit */
  snapLen?: number;
  name?: string;
  description?: string;
  os?: string;
}

/** Timestamps of every interface here are microseconds since 1970 (if_tsresol 6). */
export const TSRESOL_MICROSECONDS = 6;

export function interfaceDescriptionBlock(info: InterfaceInfo): Buffer {
  const fixed = Buffer.alloc(8);
  fixed.writeUInt16LE(info.linkType, 0);
  fixed.writeUInt32LE(info.snapLen ?? 0, 4);
  return block(BLOCK_IDB, [
    fixed,
    options([
      [IF_NAME, text(info.name)],
      [IF_DESCRIPTION, text(info.description)],
      [IF_TSRESOL, Buffer.from([TSRESOL_MICROSECONDS])],
      [IF_OS, text(info.os)],
    ]),
  ]);
}

export interface PacketInfo {
  /** index of its Interface Description Block in the section */
  interfaceId: number;
  /** microseconds since 1970 (exact as a double up to 2^53) */
  timeUs: number;
  /** the frame, in pieces (headers, payload) that are concatenated as they are */
  frame: readonly Buffer[];
  comment?: string;
  /** epb_flags direction: 'out' outbound, 'in' inbound */
  direction?: 'in' | 'out';
}

/**
 * An Enhanced Packet Block as pieces (the payload is not copied into a new
 * buffer: a 64 KiB segment goes out as the very Buffer it was read into).
 */
export function enhancedPacketBlock(p: PacketInfo): Buffer[] {
  const len = p.frame.reduce((n, b) => n + b.length, 0);
  let flags: Buffer | undefined;
  if (p.direction) {
    flags = Buffer.alloc(4);
    flags.writeUInt32LE(p.direction === 'in' ? 1 : 2, 0);
  }
  const opts = options([
    [OPT_COMMENT, text(p.comment)],
    [EPB_FLAGS, flags],
  ]);
  const padding = pad4(len) - len;
  const total = 12 + 20 + pad4(len) + opts.length;
  const head = Buffer.alloc(28);
  head.writeUInt32LE(BLOCK_EPB, 0);
  head.writeUInt32LE(total, 4);
  head.writeUInt32LE(p.interfaceId, 8);
  const ts = Math.max(0, Math.floor(p.timeUs));
  head.writeUInt32LE(Math.floor(ts / 2 ** 32), 12);
  head.writeUInt32LE(ts % 2 ** 32, 16);
  head.writeUInt32LE(len, 20); // captured length
  head.writeUInt32LE(len, 24); // original length: nothing is truncated
  const tail = Buffer.alloc(padding + opts.length + 4);
  opts.copy(tail, padding);
  tail.writeUInt32LE(total, padding + opts.length);
  return [head, ...p.frame, tail];
}

/**
 * Where a writer's bytes go, as pieces to be written in order (a payload
 * goes out as the Buffer it was read into: no copy into a batch); the promise
 * settles once the sink has taken them.
 */
export type PcapngSink = (pieces: Buffer[]) => Promise<void>;

/**
 * Streams one section: the header and interfaces first, then packets,
 * batched into writes of about `batchBytes`. packet() only queues; flush()
 * (or maybeFlush() once a batch is full) writes and waits for the sink.
 */
export class PcapngWriter {
  private queued: Buffer[] = [];
  private queuedBytes = 0;
  private written = 0;
  packets = 0;

  constructor(
    private readonly sink: PcapngSink,
    private readonly batchBytes = 1 << 20,
  ) {}

  /** Bytes handed to the sink so far. */
  get bytesWritten(): number {
    return this.written;
  }

  /** Queues the section header and the interface blocks (interface ids in this order). */
  begin(section: SectionInfo, interfaces: readonly InterfaceInfo[]): void {
    this.queue(sectionHeaderBlock(section));
    for (const i of interfaces) this.queue(interfaceDescriptionBlock(i));
  }

  packet(p: PacketInfo): void {
    for (const piece of enhancedPacketBlock(p)) this.queue(piece);
    this.packets++;
  }

  private queue(b: Buffer): void {
    this.queued.push(b);
    this.queuedBytes += b.length;
  }

  get pendingBytes(): number {
    return this.queuedBytes;
  }

  /** Writes when a batch is full; otherwise returns at once. */
  async maybeFlush(): Promise<void> {
    if (this.queuedBytes >= this.batchBytes) await this.flush();
  }

  async flush(): Promise<void> {
    if (!this.queuedBytes) return;
    const pieces = this.queued;
    this.queued = [];
    this.written += this.queuedBytes;
    this.queuedBytes = 0;
    await this.sink(pieces);
  }
}

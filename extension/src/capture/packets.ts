// Synthesized frames: Ethernet II + IPv4 or IPv6 + TCP or UDP, with correct
// lengths and checksums (RFC 791, 8200, 9293, 768), so Wireshark dissects
// them as it would real traffic. The socket filter sees payload bytes, not
// packets: everything below the payload is made up here, consistently.
//
// Pure: no vscode, no I/O. A frame is returned as pieces (headers, then the
// payload Buffers untouched) for the pcapng writer to concatenate.

export type IpFamily = 4 | 6;

export interface Endpoint {
  family: IpFamily;
  /** 4 or 16 bytes, network order */
  addr: Uint8Array;
  port: number;
}

/** IP protocol numbers used here. 253 is reserved for experimentation (RFC 3692). */
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_EXPERIMENT = 253;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;

const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_IPV6 = 0x86dd;

/** Locally administered MACs: the local end and the peer ("NKE" in bytes 1..3). */
export const LOCAL_MAC = Buffer.from([0x02, 0x4e, 0x4b, 0x45, 0x00, 0x01]);
export const PEER_MAC = Buffer.from([0x02, 0x4e, 0x4b, 0x45, 0x00, 0x02]);

/** Largest IP payload one frame carries here (an IPv4 total length fits 16 bits). */
export const MAX_IP_PAYLOAD = 65535 - 20;

/** a mod 65535-style fold of a non-negative integer (exact below 2^53) to 16 bits. */
function fold16(x: number): number {
  while (x > 0xffff) x = (x % 65536) + Math.floor(x / 65536);
  return x;
}

/**
 * 16-bit one's complement sum of `pieces` as one byte string, added to
 * `initial` (not folded, not inverted). An odd-length piece carries its last
 * byte over to the next one.
 *
 * Runs of 4-byte-aligned bytes are summed as 32-bit host-order (little-
 * endian) words: a 32-bit word is its two 16-bit halves mod 65535, and a
 * little-endian 16-bit sum is the byte swap of the big-endian one (RFC 1071,
 * "byte order independence"), so this is the same sum, four times faster
 * than byte pairs on the payload of a 1 GiB export.
 */
export function onesSum(pieces: readonly Uint8Array[], initial = 0): number {
  let sum = initial;
  let carryHigh = -1; // a dangling high byte from an odd-length piece
  for (const p of pieces) {
    let i = 0;
    const n = p.length;
    if (carryHigh >= 0 && n > 0) {
      sum += (carryHigh << 8) | p[0];
      carryHigh = -1;
      i = 1;
    }
    // Even stream position from here. Bytes up to 4-byte alignment one pair at a time.
    while (i + 1 < n && (p.byteOffset + i) % 4 !== 0) {
      sum += (p[i] << 8) | p[i + 1];
      i += 2;
    }
    const words = (n - i) >>> 2;
    if (words >= 16 && (p.byteOffset + i) % 4 === 0) {
      const u32 = new Uint32Array(p.buffer, p.byteOffset + i, words);
      let s32 = 0;
      for (let k = 0; k < words; k++) {
        s32 += u32[k];
        if ((k & 0xfffff) === 0xfffff) s32 = fold16(s32); // exact: 2^20 words stay below 2^53
      }
      const le = fold16(s32);
      sum += ((le & 0xff) << 8) | (le >>> 8);
      i += words * 4;
    }
    // Words in big-endian order; fold often enough that sum stays exact.
    for (; i + 1 < n; i += 2) {
      sum += (p[i] << 8) | p[i + 1];
      if (sum > 0x7fffffff) sum = fold16(sum);
    }
    if (i < n) carryHigh = p[i];
    if (sum > 0x7fffffff) sum = fold16(sum);
  }
  if (carryHigh >= 0) sum += carryHigh << 8;
  return sum;
}

/** Folds a one's complement sum to 16 bits and inverts it. */
export function finishChecksum(sum: number): number {
  return ~fold16(sum) & 0xffff;
}

function ethernet(src: Buffer, dst: Buffer, family: IpFamily): Buffer {
  const b = Buffer.alloc(14);
  dst.copy(b, 0);
  src.copy(b, 6);
  b.writeUInt16BE(family === 4 ? ETHERTYPE_IPV4 : ETHERTYPE_IPV6, 12);
  return b;
}

function ipHeader(src: Endpoint, dst: Endpoint, proto: number, payloadLen: number, id: number): Buffer {
  if (src.family === 4) {
    const h = Buffer.alloc(20);
    h[0] = 0x45; // version 4, IHL 5
    h.writeUInt16BE(20 + payloadLen, 2);
    h.writeUInt16BE(id & 0xffff, 4);
    h.writeUInt16BE(0x4000, 6); // don't fragment
    h[8] = 64; // TTL
    h[9] = proto;
    h.set(src.addr.subarray(0, 4), 12);
    h.set(dst.addr.subarray(0, 4), 16);
    h.writeUInt16BE(finishChecksum(onesSum([h])), 10);
    return h;
  }
  const h = Buffer.alloc(40);
  h.writeUInt32BE(0x60000000, 0); // version 6, traffic class 0, flow label 0
  h.writeUInt16BE(payloadLen, 4);
  h[6] = proto;
  h[7] = 64; // hop limit
  h.set(src.addr.subarray(0, 16), 8);
  h.set(dst.addr.subarray(0, 16), 24);
  return h;
}

/** Sum of the TCP/UDP pseudo header (RFC 9293 3.1, RFC 8200 8.1). */
function pseudoSum(src: Endpoint, dst: Endpoint, proto: number, len: number): number {
  const n = src.family === 4 ? 4 : 16;
  let sum = onesSum([src.addr.subarray(0, n), dst.addr.subarray(0, n)]);
  sum += proto;
  sum += Math.floor(len / 0x10000) + (len & 0xffff);
  return sum;
}

const payloadLength = (payload: readonly Buffer[]) => payload.reduce((n, b) => n + b.length, 0);

export interface TcpSegment {
  src: Endpoint;
  dst: Endpoint;
  srcMac: Buffer;
  dstMac: Buffer;
  seq: number;
  ack: number;
  flags: number;
  /** window field (scaled by the peer's advertised shift) */
  window: number;
  /** SYN options: MSS and window scale */
  synOptions?: { mss: number; windowShift: number };
  payload: readonly Buffer[];
  ipId: number;
}

export function tcpFrame(s: TcpSegment): Buffer[] {
  let opts = Buffer.alloc(0);
  if (s.synOptions) {
    // MSS (kind 2, len 4), NOP, window scale (kind 3, len 3): 8 bytes.
    opts = Buffer.from([2, 4, 0, 0, 1, 3, 3, s.synOptions.windowShift]);
    opts.writeUInt16BE(s.synOptions.mss, 2);
  }
  const h = Buffer.alloc(20 + opts.length);
  h.writeUInt16BE(s.src.port, 0);
  h.writeUInt16BE(s.dst.port, 2);
  h.writeUInt32BE(s.seq >>> 0, 4);
  h.writeUInt32BE(s.flags & TCP_ACK ? s.ack >>> 0 : 0, 8);
  h[12] = (h.length / 4) << 4;
  h[13] = s.flags;
  h.writeUInt16BE(s.window, 14);
  opts.copy(h, 20);
  const tcpLen = h.length + payloadLength(s.payload);
  const sum = onesSum([h, ...s.payload], pseudoSum(s.src, s.dst, IPPROTO_TCP, tcpLen));
  h.writeUInt16BE(finishChecksum(sum), 16);
  return [
    ethernet(s.srcMac, s.dstMac, s.src.family),
    ipHeader(s.src, s.dst, IPPROTO_TCP, tcpLen, s.ipId),
    h,
    ...s.payload,
  ];
}

export interface UdpDatagram {
  src: Endpoint;
  dst: Endpoint;
  srcMac: Buffer;
  dstMac: Buffer;
  payload: readonly Buffer[];
  ipId: number;
}

export function udpFrame(d: UdpDatagram): Buffer[] {
  const h = Buffer.alloc(8);
  const len = 8 + payloadLength(d.payload);
  h.writeUInt16BE(d.src.port, 0);
  h.writeUInt16BE(d.dst.port, 2);
  h.writeUInt16BE(len, 4);
  let c = finishChecksum(onesSum([h, ...d.payload], pseudoSum(d.src, d.dst, IPPROTO_UDP, len)));
  if (c === 0) c = 0xffff; // 0 means "no checksum" (and is invalid over IPv6)
  h.writeUInt16BE(c, 6);
  return [
    ethernet(d.srcMac, d.dstMac, d.src.family),
    ipHeader(d.src, d.dst, IPPROTO_UDP, len, d.ipId),
    h,
    ...d.payload,
  ];
}

/**
 * Bytes that were NOT sent (an edit's original, a dropped chunk) between the
 * same hosts, as an IP packet of the experimentation protocol 253: it shows
 * up next to the conversation, with its bytes, but no TCP or UDP dissector
 * (and so no Follow Stream) ever takes it for part of the stream.
 */
export function notSentFrame(
  src: Endpoint,
  dst: Endpoint,
  srcMac: Buffer,
  dstMac: Buffer,
  payload: readonly Buffer[],
  ipId: number,
): Buffer[] {
  const len = payloadLength(payload);
  return [
    ethernet(srcMac, dstMac, src.family),
    ipHeader(src, dst, IPPROTO_EXPERIMENT, len, ipId),
    ...payload,
  ];
}

/** Splits bytes into pieces of at most `max` (views, no copies). */
export function split(bytes: Buffer, max: number): Buffer[] {
  if (bytes.length <= max) return [bytes];
  const out: Buffer[] = [];
  for (let at = 0; at < bytes.length; at += max) {
    out.push(bytes.subarray(at, Math.min(at + max, bytes.length)));
  }
  return out;
}

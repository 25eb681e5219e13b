// One socket's traffic as packets: what the filter reported (payload bytes
// per direction, in order) turned into a TCP conversation Wireshark can
// follow, or into UDP datagrams.
//
// TCP: a three-way handshake when the conversation starts, then data
// segments whose sequence numbers count exactly the bytes each side's peer
// received, with acknowledgements of everything the other side sent so far;
// a gap (bytes that passed without a report) advances the sequence space
// without a segment, so Wireshark says "previous segment not captured"
// there; a FIN from each side and a last ACK when the socket closed. The
// SYNs advertise a window scale of 14, so the window never fills however
// much one side sends before the other answers.
//
// Pure: no vscode, no I/O.
import {
  type Endpoint,
  LOCAL_MAC,
  MAX_IP_PAYLOAD,
  notSentFrame,
  PEER_MAC,
  split,
  TCP_ACK,
  TCP_FIN,
  TCP_PSH,
  TCP_SYN,
  tcpFrame,
  udpFrame,
} from './packets';

export type Direction = 'in' | 'out';

/** A frame ready for the pcapng writer. */
export interface Frame {
  timeUs: number;
  frame: Buffer[];
  direction: Direction;
  comment: string;
}

/**
 * Payload bytes per TCP segment (an IPv6 payload length fits 16 bits too); a
 * multiple of 4, so every segment of a chunk stays word-aligned for onesSum.
 */
const SEGMENT_BYTES = (MAX_IP_PAYLOAD - 40) & ~3;
const WINDOW_SHIFT = 14;
const WINDOW = 0xffff;

/** Segments of one chunk, numbered in their comments when there are several. */
function numbered(comment: string, i: number, n: number): string {
  return n > 1 ? `${comment} [segment ${i + 1}/${n}]` : comment;
}

/** A deterministic initial sequence number per socket and side (any 32-bit value is valid). */
export function initialSequence(seed: number, side: 0 | 1): number {
  return (Math.imul(seed + 1, 2654435761) ^ (side ? 0x5bd1e995 : 0)) >>> 0;
}

class Hosts {
  private ipId = 0;
  constructor(
    readonly local: Endpoint,
    readonly remote: Endpoint,
  ) {}

  /** (src, dst, srcMac, dstMac) for a direction: out = local -> remote. */
  ends(dir: Direction): [Endpoint, Endpoint, Buffer, Buffer] {
    return dir === 'out'
      ? [this.local, this.remote, LOCAL_MAC, PEER_MAC]
      : [this.remote, this.local, PEER_MAC, LOCAL_MAC];
  }

  nextId(): number {
    this.ipId = (this.ipId + 1) & 0xffff;
    return this.ipId;
  }

  /** Bytes that were not delivered, as experimentation-protocol packets (see notSentFrame). */
  notSent(dir: Direction, timeUs: number, bytes: Buffer, comment: string): Frame[] {
    const [src, dst, srcMac, dstMac] = this.ends(dir);
    const pieces = bytes.length ? split(bytes, MAX_IP_PAYLOAD - 40) : [bytes];
    return pieces.map((p, i) => ({
      timeUs,
      direction: dir,
      comment: numbered(comment, i, pieces.length),
      frame: notSentFrame(src, dst, srcMac, dstMac, [p], this.nextId()),
    }));
  }
}

export class TcpConversation {
  private readonly hosts: Hosts;
  /** next sequence number each side sends: [out (local), in (remote)] */
  private next: [number, number];
  private opened = false;
  private closed = false;

  constructor(
    local: Endpoint,
    remote: Endpoint,
    /** who sent the SYN */
    private readonly initiator: 'local' | 'remote',
    seed: number,
  ) {
    this.hosts = new Hosts(local, remote);
    this.next = [initialSequence(seed, 0), initialSequence(seed, 1)];
  }

  get isOpen(): boolean {
    return this.opened && !this.closed;
  }

  private side(dir: Direction): 0 | 1 {
    return dir === 'out' ? 0 : 1;
  }

  private segment(dir: Direction, flags: number, payload: Buffer[], syn = false) {
    const [src, dst, srcMac, dstMac] = this.hosts.ends(dir);
    const s = this.side(dir);
    return tcpFrame({
      src,
      dst,
      srcMac,
      dstMac,
      seq: this.next[s],
      ack: this.next[1 - s],
      flags,
      window: WINDOW,
      synOptions: syn ? { mss: SEGMENT_BYTES, windowShift: WINDOW_SHIFT } : undefined,
      payload,
      ipId: this.hosts.nextId(),
    });
  }

  /** SYN, SYN-ACK, ACK: once, before anything else of this conversation. */
  open(timeUs: number, comment: string): Frame[] {
    if (this.opened) return [];
    this.opened = true;
    const a: Direction = this.initiator === 'local' ? 'out' : 'in';
    const b: Direction = a === 'out' ? 'in' : 'out';
    const sa = this.side(a);
    const sb = this.side(b);
    // The SYN carries the ISN; data starts at ISN + 1 on each side.
    const syn = this.segment(a, TCP_SYN, [], true);
    this.next[sa] = (this.next[sa] + 1) >>> 0;
    const synAck = this.segment(b, TCP_SYN | TCP_ACK, [], true);
    this.next[sb] = (this.next[sb] + 1) >>> 0;
    const ack = this.segment(a, TCP_ACK, []);
    return [
      { timeUs, frame: syn, direction: a, comment },
      { timeUs, frame: synAck, direction: b, comment },
      { timeUs, frame: ack, direction: a, comment },
    ];
  }

  /**
   * Bytes the peer (out: the remote end; in: the local process) received,
   * as segments, and the receiver's ACK of them (real stacks acknowledge;
   * Wireshark's Follow Stream also waits for an ACK before it reports a hole
   * in front of data).
   */
  data(dir: Direction, timeUs: number, bytes: Buffer, comment: string): Frame[] {
    if (!bytes.length) return [];
    const pieces = split(bytes, SEGMENT_BYTES);
    const s = this.side(dir);
    const frames = pieces.map((p, i) => {
      const frame = this.segment(dir, TCP_ACK | TCP_PSH, [p]);
      this.next[s] = (this.next[s] + p.length) >>> 0;
      return { timeUs, frame, direction: dir, comment: numbered(comment, i, pieces.length) };
    });
    const back: Direction = dir === 'out' ? 'in' : 'out';
    frames.push({
      timeUs,
      frame: this.segment(back, TCP_ACK, []),
      direction: back,
      comment: `${comment} [ACK]`,
    });
    return frames;
  }

  /** Bytes that went by without a report: sequence space without a segment. */
  skip(dir: Direction, n: number): void {
    const s = this.side(dir);
    this.next[s] = (this.next[s] + (n % 2 ** 32)) >>> 0;
  }

  notSent(dir: Direction, timeUs: number, bytes: Buffer, comment: string): Frame[] {
    return this.hosts.notSent(dir, timeUs, bytes, comment);
  }

  /**
   * FIN from the local end, FIN from the peer, the last ACK. `notes`: what
   * each direction's FIN says besides `comment` (a hole right before it has
   * no data segment after it to explain it).
   */
  close(timeUs: number, comment: string, notes: { out: string; in: string } = { out: '', in: '' }): Frame[] {
    if (!this.opened || this.closed) return [];
    this.closed = true;
    const fin1 = this.segment('out', TCP_FIN | TCP_ACK, []);
    this.next[0] = (this.next[0] + 1) >>> 0;
    const fin2 = this.segment('in', TCP_FIN | TCP_ACK, []);
    this.next[1] = (this.next[1] + 1) >>> 0;
    const last = this.segment('out', TCP_ACK, []);
    return [
      { timeUs, frame: fin1, direction: 'out', comment: comment + notes.out },
      { timeUs, frame: fin2, direction: 'in', comment: comment + notes.in },
      { timeUs, frame: last, direction: 'out', comment },
    ];
  }
}

/** Largest UDP payload one IP packet can carry. */
const MAX_UDP_PAYLOAD = MAX_IP_PAYLOAD - 8;

export class UdpFlow {
  private readonly hosts: Hosts;

  constructor(
    private readonly local: Endpoint,
    remote: Endpoint,
  ) {
    this.hosts = new Hosts(local, remote);
  }

  /** One datagram (peer: its own address when it has one, else the connected remote). */
  datagram(dir: Direction, timeUs: number, bytes: Buffer, comment: string, peer?: Endpoint): Frame {
    const hosts = peer ? new Hosts(this.local, peer) : this.hosts;
    const [src, dst, srcMac, dstMac] = hosts.ends(dir);
    const kept = bytes.length > MAX_UDP_PAYLOAD ? bytes.subarray(0, MAX_UDP_PAYLOAD) : bytes;
    const note =
      kept.length < bytes.length ? ` (${bytes.length} bytes; the first ${kept.length} are shown)` : '';
    return {
      timeUs,
      direction: dir,
      comment: comment + note,
      frame: udpFrame({ src, dst, srcMac, dstMac, payload: [kept], ipId: this.hosts.nextId() }),
    };
  }

  notSent(dir: Direction, timeUs: number, bytes: Buffer, comment: string, peer?: Endpoint): Frame[] {
    return (peer ? new Hosts(this.local, peer) : this.hosts).notSent(dir, timeUs, bytes, comment);
  }
}

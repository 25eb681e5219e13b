// The hand-written half of the TypeScript view of the kext ABI
// (kext/include/nke/nke_abi.h) and of the emulator's endpoint structs
// (native/emu/include/nke_emu_proto.h): the codec. The other half, every
// constant, enum and struct layout, is generated from those headers by the
// C compiler at build time (scripts/gen-abi.mjs -> ./abi.generated.ts) and
// re-exported here, so there is one import for both. No number of the ABI is
// written in this file; test/unit/abi-layout.test.ts checks that the
// generated module is the headers' and that the decoders read every field.
//
// Imports nothing at run time (no `vscode`, no Node built-ins): the extension
// host, the helper process, the webview and plain mocha all load it.
//
// Every decoder and encoder is derived from the layout tables
// (decodeStruct/encodeStruct), and the TS value types are derived from them
// too (StructValue<L>), so a field renamed or retyped in the header changes
// the types the compiler checks.
//
// Conventions:
//  - Field names are the C names (snake_case), so code reads like the header.
//  - Padding fields (`_pad*`) are written as zero and not exposed on decode.
//  - Every u64 (chunk ids, session id, counters, time_ns) is a `bigint`: exact
//    over the whole range.
//  - Little-endian throughout (the ABI's host order on x86_64 and arm64).
//  - Decoders of bytes that come from the filter return a DecodeResult value
//    (never throw, whatever the bytes); encoders and parsers of values our own
//    code builds throw AbiError with a message naming the field.
//  - Encoders and decoders used only by tests live in test/shared/abiTestCodecs.ts.
import {
  Action,
  AddrLayout,
  CaptureConfigLayout,
  CaptureMode,
  Direction,
  FilterStateLayout,
  NKE_ABI_VERSION,
  NKE_AF_INET,
  NKE_AF_INET6,
  NKE_BUFFER_COUNT,
  NKE_BUFFER_SIZE,
  NKE_CHUNK_MAX_BUFFERS,
  NKE_DATA_F_HAS_ADDR,
  NKE_HOLD_TIMEOUT_MAX_MS,
  NKE_HOLD_TOTAL_MAX_MS,
  NKE_MATCH_ALL_FIELDS,
  NKE_MAX_RULES,
  NKE_MODIFIED_MAX_LEN,
  NKE_PUT_DATA_MAX_PIECE,
  NKE_RESPONSE_MAX_RELEASES,
  NKE_RESPONSE_MAX_VERDICTS,
  NotifyType,
  NtAddrsLayout,
  NtAttachLayout,
  NtChunkReleasedLayout,
  NtDataGapLayout,
  NtDataLayout,
  NtDetachLayout,
  NtEventLayout,
  NtHdrLayout,
  NtOptionLayout,
  NtStateLayout,
  PutDataHdrLayout,
  ReleaseLayout,
  ResponseHdrLayout,
  RuleAction,
  RuleLayout,
  SockIdLayout,
  VerdictLayout,
} from './abi.generated';
import type {
  EmuKevCtlLayout,
  EmuReplyLayout,
  EmuReqLayout,
  KernEventMsgLayout,
  KevExecChunkLayout,
  OpenReplyLayout,
  OpenRequestLayout,
} from './abi.generated';

export * from './abi.generated';

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/** Why bytes from the filter could not be decoded. */
export type DecodeErrorCode =
  | 'truncated' // fewer bytes than the record says or needs
  | 'bad_offset' // offset is not a non-negative integer inside the buffer
  | 'unknown_type' // notification type this client does not know
  | 'bad_size' // size field disagrees with the record's type
  | 'bad_field' // a field value is out of its documented range
  | 'bad_class'; // kernel event of another class/subclass/code

export interface DecodeError {
  code: DecodeErrorCode;
  /** Names what is wrong, where, and what the bytes said. */
  message: string;
  /** Byte offset of the record in the input. */
  offset: number;
  /** Notification errors after the header was read: its type and size fields. */
  type?: number;
  size?: number;
}

export type DecodeResult<T> = { ok: true; value: T } | { ok: false; error: DecodeError };

/** Thrown by encoders and parsers for values our own code built wrongly. */
export class AbiError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AbiError';
  }
}

// ---------------------------------------------------------------------------
// Layout tables (the tables themselves: ./abi.generated.ts)
// ---------------------------------------------------------------------------

export type ScalarType = 'u8' | 'u16' | 'u32' | 'i32' | 'u64';
export type FieldType = ScalarType | 'char' | 'struct';

export interface FieldLayout {
  readonly name: string;
  readonly offset: number;
  readonly type: FieldType;
  /** Element count when the C field is an array (`char comm[32]` -> 32). */
  readonly length?: number;
  /** The nested struct's layout, for type 'struct'. */
  readonly struct?: StructLayout;
  /** The other members of a C union that shares this field's bytes (nke_verdict: hold_ms). */
  readonly aliases?: readonly string[];
}

export interface StructLayout {
  /** C struct tag without `struct` (e.g. 'nke_nt_hdr'). */
  readonly name: string;
  readonly size: number;
  readonly fields: readonly FieldLayout[];
}

const SCALAR_SIZE: Readonly<Record<Exclude<FieldType, 'struct'>, number>> = {
  u8: 1,
  u16: 2,
  u32: 4,
  i32: 4,
  u64: 8,
  char: 1,
};

/** Bytes one element of the field occupies. */
export function fieldElementSize(f: FieldLayout): number {
  if (f.type === 'struct') {
    if (!f.struct) throw new AbiError(`field ${f.name}: type struct without a layout`);
    return f.struct.size;
  }
  return SCALAR_SIZE[f.type];
}

/** Bytes the whole field occupies (element size x length). */
export function fieldSize(f: FieldLayout): number {
  return fieldElementSize(f) * (f.length ?? 1);
}

// Type of a decoded field / struct, derived from the layout tables.
type ScalarValue<T> = T extends 'u64' ? bigint : number;
type FieldValue<F> = F extends { type: 'struct'; struct: infer S extends StructLayout; length: number }
  ? StructValue<S>[]
  : F extends { type: 'struct'; struct: infer S extends StructLayout }
    ? StructValue<S>
    : F extends { type: 'char' }
      ? string
      : F extends { type: 'u8'; length: number }
        ? Uint8Array
        : F extends { type: infer T; length: number }
          ? ScalarValue<T>[]
          : F extends { type: infer T }
            ? ScalarValue<T>
            : never;

/** The JS value of a struct: its non-padding fields by C name. */
export type StructValue<L extends StructLayout> = {
  -readonly [
    F in L['fields'][number] as F['name'] extends `_pad${string}` ? never : F['name']
  ]: FieldValue<F>;
};

// Struct value types, derived from the tables.
export type SockId = StructValue<typeof SockIdLayout>;
export type NkeAddr = StructValue<typeof AddrLayout>;
export type OpenRequest = StructValue<typeof OpenRequestLayout>;
export type OpenReply = StructValue<typeof OpenReplyLayout>;
export type NtHdr = StructValue<typeof NtHdrLayout>;
export type NtAttach = StructValue<typeof NtAttachLayout>;
export type NtDetach = StructValue<typeof NtDetachLayout>;
export type NtAddrs = StructValue<typeof NtAddrsLayout>;
export type NtEvent = StructValue<typeof NtEventLayout>;
export type NtOption = StructValue<typeof NtOptionLayout>;
export type NtData = StructValue<typeof NtDataLayout>;
export type NtChunkReleased = StructValue<typeof NtChunkReleasedLayout>;
export type NtDataGap = StructValue<typeof NtDataGapLayout>;
export type FilterState = StructValue<typeof FilterStateLayout>;
export type NtState = StructValue<typeof NtStateLayout>;
export type ResponseHdr = StructValue<typeof ResponseHdrLayout>;
export type Verdict = StructValue<typeof VerdictLayout>;
export type Release = StructValue<typeof ReleaseLayout>;
export type PutDataHdr = StructValue<typeof PutDataHdrLayout>;
export type Rule = StructValue<typeof RuleLayout>;
export type CaptureConfig = StructValue<typeof CaptureConfigLayout>;
export type KernEventMsg = StructValue<typeof KernEventMsgLayout>;
export type KevExecChunk = StructValue<typeof KevExecChunkLayout>;
export type EmuReq = StructValue<typeof EmuReqLayout>;
export type EmuReply = StructValue<typeof EmuReplyLayout>;
export type EmuKevCtl = StructValue<typeof EmuKevCtlLayout>;

/** The field of `layout` named `name`; throws when the header has no such field. */
export function fieldOf(layout: StructLayout, name: string): FieldLayout {
  const f = layout.fields.find((x) => x.name === name);
  if (!f) throw new AbiError(`${layout.name} has no field ${name}`);
  return f;
}

/** A value of `layout` with every field zero ('' for strings, fresh arrays each call). */
export function zeroStruct<L extends StructLayout>(layout: L): StructValue<L> {
  const out: Record<string, unknown> = {};
  for (const f of layout.fields) {
    if (f.name.startsWith('_pad')) continue;
    const n = f.length;
    if (f.type === 'struct') {
      const s = f.struct as StructLayout;
      out[f.name] = n === undefined ? zeroStruct(s) : Array.from({ length: n }, () => zeroStruct(s));
    } else if (f.type === 'char') out[f.name] = '';
    else if (f.type === 'u8' && n !== undefined) out[f.name] = new Uint8Array(n);
    else {
      const zero = f.type === 'u64' ? 0n : 0;
      out[f.name] = n === undefined ? zero : new Array<number | bigint>(n).fill(zero);
    }
  }
  return out as StructValue<L>;
}

// ---------------------------------------------------------------------------
// Generic codec, driven by the tables
// ---------------------------------------------------------------------------

/** Bytes in any of the forms callers hold (Node Buffer is a Uint8Array). */
export type Bytes = Uint8Array | ArrayBuffer | DataView;

function toView(buf: Bytes): DataView {
  if (buf instanceof DataView) return buf;
  if (buf instanceof ArrayBuffer) return new DataView(buf);
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

const utf8Decoder = new TextDecoder('utf-8', { fatal: false });
const utf8Encoder = new TextEncoder();

function readScalar(v: DataView, off: number, t: ScalarType): number | bigint {
  switch (t) {
    case 'u8':
      return v.getUint8(off);
    case 'u16':
      return v.getUint16(off, true);
    case 'u32':
      return v.getUint32(off, true);
    case 'i32':
      return v.getInt32(off, true);
    case 'u64':
      return v.getBigUint64(off, true);
  }
}

function readField(v: DataView, base: number, f: FieldLayout): unknown {
  const off = base + f.offset;
  if (f.type === 'struct') {
    const s = f.struct as StructLayout;
    if (f.length === undefined) return readStructAt(v, off, s);
    const list: Record<string, unknown>[] = [];
    for (let i = 0; i < f.length; i++) list.push(readStructAt(v, off + i * s.size, s));
    return list;
  }
  if (f.type === 'char') {
    // C string: up to the first NUL, or the whole array when unterminated
    // (hostile or buggy producer: shown, not trusted as terminated).
    const bytes = new Uint8Array(v.buffer, v.byteOffset + off, f.length ?? 1);
    const nul = bytes.indexOf(0);
    // slice(): copy first; TextDecoder refuses views of shared memory in browsers.
    return utf8Decoder.decode((nul < 0 ? bytes : bytes.subarray(0, nul)).slice());
  }
  if (f.length === undefined) return readScalar(v, off, f.type);
  if (f.type === 'u8') {
    // A copy (slice of a view allocates its own buffer).
    return new Uint8Array(v.buffer, v.byteOffset + off, f.length).slice();
  }
  // Plain loops, not Array.from with a mapper: this runs for every record
  // of every batch (the helper decodes >= 100 000 a second).
  const size = SCALAR_SIZE[f.type];
  const list: (number | bigint)[] = [];
  for (let i = 0; i < f.length; i++) list.push(readScalar(v, off + i * size, f.type as ScalarType));
  return list;
}

// Every decoded value is a copy (numbers, bigints, strings, fresh arrays), never
// a view: records may be read straight from memory the filter shares and can
// rewrite, and a value validated once must not change under the caller.
// Each layout's fields without the padding ones, computed once per layout.
const decodedFields = new WeakMap<StructLayout, readonly FieldLayout[]>();

function readStructAt(v: DataView, off: number, layout: StructLayout): Record<string, unknown> {
  let fields = decodedFields.get(layout);
  if (!fields) {
    fields = layout.fields.filter((f) => !f.name.startsWith('_pad'));
    decodedFields.set(layout, fields);
  }
  const out: Record<string, unknown> = {};
  for (const f of fields) out[f.name] = readField(v, off, f);
  return out;
}

/**
 * Decodes one struct at `offset`. Throws AbiError when fewer than
 * layout.size bytes are available; the record decoders below check first and
 * return DecodeResult values instead.
 */
export function decodeStruct<L extends StructLayout>(layout: L, buf: Bytes, offset = 0): StructValue<L> {
  const v = toView(buf);
  if (!Number.isInteger(offset) || offset < 0 || offset + layout.size > v.byteLength) {
    throw new AbiError(
      `${layout.name}: needs ${layout.size} bytes at offset ${offset}, buffer has ${v.byteLength}`,
    );
  }
  return readStructAt(v, offset, layout) as StructValue<L>;
}

const SCALAR_RANGE: Readonly<Record<Exclude<ScalarType, 'u64'>, [number, number]>> = {
  u8: [0, 0xff],
  u16: [0, 0xffff],
  u32: [0, 0xffffffff],
  i32: [-0x80000000, 0x7fffffff],
};

function writeScalar(v: DataView, off: number, t: ScalarType, value: unknown, path: string): void {
  if (t === 'u64') {
    if (typeof value !== 'bigint' || value < 0n || value > 0xffffffffffffffffn) {
      throw new AbiError(`${path}: expected a bigint in 0..2^64-1, got ${describe(value)}`);
    }
    v.setBigUint64(off, value, true);
    return;
  }
  const [min, max] = SCALAR_RANGE[t];
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new AbiError(`${path}: expected an integer in ${min}..${max} (${t}), got ${describe(value)}`);
  }
  switch (t) {
    case 'u8':
      v.setUint8(off, value);
      break;
    case 'u16':
      v.setUint16(off, value, true);
      break;
    case 'u32':
      v.setUint32(off, value, true);
      break;
    case 'i32':
      v.setInt32(off, value, true);
      break;
  }
}

function describe(value: unknown): string {
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'string') return JSON.stringify(value);
  if (value instanceof Uint8Array) return `${value.length} bytes`;
  return String(value);
}

function writeField(v: DataView, base: number, f: FieldLayout, value: unknown, path: string): void {
  const off = base + f.offset;
  const fpath = `${path}.${f.name}`;
  // Padding is always zero on the wire (the filter rejects anything else
  // with NKE_ERR_RESERVED); callers never supply it.
  if (f.name.startsWith('_pad')) {
    new Uint8Array(v.buffer, v.byteOffset + off, fieldSize(f)).fill(0);
    return;
  }
  if (f.type === 'struct') {
    const s = f.struct as StructLayout;
    if (f.length === undefined) {
      writeStructAt(v, off, s, value, fpath);
      return;
    }
    const items = value as unknown[];
    if (!Array.isArray(items) || items.length > f.length) {
      throw new AbiError(
        `${fpath}: expected an array of at most ${f.length} ${s.name}, got ${describe(value)}`,
      );
    }
    // Unused trailing elements are zero.
    new Uint8Array(v.buffer, v.byteOffset + off, fieldSize(f)).fill(0);
    items.forEach((item, i) => writeStructAt(v, off + i * s.size, s, item, `${fpath}[${i}]`));
    return;
  }
  const n = f.length ?? 1;
  if (f.type === 'char') {
    if (typeof value !== 'string') throw new AbiError(`${fpath}: expected a string, got ${describe(value)}`);
    const bytes = utf8Encoder.encode(value);
    if (bytes.includes(0) || bytes.length > n - 1) {
      throw new AbiError(
        `${fpath}: ${JSON.stringify(value)} is ${bytes.length} UTF-8 bytes; at most ${n - 1} without NUL fit`,
      );
    }
    const dst = new Uint8Array(v.buffer, v.byteOffset + off, n);
    dst.fill(0);
    dst.set(bytes);
    return;
  }
  if (f.length === undefined) {
    writeScalar(v, off, f.type, value, fpath);
    return;
  }
  if (f.type === 'u8') {
    if (!(value instanceof Uint8Array) || value.length > n) {
      throw new AbiError(`${fpath}: expected at most ${n} bytes (Uint8Array), got ${describe(value)}`);
    }
    const dst = new Uint8Array(v.buffer, v.byteOffset + off, n);
    dst.fill(0);
    dst.set(value);
    return;
  }
  const items = value as unknown[];
  if (!Array.isArray(items) || items.length !== n) {
    throw new AbiError(`${fpath}: expected an array of exactly ${n} ${f.type}, got ${describe(value)}`);
  }
  const size = SCALAR_SIZE[f.type];
  items.forEach((item, i) => writeScalar(v, off + i * size, f.type as ScalarType, item, `${fpath}[${i}]`));
}

function writeStructAt(v: DataView, off: number, layout: StructLayout, value: unknown, path: string): void {
  if (typeof value !== 'object' || value === null) {
    throw new AbiError(`${path}: expected a ${layout.name} object, got ${describe(value)}`);
  }
  const obj = value as Record<string, unknown>;
  for (const f of layout.fields) writeField(v, off, f, obj[f.name], path);
}

/**
 * Encodes one struct into `out` at `offset`, or into a new zeroed buffer of
 * layout.size bytes. Throws AbiError naming the field for any value that
 * does not fit its C type.
 */
export function encodeStruct<L extends StructLayout>(
  layout: L,
  value: StructValue<L>,
  out?: Uint8Array,
  offset = 0,
): Uint8Array {
  const dst = out ?? new Uint8Array(layout.size);
  if (offset < 0 || offset + layout.size > dst.byteLength) {
    throw new AbiError(
      `${layout.name}: needs ${layout.size} bytes at offset ${offset}, buffer has ${dst.byteLength}`,
    );
  }
  writeStructAt(toView(dst), offset, layout, value, layout.name);
  return dst;
}

// ---------------------------------------------------------------------------
// Notifications (filter -> client)
// ---------------------------------------------------------------------------

/** Notification kinds, one per enum nke_notify_type member. */
export type Notification =
  | ({ kind: 'attach' | 'owner' } & NtAttach)
  | ({ kind: 'detach' } & NtDetach)
  | ({ kind: 'connect_in' | 'connect_out' | 'bound' | 'listen' } & NtAddrs)
  | ({ kind: 'event' } & NtEvent)
  | ({ kind: 'data' } & NtData)
  | ({ kind: 'chunk_released' } & NtChunkReleased)
  | ({ kind: 'state' } & NtState)
  | ({ kind: 'option' } & NtOption)
  | ({ kind: 'data_gap' } & NtDataGap);

export type NotificationKind = Notification['kind'];

/** Each notification type (enum nke_notify_type) with its kind and record layout. */
export const NOTIFICATION_KINDS: Readonly<Record<number, { kind: NotificationKind; layout: StructLayout }>> =
  {
    [NotifyType.Attach]: { kind: 'attach', layout: NtAttachLayout },
    [NotifyType.Detach]: { kind: 'detach', layout: NtDetachLayout },
    [NotifyType.ConnectIn]: { kind: 'connect_in', layout: NtAddrsLayout },
    [NotifyType.ConnectOut]: { kind: 'connect_out', layout: NtAddrsLayout },
    [NotifyType.Bound]: { kind: 'bound', layout: NtAddrsLayout },
    [NotifyType.Listen]: { kind: 'listen', layout: NtAddrsLayout },
    [NotifyType.Event]: { kind: 'event', layout: NtEventLayout },
    [NotifyType.Data]: { kind: 'data', layout: NtDataLayout },
    [NotifyType.ChunkReleased]: { kind: 'chunk_released', layout: NtChunkReleasedLayout },
    [NotifyType.State]: { kind: 'state', layout: NtStateLayout },
    [NotifyType.Option]: { kind: 'option', layout: NtOptionLayout },
    [NotifyType.Owner]: { kind: 'owner', layout: NtAttachLayout },
    [NotifyType.DataGap]: { kind: 'data_gap', layout: NtDataGapLayout },
  };

// nke_nt_hdr.type and .size: read before the record's type (hence layout) is known.
const HDR_TYPE = fieldOf(NtHdrLayout, 'type');
const HDR_SIZE = fieldOf(NtHdrLayout, 'size');
const hdrType = (v: DataView, off: number) =>
  readScalar(v, off + HDR_TYPE.offset, HDR_TYPE.type as ScalarType) as number;
const hdrSize = (v: DataView, off: number) =>
  readScalar(v, off + HDR_SIZE.offset, HDR_SIZE.type as ScalarType) as number;

function fail<T>(
  code: DecodeErrorCode,
  offset: number,
  message: string,
  header?: { type: number; size: number },
): DecodeResult<T> {
  return { ok: false, error: { code, offset, message, ...header } };
}

function checkAddr(a: NkeAddr, what: string): string | undefined {
  if (a.family !== 0 && a.family !== NKE_AF_INET && a.family !== NKE_AF_INET6) {
    return `${what}.family is ${a.family}, expected 0, ${NKE_AF_INET} (inet) or ${NKE_AF_INET6} (inet6)`;
  }
  return undefined;
}

/** Range checks on fields the client acts on (buffer indices above all). */
function checkNotification(n: Notification): string | undefined {
  switch (n.kind) {
    case 'data': {
      if (n.direction !== Direction.In && n.direction !== Direction.Out) {
        return `direction is ${n.direction}, expected ${Direction.In} (in) or ${Direction.Out} (out)`;
      }
      if (n.nbuffers > NKE_CHUNK_MAX_BUFFERS) {
        return `nbuffers is ${n.nbuffers}, at most ${NKE_CHUNK_MAX_BUFFERS}`;
      }
      for (let i = 0; i < n.nbuffers; i++) {
        if (n.buffers[i] >= NKE_BUFFER_COUNT) {
          return `buffers[${i}] is ${n.buffers[i]}, must be < ${NKE_BUFFER_COUNT}`;
        }
      }
      if (n.size > n.nbuffers * NKE_BUFFER_SIZE) {
        return `size ${n.size} exceeds ${n.nbuffers} buffers of ${NKE_BUFFER_SIZE} bytes`;
      }
      if (n.hdr.flags & NKE_DATA_F_HAS_ADDR) return checkAddr(n.addr, 'addr');
      return undefined;
    }
    case 'connect_in':
    case 'connect_out':
    case 'bound':
    case 'listen':
      return checkAddr(n.local, 'local') ?? checkAddr(n.remote, 'remote');
    case 'data_gap':
      if (n.direction !== Direction.In && n.direction !== Direction.Out) {
        return `direction is ${n.direction}, expected ${Direction.In} (in) or ${Direction.Out} (out)`;
      }
      return undefined;
    default:
      return undefined;
  }
}

/**
 * Decodes one notification record (one queue entry) at `offset`. Never
 * throws: truncated input, a size field that disagrees with the type, an
 * unknown type or an out-of-range field give { ok: false, error } whose
 * message names the record, the field and the values seen. On unknown_type
 * a caller reading a stream of records may still skip hdr.size bytes.
 */
export function decodeNotification(buf: Bytes, offset = 0): DecodeResult<Notification> {
  const v = toView(buf);
  if (!Number.isInteger(offset) || offset < 0 || offset > v.byteLength) {
    return fail(
      'bad_offset',
      offset,
      `notification offset ${offset} is outside a ${v.byteLength}-byte buffer`,
    );
  }
  const avail = v.byteLength - offset;
  if (avail < NtHdrLayout.size) {
    return fail(
      'truncated',
      offset,
      `notification at ${offset}: ${avail} bytes left, a header needs ${NtHdrLayout.size}`,
    );
  }
  const type = hdrType(v, offset);
  const size = hdrSize(v, offset);
  const known = NOTIFICATION_KINDS[type];
  if (!known) {
    return fail(
      'unknown_type',
      offset,
      `notification at ${offset}: unknown type ${type} (size ${size}); the filter is newer than this client, update the extension`,
      { type, size },
    );
  }
  if (size !== known.layout.size) {
    return fail(
      'bad_size',
      offset,
      `notification at ${offset}: ${known.kind} (type ${type}) says size ${size}, the ABI size is ${known.layout.size}`,
      { type, size },
    );
  }
  if (avail < size) {
    return fail(
      'truncated',
      offset,
      `notification at ${offset}: ${known.kind} needs ${size} bytes, ${avail} left`,
      { type, size },
    );
  }
  const value = { kind: known.kind, ...readStructAt(v, offset, known.layout) } as Notification;
  const bad = checkNotification(value);
  if (bad) {
    return fail('bad_field', offset, `notification at ${offset}: ${known.kind}: ${bad}`, { type, size });
  }
  return { ok: true, value };
}

/**
 * Splits a batch of notification records (consecutive queue entries, as the
 * addon hands them over) and decodes each. Malformed records are counted,
 * never trusted; a record whose size field cannot frame the next one ends
 * the batch (counted too).
 */
export function decodeNotificationBatch(buf: Bytes): { notifications: Notification[]; malformed: number } {
  const v = toView(buf);
  const notifications: Notification[] = [];
  let malformed = 0;
  let off = 0;
  while (off + NtHdrLayout.size <= v.byteLength) {
    const r = decodeNotification(v, off);
    const size = hdrSize(v, off);
    if (r.ok) notifications.push(r.value);
    else malformed++;
    // "Records are multiples of 8 bytes" (nke_nt_hdr in the header).
    if (size < NtHdrLayout.size || size % 8 !== 0) return { notifications, malformed: malformed + 1 };
    off += size;
  }
  return { notifications, malformed };
}

// ---------------------------------------------------------------------------
// Replies (filter -> client)
// ---------------------------------------------------------------------------

/** One struct at `offset` as a DecodeResult (truncated input is an error value, not a throw). */
export function decodeFixed<L extends StructLayout>(
  layout: L,
  buf: Bytes,
  offset: number,
): DecodeResult<StructValue<L>> {
  const v = toView(buf);
  if (!Number.isInteger(offset) || offset < 0 || offset > v.byteLength) {
    return fail(
      'bad_offset',
      offset,
      `${layout.name}: offset ${offset} is outside a ${v.byteLength}-byte buffer`,
    );
  }
  if (v.byteLength - offset < layout.size) {
    return fail(
      'truncated',
      offset,
      `${layout.name}: needs ${layout.size} bytes, got ${v.byteLength - offset}`,
    );
  }
  return { ok: true, value: readStructAt(v, offset, layout) as StructValue<L> };
}

/** Output of NKE_SEL_GET_STATE. */
export function decodeFilterState(buf: Bytes, offset = 0): DecodeResult<FilterState> {
  return decodeFixed(FilterStateLayout, buf, offset);
}

// ---------------------------------------------------------------------------
// Requests (client -> filter)
// ---------------------------------------------------------------------------

/**
 * One entry of a response. modified_len (AllowModified) and hold_ms (Extend)
 * are the two names of one u32 in C (a union in nke_verdict), so the layout
 * table has one field there: `modified_len`, which carries hold_ms for Extend.
 */
export type VerdictInput = Omit<Verdict, 'modified_len'> & { modified_len?: number; hold_ms?: number };
export type ReleaseInput = Release;

/**
 * Input of NKE_SEL_RESPOND: header + verdicts + releases, sizes and counts
 * filled in. Checks what the filter would reject (counts, actions,
 * modified_len only with AllowModified) so a bug shows here with the entry's
 * index rather than as a bare status from the kernel.
 */
export function encodeResponse(
  verdicts: readonly VerdictInput[],
  releases: readonly ReleaseInput[],
): Uint8Array {
  if (verdicts.length > NKE_RESPONSE_MAX_VERDICTS) {
    throw new AbiError(
      `response: ${verdicts.length} verdicts, at most ${NKE_RESPONSE_MAX_VERDICTS}; split it`,
    );
  }
  if (releases.length > NKE_RESPONSE_MAX_RELEASES) {
    throw new AbiError(
      `response: ${releases.length} releases, at most ${NKE_RESPONSE_MAX_RELEASES}; split it`,
    );
  }
  const size =
    ResponseHdrLayout.size + verdicts.length * VerdictLayout.size + releases.length * ReleaseLayout.size;
  const out = new Uint8Array(size);
  encodeStruct(
    ResponseHdrLayout,
    { abi_version: NKE_ABI_VERSION, size, nverdicts: verdicts.length, nreleases: releases.length, flags: 0 },
    out,
    0,
  );
  let off = ResponseHdrLayout.size;
  verdicts.forEach((vd, i) => {
    if (
      vd.action !== Action.Allow &&
      vd.action !== Action.AllowModified &&
      vd.action !== Action.Drop &&
      vd.action !== Action.Extend
    ) {
      throw new AbiError(
        `response: verdicts[${i}].action is ${vd.action}; use Action.Allow, AllowModified, Drop or Extend`,
      );
    }
    const modified_len = vd.modified_len ?? 0;
    if (vd.action !== Action.AllowModified && modified_len !== 0) {
      throw new AbiError(`response: verdicts[${i}].modified_len must be 0 unless action is AllowModified`);
    }
    let arg = modified_len;
    if (vd.action === Action.Extend) {
      const hold = vd.hold_ms;
      if (hold === undefined || !Number.isInteger(hold) || hold < 1 || hold > NKE_HOLD_TOTAL_MAX_MS) {
        throw new AbiError(
          `response: verdicts[${i}].hold_ms is ${hold}; Extend needs 1..${NKE_HOLD_TOTAL_MAX_MS} (ms of total hold)`,
        );
      }
      arg = hold;
    } else if (vd.hold_ms !== undefined) {
      throw new AbiError(`response: verdicts[${i}].hold_ms is only for action Extend`);
    }
    const { hold_ms: _hold, ...fields } = vd;
    encodeStruct(VerdictLayout, { ...fields, modified_len: arg }, out, off);
    off += VerdictLayout.size;
  });
  releases.forEach((rl, i) => {
    if (rl.buffer >= NKE_BUFFER_COUNT) {
      throw new AbiError(`response: releases[${i}].buffer is ${rl.buffer}, must be < ${NKE_BUFFER_COUNT}`);
    }
    encodeStruct(ReleaseLayout, rl, out, off);
    off += ReleaseLayout.size;
  });
  return out;
}

/**
 * Input of NKE_SEL_PUT_DATA: header followed by `data` (one piece of at most
 * NKE_PUT_DATA_MAX_PIECE bytes at `offset` of the modified data).
 */
export function encodePutData(
  hdr: { chunk_id: bigint; sock: SockId; total_len: number; offset: number },
  data: Uint8Array,
): Uint8Array {
  if (data.length > NKE_PUT_DATA_MAX_PIECE) {
    throw new AbiError(
      `put-data: piece of ${data.length} bytes, at most ${NKE_PUT_DATA_MAX_PIECE}; split it`,
    );
  }
  if (hdr.total_len > NKE_MODIFIED_MAX_LEN) {
    throw new AbiError(`put-data: total_len ${hdr.total_len}, at most ${NKE_MODIFIED_MAX_LEN}`);
  }
  if (hdr.offset + data.length > hdr.total_len) {
    throw new AbiError(`put-data: piece ${hdr.offset}+${data.length} runs past total_len ${hdr.total_len}`);
  }
  const out = new Uint8Array(PutDataHdrLayout.size + data.length);
  encodeStruct(PutDataHdrLayout, { ...hdr, len: data.length }, out, 0);
  out.set(data, PutDataHdrLayout.size);
  return out;
}

/** Splits modified bytes into NKE_SEL_PUT_DATA messages, in the order the filter requires. */
export function encodePutDataPieces(chunk_id: bigint, sock: SockId, data: Uint8Array): Uint8Array[] {
  // Empty modified data is still one (empty) piece: it sets total_len 0.
  if (data.length === 0) return [encodePutData({ chunk_id, sock, total_len: 0, offset: 0 }, data)];
  const pieces: Uint8Array[] = [];
  for (let off = 0; off < data.length; off += NKE_PUT_DATA_MAX_PIECE) {
    const piece = data.subarray(off, Math.min(data.length, off + NKE_PUT_DATA_MAX_PIECE));
    pieces.push(encodePutData({ chunk_id, sock, total_len: data.length, offset: off }, piece));
  }
  return pieces;
}

/** A rule with every field optional except what it does; unset fields are zero. */
export type RuleInput = Partial<Rule> & Pick<Rule, 'match' | 'action'>;

/** A rule that matches everything and does `action`: every other field zero (fresh arrays each call). */
export function emptyRule(action: RuleAction = RuleAction.Pass): Rule {
  return { ...zeroStruct(RuleLayout), action };
}

/** Input of NKE_SEL_SET_CAPTURE (the full fixed-size struct, nrules filled in). */
export function encodeCaptureConfig(cfg: {
  mode: CaptureMode;
  default_action?: RuleAction;
  hold_timeout_ms?: number;
  /** echoed in every data notification decided under this config (nke_nt_data.capture_tag) */
  tag?: number;
  rules?: readonly RuleInput[];
}): Uint8Array {
  const rules = cfg.rules ?? [];
  if (rules.length > NKE_MAX_RULES) {
    throw new AbiError(`capture config: ${rules.length} rules, at most ${NKE_MAX_RULES}`);
  }
  if (!(cfg.mode in CaptureMode)) throw new AbiError(`capture config: unknown mode ${cfg.mode}`);
  const hold = cfg.hold_timeout_ms ?? 0;
  if (hold > NKE_HOLD_TIMEOUT_MAX_MS) {
    throw new AbiError(`capture config: hold_timeout_ms ${hold}, at most ${NKE_HOLD_TIMEOUT_MAX_MS}`);
  }
  const full = rules.map((r, i) => {
    const rule: Rule = { ...emptyRule(), ...r };
    if ((rule.match & ~NKE_MATCH_ALL_FIELDS) !== 0) {
      throw new AbiError(`capture config: rules[${i}].match has unknown bits 0x${rule.match.toString(16)}`);
    }
    if (!(rule.action in RuleAction)) {
      throw new AbiError(`capture config: rules[${i}].action ${rule.action} unknown`);
    }
    if (rule.local_port_min > rule.local_port_max || rule.remote_port_min > rule.remote_port_max) {
      throw new AbiError(`capture config: rules[${i}] has a port range with min > max`);
    }
    const maxPrefix = rule.family === NKE_AF_INET ? 32 : 128;
    if (rule.local_prefix > maxPrefix || rule.remote_prefix > maxPrefix) {
      throw new AbiError(`capture config: rules[${i}] prefix longer than ${maxPrefix} bits`);
    }
    return rule;
  });
  return encodeStruct(CaptureConfigLayout, {
    abi_version: NKE_ABI_VERSION,
    mode: cfg.mode,
    default_action: cfg.default_action ?? RuleAction.Pass,
    hold_timeout_ms: hold,
    nrules: full.length,
    tag: cfg.tag ?? 0,
    rules: full,
  });
}

// ---------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------

function formatIPv4(b: Uint8Array, at = 0): string {
  return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
}

/** RFC 5952 text: longest run (>= 2) of zero groups as `::`, lower case, IPv4-mapped as dotted. */
function formatIPv6(b: Uint8Array): string {
  const groups = Array.from({ length: 8 }, (_, i) => (b[2 * i] << 8) | b[2 * i + 1]);
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) return `::ffff:${formatIPv4(b, 12)}`;
  let bestAt = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestAt < 0) return hex.join(':');
  return `${hex.slice(0, bestAt).join(':')}::${hex.slice(bestAt + bestLen).join(':')}`;
}

/** Address text of an IP alone ("127.0.0.1", "::1", "fe80::1%4"), "" for family 0. */
export function formatIp(family: number, addr: Uint8Array, scopeId = 0): string {
  if (family === NKE_AF_INET) return formatIPv4(addr);
  if (family === NKE_AF_INET6) return scopeId ? `${formatIPv6(addr)}%${scopeId}` : formatIPv6(addr);
  if (family === 0) return '';
  return `<family ${family}>`;
}

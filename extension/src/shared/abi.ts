// TypeScript mirror of the kext ABI (kext/include/nke/nke_abi.h) and of the
// emulator's endpoint structs (native/emu/include/nke_emu_proto.h). Those C
// headers are the truth; test/unit/abi-layout.test.ts compiles
// test/native/abi-layout.c against them and compares every size, offset,
// field type and constant with the tables below, so this file cannot drift.
//
// Imports nothing (no `vscode`, no Node built-ins): the extension host, the
// helper process, the webview and plain mocha all load it.
//
// Layout lives in exactly one place on the TS side: the `*Layout` tables.
// Every decoder and encoder is derived from them (decodeStruct/encodeStruct),
// and the TS value types are derived from them too (StructValue<L>), so a
// field renamed or retyped in a table changes the types the compiler checks.
//
// Conventions:
//  - Field names are the C names (snake_case), so code reads like the header.
//  - Padding fields (`_pad*`) are written as zero and not exposed on decode.
//  - Every u64 (chunk ids, session id, counters, time_ns) is a `bigint`: exact
//    over the whole range. Where a u64 must cross JSON, send
//    `value.toString()` (decimal) and read it back with parseU64().
//  - Little-endian throughout (the ABI's host order on x86_64 and arm64).
//  - Decoders of bytes that come from the filter return a DecodeResult value
//    (never throw, whatever the bytes); encoders and parsers of values our own
//    code builds throw AbiError with a message naming the field.

// ---------------------------------------------------------------------------
// Constants (#defines of nke_abi.h)
// ---------------------------------------------------------------------------

export const NKE_ABI_VERSION = 4;
export const NKE_BUNDLE_ID = 'com.nkeworkbench.filter';
export const NKE_SERVICE_CLASS = 'com_nkeworkbench_Filter';
export const NKE_KEV_VENDOR = 'com.nkeworkbench';

export const NKE_BUFFER_COUNT = 64;
export const NKE_BUFFER_SIZE = 64 * 1024;
export const NKE_CHUNK_MAX_BUFFERS = 8;
export const NKE_CHUNK_MAX_BYTES = NKE_CHUNK_MAX_BUFFERS * NKE_BUFFER_SIZE;
export const NKE_BUF_NONE = 0xffff;
export const NKE_QUEUE_DATA_SIZE = 256 * 1024;
export const NKE_DQ_ENTRY_HEADER_SIZE = 4;
export const NKE_DQ_MEMORY_HEADER_SIZE = 12;
export const NKE_QUEUE_MAP_SIZE = NKE_QUEUE_DATA_SIZE + 4096;

export const NKE_AF_INET = 2;
export const NKE_AF_INET6 = 30;
export const NKE_PROTO_TCP = 6;
export const NKE_PROTO_UDP = 17;
export const NKE_COMM_LEN = 32;

export const NKE_OPEN_F_NONE = 0;

export const NKE_DATA_F_HELD = 0x1;
export const NKE_DATA_F_DATAGRAM = 0x2;
export const NKE_DATA_F_OOB = 0x4;
export const NKE_DATA_F_HAS_ADDR = 0x8;

export const NKE_STATE_F_CLIENT = 0x1;
export const NKE_STATE_F_CAPTURE = 0x2;

export const NKE_NT_MAX_SIZE = 168;
/** Most bytes the filter keeps at once for the client (held, queued behind held, staged, re-injecting). */
export const NKE_KEPT_BYTES_MAX = 32 * 1024 * 1024;

export const NKE_RESPONSE_MAX_VERDICTS = 256;
export const NKE_RESPONSE_MAX_RELEASES = NKE_BUFFER_COUNT * 2;
export const NKE_PUT_DATA_MAX_PIECE = 60 * 1024;
export const NKE_MODIFIED_MAX_LEN = 16 * 1024 * 1024;

export const NKE_MATCH_PID = 0x001;
export const NKE_MATCH_COMM = 0x002;
export const NKE_MATCH_DIRECTION = 0x004;
export const NKE_MATCH_PROTOCOL = 0x008;
export const NKE_MATCH_LOCAL_PORT = 0x010;
export const NKE_MATCH_REMOTE_PORT = 0x020;
export const NKE_MATCH_LOCAL_ADDR = 0x040;
export const NKE_MATCH_REMOTE_ADDR = 0x080;
export const NKE_MATCH_FAMILY = 0x100;
export const NKE_MATCH_ALL_FIELDS = 0x1ff;

export const NKE_MAX_RULES = 64;
export const NKE_HOLD_TIMEOUT_DEFAULT_MS = 5000;
/** nke_nt_data.rule when no rule decided: the config's default action did. */
export const NKE_RULE_DEFAULT = 0xffff;
export const NKE_HOLD_TIMEOUT_MAX_MS = 600000;
/** Hard cap on one chunk's total hold (NKE_ACT_EXTEND's hold_ms). */
export const NKE_HOLD_TOTAL_MAX_MS = 600000;

export const NKE_KEV_HEADER_SIZE = 24;
export const NKE_KEV_CLASS = 1;
export const NKE_KEV_SUBCLASS_EXEC = 1;
export const NKE_KEV_EVENT_EXEC = 1;
export const NKE_KEV_MSG_LIMIT_X86_64 = 224;
export const NKE_KEV_MSG_LIMIT_ARM64 = 288;
/** Exec paths up to the larger host limit (Linux 4096, NUL included); longer ones arrive cut, NKE_EXEC_F_TRUNCATED. */
export const NKE_PATH_MAX = 4096;
export const NKE_KEV_MAX_CHUNKS = 64;
export const NKE_EXEC_F_SPAWNER_CONTEXT = 0x1;
export const NKE_EXEC_F_FROM_SHIM = 0x2;
export const NKE_EXEC_F_TRUNCATED = 0x4;
export const NKE_KEV_EXEC_CHUNK_HEADER_SIZE = 24;

// nke_emu_proto.h
export const NKE_EMU_DIR_ENV = 'NKE_EMU_DIR';
export const NKE_EMU_CTL_SOCK = 'ctl.sock';
export const NKE_EMU_KEV_SOCK = 'kev.sock';
export const NKE_EMU_SHIM_SOCK = 'shim.sock';
export const NKE_EMU_LOCK_FILE = 'nke-emud.lock';
export const NKE_EMU_LOG_FILE = 'nke-emud.log';
export const NKE_EMU_LOG_MAX = 4 * 1024 * 1024;
export const NKE_EMU_MAGIC_REQ = 0x51454b4e;
export const NKE_EMU_MAGIC_REPLY = 0x50454b4e;
export const NKE_EMU_KEV_ANY = 0;
export const NKE_EMU_KEV_OK = 0;
export const NKE_EMU_KEV_EPERM = 1;
export const NKE_EMU_KEV_ENOENT = 2;
export const NKE_EMU_KEV_EINVAL = 22;
export const NKE_EMU_KEV_VENDOR_LEN = 200;

// ---------------------------------------------------------------------------
// Enums (enum ... of nke_abi.h / nke_emu_proto.h)
// ---------------------------------------------------------------------------

/** clientMemoryForType() types / the emulator's memfds. */
export enum MemoryType {
  Queue = 0,
  BufferPool = 1,
  /** + i: data buffer i alone. */
  BufferBase = 0x100,
}

export enum Direction {
  In = 1,
  Out = 2,
}

/** IOConnectCallStructMethod selectors. */
export enum Selector {
  Open = 0,
  Respond = 1,
  PutData = 2,
  SetCapture = 3,
  GetState = 4,
  Count = 5,
}

export enum NotifyType {
  Attach = 1,
  Detach = 2,
  ConnectIn = 3,
  ConnectOut = 4,
  Bound = 5,
  Listen = 6,
  Event = 7,
  Data = 8,
  ChunkReleased = 9,
  State = 10,
  Option = 11,
  /** An attach record again: the socket's process is now known (accept in another process). */
  Owner = 12,
  /** nke_nt_data_gap: data the filter passed without reporting it */
  DataGap = 13,
}

export enum SockEvent {
  Connecting = 1,
  Connected = 2,
  Disconnecting = 3,
  Disconnected = 4,
  FlushRead = 5,
  Shutdown = 6,
  CantRecvMore = 7,
  CantSendMore = 8,
  Closing = 9,
  Bound = 10,
}

export enum ReleaseReason {
  Timeout = 1,
  ClientGone = 2,
  SocketGone = 3,
  InjectFail = 4,
  /** The byte budget ran out while later data of the socket waited behind the chunk. */
  Budget = 5,
  /** The socket closed or shut its sending side down: outbound sent as it was, inbound dropped. */
  SocketClosing = 6,
}

/** Why data passed unreported (nke_nt_data_gap.reason). */
export enum GapReason {
  NoBuffer = 1,
  QueueFull = 2,
}

/** Verdict actions of NKE_SEL_RESPOND. */
export enum Action {
  Allow = 1,
  AllowModified = 2,
  Drop = 3,
  /** Not a verdict: keep holding; deadline = when held + hold_ms (never earlier). */
  Extend = 4,
}

export enum CaptureMode {
  Nothing = 0,
  All = 1,
  Rules = 2,
}

export enum RuleAction {
  Pass = 0,
  Report = 1,
  Hold = 2,
}

/** Status codes of the user client (enum nke_error). */
export enum NkeError {
  Ok = 0,
  Version = 1,
  Size = 2,
  Count = 3,
  Flags = 4,
  Reserved = 5,
  Action = 6,
  Sock = 7,
  NotHeld = 8,
  DupVerdict = 9,
  ModifiedLen = 10,
  BufRange = 11,
  BufDup = 12,
  BufDouble = 13,
  BufForeign = 14,
  PutOffset = 15,
  PutLen = 16,
  UnknownChunk = 17,
  Mode = 18,
  Rule = 19,
  NotPermitted = 20,
  Busy = 21,
  Selector = 22,
  NoMemory = 23,
  NotOpen = 24,
  HoldMs = 25,
  _Count = 26,
}

export enum EmuKevOp {
  GetVendor = 1,
  SetFilter = 2,
}

/** What each user-client status means and what to do about it. */
const NKE_ERROR_MESSAGES: Readonly<Record<number, string>> = {
  [NkeError.Ok]: 'success',
  [NkeError.Version]:
    'ABI version mismatch between the client and the loaded filter: rebuild and reload the kext (or restart the emulator) from this workspace',
  [NkeError.Size]:
    'message size does not match its verdict/release/rule counts: the client encoder and the filter disagree on the ABI; rebuild both',
  [NkeError.Count]: `too many entries in one message (at most ${NKE_RESPONSE_MAX_VERDICTS} verdicts, ${NKE_RESPONSE_MAX_RELEASES} releases, ${NKE_MAX_RULES} rules): split the response or reduce the rules`,
  [NkeError.Flags]:
    'unknown flag bits set: the client is newer than the filter; rebuild and reload the filter',
  [NkeError.Reserved]: 'a padding/reserved field is not zero: client encoder bug; padding must be zero',
  [NkeError.Action]:
    'unknown verdict or rule action: use Allow, AllowModified, Drop or Extend (rules: Pass, Report, Hold)',
  [NkeError.Sock]:
    'socket id does not match the chunk: the verdict names the wrong socket (or a reused slot); check the notification it answers',
  [NkeError.NotHeld]:
    'verdict for a chunk that was only reported, not held (or an Extend of a decided chunk): reported chunks need only their buffers released',
  [NkeError.DupVerdict]: 'two verdicts for the same chunk in one response: send one verdict per chunk',
  [NkeError.ModifiedLen]:
    'modified_len differs from the bytes staged with put-data: stage all modified bytes before the AllowModified verdict',
  [NkeError.BufRange]: `buffer index out of range (>= ${NKE_BUFFER_COUNT}): release only buffers announced in a data notification`,
  [NkeError.BufDup]: 'the same buffer is listed twice in one response: release each buffer once',
  [NkeError.BufDouble]: 'buffer of this chunk already released: release each buffer once',
  [NkeError.BufForeign]:
    'buffer does not belong to the chunk named: pair each release with the chunk that announced it',
  [NkeError.PutOffset]:
    'put-data piece out of order: offset must equal the bytes staged so far for this chunk',
  [NkeError.PutLen]: `put-data beyond total_len or limits (piece <= ${NKE_PUT_DATA_MAX_PIECE} bytes, total <= ${NKE_MODIFIED_MAX_LEN} bytes): shorten the edit or split it`,
  [NkeError.UnknownChunk]:
    'put-data for a chunk that is not held (auto-released or already answered): the edit came too late; raise the hold timeout',
  [NkeError.Mode]: 'unknown capture mode: use Nothing, All or Rules',
  [NkeError.Rule]:
    'malformed capture rule (port range min > max, prefix too long, or comm not NUL-terminated): fix the rule',
  [NkeError.NotPermitted]:
    'not permitted: the filter only accepts an administrator (root) client, or the emulator a client of its own uid; run the helper with the right privileges',
  [NkeError.Busy]: 'another client is already connected to the filter: disconnect it (one client at a time)',
  [NkeError.Selector]:
    'unknown user-client method: the client is newer than the filter; rebuild and reload the filter',
  [NkeError.NoMemory]: 'the filter is out of memory: free held chunks or reload the filter',
  [NkeError.NotOpen]: 'method called before a successful open: open the filter first',
  [NkeError.HoldMs]: `Extend with hold_ms 0 or above the total hold cap (${NKE_HOLD_TOTAL_MAX_MS} ms): ask for 1..${NKE_HOLD_TOTAL_MAX_MS} ms`,
};

/** A human-readable message for a user-client status code, known or not. */
export function describeNkeError(code: number): string {
  const name = NkeError[code];
  const msg = NKE_ERROR_MESSAGES[code];
  if (name === undefined || msg === undefined || code === NkeError._Count) {
    return `unknown filter status ${code}: the filter is newer than this client; update the extension`;
  }
  return `NKE_ERR ${name} (${code}): ${msg}`;
}

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
// Layout tables
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

/**
 * Declares a layout and checks at load time that its fields tile the struct
 * exactly (no gap, no overlap, nothing past the end). The C side has explicit
 * padding, so every byte belongs to exactly one named field; a table that
 * does not tile is a typo here, caught before any byte is decoded.
 */
function defineStruct<const L extends StructLayout>(layout: L): L {
  let next = 0;
  for (const f of layout.fields) {
    if (f.offset !== next) {
      throw new AbiError(
        `layout ${layout.name}: field ${f.name} at offset ${f.offset}, expected ${next} (gap or overlap)`,
      );
    }
    const align = fieldElementSize(f) >= 8 ? 8 : fieldElementSize(f);
    if (f.type !== 'struct' && f.offset % align !== 0) {
      throw new AbiError(`layout ${layout.name}: field ${f.name} misaligned at ${f.offset}`);
    }
    next += fieldSize(f);
  }
  if (next !== layout.size) {
    throw new AbiError(`layout ${layout.name}: fields cover ${next} bytes, size is ${layout.size}`);
  }
  return layout;
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

export const DqEntryLayout = defineStruct({
  name: 'nke_dq_entry',
  size: 8,
  fields: [
    { name: 'size', offset: 0, type: 'u32' },
    { name: 'data', offset: 4, type: 'u8', length: 4 },
  ],
});

export const DqMemoryLayout = defineStruct({
  name: 'nke_dq_memory',
  size: 20,
  fields: [
    { name: 'queue_size', offset: 0, type: 'u32' },
    { name: 'head', offset: 4, type: 'u32' },
    { name: 'tail', offset: 8, type: 'u32' },
    { name: 'queue', offset: 12, type: 'struct', struct: DqEntryLayout, length: 1 },
  ],
});

export const SockIdLayout = defineStruct({
  name: 'nke_sock_id',
  size: 8,
  fields: [
    { name: 'slot', offset: 0, type: 'u32' },
    { name: 'gen', offset: 4, type: 'u32' },
  ],
});

export const AddrLayout = defineStruct({
  name: 'nke_addr',
  size: 24,
  fields: [
    { name: 'family', offset: 0, type: 'u8' },
    { name: '_pad0', offset: 1, type: 'u8' },
    { name: 'port', offset: 2, type: 'u16' },
    { name: 'scope_id', offset: 4, type: 'u32' },
    { name: 'addr', offset: 8, type: 'u8', length: 16 },
  ],
});

export const OpenRequestLayout = defineStruct({
  name: 'nke_open_request',
  size: 16,
  fields: [
    { name: 'abi_version', offset: 0, type: 'u32' },
    { name: 'flags', offset: 4, type: 'u32' },
    { name: 'client_pid', offset: 8, type: 'i32' },
    { name: '_pad0', offset: 12, type: 'u32' },
  ],
});

export const OpenReplyLayout = defineStruct({
  name: 'nke_open_reply',
  size: 32,
  fields: [
    { name: 'abi_version', offset: 0, type: 'u32' },
    { name: 'buffer_count', offset: 4, type: 'u32' },
    { name: 'buffer_size', offset: 8, type: 'u32' },
    { name: 'queue_data_size', offset: 12, type: 'u32' },
    { name: 'kev_vendor_code', offset: 16, type: 'u32' },
    { name: 'kev_msg_limit', offset: 20, type: 'u32' },
    { name: 'session_id', offset: 24, type: 'u64' },
  ],
});

export const NtHdrLayout = defineStruct({
  name: 'nke_nt_hdr',
  size: 24,
  fields: [
    { name: 'type', offset: 0, type: 'u16' },
    { name: 'size', offset: 2, type: 'u16' },
    { name: 'flags', offset: 4, type: 'u32' },
    { name: 'sock', offset: 8, type: 'struct', struct: SockIdLayout },
    { name: 'time_ns', offset: 16, type: 'u64' },
  ],
});

export const NtAttachLayout = defineStruct({
  name: 'nke_nt_attach',
  size: 72,
  fields: [
    { name: 'hdr', offset: 0, type: 'struct', struct: NtHdrLayout },
    { name: 'pid', offset: 24, type: 'i32' },
    { name: 'uid', offset: 28, type: 'u32' },
    { name: 'family', offset: 32, type: 'u8' },
    { name: 'type', offset: 33, type: 'u8' },
    { name: 'protocol', offset: 34, type: 'u8' },
    { name: '_pad0', offset: 35, type: 'u8' },
    { name: '_pad1', offset: 36, type: 'u32' },
    { name: 'comm', offset: 40, type: 'char', length: NKE_COMM_LEN },
  ],
});

export const NtDetachLayout = defineStruct({
  name: 'nke_nt_detach',
  size: 40,
  fields: [
    { name: 'hdr', offset: 0, type: 'struct', struct: NtHdrLayout },
    { name: 'bytes_in', offset: 24, type: 'u64' },
    { name: 'bytes_out', offset: 32, type: 'u64' },
  ],
});

export const NtAddrsLayout = defineStruct({
  name: 'nke_nt_addrs',
  size: 72,
  fields: [
    { name: 'hdr', offset: 0, type: 'struct', struct: NtHdrLayout },
    { name: 'local', offset: 24, type: 'struct', struct: AddrLayout },
    { name: 'remote', offset: 48, type: 'struct', struct: AddrLayout },
  ],
});

export const NtEventLayout = defineStruct({
  name: 'nke_nt_event',
  size: 32,
  fields: [
    { name: 'hdr', offset: 0, type: 'struct', struct: NtHdrLayout },
    { name: 'event', offset: 24, type: 'u32' },
    { name: '_pad0', offset: 28, type: 'u32' },
  ],
});

export const NtOptionLayout = defineStruct({
  name: 'nke_nt_option',
  size: 40,
  fields: [
    { name: 'hdr', offset: 0, type: 'struct', struct: NtHdrLayout },
    { name: 'level', offset: 24, type: 'u32' },
    { name: 'name', offset: 28, type: 'u32' },
    { name: 'is_set', offset: 32, type: 'u32' },
    { name: '_pad0', offset: 36, type: 'u32' },
  ],
});

export const NtDataLayout = defineStruct({
  name: 'nke_nt_data',
  size: 104,
  fields: [
    { name: 'hdr', offset: 0, type: 'struct', struct: NtHdrLayout },
    { name: 'chunk_id', offset: 24, type: 'u64' },
    { name: 'stream_offset', offset: 32, type: 'u64' },
    { name: 'size', offset: 40, type: 'u32' },
    { name: 'direction', offset: 44, type: 'u8' },
    { name: '_pad0', offset: 45, type: 'u8' },
    { name: 'nbuffers', offset: 46, type: 'u16' },
    { name: 'deadline_ms', offset: 48, type: 'u32' },
    { name: 'capture_tag', offset: 52, type: 'u32' },
    { name: 'addr', offset: 56, type: 'struct', struct: AddrLayout },
    { name: 'buffers', offset: 80, type: 'u16', length: NKE_CHUNK_MAX_BUFFERS },
    { name: 'rule', offset: 96, type: 'u16' },
    { name: '_pad1', offset: 98, type: 'u16', length: 3 },
  ],
});

export const NtChunkReleasedLayout = defineStruct({
  name: 'nke_nt_chunk_released',
  size: 40,
  fields: [
    { name: 'hdr', offset: 0, type: 'struct', struct: NtHdrLayout },
    { name: 'chunk_id', offset: 24, type: 'u64' },
    { name: 'reason', offset: 32, type: 'u32' },
    { name: 'size', offset: 36, type: 'u32' },
  ],
});

export const NtDataGapLayout = defineStruct({
  name: 'nke_nt_data_gap',
  size: 40,
  fields: [
    { name: 'hdr', offset: 0, type: 'struct', struct: NtHdrLayout },
    { name: 'stream_offset', offset: 24, type: 'u64' },
    { name: 'size', offset: 32, type: 'u32' },
    { name: 'direction', offset: 36, type: 'u8' },
    { name: 'reason', offset: 37, type: 'u8' },
    { name: '_pad0', offset: 38, type: 'u16' },
  ],
});

export const FilterStateLayout = defineStruct({
  name: 'nke_filter_state',
  size: 144,
  fields: [
    { name: 'abi_version', offset: 0, type: 'u32' },
    { name: 'flags', offset: 4, type: 'u32' },
    { name: 'capture_mode', offset: 8, type: 'u32' },
    { name: 'sockets_live', offset: 12, type: 'u32' },
    { name: 'chunks_pending', offset: 16, type: 'u32' },
    { name: 'buffers_in_use', offset: 20, type: 'u32' },
    { name: 'sockets_attached', offset: 24, type: 'u64' },
    { name: 'chunks_held', offset: 32, type: 'u64' },
    { name: 'chunks_reported', offset: 40, type: 'u64' },
    { name: 'chunks_passed_pool_full', offset: 48, type: 'u64' },
    { name: 'chunks_auto_released', offset: 56, type: 'u64' },
    { name: 'chunks_dropped', offset: 64, type: 'u64' },
    { name: 'chunks_modified', offset: 72, type: 'u64' },
    { name: 'bytes_held', offset: 80, type: 'u64' },
    { name: 'responses_rejected', offset: 88, type: 'u64' },
    { name: 'notifications_lost', offset: 96, type: 'u64' },
    { name: 'sockets_untracked', offset: 104, type: 'u64' },
    { name: 'stale_entries', offset: 112, type: 'u64' },
    { name: 'bytes_kept', offset: 120, type: 'u64' },
    { name: 'chunks_queued', offset: 128, type: 'u64' },
    { name: 'chunks_passed_budget', offset: 136, type: 'u64' },
  ],
});

export const NtStateLayout = defineStruct({
  name: 'nke_nt_state',
  size: 168,
  fields: [
    { name: 'hdr', offset: 0, type: 'struct', struct: NtHdrLayout },
    { name: 'state', offset: 24, type: 'struct', struct: FilterStateLayout },
  ],
});

export const ResponseHdrLayout = defineStruct({
  name: 'nke_response_hdr',
  size: 16,
  fields: [
    { name: 'abi_version', offset: 0, type: 'u32' },
    { name: 'size', offset: 4, type: 'u32' },
    { name: 'nverdicts', offset: 8, type: 'u16' },
    { name: 'nreleases', offset: 10, type: 'u16' },
    { name: 'flags', offset: 12, type: 'u32' },
  ],
});

export const VerdictLayout = defineStruct({
  name: 'nke_verdict',
  size: 24,
  fields: [
    { name: 'chunk_id', offset: 0, type: 'u64' },
    { name: 'sock', offset: 8, type: 'struct', struct: SockIdLayout },
    { name: 'action', offset: 16, type: 'u8' },
    { name: '_pad0', offset: 17, type: 'u8', length: 3 },
    { name: 'modified_len', offset: 20, type: 'u32' },
  ],
});

export const ReleaseLayout = defineStruct({
  name: 'nke_release',
  size: 16,
  fields: [
    { name: 'chunk_id', offset: 0, type: 'u64' },
    { name: 'buffer', offset: 8, type: 'u16' },
    { name: '_pad0', offset: 10, type: 'u16' },
    { name: '_pad1', offset: 12, type: 'u32' },
  ],
});

export const PutDataHdrLayout = defineStruct({
  name: 'nke_put_data_hdr',
  size: 32,
  fields: [
    { name: 'chunk_id', offset: 0, type: 'u64' },
    { name: 'sock', offset: 8, type: 'struct', struct: SockIdLayout },
    { name: 'total_len', offset: 16, type: 'u32' },
    { name: 'offset', offset: 20, type: 'u32' },
    { name: 'len', offset: 24, type: 'u32' },
    { name: '_pad0', offset: 28, type: 'u32' },
  ],
});

export const RuleLayout = defineStruct({
  name: 'nke_rule',
  size: 88,
  fields: [
    { name: 'match', offset: 0, type: 'u32' },
    { name: 'action', offset: 4, type: 'u8' },
    { name: 'direction', offset: 5, type: 'u8' },
    { name: 'protocol', offset: 6, type: 'u8' },
    { name: 'family', offset: 7, type: 'u8' },
    { name: 'pid', offset: 8, type: 'i32' },
    { name: 'local_port_min', offset: 12, type: 'u16' },
    { name: 'local_port_max', offset: 14, type: 'u16' },
    { name: 'remote_port_min', offset: 16, type: 'u16' },
    { name: 'remote_port_max', offset: 18, type: 'u16' },
    { name: 'local_prefix', offset: 20, type: 'u8' },
    { name: 'remote_prefix', offset: 21, type: 'u8' },
    { name: '_pad0', offset: 22, type: 'u16' },
    { name: 'local_addr', offset: 24, type: 'u8', length: 16 },
    { name: 'remote_addr', offset: 40, type: 'u8', length: 16 },
    { name: 'comm', offset: 56, type: 'char', length: NKE_COMM_LEN },
  ],
});

export const CaptureConfigLayout = defineStruct({
  name: 'nke_capture_config',
  size: 24 + 88 * NKE_MAX_RULES,
  fields: [
    { name: 'abi_version', offset: 0, type: 'u32' },
    { name: 'mode', offset: 4, type: 'u32' },
    { name: 'default_action', offset: 8, type: 'u32' },
    { name: 'hold_timeout_ms', offset: 12, type: 'u32' },
    { name: 'nrules', offset: 16, type: 'u32' },
    { name: 'tag', offset: 20, type: 'u32' },
    { name: 'rules', offset: 24, type: 'struct', struct: RuleLayout, length: NKE_MAX_RULES },
  ],
});

export const KernEventMsgLayout = defineStruct({
  name: 'nke_kern_event_msg',
  size: NKE_KEV_HEADER_SIZE,
  fields: [
    { name: 'total_size', offset: 0, type: 'u32' },
    { name: 'vendor_code', offset: 4, type: 'u32' },
    { name: 'kev_class', offset: 8, type: 'u32' },
    { name: 'kev_subclass', offset: 12, type: 'u32' },
    { name: 'id', offset: 16, type: 'u32' },
    { name: 'event_code', offset: 20, type: 'u32' },
  ],
});

export const KevExecChunkLayout = defineStruct({
  name: 'nke_kev_exec_chunk',
  size: NKE_KEV_EXEC_CHUNK_HEADER_SIZE,
  fields: [
    { name: 'exec_id', offset: 0, type: 'u32' },
    { name: 'pid', offset: 4, type: 'i32' },
    { name: 'ppid', offset: 8, type: 'i32' },
    { name: 'uid', offset: 12, type: 'u32' },
    { name: 'total_len', offset: 16, type: 'u16' },
    { name: 'offset', offset: 18, type: 'u16' },
    { name: 'chunk_index', offset: 20, type: 'u8' },
    { name: 'chunk_count', offset: 21, type: 'u8' },
    { name: 'flags', offset: 22, type: 'u16' },
  ],
});

export const EmuReqLayout = defineStruct({
  name: 'nke_emu_req',
  size: 16,
  fields: [
    { name: 'magic', offset: 0, type: 'u32' },
    { name: 'selector', offset: 4, type: 'u32' },
    { name: 'seq', offset: 8, type: 'u32' },
    { name: 'len', offset: 12, type: 'u32' },
  ],
});

export const EmuReplyLayout = defineStruct({
  name: 'nke_emu_reply',
  size: 16,
  fields: [
    { name: 'magic', offset: 0, type: 'u32' },
    { name: 'status', offset: 4, type: 'u32' },
    { name: 'seq', offset: 8, type: 'u32' },
    { name: 'len', offset: 12, type: 'u32' },
  ],
});

export const EmuKevCtlLayout = defineStruct({
  name: 'nke_emu_kev_ctl',
  size: 232,
  fields: [
    { name: 'magic', offset: 0, type: 'u32' },
    { name: 'op', offset: 4, type: 'u32' },
    { name: 'status', offset: 8, type: 'u32' },
    { name: 'vendor_code', offset: 12, type: 'u32' },
    { name: 'kev_class', offset: 16, type: 'u32' },
    { name: 'kev_subclass', offset: 20, type: 'u32' },
    { name: 'msg_limit', offset: 24, type: 'u32' },
    { name: '_pad0', offset: 28, type: 'u32' },
    { name: 'vendor_string', offset: 32, type: 'char', length: NKE_EMU_KEV_VENDOR_LEN },
  ],
});

export const EmuRefusalLayout = defineStruct({
  name: 'nke_emu_refusal',
  size: 8,
  fields: [
    { name: 'peer_uid', offset: 0, type: 'u32' },
    { name: 'filter_uid', offset: 4, type: 'u32' },
  ],
});

/** Every struct that crosses a boundary, for the conformance test and tools. */
export const ABI_STRUCTS: readonly StructLayout[] = [
  DqEntryLayout,
  DqMemoryLayout,
  SockIdLayout,
  AddrLayout,
  OpenRequestLayout,
  OpenReplyLayout,
  NtHdrLayout,
  NtAttachLayout,
  NtDetachLayout,
  NtAddrsLayout,
  NtEventLayout,
  NtOptionLayout,
  NtDataLayout,
  NtChunkReleasedLayout,
  NtDataGapLayout,
  FilterStateLayout,
  NtStateLayout,
  ResponseHdrLayout,
  VerdictLayout,
  ReleaseLayout,
  PutDataHdrLayout,
  RuleLayout,
  CaptureConfigLayout,
  KernEventMsgLayout,
  KevExecChunkLayout,
  EmuReqLayout,
  EmuReplyLayout,
  EmuKevCtlLayout,
  EmuRefusalLayout,
];

/** Derived sizes that the header computes with sizeof (checked against C too). */
export const NKE_RESPONSE_MAX_SIZE =
  ResponseHdrLayout.size +
  NKE_RESPONSE_MAX_VERDICTS * VerdictLayout.size +
  NKE_RESPONSE_MAX_RELEASES * ReleaseLayout.size;
export const NKE_EMU_MAX_REQ = EmuReqLayout.size + PutDataHdrLayout.size + NKE_PUT_DATA_MAX_PIECE;

/**
 * Every constant and enum member of the two headers by its C name. The
 * conformance test compares this map with the C program's output in both
 * directions, so a constant added on one side only fails the unit suite.
 */
export const ABI_CONSTANTS: Readonly<Record<string, number | string>> = {
  NKE_ABI_VERSION,
  NKE_BUNDLE_ID,
  NKE_SERVICE_CLASS,
  NKE_KEV_VENDOR,
  NKE_BUFFER_COUNT,
  NKE_BUFFER_SIZE,
  NKE_CHUNK_MAX_BUFFERS,
  NKE_CHUNK_MAX_BYTES,
  NKE_BUF_NONE,
  NKE_QUEUE_DATA_SIZE,
  NKE_MEM_QUEUE: MemoryType.Queue,
  NKE_MEM_BUFFER_POOL: MemoryType.BufferPool,
  NKE_MEM_BUFFER_BASE: MemoryType.BufferBase,
  NKE_DQ_ENTRY_HEADER_SIZE,
  NKE_DQ_MEMORY_HEADER_SIZE,
  NKE_QUEUE_MAP_SIZE,
  NKE_AF_INET,
  NKE_AF_INET6,
  NKE_PROTO_TCP,
  NKE_PROTO_UDP,
  NKE_COMM_LEN,
  NKE_DIR_IN: Direction.In,
  NKE_DIR_OUT: Direction.Out,
  NKE_SEL_OPEN: Selector.Open,
  NKE_SEL_RESPOND: Selector.Respond,
  NKE_SEL_PUT_DATA: Selector.PutData,
  NKE_SEL_SET_CAPTURE: Selector.SetCapture,
  NKE_SEL_GET_STATE: Selector.GetState,
  NKE_SEL_COUNT: Selector.Count,
  NKE_OPEN_F_NONE,
  NKE_NT_ATTACH: NotifyType.Attach,
  NKE_NT_DETACH: NotifyType.Detach,
  NKE_NT_CONNECT_IN: NotifyType.ConnectIn,
  NKE_NT_CONNECT_OUT: NotifyType.ConnectOut,
  NKE_NT_BOUND: NotifyType.Bound,
  NKE_NT_LISTEN: NotifyType.Listen,
  NKE_NT_EVENT: NotifyType.Event,
  NKE_NT_DATA: NotifyType.Data,
  NKE_NT_CHUNK_RELEASED: NotifyType.ChunkReleased,
  NKE_NT_STATE: NotifyType.State,
  NKE_NT_OPTION: NotifyType.Option,
  NKE_NT_OWNER: NotifyType.Owner,
  NKE_NT_DATA_GAP: NotifyType.DataGap,
  NKE_GAP_NO_BUFFER: GapReason.NoBuffer,
  NKE_GAP_QUEUE_FULL: GapReason.QueueFull,
  NKE_EV_CONNECTING: SockEvent.Connecting,
  NKE_EV_CONNECTED: SockEvent.Connected,
  NKE_EV_DISCONNECTING: SockEvent.Disconnecting,
  NKE_EV_DISCONNECTED: SockEvent.Disconnected,
  NKE_EV_FLUSH_READ: SockEvent.FlushRead,
  NKE_EV_SHUTDOWN: SockEvent.Shutdown,
  NKE_EV_CANTRECVMORE: SockEvent.CantRecvMore,
  NKE_EV_CANTSENDMORE: SockEvent.CantSendMore,
  NKE_EV_CLOSING: SockEvent.Closing,
  NKE_EV_BOUND: SockEvent.Bound,
  NKE_DATA_F_HELD,
  NKE_DATA_F_DATAGRAM,
  NKE_DATA_F_OOB,
  NKE_DATA_F_HAS_ADDR,
  NKE_RELEASE_TIMEOUT: ReleaseReason.Timeout,
  NKE_RELEASE_CLIENT_GONE: ReleaseReason.ClientGone,
  NKE_RELEASE_SOCKET_GONE: ReleaseReason.SocketGone,
  NKE_RELEASE_INJECT_FAIL: ReleaseReason.InjectFail,
  NKE_RELEASE_BUDGET: ReleaseReason.Budget,
  NKE_RELEASE_SOCKET_CLOSING: ReleaseReason.SocketClosing,
  NKE_STATE_F_CLIENT,
  NKE_STATE_F_CAPTURE,
  NKE_NT_MAX_SIZE,
  NKE_KEPT_BYTES_MAX,
  NKE_ACT_ALLOW: Action.Allow,
  NKE_ACT_ALLOW_MODIFIED: Action.AllowModified,
  NKE_ACT_DROP: Action.Drop,
  NKE_ACT_EXTEND: Action.Extend,
  NKE_HOLD_TOTAL_MAX_MS,
  NKE_RESPONSE_MAX_VERDICTS,
  NKE_RESPONSE_MAX_RELEASES,
  NKE_RESPONSE_MAX_SIZE,
  NKE_PUT_DATA_MAX_PIECE,
  NKE_MODIFIED_MAX_LEN,
  NKE_CAPTURE_NOTHING: CaptureMode.Nothing,
  NKE_CAPTURE_ALL: CaptureMode.All,
  NKE_CAPTURE_RULES: CaptureMode.Rules,
  NKE_RULE_PASS: RuleAction.Pass,
  NKE_RULE_REPORT: RuleAction.Report,
  NKE_RULE_HOLD: RuleAction.Hold,
  NKE_RULE_DEFAULT,
  NKE_MATCH_PID,
  NKE_MATCH_COMM,
  NKE_MATCH_DIRECTION,
  NKE_MATCH_PROTOCOL,
  NKE_MATCH_LOCAL_PORT,
  NKE_MATCH_REMOTE_PORT,
  NKE_MATCH_LOCAL_ADDR,
  NKE_MATCH_REMOTE_ADDR,
  NKE_MATCH_FAMILY,
  NKE_MATCH_ALL_FIELDS,
  NKE_MAX_RULES,
  NKE_HOLD_TIMEOUT_DEFAULT_MS,
  NKE_HOLD_TIMEOUT_MAX_MS,
  NKE_OK: NkeError.Ok,
  NKE_ERR_VERSION: NkeError.Version,
  NKE_ERR_SIZE: NkeError.Size,
  NKE_ERR_COUNT: NkeError.Count,
  NKE_ERR_FLAGS: NkeError.Flags,
  NKE_ERR_RESERVED: NkeError.Reserved,
  NKE_ERR_ACTION: NkeError.Action,
  NKE_ERR_SOCK: NkeError.Sock,
  NKE_ERR_NOT_HELD: NkeError.NotHeld,
  NKE_ERR_DUP_VERDICT: NkeError.DupVerdict,
  NKE_ERR_MODIFIED_LEN: NkeError.ModifiedLen,
  NKE_ERR_BUF_RANGE: NkeError.BufRange,
  NKE_ERR_BUF_DUP: NkeError.BufDup,
  NKE_ERR_BUF_DOUBLE: NkeError.BufDouble,
  NKE_ERR_BUF_FOREIGN: NkeError.BufForeign,
  NKE_ERR_PUT_OFFSET: NkeError.PutOffset,
  NKE_ERR_PUT_LEN: NkeError.PutLen,
  NKE_ERR_UNKNOWN_CHUNK: NkeError.UnknownChunk,
  NKE_ERR_MODE: NkeError.Mode,
  NKE_ERR_RULE: NkeError.Rule,
  NKE_ERR_NOT_PERMITTED: NkeError.NotPermitted,
  NKE_ERR_BUSY: NkeError.Busy,
  NKE_ERR_SELECTOR: NkeError.Selector,
  NKE_ERR_NO_MEMORY: NkeError.NoMemory,
  NKE_ERR_NOT_OPEN: NkeError.NotOpen,
  NKE_ERR_HOLD_MS: NkeError.HoldMs,
  NKE_ERR__COUNT: NkeError._Count,
  NKE_KEV_HEADER_SIZE,
  NKE_KEV_CLASS,
  NKE_KEV_SUBCLASS_EXEC,
  NKE_KEV_EVENT_EXEC,
  NKE_KEV_MSG_LIMIT_X86_64,
  NKE_KEV_MSG_LIMIT_ARM64,
  NKE_PATH_MAX,
  NKE_KEV_MAX_CHUNKS,
  NKE_EXEC_F_SPAWNER_CONTEXT,
  NKE_EXEC_F_FROM_SHIM,
  NKE_EXEC_F_TRUNCATED,
  NKE_KEV_EXEC_CHUNK_HEADER_SIZE,
  NKE_EMU_DIR_ENV,
  NKE_EMU_CTL_SOCK,
  NKE_EMU_KEV_SOCK,
  NKE_EMU_SHIM_SOCK,
  NKE_EMU_LOCK_FILE,
  NKE_EMU_LOG_FILE,
  NKE_EMU_LOG_MAX,
  NKE_EMU_MAGIC_REQ,
  NKE_EMU_MAGIC_REPLY,
  NKE_EMU_MAX_REQ,
  NKE_EMU_KEV_GET_VENDOR: EmuKevOp.GetVendor,
  NKE_EMU_KEV_SET_FILTER: EmuKevOp.SetFilter,
  NKE_EMU_KEV_ANY,
  NKE_EMU_KEV_OK,
  NKE_EMU_KEV_EPERM,
  NKE_EMU_KEV_ENOENT,
  NKE_EMU_KEV_EINVAL,
  NKE_EMU_KEV_VENDOR_LEN,
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

const NOTIFICATION_KINDS: Readonly<Record<number, { kind: NotificationKind; layout: StructLayout }>> = {
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

/** The record layout of a notification type, or undefined for an unknown type. */
export function notificationLayout(type: number): StructLayout | undefined {
  return NOTIFICATION_KINDS[type]?.layout;
}

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
  const type = v.getUint16(offset, true);
  const size = v.getUint16(offset + 2, true);
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

/** Encodes a notification record (the emulator tests and fuzzers use it); hdr.type/size are set from kind. */
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
    const size = v.getUint16(off + 2, true); // nke_nt_hdr.size
    if (r.ok) notifications.push(r.value);
    else malformed++;
    if (size < NtHdrLayout.size || size % 8 !== 0) return { notifications, malformed: malformed + 1 };
    off += size;
  }
  return { notifications, malformed };
}

export function encodeNotification(n: Notification): Uint8Array {
  const entry = Object.entries(NOTIFICATION_KINDS).find(([, k]) => k.kind === n.kind);
  if (!entry) {
    throw new AbiError(`unknown notification kind ${JSON.stringify((n as { kind: unknown }).kind)}`);
  }
  const [type, { layout }] = entry;
  const rec = { ...n, hdr: { ...n.hdr, type: Number(type), size: layout.size } };
  return encodeStruct(layout, rec as never);
}

// ---------------------------------------------------------------------------
// Replies (filter -> client)
// ---------------------------------------------------------------------------

function decodeFixed<L extends StructLayout>(
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

/** Output of NKE_SEL_OPEN. The caller compares abi_version with NKE_ABI_VERSION. */
export function decodeOpenReply(buf: Bytes, offset = 0): DecodeResult<OpenReply> {
  const r = decodeFixed(OpenReplyLayout, buf, offset);
  if (!r.ok) return r;
  if (r.value.abi_version !== NKE_ABI_VERSION) {
    return fail(
      'bad_field',
      offset,
      `open reply: filter ABI version ${r.value.abi_version}, this client speaks ${NKE_ABI_VERSION}; rebuild and reload the filter`,
    );
  }
  return r;
}

/** Output of NKE_SEL_GET_STATE. */
export function decodeFilterState(buf: Bytes, offset = 0): DecodeResult<FilterState> {
  return decodeFixed(FilterStateLayout, buf, offset);
}

// ---------------------------------------------------------------------------
// Requests (client -> filter)
// ---------------------------------------------------------------------------

/** Input of NKE_SEL_OPEN. */
export function encodeOpenRequest(req: { client_pid: number; flags?: number }): Uint8Array {
  return encodeStruct(OpenRequestLayout, {
    abi_version: NKE_ABI_VERSION,
    flags: req.flags ?? NKE_OPEN_F_NONE,
    client_pid: req.client_pid,
  });
}

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

/** Decodes a response message (the emulator side and tests); validates sizes and counts. */
export function decodeResponse(
  buf: Bytes,
): DecodeResult<{ hdr: ResponseHdr; verdicts: Verdict[]; releases: Release[] }> {
  const h = decodeFixed(ResponseHdrLayout, buf, 0);
  if (!h.ok) return h;
  const hdr = h.value;
  const v = toView(buf);
  const want =
    ResponseHdrLayout.size + hdr.nverdicts * VerdictLayout.size + hdr.nreleases * ReleaseLayout.size;
  if (hdr.size !== want || v.byteLength < want) {
    return fail(
      'bad_size',
      0,
      `response: size field ${hdr.size}, ${hdr.nverdicts} verdicts + ${hdr.nreleases} releases need ${want}, buffer has ${v.byteLength}`,
    );
  }
  const verdicts: Verdict[] = [];
  const releases: Release[] = [];
  let off = ResponseHdrLayout.size;
  for (let i = 0; i < hdr.nverdicts; i++, off += VerdictLayout.size) {
    verdicts.push(readStructAt(v, off, VerdictLayout) as Verdict);
  }
  for (let i = 0; i < hdr.nreleases; i++, off += ReleaseLayout.size) {
    releases.push(readStructAt(v, off, ReleaseLayout) as Release);
  }
  return { ok: true, value: { hdr, verdicts, releases } };
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
  return {
    match: 0,
    action,
    direction: 0,
    protocol: 0,
    family: 0,
    pid: 0,
    local_port_min: 0,
    local_port_max: 0,
    remote_port_min: 0,
    remote_port_max: 0,
    local_prefix: 0,
    remote_prefix: 0,
    local_addr: new Uint8Array(16),
    remote_addr: new Uint8Array(16),
    comm: '',
  };
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
// Kernel events (exec monitor)
// ---------------------------------------------------------------------------

export interface KernEvent {
  msg: KernEventMsg;
  /** Event data after the 24-byte header (a view into the input). */
  data: Uint8Array;
}

/** One kern_event_msg as read from the event socket (one datagram). */
export function decodeKernEventMsg(buf: Bytes): DecodeResult<KernEvent> {
  const h = decodeFixed(KernEventMsgLayout, buf, 0);
  if (!h.ok) return h;
  const v = toView(buf);
  const msg = h.value;
  if (msg.total_size < NKE_KEV_HEADER_SIZE || msg.total_size > v.byteLength) {
    return fail(
      'bad_size',
      0,
      `kern_event_msg: total_size ${msg.total_size}, datagram has ${v.byteLength} bytes (header ${NKE_KEV_HEADER_SIZE})`,
    );
  }
  const data = new Uint8Array(
    v.buffer,
    v.byteOffset + NKE_KEV_HEADER_SIZE,
    msg.total_size - NKE_KEV_HEADER_SIZE,
  );
  return { ok: true, value: { msg, data } };
}

export interface ExecChunkEvent {
  msg: KernEventMsg;
  chunk: KevExecChunk;
  /** This piece of the path (no NUL), a view into the input. */
  piece: Uint8Array;
}

/**
 * One NKE_KEV_EVENT_EXEC message: header, nke_kev_exec_chunk and its piece
 * of the path. Checks class/subclass/code and that the piece lies inside
 * total_len, so a reassembler can copy it without further bounds checks.
 */
export function decodeExecChunkEvent(buf: Bytes): DecodeResult<ExecChunkEvent> {
  const m = decodeKernEventMsg(buf);
  if (!m.ok) return m;
  const { msg, data } = m.value;
  if (
    msg.kev_class !== NKE_KEV_CLASS ||
    msg.kev_subclass !== NKE_KEV_SUBCLASS_EXEC ||
    msg.event_code !== NKE_KEV_EVENT_EXEC
  ) {
    return fail(
      'bad_class',
      0,
      `kern_event_msg: class ${msg.kev_class}/${msg.kev_subclass} code ${msg.event_code} is not an exec event (${NKE_KEV_CLASS}/${NKE_KEV_SUBCLASS_EXEC} code ${NKE_KEV_EVENT_EXEC})`,
    );
  }
  if (data.length < KevExecChunkLayout.size) {
    return fail(
      'truncated',
      0,
      `exec event: ${data.length} data bytes, the chunk header needs ${KevExecChunkLayout.size}`,
    );
  }
  const chunk = readStructAt(toView(data), 0, KevExecChunkLayout) as KevExecChunk;
  const piece = data.subarray(KevExecChunkLayout.size);
  if (
    chunk.chunk_count < 1 ||
    chunk.chunk_count > NKE_KEV_MAX_CHUNKS ||
    chunk.chunk_index >= chunk.chunk_count
  ) {
    return fail(
      'bad_field',
      0,
      `exec event ${chunk.exec_id}: chunk ${chunk.chunk_index} of ${chunk.chunk_count} (count must be 1..${NKE_KEV_MAX_CHUNKS})`,
    );
  }
  if (chunk.total_len >= NKE_PATH_MAX || chunk.offset + piece.length > chunk.total_len) {
    return fail(
      'bad_field',
      0,
      `exec event ${chunk.exec_id}: piece ${chunk.offset}+${piece.length} outside path length ${chunk.total_len} (< ${NKE_PATH_MAX})`,
    );
  }
  return { ok: true, value: { msg, chunk, piece } };
}

/** Builds one exec kern_event_msg (the inverse of decodeExecChunkEvent; tests and emulators). */
export function encodeExecChunkEvent(
  msg: Omit<KernEventMsg, 'total_size'>,
  chunk: KevExecChunk,
  piece: Uint8Array,
): Uint8Array {
  const total = NKE_KEV_HEADER_SIZE + KevExecChunkLayout.size + piece.length;
  const out = new Uint8Array(total);
  encodeStruct(KernEventMsgLayout, { ...msg, total_size: total }, out, 0);
  encodeStruct(KevExecChunkLayout, chunk, out, NKE_KEV_HEADER_SIZE);
  out.set(piece, NKE_KEV_HEADER_SIZE + KevExecChunkLayout.size);
  return out;
}

// ---------------------------------------------------------------------------
// u64 across JSON
// ---------------------------------------------------------------------------

/** Parses a decimal u64 (as sent across JSON) exactly; throws AbiError otherwise. */
export function parseU64(text: string): bigint {
  if (!/^(0|[1-9][0-9]{0,19})$/.test(text)) throw new AbiError(`not a decimal u64: ${JSON.stringify(text)}`);
  const v = BigInt(text);
  if (v > 0xffffffffffffffffn) throw new AbiError(`u64 out of range: ${text}`);
  return v;
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

/** "127.0.0.1:80", "[::1]:443", "[fe80::1%4]:22"; "" when family is 0 (no address). */
export function formatAddr(a: NkeAddr): string {
  if (a.family === NKE_AF_INET) return `${formatIp(a.family, a.addr)}:${a.port}`;
  if (a.family === NKE_AF_INET6) return `[${formatIp(a.family, a.addr, a.scope_id)}]:${a.port}`;
  return formatIp(a.family, a.addr);
}

function parseIPv4(s: string): Uint8Array | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(parts[i])) return undefined;
    const n = Number(parts[i]);
    if (n > 255) return undefined;
    out[i] = n;
  }
  return out;
}

function parseIPv6(s: string): Uint8Array | undefined {
  let text = s;
  // A trailing dotted IPv4 (::ffff:1.2.3.4) stands for the last two groups:
  // rewrite it as hex groups and parse the rest uniformly.
  const lastColon = text.lastIndexOf(':');
  if (lastColon >= 0 && text.includes('.', lastColon)) {
    const v4 = parseIPv4(text.slice(lastColon + 1));
    if (!v4) return undefined;
    const hi = ((v4[0] << 8) | v4[1]).toString(16);
    const lo = ((v4[2] << 8) | v4[3]).toString(16);
    text = `${text.slice(0, lastColon + 1)}${hi}:${lo}`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const parse = (h: string): number[] | undefined => {
    if (h === '') return [];
    const out: number[] = [];
    for (const g of h.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const head = parse(halves[0]);
  const rest = halves.length === 2 ? parse(halves[1]) : [];
  if (!head || !rest) return undefined;
  let groups: number[];
  if (halves.length === 2) {
    const zeros = 8 - head.length - rest.length;
    if (zeros < 1) return undefined;
    groups = [...head, ...new Array<number>(zeros).fill(0), ...rest];
  } else {
    groups = head;
    if (groups.length !== 8) return undefined;
  }
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

/**
 * Parses an IP address alone ("10.0.0.1", "::1", "fe80::1%4") into the ABI's
 * family + 16-byte network-order array. Throws AbiError on anything else.
 */
export function parseIp(text: string): { family: number; addr: Uint8Array; scope_id: number } {
  const addr = new Uint8Array(16);
  const v4 = parseIPv4(text);
  if (v4) {
    addr.set(v4);
    return { family: NKE_AF_INET, addr, scope_id: 0 };
  }
  const pct = text.indexOf('%');
  const ipText = pct < 0 ? text : text.slice(0, pct);
  let scope_id = 0;
  if (pct >= 0) {
    const scope = text.slice(pct + 1);
    if (!/^[0-9]{1,10}$/.test(scope) || Number(scope) > 0xffffffff) {
      throw new AbiError(`IPv6 scope must be a numeric interface index: ${JSON.stringify(text)}`);
    }
    scope_id = Number(scope);
  }
  const v6 = parseIPv6(ipText);
  if (!v6) throw new AbiError(`not an IPv4 or IPv6 address: ${JSON.stringify(text)}`);
  return { family: NKE_AF_INET6, addr: v6, scope_id };
}

/** Parses "127.0.0.1:80" or "[::1]:443" / "[fe80::1%4]:22" into an nke_addr. Throws AbiError otherwise. */
export function parseAddr(text: string): NkeAddr {
  let host: string;
  let portText: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':') {
      throw new AbiError(`expected "[ipv6]:port", got ${JSON.stringify(text)}`);
    }
    host = text.slice(1, close);
    portText = text.slice(close + 2);
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0 || text.indexOf(':') !== colon) {
      throw new AbiError(`expected "a.b.c.d:port" or "[ipv6]:port", got ${JSON.stringify(text)}`);
    }
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
  }
  if (!/^(0|[1-9][0-9]{0,4})$/.test(portText) || Number(portText) > 65535) {
    throw new AbiError(`port must be 0..65535 in ${JSON.stringify(text)}`);
  }
  const ip = parseIp(host);
  if (ip.family === NKE_AF_INET6 && !text.startsWith('[')) {
    throw new AbiError(`IPv6 address needs brackets: "[${host}]:${portText}"`);
  }
  if (ip.family === NKE_AF_INET && text.startsWith('[')) {
    throw new AbiError(`IPv4 address must not be bracketed: "${host}:${portText}"`);
  }
  return { family: ip.family, port: Number(portText), scope_id: ip.scope_id, addr: ip.addr };
}

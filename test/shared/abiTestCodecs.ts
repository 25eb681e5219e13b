// The ABI codec's test-side half: encoders of what the filter sends and
// decoders of what it reads or what only the addon reads in production (open
// reply, kernel events), address text parsers, and the user-client status
// texts. Only tests (and the benches) use them; production code never imports
// from test/. Built on the codec of extension/src/shared/abi.ts (the layout
// tables come from the C headers: scripts/gen-abi.mjs).
import {
  AbiError,
  type Bytes,
  decodeFixed,
  type DecodeErrorCode,
  type DecodeResult,
  decodeStruct,
  encodeStruct,
  type KernEventMsg,
  KernEventMsgLayout,
  type KevExecChunk,
  KevExecChunkLayout,
  NKE_ABI_VERSION,
  NKE_AF_INET,
  NKE_AF_INET6,
  NKE_BUFFER_COUNT,
  NKE_HOLD_TOTAL_MAX_MS,
  NKE_KEV_CLASS,
  NKE_KEV_EVENT_EXEC,
  NKE_KEV_HEADER_SIZE,
  NKE_KEV_MAX_CHUNKS,
  NKE_KEV_SUBCLASS_EXEC,
  NKE_MAX_RULES,
  NKE_MODIFIED_MAX_LEN,
  NKE_OPEN_F_NONE,
  NKE_PATH_MAX,
  NKE_PUT_DATA_MAX_PIECE,
  NKE_RESPONSE_MAX_RELEASES,
  NKE_RESPONSE_MAX_VERDICTS,
  type NkeAddr,
  NkeError,
  NOTIFICATION_KINDS,
  type Notification,
  type OpenReply,
  OpenReplyLayout,
  OpenRequestLayout,
  type Release,
  ReleaseLayout,
  type ResponseHdr,
  ResponseHdrLayout,
  type Verdict,
  VerdictLayout,
  formatIp,
} from '../../extension/src/shared/abi';
import { parseIp } from '../../extension/src/shared/ipText';

function toView(buf: Bytes): DataView {
  if (buf instanceof DataView) return buf;
  if (buf instanceof ArrayBuffer) return new DataView(buf);
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

function fail<T>(code: DecodeErrorCode, offset: number, message: string): DecodeResult<T> {
  return { ok: false, error: { code, offset, message } };
}

// ---------------------------------------------------------------------------
// User-client status texts
// ---------------------------------------------------------------------------

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
// Records the filter sends, requests it reads
// ---------------------------------------------------------------------------

/** Encodes a notification record; hdr.type/size are set from kind. */
export function encodeNotification(n: Notification): Uint8Array {
  const entry = Object.entries(NOTIFICATION_KINDS).find(([, k]) => k.kind === n.kind);
  if (!entry) {
    throw new AbiError(`unknown notification kind ${JSON.stringify((n as { kind: unknown }).kind)}`);
  }
  const [type, { layout }] = entry;
  const rec = { ...n, hdr: { ...n.hdr, type: Number(type), size: layout.size } };
  return encodeStruct(layout, rec as never);
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

/** Input of NKE_SEL_OPEN. */
export function encodeOpenRequest(req: { client_pid: number; flags?: number }): Uint8Array {
  return encodeStruct(OpenRequestLayout, {
    abi_version: NKE_ABI_VERSION,
    flags: req.flags ?? NKE_OPEN_F_NONE,
    client_pid: req.client_pid,
  });
}

/** Decodes a response message (what the filter reads); validates sizes and counts. */
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
    verdicts.push(decodeStruct(VerdictLayout, v, off));
  }
  for (let i = 0; i < hdr.nreleases; i++, off += ReleaseLayout.size) {
    releases.push(decodeStruct(ReleaseLayout, v, off));
  }
  return { ok: true, value: { hdr, verdicts, releases } };
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
  const chunk = decodeStruct(KevExecChunkLayout, data);
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

/** Builds one exec kern_event_msg (the inverse of decodeExecChunkEvent). */
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

/** "127.0.0.1:80", "[::1]:443", "[fe80::1%4]:22"; "" when family is 0 (no address). */
export function formatAddr(a: NkeAddr): string {
  if (a.family === NKE_AF_INET) return `${formatIp(a.family, a.addr)}:${a.port}`;
  if (a.family === NKE_AF_INET6) return `[${formatIp(a.family, a.addr, a.scope_id)}]:${a.port}`;
  return formatIp(a.family, a.addr);
}

// parseIp is the extension's own (rules parse addresses with it too).
export { parseIp };

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

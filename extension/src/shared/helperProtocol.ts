// The JSON-RPC protocol between the helper process (owner of the filter
// client and the live model) and its clients: the extension, and the CLI's
// `nke verdict`/`nke status` talking to a running `nke watch`/`nke run`.
// Defined once here; imports no runtime but vscode-jsonrpc's types (the rule
// fields' types come from the table in ruleFields.ts, as types only).
//
// Authentication happens before any JSON-RPC: the connecting side writes one
// line `NKE-TOKEN <token>\n` (tokenSocket.ts); only then do messages flow.
import { NotificationType, RequestType, RequestType0 } from 'vscode-jsonrpc';
import type { RuleActionName, RuleMatch } from './ruleFields';

/**
 * Bumped on any incompatible change of this file. 2: byte-count changes go
 * as `bytes` tuples, and batches carry no history events (nke/history has them).
 * 3: what no client read is gone (hello's uid and platform, the snapshot's
 * historySize, the state's abiVersion, an exec's spawnerContext, the
 * notifications and historyDropped counters); error codes are NkeErrorCode.
 */
export const HELPER_PROTOCOL_VERSION = 3;

// ---- Rules -----------------------------------------------------------------

/** Fields a rule matches on; every field given must match: derived from the table RULE_FIELDS. */
export type { RuleMatch, RuleActionName } from './ruleFields';

/** hold: a person decides; report: seen, not held; pass: not even reported. */
export interface InterceptRule extends RuleMatch {
  action: RuleActionName;
  name?: string;
}

/** Every matching chunk is edited (all occurrences of find -> replace) and passed. */
export interface RewriteRule extends RuleMatch {
  find: string;
  replace: string;
  encoding?: 'utf8' | 'hex';
  name?: string;
  /**
   * How long (ms) bytes at the end of a chunk that may begin a match wait for
   * the stream's next chunk. Absent: until that chunk comes, the socket
   * closes, or shortly before the chunk's deadline, so a match split across
   * writes is found whatever the pause between them. A window shorter than a
   * pause misses the match (counted in rewriteMatchesMissed, and logged).
   */
  carryMs?: number;
}

export interface RulesConfig {
  /** for data no rule matches */
  default?: RuleActionName;
  intercept?: InterceptRule[];
  rewrite?: RewriteRule[];
  /** deadline of a held chunk before the filter re-injects it; 0 = filter default */
  holdTimeoutMs?: number;
}

// ---- Model views -------------------------------------------------------------

export interface Endpoint {
  address: string;
  port: number;
}

export type SocketState = 'open' | 'bound' | 'listening' | 'connecting' | 'connected' | 'closing' | 'closed';

export interface SocketView {
  /** "slot:gen": unique while the filter session lasts */
  id: string;
  pid: number;
  uid: number;
  process: string;
  family: 'ipv4' | 'ipv6';
  protocol: 'tcp' | 'udp' | 'other';
  state: SocketState;
  /** accepted (CONNECT_IN), not connected by this process */
  incoming?: boolean;
  local?: Endpoint;
  remote?: Endpoint;
  bytesIn: number;
  bytesOut: number;
  openedAt: number;
  closedAt?: number;
  /**
   * Attached before this helper connected (another window or an earlier
   * helper held the filter then): the filter reports a socket's process
   * and addresses only when it attaches, so they are not known here.
   */
  attachedEarlier?: boolean;
}

export interface ExecView {
  /** "execId" as decimal */
  id: string;
  pid: number;
  ppid: number;
  uid: number;
  path: string;
  /** false when a chunk of the path never arrived: path has gaps */
  complete: boolean;
  /** the path was longer than the filter carries (NKE_PATH_MAX): this is its start */
  truncated: boolean;
  /** emulator: the process runs under the shim (the filter's programs; Exec Events' default scope starts here) */
  underShim?: boolean;
  time: number;
}

export interface PendingView {
  /** the chunk id, decimal: the id used by verdict/getPayload */
  id: string;
  socketId: string;
  pid: number;
  process: string;
  direction: 'in' | 'out';
  size: number;
  streamOffset: number;
  local?: Endpoint;
  remote?: Endpoint;
  /** wall clock ms when the filter re-injects the original on its own */
  deadline: number;
  /** an edit staged in the helper (nke/stageEdit), sent by a replace verdict without bytes */
  staged?: { size: number };
  /**
   * wall clock ms when the filter held it (as the helper saw it): nke/extendHold's
   * holdMs counts from here, and deadline - heldAt is the hold the filter has now
   */
  heldAt: number;
}

/**
 * Why a payload is no longer pending: the filter released it (deadline,
 * client gone, socket gone, inject failed) or a client answered it.
 */
export type PendingRemovalReason =
  | 'timeout'
  | 'client-gone'
  | 'socket-gone'
  | 'inject-failed'
  /** the filter's byte budget ran out while later data waited behind it */
  | 'budget'
  /** the socket was closing: outbound sent as it was, inbound discarded */
  | 'socket-closing'
  /** the link to the filter was lost (emulator or kext gone); it fails open */
  | 'filter-gone'
  | 'allow'
  | 'drop'
  | 'replace'
  /** the filter released it for a reason this client does not know */
  | 'released';

/** The helper's own counters: totals since this helper process started. */
export interface Counters {
  /**
   * notification records passed over as malformed: those the addon's reader
   * skipped (larger than a record may be, or a header whose size is wrong)
   * and those the helper could not decode
   */
  malformedRecords: number;
  dataChunks: number;
  bytesIn: number;
  bytesOut: number;
  heldForPerson: number;
  autoPassed: number;
  rewritten: number;
  verdictsAllow: number;
  verdictsReplace: number;
  verdictsDrop: number;
  releasedByFilter: number;
  execs: number;
  execsIncomplete: number;
  /** chunks a rule would have held for a person but passed because the bytes
   * kept for pending payloads were at their limit (helper pendingBytesLimit) */
  pendingOverLimit?: number;
  /** sockets first seen after attach (attached before this helper connected) */
  socketsAdopted: number;
  /**
   * matches of a rewrite rule that went out unrewritten: the rest of a match
   * split across chunks came after the rule's carryMs, or the filter let the
   * carried chunks go first (deadline, socket closing on the kext)
   */
  rewriteMatchesMissed?: number;
  /** pieces of data the filter passed without reporting them (NKE_NT_DATA_GAP), and their bytes */
  dataGaps?: number;
  dataGapBytes?: number;
}

/** Counters all zero: a fresh model on either side of the link. */
export const emptyCounters = (): Counters => ({
  malformedRecords: 0,
  dataChunks: 0,
  bytesIn: 0,
  bytesOut: 0,
  heldForPerson: 0,
  autoPassed: 0,
  rewritten: 0,
  verdictsAllow: 0,
  verdictsReplace: 0,
  verdictsDrop: 0,
  releasedByFilter: 0,
  execs: 0,
  execsIncomplete: 0,
  pendingOverLimit: 0,
  socketsAdopted: 0,
  rewriteMatchesMissed: 0,
  dataGaps: 0,
  dataGapBytes: 0,
});

export type HistoryEvent =
  | {
      seq: number;
      time: number;
      kind: 'socket-open';
      socketId: string;
      pid: number;
      process: string;
      protocol: string;
    }
  | {
      seq: number;
      time: number;
      kind: 'socket-state';
      socketId: string;
      state: SocketState;
      local?: Endpoint;
      remote?: Endpoint;
    }
  | { seq: number; time: number; kind: 'socket-close'; socketId: string; bytesIn: number; bytesOut: number }
  | {
      seq: number;
      time: number;
      kind: 'data';
      socketId: string;
      chunkId: string;
      direction: 'in' | 'out';
      size: number;
      held: boolean;
    }
  | {
      seq: number;
      time: number;
      kind: 'verdict';
      chunkId: string;
      action: 'allow' | 'drop' | 'replace' | 'rewrite' | 'auto-pass';
      size: number;
    }
  | { seq: number; time: number; kind: 'released'; chunkId: string; reason: PendingRemovalReason }
  | {
      seq: number;
      time: number;
      /** the filter passed `size` bytes without reporting them (a hole in the capture) */
      kind: 'data-gap';
      socketId: string;
      direction: 'in' | 'out';
      size: number;
      /** 'no-buffer' | 'queue-full' */
      reason: string;
    }
  | {
      seq: number;
      time: number;
      kind: 'exec';
      execId: string;
      pid: number;
      ppid: number;
      path: string;
      complete: boolean;
      truncated: boolean;
    };

/**
 * The filter's own state record (nke_filter_state), named for what each
 * number counts: what the filter holds right now, and totals since the
 * filter started (the kext loaded, or nke-emud started), across all clients.
 */
export interface FilterStateView {
  captureMode: 'nothing' | 'all' | 'rules' | 'unknown';
  now: {
    /** sockets attached now */
    socketsLive: number;
    /** chunks held now, awaiting a verdict */
    chunksHeld: number;
    /** data buffers in use now */
    buffersInUse: number;
    /** bytes the filter keeps now: held, queued behind held data, staged edits, being re-injected */
    bytesKept: number;
  };
  sinceStart: {
    socketsAttached: number;
    chunksHeld: number;
    bytesHeld: number;
    chunksReported: number;
    /** passed untouched because no buffer was free (fail-open) */
    chunksPassedPoolFull: number;
    /** released by the filter itself (deadline, client gone, socket gone) */
    chunksAutoReleased: number;
    chunksDropped: number;
    chunksModified: number;
    /** would have passed, waited behind held data of their socket (stream order) */
    chunksQueued: number;
    /** not held because the byte budget was used up */
    chunksPassedBudget: number;
    responsesRejected: number;
    /** notifications lost because the queue was full */
    notificationsLost: number;
    /** sockets not filtered because the socket table was full */
    socketsUntracked: number;
    /** verdicts and releases skipped because their chunk was already released: answers that came too late */
    staleEntries: number;
  };
}

export interface FilterStatus {
  connected: boolean;
  /** 'emulator' or 'iokit' */
  transport: string;
  sessionId?: string;
  /** the filter's own state, when connected */
  state?: FilterStateView;
  /** why the filter is not connected, when it is not */
  error?: FilterError;
  paused: boolean;
}

export interface Snapshot {
  filter: FilterStatus;
  sockets: SocketView[];
  execs: ExecView[];
  pending: PendingView[];
  counters: Counters;
  rules: RulesConfig;
  /** the capture history of payload bytes (absent: the helper keeps none) */
  capture?: CaptureStatus;
}

/** The helper's capture history (payload bytes for pcapng export and live capture). */
export interface CaptureStatus {
  /** ring size in bytes (nke.captureHistoryMiB) */
  limitBytes: number;
  /** payload bytes kept now */
  bytesKept: number;
  /** index entries (chunks, gaps, socket opens and closes) */
  entries: number;
  /** chunks gone, oldest first, to make room */
  evicted: number;
  /** holes marked (bytes passed unreported) and their bytes */
  gaps: number;
  gapBytes: number;
  /** why bytes are not being kept (the history file cannot be written) */
  writeError?: string;
}

/** What a pcapng export or a live capture stream contained. */
export interface CaptureExportResult {
  path: string;
  packets: number;
  /** bytes of pcapng written */
  bytes: number;
  sockets: number;
  chunks: number;
  gaps: number;
}

/**
 * A live socket whose bytes moved and nothing else: [id, bytesIn, bytesOut]
 * (totals, not deltas). On a busy machine nearly every change is one of
 * these, so they go compact instead of as whole SocketViews.
 */
export type SocketBytes = [id: string, bytesIn: number, bytesOut: number];

/** One batched update (at most ~30 a second). */
export interface UpdateBatch {
  /** sockets new or changed beyond their bytes (state, addresses, owner) */
  sockets: SocketView[];
  /** sockets already sent whose byte counts alone changed (absent: none) */
  bytes?: SocketBytes[];
  socketsRemoved: string[];
  execs: ExecView[];
  pendingAdded: PendingView[];
  /** pending payloads already sent whose view changed (an extended deadline) */
  pendingUpdated?: PendingView[];
  pendingRemoved: { id: string; reason: PendingRemovalReason }[];
  counters: Counters;
  filter?: FilterStatus;
}

// ---- Requests (client -> helper) ---------------------------------------------

export interface HelloResult {
  protocolVersion: number;
  /** the helper's pid (nke status names the process that holds the filter) */
  pid: number;
}

/** Identifies the helper; the first request a client sends. */
export const Hello = new RequestType0<HelloResult, void>('nke/hello');
/** The filter's connection state and counters. */
export const GetStatus = new RequestType0<FilterStatus, void>('nke/status');
/** The whole live model, for a client that (re)connects. */
export const GetSnapshot = new RequestType0<Snapshot, void>('nke/snapshot');
/** Connects the filter client (kext or emulator) if not connected. */
export const ConnectFilter = new RequestType0<FilterStatus, void>('nke/connect');
/** Closes the filter client: the filter re-injects everything held. */
export const DisconnectFilter = new RequestType0<FilterStatus, void>('nke/disconnect');
/** Replaces the intercept and rewrite rules (validated; error names the field). */
export const SetRules = new RequestType<{ rules: RulesConfig }, void, void>('nke/setRules');
/** Paused: nothing is held, held chunks pass at once. */
export const SetPaused = new RequestType<{ paused: boolean }, void, void>('nke/setPaused');
/** Bytes of a pending payload (base64), or of its staged edit with staged; error for an unknown id. */
export const GetPayload = new RequestType<
  { id: string; staged?: boolean },
  { id: string; size: number; base64: string },
  void
>('nke/getPayload');
/**
 * Keeps an edit for a pending payload in the helper (nothing is sent):
 * base64 absent clears it. Answers the payload's view (its `staged`).
 */
export const StageEdit = new RequestType<{ id: string; base64?: string }, PendingView, void>('nke/stageEdit');
/** Final verdict on a pending payload; replace carries the new bytes (base64), or sends the staged edit without them. */
export const Verdict = new RequestType<
  { id: string; action: 'allow' | 'drop' | 'replace'; base64?: string },
  void,
  void
>('nke/verdict');
/**
 * Keeps a pending payload held longer: the filter's deadline becomes heldAt +
 * holdMs (never earlier than it is; 1..NKE_HOLD_TOTAL_MAX_MS). Answers the
 * payload's view with its new deadline; UnknownPayload (with the reason in
 * data.reason) when it is no longer held.
 */
export const ExtendHold = new RequestType<{ id: string; holdMs: number }, PendingView, void>(
  'nke/extendHold',
);
/** History events with seq > since (at most limit). */
export const GetHistory = new RequestType<{ since?: number; limit?: number }, HistoryEvent[], void>(
  'nke/history',
);
/** Forgets closed sockets, execs and history. */
export const Clear = new RequestType0<void, void>('nke/clear');
/**
 * Writes the capture history as pcapng to `path` (absolute; created 0600 or
 * truncated), all sockets or the ids given. Streams: the helper's memory
 * stays flat however large the history.
 */
export const ExportPcapng = new RequestType<
  {
    path: string;
    sockets?: string[];
    process?: string;
    /** the requesting user: a helper running as root hands them the file */
    owner?: { uid: number; gid: number };
  },
  CaptureExportResult,
  void
>('nke/exportPcapng');
/**
 * Streams pcapng of what the helper sees, live, into the FIFO at `path`
 * (Wireshark's extcap --fifo), from now on (fromHistory: from the oldest
 * entry the history holds). Answers
 * when the stream ends: its reader closed the FIFO, the client's connection
 * closed, or the helper stopped.
 */
export const StreamCapture = new RequestType<
  {
    path: string;
    sockets?: string[];
    process?: string;
    /** begin with what the history holds */ fromHistory?: boolean;
  },
  CaptureExportResult,
  void
>('nke/streamCapture');

// ---- Notifications (helper -> client) ----------------------------------------

/** Batched model changes. */
export const Update = new NotificationType<UpdateBatch>('nke/update');
/** The filter connection ended on its own (emulator stopped, kext unloaded). */
export const FilterClosed = new NotificationType<FilterError>('nke/filterClosed');
/** A line for the extension's log channel. */
export const Log = new NotificationType<{ level: 'info' | 'warn' | 'error'; message: string }>('nke/log');

/**
 * `data` of an UnknownPayload error: the payload was known and is gone, and
 * why (absent when the helper never saw the id, or forgot it).
 */
export interface UnknownPayloadData {
  code: 'NKE_UNKNOWN_PAYLOAD';
  reason?: PendingRemovalReason;
}

/**
 * Every string error code of this boundary, and what it means: the code of
 * an error's `data.code` (ResponseError), of FilterStatus.error and of
 * FilterClosed, and of the errors the helper, the addon and the extension's
 * own links raise. Written here once: producers and matchers use the
 * NkeErrorCode type, so a misspelt code fails type-checking, and a unit test
 * (test/unit/errorCodes.test.ts) checks every code the addon's sources throw
 * is in this table.
 */
export const NKE_ERROR_CODES = {
  // ---- the filter link (the addon: native/addon/src) ----
  NKE_BUSY: 'another client has the filter open (another window, nke watch or nke run)',
  NKE_EMU_NOT_RUNNING: "nothing answers on the emulator's ctl.sock: nke-emud is not running there",
  NKE_NOT_LOADED: 'the kext is not loaded (no service, or its kernel-event vendor is not registered)',
  NKE_NOT_PERMITTED: 'the filter refused this client: not root (kext), or another user (emulator)',
  NKE_NOT_PRIVATE: "a runtime directory or listener that is not this user's private one",
  NKE_BAD_PATH: 'a path the helper cannot use (not absolute, or too long for a socket address)',
  NKE_VERSION: "the filter's ABI version or geometry differs from the addon's",
  NKE_PROTOCOL: 'the filter sent a malformed or short reply',
  NKE_GONE: 'the filter went away (emulator stopped, kext unloaded, its socket closed)',
  NKE_NOT_OPEN: 'the filter client is closed',
  NKE_ALREADY_OPEN: 'the filter client (or event socket) is already open',
  NKE_TOO_LARGE: 'a request larger than the filter accepts',
  NKE_QUEUE_CORRUPT: "the notification queue's head, tail or size is out of range",
  NKE_BAD_VENDOR: 'a kernel-event vendor string of the wrong length',
  NKE_VENDOR_NOT_REGISTERED: 'the emulator has no kernel-event vendor of that name',
  NKE_CAPTURE_FILE: "the capture history's file descriptor cannot be used",
  NKE_SYSTEM: 'a system call failed (the message names it)',
  NKE_ADDON_MISSING: 'the native addon is not built',
  // ---- the helper (engine, capture export) ----
  NKE_NOT_CONNECTED: "the helper's filter client is not connected",
  NKE_UNKNOWN_PAYLOAD: 'no payload is held under this id (data.reason: why it is gone, when known)',
  NKE_NO_STAGED_EDIT: 'the payload has no staged edit',
  NKE_BAD_VERDICT: 'a verdict, edit or hold the filter would refuse (size, range, the pending bound)',
  NKE_NO_CAPTURE: 'no capture history is kept (its size is 0)',
  NKE_EXPORT_FILE: 'the pcapng export file cannot be created or written',
  NKE_FIFO: "the live capture's FIFO cannot be used",
  NKE_ERROR: 'an error that carried no code of its own',
  // ---- the extension's and the CLI's own links ----
  NKE_TAKEN_OVER: 'another window took the filter over from this one',
  NKE_NO_HELPER: 'nothing listens on the helper or control socket',
  NKE_REFUSED: 'the other end of a token socket refused the token, or did not answer',
} as const satisfies Record<string, string>;

/**
 * The filter's own refusal (enum nke_error of nke_abi.h, by the name the
 * addon gives it: "NKE_ERR_VERSION"); the ABI header is where those live.
 */
export type FilterErrorName = `NKE_ERR_${string}`;

export type NkeErrorCode = keyof typeof NKE_ERROR_CODES | FilterErrorName;

/** `code` as an NkeErrorCode, when it is one (codes read from an error's data or the addon). */
export function asNkeErrorCode(code: unknown): NkeErrorCode | undefined {
  if (typeof code !== 'string') return undefined;
  return Object.hasOwn(NKE_ERROR_CODES, code) || /^NKE_ERR_[A-Z_]+$/.test(code)
    ? (code as NkeErrorCode)
    : undefined;
}

/** Why the filter is not connected, or why its connection ended. */
export interface FilterError {
  code: NkeErrorCode;
  message: string;
}

/** JSON-RPC error codes of this protocol (besides the standard ones). */
export const enum HelperErrorCode {
  UnknownPayload = -32001,
  FilterNotConnected = -32002,
  FilterRefused = -32003,
  MessageTooLarge = -32004,
  /** no capture history (nke.captureHistoryMiB is 0), or the export target cannot be written */
  CaptureFailed = -32005,
}

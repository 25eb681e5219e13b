// The JSON-RPC protocol between the helper process (owner of the filter
// client and the live model) and its clients: the extension, and the CLI's
// `nke verdict`/`nke status` talking to a running `nke watch`/`nke run`.
// Defined once here; imports no runtime but vscode-jsonrpc's types.
//
// Authentication happens before any JSON-RPC: the connecting side writes one
// line `NKE-TOKEN <token>\n` (tokenSocket.ts); only then do messages flow.
import { NotificationType, RequestType, RequestType0 } from 'vscode-jsonrpc';

/** Bumped on any incompatible change of this file. */
export const HELPER_PROTOCOL_VERSION = 1;

// ---- Rules -----------------------------------------------------------------

/** Fields a rule matches on; every field given must match. */
export interface RuleMatch {
  pid?: number;
  /** exact process name (comm) */
  process?: string;
  direction?: 'in' | 'out' | 'both';
  protocol?: 'tcp' | 'udp';
  /** a port or an inclusive [min, max] */
  localPort?: number | [number, number];
  remotePort?: number | [number, number];
  /** "127.0.0.1", "10.0.0.0/8", "::1/128" */
  localAddr?: string;
  remoteAddr?: string;
}

/** hold: a person decides; report: seen, not held; pass: not even reported. */
export interface InterceptRule extends RuleMatch {
  action: 'hold' | 'report' | 'pass';
  name?: string;
}

/** Every matching chunk is edited (all occurrences of find -> replace) and passed. */
export interface RewriteRule extends RuleMatch {
  find: string;
  replace: string;
  encoding?: 'utf8' | 'hex';
  name?: string;
}

export interface RulesConfig {
  /** for data no rule matches */
  default?: 'hold' | 'report' | 'pass';
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
  spawnerContext: boolean;
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
}

export interface Counters {
  notifications: number;
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
  historyDropped: number;
  /** chunks a rule would have held for a person but passed because the bytes
   * kept for pending payloads were at their limit (helper pendingBytesLimit) */
  pendingOverLimit?: number;
  /** sockets first seen after attach (attached before this helper connected) */
  socketsAdopted: number;
}

/** Counters all zero: a fresh model on either side of the link. */
export const emptyCounters = (): Counters => ({
  notifications: 0,
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
  historyDropped: 0,
  pendingOverLimit: 0,
  socketsAdopted: 0,
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
  | { seq: number; time: number; kind: 'released'; chunkId: string; reason: string }
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

export interface FilterStatus {
  connected: boolean;
  /** 'emulator' or 'iokit' */
  transport: string;
  sessionId?: string;
  /** the filter's own counters (nke_filter_state), when connected */
  state?: Record<string, number>;
  /** why the filter is not connected, when it is not */
  error?: { code: string; message: string };
  paused: boolean;
}

export interface Snapshot {
  filter: FilterStatus;
  sockets: SocketView[];
  execs: ExecView[];
  pending: PendingView[];
  counters: Counters;
  rules: RulesConfig;
  historySize: number;
}

/** One batched update (at most ~30 a second). */
export interface UpdateBatch {
  sockets: SocketView[];
  socketsRemoved: string[];
  execs: ExecView[];
  pendingAdded: PendingView[];
  pendingRemoved: { id: string; reason: string }[];
  events: HistoryEvent[];
  counters: Counters;
  filter?: FilterStatus;
}

// ---- Requests (client -> helper) ---------------------------------------------

export interface HelloResult {
  protocolVersion: number;
  pid: number;
  uid: number;
  platform: string;
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
/** Bytes of a pending payload (base64); error for an unknown id. */
export const GetPayload = new RequestType<{ id: string }, { id: string; size: number; base64: string }, void>(
  'nke/getPayload',
);
/** Final verdict on a pending payload; replace carries the new bytes (base64). */
export const Verdict = new RequestType<
  { id: string; action: 'allow' | 'drop' | 'replace'; base64?: string },
  void,
  void
>('nke/verdict');
/** History events with seq > since (at most limit). */
export const GetHistory = new RequestType<{ since?: number; limit?: number }, HistoryEvent[], void>(
  'nke/history',
);
/** Forgets closed sockets, execs and history. */
export const Clear = new RequestType0<void, void>('nke/clear');

// ---- Notifications (helper -> client) ----------------------------------------

/** Batched model changes. */
export const Update = new NotificationType<UpdateBatch>('nke/update');
/** The filter connection ended on its own (emulator stopped, kext unloaded). */
export const FilterClosed = new NotificationType<{ code: string; message: string }>('nke/filterClosed');
/** A line for the extension's log channel. */
export const Log = new NotificationType<{ level: 'info' | 'warn' | 'error'; message: string }>('nke/log');

/** JSON-RPC error codes of this protocol (besides the standard ones). */
export const enum HelperErrorCode {
  UnknownPayload = -32001,
  FilterNotConnected = -32002,
  FilterRefused = -32003,
  MessageTooLarge = -32004,
}

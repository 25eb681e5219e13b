// Serves the helper protocol (shared/helperProtocol.ts) for one engine on one
// JSON-RPC connection: validates every request's parameters (a wrong type is
// an InvalidParams error, never a crash), forwards batched updates.
import type { MessageConnection } from 'vscode-jsonrpc';
import { ErrorCodes, ResponseError } from 'vscode-jsonrpc';
import * as P from '../shared/helperProtocol';
import { EngineError, type FilterEngine } from './engine';
import { CaptureTargetError, type ExportSelection } from './captureExport';
import type { ModelUpdate } from './model';
import { RulesError } from './rules';
import { NKE_HOLD_TOTAL_MAX_MS, NKE_MODIFIED_MAX_LEN } from '../shared/abi';

function invalid(message: string): ResponseError<void> {
  return new ResponseError(ErrorCodes.InvalidParams, message);
}

function asObject(p: unknown, method: string): Record<string, unknown> {
  if (typeof p !== 'object' || p === null || Array.isArray(p)) {
    throw invalid(`${method}: params must be an object`);
  }
  return p as Record<string, unknown>;
}

/** wrap() for a request that answers later: its rejection mapped the same way. */
function wrapAsync<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return wrap(fn).catch((e: unknown) =>
      wrap(() => {
        throw e;
      }),
    );
  } catch (e) {
    return Promise.reject(e);
  }
}

/** Socket ids and process name of an export request (each optional). */
function selection(o: Record<string, unknown>, method: string): ExportSelection {
  const sel: ExportSelection = {};
  if (o.sockets !== undefined) {
    if (!Array.isArray(o.sockets) || !o.sockets.every((x) => typeof x === 'string' && /^\d+:\d+$/.test(x))) {
      throw invalid(`${method}: sockets must be socket ids like "3:1"`);
    }
    sel.sockets = o.sockets as string[];
  }
  if (o.process !== undefined) {
    if (typeof o.process !== 'string' || !o.process) {
      throw invalid(`${method}: process must be a process name`);
    }
    sel.process = o.process;
  }
  return sel;
}

function absolutePath(o: Record<string, unknown>, method: string): string {
  if (typeof o.path !== 'string' || !o.path.startsWith('/')) {
    throw invalid(`${method}: path must be an absolute path`);
  }
  return o.path;
}

/** The JSON-RPC error of an engine error, by its code; any other code: FilterRefused. */
const RPC_ERROR_OF: Partial<Record<P.NkeErrorCode, number>> = {
  NKE_UNKNOWN_PAYLOAD: P.HelperErrorCode.UnknownPayload,
  NKE_NOT_CONNECTED: P.HelperErrorCode.FilterNotConnected,
  NKE_BAD_VERDICT: ErrorCodes.InvalidParams,
  NKE_NO_STAGED_EDIT: ErrorCodes.InvalidParams,
  NKE_NO_CAPTURE: P.HelperErrorCode.CaptureFailed,
};

/** Maps engine and addon errors to JSON-RPC errors that keep their cause. */
function wrap<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof ResponseError) throw e;
    if (e instanceof RulesError) throw invalid(e.message);
    if (e instanceof EngineError) {
      const code = RPC_ERROR_OF[e.code] ?? P.HelperErrorCode.FilterRefused;
      throw new ResponseError(code, e.message, { ...e.data, code: e.code });
    }
    if (e instanceof CaptureTargetError) {
      throw new ResponseError(P.HelperErrorCode.CaptureFailed, e.message, { code: e.code });
    }
    const err = e as Error & { code?: unknown };
    throw new ResponseError(P.HelperErrorCode.FilterRefused, err.message, {
      code: P.asNkeErrorCode(err.code) ?? ('NKE_ERROR' satisfies P.NkeErrorCode),
    });
  }
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Wires one connection to the engine; returns a function that unwires it. */
export function serveHelperProtocol(conn: MessageConnection, engine: FilterEngine): () => void {
  conn.onRequest(P.Hello, () => ({
    protocolVersion: P.HELPER_PROTOCOL_VERSION,
    pid: process.pid,
  }));
  conn.onRequest(P.GetStatus, () => wrap(() => engine.status()));
  conn.onRequest(P.GetSnapshot, () => wrap(() => engine.snapshot()));
  conn.onRequest(P.ConnectFilter, () => wrap(() => engine.connect()));
  conn.onRequest(P.DisconnectFilter, () => wrap(() => engine.disconnect()));
  conn.onRequest(P.SetRules, (p: unknown) =>
    wrap(() => {
      const o = asObject(p, 'nke/setRules');
      engine.setRules(o.rules);
    }),
  );
  conn.onRequest(P.SetPaused, (p: unknown) =>
    wrap(() => {
      const o = asObject(p, 'nke/setPaused');
      if (typeof o.paused !== 'boolean') throw invalid('nke/setPaused: paused must be a boolean');
      engine.setPaused(o.paused);
    }),
  );
  conn.onRequest(P.GetPayload, (p: unknown) =>
    wrap(() => {
      const o = asObject(p, 'nke/getPayload');
      if (typeof o.id !== 'string' || !/^\d+$/.test(o.id)) {
        throw invalid('nke/getPayload: id must be a decimal string');
      }
      if (o.staged !== undefined && typeof o.staged !== 'boolean') {
        throw invalid('nke/getPayload: staged must be a boolean');
      }
      const b = engine.getPayload(o.id, o.staged === true);
      return { id: o.id, size: b.length, base64: b.toString('base64') };
    }),
  );
  conn.onRequest(P.StageEdit, (p: unknown) =>
    wrap(() => {
      const o = asObject(p, 'nke/stageEdit');
      if (typeof o.id !== 'string' || !/^\d+$/.test(o.id)) {
        throw invalid('nke/stageEdit: id must be a decimal string');
      }
      if (o.base64 !== undefined && (typeof o.base64 !== 'string' || !BASE64.test(o.base64))) {
        throw invalid('nke/stageEdit: base64 is the edit, base64-encoded (absent: clear it)');
      }
      return engine.stageEdit(o.id, o.base64 === undefined ? undefined : Buffer.from(o.base64, 'base64'));
    }),
  );
  conn.onRequest(P.Verdict, (p: unknown) =>
    wrap(() => {
      const o = asObject(p, 'nke/verdict');
      if (typeof o.id !== 'string' || !/^\d+$/.test(o.id)) {
        throw invalid('nke/verdict: id must be a decimal string');
      }
      if (o.action !== 'allow' && o.action !== 'drop' && o.action !== 'replace') {
        throw invalid('nke/verdict: action must be "allow", "drop" or "replace"');
      }
      let bytes: Buffer | undefined;
      if (o.action === 'replace' && o.base64 !== undefined) {
        if (typeof o.base64 !== 'string' || !BASE64.test(o.base64)) {
          throw invalid('nke/verdict: base64 is the new bytes, base64-encoded (absent: the staged edit)');
        }
        bytes = Buffer.from(o.base64, 'base64');
        if (bytes.length > NKE_MODIFIED_MAX_LEN) {
          throw invalid(`nke/verdict: replacement of ${bytes.length} bytes exceeds ${NKE_MODIFIED_MAX_LEN}`);
        }
      } else if (o.base64 !== undefined) throw invalid('nke/verdict: base64 is only for replace');
      engine.verdict(o.id, o.action, bytes);
    }),
  );
  conn.onRequest(P.ExtendHold, (p: unknown) =>
    wrap(() => {
      const o = asObject(p, 'nke/extendHold');
      if (typeof o.id !== 'string' || !/^\d+$/.test(o.id)) {
        throw invalid('nke/extendHold: id must be a decimal string');
      }
      if (
        !Number.isInteger(o.holdMs) ||
        (o.holdMs as number) < 1 ||
        (o.holdMs as number) > NKE_HOLD_TOTAL_MAX_MS
      ) {
        throw invalid(
          `nke/extendHold: holdMs must be an integer 1..${NKE_HOLD_TOTAL_MAX_MS} (ms of total hold)`,
        );
      }
      return engine.extendHold(o.id, o.holdMs as number);
    }),
  );
  conn.onRequest(P.GetHistory, (p: unknown) =>
    wrap(() => {
      const o = p === undefined || p === null ? {} : asObject(p, 'nke/history');
      const since = o.since ?? 0;
      const limit = o.limit ?? 1000;
      if (!Number.isInteger(since) || (since as number) < 0) {
        throw invalid('nke/history: since must be an integer >= 0');
      }
      if (!Number.isInteger(limit) || (limit as number) < 1 || (limit as number) > 100000) {
        throw invalid('nke/history: limit must be 1..100000');
      }
      return engine.model.eventsSince(since as number, limit as number);
    }),
  );
  conn.onRequest(P.Clear, () => wrap(() => engine.clear()));
  conn.onRequest(P.ExportPcapng, (p: unknown) =>
    wrapAsync(() => {
      const o = asObject(p, 'nke/exportPcapng');
      const sel = selection(o, 'nke/exportPcapng');
      let owner: { uid: number; gid: number } | undefined;
      if (o.owner !== undefined) {
        const w = o.owner as { uid?: unknown; gid?: unknown };
        if (typeof w !== 'object' || w === null || !Number.isInteger(w.uid) || !Number.isInteger(w.gid)) {
          throw invalid('nke/exportPcapng: owner must be {uid, gid} integers');
        }
        owner = { uid: w.uid as number, gid: w.gid as number };
      }
      return engine.exportPcapng(absolutePath(o, 'nke/exportPcapng'), sel, owner);
    }),
  );
  // Live streams end with this connection (the extcap process exits when
  // Wireshark stops the capture) or when the FIFO's reader goes away.
  const streams = new AbortController();
  conn.onRequest(P.StreamCapture, (p: unknown) =>
    wrapAsync(() => {
      const o = asObject(p, 'nke/streamCapture');
      const sel = selection(o, 'nke/streamCapture');
      if (o.fromHistory !== undefined && typeof o.fromHistory !== 'boolean') {
        throw invalid('nke/streamCapture: fromHistory must be a boolean');
      }
      return engine.streamCapture(
        absolutePath(o, 'nke/streamCapture'),
        sel,
        streams.signal,
        o.fromHistory === true,
      );
    }),
  );

  // The history events stay here (nke/history serves them): the extension never shows them.
  const onUpdate = ({ events: _events, ...batch }: ModelUpdate) =>
    void conn.sendNotification(P.Update, batch satisfies P.UpdateBatch).catch(() => {});
  const onClosed = (e: P.FilterError) => void conn.sendNotification(P.FilterClosed, e).catch(() => {});
  engine.on('update', onUpdate);
  engine.on('filterClosed', onClosed);
  return () => {
    streams.abort();
    engine.off('update', onUpdate);
    engine.off('filterClosed', onClosed);
  };
}

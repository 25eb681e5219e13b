// What the commands ask of the helper process (docs/architecture.md, The data
// path: the helper owns the addon, the filter connection and the live model
// feed), over HelperClient: starts the helper process on first use, keeps
// its JSON-RPC connection, and feeds the WorkbenchModel from it (a snapshot on
// every (re)connect, then the helper's update batches as they come). When the
// helper dies the model keeps its last state marked stale and onDidFail
// fires, so the window can offer Restart. No `vscode` import.
//
// Single-threaded (the extension host's event loop). `generation` guards
// against a late event of a helper that was already replaced: only the
// current connection may change the model.
import type { MessageConnection } from 'vscode-jsonrpc';
import { ResponseError } from 'vscode-jsonrpc';
import { ActionableError } from '../commands/actionableError';
import type { WorkbenchModel } from '../model/workbenchModel';
import {
  asNkeErrorCode,
  type CaptureExportResult,
  Clear,
  ConnectFilter,
  DisconnectFilter,
  ExportPcapng,
  ExtendHold,
  FilterClosed,
  type FilterStatus,
  GetPayload,
  GetSnapshot,
  GetStatus,
  Log,
  type NkeErrorCode,
  type PendingRemovalReason,
  type PendingView,
  type RulesConfig,
  SetPaused,
  SetRules,
  type UnknownPayloadData,
  Update,
  Verdict,
} from '../shared/helperProtocol';
import { describeOwner, type FilterOwnership } from './filterOwner';
import { noLongerHeld } from '../shared/payloadReasons';
import { HelperClient } from './helperClient';

export interface SessionLog {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export interface HelperSessionOptions {
  /** dist/helper.js */
  helperScript: string;
  /** Node or Electron binary (default process.execPath: the extension host's own). */
  runtime?: string;
  /** Read at each helper start: the settings may have changed. */
  launch: () => {
    /** macOS kext mode: the helper runs as root through an administrator prompt. */
    asAdministrator: boolean;
    /** nke.captureHistoryMiB */
    captureHistoryMiB?: number;
    /** NKE_EMU_DIR and such, for the helper's addon. */
    env: NodeJS.ProcessEnv;
    /** pushed to the helper before the filter opens */
    rules: RulesConfig;
  };
  model: WorkbenchModel;
  log: SessionLog;
  /** Which window holds the filter (owner file, take-over requests); none: no coordination. */
  ownership?: FilterOwnership;
}

/** Why the helper or the filter went away, for the window to show with Restart. */
export interface SessionFailure {
  kind: 'helper-exited' | 'filter-closed';
  message: string;
}

/** The error code carried in a helper ResponseError's data (NKE_ERROR_CODES). */
function filterErrorCode(e: unknown): NkeErrorCode | undefined {
  if (!(e instanceof ResponseError)) return undefined;
  return asNkeErrorCode((e.data as { code?: unknown } | undefined)?.code);
}

/** What a running helper keeps of its launch settings: a change needs a new helper. */
function launchKeyOf(l: { asAdministrator: boolean; env: NodeJS.ProcessEnv }): string {
  return JSON.stringify({ asAdministrator: l.asAdministrator, env: l.env });
}

/** A helper ResponseError's data.reason (why a payload is no longer pending). */
function removalReason(e: unknown): PendingRemovalReason | undefined {
  if (!(e instanceof ResponseError)) return undefined;
  // data is UnknownPayloadData when the helper knew why; checked, as anything from the wire.
  const data = e.data as { [K in keyof UnknownPayloadData]?: unknown } | undefined;
  return typeof data?.reason === 'string' ? (data.reason as PendingRemovalReason) : undefined;
}

/** The payload is no longer held: released by the filter or already answered. */
export class PayloadGoneError extends ActionableError {
  constructor(
    readonly payloadId: string,
    readonly reason: PendingRemovalReason | undefined,
  ) {
    super(noLongerHeld(payloadId, reason));
    this.name = 'PayloadGoneError';
  }
}

/** The emulator's endpoint did not answer: NKE: Load Filter can start it. */
export class EmulatorNotRunningError extends ActionableError {
  constructor(message: string) {
    super(`${message}. NKE: Load Filter starts the emulator.`, {
      title: 'Load Filter',
      command: 'nke.loadFilter',
    });
    this.name = 'EmulatorNotRunningError';
  }
}

/** The filter serves another client: another window named in the owner file, or nke watch. */
export class FilterBusyError extends ActionableError {
  constructor(
    message: string,
    readonly ownerWindow?: string,
  ) {
    super(
      ownerWindow
        ? `the filter is in use by another window: ${ownerWindow}. Take Over moves it (and the live views) here`
        : `${message}: disconnect the other client (nke watch, nke run, another window) first`,
      ownerWindow ? { title: 'Take Over', command: 'nke.takeOver' } : undefined,
    );
    this.name = 'FilterBusyError';
  }
}

/** A person's final word on a held chunk; 'replace' sends edited bytes. */
export type PayloadVerdict = 'allow' | 'drop' | 'replace';

export class HelperSession {
  private client?: HelperClient;
  private conn?: MessageConnection;
  private generation = 0;
  private readonly failureListeners = new Set<(f: SessionFailure) => void>();
  private readonly yieldListeners = new Set<(by: string) => void>();
  private starting?: Promise<MessageConnection>;
  /** The launch settings the running helper was started with (a change restarts it at the next Connect). */
  private launchKey?: string;

  constructor(private readonly opts: HelperSessionOptions) {}

  /** The helper's pid while one runs (tests kill it to check recovery). */
  get helperPid(): number | undefined {
    return this.client?.pid;
  }

  get isConnected(): boolean {
    return this.conn !== undefined;
  }

  onDidFail(listener: (f: SessionFailure) => void): { dispose(): void } {
    this.failureListeners.add(listener);
    return { dispose: () => this.failureListeners.delete(listener) };
  }

  /** Fires when another window took the filter over from this one (by: that window). */
  onDidYield(listener: (by: string) => void): { dispose(): void } {
    this.yieldListeners.add(listener);
    return { dispose: () => this.yieldListeners.delete(listener) };
  }

  /** The launch settings differ from the running helper's: true when a new helper is needed. */
  launchChanged(): boolean {
    return this.launchKey !== undefined && this.launchKey !== launchKeyOf(this.opts.launch());
  }

  /** Starts the helper if needed, opens the filter and loads the helper's whole model. */
  async connect(): Promise<FilterStatus> {
    const { model } = this.opts;
    const live = model.link.status === 'connected' || model.link.status === 'paused';
    if (this.conn && !live && this.launchChanged()) {
      // Settings the helper starts with (nke.emulatorRuntimeDir, nke.mode)
      // changed since it started, and it holds no filter:
      // a new one takes them, so a changed setting applies at this Connect.
      this.opts.log.info('the helper settings changed since it started: starting a new helper for them');
      this.stopHelper();
    }
    model.setLink({
      status: 'connecting',
      staleReason: model.link.staleReason,
      recoverWith: model.link.recoverWith,
    });
    try {
      const conn = await this.helper();
      const status = await conn.sendRequest(ConnectFilter);
      await this.resync(conn);
      await this.claimFilter(conn);
      return status;
    } catch (e) {
      const err = this.explain(e);
      model.setLink({
        status: model.stale ? 'failed' : 'disconnected',
        staleReason: model.link.staleReason,
        recoverWith: model.link.recoverWith,
        // The Filter view says who holds the filter instead of staying empty.
        ...(err instanceof FilterBusyError
          ? {
              filter: {
                connected: false,
                transport: model.link.filter?.transport ?? 'unknown',
                paused: false,
                error: { code: 'NKE_BUSY', message: err.ownerWindow ?? err.message },
              },
            }
          : {}),
      });
      throw err;
    }
  }

  /** Replaces a dead (or live) helper with a new one and reconnects. */
  async restart(): Promise<FilterStatus> {
    // A new helper with a new token (and, as root, a new prompt); the old
    // one's late events are ignored from here on (generation).
    this.opts.log.info('restarting the helper process');
    this.stopHelper();
    return this.connect();
  }

  /** Records this window as the filter's owner, answering take-over requests. */
  private async claimFilter(conn: MessageConnection): Promise<void> {
    const own = this.opts.ownership;
    if (!own) return;
    try {
      await own.claim(async (by) => {
        if (conn !== this.conn) return;
        await this.disconnect();
        this.opts.model.setLink({
          status: 'disconnected',
          filter: {
            connected: false,
            transport: this.opts.model.link.filter?.transport ?? 'unknown',
            paused: false,
            error: { code: 'NKE_TAKEN_OVER', message: `taken over by ${by}` },
          },
        });
        for (const l of [...this.yieldListeners]) l(by);
      });
    } catch (e) {
      // Not fatal: this window works; another one cannot ask it to let go.
      this.opts.log.warn(`cannot record this window as the filter's owner: ${(e as Error).message}`);
    }
  }

  /**
   * NKE: Take Over: asks the window that holds the filter to let go, then
   * connects here (the filter takes the next client once the other
   * helper's connection closed).
   */
  async takeOver(): Promise<FilterStatus> {
    const owner = this.opts.ownership?.currentOwner();
    if (owner) {
      this.opts.log.info(`asking ${describeOwner(owner)} to let go of the filter`);
      await this.opts.ownership!.requestTakeOver(owner);
    }
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.connect();
      } catch (e) {
        if (!(e instanceof FilterBusyError) || attempt >= 20) throw e;
        await new Promise((r) => setTimeout(r, 150)); // the old client is still closing
      }
    }
  }

  /** Closes the filter (it re-injects everything held) and stops the helper. */
  async disconnect(): Promise<void> {
    const conn = this.conn;
    if (conn) {
      try {
        await conn.sendRequest(DisconnectFilter);
      } catch (e) {
        this.opts.log.warn(`disconnecting the filter: ${(e as Error).message}`);
      }
    }
    this.stopHelper();
    // The filter released everything held when its client closed; the
    // helper's last batch saying so may never arrive.
    this.opts.model.releaseAllPending('client-gone');
    this.opts.model.setLink({
      status: 'disconnected',
      staleReason: undefined,
      recoverWith: undefined,
      filter: undefined,
    });
  }

  /** Paused: the filter passes everything through without deferring. */
  async setPaused(paused: boolean): Promise<void> {
    const conn = this.require();
    await conn.sendRequest(SetPaused, { paused });
    this.opts.model.applyFilterStatus(await conn.sendRequest(GetStatus));
  }

  async setRules(rules: RulesConfig): Promise<void> {
    await this.require().sendRequest(SetRules, { rules });
    this.opts.model.setRules(rules); // shown only once the helper accepted them
  }

  /** The rules the helper has in force (what it validated and installed). */
  async rules(): Promise<RulesConfig> {
    return (await this.require().sendRequest(GetSnapshot)).rules;
  }

  /** Pushes rules only if a helper runs (settings changes while disconnected apply on connect). */
  async updateRules(rules: RulesConfig): Promise<void> {
    if (this.conn) await this.setRules(rules);
  }

  /** `bytes` only with 'replace': what is sent in place of the held bytes. */
  async verdict(payloadId: string, verdict: PayloadVerdict, bytes?: Uint8Array): Promise<void> {
    const conn = this.requireLive(payloadId);
    if ((verdict === 'replace') !== (bytes !== undefined)) {
      throw new Error(`payload ${payloadId}: the new bytes go with 'replace' and only with it`);
    }
    try {
      await conn.sendRequest(Verdict, {
        id: payloadId,
        action: verdict,
        ...(bytes
          ? { base64: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64') }
          : {}),
      });
    } catch (e) {
      throw this.explain(e, payloadId);
    }
  }

  /** Keeps a payload held until heldAt + holdMs (capped by the filter); its new view. */
  async extendHold(payloadId: string, holdMs: number): Promise<PendingView> {
    const conn = this.requireLive(payloadId);
    try {
      const view = await conn.sendRequest(ExtendHold, { id: payloadId, holdMs });
      // Shown at once; the helper's next batch carries the same view.
      this.opts.model.updatePending(view);
      return view;
    } catch (e) {
      throw this.explain(e, payloadId);
    }
  }

  /** The connection, when a held chunk can still be acted on at all. */
  private requireLive(payloadId: string): MessageConnection {
    const conn = this.require();
    const { status } = this.opts.model.link;
    if (status !== 'connected' && status !== 'paused') {
      // A held chunk exists only while the filter is connected: the rows
      // left over in the view are not decisions anyone can make any more.
      throw new ActionableError(`payload ${payloadId}: the filter is not connected (${status})`, {
        title: 'Connect',
        command: 'nke.connect',
      });
    }
    return conn;
  }

  /**
   * NKE: Clear: the helper forgets closed sockets, execs and history, and
   * the model is loaded again from it: live sockets and held payloads stay.
   * Without a helper the model alone is cleared.
   */
  async clear(): Promise<void> {
    const conn = this.conn;
    if (!conn) {
      this.opts.model.clear();
      return;
    }
    await conn.sendRequest(Clear);
    await this.resync(conn);
  }

  /** The helper writes its capture history as pcapng to `file` (all sockets, or these ids). */
  async exportPcapng(file: string, sockets?: string[]): Promise<CaptureExportResult> {
    const conn = this.require();
    try {
      return await conn.sendRequest(ExportPcapng, {
        path: file,
        sockets: sockets?.length ? sockets : undefined,
        // A root helper (kext mode) gives the file to this user.
        owner:
          process.getuid && process.getgid ? { uid: process.getuid(), gid: process.getgid() } : undefined,
      });
    } catch (e) {
      if (filterErrorCode(e) === 'NKE_NO_CAPTURE') {
        throw new ActionableError(`${(e as Error).message}`, {
          title: 'Open Settings',
          command: 'workbench.action.openSettings',
          args: ['nke.captureHistoryMiB'],
        });
      }
      throw this.explain(e);
    }
  }

  /** The held bytes of a pending payload (fetched only when asked for). */
  async payload(payloadId: string): Promise<Buffer> {
    try {
      const r = await this.require().sendRequest(GetPayload, { id: payloadId });
      return Buffer.from(r.base64, 'base64');
    } catch (e) {
      throw this.explain(e, payloadId);
    }
  }

  /** Stops the helper (it exits when its connection closes); the model says disconnected. */
  dispose(): void {
    this.stopHelper();
  }

  private stopHelper(): void {
    this.generation++;
    this.conn = undefined;
    this.starting = undefined;
    this.launchKey = undefined;
    this.client?.stop();
    this.client = undefined;
    this.opts.ownership?.release();
  }

  private require(): MessageConnection {
    if (this.conn) return this.conn;
    throw new ActionableError(
      this.opts.model.stale
        ? `the helper process is not running (${this.opts.model.link.staleReason})`
        : 'not connected: run NKE: Connect (or NKE: Load Filter) first',
      this.opts.model.stale
        ? { title: 'Restart', command: 'nke.restartHelper' }
        : { title: 'Connect', command: 'nke.connect' },
    );
  }

  /** The running helper's connection, starting one if there is none. */
  private helper(): Promise<MessageConnection> {
    if (this.conn) return Promise.resolve(this.conn);
    this.starting ??= this.startHelper(++this.generation).finally(() => (this.starting = undefined));
    return this.starting;
  }

  private async startHelper(gen: number): Promise<MessageConnection> {
    const launch = this.opts.launch();
    this.launchKey = launchKeyOf(launch);
    const client = new HelperClient({
      helperScript: this.opts.helperScript,
      runtime: this.opts.runtime,
      asAdministrator: launch.asAdministrator,
      captureHistoryMiB: launch.captureHistoryMiB,
      // The control socket is per user: a root helper (kext mode) would
      // create it where the user's nke and Wireshark cannot reach it.
      serveControl: !launch.asAdministrator,
      connectFilter: false,
      env: launch.env,
      log: (line) => this.opts.log.info(line),
    });
    this.client?.stop();
    this.client = client;
    client.on('disconnected', (reason) => {
      if (this.client === client) this.onHelperLost(reason);
    });
    const conn = await client.start();
    if (gen !== this.generation) {
      client.stop();
      throw new Error('the helper start was superseded (disconnected or restarted meanwhile)');
    }
    this.adopt(conn, gen);
    await conn.sendRequest(SetRules, { rules: launch.rules });
    this.opts.log.info(`helper process started (pid ${client.pid ?? 'as root'})`);
    return conn;
  }

  /** Routes one connection's notifications into the model and the log. */
  private adopt(conn: MessageConnection, gen: number): void {
    this.conn = conn;
    const { model, log } = this.opts;
    conn.onNotification(Update, (batch) => {
      if (gen === this.generation) model.applyUpdate(batch);
    });
    conn.onNotification(FilterClosed, ({ code, message }) => {
      if (gen !== this.generation) return;
      const why = `the filter connection closed (${code}): ${message}`;
      log.error(why);
      this.opts.ownership?.release();
      model.markStale(why, 'nke.loadFilter');
      model.releaseAllPending('filter-gone');
      this.fail({ kind: 'filter-closed', message: why });
    });
    conn.onNotification(Log, ({ level, message }) => log[level](`helper: ${message}`));
  }

  private async resync(conn: MessageConnection): Promise<void> {
    const snapshot = await conn.sendRequest(GetSnapshot);
    if (conn === this.conn) this.opts.model.applySnapshot(snapshot);
  }

  private onHelperLost(reason: string): void {
    // Rejects requests still waiting for the dead helper's answer.
    this.conn?.dispose();
    this.conn = undefined;
    this.generation++;
    this.launchKey = undefined;
    this.opts.ownership?.release();
    const why = `the helper process ended: ${reason}`;
    this.opts.log.error(why);
    this.opts.model.markStale(why, 'nke.restartHelper');
    // The filter fails open when its client dies: nothing is held any more.
    this.opts.model.releaseAllPending('client-gone');
    this.fail({ kind: 'helper-exited', message: why });
  }

  private fail(f: SessionFailure): void {
    for (const l of [...this.failureListeners]) l(f);
  }

  /** Turns helper and filter errors into messages with the next step. */
  private explain(e: unknown, payloadId?: string): Error {
    if (e instanceof ActionableError) return e;
    const message = e instanceof Error ? e.message : String(e);
    switch (filterErrorCode(e)) {
      case 'NKE_EMU_NOT_RUNNING':
        return new EmulatorNotRunningError(message);
      case 'NKE_NOT_PRIVATE':
        // Someone else's runtime directory (or listener): pick one of ours.
        return new ActionableError(message, {
          title: 'Open Settings',
          command: 'workbench.action.openSettings',
          args: ['nke.emulatorRuntimeDir'],
        });
      case 'NKE_BUSY': {
        const owner = this.opts.ownership?.currentOwner();
        return new FilterBusyError(message, owner && describeOwner(owner));
      }
      case 'NKE_UNKNOWN_PAYLOAD':
        return new PayloadGoneError(payloadId ?? '?', removalReason(e));
      case 'NKE_NOT_CONNECTED':
        return new ActionableError(`${message}`, { title: 'Connect', command: 'nke.connect' });
    }
    return e instanceof Error ? e : new Error(message);
  }
}

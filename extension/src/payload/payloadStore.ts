// The one payload store of a window: for each held chunk a person looks at,
// its original bytes (fetched once from the helper with nke/getPayload), the
// edit staged for it, its live state, and the filter's real deadline. The
// text document, the hex document (payloadFileSystem.ts) and the webview
// editor (issue #14) are all views of this store; none keeps bytes of its own.
//
// The API a view uses (all by payload id, the chunk id in decimal):
//   original(id)          Promise of the held bytes, fetched once, kept after release
//   staged(id)            the staged edit, or undefined
//   current(id)           staged ?? original
//   stage(id, bytes, by?) stage an edit (refused once the chunk is not held);
//                         bytes equal to the original are no edit (= revert)
//   revert(id, by?)       drop the staged edit
//   act(id, action, b?)   'reinjectEdited' | 'reinjectOriginal' | 'drop': the only
//                         calls that send anything; refused, with the reason, when
//                         the chunk is not held any more; one at a time per chunk
//   state(id)             held (with its PendingView: deadline, heldAt) |
//                         released (reason) | sent (action, size) | unknown
//   holdTimes(id)         while held: ms left before the filter releases it, and,
//                         while kept held for a view, the latest it will be
//                         released unchanged (what countdowns and headers show)
//   onDidChange(l)        l(change) after one id's change (PayloadChange below):
//                         'staged' carries the new staged bytes (undefined: no
//                         edit) and `by`, the view that staged it, so a view can
//                         skip its own echo; 'state' (held -> released / sent:
//                         views turn read-only, actions disabled); 'deadline' (the
//                         filter's deadline moved: countdowns only, no byte changed)
//   keepHeld(id, holder)  while any holder is registered (an editor tab, a
//                         webview panel), the store extends the chunk's hold, up
//                         to nke.editHoldMaxMs in total and never past the ABI cap;
//                         dispose the lease when the view closes
// A webview editor is one more view: it reads original/staged/state/holdTimes,
// calls stage(id, bytes, 'webview')/revert/act, listens to onDidChange (ignoring
// 'staged' changes with its own `by`), and holds a keepHeld lease while open.
// Open editor tabs of `nke-payload:` URIs (custom editors included) are leased
// already by registerPayloadEditing.ts.
//
// No `vscode` import: plain mocha tests drive it with a fake helper port.
// Single-threaded (the extension host's event loop); `inFlight` keeps one
// send per chunk at a time, so a double click cannot send twice.
import { NKE_HOLD_TOTAL_MAX_MS } from '../shared/abi';
import type { PendingRemovalReason, PendingView } from '../shared/helperProtocol';
import { noLongerHeld, releasedByFilter } from '../shared/payloadReasons';
import type { ModelEvent, PendingRemoval, WorkbenchModel } from '../model/workbenchModel';

export type PayloadAction = 'reinjectEdited' | 'reinjectOriginal' | 'drop';

/**
 * What changed for a payload: its staged edit (the documents' bytes), its
 * state (held -> released / sent: documents turn read-only), or only the
 * filter's deadline (countdowns; the documents' bytes are the same, so the
 * file system must not announce a change: an editor would reload it).
 */
export type PayloadChange =
  | {
      id: string;
      what: 'staged';
      /** The staged edit now (a copy the listener may keep); undefined: no edit, the original shows. */
      staged: Uint8Array | undefined;
      /** Who staged or reverted it (stage's `by`), so a view can skip its own change. */
      by?: string;
    }
  | { id: string; what: 'state' | 'deadline' };

/** A held chunk's times, from the filter's real deadline (ms from now). */
export interface HoldTimes {
  /** Before the filter releases it unchanged, unless kept held longer. */
  leftMs: number;
  /** While a view keeps it held: the latest it is released unchanged (nke.editHoldMaxMs after the hold). */
  keptUntilMs?: number;
}

export type PayloadState =
  | { kind: 'held'; view: PendingView }
  | { kind: 'released'; reason: PendingRemovalReason; view?: PendingView }
  /** size: bytes sent, when this window sent them */
  | { kind: 'sent'; action: PayloadAction; size?: number; view?: PendingView }
  | { kind: 'unknown' };

/** An open payload stays held at least this long ahead of now (see keepAheadMinMs). */
export const KEEP_AHEAD_MIN_MS = 3000;

/** What the store needs of the helper (HelperSession implements it). */
export interface PayloadHelperPort {
  payload(id: string): Promise<Uint8Array>;
  verdict(id: string, verdict: 'allow' | 'drop' | 'replace', bytes?: Uint8Array): Promise<void>;
  extendHold(id: string, holdMs: number): Promise<PendingView>;
}

export interface PayloadStoreOptions {
  model: WorkbenchModel;
  helper: PayloadHelperPort;
  /** nke.holdTimeoutMs: how long past "now" an open payload is kept held at each step. */
  holdTimeoutMs: () => number;
  /** nke.editHoldMaxMs: the most an open payload is held in total (clamped to the ABI cap). */
  editHoldMaxMs: () => number;
  /**
   * The least an open payload is kept held ahead of now (default
   * KEEP_AHEAD_MIN_MS): with a short nke.holdTimeoutMs, a step ahead of only
   * that long let a stall of the extension host (a busy machine, a long
   * synchronous task) outlast the deadline, and the filter released a chunk
   * someone was editing.
   */
  keepAheadMinMs?: number;
  now?: () => number;
  /** Failures of keeping a payload held (the store goes on trying). */
  log?: (message: string) => void;
  /** Each extend, for the log's debug level. */
  debug?: (message: string) => void;
}

/** Refused: the payload is not held (released, answered) or cannot be acted on now. */
export class PayloadActionError extends Error {
  constructor(
    readonly payloadId: string,
    message: string,
  ) {
    super(message);
    this.name = 'PayloadActionError';
  }
}

interface Entry {
  /** The view while held; kept after, for titles and "released" text. */
  view?: PendingView;
  original?: Uint8Array;
  fetching?: Promise<Uint8Array>;
  staged?: Uint8Array;
  /** Why it is no longer held; undefined while held (or never seen). */
  gone?:
    | { kind: 'released'; reason: PendingRemovalReason }
    | { kind: 'sent'; action: PayloadAction; size?: number };
  holders: Set<string>;
  inFlight?: Promise<void>;
  extending?: boolean;
}

const ACTION_NAMES: Record<PayloadAction, string> = {
  reinjectEdited: 'Reinject Edited Data',
  reinjectOriginal: 'Reinject Original',
  drop: 'Drop',
};

export function payloadActionName(a: PayloadAction): string {
  return ACTION_NAMES[a];
}

/** The store's own answer when an action is refused (a message naming chunk and cause). */
export function refusalFor(id: string, s: PayloadState): string | undefined {
  switch (s.kind) {
    case 'held':
      return undefined;
    case 'released':
      return noLongerHeld(id, s.reason);
    case 'sent':
      return `payload ${id} was already answered (${payloadActionName(s.action)}${s.size !== undefined ? `, ${s.size} bytes` : ''})`;
    case 'unknown':
      return noLongerHeld(id, undefined);
  }
}

export class PayloadStore {
  private readonly entries = new Map<string, Entry>();
  private readonly listeners = new Set<(e: PayloadChange) => void>();
  private readonly subscriptions: { dispose(): void }[] = [];
  private timer?: ReturnType<typeof setTimeout>;
  private readonly now: () => number;

  constructor(private readonly opts: PayloadStoreOptions) {
    this.now = opts.now ?? Date.now;
    this.subscriptions.push(
      opts.model.onDidRemovePending((removed) => this.onRemoved(removed)),
      opts.model.onDidChange((e) => {
        if (e.part === 'pending') this.onPendingChanged();
      }),
    );
  }

  readonly onDidChange: ModelEvent<PayloadChange> = (listener) => {
    this.listeners.add(listener);
    return { dispose: () => this.listeners.delete(listener) };
  };

  /** Where the chunk stands now (held with its live view, released, sent, or never seen). */
  state(id: string): PayloadState {
    const e = this.entries.get(id);
    if (e?.gone) return { ...e.gone, view: e.view };
    const live = this.opts.model.pendingPayload(id);
    if (live) return { kind: 'held', view: live };
    return { kind: 'unknown' };
  }

  /** The chunk's metadata (process, direction, socket), live or as last seen. */
  view(id: string): PendingView | undefined {
    return this.opts.model.pendingPayload(id) ?? this.entries.get(id)?.view;
  }

  /** The held bytes, from the helper on first use; kept (read-only) after the chunk is gone. */
  original(id: string): Promise<Uint8Array> {
    const e = this.entry(id);
    if (e.original) return Promise.resolve(e.original);
    if (!e.fetching) {
      e.fetching = this.opts.helper.payload(id).then(
        (b) => {
          e.original = Uint8Array.from(b);
          e.fetching = undefined;
          return e.original;
        },
        (err: unknown) => {
          e.fetching = undefined;
          throw err;
        },
      );
    }
    return e.fetching;
  }

  /** The original if it was fetched already (no round trip). */
  originalIfLoaded(id: string): Uint8Array | undefined {
    return this.entries.get(id)?.original;
  }

  staged(id: string): Uint8Array | undefined {
    return this.entries.get(id)?.staged;
  }

  /** What the views show: the staged edit, else the original. */
  async current(id: string): Promise<Uint8Array> {
    return this.entries.get(id)?.staged ?? (await this.original(id));
  }

  /**
   * Stages an edit for a held chunk; nothing is sent. Equal to the original =
   * no edit. `by` names the view (e.g. 'webview'), carried on the change event.
   */
  stage(id: string, bytes: Uint8Array, by?: string): void {
    const refusal = refusalFor(id, this.state(id));
    if (refusal) throw new PayloadActionError(id, `${refusal}; the edit was not kept`);
    const e = this.entry(id);
    const copy = Uint8Array.from(bytes);
    const same = e.original !== undefined && equalBytes(copy, e.original);
    const before = e.staged;
    e.staged = same ? undefined : copy;
    const changed = before !== e.staged && !(before && e.staged && equalBytes(before, e.staged));
    if (changed) this.fireStaged(id, e, by);
  }

  revert(id: string, by?: string): void {
    const e = this.entries.get(id);
    if (!e?.staged) return;
    e.staged = undefined;
    this.fireStaged(id, e, by);
  }

  /** See HoldTimes; undefined when the chunk is not held. */
  holdTimes(id: string): HoldTimes | undefined {
    const s = this.state(id);
    if (s.kind !== 'held') return undefined;
    const now = this.now();
    const times: HoldTimes = { leftMs: Math.max(0, s.view.deadline - now) };
    const latest = s.view.heldAt + this.editHoldMaxMs();
    // At the cap (deadline == latest) it is still kept while open: say so.
    if ((this.entries.get(id)?.holders.size ?? 0) > 0 && latest >= s.view.deadline) {
      times.keptUntilMs = latest - now;
    }
    return times;
  }

  /**
   * The only way bytes leave: Reinject Edited sends `bytes` if given (what an
   * editor holds, already decoded), else the staged edit, else the original.
   * Refused with the reason when the chunk is not held; at most one send per
   * chunk (a second call while the first is on its way is refused too).
   */
  async act(id: string, action: PayloadAction, bytes?: Uint8Array): Promise<void> {
    const e = this.entry(id);
    if (e.inFlight) throw new PayloadActionError(id, `payload ${id}: an action is already on its way`);
    const refusal = refusalFor(id, this.state(id));
    if (refusal) throw new PayloadActionError(id, refusal);
    const send = async () => {
      let size: number;
      if (action === 'reinjectEdited') {
        const out = bytes ?? e.staged ?? (await this.original(id));
        size = out.length;
        await this.opts.helper.verdict(id, 'replace', out);
      } else {
        size = action === 'drop' ? 0 : (e.original?.length ?? this.view(id)?.size ?? 0);
        await this.opts.helper.verdict(id, action === 'drop' ? 'drop' : 'allow');
      }
      e.gone = { kind: 'sent', action, size };
      this.fire(id, 'state');
    };
    e.inFlight = send().finally(() => (e.inFlight = undefined));
    try {
      await e.inFlight;
    } catch (err) {
      // The helper knows better why it is gone (released meanwhile): record it.
      const reason = (err as { reason?: PendingRemovalReason }).reason;
      if (reason !== undefined && !e.gone) {
        e.gone = goneFor(reason);
        this.fire(id, 'state');
      }
      throw err;
    }
  }

  /**
   * Registers `holder` (an editor tab, the webview) as showing the payload.
   * While one is registered the store keeps the chunk held: each step asks
   * the filter for holdTimeoutMs more from now (at least keepAheadMinMs), up
   * to editHoldMaxMs in total
   * (the filter's own cap, NKE_HOLD_TOTAL_MAX_MS, above that). Dispose to let
   * it go: the chunk then keeps the deadline it has.
   */
  keepHeld(id: string, holder: string): { dispose(): void } {
    const e = this.entry(id);
    e.holders.add(holder);
    this.opts.debug?.(`payload ${id}: kept held while ${holder} shows it`);
    this.updateTimer();
    void this.extendDue();
    return {
      dispose: () => {
        e.holders.delete(holder);
        this.opts.debug?.(`payload ${id}: no longer kept by ${holder}`);
        this.updateTimer();
      },
    };
  }

  /** Ids some view keeps held right now. */
  keptHeld(): string[] {
    return [...this.entries].filter(([, e]) => e.holders.size > 0).map(([id]) => id);
  }

  /** The most an open payload is held in total, in ms (setting clamped to the ABI cap). */
  editHoldMaxMs(): number {
    return Math.min(Math.max(0, this.opts.editHoldMaxMs()), NKE_HOLD_TOTAL_MAX_MS);
  }

  /** Forgets payloads that no view shows and that are not held. */
  prune(): void {
    for (const [id, e] of this.entries) {
      if (e.holders.size === 0 && !e.inFlight && !this.opts.model.pendingPayload(id)) this.entries.delete(id);
    }
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    for (const s of this.subscriptions) s.dispose();
    this.listeners.clear();
  }

  private entry(id: string): Entry {
    let e = this.entries.get(id);
    if (!e) {
      e = { holders: new Set(), view: this.opts.model.pendingPayload(id) };
      this.entries.set(id, e);
    }
    return e;
  }

  private onRemoved(removed: PendingRemoval[]): void {
    for (const { id, reason } of removed) {
      const e = this.entries.get(id);
      if (!e || e.gone) continue;
      e.gone = goneFor(reason);
      this.fire(id, 'state');
    }
    this.updateTimer();
  }

  /** Views (deadlines) changed: remember them and tell listeners of the ids they show. */
  private onPendingChanged(): void {
    for (const [id, e] of this.entries) {
      const live = this.opts.model.pendingPayload(id);
      if (live && live !== e.view) {
        const deadlineMoved = e.view?.deadline !== live.deadline;
        e.view = live;
        if (deadlineMoved) this.fire(id, 'deadline');
      }
    }
  }

  private updateTimer(): void {
    const wanted = [...this.entries].some(
      ([id, e]) => e.holders.size > 0 && !e.gone && this.opts.model.pendingPayload(id) !== undefined,
    );
    this.opts.debug?.(`keep-held timer: wanted ${wanted}, running ${this.timer !== undefined}`);
    if (wanted && !this.timer) {
      // Four steps per hold timeout (read each step: the setting may change),
      // so an open chunk never gets closer than half of it to its deadline;
      // at least 100 ms, at most a second apart.
      const step = Math.min(1000, Math.max(100, Math.floor(this.opts.holdTimeoutMs() / 4)));
      this.timer = setTimeout(() => {
        this.timer = undefined;
        void this.extendDue();
        this.updateTimer();
      }, step);
      this.timer.unref?.();
    } else if (!wanted && this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
  }

  /** One step of keeping open payloads held (see keepHeld). */
  private async extendDue(): Promise<void> {
    const now = this.now();
    const ahead = Math.max(this.opts.holdTimeoutMs(), this.opts.keepAheadMinMs ?? KEEP_AHEAD_MIN_MS);
    const max = this.editHoldMaxMs();
    for (const [id, e] of this.entries) {
      if (e.holders.size === 0 || e.gone || e.extending || e.inFlight) continue;
      const view = this.opts.model.pendingPayload(id);
      if (!view) continue;
      const have = view.deadline - view.heldAt;
      const want = Math.min(Math.ceil(now - view.heldAt + ahead), max);
      // Only when it matters: a quarter of the way used up, and not beyond the maximum.
      if (want <= have || view.deadline - now > ahead * 0.75) continue;
      e.extending = true;
      try {
        const v = await this.opts.helper.extendHold(id, want);
        this.opts.debug?.(`payload ${id} kept held: ${want} ms in all, ${v.deadline - this.now()} ms left`);
      } catch (err) {
        this.opts.log?.(`keeping payload ${id} held: ${(err as Error).message}`);
      } finally {
        e.extending = false;
      }
    }
  }

  private fire(id: string, what: 'state' | 'deadline'): void {
    for (const l of [...this.listeners]) l({ id, what });
  }

  private fireStaged(id: string, e: Entry, by: string | undefined): void {
    for (const l of [...this.listeners]) {
      l({ id, what: 'staged', staged: e.staged && Uint8Array.from(e.staged), by });
    }
  }
}

/** How a chunk left: released by the filter, or answered (here or elsewhere: the tree, the CLI). */
function goneFor(reason: PendingRemovalReason): NonNullable<Entry['gone']> {
  if (releasedByFilter(reason)) return { kind: 'released', reason };
  const action: PayloadAction =
    reason === 'drop' ? 'drop' : reason === 'replace' ? 'reinjectEdited' : 'reinjectOriginal';
  return { kind: 'sent', action };
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

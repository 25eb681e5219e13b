// What the commands ask of the helper process (docs/architecture.md, The data
// path: the helper owns the addon, the filter connection and the live model
// feed). HelperSession
// implements it over HelperClient's JSON-RPC connection.
import type { FilterStatus, PendingView, RulesConfig } from '../shared/helperProtocol';

/** A person's final word on a held chunk; 'replace' sends edited bytes. */
export type PayloadVerdict = 'allow' | 'drop' | 'replace';

export interface HelperPort {
  /** Starts the helper if needed, opens the filter and loads the helper's whole model. */
  connect(): Promise<FilterStatus>;
  /** Closes the filter (it re-injects everything held) and stops the helper. */
  disconnect(): Promise<void>;
  /** Replaces a dead (or live) helper with a new one and reconnects. */
  restart(): Promise<FilterStatus>;
  /** Paused: the filter passes everything through without deferring. */
  setPaused(paused: boolean): Promise<void>;
  setRules(rules: RulesConfig): Promise<void>;
  /** `bytes` only with 'replace': what is sent in place of the held bytes. */
  verdict(payloadId: string, verdict: PayloadVerdict, bytes?: Uint8Array): Promise<void>;
  /** The held bytes of a pending payload (fetched only when asked for). */
  payload(payloadId: string): Promise<Buffer>;
  /** Keeps a payload held until heldAt + holdMs (capped by the filter); its new view. */
  extendHold(payloadId: string, holdMs: number): Promise<PendingView>;
}

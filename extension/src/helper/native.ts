// Loads the native addon (native/addon, built by npm install) and types it.
// The bundles live in dist/ and the addon in native/addon/build/Release, so
// the path is resolved from this file's directory at run time; NKE_ADDON
// overrides it (tests, packaged layouts).
import fs from 'node:fs';
import path from 'node:path';
import type { NkeErrorCode } from '../shared/helperProtocol';

export interface OpenReply {
  abiVersion: number;
  bufferCount: number;
  bufferSize: number;
  queueDataSize: number;
  kevVendorCode: number;
  kevMsgLimit: number;
  sessionId: bigint;
}

export interface NativeFilterClient {
  readonly isOpen: boolean;
  /**
   * onBatch gets raw notification records (one Buffer per batch). With
   * releaseReported the reader thread gives back the buffers of reported
   * (not held) chunks itself, at once; the caller must not release them.
   */
  open(
    /**
     * wakeNs: CLOCK_MONOTONIC (process.hrtime's clock) when the reader thread
     * woke for this batch. captured (with options.capture): per data record,
     * in record order, its chunk_id (u64 LE) and where the reader wrote its
     * bytes in the capture history's ring (i64 LE, -1: not kept), 16 bytes each.
     */
    onBatch: (records: Buffer, skipped: number, wakeNs?: number, captured?: Buffer) => void,
    onClosed: (err: NativeError) => void,
    options?: {
      releaseReported?: boolean;
      /** the capture history's ring file: the reader writes every data chunk's bytes there */
      capture?: { fd: number; size: number; head: number };
    },
  ): OpenReply;
  /** Appends bytes (an edit's) to the capture ring; their logical position, or -1 when not kept. */
  captureWrite(bytes: Buffer): number;
  /** The capture ring's head and write errors (undefined when opened without one). */
  captureStatus(): { head: number; writeErrors: number; lastError: string } | undefined;
  /** Copies a chunk's bytes out of the shared buffers. */
  readChunk(buffers: number[], size: number): Buffer;
  respond(message: Buffer): void;
  putData(message: Buffer): void;
  setCapture(config: Buffer): void;
  getState(): Buffer;
  close(): void;
}

export interface NativeExecRecord {
  execId: number;
  pid: number;
  ppid: number;
  uid: number;
  flags: number;
  complete: boolean;
  pathLen: number;
  chunkCount: number;
  receivedMask: bigint;
  path: Buffer;
}

export interface NativeKevSocket {
  open(
    vendor: string,
    onExecs: (records: NativeExecRecord[]) => void,
    onClosed: (err: NativeError) => void,
    reassemblyTimeoutMs?: number,
  ): { vendorCode: number; msgLimit: number };
  close(): void;
  stats(): { messages: number; duplicates: number; malformed: number; evicted: number };
}

/** An error of the addon: its code is one of the protocol's (NKE_ERROR_CODES, or the filter's NKE_ERR_ name). */
export interface NativeError extends Error {
  code: NkeErrorCode;
}

export interface NativeAddon {
  FilterClient: new () => NativeFilterClient;
  KevSocket: new () => NativeKevSocket;
  abiVersion: number;
  kevVendor: string;
  platform: 'emulator' | 'iokit';
}

let cached: NativeAddon | undefined;

export function addonPath(): string {
  if (process.env.NKE_ADDON) return process.env.NKE_ADDON;
  // dist/helper.js, dist/nke.js and out/test/... all sit two levels or less
  // below the project root.
  for (const up of ['..', '../..', '../../..']) {
    const p = path.resolve(__dirname, up, 'native/addon/build/Release/nke_addon.node');
    if (fs.existsSync(p)) return p;
  }
  return path.resolve(__dirname, '..', 'native/addon/build/Release/nke_addon.node');
}

export function loadAddon(): NativeAddon {
  if (cached) return cached;
  const p = addonPath();
  if (!fs.existsSync(p)) {
    const e = new Error(
      `the native addon is not built (${p} missing): run npm install or npm run build`,
    ) as NativeError;
    e.code = 'NKE_ADDON_MISSING';
    throw e;
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  cached = require(p) as NativeAddon;
  return cached;
}

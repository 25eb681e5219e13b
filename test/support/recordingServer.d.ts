export interface RecordingServer {
  port: number;
  /** Bytes received so far, one Buffer per accepted connection, in accept order. */
  connections: Buffer[];
  /** All bytes received so far, connections concatenated in accept order. */
  received(): Buffer;
  close(): void;
  /** Resolves with received() once it holds at least n bytes; rejects after ms. */
  whenBytes(n: number, ms?: number): Promise<Buffer>;
}
export function recordingServer(): Promise<RecordingServer>;
export function closeRecordingServers(): void;

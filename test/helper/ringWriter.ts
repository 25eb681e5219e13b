// Writes into a capture history's ring file the way the addon's CaptureSpill
// does (native/addon/src/capture_spill.cpp): reserve at the head, then write,
// wrapping at the ring's size. For tests that feed the history or the engine
// without a filter behind them; the emulator tests use the addon itself.
import fs from 'node:fs';
import type { SpillWriter } from '../../extension/src/helper/captureHistory';

export class RingWriter implements SpillWriter {
  head: number;
  constructor(private readonly target: { fd: number; size: number; head: number }) {
    this.head = target.head;
  }

  captureWrite(b: Buffer): number {
    if (b.length > this.target.size) return -1;
    const at = this.head;
    this.head += b.length;
    for (let done = 0; done < b.length;) {
      const pos = (at + done) % this.target.size;
      const n = Math.min(b.length - done, this.target.size - pos);
      fs.writeSync(this.target.fd, b, done, n, pos);
      done += n;
    }
    return at;
  }

  captureStatus() {
    return { head: this.head, writeErrors: 0, lastError: '' };
  }
}

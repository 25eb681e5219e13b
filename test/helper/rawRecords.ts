// Raw notification records in the ABI layout, as the addon hands them to
// the helper, for the helper's model tests; and feeding them to a model.
import assert from 'node:assert/strict';
import type { LiveModel } from '../../extension/src/helper/model';
import { NotifyType } from '../../extension/src/shared/abi';
import { decodeBatch, type Notification } from '../../extension/src/helper/model';

/** Builds raw records in the ABI layout (what the addon hands over). */
export function hdr(type: number, size: number, slot: number, gen: number, flags = 0): Buffer {
  const b = Buffer.alloc(size);
  b.writeUInt16LE(type, 0);
  b.writeUInt16LE(size, 2);
  b.writeUInt32LE(flags, 4);
  b.writeUInt32LE(slot, 8);
  b.writeUInt32LE(gen, 12);
  b.writeBigUInt64LE(123n, 16);
  return b;
}
export function attach(slot: number, gen: number, pid: number, comm: string): Buffer {
  const b = hdr(NotifyType.Attach, 72, slot, gen);
  b.writeInt32LE(pid, 24);
  b.writeUInt32LE(1000, 28);
  b[32] = 2;
  b[33] = 1;
  b[34] = 6;
  b.write(comm, 40);
  return b;
}
export function connectOut(slot: number, gen: number, port: number): Buffer {
  const b = hdr(NotifyType.ConnectOut, 72, slot, gen);
  b[24] = 2;
  b.writeUInt16LE(40000, 26);
  Buffer.from([127, 0, 0, 1]).copy(b, 32);
  b[48] = 2;
  b.writeUInt16LE(port, 50);
  Buffer.from([127, 0, 0, 1]).copy(b, 56);
  return b;
}
/** Decodes `recs` as one batch (nothing left over) and applies each to the model. */
export function feed(m: LiveModel, ...recs: Buffer[]): Notification[] {
  const list: Notification[] = [];
  assert.equal(decodeBatch(Buffer.concat(recs), list), 0);
  for (const n of list) m.apply(n);
  return list;
}

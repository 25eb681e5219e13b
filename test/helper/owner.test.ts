// NKE_NT_OWNER: the kext attaches an accepted socket in the kernel's input
// path and learns who accepted it only at sf_accept; the helper's model moves
// the socket to that process in place (addresses and byte counts stay), so
// views and helper-side rules see the server process, not kernel_task.
import assert from 'node:assert/strict';
import { LiveModel } from '../../extension/src/helper/model';
import { NotifyType } from '../../extension/src/shared/abi';
import { decodeBatch, type Notification } from '../../extension/src/helper/model';

function record(type: number, size: number, slot: number, gen: number): Buffer {
  const b = Buffer.alloc(size);
  b.writeUInt16LE(type, 0);
  b.writeUInt16LE(size, 2);
  b.writeUInt32LE(slot, 8);
  b.writeUInt32LE(gen, 12);
  b.writeBigUInt64LE(5n, 16);
  return b;
}
/** nke_nt_attach layout, for NKE_NT_ATTACH and NKE_NT_OWNER alike. */
function attachLike(type: number, slot: number, gen: number, pid: number, uid: number, comm: string): Buffer {
  const b = record(type, 72, slot, gen);
  b.writeInt32LE(pid, 24);
  b.writeUInt32LE(uid, 28);
  b[32] = 2; // inet
  b[33] = 1; // stream
  b[34] = 6; // tcp
  b.write(comm, 40);
  return b;
}
function connectIn(slot: number, gen: number): Buffer {
  const b = record(NotifyType.ConnectIn, 72, slot, gen);
  b[24] = 2;
  b.writeUInt16LE(8080, 26);
  Buffer.from([127, 0, 0, 1]).copy(b, 32);
  b[48] = 2;
  b.writeUInt16LE(50123, 50);
  Buffer.from([127, 0, 0, 1]).copy(b, 56);
  return b;
}

function feed(m: LiveModel, ...recs: Buffer[]): Notification[] {
  const list: Notification[] = [];
  assert.equal(decodeBatch(Buffer.concat(recs), list), 0, 'no malformed record');
  for (const n of list) m.apply(n);
  return list;
}

describe('helper model: socket owner learned at accept (NKE_NT_OWNER)', () => {
  it('decodes the owner record and moves the socket to the accepting process in place', () => {
    const m = new LiveModel();
    const list = feed(
      m,
      attachLike(NotifyType.Attach, 3, 9, 0, 0, 'kernel_task'),
      connectIn(3, 9),
      attachLike(NotifyType.Owner, 3, 9, 4242, 501, 'httpd'),
    );
    assert.equal(list[2].type, NotifyType.Owner);
    const s = m.sockets.get('3:9')!.view;
    assert.equal(s.pid, 4242);
    assert.equal(s.uid, 501);
    assert.equal(s.process, 'httpd');
    // what the attach and the connect said is kept: one socket, still connected
    assert.equal(m.sockets.size, 1);
    assert.equal(s.state, 'connected');
    assert.deepEqual(s.remote, { address: '127.0.0.1', port: 50123 });
    assert.deepEqual(s.local, { address: '127.0.0.1', port: 8080 });
    // no second socket-open in the history
    assert.equal(m.eventsSince(0, 100).filter((e) => e.kind === 'socket-open').length, 1);
  });
});

// Socket states from the filter's notifications, as the kernel reports them:
// connecting -> connected -> closing -> closed for connected and accepted
// sockets, whatever order of events the filter sends for each.
import assert from 'node:assert/strict';
import { LiveModel, stateAfterEvent } from '../../extension/src/helper/model';
import { NotifyType } from '../../extension/src/shared/abi';
import type { Notification } from '../../extension/src/helper/model';

const sock = { slot: 4, gen: 2 };
const base = { sock, timeNs: 0, flags: 0 };
const noAddr = { family: 0, port: 0, address: '', raw: new Uint8Array(16) };
const lo = (port: number) => ({
  family: 2,
  port,
  address: '127.0.0.1',
  raw: Uint8Array.from([127, 0, 0, 1, ...new Array(12).fill(0)]),
});
const attach: Notification = {
  ...base,
  type: NotifyType.Attach,
  pid: 7,
  uid: 1000,
  family: 2,
  sockType: 1,
  protocol: 6,
  comm: 'python3',
};
const event = (e: number): Notification => ({ ...base, type: NotifyType.Event, event: e });
const EV = {
  connecting: 1,
  connected: 2,
  disconnecting: 3,
  disconnected: 4,
  cantrecvmore: 7,
  cantsendmore: 8,
};

function states(m: LiveModel, list: Notification[]): string[] {
  const seen: string[] = [];
  for (const n of list) {
    m.apply(n);
    seen.push(m.sockets.get('4:2')?.view.state ?? m.closedSockets.get('4:2')!.state);
  }
  return seen;
}

describe('socket state from the filter notifications', () => {
  it('a connected socket: connecting, connected on the event, closing at the EOF, closed at the detach', () => {
    const m = new LiveModel();
    const seen = states(m, [
      attach,
      { ...base, type: NotifyType.ConnectOut, local: lo(40000), remote: lo(8080) },
      event(EV.connected),
      event(EV.cantrecvmore),
      event(EV.cantsendmore),
      { ...base, type: NotifyType.Detach, bytesIn: 4n, bytesOut: 4n },
    ]);
    assert.deepEqual(seen, ['open', 'connecting', 'connected', 'closing', 'closing', 'closed']);
  });

  it('an accepted socket is connected from its CONNECT_IN; a late "connected" keeps it so', () => {
    const m = new LiveModel();
    const seen = states(m, [
      attach,
      { ...base, type: NotifyType.ConnectIn, local: lo(8080), remote: lo(40000) },
      event(EV.connected),
      event(EV.disconnecting),
      { ...base, type: NotifyType.Detach, bytesIn: 0n, bytesOut: 0n },
    ]);
    assert.deepEqual(seen, ['open', 'connected', 'connected', 'closing', 'closed']);
  });

  it('events never revive a closing socket or move a listener', () => {
    assert.equal(stateAfterEvent('closing', 'connected'), 'closing');
    assert.equal(stateAfterEvent('listening', 'cantrecvmore'), 'listening');
    assert.equal(stateAfterEvent('connected', 'connecting'), 'connected');
    assert.equal(stateAfterEvent('closed', 'connected'), 'closed');
    assert.equal(stateAfterEvent('connecting', 'flush-read'), 'connecting');
  });

  it('data on a TCP socket shown as connecting makes it connected (a lost event)', () => {
    const m = new LiveModel();
    states(m, [attach, { ...base, type: NotifyType.ConnectOut, local: lo(1), remote: noAddr }]);
    m.apply({
      ...base,
      type: NotifyType.Data,
      chunkId: 1n,
      streamOffset: 0,
      size: 3,
      direction: 2,
      deadlineMs: 0,
      captureTag: 0,
      rule: 0xffff,
      addr: undefined,
      buffers: [],
    });
    assert.equal(m.sockets.get('4:2')!.view.state, 'connected');
  });
});

// The live model without VS Code: how it applies the helper's snapshot and
// update batches (the helper protocol's own types) and marks itself stale.
import * as assert from 'node:assert/strict';
import {
  emptyCounters,
  emptyUpdate,
  type ModelPart,
  WorkbenchModel,
} from '../../../extension/src/model/workbenchModel';
import type { ExecView, PendingView } from '../../../extension/src/shared/helperProtocol';
import { socketView } from '../fixtures/views';

const socket = socketView();
const exec = (id: number, pid: number, complete = true): ExecView => ({
  id: String(id),
  pid,
  ppid: 1,
  uid: 0,
  path: `/p${pid}`,
  complete,
  truncated: false,
  time: 0,
});
const pending: PendingView = {
  id: '7',
  socketId: '1:1',
  pid: 10,
  process: 'curl',
  direction: 'out',
  size: 3,
  streamOffset: 0,
  deadline: 1,
  heldAt: 0,
};

describe('WorkbenchModel', () => {
  it('fires one change event per part a batch touched', () => {
    const m = new WorkbenchModel('emulator', 10);
    const seen: ModelPart[] = [];
    const sub = m.onDidChange((e) => seen.push(e.part));
    m.applyUpdate({ ...emptyUpdate(), sockets: [socket], execs: [exec(1, 10)] });
    m.applyUpdate({ ...emptyUpdate(), pendingAdded: [pending] });
    sub.dispose();
    m.applyUpdate({ ...emptyUpdate(), socketsRemoved: ['1:1'] }); // after dispose: not seen
    assert.deepEqual(seen, ['filter', 'sockets', 'execs', 'filter', 'pending']);
    assert.equal(m.sockets().length, 0);
  });

  it('adds, updates and removes sockets and pending payloads as batches say', () => {
    const m = new WorkbenchModel('emulator', 10);
    m.applyUpdate({ ...emptyUpdate(), sockets: [socket], pendingAdded: [pending] });
    m.applyUpdate({ ...emptyUpdate(), sockets: [{ ...socket, bytesOut: 3, state: 'closed' }] });
    assert.equal(m.socket('1:1')?.bytesOut, 3);
    assert.equal(m.socket('1:1')?.state, 'closed');
    assert.equal(m.pendingPayload('7')?.size, 3);
    m.applyUpdate({ ...emptyUpdate(), pendingRemoved: [{ id: '7', reason: 'allow' }] });
    assert.equal(m.pending().length, 0);
  });

  it('keeps an exec that comes again in its place, and drops the oldest beyond the history limit', () => {
    const m = new WorkbenchModel('emulator', 4);
    m.applyUpdate({ ...emptyUpdate(), execs: [1, 2, 3].map((i) => exec(i, i)) });
    m.applyUpdate({ ...emptyUpdate(), execs: [exec(2, 2, false)] });
    assert.deepEqual(
      m.execs().map((e) => e.id),
      ['1', '2', '3'],
    );
    assert.equal(m.execs()[1].complete, false);
    m.applyUpdate({ ...emptyUpdate(), execs: [4, 5, 6].map((i) => exec(i, i)) });
    assert.deepEqual(
      m.execs().map((e) => e.pid),
      [3, 4, 5, 6],
    );
    m.setHistoryLimit(2);
    assert.deepEqual(
      m.execs().map((e) => e.pid),
      [5, 6],
    );
    assert.throws(() => m.setHistoryLimit(0), /positive integer, got 0/);
    assert.throws(() => new WorkbenchModel('kext', 1.5), /positive integer, got 1.5/);
  });

  it('a snapshot replaces everything and makes a stale model live again', () => {
    const m = new WorkbenchModel('emulator', 10);
    m.applyUpdate({ ...emptyUpdate(), sockets: [socket], pendingAdded: [pending] });
    m.markStale('the helper process ended: killed', 'nke.restartHelper');
    assert.equal(m.link.recoverWith, 'nke.restartHelper');
    assert.equal(m.link.status, 'failed');
    assert.ok(m.stale);
    assert.equal(m.sockets().length, 1, 'a stale model keeps its last state');
    m.applySnapshot({
      filter: { connected: true, transport: 'emulator', sessionId: '9', paused: false },
      sockets: [{ ...socket, id: '2:1' }],
      execs: [],
      pending: [],
      counters: { ...emptyCounters(), dataChunks: 5 },
      rules: {},
    });
    assert.equal(m.stale, false);
    assert.equal(m.link.status, 'connected');
    assert.equal(m.link.filter?.sessionId, '9');
    assert.deepEqual(
      m.sockets().map((s) => s.id),
      ['2:1'],
    );
    assert.equal(m.pending().length, 0);
    assert.equal(m.counters.dataChunks, 5);
  });

  it('clear() forgets the data and keeps the link status', () => {
    const m = new WorkbenchModel('kext', 10);
    m.applyFilterStatus({ connected: true, transport: 'iokit', paused: true });
    m.applyUpdate({ ...emptyUpdate({ ...emptyCounters(), bytesIn: 9 }), sockets: [socket] });
    m.clear();
    assert.equal(m.link.status, 'paused');
    assert.equal(m.counters.bytesIn, 0);
    assert.equal(m.sockets().length, 0);
  });

  it('keeps its own copies: mutating a view after handing it in changes nothing', () => {
    const m = new WorkbenchModel('emulator', 10);
    const s = { ...socket };
    m.applyUpdate({ ...emptyUpdate(), sockets: [s] });
    s.bytesIn = 999;
    assert.equal(m.socket('1:1')?.bytesIn, 0);
  });
});

// The live model without VS Code: what the views and the helper client rely on.
import * as assert from 'node:assert/strict';
import { type ModelPart, WorkbenchModel } from '../../../extension/src/model/workbenchModel';

const socket = {
  id: '1:1',
  pid: 10,
  processName: 'curl',
  protocol: 'tcp' as const,
  family: 4 as const,
  local: '127.0.0.1:4000',
  remote: '127.0.0.1:80',
  state: 'connected',
  bytesIn: 0,
  bytesOut: 0,
};

describe('WorkbenchModel', () => {
  it('fires one change event naming the part each mutation touched', () => {
    const m = new WorkbenchModel('emulator', 10);
    const seen: ModelPart[] = [];
    const sub = m.onDidChange((e) => seen.push(e.part));
    m.upsertSocket(socket);
    m.addExec({ pid: 10, ppid: 1, uid: 0, path: '/usr/bin/curl', time: 0 });
    m.addPending({ id: 'p', socketId: '1:1', direction: 'in', size: 3, heldAt: 0, deadline: 1 });
    m.removePending('p');
    m.removePending('p'); // already gone: no event
    m.setFilterState({ status: 'connected' });
    sub.dispose();
    m.removeSocket('1:1'); // after dispose: not seen
    assert.deepEqual(seen, ['sockets', 'execs', 'pending', 'pending', 'filter']);
  });

  it('drops the oldest exec events beyond the history limit, also when the limit shrinks', () => {
    const m = new WorkbenchModel('emulator', 4);
    for (let pid = 1; pid <= 6; pid++) m.addExec({ pid, ppid: 0, uid: 0, path: `/p${pid}`, time: 0 });
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

  it('refuses a pending payload for a socket it does not know', () => {
    const m = new WorkbenchModel('emulator', 10);
    assert.throws(
      () => m.addPending({ id: 'p', socketId: '7:7', direction: 'out', size: 1, heldAt: 0, deadline: 1 }),
      /unknown socket 7:7/,
    );
    assert.equal(m.pending().length, 0);
  });

  it('merges partial filter updates, counters included, and clear() keeps the status', () => {
    const m = new WorkbenchModel('kext', 10);
    m.setFilterState({
      status: 'connected',
      counters: { deferred: 2, passed: 1, dropped: 0, injected: 0, expired: 0, poolExhausted: 0 },
    });
    m.setFilterState({ abiVersion: 3 });
    assert.equal(m.filter.status, 'connected');
    assert.equal(m.filter.counters.deferred, 2);
    assert.equal(m.filter.abiVersion, 3);
    m.upsertSocket(socket);
    m.clear();
    assert.equal(m.filter.status, 'connected');
    assert.equal(m.filter.counters.deferred, 0);
    assert.equal(m.sockets().length, 0);
  });

  it('keeps its own copies: mutating a record after handing it in changes nothing', () => {
    const m = new WorkbenchModel('emulator', 10);
    const s = { ...socket };
    m.upsertSocket(s);
    s.bytesIn = 999;
    assert.equal(m.socket('1:1')?.bytesIn, 0);
  });
});

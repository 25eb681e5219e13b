// The extension model under protocol 2's batches: byte tuples update the
// socket in place, a socket stays the same object while it lives (the
// Sockets view's rows are found by it), and each 'sockets' change says
// what it touched, so the view redraws only those rows.
import * as assert from 'node:assert/strict';
import {
  emptyUpdate,
  type ModelChange,
  type SocketChanges,
  WorkbenchModel,
} from '../../../extension/src/model/workbenchModel';
import { socketView } from '../fixtures/views';

function changesOf(m: WorkbenchModel, fn: () => void): SocketChanges[] {
  const got: ModelChange[] = [];
  const sub = m.onDidChange((e) => got.push(e));
  fn();
  sub.dispose();
  return got.filter((e) => e.part === 'sockets').map((e) => e.sockets!);
}

describe('the model under byte tuples: sockets in place, changes named', () => {
  it('a tuple sets the totals on the same object; an unknown id is ignored', () => {
    const m = new WorkbenchModel('emulator', 100);
    m.applyUpdate({
      ...emptyUpdate(),
      sockets: [socketView({ id: '1:1' }), socketView({ id: '2:1', pid: 11 })],
    });
    const s = m.socket('1:1')!;
    const [c] = changesOf(m, () =>
      m.applyUpdate({
        ...emptyUpdate(),
        bytes: [
          ['1:1', 500, 20],
          ['9:9', 1, 1],
        ],
      }),
    );
    assert.equal(m.socket('1:1'), s, 'the same object');
    assert.equal(s.bytesIn, 500);
    assert.equal(s.bytesOut, 20);
    assert.equal(m.socket('9:9'), undefined);
    assert.deepEqual([...c.bytes], [10]);
    assert.equal(c.structural.size + c.changed.size + c.liveness.size, 0);
    assert.equal(m.socketsOf(10)[0], s);
  });

  it('a state change is in place and named; a new socket and a closed one are structural for their process', () => {
    const m = new WorkbenchModel('emulator', 100);
    m.applyUpdate({ ...emptyUpdate(), sockets: [socketView({ id: '1:1', state: 'connecting' })] });
    const s = m.socket('1:1')!;
    let [c] = changesOf(m, () => m.applyUpdate({ ...emptyUpdate(), sockets: [socketView({ id: '1:1' })] }));
    assert.equal(m.socket('1:1'), s);
    assert.equal(s.state, 'connected');
    assert.deepEqual([...c.changed], [s]);
    assert.equal(c.structural.size, 0);

    [c] = changesOf(m, () =>
      m.applyUpdate({
        ...emptyUpdate(),
        sockets: [
          socketView({ id: '2:1', pid: 12 }),
          socketView({ id: '1:1', state: 'closed', closedAt: Date.now() }),
        ],
      }),
    );
    assert.deepEqual([...c.structural], [12]);
    assert.deepEqual([...c.liveness].sort(), [10, 12]);
    assert.equal(m.socket('1:1'), s);
    assert.equal(s.state, 'closed');
    assert.deepEqual(m.socketPids(), [10, 12]);

    // Accepted by another process: it moves between process rows.
    [c] = changesOf(m, () =>
      m.applyUpdate({ ...emptyUpdate(), sockets: [socketView({ id: '2:1', pid: 13 })] }),
    );
    assert.deepEqual([...c.structural].sort(), [12, 13]);
    assert.deepEqual(m.socketPids(), [10, 13]);
    assert.deepEqual(
      m.socketsOf(13).map((x) => x.id),
      ['2:1'],
    );
  });

  it('a snapshot (a new helper) resets: the old objects are gone', () => {
    const m = new WorkbenchModel('emulator', 100);
    m.applyUpdate({
      ...emptyUpdate(),
      sockets: [socketView({ id: '1:1' }), socketView({ id: '3:1', pid: 30 })],
    });
    const old = m.socket('1:1');
    const [c] = changesOf(m, () =>
      m.applySnapshot({
        filter: { connected: true, transport: 'emulator', paused: false },
        sockets: [socketView({ id: '1:1', bytesIn: 9 })],
        execs: [],
        pending: [],
        counters: emptyUpdate().counters,
        rules: {},
      }),
    );
    assert.equal(c.reset, true);
    assert.notEqual(m.socket('1:1'), old);
    assert.equal(m.socket('1:1')!.bytesIn, 9);
    assert.deepEqual(m.socketPids(), [10], "the old helper's other sockets are gone");
  });
});

// The extension model's side of "time to edit" and of a lost link: extended
// deadlines replace a pending view in place, removals say why, and when the
// filter's client goes away every held row goes with it (no rows frozen at
// "0.0 s left" behind a disconnected or dead helper).
import { strict as assert } from 'node:assert';
import {
  emptyUpdate,
  type PendingRemoval,
  type PendingView,
  WorkbenchModel,
} from '../../../extension/src/model/workbenchModel';

const view = (id: string, deadline = 5000): PendingView => ({
  id,
  socketId: '1:1',
  pid: 1,
  process: 'curl',
  direction: 'out',
  size: 3,
  streamOffset: 0,
  deadline,
  heldAt: 0,
});

describe('WorkbenchModel: pending payloads over time', () => {
  it('an update with a new deadline replaces the view; it never brings back a removed one', () => {
    const m = new WorkbenchModel('emulator', 10);
    m.applyUpdate({ ...emptyUpdate(), pendingAdded: [view('1'), view('2')] });
    m.applyUpdate({ ...emptyUpdate(), pendingUpdated: [view('1', 60000)] });
    assert.equal(m.pendingPayload('1')!.deadline, 60000);
    m.applyUpdate({ ...emptyUpdate(), pendingRemoved: [{ id: '2', reason: 'timeout' }] });
    m.applyUpdate({ ...emptyUpdate(), pendingUpdated: [view('2', 60000)] });
    assert.equal(m.pendingPayload('2'), undefined);
    m.updatePending(view('2', 70000));
    assert.equal(m.pendingPayload('2'), undefined);
  });

  it('removals are reported with their reason, after the pending change', () => {
    const m = new WorkbenchModel('emulator', 10);
    const seen: string[] = [];
    m.onDidChange((e) => seen.push(e.part));
    m.onDidRemovePending((r) => seen.push(r.map((x) => `${x.id}:${x.reason}`).join(',')));
    m.applyUpdate({ ...emptyUpdate(), pendingAdded: [view('1'), view('2')] });
    seen.length = 0;
    m.applyUpdate({
      ...emptyUpdate(),
      pendingRemoved: [
        { id: '1', reason: 'timeout' },
        { id: '2', reason: 'replace' },
      ],
    });
    assert.deepEqual(seen.slice(-2), ['pending', '1:timeout,2:replace']);
  });

  it('releaseAllPending empties the rows at once and says why; a snapshot without a row is a release', () => {
    const m = new WorkbenchModel('emulator', 10);
    const removed: PendingRemoval[][] = [];
    m.onDidRemovePending((r) => removed.push(r));
    m.applyUpdate({ ...emptyUpdate(), pendingAdded: [view('1'), view('2')] });
    m.releaseAllPending('client-gone');
    assert.deepEqual(m.pending(), []);
    assert.deepEqual(removed, [
      [
        { id: '1', reason: 'client-gone' },
        { id: '2', reason: 'client-gone' },
      ],
    ]);
    m.releaseAllPending('client-gone'); // nothing left: no event
    assert.equal(removed.length, 1);
    m.applyUpdate({ ...emptyUpdate(), pendingAdded: [view('3')] });
    m.applySnapshot({
      filter: { connected: true, transport: 'emulator', paused: false },
      sockets: [],
      execs: [],
      pending: [],
      counters: emptyUpdate().counters,
      rules: {},
    });
    assert.deepEqual(removed[1], [{ id: '3', reason: 'released' }]);
  });
});

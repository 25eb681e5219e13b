// What a second view of the payload store (the webview editor of issue #14)
// relies on: a staged change carries the bytes and who staged them, so two
// views stay in step without echoing each other; holdTimes gives the same
// countdown the CodeLens shows; a webview panel's keepHeld lease keeps the
// chunk held like an editor tab; a release reaches every view as 'state'.
import { strict as assert } from 'node:assert';
import { emptyUpdate, WorkbenchModel } from '../../extension/src/model/workbenchModel';
import {
  type PayloadChange,
  type PayloadHelperPort,
  PayloadStore,
} from '../../extension/src/payload/payloadStore';
import type { PendingView } from '../../extension/src/shared/helperProtocol';

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array | undefined) => (b ? new TextDecoder().decode(b) : undefined);

function setup(holdTimeoutMs: number, editHoldMaxMs: number) {
  let now = 1_000_000;
  const model = new WorkbenchModel('emulator', 10);
  model.setLink({ status: 'connected' });
  const extends_: number[] = [];
  const helper: PayloadHelperPort = {
    payload: async () => bytes('original'),
    verdict: async () => {
      throw new Error('a view test sends nothing');
    },
    extendHold: async (id, holdMs) => {
      extends_.push(holdMs);
      const v = model.pendingPayload(id)!;
      const view = { ...v, deadline: Math.max(v.deadline, v.heldAt + holdMs) };
      model.applyUpdate({ ...emptyUpdate(), pendingUpdated: [view] });
      return view;
    },
  };
  const store = new PayloadStore({
    model,
    helper,
    holdTimeoutMs: () => holdTimeoutMs,
    editHoldMaxMs: () => editHoldMaxMs,
    now: () => now,
  });
  const view: PendingView = {
    id: '9',
    socketId: '3:1',
    pid: 42,
    process: 'python3',
    direction: 'out',
    size: 8,
    streamOffset: 0,
    remote: { address: '127.0.0.1', port: 8080 },
    heldAt: now,
    deadline: now + holdTimeoutMs,
  };
  model.applyUpdate({ ...emptyUpdate(), pendingAdded: [view] });
  const changes: PayloadChange[] = [];
  store.onDidChange((c) => changes.push(c));
  return { model, store, changes, extends_, tick: (ms: number) => (now += ms) };
}

describe('payload store: what a second view (the webview) needs', () => {
  it("a staged change carries the new bytes and its view's name; a revert carries none", async () => {
    const { store, changes } = setup(5000, 120000);
    await store.original('9');
    store.stage('9', bytes('from the webview'), 'webview');
    store.stage('9', bytes('from the hex document'));
    store.revert('9', 'webview');
    const staged = changes.filter((c) => c.what === 'staged');
    assert.deepEqual(
      staged.map((c) => [text(c.staged), c.by]),
      [
        ['from the webview', 'webview'],
        ['from the hex document', undefined],
        [undefined, 'webview'],
      ],
    );
    // The event's bytes are the listener's own: changing them changes nothing staged.
    store.stage('9', bytes('abc'));
    const last = changes[changes.length - 1];
    assert.ok(last.what === 'staged' && last.staged);
    last.staged[0] = 0x7a;
    assert.equal(text(store.staged('9')), 'abc');
    store.dispose();
  });

  it("holdTimes: the filter's time left, and the latest release only while a view keeps it held", async () => {
    const { store, tick } = setup(5000, 20000);
    assert.deepEqual(store.holdTimes('9'), { leftMs: 5000 });
    tick(1000);
    assert.deepEqual(store.holdTimes('9'), { leftMs: 4000 });
    const lease = store.keepHeld('9', 'webview panel');
    assert.equal(store.holdTimes('9')!.keptUntilMs, 19000);
    lease.dispose();
    assert.equal(store.holdTimes('9')!.keptUntilMs, undefined);
    assert.equal(store.holdTimes('unknown'), undefined);
    store.dispose();
  });

  it("a webview panel's lease keeps the chunk held; a release reaches it as 'state' and holdTimes ends", async () => {
    const { model, store, changes, extends_, tick } = setup(400, 1000);
    const lease = store.keepHeld('9', 'webview panel');
    tick(300); // within a quarter of the timeout of its deadline: due
    await new Promise((r) => setTimeout(r, 250));
    assert.ok(extends_.length >= 1, 'extended for the panel');
    assert.ok(changes.some((c) => c.what === 'deadline'));
    assert.ok(!changes.some((c) => c.what !== 'deadline'), 'a moved deadline is only a deadline change');
    model.applyUpdate({ ...emptyUpdate(), pendingRemoved: [{ id: '9', reason: 'timeout' }] });
    assert.deepEqual(changes[changes.length - 1], { id: '9', what: 'state' });
    assert.equal(store.state('9').kind, 'released');
    assert.equal(store.holdTimes('9'), undefined);
    assert.throws(() => store.stage('9', bytes('late')), /payload 9 was already released/);
    lease.dispose();
    store.dispose();
  });
});

// The window's payload store (extension/src/payload/payloadStore.ts) over a
// real WorkbenchModel and a recording stand-in for the helper: bytes are
// fetched once, edits are only staged until an action, an action on a chunk
// that is gone is refused with the reason and sends nothing, and an open
// payload is kept held step by step up to nke.editHoldMaxMs and no further.
import { strict as assert } from 'node:assert';
import { emptyUpdate, WorkbenchModel } from '../../extension/src/model/workbenchModel';
import {
  KEEP_AHEAD_MIN_MS,
  PayloadActionError,
  type PayloadHelperPort,
  PayloadStore,
} from '../../extension/src/payload/payloadStore';
import type { PendingView } from '../../extension/src/shared/helperProtocol';

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

function pending(id: string, holdMs: number, heldAt = Date.now()): PendingView {
  return {
    id,
    socketId: '3:1',
    pid: 42,
    process: 'python3',
    direction: 'out',
    size: 5,
    streamOffset: 0,
    remote: { address: '127.0.0.1', port: 8080 },
    deadline: heldAt + holdMs,
    heldAt,
  };
}

/** The helper as the store sees it: every call recorded; extends applied to the model like the real one. */
class FakeHelper implements PayloadHelperPort {
  fetches: string[] = [];
  verdicts: { id: string; verdict: string; bytes?: string }[] = [];
  extends: { id: string; holdMs: number }[] = [];
  data = new Map<string, Uint8Array>();
  failVerdict?: Error & { reason?: string };

  constructor(private readonly model: WorkbenchModel) {}

  async payload(id: string): Promise<Uint8Array> {
    this.fetches.push(id);
    await new Promise((r) => setTimeout(r, 5));
    return this.data.get(id)!;
  }

  async verdict(id: string, verdict: 'allow' | 'drop' | 'replace', b?: Uint8Array): Promise<void> {
    if (this.failVerdict) throw this.failVerdict;
    this.verdicts.push({ id, verdict, bytes: b && text(b) });
    this.model.applyUpdate({ ...emptyUpdate(), pendingRemoved: [{ id, reason: verdict }] });
  }

  async extendHold(id: string, holdMs: number): Promise<PendingView> {
    this.extends.push({ id, holdMs });
    const v = this.model.pendingPayload(id)!;
    const view = { ...v, deadline: Math.max(v.deadline, v.heldAt + holdMs) };
    this.model.applyUpdate({ ...emptyUpdate(), pendingUpdated: [view] });
    return view;
  }
}

/** keepAheadMinMs 0: steps of exactly holdTimeoutMs, as the step tests count them (KEEP_AHEAD_MIN_MS has its own test). */
function setup(holdTimeoutMs = 400, editHoldMaxMs = 1000, keepAheadMinMs?: number) {
  const model = new WorkbenchModel('emulator', 10);
  model.setLink({ status: 'connected' });
  const helper = new FakeHelper(model);
  const store = new PayloadStore({
    model,
    helper,
    holdTimeoutMs: () => holdTimeoutMs,
    editHoldMaxMs: () => editHoldMaxMs,
    keepAheadMinMs: keepAheadMinMs ?? 0,
  });
  const add = (id: string, data: string, holdMs = holdTimeoutMs) => {
    helper.data.set(id, bytes(data));
    model.applyUpdate({ ...emptyUpdate(), pendingAdded: [pending(id, holdMs)] });
  };
  return { model, helper, store, add };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('payload store: one store, many views', () => {
  it('fetches the original once, however many views ask at once, and keeps it after release', async () => {
    const { model, helper, store, add } = setup();
    add('7', 'hello');
    const [a, b] = await Promise.all([store.original('7'), store.original('7')]);
    assert.equal(text(a), 'hello');
    assert.equal(a, b);
    assert.deepEqual(helper.fetches, ['7']);
    model.applyUpdate({ ...emptyUpdate(), pendingRemoved: [{ id: '7', reason: 'timeout' }] });
    assert.equal(text(await store.original('7')), 'hello');
    assert.deepEqual(helper.fetches, ['7']);
    store.dispose();
  });

  it('stage and revert change what the views show, fire onDidChange, and send nothing', async () => {
    const { helper, store, add } = setup();
    add('7', 'hello');
    await store.original('7');
    const changed: string[] = [];
    store.onDidChange(({ id, what }) => changed.push(`${id}:${what}`));
    store.stage('7', bytes('hello, longer'));
    assert.equal(text(await store.current('7')), 'hello, longer');
    assert.equal(text(store.staged('7')!), 'hello, longer');
    store.stage('7', bytes('hello')); // back to the original: no edit
    assert.equal(store.staged('7'), undefined);
    store.stage('7', bytes('x'));
    store.revert('7');
    assert.equal(text(await store.current('7')), 'hello');
    assert.deepEqual(changed, ['7:staged', '7:staged', '7:staged', '7:staged']);
    assert.deepEqual(helper.verdicts, []);
    store.dispose();
  });

  it('Reinject Edited sends the staged bytes (or the bytes given); then every action is refused', async () => {
    const { helper, store, add } = setup();
    add('7', 'hello');
    add('8', 'world');
    await store.original('7');
    store.stage('7', bytes('edited!'));
    await store.act('7', 'reinjectEdited');
    assert.deepEqual(helper.verdicts, [{ id: '7', verdict: 'replace', bytes: 'edited!' }]);
    assert.deepEqual(store.state('7'), {
      kind: 'sent',
      action: 'reinjectEdited',
      size: 7,
      view: store.view('7'),
    });
    await assert.rejects(
      store.act('7', 'drop'),
      /payload 7 was already answered \(Reinject Edited Data, 7 bytes\)/,
    );
    assert.throws(() => store.stage('7', bytes('late')), /payload 7 was already answered/);
    await store.act('8', 'reinjectEdited', bytes('from the editor'));
    await store.act('8', 'drop').catch(() => {});
    assert.deepEqual(helper.verdicts[1], { id: '8', verdict: 'replace', bytes: 'from the editor' });
    assert.equal(helper.verdicts.length, 2);
    store.dispose();
  });

  it('a chunk the filter released is refused with the cause, and nothing is sent', async () => {
    const { model, helper, store, add } = setup();
    add('17', 'hello');
    await store.original('17');
    store.stage('17', bytes('edit'));
    model.applyUpdate({ ...emptyUpdate(), pendingRemoved: [{ id: '17', reason: 'timeout' }] });
    assert.equal(store.state('17').kind, 'released');
    for (const action of ['reinjectEdited', 'reinjectOriginal', 'drop'] as const) {
      await assert.rejects(
        store.act('17', action),
        (e: unknown) =>
          e instanceof PayloadActionError &&
          /^payload 17 was already released \(its deadline passed\)/.test(e.message),
      );
    }
    assert.throws(
      () => store.stage('17', bytes('more')),
      /payload 17 was already released \(its deadline passed\)/,
    );
    assert.deepEqual(helper.verdicts, []);
    store.dispose();
  });

  it('a disconnect releases every chunk at once; the store says why', async () => {
    const { model, store, add } = setup();
    add('1', 'a');
    add('2', 'b');
    await store.original('1');
    model.releaseAllPending('client-gone');
    assert.deepEqual(model.pending(), []);
    const s = store.state('1');
    assert.equal(s.kind === 'released' && s.reason, 'client-gone');
    await assert.rejects(
      store.act('1', 'drop'),
      /payload 1 was already released \(the filter's client went away/,
    );
    store.dispose();
  });

  it("the helper's reason for a refused action is recorded", async () => {
    const { helper, store, add } = setup();
    add('9', 'x');
    helper.failVerdict = Object.assign(new Error('payload 9 was already released (its socket closed)'), {
      reason: 'socket-gone',
    });
    await assert.rejects(store.act('9', 'reinjectOriginal'), /its socket closed/);
    const s = store.state('9');
    assert.equal(s.kind === 'released' && s.reason, 'socket-gone');
    store.dispose();
  });

  it('an answer from elsewhere (the tree, the CLI) turns the payload answered', async () => {
    const { model, store, add } = setup();
    add('5', 'x');
    await store.original('5');
    model.applyUpdate({ ...emptyUpdate(), pendingRemoved: [{ id: '5', reason: 'drop' }] });
    await assert.rejects(store.act('5', 'reinjectEdited'), /payload 5 was already answered \(Drop\)/);
    store.dispose();
  });

  it('keepHeld extends step by step past three hold timeouts, never beyond editHoldMaxMs', async function () {
    this.timeout(10000);
    const { model, helper, store, add } = setup(400, 1000);
    add('3', 'x');
    const heldAt = model.pendingPayload('3')!.heldAt;
    const changes: string[] = [];
    store.onDidChange(({ id, what }) => changes.push(`${id}:${what}`));
    const lease = store.keepHeld('3', 'editor');
    await sleep(1500);
    // Only the deadline moved: the documents' bytes did not (no file change to announce).
    assert.ok(changes.length > 0 && changes.every((c) => c === '3:deadline'), String(changes));
    const holds = helper.extends.map((x) => x.holdMs);
    assert.ok(holds.length >= 2, `extended ${holds.length} times: ${holds}`);
    assert.ok(
      holds.every((h, i) => i === 0 || h > holds[i - 1]),
      `holds only grow: ${holds}`,
    );
    assert.ok(
      holds.every((h) => h <= 1000),
      `never past editHoldMaxMs: ${holds}`,
    );
    assert.equal(holds[holds.length - 1], 1000);
    assert.equal(model.pendingPayload('3')!.deadline, heldAt + 1000);
    const n = helper.extends.length;
    await sleep(300);
    assert.equal(helper.extends.length, n, 'no more extends once at the maximum');
    lease.dispose();
    store.dispose();
  });

  it('with a short hold timeout an open payload is kept KEEP_AHEAD_MIN_MS ahead: a stalled host does not lose it', async () => {
    const { model, helper, store, add } = setup(200, 60000, KEEP_AHEAD_MIN_MS);
    add('6', 'x');
    const lease = store.keepHeld('6', 'editor');
    await sleep(100);
    const first = helper.extends[0];
    assert.ok(first, 'extended at once');
    const view = model.pendingPayload('6')!;
    assert.ok(
      view.deadline - Date.now() > KEEP_AHEAD_MIN_MS - 500,
      `held ${view.deadline - Date.now()} ms ahead, not just the 200 ms timeout`,
    );
    // A step later nothing is asked again: the deadline is still far.
    const n = helper.extends.length;
    await sleep(300);
    assert.equal(helper.extends.length, n);
    lease.dispose();
    store.dispose();
  });

  it('without a holder nothing is extended; editHoldMaxMs is clamped to the ABI cap', async () => {
    const { helper, store, add } = setup(200, 10_000_000);
    add('4', 'x');
    await sleep(300);
    assert.deepEqual(helper.extends, []);
    assert.equal(store.editHoldMaxMs(), 600000);
    const lease = store.keepHeld('4', 'editor');
    lease.dispose();
    await sleep(300);
    assert.ok(helper.extends.length <= 1);
    store.dispose();
  });
});

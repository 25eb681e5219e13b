// Exec Events' scope without VS Code: the processes under the filter and
// their descendants are kept apart from the machine's other execs, so noise
// never evicts them; a socket brings its process in; parents stay.
import * as assert from 'node:assert/strict';
import { emptyUpdate, WorkbenchModel } from '../../../extension/src/model/workbenchModel';
import type { ExecView } from '../../../extension/src/shared/helperProtocol';
import { socketView } from '../fixtures/views';

let nextId = 1;
const exec = (pid: number, ppid: number, path: string, underShim = false): ExecView => ({
  id: String(nextId++),
  pid,
  ppid,
  uid: 0,
  path,
  complete: true,
  truncated: false,
  underShim,
  time: 0,
});
const socket = (pid: number) =>
  socketView({ id: `9:${pid}`, pid, uid: 0, process: 'python3', local: undefined, remote: undefined });
const names = (l: ExecView[]) => l.map((e) => e.path);

describe('Exec Events scope', () => {
  it('shows the shim-run program, its re-exec and its child; hides the machine; counts what it hides', () => {
    const m = new WorkbenchModel('emulator', 100);
    m.applyUpdate({
      ...emptyUpdate(),
      execs: [
        exec(50, 1, '/usr/bin/grep'),
        exec(60, 40, '/usr/bin/env', true), // nke-emu run's env, under the shim
        exec(60, 40, '/bin/sh', true), // env became sh (no fork)
        exec(51, 1, '/usr/bin/readlink'),
        exec(61, 60, '/usr/bin/python3'), // sh's child: a descendant
      ],
    });
    const t = m.execTree();
    assert.deepEqual(names(t.roots), ['/usr/bin/env']);
    const [sh] = t.childrenOf.get(t.roots[0].id)!;
    assert.equal(sh.path, '/bin/sh');
    assert.deepEqual(names(t.childrenOf.get(sh.id)!), ['/usr/bin/python3']);
    assert.deepEqual(m.execCounts(), { inScope: 3, hidden: 2 });
    m.setExecScope('machine');
    assert.deepEqual(names(m.execTree().roots), ['/usr/bin/grep', '/usr/bin/env', '/usr/bin/readlink']);
  });

  it('a socket brings its process and its descendants into the scope (kext mode: no shim flag)', () => {
    const m = new WorkbenchModel('kext', 100);
    m.applyUpdate({ ...emptyUpdate(), execs: [exec(70, 1, '/usr/bin/curl'), exec(71, 70, '/bin/true')] });
    assert.equal(m.execTree().all.length, 0);
    m.applyUpdate({ ...emptyUpdate(), sockets: [socket(70)] });
    assert.deepEqual(names(m.execTree().all), ['/usr/bin/curl', '/bin/true']);
    assert.equal(m.execCounts().hidden, 0);
  });

  it('machine noise beyond the limit never evicts the processes under the filter', () => {
    const m = new WorkbenchModel('emulator', 10);
    m.applyUpdate({ ...emptyUpdate(), execs: [exec(80, 1, '/opt/app', true)] });
    for (let i = 0; i < 200; i++) {
      m.applyUpdate({ ...emptyUpdate(), execs: [exec(1000 + i, 1, '/bin/noise')] });
    }
    assert.deepEqual(names(m.execTree().all), ['/opt/app']);
    assert.equal(m.execCounts().hidden, 200);
    assert.equal(m.execs().length, 11, 'ten others kept, and the one in scope');
  });

  it('keeps a parent whose children are kept when the scope is over its limit', () => {
    const m = new WorkbenchModel('emulator', 3);
    m.applyUpdate({ ...emptyUpdate(), execs: [exec(90, 1, '/bin/parent', true)] });
    for (let i = 0; i < 5; i++) {
      m.applyUpdate({ ...emptyUpdate(), execs: [exec(91 + i, 90, `/bin/kid${i}`)] });
    }
    const t = m.execTree();
    assert.deepEqual(names(t.roots), ['/bin/parent']);
    assert.deepEqual(names(t.childrenOf.get(t.roots[0].id)!), ['/bin/kid3', '/bin/kid4']);
  });
});

describe('closed sockets', () => {
  it('are forgotten nke.closedSocketsKeptSeconds after they closed', () => {
    let now = 1000;
    const m = new WorkbenchModel('emulator', 10, () => now);
    m.setClosedSocketsKeptMs(5000);
    m.applyUpdate({ ...emptyUpdate(), sockets: [{ ...socket(5), state: 'closed', closedAt: 1000 }] });
    m.applyUpdate({ ...emptyUpdate(), sockets: [{ ...socket(6) }] });
    assert.equal(m.nextClosedExpiry(), 6000);
    now = 5999;
    assert.equal(m.pruneClosed(), false);
    now = 6000;
    assert.equal(m.pruneClosed(), true);
    assert.deepEqual(
      m.sockets().map((s) => s.pid),
      [6],
    );
    assert.deepEqual(m.socketPids(), [6]);
  });
});

// Issue #21: sockets the helper adopts (attached before it connected, as
// after a helper restart) carry pid 0 and no process name in the helper's
// model, so pid and process rules, matched again in TypeScript, stopped
// holding their chunks for a person. The filter knows the process; it now
// says which rule held a chunk, and the helper acts on that; and since the
// attach replay it also tells a newly connected helper who owns each live
// socket. Against the real emulator and a real python3 client.
import assert from 'node:assert/strict';
import { FilterEngine } from '../../extension/src/helper/engine';
import { closeRecordingServers, recordingServer, runUnder, useEmulator, waitFor } from './emu-support';

/**
 * python3 connects to 127.0.0.1:argv[1] (the socket is attached now, while
 * no helper is connected), prints its pid, waits `waitS` seconds for the
 * helper to connect, then sends each further argument 100 ms apart.
 */
function lateSender(waitS: number): string[] {
  return [
    'python3',
    '-c',
    `import os,socket,sys,time\ns=socket.create_connection(("127.0.0.1",int(sys.argv[1])))\nprint(os.getpid(),flush=True)\ntime.sleep(${waitS})\nfor a in sys.argv[2:]:\n s.sendall(a.encode()); time.sleep(0.1)\ns.close()`,
  ];
}

describe('helper with the emulator: rules on sockets it adopted', function () {
  this.timeout(60000);
  const emu = useEmulator();
  let engine: FilterEngine | undefined;
  afterEach(() => {
    engine?.dispose();
    engine = undefined;
    closeRecordingServers();
  });

  /** Runs the late sender; once its socket exists, connects an engine with `rules(pid)`; returns the first chunk held for a person. */
  async function heldForPerson(rules: (pid: number) => unknown) {
    const server = await recordingServer();
    const prog = runUnder(emu, [...lateSender(1.5), String(server.port), 'for-a-person ', 'second']);
    let out = '';
    prog.proc.stdout!.on('data', (d) => (out += d));
    await waitFor(() => /^\d+\n/.test(out), 20000, 'the client to connect and print its pid');
    const pid = Number(out.split('\n')[0]);
    engine = new FilterEngine();
    const e = engine;
    e.setRules(rules(pid));
    const pending = new Promise<{ id: string; socketId: string }>((resolve, reject) => {
      const t = setTimeout(
        () => reject(new Error('no chunk held for a person within 15 s: the helper answered them itself')),
        15000,
      );
      e.once('pending', (p) => (clearTimeout(t), resolve(p.view)));
    });
    e.connect();
    const { id, socketId } = await pending;
    const payload = e.getPayload(id).toString();
    const socket = e.model.sockets.get(socketId);
    e.verdict(id, 'allow');
    const rest = await prog.done;
    assert.equal(rest.code, 0, rest.stderr);
    assert.equal((await server.whenBytes(19)).toString(), 'for-a-person second');
    return { payload, pid, socket };
  }

  it('a process rule holds the chunks of an adopted socket for a person', async () => {
    const r = await heldForPerson(() => ({
      default: 'report',
      intercept: [{ action: 'hold', process: 'python3' }],
    }));
    assert.equal(r.payload, 'for-a-person ');
    // Attached before the helper connected: the filter's replay names its owner.
    assert.ok(r.socket, 'the socket is in the model');
    assert.equal(r.socket.view.pid, r.pid);
    assert.match(r.socket.view.process, /python3/);
  });

  it('a pid rule holds the chunks of an adopted socket for a person', async () => {
    const r = await heldForPerson((pid) => ({ default: 'report', intercept: [{ action: 'hold', pid }] }));
    assert.equal(r.payload, 'for-a-person ');
    assert.ok(r.socket, 'the socket is in the model');
    assert.equal(r.socket.view.pid, r.pid);
  });
});

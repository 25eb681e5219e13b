// Attach replay through the real emulator: a helper that opens the filter
// after sockets attached (Take Over from another window, Restart Helper,
// a second nke watch) learns each live socket's process and addresses from
// the filter's replay, not only its id from later traffic ("process not
// known"). Many sockets: more than the notification queue holds at once.
import assert from 'node:assert/strict';
import { FilterEngine } from '../../extension/src/helper/engine';
import { closeRecordingServers, recordingServer, runUnder, useEmulator, waitFor } from './emu-support';

/** python3 opens `n` connections to 127.0.0.1:port, then sleeps with them open. */
function opener(port: number, n: number): string[] {
  return [
    'python3',
    '-c',
    'import socket,sys,time\n' +
      'ss=[socket.create_connection(("127.0.0.1",int(sys.argv[1]))) for i in range(int(sys.argv[2]))]\n' +
      'print("open",flush=True)\n' +
      'time.sleep(60)',
    String(port),
    String(n),
  ];
}

describe('attach replay: a helper that connects late knows the live sockets', function () {
  this.timeout(60000);
  const emu = useEmulator();
  afterEach(() => closeRecordingServers());

  it('every live socket comes with its process, addresses and state, none adopted', async () => {
    const server = await recordingServer();
    const N = 1500; // attach + connect records: ~216 KiB, near the 256 KiB queue, with the listener's too
    let first: FilterEngine | undefined = new FilterEngine();
    first.setRules({ default: 'pass' });
    first.connect();
    const prog = runUnder(emu, opener(server.port, N));
    try {
      const mine = (e: FilterEngine) =>
        [...e.model.sockets.values()].filter((s) => s.view.remote?.port === server.port);
      await waitFor(() => mine(first!).length >= N, 30000, `${N} sockets in the first helper`);
      const pid = mine(first)[0].view.pid;
      first.dispose(); // the first client goes (another window takes over)
      first = undefined;

      const second = new FilterEngine();
      try {
        second.setRules({ default: 'pass' });
        second.connect();
        await waitFor(() => mine(second).length >= N, 30000, `${N} replayed sockets in the second helper`);
        const socks = mine(second);
        assert.equal(socks.length, N);
        for (const s of socks) {
          assert.equal(s.view.pid, pid, `socket ${s.view.id}: its process`);
          assert.equal(s.view.process, 'python3');
          assert.equal(s.view.state, 'connected');
          assert.equal(s.view.protocol, 'tcp');
          assert.equal(s.view.local?.address, '127.0.0.1');
          assert.equal(s.view.attachedEarlier, undefined, `socket ${s.view.id} was adopted, not replayed`);
        }
        assert.equal(second.model.counters.socketsAdopted, 0);
      } finally {
        second.dispose();
      }
    } finally {
      first?.dispose();
      prog.proc.kill('SIGKILL');
      await prog.done;
      server.close();
    }
  });
});

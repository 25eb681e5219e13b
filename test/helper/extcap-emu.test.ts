// Live capture in Wireshark's own tools: `nke extcap --install` puts the
// launcher into a temporary home's personal extcap folder, the real tshark
// lists the "nke" interface, and `tshark -i nke -a duration:N` captures a
// live exchange of a real program under the emulator, streamed by the
// helper (this process's engine, reached through its control socket) while
// it happens. What tshark wrote is what the real server received.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { personalExtcapDirs, wiresharkVersion } from '../../extension/src/capture/extcap';
import { type ControlServer, serveControl } from '../../extension/src/helper/controlServer';
import { FilterEngine } from '../../extension/src/helper/engine';
import { makePrivateDir } from '../../extension/src/shared/tokenSocket';
import {
  closeRecordingServers,
  recordingServer,
  root,
  runUnder,
  sender,
  useEmulator,
  waitFor,
} from './emu-support';
import { expertErrors, fields, followTcp } from './tshark';

const nke = path.join(root, 'dist/nke.js');

// Each argument is one write, 100 ms apart, then close.
const SENDER = sender(0.1);

describe('Wireshark extcap: the "nke" interface captures live', function () {
  this.timeout(120000);
  const emu = useEmulator();
  let dir: string;
  let home: string;
  let env: NodeJS.ProcessEnv;
  let savedCliDir: string | undefined;
  let engine: FilterEngine | undefined;
  let control: ControlServer | undefined;
  let capture: ChildProcess | undefined;
  before(() => {
    dir = makePrivateDir('nke-extcap-test-');
    home = path.join(dir, 'home');
    fs.mkdirSync(home, { mode: 0o700 });
    savedCliDir = process.env.NKE_CLI_DIR;
    process.env.NKE_CLI_DIR = path.join(dir, 'cli');
    // tshark with a home of its own: only this test's launcher is personal.
    env = { ...process.env, HOME: home, XDG_CONFIG_HOME: path.join(home, '.config') };
  });
  after(() => {
    capture?.kill('SIGKILL');
    control?.close();
    engine?.dispose();
    closeRecordingServers();
    if (savedCliDir === undefined) delete process.env.NKE_CLI_DIR;
    else process.env.NKE_CLI_DIR = savedCliDir;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('nke extcap --install writes the launcher into the personal extcap folder of this Wireshark', () => {
    const r = spawnSync(process.execPath, [nke, 'extcap', '--install'], { encoding: 'utf8', env });
    assert.equal(r.status, 0, r.stderr);
    const written = r.stdout.trim().split('\n');
    assert.deepEqual(
      written,
      personalExtcapDirs(home, wiresharkVersion() ?? null).map((d) => path.join(d, 'nke-workbench-extcap')),
    );
    for (const f of written) assert.equal(fs.statSync(f).mode & 0o777, 0o755);
    // Run as Wireshark runs it: the launcher answers the extcap steps.
    const ifaces = spawnSync(written[0], ['--extcap-interfaces', '--extcap-version=4.0'], {
      encoding: 'utf8',
      env,
    });
    assert.equal(ifaces.status, 0, ifaces.stderr);
    assert.match(ifaces.stdout, /^extcap \{version=[\d.]+\}$/m);
    assert.match(ifaces.stdout, /^interface \{value=nke\}\{display=NKE filter[^}]*\}$/m);
    const dlts = spawnSync(written[0], ['--extcap-dlts', '--extcap-interface', 'nke'], {
      encoding: 'utf8',
      env,
    });
    assert.match(dlts.stdout, /^dlt \{number=1\}\{name=EN10MB\}/m);
    const bad = spawnSync(written[0], ['--extcap-dlts', '--extcap-interface', 'eth0'], {
      encoding: 'utf8',
      env,
    });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /unknown interface "eth0" \(this program offers "nke"\)/);
  });

  it('tshark -D lists the interface', () => {
    const r = spawnSync('tshark', ['-D'], { encoding: 'utf8', env });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^\d+\. nke \(NKE filter[^)]*\)$/m);
  });

  it('a capture without a running helper fails with the reason on stderr (Wireshark shows it)', () => {
    const fifo = path.join(dir, 'no-helper.fifo');
    spawnSync('mkfifo', [fifo]);
    const r = spawnSync(
      process.execPath,
      [nke, 'extcap', '--capture', '--extcap-interface', 'nke', '--fifo', fifo],
      {
        encoding: 'utf8',
        env,
      },
    );
    assert.equal(r.status, 4); // ExitCode.noOwner: no helper owns the filter to answer
    assert.match(r.stderr, /no NKE helper is running .*start `nke watch` or connect the workbench/);
  });

  it('tshark -i nke -a duration captures a live exchange exactly as the server received it', async () => {
    engine = new FilterEngine({ captureHistoryBytes: 8 * 2 ** 20 });
    engine.setRules({ default: 'report' });
    engine.connect();
    control = await serveControl(engine);
    // Traffic before the capture starts is not in it (the stream begins now).
    const before = await recordingServer();
    assert.equal((await runUnder(emu, [...SENDER, String(before.port), 'before the capture']).done).code, 0);

    const out = path.join(dir, 'live.pcapng');
    capture = spawn('tshark', ['-i', 'nke', '-a', 'duration:12', '-F', 'pcapng', '-w', out], {
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    capture.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((r) => capture!.once('exit', r));
    // Streaming once tshark has our section header and interfaces.
    await waitFor(
      () => fs.existsSync(out) && fs.statSync(out).size > 0,
      60000,
      `tshark to start (${stderr})`,
    );

    const server = await recordingServer();
    const parts = ['GET /live HTTP/1.0\r\n', 'X-Captured: by tshark\r\n', '\r\n'];
    const prog = runUnder(emu, [...SENDER, String(server.port), ...parts]);
    assert.equal((await prog.done).code, 0);
    const want = parts.join('');
    assert.equal((await server.whenBytes(want.length)).toString(), want);

    assert.equal(await exited, 0, stderr);
    capture = undefined;
    assert.equal(expertErrors(out), '');
    const streams = fields(out, `tcp.port == ${server.port}`, ['tcp.stream']).map((f) => Number(f[0]));
    assert.ok(streams.length > 0, 'the live exchange is in the capture');
    const follow = followTcp(out, streams[0]);
    assert.equal(follow.sent[0].toString(), server.received().toString());
    assert.equal(
      fields(out, `tcp.port == ${before.port}`, ['frame.number']).length,
      0,
      'nothing from before the capture',
    );
    const comments = fields(out, `tcp.port == ${server.port} && frame.comment`, ['frame.comment']).map(
      (f) => f[0],
    );
    assert.ok(
      comments.some((c) => /^python3 \(pid \d+\) socket \d+:\d+ out: reported/.test(c)),
      comments.join('\n'),
    );
  });
});

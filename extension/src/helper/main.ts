// The helper process: started by the extension (under plain Node or VS
// Code's Electron-as-Node; as root through an administrator prompt on macOS),
// it connects back to the extension's socket, proves the one-time token, and
// serves the helper protocol for one FilterEngine until that connection ends.
//
//   node dist/helper.js --socket PATH --token-file PATH [--event-ring N] [--no-connect]
//                       [--capture-mib N] [--control]
//
// --event-ring: events the model's ring keeps for nke/history (default
// 100000). --capture-mib: the capture history of payload bytes (pcapng export, live
// capture), 0 for none. --control: also serve the control socket, so `nke
// export`, `nke verdict` and Wireshark's extcap reach this helper (skipped,
// with a log line, when another helper serves it).
//
// The token is passed in a 0600 file inside the extension's 0700 directory
// (never on the command line, which every user can read with ps) and the
// file is deleted once read.
import fs from 'node:fs';
import { Log } from '../shared/helperProtocol';
import { connectWithToken } from '../shared/tokenSocket';
import { ControlBusyError, type ControlServer, serveControl } from './controlServer';
import { FilterEngine } from './engine';
import { serveHelperProtocol } from './service';

interface Args {
  socket: string;
  tokenFile: string;
  eventRing?: number;
  connect: boolean;
  captureMiB: number;
  control: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Partial<Args> = { connect: true, captureMiB: 0, control: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) throw new Error(`${k} needs a value`);
      return argv[++i];
    };
    if (k === '--socket') a.socket = v();
    else if (k === '--token-file') a.tokenFile = v();
    else if (k === '--event-ring') {
      a.eventRing = Number(v());
      if (!Number.isInteger(a.eventRing) || a.eventRing < 1) {
        throw new Error('--event-ring must be a positive integer');
      }
    } else if (k === '--capture-mib') {
      a.captureMiB = Number(v());
      if (!Number.isInteger(a.captureMiB) || a.captureMiB < 0) {
        throw new Error('--capture-mib must be an integer >= 0');
      }
    } else if (k === '--control') a.control = true;
    else if (k === '--no-connect') a.connect = false;
    else throw new Error(`unknown argument ${k}`);
  }
  if (!a.socket || !a.tokenFile) throw new Error('--socket and --token-file are required');
  return a as Args;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const token = fs.readFileSync(args.tokenFile, 'utf8').trim();
  fs.rmSync(args.tokenFile, { force: true });
  const { connection, socket } = await connectWithToken(args.socket, token);
  const log = (level: 'info' | 'warn' | 'error', message: string) =>
    void connection.sendNotification(Log, { level, message }).catch(() => {});
  const engine = new FilterEngine({
    eventRingLimit: args.eventRing,
    captureHistoryBytes: args.captureMiB * 2 ** 20,
    log,
  });
  serveHelperProtocol(connection, engine);
  let control: ControlServer | undefined;
  const stop = () => {
    control?.close();
    engine.dispose(); // closes the filter client: the filter releases held chunks
    process.exit(0);
  };
  connection.onClose(stop);
  socket.on('close', stop);
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  connection.listen();
  if (args.control) {
    try {
      control = await serveControl(engine);
      log(
        'info',
        `nke export, nke verdict and Wireshark (nke extcap) reach this helper at ${control.socketPath}`,
      );
    } catch (e) {
      log(
        e instanceof ControlBusyError ? 'warn' : 'error',
        `no control socket for nke and Wireshark: ${(e as Error).message}`,
      );
    }
  }
  if (args.connect) {
    try {
      engine.connect();
    } catch (e) {
      // Not fatal: the extension sees the cause in status and may retry.
      void connection.sendNotification(Log, { level: 'error', message: (e as Error).message });
    }
  }
}

main().catch((e: Error) => {
  process.stderr.write(`nke helper: ${e.message}\n`);
  process.exit(1);
});

// `nke export` and `nke extcap`: the capture history of the helper that owns
// the filter (`nke watch`, `nke run` or a VS Code window's helper), written
// as pcapng or streamed live to Wireshark. Both ask that helper over the
// control socket; extcap speaks Wireshark's own argument syntax.
import path from 'node:path';
import * as P from '../shared/helperProtocol';
import {
  extcapConfigText,
  extcapDltsText,
  extcapInterfacesText,
  ExtcapUsageError,
  installLauncher,
  parseExtcapArgs,
  personalExtcapDirs,
} from '../capture/extcap';
import { connectOwner, dirOrFail } from './askOwner';
import { CliError, commandHelp, type CommandSpec, ExitCode, UsageError } from './cliArgs';

function noHelper(): CliError {
  return new CliError(
    `no NKE helper is running (no control socket in ${dirOrFail()}): the capture history lives in the ` +
      'helper that owns the filter; start `nke watch` or connect the workbench in VS Code',
    ExitCode.noOwner,
  );
}

export const exportCommand: CommandSpec = {
  name: 'export',
  summary: 'write the capture history as a pcapng file Wireshark and tshark read',
  usage: 'nke export --pcapng FILE [--socket ID ...] [--process NAME]',
  description:
    'Asks the helper that owns the filter (nke watch, nke run, or a VS Code window) to write\n' +
    'its capture history to FILE (a new file; an existing one is refused): every socket as a\n' +
    'TCP or UDP stream, edits, drops and data the filter passed unreported marked in packet\n' +
    'comments. --socket (repeatable) and --process select what goes in.',
  options: [
    { name: '--pcapng', value: 'FILE', help: 'the file to write (must not exist)' },
    { name: '--socket', value: 'ID', help: 'only this socket (an id like 3:1, as nke status shows it)' },
    { name: '--process', value: 'NAME', help: 'only sockets of processes of this name' },
  ],
  async run(args, argv) {
    if (args.positional.length) throw new UsageError(`nke export: unexpected argument ${args.positional[0]}`);
    const file = args.values.get('--pcapng');
    if (!file) throw new UsageError('nke export: --pcapng FILE is required');
    // --socket may be given more than once: the parsed values keep the last.
    const sockets: string[] = [];
    for (let i = 0; i < argv.length; i++) {
      if (argv[i] === '--socket' && i + 1 < argv.length) sockets.push(argv[++i]);
      else if (argv[i].startsWith('--socket=')) sockets.push(argv[i].slice('--socket='.length));
    }
    for (const id of sockets) {
      if (!/^\d+:\d+$/.test(id)) {
        throw new UsageError(`nke export: --socket ${id}: a socket id looks like 3:1`);
      }
    }
    const conn = await connectOwner();
    if (!conn) throw noHelper();
    try {
      const r = await conn.sendRequest(P.ExportPcapng, {
        path: path.resolve(file),
        sockets: sockets.length ? sockets : undefined,
        process: args.values.get('--process'),
        owner:
          process.getuid && process.getgid ? { uid: process.getuid(), gid: process.getgid() } : undefined,
      });
      process.stderr.write(
        `nke: wrote ${r.path}: ${r.packets} packets, ${r.sockets} sockets, ${r.chunks} chunks, ${r.gaps} gaps marked, ${r.bytes} bytes\n`,
      );
      return ExitCode.ok;
    } catch (e) {
      throw new CliError(`export to ${file} failed: ${(e as Error).message}`);
    } finally {
      conn.dispose();
    }
  },
};

export const extcapCommand: CommandSpec = {
  name: 'extcap',
  summary: "Wireshark's capture interface 'nke' (nke extcap --install puts its launcher in place)",
  usage: 'nke extcap --install [--dir DIR]   (Wireshark runs the other extcap steps itself)',
  description:
    'Wireshark runs this as an extcap program: --extcap-interfaces, --extcap-dlts,\n' +
    '--extcap-config, and --capture --fifo PATH to stream the live capture of the helper that\n' +
    'owns the filter. --install writes the launcher into your personal extcap folder (or DIR).',
  options: [],
  rawArgs: true,
  async run(_args, argv) {
    if (argv.length === 1 && (argv[0] === '--help' || argv[0] === '-h')) {
      process.stdout.write(commandHelp(extcapCommand));
      return ExitCode.ok;
    }
    let req;
    try {
      req = parseExtcapArgs([...argv]);
    } catch (e) {
      if (e instanceof ExtcapUsageError) throw new UsageError(e.message);
      throw e;
    }
    switch (req.step) {
      case 'interfaces':
        process.stdout.write(extcapInterfacesText());
        return ExitCode.ok;
      case 'dlts':
        process.stdout.write(extcapDltsText());
        return ExitCode.ok;
      case 'config':
        process.stdout.write(extcapConfigText());
        return ExitCode.ok;
      case 'install': {
        const dirs = req.dir ? [path.resolve(req.dir)] : personalExtcapDirs();
        for (const f of installLauncher(dirs, process.execPath, path.resolve(__filename))) {
          process.stdout.write(`${f}\n`);
        }
        return ExitCode.ok;
      }
      case 'capture': {
        // Wireshark shows what goes to stderr when a capture fails.
        const conn = await connectOwner();
        if (!conn) throw noHelper();
        const quit = () => {
          conn.dispose(); // the helper ends the stream with this connection
          process.exit(ExitCode.ok);
        };
        process.once('SIGTERM', quit);
        process.once('SIGINT', quit);
        try {
          await conn.sendRequest(P.StreamCapture, {
            path: path.resolve(req.fifo!),
            sockets: req.sockets,
            process: req.process,
            fromHistory: req.withHistory,
          });
          return ExitCode.ok;
        } catch (e) {
          throw new CliError(`live capture failed: ${(e as Error).message}`);
        } finally {
          conn.dispose();
        }
      }
    }
  },
};

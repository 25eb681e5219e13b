// Wireshark's extcap protocol for the "NKE filter" capture interface, and the
// launcher that puts `nke extcap` into the user's personal extcap folder.
//
// Wireshark (and tshark, dumpcap) run every program in its extcap folders:
//   PROG --extcap-interfaces [--extcap-version=X]   what interfaces it offers
//   PROG --extcap-dlts --extcap-interface IF         the link type of each
//   PROG --extcap-config --extcap-interface IF       its options (may be none)
//   PROG --capture --extcap-interface IF --fifo PATH [--extcap-capture-filter F] [options]
// and stop a capture with SIGTERM. The answers are lines of {key=value}
// fields (extcap(4), the Wireshark developer's guide, section "extcap").
//
// Pure except for the folder lookup and install (Node fs/child_process; no vscode).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LINKTYPE_ETHERNET } from './pcapng';

/** The interface name Wireshark shows and passes back with --extcap-interface. */
export const EXTCAP_INTERFACE = 'nke';
/** File name of the launcher in the extcap folder. */
export const EXTCAP_LAUNCHER = 'nke-workbench-extcap';
export const EXTCAP_VERSION = '1.0';

/** An extcap field value may not contain the characters that delimit fields. */
const field = (s: string) => s.replace(/[{}\n\r]/g, ' ');

export function extcapInterfacesText(): string {
  return [
    `extcap {version=${EXTCAP_VERSION}}`,
    `interface {value=${EXTCAP_INTERFACE}}{display=${field('NKE filter: what the socket filter sees, per process')}}`,
  ]
    .map((l) => `${l}\n`)
    .join('');
}

export function extcapDltsText(): string {
  return `dlt {number=${LINKTYPE_ETHERNET}}{name=EN10MB}{display=${field('Ethernet (headers synthesized by NKE Workbench)')}}\n`;
}

export function extcapConfigText(): string {
  return [
    `arg {number=0}{call=--process}{display=Process name}{type=string}{tooltip=${field('Only sockets of processes with this exact name; empty: every socket')}}{group=Filter}`,
    `arg {number=1}{call=--socket}{display=Socket ids}{type=string}{tooltip=${field('Comma-separated socket ids as the Sockets view shows them (3:1,4:1); empty: every socket')}}{group=Filter}`,
    `arg {number=2}{call=--with-history}{display=Start with the capture history}{type=booleanflag}{default=false}{tooltip=${field('Begin with what the helper kept before the capture started (nke.captureHistoryMiB), not only what comes next')}}{group=Filter}`,
  ]
    .map((l) => `${l}\n`)
    .join('');
}

export interface ExtcapRequest {
  step: 'interfaces' | 'dlts' | 'config' | 'capture' | 'install';
  interface?: string;
  fifo?: string;
  process?: string;
  sockets?: string[];
  /** --install --dir DIR: a folder other than the personal extcap folder */
  dir?: string;
  /** --with-history: the live stream begins with what the history holds */
  withHistory?: boolean;
}

export class ExtcapUsageError extends Error {}

/**
 * Parses an extcap command line (both `--opt value` and `--opt=value`, as
 * Wireshark passes either). Unknown options Wireshark may add in later
 * versions are ignored; a missing value or step is an error.
 */
export function parseExtcapArgs(argv: readonly string[]): ExtcapRequest {
  const opts = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new ExtcapUsageError(`unexpected argument ${a}`);
    const eq = a.indexOf('=');
    if (eq > 0) opts.set(a.slice(2, eq), a.slice(eq + 1));
    else if (
      [
        '--extcap-interface',
        '--fifo',
        '--process',
        '--socket',
        '--dir',
        '--extcap-capture-filter',
        '--extcap-control-in',
        '--extcap-control-out',
      ].includes(a)
    ) {
      if (i + 1 >= argv.length) throw new ExtcapUsageError(`${a} needs a value`);
      opts.set(a.slice(2), argv[++i]);
    } else opts.set(a.slice(2), true);
  }
  const str = (k: string) => (typeof opts.get(k) === 'string' ? (opts.get(k) as string) : undefined);
  const req: Partial<ExtcapRequest> = {
    interface: str('extcap-interface'),
    fifo: str('fifo'),
    process: str('process') || undefined,
    dir: str('dir'),
    withHistory: opts.has('with-history') && opts.get('with-history') !== 'false',
  };
  const sockets = str('socket');
  if (sockets) {
    req.sockets = sockets
      .split(',')
      .map((x) => x.trim())
      .filter(Boolean);
    const bad = req.sockets.find((x) => !/^\d+:\d+$/.test(x));
    if (bad) throw new ExtcapUsageError(`--socket: ${JSON.stringify(bad)} is not a socket id like 3:1`);
  }
  if (opts.has('install')) req.step = 'install';
  else if (opts.has('extcap-interfaces')) req.step = 'interfaces';
  else if (opts.has('extcap-dlts')) req.step = 'dlts';
  else if (opts.has('extcap-config')) req.step = 'config';
  else if (opts.has('capture')) req.step = 'capture';
  else {
    throw new ExtcapUsageError(
      'nke extcap: one of --extcap-interfaces, --extcap-dlts, --extcap-config, --capture or --install',
    );
  }
  if (req.step === 'dlts' || req.step === 'config' || req.step === 'capture') {
    if (req.interface !== EXTCAP_INTERFACE) {
      throw new ExtcapUsageError(
        `nke extcap: unknown interface ${JSON.stringify(req.interface ?? '')} (this program offers "${EXTCAP_INTERFACE}")`,
      );
    }
  }
  if (req.step === 'capture' && !req.fifo) {
    throw new ExtcapUsageError('nke extcap --capture needs --fifo PATH');
  }
  return req as ExtcapRequest;
}

/** Wireshark's version from `tshark -v` / `wireshark -v` ("4.0.17"), if either runs. */
export function wiresharkVersion(): [number, number] | undefined {
  for (const prog of ['tshark', 'wireshark']) {
    const r = spawnSync(prog, ['-v'], { encoding: 'utf8', timeout: 10000 });
    const m = /(?:TShark|Wireshark)[^\d]*(\d+)\.(\d+)/.exec(`${r.stdout ?? ''}`);
    if (m) return [Number(m[1]), Number(m[2])];
  }
  return undefined;
}

/**
 * The personal extcap folders of this user: ~/.local/lib/wireshark/extcap
 * for Wireshark 4.2 and later, ~/.config/wireshark/extcap before (both on
 * Linux and macOS; Windows keeps its own under %APPDATA%). Unknown version:
 * both, so whichever Wireshark comes finds it.
 */
export function personalExtcapDirs(
  home = os.homedir(),
  version: [number, number] | null = wiresharkVersion() ?? null,
): string[] {
  if (process.platform === 'win32') {
    return [path.join(process.env.APPDATA ?? path.join(home, 'AppData', 'Roaming'), 'Wireshark', 'extcap')];
  }
  const newer = path.join(home, '.local', 'lib', 'wireshark', 'extcap');
  const older = path.join(home, '.config', 'wireshark', 'extcap');
  if (!version) return [newer, older];
  const [major, minor] = version;
  return major > 4 || (major === 4 && minor >= 2) ? [newer] : [older];
}

const shQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * The launcher: a shell script that runs this CLI's `extcap` with the Node
 * (or Electron-as-Node) that installed it. NKE_CLI_DIR, when set at install
 * time, is kept: Wireshark started from a desktop does not have it.
 */
export function launcherScript(
  runtime: string,
  cliScript: string,
  env: NodeJS.ProcessEnv = process.env,
): string {
  const lines = [
    '#!/bin/sh',
    '# NKE Workbench: the "NKE filter" capture interface for Wireshark (installed by nke extcap --install).',
    'ELECTRON_RUN_AS_NODE=1; export ELECTRON_RUN_AS_NODE',
  ];
  if (env.NKE_CLI_DIR) {
    lines.push(`NKE_CLI_DIR=\${NKE_CLI_DIR:-${shQuote(env.NKE_CLI_DIR)}}; export NKE_CLI_DIR`);
  }
  lines.push(`exec ${shQuote(runtime)} ${shQuote(cliScript)} extcap "$@"`, '');
  return lines.join('\n');
}

/** Writes the launcher (0755) into each folder; returns the files written. */
export function installLauncher(dirs: readonly string[], runtime: string, cliScript: string): string[] {
  const script = launcherScript(runtime, cliScript);
  return dirs.map((dir) => {
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
    const file = path.join(dir, EXTCAP_LAUNCHER);
    const tmp = `${file}.tmp-${process.pid}`;
    fs.writeFileSync(tmp, script, { mode: 0o755 });
    fs.renameSync(tmp, file);
    return file;
  });
}

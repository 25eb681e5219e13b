// The command lines of the kext tasks, from the macOS version they are for
// (given, never read from the machine here: the tests pin 10.15, 11 and 14).
// Loading picks kextutil (10.15 and older) or `kmutil load -p` (11 and
// later), as the kext's Makefile does. Every line runs in the task's terminal
// under /bin/bash, so `sudo` can ask for a password there. No `vscode` import.
import path from 'node:path';

/** The Mac the tasks run on. */
export interface MacOs {
  /** `sw_vers -productVersion`, e.g. "10.15.7", "11.7.10", "14.5" */
  version: string;
}

/** The kext the tasks build and load (nke.kextDir, nke.kextBundle, nke.kextBundleId). */
export interface KextTarget {
  /** absolute folder with the kext's Makefile (its `make` builds the bundle) */
  dir: string;
  /** the built bundle, relative to dir, e.g. "build/NKEFilter.kext" */
  bundle: string;
  /** CFBundleIdentifier, e.g. "com.nkeworkbench.filter" */
  bundleId: string;
}

/** The IOUserClient class of the bundled kext: Unload names the processes that hold one open. */
export const bundledUserClientClass = 'com_nkeworkbench_FilterClient';

export type KextTaskKind = 'build' | 'load' | 'unload' | 'diagnose' | 'log';

/** Major.minor of a product version: "10.15.7" -> [10, 15], "14.5" -> [14, 5]. */
export function macOsRelease(version: string): [number, number] {
  const m = /^(\d+)(?:\.(\d+))?/.exec(version.trim());
  if (!m) throw new Error(`not a macOS version: ${JSON.stringify(version)} (expected e.g. 14.5)`);
  return [Number(m[1]), Number(m[2] ?? 0)];
}

/** kmutil replaced kextutil/kextload/kextunload in macOS 11. */
export function usesKmutil(os: MacOs): boolean {
  return macOsRelease(os.version)[0] >= 11;
}

/** Quotes one word for /bin/sh. */
export function shQuote(s: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The executable's name: what `log` calls the kext's messages' sender. */
export function kextExecutableName(k: KextTarget): string {
  return path.basename(k.bundle).replace(/\.kext$/, '');
}

/**
 * kextutil and kmutil refuse a kext not owned by root:wheel: load a
 * root-owned copy in a fresh private directory (mktemp: never a fixed /tmp
 * path another user could prepare), removed when the command ends.
 */
function stageLines(k: KextTarget): string[] {
  return [
    'set -e',
    'stage="$(sudo mktemp -d /tmp/nke-kext.XXXXXX)"',
    `trap 'sudo rm -rf "$stage"' EXIT`,
    `sudo cp -R ${shQuote(path.join(k.dir, k.bundle))} "$stage/"`,
    'sudo chown -R root:wheel "$stage"',
  ];
}

function staged(k: KextTarget): string {
  return `"$stage/"${shQuote(path.basename(k.bundle))}`;
}

/** The shell lines of one kext task for the given macOS (joined with newlines, run by bash -c). */
export function kextCommandLine(kind: KextTaskKind, os: MacOs, k: KextTarget): string {
  const kmutil = usesKmutil(os);
  const id = shQuote(k.bundleId);
  switch (kind) {
    case 'build':
      return `make -C ${shQuote(k.dir)}`;
    case 'load':
      return [
        ...stageLines(k),
        kmutil ? `sudo kmutil load -p ${staged(k)}` : `sudo kextutil -v ${staged(k)}`,
        kmutil ? `kmutil showloaded --bundle-identifier ${id}` : `kextstat -l -b ${id}`,
      ].join('\n');
    case 'unload': {
      // EBUSY while a user client is open (this window's helper was
      // disconnected first) or while sockets attached under the filter
      // live: say which processes still hold a user client.
      const unload = kmutil ? `sudo kmutil unload -b ${id}` : `sudo kextunload -v -b ${id}`;
      return [
        `${unload} || {`,
        '  status=$?',
        `  echo "NKE: ${k.bundleId} did not unload (exit $status). Processes holding its user client:"`,
        `  ioreg -r -c ${bundledUserClientClass} -l -w0 | grep IOUserClientCreator || echo "  none: re-injections or filter callbacks still in progress (see NKE: Show Kernel Log); unload again in a moment"`,
        '  exit $status',
        '}',
      ].join('\n');
    }
    case 'diagnose':
      return [
        ...stageLines(k),
        kmutil ? `sudo kmutil print-diagnostics -p ${staged(k)}` : `sudo kextutil -t -n -v ${staged(k)}`,
      ].join('\n');
    case 'log': {
      const predicate = `sender == "${kextExecutableName(k)}" OR eventMessage CONTAINS "${k.bundleId}"`;
      // `--style compact` is macOS 11's; 10.15 has syslog.
      return `log stream --style ${kmutil ? 'compact' : 'syslog'} --predicate ${shQuote(predicate)}`;
    }
  }
}

/** What `kextCommandLine` runs for a kext that is loaded: its line in showloaded / kextstat. */
export function loadedKextQuery(os: MacOs, bundleId: string): { command: string; args: string[] } {
  return usesKmutil(os)
    ? { command: 'kmutil', args: ['showloaded', '--bundle-identifier', bundleId] }
    : { command: 'kextstat', args: ['-l', '-b', bundleId] };
}

/**
 * Wraps a task's lines so their output also lands in `transcript` (Load
 * Filter reads it to explain a failure) and the task still exits with the
 * lines' status. sudo prompts on the terminal itself, not through the pipe.
 */
export function withTranscript(lines: string, transcript: string): string {
  return `{\n${lines}\n} 2>&1 | tee ${shQuote(transcript)}\nexit "\${PIPESTATUS[0]}"`;
}

/** The message (and exit status 78, EX_CONFIG) of a macOS-only task started elsewhere. */
export function needsMacOsCommandLine(taskLabel: string, platform: string): string {
  const why =
    `NKE: "${taskLabel}" runs on macOS only (this is ${platform}). ` +
    'Open the folder on a test Mac (Remote-SSH), or use nke.mode "emulator" here.';
  return `echo ${shQuote(why)} >&2\nexit 78`;
}

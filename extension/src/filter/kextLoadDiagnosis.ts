// What a failed kext step means, from what kextutil / kmutil / csrutil /
// ioreg printed: the states a Mac really puts a kext developer in (not
// approved, SIP or Reduced Security not set, an older copy loaded, not
// signed, does not link), each with what to do. Pure functions of recorded
// output, so they are tested on Linux. The patterns are the tools' own
// messages (kmutil 11+: KMErrorDomain texts; kextutil 10.13-10.15).
// No `vscode` import.
import { pathToFileURL } from 'node:url';
import { type MacOs, macOsRelease } from '../tasks/kextCommandLines';

export type KextProblem =
  | 'not-approved'
  | 'sip'
  | 'unsigned'
  | 'older-loaded'
  | 'does-not-link'
  | 'wrong-arch'
  | 'ownership'
  | 'sudo'
  | 'in-use'
  | 'build-failed'
  | 'failed';

export interface KextAction {
  title: string;
  command: string;
  args?: unknown[];
}

export interface KextDiagnosis {
  problem: KextProblem;
  /** what happened and what to do, for the error notification */
  message: string;
  action?: KextAction;
}

/** The Mac a step ran on. */
export interface MacSituation {
  macOs: MacOs;
  /** `uname -m`: x86_64 or arm64 */
  machine: string;
  /** `csrutil status` (SIP), when it could be read */
  csrutilStatus?: string;
}

/** Where approvals are, by macOS version. */
export function securitySettingsPane(os: MacOs): string {
  const [major] = macOsRelease(os.version);
  return major >= 13 ? 'System Settings → Privacy & Security' : 'System Preferences → Security & Privacy';
}

/** true when SIP lets unsigned kexts load: SIP off, or on without kext protection. */
export function sipAllowsUnsignedKexts(csrutilStatus: string | undefined): boolean {
  if (!csrutilStatus) return false;
  return (
    /Protection status:\s*disabled/i.test(csrutilStatus) || /Kext Signing:\s*disabled/i.test(csrutilStatus)
  );
}

/** The action that opens a step's output (the transcript the task wrote). */
export function showOutputAction(transcript: string): KextAction {
  return { title: 'Show Output', command: 'vscode.open', args: [pathToFileURL(transcript).href] };
}

const openSecurity: KextAction = { title: 'Open Security Settings', command: 'nke.openMacSecuritySettings' };
const showProblems: KextAction = { title: 'Show Problems', command: 'workbench.actions.view.problems' };

const appleSilicon = (s: MacSituation) => /^arm64/.test(s.machine);

/** Why `nke: kext load` (or diagnose) failed, from its output and exit status. */
export function diagnoseLoadFailure(
  output: string,
  exitCode: number | undefined,
  s: MacSituation,
  transcript: string,
): KextDiagnosis {
  const pane = securitySettingsPane(s.macOs);
  const kmutil = macOsRelease(s.macOs.version)[0] >= 11;
  if (/not approved to load|Kext rejected due to system policy/i.test(output)) {
    const steps = kmutil
      ? `allow "System software from developer …" in ${pane}, restart the Mac (macOS rebuilds its auxiliary kernel collection), then run NKE: Load Filter again`
      : `allow "System software from developer …" in ${pane} (offered for 30 minutes after a refused load), then run NKE: Load Filter again`;
    return {
      problem: 'not-approved',
      message:
        `the kext is not approved: ${steps}.` +
        (appleSilicon(s)
          ? ' On Apple Silicon the Allow button needs Reduced Security with "Allow user management of kernel extensions from identified developers" (Startup Security Utility in Recovery) first.'
          : ''),
      action: openSecurity,
    };
  }
  if (
    /The following symbols are unresolved|Failed to bind '|no compatible dependency found|dependency '[^']*' not found|link error|link failed/i.test(
      output,
    )
  ) {
    return {
      problem: 'does-not-link',
      message:
        "the kext does not link against this kernel: the missing symbols and dependencies are in the Problems view (on the bundle's Info.plist). Add the KPI library that exports each symbol to OSBundleLibraries (Info.plist) or define it, rebuild, load again.",
      action: showProblems,
    };
  }
  const arch = /Incompatible architecture: ([^"\n]*)/.exec(output);
  if (arch) {
    return {
      problem: 'wrong-arch',
      message: `the kext is built for another architecture (${arch[1].trim()}): on Apple Silicon build with ARCHS=arm64e and MACOSX_DEPLOYMENT_TARGET=12.0 or later (a macOS 12+ SDK).`,
      action: showOutputAction(transcript),
    };
  }
  const signatureRefused =
    /Bad code signature|not code signed|Untrusted kexts are not allowed|invalid signature|code signature is invalid/i.test(
      output,
    ) && !/invalid signature[^\n]*\ballowed\b/i.test(output);
  if (signatureRefused) {
    if (!sipAllowsUnsignedKexts(s.csrutilStatus)) {
      return {
        problem: 'sip',
        message:
          'SIP refuses this kext: it is not signed with a Developer ID for kexts. On a test Mac, start Recovery and run `csrutil enable --without kext`' +
          (appleSilicon(s)
            ? ' and, in Startup Security Utility, choose Reduced Security with "Allow user management of kernel extensions from identified developers"'
            : '') +
          '; or build with CODESIGN_IDENTITY set to your kext-signing identity. Then load again.',
        action: showOutputAction(transcript),
      };
    }
    return {
      problem: 'unsigned',
      message:
        'the kext is not signed, or its signature is broken (rebuilt or copied after signing): build with CODESIGN_IDENTITY="-" (ad hoc, enough while SIP\'s kext protection is off) or your Developer ID, then load again.',
      action: showOutputAction(transcript),
    };
  }
  if (/Invalid ownership|Authentication Failures|owner\/permissions are incorrect/i.test(output)) {
    return {
      problem: 'ownership',
      message:
        'the loader refused the bundle\'s ownership (it must be root:wheel): load through NKE: Load Filter or the "nke: kext load" task, which load a root-owned copy.',
      action: showOutputAction(transcript),
    };
  }
  if (
    /incorrect password attempts|a password is required|no tty present|sudo: a terminal is required/i.test(
      output,
    )
  ) {
    return {
      problem: 'sudo',
      message:
        'sudo did not get the administrator password: type it in the "kext load" task terminal when it asks, then run NKE: Load Filter again.',
      action: showOutputAction(transcript),
    };
  }
  if (/already loaded/i.test(output)) {
    return olderCopyLoaded(undefined);
  }
  return {
    problem: 'failed',
    message: `${kmutil ? 'kmutil load' : 'kextutil'} failed (exit ${exitCode ?? 'unknown'}); its output says why. NKE: Run Task → "nke: kext diagnose" runs ${kmutil ? 'kmutil print-diagnostics' : 'kextutil -t -n'}.`,
    action: showOutputAction(transcript),
  };
}

/** A loaded kext as `kmutil showloaded` / `kextstat -l` list it. */
export interface LoadedKext {
  bundleId: string;
  version: string;
  uuid: string;
}

/** The line of `bundleId` in `kmutil showloaded --bundle-identifier` or `kextstat -l -b` output. */
export function parseLoadedKext(output: string, bundleId: string): LoadedKext | undefined {
  const id = bundleId.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const m = new RegExp(`\\s${id} \\(([^)]*)\\) ([0-9A-Fa-f]{8}-[0-9A-Fa-f-]{27})`).exec(output);
  return m ? { bundleId, version: m[1], uuid: m[2].toUpperCase() } : undefined;
}

/** The UUIDs (one per architecture) `dwarfdump --uuid` prints for a binary. */
export function parseBinaryUuids(output: string): string[] {
  return [...output.matchAll(/UUID: ([0-9A-Fa-f-]{36})/g)].map((m) => m[1].toUpperCase());
}

/** What Load must do given the loaded copy and the build. */
export type LoadedCopyState = 'not-loaded' | 'this-build' | 'older-copy';

export function loadedCopyState(loaded: LoadedKext | undefined, builtUuids: string[]): LoadedCopyState {
  if (!loaded) return 'not-loaded';
  return builtUuids.includes(loaded.uuid) ? 'this-build' : 'older-copy';
}

export function olderCopyLoaded(loaded: LoadedKext | undefined): KextDiagnosis {
  return {
    problem: 'older-loaded',
    message: `an older copy of the kext is loaded${loaded ? ` (${loaded.bundleId} ${loaded.version}, UUID ${loaded.uuid})` : ''}, not this build: run NKE: Unload Filter (close programs whose sockets it still filters), then NKE: Load Filter.`,
    action: { title: 'Unload Filter', command: 'nke.unloadFilter' },
  };
}

/** Why `nke: kext unload` failed: which processes hold the user client, or that sockets still do. */
export function diagnoseUnloadFailure(
  output: string,
  exitCode: number | undefined,
  transcript: string,
): KextDiagnosis {
  const holders = [...output.matchAll(/"IOUserClientCreator"\s*=\s*"([^"]*)"/g)].map((m) => m[1]);
  if (holders.length) {
    return {
      problem: 'in-use',
      message: `the kext is in use: its user client is still open in ${holders.join('; ')} (another window, nke watch, or a helper left running). Stop that client, then unload again.`,
      action: showOutputAction(transcript),
    };
  }
  if (/in use|retained|EBUSY|did not stop|can't unload|start\/stop routine failed/i.test(output)) {
    return {
      problem: 'in-use',
      message:
        // With no client, the kext refuses while released bytes are still
        // being re-injected (a slow peer) or a filter callback is still
        // running; XNU's sflt_unregister detaches the filter from every
        // socket at once, so open sockets do not keep it (docs/kext.md, Unload).
        'the kext refused to unload (EBUSY) with no client connected: bytes released earlier are still being re-injected, or a filter callback is still running. Both end by themselves: unload again in a moment; NKE: Show Kernel Log shows the reason.',
      action: { title: 'Show Kernel Log', command: 'nke.showKernelLog' },
    };
  }
  return {
    problem: 'failed',
    message: `unloading the kext failed (exit ${exitCode ?? 'unknown'}); its output says why.`,
    action: showOutputAction(transcript),
  };
}

// Load Filter in kext mode cannot run here (no Mac): its decisions are pinned
// on recorded output of kmutil, kextutil, csrutil, dwarfdump and ioreg. The
// recorded lines are the tools' real messages (with this kext's names).
import * as assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  type CommandResult,
  KextBackend,
  type KextBackendOptions,
  KextError,
} from '../../../extension/src/filter/kextBackend';
import {
  diagnoseLoadFailure,
  diagnoseUnloadFailure,
  loadedCopyState,
  type MacSituation,
  parseBinaryUuids,
  parseLoadedKext,
  securitySettingsPane,
  sipAllowsUnsignedKexts,
} from '../../../extension/src/filter/kextLoadDiagnosis';
import type { HelperSession } from '../../../extension/src/helperClient/helperSession';
import type { NkeTaskName } from '../../../extension/src/tasks/nkeTaskDefinition';

const id = 'com.nkeworkbench.filter';
const sipOn = 'System Integrity Protection status: enabled.\n';
const sipOff = 'System Integrity Protection status: disabled.\n';
const sipNoKext =
  'System Integrity Protection status: enabled (Custom Configuration).\n\nConfiguration:\n\tApple Internal: disabled\n\tKext Signing: disabled\n\tFilesystem Protections: enabled\n';
const intel14: MacSituation = { macOs: { version: '14.5' }, machine: 'x86_64', csrutilStatus: sipOn };
const m1: MacSituation = { macOs: { version: '14.5' }, machine: 'arm64', csrutilStatus: sipOn };
const catalina: MacSituation = { macOs: { version: '10.15.7' }, machine: 'x86_64', csrutilStatus: sipOn };

const kmutilNotApproved = `Error Domain=KMErrorDomain Code=27 "Extension with identifiers ${id} not approved to load. Please approve using System Settings." UserInfo={NSLocalizedDescription=Extension with identifiers ${id} not approved to load. Please approve using System Settings.}`;
const kextutilRejected = `Kext rejected due to system policy: <OSKext 0x7fc4 [0x7fff]> { URL = "file:///tmp/nke-kext.Ab/NKEFilter.kext/", ID = "${id}" }`;
const kmutilBadSignature = `Error Domain=KMErrorDomain Code=29 "Authenticating extension failed: Kext ${id} v0.1.0 in executable kext bundle ${id} at /private/var/db/KernelExtensionManagement/Staging/${id}.UzWJXK/NKEFilter.kext:\n\nAuthenticating extension failed: Bad code signature"`;
const kextutilUnsigned = `Diagnostics for /tmp/nke-kext.Ab/NKEFilter.kext:\nCode Signing Failure: not code signed\nUntrusted kexts are not allowed\nERROR: invalid signature for ${id}, will not load`;
const kextutilAllowedButUnresolved = `Kext with invalid signatured (-67062) allowed: <OSKext 0x7f> { ID = "${id}" }\nCode Signing Failure: not code signed\n(kernel) kxld[${id}]: The following symbols are unresolved for this kext:\n(kernel) kxld[${id}]: \t_sock_retain\nFailed to load /tmp/nke-kext.Ab/NKEFilter.kext - (libkern/kext) link error.`;
const kmutilArch = `Error Domain=KMErrorDomain Code=71 "Incompatible architecture: Binary is for x86_64, but needed arch arm64e" UserInfo={NSLocalizedDescription=Incompatible architecture: Binary is for x86_64, but needed arch arm64e}`;
const kmutilOwnership = `Error Domain=KMErrorDomain Code=30 "Validating extension failed: Kext ${id} v0.1.0 in executable kext bundle ${id} at /private/var/db/KernelExtensionManagement/Staging/${id}.ohkpcD/NKEFilter.kext:\n\nFilesystem error: Invalid ownership (501:20) should be (0:0) on /private/var/db/KernelExtensionManagement/Staging/${id}.ohkpcD/NKEFilter.kext/Contents"`;
const sudoFailed = 'sudo: 3 incorrect password attempts\n';

describe('kext load: what a failure means', () => {
  const t = '/tmp/transcript.log';

  it('not approved (kmutil, 11+): approve in System Settings, restart, load again', () => {
    const d = diagnoseLoadFailure(kmutilNotApproved, 1, intel14, t);
    assert.equal(d.problem, 'not-approved');
    assert.match(d.message, /System Settings → Privacy & Security, restart the Mac/);
    assert.doesNotMatch(d.message, /Apple Silicon/);
    assert.equal(d.action?.command, 'nke.openMacSecuritySettings');
  });

  it('not approved on Apple Silicon also names Reduced Security', () => {
    const d = diagnoseLoadFailure(kmutilNotApproved, 1, m1, t);
    assert.equal(d.problem, 'not-approved');
    assert.match(
      d.message,
      /Reduced Security with "Allow user management of kernel extensions from identified developers"/,
    );
  });

  it('not approved (kextutil, 10.15): System Preferences, within 30 minutes, no restart', () => {
    const d = diagnoseLoadFailure(kextutilRejected, 71, catalina, t);
    assert.equal(d.problem, 'not-approved');
    assert.match(d.message, /System Preferences → Security & Privacy \(offered for 30 minutes/);
    assert.equal(securitySettingsPane({ version: '12.7' }), 'System Preferences → Security & Privacy');
  });

  it('a bad or missing signature with SIP enforcing kext signing: csrutil enable --without kext (and Reduced Security on Apple Silicon)', () => {
    let d = diagnoseLoadFailure(kmutilBadSignature, 1, intel14, t);
    assert.equal(d.problem, 'sip');
    assert.match(d.message, /csrutil enable --without kext/);
    assert.doesNotMatch(d.message, /Startup Security Utility/);
    d = diagnoseLoadFailure(kmutilBadSignature, 1, m1, t);
    assert.match(d.message, /Startup Security Utility, choose Reduced Security/);
    d = diagnoseLoadFailure(kextutilUnsigned, 1, catalina, t);
    assert.equal(d.problem, 'sip');
    assert.deepEqual(d.action, {
      title: 'Show Output',
      command: 'vscode.open',
      args: ['file:///tmp/transcript.log'],
    });
  });

  it('a bad signature with SIP already off: the kext itself is not signed', () => {
    assert.equal(sipAllowsUnsignedKexts(sipOff), true);
    assert.equal(sipAllowsUnsignedKexts(sipNoKext), true);
    assert.equal(sipAllowsUnsignedKexts(sipOn), false);
    assert.equal(sipAllowsUnsignedKexts(undefined), false);
    const d = diagnoseLoadFailure(kmutilBadSignature, 1, { ...m1, csrutilStatus: sipNoKext }, t);
    assert.equal(d.problem, 'unsigned');
    assert.match(d.message, /CODESIGN_IDENTITY="-"/);
  });

  it('an allowed invalid signature is not the problem: the unresolved symbol is', () => {
    const d = diagnoseLoadFailure(kextutilAllowedButUnresolved, 1, { ...catalina, csrutilStatus: sipOff }, t);
    assert.equal(d.problem, 'does-not-link');
    assert.equal(d.action?.command, 'workbench.actions.view.problems');
  });

  it('wrong architecture, bad ownership, sudo without a password, and the rest', () => {
    const arch = diagnoseLoadFailure(kmutilArch, 1, m1, t);
    assert.equal(arch.problem, 'wrong-arch');
    assert.match(arch.message, /Binary is for x86_64, but needed arch arm64e.*ARCHS=arm64e/);
    assert.equal(diagnoseLoadFailure(kmutilOwnership, 1, intel14, t).problem, 'ownership');
    assert.equal(diagnoseLoadFailure(sudoFailed, 1, intel14, t).problem, 'sudo');
    const other = diagnoseLoadFailure('something new\n', 5, intel14, t);
    assert.equal(other.problem, 'failed');
    assert.match(other.message, /kmutil load failed \(exit 5\).*kmutil print-diagnostics/);
    assert.match(
      diagnoseLoadFailure('x', 5, catalina, t).message,
      /kextutil failed \(exit 5\).*kextutil -t -n/,
    );
  });
});

describe('kext load: which copy is loaded', () => {
  const showloaded = [
    'No variant specified, falling back to release',
    'Index Refs Address            Size       Wired      Name (Version) UUID <Linked Against>',
    `  245    0 0                  0x6eb98    0x6eb98    ${id} (0.1.0) 9f1fd5a4-45f8-371e-a935-1e1e12f40439 <20 7 5 4 3 1>`,
  ].join('\n');
  const kextstat = `  171    0 0xffffff7f8364d000 0x5000     0x5000     ${id} (0.1.0) 3C0B1C2D-0000-4444-8888-0123456789AB <5 4 3 1>\n`;

  it('reads the loaded copy from kmutil showloaded and kextstat -l', () => {
    assert.deepEqual(parseLoadedKext(showloaded, id), {
      bundleId: id,
      version: '0.1.0',
      uuid: '9F1FD5A4-45F8-371E-A935-1E1E12F40439',
    });
    assert.equal(parseLoadedKext(kextstat, id)?.uuid, '3C0B1C2D-0000-4444-8888-0123456789AB');
    assert.equal(parseLoadedKext('No variant specified, falling back to release\n', id), undefined);
    assert.equal(
      parseLoadedKext(showloaded.replace(id, `${id}x`), id),
      undefined,
      'a longer id is another kext',
    );
  });

  it('compares it with the build (dwarfdump --uuid): not loaded, this build, or an older copy', () => {
    const built = parseBinaryUuids(
      'UUID: 9F1FD5A4-45F8-371E-A935-1E1E12F40439 (x86_64) /k/build/NKEFilter.kext/Contents/MacOS/NKEFilter\nUUID: 11111111-2222-3333-4444-555555555555 (arm64e) /k/...\n',
    );
    assert.equal(built.length, 2);
    assert.equal(loadedCopyState(undefined, built), 'not-loaded');
    assert.equal(loadedCopyState(parseLoadedKext(showloaded, id), built), 'this-build');
    assert.equal(loadedCopyState(parseLoadedKext(kextstat, id), built), 'older-copy');
  });
});

describe('kext unload: what still holds it', () => {
  it('names the processes whose user client is open', () => {
    const out = `Failed to unload ${id} - (libkern/kext) kext is in use or retained (cannot unload).\nNKE: ${id} did not unload (exit 1). Processes holding its user client:\n    |   "IOUserClientCreator" = "pid 4242, nke"\n`;
    const d = diagnoseUnloadFailure(out, 1, '/t');
    assert.equal(d.problem, 'in-use');
    assert.match(d.message, /still open in pid 4242, nke/);
  });

  it('with no client open: re-injections or callbacks in progress, unload again in a moment', () => {
    const out = `Error Domain=KMErrorDomain Code=... "Kext ${id} is in use"\n  none: re-injections or filter callbacks still in progress\n`;
    const d = diagnoseUnloadFailure(out, 1, '/t');
    assert.equal(d.problem, 'in-use');
    assert.match(d.message, /still being re-injected, or a filter callback is still running/);
    assert.match(d.message, /unload again in a moment/);
    assert.equal(d.action?.command, 'nke.showKernelLog');
  });
});

/** The Mac's side of Load Filter, replayed: each task's exit code and transcript, each tool's output. */
function replayedMac(o: {
  tasks: Partial<Record<NkeTaskName, { code: number; output?: string }>>;
  exec: Record<string, string>;
  addonBuilt?: boolean;
}) {
  const ran: NkeTaskName[] = [];
  const steps: string[] = [];
  const calls: string[] = [];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nke-kext-replay-'));
  const addon = path.join(dir, 'nke_addon.node');
  if (o.addonBuilt) fs.writeFileSync(addon, '');
  const session = {
    connect: async () => void calls.push('connect'),
    disconnect: async () => void calls.push('disconnect'),
  } as unknown as HelperSession;
  const opts: KextBackendOptions = {
    session,
    log: { info: () => {}, warn: () => {}, error: () => {} },
    platform: 'darwin',
    macOs: () => ({ version: '14.5' }),
    kext: () => ({ dir: '/k', bundle: 'build/NKEFilter.kext', bundleId: id }),
    addonPath: () => addon,
    runTask: async (name, transcript) => {
      ran.push(name);
      const r = o.tasks[name] ?? { code: 0 };
      fs.writeFileSync(transcript, r.output ?? '');
      if (name === 'addon-build' && r.code === 0) fs.writeFileSync(addon, '');
      return r.code;
    },
    exec: async (command, args): Promise<CommandResult> => ({
      code: 0,
      stdout: o.exec[[command, ...args].join(' ')] ?? o.exec[command] ?? '',
      stderr: '',
    }),
    showLog: async () => {},
  };
  const backend = new KextBackend(opts);
  return {
    backend,
    ran,
    steps,
    calls,
    progress: { step: (m: string) => void steps.push(m) },
    done: () => {
      void backend.dispose();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe('Load Filter in kext mode, replayed', () => {
  const uuid =
    'UUID: 9F1FD5A4-45F8-371E-A935-1E1E12F40439 (x86_64) /k/build/NKEFilter.kext/Contents/MacOS/NKEFilter\n';

  it('build -> nothing loaded -> load -> addon build on first use -> helper as root -> connect, one step each', async () => {
    const mac = replayedMac({ tasks: {}, exec: { dwarfdump: uuid } });
    try {
      await mac.backend.load(mac.progress);
      assert.deepEqual(mac.ran, ['kext-build', 'kext-load', 'addon-build']);
      assert.deepEqual(mac.calls, ['connect']);
      assert.deepEqual(
        mac.steps.map((s) => s.slice(0, 4)),
        ['1/5 ', '2/5 ', '3/5 ', '4/5 ', '5/5 '],
      );
      assert.match(mac.steps[4], /administrator prompt/);
      assert.equal(mac.backend.status().loadedByThisWindow, true);
    } finally {
      mac.done();
    }
  });

  it('this build already loaded: no load task, straight to the helper', async () => {
    const mac = replayedMac({
      tasks: {},
      addonBuilt: true,
      exec: {
        dwarfdump: uuid,
        'kmutil showloaded --bundle-identifier com.nkeworkbench.filter': `  245 0 0 0x6 0x6 ${id} (0.1.0) 9F1FD5A4-45F8-371E-A935-1E1E12F40439 <5 4>`,
      },
    });
    try {
      await mac.backend.load(mac.progress);
      assert.deepEqual(mac.ran, ['kext-build']);
      assert.match(mac.steps[2], /this build is already loaded/);
      assert.deepEqual(mac.calls, ['connect']);
    } finally {
      mac.done();
    }
  });

  it('an older copy loaded: stops before loading, offers Unload Filter', async () => {
    const mac = replayedMac({
      tasks: {},
      exec: {
        dwarfdump: uuid,
        'kmutil showloaded --bundle-identifier com.nkeworkbench.filter': `  245 0 0 0x6 0x6 ${id} (0.0.9) 00000000-45F8-371E-A935-1E1E12F40439 <5 4>`,
      },
    });
    try {
      await assert.rejects(mac.backend.load(mac.progress), (e: KextError) => {
        assert.equal(e.diagnosis.problem, 'older-loaded');
        assert.match(e.message, /older copy of the kext is loaded \(com.nkeworkbench.filter 0.0.9/);
        assert.equal(e.action?.command, 'nke.unloadFilter');
        return true;
      });
      assert.deepEqual(mac.ran, ['kext-build']);
      assert.deepEqual(mac.calls, []);
    } finally {
      mac.done();
    }
  });

  it('a failed build stops at step 1 with Show Problems', async () => {
    const mac = replayedMac({ tasks: { 'kext-build': { code: 2 } }, exec: {} });
    try {
      await assert.rejects(mac.backend.load(mac.progress), (e: KextError) => {
        assert.equal(e.diagnosis.problem, 'build-failed');
        assert.match(e.message, /^building the kext failed: make exited 2/);
        return true;
      });
      assert.deepEqual(mac.ran, ['kext-build']);
    } finally {
      mac.done();
    }
  });

  it("a refused load is explained from the task's transcript and the Mac's state (not approved on Apple Silicon)", async () => {
    const mac = replayedMac({
      tasks: { 'kext-load': { code: 1, output: kmutilNotApproved } },
      exec: { dwarfdump: uuid, uname: 'arm64\n', csrutil: sipOn },
    });
    try {
      await assert.rejects(mac.backend.load(mac.progress), (e: KextError) => {
        assert.equal(e.diagnosis.problem, 'not-approved');
        assert.match(e.message, /^loading the kext failed: the kext is not approved/);
        assert.match(e.message, /Reduced Security/);
        return true;
      });
      assert.deepEqual(mac.calls, [], 'no helper without a loaded kext');
    } finally {
      mac.done();
    }
  });

  it("unload disconnects this window's helper first, then reports who holds the kext", async () => {
    const mac = replayedMac({
      tasks: { 'kext-unload': { code: 1, output: '"IOUserClientCreator" = "pid 77, node"' } },
      exec: {},
    });
    try {
      await assert.rejects(
        mac.backend.unload(mac.progress),
        /unloading the kext failed: the kext is in use: its user client is still open in pid 77, node/,
      );
      assert.deepEqual(mac.calls, ['disconnect']);
      assert.deepEqual(mac.ran, ['kext-unload']);
    } finally {
      mac.done();
    }
  });

  it('on Linux, kext mode says it needs macOS', async () => {
    const mac = replayedMac({ tasks: {}, exec: {} });
    const linux = new KextBackend({
      ...(mac.backend as unknown as { o: KextBackendOptions }).o,
      platform: 'linux',
    });
    try {
      await assert.rejects(linux.load(mac.progress), /the kext loads on macOS only \(this is linux\)/);
      assert.deepEqual(mac.ran, []);
    } finally {
      void linux.dispose();
      mac.done();
    }
  });
});

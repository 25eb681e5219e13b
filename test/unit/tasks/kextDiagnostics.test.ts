// The awk programs the build, load and diagnose tasks pipe their output
// through, run here on recorded compiler, kextutil and kmutil output (this
// machine's awk; the Mac's is BSD awk, POSIX only in both).
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { absoluteDiagnosticsAwk } from '../../../extension/src/tasks/compilerOutput';
import { kextDiagnosticsAwk } from '../../../extension/src/tasks/kextDiagnostics';

function awk(program: string, vars: Record<string, string>, input: string): string[] {
  const args = Object.entries(vars).flatMap(([k, v]) => ['-v', `${k}=${v}`]);
  const r = spawnSync('awk', [...args, program], { input, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.split('\n').filter(Boolean);
}

const plist = '/k/build/NKEFilter.kext/Contents/Info.plist';
const reports = (out: string[]) => out.filter((l) => l.startsWith('NKE: '));

describe('compiler output for the $nke-clang matcher', () => {
  it('makes each file:line:col diagnostic absolute, following make into subdirectories, and keeps other lines', () => {
    const out = awk(
      absoluteDiagnosticsAwk,
      { dir: '/x/native/emu' },
      [
        "make: Entering directory '/x/native/emu'",
        "src/nke_emud.c:40:35: error: 'y' undeclared here (not in a function)",
        '../../kext/core/nke_core.c:10:5: warning: unused variable',
        'In file included from src/a.h:3:',
        "make[1]: Entering directory `/x/native/emu/sub'",
        'b.c:3:4: fatal error: b.h: No such file or directory',
        "make[1]: Leaving directory `/x/native/emu/sub'",
        '/abs/d.c:1:1: error: already absolute',
        'make: *** [Makefile:15: build/nke-emud] Error 1',
      ].join('\n'),
    );
    assert.deepEqual(out, [
      "make: Entering directory '/x/native/emu'",
      "/x/native/emu/src/nke_emud.c:40:35: error: 'y' undeclared here (not in a function)",
      '/x/kext/core/nke_core.c:10:5: warning: unused variable',
      'In file included from src/a.h:3:',
      "make[1]: Entering directory `/x/native/emu/sub'",
      '/x/native/emu/sub/b.c:3:4: fatal error: b.h: No such file or directory',
      "make[1]: Leaving directory `/x/native/emu/sub'",
      '/abs/d.c:1:1: error: already absolute',
      'make: *** [Makefile:15: build/nke-emud] Error 1',
    ]);
  });
});

describe('kextutil / kmutil output for the $nke-kext matcher', () => {
  it("kextutil (kxld): each unresolved symbol, on the bundle's Info.plist", () => {
    const input = [
      'Kext with invalid signatured (-67062) allowed: <OSKext 0x7f> { URL = "file:///tmp/nke-kext.Ab/NKEFilter.kext/", ID = "com.nkeworkbench.filter" }',
      '(kernel) kxld[com.nkeworkbench.filter]: The following symbols are unresolved for this kext:',
      '(kernel) kxld[com.nkeworkbench.filter]: \t_sock_retain',
      '(kernel) kxld[com.nkeworkbench.filter]:     ___memcpy_chk',
      "(kernel) Can't load kext com.nkeworkbench.filter - link failed.",
      'Failed to load /tmp/nke-kext.Ab/NKEFilter.kext - (libkern/kext) link error.',
    ].join('\n');
    const out = awk(kextDiagnosticsAwk, { plist }, input);
    assert.deepEqual(
      out.filter((l) => !l.startsWith('NKE: ')),
      input.split('\n'),
      'every line passes through',
    );
    assert.deepEqual(reports(out), [
      `NKE: ${plist}: error: unresolved symbol _sock_retain (kextutil): link it through a KPI library in OSBundleLibraries, or define it`,
      `NKE: ${plist}: error: unresolved symbol ___memcpy_chk (kextutil): link it through a KPI library in OSBundleLibraries, or define it`,
    ]);
  });

  it('kmutil: "Failed to bind" symbols (several to a line, repeated) and a missing bundle-id dependency, each once', () => {
    const input = [
      'Error Domain=KMErrorDomain Code=31 "Error occurred while building a collection:',
      '    1: One or more binaries has an error which prevented linking.  See other errors.',
      "    2: Could not use 'com.nkeworkbench.filter' because: Failed to bind '_sock_retain' in 'com.nkeworkbench.filter' (at offset 0x7f8 in __DATA_CONST, __auth_got) as could not find a kext which exports this symbolFailed to bind '_sock_release' in 'com.nkeworkbench.filter' (at offset 0x800 in __DATA_CONST, __auth_got) as could not find a kext which exports this symbol",
      'com.nkeworkbench.filter specific:',
      "    1: Failed to bind '_sock_retain' in 'com.nkeworkbench.filter' (at offset 0x7f8 in __DATA_CONST, __auth_got) as could not find a kext which exports this symbol",
      "    2: Failed to bind '__ZN9IOService5startEPS_' as could not find a kext with 'com.apple.kpi.iokit' bundle-id.",
    ].join('\n');
    assert.deepEqual(reports(awk(kextDiagnosticsAwk, { plist }, input)), [
      `NKE: ${plist}: error: unresolved symbol _sock_retain (kmutil): no kext exports it; add the KPI library that does to OSBundleLibraries`,
      `NKE: ${plist}: error: unresolved symbol _sock_release (kmutil): no kext exports it; add the KPI library that does to OSBundleLibraries`,
      `NKE: ${plist}: error: missing dependency com.apple.kpi.iokit (kmutil, for __ZN9IOService5startEPS_): add it to OSBundleLibraries`,
    ]);
  });

  it('kextutil: dependencies it cannot resolve, each once', () => {
    const input = [
      '/tmp/nke-kext.Ab/NKEFilter.kext - no compatible dependency found for com.apple.kpi.mach.',
      '/tmp/nke-kext.Ab/NKEFilter.kext - no compatible dependency found for com.apple.kpi.mach.',
      "/tmp/nke-kext.Ab/NKEFilter.kext - dependency 'com.apple.kpi.unsupportd' not found.",
    ].join('\n');
    assert.deepEqual(reports(awk(kextDiagnosticsAwk, { plist }, input)), [
      `NKE: ${plist}: error: no compatible version of dependency com.apple.kpi.mach (kextutil): check its version in OSBundleLibraries`,
      `NKE: ${plist}: error: missing dependency com.apple.kpi.unsupportd (kextutil): check its bundle id in OSBundleLibraries`,
    ]);
  });

  it('a clean load reports nothing', () => {
    const out = awk(
      kextDiagnosticsAwk,
      { plist },
      'Executing: /usr/bin/kmutil load -p /tmp/x/NKEFilter.kext\n',
    );
    assert.deepEqual(reports(out), []);
  });
});

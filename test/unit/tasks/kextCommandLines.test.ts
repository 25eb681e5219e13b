// The exact command lines of the kext tasks for macOS 10.15, 11 and 14 (the
// version is given, never read from this machine), and of the addon build
// on macOS.
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { addonBuildPlan, addonSources } from '../../../extension/src/tasks/addonBuildPlan';
import {
  type KextTarget,
  kextCommandLine,
  loadedKextQuery,
  macOsRelease,
  needsMacOsCommandLine,
  usesKmutil,
  withTranscript,
} from '../../../extension/src/tasks/kextCommandLines';

const kext: KextTarget = {
  dir: '/Users/dev/My Kexts/kext',
  bundle: 'build/NKEFilter.kext',
  bundleId: 'com.nkeworkbench.filter',
};
const catalina = { version: '10.15.7' };
const bigSur = { version: '11.7.10' };
const sonoma = { version: '14.5' };

const stage = [
  'set -e',
  'stage="$(sudo mktemp -d /tmp/nke-kext.XXXXXX)"',
  `trap 'sudo rm -rf "$stage"' EXIT`,
  `sudo cp -R '/Users/dev/My Kexts/kext/build/NKEFilter.kext' "$stage/"`,
  'sudo chown -R root:wheel "$stage"',
];

describe('kext task command lines', () => {
  it('reads the release from sw_vers and picks the loader by it', () => {
    assert.deepEqual(macOsRelease('10.15.7'), [10, 15]);
    assert.deepEqual(macOsRelease('14.5'), [14, 5]);
    assert.deepEqual(macOsRelease('11'), [11, 0]);
    assert.throws(() => macOsRelease('Sonoma'), /not a macOS version: "Sonoma"/);
    assert.equal(usesKmutil(catalina), false);
    assert.equal(usesKmutil(bigSur), true);
    assert.equal(usesKmutil(sonoma), true);
  });

  it('build: make in the kext folder, the same on every version', () => {
    for (const os of [catalina, bigSur, sonoma]) {
      assert.equal(kextCommandLine('build', os, kext), `make -C '/Users/dev/My Kexts/kext'`);
    }
  });

  it('load on 10.15: kextutil on a root-owned staged copy', () => {
    assert.equal(
      kextCommandLine('load', catalina, kext),
      [...stage, 'sudo kextutil -v "$stage/"NKEFilter.kext', 'kextstat -l -b com.nkeworkbench.filter'].join(
        '\n',
      ),
    );
  });

  for (const os of [bigSur, sonoma]) {
    it(`load on ${os.version}: kmutil load -p on a root-owned staged copy, then showloaded`, () => {
      assert.equal(
        kextCommandLine('load', os, kext),
        [
          ...stage,
          'sudo kmutil load -p "$stage/"NKEFilter.kext',
          'kmutil showloaded --bundle-identifier com.nkeworkbench.filter',
        ].join('\n'),
      );
    });
  }

  const unloadTail = [
    '  status=$?',
    '  echo "NKE: com.nkeworkbench.filter did not unload (exit $status). Processes holding its user client:"',
    '  ioreg -r -c com_nkeworkbench_FilterClient -l -w0 | grep IOUserClientCreator || echo "  none: re-injections or filter callbacks still in progress (see NKE: Show Kernel Log); unload again in a moment"',
    '  exit $status',
    '}',
  ];

  it('unload on 10.15: kextunload -b, and who holds the kext when it refuses', () => {
    assert.equal(
      kextCommandLine('unload', catalina, kext),
      ['sudo kextunload -v -b com.nkeworkbench.filter || {', ...unloadTail].join('\n'),
    );
  });

  for (const os of [bigSur, sonoma]) {
    it(`unload on ${os.version}: kmutil unload -b, and who holds the kext when it refuses`, () => {
      assert.equal(
        kextCommandLine('unload', os, kext),
        ['sudo kmutil unload -b com.nkeworkbench.filter || {', ...unloadTail].join('\n'),
      );
    });
  }

  it('diagnose on 10.15: kextutil -t -n; on 11 and 14: kmutil print-diagnostics -p', () => {
    assert.equal(
      kextCommandLine('diagnose', catalina, kext),
      [...stage, 'sudo kextutil -t -n -v "$stage/"NKEFilter.kext'].join('\n'),
    );
    for (const os of [bigSur, sonoma]) {
      assert.equal(
        kextCommandLine('diagnose', os, kext),
        [...stage, 'sudo kmutil print-diagnostics -p "$stage/"NKEFilter.kext'].join('\n'),
      );
    }
  });

  it('log: log stream with a predicate on the kext (syslog style on 10.15, compact on 11+)', () => {
    const predicate = `'sender == "NKEFilter" OR eventMessage CONTAINS "com.nkeworkbench.filter"'`;
    assert.equal(
      kextCommandLine('log', catalina, kext),
      `log stream --style syslog --predicate ${predicate}`,
    );
    assert.equal(kextCommandLine('log', bigSur, kext), `log stream --style compact --predicate ${predicate}`);
    assert.equal(kextCommandLine('log', sonoma, kext), `log stream --style compact --predicate ${predicate}`);
  });

  it('the loaded-copy query: kextstat on 10.15, kmutil showloaded on 11+', () => {
    assert.deepEqual(loadedKextQuery(catalina, 'com.x'), {
      command: 'kextstat',
      args: ['-l', '-b', 'com.x'],
    });
    assert.deepEqual(loadedKextQuery(sonoma, 'com.x'), {
      command: 'kmutil',
      args: ['showloaded', '--bundle-identifier', 'com.x'],
    });
  });

  it('a bundle id or folder with quotes cannot break out of its word', () => {
    const evil = { ...kext, dir: `/tmp/a'b; rm -rf ~`, bundleId: `x'; reboot #` };
    const line = kextCommandLine('unload', sonoma, evil);
    assert.ok(line.startsWith(`sudo kmutil unload -b 'x'\\''; reboot #' || {`), line);
    assert.equal(kextCommandLine('build', sonoma, evil), `make -C '/tmp/a'\\''b; rm -rf ~'`);
  });

  it("with a transcript, the output is also written to it and the exit status is the command's (bash)", () => {
    const tmp = fs.mkdtempSync('/tmp/nke-transcript-');
    try {
      const file = path.join(tmp, 'out.log');
      const r = spawnSync('/bin/bash', ['-c', withTranscript('echo one\necho two >&2\nexit 3', file)], {
        encoding: 'utf8',
      });
      assert.equal(r.status, 3);
      assert.equal(fs.readFileSync(file, 'utf8'), 'one\ntwo\n');
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('a macOS-only task elsewhere says so and exits 78', () => {
    const r = spawnSync('/bin/bash', ['-c', needsMacOsCommandLine('nke: kext load', 'linux')], {
      encoding: 'utf8',
    });
    assert.equal(r.status, 78);
    assert.match(
      r.stderr,
      /"nke: kext load" runs on macOS only \(this is linux\)\. Open the folder on a test Mac \(Remote-SSH\)/,
    );
  });
});

describe('addon build on macOS', () => {
  it('compiles the sources binding.gyp lists for the Mac, with the Xcode toolchain, nothing downloaded', () => {
    const plan = addonBuildPlan('arm64', '/Users/dev/Library/Application Support/Code/nke/addon');
    assert.equal(plan.arch, 'arm64');
    assert.equal(plan.output, '/Users/dev/Library/Application Support/Code/nke/addon/nke_addon.node');
    const o = `'/Users/dev/Library/Application Support/Code/nke/addon/obj`;
    const t = '-arch arm64 -mmacosx-version-min=10.13';
    const inc = '-Ikext/include -Ikext/core -Inative/emu/include -Inative/addon/src';
    const cxx = `-std=c++17 -O2 -fexceptions -Wall -Wextra -DNAPI_VERSION=8 -DNODE_ADDON_API_DISABLE_DEPRECATED -Inode_modules/node-addon-api -Inode_modules/node-api-headers/include ${inc}`;
    assert.equal(
      plan.commandLine,
      [
        'set -e',
        `mkdir -p ${o}'`,
        `xcrun clang ${t} -std=c11 -O2 -Wall -Wextra ${inc} -c kext/core/nke_dq.c -o ${o}/nke_dq.o'`,
        `xcrun clang ${t} -std=c11 -O2 -Wall -Wextra ${inc} -c kext/core/nke_kev.c -o ${o}/nke_kev.o'`,
        `xcrun clang++ ${t} ${cxx} -c native/addon/src/addon.cpp -o ${o}/addon.o'`,
        `xcrun clang++ ${t} ${cxx} -c native/addon/src/filter_client.cpp -o ${o}/filter_client.o'`,
        `xcrun clang++ ${t} ${cxx} -c native/addon/src/capture_spill.cpp -o ${o}/capture_spill.o'`,
        `xcrun clang++ ${t} ${cxx} -c native/addon/src/kev_socket.cpp -o ${o}/kev_socket.o'`,
        `xcrun clang++ ${t} ${cxx} -c native/addon/src/transport_macos.cpp -o ${o}/transport_macos.o'`,
        `xcrun clang++ ${t} -bundle -undefined dynamic_lookup -framework IOKit -framework CoreFoundation -o '/Users/dev/Library/Application Support/Code/nke/addon/nke_addon.node' ${['nke_dq', 'nke_kev', 'addon', 'filter_client', 'capture_spill', 'kev_socket', 'transport_macos'].map((n) => `${o}/${n}.o'`).join(' ')}`,
        `echo 'NKE: built /Users/dev/Library/Application Support/Code/nke/addon/nke_addon.node'`,
      ].join('\n'),
    );
    assert.equal(addonBuildPlan('x64', '/o').arch, 'x86_64');
    assert.throws(() => addonBuildPlan('ia32', '/o'), /no macOS addon build for the ia32 architecture/);
  });

  it('builds the same sources as binding.gyp on the Mac, all of them shipped', () => {
    // out/test/unit/tasks -> the repository root
    const root = path.resolve(__dirname, '../../../..');
    // binding.gyp is JSON with # comments.
    const gyp = JSON.parse(
      fs.readFileSync(path.join(root, 'native/addon/binding.gyp'), 'utf8').replace(/^\s*#.*$/gm, ''),
    ) as { targets: { sources: string[]; conditions: [string, { sources?: string[] }][] }[] };
    const t = gyp.targets[0];
    const mac = t.conditions.find(([c]) => c === "OS=='mac'")![1].sources ?? [];
    const fromGyp = [...t.sources, ...mac].map((s) => path.normalize(path.join('native/addon', s))).sort();
    assert.deepEqual([...addonSources.c, ...addonSources.cxx].sort(), fromGyp);
    for (const f of fromGyp) assert.ok(fs.existsSync(path.join(root, f)), f);
    for (const d of [
      'node_modules/node-addon-api/napi.h',
      'node_modules/node-api-headers/include/node_api.h',
    ]) {
      assert.ok(fs.existsSync(path.join(root, d)), `${d} (a dependency the package ships)`);
    }
  });
});

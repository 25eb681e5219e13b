// How the helper's addon is built on a Mac. The package carries a Linux
// binary; on first use on macOS the extension compiles the shipped sources
// (native/addon/src, kext/core's queue consumer and kev reassembler,
// node-addon-api and the Node-API headers from node_modules) with the Xcode
// toolchain the kext needs anyway, as the `nke: addon build (macOS)` task.
// Nothing is downloaded: Node-API needs no Node or Electron headers beyond
// node-api-headers, and `-undefined dynamic_lookup` binds the napi_*
// symbols in whichever runtime loads it. `npm run check:macos` compiles the
// same sources with the same flags against SDK headers on Linux.
// No `vscode` import.
import path from 'node:path';
import { shQuote } from './kextCommandLines';

export interface AddonCompileStep {
  compiler: 'clang' | 'clang++';
  /** relative to the extension root (the task's cwd) */
  sources: string[];
  /** language, warnings, defines, include dirs (relative); no -arch / deployment target */
  flags: string[];
}

export interface AddonBuildPlan {
  /** -arch for clang: x86_64 or arm64 (user space; arm64e is for the kernel) */
  arch: 'x86_64' | 'arm64';
  /** MACOSX_DEPLOYMENT_TARGET of the addon */
  minMacOs: string;
  steps: AddonCompileStep[];
  /** absolute path of the built addon */
  output: string;
  /** the shell lines the task runs (bash -c, cwd = extension root) */
  commandLine: string;
}

/** The minimum macOS of the addon (binding.gyp's xcode_settings mirror this). */
export const addonMinMacOs = '10.13';

/** The addon's sources, as binding.gyp lists them for `OS=='mac'`. */
export const addonSources = {
  c: ['kext/core/nke_dq.c', 'kext/core/nke_kev.c'],
  cxx: [
    'native/addon/src/addon.cpp',
    'native/addon/src/filter_client.cpp',
    'native/addon/src/capture_spill.cpp',
    'native/addon/src/kev_socket.cpp',
    'native/addon/src/transport_macos.cpp',
  ],
};

const includes = ['-Ikext/include', '-Ikext/core', '-Inative/emu/include', '-Inative/addon/src'];

/** process.arch -> clang's -arch. */
export function addonArch(nodeArch: string): 'x86_64' | 'arm64' {
  if (nodeArch === 'x64') return 'x86_64';
  if (nodeArch === 'arm64') return 'arm64';
  throw new Error(`no macOS addon build for the ${nodeArch} architecture (x64 or arm64)`);
}

/** The build of the addon for `nodeArch` into `outDir` (the extension's global storage). */
export function addonBuildPlan(nodeArch: string, outDir: string): AddonBuildPlan {
  const arch = addonArch(nodeArch);
  const steps: AddonCompileStep[] = [
    {
      compiler: 'clang',
      sources: addonSources.c,
      flags: ['-std=c11', '-O2', '-Wall', '-Wextra', ...includes],
    },
    {
      compiler: 'clang++',
      sources: addonSources.cxx,
      flags: [
        '-std=c++17',
        '-O2',
        '-fexceptions',
        '-Wall',
        '-Wextra',
        '-DNAPI_VERSION=8',
        '-DNODE_ADDON_API_DISABLE_DEPRECATED',
        '-Inode_modules/node-addon-api',
        '-Inode_modules/node-api-headers/include',
        ...includes,
      ],
    },
  ];
  const target = ['-arch', arch, `-mmacosx-version-min=${addonMinMacOs}`];
  const objDir = path.join(outDir, 'obj');
  const object = (src: string) => path.join(objDir, path.basename(src).replace(/\.(c|cpp)$/, '.o'));
  const output = path.join(outDir, 'nke_addon.node');
  const q = (words: string[]) => words.map(shQuote).join(' ');
  const lines = ['set -e', `mkdir -p ${shQuote(objDir)}`];
  for (const s of steps) {
    for (const src of s.sources) {
      lines.push(`xcrun ${s.compiler} ${q([...target, ...s.flags, '-c', src, '-o', object(src)])}`);
    }
  }
  const objects = steps.flatMap((s) => s.sources.map(object));
  lines.push(
    `xcrun clang++ ${q([...target, '-bundle', '-undefined', 'dynamic_lookup', '-framework', 'IOKit', '-framework', 'CoreFoundation', '-o', output, ...objects])}`,
    `echo ${shQuote(`NKE: built ${output}`)}`,
  );
  return { arch, minMacOs: addonMinMacOs, steps, output, commandLine: lines.join('\n') };
}

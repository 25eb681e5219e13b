#!/usr/bin/env node
// `npm run check:macos`: compile-checks the macOS-only code on Linux against
// a macOS SDK given by NKE_MACOS_SDK (never committed, never fetched: see
// docs/kext.md). Kernel code: every .c/.cpp of kext/macos and kext/core, with
// the kernel flags, -fsyntax-only then -c to an object; then every object of
// kext/Makefile through its own compile rules (`make objects`, with clang
// -target x86_64-apple-macos10.15 and the SDK given). User code: the addon's
// *_macos.* and *.mm sources under native/addon/src, with the user-code
// flags; then the exact sources and flags of the addon build the extension
// runs on a Mac (extension/src/tasks/addonBuildPlan.ts). One result per
// file, then `N passed, N failed`.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const sdk = process.env.NKE_MACOS_SDK;

// The plan of the addon build the extension runs on a Mac. It is
// TypeScript: esbuild (a dev dependency) transpiles it here.
function loadAddonBuildPlan() {
  const text = require('esbuild').buildSync({
    entryPoints: [path.join(root, 'extension/src/tasks/addonBuildPlan.ts')],
    bundle: true,
    platform: 'node',
    format: 'cjs',
    write: false,
  }).outputFiles[0].text;
  const mod = { exports: {} };
  new Function('module', 'exports', 'require', text)(mod, mod.exports, require);
  return mod.exports;
}

// Needs no SDK: the packaged extension (.vsix) must carry every file that
// build reads, or a Mac user of the package cannot build the helper's addon.
function checkPackageCarriesAddonSources() {
  const plan = loadAddonBuildPlan().addonBuildPlan('x64', '/tmp/nke-addon');
  const needed = new Set();
  for (const step of plan.steps) {
    for (const src of step.sources) needed.add(src);
    for (const flag of step.flags) {
      if (!flag.startsWith('-I')) continue;
      for (const h of list(flag.slice(2), (n) => /\.(h|hpp)$/.test(n))) needed.add(h);
    }
  }
  // `vsce ls` with the dependency flag `npm run package` uses.
  const packageScript = require(path.join(root, 'package.json')).scripts.package;
  const flags = packageScript.includes('--no-dependencies') ? ['--no-dependencies'] : [];
  const vsce = path.join(root, 'node_modules/@vscode/vsce/vsce');
  const r = spawnSync(process.execPath, [vsce, 'ls', ...flags], { cwd: root, encoding: 'utf8' });
  if (r.status !== 0) return { ok: false, output: `vsce ls failed: ${r.stderr || r.error?.message}` };
  const packaged = new Set(r.stdout.split('\n').map((l) => l.trim()));
  const missing = [...needed].filter((f) => !packaged.has(f.split(path.sep).join('/')));
  return {
    ok: needed.size > 0 && missing.length === 0,
    output: missing.length
      ? `not in the package (see .vscodeignore): ${missing.join(', ')}`
      : `${needed.size} files`,
  };
}

if (!sdk) {
  const pkg = checkPackageCarriesAddonSources();
  console.log(
    `${pkg.ok ? 'ok  ' : 'FAIL'} the package carries the macOS addon build's sources (${pkg.output})`,
  );
  console.log('skipped: the compile checks (NKE_MACOS_SDK not set; see docs/kext.md)');
  console.log(`${pkg.ok ? 1 : 0} passed, ${pkg.ok ? 0 : 1} failed`);
  process.exit(pkg.ok ? 0 : 1);
}
const kernelHeaders = path.join(sdk, 'System/Library/Frameworks/Kernel.framework/Headers');
if (!fs.existsSync(kernelHeaders)) {
  console.error(`NKE_MACOS_SDK=${sdk}: no Kernel.framework headers at ${kernelHeaders}`);
  console.log('0 passed, 1 failed');
  process.exit(1);
}

function findClang(cxx) {
  const names = cxx ? ['clang++', 'clang++-14'] : ['clang', 'clang-14'];
  for (const n of names) {
    if (spawnSync(n, ['--version'], { stdio: 'ignore' }).status === 0) return n;
  }
  return null;
}

function list(dir, pred) {
  const abs = path.join(root, dir);
  if (!fs.existsSync(abs)) return [];
  const out = [];
  for (const e of fs.readdirSync(abs, { withFileTypes: true })) {
    const rel = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...list(rel, pred));
    else if (pred(e.name)) out.push(rel);
  }
  return out.sort();
}

const target = ['-target', 'x86_64-apple-macos10.15', '-isysroot', sdk];
const kernelCommon = [
  ...target,
  `-I${kernelHeaders}`,
  '-Ikext/include',
  '-Ikext/core',
  '-mkernel',
  '-fno-builtin',
  '-fno-common',
  '-DKERNEL',
  '-DKERNEL_PRIVATE',
  '-DDRIVER_PRIVATE',
  '-DAPPLE',
  '-DNeXT',
  '-Wall',
  '-Wextra',
  '-Wno-unused-parameter',
  // Newer SDKs mark the kauth and NKE KPIs deprecated; they are still what
  // the kext must use, so that warning alone is not an error.
  '-Wno-deprecated-declarations',
  '-Werror',
];
const kernelCxx = ['-fapple-kext', '-nostdinc++', '-fno-exceptions', '-fno-rtti', '-std=gnu++14'];
const userCommon = [
  ...target,
  '-Ikext/include',
  '-Ikext/core',
  '-Wall',
  '-Wno-deprecated-declarations',
  '-Werror',
];

const jobs = [];
for (const f of list('kext/macos', (n) => /\.(c|cpp)$/.test(n))) {
  const cxx = f.endsWith('.cpp');
  jobs.push({ file: f, cxx, flags: [...kernelCommon, ...(cxx ? kernelCxx : ['-std=gnu11'])] });
}
for (const f of list('kext/core', (n) => /\.c$/.test(n))) {
  jobs.push({ file: f, cxx: false, flags: [...kernelCommon, '-std=gnu11'] });
}
for (const f of list('native/addon/src', (n) => /_macos\.(c|cc|cpp|m|mm)$/.test(n) || n.endsWith('.mm'))) {
  const cxx = /\.(cc|cpp|mm)$/.test(f);
  const extra = [];
  const napi = path.join(root, 'node_modules/node-addon-api');
  if (fs.existsSync(napi)) extra.push(`-I${napi}`);
  // The SDK ships no usable C++ library headers: use LLVM's libc++ (Debian
  // libc++-14-dev, from scripts/setup-system.sh); node's headers go after the
  // SDK's so they never shadow a system header.
  const libcxx = '/usr/lib/llvm-14/include/c++/v1';
  if (cxx && fs.existsSync(libcxx)) extra.push('-nostdinc++', '-isystem', libcxx);
  for (const d of [path.join(process.execPath, '../../include/node')])
    if (fs.existsSync(d)) extra.push('-idirafter', d);
  extra.push('-Inative/emu/include');
  jobs.push({
    file: f,
    cxx,
    flags: [...userCommon, ...extra, '-Inative/addon/src', ...(cxx ? ['-std=c++17'] : ['-std=gnu11'])],
  });
}

const cc = findClang(false);
const cxx = findClang(true);
if (!cc || !cxx) {
  console.error('clang not found: run scripts/setup-system.sh');
  console.log(`0 passed, ${jobs.length || 1} failed`);
  process.exit(1);
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nke-check-macos-'));
let passed = 0;
let failed = 0;
for (const j of jobs) {
  const compiler = j.cxx ? cxx : cc;
  const obj = path.join(tmp, path.basename(j.file) + '.o');
  let r = spawnSync(compiler, [...j.flags, '-fsyntax-only', j.file], { cwd: root, encoding: 'utf8' });
  let step = 'syntax';
  if (r.status === 0) {
    step = 'object';
    r = spawnSync(compiler, [...j.flags, '-c', '-o', obj, j.file], { cwd: root, encoding: 'utf8' });
  }
  if (r.status === 0) {
    passed++;
    console.log(`ok   ${j.file}`);
  } else {
    failed++;
    console.log(`FAIL ${j.file} (${step})`);
    process.stdout.write((r.stderr || r.error?.message || '') + '\n');
  }
}

function report(ok, what, output) {
  if (ok) {
    passed++;
    console.log(`ok   ${what}`);
  } else {
    failed++;
    console.log(`FAIL ${what}`);
    process.stdout.write((output || '') + '\n');
  }
}

// The kext's objects through kext/Makefile's own rules: what `make` compiles
// on a Mac, with this clang, the SDK and a macOS target instead of xcrun.
const kextTarget = 'x86_64-apple-macos10.15';
const makeVars = [
  `BUILD=${path.join(tmp, 'kext')}`,
  `CC=${cc}`,
  `CXX=${cxx}`,
  `SDK=${sdk}`,
  `ARCHFLAGS=-target ${kextTarget}`,
  `MACOSX_DEPLOYMENT_TARGET=${kextTarget.replace(/.*macos/, '')}`,
  'CHECK_FLAGS=-Werror',
];
const listed = spawnSync('make', ['-s', '-C', 'kext', 'print-objects', ...makeVars], {
  cwd: root,
  encoding: 'utf8',
});
const objects = listed.status === 0 ? listed.stdout.split('\n').filter(Boolean) : [];
if (!objects.length) report(false, 'kext/Makefile print-objects', listed.stderr || listed.error?.message);
for (const obj of objects) {
  const r = spawnSync('make', ['-s', '-C', 'kext', obj, ...makeVars], { cwd: root, encoding: 'utf8' });
  report(
    r.status === 0 && fs.existsSync(obj),
    `kext/Makefile ${path.relative(path.join(tmp, 'kext'), obj)}`,
    r.stdout + r.stderr,
  );
}

// The addon build the extension runs on a Mac, source by source with its
// flags; the SDK has no C++ library headers, so libc++'s come from LLVM.
const plan = loadAddonBuildPlan().addonBuildPlan('x64', path.join(tmp, 'addon'));
const addonTarget = ['-target', `${plan.arch}-apple-macos${plan.minMacOs}`, '-isysroot', sdk];
const libcxxDir = '/usr/lib/llvm-14/include/c++/v1';
for (const step of plan.steps) {
  const compiler = step.compiler === 'clang++' ? cxx : cc;
  const extra =
    step.compiler === 'clang++' && fs.existsSync(libcxxDir) ? ['-nostdinc++', '-isystem', libcxxDir] : [];
  for (const src of step.sources) {
    const obj = path.join(tmp, 'addon-' + path.basename(src) + '.o');
    const r = spawnSync(compiler, [...addonTarget, ...extra, ...step.flags, '-c', src, '-o', obj], {
      cwd: root,
      encoding: 'utf8',
    });
    report(r.status === 0, `addon build (macOS) ${src}`, r.stderr || r.error?.message);
  }
}

const pkg = checkPackageCarriesAddonSources();
report(pkg.ok, `the package carries the macOS addon build's sources (${pkg.output})`, pkg.output);

fs.rmSync(tmp, { recursive: true, force: true });
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);

#!/usr/bin/env node
// Builds the native parts that exist on this platform: the Linux emulator
// (native/emu, make) and the addon (native/addon, node-gyp). Run by
// `npm install` (postinstall) and `npm run build`. Fails loudly: a missing
// compiler is an error with the command that fixes it, never a silent skip.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const jobs = String(Math.max(1, require('node:os').availableParallelism?.() ?? 2));

function run(cmd, args, cwd) {
  console.log(`[build-native] ${path.relative(root, cwd) || '.'}: ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd, stdio: 'inherit' });
  if (r.error) {
    console.error(`[build-native] cannot run ${cmd}: ${r.error.message}. Run: bash scripts/setup-system.sh`);
    process.exit(1);
  }
  if (r.status !== 0) process.exit(r.status ?? 1);
}

if (process.platform === 'linux' && fs.existsSync(path.join(root, 'native/emu/Makefile'))) {
  run('make', ['-j', jobs], path.join(root, 'native/emu'));
}
if (fs.existsSync(path.join(root, 'native/addon/binding.gyp'))) {
  const nodeGyp = require.resolve('node-gyp/bin/node-gyp.js', {
    // npm's own node-gyp: found through npm_execpath under `npm ...`, and next
    // to this node's npm when the script is run directly (`node test/run.js`).
    paths: [
      root,
      ...(process.env.npm_execpath ? [path.dirname(process.env.npm_execpath)] : []),
      path.resolve(path.dirname(process.execPath), '../lib/node_modules/npm'),
    ],
  });
  // Use the headers installed next to this node (e.g. /usr/include/node) when
  // present: node-gyp would otherwise download them, which fails offline.
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  // `rebuild` cleans first: the addon would be missing for the whole build,
  // and a bench or a CLI running meanwhile fails to load it. Configure only
  // when there is no configuration yet or binding.gyp changed; `build` then
  // relinks only what changed, and the old addon stays until the new one is
  // written.
  const addonDir = path.join(root, 'native/addon');
  const made = path.join(addonDir, 'build/Makefile');
  const config = path.join(addonDir, 'build/config.gypi');
  const configured =
    fs.existsSync(made) &&
    fs.existsSync(config) &&
    fs.statSync(made).mtimeMs >= fs.statSync(path.join(addonDir, 'binding.gyp')).mtimeMs &&
    // configured for this node (another node's module version needs rebuild)
    fs.readFileSync(config, 'utf8').includes(`"node_module_version": ${process.versions.modules},`);
  const gypArgs = [configured ? 'build' : 'rebuild', '-j', jobs];
  if (!process.env.npm_config_nodedir && fs.existsSync(path.join(prefix, 'include/node/common.gypi'))) {
    gypArgs.push(`--nodedir=${prefix}`);
  }
  run(process.execPath, [nodeGyp, ...gypArgs], addonDir);
}

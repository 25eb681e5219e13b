#!/usr/bin/env node
// Bundles every TypeScript runtime with esbuild, one entry per runtime:
//   extension host  extension/src/extension.ts   -> dist/extension.js
//   helper process  extension/src/helper/main.ts -> dist/helper.js
//   headless CLI    extension/src/cli/nke.ts     -> dist/nke.js
// and every test file (test/**/*.test.ts, test/integration/index.ts) into out/.
// The browser side, the payload editor webview (webview/src/main.ts, its CSS
// and codicon font), is bundled by webpack into dist/webview/
// (webview/webpack.config.js).
// Types are checked separately by `tsc --noEmit` (npm run typecheck / lint).
// First of all, the TS ABI tables are generated from the C headers
// (scripts/gen-abi.mjs -> extension/src/shared/abi.generated.ts); --watch
// regenerates them when a header changes.
import * as esbuild from 'esbuild';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { generate as generateAbi, HEADERS as ABI_HEADERS } from './gen-abi.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = new Set(process.argv.slice(2));
const production = args.has('--production');
const watch = args.has('--watch');

if (generateAbi()) console.log('[build] wrote extension/src/shared/abi.generated.ts from the C headers');

const node = {
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  sourcemap: production ? false : 'linked',
  minify: production,
  // The native addon is loaded at run time from native/addon/build.
  external: ['vscode', '*.node'],
  logLevel: 'warning',
};

const runtimes = [
  { in: 'extension/src/extension.ts', out: 'dist/extension.js', ...node },
  { in: 'extension/src/helper/main.ts', out: 'dist/helper.js', ...node },
  { in: 'extension/src/cli/nke.ts', out: 'dist/nke.js', ...node, banner: { js: '#!/usr/bin/env node' } },
];

const require = createRequire(import.meta.url);
const webpackConfig = require(path.join(root, 'webview', 'webpack.config.js'))({ production });

/** Runs webpack on the webview once (or watches); resolves when the first build is done. */
function bundleWebview() {
  const webpack = require('webpack');
  const compiler = webpack(webpackConfig);
  return new Promise((resolve, reject) => {
    const done = (err, stats) => {
      if (err) return reject(err);
      const info = stats.toString({ preset: 'errors-warnings', colors: false });
      if (stats.hasErrors()) return reject(new Error(`webpack (webview): ${info}`));
      if (stats.hasWarnings()) console.warn(info);
      resolve();
    };
    if (watch) compiler.watch({}, done);
    else compiler.run((err, stats) => compiler.close(() => done(err, stats)));
  });
}

function findTests(dir, found = []) {
  if (!fs.existsSync(dir)) return found;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) findTests(p, found);
    else if (e.name.endsWith('.test.ts') || (e.name === 'index.ts' && dir.endsWith(`${path.sep}integration`)))
      found.push(p);
  }
  return found;
}

const configs = [];
for (const { in: entry, out, ...opts } of runtimes) {
  if (!fs.existsSync(path.join(root, entry))) continue;
  configs.push({ ...opts, entryPoints: [path.join(root, entry)], outfile: path.join(root, out) });
}
if (!production) {
  const tests = findTests(path.join(root, 'test'));
  if (tests.length) {
    configs.push({
      ...node,
      entryPoints: tests,
      outdir: path.join(root, 'out'),
      outbase: root,
      external: [...node.external, 'mocha'],
    });
  }
}

if (watch) {
  for (const h of ABI_HEADERS) {
    fs.watchFile(path.join(root, h), { interval: 1000 }, () => {
      try {
        if (generateAbi()) console.log(`[build] ${h} changed: regenerated the TS ABI tables`);
      } catch (e) {
        console.error(`[build] ${e.message}`);
      }
    });
  }
  for (const c of configs) await (await esbuild.context(c)).watch();
  await bundleWebview();
  console.log('[build] watching for changes');
} else {
  const t0 = Date.now();
  await Promise.all([...configs.map((c) => esbuild.build(c)), bundleWebview()]);
  const nke = path.join(root, 'dist/nke.js');
  if (fs.existsSync(nke)) fs.chmodSync(nke, 0o755);
  console.log(
    `[build] ${configs.length} esbuild bundles and the webpack webview in ${Date.now() - t0} ms${production ? ' (production)' : ''}`,
  );
}

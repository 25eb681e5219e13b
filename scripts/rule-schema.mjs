#!/usr/bin/env node
// Writes the settings the rules come from (nke.capture, nke.interceptRules)
// into package.json's contributes.configuration from the rule field table,
// extension/src/shared/ruleFields.ts (ruleSettingsSchema). `npm run
// rules:schema` after changing the table; `--check` only says whether
// package.json is up to date (exit 1 when not). test/unit/ruleFields.test.ts
// makes the same comparison.
import * as esbuild from 'esbuild';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const check = process.argv.includes('--check');

const built = await esbuild.build({
  entryPoints: [path.join(root, 'extension/src/shared/ruleFields.ts')],
  bundle: true,
  platform: 'node',
  format: 'cjs',
  write: false,
  logLevel: 'warning',
});
const mod = { exports: {} };
new Function('module', 'exports', 'require', built.outputFiles[0].text)(
  mod,
  mod.exports,
  createRequire(import.meta.url),
);
const schema = mod.exports.ruleSettingsSchema();

const file = path.join(root, 'package.json');
const text = fs.readFileSync(file, 'utf8');
const pkg = JSON.parse(text);
const props = pkg.contributes.configuration.properties;
const stale = Object.keys(schema).filter((k) => JSON.stringify(props[k]) !== JSON.stringify(schema[k]));
if (check) {
  if (stale.length) {
    console.error(`package.json: ${stale.join(', ')} differ from ruleFields.ts: run npm run rules:schema`);
    process.exit(1);
  }
  console.log('package.json: the rule settings match ruleFields.ts');
} else {
  // Replaced where they stand, so the settings keep their order in the UI.
  const out = {};
  for (const [k, v] of Object.entries(props)) out[k] = k in schema ? schema[k] : v;
  for (const [k, v] of Object.entries(schema)) if (!(k in out)) out[k] = v;
  pkg.contributes.configuration.properties = out;
  fs.writeFileSync(file, `${JSON.stringify(pkg, null, 2)}\n`);
  console.log(stale.length ? `package.json: wrote ${stale.join(', ')}` : 'package.json: already up to date');
}

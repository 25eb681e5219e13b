// ABI conformance: compiles test/native/abi-layout.c against the C headers
// with the system compiler, runs it, and compares what the compiler laid out
// with the TypeScript tables of extension/src/shared/abi.ts — every struct
// size, field offset, field size, element type and array length, and every
// constant, in both directions. A change to one side only fails here.
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { ABI_CONSTANTS, ABI_STRUCTS, fieldSize, type StructLayout } from '../../extension/src/shared/abi';

interface CField {
  name: string;
  offset: number;
  size: number;
  type: string;
  length: number;
}
interface CStruct {
  name: string;
  size: number;
  fields: CField[];
}
interface CLayout {
  structs: CStruct[];
  constants: Record<string, number | string>;
}

// The tests run from out/test/unit (bundled); find the repo by its header.
function repoRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'kext/include/nke/nke_abi.h'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`kext/include/nke/nke_abi.h not found above ${__dirname}`);
  }
}

const root = repoRoot();
const headers = [
  path.join(root, 'kext/include/nke/nke_abi.h'),
  path.join(root, 'native/emu/include/nke_emu_proto.h'),
];

function compileAndRun(): CLayout {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nke-abi-layout-'));
  try {
    const exe = path.join(dir, 'abi-layout');
    const cc = process.env.CC ?? 'cc';
    try {
      execFileSync(
        cc,
        [
          '-std=c11',
          '-Wall',
          '-Wextra',
          '-Werror',
          '-I',
          path.join(root, 'kext/include'),
          '-I',
          path.join(root, 'native/emu/include'),
          path.join(root, 'test/native/abi-layout.c'),
          '-o',
          exe,
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
    } catch (e) {
      const err = e as { stderr?: Buffer; message: string };
      throw new Error(
        `compiling test/native/abi-layout.c with ${cc} failed (a static assert in the header fires when ` +
          `its own offsets disagree; install a compiler with: bash scripts/setup-system.sh):\n` +
          (err.stderr?.toString() || err.message),
      );
    }
    return JSON.parse(execFileSync(exe, { encoding: 'utf8' })) as CLayout;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function tsFieldType(f: StructLayout['fields'][number]): string {
  return f.type === 'struct' ? `struct:${f.struct?.name}` : f.type;
}

/** Every difference between one TS layout and the compiler's, as readable lines. */
function diffStruct(ts: StructLayout, c: CStruct): string[] {
  const out: string[] = [];
  if (ts.size !== c.size) out.push(`${ts.name}: size TS ${ts.size}, C ${c.size}`);
  const cByName = new Map(c.fields.map((f) => [f.name, f]));
  const tsNames = new Set(ts.fields.map((f) => f.name));
  for (const f of ts.fields) {
    const cf = cByName.get(f.name);
    if (!cf) {
      out.push(`${ts.name}.${f.name}: in TS, not in C`);
      continue;
    }
    if (f.offset !== cf.offset) out.push(`${ts.name}.${f.name}: offset TS ${f.offset}, C ${cf.offset}`);
    if (fieldSize(f) !== cf.size) out.push(`${ts.name}.${f.name}: size TS ${fieldSize(f)}, C ${cf.size}`);
    if (tsFieldType(f) !== cf.type) out.push(`${ts.name}.${f.name}: type TS ${tsFieldType(f)}, C ${cf.type}`);
    const cLen = cf.length < 0 ? undefined : cf.length;
    if (f.length !== cLen) out.push(`${ts.name}.${f.name}: array length TS ${f.length}, C ${cLen}`);
  }
  for (const cf of c.fields) {
    if (!tsNames.has(cf.name)) out.push(`${ts.name}.${cf.name}: in C, not in TS`);
  }
  // The C program lists fields by hand; a field added to the header but not
  // to the program would go unseen, except that it leaves a hole here.
  const sorted = [...c.fields].sort((a, b) => a.offset - b.offset);
  let next = 0;
  for (const cf of sorted) {
    if (cf.offset !== next) out.push(`${c.name}: C bytes ${next}..${cf.offset} belong to no listed field`);
    next = Math.max(next, cf.offset + cf.size);
  }
  if (next !== c.size) out.push(`${c.name}: C bytes ${next}..${c.size} belong to no listed field`);
  return out;
}

/** NKE_* names the headers define (macros and enum members), minus helper macros and guards. */
function headerConstantNames(): string[] {
  const helpers = new Set([
    'NKE_ABI_H',
    'NKE_EMU_PROTO_H',
    'NKE_STATIC_ASSERT',
    'NKE_ASSERT_SIZE',
    'NKE_ASSERT_OFF',
  ]);
  const names = new Set<string>();
  for (const h of headers) {
    const text = fs.readFileSync(h, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '');
    for (const m of text.matchAll(/^\s*#define\s+(NKE_\w+)/gm)) names.add(m[1]);
    for (const body of text.matchAll(/\benum\s+\w+\s*\{([^}]*)\}/g)) {
      for (const m of body[1].matchAll(/\b(NKE_\w+)\s*(=|,|$)/gm)) names.add(m[1]);
    }
  }
  return [...names].filter((n) => !helpers.has(n)).sort();
}

function headerStructNames(): string[] {
  const names = new Set<string>();
  for (const h of headers) {
    for (const m of fs.readFileSync(h, 'utf8').matchAll(/^struct\s+(nke_\w+)\s*\{/gm)) names.add(m[1]);
  }
  return [...names].sort();
}

describe('ABI layout: TypeScript mirror vs C headers', function () {
  // Compiling takes a few hundred ms; a cold machine may need more.
  this.timeout(60000);
  let c: CLayout;

  before(() => {
    c = compileAndRun();
  });

  for (const ts of ABI_STRUCTS) {
    it(`struct ${ts.name}: size and every field match the compiler`, () => {
      const cs = c.structs.find((s) => s.name === ts.name);
      assert.ok(cs, `struct ${ts.name} is in the TS table but not printed by test/native/abi-layout.c`);
      assert.deepEqual(diffStruct(ts, cs), []);
    });
  }

  it('every struct the C program prints has a TS layout', () => {
    const tsNames = new Set(ABI_STRUCTS.map((s) => s.name));
    assert.deepEqual(
      c.structs.map((s) => s.name).filter((n) => !tsNames.has(n)),
      [],
    );
  });

  it('every struct defined in the headers is printed by the C program', () => {
    const printed = new Set(c.structs.map((s) => s.name));
    // Guards the header scan itself: a broken regex must not pass vacuously.
    assert.ok(headerStructNames().length >= 27, `header scan found ${headerStructNames().length} structs`);
    assert.deepEqual(
      headerStructNames().filter((n) => !printed.has(n)),
      [],
    );
  });

  it('every constant has the same value on both sides', () => {
    const diffs: string[] = [];
    for (const [name, value] of Object.entries(c.constants)) {
      if (!(name in ABI_CONSTANTS)) diffs.push(`${name}: in C (${value}), not in TS ABI_CONSTANTS`);
      else if (ABI_CONSTANTS[name] !== value) diffs.push(`${name}: TS ${ABI_CONSTANTS[name]}, C ${value}`);
    }
    for (const name of Object.keys(ABI_CONSTANTS)) {
      if (!(name in c.constants)) diffs.push(`${name}: in TS ABI_CONSTANTS, not printed by the C program`);
    }
    assert.deepEqual(diffs, []);
  });

  it('every NKE_* constant the headers define is printed by the C program', () => {
    assert.ok(headerConstantNames().length >= 140, `header scan found ${headerConstantNames().length} names`);
    assert.deepEqual(
      headerConstantNames().filter((n) => !(n in c.constants)),
      [],
    );
  });
});

#!/usr/bin/env node
// Generates extension/src/shared/abi.generated.ts, the TypeScript view of the
// kext ABI, from the C headers that define it (kext/include/nke/nke_abi.h and
// native/emu/include/nke_emu_proto.h): every #define, every enum member and
// the layout of every struct. The headers are scanned only for NAMES (which
// constants, which enums, which structs and members); every NUMBER comes from
// the C compiler: a small program, written from the scan, is compiled
// against the headers and prints sizeof, offsetof, the element type
// (_Generic) and the value of each name. A name the scan got wrong does not
// compile; a member the scan missed leaves a hole the tiling check below
// reports. The hand-written codec (extension/src/shared/abi.ts) takes every
// number from the generated module; test/unit/abi-layout.test.ts checks that
// the module the tests were built with matches the headers as they are now.
//
// The output is git-ignored and rewritten only when it changes. It is made by
// `npm install` (postinstall), scripts/build.mjs (every build, before esbuild),
// and `npm run typecheck` / `npm run lint` (before tsc).
//
//   node scripts/gen-abi.mjs          write the module (if it changed)
//   node scripts/gen-abi.mjs --json   print what the compiler said, as JSON
//   CC=clang node scripts/gen-abi.mjs   another compiler (default cc)
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const HEADERS = ['kext/include/nke/nke_abi.h', 'native/emu/include/nke_emu_proto.h'];
export const OUTPUT = 'extension/src/shared/abi.generated.ts';
const INCLUDES = ['kext/include', 'native/emu/include'];

// TS names where the rule (drop `nke_`, PascalCase; enum members: drop the
// prefix all members share, PascalCase) does not give the established one.
const ENUM_NAMES = { nke_error: 'NkeError' }; // `Error` is the JS global
const MEMBER_PREFIX = { nke_error: /^NKE_(ERR_)?/ }; // NKE_OK next to NKE_ERR_*
const MEMBER_NAMES = { NKE_EV_CANTRECVMORE: 'CantRecvMore', NKE_EV_CANTSENDMORE: 'CantSendMore' };

class GenError extends Error {}

/** The header's text with every comment blanked (same length, newlines kept). */
function blankComments(text) {
  return text.replace(/\/\*[\s\S]*?\*\/|\/\/[^\n]*/g, (c) => c.replace(/[^\n]/g, ' '));
}

/** The comment text on line `n` (0-based) of `raw`, if any, as one line. */
function commentOn(rawLines, n) {
  const m = /\/\*\s*(.*?)\s*(\*\/|$)|\/\/\s*(.*)$/.exec(rawLines[n] ?? '');
  const text = m ? (m[1] ?? m[3] ?? '') : '';
  return text.replace(/\s+/g, ' ').trim() || undefined;
}

function lineAt(text, index) {
  let n = 0;
  for (let i = text.indexOf('\n'); i >= 0 && i < index; i = text.indexOf('\n', i + 1)) n++;
  return n;
}

/** Names the header declares: #defines, enums (with members), structs (with members). */
export function scanHeader(file) {
  const raw = fs.readFileSync(path.join(root, file), 'utf8');
  const rawLines = raw.split('\n');
  const code = blankComments(raw);
  const where = (index) => `${file}:${lineAt(code, index) + 1}`;
  const defines = [];
  const codeLines = code.split('\n');
  for (let i = 0; i < codeLines.length; i++) {
    const first = i;
    let line = codeLines[i];
    while (line.endsWith('\\') && i + 1 < codeLines.length) line = line.slice(0, -1) + codeLines[++i];
    const m = /^\s*#\s*define\s+(NKE_\w+)(\(?)(.*)$/.exec(line);
    // Function-like macros (NKE_STATIC_ASSERT(...)) and guards (no value) are not constants.
    if (!m || m[2] === '(' || !m[3].trim()) continue;
    defines.push({ name: m[1], expr: m[3].trim().replace(/\s+/g, ' '), comment: commentOn(rawLines, first) });
  }
  const enums = [];
  for (const m of code.matchAll(/\benum\s+(nke_\w+)\s*\{([^}]*)\}/g)) {
    const bodyAt = m.index + m[0].indexOf('{') + 1;
    const members = [];
    let at = bodyAt;
    for (const part of m[2].split(',')) {
      const mm = /^\s*(NKE_\w+)\s*(=.*)?$/s.exec(part);
      if (mm)
        members.push({ name: mm[1], comment: commentOn(rawLines, lineAt(code, at + part.indexOf(mm[1]))) });
      else if (part.trim())
        throw new GenError(`${where(at)}: enum ${m[1]}: cannot read member "${part.trim()}"`);
      at += part.length + 1;
    }
    enums.push({ tag: m[1], members });
  }
  const structs = [];
  for (const m of code.matchAll(/^struct\s+(nke_\w+)\s*\{/gm)) {
    const open = m.index + m[0].length - 1;
    let depth = 0;
    let close = open;
    for (; close < code.length; close++) {
      if (code[close] === '{') depth++;
      else if (code[close] === '}' && --depth === 0) break;
    }
    const members = [];
    const addDecls = (text, at, union) => {
      for (const [decl, declAt] of splitTop(text, at)) {
        const u = /^\s*union\s*\{([\s\S]*)\}\s*$/.exec(decl);
        if (u) {
          const group = [];
          addDecls(u[1], declAt + decl.indexOf('{') + 1, group);
          members.push({ union: group });
          continue;
        }
        const d = /^\s*(struct\s+nke_\w+|[A-Za-z_]\w*)\s+([\s\S]+?)\s*$/.exec(decl);
        if (!d) throw new GenError(`${where(declAt)}: struct ${m[1]}: cannot read "${decl.trim()}"`);
        for (const one of d[2].split(',')) {
          const v = /^\s*([A-Za-z_]\w*)\s*(\[[^\]]+\])?\s*$/.exec(one);
          if (!v)
            throw new GenError(`${where(declAt)}: struct ${m[1]}: cannot read declarator "${one.trim()}"`);
          const line = lineAt(code, declAt + decl.indexOf(v[1]));
          const member = { name: v[1], array: v[2] !== undefined, comment: commentOn(rawLines, line) };
          (union ?? members).push(member);
        }
      }
    };
    addDecls(code.slice(open + 1, close), open + 1, undefined);
    structs.push({ tag: m[1], members });
  }
  return { file, defines, enums, structs };
}

/** Top-level `;`-separated declarations of a struct body, with where each starts. */
function splitTop(text, at) {
  const out = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '{') depth++;
    else if (text[i] === '}') depth--;
    else if (text[i] === ';' && depth === 0) {
      if (text.slice(start, i).trim()) out.push([text.slice(start, i), at + start]);
      start = i + 1;
    }
  }
  if (text.slice(start).trim()) throw new GenError(`declaration without ';': "${text.slice(start).trim()}"`);
  return out;
}

/** The C program that prints, as JSON, what the compiler makes of every scanned name. */
function layoutProgram(scans) {
  const structs = scans.flatMap((s) => s.structs);
  const types = [
    ['uint8_t', 'u8'],
    ['uint16_t', 'u16'],
    ['uint32_t', 'u32'],
    ['int32_t', 'i32'],
    ['uint64_t', 'u64'],
    ['char', 'char'],
    ...structs.map((s) => [`struct ${s.tag}`, `struct:${s.tag}`]),
  ];
  const c = [];
  c.push('/* Written by scripts/gen-abi.mjs; compiled and run there, never committed. */');
  c.push('#include <stdio.h>', '#include <stddef.h>');
  for (const h of HEADERS) c.push(`#include "${path.join(root, h)}"`);
  c.push(
    `#define TYPE_NAME(x) _Generic((x), ${types.map(([t, n]) => `${t}: "${n}"`).join(', ')}, default: "unknown")`,
  );
  c.push(`
static int first = 1;
static void sep(void) { if (!first) putchar(','); first = 0; }
static void str(const char *name, const char *value)
{
    sep();
    printf("[\\"%s\\", \\"", name);
    for (const char *p = value; *p; p++) {
        if (*p == '"' || *p == '\\\\') putchar('\\\\');
        putchar(*p);
    }
    printf("\\"]");
}
static void num(const char *name, unsigned long long value) { sep(); printf("[\\"%s\\", %llu]", name, value); }
#define CONST(name) _Generic((name), char *: str, const char *: str, default: num)(#name, name)
static void field(const char *name, size_t offset, size_t size, const char *type, long length)
{
    sep();
    printf("[\\"%s\\", %zu, %zu, \\"%s\\", %ld]", name, offset, size, type, length);
}
#define M(T, f) ((struct T *)0)->f
#define F(T, f) field(#f, offsetof(struct T, f), sizeof(M(T, f)), TYPE_NAME(M(T, f)), -1)
#define A(T, f) field(#f, offsetof(struct T, f), sizeof(M(T, f)), TYPE_NAME(M(T, f)[0]), (long)(sizeof(M(T, f)) / sizeof(M(T, f)[0])))
`);
  c.push('int main(void)', '{');
  c.push('    printf("{\\"constants\\": [");');
  for (const s of scans) {
    for (const d of s.defines) c.push(`    CONST(${d.name});`);
    for (const e of s.enums) for (const m of e.members) c.push(`    CONST(${m.name});`);
  }
  c.push('    printf("], \\"structs\\": [");', '    first = 1;');
  for (const s of structs) {
    c.push(`    sep(); first = 1; printf("[\\"${s.tag}\\", %zu, [", sizeof(struct ${s.tag}));`);
    for (const m of s.members) {
      for (const one of m.union ?? [m]) c.push(`    ${one.array ? 'A' : 'F'}(${s.tag}, ${one.name});`);
    }
    c.push('    printf("]]"); first = 0;');
  }
  c.push('    printf("]}\\n");', '    return fflush(stdout) == 0 ? 0 : 1;', '}');
  return c.join('\n') + '\n';
}

/** Compiles and runs the layout program; the compiler's numbers, keyed like the scan. */
function compileLayout(scans) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nke-gen-abi-'));
  try {
    const src = path.join(dir, 'abi-layout.c');
    const exe = path.join(dir, 'abi-layout');
    fs.writeFileSync(src, layoutProgram(scans));
    const cc = process.env.CC || 'cc';
    const args = [
      '-std=c11',
      '-Wall',
      '-Wextra',
      '-Werror',
      ...INCLUDES.flatMap((i) => ['-I', path.join(root, i)]),
    ];
    try {
      execFileSync(cc, [...args, src, '-o', exe], { stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      throw new GenError(
        `compiling the ABI layout program with ${cc} failed (a static assert in the header fires when its own ` +
          `offsets disagree; without a compiler: bash scripts/setup-system.sh):\n${e.stderr?.toString() || e.message}`,
      );
    }
    const out = JSON.parse(execFileSync(exe, { encoding: 'utf8' }));
    return { constants: new Map(out.constants), structs: out.structs };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The ABI as the compiler laid it out: constants (name -> value), enums and
 * structs with every field's offset, size, element type and array length.
 * A union's members share one field: the first, the others as `aliases`.
 */
export function readAbi() {
  const scans = HEADERS.map(scanHeader);
  const c = compileLayout(scans);
  const constants = [];
  for (const s of scans) {
    for (const d of s.defines) constants.push({ ...d, value: c.constants.get(d.name) });
  }
  const enums = scans.flatMap((s) =>
    s.enums.map((e) => ({ ...e, members: e.members.map((m) => ({ ...m, value: c.constants.get(m.name) })) })),
  );
  for (const k of [...constants, ...enums.flatMap((e) => e.members)]) {
    if (typeof k.value === 'number' && !Number.isSafeInteger(k.value)) {
      throw new GenError(`${k.name} = ${k.value} is not exact as a JS number`);
    }
  }
  const scanned = scans.flatMap((s) => s.structs);
  const structs = c.structs.map(([tag, size, printed], i) => {
    const fields = [];
    let p = 0;
    for (const m of scanned[i].members) {
      const group = (m.union ?? [m]).map((one) => {
        const [name, offset, fsize, type, length] = printed[p++];
        if (type === 'unknown')
          throw new GenError(`struct ${tag}.${name}: a member type the generator does not know`);
        return {
          name,
          offset,
          size: fsize,
          type,
          length: length < 0 ? undefined : length,
          comment: one.comment,
        };
      });
      const [head, ...rest] = group;
      for (const r of rest) {
        if (
          r.offset !== head.offset ||
          r.size !== head.size ||
          r.type !== head.type ||
          r.length !== head.length
        ) {
          throw new GenError(`struct ${tag}: union members ${head.name} and ${r.name} differ in layout`);
        }
      }
      fields.push(rest.length ? { ...head, aliases: rest.map((r) => r.name) } : head);
    }
    // Every byte belongs to exactly one named field (the header pads
    // explicitly): a member the scan missed shows up here.
    let next = 0;
    for (const f of [...fields].sort((a, b) => a.offset - b.offset)) {
      if (f.offset !== next)
        throw new GenError(`struct ${tag}: bytes ${next}..${f.offset} belong to no member the scan found`);
      next = f.offset + f.size;
    }
    if (next !== size)
      throw new GenError(`struct ${tag}: bytes ${next}..${size} belong to no member the scan found`);
    return { tag, size, fields };
  });
  return { constants, enums, structs };
}

const pascal = (s) =>
  s
    .toLowerCase()
    .split('_')
    .map((w, i) => (w ? w[0].toUpperCase() + w.slice(1) : i === 0 ? '_' : ''))
    .join('');

export const layoutName = (tag) => `${pascal(tag.replace(/^nke_/, ''))}Layout`;

function enumNames(e) {
  const name = ENUM_NAMES[e.tag] ?? pascal(e.tag.replace(/^nke_/, ''));
  let strip = MEMBER_PREFIX[e.tag];
  if (!strip) {
    // The words every member starts with, leaving each member at least one.
    const words = e.members.map((m) => m.name.split('_'));
    let n = 0;
    while (words.every((w) => w.length > n + 1 && w[n] === words[0][n])) n++;
    strip = words[0].slice(0, n).join('_') + '_';
  }
  return {
    name,
    members: e.members.map((m) => ({ ...m, ts: MEMBER_NAMES[m.name] ?? pascal(m.name.replace(strip, '')) })),
  };
}

const doc = (text, indent = '') => (text ? `${indent}/** ${text.replace(/\*\//g, '* /')} */\n` : '');
const q = (s) => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;

function literal(value, expr) {
  if (typeof value === 'string') return q(value);
  return /^0x/i.test(expr ?? '') ? `0x${value.toString(16)}` : String(value);
}

/** The TypeScript module for `abi` (readAbi()). Deterministic: same headers, same text. */
export function renderModule(abi) {
  const o = [];
  o.push(`// GENERATED by scripts/gen-abi.mjs from ${HEADERS.join(' and ')}:`);
  o.push('// do not edit, do not commit (git-ignored). The build writes it; so do `npm install`,');
  o.push('// `npm run typecheck` and `npm run lint`. Every number is what the C compiler said');
  o.push('// (sizeof, offsetof, the value of each #define and enum member).');
  o.push('// The hand-written codec over these tables: ./abi.ts (import from there).');
  o.push("import type { StructLayout } from './abi';", '');
  o.push('// #defines');
  for (const k of abi.constants) {
    const plain = /^(0x[0-9a-f]+|[0-9]+)u?$/i.test(k.expr) || /^"/.test(k.expr);
    const what = [k.comment, plain ? undefined : `C: ${k.expr}`].filter(Boolean).join(' — ');
    o.push(`${doc(what)}export const ${k.name} = ${literal(k.value, k.expr)};`);
  }
  o.push('', '// enums');
  for (const e of abi.enums) {
    const n = enumNames(e);
    o.push(`/** enum ${e.tag} */`, `export enum ${n.name} {`);
    for (const m of n.members) o.push(`${doc(m.comment, '  ')}  ${m.ts} = ${m.value}, // ${m.name}`);
    o.push('}');
  }
  o.push('', '// struct layouts (fields in C order; a union is its first member, the others in aliases)');
  const byTag = new Map(abi.structs.map((s) => [s.tag, s]));
  for (const s of abi.structs) {
    o.push(
      `export const ${layoutName(s.tag)} = {`,
      `  name: ${q(s.tag)},`,
      `  size: ${s.size},`,
      '  fields: [',
    );
    for (const f of s.fields) {
      const parts = [`name: ${q(f.name)}`, `offset: ${f.offset}`];
      if (f.type.startsWith('struct:')) {
        const tag = f.type.slice('struct:'.length);
        if (!byTag.has(tag))
          throw new GenError(`struct ${s.tag}.${f.name}: struct ${tag} is not in the headers`);
        parts.push("type: 'struct'", `struct: ${layoutName(tag)}`);
      } else parts.push(`type: ${q(f.type)}`);
      if (f.length !== undefined) parts.push(`length: ${f.length}`);
      if (f.aliases) parts.push(`aliases: [${f.aliases.map(q).join(', ')}]`);
      o.push(`    { ${parts.join(', ')} },${f.comment ? ` // ${f.comment}` : ''}`);
    }
    o.push('  ],', '} as const satisfies StructLayout;');
  }
  o.push('', '/** Every struct of the headers, in header order. */');
  o.push('export const ABI_STRUCTS: readonly StructLayout[] = [');
  for (const s of abi.structs) o.push(`  ${layoutName(s.tag)},`);
  o.push('];', '');
  o.push('/** Every #define and enum member of the headers by its C name. */');
  o.push('export const ABI_CONSTANTS: Readonly<Record<string, number | string>> = {');
  for (const k of abi.constants) o.push(`  ${k.name},`);
  for (const e of abi.enums) {
    const n = enumNames(e);
    for (const m of n.members) o.push(`  ${m.name}: ${n.name}.${m.ts},`);
  }
  o.push('};', '');
  return o.join('\n');
}

/** Writes the module when its text changed; returns whether it did. */
export function generate() {
  const text = renderModule(readAbi());
  const out = path.join(root, OUTPUT);
  if (fs.existsSync(out) && fs.readFileSync(out, 'utf8') === text) return false;
  fs.writeFileSync(out, text);
  return true;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    if (process.argv.includes('--json')) {
      const abi = readAbi();
      const strip = ({ comment: _c, expr: _e, ...rest }) => rest;
      console.log(
        JSON.stringify({
          constants: Object.fromEntries([
            ...abi.constants.map((k) => [k.name, k.value]),
            ...abi.enums.flatMap((e) => e.members.map((m) => [m.name, m.value])),
          ]),
          structs: abi.structs.map((s) => ({ ...s, fields: s.fields.map(strip) })),
        }),
      );
    } else if (generate()) console.log(`[gen-abi] wrote ${OUTPUT}`);
  } catch (e) {
    if (!(e instanceof GenError)) throw e;
    console.error(`[gen-abi] ${e.message}`);
    process.exit(1);
  }
}

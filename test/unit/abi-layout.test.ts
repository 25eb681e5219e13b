// ABI conformance, the guard between the C headers and the TypeScript side.
//
// 1. The tables are the headers': the TS constants, enums and layouts are
//    generated from the C headers at build time (scripts/gen-abi.mjs ->
//    extension/src/shared/abi.generated.ts). Here the generator asks the C
//    compiler again, now, and every struct size, field offset, field size,
//    element type, array length and constant must equal what this test was
//    built with. A header edited after the build (a field moved, added,
//    renamed, a constant changed) fails until the build runs again.
// 2. The hand-written code names the fields: the helper's adapter
//    (adaptNotification, extension/src/helper/model.ts) turns every decoded
//    notification into the model's shape by field name. Each notification
//    kind is decoded from real bytes and handed to the adapter through a
//    proxy that records every field it reads: a field the layout has that
//    the adapter never reads (a field added in C, or renamed: the new name
//    is unread) fails, and so does a read of a field the layout does not
//    have (the old name of a renamed or removed field). Fields it leaves
//    unread on purpose are listed below with the reason.
// Encoders need no such list: a field the layout has and the caller does not
// supply throws in encodeStruct (every encoder test fails), and tsc rejects
// a field the layout no longer has in the object literals they build.
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import {
  ABI_CONSTANTS,
  ABI_STRUCTS,
  decodeNotificationBatch,
  fieldSize,
  NOTIFICATION_KINDS,
  NKE_DATA_F_HAS_ADDR,
  type Notification,
  type StructLayout,
  zeroStruct,
} from '../../extension/src/shared/abi';
import { adaptNotification } from '../../extension/src/helper/model';
import { encodeNotification } from '../shared/abiTestCodecs';

interface CField {
  name: string;
  offset: number;
  size: number;
  type: string;
  length?: number;
  aliases?: string[];
}
interface CLayout {
  structs: { tag: string; size: number; fields: CField[] }[];
  constants: Record<string, number | string>;
}

// The tests run from out/test/unit (bundled); find the repo by its header.
function repoRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'kext/include/nke/nke_abi.h'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`kext/include/nke/nke_abi.h not found above ${__dirname}`);
  }
}

/** What the C compiler says about the headers as they are now (the generator's --json). */
function compilerNow(): CLayout {
  const root = repoRoot();
  try {
    return JSON.parse(
      execFileSync(process.execPath, [path.join(root, 'scripts/gen-abi.mjs'), '--json'], {
        cwd: root,
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    ) as CLayout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`scripts/gen-abi.mjs --json failed:\n${err.stderr || err.message}`);
  }
}

const STALE = 'the TS ABI tables are stale: rebuild (node scripts/build.mjs, or node scripts/gen-abi.mjs)';

function tsFieldType(f: StructLayout['fields'][number]): string {
  return f.type === 'struct' ? `struct:${f.struct?.name}` : f.type;
}

/** Every difference between one built-in layout and the compiler's, as readable lines. */
function diffStruct(ts: StructLayout, c: CLayout['structs'][number]): string[] {
  const out: string[] = [];
  if (ts.size !== c.size) out.push(`${ts.name}: size built ${ts.size}, C now ${c.size}`);
  const names = (fs: readonly { name: string }[]) => fs.map((f) => f.name).join(', ');
  if (names(ts.fields) !== names(c.fields)) {
    out.push(`${ts.name}: fields built [${names(ts.fields)}], C now [${names(c.fields)}]`);
  }
  const cByName = new Map(c.fields.map((f) => [f.name, f]));
  for (const f of ts.fields) {
    const cf = cByName.get(f.name);
    if (!cf) continue;
    if (f.offset !== cf.offset) {
      out.push(`${ts.name}.${f.name}: offset built ${f.offset}, C now ${cf.offset}`);
    }
    if (fieldSize(f) !== cf.size) {
      out.push(`${ts.name}.${f.name}: size built ${fieldSize(f)}, C now ${cf.size}`);
    }
    if (tsFieldType(f) !== cf.type) {
      out.push(`${ts.name}.${f.name}: type built ${tsFieldType(f)}, C now ${cf.type}`);
    }
    if (f.length !== cf.length) {
      out.push(`${ts.name}.${f.name}: array length built ${f.length}, C now ${cf.length}`);
    }
    if ((f.aliases ?? []).join() !== (cf.aliases ?? []).join()) {
      out.push(`${ts.name}.${f.name}: union members built [${f.aliases ?? []}], C now [${cf.aliases ?? []}]`);
    }
  }
  return out;
}

/** NKE_* names the headers define (macros and enum members), minus helper macros and guards: an independent scan. */
function headerConstantNames(): string[] {
  const helpers = new Set([
    'NKE_ABI_H',
    'NKE_EMU_PROTO_H',
    'NKE_STATIC_ASSERT',
    'NKE_ASSERT_SIZE',
    'NKE_ASSERT_OFF',
  ]);
  const names = new Set<string>();
  for (const h of ['kext/include/nke/nke_abi.h', 'native/emu/include/nke_emu_proto.h']) {
    const text = fs.readFileSync(path.join(repoRoot(), h), 'utf8').replace(/\/\*[\s\S]*?\*\//g, '');
    for (const m of text.matchAll(/^\s*#define\s+(NKE_\w+)/gm)) names.add(m[1]);
    for (const body of text.matchAll(/\benum\s+\w+\s*\{([^}]*)\}/g)) {
      for (const m of body[1].matchAll(/\b(NKE_\w+)\s*(=|,|$)/gm)) names.add(m[1]);
    }
  }
  return [...names].filter((n) => !helpers.has(n)).sort();
}

describe('ABI layout: the generated TS tables are the C headers as they are now', function () {
  // Compiling takes a few hundred ms; a loaded machine may need more.
  this.timeout(60000);
  let c: CLayout;

  before(() => {
    c = compilerNow();
  });

  it('the same structs, in header order', () => {
    assert.deepEqual(
      ABI_STRUCTS.map((s) => s.name),
      c.structs.map((s) => s.tag),
      STALE,
    );
    // Guards the generator's header scan: it must not pass vacuously.
    assert.ok(c.structs.length >= 29, `the generator found ${c.structs.length} structs`);
  });

  for (const ts of ABI_STRUCTS) {
    it(`struct ${ts.name}: size and every field as the compiler lays it out now`, () => {
      const cs = c.structs.find((s) => s.tag === ts.name);
      assert.ok(cs, `struct ${ts.name} was built in but is no longer in the headers: ${STALE}`);
      assert.deepEqual(diffStruct(ts, cs), [], STALE);
    });
  }

  it('every constant and enum member with the value the compiler gives it now', () => {
    const diffs: string[] = [];
    for (const [name, value] of Object.entries(c.constants)) {
      if (!(name in ABI_CONSTANTS)) diffs.push(`${name}: in the headers (${value}), not built in`);
      else if (ABI_CONSTANTS[name] !== value) {
        diffs.push(`${name}: built ${ABI_CONSTANTS[name]}, C now ${value}`);
      }
    }
    for (const name of Object.keys(ABI_CONSTANTS)) {
      if (!(name in c.constants)) diffs.push(`${name}: built in, no longer in the headers`);
    }
    assert.deepEqual(diffs, [], STALE);
  });

  it("every NKE_* name of the headers is in the generator's output (a second, simpler scan)", () => {
    const names = headerConstantNames();
    assert.ok(names.length >= 140, `header scan found ${names.length} names`);
    assert.deepEqual(
      names.filter((n) => !(n in c.constants)),
      [],
    );
  });
});

// ---------------------------------------------------------------------------
// 2. The hand-written adapter reads every field
// ---------------------------------------------------------------------------

/**
 * Fields of the notification records the adapter does not read, and why.
 * A field added to the header must be read by adaptNotification or listed
 * here; a name listed here that the layout no longer has fails too.
 */
const UNREAD: Readonly<Record<string, string>> = {
  'hdr.type': 'the record kind: decodeNotification reads it to choose the layout (kind)',
  'hdr.size': 'the record length: decodeNotification and the batch framing read it',
  'addr.scope_id': 'the model prints addresses without the IPv6 scope (model.ts addr())',
  'local.scope_id': 'the model prints addresses without the IPv6 scope (model.ts addr())',
  'remote.scope_id': 'the model prints addresses without the IPv6 scope (model.ts addr())',
};

/** Every non-padding leaf field of `layout` as a dotted path ('hdr.sock.slot'). */
function leafPaths(layout: StructLayout, prefix = ''): string[] {
  const out: string[] = [];
  for (const f of layout.fields) {
    if (f.name.startsWith('_pad')) continue;
    if (f.type === 'struct' && f.length === undefined && f.struct) {
      out.push(...leafPaths(f.struct, `${prefix}${f.name}.`));
    } else out.push(`${prefix}${f.name}`);
  }
  return out;
}

/**
 * `value` behind a proxy that records each field read (a nested struct
 * handed on whole, as hdr.sock is, counts as reading all of it) and each
 * read of a name the value does not have.
 */
interface Reads {
  /** leaf fields read */
  leaves: Set<string>;
  /** nested structs reached: read in full when none of their own fields was */
  structs: Set<string>;
  /** names read that the value does not have */
  missing: Set<string>;
}

function tracked(value: object, prefix: string, r: Reads, layout: StructLayout): object {
  const structs = new Map(
    layout.fields
      .filter((f) => f.type === 'struct' && f.length === undefined)
      .map((f) => [f.name, f.struct!]),
  );
  return new Proxy(value, {
    get(target, key, receiver) {
      if (typeof key !== 'string') return Reflect.get(target, key, receiver);
      if (!(key in target)) {
        r.missing.add(`${prefix}${key}`);
        return undefined;
      }
      const v = Reflect.get(target, key, receiver);
      const nested = structs.get(key);
      if (nested && typeof v === 'object' && v !== null) {
        r.structs.add(`${prefix}${key}`);
        return tracked(v as object, `${prefix}${key}.`, r, nested);
      }
      r.leaves.add(`${prefix}${key}`);
      return v;
    },
  });
}

/** A record of `kind` with every field set (so no branch of the adapter is skipped). */
function sample(kind: Notification['kind'], layout: StructLayout): Uint8Array {
  const v = zeroStruct(layout) as Record<string, unknown>;
  if (kind === 'data') {
    Object.assign(v, { direction: 1, nbuffers: 1, size: 1 });
    (v.hdr as { flags: number }).flags = NKE_DATA_F_HAS_ADDR;
  }
  if (kind === 'data_gap') v.direction = 2;
  return encodeNotification({ kind, ...v } as Notification);
}

describe('ABI layout: the adapter of every notification reads exactly the fields the header has', () => {
  const kinds = new Map(Object.values(NOTIFICATION_KINDS).map((k) => [k.kind, k.layout]));

  for (const [kind, layout] of kinds) {
    it(`${kind} (${layout.name})`, () => {
      const { notifications, malformed } = decodeNotificationBatch(sample(kind, layout));
      assert.equal(malformed, 0);
      assert.equal(notifications.length, 1);
      const r: Reads = { leaves: new Set(), structs: new Set(), missing: new Set() };
      adaptNotification(tracked(notifications[0], '', r, layout) as Notification);
      const drilled = (s: string) => [...r.leaves].some((l) => l.startsWith(`${s}.`));
      const read = (p: string) =>
        r.leaves.has(p) || [...r.structs].some((s) => p.startsWith(`${s}.`) && !drilled(s));
      const unread = leafPaths(layout).filter((p) => !read(p) && !(p in UNREAD));
      assert.deepEqual(
        unread,
        [],
        `${layout.name}: fields adaptNotification never reads (read them or list them in UNREAD)`,
      );
      assert.deepEqual(
        [...r.missing],
        [],
        `${layout.name}: adaptNotification reads fields the header does not have`,
      );
    });
  }

  it('every field listed as unread exists in some notification layout', () => {
    const all = new Set([...kinds.values()].flatMap((l) => leafPaths(l)));
    assert.deepEqual(
      Object.keys(UNREAD).filter((p) => !all.has(p)),
      [],
    );
  });
});

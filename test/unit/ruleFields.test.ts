// The rule field table (extension/src/shared/ruleFields.ts): package.json's
// rule settings are the schema generated from it; every field takes its good
// values (the schema agrees) and refuses its bad ones naming the field; every
// NKE_MATCH_* bit and every field of struct nke_rule is some entry's, so a
// field added to the C header without its entry here fails.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  ABI_CONSTANTS,
  emptyRule,
  NKE_AF_INET,
  NKE_AF_INET6,
  NKE_MATCH_ALL_FIELDS,
  RuleAction,
  RuleLayout,
  type Rule,
} from '../../extension/src/shared/abi';
import {
  checkAction,
  compileMatch,
  type JsonSchema,
  parseCidr,
  RULE_ACTION_NAMES,
  RULE_FIELD_NAMES,
  RULE_FIELDS,
  type RuleFieldName,
  RulesError,
  ruleSettingsSchema,
} from '../../extension/src/shared/ruleFields';
import { describeRule } from '../../extension/src/intercept/interceptRules';
import type { InterceptRule } from '../../extension/src/shared/helperProtocol';

// out/test/unit at run time, test/unit in the source tree: package.json is found from the project root.
function packageJson(): { contributes: { configuration: { properties: Record<string, unknown> } } } {
  for (let dir = __dirname; dir !== path.dirname(dir); dir = path.dirname(dir)) {
    const p = path.join(dir, 'package.json');
    if (fs.existsSync(p) && fs.existsSync(path.join(dir, 'extension', 'src'))) {
      return JSON.parse(fs.readFileSync(p, 'utf8'));
    }
  }
  throw new Error(`package.json not found above ${__dirname}`);
}

/** The subset of JSON schema the settings use; true when `v` satisfies `s`. */
function satisfies(s: JsonSchema, v: unknown): boolean {
  if (Array.isArray(s.oneOf)) {
    return (s.oneOf as JsonSchema[]).filter((o) => satisfies(o, v)).length === 1;
  }
  switch (s.type) {
    case 'integer':
      if (typeof v !== 'number' || !Number.isInteger(v)) return false;
      break;
    case 'string':
      if (typeof v !== 'string') return false;
      break;
    case 'array':
      if (!Array.isArray(v)) return false;
      if (typeof s.minItems === 'number' && v.length < s.minItems) return false;
      if (typeof s.maxItems === 'number' && v.length > s.maxItems) return false;
      if (s.items && !v.every((x) => satisfies(s.items as JsonSchema, x))) return false;
      break;
    default:
      throw new Error(`schema type ${String(s.type)} not known to this test`);
  }
  if (Array.isArray(s.enum) && !s.enum.includes(v as string)) return false;
  if (typeof v === 'number') {
    if (typeof s.minimum === 'number' && v < s.minimum) return false;
    if (typeof s.maximum === 'number' && v > s.maximum) return false;
  }
  if (typeof v === 'string') {
    if (typeof s.minLength === 'number' && v.length < s.minLength) return false;
    if (typeof s.maxLength === 'number' && v.length > s.maxLength) return false;
    if (typeof s.pattern === 'string' && !new RegExp(s.pattern).test(v)) return false;
  }
  return true;
}

/** Per field: values it takes with the ABI fields they set, and values it refuses. */
const CASES: Record<RuleFieldName, { good: [unknown, Partial<Rule>][]; bad: unknown[] }> = {
  pid: {
    good: [
      [1, { pid: 1 }],
      [0x7fffffff, { pid: 0x7fffffff }],
    ],
    bad: [0, -3, 1.5, '12', 0x80000000, null],
  },
  process: {
    good: [
      ['curl', { comm: 'curl' }],
      ['x'.repeat(31), { comm: 'x'.repeat(31) }],
    ],
    bad: ['', 'x'.repeat(32), 7, ['curl']],
  },
  direction: {
    good: [
      ['in', { direction: 1 }],
      ['out', { direction: 2 }],
      ['both', { direction: 3 }],
    ],
    bad: ['up', '', 1, null],
  },
  protocol: {
    good: [
      ['tcp', { protocol: 6 }],
      ['udp', { protocol: 17 }],
    ],
    bad: ['icmp', 'TCP', 6],
  },
  localPort: {
    good: [
      [0, { local_port_min: 0, local_port_max: 0 }],
      [65535, { local_port_min: 65535, local_port_max: 65535 }],
      [[8000, 8999], { local_port_min: 8000, local_port_max: 8999 }],
    ],
    bad: [-1, 65536, 80.5, '80', [1], [1, 2, 3], [9, 8], [0, 70000]],
  },
  remotePort: {
    good: [
      [8080, { remote_port_min: 8080, remote_port_max: 8080 }],
      [[1, 1], { remote_port_min: 1, remote_port_max: 1 }],
    ],
    bad: [70000, [8999, 8000], 'http'],
  },
  localAddr: {
    good: [
      ['127.0.0.1', { family: NKE_AF_INET, local_prefix: 32 }],
      ['10.0.0.0/8', { family: NKE_AF_INET, local_prefix: 8 }],
      ['::1/128', { family: NKE_AF_INET6, local_prefix: 128 }],
      ['::ffff:10.0.0.1/104', { family: NKE_AF_INET6, local_prefix: 104 }],
    ],
    bad: ['10.0.0.300', '10.0.0.0/33', '::1/129', 'fe80::1%4', 'localhost', '1.2.3.4/', '1.2.3.4/x', 10],
  },
  remoteAddr: {
    good: [
      ['0.0.0.0/0', { family: NKE_AF_INET, remote_prefix: 0 }],
      ['fe80::1/64', { family: NKE_AF_INET6, remote_prefix: 64 }],
    ],
    bad: ['1.2.3', '::1::2', '10.0.0.1/-1', ''],
  },
};

const itemsSchema = () =>
  (ruleSettingsSchema()['nke.interceptRules'].items as { properties: Record<string, JsonSchema> }).properties;

describe('rule field table (ruleFields.ts)', () => {
  it("package.json's nke.capture and nke.interceptRules are the schema generated from the table (npm run rules:schema)", () => {
    const props = packageJson().contributes.configuration.properties;
    for (const [key, schema] of Object.entries(ruleSettingsSchema())) {
      assert.deepEqual(props[key], schema, `${key}: run npm run rules:schema`);
    }
  });

  it('has cases for every field, and every field is in the schema', () => {
    assert.deepEqual(Object.keys(CASES).sort(), [...RULE_FIELD_NAMES].sort());
    for (const name of RULE_FIELD_NAMES) assert.ok(itemsSchema()[name], name);
  });

  for (const name of RULE_FIELD_NAMES) {
    it(`${name}: takes its good values (the schema too), encodes them, refuses bad ones naming the field`, () => {
      const f = RULE_FIELDS[name];
      for (const [v, fields] of CASES[name].good) {
        assert.ok(satisfies(f.schema, v), `schema takes ${JSON.stringify(v)}`);
        const r = compileMatch('rule', { [name]: v }, emptyRule(), RULE_FIELD_NAMES);
        assert.equal(r.match, f.bits, `${JSON.stringify(v)}: match bits`);
        for (const [k, want] of Object.entries(fields)) {
          assert.deepEqual(r[k as keyof Rule], want, `${JSON.stringify(v)}: ${k}`);
        }
      }
      for (const v of CASES[name].bad) {
        assert.throws(
          () => compileMatch('rule', { [name]: v }, emptyRule(), RULE_FIELD_NAMES),
          (e: Error) => e instanceof RulesError && e.message.startsWith(`rule.${name}: `),
          `refuses ${JSON.stringify(v)}`,
        );
      }
    });
  }

  it('schema and validator refuse the same values, but for what a schema cannot say (a range min > max)', () => {
    const schemaOnlyTakes = new Set([
      '[9,8]',
      '[8999,8000]',
      '"10.0.0.300"',
      '"1.2.3"',
      '"::1::2"',
      '"::1/129"',
      '"10.0.0.0/33"',
    ]);
    for (const name of RULE_FIELD_NAMES) {
      for (const v of CASES[name].bad) {
        const key = JSON.stringify(v);
        if (schemaOnlyTakes.has(key)) continue;
        assert.ok(!satisfies(RULE_FIELDS[name].schema, v), `${name}: the schema refuses ${key} too`);
      }
    }
  });

  it("every NKE_MATCH_* bit of the ABI is some field's; together they are NKE_MATCH_ALL_FIELDS", () => {
    const bits = Object.entries(ABI_CONSTANTS).filter(
      ([k]) => k.startsWith('NKE_MATCH_') && k !== 'NKE_MATCH_ALL_FIELDS',
    );
    assert.ok(bits.length >= 9);
    const all = RULE_FIELD_NAMES.reduce((m, n) => m | RULE_FIELDS[n].bits, 0);
    for (const [k, v] of bits) assert.ok(all & (v as number), `${k} has no entry in RULE_FIELDS`);
    assert.equal(all, NKE_MATCH_ALL_FIELDS);
  });

  it('every field of struct nke_rule but match and action is written by some entry', () => {
    const written = new Set<string>();
    const before = emptyRule();
    for (const name of RULE_FIELD_NAMES) {
      for (const [v] of CASES[name].good) {
        const r = compileMatch('rule', { [name]: v }, emptyRule(), RULE_FIELD_NAMES);
        for (const k of Object.keys(r) as (keyof Rule)[]) {
          if (JSON.stringify(r[k]) !== JSON.stringify(before[k])) written.add(k);
        }
      }
    }
    const fields = RuleLayout.fields.map((f) => f.name).filter((n) => !n.startsWith('_'));
    assert.deepEqual(
      fields.filter((n) => n !== 'match' && n !== 'action' && !written.has(n)),
      [],
      'nke_rule fields no entry of RULE_FIELDS writes',
    );
  });

  it("the Filter view's label of a rule shows every field (describeRule)", () => {
    for (const name of RULE_FIELD_NAMES) {
      const [v] = CASES[name].good[0];
      const label = describeRule({ action: 'hold', [name]: v } as InterceptRule);
      assert.notEqual(label, 'all traffic', `${name} ${JSON.stringify(v)}`);
    }
  });

  it('localAddr and remoteAddr of different families are refused; the same family gives both', () => {
    assert.throws(
      () => compileMatch('r', { localAddr: '::1', remoteAddr: '10.0.0.1' }, emptyRule(), RULE_FIELD_NAMES),
      /r: localAddr and remoteAddr of different families/,
    );
    const r = compileMatch(
      'r',
      { localAddr: '10.0.0.0/8', remoteAddr: '10.1.2.3' },
      emptyRule(),
      RULE_FIELD_NAMES,
    );
    assert.deepEqual([...r.local_addr.slice(0, 4), ...r.remote_addr.slice(0, 4)], [10, 0, 0, 0, 10, 1, 2, 3]);
  });

  it('an IPv4-mapped IPv6 address keeps its four IPv4 bytes at the end', () => {
    const c = parseCidr('x', '::ffff:10.0.0.1/104');
    assert.deepEqual([...c.addr], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1]);
  });

  it('actions: each name has its ABI code; anything else names the field', () => {
    assert.deepEqual(
      RULE_ACTION_NAMES.map((a) => checkAction('a', a)),
      [RuleAction.Hold, RuleAction.Report, RuleAction.Pass],
    );
    assert.throws(
      () => checkAction('x.action', 'drop', true),
      /x\.action: is "hold", "report" or "pass" \(required\); got a string/,
    );
    assert.throws(() => checkAction('x.action', undefined, true), /got nothing/);
    assert.throws(() => checkAction('x', 'toString'), RulesError);
  });
});

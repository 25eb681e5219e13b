// The shared rule table (test/shared/rule-cases.json), helper side: each
// case's rules compile to exactly the capture config the filter is tested
// with (test/native/test_rule_cases.c classifies the case's flow under it),
// and the helper's decision from the rule the filter names is the case's.
// The helper has no matcher of its own: the kernel's answer is its input.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { compileRules, decideHeld } from '../../extension/src/helper/rules';
import { emptyRule, NKE_RULE_DEFAULT, type Rule } from '../../extension/src/shared/abi';
import { RULE_ACTIONS, type RuleActionName } from '../../extension/src/shared/ruleFields';

interface RuleCase {
  what: string;
  rules: unknown;
  kernel: { default: string; rules: Record<string, number | string | number[]>[] };
  expect: { action: string; rule: number | 'default'; helper: 'person' | 'pass' | 'rewrite' };
}

// out/test/helper at run time, test/helper in the source tree: the table is found from the project root.
function tablePath(): string {
  for (let dir = __dirname; dir !== path.dirname(dir); dir = path.dirname(dir)) {
    const p = path.join(dir, 'test', 'shared', 'rule-cases.json');
    if (fs.existsSync(p)) return p;
  }
  throw new Error(`test/shared/rule-cases.json not found above ${__dirname}`);
}

/** A rule of the table: the kernel's field names, omitted fields zero, addresses as their first bytes. */
function kernelRule(fields: Record<string, number | string | number[]>): Rule {
  const r: Rule = emptyRule();
  for (const [k, v] of Object.entries(fields)) {
    if (Array.isArray(v)) {
      const a = new Uint8Array(16);
      a.set(v);
      (r as unknown as Record<string, unknown>)[k] = a;
    } else {
      (r as unknown as Record<string, unknown>)[k] = v;
    }
  }
  return r;
}

const table = JSON.parse(fs.readFileSync(tablePath(), 'utf8')) as { cases: RuleCase[] };

describe('shared rule table (test/shared/rule-cases.json): the helper half', () => {
  it('has cases', () => assert.ok(table.cases.length >= 10));
  for (const c of table.cases) {
    it(c.what, () => {
      const compiled = compileRules(c.rules);
      assert.equal(
        compiled.kernel.defaultAction,
        RULE_ACTIONS[c.kernel.default as RuleActionName].code,
        'default action',
      );
      assert.deepEqual(
        compiled.kernel.rules.map((r) => ({
          ...r,
          local_addr: [...r.local_addr],
          remote_addr: [...r.remote_addr],
        })),
        c.kernel.rules.map((f) => {
          const r = kernelRule(f);
          return { ...r, local_addr: [...r.local_addr], remote_addr: [...r.remote_addr] };
        }),
        'the capture config the filter is tested with',
      );
      const rule = c.expect.rule === 'default' ? NKE_RULE_DEFAULT : c.expect.rule;
      assert.equal(decideHeld(compiled, rule).kind, c.expect.helper);
    });
  }
});

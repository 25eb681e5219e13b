// Rules: validation errors name the field; the helper acts on the rule the
// filter names, in the config it names by tag.
import assert from 'node:assert/strict';
import {
  compileRules,
  decideHeld,
  InstalledConfigs,
  rewriteBytes,
  RulesError,
} from '../../extension/src/helper/rules';
import { encodeCaptureConfig, NKE_RULE_DEFAULT, RuleAction } from '../../extension/src/shared/abi';
import { parseCidr } from '../../extension/src/shared/ruleFields';

describe('helper rules', () => {
  // Which chunk is held, and what the helper then does with it: the shared
  // table test/shared/rule-cases.json (rule-cases.test.ts here, test_rule_cases.c
  // for the filter).
  it('puts rewrite rules first so their chunks are held and edited', () => {
    const r = compileRules({
      default: 'report',
      intercept: [{ action: 'hold', process: 'curl' }],
      rewrite: [{ find: 'GET', replace: 'PUT', remotePort: 8080 }],
    });
    assert.equal(r.kernel.rules.length, 2);
    assert.equal(r.kernel.rules[0].action, RuleAction.Hold);
    const d = decideHeld(r, 0);
    assert.equal(d.kind, 'rewrite');
    assert.equal(d.kind === 'rewrite' && d.rewrite.find.toString(), 'GET');
  });

  it('a chunk held under a config the helper no longer knows, or a rule it does not have, goes to a person', () => {
    const r = compileRules({ default: 'pass', intercept: [{ action: 'pass', pid: 1 }] });
    assert.equal(decideHeld(undefined, 0).kind, 'person');
    assert.equal(decideHeld(r, 5).kind, 'person');
    assert.equal(decideHeld(r, 0).kind, 'pass');
    assert.equal(decideHeld(r, NKE_RULE_DEFAULT).kind, 'pass');
  });

  it('keeps the last 16 configs by tag, never tag 0', () => {
    const configs = new InstalledConfigs();
    const all = Array.from({ length: 20 }, (_, i) => compileRules({ holdTimeoutMs: i }));
    const tags = all.map((r) => configs.install(r));
    assert.deepEqual(
      tags,
      Array.from({ length: 20 }, (_, i) => i + 1),
    );
    assert.equal(configs.get(0), undefined);
    for (let i = 0; i < 4; i++) assert.equal(configs.get(tags[i]), undefined, `tag ${tags[i]} forgotten`);
    for (let i = 4; i < 20; i++) assert.equal(configs.get(tags[i]), all[i]);
  });

  it('rewrites every occurrence, including growing and shrinking', () => {
    assert.equal(
      rewriteBytes(Buffer.from('a-b-a-a'), Buffer.from('a'), Buffer.from('xyz'))?.toString(),
      'xyz-b-xyz-xyz',
    );
    assert.equal(rewriteBytes(Buffer.from('hello'), Buffer.from('ll'), Buffer.alloc(0))?.toString(), 'heo');
    assert.equal(rewriteBytes(Buffer.from('hello'), Buffer.from('zz'), Buffer.from('y')), undefined);
  });

  it('rejects malformed rules with the field named', () => {
    const bad: [unknown, RegExp][] = [
      [[], /expected an object/],
      [{ default: 'maybe' }, /rules\.default/],
      [{ intercept: [{ action: 'hold', remotePort: 70000 }] }, /intercept\[0\]\.remotePort/],
      [{ intercept: [{ action: 'hold', remoteAddr: '10.0.0.300' }] }, /not an IP address/],
      [{ intercept: [{ action: 'hold', remoteAddr: '10.0.0.0/33' }] }, /prefix/],
      [{ intercept: [{ action: 'wait' }] }, /intercept\[0\]\.action/],
      [{ intercept: [{ action: 'hold', process: 'x'.repeat(40) }] }, /process/],
      [{ intercept: [{ action: 'hold', colour: 'red' }] }, /unknown field "colour"/],
      [{ rewrite: [{ find: '', replace: 'x' }] }, /rewrite\[0\]\.find/],
      [{ rewrite: [{ find: 'zz', replace: 'x', encoding: 'hex' }] }, /hex/],
      [{ intercept: Array(65).fill({ action: 'hold' }) }, /at most 64/],
    ];
    for (const [input, re] of bad) {
      assert.throws(
        () => compileRules(input),
        (e: Error) => e instanceof RulesError && re.test(e.message),
      );
    }
  });

  it('parses IPv6 CIDRs', () => {
    const c = parseCidr('x', 'fe80::1/64');
    assert.equal(c.prefix, 64);
    assert.deepEqual([...c.addr], [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
  });

  it('encodes the capture config in the ABI layout', () => {
    const r = compileRules({
      default: 'hold',
      holdTimeoutMs: 1500,
      intercept: [{ action: 'pass', pid: 7, localPort: 22 }],
    });
    const b = Buffer.from(
      encodeCaptureConfig({
        mode: r.kernel.mode,
        default_action: r.kernel.defaultAction,
        hold_timeout_ms: r.kernel.holdTimeoutMs,
        tag: 0xa1b2c3d4,
        rules: r.kernel.rules,
      }),
    );
    assert.equal(b.length, 24 + 88 * 64);
    assert.equal(b.readUInt32LE(4), 2); // RULES
    assert.equal(b.readUInt32LE(8), RuleAction.Hold);
    assert.equal(b.readUInt32LE(12), 1500);
    assert.equal(b.readUInt32LE(16), 1);
    assert.equal(b.readUInt32LE(20), 0xa1b2c3d4); // tag
    assert.equal(b.readUInt32LE(24), 0x001 | 0x010); // PID | LOCAL_PORT
    assert.equal(b[28], RuleAction.Pass);
    assert.equal(b.readInt32LE(32), 7);
    assert.equal(b.readUInt16LE(36), 22); // local_port_min
    assert.equal(b.readUInt16LE(38), 22);
  });
});

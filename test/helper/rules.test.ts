// Rules: validation errors name the field; compiled kernel rules and the
// helper's own matching agree on which chunk is held for a person, rewritten
// or passed.
import assert from 'node:assert/strict';
import {
  compileRules,
  decideHeld,
  type Flow,
  parseCidr,
  rewriteBytes,
  RulesError,
} from '../../extension/src/helper/rules';
import {
  AF_INET,
  DIR_IN,
  DIR_OUT,
  encodeCaptureConfig,
  PROTO_TCP,
  PROTO_UDP,
  RuleAction,
} from '../../extension/src/helper/wire';

function flow(over: Partial<Flow> = {}): Flow {
  const local = new Uint8Array(16);
  local.set([127, 0, 0, 1]);
  const remote = new Uint8Array(16);
  remote.set([10, 1, 2, 3]);
  return {
    pid: 100,
    comm: 'curl',
    direction: DIR_OUT,
    protocol: PROTO_TCP,
    family: AF_INET,
    localAddr: local,
    localPort: 40000,
    remoteAddr: remote,
    remotePort: 8080,
    ...over,
  };
}

describe('helper rules', () => {
  it('holds for a person only what an intercept hold rule matches', () => {
    const r = compileRules({
      default: 'pass',
      intercept: [{ action: 'hold', process: 'curl', remotePort: [8000, 8999], direction: 'out' }],
    });
    assert.equal(decideHeld(r, flow()).kind, 'person');
    assert.equal(decideHeld(r, flow({ direction: DIR_IN })).kind, 'pass');
    assert.equal(decideHeld(r, flow({ comm: 'wget' })).kind, 'pass');
    assert.equal(decideHeld(r, flow({ remotePort: 9000 })).kind, 'pass');
  });

  it('matches addresses by prefix and protocol', () => {
    const r = compileRules({
      default: 'pass',
      intercept: [{ action: 'hold', remoteAddr: '10.0.0.0/8', protocol: 'udp' }],
    });
    assert.equal(decideHeld(r, flow({ protocol: PROTO_UDP })).kind, 'person');
    assert.equal(decideHeld(r, flow()).kind, 'pass');
    const other = new Uint8Array(16);
    other.set([11, 0, 0, 1]);
    assert.equal(decideHeld(r, flow({ protocol: PROTO_UDP, remoteAddr: other })).kind, 'pass');
  });

  it('puts rewrite rules first so their chunks are held and edited', () => {
    const r = compileRules({
      default: 'report',
      intercept: [{ action: 'hold', process: 'curl' }],
      rewrite: [{ find: 'GET', replace: 'PUT', remotePort: 8080 }],
    });
    assert.equal(r.kernel.rules.length, 2);
    assert.equal(r.kernel.rules[0].action, RuleAction.Hold);
    const d = decideHeld(r, flow());
    assert.equal(d.kind, 'rewrite');
    assert.equal(decideHeld(r, flow({ remotePort: 1 })).kind, 'person');
    assert.equal(decideHeld(r, flow({ remotePort: 1, comm: 'x' })).kind, 'pass');
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
    const b = encodeCaptureConfig(
      r.kernel.mode,
      r.kernel.defaultAction,
      r.kernel.holdTimeoutMs,
      r.kernel.rules,
    );
    assert.equal(b.length, 24 + 88 * 64);
    assert.equal(b.readUInt32LE(4), 2); // RULES
    assert.equal(b.readUInt32LE(8), RuleAction.Hold);
    assert.equal(b.readUInt32LE(12), 1500);
    assert.equal(b.readUInt32LE(16), 1);
    assert.equal(b.readUInt32LE(24), 0x001 | 0x010); // PID | LOCAL_PORT
    assert.equal(b[28], RuleAction.Pass);
    assert.equal(b.readInt32LE(32), 7);
    assert.equal(b.readUInt16LE(36), 22); // local_port_min
    assert.equal(b.readUInt16LE(38), 22);
  });
});

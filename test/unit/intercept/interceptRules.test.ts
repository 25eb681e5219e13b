// Intercept rules made from the views: what each holds, where it goes in
// the list, and that removing one never removes another.
import * as assert from 'node:assert/strict';
import {
  describeRule,
  ruleForPort,
  ruleForProcess,
  ruleForSocket,
  withoutRule,
  withRuleFirst,
} from '../../../extension/src/intercept/interceptRules';
import { compileRules } from '../../../extension/src/helper/rules';
import { socketView } from '../fixtures/views';

const s = socketView({
  id: '3:7',
  pid: 4242,
  uid: 0,
  local: { address: '127.0.0.1', port: 50312 },
  remote: { address: '127.0.0.1', port: 8080 },
});

describe('intercept rules from the views', () => {
  it('Hold This Socket: its pid, protocol and both ports; the helper accepts it', () => {
    const r = ruleForSocket(s);
    assert.deepEqual(
      { ...r, name: undefined },
      { action: 'hold', name: undefined, pid: 4242, protocol: 'tcp', localPort: 50312, remotePort: 8080 },
    );
    assert.equal(describeRule(r), 'pid 4242 · TCP · local :50312 · remote :8080');
    compileRules({ default: 'report', intercept: [r] });
  });

  it('Hold This Process and Hold Port', () => {
    assert.deepEqual(ruleForProcess(7, 'python3'), { action: 'hold', name: 'python3 (7)', pid: 7 });
    assert.deepEqual(ruleForPort('8080'), { action: 'hold', name: 'remote port 8080', remotePort: 8080 });
    assert.deepEqual(ruleForPort(' local:80 '), { action: 'hold', name: 'local port 80', localPort: 80 });
    assert.deepEqual(ruleForPort('8000-8100').remotePort, [8000, 8100]);
    for (const bad of ['', 'x', '70000', '9-3', 'local:']) {
      assert.throws(() => ruleForPort(bad), /is not a port/);
    }
    assert.throws(() => ruleForSocket({ ...s, local: undefined, remote: undefined }), /has no port yet/);
  });

  it('a new rule goes first (first match wins over the broader ones after it); remove takes exactly it', () => {
    const demo = { action: 'report' as const, localPort: 9000, name: 'demo' };
    const mine = ruleForPort('9000');
    const list = withRuleFirst([demo], mine);
    assert.deepEqual(list, [mine, demo]);
    assert.deepEqual(withRuleFirst(list, mine), [mine, demo], 'no duplicate');
    assert.deepEqual(withoutRule(list, demo, 0), [mine], 'the index is checked against the content');
    assert.throws(() => withoutRule([mine], demo), /no longer in nke.interceptRules/);
  });
});

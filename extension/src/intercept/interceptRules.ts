// Intercept rules made from what the views show: a socket, a process, a
// port. Pure functions over the helper protocol's InterceptRule (the helper
// validates and compiles them); no `vscode` import, so plain mocha tests
// them. A rule made from a view goes first in nke.interceptRules: first
// match wins, so it beats broader rules after it (such as the report-only
// rules `npm start` adds for its demo workload).
import type { InterceptRule, SocketView } from '../shared/helperProtocol';
import { checkPortRange, type PortRange, RULE_FIELD_NAMES, type RuleFieldName } from '../shared/ruleFields';

const portText = (p: PortRange) => (Array.isArray(p) ? `${p[0]}-${p[1]}` : String(p));

/** The fields describeRule words itself; any other field of the table is shown as `name value`. */
const WORDED: readonly RuleFieldName[] = [
  'process',
  'pid',
  'protocol',
  'localAddr',
  'localPort',
  'remoteAddr',
  'remotePort',
  'direction',
];

/** One line for people: what a rule matches, e.g. "pid 42 · local :5000 · remote 127.0.0.1:8080". */
export function describeRule(r: InterceptRule): string {
  const parts: string[] = [];
  if (r.process !== undefined) parts.push(r.process);
  if (r.pid !== undefined) parts.push(`pid ${r.pid}`);
  if (r.protocol) parts.push(r.protocol.toUpperCase());
  if (r.localAddr !== undefined || r.localPort !== undefined) {
    parts.push(`local ${r.localAddr ?? ''}${r.localPort !== undefined ? `:${portText(r.localPort)}` : ''}`);
  }
  if (r.remoteAddr !== undefined || r.remotePort !== undefined) {
    parts.push(
      `remote ${r.remoteAddr ?? ''}${r.remotePort !== undefined ? `:${portText(r.remotePort)}` : ''}`,
    );
  }
  if (r.direction && r.direction !== 'both') parts.push(r.direction === 'in' ? 'incoming' : 'outgoing');
  for (const name of RULE_FIELD_NAMES) {
    if (!WORDED.includes(name) && r[name] !== undefined) parts.push(`${name} ${JSON.stringify(r[name])}`);
  }
  return parts.length ? parts.join(' · ') : 'all traffic';
}

/** Holds this one socket's data: its process and its ports (the 4-tuple's varying parts). */
export function ruleForSocket(s: SocketView): InterceptRule {
  if (s.protocol === 'other') {
    throw new Error(`socket ${s.id} is neither TCP nor UDP: the filter cannot hold it`);
  }
  if (!s.local?.port && !s.remote?.port) {
    throw new Error(
      `socket ${s.id} of ${s.process} has no port yet (not bound or connected): nothing to match`,
    );
  }
  const rule: InterceptRule = {
    action: 'hold',
    name: `${s.process} (${s.pid}) ${s.local ? `:${s.local.port}` : ''}${s.remote ? ` ↔ ${s.remote.address}:${s.remote.port}` : ''}`,
    pid: s.pid,
    protocol: s.protocol,
  };
  if (s.local?.port) rule.localPort = s.local.port;
  if (s.remote?.port) rule.remotePort = s.remote.port;
  return rule;
}

/** Holds every socket's data of one process. */
export function ruleForProcess(pid: number, name: string): InterceptRule {
  if (!Number.isInteger(pid) || pid <= 0) throw new Error(`no process to hold (pid ${pid})`);
  return { action: 'hold', name: `${name || 'process'} (${pid})`, pid };
}

/**
 * "8080" holds connections to remote port 8080; "local:8080" those whose
 * local port is 8080 (a server's accepted connections); "8000-8100" a range.
 */
export function ruleForPort(spec: string): InterceptRule {
  const m = /^\s*(?:(local|remote):)?\s*(\d{1,5})(?:\s*-\s*(\d{1,5}))?\s*$/i.exec(spec);
  const bad = () =>
    new Error(
      `"${spec}" is not a port: type 8080 (remote port), local:8080 (a server's own port) or a range 8000-8100`,
    );
  if (!m) throw bad();
  const lo = Number(m[2]);
  const hi = m[3] === undefined ? lo : Number(m[3]);
  const port: PortRange = lo === hi ? lo : [lo, hi];
  try {
    checkPortRange('port', port);
  } catch {
    throw bad();
  }
  const side = (m[1] ?? 'remote').toLowerCase() as 'local' | 'remote';
  const rule: InterceptRule = { action: 'hold', name: `${side} port ${portText(port)}` };
  if (side === 'local') rule.localPort = port;
  else rule.remotePort = port;
  return rule;
}

const same = (a: InterceptRule, b: InterceptRule) => JSON.stringify(a) === JSON.stringify(b);

/** The list with `rule` first (a copy of it already in the list moves there). */
export function withRuleFirst(rules: readonly InterceptRule[], rule: InterceptRule): InterceptRule[] {
  return [rule, ...rules.filter((r) => !same(r, rule))];
}

/**
 * The list without the rule shown at `index`. The settings may have changed
 * since the view was drawn: the rule is looked up by content, and a rule no
 * longer there is an error, never another rule removed.
 */
export function withoutRule(
  rules: readonly InterceptRule[],
  rule: InterceptRule,
  index?: number,
): InterceptRule[] {
  const at =
    index !== undefined && rules[index] && same(rules[index], rule)
      ? index
      : rules.findIndex((r) => same(r, rule));
  if (at < 0) {
    throw new Error(`the rule "${rule.name ?? describeRule(rule)}" is no longer in nke.interceptRules`);
  }
  return rules.filter((_, i) => i !== at);
}

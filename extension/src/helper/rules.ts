// Intercept and rewrite rules: parsed from JSON (the extension's settings or
// `nke run --rules FILE`) and compiled into the filter's capture config so
// data no one wants never leaves the kernel. Matching is the filter's alone
// (nke_capture_classify in kext/core): each data notification names the
// config (its tag) and the rule of it that decided, and decideHeld acts on
// that rule, per held chunk: a person must see it, or the helper answers at
// once.
import type { InterceptRule, RewriteRule, RulesConfig, RuleMatch } from '../shared/helperProtocol';
import {
  NKE_AF_INET as AF_INET,
  NKE_AF_INET6 as AF_INET6,
  CaptureMode,
  Direction,
  type Rule as KernelRule,
  emptyRule,
  NKE_MATCH_COMM,
  NKE_MATCH_DIRECTION,
  NKE_MATCH_FAMILY,
  NKE_MATCH_LOCAL_ADDR,
  NKE_MATCH_LOCAL_PORT,
  NKE_MATCH_PID,
  NKE_MATCH_PROTOCOL,
  NKE_MATCH_REMOTE_ADDR,
  NKE_MATCH_REMOTE_PORT,
  NKE_MAX_RULES as MAX_RULES,
  NKE_RULE_DEFAULT,
  NKE_PROTO_TCP as PROTO_TCP,
  NKE_PROTO_UDP as PROTO_UDP,
  RuleAction,
  NKE_COMM_LEN as COMM_LEN,
} from '../shared/abi';
import { isIP } from 'node:net';

export class RulesError extends Error {}

export interface CompiledRewrite {
  rule: RewriteRule;
  find: Buffer;
  replace: Buffer;
  /** the rule's carry window (RewriteRule.carryMs), if it sets one */
  carryMs?: number;
}

export interface CompiledRules {
  config: RulesConfig;
  rewrites: CompiledRewrite[];
  kernel: { mode: CaptureMode; defaultAction: RuleAction; holdTimeoutMs: number; rules: KernelRule[] };
}

export const DEFAULT_RULES: RulesConfig = { default: 'report', intercept: [], rewrite: [] };

const ACTIONS: Record<string, RuleAction> = {
  pass: RuleAction.Pass,
  report: RuleAction.Report,
  hold: RuleAction.Hold,
};

function fail(where: string, msg: string): never {
  throw new RulesError(`${where}: ${msg}`);
}

function parsePortRange(where: string, v: unknown): [number, number] {
  const ok = (p: unknown): p is number =>
    typeof p === 'number' && Number.isInteger(p) && p >= 0 && p <= 65535;
  if (ok(v)) return [v, v];
  if (Array.isArray(v) && v.length === 2 && ok(v[0]) && ok(v[1]) && v[0] <= v[1]) return [v[0], v[1]];
  fail(where, `a port is 0..65535 or [min, max] (e.g. 8080 or [8000, 8999]); got ${kindOf(v)}`);
}

/** "10.0.0.0/8", "::1", "127.0.0.1" -> family, 16 address bytes, prefix bits. */
export function parseCidr(where: string, s: unknown): { family: number; addr: Uint8Array; prefix: number } {
  if (typeof s !== 'string') fail(where, 'an address is a string like "127.0.0.1" or "10.0.0.0/8"');
  const [ip, bits] = s.split('/');
  const v = isIP(ip);
  if (!v) fail(where, `"${ip}" is not an IP address`);
  const max = v === 4 ? 32 : 128;
  const prefix = bits === undefined ? max : Number(bits);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) {
    fail(where, `prefix /${bits} out of 0..${max}`);
  }
  const addr = new Uint8Array(16);
  if (v === 4) ip.split('.').forEach((p, i) => (addr[i] = Number(p)));
  else {
    const [head, tail] = ip.includes('::') ? ip.split('::') : [ip, undefined];
    const h = head ? head.split(':') : [];
    const t = tail ? tail.split(':') : [];
    const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
    groups.forEach((g, i) => {
      const n = parseInt(g || '0', 16);
      addr[2 * i] = n >> 8;
      addr[2 * i + 1] = n & 0xff;
    });
  }
  return { family: v === 4 ? AF_INET : AF_INET6, addr, prefix };
}

const KNOWN_MATCH_KEYS = new Set([
  'pid',
  'process',
  'direction',
  'protocol',
  'localPort',
  'remotePort',
  'localAddr',
  'remoteAddr',
]);

const INTERCEPT_KEYS = ['action', 'name', ...KNOWN_MATCH_KEYS];
const REWRITE_KEYS = ['find', 'replace', 'encoding', 'carryMs', 'name', ...KNOWN_MATCH_KEYS];

/** "a string", "an array", "null": what a value is, for errors that say what was found. */
function kindOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `a ${typeof v} (${JSON.stringify(v)})`;
}

function compileMatch(where: string, m: RuleMatch, action: RuleAction, known: readonly string[]): KernelRule {
  if (typeof m !== 'object' || m === null || Array.isArray(m)) {
    fail(where, `a rule is an object like {"action": "hold", "remotePort": 8080}; got ${kindOf(m)}`);
  }
  for (const k of Object.keys(m)) {
    if (!known.includes(k)) fail(where, `unknown field "${k}" (a rule here has ${known.join(', ')})`);
  }
  const r: KernelRule = emptyRule(action);
  if (m.pid !== undefined) {
    if (!Number.isInteger(m.pid) || m.pid <= 0) {
      fail(`${where}.pid`, `is a positive integer; got ${kindOf(m.pid)}`);
    }
    r.match |= NKE_MATCH_PID;
    r.pid = m.pid;
  }
  if (m.process !== undefined) {
    if (typeof m.process !== 'string' || !m.process || Buffer.byteLength(m.process) >= COMM_LEN) {
      fail(
        `${where}.process`,
        `is an exact process name of 1..${COMM_LEN - 1} bytes; got ${kindOf(m.process)}`,
      );
    }
    r.match |= NKE_MATCH_COMM;
    r.comm = m.process;
  }
  if (m.direction !== undefined) {
    const d = { in: Direction.In, out: Direction.Out, both: Direction.In | Direction.Out }[m.direction];
    if (!d) fail(`${where}.direction`, `is "in", "out" or "both"; got ${kindOf(m.direction)}`);
    r.match |= NKE_MATCH_DIRECTION;
    r.direction = d;
  }
  if (m.protocol !== undefined) {
    const p = { tcp: PROTO_TCP, udp: PROTO_UDP }[m.protocol];
    if (!p) fail(`${where}.protocol`, `is "tcp" or "udp"; got ${kindOf(m.protocol)}`);
    r.match |= NKE_MATCH_PROTOCOL;
    r.protocol = p;
  }
  if (m.localPort !== undefined) {
    [r.local_port_min, r.local_port_max] = parsePortRange(`${where}.localPort`, m.localPort);
    r.match |= NKE_MATCH_LOCAL_PORT;
  }
  if (m.remotePort !== undefined) {
    [r.remote_port_min, r.remote_port_max] = parsePortRange(`${where}.remotePort`, m.remotePort);
    r.match |= NKE_MATCH_REMOTE_PORT;
  }
  for (const side of ['local', 'remote'] as const) {
    const v = side === 'local' ? m.localAddr : m.remoteAddr;
    if (v === undefined) continue;
    const c = parseCidr(`${where}.${side}Addr`, v);
    if (r.family && r.family !== c.family) fail(where, 'localAddr and remoteAddr of different families');
    r.family = c.family;
    r.match |= NKE_MATCH_FAMILY | (side === 'local' ? NKE_MATCH_LOCAL_ADDR : NKE_MATCH_REMOTE_ADDR);
    if (side === 'local') {
      r.local_addr = c.addr;
      r.local_prefix = c.prefix;
    } else {
      r.remote_addr = c.addr;
      r.remote_prefix = c.prefix;
    }
  }
  return r;
}

function bytesOf(where: string, s: unknown, encoding: unknown): Buffer {
  if (typeof s !== 'string') {
    fail(where, `is a string (required); got ${s === undefined ? 'nothing' : kindOf(s)}`);
  }
  if (encoding === 'hex') {
    if (!/^([0-9a-fA-F]{2})*$/.test(s)) fail(where, 'is not an even-length hex string (encoding "hex")');
    return Buffer.from(s, 'hex');
  }
  if (encoding !== undefined && encoding !== 'utf8') {
    fail(where.replace(/\.(find|replace)$/, '.encoding'), `is "utf8" or "hex"; got ${kindOf(encoding)}`);
  }
  return Buffer.from(s, 'utf8');
}

/** Upper bound of a rewrite rule's carryMs: the filter's longest hold. */
export const REWRITE_CARRY_MAX_MS = 600000;

/**
 * Validates a rules config and compiles it. Kernel rule order: rewrite rules
 * first (their data must be held so the helper can edit it), then the
 * intercept rules in order; the first match decides, as in the filter.
 */
export function compileRules(input: unknown): CompiledRules {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new RulesError(
      `rules: expected an object {"default": "report", "intercept": [...], "rewrite": [...], "holdTimeoutMs": 5000} (every field optional); got ${kindOf(input)}`,
    );
  }
  const cfg = input as RulesConfig;
  for (const k of Object.keys(cfg)) {
    if (!['default', 'intercept', 'rewrite', 'holdTimeoutMs'].includes(k)) {
      fail('rules', `unknown field "${k}" (the rules object has default, intercept, rewrite, holdTimeoutMs)`);
    }
  }
  const def = cfg.default ?? 'report';
  if (typeof def !== 'string' || !(def in ACTIONS)) {
    fail('rules.default', `is "pass", "report" or "hold"; got ${kindOf(def)}`);
  }
  const intercept: InterceptRule[] = cfg.intercept ?? [];
  const rewrite: RewriteRule[] = cfg.rewrite ?? [];
  if (!Array.isArray(intercept)) {
    fail(
      'rules.intercept',
      `is an array of rules like [{"action": "hold", "remotePort": 8080}]; got ${kindOf(intercept)}`,
    );
  }
  if (!Array.isArray(rewrite)) {
    fail(
      'rules.rewrite',
      `is an array of rules like [{"find": "cat", "replace": "dog"}]; got ${kindOf(rewrite)}`,
    );
  }
  const hold = cfg.holdTimeoutMs ?? 0;
  if (!Number.isInteger(hold) || hold < 0 || hold > 600000) {
    fail('rules.holdTimeoutMs', `is an integer 0..600000 (ms; 0: the filter's default); got ${kindOf(hold)}`);
  }
  if (intercept.length + rewrite.length > MAX_RULES) {
    fail('rules', `${intercept.length + rewrite.length} rules; the filter takes at most ${MAX_RULES}`);
  }
  const rewrites: CompiledRewrite[] = [];
  const kernel: KernelRule[] = [];
  rewrite.forEach((r, i) => {
    const where = `rules.rewrite[${i}]`;
    const k = compileMatch(where, r, RuleAction.Hold, REWRITE_KEYS);
    const find = bytesOf(`${where}.find`, r.find, r.encoding);
    if (find.length === 0) fail(`${where}.find`, 'must not be empty');
    const replace = bytesOf(`${where}.replace`, r.replace, r.encoding);
    if (
      r.carryMs !== undefined &&
      (!Number.isInteger(r.carryMs) || r.carryMs < 0 || r.carryMs > REWRITE_CARRY_MAX_MS)
    ) {
      fail(`${where}.carryMs`, `is an integer 0..${REWRITE_CARRY_MAX_MS} (ms); got ${kindOf(r.carryMs)}`);
    }
    kernel.push(k);
    rewrites.push({ rule: r, find, replace, carryMs: r.carryMs });
  });
  intercept.forEach((r, i) => {
    const where = `rules.intercept[${i}]`;
    const k = compileMatch(where, r, RuleAction.Pass, INTERCEPT_KEYS);
    if (typeof r.action !== 'string' || !(r.action in ACTIONS)) {
      fail(
        `${where}.action`,
        `is "hold", "report" or "pass" (required); got ${r.action === undefined ? 'nothing' : kindOf(r.action)}`,
      );
    }
    k.action = ACTIONS[r.action];
    kernel.push(k);
  });
  return {
    config: { default: def, intercept, rewrite, holdTimeoutMs: hold },
    rewrites,
    kernel: { mode: CaptureMode.Rules, defaultAction: ACTIONS[def], holdTimeoutMs: hold, rules: kernel },
  };
}

/** Replaces every occurrence of find in data; undefined when none. */
export function rewriteBytes(data: Buffer, find: Buffer, replace: Buffer): Buffer | undefined {
  let at = data.indexOf(find);
  if (at < 0) return undefined;
  const parts: Buffer[] = [];
  let from = 0;
  while (at >= 0) {
    parts.push(data.subarray(from, at), replace);
    from = at + find.length;
    at = data.indexOf(find, from);
  }
  parts.push(data.subarray(from));
  return Buffer.concat(parts);
}

/**
 * What the helper does with a held chunk, from the rule the filter says
 * decided it (nke_nt_data.rule) in the config it was decided under: a
 * rewrite rule -> edit and pass; an intercept 'hold' rule -> wait for a
 * person; held by the default action -> a person when the default is
 * 'hold', else pass at once. A config the helper no longer knows (more than
 * INSTALLED_CONFIGS_KEPT changes ago) or a rule index it does not have: a
 * person, since the filter did hold it and only a person can tell.
 */
export type HeldDecision =
  { kind: 'rewrite'; rewrite: CompiledRewrite } | { kind: 'person' } | { kind: 'pass' };

export function decideHeld(rules: CompiledRules | undefined, rule: number): HeldDecision {
  if (!rules) return { kind: 'person' };
  if (rule === NKE_RULE_DEFAULT) {
    return rules.kernel.defaultAction === RuleAction.Hold ? { kind: 'person' } : { kind: 'pass' };
  }
  if (rule < rules.rewrites.length) return { kind: 'rewrite', rewrite: rules.rewrites[rule] };
  const k = rules.kernel.rules[rule];
  if (!k) return { kind: 'person' };
  return k.action === RuleAction.Hold ? { kind: 'person' } : { kind: 'pass' };
}

/** Configs kept by tag: a chunk held under an older config can still be in the queue. */
export const INSTALLED_CONFIGS_KEPT = 16;

/**
 * The rules of the last INSTALLED_CONFIGS_KEPT capture configs sent to the
 * filter, by the tag each was sent with (nke_capture_config.tag; the filter
 * echoes it in every data notification it decides). Tag 0 is never given:
 * it is the filter's own config (nothing captured) before a client sets one.
 */
export class InstalledConfigs {
  private readonly byTag = new Map<number, CompiledRules>();
  private nextTag = 1;

  /** Records rules as the config about to be sent; returns its tag. */
  install(rules: CompiledRules): number {
    const tag = this.nextTag;
    this.nextTag = tag >= 0xffffffff ? 1 : tag + 1;
    this.byTag.delete(tag);
    this.byTag.set(tag, rules);
    // A Map iterates in insertion order: the first key is the oldest.
    while (this.byTag.size > INSTALLED_CONFIGS_KEPT) this.byTag.delete(this.byTag.keys().next().value!);
    return tag;
  }

  get(tag: number): CompiledRules | undefined {
    return this.byTag.get(tag);
  }
}

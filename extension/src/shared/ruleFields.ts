// The rule fields, defined once: for each field a rule matches on, its JSON
// schema piece (the nke.interceptRules setting in package.json is generated
// from it: `npm run rules:schema`, and test/unit/ruleFields.test.ts checks
// package.json still equals it), its NKE_MATCH_* bits, how a value is
// checked (the one validator, for the settings, `nke --rules FILE` and the
// helper alike) and how it is written into the ABI rule (struct nke_rule).
// The RuleMatch type of the helper protocol is derived from the table.
// The actions ("hold", "report", "pass") are defined here once too.
//
// Adding a rule field (docs/architecture.md, Adding a rule field): the C
// header's struct nke_rule and NKE_MATCH_* bit, kext/core's validator and
// matcher (nke_rules.c, and struct nke_flow in nke_core.h), and one entry of
// RULE_FIELDS here, then `npm run rules:schema`. A C field or bit without its
// entry here fails test/unit/ruleFields.test.ts (every NKE_MATCH_* bit and
// every field of struct nke_rule, as abi.generated.ts has them, is some
// entry's).
//
// No vscode and no Node import: the extension, the helper and the CLI use it.
import {
  NKE_AF_INET,
  NKE_COMM_LEN,
  NKE_MATCH_COMM,
  NKE_MATCH_DIRECTION,
  NKE_MATCH_FAMILY,
  NKE_MATCH_LOCAL_ADDR,
  NKE_MATCH_LOCAL_PORT,
  NKE_MATCH_PID,
  NKE_MATCH_PROTOCOL,
  NKE_MATCH_REMOTE_ADDR,
  NKE_MATCH_REMOTE_PORT,
  NKE_PROTO_TCP,
  NKE_PROTO_UDP,
  AbiError,
  Direction,
  RuleAction,
  type Rule,
} from './abi';
import { parseIp } from './ipText';

/** A rule or rules config that does not validate; the message names the field (`rules.intercept[2].remotePort: ...`). */
export class RulesError extends Error {}

/** Throws RulesError `${where}: ${msg}`. */
export function fail(where: string, msg: string): never {
  throw new RulesError(`${where}: ${msg}`);
}

/** "a string", "an array", "null": what a value is, for errors that say what was found. */
export function kindOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `a ${typeof v} (${JSON.stringify(v)})`;
}

/** '"a", "b" or "c"' */
export function quotedList(words: readonly string[]): string {
  const q = words.map((w) => JSON.stringify(w));
  return q.length > 1 ? `${q.slice(0, -1).join(', ')} or ${q[q.length - 1]}` : q.join('');
}

// ---- Actions ---------------------------------------------------------------

/**
 * What a rule does with the data it matches, and what the rules config's
 * `default` (the nke.capture setting) does with data no rule matches. Not
 * the ABI's CaptureMode (Nothing/All/Rules: whether the filter captures at
 * all); the helper always sends CaptureMode.Rules with one of these as the
 * default action.
 */
export const RULE_ACTIONS = {
  hold: {
    code: RuleAction.Hold,
    rule: 'Held until Allow or Drop (or nke.holdTimeoutMs)',
    default: 'Hold every chunk until Allow or Drop (or nke.holdTimeoutMs).',
  },
  report: {
    code: RuleAction.Report,
    rule: 'Reported, passed at once',
    default: 'Show all traffic; hold nothing that no intercept rule holds.',
  },
  pass: {
    code: RuleAction.Pass,
    rule: 'Neither held nor reported',
    default: 'Show sockets only; data no rule matches is neither held nor reported.',
  },
} as const;

export type RuleActionName = keyof typeof RULE_ACTIONS;
export const RULE_ACTION_NAMES = Object.keys(RULE_ACTIONS) as RuleActionName[];
/** The default action when a config names none (the nke.capture setting's default). */
export const DEFAULT_ACTION: RuleActionName = 'report';

export function isRuleAction(v: unknown): v is RuleActionName {
  return typeof v === 'string' && Object.prototype.hasOwnProperty.call(RULE_ACTIONS, v);
}

/** The action's ABI code (enum nke_rule_action); throws RulesError naming `where` for anything else. */
export function checkAction(where: string, v: unknown, required = false): RuleAction {
  if (!isRuleAction(v)) {
    const got = v === undefined ? 'nothing' : kindOf(v);
    fail(where, `is ${quotedList(RULE_ACTION_NAMES)}${required ? ' (required)' : ''}; got ${got}`);
  }
  return RULE_ACTIONS[v].code;
}

// ---- Values shared by several fields -----------------------------------------

export type PortRange = number | [number, number];

const isPort = (p: unknown): p is number =>
  typeof p === 'number' && Number.isInteger(p) && p >= 0 && p <= 65535;

/** A port or an inclusive [min, max]: [min, max]. Throws RulesError naming `where`. */
export function checkPortRange(where: string, v: unknown): [number, number] {
  if (isPort(v)) return [v, v];
  if (Array.isArray(v) && v.length === 2 && isPort(v[0]) && isPort(v[1]) && v[0] <= v[1]) return [v[0], v[1]];
  fail(where, `a port is 0..65535 or [min, max] (e.g. 8080 or [8000, 8999]); got ${kindOf(v)}`);
}

/** "10.0.0.0/8", "::1", "127.0.0.1" -> family, 16 address bytes, prefix bits. Throws RulesError naming `where`. */
export function parseCidr(where: string, s: unknown): { family: number; addr: Uint8Array; prefix: number } {
  if (typeof s !== 'string') fail(where, 'an address is a string like "127.0.0.1" or "10.0.0.0/8"');
  const slash = s.indexOf('/');
  const ip = slash < 0 ? s : s.slice(0, slash);
  const bits = slash < 0 ? undefined : s.slice(slash + 1);
  // A scope (fe80::1%4) names an interface, which no rule matches on.
  if (ip.includes('%')) fail(where, `"${ip}" is not an IP address (a rule takes no %scope)`);
  let parsed: ReturnType<typeof parseIp>;
  try {
    parsed = parseIp(ip);
  } catch (e) {
    if (!(e instanceof AbiError)) throw e;
    fail(where, `"${ip}" is not an IP address`);
  }
  const max = parsed.family === NKE_AF_INET ? 32 : 128;
  const prefix = bits === undefined ? max : /^[0-9]{1,3}$/.test(bits) ? Number(bits) : NaN;
  if (!(prefix >= 0 && prefix <= max)) fail(where, `prefix /${bits} out of 0..${max}`);
  return { family: parsed.family, addr: parsed.addr, prefix };
}

// ---- The table -----------------------------------------------------------------

/** The JSON schema subset the settings use. */
export type JsonSchema = { [key: string]: JsonValue };
type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

export interface RuleField<V> {
  /** the field's schema in nke.interceptRules' items */
  schema: JsonSchema;
  /** NKE_MATCH_* bits a rule with this field has */
  bits: number;
  /** the value, checked; throws RulesError naming `where` (e.g. rules.intercept[0].remotePort) */
  check(where: string, v: unknown): V;
  /** writes a checked value into the ABI rule; `where` names the rule, for conflicts with other fields */
  encode(r: Rule, v: V, where: string): void;
}

function field<V>(f: RuleField<V>): RuleField<V> {
  return f;
}

/** A string field of fixed words, each with its ABI code. */
function words<W extends string>(
  codes: Record<W, number>,
  schema: JsonSchema,
  set: (r: Rule, code: number) => void,
) {
  const names = Object.keys(codes) as W[];
  return {
    schema: { type: 'string', enum: names, ...schema },
    check(where: string, v: unknown): W {
      if (typeof v !== 'string' || !names.includes(v as W)) {
        fail(where, `is ${quotedList(names)}; got ${kindOf(v)}`);
      }
      return v as W;
    },
    encode: (r: Rule, v: W) => set(r, codes[v]),
  };
}

const PORT_SCHEMA: JsonSchema = { type: 'integer', minimum: 0, maximum: 65535 };
const portSchema = (description: string): JsonSchema => ({
  oneOf: [
    PORT_SCHEMA,
    {
      type: 'array',
      items: PORT_SCHEMA,
      minItems: 2,
      maxItems: 2,
      description: 'an inclusive range [min, max]',
    },
  ],
  description,
});

const ADDR_SCHEMA: JsonSchema = {
  type: 'string',
  pattern: '^[0-9A-Fa-f.:]+(/\\d{1,3})?$',
  description: 'an address or CIDR: 127.0.0.1, 10.0.0.0/8, ::1/128',
};

function portField(side: 'local' | 'remote', description: string) {
  return field<PortRange>({
    schema: portSchema(description),
    bits: side === 'local' ? NKE_MATCH_LOCAL_PORT : NKE_MATCH_REMOTE_PORT,
    check(where, v) {
      checkPortRange(where, v);
      return v as PortRange;
    },
    encode(r, v) {
      const [min, max] = typeof v === 'number' ? [v, v] : v;
      if (side === 'local') [r.local_port_min, r.local_port_max] = [min, max];
      else [r.remote_port_min, r.remote_port_max] = [min, max];
    },
  });
}

function addrField(side: 'local' | 'remote') {
  return field<string>({
    schema: ADDR_SCHEMA,
    bits: NKE_MATCH_FAMILY | (side === 'local' ? NKE_MATCH_LOCAL_ADDR : NKE_MATCH_REMOTE_ADDR),
    check(where, v) {
      parseCidr(where, v);
      return v as string;
    },
    encode(r, v, where) {
      const c = parseCidr(`${where}.${side}Addr`, v);
      if (r.family && r.family !== c.family) fail(where, 'localAddr and remoteAddr of different families');
      r.family = c.family;
      if (side === 'local') {
        r.local_addr = c.addr;
        r.local_prefix = c.prefix;
      } else {
        r.remote_addr = c.addr;
        r.remote_prefix = c.prefix;
      }
    },
  });
}

/** The largest pid (nke_rule.pid is an int32_t). */
const PID_MAX = 0x7fffffff;
const utf8 = new TextEncoder();

/** Every field a rule matches on, in the order the schema lists them. */
export const RULE_FIELDS = {
  pid: field<number>({
    schema: {
      type: 'integer',
      minimum: 1,
      maximum: PID_MAX,
      description: 'the process id owning the socket',
    },
    bits: NKE_MATCH_PID,
    check(where, v) {
      if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0 || v > PID_MAX) {
        fail(where, `is a positive integer; got ${kindOf(v)}`);
      }
      return v;
    },
    encode: (r, v) => (r.pid = v),
  }),
  process: field<string>({
    schema: {
      type: 'string',
      minLength: 1,
      maxLength: NKE_COMM_LEN - 1,
      description: `exact process name (comm, at most ${NKE_COMM_LEN - 1} bytes; Linux keeps 15 of them)`,
    },
    bits: NKE_MATCH_COMM,
    check(where, v) {
      if (typeof v !== 'string' || !v || utf8.encode(v).length >= NKE_COMM_LEN) {
        fail(where, `is an exact process name of 1..${NKE_COMM_LEN - 1} bytes; got ${kindOf(v)}`);
      }
      return v;
    },
    encode: (r, v) => (r.comm = v),
  }),
  direction: field<'in' | 'out' | 'both'>({
    ...words(
      { in: Direction.In, out: Direction.Out, both: Direction.In | Direction.Out },
      { description: 'in: data arriving; out: data sent; both' },
      (r, d) => (r.direction = d),
    ),
    bits: NKE_MATCH_DIRECTION,
  }),
  protocol: field<'tcp' | 'udp'>({
    ...words({ tcp: NKE_PROTO_TCP, udp: NKE_PROTO_UDP }, {}, (r, p) => (r.protocol = p)),
    bits: NKE_MATCH_PROTOCOL,
  }),
  localPort: portField('local', "the socket's own port, or [min, max]"),
  remotePort: portField('remote', "the peer's port, or [min, max]"),
  localAddr: addrField('local'),
  remoteAddr: addrField('remote'),
};

export type RuleFieldName = keyof typeof RULE_FIELDS;
export const RULE_FIELD_NAMES = Object.keys(RULE_FIELDS) as RuleFieldName[];
type ValueOf<F> = F extends RuleField<infer V> ? V : never;

/** Fields a rule matches on; every field given must match (RULE_FIELDS). */
export type RuleMatch = { [K in RuleFieldName]?: ValueOf<(typeof RULE_FIELDS)[K]> };

/**
 * Checks a rule object's match fields and writes them into `r` (its
 * match bits included). `known` is every key the rule may have (its own
 * fields such as action or find, and the match fields).
 */
export function compileMatch(where: string, m: unknown, r: Rule, known: readonly string[]): Rule {
  if (typeof m !== 'object' || m === null || Array.isArray(m)) {
    fail(where, `a rule is an object like {"action": "hold", "remotePort": 8080}; got ${kindOf(m)}`);
  }
  const rec = m as Record<string, unknown>;
  for (const k of Object.keys(rec)) {
    if (!known.includes(k)) fail(where, `unknown field "${k}" (a rule here has ${known.join(', ')})`);
  }
  for (const name of RULE_FIELD_NAMES) {
    const v = rec[name];
    if (v === undefined) continue;
    const f = RULE_FIELDS[name] as RuleField<unknown>;
    f.encode(r, f.check(`${where}.${name}`, v), where);
    r.match |= f.bits;
  }
  return r;
}

// ---- The settings schema ---------------------------------------------------------

/** The fields of an intercept rule besides its match fields. */
const INTERCEPT_OWN_SCHEMA: Record<string, JsonSchema> = {
  action: {
    type: 'string',
    enum: RULE_ACTION_NAMES,
    description:
      'hold: a person decides (Pending Payloads); report: shown, not held; pass: not even reported',
    enumDescriptions: RULE_ACTION_NAMES.map((a) => RULE_ACTIONS[a].rule),
  },
  name: { type: 'string', description: 'What the Filter view calls the rule' },
};

/** The keys an intercept rule may have. */
export const INTERCEPT_RULE_KEYS: readonly string[] = [
  ...Object.keys(INTERCEPT_OWN_SCHEMA),
  ...RULE_FIELD_NAMES,
];

/**
 * package.json's contributes.configuration.properties for the settings the
 * rules come from: nke.capture (the default action) and nke.interceptRules.
 */
export function ruleSettingsSchema(): Record<string, JsonSchema> {
  const fields: Record<string, JsonSchema> = { ...INTERCEPT_OWN_SCHEMA };
  for (const name of RULE_FIELD_NAMES) fields[name] = RULE_FIELDS[name].schema;
  return {
    'nke.capture': {
      type: 'string',
      enum: RULE_ACTION_NAMES,
      enumDescriptions: RULE_ACTION_NAMES.map((a) => RULE_ACTIONS[a].default),
      default: DEFAULT_ACTION,
      description:
        'What the filter does with data no rule in nke.interceptRules matches (NKE: Set Capture Mode).',
    },
    'nke.interceptRules': {
      type: 'array',
      default: [],
      items: { type: 'object', required: ['action'], properties: fields, additionalProperties: false },
      description:
        'Intercept rules, first match wins: e.g. {"action": "hold", "remotePort": 8080}. Hold This Socket\'s Data / This Process\'s Data / Hold Port in the Sockets view add one at the top; the Filter view lists them (remove with the trash button). The helper validates them and names a bad field.',
    },
  };
}

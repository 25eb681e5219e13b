// Intercept and rewrite rules: parsed from JSON (the extension's settings or
// `nke run --rules FILE`) and compiled into the filter's capture config so
// data no one wants never leaves the kernel. Matching is the filter's alone
// (nke_capture_classify in kext/core): each data notification names the
// config (its tag) and the rule of it that decided, and decideHeld acts on
// that rule, per held chunk: a person must see it, or the helper answers at
// once. The fields a rule matches on are checked and encoded by the table in
// shared/ruleFields.ts; this file adds the rules object, rewrite rules and
// the kernel's rule order.
import type { InterceptRule, RewriteRule, RulesConfig } from '../shared/helperProtocol';
import {
  checkAction,
  compileMatch,
  DEFAULT_ACTION,
  fail,
  INTERCEPT_RULE_KEYS,
  kindOf,
  RULE_FIELD_NAMES,
  RulesError,
} from '../shared/ruleFields';
import {
  CaptureMode,
  emptyRule,
  NKE_HOLD_TIMEOUT_MAX_MS,
  NKE_HOLD_TOTAL_MAX_MS,
  NKE_MAX_RULES,
  NKE_RULE_DEFAULT,
  type Rule,
  RuleAction,
} from '../shared/abi';

export { RulesError };

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
  kernel: { mode: CaptureMode; defaultAction: RuleAction; holdTimeoutMs: number; rules: Rule[] };
}

export const DEFAULT_RULES: RulesConfig = { default: DEFAULT_ACTION, intercept: [], rewrite: [] };

const REWRITE_KEYS = ['find', 'replace', 'encoding', 'carryMs', 'name', ...RULE_FIELD_NAMES];

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
export const REWRITE_CARRY_MAX_MS = NKE_HOLD_TOTAL_MAX_MS;

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
  const def = cfg.default ?? DEFAULT_ACTION;
  const defaultAction = checkAction('rules.default', def);
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
  if (!Number.isInteger(hold) || hold < 0 || hold > NKE_HOLD_TIMEOUT_MAX_MS) {
    fail(
      'rules.holdTimeoutMs',
      `is an integer 0..${NKE_HOLD_TIMEOUT_MAX_MS} (ms; 0: the filter's default); got ${kindOf(hold)}`,
    );
  }
  if (intercept.length + rewrite.length > NKE_MAX_RULES) {
    fail('rules', `${intercept.length + rewrite.length} rules; the filter takes at most ${NKE_MAX_RULES}`);
  }
  const rewrites: CompiledRewrite[] = [];
  const kernel: Rule[] = [];
  rewrite.forEach((r, i) => {
    const where = `rules.rewrite[${i}]`;
    const k = compileMatch(where, r, emptyRule(RuleAction.Hold), REWRITE_KEYS);
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
    const k = compileMatch(where, r, emptyRule(), INTERCEPT_RULE_KEYS);
    k.action = checkAction(`${where}.action`, r.action, true);
    kernel.push(k);
  });
  return {
    config: { default: def, intercept, rewrite, holdTimeoutMs: hold },
    rewrites,
    kernel: { mode: CaptureMode.Rules, defaultAction, holdTimeoutMs: hold, rules: kernel },
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

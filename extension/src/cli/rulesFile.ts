// Rules files (`nke watch|run --rules FILE`): JSON with comments, either a
// rules object or the array of intercept rules the extension's
// nke.interceptRules setting holds. `nke rules --example` prints
// RULES_EXAMPLE, and the README documents the format with the same text (a
// test keeps the two equal and checks that the example compiles).
import fs from 'node:fs';
import { compileRules, RulesError } from '../helper/rules';
import { JsoncError, parseJsonc } from '../shared/jsonc';
import type { RulesConfig } from '../shared/helperProtocol';
import { UsageError } from './cliArgs';

export const RULES_EXAMPLE = `// An nke rules file: nke watch --rules FILE, nke run --rules FILE -- CMD.
// JSON with comments; every field is optional. The whole file may also be
// just an array of intercept rules (the nke.interceptRules setting's form).
{
  // Data no rule matches: "report" (shown, passed at once; the default),
  // "hold" (held until you answer it or its deadline passes), "pass" (not shown).
  "default": "report",

  // How long the filter holds a chunk before it sends the original on by
  // itself (fail-open), in ms: 1..600000; 0 or absent: the filter's 5000.
  "holdTimeoutMs": 30000,

  // Intercept rules, first match wins. "action": "hold", "report" or "pass".
  // Match fields, all optional, all given must match:
  //   "pid": 1234                     "process": "curl" (exact name)
  //   "direction": "in", "out" or "both"   "protocol": "tcp" or "udp"
  //   "remotePort": 8080 or [8000, 8999]   "localPort": the same shapes
  //   "remoteAddr": "127.0.0.1", "10.0.0.0/8" or "::1"   "localAddr": the same
  //   "name": a label of your own
  "intercept": [
    { "name": "requests to the test server", "action": "hold", "remotePort": 8080, "direction": "out" },
    { "action": "pass", "process": "sshd" }
  ],

  // Rewrite rules, tried before the intercept rules: every occurrence of
  // "find" becomes "replace" in matching data, which then passes at once.
  // Same match fields. "encoding": "utf8" (default) or "hex" ("48656c6c6f")
  // for find and replace. A match split across writes is found: bytes that
  // may begin one wait for the stream's next chunk, until the socket closes,
  // or until shortly before the chunk's deadline. "carryMs" bounds that wait
  // (ms) where a stream must not stall; a match split by a longer pause is
  // then missed, and said so on stderr.
  "rewrite": [
    { "find": "User-Agent: curl", "replace": "User-Agent: nke", "direction": "out", "remotePort": 80 },
    { "find": "password=", "replace": "password=REDACTED&was=", "direction": "out", "carryMs": 2000 }
  ]
}
`;

/** A parsed rules file, in the object form the helper takes (the array form is its intercept rules). */
export function rulesFromText(text: string, file: string): RulesConfig {
  let parsed: unknown;
  try {
    parsed = parseJsonc(text);
  } catch (e) {
    if (e instanceof JsoncError) throw new UsageError(`rules file ${file}: ${e.message}`);
    throw e;
  }
  const rules = (Array.isArray(parsed) ? { intercept: parsed } : parsed) as RulesConfig;
  try {
    compileRules(rules);
  } catch (e) {
    if (e instanceof RulesError) {
      const hint = Array.isArray(parsed)
        ? ' (the file is an array: its items are intercept rules, rules.intercept[i])'
        : '';
      throw new UsageError(`rules file ${file}: ${e.message}${hint}; nke rules --example shows every field`);
    }
    throw e;
  }
  return rules;
}

export function readRulesFile(file: string): RulesConfig {
  let text: string;
  try {
    text = file === '-' ? fs.readFileSync(0, 'utf8') : fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read rules file ${file}: ${(e as Error).message}`);
  }
  return rulesFromText(text, file === '-' ? '(stdin)' : file);
}

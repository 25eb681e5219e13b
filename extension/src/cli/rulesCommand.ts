// `nke rules`: the rules file format, shown (--example) and checked (--check).
import { compileRules } from '../helper/rules';
import { type CommandSpec, ExitCode, UsageError } from './cliArgs';
import { readRulesFile, RULES_EXAMPLE } from './rulesFile';

export const rulesCommand: CommandSpec = {
  name: 'rules',
  summary: 'print a commented example rules file, or check one',
  usage: 'nke rules --example | nke rules --check FILE',
  description:
    '--example prints a rules file with every field explained (JSON with comments), to start\n' +
    'from: nke rules --example > rules.jsonc. --check FILE reads FILE as nke watch/run --rules\n' +
    'would, and says what it holds, or names the field that is wrong and the shape it needs\n' +
    '(exit 2).',
  options: [
    { name: '--example', help: 'print the example rules file' },
    { name: '--check', value: 'FILE', help: 'validate FILE (- for stdin)' },
  ],
  async run(args) {
    if (args.positional.length) throw new UsageError(`nke rules: unexpected argument ${args.positional[0]}`);
    const file = args.values.get('--check');
    if (args.flags.has('--example') === (file !== undefined)) {
      throw new UsageError('nke rules: --example or --check FILE (nke rules --help)');
    }
    if (file === undefined) {
      process.stdout.write(RULES_EXAMPLE);
      return ExitCode.ok;
    }
    const c = compileRules(readRulesFile(file));
    const n = (k: number, one: string) => `${k} ${one}${k === 1 ? '' : 's'}`;
    process.stdout.write(
      `${file}: ${n(c.config.intercept!.length, 'intercept rule')}, ${n(c.rewrites.length, 'rewrite rule')}, ` +
        `default ${c.config.default}, hold ${c.config.holdTimeoutMs ? `${c.config.holdTimeoutMs} ms` : "the filter's default"}\n`,
    );
    return ExitCode.ok;
  },
};

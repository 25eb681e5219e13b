// The `nke` command line: one table of subcommands (nke.ts), each with its
// options declared once here so that parsing, `--help` and the errors that
// name a bad option all come from the same spec. Exit codes are named in
// one place, and `nke --help` and the README list them.

/** Exit codes of every `nke` command (`nke run` exits with its program's status instead). */
export const ExitCode = {
  /** done */
  ok: 0,
  /** what was asked failed (the helper refused it, a file could not be written) */
  failed: 1,
  /** bad command line or rules file: nothing was done */
  usage: 2,
  /** the filter could not be reached or started (emulator not running with --no-start, kext not loaded, another client holds it, not permitted) */
  filterUnavailable: 3,
  /** no `nke watch` or `nke run` (or a VS Code window's helper) is running to answer (show, verdict, stage, extend, export, extcap) */
  noOwner: 4,
  /** the chunk is no longer held (answered already, its deadline passed, its socket closed, its client went away) */
  released: 5,
  /** the filter went away while `nke watch` ran */
  filterLost: 6,
  /** `nke run`: the program could not be started */
  cannotRun: 127,
} as const;

export const EXIT_CODES_HELP = `exit status:
  0    done (nke run: the program's own exit status, 128+N when a signal N ended it)
  1    what was asked failed (the helper refused it, a file could not be written)
  2    bad command line or rules file: nothing was done
  3    the filter could not be reached or started (emulator not running and --no-start,
       kext not loaded, another client holds the filter, not permitted)
  4    no nke watch or nke run is running to answer (show, verdict, stage, extend, export, extcap)
  5    the chunk is no longer held (answered already, deadline passed, socket closed,
       its client went away)
  6    the filter went away while nke watch ran
  127  nke run: the program could not be started`;

/** An error a command ends with: the message goes to stderr, the code is the exit status. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = ExitCode.failed,
  ) {
    super(message);
  }
}

export class UsageError extends CliError {
  constructor(message: string) {
    super(message, ExitCode.usage);
  }
}

export interface OptionSpec {
  /** "--json" */
  name: string;
  /** "-o" */
  short?: string;
  /** the value's placeholder ("FILE") when the option takes one */
  value?: string;
  /** allowed values, checked when parsing */
  choices?: readonly string[];
  help: string;
}

export interface ParsedArgs {
  /** options given without a value */
  readonly flags: ReadonlySet<string>;
  /** last value of each option that takes one */
  readonly values: ReadonlyMap<string, string>;
  /** positional arguments (before `--`, or before the program for commands that run one) */
  readonly positional: readonly string[];
  /** everything after `--` (or from the first positional on, for commands that run one) */
  readonly rest: readonly string[];
}

export interface CommandSpec {
  name: string;
  /** one line for `nke --help` */
  summary: string;
  /** "nke verdict ID allow|drop|replace [FILE|-]" */
  usage: string;
  /** what it does, for `nke CMD --help` */
  description: string;
  options: readonly OptionSpec[];
  /**
   * The command runs a program: options end at the first positional argument
   * (or `--`), so `nke run curl -s URL` passes -s to curl.
   */
  takesProgram?: boolean;
  /** Parses its own arguments (a foreign syntax, e.g. Wireshark's extcap); --help is its own too. */
  rawArgs?: boolean;
  run(args: ParsedArgs, argv: readonly string[]): Promise<number>;
}

const HELP: OptionSpec = { name: '--help', short: '-h', help: 'this help' };

/** Parses argv (after the subcommand name) against the command's options. */
export function parseArgs(spec: CommandSpec, argv: readonly string[]): ParsedArgs | 'help' {
  const options = [...spec.options, HELP];
  const flags = new Set<string>();
  const values = new Map<string, string>();
  const positional: string[] = [];
  let rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      rest = argv.slice(i + 1);
      break;
    }
    if (!a.startsWith('-') || a === '-') {
      if (spec.takesProgram) {
        rest = argv.slice(i);
        break;
      }
      positional.push(a);
      continue;
    }
    const eq = a.startsWith('--') ? a.indexOf('=') : -1;
    const key = eq > 0 ? a.slice(0, eq) : a;
    const opt = options.find((o) => o.name === key || o.short === key);
    if (!opt) {
      throw new UsageError(`nke ${spec.name}: unknown option ${key} (nke ${spec.name} --help lists them)`);
    }
    if (opt === HELP) return 'help';
    if (!opt.value) {
      if (eq > 0) throw new UsageError(`nke ${spec.name}: ${opt.name} takes no value`);
      flags.add(opt.name);
      continue;
    }
    let v: string;
    if (eq > 0) v = a.slice(eq + 1);
    else if (i + 1 < argv.length) v = argv[++i];
    else throw new UsageError(`nke ${spec.name}: ${opt.name} needs a value (${opt.name} ${opt.value})`);
    if (opt.choices && !opt.choices.includes(v)) {
      throw new UsageError(`nke ${spec.name}: ${opt.name} is ${opt.choices.join(', ')}; got "${v}"`);
    }
    values.set(opt.name, v);
  }
  return { flags, values, positional, rest };
}

/** `nke CMD --help`. */
export function commandHelp(spec: CommandSpec): string {
  const options = [...spec.options, HELP];
  const left = options.map(
    (o) => `${o.short ? `${o.short}, ` : '    '}${o.name}${o.value ? ` ${o.value}` : ''}`,
  );
  const width = Math.max(...left.map((l) => l.length)) + 2;
  const lines = options.map((o, i) => {
    const [first, ...more] = o.help.split('\n');
    return [`  ${left[i].padEnd(width)}${first}`, ...more.map((m) => `  ${' '.repeat(width)}${m}`)].join(
      '\n',
    );
  });
  return `usage: ${spec.usage}\n\n${spec.description}\n\noptions:\n${lines.join('\n')}\n`;
}

/** `nke --help`: every command's usage and summary, then the exit codes. */
export function mainHelp(commands: readonly CommandSpec[]): string {
  const width = Math.max(...commands.map((c) => c.name.length)) + 2;
  return (
    'nke: the NKE Workbench filter from a shell: watch sockets and execs, hold data, edit it, send it on.\n\n' +
    'usage: nke COMMAND [OPTIONS]   (nke COMMAND --help for one command)\n\n' +
    'commands:\n' +
    commands.map((c) => `  ${c.name.padEnd(width)}${c.summary}`).join('\n') +
    `\n\n${EXIT_CODES_HELP}\n`
  );
}

/** A number option: an integer in [min, max], or a usage error naming the option. */
export function intOption(
  args: ParsedArgs,
  command: string,
  name: string,
  min: number,
  max: number,
): number | undefined {
  const v = args.values.get(name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`nke ${command}: ${name} is an integer ${min}..${max}; got "${v}"`);
  }
  return n;
}

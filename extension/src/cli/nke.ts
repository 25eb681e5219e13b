// `nke`: the helper, headless. Everything the UI shows can be scripted.
// One table of subcommands; each declares its options once (cliArgs.ts), so
// its parsing, its --help and the errors naming a bad option agree. A
// command ends with an exit status (cliArgs.ts ExitCode, listed by
// `nke --help`) or a CliError whose message goes to stderr.
import { commandHelp, type CommandSpec, CliError, ExitCode, mainHelp, parseArgs } from './cliArgs';
import { extendCommand, showCommand, stageCommand, statusCommand, verdictCommand } from './askOwner';
import { runCommand, watchCommand } from './ownFilter';
import { rulesCommand } from './rulesCommand';
import { exportCommand, extcapCommand } from './captureCommands';

const COMMANDS: readonly CommandSpec[] = [
  runCommand,
  watchCommand,
  statusCommand,
  showCommand,
  verdictCommand,
  stageCommand,
  extendCommand,
  rulesCommand,
  exportCommand,
  extcapCommand,
];

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    const topic = name === 'help' ? COMMANDS.find((c) => c.name === rest[0]) : undefined;
    process.stdout.write(topic ? commandHelp(topic) : mainHelp(COMMANDS));
    return name === undefined ? ExitCode.usage : ExitCode.ok;
  }
  const cmd = COMMANDS.find((c) => c.name === name);
  if (!cmd) {
    throw new CliError(
      `unknown command ${name}; the commands are ${COMMANDS.map((c) => c.name).join(', ')} (nke --help)`,
      ExitCode.usage,
    );
  }
  if (cmd.rawArgs) return cmd.run({ flags: new Set(), values: new Map(), positional: [], rest }, rest);
  const args = parseArgs(cmd, rest);
  if (args === 'help') {
    process.stdout.write(commandHelp(cmd));
    return ExitCode.ok;
  }
  return cmd.run(args, rest);
}

/** Exits once stdout and stderr took everything (pipes are asynchronous on macOS). */
function exitAfterFlush(code: number): void {
  process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
}

main(process.argv.slice(2)).then(exitAfterFlush, (e: Error) => {
  process.stderr.write(`nke: ${e.message}\n`);
  exitAfterFlush(e instanceof CliError ? e.exitCode : ExitCode.failed);
});

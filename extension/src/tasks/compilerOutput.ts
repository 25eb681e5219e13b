// Compilers name files relative to the directory make ran them in; VS Code's
// problem matchers resolve relative paths against the workspace folder, not
// the task's cwd (`${cwd}` there is the workspace too), and the kext and
// emulator folders are usually elsewhere (the extension's own kext/). So the
// build tasks pass make's output through this awk program, which prefixes
// every `file:line:col:` diagnostic with the directory make was in (following
// make's "Entering directory" lines for recursive makes) and folds `..`; the
// $nke-clang matcher then takes absolute paths. With the output piped, the
// compilers also stop colouring it. POSIX awk (BSD awk on the Mac).
// No `vscode` import.
import { shQuote } from './kextCommandLines';

export const absoluteDiagnosticsAwk =
  String.raw`
function norm(p) { while (sub(/\/\.\//, "/", p)) ; while (sub(/\/[^\/.][^\/]*\/\.\.\//, "/", p) || sub(/\/\.[^\/.][^\/]*\/\.\.\//, "/", p)) ; return p }
# GNU make: "make[1]: Entering directory '/x'"; make 3.81 (macOS): "make: Entering directory ` +
  '`' +
  String.raw`/x'".
/^[^ ]*make(\[[0-9]+\])?: Entering directory / { d = $0; sub(/^[^ ]*make(\[[0-9]+\])?: Entering directory ./, "", d); sub(/.$/, "", d); stack[++depth] = d; print; next }
/^[^ ]*make(\[[0-9]+\])?: Leaving directory / { if (depth > 0) depth--; print; next }
/^[^\/ \t:][^: \t]*:[0-9]+:([0-9]+:)? / { cur = depth > 0 ? stack[depth] : dir; print norm(cur "/" $0); fflush(); next }
{ print; fflush() }
`;

/** Pipes a build's output through the awk program above, keeping the build's exit status (bash). */
export function withAbsoluteDiagnostics(lines: string, dir: string): string {
  return `{\n${lines}\n} 2>&1 | awk -v dir=${shQuote(dir)} ${shQuote(absoluteDiagnosticsAwk)}\nexit "\${PIPESTATUS[0]}"`;
}

// kextutil and kmutil name a missing symbol or dependency without a file or
// line, which a problem matcher cannot place. The load and diagnose tasks
// pass the loader's output through this awk program: every line is printed
// unchanged, and each missing symbol or dependency also as
// `NKE: <Info.plist>: error: <what>`, which the `$nke-kext` matcher puts on
// the built bundle's Info.plist (its OSBundleLibraries are the usual fix).
// POSIX awk only: the Mac runs BSD awk, the tests here mawk or gawk.
// No `vscode` import.
import { shQuote } from './kextCommandLines';

export const kextDiagnosticsAwk = String.raw`
function say(what) { if (what in seen) return; seen[what] = 1; print "NKE: " plist ": error: " what; fflush() }
{ print; fflush() }
# kextutil (kxld): a header line, then one "(kernel) kxld[id]: <tab>_symbol" line per symbol.
/The following symbols are unresolved for this kext/ { unresolved = 1; next }
unresolved && /kxld\[[^]]*\]:[ \t]+[_A-Za-z]/ {
  s = $0; sub(/.*kxld\[[^]]*\]:[ \t]+/, "", s)
  say("unresolved symbol " s " (kextutil): link it through a KPI library in OSBundleLibraries, or define it"); next
}
{ unresolved = 0 }
# kmutil: "Failed to bind '_sym' in 'id' (...) as could not find a kext which exports this symbol",
# or "... as could not find a kext with 'id' bundle-id", several to a line.
/Failed to bind '/ {
  rest = $0
  while ((i = index(rest, "Failed to bind '")) > 0) {
    rest = substr(rest, i + 16); j = index(rest, "'"); sym = substr(rest, 1, j - 1); rest = substr(rest, j + 1)
    k = index(rest, "Failed to bind '"); seg = k > 0 ? substr(rest, 1, k - 1) : rest
    if (match(seg, /a kext with '[^']*' bundle-id/))
      say("missing dependency " substr(seg, RSTART + 13, RLENGTH - 24) " (kmutil, for " sym "): add it to OSBundleLibraries")
    else
      say("unresolved symbol " sym " (kmutil): no kext exports it; add the KPI library that does to OSBundleLibraries")
  }
}
# kextutil: "<kext> - no compatible dependency found for <id>." and "<kext> - dependency '<id>' not found."
/ - no compatible dependency found for / {
  d = $0; sub(/.* - no compatible dependency found for /, "", d); sub(/\.$/, "", d)
  say("no compatible version of dependency " d " (kextutil): check its version in OSBundleLibraries")
}
/ - dependency '[^']*' not found/ {
  d = $0; sub(/.* - dependency '/, "", d); sub(/'.*/, "", d)
  say("missing dependency " d " (kextutil): check its bundle id in OSBundleLibraries")
}
`;

/** Pipes `lines`' output through the awk program, keeping their exit status (bash). */
export function withKextDiagnostics(lines: string, infoPlist: string): string {
  return `{\n${lines}\n} 2>&1 | awk -v plist=${shQuote(infoPlist)} ${shQuote(kextDiagnosticsAwk)}\nexit "\${PIPESTATUS[0]}"`;
}

#!/usr/bin/env bash
# Installs a private code-server (VS Code 1.96.4 with its real Node extension
# host and web workbench) into .cache/code-server, once. The in-host and UI
# test suites and `npm start` all use it; later runs find the stamp and return
# at once.
#
#   bash scripts/install-code-server.sh          -> .cache/code-server/bin/code-server
#   NKE_CODE_SERVER_DIR=/some/dir bash scripts/install-code-server.sh
#
# Why not a devDependency: `npm install code-server` runs a postinstall that
# fetches a git dependency from GitHub, lets ripgrep download a binary and
# builds kerberos against gssapi.h. None of that works offline, and a failing
# postinstall would break `npm ci` for everyone. So the package comes from the
# npm registry with scripts off, and the steps its postinstall would do are
# done here without network access other than the registry.
# Newer code-server releases need Node 24; 4.96.4 runs on the Node 20 we have.
set -euo pipefail
VERSION=4.96.4
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${NKE_CODE_SERVER_DIR:-$root/.cache/code-server}"
stamp="$dest/.installed-$VERSION"

if [[ -f "$stamp" ]]; then
  exit 0
fi

# chromium, ripgrep (copied in for search), libkrb5-dev (kerberos' gssapi.h).
bash "$root/scripts/setup-system.sh"

t0=$(date +%s)
echo "[code-server] installing code-server $VERSION into $dest (first run only, ~2-3 min)"
# Build in a staging folder and rename at the end, so an interrupted install
# never leaves a half-built tree that the stamp check would take as complete.
stage="$dest.partial.$$"
rm -rf "$stage"
mkdir -p "$stage"
trap 'rm -rf "$stage"' EXIT
log="$stage.log"
: >"$log"
step() {
  echo "[code-server]   $1"
  shift
  if ! "$@" >>"$log" 2>&1; then
    echo "[code-server] failed: $*; last lines of $log:" >&2
    tail -30 "$log" >&2
    exit 1
  fi
}
# node-gyp builds against the system Node headers instead of downloading them.
export npm_config_nodedir="${npm_config_nodedir:-/usr}"
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false

cd "$stage"
printf '{ "name": "nke-private-code-server", "private": true }\n' >package.json
step "fetch code-server $VERSION from the npm registry" npm install --ignore-scripts "code-server@$VERSION"
step "build argon2" npm rebuild argon2

vs="$stage/node_modules/code-server/lib/vscode"
cd "$vs"
# The shrinkwrap resolves @vscode/proxy-agent from a git URL. Without the
# "resolved" field npm takes the same version (integrity-checked) from the
# registry instead.
step "point @vscode/proxy-agent at the registry" node -e '
  const fs = require("fs");
  const j = JSON.parse(fs.readFileSync("npm-shrinkwrap.json", "utf8"));
  const p = j.packages["node_modules/@vscode/proxy-agent"];
  if (!p) throw new Error("npm-shrinkwrap.json has no @vscode/proxy-agent entry");
  delete p.resolved;
  fs.writeFileSync("npm-shrinkwrap.json", JSON.stringify(j, null, 2) + "\n");'
step "install VS Code server dependencies" npm install --omit=dev --ignore-scripts
# @vscode/ripgrep's postinstall downloads rg unless bin/ already exists.
rg="$(command -v rg || true)"
if [[ -z "$rg" ]]; then
  echo "[code-server] ripgrep (rg) not found; scripts/setup-system.sh should have installed it" >&2
  exit 1
fi
mkdir -p node_modules/@vscode/ripgrep/bin
cp "$rg" node_modules/@vscode/ripgrep/bin/rg
step "build native modules (node-pty, spdlog, kerberos, ...)" npm rebuild
# The release layout code-server expects, normally made by its postinstall.
ln -sfn node_modules node_modules.asar
(cd bin/remote-cli && ln -sfn code-linux.sh code-server)
(cd bin/helpers && ln -sfn browser-linux.sh browser.sh)
step "install built-in extensions' dependencies" bash -c 'cd extensions && npm install --omit=dev'

cd "$stage"
mkdir -p bin
ln -sfn ../node_modules/.bin/code-server bin/code-server
# --config: without it code-server writes a default config into ~/.config.
printf 'auth: none\n' >"$stage/config.yaml"
version="$("$stage/bin/code-server" --config "$stage/config.yaml" --version 2>>"$log" | grep -Eo '^[0-9]+\.[0-9]+\.[0-9]+' | head -1)"
[[ "$version" == "$VERSION"* ]] || {
  echo "[code-server] installed binary reports '$version', expected $VERSION" >&2
  exit 1
}
touch ".installed-$VERSION"
rm -rf "$dest"
mv "$stage" "$dest"
trap - EXIT
rm -f "$log"
echo "[code-server] installed $version in $(($(date +%s) - t0)) s"

#!/usr/bin/env bash
# Installs the Debian packages the project needs, only those missing.
#   bash scripts/setup-system.sh            build + test tools
#   bash scripts/setup-system.sh bench      also the relays the benchmark compares with
# Idempotent and quiet when everything is present. Needs root (or sudo) only
# when something is missing.
set -euo pipefail

pkgs=(
  build-essential make python3 pkg-config   # native addon, emulator, C tests
  clang lld llvm libclang-rt-14-dev          # libFuzzer, ASan/UBSan, macOS compile-check
  libc++-14-dev                              # C++ headers for compile-checking *_macos.cpp
  curl socat iproute2 procps                 # real programs the emulator tests drive
  util-linux                                 # unshare, setpriv: the emulator tests' second uid and private /tmp
  chromium                                   # UI end-to-end tests (playwright-core)
  ripgrep libkrb5-dev                        # private code-server: search; kerberos build (gssapi.h)
  tshark                                     # reads the pcaps the emulator writes
)
if [[ "${1:-}" == "bench" ]]; then
  pkgs+=(mitmproxy)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "[setup-system] installing: ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "[setup-system] not root and no sudo: run as root: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture; answer no without a prompt.
echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections || true
if ! $SUDO apt-get install -y --no-install-recommends "${missing[@]}" >/tmp/nke-setup-system.log 2>&1; then
  $SUDO apt-get update >>/tmp/nke-setup-system.log 2>&1
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}" >>/tmp/nke-setup-system.log 2>&1 || {
    echo "[setup-system] apt-get failed; see /tmp/nke-setup-system.log" >&2
    tail -20 /tmp/nke-setup-system.log >&2
    exit 1
  }
fi
echo "[setup-system] done"

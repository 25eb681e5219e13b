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
  redis-server redis-tools                   # real servers the emulator tests and the bench run
  nginx-light wrk apache2-utils              #   under the shim (each on its own free port,
  openssh-server openssh-client              #   own config, started by the test itself)
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
# Installing a server package must not start it system-wide on its default
# port (redis 6379, nginx 80, sshd 22): tests start their own instances.
# policy-rc.d answers "not allowed" to every service start during the
# install; it is removed again afterwards unless it was already there.
policy=/usr/sbin/policy-rc.d
own_policy=""
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee $policy >/dev/null && $SUDO chmod 0755 $policy && own_policy=1
fi
trap '[[ -n $own_policy ]] && $SUDO rm -f $policy' EXIT
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
# Stop and disable any of them a previous install (without the policy) left
# running.
for svc in redis-server nginx ssh; do
  if command -v systemctl >/dev/null && systemctl is-enabled "$svc" >/dev/null 2>&1; then
    $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
  fi
done
echo "[setup-system] done"

#!/bin/sh
# nke-emu: run a program behind the emulated filter.
#   nke-emu run [--dir DIR] -- CMD [ARGS...]   CMD with libnkeshim.so preloaded
#   nke-emu daemon [ARGS...]                   nke-emud in the foreground
# The runtime dir is $NKE_EMU_DIR, else $XDG_RUNTIME_DIR/nke-emu, else
# /tmp/nke-emu-<uid> (the shim and nke-emud compute the same one).
set -e
here=$(cd "$(dirname "$0")" && pwd)
case "$1" in
run)
    shift
    if [ "$1" = "--dir" ]; then NKE_EMU_DIR=$2; export NKE_EMU_DIR; shift 2; fi
    [ "$1" = "--" ] && shift
    if [ $# -eq 0 ]; then echo "nke-emu run: no command given (nke-emu run -- CMD ...)" >&2; exit 2; fi
    LD_PRELOAD="$here/libnkeshim.so${LD_PRELOAD:+:$LD_PRELOAD}"
    export LD_PRELOAD
    # env (under the shim by now) makes the exec, so the shim reports CMD's own
    # exec: this sh was started without it.
    exec env -- "$@"
    ;;
daemon)
    shift
    exec "$here/nke-emud" "$@"
    ;;
*)
    echo "usage: nke-emu run [--dir DIR] -- CMD [ARGS...] | nke-emu daemon [--kev-limit N]" >&2
    exit 2
    ;;
esac

#!/usr/bin/env python3
"""Plays libnkeshim.so's end of one shim.sock link (native/emu/src/nke_shim_link.h)
so a test sees exactly which verdicts nke-emud sends, and when: the real shim
applies verdicts in seq order whatever order they come in, which would hide
whether nke-emud itself keeps each direction's stream order.

    fake_shim.py RUNTIME_DIR
Commands on stdin, one per line:
    data in|out SEQ SIZE    one SHIM_DATA of SIZE bytes (byte i is i % 251)
    close                   close the link (the socket's detach) and exit
Prints "ready" once attached, then one line per verdict (the last message of
a modified one): "verdict in|out SEQ ACTION LEN MS", MS since "ready".
Exits when nke-emud closes the link ("link-closed").
"""
import os
import select
import socket
import struct
import sys
import time

SHIM_ATTACH, SHIM_DATA, SHIM_VERDICT = 1, 2, 3
SHIM_F_MORE = 0x1
NKE_AF_INET, NKE_PROTO_TCP = 2, 6
DIRS = {'in': 1, 'out': 2}
NAMES = {1: 'in', 2: 'out'}


def addr(family=0, port=0, ip=b''):
    # struct nke_addr: family u8, pad u8, port u16 (host order), scope_id u32, addr[16]
    return struct.pack('<BBHI16s', family, 0, port, 0, ip)


def hdr(typ, direction=0, action=0, length=0, flags=0, seq=0):
    # struct shim_hdr: type, direction, action, len, flags, seq (u32 each), addr
    return struct.pack('<6I', typ, direction, action, length, flags, seq) + addr()


HDR = len(hdr(0))
assert HDR == 48


def main():
    rt = sys.argv[1]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(os.path.join(rt, 'shim.sock'))
    lo = b'\x7f\x00\x00\x01'
    # struct shim_attach: hdr, pid, uid, family, type, protocol, incoming, comm[32], local, remote
    attach = (hdr(SHIM_ATTACH) + struct.pack('<iIBBBB32s', os.getpid(), os.getuid(), NKE_AF_INET, 1,
                                             NKE_PROTO_TCP, 0, b'fake-shim')
              + addr(NKE_AF_INET, 40000, lo) + addr(NKE_AF_INET, 8080, lo))
    assert len(attach) == 140
    s.send(attach)
    t0 = time.monotonic()
    print('ready', flush=True)
    got = {}  # (direction, seq) -> bytes of a modified verdict so far
    stdin = sys.stdin.buffer
    pending = b''
    while True:
        r, _, _ = select.select([s, stdin], [], [])
        if s in r:
            m = s.recv(1 << 20)
            if not m:
                print('link-closed', flush=True)
                return
            typ, direction, action, length, flags, seq = struct.unpack_from('<6I', m)
            if typ != SHIM_VERDICT or len(m) != HDR + length:
                print('bad-message %d %d' % (typ, len(m)), flush=True)
                return
            key = (direction, seq)
            got[key] = got.get(key, 0) + length
            if not flags & SHIM_F_MORE:
                ms = int((time.monotonic() - t0) * 1000)
                print('verdict %s %d %d %d %d' % (NAMES.get(direction, '?'), seq, action, got.pop(key), ms),
                      flush=True)
        if stdin in r:
            chunk = os.read(stdin.fileno(), 65536)
            if not chunk:
                return
            pending += chunk
            while b'\n' in pending:
                line, pending = pending.split(b'\n', 1)
                words = line.decode().split()
                if not words:
                    continue
                if words[0] == 'close':
                    s.close()
                    return
                if words[0] == 'data':
                    direction, seq, size = DIRS[words[1]], int(words[2]), int(words[3])
                    body = bytes(i % 251 for i in range(size))
                    s.send(hdr(SHIM_DATA, direction, 0, size, 0, seq) + body)


if __name__ == '__main__':
    main()

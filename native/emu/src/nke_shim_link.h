/*
 * shim.sock: the private link between libnkeshim.so and nke-emud
 * (SOCK_SEQPACKET, one connection per relayed socket, plus one short-lived
 * connection per execve). Private to native/emu: both ends are built from
 * this one header in one Makefile, so no version field is needed.
 *
 * shim -> emud: first message SHIM_ATTACH (the socket as the kernel's attach
 * + connect callbacks would see it), then SHIM_DATA messages, at most one
 * outstanding per direction (the relay stops reading that direction until its
 * verdict arrives, which is what "held data blocks only its socket" means).
 * emud -> shim: SHIM_VERDICT per SHIM_DATA, in order per direction; modified
 * bytes longer than SHIM_PIECE come in several messages, all but the last
 * with SHIM_F_MORE. UDP sockets are not relayed: the shim's send and receive
 * calls ask for the verdict of each datagram synchronously on the socket's
 * own link (only the calling thread waits). Closing the connection is the socket's detach; emud
 * closing it (death, restart) makes the shim fail open: pending data is sent
 * as it was and nothing more is reported.
 */
#ifndef NKE_SHIM_LINK_H
#define NKE_SHIM_LINK_H

#include <stdint.h>
#include <nke/nke_abi.h>

enum shim_msg_type {
    SHIM_ATTACH  = 1,  /* shim: shim_attach */
    SHIM_DATA    = 2,  /* shim: shim_hdr + len bytes */
    SHIM_VERDICT = 3,  /* emud: shim_hdr(action) + len bytes (modified only) */
    SHIM_EXEC    = 4,  /* shim: shim_exec + path bytes (no NUL) */
    /* Socket calls the kext's sf_bind / sf_listen / sf_setoption /
     * sf_getoption see, sent (never answered) on the socket's link, only
     * while shim_state.client says a user client is open. */
    SHIM_BIND    = 5,  /* shim: shim_hdr, addr = the local address bound */
    SHIM_LISTEN  = 6,  /* shim: shim_hdr, addr = the local address */
    SHIM_OPTION  = 7   /* shim: shim_option */
};

/* shim_attach.incoming for a TCP socket that is neither connected nor
 * accepted (attached at its first bind/listen/option call): no CONNECT. */
#define SHIM_ATTACH_UNCONNECTED 2u

#define SHIM_F_MORE 0x1u
#define SHIM_F_DATAGRAM 0x2u  /* DATA: one UDP datagram (boundaries kept) */
#define SHIM_PIECE (60u * 1024u)   /* bytes per message either way */

struct shim_hdr {
    uint32_t type;        /* enum shim_msg_type */
    uint32_t direction;   /* enum nke_direction */
    uint32_t action;      /* VERDICT: enum nke_action */
    uint32_t len;         /* bytes following */
    uint32_t flags;       /* SHIM_F_* */
    uint32_t _pad0;
    struct nke_addr addr; /* DATA of a UDP socket: the datagram's peer (family 0: none) */
};

struct shim_attach {
    struct shim_hdr hdr;
    int32_t pid;
    uint32_t uid;
    uint8_t family, type, protocol, incoming; /* incoming: accepted (CONNECT_IN) */
    char comm[NKE_COMM_LEN];
    struct nke_addr local, remote;
};

struct shim_option {
    struct shim_hdr hdr;
    int32_t level, name;
    uint32_t is_set;      /* 1: setsockopt, 0: getsockopt */
    uint32_t _pad0;
};

struct shim_exec {
    struct shim_hdr hdr;  /* len = path bytes following */
    int32_t pid, ppid;
    uint32_t uid;
    uint32_t _pad0;
    /* CLOCK_MONOTONIC before the exec (the kernel's exec happens after it):
     * nke-emud pairs this report with the connector's, whose timestamp is
     * the kernel's ktime_get_ns() at the exec, i.e. the same clock. */
    uint64_t before_ns;
};

/*
 * shim.state: nke-emud's deferral state, a file in the runtime directory
 * that shims map read-only (one mapping per relayed socket, taken after its
 * link connected, so it is the file of the nke-emud it talks to; a restarted
 * nke-emud renames a fresh file into place and old mappings keep the old,
 * dead one, whose relays have lost their links and pass anyway).
 * may_defer is 0 when no chunk could be held (no user client, or capture
 * mode NOTHING): relays then move bytes without asking nke-emud. Written
 * only by nke-emud's one thread (relaxed atomic store; a relay that reads a
 * stale 0 passes a chunk that was in flight when capture began, as the
 * kext does for data queued before SET_CAPTURE).
 */
#define NKE_EMU_SHIM_STATE "shim.state"
#define SHIM_STATE_MAGIC 0x5453454eu /* "NEST" */
struct shim_state {
    uint32_t magic;
    uint32_t may_defer;   /* accessed with __atomic_* */
    uint32_t client;      /* a user client is open (SHIM_BIND/LISTEN/OPTION wanted); __atomic_* */
    uint32_t _pad[13];
};

#endif

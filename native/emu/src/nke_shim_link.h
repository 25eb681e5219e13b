/*
 * shim.sock: the private link between libnkeshim.so and nke-emud
 * (SOCK_SEQPACKET, one connection per relayed socket, plus one short-lived
 * connection per execve). Private to native/emu: both ends are built from
 * this one header in one Makefile, so no version field is needed.
 *
 * shim -> emud: first message SHIM_ATTACH (the socket as the kernel's attach
 * + connect callbacks would see it), then SHIM_DATA messages of at most
 * SHIM_DATA_MAX bytes each. Every DATA carries `seq`, counting from 0 per
 * direction; up to SHIM_WINDOW_CHUNKS of them may be awaiting verdicts per
 * direction at once (the relay keeps reading that direction until the window
 * is full, then stops: held data blocks only its own socket).
 * emud -> shim: one SHIM_VERDICT per SHIM_DATA, with the DATA's direction
 * and seq, in the order the user client decides them (which may differ from
 * the data's order); the shim applies them strictly in seq order, so a held
 * chunk keeps the later ones of its direction queued behind it, as in the
 * kext. Modified bytes longer than SHIM_PIECE come in several consecutive
 * messages of the same seq, all but the last with SHIM_F_MORE; modified data
 * of any length (0 included) replaces the original exactly. Both ends send
 * with MSG_DONTWAIT and queue what does not fit, so neither ever blocks on
 * the other. UDP sockets are not relayed: each datagram is one DATA with
 * SHIM_F_DATAGRAM and its peer in addr, on the socket's own link. Outgoing
 * datagrams are queued by the send call, which returns at once; up to
 * UDP_WINDOW (shim/udp_queue.c) per socket await verdicts at once, seq counting
 * from 0, and the shim's worker sends them in seq order. Incoming ones get
 * their own seqs (from 0) and the receiving thread waits for its verdict.
 * Closing the connection is the socket's detach; emud closing it (death,
 * restart) makes the shim fail open: every chunk still awaiting a verdict
 * is delivered as it was, in order, and nothing more is reported.
 *
 * Mux links (added for one relay loop per process): a link whose first
 * message is SHIM_MUX carries any number of sockets. Every later message on
 * it, both ways, is a struct shim_mux naming the socket, then one message
 * as above (ATTACH, DATA, BIND, LISTEN, OPTION; VERDICT from emud). The
 * shim picks the ids (small integers, reused after the socket's
 * SHIM_DETACH); an ATTACH starts a socket, SHIM_DETACH (a bare shim_hdr)
 * ends it, and closing the link ends all of them. DATA with
 * SHIM_F_NO_VERDICT is reported but never answered: the shim sends it only
 * while shim_state.may_hold is 0 and has already passed the bytes on;
 * several of them go in one SHIM_REPORTS message.
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
    SHIM_OPTION  = 7,  /* shim: shim_option */
    SHIM_MUX     = 8,  /* shim: first message of a mux link (shim_hdr only) */
    SHIM_DETACH  = 9,  /* shim, mux link: the socket is gone (shim_hdr only) */
    /* A relayed socket's state changed as the kernel's sf_notify would
     * report it (connected, a side shut, a failed connect): shim_hdr only,
     * action = enum nke_sock_event. Never answered; best effort. */
    SHIM_EVENT   = 10,
    /* Mux link, socket id 0: several reports in one message (the relay
     * loop's pass), len bytes of entries, each a shim_mux + a shim_hdr
     * (SHIM_DATA with SHIM_F_NO_VERDICT) + its bytes, in the order they
     * happened. At most SHIM_REPORTS_MAX bytes in all and
     * SHIM_REPORTS_ENTRIES entries: a pass costs the link a message per
     * few chunks, not one a chunk, and nke-emud, whose pool holds 64
     * buffers, can still stop between messages when they run short. */
    SHIM_REPORTS = 11
};

/* Prefix of every message after SHIM_MUX on a mux link. */
struct shim_mux {
    uint32_t sock;        /* the shim's id for the socket */
    uint32_t _pad0;
};

/* shim_attach.incoming for a TCP socket that is neither connected nor
 * accepted (attached at its first bind/listen/option call): no CONNECT. */
/* When such a socket connects, its link carries on as the relay's link: a
 * second SHIM_ATTACH (incoming 0, local and remote filled) is the connect,
 * reported as CONNECT_OUT of the same socket (no new attach). A relayed
 * socket's SHIM_OPTION notes come from its relay thread, ordered with its
 * DATA: a note precedes the bytes written after the call it reports. */
#define SHIM_ATTACH_UNCONNECTED 2u

#define SHIM_F_MORE 0x1u
#define SHIM_F_DATAGRAM 0x2u  /* DATA: one UDP datagram (boundaries kept) */
#define SHIM_F_NO_VERDICT 0x4u /* DATA: report only; already passed, never answered */
#define SHIM_PIECE (60u * 1024u)   /* modified bytes per VERDICT message */
#define SHIM_DATA_MAX NKE_BUFFER_SIZE /* bytes per DATA message (one pool buffer) */
#define SHIM_WINDOW_CHUNKS 4u         /* DATA awaiting verdicts per direction */
#define SHIM_REPORTS_MAX (2u * NKE_BUFFER_SIZE) /* bytes of a SHIM_REPORTS message, headers included */
#define SHIM_REPORTS_ENTRIES 8u                 /* reports in one SHIM_REPORTS message, at most */

struct shim_hdr {
    uint32_t type;        /* enum shim_msg_type */
    uint32_t direction;   /* enum nke_direction */
    uint32_t action;      /* VERDICT: enum nke_action */
    uint32_t len;         /* bytes following */
    uint32_t flags;       /* SHIM_F_* */
    uint32_t seq;         /* DATA/VERDICT: per-direction sequence (wraps) */
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
 * spin_us: how long a relay waiting for a verdict polls before sleeping
 * (nke-emud --spin-us; 0: never). Sleeping and being woken costs tens of
 * microseconds per hop on a virtual machine whose idle CPUs halt at once.
 */
#define NKE_EMU_SHIM_STATE "shim.state"
#define SHIM_STATE_MAGIC 0x5453454eu /* "NEST" */
struct shim_state {
    uint32_t magic;
    uint32_t may_defer;   /* accessed with __atomic_* */
    uint32_t client;      /* a user client is open (SHIM_BIND/LISTEN/OPTION wanted); __atomic_* */
    uint32_t spin_us;     /* written once before the file is renamed into place */
    /* 1 while a chunk could be held for a verdict (capture ALL, or RULES
     * with a HOLD rule or default); 0 when chunks are at most reported, so
     * relays send SHIM_F_NO_VERDICT DATA and do not wait. Only meaningful
     * with version >= 1 (an older nke-emud leaves both 0). __atomic_*. */
    uint32_t may_hold;
    uint32_t version;     /* 1: may_hold is maintained; written before the rename */
    uint32_t _pad[10];
};

#endif

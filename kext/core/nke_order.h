/*
 * kext/core: stream order of the data the filter keeps, the byte budget, and
 * the free-space-sized re-injection plan. Portable rules shared by the kext
 * and the Linux emulator, unit-tested on Linux (test/native/test_order.c).
 *
 * Why (XNU, bsd/sys/kpi_socketfilter.h, sf_data_in_func / sf_data_out_func):
 * "if your filter intercepts data for later reinjection, it must queue all
 * incoming [outbound] data to preserve the order of the data". Every reason
 * a piece of data would pass untouched (no client, capture mode NOTHING, a
 * PASS rule, buffer pool or chunk table full, notification queue full, the
 * byte budget used up) is only a reason not to *hold* it: once a socket
 * direction has anything kept, each later piece waits behind it.
 *
 * Two stages per socket and direction:
 *  1. the queue (struct nke_order_queue): pieces the core keeps, in stream
 *     order. A held chunk waits for its verdict (or deadline, client close,
 *     socket gone); a piece queued behind it has its decision (ALLOW) from
 *     the start. The core hands items back to the platform (ops->finish)
 *     strictly from the head, only once the head is decided, so a verdict on
 *     chunk 2 takes effect after chunk 1's, whatever order the client
 *     answers in;
 *  2. in flight: handed back (ops->finish) but not yet re-injected by the
 *     platform. The platform says when it is done with an item
 *     (nke_core_item_done); until then the socket direction still counts as
 *     busy, so new data queues behind the re-injection too, with or without
 *     a client.
 *
 * Memory: the core allocates nothing. Every data_ctx the platform passes to
 * nke_core_data points at its own record whose FIRST member is a struct
 * nke_order_item (the core links items through it while it keeps them).
 * The byte budget (NKE_KEPT_BYTES_MAX, counted in stats.bytes_kept) bounds
 * what the filter keeps: held and queued pieces, staged edits, and bytes in
 * flight.
 *
 * Locking: as nke_core.h, everything under the platform's one lock.
 */
#ifndef NKE_ORDER_H
#define NKE_ORDER_H

#include <nke/nke_abi.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef __cplusplus
#include <stdbool.h>
#endif

struct nke_core;
struct nke_sock;

/* The first member of the platform's per-piece record (its data_ctx).
 * Fields are the core's while it keeps the item (from nke_core_data
 * returning HELD or QUEUED until ops->finish); the platform reads them in
 * ops->finish and passes the item to nke_core_item_done when its
 * re-injection is over. */
struct nke_order_item {
    struct nke_order_item *next;  /* the socket direction's queue */
    struct nke_sock_id sock;      /* socket the item belongs to */
    uint32_t size;                /* bytes of the original piece */
    uint32_t kept;                /* bytes counted in stats.bytes_kept for it, returned by item_done */
    void *staged;                 /* decided ALLOW_MODIFIED: the staged bytes, handed over in finish */
    uint32_t staged_len;
    uint8_t action;               /* 0: awaiting a verdict; else enum nke_action */
    uint8_t direction;            /* enum nke_direction */
    uint8_t reason;               /* enum nke_release_reason; 0: client verdict or queued behind */
    uint8_t _pad0;
};

/* One socket direction (struct nke_sock.order[direction - 1]). */
struct nke_order_queue {
    struct nke_order_item *head, *tail; /* kept, not yet handed back; stream order */
    uint64_t bytes;                     /* sizes of the items on the queue */
    uint64_t inflight_bytes;            /* `kept` of the items handed back, not yet done */
    uint32_t items;                     /* on the queue */
    uint32_t inflight;                  /* handed back (ops->finish), not yet done */
};

/* --- for the platform ----------------------------------------------------- */

/* The platform is done with an item the core handed back through
 * ops->finish (re-injected, failed, or dropped): the socket direction stops
 * counting it as busy and its bytes leave the budget. Exactly once per
 * finished item, before the platform frees it. May be called from inside
 * ops->finish (the one call back into the core the ops may make) when the
 * platform completes the release there. The socket may be gone by then. */
void nke_core_item_done(struct nke_core *c, struct nke_order_item *item);

/* Bytes of the socket direction the filter keeps: queued (held or behind)
 * plus in flight. 0 for an unknown socket. */
uint64_t nke_core_order_backlog(const struct nke_core *c, struct nke_sock_id id, uint8_t direction);
/* The socket direction has something kept or in flight: a new piece would
 * queue behind it. */
bool nke_core_order_busy(const struct nke_core *c, struct nke_sock_id id, uint8_t direction);

/* --- the free-space-sized re-injection plan ------------------------------- */
/*
 * XNU's sosend (bsd/kern/uipc_socket.c, sosend/sosendcheck) treats a
 * prebuilt chain as atomic: larger than the send buffer's high-water mark is
 * EMSGSIZE; not enough room is EWOULDBLOCK for a non-blocking socket or from
 * inside the socket's own sf_data_out, and a wait in sbwait for a blocking
 * one; on every error the chain is freed. A filter that re-injects what it
 * deferred with EJUSTRETURN (which returned to the application without
 * using send-buffer room) must therefore size each injection to the room
 * there is, SO_SNDBUF - SO_NWRITE, keep the rest, and try again later. The
 * plan below says how much to send now; the platform copies that slice, so
 * a failed injection loses nothing and is retried.
 */
struct nke_inject_plan {
    uint32_t total;     /* bytes to re-inject (the original or the edit) */
    uint32_t done;      /* re-injected so far */
    uint32_t control;   /* ancillary bytes that go with the first slice (0 once sent) */
    uint32_t waits;     /* consecutive "no room" answers, for the retry delay */
    uint8_t datagram;   /* one datagram: all at once or not at all */
    uint8_t _pad0[3];
};

enum nke_plan_step {
    NKE_PLAN_SEND    = 1, /* inject *len bytes from offset `done` now */
    NKE_PLAN_WAIT    = 2, /* no room: retry after nke_inject_plan_no_room()'s delay */
    NKE_PLAN_DONE    = 3, /* nothing left */
    NKE_PLAN_TOO_BIG = 4  /* can never fit (datagram or control above SO_SNDBUF): give up */
};

/* Bounds of the retry delay after "no room" (it doubles per wait). */
#define NKE_INJECT_RETRY_MIN_MS 1u
#define NKE_INJECT_RETRY_MAX_MS 64u
/* Outbound bytes a sender may have queued on one socket (queue + in
 * flight) before its own next write waits, in its own thread, for room
 * (the kext's backpressure: EJUSTRETURN never blocks the application). */
#define NKE_INJECT_BACKLOG_MAX (1024u * 1024u)
/* Longest a closing socket's sender waits for room to flush held outbound
 * data before the stack stops sending (the rest is lost and reported). */
#define NKE_CLOSE_FLUSH_MAX_MS 10000u

void nke_inject_plan_init(struct nke_inject_plan *p, uint32_t total, uint32_t control_len,
                          bool datagram);
/* sndbuf and nwrite as the stack reports them (SO_SNDBUF, SO_NWRITE);
 * max_slice caps one injection (the size of the platform's copy). */
int nke_inject_plan_next(const struct nke_inject_plan *p, int64_t sndbuf, int64_t nwrite,
                         uint32_t max_slice, uint32_t *len);
/* `len` bytes (the *len of NKE_PLAN_SEND) went into the stack. */
void nke_inject_plan_sent(struct nke_inject_plan *p, uint32_t len);
/* No room (NKE_PLAN_WAIT, or the stack said EWOULDBLOCK/ENOBUFS): ms to wait
 * before the next try, doubling from NKE_INJECT_RETRY_MIN_MS to _MAX_MS. */
uint32_t nke_inject_plan_no_room(struct nke_inject_plan *p);

/* --- internal to kext/core (nke_core.c) ----------------------------------- */

/* Appends item to the socket direction's queue and counts its bytes. With
 * `decided`, the item is queued behind (ALLOW, reason 0) and handed back at
 * once if nothing is ahead of it. */
void nke_order_keep(struct nke_core *c, struct nke_sock *s, struct nke_sock_id id,
                    struct nke_order_item *item, uint8_t direction, uint32_t size, bool decided);
/* Records the decision on a kept item (a held chunk's verdict or
 * auto-release) and hands back whatever the queue's head now allows.
 * staged_total is what the staged bytes count in the budget. */
void nke_order_decide(struct nke_core *c, struct nke_sock *s, struct nke_order_item *item,
                      uint32_t action, void *staged, uint32_t staged_len, uint32_t staged_total,
                      uint32_t reason);
/* The socket is going away: every decided item of both directions becomes a
 * DROP (reason NKE_RELEASE_SOCKET_GONE), staged bytes unstaged. The caller
 * then decides the held ones, which hands everything back. */
void nke_order_socket_gone(struct nke_core *c, struct nke_sock *s);

#ifdef __cplusplus
}
#endif

#endif /* NKE_ORDER_H */

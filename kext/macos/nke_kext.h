/*
 * kext/macos: state shared by the IOService (nke_service.cpp), the socket
 * filter callbacks (nke_sflt.c), the injector thread (nke_inject.c), the
 * kauth exec listener (nke_kauth.c) and the user client
 * (nke_user_client.cpp).
 *
 * What XNU calls us with (xnu-3248.60.10 and xnu-11417.101.15,
 * bsd/kern/kpi_socketfilter.c): every sflt callback but sf_detach runs with
 * the socket UNLOCKED (sflt_data_in/out, sflt_notify_internal,
 * sflt_connectin/out, sflt_bind, sflt_listen, sflt_accept,
 * sflt_setsockopt/getsockopt all socket_unlock before calling the filter);
 * sf_attach of an accepted socket runs with its listening socket locked
 * (sonewconn_internal); sf_detach runs with the socket locked when the
 * socket is freed (sflt_termsock from sofreelastref) and unlocked on the
 * filter cleanup thread after sflt_unregister. sf_data_out runs inside
 * sosend with the send buffer's sblock held by the sending thread.
 *
 * Locks, in order (a lock is only ever taken after the ones above it):
 *   socket lock (XNU's)  >  g_nke.lock  >  g_nke.inject_lock
 *  - g_nke.lock (lck_mtx, the "core lock") protects g_nke.core (every
 *    nke_core call), g_nke.queue, the timer state, the pending-child slots,
 *    g_nke.unloading and the service's owner_/sessions_.
 *  - g_nke.inject_lock (lck_mtx, the injector's own) protects the
 *    injection queues of every socket (nke_kext_sock.inj[], inj_bytes[],
 *    drainer, on_work, work_next, retry_at_ms, items, detached, closing),
 *    the injector's work list, g_nke.inject_items, g_nke.drainers, the
 *    internal-call thread set and the injector thread's lifecycle flags.
 *  - Neither is held across anything that takes a socket lock or may
 *    sleep long: sock_inject_data_in/out, sock_getsockopt/getsockname,
 *    sock_retain/sock_release (a last release runs detach), mbuf chain
 *    allocation, IOMalloc of staged edits.
 *  - Counters touched without a lock are atomics and say so.
 *
 * Who injects (finding: re-injecting from inside other sockets' callbacks
 * deadlocks on their sblock/sbwait and on udbinfo.ipi_lock; the SDK's
 * kpi_socketfilter.h says "Do not wait for data on another socket"): only
 * the drainer of a socket, holding no lock but, when it is the socket's own
 * sender, that socket's sblock. A drainer is the injector thread, or the
 * socket's own thread in its sf_data_out (owner context: sosend allows a
 * filter's re-entry, uipc_socket.c sosendcheck "Radar 4150520"), or the
 * closing thread in sf_notify(closing/shutdown). One drainer per socket at a
 * time (nke_kext_sock.drainer). Callbacks, the timer and the user client
 * only enqueue (the core's finish op) and wake the injector.
 */
#ifndef NKE_KEXT_H
#define NKE_KEXT_H

#include <mach/mach_types.h>
#include <libkern/OSTypes.h>
#include <kern/locks.h>
#include <kern/thread.h>
#include <kern/thread_call.h>
#include <sys/kpi_socket.h>
#include <sys/kpi_socketfilter.h>
#include <sys/kpi_mbuf.h>
#include <sys/socket.h>

#include <nke/nke_abi.h>
#include "nke_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Not declared in SDKs before macOS 12; exported by com.apple.kpi.unsupported
 * (x86_64) on the releases this kext targets. */
extern void sock_retain(socket_t so);
extern void sock_release(socket_t so);

#define NKE_SOCK_TABLE_SIZE 4096u
/* One filter handle per (family, protocol); sflt_register wants distinct ones. */
#define NKE_HANDLE_BASE 0x4e4b4500u /* 'NKE\0' */
#define NKE_NUM_FILTERS 4
#define NKE_MBUF_TAG_TYPE 1
#define NKE_STATE_PERIOD_MS 1000u
/* Bytes copied into one re-injected chain (a slice of an item). */
#define NKE_INJECT_SLICE_MAX (256u * 1024u)
/* Accept pairing: connect_in on a listener and the attach of its new socket
 * happen on one thread in a row (uipc_socket2.c sonewconn); slots kept. */
#define NKE_PENDING_CHILDREN 8
#define NKE_PENDING_CHILD_MS 1000u
/* Threads in our own sock_getsockopt calls at once (their getoption
 * callbacks are not reported). */
#define NKE_INTERNAL_THREADS 16

struct nke_held;

/* The mbuf tag on every chain the kext re-injects (nke_inject.c writes it,
 * nke_sflt.c is_ours reads and frees it): whose socket and which way, so
 * the filter passes exactly its own re-injection and nothing else. */
#define NKE_TAG_MAGIC 0x4e4b4554u /* 'NKET' */
struct nke_tag {
    uint32_t magic;
    uint32_t direction;      /* NKE_DIR_* */
    struct nke_sock_id sock;
};

/* Per direction: released items waiting for (or in) re-injection, in stream
 * order. g_nke.inject_lock. */
struct nke_inject_queue {
    struct nke_held *head, *tail;
};

/* Filter cookie of one socket (sflt attach..detach, and after detach while
 * items still refer to it). */
struct nke_kext_sock {
    socket_t so;
    struct nke_sock_id id;   /* {0,0}: untracked (table full), data passes */
    uint8_t family;          /* NKE_AF_* */
    uint8_t protocol;        /* NKE_PROTO_* */
    bool kernel_owned;       /* attached in kernel context, not (yet) accepted: no deferring; g_nke.lock */
    bool upcall_wait;        /* SO_UPCALLCLOSEWAIT seen: never deferred again; g_nke.lock */
    uint64_t upcall_check_ms; /* last SO_UPCALLCLOSEWAIT look; g_nke.lock */
    /* --- g_nke.inject_lock --- */
    struct nke_inject_queue inj[2];  /* [direction - 1] */
    uint64_t inj_bytes[2];           /* bytes of those items not yet re-injected */
    thread_t drainer;                /* who re-injects this socket now; NULL: nobody */
    bool on_work;                    /* on the injector's work list */
    struct nke_kext_sock *work_next;
    uint64_t retry_at_ms;            /* no send-buffer room: not before this */
    uint32_t items;                  /* nke_held alive that refer to this cookie */
    bool detached;                   /* sf_detach ran: the last of `items` frees us */
    bool closing;                    /* sf_notify(closing): a waiting sender gives up */
};

/* The original bytes of one sf_data_in/out call, shared by the pieces the
 * call was cut into (each re-injects a copy of its own slice). */
struct nke_chain {
    mbuf_t m;
    volatile SInt32 refs;            /* atomic: pieces alive */
};

/* One kept piece: the core's data_ctx. The core's from nke_core_data
 * (HELD/QUEUED) to its finish op, then the injection queue's; freed by
 * whoever completes it, outside every lock. */
struct nke_held {
    struct nke_order_item item;      /* first: the core links and counts it */
    struct nke_held *next;           /* nke_inject_queue; g_nke.inject_lock */
    struct nke_kext_sock *ks;        /* counted in ks->items */
    socket_t so;                     /* a reference (sock_retain) until held_free */
    struct nke_chain *chain;         /* original bytes, shared */
    uint32_t offset, len;            /* this piece within chain */
    mbuf_t control;                  /* ancillary data, first piece of a call only */
    sflt_data_flag_t sflags;
    uint8_t direction;               /* NKE_DIR_* */
    bool has_addr;
    struct sockaddr_storage addr;    /* from (in) or to (out) of a datagram */
    uint64_t chunk_id;               /* 0 when not a chunk (queued behind) */
    /* set by the finish op */
    uint32_t action, reason;
    void *staged;                    /* struct nke_staged of ALLOW_MODIFIED */
    uint32_t staged_len;
    struct nke_inject_plan plan;     /* progress of the re-injection */
};

/* Staged modified bytes: total size kept in front so unstage can free. */
struct nke_staged {
    uint32_t total;
    uint32_t _pad;
    uint8_t bytes[];
};

/* An accepted socket's owner, learned at connect_in on its listener. */
struct nke_pending_child {
    thread_t thread;                 /* NULL: slot free */
    uint64_t at_ms;
    struct nke_sock_info info;       /* the listener's process */
    struct nke_addr remote;
};

struct nke_kext_globals {
    lck_grp_t *lck_grp;
    lck_mtx_t *lock;                 /* the core lock */
    lck_mtx_t *inject_lock;          /* the injector's lock */
    struct nke_core *core;           /* IOMalloc'd; g_nke.lock */
    struct nke_sock *socks;          /* table handed to the core */
    void *queue;                     /* IOSharedDataQueue* of the open client; g_nke.lock */
    mbuf_tag_id_t tag_id;            /* set once in start */
    uint32_t kev_vendor_code;        /* set once in start; 0 when refused */
    uint32_t kev_msg_limit;          /* mbuf_get_mlen(), set once in start */
    thread_call_t timer;
    bool timer_stopping;             /* g_nke.lock */
    uint64_t timer_due_ms;           /* armed firing, 0 = none; g_nke.lock */
    bool unloading;                  /* filters being unregistered: no new client; g_nke.lock */
    uint64_t last_state_ms;          /* g_nke.lock */
    struct nke_pending_child pending[NKE_PENDING_CHILDREN]; /* g_nke.lock */
    /*
     * The injector thread. Lifetime: started in the service's start()
     * (stage kInjector: after the core and its locks, before the timer, the
     * kauth listener and the filters, so nothing can enqueue before it
     * runs); stopped in stop()/unwind after the filters are unregistered
     * (no callback left), the kauth listener drained and the timer
     * cancelled (no enqueuer left) and inject_items and drainers are back
     * to 0: injector_stop is set and the thread woken; it leaves its loop,
     * sets injector_exited, wakes the stopper and calls
     * thread_terminate(current_thread()), which does not return (XNU
     * osfmk/kern/thread_act.c: a kernel thread terminating itself takes
     * its AST at once). Only then are the core and the locks freed. The
     * few instructions between the wakeup and thread_terminate run in our
     * text, long before the kext can be unmapped (stop returns first, then
     * IOKit and the module's stop routine run).
     * All fields below are g_nke.inject_lock.
     */
    thread_t injector;               /* reference from kernel_thread_start, released in unwind */
    bool injector_stop;
    bool injector_exited;
    struct nke_kext_sock *work_head, *work_tail; /* sockets with items to re-inject */
    uint32_t inject_items;           /* nke_held alive, kept by the core or queued for injection */
    uint32_t drainers;               /* threads re-injecting now (any kind of drainer) */
    thread_t internal[NKE_INTERNAL_THREADS]; /* in our own sock_getsockopt calls */
    /* A staging buffer the user client allocated (outside g_nke.lock) for a
     * put_data piece at offset 0; the stage op takes it. g_nke.lock. */
    void *stage_prealloc;
    uint32_t stage_prealloc_total;
    volatile SInt32 filters_registered;  /* atomic: sflt_register'ed, not yet unregistered */
    volatile SInt32 kauth_inflight;      /* atomic: kauth callbacks running */
    volatile SInt32 sockets_attached;    /* atomic: cookies alive */
    volatile SInt32 exec_id;             /* atomic */
    void *kauth_listener;            /* kauth_listener_t */
    bool kauth_stopping;
};

extern struct nke_kext_globals g_nke;
extern const struct nke_core_ops nke_kext_core_ops;

uint64_t nke_kext_now_ns(void);
uint64_t nke_kext_now_ms(void);
/* Arms the deadline/state timer `ms` from now (g_nke.lock held). */
void nke_kext_timer_arm_locked(uint32_t ms);

int nke_sflt_register_all(void);
/* Unregisters the handles; XNU detaches the filter from every socket at
 * once (sflt_unregister) and calls sf_unregistered when the last callback
 * in progress has returned. */
void nke_sflt_unregister_begin(void);
/* Returns once every sf_unregistered callback has run. */
void nke_sflt_wait_unregistered(void);
void nke_kext_timer_fire(thread_call_param_t p0, thread_call_param_t p1);
/* Serialized by g_nke.lock (IOSharedDataQueue has one producer). */
bool nke_kext_queue_enqueue_locked(void *queue, const void *rec, uint32_t size);

/* --- the injector (nke_inject.c) ------------------------------------------ */
int nke_inject_start(void);
/* Waits until nothing is kept or being re-injected, then stops the thread. */
void nke_inject_stop(void);
/* The core's finish op: queues a released piece for re-injection (DROPs
 * too: their socket reference is given back outside the locks) and wakes
 * the injector. g_nke.lock held. */
void nke_inject_enqueue_locked(struct nke_held *h, uint32_t action, void *staged,
                               uint32_t staged_len, uint32_t reason);
/* The socket's own sender, in its sf_data_out: re-injects what waits on
 * the socket's outbound queue (owner context), and waits for room while
 * more than NKE_INJECT_BACKLOG_MAX bytes of it are on their way. */
void nke_inject_drain_as_sender(struct nke_kext_sock *ks);
/* The closing thread, in sf_notify: re-injects everything outbound now,
 * waiting for room up to NKE_CLOSE_FLUSH_MAX_MS; the rest is lost and
 * reported. */
void nke_inject_flush_for_close(struct nke_kext_sock *ks);
/* Our own sock_getsockopt calls: their sf_getoption callbacks are not
 * reported (nke_inject_is_internal). */
errno_t nke_inject_getsockopt(socket_t so, int level, int name, int *value);
bool nke_inject_is_internal(void);
/* A new piece kept by the core refers to ks (g_nke.inject_lock taken here). */
void nke_inject_item_added(struct nke_kext_sock *ks);
/* sf_detach: from now on the last item referring to ks frees it. Returns
 * true when the caller frees it now (no item, no drainer, not queued). */
bool nke_inject_cookie_detached(struct nke_kext_sock *ks);
/* Frees h and gives back its socket reference: never under a lock. */
void nke_held_free(struct nke_held *h);
/* Terminate's question: re-injections kept or queued, and threads doing
 * them (inject_lock taken here). */
void nke_inject_busy(uint32_t *items, uint32_t *drainers);

int nke_kauth_start(void);
void nke_kauth_stop(void);

#ifdef __cplusplus
}
#endif

#endif /* NKE_KEXT_H */

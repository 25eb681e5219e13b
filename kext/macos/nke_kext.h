/*
 * kext/macos: state shared by the IOService (nke_service.cpp), the socket
 * filter callbacks (nke_sflt.cpp), the kauth exec listener (nke_kauth.cpp)
 * and the user client (nke_user_client.cpp).
 *
 * Locking, one rule for the whole kext:
 *  - g_nke.lock (lck_mtx) protects g_nke.core, the socket cookies' `inflight`
 *    and `detaching`, the injection list and g_nke.queue. Every call into
 *    nke_core is made with it held (nke_core itself never locks).
 *  - It is a leaf lock: nothing takes a socket lock while holding it. The sflt
 *    callbacks that run with the socket locked (notify, connect, bind, ...)
 *    take it after the socket lock, so no injection may run under it: the
 *    core's finish op only queues the work (nke_kext_inject_list) and the
 *    caller runs nke_kext_run_injections() after dropping the lock. The same
 *    goes for sock_retain/sock_release (see nke_sflt.c, "Socket lifetime").
 *  - Counters touched without the lock are atomics and say so.
 */
#ifndef NKE_KEXT_H
#define NKE_KEXT_H

#include <mach/mach_types.h>
#include <libkern/OSTypes.h>
#include <kern/locks.h>
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

/* Filter cookie of one socket (sflt attach..detach). */
struct nke_kext_sock {
    socket_t so;
    struct nke_sock_id id;   /* {0,0}: untracked (table full), data passes */
    uint8_t family;          /* NKE_AF_* */
    uint8_t protocol;        /* NKE_PROTO_* */
    uint8_t _pad[2];
    uint32_t inflight;       /* nke_held of this socket queued or being injected; g_nke.lock */
    bool detaching;          /* detach ran; the injection taking inflight to 0 frees us; g_nke.lock */
};

/* One deferred piece of data: the core's data_ctx. Owned by the core while
 * the chunk is HELD, then by the injection list (every finish, DROP too),
 * then freed by nke_kext_run_injections outside g_nke.lock. */
struct nke_held {
    struct nke_held *next;       /* injection list link; g_nke.lock */
    struct nke_kext_sock *ks;
    socket_t so;                 /* a reference (sock_retain) until held_free */
    uint64_t chunk_id;           /* 0 when the core never took it */
    mbuf_t data;
    mbuf_t control;
    sflt_data_flag_t sflags;
    uint8_t direction;           /* NKE_DIR_* */
    bool has_addr;
    uint32_t len;
    struct sockaddr_storage addr; /* from (in) or to (out) of a datagram */
    /* set by finish */
    uint32_t action;
    void *staged;                /* kernel copy of modified bytes (IOMalloc, staged_total) */
    uint32_t staged_len;
    uint32_t reason;
};

/* Staged modified bytes: total size kept in front so unstage can free. */
struct nke_staged {
    uint32_t total;
    uint32_t _pad;
    uint8_t bytes[];
};

struct nke_kext_globals {
    lck_grp_t *lck_grp;
    lck_mtx_t *lock;
    struct nke_core *core;           /* IOMalloc'd; g_nke.lock */
    struct nke_sock *socks;          /* table handed to the core */
    void *queue;                     /* IOSharedDataQueue* of the open client; g_nke.lock */
    struct nke_held *inject_head, *inject_tail; /* g_nke.lock */
    mbuf_tag_id_t tag_id;            /* set once in start */
    uint32_t kev_vendor_code;        /* set once in start; 0 when refused */
    uint32_t kev_msg_limit;          /* mbuf_get_mlen(), set once in start */
    thread_call_t timer;
    bool timer_stopping;             /* g_nke.lock */
    uint64_t timer_due_ms;           /* armed firing, 0 = none; g_nke.lock */
    bool unloading;                  /* filters being unregistered: no new client; g_nke.lock */
    uint64_t last_state_ms;          /* g_nke.lock */
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
/* Runs the injections queued by the core's finish op. Call without the lock. */
void nke_kext_run_injections(void);
/* Arms the deadline/state timer `ms` from now (lock held). */
void nke_kext_timer_arm_locked(uint32_t ms);

int nke_sflt_register_all(void);
/* Unregisters the handles; callbacks go on until every socket detached. */
void nke_sflt_unregister_begin(void);
/* Returns once every sf_unregistered callback has run. */
void nke_sflt_wait_unregistered(void);
void nke_kext_timer_fire(thread_call_param_t p0, thread_call_param_t p1);
/* Serialized by g_nke.lock (IOSharedDataQueue has one producer). */
bool nke_kext_queue_enqueue_locked(void *queue, const void *rec, uint32_t size);

int nke_kauth_start(void);
void nke_kauth_stop(void);

#ifdef __cplusplus
}
#endif

#endif /* NKE_KEXT_H */

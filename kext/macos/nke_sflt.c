/*
 * Socket filter: the four sflt handles (IPv4/IPv6 x TCP/UDP), the core's
 * platform operations and the data path. Re-injection is nke_inject.c's.
 *
 * Locking: see nke_kext.h. Every callback here but detach runs with the
 * socket unlocked (XNU bsd/kern/kpi_socketfilter.c), so sock_getsockname,
 * sock_getsockopt and sock_retain are allowed in them; none is called with
 * g_nke.lock held.
 *
 * Socket lifetime: every kept piece (nke_held) takes a socket reference
 * (sock_retain, before the core sees it) and gives it back when it has been
 * re-injected or dropped. A reference keeps the socket's memory, NOT the
 * connection: close() still runs soclose_locked, which posts
 * sf_notify(closing), disconnects and detaches the protocol whatever the
 * retain count, after which sosendcheck refuses with EPIPE. So the closing
 * thread flushes the socket's held outbound data in that notify
 * (nke_inject_flush_for_close); shutdown(SHUT_WR) likewise in
 * sf_notify(shutdown), posted before pru_shutdown.
 *
 * Deferral is off for in-kernel sockets (SFLT_GLOBAL attaches to them too):
 * sock_release on a socket with SO_UPCALLCLOSEWAIT while one of its upcalls
 * runs clears its upcalls and sleeps (kpi_socket.c sock_release,
 * uipc_socket.c soclose_wait_locked), which hangs NFS. A socket attached in
 * kernel context and not (yet) accepted by a process, or with
 * SO_UPCALLCLOSEWAIT set, is never held or queued: its data is reported at
 * most.
 */
#include "nke_kext.h"

#include <libkern/libkern.h>
#include <libkern/OSAtomic.h>
#include <libkern/OSMalloc.h>
#include <kern/clock.h>
#include <sys/errno.h>
#include <sys/proc.h>
#include <sys/kauth.h>
#include <sys/param.h>
#include <netinet/in.h>
#include <IOKit/IOLib.h>

/* every field documented in nke_kext.h */
struct nke_kext_globals g_nke;

/* How often a socket's SO_UPCALLCLOSEWAIT is looked at again while capture
 * would defer its data. */
#define NKE_UPCALL_CHECK_MS 100u

uint64_t nke_kext_now_ns(void)
{
    uint64_t ns;
    absolutetime_to_nanoseconds(mach_absolute_time(), &ns);
    return ns;
}

uint64_t nke_kext_now_ms(void) { return nke_kext_now_ns() / 1000000ull; }

/* ---- core platform operations (all called with g_nke.lock held) -------- */

static bool op_emit(void *platform, const void *rec, uint32_t size)
{
    /* The IOSharedDataQueue is single-producer: g_nke.lock serializes us. */
    if (g_nke.queue == NULL)
        return false;
    return nke_kext_queue_enqueue_locked(g_nke.queue, rec, size);
}

static void op_copy_data(void *platform, void *data_ctx, uint32_t offset, uint32_t len, void *dst)
{
    struct nke_held *h = (struct nke_held *)data_ctx;
    /* The chain cannot be shorter: the core asks only within h->len. */
    if (mbuf_copydata(h->chain->m, h->offset + offset, len, dst) != 0)
        memset(dst, 0, len);
}

static void op_finish(void *platform, void *sock_ctx, void *data_ctx, uint32_t action,
                      void *staged, uint32_t staged_len, uint32_t reason)
{
    /* Only queued here, DROP included (its socket reference is given back
     * outside the locks): the drainer re-injects, nke_core_item_done
     * follows. */
    nke_inject_enqueue_locked((struct nke_held *)data_ctx, action, staged, staged_len, reason);
}

static int op_stage(void *platform, void **staged, uint32_t total_len, uint32_t offset,
                    const void *bytes, uint32_t len)
{
    struct nke_staged *s = (struct nke_staged *)*staged;
    if (s == NULL) {
        /* The user client allocated it before taking g_nke.lock (an edit
         * may be NKE_MODIFIED_MAX_LEN bytes: never IOMalloc'd under it). */
        if (g_nke.stage_prealloc == NULL || g_nke.stage_prealloc_total != total_len)
            return NKE_ERR_NO_MEMORY;
        s = (struct nke_staged *)g_nke.stage_prealloc;
        g_nke.stage_prealloc = NULL;
        s->total = total_len;
        *staged = s;
    }
    if ((uint64_t)offset + len > s->total)
        return NKE_ERR_PUT_LEN; /* the core checked this; a wild memcpy is not worth the bet */
    memcpy(s->bytes + offset, bytes, len);
    return NKE_OK;
}

static void op_unstage(void *platform, void *staged)
{
    struct nke_staged *s = (struct nke_staged *)staged;
    /* IOFree of a large block may sleep: fine under a mutex, and rare. */
    if (s)
        IOFree(s, sizeof(*s) + s->total);
}

const struct nke_core_ops nke_kext_core_ops = {
    .emit = op_emit,
    .copy_data = op_copy_data,
    .finish = op_finish,
    .stage = op_stage,
    .unstage = op_unstage,
};

/* ---- timer ------------------------------------------------------------- */

void nke_kext_timer_arm_locked(uint32_t ms)
{
    uint64_t due, deadline;
    if (g_nke.timer == NULL || g_nke.timer_stopping || ms == UINT32_MAX)
        return;
    due = nke_kext_now_ms() + ms;
    if (g_nke.timer_due_ms != 0 && g_nke.timer_due_ms <= due)
        return; /* an earlier firing is already armed; it re-arms itself */
    g_nke.timer_due_ms = due;
    clock_interval_to_deadline(ms ? ms : 1, kMillisecondScale, &deadline);
    thread_call_enter_delayed(g_nke.timer, deadline);
}

/* thread_call: expires held chunks past their deadline and emits the
 * periodic NKE_NT_STATE while a client is open. It only enqueues: what the
 * deadlines release goes to the injector. */
void nke_kext_timer_fire(thread_call_param_t p0, thread_call_param_t p1)
{
    uint64_t now;
    uint32_t next;
    lck_mtx_lock(g_nke.lock);
    g_nke.timer_due_ms = 0;
    now = nke_kext_now_ms();
    next = nke_core_expire(g_nke.core, now, nke_kext_now_ns());
    if (g_nke.core->client_open) {
        uint64_t since = now - g_nke.last_state_ms;
        if (since >= NKE_STATE_PERIOD_MS) {
            nke_core_emit_state(g_nke.core, nke_kext_now_ns());
            g_nke.last_state_ms = now;
            since = 0;
        }
        if (next > NKE_STATE_PERIOD_MS - since)
            next = (uint32_t)(NKE_STATE_PERIOD_MS - since);
    }
    nke_kext_timer_arm_locked(next); /* not once timer_stopping is set */
    lck_mtx_unlock(g_nke.lock);
}

/* ---- helpers ------------------------------------------------------------- */

static void addr_from_sockaddr(const struct sockaddr *sa, struct nke_addr *out)
{
    memset(out, 0, sizeof(*out));
    if (sa == NULL)
        return;
    if (sa->sa_family == AF_INET && sa->sa_len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        out->family = NKE_AF_INET;
        out->port = ntohs(sin->sin_port);
        memcpy(out->addr, &sin->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6 && sa->sa_len >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        out->family = NKE_AF_INET6;
        out->port = ntohs(sin6->sin6_port);
        out->scope_id = sin6->sin6_scope_id;
        memcpy(out->addr, &sin6->sin6_addr, 16);
    }
}

/* Socket unlocked: sock_getsockname/getpeername take its lock. */
static void sock_addrs(socket_t so, struct nke_addr *local, struct nke_addr *remote)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (sock_getsockname(so, (struct sockaddr *)&ss, sizeof(ss)) == 0)
        addr_from_sockaddr((struct sockaddr *)&ss, local);
    else
        memset(local, 0, sizeof(*local));
    memset(&ss, 0, sizeof(ss));
    if (sock_getpeername(so, (struct sockaddr *)&ss, sizeof(ss)) == 0)
        addr_from_sockaddr((struct sockaddr *)&ss, remote);
    else
        memset(remote, 0, sizeof(*remote));
}

static bool tracked(const struct nke_kext_sock *ks) { return ks && ks->id.gen != 0; }

/* The process the calling thread runs for. */
static void self_info(struct nke_sock_info *info)
{
    kauth_cred_t cred = kauth_cred_get();
    info->pid = proc_selfpid();
    info->uid = cred ? kauth_cred_getuid(cred) : 0;
    proc_selfname(info->comm, (int)sizeof(info->comm));
    info->comm[NKE_COMM_LEN - 1] = '\0';
}

/*
 * Our own re-injection coming back through this socket's filter. The tag
 * names the socket and direction it was injected for, and is freed here
 * either way: a UDP datagram injected outbound keeps its packet header (and
 * so its tags) through loopback, and the receiving socket's data_in must
 * filter it as new data, not pass it as ours.
 */
static bool is_ours(mbuf_t m, const struct nke_kext_sock *ks, uint8_t dir)
{
    struct nke_tag t;
    size_t len = 0;
    void *p = NULL;
    bool mine;
    if (!(mbuf_flags(m) & MBUF_PKTHDR) ||
        mbuf_tag_find(m, g_nke.tag_id, NKE_MBUF_TAG_TYPE, &len, &p) != 0)
        return false;
    mine = false;
    if (len == sizeof(t)) {
        memcpy(&t, p, sizeof(t));
        mine = t.magic == NKE_TAG_MAGIC && t.direction == dir && t.sock.slot == ks->id.slot &&
               t.sock.gen == ks->id.gen;
    }
    mbuf_tag_free(m, g_nke.tag_id, NKE_MBUF_TAG_TYPE);
    return mine;
}

/* ---- callbacks ----------------------------------------------------------- */

static void nke_unregistered(sflt_handle handle)
{
    OSDecrementAtomic(&g_nke.filters_registered);
    wakeup((void *)&g_nke.filters_registered);
}

/* The slot sonewconn's connect_in (on the listener) left for the socket
 * now being attached on this thread, or NULL. g_nke.lock. */
static bool take_pending_child_locked(struct nke_pending_child *out)
{
    thread_t self = current_thread();
    uint64_t now = nke_kext_now_ms();
    int i;
    for (i = 0; i < NKE_PENDING_CHILDREN; i++) {
        struct nke_pending_child *p = &g_nke.pending[i];
        if (p->thread != self)
            continue;
        p->thread = NULL;
        if (now - p->at_ms > NKE_PENDING_CHILD_MS)
            return false;
        *out = *p;
        return true;
    }
    return false;
}

static errno_t attach_common(void **cookie, socket_t so, uint8_t family, uint8_t protocol)
{
    struct nke_kext_sock *ks = (struct nke_kext_sock *)IOMalloc(sizeof(*ks));
    struct nke_pending_child child;
    struct nke_sock_info info;
    bool accepted;
    if (ks == NULL)
        return ENOMEM; /* the stack attaches the socket without us: fail-open */
    memset(ks, 0, sizeof(*ks));
    ks->so = so;
    ks->family = family;
    ks->protocol = protocol;

    memset(&info, 0, sizeof(info));
    self_info(&info);
    info.family = family;
    info.type = protocol == NKE_PROTO_TCP ? 1 : 2;
    info.protocol = protocol;

    lck_mtx_lock(g_nke.lock);
    /*
     * An accepted socket is attached in the kernel's input path
     * (uipc_socket2.c sonewconn_internal, kernel_task): right after the
     * listener's connect_in on this very thread. It belongs to the
     * listener's process until sf_accept says which process took it.
     * Anything else attached in kernel context is an in-kernel socket.
     */
    accepted = info.pid == 0 && take_pending_child_locked(&child);
    if (accepted) {
        info.pid = child.info.pid;
        info.uid = child.info.uid;
        memcpy(info.comm, child.info.comm, NKE_COMM_LEN);
    }
    ks->id = nke_core_attach(g_nke.core, &info, ks, nke_kext_now_ns());
    if (tracked(ks)) {
        if (accepted)
            nke_core_addrs(g_nke.core, ks->id, NKE_NT_CONNECT_IN, NULL, &child.remote,
                           nke_kext_now_ns());
        ks->kernel_owned = info.pid == 0;
        if (ks->kernel_owned)
            nke_core_sock_no_defer(g_nke.core, ks->id, true);
    }
    lck_mtx_unlock(g_nke.lock);
    OSIncrementAtomic(&g_nke.sockets_attached);
    *cookie = ks;
    return 0;
}

static errno_t attach_tcp4(void **c, socket_t so) { return attach_common(c, so, NKE_AF_INET, NKE_PROTO_TCP); }
static errno_t attach_udp4(void **c, socket_t so) { return attach_common(c, so, NKE_AF_INET, NKE_PROTO_UDP); }
static errno_t attach_tcp6(void **c, socket_t so) { return attach_common(c, so, NKE_AF_INET6, NKE_PROTO_TCP); }
static errno_t attach_udp6(void **c, socket_t so) { return attach_common(c, so, NKE_AF_INET6, NKE_PROTO_UDP); }

/* Runs with the socket locked when it is being freed (sflt_termsock), or
 * unlocked on XNU's filter cleanup thread after sflt_unregister detached
 * the filter from a live socket. Either way it only hands things over:
 * what the core kept is finished as DROPs (queued for the injector, which
 * gives the socket references back), and the cookie goes to the last item
 * still referring to it. It never waits: a re-injection in progress needs
 * the socket's lock. */
static void nke_detach(void *cookie, socket_t so)
{
    struct nke_kext_sock *ks = (struct nke_kext_sock *)cookie;
    if (ks == NULL)
        return;
    lck_mtx_lock(g_nke.lock);
    if (tracked(ks))
        nke_core_detach(g_nke.core, ks->id, nke_kext_now_ns());
    lck_mtx_unlock(g_nke.lock);
    if (nke_inject_cookie_detached(ks))
        IOFree(ks, sizeof(*ks));
    OSDecrementAtomic(&g_nke.sockets_attached);
    wakeup((void *)&g_nke.sockets_attached);
}

static uint32_t map_event(sflt_event_t ev)
{
    switch (ev) {
    case sock_evt_connecting: return NKE_EV_CONNECTING;
    case sock_evt_connected: return NKE_EV_CONNECTED;
    case sock_evt_disconnecting: return NKE_EV_DISCONNECTING;
    case sock_evt_disconnected: return NKE_EV_DISCONNECTED;
    case sock_evt_flush_read: return NKE_EV_FLUSH_READ;
    case sock_evt_shutdown: return NKE_EV_SHUTDOWN;
    case sock_evt_cantrecvmore: return NKE_EV_CANTRECVMORE;
    case sock_evt_cantsendmore: return NKE_EV_CANTSENDMORE;
    case sock_evt_closing: return NKE_EV_CLOSING;
    case sock_evt_bound: return NKE_EV_BOUND;
    default: return 0;
    }
}

/*
 * Socket unlocked. closing: soclose_locked posts it before disconnecting;
 * shutdown: soshutdownlock_final posts it before pru_shutdown (with `param`
 * pointing at `how`). Both are the last moment held outbound data can still
 * be sent: flush it here, in the closing thread. cantsendmore comes after
 * SS_CANTSENDMORE is set (uipc_socket2.c socantsendmore): too late to send,
 * so what is held outbound is dropped (and reported) rather than left to
 * fail at its deadline.
 */
static void nke_notify(void *cookie, socket_t so, sflt_event_t event, void *param)
{
    struct nke_kext_sock *ks = (struct nke_kext_sock *)cookie;
    uint32_t ev = map_event(event);
    bool flush = false;
    if (!tracked(ks) || ev == 0)
        return;
    lck_mtx_lock(g_nke.lock);
    nke_core_event(g_nke.core, ks->id, ev, nke_kext_now_ns());
    if (event == sock_evt_closing ||
        (event == sock_evt_shutdown && param != NULL && *(const int *)param != SHUT_RD)) {
        flush = nke_core_order_busy(g_nke.core, ks->id, NKE_DIR_OUT);
        nke_core_release_socket(g_nke.core, ks->id, NKE_DIR_OUT, NKE_ACT_ALLOW,
                                NKE_RELEASE_SOCKET_CLOSING, nke_kext_now_ns());
        if (event == sock_evt_closing) /* nobody will read it */
            nke_core_release_socket(g_nke.core, ks->id, NKE_DIR_IN, NKE_ACT_DROP,
                                    NKE_RELEASE_SOCKET_CLOSING, nke_kext_now_ns());
    } else if (event == sock_evt_cantsendmore) {
        nke_core_release_socket(g_nke.core, ks->id, NKE_DIR_OUT, NKE_ACT_DROP,
                                NKE_RELEASE_SOCKET_CLOSING, nke_kext_now_ns());
    }
    lck_mtx_unlock(g_nke.lock);
    if (flush)
        nke_inject_flush_for_close(ks);
}

/* Rules match on local and remote addresses: complete what the stack did
 * not hand us in connect/bind/listen. Socket unlocked here. */
static void fill_addrs(struct nke_kext_sock *ks, socket_t so)
{
    struct nke_sock *s;
    bool need;
    struct nke_addr local, remote;
    lck_mtx_lock(g_nke.lock);
    s = nke_core_sock(g_nke.core, ks->id);
    need = s && (s->local.family == 0 || s->local.port == 0 ||
                 (ks->protocol == NKE_PROTO_TCP && s->remote.family == 0));
    lck_mtx_unlock(g_nke.lock);
    if (!need)
        return;
    sock_addrs(so, &local, &remote);
    lck_mtx_lock(g_nke.lock);
    s = nke_core_sock(g_nke.core, ks->id); /* may have detached meanwhile */
    if (s) {
        if (local.family)
            s->local = local;
        if (remote.family)
            s->remote = remote;
    }
    lck_mtx_unlock(g_nke.lock);
}

/* SO_UPCALLCLOSEWAIT (NFS and other in-kernel users set it): never defer
 * such a socket's data (see the top of this file). Looked at again every
 * NKE_UPCALL_CHECK_MS while the socket is not known to have it. */
static void check_upcall_wait(struct nke_kext_sock *ks, socket_t so)
{
    uint64_t now = nke_kext_now_ms();
    int on = 0;
    bool look;
    lck_mtx_lock(g_nke.lock);
    look = !ks->upcall_wait && now - ks->upcall_check_ms >= NKE_UPCALL_CHECK_MS &&
           g_nke.core->client_open && g_nke.core->capture.mode != NKE_CAPTURE_NOTHING;
    if (look)
        ks->upcall_check_ms = now;
    lck_mtx_unlock(g_nke.lock);
    if (!look || nke_inject_getsockopt(so, SOL_SOCKET, SO_UPCALLCLOSEWAIT, &on) != 0 || !on)
        return;
    lck_mtx_lock(g_nke.lock);
    ks->upcall_wait = true;
    nke_core_sock_no_defer(g_nke.core, ks->id, true);
    lck_mtx_unlock(g_nke.lock);
}

static struct nke_held *held_new(struct nke_kext_sock *ks, socket_t so, struct nke_chain *chain,
                                 uint32_t offset, uint32_t len, uint8_t dir,
                                 sflt_data_flag_t flags, const struct sockaddr *sa)
{
    struct nke_held *h = (struct nke_held *)IOMalloc(sizeof(*h));
    if (h == NULL)
        return NULL;
    memset(h, 0, sizeof(*h));
    h->so = so;
    h->ks = ks;
    h->chain = chain;
    h->offset = offset;
    h->len = len;
    h->direction = dir;
    h->sflags = flags;
    if (sa && sa->sa_len <= sizeof(h->addr)) {
        memcpy(&h->addr, sa, sa->sa_len);
        h->has_addr = true;
    }
    return h;
}

/* At most this many pieces (of NKE_CHUNK_MAX_BYTES) are made of one call;
 * a larger call is one piece (queued or passed, never held). */
#define NKE_PIECES_MAX 16u

static errno_t data_common(struct nke_kext_sock *ks, socket_t so, const struct sockaddr *sa,
                           mbuf_t *data, mbuf_t *control, sflt_data_flag_t flags, uint8_t dir)
{
    struct nke_held *pieces[NKE_PIECES_MAX];
    bool is_kept[NKE_PIECES_MAX];
    struct nke_chain *chain;
    struct nke_addr addr, *paddr = NULL;
    uint32_t nflags = 0, npieces, total, i, kept = 0;
    uint64_t now_ms, now_ns;
    bool keepable;
    mbuf_t m;
    int r;

    if (!tracked(ks) || data == NULL || *data == NULL)
        return 0;
    if (is_ours(*data, ks, dir))
        return 0; /* our own re-injection coming back through the filter */
    /* Sum the chain: a packet header's length is not kept by every path. */
    total = 0;
    for (m = *data; m; m = mbuf_next(m))
        total += (uint32_t)mbuf_len(m);
    if (total == 0)
        return 0;
    if (ks->protocol == NKE_PROTO_UDP)
        nflags |= NKE_DATA_F_DATAGRAM;
    if (flags & sock_data_filt_flag_oob)
        nflags |= NKE_DATA_F_OOB;
    if (sa) {
        addr_from_sockaddr(sa, &addr);
        if (addr.family) {
            paddr = &addr;
            nflags |= NKE_DATA_F_HAS_ADDR;
        }
    }
    /* The sender's earlier bytes first, from its own thread (owner
     * context: sosend accepts a filter's re-entry, and nettop keeps seeing
     * the process, not kernel_task, as the socket's last owner). */
    if (dir == NKE_DIR_OUT)
        nke_inject_drain_as_sender(ks);
    fill_addrs(ks, so);
    check_upcall_wait(ks, so);

    /* Could this call be kept at all? If not, the core only counts it (and
     * reports it when a rule says so), in one lock hold with the check, so
     * nothing can be kept on this direction in between. */
    {
        struct nke_chain one = { *data, 1 };
        struct nke_held probe;
        memset(&probe, 0, sizeof(probe));
        probe.chain = &one;
        probe.len = total;
        now_ms = nke_kext_now_ms();
        now_ns = nke_kext_now_ns();
        lck_mtx_lock(g_nke.lock);
        keepable = nke_core_order_busy(g_nke.core, ks->id, dir) ||
                   (g_nke.core->client_open && g_nke.core->capture.mode != NKE_CAPTURE_NOTHING &&
                    !ks->kernel_owned && !ks->upcall_wait);
        if (!keepable) {
            uint64_t cid = 0;
            /* one piece: the core reports at most NKE_CHUNK_MAX_BYTES */
            (void)nke_core_data(g_nke.core, ks->id, dir, total, nflags | NKE_CORE_DATA_F_NO_HOLD,
                                paddr, &probe, now_ms, now_ns, &cid);
        }
        lck_mtx_unlock(g_nke.lock);
        if (!keepable)
            return 0;
    }

    /* A datagram is never cut; a stream call is cut in pieces of at most
     * NKE_CHUNK_MAX_BYTES, each its own chunk (the core holds or queues
     * them all, or passes them all: KEEP/NO_HOLD below). */
    npieces = (nflags & NKE_DATA_F_DATAGRAM) ? 1u : (total + NKE_CHUNK_MAX_BYTES - 1u) / NKE_CHUNK_MAX_BYTES;
    if (npieces > NKE_PIECES_MAX)
        npieces = 1;
    chain = (struct nke_chain *)IOMalloc(sizeof(*chain));
    if (chain == NULL)
        goto no_memory;
    chain->m = *data;
    chain->refs = (SInt32)npieces;
    for (i = 0; i < npieces; i++) {
        uint32_t off = npieces == 1 ? 0 : i * NKE_CHUNK_MAX_BYTES;
        uint32_t len = npieces == 1 ? total : (total - off < NKE_CHUNK_MAX_BYTES ? total - off : NKE_CHUNK_MAX_BYTES);
        pieces[i] = held_new(ks, so, chain, off, len, dir, flags, sa);
        if (pieces[i] == NULL) {
            while (i-- > 0)
                IOFree(pieces[i], sizeof(*pieces[i]));
            IOFree(chain, sizeof(*chain));
            goto no_memory;
        }
        /* Before the core sees it: a queued piece may go to the injector
         * (and be released) before nke_core_data returns. */
        sock_retain(so);
    }
    if (control && *control)
        pieces[0]->control = *control; /* travels with the first piece */

    now_ms = nke_kext_now_ms();
    now_ns = nke_kext_now_ns();
    lck_mtx_lock(g_nke.lock);
    for (i = 0; i < npieces; i++) {
        uint64_t cid = 0;
        uint32_t more = i == 0 ? 0u : kept ? NKE_CORE_DATA_F_KEEP : NKE_CORE_DATA_F_NO_HOLD;
        r = nke_core_data(g_nke.core, ks->id, dir, pieces[i]->len, nflags | more, paddr, pieces[i],
                          now_ms, now_ns, &cid);
        is_kept[i] = r == NKE_DATA_HELD || r == NKE_DATA_QUEUED;
        if (is_kept[i]) {
            /* Read in complete() under this lock: set before it is released. */
            pieces[i]->chunk_id = cid;
            nke_inject_item_added(ks);
            kept++;
        }
    }
    if (kept)
        nke_kext_timer_arm_locked(nke_core_expire(g_nke.core, nke_kext_now_ms(), nke_kext_now_ns()));
    lck_mtx_unlock(g_nke.lock);

    /* KEEP after a kept first piece, NO_HOLD after a passed one: all pieces
     * are the core's now, or none is. The ones it did not take never
     * reached the injector: their records and references go back here. */
    for (i = 0; i < npieces; i++) {
        if (is_kept[i])
            continue;
        if (kept != 0) { /* cannot happen (the flags above); the bytes would be lost */
            printf("nke: piece %u of a kept write passed: %u bytes lost\n", i, pieces[i]->len);
            (void)OSDecrementAtomic(&chain->refs);
        }
        IOFree(pieces[i], sizeof(*pieces[i]));
        sock_release(so);
    }
    if (kept == 0) {
        IOFree(chain, sizeof(*chain)); /* the stack keeps data and control */
        return 0;
    }
    if (control)
        *control = NULL;
    return EJUSTRETURN;

no_memory:
    /* Nowhere to keep it: pass it. Behind kept data this reorders the
     * stream, loudly; anything else would lose it. */
    lck_mtx_lock(g_nke.lock);
    if (nke_core_order_busy(g_nke.core, ks->id, dir))
        printf("nke: out of memory: %u bytes of socket %u.%u passed out of order\n", total,
               ks->id.slot, ks->id.gen);
    lck_mtx_unlock(g_nke.lock);
    return 0;
}

static errno_t nke_data_in(void *cookie, socket_t so, const struct sockaddr *from, mbuf_t *data,
                           mbuf_t *control, sflt_data_flag_t flags)
{
    return data_common((struct nke_kext_sock *)cookie, so, from, data, control, flags, NKE_DIR_IN);
}

static errno_t nke_data_out(void *cookie, socket_t so, const struct sockaddr *to, mbuf_t *data,
                            mbuf_t *control, sflt_data_flag_t flags)
{
    return data_common((struct nke_kext_sock *)cookie, so, to, data, control, flags, NKE_DIR_OUT);
}

/* connect/bind/listen: the address the stack hands us; the other one is
 * completed at the first data (fill_addrs). Socket unlocked. */
static void report_addrs(struct nke_kext_sock *ks, socket_t so, uint16_t type,
                         const struct sockaddr *local_sa, const struct sockaddr *remote_sa)
{
    struct nke_addr local, remote;
    if (!tracked(ks))
        return;
    addr_from_sockaddr(local_sa, &local);
    addr_from_sockaddr(remote_sa, &remote);
    lck_mtx_lock(g_nke.lock);
    nke_core_addrs(g_nke.core, ks->id, type, local_sa ? &local : NULL, remote_sa ? &remote : NULL,
                   nke_kext_now_ns());
    lck_mtx_unlock(g_nke.lock);
}

/*
 * XNU calls sf_connect_in on the LISTENING socket, just before it creates
 * the connection's socket (uipc_socket2.c sonewconn: sflt_connectin(head),
 * then sonewconn_internal, whose sflt_initsock attaches the new one on the
 * same thread). Reporting it on the listener would overwrite the
 * listener's remote address with each client's; instead the client's
 * address and the listener's process are left for that attach.
 */
static errno_t nke_connect_in(void *cookie, socket_t so, const struct sockaddr *from)
{
    struct nke_kext_sock *ks = (struct nke_kext_sock *)cookie;
    struct nke_sock *s;
    if (!tracked(ks))
        return 0;
    lck_mtx_lock(g_nke.lock);
    s = nke_core_sock(g_nke.core, ks->id);
    if (s != NULL) {
        struct nke_pending_child *slot = &g_nke.pending[0];
        int i;
        for (i = 0; i < NKE_PENDING_CHILDREN; i++) {
            struct nke_pending_child *p = &g_nke.pending[i];
            if (p->thread == current_thread() || p->thread == NULL) {
                slot = p;
                break;
            }
            if (p->at_ms < slot->at_ms)
                slot = p; /* else the oldest */
        }
        slot->thread = current_thread();
        slot->at_ms = nke_kext_now_ms();
        slot->info = s->info;
        addr_from_sockaddr(from, &slot->remote);
    }
    lck_mtx_unlock(g_nke.lock);
    return 0;
}

/* sf_accept runs in the accepting process (uipc_socket.c soacceptfilter,
 * from accept(2)) with both addresses: the socket's owner from now on. */
static errno_t nke_accept(void *cookie, socket_t so_listen, socket_t so,
                          const struct sockaddr *local, const struct sockaddr *remote)
{
    struct nke_kext_sock *ks = (struct nke_kext_sock *)cookie;
    struct nke_sock_info info;
    struct nke_addr l, r;
    struct nke_sock *s;
    if (!tracked(ks))
        return 0;
    memset(&info, 0, sizeof(info));
    self_info(&info);
    addr_from_sockaddr(local, &l);
    addr_from_sockaddr(remote, &r);
    lck_mtx_lock(g_nke.lock);
    s = nke_core_sock(g_nke.core, ks->id);
    if (s != NULL && (s->info.pid != info.pid || s->info.uid != info.uid ||
                      strncmp(s->info.comm, info.comm, NKE_COMM_LEN) != 0))
        nke_core_set_owner(g_nke.core, ks->id, &info, nke_kext_now_ns());
    nke_core_addrs(g_nke.core, ks->id, NKE_NT_CONNECT_IN, local ? &l : NULL, remote ? &r : NULL,
                   nke_kext_now_ns());
    if (ks->kernel_owned) {
        /* a process has it: not an in-kernel socket after all */
        ks->kernel_owned = false;
        nke_core_sock_no_defer(g_nke.core, ks->id, ks->upcall_wait);
    }
    lck_mtx_unlock(g_nke.lock);
    return 0;
}

static errno_t nke_connect_out(void *cookie, socket_t so, const struct sockaddr *to)
{
    report_addrs((struct nke_kext_sock *)cookie, so, NKE_NT_CONNECT_OUT, NULL, to);
    return 0;
}

static errno_t nke_bind(void *cookie, socket_t so, const struct sockaddr *to)
{
    report_addrs((struct nke_kext_sock *)cookie, so, NKE_NT_BOUND, to, NULL);
    return 0;
}

static errno_t nke_listen(void *cookie, socket_t so)
{
    report_addrs((struct nke_kext_sock *)cookie, so, NKE_NT_LISTEN, NULL, NULL);
    return 0;
}

static void option_common(void *cookie, sockopt_t opt, bool is_set)
{
    struct nke_kext_sock *ks = (struct nke_kext_sock *)cookie;
    if (!tracked(ks) || nke_inject_is_internal())
        return; /* our own look at SO_SNDBUF/SO_NWRITE/SO_UPCALLCLOSEWAIT */
    lck_mtx_lock(g_nke.lock);
    nke_core_option(g_nke.core, ks->id, (uint32_t)sockopt_level(opt), (uint32_t)sockopt_name(opt),
                    is_set, nke_kext_now_ns());
    lck_mtx_unlock(g_nke.lock);
}

static errno_t nke_setoption(void *cookie, socket_t so, sockopt_t opt)
{
    option_common(cookie, opt, true);
    return 0;
}

static errno_t nke_getoption(void *cookie, socket_t so, sockopt_t opt)
{
    option_common(cookie, opt, false);
    return 0;
}

/* ---- registration -------------------------------------------------------- */

struct nke_filter_def {
    int domain, type, protocol;
    sf_attach_func attach;
    const char *name;
};

static const struct nke_filter_def k_filters[NKE_NUM_FILTERS] = {
    { PF_INET, SOCK_STREAM, IPPROTO_TCP, attach_tcp4, NKE_BUNDLE_ID ".tcp4" },
    { PF_INET, SOCK_DGRAM, IPPROTO_UDP, attach_udp4, NKE_BUNDLE_ID ".udp4" },
    { PF_INET6, SOCK_STREAM, IPPROTO_TCP, attach_tcp6, NKE_BUNDLE_ID ".tcp6" },
    { PF_INET6, SOCK_DGRAM, IPPROTO_UDP, attach_udp6, NKE_BUNDLE_ID ".udp6" },
};

/* Which handles are registered; written by register/unregister_all only,
 * which the service calls from start/stop (serialized by IOKit). */
static bool g_registered[NKE_NUM_FILTERS];

int nke_sflt_register_all(void)
{
    int i;
    for (i = 0; i < NKE_NUM_FILTERS; i++) {
        struct sflt_filter f;
        errno_t err;
        memset(&f, 0, sizeof(f));
        f.sf_handle = NKE_HANDLE_BASE + (sflt_handle)i;
        /* SFLT_EXTENDED: sf_accept (sf_len must be the extension's size). */
        f.sf_flags = SFLT_GLOBAL | SFLT_EXTENDED;
        f.sf_name = (char *)k_filters[i].name;
        f.sf_unregistered = nke_unregistered;
        f.sf_attach = k_filters[i].attach;
        f.sf_detach = nke_detach;
        f.sf_notify = nke_notify;
        f.sf_data_in = nke_data_in;
        f.sf_data_out = nke_data_out;
        f.sf_connect_in = nke_connect_in;
        f.sf_connect_out = nke_connect_out;
        f.sf_bind = nke_bind;
        f.sf_listen = nke_listen;
        f.sf_setoption = nke_setoption;
        f.sf_getoption = nke_getoption;
        f.sf_len = sizeof(struct sflt_filter_ext);
        f.sf_accept = nke_accept;
        OSIncrementAtomic(&g_nke.filters_registered);
        err = sflt_register(&f, k_filters[i].domain, k_filters[i].type, k_filters[i].protocol);
        if (err) {
            OSDecrementAtomic(&g_nke.filters_registered);
            printf("nke: sflt_register(%s) failed: %d\n", k_filters[i].name, err);
            nke_sflt_unregister_begin();
            nke_sflt_wait_unregistered();
            return err;
        }
        g_registered[i] = true;
    }
    return 0;
}

void nke_sflt_unregister_begin(void)
{
    int i;
    for (i = 0; i < NKE_NUM_FILTERS; i++) {
        if (!g_registered[i])
            continue;
        if (sflt_unregister(NKE_HANDLE_BASE + (sflt_handle)i) != 0)
            printf("nke: sflt_unregister(%s) failed\n", k_filters[i].name);
        g_registered[i] = false;
    }
}

void nke_sflt_wait_unregistered(void)
{
    /* sflt_unregister detached the filter from every socket at once; XNU's
     * cleanup thread calls sf_detach for each and sf_unregistered once the
     * last callback in progress returned. Wait for all four. */
    lck_mtx_lock(g_nke.lock);
    while (g_nke.filters_registered > 0) {
        struct timespec ts = { 0, 100 * 1000 * 1000 };
        msleep((void *)&g_nke.filters_registered, g_nke.lock, PSOCK, "nkeunreg", &ts);
    }
    lck_mtx_unlock(g_nke.lock);
}

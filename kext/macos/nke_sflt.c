/*
 * Socket filter: the four sflt handles (IPv4/IPv6 x TCP/UDP), the core's
 * platform operations and re-injection of deferred data.
 *
 * Locking: see nke_kext.h. data_in/data_out run with the socket unlocked;
 * attach/notify/connect/bind/listen/options and detach run with it locked
 * and take g_nke.lock after it. Injection, sock_retain and sock_release
 * (which take the socket lock; a last release runs detach) therefore never
 * run under g_nke.lock.
 *
 * Socket lifetime: every nke_held takes a socket reference (sock_retain in
 * data_in/out, where the socket is unlocked and in use) and gives it back
 * when it is injected or dropped. So a socket cannot reach its last release,
 * and the detach that follows, while one of its chunks is held or queued for
 * injection: the normal close path never finds injections in flight.
 * Unregistering the filter can detach live sockets, though; XNU calls detach
 * with the socket locked, so waiting there for an injection that needs that
 * lock would deadlock. Instead detach marks the cookie and the last
 * in-flight injection frees it (nke_kext_sock.inflight/detaching).
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
    if (mbuf_copydata(h->data, offset, len, dst) != 0)
        memset(dst, 0, len);
}

/* Frees h and gives back its socket reference. Never under g_nke.lock. */
static void held_free(struct nke_held *h)
{
    socket_t so = h->so;
    if (h->data)
        mbuf_freem(h->data);
    if (h->control)
        mbuf_freem(h->control);
    if (h->staged) {
        struct nke_staged *s = (struct nke_staged *)h->staged;
        IOFree(s, sizeof(*s) + s->total);
    }
    IOFree(h, sizeof(*h));
    if (so)
        sock_release(so);
}

static void op_finish(void *platform, void *sock_ctx, void *data_ctx, uint32_t action,
                      void *staged, uint32_t staged_len, uint32_t reason)
{
    struct nke_held *h = (struct nke_held *)data_ctx;
    h->action = action;
    h->staged = staged;
    h->staged_len = staged_len;
    h->reason = reason;
    /* Queue it, DROP included (dropping releases the socket reference, which
     * may run detach): the caller runs the list after dropping g_nke.lock.
     * inflight keeps h->ks alive until then. */
    h->ks->inflight++;
    h->next = NULL;
    if (g_nke.inject_tail)
        g_nke.inject_tail->next = h;
    else
        g_nke.inject_head = h;
    g_nke.inject_tail = h;
}

static int op_stage(void *platform, void **staged, uint32_t total_len, uint32_t offset,
                    const void *bytes, uint32_t len)
{
    struct nke_staged *s = (struct nke_staged *)*staged;
    if (s == NULL) {
        s = (struct nke_staged *)IOMalloc(sizeof(*s) + total_len);
        if (s == NULL)
            return NKE_ERR_NO_MEMORY;
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

/* ---- injection ----------------------------------------------------------- */

static errno_t tag_mbuf(mbuf_t m)
{
    void *p = NULL;
    errno_t err = mbuf_tag_allocate(m, g_nke.tag_id, NKE_MBUF_TAG_TYPE, sizeof(uint32_t),
                                    MBUF_WAITOK, &p);
    if (err == 0)
        *(uint32_t *)p = 1;
    return err;
}

static bool is_ours(mbuf_t m)
{
    size_t len = 0;
    void *p = NULL;
    return mbuf_tag_find(m, g_nke.tag_id, NKE_MBUF_TAG_TYPE, &len, &p) == 0;
}

/* A fresh packet-header chain holding `len` bytes of `src` (taggable). */
static errno_t build_chain(const void *src, uint32_t len, mbuf_t *out)
{
    mbuf_t m = NULL;
    errno_t err = mbuf_allocpacket(MBUF_WAITOK, len, NULL, &m);
    if (err)
        return err;
    err = mbuf_copyback(m, 0, len, src, MBUF_WAITOK);
    if (err == 0) {
        mbuf_pkthdr_setlen(m, len);
        *out = m;
    } else {
        mbuf_freem(m);
    }
    return err;
}

/* Returns the chain to inject for h (tagged), taking it from h; NULL when
 * there is nothing to send (modified to 0 bytes) or no memory. */
static mbuf_t take_chain(struct nke_held *h, errno_t *err)
{
    mbuf_t m = NULL;
    *err = 0;
    if (h->action == NKE_ACT_ALLOW_MODIFIED) {
        struct nke_staged *s = (struct nke_staged *)h->staged;
        if (h->staged_len == 0)
            return NULL;
        *err = build_chain(s->bytes, h->staged_len, &m);
        if (*err)
            return NULL;
        if (tag_mbuf(m) != 0) {
            mbuf_freem(m);
            *err = ENOMEM;
            return NULL;
        }
        return m;
    }
    m = h->data;
    h->data = NULL;
    if ((mbuf_flags(m) & MBUF_PKTHDR) && tag_mbuf(m) == 0)
        return m;
    /* No packet header to hang the tag on: copy into one that has. */
    {
        mbuf_t copy = NULL;
        uint8_t *tmp = (uint8_t *)IOMalloc(h->len);
        if (tmp == NULL) {
            mbuf_freem(m);
            *err = ENOMEM;
            return NULL;
        }
        *err = mbuf_copydata(m, 0, h->len, tmp);
        if (*err == 0)
            *err = build_chain(tmp, h->len, &copy);
        IOFree(tmp, h->len);
        mbuf_freem(m);
        if (*err == 0 && tag_mbuf(copy) != 0) {
            mbuf_freem(copy);
            *err = ENOMEM;
        }
        return *err ? NULL : copy;
    }
}

static void inject_one(struct nke_held *h)
{
    errno_t err = 0;
    struct nke_kext_sock *ks = h->ks;
    mbuf_t m = NULL, control = NULL;
    /* only a datagram goes to (or comes from) a given address */
    const struct sockaddr *addr = h->has_addr && ks->protocol == NKE_PROTO_UDP
                                      ? (const struct sockaddr *)&h->addr : NULL;
    bool free_cookie = false;

    if (h->action != NKE_ACT_DROP) {
        m = take_chain(h, &err);
        control = h->control;
        h->control = NULL;
    }
    if (m != NULL) {
        /* h->so holds a reference: the socket is alive even if our filter
         * was detached from it meanwhile (unregister). */
        if (h->direction == NKE_DIR_OUT) {
            /* always consumes data and control */
            err = sock_inject_data_out(h->so, addr, m, control, h->sflags);
        } else {
            err = sock_inject_data_in(h->so, addr, m, control, h->sflags);
            if (err) {
                /* left to the caller on error */
                mbuf_freem(m);
                if (control)
                    mbuf_freem(control);
            }
        }
    } else if (control) {
        mbuf_freem(control);
    }
    if (err)
        printf("nke: re-injection (%s) of %u bytes failed: %d\n",
               h->direction == NKE_DIR_OUT ? "out" : "in", h->len, err);

    lck_mtx_lock(g_nke.lock);
    if (err && g_nke.core->client_open && !ks->detaching) {
        /* Tell the client its verdict did not reach the stack. */
        struct nke_nt_chunk_released rec;
        memset(&rec, 0, sizeof(rec));
        rec.hdr.type = NKE_NT_CHUNK_RELEASED;
        rec.hdr.size = sizeof(rec);
        rec.hdr.sock = ks->id;
        rec.hdr.time_ns = nke_kext_now_ns();
        rec.chunk_id = h->chunk_id;
        rec.reason = NKE_RELEASE_INJECT_FAIL;
        rec.size = h->len;
        op_emit(NULL, &rec, sizeof(rec));
    }
    ks->inflight--;
    free_cookie = ks->inflight == 0 && ks->detaching;
    lck_mtx_unlock(g_nke.lock);
    if (free_cookie) /* detach already ran and handed the cookie to us */
        IOFree(ks, sizeof(*ks));
    held_free(h); /* sock_release last: it may run detach */
}

void nke_kext_run_injections(void)
{
    for (;;) {
        struct nke_held *h;
        lck_mtx_lock(g_nke.lock);
        h = g_nke.inject_head;
        if (h) {
            g_nke.inject_head = h->next;
            if (g_nke.inject_head == NULL)
                g_nke.inject_tail = NULL;
        }
        lck_mtx_unlock(g_nke.lock);
        if (h == NULL)
            return;
        inject_one(h);
    }
}

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
 * periodic NKE_NT_STATE while a client is open. */
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
    nke_kext_timer_arm_locked(next);
    lck_mtx_unlock(g_nke.lock);
    nke_kext_run_injections();
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

/* ---- callbacks ----------------------------------------------------------- */

static void nke_unregistered(sflt_handle handle)
{
    OSDecrementAtomic(&g_nke.filters_registered);
    wakeup((void *)&g_nke.filters_registered);
}

static errno_t attach_common(void **cookie, socket_t so, uint8_t family, uint8_t protocol)
{
    struct nke_kext_sock *ks = (struct nke_kext_sock *)IOMalloc(sizeof(*ks));
    struct nke_sock_info info;
    kauth_cred_t cred;
    if (ks == NULL)
        return ENOMEM; /* the stack attaches the socket without us: fail-open */
    memset(ks, 0, sizeof(*ks));
    ks->so = so;
    ks->family = family;
    ks->protocol = protocol;

    memset(&info, 0, sizeof(info));
    info.pid = proc_selfpid();
    cred = kauth_cred_get();
    info.uid = cred ? kauth_cred_getuid(cred) : 0;
    info.family = family;
    info.type = protocol == NKE_PROTO_TCP ? 1 : 2;
    info.protocol = protocol;
    proc_selfname(info.comm, (int)sizeof(info.comm));
    info.comm[NKE_COMM_LEN - 1] = '\0';

    lck_mtx_lock(g_nke.lock);
    ks->id = nke_core_attach(g_nke.core, &info, ks, nke_kext_now_ns());
    lck_mtx_unlock(g_nke.lock);
    OSIncrementAtomic(&g_nke.sockets_attached);
    *cookie = ks;
    return 0;
}

static errno_t attach_tcp4(void **c, socket_t so) { return attach_common(c, so, NKE_AF_INET, NKE_PROTO_TCP); }
static errno_t attach_udp4(void **c, socket_t so) { return attach_common(c, so, NKE_AF_INET, NKE_PROTO_UDP); }
static errno_t attach_tcp6(void **c, socket_t so) { return attach_common(c, so, NKE_AF_INET6, NKE_PROTO_TCP); }
static errno_t attach_udp6(void **c, socket_t so) { return attach_common(c, so, NKE_AF_INET6, NKE_PROTO_UDP); }

static void nke_detach(void *cookie, socket_t so)
{
    struct nke_kext_sock *ks = (struct nke_kext_sock *)cookie;
    if (ks == NULL)
        return;
    bool free_cookie;
    lck_mtx_lock(g_nke.lock);
    ks->detaching = true;
    if (tracked(ks)) {
        /* Held chunks are finished with DROP: queued, like every finish. */
        nke_core_detach(g_nke.core, ks->id, nke_kext_now_ns());
    }
    /* Injections in flight for this socket (only possible when the filter
     * is being unregistered from a live socket) still use the cookie: the
     * last one frees it. We cannot wait for them here: the socket is locked
     * and they need its lock. The timer runs the queue, not us (a
     * sock_release from here could re-enter the socket's teardown). */
    free_cookie = ks->inflight == 0;
    if (!free_cookie)
        nke_kext_timer_arm_locked(0);
    lck_mtx_unlock(g_nke.lock);
    if (free_cookie)
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

static void nke_notify(void *cookie, socket_t so, sflt_event_t event, void *param)
{
    struct nke_kext_sock *ks = (struct nke_kext_sock *)cookie;
    uint32_t ev = map_event(event);
    if (!tracked(ks) || ev == 0)
        return;
    /* The socket is locked here: no sock_getsockname (it locks again). The
     * addresses are completed at the first data (fill_addrs). */
    lck_mtx_lock(g_nke.lock);
    nke_core_event(g_nke.core, ks->id, ev, nke_kext_now_ns());
    lck_mtx_unlock(g_nke.lock);
}

/* A new nke_held for `len` bytes of `chain`, with a socket reference
 * (taken here, where the socket is unlocked). NULL when out of memory. */
static struct nke_held *held_new(struct nke_kext_sock *ks, socket_t so, mbuf_t chain, uint32_t len,
                                 uint8_t dir, sflt_data_flag_t flags, const struct sockaddr *sa)
{
    struct nke_held *h = (struct nke_held *)IOMalloc(sizeof(*h));
    if (h == NULL)
        return NULL;
    memset(h, 0, sizeof(*h));
    sock_retain(so);
    h->so = so;
    h->ks = ks;
    h->data = chain;
    h->len = len;
    h->direction = dir;
    h->sflags = flags;
    if (sa && sa->sa_len <= sizeof(h->addr)) {
        memcpy(&h->addr, sa, sa->sa_len);
        h->has_addr = true;
    }
    return h;
}

/* Queues `chain` for re-injection untouched (after pieces already taken). */
static void queue_pass(struct nke_kext_sock *ks, socket_t so, mbuf_t chain, mbuf_t ctl,
                       uint32_t len, uint8_t dir, sflt_data_flag_t flags)
{
    struct nke_held *h = held_new(ks, so, chain, len, dir, flags, NULL);
    if (h == NULL) {
        /* Nowhere to keep it and the stack no longer has it: lost, loudly. */
        mbuf_freem(chain);
        if (ctl)
            mbuf_freem(ctl);
        printf("nke: out of memory: %u bytes of socket data lost\n", len);
        return;
    }
    h->control = ctl;
    lck_mtx_lock(g_nke.lock);
    op_finish(NULL, ks, h, NKE_ACT_ALLOW, NULL, 0, 0);
    lck_mtx_unlock(g_nke.lock);
}

/* Rules match on local and remote addresses: complete what the locked
 * callbacks could not learn. Socket unlocked here (data_in/data_out). */
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

/* Hands one piece (<= NKE_CHUNK_MAX_BYTES) to the core. Returns the core's
 * result; on HELD the core owns h. */
static int data_piece(struct nke_kext_sock *ks, struct nke_held *h, uint32_t nflags,
                      const struct nke_addr *addr)
{
    uint64_t chunk_id = 0;
    int r;
    lck_mtx_lock(g_nke.lock);
    r = nke_core_data(g_nke.core, ks->id, h->direction, h->len, nflags, addr, h,
                      nke_kext_now_ms(), nke_kext_now_ns(), &chunk_id);
    h->chunk_id = chunk_id;
    if (r == NKE_DATA_HELD) /* make sure the timer fires by the new deadline */
        nke_kext_timer_arm_locked(nke_core_expire(g_nke.core, nke_kext_now_ms(), nke_kext_now_ns()));
    lck_mtx_unlock(g_nke.lock);
    return r;
}

static errno_t data_common(struct nke_kext_sock *ks, socket_t so, const struct sockaddr *sa,
                           mbuf_t *data, mbuf_t *control, sflt_data_flag_t flags, uint8_t dir)
{
    size_t total;
    struct nke_addr addr, *paddr = NULL;
    uint32_t nflags = 0;
    mbuf_t rest;
    bool taken = false; /* some piece left the stack: we return EJUSTRETURN */
    int r;

    if (!tracked(ks) || data == NULL || *data == NULL)
        return 0;
    if (is_ours(*data))
        return 0; /* our own re-injection coming back through the filter */
    /* Sum the chain: a packet header's length is not kept by every path. */
    total = 0;
    for (rest = *data; rest; rest = mbuf_next(rest))
        total += mbuf_len(rest);
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
    fill_addrs(ks, so);
    /* A datagram cannot be split; one larger than a chunk just passes. */
    if (total > NKE_CHUNK_MAX_BYTES && (nflags & NKE_DATA_F_DATAGRAM))
        return 0;

    /*
     * Split the chain into pieces of at most NKE_CHUNK_MAX_BYTES, each its
     * own chunk. The capture decision depends on the flow, not the bytes, so
     * the pieces of one call are normally all held or all passed. Once we
     * have taken any piece (returned EJUSTRETURN for the call), the pieces
     * the core does not hold are re-injected in order through the same queue;
     * one passed for lack of a buffer may overtake a held one (counted by
     * the core in chunks_passed_pool_full; see docs/kext.md).
     */
    rest = *data;
    while (rest != NULL) {
        mbuf_t tail = NULL;
        uint32_t len = total > NKE_CHUNK_MAX_BYTES ? NKE_CHUNK_MAX_BYTES : (uint32_t)total;
        bool whole = !taken && len == total;
        struct nke_held *h;

        if (len < total && mbuf_split(rest, len, MBUF_WAITOK, &tail) != 0) {
            if (!taken)
                return 0; /* nothing taken yet: the stack keeps it all */
            queue_pass(ks, so, rest, NULL, (uint32_t)total, dir, flags);
            break;
        }
        h = held_new(ks, so, rest, len, dir, flags, sa);
        if (h == NULL) {
            if (whole)
                return 0; /* out of memory before taking anything: pass */
            /* already split (or partly taken): keep the order, send it on */
            queue_pass(ks, so, rest, !taken && control ? *control : NULL, len, dir, flags);
        } else {
            if (!taken && control && *control)
                h->control = *control; /* control travels with the first piece */
            r = data_piece(ks, h, nflags, paddr);
            if (r != NKE_DATA_HELD) {
                if (whole) {
                    h->data = NULL; /* the stack keeps data and control */
                    h->control = NULL;
                    held_free(h);
                    return 0;
                }
                /* a piece of a call we took: re-inject it untouched */
                lck_mtx_lock(g_nke.lock);
                op_finish(NULL, ks, h, NKE_ACT_ALLOW, NULL, 0, 0);
                lck_mtx_unlock(g_nke.lock);
            }
        }
        if (!taken) {
            taken = true;
            if (control)
                *control = NULL; /* now carried by the first piece */
        }
        rest = tail;
        total -= len;
    }
    nke_kext_run_injections();
    return EJUSTRETURN;
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

/* connect/bind/listen run with the socket locked, so only the address the
 * stack hands us is reported (sock_getsockname would lock the socket again);
 * the other one is completed at the first data (fill_addrs). */
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

static errno_t nke_connect_in(void *cookie, socket_t so, const struct sockaddr *from)
{
    report_addrs((struct nke_kext_sock *)cookie, so, NKE_NT_CONNECT_IN, NULL, from);
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
    if (!tracked(ks))
        return;
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
        f.sf_flags = SFLT_GLOBAL;
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
    /* Sockets keep our callbacks until each detaches; sf_unregistered runs
     * once the last one has. Wait for all four. */
    lck_mtx_lock(g_nke.lock);
    while (g_nke.filters_registered > 0) {
        struct timespec ts = { 0, 100 * 1000 * 1000 };
        msleep((void *)&g_nke.filters_registered, g_nke.lock, PSOCK, "nkeunreg", &ts);
    }
    lck_mtx_unlock(g_nke.lock);
}

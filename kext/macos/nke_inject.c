/*
 * Re-injection of deferred data: the injector thread and the two other
 * drainers (a socket's own sender, a closing socket's closer). Locking,
 * lock order and the injector's lifetime: nke_kext.h.
 *
 * Why a thread of its own: injecting from inside another socket's filter
 * callback deadlocks in XNU. sosend holds the send buffer's sblock across
 * sflt_data_out (bsd/kern/uipc_socket.c), so a second socket's injection
 * from there sleeps in sblock/sbwait while its own sender may be doing the
 * same the other way round; UDP input holds udbinfo.ipi_lock shared while
 * it delivers a broadcast/multicast datagram to each socket, and a first
 * sendto re-injected on an unbound socket takes it exclusive; the SDK's
 * kpi_socketfilter.h says "Do not wait for data on another socket". The
 * injector holds no lock at all while it injects, and never blocks on a
 * socket: it injects what fits (SO_SNDBUF - SO_NWRITE, kext/core's plan)
 * and retries later. Injecting from our own fresh thread also keeps XNU's
 * 16 KiB kernel stack out of it: nothing is injected from tcp_input's
 * stack any more (the old drain at the end of every data_in did).
 *
 * Every injection copies a slice of the kept bytes into a fresh, tagged
 * packet chain: sosend frees the chain on every error (EWOULDBLOCK and
 * EMSGSIZE included), and the original must survive to be retried. The
 * slice is at most the room in the send buffer, so sosend's atomic check
 * (resid + clen <= sbspace) passes and a blocking socket never sleeps in
 * sbwait for us; an edit longer than SO_SNDBUF goes in several slices.
 *
 * Ownership: an nke_held on a socket's injection queue belongs to that
 * queue; only the socket's drainer (nke_kext_sock.drainer) looks past the
 * queue head or completes it. complete() gives the item back to the core
 * (nke_core_item_done, under the core lock), takes it off the queue (under
 * the injector lock) and frees it with no lock held (sock_release may run
 * detach).
 */
#include "nke_kext.h"

#include <libkern/libkern.h>
#include <libkern/OSAtomic.h>
#include <sys/errno.h>
#include <sys/param.h>
#include <sys/proc.h>
#include <IOKit/IOLib.h>

/* Items one drainer re-injects before letting other sockets have a turn. */
#define NKE_DRAIN_TURN_ITEMS 32u

enum drain_result {
    DRAIN_EMPTY = 0, /* nothing left on the directions asked for */
    DRAIN_WAIT  = 1, /* no room (or no mbufs): retry after *retry_ms */
    DRAIN_MORE  = 2  /* the turn is over, more is waiting */
};

enum step_result { STEP_DONE, STEP_AGAIN, STEP_WAIT };

static void ms_to_ts(uint64_t ms, struct timespec *ts)
{
    ts->tv_sec = (long)(ms / 1000u);
    ts->tv_nsec = (long)(ms % 1000u) * 1000000L;
}

static uint32_t dir_index(uint8_t direction) { return direction == NKE_DIR_IN ? 0u : 1u; }

/* ---- our own getsockopt calls ---------------------------------------------- */

static void internal_mark(bool on)
{
    thread_t self = current_thread();
    int i;
    lck_mtx_lock(g_nke.inject_lock);
    for (i = 0; i < NKE_INTERNAL_THREADS; i++) {
        if (on && g_nke.internal[i] == NULL) {
            g_nke.internal[i] = self;
            break;
        }
        if (!on && g_nke.internal[i] == self) {
            g_nke.internal[i] = NULL;
            break;
        }
    }
    lck_mtx_unlock(g_nke.inject_lock);
    /* a full set only means the client sees one getoption of ours */
}

bool nke_inject_is_internal(void)
{
    thread_t self = current_thread();
    bool found = false;
    int i;
    lck_mtx_lock(g_nke.inject_lock);
    for (i = 0; i < NKE_INTERNAL_THREADS && !found; i++)
        found = g_nke.internal[i] == self;
    lck_mtx_unlock(g_nke.inject_lock);
    return found;
}

errno_t nke_inject_getsockopt(socket_t so, int level, int name, int *value)
{
    int len = (int)sizeof(*value);
    errno_t err;
    *value = 0;
    /* sock_getsockopt runs the filters' sf_getoption (sogetoptlock): ours
     * must not report the kext's own look at the socket to the client. */
    internal_mark(true);
    err = sock_getsockopt(so, level, name, value, &len);
    internal_mark(false);
    return err;
}

/* ---- work list (g_nke.inject_lock) --------------------------------------- */

static void work_add_locked(struct nke_kext_sock *ks)
{
    if (ks->on_work)
        return;
    ks->on_work = true;
    ks->work_next = NULL;
    if (g_nke.work_tail != NULL)
        g_nke.work_tail->work_next = ks;
    else
        g_nke.work_head = ks;
    g_nke.work_tail = ks;
}

static void work_remove_locked(struct nke_kext_sock *ks)
{
    struct nke_kext_sock **pp, *prev = NULL;
    if (!ks->on_work)
        return;
    for (pp = &g_nke.work_head; *pp != NULL; prev = *pp, pp = &(*pp)->work_next) {
        if (*pp == ks) {
            *pp = ks->work_next;
            if (g_nke.work_tail == ks)
                g_nke.work_tail = prev;
            break;
        }
    }
    ks->on_work = false;
    ks->work_next = NULL;
}

static bool drainer_try_locked(struct nke_kext_sock *ks)
{
    if (ks->drainer != NULL)
        return false;
    ks->drainer = current_thread();
    g_nke.drainers++;
    return true;
}

/* Gives the socket's drainer token back. Whatever is still queued goes (or
 * stays) on the work list for the injector. True when the cookie is to be
 * freed now by the caller (detached, nothing refers to it). */
static bool drainer_end_locked(struct nke_kext_sock *ks)
{
    ks->drainer = NULL;
    if (g_nke.drainers > 0)
        g_nke.drainers--;
    wakeup((void *)&ks->drainer); /* a closer waiting for the token */
    if (ks->inj[0].head != NULL || ks->inj[1].head != NULL) {
        work_add_locked(ks);
        wakeup((void *)&g_nke.work_head);
    } else {
        work_remove_locked(ks);
    }
    wakeup((void *)&g_nke.inject_items); /* the unload waits for drainers too */
    return ks->detached && ks->items == 0 && !ks->on_work;
}

/* ---- items ----------------------------------------------------------------- */

void nke_held_free(struct nke_held *h)
{
    socket_t so = h->so;
    if (h->chain != NULL && OSDecrementAtomic(&h->chain->refs) == 1) {
        /* the last piece of its call: the original chain goes */
        mbuf_freem(h->chain->m);
        IOFree(h->chain, sizeof(*h->chain));
    }
    if (h->control != NULL)
        mbuf_freem(h->control);
    if (h->staged != NULL) {
        struct nke_staged *s = (struct nke_staged *)h->staged;
        IOFree(s, sizeof(*s) + s->total);
    }
    IOFree(h, sizeof(*h));
    if (so != NULL)
        sock_release(so); /* last: it may close the socket and run detach */
}

void nke_inject_item_added(struct nke_kext_sock *ks)
{
    lck_mtx_lock(g_nke.inject_lock);
    ks->items++;
    g_nke.inject_items++;
    lck_mtx_unlock(g_nke.inject_lock);
}

static uint32_t chain_length(mbuf_t m)
{
    uint32_t n = 0;
    for (; m != NULL; m = mbuf_next(m))
        n += (uint32_t)mbuf_len(m);
    return n;
}

void nke_inject_enqueue_locked(struct nke_held *h, uint32_t action, void *staged,
                               uint32_t staged_len, uint32_t reason)
{
    struct nke_kext_sock *ks = h->ks;
    struct nke_inject_queue *q;
    uint32_t total;
    h->action = action;
    h->staged = staged;
    h->staged_len = staged_len;
    h->reason = reason;
    total = action == NKE_ACT_DROP ? 0u : action == NKE_ACT_ALLOW_MODIFIED ? staged_len : h->len;
    nke_inject_plan_init(&h->plan, total, h->control != NULL ? chain_length(h->control) : 0u,
                         ks->protocol == NKE_PROTO_UDP);
    lck_mtx_lock(g_nke.inject_lock);
    q = &ks->inj[dir_index(h->direction)];
    h->next = NULL;
    if (q->tail != NULL)
        q->tail->next = h;
    else
        q->head = h;
    q->tail = h;
    ks->inj_bytes[dir_index(h->direction)] += total;
    work_add_locked(ks);
    wakeup((void *)&g_nke.work_head);
    lck_mtx_unlock(g_nke.inject_lock);
}

/* The item is finished (err 0: re-injected or dropped; else lost, and
 * the client told when it knew the chunk). The caller is ks's drainer and
 * h the head of its queue. */
static void complete(struct nke_held *h, errno_t err)
{
    struct nke_kext_sock *ks = h->ks;
    struct nke_inject_queue *q = &ks->inj[dir_index(h->direction)];
    uint32_t left = h->plan.total - h->plan.done;
    if (err != 0)
        printf("nke: re-injection (%s) of %u bytes failed: %d; %u bytes lost\n",
               h->direction == NKE_DIR_OUT ? "out" : "in", h->plan.total, err, left);
    lck_mtx_lock(g_nke.lock);
    if (err != 0 && h->chunk_id != 0 && g_nke.core->client_open) {
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
        if (g_nke.queue == NULL || !nke_kext_queue_enqueue_locked(g_nke.queue, &rec, sizeof(rec)))
            g_nke.core->stats.notifications_lost++;
    }
    nke_core_item_done(g_nke.core, &h->item);
    lck_mtx_unlock(g_nke.lock);

    lck_mtx_lock(g_nke.inject_lock);
    if (q->head == h) {
        q->head = h->next;
        if (q->head == NULL)
            q->tail = NULL;
    }
    ks->inj_bytes[dir_index(h->direction)] -= left;
    if (ks->items > 0)
        ks->items--;
    if (g_nke.inject_items > 0)
        g_nke.inject_items--;
    wakeup((void *)&g_nke.inject_items);
    lck_mtx_unlock(g_nke.inject_lock);
    nke_held_free(h);
}

static errno_t tag_chain(mbuf_t m, const struct nke_held *h)
{
    struct nke_tag t;
    void *p = NULL;
    errno_t err = mbuf_tag_allocate(m, g_nke.tag_id, NKE_MBUF_TAG_TYPE, sizeof(t), MBUF_WAITOK, &p);
    if (err != 0)
        return err;
    t.magic = NKE_TAG_MAGIC;
    t.direction = h->direction;
    t.sock = h->ks->id;
    memcpy(p, &t, sizeof(t));
    return 0;
}

/* A fresh tagged packet chain holding bytes [off, off + len) of what h
 * re-injects (the original slice of its call's chain, or its edit). */
static mbuf_t slice(const struct nke_held *h, uint32_t off, uint32_t len, errno_t *err)
{
    mbuf_t m = NULL, n;
    uint32_t done = 0;
    *err = mbuf_allocpacket(MBUF_WAITOK, len, NULL, &m);
    if (*err != 0)
        return NULL;
    /* mbuf_allocpacket leaves every m_len at 0 (uipc_mbuf.c MBUF_INIT):
     * fill each mbuf to its room and set its length. */
    for (n = m; n != NULL && done < len; n = mbuf_next(n)) {
        uint32_t take = (uint32_t)mbuf_trailingspace(n);
        if (take > len - done)
            take = len - done;
        if (h->action == NKE_ACT_ALLOW_MODIFIED)
            memcpy(mbuf_data(n), ((const struct nke_staged *)h->staged)->bytes + off + done, take);
        else if ((*err = mbuf_copydata(h->chain->m, h->offset + off + done, take, mbuf_data(n))) != 0)
            break;
        mbuf_setlen(n, take);
        done += take;
    }
    if (*err == 0 && done != len)
        *err = ENOBUFS;
    if (*err == 0) {
        mbuf_pkthdr_setlen(m, len);
        *err = tag_chain(m, h);
    }
    if (*err != 0) {
        mbuf_freem(m);
        return NULL;
    }
    return m;
}

/* No room, or no mbufs for the copy: worth waiting for. */
static bool transient(errno_t err) { return err == EWOULDBLOCK || err == ENOBUFS || err == ENOMEM; }

/* One injection for the head item h of its queue. */
static int step(struct nke_held *h, errno_t *err, uint32_t *retry_ms)
{
    const struct sockaddr *addr =
        h->has_addr && h->ks->protocol == NKE_PROTO_UDP ? (const struct sockaddr *)&h->addr : NULL;
    mbuf_t m, ctl = NULL;
    uint32_t len = h->plan.total - h->plan.done;
    int sndbuf = 0, nwrite = 0;

    *err = 0;
    if (h->action == NKE_ACT_DROP || h->plan.done >= h->plan.total)
        return STEP_DONE; /* dropped, or edited down to nothing */
    if (h->direction == NKE_DIR_OUT) {
        int p;
        /* Room in the send buffer now (uipc_socket.c: SO_SNDBUF is
         * sb_hiwat, SO_NWRITE sb_cc). */
        if ((*err = nke_inject_getsockopt(h->so, SOL_SOCKET, SO_SNDBUF, &sndbuf)) != 0 ||
            (*err = nke_inject_getsockopt(h->so, SOL_SOCKET, SO_NWRITE, &nwrite)) != 0)
            return STEP_DONE;
        p = nke_inject_plan_next(&h->plan, sndbuf, nwrite, NKE_INJECT_SLICE_MAX, &len);
        if (p == NKE_PLAN_DONE)
            return STEP_DONE;
        if (p == NKE_PLAN_TOO_BIG) {
            *err = EMSGSIZE; /* a datagram (or its control) larger than SO_SNDBUF never fits */
            return STEP_DONE;
        }
        if (p == NKE_PLAN_WAIT) {
            *retry_ms = nke_inject_plan_no_room(&h->plan);
            return STEP_WAIT;
        }
    }
    m = slice(h, h->plan.done, len, err);
    if (m == NULL) {
        if (!transient(*err))
            return STEP_DONE;
        *retry_ms = nke_inject_plan_no_room(&h->plan);
        return STEP_WAIT;
    }
    if (h->control != NULL && h->plan.done == 0) {
        /* sosend consumes the control whatever happens: inject a copy */
        if ((*err = mbuf_dup(h->control, MBUF_WAITOK, &ctl)) != 0) {
            mbuf_freem(m);
            *retry_ms = nke_inject_plan_no_room(&h->plan);
            return STEP_WAIT;
        }
    }
    if (h->direction == NKE_DIR_OUT) {
        /* Always consumes m and ctl (sosend frees both on error). */
        *err = sock_inject_data_out(h->so, addr, m, ctl, h->sflags);
    } else {
        *err = sock_inject_data_in(h->so, addr, m, ctl, h->sflags);
        if (*err != 0) { /* left to the caller on error (kpi_socketfilter.c) */
            mbuf_freem(m);
            if (ctl != NULL)
                mbuf_freem(ctl);
        }
    }
    if (*err == 0) {
        nke_inject_plan_sent(&h->plan, len);
        if (h->control != NULL) {
            mbuf_freem(h->control);
            h->control = NULL;
        }
        lck_mtx_lock(g_nke.inject_lock);
        h->ks->inj_bytes[dir_index(h->direction)] -= len;
        lck_mtx_unlock(g_nke.inject_lock);
        return h->plan.done >= h->plan.total ? STEP_DONE : STEP_AGAIN;
    }
    if (transient(*err)) {
        *err = 0;
        *retry_ms = nke_inject_plan_no_room(&h->plan);
        return STEP_WAIT;
    }
    return STEP_DONE;
}

/* The head of one of ks's queues (only ks's drainer takes items off). */
static struct nke_held *queue_head(struct nke_kext_sock *ks, uint32_t d)
{
    struct nke_held *h;
    lck_mtx_lock(g_nke.inject_lock);
    h = ks->inj[d].head;
    lck_mtx_unlock(g_nke.inject_lock);
    return h;
}

/* Re-injects the queues of `dirs` (bit 0: in, bit 1: out) of ks, of which
 * the calling thread is the drainer. */
static int drain(struct nke_kext_sock *ks, unsigned dirs, uint32_t max_items, uint32_t *retry_ms)
{
    uint32_t d, n = 0;
    int result = DRAIN_EMPTY;
    for (d = 0; d < 2; d++) {
        if (!(dirs & (1u << d)))
            continue;
        for (;;) {
            struct nke_held *h = queue_head(ks, d);
            errno_t err;
            int r;
            if (h == NULL)
                break;
            if (n++ >= max_items)
                return DRAIN_MORE;
            r = step(h, &err, retry_ms);
            if (r == STEP_AGAIN)
                continue;
            if (r == STEP_WAIT) {
                result = DRAIN_WAIT; /* later items of this direction wait too */
                break;
            }
            complete(h, err);
        }
    }
    return result;
}

/* ---- the injector thread ------------------------------------------------- */

static void injector_main(void *arg, wait_result_t wr)
{
    lck_mtx_lock(g_nke.inject_lock);
    while (!g_nke.injector_stop) {
        struct nke_kext_sock *ks, *pick = NULL;
        uint64_t now = nke_kext_now_ms(), wait_ms = UINT64_MAX;
        uint32_t retry = 0;
        int r;
        for (ks = g_nke.work_head; ks != NULL; ks = ks->work_next) {
            if (ks->drainer != NULL)
                continue; /* its sender or closer is at it; it puts it back */
            if (ks->retry_at_ms <= now) {
                pick = ks;
                break;
            }
            if (ks->retry_at_ms - now < wait_ms)
                wait_ms = ks->retry_at_ms - now;
        }
        if (pick == NULL) {
            struct timespec ts;
            ms_to_ts(wait_ms == UINT64_MAX ? 1000u : wait_ms, &ts);
            (void)msleep((void *)&g_nke.work_head, g_nke.inject_lock, PSOCK, "nkeinject", &ts);
            continue;
        }
        (void)drainer_try_locked(pick);
        work_remove_locked(pick); /* round robin: back on the tail when done */
        lck_mtx_unlock(g_nke.inject_lock);
        r = drain(pick, 3u, NKE_DRAIN_TURN_ITEMS, &retry);
        lck_mtx_lock(g_nke.inject_lock);
        pick->retry_at_ms = r == DRAIN_WAIT ? nke_kext_now_ms() + retry : 0;
        if (drainer_end_locked(pick)) {
            lck_mtx_unlock(g_nke.inject_lock);
            IOFree(pick, sizeof(*pick));
            lck_mtx_lock(g_nke.inject_lock);
        }
    }
    g_nke.injector_exited = true;
    wakeup((void *)&g_nke.injector_exited);
    lck_mtx_unlock(g_nke.inject_lock);
    /* Does not return: a kernel thread terminating itself takes its AST now. */
    (void)thread_terminate(current_thread());
}

int nke_inject_start(void)
{
    g_nke.injector_stop = false;
    g_nke.injector_exited = false;
    if (kernel_thread_start(injector_main, NULL, &g_nke.injector) != KERN_SUCCESS) {
        g_nke.injector = NULL;
        return ENOMEM;
    }
    return 0;
}

void nke_inject_stop(void)
{
    uint64_t t0 = nke_kext_now_ms();
    if (g_nke.injector == NULL)
        return;
    lck_mtx_lock(g_nke.inject_lock);
    /* terminate() let us here with nothing to re-inject; whatever is left
     * (a peer that stopped reading) waits at most NKE_CLOSE_FLUSH_MAX_MS. */
    while (g_nke.inject_items > 0 || g_nke.drainers > 0) {
        struct timespec ts = { 1, 0 };
        (void)msleep((void *)&g_nke.inject_items, g_nke.inject_lock, PSOCK, "nkeunload", &ts);
        if (g_nke.inject_items > 0 || g_nke.drainers > 0)
            printf("nke: unload waits for %u re-injections (%u drainers)\n", g_nke.inject_items,
                   g_nke.drainers);
        if (nke_kext_now_ms() - t0 > NKE_CLOSE_FLUSH_MAX_MS && g_nke.drainers == 0) {
            /* give up on what still waits for room: lost, and said so */
            struct nke_kext_sock *ks;
            while ((ks = g_nke.work_head) != NULL) {
                uint32_t d;
                bool free_ks;
                (void)drainer_try_locked(ks);
                work_remove_locked(ks);
                lck_mtx_unlock(g_nke.inject_lock);
                for (d = 0; d < 2; d++) {
                    struct nke_held *h;
                    while ((h = queue_head(ks, d)) != NULL)
                        complete(h, ETIMEDOUT);
                }
                lck_mtx_lock(g_nke.inject_lock);
                free_ks = drainer_end_locked(ks);
                if (free_ks) {
                    lck_mtx_unlock(g_nke.inject_lock);
                    IOFree(ks, sizeof(*ks));
                    lck_mtx_lock(g_nke.inject_lock);
                }
            }
        }
    }
    g_nke.injector_stop = true;
    wakeup((void *)&g_nke.work_head);
    while (!g_nke.injector_exited)
        (void)msleep((void *)&g_nke.injector_exited, g_nke.inject_lock, PSOCK, "nkeinjstop", NULL);
    lck_mtx_unlock(g_nke.inject_lock);
    thread_deallocate(g_nke.injector);
    g_nke.injector = NULL;
}

void nke_inject_busy(uint32_t *items, uint32_t *drainers)
{
    lck_mtx_lock(g_nke.inject_lock);
    *items = g_nke.inject_items;
    *drainers = g_nke.drainers;
    lck_mtx_unlock(g_nke.inject_lock);
}

bool nke_inject_cookie_detached(struct nke_kext_sock *ks)
{
    bool free_now;
    lck_mtx_lock(g_nke.inject_lock);
    ks->detached = true;
    free_now = ks->items == 0 && ks->drainer == NULL && !ks->on_work;
    lck_mtx_unlock(g_nke.inject_lock);
    return free_now;
}

/* ---- the other two drainers ------------------------------------------------ */

void nke_inject_drain_as_sender(struct nke_kext_sock *ks)
{
    uint32_t retry = 0;
    int r = DRAIN_EMPTY;
    bool over;
    lck_mtx_lock(g_nke.inject_lock);
    if (ks->inj[1].head == NULL || !drainer_try_locked(ks)) {
        /* nothing waits, or the injector has it right now: this write goes
         * behind whatever is queued, it never waits for the injector */
        lck_mtx_unlock(g_nke.inject_lock);
        return;
    }
    lck_mtx_unlock(g_nke.inject_lock);
    for (;;) {
        r = drain(ks, 2u, UINT32_MAX, &retry);
        lck_mtx_lock(g_nke.inject_lock);
        /* Backpressure in the sender's own thread, for bytes on their way
         * to the network only (never for a person's verdict): EJUSTRETURN
         * returned every earlier write at once, so without this a fast
         * sender to a slow peer would queue without bound. */
        over = ks->inj_bytes[1] > NKE_INJECT_BACKLOG_MAX && !ks->closing;
        if (over && r == DRAIN_WAIT) {
            struct timespec ts;
            int e;
            ms_to_ts(retry ? retry : 1u, &ts);
            e = msleep((void *)&ks->retry_at_ms, g_nke.inject_lock, PSOCK | PCATCH, "nkesndq", &ts);
            if (e == EINTR || e == ERESTART)
                over = false; /* a signal: the write goes on, queued */
        }
        lck_mtx_unlock(g_nke.inject_lock);
        if (!over)
            break;
    }
    lck_mtx_lock(g_nke.inject_lock);
    ks->retry_at_ms = r == DRAIN_WAIT ? nke_kext_now_ms() + retry : 0;
    (void)drainer_end_locked(ks); /* the socket is in use: not detached */
    lck_mtx_unlock(g_nke.inject_lock);
}

void nke_inject_flush_for_close(struct nke_kext_sock *ks)
{
    uint64_t deadline = nke_kext_now_ms() + NKE_CLOSE_FLUSH_MAX_MS;
    uint32_t retry = 0;
    lck_mtx_lock(g_nke.inject_lock);
    ks->closing = true;
    wakeup((void *)&ks->retry_at_ms); /* a sender waiting for room gives the token back */
    while (ks->drainer != NULL && nke_kext_now_ms() < deadline) {
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        (void)msleep((void *)&ks->drainer, g_nke.inject_lock, PSOCK, "nkeclose", &ts);
    }
    if (!drainer_try_locked(ks)) {
        lck_mtx_unlock(g_nke.inject_lock);
        printf("nke: close of socket %u.%u: its re-injection is busy; what is queued may be lost\n",
               ks->id.slot, ks->id.gen);
        return;
    }
    lck_mtx_unlock(g_nke.inject_lock);
    /* The closing thread holds no lock and no sblock here (soclose_locked
     * calls sf_notify(closing) before disconnecting, with the socket
     * unlocked): it re-injects what is held for the socket itself, since
     * after this the stack refuses to send (sosendcheck: EPIPE). */
    while (drain(ks, 2u, UINT32_MAX, &retry) != DRAIN_EMPTY) {
        if (nke_kext_now_ms() >= deadline) {
            struct nke_held *h;
            while ((h = queue_head(ks, 1)) != NULL)
                complete(h, ETIMEDOUT); /* the stack will refuse them: lost, and said so */
            break;
        }
        IOSleep(retry ? retry : 1u); /* room comes with the peer's acks */
    }
    lck_mtx_lock(g_nke.inject_lock);
    ks->retry_at_ms = 0;
    (void)drainer_end_locked(ks);
    lck_mtx_unlock(g_nke.inject_lock);
}

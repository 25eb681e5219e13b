/*
 * udp_queue.c: UDP, queued verdicts. Owns every struct udp_state (made by
 * udp_track at socket()), its link, its worker thread and its queue; the
 * UDP halves of send/sendto/sendmsg/sendmmsg/write/writev and of their
 * receive counterparts; and the UDP half of the exit and exec drains
 * (g_udp_drain_lock).
 *
 * Locks (their order: shim.h): udp_state->lock, then g_udp_drain_lock
 * (udp_queued_add) or g_gstate_lock (udp_may_defer_now). g_fd_lock is
 * never taken while a udp_state->lock is held (udp_get takes the ref
 * first).
 */
#include "shim.h"

/* ---- UDP: queued verdicts --------------------------------------------- */
/*
 * Outgoing datagrams (send, sendto, sendmsg, sendmmsg, write, writev) are
 * queued with their DATA on the socket's link and the call returns the byte
 * count at once, as sf_data_out returning EJUSTRETURN lets sendto() return
 * in the kernel; the socket's worker thread reads the verdicts and makes the
 * real sends (the kext's sock_inject_data_out) strictly in seq order, each
 * datagram sent as one datagram (a modified one of its new length, 0
 * included) to the program's destination. Several datagrams await verdicts
 * at once (UDP_WINDOW), so a fast sender pipelines instead of paying one
 * round trip each, and a held datagram blocks no thread.
 *
 * Incoming datagrams stay synchronous: the receiving thread waits for the
 * verdict on the datagram it took (in the kernel that data is not there for
 * it yet either). The worker, the link's only reader, hands it over.
 *
 * One worker thread per UDP socket that had a datagram to judge, not one
 * shared poll loop: a socket whose kernel buffer is full never delays
 * another socket's sends, the thread lives as long as its socket (no
 * shared poll set to rebuild under a global lock) and fork has one thread
 * per socket to forget. The cost, a thread per UDP socket used while
 * nke-emud may defer, is that of one relayed TCP socket.
 *
 * Descriptors: u->link is the program threads' end for DATA (under
 * u->lock; with_link's notes use it too and may close it). The worker owns
 * wlink, its dup of the link and the only one read, and sock, its dup of
 * the program's socket: a datagram still queued when the program closes
 * the socket is still sent (the kernel keeps the socket until the filter
 * is done), and an fd number the program reuses is never written to.
 *
 * Errors of the real send (ECONNREFUSED on a connected socket after an ICMP
 * port unreachable, EMSGSIZE...) come after the call that queued the
 * datagram returned: the last one is kept and returned by the socket's next
 * send call, the way the kernel reports ICMP errors asynchronously.
 *
 * Readiness: the program's fd is the real socket, so POLLOUT says what the
 * kernel's send buffer says, not whether the window has room. A
 * non-blocking sender that meets EAGAIN from a full window and polls for
 * POLLOUT is woken at once and retries until a verdict frees room (it spins
 * only while UDP_WINDOW datagrams await verdicts). A blocking socket's send
 * waits for room with no timeout (SO_SNDTIMEO is not applied to it).
 *
 * Fail open: nke-emud gone, a bad verdict or the link failing makes every
 * queued datagram go as it was, in order; later sends go straight to the
 * kernel. Datagrams queued at exit() or exec are sent by udp_exit_drain
 * (bounded by drain_deadline); at _exit() or a fatal signal they are lost.
 */

/* Datagrams queued per socket (awaiting verdicts, or decided and waiting
 * behind one that is). 32 is half of the filter's 64-buffer pool, so one
 * busy socket never makes another's data pass for want of buffers, and deep
 * enough that a fast sender is paced by nke-emud's throughput, not its
 * round trip. Counted in datagrams: one is at most 64 KiB, so a socket
 * queues at most 2 MiB. */
#define UDP_WINDOW 32u

enum { UDP_ALLOW = 1, UDP_MODIFIED = 2, UDP_DROP = 3 };

/* Datagrams queued by this process and not yet sent or dropped, for the
 * exit drain. protected by g_udp_drain_lock (taken after u->lock). */
static pthread_mutex_t g_udp_drain_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_udp_drain_cond = PTHREAD_COND_INITIALIZER;
static unsigned g_udp_queued;

static void udp_queued_add(int k)
{
    pthread_mutex_lock(&g_udp_drain_lock);
    g_udp_queued += (unsigned)k;
    if (g_udp_queued == 0)
        pthread_cond_broadcast(&g_udp_drain_cond);
    pthread_mutex_unlock(&g_udp_drain_lock);
}

/* Called with u->lock held. Opens the link and reports the socket. */
void udp_attach_locked(struct udp_state *u, int fd)
{
    u->tried = true;
    u->link = link_attach(fd, u->family, NKE_PROTO_UDP, false);
}

static void udp_wake_locked(struct udp_state *u)
{
    if (u->wake >= 0)
        eventfd_write(u->wake, 1);
}

static void udp_dgram_free(struct udp_dgram *d)
{
    free(d->msg);
    free(d->mod);
    free(d->control);
    free(d);
}

/* Fail open (u->lock held): everything not decided goes as it was; IN
 * waiters get ALLOW. The worker closes wlink (it alone uses it) and sends. */
static void udp_fail_open_locked(struct udp_state *u)
{
    SHIM_LOG("nke-emud link lost on a UDP socket: failing open");
    if (u->link >= 0)
        libc_call(close, u->link);
    u->link = -1;
    u->failed = true;
    u->link_full = false;
    for (struct udp_dgram *d = u->head; d; d = d->next)
        if (!d->decided) {
            free(d->mod);
            d->mod = NULL;
            d->mod_len = 0;
            d->action = NKE_ACT_ALLOW;
            d->decided = true;
        }
    for (struct udp_in_wait *w = u->inw; w; w = w->next)
        if (!w->done) {
            free(w->mod);
            w->mod = NULL;
            w->mod_len = 0;
            w->action = NKE_ACT_ALLOW;
            w->done = true;
        }
    pthread_cond_broadcast(&u->cond);
    udp_wake_locked(u);
}

/* Sends, in order and without blocking, every DATA not on the link yet:
 * outgoing datagrams, then recv threads' datagrams (the two directions'
 * seqs are independent). A full link leaves the rest to the worker's
 * POLLOUT; any other failure fails open. u->lock held. */
static void udp_send_pending_locked(struct udp_state *u)
{
    if (u->link_full || u->failed)
        return;
    struct udp_dgram *d = u->head;
    struct udp_in_wait *w = u->inw;
    for (;;) {
        while (d && (d->sent || d->decided))
            d = d->next;
        while (!d && w && (w->sent || w->done))
            w = w->next;
        if (!d && !w)
            return;
        if (u->link < 0) {
            udp_fail_open_locked(u);
            return;
        }
        const uint8_t *m = d ? d->msg : w->msg;
        size_t n = sizeof(struct shim_hdr) + (d ? d->len : w->len);
        ssize_t r;
        do
            r = libc_call(sendto, u->link, m, n, MSG_NOSIGNAL | MSG_DONTWAIT, NULL, 0);
        while (r < 0 && errno == EINTR);
        if (r < 0 && (errno == EAGAIN || errno == ENOBUFS)) {
            u->link_full = true;
            udp_wake_locked(u);
            return;
        }
        if (r < 0) {
            udp_fail_open_locked(u);
            return;
        }
        if (d)
            d->sent = true;
        else
            w->sent = true;
    }
}

/* The real send of one decided datagram on the worker's dup. Returns false
 * when the socket's buffer is full (retry on POLLOUT). u->lock held. */
static bool udp_real_send_locked(struct udp_state *u, struct udp_dgram *d)
{
    if (d->action == NKE_ACT_DROP)
        return true; /* discarded after the program handed it over, like the kext */
    bool mod = d->action == NKE_ACT_ALLOW_MODIFIED;
    struct iovec iov = { mod ? d->mod : d->msg + sizeof(struct shim_hdr), mod ? d->mod_len : d->len };
    struct msghdr m = { .msg_name = d->tolen ? &d->to : NULL, .msg_namelen = d->tolen, .msg_iov = &iov,
                        .msg_iovlen = 1, .msg_control = d->control, .msg_controllen = d->controllen };
    for (;;) {
        if (libc_call(sendmsg, u->sock, &m, d->flags | MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
            return true;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return false;
        u->async_err = errno; /* for the next send call (see above) */
        SHIM_LOG("UDP send after verdict: %s (reported by the next send)", strerror(errno));
        return true;
    }
}

/* Sends every decided datagram at the head of the queue, in order. u->lock
 * held (a MSG_DONTWAIT send never blocks, so holding it is short). */
static void udp_flush_locked(struct udp_state *u)
{
    int done = 0;
    while (u->head && u->head->decided && !u->want_out) {
        struct udp_dgram *d = u->head;
        if (!udp_real_send_locked(u, d)) {
            u->want_out = true;
            break;
        }
        u->head = d->next;
        if (!u->head)
            u->tail = NULL;
        u->nq--;
        done++;
        udp_dgram_free(d);
    }
    if (done) {
        pthread_cond_broadcast(&u->cond); /* window room */
        udp_queued_add(-done);
    }
}

/* Reads every verdict the link has now (worker, u->lock held). A verdict
 * may name any waiting datagram of its direction (the user decides in any
 * order); outgoing ones are applied in seq order by udp_flush_locked. */
static void udp_read_verdicts_locked(struct udp_state *u, uint8_t *msg)
{
    while (u->wlink >= 0 && !u->failed) {
        ssize_t n = libc_call(recvfrom, u->wlink, msg, SHIM_MSG_MAX, MSG_DONTWAIT, NULL, NULL);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n < (ssize_t)sizeof(struct shim_hdr)) {
            udp_fail_open_locked(u);
            return;
        }
        struct shim_hdr h;
        memcpy(&h, msg, sizeof(h));
        struct udp_dgram *d = NULL;
        struct udp_in_wait *w = NULL;
        int v = -1;
        if (h.direction == NKE_DIR_OUT) {
            for (d = u->head; d && !(d->sent && !d->decided && d->seq == h.seq); d = d->next) {}
            if (d)
                v = verdict_piece(&h, msg + sizeof(h), (size_t)n, &d->mod, &d->mod_len);
        } else if (h.direction == NKE_DIR_IN) {
            for (w = u->inw; w && !(w->sent && !w->done && w->seq == h.seq); w = w->next) {}
            if (w)
                v = verdict_piece(&h, msg + sizeof(h), (size_t)n, &w->mod, &w->mod_len);
        }
        if (v < 0) {
            SHIM_LOG("bad UDP verdict (type %u dir %u seq %u): failing open", h.type, h.direction, h.seq);
            udp_fail_open_locked(u);
            return;
        }
        if (v == 0)
            continue;
        if (d) {
            d->action = h.action;
            d->decided = true;
        } else {
            w->action = h.action;
            w->done = true;
            pthread_cond_broadcast(&u->cond);
        }
    }
}

/* The worker: see above. Holds a ref on u; ends once no fd names the socket
 * and nothing is queued, closing its descriptors. */
static void *udp_worker(void *arg)
{
    struct udp_state *u = arg;
    uint8_t *msg = malloc(SHIM_MSG_MAX);
    pthread_mutex_lock(&u->lock);
    if (!msg)
        udp_fail_open_locked(u);
    for (;;) {
        if (u->failed && u->wlink >= 0) {
            libc_call(close, u->wlink);
            u->wlink = -1;
        }
        udp_flush_locked(u);
        if (!u->head && !u->inw && atomic_load(&u->refs) == 1)
            break;
        struct pollfd p[3] = { { u->wake, POLLIN, 0 } };
        int np = 1, li = -1, si = -1;
        if (u->wlink >= 0) {
            li = np;
            p[np++] = (struct pollfd){ u->wlink, (short)(POLLIN | (u->link_full ? POLLOUT : 0)), 0 };
        }
        if (u->want_out) {
            si = np;
            p[np++] = (struct pollfd){ u->sock, POLLOUT, 0 };
        }
        pthread_mutex_unlock(&u->lock);
        int k = libc_call(poll, p, (nfds_t)np, -1);
        pthread_mutex_lock(&u->lock);
        if (k <= 0)
            continue;
        eventfd_t v;
        if (p[0].revents & POLLNVAL) {
            /* The program closed our eventfd (closefrom, a daemon closing
             * every fd): no more wake-ups, so stop judging. */
            u->wake = -1;
            if (!u->failed)
                udp_fail_open_locked(u);
        } else if (p[0].revents) {
            eventfd_read(u->wake, &v);
        }
        if (si >= 0 && p[si].revents)
            u->want_out = false; /* udp_flush_locked tries again */
        if (li >= 0 && u->wlink >= 0 && p[li].revents) {
            if (p[li].revents & (POLLIN | POLLHUP | POLLERR))
                udp_read_verdicts_locked(u, msg);
            if (u->link_full && (p[li].revents & POLLOUT)) {
                u->link_full = false;
                udp_send_pending_locked(u);
            }
        }
    }
    u->worker = false;
    libc_call(close, u->sock);
    if (u->wake >= 0)
        libc_call(close, u->wake);
    if (u->wlink >= 0)
        libc_call(close, u->wlink);
    u->sock = u->wake = u->wlink = -1;
    pthread_mutex_unlock(&u->lock);
    free(msg);
    udp_put(u);
    return NULL;
}

/* Starts fd's worker if none runs (u->lock held). False when it cannot
 * (the caller sends without asking: fail open). */
static bool udp_worker_start_locked(struct udp_state *u, int fd)
{
    if (u->worker)
        return true;
    if (u->failed || u->link < 0 || !sym_fcntl())
        return false;
    /* F_DUPFD_CLOEXEC through libc: our fcntl would track the copies. */
    int sock = fd_high(p_fcntl(fd, F_DUPFD_CLOEXEC, 0));
    int wlink = fd_high(p_fcntl(u->link, F_DUPFD_CLOEXEC, 0));
    int wake = fd_high(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 128 * 1024);
    pthread_t t;
    bool ok = sock >= 0 && wlink >= 0 && wake >= 0;
    if (ok) {
        u->sock = sock;
        u->wlink = wlink;
        u->wake = wake;
        u->worker = true;
        atomic_fetch_add(&u->refs, 1); /* the worker's */
        /* It waits for u->lock, held by our caller, before reading u. */
        ok = pthread_create(&t, &at, udp_worker, u) == 0;
        if (!ok) {
            atomic_fetch_sub(&u->refs, 1);
            u->worker = false;
            u->sock = u->wlink = u->wake = -1;
        }
    }
    pthread_attr_destroy(&at);
    if (!ok) {
        SHIM_LOG("no UDP worker (%s): datagrams of fd %d pass unasked", strerror(errno), fd);
        if (sock >= 0) libc_call(close, sock);
        if (wlink >= 0) libc_call(close, wlink);
        if (wake >= 0) libc_call(close, wake);
    }
    return ok;
}

static bool nonblocking(int fd, int flags)
{
    return (flags & MSG_DONTWAIT) || (libc_call(fcntl, fd, F_GETFL) & O_NONBLOCK);
}

/* An outgoing datagram of a UDP socket. Returns 1 when queued (the call
 * returns n), 0 when the caller sends it to the kernel now (no judging
 * possible and nothing queued ahead of it), -1 with errno set (a full
 * window on a non-blocking call, a previous send's error, no memory). */
static int udp_out(int fd, const void *b, size_t n, int flags, const struct sockaddr *to, socklen_t tl,
                   const void *control, size_t controllen)
{
    struct udp_state *u = udp_get(fd);
    if (!u)
        return 0;
    int rc = 0;
    pthread_mutex_lock(&u->lock);
    if (u->async_err) {
        errno = u->async_err;
        u->async_err = 0;
        rc = -1;
        goto out;
    }
    /* Errors the kernel reports at once stay synchronous: a destination
     * the socket cannot use, or none on an unconnected socket, goes straight
     * to the kernel (a failing send has no order to keep). The peer read
     * here is also the DATA's address. */
    struct sockaddr_storage peer;
    memset(&peer, 0, sizeof(peer));
    if (to && tl) {
        /* An IPv6 socket also sends to IPv4 addresses (dual stack). */
        bool fam_ok = to->sa_family == AF_INET || (to->sa_family == AF_INET6 && u->family == NKE_AF_INET6);
        if (!fam_ok || tl < (to->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in)))
            goto out;
        memcpy(&peer, to, tl < sizeof(peer) ? tl : sizeof(peer));
    } else {
        socklen_t pl = sizeof(peer);
        if (libc_call(getpeername, fd, (struct sockaddr *)&peer, &pl) < 0)
            goto out; /* EDESTADDRREQ from the kernel */
    }
    if (!u->tried)
        udp_attach_locked(u, fd);
    bool judge = n > 0 && n <= NKE_BUFFER_SIZE && udp_may_defer_now();
    if (judge && !u->bound) {
        /* The kernel binds an unbound socket to an ephemeral port at its
         * first send; the real send comes later here, so the bind is done
         * now, the same one (any address, port 0), and getsockname right
         * after sendto shows the port as it would raw. */
        struct sockaddr_storage me;
        socklen_t ml = sizeof(me);
        memset(&me, 0, sizeof(me));
        if (libc_call(getsockname, fd, (struct sockaddr *)&me, &ml) == 0) {
            bool unbound = me.ss_family == AF_INET ? ((struct sockaddr_in *)&me)->sin_port == 0
                         : me.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&me)->sin6_port == 0 : false;
            if (unbound) {
                struct sockaddr_storage any;
                memset(&any, 0, sizeof(any));
                any.ss_family = me.ss_family;
                libc_call(bind, fd, (struct sockaddr *)&any,
                          me.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
            }
            u->bound = true;
        }
    }
    for (;;) {
        judge = judge && u->link >= 0 && !u->failed && udp_worker_start_locked(u, fd);
        if (!judge && !u->head)
            goto out; /* nothing to keep order with: straight to the kernel */
        if (u->nq < UDP_WINDOW)
            break;
        if (nonblocking(fd, flags)) {
            errno = EAGAIN;
            rc = -1;
            goto out;
        }
        pthread_cond_wait(&u->cond, &u->lock);
    }
    struct udp_dgram *d = calloc(1, sizeof(*d));
    uint8_t *msg = d ? malloc(sizeof(struct shim_hdr) + n) : NULL;
    void *ctl = controllen && msg ? malloc(controllen) : NULL;
    if (!msg || (controllen && !ctl)) {
        free(d);
        free(msg);
        errno = ENOBUFS; /* what the kernel says when it has no memory for it */
        rc = -1;
        goto out;
    }
    struct shim_hdr h = { .type = SHIM_DATA, .direction = NKE_DIR_OUT, .len = (uint32_t)n,
                          .flags = SHIM_F_DATAGRAM };
    if (to && tl) {
        d->tolen = tl < sizeof(d->to) ? tl : (socklen_t)sizeof(d->to);
        memcpy(&d->to, to, d->tolen);
    }
    to_nke_addr(&peer, &h.addr);
    if (judge)
        h.seq = d->seq = u->out_seq++;
    else {
        d->decided = true; /* unasked, kept behind the queue for order */
        d->action = NKE_ACT_ALLOW;
    }
    memcpy(msg, &h, sizeof(h));
    memcpy(msg + sizeof(h), b, n);
    d->msg = msg;
    d->len = n;
    d->flags = flags & ~MSG_DONTWAIT;
#ifdef MSG_ZEROCOPY
    d->flags &= ~MSG_ZEROCOPY; /* our copy is freed after the send: the kernel must copy it */
#endif
    if (controllen) {
        memcpy(ctl, control, controllen);
        d->control = ctl;
        d->controllen = controllen;
    }
    if (u->tail)
        u->tail->next = d;
    else
        u->head = d;
    u->tail = d;
    u->nq++;
    udp_queued_add(1);
    if (judge)
        udp_send_pending_locked(u);
    rc = 1;
out:
    pthread_mutex_unlock(&u->lock);
    udp_put(u);
    return rc;
}

/* Asks nke-emud about one incoming datagram and waits for the verdict (only
 * the calling thread). Returns UDP_ALLOW (use the original), UDP_MODIFIED
 * (*mod malloc'd, *modlen bytes; caller frees) or UDP_DROP. Fails open. */
static int udp_in_verdict(int fd, const void *b, size_t n, const struct sockaddr *peer, uint8_t **mod,
                          size_t *modlen)
{
    *mod = NULL;
    *modlen = 0;
    if (n > NKE_BUFFER_SIZE || n == 0)
        return UDP_ALLOW;
    struct udp_state *u = udp_get(fd);
    if (!u)
        return UDP_ALLOW;
    int verdict = UDP_ALLOW;
    pthread_mutex_lock(&u->lock);
    if (!u->tried)
        udp_attach_locked(u, fd);
    if (u->link < 0 || u->failed || !udp_may_defer_now() || !udp_worker_start_locked(u, fd))
        goto out;
    struct udp_in_wait w = { .seq = u->in_seq, .len = n };
    w.msg = malloc(sizeof(struct shim_hdr) + n);
    if (!w.msg)
        goto out;
    u->in_seq++;
    struct shim_hdr h = { .type = SHIM_DATA, .direction = NKE_DIR_IN, .len = (uint32_t)n,
                          .flags = SHIM_F_DATAGRAM, .seq = w.seq };
    if (peer) {
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof(ss));
        memcpy(&ss, peer, peer->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
        to_nke_addr(&ss, &h.addr);
    }
    memcpy(w.msg, &h, sizeof(h));
    memcpy(w.msg + sizeof(h), b, n);
    struct udp_in_wait **tail = &u->inw;
    while (*tail)
        tail = &(*tail)->next;
    *tail = &w;
    udp_send_pending_locked(u);
    while (!w.done)
        pthread_cond_wait(&u->cond, &u->lock);
    for (struct udp_in_wait **pp = &u->inw; *pp; pp = &(*pp)->next)
        if (*pp == &w) {
            *pp = w.next;
            break;
        }
    free(w.msg);
    if (w.action == NKE_ACT_DROP) {
        verdict = UDP_DROP;
        free(w.mod);
    } else if (w.action == NKE_ACT_ALLOW_MODIFIED) {
        verdict = UDP_MODIFIED;
        *mod = w.mod;
        *modlen = w.mod_len;
    } else {
        free(w.mod);
    }
out:
    pthread_mutex_unlock(&u->lock);
    udp_put(u);
    return verdict;
}

pthread_mutex_t *udp_drain_lock(void) { return &g_udp_drain_lock; }

/* After fork: the parent's worker does not exist here and its queued
 * datagrams are the parent's to send. Each of the child's UDP states is
 * reset to "never attached": its first datagram attaches a link of its own
 * (the child's pid). Nothing else runs in the child yet, and the state is
 * consistent: atfork_prepare (fdtable.c) took every lock first. Condition
 * variables are initialised afresh (their waiters were parent threads). */
void udp_atfork_child(void)
{
    static unsigned mark;
    mark++;
    pthread_cond_init(&g_udp_drain_cond, NULL);
    g_udp_queued = 0;
    for (int fd = 0; fd < g_fd_top; fd++) {
        struct udp_state *u = g_udp[fd];
        if (!u || u->fork_mark == mark)
            continue; /* shared by several fds: reset once */
        u->fork_mark = mark;
        pthread_cond_init(&u->cond, NULL);
        while (u->head) {
            struct udp_dgram *d = u->head;
            u->head = d->next;
            udp_dgram_free(d);
        }
        u->tail = NULL;
        u->nq = 0;
        u->inw = NULL; /* the parent's threads' stacks */
        if (u->worker) {
            u->worker = false;
            atomic_fetch_sub(&u->refs, 1);
        }
        int fds[4] = { u->sock, u->wlink, u->wake, u->link };
        for (int i = 0; i < 4; i++)
            if (fds[i] >= 0)
                libc_call(close, fds[i]);
        u->sock = u->wlink = u->wake = u->link = -1;
        u->tried = u->failed = u->link_full = u->want_out = false;
        u->async_err = 0;
    }
}

/* Drain for UDP, called first by shim_dtor and exec_drain: waits until
 * `until` (drain_deadline) until every datagram the process
 * queued is sent or dropped. Unlike relays, sockets still open count too:
 * their queue is this process's alone (a child has none of it). */
void udp_exit_drain(const struct timespec *until, long ms)
{
    pthread_mutex_lock(&g_udp_drain_lock);
    while (g_udp_queued)
        if (pthread_cond_timedwait(&g_udp_drain_cond, &g_udp_drain_lock, until) == ETIMEDOUT) {
            SHIM_LOG("drain: %u UDP datagram(s) still queued after %ld ms; lost", g_udp_queued, ms);
            break;
        }
    pthread_mutex_unlock(&g_udp_drain_lock);
}

void udp_put(struct udp_state *u)
{
    /* The decrement and the worker's "only my ref left?" test (udp_worker)
     * are both made under u->lock, so the worker cannot end and free u
     * between our decrement and our wake-up. */
    pthread_mutex_lock(&u->lock);
    bool last = atomic_fetch_sub(&u->refs, 1) == 1;
    if (!last && u->worker && atomic_load(&u->refs) == 1)
        udp_wake_locked(u); /* no fd names the socket any more: the worker may end */
    if (last && u->link >= 0)
        libc_call(close, u->link); /* last name for the socket: closing the link is its detach */
    pthread_mutex_unlock(&u->lock);
    if (last) {
        while (u->head) { /* only if a worker could never run */
            struct udp_dgram *d = u->head;
            u->head = d->next;
            udp_dgram_free(d);
        }
        pthread_mutex_destroy(&u->lock);
        pthread_cond_destroy(&u->cond);
        free(u);
    }
}

/* socket() made fd: a UDP socket of an IP family gets its state. */
void udp_track(int fd, int domain)
{
    shim_init();
    if (g_enabled != 1 || shim_vforked())
        return;
    struct udp_state *u = calloc(1, sizeof(*u));
    if (!u)
        return;
    pthread_mutex_init(&u->lock, NULL);
    pthread_cond_init(&u->cond, NULL);
    atomic_init(&u->refs, 1);
    u->link = -1;
    u->sock = u->wlink = u->wake = -1;
    u->family = domain == AF_INET6 ? NKE_AF_INET6 : NKE_AF_INET;
    pthread_mutex_lock(&g_fd_lock);
    struct udp_state *old = g_udp[fd];
    __atomic_store_n(&g_udp[fd], u, __ATOMIC_RELEASE);
    fd_table_note_locked(fd);
    pthread_mutex_unlock(&g_fd_lock);
    if (old) /* fd number reused without our close(): forget the stale one */
        udp_put(old);
}

ssize_t udp_sendto(int fd, const void *b, size_t n, int flags, const struct sockaddr *to, socklen_t tl)
{
    if (shim_vforked())
        return libc_call(sendto, fd, b, n, flags, to, tl);
    int q = udp_out(fd, b, n, flags, to, tl, NULL, 0);
    if (q != 0)
        return q < 0 ? -1 : (ssize_t)n;
    return libc_call(sendto, fd, b, n, flags, to, tl);
}

ssize_t udp_sendmsg(int fd, const struct msghdr *m, int flags)
{
    if (shim_vforked())
        return libc_call(sendmsg, fd, m, flags);
    size_t n = 0;
    for (size_t i = 0; i < m->msg_iovlen; i++)
        n += m->msg_iov[i].iov_len;
    uint8_t *flat = malloc(n ? n : 1);
    if (!flat)
        return libc_call(sendmsg, fd, m, flags);
    size_t o = 0;
    for (size_t i = 0; i < m->msg_iovlen; i++) {
        memcpy(flat + o, m->msg_iov[i].iov_base, m->msg_iov[i].iov_len);
        o += m->msg_iov[i].iov_len;
    }
    /* The ancillary data (IP_PKTINFO, UDP_SEGMENT...) goes with the datagram. */
    int q = udp_out(fd, flat, n, flags, m->msg_name, m->msg_namelen, m->msg_control,
                    m->msg_control ? m->msg_controllen : 0);
    free(flat);
    if (q != 0)
        return q < 0 ? -1 : (ssize_t)n;
    return libc_call(sendmsg, fd, m, flags);
}

ssize_t udp_recvfrom(int fd, void *b, size_t n, int flags, struct sockaddr *from, socklen_t *fl)
{
    if (shim_vforked())
        return libc_call(recvfrom, fd, b, n, flags, from, fl);
    uint8_t *tmp = malloc(NKE_BUFFER_SIZE);
    if (!tmp)
        return libc_call(recvfrom, fd, b, n, flags, from, fl);
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        ssize_t r = libc_call(recvfrom, fd, tmp, NKE_BUFFER_SIZE, flags & ~MSG_TRUNC, (struct sockaddr *)&ss, &sl);
        if (r < 0) {
            int e = errno;
            free(tmp);
            errno = e;
            return r;
        }
        uint8_t *mod;
        size_t ml;
        int v = udp_in_verdict(fd, tmp, (size_t)r, (struct sockaddr *)&ss, &mod, &ml);
        if (v == UDP_DROP) {
            if (nonblocking(fd, flags)) {
                free(tmp);
                errno = EAGAIN;
                return -1;
            }
            continue;
        }
        const uint8_t *src = v == UDP_MODIFIED ? mod : tmp;
        size_t len = v == UDP_MODIFIED ? ml : (size_t)r;
        size_t c = len < n ? len : n;
        memcpy(b, src, c);
        if (from && fl) {
            socklen_t cl = *fl < sl ? *fl : sl;
            memcpy(from, &ss, cl);
            *fl = sl;
        }
        free(mod);
        free(tmp);
        return (flags & MSG_TRUNC) ? (ssize_t)len : (ssize_t)c;
    }
}

ssize_t udp_recvmsg(int fd, struct msghdr *m, int flags)
{
    if (shim_vforked())
        return libc_call(recvmsg, fd, m, flags);
    /* The real receive takes the whole datagram (up to the largest UDP
     * payload) with the program's own ancillary buffer and address, so the
     * verdict is on what the kernel received and MSG_TRUNC, msg_controllen
     * and MSG_CTRUNC are the kernel's; only the copy into the program's
     * buffers is capped at their size. */
    size_t cap = 0;
    for (size_t i = 0; i < m->msg_iovlen; i++)
        cap += m->msg_iov[i].iov_len;
    uint8_t *tmp = malloc(NKE_BUFFER_SIZE);
    if (!tmp)
        return libc_call(recvmsg, fd, m, flags);
    for (;;) {
        struct iovec iov = { tmp, NKE_BUFFER_SIZE };
        struct msghdr rm = *m;
        struct sockaddr_storage ss; /* the peer for the DATA when the program wants none */
        if (!m->msg_name) {
            rm.msg_name = &ss;
            rm.msg_namelen = sizeof(ss);
        }
        rm.msg_iov = &iov;
        rm.msg_iovlen = 1;
        ssize_t r = libc_call(recvmsg, fd, &rm, flags & ~MSG_TRUNC);
        if (r < 0) {
            int e = errno;
            free(tmp);
            errno = e;
            return r;
        }
        uint8_t *mod;
        size_t ml;
        int v = udp_in_verdict(fd, tmp, (size_t)r, rm.msg_name, &mod, &ml);
        if (v == UDP_DROP) {
            if (nonblocking(fd, flags)) {
                free(tmp);
                errno = EAGAIN;
                return -1;
            }
            continue;
        }
        const uint8_t *src = v == UDP_MODIFIED ? mod : tmp;
        size_t len = v == UDP_MODIFIED ? ml : (size_t)r;
        size_t left = len < cap ? len : cap, o = 0;
        for (size_t i = 0; i < m->msg_iovlen && left; i++) {
            size_t c = m->msg_iov[i].iov_len < left ? m->msg_iov[i].iov_len : left;
            memcpy(m->msg_iov[i].iov_base, src + o, c);
            o += c;
            left -= c;
        }
        if (m->msg_name)
            m->msg_namelen = rm.msg_namelen;
        m->msg_controllen = rm.msg_controllen;
        m->msg_flags = (rm.msg_flags & ~MSG_TRUNC) | (len > cap ? MSG_TRUNC : 0);
        free(mod);
        free(tmp);
        return (flags & MSG_TRUNC) ? (ssize_t)len : (ssize_t)(len < cap ? len : cap);
    }
}

/* UDP: one verdict per datagram, as sendmsg. Stops at the first failure;
 * like the kernel, returns the count sent, or -1 if the first failed. */
int udp_sendmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags)
{
    if (shim_vforked())
        return libc_call(sendmmsg, fd, vec, vlen, flags);
    unsigned int i;
    for (i = 0; i < vlen; i++) {
        ssize_t r = udp_sendmsg(fd, &vec[i].msg_hdr, flags);
        if (r < 0) {
            if (i == 0)
                return -1;
            break;
        }
        vec[i].msg_len = (unsigned int)r;
    }
    return (int)i;
}

/* UDP: one verdict per datagram, as recvmsg. The first datagram waits as
 * the flags and the socket say; later ones are taken while available
 * (MSG_WAITFORONE, non-blocking) or, for a blocking call, until vlen or the
 * timeout (checked between datagrams, as the kernel does). */
int udp_recvmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags, struct timespec *timeout)
{
    if (shim_vforked())
        return libc_call(recvmmsg, fd, vec, vlen, flags, timeout);
    uint64_t deadline = timeout ? mono_ms() + (uint64_t)timeout->tv_sec * 1000u +
                                      (uint64_t)timeout->tv_nsec / 1000000u
                                : 0;
    int base = flags & ~MSG_WAITFORONE;
    unsigned int i;
    for (i = 0; i < vlen; i++) {
        int f = base;
        if (i > 0 && (flags & MSG_WAITFORONE))
            f |= MSG_DONTWAIT;
        if (i > 0 && timeout) {
            uint64_t now = mono_ms();
            if (now >= deadline)
                break;
            struct pollfd p = { fd, POLLIN, 0 };
            if (!(f & MSG_DONTWAIT) && !nonblocking(fd, f) &&
                libc_call(poll, &p, 1, (int)(deadline - now)) <= 0)
                break;
        }
        ssize_t r = udp_recvmsg(fd, &vec[i].msg_hdr, f);
        if (r < 0) {
            if (i == 0)
                return -1;
            break;
        }
        vec[i].msg_len = (unsigned int)r;
    }
    return (int)i;
}

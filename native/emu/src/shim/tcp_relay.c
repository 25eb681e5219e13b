/*
 * tcp_relay.c: the TCP relay. Owns every struct relay: relay_start swaps
 * the program's fd for its end of a socketpair and starts the relay thread
 * that moves bytes between the other end and the real socket, asking
 * nke-emud for each piece (DATA / VERDICT on the relay's own link); the
 * notes a relay sends ahead of later data (relay_opt_note); and the TCP
 * half of the exit and exec drains (g_drain_lock, g_out_relays).
 *
 * Locks: g_drain_lock is taken before g_fd_lock (exit_drain_open_relays);
 * relay->lock and relay->note_lock are leaves. A relay thread takes its
 * relay's locks and g_drain_lock, never two at once.
 */
#include "shim.h"

/*
 * Exit drain. In the kernel, bytes a program wrote before it exited still go
 * out; here they may sit in a relay thread (read from the socketpair, held by
 * nke-emud) when exit() would kill it. So the shim's destructor waits,
 * bounded, until every relay has finished its outgoing direction: for a
 * socket the program closed, after the EOF; for one still open at exit,
 * once everything the program wrote is sent (exit_drain: the relay ends OUT
 * when nothing is queued or unread in the socketpair). The program's end is
 * not shut down for this: other threads still run during exit() and would
 * get EPIPE/SIGPIPE writing to it. A program that leaves by _exit() (or a
 * signal) runs no destructor: its relays' bytes are lost, as is anything
 * another thread writes after the relay went idle. g_out_open counts relays
 * with out_open set.
 */
static pthread_mutex_t g_drain_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_drain_cond = PTHREAD_COND_INITIALIZER;
static unsigned g_out_open;
/* Every relay with out_open set, for exec_drain (which must reach relays of
 * sockets the program closed too). A relay is on it from relay_start until
 * relay_out_done, while its thread holds a ref. Protected by g_drain_lock. */
static struct relay *g_out_relays;

static void relay_out_done(struct relay *r)
{
    pthread_mutex_lock(&g_drain_lock);
    if (r->out_open) {
        r->out_open = false;
        g_out_open--;
        for (struct relay **pp = &g_out_relays; *pp; pp = &(*pp)->drain_next)
            if (*pp == r) {
                *pp = r->drain_next;
                break;
            }
        r->drain_next = NULL;
        pthread_cond_broadcast(&g_drain_cond);
    }
    pthread_mutex_unlock(&g_drain_lock);
}

/* The relay's answer to an exec drain: idle says nothing the program wrote
 * is still queued, held, in the pipe or unread in the socketpair. Called by
 * the relay thread only while flush_ask is set; takes g_drain_lock. */
static void relay_flush_state(struct relay *r, bool idle)
{
    pthread_mutex_lock(&g_drain_lock);
    if (atomic_load(&r->flush_ask) && r->flushed != idle) {
        r->flushed = idle;
        if (idle)
            pthread_cond_broadcast(&g_drain_cond);
    }
    pthread_mutex_unlock(&g_drain_lock);
}

void relay_put(struct relay *r)
{
    if (atomic_fetch_sub(&r->refs, 1) == 1) {
        libc_call(close, r->real_fd);
        if (r->wake_fd >= 0)
            libc_call(close, r->wake_fd);
        pthread_mutex_destroy(&r->note_lock);
        if (r->st) /* set only when the relay thread never ran */
            munmap((void *)r->st, sizeof(struct shim_state));
        pthread_mutex_destroy(&r->lock);
        pthread_cond_destroy(&r->cond);
        free(r);
    }
}

/* True when nke-emud says no chunk could be held now (or we have no link):
 * the relay then moves bytes itself, with no round trip. */
static bool relay_may_skip(const struct relay *r)
{
    return r->link_fd < 0 || (r->st && __atomic_load_n(&r->st->may_defer, __ATOMIC_ACQUIRE) == 0);
}

/* One piece of one direction's stream, from the read that took it off src
 * until its bytes are written to dst. Owned by its dir_state's queue. */
struct chunk {
    struct chunk *next;
    uint32_t seq;          /* the DATA's seq (unused when never asked) */
    bool sent;             /* DATA is on the link (else still to send) */
    bool decided;          /* verdict known: bytes below are final */
    bool note;             /* a SHIM_OPTION note: msg is sent, nothing written
                            * to dst, not counted in the window */
    uint8_t *msg;          /* shim_hdr + original bytes (owned) */
    size_t len;            /* original bytes at msg + sizeof(shim_hdr) */
    uint8_t *mod;          /* ALLOW_MODIFIED: replacement, being assembled (owned) */
    size_t mod_len;
    uint32_t action;       /* once decided: NKE_ACT_* */
    size_t off;            /* bytes of the final data already written to dst */
    uint64_t t_sent;       /* CLOCK_MONOTONIC ns of the DATA send (stats) */
};

/* Per direction: OUT reads pair_fd and writes real_fd; IN the reverse.
 * Both fds are non-blocking; only the relay thread touches this. */
struct dir_state {
    int src, dst;
    uint32_t nke_dir;
    bool eof;              /* src said EOF */
    bool shut;             /* dst shut down for writing (after eof, all written) */
    bool dead;             /* dst failed: everything for it is discarded */
    bool want_out;         /* dst was full: wait for POLLOUT */
    struct chunk *head, *tail; /* in stream order */
    unsigned nchunks;      /* queued, decided or not (the window) */
    unsigned nwaiting;     /* sent and not yet decided */
    uint32_t next_seq;
    int pipe[2];           /* splice(2) path for unasked bytes; -1 if none */
    size_t pipe_len;       /* bytes in the pipe not yet written to dst. Only
                            * filled while the queue is empty, and the queue
                            * is only fed while it is empty: order is kept. */
};

/* Verdict latency samples for NKE_SHIM_STATS (the bench): us from DATA sent
 * to its verdict received. Per relay thread, written to the file in batches. */
struct lat_stats {
    uint32_t *us;
    size_t n, cap;
};

/* Appends the samples to $NKE_SHIM_STATS, one number (us) per line, and
 * empties the buffer. Called every 512 samples and at the end (a program
 * may exit before its relay threads end, losing at most the last 511). */
static void lat_write(struct lat_stats *ls)
{
    const char *path = getenv("NKE_SHIM_STATS");
    size_t n = ls->n;
    ls->n = 0;
    if (!path || !n)
        return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    char line[32];
    for (size_t i = 0; i < n; i++) {
        int k = snprintf(line, sizeof(line), "%u\n", ls->us[i]);
        if (write(fd, line, (size_t)k) < 0)
            break;
    }
    libc_call(close, fd);
}

static void chunk_free(struct chunk *c)
{
    free(c->msg);
    free(c->mod);
    free(c);
}

/* The window: reading src stops while it is full or the splice pipe holds
 * bytes dst has not taken (backpressure from a slow reader). */
static bool dir_may_read(const struct dir_state *d)
{
    return !d->eof && !d->dead && d->nchunks < SHIM_WINDOW_CHUNKS && d->pipe_len == 0;
}

/* Writes what it can of the pipe, then of every decided chunk at the head,
 * in order, without blocking. Sets want_out when dst is full; on a write
 * error marks the direction dead. After EOF with nothing left, passes the
 * half-close on. */
static void dir_flush(struct dir_state *d)
{
    d->want_out = false;
    while (!d->dead && d->pipe_len) {
        ssize_t w = splice(d->pipe[0], NULL, d->dst, NULL, d->pipe_len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            d->want_out = true;
            return;
        }
        if (w <= 0) {
            d->dead = true;
            break;
        }
        d->pipe_len -= (size_t)w;
    }
    while (d->head && d->head->decided) {
        struct chunk *c = d->head;
        const uint8_t *b = c->action == NKE_ACT_ALLOW_MODIFIED ? c->mod : c->msg + sizeof(struct shim_hdr);
        size_t n = c->action == NKE_ACT_ALLOW_MODIFIED ? c->mod_len : c->action == NKE_ACT_DROP ? 0 : c->len;
        if (c->note)
            n = 0; /* a note has no bytes for dst */
        while (!d->dead && c->off < n) {
            ssize_t w = send(d->dst, b + c->off, n - c->off, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0 && errno == EAGAIN) {
                d->want_out = true;
                return;
            }
            if (w <= 0) {
                d->dead = true;
                break;
            }
            c->off += (size_t)w;
        }
        d->head = c->next;
        if (!d->head)
            d->tail = NULL;
        if (!c->note)
            d->nchunks--;
        chunk_free(c);
    }
    if (d->eof && !d->shut && !d->head && d->pipe_len == 0) {
        /* EOF one way is a half-close the other side must see, once
         * everything read before it is delivered. */
        libc_call(shutdown, d->dst, SHUT_WR);
        d->shut = true;
    }
}

/* Sends the DATA of every chunk not yet on the link, in order, without
 * blocking. False when the link failed (the caller fails open). */
static bool dir_send(struct relay *r, struct dir_state *d, bool *link_full)
{
    bool notes = false;
    for (struct chunk *c = d->head; c; c = c->next) {
        if (c->sent || c->decided)
            continue;
        ssize_t w;
        do
            w = send(r->link_fd, c->msg, sizeof(struct shim_hdr) + c->len, MSG_NOSIGNAL | MSG_DONTWAIT);
        while (w < 0 && errno == EINTR);
        if (w < 0 && (errno == EAGAIN || errno == ENOBUFS)) {
            *link_full = true; /* the rest waits for POLLOUT, keeping order */
            return true;
        }
        if (w < 0)
            return false;
        c->sent = true;
        c->t_sent = mono_ns();
        if (c->note) {
            /* never answered: done once on the link */
            c->action = NKE_ACT_ALLOW;
            c->decided = true;
            notes = true;
        } else {
            d->nwaiting++;
        }
    }
    if (notes)
        dir_flush(d);
    return true;
}

/* Called by the relay thread with r->note_lock held: queues the notes the
 * program's threads left, in order, behind what OUT has read so far, and
 * sends them. Without a link they are dropped (nothing is reported). */
static bool relay_take_notes(struct relay *r, struct dir_state *d, bool *link_full)
{
    unsigned n = r->nnotes;
    r->nnotes = 0;
    if (n == 0 || r->link_fd < 0)
        return true;
    for (unsigned i = 0; i < n; i++) {
        struct chunk *c = calloc(1, sizeof(*c));
        uint8_t *m = c ? malloc(r->notes[i].len) : NULL;
        if (!m) {
            free(c);
            break; /* out of memory: the notes are lost, not the data */
        }
        memcpy(m, r->notes[i].msg, r->notes[i].len);
        c->msg = m;
        c->note = true;
        c->len = r->notes[i].len - sizeof(struct shim_hdr); /* dir_send sends hdr + len */
        if (d->tail)
            d->tail->next = c;
        else
            d->head = c;
        d->tail = c;
    }
    return *link_full || dir_send(r, d, link_full);
}

static void link_lost(struct relay *r, struct dir_state ds[2])
{
    SHIM_LOG("nke-emud link lost: failing open");
    libc_call(close, r->link_fd);
    r->link_fd = -1;
    /* Fail open: every chunk not decided yet goes as it was, in order. */
    for (int i = 0; i < 2; i++) {
        for (struct chunk *c = ds[i].head; c; c = c->next)
            if (!c->decided) {
                free(c->mod);
                c->mod = NULL;
                c->mod_len = 0;
                c->action = NKE_ACT_ALLOW;
                c->decided = true;
            }
        ds[i].nwaiting = 0;
        dir_flush(&ds[i]);
    }
}

/* msg: the relay thread's receive buffer of SHIM_MSG_MAX bytes (not TLS:
 * a large static TLS block shrinks every thread's stack in the program, and
 * node's small-stack threads then fail to start). Reads every verdict the
 * link has now; a verdict may name any waiting chunk of its direction
 * (the client decides in any order), and is applied when all before it are. */
static void link_verdicts(struct relay *r, struct dir_state ds[2], uint8_t *msg, struct lat_stats *ls)
{
    for (;;) {
        ssize_t n = recv(r->link_fd, msg, SHIM_MSG_MAX, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n <= 0 || (size_t)n < sizeof(struct shim_hdr)) {
            link_lost(r, ds);
            return;
        }
        struct shim_hdr h;
        memcpy(&h, msg, sizeof(h));
        struct dir_state *d = h.direction == NKE_DIR_OUT ? &ds[0] : h.direction == NKE_DIR_IN ? &ds[1] : NULL;
        struct chunk *c = NULL;
        if (d)
            for (c = d->head; c && !(c->sent && !c->decided && c->seq == h.seq); c = c->next) {}
        int v = c ? verdict_piece(&h, msg + sizeof(h), (size_t)n, &c->mod, &c->mod_len) : -1;
        if (v < 0) {
            SHIM_LOG("bad verdict (type %u dir %u seq %u): failing open", h.type, h.direction, h.seq);
            link_lost(r, ds);
            return;
        }
        if (v == 0)
            continue;
        c->action = h.action;
        c->decided = true;
        d->nwaiting--;
        if (ls->us) {
                if (ls->n < ls->cap)
                ls->us[ls->n++] = (uint32_t)((mono_ns() - c->t_sent) / 1000u);
            if (ls->n >= 512)
                lat_write(ls);
        }
        if (c == d->head)
            dir_flush(d);
    }
}

#define SPLICE_MAX (1u << 20)
/* Unasked bytes (no round trip: may_defer 0 or no link) with the queue
 * empty: src -> pipe -> dst in the kernel, repeated while both keep up.
 * Returns false when splice does not work for this pair (recv from now on). */
static bool dir_splice(struct dir_state *d)
{
    for (int rounds = 0; rounds < 8 && dir_may_read(d); rounds++) {
        ssize_t n = splice(d->src, NULL, d->pipe[1], NULL, SPLICE_MAX, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return true;
        if (n < 0)
            return false;
        if (n == 0) {
            d->eof = true;
            dir_flush(d);
            return true;
        }
        d->pipe_len += (size_t)n;
        dir_flush(d);
    }
    return true;
}

/* Reads one piece from src and queues it: decided at once (ALLOW) when no
 * round trip is wanted, else with its DATA sent to nke-emud. False when the
 * link failed (the caller fails open). */
static bool dir_read(struct relay *r, struct dir_state *d, uint8_t *buf, bool *link_full)
{
    bool skip = relay_may_skip(r);
    if (skip && !d->head && d->pipe[0] >= 0) {
        if (!dir_splice(d)) {
            libc_call(close, d->pipe[0]);
            libc_call(close, d->pipe[1]);
            d->pipe[0] = d->pipe[1] = -1;
        }
        return true;
    }
    ssize_t n = recv(d->src, buf, SHIM_DATA_MAX, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return true;
    if (n <= 0) {
        d->eof = true;
        dir_flush(d);
        return true;
    }
    if (skip && !d->head) {
        /* Nothing queued: straight through; only a remainder dst would
         * not take now is queued below. */
        ssize_t w;
        do
            w = send(d->dst, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
        while (w < 0 && errno == EINTR);
        if (w < 0 && errno != EAGAIN) {
            d->dead = true;
            return true;
        }
        if (w == n)
            return true;
        if (w > 0) {
            memmove(buf, buf + w, (size_t)(n - w));
            n -= w;
        }
    }
    struct chunk *c = calloc(1, sizeof(*c));
    uint8_t *msg = c ? malloc(sizeof(struct shim_hdr) + (size_t)n) : NULL;
    if (!msg) {
        /* No memory to queue it: deliver it now, blocking only this relay. */
        free(c);
        for (size_t o = 0; o < (size_t)n && !d->dead;) {
            ssize_t w = send(d->dst, buf + o, (size_t)n - o, MSG_NOSIGNAL);
            if (w < 0 && errno == EAGAIN) {
                struct pollfd p = { d->dst, POLLOUT, 0 };
                poll(&p, 1, -1);
            } else if (w <= 0 && errno != EINTR) {
                d->dead = true;
            } else if (w > 0) {
                o += (size_t)w;
            }
        }
        return true;
    }
    struct shim_hdr h = { .type = SHIM_DATA, .direction = d->nke_dir, .len = (uint32_t)n, .seq = d->next_seq };
    memcpy(msg, &h, sizeof(h));
    memcpy(msg + sizeof(h), buf, (size_t)n);
    c->msg = msg;
    c->len = (size_t)n;
    if (skip) {
        c->action = NKE_ACT_ALLOW;
        c->decided = true;
    } else {
        c->seq = d->next_seq++;
    }
    if (d->tail)
        d->tail->next = c;
    else
        d->head = c;
    d->tail = c;
    d->nchunks++;
    if (skip) {
        dir_flush(d);
        return true;
    }
    return dir_send(r, d, link_full);
}

/* Polls without sleeping for up to spin_us while a verdict is awaited and
 * nothing is ready, yielding the CPU between tries (on 2 CPUs the process
 * that decides may need this one). Returns poll's result. */
static int relay_poll(struct pollfd *p, nfds_t np, bool waiting, uint32_t spin_us)
{
    if (waiting && spin_us) {
        uint64_t end = mono_ns() + (uint64_t)spin_us * 1000u;
        do {
            int k = poll(p, np, 0);
            if (k != 0)
                return k;
            sched_yield();
        } while (mono_ns() < end);
    }
    return poll(p, np, -1);
}

/* Exit drain of a socket still open: nothing of OUT is queued, in the
 * splice pipe, or unread in the socketpair (the program's threads are in
 * exit(), so what it wrote is there). */
static bool relay_out_idle(const struct relay *r, const struct dir_state *d)
{
    int unread = 0;
    if (d->head || d->pipe_len)
        return false;
    return ioctl(r->pair_fd, FIONREAD, &unread) < 0 || unread == 0;
}

static void *relay_main(void *arg)
{
    struct relay *r = arg;
    /* Wait for the real connect to finish before moving bytes (non-blocking
     * connect returned EINPROGRESS to the program). */
    struct pollfd cp[2] = { { r->real_fd, POLLOUT, 0 }, { r->wake_fd, POLLIN, 0 } };
    for (;;) {
        int k = poll(cp, r->wake_fd >= 0 ? 2 : 1, -1);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 || cp[0].revents)
            break;
        uint64_t v;
        if (read(r->wake_fd, &v, sizeof(v)) < 0) {} /* EAGAIN: already cleared */
        /* exit() during the connect: the kernel would close the socket
         * unconnected, its unsent bytes with it; the exit need not wait. */
        if (atomic_load(&r->exit_drain))
            relay_out_done(r);
        /* exec during the connect: nothing was sent yet; as at exit, the
         * exec does not wait for the connect. */
        if (atomic_load(&r->flush_ask))
            relay_flush_state(r, true);
    }
    int err = 0;
    socklen_t el = sizeof(err);
    libc_call(getsockopt, r->real_fd, SOL_SOCKET, SO_ERROR, &err, &el);
    pthread_mutex_lock(&r->lock);
    r->connect_done = true;
    r->connect_err = err;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);

    struct dir_state ds[2] = { { .src = r->pair_fd, .dst = r->real_fd, .nke_dir = NKE_DIR_OUT, .pipe = { -1, -1 } },
                               { .src = r->real_fd, .dst = r->pair_fd, .nke_dir = NKE_DIR_IN, .pipe = { -1, -1 } } };
    for (int i = 0; i < 2; i++)
        if (pipe2(ds[i].pipe, O_CLOEXEC | O_NONBLOCK) == 0)
            fcntl(ds[i].pipe[1], F_SETPIPE_SZ, (int)SPLICE_MAX); /* best effort; smaller works */
        else
            ds[i].pipe[0] = ds[i].pipe[1] = -1;
    struct lat_stats ls = { 0 };
    uint8_t *buf = NULL, *vmsg = NULL;
    if (err) {
        SHIM_LOG("connect failed: %s", strerror(err));
        goto out;
    }
    /* Both relay ends non-blocking: this thread never waits on one fd while
     * another has work (the real socket's file description is ours alone
     * since the dup3 in relay_start). */
    fcntl(r->real_fd, F_SETFL, fcntl(r->real_fd, F_GETFL) | O_NONBLOCK);
    fcntl(r->pair_fd, F_SETFL, fcntl(r->pair_fd, F_GETFL) | O_NONBLOCK);
    uint32_t spin_us = r->st ? __atomic_load_n(&r->st->spin_us, __ATOMIC_RELAXED) : 0;
    const char *se = getenv("NKE_SHIM_SPIN_US");
    if (se && *se)
        spin_us = (uint32_t)strtoul(se, NULL, 10);
    if (spin_us > 10000)
        spin_us = 10000;
    if (getenv("NKE_SHIM_STATS") && (ls.us = malloc(512 * sizeof(*ls.us))))
        ls.cap = 512;
    buf = malloc(SHIM_DATA_MAX);
    vmsg = malloc(SHIM_MSG_MAX);
    if (!buf || !vmsg)
        goto out;
    bool link_full = false;
    for (;;) {
        if (ds[0].dead || (ds[0].shut && !ds[0].head))
            relay_out_done(r);
        else if (atomic_load(&r->exit_drain) && relay_out_idle(r, &ds[0]))
            relay_out_done(r); /* exit drain: all the program wrote is out */
        else if (atomic_load_explicit(&r->flush_ask, memory_order_relaxed))
            relay_flush_state(r, relay_out_idle(r, &ds[0])); /* exec drain: OUT stays open */
        bool done = true;
        for (int i = 0; i < 2; i++)
            if (!ds[i].dead && !(ds[i].shut && !ds[i].head))
                done = false;
        if (done)
            break;
        struct pollfd p[6];
        int np = 0, in_i[2] = { -1, -1 }, out_i[2] = { -1, -1 }, li = -1, wi = -1;
        for (int i = 0; i < 2; i++) {
            struct dir_state *d = &ds[i];
            if (dir_may_read(d)) {
                in_i[i] = np;
                p[np++] = (struct pollfd){ d->src, POLLIN, 0 };
            }
            if (d->want_out && !d->dead) {
                out_i[i] = np;
                p[np++] = (struct pollfd){ d->dst, POLLOUT, 0 };
            }
        }
        if (r->link_fd >= 0) {
            li = np;
            p[np++] = (struct pollfd){ r->link_fd, (short)(POLLIN | (link_full ? POLLOUT : 0)), 0 };
        }
        if (np > 0 && r->wake_fd >= 0) {
            wi = np;
            p[np++] = (struct pollfd){ r->wake_fd, POLLIN, 0 };
        }
        if (np == 0) {
            /* Nothing can move: a direction with queued bytes whose dst is
             * dead or whose verdicts can no longer come. Drop them. */
            break;
        }
        bool waiting = ds[0].nwaiting || ds[1].nwaiting;
        if (relay_poll(p, (nfds_t)np, waiting, spin_us) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (li >= 0 && p[li].revents) {
            if (p[li].revents & (POLLIN | POLLHUP | POLLERR))
                link_verdicts(r, ds, vmsg, &ls);
            if (r->link_fd >= 0 && link_full && (p[li].revents & POLLOUT)) {
                link_full = false;
                for (int i = 0; i < 2 && r->link_fd >= 0; i++)
                    if (!dir_send(r, &ds[i], &link_full)) {
                        link_lost(r, ds);
                        link_full = false;
                    }
            }
        }
        if (wi >= 0 && p[wi].revents) {
            uint64_t v;
            if (read(r->wake_fd, &v, sizeof(v)) < 0) {} /* EAGAIN: already cleared */
        }
        for (int i = 0; i < 2; i++) {
            struct dir_state *d = &ds[i];
            if (out_i[i] >= 0 && p[out_i[i]].revents)
                dir_flush(d);
            /* OUT: notes first, then the read, under note_lock: a note left
             * before the program wrote bytes is on the link before them. */
            if (i == 0)
                pthread_mutex_lock(&r->note_lock);
            bool ok = i != 0 || relay_take_notes(r, d, &link_full);
            if (ok && in_i[i] >= 0 && p[in_i[i]].revents && dir_may_read(d))
                ok = dir_read(r, d, buf, &link_full);
            if (i == 0)
                pthread_mutex_unlock(&r->note_lock);
            if (!ok) {
                link_lost(r, ds);
                link_full = false;
            }
        }
    }
out:
    free(buf);
    free(vmsg);
    for (int i = 0; i < 2; i++) {
        while (ds[i].head) {
            struct chunk *c = ds[i].head;
            ds[i].head = c->next;
            chunk_free(c);
        }
        if (ds[i].pipe[0] >= 0) {
            libc_call(close, ds[i].pipe[0]);
            libc_call(close, ds[i].pipe[1]);
        }
    }
    lat_write(&ls);
    free(ls.us);
    if (r->st)
        munmap((void *)r->st, sizeof(struct shim_state));
    r->st = NULL;
    if (r->link_fd >= 0)
        libc_call(close, r->link_fd);
    r->link_fd = -1;
    libc_call(shutdown, r->real_fd, SHUT_RDWR);
    libc_call(close, r->pair_fd);
    relay_out_done(r);
    relay_put(r);
    return NULL;
}

bool is_tcp_inet(int fd, int *family)
{
    int type = 0, dom = 0;
    socklen_t l = sizeof(type);
    if (libc_call(getsockopt, fd, SOL_SOCKET, SO_TYPE, &type, &l) < 0 || type != SOCK_STREAM)
        return false;
    l = sizeof(dom);
    if (libc_call(getsockopt, fd, SOL_SOCKET, SO_DOMAIN, &dom, &l) < 0)
        return false;
    *family = dom;
    return dom == AF_INET || dom == AF_INET6;
}

/* Replaces fd by a relayed socketpair end. Called right after a successful
 * (or in-progress) connect or accept, before the program has seen the fd
 * for readiness. On any failure the fd is left as it was (fail open). */
void relay_start(int fd, bool incoming)
{
    int family;
    shim_init();
    if (g_enabled != 1 || fd < 0 || fd >= MAX_FDS || !is_tcp_inet(fd, &family))
        return;
    uint8_t fam = family == AF_INET6 ? NKE_AF_INET6 : NKE_AF_INET;
    /* A socket attached unconnected (bind, setsockopt before connect) keeps
     * its link and identity: its second ATTACH is the connect. */
    int link = incoming ? -1 : ctl_take_link(fd);
    if (link >= 0 && !link_attach_on(link, fd, fam, NKE_PROTO_TCP, incoming)) {
        libc_call(close, link);
        link = -1;
    }
    if (link < 0)
        link = link_attach(fd, fam, NKE_PROTO_TCP, incoming);
    if (link < 0)
        return; /* nke-emud absent: plain socket */
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
        libc_call(close, link);
        return;
    }
    /* Unix-socket buffers of 256 KiB (the kernel doubles it): enough that the
     * extra hop never starves a bulk transfer, small enough that what is in
     * flight in it stays in cache. Measured on the bench's 1 GiB transfer
     * with the C pair: 4 MiB gave ~0.77x raw, 128-512 KiB ~0.9-1.0x. FORCE
     * works as root; otherwise net.core.wmem_max/rmem_max cap it. */
    for (int i = 0; i < 2; i++) {
        int sz = 256 << 10;
        if (libc_call(setsockopt, sp[i], SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz)) < 0)
            libc_call(setsockopt, sp[i], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
        if (libc_call(setsockopt, sp[i], SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof(sz)) < 0)
            libc_call(setsockopt, sp[i], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
    }
    struct relay *r = calloc(1, sizeof(*r));
    int real = fcntl(fd, F_DUPFD_CLOEXEC, 10);
    if (!r || real < 0) {
        free(r);
        if (real >= 0) libc_call(close, real);
        libc_call(close, sp[0]); libc_call(close, sp[1]); libc_call(close, link);
        return;
    }
    /* The program's end keeps the program's flags on fd (O_NONBLOCK, CLOEXEC). */
    int fl = fcntl(fd, F_GETFL);
    int fdfl = fcntl(fd, F_GETFD);
    fcntl(sp[0], F_SETFL, fl & O_NONBLOCK);
    /* The real socket is driven by poll from the relay thread, non-blocking
     * (relay_main sets it once the connect is done). */
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    pthread_mutex_init(&r->note_lock, NULL);
    r->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); /* -1: no notes, no exit drain of an open socket */
    atomic_init(&r->exit_drain, false);
    atomic_init(&r->refs, 2);
    r->real_fd = real;
    r->pair_fd = sp[1];
    r->link_fd = link;
    r->st = state_map();
    pthread_mutex_lock(&g_fd_lock);
    if (libc_call(dup3, sp[0], fd, (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) {
        pthread_mutex_unlock(&g_fd_lock);
        SHIM_LOG("dup3: %s", strerror(errno));
        libc_call(close, sp[0]); libc_call(close, sp[1]); libc_call(close, link);
        atomic_store(&r->refs, 1);
        relay_put(r); /* closes real, the eventfd, the state mapping */
        return;
    }
    libc_call(close, sp[0]);
    if (g_fds[fd])
        relay_put(g_fds[fd]);
    g_fds[fd] = r;
    pthread_mutex_unlock(&g_fd_lock);
    /* Blocking sends on the relay side: the relay waits, never the program. */
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 256 * 1024);
    pthread_t t;
    atomic_init(&r->flush_ask, false);
    pthread_mutex_lock(&g_drain_lock);
    r->out_open = true;
    g_out_open++;
    r->drain_next = g_out_relays;
    g_out_relays = r;
    pthread_mutex_unlock(&g_drain_lock);
    if (pthread_create(&t, &at, relay_main, r) != 0) {
        relay_out_done(r);
        /* No thread: the bytes would never move. Undo by putting the real
         * socket back at fd. */
        pthread_mutex_lock(&g_fd_lock);
        libc_call(dup3, real, fd, (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0);
        g_fds[fd] = NULL;
        pthread_mutex_unlock(&g_fd_lock);
        libc_call(close, sp[1]); libc_call(close, link);
        atomic_store(&r->refs, 1);
        relay_put(r);
    }
    pthread_attr_destroy(&at);
}

/* Hands a note to fd's relay thread, which owns the link (see struct
 * relay). Only while a user client is open, as for unconnected sockets. */
static void relay_note(struct relay *r, const void *m, size_t n)
{
    if (r->wake_fd < 0 || n > sizeof(r->notes[0].msg) || !client_open_now())
        return;
    pthread_mutex_lock(&r->note_lock);
    bool queued = r->nnotes < RELAY_NOTES_MAX;
    if (queued) {
        r->notes[r->nnotes].len = (uint32_t)n;
        memcpy(r->notes[r->nnotes].msg, m, n);
        r->nnotes++;
    }
    pthread_mutex_unlock(&r->note_lock);
    uint64_t one = 1;
    if (queued && write(r->wake_fd, &one, sizeof(one)) < 0) {} /* EAGAIN: a wake is pending anyway */
}

void relay_opt_note(struct relay *r, int level, int name, bool is_set)
{
    struct shim_option m = { .hdr = { .type = SHIM_OPTION, .len = 0 }, .level = level, .name = name,
                             .is_set = is_set ? 1u : 0u };
    relay_note(r, &m, sizeof(m));
}

/* Asks every relay still named by an fd of the program to end its outgoing
 * direction once idle (exit_drain) and wakes it. Called with g_drain_lock
 * held; takes g_fd_lock (order: drain, then fd). In a forked child the
 * table is empty (atfork_child): a child's exit drains nothing of the
 * parent's. Returns how many relays were asked. */
static unsigned exit_drain_open_relays(void)
{
    unsigned n = 0;
    uint64_t one = 1;
    pthread_mutex_lock(&g_fd_lock);
    for (int fd = 0; fd < MAX_FDS; fd++) {
        struct relay *r = g_fds[fd];
        if (!r || !r->out_open || r->wake_fd < 0 || atomic_exchange(&r->exit_drain, true))
            continue;
        if (write(r->wake_fd, &one, sizeof(one)) < 0) {} /* EAGAIN: a wake is pending anyway */
        n++;
    }
    pthread_mutex_unlock(&g_fd_lock);
    return n;
}


/* The real connect's result for the program's getsockopt(SO_ERROR): the
 * program polled its socketpair end writable; the real connect may still be
 * in flight, so this waits for it. SO_ERROR is read-and-clear. */
int relay_connect_result(struct relay *r)
{
    pthread_mutex_lock(&r->lock);
    while (!r->connect_done)
        pthread_cond_wait(&r->cond, &r->lock);
    int err = r->connect_err;
    r->connect_err = 0;
    pthread_mutex_unlock(&r->lock);
    return err;
}

/* After fork the child has no relay threads; its copies of the relay fds
 * would keep the parent's connections open, so they are closed. The child's
 * program fds still reach the parent's relays (shared socketpair). */
void relay_atfork_child(void)
{
    /* The parent's relay threads do not exist here: nothing to drain. */
    pthread_mutex_init(&g_drain_lock, NULL);
    pthread_cond_init(&g_drain_cond, NULL);
    g_out_open = 0;
    g_out_relays = NULL; /* the parent's relays, never reached from here */
    for (int fd = 0; fd < MAX_FDS; fd++) {
        struct relay *r = g_fds[fd];
        if (!r)
            continue;
        g_fds[fd] = NULL; /* the struct is the parent's thread's; left alone */
        /* Each relay's descriptors are distinct numbers and nothing opened
         * since fork, so closing one twice only yields EBADF. */
        libc_call(close, r->real_fd);
        libc_call(close, r->pair_fd);
        if (r->link_fd >= 0)
            libc_call(close, r->link_fd);
        if (r->wake_fd >= 0)
            libc_call(close, r->wake_fd);
    }
}

/* The TCP half of shim_dtor (see "Exit drain" above), bounded by `until`. */
void relay_exit_drain(const struct timespec *until, long ms)
{
    pthread_mutex_lock(&g_drain_lock);
    if (g_out_open == 0) {
        pthread_mutex_unlock(&g_drain_lock);
        return;
    }
    unsigned asked = exit_drain_open_relays();
    SHIM_LOG("exit: waiting for %u relay(s), %u of sockets still open", g_out_open, asked);
    while (g_out_open > 0) {
        if (pthread_cond_timedwait(&g_drain_cond, &g_drain_lock, until) == ETIMEDOUT) {
            SHIM_LOG("exit: %u relay(s) still sending after %ld ms; the rest is lost", g_out_open, ms);
            break;
        }
    }
    pthread_mutex_unlock(&g_drain_lock);
}

/* The TCP half of exec_drain (exec.c): asks every relay with OUT open for
 * an empty OUT and waits for it, bounded by `until`. */
void relay_exec_drain(const struct timespec *until, long ms)
{
    uint64_t one = 1;
    unsigned asked = 0, left = 0;
    pthread_mutex_lock(&g_drain_lock);
    /* (b) Ask every relay with OUT open, under g_drain_lock: the list and
     * flushed are protected by it; wake_fd stays open while the relay is on
     * the list (its thread's ref). A relay with no eventfd cannot be woken
     * and is not waited for. */
    for (struct relay *r = g_out_relays; r; r = r->drain_next) {
        if (r->wake_fd < 0)
            continue;
        r->flushed = false;
        atomic_store(&r->flush_ask, true);
        if (write(r->wake_fd, &one, sizeof(one)) < 0) {} /* EAGAIN: a wake is pending anyway */
        asked++;
    }
    for (;;) {
        left = 0;
        for (struct relay *r = g_out_relays; r; r = r->drain_next)
            if (atomic_load(&r->flush_ask) && !r->flushed)
                left++;
        if (!left || pthread_cond_timedwait(&g_drain_cond, &g_drain_lock, until) == ETIMEDOUT)
            break;
    }
    if (left)
        SHIM_LOG("exec: %u of %u relay(s) still sending after %ld ms; the rest is lost if the exec succeeds",
                 left, asked, ms);
    /* The exec may fail: the relays go on as before. */
    for (struct relay *r = g_out_relays; r; r = r->drain_next) {
        atomic_store(&r->flush_ask, false);
        r->flushed = false;
    }
    pthread_mutex_unlock(&g_drain_lock);
}

/*
 * readiness.c: the program's poll, select and epoll waits, kept in the
 * kernel's order of events.
 *
 * A relayed socket's events (a peer's FIN, its bytes) reach the program's
 * end of the socketpair only when the relay loop has moved them; a socket
 * the shim does not relay (a listening socket, a pipe, a UDP socket) is
 * ready the moment the kernel says so. When the loop lags (a loaded
 * machine: it waits for a CPU), a program could act on a later event
 * before an earlier one it cannot see yet: accept a new connection before
 * it reads the EOF of a client that closed first. redis then still counts
 * the closed client against --maxclients (the kernel would have woken it
 * with the EOF first, in a pass of its event loop of its own).
 *
 * So when a wait returns a descriptor the relay does not carry, it waits
 * for the loop to handle the events it has not handled yet, if any
 * (relay_catch_up), and looks again either way: the loop may also have
 * caught up between the kernel's taking the wait's events and this check
 * (a wait that returns only relayed ones does not wait: among those the
 * loop's order is the kernel's). And
 * when the program's ready descriptors are both relayed ones and others
 * (the loop may have caught up before the program got a CPU), it gets the
 * relayed ones now and the others from its next call: what the relay
 * delivers is older than it looks, and a kernel may always report an
 * event a moment later.
 *  - epoll: the others are kept for the same thread's next call on that
 *    epoll (edge-triggered or one-shot ones are never lost). A call that
 *    hands kept events over keeps none: an event waits one call at most.
 *    An event of a descriptor closed (or dup2'ed over) since it was kept
 *    is dropped: the kernel removed that registration with the close.
 *    Which registration is which descriptor: epoll_ctl notes it (exact
 *    for every registration but a third epoll of one descriptor or a full
 *    probe path; one the tables do not know counts as not relayed, and its
 *    event then keeps the kernel's order with the others, so a relayed
 *    one may again come after an accept: see the tables below).
 *  - poll/ppoll: level-triggered, so the others are simply left to the
 *    next call; never two calls in a row.
 *  - select/pselect: level-triggered as poll, the same rule (the sets the
 *    program passed are copied before the wait, for the second look).
 *  - epoll_pwait2 is epoll_pwait with a timespec.
 * Bytes held for a verdict stay held: this waits for the relay loop, never
 * for nke-emud or the user client.
 * The loop's thread and the UDP workers call libc directly (libc_call).
 *
 * Locks: g_orphan_lock alone (events of threads that exited, taken by the
 * next call on their epoll; shim.h lock order 6). Kept events are the
 * calling thread's own (thread-local);
 * the registration table is written and read with relaxed atomics (a torn
 * entry is a wrong guess, see above). fork needs nothing: the child has
 * its parent's epolls, registrations and the forking thread's kept events.
 */
#include "shim.h"

/* ---- which descriptor a registration is (epoll_ctl) ---------------------- */

/*
 * An event carries the registration's data, not its descriptor. Most
 * programs put the descriptor in data.fd (python, redis, libuv) and leave
 * the upper 32 bits of data.u64 as they were on the stack, so data is
 * not a key that maps to a descriptor by itself; others put a pointer in
 * it (nginx). Two tables:
 *  - per descriptor, its registrations (epoll, data), two epolls at most
 *    (a third replaces the second): exact, written by epoll_ctl, cleared
 *    by EPOLL_CTL_DEL and by close;
 *  - for data that is not the descriptor, an open-addressing table from
 *    (epoll, data) to the descriptor, each hit checked against the first
 *    table (an entry that fails the check is stale and may be reused).
 * A direct-mapped (epoll, data) table alone forgot one of two colliding
 * registrations: with python's stack garbage in the upper bits, a round
 * of 40 connections collided about one time in five, the forgotten
 * socket's EOF counted as not relayed and was reported with the listening
 * socket, after it (eof-latency.test.js). Lookups take no lock; entries
 * are written with relaxed atomics behind a release of their epoll field
 * (a torn read is a wrong guess: it only changes which call reports an
 * event).
 */
struct fdreg {
    atomic_int epfd; /* epfd + 1; 0: none, -1: being written */
    atomic_ullong data;
};
static struct fdreg g_fdregs[MAX_FDS][2];

#define REG_SLOTS 16384 /* (epoll, data) -> fd for data that is not the fd */
#define REG_PROBES 32
struct reg {
    atomic_ullong data;
    atomic_int epfd; /* epfd + 1; 0: never used, -1: being written */
    atomic_int fd;
};
static struct reg g_regs[REG_SLOTS];

static unsigned reg_slot(int epfd, uint64_t data)
{
    uint64_t h = (data ^ ((uint64_t)(unsigned)epfd << 32)) * 0x9E3779B97F4A7C15ull;
    return (unsigned)(h >> 50) & (REG_SLOTS - 1);
}

/* True when fd is registered on epfd with data (first table). */
static bool fdreg_has(int epfd, uint64_t data, int fd)
{
    if (fd < 0 || fd >= MAX_FDS)
        return false;
    for (int k = 0; k < 2; k++) {
        struct fdreg *f = &g_fdregs[fd][k];
        if (atomic_load_explicit(&f->epfd, memory_order_acquire) == epfd + 1 &&
            atomic_load_explicit(&f->data, memory_order_relaxed) == data &&
            atomic_load_explicit(&f->epfd, memory_order_relaxed) == epfd + 1)
            return true;
    }
    return false;
}

static void fdreg_set(int epfd, int fd, uint64_t data)
{
    if (fd < 0 || fd >= MAX_FDS)
        return;
    struct fdreg *f = &g_fdregs[fd][1];
    for (int k = 1; k >= 0; k--) { /* the entry of this epoll, else a free one, else the second */
        int e = atomic_load_explicit(&g_fdregs[fd][k].epfd, memory_order_relaxed);
        if (e == epfd + 1) {
            f = &g_fdregs[fd][k];
            break;
        }
        if (e == 0)
            f = &g_fdregs[fd][k];
    }
    atomic_store_explicit(&f->epfd, -1, memory_order_relaxed);
    atomic_store_explicit(&f->data, data, memory_order_relaxed);
    atomic_store_explicit(&f->epfd, epfd + 1, memory_order_release);
}

static void fdreg_clear(int epfd, int fd)
{
    if (fd < 0 || fd >= MAX_FDS)
        return;
    for (int k = 0; k < 2; k++)
        if (epfd < 0 || atomic_load_explicit(&g_fdregs[fd][k].epfd, memory_order_relaxed) == epfd + 1)
            atomic_store_explicit(&g_fdregs[fd][k].epfd, 0, memory_order_release);
}

/* Notes (epfd, data) -> fd in the second table: the slot already naming
 * it, else the first free or stale one on its probe path. */
static void reg_note(int epfd, int fd, uint64_t data)
{
    unsigned h = reg_slot(epfd, data);
    for (int i = 0; i < REG_PROBES; i++) {
        struct reg *g = &g_regs[(h + (unsigned)i) & (REG_SLOTS - 1)];
        int e = atomic_load_explicit(&g->epfd, memory_order_acquire);
        uint64_t d = atomic_load_explicit(&g->data, memory_order_relaxed);
        bool same = e == epfd + 1 && d == data;
        bool reusable = e == 0 || (e > 0 && !fdreg_has(e - 1, d, atomic_load_explicit(&g->fd, memory_order_relaxed)));
        if (!same && !reusable)
            continue;
        if (!atomic_compare_exchange_strong_explicit(&g->epfd, &e, -1, memory_order_acq_rel, memory_order_relaxed))
            continue; /* another thread took it meanwhile */
        atomic_store_explicit(&g->data, data, memory_order_relaxed);
        atomic_store_explicit(&g->fd, fd, memory_order_relaxed);
        atomic_store_explicit(&g->epfd, epfd + 1, memory_order_release);
        return;
    }
    /* no room on the path: its events count as not relayed (a guess) */
}

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    int rc = libc_call(epoll_ctl, epfd, op, fd, ev);
    if (rc == 0 && ev && (op == EPOLL_CTL_ADD || op == EPOLL_CTL_MOD)) {
        fdreg_set(epfd, fd, ev->data.u64);
        if ((uint32_t)ev->data.u64 != (uint32_t)fd)
            reg_note(epfd, fd, ev->data.u64);
    } else if (rc == 0 && op == EPOLL_CTL_DEL) {
        fdreg_clear(epfd, fd);
    }
    return rc;
}

/* The descriptor an event's registration names, as far as the tables
 * know (-1: not known). */
static int event_fd(int epfd, const struct epoll_event *e)
{
    uint64_t data = e->data.u64;
    int cand = (int)(uint32_t)data; /* data.fd */
    if (fdreg_has(epfd, data, cand))
        return cand;
    unsigned h = reg_slot(epfd, data);
    for (int i = 0; i < REG_PROBES; i++) {
        struct reg *g = &g_regs[(h + (unsigned)i) & (REG_SLOTS - 1)];
        int ge = atomic_load_explicit(&g->epfd, memory_order_acquire);
        if (ge == 0)
            return -1; /* the end of the probe path */
        if (ge != epfd + 1 || atomic_load_explicit(&g->data, memory_order_relaxed) != data)
            continue;
        int fd = atomic_load_explicit(&g->fd, memory_order_relaxed);
        if (fdreg_has(epfd, data, fd))
            return fd;
    }
    return -1;
}

/* True when the event's registration is (as far as the tables know) a
 * relayed socket's program end. */
static bool event_relayed(int epfd, const struct epoll_event *e)
{
    int fd = event_fd(epfd, e);
    return fd >= 0 && __atomic_load_n(&g_fds[fd], __ATOMIC_RELAXED) != NULL;
}

static bool fd_relayed(int fd)
{
    return fd >= 0 && fd < MAX_FDS && __atomic_load_n(&g_fds[fd], __ATOMIC_RELAXED) != NULL;
}

/* ---- epoll: events kept for the next call ---------------------------------- */

/* The epoll is known by its number's generation too (every epoll has the
 * same inode): a number closed and reused for another epoll gets none of
 * them. */
#define KEPT_EPOLLS 4
struct kept {
    bool used;
    int epfd;
    unsigned gen;
    int n;
    struct epoll_event *ev; /* n events (owned) */
    /* Per event, the descriptor its registration names (-1: not known) and
     * that number's generation then: an event of a descriptor closed
     * meanwhile is dropped when taken (the kernel removes a closed
     * descriptor's registration; reporting it would be spurious, and a
     * number reused since is another file). Owned, n each. */
    int *fd;
    unsigned *fd_gen;
};
static __thread struct kept t_kept[KEPT_EPOLLS];
static atomic_uint g_fd_gen[MAX_FDS]; /* bumped when the number is closed */

void readiness_closed(int fd)
{
    if (fd >= 0 && fd < MAX_FDS) {
        atomic_fetch_add_explicit(&g_fd_gen[fd], 1, memory_order_relaxed);
        fdreg_clear(-1, fd); /* the kernel drops the registrations with the file */
    }
}
static __thread int t_nkept;

/* Events a thread kept and never took because it exited: any thread's next
 * call on that epoll takes them (an edge-triggered or one-shot event is
 * reported once by the kernel; left with a dead thread it was lost). A
 * call already waiting when the thread exits is not woken for them: they
 * come with the next call that starts. A list
 * of heap copies; g_norphans lets a call skip the lock when it is empty. */
struct orphan {
    struct orphan *next;
    struct kept k;
};
static pthread_mutex_t g_orphan_lock = PTHREAD_MUTEX_INITIALIZER; /* protects g_orphans */
static struct orphan *g_orphans;
static atomic_int g_norphans;
static pthread_key_t g_kept_key;
static pthread_once_t g_kept_once = PTHREAD_ONCE_INIT;
static __thread bool t_kept_keyed;

pthread_mutex_t *readiness_orphan_lock(void) { return &g_orphan_lock; }

/* The exiting thread's kept events go to the orphan list (a key's
 * destructor runs while the thread's own variables still exist). */
static void kept_orphan(void *unused)
{
    (void)unused;
    for (int i = 0; i < KEPT_EPOLLS && t_nkept; i++) {
        struct kept *k = &t_kept[i];
        if (!k->used)
            continue;
        /* bounded: orphans of epolls nobody waits on again are never taken */
        struct orphan *o = atomic_load_explicit(&g_norphans, memory_order_relaxed) < 64 ? malloc(sizeof(*o)) : NULL;
        if (o) {
            o->k = *k;
            pthread_mutex_lock(&g_orphan_lock);
            o->next = g_orphans;
            g_orphans = o;
            atomic_fetch_add_explicit(&g_norphans, 1, memory_order_relaxed);
            pthread_mutex_unlock(&g_orphan_lock);
        } else {
            free(k->ev);
            free(k->fd);
            free(k->fd_gen);
        }
        k->used = false;
        t_nkept--;
    }
}

static void kept_key_make(void) { (void)pthread_key_create(&g_kept_key, kept_orphan); }

/* Moves an orphan of epfd into *out (the caller's, as its own kept events
 * are). False when there is none. */
static bool orphan_take(int epfd, struct kept *out)
{
    if (!atomic_load_explicit(&g_norphans, memory_order_relaxed))
        return false;
    bool found = false;
    pthread_mutex_lock(&g_orphan_lock);
    for (struct orphan **pp = &g_orphans; *pp; pp = &(*pp)->next)
        if ((*pp)->k.epfd == epfd) {
            struct orphan *o = *pp;
            *pp = o->next;
            *out = o->k;
            free(o);
            atomic_fetch_sub_explicit(&g_norphans, 1, memory_order_relaxed);
            found = true;
            break;
        }
    pthread_mutex_unlock(&g_orphan_lock);
    return found;
}

#define LOOK_MAX 256 /* events a second look takes (the rest: next call) */

static int find_event(const struct epoll_event *ev, int n, uint64_t data)
{
    for (int i = 0; i < n; i++)
        if (ev[i].data.u64 == data)
            return i;
    return -1;
}

/* Adds the events of b not in a (by registration) to a, or-ing the bits of
 * those in both; at most cap in all. The count. */
static int merge_events(struct epoll_event *a, int n, int cap, const struct epoll_event *b, int m)
{
    for (int i = 0; i < m; i++) {
        int j = find_event(a, n, b[i].data.u64);
        if (j >= 0)
            a[j].events |= b[i].events;
        else if (n < cap)
            a[n++] = b[i];
    }
    return n;
}

/* Keeps n events for this thread's next call on epfd. False when there is
 * no room (the caller then returns them now). */
static bool keep_events(int epfd, const struct epoll_event *ev, int n)
{
    if (n <= 0 || epfd < 0 || epfd >= MAX_FDS)
        return false;
    if (!t_kept_keyed) {
        /* so that this thread's exit hands what it keeps on (kept_orphan) */
        pthread_once(&g_kept_once, kept_key_make);
        t_kept_keyed = pthread_setspecific(g_kept_key, (void *)1) == 0;
    }
    for (int i = 0; i < KEPT_EPOLLS; i++) {
        struct kept *k = &t_kept[i];
        if (k->used)
            continue;
        struct epoll_event *copy = malloc((size_t)n * sizeof(*ev));
        int *fds = malloc((size_t)n * sizeof(*fds));
        unsigned *gens = malloc((size_t)n * sizeof(*gens));
        if (!copy || !fds || !gens) {
            free(copy);
            free(fds);
            free(gens);
            return false;
        }
        memcpy(copy, ev, (size_t)n * sizeof(*ev));
        for (int j = 0; j < n; j++) {
            fds[j] = event_fd(epfd, &ev[j]);
            gens[j] = fds[j] >= 0 ? atomic_load_explicit(&g_fd_gen[fds[j]], memory_order_relaxed) : 0;
        }
        *k = (struct kept){ .used = true, .epfd = epfd, .gen = atomic_load_explicit(&g_fd_gen[epfd], memory_order_relaxed),
                            .n = n, .ev = copy, .fd = fds, .fd_gen = gens };
        t_nkept++;
        return true;
    }
    return false;
}

/* Puts the relayed events of ev first, each kind in its order. */
static void relayed_first(int epfd, struct epoll_event *ev, int n)
{
    struct epoll_event tmp[LOOK_MAX];
    int nt = 0, w = 0;
    for (int i = 0; i < n; i++)
        nt += !event_relayed(epfd, &ev[i]);
    if (nt == 0 || nt == n || nt > LOOK_MAX)
        return;
    nt = 0;
    for (int i = 0; i < n; i++) {
        if (event_relayed(epfd, &ev[i]))
            ev[w++] = ev[i];
        else
            tmp[nt++] = ev[i];
    }
    memcpy(ev + w, tmp, (size_t)nt * sizeof(*ev));
}

/* The events kept for epfd, with what a look without waiting finds now
 * (after the loop has caught up), relayed ones first; none is kept again
 * but what does not fit. -1: none kept. */
static int kept_take(int epfd, struct epoll_event *ev, int max)
{
    struct kept *k = NULL;
    for (int i = 0; i < KEPT_EPOLLS && !k && t_nkept; i++)
        if (t_kept[i].used && t_kept[i].epfd == epfd)
            k = &t_kept[i];
    struct kept c;
    if (k) {
        c = *k;
        k->used = false;
        k->ev = NULL;
        k->fd = NULL;
        k->fd_gen = NULL;
        t_nkept--;
    } else if (!orphan_take(epfd, &c)) {
        return -1;
    }
    if (atomic_load_explicit(&g_fd_gen[epfd], memory_order_relaxed) != c.gen)
        c.n = 0;
    int w = 0;
    for (int j = 0; j < c.n; j++)
        if (c.fd[j] < 0 || atomic_load_explicit(&g_fd_gen[c.fd[j]], memory_order_relaxed) == c.fd_gen[j])
            c.ev[w++] = c.ev[j]; /* else: closed since it was kept */
    free(c.fd);
    free(c.fd_gen);
    if (w == 0) {
        /* nothing left to report: the call waits as if none were kept */
        free(c.ev);
        return -1;
    }
    c.n = w;
    /* With a look at what is ready now (once the loop has caught up):
     * relayed ones first, then the rest; what does not fit is kept, in
     * that order. The look is not limited to the room the kept events
     * leave: a kept level-triggered event (a listening socket, still
     * ready) comes again in it, and a look of max - n then left a ready
     * relayed EOF out while the listening socket went with the batch
     * (python sizes max by its registered descriptors: 1 EOF of 41 read
     * after the next accept, eof-latency.test.js). */
    struct epoll_event *all = realloc(c.ev, (size_t)(c.n + LOOK_MAX) * sizeof(*all));
    int na = c.n;
    if (all) {
        relay_catch_up();
        struct epoll_event now[LOOK_MAX];
        int m = libc_call(epoll_wait, epfd, now, LOOK_MAX, 0);
        if (m > 0)
            na = merge_events(all, c.n, c.n + m, now, m);
    } else {
        all = c.ev; /* no memory for a look: the kept events alone */
    }
    relayed_first(epfd, all, na);
    int n = na < max ? na : max;
    memcpy(ev, all, (size_t)n * sizeof(*ev));
    if (na > n)
        keep_events(epfd, all + n, na - n);
    free(all);
    return n;
}

/* The first look found n events. If the relay loop had events it had not
 * handled, look again once it has; then, when relayed descriptors and
 * others are both ready, report the relayed ones now and keep the others
 * for the next call (see the file comment). */
static int epoll_catch_up(int epfd, struct epoll_event *ev, int max, int n)
{
    if (!relay_any())
        return n;
    /* Only a descriptor the relay does not carry can overtake what the
     * relay owes: among relayed ones the loop's order is the kernel's. */
    int nr0 = 0;
    for (int i = 0; i < n; i++)
        nr0 += event_relayed(epfd, &ev[i]);
    if (nr0 == n || shim_vforked())
        return n; /* the common case under load: nothing to wait for */
    /* Wait for what the loop has not handled, then look again, whether
     * it waited or not: the loop may have caught up after the kernel took
     * this wait's events and before this call got here (a thread
     * preempted on its way back from the kernel: traced, a relayed EOF
     * the loop delivered 300 us after the wait returned the listening
     * socket, and 30 us before the check found the loop idle). */
    relay_catch_up();
    struct epoll_event *all = malloc((size_t)(n + LOOK_MAX) * sizeof(*all));
    if (!all)
        return n;
    memcpy(all, ev, (size_t)n * sizeof(*ev));
    int na = n;
    struct epoll_event now[LOOK_MAX];
    /* the whole look, whatever max: what does not fit is kept */
    int m = libc_call(epoll_wait, epfd, now, LOOK_MAX, 0);
    if (m > 0)
        na = merge_events(all, n, n + m, now, m);
    int nr = 0;
    for (int i = 0; i < na; i++)
        nr += event_relayed(epfd, &all[i]);
    int out = 0;
    if (nr > 0 && nr < na) {
        /* relayed ones now (in order), the others from the next call */
        struct epoll_event *others = malloc((size_t)na * sizeof(*others));
        int no = 0;
        for (int i = 0; others && i < na; i++) {
            if (event_relayed(epfd, &all[i]) && out < max)
                ev[out++] = all[i];
            else
                others[no++] = all[i];
        }
        bool kept = others && keep_events(epfd, others, no);
        free(others);
        if (kept) {
            free(all);
            return out;
        }
    }
    /* one kind only (or no room to keep): all of it now; what does not
     * fit waits for the next call */
    out = na < max ? na : max;
    memcpy(ev, all, (size_t)out * sizeof(*ev));
    if (na > out)
        keep_events(epfd, all + out, na - out);
    free(all);
    return out;
}

/* The three epoll waits: events kept for this call (-1: none; the wait
 * then goes to the kernel), and what the kernel's wait returned, after the
 * catch-up (errno kept). */
static int epoll_kept(int epfd, struct epoll_event *ev, int max)
{
    return max > 0 ? kept_take(epfd, ev, max) : -1;
}

static int epoll_waited(int epfd, struct epoll_event *ev, int max, int n)
{
    if (n > 0) {
        int e = errno;
        n = epoll_catch_up(epfd, ev, max, n);
        errno = e;
    }
    return n;
}

int epoll_wait(int epfd, struct epoll_event *ev, int max, int timeout)
{
    int k = epoll_kept(epfd, ev, max);
    return k >= 0 ? k : epoll_waited(epfd, ev, max, libc_call(epoll_wait, epfd, ev, max, timeout));
}

int epoll_pwait(int epfd, struct epoll_event *ev, int max, int timeout, const sigset_t *mask)
{
    int k = epoll_kept(epfd, ev, max);
    return k >= 0 ? k : epoll_waited(epfd, ev, max, libc_call(epoll_pwait, epfd, ev, max, timeout, mask));
}

/* epoll_pwait with a timespec (glibc 2.35; Linux 5.11): the same rule. */
int epoll_pwait2(int epfd, struct epoll_event *ev, int max, const struct timespec *t, const sigset_t *mask)
{
    if (!sym_epoll_pwait2()) {
        errno = ENOSYS; /* a libc without it: the program's own fallback runs */
        return -1;
    }
    int k = epoll_kept(epfd, ev, max);
    return k >= 0 ? k : epoll_waited(epfd, ev, max, p_epoll_pwait2(epfd, ev, max, t, mask));
}

/* ---- poll ------------------------------------------------------------------- */

/* The thread's last poll, ppoll, select or pselect left the descriptors
 * not relayed to this one. */
static __thread bool t_poll_deferred;

/* poll's second look, if the loop had events to handle; then, when both
 * relayed and other descriptors are ready, only the relayed ones are
 * reported: the others are still ready at the next call (level-triggered),
 * which reports everything. */
static int poll_catch_up(struct pollfd *fds, nfds_t nfds, int n)
{
    if (!relay_any())
        return n;
    if (t_poll_deferred) {
        t_poll_deferred = false;
        return n;
    }
    bool direct = false; /* only those can overtake what the relay owes */
    for (nfds_t i = 0; i < nfds && !direct; i++)
        direct = fds[i].revents && !fd_relayed(fds[i].fd);
    if (!direct || shim_vforked())
        return n;
    relay_catch_up(); /* then look again, waited or not (see epoll_catch_up) */
    {
        short small[64];
        short *first = nfds <= 64 ? small : malloc(nfds * sizeof(*first));
        if (first) {
            for (nfds_t i = 0; i < nfds; i++) {
                first[i] = fds[i].revents;
                fds[i].revents = 0;
            }
            int m = libc_call(poll, fds, nfds, 0);
            if (m <= 0) /* taken meanwhile by another thread, or EINTR: the first look stands */
                for (nfds_t i = 0; i < nfds; i++)
                    fds[i].revents = first[i];
            else
                n = m;
            if (first != small)
                free(first);
        }
    }
    int nr = 0, no = 0;
    for (nfds_t i = 0; i < nfds; i++)
        if (fds[i].revents)
            fd_relayed(fds[i].fd) ? nr++ : no++;
    if (!nr || !no)
        return n;
    for (nfds_t i = 0; i < nfds; i++)
        if (fds[i].revents && !fd_relayed(fds[i].fd))
            fds[i].revents = 0;
    t_poll_deferred = true;
    return nr;
}

int poll(struct pollfd *fds, nfds_t nfds, int timeout)
{
    int n = libc_call(poll, fds, nfds, timeout);
    if (n > 0) {
        int e = errno;
        n = poll_catch_up(fds, nfds, n);
        errno = e;
    }
    return n;
}

int ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *t, const sigset_t *mask)
{
    int n = libc_call(ppoll, fds, nfds, t, mask);
    if (n > 0) {
        int e = errno;
        n = poll_catch_up(fds, nfds, n);
        errno = e;
    }
    return n;
}

/* The _FORTIFY_SOURCE entries (a program built with it calls these when
 * the array's size is known): the same check as glibc's, then poll. */
int __poll_chk(struct pollfd *fds, nfds_t nfds, int timeout, size_t fdslen)
{
    if (fdslen / sizeof(*fds) < nfds)
        abort();
    return poll(fds, nfds, timeout);
}

int __ppoll_chk(struct pollfd *fds, nfds_t nfds, const struct timespec *t, const sigset_t *mask, size_t fdslen)
{
    if (fdslen / sizeof(*fds) < nfds)
        abort();
    return ppoll(fds, nfds, t, mask);
}

/* ---- select / pselect --------------------------------------------------------- */

/*
 * Level-triggered like poll, and the same rule: when a wait returns a
 * descriptor the relay does not carry, wait for the loop to catch up and
 * look again (with the sets the program passed, timeout 0); when relayed
 * descriptors and others are both ready, report the relayed ones now and
 * the others (still ready) from the next call. The sets are read as the
 * kernel reads them, nfds bits in whole longs (a program may pass sets
 * larger than fd_set for nfds above FD_SETSIZE); bits are tested by hand,
 * not with FD_ISSET (fortified, it aborts above FD_SETSIZE).
 */
#define SEL_LBITS (8 * sizeof(unsigned long))
#define SEL_SMALL (FD_SETSIZE / SEL_LBITS)

struct sel_look {
    int nfds;
    size_t words;                /* longs per set */
    unsigned long *sets[3];      /* the program's read, write, except sets (NULL: none) */
    unsigned long *asked[3];     /* what it asked, copied before the wait */
    unsigned long small[3][SEL_SMALL];
    unsigned long *heap;
};

/* Copies what the program asks before its wait, when the relay carries
 * something (else the wait is libc's alone). False: no catch-up. */
static bool sel_prepare(struct sel_look *l, int nfds, fd_set *r, fd_set *w, fd_set *x)
{
    if (nfds <= 0 || !relay_any())
        return false;
    l->nfds = nfds;
    l->words = ((size_t)nfds + SEL_LBITS - 1) / SEL_LBITS;
    l->heap = NULL;
    fd_set *in[3] = { r, w, x };
    if (l->words > SEL_SMALL) {
        l->heap = malloc(3 * l->words * sizeof(unsigned long));
        if (!l->heap)
            return false;
    }
    for (int k = 0; k < 3; k++) {
        l->sets[k] = (unsigned long *)in[k];
        l->asked[k] = l->heap ? l->heap + (size_t)k * l->words : l->small[k];
        if (in[k])
            memcpy(l->asked[k], in[k], l->words * sizeof(unsigned long));
    }
    return true;
}

/* Counts the ready bits in the program's sets, of relayed descriptors and
 * of others; clear_others: the others' bits are cleared as they are counted. */
static void sel_scan(struct sel_look *l, int *nr, int *no, bool clear_others)
{
    *nr = *no = 0;
    for (int k = 0; k < 3; k++) {
        if (!l->sets[k])
            continue;
        for (size_t i = 0; i < l->words; i++) {
            unsigned long b = l->sets[k][i];
            while (b) {
                int bit = __builtin_ctzl(b);
                b &= b - 1;
                if (fd_relayed((int)(i * SEL_LBITS) + bit)) {
                    (*nr)++;
                } else {
                    (*no)++;
                    if (clear_others)
                        l->sets[k][i] &= ~(1ul << bit);
                }
            }
        }
    }
}

/* The wait returned n ready bits (the program's sets hold them). */
static int select_catch_up(struct sel_look *l, int n)
{
    int nr, no;
    if (t_poll_deferred) {
        t_poll_deferred = false;
        return n;
    }
    sel_scan(l, &nr, &no, false);
    if (!no || shim_vforked())
        return n; /* only relayed ones: among those the loop's order is the kernel's */
    relay_catch_up(); /* then look again, waited or not (see epoll_catch_up) */
    unsigned long first_small[3][SEL_SMALL];
    unsigned long *first = l->words <= SEL_SMALL ? &first_small[0][0] : malloc(3 * l->words * sizeof(unsigned long));
    if (first) {
        for (int k = 0; k < 3; k++)
            if (l->sets[k]) {
                memcpy(first + (size_t)k * l->words, l->sets[k], l->words * sizeof(unsigned long));
                memcpy(l->sets[k], l->asked[k], l->words * sizeof(unsigned long));
            }
        struct timeval zero = { 0, 0 };
        int m = libc_call(select, l->nfds, (fd_set *)l->sets[0], (fd_set *)l->sets[1], (fd_set *)l->sets[2], &zero);
        if (m <= 0) { /* EINTR, or taken meanwhile by another thread: the first look stands */
            for (int k = 0; k < 3; k++)
                if (l->sets[k])
                    memcpy(l->sets[k], first + (size_t)k * l->words, l->words * sizeof(unsigned long));
        } else {
            n = m;
        }
        if (first != &first_small[0][0])
            free(first);
        sel_scan(l, &nr, &no, false);
    }
    if (!nr || !no)
        return n;
    sel_scan(l, &nr, &no, true);
    t_poll_deferred = true;
    return nr;
}

/* After the kernel's select or pselect returned n (the look prepared
 * or not): the catch-up, errno kept. */
static int sel_waited(struct sel_look *l, bool look, int n)
{
    if (look) {
        int e = errno;
        if (n > 0)
            n = select_catch_up(l, n);
        free(l->heap);
        errno = e;
    }
    return n;
}

int select(int nfds, fd_set *r, fd_set *w, fd_set *x, struct timeval *tv)
{
    struct sel_look l;
    bool look = sel_prepare(&l, nfds, r, w, x);
    return sel_waited(&l, look, libc_call(select, nfds, r, w, x, tv));
}

int pselect(int nfds, fd_set *r, fd_set *w, fd_set *x, const struct timespec *t, const sigset_t *mask)
{
    struct sel_look l;
    bool look = sel_prepare(&l, nfds, r, w, x);
    return sel_waited(&l, look, libc_call(pselect, nfds, r, w, x, t, mask));
}

/*
 * tcp_relay.c: the TCP relay, one loop per process. Owns every struct
 * relay, the loop thread (one epoll over all relays of the process), the
 * process's mux link to nke-emud (nke_shim_link.h: one SEQPACKET connection
 * carrying every TCP socket of the process, each under an id), and the TCP
 * half of the exit and exec drains.
 *
 * relay_start swaps the program's fd for its end of a socketpair (same
 * number, same flags) and hands the relay to the loop, which moves bytes
 * between the other end and the real socket, asking nke-emud for each
 * piece while a chunk could be held. Descriptors per relayed connection:
 * the real socket and the relay's end of the pair, both placed above the
 * program's range (fd_high), so the program gets the numbers it gets raw.
 * The loop's own: the epoll, an eventfd, the link (per process).
 *
 * Lifetimes: a relay is refcounted, one ref per fd-table entry naming it
 * and one for the loop while it relays. The loop closes the pair end when
 * the connection is over; the real socket is closed with the last ref, so
 * a getpeername on a program fd never hits a reused descriptor. A program
 * that closes with the raw system call (libuv) leaves its table entry
 * behind: the entry is recognised as stale by the program end's identity
 * (st_dev/st_ino) at its next use, or replaced when the number is reused
 * by accept/connect.
 *
 * Locks (their order: shim.h): g_loop.lock (the loop's hand-over list,
 * slot table, the link and sends on it from program threads, the drain
 * counters) is taken after g_fd_lock when both are needed, never before.
 * relay->lock (connect state) is never held with g_loop.lock. The loop
 * thread takes g_loop.lock only briefly and never while holding another
 * lock.
 */
#include "shim.h"

#include <linux/futex.h>
#include <linux/sock_diag.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/syscall.h>

/* One piece of one direction's stream, from the read that took it off src
 * until its bytes are written to dst. Owned by its dir's queue. */
struct chunk {
    struct chunk *next;
    uint32_t seq;          /* the DATA's seq (unused when never asked) */
    bool sent;             /* DATA is on the link (else still to send) */
    bool decided;          /* verdict known: bytes below are final */
    bool oob;              /* one urgent byte: written with MSG_OOB, never asked */
    uint8_t *msg;          /* shim_mux + shim_hdr + original bytes (owned) */
    size_t len;            /* original bytes at msg + CHUNK_HDR */
    uint8_t *mod;          /* ALLOW_MODIFIED: replacement, being assembled (owned) */
    size_t mod_len;
    uint32_t action;       /* once decided: NKE_ACT_* */
    size_t off;            /* bytes of the final data already written to dst */
    uint64_t t_sent;       /* CLOCK_MONOTONIC ns of the DATA send (stats) */
};
#define CHUNK_HDR (sizeof(struct shim_mux) + sizeof(struct shim_hdr))

/* Per direction: OUT reads pair_fd and writes real_fd; IN the reverse.
 * Loop thread only. */
struct dir {
    int src, dst;          /* which: 0 real, 1 pair */
    uint32_t nke_dir;
    bool eof;              /* src said EOF */
    bool shut;             /* dst shut down for writing (after eof, all written) */
    bool dead;             /* dst failed: everything for it is discarded */
    struct chunk *head, *tail; /* in stream order */
    unsigned nchunks;      /* queued, decided or not (the window) */
    unsigned nwaiting;     /* sent and not yet decided */
    size_t nbytes;         /* bytes queued */
    uint32_t next_seq;
};

/* Bytes a direction reads ahead while its chunks await verdicts: beyond
 * the window's count, a bound on what the relay holds that the kernel
 * would not (a writer meets a peer's reset about where it would raw). */
#define RELAY_AHEAD_MAX (128u << 10)

enum relay_state { R_CONNECTING, R_RELAYING, R_CONNECT_FAILED, R_RESET_WAIT };

/* Verdict latency samples for NKE_SHIM_STATS (the bench): us from DATA sent
 * to its verdict received, written to the file in batches. Loop only. */
struct lat_stats {
    uint32_t *us;
    size_t n, cap;
};

struct loop {
    pthread_mutex_t lock;  /* see the file comment */
    bool started;
    int ep, wake;          /* the loop's epoll and eventfd (-1: none yet) */
    struct relay *adds;    /* handed over by relay_start, not yet seen by the loop */
    /* The mux link: fd -1 when none (nke-emud absent or gone). gen counts
     * links, so a relay knows whether the link it attached on is still the
     * one. st: that nke-emud's shim.state. Written under lock; the loop
     * reads link_fd without it (only the loop closes it). */
    int link_fd;
    uint32_t link_gen;
    const struct shim_state *st;
    bool link_full;        /* loop only: a DATA met EAGAIN */
    /* Ids on the link: a slot (index in slots[]) and a generation. */
    struct relay **slots;  /* under lock; the loop reads its own relays' slots */
    uint32_t *slot_gen;
    uint32_t nslots, free_slot;
    /* Drains (exit, exec): relays whose OUT is still moving, and the
     * requests. Under lock; drain_cond signals changes. */
    pthread_cond_t drain_cond;
    unsigned out_open;
    bool exit_ask;         /* end OUT of open sockets once idle (exit) */
    unsigned exec_ask;     /* generation of an exec drain's request */
    unsigned out_busy;     /* relays that answered the exec drain "not idle" */
    unsigned exec_done;    /* the last exec request every relay has answered */
    /* Passes (relay_catch_up): odd while the loop handles what one
     * epoll_wait returned, even between; the loop wakes the program
     * threads waiting for a pass to end (pass_waiters) with a futex. live:
     * relays handed to the loop and not ended. Atomics, no lock. */
    atomic_uint pass;
    atomic_uint pass_waiters;
    atomic_uint live;
    /* Loop thread only: */
    bool exit_ask_seen;
    unsigned exec_ask_seen;
    uint32_t spin_us;
    struct lat_stats ls;
    uint8_t *buf;          /* one read's worth (SHIM_DATA_MAX) */
};

/* Every relay the loop runs (loop thread only). */
static struct relay *g_loop_relays;
static const uint8_t g_zeros[16384];
/* Relays whose program end is to be replaced by the real socket at its next
 * read or write (relay_swap); lets those calls skip the check otherwise. */
atomic_uint g_resets_pending;

static struct loop g_loop = { .lock = PTHREAD_MUTEX_INITIALIZER, .drain_cond = PTHREAD_COND_INITIALIZER,
                              .ep = -1, .wake = -1, .link_fd = -1 };

/* ---- internal descriptors ------------------------------------------------ */

/* Moves an internal descriptor above the program's range: the lowest free
 * number from half the soft RLIMIT_NOFILE (at most 65536) up, close-on-exec,
 * through libc's fcntl (never the shim's, which would track the copy). The
 * kernel hands out the lowest free number, so the program's own numbers
 * stay those it gets raw until it holds that many descriptors. Returns the
 * new number, or fd itself when it cannot be moved. */
int fd_floor(void)
{
    struct rlimit rl;
    long floor = 512;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        floor = (long)(rl.rlim_cur / 2);
    if (floor > 65536)
        floor = 65536;
    return (int)floor;
}

int fd_high(int fd)
{
    if (fd < 0)
        return fd;
    long floor = fd_floor();
    if (fd >= floor)
        return fd;
    int h = libc_call(fcntl, fd, F_DUPFD_CLOEXEC, (int)floor);
    if (h < 0)
        return fd; /* no room up there: keep the low number, still correct */
    libc_call(close, fd);
    return h;
}

/* ---- relays -------------------------------------------------------------- */

void relay_put(struct relay *r)
{
    if (atomic_fetch_sub(&r->refs, 1) == 1) {
        if (r->real_fd >= 0)
            libc_call(close, r->real_fd);
        pthread_mutex_destroy(&r->lock);
        pthread_cond_destroy(&r->cond);
        free(r->dirs);
        free(r);
    }
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

bool relay_is_current(struct relay *r, int fd)
{
    struct stat sb;
    return fstat(fd, &sb) == 0 && sb.st_ino == r->prog_ino && sb.st_dev == r->prog_dev;
}

/* ---- the mux link ------------------------------------------------------- */

/* Opens the process's mux link if none is open (g_loop.lock held). */
static void mux_open_locked(void)
{
    if (g_loop.link_fd >= 0)
        return;
    int link = link_open();
    if (link < 0)
        return;
    link = fd_high(link);
    /* Room for several sockets' windows of DATA, so sends rarely meet
     * EAGAIN (they then wait for POLLOUT: correct, slower). FORCE works as
     * root; otherwise net.core.wmem_max caps it. */
    int sz = 4 << 20;
    if (libc_call(setsockopt, link, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz)) < 0)
        libc_call(setsockopt, link, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
    struct shim_hdr hello = { .type = SHIM_MUX };
    if (libc_call(sendto, link, &hello, sizeof(hello), MSG_NOSIGNAL, NULL, 0) < 0) {
        libc_call(close, link);
        return;
    }
    g_loop.st = state_map();
    g_loop.link_gen++;
    g_loop.link_fd = link;
    if (g_loop.ep >= 0) {
        struct epoll_event ev = { .events = EPOLLIN, .data.u64 = UINT64_MAX - 1 };
        libc_call(epoll_ctl, g_loop.ep, EPOLL_CTL_ADD, link, &ev);
    }
}

/* Reports of the loop's pass (DATA with SHIM_F_NO_VERDICT: the bytes are
 * passed already), sent together at the end of the pass instead of one
 * sendmsg a chunk: in report-only capture that was a third of the loop's
 * system calls, and nke-emud woke for each. They go packed in SHIM_REPORTS
 * messages (nke_shim_link.h), up to SHIM_REPORTS_MAX bytes each, and the
 * messages with one sendmmsg: one message a pass, not one a chunk, so the
 * kernel allocates and nke-emud receives one buffer for the pass's
 * reports. Under g_loop.lock, so every other message on the link
 * (mux_send_locked, from any thread) and every DATA asking for a verdict
 * (dir_send) goes after the reports before it: the link keeps the order in
 * which things happened. The loop appends; whoever sends next flushes. */
#define REPORT_BATCH 64
#define REPORT_BUF_BYTES (512u << 10)
static struct {
    struct mmsghdr mm[REPORT_BATCH];
    struct iovec iov[REPORT_BATCH];
    unsigned n;            /* SHIM_REPORTS messages begun (written under g_loop.lock) */
    unsigned entries;      /* reports in the last of them */
    size_t used;           /* bytes of buf they take */
    uint8_t *buf;          /* REPORT_BUF_BYTES, the loop's (NULL: send each at once) */
} g_rep;

/* Sends the waiting reports (g_loop.lock held). What a full link does not
 * take is dropped, as a single report was: the bytes have passed, only
 * their report is lost (never the bytes). */
static void report_flush_locked(void)
{
    unsigned done = 0;
    for (unsigned i = 0; i < g_rep.n; i++) {
        memset(&g_rep.mm[i], 0, sizeof(g_rep.mm[i]));
        g_rep.mm[i].msg_hdr.msg_iov = &g_rep.iov[i];
        g_rep.mm[i].msg_hdr.msg_iovlen = 1;
    }
    while (g_loop.link_fd >= 0 && done < g_rep.n) {
        int k = libc_call(sendmmsg, g_loop.link_fd, g_rep.mm + done, g_rep.n - done, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k > 0) {
            done += (unsigned)k;
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && (errno == EAGAIN || errno == ENOBUFS))
            g_loop.link_full = true;
        break;
    }
    __atomic_store_n(&g_rep.n, 0, __ATOMIC_RELAXED);
    g_rep.used = 0;
}

/* The loop thread, before a send of its own without the lock (dir_send)
 * and at the end of each pass. n only grows on the loop thread, so a 0 read
 * here is true. */
static void report_flush(void)
{
    if (!__atomic_load_n(&g_rep.n, __ATOMIC_RELAXED))
        return;
    pthread_mutex_lock(&g_loop.lock);
    report_flush_locked();
    pthread_mutex_unlock(&g_loop.lock);
}

/* Sends one message for socket `id` on the mux link (g_loop.lock held).
 * Never blocks for long: a full link waits up to 50 ms for an ATTACH or a
 * DETACH (`must`), else the message is dropped (notes are best effort, as
 * the kext's are when it cannot allocate). False when nothing was sent. */
static bool mux_send_locked(uint32_t id, const void *m, size_t n, bool must)
{
    if (g_loop.link_fd < 0)
        return false;
    report_flush_locked(); /* what happened before this goes first */
    struct shim_mux mx = { .sock = id };
    struct iovec iov[2] = { { &mx, sizeof(mx) }, { (void *)m, n } };
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
    for (int tries = 0;; tries++) {
        if (libc_call(sendmsg, g_loop.link_fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) >= 0)
            return true;
        if (errno == EINTR)
            continue;
        if ((errno != EAGAIN && errno != ENOBUFS) || !must || tries == 50)
            return false;
        struct pollfd p = { g_loop.link_fd, POLLOUT, 0 };
        libc_call(poll, &p, 1, 1);
    }
}

/* What the slot of a socket attached unconnected holds until its relay
 * takes it (relay_start): not NULL, so the slot is not handed to another
 * socket meanwhile (two live sockets under one slot: the put of either
 * would unlink the other, whose verdicts would then be dropped and its
 * held bytes wait forever). Its id, 0, is never a socket's. */
static struct relay g_slot_reserved;

/* A slot for a new socket on the link (g_loop.lock held); its id. r NULL:
 * reserved for an unconnected socket. */
static uint32_t slot_take_locked(struct relay *r)
{
    if (g_loop.free_slot >= g_loop.nslots) {
        uint32_t n = g_loop.nslots ? g_loop.nslots * 2 : 256;
        if (n > (1u << 20))
            return UINT32_MAX;
        struct relay **s = realloc(g_loop.slots, n * sizeof(*s));
        if (!s)
            return UINT32_MAX;
        g_loop.slots = s;
        uint32_t *g = realloc(g_loop.slot_gen, n * sizeof(*g));
        if (!g)
            return UINT32_MAX;
        g_loop.slot_gen = g;
        for (uint32_t i = g_loop.nslots; i < n; i++) {
            s[i] = NULL;
            g[i] = 0;
        }
        g_loop.free_slot = g_loop.nslots;
        g_loop.nslots = n;
    }
    uint32_t slot = g_loop.free_slot;
    g_loop.slots[slot] = r ? r : &g_slot_reserved;
    g_loop.slot_gen[slot]++;
    /* next free: the lowest one above */
    uint32_t f = slot + 1;
    while (f < g_loop.nslots && g_loop.slots[f])
        f++;
    g_loop.free_slot = f;
    return slot | ((g_loop.slot_gen[slot] & 0xFFFu) << 20);
}

/* Frees id's slot, only while the slot is still id's (same generation):
 * a late put of an id whose slot went on to another socket leaves it. */
static void slot_put_locked(uint32_t id)
{
    uint32_t slot = id & 0xFFFFFu;
    if (slot < g_loop.nslots && ((g_loop.slot_gen[slot] & 0xFFFu) << 20 | slot) == id) {
        g_loop.slots[slot] = NULL;
        if (slot < g_loop.free_slot)
            g_loop.free_slot = slot;
    }
}

/* The relay of `id`, or NULL when that socket is gone (loop thread). */
static struct relay *slot_relay(uint32_t id)
{
    uint32_t slot = id & 0xFFFFFu;
    if (slot >= g_loop.nslots)
        return NULL;
    struct relay *r = g_loop.slots[slot];
    return r && r != &g_slot_reserved && r->id == id ? r : NULL;
}

/* A socket of this process attached on the mux link unconnected (bind,
 * listen, options while a user client is open): its id, 0 when none.
 * sockctl.c keeps it and hands it to the relay at connect. */
uint32_t mux_attach_unconnected(int fd, uint8_t family)
{
    struct shim_attach a = { .hdr = { .type = SHIM_ATTACH }, .pid = getpid(), .uid = getuid(),
                             .family = family, .type = 1, .protocol = NKE_PROTO_TCP,
                             .incoming = SHIM_ATTACH_UNCONNECTED };
    shim_comm(a.comm);
    (void)fd;
    pthread_mutex_lock(&g_loop.lock);
    mux_open_locked();
    uint32_t id = g_loop.link_fd >= 0 ? slot_take_locked(NULL) : UINT32_MAX;
    if (id != UINT32_MAX && !mux_send_locked(id, &a, sizeof(a), true)) {
        slot_put_locked(id);
        id = UINT32_MAX;
    }
    pthread_mutex_unlock(&g_loop.lock);
    /* id 0 is slot 0 generation 0, which slot_take never hands out (the
     * generation is at least 1) */
    return id == UINT32_MAX ? 0 : id;
}

/* A note (BIND, LISTEN, OPTION) for socket id; best effort. */
void mux_note(uint32_t id, const void *m, size_t n)
{
    pthread_mutex_lock(&g_loop.lock);
    mux_send_locked(id, m, n, false);
    pthread_mutex_unlock(&g_loop.lock);
}

/* The socket id is gone (its last name closed, never connected). */
void mux_detach(uint32_t id)
{
    struct shim_hdr h = { .type = SHIM_DETACH };
    pthread_mutex_lock(&g_loop.lock);
    mux_send_locked(id, &h, sizeof(h), true);
    slot_put_locked(id);
    pthread_mutex_unlock(&g_loop.lock);
}

/* SHIM_EVENT notes, each sent at most once per relay: the socket's state as
 * the kernel's sf_notify reports it (connected; the peer's EOF; the
 * program's shutdown or close; a failed connect), so the views can tell a
 * connecting socket from one that carries data, and one being closed. */
enum {
    RELAY_EV_CONNECTED = 1u,
    RELAY_EV_CANTRECVMORE = 2u,
    RELAY_EV_CANTSENDMORE = 4u,
    RELAY_EV_DISCONNECTED = 8u
};

/* Sends SHIM_EVENT for the bits of `want` not yet sent (g_loop.lock held). */
static void relay_events_locked(struct relay *r, unsigned want)
{
    static const struct { unsigned bit; uint32_t ev; } map[] = {
        { RELAY_EV_CONNECTED, NKE_EV_CONNECTED },
        { RELAY_EV_CANTRECVMORE, NKE_EV_CANTRECVMORE },
        { RELAY_EV_CANTSENDMORE, NKE_EV_CANTSENDMORE },
        { RELAY_EV_DISCONNECTED, NKE_EV_DISCONNECTED },
    };
    want &= ~r->events_sent;
    if (!want || !r->linked || r->link_gen != g_loop.link_gen || r->ended)
        return;
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        if (!(want & map[i].bit))
            continue;
        struct shim_hdr h = { .type = SHIM_EVENT, .action = map[i].ev };
        if (mux_send_locked(r->id, &h, sizeof(h), false))
            r->events_sent |= map[i].bit;
    }
}

/* ---- the loop: moving bytes ----------------------------------------------- */

static int rfd(const struct relay *r, int which) { return which ? r->pair_fd : r->real_fd; }
static bool linger_zero(int fd);

static void chunk_free(struct chunk *c)
{
    free(c->msg);
    free(c->mod);
    free(c);
}

/* Appends the samples to $NKE_SHIM_STATS, one number (us) per line. */
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
        if (libc_call(write, fd, line, (size_t)k) < 0)
            break;
    }
    libc_call(close, fd);
}

/* True when this relay's chunks need no verdict now: no link, or
 * nke-emud says none could be deferred. */
static bool relay_may_skip(const struct relay *r)
{
    if (!r->linked || r->link_gen != g_loop.link_gen || g_loop.link_fd < 0)
        return true;
    return g_loop.st && __atomic_load_n(&g_loop.st->may_defer, __ATOMIC_ACQUIRE) == 0;
}

/* True when chunks are reported but can never be held: DATA goes with
 * SHIM_F_NO_VERDICT and the bytes move at once. */
static bool relay_report_only(const struct relay *r)
{
    (void)r;
    return g_loop.st && __atomic_load_n(&g_loop.st->version, __ATOMIC_RELAXED) >= 1 &&
           __atomic_load_n(&g_loop.st->may_hold, __ATOMIC_ACQUIRE) == 0;
}

/* Bytes the real socket's send buffer has room for now, as the kernel
 * counts them (sk_sndbuf - sk_wmem_queued; may be negative: the last write
 * may pass the limit). A socket the kernel will not say this of: no bound. */
static long real_send_room(const struct relay *r)
{
    uint32_t mi[SK_MEMINFO_VARS];
    socklen_t l = sizeof(mi);
    if (libc_call(getsockopt, r->real_fd, SOL_SOCKET, SO_MEMINFO, mi, &l) < 0 ||
        l < sizeof(uint32_t) * (SK_MEMINFO_WMEM_QUEUED + 1))
        return LONG_MAX;
    return (long)mi[SK_MEMINFO_SNDBUF] - (long)mi[SK_MEMINFO_WMEM_QUEUED];
}

/* Least a held direction reads when nothing of it is queued, whatever the
 * room: its write then meets the full buffer (EAGAIN), and the kernel's
 * EPOLLOUT says when there is room again. */
#define RELAY_AHEAD_MIN (16u << 10)

/* How many bytes the next read of d may take (0: none now). */
static size_t dir_read_want(const struct relay *r, const struct dir *d)
{
    if (d->eof || d->dead || !r->rd[d->src])
        return 0;
    /* Unasked bytes (no client, or reported only) are only read while
     * nothing waits for dst: the relay holds at most one read's worth
     * beyond what the socket buffers hold (a peer's reset then reaches a
     * writer about where it would raw). */
    if (relay_may_skip(r) || relay_report_only(r))
        return d->head == NULL ? SHIM_DATA_MAX : 0;
    if (d->nchunks >= SHIM_WINDOW_CHUNKS || d->nbytes >= RELAY_AHEAD_MAX)
        return 0;
    size_t want = RELAY_AHEAD_MAX - d->nbytes < SHIM_DATA_MAX ? RELAY_AHEAD_MAX - d->nbytes : SHIM_DATA_MAX;
    if (d->dst == 0) {
        /* Held bytes going out count against the real socket's send
         * buffer, as the program's own bytes would raw: the relay reads
         * ahead only what that buffer still has room for. A writer whose
         * peer stops reading then meets the kernel's limit (and a reset)
         * about where it would raw, not the relay's read-ahead later. */
        long room = real_send_room(r) - (long)d->nbytes;
        if (room < (long)want)
            want = room > 0 ? (size_t)room : 0;
        if (!d->head && want < RELAY_AHEAD_MIN)
            want = RELAY_AHEAD_MIN;
    }
    return want;
}

/* A send to dst failed for good. */
static void dir_dst_failed(struct relay *r, struct dir *d, int err)
{
    d->dead = true;
    /* A send that failed with the reset's error took it from the socket
     * (EPIPE: there was none left to take): the program's next call gets
     * it, as its own send would have raw (relay_swap). */
    if (d->dst == 0 && err && err != EPIPE && !r->taken_err)
        r->taken_err = err;
    if (d->dst == 0 && err != EPIPE) /* the real socket: reset by the peer */
        r->reset_err = err ? err : ECONNRESET;
    else if (d->dst == 0)
        r->reset_err = ECONNRESET;
}

/* Writes every decided chunk at the head, in order, without blocking. After
 * EOF with nothing left, passes the half-close on.
 *
 * The real socket is written whenever its send buffer has room, not only
 * after the kernel's EPOLLOUT: a send() is taken while sk_wmem_queued <
 * sk_sndbuf, but poll reports writable only once a third of the buffer is
 * free (sk_stream_is_writeable), and a send buffer that grows (TCP's
 * autotuning) raises no event at all. A raw writer retrying its send
 * fills that room; a relay that waited for EPOLLOUT held what it had read
 * ahead of it (the read-ahead counts that room as the socket's) and the
 * writer got ~20 KiB more in than the relay may hold. */
static void dir_flush(struct relay *r, struct dir *d)
{
    int dst = rfd(r, d->dst);
    while (d->head && d->head->decided) {
        struct chunk *c = d->head;
        const uint8_t *b = c->action == NKE_ACT_ALLOW_MODIFIED ? c->mod : c->msg + CHUNK_HDR;
        size_t n = c->action == NKE_ACT_ALLOW_MODIFIED ? c->mod_len : c->action == NKE_ACT_DROP ? 0 : c->len;
        while (!d->dead && c->off < n) {
            if (!r->wr[d->dst] && !(d->dst == 0 && real_send_room(r) > 0))
                return;
            ssize_t w = libc_call(sendto, dst, b + c->off, n - c->off,
                                  MSG_NOSIGNAL | MSG_DONTWAIT | (c->oob ? MSG_OOB : 0), NULL, 0);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                r->wr[d->dst] = false;
                return;
            }
            if (w <= 0) {
                dir_dst_failed(r, d, errno);
                break;
            }
            c->off += (size_t)w;
        }
        d->head = c->next;
        if (!d->head)
            d->tail = NULL;
        d->nchunks--;
        d->nbytes -= c->len;
        chunk_free(c);
    }
    if (d->eof && !d->shut && !d->dead && !d->head && !(d->dst == 0 && r->abort)) {
        /* EOF one way is a half-close the other side must see, once
         * everything read before it is delivered. */
        libc_call(shutdown, dst, SHUT_WR);
        d->shut = true;
    }
}

/* Sends the DATA of every chunk not yet on the link, in order, without
 * blocking. False when the link failed (the caller fails open). */
static bool dir_send(struct relay *r, struct dir *d)
{
    report_flush(); /* reports of earlier bytes (capture changed meanwhile) first */
    for (struct chunk *c = d->head; c; c = c->next) {
        if (c->sent || c->decided)
            continue;
        if (g_loop.link_full)
            return true;
        ssize_t w;
        do
            w = libc_call(sendto, g_loop.link_fd, c->msg, CHUNK_HDR + c->len, MSG_NOSIGNAL | MSG_DONTWAIT, NULL, 0);
        while (w < 0 && errno == EINTR);
        if (w < 0 && (errno == EAGAIN || errno == ENOBUFS)) {
            g_loop.link_full = true; /* the rest waits for EPOLLOUT, keeping order */
            r->link_pending = true;
            return true;
        }
        if (w < 0)
            return false;
        c->sent = true;
        c->t_sent = mono_ns();
        d->nwaiting++;
    }
    return true;
}

/* Queues n bytes of buf as a chunk of d; decided (ALLOW) unless `ask`. */
static struct chunk *dir_queue(struct relay *r, struct dir *d, const uint8_t *buf, size_t n, bool ask, bool oob)
{
    struct chunk *c = calloc(1, sizeof(*c));
    uint8_t *msg = c ? malloc(CHUNK_HDR + n) : NULL;
    if (!msg) {
        free(c);
        return NULL;
    }
    struct shim_mux mx = { .sock = r->id };
    struct shim_hdr h = { .type = SHIM_DATA, .direction = d->nke_dir, .len = (uint32_t)n, .seq = d->next_seq };
    memcpy(msg, &mx, sizeof(mx));
    memcpy(msg + sizeof(mx), &h, sizeof(h));
    memcpy(msg + CHUNK_HDR, buf, n);
    c->msg = msg;
    c->len = n;
    c->oob = oob;
    if (ask) {
        c->seq = d->next_seq++;
    } else {
        c->action = NKE_ACT_ALLOW;
        c->decided = true;
    }
    if (d->tail)
        d->tail->next = c;
    else
        d->head = c;
    d->tail = c;
    d->nchunks++;
    d->nbytes += n;
    return c;
}

/* Reports n bytes without waiting for an answer (report-only capture):
 * appended to the pass's SHIM_REPORTS message in g_rep (a new one when it
 * is full), sent at the end of the pass (or before the next message on the
 * link). */
static void dir_report(struct relay *r, struct dir *d, const uint8_t *buf, size_t n)
{
    if (g_loop.link_full || n > SHIM_DATA_MAX)
        return; /* a full link drops the report, never the bytes */
    struct shim_mux mx = { .sock = r->id };
    struct shim_hdr h = { .type = SHIM_DATA, .direction = d->nke_dir, .len = (uint32_t)n,
                          .flags = SHIM_F_NO_VERDICT, .seq = d->next_seq++ };
    pthread_mutex_lock(&g_loop.lock);
    if (g_rep.buf && g_loop.link_fd >= 0) {
        struct iovec *cur = g_rep.n ? &g_rep.iov[g_rep.n - 1] : NULL;
        /* The messages lie one after the other in buf: the report goes
         * into the last one while that has room and so has buf, else into
         * a new one (after a flush when buf or the batch is full). */
        if (!cur || cur->iov_len + CHUNK_HDR + n > SHIM_REPORTS_MAX || g_rep.entries == SHIM_REPORTS_ENTRIES ||
            g_rep.used + CHUNK_HDR + n > REPORT_BUF_BYTES) {
            if (g_rep.n == REPORT_BATCH || g_rep.used + 2 * CHUNK_HDR + n > REPORT_BUF_BYTES)
                report_flush_locked();
            cur = &g_rep.iov[g_rep.n];
            *cur = (struct iovec){ g_rep.buf + g_rep.used, CHUNK_HDR };
            struct shim_mux bmx = { .sock = 0 };
            struct shim_hdr bh = { .type = SHIM_REPORTS };
            memcpy(cur->iov_base, &bmx, sizeof(bmx));
            memcpy((uint8_t *)cur->iov_base + sizeof(bmx), &bh, sizeof(bh));
            g_rep.used += CHUNK_HDR;
            g_rep.entries = 0;
            __atomic_store_n(&g_rep.n, g_rep.n + 1, __ATOMIC_RELAXED);
        }
        uint8_t *m = g_rep.buf + g_rep.used;
        memcpy(m, &mx, sizeof(mx));
        memcpy(m + sizeof(mx), &h, sizeof(h));
        memcpy(m + CHUNK_HDR, buf, n);
        g_rep.used += CHUNK_HDR + n;
        cur->iov_len += CHUNK_HDR + n;
        g_rep.entries++;
        uint32_t len = (uint32_t)(cur->iov_len - CHUNK_HDR);
        memcpy((uint8_t *)cur->iov_base + sizeof(mx) + offsetof(struct shim_hdr, len), &len, sizeof(len));
    } else if (g_loop.link_fd >= 0) {
        uint8_t hdr[CHUNK_HDR];
        memcpy(hdr, &mx, sizeof(mx));
        memcpy(hdr + sizeof(mx), &h, sizeof(h));
        struct iovec iov[2] = { { hdr, sizeof(hdr) }, { (void *)buf, n } };
        struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
        if (libc_call(sendmsg, g_loop.link_fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 &&
            (errno == EAGAIN || errno == ENOBUFS))
            g_loop.link_full = true;
    }
    pthread_mutex_unlock(&g_loop.lock);
}

/* The urgent byte the peer (or the program) sent with MSG_OOB, if src has
 * reached its mark: forwarded in stream order with MSG_OOB, never asked. */
static bool dir_read_oob(struct relay *r, struct dir *d)
{
    int src = rfd(r, d->src);
    int at = 0;
    if (ioctl(src, SIOCATMARK, &at) < 0 || !at)
        return false;
    uint8_t b;
    ssize_t n = libc_call(recvfrom, src, &b, 1, MSG_OOB | MSG_DONTWAIT, NULL, NULL);
    r->urgent[d->src] = false;
    if (n != 1)
        return false;
    if (!dir_queue(r, d, &b, 1, false, true))
        return false;
    dir_flush(r, d);
    return true;
}

/* Reads what src has while the window allows. False when the link failed
 * (the caller fails open). */
static bool dir_read(struct relay *r, struct dir *d)
{
    uint8_t *buf = g_loop.buf;
    size_t want;
    while ((want = dir_read_want(r, d)) > 0) {
        if (r->urgent[d->src] && dir_read_oob(r, d))
            continue;
        int src = rfd(r, d->src);
        ssize_t n = libc_call(recvfrom, src, buf, want, MSG_DONTWAIT, NULL, NULL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            r->rd[d->src] = false;
            break;
        }
        if (n < 0 && d->src == 0) {
            /* the real socket reset (ECONNRESET, ETIMEDOUT...): this recv
             * took the error the program is to get (relay_swap) */
            r->reset_err = errno;
            if (!r->taken_err)
                r->taken_err = errno;
            d->eof = true;
            break;
        }
        /* A short read took everything there was (edge-triggered epoll
         * reports the next arrival): no second recv to meet EAGAIN. */
        if (n > 0 && (size_t)n < want && !r->rdhup[d->src])
            r->rd[d->src] = false; /* after a hang-up edge, read on to the EOF */
        if (n <= 0) {
            d->eof = true;
            /* EOF with the pair hung up and no shutdown() call seen: the
             * program closed its end (every copy of it). A bare EOF is a
             * shutdown(SHUT_WR), maybe made by another process sharing
             * the socket. */
            if (d->src == 1 && r->hup[1] && !atomic_load(&r->prog_shutdown)) {
                r->prog_closed = true;
                if (linger_zero(r->real_fd))
                    r->abort = true; /* reset, not FIN (relay_run) */
            }
            dir_flush(r, d);
            break;
        }
        if (relay_may_skip(r) || relay_report_only(r)) {
            if (!relay_may_skip(r))
                dir_report(r, d, buf, (size_t)n);
            size_t o = 0;
            if (!d->head && r->wr[d->dst]) {
                /* Nothing queued: straight through; only a remainder dst
                 * would not take now is queued below. */
                ssize_t w;
                do
                    w = libc_call(sendto, rfd(r, d->dst), buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT, NULL, 0);
                while (w < 0 && errno == EINTR);
                if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                    dir_dst_failed(r, d, errno);
                    continue;
                }
                if (w < 0)
                    r->wr[d->dst] = false;
                else
                    o = (size_t)w;
                if (o < (size_t)n)
                    r->wr[d->dst] = false;
            }
            if (o < (size_t)n && !dir_queue(r, d, buf + o, (size_t)n - o, false, false)) {
                d->dead = true; /* out of memory: this direction is lost */
                break;
            }
            continue;
        }
        if (!dir_queue(r, d, buf, (size_t)n, true, false)) {
            d->dead = true;
            break;
        }
        if (!dir_send(r, d))
            return false;
    }
    return true;
}

/* The link is gone (nke-emud died or a bad verdict): every relay on it
 * passes everything not decided as it was, in order. */
static void link_lost(void)
{
    SHIM_LOG("nke-emud link lost: failing open");
    pthread_mutex_lock(&g_loop.lock);
    __atomic_store_n(&g_rep.n, 0, __ATOMIC_RELAXED); /* reports for a link that is gone */
    g_rep.used = 0;
    if (g_loop.link_fd >= 0) {
        libc_call(epoll_ctl, g_loop.ep, EPOLL_CTL_DEL, g_loop.link_fd, NULL);
        libc_call(close, g_loop.link_fd);
    }
    g_loop.link_fd = -1;
    g_loop.link_full = false;
    pthread_mutex_unlock(&g_loop.lock);
    for (struct relay *r = g_loop_relays; r; r = r->next) {
        r->linked = false;
        for (int i = 0; i < 2; i++) {
            struct dir *d = &r->dirs[i];
            for (struct chunk *c = d->head; c; c = c->next)
                if (!c->decided) {
                    free(c->mod);
                    c->mod = NULL;
                    c->mod_len = 0;
                    c->action = NKE_ACT_ALLOW;
                    c->decided = true;
                }
            d->nwaiting = 0;
        }
        r->dirty = true;
    }
}

/* Reads every verdict the link has now; a verdict may name any waiting
 * chunk of its socket and direction (the client decides in any order),
 * and is applied when all before it are. */
static void link_verdicts(uint8_t *msg)
{
    for (;;) {
        ssize_t n = libc_call(recvfrom, g_loop.link_fd, msg, sizeof(struct shim_mux) + SHIM_MSG_MAX, MSG_DONTWAIT,
                              NULL, NULL);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n < (ssize_t)(sizeof(struct shim_mux) + sizeof(struct shim_hdr))) {
            link_lost();
            return;
        }
        struct shim_mux mx;
        struct shim_hdr h;
        memcpy(&mx, msg, sizeof(mx));
        memcpy(&h, msg + sizeof(mx), sizeof(h));
        struct relay *r = slot_relay(mx.sock);
        if (!r || !r->dirs)
            continue; /* that socket is gone: its verdicts no longer matter */
        struct dir *d = h.direction == NKE_DIR_OUT ? &r->dirs[0] : h.direction == NKE_DIR_IN ? &r->dirs[1] : NULL;
        struct chunk *c = NULL;
        if (d)
            for (c = d->head; c && !(c->sent && !c->decided && c->seq == h.seq); c = c->next) {}
        int v = c ? verdict_piece(&h, msg + sizeof(mx) + sizeof(h), (size_t)n - sizeof(mx), &c->mod, &c->mod_len)
                  : -1;
        if (v < 0) {
            SHIM_LOG("bad verdict (type %u dir %u seq %u): failing open", h.type, h.direction, h.seq);
            link_lost();
            return;
        }
        if (v == 0)
            continue;
        c->action = h.action;
        c->decided = true;
        d->nwaiting--;
        struct lat_stats *ls = &g_loop.ls;
        if (ls->us) {
            if (ls->n < ls->cap)
                ls->us[ls->n++] = (uint32_t)((mono_ns() - c->t_sent) / 1000u);
            if (ls->n >= ls->cap)
                lat_write(ls);
        }
        r->dirty = true;
    }
}

/* Exit drain of a socket still open: nothing of OUT is queued or unread in
 * the socketpair (the program's threads are in exit(), so what it wrote is
 * there). */
static bool relay_out_idle(const struct relay *r)
{
    int unread = 0;
    if (r->dirs[0].head)
        return false;
    return ioctl(r->pair_fd, FIONREAD, &unread) < 0 || unread == 0;
}

/* The relay's OUT direction is finished (or will never move again). */
static void relay_out_done(struct relay *r)
{
    if (!r->out_open)
        return;
    r->out_open = false;
    pthread_mutex_lock(&g_loop.lock);
    g_loop.out_open--;
    if (r->exec_busy) {
        r->exec_busy = false;
        g_loop.out_busy--;
    }
    report_flush_locked(); /* a drain may let the process go: reports first */
    pthread_cond_broadcast(&g_loop.drain_cond);
    pthread_mutex_unlock(&g_loop.lock);
}

/* The events the relay's state calls for now (loop thread). */
static void relay_events(struct relay *r)
{
    unsigned want = 0;
    if (r->state == R_RELAYING || r->state == R_RESET_WAIT)
        want |= RELAY_EV_CONNECTED;
    if (r->state == R_CONNECT_FAILED)
        want |= RELAY_EV_DISCONNECTED;
    if (r->dirs[1].eof)
        want |= RELAY_EV_CANTRECVMORE;
    if (r->dirs[0].eof)
        want |= RELAY_EV_CANTSENDMORE;
    if (!(want & ~r->events_sent))
        return;
    pthread_mutex_lock(&g_loop.lock);
    relay_events_locked(r, want);
    pthread_mutex_unlock(&g_loop.lock);
}

/* Removes the relay from the loop: its pair end is closed (the program
 * sees EOF or, after a reset, ECONNRESET), its socket is detached from
 * nke-emud, the loop's ref dropped (the real socket closes with the last
 * table ref). */
static void relay_end(struct relay *r)
{
    SHIM_LOG("relay %u: end (state %d, out %d/%d/%d, in %d/%d/%d)", r->id, r->state, r->dirs[0].eof, r->dirs[0].shut,
             r->dirs[0].dead, r->dirs[1].eof, r->dirs[1].shut, r->dirs[1].dead);
    relay_events(r); /* the last state before the detach */
    relay_out_done(r);
    /* The program end is gone: nothing left to swap. */
    if (atomic_exchange(&r->reset_swap, false))
        atomic_fetch_sub(&g_resets_pending, 1);
    libc_call(epoll_ctl, g_loop.ep, EPOLL_CTL_DEL, r->real_fd, NULL);
    libc_call(epoll_ctl, g_loop.ep, EPOLL_CTL_DEL, r->pair_fd, NULL);
    libc_call(close, r->pair_fd);
    r->pair_fd = -1;
    for (int i = 0; i < 2; i++)
        while (r->dirs[i].head) {
            struct chunk *c = r->dirs[i].head;
            r->dirs[i].head = c->next;
            chunk_free(c);
        }
    pthread_mutex_lock(&r->lock);
    r->ended = true;
    r->connect_done = true;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
    struct shim_hdr h = { .type = SHIM_DETACH };
    pthread_mutex_lock(&g_loop.lock);
    if (r->linked && r->link_gen == g_loop.link_gen)
        mux_send_locked(r->id, &h, sizeof(h), true);
    slot_put_locked(r->id);
    pthread_mutex_unlock(&g_loop.lock);
    for (struct relay **pp = &g_loop_relays; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    atomic_fetch_sub(&g_loop.live, 1);
    relay_put(r);
}

/* Abortive close (the program set SO_LINGER to 0 s and closed): the peer
 * gets a reset, as from the kernel. connect(AF_UNSPEC) disconnects the
 * socket with a RST even while another process holds a copy of it. */
static void relay_abort(struct relay *r)
{
    struct sockaddr sa = { .sa_family = AF_UNSPEC };
    libc_call(connect, r->real_fd, &sa, sizeof(sa));
}

static bool linger_zero(int fd)
{
    struct linger l = { 0 };
    socklen_t ll = sizeof(l);
    return libc_call(getsockopt, fd, SOL_SOCKET, SO_LINGER, &l, &ll) == 0 && l.l_onoff && l.l_linger == 0;
}

/* The real connect finished (or failed): the filler that kept the program's
 * end from looking writable is taken out, so the program sees the result
 * when it polls, and asks the real socket (getsockopt SO_ERROR, connect). */
static void relay_connect_finished(struct relay *r, bool ok)
{
    /* The result first, then the filler out: the program wakes only then,
     * and its next call (a second connect) must see the result. */
    pthread_mutex_lock(&r->lock);
    r->connect_done = true;
    r->connect_ok = ok;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
    r->state = ok ? R_RELAYING : R_CONNECT_FAILED;
    while (r->filler > 0) {
        ssize_t n = libc_call(recvfrom, r->pair_fd, g_loop.buf, r->filler < SHIM_DATA_MAX ? r->filler : SHIM_DATA_MAX,
                              MSG_DONTWAIT, NULL, NULL);
        if (n <= 0)
            break;
        r->filler -= (size_t)n;
    }
    SHIM_LOG("relay %u: connect %s", r->id, ok ? "done" : "failed");
    if (ok)
        r->rd[1] = true; /* what the program wrote meanwhile is waiting in the pair */
}

static int tcp_state(int fd)
{
    struct tcp_info ti;
    socklen_t l = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    if (libc_call(getsockopt, fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0)
        return -1;
    return ti.tcpi_state;
}

/* Moves what can move on r now, and ends it when it is done. */
static void relay_run(struct relay *r)
{
    r->dirty = false;
    if (atomic_load(&r->restart_ask)) {
        pthread_mutex_lock(&g_loop.lock);
        atomic_store(&r->restart_ask, false);
        r->filler += r->restart_filler;
        pthread_mutex_unlock(&g_loop.lock);
        pthread_mutex_lock(&r->lock);
        r->connect_done = false;
        pthread_mutex_unlock(&r->lock);
        r->state = R_CONNECTING;
        r->hup[1] = false;
        SHIM_LOG("relay %u: connecting again", r->id);
    }
    if (r->state == R_CONNECTING) {
        int s = tcp_state(r->real_fd);
        if (s == TCP_SYN_SENT || s == TCP_SYN_RECV)
            return;
        relay_connect_finished(r, s == TCP_ESTABLISHED || s == TCP_CLOSE_WAIT);
    }
    relay_events(r);
    if (r->state == R_CONNECT_FAILED) {
        /* Idle until the program closes its end, or connects again
         * (relay_reconnect). */
        if (r->hup[1])
            relay_end(r);
        return;
    }
    struct dir *out = &r->dirs[0], *in = &r->dirs[1];
    if (r->state == R_RELAYING && r->reset_err && !in->eof && !in->dead) {
        /* Reset seen on the socket's state: what arrived before the reset
         * is still readable; reading past it would take the error the
         * program is to get, so only FIONREAD's worth is read. */
        int avail = 0;
        while (ioctl(r->real_fd, FIONREAD, &avail) == 0 && avail > 0) {
            ssize_t n = libc_call(recvfrom, r->real_fd, g_loop.buf, (size_t)avail < SHIM_DATA_MAX ? (size_t)avail
                                  : SHIM_DATA_MAX, MSG_DONTWAIT, NULL, NULL);
            if (n <= 0 || !dir_queue(r, in, g_loop.buf, (size_t)n, false, false))
                break;
        }
    }
    if (r->state == R_RELAYING) {
        for (int i = 0; i < 2 && !r->reset_err; i++) {
            dir_flush(r, &r->dirs[i]);
            if (!dir_read(r, &r->dirs[i])) {
                link_lost();
                return;
            }
            dir_flush(r, &r->dirs[i]);
        }
        if (r->hup[1] && !atomic_load(&r->prog_shutdown))
            r->prog_closed = true;
        if (r->abort || (r->prog_closed && linger_zero(r->real_fd))) {
            relay_abort(r);
            relay_end(r);
            return;
        }
        if (r->prog_closed)
            in->dead = true; /* nobody reads the pair any more */
        if (r->reset_err) {
            /* The peer reset the connection (or the real socket failed).
             * What arrived before it is delivered; then the program's next
             * read or write on its fd puts the real socket in its place
             * (relay_swap) and gets the kernel's own answer (ECONNRESET,
             * then EPIPE). The pair end is shut for writing, so a reader
             * waiting in poll wakes up and makes that call; what a writer
             * puts in the pair meanwhile is taken out and dropped, so it
             * never blocks. */
            out->dead = true;
            in->eof = true; /* dir_flush shuts the pair once what came before is written */
            dir_flush(r, in);
            r->state = R_RESET_WAIT;
            if (!atomic_exchange(&r->reset_swap, true))
                atomic_fetch_add(&g_resets_pending, 1);
            relay_out_done(r);
        }
    }
    if (r->state == R_RESET_WAIT) {
        dir_flush(r, in);
        for (;;) {
            ssize_t n = libc_call(recvfrom, r->pair_fd, g_loop.buf, SHIM_DATA_MAX, MSG_DONTWAIT, NULL, NULL);
            if (n > 0)
                continue;
            if (n == 0 || (errno != EAGAIN && errno != EINTR))
                r->hup[1] = true;
            if (n < 0 && errno == EINTR)
                continue;
            break;
        }
        relay_events(r);
        if (r->hup[1])
            relay_end(r);
        return;
    }
    /* Drains: exit ends OUT of open sockets once idle; exec only asks. */
    if (r->out_open) {
        bool out_finished = out->dead || (out->shut && !out->head);
        if (out_finished)
            relay_out_done(r);
        else if (g_loop.exit_ask_seen && relay_out_idle(r))
            relay_out_done(r);
        else if (r->exec_seen != g_loop.exec_ask_seen) {
            r->exec_seen = g_loop.exec_ask_seen;
            bool busy = !relay_out_idle(r);
            pthread_mutex_lock(&g_loop.lock);
            if (busy != r->exec_busy) {
                r->exec_busy = busy;
                g_loop.out_busy += busy ? 1u : (unsigned)-1;
                report_flush_locked(); /* a drain may let the process go: reports first */
                pthread_cond_broadcast(&g_loop.drain_cond);
            }
            pthread_mutex_unlock(&g_loop.lock);
        } else if (r->exec_busy && relay_out_idle(r)) {
            pthread_mutex_lock(&g_loop.lock);
            r->exec_busy = false;
            g_loop.out_busy--;
            report_flush_locked(); /* a drain may let the process go: reports first */
            pthread_cond_broadcast(&g_loop.drain_cond);
            pthread_mutex_unlock(&g_loop.lock);
        }
    }
    relay_events(r);
    bool out_done = out->dead || (out->shut && !out->head);
    bool in_done = in->dead || (in->shut && !in->head);
    if (out_done && in_done)
        relay_end(r);
}

/* Takes the relays relay_start handed over and the drain requests. */
static void loop_take_adds(void)
{
    pthread_mutex_lock(&g_loop.lock);
    struct relay *a = g_loop.adds;
    g_loop.adds = NULL;
    g_loop.exit_ask_seen = g_loop.exit_ask;
    g_loop.exec_ask_seen = g_loop.exec_ask;
    pthread_mutex_unlock(&g_loop.lock);
    while (a) {
        struct relay *r = a;
        a = a->next;
        r->next = g_loop_relays;
        g_loop_relays = r;
        for (int which = 0; which < 2; which++) {
            struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET,
                                      .data.u64 = ((uint64_t)r->id << 1) | (uint64_t)which };
            libc_call(epoll_ctl, g_loop.ep, EPOLL_CTL_ADD, rfd(r, which), &ev);
        }
        r->dirty = true;
    }
    /* a drain request reaches every relay */
    for (struct relay *r = g_loop_relays; r; r = r->next)
        if (r->out_open)
            r->dirty = true;
}

static void *loop_main(void *arg)
{
    (void)arg;
    uint8_t *vmsg = malloc(sizeof(struct shim_mux) + SHIM_MSG_MAX);
    g_loop.buf = malloc(SHIM_DATA_MAX);
    pthread_mutex_lock(&g_loop.lock);
    if (!g_rep.buf)
        g_rep.buf = malloc(REPORT_BUF_BYTES); /* NULL: reports go one at a time */
    pthread_mutex_unlock(&g_loop.lock);
    if (!vmsg || !g_loop.buf)
        return NULL; /* relays stay queued: their programs see no data (never in practice) */
    if (getenv("NKE_SHIM_STATS") && (g_loop.ls.us = malloc(512 * sizeof(*g_loop.ls.us))))
        g_loop.ls.cap = 512;
    struct epoll_event evs[256];
    for (;;) {
        bool waiting = false;
        for (struct relay *r = g_loop_relays; r && !waiting; r = r->next)
            waiting = r->dirs[0].nwaiting || r->dirs[1].nwaiting;
        /* Waits for events without taking them (poll on the epoll), then
         * takes them inside a pass: an event is either still in the epoll
         * (readable) or in the pass under way (odd), never in between, so
         * relay_catch_up cannot mistake a loop about to work for an idle one. */
        struct pollfd pe = { g_loop.ep, POLLIN, 0 };
        int k;
        if (waiting && g_loop.spin_us) {
            /* Polls without sleeping for up to spin_us while a verdict is
             * awaited, yielding between tries (on 2 CPUs the process that
             * decides may need this one). */
            uint64_t end = mono_ns() + (uint64_t)g_loop.spin_us * 1000u;
            do {
                k = libc_call(poll, &pe, 1, 0);
                if (k != 0)
                    break;
                sched_yield();
            } while (mono_ns() < end);
            if (k == 0)
                k = libc_call(poll, &pe, 1, -1);
        } else {
            k = libc_call(poll, &pe, 1, -1);
        }
        if (k < 0 && errno != EINTR)
            break;
        if (k <= 0)
            continue;
        atomic_fetch_add(&g_loop.pass, 1); /* odd: a pass begins */
        int n = libc_call(epoll_wait, g_loop.ep, evs, 256, 0);
        if (n < 0)
            n = 0;
        for (int i = 0; i < n; i++) {
            uint64_t u = evs[i].data.u64;
            uint32_t e = evs[i].events;
            if (u == UINT64_MAX) {
                uint64_t v;
                if (libc_call(read, g_loop.wake, &v, sizeof(v)) < 0) {} /* EAGAIN: already cleared */
                loop_take_adds();
                continue;
            }
            if (u == UINT64_MAX - 1) {
                if (g_loop.link_fd < 0)
                    continue;
                if (e & (EPOLLIN | EPOLLHUP | EPOLLERR))
                    link_verdicts(vmsg);
                if (g_loop.link_fd >= 0 && (e & EPOLLOUT) && g_loop.link_full) {
                    g_loop.link_full = false;
                    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = UINT64_MAX - 1 };
                    libc_call(epoll_ctl, g_loop.ep, EPOLL_CTL_MOD, g_loop.link_fd, &ev);
                    for (struct relay *r = g_loop_relays; r; r = r->next)
                        if (r->link_pending) {
                            r->link_pending = false;
                            r->dirty = true;
                            for (int k = 0; k < 2; k++)
                                if (!dir_send(r, &r->dirs[k]))
                                    link_lost();
                        }
                }
                continue;
            }
            struct relay *r = slot_relay((uint32_t)(u >> 1));
            if (!r || !r->dirs)
                continue;
            int which = (int)(u & 1);
            if (e & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))
                r->rd[which] = true;
            if (e & (EPOLLRDHUP | EPOLLERR | EPOLLHUP))
                r->rdhup[which] = true;
            if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                r->wr[which] = true;
            if (e & EPOLLPRI)
                r->urgent[which] = true;
            if (which == 1 && (e & EPOLLHUP))
                r->hup[1] = true;
            /* A reset is seen by the socket's state, not SO_ERROR, which
             * would clear the error the program is to get (relay_swap). */
            if (which == 0 && (e & EPOLLERR) && r->state == R_RELAYING && tcp_state(r->real_fd) == TCP_CLOSE)
                r->reset_err = ECONNRESET;
            r->dirty = true;
        }
        if (g_loop.link_full && g_loop.link_fd >= 0) {
            struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.u64 = UINT64_MAX - 1 };
            libc_call(epoll_ctl, g_loop.ep, EPOLL_CTL_MOD, g_loop.link_fd, &ev);
        }
        struct relay *next;
        for (struct relay *r = g_loop_relays; r; r = next) {
            next = r->next;
            if (r->dirty)
                relay_run(r);
        }
        report_flush(); /* the pass's reports, before anyone is told it is over */
        if (g_loop.exec_done != g_loop.exec_ask_seen) {
            pthread_mutex_lock(&g_loop.lock);
            g_loop.exec_done = g_loop.exec_ask_seen;
            report_flush_locked(); /* a drain may let the process go: reports first */
            pthread_cond_broadcast(&g_loop.drain_cond);
            pthread_mutex_unlock(&g_loop.lock);
        }
        /* even: the pass is over; what it read is in the pairs */
        atomic_fetch_add(&g_loop.pass, 1);
        if (atomic_load(&g_loop.pass_waiters))
            syscall(SYS_futex, &g_loop.pass, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    }
    free(vmsg);
    return NULL;
}

/* Starts the loop thread if this process has none (g_loop.lock held). */
static bool loop_start_locked(void)
{
    if (g_loop.started)
        return true;
    int ep = fd_high(epoll_create1(EPOLL_CLOEXEC));
    int wake = fd_high(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (ep < 0 || wake < 0) {
        if (ep >= 0) libc_call(close, ep);
        if (wake >= 0) libc_call(close, wake);
        return false;
    }
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = UINT64_MAX };
    libc_call(epoll_ctl, ep, EPOLL_CTL_ADD, wake, &ev);
    g_loop.ep = ep;
    g_loop.wake = wake;
    if (g_loop.link_fd >= 0) {
        struct epoll_event lev = { .events = EPOLLIN, .data.u64 = UINT64_MAX - 1 };
        libc_call(epoll_ctl, ep, EPOLL_CTL_ADD, g_loop.link_fd, &lev);
    }
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 256 * 1024);
    /* The loop must not take the program's signals. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    int rc = pthread_create(&t, &at, loop_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&at);
    if (rc != 0) {
        libc_call(close, ep);
        libc_call(close, wake);
        g_loop.ep = g_loop.wake = -1;
        return false;
    }
    const char *se = getenv("NKE_SHIM_SPIN_US");
    g_loop.spin_us = se && *se ? (uint32_t)strtoul(se, NULL, 10) : 50;
    if (g_loop.spin_us > 10000)
        g_loop.spin_us = 10000;
    g_loop.started = true;
    return true;
}

static void loop_wake(void)
{
    uint64_t one = 1;
    if (libc_call(write, g_loop.wake, &one, sizeof(one)) < 0) {} /* EAGAIN: a wake is pending anyway */
}

/* Replaces fd by a relayed socketpair end. Called right after a successful
 * (or in-progress) connect or accept, before the program has seen the fd
 * for readiness. On any failure the fd is left as it was (fail open). */
void relay_start(int fd, bool incoming, const struct sockaddr *to, socklen_t tolen)
{
    bool connecting = to != NULL;
    int family;
    shim_init();
    if (g_enabled != 1 || fd < 0 || fd >= MAX_FDS || shim_vforked() || !is_tcp_inet(fd, &family))
        return;
    uint8_t fam = family == AF_INET6 ? NKE_AF_INET6 : NKE_AF_INET;
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
        return;
    /* The program's end sends into a small buffer, so the relay never holds
     * much more than the real socket's own buffer (a peer's reset reaches a
     * writer about where it would raw); the relay's end sends into a larger
     * one, so the extra hop never starves a bulk download. FORCE works as
     * root; otherwise net.core.wmem_max caps it. */
    int small = 16 << 10, big = 256 << 10;
    libc_call(setsockopt, sp[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    if (libc_call(setsockopt, sp[1], SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big)) < 0)
        libc_call(setsockopt, sp[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    struct relay *r = calloc(1, sizeof(*r));
    struct dir *dirs = calloc(2, sizeof(*dirs));
    int real = libc_call(fcntl, fd, F_DUPFD_CLOEXEC, 0);
    if (!r || !dirs || real < 0) {
        free(r); free(dirs);
        if (real >= 0) libc_call(close, real);
        libc_call(close, sp[0]); libc_call(close, sp[1]);
        return;
    }
    real = fd_high(real);
    sp[1] = fd_high(sp[1]);
    /* The program's end keeps the program's flags on fd (O_NONBLOCK, CLOEXEC). */
    int fl = libc_call(fcntl, fd, F_GETFL);
    int fdfl = libc_call(fcntl, fd, F_GETFD);
    libc_call(fcntl, sp[0], F_SETFL, fl & O_NONBLOCK);
    libc_call(fcntl, real, F_SETFL, libc_call(fcntl, real, F_GETFL) | O_NONBLOCK);
    libc_call(fcntl, sp[1], F_SETFL, libc_call(fcntl, sp[1], F_GETFL) | O_NONBLOCK);
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    atomic_init(&r->refs, 2); /* the table's and the loop's */
    r->real_fd = real;
    r->pair_fd = sp[1];
    r->dirs = dirs;
    dirs[0] = (struct dir){ .src = 1, .dst = 0, .nke_dir = NKE_DIR_OUT };
    dirs[1] = (struct dir){ .src = 0, .dst = 1, .nke_dir = NKE_DIR_IN };
    r->state = connecting ? R_CONNECTING : R_RELAYING;
    r->incoming = incoming;
    r->connect_done = !connecting;
    r->connect_ok = !connecting;
    if (connecting) {
        /* Until the real connect is done the program's end must not look
         * writable (the kernel's connecting socket is not): its send buffer
         * is filled with bytes the relay takes out and drops when the
         * connect finishes. */
        int nb = libc_call(fcntl, sp[0], F_GETFL);
        libc_call(fcntl, sp[0], F_SETFL, nb | O_NONBLOCK);
        for (;;) {
            ssize_t w = libc_call(sendto, sp[0], g_zeros, sizeof(g_zeros), MSG_DONTWAIT | MSG_NOSIGNAL, NULL, 0);
            if (w <= 0)
                break;
            r->filler += (size_t)w;
        }
        libc_call(fcntl, sp[0], F_SETFL, nb);
    }
    struct stat sb;
    fstat(sp[0], &sb);
    r->prog_ino = sb.st_ino;
    r->prog_dev = sb.st_dev;
    r->out_open = true;

    /* The attach: a socket attached unconnected (bind, options before
     * connect) keeps its id and identity; its second ATTACH is the connect. */
    struct shim_attach a = { .hdr = { .type = SHIM_ATTACH }, .pid = getpid(), .uid = getuid(),
                             .family = fam, .type = 1, .protocol = NKE_PROTO_TCP, .incoming = incoming };
    shim_comm(a.comm);
    local_addr(real, &a.local);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    if (libc_call(getpeername, real, (struct sockaddr *)&ss, &sl) == 0) {
        to_nke_addr(&ss, &a.remote);
    } else if (connecting && tolen >= sizeof(struct sockaddr_in)) {
        /* in progress: the peer is the one connect() named */
        memset(&ss, 0, sizeof(ss));
        memcpy(&ss, to, tolen < sizeof(ss) ? tolen : sizeof(ss));
        to_nke_addr(&ss, &a.remote);
    }
    uint32_t prev = incoming ? 0 : ctl_take_id(fd);

    pthread_mutex_lock(&g_loop.lock);
    if (!loop_start_locked()) {
        pthread_mutex_unlock(&g_loop.lock);
        libc_call(close, sp[0]); libc_call(close, sp[1]);
        atomic_store(&r->refs, 1);
        relay_put(r);
        if (prev)
            mux_detach(prev);
        return;
    }
    mux_open_locked();
    if (prev) {
        uint32_t slot = prev & 0xFFFFFu;
        if (slot < g_loop.nslots && g_loop.slot_gen && ((g_loop.slot_gen[slot] & 0xFFFu) << 20 | slot) == prev)
            g_loop.slots[slot] = r;
        else
            prev = 0;
    }
    r->id = prev ? prev : slot_take_locked(r);
    if (r->id == UINT32_MAX) {
        pthread_mutex_unlock(&g_loop.lock);
        libc_call(close, sp[0]); libc_call(close, sp[1]);
        atomic_store(&r->refs, 1);
        relay_put(r);
        return;
    }
    r->linked = mux_send_locked(r->id, &a, sizeof(a), true);
    r->link_gen = g_loop.link_gen;
    if (!connecting)
        relay_events_locked(r, RELAY_EV_CONNECTED); /* accepted, or connected already */
    g_loop.out_open++;
    pthread_mutex_unlock(&g_loop.lock);

    pthread_mutex_lock(&g_fd_lock);
    if (libc_call(dup3, sp[0], fd, (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) {
        pthread_mutex_unlock(&g_fd_lock);
        SHIM_LOG("dup3: %s", strerror(errno));
        libc_call(close, sp[0]);
        /* the loop never saw it: end it here */
        pthread_mutex_lock(&g_loop.lock);
        g_loop.out_open--;
        struct shim_hdr h = { .type = SHIM_DETACH };
        if (r->linked)
            mux_send_locked(r->id, &h, sizeof(h), true);
        slot_put_locked(r->id);
        pthread_mutex_unlock(&g_loop.lock);
        libc_call(close, sp[1]);
        atomic_store(&r->refs, 1);
        relay_put(r);
        return;
    }
    libc_call(close, sp[0]);
    struct relay *old = g_fds[fd]; /* a stale entry: the number was closed behind our back */
    g_fds[fd] = r;
    fd_table_note_locked(fd);
    pthread_mutex_unlock(&g_fd_lock);
    if (old)
        relay_put(old);
    pthread_mutex_lock(&g_loop.lock);
    r->next = g_loop.adds;
    g_loop.adds = r;
    atomic_fetch_add(&g_loop.live, 1);
    pthread_mutex_unlock(&g_loop.lock);
    loop_wake();
}

/* The program connected its relayed socket again (after a failed connect:
 * the kernel allows it). The relay starts over on the new connection. */
void relay_reconnected(struct relay *r, int fd, bool in_progress)
{
    if (r->remote || r->ended)
        return;
    size_t filler = 0;
    if (in_progress) {
        int nb = libc_call(fcntl, fd, F_GETFL);
        libc_call(fcntl, fd, F_SETFL, nb | O_NONBLOCK);
        for (;;) {
            ssize_t w = libc_call(sendto, fd, g_zeros, sizeof(g_zeros), MSG_DONTWAIT | MSG_NOSIGNAL, NULL, 0);
            if (w <= 0)
                break;
            filler += (size_t)w;
        }
        libc_call(fcntl, fd, F_SETFL, nb);
    }
    pthread_mutex_lock(&g_loop.lock);
    r->restart_filler = filler;
    atomic_store(&r->restart_ask, true);
    pthread_mutex_unlock(&g_loop.lock);
    loop_wake();
}

/* A note (SHIM_OPTION) on a relayed socket, sent by the calling thread:
 * the bytes the program writes after the call are read by the loop later,
 * so they come after it (as the kext sees sf_setoption before later data).
 * Only while a user client is open, as for unconnected sockets. */
void relay_opt_note(struct relay *r, int level, int name, bool is_set)
{
    if (r->remote || !client_open_now())
        return;
    struct shim_option m = { .hdr = { .type = SHIM_OPTION, .len = 0 }, .level = level, .name = name,
                             .is_set = is_set ? 1u : 0u };
    pthread_mutex_lock(&g_loop.lock);
    if (r->linked && r->link_gen == g_loop.link_gen && !r->ended)
        mux_send_locked(r->id, &m, sizeof(m), false);
    pthread_mutex_unlock(&g_loop.lock);
}

/* ---- catching up: what the program's wait calls see ------------------------ */

/* How long a program thread waits for the loop to catch up before it goes
 * on without (fail open: the order is then the scheduler's, as before). The
 * loop handles its events in microseconds once it runs; 50 ms was too short
 * on a loaded 2-core machine (1 EOF of 320 came late once at load 5). */
#define CATCH_UP_MAX_MS 250

/*
 * Called by the program's poll/epoll wrappers (readiness.c) when its wait
 * returned something. In the kernel a peer's FIN or bytes are readable the
 * moment they arrive; here they become so only when the loop has moved
 * them into the socketpair, so a program woken by a socket the shim does
 * not relay (a listening socket: accept is direct) could act on a later
 * event before an earlier one it cannot see yet (redis counts a closed
 * client against maxclients until it reads that client's EOF). So: when
 * the loop has events it has not handled (its epoll is readable, or it is
 * inside a pass), wait until those are handled: the pass under way and, if
 * the epoll was readable, the next one. Bytes held for a verdict stay held:
 * this waits for the loop, never for nke-emud or the user client. True
 * when it waited; false when the loop was idle, there is none, or this is
 * a shim thread. The callers look again either way (an idle loop may have
 * delivered something since the program's wait returned).
 */
bool relay_any(void)
{
    /* one load: called on every wait that returns; the callers check
     * shim_vforked (a system call) only where they would change state */
    return atomic_load_explicit(&g_loop.live, memory_order_relaxed) != 0;
}

bool relay_catch_up(void)
{
    if (!atomic_load_explicit(&g_loop.live, memory_order_relaxed) || !g_loop.started || g_loop.ep < 0 ||
        shim_vforked())
        return false;
    /* What is in the epoll now is taken by the next pass to begin; what
     * the loop took already is in the pass under way (the loop's order:
     * poll, pass odd, take, handle, pass even). Read in that order. */
    struct pollfd p = { g_loop.ep, POLLIN, 0 };
    bool pending = libc_call(poll, &p, 1, 0) > 0;
    unsigned s = atomic_load(&g_loop.pass);
    if (!(s & 1u) && !pending)
        return false;
    unsigned target = (s & 1u) ? (pending ? s + 3 : s + 1) : s + 2;
    uint64_t until = mono_ns() + (uint64_t)CATCH_UP_MAX_MS * 1000000u;
    atomic_fetch_add(&g_loop.pass_waiters, 1);
    for (;;) {
        unsigned cur = atomic_load(&g_loop.pass);
        if ((int)(cur - target) >= 0)
            break;
        /* between passes with nothing in the epoll: everything was taken
         * (only ever inside a pass) and handled; caught up */
        if (!(cur & 1u) && libc_call(poll, &p, 1, 0) == 0 && atomic_load(&g_loop.pass) == cur)
            break;
        uint64_t now = mono_ns();
        if (now >= until) {
            SHIM_LOG("the relay loop did not catch up in %d ms: going on", CATCH_UP_MAX_MS);
            break;
        }
        struct timespec ts = { .tv_sec = (time_t)((until - now) / 1000000000u),
                               .tv_nsec = (long)((until - now) % 1000000000u) };
        syscall(SYS_futex, &g_loop.pass, FUTEX_WAIT_PRIVATE, cur, &ts, NULL, 0);
    }
    atomic_fetch_sub(&g_loop.pass_waiters, 1);
    return true;
}

/* ---- drains and fork ------------------------------------------------------- */

/*
 * Exit drain. In the kernel, bytes a program wrote before it exited still go
 * out; here they may sit in the relay loop (read from the socketpair, held
 * by nke-emud) when exit() would kill it. So the shim's destructor (and
 * _exit) waits, bounded, until every relay has finished its outgoing
 * direction: for a socket the program closed, after the EOF; for one still
 * open at exit, once everything the program wrote is sent (exit_ask: the
 * relay ends OUT when nothing is queued or unread in the socketpair). The
 * program's end is not shut down for this: other threads still run during
 * exit() and would get EPIPE/SIGPIPE writing to it. A forked child's copies
 * are relayed by the parent: the child's exit waits for nothing of them.
 */
void relay_exit_drain(const struct timespec *until, long ms)
{
    pthread_mutex_lock(&g_loop.lock);
    if (!g_loop.started || g_loop.out_open == 0) {
        pthread_mutex_unlock(&g_loop.lock);
        return;
    }
    g_loop.exit_ask = true;
    loop_wake();
    SHIM_LOG("exit: waiting for %u relay(s)", g_loop.out_open);
    while (g_loop.out_open > 0)
        if (pthread_cond_timedwait(&g_loop.drain_cond, &g_loop.lock, until) == ETIMEDOUT) {
            SHIM_LOG("exit: %u relay(s) still sending after %ld ms; the rest is lost", g_loop.out_open, ms);
            break;
        }
    pthread_mutex_unlock(&g_loop.lock);
}

/* The TCP half of exec_drain (exec.c): asks every relay with OUT open
 * whether anything the program wrote is still in it, and waits, bounded by
 * `until`, until none is. OUT stays open: the exec may fail. */
void relay_exec_drain(const struct timespec *until, long ms)
{
    pthread_mutex_lock(&g_loop.lock);
    if (!g_loop.started || g_loop.out_open == 0) {
        pthread_mutex_unlock(&g_loop.lock);
        return;
    }
    unsigned ask = ++g_loop.exec_ask;
    loop_wake();
    while ((int)(g_loop.exec_done - ask) < 0 || g_loop.out_busy > 0)
        if (pthread_cond_timedwait(&g_loop.drain_cond, &g_loop.lock, until) == ETIMEDOUT) {
            SHIM_LOG("exec: %u relay(s) still sending after %ld ms; the rest is lost if the exec succeeds",
                     g_loop.out_busy, ms);
            break;
        }
    pthread_mutex_unlock(&g_loop.lock);
}

pthread_mutex_t *relay_loop_lock(void) { return &g_loop.lock; }

/* After fork: the loop thread does not exist in the child. The relays the
 * child's table names become its copies (remote): the parent's loop relays
 * their bytes; the child keeps only the real socket, for the calls that
 * need it (getpeername, setsockopt...). Every other internal descriptor of
 * the parent's loop is closed here. If the parent had a link, the child
 * opens its own now, before it can lose the right to (setuid). Called
 * with g_loop.lock held since atfork_prepare (fdtable.c): the state below
 * is as the last thread to hold it left it. */
void relay_atfork_child(void)
{
    /* Opened whether or not the parent had one: a child about to drop
     * privileges (nginx's workers) could not open it later. */
    bool had_link = g_enabled == 1;
    /* relays of the loop (and ones still being handed over) */
    struct relay *lists[2] = { g_loop_relays, g_loop.adds };
    for (int k = 0; k < 2; k++)
        for (struct relay *r = lists[k]; r; r = r->next) {
            if (r->pair_fd >= 0)
                libc_call(close, r->pair_fd);
            r->pair_fd = -1;
            r->remote = true;
        }
    /* refs: the child's table entries only */
    for (int fd = 0; fd < g_fd_top; fd++)
        if (g_fds[fd])
            atomic_store(&g_fds[fd]->refs, 0);
    for (int fd = 0; fd < g_fd_top; fd++)
        if (g_fds[fd]) {
            atomic_fetch_add(&g_fds[fd]->refs, 1);
            g_fds[fd]->remote = true;
            if (g_fds[fd]->pair_fd >= 0) {
                libc_call(close, g_fds[fd]->pair_fd);
                g_fds[fd]->pair_fd = -1;
            }
        }
    /* Relays no entry names (the program closed them; the parent drains
     * them): their real sockets are the parent's business. */
    for (int k = 0; k < 2; k++)
        for (struct relay *r = lists[k]; r; r = r->next)
            if (atomic_load(&r->refs) == 0 && r->real_fd >= 0) {
                libc_call(close, r->real_fd);
                r->real_fd = -1;
            }
    g_loop_relays = NULL;
    g_loop.adds = NULL;
    if (g_loop.ep >= 0)
        libc_call(close, g_loop.ep);
    if (g_loop.wake >= 0)
        libc_call(close, g_loop.wake);
    if (g_loop.link_fd >= 0)
        libc_call(close, g_loop.link_fd);
    g_loop.ep = g_loop.wake = g_loop.link_fd = -1;
    g_loop.started = false;
    g_loop.link_full = false;
    __atomic_store_n(&g_rep.n, 0, __ATOMIC_RELAXED); /* the parent's reports, for the parent's link */
    g_rep.used = 0;
    free(g_loop.slots);
    free(g_loop.slot_gen);
    g_loop.slots = NULL;
    g_loop.slot_gen = NULL;
    g_loop.nslots = g_loop.free_slot = 0;
    g_loop.out_open = g_loop.out_busy = 0;
    g_loop.exit_ask = false;
    atomic_store(&g_loop.live, 0);
    atomic_store(&g_loop.pass, 0);
    atomic_store(&g_loop.pass_waiters, 0);
    g_loop.buf = NULL; /* the parent's loop thread's; a child's loop allocates its own */
    /* Parent threads that waited on it (drains) are not here. */
    pthread_cond_init(&g_loop.drain_cond, NULL);
    if (had_link)
        mux_open_locked();
}

/* Called by the program's read/write calls on a relayed fd whose peer
 * reset the connection (g_resets_pending): fd becomes the real socket
 * itself, which holds the kernel's error for the call about to be made.
 * Made by the program's own thread, inside its call on fd, so the number
 * cannot be closed and reused meanwhile. */
int relay_swap(int fd)
{
    int rc = 0;
    struct relay *r = relay_get(fd);
    if (!r)
        return 0;
    if (atomic_load(&r->reset_swap) && !r->remote && !shim_vforked()) {
        int fdfl = libc_call(fcntl, fd, F_GETFD);
        int fl = libc_call(fcntl, fd, F_GETFL);
        pthread_mutex_lock(&g_fd_lock);
        bool ok = g_fds[fd] == r &&
                  libc_call(dup3, r->real_fd, fd, (fdfl > 0 && (fdfl & FD_CLOEXEC)) ? O_CLOEXEC : 0) >= 0;
        if (ok)
            g_fds[fd] = NULL;
        pthread_mutex_unlock(&g_fd_lock);
        if (ok) {
            /* the real socket's file status flags are the relay's (non-blocking) */
            libc_call(fcntl, fd, F_SETFL, fl);
            /* The relay's own call took the reset's error from the socket:
             * this call fails with it, as the program's first call after a
             * reset does raw (the socket then says EOF or EPIPE). */
            if (r->taken_err) {
                errno = r->taken_err;
                rc = -1;
            }
            relay_put(r); /* the table's */
        }
    }
    relay_put(r);
    return rc;
}

/* ---- exec: relayed sockets the new image inherits -------------------------- */

/*
 * exec replaces the image, the relay loop with it. A relayed socket whose
 * program fd is not close-on-exec goes on in the new image:
 *  - relayed by another process (a forked child's copy, say sshd's
 *    re-exec): the new image gets the real socket's copy too, so its
 *    getpeername, setsockopt... are the real socket's ("r=N:R");
 *  - relayed by this process's loop: the real socket itself takes the fd's
 *    place (its bytes were drained first, exec_drain), and the new image's
 *    shim relays it anew ("s=N:incoming").
 * NKE_SHIM_INHERIT carries the list; the new image's constructor reads and
 * removes it (relay_inherit). A failed exec puts everything back.
 */
#define INHERIT_ENV "NKE_SHIM_INHERIT"

char *relay_exec_prepare(struct exec_undo *u)
{
    memset(u, 0, sizeof(*u));
    size_t cap = 256, len = 0;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    len = (size_t)snprintf(s, cap, "%s=", INHERIT_ENV);
    size_t base = len;
    pthread_mutex_lock(&g_fd_lock);
    for (int fd = 0; fd < g_fd_top && u->n < EXEC_UNDO_MAX; fd++) {
        struct relay *r = g_fds[fd];
        if (!r)
            continue;
        int fdfl = libc_call(fcntl, fd, F_GETFD);
        if (fdfl < 0 || (fdfl & FD_CLOEXEC) || !relay_is_current(r, fd) || r->real_fd < 0)
            continue;
        char item[64];
        struct exec_undo_item *it = &u->items[u->n];
        if (r->remote) {
            int rfl = libc_call(fcntl, r->real_fd, F_GETFD);
            if (rfl < 0)
                continue;
            libc_call(fcntl, r->real_fd, F_SETFD, rfl & ~FD_CLOEXEC);
            *it = (struct exec_undo_item){ .fd = r->real_fd, .saved = -1, .fdflags = rfl };
            snprintf(item, sizeof(item), "r=%d:%d,", fd, r->real_fd);
        } else {
            int unread = 0;
            if (ioctl(fd, FIONREAD, &unread) < 0 || unread > 0)
                continue; /* the program has bytes to read in the pair: they would be lost */
            int saved = fd_high(libc_call(fcntl, fd, F_DUPFD_CLOEXEC, 0));
            if (saved < 0)
                continue;
            int fl = libc_call(fcntl, fd, F_GETFL);
            if (libc_call(dup3, r->real_fd, fd, 0) < 0) {
                libc_call(close, saved);
                continue;
            }
            /* the program's blocking mode, on the real socket now at fd */
            libc_call(fcntl, fd, F_SETFL, fl);
            *it = (struct exec_undo_item){ .fd = fd, .saved = saved, .fdflags = fdfl, .real = r->real_fd };
            snprintf(item, sizeof(item), "s=%d:%d,", fd, r->incoming ? 1 : 0);
        }
        u->n++;
        size_t il = strlen(item);
        if (len + il + 1 > cap) {
            char *t = realloc(s, cap * 2);
            if (!t)
                break;
            s = t;
            cap *= 2;
        }
        memcpy(s + len, item, il + 1);
        len += il;
    }
    pthread_mutex_unlock(&g_fd_lock);
    if (len == base) {
        free(s);
        return NULL;
    }
    return s;
}

void relay_exec_failed(struct exec_undo *u)
{
    for (unsigned i = 0; i < u->n; i++) {
        struct exec_undo_item *it = &u->items[i];
        if (it->saved >= 0) {
            libc_call(dup3, it->saved, it->fd, (it->fdflags & FD_CLOEXEC) ? O_CLOEXEC : 0);
            libc_call(close, it->saved);
            libc_call(fcntl, it->real, F_SETFL, libc_call(fcntl, it->real, F_GETFL) | O_NONBLOCK); /* the loop's again */
        } else {
            libc_call(fcntl, it->fd, F_SETFD, it->fdflags);
        }
    }
    u->n = 0;
}

/* After exec (constructor): the relayed sockets the old image passed. */
void relay_inherit(void)
{
    const char *e = getenv(INHERIT_ENV);
    if (!e || !*e)
        return;
    char *list = strdup(e);
    unsetenv(INHERIT_ENV);
    if (!list)
        return;
    shim_init();
    struct relay *by_real[64] = { 0 };
    int reals[64];
    int nreal = 0;
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        int n = -1, x = -1;
        char kind = 0;
        if (sscanf(tok, "%c=%d:%d", &kind, &n, &x) != 3 || n < 0 || n >= MAX_FDS)
            continue;
        struct stat sb;
        int family;
        if (kind == 's') {
            if (fstat(n, &sb) == 0 && S_ISSOCK(sb.st_mode))
                relay_start(n, x == 1, NULL, 0);
            continue;
        }
        if (kind != 'r' || fstat(n, &sb) < 0 || !S_ISSOCK(sb.st_mode) || !is_tcp_inet(x, &family))
            continue;
        struct relay *r = NULL;
        for (int i = 0; i < nreal; i++)
            if (reals[i] == x)
                r = by_real[i];
        if (!r) {
            r = calloc(1, sizeof(*r));
            if (!r)
                continue;
            pthread_mutex_init(&r->lock, NULL);
            pthread_cond_init(&r->cond, NULL);
            r->real_fd = x;
            r->pair_fd = -1;
            r->remote = true;
            r->connect_done = r->connect_ok = true;
            r->prog_ino = sb.st_ino;
            r->prog_dev = sb.st_dev;
            libc_call(fcntl, x, F_SETFD, FD_CLOEXEC);
            if (nreal < 64) {
                reals[nreal] = x;
                by_real[nreal++] = r;
            }
        }
        atomic_fetch_add(&r->refs, 1);
        pthread_mutex_lock(&g_fd_lock);
        struct relay *old = g_fds[n];
        g_fds[n] = r;
        fd_table_note_locked(n);
        pthread_mutex_unlock(&g_fd_lock);
        if (old)
            relay_put(old);
    }
    free(list);
}

/* Before the process changes its uid (setuid and friends): its link to
 * nke-emud is opened now, while the runtime directory is still reachable. */
void relay_link_early(void)
{
    shim_init();
    if (g_enabled != 1 || shim_vforked())
        return;
    pthread_mutex_lock(&g_loop.lock);
    mux_open_locked();
    pthread_mutex_unlock(&g_loop.lock);
    client_open_now(); /* maps shim.state too */
}

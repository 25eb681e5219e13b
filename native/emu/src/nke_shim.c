/*
 * libnkeshim.so: LD_PRELOAD shim that puts the processes started under
 * `nke-emu run` behind nke-emud's filter.
 *
 * Shape (b) of DESIGN.md: when a TCP socket (IPv4/IPv6) connects or is
 * accepted, the program's descriptor is replaced (dup2) by one end of a
 * Unix socketpair; a relay thread moves bytes between the other end and the
 * real socket, asking nke-emud for a verdict on each piece. Readiness
 * (poll/select/epoll/libuv) is then natural: the program sees a real socket
 * whose bytes arrive when the verdict says so. Only calls that need the real
 * socket (getsockname, getpeername, setsockopt, getsockopt, shutdown) are
 * redirected. The swap happens before the program can register the fd with
 * epoll (connect/accept return first).
 *
 * Layers (after Samba's socket_wrapper): libc_* passthroughs resolved lazily
 * with dlsym(RTLD_NEXT); the relay implementation; thin public symbols that go
 * straight to libc when the fd is not relayed or the shim is off.
 *
 * Fail open: no shim.sock, or nke-emud dying, means bytes flow unchanged.
 *
 * Lock order: g_fd_lock, then relay->lock. The relay thread takes only its
 * relay->lock.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "nke_emu_proto.h"
#include "nke_shim_link.h"

#define SHIM_LOG(fmt, ...)                                                                   \
    do {                                                                                     \
        if (g_debug)                                                                         \
            fprintf(stderr, "nkeshim[%d] %s: " fmt "\n", (int)getpid(), __func__, ##__VA_ARGS__); \
    } while (0)

static int g_debug;

/* ---- layer 1: libc passthroughs ---------------------------------------- */

#define LIBC(ret, name, params)                                                  \
    static ret(*p_##name) params;                                                \
    static void *sym_##name(void)                                                \
    {                                                                            \
        if (!p_##name)                                                           \
            *(void **)&p_##name = dlsym(RTLD_NEXT, #name);                       \
        return (void *)p_##name;                                                 \
    }

LIBC(int, connect, (int, const struct sockaddr *, socklen_t))
LIBC(int, accept, (int, struct sockaddr *, socklen_t *))
LIBC(int, accept4, (int, struct sockaddr *, socklen_t *, int))
LIBC(int, close, (int))
LIBC(int, getsockname, (int, struct sockaddr *, socklen_t *))
LIBC(int, getpeername, (int, struct sockaddr *, socklen_t *))
LIBC(int, setsockopt, (int, int, int, const void *, socklen_t))
LIBC(int, getsockopt, (int, int, int, void *, socklen_t *))
LIBC(int, shutdown, (int, int))
LIBC(int, dup2, (int, int))
LIBC(int, dup3, (int, int, int))
LIBC(int, socket, (int, int, int))
LIBC(ssize_t, sendto, (int, const void *, size_t, int, const struct sockaddr *, socklen_t))
LIBC(ssize_t, recvfrom, (int, void *, size_t, int, struct sockaddr *, socklen_t *))
LIBC(ssize_t, sendmsg, (int, const struct msghdr *, int))
LIBC(ssize_t, recvmsg, (int, struct msghdr *, int))
LIBC(int, execve, (const char *, char *const[], char *const[]))

#define libc_call(name, ...) (sym_##name(), p_##name(__VA_ARGS__))

/* ---- state ------------------------------------------------------------- */

/* Notes (SHIM_OPTION) other threads hand to a relay for its link; the
 * largest note is a shim_option. */
#define RELAY_NOTES_MAX 32
struct relay_note {
    uint32_t len;
    uint8_t msg[sizeof(struct shim_option)];
};

/* One relayed socket. Refcounted: one ref per fd-table entry naming it and
 * one for the relay thread; real_fd is closed with the last ref, so a
 * getpeername on the program's fd never hits a reused descriptor. */
struct relay {
    pthread_mutex_t lock;     /* protects connect_done, connect_err */
    pthread_cond_t cond;
    atomic_int refs;
    int real_fd;              /* the real TCP socket (owned) */
    int pair_fd;              /* the relay's end of the socketpair (owned by the thread) */
    int link_fd;              /* shim.sock connection, -1 once nke-emud is gone */
    bool connect_done;
    int connect_err;
    /* nke-emud's shim.state, mapped read-only (NULL: ask for every chunk).
     * Owned by the relay thread, unmapped when it ends. */
    const struct shim_state *st;
    /* The program -> network direction is still moving (set by relay_start,
     * cleared once by the relay thread under g_drain_lock). */
    bool out_open;
    /* Notes for the link, which only the relay thread writes: the program's
     * threads append under note_lock and write wake_fd (an eventfd the relay
     * polls); the relay moves them into its outgoing queue under note_lock,
     * right before it reads the program's bytes, so a note is sent ahead of
     * every byte written after the call it reports (as the kext sees
     * sf_setoption before later data). A full queue drops the note. */
    pthread_mutex_t note_lock;
    struct relay_note notes[RELAY_NOTES_MAX];
    unsigned nnotes;          /* protected by note_lock */
    int wake_fd;              /* eventfd, closed with the last ref (others write it) */
    /* Set by shim_dtor for a socket still open at exit: the relay ends its
     * outgoing direction once everything the program wrote is sent. */
    atomic_bool exit_drain;
    /* Exec drain (see exec_drain): flush_ask is set by exec_drain (under
     * g_drain_lock) and read by the relay without a lock, only to skip the
     * lock while no exec waits; flushed (protected by g_drain_lock) is set by
     * the relay when OUT is empty while asked, cleared when it is not.
     * drain_next links the relays with out_open (g_out_relays, same lock). */
    atomic_bool flush_ask;
    bool flushed;
    struct relay *drain_next;
};

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
static pid_t g_pid; /* this process's pid (exec_drain): set by shim_ctor and atfork_child */
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

/* The one deadline of an exit or exec drain: now + NKE_SHIM_EXIT_WAIT_MS
 * (default 5000: a chunk held by a user client is released at its deadline
 * anyway), on CLOCK_REALTIME as pthread_cond_timedwait's default clock. The
 * UDP and the TCP wait both use it, so the whole drain is bounded once. */
static struct timespec drain_deadline(long *ms_out)
{
    long ms = 5000;
    const char *e = getenv("NKE_SHIM_EXIT_WAIT_MS");
    if (e && *e)
        ms = strtol(e, NULL, 10);
    if (ms < 0)
        ms = 0;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    *ms_out = ms;
    return until;
}

/* One outgoing UDP datagram from the program's send call until its real
 * send (or drop). Owned by its udp_state's queue, under u->lock. */
struct udp_dgram {
    struct udp_dgram *next;
    uint32_t seq;             /* the DATA's seq (unused when never asked) */
    bool sent;                /* DATA is on the link */
    bool decided;             /* action (and mod) final */
    uint32_t action;          /* once decided: NKE_ACT_* */
    uint8_t *msg;             /* shim_hdr + the program's bytes (owned) */
    size_t len;               /* bytes at msg + sizeof(shim_hdr) */
    uint8_t *mod;             /* ALLOW_MODIFIED: replacement being assembled (owned) */
    size_t mod_len;
    struct sockaddr_storage to; /* the program's destination; tolen 0: none (connected) */
    socklen_t tolen;
    int flags;                /* the program's flags, MSG_DONTWAIT and MSG_ZEROCOPY removed */
    void *control;            /* sendmsg ancillary data, copied (owned), or NULL */
    size_t controllen;
};

/* A thread in recv waiting for the verdict on the datagram it received.
 * Lives on that thread's stack, linked in u->inw while it waits; the worker
 * fills action/mod and sets done (all under u->lock). */
struct udp_in_wait {
    struct udp_in_wait *next;
    uint32_t seq;
    bool sent, done;
    uint8_t *msg;             /* shim_hdr + bytes, owned by the waiter */
    size_t len;
    uint32_t action;
    uint8_t *mod;             /* handed to the waiter */
    size_t mod_len;
};

/* One UDP socket made by socket(). See "UDP: queued verdicts" below for
 * the protocol, the worker and who owns which descriptor. refs: one per
 * fd-table entry naming it (dup, fcntl F_DUPFD, dup2/3), one per call in
 * progress, one for the worker while it runs. Every field but refs and
 * family is protected by lock. */
struct udp_state {
    pthread_mutex_t lock;
    pthread_cond_t cond;      /* broadcast: window room, IN verdicts */
    atomic_int refs;
    int link;                 /* program threads' end for DATA; -1 before first use or once gone */
    bool tried;
    uint8_t family;
    bool failed;              /* link lost: fail open from now on */
    bool worker;              /* a worker thread runs (it holds a ref) */
    bool link_full;           /* a DATA met EAGAIN: the worker polls POLLOUT */
    bool want_out;            /* the real socket's buffer was full: the worker polls POLLOUT */
    int sock, wlink, wake;    /* the worker's: dup of the socket, dup of link, eventfd (-1: none) */
    struct udp_dgram *head, *tail;
    unsigned nq;              /* datagrams queued (the window) */
    uint32_t out_seq, in_seq;
    struct udp_in_wait *inw;  /* recv threads waiting, in DATA order */
    int async_err;            /* last error of a real send, for the next send call */
    unsigned fork_mark;       /* udp_atfork_child's mark */
};

#define MAX_FDS 65536
/* An unconnected TCP socket's link to nke-emud, opened at its first bind,
 * listen or setsockopt while a user client is open (the kext attaches at
 * socket creation; attaching lazily keeps uninteresting sockets free).
 * Refcounted like udp_state; lock serializes sends on link. */
struct ctl_sock {
    pthread_mutex_t lock;
    atomic_int refs;
    int link;                 /* -1: none yet, or nke-emud went away */
    bool tried;
};

/* fd -> relay, fd -> udp_state, fd -> ctl_sock. protected by g_fd_lock */
static struct relay *g_fds[MAX_FDS];
static struct udp_state *g_udp[MAX_FDS];
static struct ctl_sock *g_ctls[MAX_FDS];
static void udp_put(struct udp_state *u);
static void ctl_put(struct ctl_sock *k);
static void ctl_connected(int fd);
static int ctl_take_link(int fd);
static bool client_open_now(void);
static void relay_note(struct relay *r, const void *m, size_t n);
static void relay_opt_note(struct relay *r, int level, int name, bool is_set);
static void ctl_option(int fd, int level, int name, bool is_set);
static pthread_mutex_t g_fd_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_shim_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static char g_state_path[PATH_MAX + 32];
static int g_enabled = -1;    /* -1 unknown, 0 off, 1 on; set once in shim_init */

static void relay_put(struct relay *r)
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

static void shim_init(void)
{
    if (g_enabled >= 0)
        return;
    g_debug = getenv("NKE_SHIM_DEBUG") != NULL;
    const char *e = getenv(NKE_EMU_DIR_ENV);
    char dir[PATH_MAX];
    if (e && *e)
        snprintf(dir, sizeof(dir), "%s", e);
    else if ((e = getenv("XDG_RUNTIME_DIR")) && *e)
        snprintf(dir, sizeof(dir), "%s/nke-emu", e);
    else
        snprintf(dir, sizeof(dir), "/tmp/nke-emu-%u", (unsigned)getuid());
    snprintf(g_state_path, sizeof(g_state_path), "%s/%s", dir, NKE_EMU_SHIM_STATE);
    int n = snprintf(g_shim_path, sizeof(g_shim_path), "%s/%s", dir, NKE_EMU_SHIM_SOCK);
    g_enabled = (n > 0 && (size_t)n < sizeof(g_shim_path) && getenv("NKE_SHIM_OFF") == NULL) ? 1 : 0;
}

static int link_open(void)
{
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    memcpy(sa.sun_path, g_shim_path, sizeof(g_shim_path));
    if (libc_call(connect, fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        libc_call(close, fd);
        return -1;
    }
    return fd;
}

static void to_nke_addr(const struct sockaddr_storage *ss, struct nke_addr *a)
{
    memset(a, 0, sizeof(*a));
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s = (const void *)ss;
        a->family = NKE_AF_INET;
        a->port = ntohs(s->sin_port);
        memcpy(a->addr, &s->sin_addr, 4);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const void *)ss;
        a->family = NKE_AF_INET6;
        a->port = ntohs(s->sin6_port);
        a->scope_id = s->sin6_scope_id;
        memcpy(a->addr, &s->sin6_addr, 16);
    }
}

/* Opens a link for fd and reports the socket (SHIM_ATTACH: process, local
 * address, and for TCP the peer and whether it was accepted). Returns the
 * link, or -1 when nke-emud is absent or gone (the caller fails open). */
static bool link_attach_on(int link, int fd, uint8_t family, uint8_t protocol, bool incoming);
static int link_attach(int fd, uint8_t family, uint8_t protocol, bool incoming)
{
    int link = link_open();
    if (link < 0)
        return -1;
    if (!link_attach_on(link, fd, family, protocol, incoming)) {
        libc_call(close, link);
        return -1;
    }
    return link;
}

/* Sends the SHIM_ATTACH on link (a fresh one, or for a connect the link of
 * the socket attached unconnected: nke-emud then reports the connect only).
 * False when the send failed (the caller closes the link). */
static bool link_attach_on(int link, int fd, uint8_t family, uint8_t protocol, bool incoming)
{
    struct shim_attach a = { .hdr = { .type = SHIM_ATTACH }, .pid = getpid(), .uid = getuid(),
                             .family = family, .type = protocol == NKE_PROTO_TCP ? 1 : 2,
                             .protocol = protocol, .incoming = incoming };
    FILE *f = fopen("/proc/self/comm", "re");
    if (f) {
        if (fgets(a.comm, sizeof(a.comm), f))
            a.comm[strcspn(a.comm, "\n")] = 0;
        fclose(f);
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    if (libc_call(getsockname, fd, (struct sockaddr *)&ss, &sl) == 0)
        to_nke_addr(&ss, &a.local);
    sl = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    if (protocol == NKE_PROTO_TCP && libc_call(getpeername, fd, (struct sockaddr *)&ss, &sl) == 0)
        to_nke_addr(&ss, &a.remote);
    /* Room on the link for a full window of DATA both ways, so sends rarely
     * meet EAGAIN (they would then wait for POLLOUT: correct, slower).
     * FORCE works as root; otherwise net.core.wmem_max caps it. */
    int sz = (int)(2 * SHIM_WINDOW_CHUNKS * (SHIM_DATA_MAX + 4096));
    if (libc_call(setsockopt, link, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz)) < 0)
        libc_call(setsockopt, link, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
    return send(link, &a, sizeof(a), MSG_NOSIGNAL) >= 0;
}

/* ---- layer 2: the relay ------------------------------------------------ */

static const struct shim_state *state_map(void)
{
    int fd = open(g_state_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    void *m = mmap(NULL, sizeof(struct shim_state), PROT_READ, MAP_SHARED, fd, 0);
    libc_call(close, fd);
    if (m == MAP_FAILED)
        return NULL;
    if (((const struct shim_state *)m)->magic != SHIM_STATE_MAGIC) {
        munmap(m, sizeof(struct shim_state));
        return NULL;
    }
    return m;
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

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
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

/* Validates one VERDICT message (h, then h->len bytes at body, msg_len in
 * total) and appends its modified bytes to *mod / *mod_len (realloc'd; the
 * caller owns them). Returns 1 when the verdict is complete, 0 when more
 * pieces follow, -1 when malformed or out of memory (fail open). Shared by
 * the TCP relay and UDP's synchronous round trip. */
static int verdict_piece(const struct shim_hdr *h, const uint8_t *body, size_t msg_len, uint8_t **mod,
                         size_t *mod_len)
{
    if (h->type != SHIM_VERDICT || h->len != msg_len - sizeof(*h))
        return -1;
    if (h->action != NKE_ACT_ALLOW_MODIFIED)
        return h->action == NKE_ACT_ALLOW || h->action == NKE_ACT_DROP ? 1 : -1;
    uint8_t *m = realloc(*mod, *mod_len + h->len + 1);
    if (!m)
        return -1;
    *mod = m;
    memcpy(m + *mod_len, body, h->len);
    *mod_len += h->len;
    return (h->flags & SHIM_F_MORE) ? 0 : 1;
}

/* msg: the relay thread's receive buffer of SHIM_MSG_MAX bytes (not TLS:
 * a large static TLS block shrinks every thread's stack in the program, and
 * node's small-stack threads then fail to start). Reads every verdict the
 * link has now; a verdict may name any waiting chunk of its direction
 * (the client decides in any order), and is applied when all before it are. */
#define SHIM_MSG_MAX (sizeof(struct shim_hdr) + SHIM_PIECE)
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

static bool is_tcp_inet(int fd, int *family)
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
static void relay_start(int fd, bool incoming)
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

/* A ref on fd's relay, or NULL when fd is not relayed. */
static struct relay *relay_get(int fd)
{
    if (fd < 0 || fd >= MAX_FDS)
        return NULL;
    pthread_mutex_lock(&g_fd_lock);
    struct relay *r = g_fds[fd];
    if (r)
        atomic_fetch_add(&r->refs, 1);
    pthread_mutex_unlock(&g_fd_lock);
    return r;
}

static void fd_forget(int fd)
{
    if (fd < 0 || fd >= MAX_FDS)
        return;
    pthread_mutex_lock(&g_fd_lock);
    struct relay *r = g_fds[fd];
    g_fds[fd] = NULL;
    struct udp_state *u = g_udp[fd];
    __atomic_store_n(&g_udp[fd], NULL, __ATOMIC_RELEASE);
    struct ctl_sock *k = g_ctls[fd];
    g_ctls[fd] = NULL;
    pthread_mutex_unlock(&g_fd_lock);
    if (r)
        relay_put(r);
    if (u)
        udp_put(u);
    if (k)
        ctl_put(k);
}

/* `to` now names what `from` names (dup, dup2, dup3, fcntl F_DUPFD*): it
 * shares from's relay, UDP state and control link (one ref each). */
static void fd_copy(int from, int to)
{
    if (to < 0 || to >= MAX_FDS || from == to)
        return;
    struct relay *r = relay_get(from);
    pthread_mutex_lock(&g_fd_lock);
    struct udp_state *u = from >= 0 && from < MAX_FDS ? g_udp[from] : NULL;
    struct ctl_sock *k = from >= 0 && from < MAX_FDS ? g_ctls[from] : NULL;
    if (u)
        atomic_fetch_add(&u->refs, 1);
    if (k)
        atomic_fetch_add(&k->refs, 1);
    struct relay *old = g_fds[to];
    struct udp_state *oldu = g_udp[to];
    struct ctl_sock *oldk = g_ctls[to];
    g_fds[to] = r;
    __atomic_store_n(&g_udp[to], u, __ATOMIC_RELEASE);
    g_ctls[to] = k;
    pthread_mutex_unlock(&g_fd_lock);
    if (old)
        relay_put(old);
    if (oldu)
        udp_put(oldu);
    if (oldk)
        ctl_put(oldk);
}

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

static bool udp_may_defer_now(void);
static int (*p_fcntl)(int, int, ...);
static void *sym_fcntl(void);

/* Called with u->lock held. Opens the link and reports the socket. */
static void udp_attach_locked(struct udp_state *u, int fd)
{
    u->tried = true;
    u->link = link_attach(fd, u->family, NKE_PROTO_UDP, false);
}

/* A ref on fd's UDP state, or NULL. */
static struct udp_state *udp_get(int fd)
{
    if (fd < 0 || fd >= MAX_FDS)
        return NULL;
    pthread_mutex_lock(&g_fd_lock);
    struct udp_state *u = g_udp[fd];
    if (u)
        atomic_fetch_add(&u->refs, 1);
    pthread_mutex_unlock(&g_fd_lock);
    return u;
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
            r = send(u->link, m, n, MSG_NOSIGNAL | MSG_DONTWAIT);
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
        ssize_t n = recv(u->wlink, msg, SHIM_MSG_MAX, MSG_DONTWAIT);
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
        int k = poll(p, (nfds_t)np, -1);
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
    int sock = p_fcntl(fd, F_DUPFD_CLOEXEC, 0);
    int wlink = p_fcntl(u->link, F_DUPFD_CLOEXEC, 0);
    int wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
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
    return (flags & MSG_DONTWAIT) || (fcntl(fd, F_GETFL) & O_NONBLOCK);
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

/* After fork: the parent's worker does not exist here and its queued
 * datagrams are the parent's to send. Each of the child's UDP states is
 * reset to "never attached": its first datagram attaches a link of its own
 * (the child's pid). Nothing else runs in the child yet (no locks taken). */
static void udp_atfork_child(void)
{
    static unsigned mark;
    mark++;
    pthread_mutex_init(&g_udp_drain_lock, NULL);
    pthread_cond_init(&g_udp_drain_cond, NULL);
    g_udp_queued = 0;
    for (int fd = 0; fd < MAX_FDS; fd++) {
        struct udp_state *u = g_udp[fd];
        if (!u || u->fork_mark == mark)
            continue; /* shared by several fds: reset once */
        u->fork_mark = mark;
        pthread_mutex_init(&u->lock, NULL);
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
static void udp_exit_drain(const struct timespec *until, long ms)
{
    pthread_mutex_lock(&g_udp_drain_lock);
    while (g_udp_queued)
        if (pthread_cond_timedwait(&g_udp_drain_cond, &g_udp_drain_lock, until) == ETIMEDOUT) {
            SHIM_LOG("drain: %u UDP datagram(s) still queued after %ld ms; lost", g_udp_queued, ms);
            break;
        }
    pthread_mutex_unlock(&g_udp_drain_lock);
}

static bool is_udp(int fd)
{
    if (fd < 0 || fd >= MAX_FDS)
        return false;
    /* Unlocked read of one pointer: a stale answer only means one datagram
     * takes the other path, as if the close had raced it. */
    return __atomic_load_n(&g_udp[fd], __ATOMIC_ACQUIRE) != NULL;
}

/* After fork the child has no relay threads; its copies of the relay fds
 * would keep the parent's connections open, so they are closed. The child's
 * program fds still reach the parent's relays (shared socketpair). */
static void atfork_child(void)
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
    /* Control links are the parent's sockets' identities: the child's
     * copies are closed (the parent's refs stay with the parent). */
    for (int fd = 0; fd < MAX_FDS; fd++) {
        struct ctl_sock *k = g_ctls[fd];
        if (!k)
            continue;
        g_ctls[fd] = NULL;
        if (k->link >= 0)
            libc_call(close, k->link);
        k->link = -1;
    }
    udp_atfork_child(); /* shim-udp: UDP workers and queues */
    g_pid = getpid();
    pthread_mutex_init(&g_fd_lock, NULL);
}

static void atfork_prepare(void) { pthread_mutex_lock(&g_fd_lock); }
static void atfork_parent(void) { pthread_mutex_unlock(&g_fd_lock); }

__attribute__((constructor)) static void shim_ctor(void)
{
    g_pid = getpid();
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
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

/* See "Exit drain" above. drain_deadline bounds the UDP and the TCP wait
 * together. */
__attribute__((destructor)) static void shim_dtor(void)
{
    long ms;
    struct timespec until = drain_deadline(&ms);
    udp_exit_drain(&until, ms); /* shim-udp: queued UDP datagrams first */
    pthread_mutex_lock(&g_drain_lock);
    if (g_out_open == 0) {
        pthread_mutex_unlock(&g_drain_lock);
        return;
    }
    unsigned asked = exit_drain_open_relays();
    SHIM_LOG("exit: waiting for %u relay(s), %u of sockets still open", g_out_open, asked);
    while (g_out_open > 0) {
        if (pthread_cond_timedwait(&g_drain_cond, &g_drain_lock, &until) == ETIMEDOUT) {
            SHIM_LOG("exit: %u relay(s) still sending after %ld ms; the rest is lost", g_out_open, ms);
            break;
        }
    }
    pthread_mutex_unlock(&g_drain_lock);
}

/*
 * Exec drain. exec replaces the image and with it the relay and UDP worker
 * threads, so bytes the program wrote before exec that are still in a relay
 * (queued, held by nke-emud, in the splice pipe, unread in the socketpair) or
 * in a UDP queue would be lost, where the kernel would send them. Before the
 * real exec, exec_drain waits, bounded by drain_deadline, until (a) every
 * queued UDP datagram is sent or dropped and (b) every relay on g_out_relays
 * (sockets still open and sockets the program closed) has an empty OUT side
 * (flushed) or has ended it. Unlike the exit drain it does NOT end OUT of an
 * open socket: the exec may fail and the program go on writing to it. For a
 * closed socket an empty OUT is enough: its real descriptor is CLOEXEC, so
 * the exec closes it and the kernel sends the FIN after the buffered bytes.
 *
 * Still not like the kernel: a relayed TCP socket the program does not mark
 * CLOEXEC is inherited by the new image as what the program's fd really is,
 * the program's end of an AF_UNIX socketpair. Its relay thread is gone, the
 * relay's end (pair_fd) and the real socket (real_fd, F_DUPFD_CLOEXEC in
 * relay_start) are closed by the exec, so the peer sees the connection
 * closed, and the new image reads whatever the relay had already written
 * into the socketpair, then EOF; its writes fail with EPIPE (SIGPIPE);
 * getpeername/getsockname show AF_UNIX. UDP sockets are inherited as real
 * sockets (only queued datagrams are drained). Data another thread writes
 * during the drain, and every exec in a vfork child (which shares the
 * parent's memory and whose exec does not end the parent's threads), are not
 * waited for.
 */
static void exec_drain(void)
{
    /* vfork child: the relays are the parent's and live on; taking their
     * locks from here could deadlock the parent. */
    if (getpid() != g_pid)
        return;
    long ms;
    struct timespec until = drain_deadline(&ms);
    udp_exit_drain(&until, ms); /* (a) */
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
        if (!left || pthread_cond_timedwait(&g_drain_cond, &g_drain_lock, &until) == ETIMEDOUT)
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

/* ---- layer 3: public symbols ------------------------------------------- */

int connect(int fd, const struct sockaddr *sa, socklen_t len)
{
    int rc = libc_call(connect, fd, sa, len);
    int e = errno;
    if (rc == 0 || e == EINPROGRESS) {
        relay_start(fd, false);
        ctl_connected(fd);
    }
    errno = e;
    return rc;
}

int accept(int fd, struct sockaddr *sa, socklen_t *len)
{
    int c = libc_call(accept, fd, sa, len);
    if (c >= 0) {
        int e = errno;
        relay_start(c, true);
        errno = e;
    }
    return c;
}

int accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags)
{
    int c = libc_call(accept4, fd, sa, len, flags);
    if (c >= 0) {
        int e = errno;
        relay_start(c, true);
        errno = e;
    }
    return c;
}

int close(int fd)
{
    fd_forget(fd);
    return libc_call(close, fd);
}

int dup2(int from, int to)
{
    int rc = libc_call(dup2, from, to);
    if (rc >= 0 && from != to)
        fd_copy(from, to);
    return rc;
}

int dup3(int from, int to, int flags)
{
    int rc = libc_call(dup3, from, to, flags);
    if (rc >= 0)
        fd_copy(from, to);
    return rc;
}

int getsockname(int fd, struct sockaddr *sa, socklen_t *len)
{
    struct relay *r = relay_get(fd);
    int rc = libc_call(getsockname, r ? r->real_fd : fd, sa, len);
    if (r) relay_put(r);
    return rc;
}

int getpeername(int fd, struct sockaddr *sa, socklen_t *len)
{
    struct relay *r = relay_get(fd);
    int rc = libc_call(getpeername, r ? r->real_fd : fd, sa, len);
    if (r) relay_put(r);
    return rc;
}

int setsockopt(int fd, int level, int name, const void *v, socklen_t l)
{
    struct relay *r = relay_get(fd);
    int rc = libc_call(setsockopt, r ? r->real_fd : fd, level, name, v, l);
    if (r) {
        int e = errno;
        if (rc == 0)
            relay_opt_note(r, level, name, true);
        relay_put(r);
        errno = e;
    } else if (rc == 0) {
        int e = errno;
        ctl_option(fd, level, name, true);
        errno = e;
    }
    return rc;
}

int getsockopt(int fd, int level, int name, void *v, socklen_t *l)
{
    struct relay *r = relay_get(fd);
    if (!r) {
        int rc = libc_call(getsockopt, fd, level, name, v, l);
        if (rc == 0) {
            int e = errno;
            ctl_option(fd, level, name, false);
            errno = e;
        }
        return rc;
    }
    int rc;
    if (level == SOL_SOCKET && name == SO_ERROR) {
        /* The program polled its socketpair end writable; the real connect
         * may still be in flight. Its answer is the real connect's. */
        pthread_mutex_lock(&r->lock);
        while (!r->connect_done)
            pthread_cond_wait(&r->cond, &r->lock);
        int err = r->connect_err;
        r->connect_err = 0; /* SO_ERROR is read-and-clear */
        pthread_mutex_unlock(&r->lock);
        if (v && l && *l >= sizeof(int)) {
            memcpy(v, &err, sizeof(int));
            *l = sizeof(int);
        }
        rc = 0;
    } else {
        rc = libc_call(getsockopt, r->real_fd, level, name, v, l);
    }
    int e = errno;
    if (rc == 0)
        relay_opt_note(r, level, name, false);
    relay_put(r);
    errno = e;
    return rc;
}

int shutdown(int fd, int how)
{
    struct relay *r = relay_get(fd);
    if (!r)
        return libc_call(shutdown, fd, how);
    /* Shutting the program's end down makes the relay see EOF and pass
     * the half-close on after any pending data. */
    int rc = libc_call(shutdown, fd, how);
    relay_put(r);
    return rc;
}

int socket(int domain, int type, int proto)
{
    int fd = libc_call(socket, domain, type, proto);
    if (fd < 0 || fd >= MAX_FDS || (domain != AF_INET && domain != AF_INET6) || (type & 0xf) != SOCK_DGRAM)
        return fd;
    shim_init();
    if (g_enabled != 1)
        return fd;
    struct udp_state *u = calloc(1, sizeof(*u));
    if (!u)
        return fd;
    pthread_mutex_init(&u->lock, NULL);
    pthread_cond_init(&u->cond, NULL);
    atomic_init(&u->refs, 1);
    u->link = -1;
    u->sock = u->wlink = u->wake = -1;
    u->family = domain == AF_INET6 ? NKE_AF_INET6 : NKE_AF_INET;
    pthread_mutex_lock(&g_fd_lock);
    struct udp_state *old = g_udp[fd];
    __atomic_store_n(&g_udp[fd], u, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&g_fd_lock);
    if (old) /* fd number reused without our close(): forget the stale one */
        udp_put(old);
    return fd;
}

ssize_t sendto(int fd, const void *b, size_t n, int flags, const struct sockaddr *to, socklen_t tl)
{
    if (!is_udp(fd))
        return libc_call(sendto, fd, b, n, flags, to, tl);
    int q = udp_out(fd, b, n, flags, to, tl, NULL, 0);
    if (q != 0)
        return q < 0 ? -1 : (ssize_t)n;
    return libc_call(sendto, fd, b, n, flags, to, tl);
}

ssize_t send(int fd, const void *b, size_t n, int flags)
{
    return sendto(fd, b, n, flags, NULL, 0);
}

ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
    if (!is_udp(fd))
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

ssize_t recvfrom(int fd, void *b, size_t n, int flags, struct sockaddr *from, socklen_t *fl)
{
    if (!is_udp(fd) || (flags & MSG_PEEK))
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

ssize_t recv(int fd, void *b, size_t n, int flags)
{
    return recvfrom(fd, b, n, flags, NULL, NULL);
}

ssize_t recvmsg(int fd, struct msghdr *m, int flags)
{
    if (!is_udp(fd) || (flags & MSG_PEEK))
        return libc_call(recvmsg, fd, m, flags);
    size_t n = 0;
    for (size_t i = 0; i < m->msg_iovlen; i++)
        n += m->msg_iov[i].iov_len;
    uint8_t *flat = malloc(n ? n : 1);
    if (!flat)
        return libc_call(recvmsg, fd, m, flags);
    socklen_t nl = m->msg_namelen;
    ssize_t r = recvfrom(fd, flat, n, flags, m->msg_name, m->msg_name ? &nl : NULL);
    if (r >= 0) {
        size_t o = 0, left = (size_t)r < n ? (size_t)r : n;
        for (size_t i = 0; i < m->msg_iovlen && left; i++) {
            size_t c = m->msg_iov[i].iov_len < left ? m->msg_iov[i].iov_len : left;
            memcpy(m->msg_iov[i].iov_base, flat + o, c);
            o += c;
            left -= c;
        }
        if (m->msg_name)
            m->msg_namelen = nl;
        m->msg_controllen = 0; /* ancillary data is not carried through the verdict */
        m->msg_flags = (size_t)r > n ? MSG_TRUNC : 0;
    }
    int e = errno;
    free(flat);
    errno = e;
    return r;
}

/* The message is built on the stack, no malloc: exec* may run in a vfork
 * child (libuv, posix_spawn callers) sharing the parent's heap. */
/* before_ns: CLOCK_MONOTONIC taken before the exec (0: now, for a report
 * made before the exec call). */
static void report_exec_for(int32_t pid, int32_t ppid, const char *path, uint64_t before_ns)
{
    shim_init();
    if (g_enabled != 1 || !path)
        return;
    char full[PATH_MAX];
    const char *p = realpath(path, full) ? full : path;
    size_t n = strlen(p);
    if (n >= PATH_MAX)
        return;
    int link = link_open();
    if (link < 0)
        return;
    uint8_t m[sizeof(struct shim_exec) + PATH_MAX];
    struct shim_exec e = { .hdr = { .type = SHIM_EXEC, .len = (uint32_t)n }, .pid = pid, .ppid = ppid,
                           .uid = getuid(), .before_ns = before_ns ? before_ns : mono_ns() };
    memcpy(m, &e, sizeof(e));
    memcpy(m + sizeof(e), p, n);
    send(link, m, sizeof(e) + n, MSG_NOSIGNAL);
    libc_call(close, link);
}

static void report_exec(const char *path)
{
    report_exec_for(getpid(), getppid(), path, 0);
}

int execve(const char *path, char *const argv[], char *const envp[])
{
    exec_drain();
    if (access(path, X_OK) == 0)
        report_exec(path);
    return libc_call(execve, path, argv, envp);
}

/* ---- dup, fcntl(F_DUPFD*), sendmmsg/recvmmsg --------------------------- */

LIBC(int, dup, (int))
LIBC(int, fcntl, (int, int, ...))
LIBC(int, fcntl64, (int, int, ...))
LIBC(int, sendmmsg, (int, struct mmsghdr *, unsigned int, int))
LIBC(int, recvmmsg, (int, struct mmsghdr *, unsigned int, int, struct timespec *))
LIBC(int, bind, (int, const struct sockaddr *, socklen_t))
LIBC(int, listen, (int, int))

int dup(int fd)
{
    int rc = libc_call(dup, fd);
    /* g_enabled != 1: nothing is tracked (tables fill only when on) */
    if (rc >= 0 && g_enabled == 1) {
        int e = errno;
        fd_copy(fd, rc);
        errno = e;
    }
    return rc;
}

/* fcntl is variadic; every command's third argument is an int, a pointer or
 * absent, all passed in one register (x86_64, aarch64), so it is forwarded
 * as a pointer-sized value. Only F_DUPFD and F_DUPFD_CLOEXEC change fd
 * tracking. glibc >= 2.28 headers send most callers to fcntl64 (python's
 * os.dup and socket.dup among them), so both are interposed. */
static int fcntl_common(int (*fn)(int, int, ...), int fd, int cmd, void *arg)
{
    if (!fn) {
        errno = ENOSYS;
        return -1;
    }
    int rc = fn(fd, cmd, arg);
    if (rc >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) && g_enabled == 1) {
        int e = errno;
        fd_copy(fd, rc);
        errno = e;
    }
    return rc;
}

int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    sym_fcntl();
    return fcntl_common(p_fcntl, fd, cmd, arg);
}

int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    /* an older libc without fcntl64: plain fcntl is the same call on 64-bit */
    if (!sym_fcntl64())
        sym_fcntl();
    return fcntl_common(p_fcntl64 ? p_fcntl64 : p_fcntl, fd, cmd, arg);
}

/* UDP: one verdict per datagram, as sendmsg. Stops at the first failure;
 * like the kernel, returns the count sent, or -1 if the first failed. */
int sendmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags)
{
    if (!is_udp(fd))
        return libc_call(sendmmsg, fd, vec, vlen, flags);
    unsigned int i;
    for (i = 0; i < vlen; i++) {
        ssize_t r = sendmsg(fd, &vec[i].msg_hdr, flags);
        if (r < 0) {
            if (i == 0)
                return -1;
            break;
        }
        vec[i].msg_len = (unsigned int)r;
    }
    return (int)i;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* UDP: one verdict per datagram, as recvmsg. The first datagram waits as
 * the flags and the socket say; later ones are taken while available
 * (MSG_WAITFORONE, non-blocking) or, for a blocking call, until vlen or the
 * timeout (checked between datagrams, as the kernel does). */
int recvmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags, struct timespec *timeout)
{
    if (!is_udp(fd) || (flags & MSG_PEEK))
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
                poll(&p, 1, (int)(deadline - now)) <= 0)
                break;
        }
        ssize_t r = recvmsg(fd, &vec[i].msg_hdr, f);
        if (r < 0) {
            if (i == 0)
                return -1;
            break;
        }
        vec[i].msg_len = (unsigned int)r;
    }
    return (int)i;
}

/* ---- bind, listen, options: sf_bind / sf_listen / sf_setoption ---------- */

/* The current nke-emud's shim.state, mapped once per nke-emud: a restarted
 * nke-emud renames a fresh file into place (and a killed one leaves its
 * last word in the old file), so the path's inode is compared again at
 * most every 100 ms: a call pays one clock read, a stat every 100 ms. Old
 * mappings are never unmapped: another thread may be reading them (one
 * page per nke-emud restart). g_gstate and g_gstate_ino are written under
 * g_gstate_lock; g_gstate and g_gstate_checked are read with atomics. */
static const struct shim_state *g_gstate;
static ino_t g_gstate_ino;
static uint64_t g_gstate_checked;
static pthread_mutex_t g_gstate_lock = PTHREAD_MUTEX_INITIALIZER;

static bool client_open_now(void)
{
    shim_init();
    if (g_enabled != 1)
        return false;
    const struct shim_state *st = __atomic_load_n(&g_gstate, __ATOMIC_ACQUIRE);
    uint64_t now = mono_ms();
    uint64_t checked = __atomic_load_n(&g_gstate_checked, __ATOMIC_RELAXED);
    if (checked != 0 && now - checked < 100) /* also when absent: no stat per call */
        return st && __atomic_load_n(&st->client, __ATOMIC_ACQUIRE) != 0;
    pthread_mutex_lock(&g_gstate_lock);
    __atomic_store_n(&g_gstate_checked, now, __ATOMIC_RELAXED);
    struct stat sb;
    if (stat(g_state_path, &sb) == 0 && (!g_gstate || sb.st_ino != g_gstate_ino)) {
        int fd = open(g_state_path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            struct stat fb;
            void *m = fstat(fd, &fb) == 0 ? mmap(NULL, sizeof(struct shim_state), PROT_READ, MAP_SHARED, fd, 0)
                                          : MAP_FAILED;
            libc_call(close, fd);
            if (m != MAP_FAILED && ((const struct shim_state *)m)->magic == SHIM_STATE_MAGIC) {
                g_gstate_ino = fb.st_ino;
                __atomic_store_n(&g_gstate, (const struct shim_state *)m, __ATOMIC_RELEASE);
            } else if (m != MAP_FAILED) {
                munmap(m, sizeof(struct shim_state));
            }
        }
    }
    st = g_gstate;
    pthread_mutex_unlock(&g_gstate_lock);
    return st && __atomic_load_n(&st->client, __ATOMIC_ACQUIRE);
}

static void ctl_put(struct ctl_sock *k)
{
    if (atomic_fetch_sub(&k->refs, 1) == 1) {
        /* last name for the socket: closing the link is its detach */
        pthread_mutex_lock(&k->lock);
        if (k->link >= 0)
            libc_call(close, k->link);
        pthread_mutex_unlock(&k->lock);
        pthread_mutex_destroy(&k->lock);
        free(k);
    }
}

static void udp_put(struct udp_state *u)
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

/* True unless nke-emud says no datagram could be held now (no user client,
 * or capture NOTHING): then a datagram goes to the kernel without a round
 * trip (when nothing is queued ahead of it). Without a state file: ask. */
static bool udp_may_defer_now(void)
{
    client_open_now(); /* refreshes g_gstate (the current nke-emud's file) */
    const struct shim_state *st = __atomic_load_n(&g_gstate, __ATOMIC_ACQUIRE);
    return !st || __atomic_load_n(&st->may_defer, __ATOMIC_ACQUIRE) != 0;
}

/* The socket connected and is relayed now (its own link and attach): the
 * control link, if any, goes (its detach). */
static void ctl_connected(int fd)
{
    if (fd < 0 || fd >= MAX_FDS)
        return;
    pthread_mutex_lock(&g_fd_lock);
    struct relay *r = g_fds[fd];
    struct ctl_sock *k = r ? g_ctls[fd] : NULL, *k2 = NULL;
    if (k)
        g_ctls[fd] = NULL;
    /* relay_start's F_DUPFD_CLOEXEC copy (the real socket) went through
     * our fcntl and took a ref too; the relay closes it without close(). */
    if (r && r->real_fd >= 0 && r->real_fd < MAX_FDS && g_ctls[r->real_fd]) {
        k2 = g_ctls[r->real_fd];
        g_ctls[r->real_fd] = NULL;
    }
    pthread_mutex_unlock(&g_fd_lock);
    if (k)
        ctl_put(k);
    if (k2)
        ctl_put(k2);
}

/* The link of fd's control socket (attached unconnected), taken for its
 * relay at connect: -1 when there is none. The ctl_sock stays in the table
 * with no link; ctl_connected drops it (closing nothing). */
static int ctl_take_link(int fd)
{
    if (fd < 0 || fd >= MAX_FDS)
        return -1;
    pthread_mutex_lock(&g_fd_lock);
    struct ctl_sock *k = g_ctls[fd];
    if (k)
        atomic_fetch_add(&k->refs, 1);
    pthread_mutex_unlock(&g_fd_lock);
    if (!k)
        return -1;
    pthread_mutex_lock(&k->lock);
    int link = k->link;
    k->link = -1;
    pthread_mutex_unlock(&k->lock);
    ctl_put(k);
    return link;
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

static void relay_opt_note(struct relay *r, int level, int name, bool is_set)
{
    struct shim_option m = { .hdr = { .type = SHIM_OPTION, .len = 0 }, .level = level, .name = name,
                             .is_set = is_set ? 1u : 0u };
    relay_note(r, &m, sizeof(m));
}

/* Never blocks: nke-emud reads promptly, and a full link buffer (a stuck
 * nke-emud) loses the notification rather than stalling the program. A
 * failed send ends the link (fail open, nothing more reported). */
static void link_note(int *link, const void *m, size_t n)
{
    if (*link >= 0 && send(*link, m, n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno != EAGAIN) {
        libc_call(close, *link);
        *link = -1;
    }
}

static void local_addr(int fd, struct nke_addr *a)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    memset(a, 0, sizeof(*a));
    if (libc_call(getsockname, fd, (struct sockaddr *)&ss, &sl) == 0)
        to_nke_addr(&ss, a);
}

/* Runs fn with the socket's link locked: the UDP state's link (attached
 * here if not yet: its attach carries the local address; fresh=true), or a
 * control link for an unconnected TCP socket (created and attached if
 * `create` and a user client is open). Relayed sockets are left alone: their
 * link belongs to the relay thread. Returns false when nothing was done. */
static bool with_link(int fd, bool create, void (*fn)(int *link, bool fresh, void *arg), void *arg)
{
    if (fd < 0 || fd >= MAX_FDS)
        return false;
    shim_init();
    if (g_enabled != 1)
        return false;
    pthread_mutex_lock(&g_fd_lock);
    if (g_fds[fd]) {
        pthread_mutex_unlock(&g_fd_lock);
        return false;
    }
    struct udp_state *u = g_udp[fd];
    struct ctl_sock *k = g_ctls[fd];
    if (u)
        atomic_fetch_add(&u->refs, 1);
    else if (k)
        atomic_fetch_add(&k->refs, 1);
    pthread_mutex_unlock(&g_fd_lock);
    if (u) {
        bool fresh = false;
        pthread_mutex_lock(&u->lock);
        if (!u->tried && create && client_open_now()) {
            udp_attach_locked(u, fd);
            fresh = true;
        }
        if (u->link >= 0)
            fn(&u->link, fresh, arg);
        pthread_mutex_unlock(&u->lock);
        udp_put(u);
        return true;
    }
    int family;
    if (!k) {
        if (!create || !client_open_now() || !is_tcp_inet(fd, &family)) /* cheapest first */
            return false;
        k = calloc(1, sizeof(*k));
        if (!k)
            return false;
        pthread_mutex_init(&k->lock, NULL);
        atomic_init(&k->refs, 2); /* the table's and ours */
        k->link = -1;
        pthread_mutex_lock(&g_fd_lock);
        if (g_ctls[fd] || g_fds[fd]) { /* another thread was first */
            pthread_mutex_unlock(&g_fd_lock);
            pthread_mutex_destroy(&k->lock);
            free(k);
            return false;
        }
        g_ctls[fd] = k;
        pthread_mutex_unlock(&g_fd_lock);
    }
    pthread_mutex_lock(&k->lock);
    if (!k->tried) {
        k->tried = true;
        int link = link_open();
        if (link >= 0) {
            struct shim_attach a = { .hdr = { .type = SHIM_ATTACH }, .pid = getpid(), .uid = getuid(),
                                     .family = is_tcp_inet(fd, &family) && family == AF_INET6 ? NKE_AF_INET6
                                                                                           : NKE_AF_INET,
                                     .type = 1, .protocol = NKE_PROTO_TCP,
                                     .incoming = SHIM_ATTACH_UNCONNECTED };
            FILE *f = fopen("/proc/self/comm", "re");
            if (f) {
                if (fgets(a.comm, sizeof(a.comm), f))
                    a.comm[strcspn(a.comm, "\n")] = 0;
                fclose(f);
            }
            k->link = link;
            link_note(&k->link, &a, sizeof(a));
        }
    }
    if (k->link >= 0)
        fn(&k->link, false, arg);
    pthread_mutex_unlock(&k->lock);
    ctl_put(k);
    return true;
}

struct addr_note { uint32_t type; int fd; };

static void send_addr_note(int *link, bool fresh, void *arg)
{
    struct addr_note *n = arg;
    /* A UDP attach made just now already carried the bound address. */
    if (fresh && n->type == SHIM_BIND)
        return;
    struct shim_hdr h = { .type = n->type };
    local_addr(n->fd, &h.addr);
    link_note(link, &h, sizeof(h));
}

struct opt_note { int level, name; bool is_set; };

static void send_opt_note(int *link, bool fresh, void *arg)
{
    (void)fresh;
    struct opt_note *o = arg;
    struct shim_option m = { .hdr = { .type = SHIM_OPTION, .len = 0 }, .level = o->level, .name = o->name,
                             .is_set = o->is_set ? 1u : 0u };
    link_note(link, &m, sizeof(m));
}

/* setsockopt attaches an unconnected socket (options usually come before
 * bind: SO_REUSEADDR); getsockopt is reported only on sockets already
 * attached (it is frequent and says little). */
static void ctl_option(int fd, int level, int name, bool is_set)
{
    struct opt_note o = { level, name, is_set };
    with_link(fd, is_set, send_opt_note, &o);
}

int bind(int fd, const struct sockaddr *sa, socklen_t len)
{
    int rc = libc_call(bind, fd, sa, len);
    if (rc == 0) {
        int e = errno;
        struct addr_note n = { SHIM_BIND, fd };
        with_link(fd, true, send_addr_note, &n);
        errno = e;
    }
    return rc;
}

int listen(int fd, int backlog)
{
    int rc = libc_call(listen, fd, backlog);
    if (rc == 0) {
        int e = errno;
        struct addr_note n = { SHIM_LISTEN, fd };
        with_link(fd, true, send_addr_note, &n);
        errno = e;
    }
    return rc;
}

/* ---- the rest of the exec family --------------------------------------- */
/* glibc's execv, execvp, execvpe, execl* and posix_spawn reach the kernel
 * without calling the execve symbol, so each is interposed: the shim
 * reports what the kernel will run (for a PATH search, the first executable
 * candidate, which is the one libc's search runs), then calls libc. */

LIBC(int, execv, (const char *, char *const[]))
LIBC(int, execvp, (const char *, char *const[]))
LIBC(int, execvpe, (const char *, char *const[], char *const[]))
LIBC(int, posix_spawn, (pid_t *, const char *, const posix_spawn_file_actions_t *, const posix_spawnattr_t *,
                        char *const[], char *const[]))
LIBC(int, posix_spawnp, (pid_t *, const char *, const posix_spawn_file_actions_t *, const posix_spawnattr_t *,
                         char *const[], char *const[]))

/* The file a PATH search for `file` finds first, into out; false if none. */
static bool path_search(const char *file, char *out, size_t cap)
{
    if (!file || !*file)
        return false;
    if (strchr(file, '/')) {
        snprintf(out, cap, "%s", file);
        return access(out, X_OK) == 0;
    }
    const char *path = getenv("PATH");
    if (!path)
        path = "/bin:/usr/bin"; /* glibc's default */
    while (*path) {
        const char *end = strchrnul(path, ':');
        size_t dl = (size_t)(end - path);
        int n = dl ? snprintf(out, cap, "%.*s/%s", (int)dl, path, file) : snprintf(out, cap, "%s", file);
        if (n > 0 && (size_t)n < cap && access(out, X_OK) == 0)
            return true;
        path = *end ? end + 1 : end;
    }
    return false;
}

int execv(const char *path, char *const argv[])
{
    exec_drain();
    if (access(path, X_OK) == 0)
        report_exec(path);
    return libc_call(execv, path, argv);
}

int execvpe(const char *file, char *const argv[], char *const envp[])
{
    exec_drain();
    char found[PATH_MAX];
    if (path_search(file, found, sizeof(found)))
        report_exec(found);
    return libc_call(execvpe, file, argv, envp);
}

int execvp(const char *file, char *const argv[])
{
    exec_drain();
    char found[PATH_MAX];
    if (path_search(file, found, sizeof(found)))
        report_exec(found);
    return libc_call(execvp, file, argv);
}

/* execl, execle, execlp: the variadic list becomes an argv on the stack. */
#define EXECL_MAX 1024 /* arguments, NULL included: 8 KiB of stack */
#define COLLECT_ARGS(arg0, ap, argv, n)                                  \
    do {                                                                 \
        (argv)[0] = (char *)(arg0);                                      \
        (n) = 1;                                                         \
        while ((argv)[(n) - 1] != NULL) {                                \
            if ((n) == EXECL_MAX) {                                      \
                errno = E2BIG;                                           \
                va_end(ap);                                              \
                return -1;                                               \
            }                                                            \
            (argv)[(n)++] = va_arg(ap, char *);                          \
        }                                                                \
    } while (0)

int execl(const char *path, const char *arg, ...)
{
    char *argv[EXECL_MAX];
    size_t n;
    va_list ap;
    va_start(ap, arg);
    COLLECT_ARGS(arg, ap, argv, n);
    va_end(ap);
    return execv(path, argv);
}

int execlp(const char *file, const char *arg, ...)
{
    char *argv[EXECL_MAX];
    size_t n;
    va_list ap;
    va_start(ap, arg);
    COLLECT_ARGS(arg, ap, argv, n);
    va_end(ap);
    return execvp(file, argv);
}

int execle(const char *path, const char *arg, ...)
{
    char *argv[EXECL_MAX];
    size_t n;
    va_list ap;
    va_start(ap, arg);
    COLLECT_ARGS(arg, ap, argv, n);
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    return execve(path, argv, envp);
}

/* fexecve and execveat name the file by descriptor: the report carries the
 * absolute path the kernel's exec event shows, from /proc/self/fd. glibc's
 * fexecve enters the kernel itself (execveat syscall, or execve of
 * /proc/self/fd/N) without calling these symbols, so each exec is reported
 * once; nke-emud pairs it with the connector's as for execve. */
LIBC(int, fexecve, (int, char *const[], char *const[]))
LIBC(int, execveat, (int, const char *, char *const[], char *const[], int))

/* The absolute path fd was opened as, into out (cap bytes); false if none. */
static bool fd_path(int fd, char *out, size_t cap)
{
    char p[40];
    snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(p, out, cap - 1);
    if (n <= 0 || (size_t)n >= cap - 1)
        return false;
    out[n] = 0;
    return out[0] == '/'; /* not "socket:[...]", "anon_inode:..." */
}

int fexecve(int fd, char *const argv[], char *const envp[])
{
    exec_drain();
    char p[PATH_MAX];
    if (fd_path(fd, p, sizeof(p)) && access(p, X_OK) == 0)
        report_exec(p);
    return libc_call(fexecve, fd, argv, envp);
}

int execveat(int dirfd, const char *path, char *const argv[], char *const envp[], int flags)
{
    exec_drain();
    char full[PATH_MAX], d[PATH_MAX];
    bool ok = false;
    if (!*path && (flags & AT_EMPTY_PATH)) /* the fd itself */
        ok = fd_path(dirfd, full, sizeof(full));
    else if (*path == '/' || (*path && dirfd == AT_FDCWD)) /* realpath resolves a relative one */
        ok = snprintf(full, sizeof(full), "%s", path) < (int)sizeof(full);
    else if (*path && fd_path(dirfd, d, sizeof(d)))
        ok = snprintf(full, sizeof(full), "%s/%s", d, path) < (int)sizeof(full);
    struct stat sb;
    if (ok && (flags & AT_SYMLINK_NOFOLLOW) && lstat(full, &sb) == 0 && S_ISLNK(sb.st_mode))
        ok = false; /* the kernel refuses it (ELOOP) */
    if (ok && access(full, X_OK) == 0)
        report_exec(full);
    return libc_call(execveat, dirfd, path, argv, envp, flags);
}

/* posix_spawn: the child's exec happens inside libc; it is reported from
 * the parent once the child exists (its pid, our pid as ppid). */
int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                const posix_spawnattr_t *at, char *const argv[], char *const envp[])
{
    pid_t local;
    pid_t *pp = pid ? pid : &local;
    uint64_t t0 = mono_ns(); /* the child's exec comes after this */
    int rc = libc_call(posix_spawn, pp, path, fa, at, argv, envp);
    if (rc == 0) {
        int e = errno;
        report_exec_for(*pp, getpid(), path, t0);
        errno = e;
    }
    return rc;
}

int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                 const posix_spawnattr_t *at, char *const argv[], char *const envp[])
{
    pid_t local;
    pid_t *pp = pid ? pid : &local;
    char found[PATH_MAX];
    bool have = path_search(file, found, sizeof(found));
    uint64_t t0 = mono_ns();
    int rc = libc_call(posix_spawnp, pp, file, fa, at, argv, envp);
    if (rc == 0 && have) {
        int e = errno;
        report_exec_for(*pp, getpid(), found, t0);
        errno = e;
    }
    return rc;
}

/* ---- read, write, readv, writev on UDP sockets ------------------------- */
/* A connected UDP socket may be used with the plain I/O calls; each is one
 * datagram and gets its verdict through the send/recv paths above. Any other
 * fd (TCP sockets are relayed, so their bytes already pass the filter) goes
 * straight to libc after one table load. */

LIBC(ssize_t, read, (int, void *, size_t))
LIBC(ssize_t, write, (int, const void *, size_t))
LIBC(ssize_t, readv, (int, const struct iovec *, int))
LIBC(ssize_t, writev, (int, const struct iovec *, int))

ssize_t write(int fd, const void *b, size_t n)
{
    if (!is_udp(fd))
        return libc_call(write, fd, b, n);
    return sendto(fd, b, n, 0, NULL, 0);
}

ssize_t read(int fd, void *b, size_t n)
{
    if (!is_udp(fd))
        return libc_call(read, fd, b, n);
    return recvfrom(fd, b, n, 0, NULL, NULL);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    if (!is_udp(fd) || cnt < 0)
        return libc_call(writev, fd, iov, cnt);
    struct msghdr m = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)cnt };
    return sendmsg(fd, &m, 0);
}

ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
    if (!is_udp(fd) || cnt < 0)
        return libc_call(readv, fd, iov, cnt);
    struct msghdr m = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)cnt };
    return recvmsg(fd, &m, 0);
}

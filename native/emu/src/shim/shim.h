/*
 * libnkeshim.so internals: what the shim's files share. Nothing here is
 * exported: every declaration is hidden, so only the interposed libc
 * symbols (api.c, exec.c) are the library's interface.
 *
 * The shim (LD_PRELOAD) puts the processes started under `nke-emu run`
 * behind nke-emud's filter (docs/architecture.md, The Linux emulator).
 * When a TCP socket (IPv4/IPv6) connects or is accepted, the program's
 * descriptor is replaced (dup3) by one end of a Unix socketpair; a relay
 * moves bytes between the other end and the real socket, asking nke-emud for a verdict on each
 * piece. Readiness (poll/select/epoll/libuv) is then natural. Only calls
 * that need the real socket (getsockname, getpeername, setsockopt,
 * getsockopt, shutdown) are redirected. UDP datagrams get a verdict each
 * through the send/recv calls (udp_queue.c).
 *
 * Layers (after Samba's socket_wrapper):
 *   libc.c       libc_* passthroughs resolved lazily with dlsym(RTLD_NEXT)
 *   fdtable.c    fd -> state tables, dup/close bookkeeping, fork handlers
 *   link.c       the link to nke-emud (shim.sock, shim.state)
 *   tcp_relay.c  the TCP relay
 *   udp_queue.c  UDP: queued verdicts
 *   readiness.c  poll/select/epoll: readiness the program sees never runs ahead
 *                of what the relay has yet to deliver
 *   sockctl.c    bind/listen/options of sockets not relayed
 *   exec.c       exec and spawn: reports, exit and exec drains
 *   api.c        the thin public symbols: straight to libc when the fd is
 *                not tracked or the shim is off
 *
 * Fail open: no shim.sock, or nke-emud dying, means bytes flow unchanged.
 *
 * Lock order. Every lock of the shim, in the one order in which they may
 * nest: a lock may be taken while holding those above it, never one above
 * while holding one below. fork's prepare handler (fdtable.c) takes all of
 * them in this order, so it waits until no other thread is inside any of
 * them and the child starts from consistent state, holding none.
 *   1. g_fd_lock (fdtable.c): the fd tables. The areas release it before
 *      they take a per-socket lock (the fork handler alone takes those
 *      under it, to keep the tables still); relay_start takes g_loop.lock
 *      under it.
 *   2. the per-socket locks, ctl_sock->lock, udp_state->lock and
 *      relay->lock: never two at once (fork takes every one the tables
 *      name, each once: nothing waits for a second one while holding one).
 *   3. g_loop.lock (tcp_relay.c): the relay loop's hand-over list, slots,
 *      mux link and drain counters. Taken under ctl_sock->lock
 *      (mux_attach_unconnected opens the link under it), never while
 *      holding relay->lock or the other way round.
 *   4. g_udp_drain_lock (udp_queue.c): the UDP exit drain's count, taken
 *      under udp_state->lock.
 *   5. g_gstate_lock (link.c): remapping shim.state, taken under
 *      udp_state->lock (udp_may_defer_now).
 *   6. g_orphan_lock (readiness.c): epoll events kept for a thread that
 *      exited; taken alone.
 * The relay loop thread takes g_loop.lock and a relay->lock briefly, one
 * at a time. Lock-free: libc.c's symbol pointers, the atomics.
 */
#ifndef NKE_SHIM_H
#define NKE_SHIM_H

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "nke_emu_proto.h"
#include "nke_shim_link.h"

#pragma GCC visibility push(hidden)

extern int g_debug;
#define SHIM_LOG(fmt, ...)                                                                        \
    do {                                                                                          \
        if (g_debug)                                                                              \
            fprintf(stderr, "nkeshim[%d] %s: " fmt "\n", (int)getpid(), __func__, ##__VA_ARGS__); \
    } while (0)

/* ---- libc.c: passthroughs ------------------------------------------------ */

/* Every libc function the shim interposes or must call without going
 * through its own symbol. X(ret, name, params). */
#define SHIM_LIBC_FUNCS(X)                                                                         \
    X(int, connect, (int, const struct sockaddr *, socklen_t))                                     \
    X(int, accept, (int, struct sockaddr *, socklen_t *))                                          \
    X(int, accept4, (int, struct sockaddr *, socklen_t *, int))                                    \
    X(int, close, (int))                                                                           \
    X(int, getsockname, (int, struct sockaddr *, socklen_t *))                                     \
    X(int, getpeername, (int, struct sockaddr *, socklen_t *))                                     \
    X(int, setsockopt, (int, int, int, const void *, socklen_t))                                   \
    X(int, getsockopt, (int, int, int, void *, socklen_t *))                                       \
    X(int, shutdown, (int, int))                                                                   \
    X(int, dup, (int))                                                                             \
    X(int, dup2, (int, int))                                                                       \
    X(int, dup3, (int, int, int))                                                                  \
    X(int, fcntl, (int, int, ...))                                                                 \
    X(int, fcntl64, (int, int, ...))                                                               \
    X(int, socket, (int, int, int))                                                                \
    X(int, bind, (int, const struct sockaddr *, socklen_t))                                        \
    X(int, listen, (int, int))                                                                     \
    X(ssize_t, sendto, (int, const void *, size_t, int, const struct sockaddr *, socklen_t))       \
    X(ssize_t, recvfrom, (int, void *, size_t, int, struct sockaddr *, socklen_t *))               \
    X(ssize_t, sendmsg, (int, const struct msghdr *, int))                                         \
    X(ssize_t, recvmsg, (int, struct msghdr *, int))                                               \
    X(int, sendmmsg, (int, struct mmsghdr *, unsigned int, int))                                   \
    X(int, recvmmsg, (int, struct mmsghdr *, unsigned int, int, struct timespec *))                \
    X(int, poll, (struct pollfd *, nfds_t, int))                                                   \
    X(int, ppoll, (struct pollfd *, nfds_t, const struct timespec *, const sigset_t *))            \
    X(int, epoll_ctl, (int, int, int, struct epoll_event *))                                       \
    X(int, epoll_wait, (int, struct epoll_event *, int, int))                                      \
    X(int, epoll_pwait, (int, struct epoll_event *, int, int, const sigset_t *))                   \
    X(int, epoll_pwait2, (int, struct epoll_event *, int, const struct timespec *, const sigset_t *)) \
    X(int, select, (int, fd_set *, fd_set *, fd_set *, struct timeval *))                          \
    X(int, pselect, (int, fd_set *, fd_set *, fd_set *, const struct timespec *, const sigset_t *)) \
    X(ssize_t, read, (int, void *, size_t))                                                        \
    X(ssize_t, write, (int, const void *, size_t))                                                 \
    X(ssize_t, readv, (int, const struct iovec *, int))                                            \
    X(ssize_t, writev, (int, const struct iovec *, int))                                           \
    X(int, execve, (const char *, char *const[], char *const[]))                                   \
    X(void, _exit, (int))                                                                          \
    X(int, setuid, (uid_t))                                                                        \
    X(int, seteuid, (uid_t))                                                                       \
    X(int, setreuid, (uid_t, uid_t))                                                               \
    X(int, setresuid, (uid_t, uid_t, uid_t))                                                       \
    X(void, _Exit, (int))                                                                          \
    X(int, execv, (const char *, char *const[]))                                                   \
    X(int, execvp, (const char *, char *const[]))                                                  \
    X(int, execvpe, (const char *, char *const[], char *const[]))                                  \
    X(int, fexecve, (int, char *const[], char *const[]))                                           \
    X(int, execveat, (int, const char *, char *const[], char *const[], int))                       \
    X(int, posix_spawn, (pid_t *, const char *, const posix_spawn_file_actions_t *,                \
                         const posix_spawnattr_t *, char *const[], char *const[]))                 \
    X(int, posix_spawnp, (pid_t *, const char *, const posix_spawn_file_actions_t *,               \
                          const posix_spawnattr_t *, char *const[], char *const[]))

#define SHIM_LIBC_DECLARE(ret, name, params) \
    extern ret(*p_##name) params;            \
    void *sym_##name(void);
SHIM_LIBC_FUNCS(SHIM_LIBC_DECLARE)

/* Calls libc's `name`, never the shim's own symbol. */
#define libc_call(name, ...) (sym_##name(), p_##name(__VA_ARGS__))

/* ---- state shared between the files ------------------------------------- */

/* One relayed TCP socket (tcp_relay.c has the whole story). Refcounted:
 * one ref per fd-table entry naming it, one for the loop while it relays;
 * real_fd is closed with the last ref, so a program thread holding a ref
 * may use it (getsockname, setsockopt, connect...). */
struct dir;
struct relay {
    pthread_mutex_t lock;     /* protects connect_done, connect_ok, ended */
    pthread_cond_t cond;
    atomic_int refs;
    int real_fd;              /* the real TCP socket, above the program's range */
    int pair_fd;              /* the relay's end of the socketpair (loop-owned; -1 once ended) */
    ino_t prog_ino;           /* identity of the program's end: a table entry whose fd */
    dev_t prog_dev;           /*   no longer has it is stale (closed behind our back) */
    uint32_t id;              /* the socket's id on the mux link */
    uint32_t link_gen;        /* the link it attached on (g_loop.link_gen then) */
    bool linked;              /* its ATTACH went out */
    bool connect_done, connect_ok, ended;
    bool remote;              /* a forked child's copy: another process relays it */
    bool incoming;            /* accepted (not connected) */
    atomic_bool prog_shutdown; /* the program called shutdown(): an EOF is not a close */
    atomic_bool restart_ask;  /* a new connect on it (after a failed one) */
    atomic_bool reset_swap;   /* reset by the peer: the program's next read/write swaps in real_fd */
    int taken_err;            /* the reset's error a relay call on real_fd took (0: none); written
                               * by the loop before reset_swap is set, read by the swap */
    size_t restart_filler;    /* its filler; under g_loop.lock */
    /* Loop thread only: */
    struct relay *next;
    struct dir *dirs;         /* [0] OUT, [1] IN */
    int state;
    size_t filler;            /* bytes the program's end holds until the connect is done */
    bool rd[2], wr[2], urgent[2], hup[2]; /* edge-triggered readiness, [0] real, [1] pair */
    bool rdhup[2];            /* a hang-up edge was seen: read to the EOF */
    bool prog_closed;
    bool abort;               /* closed with SO_LINGER 0: the peer gets a reset */
    int reset_err;
    bool dirty, link_pending;
    bool out_open, exec_busy;
    unsigned exec_seen;
    unsigned events_sent;     /* RELAY_EV_* bits: SHIM_EVENT notes already on the link */
    bool fork_held;           /* lock taken by atfork_prepare (fdtable.c, under g_fd_lock) */
};

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

/* One UDP socket made by socket(). See "UDP: queued verdicts" in
 * udp_queue.c for the protocol, the worker and who owns which descriptor.
 * refs: one per fd-table entry naming it (dup, fcntl F_DUPFD, dup2/3), one
 * per call in progress, one for the worker while it runs. Every field but
 * refs and family is protected by lock. */
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
    bool bound;               /* has a local port (checked once before a queued send) */
    bool fork_held;           /* lock taken by atfork_prepare (fdtable.c, under g_fd_lock) */
};

/* An unconnected TCP socket's identity at nke-emud: attached on the mux
 * link at its first bind, listen or setsockopt while a user client is open
 * (the kext attaches at socket creation; attaching lazily keeps
 * uninteresting sockets free). Refcounted like udp_state. */
struct ctl_sock {
    pthread_mutex_t lock;     /* protects id, tried */
    atomic_int refs;
    uint32_t id;              /* 0: none yet, nke-emud absent, or handed to the relay */
    bool tried;
    bool fork_held;           /* lock taken by atfork_prepare (fdtable.c, under g_fd_lock) */
};

/* ---- fdtable.c ----------------------------------------------------------- */

#define MAX_FDS 65536
/* fd -> relay, fd -> udp_state, fd -> ctl_sock. protected by g_fd_lock
 * (g_udp is also read without it, atomically: is_udp) */
extern struct relay *g_fds[MAX_FDS];
extern struct udp_state *g_udp[MAX_FDS];
extern struct ctl_sock *g_ctls[MAX_FDS];
extern pthread_mutex_t g_fd_lock;
/* One above the highest fd the tables have ever named (never lowered):
 * the bound of every walk over them (fork, exec), so a process with few
 * descriptors does not pay for 65536 entries on each fork. Written under
 * g_fd_lock by fd_table_note_locked. */
extern int g_fd_top;
static inline void fd_table_note_locked(int fd)
{
    if (fd >= g_fd_top)
        g_fd_top = fd + 1;
}
extern pid_t g_pid; /* this process's pid (exec_drain): set by shim_ctor and atfork_child */

/* A vfork child (posix_spawn, CPython's subprocess) shares the parent's
 * memory until it execs: it must never change the shim's state. Checked
 * (a getpid call) only where state would change, never on a hot path. */
static inline bool shim_vforked(void) { return getpid() != g_pid; }

struct relay *relay_get(int fd);
struct udp_state *udp_get(int fd);
bool is_udp(int fd);
void fd_forget(int fd);
void fd_copy(int from, int to);

/* ---- link.c -------------------------------------------------------------- */

extern int g_enabled; /* -1 unknown, 0 off, 1 on; set once in shim_init */
void shim_init(void);
int link_open(void);
int link_attach(int fd, uint8_t family, uint8_t protocol, bool incoming);
bool link_attach_on(int link, int fd, uint8_t family, uint8_t protocol, bool incoming);
void link_note(int *link, const void *m, size_t n);
void to_nke_addr(const struct sockaddr_storage *ss, struct nke_addr *a);
void local_addr(int fd, struct nke_addr *a);
void shim_comm(char comm[NKE_COMM_LEN]);
const struct shim_state *state_map(void);
pthread_mutex_t *link_state_lock(void); /* g_gstate_lock, for fork (lock order 5) */
bool client_open_now(void);
bool udp_may_defer_now(void);
int verdict_piece(const struct shim_hdr *h, const uint8_t *body, size_t msg_len, uint8_t **mod,
                  size_t *mod_len);
/* A verdict message: header + at most one piece of modified bytes. */
#define SHIM_MSG_MAX (sizeof(struct shim_hdr) + SHIM_PIECE)

/* ---- tcp_relay.c --------------------------------------------------------- */

void relay_start(int fd, bool incoming, const struct sockaddr *to, socklen_t tolen);
void relay_put(struct relay *r);
bool relay_is_current(struct relay *r, int fd);
void relay_reconnected(struct relay *r, int fd, bool in_progress);
bool is_tcp_inet(int fd, int *family);
void relay_opt_note(struct relay *r, int level, int name, bool is_set);
void relay_atfork_child(void);
pthread_mutex_t *relay_loop_lock(void); /* g_loop.lock, for fork (lock order 3) */
int fd_high(int fd);
int fd_floor(void);
int relay_swap(int fd);
extern atomic_uint g_resets_pending;
bool relay_any(void);
bool relay_catch_up(void);
void readiness_closed(int fd); /* readiness.c: fd's number was closed (or dup2'ed over) */
pthread_mutex_t *readiness_orphan_lock(void); /* g_orphan_lock, for fork (lock order 6) */
/* The program's read/write on fd: a relayed socket reset by its peer
 * becomes the real socket first (relay_swap). One load otherwise. -1 (errno
 * set): the call is to fail with the reset's error, which the relay took
 * from the real socket (the kernel hands it out once). */
static inline int relay_reset_check(int fd)
{
    if (__atomic_load_n(&g_resets_pending, __ATOMIC_RELAXED) && fd >= 0 && fd < MAX_FDS &&
        __atomic_load_n(&g_fds[fd], __ATOMIC_RELAXED))
        return relay_swap(fd);
    return 0;
}
uint32_t mux_attach_unconnected(int fd, uint8_t family);
void mux_note(uint32_t id, const void *m, size_t n);
void mux_detach(uint32_t id);
void relay_exit_drain(const struct timespec *until, long ms);
/* exec (tcp_relay.c): what a failed exec puts back */
#define EXEC_UNDO_MAX 256
struct exec_undo_item {
    int fd, saved, fdflags, real;
};
struct exec_undo {
    unsigned n;
    struct exec_undo_item items[EXEC_UNDO_MAX];
};
char *relay_exec_prepare(struct exec_undo *u);
void relay_exec_failed(struct exec_undo *u);
void relay_inherit(void);
void relay_link_early(void);
void relay_exec_drain(const struct timespec *until, long ms);

/* ---- udp_queue.c --------------------------------------------------------- */

void udp_track(int fd, int domain);
void udp_put(struct udp_state *u);
void udp_attach_locked(struct udp_state *u, int fd);
ssize_t udp_sendto(int fd, const void *b, size_t n, int flags, const struct sockaddr *to, socklen_t tl);
ssize_t udp_sendmsg(int fd, const struct msghdr *m, int flags);
ssize_t udp_recvfrom(int fd, void *b, size_t n, int flags, struct sockaddr *from, socklen_t *fl);
ssize_t udp_recvmsg(int fd, struct msghdr *m, int flags);
int udp_sendmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags);
int udp_recvmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags, struct timespec *timeout);
void udp_atfork_child(void);
pthread_mutex_t *udp_drain_lock(void); /* g_udp_drain_lock, for fork (lock order 4) */
void udp_exit_drain(const struct timespec *until, long ms);

/* ---- sockctl.c ----------------------------------------------------------- */

void ctl_put(struct ctl_sock *k);
void ctl_connected(int fd);
uint32_t ctl_take_id(int fd);
void ctl_option(int fd, int level, int name, bool is_set);
void ctl_addr_note(int fd, uint32_t type);
void ctl_atfork_child(void);

/* ---- exec.c -------------------------------------------------------------- */

void exec_drain(void);

/* ---- time ---------------------------------------------------------------- */

static inline uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

#pragma GCC visibility pop

#endif

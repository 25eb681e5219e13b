/*
 * fdtable.c: the fd table. Owns g_fds, g_udp and g_ctls (fd number -> the
 * relay, UDP state or control link that number names, one ref each), the
 * dup/close bookkeeping on them, and the process's fork handlers.
 *
 * Locks: g_fd_lock protects the three tables. It is taken after
 * g_drain_lock (tcp_relay.c) and before any relay, UDP or control lock;
 * refs are dropped (relay_put, udp_put, ctl_put) after it is released.
 * atfork_prepare holds it across fork, so the child's tables are a
 * consistent copy.
 */
#include "shim.h"

struct relay *g_fds[MAX_FDS];
struct udp_state *g_udp[MAX_FDS];
struct ctl_sock *g_ctls[MAX_FDS];
pthread_mutex_t g_fd_lock = PTHREAD_MUTEX_INITIALIZER;
pid_t g_pid;

/* A ref on fd's relay, or NULL when fd is not relayed. An entry whose fd
 * is no longer the program's end of that relay (closed with the raw system
 * call, as libuv does, and the number reused) is stale: it is dropped. */
struct relay *relay_get(int fd)
{
    if (fd < 0 || fd >= MAX_FDS || !__atomic_load_n(&g_fds[fd], __ATOMIC_RELAXED))
        return NULL;
    pthread_mutex_lock(&g_fd_lock);
    struct relay *r = g_fds[fd];
    if (r)
        atomic_fetch_add(&r->refs, 1);
    pthread_mutex_unlock(&g_fd_lock);
    if (r && !relay_is_current(r, fd)) {
        pthread_mutex_lock(&g_fd_lock);
        bool mine = g_fds[fd] == r;
        if (mine)
            g_fds[fd] = NULL;
        pthread_mutex_unlock(&g_fd_lock);
        if (mine)
            relay_put(r); /* the table's */
        relay_put(r);
        return NULL;
    }
    return r;
}

void fd_forget(int fd)
{
    if (fd < 0 || fd >= MAX_FDS || (!__atomic_load_n(&g_fds[fd], __ATOMIC_RELAXED) &&
                                     !__atomic_load_n(&g_udp[fd], __ATOMIC_RELAXED) &&
                                     !__atomic_load_n(&g_ctls[fd], __ATOMIC_RELAXED)))
        return;
    if (shim_vforked())
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
void fd_copy(int from, int to)
{
    if (to < 0 || to >= MAX_FDS || from == to)
        return;
    struct relay *r = relay_get(from);
    if (!r && __atomic_load_n(&g_fds[to], __ATOMIC_RELAXED) == NULL &&
        !__atomic_load_n(&g_udp[to], __ATOMIC_RELAXED) && !__atomic_load_n(&g_ctls[to], __ATOMIC_RELAXED) &&
        (from < 0 || from >= MAX_FDS || (!__atomic_load_n(&g_udp[from], __ATOMIC_RELAXED) &&
                                         !__atomic_load_n(&g_ctls[from], __ATOMIC_RELAXED))))
        return; /* nothing tracked on either: no lock */
    if (shim_vforked()) {
        if (r)
            relay_put(r);
        return;
    }
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

/* A ref on fd's UDP state, or NULL. */
struct udp_state *udp_get(int fd)
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

bool is_udp(int fd)
{
    if (fd < 0 || fd >= MAX_FDS)
        return false;
    /* Unlocked read of one pointer: a stale answer only means one datagram
     * takes the other path, as if the close had raced it. */
    return __atomic_load_n(&g_udp[fd], __ATOMIC_ACQUIRE) != NULL;
}

/* After fork: each area forgets what belongs to the parent's threads
 * (tcp_relay.c, sockctl.c, udp_queue.c). Nothing else runs in the child
 * yet, so no lock is taken. */
static void atfork_child(void)
{
    relay_atfork_child();
    ctl_atfork_child();
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
    relay_inherit(); /* relayed sockets an exec'ing image passed on */
}


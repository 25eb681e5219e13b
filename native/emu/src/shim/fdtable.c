/*
 * fdtable.c: the fd table. Owns g_fds, g_udp and g_ctls (fd number -> the
 * relay, UDP state or control link that number names, one ref each), the
 * dup/close bookkeeping on them, and the process's fork handlers.
 *
 * Locks: g_fd_lock protects the three tables; it is first in the shim's
 * lock order (shim.h). Refs are dropped (relay_put, udp_put, ctl_put)
 * after it is released. The fork handlers take every shim lock (below).
 */
#include "shim.h"

struct relay *g_fds[MAX_FDS];
struct udp_state *g_udp[MAX_FDS];
struct ctl_sock *g_ctls[MAX_FDS];
pthread_mutex_t g_fd_lock = PTHREAD_MUTEX_INITIALIZER;
int g_fd_top;
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
    fd_table_note_locked(to);
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

/*
 * Fork. The child has only the thread that forked: a lock another thread
 * held at that moment would stay held in the child for ever (its next
 * socket call waits on it), and what the lock protects could be half
 * changed (a link being opened, a queue being linked). So atfork_prepare
 * takes every shim lock in the lock order of shim.h, which waits until no
 * other thread is inside any of them: g_fd_lock, then the lock of every
 * ctl_sock, udp_state and relay the tables name (each once; they never
 * nest, and the tables cannot change meanwhile), then g_loop.lock,
 * g_udp_drain_lock and g_gstate_lock. atfork_parent releases them in
 * reverse. atfork_child first releases the per-socket ones (the areas'
 * resets below forget some of those objects), lets each area forget what
 * belongs to the parent's threads and initialise its condition variables
 * afresh (the waiters were parent threads) with the global locks still
 * held, then releases those in reverse. The forking thread is the only
 * one in the child, so unlocking there what it locked in the parent is
 * sound (normal mutexes; no owner check).
 * Not reached by vfork or posix_spawn (no atfork handlers run there).
 */
static pthread_mutex_t *g_global_locks[4]; /* lock order 3, 4, 5, 6: set by shim_ctor */

#define FORK_HOLD(obj)                         \
    do {                                       \
        if ((obj) && !(obj)->fork_held) {      \
            pthread_mutex_lock(&(obj)->lock);  \
            (obj)->fork_held = true;           \
        }                                      \
    } while (0)
#define FORK_RELEASE(obj)                      \
    do {                                       \
        if ((obj) && (obj)->fork_held) {       \
            (obj)->fork_held = false;          \
            pthread_mutex_unlock(&(obj)->lock); \
        }                                      \
    } while (0)

/* g_fd_lock held. */
static void socket_locks_take(void)
{
    for (int fd = 0; fd < g_fd_top; fd++) {
        FORK_HOLD(g_ctls[fd]);
        FORK_HOLD(g_udp[fd]);
        FORK_HOLD(g_fds[fd]);
    }
}

static void socket_locks_release(void)
{
    for (int fd = 0; fd < g_fd_top; fd++) {
        FORK_RELEASE(g_ctls[fd]);
        FORK_RELEASE(g_udp[fd]);
        FORK_RELEASE(g_fds[fd]);
    }
}

static void global_locks_release(void)
{
    for (int i = 3; i >= 0; i--)
        pthread_mutex_unlock(g_global_locks[i]);
    pthread_mutex_unlock(&g_fd_lock);
}

static void atfork_prepare(void)
{
    pthread_mutex_lock(&g_fd_lock);
    socket_locks_take();
    for (int i = 0; i < 4; i++)
        pthread_mutex_lock(g_global_locks[i]);
}

static void atfork_parent(void)
{
    for (int i = 3; i >= 0; i--)
        pthread_mutex_unlock(g_global_locks[i]);
    socket_locks_release();
    pthread_mutex_unlock(&g_fd_lock);
}

static void atfork_child(void)
{
    g_pid = getpid();
    socket_locks_release();
    relay_atfork_child();
    ctl_atfork_child();
    udp_atfork_child(); /* shim-udp: UDP workers and queues */
    global_locks_release();
}

__attribute__((constructor)) static void shim_ctor(void)
{
    g_pid = getpid();
    g_global_locks[0] = relay_loop_lock();
    g_global_locks[1] = udp_drain_lock();
    g_global_locks[2] = link_state_lock();
    g_global_locks[3] = readiness_orphan_lock();
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    relay_inherit(); /* relayed sockets an exec'ing image passed on */
}


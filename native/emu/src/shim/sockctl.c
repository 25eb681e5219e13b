/*
 * sockctl.c: bind, listen and options of TCP sockets that are not relayed
 * (sf_bind / sf_listen / sf_setoption in the kext). Owns every struct
 * ctl_sock: an unconnected TCP socket's link to nke-emud, opened at its
 * first bind, listen or setsockopt while a user client is open: it is then
 * attached on the process's mux link (tcp_relay.c) and its id is handed to
 * the relay when the socket connects (ctl_take_id). UDP sockets' notes go
 * on their own link (with_link).
 *
 * Locks (their order: shim.h): g_fd_lock is released before a
 * ctl_sock->lock (or a udp_state->lock) is taken; g_loop.lock is taken
 * under ctl_sock->lock (mux_attach_unconnected, mux_note).
 */
#include "shim.h"

void ctl_put(struct ctl_sock *k)
{
    if (atomic_fetch_sub(&k->refs, 1) == 1) {
        /* last name for the socket: its detach */
        if (k->id)
            mux_detach(k->id);
        pthread_mutex_destroy(&k->lock);
        free(k);
    }
}

/* The socket connected and is relayed now (the relay took its id): the
 * control entry goes. */
void ctl_connected(int fd)
{
    if (fd < 0 || fd >= MAX_FDS)
        return;
    pthread_mutex_lock(&g_fd_lock);
    struct ctl_sock *k = g_fds[fd] ? g_ctls[fd] : NULL;
    if (k)
        g_ctls[fd] = NULL;
    pthread_mutex_unlock(&g_fd_lock);
    if (k)
        ctl_put(k);
}

/* The id of fd's control socket (attached unconnected), taken for its
 * relay at connect: 0 when there is none. The ctl_sock stays in the table
 * with no id; ctl_connected drops it (detaching nothing). */
uint32_t ctl_take_id(int fd)
{
    if (fd < 0 || fd >= MAX_FDS)
        return 0;
    pthread_mutex_lock(&g_fd_lock);
    struct ctl_sock *k = g_ctls[fd];
    if (k)
        atomic_fetch_add(&k->refs, 1);
    pthread_mutex_unlock(&g_fd_lock);
    if (!k)
        return 0;
    pthread_mutex_lock(&k->lock);
    uint32_t id = k->id;
    k->id = 0;
    pthread_mutex_unlock(&k->lock);
    ctl_put(k);
    return id;
}

/* Runs fn for the socket: with the UDP state's link (attached here if not
 * yet: its attach carries the local address; fresh=true), or with the mux
 * id of an unconnected TCP socket (attached if `create` and a user client
 * is open). Relayed sockets are left alone: their notes go through
 * relay_opt_note. Returns false when nothing was done. */
static bool with_link(int fd, bool create, void (*fn)(int *link, uint32_t id, bool fresh, void *arg), void *arg)
{
    if (fd < 0 || fd >= MAX_FDS)
        return false;
    shim_init();
    if (g_enabled != 1 || shim_vforked())
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
            fn(&u->link, 0, fresh, arg);
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
        pthread_mutex_lock(&g_fd_lock);
        if (g_ctls[fd] || g_fds[fd]) { /* another thread was first */
            pthread_mutex_unlock(&g_fd_lock);
            pthread_mutex_destroy(&k->lock);
            free(k);
            return false;
        }
        g_ctls[fd] = k;
        fd_table_note_locked(fd);
        pthread_mutex_unlock(&g_fd_lock);
    }
    pthread_mutex_lock(&k->lock);
    if (!k->tried) {
        k->tried = true;
        k->id = mux_attach_unconnected(fd, is_tcp_inet(fd, &family) && family == AF_INET6 ? NKE_AF_INET6
                                                                                          : NKE_AF_INET);
    }
    if (k->id)
        fn(NULL, k->id, false, arg);
    pthread_mutex_unlock(&k->lock);
    ctl_put(k);
    return true;
}

/* A note on the UDP link, or on the mux link under the socket's id. */
static void note(int *link, uint32_t id, const void *m, size_t n)
{
    if (link)
        link_note(link, m, n);
    else
        mux_note(id, m, n);
}

struct addr_note { uint32_t type; int fd; };

static void send_addr_note(int *link, uint32_t id, bool fresh, void *arg)
{
    struct addr_note *n = arg;
    /* A UDP attach made just now already carried the bound address. */
    if (fresh && n->type == SHIM_BIND)
        return;
    struct shim_hdr h = { .type = n->type };
    local_addr(n->fd, &h.addr);
    note(link, id, &h, sizeof(h));
}

struct opt_note { int level, name; bool is_set; };

static void send_opt_note(int *link, uint32_t id, bool fresh, void *arg)
{
    (void)fresh;
    struct opt_note *o = arg;
    struct shim_option m = { .hdr = { .type = SHIM_OPTION, .len = 0 }, .level = o->level, .name = o->name,
                             .is_set = o->is_set ? 1u : 0u };
    note(link, id, &m, sizeof(m));
}

/* setsockopt attaches an unconnected socket (options usually come before
 * bind: SO_REUSEADDR); getsockopt is reported only on sockets already
 * attached (it is frequent and says little). */
void ctl_option(int fd, int level, int name, bool is_set)
{
    struct opt_note o = { level, name, is_set };
    with_link(fd, is_set, send_opt_note, &o);
}

/* bind or listen succeeded on fd: SHIM_BIND / SHIM_LISTEN with its local
 * address. */
void ctl_addr_note(int fd, uint32_t type)
{
    struct addr_note n = { type, fd };
    with_link(fd, true, send_addr_note, &n);
}

/* After fork: control entries are the parent's sockets' identities; the
 * child forgets them (the parent's refs stay with the parent). */
void ctl_atfork_child(void)
{
    for (int fd = 0; fd < g_fd_top; fd++)
        g_ctls[fd] = NULL;
}

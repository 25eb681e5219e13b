/*
 * sockctl.c: bind, listen and options of TCP sockets that are not relayed
 * (sf_bind / sf_listen / sf_setoption in the kext). Owns every struct
 * ctl_sock: an unconnected TCP socket's link to nke-emud, opened at its
 * first bind, listen or setsockopt while a user client is open, and handed
 * to the relay when the socket connects (ctl_take_link). UDP sockets'
 * notes go on their own link (with_link).
 *
 * Locks: ctl_sock->lock is a leaf; g_fd_lock is released before it (or a
 * udp_state->lock) is taken.
 */
#include "shim.h"

void ctl_put(struct ctl_sock *k)
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

/* The socket connected and is relayed now (its own link and attach): the
 * control link, if any, goes (its detach). */
void ctl_connected(int fd)
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
int ctl_take_link(int fd)
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

/* After fork: control links are the parent's sockets' identities. */
void ctl_atfork_child(void)
{
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
}

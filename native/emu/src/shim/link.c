/*
 * link.c: the link to nke-emud. Owns the runtime directory's paths
 * (shim_init), opening a connection to shim.sock (link_open: the one place
 * that connects), the SHIM_ATTACH that introduces a socket, the notes sent
 * on a link (link_note), parsing verdicts (verdict_piece), and the process's
 * view of nke-emud's shim.state (client_open_now, udp_may_defer_now).
 *
 * Locks: g_gstate_lock (last in shim.h's lock order) serializes remapping
 * shim.state; readers use atomics. Callers serialize sends on a link
 * themselves.
 */
#include "shim.h"
#include "nke_rundir.h"

static char g_shim_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static char g_state_path[PATH_MAX + 32];
int g_enabled = -1;

void shim_init(void)
{
    if (g_enabled >= 0)
        return;
    g_debug = getenv("NKE_SHIM_DEBUG") != NULL;
    char dir[PATH_MAX];
    if (!nke_rundir_resolve(dir, sizeof(dir))) {
        g_enabled = 0; /* the path does not fit: no nke-emud can listen there */
        return;
    }
    snprintf(g_state_path, sizeof(g_state_path), "%s/%s", dir, NKE_EMU_SHIM_STATE);
    int n = snprintf(g_shim_path, sizeof(g_shim_path), "%s/%s", dir, NKE_EMU_SHIM_SOCK);
    g_enabled = (n > 0 && (size_t)n < sizeof(g_shim_path) && getenv("NKE_SHIM_OFF") == NULL) ? 1 : 0;
}

int link_open(void)
{
    int fd = libc_call(socket, AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    memcpy(sa.sun_path, g_shim_path, sizeof(g_shim_path));
    /* Only to a private directory and a listener of our uid or root; else
     * said once on stderr, and the program runs unfiltered (nke_rundir.h). */
    if (nke_rundir_link_connect(fd, sa.sun_path) < 0) {
        int e = errno;
        libc_call(close, fd);
        /* nke-emud is there but this process may not reach it (another uid
         * than the runtime directory's, e.g. after dropping privileges):
         * say so once, instead of running unfiltered in silence. */
        static atomic_bool said;
        if (e == EACCES && !atomic_exchange(&said, true)) /* EPERM: nke_rundir said why */
            fprintf(stderr,
                    "nkeshim[%d]: cannot reach nke-emud at %s as uid %u (%s): this process's sockets are not "
                    "filtered (run it as the runtime directory's owner, or let it fork from a process that "
                    "was linked before it dropped privileges)\n",
                    (int)getpid(), g_shim_path, (unsigned)getuid(), strerror(e));
        errno = e;
        return -1;
    }
    return fd;
}

void to_nke_addr(const struct sockaddr_storage *ss, struct nke_addr *a)
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

int link_attach(int fd, uint8_t family, uint8_t protocol, bool incoming)
{
    int link = fd_high(link_open());
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
bool link_attach_on(int link, int fd, uint8_t family, uint8_t protocol, bool incoming)
{
    struct shim_attach a = { .hdr = { .type = SHIM_ATTACH }, .pid = getpid(), .uid = getuid(),
                             .family = family, .type = protocol == NKE_PROTO_TCP ? 1 : 2,
                             .protocol = protocol, .incoming = incoming };
    shim_comm(a.comm);
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
    return libc_call(sendto, link, &a, sizeof(a), MSG_NOSIGNAL, NULL, 0) >= 0;
}

/* shim.state, opened only when its directory is private and it is a
 * regular file of ours or root's (a FIFO put there would block open()). */
static int state_open(void)
{
    return nke_rundir_open_shared(g_state_path, getuid(), sizeof(struct shim_state));
}

const struct shim_state *state_map(void)
{
    int fd = state_open();
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

/* Validates one VERDICT message (h, then h->len bytes at body, msg_len in
 * total) and appends its modified bytes to *mod / *mod_len (realloc'd; the
 * caller owns them). Returns 1 when the verdict is complete, 0 when more
 * pieces follow, -1 when malformed or out of memory (fail open). Shared by
 * the TCP relay and UDP's synchronous round trip. */
int verdict_piece(const struct shim_hdr *h, const uint8_t *body, size_t msg_len, uint8_t **mod,
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

pthread_mutex_t *link_state_lock(void) { return &g_gstate_lock; }

bool client_open_now(void)
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
        int fd = state_open();
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

/* True unless nke-emud says no datagram could be held now (no user client,
 * or capture NOTHING): then a datagram goes to the kernel without a round
 * trip (when nothing is queued ahead of it). Without a state file: ask. */
bool udp_may_defer_now(void)
{
    client_open_now(); /* refreshes g_gstate (the current nke-emud's file) */
    const struct shim_state *st = __atomic_load_n(&g_gstate, __ATOMIC_ACQUIRE);
    return !st || __atomic_load_n(&st->may_defer, __ATOMIC_ACQUIRE) != 0;
}

/* Never blocks: nke-emud reads promptly, and a full link buffer (a stuck
 * nke-emud) loses the notification rather than stalling the program. A
 * failed send ends the link (fail open, nothing more reported). */
void link_note(int *link, const void *m, size_t n)
{
    if (*link >= 0 && libc_call(sendto, *link, m, n, MSG_NOSIGNAL | MSG_DONTWAIT, NULL, 0) < 0 && errno != EAGAIN) {
        libc_call(close, *link);
        *link = -1;
    }
}

void local_addr(int fd, struct nke_addr *a)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    memset(a, 0, sizeof(*a));
    if (libc_call(getsockname, fd, (struct sockaddr *)&ss, &sl) == 0)
        to_nke_addr(&ss, a);
}


/* The process's name as the kernel has it (/proc/self/comm). */
void shim_comm(char comm[NKE_COMM_LEN])
{
    memset(comm, 0, NKE_COMM_LEN);
    int fd = open("/proc/self/comm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = libc_call(read, fd, comm, NKE_COMM_LEN - 1);
    libc_call(close, fd);
    if (n > 0)
        comm[strcspn(comm, "\n")] = 0;
}

/*
 * nke-emud: the Linux stand-in for the kext. Hosts kext/core and exposes
 * ctl.sock (user client), kev.sock (emulated event sockets) and shim.sock
 * (libnkeshim.so's link) in a 0700 runtime directory.
 *
 * Threading: one thread, one epoll loop. Every call into the core happens on
 * it, which is the serialization nke_core.h asks of the platform; nothing
 * here locks.
 *
 * Usage: nke-emud [--kev-limit N] [--spin-us N]   (the hold deadline is the
 * client's capture config hold_timeout_ms, default NKE_HOLD_TIMEOUT_DEFAULT_MS;
 * a client's NKE_ACT_EXTEND moves it later, at most NKE_HOLD_TOTAL_MAX_MS
 * after the hold: the loop takes the next deadline from nke_core_expire on
 * every turn, so an extended chunk simply is not due when the old one passes)
 *
 * --spin-us N (default 50; 0: off): while data can be held, the loop polls
 * without sleeping for up to N us after the last event, yielding between
 * polls, and relays waiting for a verdict do the same (shim.state). A held
 * chunk's round trip crosses four processes (relay, nke-emud, user client,
 * nke-emud, relay); on a virtual machine whose idle CPUs halt at once, each
 * sleep-and-wake costs tens of microseconds, which is most of the round trip.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/netlink.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <poll.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include <nke/nke_abi.h>
#include "../../../kext/core/nke_core.h"
#include "nke_emu_proto.h"
#include "nke_rundir.h"
#include "nke_shim_link.h"
#include <sys/file.h>

/* Every message goes to stderr (the console or window that started us) and to
 * the log file in the runtime directory, so a window that did not start this
 * nke-emud can still show what it says (NKE: Show Kernel Log). */
static int g_logfd = -1;
static void emud_log(const char *func, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define LOG(fmt, ...) emud_log(__func__, fmt, ##__VA_ARGS__)

static void emud_log(const char *func, const char *fmt, ...)
{
    char line[2048];
    int n = snprintf(line, sizeof(line), "nke-emud[%d] %s: ", (int)getpid(), func);
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < sizeof(line))
        n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof(line) - 1 ? (size_t)n : sizeof(line) - 2;
    line[len++] = '\n';
    fwrite(line, 1, len, stderr);
    if (g_logfd >= 0) {
        struct stat st;
        /* Bounded: past the limit the file starts over, saying so. */
        if (fstat(g_logfd, &st) == 0 && st.st_size + (off_t)len > (off_t)NKE_EMU_LOG_MAX &&
            ftruncate(g_logfd, 0) == 0) {
            static const char note[] = "nke-emud: log restarted (it reached its size limit)\n";
            (void)!write(g_logfd, note, sizeof(note) - 1);
        }
        (void)!write(g_logfd, line, len);
    }
}

/* Sockets tracked at once: a busy machine (or the explorer bench's 10 000)
 * has more than a few thousand; beyond this they pass untracked (counted). */
#define NSOCKS 16384u
#define MAX_KEV 64
#define KEV_VENDOR_CODE 1000u

enum conn_kind {
    K_LISTEN_CTL = 1, K_LISTEN_KEV, K_LISTEN_SHIM, K_CTL, K_KEV, K_SHIM, K_PROC,
    K_REFUSED_CTL, K_REFUSED_KEV /* another uid: every request answered "not permitted" */
};
/* Refused connections kept open to be answered at once (nke_emu_proto.h,
 * Refusal); more are closed unanswered, so no uid can tie us up. */
#define MAX_REFUSED 16

/* A verdict message the shim's link could not take yet (shim only). */
struct outmsg {
    struct outmsg *next;
    size_t len;
    uint8_t b[];
};

/* One accepted or listening descriptor. Owned by the loop. */
struct conn {
    enum conn_kind kind;
    int fd;
    /* shim: verdicts waiting for room on the link, in order (the loop never
     * blocks on one shim; EPOLLOUT is armed while this is non-empty) */
    struct outmsg *outq, *outq_tail;
    bool dead;                  /* shim: closing; finish must not write */
    struct nke_sock_id id;      /* shim: the core's socket */
    /* Mux links (nke_shim_link.h): the link conn has mux_link set and its
     * sockets in kids[] by the shim's id; each socket is a conn of its own
     * (fd -1) whose `link` is the link conn it rides on. */
    bool mux_link;
    struct conn **kids;
    uint32_t nkids;
    struct conn *link;
    uint32_t mux_id;
    /* kev: filter */
    bool kev_set;
    uint32_t kev_vendor, kev_class, kev_subclass;
    uid_t refused_uid;          /* K_REFUSED_*: the peer's uid */
};

/* Kept piece of data: the core's data_ctx (its order item first). Owned by
 * the core while held or queued behind held data, returned to us in finish,
 * in stream order per socket direction (kext/core/nke_order.h). */
struct held {
    struct nke_order_item item;
    struct conn *c;
    uint32_t dir, len, seq;
    bool no_verdict;            /* SHIM_F_NO_VERDICT: the shim passed it already */
    uint8_t bytes[];
};

static struct nke_core g_core;
static struct nke_sock *g_socks;
static int g_ep = -1;
static int g_qfd = -1, g_buffd = -1, g_evfd = -1;
static struct nke_dq_memory *g_queue;
/* The open user client: the ctl.sock connection whose OPEN succeeded, until
 * it closes (NULL: none is open). As the kext's owner, it is made at a
 * successful OPEN, not at connect: any connection may OPEN while none is
 * open. */
static struct conn *g_ctl;
static struct conn *g_kev[MAX_KEV];
static uint32_t g_kev_limit = NKE_KEV_MSG_LIMIT_X86_64;
static uint32_t g_exec_id, g_kev_id;
static uint64_t g_kev_lost, g_refused, g_session;
static int g_nrefused_open; /* K_REFUSED_* connections open */
static uid_t g_uid;
static char g_rundir[PATH_MAX]; /* the runtime directory this nke-emud serves */
static int g_proc_fd = -1; /* process-events connector, or -1: shim reports only */
static struct shim_state *g_shim_state; /* shim.state mapping (only this thread writes) */
static uint32_t g_spin_us = 50;

/* Publishes whether any chunk could be deferred now, so relays skip the
 * round trip when none can. Called after every user-client request and
 * when the client goes. */
static bool g_may_hold; /* what shim.state's may_hold says (the loop's spin too) */
static void shim_state_update(void)
{
    uint32_t v = g_core.client_open && g_core.capture.mode != NKE_CAPTURE_NOTHING;
    bool hold = false;
    if (v && g_core.capture.mode == NKE_CAPTURE_ALL)
        hold = true;
    else if (v && g_core.capture.mode == NKE_CAPTURE_RULES) {
        hold = g_core.capture.default_action == NKE_RULE_HOLD;
        for (uint32_t i = 0; i < g_core.capture.nrules && i < NKE_MAX_RULES && !hold; i++)
            hold = g_core.capture.rules[i].action == NKE_RULE_HOLD;
    }
    g_may_hold = hold;
    if (!g_shim_state)
        return;
    __atomic_store_n(&g_shim_state->may_defer, v, __ATOMIC_RELEASE);
    __atomic_store_n(&g_shim_state->client, (uint32_t)g_core.client_open, __ATOMIC_RELEASE);
    __atomic_store_n(&g_shim_state->may_hold, (uint32_t)hold, __ATOMIC_RELEASE);
}

/* Fresh file renamed into place: shims of a previous nke-emud keep their
 * mapping of the old inode (never truncated under them). */
static void shim_state_create(const char *dir)
{
    char tmp[PATH_MAX + 32], dst[PATH_MAX + 32];
    snprintf(tmp, sizeof(tmp), "%s/.%s.%d", dir, NKE_EMU_SHIM_STATE, (int)getpid());
    snprintf(dst, sizeof(dst), "%s/%s", dir, NKE_EMU_SHIM_STATE);
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, 4096) < 0) {
        LOG("%s: %s (shims will ask for every chunk)", tmp, strerror(errno));
        if (fd >= 0) close(fd);
        return;
    }
    void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m != MAP_FAILED) {
        /* complete before the rename makes it visible to shims */
        ((struct shim_state *)m)->magic = SHIM_STATE_MAGIC;
        ((struct shim_state *)m)->spin_us = g_spin_us;
        ((struct shim_state *)m)->version = 1;
    }
    if (m == MAP_FAILED || rename(tmp, dst) < 0) {
        LOG("%s: %s (shims will ask for every chunk)", dst, strerror(errno));
        if (m != MAP_FAILED) munmap(m, 4096);
        unlink(tmp);
        return;
    }
    g_shim_state = m;
    shim_state_update();
}
/* Closed conns are freed at the end of a loop iteration, because finish()
 * may still be handed a sock_ctx pointing at one. */
static struct conn *g_graveyard[16384];
/* Longest the loop leaves shim links unread while the client returns
 * buffers: 2 ms while a chunk could be held (a relay may be waiting for a
 * verdict behind those links), 20 ms when chunks are at most reported
 * (relays pass the bytes at once and wait for nothing; the links' 4 MiB
 * buffers take the reports meanwhile). On a loaded machine the client's
 * reader thread often waits longer than 2 ms for a CPU; each chunk that
 * came meanwhile passed unreported (a gap in the client's history). */
#define DEFER_MAX_NS 2000000ull
#define DEFER_REPORT_MAX_NS 20000000ull
static int g_ngrave;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- core ops ----------------------------------------------------------- */

/* Set by op_emit when the queue went from empty to non-empty; the loop
 * signals the client's eventfd once after the events of one epoll_wait are
 * handled (queue_signal), not per record: a reader woken at the first record
 * of a burst would take it alone and go back to sleep, one wake-up (and one
 * buffer-release call) per handful of records. Loop thread only. */
static bool g_queue_signal;

static void queue_signal(void)
{
    if (!g_queue_signal)
        return;
    g_queue_signal = false;
    uint64_t one = 1;
    if (write(g_evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        LOG("eventfd write: %s", strerror(errno));
}

static bool op_emit(void *platform, const void *rec, uint32_t size)
{
    (void)platform;
    bool was_empty = false;
    if (nke_dq_enqueue(g_queue, NKE_QUEUE_DATA_SIZE, rec, size, &was_empty) != NKE_OK)
        return false;
    if (was_empty)
        g_queue_signal = true;
    return true;
}

static void op_copy(void *platform, void *data_ctx, uint32_t off, uint32_t len, void *dst)
{
    (void)platform;
    struct held *h = data_ctx;
    memcpy(dst, h->bytes + off, len);
}

static void ep_mod(struct conn *c, uint32_t events);

/* Sends what waits in c's outq without blocking; arms or disarms EPOLLOUT. */
static void outq_flush(struct conn *c)
{
    while (c->outq) {
        struct outmsg *m = c->outq;
        if (send(c->fd, m->b, m->len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
            if (errno == EAGAIN || errno == ENOBUFS || errno == EINTR) {
                ep_mod(c, EPOLLIN | EPOLLOUT);
                return;
            }
            LOG("verdict to shim fd %d: %s", c->fd, strerror(errno));
            /* the shim is gone or broken; its EPOLLIN/HUP closes the conn */
        }
        c->outq = m->next;
        free(m);
    }
    c->outq_tail = NULL;
    ep_mod(c, EPOLLIN);
}

static void outq_free(struct conn *c)
{
    while (c->outq) {
        struct outmsg *m = c->outq;
        c->outq = m->next;
        free(m);
    }
    c->outq_tail = NULL;
}

/* The verdict on the DATA `seq` of direction dir; modified bytes in pieces
 * of SHIM_PIECE. Never blocks: what the link cannot take now is queued. */
static void send_verdict(struct conn *s, uint32_t dir, uint32_t seq, uint32_t action, const uint8_t *b,
                         uint32_t len)
{
    static uint8_t buf[sizeof(struct shim_mux) + sizeof(struct shim_hdr) + SHIM_PIECE];
    /* A socket of a mux link: its verdicts go on the link, prefixed. */
    struct conn *c = s->link ? s->link : s;
    if (c->dead)
        return;
    size_t pre = s->link ? sizeof(struct shim_mux) : 0;
    if (pre) {
        struct shim_mux mx = { .sock = s->mux_id };
        memcpy(buf, &mx, sizeof(mx));
    }
    uint8_t *msg = buf + pre;
    uint32_t off = 0;
    do {
        uint32_t n = len - off > SHIM_PIECE ? SHIM_PIECE : len - off;
        struct shim_hdr h = { .type = SHIM_VERDICT, .direction = dir, .action = action, .len = n,
                              .flags = off + n < len ? SHIM_F_MORE : 0, .seq = seq };
        memcpy(msg, &h, sizeof(h));
        if (n)
            memcpy(msg + sizeof(h), b + off, n);
        off += n;
        if (!c->outq) {
            ssize_t w = send(c->fd, buf, pre + sizeof(h) + n, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w >= 0)
                continue;
            if (errno != EAGAIN && errno != ENOBUFS && errno != EINTR) {
                LOG("verdict to shim fd %d: %s", c->fd, strerror(errno));
                return;
            }
        }
        struct outmsg *m = malloc(sizeof(*m) + pre + sizeof(h) + n);
        if (!m) {
            /* Out of memory: the shim would wait forever for this verdict,
             * so cut its link instead: it fails open (sends originals). */
            LOG("no memory for a verdict: closing shim fd %d (it fails open)", c->fd);
            shutdown(c->fd, SHUT_RDWR);
            return;
        }
        m->next = NULL;
        m->len = pre + sizeof(h) + n;
        memcpy(m->b, buf, m->len);
        if (c->outq_tail)
            c->outq_tail->next = m;
        else
            c->outq = m;
        c->outq_tail = m;
        ep_mod(c, EPOLLIN | EPOLLOUT);
    } while (off < len);
}

static void op_finish(void *platform, void *sock_ctx, void *data_ctx, uint32_t action, void *staged,
                      uint32_t staged_len, uint32_t reason)
{
    (void)platform; (void)reason;
    struct conn *c = sock_ctx;
    struct held *h = data_ctx;
    if (c && !c->dead && !h->no_verdict) {
        if (action == NKE_ACT_ALLOW_MODIFIED)
            send_verdict(c, h->dir, h->seq, action, staged, staged_len);
        else
            send_verdict(c, h->dir, h->seq, action, NULL, 0);
    }
    /* Nothing of ours stays in flight: the verdict is on its way and the
     * shim applies verdicts in seq order, so the core may hand back the
     * next piece of this direction at once. */
    nke_core_item_done(&g_core, &h->item);
    free(h);
    free(staged);
}

static int op_stage(void *platform, void **staged, uint32_t total, uint32_t off, const void *b, uint32_t len)
{
    (void)platform;
    if (*staged == NULL) {
        *staged = malloc(total ? total : 1);
        if (!*staged)
            return NKE_ERR_NO_MEMORY;
    }
    memcpy((uint8_t *)*staged + off, b, len);
    return NKE_OK;
}

static void op_unstage(void *platform, void *staged)
{
    (void)platform;
    free(staged);
}

static const struct nke_core_ops g_ops = { op_emit, op_copy, op_finish, op_stage, op_unstage };

/* ---- helpers ------------------------------------------------------------ */

static void ep_add(struct conn *c)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        LOG("epoll_ctl: %s", strerror(errno));
}

static void ep_mod(struct conn *c, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = c };
    if (epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        LOG("epoll_ctl mod: %s", strerror(errno));
}

static void conn_close(struct conn *c)
{
    outq_free(c);
    if (c->fd >= 0) { /* a mux link's socket has no fd of its own */
        epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->dead = true;
    if (g_ngrave < (int)(sizeof(g_graveyard) / sizeof(g_graveyard[0])))
        g_graveyard[g_ngrave++] = c;
    /* else leaked: bounded by one loop iteration's closes, never hit in practice */
}

static int listen_at(const char *dir, const char *name)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if ((size_t)snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", dir, name) >= sizeof(sa.sun_path)) {
        LOG("runtime dir path too long for a Unix socket: %s", dir);
        exit(2);
    }
    unlink(sa.sun_path);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 512) < 0) {
        LOG("cannot listen on %s: %s", sa.sun_path, strerror(errno));
        exit(2);
    }
    return fd;
}

/* Same uid as ours, or root; anyone else is refused and logged. *uid: the
 * peer's (-1 when unknown). */
static bool peer_ok(int fd, uid_t *uid)
{
    struct ucred cr;
    socklen_t l = sizeof(cr);
    *uid = (uid_t)-1;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) < 0) {
        LOG("SO_PEERCRED: %s", strerror(errno));
        return false;
    }
    *uid = cr.uid;
    if (cr.uid == g_uid || cr.uid == 0)
        return true;
    g_refused++;
    LOG("refused peer pid %d uid %u (only uid %u or root may connect); %llu refused so far",
        (int)cr.pid, (unsigned)cr.uid, (unsigned)g_uid, (unsigned long long)g_refused);
    return false;
}

/* ---- kev ---------------------------------------------------------------- */

/* Largest --kev-limit: one datagram per message, built in one buffer. */
#define KEV_LIMIT_MAX 65536u

static void kev_broadcast_exec(int32_t pid, int32_t ppid, uint32_t uid, uint16_t flags, const char *path,
                               uint32_t plen)
{
    /* Never 0: main() refused a limit that carries no path byte. */
    uint32_t count = nke_kev_chunk_count(plen, g_kev_limit);
    uint32_t sent = nke_kev_sendable_len(plen, g_kev_limit);
    if (sent < plen)
        LOG("exec of pid %d: path of %u bytes sent as its first %u, flagged truncated (NKE_PATH_MAX %u, "
            "%u chunks of %u bytes under --kev-limit %u)",
            (int)pid, plen, sent, NKE_PATH_MAX, NKE_KEV_MAX_CHUNKS, nke_kev_piece_size(g_kev_limit),
            g_kev_limit);
    uint32_t exec_id = ++g_exec_id;
    for (uint32_t i = 0; i < count; i++) {
        struct nke_kev_exec_chunk ch;
        const char *piece;
        uint32_t plen2;
        if (nke_kev_chunk_build(exec_id, pid, ppid, uid, flags, path, plen, g_kev_limit, i, &ch, &piece,
                                &plen2) != NKE_OK)
            return;
        static uint8_t msg[KEV_LIMIT_MAX];
        struct nke_kern_event_msg h = {
            .total_size = (uint32_t)(sizeof(h) + sizeof(ch) + plen2), .vendor_code = KEV_VENDOR_CODE,
            .kev_class = NKE_KEV_CLASS, .kev_subclass = NKE_KEV_SUBCLASS_EXEC, .id = ++g_kev_id,
            .event_code = NKE_KEV_EVENT_EXEC };
        if (h.total_size > g_kev_limit || h.total_size > sizeof(msg))
            return; /* the chunker promised otherwise: never send an oversized message */
        memcpy(msg, &h, sizeof(h));
        memcpy(msg + sizeof(h), &ch, sizeof(ch));
        memcpy(msg + sizeof(h) + sizeof(ch), piece, plen2);
        for (int k = 0; k < MAX_KEV; k++) {
            struct conn *c = g_kev[k];
            if (!c || !c->kev_set)
                continue;
            if ((c->kev_vendor != NKE_EMU_KEV_ANY && c->kev_vendor != h.vendor_code) ||
                (c->kev_class != NKE_EMU_KEV_ANY && c->kev_class != h.kev_class) ||
                (c->kev_subclass != NKE_EMU_KEV_ANY && c->kev_subclass != h.kev_subclass))
                continue;
            /* A slow reader loses events, like the kernel's socket buffer. */
            if (send(c->fd, msg, h.total_size, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
                g_kev_lost++;
        }
    }
}

static void kev_request(struct conn *c)
{
    struct nke_emu_kev_ctl q;
    ssize_t n = recv(c->fd, &q, sizeof(q), 0);
    if (n <= 0) {
        for (int k = 0; k < MAX_KEV; k++)
            if (g_kev[k] == c)
                g_kev[k] = NULL;
        conn_close(c);
        return;
    }
    struct nke_emu_kev_ctl r = q;
    r.magic = NKE_EMU_MAGIC_REPLY;
    r.msg_limit = g_kev_limit;
    if (n != sizeof(q) || q.magic != NKE_EMU_MAGIC_REQ) {
        r.status = NKE_EMU_KEV_EINVAL;
    } else if (q.op == NKE_EMU_KEV_GET_VENDOR) {
        q.vendor_string[NKE_EMU_KEV_VENDOR_LEN - 1] = 0;
        if (strcmp(q.vendor_string, NKE_KEV_VENDOR) == 0) {
            r.status = NKE_EMU_KEV_OK;
            r.vendor_code = KEV_VENDOR_CODE;
        } else {
            r.status = NKE_EMU_KEV_ENOENT;
        }
    } else if (q.op == NKE_EMU_KEV_SET_FILTER) {
        c->kev_set = true;
        c->kev_vendor = q.vendor_code;
        c->kev_class = q.kev_class;
        c->kev_subclass = q.kev_subclass;
        r.status = NKE_EMU_KEV_OK;
    } else {
        r.status = NKE_EMU_KEV_EINVAL;
    }
    send(c->fd, &r, sizeof(r), MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* ---- ctl ---------------------------------------------------------------- */

/* A ctl.sock connection closed (or its reply could not be sent): the open
 * client's closing releases everything held; any other just goes. */
static void ctl_gone(struct conn *c)
{
    if (c != g_ctl) {
        conn_close(c);
        return;
    }
    nke_core_client_close(&g_core);
    g_ctl = NULL;
    conn_close(c);
    shim_state_update();
    LOG("user client gone; held data released");
}

static void ctl_request(struct conn *c)
{
    static uint8_t in[NKE_EMU_MAX_REQ + 64];
    ssize_t n = recv(c->fd, in, sizeof(in), 0);
    if (n <= 0) {
        ctl_gone(c);
        return;
    }
    struct nke_emu_req q;
    static uint8_t out[sizeof(struct nke_emu_reply) + sizeof(struct nke_filter_state) + 64];
    struct nke_emu_reply r = { .magic = NKE_EMU_MAGIC_REPLY };
    uint32_t olen = 0;
    int fds[3];
    int nfds = 0;
    if ((size_t)n < sizeof(q)) {
        r.status = NKE_ERR_SIZE;
        goto reply;
    }
    memcpy(&q, in, sizeof(q));
    r.seq = q.seq;
    const uint8_t *arg = in + sizeof(q);
    uint32_t alen = (uint32_t)n - (uint32_t)sizeof(q);
    if (q.magic != NKE_EMU_MAGIC_REQ || q.len != alen) {
        r.status = NKE_ERR_SIZE;
        goto reply;
    }
    /* Who may call what: the ABI's one contract, the kext's too (nke_abi.h) */
    r.status = (uint32_t)nke_core_selector_check(q.selector, c == g_ctl);
    if (r.status != NKE_OK)
        goto reply;
    switch (q.selector) {
    case NKE_SEL_OPEN: {
        struct nke_open_request oq;
        struct nke_open_reply orp;
        if (alen != sizeof(oq)) {
            r.status = NKE_ERR_SIZE;
            break;
        }
        memcpy(&oq, arg, sizeof(oq));
        if (g_core.client_open) {
            /* Another connection is the open client (or this one already is). */
            r.status = NKE_ERR_BUSY;
            break;
        }
        nke_dq_init(g_queue, NKE_QUEUE_DATA_SIZE);
        uint64_t drain;
        while (read(g_evfd, &drain, sizeof(drain)) > 0) {}
        r.status = (uint32_t)nke_core_client_open(&g_core, &oq, &orp, ++g_session);
        if (r.status == NKE_OK) {
            g_ctl = c;
            memcpy(out + sizeof(r), &orp, sizeof(orp));
            olen = sizeof(orp);
            fds[0] = g_qfd; fds[1] = g_buffd; fds[2] = g_evfd;
            nfds = 3;
        }
        break;
    }
    case NKE_SEL_RESPOND:
        r.status = (uint32_t)nke_core_respond(&g_core, arg, alen);
        break;
    case NKE_SEL_PUT_DATA:
        r.status = (uint32_t)nke_core_put_data(&g_core, arg, alen);
        break;
    case NKE_SEL_SET_CAPTURE:
        r.status = (uint32_t)nke_core_set_capture(&g_core, (const void *)arg, alen);
        break;
    case NKE_SEL_GET_STATE: {
        struct nke_filter_state st;
        nke_core_get_state(&g_core, &st);
        memcpy(out + sizeof(r), &st, sizeof(st));
        olen = sizeof(st);
        r.status = NKE_OK;
        break;
    }
    default:
        r.status = NKE_ERR_SELECTOR;
    }
reply:
    r.len = olen;
    memcpy(out, &r, sizeof(r));
    struct iovec iov = { out, sizeof(r) + olen };
    union { char b[CMSG_SPACE(sizeof(int) * 3)]; struct cmsghdr a; } cm;
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (nfds) {
        mh.msg_control = cm.b;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *h = CMSG_FIRSTHDR(&mh);
        h->cmsg_level = SOL_SOCKET;
        h->cmsg_type = SCM_RIGHTS;
        h->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(h), fds, sizeof(int) * nfds);
    }
    shim_state_update();
    if (sendmsg(c->fd, &mh, MSG_NOSIGNAL) < 0) {
        LOG("reply to user client: %s", strerror(errno));
        ctl_gone(c);
    }
}

/* ---- exec events from the process-events connector ---------------------- */

/* Opens NETLINK_CONNECTOR / CN_IDX_PROC and asks for events. Needs
 * CAP_NET_ADMIN; without it we stay on the shim's execve reports. */
static int proc_open(void)
{
    int fd = socket(PF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_CONNECTOR);
    if (fd < 0)
        return -1;
    struct sockaddr_nl sa = { .nl_family = AF_NETLINK, .nl_groups = CN_IDX_PROC, .nl_pid = 0 };
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    struct {
        struct nlmsghdr nl;
        struct cn_msg cn;
        enum proc_cn_mcast_op op;
    } __attribute__((packed)) req;
    memset(&req, 0, sizeof(req));
    req.nl.nlmsg_len = sizeof(req);
    req.nl.nlmsg_type = NLMSG_DONE;
    req.nl.nlmsg_pid = (uint32_t)getpid();
    req.cn.id.idx = CN_IDX_PROC;
    req.cn.id.val = CN_VAL_PROC;
    req.cn.len = sizeof(req.op);
    req.op = PROC_CN_MCAST_LISTEN;
    if (send(fd, &req, sizeof(req), 0) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* ---- exec dedup -------------------------------------------------------- */
/*
 * With the connector open, an exec by a shimmed program is seen twice: by
 * the shim (sent before the exec; before_ns = CLOCK_MONOTONIC then) and by
 * the connector (after it; timestamp_ns = the kernel's ktime_get_ns() at
 * the exec, the same clock). Either may reach us first (two channels). The
 * two are one exec when the pid is the same and the shim's time is not
 * after the kernel's: a connector report pairs with the latest unpaired
 * shim report of its pid from before it, a shim report with the earliest
 * unpaired connector report of its pid from after it. Times matter, not
 * arrival order or paths: a pid often execs several times in a row (a
 * pyenv or env wrapper, then the program), and the connector report of the
 * image that is now calling exec is older than that call, so it never pairs
 * with it; paths differ for scripts (/proc/PID/exe is the interpreter).
 * The first report of a pair is the one broadcast, at once: nothing is
 * delayed. Races: the connector skips a process already gone (readlink
 * fails) and the shim reports an exec that then fails; either leaves an
 * unpaired entry that ages out after EXEC_DEDUP_MS. Only the loop thread
 * touches the table.
 */
#define EXEC_RECENT 256
#define EXEC_DEDUP_MS 2000u
enum { SRC_SHIM = 1, SRC_PROC = 2 };
struct exec_seen {
    uint64_t arrived_ms;  /* our clock, for ageing out */
    uint64_t exec_ns;     /* SHIM: before the exec; PROC: the exec */
    int32_t pid;
    uint8_t src;          /* SRC_*; 0: free or paired */
};
static struct exec_seen g_exec_seen[EXEC_RECENT];
static uint32_t g_exec_seen_next;
static uint64_t g_exec_dups;
static bool g_debug;

/* True when this report pairs with the other source's (drop it); else it is
 * recorded and the caller broadcasts. */
static bool exec_is_duplicate(uint8_t src, int32_t pid, uint64_t exec_ns)
{
    if (g_proc_fd < 0)
        return false; /* one source only */
    uint64_t now = now_ns() / 1000000u;
    struct exec_seen *best = NULL;
    for (uint32_t i = 0; i < EXEC_RECENT; i++) {
        struct exec_seen *e = &g_exec_seen[i];
        if (e->src == 0 || e->src == src || e->pid != pid || now - e->arrived_ms > EXEC_DEDUP_MS)
            continue;
        if (src == SRC_PROC) { /* e is a shim report: before the exec, the latest such */
            if (e->exec_ns <= exec_ns && (!best || e->exec_ns > best->exec_ns))
                best = e;
        } else {               /* e is a connector report: after the call, the earliest */
            if (e->exec_ns >= exec_ns && (!best || e->exec_ns < best->exec_ns))
                best = e;
        }
    }
    if (best) {
        best->src = 0;
        g_exec_dups++;
        if (g_debug)
            LOG("exec of pid %d reported by both the shim and the connector: sent once (%llu paired)",
                (int)pid, (unsigned long long)g_exec_dups);
        return true;
    }
    g_exec_seen[g_exec_seen_next] = (struct exec_seen){ now, exec_ns, pid, src };
    g_exec_seen_next = (g_exec_seen_next + 1u) % EXEC_RECENT;
    return false;
}

/* Whether the process just exec'd runs under this emulator's shim: its
 * environment preloads libnkeshim.so and names this runtime directory (or
 * none, so the shim's default, which is ours when it resolves the same).
 * The connector's report of such an exec can reach us before the shim's
 * own (which then is the duplicate): the views scope Exec Events to the
 * processes under the filter by this flag, so it must not depend on which
 * report came first. Only the first 256 KiB of the environment are read. */
static bool proc_under_shim(int32_t pid)
{
    static char env[256 * 1024];
    char p[64];
    snprintf(p, sizeof(p), "/proc/%d/environ", (int)pid);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    size_t n = 0;
    for (ssize_t r; n < sizeof(env) - 1 && (r = read(fd, env + n, sizeof(env) - 1 - n)) != 0;) {
        if (r < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        n += (size_t)r;
    }
    close(fd);
    env[n] = 0;
    bool preloaded = false, other_dir = false;
    for (size_t i = 0; i < n; i += strlen(env + i) + 1) {
        const char *e = env + i;
        if (strncmp(e, "LD_PRELOAD=", 11) == 0 && strstr(e + 11, "libnkeshim.so"))
            preloaded = true;
        else if (strncmp(e, NKE_EMU_DIR_ENV "=", sizeof(NKE_EMU_DIR_ENV)) == 0 &&
                 strcmp(e + sizeof(NKE_EMU_DIR_ENV), g_rundir) != 0)
            other_dir = true;
    }
    return preloaded && !other_dir;
}

/* One exec seen by the kernel: ppid from /proc/PID/stat (after the last ')'
 * of comm, which may hold spaces and parentheses), uid from /proc/PID/status
 * (real uid), path from /proc/PID/exe. A process gone already is skipped. */
static void proc_exec(int32_t pid, uint64_t exec_ns)
{
    /* A byte more than NKE_PATH_MAX holds: a longer path is still
     * reported, cut and flagged by the chunker, never left out. */
    char p[64], buf[4096], path[NKE_PATH_MAX + 1];
    int32_t ppid = 0;
    uint32_t uid = 0;
    snprintf(p, sizeof(p), "/proc/%d/exe", (int)pid);
    ssize_t pl = readlink(p, path, sizeof(path));
    if (pl <= 0)
        return;
    snprintf(p, sizeof(p), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(p, "re");
    if (f) {
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = 0;
        char *rp = strrchr(buf, ')');
        if (rp)
            sscanf(rp + 1, " %*c %d", &ppid);
        fclose(f);
    }
    snprintf(p, sizeof(p), "/proc/%d/status", (int)pid);
    f = fopen(p, "re");
    if (f) {
        while (fgets(buf, sizeof(buf), f))
            if (sscanf(buf, "Uid: %u", &uid) == 1)
                break;
        fclose(f);
    }
    if (!exec_is_duplicate(SRC_PROC, pid, exec_ns))
        kev_broadcast_exec(pid, ppid, uid, proc_under_shim(pid) ? NKE_EXEC_F_FROM_SHIM : 0, path, (uint32_t)pl);
}

static void proc_message(int fd)
{
    static uint8_t buf[8192] __attribute__((aligned(8)));
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0)
            return; /* EAGAIN, or ENOBUFS (events lost: the kernel's, counted nowhere) */
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_type != NLMSG_DONE)
                continue;
            struct cn_msg *cn = NLMSG_DATA(h);
            if (cn->id.idx != CN_IDX_PROC || cn->id.val != CN_VAL_PROC || cn->len < sizeof(struct proc_event))
                continue;
            struct proc_event *ev = (struct proc_event *)cn->data;
            if (ev->what == PROC_EVENT_EXEC)
                proc_exec(ev->event_data.exec.process_tgid, ev->timestamp_ns);
        }
    }
}

/* ---- shim --------------------------------------------------------------- */

#define MUX_SLOT(id) ((id) & 0xFFFFFu)

static void shim_gone(struct conn *c)
{
    c->dead = true; /* finish() of this socket's held chunks must not write */
    if (c->id.gen)
        nke_core_detach(&g_core, c->id, now_ns());
    c->id.gen = 0;
    if (c->mux_link) {
        /* The link is the detach of every socket it carried. */
        for (uint32_t i = 0; i < c->nkids; i++)
            if (c->kids[i])
                shim_gone(c->kids[i]);
        free(c->kids);
        c->kids = NULL;
        c->nkids = 0;
    }
    if (c->link && MUX_SLOT(c->mux_id) < c->link->nkids && c->link->kids[MUX_SLOT(c->mux_id)] == c)
        c->link->kids[MUX_SLOT(c->mux_id)] = NULL;
    conn_close(c);
}

/* The socket `id` of mux link l, created if `create` (its ATTACH). The
 * shim's ids are a slot (low 20 bits, reused) and a generation (the rest),
 * so a verdict still in flight for a socket that is gone never matches the
 * next socket of its slot. */
static struct conn *mux_kid(struct conn *l, uint32_t id, bool create)
{
    uint32_t slot = MUX_SLOT(id);
    if (slot < l->nkids && l->kids[slot] && l->kids[slot]->mux_id == id)
        return l->kids[slot];
    if (!create)
        return NULL;
    if (slot < l->nkids && l->kids[slot])
        shim_gone(l->kids[slot]); /* an ATTACH reusing a slot ends its old socket */
    if (slot >= l->nkids) {
        uint32_t n = l->nkids ? l->nkids : 64;
        while (n <= slot)
            n *= 2;
        struct conn **k = realloc(l->kids, n * sizeof(*k));
        if (!k)
            return NULL;
        memset(k + l->nkids, 0, (n - l->nkids) * sizeof(*k));
        l->kids = k;
        l->nkids = n;
    }
    struct conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->kind = K_SHIM;
    c->fd = -1;
    c->link = l;
    c->mux_id = id;
    l->kids[slot] = c;
    return c;
}

/* ALLOW verdicts of chunks passed or reported while one link's messages
 * are read (shim_messages), sent together with one sendmmsg: the relay
 * wakes once for them, not once per chunk. A chunk passes only when
 * nothing of its direction is kept (the core's order rule queues it behind
 * held data otherwise, and op_finish sends its verdict in turn), so per
 * direction verdicts leave in seq order; the shim applies them in seq order
 * anyway. Loop thread only. On a mux link each carries its socket's
 * prefix. */
#define ALLOW_BATCH 64
static struct allow_msg {
    struct shim_mux mx;
    struct shim_hdr h;
} g_allow[ALLOW_BATCH];
static struct conn *g_allow_sock[ALLOW_BATCH];
static unsigned g_nallow;

static void allow_flush(struct conn *c)
{
    unsigned done = 0, k = 0;
    for (unsigned i = 0; i < g_nallow; i++) /* a socket detached meanwhile gets none */
        if (!g_allow_sock[i]->dead) {
            g_allow_sock[k] = g_allow_sock[i];
            g_allow[k++] = g_allow[i];
        }
    g_nallow = k;
    if (!c->outq && !c->dead && g_nallow) {
        struct mmsghdr mm[ALLOW_BATCH];
        struct iovec iov[ALLOW_BATCH];
        memset(mm, 0, sizeof(mm));
        for (unsigned i = 0; i < g_nallow; i++) {
            iov[i] = c->mux_link ? (struct iovec){ &g_allow[i], sizeof(g_allow[i]) }
                                 : (struct iovec){ &g_allow[i].h, sizeof(g_allow[i].h) };
            mm[i].msg_hdr.msg_iov = &iov[i];
            mm[i].msg_hdr.msg_iovlen = 1;
        }
        int r = sendmmsg(c->fd, mm, g_nallow, MSG_NOSIGNAL | MSG_DONTWAIT);
        done = r > 0 ? (unsigned)r : 0u;
    }
    /* What did not go (link full, or an error send_verdict logs) is queued
     * or reported as a single verdict is. */
    for (unsigned i = done; i < g_nallow && !c->dead; i++)
        if (!g_allow_sock[i]->dead)
            send_verdict(g_allow_sock[i], g_allow[i].h.direction, g_allow[i].h.seq, NKE_ACT_ALLOW, NULL, 0);
    g_nallow = 0;
}

/* One message of socket c (a plain link, or one socket of a mux link l:
 * then c may be NULL before its ATTACH). Returns false when the link must
 * go. */
static bool shim_handle(struct conn *l, struct conn *c, const uint8_t *in, ssize_t n)
{
    if (n < (ssize_t)sizeof(struct shim_hdr))
        return false;
    struct shim_hdr h;
    memcpy(&h, in, sizeof(h));
    uint64_t ns = now_ns();
    if (h.type == SHIM_ATTACH && (size_t)n == sizeof(struct shim_attach) && !c->id.gen) {
        struct shim_attach a;
        memcpy(&a, in, sizeof(a));
        struct nke_sock_info info = { .pid = a.pid, .uid = a.uid, .family = a.family, .type = a.type,
                                      .protocol = a.protocol };
        memcpy(info.comm, a.comm, NKE_COMM_LEN);
        info.comm[NKE_COMM_LEN - 1] = 0;
        c->id = nke_core_attach(&g_core, &info, c, ns);
        /* An unconnected TCP socket (SHIM_ATTACH_UNCONNECTED) has no
         * CONNECT: its bind/listen/option calls follow as their own messages. */
        if (c->id.gen && a.protocol == NKE_PROTO_TCP && a.incoming != SHIM_ATTACH_UNCONNECTED)
            nke_core_addrs(&g_core, c->id, a.incoming ? NKE_NT_CONNECT_IN : NKE_NT_CONNECT_OUT, &a.local,
                           &a.remote, ns);
        else if (c->id.gen && a.protocol != NKE_PROTO_TCP && a.local.family)
            nke_core_addrs(&g_core, c->id, NKE_NT_BOUND, &a.local, NULL, ns);
    } else if (h.type == SHIM_ATTACH && (size_t)n == sizeof(struct shim_attach) && c->id.gen) {
        /* A second ATTACH: the socket attached unconnected (bind or
         * setsockopt before connect) connected; same socket, so only the
         * connect is reported, as the kext's sf_connect_out would. */
        struct shim_attach a;
        memcpy(&a, in, sizeof(a));
        if (a.protocol == NKE_PROTO_TCP && a.incoming != SHIM_ATTACH_UNCONNECTED)
            nke_core_addrs(&g_core, c->id, a.incoming ? NKE_NT_CONNECT_IN : NKE_NT_CONNECT_OUT, &a.local,
                           &a.remote, ns);
    } else if (h.type == SHIM_DATA && h.len == (size_t)n - sizeof(h) && h.len > 0 &&
               (h.direction == NKE_DIR_IN || h.direction == NKE_DIR_OUT)) {
        int res = NKE_DATA_PASS;
        struct held *hd = NULL;
        if (c->id.gen && h.len <= NKE_CHUNK_MAX_BYTES) {
            hd = malloc(sizeof(*hd) + h.len);
            if (hd) {
                hd->c = c;
                hd->dir = h.direction;
                hd->len = h.len;
                hd->seq = h.seq;
                hd->no_verdict = (h.flags & SHIM_F_NO_VERDICT) != 0;
                memcpy(hd->bytes, in + sizeof(h), h.len);
                uint64_t chunk = 0;
                uint32_t fl = 0;
                if (h.flags & SHIM_F_DATAGRAM)
                    fl |= NKE_DATA_F_DATAGRAM | (h.addr.family ? NKE_DATA_F_HAS_ADDR : 0u);
                res = nke_core_data(&g_core, c->id, (uint8_t)h.direction, h.len, fl,
                                    h.addr.family ? &h.addr : NULL, hd, ns / 1000000u,
                                    ns, &chunk);
            }
        }
        /* HELD or QUEUED (behind held data of this direction, whatever the
         * capture or pool said): the core's now, and its verdict comes from
         * op_finish in stream order (maybe already, for QUEUED). */
        if (res != NKE_DATA_HELD && res != NKE_DATA_QUEUED) {
            free(hd);
            if (!(h.flags & SHIM_F_NO_VERDICT)) {
                if (g_nallow == ALLOW_BATCH)
                    allow_flush(l);
                g_allow_sock[g_nallow] = c;
                g_allow[g_nallow++] = (struct allow_msg){
                    .mx = { .sock = c->mux_id },
                    .h = { .type = SHIM_VERDICT, .direction = h.direction, .action = NKE_ACT_ALLOW, .seq = h.seq }
                };
            }
        }
        /* A NO_VERDICT chunk the core held anyway (the rules changed to hold
         * while it was in flight) was passed by the shim already: its
         * verdict, when it comes, is not sent (hd->no_verdict). */
    } else if (h.type == SHIM_EXEC && (size_t)n >= sizeof(struct shim_exec) && !l->mux_link) {
        struct shim_exec e;
        memcpy(&e, in, sizeof(e));
        uint32_t plen = (uint32_t)n - (uint32_t)sizeof(e);
        /* Kept with the connector open: the connector misses processes
         * that exit before /proc/PID/exe is read. Paired reports are sent
         * once (exec_is_duplicate). */
        if (e.hdr.len == plen && !exec_is_duplicate(SRC_SHIM, e.pid, e.before_ns))
            kev_broadcast_exec(e.pid, e.ppid, e.uid, NKE_EXEC_F_FROM_SHIM, (const char *)in + sizeof(e), plen);
        return false;
    } else if ((h.type == SHIM_BIND || h.type == SHIM_LISTEN) && (size_t)n == sizeof(h) && c->id.gen) {
        nke_core_addrs(&g_core, c->id, h.type == SHIM_BIND ? NKE_NT_BOUND : NKE_NT_LISTEN,
                       h.addr.family ? &h.addr : NULL, NULL, ns);
    } else if (h.type == SHIM_OPTION && (size_t)n == sizeof(struct shim_option) && c->id.gen) {
        struct shim_option o;
        memcpy(&o, in, sizeof(o));
        nke_core_option(&g_core, c->id, (uint32_t)o.level, (uint32_t)o.name, o.is_set != 0, ns);
    } else if (h.type == SHIM_EVENT && (size_t)n == sizeof(h) && c->id.gen) {
        if (h.action >= NKE_EV_CONNECTING && h.action <= NKE_EV_BOUND)
            nke_core_event(&g_core, c->id, h.action, ns);
    } else if (h.type == SHIM_DETACH && (size_t)n == sizeof(h) && l->mux_link && c != l) {
        shim_gone(c);
    } else if (h.type == SHIM_MUX && (size_t)n == sizeof(h) && c == l && !c->id.gen && !l->mux_link) {
        l->mux_link = true;
    } else {
        LOG("malformed shim message type %u size %zd: link closed (the shim fails open)", h.type, n);
        return false;
    }
    return true;
}

/* A SHIM_REPORTS message of mux link l (nke_shim_link.h): each entry is
 * handled as the DATA message it would have been alone. A malformed one
 * ends the link, as any malformed message does. */
static bool shim_reports(struct conn *l, const uint8_t *p, size_t n, uint32_t len)
{
    const size_t hl = sizeof(struct shim_mux) + sizeof(struct shim_hdr);
    if (len != n)
        goto bad;
    for (unsigned k = 0; n > 0; k++) {
        struct shim_mux mx;
        struct shim_hdr h;
        if (n < hl || k == SHIM_REPORTS_ENTRIES)
            goto bad;
        memcpy(&mx, p, sizeof(mx));
        memcpy(&h, p + sizeof(mx), sizeof(h));
        if (h.type != SHIM_DATA || !(h.flags & SHIM_F_NO_VERDICT) || h.len > n - hl || mx.sock == 0)
            goto bad;
        /* a socket gone (or never taken): a report needs no answer */
        struct conn *s = mux_kid(l, mx.sock, false);
        if (s && !shim_handle(l, s, p + sizeof(mx), (ssize_t)(sizeof(h) + h.len))) {
            shim_gone(l);
            return false;
        }
        p += hl + h.len;
        n -= hl + h.len;
    }
    return !l->dead;
bad:
    LOG("malformed reports message on mux link fd %d: link closed (the shim fails open)", l->fd);
    shim_gone(l);
    return false;
}

/* One message from a shim link. more: a further read in the same wake-up
 * (non-blocking; false when nothing is left). */
static bool shim_message(struct conn *c, bool more)
{
    static uint8_t in[sizeof(struct shim_mux) + sizeof(struct shim_exec) + 2 * NKE_BUFFER_SIZE];
    _Static_assert(SHIM_REPORTS_MAX <= sizeof(in), "a SHIM_REPORTS message fits the receive buffer");
    ssize_t n = recv(c->fd, in, sizeof(in), more ? MSG_DONTWAIT : 0);
    if (n < 0 && more && (errno == EAGAIN || errno == EWOULDBLOCK))
        return false;
    if (n <= 0 || (size_t)n < sizeof(struct shim_hdr)) {
        shim_gone(c);
        return false;
    }
    struct conn *s = c;
    const uint8_t *m = in;
    if (c->mux_link) {
        struct shim_mux mx;
        struct shim_hdr h;
        if ((size_t)n < sizeof(mx) + sizeof(h)) {
            LOG("short message on mux link fd %d: link closed (the shim fails open)", c->fd);
            shim_gone(c);
            return false;
        }
        memcpy(&mx, in, sizeof(mx));
        memcpy(&h, in + sizeof(mx), sizeof(h));
        m = in + sizeof(mx);
        n -= (ssize_t)sizeof(mx);
        if (mx.sock == 0 && h.type == SHIM_REPORTS)
            return shim_reports(c, m + sizeof(h), (size_t)n - sizeof(h), h.len);
        s = mux_kid(c, mx.sock, h.type == SHIM_ATTACH);
        if (!s) {
            /* A socket nke-emud could not take (no memory) or already gone:
             * its DATA must still be answered, or the relay waits. */
            if (h.type == SHIM_DATA && !(h.flags & SHIM_F_NO_VERDICT)) {
                struct conn tmp = { .kind = K_SHIM, .fd = -1, .link = c, .mux_id = mx.sock };
                send_verdict(&tmp, h.direction, h.seq, NKE_ACT_ALLOW, NULL, 0);
            }
            return true;
        }
    }
    if (!shim_handle(c, s, m, n)) {
        shim_gone(c);
        return false;
    }
    return !c->dead;
}

/* A link's wake-up: reads what it has, up to one window in each direction
 * for a plain link, a batch for a mux link (more would starve the other
 * links: level-triggered, it comes back), and sends the ALLOW verdicts of
 * those chunks together. */
static void shim_messages(struct conn *c)
{
    unsigned max = c->mux_link ? ALLOW_BATCH : 2 * SHIM_WINDOW_CHUNKS;
    /* A SHIM_REPORTS message carries many chunks: stop once buffers run
     * short, so the loop's deferral (main) takes the client's releases
     * before more of them pass pool-full. */
    for (unsigned i = 0; i < max && shim_message(c, i > 0); i++)
        if (g_ctl && g_core.pool.nfree < NKE_BUFFER_COUNT / 4)
            break;
    if (!c->dead)
        allow_flush(c);
    else
        g_nallow = 0;
    /* Few buffers left: the reader is told of the records now (not at the
     * end of the turn) and its releases, once sent, are taken before the
     * next link's data; else the rest of this turn passes its chunks
     * pool-full. */
    if (g_ctl && !g_ctl->dead && g_core.pool.nfree < NKE_BUFFER_COUNT / 4) {
        queue_signal();
        struct pollfd p = { .fd = g_ctl->fd, .events = POLLIN };
        for (int k = 0; k < 8 && g_ctl && !g_ctl->dead && poll(&p, 1, 0) > 0; k++)
            ctl_request(g_ctl);
    }
}

static void accept_on(struct conn *l)
{
    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            return;
        uid_t peer_uid;
        if (!peer_ok(fd, &peer_uid)) {
            /* A user client or event socket of another uid is told why
             * (its client says "not permitted by the filter (uid N)");
             * a shim link just fails open. */
            struct conn *rc = l->kind != K_LISTEN_SHIM && peer_uid != (uid_t)-1 &&
                                      g_nrefused_open < MAX_REFUSED
                                  ? calloc(1, sizeof(*rc))
                                  : NULL;
            if (!rc) {
                close(fd);
                continue;
            }
            rc->fd = fd;
            rc->kind = l->kind == K_LISTEN_CTL ? K_REFUSED_CTL : K_REFUSED_KEV;
            rc->refused_uid = peer_uid;
            g_nrefused_open++;
            ep_add(rc);
            continue;
        }
        struct conn *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        if (l->kind == K_LISTEN_CTL) {
            /* Not the user client yet: it becomes that at a successful OPEN. */
            c->kind = K_CTL;
        } else if (l->kind == K_LISTEN_KEV) {
            c->kind = K_KEV;
            int k;
            for (k = 0; k < MAX_KEV && g_kev[k]; k++) {}
            if (k == MAX_KEV) {
                LOG("too many event sockets (%d)", MAX_KEV);
                close(fd);
                free(c);
                continue;
            }
            g_kev[k] = c;
        } else {
            c->kind = K_SHIM;
            /* Room for a window of ALLOW verdicts and some modified bytes
             * before send_verdict has to queue (FORCE needs root). */
            int sz = 1 << 20;
            if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz)) < 0)
                setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
        }
        ep_add(c);
    }
}

/* A refused peer's request (nke_emu_proto.h, Refusal): answered, never
 * acted on; the connection stays until the peer closes it. */
static void refused_request(struct conn *c)
{
    uint8_t in[NKE_EMU_MAX_REQ + 64];
    ssize_t n = recv(c->fd, in, sizeof(in), 0);
    if (n <= 0) {
        g_nrefused_open--;
        conn_close(c);
        return;
    }
    if (c->kind == K_REFUSED_CTL) {
        struct nke_emu_req q = { 0 };
        if ((size_t)n >= sizeof(q))
            memcpy(&q, in, sizeof(q));
        struct nke_emu_refusal why = { .peer_uid = (uint32_t)c->refused_uid, .filter_uid = (uint32_t)g_uid };
        struct nke_emu_reply r = { .magic = NKE_EMU_MAGIC_REPLY, .status = NKE_ERR_NOT_PERMITTED, .seq = q.seq,
                                   .len = sizeof(why) };
        uint8_t out[sizeof(r) + sizeof(why)];
        memcpy(out, &r, sizeof(r));
        memcpy(out + sizeof(r), &why, sizeof(why));
        send(c->fd, out, sizeof(out), MSG_NOSIGNAL | MSG_DONTWAIT);
    } else {
        struct nke_emu_kev_ctl r;
        memset(&r, 0, sizeof(r));
        if ((size_t)n >= sizeof(r))
            memcpy(&r, in, sizeof(r));
        r.magic = NKE_EMU_MAGIC_REPLY;
        r.status = NKE_EMU_KEV_EPERM;
        r.vendor_code = (uint32_t)c->refused_uid;
        r.msg_limit = 0;
        send(c->fd, &r, sizeof(r), MSG_NOSIGNAL | MSG_DONTWAIT);
    }
}

/* One nke-emud per directory: the lock (flock) is held for our whole life
 * on NKE_EMU_LOCK_FILE, which holds our pid. Another nke-emud serving the
 * directory makes this one exit, naming it; a dead one's lock is gone with
 * it, and its stale sockets are taken over (listen_at unlinks them). */
static int hold_dir_lock(const char *dir)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/%s", dir, NKE_EMU_LOCK_FILE);
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        LOG("cannot open %s: %s", path, strerror(errno));
        exit(2);
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        if (e != EWOULDBLOCK) {
            LOG("cannot lock %s: %s", path, strerror(e));
            exit(2);
        }
        /* The holder writes its pid right after taking the lock: wait for it briefly. */
        char buf[32] = "";
        for (int i = 0; i < 100; i++) {
            ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
            if (n > 0 && buf[n - 1] == '\n') {
                buf[n - 1] = '\0';
                break;
            }
            buf[0] = '\0';
            usleep(20000);
        }
        fprintf(stderr,
                "nke-emud: %s is already served by nke-emud pid %s (it holds %s): not starting a second "
                "one; stop that one first (kill %s), or give this one another directory (" NKE_EMU_DIR_ENV ")\n",
                dir, buf[0] ? buf : "(unknown)", path, buf[0] ? buf : "PID");
        exit(3);
    }
    char pid[32];
    int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n)
        LOG("%s: cannot write our pid: %s (a second nke-emud will not name us)", path, strerror(errno));
    return fd; /* kept open, lock held, until we exit */
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--kev-limit") && i + 1 < argc && strtoul(argv[i + 1], NULL, 10) <= KEV_LIMIT_MAX)
            g_kev_limit = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--spin-us") && i + 1 < argc && strtoul(argv[i + 1], NULL, 10) <= 10000)
            g_spin_us = (uint32_t)strtoul(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: nke-emud [--kev-limit N (<= %u)] [--spin-us 0..10000]\n", KEV_LIMIT_MAX);
            return 2;
        }
    }
    if (nke_kev_piece_size(g_kev_limit) == 0) {
        fprintf(stderr, "nke-emud: --kev-limit %u cannot carry any path byte\n", g_kev_limit);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    g_uid = getuid();
    char dir[PATH_MAX];
    if (!nke_rundir_resolve(dir, sizeof(dir))) {
        LOG("the runtime directory's path is longer than %zu bytes: set " NKE_EMU_DIR_ENV " to a shorter one",
            sizeof(dir) - 1);
        return 2;
    }
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        LOG("cannot create %s: %s", dir, strerror(errno));
        return 2;
    }
    /* Our own directory is made private; anyone else's is refused by the
     * same check every client makes (nke_rundir.h). */
    struct stat st;
    if (lstat(dir, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == g_uid && (st.st_mode & 077) &&
        chmod(dir, 0700) < 0) {
        LOG("chmod 0700 %s: %s", dir, strerror(errno));
        return 2;
    }
    char why[NKE_RUNDIR_WHY_MAX];
    if (!nke_rundir_check_dir(dir, g_uid, why, sizeof(why))) {
        LOG("%s", why[0] ? why : strerror(errno));
        return 2;
    }
    (void)hold_dir_lock(dir);
    snprintf(g_rundir, sizeof(g_rundir), "%s", dir);
    /* Ours alone (we hold the lock): a fresh, private log for this run. */
    {
        char lp[PATH_MAX + 32];
        snprintf(lp, sizeof(lp), "%s/%s", dir, NKE_EMU_LOG_FILE);
        g_logfd = open(lp, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
        struct stat lst;
        if (g_logfd >= 0 && (fstat(g_logfd, &lst) < 0 || !S_ISREG(lst.st_mode) || lst.st_uid != g_uid ||
                             fchmod(g_logfd, 0600) < 0)) {
            close(g_logfd);
            g_logfd = -1;
        }
        if (g_logfd < 0)
            LOG("no log file %s (messages go to stderr only): %s", lp, strerror(errno ? errno : EPERM));
    }

    g_qfd = memfd_create("nke-queue", MFD_CLOEXEC);
    g_buffd = memfd_create("nke-buffers", MFD_CLOEXEC);
    g_evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    size_t bsz = (size_t)NKE_BUFFER_COUNT * NKE_BUFFER_SIZE;
    if (g_qfd < 0 || g_buffd < 0 || g_evfd < 0 || ftruncate(g_qfd, NKE_QUEUE_MAP_SIZE) < 0 ||
        ftruncate(g_buffd, (off_t)bsz) < 0) {
        LOG("shared memory: %s", strerror(errno));
        return 2;
    }
    g_queue = mmap(NULL, NKE_QUEUE_MAP_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, g_qfd, 0);
    uint8_t *bufs = mmap(NULL, bsz, PROT_READ | PROT_WRITE, MAP_SHARED, g_buffd, 0);
    g_socks = calloc(NSOCKS, sizeof(*g_socks));
    if (g_queue == MAP_FAILED || bufs == MAP_FAILED || !g_socks) {
        LOG("mmap: %s", strerror(errno));
        return 2;
    }
    nke_dq_init(g_queue, NKE_QUEUE_DATA_SIZE);
    nke_core_init(&g_core, &g_ops, NULL, bufs, g_socks, NSOCKS, KEV_VENDOR_CODE, g_kev_limit);

    g_ep = epoll_create1(EPOLL_CLOEXEC);
    static struct conn lctl = { .kind = K_LISTEN_CTL }, lkev = { .kind = K_LISTEN_KEV },
                       lshim = { .kind = K_LISTEN_SHIM };
    lctl.fd = listen_at(dir, NKE_EMU_CTL_SOCK);
    lkev.fd = listen_at(dir, NKE_EMU_KEV_SOCK);
    lshim.fd = listen_at(dir, NKE_EMU_SHIM_SOCK);
    ep_add(&lctl);
    ep_add(&lkev);
    ep_add(&lshim);
    shim_state_create(dir);
    static struct conn lproc = { .kind = K_PROC };
    g_debug = getenv("NKE_EMUD_DEBUG") != NULL;
    if (getenv("NKE_EMU_NO_PROC_CONNECTOR") == NULL && (g_proc_fd = proc_open()) >= 0) {
        lproc.fd = g_proc_fd;
        ep_add(&lproc);
        LOG("exec events from the process-events connector");
    } else {
        LOG("exec events from the shim's execve only (connector: %s)", strerror(errno));
    }
    printf("nke-emud ready %s\n", dir);
    fflush(stdout);

    uint64_t last_state = 0, last_event = 0;
    uint64_t defer_since = 0; /* links wait for buffers since (0: not waiting) */
    for (;;) {
        uint64_t ns = now_ns();
        uint32_t wait = nke_core_expire(&g_core, ns / 1000000u, ns);
        if (g_core.client_open && ns - last_state >= 1000000000ull) {
            nke_core_emit_state(&g_core, ns);
            last_state = ns;
        }
        int timeout = wait > 1000 ? 1000 : (int)wait;
        queue_signal(); /* what expire / the state record enqueued, before sleeping */
        struct epoll_event evs[64];
        /* Spin only while data can be held (a verdict round trip may be in
         * progress) and something happened within the last spin_us. Not
         * while chunks are at most reported: no relay waits for an answer
         * then, and on 2 CPUs the spin took the time the program, its
         * relay and the client's reader needed (report mode). Without
         * shim.state the relays ask for every chunk: spin as for a hold. */
        int n = 0;
        bool spin = g_spin_us && g_core.client_open && g_core.capture.mode != NKE_CAPTURE_NOTHING &&
                    (g_may_hold || !g_shim_state);
        while (spin && (n = epoll_wait(g_ep, evs, 64, 0)) == 0 && now_ns() - last_event < g_spin_us * 1000ull)
            sched_yield();
        if (n == 0)
            n = epoll_wait(g_ep, evs, 64, timeout);
        if (n > 0)
            last_event = now_ns();
        if (g_core.pool.nfree >= NKE_BUFFER_COUNT / 4)
            defer_since = 0; /* the pool recovered: a later shortage may wait again */
        /* The user client first: its requests return buffers to the pool
         * (releases) and decide held chunks, so answering them before the
         * next shim messages keeps the pool from running dry (chunks passed
         * pool-full) and verdicts from waiting behind other sockets' data. */
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->kind == K_CTL && c == g_ctl && !c->dead) {
                ctl_request(c);
                evs[i].data.ptr = NULL;
            }
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c || c->dead)
                continue;
            /* Buffers short (fewer than two links' windows of chunks, so one
             * more link cannot run the pool dry), most of them reported
             * chunks whose release the client is sending: the rest of this
             * turn's links wait for
             * the next epoll_wait (level-triggered, they are reported again),
             * whose turn takes the client's releases first. For at most
             * DEFER_MAX_NS per shortage (DEFER_REPORT_MAX_NS while nothing can
             * be held), and not when held chunks fill the
             * pool (a person may take minutes): then chunks pass pool-full,
             * the traffic never stops for the filter. */
            if (c->kind == K_SHIM && g_ctl && g_core.pool.nfree < NKE_BUFFER_COUNT / 4 &&
                g_core.nheld < NKE_BUFFER_COUNT / 2) {
                uint64_t t = now_ns();
                if (!defer_since)
                    defer_since = t;
                uint64_t max = g_shim_state && !__atomic_load_n(&g_shim_state->may_hold, __ATOMIC_RELAXED)
                                   ? DEFER_REPORT_MAX_NS
                                   : DEFER_MAX_NS;
                if (t - defer_since < max) {
                    /* Sleep until the client sends something (or the bound):
                     * spinning on epoll_wait here took the CPU the client
                     * needed to send its releases. */
                    queue_signal();
                    uint64_t left = max - (t - defer_since);
                    struct timespec ts = { (time_t)(left / 1000000000ull), (long)(left % 1000000000ull) };
                    struct pollfd p = { .fd = g_ctl->fd, .events = POLLIN };
                    ppoll(&p, 1, &ts, NULL);
                    break;
                }
            }
            switch (c->kind) {
            case K_LISTEN_CTL: case K_LISTEN_KEV: case K_LISTEN_SHIM: accept_on(c); break;
            case K_CTL: ctl_request(c); break;
            case K_KEV: kev_request(c); break;
            case K_REFUSED_CTL: case K_REFUSED_KEV: refused_request(c); break;
            case K_SHIM:
                if (evs[i].events & EPOLLOUT)
                    outq_flush(c);
                if (!c->dead && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                    shim_messages(c);
                break;
            case K_PROC: proc_message(c->fd); break;
            }
        }
        queue_signal();
        for (int i = 0; i < g_ngrave; i++)
            free(g_graveyard[i]);
        g_ngrave = 0;
    }
}

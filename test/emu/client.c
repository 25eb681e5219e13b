/*
 * Test user client for nke-emud: opens ctl.sock, maps the queue and buffer
 * memfds, dequeues notifications with kext/core's nke_dq_dequeue and answers
 * held data with a scripted policy per direction. With --kev it instead
 * reads kev.sock and prints reassembled exec events.
 *
 *   test-client --dir D [--out P] [--in P] [--timeout-ms N] [--seed N] [--copy-release]
 *   test-client --dir D --kev
 * Policies (per-byte transforms, so the expected bytes do not depend on how
 * the stream was cut into chunks):
 *   pass     ALLOW
 *   drop     DROP
 *   hold     never answer (the deadline or our death releases it); with
 *            --copy-release the chunk's bytes are copied out and its buffers
 *            released at once, the verdict staying pending (the ABI allows
 *            it), so held chunks are not limited by the 64-buffer pool
 *   upper    ALLOW_MODIFIED, a-z -> A-Z (same length)
 *   double   ALLOW_MODIFIED, every byte twice (longer)
 *   shrink   ALLOW_MODIFIED, every 'x' removed (shorter)
 *   nul      ALLOW_MODIFIED, every '!' -> "\0BIN\377" (binary, longer)
 *   random   per chunk: ALLOW now, ALLOW after 0-30 ms, or ALLOW_MODIFIED
 *            with the same bytes (all byte-exact)
 *   reverse:N  per socket and direction, hold chunks until N are held at
 *            once, then ALLOW them last first, one response each (prints
 *            "reverse N"); and so on for the next N
 *   edit2    per socket and direction: hold chunk 1; while it is held,
 *            answer chunk 2 with every byte doubled (ALLOW_MODIFIED, longer),
 *            then ALLOW chunk 1 (prints "edit2 while-held"); later chunks pass
 *   bytag    by the chunk's first byte: 'D' DROP, 'L' double, 'S' shrink,
 *            'N' nul, anything else ALLOW (one run mixes them, datagram by
 *            datagram)
 * --hold-first-ms N: per socket and direction, the first held chunk is kept
 * N ms (prints "held-first") and then answered by its direction's policy;
 * the later ones are answered at once.
 * --then-capture nothing|report: once the first chunk is held that way, set
 * capture NOTHING, or RULES with default REPORT (prints "capture-changed"),
 * so later data would pass if the filter did not keep it in order.
 * Verdicts decided together (one dequeue pass) go in one response.
 * Prints one line per event on stdout: "ready", "data <dir> <size> <held>",
 * "bound|listen <slot>.<gen> <ip|-> <port>", "option <slot>.<gen> <level> <name> <is_set>",
 * "released <reason>", "held-total <n>", "state pending <n> passed-full <n> lost <n> queued <n> kept <n> stale <n> rejected <n>", "copy <size> <hex>" (--copy-release), "exec <pid> <ppid> <uid> <complete> <len> <path>",
 * "held-first", "answered-first", "batch <n>" (one response answered n >= 2 chunks).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <nke/nke_abi.h>
#include "nke_core.h"
#include "nke_emu_proto.h"

static int g_ctl = -1;
static uint32_t g_seq;
static const char *g_dir;

static void die(const char *what)
{
    fprintf(stderr, "test-client: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int connect_to(const char *name)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", g_dir, name);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die(sa.sun_path);
    return fd;
}

/* One request/reply on ctl.sock; returns the status; fds[] receives passed descriptors. */
static uint32_t call(uint32_t sel, const void *in, uint32_t len, void *out, uint32_t outcap, int *fds)
{
    static uint8_t msg[NKE_EMU_MAX_REQ];
    struct nke_emu_req q = { NKE_EMU_MAGIC_REQ, sel, ++g_seq, len };
    memcpy(msg, &q, sizeof(q));
    memcpy(msg + sizeof(q), in, len);
    if (send(g_ctl, msg, sizeof(q) + len, MSG_NOSIGNAL) < 0)
        die("send request");
    uint8_t rep[sizeof(struct nke_emu_reply) + 512];
    union { char b[CMSG_SPACE(sizeof(int) * 3)]; struct cmsghdr a; } cm;
    struct iovec iov = { rep, sizeof(rep) };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof(cm.b) };
    ssize_t n = recvmsg(g_ctl, &mh, MSG_CMSG_CLOEXEC);
    if (n < (ssize_t)sizeof(struct nke_emu_reply)) {
        fprintf(stderr, "test-client: short reply (%zd) to selector %u\n", n, sel);
        exit(1);
    }
    struct nke_emu_reply r;
    memcpy(&r, rep, sizeof(r));
    if (out && r.len <= outcap)
        memcpy(out, rep + sizeof(r), r.len);
    struct cmsghdr *h = CMSG_FIRSTHDR(&mh);
    if (fds && h && h->cmsg_type == SCM_RIGHTS)
        memcpy(fds, CMSG_DATA(h), sizeof(int) * 3);
    return r.status;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

enum pol { P_PASS, P_DROP, P_HOLD, P_UPPER, P_DOUBLE, P_SHRINK, P_NUL, P_RANDOM, P_REVERSE, P_EDIT2, P_BYTAG };

/* reverse / edit2: what is held per socket and direction (a small table;
 * the tests use a handful of sockets). */
struct seqstate {
    struct nke_sock_id sock;
    uint8_t dir;
    unsigned seen;                       /* chunks of this socket/direction so far */
    unsigned nheld;
    struct nke_nt_data held[8];
};
static struct seqstate g_ss[256];

static struct seqstate *seqstate_of(struct nke_sock_id sock, uint8_t dir)
{
    for (unsigned i = 0; i < 256; i++) {
        struct seqstate *e = &g_ss[i];
        if (e->sock.gen == sock.gen && e->sock.slot == sock.slot && e->dir == dir && e->sock.gen)
            return e;
        if (!e->sock.gen) {
            e->sock = sock;
            e->dir = dir;
            return e;
        }
    }
    return NULL;
}

static enum pol parse_pol(const char *s, unsigned *n)
{
    const char *names[] = { "pass", "drop", "hold", "upper", "double", "shrink", "nul", "random" };
    for (int i = 0; i < 8; i++)
        if (!strcmp(s, names[i]))
            return (enum pol)i;
    if (!strcmp(s, "edit2"))
        return P_EDIT2;
    if (!strcmp(s, "bytag"))
        return P_BYTAG;
    if (!strncmp(s, "reverse:", 8) && atoi(s + 8) >= 1 && atoi(s + 8) <= 8) {
        *n = (unsigned)atoi(s + 8);
        return P_REVERSE;
    }
    fprintf(stderr, "test-client: unknown policy '%s'\n", s);
    exit(2);
}

static size_t transform(enum pol p, const uint8_t *in, size_t n, uint8_t *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = in[i];
        switch (p) {
        case P_UPPER: out[o++] = (b >= 'a' && b <= 'z') ? (uint8_t)(b - 32) : b; break;
        case P_DOUBLE: out[o++] = b; out[o++] = b; break;
        case P_SHRINK: if (b != 'x') out[o++] = b; break;
        case P_NUL:
            if (b == '!') { memcpy(out + o, "\0BIN\377", 5); o += 5; } else out[o++] = b;
            break;
        default: out[o++] = b;
        }
    }
    return o;
}

/* Verdicts collected during one dequeue pass, sent as one response. */
#define BATCH_MAX 32
static struct nke_verdict g_bv[BATCH_MAX];
static struct nke_release g_br[BATCH_MAX * NKE_CHUNK_MAX_BUFFERS];
static unsigned g_nbv, g_nbr;

static void batch_flush(void)
{
    if (!g_nbv && !g_nbr)
        return;
    static uint8_t msg[sizeof(struct nke_response_hdr) + sizeof(g_bv) + sizeof(g_br)];
    struct nke_response_hdr h = { NKE_ABI_VERSION, 0, (uint16_t)g_nbv, (uint16_t)g_nbr, 0 };
    size_t o = sizeof(h);
    memcpy(msg + o, g_bv, g_nbv * sizeof(g_bv[0]));
    o += g_nbv * sizeof(g_bv[0]);
    memcpy(msg + o, g_br, g_nbr * sizeof(g_br[0]));
    o += g_nbr * sizeof(g_br[0]);
    h.size = (uint32_t)o;
    memcpy(msg, &h, sizeof(h));
    uint32_t st = call(NKE_SEL_RESPOND, msg, (uint32_t)o, NULL, 0, NULL);
    if (st != NKE_OK)
        fprintf(stderr, "test-client: respond (%u verdicts, %u releases): error %u\n", g_nbv, g_nbr, st);
    if (g_nbv >= 2)
        printf("batch %u\n", g_nbv); /* several chunks were waiting at once */
    g_nbv = g_nbr = 0;
}

/* The filter released this chunk (its deadline passed) after we batched
 * our answer in this pass: the answer is pointless, and its release names a
 * buffer that a newer chunk in the same batch may already hold. The filter
 * skips such stale entries; we do not send them. */
static void batch_forget(uint64_t chunk)
{
    unsigned i, k;
    for (i = k = 0; i < g_nbv; i++)
        if (g_bv[i].chunk_id != chunk)
            g_bv[k++] = g_bv[i];
    g_nbv = k;
    for (i = k = 0; i < g_nbr; i++)
        if (g_br[i].chunk_id != chunk)
            g_br[k++] = g_br[i];
    g_nbr = k;
}

/* Queues a verdict (action 0: none, the chunk was only reported) and the
 * chunk's releases for the next batch_flush (sent at the end of the pass). */
static void batch_add(uint64_t chunk, struct nke_sock_id sock, uint8_t action, uint32_t modlen,
                      const struct nke_nt_data *d)
{
    if (g_nbv == BATCH_MAX || g_nbr + d->nbuffers > BATCH_MAX * NKE_CHUNK_MAX_BUFFERS)
        batch_flush();
    if (action)
        g_bv[g_nbv++] = (struct nke_verdict){ .chunk_id = chunk, .sock = sock, .action = action, .modified_len = modlen };
    for (unsigned i = 0; i < d->nbuffers; i++)
        g_br[g_nbr++] = (struct nke_release){ .chunk_id = chunk, .buffer = d->buffers[i] };
}

static void respond(uint64_t chunk, struct nke_sock_id sock, uint8_t action, uint32_t modlen,
                    const struct nke_nt_data *d)
{
    uint8_t msg[sizeof(struct nke_response_hdr) + sizeof(struct nke_verdict) +
                NKE_CHUNK_MAX_BUFFERS * sizeof(struct nke_release)];
    struct nke_response_hdr h = { NKE_ABI_VERSION, 0, 1, (uint16_t)d->nbuffers, 0 };
    struct nke_verdict v = { .chunk_id = chunk, .sock = sock, .action = action, .modified_len = modlen };
    size_t o = sizeof(h);
    memcpy(msg + o, &v, sizeof(v));
    o += sizeof(v);
    for (unsigned i = 0; i < d->nbuffers; i++) {
        struct nke_release r = { .chunk_id = chunk, .buffer = d->buffers[i] };
        memcpy(msg + o, &r, sizeof(r));
        o += sizeof(r);
    }
    h.size = (uint32_t)o;
    memcpy(msg, &h, sizeof(h));
    uint32_t st = call(NKE_SEL_RESPOND, msg, (uint32_t)o, NULL, 0, NULL);
    if (st != NKE_OK && st != NKE_ERR_NOT_HELD)
        fprintf(stderr, "test-client: respond chunk %llu: error %u\n", (unsigned long long)chunk, st);
}

static void put_modified(const struct nke_nt_data *d, const uint8_t *b, uint32_t len)
{
    static uint8_t msg[sizeof(struct nke_put_data_hdr) + NKE_PUT_DATA_MAX_PIECE];
    uint32_t off = 0;
    do {
        uint32_t n = len - off > NKE_PUT_DATA_MAX_PIECE ? NKE_PUT_DATA_MAX_PIECE : len - off;
        struct nke_put_data_hdr h = { d->chunk_id, d->hdr.sock, len, off, n, 0 };
        memcpy(msg, &h, sizeof(h));
        memcpy(msg + sizeof(h), b + off, n);
        uint32_t st = call(NKE_SEL_PUT_DATA, msg, (uint32_t)(sizeof(h) + n), NULL, 0, NULL);
        if (st != NKE_OK) {
            fprintf(stderr, "test-client: put_data chunk %llu: error %u\n", (unsigned long long)d->chunk_id, st);
            return;
        }
        off += n;
    } while (off < len);
    respond(d->chunk_id, d->hdr.sock, NKE_ACT_ALLOW_MODIFIED, len, d);
}

/* Releases a chunk's buffers without a verdict: the filter keeps the chunk
 * held (its data is the platform's, not the buffers'). */
static void release_only(const struct nke_nt_data *d)
{
    uint8_t msg[sizeof(struct nke_response_hdr) + NKE_CHUNK_MAX_BUFFERS * sizeof(struct nke_release)];
    struct nke_response_hdr h = { NKE_ABI_VERSION, 0, 0, (uint16_t)d->nbuffers, 0 };
    size_t o = sizeof(h);
    for (unsigned i = 0; i < d->nbuffers; i++) {
        struct nke_release r = { .chunk_id = d->chunk_id, .buffer = d->buffers[i] };
        memcpy(msg + o, &r, sizeof(r));
        o += sizeof(r);
    }
    h.size = (uint32_t)o;
    memcpy(msg, &h, sizeof(h));
    uint32_t st = call(NKE_SEL_RESPOND, msg, (uint32_t)o, NULL, 0, NULL);
    if (st != NKE_OK)
        fprintf(stderr, "test-client: release chunk %llu: error %u\n", (unsigned long long)d->chunk_id, st);
}

/* Answers a held chunk now with a policy that depends on its bytes only
 * (pass, drop, the transforms, bytag); its buffers are still ours. */
static void answer(const struct nke_nt_data *d, enum pol p, const uint8_t *bufs)
{
    static uint8_t data[NKE_CHUNK_MAX_BYTES], out[NKE_CHUNK_MAX_BYTES * 5];
    uint32_t off = 0;
    for (unsigned i = 0; i < d->nbuffers; i++) {
        uint32_t n = d->size - off > NKE_BUFFER_SIZE ? NKE_BUFFER_SIZE : d->size - off;
        memcpy(data + off, bufs + (size_t)d->buffers[i] * NKE_BUFFER_SIZE, n);
        off += n;
    }
    if (p == P_BYTAG) {
        uint8_t tag = d->size ? data[0] : 0;
        p = tag == 'D' ? P_DROP : tag == 'L' ? P_DOUBLE : tag == 'S' ? P_SHRINK : tag == 'N' ? P_NUL : P_PASS;
    }
    if (p == P_PASS || p == P_DROP)
        respond(d->chunk_id, d->hdr.sock, p == P_DROP ? NKE_ACT_DROP : NKE_ACT_ALLOW, 0, d);
    else
        put_modified(d, out, (uint32_t)transform(p, data, d->size, out));
}

/* A chunk answered later: ALLOW (random's delay) or, when first, by pol
 * (--hold-first-ms). */
struct later { uint64_t at; struct nke_nt_data d; enum pol pol; int first; };

static void print_exec(void *arg, const struct nke_exec_record *r)
{
    (void)arg;
    printf("exec %d %d %u %d %u %.*s\n", r->pid, r->ppid, r->uid, r->complete ? 1 : 0, r->path_len,
           (int)r->path_len, r->path);
    fflush(stdout);
}

static int run_kev(void)
{
    int fd = connect_to(NKE_EMU_KEV_SOCK);
    struct nke_emu_kev_ctl q = { .magic = NKE_EMU_MAGIC_REQ, .op = NKE_EMU_KEV_GET_VENDOR };
    snprintf(q.vendor_string, sizeof(q.vendor_string), "%s", NKE_KEV_VENDOR);
    struct nke_emu_kev_ctl r;
    if (send(fd, &q, sizeof(q), 0) < 0 || recv(fd, &r, sizeof(r), 0) != sizeof(r) || r.status != NKE_EMU_KEV_OK) {
        fprintf(stderr, "test-client: vendor lookup failed (status %u)\n", r.status);
        return 1;
    }
    q.op = NKE_EMU_KEV_SET_FILTER;
    q.vendor_code = r.vendor_code;
    q.kev_class = NKE_KEV_CLASS;
    q.kev_subclass = NKE_KEV_SUBCLASS_EXEC;
    uint32_t limit;
    if (send(fd, &q, sizeof(q), 0) < 0 || recv(fd, &r, sizeof(r), 0) != sizeof(r) || r.status != NKE_EMU_KEV_OK)
        return 1;
    limit = r.msg_limit;
    static struct nke_kev_reasm re;
    nke_kev_reasm_init(&re, q.vendor_code, 2000);
    printf("ready kev limit %u\n", limit);
    fflush(stdout);
    uint8_t msg[4096];
    for (;;) {
        ssize_t n = recv(fd, msg, sizeof(msg), 0);
        if (n <= 0)
            return 0;
        if ((uint32_t)n > limit) {
            printf("oversize %zd\n", n);
            fflush(stdout);
        }
        nke_kev_reasm_feed(&re, msg, (uint32_t)n, now_ms(), print_exec, NULL);
    }
}

int main(int argc, char **argv)
{
    enum pol pout = P_PASS, pin = P_PASS;
    unsigned nout = 0, nin = 0;
    uint32_t timeout_ms = 0;
    int kev = 0, copy_release = 0;
    uint32_t hold_first_ms = 0;
    int then_capture = -1; /* enum nke_capture_mode after the first hold, or -1 */
    unsigned seed = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dir") && i + 1 < argc) g_dir = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) pout = parse_pol(argv[++i], &nout);
        else if (!strcmp(argv[i], "--in") && i + 1 < argc) pin = parse_pol(argv[++i], &nin);
        else if (!strcmp(argv[i], "--timeout-ms") && i + 1 < argc) timeout_ms = (uint32_t)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--kev")) kev = 1;
        else if (!strcmp(argv[i], "--copy-release")) copy_release = 1;
        else if (!strcmp(argv[i], "--hold-first-ms") && i + 1 < argc) hold_first_ms = (uint32_t)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--then-capture") && i + 1 < argc && !strcmp(argv[i + 1], "nothing"))
            then_capture = NKE_CAPTURE_NOTHING, i++;
        else if (!strcmp(argv[i], "--then-capture") && i + 1 < argc && !strcmp(argv[i + 1], "report"))
            then_capture = NKE_CAPTURE_RULES, i++;
        else { fprintf(stderr, "test-client: bad argument '%s'\n", argv[i]); return 2; }
    }
    if (!g_dir) { fprintf(stderr, "test-client: --dir is required\n"); return 2; }
    srand(seed);
    if (kev)
        return run_kev();
    g_ctl = connect_to(NKE_EMU_CTL_SOCK);
    struct nke_open_request oq = { NKE_ABI_VERSION, 0, getpid(), 0 };
    struct nke_open_reply orp;
    int fds[3] = { -1, -1, -1 };
    uint32_t st = call(NKE_SEL_OPEN, &oq, sizeof(oq), &orp, sizeof(orp), fds);
    if (st != NKE_OK) {
        printf("open-failed %u\n", st);
        return 3;
    }
    struct nke_dq_memory *q = mmap(NULL, NKE_QUEUE_MAP_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
    const uint8_t *bufs = mmap(NULL, (size_t)NKE_BUFFER_COUNT * NKE_BUFFER_SIZE, PROT_READ, MAP_SHARED, fds[1], 0);
    if (q == MAP_FAILED || bufs == MAP_FAILED)
        die("mmap");
    static struct nke_capture_config cfg;
    cfg.abi_version = NKE_ABI_VERSION;
    cfg.mode = NKE_CAPTURE_ALL;
    cfg.hold_timeout_ms = timeout_ms;
    if ((st = call(NKE_SEL_SET_CAPTURE, &cfg, sizeof(cfg), NULL, 0, NULL)) != NKE_OK) {
        printf("capture-failed %u\n", st);
        return 3;
    }
    printf("ready\n");
    fflush(stdout);
    static uint8_t data[NKE_CHUNK_MAX_BYTES], out[NKE_CHUNK_MAX_BYTES * 5];
    static struct later later[4096];
    int nlater = 0;
    uint64_t held_total = 0;
    for (;;) {
        int wait = -1;
        uint64_t t = now_ms();
        for (int i = 0; i < nlater; i++) {
            if (later[i].at <= t) {
                if (later[i].first) {
                    answer(&later[i].d, later[i].pol, bufs);
                    printf("answered-first\n");
                    fflush(stdout);
                } else {
                    respond(later[i].d.chunk_id, later[i].d.hdr.sock, NKE_ACT_ALLOW, 0, &later[i].d);
                }
                later[i--] = later[--nlater];
                continue;
            }
            int w = (int)(later[i].at - t);
            if (wait < 0 || w < wait) wait = w;
        }
        struct pollfd p[2] = { { fds[2], POLLIN, 0 }, { g_ctl, POLLIN, 0 } };
        if (poll(p, 2, wait) < 0 && errno != EINTR)
            die("poll");
        if (p[1].revents & (POLLHUP | POLLIN)) {
            printf("daemon-gone\n");
            return 0;
        }
        uint64_t ev;
        if (p[0].revents && read(fds[2], &ev, sizeof(ev)) < 0 && errno != EAGAIN)
            die("eventfd");
        uint8_t rec[NKE_NT_MAX_SIZE + 64];
        uint32_t len;
        int r;
        while ((r = nke_dq_dequeue(q, NKE_QUEUE_DATA_SIZE, rec, sizeof(rec), &len)) == NKE_DQ_OK) {
            struct nke_nt_hdr h;
            memcpy(&h, rec, sizeof(h));
            if (h.type == NKE_NT_CHUNK_RELEASED) {
                struct nke_nt_chunk_released c;
                memcpy(&c, rec, sizeof(c));
                batch_forget(c.chunk_id);
                printf("released %u\n", c.reason);
                fflush(stdout);
                continue;
            }
            if (h.type == NKE_NT_BOUND || h.type == NKE_NT_LISTEN) {
                struct nke_nt_addrs a;
                char ip[64];
                memcpy(&a, rec, sizeof(a));
                inet_ntop(a.local.family == NKE_AF_INET6 ? AF_INET6 : AF_INET, a.local.addr, ip, sizeof(ip));
                printf("%s %u.%u %s %u\n", h.type == NKE_NT_BOUND ? "bound" : "listen", h.sock.slot,
                       h.sock.gen, a.local.family ? ip : "-", a.local.port);
                fflush(stdout);
                continue;
            }
            if (h.type == NKE_NT_OPTION) {
                struct nke_nt_option o;
                memcpy(&o, rec, sizeof(o));
                printf("option %u.%u %u %u %u\n", h.sock.slot, h.sock.gen, o.level, o.name, o.is_set);
                fflush(stdout);
                continue;
            }
            /* The socket's identity last on the line (tests match "x.y " in other lines). */
            if (h.type == NKE_NT_ATTACH) {
                struct nke_nt_attach a;
                memcpy(&a, rec, sizeof(a));
                printf("sock-attach %d %u.%u\n", a.pid, h.sock.slot, h.sock.gen);
                fflush(stdout);
                continue;
            }
            if (h.type == NKE_NT_CONNECT_OUT || h.type == NKE_NT_CONNECT_IN) {
                struct nke_nt_addrs a;
                memcpy(&a, rec, sizeof(a));
                printf("sock-connect-%s %u %u %u.%u\n", h.type == NKE_NT_CONNECT_OUT ? "out" : "in",
                       a.local.port, a.remote.port, h.sock.slot, h.sock.gen);
                fflush(stdout);
                continue;
            }
            if (h.type == NKE_NT_STATE) {
                struct nke_nt_state st;
                memcpy(&st, rec, sizeof(st));
                printf("state pending %u passed-full %llu lost %llu queued %llu kept %llu stale %llu rejected %llu\n",
                       st.state.chunks_pending, (unsigned long long)st.state.chunks_passed_pool_full,
                       (unsigned long long)st.state.notifications_lost,
                       (unsigned long long)st.state.chunks_queued,
                       (unsigned long long)st.state.bytes_kept,
                       (unsigned long long)st.state.stale_entries,
                       (unsigned long long)st.state.responses_rejected);
                fflush(stdout);
                continue;
            }
            if (h.type != NKE_NT_DATA)
                continue;
            struct nke_nt_data d;
            memcpy(&d, rec, sizeof(d));
            int held = (h.flags & NKE_DATA_F_HELD) != 0;
            printf("data %s %u %d\n", d.direction == NKE_DIR_OUT ? "out" : "in", d.size, held);
            if (!held) {
                /* only reported: a verdict would be refused (NOT_HELD) with the whole batch */
                batch_add(d.chunk_id, h.sock, 0, 0, &d);
                continue;
            }
            held_total++;
            enum pol p0 = d.direction == NKE_DIR_OUT ? pout : pin;
            if (hold_first_ms && nlater < 4096) {
                struct seqstate *e = seqstate_of(h.sock, d.direction);
                if (e && e->seen++ == 0) {
                    later[nlater].at = now_ms() + hold_first_ms;
                    later[nlater].pol = p0;
                    later[nlater].first = 1;
                    later[nlater++].d = d;
                    printf("held-first\n");
                    if (then_capture >= 0) {
                        cfg.mode = (uint32_t)then_capture;
                        cfg.default_action = NKE_RULE_REPORT;
                        if ((st = call(NKE_SEL_SET_CAPTURE, &cfg, sizeof(cfg), NULL, 0, NULL)) != NKE_OK)
                            printf("capture-failed %u\n", st);
                        else
                            printf("capture-changed\n");
                        then_capture = -1;
                    }
                    continue;
                }
            }
            if ((p0 != P_PASS && p0 != P_DROP && p0 != P_HOLD && p0 != P_REVERSE) ||
                (p0 == P_HOLD && copy_release)) {
                /* only the policies that look at the bytes copy them */
                uint32_t off = 0;
                for (unsigned i = 0; i < d.nbuffers; i++) {
                    uint32_t n = d.size - off > NKE_BUFFER_SIZE ? NKE_BUFFER_SIZE : d.size - off;
                    memcpy(data + off, bufs + (size_t)d.buffers[i] * NKE_BUFFER_SIZE, n);
                    off += n;
                }
            }
            switch (p0) {
            case P_PASS: batch_add(d.chunk_id, h.sock, NKE_ACT_ALLOW, 0, &d); break;
            case P_DROP: batch_add(d.chunk_id, h.sock, NKE_ACT_DROP, 0, &d); break;
            case P_REVERSE: {
                unsigned want = d.direction == NKE_DIR_OUT ? nout : nin;
                struct seqstate *e = seqstate_of(h.sock, d.direction);
                if (!e) {
                    batch_add(d.chunk_id, h.sock, NKE_ACT_ALLOW, 0, &d);
                    break;
                }
                e->held[e->nheld++] = d;
                if (e->nheld < want)
                    break;
                batch_flush(); /* keep the earlier verdicts of this pass first */
                for (unsigned i = e->nheld; i-- > 0;)
                    respond(e->held[i].chunk_id, h.sock, NKE_ACT_ALLOW, 0, &e->held[i]);
                printf("reverse %u\n", e->nheld);
                e->nheld = 0;
                break;
            }
            case P_EDIT2: {
                struct seqstate *e = seqstate_of(h.sock, d.direction);
                unsigned k = e ? ++e->seen : 0;
                if (k == 1) {
                    e->held[e->nheld++] = d;
                } else if (k == 2 && e->nheld == 1) {
                    batch_flush();
                    put_modified(&d, out, (uint32_t)transform(P_DOUBLE, data, d.size, out));
                    respond(e->held[0].chunk_id, h.sock, NKE_ACT_ALLOW, 0, &e->held[0]);
                    e->nheld = 0;
                    printf("edit2 while-held\n");
                } else {
                    batch_add(d.chunk_id, h.sock, NKE_ACT_ALLOW, 0, &d);
                }
                break;
            }
            case P_HOLD:
                if (copy_release) {
                    /* The copy goes to stdout (hex) so the test can compare it. */
                    printf("copy %u ", d.size);
                    for (uint32_t k = 0; k < d.size; k++)
                        printf("%02x", data[k]);
                    printf("\n");
                    release_only(&d);
                }
                printf("held-total %llu\n", (unsigned long long)held_total);
                break;
            case P_RANDOM: {
                int k = rand() % 3;
                if (k == 0 || nlater == 4096) respond(d.chunk_id, h.sock, NKE_ACT_ALLOW, 0, &d);
                else if (k == 1) { later[nlater].at = now_ms() + (uint64_t)(rand() % 30); later[nlater].first = 0; later[nlater++].d = d; }
                else put_modified(&d, data, d.size);
                break;
            }
            case P_BYTAG: answer(&d, P_BYTAG, bufs); break;
            default: put_modified(&d, out, (uint32_t)transform(p0, data, d.size, out));
            }
        }
        batch_flush();
        fflush(stdout);
        if (r == NKE_DQ_CORRUPT) {
            fprintf(stderr, "test-client: queue corrupt\n");
            return 1;
        }
    }
}

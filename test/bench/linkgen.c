/*
 * linkgen: a bench-only load generator that feeds nke-emud through its
 * private shim link (native/emu/src/nke_shim_link.h) exactly as
 * libnkeshim.so's relays do, without a program or a relay behind it: per
 * simulated socket one SOCK_SEQPACKET link, SHIM_ATTACH (a connected
 * outgoing TCP socket), then SHIM_DATA chunks in both directions, each with
 * its per-direction seq, never more than SHIM_WINDOW_CHUNKS awaiting their
 * SHIM_VERDICT per direction. Everything after the link (nke-emud,
 * kext/core, the shared queue and buffers, the user client) is the real
 * thing; this replaces only the program and its relay, whose speed is the
 * emulator's limit, not the filter path's (on a Mac the relay is the kernel).
 *
 *   linkgen --dir RUNTIME_DIR [--links 8] [--threads 2] [--secs 5] [--size 64] [--rate N]
 *
 * Prints one JSON line: {"links","secs","sent","verdicts","modified"}.
 * sent counts DATA messages the links took, verdicts the final VERDICT
 * messages received (a chunk passed with no client, reported, or decided).
 *
 * Threading: each thread owns its links outright (no shared state but the
 * totals, added under a mutex at the end).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "nke_emu_proto.h"
#include "nke_shim_link.h"

#define MAX_LINKS 256

struct link {
    int fd;
    uint32_t next_seq[2];  /* [0] IN, [1] OUT: next seq to send */
    uint32_t inflight[2];  /* DATA sent, final VERDICT not yet received */
};

static const char *g_dir;
static int g_links = 8, g_threads = 2, g_size = 64;
static double g_secs = 5;
static double g_rate; /* DATA messages a second over all links; 0: as fast as the windows allow */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t g_sent, g_verdicts, g_modified;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int link_open(int idx)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", g_dir, NKE_EMU_SHIM_SOCK);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        fprintf(stderr, "linkgen: connect %s: %s\n", sa.sun_path, strerror(errno));
        exit(2);
    }
    struct shim_attach a;
    memset(&a, 0, sizeof(a));
    a.hdr.type = SHIM_ATTACH;
    a.pid = getpid();
    a.uid = getuid();
    a.family = NKE_AF_INET;
    a.type = 1; /* SOCK_STREAM */
    a.protocol = NKE_PROTO_TCP;
    a.incoming = 0;
    snprintf(a.comm, sizeof(a.comm), "linkgen");
    a.local.family = a.remote.family = NKE_AF_INET;
    a.local.port = (uint16_t)(40000 + idx);
    a.remote.port = 9;
    a.local.addr[0] = a.remote.addr[0] = 127;
    a.local.addr[3] = a.remote.addr[3] = 1;
    if (send(fd, &a, sizeof(a), MSG_NOSIGNAL) != (ssize_t)sizeof(a)) {
        fprintf(stderr, "linkgen: attach: %s\n", strerror(errno));
        exit(2);
    }
    return fd;
}

/* Reads every verdict waiting on l; returns -1 when the link closed. */
static int drain_verdicts(struct link *l, uint64_t *verdicts, uint64_t *modified)
{
    static __thread uint8_t in[sizeof(struct shim_hdr) + SHIM_PIECE];
    for (;;) {
        ssize_t n = recv(l->fd, in, sizeof(in), MSG_DONTWAIT);
        if (n < 0)
            return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
        if (n == 0 || (size_t)n < sizeof(struct shim_hdr))
            return -1;
        struct shim_hdr h;
        memcpy(&h, in, sizeof(h));
        if (h.type != SHIM_VERDICT || (h.direction != NKE_DIR_IN && h.direction != NKE_DIR_OUT))
            return -1;
        if (h.flags & SHIM_F_MORE)
            continue; /* a piece of modified bytes; the last piece is the verdict */
        uint32_t d = h.direction == NKE_DIR_OUT;
        if (l->inflight[d])
            l->inflight[d]--;
        (*verdicts)++;
        if (h.action == NKE_ACT_ALLOW_MODIFIED)
            (*modified)++;
    }
}

static void *run(void *arg)
{
    int t = (int)(intptr_t)arg;
    struct link ls[MAX_LINKS];
    struct pollfd pf[MAX_LINKS];
    int n = 0;
    for (int i = t; i < g_links; i += g_threads) {
        memset(&ls[n], 0, sizeof(ls[n]));
        ls[n].fd = link_open(i);
        pf[n].fd = ls[n].fd;
        n++;
    }
    size_t msz = sizeof(struct shim_hdr) + (size_t)g_size;
    uint8_t *msg = malloc(msz);
    memset(msg, 0x61, msz);
    uint64_t sent = 0, verdicts = 0, modified = 0;
    double start = now_s(), end = start + g_secs;
    double per_thread = g_rate / g_threads;
    bool sending = true;
    for (;;) {
        bool any = false;
        double now = now_s();
        if (sending && now >= end)
            sending = false;
        /* --rate: this thread's budget so far (paced, not bursty: checked per message) */
        uint64_t budget = per_thread > 0 ? (uint64_t)((now - start) * per_thread) + 1u : UINT64_MAX;
        for (int i = 0; i < n; i++) {
            struct link *l = &ls[i];
            if (l->fd < 0)
                continue;
            if (drain_verdicts(l, &verdicts, &modified) < 0) {
                fprintf(stderr, "linkgen: link closed by nke-emud\n");
                close(l->fd);
                l->fd = -1;
                continue;
            }
            /* Fill both directions' windows, alternating like two relays. */
            for (int k = 0; sending && k < (int)(2 * SHIM_WINDOW_CHUNKS); k++) {
                uint32_t d = (uint32_t)k & 1u;
                if (l->inflight[d] >= SHIM_WINDOW_CHUNKS)
                    continue;
                if (sent >= budget)
                    break;
                struct shim_hdr h = { .type = SHIM_DATA, .direction = d ? NKE_DIR_OUT : NKE_DIR_IN,
                                      .len = (uint32_t)g_size, .seq = l->next_seq[d] };
                memcpy(msg, &h, sizeof(h));
                if (send(l->fd, msg, msz, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
                    break; /* link full: wait for verdicts */
                l->next_seq[d]++;
                l->inflight[d]++;
                sent++;
            }
            if (l->inflight[0] || l->inflight[1])
                any = true;
            pf[i].events = POLLIN;
        }
        if (!sending && !any)
            break;
        if (!sending && now_s() > end + 5) {
            fprintf(stderr, "linkgen: verdicts still missing 5 s after the end\n");
            break;
        }
        for (int i = 0; i < n; i++)
            pf[i].fd = ls[i].fd;
        /* Paced and under budget: sleep until the next message is due. */
        struct timespec ts = { 0, 100000000 };
        if (per_thread > 0 && sending && sent >= budget) {
            double due = start + (double)sent / per_thread - now_s();
            ts.tv_nsec = due > 0 ? (long)(due * 1e9) : 0;
            if (ts.tv_nsec > 100000000) ts.tv_nsec = 100000000;
        }
        ppoll(pf, (nfds_t)n, &ts, NULL);
    }
    for (int i = 0; i < n; i++)
        if (ls[i].fd >= 0)
            close(ls[i].fd); /* the socket's detach */
    free(msg);
    pthread_mutex_lock(&g_mu);
    g_sent += sent;
    g_verdicts += verdicts;
    g_modified += modified;
    pthread_mutex_unlock(&g_mu);
    return NULL;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--dir") && v) g_dir = argv[++i];
        else if (!strcmp(argv[i], "--links") && v) g_links = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && v) g_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--secs") && v) g_secs = atof(argv[++i]);
        else if (!strcmp(argv[i], "--size") && v) g_size = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rate") && v) g_rate = atof(argv[++i]);
        else {
            fprintf(stderr, "usage: linkgen --dir DIR [--links N] [--threads N] [--secs S] [--size BYTES] [--rate PER_SEC]\n");
            return 2;
        }
    }
    if (!g_dir || g_links < 1 || g_links > MAX_LINKS || g_threads < 1 || g_threads > g_links || g_size < 1 ||
        g_size > (int)NKE_BUFFER_SIZE || !(g_secs > 0)) {
        fprintf(stderr, "linkgen: --dir required; links 1..%d, threads 1..links, size 1..%u, secs > 0\n",
                MAX_LINKS, NKE_BUFFER_SIZE);
        return 2;
    }
    pthread_t th[MAX_LINKS];
    double t0 = now_s();
    for (int t = 0; t < g_threads; t++)
        pthread_create(&th[t], NULL, run, (void *)(intptr_t)t);
    for (int t = 0; t < g_threads; t++)
        pthread_join(th[t], NULL);
    printf("{\"links\":%d,\"secs\":%.3f,\"sent\":%llu,\"verdicts\":%llu,\"modified\":%llu}\n", g_links,
           now_s() - t0, (unsigned long long)g_sent, (unsigned long long)g_verdicts,
           (unsigned long long)g_modified);
    return 0;
}

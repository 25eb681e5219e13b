/*
 * explorergen: a bench-only generator for the event explorer bench
 * (test/bench/explorer-bench.js). It speaks nke-emud's private shim link
 * (native/emu/src/nke_shim_link.h) as libnkeshim.so does: one mux link
 * carrying many sockets (SHIM_ATTACH of connected TCP sockets, then report
 * -only SHIM_DATA with SHIM_F_NO_VERDICT), and one short-lived link per
 * exec report (SHIM_EXEC). Everything after the link (nke-emud, kext/core,
 * the queue, the kev socket, the addon, the helper, its JSON-RPC and the
 * extension's model and trees) is the real thing.
 *
 * Commands on stdin, one a line; each answers one line "ok N" on stdout:
 *   attach N PROCS       N sockets spread over PROCS processes (pids 100000+)
 *   exec N PER_S         N exec reports, children of those processes, PER_S a second
 *   burst N              N DATA chunks of 64 bytes, each on another socket (8 per 160 us)
 *   rate PER_S SECS      DATA chunks at PER_S a second for SECS seconds
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "nke_emu_proto.h"
#include "nke_shim_link.h"

static const char *g_dir;
static int g_mux = -1;
static uint32_t g_nsocks, g_nprocs = 1, g_next_sock;
static uint32_t g_seq;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int link_open(void)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", g_dir, NKE_EMU_SHIM_SOCK);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        fprintf(stderr, "explorergen: connect %s: %s\n", sa.sun_path, strerror(errno));
        exit(2);
    }
    return fd;
}

/* One message for socket id on the mux link; waits while the link is full. */
static void mux_send(uint32_t id, const void *m, size_t n)
{
    struct shim_mux mx = { .sock = id };
    struct iovec iov[2] = { { &mx, sizeof(mx) }, { (void *)m, n } };
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
    while (sendmsg(g_mux, &mh, MSG_NOSIGNAL) < 0) {
        if (errno != EINTR && errno != EAGAIN && errno != ENOBUFS) {
            fprintf(stderr, "explorergen: mux link: %s\n", strerror(errno));
            exit(2);
        }
    }
}

static uint32_t pid_of(uint32_t i) { return 100000u + i % g_nprocs; }

static void attach(uint32_t n, uint32_t procs)
{
    if (g_mux < 0) {
        g_mux = link_open();
        struct shim_hdr h = { .type = SHIM_MUX };
        if (send(g_mux, &h, sizeof(h), MSG_NOSIGNAL) != (ssize_t)sizeof(h)) {
            fprintf(stderr, "explorergen: mux: %s\n", strerror(errno));
            exit(2);
        }
    }
    g_nprocs = procs ? procs : 1;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t k = g_nsocks + i;
        struct shim_attach a;
        memset(&a, 0, sizeof(a));
        a.hdr.type = SHIM_ATTACH;
        a.pid = (int32_t)pid_of(k);
        a.uid = getuid();
        a.family = NKE_AF_INET;
        a.type = 1;
        a.protocol = NKE_PROTO_TCP;
        snprintf(a.comm, sizeof(a.comm), "bench-%u", (unsigned)(k % g_nprocs));
        a.local.family = a.remote.family = NKE_AF_INET;
        a.local.port = (uint16_t)(20000 + k % 40000);
        a.remote.port = (uint16_t)(1 + k % 1000);
        a.local.addr[0] = a.remote.addr[0] = 127;
        a.local.addr[3] = 1;
        a.remote.addr[3] = (uint8_t)(2 + k % 200);
        mux_send(k + 1, &a, sizeof(a));
        struct shim_hdr ev = { .type = SHIM_EVENT, .action = NKE_EV_CONNECTED };
        mux_send(k + 1, &ev, sizeof(ev));
    }
    g_nsocks += n;
}

static void execs(uint32_t n, double per_s)
{
    char path[128];
    double t0 = now_s();
    for (uint32_t i = 0; i < n; i++) {
        int plen = snprintf(path, sizeof(path), "/usr/bin/bench-exec-%u", (unsigned)i);
        uint8_t msg[sizeof(struct shim_exec) + sizeof(path)];
        struct shim_exec e;
        memset(&e, 0, sizeof(e));
        e.hdr.type = SHIM_EXEC;
        e.hdr.len = (uint32_t)plen;
        e.pid = (int32_t)(300000u + i);
        e.ppid = (int32_t)pid_of(i);
        e.uid = getuid();
        memcpy(msg, &e, sizeof(e));
        memcpy(msg + sizeof(e), path, (size_t)plen);
        int fd = link_open();
        if (send(fd, msg, sizeof(e) + (size_t)plen, MSG_NOSIGNAL) < 0)
            fprintf(stderr, "explorergen: exec report: %s\n", strerror(errno));
        close(fd);
        if (per_s > 0) {
            double due = t0 + (i + 1) / per_s, wait = due - now_s();
            if (wait > 0)
                usleep((useconds_t)(wait * 1e6));
        }
    }
}

static void data(uint32_t n)
{
    static uint8_t msg[sizeof(struct shim_hdr) + 64];
    memset(msg + sizeof(struct shim_hdr), 'a', 64);
    for (uint32_t i = 0; i < n && g_nsocks; i++) {
        struct shim_hdr h = { .type = SHIM_DATA, .direction = NKE_DIR_OUT, .len = 64,
                              .flags = SHIM_F_NO_VERDICT, .seq = g_seq++ };
        memcpy(msg, &h, sizeof(h));
        mux_send(g_next_sock % g_nsocks + 1, msg, sizeof(msg));
        g_next_sock++;
        /* The filter's 64 shared buffers: a reported chunk holds one until
         * the addon's reader gives it back; faster than that, chunks pass
         * pool-full unreported. 20 us apart leaves the reader time. */
        if (i % 8 == 7)
            usleep(160);
    }
}

int main(int argc, char **argv)
{
    if (argc != 3 || strcmp(argv[1], "--dir") != 0) {
        fprintf(stderr, "usage: explorergen --dir RUNTIME_DIR (commands on stdin)\n");
        return 2;
    }
    g_dir = argv[2];
    char line[256];
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof(line), stdin)) {
        unsigned a = 0, b = 0;
        double r = 0, secs = 0;
        if (sscanf(line, "attach %u %u", &a, &b) == 2) {
            attach(a, b);
            printf("ok %u\n", g_nsocks);
        } else if (sscanf(line, "exec %u %lf", &a, &r) == 2) {
            execs(a, r);
            printf("ok %u\n", a);
        } else if (sscanf(line, "burst %u", &a) == 1) {
            data(a);
            printf("ok %u\n", a);
        } else if (sscanf(line, "rate %lf %lf", &r, &secs) == 2) {
            double t0 = now_s();
            uint64_t sent = 0;
            while (now_s() - t0 < secs) {
                uint64_t due = (uint64_t)((now_s() - t0) * r);
                if (due > sent) {
                    data((uint32_t)(due - sent));
                    sent = due;
                }
                usleep(2000);
            }
            printf("ok %llu\n", (unsigned long long)sent);
        } else {
            fprintf(stderr, "explorergen: unknown command: %s", line);
            printf("error\n");
        }
    }
    return 0;
}

/*
 * fork-stress: forks repeatedly from a multithreaded program while its other
 * threads keep the shim busy (TCP sockets attached unconnected by an option,
 * connected and relayed, UDP sockets opening their own link to nke-emud),
 * and checks that every child completes. A fork taken while another thread
 * holds one of the shim's locks (opening a link, a relay or UDP state
 * half-changed) would leave the child waiting on a lock no thread of it
 * will ever release; test/emu/fork.test.js runs this under libnkeshim.so.
 *
 *   fork-stress --tcp PORT --udp PORT [--forks N] [--parallel N]
 *               [--threads N] [--child-ms N] [--timeout-ms N]
 *
 * PORT: a line echo server and a UDP sink on 127.0.0.1. Each child i sends
 * "child <i>\n" over TCP and reads it back, sends the datagram "child <i>",
 * lives --child-ms (past the shim's 100 ms refresh of nke-emud's state, so
 * it takes that lock too), sends "child <i> again\n" and exit()s (the
 * shim's exit drain runs). The parent reaps them, at most --parallel at
 * once; a child not done within --timeout-ms is reported (with what its
 * threads wait in, from /proc) and killed.
 * Prints "forks <n> completed <n> failed <n> stuck <n>"; exits 0 only when
 * every child completed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int g_tcp_port, g_udp_port;
static atomic_bool g_stop;
static atomic_ulong g_worker_rounds;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sa;
}

/* One line to the echo server and its echo back; false on any failure. */
static bool tcp_echo(const char *line)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return false;
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)); /* attaches it unconnected */
    struct sockaddr_in sa = loopback(g_tcp_port);
    bool ok = connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    size_t n = strlen(line);
    ok = ok && write(s, line, n) == (ssize_t)n;
    char back[128];
    size_t got = 0;
    while (ok && got < n) {
        ssize_t r = read(s, back + got, sizeof(back) - got);
        if (r <= 0)
            ok = false;
        else
            got += (size_t)r;
    }
    ok = ok && got == n && memcmp(back, line, n) == 0;
    close(s);
    return ok;
}

static bool udp_send(const char *msg)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return false;
    struct sockaddr_in sa = loopback(g_udp_port);
    bool ok = sendto(s, msg, strlen(msg), 0, (struct sockaddr *)&sa, sizeof(sa)) == (ssize_t)strlen(msg);
    close(s);
    return ok;
}

/* The parent's other threads: every shim path that takes a lock, as fast
 * as they go, for as long as the parent forks. */
static void *worker(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_stop)) {
        tcp_echo("worker\n");
        udp_send("worker");
        atomic_fetch_add(&g_worker_rounds, 1);
    }
    return NULL;
}

static int child_main(int i, int child_ms)
{
    char line[64];
    snprintf(line, sizeof(line), "child %d\n", i);
    if (!tcp_echo(line))
        return 2;
    snprintf(line, sizeof(line), "child %d", i);
    if (!udp_send(line))
        return 3;
    struct timespec ts = { child_ms / 1000, (long)(child_ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
    snprintf(line, sizeof(line), "child %d again\n", i);
    if (!tcp_echo(line))
        return 4;
    return 0;
}

/* What each thread of a stuck child waits in (wchan), for the report. */
static void describe_stuck(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char wpath[320], wchan[64] = "?";
        snprintf(wpath, sizeof(wpath), "/proc/%d/task/%s/wchan", (int)pid, e->d_name);
        FILE *f = fopen(wpath, "r");
        if (f) {
            if (!fgets(wchan, sizeof(wchan), f))
                strcpy(wchan, "?");
            fclose(f);
        }
        fprintf(stderr, "  thread %s waits in %s\n", e->d_name, wchan);
    }
    closedir(d);
}

struct kid {
    pid_t pid;
    int index;
    uint64_t started;
};

int main(int argc, char **argv)
{
    int forks = 200, parallel = 8, threads = 3, child_ms = 120, timeout_ms = 20000;
    for (int i = 1; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--tcp")) g_tcp_port = v;
        else if (!strcmp(argv[i], "--udp")) g_udp_port = v;
        else if (!strcmp(argv[i], "--forks")) forks = v;
        else if (!strcmp(argv[i], "--parallel")) parallel = v;
        else if (!strcmp(argv[i], "--threads")) threads = v;
        else if (!strcmp(argv[i], "--child-ms")) child_ms = v;
        else if (!strcmp(argv[i], "--timeout-ms")) timeout_ms = v;
        else {
            fprintf(stderr, "fork-stress: unknown option %s\n", argv[i]);
            return 64;
        }
    }
    if (!g_tcp_port || !g_udp_port || forks < 1 || parallel < 1 || parallel > 64 || threads < 0 || threads > 16) {
        fprintf(stderr, "usage: fork-stress --tcp PORT --udp PORT [--forks N] [--parallel 1-64] [--threads 0-16] "
                        "[--child-ms N] [--timeout-ms N]\n");
        return 64;
    }
    if (!tcp_echo("parent\n")) {
        fprintf(stderr, "fork-stress: no echo from 127.0.0.1:%d\n", g_tcp_port);
        return 1;
    }
    pthread_t tids[16];
    for (int t = 0; t < threads; t++)
        if (pthread_create(&tids[t], NULL, worker, NULL) != 0) {
            fprintf(stderr, "fork-stress: pthread_create failed\n");
            return 1;
        }
    struct kid kids[64];
    int nkids = 0, started = 0, completed = 0, failed = 0, stuck = 0;
    while (started < forks || nkids > 0) {
        while (started < forks && nkids < parallel) {
            pid_t p = fork();
            if (p < 0) {
                fprintf(stderr, "fork-stress: fork: %s\n", strerror(errno));
                break;
            }
            if (p == 0)
                exit(child_main(started, child_ms));
            kids[nkids++] = (struct kid){ p, started, now_ms() };
            started++;
        }
        int status;
        pid_t p = waitpid(-1, &status, WNOHANG);
        if (p > 0) {
            for (int k = 0; k < nkids; k++)
                if (kids[k].pid == p) {
                    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
                        completed++;
                    } else {
                        failed++;
                        fprintf(stderr, "fork-stress: child %d (pid %d) ended with %s %d\n", kids[k].index, (int)p,
                                WIFEXITED(status) ? "status" : "signal",
                                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
                    }
                    kids[k] = kids[--nkids];
                    break;
                }
            continue;
        }
        if (p < 0 && errno != EINTR && errno != ECHILD)
            break;
        uint64_t t = now_ms();
        for (int k = 0; k < nkids; k++)
            if (t - kids[k].started > (uint64_t)timeout_ms) {
                fprintf(stderr, "fork-stress: child %d (pid %d) not done after %d ms: stuck\n", kids[k].index,
                        (int)kids[k].pid, timeout_ms);
                describe_stuck(kids[k].pid);
                kill(kids[k].pid, SIGKILL);
                waitpid(kids[k].pid, NULL, 0);
                stuck++;
                kids[k--] = kids[--nkids];
            }
        struct timespec ts = { 0, 2 * 1000000L };
        nanosleep(&ts, NULL);
    }
    atomic_store(&g_stop, true);
    for (int t = 0; t < threads; t++)
        pthread_join(tids[t], NULL);
    printf("forks %d completed %d failed %d stuck %d worker-rounds %lu\n", started, completed, failed, stuck,
           atomic_load(&g_worker_rounds));
    return completed == forks ? 0 : 1;
}

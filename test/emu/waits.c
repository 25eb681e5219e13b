/*
 * A one-thread server that waits with select, pselect or epoll_pwait2
 * (argv[1]), for test/emu/waits.test.js: the shim's waits keep the
 * kernel's order of events (readiness.c), so a peer's EOF on a relayed
 * connection is read before a connection the peer opened after it is
 * accepted. Python has no pselect or epoll_pwait2.
 *
 * Prints its port, then serves: a connection's "PING" is answered "PONG",
 * its "SEEN" with how many EOFs the server had read when it accepted that
 * connection. In each wait's ready set connections are handled before the
 * listening socket (a select loop walks its sets in some order; this one
 * is the order in which the kernel's events happened when both are ready).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXC 1024

static int g_ls, g_ep = -1, g_eofs;
static int g_seen[MAXC]; /* fd -> EOFs read when it was accepted; -1: not a connection */

static void accept_all(void)
{
    for (;;) {
        int c = accept4(g_ls, NULL, NULL, SOCK_NONBLOCK);
        if (c < 0)
            return;
        if (c >= MAXC) {
            close(c);
            continue;
        }
        g_seen[c] = g_eofs;
        if (g_ep >= 0) {
            struct epoll_event ev = { .events = EPOLLIN, .data.fd = c };
            epoll_ctl(g_ep, EPOLL_CTL_ADD, c, &ev);
        }
    }
}

static void serve(int c)
{
    char b[4096];
    ssize_t n = recv(c, b, sizeof(b), 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        g_eofs++;
        g_seen[c] = -1;
        close(c); /* removes it from the epoll too */
        return;
    }
    char out[32];
    int k = 0;
    if (n >= 4 && !memcmp(b, "PING", 4))
        k = snprintf(out, sizeof(out), "PONG\n");
    else if (n >= 4 && !memcmp(b, "SEEN", 4))
        k = snprintf(out, sizeof(out), "%d\n", g_seen[c]);
    if (k > 0 && send(c, out, (size_t)k, MSG_NOSIGNAL) < 0)
        perror("send");
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    bool sel = !strcmp(mode, "select"), psel = !strcmp(mode, "pselect"), ep2 = !strcmp(mode, "epoll_pwait2");
    if (!sel && !psel && !ep2) {
        fprintf(stderr, "usage: %s select|pselect|epoll_pwait2\n", argv[0]);
        return 2;
    }
    for (int i = 0; i < MAXC; i++)
        g_seen[i] = -1;
    g_ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof(a);
    if (g_ls < 0 || bind(g_ls, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(g_ls, 512) < 0 ||
        getsockname(g_ls, (struct sockaddr *)&a, &al) < 0) {
        perror("listen");
        return 1;
    }
    if (ep2) {
        g_ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = g_ls };
        if (g_ep < 0 || epoll_ctl(g_ep, EPOLL_CTL_ADD, g_ls, &ev) < 0) {
            perror("epoll");
            return 1;
        }
    }
    printf("%d\n", ntohs(a.sin_port));
    fflush(stdout);
    for (;;) {
        if (ep2) {
            struct epoll_event evs[64];
            int n = epoll_pwait2(g_ep, evs, 64, NULL, NULL);
            if (n < 0 && errno != EINTR) {
                perror("epoll_pwait2");
                return 1;
            }
            for (int i = 0; i < n; i++)
                if (evs[i].data.fd == g_ls)
                    accept_all();
                else
                    serve(evs[i].data.fd);
            continue;
        }
        fd_set r;
        FD_ZERO(&r);
        FD_SET(g_ls, &r);
        int top = g_ls;
        for (int c = 0; c < MAXC; c++)
            if (g_seen[c] >= 0) {
                FD_SET(c, &r);
                if (c > top)
                    top = c;
            }
        int n = sel ? select(top + 1, &r, NULL, NULL, NULL) : pselect(top + 1, &r, NULL, NULL, NULL, NULL);
        if (n < 0 && errno != EINTR) {
            perror(mode);
            return 1;
        }
        if (n <= 0)
            continue;
        for (int c = 0; c <= top; c++)
            if (c != g_ls && g_seen[c] >= 0 && FD_ISSET(c, &r))
                serve(c);
        if (FD_ISSET(g_ls, &r))
            accept_all();
    }
}

/*
 * The bench's C program pair, so the shim's cost can be seen without a
 * JavaScript runtime's own scheduling in the figures:
 *   bulk sink            listens on 127.0.0.1 (ephemeral port; prints
 *                        "ready PORT"), reads each connection to EOF,
 *                        answers one byte 'k' and closes
 *   bulk send PORT BYTES connects, writes BYTES in 64 KiB writes, shuts
 *                        down writing, waits for the 'k' and prints the
 *                        elapsed nanoseconds as {"ns":N}
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static char buf[64 * 1024];

int main(int argc, char **argv)
{
    struct sockaddr_in a = { .sin_family = AF_INET };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (argc == 2 && !strcmp(argv[1], "sink")) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        socklen_t l = sizeof(a);
        if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(s, 16) < 0 ||
            getsockname(s, (struct sockaddr *)&a, &l) < 0) {
            perror("bulk sink");
            return 1;
        }
        printf("ready %d\n", ntohs(a.sin_port));
        fflush(stdout);
        for (;;) {
            int c = accept(s, NULL, NULL);
            if (c < 0)
                continue;
            while (read(c, buf, sizeof(buf)) > 0) {}
            if (write(c, "k", 1) < 0) {}
            close(c);
        }
    }
    if (argc != 4 || strcmp(argv[1], "send")) {
        fprintf(stderr, "usage: bulk sink | bulk send PORT BYTES\n");
        return 2;
    }
    long long n = atoll(argv[3]);
    a.sin_port = htons((uint16_t)atoi(argv[2]));
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
        perror("bulk send: connect");
        return 1;
    }
    memset(buf, 'a', sizeof(buf));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long long sent = 0; sent < n;) {
        ssize_t w = write(s, buf, sizeof(buf));
        if (w <= 0) {
            perror("bulk send: write");
            return 1;
        }
        sent += w;
    }
    shutdown(s, SHUT_WR);
    char k;
    if (read(s, &k, 1) != 1) {
        fprintf(stderr, "bulk send: no acknowledgement from the sink\n");
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("{\"ns\":%lld}\n", (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec));
    return 0;
}

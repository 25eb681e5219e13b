/*
 * sendmmsg/recvmmsg and dup() of a UDP socket under the shim (test/emu):
 *   mmsg-test HOST PORT
 * Sends "one", "two", "three" with one sendmmsg call to HOST:PORT, then
 * "four" with sendto on a dup() of the socket; reads the four replies with
 * recvmmsg (MSG_WAITFORONE, as many calls as needed) and prints
 * "sent <n>" and, per reply, "got <len> <bytes>".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: mmsg-test HOST PORT\n");
        return 2;
    }
    struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2])) };
    if (inet_pton(AF_INET, argv[1], &to.sin_addr) != 1) {
        fprintf(stderr, "mmsg-test: bad address %s\n", argv[1]);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    const char *words[3] = { "one", "two", "three" };
    struct iovec iov[3];
    struct mmsghdr out[3];
    memset(out, 0, sizeof(out));
    for (int i = 0; i < 3; i++) {
        iov[i] = (struct iovec){ (void *)words[i], strlen(words[i]) };
        out[i].msg_hdr.msg_iov = &iov[i];
        out[i].msg_hdr.msg_iovlen = 1;
        out[i].msg_hdr.msg_name = &to;
        out[i].msg_hdr.msg_namelen = sizeof(to);
    }
    int n = sendmmsg(fd, out, 3, 0);
    printf("sent %d", n);
    for (int i = 0; i < n; i++)
        printf(" %u", out[i].msg_len);
    printf("\n");
    int d = dup(fd);
    if (d < 0 || sendto(d, "four", 4, 0, (struct sockaddr *)&to, sizeof(to)) != 4) {
        perror("dup/sendto");
        return 1;
    }
    int got = 0;
    while (got < 4) {
        char bufs[4][256];
        struct iovec riov[4];
        struct mmsghdr in[4];
        memset(in, 0, sizeof(in));
        for (int i = 0; i < 4; i++) {
            riov[i] = (struct iovec){ bufs[i], sizeof(bufs[i]) };
            in[i].msg_hdr.msg_iov = &riov[i];
            in[i].msg_hdr.msg_iovlen = 1;
        }
        int r = recvmmsg(d, in, (unsigned)(4 - got), MSG_WAITFORONE, NULL);
        if (r <= 0) {
            perror("recvmmsg");
            return 1;
        }
        for (int i = 0; i < r; i++)
            printf("got %u %.*s\n", in[i].msg_len, (int)in[i].msg_len, bufs[i]);
        got += r;
    }
    close(d);
    close(fd);
    return 0;
}

/*
 * api.c: layer 3, the public socket and descriptor symbols libnkeshim.so
 * interposes. Each is thin: it goes straight to libc when the fd is not
 * tracked (or the shim is off) and otherwise hands the call to the layer
 * that owns the fd's state (tcp_relay.c, udp_queue.c, sockctl.c,
 * fdtable.c). errno is the libc call's, never the shim's bookkeeping's.
 *
 * Locks: none of its own.
 */
#include "shim.h"

int connect(int fd, const struct sockaddr *sa, socklen_t len)
{
    struct relay *r = relay_get(fd);
    if (r) {
        /* Connecting a relayed socket again (a connect in progress, done
         * or failed): the real socket answers (EALREADY, EISCONN, the real
         * result), as the kernel would. */
        pthread_mutex_lock(&r->lock);
        bool failed = r->connect_done && !r->connect_ok;
        pthread_mutex_unlock(&r->lock);
        int rc = libc_call(connect, r->real_fd, sa, len);
        int e = errno;
        if ((rc == 0 || e == EINPROGRESS) && failed)
            relay_reconnected(r, fd, rc != 0);
        relay_put(r);
        errno = e;
        return rc;
    }
    int rc = libc_call(connect, fd, sa, len);
    int e = errno;
    if (rc == 0 || e == EINPROGRESS) {
        relay_start(fd, false, rc == 0 ? NULL : sa, len);
        ctl_connected(fd);
    }
    errno = e;
    return rc;
}

int accept(int fd, struct sockaddr *sa, socklen_t *len)
{
    int c = libc_call(accept, fd, sa, len);
    if (c >= 0) {
        int e = errno;
        relay_start(c, true, NULL, 0);
        errno = e;
    }
    return c;
}

int accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags)
{
    int c = libc_call(accept4, fd, sa, len, flags);
    if (c >= 0) {
        int e = errno;
        relay_start(c, true, NULL, 0);
        errno = e;
    }
    return c;
}

int close(int fd)
{
    readiness_closed(fd);
    fd_forget(fd);
    return libc_call(close, fd);
}

int dup2(int from, int to)
{
    int rc = libc_call(dup2, from, to);
    if (rc >= 0 && from != to) {
        readiness_closed(to);
        fd_copy(from, to);
    }
    return rc;
}

int dup3(int from, int to, int flags)
{
    int rc = libc_call(dup3, from, to, flags);
    if (rc >= 0) {
        readiness_closed(to);
        fd_copy(from, to);
    }
    return rc;
}

int getsockname(int fd, struct sockaddr *sa, socklen_t *len)
{
    struct relay *r = relay_get(fd);
    int rc = libc_call(getsockname, r ? r->real_fd : fd, sa, len);
    if (r) relay_put(r);
    return rc;
}

int getpeername(int fd, struct sockaddr *sa, socklen_t *len)
{
    struct relay *r = relay_get(fd);
    int rc = libc_call(getpeername, r ? r->real_fd : fd, sa, len);
    if (r) relay_put(r);
    return rc;
}

int setsockopt(int fd, int level, int name, const void *v, socklen_t l)
{
    struct relay *r = relay_get(fd);
    int rc = libc_call(setsockopt, r ? r->real_fd : fd, level, name, v, l);
    if (r) {
        int e = errno;
        if (rc == 0)
            relay_opt_note(r, level, name, true);
        relay_put(r);
        errno = e;
    } else if (rc == 0) {
        int e = errno;
        ctl_option(fd, level, name, true);
        errno = e;
    }
    return rc;
}

int getsockopt(int fd, int level, int name, void *v, socklen_t *l)
{
    struct relay *r = relay_get(fd);
    if (!r) {
        int rc = libc_call(getsockopt, fd, level, name, v, l);
        if (rc == 0) {
            int e = errno;
            ctl_option(fd, level, name, false);
            errno = e;
        }
        return rc;
    }
    int rc = libc_call(getsockopt, r->real_fd, level, name, v, l);
    int e = errno;
    if (rc == 0)
        relay_opt_note(r, level, name, false);
    relay_put(r);
    errno = e;
    return rc;
}

int shutdown(int fd, int how)
{
    struct relay *r = relay_get(fd);
    if (!r)
        return libc_call(shutdown, fd, how);
    /* Shutting the program's end down makes the relay see EOF and pass
     * the half-close on after any pending data; the flag tells that EOF
     * from a close (an abortive one with SO_LINGER 0 becomes a reset). */
    atomic_store(&r->prog_shutdown, true);
    int rc = libc_call(shutdown, fd, how);
    relay_put(r);
    return rc;
}

int socket(int domain, int type, int proto)
{
    int fd = libc_call(socket, domain, type, proto);
    if (fd >= 0 && fd < MAX_FDS && (domain == AF_INET || domain == AF_INET6) && (type & 0xf) == SOCK_DGRAM)
        udp_track(fd, domain);
    return fd;
}

/* On a connected TCP socket the kernel ignores sendto's address; a relayed
 * one is a Unix socket, which would refuse it (EISCONN). */
static bool relayed(int fd)
{
    struct relay *r = relay_get(fd);
    if (r)
        relay_put(r);
    return r != NULL;
}

ssize_t sendto(int fd, const void *b, size_t n, int flags, const struct sockaddr *to, socklen_t tl)
{
    if (relay_reset_check(fd) < 0)
        return -1;
    if (!is_udp(fd)) {
        if (to && relayed(fd))
            to = NULL, tl = 0;
        return libc_call(sendto, fd, b, n, flags, to, tl);
    }
    return udp_sendto(fd, b, n, flags, to, tl);
}

ssize_t send(int fd, const void *b, size_t n, int flags)
{
    return sendto(fd, b, n, flags, NULL, 0);
}

ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
    if (relay_reset_check(fd) < 0)
        return -1;
    if (!is_udp(fd)) {
        if (m && m->msg_name && relayed(fd)) {
            struct msghdr c = *m;
            c.msg_name = NULL;
            c.msg_namelen = 0;
            return libc_call(sendmsg, fd, &c, flags);
        }
        return libc_call(sendmsg, fd, m, flags);
    }
    return udp_sendmsg(fd, m, flags);
}

ssize_t recvfrom(int fd, void *b, size_t n, int flags, struct sockaddr *from, socklen_t *fl)
{
    if (relay_reset_check(fd) < 0)
        return -1;
    if (!is_udp(fd) || (flags & MSG_PEEK))
        return libc_call(recvfrom, fd, b, n, flags, from, fl);
    return udp_recvfrom(fd, b, n, flags, from, fl);
}

ssize_t recv(int fd, void *b, size_t n, int flags)
{
    return recvfrom(fd, b, n, flags, NULL, NULL);
}

ssize_t recvmsg(int fd, struct msghdr *m, int flags)
{
    if (relay_reset_check(fd) < 0)
        return -1;
    if (!is_udp(fd) || (flags & MSG_PEEK))
        return libc_call(recvmsg, fd, m, flags);
    return udp_recvmsg(fd, m, flags);
}

int dup(int fd)
{
    int rc = libc_call(dup, fd);
    /* g_enabled != 1: nothing is tracked (tables fill only when on) */
    if (rc >= 0 && g_enabled == 1) {
        int e = errno;
        fd_copy(fd, rc);
        errno = e;
    }
    return rc;
}

/* fcntl is variadic; every command's third argument is an int, a pointer or
 * absent, all passed in one register (x86_64, aarch64), so it is forwarded
 * as a pointer-sized value. Only F_DUPFD and F_DUPFD_CLOEXEC change fd
 * tracking. glibc >= 2.28 headers send most callers to fcntl64 (python's
 * os.dup and socket.dup among them), so both are interposed. */
static int fcntl_common(int (*fn)(int, int, ...), int fd, int cmd, void *arg)
{
    if (!fn) {
        errno = ENOSYS;
        return -1;
    }
    int rc = fn(fd, cmd, arg);
    if (rc >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) && g_enabled == 1) {
        int e = errno;
        fd_copy(fd, rc);
        errno = e;
    }
    return rc;
}

int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    sym_fcntl();
    return fcntl_common(p_fcntl, fd, cmd, arg);
}

int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    /* an older libc without fcntl64: plain fcntl is the same call on 64-bit */
    if (!sym_fcntl64())
        sym_fcntl();
    return fcntl_common(p_fcntl64 ? p_fcntl64 : p_fcntl, fd, cmd, arg);
}

int sendmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags)
{
    if (!is_udp(fd))
        return libc_call(sendmmsg, fd, vec, vlen, flags);
    return udp_sendmmsg(fd, vec, vlen, flags);
}

int recvmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags, struct timespec *timeout)
{
    if (!is_udp(fd) || (flags & MSG_PEEK))
        return libc_call(recvmmsg, fd, vec, vlen, flags, timeout);
    return udp_recvmmsg(fd, vec, vlen, flags, timeout);
}

int bind(int fd, const struct sockaddr *sa, socklen_t len)
{
    int rc = libc_call(bind, fd, sa, len);
    if (rc == 0) {
        int e = errno;
        ctl_addr_note(fd, SHIM_BIND);
        errno = e;
    }
    return rc;
}

int listen(int fd, int backlog)
{
    int rc = libc_call(listen, fd, backlog);
    if (rc == 0) {
        int e = errno;
        ctl_addr_note(fd, SHIM_LISTEN);
        errno = e;
    }
    return rc;
}

/* ---- read, write, readv, writev on UDP sockets ------------------------- */
/* A connected UDP socket may be used with the plain I/O calls; each is one
 * datagram and gets its verdict through the send/recv paths above. Any other
 * fd (TCP sockets are relayed, so their bytes already pass the filter) goes
 * straight to libc after one table load. */

ssize_t write(int fd, const void *b, size_t n)
{
    if (relay_reset_check(fd) < 0)
        return -1;
    if (!is_udp(fd))
        return libc_call(write, fd, b, n);
    return sendto(fd, b, n, 0, NULL, 0);
}

ssize_t read(int fd, void *b, size_t n)
{
    if (relay_reset_check(fd) < 0)
        return -1;
    if (!is_udp(fd))
        return libc_call(read, fd, b, n);
    return recvfrom(fd, b, n, 0, NULL, NULL);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    if (relay_reset_check(fd) < 0)
        return -1;
    if (!is_udp(fd) || cnt < 0)
        return libc_call(writev, fd, iov, cnt);
    struct msghdr m = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)cnt };
    return sendmsg(fd, &m, 0);
}

ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
    if (relay_reset_check(fd) < 0)
        return -1;
    if (!is_udp(fd) || cnt < 0)
        return libc_call(readv, fd, iov, cnt);
    struct msghdr m = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)cnt };
    return recvmsg(fd, &m, 0);
}


/* closefrom and close_range (daemons, sshd's re-exec, subprocess): the
 * program's descriptors in the range are closed (and forgotten); the
 * shim's own, above fd_floor, are left open, or every relay and link
 * would die with them. A program holding descriptors above the floor
 * keeps those open too (the range stops at the floor). */
#include <sys/syscall.h>
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
static int shim_close_range(unsigned first, unsigned last, int flags)
{
    unsigned floor = (unsigned)fd_floor();
    if (!(flags & CLOSE_RANGE_CLOEXEC))
        for (unsigned fd = first; fd <= last && fd < MAX_FDS && fd < floor; fd++) {
            readiness_closed((int)fd);
            fd_forget((int)fd);
        }
    if (first >= floor)
        return 0;
    return (int)syscall(SYS_close_range, first, last < floor ? last : floor - 1, flags);
}

int close_range(unsigned first, unsigned last, int flags)
{
    return shim_close_range(first, last, flags);
}

void closefrom(int lowfd)
{
    if (lowfd < 0)
        lowfd = 0;
    if (shim_close_range((unsigned)lowfd, ~0U, 0) < 0) {
        /* no close_range (old kernel): one by one, below the floor */
        int floor = fd_floor();
        for (int fd = lowfd; fd < floor; fd++)
            close(fd);
    }
}

/* Dropping privileges: the process's link to nke-emud is made first
 * (relay_link_early), so it stays filtered afterwards. */
int setuid(uid_t u)
{
    relay_link_early();
    return libc_call(setuid, u);
}

int seteuid(uid_t u)
{
    relay_link_early();
    return libc_call(seteuid, u);
}

int setreuid(uid_t r, uid_t e)
{
    relay_link_early();
    return libc_call(setreuid, r, e);
}

int setresuid(uid_t r, uid_t e, uid_t s)
{
    relay_link_early();
    return libc_call(setresuid, r, e, s);
}

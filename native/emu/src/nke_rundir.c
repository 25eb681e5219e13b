/*
 * The runtime directory's location and trust checks (nke_rundir.h).
 *
 * System calls that libnkeshim.so interposes are made with syscall(): this
 * file is compiled into the shim, and a check that re-entered the shim's
 * connect() or close() would report its own socket to the filter.
 */
#define _GNU_SOURCE
#include "nke_rundir.h"

#include <nke_emu_proto.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

bool nke_rundir_resolve(char *buf, size_t cap)
{
    const char *e = getenv(NKE_EMU_DIR_ENV);
    int n;
    if (e && *e)
        n = snprintf(buf, cap, "%s", e);
    else if ((e = getenv("XDG_RUNTIME_DIR")) && *e)
        n = snprintf(buf, cap, "%s/nke-emu", e);
    else
        n = snprintf(buf, cap, "/tmp/nke-emu-%u", (unsigned)getuid());
    return n > 0 && (size_t)n < cap;
}

/* The user name of uid from /etc/passwd, or "" (no NSS: no malloc, no
 * sockets, nothing that could re-enter a shim). */
static void name_of(uid_t uid, char *out, size_t cap)
{
    char chunk[1024], line[256];
    size_t ll = 0;
    bool overlong = false;
    long n;
    int fd = (int)syscall(SYS_openat, AT_FDCWD, "/etc/passwd", O_RDONLY | O_CLOEXEC);
    out[0] = '\0';
    if (fd < 0)
        return;
    while ((n = syscall(SYS_read, fd, chunk, sizeof(chunk))) > 0) {
        for (long i = 0; i < n; i++) {
            char ch = chunk[i];
            if (ch != '\n') {
                if (ll + 1 < sizeof(line))
                    line[ll++] = ch;
                else
                    overlong = true;
                continue;
            }
            line[ll] = '\0';
            /* name:password:uid:... */
            char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
            if (!overlong && c2) {
                char *end;
                unsigned long u = strtoul(c2 + 1, &end, 10);
                if (end != c2 + 1 && *end == ':' && u == (unsigned long)uid) {
                    size_t nl = (size_t)(c1 - line) < cap - 1 ? (size_t)(c1 - line) : cap - 1;
                    memcpy(out, line, nl);
                    out[nl] = '\0';
                    syscall(SYS_close, fd);
                    return;
                }
            }
            ll = 0;
            overlong = false;
        }
    }
    syscall(SYS_close, fd);
}

/* "uid 65534 (nobody)" or "uid 1234" */
static void describe_uid(uid_t uid, char *out, size_t cap)
{
    char name[64];
    name_of(uid, name, sizeof(name));
    if (name[0])
        snprintf(out, cap, "uid %u (%s)", (unsigned)uid, name);
    else
        snprintf(out, cap, "uid %u", (unsigned)uid);
}

bool nke_rundir_check_dir(const char *dir, uid_t uid, char *why, size_t cap)
{
    struct stat st;
    char owner[96], me[96];
    why[0] = '\0';
    if (lstat(dir, &st) < 0)
        return false; /* errno from lstat: ENOENT = nothing there yet */
    if (S_ISLNK(st.st_mode)) {
        snprintf(why, cap,
                 "the emulator's runtime directory %s is a symbolic link: refusing it (it must be a real "
                 "directory of yours, mode 0700); remove it, or set " NKE_EMU_DIR_ENV
                 " to a directory of your own",
                 dir);
        errno = EPERM;
        return false;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(why, cap,
                 "the emulator's runtime directory %s is not a directory: refusing it; remove it, or set " NKE_EMU_DIR_ENV
                 " to a directory of your own",
                 dir);
        errno = EPERM;
        return false;
    }
    if (st.st_uid != uid && st.st_uid != 0) {
        describe_uid(st.st_uid, owner, sizeof(owner));
        snprintf(me, sizeof(me), "uid %u", (unsigned)uid);
        snprintf(why, cap,
                 "the emulator's runtime directory %s belongs to %s, not to you (%s) or root: another user may "
                 "be posing as the emulator, so nothing was sent there; remove it (as that user or root), or "
                 "set " NKE_EMU_DIR_ENV " to a directory of your own",
                 dir, owner, me);
        errno = EPERM;
        return false;
    }
    if (st.st_mode & 077) {
        snprintf(why, cap,
                 "the emulator's runtime directory %s is open to other users (mode %04o), so what listens there "
                 "may not be the emulator: refusing it; chmod 700 %s (nke-emud creates it 0700)",
                 dir, (unsigned)(st.st_mode & 07777), dir);
        errno = EPERM;
        return false;
    }
    return true;
}

bool nke_rundir_check_peer(int fd, uid_t uid, const char *what, char *why, size_t cap)
{
    struct ucred cr;
    socklen_t len = sizeof(cr);
    char peer[96], me[96];
    why[0] = '\0';
    if (syscall(SYS_getsockopt, fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0) {
        int e = errno;
        snprintf(why, cap, "cannot tell who listens on %s (SO_PEERCRED: %s): refusing it", what, strerror(e));
        errno = EPERM;
        return false;
    }
    if (cr.uid == uid || cr.uid == 0)
        return true;
    describe_uid(cr.uid, peer, sizeof(peer));
    snprintf(me, sizeof(me), "uid %u", (unsigned)uid);
    snprintf(why, cap,
             "%s is served by pid %d of %s, not by you (%s) or root: another user may be posing as the emulator, "
             "so nothing was sent; stop that process or set " NKE_EMU_DIR_ENV " to a directory of your own",
             what, (int)cr.pid, peer, me);
    errno = EPERM;
    return false;
}

int nke_rundir_connect(int fd, const char *sock_path, char *why, size_t cap)
{
    struct sockaddr_un sa;
    char dir[sizeof(sa.sun_path)];
    const char *slash = strrchr(sock_path, '/');
    size_t n = strlen(sock_path);
    uid_t uid = getuid();
    why[0] = '\0';
    if (n >= sizeof(sa.sun_path)) {
        snprintf(why, cap, "%s is too long for a Unix socket address (%zu bytes at most)", sock_path,
                 sizeof(sa.sun_path) - 1);
        errno = ENAMETOOLONG;
        return -1;
    }
    if (slash == NULL) {
        snprintf(dir, sizeof(dir), ".");
    } else {
        size_t dl = slash == sock_path ? 1 : (size_t)(slash - sock_path);
        memcpy(dir, sock_path, dl);
        dir[dl] = '\0';
    }
    if (!nke_rundir_check_dir(dir, uid, why, cap))
        return -1; /* errno: EPERM, or lstat's (ENOENT) */
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, sock_path, n + 1);
    if (syscall(SYS_connect, fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return -1;
    if (!nke_rundir_check_peer(fd, uid, sock_path, why, cap))
        return -1;
    return 0;
}

int nke_rundir_open_shared(const char *path, uid_t uid, size_t min_size)
{
    char dir[PATH_MAX], why[NKE_RUNDIR_WHY_MAX];
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path) : 0;
    if (!slash || dl == 0 || dl >= sizeof(dir)) {
        errno = EINVAL;
        return -1;
    }
    memcpy(dir, path, dl);
    dir[dl] = '\0';
    if (!nke_rundir_check_dir(dir, uid, why, sizeof(why)))
        return -1;
    int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (st.st_uid != uid && st.st_uid != 0) ||
        (size_t)st.st_size < min_size) {
        syscall(SYS_close, fd);
        errno = EPERM;
        return -1;
    }
    return fd;
}

int nke_rundir_link_connect(int fd, const char *sock_path)
{
    static int said; /* once per process; atomic exchange, no lock */
    char why[NKE_RUNDIR_WHY_MAX], msg[NKE_RUNDIR_WHY_MAX + 160];
    if (nke_rundir_connect(fd, sock_path, why, sizeof(why)) == 0)
        return 0;
    if (errno == EPERM && why[0] && __atomic_exchange_n(&said, 1, __ATOMIC_ACQ_REL) == 0) {
        int e = errno;
        int len = snprintf(msg, sizeof(msg), "libnkeshim: %s. %s runs unfiltered.\n", why,
                           program_invocation_short_name);
        if (len > 0)
            syscall(SYS_write, 2, msg, (size_t)len < sizeof(msg) ? (size_t)len : sizeof(msg) - 1);
        errno = e;
    }
    return -1;
}

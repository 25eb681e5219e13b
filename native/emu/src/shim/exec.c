/*
 * exec.c: exec and spawn. Owns the exec family's public symbols (execve,
 * execv, execvp, execvpe, execl*, fexecve, execveat, posix_spawn(p)): each
 * drains what the program wrote (exec_drain) and reports the exec to
 * nke-emud (SHIM_EXEC on a short-lived link) before calling libc; and the
 * shim's destructor, the exit drain.
 *
 * Locks: none of its own; the drains take the UDP and TCP drain locks
 * (udp_queue.c, tcp_relay.c) one after the other, never together.
 */
#include "shim.h"

/* The one deadline of an exit or exec drain: now + NKE_SHIM_EXIT_WAIT_MS
 * (default 5000: a chunk held by a user client is released at its deadline
 * anyway), on CLOCK_REALTIME as pthread_cond_timedwait's default clock. The
 * UDP and the TCP wait both use it, so the whole drain is bounded once. */
static struct timespec drain_deadline(long *ms_out)
{
    long ms = 5000;
    const char *e = getenv("NKE_SHIM_EXIT_WAIT_MS");
    if (e && *e)
        ms = strtol(e, NULL, 10);
    if (ms < 0)
        ms = 0;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    *ms_out = ms;
    return until;
}

/* See "Exit drain" in tcp_relay.c. drain_deadline bounds the UDP and the TCP wait
 * together. */
__attribute__((destructor)) static void shim_dtor(void)
{
    long ms;
    struct timespec until = drain_deadline(&ms);
    udp_exit_drain(&until, ms); /* shim-udp: queued UDP datagrams first */
    relay_exit_drain(&until, ms);
}

/* _exit and _Exit run no destructor, yet every forking server's child
 * leaves by them: what it queued (a UDP datagram awaiting its verdict, bytes
 * in its relay loop) is sent first, within the same bound as exit's. Not in
 * a vfork child (posix_spawn's failure path), whose memory is the parent's. */
static void exit_drains_now(void)
{
    if (getpid() != g_pid)
        return;
    long ms;
    struct timespec until = drain_deadline(&ms);
    udp_exit_drain(&until, ms);
    relay_exit_drain(&until, ms);
}

void _exit(int status)
{
    exit_drains_now();
    sym__exit();
    p__exit(status);
    __builtin_unreachable();
}

void _Exit(int status)
{
    exit_drains_now();
    sym__Exit();
    p__Exit(status);
    __builtin_unreachable();
}

/*
 * Exec drain. exec replaces the image and with it the relay loop and UDP
 * worker threads, so bytes the program wrote before exec that are still in
 * a relay (queued, held by nke-emud, unread in the socketpair) or in a UDP
 * queue would be lost, where the kernel would send them. Before the real
 * exec, exec_drain waits, bounded by drain_deadline, until (a) every queued
 * UDP datagram is sent or dropped and (b) every relay with OUT open
 * (sockets still open and sockets the program closed) has nothing of the
 * program's left. Unlike the exit drain it does NOT end OUT of an open
 * socket: the exec may fail and the program go on writing to it. For a
 * closed socket an empty OUT is enough: its real descriptor is CLOEXEC, so
 * the exec closes it and the kernel sends the FIN after the buffered bytes.
 * Relayed sockets the new image inherits are passed on by
 * relay_exec_prepare (tcp_relay.c). Data another thread writes during the
 * drain, and every exec in a vfork child (which shares the parent's memory
 * and whose exec does not end the parent's threads), are not waited for.
 */
void exec_drain(void)
{
    /* vfork child: the relays are the parent's and live on; taking their
     * locks from here could deadlock the parent. */
    if (getpid() != g_pid)
        return;
    long ms;
    struct timespec until = drain_deadline(&ms);
    udp_exit_drain(&until, ms); /* (a) */
    relay_exec_drain(&until, ms); /* (b) */
}

/* The message is built on the stack, no malloc: exec* may run in a vfork
 * child (libuv, posix_spawn callers) sharing the parent's heap. */
/* before_ns: CLOCK_MONOTONIC taken before the exec (0: now, for a report
 * made before the exec call). */
static void report_exec_for(int32_t pid, int32_t ppid, const char *path, uint64_t before_ns)
{
    shim_init();
    if (g_enabled != 1 || !path)
        return;
    char full[PATH_MAX];
    const char *p = realpath(path, full) ? full : path;
    size_t n = strlen(p);
    if (n >= PATH_MAX)
        return;
    int link = link_open();
    if (link < 0)
        return;
    uint8_t m[sizeof(struct shim_exec) + PATH_MAX];
    struct shim_exec e = { .hdr = { .type = SHIM_EXEC, .len = (uint32_t)n }, .pid = pid, .ppid = ppid,
                           .uid = getuid(), .before_ns = before_ns ? before_ns : mono_ns() };
    memcpy(m, &e, sizeof(e));
    memcpy(m + sizeof(e), p, n);
    libc_call(sendto, link, m, sizeof(e) + n, MSG_NOSIGNAL, NULL, 0);
    libc_call(close, link);
}

static void report_exec(const char *path)
{
    report_exec_for(getpid(), getppid(), path, 0);
}

/* envp with `var` (NAME=...) in place of any NAME= it had; NULL: no memory. */
static char **env_with(char *const envp[], const char *var)
{
    size_t n = 0, kl = strcspn(var, "=") + 1;
    while (envp && envp[n])
        n++;
    char **e = malloc((n + 2) * sizeof(*e));
    if (!e)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(envp[i], var, kl) != 0)
            e[k++] = envp[i];
    e[k++] = (char *)var;
    e[k] = NULL;
    return e;
}

extern char **environ;

/* The exec calls below: drain, report, pass the relayed sockets the new
 * image inherits (relay_exec_prepare), exec; a failed exec puts the
 * sockets back. Not in a vfork child (memory shared with the parent). */
#define EXEC_WITH_INHERIT(envp, call)                                     \
    do {                                                                  \
        struct exec_undo *undo_ = NULL;                                   \
        char *var_ = NULL, **env_ = NULL;                                 \
        if (!shim_vforked() && (undo_ = malloc(sizeof(*undo_))) &&        \
            (var_ = relay_exec_prepare(undo_)))                           \
            env_ = env_with(envp, var_);                                  \
        char *const *use_ = env_ ? env_ : (envp);                         \
        int rc_ = (call);                                                 \
        int e_ = errno;                                                   \
        if (undo_)                                                        \
            relay_exec_failed(undo_);                                     \
        free(env_);                                                       \
        free(var_);                                                       \
        free(undo_);                                                      \
        errno = e_;                                                       \
        return rc_;                                                       \
    } while (0)

int execve(const char *path, char *const argv[], char *const envp[])
{
    exec_drain();
    if (access(path, X_OK) == 0)
        report_exec(path);
    EXEC_WITH_INHERIT(envp, libc_call(execve, path, argv, use_));
}

/* ---- the rest of the exec family --------------------------------------- */
/* glibc's execv, execvp, execvpe, execl* and posix_spawn reach the kernel
 * without calling the execve symbol, so each is interposed: the shim
 * reports what the kernel will run (for a PATH search, the first executable
 * candidate, which is the one libc's search runs), then calls libc. */

/* The file a PATH search for `file` finds first, into out; false if none. */
static bool path_search(const char *file, char *out, size_t cap)
{
    if (!file || !*file)
        return false;
    if (strchr(file, '/')) {
        snprintf(out, cap, "%s", file);
        return access(out, X_OK) == 0;
    }
    const char *path = getenv("PATH");
    if (!path)
        path = "/bin:/usr/bin"; /* glibc's default */
    while (*path) {
        const char *end = strchrnul(path, ':');
        size_t dl = (size_t)(end - path);
        int n = dl ? snprintf(out, cap, "%.*s/%s", (int)dl, path, file) : snprintf(out, cap, "%s", file);
        if (n > 0 && (size_t)n < cap && access(out, X_OK) == 0)
            return true;
        path = *end ? end + 1 : end;
    }
    return false;
}

int execv(const char *path, char *const argv[])
{
    exec_drain();
    if (access(path, X_OK) == 0)
        report_exec(path);
    EXEC_WITH_INHERIT(environ, libc_call(execve, path, argv, use_));
}

int execvpe(const char *file, char *const argv[], char *const envp[])
{
    exec_drain();
    char found[PATH_MAX];
    if (path_search(file, found, sizeof(found)))
        report_exec(found);
    EXEC_WITH_INHERIT(envp, libc_call(execvpe, file, argv, use_));
}

int execvp(const char *file, char *const argv[])
{
    exec_drain();
    char found[PATH_MAX];
    if (path_search(file, found, sizeof(found)))
        report_exec(found);
    EXEC_WITH_INHERIT(environ, libc_call(execvpe, file, argv, use_));
}

/* execl, execle, execlp: the variadic list becomes an argv on the stack. */
#define EXECL_MAX 1024 /* arguments, NULL included: 8 KiB of stack */
#define COLLECT_ARGS(arg0, ap, argv, n)                                  \
    do {                                                                 \
        (argv)[0] = (char *)(arg0);                                      \
        (n) = 1;                                                         \
        while ((argv)[(n) - 1] != NULL) {                                \
            if ((n) == EXECL_MAX) {                                      \
                errno = E2BIG;                                           \
                va_end(ap);                                              \
                return -1;                                               \
            }                                                            \
            (argv)[(n)++] = va_arg(ap, char *);                          \
        }                                                                \
    } while (0)

int execl(const char *path, const char *arg, ...)
{
    char *argv[EXECL_MAX];
    size_t n;
    va_list ap;
    va_start(ap, arg);
    COLLECT_ARGS(arg, ap, argv, n);
    va_end(ap);
    return execv(path, argv);
}

int execlp(const char *file, const char *arg, ...)
{
    char *argv[EXECL_MAX];
    size_t n;
    va_list ap;
    va_start(ap, arg);
    COLLECT_ARGS(arg, ap, argv, n);
    va_end(ap);
    return execvp(file, argv);
}

int execle(const char *path, const char *arg, ...)
{
    char *argv[EXECL_MAX];
    size_t n;
    va_list ap;
    va_start(ap, arg);
    COLLECT_ARGS(arg, ap, argv, n);
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    return execve(path, argv, envp);
}

/* fexecve and execveat name the file by descriptor: the report carries the
 * absolute path the kernel's exec event shows, from /proc/self/fd. glibc's
 * fexecve enters the kernel itself (execveat syscall, or execve of
 * /proc/self/fd/N) without calling these symbols, so each exec is reported
 * once; nke-emud pairs it with the connector's as for execve. */

/* The absolute path fd was opened as, into out (cap bytes); false if none. */
static bool fd_path(int fd, char *out, size_t cap)
{
    char p[40];
    snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(p, out, cap - 1);
    if (n <= 0 || (size_t)n >= cap - 1)
        return false;
    out[n] = 0;
    return out[0] == '/'; /* not "socket:[...]", "anon_inode:..." */
}

int fexecve(int fd, char *const argv[], char *const envp[])
{
    exec_drain();
    char p[PATH_MAX];
    if (fd_path(fd, p, sizeof(p)) && access(p, X_OK) == 0)
        report_exec(p);
    EXEC_WITH_INHERIT(envp, libc_call(fexecve, fd, argv, use_));
}

int execveat(int dirfd, const char *path, char *const argv[], char *const envp[], int flags)
{
    exec_drain();
    char full[PATH_MAX], d[PATH_MAX];
    bool ok = false;
    if (!*path && (flags & AT_EMPTY_PATH)) /* the fd itself */
        ok = fd_path(dirfd, full, sizeof(full));
    else if (*path == '/' || (*path && dirfd == AT_FDCWD)) /* realpath resolves a relative one */
        ok = snprintf(full, sizeof(full), "%s", path) < (int)sizeof(full);
    else if (*path && fd_path(dirfd, d, sizeof(d)))
        ok = snprintf(full, sizeof(full), "%s/%s", d, path) < (int)sizeof(full);
    struct stat sb;
    if (ok && (flags & AT_SYMLINK_NOFOLLOW) && lstat(full, &sb) == 0 && S_ISLNK(sb.st_mode))
        ok = false; /* the kernel refuses it (ELOOP) */
    if (ok && access(full, X_OK) == 0)
        report_exec(full);
    EXEC_WITH_INHERIT(envp, libc_call(execveat, dirfd, path, argv, use_, flags));
}

/* posix_spawn: the child's exec happens inside libc; it is reported from
 * the parent once the child exists (its pid, our pid as ppid). */
int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                const posix_spawnattr_t *at, char *const argv[], char *const envp[])
{
    pid_t local;
    pid_t *pp = pid ? pid : &local;
    uint64_t t0 = mono_ns(); /* the child's exec comes after this */
    int rc = libc_call(posix_spawn, pp, path, fa, at, argv, envp);
    if (rc == 0) {
        int e = errno;
        report_exec_for(*pp, getpid(), path, t0);
        errno = e;
    }
    return rc;
}

int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                 const posix_spawnattr_t *at, char *const argv[], char *const envp[])
{
    pid_t local;
    pid_t *pp = pid ? pid : &local;
    char found[PATH_MAX];
    bool have = path_search(file, found, sizeof(found));
    uint64_t t0 = mono_ns();
    int rc = libc_call(posix_spawnp, pp, file, fa, at, argv, envp);
    if (rc == 0 && have) {
        int e = errno;
        report_exec_for(*pp, getpid(), found, t0);
        errno = e;
    }
    return rc;
}


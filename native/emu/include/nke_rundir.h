/*
 * The emulator's runtime directory (nke_emu_proto.h): where it is, and
 * whether what is found there may be trusted. One implementation, compiled
 * into every side: nke-emud, which serves there, and the two that connect,
 * libnkeshim.so and the addon's Linux transport. (The TypeScript side has
 * its mirror in extension/src/shared/privateDir.ts.)
 *
 * Why: with neither NKE_EMU_DIR nor XDG_RUNTIME_DIR set the directory is
 * /tmp/nke-emu-<uid>, a name any local user can take first. A client that
 * connected there without looking sent its traffic, and believed the
 * answers, of whoever listened. So a client uses the directory only when it
 * is a real directory (lstat: not a symlink) owned by its own uid or root
 * with no permission bits for group or others, and after connect() talks to
 * the listener only when SO_PEERCRED says it runs as its own uid or root,
 * before sending a byte.
 *
 * Every function may run inside an arbitrary program (the shim): no
 * malloc, no stdio, no locks; the system calls a shim interposes (connect,
 * getsockopt, read, write, close) are made with syscall() so that they
 * never re-enter it. Thread-safe.
 */
#ifndef NKE_RUNDIR_H
#define NKE_RUNDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Not exported from libnkeshim.so (built with default visibility) nor the addon. */
#define NKE_RUNDIR_API __attribute__((visibility("hidden")))

/* Room for any reason written below (paths included). */
#define NKE_RUNDIR_WHY_MAX 1024u

/* The runtime directory: $NKE_EMU_DIR, else $XDG_RUNTIME_DIR/nke-emu, else
 * /tmp/nke-emu-<uid>. false when it does not fit in cap bytes. */
NKE_RUNDIR_API bool nke_rundir_resolve(char *buf, size_t cap);

/* Whether dir may hold endpoints of uid: a directory, not a symlink, owned
 * by uid or root, no access for group or others. false with errno ENOENT
 * (or lstat's error) when it is not there, why[0] = 0; false with errno
 * EPERM and why[] saying what is wrong (owner by uid and name) and what to
 * do when it is there but not private. */
NKE_RUNDIR_API bool nke_rundir_check_dir(const char *dir, uid_t uid, char *why, size_t cap);

/* After connect(): whether the listener of fd runs as uid or root
 * (SO_PEERCRED). false with why[] naming it (pid, uid, name). `what` names
 * the endpoint in the message. */
NKE_RUNDIR_API bool nke_rundir_check_peer(int fd, uid_t uid, const char *what, char *why, size_t cap);

/* A client's whole step: checks the directory of sock_path, connects fd to
 * sock_path and checks the listener, for the calling process's uid. 0, or
 * -1 with errno: EPERM when the directory or the listener is not private to
 * us (why[] says which and what to do; nothing was sent), ENAMETOOLONG when
 * the path does not fit a Unix socket address, else connect()'s error
 * (ENOENT, ECONNREFUSED: nothing listens there; why[0] = 0). */
NKE_RUNDIR_API int nke_rundir_connect(int fd, const char *sock_path, char *why, size_t cap);

/* Opens a file nke-emud shares read-only (shim.state) without trusting
 * what may have been put in its place: its directory passes
 * nke_rundir_check_dir, and the file is opened O_NOFOLLOW | O_NONBLOCK (a
 * FIFO or symlink never blocks or redirects the caller) and must be a
 * regular file of uid or root of at least min_size bytes. An fd (O_RDONLY,
 * O_CLOEXEC), or -1 with errno (EPERM when something is there but not
 * trusted). */
NKE_RUNDIR_API int nke_rundir_open_shared(const char *path, uid_t uid, size_t min_size);

/* nke_rundir_connect for libnkeshim.so: on EPERM also says why on stderr,
 * once per process ("<program> runs unfiltered"). The shim then fails open
 * as when no nke-emud runs. */
NKE_RUNDIR_API int nke_rundir_link_connect(int fd, const char *sock_path);

#ifdef __cplusplus
}
#endif

#endif /* NKE_RUNDIR_H */

/*
 * Exec monitor: a KAUTH_SCOPE_FILEOP listener that broadcasts every
 * KAUTH_FILEOP_EXEC as kernel event messages (kev_msg_post), the path split
 * into chunks by nke_kev_chunk_build so that no message exceeds MLEN
 * (mbuf_get_mlen(): 224 bytes on x86_64, 288 on newer arm64 kernels).
 *
 * posix_spawn caveat: for posix_spawn the callback runs in the spawner's
 * context, so proc_selfpid()/proc_selfppid()/the credential are the
 * spawner's, not the new process's. No public KPI tells an execve from a
 * posix_spawn inside the callback, so the kext cannot set
 * NKE_EXEC_F_SPAWNER_CONTEXT itself; consumers must read pid as "the process
 * that exec'd or spawned this image" (see docs/kext.md).
 *
 * Events are broadcast to every event socket that filters on our vendor
 * code: they carry no secrets (pid, ppid, uid, path only).
 *
 * kauth_unlisten_scope does not wait for running callbacks: g_nke.kauth_inflight
 * (atomic) counts them and nke_kauth_stop drains it. The count cannot see a
 * thread that already read our callback from the scope's listener array
 * (kern_authorization.c kauth_authorize_action_internal reads kll_callback
 * without a lock, on purpose: "scope unlisten race hack") and has not yet
 * entered it; so the drain sleeps at least once before it looks.
 *
 * Cost: with any KAUTH_SCOPE_FILEOP listener, XNU builds the vnode's path
 * for every open and close in the system (kauth_authorize_fileop:
 * vn_getpath for KAUTH_FILEOP_OPEN/CLOSE/EXEC), not only for the execs we
 * want; our callback returns at once for the others.
 */
#include "nke_kext.h"

#include <libkern/libkern.h>
#include <libkern/OSAtomic.h>
#include <sys/kauth.h>
#include <sys/kern_event.h>
#include <sys/proc.h>
#include <sys/vnode.h>
#include <sys/errno.h>
#include <IOKit/IOLib.h>

/* macOS MAXPATHLEN, NUL included: the longest path the VFS hands kauth. The
 * ABI's NKE_PATH_MAX is the larger Linux limit; the kext copies no more than
 * its own and flags (NKE_EXEC_F_TRUNCATED) a string that was longer. */
#define NKE_KEXT_PATH_MAX 1024u

static void post_exec(const char *path, uint32_t path_len, uint16_t flags, int32_t pid,
                      int32_t ppid, uint32_t uid)
{
    uint32_t count = nke_kev_chunk_count(path_len, g_nke.kev_msg_limit);
    uint32_t exec_id = (uint32_t)OSIncrementAtomic(&g_nke.exec_id) + 1;
    uint32_t i;
    if (count == 0) {
        printf("nke: MLEN %u carries no exec path byte; exec of pid %d not reported\n",
               g_nke.kev_msg_limit, pid);
        return;
    }
    for (i = 0; i < count; i++) {
        struct nke_kev_exec_chunk hdr;
        const char *piece = NULL;
        uint32_t piece_len = 0;
        struct kev_msg msg;
        errno_t err;
        if (nke_kev_chunk_build(exec_id, pid, ppid, uid, flags, path, path_len, g_nke.kev_msg_limit,
                                i, &hdr, &piece, &piece_len) != NKE_OK)
            return;
        memset(&msg, 0, sizeof(msg));
        msg.vendor_code = g_nke.kev_vendor_code;
        msg.kev_class = NKE_KEV_CLASS;
        msg.kev_subclass = NKE_KEV_SUBCLASS_EXEC;
        msg.event_code = NKE_KEV_EVENT_EXEC;
        msg.dv[0].data_length = sizeof(hdr);
        msg.dv[0].data_ptr = &hdr;
        /* a zero length ends the vector list, which is what an empty piece means */
        msg.dv[1].data_length = piece_len;
        msg.dv[1].data_ptr = (void *)(uintptr_t)piece;
        err = kev_msg_post(&msg);
        if (err) {
            printf("nke: kev_msg_post exec %u chunk %u/%u failed: %d\n", exec_id, i, count, err);
            return; /* the reassembler reports the exec incomplete */
        }
    }
}

static int nke_fileop_cb(kauth_cred_t cred, void *idata, kauth_action_t action, uintptr_t arg0,
                         uintptr_t arg1, uintptr_t arg2, uintptr_t arg3)
{
    OSIncrementAtomic(&g_nke.kauth_inflight);
    if (action == KAUTH_FILEOP_EXEC && !g_nke.kauth_stopping && g_nke.kev_vendor_code != 0 &&
        arg1 != 0) {
        /* arg1 is freed after we return: copy it. */
        char *path = (char *)IOMalloc(NKE_KEXT_PATH_MAX);
        if (path != NULL) {
            uint32_t len = (uint32_t)strlcpy(path, (const char *)arg1, NKE_KEXT_PATH_MAX);
            uint16_t flags = 0;
            if (len >= NKE_KEXT_PATH_MAX) {
                len = NKE_KEXT_PATH_MAX - 1; /* sent cut, and said so */
                flags = NKE_EXEC_F_TRUNCATED;
            }
            post_exec(path, len, flags, proc_selfpid(), proc_selfppid(),
                      cred ? kauth_cred_getuid(cred) : 0);
            IOFree(path, NKE_KEXT_PATH_MAX);
        }
    }
    OSDecrementAtomic(&g_nke.kauth_inflight);
    return KAUTH_RESULT_DEFER; /* we only watch */
}

int nke_kauth_start(void)
{
    g_nke.kauth_stopping = false;
    g_nke.kauth_listener = kauth_listen_scope(KAUTH_SCOPE_FILEOP, nke_fileop_cb, NULL);
    return g_nke.kauth_listener ? 0 : ENOMEM;
}

void nke_kauth_stop(void)
{
    if (g_nke.kauth_listener == NULL)
        return;
    g_nke.kauth_stopping = true;
    kauth_unlisten_scope((kauth_listener_t)g_nke.kauth_listener);
    g_nke.kauth_listener = NULL;
    /* Callbacks already past the scope's list keep running, and one may be
     * on its way in without having counted itself yet: sleep first, then
     * drain. */
    do {
        IOSleep(100);
    } while (g_nke.kauth_inflight > 0);
}

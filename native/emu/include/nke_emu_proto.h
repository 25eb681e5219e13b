/*
 * The Linux emulator's user-client endpoints: what nke-emud offers in place
 * of the kext's IOUserClient and of the PF_SYSTEM event socket. Used by
 * nke-emud (native/emu) and by the addon's Linux transport (native/addon).
 * The payloads are the ABI structs of <nke/nke_abi.h>, byte for byte.
 *
 * Endpoints, in a 0700 runtime directory:
 *   $NKE_EMU_DIR, else $XDG_RUNTIME_DIR/nke-emu, else /tmp/nke-emu-<uid>
 *     ctl.sock   user client, SOCK_SEQPACKET: any number connect, one is open
 *                at a time (the one whose OPEN succeeded, until it closes)
 *     kev.sock   kernel-event sockets (any number), SOCK_SEQPACKET
 *     shim.sock  the LD_PRELOAD shim's link (private to native/emu)
 *     nke-emud.lock  held (flock) by the one nke-emud serving the directory,
 *                its pid inside: a second nke-emud refuses to start
 * Both sides check each other (native/emu/include/nke_rundir.h): clients
 * use the directory only when it is a real directory (not a symlink) owned
 * by their uid or root with no access for group or others, and talk to a
 * listener only when SO_PEERCRED says it runs as their uid or root, before
 * sending a byte; nke-emud serves only its own uid and root (see Refusal).
 */
#ifndef NKE_EMU_PROTO_H
#define NKE_EMU_PROTO_H

#include <nke/nke_abi.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NKE_EMU_DIR_ENV      "NKE_EMU_DIR"
#define NKE_EMU_CTL_SOCK     "ctl.sock"
#define NKE_EMU_KEV_SOCK     "kev.sock"
#define NKE_EMU_SHIM_SOCK    "shim.sock"
#define NKE_EMU_LOCK_FILE    "nke-emud.lock"
/* nke-emud's own messages (0600, started afresh by each nke-emud, bounded):
 * what the workbench shows for an emulator another window or a console started. */
#define NKE_EMU_LOG_FILE     "nke-emud.log"
#define NKE_EMU_LOG_MAX      (4u << 20)

#define NKE_EMU_MAGIC_REQ    0x51454b4eu /* "NKEQ" */
#define NKE_EMU_MAGIC_REPLY  0x50454b4eu /* "NKEP" */

/*
 * ctl.sock: one request datagram, one reply datagram, in order.
 *   request = nke_emu_req + `len` bytes of the selector's input struct
 *   reply   = nke_emu_reply + `len` bytes of its output struct
 * NKE_SEL_OPEN's reply carries three descriptors (SCM_RIGHTS), in this order:
 *   [0] memfd of the notification queue (NKE_QUEUE_MAP_SIZE bytes, the
 *       nke_dq_memory at offset 0, queue data size NKE_QUEUE_DATA_SIZE)
 *   [1] memfd of the data buffers (NKE_BUFFER_COUNT * NKE_BUFFER_SIZE bytes,
 *       buffer i at i * NKE_BUFFER_SIZE) — map it read-only
 *   [2] eventfd signalled when the queue goes from empty to non-empty (the
 *       stand-in for the Mach notification port): read it, then drain the
 *       queue until empty before waiting again.
 * Closing the socket is clientClose; nke-emud sees it at once (clientDied).
 */
struct nke_emu_req {
    uint32_t magic;       /* NKE_EMU_MAGIC_REQ */
    uint32_t selector;    /* enum nke_selector */
    uint32_t seq;         /* echoed in the reply */
    uint32_t len;         /* bytes of input after this header */
};
NKE_ASSERT_SIZE(struct nke_emu_req, 16);

struct nke_emu_reply {
    uint32_t magic;       /* NKE_EMU_MAGIC_REPLY */
    uint32_t status;      /* enum nke_error */
    uint32_t seq;
    uint32_t len;         /* bytes of output after this header */
};
NKE_ASSERT_SIZE(struct nke_emu_reply, 16);

/* Largest request: a PUT_DATA piece. */
#define NKE_EMU_MAX_REQ (sizeof(struct nke_emu_req) + sizeof(struct nke_put_data_hdr) + NKE_PUT_DATA_MAX_PIECE)

/*
 * kev.sock: an emulated socket(PF_SYSTEM, SOCK_RAW, SYSPROTO_EVENT).
 * The client sends nke_emu_kev_ctl requests (each answered by one
 * nke_emu_kev_ctl with status set); after a successful SET_FILTER, every
 * matching event arrives as one datagram holding one kern_event_msg
 * (nke_kern_event_msg + data), never larger than kev_msg_limit. Like the
 * kernel: a fresh socket matches nothing; vendor lookup answers
 * NKE_EMU_KEV_ENOENT until a vendor is registered; a client that does not
 * keep up loses events (counted by nke-emud) rather than blocking anyone.
 */
enum nke_emu_kev_op {
    NKE_EMU_KEV_GET_VENDOR = 1, /* SIOCGKEVVENDOR: vendor_string -> vendor_code */
    NKE_EMU_KEV_SET_FILTER = 2  /* SIOCSKEVFILT: vendor_code, kev_class, kev_subclass */
};
#define NKE_EMU_KEV_ANY      0u   /* KEV_ANY_VENDOR / KEV_ANY_CLASS / KEV_ANY_SUBCLASS */
#define NKE_EMU_KEV_OK       0u
#define NKE_EMU_KEV_EPERM    1u   /* refused: another uid (see Refusal); vendor_code = that uid */
#define NKE_EMU_KEV_ENOENT   2u
#define NKE_EMU_KEV_EINVAL   22u
#define NKE_EMU_KEV_VENDOR_LEN 200u  /* KEV_VENDOR_CODE_MAX_STR_LEN */

struct nke_emu_kev_ctl {
    uint32_t magic;       /* NKE_EMU_MAGIC_REQ in a request, _REPLY in a reply */
    uint32_t op;          /* enum nke_emu_kev_op */
    uint32_t status;      /* reply: NKE_EMU_KEV_OK / _ENOENT / _EINVAL */
    uint32_t vendor_code;
    uint32_t kev_class;
    uint32_t kev_subclass;
    uint32_t msg_limit;   /* reply: the emulated MLEN */
    uint32_t _pad0;
    char vendor_string[NKE_EMU_KEV_VENDOR_LEN];
};
NKE_ASSERT_SIZE(struct nke_emu_kev_ctl, 232);

/*
 * Refusal. A connection from a uid other than nke-emud's own and root's
 * stays open until the peer closes it, so that the peer reads why:
 *   ctl.sock  every request is answered with status NKE_ERR_NOT_PERMITTED
 *             and an nke_emu_refusal as its output (len 8);
 *   kev.sock  every request is answered with status NKE_EMU_KEV_EPERM and
 *             vendor_code = the uid refused;
 *   shim.sock the link is closed at once (the shim fails open).
 * Refused connections open at once are bounded; past the bound they are
 * closed unanswered.
 */
struct nke_emu_refusal {
    uint32_t peer_uid;    /* the client's uid as nke-emud saw it (SO_PEERCRED) */
    uint32_t filter_uid;  /* the uid nke-emud runs as; root is served too */
};
NKE_ASSERT_SIZE(struct nke_emu_refusal, 8);

#ifdef __cplusplus
}
#endif

#endif /* NKE_EMU_PROTO_H */

/*
 * NKE Workbench kernel/user ABI.
 *
 * THE single definition of everything that crosses the boundary between the
 * kext (or its Linux emulator) and the user client (the native addon). The
 * TypeScript side takes every constant, enum and struct layout from this
 * file: the build compiles a program against it (scripts/gen-abi.mjs) and
 * writes extension/src/shared/abi.generated.ts from what the compiler says.
 *
 * Rules for this file:
 *  - fixed-width fields only, explicit padding (`_pad*`, always zero on the
 *    wire) so natural alignment adds nothing, and a static assert on the size
 *    and on every offset of every struct that crosses the boundary;
 *  - compiles as C11 and C++ in the kernel (no libc), in the emulator and in
 *    the addon;
 *  - integers are little-endian host order (both x86_64 and arm64 are LE);
 *    ports are in host order too, addresses in network order.
 */
#ifndef NKE_ABI_H
#define NKE_ABI_H

#if defined(KERNEL)
#include <stdint.h>
#include <stddef.h>
#else
#include <stdint.h>
#include <stddef.h>
#endif

#ifdef __cplusplus
#define NKE_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
extern "C" {
#else
#define NKE_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

#define NKE_ASSERT_SIZE(type, n) NKE_STATIC_ASSERT(sizeof(type) == (n), "ABI size of " #type)
#define NKE_ASSERT_OFF(type, field, n) \
    NKE_STATIC_ASSERT(offsetof(type, field) == (n), "ABI offset of " #type "." #field)

/* ------------------------------------------------------------------------ */
/* Identity and version                                                      */
/* ------------------------------------------------------------------------ */

/* Bumped on every incompatible change; checked by NKE_SEL_OPEN.
 * 2: nke_filter_state.stale_entries; exec paths up to NKE_PATH_MAX 4096,
 *    NKE_EXEC_F_TRUNCATED; stream order and byte budget
 *    (nke_filter_state.bytes_kept, chunks_queued, chunks_passed_budget;
 *    NKE_KEPT_BYTES_MAX), NKE_NT_OWNER, NKE_RELEASE_BUDGET,
 *    NKE_RELEASE_SOCKET_CLOSING and NKE_NT_DATA_GAP.
 * 3: NKE_ACT_EXTEND (nke_verdict.hold_ms), NKE_HOLD_TOTAL_MAX_MS, NKE_ERR_HOLD_MS.
 * 4: the filter says why: nke_nt_data.rule and .capture_tag (96 -> 104
 *    bytes), nke_capture_config.tag (was _pad0), NKE_RULE_DEFAULT. */
#define NKE_ABI_VERSION 4u

#define NKE_BUNDLE_ID       "com.nkeworkbench.filter"
#define NKE_SERVICE_CLASS   "com_nkeworkbench_Filter"
/* Vendor string registered with kev_vendor_code_find(). */
#define NKE_KEV_VENDOR      "com.nkeworkbench"

/* ------------------------------------------------------------------------ */
/* Shared memory                                                             */
/* ------------------------------------------------------------------------ */

/*
 * Data buffers. The published design the project is modelled on
 * (docs/architecture.md) has 40 x 64 KiB; 64 buffers give a client that
 * answers in batches room to keep the pipe full.
 */
#define NKE_BUFFER_COUNT    64u
#define NKE_BUFFER_SIZE     (64u * 1024u)
/* A chunk (one deferred piece of socket data) spans at most this many buffers;
 * larger data is split into several chunks, each with its own verdict. */
#define NKE_CHUNK_MAX_BUFFERS 8u
#define NKE_CHUNK_MAX_BYTES   (NKE_CHUNK_MAX_BUFFERS * NKE_BUFFER_SIZE)
/* Terminates a buffer list shorter than NKE_CHUNK_MAX_BUFFERS. */
#define NKE_BUF_NONE        0xFFFFu

/* Notification queue: IODataQueueMemory layout, this many bytes of entries. */
#define NKE_QUEUE_DATA_SIZE (256u * 1024u)

/* Memory types for clientMemoryForType() / the emulator's memfds. */
enum nke_memory_type {
    NKE_MEM_QUEUE       = 0,      /* notification queue (IODataQueueMemory) */
    NKE_MEM_BUFFER_POOL = 1,      /* all data buffers, contiguous, buffer i at i*NKE_BUFFER_SIZE */
    NKE_MEM_BUFFER_BASE = 0x100   /* + i: data buffer i alone */
};

/* Same layout as IODataQueueEntry / IODataQueueMemory (IODataQueueShared.h). */
struct nke_dq_entry {
    uint32_t size;      /* bytes of data that follow */
    uint8_t  data[4];
};
#define NKE_DQ_ENTRY_HEADER_SIZE 4u

struct nke_dq_memory {
    uint32_t queue_size;  /* bytes of entry space; the consumer trusts its own copy */
    uint32_t head;        /* written by the consumer */
    uint32_t tail;        /* written by the producer */
    struct nke_dq_entry queue[1];
};
#define NKE_DQ_MEMORY_HEADER_SIZE 12u
/* Total bytes to map for a queue of NKE_QUEUE_DATA_SIZE (IOSharedDataQueue adds
 * an appendix for the notification port after the entries; the emulator does
 * not need one but reserves the same page-rounded size). */
#define NKE_QUEUE_MAP_SIZE (NKE_QUEUE_DATA_SIZE + 4096u)

NKE_ASSERT_SIZE(struct nke_dq_entry, 8);
NKE_ASSERT_OFF(struct nke_dq_entry, data, NKE_DQ_ENTRY_HEADER_SIZE);
NKE_ASSERT_OFF(struct nke_dq_memory, head, 4);
NKE_ASSERT_OFF(struct nke_dq_memory, tail, 8);
NKE_ASSERT_OFF(struct nke_dq_memory, queue, NKE_DQ_MEMORY_HEADER_SIZE);

/* ------------------------------------------------------------------------ */
/* Common pieces                                                             */
/* ------------------------------------------------------------------------ */

/* A socket id: slot in the filter's socket table + generation of that slot,
 * so a reused slot is never confused with its predecessor. */
struct nke_sock_id {
    uint32_t slot;
    uint32_t gen;     /* never 0 for a live socket */
};
NKE_ASSERT_SIZE(struct nke_sock_id, 8);
NKE_ASSERT_OFF(struct nke_sock_id, gen, 4);

#define NKE_AF_INET   2u    /* AF_INET on both macOS and Linux */
#define NKE_AF_INET6  30u   /* macOS AF_INET6; the emulator translates Linux's 10 */
#define NKE_PROTO_TCP 6u
#define NKE_PROTO_UDP 17u

struct nke_addr {
    uint8_t  family;      /* NKE_AF_INET, NKE_AF_INET6 or 0 (none) */
    uint8_t  _pad0;
    uint16_t port;        /* host byte order */
    uint32_t scope_id;    /* IPv6 scope, 0 otherwise */
    uint8_t  addr[16];    /* network byte order; IPv4 in the first 4 bytes */
};
NKE_ASSERT_SIZE(struct nke_addr, 24);
NKE_ASSERT_OFF(struct nke_addr, port, 2);
NKE_ASSERT_OFF(struct nke_addr, scope_id, 4);
NKE_ASSERT_OFF(struct nke_addr, addr, 8);

#define NKE_COMM_LEN 32u    /* process name, NUL-terminated (MAXCOMLEN is 16) */

enum nke_direction {
    NKE_DIR_IN  = 1,      /* data arriving for the process (sf_data_in) */
    NKE_DIR_OUT = 2       /* data the process sends (sf_data_out) */
};

/* ------------------------------------------------------------------------ */
/* User-client methods (IOConnectCallStructMethod selectors)                 */
/* ------------------------------------------------------------------------ */

/*
 * Who may call which selector, the same for the kext's externalMethod and
 * nke-emud's ctl.sock (both ask nke_core_selector_check, kext/core):
 *   - a selector not below NKE_SEL_COUNT: NKE_ERR_SELECTOR, from anyone;
 *   - NKE_SEL_OPEN: from any permitted client; NKE_ERR_BUSY while another
 *     client is open (or this one already is), else the open's own errors;
 *   - every other selector, NKE_SEL_GET_STATE included: only from the open
 *     client, NKE_ERR_NOT_OPEN from one that has not opened (before its
 *     OPEN, after a failed OPEN, or while another client is open). The
 *     counters describe other users' traffic; the addon asks for them only
 *     once open, and a client learns the filter's version from OPEN's
 *     reply.
 */
enum nke_selector {
    NKE_SEL_OPEN        = 0, /* in nke_open_request, out nke_open_reply */
    NKE_SEL_RESPOND     = 1, /* in nke_response_hdr + verdicts + releases */
    NKE_SEL_PUT_DATA    = 2, /* in nke_put_data_hdr + bytes: stage modified data */
    NKE_SEL_SET_CAPTURE = 3, /* in nke_capture_config */
    NKE_SEL_GET_STATE   = 4, /* out nke_filter_state */
    NKE_SEL_COUNT       = 5
};

/* Flags of nke_open_request. */
#define NKE_OPEN_F_NONE 0u

struct nke_open_request {
    uint32_t abi_version;   /* NKE_ABI_VERSION of the client */
    uint32_t flags;
    int32_t  client_pid;
    uint32_t _pad0;
};
NKE_ASSERT_SIZE(struct nke_open_request, 16);
NKE_ASSERT_OFF(struct nke_open_request, flags, 4);
NKE_ASSERT_OFF(struct nke_open_request, client_pid, 8);

struct nke_open_reply {
    uint32_t abi_version;     /* the filter's; open fails with NKE_ERR_VERSION on mismatch */
    uint32_t buffer_count;
    uint32_t buffer_size;
    uint32_t queue_data_size;
    uint32_t kev_vendor_code; /* 0 where not registered */
    uint32_t kev_msg_limit;   /* total kern_event_msg size limit (MLEN) */
    uint64_t session_id;      /* changes on every open */
};
NKE_ASSERT_SIZE(struct nke_open_reply, 32);
NKE_ASSERT_OFF(struct nke_open_reply, buffer_count, 4);
NKE_ASSERT_OFF(struct nke_open_reply, buffer_size, 8);
NKE_ASSERT_OFF(struct nke_open_reply, queue_data_size, 12);
NKE_ASSERT_OFF(struct nke_open_reply, kev_vendor_code, 16);
NKE_ASSERT_OFF(struct nke_open_reply, kev_msg_limit, 20);
NKE_ASSERT_OFF(struct nke_open_reply, session_id, 24);

/* ------------------------------------------------------------------------ */
/* Notifications (kernel -> client), one per queue entry                     */
/* ------------------------------------------------------------------------ */

enum nke_notify_type {
    NKE_NT_ATTACH         = 1,  /* nke_nt_attach */
    NKE_NT_DETACH         = 2,  /* nke_nt_detach */
    NKE_NT_CONNECT_IN     = 3,  /* nke_nt_addrs: accepted connection */
    NKE_NT_CONNECT_OUT    = 4,  /* nke_nt_addrs: outgoing connect */
    NKE_NT_BOUND          = 5,  /* nke_nt_addrs */
    NKE_NT_LISTEN         = 6,  /* nke_nt_addrs */
    NKE_NT_EVENT          = 7,  /* nke_nt_event: sf_notify */
    NKE_NT_DATA           = 8,  /* nke_nt_data */
    NKE_NT_CHUNK_RELEASED = 9,  /* nke_nt_chunk_released */
    NKE_NT_STATE          = 10, /* nke_nt_state */
    NKE_NT_OPTION         = 11, /* nke_nt_option: setoption/getoption */
    /* nke_nt_attach again, for a socket whose process is now known or
     * changed: pid, uid and comm replace the attach's (the kext attaches an
     * accepted socket in the kernel's input path and learns the process that
     * accepts it only in sf_accept). Family, type and protocol are unchanged. */
    NKE_NT_OWNER          = 12,
    NKE_NT_DATA_GAP       = 13  /* nke_nt_data_gap: data passed without a report */
};

/* Header of every notification. Records are multiples of 8 bytes. */
struct nke_nt_hdr {
    uint16_t type;            /* enum nke_notify_type */
    uint16_t size;            /* whole record, header included */
    uint32_t flags;           /* per type */
    struct nke_sock_id sock;  /* zero for NKE_NT_STATE */
    uint64_t time_ns;         /* monotonic clock of the filter */
};
NKE_ASSERT_SIZE(struct nke_nt_hdr, 24);
NKE_ASSERT_OFF(struct nke_nt_hdr, size, 2);
NKE_ASSERT_OFF(struct nke_nt_hdr, flags, 4);
NKE_ASSERT_OFF(struct nke_nt_hdr, sock, 8);
NKE_ASSERT_OFF(struct nke_nt_hdr, time_ns, 16);

struct nke_nt_attach {
    struct nke_nt_hdr hdr;
    int32_t  pid;
    uint32_t uid;
    uint8_t  family;          /* NKE_AF_* */
    uint8_t  type;            /* 1 stream, 2 dgram */
    uint8_t  protocol;        /* NKE_PROTO_* */
    uint8_t  _pad0;
    uint32_t _pad1;
    char     comm[NKE_COMM_LEN];
};
NKE_ASSERT_SIZE(struct nke_nt_attach, 72);
NKE_ASSERT_OFF(struct nke_nt_attach, pid, 24);
NKE_ASSERT_OFF(struct nke_nt_attach, uid, 28);
NKE_ASSERT_OFF(struct nke_nt_attach, family, 32);
NKE_ASSERT_OFF(struct nke_nt_attach, type, 33);
NKE_ASSERT_OFF(struct nke_nt_attach, protocol, 34);
NKE_ASSERT_OFF(struct nke_nt_attach, comm, 40);

struct nke_nt_detach {
    struct nke_nt_hdr hdr;
    uint64_t bytes_in;
    uint64_t bytes_out;
};
NKE_ASSERT_SIZE(struct nke_nt_detach, 40);
NKE_ASSERT_OFF(struct nke_nt_detach, bytes_in, 24);
NKE_ASSERT_OFF(struct nke_nt_detach, bytes_out, 32);

/* CONNECT_IN, CONNECT_OUT, BOUND, LISTEN. */
struct nke_nt_addrs {
    struct nke_nt_hdr hdr;
    struct nke_addr local;
    struct nke_addr remote;
};
NKE_ASSERT_SIZE(struct nke_nt_addrs, 72);
NKE_ASSERT_OFF(struct nke_nt_addrs, local, 24);
NKE_ASSERT_OFF(struct nke_nt_addrs, remote, 48);

enum nke_sock_event {
    NKE_EV_CONNECTING    = 1,
    NKE_EV_CONNECTED     = 2,
    NKE_EV_DISCONNECTING = 3,
    NKE_EV_DISCONNECTED  = 4,
    NKE_EV_FLUSH_READ    = 5,
    NKE_EV_SHUTDOWN      = 6,
    NKE_EV_CANTRECVMORE  = 7,
    NKE_EV_CANTSENDMORE  = 8,
    NKE_EV_CLOSING       = 9,
    NKE_EV_BOUND         = 10
};

struct nke_nt_event {
    struct nke_nt_hdr hdr;
    uint32_t event;           /* enum nke_sock_event */
    uint32_t _pad0;
};
NKE_ASSERT_SIZE(struct nke_nt_event, 32);
NKE_ASSERT_OFF(struct nke_nt_event, event, 24);

/* setoption / getoption seen by the filter (reported, never held). */
struct nke_nt_option {
    struct nke_nt_hdr hdr;
    uint32_t level;           /* SOL_SOCKET, IPPROTO_TCP, ... (platform values) */
    uint32_t name;
    uint32_t is_set;          /* 1 setoption, 0 getoption */
    uint32_t _pad0;
};
NKE_ASSERT_SIZE(struct nke_nt_option, 40);
NKE_ASSERT_OFF(struct nke_nt_option, level, 24);
NKE_ASSERT_OFF(struct nke_nt_option, name, 28);
NKE_ASSERT_OFF(struct nke_nt_option, is_set, 32);

/* Flags of nke_nt_data.hdr.flags. */
#define NKE_DATA_F_HELD     0x1u  /* deferred: the filter waits for a verdict */
#define NKE_DATA_F_DATAGRAM 0x2u  /* one UDP datagram: boundaries preserved */
#define NKE_DATA_F_OOB      0x4u  /* out-of-band data */
#define NKE_DATA_F_HAS_ADDR 0x8u  /* `addr` is the datagram's peer (sendto/recvfrom) */

/* Why the filter reported or held a chunk, so a client never decides it
 * again by matching rules of its own (which drift from the filter's): the
 * config that was in force (its `tag`) and the rule of that config that
 * matched first (its index), or NKE_RULE_DEFAULT when no rule did (the
 * config's default_action, or mode ALL). A chunk the rules wanted held but
 * that could only be reported (NKE_CORE_DATA_F_NO_HOLD, the byte budget)
 * names the same rule without NKE_DATA_F_HELD. */
struct nke_nt_data {
    struct nke_nt_hdr hdr;
    uint64_t chunk_id;        /* unique per filter session, never reused */
    uint64_t stream_offset;   /* offset of the first byte in this socket+direction */
    uint32_t size;            /* bytes of data across the buffers */
    uint8_t  direction;       /* enum nke_direction */
    uint8_t  _pad0;
    uint16_t nbuffers;        /* entries used in buffers[] */
    uint32_t deadline_ms;     /* when held: ms until auto-release; 0 otherwise */
    uint32_t capture_tag;     /* nke_capture_config.tag of the config that decided */
    struct nke_addr addr;     /* with NKE_DATA_F_HAS_ADDR */
    uint16_t buffers[NKE_CHUNK_MAX_BUFFERS]; /* terminated by NKE_BUF_NONE when short */
    uint16_t rule;            /* index in that config's rules[], or NKE_RULE_DEFAULT */
    uint16_t _pad1[3];
};
NKE_ASSERT_SIZE(struct nke_nt_data, 104);
NKE_ASSERT_OFF(struct nke_nt_data, chunk_id, 24);
NKE_ASSERT_OFF(struct nke_nt_data, stream_offset, 32);
NKE_ASSERT_OFF(struct nke_nt_data, size, 40);
NKE_ASSERT_OFF(struct nke_nt_data, direction, 44);
NKE_ASSERT_OFF(struct nke_nt_data, nbuffers, 46);
NKE_ASSERT_OFF(struct nke_nt_data, deadline_ms, 48);
NKE_ASSERT_OFF(struct nke_nt_data, capture_tag, 52);
NKE_ASSERT_OFF(struct nke_nt_data, addr, 56);
NKE_ASSERT_OFF(struct nke_nt_data, buffers, 80);
NKE_ASSERT_OFF(struct nke_nt_data, rule, 96);

/*
 * A piece of data the filter passed WITHOUT reporting it although the capture
 * mode wanted it reported or held: no buffer (pool or chunk table exhausted,
 * the fail-open rule) or no room for its NKE_NT_DATA record in the queue. No
 * buffer is used: only where the hole is (socket, direction, stream offset)
 * and how long, so the client's history marks a gap of `size` bytes instead
 * of splicing the bytes around it. hdr.flags carries the piece's
 * NKE_DATA_F_DATAGRAM / _OOB bits.
 */
enum nke_gap_reason {
    NKE_GAP_NO_BUFFER  = 1, /* buffer pool or chunk table exhausted */
    NKE_GAP_QUEUE_FULL = 2  /* the NKE_NT_DATA record did not fit in the queue */
};

struct nke_nt_data_gap {
    struct nke_nt_hdr hdr;
    uint64_t stream_offset;   /* of the first byte passed, in this socket+direction */
    uint32_t size;            /* bytes passed unreported */
    uint8_t  direction;       /* enum nke_direction */
    uint8_t  reason;          /* enum nke_gap_reason */
    uint16_t _pad0;
};
NKE_ASSERT_SIZE(struct nke_nt_data_gap, 40);
NKE_ASSERT_OFF(struct nke_nt_data_gap, stream_offset, 24);
NKE_ASSERT_OFF(struct nke_nt_data_gap, size, 32);
NKE_ASSERT_OFF(struct nke_nt_data_gap, direction, 36);
NKE_ASSERT_OFF(struct nke_nt_data_gap, reason, 37);
NKE_ASSERT_OFF(struct nke_nt_data_gap, _pad0, 38);

enum nke_release_reason {
    NKE_RELEASE_TIMEOUT     = 1, /* deadline passed: original re-injected */
    NKE_RELEASE_CLIENT_GONE = 2, /* client closed or died: original re-injected */
    NKE_RELEASE_SOCKET_GONE = 3, /* socket detached while held: data discarded */
    NKE_RELEASE_INJECT_FAIL = 4, /* re-injection failed in the stack */
    /* The filter's byte budget (NKE_KEPT_BYTES_MAX) was used up while later
     * data of the chunk's socket had to wait behind it: original re-injected
     * at once, so nothing waits for a person while memory is short. */
    NKE_RELEASE_BUDGET      = 5,
    /* The socket is closing or shutting down its sending side: held outbound
     * data was re-injected as it was (the stack refuses it afterwards), held
     * inbound data discarded (nobody will read it). */
    NKE_RELEASE_SOCKET_CLOSING = 6
};

struct nke_nt_chunk_released {
    struct nke_nt_hdr hdr;
    uint64_t chunk_id;
    uint32_t reason;          /* enum nke_release_reason */
    uint32_t size;
};
NKE_ASSERT_SIZE(struct nke_nt_chunk_released, 40);
NKE_ASSERT_OFF(struct nke_nt_chunk_released, chunk_id, 24);
NKE_ASSERT_OFF(struct nke_nt_chunk_released, reason, 32);
NKE_ASSERT_OFF(struct nke_nt_chunk_released, size, 36);

/* Filter counters, in NKE_NT_STATE and NKE_SEL_GET_STATE. */
#define NKE_STATE_F_CLIENT   0x1u  /* a client is connected */
#define NKE_STATE_F_CAPTURE  0x2u  /* capture mode is not NOTHING */

struct nke_filter_state {
    uint32_t abi_version;
    uint32_t flags;               /* NKE_STATE_F_* */
    uint32_t capture_mode;        /* enum nke_capture_mode */
    uint32_t sockets_live;
    uint32_t chunks_pending;      /* held, awaiting a verdict */
    uint32_t buffers_in_use;
    uint64_t sockets_attached;    /* totals since load */
    uint64_t chunks_held;
    uint64_t chunks_reported;
    uint64_t chunks_passed_pool_full; /* fail-open: no buffer, passed untouched */
    uint64_t chunks_auto_released;
    uint64_t chunks_dropped;
    uint64_t chunks_modified;
    uint64_t bytes_held;
    uint64_t responses_rejected;
    uint64_t notifications_lost;  /* queue full */
    uint64_t sockets_untracked;   /* socket table full: not filtered */
    /* Response entries (verdicts, releases) naming a chunk the filter had
     * already released (deadline, socket gone): skipped, not an error. A
     * client whose verdict came too late sees it here. */
    uint64_t stale_entries;
    /* Stream order and byte budget (kext/core/nke_order.h). */
    uint64_t bytes_kept;          /* now: held, queued behind held, staged edits, being re-injected */
    uint64_t chunks_queued;       /* total: would have passed, waited behind held data of their socket */
    uint64_t chunks_passed_budget; /* total: not held because bytes_kept would pass NKE_KEPT_BYTES_MAX */
};
NKE_ASSERT_SIZE(struct nke_filter_state, 144);
NKE_ASSERT_OFF(struct nke_filter_state, sockets_live, 12);
NKE_ASSERT_OFF(struct nke_filter_state, chunks_pending, 16);
NKE_ASSERT_OFF(struct nke_filter_state, buffers_in_use, 20);
NKE_ASSERT_OFF(struct nke_filter_state, sockets_attached, 24);
NKE_ASSERT_OFF(struct nke_filter_state, chunks_held, 32);
NKE_ASSERT_OFF(struct nke_filter_state, chunks_passed_pool_full, 48);
NKE_ASSERT_OFF(struct nke_filter_state, responses_rejected, 88);
NKE_ASSERT_OFF(struct nke_filter_state, notifications_lost, 96);
NKE_ASSERT_OFF(struct nke_filter_state, sockets_untracked, 104);
NKE_ASSERT_OFF(struct nke_filter_state, stale_entries, 112);
NKE_ASSERT_OFF(struct nke_filter_state, bytes_kept, 120);
NKE_ASSERT_OFF(struct nke_filter_state, chunks_queued, 128);
NKE_ASSERT_OFF(struct nke_filter_state, chunks_passed_budget, 136);

/*
 * Byte budget: the most bytes of socket data the filter keeps at once on the
 * client's behalf (held chunks, data queued behind them to keep each
 * socket's stream order, staged edits, and bytes on their way back into the
 * stack). A chunk that would pass it is not held; staging that would pass it
 * is refused with NKE_ERR_NO_MEMORY; data that must queue behind a held
 * chunk is kept anyway (order first) and that socket's held chunks are
 * released (NKE_RELEASE_BUDGET).
 */
#define NKE_KEPT_BYTES_MAX (32u * 1024u * 1024u)

struct nke_nt_state {
    struct nke_nt_hdr hdr;
    struct nke_filter_state state;
};
NKE_ASSERT_SIZE(struct nke_nt_state, 168);
NKE_ASSERT_OFF(struct nke_nt_state, state, 24);

/* Largest notification record: sizes a dequeue buffer. */
#define NKE_NT_MAX_SIZE 168u

/* ------------------------------------------------------------------------ */
/* Responses (client -> kernel): NKE_SEL_RESPOND                             */
/* ------------------------------------------------------------------------ */

/*
 * Buffer ownership: a chunk's buffers belong to the client from the
 * NKE_NT_DATA notification until the client lists them in a release entry, or
 * until the filter auto-releases the chunk (NKE_NT_CHUNK_RELEASED). A verdict
 * alone does not release buffers; a client normally sends both together.
 * Entries naming a chunk the filter no longer knows (it was auto-released
 * meanwhile) are stale: skipped and counted in stale_entries, not an error,
 * before any other check of the entry but its own fields' (reserved bits,
 * action, buffer range): a stale release whose buffer now belongs to a newer
 * chunk, released in the same response, is not a duplicate.
 *
 * NKE_ACT_EXTEND is not a verdict: the chunk stays held and only its deadline
 * moves, to `hold_ms` after the moment the filter held it (so the client can
 * tell the real deadline without knowing the filter's clock), and never
 * earlier than it already is. hold_ms is 1..NKE_HOLD_TOTAL_MAX_MS: however
 * often a client extends, no chunk is held longer than that in total (the
 * filter still fails open when a person leaves an editor open). One verdict
 * or extend per chunk per response; an EXTEND on a reported or decided chunk
 * is NKE_ERR_NOT_HELD.
 */
enum nke_action {
    NKE_ACT_ALLOW          = 1, /* re-inject the original bytes */
    NKE_ACT_ALLOW_MODIFIED = 2, /* re-inject the bytes staged with NKE_SEL_PUT_DATA */
    NKE_ACT_DROP           = 3, /* discard */
    NKE_ACT_EXTEND         = 4  /* keep holding: deadline = held time + hold_ms */
};

/* Hard cap on the total hold of one chunk (NKE_ACT_EXTEND's hold_ms). */
#define NKE_HOLD_TOTAL_MAX_MS 600000u

struct nke_response_hdr {
    uint32_t abi_version;
    uint32_t size;            /* whole message: header + verdicts + releases */
    uint16_t nverdicts;
    uint16_t nreleases;
    uint32_t flags;           /* must be 0 */
};
NKE_ASSERT_SIZE(struct nke_response_hdr, 16);
NKE_ASSERT_OFF(struct nke_response_hdr, size, 4);
NKE_ASSERT_OFF(struct nke_response_hdr, nverdicts, 8);
NKE_ASSERT_OFF(struct nke_response_hdr, nreleases, 10);
NKE_ASSERT_OFF(struct nke_response_hdr, flags, 12);

struct nke_verdict {
    uint64_t chunk_id;
    struct nke_sock_id sock;  /* must match the chunk's socket */
    uint8_t  action;          /* enum nke_action */
    uint8_t  _pad0[3];
    union {                   /* the one argument of the action */
        uint32_t modified_len; /* ALLOW_MODIFIED: total staged bytes; 0 for ALLOW and DROP */
        uint32_t hold_ms;      /* EXTEND: total hold wanted, ms from when the chunk was held */
    };
};
NKE_ASSERT_SIZE(struct nke_verdict, 24);
NKE_ASSERT_OFF(struct nke_verdict, sock, 8);
NKE_ASSERT_OFF(struct nke_verdict, action, 16);
NKE_ASSERT_OFF(struct nke_verdict, modified_len, 20);
NKE_ASSERT_OFF(struct nke_verdict, hold_ms, 20);
NKE_STATIC_ASSERT(sizeof(((struct nke_verdict *)0)->hold_ms) == 4, "ABI size of nke_verdict.hold_ms");

struct nke_release {
    uint64_t chunk_id;        /* the chunk the buffer was announced with */
    uint16_t buffer;
    uint16_t _pad0;
    uint32_t _pad1;
};
NKE_ASSERT_SIZE(struct nke_release, 16);
NKE_ASSERT_OFF(struct nke_release, buffer, 8);

#define NKE_RESPONSE_MAX_VERDICTS 256u
#define NKE_RESPONSE_MAX_RELEASES (NKE_BUFFER_COUNT * 2u)
#define NKE_RESPONSE_MAX_SIZE \
    (sizeof(struct nke_response_hdr) + NKE_RESPONSE_MAX_VERDICTS * sizeof(struct nke_verdict) + \
     NKE_RESPONSE_MAX_RELEASES * sizeof(struct nke_release))

/* Modified bytes of any length, staged in order before an ALLOW_MODIFIED verdict. */
struct nke_put_data_hdr {
    uint64_t chunk_id;
    struct nke_sock_id sock;
    uint32_t total_len;       /* final length of the modified data, may be 0 */
    uint32_t offset;          /* must equal the bytes staged so far */
    uint32_t len;             /* bytes following this header */
    uint32_t _pad0;
};
NKE_ASSERT_SIZE(struct nke_put_data_hdr, 32);
NKE_ASSERT_OFF(struct nke_put_data_hdr, sock, 8);
NKE_ASSERT_OFF(struct nke_put_data_hdr, total_len, 16);
NKE_ASSERT_OFF(struct nke_put_data_hdr, offset, 20);
NKE_ASSERT_OFF(struct nke_put_data_hdr, len, 24);

#define NKE_PUT_DATA_MAX_PIECE (60u * 1024u)       /* bytes per NKE_SEL_PUT_DATA call */
#define NKE_MODIFIED_MAX_LEN   (16u * 1024u * 1024u)

/* ------------------------------------------------------------------------ */
/* Capture mode and rules: NKE_SEL_SET_CAPTURE                               */
/* ------------------------------------------------------------------------ */

enum nke_capture_mode {
    NKE_CAPTURE_NOTHING = 0,  /* socket events only; no data held or reported */
    NKE_CAPTURE_ALL     = 1,  /* every data chunk held */
    NKE_CAPTURE_RULES   = 2   /* first matching rule decides; else default_action */
};

enum nke_rule_action {
    NKE_RULE_PASS   = 0,      /* neither held nor reported */
    NKE_RULE_REPORT = 1,      /* copied to buffers and reported, not held */
    NKE_RULE_HOLD   = 2       /* held for a verdict */
};
/* nke_nt_data.rule when no rule decided: the default action did. */
#define NKE_RULE_DEFAULT 0xFFFFu

/* Which fields of a rule take part in matching. */
#define NKE_MATCH_PID         0x001u
#define NKE_MATCH_COMM        0x002u
#define NKE_MATCH_DIRECTION   0x004u
#define NKE_MATCH_PROTOCOL    0x008u
#define NKE_MATCH_LOCAL_PORT  0x010u
#define NKE_MATCH_REMOTE_PORT 0x020u
#define NKE_MATCH_LOCAL_ADDR  0x040u
#define NKE_MATCH_REMOTE_ADDR 0x080u
#define NKE_MATCH_FAMILY      0x100u
#define NKE_MATCH_ALL_FIELDS  0x1FFu

struct nke_rule {
    uint32_t match;           /* NKE_MATCH_* */
    uint8_t  action;          /* enum nke_rule_action */
    uint8_t  direction;       /* bitmask of enum nke_direction */
    uint8_t  protocol;        /* NKE_PROTO_* */
    uint8_t  family;          /* NKE_AF_* */
    int32_t  pid;
    uint16_t local_port_min, local_port_max;   /* inclusive, host order */
    uint16_t remote_port_min, remote_port_max;
    uint8_t  local_prefix;    /* prefix length in bits over local_addr */
    uint8_t  remote_prefix;
    uint16_t _pad0;
    uint8_t  local_addr[16];  /* network order; IPv4 in the first 4 bytes */
    uint8_t  remote_addr[16];
    char     comm[NKE_COMM_LEN]; /* exact process name, NUL-terminated */
};
NKE_ASSERT_SIZE(struct nke_rule, 88);
NKE_ASSERT_OFF(struct nke_rule, action, 4);
NKE_ASSERT_OFF(struct nke_rule, direction, 5);
NKE_ASSERT_OFF(struct nke_rule, protocol, 6);
NKE_ASSERT_OFF(struct nke_rule, family, 7);
NKE_ASSERT_OFF(struct nke_rule, pid, 8);
NKE_ASSERT_OFF(struct nke_rule, local_port_min, 12);
NKE_ASSERT_OFF(struct nke_rule, local_port_max, 14);
NKE_ASSERT_OFF(struct nke_rule, remote_port_min, 16);
NKE_ASSERT_OFF(struct nke_rule, remote_port_max, 18);
NKE_ASSERT_OFF(struct nke_rule, local_prefix, 20);
NKE_ASSERT_OFF(struct nke_rule, remote_prefix, 21);
NKE_ASSERT_OFF(struct nke_rule, local_addr, 24);
NKE_ASSERT_OFF(struct nke_rule, remote_addr, 40);
NKE_ASSERT_OFF(struct nke_rule, comm, 56);

#define NKE_MAX_RULES 64u
#define NKE_HOLD_TIMEOUT_DEFAULT_MS 5000u
#define NKE_HOLD_TIMEOUT_MAX_MS     600000u
/* A chunk's first deadline is within the cap that EXTEND is held to. */
NKE_STATIC_ASSERT(NKE_HOLD_TIMEOUT_MAX_MS <= NKE_HOLD_TOTAL_MAX_MS, "hold timeout within the total hold cap");
/* The cap is a deadline in ms that fits nke_verdict.hold_ms and is still
 * fail-open on a human scale: at most an hour. */
NKE_STATIC_ASSERT(NKE_HOLD_TOTAL_MAX_MS >= 1u && NKE_HOLD_TOTAL_MAX_MS <= 3600000u,
                  "total hold cap between 1 ms and an hour");

struct nke_capture_config {
    uint32_t abi_version;
    uint32_t mode;            /* enum nke_capture_mode */
    uint32_t default_action;  /* enum nke_rule_action, for RULES when nothing matches */
    uint32_t hold_timeout_ms; /* deadline of a held chunk; 0 = NKE_HOLD_TIMEOUT_DEFAULT_MS */
    uint32_t nrules;
    uint32_t tag;             /* the client's name for this config, echoed in nke_nt_data.capture_tag */
    struct nke_rule rules[NKE_MAX_RULES];
};
NKE_ASSERT_SIZE(struct nke_capture_config, 24 + 88 * 64);
NKE_ASSERT_OFF(struct nke_capture_config, mode, 4);
NKE_ASSERT_OFF(struct nke_capture_config, default_action, 8);
NKE_ASSERT_OFF(struct nke_capture_config, hold_timeout_ms, 12);
NKE_ASSERT_OFF(struct nke_capture_config, nrules, 16);
NKE_ASSERT_OFF(struct nke_capture_config, tag, 20);
NKE_ASSERT_OFF(struct nke_capture_config, rules, 24);

/* ------------------------------------------------------------------------ */
/* Errors returned by the user client (negated as IOReturn / errno by the    */
/* platform; the emulator returns them as is). Each rejection is distinct.   */
/* ------------------------------------------------------------------------ */

enum nke_error {
    NKE_OK                  = 0,
    NKE_ERR_VERSION         = 1,  /* abi_version differs */
    NKE_ERR_SIZE            = 2,  /* message size inconsistent with its counts */
    NKE_ERR_COUNT           = 3,  /* too many verdicts / releases / rules */
    NKE_ERR_FLAGS           = 4,  /* unknown flag bits */
    NKE_ERR_RESERVED        = 5,  /* a padding field is not zero */
    NKE_ERR_ACTION          = 6,  /* unknown verdict or rule action */
    NKE_ERR_SOCK            = 7,  /* socket id does not match the chunk */
    NKE_ERR_NOT_HELD        = 8,  /* verdict for a chunk that was only reported; EXTEND: or decided */
    NKE_ERR_DUP_VERDICT     = 9,  /* two verdicts for one chunk */
    NKE_ERR_MODIFIED_LEN    = 10, /* modified_len differs from the staged data */
    NKE_ERR_BUF_RANGE       = 11, /* buffer index >= NKE_BUFFER_COUNT */
    NKE_ERR_BUF_DUP         = 12, /* buffer listed twice in one response */
    NKE_ERR_BUF_DOUBLE      = 13, /* buffer of this chunk already released */
    NKE_ERR_BUF_FOREIGN     = 14, /* buffer does not belong to the chunk named */
    NKE_ERR_PUT_OFFSET      = 15, /* put-data piece out of order */
    NKE_ERR_PUT_LEN         = 16, /* put-data beyond total_len or limits */
    NKE_ERR_UNKNOWN_CHUNK   = 17, /* put-data for a chunk that is not held */
    NKE_ERR_MODE            = 18, /* unknown capture mode */
    NKE_ERR_RULE            = 19, /* malformed rule (ranges, prefix, comm) */
    NKE_ERR_NOT_PERMITTED   = 20, /* client is not an administrator / other uid */
    NKE_ERR_BUSY            = 21, /* another client is connected */
    NKE_ERR_SELECTOR        = 22, /* unknown method */
    NKE_ERR_NO_MEMORY       = 23,
    NKE_ERR_NOT_OPEN        = 24, /* method before a successful NKE_SEL_OPEN */
    NKE_ERR_HOLD_MS         = 25, /* EXTEND hold_ms is 0 or above NKE_HOLD_TOTAL_MAX_MS */
    NKE_ERR__COUNT
};

/* ------------------------------------------------------------------------ */
/* Exec events: kernel event messages                                        */
/* ------------------------------------------------------------------------ */

/* kern_event_msg as delivered on a PF_SYSTEM/SYSPROTO_EVENT socket (the
 * emulator's event socket delivers the same bytes). */
struct nke_kern_event_msg {
    uint32_t total_size;      /* header + data */
    uint32_t vendor_code;
    uint32_t kev_class;
    uint32_t kev_subclass;
    uint32_t id;              /* monotonically increasing */
    uint32_t event_code;
    /* event data follows */
};
#define NKE_KEV_HEADER_SIZE 24u
NKE_ASSERT_SIZE(struct nke_kern_event_msg, NKE_KEV_HEADER_SIZE);
NKE_ASSERT_OFF(struct nke_kern_event_msg, vendor_code, 4);
NKE_ASSERT_OFF(struct nke_kern_event_msg, kev_class, 8);
NKE_ASSERT_OFF(struct nke_kern_event_msg, kev_subclass, 12);
NKE_ASSERT_OFF(struct nke_kern_event_msg, id, 16);
NKE_ASSERT_OFF(struct nke_kern_event_msg, event_code, 20);

#define NKE_KEV_CLASS           1u
#define NKE_KEV_SUBCLASS_EXEC   1u
#define NKE_KEV_EVENT_EXEC      1u
/* Total kern_event_msg limits (MLEN): x86_64, and arm64 since xnu-10002. */
#define NKE_KEV_MSG_LIMIT_X86_64 224u
#define NKE_KEV_MSG_LIMIT_ARM64  288u
/* Longest exec path an event carries, NUL included: the larger host limit
 * (Linux PATH_MAX 4096; the kext never sends more than macOS MAXPATHLEN 1024).
 * A longer path is sent cut to NKE_PATH_MAX - 1 bytes and flagged
 * NKE_EXEC_F_TRUNCATED, never dropped. 4095 bytes in 176-byte pieces (the x86_64
 * limit) are 24 messages, within NKE_KEV_MAX_CHUNKS. */
#define NKE_PATH_MAX            4096u
#define NKE_KEV_MAX_CHUNKS      64u

/* Flags of nke_kev_exec_chunk. */
#define NKE_EXEC_F_SPAWNER_CONTEXT 0x1u /* posix_spawn: pid/uid are the spawner's */
#define NKE_EXEC_F_FROM_SHIM       0x2u /* emulator: seen by the shim's execve */
#define NKE_EXEC_F_TRUNCATED       0x4u /* the path was longer: these are its first total_len bytes */

/* Event data of one NKE_KEV_EVENT_EXEC message; path bytes follow. The path
 * (no NUL) of total_len bytes is split in chunk_count pieces, each at offset. */
struct nke_kev_exec_chunk {
    uint32_t exec_id;         /* per filter, identifies one exec across chunks */
    int32_t  pid;
    int32_t  ppid;
    uint32_t uid;
    uint16_t total_len;       /* path bytes sent, < NKE_PATH_MAX (see NKE_EXEC_F_TRUNCATED) */
    uint16_t offset;          /* of this piece in the path */
    uint8_t  chunk_index;
    uint8_t  chunk_count;     /* 1..NKE_KEV_MAX_CHUNKS */
    uint16_t flags;           /* NKE_EXEC_F_* */
};
#define NKE_KEV_EXEC_CHUNK_HEADER_SIZE 24u
NKE_ASSERT_SIZE(struct nke_kev_exec_chunk, NKE_KEV_EXEC_CHUNK_HEADER_SIZE);
NKE_ASSERT_OFF(struct nke_kev_exec_chunk, pid, 4);
NKE_ASSERT_OFF(struct nke_kev_exec_chunk, ppid, 8);
NKE_ASSERT_OFF(struct nke_kev_exec_chunk, uid, 12);
NKE_ASSERT_OFF(struct nke_kev_exec_chunk, total_len, 16);
NKE_ASSERT_OFF(struct nke_kev_exec_chunk, offset, 18);
NKE_ASSERT_OFF(struct nke_kev_exec_chunk, chunk_index, 20);
NKE_ASSERT_OFF(struct nke_kev_exec_chunk, chunk_count, 21);
NKE_ASSERT_OFF(struct nke_kev_exec_chunk, flags, 22);

#ifdef __cplusplus
}
#endif

#endif /* NKE_ABI_H */

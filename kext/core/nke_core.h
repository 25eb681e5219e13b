/*
 * kext/core: the portable heart of the NKE Workbench filter.
 *
 * Compiled into the kext (kext/macos), into the Linux emulator (native/emu)
 * and, for the queue consumer and the kev reassembler, into the addon
 * (native/addon). C11, no libc allocation, no kernel calls: the platform
 * supplies every byte of memory and does every OS operation through
 * `struct nke_core_ops`.
 *
 * Locking: nothing in here locks. The platform serializes every call on one
 * `struct nke_core` with its own lock (kext: one lck_mtx; emulator: its event
 * loop thread). Callbacks in nke_core_ops run with that lock held and must not
 * call back into the core, but for nke_core_item_done from ops->finish. The
 * queue consumer (nke_dq_dequeue) and the kev
 * reassembler have no shared state with the core and run on the client side.
 */
#ifndef NKE_CORE_H
#define NKE_CORE_H

#include <nke/nke_abi.h>
#include "nke_order.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef __cplusplus
#include <stdbool.h>
#endif

/* ======================================================================== */
/* Notification queue in the IODataQueueMemory layout                        */
/* ======================================================================== */
/*
 * Same algorithm as IOSharedDataQueue: entries are 4-byte aligned
 * (NKE_DQ_ENTRY_HEADER_SIZE + size, rounded up); an entry that does not fit
 * before the end is written at offset 0, and when a header fits at the old
 * tail its size field is set so the consumer knows to wrap. One producer, one
 * consumer, no locks: head is written only by the consumer, tail only by the
 * producer, with release/acquire ordering.
 *
 * `data_size` is always the size the caller allocated and trusts, never the
 * queue_size field in shared memory (the other side may forge it).
 */
void nke_dq_init(struct nke_dq_memory *q, uint32_t data_size);

/* Producer. Returns NKE_OK, or NKE_ERR_NO_MEMORY when the entry does not fit
 * (the caller counts a lost notification). *was_empty tells whether the
 * consumer must be woken (IOSharedDataQueue notifies on empty -> non-empty). */
int nke_dq_enqueue(struct nke_dq_memory *q, uint32_t data_size, const void *data, uint32_t len,
                   bool *was_empty);

enum nke_dq_result {
    NKE_DQ_EMPTY   = 0,
    NKE_DQ_OK      = 1,
    NKE_DQ_CORRUPT = -1, /* head/tail/size forged or torn: the consumer must reset or close */
    NKE_DQ_TOOBIG  = -2  /* entry larger than `cap`: skipped, head advanced */
};
/* Consumer. Copies the next entry into out[0..cap) and advances head. Every
 * offset and size read from shared memory is bounds-checked against data_size
 * before use; a hostile queue yields NKE_DQ_CORRUPT, never a wild access. */
int nke_dq_dequeue(struct nke_dq_memory *q, uint32_t data_size, void *out, uint32_t cap,
                   uint32_t *len);

/* ======================================================================== */
/* Buffer pool                                                               */
/* ======================================================================== */

struct nke_pool {
    uint64_t owner[NKE_BUFFER_COUNT];      /* chunk id holding each buffer; 0 = free */
    uint16_t free_stack[NKE_BUFFER_COUNT]; /* free buffer indices, top at nfree-1 */
    uint32_t nfree;
};

void nke_pool_init(struct nke_pool *p);
/* Allocates `n` (1..NKE_CHUNK_MAX_BUFFERS) buffers for chunk_id, all or none.
 * out[] is filled with the indices and NKE_BUF_NONE after the last.
 * Returns NKE_OK or NKE_ERR_NO_MEMORY. */
int nke_pool_alloc(struct nke_pool *p, uint64_t chunk_id, uint32_t n,
                   uint16_t out[NKE_CHUNK_MAX_BUFFERS]);
/* Checks that `buf` may be released on behalf of chunk_id: NKE_OK,
 * NKE_ERR_BUF_RANGE (index out of range), NKE_ERR_BUF_DOUBLE (buffer is free)
 * or NKE_ERR_BUF_FOREIGN (another chunk owns it). No state change. */
int nke_pool_check(const struct nke_pool *p, uint64_t chunk_id, uint32_t buf);
/* NKE_OK, NKE_ERR_BUF_RANGE or NKE_ERR_BUF_DOUBLE (already free: nothing changed). */
int nke_pool_free(struct nke_pool *p, uint16_t buf);
uint32_t nke_pool_in_use(const struct nke_pool *p);

/* ======================================================================== */
/* Rules                                                                     */
/* ======================================================================== */

/* What a rule sees of one piece of data. */
struct nke_flow {
    int32_t pid;
    char comm[NKE_COMM_LEN];
    uint8_t direction;         /* enum nke_direction */
    uint8_t protocol;          /* NKE_PROTO_* */
    uint8_t family;            /* NKE_AF_* */
    struct nke_addr local;
    struct nke_addr remote;
};

/* NKE_OK or the distinct error for a malformed config: NKE_ERR_SIZE (size
 * below the header + nrules rules, or above the struct), NKE_ERR_VERSION,
 * NKE_ERR_MODE (unknown mode, or hold_timeout_ms above
 * NKE_HOLD_TIMEOUT_MAX_MS: the ABI has no code of its own for it),
 * NKE_ERR_ACTION, NKE_ERR_COUNT; per rule NKE_ERR_FLAGS (unknown match bits),
 * NKE_ERR_ACTION, NKE_ERR_RESERVED, NKE_ERR_RULE (comm unterminated or empty
 * when matched, direction/protocol/family invalid, port min > max, prefix too
 * long). Address rules match only flows whose address family is known. */
int nke_capture_validate(const struct nke_capture_config *cfg, uint32_t size);
/* enum nke_rule_action for a flow under a validated config; *rule (may be
 * NULL) is the index of the rule that decided, or NKE_RULE_DEFAULT. */
uint32_t nke_capture_classify(const struct nke_capture_config *cfg, const struct nke_flow *f,
                              uint16_t *rule);

/* ======================================================================== */
/* The filter core                                                           */
/* ======================================================================== */

struct nke_core;

/* Platform operations. `sock_ctx` is the platform's per-socket pointer given
 * at attach (kext: socket_t + its filter cookie; emulator: the shim link);
 * `data_ctx` the platform's handle on one kept piece of data (kext: the
 * deferred mbuf chain; emulator: the shim's pending write/read), a record
 * whose first member is a struct nke_order_item (nke_order.h). */
struct nke_core_ops {
    /* Enqueue one notification record; false when the queue is full (the
     * core counts stats.notifications_lost). Called only while a client is
     * open. A NKE_NT_DATA record that cannot be queued is undone: the data
     * passes untouched. */
    bool (*emit)(void *platform, const void *rec, uint32_t size);
    /* Copy `len` bytes at `offset` of the data into `dst` (a shared buffer). */
    void (*copy_data)(void *platform, void *data_ctx, uint32_t offset, uint32_t len, void *dst);
    /* A kept piece's turn has come (stream order: everything before it on
     * its socket direction was handed back already): re-inject the original
     * (NKE_ACT_ALLOW), the staged bytes (NKE_ACT_ALLOW_MODIFIED: `staged`
     * from put_data, `staged_len` bytes) or discard (NKE_ACT_DROP). `reason` is
     * 0 for a client verdict or data queued behind, else enum
     * nke_release_reason. Ownership of data_ctx and staged returns to the
     * platform, which calls nke_core_item_done(data_ctx) when it is done
     * (from here, or after its re-injection). */
    void (*finish)(void *platform, void *sock_ctx, void *data_ctx, uint32_t action,
                   void *staged, uint32_t staged_len, uint32_t reason);
    /* Stage `len` bytes of modified data at `offset` for a held chunk.
     * *staged is NULL on the first piece (offset 0; a restart at offset 0
     * first hands the old staging to unstage); the platform allocates
     * total_len bytes then. Returns NKE_OK or NKE_ERR_NO_MEMORY; on failure
     * the core passes any non-NULL *staged to unstage and the client must
     * restart at offset 0. The core never frees: staged bytes go back through
     * finish (ALLOW_MODIFIED only) or unstage. */
    int (*stage)(void *platform, void **staged, uint32_t total_len, uint32_t offset,
                 const void *bytes, uint32_t len);
    /* Discard staged bytes that will never be used (chunk gone). */
    void (*unstage)(void *platform, void *staged);
};

struct nke_sock_info {
    int32_t pid;
    uint32_t uid;
    uint8_t family, type, protocol;
    char comm[NKE_COMM_LEN];
};

enum nke_chunk_state {
    NKE_CHUNK_FREE     = 0,
    NKE_CHUNK_HELD     = 1, /* awaiting a verdict; data_ctx owned by the core */
    NKE_CHUNK_REPORTED = 2, /* copied and reported only; buffers still the client's */
    NKE_CHUNK_DECIDED  = 3  /* verdict applied; waiting for the client to release buffers */
};

/* Chunk table. A held chunk is limited by this table, not by the buffer pool:
 * the client may release a held chunk's buffers before its verdict (the
 * kext keeps the deferred mbuf chain, the emulator the shim's pending data),
 * so many more chunks than NKE_BUFFER_COUNT can be held at once. Chunk ids
 * are issued so that (id & (NKE_CHUNK_TABLE_SIZE - 1)) is the chunk's slot:
 * lookup by id is O(1). Ids still only grow and are never reused (they skip
 * forward to the next free slot's residue). Table full -> the data passes
 * and is counted in stats.chunks_passed_pool_full (no room to hold it, like
 * an exhausted buffer pool). Memory: about 88 bytes per entry in struct
 * nke_core (kext: IOMalloc'd once at start). */
#ifndef NKE_CHUNK_TABLE_SIZE
#define NKE_CHUNK_TABLE_SIZE 1024u
#endif
#define NKE_CHUNK_NONE 0xFFFFu /* end of the held list */

struct nke_chunk {
    uint64_t id;
    struct nke_sock_id sock;
    uint32_t state;            /* enum nke_chunk_state */
    uint32_t size;
    uint8_t direction;
    uint8_t nbuffers;
    uint8_t released_mask;     /* bit i: buffers[i] already released */
    uint8_t staging;           /* put_data has begun (staged may be NULL for 0 bytes) */
    uint16_t buffers[NKE_CHUNK_MAX_BUFFERS];
    uint64_t deadline_ms;      /* HELD only */
    uint64_t held_at_ms;       /* HELD only: when held; EXTEND's hold_ms counts from here */
    void *data_ctx;            /* HELD only */
    void *staged;              /* put_data staging, owned by the platform's allocator */
    uint32_t staged_len, staged_total;
    int32_t pid;               /* of the socket at data time, for the platform's logs */
    uint16_t held_prev, held_next; /* HELD only: the held list (slot indices) */
};

enum nke_sock_state_flags {
    NKE_SOCK_LIVE       = 0x1,
    NKE_SOCK_CONNECTED  = 0x2,
    NKE_SOCK_LISTENING  = 0x4,
    NKE_SOCK_DETACHING  = 0x8,
    /* The platform may not defer this socket's data (kext: an in-kernel
     * socket, or one with SO_UPCALLCLOSEWAIT): its data is reported at most,
     * never held or queued. */
    NKE_SOCK_NO_DEFER   = 0x10,
    /* Accepted (NKE_NT_CONNECT_IN), not connected by its process. */
    NKE_SOCK_INCOMING   = 0x20,
    /* Attach replay (nke_core_client_open): what of this socket a client
     * that opened after it attached has still to be told. Each is cleared
     * once its record is in the queue. */
    NKE_SOCK_REPLAY_ATTACH = 0x40,
    NKE_SOCK_REPLAY_ADDRS  = 0x80,
    NKE_SOCK_REPLAY_CONNECTED = 0x100,
    NKE_SOCK_REPLAY_CLOSING   = 0x200,
    /* The handshake is done (NKE_EV_CONNECTED, or accepted): CONNECTED alone
     * is set from the connect call on. */
    NKE_SOCK_ESTABLISHED   = 0x400
};
#define NKE_SOCK_REPLAY_ANY \
    (NKE_SOCK_REPLAY_ATTACH | NKE_SOCK_REPLAY_ADDRS | NKE_SOCK_REPLAY_CONNECTED | NKE_SOCK_REPLAY_CLOSING)

struct nke_sock {
    uint32_t gen;              /* generation; kept when the slot is freed, bumped on reuse */
    uint32_t flags;            /* enum nke_sock_state_flags; 0 = slot free */
    struct nke_sock_info info;
    struct nke_addr local, remote;
    uint64_t bytes_in, bytes_out;          /* seen by the filter */
    uint64_t offset_in, offset_out;        /* stream offset of the next chunk */
    uint32_t held;                          /* chunks HELD on this socket */
    void *ctx;                              /* platform's per-socket pointer */
    struct nke_order_queue order[2];        /* [direction - 1]: kept data, stream order */
};

struct nke_core {
    const struct nke_core_ops *ops;
    void *platform;
    uint8_t *buffers;          /* NKE_BUFFER_COUNT * NKE_BUFFER_SIZE shared bytes */
    struct nke_sock *socks;    /* caller-supplied table */
    uint32_t nsocks;
    uint32_t sock_free_hint;
    bool client_open;
    uint64_t session_id;
    uint64_t next_chunk_id;    /* starts at 1, never reused */
    uint32_t kev_vendor_code;
    uint32_t kev_msg_limit;
    struct nke_pool pool;
    struct nke_chunk chunks[NKE_CHUNK_TABLE_SIZE]; /* slot = id & (SIZE - 1) */
    /* Free slots, a FIFO ring (oldest freed first keeps ids dense). */
    uint16_t chunk_free[NKE_CHUNK_TABLE_SIZE];
    uint32_t chunk_free_head, nchunk_free;
    uint32_t nheld;                                /* chunks on the held list */
    uint16_t held_head, held_tail;                 /* HELD chunks, oldest first */
    struct nke_capture_config capture;
    struct nke_filter_state stats;
    /* Attach replay: the next slot to replay (0: done). */
    uint32_t replay_next;
};

/* `socks` must hold `nsocks` zeroed entries (slot 0 is never used, so a zero
 * nke_sock_id means "none"). */
void nke_core_init(struct nke_core *c, const struct nke_core_ops *ops, void *platform,
                   uint8_t *buffers, struct nke_sock *socks, uint32_t nsocks,
                   uint32_t kev_vendor_code, uint32_t kev_msg_limit);

/* --- user client --------------------------------------------------------- */
/* The selector contract (nke_abi.h, above enum nke_selector), checked by
 * the kext and nke-emud before they dispatch: NKE_ERR_SELECTOR for an
 * unknown selector, NKE_OK for NKE_SEL_OPEN (nke_core_client_open decides
 * BUSY), NKE_ERR_NOT_OPEN for any other selector unless the caller is the
 * open client, NKE_OK then. */
int nke_core_selector_check(uint32_t selector, bool caller_is_open_client);
/* NKE_OK, NKE_ERR_BUSY, NKE_ERR_VERSION, NKE_ERR_RESERVED, NKE_ERR_FLAGS. */
int nke_core_client_open(struct nke_core *c, const struct nke_open_request *req,
                         struct nke_open_reply *reply, uint64_t session_id);
/* Close or death of the client: every held chunk re-injected as original
 * (ops->finish ALLOW, reason NKE_RELEASE_CLIENT_GONE; NKE_NT_CHUNK_RELEASED
 * records are still offered to ops->emit), staged bytes unstaged, every
 * buffer freed, capture mode back to NOTHING. Fail-open. */
void nke_core_client_close(struct nke_core *c);

/* Response (NKE_SEL_RESPOND). The whole message is validated first; a
 * malformed one returns its distinct error and changes nothing but
 * stats.responses_rejected, and calls no op. Then verdicts are applied
 * (ops->finish, reason 0) and buffers released. Errors, in check order:
 * NOT_OPEN, SIZE (short), VERSION, FLAGS, COUNT, SIZE (size/counts);
 * per verdict RESERVED, ACTION, UNKNOWN_CHUNK (id never issued), SOCK,
 * NOT_HELD (reported only; EXTEND: or decided), DUP_VERDICT (twice here or
 * already decided), MODIFIED_LEN (EXTEND: HOLD_MS, hold_ms 0 or above
 * NKE_HOLD_TOTAL_MAX_MS); per release RESERVED, BUF_RANGE, UNKNOWN_CHUNK,
 * BUF_DUP, BUF_FOREIGN, BUF_DOUBLE. Entries naming a chunk that was issued but
 * auto-released meanwhile are stale: skipped right after UNKNOWN_CHUNK
 * (before SOCK / DUP_VERDICT / BUF_DUP, so a stale release of a buffer now
 * reused by a live chunk of the same response refuses nothing) and counted
 * in stats.stale_entries. An EXTEND moves a held chunk's deadline to
 * held_at_ms + hold_ms when that is later; the platform's timer, armed for
 * the earlier deadline, finds nothing due then and re-arms from
 * nke_core_expire's answer. Messages may be unaligned. */
int nke_core_validate_response(const struct nke_core *c, const void *msg, uint32_t size);
int nke_core_respond(struct nke_core *c, const void *msg, uint32_t size);
/* NKE_SEL_PUT_DATA: nke_put_data_hdr + len bytes. Errors: NOT_OPEN, SIZE,
 * RESERVED, PUT_LEN (piece > NKE_PUT_DATA_MAX_PIECE, total >
 * NKE_MODIFIED_MAX_LEN, total changed mid-staging, beyond total),
 * UNKNOWN_CHUNK (not HELD), SOCK, PUT_OFFSET (offset != bytes staged so far;
 * offset 0 restarts), NO_MEMORY (ops->stage failed; or, as a rejection,
 * a staging at offset 0 whose total_len would take stats.bytes_kept past
 * NKE_KEPT_BYTES_MAX). Rejections change nothing but
 * stats.responses_rejected. */
int nke_core_put_data(struct nke_core *c, const void *msg, uint32_t size);
/* NKE_SEL_SET_CAPTURE: `size` may cover only the nrules rules in use.
 * NOT_OPEN or nke_capture_validate's error; the old config stays then. */
int nke_core_set_capture(struct nke_core *c, const struct nke_capture_config *cfg, uint32_t size);
void nke_core_get_state(const struct nke_core *c, struct nke_filter_state *out);
/* Emits an NKE_NT_STATE record (e.g. once a second while a client is open). */
void nke_core_emit_state(struct nke_core *c, uint64_t now_ns);

/* --- socket filter callbacks --------------------------------------------- */
/* Returns the new socket's id; {0,0} when the table is full (the socket is
 * then not filtered: counted in sockets_untracked). Emits NKE_NT_ATTACH. */
struct nke_sock_id nke_core_attach(struct nke_core *c, const struct nke_sock_info *info,
                                   void *sock_ctx, uint64_t now_ns);
/* Held chunks of the socket are finished with NKE_ACT_DROP and
 * NKE_RELEASE_SOCKET_GONE, announced with NKE_NT_CHUNK_RELEASED and their
 * buffers reclaimed (the platform must have drained its in-flight
 * injections first). Reported/decided chunks keep their buffers until the
 * client releases them. Emits NKE_NT_DETACH and frees the slot. */
void nke_core_detach(struct nke_core *c, struct nke_sock_id id, uint64_t now_ns);
/* NKE_NT_CONNECT_IN/OUT, BOUND, LISTEN; updates the socket's addresses
 * (either may be NULL: unchanged). */
void nke_core_addrs(struct nke_core *c, struct nke_sock_id id, uint16_t type,
                    const struct nke_addr *local, const struct nke_addr *remote, uint64_t now_ns);
void nke_core_event(struct nke_core *c, struct nke_sock_id id, uint32_t event, uint64_t now_ns);
void nke_core_option(struct nke_core *c, struct nke_sock_id id, uint32_t level, uint32_t name,
                     bool is_set, uint64_t now_ns);
struct nke_sock *nke_core_sock(struct nke_core *c, struct nke_sock_id id); /* NULL if stale */

enum nke_data_result {
    NKE_DATA_PASS     = 0, /* let the data through untouched */
    NKE_DATA_REPORTED = 1, /* copied and reported; let it through untouched */
    NKE_DATA_HELD     = 2, /* keep it (EJUSTRETURN): ops->finish will be called */
    /* Keep it (EJUSTRETURN) though it is not held: earlier data of its
     * socket direction is kept or in flight, and it must not overtake that.
     * The core owns data_ctx; ops->finish (ALLOW, reason 0) comes when its
     * turn does, possibly before nke_core_data returns. *chunk_id is set
     * when it was also reported. */
    NKE_DATA_QUEUED   = 3
};
/* Platform-only flags of nke_core_data (beyond the NKE_DATA_F_* ABI bits),
 * for one write the platform cut into several pieces: KEEP for the pieces
 * after a first one the core kept (held if the rules say so, else queued:
 * the platform has already taken the whole write), NO_HOLD for those after a
 * first one that passed (at most reported: the stack keeps the whole
 * write). */
#define NKE_CORE_DATA_F_KEEP    0x100u
#define NKE_CORE_DATA_F_NO_HOLD 0x200u
/* A piece of data in or out of `size` bytes. Held or reported only when
 * size is 1..NKE_CHUNK_MAX_BYTES (the platform splits larger data; a larger
 * datagram is passed, or queued). `flags` are NKE_DATA_F_DATAGRAM / _OOB /
 * _HAS_ADDR and the NKE_CORE_DATA_F_* above; `addr` may be NULL. Decides by
 * stream order first (nke_order.h: behind kept data it is QUEUED whatever
 * else says), then client presence, capture mode and the byte budget; on
 * buffer pool or chunk table exhaustion it is not held and counted
 * (chunks_passed_pool_full). Data the mode wanted reported or held but that
 * passes unreported (no buffer, or its NKE_NT_DATA record did not fit in the
 * queue) is announced with an NKE_NT_DATA_GAP record (socket, direction,
 * stream offset, size). *chunk_id is set when reported or held. */
int nke_core_data(struct nke_core *c, struct nke_sock_id id, uint8_t direction, uint32_t size,
                  uint32_t flags, const struct nke_addr *addr, void *data_ctx, uint64_t now_ms,
                  uint64_t now_ns, uint64_t *chunk_id);

/* Re-injects (original) every held chunk whose deadline passed
 * (NKE_RELEASE_TIMEOUT), emits NKE_NT_CHUNK_RELEASED and reclaims its
 * buffers (the client loses them, per the ABI). Also goes on with the
 * attach replay: a client that opens is told of every socket attached
 * before it (NKE_NT_ATTACH, then its addresses and a closing event as the
 * filter knows them), as the queue takes them; a socket's replay always
 * comes before any other record of it. Returns ms until the next deadline
 * (a few while the replay waits for room in the queue), or UINT32_MAX. */
uint32_t nke_core_expire(struct nke_core *c, uint64_t now_ms, uint64_t now_ns);

/* Releases every held chunk of one socket direction now, with `action`
 * (ALLOW or DROP) and `reason` (NKE_NT_CHUNK_RELEASED emitted, buffers
 * reclaimed, as at a deadline); the data queued behind follows in order.
 * The kext flushes a closing socket with it (NKE_RELEASE_SOCKET_CLOSING). */
void nke_core_release_socket(struct nke_core *c, struct nke_sock_id id, uint8_t direction,
                             uint32_t action, uint32_t reason, uint64_t now_ns);
/* Whether the socket's data may be deferred (NKE_SOCK_NO_DEFER): the kext
 * sets it for an in-kernel socket and clears it when the socket turns out
 * to be accepted by a process (sf_accept). */
void nke_core_sock_no_defer(struct nke_core *c, struct nke_sock_id id, bool no_defer);
/* The socket's process is now known to be info's pid/uid/comm (the kext's
 * sf_accept): updates the socket and emits NKE_NT_OWNER. Family, type and
 * protocol of info are ignored. */
void nke_core_set_owner(struct nke_core *c, struct nke_sock_id id, const struct nke_sock_info *info,
                        uint64_t now_ns);

/* ======================================================================== */
/* Exec events over kernel event messages                                    */
/* ======================================================================== */

/* Path bytes carried per message under a total size limit (24-byte
 * kern_event_msg header and nke_kev_exec_chunk included); 0 if the limit is
 * too small to carry any. */
uint32_t nke_kev_piece_size(uint32_t msg_limit);
/* Path bytes of a path_len-byte path that are sent: all of them, or the
 * first NKE_PATH_MAX - 1 (or what NKE_KEV_MAX_CHUNKS pieces hold under a
 * tiny limit); 0 only when the limit carries no byte at all. */
uint32_t nke_kev_sendable_len(uint32_t path_len, uint32_t msg_limit);
/* Messages needed for a path of path_len bytes (no NUL): at least 1, or 0
 * when the limit is too small to carry any path byte. */
uint32_t nke_kev_chunk_count(uint32_t path_len, uint32_t msg_limit);
/* Fills chunk header `index` (< count) and points piece and piece_len at its
 * slice of path: the event data of message `index` is hdr followed by piece.
 * total_len is nke_kev_sendable_len(); when that is less than path_len,
 * flags has NKE_EXEC_F_TRUNCATED in every chunk. NKE_OK, NKE_ERR_SIZE (the
 * limit carries nothing) or NKE_ERR_COUNT (index >= count). */
int nke_kev_chunk_build(uint32_t exec_id, int32_t pid, int32_t ppid, uint32_t uid, uint16_t flags,
                        const char *path, uint32_t path_len, uint32_t msg_limit, uint32_t index,
                        struct nke_kev_exec_chunk *hdr, const char **piece, uint32_t *piece_len);

/* One reassembled exec. complete=false: some chunk never came (timeout or
 * eviction); `path` then holds what arrived with the gaps zero, and
 * received_mask says which chunks. A wrong path is never reported complete. */
struct nke_exec_record {
    uint32_t exec_id;
    int32_t pid, ppid;
    uint32_t uid;
    uint16_t flags;
    bool complete;
    uint32_t path_len;
    uint32_t chunk_count;
    uint64_t received_mask;
    char path[NKE_PATH_MAX]; /* NUL-terminated when complete */
};

/* Execs in flight at once. Memory: about 4.8 KiB per slot (path and its
 * coverage bitmap at NKE_PATH_MAX), 160 KiB for the reassembler. */
#define NKE_KEV_REASM_SLOTS 32u

struct nke_kev_reasm_slot {
    bool in_use;
    uint64_t first_ms;
    uint32_t covered_bytes;                    /* path bytes received so far */
    uint16_t piece_off[NKE_KEV_MAX_CHUNKS];    /* per received chunk, to tell a */
    uint16_t piece_len[NKE_KEV_MAX_CHUNKS];    /* duplicate from a conflict */
    uint8_t covered[NKE_PATH_MAX / 8u];        /* bit per path byte received */
    struct nke_exec_record rec;
};

/* Execs recently emitted (complete or not): late copies of their chunks are
 * duplicates, not the start of a new record. */
#define NKE_KEV_RECENT 64u
struct nke_kev_recent {
    uint32_t exec_id;
    int32_t pid;
    uint16_t total_len;
    uint8_t chunk_count;
    uint8_t used;
};

struct nke_kev_reasm {
    uint32_t vendor_code;   /* messages of other vendors/classes are ignored */
    uint32_t timeout_ms;
    uint64_t duplicates, malformed, evicted;
    uint64_t conflicts;     /* chunks disagreeing with their exec: record flushed incomplete */
    uint64_t completed, incomplete;  /* records emitted */
    uint32_t recent_next;
    struct nke_kev_recent recent[NKE_KEV_RECENT];
    struct nke_kev_reasm_slot slots[NKE_KEV_REASM_SLOTS];
};

typedef void (*nke_exec_cb)(void *arg, const struct nke_exec_record *rec);

void nke_kev_reasm_init(struct nke_kev_reasm *r, uint32_t vendor_code, uint32_t timeout_ms);
/* Feeds one whole kern_event_msg (header included) of `len` bytes. Emits
 * complete records, and incomplete ones for evicted or conflicting slots.
 * Complete means every chunk index arrived and the pieces tile the path
 * exactly. An exact duplicate (also of a recently emitted exec) is counted
 * and ignored; a chunk that disagrees with its exec (other header, other
 * bytes for an index, overlapping range) flushes the exec as incomplete and
 * starts anew. Other vendors/classes/events: NKE_OK, ignored. Malformed:
 * NKE_ERR_SIZE or NKE_ERR_COUNT, counted in `malformed`. */
int nke_kev_reasm_feed(struct nke_kev_reasm *r, const void *msg, uint32_t len, uint64_t now_ms,
                       nke_exec_cb cb, void *arg);
/* Emits slots older than timeout_ms as incomplete records. */
void nke_kev_reasm_expire(struct nke_kev_reasm *r, uint64_t now_ms, nke_exec_cb cb, void *arg);

#ifdef __cplusplus
}
#endif

#endif /* NKE_CORE_H */

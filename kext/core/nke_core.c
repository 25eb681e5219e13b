/*
 * The filter core: client session, socket table, data path, chunk table,
 * response validation and application, deadlines.
 *
 * Locking: every function here expects the platform's one lock held (kext:
 * the filter's lck_mtx; emulator: its event-loop thread) and takes none.
 * ops callbacks run under that lock and must not re-enter the core.
 *
 * Ownership of a chunk (one piece of deferred socket data):
 *  - data_ctx (the platform's handle on the original bytes, a struct
 *    nke_order_item first) belongs to the core from the moment it is kept
 *    (HELD, or QUEUED behind held data) and goes back to the platform
 *    through exactly one ops->finish call, in stream order per socket
 *    direction (nke_order.c): a verdict, timeout, client close or detach
 *    decides a held chunk; the hand-back waits until everything before it
 *    on its socket direction was handed back;
 *  - its shared buffers belong to the client from the NKE_NT_DATA
 *    notification until the client releases them in a response, or the
 *    filter auto-releases the chunk (NKE_NT_CHUNK_RELEASED);
 *  - staged modified bytes come from ops->stage and go back either with
 *    ops->finish (ALLOW_MODIFIED) or with ops->unstage.
 * A chunk slot is freed when the chunk is no longer HELD and every buffer
 * has been released.
 */
#include "nke_core.h"

#include <string.h>

NKE_STATIC_ASSERT(NKE_BUFFER_COUNT <= 0xFFFFu, "buffer index fits uint16_t");
NKE_STATIC_ASSERT(NKE_CHUNK_MAX_BUFFERS <= 8u, "released_mask is 8 bits");
NKE_STATIC_ASSERT((NKE_CHUNK_TABLE_SIZE & (NKE_CHUNK_TABLE_SIZE - 1u)) == 0u,
                  "chunk table size is a power of two (slot = id & mask)");
NKE_STATIC_ASSERT(NKE_CHUNK_TABLE_SIZE >= NKE_BUFFER_COUNT && NKE_CHUNK_TABLE_SIZE < NKE_CHUNK_NONE,
                  "chunk slots fit uint16_t with NKE_CHUNK_NONE spare");

NKE_STATIC_ASSERT(((NKE_CORE_DATA_F_KEEP | NKE_CORE_DATA_F_NO_HOLD) &
                   (NKE_DATA_F_HELD | NKE_DATA_F_DATAGRAM | NKE_DATA_F_OOB | NKE_DATA_F_HAS_ADDR)) == 0u,
                  "platform-only data flags are not ABI flags");

#define CHUNK_MASK ((uint64_t)NKE_CHUNK_TABLE_SIZE - 1u)

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static void hdr_fill(struct nke_nt_hdr *h, uint16_t type, uint16_t size, uint32_t flags,
                     struct nke_sock_id sock, uint64_t now_ns)
{
    h->type = type;
    h->size = size;
    h->flags = flags;
    h->sock = sock;
    h->time_ns = now_ns;
}

/* The attach record of a socket: at attach, and again in a client's replay. */
static void attach_fill(struct nke_nt_attach *rec, const struct nke_sock *s, struct nke_sock_id id,
                        uint64_t now_ns)
{
    memset(rec, 0, sizeof(*rec));
    hdr_fill(&rec->hdr, NKE_NT_ATTACH, sizeof(*rec), 0, id, now_ns);
    rec->pid = s->info.pid;
    rec->uid = s->info.uid;
    rec->family = s->info.family;
    rec->type = s->info.type;
    rec->protocol = s->info.protocol;
    memcpy(rec->comm, s->info.comm, NKE_COMM_LEN);
}

/* A replay stage that is one state event: emitted when `stage` is still
 * owed, the stage cleared once it fit; false when the queue is full. */
static bool replay_event(struct nke_core *c, struct nke_sock *s, struct nke_sock_id id, uint64_t now_ns,
                         uint32_t stage, uint32_t event)
{
    struct nke_nt_event rec;
    if (!(s->flags & stage))
        return true;
    memset(&rec, 0, sizeof(rec));
    hdr_fill(&rec.hdr, NKE_NT_EVENT, sizeof(rec), 0, id, now_ns);
    rec.event = event;
    if (!c->ops->emit(c->platform, &rec, sizeof(rec)))
        return false;
    s->flags &= ~stage;
    return true;
}

/* One socket's replay, stage by stage (a stage whose record did not fit
 * stays for the next try): false when the queue is full. */
static bool replay_sock(struct nke_core *c, struct nke_sock *s, struct nke_sock_id id, uint64_t now_ns)
{
    if (s->flags & NKE_SOCK_REPLAY_ATTACH) {
        struct nke_nt_attach rec;
        attach_fill(&rec, s, id, now_ns);
        if (!c->ops->emit(c->platform, &rec, sizeof(rec)))
            return false;
        s->flags &= ~(uint32_t)NKE_SOCK_REPLAY_ATTACH;
    }
    if (s->flags & NKE_SOCK_REPLAY_ADDRS) {
        struct nke_nt_addrs rec;
        uint16_t type = (s->flags & NKE_SOCK_LISTENING)   ? NKE_NT_LISTEN
                        : (s->flags & NKE_SOCK_CONNECTED) ? ((s->flags & NKE_SOCK_INCOMING) ? NKE_NT_CONNECT_IN
                                                                                            : NKE_NT_CONNECT_OUT)
                                                          : NKE_NT_BOUND;
        memset(&rec, 0, sizeof(rec));
        hdr_fill(&rec.hdr, type, sizeof(rec), 0, id, now_ns);
        rec.local = s->local;
        rec.remote = s->remote;
        if (!c->ops->emit(c->platform, &rec, sizeof(rec)))
            return false;
        s->flags &= ~(uint32_t)NKE_SOCK_REPLAY_ADDRS;
    }
    return replay_event(c, s, id, now_ns, NKE_SOCK_REPLAY_CONNECTED, NKE_EV_CONNECTED) &&
           replay_event(c, s, id, now_ns, NKE_SOCK_REPLAY_CLOSING, NKE_EV_CLOSING);
}

/* Before any record of a socket: its replay, if the client has not had it
 * yet (so the client never sees a socket's data or state before its
 * attach). False when the replay did not fit: the record must not go
 * either, or it would overtake it. */
static bool replay_before(struct nke_core *c, struct nke_sock_id id, uint64_t now_ns)
{
    struct nke_sock *s;
    if (c->replay_next == 0 || id.slot == 0)
        return true;
    s = nke_core_sock(c, id);
    if (s == NULL || !(s->flags & NKE_SOCK_REPLAY_ANY))
        return true;
    return replay_sock(c, s, id, now_ns);
}

/* Goes on with the replay from where it stopped, as far as the queue takes it. */
static void replay_continue(struct nke_core *c, uint64_t now_ns)
{
    while (c->replay_next != 0 && c->replay_next < c->nsocks) {
        struct nke_sock *s = &c->socks[c->replay_next];
        if ((s->flags & NKE_SOCK_LIVE) && (s->flags & NKE_SOCK_REPLAY_ANY)) {
            struct nke_sock_id id = {c->replay_next, s->gen};
            if (!replay_sock(c, s, id, now_ns))
                return;
        }
        c->replay_next++;
    }
    c->replay_next = 0;
}

/* Marks a live socket for replay: what the client has to be told of it. */
static void replay_mark(struct nke_core *c, struct nke_sock *s, uint32_t slot)
{
    s->flags |= NKE_SOCK_REPLAY_ATTACH;
    if ((s->flags & (NKE_SOCK_CONNECTED | NKE_SOCK_LISTENING)) || s->local.family || s->remote.family)
        s->flags |= NKE_SOCK_REPLAY_ADDRS;
    /* An outgoing connection's handshake done: its connect record alone says connecting. */
    if ((s->flags & NKE_SOCK_ESTABLISHED) && !(s->flags & (NKE_SOCK_INCOMING | NKE_SOCK_LISTENING)))
        s->flags |= NKE_SOCK_REPLAY_CONNECTED;
    if (s->flags & NKE_SOCK_DETACHING)
        s->flags |= NKE_SOCK_REPLAY_CLOSING;
    if (c->replay_next == 0 || slot < c->replay_next)
        c->replay_next = slot;
}

static void emit_rec(struct nke_core *c, const void *rec, uint32_t size)
{
    const struct nke_nt_hdr *h = (const struct nke_nt_hdr *)rec;
    /* No client, no queue to fill: nothing is lost by not emitting. */
    if (!c->client_open)
        return;
    if (replay_before(c, h->sock, h->time_ns) && c->ops->emit(c->platform, rec, size))
        return;
    c->stats.notifications_lost++;
    /* A socket's attach, owner, addresses or state lost to a full queue
     * comes again as a replay once there is room, so the client's view of
     * the socket stays whole (its data records are gone: gaps). */
    if (h->type == NKE_NT_ATTACH || h->type == NKE_NT_OWNER ||
        (h->type >= NKE_NT_CONNECT_IN && h->type <= NKE_NT_EVENT)) {
        struct nke_sock *s = nke_core_sock(c, h->sock);
        if (s != NULL)
            replay_mark(c, s, h->sock.slot);
    }
}

static bool sock_id_eq(struct nke_sock_id a, struct nke_sock_id b)
{
    return a.slot == b.slot && a.gen == b.gen;
}

struct nke_sock *nke_core_sock(struct nke_core *c, struct nke_sock_id id)
{
    struct nke_sock *s;
    if (id.slot == 0 || id.slot >= c->nsocks || id.gen == 0)
        return NULL;
    s = &c->socks[id.slot];
    if (!(s->flags & NKE_SOCK_LIVE) || s->gen != id.gen)
        return NULL;
    return s;
}

/* O(1): an id's slot is fixed by its low bits (see NKE_CHUNK_TABLE_SIZE). */
static int chunk_index(const struct nke_core *c, uint64_t id)
{
    uint32_t i;
    if (id == 0)
        return -1;
    i = (uint32_t)(id & CHUNK_MASK);
    if (c->chunks[i].state != NKE_CHUNK_FREE && c->chunks[i].id == id)
        return (int)i;
    return -1;
}

static void chunk_table_init(struct nke_core *c)
{
    uint32_t i;
    /* Slots 1, 2, ..., SIZE-1, 0 in that order: ids are 1, 2, 3, ... on a
     * fresh core, and a FIFO keeps them dense afterwards (each id is the
     * smallest unissued one with the residue of the oldest free slot). */
    c->chunk_free_head = 0;
    c->nchunk_free = NKE_CHUNK_TABLE_SIZE;
    for (i = 0; i < NKE_CHUNK_TABLE_SIZE; i++)
        c->chunk_free[i] = (uint16_t)((i + 1u) & CHUNK_MASK);
    c->held_head = c->held_tail = NKE_CHUNK_NONE;
    c->nheld = 0;
}

/* Takes a free slot and the id that maps to it: the smallest id >=
 * next_chunk_id with that residue. Does not consume the id (the caller
 * advances next_chunk_id once the chunk exists). false when the table is full. */
static bool chunk_slot_take(struct nke_core *c, uint32_t *slot, uint64_t *id)
{
    uint64_t base;
    uint32_t f;
    if (c->nchunk_free == 0)
        return false;
    f = c->chunk_free[c->chunk_free_head];
    c->chunk_free_head = (c->chunk_free_head + 1u) & (NKE_CHUNK_TABLE_SIZE - 1u);
    c->nchunk_free--;
    base = c->next_chunk_id;
    *id = base + (((uint64_t)f - (base & CHUNK_MASK)) & CHUNK_MASK);
    *slot = f;
    return true;
}

static void chunk_slot_put(struct nke_core *c, uint32_t slot)
{
    c->chunk_free[(c->chunk_free_head + c->nchunk_free) & (NKE_CHUNK_TABLE_SIZE - 1u)] =
        (uint16_t)slot;
    c->nchunk_free++;
}

static void held_link(struct nke_core *c, uint32_t slot)
{
    struct nke_chunk *ch = &c->chunks[slot];
    ch->held_next = NKE_CHUNK_NONE;
    ch->held_prev = c->held_tail;
    if (c->held_tail != NKE_CHUNK_NONE)
        c->chunks[c->held_tail].held_next = (uint16_t)slot;
    else
        c->held_head = (uint16_t)slot;
    c->held_tail = (uint16_t)slot;
    c->nheld++;
}

static void held_unlink(struct nke_core *c, struct nke_chunk *ch)
{
    if (ch->held_prev != NKE_CHUNK_NONE)
        c->chunks[ch->held_prev].held_next = ch->held_next;
    else
        c->held_head = ch->held_next;
    if (ch->held_next != NKE_CHUNK_NONE)
        c->chunks[ch->held_next].held_prev = ch->held_prev;
    else
        c->held_tail = ch->held_prev;
    ch->held_prev = ch->held_next = NKE_CHUNK_NONE;
    if (c->nheld > 0)
        c->nheld--;
}

/* A chunk id the filter never issued is a client bug; one it issued but no
 * longer knows is a race with auto-release (stale). */
static bool chunk_id_issued(const struct nke_core *c, uint64_t id)
{
    return id != 0 && id < c->next_chunk_id;
}

static uint8_t all_released_mask(const struct nke_chunk *ch)
{
    return (uint8_t)((1u << ch->nbuffers) - 1u);
}

/* The chunk is neither HELD (off the held list) nor holding buffers. */
static void chunk_free_slot(struct nke_core *c, struct nke_chunk *ch)
{
    memset(ch, 0, sizeof(*ch));
    chunk_slot_put(c, (uint32_t)(ch - c->chunks));
}

/* Gives staged bytes that will never be used back to the platform and to
 * the budget (put_data counted staged_total when staging began). */
static void chunk_unstage(struct nke_core *c, struct nke_chunk *ch)
{
    if (ch->staging && ch->staged != NULL)
        c->ops->unstage(c->platform, ch->staged);
    if (ch->staging)
        c->stats.bytes_kept =
            c->stats.bytes_kept >= ch->staged_total ? c->stats.bytes_kept - ch->staged_total : 0;
    ch->staged = NULL;
    ch->staging = 0;
    ch->staged_len = ch->staged_total = 0;
}

static void chunk_reclaim_buffers(struct nke_core *c, struct nke_chunk *ch)
{
    uint32_t i;
    for (i = 0; i < ch->nbuffers; i++) {
        if (!(ch->released_mask & (1u << i))) {
            (void)nke_pool_free(&c->pool, ch->buffers[i]);
            ch->released_mask |= (uint8_t)(1u << i);
        }
    }
}

/* Ends the HELD state: the decision (and staged bytes for ALLOW_MODIFIED)
 * goes to the chunk's item on its socket direction's queue, which hands it
 * back through ops->finish once everything before it was (nke_order.c). */
static void chunk_finish(struct nke_core *c, struct nke_chunk *ch, uint32_t action,
                         uint32_t reason)
{
    struct nke_sock *s = nke_core_sock(c, ch->sock);
    void *staged = NULL;
    uint32_t staged_len = 0, staged_total = 0;

    if (action == NKE_ACT_ALLOW_MODIFIED) {
        staged = ch->staged;
        staged_len = ch->staged_len;
        staged_total = ch->staged_total;
        ch->staged = NULL;
        ch->staging = 0;
        ch->staged_len = ch->staged_total = 0;
    } else {
        chunk_unstage(c, ch);
    }

    if (s != NULL && s->held > 0)
        s->held--;
    if (c->stats.chunks_pending > 0)
        c->stats.chunks_pending--;
    held_unlink(c, ch);
    if (s != NULL)
        nke_order_decide(c, s, (struct nke_order_item *)ch->data_ctx, action, staged, staged_len,
                         staged_total, reason);
    else /* cannot happen: detach decides a socket's chunks before it goes */
        c->ops->finish(c->platform, NULL, ch->data_ctx, action, staged, staged_len, reason);
    ch->data_ctx = NULL;
    ch->state = NKE_CHUNK_DECIDED;
}

/* Filter-side release of a held chunk (timeout, client gone, socket gone):
 * the client loses the chunk's buffers and is told. */
static void chunk_auto_release(struct nke_core *c, struct nke_chunk *ch, uint32_t action,
                               uint32_t reason, uint64_t now_ns)
{
    struct nke_nt_chunk_released rec;
    memset(&rec, 0, sizeof(rec));
    hdr_fill(&rec.hdr, NKE_NT_CHUNK_RELEASED, sizeof(rec), 0, ch->sock, now_ns);
    rec.chunk_id = ch->id;
    rec.reason = reason;
    rec.size = ch->size;

    chunk_finish(c, ch, action, reason);
    chunk_reclaim_buffers(c, ch);
    c->stats.chunks_auto_released++;
    emit_rec(c, &rec, sizeof(rec));
    chunk_free_slot(c, ch);
}

/* ------------------------------------------------------------------------ */
/* Setup and client session                                                  */
/* ------------------------------------------------------------------------ */

void nke_core_init(struct nke_core *c, const struct nke_core_ops *ops, void *platform,
                   uint8_t *buffers, struct nke_sock *socks, uint32_t nsocks,
                   uint32_t kev_vendor_code, uint32_t kev_msg_limit)
{
    memset(c, 0, sizeof(*c));
    c->ops = ops;
    c->platform = platform;
    c->buffers = buffers;
    c->socks = socks;
    c->nsocks = nsocks;
    c->sock_free_hint = 1;
    c->next_chunk_id = 1;
    chunk_table_init(c);
    c->kev_vendor_code = kev_vendor_code;
    c->kev_msg_limit = kev_msg_limit;
    nke_pool_init(&c->pool);
    c->capture.abi_version = NKE_ABI_VERSION;
    c->capture.mode = NKE_CAPTURE_NOTHING;
    c->capture.hold_timeout_ms = NKE_HOLD_TIMEOUT_DEFAULT_MS;
    c->stats.abi_version = NKE_ABI_VERSION;
}

int nke_core_selector_check(uint32_t selector, bool caller_is_open_client)
{
    if (selector >= NKE_SEL_COUNT)
        return NKE_ERR_SELECTOR;
    if (selector == NKE_SEL_OPEN || caller_is_open_client)
        return NKE_OK;
    return NKE_ERR_NOT_OPEN;
}

int nke_core_client_open(struct nke_core *c, const struct nke_open_request *req,
                         struct nke_open_reply *reply, uint64_t session_id)
{
    memset(reply, 0, sizeof(*reply));
    /* The reply always carries the filter's version so a mismatched client
     * can say which side to update. */
    reply->abi_version = NKE_ABI_VERSION;
    if (c->client_open)
        return NKE_ERR_BUSY;
    if (req->abi_version != NKE_ABI_VERSION)
        return NKE_ERR_VERSION;
    if (req->_pad0 != 0)
        return NKE_ERR_RESERVED;
    if (req->flags != NKE_OPEN_F_NONE)
        return NKE_ERR_FLAGS;

    c->client_open = true;
    c->session_id = session_id;
    /* Attach replay: the new client is told of every socket attached
     * before it, as the queue takes them (nke_core_expire goes on). */
    c->replay_next = 0;
    {
        uint32_t i;
        for (i = 1; i < c->nsocks; i++) {
            struct nke_sock *s = &c->socks[i];
            if (s->flags & NKE_SOCK_LIVE)
                replay_mark(c, s, i);
        }
    }
    memset(&c->capture, 0, sizeof(c->capture));
    c->capture.abi_version = NKE_ABI_VERSION;
    c->capture.mode = NKE_CAPTURE_NOTHING;
    c->capture.hold_timeout_ms = NKE_HOLD_TIMEOUT_DEFAULT_MS;

    reply->buffer_count = NKE_BUFFER_COUNT;
    reply->buffer_size = NKE_BUFFER_SIZE;
    reply->queue_data_size = NKE_QUEUE_DATA_SIZE;
    reply->kev_vendor_code = c->kev_vendor_code;
    reply->kev_msg_limit = c->kev_msg_limit;
    reply->session_id = session_id;
    return NKE_OK;
}

void nke_core_client_close(struct nke_core *c)
{
    uint32_t i;
    if (!c->client_open)
        return;
    /* Fail open: everything held goes out as it came in. CHUNK_RELEASED
     * records are still offered to ops->emit (a platform that keeps the
     * queue mapped, e.g. for a post-mortem, can read them). */
    for (i = 0; i < NKE_CHUNK_TABLE_SIZE; i++) {
        struct nke_chunk *ch = &c->chunks[i];
        if (ch->state == NKE_CHUNK_HELD) {
            chunk_auto_release(c, ch, NKE_ACT_ALLOW, NKE_RELEASE_CLIENT_GONE, 0);
        } else if (ch->state != NKE_CHUNK_FREE) {
            chunk_unstage(c, ch);
            chunk_reclaim_buffers(c, ch);
            chunk_free_slot(c, ch);
        }
    }
    c->client_open = false;
    for (i = 1; c->replay_next != 0 && i < c->nsocks; i++)
        c->socks[i].flags &= ~(uint32_t)NKE_SOCK_REPLAY_ANY;
    c->replay_next = 0;
    memset(&c->capture, 0, sizeof(c->capture));
    c->capture.abi_version = NKE_ABI_VERSION;
    c->capture.mode = NKE_CAPTURE_NOTHING;
    c->capture.hold_timeout_ms = NKE_HOLD_TIMEOUT_DEFAULT_MS;
}

/* ------------------------------------------------------------------------ */
/* Responses                                                                 */
/* ------------------------------------------------------------------------ */

/* The message comes from a client buffer of any alignment: every struct is
 * copied out with memcpy before it is read. */
static int response_validate(const struct nke_core *c, const uint8_t *msg, uint32_t size)
{
    struct nke_response_hdr h;
    /* A bit per chunk slot: small enough for a kernel stack. */
    uint32_t verdict_seen[NKE_CHUNK_TABLE_SIZE / 32u];
    uint8_t buffer_seen[NKE_BUFFER_COUNT];
    uint64_t expect;
    uint32_t i;
    const uint8_t *p;

    if (!c->client_open)
        return NKE_ERR_NOT_OPEN;
    if (msg == NULL || size < sizeof(h))
        return NKE_ERR_SIZE;
    memcpy(&h, msg, sizeof(h));
    if (h.abi_version != NKE_ABI_VERSION)
        return NKE_ERR_VERSION;
    if (h.flags != 0)
        return NKE_ERR_FLAGS;
    if (h.nverdicts > NKE_RESPONSE_MAX_VERDICTS || h.nreleases > NKE_RESPONSE_MAX_RELEASES)
        return NKE_ERR_COUNT;
    expect = sizeof(h) + (uint64_t)h.nverdicts * sizeof(struct nke_verdict) +
             (uint64_t)h.nreleases * sizeof(struct nke_release);
    if (h.size != size || (uint64_t)size != expect)
        return NKE_ERR_SIZE;

    memset(verdict_seen, 0, sizeof(verdict_seen));
    memset(buffer_seen, 0, sizeof(buffer_seen));
    p = msg + sizeof(h);
    for (i = 0; i < h.nverdicts; i++, p += sizeof(struct nke_verdict)) {
        struct nke_verdict v;
        const struct nke_chunk *ch;
        int ci;
        memcpy(&v, p, sizeof(v));
        if (v._pad0[0] | v._pad0[1] | v._pad0[2])
            return NKE_ERR_RESERVED;
        if (v.action < NKE_ACT_ALLOW || v.action > NKE_ACT_EXTEND)
            return NKE_ERR_ACTION;
        if (!chunk_id_issued(c, v.chunk_id))
            return NKE_ERR_UNKNOWN_CHUNK;
        ci = chunk_index(c, v.chunk_id);
        if (ci < 0)
            continue; /* auto-released meanwhile: stale, skipped at apply */
        ch = &c->chunks[ci];
        if (!sock_id_eq(v.sock, ch->sock))
            return NKE_ERR_SOCK;
        if (ch->state == NKE_CHUNK_REPORTED)
            return NKE_ERR_NOT_HELD;
        /* Extending a decided chunk asks to hold what is already gone. */
        if (v.action == NKE_ACT_EXTEND && ch->state == NKE_CHUNK_DECIDED)
            return NKE_ERR_NOT_HELD;
        if (ch->state == NKE_CHUNK_DECIDED || (verdict_seen[ci / 32] & (1u << (ci % 32))))
            return NKE_ERR_DUP_VERDICT;
        verdict_seen[ci / 32] |= 1u << (ci % 32);
        if (v.action == NKE_ACT_EXTEND) {
            if (v.hold_ms == 0 || v.hold_ms > NKE_HOLD_TOTAL_MAX_MS)
                return NKE_ERR_HOLD_MS;
        } else if (v.action == NKE_ACT_ALLOW_MODIFIED) {
            if (!ch->staging || ch->staged_len != ch->staged_total ||
                v.modified_len != ch->staged_total)
                return NKE_ERR_MODIFIED_LEN;
        } else if (v.modified_len != 0) {
            return NKE_ERR_MODIFIED_LEN;
        }
    }
    for (i = 0; i < h.nreleases; i++, p += sizeof(struct nke_release)) {
        struct nke_release r;
        const struct nke_chunk *ch;
        uint32_t k;
        int ci;
        memcpy(&r, p, sizeof(r));
        if (r._pad0 != 0 || r._pad1 != 0)
            return NKE_ERR_RESERVED;
        if (r.buffer >= NKE_BUFFER_COUNT)
            return NKE_ERR_BUF_RANGE;
        if (!chunk_id_issued(c, r.chunk_id))
            return NKE_ERR_UNKNOWN_CHUNK;
        /* Stale before the duplicate check: the filter released this chunk
         * (deadline) and its buffer may already carry a newer chunk whose
         * release is in this very response. Counting the stale entry as a
         * use of the buffer refused the whole response, and the chunks it
         * decided waited for their deadlines. */
        ci = chunk_index(c, r.chunk_id);
        if (ci < 0)
            continue;
        if (buffer_seen[r.buffer])
            return NKE_ERR_BUF_DUP;
        buffer_seen[r.buffer] = 1;
        ch = &c->chunks[ci];
        for (k = 0; k < ch->nbuffers; k++)
            if (ch->buffers[k] == r.buffer)
                break;
        if (k == ch->nbuffers)
            return NKE_ERR_BUF_FOREIGN;
        if (ch->released_mask & (1u << k))
            return NKE_ERR_BUF_DOUBLE;
    }
    return NKE_OK;
}

int nke_core_validate_response(const struct nke_core *c, const void *msg, uint32_t size)
{
    return response_validate(c, (const uint8_t *)msg, size);
}

int nke_core_respond(struct nke_core *c, const void *msg, uint32_t size)
{
    struct nke_response_hdr h;
    const uint8_t *p;
    uint32_t i;
    int err = response_validate(c, (const uint8_t *)msg, size);
    if (err != NKE_OK) {
        c->stats.responses_rejected++;
        return err;
    }
    /* Valid as a whole: apply. Nothing below can fail. */
    memcpy(&h, msg, sizeof(h));
    p = (const uint8_t *)msg + sizeof(h);
    for (i = 0; i < h.nverdicts; i++, p += sizeof(struct nke_verdict)) {
        struct nke_verdict v;
        struct nke_chunk *ch;
        int ci;
        memcpy(&v, p, sizeof(v));
        ci = chunk_index(c, v.chunk_id);
        if (ci < 0) {
            c->stats.stale_entries++;
            continue;
        }
        ch = &c->chunks[ci];
        if (v.action == NKE_ACT_EXTEND) {
            /* Still HELD, nothing finished. Never earlier than before, never
             * past the cap: hold_ms <= NKE_HOLD_TOTAL_MAX_MS (validated). */
            uint64_t want = ch->held_at_ms + v.hold_ms;
            if (want > ch->deadline_ms)
                ch->deadline_ms = want;
            continue;
        }
        if (v.action == NKE_ACT_ALLOW_MODIFIED)
            c->stats.chunks_modified++;
        else if (v.action == NKE_ACT_DROP)
            c->stats.chunks_dropped++;
        chunk_finish(c, ch, v.action, 0);
        if (ch->released_mask == all_released_mask(ch))
            chunk_free_slot(c, ch);
    }
    for (i = 0; i < h.nreleases; i++, p += sizeof(struct nke_release)) {
        struct nke_release r;
        struct nke_chunk *ch;
        uint32_t k;
        int ci;
        memcpy(&r, p, sizeof(r));
        ci = chunk_index(c, r.chunk_id);
        if (ci < 0) {
            c->stats.stale_entries++;
            continue;
        }
        ch = &c->chunks[ci];
        for (k = 0; k < ch->nbuffers; k++)
            if (ch->buffers[k] == r.buffer)
                break;
        (void)nke_pool_free(&c->pool, r.buffer);
        ch->released_mask |= (uint8_t)(1u << k);
        /* A HELD chunk keeps its slot without buffers until its verdict. */
        if (ch->state != NKE_CHUNK_HELD && ch->released_mask == all_released_mask(ch))
            chunk_free_slot(c, ch);
    }
    return NKE_OK;
}

int nke_core_put_data(struct nke_core *c, const void *msg, uint32_t size)
{
    struct nke_put_data_hdr h;
    struct nke_chunk *ch;
    void *staged;
    int ci, err;

    err = NKE_OK;
    if (!c->client_open)
        err = NKE_ERR_NOT_OPEN;
    else if (msg == NULL || size < sizeof(h))
        err = NKE_ERR_SIZE;
    if (err != NKE_OK)
        goto reject;
    memcpy(&h, msg, sizeof(h));
    if (h._pad0 != 0)
        err = NKE_ERR_RESERVED;
    else if (h.len > NKE_PUT_DATA_MAX_PIECE)
        err = NKE_ERR_PUT_LEN;
    else if ((uint64_t)size != sizeof(h) + (uint64_t)h.len)
        err = NKE_ERR_SIZE;
    else if (h.total_len > NKE_MODIFIED_MAX_LEN)
        err = NKE_ERR_PUT_LEN;
    if (err != NKE_OK)
        goto reject;
    ci = chunk_index(c, h.chunk_id);
    if (ci < 0 || c->chunks[ci].state != NKE_CHUNK_HELD) {
        err = NKE_ERR_UNKNOWN_CHUNK;
        goto reject;
    }
    ch = &c->chunks[ci];
    if (!sock_id_eq(h.sock, ch->sock))
        err = NKE_ERR_SOCK;
    else if (h.offset != 0 && (!ch->staging || h.offset != ch->staged_len))
        err = NKE_ERR_PUT_OFFSET;
    else if (h.offset != 0 && h.total_len != ch->staged_total)
        err = NKE_ERR_PUT_LEN;
    else if ((uint64_t)h.offset + h.len > h.total_len)
        err = NKE_ERR_PUT_LEN;
    if (err != NKE_OK)
        goto reject;

    /* The byte budget: a new staging of total_len bytes (counting the old
     * one of this chunk as given back) must fit, or it is refused and
     * nothing changes. */
    if (h.offset == 0 && c->stats.bytes_kept - (ch->staging ? ch->staged_total : 0u) +
                                 (uint64_t)h.total_len > NKE_KEPT_BYTES_MAX) {
        err = NKE_ERR_NO_MEMORY;
        goto reject;
    }
    if (h.offset == 0) {
        /* A piece at offset 0 restarts the staging: the old bytes go back to
         * the platform and stage() starts from NULL. */
        chunk_unstage(c, ch);
    }
    staged = ch->staged;
    err = c->ops->stage(c->platform, &staged, h.total_len, h.offset,
                        (const uint8_t *)msg + sizeof(h), h.len);
    if (err != NKE_OK) {
        /* The staging is abandoned as a whole (the client restarts at offset
         * 0): whatever the platform left in *staged goes back to it. */
        if (staged != NULL)
            c->ops->unstage(c->platform, staged);
        ch->staged = NULL;
        if (ch->staging) /* a later piece: the staging counted since offset 0 */
            c->stats.bytes_kept = c->stats.bytes_kept >= ch->staged_total
                                      ? c->stats.bytes_kept - ch->staged_total
                                      : 0;
        ch->staging = 0;
        ch->staged_len = ch->staged_total = 0;
        return NKE_ERR_NO_MEMORY;
    }
    if (h.offset == 0)
        c->stats.bytes_kept += h.total_len;
    ch->staged = staged;
    ch->staging = 1;
    ch->staged_total = h.total_len;
    ch->staged_len = h.offset + h.len;
    return NKE_OK;

reject:
    c->stats.responses_rejected++;
    return err;
}

/* ------------------------------------------------------------------------ */
/* Capture configuration and state                                           */
/* ------------------------------------------------------------------------ */

int nke_core_set_capture(struct nke_core *c, const struct nke_capture_config *cfg, uint32_t size)
{
    int err;
    if (!c->client_open)
        return NKE_ERR_NOT_OPEN;
    err = nke_capture_validate(cfg, size);
    if (err != NKE_OK)
        return err;
    memset(&c->capture, 0, sizeof(c->capture));
    memcpy(&c->capture, cfg,
           offsetof(struct nke_capture_config, rules) + cfg->nrules * sizeof(struct nke_rule));
    if (c->capture.hold_timeout_ms == 0)
        c->capture.hold_timeout_ms = NKE_HOLD_TIMEOUT_DEFAULT_MS;
    return NKE_OK;
}

void nke_core_get_state(const struct nke_core *c, struct nke_filter_state *out)
{
    *out = c->stats;
    out->abi_version = NKE_ABI_VERSION;
    out->flags = (c->client_open ? NKE_STATE_F_CLIENT : 0u) |
                 (c->capture.mode != NKE_CAPTURE_NOTHING ? NKE_STATE_F_CAPTURE : 0u);
    out->capture_mode = c->capture.mode;
    out->buffers_in_use = nke_pool_in_use(&c->pool);
}

void nke_core_emit_state(struct nke_core *c, uint64_t now_ns)
{
    struct nke_nt_state rec;
    struct nke_sock_id none = {0, 0};
    memset(&rec, 0, sizeof(rec));
    hdr_fill(&rec.hdr, NKE_NT_STATE, sizeof(rec), 0, none, now_ns);
    nke_core_get_state(c, &rec.state);
    emit_rec(c, &rec, sizeof(rec));
}

/* ------------------------------------------------------------------------ */
/* Socket filter callbacks                                                   */
/* ------------------------------------------------------------------------ */

struct nke_sock_id nke_core_attach(struct nke_core *c, const struct nke_sock_info *info,
                                   void *sock_ctx, uint64_t now_ns)
{
    struct nke_sock_id id = {0, 0};
    struct nke_nt_attach rec;
    struct nke_sock *s = NULL;
    uint32_t n, slot = 0;

    /* Slot 0 is never used; start at the hint and go round once. */
    if (c->nsocks > 1) {
        slot = c->sock_free_hint;
        for (n = 0; n < c->nsocks - 1u; n++) {
            if (slot == 0 || slot >= c->nsocks)
                slot = 1;
            if (!(c->socks[slot].flags & NKE_SOCK_LIVE)) {
                s = &c->socks[slot];
                break;
            }
            slot++;
        }
    }
    if (s == NULL) {
        c->stats.sockets_untracked++;
        return id;
    }
    {
        uint32_t gen = s->gen + 1u;
        if (gen == 0)
            gen = 1; /* 0 means "no socket" */
        memset(s, 0, sizeof(*s));
        s->gen = gen;
    }
    s->flags = NKE_SOCK_LIVE;
    s->info = *info;
    s->info.comm[NKE_COMM_LEN - 1] = '\0';
    s->ctx = sock_ctx;
    c->sock_free_hint = slot + 1u;
    c->stats.sockets_live++;
    c->stats.sockets_attached++;
    id.slot = slot;
    id.gen = s->gen;

    attach_fill(&rec, s, id, now_ns);
    emit_rec(c, &rec, sizeof(rec));
    return id;
}

void nke_core_detach(struct nke_core *c, struct nke_sock_id id, uint64_t now_ns)
{
    struct nke_sock *s = nke_core_sock(c, id);
    struct nke_nt_detach rec;
    uint32_t i;
    if (s == NULL)
        return;
    /* Held data has no socket to go to any more, nor has data queued behind
     * it: everything kept becomes a DROP, handed back in order as the held
     * chunks are decided below. Chunks only reported or already decided keep
     * their buffers until the client releases them. */
    nke_order_socket_gone(c, s);
    for (i = c->held_head; i != NKE_CHUNK_NONE;) {
        struct nke_chunk *ch = &c->chunks[i];
        i = ch->held_next; /* ch leaves the list below */
        if (sock_id_eq(ch->sock, id))
            chunk_auto_release(c, ch, NKE_ACT_DROP, NKE_RELEASE_SOCKET_GONE, now_ns);
    }
    memset(&rec, 0, sizeof(rec));
    hdr_fill(&rec.hdr, NKE_NT_DETACH, sizeof(rec), 0, id, now_ns);
    rec.bytes_in = s->bytes_in;
    rec.bytes_out = s->bytes_out;
    emit_rec(c, &rec, sizeof(rec));
    {
        uint32_t gen = s->gen;
        memset(s, 0, sizeof(*s));
        s->gen = gen; /* kept so the next occupant gets a new generation */
    }
    if (c->stats.sockets_live > 0)
        c->stats.sockets_live--;
    if (id.slot < c->sock_free_hint)
        c->sock_free_hint = id.slot;
}

void nke_core_addrs(struct nke_core *c, struct nke_sock_id id, uint16_t type,
                    const struct nke_addr *local, const struct nke_addr *remote, uint64_t now_ns)
{
    struct nke_sock *s = nke_core_sock(c, id);
    struct nke_nt_addrs rec;
    if (s == NULL || type < NKE_NT_CONNECT_IN || type > NKE_NT_LISTEN)
        return;
    if (local)
        s->local = *local;
    if (remote)
        s->remote = *remote;
    if (type == NKE_NT_CONNECT_IN || type == NKE_NT_CONNECT_OUT)
        s->flags |= NKE_SOCK_CONNECTED;
    if (type == NKE_NT_CONNECT_IN)
        s->flags |= NKE_SOCK_INCOMING | NKE_SOCK_ESTABLISHED;
    else if (type == NKE_NT_LISTEN)
        s->flags |= NKE_SOCK_LISTENING;
    memset(&rec, 0, sizeof(rec));
    hdr_fill(&rec.hdr, type, sizeof(rec), 0, id, now_ns);
    rec.local = s->local;
    rec.remote = s->remote;
    emit_rec(c, &rec, sizeof(rec));
}

void nke_core_event(struct nke_core *c, struct nke_sock_id id, uint32_t event, uint64_t now_ns)
{
    struct nke_sock *s = nke_core_sock(c, id);
    struct nke_nt_event rec;
    if (s == NULL)
        return;
    if (event == NKE_EV_CONNECTED)
        s->flags |= NKE_SOCK_CONNECTED | NKE_SOCK_ESTABLISHED;
    else if (event == NKE_EV_DISCONNECTED)
        s->flags &= ~(uint32_t)(NKE_SOCK_CONNECTED | NKE_SOCK_ESTABLISHED);
    else if (event == NKE_EV_CLOSING)
        s->flags |= NKE_SOCK_DETACHING;
    memset(&rec, 0, sizeof(rec));
    hdr_fill(&rec.hdr, NKE_NT_EVENT, sizeof(rec), 0, id, now_ns);
    rec.event = event;
    emit_rec(c, &rec, sizeof(rec));
}

void nke_core_option(struct nke_core *c, struct nke_sock_id id, uint32_t level, uint32_t name,
                     bool is_set, uint64_t now_ns)
{
    struct nke_nt_option rec;
    if (nke_core_sock(c, id) == NULL)
        return;
    memset(&rec, 0, sizeof(rec));
    hdr_fill(&rec.hdr, NKE_NT_OPTION, sizeof(rec), 0, id, now_ns);
    rec.level = level;
    rec.name = name;
    rec.is_set = is_set ? 1u : 0u;
    emit_rec(c, &rec, sizeof(rec));
}

/* ------------------------------------------------------------------------ */
/* Data path                                                                 */
/* ------------------------------------------------------------------------ */

/* The data passes although the capture mode wanted it reported or held (no
 * buffer, or no room for its record): tell the client where the hole is and
 * how long, so its history marks a gap instead of splicing around it. No
 * buffer needed; if even this record does not fit, the loss is counted and
 * the next chunk's stream_offset still shows the hole. */
static void report_unreported_pass(struct nke_core *c, struct nke_sock_id id, uint8_t direction,
                                   uint64_t stream_offset, uint32_t size, uint32_t flags,
                                   uint8_t reason, uint64_t now_ns)
{
    struct nke_nt_data_gap rec;
    memset(&rec, 0, sizeof(rec));
    hdr_fill(&rec.hdr, NKE_NT_DATA_GAP, sizeof(rec), flags & (NKE_DATA_F_DATAGRAM | NKE_DATA_F_OOB),
             id, now_ns);
    rec.stream_offset = stream_offset;
    rec.size = size;
    rec.direction = direction;
    rec.reason = reason;
    emit_rec(c, &rec, sizeof(rec));
}

int nke_core_data(struct nke_core *c, struct nke_sock_id id, uint8_t direction, uint32_t size,
                  uint32_t flags, const struct nke_addr *addr, void *data_ctx, uint64_t now_ms,
                  uint64_t now_ns, uint64_t *chunk_id)
{
    struct nke_sock *s = nke_core_sock(c, id);
    struct nke_flow flow;
    struct nke_nt_data rec;
    struct nke_chunk *ch = NULL;
    const struct nke_order_queue *q;
    uint16_t bufs[NKE_CHUNK_MAX_BUFFERS];
    uint64_t stream_offset, cid;
    uint32_t action = NKE_RULE_PASS, nbuf, i, slot;
    uint16_t rule = NKE_RULE_DEFAULT;
    bool held, pending, announced = false;

    if (chunk_id)
        *chunk_id = 0;
    if (s == NULL || (direction != NKE_DIR_IN && direction != NKE_DIR_OUT))
        return NKE_DATA_PASS;
    /* Offsets count every byte the socket carried, passed or not, so the
     * client can tell where a chunk sits in the stream. */
    if (direction == NKE_DIR_IN) {
        stream_offset = s->offset_in;
        s->offset_in += size;
        s->bytes_in += size;
    } else {
        stream_offset = s->offset_out;
        s->offset_out += size;
        s->bytes_out += size;
    }
    /* Stream bytes move on a TCP socket only once it is connected (a lost
     * connected event must not leave a replay saying connecting). */
    if (size && s->info.protocol == NKE_PROTO_TCP && (s->flags & NKE_SOCK_CONNECTED))
        s->flags |= NKE_SOCK_ESTABLISHED;
    /* Stream order before anything else: behind kept or in-flight data of
     * this socket direction, the piece is kept too, whatever would
     * otherwise let it pass (nke_order.h). */
    q = &s->order[direction - 1u];
    pending = !(flags & NKE_CORE_DATA_F_NO_HOLD) &&
              ((flags & NKE_CORE_DATA_F_KEEP) || q->head != NULL || q->inflight > 0);

    /* The platform splits; never hold or report what we cannot describe. */
    if (c->client_open && c->capture.mode != NKE_CAPTURE_NOTHING && size != 0 &&
        size <= NKE_CHUNK_MAX_BYTES) {
        memset(&flow, 0, sizeof(flow));
        flow.pid = s->info.pid;
        memcpy(flow.comm, s->info.comm, NKE_COMM_LEN);
        flow.direction = direction;
        flow.protocol = s->info.protocol;
        flow.family = s->info.family;
        flow.local = s->local;
        flow.remote = (addr && (flags & NKE_DATA_F_HAS_ADDR)) ? *addr : s->remote;
        action = nke_capture_classify(&c->capture, &flow, &rule);
    }
    /* What may not be held is still worth showing. */
    if (action == NKE_RULE_HOLD &&
        ((flags & NKE_CORE_DATA_F_NO_HOLD) || (s->flags & NKE_SOCK_NO_DEFER)))
        action = NKE_RULE_REPORT;
    if (action == NKE_RULE_HOLD && c->stats.bytes_kept + size > NKE_KEPT_BYTES_MAX) {
        c->stats.chunks_passed_budget++;
        action = NKE_RULE_REPORT;
    }
    flags &= NKE_DATA_F_DATAGRAM | NKE_DATA_F_OOB | NKE_DATA_F_HAS_ADDR;
    if (action == NKE_RULE_PASS)
        goto keep_or_pass;
    held = action == NKE_RULE_HOLD;

    /* Fail open when out of room: a chunk slot and all its buffers, or no
     * chunk (the data still waits its turn when order says so). */
    nbuf = (size + NKE_BUFFER_SIZE - 1u) / NKE_BUFFER_SIZE;
    if (!chunk_slot_take(c, &slot, &cid)) {
        c->stats.chunks_passed_pool_full++;
        report_unreported_pass(c, id, direction, stream_offset, size, flags, NKE_GAP_NO_BUFFER, now_ns);
        goto keep_or_pass;
    }
    if (nke_pool_alloc(&c->pool, cid, nbuf, bufs) != NKE_OK) {
        chunk_slot_put(c, slot);
        c->stats.chunks_passed_pool_full++;
        report_unreported_pass(c, id, direction, stream_offset, size, flags, NKE_GAP_NO_BUFFER, now_ns);
        goto keep_or_pass;
    }
    ch = &c->chunks[slot];

    for (i = 0; i < nbuf; i++) {
        uint32_t off = i * NKE_BUFFER_SIZE;
        uint32_t n = size - off < NKE_BUFFER_SIZE ? size - off : NKE_BUFFER_SIZE;
        c->ops->copy_data(c->platform, data_ctx, off, n,
                          c->buffers + (size_t)bufs[i] * NKE_BUFFER_SIZE);
    }

    memset(&rec, 0, sizeof(rec));
    hdr_fill(&rec.hdr, NKE_NT_DATA, sizeof(rec), flags | (held ? NKE_DATA_F_HELD : 0u), id, now_ns);
    if (!addr)
        rec.hdr.flags &= ~NKE_DATA_F_HAS_ADDR;
    rec.chunk_id = cid;
    rec.stream_offset = stream_offset;
    rec.size = size;
    rec.direction = direction;
    rec.nbuffers = (uint16_t)nbuf;
    rec.deadline_ms = held ? c->capture.hold_timeout_ms : 0u;
    rec.capture_tag = c->capture.tag;
    rec.rule = rule;
    if (addr && (flags & NKE_DATA_F_HAS_ADDR))
        rec.addr = *addr;
    memcpy(rec.buffers, bufs, sizeof(rec.buffers));

    if (!replay_before(c, id, now_ns) || !c->ops->emit(c->platform, &rec, sizeof(rec))) {
        /* The client will never hear of this chunk: undo. */
        c->stats.notifications_lost++;
        for (i = 0; i < nbuf; i++)
            (void)nke_pool_free(&c->pool, bufs[i]);
        chunk_slot_put(c, slot);
        report_unreported_pass(c, id, direction, stream_offset, size, flags, NKE_GAP_QUEUE_FULL, now_ns);
        goto keep_or_pass;
    }
    /* The id is issued only now: next ids are above it, never reused. */
    c->next_chunk_id = cid + 1u;

    memset(ch, 0, sizeof(*ch));
    ch->held_prev = ch->held_next = NKE_CHUNK_NONE;
    ch->id = cid;
    ch->sock = id;
    ch->size = size;
    ch->direction = direction;
    ch->nbuffers = (uint8_t)nbuf;
    memcpy(ch->buffers, bufs, sizeof(ch->buffers));
    ch->pid = s->info.pid;
    if (chunk_id)
        *chunk_id = cid;
    announced = true;
    if (!held) {
        ch->state = NKE_CHUNK_REPORTED;
        c->stats.chunks_reported++;
        goto keep_or_pass;
    }
    ch->state = NKE_CHUNK_HELD;
    ch->held_at_ms = now_ms;
    ch->deadline_ms = now_ms + c->capture.hold_timeout_ms;
    ch->data_ctx = data_ctx;
    held_link(c, slot);
    s->held++;
    c->stats.chunks_held++;
    c->stats.chunks_pending++;
    c->stats.bytes_held += size;
    nke_order_keep(c, s, id, (struct nke_order_item *)data_ctx, direction, size, false);
    return NKE_DATA_HELD;

keep_or_pass:
    if (!pending)
        return announced ? NKE_DATA_REPORTED : NKE_DATA_PASS;
    c->stats.chunks_queued++;
    nke_order_keep(c, s, id, (struct nke_order_item *)data_ctx, direction, size, true);
    /* Order kept it beyond the budget: what it waits behind goes now. */
    if (c->stats.bytes_kept > NKE_KEPT_BYTES_MAX)
        nke_core_release_socket(c, id, direction, NKE_ACT_ALLOW, NKE_RELEASE_BUDGET, now_ns);
    return NKE_DATA_QUEUED;
}

void nke_core_release_socket(struct nke_core *c, struct nke_sock_id id, uint8_t direction,
                             uint32_t action, uint32_t reason, uint64_t now_ns)
{
    uint32_t i;
    if (nke_core_sock(c, id) == NULL || (action != NKE_ACT_ALLOW && action != NKE_ACT_DROP))
        return;
    /* The held list is in hold order, which is stream order per socket
     * direction: each decision lets the queue move on at once. */
    for (i = c->held_head; i != NKE_CHUNK_NONE;) {
        struct nke_chunk *ch = &c->chunks[i];
        i = ch->held_next; /* ch leaves the list below */
        if (sock_id_eq(ch->sock, id) && ch->direction == direction)
            chunk_auto_release(c, ch, action, reason, now_ns);
    }
}

void nke_core_sock_no_defer(struct nke_core *c, struct nke_sock_id id, bool no_defer)
{
    struct nke_sock *s = nke_core_sock(c, id);
    if (s == NULL)
        return;
    if (no_defer)
        s->flags |= NKE_SOCK_NO_DEFER;
    else
        s->flags &= ~(uint32_t)NKE_SOCK_NO_DEFER;
}

void nke_core_set_owner(struct nke_core *c, struct nke_sock_id id, const struct nke_sock_info *info,
                        uint64_t now_ns)
{
    struct nke_sock *s = nke_core_sock(c, id);
    struct nke_nt_attach rec;
    if (s == NULL)
        return;
    s->info.pid = info->pid;
    s->info.uid = info->uid;
    memcpy(s->info.comm, info->comm, NKE_COMM_LEN);
    s->info.comm[NKE_COMM_LEN - 1] = '\0';
    memset(&rec, 0, sizeof(rec));
    hdr_fill(&rec.hdr, NKE_NT_OWNER, sizeof(rec), 0, id, now_ns);
    rec.pid = s->info.pid;
    rec.uid = s->info.uid;
    rec.family = s->info.family;
    rec.type = s->info.type;
    rec.protocol = s->info.protocol;
    memcpy(rec.comm, s->info.comm, NKE_COMM_LEN);
    emit_rec(c, &rec, sizeof(rec));
}

uint32_t nke_core_expire(struct nke_core *c, uint64_t now_ms, uint64_t now_ns)
{
    uint64_t next = UINT32_MAX;
    uint32_t i;
    if (c->client_open && c->replay_next != 0) {
        replay_continue(c, now_ns);
        if (c->replay_next != 0)
            next = 2; /* the queue is full: again once the client read some */
    }
    /* O(held), not O(table): only the held list is walked. */
    for (i = c->held_head; i != NKE_CHUNK_NONE;) {
        struct nke_chunk *ch = &c->chunks[i];
        i = ch->held_next; /* ch may leave the list below */
        if (ch->deadline_ms <= now_ms)
            chunk_auto_release(c, ch, NKE_ACT_ALLOW, NKE_RELEASE_TIMEOUT, now_ns);
        else if (ch->deadline_ms - now_ms < next)
            next = ch->deadline_ms - now_ms;
    }
    return (uint32_t)next;
}

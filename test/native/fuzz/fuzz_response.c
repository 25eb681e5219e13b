/*
 * Fuzz target: response validation and apply, put_data staging, expiry,
 * detach and client close on a core holding chunks.
 *
 * Input is a sequence of operations (first byte of each picks one): raw
 * response bytes, a structured response built from chunk ids and buffers the
 * core really issued (to get past the first checks), raw or structured
 * put_data, new data (held, reported, passed or queued behind held data, on
 * two sockets, both directions, with the platform's KEEP/NO_HOLD flags),
 * time passing, detach, client close/reopen, capture changes, the close
 * flush (release_socket), and a platform whose re-injections stay in flight
 * until a later operation reports them done.
 * Structured verdicts include NKE_ACT_EXTEND with hold_ms around the
 * bounds (0, the hold timeout, the cap and past it).
 * Invariants checked after every operation:
 *  - validate_response and respond agree; a rejected response leaves the
 *    core byte-identical (but for responses_rejected) and calls no op;
 *  - a held chunk's deadline never moves earlier and never past
 *    held_at_ms + NKE_HOLD_TOTAL_MAX_MS (the cap on its total hold);
 *  - stale entries (a chunk the filter issued and released since, with
 *    well-formed fields) change nothing: a structured response is judged
 *    the same with them and without them (the rule a released chunk's
 *    buffer, reused by a live chunk of the same response, once broke);
 *  - the pool and the chunk table agree on who owns every buffer;
 *  - chunks_pending counts the HELD chunks; every data_ctx is finished at
 *    most once, and never while its chunk is still HELD (so, with the
 *    count, every data_ctx not finished yet is a HELD chunk's: none lost);
 *  - stream order: per socket direction, kept pieces are finished in the
 *    order they were kept (a later piece never overtakes an earlier one);
 *    nothing passes while earlier data of its direction is kept;
 *  - the byte budget: bytes_kept is exactly the kept pieces not yet done
 *    plus the staged edits, and a hold never takes it past
 *    NKE_KEPT_BYTES_MAX;
 * and after every client close (once every item in flight is done), every
 * kept data_ctx was finished exactly once, bytes_kept is 0, no buffer is in
 * use and no staged allocation is left (LeakSanitizer too).
 *
 * Speed (5 million inputs in npm run fuzz's 60 s needs about 85 000 a
 * second: one whole core, only because each input is cheap): chunks are
 * small where it matters (p_copy touches two bytes a buffer); the starting
 * state (a core with a client, capture ALL, two sockets and four held
 * chunks) is built once, and each input undoes only what the one before it
 * changed (restore_start: the chunk slots it used, the pieces of data it
 * made, the capture config if it set one), checked against the whole start
 * state every 1024th input; the harness's own loops (invariants, chunk
 * lookups, snapshots, restores) are not coverage-instrumented and are word
 * loops ASan does not intercept (NO_COVERAGE, WORD_LOOP); the operation
 * builders and platform callbacks are not traced (NO_TRACE), nor are the
 * comparisons of the pool and the order queues (Makefile), so coverage and
 * comparison tracing are spent on what a client's bytes steer; a response
 * is snapshotted only when validation says it is refused, the only case
 * where the core must be left untouched; and an input ends without a
 * client close (a close is one of the operations, checked where it
 * happens): what is left staged is freed by the harness.
 */
#include "nke_core.h"

#include <stdlib.h>
#include <string.h>

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)
#define NDATA 256
/* Harness code: libFuzzer need not learn from it nor the sanitizers check
 * it (it only reads the core, and copies it whole); kext/core is both. */
#define NO_COVERAGE __attribute__((no_sanitize("coverage", "address", "undefined")))
/* For the word loops that copy and compare the core: without it the
 * optimizer turns them back into memcpy calls, and ASan's interceptor then
 * checks the shadow of every byte copied (a tenth of the time, once). */
#define WORD_LOOP __attribute__((no_builtin("memcpy", "memset", "memcmp", "bcmp"), noinline))
/* The operation builders: checked by the sanitizers, but not traced, what
 * they reach in the core is (about a tenth more executions a second). */
#define NO_TRACE __attribute__((no_sanitize("coverage")))
#define NSID 2

/* The scalars first, then one array entry per piece of data (restore_start
 * copies back the scalars and only the entries an input used). */
struct plat {
    int ops_called;
    int live_staged;
    bool defer_done;            /* re-injections stay in flight until flush_done() */
    uint32_t next_seq[NSID][2]; /* per socket direction: next seq to keep */
    uint32_t next_fin[NSID][2]; /* and the seq the next finish must have */
    int nflight;
    /* per piece, [0, NEXT_DATA] used (the one at NEXT_DATA when it passed) */
    uint8_t finished[NDATA];
    uint8_t held[NDATA];        /* kept by the core (HELD or QUEUED) */
    uint8_t done[NDATA];
    uint32_t seq[NDATA];        /* order of keeping within its socket direction */
    uint8_t sidx[NDATA], dir[NDATA];
    uint16_t flight[NDATA];     /* finished, not yet done (defer_done); nflight <= NEXT_DATA */
    struct nke_order_item items[NDATA]; /* &items[i] is data_ctx i */
};

static struct plat P;
static uint8_t g_buffers[NKE_BUFFER_COUNT * NKE_BUFFER_SIZE];
/* 8-aligned and a multiple of 8 (it holds uint64_t): copied and compared by words. */
static struct nke_core C, SNAP;
NKE_STATIC_ASSERT(sizeof(struct nke_core) % 8u == 0, "core compared in 64-bit words");
static struct nke_sock SOCKS[8];
static struct nke_sock_id SIDS[NSID];
static struct nke_sock_id SID; /* SIDS[0], the socket most operations use */
static uint64_t NOW;
static uint32_t NEXT_DATA;
/* Per chunk slot: the id and deadline seen at the last check. */
static uint64_t SEEN_ID[NKE_CHUNK_TABLE_SIZE], SEEN_DEADLINE[NKE_CHUNK_TABLE_SIZE];
/* The starting state, built once (see the speed note above). */
static bool START_BUILT;
static struct plat START_P;
static struct nke_core START_C;
static struct nke_sock START_SOCKS[8];
static struct nke_sock_id START_SIDS[NSID];
static uint32_t START_NEXT_DATA;
/* The input set a capture config or closed the client: C.capture (5.6 KB,
 * the largest part of the core) is copied back only then. */
static bool CAPTURE_CHANGED;
/* Inputs run; every 1024th one's restore is checked against the whole start state. */
static uint32_t INPUTS;

NO_TRACE static bool p_emit(void *p, const void *rec, uint32_t size)
{
    const struct nke_nt_hdr *h = rec;
    (void)p;
    REQUIRE(size <= NKE_NT_MAX_SIZE && size % 8 == 0);
    /* a data record names the config in force and why: these configs
     * have no rules, so always their default */
    if (h->type == NKE_NT_DATA) {
        const struct nke_nt_data *d = rec;
        REQUIRE(size == sizeof(*d));
        REQUIRE(d->capture_tag == C.capture.tag && d->rule == NKE_RULE_DEFAULT);
    }
    P.ops_called++;
    return true;
}
NO_TRACE static void p_copy(void *p, void *ctx, uint32_t off, uint32_t len, void *dst)
{
    (void)p;
    (void)ctx;
    (void)off;
    P.ops_called++;
    /* touch both ends: ASan checks the buffer arithmetic */
    ((uint8_t *)dst)[0] = 1;
    ((uint8_t *)dst)[len - 1] = 2;
}
NO_TRACE static void p_finish(void *p, void *sock_ctx, void *data_ctx, uint32_t action, void *staged,
                     uint32_t staged_len, uint32_t reason)
{
    size_t i = (size_t)((struct nke_order_item *)data_ctx - P.items);
    (void)p;
    (void)sock_ctx;
    (void)reason;
    P.ops_called++;
    REQUIRE(i < NDATA && P.held[i] && !P.finished[i]);
    REQUIRE(action >= NKE_ACT_ALLOW && action <= NKE_ACT_DROP);
    /* stream order: the oldest piece kept on its socket direction first */
    REQUIRE(P.seq[i] == P.next_fin[P.sidx[i]][P.dir[i]]);
    P.next_fin[P.sidx[i]][P.dir[i]]++;
    P.finished[i] = 1;
    if (P.defer_done) {
        P.flight[P.nflight++] = (uint16_t)i;
    } else {
        P.done[i] = 1;
        nke_core_item_done(&C, &P.items[i]);
    }
    if (staged) {
        REQUIRE(action == NKE_ACT_ALLOW_MODIFIED);
        if (staged_len)
            REQUIRE(((uint8_t *)staged)[staged_len - 1] == ((uint8_t *)staged)[staged_len - 1]);
        free(staged);
        P.live_staged--;
    }
}
NO_TRACE static int p_stage(void *p, void **staged, uint32_t total, uint32_t off, const void *bytes,
                   uint32_t len)
{
    (void)p;
    P.ops_called++;
    REQUIRE((uint64_t)off + len <= total);
    if (*staged == NULL) {
        REQUIRE(off == 0);
        *staged = malloc(total ? total : 1);
        P.live_staged++;
    }
    if (len)
        memcpy((uint8_t *)*staged + off, bytes, len);
    return NKE_OK;
}
NO_TRACE static void p_unstage(void *p, void *staged)
{
    (void)p;
    P.ops_called++;
    free(staged);
    P.live_staged--;
}
static const struct nke_core_ops OPS = {p_emit, p_copy, p_finish, p_stage, p_unstage};

/* A config of only its header (no rules: the core takes the size in use).
 * Marks the capture changed for restore_start. */
NO_TRACE static void set_capture(uint32_t mode, uint32_t default_action, uint32_t tag)
{
    /* zero but for the header fields set here (the whole struct is 5.6 KB) */
    static struct nke_capture_config cfg;
    cfg.abi_version = NKE_ABI_VERSION;
    cfg.mode = mode;
    cfg.default_action = default_action;
    cfg.hold_timeout_ms = 50;
    cfg.nrules = 0;
    cfg.tag = tag;
    CAPTURE_CHANGED = true;
    REQUIRE(nke_core_set_capture(&C, &cfg, (uint32_t)offsetof(struct nke_capture_config, rules)) ==
            NKE_OK);
}

NO_TRACE static void open_client(void)
{
    struct nke_open_request req;
    struct nke_open_reply rep;
    memset(&req, 0, sizeof(req));
    req.abi_version = NKE_ABI_VERSION;
    REQUIRE(nke_core_client_open(&C, &req, &rep, 1) == NKE_OK);
    set_capture(NKE_CAPTURE_ALL, NKE_RULE_PASS, 1);
}

NO_TRACE static void attach(int k)
{
    struct nke_sock_info info;
    memset(&info, 0, sizeof(info));
    info.family = NKE_AF_INET;
    info.protocol = NKE_PROTO_TCP;
    SIDS[k] = nke_core_attach(&C, &info, NULL, 0);
    /* a new socket: its pieces are numbered afresh (the old one's are all
     * finished, detach saw to that) */
    P.next_seq[k][0] = P.next_seq[k][1] = 0;
    P.next_fin[k][0] = P.next_fin[k][1] = 0;
    SID = SIDS[0];
}

/* Reports every in-flight re-injection done, oldest first. */
NO_TRACE static void flush_done(void)
{
    int k;
    for (k = 0; k < P.nflight; k++) {
        uint16_t i = P.flight[k];
        REQUIRE(P.finished[i] && !P.done[i]);
        P.done[i] = 1;
        nke_core_item_done(&C, &P.items[i]);
    }
    P.nflight = 0;
}

/* The core's answer, or -1 when out of data records. */
NO_TRACE static int new_data(int k, uint32_t size, uint8_t dir, uint32_t flags)
{
    uint64_t id;
    uint32_t i = NEXT_DATA;
    bool busy;
    int r;
    if (i >= NDATA)
        return -1;
    busy = nke_core_order_busy(&C, SIDS[k], dir);
    /* recorded before the call: a queued piece may be finished inside it */
    P.held[i] = 1;
    P.sidx[i] = (uint8_t)k;
    P.dir[i] = (uint8_t)(dir - 1u);
    P.seq[i] = P.next_seq[k][dir - 1u];
    r = nke_core_data(&C, SIDS[k], dir, size, flags, NULL, &P.items[i], NOW, NOW, &id);
    /* nothing passes behind kept data, unless the platform said it must */
    if (busy && !(flags & NKE_CORE_DATA_F_NO_HOLD))
        REQUIRE(r == NKE_DATA_HELD || r == NKE_DATA_QUEUED);
    if (flags & NKE_CORE_DATA_F_NO_HOLD)
        REQUIRE(r == NKE_DATA_PASS || r == NKE_DATA_REPORTED);
    if (flags & NKE_CORE_DATA_F_KEEP)
        REQUIRE(r == NKE_DATA_HELD || r == NKE_DATA_QUEUED);
    if (r == NKE_DATA_HELD)
        REQUIRE(C.stats.bytes_kept <= NKE_KEPT_BYTES_MAX);
    if (r == NKE_DATA_HELD || r == NKE_DATA_QUEUED) {
        P.next_seq[k][dir - 1u]++;
        NEXT_DATA++;
    } else {
        REQUIRE(!P.finished[i]); /* passed: never the core's */
        P.held[i] = 0;
    }
    return r;
}

/* The slot of the chunk with this id, or -1 (the core's own lookup is
 * static; this one scans, as a client would have to). */
NO_COVERAGE static int find_chunk(uint64_t id)
{
    int ci;
    for (ci = 0; ci < (int)NKE_CHUNK_TABLE_SIZE; ci++)
        if (C.chunks[ci].state != NKE_CHUNK_FREE && C.chunks[ci].id == id)
            return ci;
    return -1;
}

NO_COVERAGE static void check_invariants(void)
{
    uint32_t b, i, k, held = 0, owned = 0, used = 0;
    uint64_t kept = 0; /* the budget: kept pieces not yet done, plus every staging in progress */
    for (b = 0; b < NKE_BUFFER_COUNT; b++)
        owned += C.pool.owner[b] != 0;
    REQUIRE(owned == nke_pool_in_use(&C.pool));
    for (i = 0; i < NKE_CHUNK_TABLE_SIZE; i++) {
        const struct nke_chunk *ch = &C.chunks[i];
        if (ch->state == NKE_CHUNK_FREE)
            continue;
        used++;
        REQUIRE(ch->nbuffers >= 1 && ch->nbuffers <= NKE_CHUNK_MAX_BUFFERS);
        for (k = 0; k < ch->nbuffers; k++) {
            bool released = (ch->released_mask >> k) & 1u;
            REQUIRE(ch->buffers[k] < NKE_BUFFER_COUNT);
            if (!released) {
                REQUIRE(C.pool.owner[ch->buffers[k]] == ch->id);
                owned--;
            }
        }
        if (ch->state == NKE_CHUNK_HELD) {
            size_t d = (size_t)((struct nke_order_item *)ch->data_ctx - P.items);
            REQUIRE(d < NDATA && P.held[d] && !P.finished[d]);
            REQUIRE(ch->deadline_ms >= ch->held_at_ms);
            REQUIRE(ch->deadline_ms <= ch->held_at_ms + NKE_HOLD_TOTAL_MAX_MS);
            if (SEEN_ID[i] == ch->id)
                REQUIRE(ch->deadline_ms >= SEEN_DEADLINE[i]);
            SEEN_ID[i] = ch->id;
            SEEN_DEADLINE[i] = ch->deadline_ms;
            held++;
            if (ch->staging)
                kept += ch->staged_total;
        } else {
            /* not held: a slot is kept only while the client owns a buffer */
            REQUIRE(ch->released_mask != (uint8_t)((1u << ch->nbuffers) - 1u));
        }
    }
    REQUIRE(owned == 0);
    REQUIRE(held == C.stats.chunks_pending);
    /* records past NEXT_DATA were never kept (new_data resets a passed one) */
    for (i = 0; i < NEXT_DATA; i++)
        if (P.held[i] && !P.done[i])
            kept += P.items[i].kept;
    REQUIRE(kept == C.stats.bytes_kept);
    /* the held list holds exactly the HELD chunks; free ring + used = table */
    REQUIRE(held == C.nheld);
    for (i = C.held_head, k = 0; i != NKE_CHUNK_NONE && k <= held; i = C.chunks[i].held_next, k++)
        REQUIRE(C.chunks[i].state == NKE_CHUNK_HELD);
    REQUIRE(k == held);
    REQUIRE(used + C.nchunk_free == NKE_CHUNK_TABLE_SIZE);
}

/* Word loops, not memcpy/memcmp: ASan's interceptors would check the
 * shadow of the whole core on every call. */
/* 16-byte vectors (SSE2 on x86-64, NEON on arm64: the baseline), four at a
 * time: the core is 12.8 KB and a refused response copies and compares it. */
typedef uint64_t vec2 __attribute__((vector_size(16)));

NO_COVERAGE WORD_LOOP static void snapshot(void)
{
    const uint8_t *src = (const uint8_t *)&C;
    uint8_t *dst = (uint8_t *)&SNAP;
    size_t i;
    for (i = 0; i + sizeof(vec2) <= sizeof(C); i += sizeof(vec2)) {
        vec2 v;
        __builtin_memcpy(&v, src + i, sizeof(v));
        __builtin_memcpy(dst + i, &v, sizeof(v));
    }
    for (; i < sizeof(C); i += 8u) {
        uint64_t w;
        __builtin_memcpy(&w, src + i, 8);
        __builtin_memcpy(dst + i, &w, 8);
    }
}

/* The core is what it was before the refused request, but for the counter. */
NO_COVERAGE WORD_LOOP static void require_unchanged_but_rejected(void)
{
    const uint8_t *a = (const uint8_t *)&SNAP, *b = (const uint8_t *)&C;
    vec2 d = {0, 0};
    uint64_t tail = 0;
    size_t i;
    SNAP.stats.responses_rejected++;
    for (i = 0; i + 4u * sizeof(vec2) <= sizeof(C); i += 4u * sizeof(vec2)) {
        vec2 x0, x1, x2, x3, y0, y1, y2, y3;
        __builtin_memcpy(&x0, a + i, 16);
        __builtin_memcpy(&y0, b + i, 16);
        __builtin_memcpy(&x1, a + i + 16, 16);
        __builtin_memcpy(&y1, b + i + 16, 16);
        __builtin_memcpy(&x2, a + i + 32, 16);
        __builtin_memcpy(&y2, b + i + 32, 16);
        __builtin_memcpy(&x3, a + i + 48, 16);
        __builtin_memcpy(&y3, b + i + 48, 16);
        d |= (x0 ^ y0) | (x1 ^ y1) | (x2 ^ y2) | (x3 ^ y3);
    }
    for (; i < sizeof(C); i += 8u) {
        uint64_t u, v;
        __builtin_memcpy(&u, a + i, 8);
        __builtin_memcpy(&v, b + i, 8);
        tail |= u ^ v;
    }
    REQUIRE((d[0] | d[1] | tail) == 0);
}

/* Reject => no state change, no op called. Accept => invariants. */
NO_TRACE static void respond(const uint8_t *msg, uint32_t len)
{
    int v = nke_core_validate_response(&C, msg, len), r;
    int before_ops = P.ops_called;
    if (v != NKE_OK)
        snapshot();
    r = nke_core_respond(&C, msg, len);
    REQUIRE(r == v);
    if (r != NKE_OK) {
        REQUIRE(r > 0 && r < NKE_ERR__COUNT);
        require_unchanged_but_rejected();
        REQUIRE(P.ops_called == before_ops);
    }
}

NO_COVERAGE static uint64_t pick_chunk(uint8_t sel)
{
    /* mostly chunks that exist, sometimes stale or never issued ids */
    if (sel < 200) {
        const struct nke_chunk *ch = &C.chunks[sel % NKE_CHUNK_TABLE_SIZE];
        if (ch->state != NKE_CHUNK_FREE)
            return ch->id;
    }
    return (uint64_t)(sel % 16u) + (sel & 0x80 ? C.next_chunk_id - 1u : 0u);
}

/* Issued, released since, and well-formed: the core must skip it. */
NO_COVERAGE static bool stale_verdict(const struct nke_verdict *v)
{
    return !(v->_pad0[0] | v->_pad0[1] | v->_pad0[2]) && v->action >= NKE_ACT_ALLOW &&
           v->action <= NKE_ACT_DROP && v->chunk_id != 0 && v->chunk_id < C.next_chunk_id &&
           find_chunk(v->chunk_id) < 0;
}

NO_COVERAGE static bool stale_release(const struct nke_release *r)
{
    return r->_pad0 == 0 && r->_pad1 == 0 && r->buffer < NKE_BUFFER_COUNT && r->chunk_id != 0 &&
           r->chunk_id < C.next_chunk_id && find_chunk(r->chunk_id) < 0;
}

/* The same response without its stale entries: validation must give the
 * same answer. */
NO_COVERAGE static void require_stale_entries_ignored(const uint8_t *msg, uint32_t len)
{
    static uint8_t out[NKE_RESPONSE_MAX_SIZE];
    struct nke_response_hdr h;
    uint32_t i, off = sizeof(h), nv = 0, nr = 0;
    const uint8_t *p = msg + sizeof(h);
    memcpy(&h, msg, sizeof(h));
    for (i = 0; i < h.nverdicts; i++, p += sizeof(struct nke_verdict)) {
        struct nke_verdict v;
        memcpy(&v, p, sizeof(v));
        if (!stale_verdict(&v)) {
            memcpy(out + off, &v, sizeof(v));
            off += sizeof(v);
            nv++;
        }
    }
    for (i = 0; i < h.nreleases; i++, p += sizeof(struct nke_release)) {
        struct nke_release r;
        memcpy(&r, p, sizeof(r));
        if (!stale_release(&r)) {
            memcpy(out + off, &r, sizeof(r));
            off += sizeof(r);
            nr++;
        }
    }
    if (nv == h.nverdicts && nr == h.nreleases)
        return;
    h.nverdicts = (uint16_t)nv;
    h.nreleases = (uint16_t)nr;
    h.size = off;
    memcpy(out, &h, sizeof(h));
    REQUIRE(nke_core_validate_response(&C, msg, len) == nke_core_validate_response(&C, out, off));
}

NO_TRACE static void structured_response(const uint8_t **pd, size_t *ps)
{
    static uint8_t msg[NKE_RESPONSE_MAX_SIZE];
    struct nke_response_hdr h;
    const uint8_t *d = *pd;
    size_t s = *ps;
    uint32_t nv, nr, i, off;
    if (s < 2)
        return;
    nv = d[0] % 6u;
    nr = d[1] % 10u;
    d += 2;
    s -= 2;
    memset(&h, 0, sizeof(h));
    h.abi_version = NKE_ABI_VERSION;
    h.nverdicts = (uint16_t)nv;
    h.nreleases = (uint16_t)nr;
    h.size = (uint32_t)(sizeof(h) + nv * sizeof(struct nke_verdict) + nr * sizeof(struct nke_release));
    memcpy(msg, &h, sizeof(h));
    off = sizeof(h);
    for (i = 0; i < nv; i++) {
        struct nke_verdict v;
        int ci;
        memset(&v, 0, sizeof(v));
        if (s >= 3) {
            v.chunk_id = pick_chunk(d[0]);
            v.action = (uint8_t)(d[1] % 5u); /* 0 (invalid) .. NKE_ACT_EXTEND */
            v.sock = SID;
            if ((ci = find_chunk(v.chunk_id)) >= 0) {
                v.sock = C.chunks[ci].sock;
                if (v.action == NKE_ACT_ALLOW_MODIFIED)
                    v.modified_len = C.chunks[ci].staged_total;
            }
            if (v.action == NKE_ACT_EXTEND) {
                static const uint32_t bounds[8] = {0u, 1u, 49u, 50u, 51u, NKE_HOLD_TOTAL_MAX_MS,
                                                   NKE_HOLD_TOTAL_MAX_MS + 1u, 0xFFFFFFFFu};
                v.hold_ms = (d[2] & 1) ? bounds[(d[2] >> 1) % 8u] : (uint32_t)(d[2] >> 1) * 40u;
            } else if (d[2] & 1)
                v.modified_len += d[2] >> 1u;
            if (d[2] == 0xFF)
                v._pad0[0] = 1;
            if (d[2] == 0xFD)
                v.sock.gen ^= 1u;
            d += 3;
            s -= 3;
        }
        memcpy(msg + off, &v, sizeof(v));
        off += sizeof(v);
    }
    for (i = 0; i < nr; i++) {
        struct nke_release r;
        memset(&r, 0, sizeof(r));
        if (s >= 2) {
            int ci;
            r.chunk_id = pick_chunk(d[0]);
            r.buffer = (uint16_t)(d[1] & 0x7Fu);
            if ((ci = find_chunk(r.chunk_id)) >= 0 && !(d[1] & 0x80))
                r.buffer = C.chunks[ci].buffers[d[1] % C.chunks[ci].nbuffers];
            d += 2;
            s -= 2;
        }
        memcpy(msg + off, &r, sizeof(r));
        off += sizeof(r);
    }
    *pd = d;
    *ps = s;
    require_stale_entries_ignored(msg, off);
    respond(msg, off);
}

NO_TRACE static void structured_put(const uint8_t **pd, size_t *ps)
{
    static uint8_t msg[sizeof(struct nke_put_data_hdr) + 256];
    struct nke_put_data_hdr h;
    const uint8_t *d = *pd;
    size_t s = *ps;
    int ci;
    if (s < 4)
        return;
    memset(&h, 0, sizeof(h));
    h.chunk_id = pick_chunk(d[0]);
    h.sock = SID;
    if ((ci = find_chunk(h.chunk_id)) >= 0) {
        h.sock = C.chunks[ci].sock;
        h.offset = C.chunks[ci].staged_len;
    }
    h.total_len = d[1];
    if (d[2] & 1)
        h.offset = d[2] >> 1;
    h.len = d[3] % 64u;
    d += 4;
    s -= 4;
    if (h.len > s)
        h.len = (uint32_t)s;
    memcpy(msg, &h, sizeof(h));
    memcpy(msg + sizeof(h), d, h.len);
    d += h.len;
    s -= h.len;
    snapshot();
    {
        int before_ops = P.ops_called;
        int r = nke_core_put_data(&C, msg, (uint32_t)(sizeof(h) + h.len));
        if (r != NKE_OK && r != NKE_ERR_NO_MEMORY) {
            require_unchanged_but_rejected();
            REQUIRE(P.ops_called == before_ops);
        }
    }
    *pd = d;
    *ps = s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Word copies and compares, not memcpy/memcmp: ASan's interceptors would
 * check the shadow of every byte on each call. */
NO_COVERAGE WORD_LOOP static void copy_bytes(void *dst, const void *src, size_t n)
{
    uint8_t *d = dst;
    const uint8_t *s = src;
    for (; n >= 8; n -= 8, d += 8, s += 8) {
        uint64_t w;
        __builtin_memcpy(&w, s, 8);
        __builtin_memcpy(d, &w, 8);
    }
    for (; n > 0; n--)
        *d++ = *s++;
}

NO_COVERAGE WORD_LOOP static bool same_bytes(const void *a, const void *b, size_t n)
{
    const uint8_t *x = a, *y = b;
    uint64_t diff = 0;
    for (; n >= 8; n -= 8, x += 8, y += 8) {
        uint64_t u, v;
        __builtin_memcpy(&u, x, 8);
        __builtin_memcpy(&v, y, 8);
        diff |= u ^ v;
    }
    for (; n > 0; n--)
        diff |= (uint64_t)(*x++ ^ *y++);
    return diff == 0;
}

/* Copies START's bytes [from, to) of an object back into the live one. */
#define RESTORE_RANGE(live, start, from, to) \
    copy_bytes((uint8_t *)&(live) + (from), (const uint8_t *)&(start) + (from), (to) - (from))
#define RESTORE_FIRST(arr, n) copy_bytes(P.arr, START_P.arr, (n) * sizeof(P.arr[0]))

/* The core and the platform an input found in its start state, whole; the
 * restore below copies back only what an input can have changed, and this
 * says it got all of it. */
NO_COVERAGE static void require_start_state(void)
{
    REQUIRE(same_bytes(&C, &START_C, sizeof(C)));
    REQUIRE(same_bytes(&P, &START_P, sizeof(P)));
    REQUIRE(same_bytes(SOCKS, START_SOCKS, sizeof(SOCKS)));
}

/* The start state of every input: a core with a client, capture ALL, two
 * sockets and four held chunks. Built on the first input; after that the
 * previous input's changes are undone, at a cost in proportion to what it
 * did (the core keeps no pointer into itself, only to P, SOCKS and
 * g_buffers, which stay where they are):
 *  - the core but for its chunk table and capture config: about 1 KB;
 *  - a chunk slot only when it held a chunk in the start state or one the
 *    input issued (ids [START_C.next_chunk_id, C.next_chunk_id): a chunk's
 *    slot is its id's low bits, nke_core.h; the core writes no other slot);
 *  - the capture config only when the input changed it;
 *  - per piece of data only the entries [0, NEXT_DATA] the input used.
 * Every 1024th input checks the result against the whole start state. */
NO_COVERAGE static void restore_start(void)
{
    const size_t chunks_at = offsetof(struct nke_core, chunks);
    const size_t chunks_end = chunks_at + sizeof(C.chunks);
    const size_t capture_at = offsetof(struct nke_core, capture);
    const size_t capture_end = capture_at + sizeof(C.capture);
    uint64_t issued, id;
    uint32_t i, used;
    if (!START_BUILT) {
        memset(&P, 0, sizeof(P));
        memset(SOCKS, 0, sizeof(SOCKS));
        NOW = 1000;
        NEXT_DATA = 0;
        nke_core_init(&C, &OPS, &P, g_buffers, SOCKS, 8, 1, 224);
        open_client();
        attach(0);
        attach(1);
        /* held chunks to work on: 1, 2 and 3 buffers (multi-buffer chunks
         * reach the per-buffer release rules; p_copy touches 2 bytes each) */
        new_data(0, 10, NKE_DIR_OUT, 0);
        new_data(0, NKE_BUFFER_SIZE + 5, NKE_DIR_IN, 0);
        new_data(0, 2 * NKE_BUFFER_SIZE + 1, NKE_DIR_OUT, 0);
        new_data(0, 1, NKE_DIR_IN, 0);
        check_invariants();
        START_P = P;
        START_C = C;
        memcpy(START_SOCKS, SOCKS, sizeof(SOCKS));
        memcpy(START_SIDS, SIDS, sizeof(SIDS));
        START_NEXT_DATA = NEXT_DATA;
        START_BUILT = true;
        return;
    }
    issued = C.next_chunk_id - START_C.next_chunk_id;
    if (issued >= NKE_CHUNK_TABLE_SIZE) {
        RESTORE_RANGE(C, START_C, chunks_at, chunks_end);
    } else {
        for (id = START_C.next_chunk_id; id < C.next_chunk_id; id++) {
            i = (uint32_t)(id & (NKE_CHUNK_TABLE_SIZE - 1u));
            copy_bytes(&C.chunks[i], &START_C.chunks[i], sizeof(C.chunks[i]));
        }
        for (i = 0; i < NKE_CHUNK_TABLE_SIZE; i++)
            if (START_C.chunks[i].state != NKE_CHUNK_FREE)
                copy_bytes(&C.chunks[i], &START_C.chunks[i], sizeof(C.chunks[i]));
    }
    RESTORE_RANGE(C, START_C, 0, chunks_at);
    RESTORE_RANGE(C, START_C, chunks_end, capture_at);
    RESTORE_RANGE(C, START_C, capture_end, sizeof(C));
    if (CAPTURE_CHANGED)
        RESTORE_RANGE(C, START_C, capture_at, capture_end);
    CAPTURE_CHANGED = false;

    used = NEXT_DATA + 1u < NDATA ? NEXT_DATA + 1u : NDATA;
    RESTORE_RANGE(P, START_P, 0, offsetof(struct plat, finished));
    RESTORE_FIRST(finished, used);
    RESTORE_FIRST(held, used);
    RESTORE_FIRST(done, used);
    RESTORE_FIRST(seq, used);
    RESTORE_FIRST(sidx, used);
    RESTORE_FIRST(dir, used);
    RESTORE_FIRST(flight, used);
    RESTORE_FIRST(items, used);

    copy_bytes(SOCKS, START_SOCKS, sizeof(SOCKS));
    SIDS[0] = START_SIDS[0];
    SIDS[1] = START_SIDS[1];
    SID = SIDS[0];
    NEXT_DATA = START_NEXT_DATA;
    NOW = 1000;
    if ((++INPUTS & 1023u) == 0)
        require_start_state();
}

/* After a client close and every re-injection in flight done: everything
 * kept went back to the platform (what queued behind an in-flight item with
 * no client left too), every buffer to the pool, every staged byte to the
 * allocator. */
NO_COVERAGE static void require_all_finished(void)
{
    uint32_t i;
    /* past NEXT_DATA nothing was kept (new_data resets a passed piece) */
    for (i = 0; i < NEXT_DATA; i++) {
        REQUIRE(P.held[i] == P.finished[i]);
        REQUIRE(P.finished[i] == P.done[i]);
    }
    REQUIRE(C.stats.bytes_kept == 0);
    REQUIRE(P.live_staged == 0);
    REQUIRE(nke_pool_in_use(&C.pool) == 0);
}

/* End of an input: the next one starts from the copy of the start state,
 * so only the heap has to be given back (the core would do it on a close). */
NO_COVERAGE static void free_left_staged(void)
{
    uint32_t i;
    for (i = 0; i < NKE_CHUNK_TABLE_SIZE; i++) {
        struct nke_chunk *ch = &C.chunks[i];
        if (ch->state != NKE_CHUNK_FREE && ch->staging && ch->staged != NULL) {
            free(ch->staged);
            ch->staged = NULL;
            P.live_staged--;
        }
    }
    /* decided ALLOW_MODIFIED, still queued behind earlier data: the staged
     * bytes travel with the item until its turn */
    for (i = 0; i < NEXT_DATA; i++) {
        if (P.held[i] && !P.finished[i] && P.items[i].staged != NULL) {
            free(P.items[i].staged);
            P.items[i].staged = NULL;
            P.live_staged--;
        }
    }
    REQUIRE(P.live_staged == 0);
}

/* The dispatch keeps its coverage: its edges tell operations apart that
 * reach the same core functions (a detach from new data on socket 1). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    restore_start();
    memset(SEEN_ID, 0, sizeof(SEEN_ID));

    while (size > 0) {
        uint8_t op = data[0];
        data++;
        size--;
        switch (op % 12u) {
        case 0: { /* raw response */
            uint16_t len;
            if (size < 2) {
                size = 0;
                break;
            }
            memcpy(&len, data, 2);
            data += 2;
            size -= 2;
            if (len > size)
                len = (uint16_t)size;
            respond(data, len);
            data += len;
            size -= len;
            break;
        }
        case 1:
            structured_response(&data, &size);
            break;
        case 2: { /* raw put_data */
            uint16_t len;
            if (size < 2) {
                size = 0;
                break;
            }
            memcpy(&len, data, 2);
            data += 2;
            size -= 2;
            if (len > size)
                len = (uint16_t)size;
            (void)nke_core_put_data(&C, data, len);
            data += len;
            size -= len;
            break;
        }
        case 3:
            structured_put(&data, &size);
            break;
        case 4:
            new_data(0, 1u + (uint32_t)(op >> 3) * 9000u, (op & 0x80) ? NKE_DIR_IN : NKE_DIR_OUT, 0);
            break;
        case 5:
            NOW += (uint64_t)(op >> 3) * 4u;
            (void)nke_core_expire(&C, NOW, NOW);
            break;
        case 6: {
            int k = (op >> 4) & 1;
            nke_core_detach(&C, SIDS[k], NOW);
            attach(k);
            break;
        }
        case 7:
            if (op & 0x80) {
                nke_core_client_close(&C);
                CAPTURE_CHANGED = true;
                flush_done();
                require_all_finished();
                open_client();
            } else {
                /* switch between holding everything and reporting only */
                set_capture((op & 0x40) ? NKE_CAPTURE_RULES : NKE_CAPTURE_ALL, NKE_RULE_REPORT, op);
            }
            break;
        case 8: /* the close flush of one socket direction */
            nke_core_release_socket(&C, SIDS[(op >> 4) & 1], (op & 0x80) ? NKE_DIR_IN : NKE_DIR_OUT,
                                    (op & 0x40) ? NKE_ACT_DROP : NKE_ACT_ALLOW,
                                    NKE_RELEASE_SOCKET_CLOSING, NOW);
            break;
        case 9: /* re-injections finish later, or now */
            if (op & 0x80)
                P.defer_done = !P.defer_done;
            else
                flush_done();
            break;
        case 10: /* capture NOTHING, or a reporting-only default: later data may only queue */
            set_capture((op & 0x80) ? NKE_CAPTURE_NOTHING : NKE_CAPTURE_RULES,
                        (op & 0x40) ? NKE_RULE_PASS : NKE_RULE_REPORT, op);
            break;
        case 11: { /* the other socket, and the pieces of a cut write */
            uint8_t dir = (op & 0x10) ? NKE_DIR_IN : NKE_DIR_OUT;
            int r = new_data(1, 1u + (uint32_t)(op >> 5) * 70000u, dir,
                             (op & 0x08) ? NKE_CORE_DATA_F_KEEP : 0u);
            /* as a platform does: the rest of a write kept whole or passed whole */
            if ((op & 0x04) && r >= 0)
                new_data(1, 100, dir,
                         r == NKE_DATA_HELD || r == NKE_DATA_QUEUED ? NKE_CORE_DATA_F_KEEP
                                                                    : NKE_CORE_DATA_F_NO_HOLD);
            break;
        }
        }
        check_invariants();
    }
    free_left_staged();
    return 0;
}

/*
 * Fuzz target: response validation and apply, put_data staging, expiry,
 * detach and client close on a core holding chunks.
 *
 * Input is a sequence of operations (first byte of each picks one): raw
 * response bytes, a structured response built from chunk ids and buffers the
 * core really issued (to get past the first checks), raw or structured
 * put_data, new data held, time passing, detach, client close/reopen.
 * Structured verdicts include NKE_ACT_EXTEND with hold_ms around the
 * bounds (0, the hold timeout, the cap and past it).
 * Invariants checked after every operation:
 *  - validate_response and respond agree; a rejected response leaves the
 *    core byte-identical (but for responses_rejected) and calls no op;
 *  - a held chunk's deadline never moves earlier and never past
 *    held_at_ms + NKE_HOLD_TOTAL_MAX_MS (the cap on its total hold);
 *  - the pool and the chunk table agree on who owns every buffer;
 *  - chunks_pending counts the HELD chunks; every data_ctx is finished at
 *    most once, and never while its chunk is still HELD;
 * and at the end, after client close, every held data_ctx was finished
 * exactly once and no staged allocation is left (LeakSanitizer too).
 */
#include "nke_core.h"

#include <stdlib.h>
#include <string.h>

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)
#define NDATA 256

struct plat {
    int ops_called;
    int live_staged;
    uint8_t finished[NDATA];
    uint8_t held[NDATA];
    uint8_t dummy[NDATA];    /* &dummy[i] is data_ctx i */
};

static struct plat P;
static uint8_t g_buffers[NKE_BUFFER_COUNT * NKE_BUFFER_SIZE];
static struct nke_core C, SNAP;
static struct nke_sock SOCKS[8];
static struct nke_sock_id SID;
static uint64_t NOW;
static uint32_t NEXT_DATA;
/* Per chunk slot: the id and deadline seen at the last check. */
static uint64_t SEEN_ID[NKE_CHUNK_TABLE_SIZE], SEEN_DEADLINE[NKE_CHUNK_TABLE_SIZE];

static bool p_emit(void *p, const void *rec, uint32_t size)
{
    (void)p;
    (void)rec;
    REQUIRE(size <= NKE_NT_MAX_SIZE && size % 8 == 0);
    P.ops_called++;
    return true;
}
static void p_copy(void *p, void *ctx, uint32_t off, uint32_t len, void *dst)
{
    (void)p;
    (void)ctx;
    (void)off;
    P.ops_called++;
    /* touch both ends: ASan checks the buffer arithmetic */
    ((uint8_t *)dst)[0] = 1;
    ((uint8_t *)dst)[len - 1] = 2;
}
static void p_finish(void *p, void *sock_ctx, void *data_ctx, uint32_t action, void *staged,
                     uint32_t staged_len, uint32_t reason)
{
    size_t i = (size_t)((uint8_t *)data_ctx - P.dummy);
    (void)p;
    (void)sock_ctx;
    (void)reason;
    P.ops_called++;
    REQUIRE(i < NDATA && P.held[i] && !P.finished[i]);
    REQUIRE(action >= NKE_ACT_ALLOW && action <= NKE_ACT_DROP);
    P.finished[i] = 1;
    if (staged) {
        REQUIRE(action == NKE_ACT_ALLOW_MODIFIED);
        if (staged_len)
            REQUIRE(((uint8_t *)staged)[staged_len - 1] == ((uint8_t *)staged)[staged_len - 1]);
        free(staged);
        P.live_staged--;
    }
}
static int p_stage(void *p, void **staged, uint32_t total, uint32_t off, const void *bytes,
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
static void p_unstage(void *p, void *staged)
{
    (void)p;
    P.ops_called++;
    free(staged);
    P.live_staged--;
}
static const struct nke_core_ops OPS = {p_emit, p_copy, p_finish, p_stage, p_unstage};

static void open_client(void)
{
    struct nke_open_request req;
    struct nke_open_reply rep;
    static struct nke_capture_config cfg;
    memset(&req, 0, sizeof(req));
    req.abi_version = NKE_ABI_VERSION;
    REQUIRE(nke_core_client_open(&C, &req, &rep, 1) == NKE_OK);
    memset(&cfg, 0, sizeof(cfg));
    cfg.abi_version = NKE_ABI_VERSION;
    cfg.mode = NKE_CAPTURE_ALL;
    cfg.hold_timeout_ms = 50;
    REQUIRE(nke_core_set_capture(&C, &cfg, sizeof(cfg)) == NKE_OK);
}

static void attach(void)
{
    struct nke_sock_info info;
    memset(&info, 0, sizeof(info));
    info.family = NKE_AF_INET;
    info.protocol = NKE_PROTO_TCP;
    SID = nke_core_attach(&C, &info, NULL, 0);
}

static void new_data(uint32_t size, uint8_t dir)
{
    uint64_t id;
    uint32_t i = NEXT_DATA;
    int r;
    if (i >= NDATA)
        return;
    r = nke_core_data(&C, SID, dir, size, 0, NULL, &P.dummy[i], NOW, NOW, &id);
    if (r == NKE_DATA_HELD) {
        P.held[i] = 1;
        NEXT_DATA++;
    }
}

static void check_invariants(void)
{
    uint32_t b, i, k, held = 0, owned = 0;
    for (b = 0; b < NKE_BUFFER_COUNT; b++)
        if (C.pool.owner[b] != 0)
            owned++;
    REQUIRE(owned == nke_pool_in_use(&C.pool));
    for (i = 0; i < NKE_CHUNK_TABLE_SIZE; i++) {
        const struct nke_chunk *ch = &C.chunks[i];
        if (ch->state == NKE_CHUNK_FREE)
            continue;
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
            size_t d = (size_t)((uint8_t *)ch->data_ctx - P.dummy);
            REQUIRE(d < NDATA && P.held[d] && !P.finished[d]);
            REQUIRE(ch->deadline_ms >= ch->held_at_ms);
            REQUIRE(ch->deadline_ms <= ch->held_at_ms + NKE_HOLD_TOTAL_MAX_MS);
            if (SEEN_ID[i] == ch->id)
                REQUIRE(ch->deadline_ms >= SEEN_DEADLINE[i]);
            SEEN_ID[i] = ch->id;
            SEEN_DEADLINE[i] = ch->deadline_ms;
            held++;
        } else {
            /* not held: a slot is kept only while the client owns a buffer */
            REQUIRE(ch->released_mask != (uint8_t)((1u << ch->nbuffers) - 1u));
        }
    }
    REQUIRE(owned == 0);
    REQUIRE(held == C.stats.chunks_pending);
    /* the held list holds exactly the HELD chunks; free ring + used = table */
    REQUIRE(held == C.nheld);
    for (i = C.held_head, k = 0; i != NKE_CHUNK_NONE && k <= held; i = C.chunks[i].held_next, k++)
        REQUIRE(C.chunks[i].state == NKE_CHUNK_HELD);
    REQUIRE(k == held);
    {
        uint32_t used = 0;
        for (i = 0; i < NKE_CHUNK_TABLE_SIZE; i++)
            used += C.chunks[i].state != NKE_CHUNK_FREE;
        REQUIRE(used + C.nchunk_free == NKE_CHUNK_TABLE_SIZE);
    }
}

/* Reject => no state change, no op called. Accept => invariants. */
static void respond(const uint8_t *msg, uint32_t len)
{
    int v = nke_core_validate_response(&C, msg, len), r;
    int before_ops = P.ops_called;
    memcpy(&SNAP, &C, sizeof(C));
    r = nke_core_respond(&C, msg, len);
    REQUIRE(r == v);
    if (r != NKE_OK) {
        REQUIRE(r > 0 && r < NKE_ERR__COUNT);
        SNAP.stats.responses_rejected++;
        REQUIRE(memcmp(&SNAP, &C, sizeof(C)) == 0);
        REQUIRE(P.ops_called == before_ops);
    }
}

static uint64_t pick_chunk(uint8_t sel)
{
    /* mostly chunks that exist, sometimes stale or never issued ids */
    if (sel < 200) {
        const struct nke_chunk *ch = &C.chunks[sel % NKE_CHUNK_TABLE_SIZE];
        if (ch->state != NKE_CHUNK_FREE)
            return ch->id;
    }
    return (uint64_t)(sel % 16u) + (sel & 0x80 ? C.next_chunk_id - 1u : 0u);
}

static void structured_response(const uint8_t **pd, size_t *ps)
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
        const struct nke_chunk *ch;
        int ci;
        memset(&v, 0, sizeof(v));
        if (s >= 3) {
            v.chunk_id = pick_chunk(d[0]);
            v.action = (uint8_t)(d[1] % 5u); /* 0 (invalid) .. NKE_ACT_EXTEND */
            v.sock = SID;
            for (ci = 0; ci < (int)NKE_CHUNK_TABLE_SIZE; ci++) {
                ch = &C.chunks[ci];
                if (ch->state != NKE_CHUNK_FREE && ch->id == v.chunk_id) {
                    v.sock = ch->sock;
                    if (v.action == NKE_ACT_ALLOW_MODIFIED)
                        v.modified_len = ch->staged_total;
                }
            }
            if (v.action == NKE_ACT_EXTEND) {
                static const uint32_t bounds[8] = {0u, 1u, 49u, 50u, 51u, NKE_HOLD_TOTAL_MAX_MS,
                                                   NKE_HOLD_TOTAL_MAX_MS + 1u, 0xFFFFFFFFu};
                v.hold_ms = (d[2] & 1) ? bounds[(d[2] >> 1) % 8u] : (uint32_t)(d[2] >> 1) * 40u;
            } else if (d[2] & 1)
                v.modified_len += d[2] >> 1;
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
            for (ci = 0; ci < (int)NKE_CHUNK_TABLE_SIZE; ci++) {
                const struct nke_chunk *ch = &C.chunks[ci];
                if (ch->state != NKE_CHUNK_FREE && ch->id == r.chunk_id && !(d[1] & 0x80))
                    r.buffer = ch->buffers[d[1] % ch->nbuffers];
            }
            d += 2;
            s -= 2;
        }
        memcpy(msg + off, &r, sizeof(r));
        off += sizeof(r);
    }
    *pd = d;
    *ps = s;
    respond(msg, off);
}

static void structured_put(const uint8_t **pd, size_t *ps)
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
    for (ci = 0; ci < (int)NKE_CHUNK_TABLE_SIZE; ci++)
        if (C.chunks[ci].state != NKE_CHUNK_FREE && C.chunks[ci].id == h.chunk_id) {
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
    memcpy(&SNAP, &C, sizeof(C));
    {
        int before_ops = P.ops_called;
        int r = nke_core_put_data(&C, msg, (uint32_t)(sizeof(h) + h.len));
        if (r != NKE_OK && r != NKE_ERR_NO_MEMORY) {
            SNAP.stats.responses_rejected++;
            REQUIRE(memcmp(&SNAP, &C, sizeof(C)) == 0);
            REQUIRE(P.ops_called == before_ops);
        }
    }
    *pd = d;
    *ps = s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t i;
    memset(&P, 0, sizeof(P));
    memset(SOCKS, 0, sizeof(SOCKS));
    NOW = 1000;
    NEXT_DATA = 0;
    memset(SEEN_ID, 0, sizeof(SEEN_ID));
    nke_core_init(&C, &OPS, &P, g_buffers, SOCKS, 8, 1, 224);
    open_client();
    attach();
    /* some held chunks to work on: 1, 2 and 3 buffers */
    new_data(10, NKE_DIR_OUT);
    new_data(NKE_BUFFER_SIZE + 5, NKE_DIR_IN);
    new_data(2 * NKE_BUFFER_SIZE + 1, NKE_DIR_OUT);
    new_data(1, NKE_DIR_IN);
    check_invariants();

    while (size > 0) {
        uint8_t op = data[0];
        data++;
        size--;
        switch (op % 8u) {
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
            new_data(1u + (uint32_t)(op >> 3) * 9000u, (op & 0x80) ? NKE_DIR_IN : NKE_DIR_OUT);
            break;
        case 5:
            NOW += (uint64_t)(op >> 3) * 4u;
            (void)nke_core_expire(&C, NOW, NOW);
            break;
        case 6:
            nke_core_detach(&C, SID, NOW);
            attach();
            break;
        case 7:
            if (op & 0x80) {
                nke_core_client_close(&C);
                open_client();
            } else {
                /* switch between holding everything and reporting only */
                static struct nke_capture_config cfg;
                memset(&cfg, 0, sizeof(cfg));
                cfg.abi_version = NKE_ABI_VERSION;
                cfg.mode = (op & 0x40) ? NKE_CAPTURE_RULES : NKE_CAPTURE_ALL;
                cfg.default_action = NKE_RULE_REPORT;
                cfg.hold_timeout_ms = 50;
                REQUIRE(nke_core_set_capture(&C, &cfg, sizeof(cfg)) == NKE_OK);
            }
            break;
        }
        check_invariants();
    }
    nke_core_client_close(&C);
    for (i = 0; i < NDATA; i++)
        REQUIRE(P.held[i] == P.finished[i]);
    REQUIRE(P.live_staged == 0);
    REQUIRE(nke_pool_in_use(&C.pool) == 0);
    return 0;
}

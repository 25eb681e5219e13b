/*
 * Unit tests of kext/core (plain C, no framework). Each TEST is a function;
 * a test fails when any CHECK in it fails. The last line of output is
 * `N passed, N failed` (tests, not checks).
 *
 * The fake platform below records every ops call so tests assert what the
 * core asked the platform to do (finish, stage, emit), not internal state.
 */
#include "nke_core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* ======================================================================== */
/* Fake platform                                                             */
/* ======================================================================== */

#define MAX_RECS 2048
#define MAX_FINISH 2048

struct held_data {          /* what data_ctx points at: the "original" bytes */
    struct nke_order_item item; /* first, as the core requires of every data_ctx */
    uint8_t *bytes;
    uint32_t len;
};

struct finish_call {
    void *sock_ctx;
    void *data_ctx;
    uint32_t action, reason, staged_len;
    uint8_t staged[256];    /* first bytes of the staged data */
};

struct fake {
    struct nke_core *core;  /* finish reports each item done at once (as nke-emud does) */
    bool queue_full;
    uint32_t max_rec;       /* nonzero: records larger than this do not fit in the queue */
    int nrecs;
    uint8_t recs[MAX_RECS][NKE_NT_MAX_SIZE];
    int nfinish;
    struct finish_call finish[MAX_FINISH];
    int stage_calls, unstage_calls, live_staged;
    bool stage_fail;
};

static bool fake_emit(void *platform, const void *rec, uint32_t size)
{
    struct fake *f = (struct fake *)platform;
    if (f->queue_full || f->nrecs >= MAX_RECS || size > NKE_NT_MAX_SIZE ||
        (f->max_rec && size > f->max_rec))
        return false;
    memcpy(f->recs[f->nrecs++], rec, size);
    return true;
}

static void fake_copy(void *platform, void *data_ctx, uint32_t offset, uint32_t len, void *dst)
{
    struct held_data *d = (struct held_data *)data_ctx;
    (void)platform;
    memcpy(dst, d->bytes + offset, len);
}

static void fake_finish(void *platform, void *sock_ctx, void *data_ctx, uint32_t action,
                        void *staged, uint32_t staged_len, uint32_t reason)
{
    struct fake *f = (struct fake *)platform;
    struct finish_call *fc = &f->finish[f->nfinish++ % MAX_FINISH];
    fc->sock_ctx = sock_ctx;
    fc->data_ctx = data_ctx;
    fc->action = action;
    fc->reason = reason;
    fc->staged_len = staged_len;
    if (staged)
        memcpy(fc->staged, staged, staged_len < sizeof(fc->staged) ? staged_len : sizeof(fc->staged));
    if (staged) {
        free(staged);
        f->live_staged--;
    }
    if (f->core)
        nke_core_item_done(f->core, (struct nke_order_item *)data_ctx);
}

static int fake_stage(void *platform, void **staged, uint32_t total_len, uint32_t offset,
                      const void *bytes, uint32_t len)
{
    struct fake *f = (struct fake *)platform;
    f->stage_calls++;
    if (f->stage_fail)
        return NKE_ERR_NO_MEMORY;
    if (*staged == NULL) {
        *staged = malloc(total_len ? total_len : 1);
        if (*staged == NULL)
            return NKE_ERR_NO_MEMORY;
        f->live_staged++;
    }
    memcpy((uint8_t *)*staged + offset, bytes, len);
    return NKE_OK;
}

static void fake_unstage(void *platform, void *staged)
{
    struct fake *f = (struct fake *)platform;
    f->unstage_calls++;
    f->live_staged--;
    free(staged);
}

static const struct nke_core_ops fake_ops = {fake_emit, fake_copy, fake_finish, fake_stage,
                                             fake_unstage};

static uint8_t g_buffers[NKE_BUFFER_COUNT * NKE_BUFFER_SIZE];

/* A core with a client open, capture ALL and one TCP socket. */
struct fixture {
    struct fake f;
    struct nke_core c;
    struct nke_sock socks[16];
    struct nke_sock_id sid;
    int sock_ctx_marker;
    uint8_t payload[NKE_CHUNK_MAX_BYTES];
    struct held_data data[64];
};

static struct fixture *fixture_new(uint32_t mode)
{
    struct fixture *x = (struct fixture *)calloc(1, sizeof(*x));
    struct nke_open_request req;
    struct nke_open_reply rep;
    struct nke_sock_info info;
    struct nke_capture_config cfg;
    uint32_t i;
    for (i = 0; i < sizeof(x->payload); i++)
        x->payload[i] = (uint8_t)(i * 7u + 3u);
    for (i = 0; i < 64; i++) {
        x->data[i].bytes = x->payload;
        x->data[i].len = sizeof(x->payload);
    }
    nke_core_init(&x->c, &fake_ops, &x->f, g_buffers, x->socks, 16, 0x1234, 224);
    x->f.core = &x->c;
    memset(&req, 0, sizeof(req));
    req.abi_version = NKE_ABI_VERSION;
    req.client_pid = 42;
    if (nke_core_client_open(&x->c, &req, &rep, 99) != NKE_OK)
        abort();
    memset(&info, 0, sizeof(info));
    info.pid = 500;
    info.uid = 501;
    info.family = NKE_AF_INET;
    info.type = 1;
    info.protocol = NKE_PROTO_TCP;
    strcpy(info.comm, "curl");
    x->sid = nke_core_attach(&x->c, &info, &x->sock_ctx_marker, 1);
    memset(&cfg, 0, sizeof(cfg));
    cfg.abi_version = NKE_ABI_VERSION;
    cfg.mode = mode;
    if (nke_core_set_capture(&x->c, &cfg, sizeof(cfg)) != NKE_OK)
        abort();
    x->f.nrecs = 0;
    return x;
}

static void fixture_free(struct fixture *x)
{
    nke_core_client_close(&x->c);
    free(x);
}

static uint64_t hold(struct fixture *x, int di, uint32_t size, uint64_t now_ms)
{
    uint64_t id = 0;
    int r = nke_core_data(&x->c, x->sid, NKE_DIR_OUT, size, 0, NULL, &x->data[di], now_ms,
                          now_ms * 1000000u, &id);
    return r == NKE_DATA_HELD ? id : 0;
}

static const struct nke_chunk *chunk_of(struct fixture *x, uint64_t id)
{
    uint32_t i;
    for (i = 0; i < NKE_CHUNK_TABLE_SIZE; i++)
        if (x->c.chunks[i].state != NKE_CHUNK_FREE && x->c.chunks[i].id == id)
            return &x->c.chunks[i];
    return NULL;
}

/* Response builder. */
struct resp {
    /* One entry more than allowed of each, to build over-long responses. */
    uint8_t bytes[NKE_RESPONSE_MAX_SIZE + 64];
    struct nke_response_hdr h;
    struct nke_verdict v[NKE_RESPONSE_MAX_VERDICTS + 1];
    struct nke_release r[NKE_RESPONSE_MAX_RELEASES + 1];
};

static uint32_t resp_build(struct resp *m)
{
    uint32_t size = (uint32_t)(sizeof(m->h) + m->h.nverdicts * sizeof(struct nke_verdict) +
                               m->h.nreleases * sizeof(struct nke_release));
    if (m->h.abi_version == 0)
        m->h.abi_version = NKE_ABI_VERSION;
    if (m->h.size == 0)
        m->h.size = size;
    memcpy(m->bytes, &m->h, sizeof(m->h));
    memcpy(m->bytes + sizeof(m->h), m->v, m->h.nverdicts * sizeof(struct nke_verdict));
    memcpy(m->bytes + sizeof(m->h) + m->h.nverdicts * sizeof(struct nke_verdict), m->r,
           m->h.nreleases * sizeof(struct nke_release));
    return size;
}

static void add_verdict(struct resp *m, uint64_t chunk, struct nke_sock_id sock, uint8_t action,
                        uint32_t mod_len)
{
    struct nke_verdict *v = &m->v[m->h.nverdicts++];
    memset(v, 0, sizeof(*v));
    v->chunk_id = chunk;
    v->sock = sock;
    v->action = action;
    v->modified_len = mod_len;
}

static void add_release(struct resp *m, uint64_t chunk, uint16_t buf)
{
    struct nke_release *r = &m->r[m->h.nreleases++];
    memset(r, 0, sizeof(*r));
    r->chunk_id = chunk;
    r->buffer = buf;
}

static void add_releases_of(struct resp *m, struct fixture *x, uint64_t id)
{
    const struct nke_chunk *ch = chunk_of(x, id);
    uint32_t i;
    for (i = 0; ch && i < ch->nbuffers; i++)
        add_release(m, id, ch->buffers[i]);
}

/* ======================================================================== */
/* Pool                                                                      */
/* ======================================================================== */

static void test_pool_alloc_all_or_none(void)
{
    struct nke_pool p;
    uint16_t out[NKE_CHUNK_MAX_BUFFERS];
    uint8_t seen[NKE_BUFFER_COUNT] = {0};
    uint32_t i, k;
    nke_pool_init(&p);
    for (i = 0; i < NKE_BUFFER_COUNT / NKE_CHUNK_MAX_BUFFERS; i++) {
        CHECK_EQ(nke_pool_alloc(&p, i + 1, NKE_CHUNK_MAX_BUFFERS, out), NKE_OK);
        for (k = 0; k < NKE_CHUNK_MAX_BUFFERS; k++) {
            CHECK(out[k] < NKE_BUFFER_COUNT);
            if (out[k] < NKE_BUFFER_COUNT) {
                CHECK(!seen[out[k]]);
                seen[out[k]] = 1;
            }
        }
    }
    CHECK_EQ(nke_pool_in_use(&p), NKE_BUFFER_COUNT);
    CHECK_EQ(nke_pool_alloc(&p, 100, 1, out), NKE_ERR_NO_MEMORY);
    CHECK_EQ(nke_pool_free(&p, 5), NKE_OK);
    /* two wanted, one free: nothing taken */
    CHECK_EQ(nke_pool_alloc(&p, 101, 2, out), NKE_ERR_NO_MEMORY);
    CHECK_EQ(nke_pool_in_use(&p), NKE_BUFFER_COUNT - 1);
    CHECK_EQ(nke_pool_alloc(&p, 102, 1, out), NKE_OK);
    CHECK_EQ(out[0], 5);
    CHECK_EQ(p.owner[5], 102);
    CHECK_EQ(nke_pool_alloc(&p, 103, 0, out), NKE_ERR_SIZE);
    CHECK_EQ(nke_pool_alloc(&p, 103, NKE_CHUNK_MAX_BUFFERS + 1, out), NKE_ERR_SIZE);
    CHECK_EQ(nke_pool_alloc(&p, 0, 1, out), NKE_ERR_SIZE);
}

static void test_pool_terminator(void)
{
    struct nke_pool p;
    uint16_t out[NKE_CHUNK_MAX_BUFFERS];
    uint32_t k;
    nke_pool_init(&p);
    CHECK_EQ(nke_pool_alloc(&p, 1, 3, out), NKE_OK);
    for (k = 3; k < NKE_CHUNK_MAX_BUFFERS; k++)
        CHECK_EQ(out[k], NKE_BUF_NONE);
    CHECK_EQ(nke_pool_alloc(&p, 2, NKE_CHUNK_MAX_BUFFERS, out), NKE_OK);
    for (k = 0; k < NKE_CHUNK_MAX_BUFFERS; k++)
        CHECK(out[k] != NKE_BUF_NONE);
}

static void test_pool_release_validation(void)
{
    struct nke_pool p;
    uint16_t a[NKE_CHUNK_MAX_BUFFERS], b[NKE_CHUNK_MAX_BUFFERS];
    nke_pool_init(&p);
    CHECK_EQ(nke_pool_alloc(&p, 7, 2, a), NKE_OK);
    CHECK_EQ(nke_pool_alloc(&p, 8, 1, b), NKE_OK);
    CHECK_EQ(nke_pool_check(&p, 7, NKE_BUFFER_COUNT), NKE_ERR_BUF_RANGE);
    CHECK_EQ(nke_pool_check(&p, 7, 0xFFFFFFFFu), NKE_ERR_BUF_RANGE);
    CHECK_EQ(nke_pool_check(&p, 7, b[0]), NKE_ERR_BUF_FOREIGN);
    CHECK_EQ(nke_pool_check(&p, 7, a[1]), NKE_OK);
    CHECK_EQ(nke_pool_free(&p, a[1]), NKE_OK);
    CHECK_EQ(nke_pool_check(&p, 7, a[1]), NKE_ERR_BUF_DOUBLE);
    CHECK_EQ(nke_pool_free(&p, a[1]), NKE_ERR_BUF_DOUBLE);
    CHECK_EQ(nke_pool_free(&p, NKE_BUFFER_COUNT), NKE_ERR_BUF_RANGE);
    CHECK_EQ(nke_pool_in_use(&p), 2);
}

/* ======================================================================== */
/* Queue                                                                     */
/* ======================================================================== */

static struct nke_dq_memory *dq_new(uint32_t data_size)
{
    /* Exactly the mapping: ASan flags any access past it. */
    struct nke_dq_memory *q = (struct nke_dq_memory *)malloc(NKE_DQ_MEMORY_HEADER_SIZE + data_size);
    memset(q, 0xAB, NKE_DQ_MEMORY_HEADER_SIZE + data_size);
    nke_dq_init(q, data_size);
    return q;
}

static void test_dq_roundtrip(void)
{
    struct nke_dq_memory *q = dq_new(1024);
    uint8_t in[200], out[200];
    uint32_t len, i, n;
    bool was_empty;
    for (i = 0; i < sizeof(in); i++)
        in[i] = (uint8_t)i;
    CHECK_EQ(nke_dq_dequeue(q, 1024, out, sizeof(out), &len), NKE_DQ_EMPTY);
    CHECK_EQ(nke_dq_enqueue(q, 1024, in, 10, &was_empty), NKE_OK);
    CHECK(was_empty);
    CHECK_EQ(nke_dq_enqueue(q, 1024, in + 1, 7, &was_empty), NKE_OK);
    CHECK(!was_empty);
    CHECK_EQ(nke_dq_enqueue(q, 1024, in, 0, &was_empty), NKE_OK);
    CHECK_EQ(q->tail, (4 + 12) + (4 + 8) + 4);
    CHECK_EQ(nke_dq_dequeue(q, 1024, out, sizeof(out), &len), NKE_DQ_OK);
    CHECK_EQ(len, 10);
    CHECK(memcmp(out, in, 10) == 0);
    CHECK_EQ(nke_dq_dequeue(q, 1024, out, sizeof(out), &len), NKE_DQ_OK);
    CHECK_EQ(len, 7);
    CHECK(memcmp(out, in + 1, 7) == 0);
    CHECK_EQ(nke_dq_dequeue(q, 1024, out, sizeof(out), &len), NKE_DQ_OK);
    CHECK_EQ(len, 0);
    CHECK_EQ(nke_dq_dequeue(q, 1024, out, sizeof(out), &len), NKE_DQ_EMPTY);
    /* too big for the reader's buffer: skipped, the next one still comes */
    CHECK_EQ(nke_dq_enqueue(q, 1024, in, 100, NULL), NKE_OK);
    CHECK_EQ(nke_dq_enqueue(q, 1024, in, 5, NULL), NKE_OK);
    CHECK_EQ(nke_dq_dequeue(q, 1024, out, 50, &len), NKE_DQ_TOOBIG);
    CHECK_EQ(len, 100);
    n = nke_dq_dequeue(q, 1024, out, 50, &len);
    CHECK_EQ(n, NKE_DQ_OK);
    CHECK_EQ(len, 5);
    free(q);
}

static void test_dq_wrap_around(void)
{
    /* Small queue, entries of varying size: every byte checked over many laps. */
    const uint32_t ds = 128;
    struct nke_dq_memory *q = dq_new(ds);
    uint8_t in[64], out[64];
    static uint32_t sizes[8192];
    uint32_t len, i, seq_in = 0, seq_out = 0, wraps = 0, prev_tail = 0, markers = 0;
    for (i = 0; i < 5000; i++) {
        uint32_t sz = 1 + (i * 13u) % 40u;
        uint32_t k;
        for (k = 0; k < sz; k++)
            in[k] = (uint8_t)(seq_in + k);
        if (nke_dq_enqueue(q, ds, in, sz, NULL) == NKE_OK) {
            if (q->tail < prev_tail) {
                wraps++;
                if (ds - prev_tail >= 4)
                    markers++;
            }
            prev_tail = q->tail;
            sizes[seq_in % 8192] = sz;
            seq_in++;
        }
        if (i % 3 != 0) {
            int r = nke_dq_dequeue(q, ds, out, sizeof(out), &len);
            if (r == NKE_DQ_OK) {
                bool ok = true;
                for (k = 0; k < len; k++)
                    if (out[k] != (uint8_t)(seq_out + k))
                        ok = false;
                CHECK(ok);
                CHECK_EQ(len, sizes[seq_out % 8192]);
                seq_out++;
            } else {
                CHECK_EQ(r, NKE_DQ_EMPTY);
            }
        }
    }
    CHECK(wraps > 50);
    CHECK(markers > 10);
    CHECK(seq_out > 1000);
    free(q);
}

static void test_dq_full(void)
{
    const uint32_t ds = 256;
    struct nke_dq_memory *q = dq_new(ds);
    uint8_t in[28] = {1, 2, 3}, out[64];
    uint32_t len, n = 0;
    while (nke_dq_enqueue(q, ds, in, sizeof(in), NULL) == NKE_OK)
        n++;
    /* 32-byte entries in 256 bytes: 8 fit (tail ends at 256, head still 0) */
    CHECK_EQ(n, 8);
    CHECK_EQ(q->tail, ds);
    CHECK(q->tail != q->head);
    CHECK_EQ(nke_dq_dequeue(q, ds, out, sizeof(out), &len), NKE_DQ_OK);
    CHECK_EQ(nke_dq_enqueue(q, ds, in, sizeof(in), NULL), NKE_ERR_NO_MEMORY);
    CHECK_EQ(nke_dq_dequeue(q, ds, out, sizeof(out), &len), NKE_DQ_OK);
    /* wrapping needs head strictly beyond the entry (64 > 32), else tail == head */
    CHECK_EQ(nke_dq_enqueue(q, ds, in, sizeof(in), NULL), NKE_OK);
    CHECK_EQ(q->tail, 32);
    CHECK_EQ(nke_dq_enqueue(q, ds, in, ds, NULL), NKE_ERR_NO_MEMORY);
    for (n = 0; nke_dq_dequeue(q, ds, out, sizeof(out), &len) == NKE_DQ_OK; n++)
        CHECK(memcmp(out, in, sizeof(in)) == 0);
    CHECK_EQ(n, 7);
    free(q);
}

static uint32_t rng_state = 12345;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static void test_dq_hostile(void)
{
    const uint32_t ds = 256;
    struct nke_dq_memory *q = dq_new(ds);
    uint8_t *base = (uint8_t *)q + NKE_DQ_MEMORY_HEADER_SIZE;
    uint8_t out[512];
    uint32_t len, i, v;

#define SETQ(h, t) (q->head = (h), q->tail = (t))
#define PUTSZ(at, sz) (v = (sz), memcpy(base + (at), &v, 4))
    SETQ(ds + 4, 0);
    CHECK_EQ(nke_dq_dequeue(q, ds, out, sizeof(out), &len), NKE_DQ_CORRUPT);
    SETQ(0, ds + 4);
    CHECK_EQ(nke_dq_dequeue(q, ds, out, sizeof(out), &len), NKE_DQ_CORRUPT);
    SETQ(2, 40);
    CHECK_EQ(nke_dq_dequeue(q, ds, out, sizeof(out), &len), NKE_DQ_CORRUPT);
    SETQ(0xFFFFFFFCu, 8);
    CHECK_EQ(nke_dq_dequeue(q, ds, out, sizeof(out), &len), NKE_DQ_CORRUPT);
    /* entry size running past tail */
    SETQ(0, 16);
    PUTSZ(0, 100);
    CHECK_EQ(nke_dq_dequeue(q, ds, out, sizeof(out), &len), NKE_DQ_CORRUPT);
    /* huge size: would overflow 32-bit arithmetic */
    SETQ(0, 16);
    PUTSZ(0, 0xFFFFFFFEu);
    CHECK_EQ(nke_dq_dequeue(q, ds, out, sizeof(out), &len), NKE_DQ_CORRUPT);
    /* entry past the end but not wrapped (tail >= head) */
    SETQ(240, 252);
    PUTSZ(240, 30);
    CHECK_EQ(nke_dq_dequeue(q, ds, out, sizeof(out), &len), NKE_DQ_CORRUPT);
    /* head at the very end, tail ahead: impossible */
    SETQ(ds, ds);
    CHECK_EQ(nke_dq_dequeue(q, ds, out, sizeof(out), &len), NKE_DQ_EMPTY);
    /* wrapped, entry at 0 running past tail */
    SETQ(248, 8);
    PUTSZ(248, 40);
    PUTSZ(0, 40);
    CHECK_EQ(nke_dq_dequeue(q, ds, out, sizeof(out), &len), NKE_DQ_CORRUPT);
    /* a correct wrap is accepted */
    SETQ(248, 44);
    CHECK_EQ(nke_dq_dequeue(q, ds, out, sizeof(out), &len), NKE_DQ_OK);
    CHECK_EQ(len, 40);
    CHECK_EQ(q->head, 44);
    /* caller's data size not a multiple of 4 */
    CHECK_EQ(nke_dq_dequeue(q, 255, out, sizeof(out), &len), NKE_DQ_CORRUPT);
    /* forged queue_size is ignored */
    q->queue_size = 1u << 30;
    SETQ(0, 0);
    CHECK_EQ(nke_dq_dequeue(q, ds, out, sizeof(out), &len), NKE_DQ_EMPTY);
    /* random forgeries: never out of bounds (ASan build), result always sane */
    for (i = 0; i < 200000; i++) {
        uint32_t h = rnd() % (ds + 16), t = rnd() % (ds + 16), k;
        int r;
        if (rnd() & 1) {
            h &= ~3u;
            t &= ~3u;
        }
        for (k = 0; k + 4 <= ds; k += 4)
            if ((rnd() & 7) == 0)
                PUTSZ(k, rnd() % (ds + 8));
        SETQ(h, t);
        r = nke_dq_dequeue(q, ds, out, 64, &len);
        CHECK(r == NKE_DQ_OK || r == NKE_DQ_EMPTY || r == NKE_DQ_CORRUPT || r == NKE_DQ_TOOBIG);
        if (r == NKE_DQ_OK)
            CHECK(len <= 64);
        if (r == NKE_DQ_OK || r == NKE_DQ_TOOBIG)
            CHECK(q->head <= ds);
        if (g_cur_failed)
            break;
    }
#undef SETQ
#undef PUTSZ
    free(q);
}

/* ======================================================================== */
/* Responses: validation                                                     */
/* ======================================================================== */

/* Core with three held chunks (c1: 1 buffer, c2: 2 buffers, c3: 1 buffer
 * with complete staged data of 5 bytes) and one reported chunk (rep). */
struct rfix {
    struct fixture *x;
    uint64_t c1, c2, c3, rep;
};

static void rfix_init(struct rfix *r)
{
    struct nke_capture_config cfg;
    struct nke_put_data_hdr ph;
    uint8_t msg[sizeof(ph) + 5];
    uint64_t id = 0;
    r->x = fixture_new(NKE_CAPTURE_ALL);
    r->c1 = hold(r->x, 0, 100, 1000);
    r->c2 = hold(r->x, 1, NKE_BUFFER_SIZE + 1, 1000);
    r->c3 = hold(r->x, 2, 10, 1000);
    memset(&ph, 0, sizeof(ph));
    ph.chunk_id = r->c3;
    ph.sock = r->x->sid;
    ph.total_len = 5;
    ph.len = 5;
    memcpy(msg, &ph, sizeof(ph));
    memcpy(msg + sizeof(ph), "HELLO", 5);
    if (nke_core_put_data(&r->x->c, msg, sizeof(msg)) != NKE_OK)
        abort();
    memset(&cfg, 0, sizeof(cfg));
    cfg.abi_version = NKE_ABI_VERSION;
    cfg.mode = NKE_CAPTURE_RULES;
    cfg.default_action = NKE_RULE_REPORT;
    nke_core_set_capture(&r->x->c, &cfg, sizeof(cfg));
    if (nke_core_data(&r->x->c, r->x->sid, NKE_DIR_IN, 50, 0, NULL, &r->x->data[3], 1000, 1, &id) !=
        NKE_DATA_REPORTED)
        abort();
    r->rep = id;
    r->x->f.nrecs = 0;
    r->x->f.nfinish = 0;
}

/* Sends a response that must be rejected with `want`; asserts the core and
 * its socket table are byte-identical afterwards (but for the counter) and
 * that the platform was asked to do nothing. */
static void expect_reject(struct rfix *r, struct resp *m, uint32_t size, int want)
{
    static struct nke_core before;
    static struct nke_sock socks_before[16];
    struct fixture *x = r->x;
    int got;
    memcpy(&before, &x->c, sizeof(before));
    memcpy(socks_before, x->socks, sizeof(socks_before));
    CHECK_EQ(nke_core_validate_response(&x->c, m->bytes, size), want);
    got = nke_core_respond(&x->c, m->bytes, size);
    CHECK_EQ(got, want);
    before.stats.responses_rejected++;
    CHECK(memcmp(&before, &x->c, sizeof(before)) == 0);
    CHECK(memcmp(socks_before, x->socks, sizeof(socks_before)) == 0);
    CHECK_EQ(x->f.nfinish, 0);
    CHECK_EQ(x->f.nrecs, 0);
    CHECK_EQ(x->f.unstage_calls, 0);
}

#define REJECT_TEST(name, want, build)      \
    static void name(void)                  \
    {                                       \
        static struct resp m;               \
        struct rfix r;                      \
        uint32_t size;                      \
        rfix_init(&r);                      \
        memset(&m, 0, sizeof(m));           \
        build;                              \
        size = resp_build(&m);              \
        expect_reject(&r, &m, size, want);  \
        fixture_free(r.x);                  \
    }

/* Every rejection also carries a valid verdict first: the whole response is refused. */
#define GOOD_FIRST add_verdict(&m, r.c1, r.x->sid, NKE_ACT_ALLOW, 0); add_releases_of(&m, r.x, r.c1)

REJECT_TEST(test_reject_version, NKE_ERR_VERSION, {
    GOOD_FIRST;
    m.h.abi_version = NKE_ABI_VERSION + 7;
})
REJECT_TEST(test_reject_size_mismatch, NKE_ERR_SIZE, { GOOD_FIRST; m.h.size = 16 + 24 + 16 + 8; })
REJECT_TEST(test_reject_count, NKE_ERR_COUNT, { GOOD_FIRST; m.h.nverdicts = NKE_RESPONSE_MAX_VERDICTS + 1; m.h.size = 1; })
REJECT_TEST(test_reject_flags, NKE_ERR_FLAGS, { GOOD_FIRST; m.h.flags = 1; })
REJECT_TEST(test_reject_reserved_verdict, NKE_ERR_RESERVED, {
    GOOD_FIRST;
    add_verdict(&m, r.c2, r.x->sid, NKE_ACT_ALLOW, 0);
    m.v[1]._pad0[1] = 1;
})
REJECT_TEST(test_reject_reserved_release, NKE_ERR_RESERVED, { GOOD_FIRST; m.r[0]._pad1 = 2; })
REJECT_TEST(test_reject_action, NKE_ERR_ACTION, { GOOD_FIRST; add_verdict(&m, r.c2, r.x->sid, 9, 0); })
REJECT_TEST(test_reject_action_zero, NKE_ERR_ACTION, { GOOD_FIRST; add_verdict(&m, r.c2, r.x->sid, 0, 0); })
REJECT_TEST(test_reject_sock, NKE_ERR_SOCK, {
    struct nke_sock_id other = r.x->sid;
    other.gen++;
    GOOD_FIRST;
    add_verdict(&m, r.c2, other, NKE_ACT_DROP, 0);
})
REJECT_TEST(test_reject_not_held, NKE_ERR_NOT_HELD, { GOOD_FIRST; add_verdict(&m, r.rep, r.x->sid, NKE_ACT_ALLOW, 0); })
REJECT_TEST(test_reject_dup_verdict, NKE_ERR_DUP_VERDICT, {
    GOOD_FIRST;
    add_verdict(&m, r.c2, r.x->sid, NKE_ACT_ALLOW, 0);
    add_verdict(&m, r.c2, r.x->sid, NKE_ACT_DROP, 0);
})
REJECT_TEST(test_reject_modified_len, NKE_ERR_MODIFIED_LEN, { GOOD_FIRST; add_verdict(&m, r.c3, r.x->sid, NKE_ACT_ALLOW_MODIFIED, 4); })
REJECT_TEST(test_reject_modified_unstaged, NKE_ERR_MODIFIED_LEN, { GOOD_FIRST; add_verdict(&m, r.c2, r.x->sid, NKE_ACT_ALLOW_MODIFIED, 0); })
REJECT_TEST(test_reject_len_on_allow, NKE_ERR_MODIFIED_LEN, { GOOD_FIRST; add_verdict(&m, r.c2, r.x->sid, NKE_ACT_ALLOW, 3); })
REJECT_TEST(test_reject_buf_range, NKE_ERR_BUF_RANGE, { GOOD_FIRST; add_release(&m, r.c2, NKE_BUFFER_COUNT); })
REJECT_TEST(test_reject_buf_dup, NKE_ERR_BUF_DUP, { GOOD_FIRST; add_releases_of(&m, r.x, r.c1); })
REJECT_TEST(test_reject_buf_foreign, NKE_ERR_BUF_FOREIGN, {
    GOOD_FIRST;
    add_release(&m, r.c2, chunk_of(r.x, r.c3)->buffers[0]);
})
REJECT_TEST(test_reject_unknown_chunk, NKE_ERR_UNKNOWN_CHUNK, { GOOD_FIRST; add_verdict(&m, 1000, r.x->sid, NKE_ACT_ALLOW, 0); })
REJECT_TEST(test_reject_unknown_chunk_release, NKE_ERR_UNKNOWN_CHUNK, { GOOD_FIRST; add_release(&m, 0, 9); })

static void test_reject_short_message(void)
{
    static struct resp m;
    struct rfix r;
    rfix_init(&r);
    memset(&m, 0, sizeof(m));
    resp_build(&m);
    expect_reject(&r, &m, sizeof(struct nke_response_hdr) - 1, NKE_ERR_SIZE);
    fixture_free(r.x);
}

static void test_reject_buf_double(void)
{
    static struct resp m;
    struct rfix r;
    uint32_t size;
    rfix_init(&r);
    memset(&m, 0, sizeof(m));
    add_release(&m, r.c2, chunk_of(r.x, r.c2)->buffers[0]);
    CHECK_EQ(nke_core_respond(&r.x->c, m.bytes, resp_build(&m)), NKE_OK);
    memset(&m, 0, sizeof(m));
    GOOD_FIRST;
    add_release(&m, r.c2, chunk_of(r.x, r.c2)->buffers[0]);
    size = resp_build(&m);
    expect_reject(&r, &m, size, NKE_ERR_BUF_DOUBLE);
    fixture_free(r.x);
}

static void test_reject_dup_verdict_across_responses(void)
{
    static struct resp m;
    struct rfix r;
    uint32_t size;
    rfix_init(&r);
    memset(&m, 0, sizeof(m));
    add_verdict(&m, r.c2, r.x->sid, NKE_ACT_DROP, 0);
    CHECK_EQ(nke_core_respond(&r.x->c, m.bytes, resp_build(&m)), NKE_OK);
    r.x->f.nfinish = 0;
    memset(&m, 0, sizeof(m));
    add_verdict(&m, r.c2, r.x->sid, NKE_ACT_ALLOW, 0);
    size = resp_build(&m);
    expect_reject(&r, &m, size, NKE_ERR_DUP_VERDICT);
    fixture_free(r.x);
}

static void test_reject_not_open(void)
{
    static struct resp m;
    struct rfix r;
    rfix_init(&r);
    nke_core_client_close(&r.x->c);
    r.x->f.nfinish = 0;
    r.x->f.nrecs = 0;
    r.x->f.unstage_calls = 0;
    memset(&m, 0, sizeof(m));
    expect_reject(&r, &m, resp_build(&m), NKE_ERR_NOT_OPEN);
    fixture_free(r.x);
}

/* ======================================================================== */
/* Responses: EXTEND (time to edit a held chunk)                            */
/* ======================================================================== */

REJECT_TEST(test_reject_extend_hold_zero, NKE_ERR_HOLD_MS, {
    GOOD_FIRST;
    add_verdict(&m, r.c2, r.x->sid, NKE_ACT_EXTEND, 0);
})
REJECT_TEST(test_reject_extend_over_cap, NKE_ERR_HOLD_MS, {
    GOOD_FIRST;
    add_verdict(&m, r.c2, r.x->sid, NKE_ACT_EXTEND, NKE_HOLD_TOTAL_MAX_MS + 1u);
})
REJECT_TEST(test_reject_extend_max_u32, NKE_ERR_HOLD_MS, {
    GOOD_FIRST;
    add_verdict(&m, r.c2, r.x->sid, NKE_ACT_EXTEND, 0xFFFFFFFFu);
})
REJECT_TEST(test_reject_extend_reported, NKE_ERR_NOT_HELD, {
    GOOD_FIRST;
    add_verdict(&m, r.rep, r.x->sid, NKE_ACT_EXTEND, 10000);
})
REJECT_TEST(test_reject_extend_unknown_chunk, NKE_ERR_UNKNOWN_CHUNK, {
    GOOD_FIRST;
    add_verdict(&m, 1000, r.x->sid, NKE_ACT_EXTEND, 10000);
})
REJECT_TEST(test_reject_extend_sock, NKE_ERR_SOCK, {
    struct nke_sock_id other = r.x->sid;
    other.gen++;
    GOOD_FIRST;
    add_verdict(&m, r.c2, other, NKE_ACT_EXTEND, 10000);
})
REJECT_TEST(test_reject_extend_and_verdict, NKE_ERR_DUP_VERDICT, {
    GOOD_FIRST;
    add_verdict(&m, r.c2, r.x->sid, NKE_ACT_EXTEND, 10000);
    add_verdict(&m, r.c2, r.x->sid, NKE_ACT_ALLOW, 0);
})
REJECT_TEST(test_reject_action_past_extend, NKE_ERR_ACTION, {
    GOOD_FIRST;
    add_verdict(&m, r.c2, r.x->sid, NKE_ACT_EXTEND + 1, 0);
})

/* A decided chunk whose buffers the client still holds: EXTEND is NOT_HELD. */
static void test_reject_extend_decided(void)
{
    static struct resp m;
    struct rfix r;
    uint32_t size;
    rfix_init(&r);
    memset(&m, 0, sizeof(m));
    add_verdict(&m, r.c1, r.x->sid, NKE_ACT_ALLOW, 0);
    CHECK_EQ(nke_core_respond(&r.x->c, m.bytes, resp_build(&m)), NKE_OK);
    CHECK(chunk_of(r.x, r.c1) != NULL && chunk_of(r.x, r.c1)->state == NKE_CHUNK_DECIDED);
    r.x->f.nfinish = 0;
    memset(&m, 0, sizeof(m));
    add_verdict(&m, r.c1, r.x->sid, NKE_ACT_EXTEND, 10000);
    size = resp_build(&m);
    expect_reject(&r, &m, size, NKE_ERR_NOT_HELD);
    fixture_free(r.x);
}

static void extend(struct fixture *x, uint64_t id, uint32_t hold_ms, int want)
{
    static struct resp m;
    memset(&m, 0, sizeof(m));
    add_verdict(&m, id, x->sid, NKE_ACT_EXTEND, hold_ms);
    CHECK_EQ(nke_core_respond(&x->c, m.bytes, resp_build(&m)), want);
}

/* hold_ms counts from the moment of holding; the chunk stays held (no
 * finish, no notification) until the new deadline, then goes out as it came. */
static void test_extend_moves_deadline(void)
{
    struct fixture *x = fixture_new(NKE_CAPTURE_ALL); /* hold timeout 5000 */
    struct nke_nt_chunk_released rel;
    struct nke_filter_state st;
    uint64_t id = hold(x, 0, 10, 1000);
    x->f.nrecs = 0;
    CHECK_EQ(chunk_of(x, id)->deadline_ms, 6000);
    extend(x, id, 20000, NKE_OK);
    CHECK_EQ(chunk_of(x, id)->deadline_ms, 21000);
    CHECK_EQ(chunk_of(x, id)->state, NKE_CHUNK_HELD);
    CHECK_EQ(x->f.nfinish, 0);
    CHECK_EQ(x->f.nrecs, 0);
    /* the old deadline passes: nothing due, the next one is 15 s later */
    CHECK_EQ(nke_core_expire(&x->c, 6000, 0), 15000);
    CHECK_EQ(nke_core_expire(&x->c, 20999, 0), 1);
    CHECK_EQ(x->f.nfinish, 0);
    /* asking for less never shortens the hold */
    extend(x, id, 3000, NKE_OK);
    CHECK_EQ(chunk_of(x, id)->deadline_ms, 21000);
    CHECK_EQ(nke_core_expire(&x->c, 21000, 5), UINT32_MAX);
    CHECK_EQ(x->f.nfinish, 1);
    CHECK_EQ(x->f.finish[0].action, NKE_ACT_ALLOW);
    CHECK_EQ(x->f.finish[0].reason, NKE_RELEASE_TIMEOUT);
    CHECK_EQ(x->f.nrecs, 1);
    memcpy(&rel, x->f.recs[0], sizeof(rel));
    CHECK_EQ(rel.chunk_id, id);
    CHECK_EQ(rel.reason, NKE_RELEASE_TIMEOUT);
    nke_core_get_state(&x->c, &st);
    CHECK_EQ(st.chunks_pending, 0);
    CHECK_EQ(st.chunks_auto_released, 1);
    CHECK_EQ(st.responses_rejected, 0);
    fixture_free(x);
}

/* However often a client extends, the total hold stops at the cap. */
static void test_extend_cap(void)
{
    struct fixture *x = fixture_new(NKE_CAPTURE_ALL);
    uint64_t t, id = hold(x, 0, 10, 1000);
    extend(x, id, NKE_HOLD_TOTAL_MAX_MS, NKE_OK);
    CHECK_EQ(chunk_of(x, id)->deadline_ms, 1000 + (uint64_t)NKE_HOLD_TOTAL_MAX_MS);
    for (t = 2000; t < 1000 + (uint64_t)NKE_HOLD_TOTAL_MAX_MS; t += 50000) {
        CHECK_EQ(nke_core_expire(&x->c, t, 0), 1000 + NKE_HOLD_TOTAL_MAX_MS - t);
        extend(x, id, NKE_HOLD_TOTAL_MAX_MS, NKE_OK);
        extend(x, id, NKE_HOLD_TOTAL_MAX_MS + 1u, NKE_ERR_HOLD_MS);
        CHECK(chunk_of(x, id) != NULL);
        CHECK_EQ(chunk_of(x, id)->deadline_ms, 1000 + (uint64_t)NKE_HOLD_TOTAL_MAX_MS);
    }
    CHECK_EQ(x->f.nfinish, 0);
    nke_core_expire(&x->c, 1000 + (uint64_t)NKE_HOLD_TOTAL_MAX_MS, 0);
    CHECK_EQ(x->f.nfinish, 1);
    CHECK_EQ(x->f.finish[0].reason, NKE_RELEASE_TIMEOUT);
    CHECK(chunk_of(x, id) == NULL);
    fixture_free(x);
}

/* A chunk the filter released meanwhile: the EXTEND is stale, skipped and
 * counted; nothing is finished twice and later ones are unaffected. */
static void test_extend_released_chunk(void)
{
    struct fixture *x = fixture_new(NKE_CAPTURE_ALL);
    uint64_t a = hold(x, 0, 10, 1000), b = hold(x, 1, 10, 1000);
    static struct resp m;
    nke_core_expire(&x->c, 6000, 0);
    CHECK_EQ(x->f.nfinish, 2);
    CHECK(chunk_of(x, a) == NULL);
    CHECK_EQ(x->c.stats.stale_entries, 0);
    extend(x, a, 30000, NKE_OK);
    CHECK_EQ(x->c.stats.stale_entries, 1);
    CHECK_EQ(x->f.nfinish, 2);
    /* the socket closed with a chunk held: released too, EXTEND stale */
    b = hold(x, 2, 10, 7000);
    nke_core_detach(&x->c, x->sid, 0);
    CHECK_EQ(x->f.nfinish, 3);
    CHECK_EQ(x->f.finish[2].reason, NKE_RELEASE_SOCKET_GONE);
    memset(&m, 0, sizeof(m));
    add_verdict(&m, b, x->sid, NKE_ACT_EXTEND, 30000);
    CHECK_EQ(nke_core_respond(&x->c, m.bytes, resp_build(&m)), NKE_OK);
    CHECK_EQ(x->c.stats.stale_entries, 2);
    CHECK_EQ(x->f.nfinish, 3);
    fixture_free(x);
}

/* EXTEND leaves staged bytes and buffers alone: releases in the same
 * response go back, and the edit is applied by a later verdict. */
static void test_extend_with_releases_and_staging(void)
{
    static struct resp m;
    struct rfix r;
    struct nke_filter_state st;
    rfix_init(&r);
    memset(&m, 0, sizeof(m));
    add_verdict(&m, r.c3, r.x->sid, NKE_ACT_EXTEND, 60000);
    add_releases_of(&m, r.x, r.c3);
    CHECK_EQ(nke_core_respond(&r.x->c, m.bytes, resp_build(&m)), NKE_OK);
    CHECK(chunk_of(r.x, r.c3) != NULL && chunk_of(r.x, r.c3)->state == NKE_CHUNK_HELD);
    CHECK_EQ(chunk_of(r.x, r.c3)->deadline_ms, 61000);
    CHECK_EQ(chunk_of(r.x, r.c3)->staged_len, 5);
    CHECK_EQ(r.x->f.unstage_calls, 0);
    nke_core_expire(&r.x->c, 6000, 0); /* c1 and c2 go; c3 stays */
    CHECK_EQ(r.x->f.nfinish, 2);
    memset(&m, 0, sizeof(m));
    add_verdict(&m, r.c3, r.x->sid, NKE_ACT_ALLOW_MODIFIED, 5);
    CHECK_EQ(nke_core_respond(&r.x->c, m.bytes, resp_build(&m)), NKE_OK);
    CHECK_EQ(r.x->f.nfinish, 3);
    CHECK_EQ(r.x->f.finish[2].action, NKE_ACT_ALLOW_MODIFIED);
    CHECK_EQ(r.x->f.finish[2].staged_len, 5);
    CHECK(memcmp(r.x->f.finish[2].staged, "HELLO", 5) == 0);
    CHECK(chunk_of(r.x, r.c3) == NULL);
    nke_core_get_state(&r.x->c, &st);
    CHECK_EQ(st.chunks_modified, 1);
    CHECK_EQ(st.chunks_pending, 0);
    fixture_free(r.x);
}

/* ======================================================================== */
/* Responses: apply                                                          */
/* ======================================================================== */

static void test_apply_allow_modified_drop(void)
{
    static struct resp m;
    struct rfix r;
    struct fixture *x;
    struct nke_filter_state st;
    rfix_init(&r);
    x = r.x;
    memset(&m, 0, sizeof(m));
    add_verdict(&m, r.c1, x->sid, NKE_ACT_ALLOW, 0);
    add_verdict(&m, r.c2, x->sid, NKE_ACT_DROP, 0);
    add_verdict(&m, r.c3, x->sid, NKE_ACT_ALLOW_MODIFIED, 5);
    add_releases_of(&m, x, r.c1);
    add_releases_of(&m, x, r.c2);
    nke_core_get_state(&x->c, &st);
    CHECK_EQ(st.buffers_in_use, 1 + 2 + 1 + 1);
    CHECK_EQ(st.chunks_pending, 3);
    CHECK_EQ(nke_core_respond(&x->c, m.bytes, resp_build(&m)), NKE_OK);
    CHECK_EQ(x->f.nfinish, 3);
    CHECK_EQ(x->f.finish[0].action, NKE_ACT_ALLOW);
    CHECK(x->f.finish[0].data_ctx == &x->data[0]);
    CHECK(x->f.finish[0].sock_ctx == &x->sock_ctx_marker);
    CHECK_EQ(x->f.finish[0].reason, 0);
    CHECK_EQ(x->f.finish[1].action, NKE_ACT_DROP);
    CHECK(x->f.finish[1].data_ctx == &x->data[1]);
    CHECK_EQ(x->f.finish[2].action, NKE_ACT_ALLOW_MODIFIED);
    CHECK_EQ(x->f.finish[2].staged_len, 5);
    CHECK(memcmp(x->f.finish[2].staged, "HELLO", 5) == 0);
    CHECK_EQ(x->f.live_staged, 0);
    nke_core_get_state(&x->c, &st);
    CHECK_EQ(st.chunks_pending, 0);
    CHECK_EQ(st.chunks_dropped, 1);
    CHECK_EQ(st.chunks_modified, 1);
    CHECK_EQ(st.buffers_in_use, 2); /* c3 and rep not released yet */
    CHECK(chunk_of(x, r.c1) == NULL);
    CHECK(chunk_of(x, r.c3) != NULL && chunk_of(x, r.c3)->state == NKE_CHUNK_DECIDED);
    /* the reported chunk's buffer is released without a verdict */
    memset(&m, 0, sizeof(m));
    add_releases_of(&m, x, r.rep);
    add_releases_of(&m, x, r.c3);
    CHECK_EQ(nke_core_respond(&x->c, m.bytes, resp_build(&m)), NKE_OK);
    nke_core_get_state(&x->c, &st);
    CHECK_EQ(st.buffers_in_use, 0);
    CHECK_EQ(x->c.stats.stale_entries, 0);
    fixture_free(x);
}

/* The filter says why (issue #21): every data record names the config it
 * was decided under (its tag) and the rule of it that matched first, or
 * NKE_RULE_DEFAULT; the helper acts on that and matches nothing itself. */
static void test_data_record_names_rule_and_config(void)
{
    struct fixture *x = fixture_new(NKE_CAPTURE_ALL);
    static struct nke_capture_config cfg;
    struct nke_nt_data d;
    uint64_t id;
    /* mode ALL: held by no rule */
    CHECK(hold(x, 0, 10, 5) != 0);
    memcpy(&d, x->f.recs[0], sizeof(d));
    CHECK_EQ(d.rule, NKE_RULE_DEFAULT);
    CHECK_EQ(d.capture_tag, 0);
    /* rules: a pid rule that misses, a report rule on the process, then hold everything */
    memset(&cfg, 0, sizeof(cfg));
    cfg.abi_version = NKE_ABI_VERSION;
    cfg.mode = NKE_CAPTURE_RULES;
    cfg.default_action = NKE_RULE_HOLD;
    cfg.tag = 0xC0FFEEu;
    cfg.nrules = 2;
    cfg.rules[0].match = NKE_MATCH_PID;
    cfg.rules[0].pid = 1;
    cfg.rules[0].action = NKE_RULE_HOLD;
    cfg.rules[1].match = NKE_MATCH_COMM;
    strcpy(cfg.rules[1].comm, "curl");
    cfg.rules[1].action = NKE_RULE_REPORT;
    CHECK_EQ(nke_core_set_capture(&x->c, &cfg, sizeof(cfg)), NKE_OK);
    x->f.nrecs = 0;
    CHECK_EQ(nke_core_data(&x->c, x->sid, NKE_DIR_IN, 10, 0, NULL, &x->data[1], 5, 5000000u, &id),
             NKE_DATA_REPORTED);
    memcpy(&d, x->f.recs[0], sizeof(d));
    CHECK_EQ(d.rule, 1);
    CHECK_EQ(d.capture_tag, 0xC0FFEEu);
    CHECK(!(d.hdr.flags & NKE_DATA_F_HELD));
    /* no rule matches: the default holds it, and says so */
    cfg.nrules = 1;
    cfg.tag = 7;
    CHECK_EQ(nke_core_set_capture(&x->c, &cfg, sizeof(cfg)), NKE_OK);
    CHECK(hold(x, 2, 10, 6) != 0);
    memcpy(&d, x->f.recs[1], sizeof(d));
    CHECK_EQ(d.rule, NKE_RULE_DEFAULT);
    CHECK_EQ(d.capture_tag, 7);
    CHECK(d.hdr.flags & NKE_DATA_F_HELD);
    /* the process's pid is the filter's own: a pid rule matches it */
    cfg.rules[0].pid = 500;
    cfg.tag = 8;
    CHECK_EQ(nke_core_set_capture(&x->c, &cfg, sizeof(cfg)), NKE_OK);
    CHECK(hold(x, 3, 10, 7) != 0);
    memcpy(&d, x->f.recs[2], sizeof(d));
    CHECK_EQ(d.rule, 0);
    CHECK_EQ(d.capture_tag, 8);
    fixture_free(x);
}

static void test_apply_buffers_hold_data(void)
{
    struct fixture *x = fixture_new(NKE_CAPTURE_ALL);
    uint32_t size = 3 * NKE_BUFFER_SIZE + 17, i;
    uint64_t id = hold(x, 0, size, 5);
    struct nke_nt_data d;
    bool same = true;
    CHECK(id != 0);
    CHECK_EQ(x->f.nrecs, 1);
    memcpy(&d, x->f.recs[0], sizeof(d));
    CHECK_EQ(d.hdr.type, NKE_NT_DATA);
    CHECK_EQ(d.hdr.size, sizeof(d));
    CHECK(d.hdr.flags & NKE_DATA_F_HELD);
    CHECK_EQ(d.chunk_id, id);
    CHECK_EQ(d.size, size);
    CHECK_EQ(d.nbuffers, 4);
    CHECK_EQ(d.deadline_ms, NKE_HOLD_TIMEOUT_DEFAULT_MS);
    CHECK_EQ(d.buffers[4], NKE_BUF_NONE);
    for (i = 0; i < size && same; i++) {
        uint32_t b = d.buffers[i / NKE_BUFFER_SIZE];
        same = g_buffers[b * NKE_BUFFER_SIZE + i % NKE_BUFFER_SIZE] == x->payload[i];
    }
    CHECK(same);
    /* stream offsets advance per direction */
    CHECK(hold(x, 1, 10, 5) != 0);
    memcpy(&d, x->f.recs[1], sizeof(d));
    CHECK_EQ(d.stream_offset, size);
    fixture_free(x);
}

static void test_apply_stale_entries_skipped(void)
{
    static struct resp m;
    struct fixture *x = fixture_new(NKE_CAPTURE_ALL);
    uint64_t a = hold(x, 0, 10, 1000), b = hold(x, 1, 10, 1500);
    uint16_t abuf = chunk_of(x, a)->buffers[0];
    struct nke_filter_state st;
    nke_core_expire(&x->c, 1000 + NKE_HOLD_TIMEOUT_DEFAULT_MS, 7);
    CHECK(chunk_of(x, a) == NULL);
    CHECK(chunk_of(x, b) != NULL);
    x->f.nfinish = 0;
    memset(&m, 0, sizeof(m));
    add_verdict(&m, a, x->sid, NKE_ACT_DROP, 0);
    add_release(&m, a, abuf);
    add_verdict(&m, b, x->sid, NKE_ACT_DROP, 0);
    CHECK_EQ(nke_core_respond(&x->c, m.bytes, resp_build(&m)), NKE_OK);
    CHECK_EQ(x->c.stats.stale_entries, 2);
    CHECK_EQ(x->f.nfinish, 1);
    CHECK(x->f.finish[0].data_ctx == &x->data[1]);
    nke_core_get_state(&x->c, &st);
    CHECK_EQ(st.responses_rejected, 0);
    CHECK_EQ(st.chunks_dropped, 1);
    fixture_free(x);
}

/* The buffer-reuse case: chunk a's deadline passed (the filter released it
 * and its buffer), the freed buffer went to chunk b, and the client's
 * response still carries a's verdict and release next to b's and c's (a
 * client that decided a before it read the CHUNK_RELEASED record). The stale
 * release names the buffer b's release names too: it is skipped, not a
 * duplicate, and every live verdict applies. `stale_first` puts a's entries
 * before the live ones, else after. */
static void stale_release_of_reused_buffer(bool stale_first)
{
    static struct resp m;
    struct fixture *x = fixture_new(NKE_CAPTURE_ALL);
    uint64_t a = hold(x, 0, 10, 1000), b, c;
    uint16_t abuf = chunk_of(x, a)->buffers[0];
    struct nke_filter_state st;
    nke_core_expire(&x->c, 1000 + NKE_HOLD_TIMEOUT_DEFAULT_MS, 7);
    CHECK(chunk_of(x, a) == NULL);
    b = hold(x, 1, 20, 6000);
    c = hold(x, 2, NKE_BUFFER_SIZE + 1, 6000);
    CHECK(b != 0 && c != 0);
    CHECK_EQ(chunk_of(x, b)->buffers[0], abuf); /* the pool hands the freed buffer out first */
    x->f.nfinish = 0;
    memset(&m, 0, sizeof(m));
    if (stale_first)
        add_verdict(&m, a, x->sid, NKE_ACT_ALLOW, 0);
    add_verdict(&m, b, x->sid, NKE_ACT_DROP, 0);
    add_verdict(&m, c, x->sid, NKE_ACT_ALLOW, 0);
    if (!stale_first)
        add_verdict(&m, a, x->sid, NKE_ACT_ALLOW, 0);
    if (stale_first)
        add_release(&m, a, abuf);
    add_releases_of(&m, x, b);
    add_releases_of(&m, x, c);
    if (!stale_first)
        add_release(&m, a, abuf);
    CHECK_EQ(nke_core_validate_response(&x->c, m.bytes, resp_build(&m)), NKE_OK);
    CHECK_EQ(nke_core_respond(&x->c, m.bytes, resp_build(&m)), NKE_OK);
    CHECK_EQ(x->f.nfinish, 2);
    CHECK(x->f.finish[0].data_ctx == &x->data[1]);
    CHECK_EQ(x->f.finish[0].action, NKE_ACT_DROP);
    CHECK(x->f.finish[1].data_ctx == &x->data[2]);
    CHECK_EQ(x->f.finish[1].action, NKE_ACT_ALLOW);
    CHECK(chunk_of(x, b) == NULL && chunk_of(x, c) == NULL); /* decided and released */
    nke_core_get_state(&x->c, &st);
    CHECK_EQ(st.responses_rejected, 0);
    CHECK_EQ(st.stale_entries, 2);
    CHECK_EQ(st.chunks_pending, 0);
    CHECK_EQ(st.buffers_in_use, 0);
    CHECK_EQ(st.chunks_dropped, 1);
    fixture_free(x);
}

static void test_stale_release_of_reused_buffer_first(void) { stale_release_of_reused_buffer(true); }
static void test_stale_release_of_reused_buffer_last(void) { stale_release_of_reused_buffer(false); }

/* Two live releases of one buffer are still a duplicate, stale entries or not. */
static void test_live_duplicate_release_still_refused(void)
{
    static struct resp m;
    struct fixture *x = fixture_new(NKE_CAPTURE_ALL);
    uint64_t a = hold(x, 0, 10, 1000), b;
    uint16_t abuf = chunk_of(x, a)->buffers[0];
    nke_core_expire(&x->c, 1000 + NKE_HOLD_TIMEOUT_DEFAULT_MS, 7);
    b = hold(x, 1, 20, 6000);
    memset(&m, 0, sizeof(m));
    add_release(&m, a, abuf);
    add_release(&m, b, abuf);
    add_release(&m, b, abuf);
    CHECK_EQ(nke_core_respond(&x->c, m.bytes, resp_build(&m)), NKE_ERR_BUF_DUP);
    CHECK_EQ(x->c.stats.stale_entries, 0);
    fixture_free(x);
}

/* ======================================================================== */
/* put_data                                                                  */
/* ======================================================================== */

static int put(struct fixture *x, uint64_t chunk, uint32_t total, uint32_t off, const char *bytes,
               uint32_t len)
{
    static uint8_t msg[sizeof(struct nke_put_data_hdr) + NKE_PUT_DATA_MAX_PIECE + 16];
    struct nke_put_data_hdr h;
    memset(&h, 0, sizeof(h));
    h.chunk_id = chunk;
    h.sock = x->sid;
    h.total_len = total;
    h.offset = off;
    h.len = len;
    memcpy(msg, &h, sizeof(h));
    if (len)
        memcpy(msg + sizeof(h), bytes, len);
    return nke_core_put_data(&x->c, msg, (uint32_t)sizeof(h) + len);
}

static void test_put_data_ordering(void)
{
    static struct resp m;
    struct fixture *x = fixture_new(NKE_CAPTURE_ALL);
    uint64_t id = hold(x, 0, 10, 0);
    uint8_t raw[sizeof(struct nke_put_data_hdr) + 4];
    struct nke_put_data_hdr h;
    CHECK_EQ(put(x, id, 9, 3, "abc", 3), NKE_ERR_PUT_OFFSET); /* nothing staged yet */
    CHECK_EQ(put(x, id, 9, 0, "abc", 3), NKE_OK);
    CHECK_EQ(put(x, id, 9, 4, "def", 3), NKE_ERR_PUT_OFFSET);
    CHECK_EQ(put(x, id, 10, 3, "def", 3), NKE_ERR_PUT_LEN);   /* total changed */
    CHECK_EQ(put(x, id, 9, 3, "defghij", 7), NKE_ERR_PUT_LEN); /* beyond total */
    CHECK_EQ(put(x, id, 9, 3, "def", 3), NKE_OK);
    /* verdict before staging is complete */
    memset(&m, 0, sizeof(m));
    add_verdict(&m, id, x->sid, NKE_ACT_ALLOW_MODIFIED, 9);
    CHECK_EQ(nke_core_respond(&x->c, m.bytes, resp_build(&m)), NKE_ERR_MODIFIED_LEN);
    /* restart at 0 discards the old staging */
    CHECK_EQ(put(x, id, 6, 0, "XYZ", 3), NKE_OK);
    CHECK_EQ(x->f.unstage_calls, 1);
    CHECK_EQ(put(x, id, 6, 3, "123", 3), NKE_OK);
    CHECK_EQ(put(x, id, 6, 6, "", 0), NKE_OK);
    CHECK_EQ(put(x, 999, 6, 0, "", 0), NKE_ERR_UNKNOWN_CHUNK);
    CHECK_EQ(put(x, id, NKE_MODIFIED_MAX_LEN + 1, 0, "", 0), NKE_ERR_PUT_LEN);
    /* malformed framing */
    memset(&h, 0, sizeof(h));
    h.chunk_id = id;
    h.sock = x->sid;
    h.total_len = 6;
    h.len = 4;
    memcpy(raw, &h, sizeof(h));
    CHECK_EQ(nke_core_put_data(&x->c, raw, sizeof(raw) - 1), NKE_ERR_SIZE);
    CHECK_EQ(nke_core_put_data(&x->c, raw, 8), NKE_ERR_SIZE);
    h._pad0 = 1;
    memcpy(raw, &h, sizeof(h));
    CHECK_EQ(nke_core_put_data(&x->c, raw, sizeof(raw)), NKE_ERR_RESERVED);
    h._pad0 = 0;
    h.sock.gen++;
    memcpy(raw, &h, sizeof(h));
    CHECK_EQ(nke_core_put_data(&x->c, raw, sizeof(raw)), NKE_ERR_SOCK);
    h.sock.gen--;
    h.len = NKE_PUT_DATA_MAX_PIECE + 1;
    memcpy(raw, &h, sizeof(h));
    CHECK_EQ(nke_core_put_data(&x->c, raw, sizeof(raw)), NKE_ERR_PUT_LEN);
    /* the rejected pieces changed nothing: the staged 6 bytes go out */
    memset(&m, 0, sizeof(m));
    add_verdict(&m, id, x->sid, NKE_ACT_ALLOW_MODIFIED, 6);
    CHECK_EQ(nke_core_respond(&x->c, m.bytes, resp_build(&m)), NKE_OK);
    CHECK_EQ(x->f.nfinish, 1);
    CHECK_EQ(x->f.finish[0].staged_len, 6);
    CHECK(memcmp(x->f.finish[0].staged, "XYZ123", 6) == 0);
    CHECK_EQ(x->f.live_staged, 0);
    /* decided: no more staging */
    CHECK_EQ(put(x, id, 1, 0, "a", 1), NKE_ERR_UNKNOWN_CHUNK);
    fixture_free(x);
}

static void test_put_data_zero_length_and_failure(void)
{
    static struct resp m;
    struct fixture *x = fixture_new(NKE_CAPTURE_ALL);
    uint64_t id = hold(x, 0, 10, 0), id2 = hold(x, 1, 10, 0);
    CHECK_EQ(put(x, id, 0, 0, "", 0), NKE_OK);
    x->f.stage_fail = true;
    CHECK_EQ(put(x, id2, 4, 0, "abcd", 4), NKE_ERR_NO_MEMORY);
    x->f.stage_fail = false;
    memset(&m, 0, sizeof(m));
    add_verdict(&m, id, x->sid, NKE_ACT_ALLOW_MODIFIED, 0);
    CHECK_EQ(nke_core_respond(&x->c, m.bytes, resp_build(&m)), NKE_OK);
    CHECK_EQ(x->f.finish[0].action, NKE_ACT_ALLOW_MODIFIED);
    CHECK_EQ(x->f.finish[0].staged_len, 0);
    /* failed staging left nothing to apply */
    memset(&m, 0, sizeof(m));
    add_verdict(&m, id2, x->sid, NKE_ACT_ALLOW_MODIFIED, 4);
    CHECK_EQ(nke_core_respond(&x->c, m.bytes, resp_build(&m)), NKE_ERR_MODIFIED_LEN);
    fixture_free(x);
}

/* ======================================================================== */
/* Deadlines, client close, detach, fail-open                                */
/* ======================================================================== */

static void test_deadline_expiry(void)
{
    struct fixture *x = fixture_new(NKE_CAPTURE_ALL);
    struct nke_capture_config cfg;
    struct nke_nt_chunk_released rel;
    struct nke_filter_state st;
    uint64_t a, b;
    memset(&cfg, 0, sizeof(cfg));
    cfg.abi_version = NKE_ABI_VERSION;
    cfg.mode = NKE_CAPTURE_ALL;
    cfg.hold_timeout_ms = 100;
    CHECK_EQ(nke_core_set_capture(&x->c, &cfg, sizeof(cfg)), NKE_OK);
    CHECK_EQ(nke_core_expire(&x->c, 0, 0), UINT32_MAX);
    a = hold(x, 0, 10, 1000);
    b = hold(x, 1, 10, 1030);
    x->f.nrecs = 0;
    CHECK_EQ(nke_core_expire(&x->c, 1050, 0), 50);
    CHECK_EQ(x->f.nfinish, 0);
    CHECK_EQ(nke_core_expire(&x->c, 1100, 77), 30);
    CHECK_EQ(x->f.nfinish, 1);
    CHECK_EQ(x->f.finish[0].action, NKE_ACT_ALLOW);
    CHECK_EQ(x->f.finish[0].reason, NKE_RELEASE_TIMEOUT);
    CHECK(x->f.finish[0].data_ctx == &x->data[0]);
    CHECK_EQ(x->f.nrecs, 1);
    memcpy(&rel, x->f.recs[0], sizeof(rel));
    CHECK_EQ(rel.hdr.type, NKE_NT_CHUNK_RELEASED);
    CHECK_EQ(rel.chunk_id, a);
    CHECK_EQ(rel.reason, NKE_RELEASE_TIMEOUT);
    CHECK_EQ(rel.size, 10);
    CHECK_EQ(rel.hdr.time_ns, 77);
    CHECK(chunk_of(x, a) == NULL);
    CHECK_EQ(nke_core_expire(&x->c, 5000, 0), UINT32_MAX);
    CHECK(chunk_of(x, b) == NULL);
    nke_core_get_state(&x->c, &st);
    CHECK_EQ(st.chunks_auto_released, 2);
    CHECK_EQ(st.buffers_in_use, 0);
    CHECK_EQ(st.chunks_pending, 0);
    fixture_free(x);
}

static void test_client_close_releases_all(void)
{
    struct rfix r;
    struct fixture *x;
    struct nke_filter_state st;
    int i, released = 0;
    uint64_t id = 0;
    rfix_init(&r);
    x = r.x;
    nke_core_client_close(&x->c);
    CHECK_EQ(x->f.nfinish, 3);
    for (i = 0; i < x->f.nfinish; i++) {
        CHECK_EQ(x->f.finish[i].action, NKE_ACT_ALLOW);
        CHECK_EQ(x->f.finish[i].reason, NKE_RELEASE_CLIENT_GONE);
        CHECK_EQ(x->f.finish[i].staged_len, 0);
    }
    for (i = 0; i < x->f.nrecs; i++) {
        struct nke_nt_chunk_released rel;
        memcpy(&rel, x->f.recs[i], sizeof(rel));
        if (rel.hdr.type == NKE_NT_CHUNK_RELEASED && rel.reason == NKE_RELEASE_CLIENT_GONE)
            released++;
    }
    CHECK_EQ(released, 3);
    CHECK_EQ(x->f.live_staged, 0); /* c3's staging was discarded */
    nke_core_get_state(&x->c, &st);
    CHECK_EQ(st.buffers_in_use, 0);
    CHECK_EQ(st.chunks_pending, 0);
    CHECK_EQ(st.flags, 0);
    CHECK_EQ(st.capture_mode, NKE_CAPTURE_NOTHING);
    /* no client: nothing deferred, nothing emitted */
    x->f.nrecs = 0;
    CHECK_EQ(nke_core_data(&x->c, x->sid, NKE_DIR_OUT, 10, 0, NULL, &x->data[0], 0, 0, &id),
             NKE_DATA_PASS);
    CHECK_EQ(id, 0);
    CHECK_EQ(x->f.nrecs, 0);
    fixture_free(x);
}

static void test_client_open_errors(void)
{
    struct fixture *x = fixture_new(NKE_CAPTURE_ALL);
    struct nke_open_request req;
    struct nke_open_reply rep;
    memset(&req, 0, sizeof(req));
    req.abi_version = NKE_ABI_VERSION;
    CHECK_EQ(nke_core_client_open(&x->c, &req, &rep, 5), NKE_ERR_BUSY);
    nke_core_client_close(&x->c);
    req.abi_version = NKE_ABI_VERSION + 1;
    CHECK_EQ(nke_core_client_open(&x->c, &req, &rep, 5), NKE_ERR_VERSION);
    CHECK_EQ(rep.abi_version, NKE_ABI_VERSION);
    req.abi_version = NKE_ABI_VERSION;
    req.flags = 4;
    CHECK_EQ(nke_core_client_open(&x->c, &req, &rep, 5), NKE_ERR_FLAGS);
    req.flags = 0;
    req._pad0 = 1;
    CHECK_EQ(nke_core_client_open(&x->c, &req, &rep, 5), NKE_ERR_RESERVED);
    req._pad0 = 0;
    CHECK_EQ(nke_core_client_open(&x->c, &req, &rep, 6), NKE_OK);
    CHECK_EQ(rep.buffer_count, NKE_BUFFER_COUNT);
    CHECK_EQ(rep.buffer_size, NKE_BUFFER_SIZE);
    CHECK_EQ(rep.queue_data_size, NKE_QUEUE_DATA_SIZE);
    CHECK_EQ(rep.kev_vendor_code, 0x1234);
    CHECK_EQ(rep.kev_msg_limit, 224);
    CHECK_EQ(rep.session_id, 6);
    fixture_free(x);
}

/* rec is an NKE_NT_DATA_GAP record with these fields. */
static void check_gap(const uint8_t *rec, struct nke_sock_id sock, uint8_t dir, uint64_t offset,
                      uint32_t size, uint8_t reason)
{
    struct nke_nt_data_gap g;
    memcpy(&g, rec, sizeof(g));
    CHECK_EQ(g.hdr.type, NKE_NT_DATA_GAP);
    CHECK_EQ(g.hdr.size, sizeof(g));
    CHECK_EQ(g.hdr.sock.slot, sock.slot);
    CHECK_EQ(g.hdr.sock.gen, sock.gen);
    CHECK_EQ(g.direction, dir);
    CHECK_EQ(g.stream_offset, offset);
    CHECK_EQ(g.size, size);
    CHECK_EQ(g.reason, reason);
    CHECK_EQ(g._pad0, 0);
}

static void test_pool_exhausted_passes(void)
{
    struct fixture *x = fixture_new(NKE_CAPTURE_ALL);
    struct nke_filter_state st;
    uint64_t id;
    int i;
    for (i = 0; i < 8; i++)
        CHECK(hold(x, i, NKE_CHUNK_MAX_BYTES, 0) != 0);
    nke_core_get_state(&x->c, &st);
    CHECK_EQ(st.buffers_in_use, NKE_BUFFER_COUNT);
    x->f.nrecs = 0;
    CHECK_EQ(nke_core_data(&x->c, x->sid, NKE_DIR_IN, 1, 0, NULL, &x->data[9], 0, 0, &id),
             NKE_DATA_PASS);
    nke_core_get_state(&x->c, &st);
    CHECK_EQ(st.chunks_passed_pool_full, 1);
    CHECK_EQ(st.chunks_held, 8);
    /* no NKE_NT_DATA; the client still learns of the hole */
    CHECK_EQ(x->f.nrecs, 1);
    check_gap(x->f.recs[0], x->sid, NKE_DIR_IN, 0, 1, NKE_GAP_NO_BUFFER);
    fixture_free(x);
}

/* ======================================================================== */
/* Chunk table: held chunks beyond the buffer pool                           */
/* ======================================================================== */

#define MANY 500

/* Holds MANY chunks of distinct bytes, each one's buffers released right
 * after its notification (as a client that copies the bytes out does), so
 * the pool never runs dry. ids[] gets the chunk ids, data[] their origins. */
static void hold_many_released(struct fixture *x, struct held_data *data, uint8_t *bytes,
                               uint64_t *ids, uint32_t n, uint64_t now_ms)
{
    static struct resp m;
    uint32_t i;
    for (i = 0; i < n; i++) {
        uint32_t k;
        uint64_t id = 0;
        int r;
        for (k = 0; k < 100; k++)
            bytes[i * 100 + k] = (uint8_t)(i + k);
        data[i].bytes = bytes + i * 100;
        data[i].len = 100;
        r = nke_core_data(&x->c, x->sid, NKE_DIR_OUT, 100, 0, NULL, &data[i], now_ms, 1, &id);
        CHECK_EQ(r, NKE_DATA_HELD);
        ids[i] = id;
        /* the copy the client sees is the original */
        {
            const struct nke_chunk *ch = chunk_of(x, id);
            CHECK(ch != NULL);
            if (ch)
                CHECK(memcmp(g_buffers + (size_t)ch->buffers[0] * NKE_BUFFER_SIZE, data[i].bytes,
                             100) == 0);
        }
        memset(&m, 0, sizeof(m));
        add_releases_of(&m, x, id);
        CHECK_EQ(nke_core_respond(&x->c, m.bytes, resp_build(&m)), NKE_OK);
    }
}

static int finish_of(struct fixture *x, const struct held_data *d)
{
    int i, found = -1;
    for (i = 0; i < x->f.nfinish && i < MAX_FINISH; i++)
        if (x->f.finish[i].data_ctx == d) {
            if (found >= 0)
                return -2; /* finished twice */
            found = i;
        }
    return found;
}

static void test_hold_500_buffers_released(void)
{
    struct fixture *x = fixture_new(NKE_CAPTURE_ALL);
    static struct held_data data[MANY];
    static uint8_t bytes[MANY * 100];
    static uint64_t ids[MANY];
    static uint32_t order[MANY];
    static struct resp m;
    struct nke_filter_state st;
    uint32_t i, j;
    hold_many_released(x, data, bytes, ids, MANY, 0);
    nke_core_get_state(&x->c, &st);
    CHECK_EQ(st.chunks_pending, MANY);
    CHECK_EQ(st.chunks_held, MANY);
    CHECK_EQ(st.buffers_in_use, 0);
    CHECK_EQ(st.chunks_passed_pool_full, 0);
    CHECK_EQ(x->socks[x->sid.slot].held, MANY);
    CHECK_EQ(x->f.nfinish, 0);
    for (i = 1; i < MANY; i++)
        CHECK(ids[i] > ids[i - 1]); /* unique, growing */
    /* Verdicts in a scrambled order, in responses of up to 200 verdicts:
     * every third dropped, the rest allowed. */
    for (i = 0; i < MANY; i++)
        order[i] = i;
    for (i = MANY - 1; i > 0; i--) {
        uint32_t k = (i * 7919u + 13u) % (i + 1u), t = order[i];
        order[i] = order[k];
        order[k] = t;
    }
    for (i = 0; i < MANY; i += 200) {
        memset(&m, 0, sizeof(m));
        for (j = i; j < MANY && j < i + 200; j++)
            add_verdict(&m, ids[order[j]], x->sid,
                        order[j] % 3 == 0 ? NKE_ACT_DROP : NKE_ACT_ALLOW, 0);
        CHECK_EQ(nke_core_respond(&x->c, m.bytes, resp_build(&m)), NKE_OK);
    }
    CHECK_EQ(x->f.nfinish, MANY);
    for (i = 0; i < MANY; i++) {
        int fi = finish_of(x, &data[i]);
        CHECK(fi >= 0);
        if (fi >= 0) {
            CHECK_EQ(x->f.finish[fi].action, i % 3 == 0 ? NKE_ACT_DROP : NKE_ACT_ALLOW);
            CHECK_EQ(x->f.finish[fi].reason, 0);
        }
    }
    nke_core_get_state(&x->c, &st);
    CHECK_EQ(st.chunks_pending, 0);
    CHECK_EQ(x->c.nheld, 0);
    CHECK_EQ(x->c.nchunk_free, NKE_CHUNK_TABLE_SIZE); /* decided + released: slots freed */
    CHECK_EQ(x->socks[x->sid.slot].held, 0);
    /* a second verdict on a freed chunk is stale, not an error */
    memset(&m, 0, sizeof(m));
    add_verdict(&m, ids[7], x->sid, NKE_ACT_ALLOW, 0);
    CHECK_EQ(nke_core_respond(&x->c, m.bytes, resp_build(&m)), NKE_OK);
    CHECK_EQ(x->c.stats.stale_entries, 1);
    CHECK_EQ(x->f.nfinish, MANY);
    fixture_free(x);
}

static void test_hold_500_deadline_expiry(void)
{
    struct fixture *x = fixture_new(NKE_CAPTURE_ALL);
    static struct held_data data[MANY];
    static uint8_t bytes[MANY * 100];
    static uint64_t ids[MANY];
    uint32_t i, nrel = 0;
    /* half at t=0, half at t=1000: the first expiry takes exactly the first half */
    hold_many_released(x, data, bytes, ids, MANY / 2, 0);
    hold_many_released(x, data + MANY / 2, bytes + MANY / 2 * 100, ids + MANY / 2, MANY / 2, 1000);
    x->f.nrecs = 0;
    CHECK_EQ(nke_core_expire(&x->c, NKE_HOLD_TIMEOUT_DEFAULT_MS - 1, 5), 1);
    CHECK_EQ(x->f.nfinish, 0);
    CHECK_EQ(nke_core_expire(&x->c, NKE_HOLD_TIMEOUT_DEFAULT_MS, 5), 1000);
    CHECK_EQ(x->f.nfinish, MANY / 2);
    CHECK_EQ(nke_core_expire(&x->c, NKE_HOLD_TIMEOUT_DEFAULT_MS + 1000, 5), UINT32_MAX);
    CHECK_EQ(x->f.nfinish, MANY);
    for (i = 0; i < MANY; i++) {
        int fi = finish_of(x, &data[i]);
        CHECK(fi >= 0);
        if (fi >= 0) {
            CHECK_EQ(x->f.finish[fi].action, NKE_ACT_ALLOW); /* fail open: the original */
            CHECK_EQ(x->f.finish[fi].reason, NKE_RELEASE_TIMEOUT);
        }
    }
    for (i = 0; i < (uint32_t)x->f.nrecs; i++) {
        struct nke_nt_chunk_released r;
        memcpy(&r, x->f.recs[i], sizeof(r));
        if (r.hdr.type == NKE_NT_CHUNK_RELEASED && r.reason == NKE_RELEASE_TIMEOUT)
            nrel++;
    }
    CHECK_EQ(nrel, MANY);
    CHECK_EQ(x->c.stats.chunks_pending, 0);
    CHECK_EQ(x->c.stats.chunks_auto_released, MANY);
    CHECK_EQ(x->c.nchunk_free, NKE_CHUNK_TABLE_SIZE);
    fixture_free(x);
}

static void test_hold_500_client_close(void)
{
    struct fixture *x = fixture_new(NKE_CAPTURE_ALL);
    static struct held_data data[MANY];
    static uint8_t bytes[MANY * 100];
    static uint64_t ids[MANY];
    uint64_t id;
    uint32_t i;
    hold_many_released(x, data, bytes, ids, MANY, 0);
    /* plus a few still owning their buffers (not released by the client) */
    for (i = 0; i < 4; i++)
        CHECK(hold(x, (int)i, 1000, 0) != 0);
    nke_core_client_close(&x->c);
    CHECK_EQ(x->f.nfinish, MANY + 4);
    for (i = 0; i < MANY; i++) {
        int fi = finish_of(x, &data[i]);
        CHECK(fi >= 0);
        if (fi >= 0) {
            CHECK_EQ(x->f.finish[fi].action, NKE_ACT_ALLOW);
            CHECK_EQ(x->f.finish[fi].reason, NKE_RELEASE_CLIENT_GONE);
        }
    }
    CHECK_EQ(nke_pool_in_use(&x->c.pool), 0);
    CHECK_EQ(x->c.stats.chunks_pending, 0);
    CHECK_EQ(x->c.nheld, 0);
    CHECK_EQ(x->c.nchunk_free, NKE_CHUNK_TABLE_SIZE);
    CHECK_EQ(x->socks[x->sid.slot].held, 0);
    /* nothing is held with no client */
    CHECK_EQ(nke_core_data(&x->c, x->sid, NKE_DIR_IN, 10, 0, NULL, &x->data[0], 0, 0, &id),
             NKE_DATA_PASS);
    fixture_free(x);
}

static void test_chunk_table_full_passes(void)
{
    struct fixture *x = fixture_new(NKE_CAPTURE_ALL);
    static struct held_data data[NKE_CHUNK_TABLE_SIZE];
    static uint8_t bytes[NKE_CHUNK_TABLE_SIZE * 100];
    static uint64_t ids[NKE_CHUNK_TABLE_SIZE];
    static struct resp m;
    struct nke_filter_state st;
    uint64_t id = 0;
    hold_many_released(x, data, bytes, ids, NKE_CHUNK_TABLE_SIZE, 0);
    CHECK_EQ(x->c.nchunk_free, 0);
    x->f.nrecs = 0;
    CHECK_EQ(nke_core_data(&x->c, x->sid, NKE_DIR_IN, 10, 0, NULL, &x->data[0], 0, 0, &id),
             NKE_DATA_PASS);
    CHECK_EQ(id, 0);
    CHECK_EQ(x->f.nrecs, 1); /* no data record, a gap record */
    check_gap(x->f.recs[0], x->sid, NKE_DIR_IN, 0, 10, NKE_GAP_NO_BUFFER);
    nke_core_get_state(&x->c, &st);
    CHECK_EQ(st.chunks_passed_pool_full, 1);
    CHECK_EQ(st.chunks_pending, NKE_CHUNK_TABLE_SIZE);
    CHECK_EQ(st.buffers_in_use, 0); /* the pool is not what ran out */
    /* one verdict frees one slot: the next chunk is held again, with a new id */
    memset(&m, 0, sizeof(m));
    add_verdict(&m, ids[100], x->sid, NKE_ACT_ALLOW, 0);
    CHECK_EQ(nke_core_respond(&x->c, m.bytes, resp_build(&m)), NKE_OK);
    CHECK(hold(x, 1, 10, 0) > ids[NKE_CHUNK_TABLE_SIZE - 1]);
    CHECK_EQ(x->c.nchunk_free, 0);
    fixture_free(x);
}

static void test_queue_full_passes_and_counts(void)
{
    struct fixture *x = fixture_new(NKE_CAPTURE_ALL);
    struct nke_filter_state st;
    uint64_t id;
    x->f.queue_full = true;
    CHECK_EQ(nke_core_data(&x->c, x->sid, NKE_DIR_IN, 100, 0, NULL, &x->data[0], 0, 0, &id),
             NKE_DATA_PASS);
    nke_core_event(&x->c, x->sid, NKE_EV_CONNECTED, 0);
    nke_core_get_state(&x->c, &st);
    CHECK_EQ(st.notifications_lost, 3); /* the data record, its gap record, the event */
    CHECK_EQ(st.buffers_in_use, 0);
    CHECK_EQ(st.chunks_held, 0);
    fixture_free(x);
}

static void test_detach_drops_held(void)
{
    struct fixture *x = fixture_new(NKE_CAPTURE_ALL);
    struct nke_sock_info info;
    struct nke_sock_id old = x->sid, again;
    struct nke_nt_detach det;
    uint64_t a = hold(x, 0, 10, 0), id;
    (void)a;
    x->f.nrecs = 0;
    nke_core_detach(&x->c, x->sid, 9);
    CHECK_EQ(x->f.nfinish, 1);
    CHECK_EQ(x->f.finish[0].action, NKE_ACT_DROP);
    CHECK_EQ(x->f.finish[0].reason, NKE_RELEASE_SOCKET_GONE);
    CHECK_EQ(x->f.nrecs, 2);
    memcpy(&det, x->f.recs[1], sizeof(det));
    CHECK_EQ(det.hdr.type, NKE_NT_DETACH);
    CHECK_EQ(det.bytes_out, 10);
    CHECK(nke_core_sock(&x->c, old) == NULL);
    CHECK_EQ(nke_core_data(&x->c, old, NKE_DIR_IN, 10, 0, NULL, &x->data[0], 0, 0, &id), NKE_DATA_PASS);
    memset(&info, 0, sizeof(info));
    again = nke_core_attach(&x->c, &info, NULL, 0);
    CHECK_EQ(again.slot, old.slot);
    CHECK(again.gen != old.gen && again.gen != 0);
    fixture_free(x);
}

static void test_socket_table_full(void)
{
    struct fixture *x = fixture_new(NKE_CAPTURE_ALL);
    struct nke_sock_info info;
    struct nke_filter_state st;
    struct nke_sock_id id;
    int i, ok = 0;
    memset(&info, 0, sizeof(info));
    for (i = 0; i < 20; i++) {
        id = nke_core_attach(&x->c, &info, NULL, 0);
        if (id.slot)
            ok++;
    }
    CHECK_EQ(ok, 14); /* 16 slots, slot 0 unused, one taken by the fixture */
    nke_core_get_state(&x->c, &st);
    CHECK_EQ(st.sockets_untracked, 6);
    CHECK_EQ(st.sockets_live, 15);
    fixture_free(x);
}

/* ======================================================================== */
/* Capture modes and rules                                                   */
/* ======================================================================== */

static void cfg_init(struct nke_capture_config *cfg, uint32_t mode, uint32_t def)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->abi_version = NKE_ABI_VERSION;
    cfg->mode = mode;
    cfg->default_action = def;
}

static void test_capture_validate_errors(void)
{
    static struct nke_capture_config cfg;
    struct nke_rule *r = &cfg.rules[0];
    uint32_t one = (uint32_t)(offsetof(struct nke_capture_config, rules) + sizeof(struct nke_rule));
    cfg_init(&cfg, NKE_CAPTURE_RULES, NKE_RULE_PASS);
    CHECK_EQ(nke_capture_validate(&cfg, sizeof(cfg)), NKE_OK);
    CHECK_EQ(nke_capture_validate(&cfg, 23), NKE_ERR_SIZE);
    CHECK_EQ(nke_capture_validate(&cfg, sizeof(cfg) + 1), NKE_ERR_SIZE);
    cfg.abi_version = 0;
    CHECK_EQ(nke_capture_validate(&cfg, sizeof(cfg)), NKE_ERR_VERSION);
    cfg_init(&cfg, 3, NKE_RULE_PASS);
    CHECK_EQ(nke_capture_validate(&cfg, sizeof(cfg)), NKE_ERR_MODE);
    cfg_init(&cfg, NKE_CAPTURE_ALL, NKE_RULE_PASS);
    cfg.hold_timeout_ms = NKE_HOLD_TIMEOUT_MAX_MS + 1;
    CHECK_EQ(nke_capture_validate(&cfg, sizeof(cfg)), NKE_ERR_MODE);
    cfg_init(&cfg, NKE_CAPTURE_RULES, 3);
    CHECK_EQ(nke_capture_validate(&cfg, sizeof(cfg)), NKE_ERR_ACTION);
    cfg_init(&cfg, NKE_CAPTURE_RULES, 0);
    cfg.tag = 0xFFFFFFFFu; /* the client's name for the config: any value */
    CHECK_EQ(nke_capture_validate(&cfg, sizeof(cfg)), NKE_OK);
    cfg_init(&cfg, NKE_CAPTURE_RULES, 0);
    cfg.nrules = NKE_MAX_RULES + 1;
    CHECK_EQ(nke_capture_validate(&cfg, sizeof(cfg)), NKE_ERR_COUNT);
    cfg.nrules = 2;
    CHECK_EQ(nke_capture_validate(&cfg, one), NKE_ERR_SIZE); /* 2 rules announced, 1 sent */
    cfg.nrules = 1;
    CHECK_EQ(nke_capture_validate(&cfg, one), NKE_OK);
#define RULE_BAD(setup, want)                       \
    do {                                            \
        cfg_init(&cfg, NKE_CAPTURE_RULES, 0);       \
        cfg.nrules = 1;                             \
        setup;                                      \
        CHECK_EQ(nke_capture_validate(&cfg, one), want); \
    } while (0)
    RULE_BAD(r->match = 0x200, NKE_ERR_FLAGS);
    RULE_BAD(r->action = 3, NKE_ERR_ACTION);
    RULE_BAD(r->_pad0 = 1, NKE_ERR_RESERVED);
    RULE_BAD(memset(r->comm, 'a', NKE_COMM_LEN), NKE_ERR_RULE);
    RULE_BAD(r->match = NKE_MATCH_COMM, NKE_ERR_RULE);
    RULE_BAD((r->match = NKE_MATCH_DIRECTION, r->direction = 4), NKE_ERR_RULE);
    RULE_BAD((r->match = NKE_MATCH_DIRECTION, r->direction = 0), NKE_ERR_RULE);
    RULE_BAD((r->match = NKE_MATCH_PROTOCOL, r->protocol = 1), NKE_ERR_RULE);
    RULE_BAD((r->match = NKE_MATCH_FAMILY, r->family = 10), NKE_ERR_RULE);
    RULE_BAD((r->match = NKE_MATCH_LOCAL_PORT, r->local_port_min = 9, r->local_port_max = 8), NKE_ERR_RULE);
    RULE_BAD((r->match = NKE_MATCH_REMOTE_PORT, r->remote_port_min = 9, r->remote_port_max = 8), NKE_ERR_RULE);
    RULE_BAD((r->match = NKE_MATCH_REMOTE_ADDR | NKE_MATCH_FAMILY, r->family = NKE_AF_INET,
              r->remote_prefix = 33), NKE_ERR_RULE);
    RULE_BAD((r->match = NKE_MATCH_LOCAL_ADDR, r->local_prefix = 129), NKE_ERR_RULE);
#undef RULE_BAD
}

static void test_capture_classify_rules(void)
{
    static struct nke_capture_config cfg;
    struct nke_flow f;
    struct nke_rule *r;
    cfg_init(&cfg, NKE_CAPTURE_RULES, NKE_RULE_PASS);
    cfg.nrules = 3;
    /* rule 0: outgoing TCP to 10.1.0.0/16 port 443 -> HOLD */
    r = &cfg.rules[0];
    r->match = NKE_MATCH_DIRECTION | NKE_MATCH_PROTOCOL | NKE_MATCH_REMOTE_PORT |
               NKE_MATCH_REMOTE_ADDR | NKE_MATCH_FAMILY;
    r->action = NKE_RULE_HOLD;
    r->direction = NKE_DIR_OUT;
    r->protocol = NKE_PROTO_TCP;
    r->family = NKE_AF_INET;
    r->remote_port_min = r->remote_port_max = 443;
    r->remote_addr[0] = 10;
    r->remote_addr[1] = 1;
    r->remote_prefix = 16;
    /* rule 1: process "curl" -> REPORT */
    r = &cfg.rules[1];
    r->match = NKE_MATCH_COMM;
    r->action = NKE_RULE_REPORT;
    strcpy(r->comm, "curl");
    /* rule 2: pid 7, local ports 1000-2000 -> HOLD */
    r = &cfg.rules[2];
    r->match = NKE_MATCH_PID | NKE_MATCH_LOCAL_PORT;
    r->action = NKE_RULE_HOLD;
    r->pid = 7;
    r->local_port_min = 1000;
    r->local_port_max = 2000;
    CHECK_EQ(nke_capture_validate(&cfg, sizeof(cfg)), NKE_OK);

    memset(&f, 0, sizeof(f));
    f.pid = 1;
    strcpy(f.comm, "curl");
    f.direction = NKE_DIR_OUT;
    f.protocol = NKE_PROTO_TCP;
    f.family = NKE_AF_INET;
    f.remote.family = NKE_AF_INET;
    f.remote.port = 443;
    f.remote.addr[0] = 10;
    f.remote.addr[1] = 1;
    f.remote.addr[2] = 200;
    CHECK_EQ(nke_capture_classify(&cfg, &f, NULL), NKE_RULE_HOLD);     /* first match wins */
    f.remote.addr[1] = 2;
    CHECK_EQ(nke_capture_classify(&cfg, &f, NULL), NKE_RULE_REPORT);   /* prefix misses -> comm */
    f.remote.addr[1] = 1;
    f.direction = NKE_DIR_IN;
    CHECK_EQ(nke_capture_classify(&cfg, &f, NULL), NKE_RULE_REPORT);   /* direction misses */
    strcpy(f.comm, "wget");
    CHECK_EQ(nke_capture_classify(&cfg, &f, NULL), NKE_RULE_PASS);     /* default */
    f.pid = 7;
    f.local.port = 2000;
    CHECK_EQ(nke_capture_classify(&cfg, &f, NULL), NKE_RULE_HOLD);
    f.local.port = 2001;
    CHECK_EQ(nke_capture_classify(&cfg, &f, NULL), NKE_RULE_PASS);
    cfg.default_action = NKE_RULE_REPORT;
    CHECK_EQ(nke_capture_classify(&cfg, &f, NULL), NKE_RULE_REPORT);
    cfg.mode = NKE_CAPTURE_ALL;
    CHECK_EQ(nke_capture_classify(&cfg, &f, NULL), NKE_RULE_HOLD);
    cfg.mode = NKE_CAPTURE_NOTHING;
    CHECK_EQ(nke_capture_classify(&cfg, &f, NULL), NKE_RULE_PASS);
    /* odd prefix length: 10.1.128.0/17 */
    cfg_init(&cfg, NKE_CAPTURE_RULES, NKE_RULE_PASS);
    cfg.nrules = 1;
    cfg.rules[0].match = NKE_MATCH_REMOTE_ADDR;
    cfg.rules[0].action = NKE_RULE_HOLD;
    cfg.rules[0].remote_addr[0] = 10;
    cfg.rules[0].remote_addr[1] = 1;
    cfg.rules[0].remote_addr[2] = 128;
    cfg.rules[0].remote_prefix = 17;
    f.remote.addr[2] = 200;
    CHECK_EQ(nke_capture_classify(&cfg, &f, NULL), NKE_RULE_HOLD);
    f.remote.addr[2] = 127;
    CHECK_EQ(nke_capture_classify(&cfg, &f, NULL), NKE_RULE_PASS);
    f.remote.family = 0; /* no address known: address rules cannot match */
    f.remote.addr[2] = 200;
    CHECK_EQ(nke_capture_classify(&cfg, &f, NULL), NKE_RULE_PASS);
}

/* The selector contract of nke_abi.h, which the kext and nke-emud both
 * apply: OPEN from anyone, everything else (GET_STATE too) only from the
 * open client, an unknown selector refused as such first. */
static void test_selector_contract(void)
{
    for (uint32_t sel = 0; sel < NKE_SEL_COUNT; sel++) {
        CHECK_EQ(nke_core_selector_check(sel, true), NKE_OK);
        CHECK_EQ(nke_core_selector_check(sel, false), sel == NKE_SEL_OPEN ? NKE_OK : NKE_ERR_NOT_OPEN);
    }
    CHECK_EQ(nke_core_selector_check(NKE_SEL_GET_STATE, false), NKE_ERR_NOT_OPEN);
    CHECK_EQ(nke_core_selector_check(NKE_SEL_COUNT, true), NKE_ERR_SELECTOR);
    CHECK_EQ(nke_core_selector_check(NKE_SEL_COUNT, false), NKE_ERR_SELECTOR);
    CHECK_EQ(nke_core_selector_check(0xFFFFFFFFu, false), NKE_ERR_SELECTOR);
}

static void test_capture_modes_in_core(void)
{
    static struct nke_capture_config cfg;
    struct fixture *x = fixture_new(NKE_CAPTURE_NOTHING);
    struct nke_addr remote;
    uint64_t id;
    int nrecs;
    CHECK_EQ(nke_core_data(&x->c, x->sid, NKE_DIR_OUT, 10, 0, NULL, &x->data[0], 0, 0, &id), NKE_DATA_PASS);
    CHECK_EQ(x->f.nrecs, 0);
    memset(&remote, 0, sizeof(remote));
    remote.family = NKE_AF_INET;
    remote.port = 53;
    nke_core_addrs(&x->c, x->sid, NKE_NT_CONNECT_OUT, NULL, &remote, 0);
    cfg_init(&cfg, NKE_CAPTURE_RULES, NKE_RULE_PASS);
    cfg.nrules = 2;
    cfg.rules[0].match = NKE_MATCH_REMOTE_PORT | NKE_MATCH_DIRECTION;
    cfg.rules[0].direction = NKE_DIR_OUT;
    cfg.rules[0].remote_port_min = cfg.rules[0].remote_port_max = 53;
    cfg.rules[0].action = NKE_RULE_HOLD;
    cfg.rules[1].match = NKE_MATCH_REMOTE_PORT;
    cfg.rules[1].remote_port_min = cfg.rules[1].remote_port_max = 53;
    cfg.rules[1].action = NKE_RULE_REPORT;
    CHECK_EQ(nke_core_set_capture(&x->c, &cfg, sizeof(cfg)), NKE_OK);
    CHECK_EQ(nke_core_data(&x->c, x->sid, NKE_DIR_OUT, 10, 0, NULL, &x->data[0], 0, 0, &id), NKE_DATA_HELD);
    CHECK_EQ(nke_core_data(&x->c, x->sid, NKE_DIR_IN, 10, 0, NULL, &x->data[1], 0, 0, &id), NKE_DATA_REPORTED);
    /* a datagram's own peer address decides, not the socket's: to port 54
     * it is neither held nor reported (no record), and it waits behind the
     * chunk held on its direction (stream order, nke_order.h) */
    remote.port = 54;
    nrecs = x->f.nrecs;
    CHECK_EQ(nke_core_data(&x->c, x->sid, NKE_DIR_OUT, 10, NKE_DATA_F_HAS_ADDR | NKE_DATA_F_DATAGRAM,
                           &remote, &x->data[2], 0, 0, &id), NKE_DATA_QUEUED);
    CHECK_EQ(x->f.nrecs, nrecs);
    CHECK_EQ(id, 0);
    cfg.rules[0].remote_port_min = 60;
    cfg.rules[0].remote_port_max = 59;
    CHECK_EQ(nke_core_set_capture(&x->c, &cfg, sizeof(cfg)), NKE_ERR_RULE);
    CHECK_EQ(x->c.capture.rules[0].remote_port_min, 53); /* old config kept */
    fixture_free(x);
}

/* ======================================================================== */
/* Exec events                                                               */
/* ======================================================================== */

#define VENDOR 0x77u

struct kev_msgs {
    int n;
    uint32_t len[NKE_KEV_MAX_CHUNKS];
    uint8_t msg[NKE_KEV_MAX_CHUNKS][512];
};

static void kev_build_all(struct kev_msgs *out, uint32_t exec_id, int32_t pid, const char *path,
                          uint32_t path_len, uint32_t limit)
{
    uint32_t count = nke_kev_chunk_count(path_len, limit), i;
    out->n = 0;
    for (i = 0; i < count; i++) {
        struct nke_kern_event_msg km;
        struct nke_kev_exec_chunk h;
        const char *piece;
        uint32_t plen;
        if (nke_kev_chunk_build(exec_id, pid, 1, 501, 0, path, path_len, limit, i, &h, &piece, &plen) != NKE_OK)
            abort();
        memset(&km, 0, sizeof(km));
        km.total_size = (uint32_t)(sizeof(km) + sizeof(h) + plen);
        km.vendor_code = VENDOR;
        km.kev_class = NKE_KEV_CLASS;
        km.kev_subclass = NKE_KEV_SUBCLASS_EXEC;
        km.event_code = NKE_KEV_EVENT_EXEC;
        km.id = i;
        memcpy(out->msg[i], &km, sizeof(km));
        memcpy(out->msg[i] + sizeof(km), &h, sizeof(h));
        memcpy(out->msg[i] + sizeof(km) + sizeof(h), piece, plen);
        out->len[i] = km.total_size;
        out->n++;
    }
}

struct kev_sink {
    int n;
    struct nke_exec_record recs[64];
};

static void kev_collect(void *arg, const struct nke_exec_record *rec)
{
    struct kev_sink *s = (struct kev_sink *)arg;
    if (s->n < 64)
        s->recs[s->n] = *rec;
    s->n++;
}

static void make_path(char *p, uint32_t len, uint32_t seed)
{
    uint32_t i;
    for (i = 0; i < len; i++)
        p[i] = (char)('a' + (i * 31u + seed) % 26u);
    p[0] = '/';
}

static void test_kev_chunker_limits(void)
{
    static char path[NKE_PATH_MAX + 100];
    struct nke_kev_exec_chunk h;
    const char *piece;
    uint32_t plen;
    make_path(path, sizeof(path), 1);
    CHECK_EQ(nke_kev_piece_size(NKE_KEV_MSG_LIMIT_X86_64), 176);
    CHECK_EQ(nke_kev_piece_size(NKE_KEV_MSG_LIMIT_ARM64), 240);
    CHECK_EQ(nke_kev_piece_size(48), 0);
    CHECK_EQ(nke_kev_chunk_count(1023, 224), 6);
    CHECK_EQ(nke_kev_chunk_count(1023, 288), 5);
    CHECK_EQ(nke_kev_chunk_count(1024, 224), 6); /* macOS's limit no longer bounds it */
    CHECK_EQ(nke_kev_chunk_count(4000, 224), 23);
    CHECK_EQ(nke_kev_chunk_count(4095, 224), 24);
    CHECK_EQ(nke_kev_chunk_count(0, 224), 1);
    CHECK_EQ(nke_kev_chunk_count(100, 48), 0);
    /* longer than the ABI carries: cut to NKE_PATH_MAX - 1, never 0 chunks */
    CHECK_EQ(nke_kev_sendable_len(4095, 224), 4095);
    CHECK_EQ(nke_kev_sendable_len(4096, 224), 4095);
    CHECK_EQ(nke_kev_sendable_len(70000, 224), 4095);
    CHECK_EQ(nke_kev_chunk_count(70000, 224), 24);
    /* 12-byte pieces: 64 chunks carry 768 bytes */
    CHECK_EQ(nke_kev_sendable_len(1000, 60), 768);
    CHECK_EQ(nke_kev_chunk_count(1000, 60), 64);
    CHECK_EQ(nke_kev_sendable_len(1000, 48), 0);
    CHECK_EQ(nke_kev_chunk_build(1, 2, 3, 4, 0, path, 1023, 224, 6, &h, &piece, &plen), NKE_ERR_COUNT);
    CHECK_EQ(nke_kev_chunk_build(1, 2, 3, 4, 0, path, 1023, 48, 0, &h, &piece, &plen), NKE_ERR_SIZE);
    CHECK_EQ(nke_kev_chunk_build(1, 2, 3, 4, 0, path, 1023, 224, 5, &h, &piece, &plen), NKE_OK);
    CHECK_EQ(plen, 1023 - 5 * 176);
    CHECK_EQ(h.offset, 5 * 176);
    CHECK(piece == path + 5 * 176);
    CHECK_EQ(h.chunk_count, 6);
    CHECK_EQ(h.chunk_index, 5);
    CHECK_EQ(h.flags, 0);
    CHECK_EQ(h.total_len, 1023);
    /* the last chunk of a cut path ends at NKE_PATH_MAX - 1, every chunk flagged */
    CHECK_EQ(nke_kev_chunk_build(1, 2, 3, 4, NKE_EXEC_F_FROM_SHIM, path, NKE_PATH_MAX + 50, 224, 23, &h,
                                 &piece, &plen), NKE_OK);
    CHECK_EQ(h.total_len, NKE_PATH_MAX - 1);
    CHECK_EQ(h.offset + plen, NKE_PATH_MAX - 1);
    CHECK_EQ(h.flags, NKE_EXEC_F_FROM_SHIM | NKE_EXEC_F_TRUNCATED);
    CHECK_EQ(nke_kev_chunk_build(1, 2, 3, 4, 0, path, NKE_PATH_MAX + 50, 224, 0, &h, &piece, &plen), NKE_OK);
    CHECK_EQ(h.flags, NKE_EXEC_F_TRUNCATED);
}

/* Chunks a path_len-byte path under limit, feeds them last first, and
 * checks the one record: complete, the first `expect_len` bytes, `flags`. */
static void kev_roundtrip_len(uint32_t limit, uint32_t path_len, uint32_t expect_chunks,
                              uint32_t expect_len, uint16_t expect_flags)
{
    static struct kev_msgs m;
    static struct nke_kev_reasm r;
    static struct kev_sink sink;
    static char path[NKE_PATH_MAX + 1000];
    int i;
    uint32_t k;
    make_path(path, path_len, limit);
    kev_build_all(&m, 42, 900, path, path_len, limit);
    CHECK_EQ(m.n, expect_chunks);
    for (i = 0; i < m.n; i++)
        CHECK(m.len[i] <= limit);
    nke_kev_reasm_init(&r, VENDOR, 1000);
    memset(&sink, 0, sizeof(sink));
    /* out of order: last first */
    for (k = 0; k < (uint32_t)m.n; k++) {
        uint32_t j = (uint32_t)m.n - 1u - k;
        CHECK_EQ(nke_kev_reasm_feed(&r, m.msg[j], m.len[j], 5, kev_collect, &sink), NKE_OK);
        CHECK_EQ(sink.n, k + 1 == (uint32_t)m.n ? 1 : 0);
    }
    CHECK_EQ(sink.n, 1);
    CHECK(sink.recs[0].complete);
    CHECK_EQ(sink.recs[0].path_len, expect_len);
    CHECK(memcmp(sink.recs[0].path, path, expect_len) == 0);
    CHECK_EQ(sink.recs[0].path[expect_len], '\0');
    CHECK_EQ(sink.recs[0].flags, expect_flags);
    CHECK_EQ(sink.recs[0].pid, 900);
    CHECK_EQ(sink.recs[0].exec_id, 42);
    CHECK_EQ(sink.recs[0].chunk_count, expect_chunks);
}

static void kev_roundtrip(uint32_t limit, uint32_t expect_chunks)
{
    kev_roundtrip_len(limit, 1023, expect_chunks, 1023, 0);
}

static void test_kev_1023_under_224(void) { kev_roundtrip(NKE_KEV_MSG_LIMIT_X86_64, 6); }
static void test_kev_1023_under_288(void) { kev_roundtrip(NKE_KEV_MSG_LIMIT_ARM64, 5); }
/* Linux paths reach 4095 bytes: whole, in 23 and 17 messages. */
static void test_kev_4000_under_224(void) { kev_roundtrip_len(NKE_KEV_MSG_LIMIT_X86_64, 4000, 23, 4000, 0); }
static void test_kev_4000_under_288(void) { kev_roundtrip_len(NKE_KEV_MSG_LIMIT_ARM64, 4000, 17, 4000, 0); }
static void test_kev_4095_whole(void) { kev_roundtrip_len(NKE_KEV_MSG_LIMIT_X86_64, 4095, 24, 4095, 0); }
/* Longer than the ABI carries, or than 64 tiny pieces hold: cut, flagged, complete. */
static void test_kev_longer_path_cut_and_flagged(void)
{
    kev_roundtrip_len(NKE_KEV_MSG_LIMIT_X86_64, NKE_PATH_MAX + 500, 24, NKE_PATH_MAX - 1,
                      NKE_EXEC_F_TRUNCATED);
}
static void test_kev_tiny_limit_cut_and_flagged(void) { kev_roundtrip_len(60, 1000, 64, 768, NKE_EXEC_F_TRUNCATED); }

static void test_kev_lost_middle_chunk(void)
{
    static struct kev_msgs m;
    static struct nke_kev_reasm r;
    static struct kev_sink sink;
    char path[1023];
    int i;
    make_path(path, sizeof(path), 3);
    kev_build_all(&m, 7, 100, path, sizeof(path), 224);
    nke_kev_reasm_init(&r, VENDOR, 1000);
    memset(&sink, 0, sizeof(sink));
    for (i = 0; i < m.n; i++)
        if (i != 2)
            nke_kev_reasm_feed(&r, m.msg[i], m.len[i], 100, kev_collect, &sink);
    CHECK_EQ(sink.n, 0);
    nke_kev_reasm_expire(&r, 1099, kev_collect, &sink);
    CHECK_EQ(sink.n, 0);
    nke_kev_reasm_expire(&r, 1100, kev_collect, &sink);
    CHECK_EQ(sink.n, 1);
    CHECK(!sink.recs[0].complete);
    CHECK_EQ(sink.recs[0].received_mask, 0x3Fu & ~(1u << 2));
    CHECK(memcmp(sink.recs[0].path, path, 2 * 176) == 0);
    {
        bool gap_zero = true;
        uint32_t k;
        for (k = 2 * 176; k < 3 * 176; k++)
            if (sink.recs[0].path[k] != 0)
                gap_zero = false;
        CHECK(gap_zero);
    }
    CHECK(memcmp(sink.recs[0].path + 3 * 176, path + 3 * 176, 1023 - 3 * 176) == 0);
    /* the late chunk does not resurrect it as complete */
    nke_kev_reasm_feed(&r, m.msg[2], m.len[2], 1200, kev_collect, &sink);
    nke_kev_reasm_expire(&r, 5000, kev_collect, &sink);
    for (i = 0; i < sink.n && i < 64; i++)
        CHECK(!sink.recs[i].complete);
}

static void test_kev_interleaved_execs(void)
{
    static struct kev_msgs m[8];
    static struct nke_kev_reasm r;
    static struct kev_sink sink;
    static char paths[8][1023];
    uint32_t lens[8];
    int e, i, maxn = 0, found = 0;
    nke_kev_reasm_init(&r, VENDOR, 1000);
    memset(&sink, 0, sizeof(sink));
    for (e = 0; e < 8; e++) {
        lens[e] = 300u + (uint32_t)e * 90u;
        make_path(paths[e], lens[e], (uint32_t)e + 10u);
        kev_build_all(&m[e], 1000u + (uint32_t)e, 2000 + e, paths[e], lens[e], 224);
        if (m[e].n > maxn)
            maxn = m[e].n;
    }
    for (i = 0; i < maxn; i++)
        for (e = 0; e < 8; e++)
            if (i < m[e].n)
                CHECK_EQ(nke_kev_reasm_feed(&r, m[e].msg[i], m[e].len[i], 10, kev_collect, &sink), NKE_OK);
    CHECK_EQ(sink.n, 8);
    for (i = 0; i < sink.n && i < 8; i++) {
        e = (int)(sink.recs[i].exec_id - 1000u);
        CHECK(e >= 0 && e < 8);
        if (e < 0 || e >= 8)
            continue;
        CHECK(sink.recs[i].complete);
        CHECK_EQ(sink.recs[i].pid, 2000 + e);
        CHECK_EQ(sink.recs[i].path_len, lens[e]);
        if (memcmp(sink.recs[i].path, paths[e], lens[e]) == 0)
            found++;
    }
    CHECK_EQ(found, 8);
}

static void test_kev_duplicates_ignored(void)
{
    static struct kev_msgs m;
    static struct nke_kev_reasm r;
    static struct kev_sink sink;
    char path[500];
    int i;
    make_path(path, sizeof(path), 5);
    kev_build_all(&m, 9, 9, path, sizeof(path), 224);
    nke_kev_reasm_init(&r, VENDOR, 1000);
    memset(&sink, 0, sizeof(sink));
    for (i = 0; i < m.n; i++) {
        nke_kev_reasm_feed(&r, m.msg[i], m.len[i], 0, kev_collect, &sink);
        nke_kev_reasm_feed(&r, m.msg[i], m.len[i], 0, kev_collect, &sink);
    }
    /* and once more after completion */
    nke_kev_reasm_feed(&r, m.msg[0], m.len[0], 0, kev_collect, &sink);
    nke_kev_reasm_expire(&r, 10000, kev_collect, &sink);
    CHECK_EQ(sink.n, 1);
    CHECK(sink.recs[0].complete);
    CHECK(memcmp(sink.recs[0].path, path, sizeof(path)) == 0);
    CHECK_EQ(r.duplicates, (uint64_t)m.n + 1); /* n during, 1 after completion */
}

static void test_kev_conflicting_chunk(void)
{
    static struct kev_msgs m;
    static struct nke_kev_reasm r;
    static struct kev_sink sink;
    static uint8_t forged[512];
    char path[500];
    int i;
    make_path(path, sizeof(path), 6);
    kev_build_all(&m, 11, 11, path, sizeof(path), 224);
    nke_kev_reasm_init(&r, VENDOR, 1000);
    memset(&sink, 0, sizeof(sink));
    nke_kev_reasm_feed(&r, m.msg[0], m.len[0], 0, kev_collect, &sink);
    /* same chunk index, other bytes */
    memcpy(forged, m.msg[0], m.len[0]);
    forged[NKE_KEV_HEADER_SIZE + NKE_KEV_EXEC_CHUNK_HEADER_SIZE + 3] ^= 0x20;
    nke_kev_reasm_feed(&r, forged, m.len[0], 0, kev_collect, &sink);
    for (i = 1; i < m.n; i++)
        nke_kev_reasm_feed(&r, m.msg[i], m.len[i], 0, kev_collect, &sink);
    nke_kev_reasm_expire(&r, 10000, kev_collect, &sink);
    CHECK(r.conflicts >= 1);
    for (i = 0; i < sink.n && i < 64; i++)
        CHECK(!sink.recs[i].complete || memcmp(sink.recs[i].path, path, sizeof(path)) == 0);
    /* a chunk whose range overlaps another's (offset shifted) never completes */
    nke_kev_reasm_init(&r, VENDOR, 1000);
    memset(&sink, 0, sizeof(sink));
    memcpy(forged, m.msg[1], m.len[1]);
    {
        struct nke_kev_exec_chunk h;
        memcpy(&h, forged + NKE_KEV_HEADER_SIZE, sizeof(h));
        h.offset = (uint16_t)(h.offset - 10);
        h.exec_id = 12;
        memcpy(forged + NKE_KEV_HEADER_SIZE, &h, sizeof(h));
        memcpy(&h, m.msg[0] + NKE_KEV_HEADER_SIZE, sizeof(h));
    }
    for (i = 0; i < m.n; i++) {
        static uint8_t copy[512];
        struct nke_kev_exec_chunk h;
        memcpy(copy, i == 1 ? forged : m.msg[i], m.len[i]);
        memcpy(&h, copy + NKE_KEV_HEADER_SIZE, sizeof(h));
        h.exec_id = 12;
        memcpy(copy + NKE_KEV_HEADER_SIZE, &h, sizeof(h));
        nke_kev_reasm_feed(&r, copy, m.len[i], 0, kev_collect, &sink);
    }
    nke_kev_reasm_expire(&r, 10000, kev_collect, &sink);
    CHECK(sink.n >= 1);
    for (i = 0; i < sink.n && i < 64; i++)
        CHECK(!sink.recs[i].complete);
}

static void test_kev_eviction(void)
{
    static struct kev_msgs m;
    static struct nke_kev_reasm r;
    static struct kev_sink sink;
    char path[600];
    uint32_t e;
    make_path(path, sizeof(path), 8);
    nke_kev_reasm_init(&r, VENDOR, 100000);
    memset(&sink, 0, sizeof(sink));
    for (e = 0; e < NKE_KEV_REASM_SLOTS + 1; e++) {
        kev_build_all(&m, 500 + e, 1, path, sizeof(path), 224);
        nke_kev_reasm_feed(&r, m.msg[0], m.len[0], 10 + e, kev_collect, &sink);
    }
    CHECK_EQ(sink.n, 1);
    CHECK_EQ(r.evicted, 1);
    CHECK_EQ(sink.recs[0].exec_id, 500); /* the oldest */
    CHECK(!sink.recs[0].complete);
    CHECK_EQ(sink.recs[0].received_mask, 1);
    /* the newest still completes */
    kev_build_all(&m, 500 + NKE_KEV_REASM_SLOTS, 1, path, sizeof(path), 224);
    {
        int i;
        for (i = 1; i < m.n; i++)
            nke_kev_reasm_feed(&r, m.msg[i], m.len[i], 50, kev_collect, &sink);
    }
    CHECK_EQ(sink.n, 2);
    CHECK(sink.recs[1].complete);
    CHECK(memcmp(sink.recs[1].path, path, sizeof(path)) == 0);
}

static void test_kev_malformed(void)
{
    static struct kev_msgs m;
    static struct nke_kev_reasm r;
    static struct kev_sink sink;
    static uint8_t bad[512];
    struct nke_kern_event_msg km;
    struct nke_kev_exec_chunk h;
    char path[100];
    make_path(path, sizeof(path), 9);
    kev_build_all(&m, 1, 1, path, sizeof(path), 224);
    nke_kev_reasm_init(&r, VENDOR, 1000);
    memset(&sink, 0, sizeof(sink));
    CHECK_EQ(nke_kev_reasm_feed(&r, m.msg[0], 10, 0, kev_collect, &sink), NKE_ERR_SIZE);
    CHECK_EQ(nke_kev_reasm_feed(&r, m.msg[0], m.len[0] - 1, 0, kev_collect, &sink), NKE_ERR_SIZE);
#define MUTATE(stmt, want)                                                        \
    do {                                                                          \
        memcpy(bad, m.msg[0], m.len[0]);                                          \
        memcpy(&km, bad, sizeof(km));                                             \
        memcpy(&h, bad + sizeof(km), sizeof(h));                                  \
        stmt;                                                                     \
        memcpy(bad, &km, sizeof(km));                                             \
        memcpy(bad + sizeof(km), &h, sizeof(h));                                  \
        CHECK_EQ(nke_kev_reasm_feed(&r, bad, km.total_size, 0, kev_collect, &sink), want); \
    } while (0)
    MUTATE(h.chunk_count = 0, NKE_ERR_COUNT);
    MUTATE(h.chunk_count = 65, NKE_ERR_COUNT);
    MUTATE(h.chunk_index = 1, NKE_ERR_COUNT);
    MUTATE(h.total_len = NKE_PATH_MAX, NKE_ERR_SIZE);
    MUTATE(h.offset = 1, NKE_ERR_SIZE);
    MUTATE(km.total_size = 30, NKE_ERR_SIZE);
    CHECK_EQ(r.malformed, 8);
    /* someone else's events are not ours: ignored, not counted */
    MUTATE(km.vendor_code = VENDOR + 1, NKE_OK);
    MUTATE(km.kev_subclass = 2, NKE_OK);
    CHECK_EQ(r.malformed, 8);
    CHECK_EQ(sink.n, 0);
#undef MUTATE
    CHECK_EQ(nke_kev_reasm_feed(&r, m.msg[0], m.len[0], 0, kev_collect, &sink), NKE_OK);
    CHECK_EQ(sink.n, 1);
    CHECK(sink.recs[0].complete);
}

static void test_socket_notifications(void)
{
    struct fixture *x = fixture_new(NKE_CAPTURE_ALL);
    struct nke_nt_addrs a;
    struct nke_nt_event ev;
    struct nke_nt_option op;
    struct nke_nt_state st;
    struct nke_nt_attach at;
    struct nke_addr local;
    struct nke_sock_info info;
    struct nke_sock_id id;
    struct nke_sock_id bogus = {3, 77};
    memset(&local, 0, sizeof(local));
    local.family = NKE_AF_INET;
    local.port = 8080;
    nke_core_addrs(&x->c, x->sid, NKE_NT_LISTEN, &local, NULL, 11);
    nke_core_event(&x->c, x->sid, NKE_EV_CLOSING, 12);
    nke_core_option(&x->c, x->sid, 6, 1, true, 13);
    nke_core_emit_state(&x->c, 14);
    /* stale ids and bad types emit nothing */
    nke_core_addrs(&x->c, bogus, NKE_NT_LISTEN, &local, NULL, 0);
    nke_core_addrs(&x->c, x->sid, NKE_NT_DATA, &local, NULL, 0);
    nke_core_event(&x->c, bogus, NKE_EV_CLOSING, 0);
    nke_core_option(&x->c, bogus, 6, 1, true, 0);
    CHECK_EQ(x->f.nrecs, 4);
    memcpy(&a, x->f.recs[0], sizeof(a));
    CHECK_EQ(a.hdr.type, NKE_NT_LISTEN);
    CHECK_EQ(a.hdr.size, sizeof(a));
    CHECK_EQ(a.hdr.time_ns, 11);
    CHECK_EQ(a.local.port, 8080);
    CHECK(x->socks[x->sid.slot].flags & NKE_SOCK_LISTENING);
    memcpy(&ev, x->f.recs[1], sizeof(ev));
    CHECK_EQ(ev.hdr.type, NKE_NT_EVENT);
    CHECK_EQ(ev.event, NKE_EV_CLOSING);
    CHECK(x->socks[x->sid.slot].flags & NKE_SOCK_DETACHING);
    memcpy(&op, x->f.recs[2], sizeof(op));
    CHECK_EQ(op.hdr.type, NKE_NT_OPTION);
    CHECK_EQ(op.level, 6);
    CHECK_EQ(op.is_set, 1);
    memcpy(&st, x->f.recs[3], sizeof(st));
    CHECK_EQ(st.hdr.type, NKE_NT_STATE);
    CHECK_EQ(st.hdr.size, sizeof(st));
    CHECK_EQ(st.state.flags, NKE_STATE_F_CLIENT | NKE_STATE_F_CAPTURE);
    CHECK_EQ(st.state.sockets_live, 1);
    CHECK_EQ(st.hdr.sock.slot, 0);
    /* attach record carries the process */
    memset(&info, 0, sizeof(info));
    info.pid = 77;
    info.uid = 88;
    info.family = NKE_AF_INET6;
    info.protocol = NKE_PROTO_UDP;
    info.type = 2;
    memset(info.comm, 'z', NKE_COMM_LEN); /* unterminated from the platform */
    id = nke_core_attach(&x->c, &info, NULL, 15);
    memcpy(&at, x->f.recs[4], sizeof(at));
    CHECK_EQ(at.hdr.type, NKE_NT_ATTACH);
    CHECK_EQ(at.hdr.sock.slot, id.slot);
    CHECK_EQ(at.hdr.sock.gen, id.gen);
    CHECK_EQ(at.pid, 77);
    CHECK_EQ(at.uid, 88);
    CHECK_EQ(at.family, NKE_AF_INET6);
    CHECK_EQ(at.protocol, NKE_PROTO_UDP);
    CHECK_EQ(at.comm[NKE_COMM_LEN - 1], '\0');
    /* without a client nothing is emitted */
    nke_core_client_close(&x->c);
    x->f.nrecs = 0;
    nke_core_event(&x->c, x->sid, NKE_EV_CONNECTED, 0);
    nke_core_emit_state(&x->c, 0);
    CHECK_EQ(x->f.nrecs, 0);
    fixture_free(x);
}

static void test_release_before_verdict(void)
{
    static struct resp m;
    struct fixture *x = fixture_new(NKE_CAPTURE_ALL);
    uint64_t id = hold(x, 0, NKE_BUFFER_SIZE * 2, 0);
    struct nke_filter_state st;
    memset(&m, 0, sizeof(m));
    add_releases_of(&m, x, id);
    CHECK_EQ(nke_core_respond(&x->c, m.bytes, resp_build(&m)), NKE_OK);
    /* buffers back in the pool, chunk still held for its verdict */
    nke_core_get_state(&x->c, &st);
    CHECK_EQ(st.buffers_in_use, 0);
    CHECK_EQ(st.chunks_pending, 1);
    CHECK(chunk_of(x, id) != NULL && chunk_of(x, id)->state == NKE_CHUNK_HELD);
    memset(&m, 0, sizeof(m));
    add_verdict(&m, id, x->sid, NKE_ACT_DROP, 0);
    CHECK_EQ(nke_core_respond(&x->c, m.bytes, resp_build(&m)), NKE_OK);
    CHECK_EQ(x->f.nfinish, 1);
    CHECK(chunk_of(x, id) == NULL);
    nke_core_get_state(&x->c, &st);
    CHECK_EQ(st.chunks_pending, 0);
    fixture_free(x);
}

/* ======================================================================== */
/* Gap records: data passed without a report                                 */
/* ======================================================================== */

/* The gap sits exactly where the passed bytes were in the stream: the chunks
 * around it keep their offsets, and a datagram's flag travels with it. */
static void test_gap_offsets_between_chunks(void)
{
    struct fixture *x = fixture_new(NKE_CAPTURE_ALL);
    struct nke_nt_data d;
    uint64_t id, at;
    int i;
    CHECK(hold(x, 0, 100, 0) != 0);                       /* 1 buffer */
    for (i = 1; i < 8; i++)                                /* 7 x 8 buffers */
        CHECK(hold(x, i, NKE_CHUNK_MAX_BYTES, 0) != 0);
    CHECK(hold(x, 8, 6 * NKE_BUFFER_SIZE, 0) != 0);       /* 6: one buffer left */
    at = 100u + 7u * NKE_CHUNK_MAX_BYTES + 6u * NKE_BUFFER_SIZE;
    x->f.nrecs = 0;
    CHECK(hold(x, 9, 2 * NKE_BUFFER_SIZE, 0) == 0);       /* needs 2: not held (queued behind) */
    CHECK_EQ(x->f.nrecs, 1);
    check_gap(x->f.recs[0], x->sid, NKE_DIR_OUT, at, 2 * NKE_BUFFER_SIZE, NKE_GAP_NO_BUFFER);
    at += 2u * NKE_BUFFER_SIZE;
    x->f.nrecs = 0;
    CHECK_EQ(nke_core_data(&x->c, x->sid, NKE_DIR_OUT, 300, NKE_DATA_F_DATAGRAM, NULL, &x->data[10],
                           0, 0, &id),
             NKE_DATA_HELD);                               /* the last buffer */
    CHECK_EQ(x->f.nrecs, 1);
    memcpy(&d, x->f.recs[0], sizeof(d));
    CHECK_EQ(d.hdr.type, NKE_NT_DATA);
    CHECK_EQ(d.stream_offset, at);                         /* after the passed bytes */
    x->f.nrecs = 0;
    /* No buffer: not reported; behind the held chunks it waits its turn
     * (stream order), unreported all the same: a gap. */
    CHECK_EQ(nke_core_data(&x->c, x->sid, NKE_DIR_OUT, 5, NKE_DATA_F_DATAGRAM, NULL, &x->data[11], 0,
                           0, &id),
             NKE_DATA_QUEUED);
    CHECK_EQ(x->f.nrecs, 1);
    check_gap(x->f.recs[0], x->sid, NKE_DIR_OUT, at + 300, 5, NKE_GAP_NO_BUFFER);
    {
        struct nke_nt_data_gap g;
        memcpy(&g, x->f.recs[0], sizeof(g));
        CHECK_EQ(g.hdr.flags, NKE_DATA_F_DATAGRAM);
    }
    fixture_free(x);
}

/* No room for the 96-byte data record but room for the 40-byte gap record:
 * the client hears of the hole, reason QUEUE_FULL. */
static void test_gap_when_data_record_does_not_fit(void)
{
    struct fixture *x = fixture_new(NKE_CAPTURE_ALL);
    struct nke_filter_state st;
    uint64_t id;
    x->f.max_rec = sizeof(struct nke_nt_data_gap);
    CHECK_EQ(nke_core_data(&x->c, x->sid, NKE_DIR_IN, 77, 0, NULL, &x->data[0], 0, 0, &id),
             NKE_DATA_PASS);
    CHECK_EQ(x->f.nrecs, 1);
    check_gap(x->f.recs[0], x->sid, NKE_DIR_IN, 0, 77, NKE_GAP_QUEUE_FULL);
    nke_core_get_state(&x->c, &st);
    CHECK_EQ(st.notifications_lost, 1);
    CHECK_EQ(st.buffers_in_use, 0);
    fixture_free(x);
}

/* Data nobody asked for (capture nothing, a pass rule, no client) is not a
 * hole in what was asked for: no gap record. */
static void test_no_gap_for_data_not_wanted(void)
{
    struct fixture *x = fixture_new(NKE_CAPTURE_NOTHING);
    uint64_t id;
    CHECK_EQ(nke_core_data(&x->c, x->sid, NKE_DIR_IN, 10, 0, NULL, &x->data[0], 0, 0, &id),
             NKE_DATA_PASS);
    CHECK_EQ(x->f.nrecs, 0);
    nke_core_client_close(&x->c);
    x->f.nrecs = 0;
    CHECK_EQ(nke_core_data(&x->c, x->sid, NKE_DIR_IN, 10, 0, NULL, &x->data[0], 0, 0, &id),
             NKE_DATA_PASS);
    CHECK_EQ(x->f.nrecs, 0);
    fixture_free(x);
}

int main(void)
{
    RUN(test_pool_alloc_all_or_none);
    RUN(test_pool_terminator);
    RUN(test_pool_release_validation);
    RUN(test_dq_roundtrip);
    RUN(test_dq_wrap_around);
    RUN(test_dq_full);
    RUN(test_dq_hostile);
    RUN(test_reject_version);
    RUN(test_reject_size_mismatch);
    RUN(test_reject_short_message);
    RUN(test_reject_count);
    RUN(test_reject_flags);
    RUN(test_reject_reserved_verdict);
    RUN(test_reject_reserved_release);
    RUN(test_reject_action);
    RUN(test_reject_action_zero);
    RUN(test_reject_sock);
    RUN(test_reject_not_held);
    RUN(test_reject_dup_verdict);
    RUN(test_reject_dup_verdict_across_responses);
    RUN(test_reject_modified_len);
    RUN(test_reject_modified_unstaged);
    RUN(test_reject_len_on_allow);
    RUN(test_reject_buf_range);
    RUN(test_reject_buf_dup);
    RUN(test_reject_buf_double);
    RUN(test_reject_buf_foreign);
    RUN(test_reject_unknown_chunk);
    RUN(test_reject_unknown_chunk_release);
    RUN(test_reject_not_open);
    RUN(test_reject_extend_hold_zero);
    RUN(test_reject_extend_over_cap);
    RUN(test_reject_extend_max_u32);
    RUN(test_reject_extend_reported);
    RUN(test_reject_extend_unknown_chunk);
    RUN(test_reject_extend_sock);
    RUN(test_reject_extend_and_verdict);
    RUN(test_reject_action_past_extend);
    RUN(test_reject_extend_decided);
    RUN(test_extend_moves_deadline);
    RUN(test_extend_cap);
    RUN(test_extend_released_chunk);
    RUN(test_extend_with_releases_and_staging);
    RUN(test_apply_allow_modified_drop);
    RUN(test_apply_buffers_hold_data);
    RUN(test_apply_stale_entries_skipped);
    RUN(test_stale_release_of_reused_buffer_first);
    RUN(test_stale_release_of_reused_buffer_last);
    RUN(test_live_duplicate_release_still_refused);
    RUN(test_put_data_ordering);
    RUN(test_put_data_zero_length_and_failure);
    RUN(test_deadline_expiry);
    RUN(test_client_close_releases_all);
    RUN(test_client_open_errors);
    RUN(test_pool_exhausted_passes);
    RUN(test_hold_500_buffers_released);
    RUN(test_hold_500_deadline_expiry);
    RUN(test_hold_500_client_close);
    RUN(test_chunk_table_full_passes);
    RUN(test_queue_full_passes_and_counts);
    RUN(test_detach_drops_held);
    RUN(test_socket_table_full);
    RUN(test_socket_notifications);
    RUN(test_release_before_verdict);
    RUN(test_capture_validate_errors);
    RUN(test_capture_classify_rules);
    RUN(test_selector_contract);
    RUN(test_capture_modes_in_core);
    RUN(test_kev_chunker_limits);
    RUN(test_kev_1023_under_224);
    RUN(test_kev_1023_under_288);
    RUN(test_kev_4000_under_224);
    RUN(test_kev_4000_under_288);
    RUN(test_kev_4095_whole);
    RUN(test_kev_longer_path_cut_and_flagged);
    RUN(test_kev_tiny_limit_cut_and_flagged);
    RUN(test_kev_lost_middle_chunk);
    RUN(test_kev_interleaved_execs);
    RUN(test_kev_duplicates_ignored);
    RUN(test_kev_conflicting_chunk);
    RUN(test_kev_eviction);
    RUN(test_kev_malformed);
    RUN(test_gap_offsets_between_chunks);
    RUN(test_gap_when_data_record_does_not_fit);
    RUN(test_no_gap_for_data_not_wanted);
    RUN(test_data_record_names_rule_and_config);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}

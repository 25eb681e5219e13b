/*
 * Unit tests of kext/core's stream order, byte budget and re-injection plan
 * (kext/core/nke_order.h). Plain C, the same conventions as test_core.c:
 * each test is a function, the last line is `N passed, N failed`.
 *
 * The fake platform records every ops->finish in call order, so a test
 * asserts the order in which the core handed kept data back (what the kext
 * re-injects in that order, and what nke-emud turns into verdicts), and can
 * hold back nke_core_item_done to play a platform whose re-injection is
 * still in flight.
 */
#include "nke_core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* ======================================================================== */
/* Fake platform                                                             */
/* ======================================================================== */

#define NPIECES ((int)NKE_CHUNK_TABLE_SIZE + 64)
#define MAX_RECS 1024

/* The platform's per-piece record: the order item first, as the core asks. */
struct piece {
    struct nke_order_item item;
    int n;                   /* index in the fixture, for messages */
    int finished;            /* times finished */
    int done;                /* times reported done */
};

struct finish_rec {
    struct piece *p;
    uint32_t action, reason, staged_len;
    uint8_t staged0;
};

struct fx {
    struct nke_core c;
    struct nke_sock socks[8];
    struct nke_sock_id a, b;     /* two TCP sockets */
    struct piece pieces[NPIECES];
    struct finish_rec fin[NPIECES * 2];
    int nfin;
    bool defer_done;             /* in flight until fx_done_all() */
    bool queue_full;
    int nrecs;
    uint8_t recs[MAX_RECS][NKE_NT_MAX_SIZE];
    int live_staged;
};

static uint8_t g_buffers[NKE_BUFFER_COUNT * NKE_BUFFER_SIZE];
static uint8_t g_src[NKE_CHUNK_MAX_BYTES];

static bool f_emit(void *platform, const void *rec, uint32_t size)
{
    struct fx *x = (struct fx *)platform;
    if (x->queue_full || x->nrecs >= MAX_RECS || size > NKE_NT_MAX_SIZE)
        return false;
    memcpy(x->recs[x->nrecs++], rec, size);
    return true;
}

static void f_copy(void *platform, void *data_ctx, uint32_t off, uint32_t len, void *dst)
{
    (void)platform;
    (void)data_ctx;
    memcpy(dst, g_src + off, len);
}

static void f_finish(void *platform, void *sock_ctx, void *data_ctx, uint32_t action, void *staged,
                     uint32_t staged_len, uint32_t reason)
{
    struct fx *x = (struct fx *)platform;
    struct piece *p = (struct piece *)data_ctx;
    struct finish_rec *r = &x->fin[x->nfin++ % (NPIECES * 2)];
    (void)sock_ctx;
    r->p = p;
    r->action = action;
    r->reason = reason;
    r->staged_len = staged_len;
    r->staged0 = staged && staged_len ? ((uint8_t *)staged)[0] : 0;
    p->finished++;
    if (staged) {
        free(staged);
        x->live_staged--;
    }
    if (!x->defer_done) {
        p->done++;
        nke_core_item_done(&x->c, &p->item);
    }
}

static int f_stage(void *platform, void **staged, uint32_t total, uint32_t off, const void *b,
                   uint32_t len)
{
    struct fx *x = (struct fx *)platform;
    if (*staged == NULL) {
        *staged = malloc(total ? total : 1);
        if (*staged == NULL)
            return NKE_ERR_NO_MEMORY;
        x->live_staged++;
    }
    memcpy((uint8_t *)*staged + off, b, len);
    return NKE_OK;
}

static void f_unstage(void *platform, void *staged)
{
    struct fx *x = (struct fx *)platform;
    x->live_staged--;
    free(staged);
}

static const struct nke_core_ops f_ops = {f_emit, f_copy, f_finish, f_stage, f_unstage};

static struct nke_sock_id attach_tcp(struct fx *x, int32_t pid, const char *comm)
{
    struct nke_sock_info info;
    memset(&info, 0, sizeof(info));
    info.pid = pid;
    info.uid = 501;
    info.family = NKE_AF_INET;
    info.type = 1;
    info.protocol = NKE_PROTO_TCP;
    strcpy(info.comm, comm);
    return nke_core_attach(&x->c, &info, x, 1);
}

static void set_capture(struct fx *x, uint32_t mode, uint32_t hold_ms)
{
    static struct nke_capture_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.abi_version = NKE_ABI_VERSION;
    cfg.mode = mode;
    cfg.hold_timeout_ms = hold_ms;
    if (nke_core_set_capture(&x->c, &cfg, sizeof(cfg)) != NKE_OK)
        abort();
}

static void open_client(struct fx *x)
{
    struct nke_open_request req;
    struct nke_open_reply rep;
    memset(&req, 0, sizeof(req));
    req.abi_version = NKE_ABI_VERSION;
    if (nke_core_client_open(&x->c, &req, &rep, 7) != NKE_OK)
        abort();
}

/* A core with a client open, capture ALL, two TCP sockets. */
static struct fx *fx_new(void)
{
    struct fx *x = (struct fx *)calloc(1, sizeof(*x));
    int i;
    for (i = 0; i < NPIECES; i++)
        x->pieces[i].n = i;
    nke_core_init(&x->c, &f_ops, x, g_buffers, x->socks, 8, 1, 224);
    open_client(x);
    x->a = attach_tcp(x, 100, "writer");
    x->b = attach_tcp(x, 200, "other");
    set_capture(x, NKE_CAPTURE_ALL, 0);
    x->nrecs = 0;
    return x;
}

/* Everything in flight is reported done, in the order it was finished. */
static void fx_done_all(struct fx *x)
{
    int i;
    for (i = 0; i < x->nfin && i < NPIECES * 2; i++) {
        struct piece *p = x->fin[i].p;
        if (p->done < p->finished) {
            p->done++;
            nke_core_item_done(&x->c, &p->item);
        }
    }
}

static void fx_free(struct fx *x)
{
    nke_core_client_close(&x->c);
    fx_done_all(x);
    free(x);
}

static int data(struct fx *x, struct nke_sock_id s, uint8_t dir, int piece, uint32_t size,
                uint32_t flags, uint64_t now_ms, uint64_t *id)
{
    uint64_t dummy;
    return nke_core_data(&x->c, s, dir, size, flags, NULL, &x->pieces[piece], now_ms, now_ms * 1000000u,
                         id ? id : &dummy);
}

/* The pieces finished, in order, as a string of their indices ("0 1 2"). */
static const char *finish_order(struct fx *x)
{
    static char buf[4096];
    int i, n = 0;
    buf[0] = '\0';
    for (i = 0; i < x->nfin && n < (int)sizeof(buf) - 8; i++)
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, "%s%d", i ? " " : "", x->fin[i].p->n);
    return buf;
}

#define CHECK_ORDER(x, want)                                                                 \
    do {                                                                                     \
        const char *got_ = finish_order(x);                                                  \
        if (strcmp(got_, want) != 0) {                                                       \
            g_cur_failed++;                                                                  \
            fprintf(stderr, "  %s:%d: finish order \"%s\", expected \"%s\"\n", __FILE__,     \
                    __LINE__, got_, want);                                                   \
        }                                                                                    \
    } while (0)

/* Response builder: verdicts and releases. */
struct resp {
    struct nke_response_hdr h;
    struct nke_verdict v[16];
    struct nke_release r[64];
    uint8_t bytes[sizeof(struct nke_response_hdr) + 16 * sizeof(struct nke_verdict) +
                  64 * sizeof(struct nke_release)];
};

static void resp_init(struct resp *m)
{
    memset(m, 0, sizeof(*m));
    m->h.abi_version = NKE_ABI_VERSION;
}

static void verdict(struct resp *m, uint64_t id, struct nke_sock_id s, uint8_t action, uint32_t mod_len)
{
    struct nke_verdict *v = &m->v[m->h.nverdicts++];
    v->chunk_id = id;
    v->sock = s;
    v->action = action;
    v->modified_len = mod_len;
}

static void releases_of(struct resp *m, struct fx *x, uint64_t id)
{
    uint32_t i, k;
    for (i = 0; i < NKE_CHUNK_TABLE_SIZE; i++) {
        const struct nke_chunk *ch = &x->c.chunks[i];
        if (ch->state == NKE_CHUNK_FREE || ch->id != id)
            continue;
        for (k = 0; k < ch->nbuffers; k++) {
            if (ch->released_mask & (1u << k))
                continue;
            m->r[m->h.nreleases].chunk_id = id;
            m->r[m->h.nreleases].buffer = ch->buffers[k];
            m->h.nreleases++;
        }
    }
}

static int respond(struct fx *x, struct resp *m)
{
    uint32_t size = (uint32_t)(sizeof(m->h) + m->h.nverdicts * sizeof(struct nke_verdict) +
                               m->h.nreleases * sizeof(struct nke_release));
    m->h.size = size;
    memcpy(m->bytes, &m->h, sizeof(m->h));
    memcpy(m->bytes + sizeof(m->h), m->v, m->h.nverdicts * sizeof(struct nke_verdict));
    memcpy(m->bytes + sizeof(m->h) + m->h.nverdicts * sizeof(struct nke_verdict), m->r,
           m->h.nreleases * sizeof(struct nke_release));
    return nke_core_respond(&x->c, m->bytes, size);
}

static int answer(struct fx *x, uint64_t id, struct nke_sock_id s, uint8_t action)
{
    static struct resp m;
    resp_init(&m);
    verdict(&m, id, s, action, 0);
    releases_of(&m, x, id);
    return respond(x, &m);
}

static int put(struct fx *x, uint64_t id, struct nke_sock_id s, const char *bytes, uint32_t total)
{
    uint8_t msg[sizeof(struct nke_put_data_hdr) + 64];
    struct nke_put_data_hdr h;
    uint32_t len = (uint32_t)strlen(bytes);
    memset(&h, 0, sizeof(h));
    h.chunk_id = id;
    h.sock = s;
    h.total_len = total;
    h.len = len;
    memcpy(msg, &h, sizeof(h));
    memcpy(msg + sizeof(h), bytes, len);
    return nke_core_put_data(&x->c, msg, (uint32_t)(sizeof(h) + len));
}

static uint32_t count_released(struct fx *x, uint32_t reason)
{
    int i;
    uint32_t n = 0;
    for (i = 0; i < x->nrecs; i++) {
        struct nke_nt_chunk_released r;
        memcpy(&r, x->recs[i], sizeof(r));
        if (r.hdr.type == NKE_NT_CHUNK_RELEASED && r.reason == reason)
            n++;
    }
    return n;
}

/* Holds n chunks of `size` on socket `sock` OUT, releasing each one's buffers at
 * once (the client copies them out), so only the budget limits them. */
static void hold_released(struct fx *x, struct nke_sock_id sock, int first, int n, uint32_t size,
                          uint64_t *ids)
{
    static struct resp m;
    int i;
    for (i = 0; i < n; i++) {
        CHECK_EQ(data(x, sock, NKE_DIR_OUT, first + i, size, 0, 0, &ids[i]), NKE_DATA_HELD);
        resp_init(&m);
        releases_of(&m, x, ids[i]);
        CHECK_EQ(respond(x, &m), NKE_OK);
    }
}

/* ======================================================================== */
/* Stream order                                                              */
/* ======================================================================== */

/* Verdicts in any order take effect in stream order; each keeps its own
 * action and staged bytes. */
static void test_verdicts_apply_in_stream_order(void)
{
    struct fx *x = fx_new();
    uint64_t id0, id1, id2;
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 0, 10, 0, 0, &id0), NKE_DATA_HELD);
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 1, 10, 0, 0, &id1), NKE_DATA_HELD);
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 2, 10, 0, 0, &id2), NKE_DATA_HELD);
    CHECK_EQ(put(x, id2, x->a, "Z2", 2), NKE_OK);
    {
        static struct resp m;
        resp_init(&m);
        verdict(&m, id2, x->a, NKE_ACT_ALLOW_MODIFIED, 2);
        CHECK_EQ(respond(x, &m), NKE_OK);
    }
    CHECK_EQ(answer(x, id1, x->a, NKE_ACT_DROP), NKE_OK);
    CHECK_EQ(x->nfin, 0); /* both wait for chunk 0 */
    CHECK_EQ(x->c.stats.chunks_pending, 1);
    CHECK_EQ(answer(x, id0, x->a, NKE_ACT_ALLOW), NKE_OK);
    CHECK_ORDER(x, "0 1 2");
    CHECK_EQ(x->fin[0].action, NKE_ACT_ALLOW);
    CHECK_EQ(x->fin[1].action, NKE_ACT_DROP);
    CHECK_EQ(x->fin[2].action, NKE_ACT_ALLOW_MODIFIED);
    CHECK_EQ(x->fin[2].staged_len, 2);
    CHECK_EQ(x->fin[2].staged0, 'Z');
    CHECK_EQ(x->c.stats.bytes_kept, 0);
    CHECK_EQ(x->live_staged, 0);
    fx_free(x);
}

/* Every reason a piece would pass is only a reason not to hold it: behind
 * held data it queues. Here: capture switched to NOTHING, and no client. */
static void test_later_data_queues_behind_held_whatever_passes_it(void)
{
    struct fx *x = fx_new();
    struct nke_filter_state st;
    uint64_t id0, id = 77;
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 0, 10, 0, 0, &id0), NKE_DATA_HELD);
    set_capture(x, NKE_CAPTURE_NOTHING, 0);
    x->nrecs = 0;
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 1, 20, 0, 0, &id), NKE_DATA_QUEUED);
    CHECK_EQ(id, 0);          /* not a chunk: nothing announced */
    CHECK_EQ(x->nrecs, 0);
    /* the other direction and the other socket have nothing kept: they pass */
    CHECK_EQ(data(x, x->a, NKE_DIR_IN, 2, 20, 0, 0, NULL), NKE_DATA_PASS);
    CHECK_EQ(data(x, x->b, NKE_DIR_OUT, 3, 20, 0, 0, NULL), NKE_DATA_PASS);
    CHECK_EQ(x->nfin, 0);
    /* the client goes: the held chunk goes first (original), then the rest */
    nke_core_client_close(&x->c);
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 4, 5, 0, 0, NULL), NKE_DATA_PASS); /* nothing kept any more */
    CHECK_ORDER(x, "0 1");
    CHECK_EQ(x->fin[0].reason, NKE_RELEASE_CLIENT_GONE);
    CHECK_EQ(x->fin[1].action, NKE_ACT_ALLOW);
    CHECK_EQ(x->fin[1].reason, 0);
    nke_core_get_state(&x->c, &st);
    CHECK_EQ(st.chunks_queued, 1);
    CHECK_EQ(st.bytes_kept, 0);
    fx_free(x);
}

/* With no client, data still waits behind a re-injection in flight (the
 * kext's injector has not sent the earlier bytes yet). */
static void test_no_client_queues_behind_in_flight(void)
{
    struct fx *x = fx_new();
    uint64_t id0;
    x->defer_done = true;
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 0, 10, 0, 0, &id0), NKE_DATA_HELD);
    nke_core_client_close(&x->c);
    CHECK_ORDER(x, "0");
    CHECK(nke_core_order_busy(&x->c, x->a, NKE_DIR_OUT));
    CHECK_EQ(nke_core_order_backlog(&x->c, x->a, NKE_DIR_OUT), 10);
    /* handed back at once (nothing ahead of it in the core), still behind 0 */
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 1, 30, 0, 0, NULL), NKE_DATA_QUEUED);
    CHECK_ORDER(x, "0 1");
    CHECK_EQ(x->c.stats.bytes_kept, 40);
    CHECK_EQ(nke_core_order_backlog(&x->c, x->a, NKE_DIR_OUT), 40);
    fx_done_all(x);
    CHECK(!nke_core_order_busy(&x->c, x->a, NKE_DIR_OUT));
    CHECK_EQ(x->c.stats.bytes_kept, 0);
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 2, 30, 0, 0, NULL), NKE_DATA_PASS);
    fx_free(x);
}

/* Pool full, chunk table full and notification queue full: not held, and
 * behind held data of the same direction, queued. */
static void test_pool_full_queues_behind_held(void)
{
    struct fx *x = fx_new();
    struct nke_filter_state st;
    uint64_t id[8];
    int i;
    for (i = 0; i < 8; i++)
        CHECK_EQ(data(x, x->a, NKE_DIR_OUT, i, NKE_CHUNK_MAX_BYTES, 0, 0, &id[i]), NKE_DATA_HELD);
    CHECK_EQ(nke_pool_in_use(&x->c.pool), NKE_BUFFER_COUNT);
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 8, 100, 0, 0, NULL), NKE_DATA_QUEUED);
    CHECK_EQ(data(x, x->a, NKE_DIR_IN, 9, 100, 0, 0, NULL), NKE_DATA_PASS); /* nothing kept there */
    nke_core_get_state(&x->c, &st);
    CHECK_EQ(st.chunks_passed_pool_full, 2);
    CHECK_EQ(st.chunks_queued, 1);
    for (i = 7; i >= 0; i--)
        CHECK_EQ(answer(x, id[i], x->a, NKE_ACT_ALLOW), NKE_OK);
    CHECK_ORDER(x, "0 1 2 3 4 5 6 7 8");
    fx_free(x);
}

static void test_queue_full_and_table_full_queue_behind_held(void)
{
    struct fx *x = fx_new();
    uint64_t id0, id;
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 0, 10, 0, 0, &id0), NKE_DATA_HELD);
    x->queue_full = true;
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 1, 10, 0, 0, &id), NKE_DATA_QUEUED);
    CHECK_EQ(x->c.stats.notifications_lost, 2); /* its data record, and the gap record saying so */
    x->queue_full = false;
    /* the chunk table: the other socket holds every other slot */
    {
        static uint64_t ids[NKE_CHUNK_TABLE_SIZE];
        hold_released(x, x->b, 10, (int)NKE_CHUNK_TABLE_SIZE - 1, 10, ids);
    }
    CHECK_EQ(x->c.nchunk_free, 0);
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 2, 10, 0, 0, &id), NKE_DATA_QUEUED);
    CHECK_EQ(x->c.stats.chunks_passed_pool_full, 1);
    CHECK_EQ(answer(x, id0, x->a, NKE_ACT_ALLOW), NKE_OK);
    CHECK_ORDER(x, "0 1 2");
    fx_free(x);
}

/* A REPORT rule behind held data: reported (the client sees it) and queued. */
static void test_reported_piece_behind_held_is_reported_and_queued(void)
{
    static struct nke_capture_config cfg;
    struct fx *x = fx_new();
    struct nke_nt_data rec;
    uint64_t id0, id1 = 0;
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 0, 10, 0, 0, &id0), NKE_DATA_HELD);
    memset(&cfg, 0, sizeof(cfg));
    cfg.abi_version = NKE_ABI_VERSION;
    cfg.mode = NKE_CAPTURE_RULES;
    cfg.default_action = NKE_RULE_REPORT;
    CHECK_EQ(nke_core_set_capture(&x->c, &cfg, sizeof(cfg)), NKE_OK);
    x->nrecs = 0;
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 1, 10, 0, 0, &id1), NKE_DATA_QUEUED);
    CHECK(id1 > id0);
    CHECK_EQ(x->nrecs, 1);
    memcpy(&rec, x->recs[0], sizeof(rec));
    CHECK_EQ(rec.hdr.type, NKE_NT_DATA);
    CHECK_EQ(rec.hdr.flags & NKE_DATA_F_HELD, 0);
    CHECK_EQ(rec.stream_offset, 10);
    CHECK_EQ(answer(x, id0, x->a, NKE_ACT_ALLOW), NKE_OK);
    CHECK_ORDER(x, "0 1");
    fx_free(x);
}

/* A later chunk's deadline passes while the one before it is still held:
 * it is released (the client is told) but handed back only after it. */
static void test_later_deadline_waits_for_the_head(void)
{
    struct fx *x = fx_new();
    uint64_t id0, id1;
    set_capture(x, NKE_CAPTURE_ALL, 1000);
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 0, 10, 0, 0, &id0), NKE_DATA_HELD);
    set_capture(x, NKE_CAPTURE_ALL, 10);
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 1, 10, 0, 0, &id1), NKE_DATA_HELD);
    x->nrecs = 0;
    CHECK_EQ(nke_core_expire(&x->c, 20, 20), 980);
    CHECK_EQ(count_released(x, NKE_RELEASE_TIMEOUT), 1);
    CHECK_EQ(x->nfin, 0);
    CHECK_EQ(x->c.stats.chunks_pending, 1);
    CHECK_EQ(answer(x, id0, x->a, NKE_ACT_DROP), NKE_OK);
    CHECK_ORDER(x, "0 1");
    CHECK_EQ(x->fin[1].action, NKE_ACT_ALLOW);
    CHECK_EQ(x->fin[1].reason, NKE_RELEASE_TIMEOUT);
    fx_free(x);
}

/* Detach: held, decided and queued pieces all go back as DROPs, in order;
 * a decided edit's staged bytes are given back. */
static void test_detach_drops_everything_kept_in_order(void)
{
    struct fx *x = fx_new();
    uint64_t id0, id1;
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 0, 10, 0, 0, &id0), NKE_DATA_HELD);
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 1, 10, 0, 0, &id1), NKE_DATA_HELD);
    CHECK_EQ(put(x, id1, x->a, "abc", 3), NKE_OK);
    {
        static struct resp m;
        resp_init(&m);
        verdict(&m, id1, x->a, NKE_ACT_ALLOW_MODIFIED, 3);
        CHECK_EQ(respond(x, &m), NKE_OK);
    }
    set_capture(x, NKE_CAPTURE_NOTHING, 0);
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 2, 10, 0, 0, NULL), NKE_DATA_QUEUED);
    CHECK_EQ(x->live_staged, 1);
    nke_core_detach(&x->c, x->a, 5);
    CHECK_ORDER(x, "0 1 2");
    CHECK_EQ(x->fin[0].action, NKE_ACT_DROP);
    CHECK_EQ(x->fin[1].action, NKE_ACT_DROP);
    CHECK_EQ(x->fin[1].staged_len, 0);
    CHECK_EQ(x->fin[2].action, NKE_ACT_DROP);
    CHECK_EQ(x->fin[2].reason, NKE_RELEASE_SOCKET_GONE);
    CHECK_EQ(x->live_staged, 0);
    CHECK_EQ(x->c.stats.bytes_kept, 0);
    fx_free(x);
}

/* Done after the socket is gone (and its slot reused) still returns the
 * bytes to the budget and leaves the new socket alone. */
static void test_done_after_socket_gone(void)
{
    struct fx *x = fx_new();
    struct nke_sock_id again;
    uint64_t id0;
    x->defer_done = true;
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 0, 10, 0, 0, &id0), NKE_DATA_HELD);
    CHECK_EQ(answer(x, id0, x->a, NKE_ACT_ALLOW), NKE_OK);
    nke_core_detach(&x->c, x->a, 1);
    again = attach_tcp(x, 300, "next");
    CHECK_EQ(again.slot, x->a.slot);
    CHECK(!nke_core_order_busy(&x->c, again, NKE_DIR_OUT));
    CHECK_EQ(x->c.stats.bytes_kept, 10);
    fx_done_all(x);
    CHECK_EQ(x->c.stats.bytes_kept, 0);
    CHECK_EQ(x->socks[again.slot].order[1].inflight, 0);
    fx_free(x);
}

/* The pieces of one write the platform cut up: KEEP after a kept first
 * piece, NO_HOLD after a passed one. */
static void test_keep_and_no_hold_pieces(void)
{
    struct fx *x = fx_new();
    uint64_t id0, id;
    /* nothing kept, KEEP: queued and handed back at once, in flight */
    set_capture(x, NKE_CAPTURE_NOTHING, 0);
    x->defer_done = true;
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 0, 10, NKE_CORE_DATA_F_KEEP, 0, NULL), NKE_DATA_QUEUED);
    CHECK_ORDER(x, "0");
    CHECK(nke_core_order_busy(&x->c, x->a, NKE_DIR_OUT));
    fx_done_all(x);
    /* capture ALL: NO_HOLD is reported only, never held nor queued */
    set_capture(x, NKE_CAPTURE_ALL, 0);
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 1, 10, NKE_CORE_DATA_F_NO_HOLD, 0, &id), NKE_DATA_REPORTED);
    CHECK(id != 0);
    /* KEEP with a HOLD rule: held */
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 2, 10, NKE_CORE_DATA_F_KEEP, 0, &id0), NKE_DATA_HELD);
    CHECK_EQ(x->c.stats.chunks_pending, 1);
    fx_free(x);
}

/* NKE_SOCK_NO_DEFER (the kext's in-kernel sockets): reported, never held. */
static void test_no_defer_socket_is_reported_only(void)
{
    struct fx *x = fx_new();
    uint64_t id = 0;
    nke_core_sock_no_defer(&x->c, x->b, true);
    CHECK_EQ(data(x, x->b, NKE_DIR_IN, 0, 10, 0, 0, &id), NKE_DATA_REPORTED);
    CHECK(id != 0);
    CHECK_EQ(x->c.stats.chunks_pending, 0);
    CHECK(!nke_core_order_busy(&x->c, x->b, NKE_DIR_IN));
    /* accepted by a process after all: held again */
    nke_core_sock_no_defer(&x->c, x->b, false);
    CHECK_EQ(data(x, x->b, NKE_DIR_IN, 1, 10, 0, 0, &id), NKE_DATA_HELD);
    fx_free(x);
}

/* The close flush: held outbound data goes as it was, inbound is dropped,
 * the client told, in order with what queued behind. */
static void test_release_socket_for_close(void)
{
    struct fx *x = fx_new();
    uint64_t o0, o1, i0;
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 0, 10, 0, 0, &o0), NKE_DATA_HELD);
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 1, 10, 0, 0, &o1), NKE_DATA_HELD);
    CHECK_EQ(data(x, x->a, NKE_DIR_IN, 2, 10, 0, 0, &i0), NKE_DATA_HELD);
    CHECK_EQ(data(x, x->b, NKE_DIR_OUT, 3, 10, 0, 0, NULL), NKE_DATA_HELD);
    x->nrecs = 0;
    nke_core_release_socket(&x->c, x->a, NKE_DIR_OUT, NKE_ACT_ALLOW, NKE_RELEASE_SOCKET_CLOSING, 9);
    CHECK_ORDER(x, "0 1");
    nke_core_release_socket(&x->c, x->a, NKE_DIR_IN, NKE_ACT_DROP, NKE_RELEASE_SOCKET_CLOSING, 9);
    CHECK_ORDER(x, "0 1 2");
    CHECK_EQ(x->fin[0].action, NKE_ACT_ALLOW);
    CHECK_EQ(x->fin[1].reason, NKE_RELEASE_SOCKET_CLOSING);
    CHECK_EQ(x->fin[2].action, NKE_ACT_DROP);
    CHECK_EQ(count_released(x, NKE_RELEASE_SOCKET_CLOSING), 3);
    CHECK_EQ(x->c.stats.chunks_pending, 1); /* the other socket's */
    fx_free(x);
}

/* ======================================================================== */
/* Byte budget                                                               */
/* ======================================================================== */

static void test_budget_bounds_holds_and_releases_what_order_forces(void)
{
    static uint64_t ids[64];
    struct fx *x = fx_new();
    struct nke_filter_state st;
    uint64_t id = 0;
    int n = (int)(NKE_KEPT_BYTES_MAX / NKE_CHUNK_MAX_BYTES);
    CHECK_EQ(n, 64);
    hold_released(x, x->a, 0, n, NKE_CHUNK_MAX_BYTES, ids);
    nke_core_get_state(&x->c, &st);
    CHECK_EQ(st.bytes_kept, NKE_KEPT_BYTES_MAX);
    CHECK_EQ(st.chunks_pending, 64);
    /* another socket: not held (reported instead), nothing kept */
    CHECK_EQ(data(x, x->b, NKE_DIR_OUT, 100, 1, 0, 0, &id), NKE_DATA_REPORTED);
    CHECK(id != 0);
    nke_core_get_state(&x->c, &st);
    CHECK_EQ(st.chunks_passed_budget, 1);
    CHECK_EQ(st.bytes_kept, NKE_KEPT_BYTES_MAX);
    CHECK_EQ(x->nfin, 0);
    /* the held socket's next bytes must queue (order first), beyond the
     * budget: the chunks they wait behind are released at once */
    x->nrecs = 0;
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 101, 1, 0, 0, NULL), NKE_DATA_QUEUED);
    CHECK_EQ(x->nfin, 65);
    CHECK_EQ(x->fin[0].p->n, 0);
    CHECK_EQ(x->fin[63].p->n, 63);
    CHECK_EQ(x->fin[64].p->n, 101);
    CHECK_EQ(x->fin[0].reason, NKE_RELEASE_BUDGET);
    CHECK_EQ(count_released(x, NKE_RELEASE_BUDGET), 64);
    nke_core_get_state(&x->c, &st);
    CHECK_EQ(st.bytes_kept, 0);
    CHECK_EQ(st.chunks_pending, 0);
    fx_free(x);
}

static void test_budget_bounds_staging(void)
{
    static uint64_t ids[64];
    struct fx *x = fx_new();
    uint64_t id0, id1;
    uint32_t before;
    hold_released(x, x->a, 0, 63, NKE_CHUNK_MAX_BYTES, ids);
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 63, 10, 0, 0, &id0), NKE_DATA_HELD);
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 64, 10, 0, 0, &id1), NKE_DATA_HELD);
    /* room left: one chunk's worth minus 20 bytes */
    before = (uint32_t)x->c.stats.responses_rejected;
    CHECK_EQ(put(x, id0, x->a, "ab", NKE_CHUNK_MAX_BYTES), NKE_ERR_NO_MEMORY);
    CHECK_EQ(x->c.stats.responses_rejected, before + 1);
    CHECK_EQ(x->live_staged, 0);
    CHECK_EQ(put(x, id0, x->a, "ab", NKE_CHUNK_MAX_BYTES - 20), NKE_OK);
    CHECK_EQ(x->c.stats.bytes_kept, NKE_KEPT_BYTES_MAX);
    /* restaging the same chunk counts the old staging as given back */
    CHECK_EQ(put(x, id0, x->a, "cd", NKE_CHUNK_MAX_BYTES - 20), NKE_OK);
    CHECK_EQ(x->live_staged, 1);
    CHECK_EQ(put(x, id1, x->a, "x", 1), NKE_ERR_NO_MEMORY);
    /* a DROP gives the staging back */
    CHECK_EQ(answer(x, id0, x->a, NKE_ACT_DROP), NKE_OK);
    CHECK_EQ(x->live_staged, 0);
    CHECK_EQ(put(x, id1, x->a, "x", 1), NKE_OK);
    fx_free(x);
}

static void test_budget_counts_edit_until_done(void)
{
    struct fx *x = fx_new();
    static struct resp m;
    uint64_t id0;
    x->defer_done = true;
    CHECK_EQ(data(x, x->a, NKE_DIR_OUT, 0, 10, 0, 0, &id0), NKE_DATA_HELD);
    CHECK_EQ(put(x, id0, x->a, "abcd", 1000), NKE_OK);
    CHECK_EQ(x->c.stats.bytes_kept, 1010);
    resp_init(&m);
    verdict(&m, id0, x->a, NKE_ACT_ALLOW, 0);
    /* an unfinished staging refuses ALLOW_MODIFIED; ALLOW unstages */
    CHECK_EQ(respond(x, &m), NKE_OK);
    CHECK_EQ(x->c.stats.bytes_kept, 10); /* in flight: the original */
    fx_done_all(x);
    CHECK_EQ(x->c.stats.bytes_kept, 0);
    fx_free(x);
}

/* ======================================================================== */
/* Owner                                                                     */
/* ======================================================================== */

static void test_set_owner_emits_owner_record(void)
{
    struct fx *x = fx_new();
    struct nke_sock_info info;
    struct nke_nt_attach rec;
    memset(&info, 0, sizeof(info));
    info.pid = 4242;
    info.uid = 0;
    info.family = NKE_AF_INET6; /* ignored: the socket's own stays */
    memset(info.comm, 'q', NKE_COMM_LEN);
    nke_core_set_owner(&x->c, x->a, &info, 33);
    CHECK_EQ(x->nrecs, 1);
    memcpy(&rec, x->recs[0], sizeof(rec));
    CHECK_EQ(rec.hdr.type, NKE_NT_OWNER);
    CHECK_EQ(rec.hdr.size, sizeof(rec));
    CHECK_EQ(rec.hdr.sock.slot, x->a.slot);
    CHECK_EQ(rec.pid, 4242);
    CHECK_EQ(rec.family, NKE_AF_INET);
    CHECK_EQ(rec.protocol, NKE_PROTO_TCP);
    CHECK_EQ(rec.comm[NKE_COMM_LEN - 1], '\0');
    CHECK_EQ(rec.comm[0], 'q');
    CHECK_EQ(x->socks[x->a.slot].info.pid, 4242);
    fx_free(x);
}

/* ======================================================================== */
/* Re-injection plan                                                         */
/* ======================================================================== */

static void test_plan_stream_sized_to_room(void)
{
    struct nke_inject_plan p;
    uint32_t len = 99;
    nke_inject_plan_init(&p, 100000, 0, false);
    /* SO_SNDBUF 65536 with 60000 in the buffer: 5536 now */
    CHECK_EQ(nke_inject_plan_next(&p, 65536, 60000, 0, &len), NKE_PLAN_SEND);
    CHECK_EQ(len, 5536);
    nke_inject_plan_sent(&p, len);
    CHECK_EQ(p.done, 5536);
    /* full: wait, with a growing delay */
    CHECK_EQ(nke_inject_plan_next(&p, 65536, 65536, 0, &len), NKE_PLAN_WAIT);
    CHECK_EQ(len, 0);
    CHECK_EQ(nke_inject_plan_no_room(&p), 1);
    CHECK_EQ(nke_inject_plan_no_room(&p), 2);
    CHECK_EQ(nke_inject_plan_no_room(&p), 4);
    /* over-full (the buffer shrank): still a wait, not a negative size */
    CHECK_EQ(nke_inject_plan_next(&p, 1000, 65536, 0, &len), NKE_PLAN_WAIT);
    /* an empty buffer: everything that fits, capped by the slice */
    CHECK_EQ(nke_inject_plan_next(&p, 65536, 0, 16384, &len), NKE_PLAN_SEND);
    CHECK_EQ(len, 16384);
    nke_inject_plan_sent(&p, len);
    CHECK_EQ(p.waits, 0); /* progress resets the delay */
    CHECK_EQ(nke_inject_plan_next(&p, 1 << 20, 0, 0, &len), NKE_PLAN_SEND);
    CHECK_EQ(len, 100000 - 5536 - 16384);
    nke_inject_plan_sent(&p, len);
    CHECK_EQ(nke_inject_plan_next(&p, 1 << 20, 0, 0, &len), NKE_PLAN_DONE);
    /* a larger edit than SO_SNDBUF goes in several slices, never EMSGSIZE */
    nke_inject_plan_init(&p, 300000, 0, false);
    {
        int slices = 0;
        while (nke_inject_plan_next(&p, 131072, 0, 0, &len) == NKE_PLAN_SEND) {
            CHECK(len <= 131072);
            nke_inject_plan_sent(&p, len);
            slices++;
        }
        CHECK_EQ(slices, 3);
        CHECK_EQ(p.done, 300000);
    }
}

static void test_plan_delay_is_capped(void)
{
    struct nke_inject_plan p;
    uint32_t i, ms = 0;
    nke_inject_plan_init(&p, 10, 0, false);
    for (i = 0; i < 40; i++)
        ms = nke_inject_plan_no_room(&p);
    CHECK_EQ(ms, NKE_INJECT_RETRY_MAX_MS);
}

static void test_plan_datagram_and_control(void)
{
    struct nke_inject_plan p;
    uint32_t len;
    /* a datagram is all or nothing */
    nke_inject_plan_init(&p, 9000, 0, true);
    CHECK_EQ(nke_inject_plan_next(&p, 9216, 1000, 1024, &len), NKE_PLAN_WAIT);
    CHECK_EQ(nke_inject_plan_next(&p, 9216, 0, 1024, &len), NKE_PLAN_SEND);
    CHECK_EQ(len, 9000); /* never cut by the slice */
    /* larger than SO_SNDBUF can never go: EMSGSIZE in the stack */
    nke_inject_plan_init(&p, 9217, 0, true);
    CHECK_EQ(nke_inject_plan_next(&p, 9216, 0, 0, &len), NKE_PLAN_TOO_BIG);
    /* control rides the first slice and counts against the room */
    nke_inject_plan_init(&p, 1000, 100, false);
    CHECK_EQ(nke_inject_plan_next(&p, 600, 0, 0, &len), NKE_PLAN_SEND);
    CHECK_EQ(len, 500);
    nke_inject_plan_sent(&p, len);
    CHECK_EQ(p.control, 0);
    CHECK_EQ(nke_inject_plan_next(&p, 600, 0, 0, &len), NKE_PLAN_SEND);
    CHECK_EQ(len, 500);
    nke_inject_plan_init(&p, 10, 700, false);
    CHECK_EQ(nke_inject_plan_next(&p, 600, 0, 0, &len), NKE_PLAN_TOO_BIG);
    /* an edit to 0 bytes: nothing to send */
    nke_inject_plan_init(&p, 0, 0, false);
    CHECK_EQ(nke_inject_plan_next(&p, 600, 0, 0, &len), NKE_PLAN_DONE);
}

int main(void)
{
    memset(g_src, 'o', sizeof(g_src));
    RUN(test_verdicts_apply_in_stream_order);
    RUN(test_later_data_queues_behind_held_whatever_passes_it);
    RUN(test_no_client_queues_behind_in_flight);
    RUN(test_pool_full_queues_behind_held);
    RUN(test_queue_full_and_table_full_queue_behind_held);
    RUN(test_reported_piece_behind_held_is_reported_and_queued);
    RUN(test_later_deadline_waits_for_the_head);
    RUN(test_detach_drops_everything_kept_in_order);
    RUN(test_done_after_socket_gone);
    RUN(test_keep_and_no_hold_pieces);
    RUN(test_no_defer_socket_is_reported_only);
    RUN(test_release_socket_for_close);
    RUN(test_budget_bounds_holds_and_releases_what_order_forces);
    RUN(test_budget_bounds_staging);
    RUN(test_budget_counts_edit_until_done);
    RUN(test_set_owner_emits_owner_record);
    RUN(test_plan_stream_sized_to_room);
    RUN(test_plan_delay_is_capped);
    RUN(test_plan_datagram_and_control);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}

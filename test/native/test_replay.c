/*
 * Attach replay (kext/core): a client that opens after sockets attached is
 * told of each of them (NKE_NT_ATTACH, its addresses, a closing event), all
 * of them even when the queue is smaller than the replay, and never a
 * record of a socket before its attach. The fake platform's queue holds a
 * given number of records; "reading" it empties it.
 */
#include "nke_core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define NSOCKS 1200
#define MAX_RECS 8192

/* Every record the client read, in order, and the queue's room. */
struct fake {
    uint32_t room;      /* records the queue takes before it is read */
    uint32_t queued;
    uint32_t nrecs;
    uint8_t recs[MAX_RECS][NKE_NT_MAX_SIZE];
};

static bool fake_emit(void *platform, const void *rec, uint32_t size)
{
    struct fake *f = (struct fake *)platform;
    if (f->queued >= f->room || f->nrecs >= MAX_RECS)
        return false;
    memcpy(f->recs[f->nrecs++], rec, size);
    f->queued++;
    return true;
}

static void fake_copy(void *platform, void *data_ctx, uint32_t off, uint32_t len, void *dst)
{
    (void)platform;
    (void)data_ctx;
    (void)off;
    memset(dst, 'x', len);
}

static void fake_finish(void *platform, void *sock_ctx, void *data_ctx, uint32_t action, void *staged,
                        uint32_t staged_len, uint32_t reason)
{
    (void)platform, (void)sock_ctx, (void)data_ctx, (void)action, (void)staged, (void)staged_len,
        (void)reason;
}

static int fake_stage(void *platform, void **staged, uint32_t total, uint32_t off, const void *b, uint32_t n)
{
    (void)platform, (void)staged, (void)total, (void)off, (void)b, (void)n;
    return NKE_ERR_NO_MEMORY;
}

static void fake_unstage(void *platform, void *staged)
{
    (void)platform, (void)staged;
}

static const struct nke_core_ops ops = {fake_emit, fake_copy, fake_finish, fake_stage, fake_unstage};
static uint8_t g_buffers[NKE_BUFFER_COUNT * NKE_BUFFER_SIZE];
static struct nke_sock g_socks[NSOCKS];
static struct nke_core g_core;
static struct fake g_fake;
static struct nke_sock_id g_ids[NSOCKS];

static void open_client(void)
{
    struct nke_open_request req;
    struct nke_open_reply rep;
    memset(&req, 0, sizeof(req));
    req.abi_version = NKE_ABI_VERSION;
    if (nke_core_client_open(&g_core, &req, &rep, 7) != NKE_OK)
        abort();
}

/* A core whose first client saw `n` sockets attach (every third listening,
 * the others connected, every fifth of those closing), then closed. */
static void setup(uint32_t n)
{
    uint32_t i;
    memset(g_socks, 0, sizeof(g_socks));
    memset(&g_fake, 0, sizeof(g_fake));
    nke_core_init(&g_core, &ops, &g_fake, g_buffers, g_socks, NSOCKS, 1, 224);
    g_fake.room = MAX_RECS;
    open_client();
    for (i = 0; i < n; i++) {
        struct nke_sock_info info;
        struct nke_addr local, remote;
        memset(&info, 0, sizeof(info));
        info.pid = (int32_t)(1000 + i % 10);
        info.uid = 501;
        info.family = NKE_AF_INET;
        info.type = 1;
        info.protocol = NKE_PROTO_TCP;
        snprintf(info.comm, sizeof(info.comm), "proc%u", i % 10);
        g_ids[i] = nke_core_attach(&g_core, &info, NULL, 1);
        memset(&local, 0, sizeof(local));
        memset(&remote, 0, sizeof(remote));
        local.family = NKE_AF_INET;
        local.port = (uint16_t)(10000 + i);
        remote.family = NKE_AF_INET;
        remote.port = 80;
        if (i % 3 == 0) {
            nke_core_addrs(&g_core, g_ids[i], NKE_NT_LISTEN, &local, NULL, 2);
        } else {
            nke_core_addrs(&g_core, g_ids[i], i % 3 == 1 ? NKE_NT_CONNECT_OUT : NKE_NT_CONNECT_IN, &local,
                           &remote, 2);
            if (i % 3 == 1 && i % 2 == 0)
                nke_core_event(&g_core, g_ids[i], NKE_EV_CONNECTED, 3);
            if (i % 5 == 0)
                nke_core_event(&g_core, g_ids[i], NKE_EV_CLOSING, 3);
        }
    }
    nke_core_client_close(&g_core);
    g_fake.nrecs = 0;
    g_fake.queued = 0;
}


/* What the client knows of each socket from the records, in order; checks the order rule. */
struct seen {
    bool attached, detached;
    uint16_t addr_type;
    uint16_t port;
    bool closing, connected;
    int32_t pid;
};
static struct seen g_seen[NSOCKS];

static uint32_t tally(void)
{
    uint32_t i, before_attach = 0;
    memset(g_seen, 0, sizeof(g_seen));
    for (i = 0; i < g_fake.nrecs; i++) {
        struct nke_nt_hdr hd;
        const struct nke_nt_hdr *h = &hd;
        const uint8_t *raw = g_fake.recs[i];
        struct seen *s;
        memcpy(&hd, raw, sizeof(hd));
        if (h->sock.slot == 0 || h->sock.slot >= NSOCKS)
            continue;
        s = &g_seen[h->sock.slot];
        if (h->type == NKE_NT_ATTACH) {
            struct nke_nt_attach a;
            memcpy(&a, raw, sizeof(a));
            s->attached = true;
            s->pid = a.pid;
            continue;
        }
        if (!s->attached)
            before_attach++;
        if (h->type >= NKE_NT_CONNECT_IN && h->type <= NKE_NT_LISTEN) {
            struct nke_nt_addrs a;
            memcpy(&a, raw, sizeof(a));
            s->addr_type = h->type;
            s->port = a.local.port;
        } else if (h->type == NKE_NT_EVENT) {
            struct nke_nt_event e;
            memcpy(&e, raw, sizeof(e));
            if (e.event == NKE_EV_CLOSING)
                s->closing = true;
            if (e.event == NKE_EV_CONNECTED)
                s->connected = true;
        } else if (h->type == NKE_NT_DETACH) {
            s->detached = true;
        }
    }
    return before_attach;
}

static void check_socket(uint32_t i)
{
    struct seen *s = &g_seen[g_ids[i].slot];
    CHECK(s->attached);
    CHECK_EQ(s->pid, 1000 + i % 10);
    CHECK_EQ(s->port, 10000 + i);
    CHECK_EQ(s->addr_type, i % 3 == 0 ? NKE_NT_LISTEN : i % 3 == 1 ? NKE_NT_CONNECT_OUT : NKE_NT_CONNECT_IN);
    CHECK_EQ(s->closing, i % 3 != 0 && i % 5 == 0);
    /* outgoing and past the handshake (every even one): a connected event after its connect */
    CHECK_EQ(s->connected, i % 3 == 1 && i % 2 == 0);
}

/* Room for everything: the replay is done by the first expire after open. */
static void test_replay_whole(void)
{
    uint32_t i;
    setup(40);
    open_client();
    nke_core_expire(&g_core, 10, 10);
    CHECK_EQ(tally(), 0);
    for (i = 0; i < 40; i++)
        check_socket(i);
    nke_core_client_close(&g_core);
}

/* A queue of 100 records and 1 000 sockets: the replay goes on as the client
 * reads, none missing; meanwhile live records of sockets not yet replayed
 * come after their replay, never before. */
static void test_replay_paced_and_ordered(void)
{
    uint32_t i, rounds = 0, wait, first_wait = 0;
    uint64_t id = 0;
    setup(1000);
    g_fake.room = 100;
    open_client();
    do {
        wait = nke_core_expire(&g_core, 10, 10);
        if (rounds == 0)
            first_wait = wait;
        /* Live traffic on sockets near the end of the table, which the replay has not reached. */
        nke_core_event(&g_core, g_ids[990 - rounds % 50], NKE_EV_FLUSH_READ, 11);
        (void)nke_core_data(&g_core, g_ids[999 - rounds % 30], NKE_DIR_OUT, 10, 0, NULL, NULL, 10, 11, &id);
        g_fake.queued = 0; /* the client read the queue */
        rounds++;
    } while (g_core.replay_next != 0 && rounds < 1000);
    CHECK(rounds > 10);      /* paced: far more than one queue's worth */
    CHECK(first_wait <= 5);  /* while it waits for room the filter comes back soon */
    (void)wait;
    CHECK_EQ(g_core.replay_next, 0);
    CHECK_EQ(tally(), 0);
    for (i = 0; i < 1000; i++)
        check_socket(i);
    CHECK_EQ(nke_core_expire(&g_core, 10, 10), UINT32_MAX); /* done: no more early wake-ups */
    nke_core_client_close(&g_core);
}

/* A socket that detaches before its turn: its attach goes first, then the detach. */
static void test_replay_detach_before_turn(void)
{
    setup(300);
    g_fake.room = 50;
    open_client();
    nke_core_expire(&g_core, 10, 10);
    g_fake.queued = 0;
    nke_core_detach(&g_core, g_ids[299], 12);
    CHECK_EQ(tally(), 0);
    CHECK(g_seen[g_ids[299].slot].detached);
    while (g_core.replay_next != 0) {
        g_fake.queued = 0;
        nke_core_expire(&g_core, 10, 10);
    }
    CHECK_EQ(tally(), 0);
    nke_core_client_close(&g_core);
}

/* A client that closes mid-replay leaves nothing behind: the next one gets the whole replay. */
static void test_replay_restarts_for_next_client(void)
{
    uint32_t i;
    setup(200);
    g_fake.room = 20;
    open_client();
    nke_core_expire(&g_core, 10, 10);
    nke_core_client_close(&g_core);
    CHECK_EQ(g_core.replay_next, 0);
    g_fake.nrecs = 0;
    g_fake.queued = 0;
    g_fake.room = MAX_RECS;
    open_client();
    nke_core_expire(&g_core, 10, 10);
    CHECK_EQ(tally(), 0);
    for (i = 0; i < 200; i++)
        check_socket(i);
    nke_core_client_close(&g_core);
}

/* Attaches lost to a full queue while the client is open come again once
 * there is room: none is missing, each before the socket's next record. */
static void test_lost_attach_replayed(void)
{
    uint32_t i;
    setup(0);
    open_client();
    g_fake.room = 0; /* the client is behind: nothing fits */
    for (i = 0; i < 100; i++) {
        struct nke_sock_info info;
        struct nke_addr local, remote;
        memset(&info, 0, sizeof(info));
        info.pid = (int32_t)(1000 + i % 10);
        info.family = NKE_AF_INET;
        info.type = 1;
        info.protocol = NKE_PROTO_TCP;
        g_ids[i] = nke_core_attach(&g_core, &info, NULL, 1);
        memset(&local, 0, sizeof(local));
        memset(&remote, 0, sizeof(remote));
        local.family = remote.family = NKE_AF_INET;
        local.port = (uint16_t)(10000 + i);
        remote.port = 80;
        if (i % 3 == 0)
            nke_core_addrs(&g_core, g_ids[i], NKE_NT_LISTEN, &local, NULL, 2);
        else
            nke_core_addrs(&g_core, g_ids[i], i % 3 == 1 ? NKE_NT_CONNECT_OUT : NKE_NT_CONNECT_IN, &local,
                           &remote, 2);
        if (i % 3 == 1 && i % 2 == 0)
            nke_core_event(&g_core, g_ids[i], NKE_EV_CONNECTED, 3);
        if (i % 3 != 0 && i % 5 == 0)
            nke_core_event(&g_core, g_ids[i], NKE_EV_CLOSING, 3);
    }
    CHECK_EQ(g_fake.nrecs, 0);
    g_fake.room = 30;
    /* the socket of slot 50 speaks first: its replay comes before its event */
    nke_core_event(&g_core, g_ids[50], NKE_EV_FLUSH_READ, 4);
    while (g_core.replay_next != 0) {
        g_fake.queued = 0;
        nke_core_expire(&g_core, 10, 10);
    }
    CHECK_EQ(tally(), 0);
    for (i = 0; i < 100; i++)
        check_socket(i);
    nke_core_client_close(&g_core);
}

int main(void)
{
    RUN(test_replay_whole);
    RUN(test_replay_paced_and_ordered);
    RUN(test_replay_detach_before_turn);
    RUN(test_replay_restarts_for_next_client);
    RUN(test_lost_attach_replayed);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}

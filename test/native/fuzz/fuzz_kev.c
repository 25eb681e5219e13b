/*
 * Fuzz target: the kev reassembler fed arbitrary message sequences.
 *
 * Input is a sequence of records [u8 kind][...]:
 *  kind&1 == 0: raw message, [u16 len][len bytes] fed as is;
 *  kind&1 == 1: structured chunk [exec%4][idx][count][total_len u16][offset u16]
 *               [plen u8][plen bytes], wrapped in a valid kern_event_msg so the
 *               reassembler's real logic is reached often;
 *  every kind&6 == 6 also calls expire with a time jump.
 * Invariant on every complete record: each path byte equals the byte at that
 * position of some accepted message of the same exec (same id, pid,
 * total_len, chunk_count), and every chunk index was fed. A complete record
 * made of anything else is a wrong path.
 */
#include "nke_core.h"

#include <stdlib.h>
#include <string.h>

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)
#define VENDOR 5u
#define MAX_LOG 512

struct fed {
    struct nke_kev_exec_chunk h;
    uint32_t plen;
    uint8_t piece[1024];
};

static struct fed g_log[MAX_LOG];
static uint32_t g_nlog;
static struct nke_kev_reasm g_r;

static void check_record(void *arg, const struct nke_exec_record *rec)
{
    uint32_t k, i;
    (void)arg;
    REQUIRE(rec->path_len < NKE_PATH_MAX);
    REQUIRE(rec->chunk_count >= 1 && rec->chunk_count <= NKE_KEV_MAX_CHUNKS);
    if (!rec->complete)
        return;
    REQUIRE(rec->path[rec->path_len] == '\0');
    for (i = 0; i < rec->chunk_count; i++) {
        bool seen = false;
        for (k = 0; k < g_nlog && !seen; k++) {
            const struct fed *f = &g_log[k];
            seen = f->h.exec_id == rec->exec_id && f->h.pid == rec->pid &&
                   f->h.total_len == rec->path_len && f->h.chunk_count == rec->chunk_count &&
                   f->h.chunk_index == i;
        }
        REQUIRE(seen);
    }
    for (i = 0; i < rec->path_len; i++) {
        bool ok = false;
        for (k = 0; k < g_nlog && !ok; k++) {
            const struct fed *f = &g_log[k];
            if (f->h.exec_id == rec->exec_id && f->h.pid == rec->pid &&
                f->h.total_len == rec->path_len && f->h.chunk_count == rec->chunk_count &&
                i >= f->h.offset && i < (uint32_t)f->h.offset + f->plen)
                ok = f->piece[i - f->h.offset] == (uint8_t)rec->path[i];
        }
        REQUIRE(ok);
    }
}

static void feed(const uint8_t *msg, uint32_t len, uint64_t now)
{
    /* Log what would be accepted, for the invariant. */
    if (len >= NKE_KEV_HEADER_SIZE + NKE_KEV_EXEC_CHUNK_HEADER_SIZE && g_nlog < MAX_LOG &&
        len - NKE_KEV_HEADER_SIZE - NKE_KEV_EXEC_CHUNK_HEADER_SIZE <= 1024) {
        struct fed *f = &g_log[g_nlog++];
        memcpy(&f->h, msg + NKE_KEV_HEADER_SIZE, sizeof(f->h));
        f->plen = len - NKE_KEV_HEADER_SIZE - NKE_KEV_EXEC_CHUNK_HEADER_SIZE;
        memcpy(f->piece, msg + NKE_KEV_HEADER_SIZE + NKE_KEV_EXEC_CHUNK_HEADER_SIZE, f->plen);
    }
    nke_kev_reasm_feed(&g_r, msg, len, now, check_record, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t msg[2048];
    uint64_t now = 0;
    uint32_t i;
    g_nlog = 0;
    nke_kev_reasm_init(&g_r, VENDOR, 100);
    while (size > 0 && g_nlog < MAX_LOG) {
        uint8_t kind = data[0];
        data++;
        size--;
        now += kind >> 4;
        if ((kind & 6) == 6) {
            now += 100;
            nke_kev_reasm_expire(&g_r, now, check_record, NULL);
        }
        if ((kind & 1) == 0) {
            uint16_t len;
            if (size < 2)
                break;
            memcpy(&len, data, 2);
            data += 2;
            size -= 2;
            if (len > size)
                len = (uint16_t)size;
            if (len > sizeof(msg))
                len = (uint16_t)sizeof(msg); /* the rest is read as further records */
            memcpy(msg, data, len);
            feed(msg, len, now);
            data += len;
            size -= len;
        } else {
            struct nke_kern_event_msg km;
            struct nke_kev_exec_chunk h;
            uint8_t plen;
            if (size < 8)
                break;
            memset(&h, 0, sizeof(h));
            /* 40 ids > NKE_KEV_REASM_SLOTS, so eviction is reachable */
            h.exec_id = data[0] % 40u;
            h.pid = (int32_t)(data[0] % 4u);
            h.chunk_index = data[1];
            h.chunk_count = data[2];
            memcpy(&h.total_len, data + 3, 2);
            memcpy(&h.offset, data + 5, 2);
            plen = data[7];
            data += 8;
            size -= 8;
            if (plen > size)
                plen = (uint8_t)size;
            memset(&km, 0, sizeof(km));
            km.total_size = (uint32_t)(sizeof(km) + sizeof(h) + plen);
            km.vendor_code = VENDOR;
            km.kev_class = NKE_KEV_CLASS;
            km.kev_subclass = NKE_KEV_SUBCLASS_EXEC;
            km.event_code = NKE_KEV_EVENT_EXEC;
            memcpy(msg, &km, sizeof(km));
            memcpy(msg + sizeof(km), &h, sizeof(h));
            memcpy(msg + sizeof(km) + sizeof(h), data, plen);
            feed(msg, km.total_size, now);
            data += plen;
            size -= plen;
        }
    }
    nke_kev_reasm_expire(&g_r, now + 1000, check_record, NULL);
    for (i = 0; i < NKE_KEV_REASM_SLOTS; i++)
        REQUIRE(!g_r.slots[i].in_use);
    return 0;
}

/*
 * Exec events over kernel event messages: chunking (kext / emulator side)
 * and reassembly (client side).
 *
 * A kern_event_msg larger than the mbuf limit fails with EMSGSIZE, so the
 * path goes in pieces of (limit - kern_event_msg header - chunk header)
 * bytes; a path longer than fits (NKE_PATH_MAX - 1 bytes, or
 * NKE_KEV_MAX_CHUNKS pieces under a tiny limit) goes out cut, flagged
 * NKE_EXEC_F_TRUNCATED: an exec is never silently left out. Messages are
 * broadcast and may be lost (a full socket buffer drops
 * them) or, on the emulator, duplicated; so the reassembler keeps bounded
 * state (NKE_KEV_REASM_SLOTS execs in flight), never reports a path complete
 * unless every chunk arrived and they tile the path exactly, and flags what
 * is missing after a timeout.
 *
 * The reassembler has no lock: one reader thread owns a struct nke_kev_reasm.
 */
#include "nke_core.h"

#include <string.h>

#define KEV_OVERHEAD (NKE_KEV_HEADER_SIZE + NKE_KEV_EXEC_CHUNK_HEADER_SIZE)

uint32_t nke_kev_piece_size(uint32_t msg_limit)
{
    return msg_limit > KEV_OVERHEAD ? msg_limit - KEV_OVERHEAD : 0u;
}

uint32_t nke_kev_sendable_len(uint32_t path_len, uint32_t msg_limit)
{
    uint32_t piece = nke_kev_piece_size(msg_limit);
    uint32_t most = piece * NKE_KEV_MAX_CHUNKS;
    if (piece == 0)
        return 0;
    if (most > NKE_PATH_MAX - 1u)
        most = NKE_PATH_MAX - 1u;
    return path_len < most ? path_len : most;
}

uint32_t nke_kev_chunk_count(uint32_t path_len, uint32_t msg_limit)
{
    uint32_t piece = nke_kev_piece_size(msg_limit);
    uint32_t len = nke_kev_sendable_len(path_len, msg_limit);
    if (piece == 0)
        return 0;
    return len == 0 ? 1u : (len + piece - 1u) / piece;
}

int nke_kev_chunk_build(uint32_t exec_id, int32_t pid, int32_t ppid, uint32_t uid, uint16_t flags,
                        const char *path, uint32_t path_len, uint32_t msg_limit, uint32_t index,
                        struct nke_kev_exec_chunk *hdr, const char **piece, uint32_t *piece_len)
{
    uint32_t count = nke_kev_chunk_count(path_len, msg_limit);
    uint32_t psize = nke_kev_piece_size(msg_limit);
    uint32_t len = nke_kev_sendable_len(path_len, msg_limit);
    uint32_t off;
    if (count == 0)
        return NKE_ERR_SIZE;
    if (index >= count)
        return NKE_ERR_COUNT;
    off = index * psize;
    memset(hdr, 0, sizeof(*hdr));
    hdr->exec_id = exec_id;
    hdr->pid = pid;
    hdr->ppid = ppid;
    hdr->uid = uid;
    hdr->total_len = (uint16_t)len;
    hdr->offset = (uint16_t)off;
    hdr->chunk_index = (uint8_t)index;
    hdr->chunk_count = (uint8_t)count;
    /* A path cut here says so in every chunk: the reassembler compares
     * flags across chunks, and the reader must not take it for the whole. */
    hdr->flags = (uint16_t)(flags | (len < path_len ? NKE_EXEC_F_TRUNCATED : 0u));
    *piece = path + off;
    *piece_len = len - off < psize ? len - off : psize;
    return NKE_OK;
}

/* ------------------------------------------------------------------------ */
/* Reassembly                                                                */
/* ------------------------------------------------------------------------ */

void nke_kev_reasm_init(struct nke_kev_reasm *r, uint32_t vendor_code, uint32_t timeout_ms)
{
    memset(r, 0, sizeof(*r));
    r->vendor_code = vendor_code;
    r->timeout_ms = timeout_ms;
}

static void recent_add(struct nke_kev_reasm *r, const struct nke_exec_record *rec)
{
    struct nke_kev_recent *e = &r->recent[r->recent_next % NKE_KEV_RECENT];
    e->exec_id = rec->exec_id;
    e->pid = rec->pid;
    e->total_len = (uint16_t)rec->path_len;
    e->chunk_count = (uint8_t)rec->chunk_count;
    e->used = 1;
    r->recent_next = (r->recent_next + 1u) % NKE_KEV_RECENT;
}

static bool recent_has(const struct nke_kev_reasm *r, const struct nke_kev_exec_chunk *h)
{
    uint32_t i;
    for (i = 0; i < NKE_KEV_RECENT; i++) {
        const struct nke_kev_recent *e = &r->recent[i];
        if (e->used && e->exec_id == h->exec_id && e->pid == h->pid &&
            e->total_len == h->total_len && e->chunk_count == h->chunk_count)
            return true;
    }
    return false;
}

/* Hands the slot's record to the callback and frees the slot. `complete` is
 * decided here from what arrived, never taken from the caller's hopes. */
static void slot_emit(struct nke_kev_reasm *r, struct nke_kev_reasm_slot *s, nke_exec_cb cb,
                      void *arg)
{
    struct nke_exec_record *rec = &s->rec;
    uint64_t all = rec->chunk_count >= 64u ? ~(uint64_t)0 : (((uint64_t)1 << rec->chunk_count) - 1u);
    rec->complete = rec->received_mask == all && s->covered_bytes == rec->path_len;
    rec->path[rec->path_len] = '\0';
    if (rec->complete)
        r->completed++;
    else
        r->incomplete++;
    recent_add(r, rec);
    if (cb)
        cb(arg, rec);
    memset(s, 0, sizeof(*s));
}

static bool covered_any(const struct nke_kev_reasm_slot *s, uint32_t off, uint32_t len)
{
    uint32_t i;
    for (i = off; i < off + len; i++)
        if (s->covered[i / 8u] & (1u << (i % 8u)))
            return true;
    return false;
}

static bool same_exec(const struct nke_exec_record *rec, const struct nke_kev_exec_chunk *h)
{
    return rec->pid == h->pid && rec->ppid == h->ppid && rec->uid == h->uid &&
           rec->flags == h->flags && rec->path_len == h->total_len &&
           rec->chunk_count == h->chunk_count;
}

int nke_kev_reasm_feed(struct nke_kev_reasm *r, const void *msg, uint32_t len, uint64_t now_ms,
                       nke_exec_cb cb, void *arg)
{
    struct nke_kern_event_msg km;
    struct nke_kev_exec_chunk h;
    struct nke_kev_reasm_slot *s = NULL;
    const uint8_t *piece;
    uint32_t piece_len, i, k;
    uint64_t bit;

    if (msg == NULL || len < NKE_KEV_HEADER_SIZE) {
        r->malformed++;
        return NKE_ERR_SIZE;
    }
    /* Messages come from a socket buffer of any alignment: copy out. */
    memcpy(&km, msg, sizeof(km));
    if (km.total_size != len) {
        r->malformed++;
        return NKE_ERR_SIZE;
    }
    if (km.vendor_code != r->vendor_code || km.kev_class != NKE_KEV_CLASS ||
        km.kev_subclass != NKE_KEV_SUBCLASS_EXEC || km.event_code != NKE_KEV_EVENT_EXEC)
        return NKE_OK; /* someone else's event: not ours to judge */
    if (len < NKE_KEV_HEADER_SIZE + NKE_KEV_EXEC_CHUNK_HEADER_SIZE) {
        r->malformed++;
        return NKE_ERR_SIZE;
    }
    memcpy(&h, (const uint8_t *)msg + NKE_KEV_HEADER_SIZE, sizeof(h));
    piece = (const uint8_t *)msg + NKE_KEV_HEADER_SIZE + NKE_KEV_EXEC_CHUNK_HEADER_SIZE;
    piece_len = len - NKE_KEV_HEADER_SIZE - NKE_KEV_EXEC_CHUNK_HEADER_SIZE;
    if (h.chunk_count == 0 || h.chunk_count > NKE_KEV_MAX_CHUNKS || h.chunk_index >= h.chunk_count) {
        r->malformed++;
        return NKE_ERR_COUNT;
    }
    if (h.total_len >= NKE_PATH_MAX || (uint32_t)h.offset + piece_len > h.total_len) {
        r->malformed++;
        return NKE_ERR_SIZE;
    }
    if (recent_has(r, &h)) {
        r->duplicates++;
        return NKE_OK;
    }

    for (i = 0; i < NKE_KEV_REASM_SLOTS; i++) {
        if (r->slots[i].in_use && r->slots[i].rec.exec_id == h.exec_id) {
            s = &r->slots[i];
            break;
        }
    }
    bit = (uint64_t)1 << h.chunk_index;
    if (s != NULL) {
        if (!same_exec(&s->rec, &h)) {
            /* Another exec under the same id (e.g. the filter restarted):
             * the old one will never finish consistently. */
            r->conflicts++;
            slot_emit(r, s, cb, arg);
            s = NULL;
        } else if (s->rec.received_mask & bit) {
            if (s->piece_off[h.chunk_index] == h.offset &&
                s->piece_len[h.chunk_index] == piece_len &&
                memcmp(s->rec.path + h.offset, piece, piece_len) == 0) {
                r->duplicates++;
                return NKE_OK;
            }
            r->conflicts++;
            slot_emit(r, s, cb, arg);
            s = NULL;
        } else if (covered_any(s, h.offset, piece_len)) {
            r->conflicts++;
            slot_emit(r, s, cb, arg);
            s = NULL;
        }
    }
    if (s == NULL) {
        struct nke_kev_reasm_slot *oldest = NULL;
        for (i = 0; i < NKE_KEV_REASM_SLOTS; i++) {
            if (!r->slots[i].in_use) {
                s = &r->slots[i];
                break;
            }
            if (oldest == NULL || r->slots[i].first_ms < oldest->first_ms)
                oldest = &r->slots[i];
        }
        if (s == NULL) {
            /* Bounded memory: the oldest exec in flight gives way. */
            r->evicted++;
            slot_emit(r, oldest, cb, arg);
            s = oldest;
        }
        memset(s, 0, sizeof(*s));
        s->in_use = true;
        s->first_ms = now_ms;
        s->rec.exec_id = h.exec_id;
        s->rec.pid = h.pid;
        s->rec.ppid = h.ppid;
        s->rec.uid = h.uid;
        s->rec.flags = h.flags;
        s->rec.path_len = h.total_len;
        s->rec.chunk_count = h.chunk_count;
    }

    if (piece_len)
        memcpy(s->rec.path + h.offset, piece, piece_len);
    for (k = h.offset; k < (uint32_t)h.offset + piece_len; k++)
        s->covered[k / 8u] |= (uint8_t)(1u << (k % 8u));
    s->covered_bytes += piece_len;
    s->piece_off[h.chunk_index] = h.offset;
    s->piece_len[h.chunk_index] = (uint16_t)piece_len;
    s->rec.received_mask |= bit;

    {
        uint64_t all = h.chunk_count >= 64u ? ~(uint64_t)0 : (((uint64_t)1 << h.chunk_count) - 1u);
        if (s->rec.received_mask == all) {
            /* Every chunk is in: complete if they tile the path, otherwise
             * the sender was inconsistent and nothing more can fix it. */
            if (s->covered_bytes != s->rec.path_len)
                r->conflicts++;
            slot_emit(r, s, cb, arg);
        }
    }
    return NKE_OK;
}

void nke_kev_reasm_expire(struct nke_kev_reasm *r, uint64_t now_ms, nke_exec_cb cb, void *arg)
{
    uint32_t i;
    for (i = 0; i < NKE_KEV_REASM_SLOTS; i++) {
        struct nke_kev_reasm_slot *s = &r->slots[i];
        if (s->in_use && now_ms >= s->first_ms && now_ms - s->first_ms >= r->timeout_ms)
            slot_emit(r, s, cb, arg);
    }
}

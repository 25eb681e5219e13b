/*
 * Stream order of kept data, the byte budget's bookkeeping, and the
 * free-space-sized re-injection plan (see nke_order.h for the rules and
 * their XNU reasons).
 *
 * Locking: the platform's one lock, as every kext/core function. ops->finish
 * is called with it held and may call nke_core_item_done (nothing here keeps
 * a pointer across the call that item_done could invalidate: an item is off
 * its queue and counted in flight before finish sees it).
 *
 * Ownership: an item belongs to the core from nke_order_keep until it is
 * handed to ops->finish; then to the platform, which returns its bytes to
 * the budget with nke_core_item_done. Staged bytes of a decided
 * ALLOW_MODIFIED item travel with it (item->staged) and are counted in its
 * `kept` until then.
 */
#include "nke_core.h"

#include <string.h>

static struct nke_order_queue *queue_of(struct nke_sock *s, uint8_t direction)
{
    return &s->order[direction == NKE_DIR_IN ? 0 : 1];
}

static void budget_sub(struct nke_core *c, uint64_t n)
{
    c->stats.bytes_kept = c->stats.bytes_kept >= n ? c->stats.bytes_kept - n : 0;
}

/* Hands back, from the head, every item whose decision is known. */
static void pump(struct nke_core *c, struct nke_sock *s, struct nke_order_queue *q)
{
    struct nke_order_item *it;
    while ((it = q->head) != NULL && it->action != 0) {
        q->head = it->next;
        if (q->head == NULL)
            q->tail = NULL;
        it->next = NULL;
        q->items--;
        q->bytes -= it->size;
        /* Counted in flight before finish: it may call item_done at once. */
        q->inflight++;
        q->inflight_bytes += it->kept;
        c->ops->finish(c->platform, s->ctx, it, it->action, it->staged, it->staged_len,
                       it->reason);
    }
}

void nke_order_keep(struct nke_core *c, struct nke_sock *s, struct nke_sock_id id,
                    struct nke_order_item *item, uint8_t direction, uint32_t size, bool decided)
{
    struct nke_order_queue *q = queue_of(s, direction);
    item->next = NULL;
    item->sock = id;
    item->size = size;
    item->kept = size;
    item->staged = NULL;
    item->staged_len = 0;
    item->action = decided ? (uint8_t)NKE_ACT_ALLOW : 0u;
    item->direction = direction;
    item->reason = 0;
    item->_pad0 = 0;
    if (q->tail != NULL)
        q->tail->next = item;
    else
        q->head = item;
    q->tail = item;
    q->items++;
    q->bytes += size;
    c->stats.bytes_kept += size;
    if (decided)
        pump(c, s, q);
}

void nke_order_decide(struct nke_core *c, struct nke_sock *s, struct nke_order_item *item,
                      uint32_t action, void *staged, uint32_t staged_len, uint32_t staged_total,
                      uint32_t reason)
{
    item->action = (uint8_t)action;
    item->reason = (uint8_t)reason;
    item->staged = staged;
    item->staged_len = staged_len;
    if (action == NKE_ACT_ALLOW_MODIFIED)
        item->kept += staged_total; /* the staging's share of the budget moves to the item */
    pump(c, s, queue_of(s, item->direction));
}

void nke_order_socket_gone(struct nke_core *c, struct nke_sock *s)
{
    uint32_t d;
    for (d = 0; d < 2; d++) {
        struct nke_order_item *it;
        for (it = s->order[d].head; it != NULL; it = it->next) {
            if (it->action == 0)
                continue; /* held: the caller decides it (DROP, SOCKET_GONE) */
            if (it->staged != NULL)
                c->ops->unstage(c->platform, it->staged);
            it->staged = NULL;
            it->staged_len = 0;
            it->action = NKE_ACT_DROP;
            it->reason = NKE_RELEASE_SOCKET_GONE;
        }
    }
}

void nke_core_item_done(struct nke_core *c, struct nke_order_item *item)
{
    struct nke_sock *s = nke_core_sock(c, item->sock);
    if (s != NULL && (item->direction == NKE_DIR_IN || item->direction == NKE_DIR_OUT)) {
        struct nke_order_queue *q = queue_of(s, item->direction);
        if (q->inflight > 0)
            q->inflight--;
        q->inflight_bytes = q->inflight_bytes >= item->kept ? q->inflight_bytes - item->kept : 0;
    }
    /* A socket gone meanwhile (its slot freed or reused) still returns the
     * bytes to the budget. */
    budget_sub(c, item->kept);
    item->kept = 0;
}

uint64_t nke_core_order_backlog(const struct nke_core *c, struct nke_sock_id id, uint8_t direction)
{
    struct nke_sock *s = nke_core_sock((struct nke_core *)c, id);
    const struct nke_order_queue *q;
    if (s == NULL || (direction != NKE_DIR_IN && direction != NKE_DIR_OUT))
        return 0;
    q = queue_of(s, direction);
    return q->bytes + q->inflight_bytes;
}

bool nke_core_order_busy(const struct nke_core *c, struct nke_sock_id id, uint8_t direction)
{
    struct nke_sock *s = nke_core_sock((struct nke_core *)c, id);
    const struct nke_order_queue *q;
    if (s == NULL || (direction != NKE_DIR_IN && direction != NKE_DIR_OUT))
        return false;
    q = queue_of(s, direction);
    return q->head != NULL || q->inflight > 0;
}

/* ------------------------------------------------------------------------ */
/* Re-injection plan                                                         */
/* ------------------------------------------------------------------------ */

void nke_inject_plan_init(struct nke_inject_plan *p, uint32_t total, uint32_t control_len,
                          bool datagram)
{
    memset(p, 0, sizeof(*p));
    p->total = total;
    p->control = control_len;
    p->datagram = datagram ? 1u : 0u;
}

int nke_inject_plan_next(const struct nke_inject_plan *p, int64_t sndbuf, int64_t nwrite,
                         uint32_t max_slice, uint32_t *len)
{
    int64_t room, left;
    *len = 0;
    if (p->done >= p->total)
        return NKE_PLAN_DONE;
    left = (int64_t)p->total - (int64_t)p->done;
    /* sosendcheck: atomic && resid > sb_hiwat, or clen > sb_hiwat: EMSGSIZE,
     * whatever the room; a datagram cannot be cut. */
    if ((int64_t)p->control > sndbuf || (p->datagram && left + (int64_t)p->control > sndbuf))
        return NKE_PLAN_TOO_BIG;
    if (nwrite < 0)
        nwrite = 0;
    /* sosendcheck also wants resid + clen within the room (a prebuilt chain
     * is atomic): the control goes with the first slice. */
    room = sndbuf - nwrite - (int64_t)p->control;
    if (room <= 0 || (p->datagram && room < left))
        return NKE_PLAN_WAIT;
    if (left > room)
        left = room;
    if (max_slice != 0 && left > (int64_t)max_slice)
        left = p->datagram ? left : (int64_t)max_slice;
    *len = (uint32_t)left;
    return NKE_PLAN_SEND;
}

void nke_inject_plan_sent(struct nke_inject_plan *p, uint32_t len)
{
    p->done = len > p->total - p->done ? p->total : p->done + len;
    p->control = 0; /* went with the first slice */
    p->waits = 0;
}

uint32_t nke_inject_plan_no_room(struct nke_inject_plan *p)
{
    uint32_t shift = p->waits < 16u ? p->waits : 16u;
    uint32_t ms = NKE_INJECT_RETRY_MIN_MS << shift;
    if (p->waits < UINT32_MAX)
        p->waits++;
    return ms < NKE_INJECT_RETRY_MAX_MS ? ms : NKE_INJECT_RETRY_MAX_MS;
}

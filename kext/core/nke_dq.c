/*
 * Notification queue in the IODataQueueMemory layout (see nke_core.h).
 *
 * Algorithm of IOSharedDataQueue (facts, not code): an entry is a 4-byte size
 * followed by the data; the producer appends at tail, and when the entry does
 * not fit before the end of the entry space it writes it at offset 0 instead,
 * leaving the entry size at the old tail (when a header fits there) so the
 * consumer sees that the entry at head runs past the end and wraps too. The
 * producer never lets tail catch up with head from behind (strict `>`
 * comparisons), so head == tail always means empty.
 *
 * Ownership and ordering: one producer (the filter, under the platform lock)
 * and one consumer (the user client). `tail` is written only by the producer
 * (store-release after the entry bytes), `head` only by the consumer
 * (store-release after it copied the entry out). Each side reads the other's
 * index with load-acquire. Neither side trusts queue_size in shared memory:
 * both use the data_size they allocated or were told at open.
 */
#include "nke_core.h"

#include <string.h>

/* Entry bytes as stored: header + data, rounded up to 4. Computed in 64 bits
 * so a forged or huge size cannot wrap around. */
static uint64_t dq_entry_span(uint64_t len)
{
    return (NKE_DQ_ENTRY_HEADER_SIZE + len + 3u) & ~(uint64_t)3u;
}

static uint8_t *dq_base(struct nke_dq_memory *q)
{
    return (uint8_t *)q + NKE_DQ_MEMORY_HEADER_SIZE;
}

static uint32_t dq_load_size(const uint8_t *at)
{
    /* The other side may be writing this word: read it once, atomically. */
    return __atomic_load_n((const uint32_t *)(const void *)at, __ATOMIC_RELAXED);
}

static void dq_store_size(uint8_t *at, uint32_t v)
{
    __atomic_store_n((uint32_t *)(void *)at, v, __ATOMIC_RELAXED);
}

void nke_dq_init(struct nke_dq_memory *q, uint32_t data_size)
{
    q->queue_size = data_size;
    __atomic_store_n(&q->head, 0u, __ATOMIC_RELAXED);
    __atomic_store_n(&q->tail, 0u, __ATOMIC_RELEASE);
}

int nke_dq_enqueue(struct nke_dq_memory *q, uint32_t data_size, const void *data, uint32_t len,
                   bool *was_empty)
{
    uint8_t *base = dq_base(q);
    uint64_t span = dq_entry_span(len);
    /* head comes from the consumer: acquire so its copy-out of the entries we
     * may now overwrite is complete. A forged head beyond the end is treated
     * as "full" (we never write based on it) rather than trusted. */
    uint32_t head = __atomic_load_n(&q->head, __ATOMIC_ACQUIRE);
    uint32_t tail = __atomic_load_n(&q->tail, __ATOMIC_RELAXED);
    uint32_t new_tail;
    uint32_t at;

    if (was_empty)
        *was_empty = false;
    if ((data_size & 3u) != 0 || head > data_size || tail > data_size || (tail & 3u) != 0 ||
        span > data_size)
        return NKE_ERR_NO_MEMORY;

    if (tail >= head) {
        if (tail + span <= data_size) {
            at = tail;
            new_tail = (uint32_t)(tail + span);
        } else if (head > span) {
            /* Wrap: entry goes to 0; mark the old tail so the consumer wraps. */
            at = 0;
            new_tail = (uint32_t)span;
            if (data_size - tail >= NKE_DQ_ENTRY_HEADER_SIZE)
                dq_store_size(base + tail, len);
        } else {
            return NKE_ERR_NO_MEMORY;
        }
    } else {
        /* Strictly greater: tail must never become equal to head (= empty). */
        if ((uint64_t)(head - tail) > span) {
            at = tail;
            new_tail = (uint32_t)(tail + span);
        } else {
            return NKE_ERR_NO_MEMORY;
        }
    }

    dq_store_size(base + at, len);
    if (len)
        memcpy(base + at + NKE_DQ_ENTRY_HEADER_SIZE, data, len);
    /* Publish: the entry bytes above become visible before the new tail. */
    __atomic_store_n(&q->tail, new_tail, __ATOMIC_RELEASE);

    if (was_empty) {
        /* The consumer sleeps only when it saw head == tail; wake it when the
         * queue was empty before this entry, or it drained meanwhile.
         * Full fence: our tail store must be visible before we read head,
         * pairing with the consumer's fence between its head store and its
         * next tail load. Release/acquire alone let both stores sit in store
         * buffers (x86 reorders a store with a later load): the consumer
         * then sees the old tail (empty, sleeps) while we see its old head
         * (not drained, no wakeup), and nothing wakes it again. */
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        uint32_t head_now = __atomic_load_n(&q->head, __ATOMIC_ACQUIRE);
        *was_empty = (tail == head) || (head_now == tail);
    }
    return NKE_OK;
}

int nke_dq_dequeue(struct nke_dq_memory *q, uint32_t data_size, void *out, uint32_t cap,
                   uint32_t *len)
{
    uint8_t *base = dq_base(q);
    uint32_t head = __atomic_load_n(&q->head, __ATOMIC_RELAXED);
    /* Full fence: the head stored by the previous dequeue is visible before
     * tail is read (pairs with the producer's fence in nke_dq_enqueue, so an
     * empty result here and a missed wakeup there cannot both happen). */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    /* Acquire: entries up to tail were fully written before tail was stored. */
    uint32_t tail = __atomic_load_n(&q->tail, __ATOMIC_ACQUIRE);
    uint32_t at, size;
    uint64_t end;

    if (len)
        *len = 0;
    if ((data_size & 3u) != 0 || data_size < NKE_DQ_ENTRY_HEADER_SIZE)
        return NKE_DQ_CORRUPT;
    if (head > data_size || tail > data_size || (head & 3u) != 0 || (tail & 3u) != 0)
        return NKE_DQ_CORRUPT;
    if (head == tail)
        return NKE_DQ_EMPTY;

    at = head;
    size = 0;
    end = 0;
    if ((uint64_t)head + NKE_DQ_ENTRY_HEADER_SIZE <= data_size) {
        size = dq_load_size(base + head);
        end = (uint64_t)head + dq_entry_span(size);
    }
    if ((uint64_t)head + NKE_DQ_ENTRY_HEADER_SIZE > data_size || end > data_size) {
        /* The entry at head does not fit before the end: the producer put it
         * at 0. Only possible when the producer has wrapped (tail < head). */
        if (tail >= head)
            return NKE_DQ_CORRUPT;
        at = 0;
        size = dq_load_size(base);
        end = dq_entry_span(size);
        if (end > tail)
            return NKE_DQ_CORRUPT;
    } else if (tail > head && end > tail) {
        /* Not wrapped: the entry must lie between head and tail. */
        return NKE_DQ_CORRUPT;
    }

    if (size > cap) {
        /* Too big for the caller: skip it so the queue keeps moving. */
        __atomic_store_n(&q->head, (uint32_t)end, __ATOMIC_RELEASE);
        if (len)
            *len = size;
        return NKE_DQ_TOOBIG;
    }
    if (size)
        memcpy(out, base + at + NKE_DQ_ENTRY_HEADER_SIZE, size);
    if (len)
        *len = size;
    /* Release: our copy is done before the producer may reuse the space. */
    __atomic_store_n(&q->head, (uint32_t)end, __ATOMIC_RELEASE);
    return NKE_DQ_OK;
}

/*
 * Fuzz target: the notification queue against a hostile other side.
 *
 * Input: [u16 data_size/4][u32 head][u32 tail][ops...][entry bytes...]. The
 * queue is allocated at exactly its mapping size so ASan reports any access
 * outside it. Both directions are attacked: the consumer (client) reads a
 * forged queue, and the producer (kernel) enqueues against a head forged by
 * the client. Invariants: results are one of the documented values, reported
 * sizes fit the caller's buffer, and head/tail we write stay in range.
 */
#include "nke_core.h"

#include <stdlib.h>
#include <string.h>

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint16_t ds4;
    uint32_t ds, head, tail, len, i;
    struct nke_dq_memory *q;
    uint8_t *base, out[256];
    const uint8_t *ops;
    size_t nops;

    if (size < 10)
        return 0;
    memcpy(&ds4, data, 2);
    ds = 4u * (1u + ds4 % 512u); /* 4..2048, what the consumer trusts */
    memcpy(&head, data + 2, 4);
    memcpy(&tail, data + 6, 4);
    data += 10;
    size -= 10;
    nops = size < 16 ? size : 16;
    ops = data;
    data += nops;
    size -= nops;

    q = (struct nke_dq_memory *)malloc(NKE_DQ_MEMORY_HEADER_SIZE + ds);
    base = (uint8_t *)q + NKE_DQ_MEMORY_HEADER_SIZE;
    memset(base, 0, ds);
    memcpy(base, data, size < ds ? size : ds);
    q->queue_size = 0xFFFFFFFFu; /* forged: must be ignored */
    q->head = head;
    q->tail = tail;

    for (i = 0; i < nops; i++) {
        uint8_t op = ops[i];
        if (op & 0x80) {
            /* producer step with a forged head/tail */
            uint32_t n = op & 0x7Fu;
            uint32_t t0 = q->tail;
            bool was_empty;
            int r = nke_dq_enqueue(q, ds, out, n, &was_empty);
            REQUIRE(r == NKE_OK || r == NKE_ERR_NO_MEMORY);
            if (r == NKE_OK)
                REQUIRE(q->tail <= ds && q->tail != q->head);
            else
                REQUIRE(q->tail == t0);
        } else {
            uint32_t cap = (uint32_t)op * 2u;
            int r = nke_dq_dequeue(q, ds, out, cap, &len);
            REQUIRE(r == NKE_DQ_OK || r == NKE_DQ_EMPTY || r == NKE_DQ_CORRUPT || r == NKE_DQ_TOOBIG);
            if (r == NKE_DQ_OK)
                REQUIRE(len <= cap && q->head <= ds);
            if (r == NKE_DQ_TOOBIG)
                REQUIRE(len > cap && q->head <= ds);
            if (r == NKE_DQ_CORRUPT && (ops[i] & 1)) {
                /* a client that resets after corruption gets a working queue */
                nke_dq_init(q, ds);
            }
        }
    }
    free(q);
    return 0;
}

/*
 * Buffer pool: which chunk owns each shared data buffer.
 *
 * Caller holds the platform lock (see nke_core.h). `owner[i]` is the id of
 * the chunk whose data sits in buffer i, 0 when the buffer is free; chunk ids
 * start at 1, so 0 is never a real owner. Free buffers are kept on a stack so
 * alloc and free are O(1) and the pool never scans.
 */
#include "nke_core.h"

void nke_pool_init(struct nke_pool *p)
{
    uint32_t i;
    for (i = 0; i < NKE_BUFFER_COUNT; i++) {
        p->owner[i] = 0;
        /* Lowest index on top: buffer 0 is handed out first (easier to read in traces). */
        p->free_stack[i] = (uint16_t)(NKE_BUFFER_COUNT - 1u - i);
    }
    p->nfree = NKE_BUFFER_COUNT;
}

int nke_pool_alloc(struct nke_pool *p, uint64_t chunk_id, uint32_t n,
                   uint16_t out[NKE_CHUNK_MAX_BUFFERS])
{
    uint32_t i;
    if (chunk_id == 0 || n == 0 || n > NKE_CHUNK_MAX_BUFFERS)
        return NKE_ERR_SIZE;
    /* All or none: check before taking anything. */
    if (p->nfree < n)
        return NKE_ERR_NO_MEMORY;
    for (i = 0; i < n; i++) {
        uint16_t b = p->free_stack[--p->nfree];
        p->owner[b] = chunk_id;
        out[i] = b;
    }
    for (; i < NKE_CHUNK_MAX_BUFFERS; i++)
        out[i] = NKE_BUF_NONE;
    return NKE_OK;
}

int nke_pool_check(const struct nke_pool *p, uint64_t chunk_id, uint32_t buf)
{
    if (buf >= NKE_BUFFER_COUNT)
        return NKE_ERR_BUF_RANGE;
    if (p->owner[buf] == 0)
        return NKE_ERR_BUF_DOUBLE;
    if (p->owner[buf] != chunk_id)
        return NKE_ERR_BUF_FOREIGN;
    return NKE_OK;
}

int nke_pool_free(struct nke_pool *p, uint16_t buf)
{
    if (buf >= NKE_BUFFER_COUNT)
        return NKE_ERR_BUF_RANGE;
    if (p->owner[buf] == 0 || p->nfree >= NKE_BUFFER_COUNT)
        return NKE_ERR_BUF_DOUBLE;
    p->owner[buf] = 0;
    p->free_stack[p->nfree++] = buf;
    return NKE_OK;
}

uint32_t nke_pool_in_use(const struct nke_pool *p)
{
    return NKE_BUFFER_COUNT - p->nfree;
}

/*
 * com_nkeworkbench_Filter: sets up the kext in order and unwinds in reverse.
 *
 * Order (start): locks, shared buffers, socket table, core, kev vendor code
 * and mbuf tag, the injector thread, timer, kauth listener, and the four
 * sflt handles last, so no callback ever runs before what it uses exists
 * (nothing enqueues a re-injection before the injector runs). stop()
 * undoes it backwards: no callback, no kauth callback and no timer firing
 * is left when the injector is stopped, and the injector is gone before
 * the core and the locks are freed.
 */
#include "nke_service.h"

#include <IOKit/IOLib.h>
#include <IOKit/IOSubMemoryDescriptor.h>
#include <libkern/OSAtomic.h>
#include <sys/kern_event.h>
#include <sys/errno.h>

#define super IOService
OSDefineMetaClassAndStructors(com_nkeworkbench_Filter, IOService)

extern "C" bool nke_kext_queue_enqueue_locked(void *queue, const void *rec, uint32_t size)
{
    /* enqueue notifies the client's port on empty -> non-empty */
    return static_cast<IOSharedDataQueue *>(queue)->enqueue(const_cast<void *>(rec), size);
}

bool com_nkeworkbench_Filter::start(IOService *provider)
{
    errno_t err;
    stage_ = kNone;
    buffers_ = NULL;
    bzero(buffer_parts_, sizeof(buffer_parts_));
    owner_ = NULL;
    sessions_ = 0;
    bzero(&g_nke, sizeof(g_nke));

    if (!super::start(provider))
        return false;

    g_nke.lck_grp = lck_grp_alloc_init(NKE_BUNDLE_ID, LCK_GRP_ATTR_NULL);
    if (g_nke.lck_grp == NULL)
        goto fail;
    g_nke.lock = lck_mtx_alloc_init(g_nke.lck_grp, LCK_ATTR_NULL);
    g_nke.inject_lock = lck_mtx_alloc_init(g_nke.lck_grp, LCK_ATTR_NULL);
    stage_ = kLocks;
    if (g_nke.lock == NULL || g_nke.inject_lock == NULL)
        goto fail;

    /* Shared with the client: mapped through clientMemoryForType. */
    buffers_ = IOBufferMemoryDescriptor::withOptions(kIODirectionInOut | kIOMemoryKernelUserShared,
                                                     NKE_BUFFER_COUNT * NKE_BUFFER_SIZE, PAGE_SIZE);
    if (buffers_ == NULL)
        goto fail;
    bzero(buffers_->getBytesNoCopy(), NKE_BUFFER_COUNT * NKE_BUFFER_SIZE);
    stage_ = kBuffers;
    for (uint32_t i = 0; i < NKE_BUFFER_COUNT; i++) {
        buffer_parts_[i] = IOSubMemoryDescriptor::withSubRange(buffers_, i * NKE_BUFFER_SIZE,
                                                               NKE_BUFFER_SIZE, kIODirectionInOut);
        if (buffer_parts_[i] == NULL)
            goto fail;
    }

    g_nke.socks = static_cast<struct nke_sock *>(IOMalloc(sizeof(struct nke_sock) * NKE_SOCK_TABLE_SIZE));
    if (g_nke.socks == NULL)
        goto fail;
    bzero(g_nke.socks, sizeof(struct nke_sock) * NKE_SOCK_TABLE_SIZE);
    stage_ = kSockets;

    g_nke.core = static_cast<struct nke_core *>(IOMalloc(sizeof(struct nke_core)));
    if (g_nke.core == NULL)
        goto fail;
    bzero(g_nke.core, sizeof(struct nke_core));
    g_nke.kev_msg_limit = (uint32_t)mbuf_get_mlen();
    stage_ = kCore;

    /* The vendor code is what event sockets filter on; without it exec
     * events are off but the filter still works (logged, fail-open). */
    if (kev_vendor_code_find(NKE_KEV_VENDOR, &g_nke.kev_vendor_code) != 0) {
        IOLog("nke: kev_vendor_code_find failed: exec events disabled\n");
        g_nke.kev_vendor_code = 0;
    }
    err = mbuf_tag_id_find(NKE_BUNDLE_ID, &g_nke.tag_id);
    if (err) {
        IOLog("nke: mbuf_tag_id_find failed: %d\n", err);
        goto fail;
    }
    nke_core_init(g_nke.core, &nke_kext_core_ops, this,
                  static_cast<uint8_t *>(buffers_->getBytesNoCopy()), g_nke.socks,
                  NKE_SOCK_TABLE_SIZE, g_nke.kev_vendor_code, g_nke.kev_msg_limit);
    stage_ = kKev;

    if (nke_inject_start() != 0) {
        IOLog("nke: kernel_thread_start (injector) failed\n");
        goto fail;
    }
    stage_ = kInjector;

    g_nke.timer = thread_call_allocate(nke_kext_timer_fire, NULL);
    if (g_nke.timer == NULL)
        goto fail;
    stage_ = kTimer;

    if (nke_kauth_start() != 0) {
        IOLog("nke: kauth_listen_scope failed\n");
        goto fail;
    }
    stage_ = kKauth;

    err = nke_sflt_register_all();
    if (err) {
        IOLog("nke: sflt_register failed: %d\n", err);
        goto fail;
    }
    stage_ = kFilters;

    registerService(); /* user clients can find us only now */
    IOLog("nke: started (kev vendor %u, MLEN %u)\n", g_nke.kev_vendor_code, g_nke.kev_msg_limit);
    return true;

fail:
    unwind(stage_);
    super::stop(provider);
    return false;
}

/* Undoes every stage up to `reached`, newest first. */
void com_nkeworkbench_Filter::unwind(Stage reached)
{
    switch (reached) {
    case kFilters:
        nke_sflt_unregister_begin();
        nke_sflt_wait_unregistered();
        /* fall through */
    case kKauth:
        nke_kauth_stop(); /* drains running callbacks */
        /* fall through */
    case kTimer:
        lck_mtx_lock(g_nke.lock);
        g_nke.timer_stopping = true; /* a firing in progress does not re-arm */
        lck_mtx_unlock(g_nke.lock);
        /* thread_call_cancel_wait returns TRUE when it dequeued a pending
         * call, and then does not wait for one running at the same time
         * (osfmk/kern/thread_call.c); only FALSE means nothing is queued
         * and nothing runs. thread_call_free refuses a queued call. */
        do {
            while (thread_call_cancel_wait(g_nke.timer)) {
            }
        } while (!thread_call_free(g_nke.timer));
        g_nke.timer = NULL;
        /* fall through */
    case kInjector:
        nke_inject_stop(); /* waits for what is kept or running, then joins */
        /* fall through */
    case kKev:
        /* nothing to give back: vendor codes and tag ids live until reboot */
        /* fall through */
    case kCore:
        IOFree(g_nke.core, sizeof(struct nke_core));
        g_nke.core = NULL;
        /* fall through */
    case kSockets:
        IOFree(g_nke.socks, sizeof(struct nke_sock) * NKE_SOCK_TABLE_SIZE);
        g_nke.socks = NULL;
        /* fall through */
    case kBuffers:
        for (uint32_t i = 0; i < NKE_BUFFER_COUNT; i++) {
            if (buffer_parts_[i] != NULL)
                buffer_parts_[i]->release();
            buffer_parts_[i] = NULL;
        }
        buffers_->release();
        buffers_ = NULL;
        /* fall through */
    case kLocks:
        if (g_nke.lock != NULL)
            lck_mtx_free(g_nke.lock, g_nke.lck_grp);
        if (g_nke.inject_lock != NULL)
            lck_mtx_free(g_nke.inject_lock, g_nke.lck_grp);
        g_nke.lock = NULL;
        g_nke.inject_lock = NULL;
        /* fall through */
    case kNone:
        if (g_nke.lck_grp)
            lck_grp_free(g_nke.lck_grp);
        g_nke.lck_grp = NULL;
        break;
    }
    stage_ = kNone;
}

bool com_nkeworkbench_Filter::terminate(IOOptionBits options)
{
    if (stage_ == kFilters) {
        bool busy;
        uint32_t items = 0, drainers = 0;
        lck_mtx_lock(g_nke.lock);
        busy = g_nke.core->client_open;
        if (!busy)
            g_nke.unloading = true; /* no new client from now on */
        lck_mtx_unlock(g_nke.lock);
        if (busy) {
            IOLog("nke: unload refused (EBUSY): a client is connected\n");
            return false;
        }
        /* With no client nothing is held, but bytes released earlier may
         * still be on their way back into the stack (a slow peer), and a
         * drainer may be inside sock_inject_data_*: the core, the locks and
         * our code must outlive them. */
        nke_inject_busy(&items, &drainers);
        if (items > 0 || drainers > 0) {
            IOLog("nke: unload refused (EBUSY): %u re-injections pending, %u running\n", items,
                  drainers);
            return false;
        }
        /* sflt_unregister detaches the filter from every socket at once
         * (XNU's cleanup thread calls sf_detach for each); sf_unregistered
         * follows when the last callback in progress has returned. Until
         * then: EBUSY, and the next attempt usually succeeds. */
        nke_sflt_unregister_begin();
        if (g_nke.filters_registered > 0) {
            IOLog("nke: unload refused (EBUSY): %d filters wait for their callbacks to return "
                  "(%d sockets still attached)\n",
                  (int)g_nke.filters_registered, (int)g_nke.sockets_attached);
            return false;
        }
    }
    return super::terminate(options);
}

void com_nkeworkbench_Filter::stop(IOService *provider)
{
    /* terminate() let us get here only with no client, nothing to
     * re-inject and every filter unregistered; unwind waits for the rest
     * (kauth callbacks, the timer, the injector thread). */
    unwind(stage_);
    super::stop(provider);
}

int com_nkeworkbench_Filter::clientOpen(com_nkeworkbench_FilterClient *client,
                                        IOSharedDataQueue *queue,
                                        const struct nke_open_request *req,
                                        struct nke_open_reply *reply)
{
    int r;
    lck_mtx_lock(g_nke.lock);
    if (g_nke.unloading || owner_ != NULL) {
        /* unloading: the filters are going away; owner_: one client at a time */
        r = NKE_ERR_BUSY;
    } else {
        r = nke_core_client_open(g_nke.core, req, reply, ++sessions_ ^ (nke_kext_now_ns() << 16));
        if (r == NKE_OK) {
            owner_ = client;
            g_nke.queue = queue;
            g_nke.last_state_ms = nke_kext_now_ms();
            nke_kext_timer_arm_locked(NKE_STATE_PERIOD_MS);
        }
    }
    lck_mtx_unlock(g_nke.lock);
    return r;
}

bool com_nkeworkbench_Filter::isOwner(com_nkeworkbench_FilterClient *client)
{
    bool r;
    lck_mtx_lock(g_nke.lock);
    r = owner_ == client;
    lck_mtx_unlock(g_nke.lock);
    return r;
}

void com_nkeworkbench_Filter::clientGone(com_nkeworkbench_FilterClient *client)
{
    lck_mtx_lock(g_nke.lock);
    if (owner_ == client) {
        /* Fail-open: every held chunk re-injected (queued), buffers freed,
         * capture back to NOTHING. Its CHUNK_RELEASED records go to a queue
         * nobody reads any more, which is harmless. */
        nke_core_client_close(g_nke.core);
        owner_ = NULL;
        g_nke.queue = NULL; /* the client releases its queue after this */
    }
    lck_mtx_unlock(g_nke.lock);
    /* what client_close released is the injector's now */
}

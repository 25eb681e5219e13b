/*
 * com_nkeworkbench_FilterClient: the user client. Administrator (euid 0)
 * only; one open client at a time (the core refuses a second with
 * NKE_ERR_BUSY). Inputs are checked for size here and validated field by
 * field by the core; errors come back as NKE_IORETURN(nke_error).
 */
#include "nke_service.h"

#include <IOKit/IOLib.h>

#define super IOUserClient
OSDefineMetaClassAndStructors(com_nkeworkbench_FilterClient, IOUserClient)

bool com_nkeworkbench_FilterClient::initWithTask(task_t owningTask, void *securityID, UInt32 type)
{
    task_ = NULL;
    filter_ = NULL;
    queue_ = NULL;
    queue_memory_ = NULL;
    closed_ = false;
    if (clientHasPrivilege(owningTask, kIOClientPrivilegeAdministrator) != kIOReturnSuccess) {
        IOLog("nke: user client refused: not an administrator (euid 0 required)\n");
        return false;
    }
    if (!super::initWithTask(owningTask, securityID, type))
        return false;
    task_ = owningTask;
    return true;
}

bool com_nkeworkbench_FilterClient::start(IOService *provider)
{
    filter_ = OSDynamicCast(com_nkeworkbench_Filter, provider);
    if (filter_ == NULL || !super::start(provider))
        return false;
    /* Our own queue: a reconnecting client never sees a predecessor's entries. */
    queue_ = IOSharedDataQueue::withCapacity(NKE_QUEUE_DATA_SIZE);
    if (queue_ != NULL)
        queue_memory_ = queue_->getMemoryDescriptor(); /* +1: ours until free() */
    if (queue_ == NULL || queue_memory_ == NULL) {
        if (queue_ != NULL)
            queue_->release();
        queue_ = NULL;
        super::stop(provider);
        return false;
    }
    filter_->retain();
    return true;
}

void com_nkeworkbench_FilterClient::release_all()
{
    if (filter_ != NULL)
        filter_->clientGone(this); /* no-op unless we are the open client */
}

void com_nkeworkbench_FilterClient::stop(IOService *provider)
{
    release_all();
    if (filter_) {
        filter_->release();
        filter_ = NULL;
    }
    super::stop(provider);
}

void com_nkeworkbench_FilterClient::free()
{
    /* the filter no longer enqueues to it: clientGone cleared g_nke.queue */
    if (queue_memory_) {
        queue_memory_->release();
        queue_memory_ = NULL;
    }
    if (queue_) {
        queue_->release();
        queue_ = NULL;
    }
    super::free();
}

IOReturn com_nkeworkbench_FilterClient::clientClose()
{
    if (!closed_) {
        closed_ = true;
        release_all();
        terminate(); /* detach from the provider; stop() follows */
    }
    return kIOReturnSuccess;
}

IOReturn com_nkeworkbench_FilterClient::clientDied()
{
    /* The base clientDied calls clientClose once: the same release path. */
    return super::clientDied();
}

IOReturn com_nkeworkbench_FilterClient::registerNotificationPort(mach_port_t port, UInt32 type,
                                                                 UInt32 refCon)
{
    if (type != NKE_MEM_QUEUE || queue_ == NULL)
        return kIOReturnBadArgument;
    /* setNotificationPort writes the queue's appendix, which enqueue reads */
    lck_mtx_lock(g_nke.lock);
    queue_->setNotificationPort(port);
    lck_mtx_unlock(g_nke.lock);
    return kIOReturnSuccess;
}

IOReturn com_nkeworkbench_FilterClient::clientMemoryForType(UInt32 type, IOOptionBits *options,
                                                            IOMemoryDescriptor **memory)
{
    IOMemoryDescriptor *md = NULL;
    if (filter_ == NULL || queue_ == NULL)
        return kIOReturnNotReady;
    if (type == NKE_MEM_QUEUE) {
        md = queue_memory_;
        md->retain();
    } else {
        /* data buffers: only to the open client (they hold other processes' data) */
        if (!filter_->isOwner(this))
            return NKE_IORETURN(NKE_ERR_NOT_OPEN);
        if (type == NKE_MEM_BUFFER_POOL) {
            md = filter_->buffers();
            md->retain();
        } else if (type >= NKE_MEM_BUFFER_BASE && type < NKE_MEM_BUFFER_BASE + NKE_BUFFER_COUNT) {
            md = filter_->bufferDescriptor(type - NKE_MEM_BUFFER_BASE);
            md->retain();
        } else {
            return kIOReturnBadArgument;
        }
    }
    if (md == NULL)
        return kIOReturnNoMemory;
    *options = 0;
    *memory = md; /* the caller consumes this reference */
    return kIOReturnSuccess;
}

IOReturn com_nkeworkbench_FilterClient::methodOpen(IOExternalMethodArguments *args)
{
    struct nke_open_request req;
    struct nke_open_reply reply;
    int r;
    if (args->structureInputSize != sizeof(req) || args->structureOutputSize < sizeof(reply))
        return NKE_IORETURN(NKE_ERR_SIZE);
    memcpy(&req, args->structureInput, sizeof(req));
    bzero(&reply, sizeof(reply));
    r = filter_->clientOpen(this, queue_, &req, &reply);
    if (r != NKE_OK)
        return NKE_IORETURN(r);
    memcpy(args->structureOutput, &reply, sizeof(reply));
    args->structureOutputSize = sizeof(reply);
    return kIOReturnSuccess;
}

IOReturn com_nkeworkbench_FilterClient::methodGetState(IOExternalMethodArguments *args)
{
    struct nke_filter_state st;
    if (args->structureOutputSize < sizeof(st))
        return NKE_IORETURN(NKE_ERR_SIZE);
    lck_mtx_lock(g_nke.lock);
    nke_core_get_state(g_nke.core, &st);
    lck_mtx_unlock(g_nke.lock);
    memcpy(args->structureOutput, &st, sizeof(st));
    args->structureOutputSize = sizeof(st);
    return kIOReturnSuccess;
}

/* RESPOND, PUT_DATA, SET_CAPTURE: variable-size struct input, inline up to
 * 4096 bytes, else in structureInputDescriptor (copied to kernel memory so
 * the client cannot change it while the core validates it). */
IOReturn com_nkeworkbench_FilterClient::methodWithInput(uint32_t selector,
                                                        IOExternalMethodArguments *args)
{
    uint32_t min, max, size, prealloc_total = 0;
    const void *in;
    void *copy = NULL, *prealloc = NULL;
    int r;

    switch (selector) {
    case NKE_SEL_RESPOND:
        min = sizeof(struct nke_response_hdr);
        max = (uint32_t)NKE_RESPONSE_MAX_SIZE;
        break;
    case NKE_SEL_PUT_DATA:
        min = sizeof(struct nke_put_data_hdr);
        max = sizeof(struct nke_put_data_hdr) + NKE_PUT_DATA_MAX_PIECE;
        break;
    default: /* NKE_SEL_SET_CAPTURE */
        min = offsetof(struct nke_capture_config, rules);
        max = sizeof(struct nke_capture_config);
        break;
    }
    if (args->structureInputDescriptor != NULL) {
        IOMemoryDescriptor *d = args->structureInputDescriptor;
        uint64_t len = d->getLength();
        if (len < min || len > max)
            return NKE_IORETURN(NKE_ERR_SIZE);
        size = (uint32_t)len;
        copy = IOMalloc(size);
        if (copy == NULL)
            return NKE_IORETURN(NKE_ERR_NO_MEMORY);
        if (d->prepare() != kIOReturnSuccess) {
            IOFree(copy, size);
            return kIOReturnVMError;
        }
        if (d->readBytes(0, copy, size) != size) {
            d->complete();
            IOFree(copy, size);
            return kIOReturnVMError;
        }
        d->complete();
        in = copy;
    } else {
        size = args->structureInputSize;
        if (size < min || size > max)
            return NKE_IORETURN(NKE_ERR_SIZE);
        in = args->structureInput;
    }

    /* A put_data piece at offset 0 starts a staging of total_len bytes (up
     * to NKE_MODIFIED_MAX_LEN): allocated here, before g_nke.lock, so the
     * data path never waits for a large IOMalloc; the stage op takes it,
     * and what it did not take is freed after the lock. */
    if (selector == NKE_SEL_PUT_DATA) {
        struct nke_put_data_hdr ph;
        memcpy(&ph, in, sizeof(ph));
        if (ph.offset == 0 && ph.total_len <= NKE_MODIFIED_MAX_LEN) {
            prealloc_total = ph.total_len;
            prealloc = IOMalloc(sizeof(struct nke_staged) + prealloc_total);
        }
    }

    lck_mtx_lock(g_nke.lock);
    switch (selector) {
    case NKE_SEL_RESPOND:
        /* NKE_ACT_EXTEND only moves deadlines later (capped at
         * NKE_HOLD_TOTAL_MAX_MS): the timer armed for the earlier one finds
         * nothing due and re-arms itself from nke_core_expire. */
        r = nke_core_respond(g_nke.core, in, size);
        break;
    case NKE_SEL_PUT_DATA:
        g_nke.stage_prealloc = prealloc;
        g_nke.stage_prealloc_total = prealloc_total;
        r = nke_core_put_data(g_nke.core, in, size);
        prealloc = g_nke.stage_prealloc; /* NULL when the stage op took it */
        g_nke.stage_prealloc = NULL;
        break;
    default: {
        /* a short config is allowed (rules past nrules omitted): pad it */
        struct nke_capture_config *cfg =
            static_cast<struct nke_capture_config *>(IOMalloc(sizeof(struct nke_capture_config)));
        if (cfg == NULL) {
            r = NKE_ERR_NO_MEMORY;
            break;
        }
        bzero(cfg, sizeof(*cfg));
        memcpy(cfg, in, size);
        r = nke_core_set_capture(g_nke.core, cfg, size);
        IOFree(cfg, sizeof(*cfg));
        if (r == NKE_OK) /* a shorter hold timeout may move the next deadline */
            nke_kext_timer_arm_locked(nke_core_expire(g_nke.core, nke_kext_now_ms(),
                                                      nke_kext_now_ns()));
        break;
    }
    }
    lck_mtx_unlock(g_nke.lock);
    if (prealloc)
        IOFree(prealloc, sizeof(struct nke_staged) + prealloc_total);
    if (copy)
        IOFree(copy, size);
    /* verdicts were only queued (the core's finish op): the injector re-injects */
    return NKE_IORETURN(r);
}

IOReturn com_nkeworkbench_FilterClient::externalMethod(uint32_t selector,
                                                       IOExternalMethodArguments *args,
                                                       IOExternalMethodDispatch *dispatch,
                                                       OSObject *target, void *reference)
{
    if (filter_ == NULL || closed_)
        return kIOReturnNotAttached;
    /* struct methods only: scalar arguments are a malformed call */
    if (args->scalarInputCount != 0 || args->scalarOutputCount != 0)
        return NKE_IORETURN(NKE_ERR_SIZE);
    /* Who may call what: the ABI's one contract, nke-emud's too (nke_abi.h) */
    int allowed = nke_core_selector_check(selector, filter_->isOwner(this));
    if (allowed != NKE_OK)
        return NKE_IORETURN(allowed);
    switch (selector) {
    case NKE_SEL_OPEN:
        return methodOpen(args);
    case NKE_SEL_GET_STATE:
        return methodGetState(args);
    default: /* RESPOND, PUT_DATA, SET_CAPTURE */
        return methodWithInput(selector, args);
    }
}

/*
 * The IOService (class NKE_SERVICE_CLASS, matched on IOResources) and its
 * IOUserClient. The service owns everything kernel-wide (g_nke); the user
 * client owns its notification queue and forwards methods to the core.
 */
#ifndef NKE_SERVICE_H
#define NKE_SERVICE_H

#include <IOKit/IOService.h>
#include <IOKit/IOUserClient.h>
#include <IOKit/IOBufferMemoryDescriptor.h>
#include <IOKit/IOSharedDataQueue.h>

#include "nke_kext.h"

class com_nkeworkbench_FilterClient;

class com_nkeworkbench_Filter : public IOService {
    OSDeclareDefaultStructors(com_nkeworkbench_Filter)

public:
    bool start(IOService *provider) APPLE_KEXT_OVERRIDE;
    void stop(IOService *provider) APPLE_KEXT_OVERRIDE;
    /* Refuses (EBUSY, logged) while a client is open, re-injections are
     * kept or running, or sockets still hold our callbacks; once nothing
     * else is busy it starts unregistering the filters. */
    bool terminate(IOOptionBits options = 0) APPLE_KEXT_OVERRIDE;

    /* User client entry points; each takes g_nke.lock itself. */
    int clientOpen(com_nkeworkbench_FilterClient *client, IOSharedDataQueue *queue,
                   const struct nke_open_request *req, struct nke_open_reply *reply);
    void clientGone(com_nkeworkbench_FilterClient *client);
    bool isOwner(com_nkeworkbench_FilterClient *client);
    IOBufferMemoryDescriptor *buffers() const { return buffers_; }
    /* Data buffer i alone (NKE_MEM_BUFFER_BASE + i), made once in start:
     * IOConnectUnmapMemory finds a mapping by its descriptor, so every
     * clientMemoryForType of one type must hand out the same one. */
    IOMemoryDescriptor *bufferDescriptor(uint32_t i) const { return buffer_parts_[i]; }

private:
    enum Stage {
        kNone, kLocks, kBuffers, kSockets, kCore, kKev, kInjector, kTimer, kKauth, kFilters
    };
    void unwind(Stage reached);

    Stage stage_;
    IOBufferMemoryDescriptor *buffers_;      /* set in start, freed in stop */
    IOMemoryDescriptor *buffer_parts_[NKE_BUFFER_COUNT]; /* sub-ranges of buffers_, same lifetime */
    com_nkeworkbench_FilterClient *owner_;   /* the open client, not retained; g_nke.lock */
    uint64_t sessions_;                      /* g_nke.lock */
};

class com_nkeworkbench_FilterClient : public IOUserClient {
    OSDeclareDefaultStructors(com_nkeworkbench_FilterClient)

public:
    bool initWithTask(task_t owningTask, void *securityID, UInt32 type) APPLE_KEXT_OVERRIDE;
    bool start(IOService *provider) APPLE_KEXT_OVERRIDE;
    void stop(IOService *provider) APPLE_KEXT_OVERRIDE;
    void free() APPLE_KEXT_OVERRIDE;
    IOReturn clientClose() APPLE_KEXT_OVERRIDE;
    IOReturn clientDied() APPLE_KEXT_OVERRIDE;
    IOReturn externalMethod(uint32_t selector, IOExternalMethodArguments *args,
                            IOExternalMethodDispatch *dispatch, OSObject *target,
                            void *reference) APPLE_KEXT_OVERRIDE;
    IOReturn clientMemoryForType(UInt32 type, IOOptionBits *options,
                                 IOMemoryDescriptor **memory) APPLE_KEXT_OVERRIDE;
    IOReturn registerNotificationPort(mach_port_t port, UInt32 type,
                                      UInt32 refCon) APPLE_KEXT_OVERRIDE;

private:
    IOReturn methodOpen(IOExternalMethodArguments *args);
    IOReturn methodWithInput(uint32_t selector, IOExternalMethodArguments *args);
    IOReturn methodGetState(IOExternalMethodArguments *args);
    void release_all();

    task_t task_;
    com_nkeworkbench_Filter *filter_;   /* our provider, retained from start to stop */
    IOSharedDataQueue *queue_;          /* ours from start to free; enqueued to under g_nke.lock */
    /* queue_'s memory, made once in start (getMemoryDescriptor returns a new
     * +1 descriptor per call, and IOConnectUnmapMemory only finds a mapping
     * of the same descriptor); released in free */
    IOMemoryDescriptor *queue_memory_;
    bool closed_;                       /* clientClose ran (it runs once); IOKit serializes */
};

/* NKE error e as an IOReturn the client decodes (low 14 bits = e). */
#define NKE_IORETURN(e) ((e) == NKE_OK ? kIOReturnSuccess : iokit_vendor_specific_err(e))

#endif /* NKE_SERVICE_H */

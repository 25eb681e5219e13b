/*
 * The kmod_info the kext loader looks for (what Xcode generates as
 * <target>_info.c). _start/_stop come from libkern's C++ runtime, which runs
 * the static constructors of our IOKit classes and then _realmain.
 *
 * nke_kmod_stop refuses (KERN_FAILURE, which kextunload/kmutil report as
 * busy) while the service has not fully stopped: its filters may still be
 * registered or callbacks running, and unloading the code under them would
 * panic the machine.
 */
#include <mach/mach_types.h>
#include <mach/kmod.h>
#include <libkern/libkern.h>

#include "nke_kext.h"

#ifndef NKE_KEXT_VERSION
#define NKE_KEXT_VERSION "0.1.0"
#endif

static kern_return_t nke_kmod_start(kmod_info_t *ki, void *data)
{
    return KERN_SUCCESS; /* everything starts in the IOService, on matching */
}

static kern_return_t nke_kmod_stop(kmod_info_t *ki, void *data)
{
    /* the service's unwind clears g_nke.injector only after the thread left
     * our code, and g_nke.lock last */
    if (g_nke.lock != NULL || g_nke.filters_registered > 0 || g_nke.kauth_inflight > 0 ||
        g_nke.injector != NULL) {
        printf("nke: module stop refused (EBUSY): service still running\n");
        return KERN_FAILURE;
    }
    return KERN_SUCCESS;
}

extern kern_return_t _start(kmod_info_t *ki, void *data);
extern kern_return_t _stop(kmod_info_t *ki, void *data);

__attribute__((visibility("default"))) KMOD_EXPLICIT_DECL(com.nkeworkbench.filter, NKE_KEXT_VERSION,
                                                          _start, _stop)
__private_extern__ kmod_start_func_t *_realmain = nke_kmod_start;
__private_extern__ kmod_stop_func_t *_antimain = nke_kmod_stop;
__private_extern__ int _kext_apple_cc = __APPLE_CC__;

/*
 * libc.c: layer 1, the libc passthroughs. Owns p_<name> (libc's function,
 * resolved once with dlsym(RTLD_NEXT) on first use) and sym_<name> for
 * every function in SHIM_LIBC_FUNCS. The shim's own code calls libc through
 * libc_call(), never its interposed symbols.
 *
 * Locks: none. A racing first use resolves the same pointer twice, which
 * stores the same value.
 */
#include "shim.h"

int g_debug;

#define SHIM_LIBC_DEFINE(ret, name, params)                    \
    ret(*p_##name) params;                                     \
    void *sym_##name(void)                                     \
    {                                                          \
        if (!p_##name)                                         \
            *(void **)&p_##name = dlsym(RTLD_NEXT, #name);     \
        return (void *)p_##name;                               \
    }
SHIM_LIBC_FUNCS(SHIM_LIBC_DEFINE)

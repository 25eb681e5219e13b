// Compile check: nke_core.h must be usable from C++ (the addon includes it).
#include "nke_core.h"

int main()
{
    struct nke_kev_reasm *r = nullptr;
    (void)r;
    return nke_kev_piece_size(NKE_KEV_MSG_LIMIT_X86_64) == 176u ? 0 : 1;
}

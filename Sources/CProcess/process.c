#include "process.h"

#include <sys/resource.h>
#ifdef __linux__
#include <malloc.h>
#include <sys/prctl.h>
#endif

int pp_disable_core_dumps(void) {
    struct rlimit none = {0, 0};
    if (setrlimit(RLIMIT_CORE, &none) != 0) return -1;
#ifdef __linux__
    // prctl is variadic, which Swift cannot call: hence this file.
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return -1;
#endif
    return 0;
}

int pp_fix_mmap_threshold(size_t bytes) {
#if defined(__linux__) && defined(M_MMAP_THRESHOLD)
    // M_MMAP_THRESHOLD is a macro of malloc.h, which Swift's Glibc module does not import.
    return mallopt(M_MMAP_THRESHOLD, (int)bytes);
#else
    (void)bytes;
    return 0;
#endif
}

#ifndef PSEUDONYMIZER_PROCESS_H
#define PSEUDONYMIZER_PROCESS_H

#include <stddef.h>

/// Before a process loads a secret: no core dump can ever hold it, and (on
/// Linux) the process is not dumpable, so other processes of the same user
/// cannot ptrace it or read its memory through /proc. Returns 0, or -1 with errno.
int pp_disable_core_dumps(void);

/// Allocations of `bytes` or more get pages of their own, returned when freed
/// (glibc's M_MMAP_THRESHOLD, fixed instead of growing). Returns 1 on success;
/// 0 where the C library has no such setting.
int pp_fix_mmap_threshold(size_t bytes);

#endif

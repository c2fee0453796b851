#ifndef PSEUDONYMIZER_HARDENING_H
#define PSEUDONYMIZER_HARDENING_H

/// Before a process loads a secret: no core dump can ever hold it, and (on
/// Linux) the process is not dumpable, so other processes of the same user
/// cannot ptrace it or read its memory through /proc. Returns 0, or -1 with errno.
int ph_disable_core_dumps(void);

#endif

/* The seccomp allow-lists as libseccomp filters (sandbox_rules.c), for the
 * build-time generator of the BPF programs vmrun loads (sandbox_filters_gen.c). */
#ifndef VMRUN_SANDBOX_RULES_H
#define VMRUN_SANDBOX_RULES_H

#include <seccomp.h>

#include "vmrun/sandbox.h"

/* A new filter holding @kind's allow-list in @mode (ON: refused calls
 * trap; LOG: the kernel logs them), a call for a foreign architecture
 * killing the process.  NULL with -errno in *@err on failure; the caller
 * releases it with seccomp_release(). */
scmp_filter_ctx sandbox_rules_filter(enum sandbox_thread kind, enum sandbox_seccomp mode, int *err);

#endif

/* Internal interfaces between the kit's own files; guests use guest.h. */
#ifndef VMRUN_TEST_GUEST_KIT_H
#define VMRUN_TEST_GUEST_KIT_H

#include "guest.h"

/* Entry kinds lib/entry.S passes to guest_boot(). */
#define KIND_LINUX64 1
#define KIND_PVH 2

/* Called once by lib/entry.S on the boot CPU's own stack, paging on the
 * kit's tables: @kind is KIND_*, @cmdline_pa the loader's command line or 0.
 * Never returns. */
noreturn void guest_boot(unsigned kind, uint64_t cmdline_pa);

/* Fill the IDT and load it on the boot CPU. */
void idt_init(void);

/* Called by lib/isr.S for every vector with the saved context. */
void isr_dispatch(struct isr_frame *f);

/* Release the console lock whoever holds it: for the fatal-exception report,
 * whose fault may have hit inside gprintf() with the lock held. */
void console_break_lock(void);

#endif

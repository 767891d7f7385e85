/* cpl3: drop to ring 3 with IOPL 3 and run a compute loop there, where this
 * platform runs guest code natively.  Checks the privilege switch (TSS, user
 * segments, user-accessible page tables) and gives the host a CPU-bound
 * guest workload with a checkable result.  Ring 3 does its own port I/O
 * (serial, debug exit) through IOPL; user-mode syscall is broken on the
 * development platform, so nothing here needs the kernel again. */
#include "guest.h"

#define LCG_MUL 6364136223846793005ull
#define LCG_ADD 1442695040888963407ull

/* Ring-3 body: check CPL, run the LCG, report and exit from ring 3. */
static noreturn void user_main(void)
{
	unsigned cpl = cpu_cpl();
	uint64_t iters, x;

	if (cpl != 3) {
		gprintf("cpl3: FAIL cpl=%u\n", cpl);
		guest_exit(1);
	}
	iters = (uint64_t)cmdline_get_int("iters", 100000000);
	x = (uint64_t)cmdline_get_int("seed", 1);
	for (uint64_t i = 0; i < iters; i++) {
		x = x * LCG_MUL + LCG_ADD;
		/* Opaque to the optimiser: no closed form, no vectorising. */
		__asm__ volatile("" : "+r"(x));
	}
	gprintf("cpl3: cpl=%u iters=%lu result=0x%016lx\n", cpl, iters, x);
	guest_exit(0);
}

int guest_main(void)
{
	/* Ring 3's port I/O goes through IOPL 3, or through the kit's #GP
	 * handler where the nested KVM ignores IOPL (lib/user.c). */
	user_start(user_main);
}

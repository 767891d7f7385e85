/* triple_fault: an exception with an empty IDT must shut the VM down
 * (#UD cannot be delivered -> #GP -> #DF -> triple fault; the VMM sees
 * KVM_EXIT_SHUTDOWN).  ud2 rather than int3, which this platform's
 * emulator cannot run at CPL 0. */
#include "guest.h"

int guest_main(void)
{
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) empty = { 0, 0 };

	gprintf("triple fault now\n");
	__asm__ volatile("lidt %0\n\tud2" : : "m"(empty) : "memory");
	gprintf("triple fault FAILED\n");
	return 0x7f;
}

/* hello: the smallest end-to-end check of a boot path.  Prints which entry
 * the loader used and the command line, then exits with exit=N (default 0),
 * or instead, with action=...:
 *   reset  asks the i8042 for a system reset;
 *   halt   halts with interrupts disabled, for good (what Linux's halt and
 *          its poweroff without ACPI do);
 *   idle   halts with interrupts enabled and nothing to wake it: an idle
 *          guest, which must not be mistaken for a halted one. */
#include "guest.h"

#define I8042_COMMAND_PORT 0x64
#define I8042_PULSE_RESET 0xfe /* pulse output line 0: the CPU reset line */

int guest_main(void)
{
	char action[16];

	gprintf("hello from vmrun test guest (entry=%s)\n", guest_entry_kind());
	gprintf("cmdline: %s\n", guest_cmdline());
	if (cmdline_get("action", action, sizeof(action)) && !memcmp(action, "reset", 6)) {
		outb(I8042_COMMAND_PORT, I8042_PULSE_RESET);
		gprintf("reset FAILED\n");
		return 0x7f;
	}
	if (cmdline_get("action", action, sizeof(action)) && !memcmp(action, "halt", 5)) {
		for (;;)
			__asm__ volatile("cli; hlt");
	}
	if (cmdline_get("action", action, sizeof(action)) && !memcmp(action, "idle", 5)) {
		for (;;)
			__asm__ volatile("sti; hlt");
	}
	return (int)cmdline_get_int("exit", 0);
}

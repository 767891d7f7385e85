/* hello: the smallest end-to-end check of a boot path.  Prints which entry
 * the loader used and the command line, then exits with exit=N (default 0),
 * or, with action=reset, asks the i8042 for a system reset instead. */
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
	return (int)cmdline_get_int("exit", 0);
}

/* Guest-physical RAM layout and the e820 map that describes it. */
#include <errno.h>

#include "vmrun/x86.h"

unsigned x86_layout_ram(uint64_t ram_size, uint64_t gpa[2], uint64_t size[2])
{
	gpa[0] = 0;
	if (ram_size <= X86_MMIO_HOLE_START) {
		size[0] = ram_size;
		return 1;
	}
	size[0] = X86_MMIO_HOLE_START;
	gpa[1] = X86_MMIO_HOLE_END;
	size[1] = ram_size - X86_MMIO_HOLE_START;
	return 2;
}

int x86_e820_build(uint64_t ram_size, struct e820_entry *out, unsigned max)
{
	uint64_t gpa[2], size[2];
	unsigned n = x86_layout_ram(ram_size, gpa, size), used = 0;
	struct e820_entry want[4];

	/* Low RAM up to the EBDA; the EBDA, VGA hole and BIOS area reserved
	 * (the MP table lives there); RAM from 1 MiB to the end of the first
	 * region; the second region as is. */
	want[used++] = (struct e820_entry){ 0, X86_EBDA_START, E820_RAM };
	want[used++] = (struct e820_entry){ X86_EBDA_START, X86_HIGH_MEM - X86_EBDA_START,
					    E820_RESERVED };
	if (size[0] > X86_HIGH_MEM)
		want[used++] = (struct e820_entry){ X86_HIGH_MEM, size[0] - X86_HIGH_MEM,
						    E820_RAM };
	if (n == 2)
		want[used++] = (struct e820_entry){ gpa[1], size[1], E820_RAM };
	if (used > max)
		return -ENOSPC;
	for (unsigned i = 0; i < used; i++)
		out[i] = want[i];
	return (int)used;
}

/* RAM above 4 GiB for the guests that touch a lot of memory from ring 3
 * (memtouch, migdirty): the kit's boot tables map only the first 4 GiB. */
#include "guest.h"

#define GIB (1ul << 30)
#define PTE_TABLE 0x7  /* present, writable, user */
#define PTE_LARGE 0x87 /* the same plus PS: a 2 MiB page */

/* Page directories for [4 GiB, 4 GiB + GUEST_HIGH_GIB_MAX GiB): filled only
 * as far as needed, so never zeroed (the kit's BSS zeroing runs
 * interpreted). */
static uint64_t high_pd[GUEST_HIGH_GIB_MAX][512]
	__attribute__((section(".noinit"), aligned(4096)));

extern uint64_t pml4[];

int guest_map_high(uint64_t end)
{
	uint64_t *pdpt = phys_ptr(pml4[0] & ~0xfffull);
	unsigned gibs;

	if (end <= GUEST_FOUR_GIB)
		return 0;
	if (end > GUEST_FOUR_GIB + GUEST_HIGH_GIB_MAX * GIB)
		return -1;
	gibs = (unsigned)((end - GUEST_FOUR_GIB + GIB - 1) / GIB);
	for (unsigned g = 0; g < gibs; g++) {
		uint64_t pa = GUEST_FOUR_GIB + (uint64_t)g * GIB;

		for (unsigned i = 0; i < 512; i++)
			high_pd[g][i] = (pa + (uint64_t)i * (2ul << 20)) | PTE_LARGE;
		pdpt[4 + g] = (uint64_t)&high_pd[g][0] | PTE_TABLE;
	}
	__asm__ volatile("mov %%cr3, %%rax\n\tmov %%rax, %%cr3" ::: "rax", "memory");
	return 0;
}

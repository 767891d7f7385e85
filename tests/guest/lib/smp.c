/* Application-processor start-up: the real-mode trampoline (lib/smp_tramp.S)
 * copied to physical AP_TRAMP_BASE, and INIT-SIPI-SIPI through the xAPIC
 * ICR.  Used by the smp and smptimer guests. */
#include "guest.h"

#define SIPI_VECTOR (AP_TRAMP_BASE >> 12) /* the AP starts at vector:0000 */
#define IPI_SETTLE_PAUSES 2000            /* a short wait between the IPIs */

/* Mirrors the parameter block at the end of smp_tramp.S. */
struct tramp_params {
	uint16_t pad;
	uint16_t gdt_limit;
	uint32_t gdt_base;
	uint32_t cr3;
	uint32_t next_slot;
	uint32_t nstacks;
	uint32_t stack_size;
	uint64_t stack_base;
	uint64_t entry;
};

_Static_assert(sizeof(struct tramp_params) == 40, "matches smp_tramp.S");

extern const char smp_tramp_start[], smp_tramp_end[], smp_tramp_params[];
extern const struct {
	uint16_t limit;
	uint64_t base;
} __attribute__((packed)) gdt_ptr;

void ap_tramp_install(void *stacks, unsigned nstacks, uint32_t stack_size, void (*entry)(void))
{
	size_t size = (size_t)(smp_tramp_end - smp_tramp_start);
	struct tramp_params *tp;
	uint64_t cr3;

	memcpy(phys_ptr(AP_TRAMP_BASE), smp_tramp_start, size);
	tp = phys_ptr(AP_TRAMP_BASE + (uintptr_t)(smp_tramp_params - smp_tramp_start));
	__asm__ volatile("mov %%cr3, %0" : "=r"(cr3));
	tp->gdt_limit = gdt_ptr.limit;
	tp->gdt_base = (uint32_t)gdt_ptr.base;
	tp->cr3 = (uint32_t)cr3;
	tp->next_slot = 0;
	tp->nstacks = nstacks;
	tp->stack_size = stack_size;
	tp->stack_base = (uint64_t)stacks;
	tp->entry = (uint64_t)entry;
}

/* A short busy wait between start-up IPIs (the MP spec's 10 ms and 200 us
 * are for real hardware; KVM needs none, but a pause costs nothing). */
static void ipi_settle(void)
{
	for (unsigned i = 0; i < IPI_SETTLE_PAUSES; i++)
		cpu_pause();
}

/* INIT, SIPI, SIPI to @dest with destination shorthand @shorthand. */
static void ap_send_startup(unsigned dest, uint32_t shorthand)
{
	lapic_send_ipi(dest, shorthand | ICR_INIT | ICR_ASSERT);
	ipi_settle();
	lapic_send_ipi(dest, shorthand | ICR_STARTUP | ICR_ASSERT | SIPI_VECTOR);
	ipi_settle();
	lapic_send_ipi(dest, shorthand | ICR_STARTUP | ICR_ASSERT | SIPI_VECTOR);
}

void ap_start(unsigned apic_id)
{
	ap_send_startup(apic_id, 0);
}

void ap_start_all(void)
{
	ap_send_startup(0, ICR_ALL_BUT_SELF);
}

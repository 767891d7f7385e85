/* Local APIC (xAPIC MMIO) and IOAPIC helpers. */
#include "guest.h"

#define IOAPIC_REGSEL 0x00
#define IOAPIC_WIN 0x10
#define IOAPIC_REDTBL(pin) (0x10 + 2 * (pin))

void lapic_enable(uint8_t spurious)
{
	lapic_write(LAPIC_SVR, LAPIC_SVR_ENABLE | spurious);
}

void lapic_send_ipi(unsigned dest, uint32_t icr_lo)
{
	while (lapic_read(LAPIC_ICR_LO) & ICR_BUSY)
		cpu_pause();
	/* The high half first: writing the low half sends the IPI. */
	lapic_write(LAPIC_ICR_HI, dest << 24);
	lapic_write(LAPIC_ICR_LO, icr_lo);
}

uint32_t ioapic_read(uint32_t reg)
{
	mmio_write32(IOAPIC_BASE + IOAPIC_REGSEL, reg);
	return mmio_read32(IOAPIC_BASE + IOAPIC_WIN);
}

void ioapic_write(uint32_t reg, uint32_t v)
{
	mmio_write32(IOAPIC_BASE + IOAPIC_REGSEL, reg);
	mmio_write32(IOAPIC_BASE + IOAPIC_WIN, v);
}

void ioapic_route(unsigned pin, uint8_t vector, unsigned dest)
{
	/* Destination first and the unmasking low half last, so the entry is
	 * never live with a stale destination.  Low half: vector, delivery
	 * mode 000 (fixed), physical, active high, edge, unmasked: all zero
	 * but the vector. */
	ioapic_write(IOAPIC_REDTBL(pin) + 1, dest << 24);
	ioapic_write(IOAPIC_REDTBL(pin), vector);
}

/* PCI bus 0 for the unit tests of PCI functions (test_pci.c, test_pvpanic.c):
 * a bus without KVM, its configuration ports on a port bus and its window on
 * an MMIO bus, and configuration mechanism #1 driven as a guest drives it. */
#ifndef VMRUN_TEST_PCI_RIG_H
#define VMRUN_TEST_PCI_RIG_H

#include "unit.h"

#include "vmrun/bus.h"
#include "vmrun/pci.h"

/* pci_bus_init() on [@win, @win + @len) with @host (may be NULL), then
 * 0xCF8/0xCFC claimed on @pio and the window on @mmio. */
static inline void pci_rig_init(struct pci_bus *pci, struct bus *pio, struct bus *mmio,
				uint64_t win, uint64_t len, const struct pci_host_ops *host,
				void *opaque)
{
	assert_int_equal(pci_bus_init(pci, win, len, -1, host, opaque), 0);
	bus_init(pio, "port");
	bus_init(mmio, "mmio");
	assert_int_equal(bus_register(pio, &pci->addr_region), 0);
	assert_int_equal(bus_register(pio, &pci->data_region), 0);
	assert_int_equal(bus_register(mmio, &pci->window), 0);
}

static inline void pci_rig_exit(struct pci_bus *pci, struct bus *pio, struct bus *mmio)
{
	pci_bus_exit(pci);
	bus_exit(pio);
	bus_exit(mmio);
}

/* Configuration register @reg of bus 0, slot @slot, @size bytes wide. */
static inline uint32_t pci_rig_cfg_read(struct bus *pio, unsigned slot, unsigned reg,
					unsigned size)
{
	uint32_t a = 0x80000000u | (slot << 11) | (reg & 0xfc), v = 0;

	assert_true(bus_write(pio, 0xcf8, &a, 4));
	assert_true(bus_read(pio, 0xcfc + (reg & 3), &v, size));
	return v;
}

static inline void pci_rig_cfg_write(struct bus *pio, unsigned slot, unsigned reg, unsigned size,
				     uint32_t v)
{
	uint32_t a = 0x80000000u | (slot << 11) | (reg & 0xfc);

	assert_true(bus_write(pio, 0xcf8, &a, 4));
	assert_true(bus_write(pio, 0xcfc + (reg & 3), &v, size));
}

#endif

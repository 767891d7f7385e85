/* pvpanic (src/devices/pvpanic.c): how a guest tells vmrun it panicked.
 * Two faces with the same register, as QEMU's pvpanic devices:
 *   - the PCI function Linux's pvpanic-pci driver binds (vendor 0x1b36,
 *     device 0x0011) with a 4 KiB memory BAR 0 whose first byte is the
 *     register;
 *   - the ISA port PVPANIC_ISA_PORT, described in the DSDT as "QEMU0001"
 *     (Linux's pvpanic-mmio driver, and the freestanding test guests).
 * A byte read gives the events vmrun supports (PVPANIC_PANICKED |
 * PVPANIC_CRASH_LOADED); a byte write reports events: PANICKED ends the run
 * with status 16 ("panic"), CRASH_LOADED is logged and the run goes on.
 * Other bits, other offsets and other widths are ignored. */
#ifndef VMRUN_PVPANIC_H
#define VMRUN_PVPANIC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmrun/bus.h"
#include "vmrun/pci.h"

struct device_host;
struct state_reader;
struct state_writer;

#define PVPANIC_ISA_PORT 0x505
#define PVPANIC_PCI_VENDOR 0x1b36
#define PVPANIC_PCI_DEVICE 0x0011
#define PVPANIC_PANICKED 0x01
#define PVPANIC_CRASH_LOADED 0x02
#define PVPANIC_EVENTS (PVPANIC_PANICKED | PVPANIC_CRASH_LOADED)
#define PVPANIC_BAR_SIZE 4096

struct pvpanic {
	struct bus_region isa_region;  /* port PVPANIC_ISA_PORT, one byte */
	struct pci_function fn;        /* on bus 0 after pci_bus_add() */
	const struct device_host *host;
	atomic_bool fired;             /* the first PANICKED ended the run */
	atomic_uint crash_loaded_logged; /* CRASH_LOADED reports logged (a few at most) */
};

/* Set up @p: the ISA port region and the PCI function with its BAR.  The
 * caller claims &p->isa_region on the port bus and adds &p->fn to the PCI
 * bus.  Returns 0 or -errno. */
int pvpanic_init(struct pvpanic *p, const struct device_host *host)
	__attribute__((warn_unused_result));

/* A guest write of @v to the register (either face): what it reports.
 * Exposed for the unit tests. */
void pvpanic_event(struct pvpanic *p, uint8_t v);

/* Save / load the PCI function's configuration space (where the guest put
 * BAR 0) under /devices/pvpanic.  Load returns 0 or -errno with the reason
 * in @r. */
void pvpanic_save(struct pvpanic *p, struct state_writer *w);
int pvpanic_load(struct pvpanic *p, struct state_reader *r) __attribute__((warn_unused_result));

#endif

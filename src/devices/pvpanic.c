// SPDX-License-Identifier: MIT
/*
 * pvpanic (vmrun/pvpanic.h): the PCI function and the ISA port.  The
 * register has no state: a read says which events vmrun understands, a
 * write reports some.  Only byte accesses at the register count, as QEMU's
 * devices decode them; the rest is ignored, never fatal.
 */
#include <errno.h>
#include <string.h>

#include "vmrun/devices.h"
#include "vmrun/exit_status.h"
#include "vmrun/log.h"
#include "vmrun/pvpanic.h"
#include "vmrun/state.h"

#define PVPANIC_STATE_VERSION 1
#define PVPANIC_CLASS 0x088000 /* system peripheral, other */
#define PVPANIC_SUBVENDOR 0x1af4
#define PVPANIC_SUBDEVICE 0x1100
#define PVPANIC_CRASH_LOADED_LOGS 4

void pvpanic_event(struct pvpanic *p, uint8_t v)
{
	if (v & PVPANIC_PANICKED) {
		if (!atomic_exchange(&p->fired, true))
			p->host->request_exit(p->host->opaque, VMRUN_EXIT_GUEST_CRASH,
					      "guest reported a crash");
		return;
	}
	if ((v & PVPANIC_CRASH_LOADED) &&
	    atomic_fetch_add(&p->crash_loaded_logged, 1) < PVPANIC_CRASH_LOADED_LOGS)
		log_info("pvpanic: the guest loaded a crash kernel (CRASH_LOADED); it runs on");
}

static int isa_read(struct bus_region *region, uint64_t offset, void *data, unsigned size)
{
	(void)region;
	if (offset != 0 || size != 1)
		return -EINVAL; /* all-ones */
	*(uint8_t *)data = PVPANIC_EVENTS;
	return 0;
}

static int isa_write(struct bus_region *region, uint64_t offset, const void *data,
		     unsigned size)
{
	if (offset == 0 && size == 1)
		pvpanic_event(region->opaque, *(const uint8_t *)data);
	return 0;
}

static const struct bus_ops isa_ops = { .read = isa_read, .write = isa_write };

static void bar_read(struct pci_function *fn, unsigned bar, uint64_t offset, void *data,
		     unsigned size)
{
	/* The bus zeroed @data: the rest of the BAR reads 0. */
	if (bar == 0 && offset == 0 && size == 1)
		*(uint8_t *)data = PVPANIC_EVENTS;
	(void)fn;
}

static void bar_write(struct pci_function *fn, unsigned bar, uint64_t offset, const void *data,
		      unsigned size)
{
	if (bar == 0 && offset == 0 && size == 1)
		pvpanic_event(fn->opaque, *(const uint8_t *)data);
}

static const struct pci_function_ops pci_ops = { .bar_read = bar_read, .bar_write = bar_write };

int pvpanic_init(struct pvpanic *p, const struct device_host *host)
{
	memset(p, 0, sizeof(*p));
	p->host = host;
	atomic_init(&p->fired, false);
	atomic_init(&p->crash_loaded_logged, 0);
	p->isa_region = (struct bus_region){ .base = PVPANIC_ISA_PORT, .len = 1, .ops = &isa_ops,
					     .opaque = p, .name = "pvpanic" };
	pci_function_init(&p->fn, "pvpanic-pci", PVPANIC_PCI_VENDOR, PVPANIC_PCI_DEVICE, 1,
			  PVPANIC_CLASS, PVPANIC_SUBVENDOR, PVPANIC_SUBDEVICE, false, &pci_ops, p);
	return pci_function_add_bar(&p->fn, 0, PVPANIC_BAR_SIZE);
}

void pvpanic_save(struct pvpanic *p, struct state_writer *w)
{
	state_begin(w, PVPANIC_STATE_VERSION, "/devices/pvpanic");
	pci_function_save(&p->fn, w);
}

int pvpanic_load(struct pvpanic *p, struct state_reader *r)
{
	int node = state_node(r, true, "/devices/pvpanic");

	if (state_version(r, node, 1, PVPANIC_STATE_VERSION) < 0)
		return r->err;
	return pci_function_load(&p->fn, r, node);
}

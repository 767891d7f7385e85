// SPDX-License-Identifier: MIT
/*
 * The ACPI fixed registers (vmrun/acpi.h): the PM1a event block (status and
 * enable, nothing to report), the PM1a control block and the reset
 * register.  A guest's poweroff writes SLP_TYP (from \_S5) and then SLP_TYP
 * with SLP_EN to PM1a_CNT; its reboot writes RESET_VALUE to the reset
 * register.  Everything else a guest may write (other values, other widths,
 * a sleep state vmrun does not have) is dropped, so a confused or hostile
 * guest cannot end the run by accident.
 */
#include <string.h>

#include "vmrun/acpi.h"
#include "vmrun/devices.h"
#include "vmrun/exit_status.h"

_Static_assert(ACPI_PM1_EVT_PORT == ACPI_PM_BASE && ACPI_PM1_CNT_PORT == ACPI_PM_BASE + 4 &&
		       ACPI_RESET_PORT == ACPI_PM_BASE + 6,
	       "the registers fill the region in this order");

static int acpi_pm_read(struct bus_region *region, uint64_t offset, void *data, unsigned size)
{
	uint64_t v = 0;

	(void)region;
	/* PM1_CNT reads SCI_EN: the machine is in ACPI mode for good.  A read
	 * that covers its low byte sees it; everything else reads 0 (no
	 * status bit set, no event enabled, the reset register). */
	if (offset <= ACPI_PM1_CNT_PORT - ACPI_PM_BASE &&
	    offset + size > ACPI_PM1_CNT_PORT - ACPI_PM_BASE)
		v = (uint64_t)ACPI_PM1_SCI_EN << (8 * (ACPI_PM1_CNT_PORT - ACPI_PM_BASE - offset));
	memcpy(data, &v, size);
	return 0;
}

/* The PM1_CNT value a write of @size bytes at @offset sets, as far as it
 * covers the SLP_TYP/SLP_EN byte: true with it in *@cnt. */
static bool pm1_cnt_write(uint64_t offset, const void *data, unsigned size, uint16_t *cnt)
{
	uint16_t v = 0;

	if (offset == ACPI_PM1_CNT_PORT - ACPI_PM_BASE && size == 2) {
		memcpy(&v, data, 2);
	} else if (offset == ACPI_PM1_CNT_PORT - ACPI_PM_BASE + 1 && size == 1) {
		v = (uint16_t)(*(const uint8_t *)data << 8);
	} else {
		return false;
	}
	*cnt = v;
	return true;
}

static int acpi_pm_write(struct bus_region *region, uint64_t offset, const void *data,
			 unsigned size)
{
	struct acpi_pm *pm = region->opaque;
	uint16_t cnt;

	if (pm1_cnt_write(offset, data, size, &cnt)) {
		if ((cnt & ACPI_PM1_SLP_EN) &&
		    (cnt & ACPI_PM1_SLP_TYP_MASK) >> ACPI_PM1_SLP_TYP_SHIFT == ACPI_S5_SLP_TYP)
			pm->host->request_exit(pm->host->opaque, VMRUN_EXIT_POWEROFF,
					       "ACPI poweroff (S5)");
	} else if (offset == ACPI_RESET_PORT - ACPI_PM_BASE && size == 1) {
		if (*(const uint8_t *)data == ACPI_RESET_VALUE)
			pm->host->request_exit(pm->host->opaque, VMRUN_EXIT_RESET,
					       "ACPI reset register");
	}
	/* PM1_STS (write 1 to clear: nothing is set), PM1_EN, the spare byte:
	 * nothing to do. */
	return 0;
}

static const struct bus_ops acpi_pm_ops = { .read = acpi_pm_read, .write = acpi_pm_write };

void acpi_pm_init(struct acpi_pm *pm, const struct device_host *host)
{
	pm->host = host;
	pm->region = (struct bus_region){ .base = ACPI_PM_BASE, .len = ACPI_PM_PORTS,
					  .ops = &acpi_pm_ops, .opaque = pm, .name = "acpi-pm" };
}

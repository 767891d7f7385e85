/* ACPI for the guest (src/acpi/): the tables that describe the machine, a
 * small AML emitter for the DSDT, and the fixed registers: the PM1a event
 * and control blocks (a write of SLP_TYP 5 with SLP_EN to PM1a_CNT powers
 * off) and the reset register.
 *
 * Why not hardware-reduced ACPI: Linux takes a hardware-reduced FADT as "no
 * legacy PIC" and then maps no ISA IRQ by itself, so the virtio-mmio devices
 * vmrun declares on the command line (ISA IRQs 5-15) could not get their
 * interrupts.  A classic FADT keeps the PC's IRQ wiring exactly as with the
 * MP table; its SCI (IRQ 9, level, active high, as QEMU's) never fires (a
 * fourth virtio-mmio device shares IRQ 9 with it, which a shared-IRQ driver
 * such as Linux's virtio_mmio takes as it is).
 *
 * Guest layout (x86): the tables sit in the reserved BIOS area below 1 MiB,
 * from ACPI_TABLES_GPA (the RSDP first, where Linux scans for it, then the
 * XSDT, FADT, FACS, MADT and DSDT), within ACPI_TABLES_MAX bytes.  The
 * registers are I/O ports no PC guest probes without being told, from
 * ACPI_PM_BASE: PM1a_EVT_BLK (4 bytes), PM1a_CNT_BLK (2), the reset
 * register (1).
 *
 * The MP table stays: a kernel without ACPI reads it as before, one with
 * ACPI reads the MADT and the DSDT, which say the same (CPUs, IOAPIC, ISA
 * IRQs identity-mapped, PCI INTx on the MP table's IOAPIC pins); the DSDT
 * also lists COM1 (PNP0501, IRQ 4) and the RTC (PNP0B00, IRQ 8). */
#ifndef VMRUN_ACPI_H
#define VMRUN_ACPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmrun/bus.h"

struct device_host;

#define ACPI_TABLES_GPA 0xe0000ull /* 16-byte aligned, inside Linux's RSDP scan */
#define ACPI_TABLES_MAX 0x10000u   /* up to the MP table at 0xf0000 */

#define ACPI_PM_BASE 0x600
#define ACPI_PM1_EVT_PORT 0x600 /* PM1_STS (2 bytes), PM1_EN (2 bytes) */
#define ACPI_PM1_CNT_PORT 0x604 /* PM1_CNT, 2 bytes */
#define ACPI_RESET_PORT 0x606
#define ACPI_RESET_VALUE 0x0f
#define ACPI_PM_PORTS 8         /* 0x600-0x607; 0x607 reads 0, ignores writes */
#define ACPI_SCI_IRQ 9

/* PM1 control register bits (ACPI 6.4, 4.8.3.2.1). */
#define ACPI_PM1_SCI_EN 0x0001
#define ACPI_PM1_SLP_TYP_SHIFT 10
#define ACPI_PM1_SLP_TYP_MASK 0x1c00
#define ACPI_PM1_SLP_EN 0x2000
#define ACPI_S5_SLP_TYP 5 /* what \_S5 says */

/* What the tables describe. */
struct acpi_machine {
	unsigned ncpus;   /* APIC IDs 0..ncpus-1; the IOAPIC gets ID ncpus (as the MP table) */
	bool pvpanic;     /* the pvpanic ISA device (vmrun/pvpanic.h) in the DSDT */
};

/* ---- tables ---- */

/* The 8-bit checksum that makes @len bytes at @p sum to zero. */
uint8_t acpi_checksum(const void *p, size_t len);

/* Build every table for @m into @buf (@len bytes, the host view of
 * guest-physical @gpa, 16-byte aligned, below 1 MiB): RSDP (revision 2)
 * at @buf, then XSDT (FADT, MADT), FADT (revision 6: the PM1a blocks, SCI
 * on IRQ 9, the reset register, FACS, DSDT and their X_ forms), FACS, MADT
 * and DSDT, each checksummed.  Returns the bytes used, -ENOSPC when @len
 * is too small, or -EINVAL when @m is out of range.  The RSDP is at @gpa. */
int acpi_tables_build(void *buf, size_t len, uint64_t gpa, const struct acpi_machine *m);

/* Build only the DSDT for @m into @buf: returns its length or -errno
 * (for the AML test and acpi_tables_build()). */
int acpi_dsdt_build(void *buf, size_t len, const struct acpi_machine *m);

/* ---- the AML emitter ---- */

/* A growing AML byte stream.  Errors are sticky: after the first one
 * (-ENOMEM, -ENOSPC, -EINVAL) every call does nothing and aml_finish()
 * returns it.  Scopes, devices, methods, packages and buffers are opened
 * and closed in nesting order; closing one writes its PkgLength. */
#define AML_MAX_DEPTH 16
struct aml {
	uint8_t *buf;
	size_t len, cap;
	int err;
	size_t open[AML_MAX_DEPTH]; /* where each open object's PkgLength goes */
	bool is_buffer[AML_MAX_DEPTH]; /* its BufferSize is patched at its end */
	unsigned depth;
};

void aml_init(struct aml *a);
void aml_free(struct aml *a);
/* 0 and the stream in *@out (owned by @a), or the first error. */
int aml_finish(struct aml *a, const uint8_t **out, size_t *len);

void aml_bytes(struct aml *a, const void *p, size_t n);
/* A name string: "\\_SB.PCI0", "_HID", "^FOO"; segments of 1 to 4
 * characters (A-Z, 0-9, _; padded with '_'). */
void aml_name_string(struct aml *a, const char *name);
/* The smallest encoding of @v: Zero, One, Ones, Byte/Word/DWord/QWord. */
void aml_integer(struct aml *a, uint64_t v);
void aml_string(struct aml *a, const char *s);
/* An EISA ID ("PNP0A03") as its compressed 32-bit integer. */
void aml_eisaid(struct aml *a, const char *id);
/* Name(@name, ...): the object follows (an integer, string, package...). */
void aml_name(struct aml *a, const char *name);
void aml_scope_begin(struct aml *a, const char *name);
void aml_device_begin(struct aml *a, const char *name);
/* Method(@name, @nargs, NotSerialized); its body follows. */
void aml_method_begin(struct aml *a, const char *name, unsigned nargs);
void aml_return(struct aml *a); /* Return(...): the value follows */
void aml_package_begin(struct aml *a, unsigned n_elements);
/* Buffer(){...}: the bytes follow (aml_bytes, or a resource template:
 * aml_rt_*); aml_end() fills in its size. */
void aml_buffer_begin(struct aml *a);
void aml_end(struct aml *a); /* closes the innermost open object */

/* Resource template descriptors, inside aml_buffer_begin()/aml_end(). */
void aml_rt_word_bus(struct aml *a, uint16_t min, uint16_t max);
void aml_rt_word_io(struct aml *a, uint16_t min, uint16_t max);
void aml_rt_dword_memory(struct aml *a, uint32_t min, uint32_t max);
void aml_rt_io(struct aml *a, uint16_t port, uint8_t len);
/* IRQNoFlags(){@irq}: an ISA IRQ 0-15, edge-triggered, active high. */
void aml_rt_irq(struct aml *a, unsigned irq);
void aml_rt_end(struct aml *a); /* the end tag: last in the template */

/* ---- the PM1a blocks and the reset register ---- */

/* PM1a_CNT: a 16-bit write with SLP_EN and SLP_TYP 5 (or a byte write of
 * its high byte saying the same) ends the run as a poweroff (status 0);
 * other sleep types are ignored (no S1-S4 here); reads give SCI_EN (ACPI
 * mode, always: the FADT has no SMI command port).  PM1_STS and PM1_EN read
 * 0 (no event, none enabled) and ignore writes.  Reset: a byte write of
 * ACPI_RESET_VALUE ends the run as a reboot (status 6).  Anything else
 * (another value, another width) is ignored.  No state to save. */
struct acpi_pm {
	struct bus_region region; /* ports ACPI_PM_BASE.. +ACPI_PM_PORTS */
	const struct device_host *host;
};

/* Set up @pm; claim &pm->region on the port bus next. */
void acpi_pm_init(struct acpi_pm *pm, const struct device_host *host);

#endif

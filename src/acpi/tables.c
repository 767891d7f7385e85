// SPDX-License-Identifier: MIT
/*
 * The guest's ACPI tables (vmrun/acpi.h), ACPI 6.4 layouts: RSDP, XSDT,
 * FADT (the PM1a event and control blocks, SCI on IRQ 9, the reset
 * register; no PM timer, no GPE blocks, no SMI command port: always in ACPI
 * mode), FACS, MADT and a DSDT made by the AML emitter.  Every table is written at a known offset of the caller's
 * buffer, bounds-checked, and checksummed last.
 */
#include <errno.h>
#include <string.h>

#include "vmrun/acpi.h"
#include "vmrun/config.h"
#include "vmrun/devices.h"
#include "vmrun/pci.h"
#include "vmrun/pvpanic.h"
#include "vmrun/x86.h"

#define ACPI_OEM_ID "VMRUN "      /* 6 bytes */
#define ACPI_OEM_TABLE "VMRUNKVM" /* 8 bytes */
#define ACPI_CREATOR "VMRN"

struct acpi_header {
	char signature[4];
	uint32_t length;
	uint8_t revision;
	uint8_t checksum;
	char oem_id[6];
	char oem_table_id[8];
	uint32_t oem_revision;
	char creator_id[4];
	uint32_t creator_revision;
} __attribute__((packed));

struct acpi_rsdp {
	char signature[8]; /* "RSD PTR " */
	uint8_t checksum;  /* of the first 20 bytes */
	char oem_id[6];
	uint8_t revision;  /* 2: ACPI 2.0 and later, with the XSDT */
	uint32_t rsdt_address;
	uint32_t length;
	uint64_t xsdt_address;
	uint8_t extended_checksum; /* of all 36 bytes */
	uint8_t reserved[3];
} __attribute__((packed));

/* Generic Address Structure. */
struct acpi_gas {
	uint8_t space_id; /* 1: system I/O */
	uint8_t bit_width;
	uint8_t bit_offset;
	uint8_t access_size; /* 1: byte */
	uint64_t address;
} __attribute__((packed));

struct acpi_fadt {
	struct acpi_header h;
	uint32_t firmware_ctrl;
	uint32_t dsdt;
	uint8_t reserved0;
	uint8_t preferred_pm_profile;
	uint16_t sci_int;
	uint32_t smi_cmd;
	uint8_t acpi_enable, acpi_disable, s4bios_req, pstate_cnt;
	uint32_t pm1a_evt_blk, pm1b_evt_blk, pm1a_cnt_blk, pm1b_cnt_blk;
	uint32_t pm2_cnt_blk, pm_tmr_blk, gpe0_blk, gpe1_blk;
	uint8_t pm1_evt_len, pm1_cnt_len, pm2_cnt_len, pm_tmr_len;
	uint8_t gpe0_blk_len, gpe1_blk_len, gpe1_base, cst_cnt;
	uint16_t p_lvl2_lat, p_lvl3_lat, flush_size, flush_stride;
	uint8_t duty_offset, duty_width, day_alrm, mon_alrm, century;
	uint16_t iapc_boot_arch;
	uint8_t reserved1;
	uint32_t flags;
	struct acpi_gas reset_reg;
	uint8_t reset_value;
	uint16_t arm_boot_arch;
	uint8_t minor_version;
	uint64_t x_firmware_ctrl;
	uint64_t x_dsdt;
	struct acpi_gas x_pm1a_evt_blk, x_pm1b_evt_blk, x_pm1a_cnt_blk, x_pm1b_cnt_blk;
	struct acpi_gas x_pm2_cnt_blk, x_pm_tmr_blk, x_gpe0_blk, x_gpe1_blk;
	struct acpi_gas sleep_control_reg;
	struct acpi_gas sleep_status_reg;
	uint64_t hypervisor_vendor_id;
} __attribute__((packed));

struct acpi_madt {
	struct acpi_header h;
	uint32_t lapic_address;
	uint32_t flags;
} __attribute__((packed));

struct madt_lapic { /* type 0 */
	uint8_t type, length, processor_uid, apic_id;
	uint32_t flags;
} __attribute__((packed));

struct madt_ioapic { /* type 1 */
	uint8_t type, length, ioapic_id, reserved;
	uint32_t address;
	uint32_t gsi_base;
} __attribute__((packed));

struct madt_iso { /* type 2: interrupt source override */
	uint8_t type, length, bus, source;
	uint32_t gsi;
	uint16_t flags;
} __attribute__((packed));

struct acpi_facs {
	char signature[4]; /* "FACS" */
	uint32_t length;   /* 64 */
	uint32_t hardware_signature;
	uint32_t firmware_waking_vector;
	uint32_t global_lock;
	uint32_t flags;
	uint64_t x_firmware_waking_vector;
	uint8_t version; /* 2 */
	uint8_t reserved[3];
	uint32_t ospm_flags;
	uint8_t reserved2[24];
} __attribute__((packed));

struct madt_lapic_nmi { /* type 4 */
	uint8_t type, length, processor_uid;
	uint16_t flags;
	uint8_t lint;
} __attribute__((packed));

_Static_assert(sizeof(struct acpi_header) == 36, "header");
_Static_assert(sizeof(struct acpi_rsdp) == 36, "rsdp");
_Static_assert(sizeof(struct acpi_gas) == 12, "gas");
_Static_assert(sizeof(struct acpi_fadt) == 276, "fadt revision 6");
_Static_assert(offsetof(struct acpi_fadt, flags) == 112, "fadt flags");
_Static_assert(offsetof(struct acpi_fadt, x_dsdt) == 140, "fadt x_dsdt");
_Static_assert(offsetof(struct acpi_fadt, sleep_control_reg) == 244, "fadt sleep control");
_Static_assert(sizeof(struct madt_lapic_nmi) == 6, "lapic nmi");
_Static_assert(sizeof(struct madt_iso) == 10, "iso");
_Static_assert(sizeof(struct acpi_facs) == 64, "facs");

#define FADT_F_PWR_BUTTON (1u << 4)   /* no fixed power button */
#define FADT_F_SLP_BUTTON (1u << 5)   /* no fixed sleep button */
#define FADT_F_RESET_REG_SUP (1u << 10)
#define FADT_BOOT_VGA_NOT_PRESENT (1u << 2)
#define MADT_ISO_ACTIVE_HIGH_LEVEL 0x000d /* polarity 01, trigger mode 11 */
#define MADT_PCAT_COMPAT 1u
#define ACPI_SPACE_SYSTEM_IO 1
#define ACPI_ACCESS_BYTE 1

/* Table offsets inside the block: RSDP first (Linux scans 16-byte steps). */
#define OFF_RSDP 0x0
#define OFF_XSDT 0x40
#define OFF_FACS 0x80 /* 64-byte aligned */
#define OFF_FADT 0xc0
#define OFF_MADT 0x200
#define XSDT_ENTRIES 2

uint8_t acpi_checksum(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint8_t sum = 0;

	while (len--)
		sum = (uint8_t)(sum + *b++);
	return (uint8_t)-sum;
}

static void header_fill(struct acpi_header *h, const char *sig, uint32_t len, uint8_t rev)
{
	memcpy(h->signature, sig, 4);
	h->length = len;
	h->revision = rev;
	memcpy(h->oem_id, ACPI_OEM_ID, 6);
	memcpy(h->oem_table_id, ACPI_OEM_TABLE, 8);
	h->oem_revision = 1;
	memcpy(h->creator_id, ACPI_CREATOR, 4);
	h->creator_revision = 1;
	h->checksum = 0;
}

/* A register of @bits bits at I/O @port, accessed @bits wide. */
static struct acpi_gas gas_port(uint16_t port, uint8_t bits)
{
	return (struct acpi_gas){ .space_id = ACPI_SPACE_SYSTEM_IO, .bit_width = bits,
				  .access_size = (uint8_t)(bits == 8 ? ACPI_ACCESS_BYTE :
							   bits == 16 ? 2 : 3),
				  .address = port };
}

/* _PRT: every slot's INTA..INTD.  INTA of slot S is the MP table's pin
 * (X86_PCI_INTX_PIN); INTB..INTD rotate through the same eight pins, as
 * a PCI-to-PCI bridge swizzles. */
static void dsdt_prt(struct aml *a)
{
	aml_name(a, "_PRT");
	aml_package_begin(a, (X86_PCI_SLOTS - 1) * 4);
	for (unsigned slot = 1; slot < X86_PCI_SLOTS; slot++)
		for (unsigned pin = 0; pin < 4; pin++) {
			aml_package_begin(a, 4);
			aml_integer(a, (uint64_t)slot << 16 | 0xffff); /* any function */
			aml_integer(a, pin);
			aml_integer(a, 0); /* no link device: the next is a GSI */
			aml_integer(a, 16u + (slot - 1u + pin) % 8u);
			aml_end(a);
		}
	aml_end(a);
}

_Static_assert(X86_PCI_INTX_PIN(1) == 16 && X86_PCI_INTX_PIN(9) == 16,
	       "_PRT's INTA matches the MP table's pins");

int acpi_dsdt_build(void *buf, size_t len, const struct acpi_machine *m)
{
	struct acpi_header *h = buf;
	const uint8_t *aml_out;
	size_t aml_len;
	struct aml a;
	int r;

	if (len < sizeof(*h))
		return -ENOSPC;
	aml_init(&a);
	aml_scope_begin(&a, "\\_SB");

	aml_device_begin(&a, "PCI0");
	aml_name(&a, "_HID");
	aml_eisaid(&a, "PNP0A08");
	aml_name(&a, "_CID");
	aml_eisaid(&a, "PNP0A03");
	aml_name(&a, "_SEG");
	aml_integer(&a, 0);
	aml_name(&a, "_BBN");
	aml_integer(&a, 0);
	aml_name(&a, "_UID");
	aml_integer(&a, 0);
	aml_name(&a, "_CRS");
	aml_buffer_begin(&a);
	aml_rt_word_bus(&a, 0, 0); /* bus 0 only */
	/* The I/O the bus decodes: all but the configuration ports. */
	aml_rt_word_io(&a, 0x0000, PCI_CFG_ADDR_PORT - 1);
	aml_rt_word_io(&a, PCI_CFG_DATA_PORT + 4, 0xffff);
	aml_rt_dword_memory(&a, (uint32_t)X86_PCI_MMIO_BASE,
			    (uint32_t)(X86_PCI_MMIO_BASE + X86_PCI_MMIO_SIZE - 1));
	aml_rt_end(&a);
	aml_end(&a);
	dsdt_prt(&a);
	aml_end(&a); /* PCI0 */

	/* The ISA devices a PC has at fixed places, as a firmware lists
	 * them (an OS with no legacy knowledge finds their IRQs here). */
	aml_device_begin(&a, "COM1");
	aml_name(&a, "_HID");
	aml_eisaid(&a, "PNP0501");
	aml_name(&a, "_UID");
	aml_integer(&a, 1);
	aml_name(&a, "_CRS");
	aml_buffer_begin(&a);
	aml_rt_io(&a, SERIAL_COM1_BASE, 8);
	aml_rt_irq(&a, SERIAL_COM1_IRQ);
	aml_rt_end(&a);
	aml_end(&a);
	aml_end(&a); /* COM1 */

	aml_device_begin(&a, "RTC_");
	aml_name(&a, "_HID");
	aml_eisaid(&a, "PNP0B00");
	aml_name(&a, "_CRS");
	aml_buffer_begin(&a);
	aml_rt_io(&a, RTC_INDEX_PORT, 2);
	aml_rt_irq(&a, 8);
	aml_rt_end(&a);
	aml_end(&a);
	aml_end(&a); /* RTC */

	if (m->pvpanic) {
		aml_device_begin(&a, "PEVT");
		aml_name(&a, "_HID");
		aml_string(&a, "QEMU0001");
		aml_name(&a, "_STA");
		aml_integer(&a, 0x0f); /* present, enabled, shown, working */
		aml_name(&a, "_CRS");
		aml_buffer_begin(&a);
		aml_rt_io(&a, PVPANIC_ISA_PORT, 1);
		aml_rt_end(&a);
		aml_end(&a);
		aml_end(&a); /* PEVT */
	}
	aml_end(&a); /* \_SB */

	/* \_S5: SLP_TYP for PM1a_CNT. */
	aml_name(&a, "\\_S5");
	aml_package_begin(&a, 4);
	aml_integer(&a, ACPI_S5_SLP_TYP);
	aml_integer(&a, ACPI_S5_SLP_TYP);
	aml_integer(&a, 0);
	aml_integer(&a, 0);
	aml_end(&a);

	r = aml_finish(&a, &aml_out, &aml_len);
	if (!r && aml_len > len - sizeof(*h))
		r = -ENOSPC;
	if (!r) {
		memset(h, 0, sizeof(*h));
		header_fill(h, "DSDT", (uint32_t)(sizeof(*h) + aml_len), 2);
		memcpy(h + 1, aml_out, aml_len);
		h->checksum = acpi_checksum(buf, h->length);
		r = (int)h->length;
	}
	aml_free(&a);
	return r;
}

/* The MADT for @m at @buf (@len bytes): its length or -ENOSPC. */
static int madt_build(uint8_t *buf, size_t len, const struct acpi_machine *m)
{
	size_t need = sizeof(struct acpi_madt) + m->ncpus * sizeof(struct madt_lapic) +
		      sizeof(struct madt_ioapic) + sizeof(struct madt_iso) +
		      sizeof(struct madt_lapic_nmi);
	struct acpi_madt *madt = (struct acpi_madt *)buf;
	uint8_t *p = buf + sizeof(*madt);
	uint8_t ioapic_id = (uint8_t)m->ncpus;

	if (len < need)
		return -ENOSPC;
	memset(buf, 0, need);
	madt->lapic_address = (uint32_t)X86_LAPIC_BASE;
	madt->flags = MADT_PCAT_COMPAT;
	for (unsigned i = 0; i < m->ncpus; i++) {
		struct madt_lapic l = { .type = 0, .length = sizeof(l), .processor_uid = (uint8_t)i,
					.apic_id = (uint8_t)i, .flags = 1 /* enabled */ };

		memcpy(p, &l, sizeof(l));
		p += sizeof(l);
	}
	struct madt_ioapic io = { .type = 1, .length = sizeof(io), .ioapic_id = ioapic_id,
				  .address = (uint32_t)X86_IOAPIC_BASE, .gsi_base = 0 };
	memcpy(p, &io, sizeof(io));
	p += sizeof(io);
	/* ISA IRQs are identity-mapped (IRQ n on pin n, as the MP table and
	 * KVM's default routes have them), which is what ACPI means without an
	 * override; only the SCI's says how it is triggered (level, active
	 * high, as QEMU's; it never fires). */
	struct madt_iso iso = { .type = 2, .length = sizeof(iso), .bus = 0,
				.source = ACPI_SCI_IRQ, .gsi = ACPI_SCI_IRQ,
				.flags = MADT_ISO_ACTIVE_HIGH_LEVEL };
	memcpy(p, &iso, sizeof(iso));
	p += sizeof(iso);
	/* LINT1 of every processor is the NMI (the MP table's local entry). */
	struct madt_lapic_nmi nmi = { .type = 4, .length = sizeof(nmi), .processor_uid = 0xff,
				      .flags = 0, .lint = 1 };
	memcpy(p, &nmi, sizeof(nmi));
	p += sizeof(nmi);
	header_fill(&madt->h, "APIC", (uint32_t)(p - buf), 5);
	madt->h.checksum = acpi_checksum(buf, madt->h.length);
	return (int)madt->h.length;
}

static void fadt_build(struct acpi_fadt *f, uint64_t dsdt_gpa, uint64_t facs_gpa)
{
	memset(f, 0, sizeof(*f));
	f->firmware_ctrl = (uint32_t)facs_gpa;
	f->x_firmware_ctrl = facs_gpa;
	f->dsdt = (uint32_t)dsdt_gpa;
	f->x_dsdt = dsdt_gpa;
	f->sci_int = ACPI_SCI_IRQ;
	/* smi_cmd 0: no SMI command port, the machine is in ACPI mode for good
	 * (PM1_CNT reads SCI_EN). */
	f->pm1a_evt_blk = ACPI_PM1_EVT_PORT;
	f->pm1_evt_len = 4;
	f->x_pm1a_evt_blk = gas_port(ACPI_PM1_EVT_PORT, 32);
	f->pm1a_cnt_blk = ACPI_PM1_CNT_PORT;
	f->pm1_cnt_len = 2;
	f->x_pm1a_cnt_blk = gas_port(ACPI_PM1_CNT_PORT, 16);
	f->p_lvl2_lat = 101; /* > 100: no C2 */
	f->p_lvl3_lat = 1001; /* > 1000: no C3 */
	f->flags = FADT_F_RESET_REG_SUP | FADT_F_PWR_BUTTON | FADT_F_SLP_BUTTON;
	f->iapc_boot_arch = FADT_BOOT_VGA_NOT_PRESENT;
	f->reset_reg = gas_port(ACPI_RESET_PORT, 8);
	f->reset_value = ACPI_RESET_VALUE;
	f->minor_version = 0;
	memcpy(&f->hypervisor_vendor_id, "VMRUNKVM", 8);
	header_fill(&f->h, "FACP", sizeof(*f), 6);
	f->h.checksum = acpi_checksum(f, sizeof(*f));
}

int acpi_tables_build(void *buf, size_t len, uint64_t gpa, const struct acpi_machine *m)
{
	uint8_t *b = buf;
	struct acpi_rsdp *rsdp = (struct acpi_rsdp *)(b + OFF_RSDP);
	struct acpi_header *xsdt = (struct acpi_header *)(b + OFF_XSDT);
	uint64_t entries[XSDT_ENTRIES];
	size_t madt_len, dsdt_off;
	int r;

	if (!m || m->ncpus == 0 || m->ncpus > VMRUN_MAX_CPUS || (gpa & 0xf))
		return -EINVAL;
	if (len < OFF_MADT || gpa + len > X86_HIGH_MEM || gpa + len < gpa)
		return -ENOSPC;
	_Static_assert(OFF_XSDT + sizeof(struct acpi_header) + XSDT_ENTRIES * 8 <= OFF_FACS,
		       "XSDT fits before the FACS");
	_Static_assert(OFF_FACS + sizeof(struct acpi_facs) <= OFF_FADT, "FACS fits before the FADT");
	_Static_assert(OFF_FADT + sizeof(struct acpi_fadt) <= OFF_MADT, "FADT fits before the MADT");
	memset(b, 0, OFF_MADT);

	r = madt_build(b + OFF_MADT, len - OFF_MADT, m);
	if (r < 0)
		return r;
	madt_len = (size_t)r;
	dsdt_off = (OFF_MADT + madt_len + 15) & ~(size_t)15;
	if (dsdt_off >= len)
		return -ENOSPC;
	r = acpi_dsdt_build(b + dsdt_off, len - dsdt_off, m);
	if (r < 0)
		return r;

	fadt_build((struct acpi_fadt *)(b + OFF_FADT), gpa + dsdt_off, gpa + OFF_FACS);
	{
		struct acpi_facs *facs = (struct acpi_facs *)(b + OFF_FACS);

		memcpy(facs->signature, "FACS", 4);
		facs->length = sizeof(*facs);
		facs->version = 2;
	}

	entries[0] = gpa + OFF_FADT;
	entries[1] = gpa + OFF_MADT;
	header_fill(xsdt, "XSDT", sizeof(*xsdt) + sizeof(entries), 1);
	memcpy(xsdt + 1, entries, sizeof(entries));
	xsdt->checksum = acpi_checksum(xsdt, xsdt->length);

	memcpy(rsdp->signature, "RSD PTR ", 8);
	memcpy(rsdp->oem_id, ACPI_OEM_ID, 6);
	rsdp->revision = 2;
	rsdp->rsdt_address = 0; /* XSDT only: every ACPI 2.0+ guest takes it */
	rsdp->length = sizeof(*rsdp);
	rsdp->xsdt_address = gpa + OFF_XSDT;
	rsdp->checksum = acpi_checksum(rsdp, 20);
	rsdp->extended_checksum = acpi_checksum(rsdp, sizeof(*rsdp));
	return (int)(dsdt_off + (size_t)r);
}

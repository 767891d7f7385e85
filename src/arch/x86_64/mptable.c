/* Intel MultiProcessor Specification 1.4 tables: how an SMP guest without
 * ACPI learns its CPUs, its IOAPIC and the ISA interrupt wiring. */
#include <errno.h>
#include <string.h>

#include "vmrun/config.h"
#include "vmrun/x86.h"

struct mpf_intel { /* floating pointer structure */
	char signature[4]; /* "_MP_" */
	uint32_t physptr;  /* configuration table */
	uint8_t length;    /* in 16-byte units */
	uint8_t specrev;
	uint8_t checksum;
	uint8_t feature[5];
} __attribute__((packed));

struct mpc_table { /* configuration table header */
	char signature[4]; /* "PCMP" */
	uint16_t length;   /* header plus entries */
	uint8_t spec;
	uint8_t checksum;
	char oem[8];
	char product[12];
	uint32_t oemptr;
	uint16_t oemsize;
	uint16_t oemcount;
	uint32_t lapic;
	uint32_t reserved;
} __attribute__((packed));

struct mpc_cpu {
	uint8_t type; /* 0 */
	uint8_t apicid;
	uint8_t apicver;
	uint8_t cpuflag;
	uint32_t cpufeature;
	uint32_t featureflag;
	uint32_t reserved[2];
} __attribute__((packed));

struct mpc_bus {
	uint8_t type; /* 1 */
	uint8_t busid;
	char bustype[6];
} __attribute__((packed));

struct mpc_ioapic {
	uint8_t type; /* 2 */
	uint8_t apicid;
	uint8_t apicver;
	uint8_t flags;
	uint32_t apicaddr;
} __attribute__((packed));

struct mpc_intsrc { /* type 3 (I/O interrupt) and 4 (local interrupt) */
	uint8_t type;
	uint8_t irqtype;
	uint16_t irqflag;
	uint8_t srcbus;
	uint8_t srcbusirq;
	uint8_t dstapic;
	uint8_t dstirq;
} __attribute__((packed));

_Static_assert(sizeof(struct mpf_intel) == 16, "mpf size");
_Static_assert(sizeof(struct mpc_table) == 44, "mpc size");
_Static_assert(sizeof(struct mpc_cpu) == 20, "cpu entry size");
_Static_assert(sizeof(struct mpc_intsrc) == 8, "intsrc size");

#define MP_CPU_ENABLED 0x01
#define MP_CPU_BSP 0x02
#define MP_IRQ_INT 0
#define MP_IRQ_NMI 1
#define MP_IRQ_EXTINT 3
#define MP_APIC_VERSION 0x14
#define MP_IOAPIC_VERSION 0x11
#define MP_ISA_IRQS 16
#define MP_PCI_BUS 0 /* Linux matches PCI bus numbers to MP bus IDs */
#define MP_ISA_BUS 1
#define MP_PCI_SLOTS (X86_PCI_SLOTS - 1) /* slots 1-31; 0 is the host bridge */

static uint8_t mp_checksum(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint8_t sum = 0;

	while (len--)
		sum += *b++;
	return (uint8_t)-sum;
}

int x86_mptable_build(void *buf, size_t len, uint64_t gpa, unsigned ncpus)
{
	size_t need = sizeof(struct mpf_intel) + sizeof(struct mpc_table) +
		      ncpus * sizeof(struct mpc_cpu) + 2 * sizeof(struct mpc_bus) +
		      sizeof(struct mpc_ioapic) +
		      (MP_PCI_SLOTS + MP_ISA_IRQS + 2) * sizeof(struct mpc_intsrc);
	struct mpf_intel *mpf = buf;
	struct mpc_table *mpc = (struct mpc_table *)(mpf + 1);
	uint8_t *p = (uint8_t *)(mpc + 1);
	uint8_t ioapic_id = (uint8_t)ncpus;

	if (len < need || ncpus == 0 || ncpus > VMRUN_MAX_CPUS || gpa + need > 0xffffffffull)
		return -ENOSPC;
	memset(buf, 0, need);

	for (unsigned i = 0; i < ncpus; i++) {
		struct mpc_cpu cpu = {
			.type = 0,
			.apicid = (uint8_t)i,
			.apicver = MP_APIC_VERSION,
			.cpuflag = MP_CPU_ENABLED | (i == 0 ? MP_CPU_BSP : 0),
			.cpufeature = 0x600,       /* family 6 */
			.featureflag = 0x201,      /* FPU, APIC */
		};
		memcpy(p, &cpu, sizeof(cpu));
		p += sizeof(cpu);
	}
	struct mpc_bus pci = { .type = 1, .busid = MP_PCI_BUS,
			       .bustype = { 'P', 'C', 'I', ' ', ' ', ' ' } };
	memcpy(p, &pci, sizeof(pci));
	p += sizeof(pci);
	struct mpc_bus bus = { .type = 1, .busid = MP_ISA_BUS,
			       .bustype = { 'I', 'S', 'A', ' ', ' ', ' ' } };
	memcpy(p, &bus, sizeof(bus));
	p += sizeof(bus);
	struct mpc_ioapic ioapic = {
		.type = 2, .apicid = ioapic_id, .apicver = MP_IOAPIC_VERSION, .flags = 1,
		.apicaddr = (uint32_t)X86_IOAPIC_BASE,
	};
	memcpy(p, &ioapic, sizeof(ioapic));
	p += sizeof(ioapic);
	/* PCI INTA# of each slot (source IRQ: slot << 2 | pin - 1), level and
	 * active low as the PCI bus defines (irqflag 0: conforms to the bus). */
	for (unsigned slot = 1; slot <= MP_PCI_SLOTS; slot++) {
		struct mpc_intsrc src = {
			.type = 3, .irqtype = MP_IRQ_INT, .irqflag = 0, .srcbus = MP_PCI_BUS,
			.srcbusirq = (uint8_t)(slot << 2), .dstapic = ioapic_id,
			.dstirq = (uint8_t)X86_PCI_INTX_PIN(slot),
		};
		memcpy(p, &src, sizeof(src));
		p += sizeof(src);
	}
	/* KVM's default GSI routing sends ISA IRQ n to IOAPIC pin n. */
	for (unsigned irq = 0; irq < MP_ISA_IRQS; irq++) {
		struct mpc_intsrc src = {
			.type = 3, .irqtype = MP_IRQ_INT, .irqflag = 0, .srcbus = MP_ISA_BUS,
			.srcbusirq = (uint8_t)irq, .dstapic = ioapic_id, .dstirq = (uint8_t)irq,
		};
		memcpy(p, &src, sizeof(src));
		p += sizeof(src);
	}
	/* LINT0 as ExtINT (the 8259's virtual wire), LINT1 as NMI, on all LAPICs. */
	struct mpc_intsrc lint0 = { .type = 4, .irqtype = MP_IRQ_EXTINT, .dstapic = 0xff, .dstirq = 0 };
	struct mpc_intsrc lint1 = { .type = 4, .irqtype = MP_IRQ_NMI, .dstapic = 0xff, .dstirq = 1 };
	memcpy(p, &lint0, sizeof(lint0));
	p += sizeof(lint0);
	memcpy(p, &lint1, sizeof(lint1));
	p += sizeof(lint1);

	memcpy(mpc->signature, "PCMP", 4);
	mpc->length = (uint16_t)(p - (uint8_t *)mpc);
	mpc->spec = 4;
	memcpy(mpc->oem, "VMRUN   ", 8);
	memcpy(mpc->product, "VMRUN-KVM   ", 12);
	mpc->oemcount = (uint16_t)(ncpus + 2 + 1 + MP_PCI_SLOTS + MP_ISA_IRQS + 2);
	mpc->lapic = (uint32_t)X86_LAPIC_BASE;
	mpc->checksum = mp_checksum(mpc, mpc->length);

	memcpy(mpf->signature, "_MP_", 4);
	mpf->physptr = (uint32_t)(gpa + sizeof(*mpf));
	mpf->length = 1;
	mpf->specrev = 4;
	mpf->checksum = mp_checksum(mpf, sizeof(*mpf));
	return (int)(p - (uint8_t *)buf);
}

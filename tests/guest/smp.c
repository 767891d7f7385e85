/* smp: find the CPUs in the Intel MP table (MP spec 1.4) and start every AP
 * with INIT-SIPI-SIPI through the xAPIC ICR.  Checks the VMM's MP table, its
 * in-kernel LAPIC's start-up IPIs and that every vCPU runs; each CPU prints
 * "cpu <apic id> online" and counts itself in. */
#include "guest.h"

#define MAX_CPUS 64          /* stack slots; more CPUs than this park */
#define AP_STACK_SIZE 8192
#define SPURIOUS_VECTOR 0x2f

#define BDA_EBDA_SEGMENT 0x40e /* u16: real-mode segment of the EBDA */
#define BDA_BASE_MEM_KIB 0x413 /* u16: base memory size in KiB */
#define BIOS_ROM_START 0xf0000
#define BIOS_ROM_SIZE 0x10000

#define MP_ENTRY_CPU 0
#define MP_ENTRY_BUS 1
#define MP_ENTRY_IOAPIC 2
#define MP_ENTRY_IOINT 3
#define MP_ENTRY_LINT 4
#define MP_CPU_ENABLED 0x01
#define MP_IOAPIC_ENABLED 0x01

struct mp_floating {         /* "_MP_" floating pointer structure */
	char signature[4];
	uint32_t config;     /* physical address of the configuration table */
	uint8_t length;      /* in 16-byte units */
	uint8_t spec_rev;
	uint8_t checksum;
	uint8_t feature[5];
} __attribute__((packed));

struct mp_config {           /* "PCMP" configuration table header */
	char signature[4];
	uint16_t length;     /* base table: header plus entries */
	uint8_t spec_rev;
	uint8_t checksum;
	char oem[8];
	char product[12];
	uint32_t oem_table;
	uint16_t oem_size;
	uint16_t entry_count;
	uint32_t lapic;
	uint16_t ext_length;
	uint8_t ext_checksum;
	uint8_t reserved;
} __attribute__((packed));

struct mp_cpu {              /* entry type 0 */
	uint8_t type;
	uint8_t apic_id;
	uint8_t apic_version;
	uint8_t flags;
	uint32_t signature;
	uint32_t features;
	uint32_t reserved[2];
} __attribute__((packed));

struct mp_ioapic {           /* entry type 2 */
	uint8_t type;
	uint8_t id;
	uint8_t version;
	uint8_t flags;
	uint32_t address;
} __attribute__((packed));

_Static_assert(sizeof(struct mp_floating) == 16, "MP floating pointer is 16 bytes");
_Static_assert(sizeof(struct mp_config) == 44, "MP config header is 44 bytes");
_Static_assert(sizeof(struct mp_cpu) == 20, "MP processor entry is 20 bytes");
_Static_assert(sizeof(struct mp_ioapic) == 8, "MP IOAPIC entry is 8 bytes");

/* What the table says. */
struct mp_info {
	unsigned ncpus;
	uint8_t cpu_ids[MAX_CPUS];
	unsigned ioapic_id;
	uint32_t ioapic_addr;
};

static uint8_t ap_stacks[MAX_CPUS][AP_STACK_SIZE] __attribute__((section(".noinit"), aligned(16)));
static volatile uint32_t cpus_online;

/* Sum of @len bytes at @p modulo 256: zero for a valid MP structure. */
static uint8_t mp_sum(const uint8_t *p, size_t len)
{
	uint8_t s = 0;

	while (len--)
		s += *p++;
	return s;
}

/* The first "_MP_" with a valid checksum in [@start, @start + @len), on
 * 16-byte boundaries; sets *@bad_sum when a signature had a bad one. */
static const struct mp_floating *mp_scan(uintptr_t start, size_t len, bool *bad_sum)
{
	for (uintptr_t a = start; a + sizeof(struct mp_floating) <= start + len; a += 16) {
		const struct mp_floating *f = phys_ptr(a);

		if (memcmp(f->signature, "_MP_", 4))
			continue;
		if (f->length && !mp_sum((const uint8_t *)f, f->length * 16u))
			return f;
		*bad_sum = true;
	}
	return NULL;
}

/* Search where MP spec 1.4 (section 4) says the floating pointer may be. */
static const struct mp_floating *mp_find_floating(bool *bad_sum)
{
	uint16_t ebda = *(volatile uint16_t *)phys_ptr(BDA_EBDA_SEGMENT);
	uint16_t base_kib = *(volatile uint16_t *)phys_ptr(BDA_BASE_MEM_KIB);
	const struct mp_floating *f = NULL;

	/* A zero BDA field means the loader wrote no BIOS data area. */
	if (ebda)
		f = mp_scan((uintptr_t)ebda << 4, 1024, bad_sum);
	if (!f)
		f = mp_scan(((uintptr_t)(base_kib ? base_kib : 640) - 1) * 1024, 1024, bad_sum);
	if (!f)
		f = mp_scan(BIOS_ROM_START, BIOS_ROM_SIZE, bad_sum);
	return f;
}

/* Parse the MP table into @mp; NULL on success, else why it is unusable. */
static const char *mp_parse(struct mp_info *mp)
{
	bool bad_sum = false, have_ioapic = false;
	const struct mp_floating *f = mp_find_floating(&bad_sum);
	const struct mp_config *c;
	const uint8_t *p, *end;

	if (!f)
		return bad_sum ? "bad MP floating pointer checksum" : "no MP floating pointer";
	if (!f->config)
		return "no MP configuration table (default configurations unsupported)";
	c = phys_ptr(f->config);
	if (memcmp(c->signature, "PCMP", 4))
		return "bad MP configuration table signature";
	if (c->length < sizeof(*c) || mp_sum((const uint8_t *)c, c->length))
		return "bad MP configuration table checksum";

	mp->ncpus = 0;
	p = (const uint8_t *)(c + 1);
	end = (const uint8_t *)c + c->length;
	/* Walk by the base table length, as Linux does: some firmware (QEMU's
	 * qboot) leaves entry_count zero. */
	while (p < end) {
		if (*p == MP_ENTRY_CPU) {
			const struct mp_cpu *cpu = (const void *)p;

			if (p + sizeof(*cpu) > end)
				return "truncated MP processor entry";
			if (cpu->flags & MP_CPU_ENABLED) {
				if (mp->ncpus == MAX_CPUS)
					return "more CPUs than this guest supports";
				mp->cpu_ids[mp->ncpus++] = cpu->apic_id;
			}
			p += sizeof(*cpu);
		} else if (*p == MP_ENTRY_IOAPIC) {
			const struct mp_ioapic *io = (const void *)p;

			if (p + sizeof(*io) > end)
				return "truncated MP IOAPIC entry";
			if ((io->flags & MP_IOAPIC_ENABLED) && !have_ioapic) {
				have_ioapic = true;
				mp->ioapic_id = io->id;
				mp->ioapic_addr = io->address;
			}
			p += sizeof(*io);
		} else if (*p == MP_ENTRY_BUS || *p == MP_ENTRY_IOINT || *p == MP_ENTRY_LINT) {
			p += 8;
		} else {
			return "unknown MP table entry type";
		}
	}
	if (!mp->ncpus)
		return "no enabled processor in the MP table";
	if (!have_ioapic)
		return "no IOAPIC in the MP table";
	return NULL;
}

/* Count this CPU in: print under the console lock, then a locked increment. */
static void cpu_online(void)
{
	gprintf("cpu %u online\n", lapic_id());
	__asm__ volatile("lock incl %0" : "+m"(cpus_online) : : "memory");
}

/* C entry of every AP, on its own stack (see ap_tramp_install()). */
static noreturn void ap_main(void)
{
	idt_load(); /* faults report instead of triple-faulting */
	cpu_online();
	cpu_park();
}

int guest_main(void)
{
	struct mp_info mp = { 0 };
	const char *err = mp_parse(&mp);
	unsigned bsp;
	bool bsp_listed = false;

	if (err) {
		gprintf("smp: FAIL %s\n", err);
		return 1;
	}
	gprintf("mptable: %u cpus, ioapic %u at 0x%x\n", mp.ncpus, mp.ioapic_id, mp.ioapic_addr);
	bsp = lapic_id();
	for (unsigned i = 0; i < mp.ncpus; i++)
		bsp_listed |= mp.cpu_ids[i] == bsp;
	if (!bsp_listed) {
		gprintf("smp: FAIL boot CPU (APIC ID %u) is not in the MP table\n", bsp);
		return 1;
	}

	lapic_enable(SPURIOUS_VECTOR);
	ap_tramp_install(ap_stacks, MAX_CPUS, AP_STACK_SIZE, ap_main);
	cpu_online();
	for (unsigned i = 0; i < mp.ncpus; i++) {
		if (mp.cpu_ids[i] != bsp)
			ap_start(mp.cpu_ids[i]);
	}
	/* No timeout: the host bounds the run (vmrun --timeout). */
	while (cpus_online < mp.ncpus)
		cpu_pause();
	gprintf("smp: %u of %u cpus online\n", cpus_online, mp.ncpus);
	return 0;
}

/* acpi: find the machine's ACPI tables as an OS would and use them, or
 * report pvpanic events.  Written from the ACPI 6.4 specification (5.2.5
 * RSDP, 5.2.8 XSDT, 5.2.9 FADT, 20.2 AML encoding) and QEMU's pvpanic
 * documentation (docs/specs/pvpanic.rst), not from vmrun's code.
 *
 * action= on the command line:
 *   tables       find and check the tables, print what they say, exit 0
 *   poweroff     write SLP_TYP (from \_S5) | SLP_EN to PM1a_CNT (or, on a
 *                hardware-reduced machine, to the sleep control register)
 *   reset        write RESET_VALUE to the reset register
 *   pvpanic-pci  find PCI 1b36:0011, read its events byte, write PANICKED
 *   pvpanic-isa  read port 0x505, write PANICKED there
 * Lines: "acpi: ..." on success, "acpi: FAIL <reason>" (exit 1) on a
 * failure, "acpi: no RSDP" (exit 2) when there are no tables, and
 * "acpi: still running after <action>" (exit 0x7f) when a write that should
 * have ended the run did not. */
#include "guest.h"

struct gas {
	uint8_t space_id, bit_width, bit_offset, access_size;
	uint64_t address;
} __attribute__((packed));

static uint8_t sum8(const uint8_t *p, uint32_t len)
{
	uint8_t s = 0;

	while (len--)
		s = (uint8_t)(s + *p++);
	return s;
}

static bool sig_is(const uint8_t *p, const char *sig, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (p[i] != (uint8_t)sig[i])
			return false;
	return true;
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static bool streq(const char *a, const char *b)
{
	return strlen(a) == strlen(b) && !memcmp(a, b, strlen(a));
}

static int fail(const char *why)
{
	gprintf("acpi: FAIL %s\n", why);
	return 1;
}

/* The RSDP in the BIOS area, 16-byte steps, with both checksums. */
static const uint8_t *find_rsdp(void)
{
	for (uintptr_t a = 0xe0000; a < 0x100000; a += 16) {
		const uint8_t *p = phys_ptr(a);

		if (sig_is(p, "RSD PTR ", 8) && sum8(p, 20) == 0 && p[15] >= 2 &&
		    le32(p + 20) >= 36 && sum8(p, le32(p + 20)) == 0)
			return p;
	}
	return NULL;
}

/* A table at @pa with signature @sig, a sane length and a zero sum. */
static const uint8_t *table_at(uint64_t pa, const char *sig)
{
	const uint8_t *t;

	if (pa < 0x1000 || pa >= 0x100000000ull)
		return NULL;
	t = phys_ptr((uintptr_t)pa);
	if (!sig_is(t, sig, 4) || le32(t + 4) < 36 || le32(t + 4) > 0x10000 ||
	    sum8(t, le32(t + 4)) != 0)
		return NULL;
	return t;
}

/* SLP_TYPa from the DSDT's Name(_S5, Package(){...}): the NameOp, the
 * name (perhaps with a root prefix), PackageOp, a one-byte PkgLength, NumElements, then a ByteConst,
 * Zero or One. */
static int s5_slp_typ(const uint8_t *dsdt)
{
	uint32_t len = le32(dsdt + 4);

	for (uint32_t i = 36; i + 10 < len; i++) {
		const uint8_t *p = dsdt + i;

		if (p[0] != 0x08)
			continue;
		if (p[1] == '\\')
			p++; /* \_S5: from the root */
		if (!sig_is(p + 1, "_S5_", 4) || p[5] != 0x12)
			continue;
		if (p[6] & 0xc0)
			return -1; /* a longer PkgLength than a small package has */
		if (p[8] == 0x0a)
			return p[9];
		if (p[8] == 0x00 || p[8] == 0x01)
			return p[8];
		return -1;
	}
	return -1;
}

static uint32_t pci_cfg32(unsigned slot, unsigned reg)
{
	outl(0xcf8, 0x80000000u | slot << 11 | (reg & 0xfc));
	return inl(0xcfc);
}

static int pvpanic_pci(void)
{
	for (unsigned slot = 0; slot < 32; slot++) {
		uint32_t id = pci_cfg32(slot, 0), bar;
		uint8_t events;

		if (id != (0x0011u << 16 | 0x1b36u))
			continue;
		bar = pci_cfg32(slot, 0x10);
		if ((bar & 1) || !(bar & ~0xfu))
			return fail("pvpanic BAR 0 is not a memory BAR");
		/* Memory space on (vmrun leaves it on; a firmware would too). */
		outl(0xcf8, 0x80000000u | slot << 11 | 0x04);
		outw(0xcfc, (uint16_t)(inw(0xcfc) | 0x2));
		events = mmio_read8(bar & ~0xfu);
		gprintf("acpi: pvpanic-pci at slot %u, BAR 0x%x, events 0x%x\n", slot,
			bar & ~0xfu, events);
		if (!(events & 1))
			return fail("pvpanic-pci does not offer PANICKED");
		mmio_write8(bar & ~0xfu, 1);
		gprintf("acpi: still running after pvpanic-pci\n");
		return 0x7f;
	}
	return fail("no pvpanic PCI function");
}

static int pvpanic_isa(void)
{
	uint8_t events = inb(0x505);

	gprintf("acpi: pvpanic port events 0x%x\n", events);
	if (events == 0xff || !(events & 1))
		return fail("port 0x505 does not offer PANICKED");
	/* Hostile first: a word write and a CRASH_LOADED alone change nothing. */
	outw(0x505, 0x0101);
	outb(0x505, 2);
	gprintf("acpi: still alive after a word write and CRASH_LOADED\n");
	outb(0x505, 1);
	gprintf("acpi: still running after pvpanic-isa\n");
	return 0x7f;
}

int guest_main(void)
{
	char action[16] = "tables";
	const uint8_t *rsdp, *xsdt, *fadt = NULL, *dsdt;
	struct gas sleep, reset, pm1a_cnt;
	uint32_t flags;
	bool reduced;
	int slp_typ;

	cmdline_get("action", action, sizeof(action));
	if (streq(action, "pvpanic-pci"))
		return pvpanic_pci();
	if (streq(action, "pvpanic-isa"))
		return pvpanic_isa();

	rsdp = find_rsdp();
	if (!rsdp) {
		gprintf("acpi: no RSDP\n");
		return 2;
	}
	xsdt = table_at(le64(rsdp + 24), "XSDT");
	if (!xsdt)
		return fail("no valid XSDT");
	for (uint32_t off = 36; off + 8 <= le32(xsdt + 4); off += 8) {
		const uint8_t *t = table_at(le64(xsdt + off), "FACP");

		if (t)
			fadt = t;
	}
	if (!fadt || le32(fadt + 4) < 276)
		return fail("no revision 6 FADT in the XSDT");
	dsdt = table_at(le64(fadt + 140), "DSDT");
	if (!dsdt || le32(fadt + 40) != (uint32_t)le64(fadt + 140))
		return fail("X_DSDT and DSDT disagree or the DSDT is invalid");
	flags = le32(fadt + 112);
	reduced = flags & (1u << 20);
	memcpy(&reset, fadt + 116, sizeof(reset));
	memcpy(&pm1a_cnt, fadt + 172, sizeof(pm1a_cnt));
	if (!pm1a_cnt.address) { /* the 32-bit field, when X_PM1a_CNT_BLK is empty */
		pm1a_cnt.space_id = 1;
		pm1a_cnt.address = le32(fadt + 64);
	}
	memcpy(&sleep, fadt + 244, sizeof(sleep));
	slp_typ = s5_slp_typ(dsdt);
	gprintf("acpi: rsdp rev %u, fadt rev %u, hw-reduced %u, reset-reg %u, sci %u, "
		"pm1a_cnt port 0x%lx, reset port 0x%lx value 0x%x, S5 %d\n", rsdp[15], fadt[8],
		reduced, (flags >> 10) & 1, fadt[46] | fadt[47] << 8, pm1a_cnt.address,
		reset.address, fadt[128], slp_typ);
	if (reduced && (sleep.space_id != 1 || !sleep.address))
		return fail("no sleep control register in system I/O");
	if (!reduced && (pm1a_cnt.space_id != 1 || !pm1a_cnt.address || fadt[89] != 2))
		return fail("no 2-byte PM1a control block in system I/O");
	if (!(flags & (1u << 10)) || reset.space_id != 1 || !reset.address)
		return fail("no reset register in system I/O");
	if (slp_typ < 0 || slp_typ > 7)
		return fail("no usable \\_S5 in the DSDT");

	if (streq(action, "poweroff") && reduced) {
		/* Wrong things first: another sleep type, and SLP_TYP without
		 * SLP_EN, must not end the run. */
		outb((uint16_t)sleep.address, (uint8_t)(((slp_typ + 1) & 7) << 2 | 0x20));
		outb((uint16_t)sleep.address, (uint8_t)(slp_typ << 2));
		gprintf("acpi: still alive after the wrong sleep writes\n");
		outb((uint16_t)sleep.address, (uint8_t)(slp_typ << 2 | 0x20));
	} else if (streq(action, "poweroff")) {
		/* PM1_CNT: SLP_TYP in bits 10-12, SLP_EN bit 13, read-modify-
		 * write as an OS does (SCI_EN must read 1: ACPI mode).  Wrong
		 * things first: another sleep type, SLP_TYP without SLP_EN. */
		uint16_t port = (uint16_t)pm1a_cnt.address, cnt = inw(port);

		if (!(cnt & 1))
			return fail("PM1a_CNT.SCI_EN is clear: not in ACPI mode");
		cnt &= (uint16_t)~0x3c00;
		outw(port, (uint16_t)(cnt | ((slp_typ + 1) & 7) << 10 | 0x2000));
		outw(port, (uint16_t)(cnt | slp_typ << 10));
		gprintf("acpi: still alive after the wrong sleep writes\n");
		outw(port, (uint16_t)(cnt | slp_typ << 10 | 0x2000));
	} else if (streq(action, "reset")) {
		outb((uint16_t)reset.address, (uint8_t)(fadt[128] ^ 0xff));
		gprintf("acpi: still alive after a wrong reset value\n");
		outb((uint16_t)reset.address, fadt[128]);
	} else {
		gprintf("acpi: ok\n");
		return 0;
	}
	gprintf("acpi: still running after %s\n", action);
	return 0x7f;
}

/* unclaimed: accesses nobody claims must read as all-ones and swallow writes,
 * as on a real PC bus: port 0x510 at 1, 2 and 4 bytes, MMIO 0xd0000000 (in
 * the MMIO hole) at 1, 2, 4 and 8 bytes, each read twice, then written, then
 * read once more to show the write did not stick.  Then the ports every PC
 * guest probes (0x80, 0x87, 0x2e9, 0x2f9, 0x3e9), which vmrun claims as
 * "nothing here": each written, then read as 0xff. */
#include "guest.h"

#define PORT 0x510
#define MMIO 0xd0000000ul

static const uint16_t probe_ports[] = { 0x80, 0x87, 0x2e9, 0x2f9, 0x3e9 };

/* Report @what = @got unless it equals @want; returns whether it did. */
static bool check(const char *what, uint64_t got, uint64_t want)
{
	if (got == want)
		return true;
	gprintf("unclaimed: FAIL %s got 0x%lx\n", what, got);
	return false;
}

/* Two reads of every width; false after reporting the first wrong one.
 * Twice because the first access of a kind may take a different
 * path in the VMM (e.g. creating a cached no-device entry) than later ones. */
static bool reads_ok(void)
{
	for (int i = 0; i < 2; i++) {
		if (!check("inb(0x510)", inb(PORT), 0xff) ||
		    !check("inw(0x510)", inw(PORT), 0xffff) ||
		    !check("inl(0x510)", inl(PORT), 0xffffffff) ||
		    !check("mmio8(0xd0000000)", mmio_read8(MMIO), 0xff) ||
		    !check("mmio16(0xd0000000)", mmio_read16(MMIO), 0xffff) ||
		    !check("mmio32(0xd0000000)", mmio_read32(MMIO), 0xffffffff) ||
		    !check("mmio64(0xd0000000)", mmio_read64(MMIO), ~0ull))
			return false;
	}
	return true;
}

int guest_main(void)
{
	if (!reads_ok())
		return 1;
	outb(PORT, 0x12);
	outw(PORT, 0x1234);
	outl(PORT, 0x12345678);
	mmio_write8(MMIO, 0x12);
	mmio_write16(MMIO, 0x1234);
	mmio_write32(MMIO, 0x12345678);
	mmio_write64(MMIO, 0x123456789abcdef0ull);
	if (!check("inl(0x510) after write", inl(PORT), 0xffffffff) ||
	    !check("mmio64(0xd0000000) after write", mmio_read64(MMIO), ~0ull))
		return 1;
	for (unsigned i = 0; i < sizeof(probe_ports) / sizeof(probe_ports[0]); i++) {
		outb(probe_ports[i], 0);
		if (!check("a probed port after a write", inb(probe_ports[i]), 0xff))
			return 1;
	}
	gprintf("unclaimed: ok\n");
	return 0;
}

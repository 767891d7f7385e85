/* memtouch: fill M MiB of guest RAM with a checkable pattern from ring 3,
 * where this platform runs guest code natively, then stay alive printing a
 * heartbeat.  The guest of bench/snapshot.py: a VM with a known amount of
 * touched (non-zero) memory, whose every byte can be checked on demand
 * after a save and restore.
 *
 * Command line (all optional):
 *   touch=M     MiB to fill (default 64)
 *   base=B      first MiB filled (default 16: above the image and its BSS)
 *   lowtop=T    MiB where RAM below 4 GiB ends (default 3072, vmrun's and
 *               QEMU microvm's layout); the fill continues at 4 GiB
 *   ticks=N     exit 0 after N heartbeats (default 0: never)
 *   seed=S      pattern seed (default 0x6d656d746f756368, "memtouch")
 *
 * The 8-byte word at guest-physical address A holds A ^ seed (never zero
 * for the default seed: A < 2^40).  Once filled, the guest prints a
 * heartbeat line and polls COM1's receiver between lines (no interrupts):
 * 'v' runs a full check of the pattern, 'q' exits 0, anything else is
 * ignored.  The heartbeat reads no guest memory but its stack and globals,
 * so the first line after a restore costs the VMM's restore, not the
 * guest's faults.  Lines:
 *   memtouch: touching <M> MiB from 0x<pa>
 *   memtouch: touched <M> MiB
 *   tick <n>                                   (n from 1, one after another)
 *   memtouch: verified <M> MiB                 (after 'v')
 *   memtouch: FAIL 0x<pa> got 0x<v> want 0x<w> (after 'v', exit 1)
 *   memtouch: FAIL <why>                       (bad parameters, exit 2)
 * Everything after the page-table set-up runs at CPL 3; only port I/O (a
 * #GP on the development machines' nested KVM, see lib/user.c) and the exit
 * go through CPL 0. */
#include "guest.h"

#define MIB (1ul << 20)
#define FOUR_GIB GUEST_FOUR_GIB
#define DEFAULT_SEED 0x6d656d746f756368ull /* "memtouch" */

static uint64_t touch_bytes, base_pa, low_top, seed;
static long ticks;

/* Guest-physical address of byte @off of the touched region. */
static inline uint64_t region_pa(uint64_t off)
{
	uint64_t pa = base_pa + off;

	return pa < low_top ? pa : pa - low_top + FOUR_GIB;
}

/* Fill [off, off + len) (within one side of the hole) with the pattern. */
static void fill(uint64_t off, uint64_t len)
{
	uint64_t pa = region_pa(off);
	volatile uint64_t *p = phys_ptr(pa);

	for (uint64_t i = 0; i < len / 8; i++, pa += 8)
		p[i] = pa ^ seed;
}

/* Check [off, off + len); reports and exits on the first mismatch. */
static void check(uint64_t off, uint64_t len)
{
	uint64_t pa = region_pa(off);
	const volatile uint64_t *p = phys_ptr(pa);

	for (uint64_t i = 0; i < len / 8; i++, pa += 8) {
		uint64_t v = p[i];

		if (v != (pa ^ seed)) {
			gprintf("memtouch: FAIL 0x%lx got 0x%016lx want 0x%016lx\n", pa, v,
				pa ^ seed);
			guest_exit(1);
		}
	}
}

/* Apply @fn to [off, off + len) of the region, split where the region
 * jumps from low_top to 4 GiB. */
static void apply(void (*fn)(uint64_t, uint64_t), uint64_t off, uint64_t len)
{
	while (len) {
		uint64_t n = len;
		uint64_t low_left = base_pa + off < low_top ? low_top - (base_pa + off) : 0;

		if (low_left && n > low_left)
			n = low_left;
		fn(off, n);
		off += n;
		len -= n;
	}
}

static noreturn void user_main(void)
{
	uint64_t tick = 0;

	gprintf("memtouch: touching %lu MiB from 0x%lx\n", touch_bytes / MIB, base_pa);
	apply(fill, 0, touch_bytes);
	gprintf("memtouch: touched %lu MiB\n", touch_bytes / MIB);
	for (;;) {
		gprintf("tick %lu\n", ++tick);
		if (ticks > 0 && tick >= (uint64_t)ticks)
			guest_exit(0);
		if (!(inb(COM1_PORT + UART_LSR) & UART_LSR_DR))
			continue;
		switch (inb(COM1_PORT + UART_RBR)) {
		case 'v':
			apply(check, 0, touch_bytes);
			gprintf("memtouch: verified %lu MiB\n", touch_bytes / MIB);
			break;
		case 'q':
			guest_exit(0);
		default:
			break;
		}
	}
}

int guest_main(void)
{
	long touch = cmdline_get_int("touch", 64), base = cmdline_get_int("base", 16);
	long lowtop = cmdline_get_int("lowtop", 3072);
	uint64_t end;

	seed = (uint64_t)cmdline_get_int("seed", (long)DEFAULT_SEED);
	ticks = cmdline_get_int("ticks", 0);
	if (touch < 1 || base < 2 || lowtop <= base || lowtop > 4096) {
		gprintf("memtouch: FAIL bad touch=, base= or lowtop=\n");
		return 2;
	}
	touch_bytes = (uint64_t)touch * MIB;
	base_pa = (uint64_t)base * MIB;
	low_top = (uint64_t)lowtop * MIB;
	end = base_pa + touch_bytes;
	if (end > low_top) {
		end = end - low_top + FOUR_GIB;
		if (guest_map_high(end)) {
			gprintf("memtouch: FAIL touch= beyond %u GiB above 4 GiB\n", GUEST_HIGH_GIB_MAX);
			return 2;
		}
	}

	user_start(user_main);
}

/* migdirty: dirty every page of a region over and over from ring 3, where
 * this platform runs guest code natively, and check each page before it is
 * written again.  The guest of the live-migration tests and of
 * bench/migrate.py: a high, controllable dirty rate, and a stale page (one
 * the migration failed to send again after the guest changed it) shows up
 * on the destination within one pass.
 *
 * Command line (all optional, decimal or 0x hex):
 *   mib=M       MiB dirtied (default 64)
 *   base=B      first MiB of the region (default 16: above the image)
 *   lowtop=T    MiB where RAM below 4 GiB ends (default 3072, vmrun's and
 *               QEMU microvm's layout); the region continues at 4 GiB
 *   every=K     print "pass <n>" after every K-th pass (default 1)
 *   passes=N    stop after pass N (default 0: never)
 *   rate=R      dirty at most R MiB/s (default 0: as fast as it can)
 *   tsc_khz=F   the TSC's frequency for rate= (default 0: measured against
 *               PIT channel 0 at start-up)
 *
 * Pass n (from 1) writes into the first 8-byte word of every 4 KiB page of
 * the region the value (n << 40) | A, A the page's guest-physical address
 * (below 2^40, never zero: the value names both the pass and the page).
 * From pass 2 on, each page must still hold pass n-1's value before it is
 * written.  A migration that leaves a page stale on the destination is
 * caught the next time the pass reaches that page.  On 'q' from COM1
 * (polled every 4096 pages and at the end of each pass), or after pass N,
 * the whole region is checked (pages the current pass has reached against
 * its value, the rest against the previous pass's), then the guest exits 0.
 * Lines:
 *   migdirty: <M> MiB from 0x<pa> every <K> passes <N> rate <R> tsc_khz <F>
 *   pass <n>                                         (n = K, 2K, 3K, ...)
 *   migdirty: verified <M> MiB pass <n> page <i>     (then exit 0)
 *   migdirty: STALE page 0x<pa> pass <n> got 0x<v> want 0x<w>     (exit 1)
 *   migdirty: FAIL <why>                             (bad parameters, exit 2)
 * Only the start-up (parameters, high mapping, TSC calibration) runs at
 * CPL 0; the passes run at CPL 3, leaving it only for port I/O (a #GP on the
 * development machines' nested KVM, see lib/user.c). */
#include "guest.h"

#define PAGE_SIZE 4096ul
#define MIB (1ul << 20)
#define FOUR_GIB GUEST_FOUR_GIB
#define PASS_SHIFT 40
#define POLL_PAGES 4096 /* COM1 polled every 16 MiB */

/* PIT channel 0, free-running (mode 2, count 65536) while the TSC is
 * measured against it, its count latched and read through ports 0x43 and
 * 0x40.  Channel 0 because both vmrun's and QEMU's KVM PIT run it in the
 * kernel, while port 0x61 (channel 2's gate) is a user-space device QEMU
 * microvm does not have.  Its interrupt is never taken: IF stays clear. */
#define PIT_CH0 0x40
#define PIT_CMD 0x43
#define PIT_HZ 1193182ul
#define CAL_TICKS 59659ul    /* 50 ms of PIT ticks per measurement */
#define CAL_RUNS 3
#define CAL_POLLS 10000000ul /* a PIT that never counts: give up */

static uint64_t region_bytes, base_pa, low_top, npages;
static uint64_t every, max_passes;
/* Pacing: TSC ticks per page at rate=, 0 for none; tsc_hz the frequency. */
static uint64_t ticks_per_page, tsc_hz;

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return (uint64_t)hi << 32 | lo;
}

/* Guest-physical address of page @i of the region. */
static inline uint64_t page_pa(uint64_t i)
{
	uint64_t pa = base_pa + i * PAGE_SIZE;

	return pa < low_top ? pa : pa - low_top + FOUR_GIB;
}

/* What pass @pass leaves in the first word of the page at @pa. */
static inline uint64_t pass_value(uint64_t pass, uint64_t pa)
{
	return pass << PASS_SHIFT | pa;
}

static noreturn void stale(uint64_t pa, uint64_t pass, uint64_t got, uint64_t want)
{
	gprintf("migdirty: STALE page 0x%lx pass %lu got 0x%016lx want 0x%016lx\n", pa, pass, got,
		want);
	guest_exit(1);
}

/* Check the whole region in the middle of pass @pass, whose next page is
 * @next: pages below it hold pass's value, the others the previous pass's
 * (not checked in pass 1, where they hold whatever RAM held).  Then exit 0. */
static noreturn void verify_and_exit(uint64_t pass, uint64_t next)
{
	for (uint64_t i = 0; i < npages; i++) {
		uint64_t pa = page_pa(i);
		uint64_t want = pass_value(i < next ? pass : pass - 1, pa);
		uint64_t got = *(volatile uint64_t *)phys_ptr(pa);

		if (i >= next && pass == 1)
			break;
		if (got != want)
			stale(pa, i < next ? pass : pass - 1, got, want);
	}
	gprintf("migdirty: verified %lu MiB pass %lu page %lu\n", region_bytes / MIB, pass, next);
	guest_exit(0);
}

/* 'q' waiting on COM1: verify and exit.  Other bytes are dropped. */
static void poll_console(uint64_t pass, uint64_t next)
{
	if (!(inb(COM1_PORT + UART_LSR) & UART_LSR_DR))
		return;
	if (inb(COM1_PORT + UART_RBR) == 'q')
		verify_and_exit(pass, next);
}

/* Wait until page writes may go on at rate=.  @t_next is when the next
 * page is due.  A guest that fell behind (paused, migrated, descheduled)
 * catches up by at most 1 ms worth of pages; a TSC that jumped backwards
 * (another host) restarts the schedule instead of waiting it out. */
static inline void pace(uint64_t *t_next)
{
	uint64_t now = rdtsc();
	uint64_t burst = tsc_hz / 1000;

	*t_next += ticks_per_page;
	if ((int64_t)(*t_next - now) > (int64_t)(2 * ticks_per_page + burst))
		*t_next = now;
	else if ((int64_t)(now - *t_next) > (int64_t)burst)
		*t_next = now - burst;
	while ((int64_t)(*t_next - now) > 0) {
		cpu_pause();
		now = rdtsc();
	}
}

static noreturn void user_main(void)
{
	uint64_t t_next = rdtsc();

	for (uint64_t pass = 1;; pass++) {
		for (uint64_t i = 0; i < npages; i++) {
			uint64_t pa = page_pa(i);
			volatile uint64_t *p = phys_ptr(pa);

			if (pass > 1) {
				uint64_t want = pass_value(pass - 1, pa), got = *p;

				if (got != want)
					stale(pa, pass - 1, got, want);
			}
			*p = pass_value(pass, pa);
			if (ticks_per_page)
				pace(&t_next);
			if ((i + 1) % POLL_PAGES == 0)
				poll_console(pass, i + 1);
		}
		if (pass % every == 0)
			gprintf("pass %lu\n", pass);
		if (max_passes && pass >= max_passes)
			verify_and_exit(pass, npages);
		poll_console(pass, npages);
	}
}

/* PIT channel 0's current count (latched). */
static uint16_t pit_read(void)
{
	uint8_t lo, hi;

	outb(PIT_CMD, 0x00); /* latch channel 0 */
	lo = inb(PIT_CH0);
	hi = inb(PIT_CH0);
	return (uint16_t)(hi << 8 | lo);
}

/* The TSC frequency in Hz from one measurement of at least CAL_TICKS PIT
 * ticks, or 0 when the PIT does not count.  At CPL 0, where the port
 * accesses are plain exits.  The count wraps every 55 ms; a poll delayed
 * longer than that loses ticks and gives too high a frequency, which the
 * caller's minimum over several runs throws away. */
static uint64_t calibrate_once(void)
{
	uint16_t prev, cur;
	uint64_t t0, t1, ticks = 0;
	unsigned long polls = 0;

	outb(PIT_CMD, 0x34); /* channel 0, lobyte/hibyte, mode 2, binary */
	outb(PIT_CH0, 0);
	outb(PIT_CH0, 0); /* count 65536 */
	prev = pit_read();
	t0 = rdtsc();
	while (ticks < CAL_TICKS) {
		if (++polls > CAL_POLLS)
			return 0;
		cur = pit_read();
		ticks += (uint16_t)(prev - cur);
		prev = cur;
	}
	t1 = rdtsc();
	return (t1 - t0) * PIT_HZ / ticks;
}

/* The TSC frequency in Hz, the lowest of CAL_RUNS measurements; 0 when the
 * PIT does not count.  Leaves channel 0 in mode 0 (one interrupt, then
 * silence: not that IF is ever set here). */
static uint64_t calibrate_tsc(void)
{
	uint64_t best = 0;

	for (int r = 0; r < CAL_RUNS; r++) {
		uint64_t hz = calibrate_once();

		if (!hz)
			return 0;
		if (!best || hz < best)
			best = hz;
	}
	outb(PIT_CMD, 0x30); /* channel 0, lobyte/hibyte, mode 0 */
	outb(PIT_CH0, 0xff);
	outb(PIT_CH0, 0xff);
	return best;
}

int guest_main(void)
{
	long mib = cmdline_get_int("mib", 64), base = cmdline_get_int("base", 16);
	long lowtop = cmdline_get_int("lowtop", 3072), k = cmdline_get_int("every", 1);
	long passes = cmdline_get_int("passes", 0), rate = cmdline_get_int("rate", 0);
	long tsc_khz = cmdline_get_int("tsc_khz", 0);
	uint64_t end;

	if (mib < 1 || base < 2 || lowtop <= base || lowtop > 4096 || k < 1 || passes < 0 ||
	    rate < 0 || tsc_khz < 0) {
		gprintf("migdirty: FAIL bad mib=, base=, lowtop=, every=, passes=, rate= or "
			"tsc_khz=\n");
		return 2;
	}
	region_bytes = (uint64_t)mib * MIB;
	npages = region_bytes / PAGE_SIZE;
	base_pa = (uint64_t)base * MIB;
	low_top = (uint64_t)lowtop * MIB;
	every = (uint64_t)k;
	max_passes = (uint64_t)passes;
	end = base_pa + region_bytes;
	if (end > low_top) {
		end = end - low_top + FOUR_GIB;
		if (guest_map_high(end)) {
			gprintf("migdirty: FAIL mib= beyond %u GiB above 4 GiB\n", GUEST_HIGH_GIB_MAX);
			return 2;
		}
	}
	if (rate) {
		tsc_hz = tsc_khz ? (uint64_t)tsc_khz * 1000 : calibrate_tsc();
		if (!tsc_hz) {
			gprintf("migdirty: FAIL the PIT does not count: give tsc_khz=\n");
			return 2;
		}
		/* ticks per page = tsc_hz / (rate MiB/s / 4 KiB) */
		ticks_per_page = tsc_hz / ((uint64_t)rate * (MIB / PAGE_SIZE));
		if (!ticks_per_page)
			ticks_per_page = 1;
	}
	gprintf("migdirty: %ld MiB from 0x%lx every %ld passes %ld rate %ld tsc_khz %lu\n", mib,
		base_pa, k, passes, rate, tsc_hz / 1000);
	user_start(user_main);
}

/* snapcount: a guest whose whole state is its progress, for whole-VM
 * snapshot/restore tests.  It prints "count 1" .. "count N" with a busy wait
 * before every character, so a pause falls mid-line as often as not, and
 * keeps in memory what it printed: a running FNV-1a hash of every byte, and
 * each line's own hash on a page of its own.  At the end it checks those
 * pages against the lines again and prints the hash.  Saved mid-way and
 * restored, the output must carry on at the next byte: nothing repeated,
 * nothing lost, and the hash (computed by the test from the text) proves
 * the memory came back too.
 *
 * The work runs at CPL 3 by default (cpl=0 keeps it in ring 0), where this
 * platform runs guest code natively, as tests/guest/cpl3.c does (the kit's
 * user_start()): ring 3's port I/O goes through IOPL 3, or through the kit's
 * #GP handler where the nested KVM ignores IOPL. */
#include "guest.h"

#define MAX_COUNT 1024      /* lines; one record page each */
#define PAGE_SIZE 4096
#define THRE_POLLS 100000   /* as lib/serial.c: bounded, never a hang */
#define FNV_OFFSET 0x811c9dc5u
#define FNV_PRIME 0x01000193u
#define LCG_MUL 6364136223846793005ull
#define LCG_ADD 1442695040888963407ull

/* Line n's hash in the first word of page n: MAX_COUNT pages of memory the
 * guest touches once and reads back only at the end.  .noinit: every record
 * read is written first, and zeroing 4 MiB interpreted would be slow. */
static volatile uint32_t records[MAX_COUNT + 1][PAGE_SIZE / 4]
	__attribute__((section(".noinit"), aligned(PAGE_SIZE)));
/* The running hash of every byte printed; in memory, not a register. */
static volatile uint32_t printed_hash = FNV_OFFSET;
static volatile uint64_t spin_sink; /* keeps the delay loop's result alive */
static uint64_t delay_iters;

/* FNV-1a step: @h with byte @c added. */
static uint32_t fnv1a(uint32_t h, uint8_t c)
{
	return (h ^ c) * FNV_PRIME;
}

/* Busy-wait delay_iters LCG steps (opaque to the optimiser). */
static void delay(void)
{
	uint64_t x = spin_sink;

	for (uint64_t i = 0; i < delay_iters; i++) {
		x = x * LCG_MUL + LCG_ADD;
		__asm__ volatile("" : "+r"(x));
	}
	spin_sink = x;
}

/* Put @c on COM1 after the delay. */
static void slow_putc(char c)
{
	delay();
	for (unsigned i = 0; i < THRE_POLLS && !(inb(COM1_PORT + UART_LSR) & UART_LSR_THRE); i++)
		cpu_pause();
	outb(COM1_PORT + UART_THR, (uint8_t)c);
}

/* "count <n>\n" into @buf; returns its length. */
static unsigned format_line(char *buf, unsigned n)
{
	char digits[12];
	unsigned len = 0, nd = 0;

	do {
		digits[nd++] = (char)('0' + n % 10);
		n /= 10;
	} while (n);
	for (const char *p = "count "; *p; p++)
		buf[len++] = *p;
	while (nd)
		buf[len++] = digits[--nd];
	buf[len++] = '\n';
	return len;
}

/* The line hash of "count <n>\n", from @h. */
static uint32_t hash_line(uint32_t h, unsigned n)
{
	char buf[24];
	unsigned len = format_line(buf, n);

	for (unsigned i = 0; i < len; i++)
		h = fnv1a(h, (uint8_t)buf[i]);
	return h;
}

/* The counting itself, at whichever CPL the guest chose. */
static noreturn void count_main(void)
{
	long n = cmdline_get_int("n", 400);
	char buf[24];

	if (n < 1 || n > MAX_COUNT) {
		gprintf("count FAIL n=%ld not in 1..%u\n", n, MAX_COUNT);
		guest_exit(1);
	}
	delay_iters = (uint64_t)cmdline_get_int("delay", 1000000);
	for (unsigned i = 1; i <= (unsigned)n; i++) {
		unsigned len = format_line(buf, i);

		records[i][0] = hash_line(FNV_OFFSET, i);
		for (unsigned k = 0; k < len; k++) {
			slow_putc(buf[k]);
			printed_hash = fnv1a(printed_hash, (uint8_t)buf[k]);
		}
	}
	for (unsigned i = 1; i <= (unsigned)n; i++) {
		if (records[i][0] != hash_line(FNV_OFFSET, i)) {
			gprintf("count FAIL record %u is 0x%08x\n", i, records[i][0]);
			guest_exit(1);
		}
	}
	gprintf("count done %ld sum %08x\n", n, printed_hash);
	guest_exit(0);
}

int guest_main(void)
{
	if (cmdline_get_int("cpl", 3) == 0)
		count_main();
	user_start(count_main);
}

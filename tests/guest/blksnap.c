/* blksnap: keeps many virtio-blk writes in flight on disk 0 for as long as
 * it runs, so that a whole-VM snapshot (vmrun ctl SOCK save) catches some
 * of them, and checks that every request completes exactly once, also in a
 * VM restored from that snapshot (tests/integration/blksnap_tests.py).
 *
 * Every F-th request (k mod F = F - 1, F = blksnap.flush, default 8, 0 for
 * none) is a FLUSH; the others are writes: the w-th write (w = 0, 1, ...)
 * writes one sector, x(w) = S + (w mod N) * T, with generation
 * g(w) = w / N + 1: word i of the sector is
 *     y = ((x << 16 | g) ^ 8i) * 0x9e3779b97f4a7c15 mod 2^64;  y ^ (y >> 29)
 * (little endian).  Parameters: blksnap.sector (S, default 16),
 * blksnap.sectors (N, default 256, at most 4096), blksnap.stride (T,
 * default 8), blksnap.requests (total, default 4096), blksnap.depth
 * (requests kept in flight, default 12, at most 64), blksnap.round
 * (completions per progress line, default 256), blksnap.irq (1, default:
 * wait for the device's interrupt with sti; hlt; 0: poll the used ring),
 * blksnap.stall (seconds without a completion that make the requests in
 * flight "missing", default 30), blksnap.inject (dup, lose or data:
 * process one used element twice, ignore one, or expect the wrong
 * generation in sector S + (N/2)*T at the read-back, so that a test can see
 * the checks fire).
 *
 * Each request is one indirect descriptor; heads are handed out from a
 * FIFO of free ones over a 256-entry queue, so a head is reused only after
 * about 256 - depth other requests: a completion reported twice, or for a
 * head with no request on it, names a free head and is caught.  The
 * rings and this guest's counters sit in RAM where the host test reads
 * them out of a snapshot's memory.bin (the symbol blksnap_state).
 *
 * Lines:
 *   blksnap start requests <n> depth <d> sectors <N> stride <T> flush <F> irq <0|1>
 *   blksnap round <r>               (after r * blksnap.round completions)
 *   blksnap stats submitted <n> completed <n> irqs <n> ticks <n> max_inflight <n>
 *   blksnap ok <requests>           (exit 0)
 *   blksnap FAIL <why>              (exit 1)
 * After the last completion every sector of [S, S + N*T) is read back:
 * written sectors hold their last generation, the others zeroes (the host
 * gives a fresh, empty disk). */
#include "virtio.h"

#define IRQ_VECTOR 0x25
#define TIMER_VECTOR 0x26
#define SPURIOUS_VECTOR 0x2f
#define QSIZE VQ_MAX
#define MAX_SECTORS 4096
#define MAX_DEPTH 64
#define TICK_HZ 100
/* KVM's local APIC timer counts at 1 GHz with divide-by-1. */
#define TIMER_COUNT (1000000000u / TICK_HZ)
#define READ_SECTORS 64 /* sectors per read-back request */
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_ICR 0x380
#define LAPIC_TIMER_DCR 0x3e0
#define LVT_PERIODIC (1u << 17)

/* What the host test reads out of memory.bin: the counters, and where the
 * rings are. */
struct blksnap_state {
	uint64_t magic; /* "blksnap1" once the device is up */
	uint64_t submitted, completed;
	uint64_t inflight;      /* submitted - completed */
	uint64_t avail_ring;    /* guest-physical address of the avail ring */
	uint64_t used_ring;     /* ... and of the used ring */
	uint64_t round;         /* progress lines printed */
};

#define STATE_MAGIC 0x3170616e736b6c62ull /* "blksnap1" in memory */

struct blksnap_state blksnap_state;

/* One request on a head descriptor. */
struct slot {
	bool busy;
	uint32_t serial; /* request number k */
	uint32_t sector; /* index i of sector S + i*T, or FLUSH */
};

#define FLUSH 0xffffffffu

static struct virtio_mmio_dev devs[1];
static struct vdev disk __attribute__((section(".noinit")));
static uint8_t bufs[QSIZE][VBLK_SECTOR] __attribute__((section(".noinit"), aligned(4096)));
static uint8_t rbuf[READ_SECTORS * VBLK_SECTOR] __attribute__((section(".noinit"), aligned(4096)));
static struct vblk_hdr hdrs[QSIZE];
static volatile uint8_t stat[QSIZE];
static struct slot slots[QSIZE];
static uint16_t free_heads[QSIZE]; /* FIFO */
static unsigned free_first, free_count;
static uint16_t gen[MAX_SECTORS];  /* the last generation submitted per index */
static bool sector_busy[MAX_SECTORS];
static uint64_t first, n_sectors, stride, total, depth, per_round, stall_s, flush_every;
static bool use_irq;
static unsigned inject; /* 0; 1 dup, 2 lose, 3 data; 4 unknown */
static volatile uint64_t irqs, ticks;
static uint64_t seen_irqs, max_inflight, last_progress;

static noreturn void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static noreturn void fail(const char *fmt, ...)
{
	va_list ap;

	gprintf("blksnap FAIL ");
	va_start(ap, fmt);
	vgprintf(fmt, ap);
	va_end(ap);
	gprintf("\n");
	guest_exit(1);
}

static uint64_t pattern(uint64_t sector, uint64_t g, uint64_t off)
{
	uint64_t y = ((sector << 16 | g) ^ off) * 0x9e3779b97f4a7c15ull;

	return y ^ (y >> 29);
}

static void on_irq(struct isr_frame *f)
{
	(void)f;
	vdev_write(&disk, VMMIO_INTERRUPT_ACK, vdev_read(&disk, VMMIO_INTERRUPT_STATUS));
	irqs++;
	lapic_eoi();
}

static void on_timer(struct isr_frame *f)
{
	(void)f;
	ticks++;
	lapic_eoi();
}

static void on_spurious(struct isr_frame *f)
{
	(void)f;
}

/* Submit request k = blksnap_state.submitted, or return false when its
 * sector still has the previous generation's write in flight. */
static bool submit(void)
{
	uint64_t k = blksnap_state.submitted;
	bool flush = flush_every && k % flush_every == flush_every - 1;
	uint64_t nw = flush_every ? k - k / flush_every : k; /* writes before k */
	uint64_t idx = nw % n_sectors, sector = first + idx * stride, g = nw / n_sectors + 1;
	uint16_t head;
	uint64_t *w;
	struct vq_buf b[3];

	if (!flush && sector_busy[idx])
		return false;
	if (!free_count)
		fail("no free descriptor with %lu in flight", blksnap_state.inflight);
	head = free_heads[free_first];
	free_first = (free_first + 1) % QSIZE;
	free_count--;
	if (slots[head].busy)
		fail("head %u handed out while busy", head);
	stat[head] = 0xff;
	b[0] = (struct vq_buf){ &hdrs[head], sizeof(hdrs[head]), false };
	b[2] = (struct vq_buf){ (const void *)&stat[head], 1, true };
	if (flush) {
		hdrs[head] = (struct vblk_hdr){ .type = VBLK_T_FLUSH };
		slots[head] = (struct slot){ .busy = true, .serial = (uint32_t)k, .sector = FLUSH };
		b[1] = b[2];
		goto add;
	}
	w = (uint64_t *)bufs[head];
	for (unsigned i = 0; i < VBLK_SECTOR / 8; i++)
		w[i] = pattern(sector, g, 8 * i);
	hdrs[head] = (struct vblk_hdr){ .type = VBLK_T_OUT, .sector = sector };
	slots[head] = (struct slot){ .busy = true, .serial = (uint32_t)k, .sector = (uint32_t)idx };
	sector_busy[idx] = true;
	gen[idx] = (uint16_t)g;
	b[1] = (struct vq_buf){ bufs[head], VBLK_SECTOR, false };
add:
	disk.next_desc = head; /* vq_add() takes its head from here */
	if (vq_add(&disk, b, flush ? 2 : 3, true) != head)
		fail("descriptor allocation out of step at head %u", head);
	blksnap_state.submitted++;
	blksnap_state.inflight++;
	if (blksnap_state.inflight > max_inflight)
		max_inflight = blksnap_state.inflight;
	return true;
}

/* Account for used element @e: it must name a head with a request on it. */
static void complete(const struct vq_used_elem *e)
{
	struct slot *s;

	if (e->id >= QSIZE)
		fail("completion names head %u, past the queue (request never submitted)", e->id);
	s = &slots[e->id];
	if (!s->busy)
		fail("completion for head %u, which has no request in flight (request %u "
		     "completed twice, or never submitted)", e->id, s->serial);
	if (stat[e->id] != VBLK_S_OK || e->len != 1)
		fail("request %u (%s %lu): status %u, used len %u", s->serial,
		     s->sector == FLUSH ? "flush" : "sector",
		     s->sector == FLUSH ? 0 : first + s->sector * stride, stat[e->id], e->len);
	s->busy = false;
	if (s->sector != FLUSH)
		sector_busy[s->sector] = false;
	free_heads[(free_first + free_count) % QSIZE] = (uint16_t)e->id;
	free_count++;
	blksnap_state.completed++;
	blksnap_state.inflight--;
}

/* Take every used element there is; returns how many. */
static unsigned reap(void)
{
	uint16_t used = vq_used_idx(&disk);
	struct vq_used_elem e;
	unsigned n = 0;

	if ((uint16_t)(used - disk.last_used) > blksnap_state.inflight)
		fail("used ring holds %u new elements with only %lu requests in flight",
		     (uint16_t)(used - disk.last_used), blksnap_state.inflight);
	while (vq_get(&disk, &e)) {
		if (inject == 2 && blksnap_state.completed == total / 2) {
			inject = 0; /* lose this one */
			continue;
		}
		complete(&e);
		if (inject == 1 && blksnap_state.completed == total / 2) {
			inject = 0;
			complete(&e);
		}
		n++;
	}
	return n;
}

static noreturn void missing(void)
{
	unsigned shown = 0;

	gprintf("blksnap missing:");
	for (unsigned h = 0; h < QSIZE && shown < 16; h++) {
		if (slots[h].busy) {
			gprintf(" %u@%u", slots[h].serial, h);
			shown++;
		}
	}
	gprintf("\n");
	fail("%lu requests never completed (no completion for %lu s; used ring %u elements "
	     "ahead, irqs %lu)", blksnap_state.inflight, stall_s,
	     (uint16_t)(vq_used_idx(&disk) - disk.last_used), irqs);
}

/* Wait until something completes (with interrupts: until the device's
 * interrupt arrives), then reap. */
static void wait_and_reap(void)
{
	for (;;) {
		cpu_cli();
		if (!use_irq || irqs != seen_irqs) {
			unsigned n;

			seen_irqs = irqs;
			cpu_sti();
			n = reap();
			if (n) {
				last_progress = ticks;
				return;
			}
			cpu_cli();
		}
		if (ticks - last_progress > stall_s * TICK_HZ) {
			cpu_sti();
			missing();
		}
		if (use_irq && irqs == seen_irqs)
			cpu_sti_hlt();
		else
			cpu_pause();
		cpu_sti();
	}
}

/* Read [S, S + N*T) back and check it. */
static void verify(void)
{
	uint64_t end = first + n_sectors * stride;

	for (uint64_t x = first; x < end; x += READ_SECTORS) {
		uint64_t n = end - x < READ_SECTORS ? end - x : READ_SECTORS;
		struct vq_buf b = { rbuf, (uint32_t)(n * VBLK_SECTOR), true };
		int st = vblk_req(&disk, VBLK_T_IN, x, &b, 1, false, NULL);

		if (st != VBLK_S_OK)
			fail("read back of sectors %lu+%lu: status %d", x, n, st);
		for (uint64_t j = 0; j < n; j++) {
			uint64_t sector = x + j, rel = sector - first, g = 0;
			const uint64_t *w = (const uint64_t *)(rbuf + j * VBLK_SECTOR);

			if (rel % stride == 0)
				g = gen[rel / stride];
			for (unsigned i = 0; i < VBLK_SECTOR / 8; i++) {
				uint64_t want = g ? pattern(sector, g, 8 * i) : 0;

				if (w[i] != want)
					fail("sector %lu word %u holds 0x%016lx, want 0x%016lx "
					     "(generation %lu)", sector, i, w[i], want, g);
			}
		}
	}
}

int guest_main(void)
{
	char s[8];
	int err;

	first = (uint64_t)cmdline_get_int("blksnap.sector", 16);
	n_sectors = (uint64_t)cmdline_get_int("blksnap.sectors", 256);
	stride = (uint64_t)cmdline_get_int("blksnap.stride", 8);
	total = (uint64_t)cmdline_get_int("blksnap.requests", 4096);
	depth = (uint64_t)cmdline_get_int("blksnap.depth", 12);
	per_round = (uint64_t)cmdline_get_int("blksnap.round", 256);
	use_irq = cmdline_get_int("blksnap.irq", 1) != 0;
	stall_s = (uint64_t)cmdline_get_int("blksnap.stall", 30);
	flush_every = (uint64_t)cmdline_get_int("blksnap.flush", 8);
	if (cmdline_get("blksnap.inject", s, sizeof(s)))
		inject = !memcmp(s, "dup", 4) ? 1 : !memcmp(s, "lose", 5) ? 2 :
			 !memcmp(s, "data", 5) ? 3 : 4;
	if (!n_sectors || n_sectors > MAX_SECTORS || !stride || !depth || depth > MAX_DEPTH ||
	    !per_round || !total || total / n_sectors >= 0xffff || inject == 4)
		fail("bad parameters");
	if (!virtio_scan(devs, 1))
		fail("no virtio_mmio.device= on the command line");

	outb(0x21, 0xff); /* both 8259s masked: IOAPIC and local APIC only */
	outb(0xa1, 0xff);
	idt_set_handler(IRQ_VECTOR, on_irq);
	idt_set_handler(TIMER_VECTOR, on_timer);
	idt_set_handler(SPURIOUS_VECTOR, on_spurious);
	lapic_enable(SPURIOUS_VECTOR);
	err = vdev_probe(&disk, &devs[0], VIRTIO_ID_BLOCK);
	if (!err && !(disk.offered & VF_INDIRECT_DESC))
		fail("the disk does not offer INDIRECT_DESC (0x%lx)", disk.offered);
	if (!err && flush_every && !(disk.offered & VBLK_F_FLUSH))
		fail("the disk does not offer FLUSH (0x%lx)", disk.offered);
	if (!err)
		err = vdev_start(&disk, VF_VERSION_1 | VF_INDIRECT_DESC |
				 (flush_every ? VBLK_F_FLUSH : 0), QSIZE);
	if (err)
		fail("device start: error %d", -err);
	if (vdev_config64(&disk, VBLK_CFG_CAPACITY) < first + n_sectors * stride)
		fail("the disk has %lu sectors, the test needs %lu",
		     vdev_config64(&disk, VBLK_CFG_CAPACITY), first + n_sectors * stride);
	for (unsigned i = 0; i < QSIZE; i++)
		free_heads[i] = (uint16_t)i;
	free_count = QSIZE;
	vdev_route_irq(&disk, IRQ_VECTOR, lapic_id());
	lapic_write(LAPIC_TIMER_DCR, 0xb); /* divide by 1 */
	lapic_write(LAPIC_LVT_TIMER, LVT_PERIODIC | TIMER_VECTOR);
	lapic_write(LAPIC_TIMER_ICR, TIMER_COUNT);
	cpu_sti();
	blksnap_state.avail_ring = (uintptr_t)disk.mem.avail;
	blksnap_state.used_ring = (uintptr_t)disk.mem.used;
	blksnap_state.magic = STATE_MAGIC;
	gprintf("blksnap start requests %lu depth %lu sectors %lu stride %lu flush %lu irq %u\n",
		total, depth, n_sectors, stride, flush_every, use_irq);

	while (blksnap_state.completed < total) {
		/* One notification per request: the device works on each while
		 * the next is filled. */
		while (blksnap_state.submitted < total && blksnap_state.inflight < depth &&
		       submit())
			vq_kick(&disk);
		wait_and_reap();
		while (blksnap_state.completed >= (blksnap_state.round + 1) * per_round) {
			blksnap_state.round++;
			gprintf("blksnap round %lu\n", blksnap_state.round);
		}
	}
	if (blksnap_state.submitted != total || blksnap_state.inflight)
		fail("submitted %lu, completed %lu, %lu in flight", blksnap_state.submitted,
		     blksnap_state.completed, blksnap_state.inflight);
	/* Nothing may come after the last completion either. */
	if (vq_used_idx(&disk) != disk.last_used)
		fail("%u used elements after every request completed",
		     (uint16_t)(vq_used_idx(&disk) - disk.last_used));
	if (inject == 3)
		gen[n_sectors / 2]++; /* expect what was never written */
	verify();
	gprintf("blksnap stats submitted %lu completed %lu irqs %lu ticks %lu max_inflight %lu\n",
		blksnap_state.submitted, blksnap_state.completed, irqs, ticks, max_inflight);
	gprintf("blksnap ok %lu\n", total);
	return 0;
}

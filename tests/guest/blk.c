/* blk: drives vmrun's virtio-blk disks through lib/virtio.c and checks
 * them against the virtio 1.2 specification.  blk.test=NAME picks one
 * scenario; the host test prepares the image files and checks them
 * afterwards.
 *
 * Image contents are a pattern both sides compute: the little-endian
 * 64-bit word at byte offset o (a multiple of 8) of a disk is
 *     x = (seed ^ o) * 0x9e3779b97f4a7c15 mod 2^64;  x ^ (x >> 29)
 * with seed = blk.seed + i on disk i (data the guest writes: blk.wseed + i).
 *
 * Parameters: blk.test, blk.seed, blk.wseed (default 1 and 2; seed 0 means
 * zeroes), blk.sector (S, first sector written, default 64), blk.count (C,
 * sectors, default 8), blk.qsize (queue size, default 16), and for single
 * scenarios blk.rounds, blk.bytes, blk.punch, blk.rsize (below).  Disks
 * are the virtio_mmio.device= words vmrun appends, then the virtio-pci
 * functions on PCI bus 0 (lib/vpci.c; MSI-X, or INTx with virtio.intx=1),
 * each in order.
 *
 * Scenarios, each ending with "blk: all ok" and exit 0 (or "blk: FAIL ..."
 * and one of the F_* codes below):
 *   read      capacity, then reads of several shapes on disk 0; blk.bytes
 *             is the image size when it ends mid-sector
 *   write     writes [S, S+C) (one buffer) and S+C+1 (header and data in one
 *             descriptor), reads them and their neighbours back
 *   flush     write [S, S+C), then FLUSH
 *   durable   flush, then prints "blk: flushed" and spins for ever
 *   get_id    prints the 20 GET_ID bytes in hex
 *   discard   DISCARD [S, S+C) (if offered), WRITE_ZEROES [S+2C, S+3C),
 *             WRITE_ZEROES with UNMAP [S+4C, S+5C); reads zeroes back (the
 *             discarded range only with blk.punch=1: a discard is a hint);
 *             refused variants leave [S+6C, S+7C) and the last sector alone
 *   readonly  RO offered; OUT fails with IOERR and changes nothing
 *   multi     every disk at once: reads, and writes sector 1 of every
 *             writable disk (blk.wseed + i)
 *   full      blk.rounds (default 2) times: blk.qsize reads in flight
 *             (indirect), published with one notification
 *   indirect  writes [S, S+8) through a table of qsize entries, reads back
 *   event_idx used_event and avail_event, with the interrupt line
 *   range     requests beyond the disk end or malformed in size fail
 *   malformed chains no driver may send: NEEDS_RESET, then a reset
 *   negotiate feature negotiation refusals
 *   reset     Q - 1 (Q = blk.qsize) writes of R = blk.rsize sectors to
 *             [S, S+(Q-1)R), each of pattern blk.wseed of disk bytes
 *             [0, 512R), and a FLUSH, then a device reset at once; the same
 *             to [S+QR, ...) with a reset once the device took them; prints
 *             which completed ("blk: completed <first sector> 0110...", the
 *             FLUSH last), re-inits, reads back
 *   bus_master (virtio-pci) Bus Master Enable cleared, a read of [S, S+C)
 *             published and notified must stay untouched (used ring,
 *             status, buffer) while the guest looks; once it is set
 *             again the read completes with the disk's data
 *   snapshot  for phase k = 0..R (R = blk.rounds, default 1): writes
 *             C sectors from S + kC/2 with pattern blk.wseed + k and prints
 *             "blk: phase <k> written"; before the next phase it re-reads
 *             sector S until a byte arrives on COM1 (the host takes a live
 *             snapshot meanwhile and then sends the byte); at the end every
 *             sector of [S - 1, S + RC/2 + C] is read back: the last phase
 *             that wrote it, or blk.seed */
#include "virtio.h"

#define MAX_DISKS 8
#define IRQ_VECTOR 0x25
#define SPURIOUS_VECTOR 0x2f
#define HOLE_ADDR 0xd0000000ul /* MMIO hole: never RAM */
#define RAM_END (256ul << 20)   /* the host test passes --mem 256M */

/* Exit codes, one per kind of failure. */
enum {
	F_USAGE = 1,       /* unknown blk.test, or no virtio_mmio.device */
	F_INIT = 2,        /* probe or start failed (error code printed) */
	F_FEATURE = 3,     /* a feature offered or missing against the contract */
	F_CONFIG = 4,      /* a configuration space value */
	F_STATUS = 5,      /* a request's status byte */
	F_USED_LEN = 6,    /* a used element's len */
	F_USED_ID = 7,     /* a used element's id */
	F_DATA = 8,        /* data read back */
	F_NEEDS_RESET = 9, /* NEEDS_RESET missing or unexpected */
	F_RESET = 10,      /* the device did not come back from a reset */
	F_IRQ = 11,        /* InterruptStatus or interrupt delivery */
	F_NEGOTIATE = 12,  /* FEATURES_OK accepted what it must refuse */
};

static struct virtio_mmio_dev devs[MAX_DISKS];
static unsigned n_devs;
static struct vdev disks[MAX_DISKS] __attribute__((section(".noinit")));
static uint8_t data[VQ_MAX * VBLK_SECTOR] __attribute__((section(".noinit"), aligned(4096)));
static struct vblk_hdr hdrs[VQ_MAX];
static volatile uint8_t stat[VQ_MAX];
static uint64_t seed, wseed, first, count;
static uint16_t qsize;
static volatile unsigned irqs;

static noreturn void fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static noreturn void fail(int code, const char *fmt, ...)
{
	va_list ap;

	gprintf("blk: FAIL ");
	va_start(ap, fmt);
	vgprintf(fmt, ap);
	va_end(ap);
	gprintf("\n");
	guest_exit((unsigned)code);
}

static uint64_t pattern(uint64_t s, uint64_t off)
{
	uint64_t x = (s ^ off) * 0x9e3779b97f4a7c15ull;

	return x ^ (x >> 29);
}

/* Fill @len bytes at @buf with disk @s's pattern from disk byte @off. */
static void fill(void *buf, uint64_t off, uint64_t len, uint64_t s)
{
	uint64_t *w = buf;

	for (uint64_t i = 0; i < len / 8; i++)
		w[i] = pattern(s, off + 8 * i);
}

/* Check @len bytes at @buf against pattern @s from disk byte @off (@s 0:
 * zeroes instead). */
static void check(const char *what, const void *buf, uint64_t off, uint64_t len, uint64_t s)
{
	const uint64_t *w = buf;

	for (uint64_t i = 0; i < len / 8; i++) {
		uint64_t want = s ? pattern(s, off + 8 * i) : 0;

		if (w[i] != want)
			fail(F_DATA, "%s: disk byte 0x%lx holds 0x%016lx, want 0x%016lx", what,
			     off + 8 * i, w[i], want);
	}
}

/* Probe disk @i, insist on @want, accept it plus whatever of @optional is
 * offered, and start it with a queue of @qs entries. */
static struct vdev *open_disk(unsigned i, uint64_t want, uint64_t optional, uint16_t qs)
{
	struct vdev *d = &disks[i];
	int r;

	if (i >= n_devs)
		fail(F_USAGE, "no disk %u", i);
	r = vdev_probe(d, &devs[i], VIRTIO_ID_BLOCK);
	if (r)
		fail(F_INIT, "disk %u probe: error %d", i, -r);
	if ((d->offered & want) != want)
		fail(F_FEATURE, "disk %u offers 0x%lx, lacks 0x%lx", i, d->offered,
		     want & ~d->offered);
	r = vdev_start(d, want | (d->offered & optional), qs);
	if (r)
		fail(F_INIT, "disk %u start: error %d", i, -r);
	return d;
}

/* One synchronous request with data buffers @b (@n of them); the status
 * must be @want and the used len the writable bytes (status included) on
 * success, 1 on failure. */
static void xfer(struct vdev *d, uint32_t type, uint64_t sector, const struct vq_buf *b,
		 unsigned n, bool ind, int want, const char *what)
{
	uint32_t len, want_len = 1;
	int st = vblk_req(d, type, sector, b, n, ind, &len);

	if (st == VBLK_BAD_USED)
		fail(F_USED_ID, "%s: the used element names another chain", what);
	if (vq_used_idx(d) != d->last_used)
		fail(F_USED_ID, "%s: more used elements than chains", what);
	if (st != want)
		fail(F_STATUS, "%s: status %d, want %d", what, st, want);
	for (unsigned i = 0; want == VBLK_S_OK && i < n; i++)
		want_len += b[i].writable ? b[i].len : 0;
	if (len != want_len)
		fail(F_USED_LEN, "%s: used len %u, want %u", what, len, want_len);
}

/* IN or OUT of @n sectors at @sector through data[] as one buffer. */
static void rw(struct vdev *d, uint32_t type, uint64_t sector, uint64_t n, int want,
	       const char *what)
{
	struct vq_buf b = { data, (uint32_t)(n * VBLK_SECTOR), type == VBLK_T_IN };

	xfer(d, type, sector, &b, 1, false, want, what);
}

/* Read @n sectors at @sector and check them against pattern @s (0: zeroes). */
static void read_check(struct vdev *d, uint64_t sector, uint64_t n, uint64_t s, const char *what)
{
	rw(d, VBLK_T_IN, sector, n, VBLK_S_OK, what);
	check(what, data, sector * VBLK_SECTOR, n * VBLK_SECTOR, s);
}

static void write_pattern(struct vdev *d, uint64_t sector, uint64_t n, uint64_t s,
			  const char *what)
{
	fill(data, sector * VBLK_SECTOR, n * VBLK_SECTOR, s);
	rw(d, VBLK_T_OUT, sector, n, VBLK_S_OK, what);
}

static uint64_t capacity(struct vdev *d)
{
	return vdev_config64(d, VBLK_CFG_CAPACITY);
}

static void t_read(void)
{
	struct vdev *d = open_disk(0, VF_VERSION_1, 0, qsize);
	uint64_t cap = capacity(d), off = first * VBLK_SECTOR;
	struct vq_buf split[3] = {
		{ data, 100, true }, { data + 100, 1000, true }, { data + 1100, 436, true },
	};
	uint64_t big = cap < VQ_MAX ? cap : VQ_MAX;
	uint64_t bytes = (uint64_t)cmdline_get_int("blk.bytes", (long)(cap * VBLK_SECTOR));
	volatile uint16_t *avail_flags = d->mem.avail;
	struct vq_used_elem e;
	struct vq_buf one[2];

	gprintf("blk: capacity %lu\n", cap);
	gprintf("blk: features 0x%lx size_max %u seg_max %u blk_size %u\n", d->offered,
		vdev_config32(d, VBLK_CFG_SIZE_MAX), vdev_config32(d, VBLK_CFG_SEG_MAX),
		vdev_config32(d, VBLK_CFG_BLK_SIZE));
	/* Section 2.7.7: NO_INTERRUPT asks the device not to interrupt. */
	*avail_flags = 1;
	read_check(d, 0, 8, seed, "read 0+8");
	read_check(d, 0, big, seed, "one large read");
	xfer(d, VBLK_T_IN, first, split, 3, false, VBLK_S_OK, "read in 3 segments");
	check("read in 3 segments", data, off, 1536, seed);
	/* An image that ends mid-sector: the tail of its last sector reads
	 * as zeroes (blk.bytes is the file size, a multiple of 8). */
	rw(d, VBLK_T_IN, cap - 1, 1, VBLK_S_OK, "read last sector");
	for (unsigned i = 0; i < VBLK_SECTOR / 8; i++) {
		uint64_t o = (cap - 1) * VBLK_SECTOR + 8 * i, w, want;

		memcpy(&w, data + 8 * i, 8);
		want = o < bytes ? pattern(seed, o) : 0;
		if (w != want)
			fail(F_DATA, "last sector: disk byte 0x%lx holds 0x%016lx, want 0x%016lx", o,
			     w, want);
	}
	/* Data and status in one writable descriptor: the status is the last
	 * writable byte, wherever it sits (section 5.2.6). */
	hdrs[0] = (struct vblk_hdr){ .type = VBLK_T_IN, .sector = 9 };
	data[512] = 0xff;
	one[0] = (struct vq_buf){ &hdrs[0], sizeof(hdrs[0]), false };
	one[1] = (struct vq_buf){ data, 513, true };
	vq_add(d, one, 2, false);
	vq_kick(d);
	vq_wait(d, &e);
	if (data[512] != VBLK_S_OK || e.len != 513)
		fail(F_STATUS, "read with status in the data descriptor: status %u len %u",
		     data[512], e.len);
	check("read with status in the data descriptor", data, 9 * VBLK_SECTOR, 512, seed);
	if (vdev_read(d, VMMIO_INTERRUPT_STATUS))
		fail(F_IRQ, "interrupt status 0x%x despite NO_INTERRUPT",
		     vdev_read(d, VMMIO_INTERRUPT_STATUS));
	*avail_flags = 0;
	read_check(d, 1, 1, seed, "read with interrupts");
	if (vdev_read(d, VMMIO_INTERRUPT_STATUS) != VMMIO_INT_VRING)
		fail(F_IRQ, "interrupt status 0x%x after a used buffer",
		     vdev_read(d, VMMIO_INTERRUPT_STATUS));
	gprintf("blk: read ok\n");
}

static void t_write(void)
{
	struct vdev *d = open_disk(0, VF_VERSION_1, 0, qsize);
	uint64_t after = first + count + 1;
	struct vq_used_elem e;
	struct vq_buf one[2];

	write_pattern(d, first, count, wseed, "write");
	memset(data, 0, count * VBLK_SECTOR);
	read_check(d, first, count, wseed, "read back");
	read_check(d, first - 1, 1, seed, "sector before");
	read_check(d, first + count, 1, seed, "sector after");
	/* Header and data in one readable descriptor. */
	hdrs[0] = (struct vblk_hdr){ .type = VBLK_T_OUT, .sector = after };
	memcpy(data, &hdrs[0], sizeof(hdrs[0]));
	fill(data + sizeof(hdrs[0]), after * VBLK_SECTOR, VBLK_SECTOR, wseed);
	stat[0] = 0xff;
	one[0] = (struct vq_buf){ data, sizeof(hdrs[0]) + VBLK_SECTOR, false };
	one[1] = (struct vq_buf){ (const void *)&stat[0], 1, true };
	vq_add(d, one, 2, false);
	vq_kick(d);
	vq_wait(d, &e);
	if (stat[0] != VBLK_S_OK || e.len != 1)
		fail(F_STATUS, "write with header and data in one descriptor: status %u len %u",
		     stat[0], e.len);
	read_check(d, after, 1, wseed, "read back the one-descriptor write");
	gprintf("blk: write ok\n");
}

static void t_flush(bool spin)
{
	struct vdev *d = open_disk(0, VF_VERSION_1 | VBLK_F_FLUSH, 0, qsize);

	write_pattern(d, first, count, wseed, "write");
	gprintf("blk: write ok\n");
	xfer(d, VBLK_T_FLUSH, 0, NULL, 0, false, VBLK_S_OK, "flush");
	memset(data, 0, count * VBLK_SECTOR);
	read_check(d, first, count, wseed, "read after the flush");
	gprintf("blk: flush ok\n");
	if (!spin)
		return;
	gprintf("blk: flushed\n");
	for (;;)
		cpu_pause();
}

static void t_get_id(void)
{
	struct vdev *d = open_disk(0, VF_VERSION_1, 0, qsize);
	struct vq_buf b = { data, VBLK_ID_BYTES, true };

	memset(data, 0xff, VBLK_ID_BYTES);
	xfer(d, VBLK_T_GET_ID, 0, &b, 1, false, VBLK_S_OK, "get_id");
	gprintf("blk: id ");
	for (unsigned i = 0; i < VBLK_ID_BYTES; i++)
		gprintf("%02x", data[i]);
	gprintf("\nblk: get_id ok\n");
}

/* DISCARD or WRITE_ZEROES of @n sectors at @sector with @flags. */
static void zero_range(struct vdev *d, uint32_t type, uint64_t sector, uint32_t n, uint32_t flags,
		       int want, const char *what)
{
	static struct vblk_range r;
	struct vq_buf b = { &r, sizeof(r), false };

	r = (struct vblk_range){ .sector = sector, .num_sectors = n, .flags = flags };
	xfer(d, type, 0, &b, 1, false, want, what);
}

static void t_discard(void)
{
	struct vdev *d = open_disk(0, VF_VERSION_1 | VBLK_F_WRITE_ZEROES, VBLK_F_DISCARD, qsize);
	uint64_t cap = capacity(d), c = count;
	bool discard = d->features & VBLK_F_DISCARD;

	if (vdev_config32(d, VBLK_CFG_MAX_WZ_SECTORS) < c || !vdev_config32(d, VBLK_CFG_MAX_WZ_SEG))
		fail(F_CONFIG, "write_zeroes limits %u sectors, %u segments",
		     vdev_config32(d, VBLK_CFG_MAX_WZ_SECTORS), vdev_config32(d, VBLK_CFG_MAX_WZ_SEG));
	gprintf("blk: discard %s\n", discard ? "offered" : "not offered");
	if (discard) {
		if (vdev_config32(d, VBLK_CFG_MAX_DISCARD_SECTORS) < c ||
		    !vdev_config32(d, VBLK_CFG_MAX_DISCARD_SEG))
			fail(F_CONFIG, "discard limits %u sectors, %u segments",
			     vdev_config32(d, VBLK_CFG_MAX_DISCARD_SECTORS),
			     vdev_config32(d, VBLK_CFG_MAX_DISCARD_SEG));
		zero_range(d, VBLK_T_DISCARD, first, (uint32_t)c, 0, VBLK_S_OK, "discard");
		/* Discarded data may read back as anything (a hint); vmrun
		 * punches a hole, which reads as zeroes where the filesystem
		 * can punch (the host says so with blk.punch=1). */
		if (cmdline_get_int("blk.punch", 0))
			read_check(d, first, c, 0, "read discarded");
		read_check(d, first - 1, 1, seed, "sector before the discard");
		read_check(d, first + c, 1, seed, "sector after the discard");
		/* Section 5.2.6.2: unmap is not a flag of DISCARD. */
		zero_range(d, VBLK_T_DISCARD, first + 6 * c, (uint32_t)c, VBLK_WZ_F_UNMAP,
			   VBLK_S_UNSUPP, "discard with unmap");
		gprintf("blk: discard ok\n");
	}
	zero_range(d, VBLK_T_WRITE_ZEROES, first + 2 * c, (uint32_t)c, 0, VBLK_S_OK, "write_zeroes");
	read_check(d, first + 2 * c, c, 0, "read write_zeroes");
	zero_range(d, VBLK_T_WRITE_ZEROES, first + 4 * c, (uint32_t)c, VBLK_WZ_F_UNMAP, VBLK_S_OK,
		   "write_zeroes unmap");
	read_check(d, first + 4 * c, c, 0, "read write_zeroes unmap");
	read_check(d, first + 5 * c, 1, seed, "sector after write_zeroes unmap");
	zero_range(d, VBLK_T_WRITE_ZEROES, first + 6 * c, (uint32_t)c, 2, VBLK_S_UNSUPP,
		   "write_zeroes with an unknown flag");
	zero_range(d, VBLK_T_WRITE_ZEROES, cap - 1, 2, 0, VBLK_S_IOERR, "write_zeroes past the end");
	read_check(d, first + 6 * c, c, seed, "range of the refused requests");
	read_check(d, cap - 1, 1, seed, "last sector");
	gprintf("blk: write_zeroes ok\n");
}

static void t_readonly(void)
{
	struct vdev *d = open_disk(0, VF_VERSION_1 | VBLK_F_RO, VBLK_F_FLUSH, qsize);

	if (d->offered & (VBLK_F_WRITE_ZEROES | VBLK_F_DISCARD))
		fail(F_FEATURE, "read-only disk offers write_zeroes or discard: 0x%lx", d->offered);
	gprintf("blk: capacity %lu\n", capacity(d));
	read_check(d, 0, count, seed, "read");
	fill(data, first * VBLK_SECTOR, VBLK_SECTOR, wseed);
	rw(d, VBLK_T_OUT, first, 1, VBLK_S_IOERR, "write to a read-only disk");
	read_check(d, first, 1, seed, "read after the refused write");
	if (d->features & VBLK_F_FLUSH)
		xfer(d, VBLK_T_FLUSH, 0, NULL, 0, false, VBLK_S_OK, "flush");
	gprintf("blk: readonly ok\n");
}

static void t_multi(void)
{
	struct vq_used_elem e;
	struct vq_buf b[3];
	uint16_t head[MAX_DISKS];
	uint64_t cap[MAX_DISKS];

	for (unsigned i = 0; i < n_devs; i++) {
		struct vdev *d = open_disk(i, VF_VERSION_1, VBLK_F_RO, qsize);
		char id[VBLK_ID_BYTES + 1];
		struct vq_buf ib = { id, VBLK_ID_BYTES, true };

		cap[i] = capacity(d);
		memset(id, 0, sizeof(id));
		xfer(d, VBLK_T_GET_ID, 0, &ib, 1, false, VBLK_S_OK, "get_id");
		gprintf("blk: disk %u at 0x%lx irq %u capacity %lu id %s%s\n", i, devs[i].base,
			devs[i].irq, cap[i], id, d->features & VBLK_F_RO ? " ro" : "");
	}
	/* Pass 0 reads the last sector of every disk, pass 1 writes sector 1
	 * of every writable one: all requests of a pass in flight at once. */
	for (int pass = 0; pass < 2; pass++) {
		for (unsigned i = 0; i < n_devs; i++) {
			struct vdev *d = &disks[i];
			bool write = pass == 1;
			uint64_t sector = write ? 1 : cap[i] - 1;
			uint8_t *buf = data + i * VBLK_SECTOR;

			if (write && (d->features & VBLK_F_RO))
				continue;
			if (write)
				fill(buf, VBLK_SECTOR, VBLK_SECTOR, wseed + i);
			hdrs[i] = (struct vblk_hdr){ .type = write ? VBLK_T_OUT : VBLK_T_IN,
						     .sector = sector };
			stat[i] = 0xff;
			b[0] = (struct vq_buf){ &hdrs[i], sizeof(hdrs[i]), false };
			b[1] = (struct vq_buf){ buf, VBLK_SECTOR, !write };
			b[2] = (struct vq_buf){ (const void *)&stat[i], 1, true };
			head[i] = vq_add(d, b, 3, false);
			vq_kick(d);
		}
		for (unsigned i = 0; i < n_devs; i++) {
			struct vdev *d = &disks[i];

			if (pass == 1 && (d->features & VBLK_F_RO))
				continue;
			vq_wait(d, &e);
			if (e.id != head[i] || stat[i] != VBLK_S_OK)
				fail(F_STATUS, "disk %u pass %d: id %u status %u", i, pass, e.id,
				     stat[i]);
			if (pass == 0)
				check("last sector", data + i * VBLK_SECTOR,
				      (cap[i] - 1) * VBLK_SECTOR, VBLK_SECTOR, seed + i);
		}
	}
	/* Each disk got its own write, and only that. */
	for (unsigned i = 0; i < n_devs; i++) {
		bool ro = disks[i].features & VBLK_F_RO;

		read_check(&disks[i], 0, 1, seed + i, "sector 0");
		read_check(&disks[i], 1, 1, ro ? seed + i : wseed + i, "sector 1");
		read_check(&disks[i], 2, 1, seed + i, "sector 2");
	}
	gprintf("blk: %u disks ok\n", n_devs);
}

static void t_full(void)
{
	struct vdev *d = open_disk(0, VF_VERSION_1 | VF_INDIRECT_DESC, 0, qsize);
	uint64_t cap = capacity(d), rounds = (uint64_t)cmdline_get_int("blk.rounds", 2);
	static bool seen[VQ_MAX];
	struct vq_used_elem e;
	struct vq_buf b[3];

	for (uint64_t r = 0; r < rounds; r++) {
		/* Every avail slot filled before the device hears of any. */
		for (unsigned i = 0; i < qsize; i++) {
			hdrs[i] = (struct vblk_hdr){ .type = VBLK_T_IN,
						     .sector = (r * qsize + i) % cap };
			stat[i] = 0xff;
			seen[i] = false;
			b[0] = (struct vq_buf){ &hdrs[i], sizeof(hdrs[i]), false };
			b[1] = (struct vq_buf){ data + i * VBLK_SECTOR, VBLK_SECTOR, true };
			b[2] = (struct vq_buf){ (const void *)&stat[i], 1, true };
			/* Round-robin allocation: request i owns descriptor i. */
			if (vq_add(d, b, 3, true) != i)
				fail(F_USAGE, "descriptor allocation out of step");
		}
		vq_kick(d);
		for (unsigned i = 0; i < qsize; i++) {
			vq_wait(d, &e);
			if (e.id >= qsize || seen[e.id])
				fail(F_USED_ID, "round %lu: used id %u (twice or out of range)", r, e.id);
			seen[e.id] = true;
			if (e.len != VBLK_SECTOR + 1)
				fail(F_USED_LEN, "round %lu: id %u used len %u", r, e.id, e.len);
		}
		for (unsigned i = 0; i < qsize; i++) {
			if (stat[i] != VBLK_S_OK)
				fail(F_STATUS, "round %lu: request %u status %u", r, i, stat[i]);
			check("full queue", data + i * VBLK_SECTOR, hdrs[i].sector * VBLK_SECTOR,
			      VBLK_SECTOR, seed);
		}
	}
	gprintf("blk: queue full size=%u rounds=%lu ok\n", qsize, rounds);
}

static void t_indirect(void)
{
	struct vdev *d = open_disk(0, VF_VERSION_1 | VF_INDIRECT_DESC, 0, qsize);
	uint32_t total = 8 * VBLK_SECTOR, n = qsize - 2u, base = total / n, at = 0;
	struct vq_buf b[VQ_INDIRECT_MAX], one[3];
	struct vq_used_elem e;
	uint16_t heads[2];

	if (qsize < 4 || qsize > VQ_INDIRECT_MAX)
		fail(F_USAGE, "indirect needs 4 <= blk.qsize <= %d", VQ_INDIRECT_MAX);
	/* Uneven segments; the table holds exactly qsize entries, the most
	 * the device must take (section 2.7.5.3.1). */
	for (unsigned i = 0; i < n; i++) {
		uint32_t len = i + 1 < n ? base + (i & 1 ? 7 : -7u) : total - at;

		b[i] = (struct vq_buf){ data + at, len, false };
		at += len;
	}
	fill(data, first * VBLK_SECTOR, total, wseed);
	xfer(d, VBLK_T_OUT, first, b, n, true, VBLK_S_OK, "indirect write");
	memset(data, 0, total);
	for (unsigned i = 0; i < n; i++)
		b[i].writable = true;
	xfer(d, VBLK_T_IN, first, b, n, true, VBLK_S_OK, "indirect read");
	check("indirect read", data, first * VBLK_SECTOR, total, wseed);
	memset(data, 0, total);
	read_check(d, first, 8, wseed, "direct read of the indirect write");

	/* A direct and an indirect chain in one kick. */
	for (unsigned i = 0; i < 2; i++) {
		hdrs[i] = (struct vblk_hdr){ .type = VBLK_T_IN, .sector = first + 8 + i };
		stat[i] = 0xff;
		one[0] = (struct vq_buf){ &hdrs[i], sizeof(hdrs[i]), false };
		one[1] = (struct vq_buf){ data + i * VBLK_SECTOR, VBLK_SECTOR, true };
		one[2] = (struct vq_buf){ (const void *)&stat[i], 1, true };
		heads[i] = vq_add(d, one, 3, i == 1);
	}
	vq_kick(d);
	for (unsigned i = 0; i < 2; i++) {
		vq_wait(d, &e);
		if ((e.id != heads[0] && e.id != heads[1]) || e.len != VBLK_SECTOR + 1)
			fail(F_USED_ID, "mixed chains: used id %u len %u", e.id, e.len);
	}
	for (unsigned i = 0; i < 2; i++)
		if (stat[i] != VBLK_S_OK)
			fail(F_STATUS, "mixed chains: request %u status %u", i, stat[i]);
	check("mixed chains", data, (first + 8) * VBLK_SECTOR, 2 * VBLK_SECTOR, seed);
	gprintf("blk: indirect ok\n");
}

static void on_irq(struct isr_frame *f)
{
	(void)f;
	irqs++;
	lapic_eoi();
}

static void on_spurious(struct isr_frame *f)
{
	(void)f;
}

/* Sleep until the interrupt count passes @before; returns with IF clear. */
static void wait_irq(unsigned before)
{
	for (;;) {
		cpu_cli();
		if (irqs != before)
			return;
		cpu_sti_hlt();
	}
}

/* @n reads of sectors 0.. in flight at once, one kick after all or
 * (@kick_each) one after each; wait for all. */
static void batch(struct vdev *d, unsigned n, bool kick_each)
{
	struct vq_used_elem e;
	struct vq_buf b[3];

	for (unsigned i = 0; i < n; i++) {
		hdrs[i] = (struct vblk_hdr){ .type = VBLK_T_IN, .sector = i };
		stat[i] = 0xff;
		b[0] = (struct vq_buf){ &hdrs[i], sizeof(hdrs[i]), false };
		b[1] = (struct vq_buf){ data + i * VBLK_SECTOR, VBLK_SECTOR, true };
		b[2] = (struct vq_buf){ (const void *)&stat[i], 1, true };
		vq_add(d, b, 3, false);
		if (kick_each)
			vq_kick(d);
	}
	vq_kick(d);
	for (unsigned i = 0; i < n; i++)
		vq_wait(d, &e);
	for (unsigned i = 0; i < n; i++)
		if (stat[i] != VBLK_S_OK)
			fail(F_STATUS, "batch request %u status %u", i, stat[i]);
	check("batch", data, 0, n * VBLK_SECTOR, seed);
}

static void t_event_idx(void)
{
	struct vdev *d;
	unsigned before, kicks_want = 0;

	/* Both 8259s masked: the line must come through the IOAPIC. */
	outb(0x21, 0xff);
	outb(0xa1, 0xff);
	idt_set_handler(IRQ_VECTOR, on_irq);
	idt_set_handler(SPURIOUS_VECTOR, on_spurious);
	lapic_enable(SPURIOUS_VECTOR);
	d = open_disk(0, VF_VERSION_1 | VF_EVENT_IDX, 0, qsize);
	vdev_route_irq(d, IRQ_VECTOR, lapic_id());

	/* used_event 0: an interrupt when the first buffer is used.  The
	 * device publishes used->idx, then decides on the interrupt, both
	 * under the lock the InterruptStatus read takes: no race. */
	*vq_used_event(d) = 0;
	before = irqs;
	read_check(d, 0, 1, seed, "first read");
	kicks_want++;
	if (!(vdev_read(d, VMMIO_INTERRUPT_STATUS) & VMMIO_INT_VRING))
		fail(F_IRQ, "no used-buffer interrupt at used_event 0");
	wait_irq(before);
	vdev_write(d, VMMIO_INTERRUPT_ACK, VMMIO_INT_VRING);
	if (vdev_read(d, VMMIO_INTERRUPT_STATUS))
		fail(F_IRQ, "InterruptStatus 0x%x after the ack",
		     vdev_read(d, VMMIO_INTERRUPT_STATUS));

	/* used_event far ahead: four buffers used, no interrupt. */
	*vq_used_event(d) = (uint16_t)(d->last_used + 0x100);
	batch(d, 4, false);
	kicks_want++;
	if (vdev_read(d, VMMIO_INTERRUPT_STATUS))
		fail(F_IRQ, "interrupt although used_event lies ahead");

	/* used_event at the second of four: one interrupt. */
	*vq_used_event(d) = (uint16_t)(d->last_used + 1);
	before = irqs;
	batch(d, 4, false);
	kicks_want++;
	if (!(vdev_read(d, VMMIO_INTERRUPT_STATUS) & VMMIO_INT_VRING))
		fail(F_IRQ, "no interrupt when used->idx passed used_event");
	wait_irq(before);
	vdev_write(d, VMMIO_INTERRUPT_ACK, VMMIO_INT_VRING);

	/* An idle device asks to be kicked for the next chain. */
	if (*vq_avail_event(d) != d->avail_idx)
		fail(F_IRQ, "avail_event %u with avail->idx %u and the queue idle",
		     *vq_avail_event(d), d->avail_idx);
	if (d->kicks != kicks_want)
		fail(F_IRQ, "%u notifications, want %u", d->kicks, kicks_want);

	/* Chains published one at a time while the device works: a kick
	 * only where avail_event asks for one.  A device that let
	 * avail_event fall behind would never hear of the rest (a hang). */
	for (unsigned r = 0; r < 4; r++)
		batch(d, qsize / 3u, true);
	if (*vq_avail_event(d) != d->avail_idx)
		fail(F_IRQ, "avail_event %u with avail->idx %u after streaming",
		     *vq_avail_event(d), d->avail_idx);
	gprintf("blk: event_idx ok (%u interrupts, %u notifications)\n", irqs, d->kicks);
}

static void t_range(void)
{
	struct vdev *d = open_disk(0, VF_VERSION_1, 0, qsize);
	uint64_t cap = capacity(d);
	struct vq_buf odd = { data, 100, true };

	rw(d, VBLK_T_IN, cap, 1, VBLK_S_IOERR, "read at the capacity");
	rw(d, VBLK_T_IN, cap - 1, 2, VBLK_S_IOERR, "read across the end");
	rw(d, VBLK_T_IN, ~0ull, 1, VBLK_S_IOERR, "read at sector 2^64-1");
	rw(d, VBLK_T_IN, 1ull << 55, 1, VBLK_S_IOERR, "read at byte 2^64");
	fill(data, (cap - 1) * VBLK_SECTOR, 2 * VBLK_SECTOR, wseed);
	rw(d, VBLK_T_OUT, cap - 1, 2, VBLK_S_IOERR, "write across the end");
	rw(d, VBLK_T_OUT, cap, 1, VBLK_S_IOERR, "write at the capacity");
	xfer(d, VBLK_T_IN, 0, &odd, 1, false, VBLK_S_IOERR, "read of 100 bytes");
	odd.writable = false;
	xfer(d, VBLK_T_OUT, 0, &odd, 1, false, VBLK_S_IOERR, "write of 100 bytes");
	xfer(d, 0x77, 0, NULL, 0, false, VBLK_S_UNSUPP, "unknown request type");
	read_check(d, cap - 1, 1, seed, "last sector");
	if (vdev_read(d, VMMIO_STATUS) & VSTAT_NEEDS_RESET)
		fail(F_NEEDS_RESET, "the device wants a reset after refused requests");
	gprintf("blk: out of range ok\n");
}

/* Chains the device must refuse (virtio.h of vmrun lists them; the
 * specification forbids each to drivers). */
enum {
	B_ADDR,          /* a buffer in the MMIO hole */
	B_STRADDLE,      /* a buffer across the end of RAM */
	B_LOOP,          /* a descriptor that chains to itself */
	B_NEXT,          /* next index past the table */
	B_ZERO_LEN,      /* a buffer of length 0 */
	B_ORDER,         /* a readable buffer after a writable one */
	B_NO_HEADER,     /* nothing but the status byte */
	B_INDIRECT_UNNEG, /* an indirect table, INDIRECT_DESC not negotiated */
	B_AVAIL_IDX,     /* avail->idx more than the queue size ahead */
	B_HEAD,          /* a head index past the table */
	B_NESTED,        /* an indirect descriptor inside an indirect table */
	B_INDIRECT_NEXT, /* an indirect descriptor with NEXT */
	B_TABLE_LEN,     /* an indirect table of 40 bytes */
	B_BIG_TABLE,     /* an indirect table of queue size + 1 entries */
	B_CHAINS,
};

static const char *const bad_names[B_CHAINS] = {
	"buffer in the MMIO hole", "buffer across the end of RAM", "descriptor loop",
	"next index out of range", "zero-length buffer", "readable after writable",
	"no header", "indirect not negotiated", "avail idx too far ahead",
	"head out of range", "nested indirect", "indirect with next",
	"indirect table length", "indirect table too long",
};

#define ST_NEGOTIATED (VSTAT_ACKNOWLEDGE | VSTAT_DRIVER | VSTAT_FEATURES_OK)

/* Wait for NEEDS_RESET after something only a broken driver does, the
 * driver having set @status; check that the rest of the status stayed,
 * nothing was completed, and a live driver was told; reset the device. */
static void expect_needs_reset(struct vdev *d, const char *what, uint16_t used_before,
			       uint32_t status)
{
	uint32_t st, want = status | VSTAT_NEEDS_RESET;
	bool live = status & VSTAT_DRIVER_OK;

	while (!((st = vdev_read(d, VMMIO_STATUS)) & VSTAT_NEEDS_RESET))
		cpu_pause();
	if (st != want)
		fail(F_NEEDS_RESET, "%s: status 0x%x, want 0x%x", what, st, want);
	if (vq_used_idx(d) != used_before || stat[0] != 0xff)
		fail(F_NEEDS_RESET, "%s: the device completed the chain", what);
	/* Section 2.1.2: with DRIVER_OK set, a configuration change
	 * notification tells the driver. */
	if (live && !(vdev_read(d, VMMIO_INTERRUPT_STATUS) & VMMIO_INT_CONFIG))
		fail(F_IRQ, "%s: no configuration change interrupt", what);
	vdev_write(d, VMMIO_STATUS, 0);
	if (vdev_read(d, VMMIO_STATUS) || vdev_read(d, VMMIO_QUEUE_READY) ||
	    vdev_read(d, VMMIO_INTERRUPT_STATUS))
		fail(F_RESET, "%s: status 0x%x ready %u interrupt 0x%x after the reset", what,
		     vdev_read(d, VMMIO_STATUS), vdev_read(d, VMMIO_QUEUE_READY),
		     vdev_read(d, VMMIO_INTERRUPT_STATUS));
	gprintf("blk: malformed %s: needs reset ok\n", what);
}

static void bad_chain(unsigned v)
{
	bool ind = v >= B_NESTED;
	struct vdev *d = open_disk(0, VF_VERSION_1 | (ind ? VF_INDIRECT_DESC : 0), 0, qsize);
	struct vq_desc *t = d->mem.desc, *tbl = d->mem.indirect[0];
	volatile uint16_t *avail = d->mem.avail;
	uint16_t head = 0, used_before;

	read_check(d, 0, 1, seed, "read before a malformed chain");
	used_before = vq_used_idx(d);
	hdrs[0] = (struct vblk_hdr){ .type = VBLK_T_IN, .sector = 0 };
	stat[0] = 0xff;
	t[0] = (struct vq_desc){ (uintptr_t)&hdrs[0], sizeof(hdrs[0]), VQ_DESC_F_NEXT, 1 };
	t[1] = (struct vq_desc){ (uintptr_t)data, VBLK_SECTOR, VQ_DESC_F_WRITE | VQ_DESC_F_NEXT, 2 };
	t[2] = (struct vq_desc){ (uintptr_t)&stat[0], 1, VQ_DESC_F_WRITE, 0 };
	memcpy(tbl, t, 3 * sizeof(*t));
	tbl[0].next = 1;
	tbl[1].next = 2;
	switch (v) {
	case B_ADDR: t[1].addr = HOLE_ADDR; break;
	case B_STRADDLE: t[1].addr = RAM_END - 256; break;
	case B_LOOP: t[1].next = 1; break;
	case B_NEXT: t[1].next = d->size; break;
	case B_ZERO_LEN: t[1].len = 0; break;
	case B_ORDER:
		t[1] = (struct vq_desc){ (uintptr_t)&stat[0], 1, VQ_DESC_F_WRITE | VQ_DESC_F_NEXT, 2 };
		t[2] = (struct vq_desc){ (uintptr_t)data, VBLK_SECTOR, 0, 0 };
		break;
	case B_NO_HEADER: head = 2; break;
	case B_INDIRECT_UNNEG:
	case B_INDIRECT_NEXT:
	case B_TABLE_LEN:
	case B_BIG_TABLE:
	case B_NESTED:
		t[0] = (struct vq_desc){ (uintptr_t)tbl, 3 * sizeof(*t), VQ_DESC_F_INDIRECT, 0 };
		if (v == B_INDIRECT_NEXT)
			t[0].flags |= VQ_DESC_F_NEXT, t[0].next = 1;
		if (v == B_TABLE_LEN)
			t[0].len = 40;
		if (v == B_BIG_TABLE)
			t[0].len = (d->size + 1u) * (uint32_t)sizeof(*t);
		if (v == B_NESTED)
			tbl[1] = (struct vq_desc){ (uintptr_t)&tbl[4], 2 * sizeof(*t),
						   VQ_DESC_F_INDIRECT, 0 };
		break;
	case B_HEAD: head = d->size; break;
	case B_AVAIL_IDX: d->avail_idx = (uint16_t)(d->avail_idx + d->size); break;
	}
	avail[2 + (d->avail_idx & (d->size - 1))] = head;
	d->avail_idx++;
	vq_kick(d);
	expect_needs_reset(d, bad_names[v], used_before, ST_NEGOTIATED | VSTAT_DRIVER_OK);
}

/* A queue the device must refuse at QueueReady: descriptor table at
 * @desc, @num entries. */
static void bad_queue(uint64_t desc, uint32_t num, const char *what)
{
	struct vdev *d = &disks[0];
	uint64_t ring = (uintptr_t)d->mem.avail;

	if (vdev_probe(d, &devs[0], VIRTIO_ID_BLOCK))
		fail(F_INIT, "%s: probe", what);
	vdev_write(d, VMMIO_DRIVER_FEATURES_SEL, 1);
	vdev_write(d, VMMIO_DRIVER_FEATURES, (uint32_t)(VF_VERSION_1 >> 32));
	vdev_write(d, VMMIO_STATUS, VSTAT_ACKNOWLEDGE | VSTAT_DRIVER | VSTAT_FEATURES_OK);
	vdev_write(d, VMMIO_QUEUE_SEL, 0);
	vdev_write(d, VMMIO_QUEUE_NUM, num);
	vdev_write(d, VMMIO_QUEUE_DESC_LOW, (uint32_t)desc);
	vdev_write(d, VMMIO_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
	vdev_write(d, VMMIO_QUEUE_DRIVER_LOW, (uint32_t)ring);
	vdev_write(d, VMMIO_QUEUE_DRIVER_HIGH, (uint32_t)(ring >> 32));
	ring = (uintptr_t)d->mem.used;
	vdev_write(d, VMMIO_QUEUE_DEVICE_LOW, (uint32_t)ring);
	vdev_write(d, VMMIO_QUEUE_DEVICE_HIGH, (uint32_t)(ring >> 32));
	vdev_write(d, VMMIO_QUEUE_READY, 1);
	if (vdev_read(d, VMMIO_QUEUE_READY))
		fail(F_NEEDS_RESET, "%s: the queue became ready", what);
	stat[0] = 0xff;
	expect_needs_reset(d, what, vq_used_idx(d), ST_NEGOTIATED);
}

static void t_malformed(void)
{
	uint64_t desc = (uintptr_t)disks[0].mem.desc;

	for (unsigned v = 0; v < B_CHAINS; v++)
		bad_chain(v);
	bad_queue(HOLE_ADDR, qsize, "descriptor table in the MMIO hole");
	bad_queue(desc + 8, qsize, "misaligned descriptor table");
	bad_queue(desc, 3, "queue size not a power of two");
	bad_queue(desc, 2 * VQ_MAX, "queue size above the maximum");
	read_check(open_disk(0, VF_VERSION_1, 0, qsize), 0, 1, seed, "read after the resets");
	gprintf("blk: recovered\n");
}

static void negotiate_features(struct vdev *d, uint64_t f, uint32_t status)
{
	if (vdev_probe(d, &devs[0], VIRTIO_ID_BLOCK))
		fail(F_INIT, "probe");
	vdev_write(d, VMMIO_DRIVER_FEATURES_SEL, 0);
	vdev_write(d, VMMIO_DRIVER_FEATURES, (uint32_t)f);
	vdev_write(d, VMMIO_DRIVER_FEATURES_SEL, 1);
	vdev_write(d, VMMIO_DRIVER_FEATURES, (uint32_t)(f >> 32));
	vdev_write(d, VMMIO_STATUS, VSTAT_ACKNOWLEDGE | VSTAT_DRIVER | status);
}

static void t_negotiate(void)
{
	struct vdev *d = &disks[0];

	/* Section 3.1.1: the device leaves FEATURES_OK clear for a subset it
	 * cannot work with; vmrun offers modern devices only. */
	negotiate_features(d, d->offered & ~VF_VERSION_1, VSTAT_FEATURES_OK);
	if (vdev_read(d, VMMIO_STATUS) & VSTAT_FEATURES_OK)
		fail(F_NEGOTIATE, "FEATURES_OK without VERSION_1");
	negotiate_features(d, VF_VERSION_1 | VBLK_F_RO | VF_BIT(40), VSTAT_FEATURES_OK);
	if (d->offered & (VBLK_F_RO | VF_BIT(40)))
		fail(F_FEATURE, "a writable disk offers 0x%lx", d->offered);
	if (vdev_read(d, VMMIO_STATUS) & VSTAT_FEATURES_OK)
		fail(F_NEGOTIATE, "FEATURES_OK with features never offered");
	gprintf("blk: features refused ok\n");
	/* One request queue of at most 256 entries; no feature bits past 63. */
	vdev_write(d, VMMIO_QUEUE_SEL, 0);
	if (vdev_read(d, VMMIO_QUEUE_NUM_MAX) != VQ_MAX)
		fail(F_CONFIG, "QueueNumMax %u, want %u", vdev_read(d, VMMIO_QUEUE_NUM_MAX), VQ_MAX);
	vdev_write(d, VMMIO_QUEUE_SEL, 1);
	if (vdev_read(d, VMMIO_QUEUE_NUM_MAX) || vdev_read(d, VMMIO_QUEUE_READY))
		fail(F_CONFIG, "queue 1 exists: QueueNumMax %u", vdev_read(d, VMMIO_QUEUE_NUM_MAX));
	vdev_write(d, VMMIO_DEVICE_FEATURES_SEL, 2);
	if (vdev_read(d, VMMIO_DEVICE_FEATURES))
		fail(F_FEATURE, "feature bits 64-95: 0x%x", vdev_read(d, VMMIO_DEVICE_FEATURES));
	negotiate_features(d, VF_VERSION_1, VSTAT_DRIVER_OK);
	stat[0] = 0xff;
	expect_needs_reset(d, "DRIVER_OK without FEATURES_OK", 0,
			   VSTAT_ACKNOWLEDGE | VSTAT_DRIVER | VSTAT_DRIVER_OK);
	read_check(open_disk(0, VF_VERSION_1, 0, qsize), 0, 1, seed, "read after negotiation");
	gprintf("blk: negotiate ok\n");
}

/* Whether @len bytes at @buf hold pattern @s from disk byte @off (@s 0:
 * zeroes). */
static bool same(const void *buf, uint64_t off, uint64_t len, uint64_t s)
{
	const uint64_t *w = buf;

	for (uint64_t i = 0; i < len / 8; i++)
		if (w[i] != (s ? pattern(s, off + 8 * i) : 0))
			return false;
	return true;
}

/* qsize - 1 writes of blk.rsize sectors each to [@start, @start + (qsize
 * - 1) * rsize), every one from the same buffer (pattern blk.wseed of disk
 * bytes [0, rsize * 512)), and a FLUSH (slow: it outlives the writes in
 * the backend), then a reset: at once, or (@taken) once the device has
 * taken every chain (it moves avail_event past them) while the backend
 * still holds some.  The device finishes or drops each request, and after
 * the reset touches none of them (section 2.4).  Prints which completed,
 * one digit each, the FLUSH last. */
static void reset_busy(uint64_t start, uint64_t rsize, bool taken)
{
	struct vdev *d = open_disk(0, VF_VERSION_1 | VF_INDIRECT_DESC | VF_EVENT_IDX, 0, qsize);
	uint32_t len = (uint32_t)(rsize * VBLK_SECTOR);
	uint8_t *src = data + sizeof(data) - len;
	static uint8_t snap[VQ_MAX];
	static char done[VQ_MAX + 1];
	struct vq_buf b[3];
	unsigned n_done = 0;

	fill(src, 0, len, wseed);
	for (unsigned i = 0; i < qsize; i++) {
		bool flush = i == qsize - 1u;

		hdrs[i] = (struct vblk_hdr){ .type = flush ? VBLK_T_FLUSH : VBLK_T_OUT,
					     .sector = flush ? 0 : start + i * rsize };
		stat[i] = 0xff;
		b[0] = (struct vq_buf){ &hdrs[i], sizeof(hdrs[i]), false };
		b[1] = (struct vq_buf){ src, len, false };
		b[2] = (struct vq_buf){ (const void *)&stat[i], 1, true };
		if (flush)
			b[1] = b[2];
		vq_add(d, b, flush ? 2 : 3, true);
	}
	vq_kick(d);
	while (taken && *vq_avail_event(d) != d->avail_idx)
		cpu_pause();
	vdev_write(d, VMMIO_STATUS, 0);
	if (vdev_read(d, VMMIO_STATUS))
		fail(F_RESET, "status 0x%x after the reset", vdev_read(d, VMMIO_STATUS));
	for (unsigned i = 0; i < qsize; i++) {
		snap[i] = stat[i];
		if (snap[i] != VBLK_S_OK && snap[i] != 0xff)
			fail(F_STATUS, "write %u: status %u", i, snap[i]);
		done[i] = snap[i] == VBLK_S_OK ? '1' : '0';
		n_done += snap[i] == VBLK_S_OK;
	}
	done[qsize] = '\0';
	/* The same rings again, zeroed: a late completion would show. */
	d = open_disk(0, VF_VERSION_1, 0, qsize);
	for (unsigned i = 0; i + 1 < qsize; i++) {
		/* The first and the last sector of each write. */
		for (uint64_t k = 0; k < rsize; k += rsize > 1 ? rsize - 1 : 1) {
			uint64_t sector = start + i * rsize + k;

			rw(d, VBLK_T_IN, sector, 1, VBLK_S_OK, "read after the reset");
			if (!same(data, k * VBLK_SECTOR, VBLK_SECTOR, wseed) &&
			    (snap[i] == VBLK_S_OK || !same(data, sector * VBLK_SECTOR, VBLK_SECTOR, seed)))
				fail(F_DATA, "sector %lu: neither the old nor the new data (status %u)",
				     sector, snap[i]);
		}
	}
	for (unsigned i = 0; i < qsize; i++)
		if (stat[i] != snap[i])
			fail(F_RESET, "write %u: status changed after the reset", i);
	gprintf("blk: completed %lu %s\n", start, done);
	gprintf("blk: reset %s with %u of %u writes completed ok\n",
		taken ? "after the device took them" : "at once", n_done, qsize);
}

static void t_reset(void)
{
	uint64_t rsize = (uint64_t)cmdline_get_int("blk.rsize", 1);

	if (qsize > VQ_MAX / 2 || !rsize || rsize * VBLK_SECTOR > sizeof(data) / 2)
		fail(F_USAGE, "reset needs blk.qsize <= %d and blk.rsize <= %zu", VQ_MAX / 2,
		     sizeof(data) / 2 / VBLK_SECTOR);
	reset_busy(first, rsize, false);
	reset_busy(first + qsize * rsize, rsize, true);
}

static void t_flush_only(void)
{
	t_flush(false);
}

static void t_durable(void)
{
	t_flush(true);
}

/* The pattern seed of sector @x after phases 0..@last of t_snapshot(). */
static uint64_t snapshot_seed(uint64_t x, uint64_t last)
{
	for (uint64_t k = last + 1; k-- > 0;)
		if (x >= first + k * (count / 2) && x < first + k * (count / 2) + count)
			return wseed + k;
	return seed;
}

static void t_bus_master(void)
{
	static struct vblk_hdr hdr;
	static volatile uint8_t status;
	struct vdev *d = open_disk(0, VF_VERSION_1, 0, qsize);
	uint64_t len = count * VBLK_SECTOR;
	struct vq_buf b[3] = {
		{ &hdr, sizeof(hdr), false }, { data, (uint32_t)len, true },
		{ (const void *)&status, 1, true },
	};
	struct vq_used_elem e;
	uint16_t head, used = vq_used_idx(d);

	if (!d->pci)
		fail(F_USAGE, "bus_master: disk 0 is not on PCI");
	vpci_bus_master(d, false);
	memset(data, 0xa5, len);
	hdr = (struct vblk_hdr){ .type = VBLK_T_IN, .sector = first };
	status = 0xff;
	head = vq_add(d, b, 3, false);
	vq_kick(d);
	/* A device that ignores the bit answers within microseconds; each
	 * look here takes longer than that where guest code is interpreted. */
	for (unsigned i = 0; i < 20000; i++) {
		if (vq_used_idx(d) != used || status != 0xff)
			fail(F_USED_ID, "bus_master: a request completed with Bus Master Enable clear");
		cpu_pause();
	}
	for (uint64_t i = 0; i < len; i++)
		if (data[i] != 0xa5)
			fail(F_DATA, "bus_master: byte %lu written with Bus Master Enable clear", i);
	gprintf("blk: bus master off: request held\n");
	vpci_bus_master(d, true);
	vq_wait(d, &e);
	if (e.id != head)
		fail(F_USED_ID, "bus_master: the used element names chain %u, want %u", e.id, head);
	if (status != VBLK_S_OK)
		fail(F_STATUS, "bus_master: status %d", status);
	check("bus_master", data, first * VBLK_SECTOR, len, seed);
	gprintf("blk: bus master on: request done\n");
}

static void t_snapshot(void)
{
	struct vdev *d = open_disk(0, VF_VERSION_1 | VBLK_F_FLUSH, 0, qsize);
	uint64_t rounds = (uint64_t)cmdline_get_int("blk.rounds", 1), polls = 0;

	if (count < 2 || first + rounds * (count / 2) + count + 1 > capacity(d))
		fail(F_USAGE, "blk.count/blk.rounds do not fit the disk");
	for (uint64_t k = 0; k <= rounds; k++) {
		write_pattern(d, first + k * (count / 2), count, wseed + k, "phase write");
		gprintf("blk: phase %lu written\n", (unsigned long)k);
		if (k == rounds)
			break;
		/* Keep the disk busy while the host switches images under it. */
		while (!(inb(COM1_PORT + UART_LSR) & UART_LSR_DR)) {
			read_check(d, first, 1, snapshot_seed(first, k), "read during the snapshot");
			polls++;
		}
		(void)inb(COM1_PORT + UART_RBR);
	}
	for (uint64_t x = first - 1; x <= first + rounds * (count / 2) + count; x++)
		read_check(d, x, 1, snapshot_seed(x, rounds), "read back after the snapshots");
	gprintf("blk: snapshot ok (%lu reads while waiting)\n", (unsigned long)polls);
}

static const struct {
	const char *name;
	void (*run)(void);
} tests[] = {
	{ "read", t_read },         { "write", t_write },         { "flush", t_flush_only },
	{ "durable", t_durable },   { "get_id", t_get_id },       { "discard", t_discard },
	{ "readonly", t_readonly }, { "multi", t_multi },         { "full", t_full },
	{ "indirect", t_indirect }, { "event_idx", t_event_idx }, { "range", t_range },
	{ "malformed", t_malformed }, { "negotiate", t_negotiate }, { "reset", t_reset },
	{ "snapshot", t_snapshot }, { "bus_master", t_bus_master },
};

int guest_main(void)
{
	char name[16];

	n_devs = virtio_scan(devs, MAX_DISKS);
	if (n_devs)
		gprintf("blk: transport %s\n", devs[0].pci ? "pci" : "mmio");
	seed = (uint64_t)cmdline_get_int("blk.seed", 1);
	wseed = (uint64_t)cmdline_get_int("blk.wseed", 2);
	first = (uint64_t)cmdline_get_int("blk.sector", 64);
	count = (uint64_t)cmdline_get_int("blk.count", 8);
	qsize = (uint16_t)cmdline_get_int("blk.qsize", 16);
	if (!cmdline_get("blk.test", name, sizeof(name)))
		fail(F_USAGE, "no blk.test= on the command line");
	if (!n_devs)
		fail(F_USAGE, "no virtio_mmio.device= on the command line");
	if (count * VBLK_SECTOR > sizeof(data) || !first)
		fail(F_USAGE, "blk.count or blk.sector out of range");
	gprintf("blk: %s on %u disks\n", name, n_devs);
	for (unsigned i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
		if (!memcmp(name, tests[i].name, strlen(tests[i].name) + 1)) {
			tests[i].run();
			gprintf("blk: all ok\n");
			return 0;
		}
	}
	fail(F_USAGE, "unknown blk.test=%s", name);
}

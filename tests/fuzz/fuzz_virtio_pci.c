// SPDX-License-Identifier: MIT
/*
 * Fuzz target for the virtio-pci transport (src/virtio/pci.c) and the PCI
 * bus under it (src/devices/pci.c), driven as a hostile guest drives them:
 * configuration space through pci_config_read()/pci_config_write() and
 * through mechanism #1 (ports 0xCF8 and 0xCFC-0xCFF, on a port bus) at any
 * offset and width, unaligned and partial accesses, BAR sizing and moves,
 * the command register, capability walks and the PCI configuration access
 * capability; BAR accesses through the MMIO bus (so through the bus's
 * window and its BAR lookup) to the common, ISR, device-configuration and
 * notify regions of BAR0 and to the MSI-X table and PBA of BAR1.  Behind
 * the transport is a real virtio-blk on a 64 KiB raw disk in the scratch
 * directory, with 64 KiB of guest RAM; without KVM, notifications go
 * through the queue's eventfd to the event loop, MSI messages and INTx
 * levels to recorders here.
 *
 * Input:
 *   u8      flags: bit 0 read-only disk; bit 1 cache=unsafe; bit 2 no
 *           bring-up (the program starts at reset, decoding off); bit 3
 *           MSI-X in the bring-up (vector 0 for configuration, 1 for the
 *           queue, both unmasked); bit 4 decoding turned on by "firmware"
 *           (pci_bus_enable_all()) rather than by the guest's command write
 *   u64     driver features (VERSION_1 always added)
 *   u8      queue size: 1 << (byte % 9)
 *   3 * u16 descriptor table, avail ring and used ring addresses
 *   u8      program length (mod FZP_MAX_PROGRAM + 1)
 *   8 * len the program: {u8 op, u8 arg, u16 off, u32 val}, see run_op()
 *   the rest guest RAM from address 0 (at most 64 KiB).
 *
 * Besides a crash, a sanitizer report or a hang, a finding is: a guest
 * write that changed a read-only bit of configuration space; a decoded BAR
 * outside the window, not where its register says, with Memory Space off,
 * or overlapping another; a capability list that loops or points into the
 * header; an MSI-X pending bit, vector or ISR bit the transport cannot
 * have; a disk that grew.
 */
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/stat.h>

#include "fuzz_common.h"
#include "vmrun/block.h"
#include "vmrun/bus.h"
#include "vmrun/evloop.h"
#include "vmrun/guest_mem.h"
#include "vmrun/pci.h"
#include "vmrun/virtio_blk.h"
#include "vmrun/virtio_pci.h"

#define DISK_BYTES (64u << 10)
#define RAM_BYTES (64u << 10)
#define WIN 0xe0000000ull
#define WIN_LEN 0x100000ull /* 1 MiB: room to move both BARs around */
#define FZP_MAX_PROGRAM 48

struct fzp_op {
	uint8_t op, arg;
	uint16_t off;
	uint32_t val;
};

struct fzp {
	struct guest_mem gm; /* kept from input to input, cleared each time */
	struct evloop loop;
	struct pci_bus pci;
	struct bus pio, mmio;
	struct virtio_blk b;
	struct virtio_pci p;
	uint8_t cfg0[2][PCI_CFG_SIZE]; /* host bridge and device after set-up */
	uint64_t msi_count;
	bool irq_level[PCI_INTX_GSI_BASE + PCI_INTX_PINS];
	uint8_t flags, qsize_log;
	uint64_t features;
	uint16_t ring[3];
	unsigned n_ops;
	struct fzp_op ops[FZP_MAX_PROGRAM];
};

static void on_msi(void *opaque, uint64_t addr, uint32_t data)
{
	(void)addr, (void)data;
	((struct fzp *)opaque)->msi_count++;
}

static void on_irq(void *opaque, unsigned gsi, bool level)
{
	struct fzp *z = opaque;

	if (gsi >= PCI_INTX_GSI_BASE + PCI_INTX_PINS || gsi < PCI_INTX_GSI_BASE) {
		fprintf(stderr, "fuzz_virtio_pci: INTx on GSI %u\n", gsi);
		abort();
	}
	z->irq_level[gsi] = level;
}

static const struct pci_host_ops fzp_host_ops = { .set_irq = on_irq };

static unsigned slot_of(const struct fzp *z)
{
	return (unsigned)z->p.slot;
}

/* Where the guest last programmed BAR @b (what a driver would use). */
static uint64_t bar_addr(struct fzp *z, unsigned b)
{
	return pci_config_read(&z->pci, slot_of(z), PCI_BAR0 + 4 * b, 4) & ~0xfull;
}

static uint64_t mmio_rd(struct fzp *z, uint64_t gpa, unsigned size)
{
	uint64_t v = 0;

	(void)bus_read(&z->mmio, gpa, &v, size);
	return v;
}

static void mmio_wr(struct fzp *z, uint64_t gpa, unsigned size, uint64_t v)
{
	(void)bus_write(&z->mmio, gpa, &v, size);
}

static void common_wr(struct fzp *z, unsigned reg, unsigned size, uint64_t v)
{
	mmio_wr(z, bar_addr(z, VIRTIO_PCI_BAR) + VIRTIO_PCI_COMMON_OFF + reg, size, v);
}

/* Dispatch ready event-loop sources until none is (at most 64 rounds). */
static void pump(struct fzp *z)
{
	for (unsigned round = 0; round < 64; round++) {
		struct epoll_event ev[16];
		int k = epoll_wait(z->loop.epfd, ev, 16, 0);

		if (k <= 0)
			return;
		for (int i = 0; i < k; i++) {
			struct ev_source *src = ev[i].data.ptr;

			src->handler(src, ev[i].events);
		}
	}
}

static void parse(struct fzp *z, struct fz *f)
{
	const uint8_t *img;
	size_t img_len;
	uint8_t *ram = guest_mem_ptr(&z->gm, 0, RAM_BYTES);

	memset(ram, 0, RAM_BYTES);
	z->flags = fz_u8(f);
	z->features = fz_u64(f) | VIRTIO_BIT(VIRTIO_F_VERSION_1);
	z->qsize_log = fz_u8(f) % 9;
	for (unsigned i = 0; i < 3; i++)
		z->ring[i] = fz_u16(f);
	z->n_ops = fz_u8(f) % (FZP_MAX_PROGRAM + 1);
	for (unsigned i = 0; i < z->n_ops; i++) {
		z->ops[i].op = fz_u8(f);
		z->ops[i].arg = fz_u8(f);
		z->ops[i].off = fz_u16(f);
		z->ops[i].val = fz_u32(f);
	}
	img = fz_take(f, RAM_BYTES, &img_len);
	memcpy(ram, img, img_len);
}

/* What a driver does (section 4.1.5.1): decoding on, reset, features,
 * MSI-X (if asked), the queue, DRIVER_OK.  Any step may be refused. */
static void bring_up(struct fzp *z)
{
	if (z->flags & 16) {
		pci_bus_enable_all(&z->pci);
	} else {
		pci_config_write(&z->pci, slot_of(z), PCI_COMMAND, 2,
				 PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
	}
	common_wr(z, VIRTIO_PCI_COMMON_STATUS, 1, 0);
	common_wr(z, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE);
	common_wr(z, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	common_wr(z, VIRTIO_PCI_COMMON_GFSELECT, 4, 0);
	common_wr(z, VIRTIO_PCI_COMMON_GF, 4, (uint32_t)z->features);
	common_wr(z, VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
	common_wr(z, VIRTIO_PCI_COMMON_GF, 4, (uint32_t)(z->features >> 32));
	common_wr(z, VIRTIO_PCI_COMMON_STATUS, 1,
		  VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
	if (z->flags & 8) {
		uint64_t t = bar_addr(z, VIRTIO_PCI_MSIX_BAR) + VIRTIO_PCI_MSIX_TABLE;

		for (unsigned v = 0; v < 2; v++) {
			mmio_wr(z, t + 16 * v, 8, 0xfee00000ull);
			mmio_wr(z, t + 16 * v + 8, 4, 0x40 + v);
			mmio_wr(z, t + 16 * v + 12, 4, 0);
		}
		pci_config_write(&z->pci, slot_of(z), z->p.msix_cap + 2u, 2, PCI_MSIX_FLAGS_ENABLE);
		common_wr(z, VIRTIO_PCI_COMMON_MSIX, 2, 0);
	}
	common_wr(z, VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
	common_wr(z, VIRTIO_PCI_COMMON_Q_SIZE, 2, 1u << z->qsize_log);
	common_wr(z, VIRTIO_PCI_COMMON_Q_DESCLO, 8, z->ring[0]); /* a 64-bit access */
	common_wr(z, VIRTIO_PCI_COMMON_Q_AVAILLO, 4, z->ring[1]);
	common_wr(z, VIRTIO_PCI_COMMON_Q_AVAILHI, 4, 0);
	common_wr(z, VIRTIO_PCI_COMMON_Q_USEDLO, 4, z->ring[2]);
	common_wr(z, VIRTIO_PCI_COMMON_Q_USEDHI, 4, 0);
	if (z->flags & 8)
		common_wr(z, VIRTIO_PCI_COMMON_Q_MSIX, 2, 1);
	common_wr(z, VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
	common_wr(z, VIRTIO_PCI_COMMON_STATUS, 1,
		  mmio_rd(z, bar_addr(z, VIRTIO_PCI_BAR) + VIRTIO_PCI_COMMON_STATUS, 1) |
			  VIRTIO_STATUS_DRIVER_OK);
}

/* Walk the capability list as a driver does, reading every field of each
 * capability: it must end, in at most 48 steps, with every pointer 4-byte
 * aligned and past the header. */
static void walk_caps(struct fzp *z, unsigned slot)
{
	uint32_t status = pci_config_read(&z->pci, slot, PCI_STATUS, 2);
	unsigned at, n = 0;

	if (status == 0xffff || !(status & PCI_STATUS_CAP_LIST))
		return;
	at = pci_config_read(&z->pci, slot, PCI_CAPABILITY_LIST, 1);
	while (at) {
		if (at < PCI_CAP_START || (at & 3) || ++n > 48) {
			fprintf(stderr, "fuzz_virtio_pci: capability list of slot %u: pointer 0x%x "
					"(step %u)\n", slot, at, n);
			abort();
		}
		for (unsigned o = 2; o < 20 && at + o < PCI_CFG_SIZE; o++)
			(void)pci_config_read(&z->pci, slot, at + o, 1);
		at = pci_config_read(&z->pci, slot, at + 1, 1);
	}
}

static const uint16_t common_regs[] = {
	VIRTIO_PCI_COMMON_DFSELECT, VIRTIO_PCI_COMMON_DF, VIRTIO_PCI_COMMON_GFSELECT,
	VIRTIO_PCI_COMMON_GF, VIRTIO_PCI_COMMON_MSIX, VIRTIO_PCI_COMMON_NUMQ,
	VIRTIO_PCI_COMMON_STATUS, VIRTIO_PCI_COMMON_CFGGENERATION, VIRTIO_PCI_COMMON_Q_SELECT,
	VIRTIO_PCI_COMMON_Q_SIZE, VIRTIO_PCI_COMMON_Q_MSIX, VIRTIO_PCI_COMMON_Q_ENABLE,
	VIRTIO_PCI_COMMON_Q_NOFF, VIRTIO_PCI_COMMON_Q_DESCLO, VIRTIO_PCI_COMMON_Q_DESCHI,
	VIRTIO_PCI_COMMON_Q_AVAILLO, VIRTIO_PCI_COMMON_Q_AVAILHI, VIRTIO_PCI_COMMON_Q_USEDLO,
	VIRTIO_PCI_COMMON_Q_USEDHI,
};

static unsigned common_reg_width(unsigned reg)
{
	if (reg == VIRTIO_PCI_COMMON_STATUS || reg == VIRTIO_PCI_COMMON_CFGGENERATION)
		return 1;
	if (reg >= VIRTIO_PCI_COMMON_MSIX && reg < VIRTIO_PCI_COMMON_Q_DESCLO)
		return 2;
	return 4;
}

/* One step of the program.  @arg's low bits give a width (1 << (arg & 3):
 * 1, 2, 4 or 8, or for configuration space arg & 7 as it is, 0-7, so that
 * the bus's refusals are fuzzed too); op % 16:
 *   0, 1   configuration read / write of slot (1, 0, 2, 31)[arg >> 3 & 3]
 *          at off % 260, width arg & 7, through pci_config_read/write()
 *   2      CONFIG_ADDRESS (0xCF8 + (arg >> 2 & 3)) written with val;
 *          arg bit 7: val made 0x80000000 | slot 1 | (val & 0xfc) first
 *   3, 4   CONFIG_DATA (0xCFC + off % 5) read / written
 *   5, 6   BAR0 read / write at its programmed address + off % 0x4008
 *   7      BAR1 read (arg bit 4 clear) or write at its address + off % 0x1008
 *   8      any address of the window (val % its length), read or write (bit 4)
 *   9      notify queue (arg >> 2) % 2 through BAR0, then run the event loop
 *   10     common-configuration register common_regs[off % n] written
 *          with val, at its own width (arg bit 2: 64-bit when it can)
 *   11     the PCI configuration access capability: bar arg & 1, offset off,
 *          length 1 << (arg >> 1 & 3), then pci_cfg_data read (bit 7
 *          clear) or written with val at width (1, 2, 4)[(arg >> 3 & 3) % 3]
 *   12     MSI-X Message Control written with val's low 16 bits
 *   13     walk the capability lists of the device and the host bridge
 *   14     quiesce the disk (every request in flight completes)
 *   15     read the ISR (clears it, lowers INTx) */
static void run_op(struct fzp *z, const struct fzp_op *o)
{
	static const unsigned slots[4] = { 1, 0, 2, 31 };
	unsigned w = 1u << (o->arg & 3), slot = slots[o->arg >> 3 & 3];
	uint64_t v = o->val;

	switch (o->op % 16) {
	case 0:
		(void)pci_config_read(&z->pci, slot, o->off % 260u, o->arg & 7);
		break;
	case 1:
		pci_config_write(&z->pci, slot, o->off % 260u, o->arg & 7, o->val);
		break;
	case 2:
		if (o->arg & 0x80)
			v = 0x80000000u | (1u << 11) | (o->val & 0xfc);
		(void)bus_write(&z->pio, PCI_CFG_ADDR_PORT + (o->arg >> 2 & 3), &v, w);
		(void)bus_read(&z->pio, PCI_CFG_ADDR_PORT, &v, 4);
		break;
	case 3:
		(void)bus_read(&z->pio, PCI_CFG_DATA_PORT + o->off % 5u, &v, w);
		break;
	case 4:
		(void)bus_write(&z->pio, PCI_CFG_DATA_PORT + o->off % 5u, &v, w);
		break;
	case 5:
		(void)mmio_rd(z, bar_addr(z, VIRTIO_PCI_BAR) + o->off % 0x4008u, w);
		break;
	case 6:
		mmio_wr(z, bar_addr(z, VIRTIO_PCI_BAR) + o->off % 0x4008u, w, v);
		break;
	case 7:
		if (o->arg & 16)
			mmio_wr(z, bar_addr(z, VIRTIO_PCI_MSIX_BAR) + o->off % 0x1008u, w,
				v | (uint64_t)o->val << 32);
		else
			(void)mmio_rd(z, bar_addr(z, VIRTIO_PCI_MSIX_BAR) + o->off % 0x1008u, w);
		break;
	case 8:
		if (o->arg & 16)
			mmio_wr(z, WIN + o->val % WIN_LEN, w, v);
		else
			(void)mmio_rd(z, WIN + o->val % WIN_LEN, w);
		break;
	case 9:
		mmio_wr(z, bar_addr(z, VIRTIO_PCI_BAR) + VIRTIO_PCI_NOTIFY_OFF +
				   VIRTIO_PCI_NOTIFY_MULT * ((o->arg >> 2) % 2u), 2, (o->arg >> 2) % 2u);
		pump(z);
		break;
	case 10: {
		unsigned reg = common_regs[o->off % (sizeof(common_regs) / sizeof(common_regs[0]))];
		unsigned rw = common_reg_width(reg);

		if ((o->arg & 4) && rw == 4 && reg >= VIRTIO_PCI_COMMON_Q_DESCLO && !(reg & 7))
			rw = 8;
		common_wr(z, reg, rw, v | (uint64_t)o->val << 32);
		break;
	}
	case 11: {
		static const unsigned dw[3] = { 1, 2, 4 };
		unsigned cap = z->p.cfg_cap, dwidth = dw[(o->arg >> 3 & 3) % 3];

		pci_config_write(&z->pci, slot_of(z), cap + 4, 1, o->arg & 1);
		pci_config_write(&z->pci, slot_of(z), cap + 8, 4, o->off);
		pci_config_write(&z->pci, slot_of(z), cap + 12, 4, 1u << (o->arg >> 1 & 3));
		if (o->arg & 0x80)
			pci_config_write(&z->pci, slot_of(z), cap + 16, dwidth, o->val);
		else
			(void)pci_config_read(&z->pci, slot_of(z), cap + 16, dwidth);
		break;
	}
	case 12:
		pci_config_write(&z->pci, slot_of(z), z->p.msix_cap + 2u, 2, o->val & 0xffff);
		break;
	case 13:
		walk_caps(z, slot_of(z));
		walk_caps(z, 0);
		break;
	case 14:
		virtio_blk_quiesce(&z->b);
		pump(z);
		break;
	default:
		(void)mmio_rd(z, bar_addr(z, VIRTIO_PCI_BAR) + VIRTIO_PCI_ISR_OFF, 1);
		break;
	}
}

static void fail(const char *what, unsigned a, unsigned long long b)
{
	fprintf(stderr, "fuzz_virtio_pci: %s (%u, 0x%llx)\n", what, a, b);
	abort();
}

/* The invariants of vmrun/pci.h and vmrun/virtio_pci.h, after each step. */
static void check(struct fzp *z)
{
	struct pci_function *fns[2] = { &z->pci.host_bridge, &z->p.fn };

	for (unsigned k = 0; k < 2; k++) {
		const struct pci_function *fn = fns[k];

		for (unsigned i = 0; i < PCI_CFG_SIZE; i++)
			if ((fn->cfg[i] ^ z->cfg0[k][i]) & ~fn->wmask[i])
				fail("a read-only bit of configuration space changed", k, i);
		for (unsigned b = 0; b < PCI_NUM_BARS; b++) {
			const struct pci_bar *bar = &fn->bars[b];
			uint32_t reg;

			if (!bar->mapped)
				continue;
			memcpy(&reg, &fn->cfg[PCI_BAR0 + 4 * b], 4);
			if (!bar->size || !(fn->cfg[PCI_COMMAND] & PCI_COMMAND_MEMORY))
				fail("a BAR decoded with Memory Space off", b, bar->addr);
			if ((reg & ~0xfull) != bar->addr)
				fail("a BAR decoded where its register does not say", b, bar->addr);
			if (bar->addr < WIN || bar->addr - WIN >= WIN_LEN ||
			    bar->size > WIN_LEN - (bar->addr - WIN))
				fail("a BAR decoded outside the window", b, bar->addr);
			for (unsigned c = b + 1; c < PCI_NUM_BARS; c++) {
				const struct pci_bar *o = &fn->bars[c];

				if (o->mapped && bar->addr < o->addr + o->size &&
				    o->addr < bar->addr + bar->size)
					fail("two decoded BARs overlap", b, bar->addr);
			}
		}
	}
	if (z->p.pba >> z->p.n_vectors)
		fail("an MSI-X pending bit beyond the table", z->p.n_vectors, z->p.pba);
	if (z->p.config_vector >= z->p.n_vectors && z->p.config_vector != VIRTIO_MSI_NO_VECTOR)
		fail("a configuration vector beyond the table", z->p.config_vector, 0);
	for (unsigned q = 0; q < VIRTIO_PCI_MAX_QUEUES; q++)
		if (z->p.queue_vector[q] >= z->p.n_vectors &&
		    z->p.queue_vector[q] != VIRTIO_MSI_NO_VECTOR)
			fail("a queue vector beyond the table", q, z->p.queue_vector[q]);
	if (z->p.isr & ~(VIRTIO_PCI_ISR_QUEUE | VIRTIO_PCI_ISR_CONFIG))
		fail("an ISR bit that does not exist", z->p.isr, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fzp z;
	static char path[300];
	struct fz f = { data, size };
	struct blk_open_opts opts = { .no_aio = true, .format = BLK_FORMAT_RAW };
	struct virtio_pci_host host;
	struct blk *disk;
	struct stat st;
	char err[512];

	fz_quiet();
	if (!path[0])
		fz_scratch_path(path, sizeof(path), "pci-blk.raw");
	if (!z.gm.mapping && guest_mem_init(&z.gm, RAM_BYTES))
		abort();
	parse(&z, &f);
	z.msi_count = 0;
	memset(z.irq_level, 0, sizeof(z.irq_level));
	/* A fresh, zeroed disk for each input. */
	fz_fresh_file(path, DISK_BYTES);
	opts.readonly = z.flags & 1;
	opts.cache = z.flags & 2 ? BLK_CACHE_UNSAFE : BLK_CACHE_WRITEBACK;
	if (evloop_init(&z.loop) || pci_bus_init(&z.pci, WIN, WIN_LEN, -1, &fzp_host_ops, &z))
		abort();
	bus_init(&z.pio, "port");
	bus_init(&z.mmio, "mmio");
	if (bus_register(&z.pio, &z.pci.addr_region) || bus_register(&z.pio, &z.pci.data_region) ||
	    bus_register(&z.mmio, &z.pci.window))
		abort();
	if (blk_open(path, &opts, &z.loop, &disk, err, sizeof(err))) {
		fprintf(stderr, "fuzz_virtio_pci: %s\n", err);
		abort();
	}
	if (virtio_blk_init(&z.b, &z.gm, disk, 0, "fuzz-serial", z.flags & 2))
		abort();
	host = (struct virtio_pci_host){ .vm_fd = -1, .loop = &z.loop, .bus = &z.pci,
					 .msi = on_msi, .msi_opaque = &z };
	if (virtio_pci_init(&z.p, &z.b.dev, &host, err, sizeof(err))) {
		fprintf(stderr, "fuzz_virtio_pci: %s\n", err);
		abort();
	}
	memcpy(z.cfg0[0], z.pci.host_bridge.cfg, PCI_CFG_SIZE);
	memcpy(z.cfg0[1], z.p.fn.cfg, PCI_CFG_SIZE);

	if (!(z.flags & 4))
		bring_up(&z);
	check(&z);
	for (unsigned i = 0; i < z.n_ops; i++) {
		run_op(&z, &z.ops[i]);
		check(&z);
	}
	pump(&z);
	check(&z);

	virtio_blk_exit(&z.b); /* drains: every completion runs */
	virtio_pci_exit(&z.p);
	pci_bus_exit(&z.pci);
	bus_exit(&z.pio);
	bus_exit(&z.mmio);
	evloop_exit(&z.loop);
	if (stat(path, &st) || st.st_size != DISK_BYTES)
		abort(); /* a request went past the end of the disk */
	return 0;
}

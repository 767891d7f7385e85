/* The virtio-pci transport (src/virtio/pci.c) against virtio 1.2 section
 * 4.1, driven as a guest driver drives it: capabilities found by walking
 * configuration space, BARs through the MMIO bus.  A fake device model
 * records what the transport asked of it; without KVM, MSI messages reach
 * a recorder and INTx levels a fake IOAPIC. */
#include "unit.h"
#include "virtio_fake.h"
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include "vmrun/bus.h"
#include "vmrun/evloop.h"
#include "vmrun/guest_mem.h"
#include "vmrun/state.h"
#include "vmrun/virtio_pci.h"

#define MiB (1ull << 20)
#define WIN 0xe0000000ull
#define WIN_LEN 0x1000000ull

struct rig {
	struct guest_mem gm;
	struct evloop loop;
	struct pci_bus pci;
	struct bus mmio;
	struct fake f;
	struct virtio_pci p;
	uint64_t bar0, bar1;
	/* what reached the "CPU" */
	int n_msi;
	uint64_t msi_addr;
	uint32_t msi_data;
	bool irq_level[24];
};

static void on_msi(void *opaque, uint64_t addr, uint32_t data)
{
	struct rig *r = opaque;

	r->n_msi++;
	r->msi_addr = addr;
	r->msi_data = data;
}

static void set_irq(void *opaque, unsigned gsi, bool level)
{
	((struct rig *)opaque)->irq_level[gsi] = level;
}

static const struct pci_host_ops host_ops = { .set_irq = set_irq };

static unsigned slot(struct rig *r)
{
	return (unsigned)r->p.slot;
}

static uint32_t cfg_rd(struct rig *r, unsigned off, unsigned size)
{
	return pci_config_read(&r->pci, slot(r), off, size);
}

static void cfg_wr(struct rig *r, unsigned off, unsigned size, uint32_t v)
{
	pci_config_write(&r->pci, slot(r), off, size, v);
}

static uint64_t rd(struct rig *r, uint64_t gpa, unsigned size)
{
	uint64_t v = 0;

	bus_read(&r->mmio, gpa, &v, size);
	return v;
}

static void wr(struct rig *r, uint64_t gpa, unsigned size, uint64_t v)
{
	bus_write(&r->mmio, gpa, &v, size);
}

#define COMMON(r, reg) ((r)->bar0 + VIRTIO_PCI_COMMON_OFF + (reg))

static int setup(void **state)
{
	struct rig *r = calloc(1, sizeof(*r));
	struct virtio_pci_host host;
	char err[200];

	assert_non_null(r);
	assert_int_equal(guest_mem_init(&r->gm, 16 * MiB), 0);
	assert_int_equal(evloop_init(&r->loop), 0);
	assert_int_equal(pci_bus_init(&r->pci, WIN, WIN_LEN, -1, &host_ops, r), 0);
	bus_init(&r->mmio, "mmio");
	assert_int_equal(bus_register(&r->mmio, &r->pci.window), 0);
	for (unsigned i = 0; i < sizeof(r->f.config); i++)
		r->f.config[i] = (uint8_t)(0xa0 + i);
	r->f.loop = &r->loop;
	r->f.vqs[0].mem = r->f.vqs[1].mem = &r->gm;
	r->f.dev = (struct virtio_device){
		.name = "fake0", .device_id = 2,
		.features = VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_F_EVENT_IDX) | 0x5,
		.config_size = sizeof(r->f.config), .num_queues = 2, .vqs = r->f.vqs,
		.ops = &fake_ops, .opaque = &r->f,
	};
	pthread_mutex_init(&r->f.dev.lock, NULL);
	host = (struct virtio_pci_host){ .vm_fd = -1, .loop = &r->loop, .bus = &r->pci,
					 .msi = on_msi, .msi_opaque = r };
	assert_int_equal(virtio_pci_init(&r->p, &r->f.dev, &host, err, sizeof(err)), 0);
	assert_int_equal(r->p.slot, 1);
	/* What a kernel's PCI core does: enable decoding at the assigned BARs. */
	cfg_wr(r, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
	r->bar0 = cfg_rd(r, PCI_BAR0, 4) & ~0xfu;
	r->bar1 = cfg_rd(r, PCI_BAR0 + 4, 4) & ~0xfu;
	*state = r;
	return 0;
}

static int teardown(void **state)
{
	struct rig *r = *state;

	virtio_pci_exit(&r->p);
	pci_bus_exit(&r->pci);
	bus_exit(&r->mmio);
	evloop_exit(&r->loop);
	guest_mem_exit(&r->gm);
	pthread_mutex_destroy(&r->f.dev.lock);
	free(r);
	return 0;
}

/* Find the vendor capability of @type: its offset, or 0. */
static unsigned find_virtio_cap(struct rig *r, uint8_t type)
{
	unsigned at = cfg_rd(r, PCI_CAPABILITY_LIST, 1), n = 0;

	while (at && n++ < 48) {
		if (cfg_rd(r, at, 1) == PCI_CAP_ID_VNDR && cfg_rd(r, at + 3, 1) == type)
			return at;
		at = cfg_rd(r, at + 1, 1);
	}
	return 0;
}

static unsigned find_cap(struct rig *r, uint8_t id)
{
	unsigned at = cfg_rd(r, PCI_CAPABILITY_LIST, 1), n = 0;

	while (at && n++ < 48) {
		if (cfg_rd(r, at, 1) == id)
			return at;
		at = cfg_rd(r, at + 1, 1);
	}
	return 0;
}

static void negotiate(struct rig *r, uint64_t features)
{
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_STATUS), 1, 0);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_STATUS), 1, VIRTIO_STATUS_ACKNOWLEDGE);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_STATUS), 1,
	   VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_GFSELECT), 4, 0);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_GF), 4, (uint32_t)features);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_GFSELECT), 4, 1);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_GF), 4, (uint32_t)(features >> 32));
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_STATUS), 1,
	   VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
}

static void setup_queue(struct rig *r, unsigned q, uint64_t at, uint16_t vector)
{
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_Q_SELECT), 2, q);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_Q_SIZE), 2, 8);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_Q_DESCLO), 8, at); /* a 64-bit access */
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_Q_AVAILLO), 4, (uint32_t)(at + 0x1000));
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_Q_AVAILHI), 4, 0);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_Q_USEDLO), 4, (uint32_t)(at + 0x2000));
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_Q_USEDHI), 4, 0);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_Q_MSIX), 2, vector);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_Q_ENABLE), 2, 1);
}

static const uint64_t FEAT = VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_F_EVENT_IDX);

static void test_identity_and_caps(void **state)
{
	struct rig *r = *state;
	unsigned c;

	assert_int_equal(cfg_rd(r, PCI_VENDOR_ID, 2), 0x1af4);
	assert_int_equal(cfg_rd(r, PCI_DEVICE_ID, 2), 0x1042);
	assert_int_equal(cfg_rd(r, PCI_REVISION_ID, 1), 1);
	assert_int_equal(cfg_rd(r, PCI_CLASS_PROG, 4) >> 8, 0x0180);
	assert_int_equal(cfg_rd(r, PCI_INTERRUPT_PIN, 1), 1);
	assert_true(cfg_rd(r, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST);
	/* BAR sizes: 16 KiB and 4 KiB. */
	cfg_wr(r, PCI_COMMAND, 2, 0);
	cfg_wr(r, PCI_BAR0, 4, 0xffffffffu);
	assert_int_equal(cfg_rd(r, PCI_BAR0, 4), 0xffffc000u);
	cfg_wr(r, PCI_BAR0 + 4, 4, 0xffffffffu);
	assert_int_equal(cfg_rd(r, PCI_BAR0 + 4, 4), 0xfffff000u);
	/* Every capability the spec asks for, in BAR0 where the layout says. */
	c = find_virtio_cap(r, VIRTIO_PCI_CAP_COMMON_CFG);
	assert_true(c);
	assert_int_equal(cfg_rd(r, c + 4, 1), 0);                         /* bar */
	assert_int_equal(cfg_rd(r, c + 8, 4), VIRTIO_PCI_COMMON_OFF);
	assert_int_equal(cfg_rd(r, c + 12, 4), VIRTIO_PCI_COMMON_LEN);
	c = find_virtio_cap(r, VIRTIO_PCI_CAP_NOTIFY_CFG);
	assert_true(c);
	assert_int_equal(cfg_rd(r, c + 2, 1), 20);                        /* cap_len */
	assert_int_equal(cfg_rd(r, c + 8, 4), VIRTIO_PCI_NOTIFY_OFF);
	assert_int_equal(cfg_rd(r, c + 16, 4), VIRTIO_PCI_NOTIFY_MULT);
	c = find_virtio_cap(r, VIRTIO_PCI_CAP_ISR_CFG);
	assert_int_equal(cfg_rd(r, c + 8, 4), VIRTIO_PCI_ISR_OFF);
	c = find_virtio_cap(r, VIRTIO_PCI_CAP_DEVICE_CFG);
	assert_int_equal(cfg_rd(r, c + 8, 4), VIRTIO_PCI_DEVICE_OFF);
	assert_int_equal(cfg_rd(r, c + 12, 4), 12);
	/* MSI-X: 3 vectors (2 queues + config), table and PBA in BAR1. */
	c = find_cap(r, PCI_CAP_ID_MSIX);
	assert_true(c);
	assert_int_equal(cfg_rd(r, c + 2, 2), 2);
	assert_int_equal(cfg_rd(r, c + 4, 4), VIRTIO_PCI_MSIX_TABLE | 1);
	assert_int_equal(cfg_rd(r, c + 8, 4), VIRTIO_PCI_MSIX_PBA | 1);
	/* The capability fields themselves are read-only. */
	cfg_wr(r, c + 4, 4, 0x12345678);
	assert_int_equal(cfg_rd(r, c + 4, 4), VIRTIO_PCI_MSIX_TABLE | 1);
}

static void test_negotiation_and_queues(void **state)
{
	struct rig *r = *state;

	wr(r, COMMON(r, VIRTIO_PCI_COMMON_DFSELECT), 4, 1);
	assert_int_equal(rd(r, COMMON(r, VIRTIO_PCI_COMMON_DF), 4), 1); /* VERSION_1 */
	assert_int_equal(rd(r, COMMON(r, VIRTIO_PCI_COMMON_NUMQ), 2), 2);
	/* Without VERSION_1, FEATURES_OK does not stick. */
	negotiate(r, VIRTIO_BIT(VIRTIO_F_EVENT_IDX));
	assert_false(rd(r, COMMON(r, VIRTIO_PCI_COMMON_STATUS), 1) & VIRTIO_STATUS_FEATURES_OK);
	negotiate(r, FEAT);
	assert_true(rd(r, COMMON(r, VIRTIO_PCI_COMMON_STATUS), 1) & VIRTIO_STATUS_FEATURES_OK);
	/* Features are frozen after FEATURES_OK. */
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_GFSELECT), 4, 0);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_GF), 4, 0xffffffffu);
	assert_int_equal(r->f.dev.driver_features, FEAT);
	/* queue_size reads the maximum until the driver picks. */
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_Q_SELECT), 2, 1);
	assert_int_equal(rd(r, COMMON(r, VIRTIO_PCI_COMMON_Q_SIZE), 2), VIRTQ_MAX_SIZE);
	assert_int_equal(rd(r, COMMON(r, VIRTIO_PCI_COMMON_Q_NOFF), 2), 1);
	setup_queue(r, 0, 0x10000, 0);
	setup_queue(r, 1, 0x20000, 1);
	assert_true(r->f.vqs[0].ready && r->f.vqs[1].ready);
	assert_int_equal(r->f.vqs[0].desc_gpa, 0x10000);
	assert_int_equal(rd(r, COMMON(r, VIRTIO_PCI_COMMON_Q_DESCLO), 8), 0x20000);
	/* Ring addresses are frozen while the queue is enabled. */
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_Q_DESCLO), 4, 0x30000);
	assert_int_equal(r->f.vqs[1].desc_gpa, 0x20000);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_STATUS), 1, 0xf);
	assert_int_equal(r->f.activated, 1);
	/* Device configuration, through its window. */
	assert_int_equal(rd(r, r->bar0 + VIRTIO_PCI_DEVICE_OFF + 4, 4), 0xa7a6a5a4);
	/* Reset: status 0 brings back the registers' reset values. */
	r->f.resets = 0;
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_STATUS), 1, 0);
	assert_int_equal(r->f.resets, 1);
	assert_false(r->f.vqs[0].ready);
	assert_int_equal(rd(r, COMMON(r, VIRTIO_PCI_COMMON_Q_MSIX), 2), VIRTIO_MSI_NO_VECTOR);
	assert_int_equal(rd(r, COMMON(r, VIRTIO_PCI_COMMON_Q_SIZE), 2), VIRTQ_MAX_SIZE);
	assert_int_equal(rd(r, COMMON(r, VIRTIO_PCI_COMMON_STATUS), 1), 0);
}

static void test_bad_queue_needs_reset(void **state)
{
	struct rig *r = *state;

	negotiate(r, FEAT);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_Q_SELECT), 2, 0);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_Q_SIZE), 2, 7); /* not a power of two */
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_Q_ENABLE), 2, 1);
	assert_false(r->f.vqs[0].ready);
	assert_true(r->f.dev.status & VIRTIO_STATUS_NEEDS_RESET);
}

static void test_hostile_accesses(void **state)
{
	struct rig *r = *state;

	negotiate(r, FEAT);
	/* Wrong widths read 0 and write nothing. */
	assert_int_equal(rd(r, COMMON(r, VIRTIO_PCI_COMMON_NUMQ), 4), 0);
	assert_int_equal(rd(r, COMMON(r, VIRTIO_PCI_COMMON_DF), 1), 0);
	assert_int_equal(rd(r, COMMON(r, VIRTIO_PCI_COMMON_STATUS + 1), 2), 0);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_STATUS), 4, 0); /* not a reset */
	assert_true(r->f.dev.status & VIRTIO_STATUS_FEATURES_OK);
	wr(r, COMMON(r, 0x13), 2, 0xffff);
	wr(r, COMMON(r, 0x37), 1, 0xff);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_Q_DESCHI), 8, ~0ull); /* 64-bit, misaligned */
	assert_int_equal(r->f.vqs[0].desc_gpa, 0);
	/* A queue that does not exist: reads as absent, writes go nowhere. */
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_Q_SELECT), 2, 0xffff);
	assert_int_equal(rd(r, COMMON(r, VIRTIO_PCI_COMMON_Q_SIZE), 2), 0);
	assert_int_equal(rd(r, COMMON(r, VIRTIO_PCI_COMMON_Q_MSIX), 2), VIRTIO_MSI_NO_VECTOR);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_Q_ENABLE), 2, 1);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_Q_MSIX), 2, 0);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_Q_DESCLO), 4, 0x1000);
	/* Device configuration past its end (the fake asserts on overruns). */
	assert_int_equal(rd(r, r->bar0 + VIRTIO_PCI_DEVICE_OFF + 10, 4), 0);
	assert_int_equal(rd(r, r->bar0 + VIRTIO_PCI_DEVICE_OFF + 12, 1), 0);
	assert_int_equal(rd(r, r->bar0 + VIRTIO_PCI_DEVICE_OFF + 0xff8, 8), 0);
	/* Notify at an unaligned offset, past the last queue, past the BAR. */
	wr(r, r->bar0 + VIRTIO_PCI_NOTIFY_OFF + 2, 2, 0);
	wr(r, r->bar0 + VIRTIO_PCI_NOTIFY_OFF + 8, 2, 0);
	wr(r, r->bar0 + VIRTIO_PCI_BAR_SIZE - 2, 4, 0);
	/* Vectors beyond the table read back as NO_VECTOR. */
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_MSIX), 2, 3);
	assert_int_equal(rd(r, COMMON(r, VIRTIO_PCI_COMMON_MSIX), 2), VIRTIO_MSI_NO_VECTOR);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_MSIX), 2, 2);
	assert_int_equal(rd(r, COMMON(r, VIRTIO_PCI_COMMON_MSIX), 2), 2);
	/* MSI-X table: odd sizes and alignments, entries past the table. */
	wr(r, r->bar1 + 2, 4, 0xffffffffu);
	wr(r, r->bar1 + 0, 2, 0xffff);
	wr(r, r->bar1 + 4, 8, ~0ull);
	wr(r, r->bar1 + 16 * 3, 4, 0xffffffffu);
	assert_int_equal(rd(r, r->bar1 + 0, 4), 0);
	assert_int_equal(rd(r, r->bar1 + 4, 4), 0);
	assert_int_equal(rd(r, r->bar1 + 16 * 3, 4), 0);
	/* PBA writes are ignored. */
	wr(r, r->bar1 + VIRTIO_PCI_MSIX_PBA, 8, ~0ull);
	assert_int_equal(rd(r, r->bar1 + VIRTIO_PCI_MSIX_PBA, 8), 0);
	assert_int_equal(r->f.notified[0] + r->f.notified[1], 0);
}

static void test_notify(void **state)
{
	struct rig *r = *state;

	negotiate(r, FEAT);
	setup_queue(r, 0, 0x10000, 0);
	setup_queue(r, 1, 0x20000, 1);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_STATUS), 1, 0xf);
	/* Without KVM the notify write is forwarded to the queue's eventfd. */
	wr(r, r->bar0 + VIRTIO_PCI_NOTIFY_OFF + 4, 2, 1);
	assert_int_equal(evloop_run(&r->loop), 0);
	assert_int_equal(r->f.notified[1], 1);
	assert_int_equal(r->f.notified[0], 0);
}

/* Program MSI-X entry @v with a message, unmasked or not. */
static void msix_entry(struct rig *r, unsigned v, uint32_t data, bool masked)
{
	wr(r, r->bar1 + 16 * v, 4, 0xfee00000u);
	wr(r, r->bar1 + 16 * v + 4, 4, 0);
	wr(r, r->bar1 + 16 * v + 8, 4, data);
	wr(r, r->bar1 + 16 * v + 12, 4, masked);
}

static void test_msix(void **state)
{
	struct rig *r = *state;
	unsigned c = find_cap(r, PCI_CAP_ID_MSIX);

	negotiate(r, FEAT);
	setup_queue(r, 0, 0x10000, 0);
	setup_queue(r, 1, 0x20000, 1);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_MSIX), 2, 2);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_STATUS), 1, 0xf);
	/* Entries start masked. */
	assert_int_equal(rd(r, r->bar1 + 12, 4), 1);
	msix_entry(r, 0, 0x41, false);
	msix_entry(r, 1, 0x42, true);
	msix_entry(r, 2, 0x43, false);
	assert_int_equal(rd(r, r->bar1 + 16 + 8, 4), 0x42);
	assert_int_equal(rd(r, r->bar1 + 16, 8), 0xfee00000ull);
	cfg_wr(r, c + 2, 2, PCI_MSIX_FLAGS_ENABLE);
	assert_int_equal(cfg_rd(r, c + 2, 2), PCI_MSIX_FLAGS_ENABLE | 2); /* size stays */
	pthread_mutex_lock(&r->f.dev.lock);
	r->f.dev.interrupt_used(&r->f.dev, 0);
	pthread_mutex_unlock(&r->f.dev.lock);
	assert_int_equal(r->n_msi, 1);
	assert_int_equal(r->msi_data, 0x41);
	assert_int_equal(r->msi_addr, 0xfee00000ull);
	/* Masked vector: the pending bit, no message; unmasking sends it. */
	pthread_mutex_lock(&r->f.dev.lock);
	r->f.dev.interrupt_used(&r->f.dev, 1);
	pthread_mutex_unlock(&r->f.dev.lock);
	assert_int_equal(r->n_msi, 1);
	assert_int_equal(rd(r, r->bar1 + VIRTIO_PCI_MSIX_PBA, 4), 2);
	wr(r, r->bar1 + 16 + 12, 4, 0);
	assert_int_equal(r->n_msi, 2);
	assert_int_equal(r->msi_data, 0x42);
	assert_int_equal(rd(r, r->bar1 + VIRTIO_PCI_MSIX_PBA, 4), 0);
	/* Function mask: everything pends; clearing it delivers. */
	cfg_wr(r, c + 2, 2, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
	pthread_mutex_lock(&r->f.dev.lock);
	r->f.dev.interrupt_config(&r->f.dev);
	r->f.dev.interrupt_used(&r->f.dev, 0);
	pthread_mutex_unlock(&r->f.dev.lock);
	assert_int_equal(r->n_msi, 2);
	assert_int_equal(rd(r, r->bar1 + VIRTIO_PCI_MSIX_PBA, 4), 5);
	cfg_wr(r, c + 2, 2, PCI_MSIX_FLAGS_ENABLE);
	assert_int_equal(r->n_msi, 4);
	assert_int_equal(rd(r, r->bar1 + VIRTIO_PCI_MSIX_PBA, 4), 0);
	/* A queue without a vector raises nothing; INTx stays low with MSI-X. */
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_Q_SELECT), 2, 0);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_Q_MSIX), 2, VIRTIO_MSI_NO_VECTOR);
	pthread_mutex_lock(&r->f.dev.lock);
	r->f.dev.interrupt_used(&r->f.dev, 0);
	pthread_mutex_unlock(&r->f.dev.lock);
	assert_int_equal(r->n_msi, 4);
	assert_false(r->irq_level[PCI_INTX_GSI_BASE]);
}

/* An eventfd on the rig's loop that stops it when written: signalled after
 * the notifications under test, it bounds a run of the loop (epoll reports
 * sources in the order they became ready). */
struct stopper {
	struct ev_source src;
	struct evloop *loop;
	bool fired;
};

static void on_stopper(struct ev_source *src, uint32_t events)
{
	struct stopper *s = src->opaque;
	uint64_t count;

	(void)events;
	assert_int_equal(read(src->fd, &count, sizeof(count)), sizeof(count));
	s->fired = true;
	s->loop->stop = true;
}

/* Run @r's loop until the stopper, written now, has fired. */
static void run_until_stopper(struct rig *r, struct stopper *s)
{
	uint64_t one = 1;

	s->fired = false;
	assert_int_equal(write(s->src.fd, &one, sizeof(one)), sizeof(one));
	while (!s->fired) {
		r->loop.stop = false;
		assert_int_equal(evloop_run(&r->loop), 0);
	}
}

/* PCI 3.0, 6.2.2: with Bus Master Enable clear the function neither reads
 * nor writes guest memory nor sends MSI-X messages; once set, what was held
 * goes on. */
static void test_bus_master_enable(void **state)
{
	struct rig *r = *state;
	unsigned c = find_cap(r, PCI_CAP_ID_MSIX);
	struct stopper s = { .src = { .handler = on_stopper, .opaque = &s }, .loop = &r->loop };
	uint64_t count;

	s.src.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	assert_true(s.src.fd >= 0);
	assert_int_equal(evloop_add(&r->loop, &s.src, EPOLLIN), 0);
	negotiate(r, FEAT);
	setup_queue(r, 0, 0x10000, 0);
	setup_queue(r, 1, 0x20000, 1);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_MSIX), 2, 2);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_STATUS), 1, 0xf);
	msix_entry(r, 0, 0x41, false);
	cfg_wr(r, c + 2, 2, PCI_MSIX_FLAGS_ENABLE);

	/* The driver turns bus mastering off (Linux: pci_clear_master()). */
	cfg_wr(r, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
	pthread_mutex_lock(&r->f.dev.lock);
	r->f.dev.interrupt_used(&r->f.dev, 0);
	pthread_mutex_unlock(&r->f.dev.lock);
	assert_int_equal(r->n_msi, 0);
	assert_int_equal(rd(r, r->bar1 + VIRTIO_PCI_MSIX_PBA, 4), 1);
	/* A notification reaches the event loop but not the device: its
	 * count consumed shows the loop looked at it. */
	wr(r, r->bar0 + VIRTIO_PCI_NOTIFY_OFF + 4, 2, 1);
	run_until_stopper(r, &s);
	assert_int_equal(read(r->p.notify[1].src.fd, &count, sizeof(count)), -1);
	assert_int_equal(r->f.notified[0] + r->f.notified[1], 0);

	/* On again: the held message goes out and the queues are looked at. */
	cfg_wr(r, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
	assert_int_equal(r->n_msi, 1);
	assert_int_equal(r->msi_data, 0x41);
	assert_int_equal(rd(r, r->bar1 + VIRTIO_PCI_MSIX_PBA, 4), 0);
	run_until_stopper(r, &s);
	assert_int_equal(r->f.notified[1], 1);
	evloop_remove(&r->loop, &s.src);
	close(s.src.fd);
}

static void test_intx(void **state)
{
	struct rig *r = *state;
	unsigned gsi = pci_function_intx_gsi(&r->p.fn);

	negotiate(r, FEAT);
	setup_queue(r, 0, 0x10000, VIRTIO_MSI_NO_VECTOR);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_STATUS), 1, 0xf);
	pthread_mutex_lock(&r->f.dev.lock);
	r->f.dev.interrupt_used(&r->f.dev, 0);
	pthread_mutex_unlock(&r->f.dev.lock);
	assert_true(r->irq_level[gsi]);
	assert_true(cfg_rd(r, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);
	/* Level-triggered: it stays up until the driver reads the ISR. */
	pthread_mutex_lock(&r->f.dev.lock);
	r->f.dev.interrupt_config(&r->f.dev);
	pthread_mutex_unlock(&r->f.dev.lock);
	assert_true(r->irq_level[gsi]);
	assert_int_equal(rd(r, r->bar0 + VIRTIO_PCI_ISR_OFF, 1), 3);
	assert_false(r->irq_level[gsi]);
	assert_false(cfg_rd(r, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);
	assert_int_equal(rd(r, r->bar0 + VIRTIO_PCI_ISR_OFF, 1), 0);
	assert_int_equal(r->n_msi, 0);
	/* Interrupt Disable in the command register masks the line. */
	cfg_wr(r, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_INTX_DISABLE);
	pthread_mutex_lock(&r->f.dev.lock);
	r->f.dev.interrupt_used(&r->f.dev, 0);
	pthread_mutex_unlock(&r->f.dev.lock);
	assert_false(r->irq_level[gsi]);
	cfg_wr(r, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
	assert_true(r->irq_level[gsi]);
	/* NEEDS_RESET raises a configuration interrupt. */
	assert_int_equal(rd(r, r->bar0 + VIRTIO_PCI_ISR_OFF, 1), 1);
	pthread_mutex_lock(&r->f.dev.lock);
	r->f.dev.needs_reset(&r->f.dev, "test");
	pthread_mutex_unlock(&r->f.dev.lock);
	assert_int_equal(rd(r, r->bar0 + VIRTIO_PCI_ISR_OFF, 1), 2);
}

static void test_pci_cfg_window(void **state)
{
	struct rig *r = *state;
	unsigned c = find_virtio_cap(r, 5); /* VIRTIO_PCI_CAP_PCI_CFG */

	assert_true(c);
	assert_int_equal(cfg_rd(r, c + 2, 1), 20);
	/* num_queues through configuration space. */
	cfg_wr(r, c + 4, 1, VIRTIO_PCI_BAR);
	cfg_wr(r, c + 8, 4, VIRTIO_PCI_COMMON_NUMQ);
	cfg_wr(r, c + 12, 4, 2);
	assert_int_equal(cfg_rd(r, c + 16, 4), 2);
	assert_int_equal(cfg_rd(r, c + 16, 2), 2);
	assert_int_equal(cfg_rd(r, c + 17, 1), 0);
	/* A status write through the window reaches the device. */
	cfg_wr(r, c + 8, 4, VIRTIO_PCI_COMMON_STATUS);
	cfg_wr(r, c + 12, 4, 1);
	cfg_wr(r, c + 16, 1, VIRTIO_STATUS_ACKNOWLEDGE);
	assert_int_equal(r->f.dev.status, VIRTIO_STATUS_ACKNOWLEDGE);
	/* Hostile windows: odd lengths, misaligned, past the BAR, another BAR. */
	cfg_wr(r, c + 12, 4, 3);
	assert_int_equal(cfg_rd(r, c + 16, 4), 0);
	cfg_wr(r, c + 8, 4, VIRTIO_PCI_COMMON_NUMQ + 1);
	cfg_wr(r, c + 12, 4, 2);
	assert_int_equal(cfg_rd(r, c + 16, 4), 0);
	cfg_wr(r, c + 8, 4, 0xfffffffeu);
	assert_int_equal(cfg_rd(r, c + 16, 4), 0);
	cfg_wr(r, c + 16, 2, 0);
	cfg_wr(r, c + 8, 4, VIRTIO_PCI_COMMON_NUMQ);
	cfg_wr(r, c + 4, 1, 5);
	assert_int_equal(cfg_rd(r, c + 16, 4), 0);
	/* BAR1 through it: an MSI-X entry's (masked) control word. */
	cfg_wr(r, c + 4, 1, VIRTIO_PCI_MSIX_BAR);
	cfg_wr(r, c + 8, 4, 12);
	cfg_wr(r, c + 12, 4, 4);
	assert_int_equal(cfg_rd(r, c + 16, 4), 1);
	assert_int_equal(r->f.dev.status, VIRTIO_STATUS_ACKNOWLEDGE);
}

static void test_bar_move_keeps_device(void **state)
{
	struct rig *r = *state;

	/* The guest moves BAR0; the registers follow it. */
	cfg_wr(r, PCI_BAR0, 4, 0xe0800000u);
	assert_int_equal(rd(r, 0xe0800000ull + VIRTIO_PCI_COMMON_NUMQ, 2), 2);
	assert_int_equal(rd(r, r->bar0 + VIRTIO_PCI_COMMON_NUMQ, 2), 0xffff);
	/* Onto BAR1: refused, BAR1 still answers. */
	cfg_wr(r, PCI_BAR0, 4, (uint32_t)r->bar1);
	assert_false(r->p.fn.bars[0].mapped);
	assert_int_equal(rd(r, r->bar1 + 12, 4), 1);
}

static void test_state_round_trip(void **state)
{
	struct rig *r = *state, *r2;
	unsigned c = find_cap(r, PCI_CAP_ID_MSIX);
	struct state_writer w;
	struct state_reader rd2;
	void *buf;
	size_t len;
	void *st2;

	negotiate(r, FEAT);
	setup_queue(r, 0, 0x10000, 0);
	setup_queue(r, 1, 0x20000, 1);
	wr(r, COMMON(r, VIRTIO_PCI_COMMON_STATUS), 1, 0xf);
	msix_entry(r, 0, 0x51, false);
	msix_entry(r, 1, 0x52, true);
	cfg_wr(r, c + 2, 2, PCI_MSIX_FLAGS_ENABLE);
	cfg_wr(r, PCI_BAR0, 4, 0xe0800000u);
	pthread_mutex_lock(&r->f.dev.lock);
	r->f.dev.interrupt_used(&r->f.dev, 1); /* pends */
	pthread_mutex_unlock(&r->f.dev.lock);
	assert_int_equal(state_writer_init(&w), 0);
	virtio_pci_save(&r->p, &w, "virtio-blk");
	assert_int_equal(state_writer_finish(&w, &buf, &len), 0);
	state_writer_free(&w);

	assert_int_equal(setup(&st2), 0);
	r2 = st2;
	assert_int_equal(state_reader_open(&rd2, buf, len), 0);
	assert_int_equal(virtio_pci_load(&r2->p, &rd2, "virtio-blk"), 0);
	assert_int_equal(virtio_pci_activate_loaded(&r2->p), 0);
	assert_int_equal(r2->f.activated, 1);
	assert_true(r2->f.vqs[1].ready);
	assert_int_equal(r2->f.vqs[1].desc_gpa, 0x20000);
	assert_int_equal(rd(r2, 0xe0800000ull + VIRTIO_PCI_COMMON_STATUS, 1), 0xf);
	assert_int_equal(rd(r2, r2->bar1 + VIRTIO_PCI_MSIX_PBA, 4), 2);
	/* The restored function delivers what was pending once unmasked. */
	wr(r2, r2->bar1 + 16 + 12, 4, 0);
	assert_int_equal(r2->n_msi, 1);
	assert_int_equal(r2->msi_data, 0x52);
	teardown(&st2);
	/* A stream for another device shape is refused. */
	assert_int_equal(setup(&st2), 0);
	r2 = st2;
	r2->p.n_vectors = 2;
	assert_int_equal(state_reader_open(&rd2, buf, len), 0);
	assert_int_equal(virtio_pci_load(&r2->p, &rd2, "virtio-blk"), -EINVAL);
	r2->p.n_vectors = 3;
	teardown(&st2);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_identity_and_caps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_negotiation_and_queues, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_queue_needs_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hostile_accesses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_notify, setup, teardown),
		cmocka_unit_test_setup_teardown(test_msix, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bus_master_enable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_intx, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pci_cfg_window, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bar_move_keeps_device, setup, teardown),
		cmocka_unit_test_setup_teardown(test_state_round_trip, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

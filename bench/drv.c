/* The fake guest driver kit for in-process device benchmarks: see drv.h. */
#include "drv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define WATCHDOG_MS 250

static void put16(uint8_t *p, uint16_t v, int order)
{
	__atomic_store_n((uint16_t *)p, v, order);
}

static uint16_t get16(const uint8_t *p, int order)
{
	return __atomic_load_n((const uint16_t *)p, order);
}

static struct drv_kit *kit_of(struct virtio_device *dev)
{
	return (struct drv_kit *)((char *)dev->transport - offsetof(struct drv_kit, mmio));
}

/* The transport raised the used-buffer interrupt: wake the driver the way
 * an irqfd wakes a vCPU.  Runs on the loop thread with dev.lock held. */
static void on_interrupt(struct virtio_device *dev, unsigned q)
{
	struct drv_kit *k = kit_of(dev);

	k->transport_interrupt_used(dev, q);
	if (k->cnt)
		k->cnt->interrupts++;
	k->loop.stop = true;
}

static void on_config_interrupt(struct virtio_device *dev)
{
	struct drv_kit *k = kit_of(dev);

	k->transport_interrupt_config(dev);
	k->config_irq = true;
	k->loop.stop = true;
}

static void on_watchdog(struct ev_source *src, uint32_t events)
{
	struct drv_kit *k = src->opaque;
	uint64_t ticks;

	(void)events;
	if (read(src->fd, &ticks, sizeof(ticks)) < 0)
		return;
	if (k->cnt && now_s() - k->last_progress > DRV_HANG_S) {
		k->cnt->hung = true;
		k->loop.stop = true;
	}
}

int drv_init(struct drv_kit *k, const char *name, uint64_t ram_bytes)
{
	int r;

	k->name = name;
	k->watchdog.fd = -1;
	k->loop.epfd = -1;
	ram_bytes = (ram_bytes + (2ull << 20) - 1) & ~((2ull << 20) - 1);
	r = guest_mem_init(&k->gm, ram_bytes);
	if (r < 0) {
		fprintf(stderr, "%s: guest RAM (%" PRIu64 " bytes): %s\n", name, ram_bytes,
			strerror(-r));
		return r;
	}
	r = evloop_init(&k->loop);
	if (r < 0)
		fprintf(stderr, "%s: event loop: %s\n", name, strerror(-r));
	return r;
}

#define DRV_PCI_WINDOW 0xe0000000ull
#define DRV_PCI_CONFIG_DATA 0xc0f

/* An MSI-X message (the irqfd's path without KVM): wake the driver. */
static void on_msi(void *opaque, uint64_t addr, uint32_t data)
{
	struct drv_kit *k = opaque;

	(void)addr;
	if (data == DRV_PCI_CONFIG_DATA)
		k->config_irq = true;
	else if (k->cnt)
		k->cnt->interrupts++;
	k->loop.stop = true;
}

static void pci_mem_write(struct drv_kit *k, uint64_t gpa, uint64_t v, unsigned size)
{
	(void)bus_write(&k->pcimmio, gpa, &v, size);
}

static uint64_t pci_mem_read(struct drv_kit *k, uint64_t gpa, unsigned size)
{
	uint64_t v = 0;

	(void)bus_read(&k->pcimmio, gpa, &v, size);
	return v;
}

/* The device as a virtio-pci function, BARs decoded, MSI-X on. */
static int attach_pci(struct drv_kit *k, struct virtio_device *dev)
{
	struct virtio_pci_host host = { .vm_fd = -1, .loop = &k->loop, .bus = &k->pcibus,
					.msi = on_msi, .msi_opaque = k };
	unsigned slot;
	char err[320];
	int r;

	r = pci_bus_init(&k->pcibus, DRV_PCI_WINDOW, 0x10000000ull, -1, NULL, NULL);
	if (r < 0) {
		fprintf(stderr, "%s: PCI bus: %s\n", k->name, strerror(-r));
		return r;
	}
	bus_init(&k->pcimmio, "mmio");
	k->pci_up = true;
	r = bus_register(&k->pcimmio, &k->pcibus.window);
	if (!r)
		r = virtio_pci_init(&k->vp, dev, &host, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "%s: %s\n", k->name, r == -EEXIST ? "PCI window" : err);
		return r;
	}
	slot = (unsigned)k->vp.slot;
	pci_bus_enable_all(&k->pcibus);
	k->bar0 = pci_config_read(&k->pcibus, slot, PCI_BAR0, 4) & ~0xfull;
	k->bar1 = pci_config_read(&k->pcibus, slot, PCI_BAR0 + 4, 4) & ~0xfull;
	for (unsigned v = 0; v < k->vp.n_vectors; v++) {
		uint64_t e = k->bar1 + VIRTIO_PCI_MSIX_TABLE + 16 * v;

		pci_mem_write(k, e, 0xfee00000u, 4);
		pci_mem_write(k, e + 8, v ? v : DRV_PCI_CONFIG_DATA, 4);
		pci_mem_write(k, e + 12, 0, 4);
	}
	pci_config_write(&k->pcibus, slot, k->vp.msix_cap + 2u, 2, PCI_MSIX_FLAGS_ENABLE);
	k->dev = dev;
	return 0;
}

int drv_attach(struct drv_kit *k, struct virtio_device *dev)
{
	struct virtio_mmio_host host = { .vm_fd = -1, .loop = &k->loop };
	struct itimerspec its = { .it_interval = { 0, WATCHDOG_MS * 1000000L },
				  .it_value = { 0, WATCHDOG_MS * 1000000L } };
	char err[320];
	int r;

	if (k->pci) {
		r = attach_pci(k, dev);
		if (r < 0)
			return r;
		goto watchdog;
	}
	r = virtio_mmio_init(&k->mmio, dev, DRV_MMIO_BASE, DRV_MMIO_IRQ, &host, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "%s: %s\n", k->name, err);
		return r;
	}
	k->mmio_up = true;
	k->dev = dev;
	k->transport_interrupt_used = dev->interrupt_used;
	k->transport_interrupt_config = dev->interrupt_config;
	dev->interrupt_used = on_interrupt;
	dev->interrupt_config = on_config_interrupt;
watchdog:

	k->watchdog = (struct ev_source){ .fd = -1, .handler = on_watchdog, .opaque = k };
	r = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (r < 0 || timerfd_settime(r, 0, &its, NULL) < 0) {
		int e = -errno;

		fprintf(stderr, "%s: timerfd: %s\n", k->name, strerror(-e));
		if (r >= 0)
			close(r);
		return e;
	}
	k->watchdog.fd = r;
	r = evloop_add(&k->loop, &k->watchdog, EPOLLIN);
	if (r < 0) {
		fprintf(stderr, "%s: epoll: %s\n", k->name, strerror(-r));
		close(k->watchdog.fd);
		k->watchdog.fd = -1;
	}
	return r;
}

void drv_detach(struct drv_kit *k)
{
	if (k->watchdog.fd >= 0) {
		evloop_remove(&k->loop, &k->watchdog);
		close(k->watchdog.fd);
		k->watchdog.fd = -1;
	}
	if (k->mmio_up)
		virtio_mmio_exit(&k->mmio);
	k->mmio_up = false;
	if (k->pci_up) {
		virtio_pci_exit(&k->vp);
		pci_bus_exit(&k->pcibus);
		bus_exit(&k->pcimmio);
	}
	k->pci_up = false;
}

void drv_exit(struct drv_kit *k)
{
	if (k->loop.epfd >= 0)
		evloop_exit(&k->loop);
	guest_mem_exit(&k->gm);
}

bool drv_opt_flag(struct drv_opts *o, const char *arg)
{
	if (!strcmp(arg, "--pci"))
		o->pci = true;
	else if (!strcmp(arg, "--no-event-idx"))
		o->no_event_idx = true;
	else if (!strcmp(arg, "--verify"))
		o->verify = true;
	else if (!strcmp(arg, "--json"))
		o->json = true;
	else
		return false;
	return true;
}

void *drv_ptr(struct drv_kit *k, uint64_t gpa, uint64_t len)
{
	return guest_mem_ptr(&k->gm, gpa, len);
}

void drv_begin(struct drv_kit *k, struct drv_counts *cnt, const char *where, ...)
{
	va_list ap;

	memset(cnt, 0, sizeof(*cnt));
	k->cnt = cnt;
	k->config_irq = false;
	va_start(ap, where);
	vsnprintf(k->where, sizeof(k->where), where, ap);
	va_end(ap);
}

void drv_end(struct drv_kit *k)
{
	k->cnt = NULL;
}

void drv_error(struct drv_kit *k, const char *fmt, ...)
{
	va_list ap;

	if (k->cnt->errors++ >= DRV_MAX_REPORTED_ERRORS)
		return;
	fprintf(stderr, "%s: %s: ", k->name, k->where);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ------------------------------------------------------------------ */
/* The register window, as the guest sees it                           */

/* --pci: virtio-mmio register @off read from its virtio-pci field. */
static uint32_t pci_reg_read(struct drv_kit *k, uint64_t off, unsigned size)
{
	uint64_t c = k->bar0 + VIRTIO_PCI_COMMON_OFF;

	if (off >= VIRTIO_MMIO_CONFIG)
		return (uint32_t)pci_mem_read(k, k->bar0 + VIRTIO_PCI_DEVICE_OFF + off -
						      VIRTIO_MMIO_CONFIG, size);
	switch (off) {
	case VIRTIO_MMIO_MAGIC_VALUE: return VIRTIO_MMIO_MAGIC;
	case VIRTIO_MMIO_VERSION: return 2;
	case VIRTIO_MMIO_DEVICE_ID: return k->dev->device_id;
	case VIRTIO_MMIO_DEVICE_FEATURES: return (uint32_t)pci_mem_read(k, c + VIRTIO_PCI_COMMON_DF, 4);
	case VIRTIO_MMIO_QUEUE_NUM_MAX:
		return (uint32_t)pci_mem_read(k, c + VIRTIO_PCI_COMMON_Q_SIZE, 2);
	case VIRTIO_MMIO_QUEUE_READY:
		return (uint32_t)pci_mem_read(k, c + VIRTIO_PCI_COMMON_Q_ENABLE, 2);
	case VIRTIO_MMIO_INTERRUPT_STATUS:
		k->isr_latched |= (uint32_t)pci_mem_read(k, k->bar0 + VIRTIO_PCI_ISR_OFF, 1);
		return k->isr_latched;
	case VIRTIO_MMIO_STATUS: return (uint32_t)pci_mem_read(k, c + VIRTIO_PCI_COMMON_STATUS, 1);
	case VIRTIO_MMIO_CONFIG_GENERATION:
		return (uint32_t)pci_mem_read(k, c + VIRTIO_PCI_COMMON_CFGGENERATION, 1);
	default: return 0;
	}
}

/* --pci: virtio-mmio register @off written to its virtio-pci field. */
static void pci_reg_write(struct drv_kit *k, uint64_t off, uint32_t v)
{
	uint64_t c = k->bar0 + VIRTIO_PCI_COMMON_OFF;

	switch (off) {
	case VIRTIO_MMIO_DEVICE_FEATURES_SEL: pci_mem_write(k, c + VIRTIO_PCI_COMMON_DFSELECT, v, 4); break;
	case VIRTIO_MMIO_DRIVER_FEATURES_SEL: pci_mem_write(k, c + VIRTIO_PCI_COMMON_GFSELECT, v, 4); break;
	case VIRTIO_MMIO_DRIVER_FEATURES: pci_mem_write(k, c + VIRTIO_PCI_COMMON_GF, v, 4); break;
	case VIRTIO_MMIO_QUEUE_SEL: pci_mem_write(k, c + VIRTIO_PCI_COMMON_Q_SELECT, v, 2); break;
	case VIRTIO_MMIO_QUEUE_NUM: pci_mem_write(k, c + VIRTIO_PCI_COMMON_Q_SIZE, v, 2); break;
	case VIRTIO_MMIO_QUEUE_READY:
		/* Vectors first: configuration on 0, the selected queue on q + 1. */
		pci_mem_write(k, c + VIRTIO_PCI_COMMON_MSIX, 0, 2);
		pci_mem_write(k, c + VIRTIO_PCI_COMMON_Q_MSIX,
			      pci_mem_read(k, c + VIRTIO_PCI_COMMON_Q_SELECT, 2) + 1, 2);
		pci_mem_write(k, c + VIRTIO_PCI_COMMON_Q_ENABLE, v, 2);
		break;
	case VIRTIO_MMIO_QUEUE_NOTIFY:
		pci_mem_write(k, k->bar0 + VIRTIO_PCI_NOTIFY_OFF + VIRTIO_PCI_NOTIFY_MULT * (uint64_t)v,
			      v, 2);
		break;
	case VIRTIO_MMIO_INTERRUPT_ACK: k->isr_latched &= ~v; break;
	case VIRTIO_MMIO_STATUS:
		pci_mem_write(k, c + VIRTIO_PCI_COMMON_STATUS, v, 1);
		if (!v)
			k->isr_latched = 0;
		break;
	case VIRTIO_MMIO_QUEUE_DESC_LOW: pci_mem_write(k, c + VIRTIO_PCI_COMMON_Q_DESCLO, v, 4); break;
	case VIRTIO_MMIO_QUEUE_DESC_HIGH: pci_mem_write(k, c + VIRTIO_PCI_COMMON_Q_DESCHI, v, 4); break;
	case VIRTIO_MMIO_QUEUE_DRIVER_LOW: pci_mem_write(k, c + VIRTIO_PCI_COMMON_Q_AVAILLO, v, 4); break;
	case VIRTIO_MMIO_QUEUE_DRIVER_HIGH: pci_mem_write(k, c + VIRTIO_PCI_COMMON_Q_AVAILHI, v, 4); break;
	case VIRTIO_MMIO_QUEUE_DEVICE_LOW: pci_mem_write(k, c + VIRTIO_PCI_COMMON_Q_USEDLO, v, 4); break;
	case VIRTIO_MMIO_QUEUE_DEVICE_HIGH: pci_mem_write(k, c + VIRTIO_PCI_COMMON_Q_USEDHI, v, 4); break;
	default: break;
	}
}

/* A @size-byte read of register @off; UINT32_MAX when it fails. */
static uint32_t reg_read(struct drv_kit *k, uint64_t off, unsigned size)
{
	uint32_t v = 0;

	if (k->pci)
		return pci_reg_read(k, off, size);
	if (k->mmio.region.ops->read(&k->mmio.region, off, &v, size) < 0)
		v = UINT32_MAX;
	return v;
}

uint32_t drv_read32(struct drv_kit *k, uint64_t off)
{
	return reg_read(k, off, 4);
}

void drv_write32(struct drv_kit *k, uint64_t off, uint32_t v)
{
	if (k->pci) {
		pci_reg_write(k, off, v);
		return;
	}
	(void)k->mmio.region.ops->write(&k->mmio.region, off, &v, 4);
}

uint32_t drv_config_read(struct drv_kit *k, uint32_t off, unsigned size)
{
	return reg_read(k, VIRTIO_MMIO_CONFIG + (uint64_t)off, size);
}

uint64_t drv_config_read64(struct drv_kit *k, uint32_t off)
{
	uint32_t gen, lo, hi;

	do {
		gen = drv_read32(k, VIRTIO_MMIO_CONFIG_GENERATION);
		lo = drv_config_read(k, off, 4);
		hi = drv_config_read(k, off + 4, 4);
	} while (gen != drv_read32(k, VIRTIO_MMIO_CONFIG_GENERATION));
	return ((uint64_t)hi << 32) | lo;
}

/* ------------------------------------------------------------------ */
/* Start-up                                                            */

#define STATUS_FEATURES_OK                                                                    \
	(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK)

int drv_start(struct drv_kit *k, uint32_t device_id, uint64_t need, bool event_idx)
{
	uint64_t features, want = need;

	if (drv_read32(k, VIRTIO_MMIO_MAGIC_VALUE) != VIRTIO_MMIO_MAGIC ||
	    drv_read32(k, VIRTIO_MMIO_VERSION) != 2 ||
	    drv_read32(k, VIRTIO_MMIO_DEVICE_ID) != device_id) {
		fprintf(stderr, "%s: not a virtio-mmio v2 device of id %u (magic %#x, version %u, "
			"device id %u)\n", k->name, device_id,
			drv_read32(k, VIRTIO_MMIO_MAGIC_VALUE), drv_read32(k, VIRTIO_MMIO_VERSION),
			drv_read32(k, VIRTIO_MMIO_DEVICE_ID));
		return -ENODEV;
	}
	drv_write32(k, VIRTIO_MMIO_STATUS, 0);
	if (drv_read32(k, VIRTIO_MMIO_STATUS) != 0) {
		fprintf(stderr, "%s: the device did not reset (status %#x)\n", k->name,
			drv_read32(k, VIRTIO_MMIO_STATUS));
		return -EIO;
	}
	drv_write32(k, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
	drv_write32(k, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);

	drv_write32(k, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	features = drv_read32(k, VIRTIO_MMIO_DEVICE_FEATURES);
	drv_write32(k, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
	features |= (uint64_t)drv_read32(k, VIRTIO_MMIO_DEVICE_FEATURES) << 32;
	if ((features & need) != need) {
		fprintf(stderr, "%s: the device offers %#" PRIx64 ", the driver needs %#" PRIx64
			"\n", k->name, features, need);
		return -ENOTSUP;
	}
	if (event_idx && (features & VIRTIO_BIT(VIRTIO_F_EVENT_IDX)))
		want |= VIRTIO_BIT(VIRTIO_F_EVENT_IDX);
	drv_write32(k, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	drv_write32(k, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)want);
	drv_write32(k, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	drv_write32(k, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(want >> 32));
	drv_write32(k, VIRTIO_MMIO_STATUS, STATUS_FEATURES_OK);
	if (!(drv_read32(k, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK)) {
		fprintf(stderr, "%s: the device refused features %#" PRIx64 "\n", k->name, want);
		return -ENOTSUP;
	}
	k->event_idx = want & VIRTIO_BIT(VIRTIO_F_EVENT_IDX);
	return 0;
}

int drv_vq_setup(struct drv_kit *k, struct drv_vq *vq)
{
	uint64_t avail = vq->gpa + 0x1000, used = vq->gpa + 0x2000;

	memset(vq->desc, 0, 16 * DRV_QUEUE_SIZE);
	memset(vq->avail, 0, 6 + 2 * DRV_QUEUE_SIZE);
	memset(vq->used, 0, 6 + 8 * DRV_QUEUE_SIZE);
	vq->avail_idx = vq->kicked_idx = vq->last_used = 0;
	drv_write32(k, VIRTIO_MMIO_QUEUE_SEL, vq->index);
	if (drv_read32(k, VIRTIO_MMIO_QUEUE_READY) != 0 ||
	    drv_read32(k, VIRTIO_MMIO_QUEUE_NUM_MAX) < DRV_QUEUE_SIZE) {
		fprintf(stderr, "%s: queue %u is ready before set-up or shorter than %u "
			"(QueueNumMax %u)\n", k->name, vq->index, DRV_QUEUE_SIZE,
			drv_read32(k, VIRTIO_MMIO_QUEUE_NUM_MAX));
		return -EIO;
	}
	drv_write32(k, VIRTIO_MMIO_QUEUE_NUM, DRV_QUEUE_SIZE);
	drv_write32(k, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)vq->gpa);
	drv_write32(k, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(vq->gpa >> 32));
	drv_write32(k, VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)avail);
	drv_write32(k, VIRTIO_MMIO_QUEUE_DRIVER_HIGH, (uint32_t)(avail >> 32));
	drv_write32(k, VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)used);
	drv_write32(k, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, (uint32_t)(used >> 32));
	drv_write32(k, VIRTIO_MMIO_QUEUE_READY, 1);
	if (drv_read32(k, VIRTIO_MMIO_QUEUE_READY) != 1) {
		fprintf(stderr, "%s: queue %u did not become ready\n", k->name, vq->index);
		return -EIO;
	}
	return 0;
}

int drv_driver_ok(struct drv_kit *k)
{
	uint32_t status;

	drv_write32(k, VIRTIO_MMIO_STATUS, STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
	status = drv_read32(k, VIRTIO_MMIO_STATUS);
	if (!(status & VIRTIO_STATUS_DRIVER_OK) ||
	    (status & (VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED))) {
		fprintf(stderr, "%s: the device did not start (status %#x)\n", k->name, status);
		return -EIO;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Rings                                                               */

void drv_vq_init(struct drv_kit *k, struct drv_vq *vq, unsigned index, uint64_t gpa)
{
	vq->index = index;
	vq->gpa = gpa;
	vq->desc = drv_ptr(k, gpa, 16 * DRV_QUEUE_SIZE);
	vq->avail = drv_ptr(k, gpa + 0x1000, 6 + 2 * DRV_QUEUE_SIZE);
	vq->used = drv_ptr(k, gpa + 0x2000, 6 + 8 * DRV_QUEUE_SIZE);
}

void drv_desc_set(struct drv_vq *vq, unsigned i, uint64_t gpa, uint32_t len, uint16_t flags,
		  uint16_t next)
{
	uint8_t *p = vq->desc + 16 * i;

	memcpy(p, &gpa, 8);
	memcpy(p + 8, &len, 4);
	memcpy(p + 12, &flags, 2);
	memcpy(p + 14, &next, 2);
}

void drv_post(struct drv_vq *vq, uint16_t head)
{
	put16(vq->avail + 4 + 2 * (vq->avail_idx & (DRV_QUEUE_SIZE - 1)), head, __ATOMIC_RELAXED);
	vq->avail_idx++;
}

void drv_publish(struct drv_kit *k, struct drv_vq *vq)
{
	uint16_t old = vq->kicked_idx, new = vq->avail_idx;
	bool kick;

	if (old == new)
		return;
	/* Release: the device that sees the index sees the ring entries. */
	put16(vq->avail + 2, new, __ATOMIC_RELEASE);
	vq->kicked_idx = new;
	/* Store avail->idx, then load the device's wish: a full fence, like
	 * virtio_ring.c's virtio_mb() before the kick check. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (k->event_idx) {
		uint16_t avail_event = get16(vq->used + 4 + 8 * DRV_QUEUE_SIZE, __ATOMIC_RELAXED);

		kick = (uint16_t)(new - avail_event - 1) < (uint16_t)(new - old);
	} else {
		kick = !(get16(vq->used, __ATOMIC_RELAXED) & VIRTQ_USED_F_NO_NOTIFY);
	}
	if (kick) {
		drv_write32(k, VIRTIO_MMIO_QUEUE_NOTIFY, vq->index);
		k->cnt->kicks++;
	}
}

uint16_t drv_used_idx(const struct drv_vq *vq)
{
	return get16(vq->used + 2, __ATOMIC_ACQUIRE);
}

void drv_used_elem(const struct drv_vq *vq, uint16_t idx, uint32_t *id, uint32_t *len)
{
	const uint8_t *e = vq->used + 4 + 8 * (idx & (DRV_QUEUE_SIZE - 1));

	memcpy(id, e, 4);
	memcpy(len, e + 4, 4);
}

bool drv_rearm(struct drv_kit *k, struct drv_vq *vq)
{
	if (k->event_idx)
		put16(vq->avail + 4 + 2 * DRV_QUEUE_SIZE, vq->last_used, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return drv_used_idx(vq) != vq->last_used;
}

int drv_wait_interrupt(struct drv_kit *k)
{
	uint32_t isr;
	int r;

	k->loop.stop = false;
	r = evloop_run(&k->loop);
	k->loop.stop = false;
	if (r < 0) {
		fprintf(stderr, "%s: event loop: %s\n", k->name, strerror(-r));
		k->cnt->errors++;
		return r;
	}
	if (k->cnt->hung)
		return -ETIMEDOUT;
	isr = drv_read32(k, VIRTIO_MMIO_INTERRUPT_STATUS);
	if (isr)
		drv_write32(k, VIRTIO_MMIO_INTERRUPT_ACK, isr);
	if ((isr & VIRTIO_MMIO_INT_CONFIG) || k->config_irq) {
		k->config_irq = false;
		if (drv_read32(k, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET) {
			k->cnt->needs_reset = true;
			return -EIO;
		}
	}
	return 0;
}

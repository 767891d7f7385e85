/* virtio-mmio transport, split virtqueue and virtio-blk requests for the
 * test guests (virtio.h).  One CPU drives a device; the device runs on
 * other host threads, so the ring fields it shares are accessed through
 * volatile pointers with the barriers the specification asks for. */
#include "virtio.h"

#define KEY "virtio_mmio.device="

/* Compiler barrier: x86 keeps stores in order and loads in order. */
static inline void barrier(void)
{
	__asm__ volatile("" ::: "memory");
}

/* Full fence (a store followed by a load of another location), as Linux's
 * x86-64 smp_mb(); no MFENCE, which the CPL-0 emulator may lack. */
static inline void fence(void)
{
	__asm__ volatile("lock; orl $0, (%%rsp)" ::: "memory", "cc");
}

/* A number at *@pp (decimal or 0x hex, then an optional K, M or G); moves
 * *@pp past it.  False when there is no digit. */
static bool parse_num(const char **pp, uint64_t *v)
{
	const char *p = *pp;
	unsigned base = 10;
	uint64_t n = 0;
	bool any = false;

	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		base = 16;
		p += 2;
	}
	for (;; p++) {
		unsigned dgt;

		if (*p >= '0' && *p <= '9')
			dgt = (unsigned)(*p - '0');
		else if (base == 16 && *p >= 'a' && *p <= 'f')
			dgt = (unsigned)(*p - 'a' + 10);
		else if (base == 16 && *p >= 'A' && *p <= 'F')
			dgt = (unsigned)(*p - 'A' + 10);
		else
			break;
		n = n * base + dgt;
		any = true;
	}
	if (*p == 'K' || *p == 'k')
		n <<= 10, p++;
	else if (*p == 'M' || *p == 'm')
		n <<= 20, p++;
	else if (*p == 'G' || *p == 'g')
		n <<= 30, p++;
	*pp = p;
	*v = n;
	return any;
}

static bool word_end(char c)
{
	return c == '\0' || c == ' ' || c == '\t' || c == '\n';
}

unsigned virtio_mmio_scan(struct virtio_mmio_dev *out, unsigned max)
{
	const char *p = guest_cmdline();
	size_t klen = strlen(KEY);
	unsigned n = 0;

	while (*p && n < max) {
		uint64_t size, base, irq;
		const char *q;

		while (*p && word_end(*p))
			p++;
		q = p + klen;
		/* memcmp stops at the first difference: never past the NUL. */
		if (!memcmp(p, KEY, klen) && parse_num(&q, &size) && *q++ == '@' &&
		    parse_num(&q, &base) && *q++ == ':' && parse_num(&q, &irq) && word_end(*q)) {
			out[n].base = base;
			out[n].size = size;
			out[n].irq = (unsigned)irq;
			n++;
		}
		while (!word_end(*p))
			p++;
	}
	return n;
}

int vdev_probe(struct vdev *d, const struct virtio_mmio_dev *m, uint32_t device_id)
{
	d->base = m->base;
	d->irq = m->irq;
	d->pci = m->pci;
	d->notify_addr = 0;
	d->offered = d->features = 0;
	d->queue = d->size = d->avail_idx = d->kicked_idx = d->last_used = d->next_desc = 0;
	d->kicks = 0;
	if (vdev_read(d, VMMIO_MAGIC_VALUE) != VMMIO_MAGIC)
		return -VDEV_E_MAGIC;
	if (vdev_read(d, VMMIO_VERSION) != 2)
		return -VDEV_E_VERSION;
	if (vdev_read(d, VMMIO_DEVICE_ID) != device_id)
		return -VDEV_E_DEVICE_ID;
	/* Section 3.1.1: reset, then ACKNOWLEDGE, then DRIVER. */
	vdev_write(d, VMMIO_STATUS, 0);
	if (vdev_read(d, VMMIO_STATUS) != 0)
		return -VDEV_E_RESET;
	vdev_write(d, VMMIO_STATUS, VSTAT_ACKNOWLEDGE);
	vdev_write(d, VMMIO_STATUS, VSTAT_ACKNOWLEDGE | VSTAT_DRIVER);
	vdev_write(d, VMMIO_DEVICE_FEATURES_SEL, 0);
	d->offered = vdev_read(d, VMMIO_DEVICE_FEATURES);
	vdev_write(d, VMMIO_DEVICE_FEATURES_SEL, 1);
	d->offered |= (uint64_t)vdev_read(d, VMMIO_DEVICE_FEATURES) << 32;
	return 0;
}

/* Status bits the driver has set once features are negotiated. */
#define ST_NEGOTIATED (VSTAT_ACKNOWLEDGE | VSTAT_DRIVER | VSTAT_FEATURES_OK)

int vdev_negotiate(struct vdev *d, uint64_t features)
{
	uint32_t st = VSTAT_ACKNOWLEDGE | VSTAT_DRIVER;

	if ((features & ~d->offered) || !(features & VF_VERSION_1)) {
		vdev_write(d, VMMIO_STATUS, st | VSTAT_FAILED);
		return -VDEV_E_FEATURES;
	}
	vdev_write(d, VMMIO_DRIVER_FEATURES_SEL, 0);
	vdev_write(d, VMMIO_DRIVER_FEATURES, (uint32_t)features);
	vdev_write(d, VMMIO_DRIVER_FEATURES_SEL, 1);
	vdev_write(d, VMMIO_DRIVER_FEATURES, (uint32_t)(features >> 32));
	vdev_write(d, VMMIO_STATUS, ST_NEGOTIATED);
	if (!(vdev_read(d, VMMIO_STATUS) & VSTAT_FEATURES_OK)) {
		vdev_write(d, VMMIO_STATUS, st | VSTAT_FAILED);
		return -VDEV_E_FEATURES_OK;
	}
	d->features = features;
	return 0;
}

int vq_setup(struct vdev *q, const struct vdev *d, uint16_t index, uint16_t qsize)
{
	uint64_t desc = (uintptr_t)q->mem.desc, avail = (uintptr_t)q->mem.avail;
	uint64_t used = (uintptr_t)q->mem.used;
	uint32_t max;

	if (q != d) {
		q->base = d->base;
		q->irq = d->irq;
		q->pci = d->pci;
		q->offered = d->offered;
		q->features = d->features;
		q->avail_idx = q->kicked_idx = q->last_used = q->next_desc = 0;
		q->kicks = 0;
	}
	q->queue = index;
	vdev_write(q, VMMIO_QUEUE_SEL, index);
	if (q->pci)
		q->notify_addr = q->pci->notify +
				 (uintptr_t)mmio_read16(q->pci->common + VPCI_Q_NOFF) * q->pci->notify_mult;
	if (vdev_read(q, VMMIO_QUEUE_READY))
		goto fail;
	max = vdev_read(q, VMMIO_QUEUE_NUM_MAX);
	if (!qsize || qsize > VQ_MAX || (qsize & (qsize - 1)) || qsize > max)
		goto fail;
	q->size = qsize;
	memset(q->mem.desc, 0, sizeof(struct vq_desc) * qsize);
	memset(q->mem.avail, 0, 6 + 2 * (size_t)qsize);
	memset(q->mem.used, 0, 6 + 8 * (size_t)qsize);
	vdev_write(q, VMMIO_QUEUE_NUM, qsize);
	vdev_write(q, VMMIO_QUEUE_DESC_LOW, (uint32_t)desc);
	vdev_write(q, VMMIO_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
	vdev_write(q, VMMIO_QUEUE_DRIVER_LOW, (uint32_t)avail);
	vdev_write(q, VMMIO_QUEUE_DRIVER_HIGH, (uint32_t)(avail >> 32));
	vdev_write(q, VMMIO_QUEUE_DEVICE_LOW, (uint32_t)used);
	vdev_write(q, VMMIO_QUEUE_DEVICE_HIGH, (uint32_t)(used >> 32));
	vdev_write(q, VMMIO_QUEUE_READY, 1);
	if (vdev_read(q, VMMIO_QUEUE_READY) != 1)
		goto fail;
	return 0;
fail:
	vdev_write(q, VMMIO_STATUS, ST_NEGOTIATED | VSTAT_FAILED);
	return -VDEV_E_QUEUE;
}

int vdev_driver_ok(struct vdev *d)
{
	uint32_t st = ST_NEGOTIATED | VSTAT_DRIVER_OK;

	vdev_write(d, VMMIO_STATUS, st);
	if (vdev_read(d, VMMIO_STATUS) != st) {
		vdev_write(d, VMMIO_STATUS, st | VSTAT_FAILED);
		return -VDEV_E_DRIVER_OK;
	}
	return 0;
}

int vdev_start(struct vdev *d, uint64_t features, uint16_t qsize)
{
	int err = vdev_negotiate(d, features);

	if (!err)
		err = vq_setup(d, d, 0, qsize);
	if (!err)
		err = vdev_driver_ok(d);
	return err;
}

uint8_t vdev_config8(const struct vdev *d, uint32_t off)
{
	if (d->pci)
		return mmio_read8(d->pci->device + off);
	return mmio_read8(d->base + VMMIO_CONFIG + off);
}

uint32_t vdev_config32(const struct vdev *d, uint32_t off)
{
	return vdev_read(d, VMMIO_CONFIG + off);
}

uint64_t vdev_config64(const struct vdev *d, uint32_t off)
{
	uint32_t gen, lo, hi;

	do {
		gen = vdev_read(d, VMMIO_CONFIG_GENERATION);
		lo = vdev_read(d, VMMIO_CONFIG + off);
		hi = vdev_read(d, VMMIO_CONFIG + off + 4);
	} while (vdev_read(d, VMMIO_CONFIG_GENERATION) != gen);
	return (uint64_t)hi << 32 | lo;
}

static void set_desc(struct vq_desc *desc, const struct vq_buf *b, bool more, uint16_t next)
{
	desc->addr = (uintptr_t)b->addr;
	desc->len = b->len;
	desc->flags = (uint16_t)((b->writable ? VQ_DESC_F_WRITE : 0) | (more ? VQ_DESC_F_NEXT : 0));
	desc->next = more ? next : 0;
}

uint16_t vq_add(struct vdev *d, const struct vq_buf *bufs, unsigned n, bool indirect)
{
	uint16_t mask = (uint16_t)(d->size - 1), head = d->next_desc & mask;
	volatile uint16_t *avail = d->mem.avail;

	if (indirect) {
		struct vq_desc *tbl = d->mem.indirect[head];

		for (unsigned i = 0; i < n; i++)
			set_desc(&tbl[i], &bufs[i], i + 1 < n, (uint16_t)(i + 1));
		d->mem.desc[head] = (struct vq_desc){ .addr = (uintptr_t)tbl,
						      .len = n * sizeof(struct vq_desc),
						      .flags = VQ_DESC_F_INDIRECT };
		d->next_desc++;
	} else {
		for (unsigned i = 0; i < n; i++) {
			uint16_t idx = (uint16_t)(d->next_desc + i) & mask;

			set_desc(&d->mem.desc[idx], &bufs[i], i + 1 < n, (uint16_t)(idx + 1) & mask);
		}
		d->next_desc = (uint16_t)(d->next_desc + n);
	}
	avail[2 + (d->avail_idx & mask)] = head;
	d->avail_idx++;
	return head;
}

volatile uint16_t *vq_used_event(struct vdev *d)
{
	return &d->mem.avail[2 + d->size];
}

volatile uint16_t *vq_avail_event(struct vdev *d)
{
	return (volatile uint16_t *)(d->mem.used + 4 + 8 * (size_t)d->size);
}

void vq_kick(struct vdev *d)
{
	volatile uint16_t *avail = d->mem.avail;
	volatile uint16_t *used_flags = (volatile uint16_t *)d->mem.used;
	uint16_t old = d->kicked_idx, new = d->avail_idx;
	bool notify;

	/* The ring entries and descriptors before the index that publishes
	 * them (section 2.7.13). */
	barrier();
	avail[1] = new;
	d->kicked_idx = new;
	/* The published index before the device's suppression field is read
	 * (section 2.7.13.4): the device does the mirror image. */
	fence();
	if (d->features & VF_EVENT_IDX) {
		uint16_t event = *vq_avail_event(d);

		notify = (uint16_t)(new - event - 1) < (uint16_t)(new - old);
	} else {
		notify = !(*used_flags & VQ_USED_F_NO_NOTIFY);
	}
	if (notify) {
		vdev_write(d, VMMIO_QUEUE_NOTIFY, d->queue);
		d->kicks++;
	}
}

uint16_t vq_used_idx(const struct vdev *d)
{
	return ((const volatile uint16_t *)d->mem.used)[1];
}

bool vq_get(struct vdev *d, struct vq_used_elem *e)
{
	const volatile struct vq_used_elem *el;

	if (vq_used_idx(d) == d->last_used)
		return false;
	/* The element after the index that published it. */
	barrier();
	el = (const volatile struct vq_used_elem *)(d->mem.used + 4) + (d->last_used & (d->size - 1));
	e->id = el->id;
	e->len = el->len;
	d->last_used++;
	return true;
}

void vq_wait(struct vdev *d, struct vq_used_elem *e)
{
	while (!vq_get(d, e))
		cpu_pause();
}

int vblk_req(struct vdev *d, uint32_t type, uint64_t sector, const struct vq_buf *data,
	     unsigned n, bool indirect, uint32_t *used_len)
{
	static struct vblk_hdr hdr;
	static volatile uint8_t status;
	struct vq_buf b[VQ_INDIRECT_MAX];
	struct vq_used_elem e;
	uint16_t head;

	hdr = (struct vblk_hdr){ .type = type, .sector = sector };
	status = 0xff; /* not a status the device may write */
	b[0] = (struct vq_buf){ &hdr, sizeof(hdr), false };
	for (unsigned i = 0; i < n && i < VQ_INDIRECT_MAX - 2; i++)
		b[i + 1] = data[i];
	if (n > VQ_INDIRECT_MAX - 2)
		n = VQ_INDIRECT_MAX - 2;
	b[n + 1] = (struct vq_buf){ (const void *)&status, 1, true };
	head = vq_add(d, b, n + 2, indirect);
	vq_kick(d);
	vq_wait(d, &e);
	if (used_len)
		*used_len = e.len;
	if (e.id != head)
		return VBLK_BAD_USED;
	return status;
}

/* virtio-pci for the test guests (virtio.h): PCI enumeration through
 * configuration mechanism #1, the capability walk, the virtio-mmio
 * register offsets carried to the virtio-pci structures, and MSI-X.
 * Written from virtio 1.2 section 4.1 and the PCI local bus specification,
 * not from vmrun's code. */
#include "virtio.h"

#define PCI_VENDOR_VIRTIO 0x1af4
#define PCI_CAP_VNDR 0x09
#define PCI_CAP_MSIX 0x11

static uint32_t cfg_addr(unsigned slot, unsigned reg)
{
	return 0x80000000u | (slot << 11) | (reg & 0xfc);
}

static uint32_t cfg_read32(unsigned slot, unsigned reg)
{
	outl(0xcf8, cfg_addr(slot, reg));
	return inl(0xcfc);
}

static uint8_t cfg_read8(unsigned slot, unsigned reg)
{
	outl(0xcf8, cfg_addr(slot, reg));
	return inb((uint16_t)(0xcfc + (reg & 3)));
}

static void cfg_write16(unsigned slot, unsigned reg, uint16_t v)
{
	outl(0xcf8, cfg_addr(slot, reg));
	outw((uint16_t)(0xcfc + (reg & 2)), v);
}

/* BAR @bar's base (32-bit memory BARs only), 0 for anything else. */
static uintptr_t bar_base(unsigned slot, unsigned bar)
{
	uint32_t v;

	if (bar > 5)
		return 0;
	v = cfg_read32(slot, 0x10 + 4 * bar);
	if (v & 1)
		return 0; /* I/O space */
	return v & ~0xfu;
}

/* The function's capabilities: the virtio structures and MSI-X.  False
 * when a required structure is missing. */
static bool walk_caps(unsigned slot, struct vpci *p)
{
	unsigned at = cfg_read8(slot, 0x34) & 0xfc, n = 0;

	while (at >= 0x40 && n++ < 48) {
		uint8_t id = cfg_read8(slot, at);

		if (id == PCI_CAP_VNDR) {
			uint8_t type = cfg_read8(slot, at + 3), bar = cfg_read8(slot, at + 4);
			uintptr_t addr = bar_base(slot, bar) + cfg_read32(slot, at + 8);

			if (type == VPCI_CAP_COMMON && !p->common)
				p->common = addr;
			else if (type == VPCI_CAP_NOTIFY && !p->notify) {
				p->notify = addr;
				p->notify_mult = cfg_read32(slot, at + 16);
			} else if (type == VPCI_CAP_ISR && !p->isr)
				p->isr = addr;
			else if (type == VPCI_CAP_DEVICE && !p->device)
				p->device = addr;
		} else if (id == PCI_CAP_MSIX) {
			uint32_t table = cfg_read32(slot, at + 4);

			p->msix_cap = (uint8_t)at;
			p->msix_vectors = (cfg_read32(slot, at) >> 16 & 0x7ff) + 1;
			p->msix_table = bar_base(slot, table & 7) + (table & ~7u);
		}
		at = cfg_read8(slot, at + 1) & 0xfc;
	}
	return p->common && p->notify && p->isr;
}

unsigned vpci_scan(struct virtio_mmio_dev *out, struct vpci *pci, unsigned max)
{
	unsigned n = 0;

	for (unsigned slot = 0; slot < 32 && n < max; slot++) {
		uint32_t id = cfg_read32(slot, 0);
		struct vpci *p = &pci[n];

		if ((id & 0xffff) != PCI_VENDOR_VIRTIO || (id >> 16) < 0x1040 ||
		    (id >> 16) > 0x107f || (cfg_read32(slot, 8) & 0xff) < 1)
			continue;
		memset(p, 0, sizeof(*p));
		p->slot = slot;
		p->device_id = (id >> 16) - 0x1040;
		p->intx_pin = 16 + (slot - 1) % 8;
		/* Memory Space and Bus Master on. */
		cfg_write16(slot, 4, 0x6);
		if (!walk_caps(slot, p))
			continue;
		out[n] = (struct virtio_mmio_dev){ .base = p->common, .size = 0,
						   .irq = p->intx_pin, .pci = p };
		n++;
	}
	return n;
}

unsigned virtio_scan(struct virtio_mmio_dev *out, unsigned max)
{
	static struct vpci pci[16];
	unsigned n = virtio_mmio_scan(out, max);

	if (n < max)
		n += vpci_scan(out + n, pci, max - n < 16 ? max - n : 16);
	return n;
}

void vpci_bus_master(const struct vdev *d, bool on)
{
	cfg_write16(d->pci->slot, 4, on ? 0x6 : 0x2); /* Memory Space, Bus Master */
}

uint32_t vpci_read(const struct vdev *d, uint32_t reg)
{
	struct vpci *p = d->pci;
	uintptr_t c = p->common;

	if (reg >= VMMIO_CONFIG)
		return mmio_read32(p->device + reg - VMMIO_CONFIG);
	switch (reg) {
	case VMMIO_MAGIC_VALUE: return VMMIO_MAGIC;
	case VMMIO_VERSION: return 2;
	case VMMIO_DEVICE_ID: return p->device_id;
	case VMMIO_DEVICE_FEATURES: return mmio_read32(c + VPCI_DF);
	case VMMIO_QUEUE_NUM_MAX: return mmio_read16(c + VPCI_Q_SIZE); /* before the driver writes it */
	case VMMIO_QUEUE_READY: return mmio_read16(c + VPCI_Q_ENABLE);
	case VMMIO_INTERRUPT_STATUS:
		p->isr_latched |= mmio_read8(p->isr);
		return p->isr_latched;
	case VMMIO_STATUS: return mmio_read8(c + VPCI_STATUS);
	case VMMIO_CONFIG_GENERATION: return mmio_read8(c + VPCI_CFGGEN);
	default: return 0;
	}
}

void vpci_write(const struct vdev *d, uint32_t reg, uint32_t v)
{
	struct vpci *p = d->pci;
	uintptr_t c = p->common;

	if (reg >= VMMIO_CONFIG) {
		mmio_write32(p->device + reg - VMMIO_CONFIG, v);
		return;
	}
	switch (reg) {
	case VMMIO_DEVICE_FEATURES_SEL: mmio_write32(c + VPCI_DFSELECT, v); break;
	case VMMIO_DRIVER_FEATURES_SEL: mmio_write32(c + VPCI_GFSELECT, v); break;
	case VMMIO_DRIVER_FEATURES: mmio_write32(c + VPCI_GF, v); break;
	case VMMIO_QUEUE_SEL: mmio_write16(c + VPCI_Q_SELECT, (uint16_t)v); break;
	case VMMIO_QUEUE_NUM: mmio_write16(c + VPCI_Q_SIZE, (uint16_t)v); break;
	case VMMIO_QUEUE_READY: mmio_write16(c + VPCI_Q_ENABLE, (uint16_t)v); break;
	case VMMIO_QUEUE_NOTIFY: mmio_write16(d->notify_addr, (uint16_t)v); break;
	case VMMIO_INTERRUPT_ACK: p->isr_latched &= ~v; break;
	case VMMIO_STATUS:
		mmio_write8(c + VPCI_STATUS, (uint8_t)v);
		if (!v)
			p->isr_latched = 0;
		break;
	case VMMIO_QUEUE_DESC_LOW: mmio_write32(c + VPCI_Q_DESCLO, v); break;
	case VMMIO_QUEUE_DESC_HIGH: mmio_write32(c + VPCI_Q_DESCLO + 4, v); break;
	case VMMIO_QUEUE_DRIVER_LOW: mmio_write32(c + VPCI_Q_AVAILLO, v); break;
	case VMMIO_QUEUE_DRIVER_HIGH: mmio_write32(c + VPCI_Q_AVAILLO + 4, v); break;
	case VMMIO_QUEUE_DEVICE_LOW: mmio_write32(c + VPCI_Q_USEDLO, v); break;
	case VMMIO_QUEUE_DEVICE_HIGH: mmio_write32(c + VPCI_Q_USEDLO + 4, v); break;
	default: break;
	}
}

void vdev_route_irq(struct vdev *d, uint8_t vector, unsigned apic_id)
{
	struct vpci *p = d->pci;
	unsigned num_queues;
	uint16_t ctl;

	if (!p || !p->msix_cap || cmdline_get_int("virtio.intx", 0)) {
		if (p)
			gprintf("vpci: slot %u intx pin %u\n", p->slot, d->irq);
		ioapic_route(d->irq, vector, apic_id);
		return;
	}
	/* One message for every vector: fixed delivery to @apic_id. */
	for (unsigned v = 0; v < p->msix_vectors; v++) {
		uintptr_t e = p->msix_table + 16 * v;

		mmio_write32(e, 0xfee00000u | (apic_id << 12));
		mmio_write32(e + 4, 0);
		mmio_write32(e + 8, vector);
		mmio_write32(e + 12, 0); /* unmasked */
	}
	/* Vector 0 for configuration changes, queue q on vector q + 1 (or 0
	 * when the table is short); each read back as the device took it. */
	mmio_write16(p->common + VPCI_MSIX_CONFIG, 0);
	num_queues = mmio_read16(p->common + VPCI_NUMQ);
	for (unsigned q = 0; q < num_queues; q++) {
		uint16_t v = (uint16_t)(q + 1 < p->msix_vectors ? q + 1 : 0);

		mmio_write16(p->common + VPCI_Q_SELECT, (uint16_t)q);
		mmio_write16(p->common + VPCI_Q_MSIX, v);
		if (mmio_read16(p->common + VPCI_Q_MSIX) != v)
			gprintf("vpci: queue %u: vector %u refused\n", q, v);
	}
	ctl = (uint16_t)(cfg_read32(p->slot, p->msix_cap) >> 16);
	cfg_write16(p->slot, p->msix_cap + 2u, (uint16_t)(ctl | 0x8000)); /* MSI-X Enable */
	gprintf("vpci: slot %u msix %u vectors\n", p->slot, p->msix_vectors);
}

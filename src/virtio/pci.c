// SPDX-License-Identifier: MIT
/*
 * virtio-pci transport, modern only (virtio 1.2, section 4.1); the layout
 * is in vmrun/virtio_pci.h.
 *
 * BAR and capability accesses come from vCPU threads through the PCI bus
 * (under its lock) and run under dev->lock.  Queue work never runs there: a
 * notify write that KVM did not turn into an ioeventfd signal is forwarded
 * to the same eventfd.  Status and feature rules are the shared ones
 * (vmrun/virtio_transport.h).  Every offset and size from the guest is
 * checked against the register it names before anything is indexed.
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "vmrun/log.h"
#include "vmrun/state.h"
#include "vmrun/virtio_pci.h"
#include "vmrun/virtio_transport.h"

/* ---- bus mastering ---- */

/* Bus Master Enable (PCI 3.0, 6.2.2): while the driver keeps it clear the
 * function issues no memory transactions, neither DMA nor MSI-X messages.
 * Read without the bus lock from the event loop: one byte, written only
 * under it. */
static bool bus_master(const struct virtio_pci *p)
{
	return __atomic_load_n(&p->fn.cfg[PCI_COMMAND], __ATOMIC_RELAXED) & PCI_COMMAND_MASTER;
}

static bool vp_dma_allowed(const struct virtio_device *dev)
{
	return bus_master(dev->transport);
}

/* ---- interrupts ---- */

/* Whether vector @v's message must wait in the pending bits: the vector or
 * the function masked, or bus mastering off (an MSI-X message is a memory
 * write). */
static bool vector_masked(const struct virtio_pci *p, unsigned v)
{
	return p->msix_masked || (p->msix[v].ctrl & PCI_MSIX_ENTRY_CTRL_MASKBIT) || !bus_master(p);
}

/* Send vector @v's message now.  dev->lock held. */
static void msix_deliver(struct virtio_pci *p, unsigned v)
{
	const struct virtio_pci_msix_entry *e = &p->msix[v];
	uint64_t addr = e->addr_lo | ((uint64_t)e->addr_hi << 32), one = 1;

	p->msi_sent++;
	if (p->irqfd[v] >= 0) {
		/* The route follows the table entry (a no-op when unchanged). */
		if (pci_msi_route(p->host.bus, p->gsi_base + v, true, addr, e->data) < 0)
			return;
		if (write(p->irqfd[v], &one, sizeof(one)) < 0)
			log_warn("%s: irqfd: %s", p->dev->name, strerror(errno));
	} else if (p->host.msi) {
		p->host.msi(p->host.msi_opaque, addr, e->data);
	}
}

/* Signal vector @v: delivered, or left pending while masked. */
static void msix_signal(struct virtio_pci *p, uint16_t v)
{
	if (v >= p->n_vectors)
		return; /* VIRTIO_MSI_NO_VECTOR, or never accepted */
	if (vector_masked(p, v)) {
		p->pba |= 1ull << v;
		return;
	}
	msix_deliver(p, v);
}

/* Deliver every pending vector that is no longer masked. */
static void msix_flush_pending(struct virtio_pci *p)
{
	if (!p->msix_enabled)
		return;
	for (unsigned v = 0; v < p->n_vectors; v++) {
		if ((p->pba & (1ull << v)) && !vector_masked(p, v)) {
			p->pba &= ~(1ull << v);
			msix_deliver(p, v);
		}
	}
}

static void vp_interrupt_used(struct virtio_device *dev, unsigned q)
{
	struct virtio_pci *p = dev->transport;

	/* The ISR bit is set with MSI-X too (section 4.1.4.5 asks it only
	 * without; QEMU sets it always): a driver that polls the ISR sees it. */
	p->isr |= VIRTIO_PCI_ISR_QUEUE;
	if (p->msix_enabled) {
		if (q < dev->num_queues)
			msix_signal(p, p->queue_vector[q]);
		return;
	}
	pci_function_set_intx(&p->fn, true);
}

static void vp_interrupt_config(struct virtio_device *dev)
{
	struct virtio_pci *p = dev->transport;

	p->isr |= VIRTIO_PCI_ISR_CONFIG;
	if (p->msix_enabled)
		msix_signal(p, p->config_vector);
	else
		pci_function_set_intx(&p->fn, true);
}

/* ---- BAR0: common configuration ---- */

static struct virtq *selected_queue(struct virtio_pci *p)
{
	return p->queue_sel < p->dev->num_queues ? &p->dev->vqs[p->queue_sel] : NULL;
}

static void vp_reset_registers(struct virtio_pci *p)
{
	p->device_features_sel = p->driver_features_sel = 0;
	p->queue_sel = 0;
	p->config_vector = VIRTIO_MSI_NO_VECTOR;
	for (unsigned q = 0; q < VIRTIO_PCI_MAX_QUEUES; q++)
		p->queue_vector[q] = VIRTIO_MSI_NO_VECTOR;
	/* queue_size reads the maximum after a reset (section 4.1.4.3). */
	for (unsigned q = 0; q < p->dev->num_queues; q++)
		p->dev->vqs[q].size = VIRTQ_MAX_SIZE;
	p->isr = 0;
	pci_function_set_intx(&p->fn, false);
}

/* Width of the common-configuration field at @off, 0 for none. */
static unsigned common_width(uint64_t off)
{
	switch (off) {
	case VIRTIO_PCI_COMMON_DFSELECT: case VIRTIO_PCI_COMMON_DF:
	case VIRTIO_PCI_COMMON_GFSELECT: case VIRTIO_PCI_COMMON_GF:
	case VIRTIO_PCI_COMMON_Q_DESCLO: case VIRTIO_PCI_COMMON_Q_DESCHI:
	case VIRTIO_PCI_COMMON_Q_AVAILLO: case VIRTIO_PCI_COMMON_Q_AVAILHI:
	case VIRTIO_PCI_COMMON_Q_USEDLO: case VIRTIO_PCI_COMMON_Q_USEDHI:
		return 4;
	case VIRTIO_PCI_COMMON_MSIX: case VIRTIO_PCI_COMMON_NUMQ:
	case VIRTIO_PCI_COMMON_Q_SELECT: case VIRTIO_PCI_COMMON_Q_SIZE:
	case VIRTIO_PCI_COMMON_Q_MSIX: case VIRTIO_PCI_COMMON_Q_ENABLE:
	case VIRTIO_PCI_COMMON_Q_NOFF:
		return 2;
	case VIRTIO_PCI_COMMON_STATUS: case VIRTIO_PCI_COMMON_CFGGENERATION:
		return 1;
	default:
		return 0;
	}
}

static uint32_t common_read(struct virtio_pci *p, uint64_t off)
{
	struct virtio_device *dev = p->dev;
	struct virtq *vq = selected_queue(p);

	switch (off) {
	case VIRTIO_PCI_COMMON_DFSELECT: return p->device_features_sel;
	case VIRTIO_PCI_COMMON_DF:
		return virtio_transport_device_features(dev, p->device_features_sel);
	case VIRTIO_PCI_COMMON_GFSELECT: return p->driver_features_sel;
	case VIRTIO_PCI_COMMON_GF:
		return p->driver_features_sel == 0 ? (uint32_t)dev->driver_features :
		       p->driver_features_sel == 1 ? (uint32_t)(dev->driver_features >> 32) : 0;
	case VIRTIO_PCI_COMMON_MSIX: return p->config_vector;
	case VIRTIO_PCI_COMMON_NUMQ: return dev->num_queues;
	case VIRTIO_PCI_COMMON_STATUS: return dev->status;
	case VIRTIO_PCI_COMMON_CFGGENERATION: return (uint8_t)dev->config_generation;
	case VIRTIO_PCI_COMMON_Q_SELECT: return p->queue_sel;
	case VIRTIO_PCI_COMMON_Q_SIZE: return vq ? vq->size : 0;
	case VIRTIO_PCI_COMMON_Q_MSIX:
		return vq ? p->queue_vector[p->queue_sel] : VIRTIO_MSI_NO_VECTOR;
	case VIRTIO_PCI_COMMON_Q_ENABLE: return vq ? vq->ready : 0;
	case VIRTIO_PCI_COMMON_Q_NOFF: return vq ? p->queue_sel : 0;
	case VIRTIO_PCI_COMMON_Q_DESCLO: return vq ? (uint32_t)vq->desc_gpa : 0;
	case VIRTIO_PCI_COMMON_Q_DESCHI: return vq ? (uint32_t)(vq->desc_gpa >> 32) : 0;
	case VIRTIO_PCI_COMMON_Q_AVAILLO: return vq ? (uint32_t)vq->avail_gpa : 0;
	case VIRTIO_PCI_COMMON_Q_AVAILHI: return vq ? (uint32_t)(vq->avail_gpa >> 32) : 0;
	case VIRTIO_PCI_COMMON_Q_USEDLO: return vq ? (uint32_t)vq->used_gpa : 0;
	case VIRTIO_PCI_COMMON_Q_USEDHI: return vq ? (uint32_t)(vq->used_gpa >> 32) : 0;
	default: return 0;
	}
}

/* A vector the guest names: one the table holds, or NO_VECTOR (read back
 * by the driver to learn that its choice was refused). */
static uint16_t vector_accept(const struct virtio_pci *p, uint32_t v)
{
	return v < p->n_vectors ? (uint16_t)v : VIRTIO_MSI_NO_VECTOR;
}

static void common_write(struct virtio_pci *p, uint64_t off, uint32_t val)
{
	struct virtio_device *dev = p->dev;
	struct virtq *vq = selected_queue(p);

	switch (off) {
	case VIRTIO_PCI_COMMON_DFSELECT: p->device_features_sel = val; break;
	case VIRTIO_PCI_COMMON_GFSELECT: p->driver_features_sel = val; break;
	case VIRTIO_PCI_COMMON_GF:
		virtio_transport_write_driver_features(dev, p->driver_features_sel, val);
		break;
	case VIRTIO_PCI_COMMON_MSIX: p->config_vector = vector_accept(p, val); break;
	case VIRTIO_PCI_COMMON_STATUS:
		if (virtio_transport_write_status(dev, (uint8_t)val))
			vp_reset_registers(p);
		break;
	case VIRTIO_PCI_COMMON_Q_SELECT: p->queue_sel = (uint16_t)val; break;
	case VIRTIO_PCI_COMMON_Q_SIZE:
		if (vq && !vq->ready)
			vq->size = (uint16_t)val; /* checked when enabled */
		break;
	case VIRTIO_PCI_COMMON_Q_MSIX:
		if (vq)
			p->queue_vector[p->queue_sel] = vector_accept(p, val);
		break;
	case VIRTIO_PCI_COMMON_Q_ENABLE:
		if (vq)
			virtio_transport_queue_ready(dev, p->queue_sel, val);
		break;
	case VIRTIO_PCI_COMMON_Q_DESCLO:
	case VIRTIO_PCI_COMMON_Q_DESCHI:
		virtio_transport_set_half(vq, vq ? &vq->desc_gpa : NULL, off & 4, val);
		break;
	case VIRTIO_PCI_COMMON_Q_AVAILLO:
	case VIRTIO_PCI_COMMON_Q_AVAILHI:
		virtio_transport_set_half(vq, vq ? &vq->avail_gpa : NULL, off & 4, val);
		break;
	case VIRTIO_PCI_COMMON_Q_USEDLO:
	case VIRTIO_PCI_COMMON_Q_USEDHI:
		virtio_transport_set_half(vq, vq ? &vq->used_gpa : NULL, off & 4, val);
		break;
	default: break; /* read-only */
	}
}

/* A common-configuration access of @size at @off: a whole field, or an
 * aligned 64-bit access to a ring address (two 32-bit halves).  Anything
 * else reads 0 and writes nothing. */
static void common_access(struct virtio_pci *p, uint64_t off, void *data, unsigned size,
			  bool write)
{
	unsigned parts = 1, width = common_width(off);
	uint32_t v;

	if (size == 8 && off >= VIRTIO_PCI_COMMON_Q_DESCLO && !(off & 7) &&
	    off < VIRTIO_PCI_COMMON_LEN) {
		parts = 2;
		width = 4;
	} else if (!width || width != size) {
		return;
	}
	for (unsigned i = 0; i < parts; i++) {
		uint8_t *b = (uint8_t *)data + 4 * i;

		if (write) {
			v = 0;
			memcpy(&v, b, width);
			common_write(p, off + 4 * i, v);
		} else {
			v = common_read(p, off + 4 * i);
			memcpy(b, &v, width);
		}
	}
}

static void forward_notify(struct virtio_pci *p, uint64_t off)
{
	uint64_t q = off / VIRTIO_PCI_NOTIFY_MULT;

	if (off % VIRTIO_PCI_NOTIFY_MULT == 0 && q < p->dev->num_queues)
		virtio_notifier_kick(&p->notify[q]);
}

static void bar0_access(struct virtio_pci *p, uint64_t off, void *data, unsigned size, bool write)
{
	struct virtio_device *dev = p->dev;

	if (off < VIRTIO_PCI_ISR_OFF) {
		common_access(p, off - VIRTIO_PCI_COMMON_OFF, data, size, write);
	} else if (off == VIRTIO_PCI_ISR_OFF) {
		/* Read to acknowledge: clears the bits and lowers INTx. */
		if (!write) {
			*(uint8_t *)data = p->isr;
			p->isr = 0;
			pci_function_set_intx(&p->fn, false);
		}
	} else if (off >= VIRTIO_PCI_DEVICE_OFF && off < VIRTIO_PCI_NOTIFY_OFF) {
		uint64_t coff = off - VIRTIO_PCI_DEVICE_OFF;

		if (coff >= dev->config_size || size > dev->config_size - coff)
			return;
		if (write && dev->ops->config_write)
			dev->ops->config_write(dev, (uint32_t)coff, data, size);
		else if (!write && dev->ops->config_read)
			dev->ops->config_read(dev, (uint32_t)coff, data, size);
	} else if (off >= VIRTIO_PCI_NOTIFY_OFF && write) {
		forward_notify(p, off - VIRTIO_PCI_NOTIFY_OFF);
	}
}

/* ---- BAR1: MSI-X table and PBA ---- */

static void msix_table_write(struct virtio_pci *p, unsigned v, unsigned field, uint32_t val)
{
	struct virtio_pci_msix_entry *e = &p->msix[v];

	switch (field) {
	case 0: e->addr_lo = val & ~3u; break;
	case 1: e->addr_hi = val; break;
	case 2: e->data = val; break;
	default:
		e->ctrl = val & PCI_MSIX_ENTRY_CTRL_MASKBIT;
		msix_flush_pending(p);
		break;
	}
}

static uint32_t msix_table_read(const struct virtio_pci *p, unsigned v, unsigned field)
{
	const struct virtio_pci_msix_entry *e = &p->msix[v];

	return field == 0 ? e->addr_lo : field == 1 ? e->addr_hi : field == 2 ? e->data : e->ctrl;
}

/* DWORD or QWORD accesses, naturally aligned (PCI 3.0, 6.8.2); others read
 * 0 and write nothing. */
static void bar1_access(struct virtio_pci *p, uint64_t off, void *data, unsigned size, bool write)
{
	if ((size != 4 && size != 8) || (off & (size - 1)))
		return;
	if (off - VIRTIO_PCI_MSIX_TABLE < 16ull * p->n_vectors) { /* the table starts at 0 */
		uint64_t t = off - VIRTIO_PCI_MSIX_TABLE;

		for (unsigned i = 0; i < size / 4; i++) {
			unsigned v = (unsigned)((t + 4 * i) / 16), field = (unsigned)((t + 4 * i) % 16 / 4);
			uint32_t val;

			if (write) {
				memcpy(&val, (uint8_t *)data + 4 * i, 4);
				msix_table_write(p, v, field, val);
			} else {
				val = msix_table_read(p, v, field);
				memcpy((uint8_t *)data + 4 * i, &val, 4);
			}
		}
	} else if (off >= VIRTIO_PCI_MSIX_PBA && off - VIRTIO_PCI_MSIX_PBA < 8 && !write) {
		uint64_t pba = p->pba >> (8 * (off - VIRTIO_PCI_MSIX_PBA));

		memcpy(data, &pba, size);
	}
}

static void vp_bar_read(struct pci_function *fn, unsigned bar, uint64_t off, void *data,
			unsigned size)
{
	struct virtio_pci *p = fn->opaque;

	pthread_mutex_lock(&p->dev->lock);
	if (bar == VIRTIO_PCI_BAR)
		bar0_access(p, off, data, size, false);
	else if (bar == VIRTIO_PCI_MSIX_BAR)
		bar1_access(p, off, data, size, false);
	pthread_mutex_unlock(&p->dev->lock);
}

static void vp_bar_write(struct pci_function *fn, unsigned bar, uint64_t off, const void *data,
			 unsigned size)
{
	struct virtio_pci *p = fn->opaque;
	uint8_t buf[8] = { 0 };

	memcpy(buf, data, size > 8 ? 8 : size);
	pthread_mutex_lock(&p->dev->lock);
	if (bar == VIRTIO_PCI_BAR)
		bar0_access(p, off, buf, size, true);
	else if (bar == VIRTIO_PCI_MSIX_BAR)
		bar1_access(p, off, buf, size, true);
	pthread_mutex_unlock(&p->dev->lock);
}

/* ---- ioeventfds follow BAR0 ---- */

static void ioeventfds_set(struct virtio_pci *p, bool on, uint64_t base)
{
	if (p->host.vm_fd < 0 || p->ioeventfds_on == on)
		return;
	for (unsigned q = 0; q < p->dev->num_queues; q++) {
		struct kvm_ioeventfd io = {
			.addr = (on ? base : p->ioeventfd_base) + VIRTIO_PCI_NOTIFY_OFF +
				q * VIRTIO_PCI_NOTIFY_MULT,
			.len = 2,
			.fd = p->notify[q].src.fd,
			.flags = on ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN,
		};

		if (p->notify[q].src.fd >= 0 && ioctl(p->host.vm_fd, KVM_IOEVENTFD, &io) < 0)
			log_warn("%s: KVM_IOEVENTFD: %s (notifications go the slow way)",
				 p->dev->name, strerror(errno));
	}
	p->ioeventfds_on = on;
	p->ioeventfd_base = base;
}

static void vp_bar_map(struct pci_function *fn, unsigned bar, bool mapped, uint64_t addr)
{
	struct virtio_pci *p = fn->opaque;

	if (bar != VIRTIO_PCI_BAR)
		return;
	ioeventfds_set(p, false, 0);
	if (mapped)
		ioeventfds_set(p, true, addr);
}

/* Message Control written: take the enable and function-mask bits. */
static void msix_control_update(struct virtio_pci *p)
{
	uint16_t ctl = (uint16_t)(p->fn.cfg[p->msix_cap + 2] | (p->fn.cfg[p->msix_cap + 3] << 8));
	bool was = p->msix_enabled;

	p->msix_enabled = ctl & PCI_MSIX_FLAGS_ENABLE;
	p->msix_masked = ctl & PCI_MSIX_FLAGS_MASKALL;
	if (p->msix_enabled && !was)
		pci_function_set_intx(&p->fn, false); /* INTx is not used with MSI-X */
	msix_flush_pending(p);
}

/* The PCI configuration access capability's window (section 4.1.4.9):
 * the BAR, offset and length the driver wrote, if they name 1, 2 or 4
 * naturally aligned bytes inside BAR0 or BAR1.  Bus lock held. */
static bool cfg_window(const struct virtio_pci *p, unsigned *bar, uint32_t *off, uint32_t *len)
{
	const uint8_t *c = &p->fn.cfg[p->cfg_cap];

	*bar = c[4];
	memcpy(off, c + 8, 4);
	memcpy(len, c + 12, 4);
	return (*bar == VIRTIO_PCI_BAR || *bar == VIRTIO_PCI_MSIX_BAR) &&
	       (*len == 1 || *len == 2 || *len == 4) && !(*off & (*len - 1)) &&
	       *off < p->fn.bars[*bar].size && *len <= p->fn.bars[*bar].size - *off;
}

/* Does [@offset, @offset + @size) touch pci_cfg_data? */
static bool touches_cfg_data(const struct virtio_pci *p, uint32_t offset, unsigned size)
{
	uint32_t d = (uint32_t)p->cfg_cap + 16;

	return p->cfg_cap && offset < d + 4 && offset + size > d;
}

static void vp_config_read(struct pci_function *fn, uint32_t offset, unsigned size,
			   uint32_t *val)
{
	struct virtio_pci *p = fn->opaque;
	uint32_t d = (uint32_t)p->cfg_cap + 16, off, len, data = 0;
	uint8_t bytes[4];
	unsigned bar;

	if (!touches_cfg_data(p, offset, size))
		return;
	if (cfg_window(p, &bar, &off, &len))
		vp_bar_read(fn, bar, off, &data, len);
	memcpy(bytes, &data, 4);
	/* pci_cfg_data's bytes in the lanes the access covers. */
	for (unsigned i = 0; i < size; i++) {
		uint32_t o = offset + i;

		if (o >= d && o < d + 4) {
			*val &= ~(0xffu << (8 * i));
			*val |= (uint32_t)bytes[o - d] << (8 * i);
		}
	}
}

static void vp_config_written(struct pci_function *fn, uint32_t offset, unsigned size)
{
	struct virtio_pci *p = fn->opaque;
	uint32_t off, len;
	unsigned bar;

	if (offset < (uint32_t)p->msix_cap + 4 && offset + size > (uint32_t)p->msix_cap + 2) {
		pthread_mutex_lock(&p->dev->lock);
		msix_control_update(p);
		pthread_mutex_unlock(&p->dev->lock);
	}
	/* Command written with Bus Master Enable set: messages held while it
	 * was clear go out, and every ready queue is looked at, since the
	 * notifications that came meanwhile were dropped.  (Spurious when it
	 * was set already: a queue without new buffers ignores a kick.) */
	if (offset <= PCI_COMMAND && offset + size > PCI_COMMAND && bus_master(p)) {
		pthread_mutex_lock(&p->dev->lock);
		msix_flush_pending(p);
		for (unsigned q = 0; q < p->dev->num_queues; q++)
			if (p->dev->vqs[q].ready)
				virtio_notifier_kick(&p->notify[q]);
		pthread_mutex_unlock(&p->dev->lock);
	}
	/* A write to pci_cfg_data goes through the window, with the bytes
	 * the capability now holds. */
	if (touches_cfg_data(p, offset, size) && cfg_window(p, &bar, &off, &len))
		vp_bar_write(fn, bar, off, &p->fn.cfg[p->cfg_cap + 16], len);
}

static const struct pci_function_ops vp_fn_ops = {
	.bar_read = vp_bar_read,
	.bar_write = vp_bar_write,
	.bar_map = vp_bar_map,
	.config_written = vp_config_written,
	.config_read = vp_config_read,
};

/* ---- set-up ---- */

struct virtio_pci_cap_body { /* struct virtio_pci_cap after cap_vndr and cap_next */
	uint8_t cap_len, cfg_type, bar, id, padding[2];
	uint32_t offset, length;
	uint32_t notify_off_multiplier; /* notify capability only */
} __attribute__((packed));

static int add_virtio_cap(struct virtio_pci *p, uint8_t type, uint32_t off, uint32_t len)
{
	struct virtio_pci_cap_body c = {
		.cap_len = type == VIRTIO_PCI_CAP_NOTIFY_CFG ? 20 : 16,
		.cfg_type = type, .bar = VIRTIO_PCI_BAR, .offset = off, .length = len,
		.notify_off_multiplier = VIRTIO_PCI_NOTIFY_MULT,
	};
	uint8_t at;

	return pci_function_add_cap(&p->fn, PCI_CAP_ID_VNDR, &c, c.cap_len - 2u, &at);
}

/* struct virtio_pci_cfg_cap: the common capability header, then
 * pci_cfg_data; bar, offset, length and data are the driver's to write. */
static int add_cfg_cap(struct virtio_pci *p)
{
	uint8_t body[18] = { 20, VIRTIO_PCI_CAP_PCI_CFG }, ones[4] = { 0xff, 0xff, 0xff, 0xff };
	int r = pci_function_add_cap(&p->fn, PCI_CAP_ID_VNDR, body, sizeof(body), &p->cfg_cap);

	if (r)
		return r;
	pci_function_set_wmask(&p->fn, p->cfg_cap + 4u, ones, 1);
	pci_function_set_wmask(&p->fn, p->cfg_cap + 8u, ones, 4);
	pci_function_set_wmask(&p->fn, p->cfg_cap + 12u, ones, 4);
	pci_function_set_wmask(&p->fn, p->cfg_cap + 16u, ones, 4);
	return 0;
}

static uint32_t class_of(uint32_t device_id)
{
	switch (device_id) {
	case 1: return 0x020000; /* network, Ethernet */
	case 2: return 0x018000; /* mass storage, other */
	default: return 0xff0000;
	}
}

int virtio_pci_init(struct virtio_pci *p, struct virtio_device *dev,
		    const struct virtio_pci_host *host, char *err, size_t errlen)
{
	uint8_t msix[10], msix_wmask[2] = { 0, (PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL) >> 8 };
	uint32_t table = VIRTIO_PCI_MSIX_TABLE | VIRTIO_PCI_MSIX_BAR;
	uint32_t pba = VIRTIO_PCI_MSIX_PBA | VIRTIO_PCI_MSIX_BAR;
	int r;

	memset(p, 0, sizeof(*p));
	p->dev = dev;
	p->host = *host;
	virtio_notifiers_clear(p->notify, VIRTIO_PCI_MAX_QUEUES);
	for (unsigned v = 0; v < VIRTIO_PCI_MAX_VECTORS; v++)
		p->irqfd[v] = -1;
	if (!host->bus)
		return errmsg(-EINVAL, err, errlen, "%s: no PCI bus", dev->name);
	if (dev->num_queues == 0 || dev->num_queues > VIRTIO_PCI_MAX_QUEUES)
		return errmsg(-EINVAL, err, errlen, "%s: %u queues (1..%d)", dev->name,
			      dev->num_queues, VIRTIO_PCI_MAX_QUEUES);
	if (dev->config_size > VIRTIO_PCI_NOTIFY_OFF - VIRTIO_PCI_DEVICE_OFF)
		return errmsg(-EINVAL, err, errlen, "%s: configuration space too large", dev->name);
	p->n_vectors = dev->num_queues + 1;
	for (unsigned v = 0; v < p->n_vectors; v++)
		p->msix[v].ctrl = PCI_MSIX_ENTRY_CTRL_MASKBIT; /* masked at reset */

	pci_function_init(&p->fn, dev->name, VIRTIO_PCI_VENDOR,
			  (uint16_t)(VIRTIO_PCI_DEVICE_BASE + dev->device_id), 1,
			  class_of(dev->device_id), VIRTIO_PCI_VENDOR, 0x1100, true, &vp_fn_ops, p);
	if ((r = pci_function_add_bar(&p->fn, VIRTIO_PCI_BAR, VIRTIO_PCI_BAR_SIZE)) ||
	    (r = pci_function_add_bar(&p->fn, VIRTIO_PCI_MSIX_BAR, VIRTIO_PCI_MSIX_BAR_SIZE)))
		return errmsg(r, err, errlen, "%s: BAR: %s", dev->name, strerror(-r));
	msix[0] = (uint8_t)(p->n_vectors - 1);
	msix[1] = 0;
	memcpy(&msix[2], &table, 4);
	memcpy(&msix[6], &pba, 4);
	if ((r = pci_function_add_cap(&p->fn, PCI_CAP_ID_MSIX, msix, sizeof(msix), &p->msix_cap)))
		return errmsg(r, err, errlen, "%s: capabilities: %s", dev->name, strerror(-r));
	pci_function_set_wmask(&p->fn, p->msix_cap + 2u, msix_wmask, 2);
	if ((r = add_virtio_cap(p, VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_COMMON_OFF,
				VIRTIO_PCI_COMMON_LEN)) ||
	    (r = add_virtio_cap(p, VIRTIO_PCI_CAP_NOTIFY_CFG, VIRTIO_PCI_NOTIFY_OFF,
				dev->num_queues * VIRTIO_PCI_NOTIFY_MULT)) ||
	    (r = add_virtio_cap(p, VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_ISR_OFF, 1)) ||
	    (dev->config_size &&
	     (r = add_virtio_cap(p, VIRTIO_PCI_CAP_DEVICE_CFG, VIRTIO_PCI_DEVICE_OFF,
				 dev->config_size))) ||
	    (r = add_cfg_cap(p)))
		return errmsg(r, err, errlen, "%s: capabilities: %s", dev->name, strerror(-r));

	dev->transport = p;
	dev->interrupt_used = vp_interrupt_used;
	dev->interrupt_config = vp_interrupt_config;
	dev->dma_allowed = vp_dma_allowed;
	virtio_transport_bind(dev);
	vp_reset_registers(p);

	if ((r = virtio_notifiers_open(p->notify, dev, host->loop, err, errlen)))
		return r;
	if ((r = pci_msi_alloc(host->bus, p->n_vectors, &p->gsi_base)))
		return errmsg(r, err, errlen, "%s: out of MSI GSIs", dev->name);
	for (unsigned v = 0; host->vm_fd >= 0 && v < p->n_vectors; v++) {
		struct kvm_irqfd irqfd = { .gsi = p->gsi_base + v };

		p->irqfd[v] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (p->irqfd[v] < 0)
			return errmsg(-errno, err, errlen, "%s: eventfd: %s", dev->name, strerror(errno));
		irqfd.fd = (uint32_t)p->irqfd[v];
		if (ioctl(host->vm_fd, KVM_IRQFD, &irqfd) < 0) {
			r = -errno;
			close(p->irqfd[v]);
			p->irqfd[v] = -1;
			return errmsg(r, err, errlen, "%s: KVM_IRQFD: %s", dev->name, strerror(-r));
		}
	}
	r = pci_bus_add(host->bus, &p->fn);
	if (r < 0)
		return errmsg(r, err, errlen, "%s: no free PCI slot or window space", dev->name);
	p->slot = r;
	return 0;
}

void virtio_pci_exit(struct virtio_pci *p)
{
	if (!p->dev)
		return;
	if (p->fn.bus) {
		pthread_rwlock_wrlock(&p->fn.bus->lock);
		ioeventfds_set(p, false, 0);
		pthread_rwlock_unlock(&p->fn.bus->lock);
	}
	virtio_notifiers_close(p->notify, VIRTIO_PCI_MAX_QUEUES, p->host.loop, p->quiesced);
	for (unsigned v = 0; v < VIRTIO_PCI_MAX_VECTORS; v++) {
		if (p->irqfd[v] < 0)
			continue;
		struct kvm_irqfd irqfd = { .fd = (uint32_t)p->irqfd[v], .gsi = p->gsi_base + v,
					   .flags = KVM_IRQFD_FLAG_DEASSIGN };

		(void)!ioctl(p->host.vm_fd, KVM_IRQFD, &irqfd);
		close(p->irqfd[v]);
		p->irqfd[v] = -1;
	}
	p->dev = NULL;
}

void virtio_pci_address(const struct virtio_pci *p, char *buf, size_t len)
{
	snprintf(buf, len, "0000:00:%02x.0", (unsigned)p->slot);
}

/* ---- quiesce, resume, state ---- */

#define VIRTIO_PCI_STATE_VERSION 1

void virtio_pci_quiesce(struct virtio_pci *p)
{
	if (p->quiesced || !p->host.loop)
		return;
	virtio_notifiers_quiesce(p->notify, p->dev, p->host.loop);
	p->quiesced = true;
}

void virtio_pci_resume(struct virtio_pci *p)
{
	bool was_quiesced = p->quiesced;

	p->quiesced = false;
	virtio_notifiers_resume(p->notify, p->dev, p->host.loop, was_quiesced);
}

void virtio_pci_node(const struct virtio_pci *p, const char *kind, char *buf, size_t len)
{
	snprintf(buf, len, "/devices/%s@pci-%u", kind, (unsigned)p->slot);
}

void virtio_pci_save(struct virtio_pci *p, struct state_writer *w, const char *kind)
{
	char node[STATE_PATH_MAX];
	uint32_t table[4 * VIRTIO_PCI_MAX_VECTORS], vectors[1 + VIRTIO_PCI_MAX_QUEUES];

	virtio_pci_node(p, kind, node, sizeof(node));
	state_begin(w, VIRTIO_PCI_STATE_VERSION, "%s", node);
	state_put_str(w, "transport", "virtio-pci");
	pci_function_save(&p->fn, w);
	pthread_mutex_lock(&p->dev->lock);
	for (unsigned v = 0; v < p->n_vectors; v++)
		memcpy(&table[4 * v], &p->msix[v], 16);
	vectors[0] = p->config_vector;
	for (unsigned q = 0; q < p->dev->num_queues; q++)
		vectors[1 + q] = p->queue_vector[q];
	state_put_u32(w, "msix-vectors", p->n_vectors);
	state_put_u32s(w, "msix-table", table, 4 * p->n_vectors);
	state_put_u64(w, "msix-pba", p->pba);
	state_put_u32s(w, "vectors", vectors, 1 + p->dev->num_queues);
	state_put_u32(w, "device-features-sel", p->device_features_sel);
	state_put_u32(w, "driver-features-sel", p->driver_features_sel);
	state_put_u32(w, "queue-sel", p->queue_sel);
	state_put_u32(w, "isr", p->isr);
	virtio_device_save(p->dev, w, node);
	pthread_mutex_unlock(&p->dev->lock);
}

int virtio_pci_load(struct virtio_pci *p, struct state_reader *r, const char *kind)
{
	char node[STATE_PATH_MAX], transport[16];
	uint32_t table[4 * VIRTIO_PCI_MAX_VECTORS], vectors[1 + VIRTIO_PCI_MAX_QUEUES];
	uint32_t nvec, dsel, drsel, qsel, isr;
	uint64_t pba;
	int n, e;

	virtio_pci_node(p, kind, node, sizeof(node));
	n = state_node(r, true, "%s", node);
	if (state_version(r, n, 1, VIRTIO_PCI_STATE_VERSION) < 0)
		return r->err;
	state_get_str(r, n, "transport", transport, sizeof(transport));
	state_get_u32(r, n, "msix-vectors", &nvec);
	if (r->err)
		return r->err;
	if (strcmp(transport, "virtio-pci") || nvec != p->n_vectors)
		return state_reject(r, -EINVAL, "state: %s: saved as %s with %u vectors, built with %u",
				    node, transport, nvec, p->n_vectors);
	state_get_u32s(r, n, "msix-table", table, 4 * p->n_vectors);
	state_get_u64(r, n, "msix-pba", &pba);
	state_get_u32s(r, n, "vectors", vectors, 1 + p->dev->num_queues);
	state_get_u32(r, n, "device-features-sel", &dsel);
	state_get_u32(r, n, "driver-features-sel", &drsel);
	state_get_u32_range(r, n, "queue-sel", 0, UINT16_MAX, &qsel);
	state_get_u32_range(r, n, "isr", 0, VIRTIO_PCI_ISR_QUEUE | VIRTIO_PCI_ISR_CONFIG, &isr);
	if (r->err)
		return r->err;
	if (pba >> p->n_vectors)
		return state_reject(r, -EINVAL, "state: %s: pending bits beyond the table", node);
	for (unsigned i = 0; i < 1 + p->dev->num_queues; i++)
		if (vectors[i] >= p->n_vectors && vectors[i] != VIRTIO_MSI_NO_VECTOR)
			return state_reject(r, -EINVAL, "state: %s: vector %u out of range", node,
					    vectors[i]);
	if ((e = pci_function_load(&p->fn, r, n)))
		return e;
	pthread_mutex_lock(&p->dev->lock);
	e = virtio_device_load(p->dev, r, node);
	if (!e) {
		for (unsigned v = 0; v < p->n_vectors; v++) {
			memcpy(&p->msix[v], &table[4 * v], 16);
			p->msix[v].addr_lo &= ~3u;
			p->msix[v].ctrl &= PCI_MSIX_ENTRY_CTRL_MASKBIT;
		}
		p->pba = pba;
		p->config_vector = (uint16_t)vectors[0];
		for (unsigned q = 0; q < p->dev->num_queues; q++)
			p->queue_vector[q] = (uint16_t)vectors[1 + q];
		p->device_features_sel = dsel;
		p->driver_features_sel = drsel;
		p->queue_sel = (uint16_t)qsel;
		p->isr = (uint8_t)isr;
		p->msix_enabled = false;
		msix_control_update(p);
		if (!p->msix_enabled && p->isr)
			pci_function_set_intx(&p->fn, true);
	}
	pthread_mutex_unlock(&p->dev->lock);
	return e;
}

int virtio_pci_activate_loaded(struct virtio_pci *p)
{
	return virtio_transport_activate_loaded(p->dev);
}

// SPDX-License-Identifier: MIT
/*
 * virtio-mmio transport, version 2 registers (virtio 1.2, section 4.2).
 *
 * Register accesses come from vCPU threads (MMIO exits) and run under
 * dev->lock.  Queue work never runs there: a QueueNotify write that KVM did
 * not already turn into an ioeventfd signal is forwarded to the same
 * eventfd, so the device model sees every notification on the event loop
 * thread.  Interrupts go out through an irqfd: the InterruptStatus bits say
 * why, and the guest clears them with InterruptAck.
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
#include "vmrun/virtio_mmio.h"
#include "vmrun/virtio_transport.h"

static struct virtq *selected_queue(struct virtio_mmio *m)
{
	return m->queue_sel < m->dev->num_queues ? &m->dev->vqs[m->queue_sel] : NULL;
}

/* Pulse the interrupt line.  Caller holds dev->lock and has set a bit in
 * interrupt_status. */
static void mmio_raise(struct virtio_mmio *m)
{
	uint64_t one = 1;

	if (m->irqfd >= 0) {
		if (write(m->irqfd, &one, sizeof(one)) < 0)
			log_warn("%s: irqfd: %s", m->dev->name, strerror(errno));
	} else if (m->host.vm_fd >= 0) {
		struct kvm_irq_level line = { .irq = m->irq, .level = 1 };

		(void)!ioctl(m->host.vm_fd, KVM_IRQ_LINE, &line);
		line.level = 0;
		(void)!ioctl(m->host.vm_fd, KVM_IRQ_LINE, &line);
	}
}

static void mmio_interrupt_used(struct virtio_device *dev, unsigned q)
{
	struct virtio_mmio *m = dev->transport;

	(void)q;
	m->interrupt_status |= VIRTIO_MMIO_INT_VRING;
	mmio_raise(m);
}

static void mmio_interrupt_config(struct virtio_device *dev)
{
	struct virtio_mmio *m = dev->transport;

	m->interrupt_status |= VIRTIO_MMIO_INT_CONFIG;
	mmio_raise(m);
}

/* Status 0 written: the device is reset by the shared rules
 * (vmrun/virtio_transport.h); the transport's own registers follow. */
static void mmio_write_status(struct virtio_mmio *m, uint32_t val)
{
	if (virtio_transport_write_status(m->dev, (uint8_t)val)) {
		m->device_features_sel = m->driver_features_sel = m->queue_sel = 0;
		m->interrupt_status = 0;
	}
}

static void mmio_forward_notify(struct virtio_mmio *m, uint32_t q)
{
	if (q < m->dev->num_queues)
		virtio_notifier_kick(&m->notify[q]);
}

static void mmio_write_reg(struct virtio_mmio *m, uint64_t off, uint32_t val)
{
	struct virtio_device *dev = m->dev;
	struct virtq *vq = selected_queue(m);

	switch (off) {
	case VIRTIO_MMIO_DEVICE_FEATURES_SEL: m->device_features_sel = val; break;
	case VIRTIO_MMIO_DRIVER_FEATURES_SEL: m->driver_features_sel = val; break;
	case VIRTIO_MMIO_DRIVER_FEATURES:
		virtio_transport_write_driver_features(dev, m->driver_features_sel, val);
		break;
	case VIRTIO_MMIO_QUEUE_SEL: m->queue_sel = val; break;
	case VIRTIO_MMIO_QUEUE_NUM:
		if (vq && !vq->ready)
			vq->size = val > UINT16_MAX ? 0 : (uint16_t)val; /* checked at QueueReady */
		break;
	case VIRTIO_MMIO_QUEUE_READY:
		if (vq)
			virtio_transport_queue_ready(dev, m->queue_sel, val);
		break;
	case VIRTIO_MMIO_QUEUE_NOTIFY: mmio_forward_notify(m, val); break;
	case VIRTIO_MMIO_INTERRUPT_ACK: m->interrupt_status &= ~val; break;
	case VIRTIO_MMIO_STATUS: mmio_write_status(m, val); break;
	case VIRTIO_MMIO_QUEUE_DESC_LOW:
	case VIRTIO_MMIO_QUEUE_DESC_HIGH:
		virtio_transport_set_half(vq, vq ? &vq->desc_gpa : NULL, off & 4, val);
		break;
	case VIRTIO_MMIO_QUEUE_DRIVER_LOW:
	case VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
		virtio_transport_set_half(vq, vq ? &vq->avail_gpa : NULL, off & 4, val);
		break;
	case VIRTIO_MMIO_QUEUE_DEVICE_LOW:
	case VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
		virtio_transport_set_half(vq, vq ? &vq->used_gpa : NULL, off & 4, val);
		break;
	default: break; /* read-only or reserved: ignored */
	}
}

static uint32_t mmio_read_reg(struct virtio_mmio *m, uint64_t off)
{
	struct virtio_device *dev = m->dev;
	struct virtq *vq = selected_queue(m);

	switch (off) {
	case VIRTIO_MMIO_MAGIC_VALUE: return VIRTIO_MMIO_MAGIC;
	case VIRTIO_MMIO_VERSION: return 2;
	case VIRTIO_MMIO_DEVICE_ID: return dev->device_id;
	case VIRTIO_MMIO_VENDOR_ID: return VIRTIO_MMIO_VENDOR;
	case VIRTIO_MMIO_DEVICE_FEATURES:
		return virtio_transport_device_features(dev, m->device_features_sel);
	case VIRTIO_MMIO_QUEUE_NUM_MAX: return vq ? VIRTQ_MAX_SIZE : 0;
	case VIRTIO_MMIO_QUEUE_READY: return vq ? vq->ready : 0;
	case VIRTIO_MMIO_INTERRUPT_STATUS: return m->interrupt_status;
	case VIRTIO_MMIO_STATUS: return dev->status;
	case VIRTIO_MMIO_CONFIG_GENERATION: return dev->config_generation;
	default: return 0; /* write-only or reserved */
	}
}

static int mmio_read(struct bus_region *region, uint64_t off, void *data, unsigned size)
{
	struct virtio_mmio *m = region->opaque;
	struct virtio_device *dev = m->dev;

	memset(data, 0, size);
	pthread_mutex_lock(&dev->lock);
	if (off >= VIRTIO_MMIO_CONFIG) {
		uint64_t coff = off - VIRTIO_MMIO_CONFIG;

		if (coff + size <= dev->config_size && dev->ops->config_read)
			dev->ops->config_read(dev, (uint32_t)coff, data, size);
	} else if (size == 4 && !(off & 3)) {
		uint32_t v = mmio_read_reg(m, off);

		memcpy(data, &v, 4);
	}
	pthread_mutex_unlock(&dev->lock);
	return 0;
}

static int mmio_write(struct bus_region *region, uint64_t off, const void *data, unsigned size)
{
	struct virtio_mmio *m = region->opaque;
	struct virtio_device *dev = m->dev;

	pthread_mutex_lock(&dev->lock);
	if (off >= VIRTIO_MMIO_CONFIG) {
		uint64_t coff = off - VIRTIO_MMIO_CONFIG;

		if (coff + size <= dev->config_size && dev->ops->config_write)
			dev->ops->config_write(dev, (uint32_t)coff, data, size);
	} else if (size == 4 && !(off & 3)) {
		uint32_t v;

		memcpy(&v, data, 4);
		mmio_write_reg(m, off, v);
	}
	pthread_mutex_unlock(&dev->lock);
	return 0;
}

static const struct bus_ops mmio_ops = { .read = mmio_read, .write = mmio_write };

int virtio_mmio_init(struct virtio_mmio *m, struct virtio_device *dev, uint64_t base, uint32_t irq,
		     const struct virtio_mmio_host *host, char *err, size_t errlen)
{
	memset(m, 0, sizeof(*m));
	m->dev = dev;
	m->host = *host;
	m->irq = irq;
	m->irqfd = -1;
	virtio_notifiers_clear(m->notify, VIRTIO_MMIO_MAX_QUEUES);
	if (dev->num_queues == 0 || dev->num_queues > VIRTIO_MMIO_MAX_QUEUES)
		return errmsg(-EINVAL, err, errlen, "%s: %u queues (1..%d)", dev->name,
			      dev->num_queues, VIRTIO_MMIO_MAX_QUEUES);
	dev->transport = m;
	dev->interrupt_used = mmio_interrupt_used;
	dev->interrupt_config = mmio_interrupt_config;
	virtio_transport_bind(dev);
	m->region = (struct bus_region){ .base = base, .len = VIRTIO_MMIO_WINDOW, .ops = &mmio_ops,
					 .opaque = m, .name = dev->name };
	snprintf(m->cmdline_arg, sizeof(m->cmdline_arg), "virtio_mmio.device=0x%x@0x%" PRIx64 ":%u",
		 VIRTIO_MMIO_WINDOW, base, irq);

	int r = virtio_notifiers_open(m->notify, dev, host->loop, err, errlen);

	if (r)
		return r;
	for (unsigned q = 0; host->vm_fd >= 0 && q < dev->num_queues; q++) {
		struct kvm_ioeventfd io = {
			.datamatch = q,
			.addr = base + VIRTIO_MMIO_QUEUE_NOTIFY,
			.len = 4,
			.fd = m->notify[q].src.fd,
			.flags = KVM_IOEVENTFD_FLAG_DATAMATCH,
		};

		if (ioctl(host->vm_fd, KVM_IOEVENTFD, &io) < 0)
			return errmsg(-errno, err, errlen, "%s: KVM_IOEVENTFD: %s", dev->name,
				      strerror(errno));
		m->ioeventfd_registered[q] = true;
	}
	if (host->vm_fd >= 0) {
		struct kvm_irqfd irqfd = { .gsi = irq };

		m->irqfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (m->irqfd < 0)
			return errmsg(-errno, err, errlen, "%s: eventfd: %s", dev->name, strerror(errno));
		irqfd.fd = (uint32_t)m->irqfd;
		if (ioctl(host->vm_fd, KVM_IRQFD, &irqfd) < 0) {
			/* Fall back to KVM_IRQ_LINE pulses from mmio_raise(). */
			log_warn("%s: KVM_IRQFD: %s; raising IRQ %u by ioctl", dev->name,
				 strerror(errno), irq);
			close(m->irqfd);
			m->irqfd = -1;
		}
	}
	return 0;
}

void virtio_mmio_exit(struct virtio_mmio *m)
{
	if (!m->dev)
		return;
	for (unsigned q = 0; q < VIRTIO_MMIO_MAX_QUEUES; q++) {
		if (m->notify[q].src.fd < 0 || !m->ioeventfd_registered[q])
			continue;
		struct kvm_ioeventfd io = {
			.datamatch = q,
			.addr = m->region.base + VIRTIO_MMIO_QUEUE_NOTIFY,
			.len = 4,
			.fd = m->notify[q].src.fd,
			.flags = KVM_IOEVENTFD_FLAG_DATAMATCH | KVM_IOEVENTFD_FLAG_DEASSIGN,
		};

		(void)!ioctl(m->host.vm_fd, KVM_IOEVENTFD, &io);
	}
	virtio_notifiers_close(m->notify, VIRTIO_MMIO_MAX_QUEUES, m->host.loop, m->quiesced);
	if (m->irqfd >= 0) {
		struct kvm_irqfd irqfd = { .fd = (uint32_t)m->irqfd, .gsi = m->irq,
					   .flags = KVM_IRQFD_FLAG_DEASSIGN };

		(void)!ioctl(m->host.vm_fd, KVM_IRQFD, &irqfd);
		close(m->irqfd);
		m->irqfd = -1;
	}
	m->dev = NULL;
}

/* ---- quiesce, resume, state ---- */

#define VIRTIO_MMIO_STATE_VERSION 1

void virtio_mmio_quiesce(struct virtio_mmio *m)
{
	if (m->quiesced || !m->host.loop)
		return;
	virtio_notifiers_quiesce(m->notify, m->dev, m->host.loop);
	m->quiesced = true;
}

void virtio_mmio_resume(struct virtio_mmio *m)
{
	bool was_quiesced = m->quiesced;

	m->quiesced = false;
	virtio_notifiers_resume(m->notify, m->dev, m->host.loop, was_quiesced);
}

void virtio_mmio_save(struct virtio_mmio *m, struct state_writer *w, const char *kind)
{
	char node[STATE_PATH_MAX];

	snprintf(node, sizeof(node), "/devices/%s@%" PRIx64, kind, m->region.base);
	pthread_mutex_lock(&m->dev->lock);
	state_begin(w, VIRTIO_MMIO_STATE_VERSION, "%s", node);
	state_put_str(w, "transport", "virtio-mmio");
	state_put_u64(w, "base", m->region.base);
	state_put_u32(w, "irq", m->irq);
	state_put_u32(w, "device-features-sel", m->device_features_sel);
	state_put_u32(w, "driver-features-sel", m->driver_features_sel);
	state_put_u32(w, "queue-sel", m->queue_sel);
	state_put_u32(w, "interrupt-status", m->interrupt_status);
	virtio_device_save(m->dev, w, node);
	pthread_mutex_unlock(&m->dev->lock);
}

int virtio_mmio_load(struct virtio_mmio *m, struct state_reader *r, const char *kind)
{
	char node[STATE_PATH_MAX], transport[16];
	uint64_t base;
	uint32_t irq, dsel, drsel, qsel, isr;
	int n, e;

	snprintf(node, sizeof(node), "/devices/%s@%" PRIx64, kind, m->region.base);
	n = state_node(r, true, "%s", node);
	if (state_version(r, n, 1, VIRTIO_MMIO_STATE_VERSION) < 0)
		return r->err;
	state_get_str(r, n, "transport", transport, sizeof(transport));
	state_get_u64(r, n, "base", &base);
	state_get_u32(r, n, "irq", &irq);
	state_get_u32(r, n, "device-features-sel", &dsel);
	state_get_u32(r, n, "driver-features-sel", &drsel);
	state_get_u32(r, n, "queue-sel", &qsel);
	state_get_u32_range(r, n, "interrupt-status", 0,
			    VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG, &isr);
	if (r->err)
		return r->err;
	/* Placement is part of the machine's shape: checked, never re-derived. */
	if (strcmp(transport, "virtio-mmio") || base != m->region.base || irq != m->irq)
		return state_reject(r, -EINVAL, "state: %s: saved as %s at 0x%llx IRQ %u, built at 0x%llx IRQ %u",
				    node, transport, (unsigned long long)base, irq,
				    (unsigned long long)m->region.base, m->irq);
	pthread_mutex_lock(&m->dev->lock);
	e = virtio_device_load(m->dev, r, node);
	if (!e) {
		m->device_features_sel = dsel;
		m->driver_features_sel = drsel;
		m->queue_sel = qsel;
		m->interrupt_status = isr;
	}
	pthread_mutex_unlock(&m->dev->lock);
	return e;
}

int virtio_mmio_activate_loaded(struct virtio_mmio *m)
{
	return virtio_transport_activate_loaded(m->dev);
}

// SPDX-License-Identifier: MIT
/*
 * What virtio 1.2 says about device status, feature negotiation and queue
 * enabling, in one place for every transport (vmrun/virtio_transport.h).
 * The transports only decode their registers and call in here.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "vmrun/log.h"
#include "vmrun/virtio_transport.h"

void virtio_transport_needs_reset(struct virtio_device *dev, const char *why)
{
	if (dev->status & VIRTIO_STATUS_NEEDS_RESET)
		return;
	log_warn("%s: %s: the device needs a reset by its driver", dev->name, why);
	dev->status |= VIRTIO_STATUS_NEEDS_RESET;
	if ((dev->status & VIRTIO_STATUS_DRIVER_OK) && dev->interrupt_config)
		dev->interrupt_config(dev);
}

void virtio_transport_bind(struct virtio_device *dev)
{
	dev->needs_reset = virtio_transport_needs_reset;
}

/* Status 0 written: back to the state after power-on (section 2.4). */
static void transport_reset(struct virtio_device *dev)
{
	if (dev->ops->reset)
		dev->ops->reset(dev);
	for (unsigned q = 0; q < dev->num_queues; q++)
		virtq_reset(&dev->vqs[q]);
	dev->status = 0;
	dev->driver_features = 0;
}

bool virtio_transport_write_status(struct virtio_device *dev, uint8_t val)
{
	uint8_t old = dev->status, new = val;
	char why[160];

	if (new == 0) {
		transport_reset(dev);
		return true;
	}
	/* The driver only adds bits (section 3.1.1); NEEDS_RESET is ours. */
	new |= old & VIRTIO_STATUS_NEEDS_RESET;
	if ((new & VIRTIO_STATUS_FEATURES_OK) && !(old & VIRTIO_STATUS_FEATURES_OK)) {
		if (virtio_features_check(dev->features, dev->driver_features, dev->deps, dev->n_deps,
					  why, sizeof(why)) < 0) {
			/* FEATURES_OK stays clear: the driver reads it back and gives up. */
			log_warn("%s: driver features refused: %s", dev->name, why);
			new &= (uint8_t)~VIRTIO_STATUS_FEATURES_OK;
		}
	}
	dev->status = new;
	if ((new & VIRTIO_STATUS_DRIVER_OK) && !(old & VIRTIO_STATUS_DRIVER_OK)) {
		if (!(new & VIRTIO_STATUS_FEATURES_OK)) {
			virtio_transport_needs_reset(dev, "DRIVER_OK without FEATURES_OK");
			return false;
		}
		if (dev->ops->activate && dev->ops->activate(dev) < 0)
			virtio_transport_needs_reset(dev, "the device failed to start");
	}
	return false;
}

void virtio_transport_write_driver_features(struct virtio_device *dev, uint32_t sel, uint32_t val)
{
	/* Only while negotiating (after DRIVER, before FEATURES_OK). */
	if ((dev->status & VIRTIO_STATUS_FEATURES_OK) || !(dev->status & VIRTIO_STATUS_DRIVER) ||
	    sel > 1)
		return;
	if (sel)
		dev->driver_features = (dev->driver_features & 0xffffffffull) | ((uint64_t)val << 32);
	else
		dev->driver_features = (dev->driver_features & ~0xffffffffull) | val;
}

uint32_t virtio_transport_device_features(const struct virtio_device *dev, uint32_t sel)
{
	return sel == 0 ? (uint32_t)dev->features :
	       sel == 1 ? (uint32_t)(dev->features >> 32) : 0;
}

void virtio_transport_queue_ready(struct virtio_device *dev, unsigned q, uint32_t val)
{
	struct virtq *vq;

	if (q >= dev->num_queues)
		return;
	vq = &dev->vqs[q];
	if (!val) {
		if (vq->ready && dev->ops->queue_disable)
			dev->ops->queue_disable(dev, q);
		vq->ready = false;
		return;
	}
	if (vq->ready)
		return;
	vq->event_idx = dev->driver_features & VIRTIO_BIT(VIRTIO_F_EVENT_IDX);
	vq->indirect = dev->driver_features & VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC);
	if (virtq_enable(vq) < 0)
		virtio_transport_needs_reset(dev, "a queue's size or ring addresses are invalid");
}

void virtio_transport_set_half(struct virtq *vq, uint64_t *addr, bool high, uint32_t val)
{
	if (!vq || !addr || vq->ready)
		return;
	if (high)
		*addr = (*addr & 0xffffffffull) | ((uint64_t)val << 32);
	else
		*addr = (*addr & ~0xffffffffull) | val;
}

bool virtio_transport_may_notify(const struct virtio_device *dev, unsigned q)
{
	return q < dev->num_queues && (dev->status & VIRTIO_STATUS_DRIVER_OK) &&
	       !(dev->status & VIRTIO_STATUS_NEEDS_RESET) && dev->vqs[q].ready &&
	       dev->ops->queue_notify && virtio_device_dma_allowed(dev);
}

int virtio_transport_activate_loaded(struct virtio_device *dev)
{
	int r = 0;

	pthread_mutex_lock(&dev->lock);
	if ((dev->status & VIRTIO_STATUS_DRIVER_OK) && !(dev->status & VIRTIO_STATUS_NEEDS_RESET) &&
	    dev->ops->activate)
		r = dev->ops->activate(dev);
	pthread_mutex_unlock(&dev->lock);
	return r;
}

/* ---- queue notifiers ---- */

/* A queue's eventfd fired (event loop thread). */
static void on_queue_notify(struct ev_source *src, uint32_t events)
{
	struct virtio_notifier *n = src->opaque;
	struct virtio_device *dev = n->dev;
	uint64_t count;

	(void)events;
	if (read(src->fd, &count, sizeof(count)) < 0)
		return;
	pthread_mutex_lock(&dev->lock);
	if (virtio_transport_may_notify(dev, n->q))
		dev->ops->queue_notify(dev, n->q);
	pthread_mutex_unlock(&dev->lock);
}

void virtio_notifiers_clear(struct virtio_notifier *n, unsigned count)
{
	for (unsigned q = 0; q < count; q++)
		n[q].src.fd = -1;
}

int virtio_notifiers_open(struct virtio_notifier *n, struct virtio_device *dev,
			  struct evloop *loop, char *err, size_t errlen)
{
	for (unsigned q = 0; q < dev->num_queues; q++) {
		int r;

		n[q] = (struct virtio_notifier){ .dev = dev, .q = q };
		n[q].src = (struct ev_source){ .handler = on_queue_notify, .opaque = &n[q] };
		n[q].src.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (n[q].src.fd < 0)
			return errmsg(-errno, err, errlen, "%s: eventfd: %s", dev->name, strerror(errno));
		if (loop && (r = evloop_add(loop, &n[q].src, EPOLLIN)) < 0) {
			close(n[q].src.fd);
			n[q].src.fd = -1;
			return errmsg(r, err, errlen, "%s: epoll: %s", dev->name, strerror(-r));
		}
	}
	return 0;
}

void virtio_notifiers_quiesce(struct virtio_notifier *n, const struct virtio_device *dev,
			      struct evloop *loop)
{
	for (unsigned q = 0; loop && q < dev->num_queues; q++)
		if (n[q].src.fd >= 0)
			evloop_remove(loop, &n[q].src);
}

void virtio_notifiers_resume(struct virtio_notifier *n, const struct virtio_device *dev,
			     struct evloop *loop, bool was_quiesced)
{
	for (unsigned q = 0; was_quiesced && loop && q < dev->num_queues; q++)
		if (n[q].src.fd >= 0 && evloop_add(loop, &n[q].src, EPOLLIN) < 0)
			log_warn("%s: epoll: %s", dev->name, strerror(errno));
	for (unsigned q = 0; q < dev->num_queues; q++)
		if (dev->vqs[q].ready)
			virtio_notifier_kick(&n[q]);
}

void virtio_notifier_kick(struct virtio_notifier *n)
{
	uint64_t one = 1;

	if (n->src.fd >= 0 && write(n->src.fd, &one, sizeof(one)) < 0)
		log_warn("%s: queue notify: %s", n->dev ? n->dev->name : "virtio", strerror(errno));
}

void virtio_notifiers_close(struct virtio_notifier *n, unsigned count, struct evloop *loop,
			    bool quiesced)
{
	for (unsigned q = 0; q < count; q++) {
		if (n[q].src.fd < 0)
			continue;
		if (loop && !quiesced)
			evloop_remove(loop, &n[q].src);
		close(n[q].src.fd);
		n[q].src.fd = -1;
	}
}

// SPDX-License-Identifier: MIT
/*
 * virtio device and virtqueue state in the state stream
 * (include/vmrun/state.h): what both transports share.  A transport saves
 * its own registers beside these (virtio_mmio_save()).
 *
 * On load nothing from the stream is trusted: the status must be one a
 * driver can reach, the accepted features a subset of what this device
 * offers, every ready queue's size and rings pass the same checks as when
 * the driver enabled it (virtq_enable()), and its indices are kept as they
 * were, since the driver has consumed up to them.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "vmrun/state.h"
#include "vmrun/virtio.h"

#define VIRTIO_STATE_VERSION 1

void virtio_device_save(struct virtio_device *dev, struct state_writer *w, const char *node)
{
	/* The caller holds dev->lock and has begun @node. */
	state_put_u32(w, "device-id", dev->device_id);
	state_put_u64(w, "device-features", dev->features);
	state_put_u64(w, "driver-features", dev->driver_features);
	state_put_u32(w, "status", dev->status);
	state_put_u32(w, "config-generation", dev->config_generation);
	state_put_u32(w, "num-queues", dev->num_queues);
	for (unsigned q = 0; q < dev->num_queues; q++) {
		const struct virtq *vq = &dev->vqs[q];

		state_begin(w, VIRTIO_STATE_VERSION, "%s/queue@%u", node, q);
		state_put_u32(w, "size", vq->size);
		state_put_u64(w, "desc", vq->desc_gpa);
		state_put_u64(w, "avail", vq->avail_gpa);
		state_put_u64(w, "used", vq->used_gpa);
		state_put_u32(w, "ready", vq->ready);
		state_put_u32(w, "event-idx", vq->event_idx);
		state_put_u32(w, "indirect", vq->indirect);
		state_put_u32(w, "last-avail-idx", vq->last_avail_idx);
		state_put_u32(w, "used-idx", vq->used_idx);
		state_put_u32(w, "signalled-used", vq->signalled_used);
		state_put_u32(w, "signalled-used-valid", vq->signalled_used_valid);
		state_put_u32(w, "notify-disabled", vq->notify_disabled);
	}
}

/* Load queue @q of @dev from @qnode. */
static int load_queue(struct virtio_device *dev, struct state_reader *r, int qnode, unsigned q)
{
	struct virtq *vq = &dev->vqs[q], n = { .mem = vq->mem };
	uint32_t size, ready, ev, ind, last, used, sig, sigv, nd;

	if (state_version(r, qnode, 1, VIRTIO_STATE_VERSION) < 0)
		return r->err;
	state_get_u32_range(r, qnode, "size", 0, VIRTQ_MAX_SIZE, &size);
	state_get_u64(r, qnode, "desc", &n.desc_gpa);
	state_get_u64(r, qnode, "avail", &n.avail_gpa);
	state_get_u64(r, qnode, "used", &n.used_gpa);
	state_get_u32_range(r, qnode, "ready", 0, 1, &ready);
	state_get_u32_range(r, qnode, "event-idx", 0, 1, &ev);
	state_get_u32_range(r, qnode, "indirect", 0, 1, &ind);
	state_get_u32_range(r, qnode, "last-avail-idx", 0, 0xffff, &last);
	state_get_u32_range(r, qnode, "used-idx", 0, 0xffff, &used);
	state_get_u32_range(r, qnode, "signalled-used", 0, 0xffff, &sig);
	state_get_u32_range(r, qnode, "signalled-used-valid", 0, 1, &sigv);
	state_get_u32_range(r, qnode, "notify-disabled", 0, 1, &nd);
	if (r->err)
		return r->err;
	n.size = (uint16_t)size;
	if ((ev && !(dev->driver_features & VIRTIO_BIT(VIRTIO_F_EVENT_IDX))) ||
	    (ind && !(dev->driver_features & VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC))))
		return state_reject(r, -EINVAL, "state: %s queue %u uses a feature the driver did not accept",
				    dev->name, q);
	if (ready) {
		/* The checks the driver's QueueReady went through. */
		if (virtq_enable(&n) < 0)
			return state_reject(r, -EINVAL, "state: %s queue %u: size or rings outside guest RAM",
					    dev->name, q);
		/* The driver has seen used entries up to used_idx; it cannot
		 * have had more than a ring's worth consumed but unused. */
		if ((uint16_t)(last - used) > n.size)
			return state_reject(r, -EINVAL, "state: %s queue %u: %u chains in flight, the ring holds %u",
					    dev->name, q, (uint16_t)(last - used), n.size);
	}
	n.event_idx = ev;
	n.indirect = ind;
	n.last_avail_idx = (uint16_t)last;
	n.used_idx = (uint16_t)used;
	n.signalled_used = (uint16_t)sig;
	n.signalled_used_valid = sigv;
	n.notify_disabled = nd;
	*vq = n;
	return 0;
}

int virtio_device_load(struct virtio_device *dev, struct state_reader *r, const char *path)
{
	int node = state_node(r, true, "%s", path);
	uint32_t id, status, gen, nq;
	uint64_t offered, accepted;

	if (state_version(r, node, 1, VIRTIO_STATE_VERSION) < 0)
		return r->err;
	state_get_u32(r, node, "device-id", &id);
	state_get_u64(r, node, "device-features", &offered);
	state_get_u64(r, node, "driver-features", &accepted);
	state_get_u32_range(r, node, "status", 0, 0xff, &status);
	state_get_u32(r, node, "config-generation", &gen);
	state_get_u32(r, node, "num-queues", &nq);
	if (r->err)
		return r->err;
	if (id != dev->device_id || nq != dev->num_queues)
		return state_reject(r, -EINVAL, "state: %s: saved device %u with %u queues, this one is %u with %u",
				    dev->name, id, nq, dev->device_id, dev->num_queues);
	if (accepted & ~dev->features)
		return state_reject(r, -EINVAL, "state: %s: the driver accepted features 0x%llx this device does not offer",
				    dev->name, (unsigned long long)(accepted & ~dev->features));
	if (offered != dev->features)
		return state_reject(r, -EINVAL, "state: %s: saved with features 0x%llx, this vmrun offers 0x%llx",
				    dev->name, (unsigned long long)offered,
				    (unsigned long long)dev->features);
	if ((status & VIRTIO_STATUS_DRIVER_OK) && !(status & VIRTIO_STATUS_FEATURES_OK))
		return state_reject(r, -EINVAL, "state: %s: DRIVER_OK without FEATURES_OK", dev->name);
	dev->driver_features = accepted;
	for (unsigned q = 0; q < dev->num_queues; q++) {
		int qnode;

		qnode = state_node(r, true, "%s/queue@%u", path, q);
		if (qnode < 0 || load_queue(dev, r, qnode, q))
			return r->err;
	}
	dev->status = (uint8_t)status;
	dev->config_generation = gen;
	return 0;
}

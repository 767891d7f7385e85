/* The virtio device-status and feature rules every transport shares
 * (src/virtio/transport.c): virtio-mmio (vmrun/virtio_mmio.h) and
 * virtio-pci (vmrun/virtio_pci.h) decode their own registers and call these
 * for what the specification says about status, features and queue
 * enabling (virtio 1.2, sections 2.1, 2.2, 3.1), so the two transports
 * cannot drift apart.
 *
 * Every function here runs with dev->lock held by the caller (a vCPU
 * thread writing a register, or the event loop). */
#ifndef VMRUN_VIRTIO_TRANSPORT_H
#define VMRUN_VIRTIO_TRANSPORT_H

#include <stdbool.h>
#include <stdint.h>

#include "vmrun/virtio.h"

/* Install the shared needs_reset callback in @dev (the transport sets its
 * own interrupt_used/interrupt_config and dev->transport first). */
void virtio_transport_bind(struct virtio_device *dev);

/* Set NEEDS_RESET (once, with a warning naming @why) and, when the driver
 * runs the device, raise a configuration interrupt through
 * dev->interrupt_config.  What dev->needs_reset points at. */
void virtio_transport_needs_reset(struct virtio_device *dev, const char *why);

/* The driver wrote @val to the device status.  0 resets the device (ops->reset,
 * every queue reset, status and accepted features cleared) and returns
 * true: the caller then clears its own registers.  Otherwise the driver
 * only adds bits; FEATURES_OK is refused (left clear) when the accepted
 * features fail virtio_features_check(); DRIVER_OK without FEATURES_OK, or
 * a device whose activate fails, gets NEEDS_RESET.  Returns false. */
bool virtio_transport_write_status(struct virtio_device *dev, uint8_t val);

/* The driver wrote 32 bits @val of its accepted features, word @sel (0: bits
 * 0-31, 1: 32-63).  Ignored outside negotiation (before DRIVER or after
 * FEATURES_OK) and for @sel > 1. */
void virtio_transport_write_driver_features(struct virtio_device *dev, uint32_t sel, uint32_t val);

/* Word @sel of the offered features (0 for @sel > 1). */
uint32_t virtio_transport_device_features(const struct virtio_device *dev, uint32_t sel);

/* The driver wrote @val to queue @q's enable/ready register (@q <
 * dev->num_queues).  0 takes the queue out of service (ops->queue_disable);
 * non-zero checks and enables it (virtq_enable) with the negotiated ring
 * features, or sets NEEDS_RESET when its size or rings are invalid. */
void virtio_transport_queue_ready(struct virtio_device *dev, unsigned q, uint32_t val);

/* Set the low (@high false) or high 32 bits of one of @vq's ring addresses
 * @addr; ignored while the queue is ready (or @vq is NULL). */
void virtio_transport_set_half(struct virtq *vq, uint64_t *addr, bool high, uint32_t val);

/* Whether a notification for queue @q may reach the device model now:
 * DRIVER_OK, no NEEDS_RESET, the queue ready. */
bool virtio_transport_may_notify(const struct virtio_device *dev, unsigned q);

/* After a state load: a device the driver had started (DRIVER_OK, no
 * NEEDS_RESET) is activated again.  Takes dev->lock itself.  0 or -errno. */
int virtio_transport_activate_loaded(struct virtio_device *dev)
	__attribute__((warn_unused_result));

#endif

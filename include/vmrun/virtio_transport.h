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
#include <stddef.h>
#include <stdint.h>

#include "vmrun/evloop.h"
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
 * DRIVER_OK, no NEEDS_RESET, the queue ready, and the transport allowing
 * memory accesses (virtio_device_dma_allowed()).  A notification refused
 * for the last reason alone is not lost: the transport kicks every ready
 * queue when it allows them again. */
bool virtio_transport_may_notify(const struct virtio_device *dev, unsigned q);

/* After a state load: a device the driver had started (DRIVER_OK, no
 * NEEDS_RESET) is activated again.  Takes dev->lock itself.  0 or -errno. */
int virtio_transport_activate_loaded(struct virtio_device *dev)
	__attribute__((warn_unused_result));

/* A queue's notification eventfd (which the transport also registers with
 * KVM as an ioeventfd) and its source on the event loop.  The event loop
 * reads it and, when virtio_transport_may_notify() allows, calls
 * dev->ops->queue_notify under dev->lock.  Both transports keep an array of
 * these, one per queue. */
struct virtio_notifier {
	struct ev_source src; /* src.fd: the eventfd, or -1 when not open */
	struct virtio_device *dev;
	unsigned q;
};

/* Mark @count notifiers not open (fd -1), so that a failed set-up can be
 * undone with virtio_notifiers_close(). */
void virtio_notifiers_clear(struct virtio_notifier *n, unsigned count);

/* Open one notifier per queue of @dev in n[0 .. dev->num_queues) and add
 * each to @loop (NULL: no loop, as in unit tests).  0, or -errno with a
 * message in @err; what was opened stays for virtio_notifiers_close(). */
int virtio_notifiers_open(struct virtio_notifier *n, struct virtio_device *dev,
			  struct evloop *loop, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Take @dev's notifiers out of @loop: a notification that arrives meanwhile
 * stays counted in its eventfd and fires once resumed. */
void virtio_notifiers_quiesce(struct virtio_notifier *n, const struct virtio_device *dev,
			      struct evloop *loop);

/* Put @dev's notifiers back into @loop when @was_quiesced (and @loop is
 * set), then kick every ready queue once: chains handed back by a quiesce,
 * and those a restored guest posted before its save, get no other
 * notification. */
void virtio_notifiers_resume(struct virtio_notifier *n, const struct virtio_device *dev,
			     struct evloop *loop, bool was_quiesced);

/* Signal notifier @n as the guest's notification would (the register write
 * path when no ioeventfd caught it).  Ignored when it is not open. */
void virtio_notifier_kick(struct virtio_notifier *n);

/* Close the open notifiers among n[0 .. @count), first removing each from
 * @loop unless @loop is NULL or they are out of it (@quiesced). */
void virtio_notifiers_close(struct virtio_notifier *n, unsigned count, struct evloop *loop,
			    bool quiesced);

#endif

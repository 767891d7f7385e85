/* A fake virtio device model for the transport unit tests (virtio-mmio and
 * virtio-pci): two queues and 12 bytes of configuration, recording what the
 * transport asked of it.  A notification also stops the event loop it was
 * given, so a test can run the loop until the transport delivers one. */
#ifndef VMRUN_TEST_VIRTIO_FAKE_H
#define VMRUN_TEST_VIRTIO_FAKE_H

#include "unit.h"

#include <string.h>

#include "vmrun/evloop.h"
#include "vmrun/virtio.h"

struct fake {
	struct virtio_device dev;
	struct virtq vqs[2];
	uint8_t config[12];
	int activated, resets, notified[2];
	struct evloop *loop;
};

static inline void fake_config_read(struct virtio_device *dev, uint32_t off, void *data,
				    unsigned size)
{
	struct fake *f = dev->opaque;

	assert_true(off + size <= sizeof(f->config)); /* the transport bounds it */
	memcpy(data, f->config + off, size);
}

static inline int fake_activate(struct virtio_device *dev)
{
	((struct fake *)dev->opaque)->activated++;
	return 0;
}

static inline void fake_notify(struct virtio_device *dev, unsigned q)
{
	struct fake *f = dev->opaque;

	f->notified[q]++;
	f->loop->stop = true;
}

static inline void fake_reset(struct virtio_device *dev)
{
	((struct fake *)dev->opaque)->resets++;
}

static const struct virtio_device_ops fake_ops __attribute__((unused)) = {
	.config_read = fake_config_read,
	.activate = fake_activate,
	.queue_notify = fake_notify,
	.reset = fake_reset,
};

#endif

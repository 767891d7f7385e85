/* The driver side of a virtio-mmio transport for unit tests: 32-bit
 * register accesses through the transport's own window, as a guest's MMIO
 * would make them, and the negotiation of section 3.1.1. */
#ifndef VMRUN_TEST_VIRTIO_DRIVER_H
#define VMRUN_TEST_VIRTIO_DRIVER_H

#include "unit.h"

#include "vmrun/virtio.h"
#include "vmrun/virtio_mmio.h"

static inline uint32_t mmio_rd(struct virtio_mmio *m, uint64_t off)
{
	uint32_t v = 0xdeadbeef;

	assert_int_equal(m->region.ops->read(&m->region, off, &v, 4), 0);
	return v;
}

static inline void mmio_wr(struct virtio_mmio *m, uint64_t off, uint32_t v)
{
	assert_int_equal(m->region.ops->write(&m->region, off, &v, 4), 0);
}

/* Reset, then up to FEATURES_OK with @features; returns the status the
 * device shows afterwards. */
static inline uint32_t mmio_negotiate(struct virtio_mmio *m, uint64_t features)
{
	mmio_wr(m, VIRTIO_MMIO_STATUS, 0);
	mmio_wr(m, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
	mmio_wr(m, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	mmio_wr(m, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	mmio_wr(m, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)features);
	mmio_wr(m, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	mmio_wr(m, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(features >> 32));
	mmio_wr(m, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
					       VIRTIO_STATUS_FEATURES_OK);
	return mmio_rd(m, VIRTIO_MMIO_STATUS);
}

#endif

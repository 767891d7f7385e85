/* The virtio-mmio transport's registers (src/virtio/mmio.c) against virtio
 * 1.2 section 4.2, with a fake device model that records what the transport
 * asked of it.  No KVM: notifications travel through the transport's
 * eventfds and a real event loop. */
#include "unit.h"
#include "virtio_driver.h"
#include "virtio_fake.h"
#include <stdbool.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include "vmrun/evloop.h"
#include "vmrun/guest_mem.h"
#include "vmrun/virtio_mmio.h"

#define MiB (1ull << 20)
#define BASE 0xd0000000ull

struct rig {
	struct guest_mem gm;
	struct evloop loop;
	struct fake f;
	struct virtio_mmio m;
};

static uint32_t rd(struct rig *r, uint64_t off)
{
	return mmio_rd(&r->m, off);
}

static void wr(struct rig *r, uint64_t off, uint32_t v)
{
	mmio_wr(&r->m, off, v);
}

static int setup(void **state)
{
	struct rig *r = calloc(1, sizeof(*r));
	struct virtio_mmio_host host;
	char err[200];

	assert_non_null(r);
	assert_int_equal(guest_mem_init(&r->gm, 16 * MiB), 0);
	assert_int_equal(evloop_init(&r->loop), 0);
	for (unsigned i = 0; i < sizeof(r->f.config); i++)
		r->f.config[i] = (uint8_t)(0xa0 + i);
	r->f.loop = &r->loop;
	r->f.vqs[0].mem = r->f.vqs[1].mem = &r->gm;
	r->f.dev = (struct virtio_device){
		.name = "fake0", .device_id = 42,
		.features = VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_F_EVENT_IDX) | 0x5,
		.config_size = sizeof(r->f.config), .num_queues = 2, .vqs = r->f.vqs,
		.ops = &fake_ops, .opaque = &r->f,
	};
	pthread_mutex_init(&r->f.dev.lock, NULL);
	host = (struct virtio_mmio_host){ .vm_fd = -1, .loop = &r->loop };
	assert_int_equal(virtio_mmio_init(&r->m, &r->f.dev, BASE, 5, &host, err, sizeof(err)), 0);
	*state = r;
	return 0;
}

static int teardown(void **state)
{
	struct rig *r = *state;

	virtio_mmio_exit(&r->m);
	evloop_exit(&r->loop);
	guest_mem_exit(&r->gm);
	pthread_mutex_destroy(&r->f.dev.lock);
	free(r);
	return 0;
}

/* The driver side of section 3.1.1 up to FEATURES_OK with @features. */
static void negotiate(struct rig *r, uint64_t features)
{
	(void)mmio_negotiate(&r->m, features);
}

/* Queue @q with 8 entries at valid, aligned addresses in RAM. */
static void setup_queue(struct rig *r, unsigned q, uint64_t at)
{
	wr(r, VIRTIO_MMIO_QUEUE_SEL, q);
	wr(r, VIRTIO_MMIO_QUEUE_NUM, 8);
	wr(r, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)at);
	wr(r, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(at >> 32));
	wr(r, VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)(at + 0x1000));
	wr(r, VIRTIO_MMIO_QUEUE_DRIVER_HIGH, 0);
	wr(r, VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)(at + 0x2000));
	wr(r, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, 0);
	wr(r, VIRTIO_MMIO_QUEUE_READY, 1);
}

static void test_identity_and_features(void **state)
{
	struct rig *r = *state;

	assert_int_equal(rd(r, VIRTIO_MMIO_MAGIC_VALUE), 0x74726976); /* "virt" */
	assert_int_equal(rd(r, VIRTIO_MMIO_VERSION), 2);
	assert_int_equal(rd(r, VIRTIO_MMIO_DEVICE_ID), 42);
	wr(r, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	assert_int_equal(rd(r, VIRTIO_MMIO_DEVICE_FEATURES), (1u << VIRTIO_F_EVENT_IDX) | 0x5);
	wr(r, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
	assert_int_equal(rd(r, VIRTIO_MMIO_DEVICE_FEATURES), 1); /* bit 32: VERSION_1 */
	wr(r, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
	assert_int_equal(rd(r, VIRTIO_MMIO_DEVICE_FEATURES), 0);
	assert_string_equal(r->m.cmdline_arg, "virtio_mmio.device=0x200@0xd0000000:5");
	/* Registers are 32-bit: a byte read of the magic reads nothing. */
	{
		uint8_t b = 0x77;

		assert_int_equal(r->m.region.ops->read(&r->m.region, 0, &b, 1), 0);
		assert_int_equal(b, 0);
	}
}

static void test_feature_negotiation(void **state)
{
	struct rig *r = *state;

	/* Without VERSION_1 the device refuses: FEATURES_OK reads back clear. */
	negotiate(r, 0x5);
	assert_int_equal(rd(r, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK, 0);
	/* A bit the device did not offer: refused too. */
	negotiate(r, VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(3));
	assert_int_equal(rd(r, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK, 0);
	negotiate(r, VIRTIO_BIT(VIRTIO_F_VERSION_1) | 0x1);
	assert_int_equal(rd(r, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK,
			 VIRTIO_STATUS_FEATURES_OK);
	assert_int_equal(r->f.dev.driver_features, VIRTIO_BIT(VIRTIO_F_VERSION_1) | 0x1);
	/* After FEATURES_OK the driver's features are frozen. */
	wr(r, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	wr(r, VIRTIO_MMIO_DRIVER_FEATURES, 0x5);
	assert_int_equal(r->f.dev.driver_features, VIRTIO_BIT(VIRTIO_F_VERSION_1) | 0x1);
}

static void test_queue_setup_and_notify(void **state)
{
	struct rig *r = *state;

	negotiate(r, VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_F_EVENT_IDX));
	wr(r, VIRTIO_MMIO_QUEUE_SEL, 1);
	assert_int_equal(rd(r, VIRTIO_MMIO_QUEUE_NUM_MAX), VIRTQ_MAX_SIZE);
	wr(r, VIRTIO_MMIO_QUEUE_SEL, 2); /* no such queue */
	assert_int_equal(rd(r, VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
	setup_queue(r, 1, 0x100000);
	assert_int_equal(rd(r, VIRTIO_MMIO_QUEUE_READY), 1);
	assert_true(r->f.vqs[1].ready);
	assert_true(r->f.vqs[1].event_idx);
	assert_int_equal(r->f.vqs[1].desc_gpa, 0x100000);
	/* Addresses of a ready queue do not change. */
	wr(r, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x200000);
	assert_int_equal(r->f.vqs[1].desc_gpa, 0x100000);
	wr(r, VIRTIO_MMIO_STATUS, rd(r, VIRTIO_MMIO_STATUS) | VIRTIO_STATUS_DRIVER_OK);
	assert_int_equal(r->f.activated, 1);

	/* QueueNotify with the queue index: the device hears of it on the loop. */
	wr(r, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
	assert_int_equal(r->f.notified[1], 0); /* not on the register write path */
	assert_int_equal(evloop_run(&r->loop), 0);
	assert_int_equal(r->f.notified[1], 1);
	assert_int_equal(r->f.notified[0], 0);
	/* An index past the queues is dropped. */
	wr(r, VIRTIO_MMIO_QUEUE_NOTIFY, 7);

	/* Interrupt status: set by the device, cleared by the driver's ack. */
	r->f.dev.interrupt_used(&r->f.dev, 1);
	r->f.dev.interrupt_config(&r->f.dev);
	assert_int_equal(rd(r, VIRTIO_MMIO_INTERRUPT_STATUS), 3);
	wr(r, VIRTIO_MMIO_INTERRUPT_ACK, 1);
	assert_int_equal(rd(r, VIRTIO_MMIO_INTERRUPT_STATUS), 2);
}

static void test_bad_queue_needs_reset(void **state)
{
	struct rig *r = *state;

	negotiate(r, VIRTIO_BIT(VIRTIO_F_VERSION_1));
	wr(r, VIRTIO_MMIO_STATUS, rd(r, VIRTIO_MMIO_STATUS) | VIRTIO_STATUS_DRIVER_OK);
	/* Rings past the end of 16 MiB of RAM. */
	setup_queue(r, 0, 0xfff000);
	assert_int_equal(rd(r, VIRTIO_MMIO_QUEUE_READY), 0);
	assert_int_equal(rd(r, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET,
			 VIRTIO_STATUS_NEEDS_RESET);
	/* The driver is told through a configuration interrupt. */
	assert_int_equal(rd(r, VIRTIO_MMIO_INTERRUPT_STATUS) & 2, 2);
	/* Size not a power of two: refused as well (after a reset). */
	wr(r, VIRTIO_MMIO_STATUS, 0);
	assert_int_equal(rd(r, VIRTIO_MMIO_STATUS), 0);
	negotiate(r, VIRTIO_BIT(VIRTIO_F_VERSION_1));
	wr(r, VIRTIO_MMIO_QUEUE_SEL, 0);
	wr(r, VIRTIO_MMIO_QUEUE_NUM, 6);
	wr(r, VIRTIO_MMIO_QUEUE_READY, 1);
	assert_int_equal(rd(r, VIRTIO_MMIO_QUEUE_READY), 0);
}

static void test_reset(void **state)
{
	struct rig *r = *state;

	negotiate(r, VIRTIO_BIT(VIRTIO_F_VERSION_1));
	setup_queue(r, 0, 0x100000);
	wr(r, VIRTIO_MMIO_STATUS, rd(r, VIRTIO_MMIO_STATUS) | VIRTIO_STATUS_DRIVER_OK);
	r->f.dev.interrupt_used(&r->f.dev, 0);
	r->f.resets = 0;
	wr(r, VIRTIO_MMIO_STATUS, 0);
	assert_int_equal(r->f.resets, 1);
	assert_int_equal(rd(r, VIRTIO_MMIO_STATUS), 0);
	assert_int_equal(rd(r, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
	assert_int_equal(rd(r, VIRTIO_MMIO_QUEUE_READY), 0);
	assert_false(r->f.vqs[0].ready);
	assert_int_equal(r->f.dev.driver_features, 0);
	/* DRIVER_OK without FEATURES_OK is a driver bug: NEEDS_RESET. */
	r->f.activated = 0;
	wr(r, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
				  VIRTIO_STATUS_DRIVER_OK);
	assert_int_equal(r->f.activated, 0);
	assert_int_equal(rd(r, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET,
			 VIRTIO_STATUS_NEEDS_RESET);
}

static void test_config_space(void **state)
{
	struct rig *r = *state;
	uint64_t q = 0;
	uint16_t h = 0;
	uint8_t b = 0;

	assert_int_equal(r->m.region.ops->read(&r->m.region, VIRTIO_MMIO_CONFIG + 4, &q, 8), 0);
	assert_int_equal(q, 0xabaaa9a8a7a6a5a4ull);
	assert_int_equal(r->m.region.ops->read(&r->m.region, VIRTIO_MMIO_CONFIG + 10, &h, 2), 0);
	assert_int_equal(h, 0xabaa);
	/* Past the end of the device's config: zeroes, no out-of-bounds read. */
	h = 0x1234;
	assert_int_equal(r->m.region.ops->read(&r->m.region, VIRTIO_MMIO_CONFIG + 11, &h, 2), 0);
	assert_int_equal(h, 0);
	b = 0x55;
	assert_int_equal(r->m.region.ops->read(&r->m.region, VIRTIO_MMIO_CONFIG + 0xff, &b, 1), 0);
	assert_int_equal(b, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_identity_and_features, setup, teardown),
		cmocka_unit_test_setup_teardown(test_feature_negotiation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_setup_and_notify, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_queue_needs_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_config_space, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The port/MMIO bus against include/vmrun/bus.h. */
#include "unit.h"

#include <errno.h>
#include <stdbool.h>

#include "vmrun/bus.h"

/* A fake device that records every access it sees. */
struct fake_dev {
	struct bus_region region;
	int calls_read, calls_write;
	uint64_t last_offset;
	unsigned last_size;
	uint8_t last_written[8];
	int read_result; /* what read() returns */
	uint8_t fill;    /* read() fills with fill, fill+1, ... */
};

static int fake_read(struct bus_region *region, uint64_t offset, void *data, unsigned size)
{
	struct fake_dev *d = region->opaque;

	d->calls_read++;
	d->last_offset = offset;
	d->last_size = size;
	for (unsigned i = 0; i < size; i++)
		((uint8_t *)data)[i] = (uint8_t)(d->fill + i);
	return d->read_result;
}

static int fake_write(struct bus_region *region, uint64_t offset, const void *data, unsigned size)
{
	struct fake_dev *d = region->opaque;

	d->calls_write++;
	d->last_offset = offset;
	d->last_size = size;
	memcpy(d->last_written, data, size > 8 ? 8 : size);
	return 0;
}

static const struct bus_ops fake_ops = { .read = fake_read, .write = fake_write };

static void fake_init(struct fake_dev *d, uint64_t base, uint64_t len)
{
	memset(d, 0, sizeof(*d));
	d->region = (struct bus_region){ .base = base, .len = len, .ops = &fake_ops, .opaque = d,
					 .name = "fake" };
	d->fill = 0x10;
}

static int reg(struct bus *bus, struct fake_dev *d, uint64_t base, uint64_t len)
{
	fake_init(d, base, len);
	return bus_register(bus, &d->region);
}

static void test_register_adjacent(void **state)
{
	struct bus bus;
	struct fake_dev a, b, c;

	bus_init(&bus, "port");
	assert_int_equal(reg(&bus, &a, 0x100, 0x8), 0);
	assert_int_equal(reg(&bus, &b, 0x108, 0x8), 0); /* right after a */
	assert_int_equal(reg(&bus, &c, 0xf8, 0x8), 0);  /* right before a */
	assert_int_equal(bus.n_regions, 3);
	assert_ptr_equal(bus_find(&bus, 0xf8), &c.region);
	assert_ptr_equal(bus_find(&bus, 0xff), &c.region);
	assert_ptr_equal(bus_find(&bus, 0x100), &a.region);
	assert_ptr_equal(bus_find(&bus, 0x107), &a.region);
	assert_ptr_equal(bus_find(&bus, 0x108), &b.region);
	assert_ptr_equal(bus_find(&bus, 0x10f), &b.region);
	assert_null(bus_find(&bus, 0xf7));
	assert_null(bus_find(&bus, 0x110));
	bus_exit(&bus);
}

static void test_register_overlaps(void **state)
{
	static const struct {
		uint64_t base, len;
	} clash[] = {
		{ 0x100, 0x10 },  /* identical */
		{ 0x100, 0x1 },   /* first byte */
		{ 0x10f, 0x1 },   /* last byte */
		{ 0x10f, 0x10 },  /* overlaps the tail */
		{ 0xf0, 0x11 },   /* overlaps the head by one byte */
		{ 0x104, 0x4 },   /* contained in an existing region */
		{ 0xf0, 0x40 },   /* contains an existing region */
		{ 0x1f0, 0x20 },  /* contains the head of the second region */
		{ 0x180, 0x100 }, /* contains the second region */
		{ 0x0, 0x1000 },  /* contains both */
		{ 0x10f, 0xf2 },  /* from the end of the first into the second */
	};
	struct bus bus;
	struct fake_dev a, b, n;

	bus_init(&bus, "port");
	assert_int_equal(reg(&bus, &a, 0x100, 0x10), 0);
	assert_int_equal(reg(&bus, &b, 0x200, 0x10), 0);
	for (size_t i = 0; i < ARRAY_LEN(clash); i++) {
		int r = reg(&bus, &n, clash[i].base, clash[i].len);

		if (r != -EEXIST)
			fail_msg("[0x%llx, +0x%llx): got %d, want -EEXIST",
				 (unsigned long long)clash[i].base, (unsigned long long)clash[i].len, r);
	}
	assert_int_equal(bus.n_regions, 2);
	/* The same region object twice is an overlap as well. */
	assert_int_equal(bus_register(&bus, &a.region), -EEXIST);
	/* The gap between them is still free. */
	assert_int_equal(reg(&bus, &n, 0x110, 0xf0), 0);
	assert_int_equal(bus.n_regions, 3);
	bus_exit(&bus);
}

static void test_register_invalid(void **state)
{
	struct bus bus;
	struct fake_dev d;

	bus_init(&bus, "mmio");
	assert_int_equal(reg(&bus, &d, 0x1000, 0), -EINVAL);
	assert_int_equal(reg(&bus, &d, UINT64_MAX - 0xf, 0x20), -EINVAL);  /* wraps */
	assert_int_equal(reg(&bus, &d, UINT64_MAX, 2), -EINVAL);
	assert_int_equal(reg(&bus, &d, 2, UINT64_MAX), -EINVAL);  /* one byte past 2^64 */
	assert_int_equal(bus.n_regions, 0);
	/* Ending exactly at the top of the address space does not wrap. */
	assert_int_equal(reg(&bus, &d, UINT64_MAX - 7, 8), 0);
	assert_ptr_equal(bus_find(&bus, UINT64_MAX), &d.region);
	assert_ptr_equal(bus_find(&bus, UINT64_MAX - 7), &d.region);
	assert_null(bus_find(&bus, UINT64_MAX - 8));
	bus_exit(&bus);
}

static void test_register_full(void **state)
{
	struct bus bus;
	static struct fake_dev devs[BUS_MAX_REGIONS + 1];

	bus_init(&bus, "port");
	/* Out of order, so insertion has to keep them sorted. */
	for (unsigned i = 0; i < BUS_MAX_REGIONS; i++) {
		unsigned slot = (i * 37) % BUS_MAX_REGIONS; /* 37 is coprime to 64 */

		assert_int_equal(reg(&bus, &devs[i], 0x1000 + slot * 0x10, 0x10), 0);
	}
	assert_int_equal(bus.n_regions, BUS_MAX_REGIONS);
	assert_int_equal(reg(&bus, &devs[BUS_MAX_REGIONS], 0x9000, 0x10), -ENOSPC);
	for (unsigned i = 0; i < BUS_MAX_REGIONS; i++) {
		unsigned slot = (i * 37) % BUS_MAX_REGIONS;
		uint64_t base = 0x1000 + slot * 0x10;

		assert_ptr_equal(bus_find(&bus, base), &devs[i].region);
		assert_ptr_equal(bus_find(&bus, base + 0xf), &devs[i].region);
	}
	assert_null(bus_find(&bus, 0xfff));
	assert_null(bus_find(&bus, 0x1000 + BUS_MAX_REGIONS * 0x10));
	bus_exit(&bus);
}

static void test_find_empty_bus(void **state)
{
	struct bus bus;

	bus_init(&bus, "port");
	assert_null(bus_find(&bus, 0));
	assert_null(bus_find(&bus, 0x3f8));
	assert_null(bus_find(&bus, UINT64_MAX));
	bus_exit(&bus);
}

static void test_dispatch_relative_offsets(void **state)
{
	struct bus bus;
	struct fake_dev pio, mmio;
	uint8_t buf[8];

	bus_init(&bus, "port");
	assert_int_equal(reg(&bus, &pio, 0x3f8, 8), 0);
	assert_int_equal(reg(&bus, &mmio, 0xd0000000, 0x1000), 0);

	memset(buf, 0, sizeof(buf));
	assert_true(bus_read(&bus, 0x3fa, buf, 1));
	assert_int_equal(pio.calls_read, 1);
	assert_int_equal(pio.last_offset, 2);
	assert_int_equal(pio.last_size, 1);
	assert_int_equal(buf[0], 0x10);

	assert_true(bus_read(&bus, 0x3f8, buf, 2));
	assert_int_equal(pio.last_offset, 0);
	assert_int_equal(pio.last_size, 2);
	assert_int_equal(buf[0], 0x10);
	assert_int_equal(buf[1], 0x11);

	assert_true(bus_read(&bus, 0x3fc, buf, 4)); /* exactly the last 4 bytes */
	assert_int_equal(pio.last_offset, 4);
	assert_int_equal(pio.last_size, 4);

	{
		const uint8_t v[4] = { 0xde, 0xad, 0xbe, 0xef };

		assert_true(bus_write(&bus, 0x3ff, v, 1));
		assert_int_equal(pio.calls_write, 1);
		assert_int_equal(pio.last_offset, 7);
		assert_int_equal(pio.last_size, 1);
		assert_int_equal(pio.last_written[0], 0xde);
	}

	assert_true(bus_read(&bus, 0xd0000ff8, buf, 8));
	assert_int_equal(mmio.calls_read, 1);
	assert_int_equal(mmio.last_offset, 0xff8);
	assert_int_equal(mmio.last_size, 8);
	{
		const uint8_t v[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };

		assert_true(bus_write(&bus, 0xd0000010, v, 8));
		assert_int_equal(mmio.calls_write, 1);
		assert_int_equal(mmio.last_offset, 0x10);
		assert_int_equal(mmio.last_size, 8);
		assert_memory_equal(mmio.last_written, v, 8);
	}
	assert_int_equal(bus.unclaimed_count, 0);
	bus_exit(&bus);
}

static void test_unclaimed_read_all_ones(void **state)
{
	static const unsigned sizes[] = { 1, 2, 4, 8 };
	struct bus bus;
	struct fake_dev d;

	bus_init(&bus, "port");
	assert_int_equal(reg(&bus, &d, 0x60, 1), 0);
	for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
		uint8_t buf[16];

		memset(buf, 0x5a, sizeof(buf));
		assert_false(bus_read(&bus, 0x80, buf, sizes[i]));
		for (unsigned j = 0; j < sizes[i]; j++)
			assert_int_equal(buf[j], 0xff);
		/* Nothing past @size is touched. */
		for (unsigned j = sizes[i]; j < sizeof(buf); j++)
			assert_int_equal(buf[j], 0x5a);
	}
	assert_int_equal(d.calls_read, 0);
	assert_int_equal(bus.unclaimed_count, ARRAY_LEN(sizes));
	bus_exit(&bus);
}

static void test_straddling_access_unclaimed(void **state)
{
	struct bus bus;
	struct fake_dev a, b;
	uint8_t buf[8];
	const uint8_t v[8] = { 0 };

	bus_init(&bus, "mmio");
	assert_int_equal(reg(&bus, &a, 0x1000, 0x10), 0);
	assert_int_equal(reg(&bus, &b, 0x1010, 0x10), 0); /* adjacent */

	/* 4 bytes at 0x100e: two in a, two in b. */
	memset(buf, 0, sizeof(buf));
	assert_false(bus_read(&bus, 0x100e, buf, 4));
	assert_int_equal(buf[0] & buf[1] & buf[2] & buf[3], 0xff);
	/* 8 bytes at 0x1019: past the end of b, nothing after it. */
	assert_false(bus_read(&bus, 0x1019, buf, 8));
	assert_int_equal(buf[7], 0xff);
	/* 2 bytes at 0x0fff: one before a. */
	assert_false(bus_read(&bus, 0x0fff, buf, 2));
	assert_false(bus_write(&bus, 0x100f, v, 2));
	assert_false(bus_write(&bus, 0x101c, v, 8));
	assert_int_equal(a.calls_read + a.calls_write + b.calls_read + b.calls_write, 0);
	assert_int_equal(bus.unclaimed_count, 5);

	/* The last byte of each region on its own is fine. */
	assert_true(bus_read(&bus, 0x100f, buf, 1));
	assert_true(bus_read(&bus, 0x1018, buf, 8));
	assert_int_equal(b.last_offset, 8);
	assert_int_equal(bus.unclaimed_count, 5);
	bus_exit(&bus);
}

static void test_unclaimed_write_ignored(void **state)
{
	struct bus bus;
	struct fake_dev d;
	const uint32_t v = 0x12345678;

	bus_init(&bus, "port");
	assert_int_equal(reg(&bus, &d, 0x70, 2), 0);
	assert_false(bus_write(&bus, 0x72, &v, 4));
	assert_false(bus_write(&bus, 0x6f, &v, 1));
	assert_int_equal(d.calls_write, 0);
	assert_int_equal(d.calls_read, 0);
	assert_int_equal(bus.unclaimed_count, 2);
	bus_exit(&bus);
}

static void test_unclaimed_count_every_access(void **state)
{
	struct bus bus;
	uint8_t b;

	bus_init(&bus, "port");
	/* The same address is logged once, but every access counts; more than
	 * BUS_LOGGED_MAX distinct addresses keep counting too. */
	for (unsigned i = 0; i < 5; i++)
		assert_false(bus_read(&bus, 0x1234, &b, 1));
	assert_int_equal(bus.unclaimed_count, 5);
	for (unsigned i = 0; i < BUS_LOGGED_MAX + 10; i++)
		assert_false(bus_write(&bus, 0x2000 + i, &b, 1));
	assert_int_equal(bus.unclaimed_count, 5 + BUS_LOGGED_MAX + 10);
	assert_true(bus.n_logged <= BUS_LOGGED_MAX);
	bus_exit(&bus);
}

static void test_device_read_error_all_ones(void **state)
{
	static const unsigned sizes[] = { 1, 2, 4, 8 };
	struct bus bus;
	struct fake_dev d;

	bus_init(&bus, "mmio");
	assert_int_equal(reg(&bus, &d, 0xfee00000, 0x1000), 0);
	d.read_result = -EIO;
	for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
		uint8_t buf[8];

		memset(buf, 0, sizeof(buf));
		(void)bus_read(&bus, 0xfee00100, buf, sizes[i]);
		for (unsigned j = 0; j < sizes[i]; j++)
			assert_int_equal(buf[j], 0xff);
	}
	assert_int_equal(d.calls_read, (int)ARRAY_LEN(sizes));
	bus_exit(&bus);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_register_adjacent),
		cmocka_unit_test(test_register_overlaps),
		cmocka_unit_test(test_register_invalid),
		cmocka_unit_test(test_register_full),
		cmocka_unit_test(test_find_empty_bus),
		cmocka_unit_test(test_dispatch_relative_offsets),
		cmocka_unit_test(test_unclaimed_read_all_ones),
		cmocka_unit_test(test_straddling_access_unclaimed),
		cmocka_unit_test(test_unclaimed_write_ignored),
		cmocka_unit_test(test_unclaimed_count_every_access),
		cmocka_unit_test(test_device_read_error_all_ones),
	};

	return cmocka_run_group_tests_name("bus", tests, NULL, NULL);
}

/* Guest RAM and its checked translation, against include/vmrun/guest_mem.h. */
#include "unit.h"

#include <errno.h>
#include <stdbool.h>

#include "vmrun/guest_mem.h"
#include "vmrun/x86.h"

#define MiB (1ull << 20)
#define GiB (1ull << 30)

static void test_init_64m(void **state)
{
	struct guest_mem gm;

	memset(&gm, 0xa5, sizeof(gm));
	assert_int_equal(guest_mem_init(&gm, 64 * MiB), 0);
	assert_int_equal(gm.n_regions, 1);
	assert_int_equal(gm.ram_size, 64 * MiB);
	assert_int_equal(gm.regions[0].gpa, 0);
	assert_int_equal(gm.regions[0].size, 64 * MiB);
	assert_non_null(gm.regions[0].host);
	guest_mem_exit(&gm);
	assert_int_equal(gm.n_regions, 0);
	assert_null(gm.mapping);
	guest_mem_exit(&gm); /* twice: the struct is zeroed now */
}

static void test_exit_zeroed(void **state)
{
	struct guest_mem gm;

	memset(&gm, 0, sizeof(gm));
	guest_mem_exit(&gm);
	assert_null(guest_mem_ptr(&gm, 0, 1));
}

static void test_ptr_bounds_64m(void **state)
{
	struct guest_mem gm;
	const uint64_t end = 64 * MiB;
	uint8_t *base;

	assert_int_equal(guest_mem_init(&gm, end), 0);
	base = guest_mem_ptr(&gm, 0, 1);
	assert_non_null(base);
	assert_ptr_equal(guest_mem_ptr(&gm, 0x1234, 16), base + 0x1234);
	assert_ptr_equal(guest_mem_ptr(&gm, end - 1, 1), base + end - 1);  /* last byte */
	assert_ptr_equal(guest_mem_ptr(&gm, end - 1, 0), base + end - 1);  /* len 0 is 1 */
	assert_ptr_equal(guest_mem_ptr(&gm, 0, end), base);                /* all of it */
	assert_ptr_equal(guest_mem_ptr(&gm, end - 8, 8), base + end - 8);
	assert_null(guest_mem_ptr(&gm, end, 1));      /* one past */
	assert_null(guest_mem_ptr(&gm, end, 0));
	assert_null(guest_mem_ptr(&gm, 0, end + 1));
	assert_null(guest_mem_ptr(&gm, end - 4, 8));  /* crosses the end */
	assert_null(guest_mem_ptr(&gm, end - 1, 2));
	assert_null(guest_mem_ptr(&gm, 3 * GiB + 0x1000, 1));
	assert_null(guest_mem_ptr(&gm, 4 * GiB, 1));
	/* Lengths that would wrap the address space. */
	assert_null(guest_mem_ptr(&gm, 0x10, UINT64_MAX));
	assert_null(guest_mem_ptr(&gm, end - 1, UINT64_MAX));
	assert_null(guest_mem_ptr(&gm, 0x1000, UINT64_MAX - 0x800));
	assert_null(guest_mem_ptr(&gm, UINT64_MAX, 1));
	assert_null(guest_mem_ptr(&gm, UINT64_MAX - 3, 8));
	assert_null(guest_mem_ptr(&gm, UINT64_MAX, UINT64_MAX));
	guest_mem_exit(&gm);
}

static void test_ptr_bounds_two_regions(void **state)
{
	struct guest_mem gm;
	const uint64_t ram = 3 * GiB + 8 * MiB;
	const uint64_t high_end = 4 * GiB + 8 * MiB;
	uint8_t *low, *high;

	/* MAP_NORESERVE: this costs only the pages touched. */
	assert_int_equal(guest_mem_init(&gm, ram), 0);
	assert_int_equal(gm.ram_size, ram);
	assert_int_equal(gm.n_regions, 2);
	assert_int_equal(gm.regions[0].gpa, 0);
	assert_int_equal(gm.regions[0].size, 3 * GiB);
	assert_int_equal(gm.regions[1].gpa, 4 * GiB);
	assert_int_equal(gm.regions[1].size, 8 * MiB);

	low = guest_mem_ptr(&gm, 0, 1);
	high = guest_mem_ptr(&gm, 4 * GiB, 1);
	assert_non_null(low);
	assert_non_null(high);
	/* The two host ranges must not alias. */
	assert_true(high >= low + 3 * GiB || high + 8 * MiB <= low);

	assert_ptr_equal(guest_mem_ptr(&gm, 3 * GiB - 1, 1), low + 3 * GiB - 1);
	assert_null(guest_mem_ptr(&gm, 3 * GiB, 1));             /* start of the hole */
	assert_null(guest_mem_ptr(&gm, X86_IOAPIC_BASE, 4));      /* inside the hole */
	assert_null(guest_mem_ptr(&gm, X86_LAPIC_BASE + 0x20, 4));
	assert_null(guest_mem_ptr(&gm, 4 * GiB - 1, 1));          /* end of the hole */
	assert_null(guest_mem_ptr(&gm, 3 * GiB - 4, 8));          /* RAM into the hole */
	assert_null(guest_mem_ptr(&gm, 4 * GiB - 4, 8));          /* hole into RAM */
	assert_null(guest_mem_ptr(&gm, 3 * GiB - 1, GiB + 2));    /* across the hole */
	assert_ptr_equal(guest_mem_ptr(&gm, 4 * GiB + 0x10, 0x100), high + 0x10);
	assert_ptr_equal(guest_mem_ptr(&gm, high_end - 1, 1), high + 8 * MiB - 1);
	assert_ptr_equal(guest_mem_ptr(&gm, 4 * GiB, 8 * MiB), high);
	assert_null(guest_mem_ptr(&gm, high_end, 1));
	assert_null(guest_mem_ptr(&gm, high_end - 2, 4));
	assert_null(guest_mem_ptr(&gm, 4 * GiB, 8 * MiB + 1));
	assert_null(guest_mem_ptr(&gm, 4 * GiB + 8, UINT64_MAX - 4 * GiB));
	assert_null(guest_mem_ptr(&gm, high_end - 1, UINT64_MAX));
	assert_null(guest_mem_ptr(&gm, UINT64_MAX - 15, 16));
	guest_mem_exit(&gm);
}

static void test_read_write_round_trip(void **state)
{
	struct guest_mem gm;
	uint8_t pattern[4096], back[4096];

	for (size_t i = 0; i < sizeof(pattern); i++)
		pattern[i] = (uint8_t)(i * 7 + 3);
	assert_int_equal(guest_mem_init(&gm, 3 * GiB + 8 * MiB), 0);

	/* Fresh RAM reads as zero. */
	memset(back, 0x5a, sizeof(back));
	assert_int_equal(guest_mem_read(&gm, 0x200000, back, sizeof(back)), 0);
	for (size_t i = 0; i < sizeof(back); i++)
		assert_int_equal(back[i], 0);

	assert_int_equal(guest_mem_write(&gm, 0x12345, pattern, sizeof(pattern)), 0);
	memset(back, 0, sizeof(back));
	assert_int_equal(guest_mem_read(&gm, 0x12345, back, sizeof(back)), 0);
	assert_memory_equal(back, pattern, sizeof(pattern));
	/* Visible through the translation as well. */
	assert_memory_equal(guest_mem_ptr(&gm, 0x12345, sizeof(pattern)), pattern, sizeof(pattern));

	/* The last bytes of each region. */
	assert_int_equal(guest_mem_write(&gm, 3 * GiB - sizeof(pattern), pattern, sizeof(pattern)), 0);
	assert_int_equal(guest_mem_write(&gm, 4 * GiB + 8 * MiB - 16, pattern, 16), 0);
	memset(back, 0, sizeof(back));
	assert_int_equal(guest_mem_read(&gm, 3 * GiB - sizeof(pattern), back, sizeof(pattern)), 0);
	assert_memory_equal(back, pattern, sizeof(pattern));
	assert_int_equal(guest_mem_read(&gm, 4 * GiB + 8 * MiB - 16, back, 16), 0);
	assert_memory_equal(back, pattern, 16);

	/* A write to the high region does not show up in the low one. */
	assert_int_equal(guest_mem_write(&gm, 4 * GiB, "HIGH", 4), 0);
	assert_int_equal(guest_mem_read(&gm, 0, back, 4), 0);
	assert_memory_not_equal(back, "HIGH", 4);
	guest_mem_exit(&gm);
}

static void test_efault_outside(void **state)
{
	struct guest_mem gm;
	uint8_t buf[16] = { 1, 2, 3 }, back[16];

	assert_int_equal(guest_mem_init(&gm, 64 * MiB), 0);
	assert_int_equal(guest_mem_write(&gm, 64 * MiB, buf, 1), -EFAULT);
	assert_int_equal(guest_mem_write(&gm, 64 * MiB - 8, buf, 16), -EFAULT);
	assert_int_equal(guest_mem_read(&gm, 64 * MiB - 8, back, 16), -EFAULT);
	assert_int_equal(guest_mem_read(&gm, X86_IOAPIC_BASE, back, 4), -EFAULT);
	assert_int_equal(guest_mem_write(&gm, UINT64_MAX - 3, buf, 8), -EFAULT);
	/* A failed write changes nothing. */
	memset(back, 0x5a, sizeof(back));
	assert_int_equal(guest_mem_read(&gm, 64 * MiB - 8, back, 8), 0);
	for (int i = 0; i < 8; i++)
		assert_int_equal(back[i], 0);
	guest_mem_exit(&gm);
}

static bool dirty(const struct guest_mem *gm, unsigned region, uint64_t page)
{
	return gm->regions[region].dirty[page / 64] >> (page % 64) & 1;
}

static unsigned dirty_count(const struct guest_mem *gm)
{
	unsigned n = 0;

	for (unsigned i = 0; i < gm->n_regions; i++)
		for (size_t w = 0; w < gm->regions[i].dirty_words; w++)
			n += (unsigned)__builtin_popcountll(gm->regions[i].dirty[w]);
	return n;
}

static void test_dirty_log(void **state)
{
	struct guest_mem gm;
	uint8_t byte = 1;
	uint64_t hole_start;

	(void)state;
	assert_int_equal(guest_mem_init(&gm, 5 * GiB), 0);
	assert_int_equal(gm.n_regions, 2);
	hole_start = gm.regions[0].size;
	assert_int_equal(dirty_count(&gm), 0);

	/* One byte: one page.  Two bytes straddling a page boundary: two. */
	guest_mem_mark_dirty(&gm, 0x5000, 1);
	assert_true(dirty(&gm, 0, 5));
	guest_mem_mark_dirty(&gm, 0x7fff, 2);
	assert_true(dirty(&gm, 0, 7) && dirty(&gm, 0, 8));
	assert_int_equal(dirty_count(&gm), 3);

	/* Across the MMIO hole: the last page below it and the first above. */
	guest_mem_mark_dirty(&gm, hole_start - 1, 0x100000000ull - hole_start + 2);
	assert_true(dirty(&gm, 0, (hole_start >> 12) - 1));
	assert_true(dirty(&gm, 1, 0));
	assert_int_equal(dirty_count(&gm), 5);

	/* Outside RAM, zero length, a range that wraps: nothing, no crash. */
	guest_mem_mark_dirty(&gm, 6 * GiB, 4096);
	guest_mem_mark_dirty(&gm, 0x9000, 0);
	guest_mem_mark_dirty(&gm, UINT64_MAX - 10, 100);
	assert_int_equal(dirty_count(&gm), 5);

	/* guest_mem_write() marks; dirty_take() clears. */
	assert_int_equal(guest_mem_write(&gm, 4 * GiB + 3 * 4096 + 7, &byte, 1), 0);
	assert_true(dirty(&gm, 1, 3));
	assert_int_equal(guest_mem_dirty_take(&gm, 0, 0), (1ull << 5) | (1ull << 7) | (1ull << 8));
	assert_int_equal(guest_mem_dirty_take(&gm, 0, 0), 0);
	assert_int_equal(guest_mem_dirty_take(&gm, 1, 0), (1ull << 0) | (1ull << 3));
	assert_int_equal(guest_mem_dirty_take(&gm, 2, 0), 0);
	assert_int_equal(guest_mem_dirty_take(&gm, 0, gm.regions[0].dirty_words), 0);
	assert_int_equal(dirty_count(&gm), 1); /* the page below the hole */

	/* Long runs, whole bitmap words and their edges: exactly the pages
	 * touched, counted against a page-by-page model. */
	for (uint64_t first = 60; first < 200; first += 37) {
		for (uint64_t pages = 1; pages < 200; pages += 23) {
			uint64_t start = 16 * 1024 * 4096ull, base = start >> 12;

			for (size_t w = 0; w < gm.regions[0].dirty_words; w++)
				(void)guest_mem_dirty_take(&gm, 0, w);
			guest_mem_mark_dirty(&gm, start + first * 4096 + 5, pages * 4096 - 10);
			for (uint64_t pg = base; pg < base + 500; pg++)
				assert_int_equal(dirty(&gm, 0, pg),
						 pg >= base + first && pg < base + first + pages);
		}
	}
	guest_mem_exit(&gm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init_64m),
		cmocka_unit_test(test_exit_zeroed),
		cmocka_unit_test(test_ptr_bounds_64m),
		cmocka_unit_test(test_ptr_bounds_two_regions),
		cmocka_unit_test(test_read_write_round_trip),
		cmocka_unit_test(test_efault_outside),
		cmocka_unit_test(test_dirty_log),
	};

	return cmocka_run_group_tests_name("guest_mem", tests, NULL, NULL);
}

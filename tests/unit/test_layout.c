/* Guest-physical RAM layout and e820 map, against include/vmrun/x86.h. */
#include "unit.h"

#include <errno.h>

#include "vmrun/x86.h"

#define KiB (1ull << 10)
#define MiB (1ull << 20)
#define GiB (1ull << 30)
#define HOLE_START (3 * GiB)
#define HOLE_END (4 * GiB)

static void test_layout_256m(void **state)
{
	uint64_t gpa[2] = { 7, 7 }, size[2] = { 7, 7 };

	assert_int_equal(x86_layout_ram(256 * MiB, gpa, size), 1);
	assert_int_equal(gpa[0], 0);
	assert_int_equal(size[0], 256 * MiB);
}

static void test_layout_exactly_3g(void **state)
{
	uint64_t gpa[2], size[2];

	assert_int_equal(x86_layout_ram(3 * GiB, gpa, size), 1);
	assert_int_equal(gpa[0], 0);
	assert_int_equal(size[0], 3 * GiB);
}

static void test_layout_3g_plus_4k(void **state)
{
	uint64_t gpa[2], size[2];

	assert_int_equal(x86_layout_ram(3 * GiB + 4 * KiB, gpa, size), 2);
	assert_int_equal(gpa[0], 0);
	assert_int_equal(size[0], 3 * GiB);
	assert_int_equal(gpa[1], 4 * GiB);
	assert_int_equal(size[1], 4 * KiB);
}

static void test_layout_8g(void **state)
{
	uint64_t gpa[2], size[2];

	assert_int_equal(x86_layout_ram(8 * GiB, gpa, size), 2);
	assert_int_equal(gpa[0], 0);
	assert_int_equal(size[0], 3 * GiB);
	assert_int_equal(gpa[1], 4 * GiB);
	assert_int_equal(size[1], 5 * GiB);
}

static void assert_entry(const struct e820_entry *e, uint64_t addr, uint64_t size, uint32_t type)
{
	if (e->addr != addr || e->size != size || e->type != type)
		fail_msg("e820 entry {0x%llx, 0x%llx, %u}, want {0x%llx, 0x%llx, %u}",
			 (unsigned long long)e->addr, (unsigned long long)e->size, e->type,
			 (unsigned long long)addr, (unsigned long long)size, type);
}

static void test_e820_256m(void **state)
{
	struct e820_entry e[X86_E820_MAX];

	assert_int_equal(x86_e820_build(256 * MiB, e, X86_E820_MAX), 3);
	assert_entry(&e[0], 0, 0x9fc00, E820_RAM);
	assert_entry(&e[1], 0x9fc00, 0x100000 - 0x9fc00, E820_RESERVED);
	assert_entry(&e[2], 0x100000, 256 * MiB - 0x100000, E820_RAM);
}

static void test_e820_exactly_3g(void **state)
{
	struct e820_entry e[X86_E820_MAX];

	assert_int_equal(x86_e820_build(3 * GiB, e, X86_E820_MAX), 3);
	assert_entry(&e[0], 0, 0x9fc00, E820_RAM);
	assert_entry(&e[1], 0x9fc00, 0x60400, E820_RESERVED);
	assert_entry(&e[2], 0x100000, 3 * GiB - 0x100000, E820_RAM);
}

static void test_e820_8g(void **state)
{
	struct e820_entry e[X86_E820_MAX];

	assert_int_equal(x86_e820_build(8 * GiB, e, X86_E820_MAX), 4);
	assert_entry(&e[0], 0, 0x9fc00, E820_RAM);
	assert_entry(&e[1], 0x9fc00, 0x60400, E820_RESERVED);
	assert_entry(&e[2], 0x100000, 3 * GiB - 0x100000, E820_RAM);
	assert_entry(&e[3], 4 * GiB, 5 * GiB, E820_RAM);
}

static void test_e820_3g_plus_4k(void **state)
{
	struct e820_entry e[X86_E820_MAX];

	assert_int_equal(x86_e820_build(3 * GiB + 4 * KiB, e, X86_E820_MAX), 4);
	assert_entry(&e[2], 0x100000, 3 * GiB - 0x100000, E820_RAM);
	assert_entry(&e[3], 4 * GiB, 4 * KiB, E820_RAM);
}

/* Properties every map must have, for a range of sizes. */
static void test_e820_invariants(void **state)
{
	static const uint64_t sizes[] = {
		8 * MiB, 16 * MiB, 256 * MiB, 1 * GiB, 3 * GiB - 4 * KiB, 3 * GiB,
		3 * GiB + 4 * KiB, 4 * GiB, 8 * GiB, 64 * GiB, 1024 * GiB,
	};

	for (size_t s = 0; s < ARRAY_LEN(sizes); s++) {
		uint64_t ram = sizes[s], ram_sum = 0, reserved_sum = 0;
		struct e820_entry e[X86_E820_MAX];
		int n = x86_e820_build(ram, e, X86_E820_MAX);

		assert_in_range(n, 1, X86_E820_MAX);
		for (int i = 0; i < n; i++) {
			uint64_t start = e[i].addr, end = e[i].addr + e[i].size;

			assert_true(e[i].size > 0);
			assert_true(e[i].type == E820_RAM || e[i].type == E820_RESERVED);
			/* Nothing inside the MMIO hole. */
			if (start < HOLE_END && end > HOLE_START)
				fail_msg("ram 0x%llx: entry %d [0x%llx, 0x%llx) overlaps the hole",
					 (unsigned long long)ram, i, (unsigned long long)start,
					 (unsigned long long)end);
			/* Sorted and disjoint. */
			if (i > 0)
				assert_true(e[i - 1].addr + e[i - 1].size <= start);
			if (e[i].type == E820_RAM)
				ram_sum += e[i].size;
			else
				reserved_sum += e[i].size;
		}
		if (ram_sum + reserved_sum != ram)
			fail_msg("ram 0x%llx: RAM 0x%llx + reserved 0x%llx",
				 (unsigned long long)ram, (unsigned long long)ram_sum,
				 (unsigned long long)reserved_sum);
		/* RAM below the EBDA, and RAM at 1 MiB, always. */
		assert_entry(&e[0], 0, X86_EBDA_START, E820_RAM);
		assert_entry(&e[1], X86_EBDA_START, X86_HIGH_MEM - X86_EBDA_START, E820_RESERVED);
		/* The highest RAM byte is where the layout says RAM ends. */
		{
			uint64_t top = e[n - 1].addr + e[n - 1].size;
			uint64_t want = ram <= HOLE_START ? ram : HOLE_END + (ram - HOLE_START);

			assert_int_equal(top, want);
		}
	}
}

static void test_e820_enospc(void **state)
{
	struct e820_entry e[X86_E820_MAX];

	assert_int_equal(x86_e820_build(256 * MiB, e, 2), -ENOSPC);
	assert_int_equal(x86_e820_build(256 * MiB, e, 0), -ENOSPC);
	assert_int_equal(x86_e820_build(8 * GiB, e, 3), -ENOSPC);
	/* Exactly enough room is fine. */
	assert_int_equal(x86_e820_build(256 * MiB, e, 3), 3);
	assert_int_equal(x86_e820_build(8 * GiB, e, 4), 4);
}

static void test_e820_does_not_write_past_max(void **state)
{
	struct e820_entry e[X86_E820_MAX];
	struct e820_entry guard;

	memset(e, 0x5a, sizeof(e));
	memset(&guard, 0x5a, sizeof(guard));
	assert_int_equal(x86_e820_build(256 * MiB, e, 3), 3);
	assert_memory_equal(&e[3], &guard, sizeof(guard));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layout_256m),
		cmocka_unit_test(test_layout_exactly_3g),
		cmocka_unit_test(test_layout_3g_plus_4k),
		cmocka_unit_test(test_layout_8g),
		cmocka_unit_test(test_e820_256m),
		cmocka_unit_test(test_e820_exactly_3g),
		cmocka_unit_test(test_e820_8g),
		cmocka_unit_test(test_e820_3g_plus_4k),
		cmocka_unit_test(test_e820_invariants),
		cmocka_unit_test(test_e820_enospc),
		cmocka_unit_test(test_e820_does_not_write_past_max),
	};

	return cmocka_run_group_tests_name("layout", tests, NULL, NULL);
}

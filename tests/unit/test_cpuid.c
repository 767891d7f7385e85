/* x86_cpuid_patch() on a hand-made KVM_GET_SUPPORTED_CPUID table, checked
 * against the Intel SDM's definitions of leaves 1, 4, 0xb and 0x1f. */
#include "unit.h"

#include <linux/kvm.h>
#include <stdlib.h>

#include "vmrun/x86.h"

#define ENT(fn, idx, a, b, c, d) \
	{ .function = (fn), .index = (idx), .flags = 0, .eax = (a), .ebx = (b), .ecx = (c), .edx = (d) }

/* Plausible host values, chosen so that every field the patch must keep is
 * non-zero, and the fields it must set start out wrong. */
static const struct kvm_cpuid_entry2 host_entries[] = {
	ENT(0x0, 0, 0x1f, 0x756e6547, 0x6c65746e, 0x49656e69),
	ENT(0x1, 0, 0x000906ea, 0x07101234, 0x7ffafbff, 0x0fabfbff), /* APIC 7, 16 LPs, HTT clear */
	ENT(0x4, 0, 0x1c004121, 0x01c0003f, 0x0000003f, 0x00000000),
	ENT(0x4, 1, 0x1c004122, 0x01c0003f, 0x0000003f, 0x00000000),
	ENT(0x4, 2, 0x1c004143, 0x00c0003f, 0x000003ff, 0x00000000),
	ENT(0x4, 3, 0x1c03c163, 0x03c0003f, 0x00003fff, 0x00000006),
	ENT(0xb, 0, 0x00000001, 0x00000002, 0x00000100, 0x0000000e),
	ENT(0xb, 1, 0x00000004, 0x0000000c, 0x00000201, 0x0000000e),
	ENT(0xb, 2, 0x00000000, 0x00000000, 0x00000002, 0x0000000e),
	ENT(0x1f, 0, 0x00000001, 0x00000002, 0x00000100, 0x0000000e),
	ENT(0x1f, 1, 0x00000004, 0x0000000c, 0x00000201, 0x0000000e),
	ENT(0x80000001, 0, 0x00000000, 0x00000000, 0x00000121, 0x2c100800),
};

static struct kvm_cpuid2 *table_new(void)
{
	size_t n = ARRAY_LEN(host_entries);
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));

	assert_non_null(c);
	c->nent = (uint32_t)n;
	memcpy(c->entries, host_entries, sizeof(host_entries));
	return c;
}

static const struct kvm_cpuid_entry2 *find(const struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx)
{
	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function == fn && c->entries[i].index == idx)
			return &c->entries[i];
	fail_msg("leaf 0x%x.%u missing", fn, idx);
	return NULL;
}

static const struct kvm_cpuid_entry2 *host(uint32_t fn, uint32_t idx)
{
	for (size_t i = 0; i < ARRAY_LEN(host_entries); i++)
		if (host_entries[i].function == fn && host_entries[i].index == idx)
			return &host_entries[i];
	return NULL;
}

static void test_leaf1_vcpu1_of_4(void **state)
{
	struct kvm_cpuid2 *c = table_new();
	const struct kvm_cpuid_entry2 *e;

	x86_cpuid_patch(c, 1, 4);
	e = find(c, 1, 0);
	assert_int_equal(e->ebx >> 24, 1);                 /* initial APIC ID */
	assert_int_equal((e->ebx >> 16) & 0xff, 4);        /* logical processors */
	assert_int_equal(e->ebx & 0xffff, 0x1234);         /* brand index, CLFLUSH size kept */
	assert_true(e->ecx & (1u << 31));                  /* hypervisor */
	assert_int_equal(e->ecx & 0x7fffffffu, 0x7ffafbffu & 0x7fffffffu);
	assert_true(e->edx & (1u << 28));                  /* HTT: more than one LP */
	assert_int_equal(e->edx & ~(1u << 28), 0x0fabfbffu & ~(1u << 28));
	assert_int_equal(e->eax, 0x000906ea);              /* signature untouched */
	assert_int_equal(c->nent, ARRAY_LEN(host_entries));
	free(c);
}

static void test_leaf1_single_cpu(void **state)
{
	struct kvm_cpuid2 *c = table_new();
	const struct kvm_cpuid_entry2 *e;

	/* Start with HTT set: one vCPU must clear it. */
	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function == 1)
			c->entries[i].edx |= 1u << 28;
	x86_cpuid_patch(c, 0, 1);
	e = find(c, 1, 0);
	assert_int_equal(e->ebx >> 24, 0);
	assert_int_equal((e->ebx >> 16) & 0xff, 1);
	assert_false(e->edx & (1u << 28));
	assert_true(e->ecx & (1u << 31));
	free(c);
}

static void test_leaf1_apic_id_per_vcpu(void **state)
{
	for (unsigned id = 0; id < 8; id++) {
		struct kvm_cpuid2 *c = table_new();
		const struct kvm_cpuid_entry2 *e;

		x86_cpuid_patch(c, id, 8);
		e = find(c, 1, 0);
		assert_int_equal(e->ebx >> 24, id);
		assert_int_equal((e->ebx >> 16) & 0xff, 8);
		free(c);
	}
}

static void test_extended_topology_vcpu1_of_4(void **state)
{
	static const uint32_t leaves[] = { 0xb, 0x1f };
	struct kvm_cpuid2 *c = table_new();

	x86_cpuid_patch(c, 1, 4);
	for (size_t l = 0; l < ARRAY_LEN(leaves); l++) {
		const struct kvm_cpuid_entry2 *s0 = find(c, leaves[l], 0);
		const struct kvm_cpuid_entry2 *s1 = find(c, leaves[l], 1);

		/* EDX: this vCPU's x2APIC ID, on every subleaf. */
		assert_int_equal(s0->edx, 1);
		assert_int_equal(s1->edx, 1);
		/* Subleaf 0: SMT level, one thread per core, shift 0. */
		assert_int_equal((s0->ecx >> 8) & 0xff, 1);
		assert_int_equal(s0->ecx & 0xff, 0);
		assert_int_equal(s0->ebx & 0xffff, 1);
		assert_int_equal(s0->eax & 0x1f, 0);
		/* Subleaf 1: core level, 4 logical processors, shift 2. */
		assert_int_equal((s1->ecx >> 8) & 0xff, 2);
		assert_int_equal(s1->ecx & 0xff, 1);
		assert_int_equal(s1->ebx & 0xffff, 4);
		assert_int_equal(s1->eax & 0x1f, 2);
	}
	{
		const struct kvm_cpuid_entry2 *s2 = find(c, 0xb, 2);

		/* Subleaf 2 terminates the enumeration: level type 0. */
		assert_int_equal((s2->ecx >> 8) & 0xff, 0);
		assert_int_equal(s2->ecx & 0xff, 2);
		assert_int_equal(s2->ebx & 0xffff, 0);
		assert_int_equal(s2->edx, 1);
	}
	free(c);
}

static void test_extended_topology_shift(void **state)
{
	static const struct {
		unsigned ncpus, shift;
	} cases[] = { { 1, 0 }, { 2, 1 }, { 3, 2 }, { 4, 2 }, { 5, 3 }, { 8, 3 }, { 9, 4 },
		      { 64, 6 }, { 65, 7 }, { 255, 8 } };

	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		struct kvm_cpuid2 *c = table_new();
		unsigned last = cases[i].ncpus - 1;
		const struct kvm_cpuid_entry2 *s1;

		x86_cpuid_patch(c, last, cases[i].ncpus);
		s1 = find(c, 0xb, 1);
		if ((s1->eax & 0x1f) != cases[i].shift)
			fail_msg("%u cpus: shift %u, want %u", cases[i].ncpus, s1->eax & 0x1f,
				 cases[i].shift);
		assert_int_equal(s1->ebx & 0xffff, cases[i].ncpus);
		assert_int_equal(s1->edx, last);
		/* The package ID (x2APIC ID >> shift) is the same for all. */
		assert_int_equal(last >> (s1->eax & 0x1f), 0);
		free(c);
	}
}

static void test_leaf4_cores_per_package(void **state)
{
	struct kvm_cpuid2 *c = table_new();

	x86_cpuid_patch(c, 1, 4);
	for (uint32_t idx = 0; idx < 4; idx++) {
		const struct kvm_cpuid_entry2 *e = find(c, 4, idx), *h = host(4, idx);

		/* EAX[31:26]: addressable core IDs - 1; cache type/level kept. */
		assert_int_equal(e->eax >> 26, 3);
		assert_int_equal(e->eax & 0x3fff, h->eax & 0x3fff);
		assert_int_equal(e->ebx, h->ebx);
		assert_int_equal(e->ecx, h->ecx);
		assert_int_equal(e->edx, h->edx);
	}
	free(c);
}

static void test_untouched_leaves(void **state)
{
	static const uint32_t keep[] = { 0x0, 0x80000001 };
	struct kvm_cpuid2 *c = table_new();

	x86_cpuid_patch(c, 3, 4);
	for (size_t i = 0; i < ARRAY_LEN(keep); i++) {
		const struct kvm_cpuid_entry2 *e = find(c, keep[i], 0), *h = host(keep[i], 0);

		assert_memory_equal(e, h, sizeof(*e));
	}
	/* Order and identity of the entries unchanged. */
	for (uint32_t i = 0; i < c->nent; i++) {
		assert_int_equal(c->entries[i].function, host_entries[i].function);
		assert_int_equal(c->entries[i].index, host_entries[i].index);
		assert_int_equal(c->entries[i].flags, host_entries[i].flags);
	}
	free(c);
}

static void test_empty_table(void **state)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	x86_cpuid_patch(c, 0, 1); /* nothing to do, nothing to break */
	assert_int_equal(c->nent, 0);
	free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_leaf1_vcpu1_of_4),
		cmocka_unit_test(test_leaf1_single_cpu),
		cmocka_unit_test(test_leaf1_apic_id_per_vcpu),
		cmocka_unit_test(test_extended_topology_vcpu1_of_4),
		cmocka_unit_test(test_extended_topology_shift),
		cmocka_unit_test(test_leaf4_cores_per_package),
		cmocka_unit_test(test_untouched_leaves),
		cmocka_unit_test(test_empty_table),
	};

	return cmocka_run_group_tests_name("cpuid", tests, NULL, NULL);
}

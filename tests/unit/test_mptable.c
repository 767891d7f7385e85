/* x86_mptable_build(), checked the way a guest reads it: Intel MultiProcessor
 * Specification 1.4, chapter 4 (floating pointer, configuration table header,
 * base table entries walked by type). */
#include "unit.h"

#include <errno.h>
#include <stdbool.h>

#include "vmrun/config.h"
#include "vmrun/x86.h"

#define MP_GPA 0xf0000ull
#define BUF_LEN 0x10000

static uint8_t buf[BUF_LEN];

static uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

static uint8_t sum8(const uint8_t *p, size_t len)
{
	uint8_t s = 0;

	while (len--)
		s += *p++;
	return s;
}

/* Build for @ncpus and check everything a guest's MP parser relies on. */
static void build_and_check(unsigned ncpus)
{
	const uint8_t *mpf = buf, *mpc, *p, *end;
	unsigned n_cpu = 0, n_bus = 0, n_ioapic = 0, n_ioint = 0, n_entries = 0;
	bool cpu_seen[256] = { false }, irq_seen[16] = { false }, slot_seen[32] = { false };
	int isa_bus = -1, pci_bus = -1, used;
	unsigned n_pciint = 0;
	uint32_t physptr;
	uint16_t length;

	memset(buf, 0xcc, sizeof(buf));
	used = x86_mptable_build(buf, sizeof(buf), MP_GPA, ncpus);
	if (used <= 0)
		fail_msg("x86_mptable_build(%u cpus) = %d", ncpus, used);
	assert_true(used <= BUF_LEN);

	/* Floating pointer structure: 16 bytes. */
	assert_memory_equal(mpf, "_MP_", 4);
	assert_int_equal(mpf[8], 1);                  /* length in paragraphs */
	assert_true(mpf[9] == 1 || mpf[9] == 4);      /* spec revision */
	assert_int_equal(sum8(mpf, 16), 0);
	assert_int_equal(mpf[11], 0);                 /* feature 1: a table follows */
	physptr = rd32(mpf + 4);
	assert_int_equal(physptr, MP_GPA + 16);

	/* Configuration table header: 44 bytes. */
	mpc = buf + (physptr - MP_GPA);
	assert_memory_equal(mpc, "PCMP", 4);
	length = rd16(mpc + 4);
	assert_true(length >= 44);
	assert_true(16 + (size_t)length <= (size_t)used);
	assert_int_equal(rd16(mpc + 0x28), 0);        /* no extended table */
	assert_int_equal(16 + length, used);
	assert_true(mpc[6] == 1 || mpc[6] == 4);
	assert_int_equal(sum8(mpc, length), 0);
	assert_int_equal(rd32(mpc + 0x24), X86_LAPIC_BASE);

	/* Base table entries, walked by type. */
	p = mpc + 44;
	end = mpc + length;
	while (p < end) {
		switch (p[0]) {
		case 0: /* processor, 20 bytes */
			assert_true(p + 20 <= end);
			assert_true(p[1] < ncpus);
			assert_false(cpu_seen[p[1]]);
			cpu_seen[p[1]] = true;
			assert_true(p[3] & 0x01);                   /* enabled */
			if (p[1] == 0)
				assert_true(p[3] & 0x02);           /* the BSP */
			else
				assert_false(p[3] & 0x02);
			if (n_cpu == 0)
				assert_int_equal(p[1], 0);          /* first entry is the BSP */
			n_cpu++;
			p += 20;
			break;
		case 1: /* bus */
			assert_true(p + 8 <= end);
			if (!memcmp(p + 2, "ISA   ", 6))
				isa_bus = p[1];
			if (!memcmp(p + 2, "PCI   ", 6))
				pci_bus = p[1];
			n_bus++;
			p += 8;
			break;
		case 2: /* I/O APIC */
			assert_true(p + 8 <= end);
			assert_int_equal(p[1], ncpus);
			assert_true(p[3] & 0x01);
			assert_int_equal(rd32(p + 4), X86_IOAPIC_BASE);
			n_ioapic++;
			p += 8;
			break;
		case 3: /* I/O interrupt assignment */
			assert_true(p + 8 <= end);
			assert_true(isa_bus >= 0 && pci_bus >= 0); /* the buses come first */
			assert_int_equal(p[6], ncpus);              /* to our IOAPIC */
			if (p[4] == pci_bus) {
				/* Linux looks PCI bus 0 up as MP bus 0; INTA# only. */
				unsigned slot = p[5] >> 2;

				assert_int_equal(pci_bus, 0);
				assert_int_equal(p[5] & 3, 0);
				assert_true(slot >= 1 && slot < 32);
				assert_false(slot_seen[slot]);
				slot_seen[slot] = true;
				assert_int_equal(p[7], X86_PCI_INTX_PIN(slot));
				assert_true(p[7] >= 16 && p[7] < 24); /* above the ISA pins */
				n_pciint++;
				p += 8;
				break;
			}
			assert_int_equal(p[4], isa_bus);
			assert_true(p[5] < 16);
			assert_false(irq_seen[p[5]]);
			irq_seen[p[5]] = true;
			assert_int_equal(p[6], ncpus);              /* to our IOAPIC */
			assert_int_equal(p[7], p[5]);               /* ISA IRQ i -> pin i */
			n_ioint++;
			p += 8;
			break;
		case 4: /* local interrupt assignment */
			assert_true(p + 8 <= end);
			p += 8;
			break;
		default:
			fail_msg("unknown MP entry type %u at offset %zu", p[0], (size_t)(p - mpc));
		}
		n_entries++;
	}
	assert_ptr_equal(p, end);
	assert_int_equal(rd16(mpc + 0x22), n_entries); /* entry count */
	assert_int_equal(n_cpu, ncpus);
	assert_int_equal(n_bus, 2);
	assert_int_equal(n_pciint, 31);
	assert_true(isa_bus >= 0);
	assert_int_equal(n_ioapic, 1);
	assert_int_equal(n_ioint, 16);
	for (unsigned i = 0; i < ncpus; i++)
		assert_true(cpu_seen[i]);
	/* Nothing written past what was reported as used. */
	for (size_t i = (size_t)used; i < (size_t)used + 64; i++)
		assert_int_equal(buf[i], 0xcc);
}

static void test_mptable_1cpu(void **state)
{
	build_and_check(1);
}

static void test_mptable_2cpus(void **state)
{
	build_and_check(2);
}

static void test_mptable_8cpus(void **state)
{
	build_and_check(8);
}

static void test_mptable_enospc(void **state)
{
	int need;

	need = x86_mptable_build(buf, sizeof(buf), MP_GPA, 8);
	assert_true(need > 16);
	memset(buf, 0xcc, sizeof(buf));
	assert_int_equal(x86_mptable_build(buf, (size_t)need - 1, MP_GPA, 8), -ENOSPC);
	assert_int_equal(x86_mptable_build(buf, 16, MP_GPA, 8), -ENOSPC);
	assert_int_equal(x86_mptable_build(buf, 0, MP_GPA, 8), -ENOSPC);
	/* Refused means untouched past the given length. */
	assert_int_equal(buf[need - 1], 0xcc);
	assert_int_equal(x86_mptable_build(buf, (size_t)need, MP_GPA, 8), need);
	/* More CPUs need more room. */
	assert_int_equal(x86_mptable_build(buf, (size_t)need, MP_GPA, 9), -ENOSPC);
}

/* Regression: --cpus accepted more CPUs than the MP table could describe.
 * The largest count the CLI accepts (VMRUN_MAX_CPUS: APIC IDs 0..253, the
 * IOAPIC 254, 255 being the xAPIC broadcast ID) must build. */
static void test_mptable_max_cpus(void **state)
{
	build_and_check(VMRUN_MAX_CPUS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mptable_1cpu),
		cmocka_unit_test(test_mptable_2cpus),
		cmocka_unit_test(test_mptable_8cpus),
		cmocka_unit_test(test_mptable_enospc),
		cmocka_unit_test(test_mptable_max_cpus),
	};

	return cmocka_run_group_tests_name("mptable", tests, NULL, NULL);
}

/* ACPI (src/acpi/): the AML emitter's encodings against the ACPI 6.4
 * specification (chapter 20) worked by hand, the tables' structure
 * (checksums, lengths, XSDT entries, FADT fields), the DSDT, FADT and MADT
 * disassembled by the external oracle `iasl -d` (Debian: acpica-tools;
 * those tests skip, saying so, where it is missing), and hostile writes to
 * the PM1 control and reset registers. */
#include "unit.h"
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmrun/acpi.h"
#include "vmrun/boot.h"
#include "vmrun/guest_mem.h"
#include "vmrun/x86.h"
#include "vmrun/config.h"
#include "vmrun/devices.h"
#include "vmrun/exit_status.h"

#define GPA ACPI_TABLES_GPA

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static uint8_t sum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;

	while (n--)
		s = (uint8_t)(s + *p++);
	return s;
}

/* ---- the AML emitter ---- */

static void expect_aml(struct aml *a, const uint8_t *want, size_t n)
{
	const uint8_t *out;
	size_t len;

	assert_int_equal(aml_finish(a, &out, &len), 0);
	assert_int_equal(len, n);
	assert_memory_equal(out, want, n);
	aml_free(a);
}

static void test_aml_integers(void **state)
{
	struct aml a;
	static const uint8_t want[] = {
		0x00, 0x01, 0xff,                   /* Zero, One, Ones */
		0x0a, 0x05,                         /* BytePrefix */
		0x0b, 0x34, 0x12,                   /* WordPrefix */
		0x0c, 0x78, 0x56, 0x34, 0x12,       /* DWordPrefix */
		0x0e, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, /* QWordPrefix */
		0x0d, 'Q', 'E', 'M', 'U', '0', '0', '0', '1', 0x00,  /* String */
		0x0c, 0x41, 0xd0, 0x0a, 0x03,       /* EisaId("PNP0A03") = 0x030AD041 */
	};

	(void)state;
	aml_init(&a);
	aml_integer(&a, 0);
	aml_integer(&a, 1);
	aml_integer(&a, UINT64_MAX);
	aml_integer(&a, 5);
	aml_integer(&a, 0x1234);
	aml_integer(&a, 0x12345678);
	aml_integer(&a, 0x0102030405060708ull);
	aml_string(&a, "QEMU0001");
	aml_eisaid(&a, "PNP0A03");
	expect_aml(&a, want, sizeof(want));
}

static void test_aml_names(void **state)
{
	struct aml a;
	static const uint8_t want[] = {
		'\\', '_', 'S', 'B', '_',                                   /* \_SB */
		0x2e, 'P', 'C', 'I', '0', 'C', 'O', 'M', '1',               /* PCI0.COM1 */
		'\\', 0x2f, 3, '_', 'S', 'B', '_', 'P', 'C', 'I', '0', 'A', '_', '_', '_', /* \_SB.PCI0.A */
		'^', '^', 'X', '1', '_', '_',                               /* ^^X1 */
		0x08, '_', 'S', '5', '_', 0x01,                             /* Name(_S5_, One) */
	};
	static const char *const bad[] = { "1ABC", "ABCDE", "a", "A..B", "A.", "A-B" };

	(void)state;
	aml_init(&a);
	aml_name_string(&a, "\\_SB");
	aml_name_string(&a, "PCI0.COM1");
	aml_name_string(&a, "\\_SB.PCI0.A");
	aml_name_string(&a, "^^X1");
	aml_name(&a, "_S5");
	aml_integer(&a, 1);
	expect_aml(&a, want, sizeof(want));

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		const uint8_t *out;
		size_t len;

		aml_init(&a);
		aml_name_string(&a, bad[i]);
		assert_int_equal(aml_finish(&a, &out, &len), -EINVAL);
		aml_free(&a);
	}
	aml_init(&a);
	aml_eisaid(&a, "pnp0a03");
	aml_integer(&a, 7); /* nothing after the first error */
	{
		const uint8_t *out;
		size_t len;

		assert_int_equal(aml_finish(&a, &out, &len), -EINVAL);
	}
	aml_free(&a);
}

/* PkgLength (ACPI 6.4, 20.2.4): one byte up to 63 including itself; else
 * the count of extra bytes in bits 7-6, the low nibble in bits 3-0 and the
 * next bits in the following bytes. */
static void test_aml_pkglength(void **state)
{
	static const struct { size_t body; uint8_t enc[4]; unsigned n; } cases[] = {
		{ 1, { 0x02 }, 1 },
		{ 62, { 0x3f }, 1 },
		{ 63, { 0x41, 0x04 }, 2 },          /* 65 = 0x041 */
		{ 4093, { 0x4f, 0xff }, 2 },        /* 4095 = 0xfff */
		{ 4094, { 0x81, 0x00, 0x01 }, 3 },  /* 4097 = 0x1001 */
		{ 70000, { 0x83, 0x17, 0x11 }, 3 }, /* 70003 = 0x11173 */
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		struct aml a;
		const uint8_t *out;
		size_t len;
		uint8_t *body = calloc(1, cases[i].body + 1);

		assert_non_null(body);
		memset(body, 0xa5, cases[i].body);
		aml_init(&a);
		aml_package_begin(&a, 0); /* PackageOp, PkgLength, NumElements 0 */
		aml_bytes(&a, body, cases[i].body - 1); /* the body: NumElements and these */
		aml_end(&a);
		assert_int_equal(aml_finish(&a, &out, &len), 0);
		assert_int_equal(len, 1 + cases[i].n + cases[i].body);
		assert_int_equal(out[0], 0x12);
		assert_memory_equal(out + 1, cases[i].enc, cases[i].n);
		assert_int_equal(out[1 + cases[i].n], 0); /* NumElements after the PkgLength */
		aml_free(&a);
		free(body);
	}
}

static void test_aml_nesting_errors(void **state)
{
	struct aml a;
	const uint8_t *out;
	size_t len;

	(void)state;
	aml_init(&a);
	aml_device_begin(&a, "DEV0");
	assert_int_equal(aml_finish(&a, &out, &len), -EINVAL); /* left open */
	aml_free(&a);
	aml_init(&a);
	aml_end(&a); /* nothing open */
	assert_int_equal(aml_finish(&a, &out, &len), -EINVAL);
	aml_free(&a);
	aml_init(&a);
	aml_package_begin(&a, 256);
	assert_int_equal(aml_finish(&a, &out, &len), -EINVAL);
	aml_free(&a);
	aml_init(&a);
	for (unsigned i = 0; i <= AML_MAX_DEPTH; i++)
		aml_scope_begin(&a, "X");
	assert_int_equal(aml_finish(&a, &out, &len), -EINVAL);
	aml_free(&a);
}

/* A resource template: its BufferSize is the bytes after it, and the
 * descriptors are the specification's (6.4.2.5 I/O, 6.4.2.1 IRQ). */
static void test_aml_resource_template(void **state)
{
	struct aml a;
	const uint8_t *out;
	size_t len;

	(void)state;
	aml_init(&a);
	aml_buffer_begin(&a);
	aml_rt_io(&a, 0x505, 1);
	aml_rt_irq(&a, 4);
	aml_rt_end(&a);
	aml_end(&a);
	assert_int_equal(aml_finish(&a, &out, &len), 0);
	/* BufferOp, PkgLength, DWordConst size, IO (8), IRQ (3), End (2). */
	assert_int_equal(len, 1 + 1 + 5 + 8 + 3 + 2);
	assert_int_equal(out[0], 0x11);
	assert_int_equal(out[1], len - 1);
	assert_int_equal(out[2], 0x0c);
	assert_int_equal(le32(out + 3), 8 + 3 + 2);
	static const uint8_t io[8] = { 0x47, 0x01, 0x05, 0x05, 0x05, 0x05, 0x01, 0x01 };
	static const uint8_t irq[3] = { 0x22, 0x10, 0x00 };
	assert_memory_equal(out + 7, io, 8);
	assert_memory_equal(out + 15, irq, 3);
	assert_int_equal(out[18], 0x79);
	aml_free(&a);
	aml_init(&a);
	aml_rt_irq(&a, 16);
	assert_int_equal(aml_finish(&a, &out, &len), -EINVAL);
	aml_free(&a);
}

/* ---- the tables ---- */

struct tables {
	uint8_t buf[ACPI_TABLES_MAX];
	int len;
	const uint8_t *rsdp, *xsdt, *fadt, *madt, *dsdt;
};

/* The table at guest-physical @pa inside @t's block, checked for @sig,
 * a length inside the block and a zero checksum. */
static const uint8_t *table_at(struct tables *t, uint64_t pa, const char *sig)
{
	const uint8_t *p;

	assert_true(pa >= GPA && pa + 36 <= GPA + (uint64_t)t->len);
	p = t->buf + (pa - GPA);
	assert_memory_equal(p, sig, 4);
	assert_true(pa + le32(p + 4) <= GPA + (uint64_t)t->len);
	assert_int_equal(sum(p, le32(p + 4)), 0);
	return p;
}

static void build(struct tables *t, unsigned ncpus, bool pvpanic)
{
	struct acpi_machine m = { .ncpus = ncpus, .pvpanic = pvpanic };

	memset(t->buf, 0xcc, sizeof(t->buf));
	t->len = acpi_tables_build(t->buf, sizeof(t->buf), GPA, &m);
	assert_true(t->len > 0);
	t->rsdp = t->buf;
	assert_memory_equal(t->rsdp, "RSD PTR ", 8);
	assert_int_equal(sum(t->rsdp, 20), 0);
	assert_int_equal(t->rsdp[15], 2);
	assert_int_equal(le32(t->rsdp + 20), 36);
	assert_int_equal(sum(t->rsdp, 36), 0);
	t->xsdt = table_at(t, le64(t->rsdp + 24), "XSDT");
	assert_int_equal(le32(t->xsdt + 4), 36 + 2 * 8);
	t->fadt = table_at(t, le64(t->xsdt + 36), "FACP");
	t->madt = table_at(t, le64(t->xsdt + 44), "APIC");
	t->dsdt = table_at(t, le64(t->fadt + 140), "DSDT");
}

static void test_tables_structure(void **state)
{
	struct tables *t = malloc(sizeof(*t));
	static const unsigned cpus[] = { 1, 2, 64, VMRUN_MAX_CPUS };

	(void)state;
	assert_non_null(t);
	for (size_t i = 0; i < ARRAY_LEN(cpus); i++) {
		build(t, cpus[i], i & 1);
		/* FADT revision 6, 276 bytes, not hardware-reduced (Linux keeps
		 * its legacy PIC and ISA IRQs), reset supported. */
		assert_int_equal(le32(t->fadt + 4), 276);
		assert_int_equal(t->fadt[8], 6);
		assert_int_equal(le32(t->fadt + 40), (uint32_t)le64(t->fadt + 140)); /* DSDT == X_DSDT */
		assert_false(le32(t->fadt + 112) & (1u << 20));
		assert_true(le32(t->fadt + 112) & (1u << 10));
		assert_int_equal(t->fadt[46], ACPI_SCI_IRQ);  /* SCI_INT */
		assert_int_equal(le32(t->fadt + 48), 0);      /* no SMI_CMD: always ACPI mode */
		assert_int_equal(le32(t->fadt + 56), ACPI_PM1_EVT_PORT);
		assert_int_equal(t->fadt[88], 4);
		assert_int_equal(le32(t->fadt + 64), ACPI_PM1_CNT_PORT);
		assert_int_equal(t->fadt[89], 2);
		assert_int_equal(le32(t->fadt + 76), 0);      /* no PM timer */
		assert_int_equal(t->fadt[172], 1);            /* X_PM1a_CNT_BLK: system I/O, 16 bits */
		assert_int_equal(t->fadt[173], 16);
		assert_int_equal(le64(t->fadt + 176), ACPI_PM1_CNT_PORT);
		assert_int_equal(t->fadt[116], 1);            /* RESET_REG: system I/O, 8 bits */
		assert_int_equal(t->fadt[117], 8);
		assert_int_equal(le64(t->fadt + 120), ACPI_RESET_PORT);
		assert_int_equal(t->fadt[128], ACPI_RESET_VALUE);
		/* The FACS: 64 bytes, 64-byte aligned, both pointers agree. */
		uint64_t facs = le64(t->fadt + 132);
		assert_int_equal(le32(t->fadt + 36), (uint32_t)facs);
		assert_int_equal(facs & 63, 0);
		assert_true(facs >= GPA && facs + 64 <= GPA + (uint64_t)t->len);
		assert_memory_equal(t->buf + (facs - GPA), "FACS", 4);
		assert_int_equal(le32(t->buf + (facs - GPA) + 4), 64);
		/* MADT: one enabled local APIC per CPU, then the IOAPIC with ID ncpus. */
		const uint8_t *e = t->madt + 44, *end = t->madt + le32(t->madt + 4);
		unsigned lapics = 0, ioapics = 0, isos = 0;

		assert_int_equal(le32(t->madt + 36), 0xfee00000u);
		for (; e < end; e += e[1]) {
			assert_true(e[1] >= 2 && e + e[1] <= end);
			if (e[0] == 0) {
				assert_int_equal(e[3], lapics);
				assert_int_equal(le32(e + 4), 1);
				lapics++;
			} else if (e[0] == 1) {
				assert_int_equal(e[2], cpus[i]);
				assert_int_equal(le32(e + 4), 0xfec00000u);
				assert_int_equal(le32(e + 8), 0);
				ioapics++;
			} else if (e[0] == 2) {
				/* Only the SCI's: IRQ 9, level, active high. */
				assert_int_equal(e[3], ACPI_SCI_IRQ);
				assert_int_equal(le32(e + 4), ACPI_SCI_IRQ);
				assert_int_equal(e[8] | e[9] << 8, 0x000d);
				isos++;
			}
		}
		assert_ptr_equal(e, end);
		assert_int_equal(lapics, cpus[i]);
		assert_int_equal(ioapics, 1);
		assert_int_equal(isos, 1);
		/* Everything inside the block, below the MP table. */
		assert_true(t->len <= (int)ACPI_TABLES_MAX);
		assert_true(le64(t->fadt + 140) + le32(t->dsdt + 4) <= GPA + (uint64_t)t->len);
	}
	free(t);
}

static void test_tables_refused(void **state)
{
	static uint8_t buf[ACPI_TABLES_MAX];
	struct acpi_machine m = { .ncpus = 1 };

	(void)state;
	assert_int_equal(acpi_tables_build(buf, 0x100, GPA, &m), -ENOSPC);
	assert_int_equal(acpi_tables_build(buf, 0x300, GPA, &m), -ENOSPC); /* no room for the DSDT */
	assert_int_equal(acpi_tables_build(buf, sizeof(buf), GPA + 8, &m), -EINVAL);
	assert_int_equal(acpi_tables_build(buf, sizeof(buf), 0xf8000, &m), -ENOSPC); /* past 1 MiB */
	m.ncpus = 0;
	assert_int_equal(acpi_tables_build(buf, sizeof(buf), GPA, &m), -EINVAL);
	m.ncpus = 255;
	assert_int_equal(acpi_tables_build(buf, sizeof(buf), GPA, &m), -EINVAL);
	assert_int_equal(acpi_tables_build(buf, sizeof(buf), GPA, NULL), -EINVAL);
}

/* ---- iasl -d, the external oracle ---- */

static bool have_iasl(void)
{
	return system("command -v iasl >/dev/null 2>&1") == 0;
}

/* Disassemble @len bytes of @table with iasl -d; the .dsl text into a
 * malloc'd string (NULL when iasl failed: its output is printed). */
static char *iasl_disassemble(const uint8_t *table, size_t len, const char *name)
{
	char dir[] = "/tmp/vmrun-acpi-XXXXXX", path[256], cmd[600], *text = NULL;
	FILE *f;
	long n;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/%s.dat", dir, name);
	f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(table, 1, len, f), len);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "cd %s && iasl -d %s.dat > iasl.log 2>&1 || cat iasl.log >&2",
		 dir, name);
	assert_int_equal(system(cmd), 0);
	snprintf(path, sizeof(path), "%s/%s.dsl", dir, name);
	f = fopen(path, "r");
	if (f) {
		fseek(f, 0, SEEK_END);
		n = ftell(f);
		rewind(f);
		text = calloc(1, (size_t)n + 1);
		assert_non_null(text);
		assert_int_equal(fread(text, 1, (size_t)n, f), (size_t)n);
		fclose(f);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
	return text;
}

static void expect_has(const char *text, const char *needle)
{
	if (!strstr(text, needle))
		fail_msg("iasl's disassembly lacks '%s':\n%s", needle, text);
}

#define SKIP_WITHOUT_IASL()                                                              \
	do {                                                                             \
		if (!have_iasl()) {                                                      \
			fprintf(stderr, "iasl not found (Debian package acpica-tools, "  \
					"scripts/install-deps.sh): skipping the iasl -d check\n"); \
			skip();                                                          \
		}                                                                        \
	} while (0)

static void test_iasl_dsdt(void **state)
{
	struct tables *t = malloc(sizeof(*t));
	char *text;

	(void)state;
	assert_non_null(t);
	SKIP_WITHOUT_IASL();
	build(t, 2, true);
	text = iasl_disassemble(t->dsdt, le32(t->dsdt + 4), "dsdt");
	assert_non_null(text);
	expect_has(text, "DefinitionBlock (\"\", \"DSDT\", 2,");
	expect_has(text, "Scope (\\_SB)");
	expect_has(text, "Device (PCI0)");
	expect_has(text, "Name (_HID, EisaId (\"PNP0A08\")");
	expect_has(text, "Name (_CID, EisaId (\"PNP0A03\")");
	expect_has(text, "Name (_SEG, Zero)");
	expect_has(text, "Name (_BBN, Zero)");
	expect_has(text, "WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,");
	expect_has(text, "0x0CF7,             // Range Maximum");
	expect_has(text, "0x0D00,             // Range Minimum");
	expect_has(text, "DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,");
	expect_has(text, "0xE0000000,         // Range Minimum");
	expect_has(text, "0xEFFFFFFF,         // Range Maximum");
	/* 31 slots x INTA..INTD; slot 1 INTA on pin 16, slot 9 INTA on 16 again
	 * (the MP table's 16 + (slot - 1) % 8), slot 31 INTD on 16 + (30 + 3) % 8 = 17. */
	expect_has(text, "Name (_PRT, Package (0x7C)");
	expect_has(text, "0x0001FFFF, \n                    Zero, \n                    Zero, \n                    0x10");
	expect_has(text, "0x0009FFFF, \n                    Zero, \n                    Zero, \n                    0x10");
	expect_has(text, "0x001FFFFF, \n                    0x03, \n                    Zero, \n                    0x11");
	expect_has(text, "Device (COM1)");
	expect_has(text, "EisaId (\"PNP0501\")");
	expect_has(text, "{4}");
	expect_has(text, "Device (PEVT)");
	expect_has(text, "Name (_HID, \"QEMU0001\")");
	expect_has(text, "0x0505,             // Range Minimum");
	expect_has(text, "Name (\\_S5, Package (0x04)");
	expect_has(text, "0x05, \n        0x05, \n        Zero, \n        Zero");
	free(text);

	/* Without pvpanic the device is gone. */
	build(t, 1, false);
	text = iasl_disassemble(t->dsdt, le32(t->dsdt + 4), "dsdt");
	assert_non_null(text);
	assert_null(strstr(text, "QEMU0001"));
	free(text);
	free(t);
}

static void test_iasl_fadt_madt(void **state)
{
	struct tables *t = malloc(sizeof(*t));
	char *text;

	(void)state;
	assert_non_null(t);
	SKIP_WITHOUT_IASL();
	build(t, 3, true);
	text = iasl_disassemble(t->fadt, le32(t->fadt + 4), "facp");
	assert_non_null(text);
	expect_has(text, "Hardware Reduced (V5) : 0");
	expect_has(text, "Reset Register Supported (V2) : 1");
	expect_has(text, "Value to cause reset : 0F");
	expect_has(text, "SCI Interrupt : 0009");
	expect_has(text, "PM1A Event Block Address : 00000600");
	expect_has(text, "PM1A Control Block Address : 00000604");
	expect_has(text, "PM1 Event Block Length : 04");
	expect_has(text, "PM1 Control Block Length : 02");
	expect_has(text, "Address : 0000000000000606"); /* RESET_REG */
	assert_null(strstr(text, "Invalid"));
	free(text);
	text = iasl_disassemble(t->madt, le32(t->madt + 4), "apic");
	assert_non_null(text);
	expect_has(text, "Local Apic ID : 02");
	expect_has(text, "I/O Apic ID : 03");
	expect_has(text, "Address : FEC00000");
	expect_has(text, "Interrupt Input LINT : 01");
	expect_has(text, "Subtable Type : 02 [Interrupt Source Override]");
	expect_has(text, "Source : 09");
	assert_null(strstr(text, "Invalid"));
	free(text);
	free(t);
}

/* ---- the sleep control and reset registers ---- */

struct exit_log {
	int status;
	int calls;
	char reason[64];
};

static void record_exit(void *opaque, int status, const char *reason)
{
	struct exit_log *log = opaque;

	log->status = status;
	log->calls++;
	snprintf(log->reason, sizeof(log->reason), "%s", reason);
}

static void pm_write(struct acpi_pm *pm, uint16_t port, uint64_t v, unsigned size)
{
	assert_int_equal(pm->region.ops->write(&pm->region, port - pm->region.base, &v, size), 0);
}

static uint64_t pm_read(struct acpi_pm *pm, uint16_t port, unsigned size)
{
	uint64_t v = 0x5a5a5a5a5a5a5a5aull;

	assert_int_equal(pm->region.ops->read(&pm->region, port - pm->region.base, &v, size), 0);
	return size == 8 ? v : v & ((1ull << (8 * size)) - 1);
}

#define S5_WORD (ACPI_S5_SLP_TYP << ACPI_PM1_SLP_TYP_SHIFT | ACPI_PM1_SLP_EN)

static void test_pm_hostile_writes(void **state)
{
	struct exit_log log = { 0 };
	struct device_host host = { .request_exit = record_exit, .opaque = &log };
	struct acpi_pm pm;

	(void)state;
	acpi_pm_init(&pm, &host);
	assert_int_equal(pm.region.base, 0x600);
	assert_int_equal(pm.region.len, 8);
	/* Reads: no status, nothing enabled, PM1_CNT says SCI_EN (ACPI mode). */
	assert_int_equal(pm_read(&pm, ACPI_PM1_EVT_PORT, 4), 0);
	assert_int_equal(pm_read(&pm, ACPI_PM1_CNT_PORT, 2), ACPI_PM1_SCI_EN);
	assert_int_equal(pm_read(&pm, ACPI_PM1_CNT_PORT, 1), ACPI_PM1_SCI_EN);
	assert_int_equal(pm_read(&pm, ACPI_PM1_CNT_PORT + 1, 1), 0);
	assert_int_equal(pm_read(&pm, ACPI_PM_BASE, 8), (uint64_t)ACPI_PM1_SCI_EN << 32);
	assert_int_equal(pm_read(&pm, ACPI_RESET_PORT, 1), 0);

	/* Other sleep types, SLP_TYP without SLP_EN, the wrong widths and
	 * places, PM1_STS/PM1_EN, a wrong reset value, a wide reset write. */
	for (unsigned typ = 0; typ < 8; typ++)
		if (typ != ACPI_S5_SLP_TYP)
			pm_write(&pm, ACPI_PM1_CNT_PORT, typ << ACPI_PM1_SLP_TYP_SHIFT | ACPI_PM1_SLP_EN, 2);
	pm_write(&pm, ACPI_PM1_CNT_PORT, ACPI_S5_SLP_TYP << ACPI_PM1_SLP_TYP_SHIFT, 2);
	pm_write(&pm, ACPI_PM1_CNT_PORT, S5_WORD, 1);       /* only the low byte */
	pm_write(&pm, ACPI_PM1_CNT_PORT, S5_WORD, 4);       /* a dword over the reset port */
	pm_write(&pm, ACPI_PM1_CNT_PORT - 1, S5_WORD << 8, 4);
	pm_write(&pm, ACPI_PM1_EVT_PORT, S5_WORD, 2);
	pm_write(&pm, ACPI_PM1_EVT_PORT + 2, S5_WORD, 2);
	pm_write(&pm, ACPI_PM1_EVT_PORT, 0xffffffff, 4);
	for (unsigned val = 0; val < 256; val++)
		if (val != ACPI_RESET_VALUE)
			pm_write(&pm, ACPI_RESET_PORT, val, 1);
	pm_write(&pm, ACPI_RESET_PORT, ACPI_RESET_VALUE, 2);
	pm_write(&pm, ACPI_RESET_PORT + 1, ACPI_RESET_VALUE, 1);
	assert_int_equal(log.calls, 0);

	/* SLP_TYP 5 | SLP_EN, other bits ignored: poweroff; also as the
	 * control register's high byte alone. */
	pm_write(&pm, ACPI_PM1_CNT_PORT, S5_WORD | 0xc001, 2);
	assert_int_equal(log.calls, 1);
	assert_int_equal(log.status, VMRUN_EXIT_POWEROFF);
	assert_string_equal(log.reason, "ACPI poweroff (S5)");
	pm_write(&pm, ACPI_PM1_CNT_PORT + 1, S5_WORD >> 8, 1);
	assert_int_equal(log.calls, 2);
	assert_int_equal(log.status, VMRUN_EXIT_POWEROFF);
	pm_write(&pm, ACPI_RESET_PORT, ACPI_RESET_VALUE, 1);
	assert_int_equal(log.calls, 3);
	assert_int_equal(log.status, VMRUN_EXIT_RESET);
	assert_string_equal(log.reason, "ACPI reset register");
}

/* The RSDP's address handed to the kernel: boot_params.acpi_rsdp_addr
 * (offset 0x070, Documentation/arch/x86/zero-page.rst) or hvm_start_info's
 * rsdp_paddr (offset 32, xen/include/public/arch-x86/hvm/start_info.h). */
static void test_rsdp_handover(void **state)
{
	struct guest_mem gm;
	struct boot_setup bs = { .protocol = BOOT_LINUX64, .arg = X86_BOOT_PARAMS };
	uint8_t *p;

	(void)state;
	assert_int_equal(guest_mem_init(&gm, 16u << 20), 0);
	assert_int_equal(boot_set_acpi_rsdp(&gm, &bs, ACPI_TABLES_GPA), 0);
	p = guest_mem_ptr(&gm, X86_BOOT_PARAMS, 4096);
	assert_non_null(p);
	assert_int_equal(le64(p + 0x70), ACPI_TABLES_GPA);
	bs = (struct boot_setup){ .protocol = BOOT_PVH, .arg = X86_PVH_START_INFO };
	assert_int_equal(boot_set_acpi_rsdp(&gm, &bs, ACPI_TABLES_GPA), 0);
	p = guest_mem_ptr(&gm, X86_PVH_START_INFO, 56);
	assert_int_equal(le64(p + 32), ACPI_TABLES_GPA);
	/* Outside RAM: refused, nothing written. */
	bs.arg = (16u << 20) - 8;
	assert_true(boot_set_acpi_rsdp(&gm, &bs, ACPI_TABLES_GPA) < 0);
	guest_mem_exit(&gm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_aml_integers),
		cmocka_unit_test(test_aml_names),
		cmocka_unit_test(test_aml_pkglength),
		cmocka_unit_test(test_aml_nesting_errors),
		cmocka_unit_test(test_aml_resource_template),
		cmocka_unit_test(test_tables_structure),
		cmocka_unit_test(test_tables_refused),
		cmocka_unit_test(test_iasl_dsdt),
		cmocka_unit_test(test_iasl_fadt_madt),
		cmocka_unit_test(test_pm_hostile_writes),
		cmocka_unit_test(test_rsdp_handover),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

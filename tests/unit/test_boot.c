/* ELF parsing/loading and the boot information blocks, against
 * include/vmrun/boot.h, the ELF-64 object file format, Linux's
 * Documentation/arch/x86/boot.rst and zero-page.rst, and Xen's
 * public/arch-x86/hvm/start_info.h.  ELF images are built by hand here. */
#include "unit.h"

#include <elf.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "vmrun/boot.h"
#include "vmrun/guest_mem.h"
#include "vmrun/x86.h"

#define MiB (1ull << 20)
#define GiB (1ull << 30)
#define IMG_CAP 0x10000

static uint8_t image[IMG_CAP];
static char err[256];

/* ---- little-endian raw access ---- */

static uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static void wr16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void wr64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* ---- building ELF images ---- */

struct ph {
	uint32_t type;
	uint64_t offset, vaddr, paddr, filesz, memsz;
};

#define PH_OFF(i) (sizeof(Elf64_Ehdr) + (i) * sizeof(Elf64_Phdr))

/* An ELF64 x86-64 ET_EXEC header at 0, the program headers right after it.
 * Returns the file length: the end of the headers or of the furthest segment
 * contents, whichever is larger (contents stay zero unless filled later). */
static size_t elf_build(uint64_t entry, const struct ph *ph, unsigned n)
{
	Elf64_Ehdr eh;
	size_t len = PH_OFF(n);

	memset(image, 0, sizeof(image));
	memset(&eh, 0, sizeof(eh));
	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS64;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	eh.e_ident[EI_VERSION] = EV_CURRENT;
	eh.e_ident[EI_OSABI] = ELFOSABI_SYSV;
	eh.e_type = ET_EXEC;
	eh.e_machine = EM_X86_64;
	eh.e_version = EV_CURRENT;
	eh.e_entry = entry;
	eh.e_phoff = sizeof(Elf64_Ehdr);
	eh.e_ehsize = sizeof(Elf64_Ehdr);
	eh.e_phentsize = sizeof(Elf64_Phdr);
	eh.e_phnum = (Elf64_Half)n;
	memcpy(image, &eh, sizeof(eh));
	assert_true(PH_OFF(n) <= IMG_CAP);
	for (unsigned i = 0; i < n; i++) {
		Elf64_Phdr p;

		memset(&p, 0, sizeof(p));
		p.p_type = ph[i].type;
		p.p_flags = PF_R | PF_W | PF_X;
		p.p_offset = ph[i].offset;
		p.p_vaddr = ph[i].vaddr;
		p.p_paddr = ph[i].paddr;
		p.p_filesz = ph[i].filesz;
		p.p_memsz = ph[i].memsz;
		p.p_align = 0x1000;
		memcpy(image + PH_OFF(i), &p, sizeof(p));
		if (ph[i].offset <= IMG_CAP && ph[i].filesz <= IMG_CAP - ph[i].offset &&
		    ph[i].offset + ph[i].filesz > len)
			len = ph[i].offset + ph[i].filesz;
	}
	return len;
}

/* One ELF note at @p; returns its size (header, padded name, padded desc). */
static size_t note_put(uint8_t *p, const char *name, uint32_t namesz, uint32_t type,
		       const void *desc, uint32_t descsz)
{
	size_t name_pad = (namesz + 3u) & ~3u, desc_pad = (descsz + 3u) & ~3u;

	wr32(p, namesz);
	wr32(p + 4, descsz);
	wr32(p + 8, type);
	memcpy(p + 12, name, namesz);
	memcpy(p + 12 + name_pad, desc, descsz);
	return 12 + name_pad + desc_pad;
}

/* Parse from an exactly-sized heap copy, so that ASan sees any read past
 * @len. */
static int parse(size_t len, struct elf_image *img)
{
	uint8_t *copy = malloc(len ? len : 1);
	int r;

	assert_non_null(copy);
	memcpy(copy, image, len);
	memset(err, 0, sizeof(err));
	r = elf_parse(copy, len, img, err, sizeof(err));
	free(copy);
	return r;
}

static void expect_noexec_at(size_t len, const char *what, int line)
{
	struct elf_image img;
	int r = parse(len, &img);

	if (r != -ENOEXEC)
		fail_msg("line %d, %s: elf_parse returned %d, want -ENOEXEC", line, what, r);
	assert_one_line_naming(err, NULL);
}

#define expect_noexec(len, what) expect_noexec_at((len), (what), __LINE__)

/* The reference image: two loadable segments (the second with BSS) and a
 * non-load header that must be ignored. */
static const struct ph good_ph[] = {
	{ PT_LOAD, 0x1000, 0x100000, 0x100000, 0x800, 0x800 },
	{ PT_LOAD, 0x2000, 0x200000, 0x200000, 0x100, 0x3000 },
	{ PT_GNU_STACK, 0, 0, 0, 0, 0 },
};

static size_t build_good(void)
{
	size_t len = elf_build(0x100010, good_ph, ARRAY_LEN(good_ph));

	for (unsigned i = 0; i < 0x800; i++)
		image[0x1000 + i] = (uint8_t)(i ^ 0x5a);
	for (unsigned i = 0; i < 0x100; i++)
		image[0x2000 + i] = (uint8_t)(0xa0 + i);
	assert_int_equal(len, 0x2100);
	return len;
}

/* ---- elf_parse: good images ---- */

static void test_parse_good(void **state)
{
	struct elf_image img;
	size_t len = build_good();

	assert_int_equal(parse(len, &img), 0);
	assert_int_equal(img.entry, 0x100010);
	assert_false(img.has_pvh);
	assert_int_equal(img.n_segments, 2);
	assert_int_equal(img.segments[0].paddr, 0x100000);
	assert_int_equal(img.segments[0].offset, 0x1000);
	assert_int_equal(img.segments[0].filesz, 0x800);
	assert_int_equal(img.segments[0].memsz, 0x800);
	assert_int_equal(img.segments[1].paddr, 0x200000);
	assert_int_equal(img.segments[1].offset, 0x2000);
	assert_int_equal(img.segments[1].filesz, 0x100);
	assert_int_equal(img.segments[1].memsz, 0x3000);
	assert_int_equal(img.lowest, 0x100000);
	assert_int_equal(img.highest, 0x203000);
}

static void test_parse_segments_out_of_order(void **state)
{
	static const struct ph ph[] = {
		{ PT_LOAD, 0x2000, 0x400000, 0x400000, 0x10, 0x1000 },
		{ PT_LOAD, 0x1000, 0x180000, 0x180000, 0x10, 0x10 },
	};
	struct elf_image img;
	size_t len = elf_build(0x400000, ph, ARRAY_LEN(ph));

	assert_int_equal(parse(len, &img), 0);
	assert_int_equal(img.lowest, 0x180000);
	assert_int_equal(img.highest, 0x401000);
	assert_int_equal(img.entry, 0x400000);
}

static void test_parse_entry_in_bss(void **state)
{
	struct elf_image img;
	size_t len = build_good();

	/* Inside memsz though past filesz: still inside the segment. */
	wr64(image + offsetof(Elf64_Ehdr, e_entry), 0x202fff);
	assert_int_equal(parse(len, &img), 0);
	assert_int_equal(img.entry, 0x202fff);
}

static void test_parse_pvh_note(void **state)
{
	struct ph ph[4];
	struct elf_image img;
	uint8_t gnu_desc[16] = { 0 };
	uint32_t pvh = 0x100040;
	size_t len, n;

	memcpy(ph, good_ph, sizeof(good_ph));
	ph[3] = (struct ph){ PT_NOTE, 0x3000, 0, 0, 0, 0 };
	/* Another note first, so the walk has to step over it. */
	n = note_put(image + 0x3000, "GNU", 4, 3 /* NT_GNU_BUILD_ID */, gnu_desc, 16);
	n += note_put(image + 0x3000 + n, "Xen", 4, XEN_ELFNOTE_PHYS32_ENTRY, &pvh, 4);
	ph[3].filesz = n;
	{
		uint8_t notes[64];

		memcpy(notes, image + 0x3000, n);
		len = elf_build(0x100010, ph, 4);
		memcpy(image + 0x3000, notes, n);
	}
	assert_int_equal(len, 0x3000 + n);
	assert_int_equal(parse(len, &img), 0);
	assert_true(img.has_pvh);
	assert_int_equal(img.pvh_entry, 0x100040);
	assert_int_equal(img.entry, 0x100010);
	assert_int_equal(img.n_segments, 2);
}

static void test_parse_other_xen_notes_ignored(void **state)
{
	struct ph ph[4];
	struct elf_image img;
	uint32_t v = 0xdead;
	uint8_t notes[64];
	size_t len, n;

	memcpy(ph, good_ph, sizeof(good_ph));
	/* Xen note of another type, and a type-18 note of another owner. */
	n = note_put(notes, "Xen", 4, 5, &v, 4);
	n += note_put(notes + n, "Foo", 4, XEN_ELFNOTE_PHYS32_ENTRY, &v, 4);
	ph[3] = (struct ph){ PT_NOTE, 0x3000, 0, 0, n, 0 };
	len = elf_build(0x100010, ph, 4);
	memcpy(image + 0x3000, notes, n);
	assert_int_equal(parse(len, &img), 0);
	assert_false(img.has_pvh);
}

static void test_parse_virtual_entry(void **state)
{
	static const struct ph ph[] = {
		{ PT_LOAD, 0x1000, 0xffffffff81000000ull, 0x1000000, 0x1000, 0x2000 },
		{ PT_LOAD, 0x2000, 0xffffffff82000000ull, 0x3000000, 0x1000, 0x1000 },
	};
	struct elf_image img;
	size_t len = elf_build(0xffffffff82000123ull, ph, ARRAY_LEN(ph));

	assert_int_equal(parse(len, &img), 0);
	assert_int_equal(img.entry, 0x3000123);
	assert_int_equal(img.segments[0].vaddr, 0xffffffff81000000ull);
	assert_int_equal(img.lowest, 0x1000000);
	assert_int_equal(img.highest, 0x3001000);
}

/* ---- elf_parse: ordinary programs are no kernels ---- */

/* The headers of a statically linked program (busybox): each is refused
 * without a PVH note, with a line saying it is no kernel; with one, the
 * note wins.  A position-independent program (ET_DYN) always is. */
static void test_reject_ordinary_program(void **state)
{
	static const uint32_t marks[] = { PT_INTERP, PT_DYNAMIC, PT_TLS, PT_GNU_RELRO };
	struct ph ph[4];
	struct elf_image img;
	uint32_t pvh = 0x100040;
	uint8_t notes[64];
	size_t len, n;

	for (unsigned i = 0; i < ARRAY_LEN(marks); i++) {
		memcpy(ph, good_ph, sizeof(good_ph));
		ph[2] = (struct ph){ marks[i], 0x1000, 0x100000, 0x100000, 0x10, 0x10 };
		len = elf_build(0x100010, ph, 3);
		assert_int_equal(parse(len, &img), -ENOEXEC);
		assert_one_line_naming(err, "not a kernel");

		n = note_put(notes, "Xen", 4, XEN_ELFNOTE_PHYS32_ENTRY, &pvh, 4);
		ph[3] = (struct ph){ PT_NOTE, 0x3000, 0, 0, n, 0 };
		len = elf_build(0x100010, ph, 4);
		memcpy(image + 0x3000, notes, n);
		assert_int_equal(parse(len, &img), 0);
		assert_true(img.has_pvh);
	}
	len = build_good();
	wr16(image + offsetof(Elf64_Ehdr, e_type), ET_DYN);
	assert_int_equal(parse(len, &img), -ENOEXEC);
	assert_one_line_naming(err, "not a kernel");
}

/* ---- elf_parse: malformed images ---- */

static void test_reject_not_elf(void **state)
{
	static const char text[] = "#!/bin/sh\necho this is not an ELF file at all, really\n";

	memset(image, 0, sizeof(image));
	memcpy(image, text, sizeof(text));
	expect_noexec(sizeof(text), "shell script");
	expect_noexec(0, "empty file");
	memcpy(image, ELFMAG, SELFMAG);
	expect_noexec(3, "3 bytes of magic");
	expect_noexec(SELFMAG, "magic only");
	image[1] = 'e';
	expect_noexec(0x100, "bad magic");
}

static void test_reject_wrong_class_machine_type(void **state)
{
	size_t len;

	len = build_good();
	image[EI_CLASS] = ELFCLASS32;
	expect_noexec(len, "ELFCLASS32");

	len = build_good();
	image[EI_CLASS] = ELFCLASSNONE;
	expect_noexec(len, "ELFCLASSNONE");

	len = build_good();
	image[EI_DATA] = ELFDATA2MSB;
	expect_noexec(len, "big endian");

	len = build_good();
	wr16(image + offsetof(Elf64_Ehdr, e_machine), EM_386);
	expect_noexec(len, "EM_386");

	len = build_good();
	wr16(image + offsetof(Elf64_Ehdr, e_machine), EM_AARCH64);
	expect_noexec(len, "EM_AARCH64");

	len = build_good();
	wr16(image + offsetof(Elf64_Ehdr, e_type), ET_DYN);
	expect_noexec(len, "ET_DYN");

	len = build_good();
	wr16(image + offsetof(Elf64_Ehdr, e_type), ET_REL);
	expect_noexec(len, "ET_REL");
}

static void test_reject_truncated_header(void **state)
{
	build_good();
	expect_noexec(sizeof(Elf64_Ehdr) - 1, "header minus one byte");
	expect_noexec(40, "40 bytes");
	expect_noexec(EI_NIDENT, "e_ident only");
	expect_noexec(EI_NIDENT - 1, "short e_ident");
}

static void test_reject_phdrs_past_eof(void **state)
{
	size_t len;

	len = build_good();
	/* The table itself cut short. */
	expect_noexec(PH_OFF(3) - 1, "last phdr cut");
	expect_noexec(PH_OFF(1), "only the first phdr");

	len = build_good();
	wr64(image + offsetof(Elf64_Ehdr, e_phoff), len - 8);
	expect_noexec(len, "e_phoff near EOF");

	len = build_good();
	wr64(image + offsetof(Elf64_Ehdr, e_phoff), UINT64_MAX - 0x10);
	expect_noexec(len, "e_phoff that wraps");

	len = build_good();
	wr64(image + offsetof(Elf64_Ehdr, e_phoff), 0x100000);
	expect_noexec(len, "e_phoff past EOF");

	len = build_good();
	/* Three headers, the third one starting right at EOF. */
	wr64(image + offsetof(Elf64_Ehdr, e_phoff), len - 2 * sizeof(Elf64_Phdr));
	expect_noexec(len, "last phdr past EOF");
}

static void test_reject_bad_phdr_table(void **state)
{
	size_t len;

	len = build_good();
	wr16(image + offsetof(Elf64_Ehdr, e_phentsize), 32);
	expect_noexec(len, "e_phentsize 32");

	len = build_good();
	wr16(image + offsetof(Elf64_Ehdr, e_phnum), 0);
	expect_noexec(len, "no program headers");
}

static void test_reject_too_many_phdrs(void **state)
{
	struct ph ph[ELF_MAX_PHDRS + 1];
	size_t len;

	/* 65 headers: one load segment and 64 ignorable ones, all in the file. */
	memset(ph, 0, sizeof(ph));
	ph[0] = (struct ph){ PT_LOAD, 0x8000, 0x100000, 0x100000, 0x10, 0x10 };
	for (unsigned i = 1; i < ARRAY_LEN(ph); i++)
		ph[i].type = PT_NULL;
	len = elf_build(0x100000, ph, ELF_MAX_PHDRS + 1);
	expect_noexec(len, "ELF_MAX_PHDRS + 1 headers");

	/* The same with exactly ELF_MAX_PHDRS is fine. */
	{
		struct elf_image img;

		len = elf_build(0x100000, ph, ELF_MAX_PHDRS);
		assert_int_equal(parse(len, &img), 0);
	}
}

static void test_reject_too_many_load_segments(void **state)
{
	struct ph ph[ELF_MAX_LOAD_SEGMENTS + 1];
	struct elf_image img;
	size_t len;

	for (unsigned i = 0; i < ARRAY_LEN(ph); i++)
		ph[i] = (struct ph){ PT_LOAD, 0x2000, 0x100000 + i * 0x1000ull,
				     0x100000 + i * 0x1000ull, 0x10, 0x10 };
	len = elf_build(0x100000, ph, ELF_MAX_LOAD_SEGMENTS);
	assert_int_equal(parse(len, &img), 0);
	assert_int_equal(img.n_segments, ELF_MAX_LOAD_SEGMENTS);
	len = elf_build(0x100000, ph, ELF_MAX_LOAD_SEGMENTS + 1);
	expect_noexec(len, "ELF_MAX_LOAD_SEGMENTS + 1 loadable segments");
}

static void test_reject_segment_past_eof(void **state)
{
	static const struct {
		uint64_t offset, filesz, memsz;
		const char *what;
	} bad[] = {
		{ 0x2000, 0x101, 0x3000, "one byte past EOF" },
		{ 0x2100, 0x1, 0x1000, "starts at EOF" },
		{ 0x100000, 0x10, 0x1000, "offset far past EOF" },
		{ UINT64_MAX - 0xf, 0x20, 0x1000, "offset + filesz wraps" },
		{ UINT64_MAX, 0x1, 0x1000, "offset UINT64_MAX" },
		{ 0x2000, UINT64_MAX, UINT64_MAX, "filesz UINT64_MAX" },
		{ 0x10, UINT64_MAX - 0x8, UINT64_MAX, "filesz that wraps with offset" },
	};

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		size_t len = build_good();
		uint8_t *p = image + PH_OFF(1);

		wr64(p + offsetof(Elf64_Phdr, p_offset), bad[i].offset);
		wr64(p + offsetof(Elf64_Phdr, p_filesz), bad[i].filesz);
		wr64(p + offsetof(Elf64_Phdr, p_memsz), bad[i].memsz);
		expect_noexec(len, bad[i].what);
	}
}

static void test_reject_filesz_over_memsz(void **state)
{
	size_t len = build_good();

	wr64(image + PH_OFF(0) + offsetof(Elf64_Phdr, p_memsz), 0x7ff);
	expect_noexec(len, "filesz > memsz");
}

/* Regression: a PT_LOAD header with p_memsz == 0 but p_filesz > 0 was
 * skipped before the filesz > memsz check.  The ELF gABI says the file size
 * may not be larger than the memory size: -ENOEXEC like any other. */
static void test_reject_filesz_over_zero_memsz(void **state)
{
	size_t len = build_good();

	/* Segment 1 (not the one holding the entry) gets memsz 0, filesz 0x100. */
	wr64(image + PH_OFF(1) + offsetof(Elf64_Phdr, p_memsz), 0);
	expect_noexec(len, "filesz 0x100 > memsz 0");
}

static void test_reject_overlapping_segments(void **state)
{
	static const struct {
		uint64_t a, alen, b, blen;
		const char *what;
	} cases[] = {
		{ 0x100000, 0x2000, 0x101000, 0x1000, "second inside the first" },
		{ 0x101000, 0x1000, 0x100000, 0x2000, "second contains the first" },
		{ 0x100000, 0x2000, 0x101fff, 0x10, "one byte" },
		{ 0x200000, 0x1000, 0x1ff000, 0x1001, "second below, reaching into first" },
		{ 0x300000, 0x1000, 0x300000, 0x1000, "identical" },
	};

	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		const struct ph ph[] = {
			{ PT_LOAD, 0x1000, cases[i].a, cases[i].a, 0x10, cases[i].alen },
			{ PT_LOAD, 0x1000, cases[i].b, cases[i].b, 0x10, cases[i].blen },
		};
		size_t len = elf_build(cases[i].a, ph, 2);

		expect_noexec(len, cases[i].what);
	}
	/* Adjacent is fine. */
	{
		const struct ph ph[] = {
			{ PT_LOAD, 0x1000, 0x100000, 0x100000, 0x10, 0x1000 },
			{ PT_LOAD, 0x1000, 0x101000, 0x101000, 0x10, 0x1000 },
		};
		struct elf_image img;
		size_t len = elf_build(0x100000, ph, 2);

		assert_int_equal(parse(len, &img), 0);
		assert_int_equal(img.n_segments, 2);
	}
}

static void test_reject_segment_wraps_address_space(void **state)
{
	const struct ph ph[] = {
		{ PT_LOAD, 0x1000, 0x100000, 0x100000, 0x10, 0x10 },
		{ PT_LOAD, 0x1000, 0, UINT64_MAX - 0xff, 0x10, 0x200 },
	};
	size_t len = elf_build(0x100000, ph, 2);

	expect_noexec(len, "paddr + memsz wraps");
}

static void test_reject_entry_outside(void **state)
{
	size_t len;

	len = build_good();
	wr64(image + offsetof(Elf64_Ehdr, e_entry), 0x50);
	expect_noexec(len, "entry 0x50");

	len = build_good();
	wr64(image + offsetof(Elf64_Ehdr, e_entry), 0x100800); /* end of segment 0 */
	expect_noexec(len, "entry one past segment 0");

	len = build_good();
	wr64(image + offsetof(Elf64_Ehdr, e_entry), 0x203000); /* highest */
	expect_noexec(len, "entry at highest");

	len = build_good();
	wr64(image + offsetof(Elf64_Ehdr, e_entry), 0xffffffff81000000ull);
	expect_noexec(len, "virtual entry without such a segment");
}

static void test_reject_no_load_segments(void **state)
{
	static const struct ph ph[] = { { PT_GNU_STACK, 0, 0, 0, 0, 0 } };
	size_t len = elf_build(0x100000, ph, 1);

	expect_noexec(len, "no PT_LOAD");
}

/* An image whose PT_NOTE segment (at 0x3000) holds @n bytes of @notes. */
static size_t build_with_notes(const uint8_t *notes, size_t n, uint64_t note_filesz)
{
	struct ph ph[4];
	size_t len;

	memcpy(ph, good_ph, sizeof(good_ph));
	ph[3] = (struct ph){ PT_NOTE, 0x3000, 0, 0, note_filesz, 0 };
	len = elf_build(0x100010, ph, 4);
	memcpy(image + 0x3000, notes, n);
	if (len < 0x3000 + n)
		len = 0x3000 + n;
	return len;
}

static void test_reject_bad_notes(void **state)
{
	uint8_t notes[128];
	uint32_t pvh = 0x100040;
	size_t n, len;

	memset(notes, 0, sizeof(notes));
	n = note_put(notes, "Xen", 4, XEN_ELFNOTE_PHYS32_ENTRY, &pvh, 4); /* 20 bytes */

	/* namesz reaching past the end of the segment. */
	memcpy(notes + n, notes, n);
	wr32(notes, 100);
	len = build_with_notes(notes, 2 * n, n);
	expect_noexec(len, "namesz past the segment end");

	/* descsz past the segment end (the file goes on: the segment is the limit). */
	n = note_put(notes, "Xen", 4, XEN_ELFNOTE_PHYS32_ENTRY, &pvh, 4);
	memset(notes + n, 0, 64);
	wr32(notes + 4, 40);
	len = build_with_notes(notes, n + 64, n);
	expect_noexec(len, "descsz past the segment end");

	/* A note of another owner whose descsz runs past the segment end. */
	{
		uint8_t id[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };

		n = note_put(notes, "GNU", 4, 3, id, 8);
		memset(notes + n, 0, 64);
		wr32(notes + 4, 48);
		len = build_with_notes(notes, n + 64, n);
		expect_noexec(len, "GNU note descsz past the segment end");
	}

	/* A 64-bit PVH entry note of which the segment holds only 4 bytes. */
	{
		uint64_t pvh64 = 0x100040;

		n = note_put(notes, "Xen", 4, XEN_ELFNOTE_PHYS32_ENTRY, &pvh64, 8);
		len = build_with_notes(notes, n, n - 4);
		expect_noexec(len, "PVH note desc cut by the segment end");
	}

	/* Sizes that overflow 32 bits once padded. */
	n = note_put(notes, "Xen", 4, XEN_ELFNOTE_PHYS32_ENTRY, &pvh, 4);
	wr32(notes, 0xffffffffu);
	len = build_with_notes(notes, n, n);
	expect_noexec(len, "namesz 0xffffffff");

	n = note_put(notes, "Xen", 4, XEN_ELFNOTE_PHYS32_ENTRY, &pvh, 4);
	wr32(notes + 4, 0xfffffffeu);
	len = build_with_notes(notes, n, n);
	expect_noexec(len, "descsz 0xfffffffe");

	/* The note segment itself past EOF. */
	n = note_put(notes, "Xen", 4, XEN_ELFNOTE_PHYS32_ENTRY, &pvh, 4);
	len = build_with_notes(notes, n, n);
	wr64(image + PH_OFF(3) + offsetof(Elf64_Phdr, p_filesz), 0x10000);
	expect_noexec(len, "note segment past EOF");
	wr64(image + PH_OFF(3) + offsetof(Elf64_Phdr, p_offset), UINT64_MAX - 4);
	wr64(image + PH_OFF(3) + offsetof(Elf64_Phdr, p_filesz), 20);
	expect_noexec(len, "note segment offset wraps");
}

static void test_reject_pvh_entry_outside(void **state)
{
	uint8_t notes[64];
	uint32_t pvh;
	size_t n, len;

	pvh = 0x5000;
	n = note_put(notes, "Xen", 4, XEN_ELFNOTE_PHYS32_ENTRY, &pvh, 4);
	len = build_with_notes(notes, n, n);
	expect_noexec(len, "PVH entry 0x5000");

	pvh = 0x100800; /* one past segment 0 */
	n = note_put(notes, "Xen", 4, XEN_ELFNOTE_PHYS32_ENTRY, &pvh, 4);
	len = build_with_notes(notes, n, n);
	expect_noexec(len, "PVH entry just past a segment");

	pvh = 0x2007ff; /* inside segment 1: fine */
	n = note_put(notes, "Xen", 4, XEN_ELFNOTE_PHYS32_ENTRY, &pvh, 4);
	len = build_with_notes(notes, n, n);
	{
		struct elf_image img;

		assert_int_equal(parse(len, &img), 0);
		assert_true(img.has_pvh);
		assert_int_equal(img.pvh_entry, 0x2007ff);
	}
}

/* ---- elf_load ---- */

/* ---- ELF32 i386 with a PVH note ---- */

#define PH32_OFF(i) (sizeof(Elf32_Ehdr) + (i) * sizeof(Elf32_Phdr))

/* elf_build() for an ELF32 i386 file. */
static size_t elf32_build(uint32_t entry, const struct ph *ph, unsigned n)
{
	Elf32_Ehdr eh;
	size_t len = PH32_OFF(n);

	memset(image, 0, sizeof(image));
	memset(&eh, 0, sizeof(eh));
	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS32;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	eh.e_ident[EI_VERSION] = EV_CURRENT;
	eh.e_type = ET_EXEC;
	eh.e_machine = EM_386;
	eh.e_version = EV_CURRENT;
	eh.e_entry = entry;
	eh.e_phoff = sizeof(Elf32_Ehdr);
	eh.e_ehsize = sizeof(Elf32_Ehdr);
	eh.e_phentsize = sizeof(Elf32_Phdr);
	eh.e_phnum = (Elf32_Half)n;
	memcpy(image, &eh, sizeof(eh));
	assert_true(PH32_OFF(n) <= IMG_CAP);
	for (unsigned i = 0; i < n; i++) {
		Elf32_Phdr p;

		memset(&p, 0, sizeof(p));
		p.p_type = ph[i].type;
		p.p_flags = PF_R | PF_W | PF_X;
		p.p_offset = (Elf32_Off)ph[i].offset;
		p.p_vaddr = (Elf32_Addr)ph[i].vaddr;
		p.p_paddr = (Elf32_Addr)ph[i].paddr;
		p.p_filesz = (Elf32_Word)ph[i].filesz;
		p.p_memsz = (Elf32_Word)ph[i].memsz;
		p.p_align = 0x1000;
		memcpy(image + PH32_OFF(i), &p, sizeof(p));
		if (ph[i].offset <= IMG_CAP && ph[i].filesz <= IMG_CAP - ph[i].offset &&
		    ph[i].offset + ph[i].filesz > len)
			len = ph[i].offset + ph[i].filesz;
	}
	return len;
}

#define ELF32_NOTE_OFF 0x3000

/* good_ph as ELF32, a PT_NOTE with another note and the PVH entry
 * @pvh (@descsz 4 or 8 bytes) at ELF32_NOTE_OFF, and e_entry 0xc0100010
 * (a virtual address: unused). */
static size_t build_elf32(uint64_t pvh, uint32_t descsz, bool with_pvh)
{
	struct ph ph[4];
	uint8_t notes[64], gnu_desc[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	size_t len, n;

	n = note_put(notes, "GNU", 4, 3, gnu_desc, 8);
	if (with_pvh)
		n += note_put(notes + n, "Xen", 4, XEN_ELFNOTE_PHYS32_ENTRY, &pvh, descsz);
	memcpy(ph, good_ph, sizeof(good_ph));
	ph[3] = (struct ph){ PT_NOTE, ELF32_NOTE_OFF, 0, 0, n, 0 };
	len = elf32_build(0xc0100010u, ph, 4);
	memcpy(image + ELF32_NOTE_OFF, notes, n);
	for (unsigned i = 0; i < 0x800; i++)
		image[0x1000 + i] = (uint8_t)(i ^ 0x3c);
	for (unsigned i = 0; i < 0x100; i++)
		image[0x2000 + i] = (uint8_t)(0x10 + i);
	assert_int_equal(len, ELF32_NOTE_OFF + n);
	return len;
}

static void test_elf32_pvh_good(void **state)
{
	struct guest_mem gm;
	struct elf_image img;
	size_t len = build_elf32(0x100040, 4, true);
	uint8_t *seg1;

	assert_int_equal(parse(len, &img), 0);
	assert_true(img.is32);
	assert_true(img.has_pvh);
	assert_int_equal(img.pvh_entry, 0x100040);
	assert_int_equal(img.entry, 0x100040);
	assert_int_equal(img.n_segments, 2);
	assert_int_equal(img.segments[1].paddr, 0x200000);
	assert_int_equal(img.segments[1].filesz, 0x100);
	assert_int_equal(img.segments[1].memsz, 0x3000);
	assert_int_equal(img.lowest, 0x100000);
	assert_int_equal(img.highest, 0x203000);
	/* An 8-byte descriptor works too. */
	len = build_elf32(0x200010, 8, true);
	assert_int_equal(parse(len, &img), 0);
	assert_int_equal(img.pvh_entry, 0x200010);

	/* Loaded as the 64-bit path loads. */
	assert_int_equal(guest_mem_init(&gm, 16 * MiB), 0);
	memset(guest_mem_ptr(&gm, 0x200000, 0x4000), 0xcc, 0x4000);
	assert_int_equal(elf_load(&img, image, &gm, err, sizeof(err)), 0);
	assert_memory_equal(guest_mem_ptr(&gm, 0x100000, 0x800), image + 0x1000, 0x800);
	seg1 = guest_mem_ptr(&gm, 0x200000, 0x3000);
	assert_memory_equal(seg1, image + 0x2000, 0x100);
	for (unsigned i = 0x100; i < 0x3000; i++)
		assert_int_equal(seg1[i], 0);
	assert_int_equal(*(uint8_t *)guest_mem_ptr(&gm, 0x203000, 1), 0xcc);
	guest_mem_exit(&gm);
}

/* Without the PVH note there is no entry vmrun can use: refused, saying so. */
static void test_elf32_without_pvh_refused(void **state)
{
	struct elf_image img;
	size_t len = build_elf32(0, 4, false);

	assert_int_equal(parse(len, &img), -ENOEXEC);
	assert_one_line_naming(err, "32-bit ELF file without a PVH note");
	/* A PVH note of another name or type is no PVH note. */
	len = build_elf32(0x100040, 4, true);
	memcpy(image + ELF32_NOTE_OFF + 24 + 12, "Xem", 4); /* after the 24-byte GNU note */
	assert_int_equal(parse(len, &img), -ENOEXEC);
	assert_one_line_naming(err, "PVH");
	len = build_elf32(0x100040, 4, true);
	wr32(image + ELF32_NOTE_OFF + 24 + 8, XEN_ELFNOTE_PHYS32_ENTRY + 1); /* its n_type */
	assert_int_equal(parse(len, &img), -ENOEXEC);
	len = build_elf32(0x100040, 4, true);
	assert_int_equal(parse(len, &img), 0);
}

#define E32(field) offsetof(Elf32_Ehdr, field)
#define P32(i, field) (PH32_OFF(i) + offsetof(Elf32_Phdr, field))

/* Hostile headers: each is an error with a one-line reason, never a read
 * past the file (parse() hands elf_parse() an exactly-sized heap copy). */
static void test_elf32_hostile_headers(void **state)
{
	struct elf_image img;
	size_t len;

	len = build_elf32(0x100040, 4, true);
	expect_noexec(sizeof(Elf32_Ehdr) - 1, "truncated ELF32 header");
	expect_noexec(PH32_OFF(2), "program headers cut short");

	len = build_elf32(0x100040, 4, true);
	wr16(image + E32(e_machine), EM_X86_64);
	expect_noexec(len, "ELF32 for x86-64");
	assert_one_line_naming(err, "i386");

	len = build_elf32(0x100040, 4, true);
	wr16(image + E32(e_phentsize), sizeof(Elf64_Phdr));
	expect_noexec(len, "ELF64 program header size in an ELF32 file");
	len = build_elf32(0x100040, 4, true);
	wr16(image + E32(e_phnum), 0);
	expect_noexec(len, "no program headers");
	len = build_elf32(0x100040, 4, true);
	wr16(image + E32(e_phnum), 0xffff);
	expect_noexec(len, "65535 program headers");
	len = build_elf32(0x100040, 4, true);
	wr32(image + E32(e_phoff), 0xffffffe0u);
	expect_noexec(len, "program headers at 4 GiB - 32");
	len = build_elf32(0x100040, 4, true);
	wr32(image + E32(e_phoff), (uint32_t)len - 3 * sizeof(Elf32_Phdr)); /* room for 3 of 4 */
	expect_noexec(len, "program headers running past the end");

	/* Segments: offset or size past the file, 32-bit wrap, past 4 GiB. */
	len = build_elf32(0x100040, 4, true);
	wr32(image + P32(0, p_offset), 0xfffff000u);
	expect_noexec(len, "segment offset past the file");
	len = build_elf32(0x100040, 4, true);
	wr32(image + P32(0, p_filesz), 0xffffffffu);
	wr32(image + P32(0, p_memsz), 0xffffffffu);
	expect_noexec(len, "segment size 4 GiB - 1");
	len = build_elf32(0x100040, 4, true);
	wr32(image + P32(1, p_filesz), 0x3001);
	expect_noexec(len, "filesz over memsz");
	len = build_elf32(0x100040, 4, true);
	wr32(image + P32(1, p_paddr), 0xfffff000u);
	expect_noexec(len, "segment past 4 GiB");
	assert_one_line_naming(err, "4 GiB");
	len = build_elf32(0x100040, 4, true);
	wr32(image + P32(1, p_paddr), 0x100400);
	expect_noexec(len, "overlapping segments");

	/* Notes: segment past the file, a name or descriptor length that
	 * runs past the segment, an odd PVH descriptor size. */
	len = build_elf32(0x100040, 4, true);
	wr32(image + P32(3, p_offset), 0xffffff00u);
	expect_noexec(len, "note segment past the file");
	len = build_elf32(0x100040, 4, true);
	wr32(image + P32(3, p_filesz), 0xffffffffu);
	expect_noexec(len, "note segment size 4 GiB - 1");
	len = build_elf32(0x100040, 4, true);
	wr32(image + ELF32_NOTE_OFF, 0xfffffffdu); /* the first note's n_namesz */
	expect_noexec(len, "note name length near 4 GiB");
	len = build_elf32(0x100040, 4, true);
	wr32(image + ELF32_NOTE_OFF + 4, 0xfffffffdu); /* its n_descsz */
	expect_noexec(len, "note descriptor length near 4 GiB");
	len = build_elf32(0x100040, 2, true);
	expect_noexec(len, "PVH descriptor of 2 bytes");

	/* The PVH entry must lie inside a segment (and below 4 GiB). */
	len = build_elf32(0x300000, 4, true);
	expect_noexec(len, "PVH entry outside the segments");
	len = build_elf32(0x100000100040ull, 8, true);
	expect_noexec(len, "PVH entry past 4 GiB");
	(void)img;
}

/* Random damage to the headers and notes of a good ELF32 image: elf_parse()
 * answers 0 or -ENOEXEC with a one-line reason, and a success still obeys
 * the rules (segments inside the file, below 4 GiB, a PVH entry inside one). */
static void test_elf32_random_damage(void **state)
{
	uint64_t x = 0x1234567;

	for (unsigned round = 0; round < 3000; round++) {
		struct elf_image img;
		size_t len = build_elf32(0x100040, 4, true);
		int r;

		for (unsigned k = 0; k < 1 + round % 4; k++) {
			size_t at;

			x = x * 6364136223846793005ull + 1442695040888963407ull;
			/* Header and program headers mostly, the notes sometimes. */
			at = (x >> 40) % 5 ? (x >> 20) % PH32_OFF(4)
					   : ELF32_NOTE_OFF + (x >> 20) % (len - ELF32_NOTE_OFF);
			image[at] = (uint8_t)(x >> 56);
		}
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		if (x >> 63)
			len -= (x >> 30) % 64; /* sometimes cut short too */
		r = parse(len, &img);
		if (r == 0) {
			assert_true(img.has_pvh);
			for (unsigned i = 0; i < img.n_segments; i++) {
				assert_true(img.segments[i].offset + img.segments[i].filesz <= len);
				assert_true(img.segments[i].paddr + img.segments[i].memsz <= 0x100000000ull);
			}
			assert_true(img.pvh_entry < 0x100000000ull);
		} else {
			assert_int_equal(r, -ENOEXEC);
			assert_one_line_naming(err, NULL);
		}
	}
}

static void test_load_copies_and_zeroes_bss(void **state)
{
	struct guest_mem gm;
	struct elf_image img;
	size_t len = build_good();
	uint8_t *seg0, *seg1;

	assert_int_equal(guest_mem_init(&gm, 16 * MiB), 0);
	/* Dirty the destination, BSS included, to see that it gets zeroed. */
	memset(guest_mem_ptr(&gm, 0x100000, 0x200000), 0xcc, 0x200000);
	memset(guest_mem_ptr(&gm, 0x200000, 0x4000), 0xcc, 0x4000);
	assert_int_equal(parse(len, &img), 0);
	memset(err, 0, sizeof(err));
	assert_int_equal(elf_load(&img, image, &gm, err, sizeof(err)), 0);

	seg0 = guest_mem_ptr(&gm, 0x100000, 0x800);
	seg1 = guest_mem_ptr(&gm, 0x200000, 0x3000);
	assert_memory_equal(seg0, image + 0x1000, 0x800);
	assert_memory_equal(seg1, image + 0x2000, 0x100);
	for (unsigned i = 0x100; i < 0x3000; i++)
		if (seg1[i] != 0)
			fail_msg("BSS byte at 0x%x is 0x%02x", 0x200000 + i, seg1[i]);
	/* Bytes right after a segment are not touched. */
	assert_int_equal(*(uint8_t *)guest_mem_ptr(&gm, 0x100800, 1), 0xcc);
	assert_int_equal(*(uint8_t *)guest_mem_ptr(&gm, 0x203000, 1), 0xcc);
	guest_mem_exit(&gm);
}

static void test_load_rejects_low_segment(void **state)
{
	static const struct ph ph[] = {
		{ PT_LOAD, 0x1000, 0x8000, 0x8000, 0x10, 0x10 },
		{ PT_LOAD, 0x1000, 0x100000, 0x100000, 0x10, 0x10 },
	};
	struct guest_mem gm;
	struct elf_image img;
	size_t len = elf_build(0x100000, ph, 2);

	assert_int_equal(parse(len, &img), 0);
	assert_int_equal(guest_mem_init(&gm, 16 * MiB), 0);
	memset(err, 0, sizeof(err));
	assert_int_equal(elf_load(&img, image, &gm, err, sizeof(err)), -ENOEXEC);
	assert_one_line_naming(err, NULL);

	/* One byte below 1 MiB is still below. */
	{
		const struct ph ph2[] = { { PT_LOAD, 0x1000, 0xfffff, 0xfffff, 0x10, 0x10 } };

		len = elf_build(0x100000, ph2, 1);
		assert_int_equal(parse(len, &img), 0);
		assert_int_equal(elf_load(&img, image, &gm, err, sizeof(err)), -ENOEXEC);
	}
	guest_mem_exit(&gm);
}

static void test_load_rejects_segment_past_ram(void **state)
{
	struct guest_mem gm;
	struct elf_image img;
	size_t len;

	assert_int_equal(guest_mem_init(&gm, 16 * MiB), 0);
	{
		/* Its BSS runs one byte past the end of RAM. */
		const struct ph ph[] = {
			{ PT_LOAD, 0x1000, 0xff0000, 0xff0000, 0x10, 0x10001 },
		};

		len = elf_build(0xff0000, ph, 1);
		assert_int_equal(parse(len, &img), 0);
		memset(err, 0, sizeof(err));
		assert_int_equal(elf_load(&img, image, &gm, err, sizeof(err)), -ENOEXEC);
		assert_one_line_naming(err, NULL);
	}
	{
		const struct ph ph[] = {
			{ PT_LOAD, 0x1000, 0x40000000, 0x40000000, 0x10, 0x10 },
		};

		len = elf_build(0x40000000, ph, 1);
		assert_int_equal(parse(len, &img), 0);
		assert_int_equal(elf_load(&img, image, &gm, err, sizeof(err)), -ENOEXEC);
	}
	{
		/* Exactly up to the end of RAM is fine. */
		const struct ph ph[] = {
			{ PT_LOAD, 0x1000, 0xff0000, 0xff0000, 0x10, 0x10000 },
		};

		len = elf_build(0xff0000, ph, 1);
		assert_int_equal(parse(len, &img), 0);
		assert_int_equal(elf_load(&img, image, &gm, err, sizeof(err)), 0);
	}
	guest_mem_exit(&gm);
}

/* ---- boot_params (Documentation/arch/x86/boot.rst, zero-page.rst) ---- */

static void check_e820_raw(const uint8_t *raw, unsigned n, uint64_t ram)
{
	struct e820_entry want[X86_E820_MAX];
	int nw = x86_e820_build(ram, want, X86_E820_MAX);

	assert_int_equal(raw[0x1e8], (unsigned)nw);
	assert_int_equal(n, (unsigned)nw);
	for (int i = 0; i < nw; i++) {
		const uint8_t *e = raw + 0x2d0 + 20 * i; /* struct boot_e820_entry: 20 bytes */

		assert_int_equal(rd64(e), want[i].addr);
		assert_int_equal(rd64(e + 8), want[i].size);
		assert_int_equal(rd32(e + 16), want[i].type);
	}
}

static void test_boot_params_layout(void **state)
{
	struct boot_params bp;
	const uint8_t *raw = (const uint8_t *)&bp;
	const struct boot_info info = {
		.ram_size = 256 * MiB,
		.cmdline_gpa = 0x20000,
		.cmdline_len = 12,
		.initrd_gpa = 0x7000000,
		.initrd_size = 0x123456,
	};

	assert_int_equal(sizeof(struct boot_params), 4096);
	memset(&bp, 0xcc, sizeof(bp));
	assert_int_equal(boot_params_build(&bp, &info), 0);

	assert_int_equal(rd16(raw + 0x1fe), 0xaa55);               /* boot_flag */
	assert_memory_equal(raw + 0x202, "HdrS", 4);               /* header */
	assert_int_equal(rd32(raw + 0x202), 0x53726448);
	assert_int_equal(raw[0x210], 0xff);                        /* type_of_loader */
	assert_true(raw[0x211] & 0x01);                            /* LOADED_HIGH */
	assert_int_equal(rd32(raw + 0x228), 0x20000);              /* cmd_line_ptr */
	assert_int_equal(rd32(raw + 0x0c8), 0);                    /* ext_cmd_line_ptr */
	assert_int_equal(rd32(raw + 0x218), 0x7000000);            /* ramdisk_image */
	assert_int_equal(rd32(raw + 0x21c), 0x123456);             /* ramdisk_size */
	assert_int_equal(rd32(raw + 0x0c0), 0);                    /* ext_ramdisk_image */
	assert_int_equal(rd32(raw + 0x0c4), 0);                    /* ext_ramdisk_size */
	check_e820_raw(raw, bp.e820_entries, info.ram_size);

	/* The same through the field names. */
	assert_int_equal(bp.hdr.boot_flag, BOOT_FLAG_MAGIC);
	assert_int_equal(bp.hdr.header, BOOT_HDR_MAGIC);
	assert_int_equal(bp.hdr.cmd_line_ptr, 0x20000);
	assert_int_equal(bp.hdr.ramdisk_image, 0x7000000);
	assert_int_equal(bp.hdr.ramdisk_size, 0x123456);
	assert_int_equal(bp.e820_entries, 3);
	assert_int_equal(bp.e820_table[2].addr, 0x100000);

	/* A zero page: what is not filled is zero (screen_info, apm, ...). */
	for (unsigned i = 0; i < 0xc0; i++)
		assert_int_equal(raw[i], 0);
	for (unsigned i = 0x2d0 + 20 * 3; i < 0x2d0 + 20 * BOOT_E820_MAX; i++)
		assert_int_equal(raw[i], 0);
	assert_int_equal(raw[0x1f1], 0);                           /* setup_sects */
}

static void test_boot_params_high_addresses(void **state)
{
	struct boot_params bp;
	const uint8_t *raw = (const uint8_t *)&bp;
	const struct boot_info info = {
		.ram_size = 8 * GiB,
		.cmdline_gpa = 0x100020000ull,
		.cmdline_len = 3,
		.initrd_gpa = 0x123400000ull,
		.initrd_size = 0x100000010ull,
	};

	assert_int_equal(boot_params_build(&bp, &info), 0);
	assert_int_equal(rd32(raw + 0x228), 0x00020000);
	assert_int_equal(rd32(raw + 0x0c8), 0x1);
	assert_int_equal(rd32(raw + 0x218), 0x23400000);
	assert_int_equal(rd32(raw + 0x0c0), 0x1);
	assert_int_equal(rd32(raw + 0x21c), 0x10);
	assert_int_equal(rd32(raw + 0x0c4), 0x1);
	check_e820_raw(raw, bp.e820_entries, info.ram_size);
	assert_int_equal(raw[0x1e8], 4);
}

static void test_boot_params_no_initrd(void **state)
{
	struct boot_params bp;
	const uint8_t *raw = (const uint8_t *)&bp;
	const struct boot_info info = { .ram_size = 64 * MiB, .cmdline_gpa = 0x20000 };

	memset(&bp, 0xcc, sizeof(bp));
	assert_int_equal(boot_params_build(&bp, &info), 0);
	assert_int_equal(rd32(raw + 0x218), 0);
	assert_int_equal(rd32(raw + 0x21c), 0);
	assert_int_equal(rd32(raw + 0x0c0), 0);
	assert_int_equal(rd32(raw + 0x0c4), 0);
	check_e820_raw(raw, bp.e820_entries, info.ram_size);
}

/* ---- PVH hvm_start_info ---- */

static void test_pvh_start_info(void **state)
{
	struct guest_mem gm;
	const struct boot_info info = { .ram_size = 256 * MiB, .cmdline_gpa = 0x20000,
					 .cmdline_len = 5 };
	struct e820_entry want[X86_E820_MAX];
	int nw = x86_e820_build(info.ram_size, want, X86_E820_MAX);
	const uint8_t *si;
	uint64_t mm;

	assert_int_equal(guest_mem_init(&gm, 256 * MiB), 0);
	memset(guest_mem_ptr(&gm, 0x6000, 0x1000), 0xcc, 0x1000);
	assert_int_equal(pvh_start_info_build(&gm, 0x6000, &info), 0);
	si = guest_mem_ptr(&gm, 0x6000, 56);
	/* struct hvm_start_info, version 1: 56 bytes. */
	assert_int_equal(rd32(si + 0), 0x336ec578);  /* magic */
	assert_int_equal(rd32(si + 4), 1);           /* version */
	assert_int_equal(rd32(si + 8), 0);           /* flags */
	assert_int_equal(rd32(si + 12), 0);          /* nr_modules */
	assert_int_equal(rd64(si + 24), 0x20000);    /* cmdline_paddr */
	assert_int_equal(rd64(si + 32), 0);          /* rsdp_paddr: none */
	mm = rd64(si + 40);                          /* memmap_paddr */
	assert_int_equal(rd32(si + 48), (uint32_t)nw); /* memmap_entries */
	assert_int_equal(rd32(si + 52), 0);          /* reserved */
	assert_int_equal(nw, 3);
	/* The map lives in RAM, not on top of the start info. */
	assert_true(mm >= 0x6000 + 56 || mm + 24ull * nw <= 0x6000);
	{
		const uint8_t *m = guest_mem_ptr(&gm, mm, 24ull * nw);

		assert_non_null(m);
		for (int i = 0; i < nw; i++) {
			assert_int_equal(rd64(m + 24 * i), want[i].addr);
			assert_int_equal(rd64(m + 24 * i + 8), want[i].size);
			assert_int_equal(rd32(m + 24 * i + 16), want[i].type);
			assert_int_equal(rd32(m + 24 * i + 20), 0);
		}
	}
	guest_mem_exit(&gm);
}

static void test_pvh_start_info_initrd(void **state)
{
	struct guest_mem gm;
	const struct boot_info info = { .ram_size = 8 * GiB, .cmdline_gpa = 0x20000,
					.initrd_gpa = 0x3f00000, .initrd_size = 0x54321 };
	struct e820_entry want[X86_E820_MAX];
	int nw = x86_e820_build(info.ram_size, want, X86_E820_MAX);
	const uint8_t *si, *mod, *m;
	uint64_t modp, mm;

	assert_int_equal(guest_mem_init(&gm, 64 * MiB), 0);
	assert_int_equal(pvh_start_info_build(&gm, 0x6000, &info), 0);
	si = guest_mem_ptr(&gm, 0x6000, 56);
	assert_int_equal(rd32(si + 0), 0x336ec578);
	assert_int_equal(rd32(si + 12), 1);          /* nr_modules */
	modp = rd64(si + 16);
	mm = rd64(si + 40);
	assert_int_equal(rd32(si + 48), 4);
	assert_int_equal(nw, 4);
	mod = guest_mem_ptr(&gm, modp, 32);          /* struct hvm_modlist_entry */
	assert_non_null(mod);
	assert_int_equal(rd64(mod + 0), 0x3f00000);  /* paddr */
	assert_int_equal(rd64(mod + 8), 0x54321);    /* size */
	assert_int_equal(rd64(mod + 16), 0);         /* cmdline_paddr */
	/* Start info, module list and memory map do not overlap. */
	assert_true(modp >= 0x6000 + 56 || modp + 32 <= 0x6000);
	assert_true(mm >= modp + 32 || mm + 24ull * nw <= modp);
	assert_true(mm >= 0x6000 + 56 || mm + 24ull * nw <= 0x6000);
	m = guest_mem_ptr(&gm, mm, 24ull * nw);
	assert_non_null(m);
	for (int i = 0; i < nw; i++) {
		assert_int_equal(rd64(m + 24 * i), want[i].addr);
		assert_int_equal(rd64(m + 24 * i + 8), want[i].size);
		assert_int_equal(rd32(m + 24 * i + 16), want[i].type);
	}
	guest_mem_exit(&gm);
}

static void test_pvh_start_info_outside_ram(void **state)
{
	struct guest_mem gm;
	const struct boot_info info = { .ram_size = 64 * MiB, .cmdline_gpa = 0x20000 };

	assert_int_equal(guest_mem_init(&gm, 64 * MiB), 0);
	assert_int_equal(pvh_start_info_build(&gm, 64 * MiB - 16, &info), -EFAULT);
	assert_int_equal(pvh_start_info_build(&gm, 64 * MiB, &info), -EFAULT);
	guest_mem_exit(&gm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_good),
		cmocka_unit_test(test_parse_segments_out_of_order),
		cmocka_unit_test(test_parse_entry_in_bss),
		cmocka_unit_test(test_parse_pvh_note),
		cmocka_unit_test(test_parse_other_xen_notes_ignored),
		cmocka_unit_test(test_parse_virtual_entry),
		cmocka_unit_test(test_reject_ordinary_program),
		cmocka_unit_test(test_reject_not_elf),
		cmocka_unit_test(test_reject_wrong_class_machine_type),
		cmocka_unit_test(test_reject_truncated_header),
		cmocka_unit_test(test_reject_phdrs_past_eof),
		cmocka_unit_test(test_reject_bad_phdr_table),
		cmocka_unit_test(test_reject_too_many_phdrs),
		cmocka_unit_test(test_reject_too_many_load_segments),
		cmocka_unit_test(test_reject_segment_past_eof),
		cmocka_unit_test(test_reject_filesz_over_memsz),
		cmocka_unit_test(test_reject_filesz_over_zero_memsz),
		cmocka_unit_test(test_reject_overlapping_segments),
		cmocka_unit_test(test_reject_segment_wraps_address_space),
		cmocka_unit_test(test_reject_entry_outside),
		cmocka_unit_test(test_reject_no_load_segments),
		cmocka_unit_test(test_reject_bad_notes),
		cmocka_unit_test(test_reject_pvh_entry_outside),
		cmocka_unit_test(test_elf32_pvh_good),
		cmocka_unit_test(test_elf32_without_pvh_refused),
		cmocka_unit_test(test_elf32_hostile_headers),
		cmocka_unit_test(test_elf32_random_damage),
		cmocka_unit_test(test_load_copies_and_zeroes_bss),
		cmocka_unit_test(test_load_rejects_low_segment),
		cmocka_unit_test(test_load_rejects_segment_past_ram),
		cmocka_unit_test(test_boot_params_layout),
		cmocka_unit_test(test_boot_params_high_addresses),
		cmocka_unit_test(test_boot_params_no_initrd),
		cmocka_unit_test(test_pvh_start_info),
		cmocka_unit_test(test_pvh_start_info_initrd),
		cmocka_unit_test(test_pvh_start_info_outside_ram),
	};

	return cmocka_run_group_tests_name("boot", tests, NULL, NULL);
}

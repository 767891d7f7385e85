/* bzImage parsing, host-side payload decompression, the kernel's own
 * decompressor's load, and boot_params from the image's header, against
 * include/vmrun/boot.h and Linux's Documentation/arch/x86/boot.rst.
 *
 * The images are built here: a setup area with a protocol 2.15 header, then
 * a protected-mode part holding a payload made at test time by compressing a
 * small ELF64 with each codec library, followed (as Linux's build does) by
 * the 4-byte uncompressed size. */
#include "unit.h"

#include <bzlib.h>
#include <elf.h>
#include <errno.h>
#include <lz4.h>
#include <lzma.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "vmrun/boot.h"
#include "vmrun/config.h"
#include "vmrun/guest_mem.h"
#include "vmrun/x86.h"

#define MiB (1ull << 20)

/* The ELF inside every payload. */
#define ELF_PADDR 0x200000ull
#define ELF_ENTRY 0x200010ull
#define ELF_DATA_OFF 0x1000
#define ELF_FILESZ 0x3000
#define ELF_MEMSZ 0x5000

/* Setup header field offsets in the file (boot.rst). */
#define H_SETUP_SECTS 0x1f1
#define H_SYSSIZE 0x1f4
#define H_VID_MODE 0x1fa
#define H_BOOT_FLAG 0x1fe
#define H_JUMP 0x200
#define H_HEADER 0x202
#define H_VERSION 0x206
#define H_LOADFLAGS 0x211
#define H_CODE32_START 0x214
#define H_INITRD_ADDR_MAX 0x22c
#define H_KERNEL_ALIGNMENT 0x230
#define H_RELOCATABLE 0x234
#define H_XLOADFLAGS 0x236
#define H_CMDLINE_SIZE 0x238
#define H_PAYLOAD_OFFSET 0x248
#define H_PAYLOAD_LENGTH 0x24c
#define H_SETUP_DATA 0x250
#define H_PREF_ADDRESS 0x258
#define H_INIT_SIZE 0x260
#define H_HANDOVER_OFFSET 0x264

/* Where the payload sits in the protected-mode part. */
#define PM_CODE_LEN 0x400

static char err[256];

struct buf {
	uint8_t *p;
	size_t len;
};

static void wr16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void wr64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

static struct buf buf_alloc(size_t len)
{
	struct buf b = { calloc(1, len ? len : 1), len };

	assert_non_null(b.p);
	return b;
}

/* ---- the ELF and its compressed forms ---- */

/* An ELF64 executable: one PT_LOAD at 2 MiB with text-like contents and
 * a BSS tail, entry inside it. */
static struct buf make_elf(void)
{
	struct buf b = buf_alloc(ELF_DATA_OFF + ELF_FILESZ);
	Elf64_Ehdr eh = { 0 };
	Elf64_Phdr ph = { 0 };
	static const char words[] = "the quick brown fox jumps over the lazy dog 0123456789 ";

	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS64;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	eh.e_ident[EI_VERSION] = EV_CURRENT;
	eh.e_type = ET_EXEC;
	eh.e_machine = EM_X86_64;
	eh.e_version = EV_CURRENT;
	eh.e_entry = ELF_ENTRY;
	eh.e_phoff = sizeof(eh);
	eh.e_ehsize = sizeof(eh);
	eh.e_phentsize = sizeof(ph);
	eh.e_phnum = 1;
	ph.p_type = PT_LOAD;
	ph.p_flags = PF_R | PF_X;
	ph.p_offset = ELF_DATA_OFF;
	ph.p_vaddr = ph.p_paddr = ELF_PADDR;
	ph.p_filesz = ELF_FILESZ;
	ph.p_memsz = ELF_MEMSZ;
	ph.p_align = 0x1000;
	memcpy(b.p, &eh, sizeof(eh));
	memcpy(b.p + sizeof(eh), &ph, sizeof(ph));
	for (size_t i = 0; i < ELF_FILESZ; i++)
		b.p[ELF_DATA_OFF + i] = (uint8_t)(words[(i * 7 + i / 64) % (sizeof(words) - 1)] ^ (i >> 9));
	return b;
}

/* Linux's build appends the uncompressed size (little-endian 32 bits). */
static void append_size(struct buf *out, size_t used, size_t orig)
{
	wr32(out->p + used, (uint32_t)orig);
	out->len = used + 4;
}

static struct buf gzip_compress(const uint8_t *in, size_t len)
{
	struct buf out = buf_alloc(compressBound((uLong)len) + 64);
	z_stream z = { 0 };

	assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)len;
	z.next_out = out.p;
	z.avail_out = (uInt)out.len;
	assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
	out.len = z.total_out; /* gzip's own trailer ends with the size */
	deflateEnd(&z);
	return out;
}

static struct buf xz_compress(const uint8_t *in, size_t len)
{
	struct buf out = buf_alloc(lzma_stream_buffer_bound(len) + 4);
	size_t pos = 0;

	assert_int_equal(lzma_easy_buffer_encode(6, LZMA_CHECK_CRC32, NULL, in, len, out.p, &pos,
						 out.len - 4), LZMA_OK);
	append_size(&out, pos, len);
	return out;
}

static struct buf lzma_compress(const uint8_t *in, size_t len)
{
	struct buf out = buf_alloc(len + len / 2 + 4096);
	lzma_stream s = LZMA_STREAM_INIT;
	lzma_options_lzma opt;

	assert_false(lzma_lzma_preset(&opt, 6));
	assert_int_equal(lzma_alone_encoder(&s, &opt), LZMA_OK);
	s.next_in = in;
	s.avail_in = len;
	s.next_out = out.p;
	s.avail_out = out.len - 4;
	assert_int_equal(lzma_code(&s, LZMA_FINISH), LZMA_STREAM_END);
	append_size(&out, (size_t)s.total_out, len);
	lzma_end(&s);
	return out;
}

static struct buf zstd_compress(const uint8_t *in, size_t len)
{
	struct buf out = buf_alloc(ZSTD_compressBound(len) + 4);
	size_t n = ZSTD_compress(out.p, out.len - 4, in, len, 19);

	assert_false(ZSTD_isError(n));
	append_size(&out, n, len);
	return out;
}

/* lz4's legacy frame: magic, then [size][block] for each 8 MiB of input. */
static struct buf lz4_compress(const uint8_t *in, size_t len)
{
	size_t blocks = len / (8 * MiB) + 1;
	struct buf out = buf_alloc(8 + blocks * (4 + LZ4_COMPRESSBOUND(8 * MiB)));
	size_t pos = 4;

	wr32(out.p, 0x184c2102);
	for (size_t off = 0; off < len; off += 8 * MiB) {
		size_t n = len - off < 8 * MiB ? len - off : 8 * MiB;
		int c = LZ4_compress_default((const char *)in + off, (char *)out.p + pos + 4, (int)n,
					     LZ4_COMPRESSBOUND(8 * MiB));

		assert_true(c > 0);
		wr32(out.p + pos, (uint32_t)c);
		pos += 4 + (size_t)c;
	}
	append_size(&out, pos, len);
	return out;
}

static struct buf bzip2_compress(const uint8_t *in, size_t len)
{
	struct buf out = buf_alloc(len + len / 100 + 600 + 4);
	unsigned n = (unsigned)(out.len - 4);

	assert_int_equal(BZ2_bzBuffToBuffCompress((char *)out.p, &n, (char *)in, (unsigned)len, 9,
						  0, 0), BZ_OK);
	append_size(&out, n, len);
	return out;
}

struct codec_case {
	const char *name;
	enum bzimage_codec codec;
	struct buf (*compress)(const uint8_t *in, size_t len);
};

static const struct codec_case codecs[] = {
	{ "gzip", BZIMAGE_CODEC_GZIP, gzip_compress },
	{ "xz", BZIMAGE_CODEC_XZ, xz_compress },
	{ "lzma", BZIMAGE_CODEC_LZMA, lzma_compress },
	{ "zstd", BZIMAGE_CODEC_ZSTD, zstd_compress },
	{ "lz4", BZIMAGE_CODEC_LZ4, lz4_compress },
	{ "bzip2", BZIMAGE_CODEC_BZIP2, bzip2_compress },
};

/* ---- building bzImages ---- */

struct bz_opts {
	uint16_t version;
	uint8_t setup_sects; /* as stored: 0 means 4 */
	uint8_t hdr_jump;    /* the byte at 0x201: the header ends at 0x202 + it */
	uint16_t xloadflags;
	uint32_t cmdline_size, initrd_addr_max, init_size, code32_start;
	uint64_t pref_address;
};

static struct bz_opts default_opts(void)
{
	return (struct bz_opts){
		.version = 0x020f, .setup_sects = 3, .hdr_jump = 0x6a, .xloadflags = 0x3,
		.cmdline_size = 2047, .initrd_addr_max = 0x7fffffff, .init_size = 4 * MiB,
		.code32_start = 0x100000, .pref_address = 16 * MiB,
	};
}

/* A bzImage around @payload; the setup area past the header is filled with
 * 0xee so that copying too much of it shows. */
static struct buf bz_build(const struct bz_opts *o, const uint8_t *payload, size_t plen)
{
	size_t sects = o->setup_sects ? o->setup_sects : 4;
	size_t setup = (sects + 1) * 512;
	size_t pm = (PM_CODE_LEN + plen + 4 + 15) & ~(size_t)15; /* code, payload, CRC */
	struct buf b = buf_alloc(setup + pm);
	uint8_t *h = b.p;

	memset(h + 0x202 + o->hdr_jump, 0xee, setup - 0x202 - o->hdr_jump);
	h[H_SETUP_SECTS] = o->setup_sects;
	wr32(h + H_SYSSIZE, (uint32_t)(pm / 16));
	wr16(h + H_VID_MODE, 0xfffd); /* "ask": the loader must override it */
	wr16(h + H_BOOT_FLAG, 0xaa55);
	h[H_JUMP] = 0xeb;
	h[H_JUMP + 1] = o->hdr_jump;
	memcpy(h + H_HEADER, "HdrS", 4);
	wr16(h + H_VERSION, o->version);
	h[H_LOADFLAGS] = 0x01;
	wr32(h + H_CODE32_START, o->code32_start);
	wr32(h + H_INITRD_ADDR_MAX, o->initrd_addr_max);
	wr32(h + H_KERNEL_ALIGNMENT, 0x200000);
	h[H_RELOCATABLE] = 1;
	wr16(h + H_XLOADFLAGS, o->xloadflags);
	wr32(h + H_CMDLINE_SIZE, o->cmdline_size);
	wr32(h + H_PAYLOAD_OFFSET, PM_CODE_LEN);
	wr32(h + H_PAYLOAD_LENGTH, (uint32_t)plen);
	wr64(h + H_SETUP_DATA, 0xdeadbeef); /* a loader must never pass this on */
	wr64(h + H_PREF_ADDRESS, o->pref_address);
	wr32(h + H_INIT_SIZE, o->init_size);
	if (0x202 + o->hdr_jump >= H_HANDOVER_OFFSET + 4)
		wr32(h + H_HANDOVER_OFFSET, 0x190);
	/* The protected-mode "code": a recognisable pattern. */
	for (size_t i = 0; i < PM_CODE_LEN; i++)
		b.p[setup + i] = (uint8_t)(0x90 + i % 7);
	memcpy(b.p + setup + PM_CODE_LEN, payload, plen);
	return b;
}

/* The reference image: the test ELF compressed with @c. */
static struct buf bz_with_codec(const struct codec_case *c, const struct bz_opts *o,
				struct buf *elf_out)
{
	struct buf elf = make_elf(), payload = c->compress(elf.p, elf.len), bz;

	bz = bz_build(o, payload.p, payload.len);
	free(payload.p);
	if (elf_out)
		*elf_out = elf;
	else
		free(elf.p);
	return bz;
}

/* Parse from an exactly-sized heap copy, so that ASan sees any read past
 * the end. */
static int parse(const uint8_t *p, size_t len, struct bzimage *bz)
{
	uint8_t *copy = malloc(len ? len : 1);
	int r;

	assert_non_null(copy);
	memcpy(copy, p, len);
	memset(err, 0, sizeof(err));
	r = bzimage_parse(copy, len, bz, err, sizeof(err));
	free(copy);
	return r;
}

static int decompress(const struct buf *img, uint64_t max, struct buf *out)
{
	struct bzimage bz;
	int r = parse(img->p, img->len, &bz);

	assert_int_equal(r, 0);
	memset(err, 0, sizeof(err));
	out->p = NULL;
	r = bzimage_decompress(&bz, img->p, max, &out->p, &out->len, err, sizeof(err));
	if (r)
		assert_null(out->p);
	return r;
}

/* ---- detection and parsing ---- */

static void test_detect(void **state)
{
	struct bz_opts o = default_opts();
	struct buf elf = make_elf(), bz = bz_build(&o, elf.p, elf.len);

	assert_true(bzimage_detect(bz.p, bz.len));
	assert_false(bzimage_detect(elf.p, elf.len));
	assert_false(bzimage_detect(bz.p, 0x205)); /* "HdrS" cut short */
	assert_true(bzimage_detect(bz.p, 0x206));
	free(elf.p);
	free(bz.p);
}

static void test_parse_layout(void **state)
{
	struct bz_opts o = default_opts();
	struct buf elf = make_elf(), img = bz_build(&o, elf.p, elf.len);
	struct bzimage bz;

	assert_int_equal(parse(img.p, img.len, &bz), 0);
	assert_int_equal(bz.pm_offset, 4 * 512);
	assert_int_equal(bz.payload_offset, 4 * 512 + PM_CODE_LEN);
	assert_int_equal(bz.payload_size, elf.len);
	assert_int_equal(bz.pm_size, img.len - 4 * 512);
	assert_true(bz.has_payload);
	assert_int_equal(bz.codec, BZIMAGE_CODEC_NONE);
	assert_int_equal(bz.hdr_len, 0x26c - 0x1f1);
	assert_int_equal(bz.hdr.version, 0x020f);
	assert_int_equal(bz.hdr.cmdline_size, 2047);
	free(img.p);

	/* setup_sects 0 means 4: the kernel starts at 5 * 512. */
	o.setup_sects = 0;
	img = bz_build(&o, elf.p, elf.len);
	assert_int_equal(parse(img.p, img.len, &bz), 0);
	assert_int_equal(bz.pm_offset, 5 * 512);
	assert_int_equal(bz.payload_offset, 5 * 512 + PM_CODE_LEN);
	free(img.p);
	free(elf.p);
}

static void test_parse_uncompressed_payload(void **state)
{
	struct bz_opts o = default_opts();
	struct buf elf = make_elf(), img = bz_build(&o, elf.p, elf.len), out;

	assert_int_equal(decompress(&img, 64 * MiB, &out), 0);
	assert_int_equal(out.len, elf.len);
	assert_memory_equal(out.p, elf.p, elf.len);
	free(out.p);
	free(img.p);
	free(elf.p);
}

/* ---- every codec ---- */

static void test_codec_round_trip(void **state)
{
	const struct codec_case *c = *state;
	struct bz_opts o = default_opts();
	struct buf elf, img = bz_with_codec(c, &o, &elf), out;
	struct bzimage bz;
	struct elf_image ei;

	assert_int_equal(parse(img.p, img.len, &bz), 0);
	if (bz.codec != c->codec)
		fail_msg("%s payload identified as %s", c->name, bzimage_codec_name(bz.codec));
	assert_string_equal(bzimage_codec_name(bz.codec), c->name);
	assert_int_equal(decompress(&img, 64 * MiB, &out), 0);
	assert_int_equal(out.len, elf.len);
	assert_memory_equal(out.p, elf.p, elf.len);
	assert_int_equal(elf_parse(out.p, out.len, &ei, err, sizeof(err)), 0);
	assert_int_equal(ei.entry, ELF_ENTRY);
	/* The bound is inclusive: exactly the ELF's size still fits, one
	 * byte less does not. */
	free(out.p);
	assert_int_equal(decompress(&img, elf.len, &out), 0);
	assert_int_equal(out.len, elf.len);
	free(out.p);
	assert_int_equal(decompress(&img, elf.len - 1, &out), -EFBIG);
	assert_one_line_naming(err, c->name);
	free(img.p);
	free(elf.p);
}

/* A payload of 6 MiB of zeros compresses to a few KiB; with a 1 MiB bound
 * it must stop with -EFBIG, not allocate it all. */
static void test_codec_bomb(void **state)
{
	const struct codec_case *c = *state;
	size_t n = 6 * MiB;
	uint8_t *zeros = calloc(1, n);
	struct bz_opts o = default_opts();
	struct buf payload, img, out;

	assert_non_null(zeros);
	payload = c->compress(zeros, n);
	free(zeros);
	assert_true(payload.len < 1 * MiB);
	img = bz_build(&o, payload.p, payload.len);
	free(payload.p);
	assert_int_equal(decompress(&img, 1 * MiB, &out), -EFBIG);
	assert_one_line_naming(err, "more than 1 MiB");
	/* With room enough, it decodes in full. */
	assert_int_equal(decompress(&img, 8 * MiB, &out), 0);
	assert_int_equal(out.len, n);
	free(out.p);
	/* A size trailer that lies (small) changes nothing: it only sizes the
	 * first allocation.  gzip's is part of its own format, and checked. */
	if (c->codec != BZIMAGE_CODEC_GZIP) {
		wr32(img.p + 4 * 512 + PM_CODE_LEN + rd32(img.p + H_PAYLOAD_LENGTH) - 4, 16);
		assert_int_equal(decompress(&img, 1 * MiB, &out), -EFBIG);
		assert_int_equal(decompress(&img, 8 * MiB, &out), 0);
		assert_int_equal(out.len, n);
		free(out.p);
	}
	free(img.p);
}

static void test_codec_truncated(void **state)
{
	const struct codec_case *c = *state;
	struct buf elf = make_elf(), payload = c->compress(elf.p, elf.len), img, out;
	struct bz_opts o = default_opts();

	/* Half the stream, announced as the whole payload. */
	img = bz_build(&o, payload.p, payload.len / 2);
	assert_int_equal(decompress(&img, 64 * MiB, &out), -ENOEXEC);
	assert_one_line_naming(err, "truncated");
	assert_non_null(strstr(err, c->name));
	free(img.p);
	free(payload.p);
	free(elf.p);
}

static void test_corrupt_stream(void **state)
{
	/* Codecs whose streams carry a checksum: a flipped byte must show. */
	const struct codec_case *checked[] = { &codecs[0], &codecs[1], &codecs[5] };

	for (size_t i = 0; i < ARRAY_LEN(checked); i++) {
		const struct codec_case *c = checked[i];
		struct buf elf = make_elf(), payload = c->compress(elf.p, elf.len), img, out;
		struct bz_opts o = default_opts();

		payload.p[payload.len / 2] ^= 0x55;
		img = bz_build(&o, payload.p, payload.len);
		assert_int_equal(decompress(&img, 64 * MiB, &out), -ENOEXEC);
		assert_one_line_naming(err, "--kernel-decompress=guest");
		free(img.p);
		free(payload.p);
		free(elf.p);
	}
}

static void test_unknown_compression(void **state)
{
	static const uint8_t lzo[] = { 0x89, 0x4c, 0x5a, 0x4f, 0x00, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3 };
	struct bz_opts o = default_opts();
	struct buf img = bz_build(&o, lzo, sizeof(lzo)), out;
	struct bzimage bz;

	assert_int_equal(parse(img.p, img.len, &bz), 0);
	assert_int_equal(bz.codec, BZIMAGE_CODEC_UNKNOWN);
	assert_int_equal(decompress(&img, 64 * MiB, &out), -ENOEXEC);
	assert_one_line_naming(err, "unknown format");
	assert_non_null(strstr(err, "89 4c 5a 4f"));
	assert_non_null(strstr(err, "--kernel-decompress=guest"));
	free(img.p);
}

/* ---- malformed headers ---- */

static void test_reject_old_protocol(void **state)
{
	struct bz_opts o = default_opts();
	struct buf elf = make_elf(), img;
	struct bzimage bz;

	o.version = 0x0205;
	img = bz_build(&o, elf.p, elf.len);
	assert_int_equal(parse(img.p, img.len, &bz), -ENOEXEC);
	assert_one_line_naming(err, "2.05");
	free(img.p);

	/* 2.06 boots, but has no payload fields: only the guest can decompress. */
	o.version = 0x0206;
	img = bz_build(&o, elf.p, elf.len);
	assert_int_equal(parse(img.p, img.len, &bz), 0);
	assert_false(bz.has_payload);
	assert_int_equal(bzimage_decompress(&bz, img.p, 64 * MiB, &(uint8_t *){ NULL },
					    &(size_t){ 0 }, err, sizeof(err)), -ENOEXEC);
	assert_one_line_naming(err, "--kernel-decompress=guest");
	free(img.p);
	free(elf.p);
}

static void test_reject_payload_outside_file(void **state)
{
	struct bz_opts o = default_opts();
	struct buf elf = make_elf(), img = bz_build(&o, elf.p, elf.len);
	uint32_t pm_len = (uint32_t)(img.len - 4 * 512);
	struct bzimage bz;
	static const struct {
		uint32_t offset, length;
	} bad[] = {
		{ 0x7fffffff, 16 },      /* offset far past EOF */
		{ 0, 0x7fffffff },       /* length far past EOF */
		{ 0xffffffff, 0xffffffff }, /* both at the top: must not wrap */
		{ PM_CODE_LEN, 0 },      /* empty */
	};

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		wr32(img.p + H_PAYLOAD_OFFSET, bad[i].offset);
		wr32(img.p + H_PAYLOAD_LENGTH, bad[i].length);
		assert_int_equal(parse(img.p, img.len, &bz), -ENOEXEC);
		assert_one_line_naming(err, "payload");
	}
	/* Ending one byte past the file, and exactly at its end. */
	wr32(img.p + H_PAYLOAD_OFFSET, PM_CODE_LEN);
	wr32(img.p + H_PAYLOAD_LENGTH, pm_len - PM_CODE_LEN + 1);
	assert_int_equal(parse(img.p, img.len, &bz), -ENOEXEC);
	wr32(img.p + H_PAYLOAD_LENGTH, pm_len - PM_CODE_LEN);
	assert_int_equal(parse(img.p, img.len, &bz), 0);
	free(img.p);
	free(elf.p);
}

static void test_reject_setup_sects_past_eof(void **state)
{
	struct bz_opts o = default_opts();
	struct buf elf = make_elf(), img = bz_build(&o, elf.p, elf.len);
	struct bzimage bz;

	img.p[H_SETUP_SECTS] = 200; /* 201 * 512 bytes: far past this file */
	assert_int_equal(parse(img.p, img.len, &bz), -ENOEXEC);
	assert_one_line_naming(err, "setup_sects 200");
	/* Exactly at the end of the file: no kernel left. */
	img.p[H_SETUP_SECTS] = 3;
	assert_int_equal(parse(img.p, 4 * 512, &bz), -ENOEXEC);
	assert_one_line_naming(err, "setup_sects 3");
	free(img.p);
	free(elf.p);
}

static void test_reject_truncated_file(void **state)
{
	struct bz_opts o = default_opts();
	struct buf elf = make_elf(), img = bz_build(&o, elf.p, elf.len);
	struct bzimage bz;

	/* Cut inside the protected-mode kernel: syssize says more. */
	assert_int_equal(parse(img.p, img.len - 100, &bz), -ENOEXEC);
	assert_one_line_naming(err, "truncated");
	/* Every prefix is refused, never read past (ASan checks the copy). */
	for (size_t len = 0; len <= 4 * 512; len++) {
		int r = parse(img.p, len, &bz);

		if (r != -ENOEXEC)
			fail_msg("a %zu-byte prefix: %d", len, r);
		assert_one_line_naming(err, NULL);
	}
	free(img.p);
	free(elf.p);
}

static void test_reject_short_header(void **state)
{
	struct bz_opts o = default_opts();
	struct buf elf = make_elf(), img;
	struct bzimage bz;

	o.hdr_jump = 0x30; /* ends at 0x232: not even cmdline_size */
	img = bz_build(&o, elf.p, elf.len);
	assert_int_equal(parse(img.p, img.len, &bz), -ENOEXEC);
	assert_one_line_naming(err, "setup header");
	free(img.p);
	free(elf.p);
}

/* ---- boot_params ---- */

static void test_boot_params_from_header(void **state)
{
	struct bz_opts o = default_opts();
	struct buf elf = make_elf(), img = bz_build(&o, elf.p, elf.len);
	struct boot_info info = { .ram_size = 256 * MiB, .cmdline_gpa = X86_CMDLINE,
				  .cmdline_len = 10, .initrd_gpa = 0x6000000,
				  .initrd_size = 0x12345 };
	struct boot_params *bp = malloc(sizeof(*bp));
	const uint8_t *raw = (const uint8_t *)bp;
	struct bzimage bz;

	assert_non_null(bp);
	memset(bp, 0xcc, sizeof(*bp));
	assert_int_equal(parse(img.p, img.len, &bz), 0);
	assert_int_equal(bzimage_boot_params(bp, &bz, &info), 0);
	/* The image's own header... */
	assert_int_equal(bp->hdr.header, BOOT_HDR_MAGIC);
	assert_int_equal(bp->hdr.version, 0x020f);
	assert_int_equal(bp->hdr.boot_flag, 0xaa55);
	assert_int_equal(bp->hdr.setup_sects, 3);
	assert_int_equal(bp->hdr.kernel_alignment, 0x200000);
	assert_int_equal(bp->hdr.relocatable_kernel, 1);
	assert_int_equal(bp->hdr.xloadflags, 0x3);
	assert_int_equal(bp->hdr.cmdline_size, 2047);
	assert_int_equal(bp->hdr.initrd_addr_max, 0x7fffffff);
	assert_int_equal(bp->hdr.payload_offset, PM_CODE_LEN);
	assert_int_equal(bp->hdr.pref_address, 16 * MiB);
	assert_int_equal(bp->hdr.init_size, 4 * MiB);
	assert_int_equal(bp->hdr.handover_offset, 0x190);
	/* ...and what the loader writes. */
	assert_int_equal(bp->hdr.type_of_loader, 0xff);
	assert_int_equal(bp->hdr.loadflags & 0x81, 0x81); /* LOADED_HIGH | CAN_USE_HEAP */
	assert_int_not_equal(bp->hdr.heap_end_ptr, 0);
	assert_int_equal(bp->hdr.vid_mode, 0xffff);
	assert_int_equal(bp->hdr.cmd_line_ptr, X86_CMDLINE);
	assert_int_equal(bp->hdr.ramdisk_image, 0x6000000);
	assert_int_equal(bp->hdr.ramdisk_size, 0x12345);
	assert_int_equal(bp->hdr.setup_data, 0);
	/* The e820 map and everything outside the header from scratch. */
	assert_true(bp->e820_entries >= 2);
	assert_int_equal(bp->e820_table[0].addr, 0);
	assert_int_equal(bp->e820_table[0].type, E820_RAM);
	for (size_t i = 0x26c; i < 0x2d0; i++)
		if (raw[i])
			fail_msg("boot_params byte 0x%zx is 0x%02x", i, raw[i]);
	free(bp);
	free(img.p);
	free(elf.p);
}

static void test_boot_params_short_header(void **state)
{
	struct bz_opts o = default_opts();
	struct buf elf = make_elf(), img;
	struct boot_info info = { .ram_size = 64 * MiB, .cmdline_gpa = X86_CMDLINE };
	struct boot_params *bp = malloc(sizeof(*bp));
	const uint8_t *raw = (const uint8_t *)bp;
	struct bzimage bz;

	/* A 2.10-sized header ends after init_size (0x264): the bytes the
	 * file has after it are setup code, not header. */
	o.version = 0x020a;
	o.hdr_jump = 0x62;
	img = bz_build(&o, elf.p, elf.len);
	assert_non_null(bp);
	assert_int_equal(parse(img.p, img.len, &bz), 0);
	assert_int_equal(bz.hdr_len, 0x264 - 0x1f1);
	assert_int_equal(bzimage_boot_params(bp, &bz, &info), 0);
	assert_int_equal(bp->hdr.init_size, 4 * MiB);
	for (size_t i = 0x264; i < 0x2d0; i++)
		if (raw[i])
			fail_msg("boot_params byte 0x%zx is 0x%02x", i, raw[i]);
	assert_int_equal(bp->hdr.ramdisk_image, 0);
	assert_int_equal(bp->hdr.ramdisk_size, 0);
	free(bp);
	free(img.p);
	free(elf.p);
}

static void test_initrd_end_max(void **state)
{
	struct bzimage bz;

	memset(&bz, 0, sizeof(bz));
	bz.hdr.initrd_addr_max = 0x1ffffff; /* the last byte it may use */
	assert_int_equal(bzimage_initrd_end_max(&bz), 0x2000000);
	bz.hdr.initrd_addr_max = 0xffffffff;
	assert_int_equal(bzimage_initrd_end_max(&bz), 0x100000000ull);
	bz.hdr.initrd_addr_max = 0;
	assert_int_equal(bzimage_initrd_end_max(&bz), 0x38000000);
}

/* ---- --kernel-decompress=guest ---- */

static void test_load_protected(void **state)
{
	struct bz_opts o = default_opts();
	struct buf elf = make_elf(), img = bz_build(&o, elf.p, elf.len);
	struct guest_mem gm;
	struct bzimage bz;
	uint64_t load, entry, end;

	assert_int_equal(guest_mem_init(&gm, 64 * MiB), 0);
	assert_int_equal(parse(img.p, img.len, &bz), 0);
	assert_int_equal(bzimage_load_protected(&bz, img.p, &gm, &load, &entry, &end, err,
						sizeof(err)), 0);
	assert_int_equal(load, 16 * MiB);
	assert_int_equal(entry, 16 * MiB + 0x200);
	assert_int_equal(end, 16 * MiB + 4 * MiB); /* init_size is more than the file */
	assert_memory_equal(guest_mem_ptr(&gm, load, bz.pm_size), img.p + 4 * 512, bz.pm_size);

	/* No pref_address: code32_start. */
	wr64(img.p + H_PREF_ADDRESS, 0);
	wr32(img.p + H_CODE32_START, 0x400000);
	assert_int_equal(parse(img.p, img.len, &bz), 0);
	assert_int_equal(bzimage_load_protected(&bz, img.p, &gm, &load, &entry, &end, err,
						sizeof(err)), 0);
	assert_int_equal(load, 0x400000);
	assert_int_equal(entry, 0x400200);

	/* Below 1 MiB, where the boot structures live. */
	wr32(img.p + H_CODE32_START, 0x8000);
	assert_int_equal(parse(img.p, img.len, &bz), 0);
	assert_int_equal(bzimage_load_protected(&bz, img.p, &gm, &load, &entry, &end, err,
						sizeof(err)), -ENOEXEC);
	assert_one_line_naming(err, "below 1 MiB");

	/* More room than RAM has. */
	wr64(img.p + H_PREF_ADDRESS, 16 * MiB);
	wr32(img.p + H_INIT_SIZE, 60 * MiB);
	assert_int_equal(parse(img.p, img.len, &bz), 0);
	assert_int_equal(bzimage_load_protected(&bz, img.p, &gm, &load, &entry, &end, err,
						sizeof(err)), -ENOSPC);
	assert_one_line_naming(err, "--mem");

	/* A pref_address at the top of the address space must not wrap. */
	wr64(img.p + H_PREF_ADDRESS, 0xfffffffffff00000ull);
	assert_int_equal(parse(img.p, img.len, &bz), 0);
	assert_int_equal(bzimage_load_protected(&bz, img.p, &gm, &load, &entry, &end, err,
						sizeof(err)), -ENOSPC);

	/* No 64-bit entry point. */
	wr64(img.p + H_PREF_ADDRESS, 16 * MiB);
	wr32(img.p + H_INIT_SIZE, 4 * MiB);
	wr16(img.p + H_XLOADFLAGS, 0x2);
	assert_int_equal(parse(img.p, img.len, &bz), 0);
	assert_int_equal(bzimage_load_protected(&bz, img.p, &gm, &load, &entry, &end, err,
						sizeof(err)), -ENOEXEC);
	assert_one_line_naming(err, "64-bit entry");
	guest_mem_exit(&gm);
	free(img.p);
	free(elf.p);
}

/* ---- boot_load() with files ---- */

struct tmpfile {
	char path[64];
};

static void tmp_write(struct tmpfile *t, const void *p, size_t len)
{
	int fd;

	snprintf(t->path, sizeof(t->path), "/tmp/vmrun-test-bz-XXXXXX");
	fd = mkstemp(t->path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, p, len), (ssize_t)len);
	close(fd);
}

static struct vm_config cfg_for(const char *kernel)
{
	return (struct vm_config){ .kernel_path = kernel, .mem_size = 64 * MiB, .cpus = 1,
				   .boot = BOOT_AUTO,
				   .kernel_decompress = KERNEL_DECOMPRESS_HOST };
}

static void test_boot_load_host(void **state)
{
	struct bz_opts o = default_opts();
	struct buf elf, img;
	struct tmpfile kf, rf;
	struct guest_mem gm;
	struct boot_setup bs;
	struct vm_config cfg;
	const struct boot_params *bp;
	uint8_t initrd[5000];
	const char *cl;

	o.cmdline_size = 16;
	o.initrd_addr_max = 32 * MiB - 1;
	img = bz_with_codec(&codecs[0], &o, &elf);
	tmp_write(&kf, img.p, img.len);
	memset(initrd, 0x5a, sizeof(initrd));
	tmp_write(&rf, initrd, sizeof(initrd));
	cfg = cfg_for(kf.path);
	cfg.cmdline = "console=ttyS0 exit=3 this is longer than sixteen";
	cfg.initrd_path = rf.path;
	assert_int_equal(guest_mem_init(&gm, cfg.mem_size), 0);
	memset(err, 0, sizeof(err));
	assert_int_equal(boot_load(&gm, &cfg, &bs, err, sizeof(err)), 0);
	assert_int_equal(bs.protocol, BOOT_LINUX64);
	assert_int_equal(bs.entry, ELF_ENTRY);
	assert_int_equal(bs.arg, X86_BOOT_PARAMS);
	/* The ELF's segment, BSS zeroed. */
	assert_memory_equal(guest_mem_ptr(&gm, ELF_PADDR, ELF_FILESZ), elf.p + ELF_DATA_OFF,
			    ELF_FILESZ);
	/* The command line, cut at the kernel's cmdline_size. */
	cl = guest_mem_ptr(&gm, X86_CMDLINE, 17);
	assert_memory_equal(cl, "console=ttyS0 ex", 16);
	assert_int_equal(cl[16], '\0');
	/* boot_params: the image's header with the loader's fields. */
	bp = guest_mem_ptr(&gm, X86_BOOT_PARAMS, sizeof(*bp));
	assert_int_equal(bp->hdr.version, 0x020f);
	assert_int_equal(bp->hdr.cmdline_size, 16);
	assert_int_equal(bp->hdr.type_of_loader, 0xff);
	assert_int_equal(bp->hdr.cmd_line_ptr, X86_CMDLINE);
	/* The initrd below initrd_addr_max, above the kernel. */
	assert_int_equal(bp->hdr.ramdisk_size, sizeof(initrd));
	assert_true(bp->hdr.ramdisk_image + bp->hdr.ramdisk_size <= 32 * MiB);
	assert_true(bp->hdr.ramdisk_image >= ELF_PADDR + ELF_MEMSZ);
	assert_memory_equal(guest_mem_ptr(&gm, bp->hdr.ramdisk_image, sizeof(initrd)), initrd,
			    sizeof(initrd));
	guest_mem_exit(&gm);
	unlink(kf.path);
	unlink(rf.path);
	free(img.p);
	free(elf.p);
}

/* An initrd that is empty, as a file or once inflated (a gzip member of
 * nothing): accepted, and the guest gets no initrd, not a zero-length one
 * at the top of RAM (which was refused as "outside guest RAM"). */
static void test_boot_load_empty_initrd(void **state)
{
	static const uint8_t gz_empty[] = { 0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3,
					    3, 0, 0, 0, 0, 0, 0, 0, 0, 0 };
	struct bz_opts o = default_opts();
	struct buf img = bz_with_codec(&codecs[0], &o, NULL);
	struct tmpfile kf, rf[2];
	struct guest_mem gm;
	struct boot_setup bs;
	struct vm_config cfg;
	const struct boot_params *bp;

	tmp_write(&kf, img.p, img.len);
	tmp_write(&rf[0], gz_empty, sizeof(gz_empty));
	tmp_write(&rf[1], "", 0);
	for (int i = 0; i < 2; i++) {
		cfg = cfg_for(kf.path);
		cfg.initrd_path = rf[i].path;
		assert_int_equal(guest_mem_init(&gm, cfg.mem_size), 0);
		memset(err, 0, sizeof(err));
		assert_int_equal(boot_load(&gm, &cfg, &bs, err, sizeof(err)), 0);
		bp = guest_mem_ptr(&gm, X86_BOOT_PARAMS, sizeof(*bp));
		assert_int_equal(bp->hdr.ramdisk_image, 0);
		assert_int_equal(bp->hdr.ramdisk_size, 0);
		guest_mem_exit(&gm);
		unlink(rf[i].path);
	}
	unlink(kf.path);
	free(img.p);
}

static void test_boot_load_guest(void **state)
{
	struct bz_opts o = default_opts();
	struct buf img = bz_with_codec(&codecs[3], &o, NULL);
	struct tmpfile kf;
	struct guest_mem gm;
	struct boot_setup bs;
	struct vm_config cfg;
	const struct boot_params *bp;

	tmp_write(&kf, img.p, img.len);
	cfg = cfg_for(kf.path);
	cfg.kernel_decompress = KERNEL_DECOMPRESS_GUEST;
	assert_int_equal(guest_mem_init(&gm, cfg.mem_size), 0);
	assert_int_equal(boot_load(&gm, &cfg, &bs, err, sizeof(err)), 0);
	assert_int_equal(bs.protocol, BOOT_LINUX64);
	assert_int_equal(bs.entry, 16 * MiB + 0x200);
	assert_memory_equal(guest_mem_ptr(&gm, 16 * MiB, PM_CODE_LEN), img.p + 4 * 512, PM_CODE_LEN);
	bp = guest_mem_ptr(&gm, X86_BOOT_PARAMS, sizeof(*bp));
	assert_int_equal(bp->hdr.header, BOOT_HDR_MAGIC);
	assert_int_equal(bp->hdr.init_size, 4 * MiB);
	/* PVH needs the decompressed ELF's note. */
	cfg.boot = BOOT_PVH;
	assert_int_equal(boot_load(&gm, &cfg, &bs, err, sizeof(err)), -EINVAL);
	assert_one_line_naming(err, "--kernel-decompress=host");
	cfg.kernel_decompress = KERNEL_DECOMPRESS_HOST;
	assert_int_equal(boot_load(&gm, &cfg, &bs, err, sizeof(err)), -ENOEXEC);
	assert_one_line_naming(err, "PVH");
	guest_mem_exit(&gm);
	unlink(kf.path);
	free(img.p);
}

static void test_boot_load_errors(void **state)
{
	static const char text[] = "#!/bin/sh\necho neither ELF nor bzImage, long enough to hold 0x206 bytes?\n";
	struct bz_opts o = default_opts();
	struct tmpfile kf;
	struct guest_mem gm;
	struct boot_setup bs;
	struct vm_config cfg;
	struct buf big = buf_alloc(0x1000), img;

	/* Neither format. */
	memcpy(big.p, text, sizeof(text));
	tmp_write(&kf, big.p, big.len);
	cfg = cfg_for(kf.path);
	assert_int_equal(guest_mem_init(&gm, cfg.mem_size), 0);
	assert_int_equal(boot_load(&gm, &cfg, &bs, err, sizeof(err)), -ENOEXEC);
	assert_one_line_naming(err, "neither an ELF kernel nor a bzImage");
	assert_non_null(strstr(err, kf.path));
	unlink(kf.path);

	/* A payload that decompresses to something other than an ELF. */
	{
		struct buf junk = gzip_compress((const uint8_t *)text, sizeof(text));

		img = bz_build(&o, junk.p, junk.len);
		free(junk.p);
	}
	tmp_write(&kf, img.p, img.len);
	cfg = cfg_for(kf.path);
	assert_int_equal(boot_load(&gm, &cfg, &bs, err, sizeof(err)), -ENOEXEC);
	assert_one_line_naming(err, "decompressed gzip payload: not an ELF file");
	unlink(kf.path);
	free(img.p);

	/* A decompressed kernel bigger than guest RAM. */
	{
		size_t n = 12 * MiB;
		uint8_t *zeros = calloc(1, n);
		struct buf payload;

		assert_non_null(zeros);
		payload = zstd_compress(zeros, n);
		free(zeros);
		img = bz_build(&o, payload.p, payload.len);
		free(payload.p);
		guest_mem_exit(&gm);
		assert_int_equal(guest_mem_init(&gm, 8 * MiB), 0);
		tmp_write(&kf, img.p, img.len);
		cfg = cfg_for(kf.path);
		cfg.mem_size = 8 * MiB;
		assert_int_equal(boot_load(&gm, &cfg, &bs, err, sizeof(err)), -EFBIG);
		assert_one_line_naming(err, "more than 8 MiB");
		unlink(kf.path);
		free(img.p);
	}
	guest_mem_exit(&gm);
	free(big.p);
}

#define PER_CODEC(fn)                                                         \
	cmocka_unit_test_prestate(fn, (void *)&codecs[0]),                    \
	cmocka_unit_test_prestate(fn, (void *)&codecs[1]),                    \
	cmocka_unit_test_prestate(fn, (void *)&codecs[2]),                    \
	cmocka_unit_test_prestate(fn, (void *)&codecs[3]),                    \
	cmocka_unit_test_prestate(fn, (void *)&codecs[4]),                    \
	cmocka_unit_test_prestate(fn, (void *)&codecs[5])

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_detect),
		cmocka_unit_test(test_parse_layout),
		cmocka_unit_test(test_parse_uncompressed_payload),
		PER_CODEC(test_codec_round_trip),
		PER_CODEC(test_codec_bomb),
		PER_CODEC(test_codec_truncated),
		cmocka_unit_test(test_corrupt_stream),
		cmocka_unit_test(test_unknown_compression),
		cmocka_unit_test(test_reject_old_protocol),
		cmocka_unit_test(test_reject_payload_outside_file),
		cmocka_unit_test(test_reject_setup_sects_past_eof),
		cmocka_unit_test(test_reject_truncated_file),
		cmocka_unit_test(test_reject_short_header),
		cmocka_unit_test(test_boot_params_from_header),
		cmocka_unit_test(test_boot_params_short_header),
		cmocka_unit_test(test_initrd_end_max),
		cmocka_unit_test(test_load_protected),
		cmocka_unit_test(test_boot_load_host),
		cmocka_unit_test(test_boot_load_empty_initrd),
		cmocka_unit_test(test_boot_load_guest),
		cmocka_unit_test(test_boot_load_errors),
	};

	return cmocka_run_group_tests_name("bzimage", tests, NULL, NULL);
}

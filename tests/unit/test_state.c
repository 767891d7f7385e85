/* The VM state stream (src/snapshot/state.c) against include/vmrun/state.h:
 * every property type written and read back, nodes and their parents, a tree
 * that outgrows its first 64 KiB, sticky errors, identical bytes for
 * identical calls, and a reader that refuses damaged or forged streams with a
 * one-line reason.  Damage is done by patching bytes of a valid stream; the
 * "forged" cases recompute the footer's CRC afterwards, as an attacker would,
 * so that the device-tree checks behind the CRC are what must refuse them.
 * FDT layout (header offsets, tags) is from the devicetree specification,
 * chapter 5. */
#include "unit.h"

#include <endian.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include <libfdt.h>
#include <zlib.h>

#include "vmrun/state.h"

/* FDT header fields (big-endian u32s), by byte offset. */
#define HDR_MAGIC 0
#define HDR_TOTALSIZE 4
#define HDR_OFF_STRUCT 8
#define HDR_OFF_STRINGS 12
#define HDR_OFF_RSVMAP 16
#define HDR_VERSION 20
#define HDR_SIZE_STRINGS 32
#define HDR_SIZE_STRUCT 36
#define FDT_TAG_PROP 3

struct blob {
	uint8_t *buf;
	size_t len;
};

static struct blob finish_ok(struct state_writer *w)
{
	struct blob b;
	void *out;

	assert_int_equal(state_writer_finish(w, &out, &b.len), 0);
	assert_non_null(out);
	b.buf = out;
	state_writer_free(w);
	return b;
}

static void writer_init_ok(struct state_writer *w)
{
	assert_int_equal(state_writer_init(w), 0);
}

/* The footer sits at any byte offset (FDTs come in any length): memcpy. */
static struct state_footer get_footer(const struct blob *b)
{
	struct state_footer f;

	memcpy(&f, b->buf + b->len - sizeof(f), sizeof(f));
	return f;
}

static void set_footer(struct blob *b, const struct state_footer *f)
{
	memcpy(b->buf + b->len - sizeof(*f), f, sizeof(*f));
}

/* Recompute the CRC over the (damaged) FDT, as a forger would. */
static void forge_crc(struct blob *b)
{
	struct state_footer f = get_footer(b);

	f.crc32 = htole32((uint32_t)crc32(0L, b->buf, (uInt)(b->len - sizeof(f))));
	set_footer(b, &f);
}

static uint32_t get_be32(const struct blob *b, size_t at)
{
	uint32_t v;

	memcpy(&v, b->buf + at, 4);
	return be32toh(v);
}

static void put_be32(struct blob *b, size_t at, uint32_t v)
{
	v = htobe32(v);
	memcpy(b->buf + at, &v, 4);
}

/* Byte offset in @b of the FDT_PROP tag of property @name of node @path. */
static size_t prop_tag_at(const struct blob *b, const char *path, const char *name)
{
	int node = fdt_path_offset(b->buf, path), prop;

	assert_true(node >= 0);
	fdt_for_each_property_offset(prop, b->buf, node) {
		const char *pn;

		assert_non_null(fdt_getprop_by_offset(b->buf, prop, &pn, NULL));
		if (!strcmp(pn, name))
			return fdt_off_dt_struct(b->buf) + (size_t)prop;
	}
	fail_msg("no property %s in %s", name, path);
	return 0;
}

static void open_ok(struct state_reader *r, const struct blob *b)
{
	if (state_reader_open(r, b->buf, b->len))
		fail_msg("refused: %s", r->msg);
	assert_int_equal(r->err, 0);
	assert_non_null(r->fdt);
}

/* @b is refused with @err and a one-line reason naming @needle; the reader
 * is left unusable. */
static void expect_refused(const struct blob *b, int err, const char *needle)
{
	struct state_reader r;

	assert_int_equal(state_reader_open(&r, b->buf, b->len), err);
	assert_int_equal(r.err, err);
	assert_one_line_naming(r.msg, needle);
	assert_null(r.fdt);
	assert_true(state_node(&r, true, "/") < 0);
	assert_int_equal(r.err, err);
}

/* A small valid stream: /vmrun and /cpus/cpu@0. */
static struct blob small_stream(void)
{
	struct state_writer w;

	writer_init_ok(&w);
	state_begin(&w, 1, "/vmrun");
	state_put_str(&w, "name", "vm0");
	state_put_u32(&w, "cpus", 2);
	state_begin(&w, 2, "/cpus/cpu@0");
	state_put_u64(&w, "rip", 0xfff0);
	state_put_bytes(&w, "raw", "\x01\x02\x03", 3);
	return finish_ok(&w);
}

static struct blob dup_blob(const struct blob *b)
{
	struct blob c = { malloc(b->len), b->len };

	assert_non_null(c.buf);
	memcpy(c.buf, b->buf, b->len);
	return c;
}

/* ---- writing and reading back ---- */

static void test_round_trip_every_type(void **state)
{
	static const uint8_t bytes[17] = { 0, 1, 2, 0xff, 0, 0x80, 7 };
	static const uint32_t u32s[5] = { 0, 1, 0x80000000u, 0xffffffffu, 0x12345678 };
	static const uint64_t u64s[3] = { 0, 0xffffffffffffffffull, 0x0123456789abcdefull };
	struct state_writer w;
	struct state_reader r;
	struct blob b;
	uint32_t v32, a32[5];
	uint64_t v64, a64[3];
	uint8_t got[17];
	const void *data;
	size_t len;
	char str[32];
	int node;

	writer_init_ok(&w);
	state_begin(&w, 3, "/dev@1");
	state_put_u32(&w, "u32-max", 0xffffffffu);
	state_put_u32(&w, "u32-zero", 0);
	state_put_u64(&w, "u64", 0x0123456789abcdefull);
	state_put_u64(&w, "u64-max", UINT64_MAX);
	state_put_bytes(&w, "bytes", bytes, sizeof(bytes));
	state_put_bytes(&w, "no-bytes", NULL, 0);
	state_put_str(&w, "str", "virtio-blk");
	state_put_str(&w, "empty-str", "");
	state_put_u32s(&w, "u32s", u32s, 5);
	state_put_u64s(&w, "u64s", u64s, 3);
	state_put_u32s(&w, "no-u32s", NULL, 0);
	b = finish_ok(&w);

	open_ok(&r, &b);
	assert_int_equal(r.format, STATE_FORMAT_VERSION);
	node = state_node(&r, true, "/dev@%d", 1);
	assert_true(node >= 0);
	assert_int_equal(state_version(&r, node, 1, 3), 3);
	assert_int_equal(state_get_u32(&r, node, "u32-max", &v32), 0);
	assert_int_equal(v32, 0xffffffffu);
	assert_int_equal(state_get_u32(&r, node, "u32-zero", &v32), 0);
	assert_int_equal(v32, 0);
	assert_int_equal(state_get_u64(&r, node, "u64", &v64), 0);
	assert_int_equal(v64, 0x0123456789abcdefull);
	assert_int_equal(state_get_u64(&r, node, "u64-max", &v64), 0);
	assert_int_equal(v64, UINT64_MAX);
	assert_int_equal(state_get_bytes(&r, node, "bytes", got, sizeof(got)), 0);
	assert_memory_equal(got, bytes, sizeof(bytes));
	assert_int_equal(state_get_blob(&r, node, "bytes", 100, &data, &len), 0);
	assert_int_equal(len, sizeof(bytes));
	assert_memory_equal(data, bytes, sizeof(bytes));
	assert_int_equal(state_get_blob(&r, node, "no-bytes", 100, &data, &len), 0);
	assert_int_equal(len, 0);
	assert_int_equal(state_get_bytes(&r, node, "no-bytes", got, 0), 0);
	assert_int_equal(state_get_str(&r, node, "str", str, sizeof(str)), 0);
	assert_string_equal(str, "virtio-blk");
	assert_int_equal(state_get_str(&r, node, "str", str, 11), 0); /* exactly fits */
	assert_int_equal(state_get_str(&r, node, "empty-str", str, sizeof(str)), 0);
	assert_string_equal(str, "");
	assert_int_equal(state_get_u32s(&r, node, "u32s", a32, 5), 0);
	assert_memory_equal(a32, u32s, sizeof(u32s));
	assert_int_equal(state_get_u64s(&r, node, "u64s", a64, 3), 0);
	assert_memory_equal(a64, u64s, sizeof(u64s));
	assert_int_equal(state_get_u32s(&r, node, "no-u32s", a32, 0), 0);
	assert_true(state_has(&r, node, "u64"));
	assert_false(state_has(&r, node, "nope"));
	assert_int_equal(r.err, 0);

	/* Cells are big-endian in the FDT itself, as dtc shows them. */
	assert_int_equal(state_get_blob(&r, node, "u64", 8, &data, &len), 0);
	assert_memory_equal(data, "\x01\x23\x45\x67\x89\xab\xcd\xef", 8);
	assert_int_equal(state_get_blob(&r, node, "u32s", 20, &data, &len), 0);
	assert_memory_equal((const uint8_t *)data + 8, "\x80\x00\x00\x00\xff\xff\xff\xff", 8);
	assert_int_equal(r.err, 0);
	free(b.buf);
}

static void test_nested_nodes(void **state)
{
	struct state_writer w;
	struct state_reader r;
	struct blob b;
	uint32_t v;
	int node;

	writer_init_ok(&w);
	state_begin(&w, 1, "/a/b/c@1"); /* /a and /a/b made on the way */
	state_put_u32(&w, "deep", 11);
	state_begin(&w, 4, "/a");        /* exists: reused, version set */
	state_put_u32(&w, "top", 22);
	state_begin(&w, 5, "/a/b2");
	state_put_u32(&w, "side", 33);
	state_begin(&w, 6, "/a/b/c@1"); /* back again: version overwritten */
	state_put_u32(&w, "deep2", 44);
	b = finish_ok(&w);

	open_ok(&r, &b);
	node = state_node(&r, true, "/a/b/c@1");
	assert_int_equal(state_version(&r, node, 1, 9), 6);
	assert_int_equal(state_get_u32(&r, node, "deep", &v), 0);
	assert_int_equal(v, 11);
	assert_int_equal(state_get_u32(&r, node, "deep2", &v), 0);
	assert_int_equal(v, 44);
	assert_false(state_has(&r, node, "top"));
	node = state_node(&r, true, "/a");
	assert_int_equal(state_version(&r, node, 1, 9), 4);
	assert_int_equal(state_get_u32(&r, node, "top", &v), 0);
	assert_int_equal(v, 22);
	node = state_node(&r, true, "/a/b2");
	assert_int_equal(state_version(&r, node, 1, 9), 5);
	assert_int_equal(state_get_u32(&r, node, "side", &v), 0);
	assert_int_equal(v, 33);
	/* A parent made on the way has no version of its own. */
	node = state_node(&r, true, "/a/b");
	assert_true(node >= 0);
	assert_false(state_has(&r, node, "version"));
	assert_int_equal(r.err, 0);
	free(b.buf);
}

static void test_bad_paths_refused_by_writer(void **state)
{
	struct state_writer w;
	char longname[STATE_PATH_MAX + 8];
	void *out;
	size_t len;

	writer_init_ok(&w);
	state_begin(&w, 1, "relative/path");
	assert_int_equal(w.err, -EINVAL);
	state_writer_free(&w);

	writer_init_ok(&w);
	state_begin(&w, 1, "/a//");
	assert_int_equal(w.err, -EINVAL);
	state_writer_free(&w);

	writer_init_ok(&w);
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	state_begin(&w, 1, "/%s", longname);
	assert_int_equal(w.err, -ENAMETOOLONG);
	assert_int_equal(state_writer_finish(&w, &out, &len), -ENAMETOOLONG);
	assert_null(out);
	assert_int_equal(len, 0);
	state_writer_free(&w);
}

/* More than the first 64 KiB: many nodes, many properties, one big one. */
static void test_grows_past_initial_size(void **state)
{
	enum { NODES = 300, PROPS = 20, BIG = 300 * 1024 };
	struct state_writer w;
	struct state_reader r;
	struct blob b;
	uint8_t *big = malloc(BIG);
	const void *data;
	size_t len;
	uint64_t cells[4];

	assert_non_null(big);
	for (size_t i = 0; i < BIG; i++)
		big[i] = (uint8_t)(i * 7 + (i >> 11));
	writer_init_ok(&w);
	for (int n = 0; n < NODES; n++) {
		state_begin(&w, 1, "/devices/dev@%x", n);
		for (int p = 0; p < PROPS; p++) {
			char name[16];

			snprintf(name, sizeof(name), "p%d", p);
			cells[0] = (uint64_t)n;
			cells[1] = (uint64_t)p;
			cells[2] = (uint64_t)n * 1000003u + (uint64_t)p;
			cells[3] = ~cells[2];
			state_put_u64s(&w, name, cells, 4);
		}
	}
	state_begin(&w, 1, "/big");
	state_put_bytes(&w, "data", big, BIG);
	state_put_u32(&w, "after", 0xabcd);
	b = finish_ok(&w);
	assert_true(b.len > BIG + NODES * PROPS * 32);

	open_ok(&r, &b);
	for (int n = 0; n < NODES; n++) {
		int node = state_node(&r, true, "/devices/dev@%x", n);

		for (int p = 0; p < PROPS; p++) {
			char name[16];

			snprintf(name, sizeof(name), "p%d", p);
			assert_int_equal(state_get_u64s(&r, node, name, cells, 4), 0);
			assert_int_equal(cells[0], n);
			assert_int_equal(cells[1], p);
			assert_int_equal(cells[2], (uint64_t)n * 1000003u + (uint64_t)p);
			assert_int_equal(cells[3], ~cells[2]);
		}
	}
	assert_int_equal(state_get_blob(&r, state_node(&r, true, "/big"), "data", BIG, &data, &len), 0);
	assert_int_equal(len, BIG);
	assert_memory_equal(data, big, BIG);
	assert_int_equal(r.err, 0);
	free(big);
	free(b.buf);
}

static void test_oversized_property_refused(void **state)
{
	struct state_writer w;
	void *out;
	size_t len;
	/* Never touched: the length alone is refused (calloc leaves the
	 * pages unmapped). */
	uint8_t *huge = calloc(1, STATE_MAX_BLOB + 1);

	assert_non_null(huge);
	writer_init_ok(&w);
	state_begin(&w, 1, "/x");
	state_put_bytes(&w, "huge", huge, STATE_MAX_BLOB + 1);
	assert_int_equal(w.err, -E2BIG);
	assert_int_equal(state_writer_finish(&w, &out, &len), -E2BIG);
	state_writer_free(&w);
	free(huge);
}

/* ---- sticky errors ---- */

static void test_writer_error_sticky(void **state)
{
	struct state_writer w;
	void *out = (void *)1;
	size_t len = 1;

	writer_init_ok(&w);
	state_begin(&w, 1, "/ok");
	state_put_u32(&w, "a", 1);
	assert_int_equal(w.err, 0);
	state_fail(&w, -EIO);
	state_fail(&w, -ENOSPC); /* the first one stays */
	state_begin(&w, 1, "relative");
	state_put_u32(&w, "b", 2);
	assert_int_equal(w.err, -EIO);
	assert_int_equal(state_writer_finish(&w, &out, &len), -EIO);
	assert_null(out);
	assert_int_equal(len, 0);
	state_writer_free(&w);

	/* A positive or zero "error" still marks the writer failed. */
	writer_init_ok(&w);
	state_fail(&w, 5);
	assert_int_equal(w.err, -EIO);
	state_writer_free(&w);

	/* The writer's own error is not replaced by a later state_fail(). */
	writer_init_ok(&w);
	state_begin(&w, 1, "no-slash");
	state_fail(&w, -EIO);
	assert_int_equal(state_writer_finish(&w, &out, &len), -EINVAL);
	state_writer_free(&w);
}

static void test_reader_error_sticky(void **state)
{
	struct blob b = small_stream();
	struct state_reader r;
	char first[sizeof(r.msg)];
	uint32_t v;
	uint64_t v64;
	int cpu, missing;

	open_ok(&r, &b);
	cpu = state_node(&r, true, "/cpus/cpu@0");
	assert_int_equal(state_get_u32(&r, cpu, "rip", &v), -EINVAL); /* 8 bytes */
	assert_int_equal(r.err, -EINVAL);
	strcpy(first, r.msg);
	assert_one_line_naming(first, "rip");

	/* Later failures keep the first error and its message. */
	assert_true(state_get_u32(&r, cpu, "nope", &v) != 0);
	missing = state_node(&r, true, "/not/there");
	assert_true(missing < 0);
	assert_true(state_get_u32(&r, missing, "x", &v) != 0);
	assert_int_equal(state_reject(&r, -ERANGE, "mine"), -ERANGE);
	assert_int_equal(r.err, -EINVAL);
	assert_string_equal(r.msg, first);
	/* ...and the reader still reads. */
	assert_int_equal(state_get_u64(&r, cpu, "rip", &v64), 0);
	assert_int_equal(v64, 0xfff0);
	free(b.buf);
}

static void test_reject_records_first(void **state)
{
	struct blob b = small_stream();
	struct state_reader r;

	open_ok(&r, &b);
	assert_int_equal(state_reject(&r, -ERANGE, "state: /cpus/cpu@%d: apic id %u twice", 0, 7), -ERANGE);
	assert_int_equal(state_reject(&r, -EINVAL, "second"), -EINVAL);
	assert_int_equal(r.err, -ERANGE);
	assert_string_equal(r.msg, "state: /cpus/cpu@0: apic id 7 twice");
	free(b.buf);
}

/* ---- determinism ---- */

static struct blob write_sample(void)
{
	static const uint64_t regs[18] = { 1, 2, 3, 0xffff800000000000ull };
	static uint8_t big[100 * 1024];
	struct state_writer w;

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i ^ (i >> 8));
	writer_init_ok(&w);
	state_begin(&w, 1, "/vmrun");
	state_put_str(&w, "vmrun-version", "0.1.0");
	for (int c = 0; c < 4; c++) {
		state_begin(&w, 2, "/cpus/cpu@%d", c);
		state_put_u64s(&w, "regs", regs, 18);
		state_put_u32(&w, "apic-id", (uint32_t)c);
	}
	state_begin(&w, 1, "/kvm/ioapic");
	state_put_bytes(&w, "big", big, sizeof(big)); /* the tree grows twice */
	state_begin(&w, 1, "/cpus/cpu@1");
	state_put_u32(&w, "apic-id", 9); /* overwritten in place */
	return finish_ok(&w);
}

static void test_deterministic(void **state)
{
	struct blob a = write_sample(), b = write_sample();

	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.buf, b.buf, a.len);
	free(a.buf);
	free(b.buf);
}

/* ---- refusals: the footer ---- */

static void test_refuses_too_short(void **state)
{
	struct blob b = small_stream();
	struct blob e = { b.buf, 0 };

	expect_refused(&e, -EINVAL, "too short");
	e.len = sizeof(struct state_footer) + 40 - 1;
	expect_refused(&e, -EINVAL, "too short");
	free(b.buf);
}

static void test_refuses_without_magic(void **state)
{
	struct blob b = small_stream(), t;
	struct state_footer f = get_footer(&b);

	f.magic[3] ^= 0x20;
	set_footer(&b, &f);
	expect_refused(&b, -EINVAL, "no vmrun state footer");
	/* A truncated stream has no footer where it should be either. */
	t = small_stream();
	t.len -= 5;
	expect_refused(&t, -EINVAL, "no vmrun state footer");
	free(b.buf);
	free(t.buf);
}

static void test_refuses_unknown_format_version(void **state)
{
	static const uint32_t bad[] = { 0, 2, 99 };
	static const char *const named[] = { "format version 0", "format version 2",
					     "format version 99" };

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		struct blob b = small_stream();
		struct state_footer f = get_footer(&b);

		f.format = htole32(bad[i]);
		set_footer(&b, &f);
		expect_refused(&b, -EPROTO, named[i]);
		free(b.buf);
	}
}

static void test_refuses_blob_len_mismatch(void **state)
{
	struct blob b = small_stream();
	struct state_footer f = get_footer(&b);
	uint64_t real = b.len - sizeof(f);

	f.blob_len = htole64(real + 8);
	set_footer(&b, &f);
	expect_refused(&b, -EINVAL, "footer says");
	f.blob_len = htole64(real - 8);
	set_footer(&b, &f);
	expect_refused(&b, -EINVAL, "footer says");
	f.blob_len = htole64(real | (1ull << 40));
	set_footer(&b, &f);
	expect_refused(&b, -EINVAL, "footer says");
	free(b.buf);
}

static void test_refuses_nonzero_flags(void **state)
{
	struct blob b = small_stream();
	struct state_footer f = get_footer(&b);

	f.flags = htole32(1);
	set_footer(&b, &f);
	expect_refused(&b, -EINVAL, "flags");
	f.flags = 0;
	f.reserved = htole32(0x80000000u);
	set_footer(&b, &f);
	expect_refused(&b, -EINVAL, "reserved");
	free(b.buf);
}

static void test_refuses_crc_mismatch(void **state)
{
	struct blob b = small_stream();
	struct state_footer f;
	size_t tag = prop_tag_at(&b, "/vmrun", "cpus");

	/* One bit of a value: still a perfectly valid FDT, only the CRC
	 * tells. */
	b.buf[tag + 12 + 3] ^= 0x01;
	expect_refused(&b, -EINVAL, "checksum");
	b.buf[tag + 12 + 3] ^= 0x01;
	f = get_footer(&b);
	f.crc32 ^= htole32(0x00800000u);
	set_footer(&b, &f);
	expect_refused(&b, -EINVAL, "checksum");
	free(b.buf);
}

/* ---- refusals: a forged CRC over a damaged FDT ---- */

static void forged_refused(size_t at, uint32_t v, const char *needle)
{
	struct blob b = small_stream();

	put_be32(&b, at, v);
	forge_crc(&b);
	expect_refused(&b, -EINVAL, needle);
	free(b.buf);
}

static void test_forged_header_refused(void **state)
{
	struct blob b = small_stream();
	uint32_t total = get_be32(&b, HDR_TOTALSIZE);
	uint32_t strings = get_be32(&b, HDR_OFF_STRINGS);

	forged_refused(HDR_MAGIC, 0xd00dfeee, "device-tree header");
	forged_refused(HDR_TOTALSIZE, total + 4, "device-tree header");
	forged_refused(HDR_TOTALSIZE, total - 4, "device-tree header");
	forged_refused(HDR_TOTALSIZE, 0xffffffffu, "device-tree header");
	forged_refused(HDR_OFF_STRUCT, total, "device-tree header");
	forged_refused(HDR_OFF_STRUCT, get_be32(&b, HDR_OFF_STRUCT) + 2, "device-tree header");
	forged_refused(HDR_OFF_RSVMAP, get_be32(&b, HDR_OFF_RSVMAP) + 4, "device-tree header");
	forged_refused(HDR_SIZE_STRUCT, 0x7ffffff0u, "device-tree header");
	forged_refused(HDR_SIZE_STRINGS, total - strings + 1, "device-tree header");
	forged_refused(HDR_OFF_STRINGS, 0xfffffff0u, "device-tree header");
	free(b.buf);
}

static void test_forged_fdt_version_16_refused(void **state)
{
	forged_refused(HDR_VERSION, 16, "device-tree header");
}

static void test_forged_structure_refused(void **state)
{
	struct blob b = small_stream();
	size_t tag = prop_tag_at(&b, "/vmrun", "cpus");
	size_t strct = get_be32(&b, HDR_OFF_STRUCT);

	assert_int_equal(get_be32(&b, tag), FDT_TAG_PROP);
	forged_refused(tag, 0x77, "malformed device tree");          /* unknown tag */
	forged_refused(tag + 4, 0x1000, "malformed device tree");    /* length past the block */
	forged_refused(tag + 4, 0x7ffffff0u, "malformed device tree");
	/* libfdt 1.6.1 loops forever on this one: the property's end wraps
	 * back onto its own tag. */
	forged_refused(tag + 4, 0xfffffff4u, "malformed device tree");
	forged_refused(tag + 4, 0xffffffffu, "malformed device tree");
	forged_refused(strct, 2, "malformed device tree"); /* root is an END_NODE */
	/* The struct block's last tag, FDT_END, turned into a NOP. */
	forged_refused(strct + get_be32(&b, HDR_SIZE_STRUCT) - 4, 4, "malformed device tree");
	free(b.buf);
}

static void test_forged_strings_refused(void **state)
{
	struct blob b = small_stream();
	size_t tag = prop_tag_at(&b, "/vmrun", "cpus");

	/* The property's name offset out of the strings block. */
	forged_refused(tag + 8, 0x10000, "malformed device tree");
	forged_refused(tag + 8, 0xffffffffu, "malformed device tree");
	free(b.buf);

	/* The strings block without its last NUL: every name must end. */
	b = small_stream();
	b.buf[get_be32(&b, HDR_OFF_STRINGS) + get_be32(&b, HDR_SIZE_STRINGS) - 1] = 'x';
	forge_crc(&b);
	expect_refused(&b, -EINVAL, "malformed device tree");
	free(b.buf);
}

static void test_forged_node_name_refused(void **state)
{
	struct blob b = small_stream();
	uint8_t *at = memmem(b.buf, b.len, "cpu@0", 6);

	assert_non_null(at);
	at[3] = ' ';
	forge_crc(&b);
	expect_refused(&b, -EINVAL, "node name");
	free(b.buf);
}

static void test_nesting_limit(void **state)
{
	struct state_writer w;
	struct state_reader r;
	struct blob b;

	writer_init_ok(&w);
	state_begin(&w, 1, "/1/2/3/4/5/6/7/8"); /* eight levels below the root */
	b = finish_ok(&w);
	open_ok(&r, &b);
	free(b.buf);

	writer_init_ok(&w);
	state_begin(&w, 1, "/1/2/3/4/5/6/7/8/9");
	b = finish_ok(&w);
	expect_refused(&b, -EINVAL, "too deep");
	free(b.buf);
}

/* ---- getters on well-formed but wrong properties ---- */

static struct blob odd_stream(void)
{
	struct state_writer w;

	writer_init_ok(&w);
	state_begin(&w, 1, "/devices/rtc@70");
	state_put_bytes(&w, "three", "abc", 3);
	state_put_bytes(&w, "four", "abcd", 4);
	state_put_bytes(&w, "no-nul", "hello", 5);
	state_put_bytes(&w, "inner-nul", "ab\0cd", 6);
	state_put_str(&w, "hello", "hello");
	state_put_u32(&w, "seven", 7);
	return finish_ok(&w);
}

/* @call (using the fresh reader r and the node's offset node) fails with
 * @want and a message naming the node and @needle. */
#define EXPECT_GET_FAILS(stream, want, needle, call)                                     \
	do {                                                                       \
		struct state_reader r;                                             \
		int node;                                                          \
                                                                                   \
		open_ok(&r, (stream));                                                  \
		node = state_node(&r, true, "/devices/rtc@70");                    \
		assert_int_equal((call), (want));                                   \
		assert_int_equal(r.err, (want));                                    \
		assert_one_line_naming(r.msg, "/devices/rtc@70");                  \
		assert_one_line_naming(r.msg, (needle));                           \
	} while (0)

static void test_wrong_lengths_refused(void **state)
{
	struct blob b = odd_stream();
	uint32_t v32, a32[2];
	uint64_t v64, a64[2];
	uint8_t bytes[8];
	const void *data;
	size_t len;
	char s[16];

	EXPECT_GET_FAILS(&b, -EINVAL, "'three' has 3 bytes", state_get_u32(&r, node, "three", &v32));
	EXPECT_GET_FAILS(&b, -EINVAL, "'four' has 4 bytes", state_get_u64(&r, node, "four", &v64));
	EXPECT_GET_FAILS(&b, -EINVAL, "'three'", state_get_u32_range(&r, node, "three", 0, 9, &v32));
	EXPECT_GET_FAILS(&b, -EINVAL, "'four'", state_get_bytes(&r, node, "four", bytes, 5));
	EXPECT_GET_FAILS(&b, -EINVAL, "'four'", state_get_bytes(&r, node, "four", bytes, 3));
	EXPECT_GET_FAILS(&b, -EINVAL, "'four'", state_get_blob(&r, node, "four", 3, &data, &len));
	EXPECT_GET_FAILS(&b, -EINVAL, "'four'", state_get_u32s(&r, node, "four", a32, 2));
	EXPECT_GET_FAILS(&b, -EINVAL, "'four'", state_get_u64s(&r, node, "four", a64, 1));
	EXPECT_GET_FAILS(&b, -EINVAL, "'no-nul' is not a string",
			 state_get_str(&r, node, "no-nul", s, sizeof(s)));
	EXPECT_GET_FAILS(&b, -EINVAL, "'inner-nul' is not a string",
			 state_get_str(&r, node, "inner-nul", s, sizeof(s)));
	/* "hello" and its NUL are 6 bytes: too long for 5. */
	EXPECT_GET_FAILS(&b, -EINVAL, "'hello'", state_get_str(&r, node, "hello", s, 5));
	free(b.buf);
}

static void test_u32_range(void **state)
{
	struct blob b = odd_stream();
	struct state_reader ok;
	uint32_t v = 0xdead;
	int rtc;

	open_ok(&ok, &b);
	rtc = state_node(&ok, true, "/devices/rtc@70");
	assert_int_equal(state_get_u32_range(&ok, rtc, "seven", 7, 7, &v), 0);
	assert_int_equal(v, 7);
	assert_int_equal(state_get_u32_range(&ok, rtc, "seven", 0, UINT32_MAX, &v), 0);
	assert_int_equal(ok.err, 0);

	v = 0xdead;
	EXPECT_GET_FAILS(&b, -EINVAL, "'seven' = 7 is outside 8..9",
			 state_get_u32_range(&r, node, "seven", 8, 9, &v));
	assert_int_equal(v, 0xdead); /* untouched */
	EXPECT_GET_FAILS(&b, -EINVAL, "'seven' = 7 is outside 0..6",
			 state_get_u32_range(&r, node, "seven", 0, 6, &v));
	assert_int_equal(v, 0xdead);
	free(b.buf);
}

static void test_node_version(void **state)
{
	struct blob b = small_stream(); /* /cpus/cpu@0 has version 2 */
	struct state_reader r;
	int node;

	open_ok(&r, &b);
	node = state_node(&r, true, "/cpus/cpu@0");
	assert_int_equal(state_version(&r, node, 2, 2), 2);
	assert_int_equal(state_version(&r, node, 1, 5), 2);
	assert_int_equal(r.err, 0);

	assert_int_equal(state_version(&r, node, 3, 4), -EPROTO);
	assert_one_line_naming(r.msg, "/cpus/cpu@0 has version 2");
	assert_one_line_naming(r.msg, "3 to 4");

	open_ok(&r, &b);
	assert_int_equal(state_version(&r, node, 0, 1), -EPROTO);
	assert_one_line_naming(r.msg, "/cpus/cpu@0 has version 2");

	/* /cpus was made on the way: no version at all. */
	open_ok(&r, &b);
	assert_int_equal(state_version(&r, state_node(&r, true, "/cpus"), 1, 1), -ENOENT);
	assert_one_line_naming(r.msg, "/cpus");
	assert_one_line_naming(r.msg, "'version'");
	free(b.buf);
}

static void test_missing_named(void **state)
{
	struct blob b = small_stream();
	struct state_reader r;
	uint64_t v;
	int node;

	open_ok(&r, &b);
	assert_int_equal(state_node(&r, false, "/cpus/cpu@%d", 3), -ENOENT);
	assert_int_equal(r.err, 0); /* not required: no error */
	assert_int_equal(state_node(&r, true, "/cpus/cpu@%d", 3), -ENOENT);
	assert_int_equal(r.err, -ENOENT);
	assert_one_line_naming(r.msg, "/cpus/cpu@3");

	open_ok(&r, &b);
	node = state_node(&r, true, "/cpus/cpu@0");
	assert_int_equal(state_get_u64(&r, node, "rflags", &v), -ENOENT);
	assert_one_line_naming(r.msg, "/cpus/cpu@0");
	assert_one_line_naming(r.msg, "'rflags'");

	/* A getter on a missing node fails with the node's error. */
	open_ok(&r, &b);
	node = state_node(&r, true, "/kvm/pit");
	assert_int_equal(state_get_u64(&r, node, "count", &v), -ENOENT);
	assert_one_line_naming(r.msg, "/kvm/pit");
	/* A bad offset with no error yet still fails and says so. */
	open_ok(&r, &b);
	assert_true(state_get_u64(&r, -1, "count", &v) < 0);
	assert_one_line_naming(r.msg, "count");
	free(b.buf);
}

/* libfdt 1.6.1 reads a relative path as an alias from the tree itself: one
 * that names itself recursed until the stack overflowed. */
static void test_relative_path_refused(void **state)
{
	struct state_writer w;
	struct state_reader r;
	struct blob b;

	writer_init_ok(&w);
	state_begin(&w, 1, "/aliases");
	state_put_str(&w, "vmrun", "vmrun");
	state_put_str(&w, "cpu", "/cpus/cpu@0");
	state_begin(&w, 1, "/cpus/cpu@0");
	b = finish_ok(&w);

	open_ok(&r, &b);
	assert_int_equal(state_node(&r, false, "vmrun"), -EINVAL);
	assert_one_line_naming(r.msg, "not absolute");
	open_ok(&r, &b);
	assert_int_equal(state_node(&r, true, "cpu"), -EINVAL);
	assert_one_line_naming(r.msg, "cpu");
	open_ok(&r, &b);
	assert_true(state_node(&r, true, "/cpus/cpu@0") >= 0);
	free(b.buf);
}

/* ---- printing ---- */

static void test_print(void **state)
{
	/* small_stream()'s tree, written out by hand.  libfdt puts a new
	 * property first in its node and a new node first among its
	 * siblings: newest first.  /cpus, made on the way to /cpus/cpu@0, has
	 * no properties.  Cells print as 32-bit hex, strings quoted, three
	 * bytes as a byte list. */
	static const char want[] =
		"/ {\n"
		"        cpus {\n"
		"                cpu@0 {\n"
		"                        raw = [01 02 03];\n"
		"                        rip = <0x00000000 0x0000fff0>;\n"
		"                        version = <0x00000002>;\n"
		"                };\n"
		"        };\n"
		"        vmrun {\n"
		"                cpus = <0x00000002>;\n"
		"                name = \"vm0\";\n"
		"                version = <0x00000001>;\n"
		"        };\n"
		"};\n";
	struct blob b = small_stream();
	struct state_reader r;
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);

	assert_non_null(out);
	open_ok(&r, &b);
	state_print(&r, out);
	assert_int_equal(fclose(out), 0);
	assert_string_equal(text, want);
	free(text);
	free(b.buf);
}

static void test_print_refused_reader_prints_nothing(void **state)
{
	struct blob b = small_stream();
	struct state_reader r;
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);

	b.buf[10] ^= 1;
	assert_int_equal(state_reader_open(&r, b.buf, b.len), -EINVAL);
	state_print(&r, out);
	assert_int_equal(fclose(out), 0);
	assert_int_equal(len, 0);
	free(text);
	free(b.buf);
}

/* ---- the reader never writes to the stream ---- */

static void test_reader_leaves_stream_alone(void **state)
{
	struct blob b = small_stream(), c = dup_blob(&b);
	struct state_reader r;
	char s[8];
	int node;

	FILE *null = fopen("/dev/null", "w");

	assert_non_null(null);
	open_ok(&r, &b);
	node = state_node(&r, true, "/vmrun");
	assert_int_equal(state_get_str(&r, node, "name", s, sizeof(s)), 0);
	state_print(&r, null);
	fclose(null);
	assert_memory_equal(b.buf, c.buf, b.len);
	free(b.buf);
	free(c.buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_every_type),
		cmocka_unit_test(test_nested_nodes),
		cmocka_unit_test(test_bad_paths_refused_by_writer),
		cmocka_unit_test(test_grows_past_initial_size),
		cmocka_unit_test(test_oversized_property_refused),
		cmocka_unit_test(test_writer_error_sticky),
		cmocka_unit_test(test_reader_error_sticky),
		cmocka_unit_test(test_reject_records_first),
		cmocka_unit_test(test_deterministic),
		cmocka_unit_test(test_refuses_too_short),
		cmocka_unit_test(test_refuses_without_magic),
		cmocka_unit_test(test_refuses_unknown_format_version),
		cmocka_unit_test(test_refuses_blob_len_mismatch),
		cmocka_unit_test(test_refuses_nonzero_flags),
		cmocka_unit_test(test_refuses_crc_mismatch),
		cmocka_unit_test(test_forged_header_refused),
		cmocka_unit_test(test_forged_fdt_version_16_refused),
		cmocka_unit_test(test_forged_structure_refused),
		cmocka_unit_test(test_forged_strings_refused),
		cmocka_unit_test(test_forged_node_name_refused),
		cmocka_unit_test(test_nesting_limit),
		cmocka_unit_test(test_wrong_lengths_refused),
		cmocka_unit_test(test_u32_range),
		cmocka_unit_test(test_node_version),
		cmocka_unit_test(test_missing_named),
		cmocka_unit_test(test_relative_path_refused),
		cmocka_unit_test(test_print),
		cmocka_unit_test(test_print_refused_reader_prints_nothing),
		cmocka_unit_test(test_reader_leaves_stream_alone),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

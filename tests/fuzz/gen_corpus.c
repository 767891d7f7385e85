// SPDX-License-Identifier: MIT
/*
 * Writes the seed inputs of tests/fuzz/corpus/state/ (the seed_* files):
 *   fuzz_state_gen DIR
 * Valid state files made with the writer (seed_valid_*), and damaged copies:
 * the footer's checks one by one, and FDT damage behind a correct (forged)
 * CRC, which only an attacker would send, refused (seed_bad_*) or still a
 * well-formed tree holding an odd value (seed_forged_*).  The fuzzer's own
 * finds sit beside them, named by their SHA-1 (see README.md).
 */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libfdt.h>
#include <zlib.h>

#include "vmrun/state.h"

struct file {
	uint8_t *buf;
	size_t len;
};

static const char *outdir;
static int failed;

static void save(const char *name, const uint8_t *buf, size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", outdir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(buf, 1, len, f) != len || fclose(f)) {
		fprintf(stderr, "fuzz_state_gen: %s: %s\n", path, strerror(errno));
		failed = 1;
	}
}

static struct file finish(struct state_writer *w)
{
	struct file f;
	void *out;

	if (state_writer_finish(w, &out, &f.len)) {
		fprintf(stderr, "fuzz_state_gen: writer failed\n");
		exit(1);
	}
	f.buf = out;
	state_writer_free(w);
	return f;
}

/* The footer (not aligned: FDTs come in any length) in and out of @f. */
static struct state_footer get_footer(const struct file *f)
{
	struct state_footer ft;

	memcpy(&ft, f->buf + f->len - sizeof(ft), sizeof(ft));
	return ft;
}

static void set_footer(struct file *f, const struct state_footer *ft)
{
	memcpy(f->buf + f->len - sizeof(*ft), ft, sizeof(*ft));
}

/* Make the footer correct again after the FDT was damaged. */
static void forge_crc(struct file *f)
{
	struct state_footer ft = get_footer(f);

	ft.crc32 = htole32((uint32_t)crc32(0L, f->buf, (uInt)(f->len - sizeof(ft))));
	set_footer(f, &ft);
}

static struct file copy(const struct file *f)
{
	struct file c = { malloc(f->len), f->len };

	if (!c.buf)
		exit(1);
	memcpy(c.buf, f->buf, f->len);
	return c;
}

static struct file make_small(void)
{
	static const uint64_t regs[18] = { 0x1000, 0x2000, 0, 0xdeadbeef, 1, 2, 3, 4, 5, 6, 7,
					   8, 9, 10, 11, 12, 0xffffffff81000000ull, 0x2 };
	static const uint8_t sregs[40] = { 1, 2, 3, 4, 5 };
	struct state_writer w;

	if (state_writer_init(&w))
		exit(1);
	state_begin(&w, 1, "/vmrun");
	state_put_u32(&w, "format", STATE_FORMAT_VERSION);
	state_put_str(&w, "vmrun-version", "0.1.0");
	state_put_u64(&w, "mem-bytes", 128ull << 20);
	state_put_u32(&w, "cpus", 1);
	state_begin(&w, 1, "/cpus/cpu@0");
	state_put_u64s(&w, "regs", regs, 18);
	state_put_bytes(&w, "sregs", sregs, sizeof(sregs));
	state_put_u32(&w, "apic-id", 0);
	state_put_u64(&w, "xcr0", 7);
	return finish(&w);
}

static struct file make_machine(void)
{
	uint32_t redir32[24];
	uint64_t redir[24], msrs[40];
	struct state_writer w;

	for (int i = 0; i < 24; i++) {
		redir[i] = 0x10000ull | (uint64_t)(0x20 + i);
		redir32[i] = (uint32_t)i * 3;
	}
	for (int i = 0; i < 40; i++)
		msrs[i] = 0xc0000080ull + (uint64_t)i;
	if (state_writer_init(&w))
		exit(1);
	state_begin(&w, 1, "/vmrun");
	state_put_u32(&w, "format", STATE_FORMAT_VERSION);
	state_put_str(&w, "vmrun-version", "0.1.0");
	state_put_u64(&w, "mem-bytes", 1ull << 30);
	state_put_u32(&w, "cpus", 2);
	for (int c = 0; c < 2; c++) {
		state_begin(&w, 2, "/cpus/cpu@%d", c);
		state_put_u64s(&w, "regs", msrs, 18);
		state_put_u64s(&w, "msrs", msrs, 40);
		state_put_u32(&w, "mp-state", c ? 2 : 0);
	}
	state_begin(&w, 1, "/kvm/ioapic");
	state_put_u64s(&w, "redir", redir, 24);
	state_put_u32(&w, "id", 0);
	state_begin(&w, 1, "/kvm/pic");
	state_put_u32s(&w, "regs", redir32, 24);
	state_begin(&w, 1, "/kvm/clock");
	state_put_u64(&w, "ns", 123456789);
	state_begin(&w, 1, "/devices/serial@3f8");
	state_put_bytes(&w, "regs", "\x01\x02\x03\x00\x05\x06\x07\x08", 8);
	state_begin(&w, 3, "/devices/virtio-blk@d0000000");
	state_put_u32(&w, "status", 0xf);
	state_put_u64(&w, "features", 0x130000000ull);
	state_put_str(&w, "image", "/var/lib/vm/disk0.qcow2.base-1");
	state_begin(&w, 1, "/devices/virtio-blk@d0000000/queue@0");
	state_put_u64(&w, "desc", 0x7000);
	state_put_u32(&w, "size", 256);
	return finish(&w);
}

/* Every kind of value state_print() and the getters tell apart. */
static struct file make_types(void)
{
	static const uint32_t many[70] = { 1, 2, 3 };
	struct state_writer w;

	if (state_writer_init(&w))
		exit(1);
	state_begin(&w, 1, "/types");
	state_put_bytes(&w, "empty", "", 0);
	state_put_bytes(&w, "three", "abc", 3);
	state_put_bytes(&w, "five", "abcde", 5);
	state_put_bytes(&w, "embedded-nul", "ab\0cd", 6);
	state_put_bytes(&w, "no-nul", "abcd", 4);
	state_put_bytes(&w, "control", "a\tb", 4);
	state_put_str(&w, "str", "hello");
	state_put_str(&w, "empty-str", "");
	state_put_u32s(&w, "many", many, 70);
	state_put_u32(&w, "version2", 0xffffffffu);
	/* A relative lookup in libfdt reads /aliases: give it one. */
	state_begin(&w, 1, "/aliases");
	state_put_str(&w, "vmrun", "/types");
	return finish(&w);
}

/* Eight levels below the root, and one more (refused). */
static struct file make_deep(int levels)
{
	struct state_writer w;
	char path[STATE_PATH_MAX] = "";

	if (state_writer_init(&w))
		exit(1);
	for (int i = 0; i < levels; i++) {
		size_t n = strlen(path);

		snprintf(path + n, sizeof(path) - n, "/n%d", i);
	}
	state_begin(&w, 1, "%s", path);
	state_put_u32(&w, "leaf", 1);
	return finish(&w);
}

/* Node names within limits whose paths are not (the writer cannot make
 * this: libfdt directly, then a footer): the messages must cope. */
static struct file make_long_paths(void)
{
	enum { CAP = 4096 };
	struct state_footer ft = { .magic = STATE_FOOTER_MAGIC };
	char name[100];
	struct file f;
	void *fdt = calloc(1, CAP);
	int node = 0;

	if (!fdt || fdt_create_empty_tree(fdt, CAP))
		exit(1);
	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	for (int i = 0; i < 3; i++) {
		name[0] = (char)('a' + i);
		node = fdt_add_subnode(fdt, node, name);
		if (node < 0 || fdt_setprop(fdt, node, "version", "\0\0\1", 3))
			exit(1);
	}
	if (fdt_pack(fdt))
		exit(1);
	f.len = fdt_totalsize(fdt) + sizeof(ft);
	f.buf = malloc(f.len);
	if (!f.buf)
		exit(1);
	memcpy(f.buf, fdt, fdt_totalsize(fdt));
	ft.format = htole32(STATE_FORMAT_VERSION);
	ft.blob_len = htole64(fdt_totalsize(fdt));
	set_footer(&f, &ft);
	forge_crc(&f);
	free(fdt);
	return f;
}

static struct file make_empty(void)
{
	struct state_writer w;

	if (state_writer_init(&w))
		exit(1);
	return finish(&w);
}

/* The offset in @f of the first property @name's length cell. */
static size_t prop_len_at(struct file *f, const char *name)
{
	int node, prop;

	for (node = 0; node >= 0; node = fdt_next_node(f->buf, node, NULL))
		fdt_for_each_property_offset(prop, f->buf, node) {
			const char *pn;

			fdt_getprop_by_offset(f->buf, prop, &pn, NULL);
			if (pn && !strcmp(pn, name))
				return fdt_off_dt_struct(f->buf) + (size_t)prop + 4;
		}
	fprintf(stderr, "fuzz_state_gen: no property %s\n", name);
	exit(1);
}

static void put_be32(struct file *f, size_t at, uint32_t v)
{
	v = htobe32(v);
	memcpy(f->buf + at, &v, 4);
}

static void damaged(const char *name, const struct file *good, size_t at, uint32_t v, bool forge)
{
	struct file c = copy(good);

	put_be32(&c, at, v);
	if (forge)
		forge_crc(&c);
	save(name, c.buf, c.len);
	free(c.buf);
}

int main(int argc, char **argv)
{
	struct file small, machine, types, deep8, deep9, empty, c;
	struct state_footer ft;

	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	outdir = argv[1];
	small = make_small();
	machine = make_machine();
	types = make_types();
	deep8 = make_deep(8);
	deep9 = make_deep(9);
	empty = make_empty();
	save("seed_valid_small", small.buf, small.len);
	save("seed_valid_machine", machine.buf, machine.len);
	save("seed_valid_types", types.buf, types.len);
	save("seed_valid_deep8", deep8.buf, deep8.len);
	save("seed_valid_empty", empty.buf, empty.len);
	save("seed_bad_deep9", deep9.buf, deep9.len);
	c = make_long_paths();
	save("seed_forged_long_paths", c.buf, c.len);
	free(c.buf);

	/* The footer, check by check. */
	save("seed_bad_truncated", small.buf, small.len - 7);
	c = copy(&small);
	ft = get_footer(&c);
	ft.magic[0] = 'X';
	set_footer(&c, &ft);
	save("seed_bad_magic", c.buf, c.len);
	ft = get_footer(&small);
	ft.format = htole32(2);
	set_footer(&c, &ft);
	save("seed_bad_format2", c.buf, c.len);
	ft = get_footer(&small);
	ft.flags = htole32(1);
	set_footer(&c, &ft);
	save("seed_bad_flags", c.buf, c.len);
	ft = get_footer(&small);
	ft.blob_len = htole64(small.len);
	set_footer(&c, &ft);
	save("seed_bad_bloblen", c.buf, c.len);
	ft = get_footer(&small);
	set_footer(&c, &ft);
	c.buf[100] ^= 0x40;
	save("seed_bad_crc", c.buf, c.len);
	free(c.buf);

	/* FDT damage behind a forged CRC. */
	damaged("seed_bad_fdt_version16", &small, 20, 16, true);    /* header.version */
	damaged("seed_bad_fdt_totalsize", &small, 4, 0x10000, true); /* header.totalsize */
	damaged("seed_bad_fdt_struct_size", &small, 36, 0x100000, true);
	damaged("seed_bad_fdt_nameoff", &small, prop_len_at(&small, "cpus") + 4, 0x7fff0000, true);
	damaged("seed_bad_fdt_proplen_big", &small, prop_len_at(&small, "cpus"), 0x7ffffff0, true);
	/* libfdt 1.6.1 loops forever on this length (wraps to the same tag). */
	damaged("seed_bad_fdt_proplen_wrap", &small, prop_len_at(&small, "cpus"), 0xfffffff4u, true);
	damaged("seed_forged_len3", &machine, prop_len_at(&machine, "mp-state"), 3, true);
	damaged("seed_bad_fdt_tag", &small, prop_len_at(&small, "cpus") - 4, 0x77, true);

	free(small.buf);
	free(machine.buf);
	free(types.buf);
	free(deep8.buf);
	free(deep9.buf);
	free(empty.buf);
	return failed;
}

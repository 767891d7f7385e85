// SPDX-License-Identifier: MIT
/*
 * Fuzz target for the VM state stream's reader (src/snapshot/state.c), which
 * sees hostile bytes on every restore and every incoming migration.
 *
 * Each input is tried twice:
 *  1. as it is: the footer checks (magic, format version, length, CRC) and,
 *     for the few inputs that pass them, everything below;
 *  2. with the last 32 bytes replaced by a correct footer (format 1, the
 *     right length, the CRC recomputed), as an attacker who forges the CRC
 *     would: without this almost every mutation of the FDT would stop at the
 *     checksum and the device-tree checks would go untested.
 * Whenever state_reader_open() accepts, every node is looked up by its path
 * and every property is read with every getter, each from a fresh copy of
 * the opened reader (errors are sticky, and a fresh copy makes each getter
 * format its own refusal message), and the tree is printed to /dev/null.
 *
 * The same file serves libFuzzer (-DVMRUN_FUZZ=ON with clang) and the
 * corpus replay driver (replay.c) that ctest runs on every build.
 */
#include <endian.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libfdt.h>
#include <zlib.h>

#include "vmrun/state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Bigger than any getter's expected size in this file. */
#define MAX_GET 4096

static FILE *devnull(void)
{
	static FILE *f; /* the harness's own, never product code */

	if (!f)
		f = fopen("/dev/null", "w");
	return f;
}

/* Every getter on property @name of @node, each from a fresh reader. */
static void read_property(const struct state_reader *open, int node, const char *name, int len)
{
	static uint64_t buf[MAX_GET / 8 + 1];
	volatile uint8_t sink = 0;
	struct state_reader r;
	uint32_t u32, u32s[8];
	uint64_t u64, u64s[8];
	const void *blob;
	size_t blen;
	char str[64];

#define FRESH() (r = *open)
	FRESH();
	(void)state_get_u32(&r, node, name, &u32);
	FRESH();
	(void)state_get_u64(&r, node, name, &u64);
	FRESH();
	(void)state_get_u32_range(&r, node, name, 1, 16, &u32);
	FRESH();
	(void)state_get_u32_range(&r, node, name, 0, UINT32_MAX, &u32);
	FRESH();
	if (len >= 0 && len <= MAX_GET)
		(void)state_get_bytes(&r, node, name, buf, (size_t)len);
	FRESH();
	(void)state_get_bytes(&r, node, name, buf, 16);
	FRESH();
	if (state_get_blob(&r, node, name, SIZE_MAX, &blob, &blen) == 0 && blen)
		sink = ((const uint8_t *)blob)[blen - 1]; /* ASan: all of it is inside */
	(void)sink;
	FRESH();
	(void)state_get_blob(&r, node, name, 8, &blob, &blen);
	FRESH();
	(void)state_get_str(&r, node, name, str, sizeof(str));
	FRESH();
	(void)state_get_str(&r, node, name, str, 1);
	FRESH();
	if (len >= 0 && len < MAX_GET)
		(void)state_get_str(&r, node, name, (char *)buf, (size_t)len + 1);
	FRESH();
	(void)state_get_u32s(&r, node, name, u32s, 8);
	FRESH();
	if (len >= 0 && len <= MAX_GET)
		(void)state_get_u32s(&r, node, name, (uint32_t *)buf, (size_t)len / 4);
	FRESH();
	(void)state_get_u64s(&r, node, name, u64s, 8);
	FRESH();
	if (len >= 0 && len <= MAX_GET)
		(void)state_get_u64s(&r, node, name, (uint64_t *)buf, (size_t)len / 8);
	FRESH();
	(void)state_has(&r, node, name);
#undef FRESH
}

/* Walk an opened tree: every node (by offset and by path), every property,
 * the printer. */
static void walk(const struct state_reader *open)
{
	struct state_reader r = *open;
	int depth = 0, node, prop;
	char path[STATE_PATH_MAX * 2];

	for (node = state_next_node(&r, -1, &depth); node >= 0;
	     node = state_next_node(&r, node, &depth)) {
		r = *open;
		(void)state_path(&r, node, path, 8);
		if (state_path(&r, node, path, sizeof(path)) == 0) {
			(void)state_node(&r, true, "%s", path);
			r = *open;
			(void)state_node(&r, false, "%s/missing@0", path);
		}
		r = *open;
		(void)state_version(&r, node, 1, 2);
		r = *open;
		(void)state_get_u32(&r, node, "no-such-property", &(uint32_t){ 0 });
		fdt_for_each_property_offset(prop, r.fdt, node) {
			const char *name;
			int len;

			if (!fdt_getprop_by_offset(r.fdt, prop, &name, &len) || !name)
				continue;
			read_property(open, node, name, len);
		}
	}
	/* Fixed paths the loaders look up, and a relative one (libfdt takes
	 * those as aliases, looked up in the hostile tree itself). */
	r = *open;
	(void)state_node(&r, false, "/vmrun");
	r = *open;
	(void)state_node(&r, false, "/cpus/cpu@%d", 0);
	r = *open;
	(void)state_node(&r, false, "vmrun");
	r = *open;
	(void)state_get_u32(&r, -1, "version", &(uint32_t){ 0 });
	r = *open;
	state_print(&r, devnull());
}

static void try_open(const uint8_t *data, size_t size)
{
	struct state_reader r;

	if (state_reader_open(&r, data, size) == 0)
		walk(&r);
	else if (!r.err || !r.msg[0] || strchr(r.msg, '\n'))
		abort(); /* a refusal always says why, on one line */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct state_footer f = { .magic = STATE_FOOTER_MAGIC };
	uint8_t *copy;
	size_t blob;

	/* libfdt wants the blob 8-byte aligned, as malloc gives it. */
	copy = calloc(1, size ? size : 1);
	if (!copy)
		return 0;
	if (size)
		memcpy(copy, data, size);
	try_open(copy, size);

	if (size >= sizeof(f)) {
		blob = size - sizeof(f);
		f.format = htole32(STATE_FORMAT_VERSION);
		f.blob_len = htole64(blob);
		f.crc32 = htole32((uint32_t)crc32(0L, copy, (uInt)blob));
		memcpy(copy + blob, &f, sizeof(f));
		try_open(copy, size);
	}
	free(copy);
	return 0;
}

// SPDX-License-Identifier: MIT
/*
 * The VM state stream (include/vmrun/state.h): an FDT built with libfdt's
 * read-write API, a footer with a magic, format version and CRC-32, and a
 * reader that trusts nothing in it.
 *
 * Writing uses paths rather than node offsets: libfdt moves offsets when a
 * node is inserted before them, and a path lookup costs nothing next to the
 * ioctls that produce the values.  The tree grows by doubling whenever
 * libfdt says -FDT_ERR_NOSPACE.
 */
#include "vmrun/state.h"

#include <endian.h>
#include <errno.h>
#include <libfdt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define STATE_INITIAL_CAP (64u << 10)

/* ---- writing ---- */

int state_writer_init(struct state_writer *w)
{
	memset(w, 0, sizeof(*w));
	w->cap = STATE_INITIAL_CAP;
	w->fdt = calloc(1, w->cap);
	if (!w->fdt)
		return w->err = -ENOMEM;
	if (fdt_create_empty_tree(w->fdt, (int)w->cap) < 0)
		return w->err = -EINVAL;
	strcpy(w->node, "/");
	return 0;
}

void state_writer_free(struct state_writer *w)
{
	free(w->fdt);
	w->fdt = NULL;
}

void state_fail(struct state_writer *w, int err)
{
	if (!w->err)
		w->err = err < 0 ? err : -EIO;
}

/* Double the tree's room.  Returns 0 or -ENOMEM/-E2BIG. */
static int grow(struct state_writer *w)
{
	size_t cap = w->cap * 2;
	void *n;

	if (cap > STATE_MAX_BLOB)
		return -E2BIG;
	n = calloc(1, cap);
	if (!n)
		return -ENOMEM;
	if (fdt_open_into(w->fdt, n, (int)cap) < 0) {
		free(n);
		return -EINVAL;
	}
	free(w->fdt);
	w->fdt = n;
	w->cap = cap;
	return 0;
}

/* The offset of @path, creating it and its parents.  -errno on failure. */
static int ensure_node(struct state_writer *w, const char *path)
{
	int off = fdt_path_offset(w->fdt, path);
	const char *slash, *name;
	char parent[STATE_PATH_MAX];
	int poff;

	if (off >= 0)
		return off;
	if (off != -FDT_ERR_NOTFOUND || path[0] != '/' || !path[1])
		return -EINVAL;
	slash = strrchr(path, '/');
	name = slash + 1;
	if (!*name)
		return -EINVAL;
	if (slash == path) {
		strcpy(parent, "/");
	} else {
		memcpy(parent, path, (size_t)(slash - path));
		parent[slash - path] = '\0';
	}
	poff = ensure_node(w, parent);
	if (poff < 0)
		return poff;
	for (;;) {
		off = fdt_add_subnode(w->fdt, poff, name);
		if (off != -FDT_ERR_NOSPACE)
			break;
		int r = grow(w);

		if (r)
			return r;
		poff = fdt_path_offset(w->fdt, parent);
		if (poff < 0)
			return -EINVAL;
	}
	return off < 0 ? -EINVAL : off;
}

static void put(struct state_writer *w, const char *name, const void *data, size_t len)
{
	int off, r;

	if (w->err)
		return;
	if (len > STATE_MAX_BLOB) {
		w->err = -E2BIG;
		return;
	}
	for (;;) {
		off = fdt_path_offset(w->fdt, w->node);
		if (off < 0) {
			w->err = -EINVAL;
			return;
		}
		r = fdt_setprop(w->fdt, off, name, data, (int)len);
		if (r != -FDT_ERR_NOSPACE)
			break;
		if ((r = grow(w))) {
			w->err = r;
			return;
		}
	}
	if (r < 0)
		w->err = -EINVAL;
}

void state_begin(struct state_writer *w, uint32_t version, const char *path_fmt, ...)
{
	char path[STATE_PATH_MAX];
	va_list ap;
	int n, r;

	if (w->err)
		return;
	va_start(ap, path_fmt);
	n = vsnprintf(path, sizeof(path), path_fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		w->err = -ENAMETOOLONG;
		return;
	}
	r = ensure_node(w, path);
	if (r < 0) {
		w->err = r;
		return;
	}
	strcpy(w->node, path);
	state_put_u32(w, "version", version);
}

void state_put_u32(struct state_writer *w, const char *name, uint32_t v)
{
	fdt32_t be = cpu_to_fdt32(v);

	put(w, name, &be, sizeof(be));
}

void state_put_u64(struct state_writer *w, const char *name, uint64_t v)
{
	fdt64_t be = cpu_to_fdt64(v);

	put(w, name, &be, sizeof(be));
}

void state_put_bytes(struct state_writer *w, const char *name, const void *data, size_t len)
{
	put(w, name, data, len);
}

void state_put_str(struct state_writer *w, const char *name, const char *s)
{
	put(w, name, s, strlen(s) + 1);
}

/* @n values of @width bytes (4 or 8) from @v, as big-endian cells. */
static void put_cells(struct state_writer *w, const char *name, const void *v, size_t n,
		      size_t width)
{
	uint8_t *be;

	if (w->err)
		return;
	be = malloc(n ? n * width : 1);
	if (!be) {
		w->err = -ENOMEM;
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (width == 8) {
			fdt64_t c = cpu_to_fdt64(((const uint64_t *)v)[i]);

			memcpy(be + i * 8, &c, 8);
		} else {
			fdt32_t c = cpu_to_fdt32(((const uint32_t *)v)[i]);

			memcpy(be + i * 4, &c, 4);
		}
	}
	put(w, name, be, n * width);
	free(be);
}

void state_put_u32s(struct state_writer *w, const char *name, const uint32_t *v, size_t n)
{
	put_cells(w, name, v, n, 4);
}

void state_put_u64s(struct state_writer *w, const char *name, const uint64_t *v, size_t n)
{
	put_cells(w, name, v, n, 8);
}

int state_writer_finish(struct state_writer *w, void **out, size_t *len)
{
	struct state_footer f = { .magic = STATE_FOOTER_MAGIC };
	size_t blob;
	uint8_t *buf;

	*out = NULL;
	*len = 0;
	if (w->err)
		return w->err;
	if (fdt_pack(w->fdt) < 0)
		return w->err = -EINVAL;
	blob = fdt_totalsize(w->fdt);
	buf = malloc(blob + sizeof(f));
	if (!buf)
		return w->err = -ENOMEM;
	memcpy(buf, w->fdt, blob);
	f.format = htole32(STATE_FORMAT_VERSION);
	f.blob_len = htole64(blob);
	f.crc32 = htole32((uint32_t)crc32(0L, buf, (uInt)blob));
	memcpy(buf + blob, &f, sizeof(f));
	*out = buf;
	*len = blob + sizeof(f);
	return 0;
}

/* ---- reading ---- */

int state_reject(struct state_reader *r, int err, const char *fmt, ...)
{
	va_list ap;

	if (r->err)
		return err;
	r->err = err;
	va_start(ap, fmt);
	vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
	va_end(ap);
	return err;
}

/* Every node name printable, non-empty (but the root's) and NUL-terminated
 * inside the structure block.  fdt_check_full() covers most of this; the
 * walk also keeps libfdt 1.6.1's fdt_get_name() (whose pre-v16 path can
 * dereference NULL on a name without '/') away from anything odd, since
 * the header check already insisted on version 17. */
static int check_names(struct state_reader *r)
{
	int depth = 0, node;

	/* fdt_next_node() from -1 with *depth 0 counts the root as depth 1
	 * (starting at -1 instead would end the walk early, at the root's
	 * FDT_END_NODE): below, depth - 1 is the level, 0 for the root. */
	for (node = fdt_next_node(r->fdt, -1, &depth); node >= 0;
	     node = fdt_next_node(r->fdt, node, &depth)) {
		int len;
		const char *name = fdt_get_name(r->fdt, node, &len);

		if (!name || len < 0 || len >= STATE_PATH_MAX || (depth > 1 && len == 0))
			return state_reject(r, -EINVAL, "state: malformed node name");
		for (int i = 0; i < len; i++)
			if ((unsigned char)name[i] < 0x21 || (unsigned char)name[i] > 0x7e)
				return state_reject(r, -EINVAL, "state: malformed node name");
		if (depth - 1 > 8)
			return state_reject(r, -EINVAL, "state: nodes nested too deep");
	}
	if (node != -FDT_ERR_NOTFOUND)
		return state_reject(r, -EINVAL, "state: malformed structure (%s)", fdt_strerror(node));
	return 0;
}

/* Walk the structure block's tags with our own bounds checks before any
 * libfdt walker sees it.  libfdt before 1.7.0 (Debian 12 has 1.6.1) finds a
 * property's end with int arithmetic on its length: 0xfffffff4 brings the
 * next tag back onto the property itself, and every walk (fdt_check_full()
 * first) loops forever; other lengths near 2^31 overflow an int.  Everything
 * else is left to fdt_check_full().  The header is already checked: the
 * block lies inside the blob.  Returns 0 or -FDT_ERR_BADSTRUCTURE. */
static int check_tags(const void *fdt)
{
	const uint8_t *p = (const uint8_t *)fdt + fdt_off_dt_struct(fdt);
	uint32_t size = fdt_size_dt_struct(fdt), off = 0, len;
	const uint8_t *nul;

	while (off <= size && size - off >= 4) {
		uint32_t tag = fdt32_ld((const fdt32_t *)(p + off));

		off += 4;
		switch (tag) {
		case FDT_BEGIN_NODE:
			nul = memchr(p + off, '\0', size - off);
			if (!nul)
				return -FDT_ERR_BADSTRUCTURE;
			off = (uint32_t)(nul - p) + 1;
			break;
		case FDT_PROP:
			if (size - off < 8)
				return -FDT_ERR_BADSTRUCTURE;
			len = fdt32_ld((const fdt32_t *)(p + off));
			off += 8;
			if (len > size - off)
				return -FDT_ERR_BADSTRUCTURE;
			off += len;
			break;
		case FDT_END_NODE:
		case FDT_NOP:
			break;
		case FDT_END:
			return 0;
		default:
			return -FDT_ERR_BADSTRUCTURE;
		}
		off = (off + 3) & ~3u;
	}
	return -FDT_ERR_BADSTRUCTURE;
}

int state_reader_open(struct state_reader *r, const void *buf, size_t len)
{
	struct state_footer f;
	uint64_t blob;
	uint32_t format;
	int e;

	memset(r, 0, sizeof(*r));
	if (len < sizeof(f) + sizeof(struct fdt_header))
		return state_reject(r, -EINVAL, "state: %zu bytes, too short to be a vmrun state file (truncated?)", len);
	memcpy(&f, (const uint8_t *)buf + len - sizeof(f), sizeof(f));
	if (memcmp(f.magic, STATE_FOOTER_MAGIC, sizeof(f.magic)))
		return state_reject(r, -EINVAL, "state: no vmrun state footer (not a vmrun snapshot, or truncated)");
	format = le32toh(f.format);
	if (format < STATE_FORMAT_OLDEST || format > STATE_FORMAT_VERSION)
		return state_reject(r, -EPROTO,
				    "state: format version %u; this vmrun reads versions %u to %u",
				    format, STATE_FORMAT_OLDEST, STATE_FORMAT_VERSION);
	blob = le64toh(f.blob_len);
	if (blob != len - sizeof(f))
		return state_reject(r, -EINVAL, "state: footer says %llu bytes of state, the file holds %zu (truncated or corrupt)",
				    (unsigned long long)blob, len - sizeof(f));
	if (f.flags || f.reserved)
		return state_reject(r, -EINVAL, "state: footer flags 0x%x, reserved 0x%x: unknown (a newer vmrun, or corrupt)",
				    le32toh(f.flags), le32toh(f.reserved));
	if ((uint32_t)crc32(0L, buf, (uInt)blob) != le32toh(f.crc32))
		return state_reject(r, -EINVAL, "state: checksum mismatch (the file is corrupt)");
	/* From here the bytes are what the writer wrote, unless someone forged
	 * the CRC: every check below still holds against that. */
	e = fdt_check_header(buf);
	/* The block alignments are libfdt 1.8's checks (1.6.1 reads a
	 * misaligned reserve map or structure block as it finds them). */
	if (e < 0 || fdt_version(buf) != 17 || fdt_totalsize(buf) != blob ||
	    fdt_off_mem_rsvmap(buf) % 8 || fdt_off_dt_struct(buf) % 4)
		return state_reject(r, -EINVAL, "state: bad device-tree header (%s)",
				    e < 0 ? fdt_strerror(e) : "version, size or alignment");
	e = check_tags(buf);
	if (e == 0)
		e = fdt_check_full(buf, blob);
	if (e < 0)
		return state_reject(r, -EINVAL, "state: malformed device tree (%s)", fdt_strerror(e));
	r->fdt = buf;
	r->fdt_len = blob;
	r->format = format;
	if (check_names(r)) {
		r->fdt = NULL;
		return r->err;
	}
	return 0;
}

int state_node(struct state_reader *r, bool required, const char *path_fmt, ...)
{
	char path[STATE_PATH_MAX];
	va_list ap;
	int n, off;

	if (!r->fdt)
		return r->err ? r->err : -EINVAL;
	va_start(ap, path_fmt);
	n = vsnprintf(path, sizeof(path), path_fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(path))
		return state_reject(r, -ENAMETOOLONG, "state: node path too long");
	/* libfdt 1.6.1 takes a relative path as an alias, looked up in the
	 * (hostile) tree without checks: an alias naming itself recurses until
	 * the stack runs out. */
	if (path[0] != '/')
		return state_reject(r, -EINVAL, "state: node path %s is not absolute", path);
	off = fdt_path_offset(r->fdt, path);
	if (off >= 0)
		return off;
	if (required)
		return state_reject(r, -ENOENT, "state: node %s is missing", path);
	return -ENOENT;
}

/* The path of @node for messages. */
static const char *node_path(struct state_reader *r, int node, char *buf, size_t len)
{
	if (fdt_get_path(r->fdt, node, buf, (int)len) < 0)
		snprintf(buf, len, "<node>");
	return buf;
}

/* Property @name of @node with its length checked against [@min, @max]. */
static const void *prop(struct state_reader *r, int node, const char *name, size_t min,
			size_t max, size_t *len)
{
	char path[STATE_PATH_MAX];
	const void *p;
	int l;

	if (node < 0 || !r->fdt) {
		if (!r->err)
			state_reject(r, -EINVAL, "state: property %s of a missing node", name);
		return NULL;
	}
	p = fdt_getprop(r->fdt, node, name, &l);
	if (!p) {
		state_reject(r, -ENOENT, "state: %s: property '%s' is missing",
			     node_path(r, node, path, sizeof(path)), name);
		return NULL;
	}
	if (l < 0 || (size_t)l < min || (size_t)l > max) {
		if (min == max)
			state_reject(r, -EINVAL, "state: %s: property '%s' has %d bytes, expected %zu",
				     node_path(r, node, path, sizeof(path)), name, l, min);
		else
			state_reject(r, -EINVAL, "state: %s: property '%s' has %d bytes, expected %zu to %zu",
				     node_path(r, node, path, sizeof(path)), name, l, min, max);
		return NULL;
	}
	*len = (size_t)l;
	return p;
}

int state_get_u32(struct state_reader *r, int node, const char *name, uint32_t *v)
{
	size_t len;
	const void *p = prop(r, node, name, 4, 4, &len);

	if (!p)
		return r->err ? r->err : -EINVAL;
	*v = fdt32_ld(p);
	return 0;
}

int state_get_u64(struct state_reader *r, int node, const char *name, uint64_t *v)
{
	size_t len;
	const void *p = prop(r, node, name, 8, 8, &len);

	if (!p)
		return r->err ? r->err : -EINVAL;
	/* Property data is only 4-byte aligned: two 32-bit loads. */
	*v = ((uint64_t)fdt32_ld(p) << 32) | fdt32_ld((const fdt32_t *)p + 1);
	return 0;
}

int state_get_u32_range(struct state_reader *r, int node, const char *name, uint32_t min,
			uint32_t max, uint32_t *v)
{
	char path[STATE_PATH_MAX];
	uint32_t x;
	int e = state_get_u32(r, node, name, &x);

	if (e)
		return e;
	if (x < min || x > max)
		return state_reject(r, -EINVAL, "state: %s: '%s' = %u is outside %u..%u",
				    node_path(r, node, path, sizeof(path)), name, x, min, max);
	*v = x;
	return 0;
}

int state_version(struct state_reader *r, int node, uint32_t oldest, uint32_t newest)
{
	char path[STATE_PATH_MAX];
	uint32_t v;
	int e = state_get_u32(r, node, "version", &v);

	if (e)
		return e;
	if (v < oldest || v > newest)
		return state_reject(r, -EPROTO, "state: %s has version %u; this vmrun loads %u to %u",
				    node_path(r, node, path, sizeof(path)), v, oldest, newest);
	return (int)v;
}

int state_get_bytes(struct state_reader *r, int node, const char *name, void *out, size_t len)
{
	size_t l;
	const void *p = prop(r, node, name, len, len, &l);

	if (!p)
		return r->err ? r->err : -EINVAL;
	memcpy(out, p, len);
	return 0;
}

int state_get_blob(struct state_reader *r, int node, const char *name, size_t max,
		   const void **data, size_t *len)
{
	const void *p = prop(r, node, name, 0, max, len);

	if (!p)
		return r->err ? r->err : -EINVAL;
	*data = p;
	return 0;
}

int state_get_str(struct state_reader *r, int node, const char *name, char *out, size_t outlen)
{
	char path[STATE_PATH_MAX];
	size_t len;
	const char *p = prop(r, node, name, 1, outlen, &len);

	if (!p)
		return r->err ? r->err : -EINVAL;
	if (p[len - 1] != '\0' || strlen(p) != len - 1)
		return state_reject(r, -EINVAL, "state: %s: property '%s' is not a string",
				    node_path(r, node, path, sizeof(path)), name);
	memcpy(out, p, len);
	return 0;
}

int state_get_u32s(struct state_reader *r, int node, const char *name, uint32_t *out, size_t n)
{
	size_t len;
	const fdt32_t *p = prop(r, node, name, n * 4, n * 4, &len);

	if (!p)
		return r->err ? r->err : -EINVAL;
	for (size_t i = 0; i < n; i++)
		out[i] = fdt32_ld(p + i);
	return 0;
}

int state_get_u64s(struct state_reader *r, int node, const char *name, uint64_t *out, size_t n)
{
	size_t len;
	const fdt32_t *p = prop(r, node, name, n * 8, n * 8, &len);

	if (!p)
		return r->err ? r->err : -EINVAL;
	for (size_t i = 0; i < n; i++)
		out[i] = ((uint64_t)fdt32_ld(p + 2 * i) << 32) | fdt32_ld(p + 2 * i + 1);
	return 0;
}

int state_next_node(struct state_reader *r, int node, int *depth)
{
	if (!r->fdt)
		return -EINVAL;
	return fdt_next_node(r->fdt, node, depth);
}

int state_path(struct state_reader *r, int node, char *buf, size_t len)
{
	if (!r->fdt || node < 0)
		return -EINVAL;
	return fdt_get_path(r->fdt, node, buf, (int)len) < 0 ? -ENOSPC : 0;
}

bool state_has(struct state_reader *r, int node, const char *name)
{
	return r->fdt && node >= 0 && fdt_getprop(r->fdt, node, name, NULL) != NULL;
}

/* ---- printing ---- */

static bool printable_string(const char *p, int len)
{
	if (len < 2 || p[len - 1] != '\0')
		return false;
	for (int i = 0; i < len - 1; i++)
		if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] > 0x7e)
			return false;
	return strlen(p) == (size_t)len - 1;
}

static void print_value(FILE *out, const uint8_t *p, int len)
{
	if (len == 0)
		return;
	if (printable_string((const char *)p, len)) {
		fprintf(out, " = \"%s\"", (const char *)p);
	} else if (len % 4 == 0 && len <= 64 * 4) {
		fputs(" = <", out);
		for (int i = 0; i < len; i += 4)
			fprintf(out, "%s0x%08x", i ? " " : "", fdt32_ld((const fdt32_t *)(p + i)));
		fputc('>', out);
	} else {
		fputs(" = [", out);
		for (int i = 0; i < len; i++)
			fprintf(out, "%s%02x", i ? " " : "", p[i]);
		fputc(']', out);
	}
}

void state_print(struct state_reader *r, FILE *out)
{
	int depth = 0, prev_depth = -1, node;

	if (!r->fdt)
		return;
	for (node = fdt_next_node(r->fdt, -1, &depth); node >= 0;
	     node = fdt_next_node(r->fdt, node, &depth)) {
		const char *name = fdt_get_name(r->fdt, node, NULL);
		int level = depth - 1; /* the root is at depth 1: see check_names() */
		int prop;

		for (; prev_depth >= level; prev_depth--)
			fprintf(out, "%*s};\n", prev_depth * 8, "");
		fprintf(out, "%*s%s {\n", level * 8, "", level ? name : "/");
		fdt_for_each_property_offset(prop, r->fdt, node) {
			const char *pname;
			int len;
			const void *v = fdt_getprop_by_offset(r->fdt, prop, &pname, &len);

			if (!v)
				continue;
			fprintf(out, "%*s%s", level * 8 + 8, "", pname);
			print_value(out, v, len);
			fputs(";\n", out);
		}
		prev_depth = level;
	}
	for (; prev_depth >= 0; prev_depth--)
		fprintf(out, "%*s};\n", prev_depth * 8, "");
}

/* The VM state stream (src/snapshot/state.c): one format for snapshot files
 * and the migration stream.
 *
 * The machine's state is a flattened device tree (libfdt), one node per
 * object ("/cpus/cpu@0", "/kvm/ioapic", "/devices/virtio-blk@d0000000"),
 * each with a "version" property and named properties for its fields, so a
 * new device adds a node without editing any central struct, and
 * `dtc -I dtb -O dts state.dtb` shows an operator everything.  Guest memory
 * never goes inside it.
 *
 * On disk and on the wire the blob is followed by a footer (struct
 * state_footer): a magic, the format version, the blob's length and a CRC-32
 * over it.  dtc ignores bytes after an FDT's totalsize, so the file stays
 * readable by it.
 *
 * Writing: state_writer_init(), then for each object state_begin() and its
 * properties; errors are sticky (the first one is kept and later calls do
 * nothing), so a save hook checks once at the end, and
 * state_writer_finish() returns it.
 *
 * Reading: the stream is hostile.  state_reader_open() checks the footer,
 * the CRC, the FDT's header and whole structure before anything looks at a
 * node; every getter checks the property's presence and exact length (or
 * bounds), and the first failure is kept with a one-line message naming the
 * node and property in r->err. */
#ifndef VMRUN_STATE_H
#define VMRUN_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The stream's format version: the footer's, and /vmrun's "format".  A
 * reader accepts this one and the one before (migration between adjacent
 * releases); version 1 has no predecessor. */
#define STATE_FORMAT_VERSION 1
#define STATE_FORMAT_OLDEST 1

#define STATE_FOOTER_MAGIC "VMRUNST\0" /* 8 bytes */
#define STATE_MAX_BLOB (64u << 20)     /* far above any real machine's state */
#define STATE_PATH_MAX 128

struct state_footer {
	char magic[8];       /* STATE_FOOTER_MAGIC */
	uint32_t format;     /* STATE_FORMAT_VERSION, little-endian */
	uint32_t flags;      /* 0 */
	uint64_t blob_len;   /* bytes of FDT before the footer, little-endian */
	uint32_t crc32;      /* zlib crc32 of those bytes, little-endian */
	uint32_t reserved;   /* 0 */
};
_Static_assert(sizeof(struct state_footer) == 32, "32-byte footer");

struct state_writer {
	void *fdt;
	size_t cap;
	int err;                      /* first error (-errno), sticky */
	char node[STATE_PATH_MAX];    /* path of the node properties go to */
};

/* An empty tree.  Returns 0 or -ENOMEM; state_writer_free() in any case. */
int state_writer_init(struct state_writer *w) __attribute__((warn_unused_result));
void state_writer_free(struct state_writer *w);

/* Make @path (absolute, "/a/b@1"; parents are created) the node that the
 * next properties go to, and give it "version" = @version.  A node that
 * exists already is reused (its version is overwritten). */
void state_begin(struct state_writer *w, uint32_t version, const char *path_fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Properties of the current node (big-endian cells, as FDT wants). */
void state_put_u32(struct state_writer *w, const char *name, uint32_t v);
void state_put_u64(struct state_writer *w, const char *name, uint64_t v);
void state_put_bytes(struct state_writer *w, const char *name, const void *data, size_t len);
void state_put_str(struct state_writer *w, const char *name, const char *s);
/* An array of @n 32-bit or 64-bit cells. */
void state_put_u32s(struct state_writer *w, const char *name, const uint32_t *v, size_t n);
void state_put_u64s(struct state_writer *w, const char *name, const uint64_t *v, size_t n);
/* Record @err (a -errno) as the writer's error, if it has none yet: for a
 * save hook whose own step failed. */
void state_fail(struct state_writer *w, int err);

/* Pack the tree and append the footer: *@out (malloc'd, the caller frees)
 * holds *@len bytes.  Returns the writer's first error, or 0. */
int state_writer_finish(struct state_writer *w, void **out, size_t *len)
	__attribute__((warn_unused_result));

struct state_reader {
	const void *fdt;        /* inside the caller's buffer */
	size_t fdt_len;
	uint32_t format;        /* the footer's format version */
	int err;                /* first error (-errno), sticky */
	char msg[256];          /* its one-line reason */
};

/* Validate @buf (@len bytes: FDT then footer) and point @r at it; @buf must
 * outlive @r and be 8-byte aligned (libfdt refuses anything else: receive a
 * stream into malloc'd memory).  Checks: the footer's magic, a known format version, the
 * length, the CRC, the FDT header (version 17, sizes inside the blob) and
 * its whole structure (fdt_check_full), and that every node name is sane.
 * Returns 0, or -EINVAL / -EPROTO (an unknown format version) with the reason
 * in r->msg. */
int state_reader_open(struct state_reader *r, const void *buf, size_t len)
	__attribute__((warn_unused_result));

/* The offset of node @path, or -ENOENT (recorded as the error only when
 * @required). */
int state_node(struct state_reader *r, bool required, const char *path_fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Check @node's "version": between @oldest and @newest (the versions this
 * build can load).  Returns the version, or -EPROTO / -EINVAL. */
int state_version(struct state_reader *r, int node, uint32_t oldest, uint32_t newest);

/* Getters: 0, or -ENOENT (missing) / -EINVAL (wrong length or out of
 * range), recorded in @r.  A node offset < 0 fails with the error already
 * recorded. */
int state_get_u32(struct state_reader *r, int node, const char *name, uint32_t *v);
int state_get_u64(struct state_reader *r, int node, const char *name, uint64_t *v);
/* A u32 that must lie in [@min, @max]. */
int state_get_u32_range(struct state_reader *r, int node, const char *name, uint32_t min,
			uint32_t max, uint32_t *v);
/* Exactly @len bytes into @out. */
int state_get_bytes(struct state_reader *r, int node, const char *name, void *out, size_t len);
/* Any length up to @max: a pointer into the blob (not aligned) and its length. */
int state_get_blob(struct state_reader *r, int node, const char *name, size_t max,
		   const void **data, size_t *len);
/* A NUL-terminated string of at most @outlen - 1 bytes, copied. */
int state_get_str(struct state_reader *r, int node, const char *name, char *out, size_t outlen);
/* Exactly @n cells. */
int state_get_u32s(struct state_reader *r, int node, const char *name, uint32_t *out, size_t n);
int state_get_u64s(struct state_reader *r, int node, const char *name, uint64_t *out, size_t n);
/* Walk the nodes in order: the first after @node (-1: the root), with its
 * depth in *@depth (updated as libfdt's fdt_next_node does); < 0 at the
 * end.  Never an error. */
int state_next_node(struct state_reader *r, int node, int *depth);
/* The path of @node into @buf.  Returns 0 or -ENOSPC / -EINVAL. */
int state_path(struct state_reader *r, int node, char *buf, size_t len);

/* Whether @node has property @name (never an error). */
bool state_has(struct state_reader *r, int node, const char *name);

/* Record a failure of the caller's own check (a value that is in range but
 * inconsistent with another): the first one wins.  Returns @err. */
int state_reject(struct state_reader *r, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Print the tree as dts-like text ("node {", "name = <0x...>;") to @out,
 * for `vmrun snapshot show`.  @r must be open. */
void state_print(struct state_reader *r, FILE *out);

#endif

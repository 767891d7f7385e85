/* The qcow2 block backend (include/vmrun/block.h), after QEMU's
 * docs/interop/qcow2.rst: versions 2 and 3, any cluster size from 512 bytes
 * to 2 MiB, any refcount width, compressed clusters (deflate, zstd), v3
 * zero clusters, backing chains (raw or qcow2, relative names resolved
 * against the overlay's directory).
 *
 * Simplicity first: every metadata access is a synchronous pread/pwrite on
 * the image descriptor (through the page cache), on the event loop thread;
 * requests complete through blk_req_complete(), so done() still never runs
 * inside blk_submit().  Data goes the same way, except with cache=none: a
 * second, O_DIRECT descriptor on the top image (a raw handle with Linux
 * AIO, qcow2_open_data()) takes aligned data I/O, and reads and in-place
 * writes of allocated clusters go to it asynchronously (qcow2_try_async()).
 * L2 tables are cached (LRU, a bounded number of tables); refcount entries
 * are read and written in place, one at a time.
 *
 * Nothing read from the image is trusted: every offset is checked against
 * the file size, the cluster alignment and the metadata it must not
 * overlap (the header cluster, the L1 table, the refcount table) before it
 * is read or written, and guest data is never written over an L2 table or
 * a refcount block, nor allocated where a table entry places one (a sorted
 * set of them, q->tables).
 *
 * Crash safety: a process killed at any point, or a power loss, leaves no
 * corruption, at worst leaked clusters; what a completed FLUSH covered is
 * there.  The rules:
 *  - a new cluster is one whose refcount is 0 inside the file (freed
 *    earlier: its last reference was dropped only after the entry that
 *    replaced it was durable, see below), or else one at the end of the
 *    file; there, when its refcount block does not exist yet, it becomes the
 *    refcount block (counting itself), written in full, then a barrier
 *    (fdatasync), then the refcount table entry that points to it;
 *  - a new cluster's contents (data, or an L2 table) are written and its
 *    refcount set to 1; the L1/L2 entries that will point to it (with
 *    COPIED: refcount exactly 1) change in memory only and are queued;
 *  - qcow2_commit() writes the queue: barrier, the queued entries, barrier,
 *    then the references the overwritten entries held are released
 *    (compressed clusters, clusters shared with internal snapshots,
 *    clusters under a new v3 zero flag); a cluster left without any is
 *    punched out of the file and may be allocated again;
 *  - the queue is committed at every FLUSH (before its fdatasync), when a
 *    request fails half way, when it holds QCOW2_MAX_PENDING entries, and
 *    at close: like QEMU's write-back metadata cache, a write that no FLUSH
 *    covered may be lost in a crash (its clusters then leak);
 *  - the refcount table grows by writing new refcount blocks and a new
 *    table, barrier, one 12-byte header write (offset and size), barrier,
 *    then the old table's clusters are released.
 * cache=unsafe skips the barriers (and FLUSH's fdatasync), not the order.
 *
 * A dirty image (written with lazy refcounts by a QEMU that did not close
 * it) is repaired at a writable open: its refcounts are rebuilt from the
 * tables (qcow2_repair()), as QEMU does.
 *
 * Not supported (refused at open with a message): encryption, external
 * data files, extended L2 entries, unknown incompatible features, writing
 * to corrupt images, repairing dirty images with internal snapshots.
 * Internal snapshots are
 * left alone (never read, created or deleted); writes to an image that has
 * them copy shared L2 tables and data clusters (refcount > 1) first.  The
 * refcount table grows up to 8 MiB (QEMU's limit); a write that would need
 * more fails with -ENOSPC, and the image stays consistent.  Unknown
 * autoclear features (bitmaps) are cleared at a writable open, as the spec
 * asks. */
#include "blk_internal.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/falloc.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "vmrun/fdio.h"
#include "vmrun/image_lock.h"
#include "vmrun/log.h"

#define QCOW2_MAX_CHAIN 16                /* backing files below an overlay */
#define QCOW2_MAX_BACKING_NAME 1023u      /* bytes, as QEMU */
#define QCOW2_L2_CACHE_BYTES (16u << 20)  /* memory for cached L2 tables */
#define QCOW2_L2_CACHE_MAX 32u            /* tables, at most */
#define QCOW2_MAX_L1_BYTES (32u << 20)
#define QCOW2_MAX_REFTABLE_BYTES (8u << 20)
#define QCOW2_MAX_SIZE (1ull << 60)       /* virtual size */
#define QCOW2_MAX_HOST_OFFSET (1ull << 55) /* where we stop allocating */
#define QCOW2_WARN_LIMIT 16u              /* corruption warnings per image */
#define QCOW2_MAX_PENDING 4096u           /* entry writes held before a commit */
#define QCOW2_DIO_ALIGN 4096u             /* data buffers: any O_DIRECT alignment */
#define QCOW2_ASYNC_EXTENTS 16u           /* host extents of one asynchronous request */
#define QCOW2_REPAIR_MAX_CLUSTERS (1ull << 26) /* 16-bit counters a refcount rebuild may hold */

/* Header fields: byte offsets. */
enum {
	QH_MAGIC = 0,
	QH_VERSION = 4,
	QH_BACKING_OFFSET = 8,
	QH_BACKING_SIZE = 16,
	QH_CLUSTER_BITS = 20,
	QH_SIZE = 24,
	QH_CRYPT = 32,
	QH_L1_SIZE = 36,
	QH_L1_OFFSET = 40,
	QH_RT_OFFSET = 48,
	QH_RT_CLUSTERS = 56,
	QH_NB_SNAPSHOTS = 60,
	QH_SNAPSHOTS_OFFSET = 64,
	QH_V2_LENGTH = 72,
	QH_INCOMPAT = 72,
	QH_COMPAT = 80,
	QH_AUTOCLEAR = 88,
	QH_REFCOUNT_ORDER = 96,
	QH_HEADER_LENGTH = 100,
	QH_V3_LENGTH = 104,
	QH_COMPRESSION_TYPE = 104,
};

#define QCOW2_INCOMPAT_DIRTY (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2 (1ull << 4)
#define QCOW2_INCOMPAT_KNOWN \
	(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT | QCOW2_INCOMPAT_COMPRESSION)

#define QCOW2_COMPRESSION_DEFLATE 0u
#define QCOW2_COMPRESSION_ZSTD 1u

#define QCOW2_OFLAG_COPIED (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED (1ull << 62)
#define QCOW2_OFLAG_ZERO (1ull << 0)
#define QCOW2_OFFSET_MASK 0x00fffffffffffe00ull /* L1 and standard L2 entries */
#define QCOW2_RT_OFFSET_MASK 0xfffffffffffffe00ull

#define QCOW2_EXT_END 0x00000000u
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_EXT_FEATURE_NAMES 0x6803f857u

struct l2_slot {
	uint64_t off;  /* host offset of the table; 0: slot empty */
	uint64_t used; /* LRU tick */
	uint8_t *data; /* the table as on disk (big endian) */
};

/* One image of a chain: a qcow2 image, or a raw backing file. */
struct qcow2 {
	char *path;
	int fd;
	bool raw;               /* raw backing file: fd and size only */
	bool readonly;
	uint64_t size;          /* virtual size (raw: the file size) */
	uint64_t file_size;     /* bytes in the file, as we extend it */
	unsigned version;
	unsigned cluster_bits;
	uint64_t cluster_size;
	unsigned l2_bits;       /* log2 of the entries in an L2 table */
	uint32_t l1_size;
	uint64_t l1_offset;
	uint64_t *l1;           /* host byte order */
	uint64_t rt_offset;
	uint64_t rt_bytes;
	uint32_t rt_entries;
	uint64_t *rt;           /* host byte order */
	unsigned refcount_order;
	unsigned rb_bits;       /* log2 of the entries in a refcount block */
	uint64_t incompat;
	unsigned compression;
	uint32_t nb_snapshots;
	uint64_t alloc_next;    /* the end of the file: new clusters past it */
	uint64_t free_hint;     /* no free cluster below this one (cluster index) */
	uint8_t *rcbuf;         /* a cluster: a refcount block being scanned */
	struct l2_slot *l2c;
	unsigned l2c_n;
	uint64_t l2c_tick;
	uint8_t *dbuf;          /* a cluster: decompressed data */
	uint8_t *zbuf;          /* two clusters: compressed input */
	uint8_t *cowbuf;        /* a cluster: copy-on-write assembly */
	unsigned warned;
	bool unsafe;            /* cache=unsafe: no barriers */
	bool dirty;             /* written since the last barrier */
	bool broken;            /* a commit failed: memory and file disagree */
	struct qcow2_meta *pend; /* L1/L2 entry writes of this request */
	size_t npend, cap_pend;
	uint64_t *rel;          /* L2 entries whose clusters lose a reference */
	size_t nrel, cap_rel;
	/* Every L2 table the L1 table named and every refcount block the
	 * refcount table named since the open: host offsets, sorted, no
	 * duplicates.  Guest data is never written there (a hostile L2 entry
	 * pointing at one would let guest writes rewrite metadata). */
	uint64_t *tables;
	size_t n_tables, cap_tables;
	struct qcow2 *backing;
	/* The backing file as the header names it ("" when none), its format
	 * from the header extension ("" when none) and its path (relative
	 * names resolved against this image's directory). */
	char backing_name[QCOW2_MAX_BACKING_NAME + 1];
	char backing_fmt[16];
	char backing_path[PATH_MAX];
	/* cache=none, top image only: an O_DIRECT raw handle on this file
	 * with Linux AIO, for data clusters (qcow2_data_*); NULL otherwise. */
	struct blk *data;
};

/* An 8-byte metadata write (an L1 or L2 entry) waiting for the barrier. */
struct qcow2_meta {
	uint64_t off;
	uint64_t val;
};

/* The files of a chain being opened: loop detection. */
struct qcow2_chain {
	unsigned n;
	bool no_lock_top; /* blk_open_opts.no_lock: the top image takes no lock */
	bool top_only;    /* blk_open_opts.top_only: the backing file is not opened */
	bool header_only; /* blk_image_info(): the header checked, no table loaded */
	dev_t dev[QCOW2_MAX_CHAIN + 2];
	ino_t ino[QCOW2_MAX_CHAIN + 2];
};

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

static uint32_t get_be32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return be32toh(v);
}

static uint64_t get_be64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return be64toh(v);
}

static void put_be64(uint8_t *p, uint64_t v)
{
	v = htobe64(v);
	memcpy(p, &v, sizeof(v));
}

static uint64_t round_up(uint64_t v, uint64_t align)
{
	return (v + align - 1) & ~(align - 1);
}

/* [a, a+alen) and [b, b+blen) share a byte. */
static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return alen && blen && a < b + blen && b < a + alen;
}

__attribute__((format(printf, 2, 3))) static void q_corrupt(struct qcow2 *q, const char *fmt,
							      ...)
{
	char msg[256];
	va_list ap;

	if (q->warned >= QCOW2_WARN_LIMIT)
		return;
	q->warned++;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_warn("%s: corrupt qcow2 metadata: %s%s", q->path, msg,
		 q->warned == QCOW2_WARN_LIMIT ? " (further warnings suppressed)" : "");
}

/* Read @len bytes at @off of an image through @fd (its q->fd, or the
 * O_DIRECT data descriptor); what lies past the end of the file reads as
 * zeroes.  0 or -errno. */
static int q_pread_fd(int fd, void *buf, uint64_t len, uint64_t off)
{
	ssize_t n = fd_pread_full(fd, buf, len, off);

	if (n < 0)
		return (int)n;
	memset((uint8_t *)buf + n, 0, len - (uint64_t)n);
	return 0;
}

/* Write @len bytes at @off through @fd, all of them.  0 or -errno. */
static int q_pwrite_fd(struct qcow2 *q, int fd, const void *buf, uint64_t len, uint64_t off)
{
	int r = fd_pwrite_full(fd, buf, len, off);

	if (r)
		return r;
	if (off + len > q->file_size)
		q->file_size = off + len;
	q->dirty = true;
	return 0;
}

static int q_pread(struct qcow2 *q, void *buf, uint64_t len, uint64_t off)
{
	return q_pread_fd(q->fd, buf, len, off);
}

static int q_pwrite(struct qcow2 *q, const void *buf, uint64_t len, uint64_t off)
{
	return q_pwrite_fd(q, q->fd, buf, len, off);
}

/* Data clusters: with cache=none (q->data) every write goes through the
 * O_DIRECT descriptor, from an aligned bounce buffer where @buf is not
 * aligned enough: a data page written through the page cache could later
 * be written back over newer O_DIRECT data.  Reads take O_DIRECT too where
 * offset and length allow (a read of the image's unaligned tail cannot;
 * it leaves only clean pages).  Without q->data, as q_pread/q_pwrite.
 * Metadata never comes here: it stays in the page cache, on q->fd. */
static int q_data_io(struct qcow2 *q, bool write, void *buf, uint64_t len, uint64_t off)
{
	const struct blk *d = q->data;
	void *bounce = NULL;
	int r;

	if (!d || off % d->block_size || len % d->block_size) {
		if (d && write)
			return -EINVAL; /* callers write whole sectors: a bug */
		return write ? q_pwrite(q, buf, len, off) : q_pread(q, buf, len, off);
	}
	if ((uintptr_t)buf % d->mem_align) {
		if (posix_memalign(&bounce, QCOW2_DIO_ALIGN > d->mem_align ? QCOW2_DIO_ALIGN :
					    d->mem_align, len))
			return -ENOMEM;
		if (write)
			memcpy(bounce, buf, len);
	}
	if (write)
		r = q_pwrite_fd(q, d->fd, bounce ? bounce : buf, len, off);
	else
		r = q_pread_fd(d->fd, bounce ? bounce : buf, len, off);
	if (bounce && !write && !r)
		memcpy(buf, bounce, len);
	free(bounce);
	return r;
}

static int q_data_pread(struct qcow2 *q, void *buf, uint64_t len, uint64_t off)
{
	return q_data_io(q, false, buf, len, off);
}

static int q_data_pwrite(struct qcow2 *q, const void *buf, uint64_t len, uint64_t off)
{
	return q_data_io(q, true, (void *)buf, len, off);
}

/* Everything written so far is durable before anything written next: the
 * ordering points of the crash-safety rules (a no-op for cache=unsafe, and
 * when nothing was written since the last one). */
static int q_barrier(struct qcow2 *q)
{
	int r;

	if (!q->dirty || q->unsafe)
		return 0;
	do {
		r = fdatasync(q->fd);
	} while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	q->dirty = false;
	return 0;
}

/* Room for element @n of the array @arr holding *@cap elements of @elem
 * bytes: @arr itself while @n < *@cap, else the array reallocated to twice
 * the capacity (64 to start), *@cap updated.  NULL when memory runs out,
 * with @arr and *@cap unchanged. */
static void *grow_for_one(void *arr, size_t *cap, size_t n, size_t elem)
{
	size_t want;
	void *p;

	if (n < *cap)
		return arr;
	want = *cap ? *cap * 2 : 64;
	if (want > SIZE_MAX / elem)
		return NULL;
	p = realloc(arr, want * elem);
	if (p)
		*cap = want;
	return p;
}

/* Queue the 8-byte big-endian write of @val at @off for qcow2_commit(). */
static int meta_defer(struct qcow2 *q, uint64_t off, uint64_t val)
{
	struct qcow2_meta *p = grow_for_one(q->pend, &q->cap_pend, q->npend, sizeof(*p));

	if (!p)
		return -ENOMEM;
	q->pend = p;
	q->pend[q->npend].off = off;
	q->pend[q->npend].val = val;
	q->npend++;
	return 0;
}

static void qimg_free(struct qcow2 *q)
{
	while (q) {
		struct qcow2 *next = q->backing;

		if (q->fd >= 0)
			close(q->fd);
		if (q->l2c) {
			for (unsigned i = 0; i < q->l2c_n; i++)
				free(q->l2c[i].data);
			free(q->l2c);
		}
		free(q->l1);
		free(q->rt);
		free(q->dbuf);
		free(q->zbuf);
		free(q->cowbuf);
		free(q->rcbuf);
		free(q->pend);
		free(q->rel);
		free(q->tables);
		free(q->path);
		free(q);
		q = next;
	}
}

/* A host cluster that metadata or data of ours may live in: aligned,
 * inside the (cluster-rounded) file, clear of the header cluster, the L1
 * table and the refcount table. */
static bool host_cluster_ok(const struct qcow2 *q, uint64_t off)
{
	uint64_t cs = q->cluster_size;

	if (round_up(q->file_size, cs) < cs)
		return false;
	if (!off || off & (cs - 1) || off > round_up(q->file_size, cs) - cs)
		return false;
	return !ranges_overlap(off, cs, 0, cs) &&
	       !ranges_overlap(off, cs, q->l1_offset, (uint64_t)q->l1_size * 8) &&
	       !ranges_overlap(off, cs, q->rt_offset, q->rt_bytes);
}

/* ------------------------------------------------------------------ */
/* L2 tables                                                           */

/* The L2 table at @off (checked by the caller), from the cache or the
 * file.  *@out stays valid until the next l2_load() on @q. */
static int l2_load(struct qcow2 *q, uint64_t off, uint8_t **out)
{
	struct l2_slot *victim = &q->l2c[0];
	int r;

	for (unsigned i = 0; i < q->l2c_n; i++) {
		struct l2_slot *s = &q->l2c[i];

		if (s->off == off) {
			s->used = ++q->l2c_tick;
			*out = s->data;
			return 0;
		}
		if (s->used < victim->used)
			victim = s;
	}
	victim->off = 0;
	r = q_pread(q, victim->data, q->cluster_size, off);
	if (r)
		return r;
	/* Entries changed by this request and not on disk yet. */
	for (size_t i = 0; i < q->npend; i++) {
		if (q->pend[i].off >= off && q->pend[i].off < off + q->cluster_size)
			put_be64(victim->data + (q->pend[i].off - off), q->pend[i].val);
	}
	victim->off = off;
	victim->used = ++q->l2c_tick;
	*out = victim->data;
	return 0;
}

/* Entry @idx of the L2 table at @l2_off becomes @val: in the cache now,
 * on disk at qcow2_commit(), after the barrier. */
static int l2_set(struct qcow2 *q, uint64_t l2_off, unsigned idx, uint64_t val)
{
	for (unsigned i = 0; i < q->l2c_n; i++) {
		if (q->l2c[i].off == l2_off)
			put_be64(q->l2c[i].data + (uint64_t)idx * 8, val);
	}
	return meta_defer(q, l2_off + (uint64_t)idx * 8, val);
}

static int tables_add(struct qcow2 *q, uint64_t off);
static int tables_rebuild(struct qcow2 *q);

/* L1 entry @l1i becomes @val: in memory now, on disk at qcow2_commit(). */
static int l1_set(struct qcow2 *q, uint64_t l1i, uint64_t val)
{
	int r = val & QCOW2_OFFSET_MASK ? tables_add(q, val & QCOW2_OFFSET_MASK) : 0;

	if (r)
		return r;
	q->l1[l1i] = val;
	return meta_defer(q, q->l1_offset + l1i * 8, val);
}

/* Put a freshly written L2 table (@data, a cluster) at @off in the cache. */
static void l2_insert(struct qcow2 *q, uint64_t off, const uint8_t *data)
{
	struct l2_slot *victim = &q->l2c[0];

	for (unsigned i = 0; i < q->l2c_n; i++) {
		if (q->l2c[i].off == off) {
			victim = &q->l2c[i];
			break;
		}
		if (q->l2c[i].used < victim->used)
			victim = &q->l2c[i];
	}
	memcpy(victim->data, data, q->cluster_size);
	victim->off = off;
	victim->used = ++q->l2c_tick;
}

/* The L2 entry of the guest cluster holding @off: *@entry (0 when no L2
 * table), *@l2_off the table (0: none).  -EIO for a corrupt L1 entry. */
static int l2_lookup(struct qcow2 *q, uint64_t off, uint64_t *entry, uint64_t *l2_off)
{
	uint64_t l1i = off >> (q->cluster_bits + q->l2_bits);
	unsigned l2i = (unsigned)((off >> q->cluster_bits) & ((1ull << q->l2_bits) - 1));
	uint8_t *t;
	int r;

	*entry = 0;
	*l2_off = 0;
	if (l1i >= q->l1_size)
		return 0;
	*l2_off = q->l1[l1i] & QCOW2_OFFSET_MASK;
	if (!*l2_off)
		return 0;
	if (!host_cluster_ok(q, *l2_off)) {
		q_corrupt(q, "L1 entry %llu points to %#llx", (unsigned long long)l1i,
			  (unsigned long long)*l2_off);
		return -EIO;
	}
	r = l2_load(q, *l2_off, &t);
	if (r)
		return r;
	*entry = get_be64(t + (uint64_t)l2i * 8);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Reads                                                               */

/* Where compressed data lies: *@off and *@len (bytes that may hold it),
 * and the host clusters it occupies for refcounting, from *@first for
 * *@count clusters. */
static void compressed_range(const struct qcow2 *q, uint64_t entry, uint64_t *off,
			     uint64_t *len, uint64_t *first, uint64_t *count)
{
	unsigned x = 62 - (q->cluster_bits - 8);
	uint64_t coff = entry & ((1ull << x) - 1);
	uint64_t nsec = ((entry >> x) & ((1ull << (q->cluster_bits - 8)) - 1)) + 1;
	uint64_t start = coff & ~511ull;

	*off = coff;
	*len = nsec * 512 - (coff & 511);
	*first = start >> q->cluster_bits;
	*count = ((start + nsec * 512 - 1) >> q->cluster_bits) - *first + 1;
}

/* Decompress the cluster that @entry describes into q->dbuf. */
static int read_compressed(struct qcow2 *q, uint64_t entry)
{
	uint64_t off, len, first, count, cs = q->cluster_size;
	int r;

	compressed_range(q, entry, &off, &len, &first, &count);
	if (off < cs || off >= q->file_size) {
		q_corrupt(q, "compressed cluster at %#llx", (unsigned long long)off);
		return -EIO;
	}
	if (len > q->file_size - off)
		len = q->file_size - off;
	r = q_pread(q, q->zbuf, len, off);
	if (r)
		return r;
	if (q->compression == QCOW2_COMPRESSION_ZSTD) {
		ZSTD_DCtx *z = ZSTD_createDCtx();
		ZSTD_inBuffer in = { q->zbuf, len, 0 };
		ZSTD_outBuffer out = { q->dbuf, cs, 0 };

		if (!z)
			return -ENOMEM;
		while (out.pos < out.size && in.pos < in.size) {
			size_t ret = ZSTD_decompressStream(z, &out, &in);

			if (ZSTD_isError(ret) || ret == 0)
				break;
		}
		ZSTD_freeDCtx(z);
		if (out.pos != cs) {
			q_corrupt(q, "zstd cluster at %#llx does not decompress",
				  (unsigned long long)off);
			return -EIO;
		}
		return 0;
	}

	z_stream z;

	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, -15) != Z_OK)
		return -ENOMEM;
	z.next_in = q->zbuf;
	z.avail_in = (uInt)len;
	z.next_out = q->dbuf;
	z.avail_out = (uInt)cs;
	r = inflate(&z, Z_FINISH);
	inflateEnd(&z);
	if ((r != Z_STREAM_END && r != Z_BUF_ERROR) || z.avail_out != 0) {
		q_corrupt(q, "deflate cluster at %#llx does not decompress",
			  (unsigned long long)off);
		return -EIO;
	}
	return 0;
}

/* Read guest bytes [@off, @off + @len) of @q (any image of a chain). */
static int qimg_read(struct qcow2 *q, uint64_t off, uint8_t *buf, uint64_t len)
{
	uint64_t cs = q->cluster_size;

	if (off >= q->size) {
		memset(buf, 0, len);
		return 0;
	}
	if (len > q->size - off) {
		memset(buf + (q->size - off), 0, len - (q->size - off));
		len = q->size - off;
	}
	if (q->raw)
		return q_pread(q, buf, len, off);

	while (len) {
		uint64_t in = off & (cs - 1);
		uint64_t n = cs - in < len ? cs - in : len;
		uint64_t entry, l2_off, host;
		int r = l2_lookup(q, off, &entry, &l2_off);

		if (r)
			return r;
		host = entry & QCOW2_OFFSET_MASK;
		if (entry & QCOW2_OFLAG_COMPRESSED) {
			r = read_compressed(q, entry);
			if (r)
				return r;
			memcpy(buf, q->dbuf + in, n);
		} else if (q->version >= 3 && (entry & QCOW2_OFLAG_ZERO)) {
			memset(buf, 0, n);
		} else if (!host) {
			if (q->backing) {
				r = qimg_read(q->backing, off, buf, n);
				if (r)
					return r;
			} else {
				memset(buf, 0, n);
			}
		} else {
			if (host & (cs - 1) || host < cs || host >= q->file_size) {
				q_corrupt(q, "L2 entry for guest offset %#llx points to %#llx",
					  (unsigned long long)off, (unsigned long long)host);
				return -EIO;
			}
			r = q_data_pread(q, buf, n, host + in);
			if (r)
				return r;
		}
		buf += n;
		off += n;
		len -= n;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Refcounts                                                           */

/* Where the refcount of host cluster @ci lives: *@rb_off (0 when it has no
 * refcount block) and the entry index.  -ENOSPC past the refcount table,
 * -EIO for a corrupt table entry. */
static int rc_locate(struct qcow2 *q, uint64_t ci, uint64_t *rb_off, uint64_t *idx)
{
	uint64_t rti = ci >> q->rb_bits;

	if (rti >= q->rt_entries)
		return -ENOSPC;
	*rb_off = q->rt[rti] & QCOW2_RT_OFFSET_MASK;
	*idx = ci & ((1ull << q->rb_bits) - 1);
	if (*rb_off && !host_cluster_ok(q, *rb_off)) {
		q_corrupt(q, "refcount table entry %llu points to %#llx", (unsigned long long)rti,
			  (unsigned long long)*rb_off);
		return -EIO;
	}
	return 0;
}

/* Refcount of host cluster @ci into *@val.  0 or -errno. */
static int rc_get(struct qcow2 *q, uint64_t ci, uint64_t *val)
{
	uint64_t rb, idx, bit;
	uint8_t b[8];
	int r = rc_locate(q, ci, &rb, &idx);

	*val = 0;
	if (r == -ENOSPC)
		return 0; /* beyond the table: never counted */
	if (r || !rb)
		return r;
	bit = idx << q->refcount_order;
	if (q->refcount_order < 3) {
		unsigned w = 1u << q->refcount_order;

		r = q_pread(q, b, 1, rb + bit / 8);
		if (r)
			return r;
		*val = (b[0] >> (bit % 8)) & ((1u << w) - 1);
		return 0;
	}
	unsigned nb = 1u << (q->refcount_order - 3);

	r = q_pread(q, b, nb, rb + bit / 8);
	if (r)
		return r;
	for (unsigned i = 0; i < nb; i++)
		*val = (*val << 8) | b[i];
	return 0;
}

/* Set bits of entry @idx in refcount block memory or on disk. */
static void rc_encode(const struct qcow2 *q, uint8_t *bytes, uint64_t bit, uint64_t val)
{
	if (q->refcount_order < 3) {
		unsigned w = 1u << q->refcount_order;
		uint8_t mask = (uint8_t)(((1u << w) - 1) << (bit % 8));

		bytes[0] = (uint8_t)((bytes[0] & ~mask) | ((val << (bit % 8)) & mask));
		return;
	}
	unsigned nb = 1u << (q->refcount_order - 3);

	for (unsigned i = nb; i-- > 0;) {
		bytes[i] = (uint8_t)val;
		val >>= 8;
	}
}

/* Entry @idx of the refcount block in memory at @blk. */
static uint64_t rc_decode(const struct qcow2 *q, const uint8_t *blk, uint64_t idx)
{
	uint64_t bit = idx << q->refcount_order, v = 0;

	if (q->refcount_order < 3)
		return (blk[bit / 8] >> (bit % 8)) & ((1u << (1u << q->refcount_order)) - 1);
	for (unsigned i = 0; i < 1u << (q->refcount_order - 3); i++)
		v = (v << 8) | blk[bit / 8 + i];
	return v;
}

/* Refcount of host cluster @ci becomes @val; its refcount block exists. */
static int rc_set(struct qcow2 *q, uint64_t ci, uint64_t val)
{
	uint64_t rb, idx, bit;
	uint8_t b[8] = { 0 };
	unsigned nb = q->refcount_order < 3 ? 1 : 1u << (q->refcount_order - 3);
	int r = rc_locate(q, ci, &rb, &idx);

	if (r)
		return r;
	if (!rb)
		return -EIO;
	bit = idx << q->refcount_order;
	if (q->refcount_order < 3) {
		r = q_pread(q, b, 1, rb + bit / 8);
		if (r)
			return r;
	}
	rc_encode(q, b, bit, val);
	return q_pwrite(q, b, nb, rb + bit / 8);
}

/* Host cluster @ci has no reference left: allocation may take it again
 * (alloc_reserve()), and its space goes back to the filesystem now (a hole;
 * best effort: a filesystem without hole punching keeps the bytes). */
static void cluster_freed(struct qcow2 *q, uint64_t ci)
{
	if (ci < q->free_hint)
		q->free_hint = ci;
	if (fallocate(q->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)(ci << q->cluster_bits), (off_t)q->cluster_size) < 0 &&
	    errno != EOPNOTSUPP && errno != ENOSYS)
		log_debug("%s: punching a hole for a freed cluster: %s", q->path, strerror(errno));
}

/* One reference less on host clusters [@first, @first + @count). */
static int rc_release(struct qcow2 *q, uint64_t first, uint64_t count)
{
	for (uint64_t ci = first; ci < first + count; ci++) {
		uint64_t v;
		int r = rc_get(q, ci, &v);

		if (r)
			return r;
		if (!v) {
			q_corrupt(q, "releasing cluster %#llx with refcount 0",
				  (unsigned long long)(ci << q->cluster_bits));
			continue;
		}
		r = rc_set(q, ci, v - 1);
		if (r)
			return r;
		if (v == 1)
			cluster_freed(q, ci);
	}
	return 0;
}

/* The refcount table cannot count the cluster at q->alloc_next: move it to
 * a larger one at the end of the file.  Layout from the cursor: the new
 * refcount blocks the new area needs (counting the whole area), then the
 * new table.  Order: blocks, table, then one header write that switches
 * to it (offset and size, 12 contiguous bytes), then the old table's
 * clusters are released.  A crash before the header write leaves only
 * unreferenced clusters past the old end; after it, at worst a leak. */
static int rt_grow(struct qcow2 *q)
{
	uint64_t cs = q->cluster_size, a = q->alloc_next, span = q->rb_bits + q->cluster_bits;
	uint64_t old_clusters = q->rt_bytes / cs, n = old_clusters * 2, nb = 1, end;
	uint64_t first = a >> span, last, new_off, *nrt;
	uint8_t *buf, hdr[12];
	int r = 0;

	for (;;) {
		if (n * cs > QCOW2_MAX_REFTABLE_BYTES || nb > QCOW2_MAX_REFTABLE_BYTES / 8) {
			log_warn("%s: the refcount table would exceed %u bytes", q->path,
				 QCOW2_MAX_REFTABLE_BYTES);
			return -ENOSPC;
		}
		end = a + (nb + n) * cs;
		last = (end - 1) >> span;
		if (last - first + 1 > nb) {
			nb = last - first + 1;
			continue;
		}
		if ((last + 1) * 8 > n * cs) {
			n = ((last + 1) * 8 + cs - 1) / cs;
			continue;
		}
		break;
	}
	new_off = a + nb * cs;
	buf = calloc(1, cs);
	nrt = calloc(n * cs / 8, sizeof(*nrt));
	if (!buf || !nrt) {
		r = -ENOMEM;
		goto out;
	}
	memcpy(nrt, q->rt, (size_t)q->rt_entries * sizeof(*nrt));
	for (uint64_t j = 0; j < nb; j++) {
		uint64_t rti = first + j, lo = rti << span, hi = (rti + 1) << span;
		uint64_t from = a > lo ? a : lo, to = end < hi ? end : hi;

		memset(buf, 0, cs);
		for (uint64_t off = from; off < to; off += cs) {
			uint64_t idx = (off >> q->cluster_bits) & ((1ull << q->rb_bits) - 1);

			rc_encode(q, buf + ((idx << q->refcount_order) / 8),
				  idx << q->refcount_order, 1);
		}
		r = q_pwrite(q, buf, cs, a + j * cs);
		if (r)
			goto out;
		nrt[rti] = a + j * cs;
	}
	for (uint64_t i = 0; i < n * cs / 8; i++)
		nrt[i] = htobe64(nrt[i]);
	r = q_pwrite(q, nrt, n * cs, new_off);
	for (uint64_t i = 0; i < n * cs / 8; i++)
		nrt[i] = be64toh(nrt[i]);
	if (r)
		goto out;
	put_be64(hdr, new_off);
	put_be64(buf, n); /* scratch: the low 4 bytes, big endian */
	memcpy(hdr + 8, buf + 4, 4);
	r = q_barrier(q);
	if (!r)
		r = q_pwrite(q, hdr, sizeof(hdr), QH_RT_OFFSET);
	if (!r)
		r = q_barrier(q);
	if (r)
		goto out;
	{
		uint64_t old_off = q->rt_offset;

		free(q->rt);
		q->rt = nrt;
		nrt = NULL;
		q->rt_offset = new_off;
		q->rt_bytes = n * cs;
		q->rt_entries = (uint32_t)(n * cs / 8);
		q->alloc_next = end;
		r = tables_rebuild(q);
		if (!r)
			r = rc_release(q, old_off >> q->cluster_bits, old_clusters);
	}
out:
	free(buf);
	free(nrt);
	return r;
}

/* The index of the first entry of q->tables not below @off. */
static size_t tables_lower_bound(const struct qcow2 *q, uint64_t off)
{
	size_t lo = 0, hi = q->n_tables;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (q->tables[mid] < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Whether the cluster at @off is one of our metadata tables by position:
 * an L2 table of the active L1 or a refcount block (q->tables).  Their
 * refcounts are never 0 in a sound image; this keeps a damaged one from
 * handing them out as free, and guest data from being written over them. */
static bool is_table_cluster(const struct qcow2 *q, uint64_t off)
{
	size_t i = tables_lower_bound(q, off);

	return i < q->n_tables && q->tables[i] == off;
}

/* Add @off (a new L2 table or refcount block) to q->tables. */
static int tables_add(struct qcow2 *q, uint64_t off)
{
	size_t lo = tables_lower_bound(q, off);
	uint64_t *t;

	if (lo < q->n_tables && q->tables[lo] == off)
		return 0;
	t = grow_for_one(q->tables, &q->cap_tables, q->n_tables, sizeof(*t));
	if (!t)
		return -ENOMEM;
	q->tables = t;
	memmove(q->tables + lo + 1, q->tables + lo, (q->n_tables - lo) * sizeof(*q->tables));
	q->tables[lo] = off;
	q->n_tables++;
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* q->tables afresh from the L1 and refcount tables in memory (at open, and
 * when the refcount table moved). */
static int tables_rebuild(struct qcow2 *q)
{
	size_t cap = (size_t)q->l1_size + q->rt_entries + 1, n = 0;
	uint64_t *t = malloc(cap * sizeof(*t));

	if (!t)
		return -ENOMEM;
	for (uint32_t i = 0; i < q->l1_size; i++)
		if (q->l1[i] & QCOW2_OFFSET_MASK)
			t[n++] = q->l1[i] & QCOW2_OFFSET_MASK;
	for (uint32_t i = 0; i < q->rt_entries; i++)
		if (q->rt[i] & QCOW2_RT_OFFSET_MASK)
			t[n++] = q->rt[i] & QCOW2_RT_OFFSET_MASK;
	qsort(t, n, sizeof(*t), cmp_u64);
	q->n_tables = 0;
	for (size_t i = 0; i < n; i++)
		if (!q->n_tables || t[q->n_tables - 1] != t[i])
			t[q->n_tables++] = t[i];
	free(q->tables);
	q->tables = t;
	q->cap_tables = cap;
	return 0;
}

/* The first cluster inside the file, at or after q->free_hint, whose
 * refcount is 0 (freed by a discard, a rewrite of a compressed or shared
 * cluster, a refcount table move): its offset in *@out, and 1; 0 when
 * there is none (q->free_hint then points at the end of the file).
 * Refcount blocks are read whole, one at a time; clusters without one are
 * skipped (nothing counts them, so nothing can be known free). */
static int find_free(struct qcow2 *q, uint64_t *out)
{
	uint64_t end = q->alloc_next >> q->cluster_bits, per_block = 1ull << q->rb_bits;

	if (!q->rcbuf && posix_memalign((void **)&q->rcbuf, QCOW2_DIO_ALIGN, q->cluster_size))
		return -ENOMEM;
	while (q->free_hint < end) {
		uint64_t ci = q->free_hint, rti = ci >> q->rb_bits, rb;
		int r;

		if (rti >= q->rt_entries) {
			q->free_hint = end;
			break;
		}
		rb = q->rt[rti] & QCOW2_RT_OFFSET_MASK;
		if (!rb || !host_cluster_ok(q, rb)) {
			q->free_hint = (rti + 1) << q->rb_bits;
			continue;
		}
		r = q_pread(q, q->rcbuf, q->cluster_size, rb);
		if (r)
			return r;
		for (uint64_t idx = ci & (per_block - 1); idx < per_block && ci < end; idx++, ci++) {
			uint64_t off = ci << q->cluster_bits;

			if (rc_decode(q, q->rcbuf, idx) || !host_cluster_ok(q, off) ||
			    is_table_cluster(q, off))
				continue;
			q->free_hint = ci + 1;
			*out = off;
			return 1;
		}
		q->free_hint = ci;
	}
	return 0;
}

/* A free host cluster for new contents: a freed one inside the file, or
 * one at the end of the file; its offset into *@out.  Its refcount is not set yet: the caller writes the contents,
 * then rc_set(.., 1), then the entry that points to it.  A missing
 * refcount block is created here, in the cluster under the cursor, which
 * counts itself; it is written in full before the refcount table entry. */
static int alloc_reserve(struct qcow2 *q, uint64_t *out)
{
	uint64_t cs = q->cluster_size;

	/* A freed cluster first.  Not while asynchronous data I/O is in
	 * flight: a late write of a request that raced a discard would land
	 * in the cluster's new owner (qcow2_try_async()). */
	if (q->free_hint < (q->alloc_next >> q->cluster_bits) &&
	    (!q->data || !blk_inflight(q->data))) {
		int r = find_free(q, out);

		if (r)
			return r < 0 ? r : 0;
	}
	for (;;) {
		uint64_t off = q->alloc_next;
		uint64_t ci = off >> q->cluster_bits;
		uint64_t rb, idx;
		int r;

		/* L1 and L2 entries hold offsets below 2^56. */
		if (off >= QCOW2_MAX_HOST_OFFSET)
			return -ENOSPC;
		r = rc_locate(q, ci, &rb, &idx);

		if (r == -ENOSPC) {
			r = rt_grow(q);
			if (r)
				return r;
			continue;
		}
		if (r)
			return r;
		if (!rb) {
			uint8_t *blk = calloc(1, cs);
			uint8_t be[8];
			uint64_t rti = ci >> q->rb_bits;

			if (!blk)
				return -ENOMEM;
			rc_encode(q, blk + ((idx << q->refcount_order) / 8),
				  idx << q->refcount_order, 1);
			r = q_pwrite(q, blk, cs, off);
			free(blk);
			if (!r)
				r = q_barrier(q);
			if (r)
				return r;
			put_be64(be, off);
			r = q_pwrite(q, be, sizeof(be), q->rt_offset + rti * 8);
			if (r)
				return r;
			q->rt[rti] = off;
			q->alloc_next += cs;
			r = tables_add(q, off);
			if (r)
				return r;
			continue;
		}
		/* Past the end of the file nothing can be referenced: a stale
		 * refcount there (a leak) is overwritten with 1, not trusted,
		 * so that no hostile refcount block can make us scan.  Except
		 * where a (damaged) table entry already places an L2 table or
		 * a refcount block: data there would be rewritten as metadata
		 * once the file grows past it.  Such a cluster is skipped. */
		q->alloc_next += cs;
		if (is_table_cluster(q, off))
			continue;
		*out = off;
		return 0;
	}
}

/* ------------------------------------------------------------------ */
/* Writes                                                              */

/* The reference an L2 entry held, now overwritten, is dropped: the data
 * cluster, or every cluster compressed data touches.  A pointer into the
 * header, the L1 or the refcount table (corrupt) is left alone. */
static int release_entry_now(struct qcow2 *q, uint64_t entry)
{
	uint64_t host = entry & QCOW2_OFFSET_MASK;

	if (entry & QCOW2_OFLAG_COMPRESSED) {
		uint64_t coff, clen, first, count;

		compressed_range(q, entry, &coff, &clen, &first, &count);
		for (uint64_t ci = first; ci < first + count; ci++) {
			if (!host_cluster_ok(q, ci << q->cluster_bits))
				return 0;
		}
		return rc_release(q, first, count);
	}
	if (host && host_cluster_ok(q, host))
		return rc_release(q, host >> q->cluster_bits, 1);
	return 0;
}

/* The clusters an overwritten L2 entry pointed to lose their reference at
 * qcow2_commit(), once the new entries are durable. */
static int release_entry(struct qcow2 *q, uint64_t entry)
{
	uint64_t *p;

	if (!(entry & (QCOW2_OFFSET_MASK | QCOW2_OFLAG_COMPRESSED)))
		return 0;
	p = grow_for_one(q->rel, &q->cap_rel, q->nrel, sizeof(*p));
	if (!p)
		return -ENOMEM;
	q->rel = p;
	q->rel[q->nrel++] = entry;
	return 0;
}

/* End of a request's metadata changes: barrier (data, new tables and
 * refcounts durable), the L1/L2 entry writes, barrier, the releases.  A
 * failure leaves memory ahead of the file: the image takes no more
 * writes. */
static int qcow2_commit(struct qcow2 *q)
{
	int r = 0;

	if (q->npend) {
		r = q_barrier(q);
		for (size_t i = 0; i < q->npend && !r; i++) {
			uint8_t be[8];

			put_be64(be, q->pend[i].val);
			r = q_pwrite(q, be, sizeof(be), q->pend[i].off);
		}
		q->npend = 0;
	}
	if (q->nrel) {
		if (!r)
			r = q_barrier(q);
		for (size_t i = 0; i < q->nrel && !r; i++)
			r = release_entry_now(q, q->rel[i]);
		q->nrel = 0;
	}
	if (r) {
		q->broken = true;
		log_warn("%s: metadata update failed (%s); refusing further writes", q->path,
			 strerror(-r));
	}
	return r;
}

/* Commit when a request failed half way (what the chunks before did is
 * consistent) or when enough is pending; else leave it for the next FLUSH
 * (like a write-back metadata cache: a write not flushed may be lost in a
 * crash, its clusters then leak). */
static int qcow2_commit_some(struct qcow2 *q, bool now)
{
	if (now || q->npend >= QCOW2_MAX_PENDING || q->nrel >= QCOW2_MAX_PENDING)
		return qcow2_commit(q);
	return 0;
}

/* The L2 table at *@l2_off is shared (an internal snapshot holds it too):
 * the active L1 entry @l1i gets a copy of its own.  Refcounts count
 * references per L1 table walk, so the clusters the table points to keep
 * theirs (one for the snapshot's walk through the old table, one for ours
 * through the copy); the entries lose COPIED (those clusters are shared).
 * Order: the copy is written and counted, then the L1 entry is switched,
 * then the old table loses the active reference.  A crash leaks at worst. */
static int l2_unshare(struct qcow2 *q, uint64_t l1i, uint64_t *l2_off)
{
	uint64_t cs = q->cluster_size, n = cs / 8, t, e;
	uint8_t *copy = malloc(cs), *src;
	int r;

	if (!copy)
		return -ENOMEM;
	r = l2_load(q, *l2_off, &src);
	if (r)
		goto out;
	memcpy(copy, src, cs);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t ent = get_be64(copy + i * 8), host = ent & QCOW2_OFFSET_MASK;

		if (ent & QCOW2_OFLAG_COMPRESSED) {
			uint64_t coff, clen, first, count;

			compressed_range(q, ent, &coff, &clen, &first, &count);
			for (uint64_t ci = first; ci < first + count; ci++) {
				if (!host_cluster_ok(q, ci << q->cluster_bits))
					r = -EIO;
			}
		} else if (host && !host_cluster_ok(q, host)) {
			r = -EIO;
		}
		if (r) {
			q_corrupt(q, "L2 table %#llx entry %llu: %#llx", (unsigned long long)*l2_off,
				  (unsigned long long)i, (unsigned long long)ent);
			goto out;
		}
		put_be64(copy + i * 8, ent & ~QCOW2_OFLAG_COPIED);
	}
	r = alloc_reserve(q, &t);
	if (!r)
		r = q_pwrite(q, copy, cs, t);
	if (!r)
		r = rc_set(q, t >> q->cluster_bits, 1);
	if (r)
		goto out;
	e = t | QCOW2_OFLAG_COPIED;
	r = l1_set(q, l1i, e);
	if (r)
		goto out;
	l2_insert(q, t, copy);
	r = release_entry(q, *l2_off);
	*l2_off = t;
out:
	free(copy);
	return r;
}

/* The L2 table for guest offset @off, ready to be written to (refcount 1,
 * COPIED in its L1 entry): *@l2_off.  Allocates it when missing. */
static int l2_for_write(struct qcow2 *q, uint64_t off, uint64_t *l2_off)
{
	uint64_t l1i = off >> (q->cluster_bits + q->l2_bits);
	uint64_t e, t, v;
	uint8_t *zero;
	int r;

	if (l1i >= q->l1_size)
		return -EIO; /* blk_check() keeps offsets inside the disk */
	e = q->l1[l1i];

	*l2_off = e & QCOW2_OFFSET_MASK;
	if (*l2_off) {
		if (!host_cluster_ok(q, *l2_off)) {
			q_corrupt(q, "L1 entry %llu points to %#llx", (unsigned long long)l1i,
				  (unsigned long long)*l2_off);
			return -EIO;
		}
		if (e & QCOW2_OFLAG_COPIED)
			return 0;
		r = rc_get(q, *l2_off >> q->cluster_bits, &v);
		if (r)
			return r;
		if (v != 1)
			return l2_unshare(q, l1i, l2_off);
		return l1_set(q, l1i, e | QCOW2_OFLAG_COPIED);
	}

	r = alloc_reserve(q, &t);
	if (r)
		return r;
	zero = calloc(1, q->cluster_size);
	if (!zero)
		return -ENOMEM;
	r = q_pwrite(q, zero, q->cluster_size, t);
	if (!r)
		r = rc_set(q, t >> q->cluster_bits, 1);
	if (!r)
		r = l1_set(q, l1i, t | QCOW2_OFLAG_COPIED);
	if (!r) {
		l2_insert(q, t, zero);
		*l2_off = t;
	}
	free(zero);
	return r;
}

/* The writable L2 table for guest offset @off (l2_for_write()) and, read
 * from it, the index and current value of @off's entry. */
static int l2_entry_for_write(struct qcow2 *q, uint64_t off, uint64_t *l2_off, unsigned *l2i,
			      uint64_t *entry)
{
	uint8_t *t;
	int r;

	*l2i = (unsigned)((off >> q->cluster_bits) & ((1ull << q->l2_bits) - 1));
	r = l2_for_write(q, off, l2_off);
	if (r)
		return r;
	r = l2_load(q, *l2_off, &t);
	if (r)
		return r;
	*entry = get_be64(t + (uint64_t)*l2i * 8);
	return 0;
}

/* Write @n bytes at guest offset @off, all inside one cluster. */
static int write_chunk(struct qcow2 *q, uint64_t off, const uint8_t *buf, uint64_t n)
{
	uint64_t cs = q->cluster_size, in = off & (cs - 1), start = off - in;
	uint64_t l2_off, entry, host, v, newoff;
	bool compressed, zero, inplace = false;
	const uint8_t *data;
	unsigned l2i;
	int r;

	r = l2_entry_for_write(q, off, &l2_off, &l2i, &entry);
	if (r)
		return r;
	compressed = entry & QCOW2_OFLAG_COMPRESSED;
	zero = !compressed && q->version >= 3 && (entry & QCOW2_OFLAG_ZERO);
	host = compressed ? 0 : entry & QCOW2_OFFSET_MASK;
	if (host) {
		if (!host_cluster_ok(q, host) || is_table_cluster(q, host)) {
			q_corrupt(q, "L2 entry for guest offset %#llx points to %#llx%s",
				  (unsigned long long)off, (unsigned long long)host,
				  is_table_cluster(q, host) ? " (an L2 table or refcount block)" : "");
			return -EIO;
		}
		if (entry & QCOW2_OFLAG_COPIED) {
			inplace = true;
		} else {
			r = rc_get(q, host >> q->cluster_bits, &v);
			if (r)
				return r;
			inplace = v == 1;
		}
		if (inplace && !zero && (entry & QCOW2_OFLAG_COPIED))
			return q_data_pwrite(q, buf, n, host + in);
	}

	/* The whole cluster: the old contents (backing file, zeroes,
	 * decompressed) under the new bytes. */
	if (n == cs) {
		data = buf;
	} else {
		if (zero) {
			memset(q->cowbuf, 0, cs);
		} else {
			r = qimg_read(q, start, q->cowbuf, cs);
			if (r)
				return r;
		}
		memcpy(q->cowbuf + in, buf, n);
		data = q->cowbuf;
	}

	if (inplace) {
		r = q_data_pwrite(q, data, cs, host);
		if (r)
			return r;
		return l2_set(q, l2_off, l2i, host | QCOW2_OFLAG_COPIED);
	}

	r = alloc_reserve(q, &newoff);
	if (r)
		return r;
	r = q_data_pwrite(q, data, cs, newoff);
	if (r)
		return r;
	r = rc_set(q, newoff >> q->cluster_bits, 1);
	if (r)
		return r;
	r = l2_set(q, l2_off, l2i, newoff | QCOW2_OFLAG_COPIED);
	if (r)
		return r;
	/* The old cluster loses this reference only now: a crash before
	 * leaks it, never frees what is still pointed to. */
	return release_entry(q, entry);
}

static int qcow2_write(struct qcow2 *q, uint64_t off, const uint8_t *buf, uint64_t len)
{
	uint64_t cs = q->cluster_size;
	int r = 0, c;

	while (len && !r) {
		uint64_t n = cs - (off & (cs - 1));

		if (n > len)
			n = len;
		r = write_chunk(q, off, buf, n);
		off += n;
		buf += n;
		len -= n;
	}
	c = qcow2_commit_some(q, r != 0);
	return r ? r : c;
}

/* Guest cluster holding @off reads as zeroes without looking at data. */
static int reads_zero(struct qcow2 *q, uint64_t off, bool *yes)
{
	uint64_t entry, l2_off;
	int r = l2_lookup(q, off, &entry, &l2_off);

	if (r)
		return r;
	if (entry & QCOW2_OFLAG_COMPRESSED)
		*yes = false;
	else if (q->version >= 3 && (entry & QCOW2_OFLAG_ZERO))
		*yes = true;
	else if (entry & QCOW2_OFFSET_MASK)
		*yes = false;
	else
		*yes = !q->backing || off >= q->backing->size;
	return 0;
}

/* v3: the whole guest cluster holding @off reads as zeroes through the
 * zero flag.  The L2 entry is written first; the cluster it pointed to
 * (data or compressed) loses its reference after, so a crash leaks at
 * worst. */
static int zero_cluster(struct qcow2 *q, uint64_t off)
{
	uint64_t l2_off, entry;
	unsigned l2i;
	int r;

	r = l2_entry_for_write(q, off, &l2_off, &l2i, &entry);
	if (r)
		return r;
	if (entry == QCOW2_OFLAG_ZERO)
		return 0;
	r = l2_set(q, l2_off, l2i, QCOW2_OFLAG_ZERO);
	if (r)
		return r;
	return release_entry(q, entry);
}

/* WRITE_ZEROES (@discard false) or DISCARD (true).  Whole clusters of a v3
 * image get the zero flag (their clusters freed); on v2, and for partial
 * clusters, WRITE_ZEROES writes zeroes where the cluster does not read as
 * zeroes already, and DISCARD leaves them alone (a hint). */
static int qcow2_write_zeroes(struct qcow2 *q, uint64_t off, uint64_t len, bool discard)
{
	uint64_t cs = q->cluster_size;
	uint8_t *zero = NULL;
	int r = 0, c;

	while (len) {
		uint64_t n = cs - (off & (cs - 1));
		bool yes;

		if (n > len)
			n = len;
		if (q->version >= 3 && n == cs) {
			r = zero_cluster(q, off);
		} else if (!discard) {
			r = reads_zero(q, off, &yes);
			if (!r && !yes) {
				/* Aligned: O_DIRECT takes it without a bounce. */
				if (!zero && posix_memalign((void **)&zero, QCOW2_DIO_ALIGN, cs) == 0)
					memset(zero, 0, cs);
				r = zero ? write_chunk(q, off, zero, n) : -ENOMEM;
			}
		}
		if (r)
			break;
		off += n;
		len -= n;
	}
	free(zero);
	c = qcow2_commit_some(q, r != 0);
	return r ? r : c;
}

/* ------------------------------------------------------------------ */
/* Requests                                                            */

static int qcow2_do(struct blk *b, struct blk_req *req)
{
	struct qcow2 *q = b->qcow2;
	uint8_t *buf;
	int r;

	if (q->broken && req->op != BLK_READ)
		return -EIO;
	switch (req->op) {
	case BLK_READ:
	case BLK_WRITE:
		/* Aligned, so that O_DIRECT (cache=none) can take it as is. */
		if (posix_memalign((void **)&buf, QCOW2_DIO_ALIGN, req->len ? req->len : 1))
			return -ENOMEM;
		if (req->op == BLK_READ) {
			r = qimg_read(q, req->offset, buf, req->len);
			if (!r)
				blk_iov_from_buf(req->iov, req->iovcnt, buf);
		} else {
			blk_iov_to_buf(req->iov, req->iovcnt, buf);
			r = qcow2_write(q, req->offset, buf, req->len);
		}
		free(buf);
		return r;
	case BLK_FLUSH:
		r = qcow2_commit(q);
		if (r || b->unsafe)
			return r;
		do {
			r = fdatasync(q->fd);
		} while (r < 0 && errno == EINTR);
		return r < 0 ? -errno : 0;
	case BLK_DISCARD:
		return qcow2_write_zeroes(q, req->offset, req->len, true);
	case BLK_WRITE_ZEROES:
		return qcow2_write_zeroes(q, req->offset, req->len, false);
	}
	return -EINVAL;
}

/* ------------------------------------------------------------------ */
/* Asynchronous data I/O (cache=none)                                  */

/* A guest READ or WRITE that touches only allocated data clusters (for a
 * write: ones it may overwrite in place, COPIED) needs no metadata: it goes
 * to q->data, the O_DIRECT handle with Linux AIO, as one raw request per
 * run of contiguous host clusters, straight from the guest's iov.  The
 * request completes when its last part does.  Everything else (allocation,
 * copy-on-write, backing files, compressed and zero clusters) takes the
 * synchronous path.  Requests of either kind in flight together touch the
 * same clusters only when the guest issued overlapping requests at once,
 * whose order it cannot expect anyway; a freed cluster is not allocated
 * again while asynchronous requests are in flight (alloc_reserve()), so a
 * late write never lands in someone else's cluster. */
struct q_async {
	struct blk *b;          /* the qcow2 handle */
	struct blk_req *req;    /* the guest's request */
	unsigned pending;
	int result;
	struct blk_req part[QCOW2_ASYNC_EXTENTS];
	struct iovec iov[];     /* the parts' slices of req->iov */
};

static void async_part_done(struct blk_req *part, int result)
{
	struct q_async *a = part->opaque;

	if (result && !a->result)
		a->result = result;
	if (--a->pending)
		return;
	blk_req_complete(a->b, a->req, a->result);
	free(a);
}

/* Slice bytes [@from, @from + @len) of @iov (@cnt segments) into @out;
 * returns the segments used. */
static unsigned iov_slice(const struct iovec *iov, unsigned cnt, uint64_t from, uint64_t len,
			  struct iovec *out)
{
	unsigned n = 0;

	for (unsigned i = 0; i < cnt && len; i++) {
		uint64_t seg = iov[i].iov_len;

		if (from >= seg) {
			from -= seg;
			continue;
		}
		seg -= from;
		if (seg > len)
			seg = len;
		out[n].iov_base = (uint8_t *)iov[i].iov_base + from;
		out[n].iov_len = seg;
		n++;
		len -= seg;
		from = 0;
	}
	return n;
}

/* Send @req to q->data when it qualifies (above).  Returns 1 when it went
 * (it completes later), 0 when it must take the synchronous path, or
 * -errno (a corrupt entry: the caller fails the request). */
static int qcow2_try_async(struct blk *b, struct blk_req *req)
{
	struct qcow2 *q = b->qcow2;
	struct blk *d = q->data;
	uint64_t cs = q->cluster_size, off = req->offset, left = req->len, pos = 0;
	uint64_t ext_host[QCOW2_ASYNC_EXTENTS], ext_pos[QCOW2_ASYNC_EXTENTS];
	uint64_t ext_len[QCOW2_ASYNC_EXTENTS];
	unsigned n = 0, used = 0;
	struct q_async *a;

	if (!d || q->broken || !left || (req->op != BLK_READ && req->op != BLK_WRITE))
		return 0;
	while (left) {
		uint64_t in = off & (cs - 1), len = cs - in < left ? cs - in : left;
		uint64_t entry, l2_off, host;
		int r = l2_lookup(q, off, &entry, &l2_off);

		if (r)
			return r;
		host = entry & QCOW2_OFFSET_MASK;
		if (!host || (entry & QCOW2_OFLAG_COMPRESSED) ||
		    (q->version >= 3 && (entry & QCOW2_OFLAG_ZERO)) ||
		    (req->op == BLK_WRITE && !(entry & QCOW2_OFLAG_COPIED)))
			return 0;
		if (!host_cluster_ok(q, host) || (req->op == BLK_WRITE && is_table_cluster(q, host)))
			return 0; /* the synchronous path reports it */
		host += in;
		if (n && ext_host[n - 1] + ext_len[n - 1] == host) {
			ext_len[n - 1] += len;
		} else {
			if (n == QCOW2_ASYNC_EXTENTS)
				return 0;
			ext_host[n] = host;
			ext_pos[n] = pos;
			ext_len[n] = len;
			n++;
		}
		off += len;
		pos += len;
		left -= len;
	}
	for (unsigned i = 0; i < n; i++)
		if (ext_host[i] % d->block_size || ext_len[i] % d->block_size)
			return 0;
	a = calloc(1, sizeof(*a) + (req->iovcnt + n) * sizeof(struct iovec));
	if (!a)
		return 0;
	a->b = b;
	a->req = req;
	a->pending = n;
	/* The data handle checks ranges against its size: the file grew. */
	d->size = round_up(q->file_size, d->block_size);
	for (unsigned i = 0; i < n; i++) {
		struct blk_req *p = &a->part[i];

		p->op = req->op;
		p->offset = ext_host[i];
		p->len = ext_len[i];
		p->iov = a->iov + used;
		p->iovcnt = iov_slice(req->iov, req->iovcnt, ext_pos[i], ext_len[i], a->iov + used);
		used += p->iovcnt;
		p->done = async_part_done;
		p->opaque = a;
	}
	for (unsigned i = 0; i < n; i++) {
		int r = blk_submit(d, &a->part[i]);

		if (r) {
			/* Parts already sent complete later; this and the rest
			 * count as failed now. */
			if (!a->result)
				a->result = r;
			a->pending -= n - i;
			if (!a->pending) {
				free(a);
				return r;
			}
			return 1;
		}
	}
	return 1;
}

static void qcow2_submit(struct blk *b, struct blk_req *req)
{
	int r = qcow2_try_async(b, req);

	if (r == 1)
		return;
	blk_req_complete(b, req, r < 0 ? r : qcow2_do(b, req));
}

/* The data handle's requests complete on its own eventfd; drain() waits
 * for them here. */
static bool qcow2_poll(struct blk *b, bool wait)
{
	struct blk *d = b->qcow2 ? b->qcow2->data : NULL;

	if (!d || !blk_inflight(d))
		return false;
	if (wait)
		blk_drain(d);
	return true;
}

static void qcow2_destroy(struct blk *b)
{
	if (b->qcow2 && !b->qcow2->broken && (b->qcow2->npend || b->qcow2->nrel) &&
	    qcow2_commit(b->qcow2))
		log_warn("%s: metadata not written at close", b->path);
	if (b->qcow2) {
		blk_close(b->qcow2->data); /* drained by now */
		b->qcow2->data = NULL;
	}
	qimg_free(b->qcow2);
	b->qcow2 = NULL;
}

/* The top image holds the lock (backing files hold shared ones). */
static int qcow2_lock_fd(const struct blk *b)
{
	return b->qcow2->fd;
}

static const struct blk_ops qcow2_ops = {
	.name = "qcow2",
	.submit = qcow2_submit,
	.poll = qcow2_poll,
	.destroy = qcow2_destroy,
	.lock_fd = qcow2_lock_fd,
};

/* ------------------------------------------------------------------ */
/* Open                                                                */

static int qimg_open(const char *path, bool readonly, enum blk_format fmt,
		     struct qcow2_chain *chain, struct qcow2 **out, char *err, size_t errlen);

/* The name of incompatible feature @bit from the feature name table of
 * header cluster @hdr (extensions from @ext to @end), or a built-in one. */
static void feature_name(const uint8_t *hdr, uint64_t ext, uint64_t end, unsigned bit,
			 char *name, size_t len)
{
	static const char *const known[] = { "dirty", "corrupt", "external data file",
					     "compression type", "extended L2 entries" };

	snprintf(name, len, "%s", bit < 5 ? known[bit] : "unknown");
	while (ext + 8 <= end) {
		uint32_t type = get_be32(hdr + ext), elen = get_be32(hdr + ext + 4);

		if (type == QCOW2_EXT_END || elen > end - ext - 8)
			return;
		if (type == QCOW2_EXT_FEATURE_NAMES) {
			for (uint64_t i = 0; i + 48 <= elen; i += 48) {
				const uint8_t *f = hdr + ext + 8 + i;

				if (f[0] == 0 && f[1] == bit) {
					snprintf(name, len, "%.46s", (const char *)f + 2);
					return;
				}
			}
		}
		ext += 8 + round_up(elen, 8);
	}
}

/* Parse and check the header of @q (fd and file_size set); load L1 and
 * the refcount table; open the backing chain. */
/* Count one more reference on every host cluster that [@off, @off + @len)
 * touches; false when one lies past the end of the file. */
static bool repair_count(const struct qcow2 *q, uint16_t *cnt, uint64_t n, uint64_t off,
			 uint64_t len)
{
	uint64_t first = off >> q->cluster_bits, last = (off + len - 1) >> q->cluster_bits;

	if (!len || off + len < off || last >= n)
		return false;
	for (uint64_t ci = first; ci <= last; ci++)
		if (cnt[ci] < UINT16_MAX)
			cnt[ci]++;
	return true;
}

/* A writable open of an image with the dirty bit (written with lazy
 * refcounts and not closed cleanly): its refcounts may be too low or too
 * high, and the allocation and copy-on-write decisions rely on them.
 * Rebuild them as `qemu-img check -r all` would: count every reference
 * from scratch (header, L1 table, refcount table and blocks, L2 tables,
 * data and compressed clusters), set each refcount that differs in place,
 * then barrier, clear the dirty bit, barrier.  A crash on the way leaves
 * the bit set, and the next open starts over.  Refuses (-EUCLEAN, the
 * reason in @err) what it cannot mend here: internal snapshots, a count
 * beyond the refcount width, a referenced cluster with no refcount block,
 * an image of more than QCOW2_REPAIR_MAX_CLUSTERS clusters, a reference
 * out of the file. */
static int qcow2_repair(struct qcow2 *q, char *err, size_t errlen)
{
	uint64_t cs = q->cluster_size, n = q->alloc_next >> q->cluster_bits, fixed = 0;
	uint64_t maxrc = q->refcount_order == 6 ? UINT64_MAX :
			 (1ull << (1u << q->refcount_order)) - 1;
	const char *bad = NULL;
	uint16_t *cnt;
	uint8_t be[8];
	int r = 0;

	if (q->nb_snapshots)
		return errmsg(-EUCLEAN, err, errlen, "%s has the dirty bit set (lazy refcounts, not"
			      " closed cleanly) and internal snapshots: repair it with 'qemu-img"
			      " check -r all' before opening it writable", q->path);
	if (n > QCOW2_REPAIR_MAX_CLUSTERS || !(cnt = calloc(n ? n : 1, sizeof(*cnt))))
		return errmsg(-EUCLEAN, err, errlen, "%s has the dirty bit set and is too large to"
			      " repair here: use 'qemu-img check -r all'", q->path);
	if (!repair_count(q, cnt, n, 0, cs) ||
	    (q->l1_size && !repair_count(q, cnt, n, q->l1_offset, (uint64_t)q->l1_size * 8)) ||
	    !repair_count(q, cnt, n, q->rt_offset, q->rt_bytes))
		bad = "a metadata table lies past the end of the file";
	for (uint32_t i = 0; i < q->rt_entries && !bad; i++) {
		uint64_t rb = q->rt[i] & QCOW2_RT_OFFSET_MASK;

		if (rb && (!host_cluster_ok(q, rb) || !repair_count(q, cnt, n, rb, cs)))
			bad = "a refcount block lies outside the file";
	}
	for (uint32_t i = 0; i < q->l1_size && !bad && !r; i++) {
		uint64_t l2 = q->l1[i] & QCOW2_OFFSET_MASK;
		uint8_t *t;

		if (!l2)
			continue;
		if (!host_cluster_ok(q, l2) || !repair_count(q, cnt, n, l2, cs)) {
			bad = "an L2 table lies outside the file";
			break;
		}
		r = l2_load(q, l2, &t);
		for (uint64_t j = 0; !r && j < (1ull << q->l2_bits) && !bad; j++) {
			uint64_t e = get_be64(t + 8 * j), off, len, first, count;

			if (e & QCOW2_OFLAG_COMPRESSED) {
				compressed_range(q, e, &off, &len, &first, &count);
				if (!repair_count(q, cnt, n, first << q->cluster_bits,
						  count << q->cluster_bits))
					bad = "a compressed cluster lies past the end of the file";
			} else if ((off = e & QCOW2_OFFSET_MASK)) {
				if (!host_cluster_ok(q, off) || !repair_count(q, cnt, n, off, cs))
					bad = "a data cluster lies outside the file";
			}
		}
	}
	for (uint64_t ci = 0; ci < n && !bad && !r; ci++) {
		uint64_t v, rb, idx;

		r = rc_get(q, ci, &v);
		if (r || v == cnt[ci])
			continue;
		if (cnt[ci] > maxrc || cnt[ci] == UINT16_MAX) {
			bad = "a cluster has more references than the refcount width holds";
			break;
		}
		r = rc_locate(q, ci, &rb, &idx);
		if (r == -ENOSPC || (!r && !rb)) {
			r = 0;
			bad = "a cluster in use has no refcount block";
			break;
		}
		if (!r)
			r = rc_set(q, ci, cnt[ci]);
		fixed++;
	}
	free(cnt);
	if (bad)
		return errmsg(-EUCLEAN, err, errlen, "%s has the dirty bit set and cannot be repaired"
			      " here (%s): use 'qemu-img check -r all'", q->path, bad);
	if (!r)
		r = q_barrier(q);
	if (!r) {
		q->incompat &= ~QCOW2_INCOMPAT_DIRTY;
		put_be64(be, q->incompat);
		r = q_pwrite(q, be, sizeof(be), QH_INCOMPAT);
	}
	if (!r)
		r = q_barrier(q);
	if (r)
		return errmsg(r, err, errlen, "%s: repairing the refcounts of a dirty image: %s",
			      q->path, strerror(-r));
	log_warn("%s was not closed cleanly (dirty bit, lazy refcounts): refcounts rebuilt,"
		 " %llu corrected", q->path, (unsigned long long)fixed);
	return 0;
}

static int qcow2_load(struct qcow2 *q, struct qcow2_chain *chain, char *err, size_t errlen)
{
	uint8_t small[QH_V3_LENGTH];
	uint8_t *hdr = NULL;
	uint64_t cs, backing_off = 0, hlen, ext, l1_bytes, needed, shift;
	uint32_t backing_len = 0, rt_clusters;
	char backing_fmt[16] = "";
	enum blk_format bfmt = BLK_FORMAT_AUTO;
	int r;

	if (q->file_size < QH_V2_LENGTH)
		return errmsg(-EINVAL, err, errlen, "%s: too short to be a qcow2 image", q->path);
	r = q_pread(q, small, sizeof(small), 0);
	if (r)
		return errmsg(r, err, errlen, "%s: cannot read the header: %s", q->path,
			      strerror(-r));
	if (memcmp(small, BLK_QCOW2_MAGIC, 4))
		return errmsg(-EINVAL, err, errlen, "%s: not a qcow2 image (bad magic)", q->path);
	q->version = get_be32(small + QH_VERSION);
	if (q->version != 2 && q->version != 3)
		return errmsg(-ENOTSUP, err, errlen, "%s: unsupported qcow2 version %u", q->path,
			      q->version);
	q->cluster_bits = get_be32(small + QH_CLUSTER_BITS);
	if (q->cluster_bits < 9 || q->cluster_bits > 21)
		return errmsg(-EINVAL, err, errlen,
			      "%s: cluster_bits %u out of range (9 to 21)", q->path,
			      q->cluster_bits);
	cs = q->cluster_size = 1ull << q->cluster_bits;
	q->l2_bits = q->cluster_bits - 3;

	hdr = malloc(cs);
	if (!hdr)
		return errmsg(-ENOMEM, err, errlen, "%s: out of memory", q->path);
	r = q_pread(q, hdr, cs, 0);
	if (r) {
		errmsg(r, err, errlen, "%s: cannot read the header: %s", q->path, strerror(-r));
		goto out;
	}

	q->size = get_be64(hdr + QH_SIZE);
	if (q->size > QCOW2_MAX_SIZE) {
		r = errmsg(-EINVAL, err, errlen, "%s: absurd virtual size %llu", q->path,
			   (unsigned long long)q->size);
		goto out;
	}
	if (get_be32(hdr + QH_CRYPT)) {
		r = errmsg(-ENOTSUP, err, errlen, "%s: encrypted qcow2 images are not supported",
			   q->path);
		goto out;
	}
	q->nb_snapshots = get_be32(hdr + QH_NB_SNAPSHOTS);
	if (q->version == 2) {
		q->refcount_order = 4;
		hlen = QH_V2_LENGTH;
	} else {
		uint64_t unknown;

		q->incompat = get_be64(hdr + QH_INCOMPAT);
		q->refcount_order = get_be32(hdr + QH_REFCOUNT_ORDER);
		hlen = get_be32(hdr + QH_HEADER_LENGTH);
		if (hlen < QH_V3_LENGTH || hlen > cs) {
			r = errmsg(-EINVAL, err, errlen, "%s: header_length %llu out of range",
				   q->path, (unsigned long long)hlen);
			goto out;
		}
		if (q->refcount_order > 6) {
			r = errmsg(-EINVAL, err, errlen, "%s: refcount_order %u out of range (0 to 6)",
				   q->path, q->refcount_order);
			goto out;
		}
		unknown = q->incompat & ~QCOW2_INCOMPAT_KNOWN;
		if (unknown) {
			char msg[512] = "", name[64];
			size_t used = 0;

			for (unsigned bit = 0; bit < 64; bit++) {
				if (!(unknown & (1ull << bit)))
					continue;
				feature_name(hdr, hlen, cs, bit, name, sizeof(name));
				used += (size_t)snprintf(msg + used, used < sizeof(msg) ?
							 sizeof(msg) - used : 0,
							 "%sbit %u (%s)", used ? ", " : "", bit,
							 name);
				if (used >= sizeof(msg))
					break;
			}
			r = errmsg(-ENOTSUP, err, errlen,
				   "%s: unsupported qcow2 incompatible features: %s", q->path, msg);
			goto out;
		}
		if (hlen > QH_COMPRESSION_TYPE)
			q->compression = hdr[QH_COMPRESSION_TYPE];
		if (q->compression > QCOW2_COMPRESSION_ZSTD ||
		    (q->compression != 0) != !!(q->incompat & QCOW2_INCOMPAT_COMPRESSION)) {
			r = errmsg(-ENOTSUP, err, errlen,
				   "%s: unsupported compression type %u", q->path, q->compression);
			goto out;
		}
		if ((q->incompat & QCOW2_INCOMPAT_CORRUPT) && !q->readonly) {
			r = errmsg(-EUCLEAN, err, errlen,
				   "%s is marked corrupt: open it read-only, or repair it with"
				   " 'qemu-img check -r all'", q->path);
			goto out;
		}
		if (q->incompat & QCOW2_INCOMPAT_CORRUPT)
			log_warn("%s is marked corrupt; reading it anyway (read-only)", q->path);
	}
	q->rb_bits = q->cluster_bits + 3 - q->refcount_order;

	/* L1 table. */
	q->l1_size = get_be32(hdr + QH_L1_SIZE);
	q->l1_offset = get_be64(hdr + QH_L1_OFFSET);
	l1_bytes = (uint64_t)q->l1_size * 8;
	shift = q->cluster_bits + q->l2_bits;
	needed = (q->size >> shift) + !!(q->size & ((1ull << shift) - 1));
	if (l1_bytes > QCOW2_MAX_L1_BYTES) {
		r = errmsg(-EINVAL, err, errlen, "%s: L1 table of %u entries is too large", q->path,
			   q->l1_size);
		goto out;
	}
	if (q->l1_size < needed) {
		r = errmsg(-EINVAL, err, errlen,
			   "%s: L1 table of %u entries cannot map the %llu-byte disk", q->path,
			   q->l1_size, (unsigned long long)q->size);
		goto out;
	}
	if (q->l1_size && (q->l1_offset & (cs - 1) || q->l1_offset < cs ||
			   q->l1_offset > q->file_size || l1_bytes > q->file_size - q->l1_offset)) {
		r = errmsg(-EINVAL, err, errlen,
			   "%s: L1 table at %#llx (%llu bytes) is misaligned, overlaps the header"
			   " or lies past the end of the file (%llu bytes)", q->path,
			   (unsigned long long)q->l1_offset, (unsigned long long)l1_bytes,
			   (unsigned long long)q->file_size);
		goto out;
	}

	/* Refcount table. */
	q->rt_offset = get_be64(hdr + QH_RT_OFFSET);
	rt_clusters = get_be32(hdr + QH_RT_CLUSTERS);
	q->rt_bytes = (uint64_t)rt_clusters * cs;
	if (!rt_clusters || q->rt_bytes > QCOW2_MAX_REFTABLE_BYTES) {
		r = errmsg(-EINVAL, err, errlen,
			   "%s: refcount table of %u clusters is empty or too large (at most %u"
			   " bytes)", q->path, rt_clusters, QCOW2_MAX_REFTABLE_BYTES);
		goto out;
	}
	if (q->rt_offset & (cs - 1) || q->rt_offset < cs || q->rt_offset > q->file_size ||
	    q->rt_bytes > q->file_size - q->rt_offset) {
		r = errmsg(-EINVAL, err, errlen,
			   "%s: refcount table at %#llx (%llu bytes) is misaligned, overlaps the"
			   " header or lies past the end of the file (%llu bytes)", q->path,
			   (unsigned long long)q->rt_offset, (unsigned long long)q->rt_bytes,
			   (unsigned long long)q->file_size);
		goto out;
	}
	if (ranges_overlap(q->l1_offset, l1_bytes, q->rt_offset, q->rt_bytes)) {
		r = errmsg(-EINVAL, err, errlen, "%s: the L1 table and the refcount table overlap",
			   q->path);
		goto out;
	}
	q->rt_entries = (uint32_t)(q->rt_bytes / 8);

	/* Header extensions: read, never rewritten. */
	ext = hlen;
	while (ext + 8 <= cs) {
		uint32_t type = get_be32(hdr + ext), elen = get_be32(hdr + ext + 4);

		if (type == QCOW2_EXT_END)
			break;
		if (elen > cs - ext - 8) {
			r = errmsg(-EINVAL, err, errlen,
				   "%s: header extension %#x at %llu overruns the header cluster",
				   q->path, type, (unsigned long long)ext);
			goto out;
		}
		if (type == QCOW2_EXT_BACKING_FORMAT) {
			snprintf(backing_fmt, sizeof(backing_fmt), "%.*s",
				 (int)(elen < sizeof(backing_fmt) - 1 ? elen : sizeof(backing_fmt) - 1),
				 (const char *)hdr + ext + 8);
			if (elen >= sizeof(backing_fmt) || strlen(backing_fmt) != elen) {
				r = errmsg(-EINVAL, err, errlen, "%s: malformed backing format",
					   q->path);
				goto out;
			}
		}
		ext += 8 + round_up(elen, 8);
	}

	/* Backing file name. */
	backing_off = get_be64(hdr + QH_BACKING_OFFSET);
	if (backing_off) {
		backing_len = get_be32(hdr + QH_BACKING_SIZE);
		if (!backing_len || backing_len > QCOW2_MAX_BACKING_NAME ||
		    backing_off < QH_V2_LENGTH || backing_off > cs || backing_len > cs - backing_off ||
		    backing_off + backing_len > q->file_size ||
		    memchr(hdr + backing_off, 0, backing_len)) {
			r = errmsg(-EINVAL, err, errlen,
				   "%s: backing file name at %llu (%u bytes) is out of bounds",
				   q->path, (unsigned long long)backing_off, backing_len);
			goto out;
		}
		memcpy(q->backing_name, hdr + backing_off, backing_len);
		q->backing_name[backing_len] = 0;
		snprintf(q->backing_fmt, sizeof(q->backing_fmt), "%s", backing_fmt);
		if (backing_fmt[0]) {
			if (!strcmp(backing_fmt, "raw")) {
				bfmt = BLK_FORMAT_RAW;
			} else if (!strcmp(backing_fmt, "qcow2")) {
				bfmt = BLK_FORMAT_QCOW2;
			} else {
				r = errmsg(-ENOTSUP, err, errlen,
					   "%s: unsupported backing file format '%s'", q->path,
					   backing_fmt);
				goto out;
			}
		}
		if (blk_backing_path(q->path, q->backing_name, q->backing_path,
				     sizeof(q->backing_path))) {
			r = errmsg(-ENAMETOOLONG, err, errlen, "%s: backing file name too long",
				   q->path);
			goto out;
		}
	}
	if (chain->header_only) {
		r = 0;
		goto out;
	}

	/* Tables into memory. */
	q->l1 = calloc(q->l1_size ? q->l1_size : 1, sizeof(*q->l1));
	q->rt = calloc(q->rt_entries, sizeof(*q->rt));
	q->l2c_n = (unsigned)(QCOW2_L2_CACHE_BYTES / cs);
	if (q->l2c_n > QCOW2_L2_CACHE_MAX)
		q->l2c_n = QCOW2_L2_CACHE_MAX;
	if (q->l2c_n < 4)
		q->l2c_n = 4;
	q->l2c = calloc(q->l2c_n, sizeof(*q->l2c));
	q->dbuf = malloc(cs);
	q->zbuf = malloc(2 * cs);
	/* Aligned: data I/O may go straight to an O_DIRECT descriptor. */
	if (posix_memalign((void **)&q->cowbuf, QCOW2_DIO_ALIGN, cs))
		q->cowbuf = NULL;
	if (!q->l1 || !q->rt || !q->l2c || !q->dbuf || !q->zbuf || !q->cowbuf) {
		r = errmsg(-ENOMEM, err, errlen, "%s: out of memory", q->path);
		goto out;
	}
	for (unsigned i = 0; i < q->l2c_n; i++) {
		q->l2c[i].data = malloc(cs);
		if (!q->l2c[i].data) {
			r = errmsg(-ENOMEM, err, errlen, "%s: out of memory", q->path);
			goto out;
		}
	}
	r = q_pread(q, q->l1, l1_bytes, q->l1_offset);
	if (!r)
		r = q_pread(q, q->rt, q->rt_bytes, q->rt_offset);
	if (r) {
		errmsg(r, err, errlen, "%s: cannot read the metadata tables: %s", q->path,
		       strerror(-r));
		goto out;
	}
	for (uint32_t i = 0; i < q->l1_size; i++)
		q->l1[i] = be64toh(q->l1[i]);
	for (uint32_t i = 0; i < q->rt_entries; i++)
		q->rt[i] = be64toh(q->rt[i]);
	q->alloc_next = round_up(q->file_size, cs);
	r = tables_rebuild(q);
	if (r) {
		errmsg(r, err, errlen, "%s: out of memory", q->path);
		goto out;
	}

	/* Unknown autoclear features describe data we will not keep up to
	 * date (bitmaps...): the spec says to clear them before writing. */
	if (q->version >= 3 && !q->readonly && get_be64(hdr + QH_AUTOCLEAR)) {
		uint8_t zero[8] = { 0 };

		log_warn("%s: clearing autoclear features %#llx (not maintained by vmrun)",
			 q->path, (unsigned long long)get_be64(hdr + QH_AUTOCLEAR));
		r = q_pwrite(q, zero, sizeof(zero), QH_AUTOCLEAR);
		if (r) {
			errmsg(r, err, errlen, "%s: cannot update the header: %s", q->path,
			       strerror(-r));
			goto out;
		}
	}

	if ((q->incompat & QCOW2_INCOMPAT_DIRTY) && !q->readonly) {
		r = qcow2_repair(q, err, errlen);
		if (r)
			goto out;
	}

	if (backing_off && !chain->top_only) {
		if (chain->n > QCOW2_MAX_CHAIN) {
			r = errmsg(-ELOOP, err, errlen,
				   "%s: backing chain deeper than %u images", q->path,
				   QCOW2_MAX_CHAIN);
			goto out;
		}
		r = qimg_open(q->backing_path, true, bfmt, chain, &q->backing, err, errlen);
		if (r)
			goto out;
	}
	r = 0;
out:
	free(hdr);
	return r;
}

static int qimg_open(const char *path, bool readonly, enum blk_format fmt,
		     struct qcow2_chain *chain, struct qcow2 **out, char *err, size_t errlen)
{
	struct qcow2 *q;
	struct stat st;
	off_t end;
	int r;

	*out = NULL;
	q = calloc(1, sizeof(*q));
	if (!q)
		return errmsg(-ENOMEM, err, errlen, "%s: out of memory", path);
	q->fd = -1;
	q->readonly = readonly;
	q->path = strdup(path);
	if (!q->path) {
		r = errmsg(-ENOMEM, err, errlen, "%s: out of memory", path);
		goto fail;
	}
	/* O_NONBLOCK only so that a FIFO cannot hang the open; refused below. */
	q->fd = open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK);
	if (q->fd < 0) {
		r = errmsg(-errno, err, errlen, "cannot open %s%s: %s",
			   chain->n ? "backing file " : "", path, strerror(errno));
		goto fail;
	}
	if (fstat(q->fd, &st) < 0) {
		r = errmsg(-errno, err, errlen, "cannot stat %s: %s", path, strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		r = errmsg(-EINVAL, err, errlen, "%s is not a regular file or block device", path);
		goto fail;
	}
	if (fcntl(q->fd, F_SETFL, fcntl(q->fd, F_GETFL) & ~O_NONBLOCK) < 0) {
		r = errmsg(-errno, err, errlen, "%s: fcntl: %s", path, strerror(errno));
		goto fail;
	}
	for (unsigned i = 0; i < chain->n; i++) {
		if (chain->dev[i] == st.st_dev && chain->ino[i] == st.st_ino) {
			r = errmsg(-ELOOP, err, errlen, "%s: backing chain loop (%s is already in"
				   " the chain)", path, path);
			goto fail;
		}
	}
	chain->dev[chain->n] = st.st_dev;
	chain->ino[chain->n] = st.st_ino;
	chain->n++;
	/* flock and QEMU's lock bytes: a writer's on a writable top, a
	 * reader's on the rest (include/vmrun/image_lock.h). */
	if (!(chain->n == 1 && chain->no_lock_top)) {
		r = image_lock_change(q->fd, path, BLK_LOCK_NONE,
				      readonly ? BLK_LOCK_SHARED : BLK_LOCK_EXCLUSIVE, err, errlen);
		if (r)
			goto fail;
	}
	end = lseek(q->fd, 0, SEEK_END);
	if (end < 0) {
		r = errmsg(-errno, err, errlen, "cannot size %s: %s", path, strerror(errno));
		goto fail;
	}
	q->file_size = (uint64_t)end;
	if (fmt == BLK_FORMAT_AUTO) {
		char magic[4] = { 0 };

		r = q_pread(q, magic, sizeof(magic), 0);
		if (r) {
			errmsg(r, err, errlen, "cannot read %s: %s", path, strerror(-r));
			goto fail;
		}
		fmt = memcmp(magic, BLK_QCOW2_MAGIC, 4) ? BLK_FORMAT_RAW : BLK_FORMAT_QCOW2;
	}
	if (fmt == BLK_FORMAT_RAW) {
		q->raw = true;
		q->size = q->file_size;
		q->cluster_size = 1ull << 16;
	} else {
		r = qcow2_load(q, chain, err, errlen);
		if (r)
			goto fail;
	}
	*out = q;
	return 0;
fail:
	qimg_free(q);
	return r;
}

/* cache=none: the O_DIRECT data handle of the top image, where it can be
 * had.  Data and metadata of one page must never be split between the page
 * cache and O_DIRECT (a write-back of the page would overwrite the data
 * with its stale copy), so clusters smaller than a page keep to the page
 * cache, as does a filesystem that refuses O_DIRECT.  Backing files are
 * read through the page cache, which they share with other overlays. */
static void qcow2_open_data(struct blk *b, const char *path, const struct blk_open_opts *opts,
			    struct evloop *loop)
{
	struct qcow2 *q = b->qcow2;
	struct blk_open_opts dopts = {
		.readonly = opts->readonly, .cache = BLK_CACHE_NONE, .no_aio = opts->no_aio,
	};
	long page = sysconf(_SC_PAGESIZE);
	char why[PATH_MAX + 128];

	if (q->cluster_size < (uint64_t)(page > 0 ? page : 4096)) {
		log_warn("%s: cache=none needs clusters of at least %ld bytes (this image has %llu);"
			 " using the page cache", path, page, (unsigned long long)q->cluster_size);
		return;
	}
	if (blk_open_data_file(path, &dopts, loop, &q->data, why, sizeof(why))) {
		log_warn("%s; cache=none falls back to the page cache", why);
		q->data = NULL;
		return;
	}
	if (!q->data->direct) {
		/* raw_open_fd() said why (the filesystem refuses O_DIRECT). */
		blk_close(q->data);
		q->data = NULL;
		return;
	}
	/* Guests write 512-byte sectors: every data write must be able to
	 * take O_DIRECT (q_data_io()). */
	if (q->data->block_size > 512) {
		log_warn("%s: O_DIRECT here needs %u-byte aligned I/O, guests write 512-byte"
			 " sectors; cache=none falls back to the page cache", path,
			 q->data->block_size);
		blk_close(q->data);
		q->data = NULL;
	}
}

int qcow2_open(struct blk *b, const char *path, const struct blk_open_opts *opts,
	       struct evloop *loop, char *err, size_t errlen)
{
	struct qcow2_chain chain = { .no_lock_top = opts->no_lock, .top_only = opts->top_only };
	int r;

	b->ops = &qcow2_ops;
	r = qimg_open(path, opts->readonly, BLK_FORMAT_QCOW2, &chain, &b->qcow2, err, errlen);
	if (r)
		return r;
	b->qcow2->unsafe = opts->cache == BLK_CACHE_UNSAFE;
	if (!opts->no_lock)
		b->lock = opts->readonly ? BLK_LOCK_SHARED : BLK_LOCK_EXCLUSIVE;
	if (opts->cache == BLK_CACHE_NONE)
		qcow2_open_data(b, path, opts, loop);
	b->block_size = 512;
	b->mem_align = 512;
	/* Whole sectors only, as QEMU sees it: a tail shorter than 512 bytes
	 * (qemu-img never makes one) is not addressable. */
	b->size = b->qcow2->size & ~511ull;
	/* Discard frees whole clusters through the v3 zero flag; v2 has none. */
	b->discard_ok = b->qcow2->version >= 3;
	b->zero_ok = true;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Inspection and creation (`vmrun img`)                               */

int blk_backing_path(const char *image, const char *name, char *out, size_t outlen)
{
	const char *slash = strrchr(image, '/');
	int n;

	if (name[0] == '/' || !slash)
		n = snprintf(out, outlen, "%s", name);
	else
		n = snprintf(out, outlen, "%.*s/%s", (int)(slash - image), image, name);
	return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

/* The header facts of @q (one image of a chain) for struct blk_image_info. */
static void qimg_info(const struct qcow2 *q, struct blk_image_info *info)
{
	memset(info, 0, sizeof(*info));
	info->format = q->raw ? BLK_FORMAT_RAW : BLK_FORMAT_QCOW2;
	info->size = q->size;
	info->file_size = q->file_size;
	if (q->raw)
		return;
	info->version = q->version;
	info->cluster_bits = q->cluster_bits;
	info->refcount_bits = 1u << q->refcount_order;
	info->incompatible = q->incompat;
	info->dirty = q->incompat & QCOW2_INCOMPAT_DIRTY;
	info->corrupt = q->incompat & QCOW2_INCOMPAT_CORRUPT;
	info->compression = q->compression;
	info->snapshots = q->nb_snapshots;
	info->has_backing = q->backing_name[0] != 0;
	snprintf(info->backing, sizeof(info->backing), "%s", q->backing_name);
	snprintf(info->backing_format, sizeof(info->backing_format), "%s", q->backing_fmt);
	snprintf(info->backing_path, sizeof(info->backing_path), "%s", q->backing_path);
}

int blk_image_info(const char *path, enum blk_format format, struct blk_image_info *info,
		   char *err, size_t errlen)
{
	struct qcow2_chain chain = { .no_lock_top = true, .top_only = true, .header_only = true };
	struct qcow2 *q;
	int r;

	if (format != BLK_FORMAT_AUTO && format != BLK_FORMAT_RAW && format != BLK_FORMAT_QCOW2)
		return errmsg(-EINVAL, err, errlen, "%s: unknown image format %d", path,
			      (int)format);
	r = qimg_open(path, true, format, &chain, &q, err, errlen);
	if (r)
		return r;
	qimg_info(q, info);
	qimg_free(q);
	return 0;
}

void qcow2_get_info(const struct blk *b, struct blk_image_info *info)
{
	qimg_info(b->qcow2, info);
}

/* The kind of the guest cluster at @off whose L2 entry is @entry, checked
 * as qimg_read() checks it before reading. */
static int entry_extent(struct qcow2 *q, uint64_t off, uint64_t entry, enum blk_extent *kind)
{
	uint64_t cs = q->cluster_size, host = entry & QCOW2_OFFSET_MASK;

	if (entry & QCOW2_OFLAG_COMPRESSED) {
		uint64_t coff, clen, first, count;

		compressed_range(q, entry, &coff, &clen, &first, &count);
		if (coff < cs || coff >= q->file_size) {
			q_corrupt(q, "compressed cluster at %#llx", (unsigned long long)coff);
			return -EIO;
		}
		*kind = BLK_EXTENT_DATA;
	} else if (q->version >= 3 && (entry & QCOW2_OFLAG_ZERO)) {
		*kind = BLK_EXTENT_ZERO;
	} else if (!host) {
		*kind = BLK_EXTENT_BELOW;
	} else {
		if (host & (cs - 1) || host < cs || host >= q->file_size) {
			q_corrupt(q, "L2 entry for guest offset %#llx points to %#llx",
				  (unsigned long long)off, (unsigned long long)host);
			return -EIO;
		}
		*kind = BLK_EXTENT_DATA;
	}
	return 0;
}

int qcow2_top_extent(struct blk *b, uint64_t offset, uint64_t max, enum blk_extent *kind,
		     uint64_t *len)
{
	struct qcow2 *q = b->qcow2;
	uint64_t cs = q->cluster_size, done = 0;

	while (done < max) {
		uint64_t off = offset + done, step = cs - (off & (cs - 1)), entry, l2_off;
		enum blk_extent k;
		int r = l2_lookup(q, off, &entry, &l2_off);

		if (!r)
			r = entry_extent(q, off, entry, &k);
		if (r)
			return r;
		if (done && k != *kind)
			break;
		*kind = k;
		done += step < max - done ? step : max - done;
	}
	*len = done;
	return 0;
}

static void put_be16(uint8_t *p, uint16_t v)
{
	v = htobe16(v);
	memcpy(p, &v, sizeof(v));
}

static void put_be32(uint8_t *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, sizeof(v));
}

int blk_qcow2_create(int fd, uint64_t size, const char *backing, const char *backing_format)
{
	const unsigned bits = 16;
	const uint64_t cs = 1ull << bits;
	uint64_t l1_entries, l1_clusters, total, off;
	uint8_t *c;
	int r;

	if (!size || size % 512 || size > BLK_QCOW2_CREATE_MAX)
		return -EINVAL;
	if (backing && (!*backing || strlen(backing) > QCOW2_MAX_BACKING_NAME ||
			!backing_format || strlen(backing_format) >= 16))
		return -EINVAL;
	/* Each L2 table maps cs / 8 clusters. */
	l1_entries = (size + (cs << (bits - 3)) - 1) >> (bits + bits - 3);
	l1_clusters = (l1_entries * 8 + cs - 1) / cs;
	if (!l1_clusters)
		l1_clusters = 1;
	/* Header, refcount table, refcount block, L1 table. */
	total = 3 + l1_clusters;
	c = calloc(1, cs);
	if (!c)
		return -ENOMEM;
	memcpy(c + QH_MAGIC, BLK_QCOW2_MAGIC, 4);
	put_be32(c + QH_VERSION, 3);
	put_be32(c + QH_CLUSTER_BITS, bits);
	put_be64(c + QH_SIZE, size);
	put_be32(c + QH_L1_SIZE, (uint32_t)l1_entries);
	put_be64(c + QH_L1_OFFSET, 3 * cs);
	put_be64(c + QH_RT_OFFSET, 1 * cs);
	put_be32(c + QH_RT_CLUSTERS, 1);
	put_be32(c + QH_REFCOUNT_ORDER, 4);
	put_be32(c + QH_HEADER_LENGTH, QH_V3_LENGTH);
	off = QH_V3_LENGTH;
	if (backing) {
		size_t blen = strlen(backing), flen = strlen(backing_format);

		put_be32(c + off, QCOW2_EXT_BACKING_FORMAT);
		put_be32(c + off + 4, (uint32_t)flen);
		memcpy(c + off + 8, backing_format, flen);
		off += 8 + round_up(flen, 8);
		off += 8; /* the end-of-extensions marker: zeroes */
		put_be64(c + QH_BACKING_OFFSET, off);
		put_be32(c + QH_BACKING_SIZE, (uint32_t)blen);
		memcpy(c + off, backing, blen);
	}
	r = fd_pwrite_full(fd, c, cs, 0);
	if (r)
		goto out;
	/* The refcount table: its one block at cluster 2. */
	memset(c, 0, cs);
	put_be64(c, 2 * cs);
	r = fd_pwrite_full(fd, c, cs, cs);
	if (r)
		goto out;
	/* The refcount block: every cluster of the file counted once. */
	memset(c, 0, cs);
	for (uint64_t i = 0; i < total; i++)
		put_be16(c + 2 * i, 1);
	r = fd_pwrite_full(fd, c, cs, 2 * cs);
	if (r)
		goto out;
	/* The L1 table: empty, as the file's tail of zeroes. */
	if (ftruncate(fd, (off_t)(total * cs)) < 0) {
		r = -errno;
		goto out;
	}
	if (fsync(fd) < 0)
		r = -errno;
out:
	free(c);
	return r;
}

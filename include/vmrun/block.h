/* Block backends (src/block/): what a disk device model reads and writes.
 *
 * One interface for every image format: requests at byte offsets with
 * asynchronous completion, submitted and completed on the event loop thread.
 * The raw backend (src/block/raw.c) serves regular files and block devices
 * through Linux AIO (libaio: io_submit with a real queue depth, completions
 * signalled on an eventfd the event loop watches), or through
 * preadv/pwritev where AIO cannot be set up.  The qcow2 backend
 * (src/block/qcow2.c) serves qcow2 v2/v3 images and their backing chains
 * through the same calls: metadata, allocation and backing files with
 * synchronous file I/O (its done() callbacks still run later, from the
 * loop), and with cache=none the reads and overwrites of allocated
 * clusters through O_DIRECT and Linux AIO. */
#ifndef VMRUN_BLOCK_H
#define VMRUN_BLOCK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

struct evloop;
struct blk;

enum blk_op {
	BLK_READ,
	BLK_WRITE,
	BLK_FLUSH,        /* every write completed before it is durable */
	BLK_DISCARD,      /* the range may read back as anything; best effort */
	BLK_WRITE_ZEROES, /* the range reads back as zeroes */
};

enum blk_cache {
	BLK_CACHE_WRITEBACK, /* page cache; FLUSH is fdatasync (default) */
	BLK_CACHE_NONE,      /* O_DIRECT (warns and falls back where refused); FLUSH is fdatasync */
	BLK_CACHE_UNSAFE,    /* page cache; FLUSH completes at once without syncing */
};

/* Image format.  AUTO probes: a file that starts with the qcow2 magic is
 * qcow2, anything else raw.  A raw image whose format was probed refuses
 * guest writes that would put the qcow2 magic into its first bytes, so a
 * guest can never turn its raw disk into a qcow2 image (with a backing
 * file of the guest's choosing) at the next start.  RAW given explicitly
 * refuses a file that starts with the qcow2 magic and names a backing file
 * (a live snapshot's overlay under a raw image's name). */
enum blk_format {
	BLK_FORMAT_AUTO,
	BLK_FORMAT_RAW,
	BLK_FORMAT_QCOW2,
};

struct blk_open_opts {
	bool readonly;
	enum blk_cache cache;
	bool no_aio; /* preadv/pwritev even where libaio works (tests, fallback) */
	enum blk_format format;
	/* Take no lock on the image (the top of a qcow2 chain): an incoming
	 * migration's first look at a disk the source still holds.  Nothing
	 * may be written through such a handle. */
	bool no_lock;
	/* Open the top image alone: its backing file is named by
	 * blk_get_info() but neither opened nor locked, and what the top does
	 * not hold reads as zeroes.  Read-only handles only (-EINVAL
	 * otherwise).  For `vmrun img commit`, which copies what
	 * blk_top_extent() finds in the top and writes the backing file
	 * through a handle of its own. */
	bool top_only;
};

/* One request.  The caller owns the memory and must keep it (and @iov and
 * the buffers) alive until @done runs. */
struct blk_req {
	enum blk_op op;
	uint64_t offset;         /* bytes */
	uint64_t len;            /* bytes: DISCARD/WRITE_ZEROES; READ/WRITE: the iov total */
	const struct iovec *iov; /* READ/WRITE */
	unsigned iovcnt;
	/* Called once, on the event loop thread, never from inside
	 * blk_submit(): @result is 0, or -errno (-EIO, -ENOSPC, -EROFS, ...;
	 * a short read past the end of the image fills zeroes and succeeds). */
	void (*done)(struct blk_req *req, int result);
	void *opaque;
	/* Private to the backend. */
	struct blk_req *next;
	int result;
	uint64_t priv[8];
};

/* Open @path (a regular file or a block device) and attach its completion
 * source to @loop.  *@out is the new backend.  @opts may be NULL (all
 * defaults: writable, writeback, AIO, format AUTO).  Returns 0, or -errno
 * with a one-line reason naming the file in @err.  qcow2 refusals include
 * -ENOTSUP (unsupported features, named), -EUCLEAN (a corrupt image opened
 * writable, or a dirty one whose refcounts cannot be rebuilt here: a
 * writable open rebuilds them), -ELOOP (backing chain loop, or deeper than 16), -EINVAL
 * (a header or table that does not fit the file), -ENOENT (a missing
 * backing file, named).  Backing files are always opened read-only. */
int blk_open(const char *path, const struct blk_open_opts *opts, struct evloop *loop,
	     struct blk **out, char *err, size_t errlen) __attribute__((warn_unused_result));

/* The format in use (never AUTO once open). */
enum blk_format blk_format(const struct blk *b);

/* "qcow2" or "raw": how images, messages and the state stream name @f. */
const char *blk_format_name(enum blk_format f);

/* Size of the image in bytes. */
uint64_t blk_size(const struct blk *b);

/* Smallest I/O unit the backend accepts at any offset (bytes; 512 unless
 * O_DIRECT on a device with larger sectors), and whether it was opened
 * read-only, can discard, and uses Linux AIO (else preadv/pwritev).
 * qcow2: 512; discard only on v3 images (whole clusters become zero
 * clusters and are freed); blk_uses_aio() false (its cache=none data
 * handle uses AIO inside). */
unsigned blk_block_size(const struct blk *b);
bool blk_readonly(const struct blk *b);
bool blk_can_discard(const struct blk *b);
bool blk_uses_aio(const struct blk *b);

/* Queue @req.  Returns 0 (@req->done will run later), or -errno when it was
 * refused at once (then @done never runs): -EINVAL for a range past the
 * image end or an offset/length not a multiple of 512, -EROFS for a write
 * to a read-only image. */
int blk_submit(struct blk *b, struct blk_req *req) __attribute__((warn_unused_result));

/* One request, waited for (blocking the caller, which must be the event
 * loop's thread or run while the loop does not): @buf/@len as one iovec for
 * READ/WRITE, the range only for DISCARD/WRITE_ZEROES, nothing for FLUSH.
 * Other requests in flight complete (their done() runs) meanwhile.
 * Returns the request's result: 0 or -errno. */
int blk_io_wait(struct blk *b, enum blk_op op, uint64_t offset, void *buf, uint64_t len)
	__attribute__((warn_unused_result));

enum blk_lock {
	BLK_LOCK_EXCLUSIVE, /* the writer's lock, as blk_open() takes it */
	BLK_LOCK_SHARED,    /* the reader's: read-only images, backing files */
	BLK_LOCK_NONE,      /* released */
};

/* Change the lock on the image file (the top of a qcow2 chain): flock and
 * the byte-range locks QEMU understands, together (include/vmrun/
 * image_lock.h; EXCLUSIVE is QEMU's writer, SHARED its reader).  SHARED:
 * a live snapshot's new overlay opens this image as its backing file while
 * this handle is still open.  NONE: a migration's source hands the image
 * to the destination (every lock dropped, QEMU's too), EXCLUSIVE takes it
 * back if that fails.  The caller writes nothing unless the lock is
 * EXCLUSIVE.  Returns 0, -EBUSY when another process (QEMU or vmrun) holds
 * a lock that conflicts (the handle keeps the lock it had), or -errno; a
 * filesystem without locks counts as success (as at open).  A read-only
 * handle is left as it is. */
int blk_set_lock(struct blk *b, enum blk_lock mode) __attribute__((warn_unused_result));

/* What an image's header says, as the block layer's one qcow2 parser reads
 * and checks it (`vmrun img` shows it and creates, snapshots and commits
 * images with it). */
struct blk_image_info {
	enum blk_format format;    /* RAW or QCOW2 */
	uint64_t size;             /* virtual size in bytes (raw: the file size) */
	uint64_t file_size;        /* bytes in the file (a block device: its size) */
	unsigned version;          /* qcow2: 2 or 3 */
	unsigned cluster_bits;     /* qcow2 */
	unsigned refcount_bits;    /* qcow2: 1 to 64 */
	uint64_t incompatible;     /* qcow2 v3: incompatible feature bits */
	bool dirty, corrupt;       /* qcow2 v3: those two bits */
	unsigned compression;      /* qcow2: 0 deflate, 1 zstd */
	uint32_t snapshots;        /* qcow2: internal snapshots */
	bool has_backing;
	char backing[1024];        /* the backing file as the header names it */
	char backing_format[16];   /* from the header extension; "" when absent */
	char backing_path[4096];   /* @backing, relative names resolved against
				    * the image's directory */
};

/* The header of the image file @path, read without a lock and without
 * opening its backing file: @format AUTO probes (the qcow2 magic), RAW
 * takes the file as raw, QCOW2 requires qcow2.  Every check blk_open()
 * makes on the header, the table placement and the backing file name is
 * made; the tables themselves are not read.  FIFOs and other special files
 * are refused without blocking.  Returns 0, or -errno with a one-line
 * reason naming the file in @err. */
int blk_image_info(const char *path, enum blk_format format, struct blk_image_info *info,
		   char *err, size_t errlen) __attribute__((warn_unused_result));

/* Where the backing file @name of the image at @image lies, into @out
 * (@outlen bytes): @name itself when absolute, else relative to @image's
 * directory, as QEMU resolves it.  0, or -ENAMETOOLONG. */
int blk_backing_path(const char *image, const char *name, char *out, size_t outlen)
	__attribute__((warn_unused_result));

/* The same facts of the top image of the open @b. */
void blk_get_info(const struct blk *b, struct blk_image_info *info);

/* What the top image of a chain holds at a guest offset. */
enum blk_extent {
	BLK_EXTENT_DATA,  /* data clusters (plain or compressed) of the top image */
	BLK_EXTENT_ZERO,  /* clusters the top image marks as reading zeroes (qcow2 v3) */
	BLK_EXTENT_BELOW, /* not in the top image: the backing file's, or zeroes */
};

/* The extent of @b's top image starting at @offset (a multiple of 512,
 * below blk_size()): its kind in *@kind and its length in *@len, at most
 * @max bytes and never past the end of the image; the whole run of
 * clusters of one kind.  A raw image is DATA throughout.  Every mapping
 * entry it passes is checked as a read would check it: -EIO for one that
 * points outside the file or onto metadata (logged), -EINVAL for a bad
 * offset.  Synchronous; call it where blk_io_wait() may be called. */
int blk_top_extent(struct blk *b, uint64_t offset, uint64_t max, enum blk_extent *kind,
		   uint64_t *len) __attribute__((warn_unused_result));

/* Write a new, empty qcow2 v3 image of @size bytes (a multiple of 512, at
 * most BLK_QCOW2_CREATE_MAX) to the empty file @fd: 64 KiB clusters,
 * 16-bit refcounts, QEMU's layout (header, refcount table, one refcount
 * block, L1 table), then fsync.  @backing NULL: no backing file; else
 * its name as the header records it (at most 1023 bytes) and
 * @backing_format ("raw" or "qcow2").  Returns 0 or -errno. */
#define BLK_QCOW2_CREATE_MAX (1ull << 51)
int blk_qcow2_create(int fd, uint64_t size, const char *backing, const char *backing_format)
	__attribute__((warn_unused_result));

/* Requests submitted and not yet completed. */
unsigned blk_inflight(const struct blk *b);

/* Wait (blocking the caller) until every submitted request has completed
 * and its @done has run.  For device reset and shutdown. */
void blk_drain(struct blk *b);

/* Drain, detach from the loop and close.  Safe on NULL. */
void blk_close(struct blk *b);

#endif

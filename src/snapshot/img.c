/* `vmrun img`: offline qcow2 image creation, inspection, overlay snapshots
 * and commit (include/vmrun/img.h).
 *
 * Headers are parsed here directly (read-only, every offset checked against
 * the file), so that `info -U` works on an image a running VM holds and so
 * that `snapshot` and `commit` can hold their own lock on FILE.  Data moves
 * through the block layer (blk_open/blk_submit/blk_drain), which does the
 * qcow2 allocation in its crash-safe order.
 *
 * Order of the steps (a crash at any point leaves FILE naming a complete,
 * consistent image with the same guest-visible contents):
 *
 * create FILE:  write the image to FILE.tmp-PID-N (O_EXCL), fsync it,
 *   link() it to FILE (fails if FILE exists, so nothing is ever
 *   overwritten), unlink the temporary name, fsync the directory.
 *
 * Locks (include/vmrun/image_lock.h): `info` takes a reader's on each level
 *   (none with -U), `snapshot` and `commit` a writer's on FILE, as the block
 *   layer and QEMU's tools do, so that neither runs beside a VM or a QEMU
 *   tool that writes the image.
 *
 * snapshot FILE:  lock FILE (a writer's lock, as the block layer; refused if
 *   a VM or another command uses it); pick N, the smallest number >= 1 for
 *   which FILE.base-N does not exist; write the overlay (backing file
 *   "basename(FILE).base-N", relative, with FILE's format) under a
 *   temporary name and fsync it; link() FILE to FILE.base-N (both names
 *   now the old image); fsync the directory; rename() the overlay over
 *   FILE; fsync the directory; chmod FILE.base-N 0444.  A crash before the
 *   rename leaves FILE as it was (plus at worst an extra hard link
 *   FILE.base-N and a FILE.tmp-* file to delete); after it, the snapshot is
 *   complete (at worst the base is still writable).
 *
 * commit FILE:  lock FILE; parse its L1/L2 tables and refuse what cannot
 *   be copied (compressed clusters, unsupported features) before writing
 *   anything; make the base writable by its owner if it is not (restored
 *   afterwards); open the base through blk_open (writable: it takes its own
 *   exclusive lock, so a base in use is refused); copy each allocated
 *   cluster of FILE (zero clusters as WRITE_ZEROES); FLUSH the base; then
 *   replace FILE by an empty overlay of the same backing file, size and
 *   backing format, written under a temporary name, fsynced and renamed
 *   over FILE.  A crash during the copy leaves FILE's data on top (reads
 *   unchanged); run commit again.
 */
#include "vmrun/img.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmrun/block.h"
#include "vmrun/cli.h"
#include "vmrun/fdio.h"
#include "vmrun/image_lock.h"
#include "vmrun/utf8.h"

#define IMG_CLUSTER_BITS 16u
#define IMG_CLUSTER ((uint64_t)1 << IMG_CLUSTER_BITS)
#define IMG_MAX_CHAIN 16u
#define IMG_MAX_BACKING_NAME 1023u
/* L1 table of at most 32 MiB (the backend's limit): 2^22 entries, each L2
 * covering 512 MiB with 64 KiB clusters: 2 PiB. */
#define IMG_MAX_SIZE ((uint64_t)1 << 51)

#define QCOW2_MAGIC 0x514649fbu
#define QCOW2_EXT_END 0u
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_OFLAG_COPIED (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED (1ull << 62)
#define QCOW2_OFLAG_ZERO (1ull << 0)
#define QCOW2_OFFSET_MASK 0x00fffffffffffe00ull
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)

/* What img needs to know about one image file. */
struct img_hdr {
	enum blk_format format;   /* RAW or QCOW2 */
	uint64_t size;            /* virtual size, bytes */
	uint64_t file_size;       /* bytes on the host */
	unsigned version;         /* qcow2 */
	unsigned cluster_bits;    /* qcow2 */
	uint64_t incompat;        /* qcow2 v3 */
	uint32_t l1_size;         /* qcow2 */
	uint64_t l1_offset;       /* qcow2 */
	bool has_backing;
	char backing[IMG_MAX_BACKING_NAME + 1];  /* as stored */
	char backing_fmt[16];                    /* "" when the header has none */
};

static int fail(char *err, size_t errlen, int r, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return r;
}

static uint32_t get_be32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return be32toh(v);
}

static uint64_t get_be64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return be64toh(v);
}

static void put_be16(uint8_t *p, uint16_t v)
{
	v = htobe16(v);
	memcpy(p, &v, 2);
}

static void put_be32(uint8_t *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, 4);
}

static void put_be64(uint8_t *p, uint64_t v)
{
	v = htobe64(v);
	memcpy(p, &v, 8);
}

/* Parse the header of the image open on @fd (@path for messages). */
static int img_read_header(int fd, const char *path, struct img_hdr *h, char *err, size_t errlen)
{
	uint8_t *c = NULL;
	uint64_t ext, ext_end, hlen, clen;
	struct stat st;
	off_t end;
	int r;

	memset(h, 0, sizeof(*h));
	if (fstat(fd, &st) < 0)
		return fail(err, errlen, -errno, "cannot stat %s: %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
		return fail(err, errlen, -EINVAL, "%s is not a regular file or block device", path);
	end = lseek(fd, 0, SEEK_END);
	if (end < 0)
		return fail(err, errlen, -errno, "cannot size %s: %s", path, strerror(errno));
	h->file_size = (uint64_t)end;
	h->format = BLK_FORMAT_RAW;
	h->size = h->file_size;
	if (h->file_size < 72)
		return 0;
	c = malloc(104);
	if (!c)
		return fail(err, errlen, -ENOMEM, "out of memory");
	r = fd_pread_exact(fd, c, 72, 0);
	if (r) {
		r = fail(err, errlen, r, "cannot read %s: %s", path, strerror(-r));
		goto out;
	}
	if (get_be32(c) != QCOW2_MAGIC) {
		r = 0;
		goto out;
	}
	h->format = BLK_FORMAT_QCOW2;
	h->version = get_be32(c + 4);
	h->cluster_bits = get_be32(c + 20);
	h->size = get_be64(c + 24);
	h->l1_size = get_be32(c + 36);
	h->l1_offset = get_be64(c + 40);
	if (h->version != 2 && h->version != 3) {
		r = fail(err, errlen, -ENOTSUP, "%s: qcow2 version %u is not supported", path,
			 h->version);
		goto out;
	}
	if (h->cluster_bits < 9 || h->cluster_bits > 21) {
		r = fail(err, errlen, -EINVAL, "%s: invalid cluster bits %u", path, h->cluster_bits);
		goto out;
	}
	clen = (uint64_t)1 << h->cluster_bits;
	if (clen > h->file_size)
		clen = h->file_size;
	free(c);
	c = malloc(clen);
	if (!c)
		return fail(err, errlen, -ENOMEM, "out of memory");
	r = fd_pread_exact(fd, c, clen, 0);
	if (r) {
		r = fail(err, errlen, r, "cannot read %s: %s", path, strerror(-r));
		goto out;
	}
	hlen = 72;
	if (h->version == 3) {
		if (clen < 104) {
			r = fail(err, errlen, -EINVAL, "%s: truncated qcow2 header", path);
			goto out;
		}
		h->incompat = get_be64(c + 72);
		hlen = get_be32(c + 100);
		if (hlen < 104 || hlen > clen) {
			r = fail(err, errlen, -EINVAL, "%s: invalid qcow2 header length", path);
			goto out;
		}
	}
	/* Header extensions: up to the backing file name, or the cluster end. */
	{
		uint64_t boff = get_be64(c + 8);
		uint32_t bsize = get_be32(c + 16);

		ext_end = clen;
		if (boff) {
			if (bsize == 0 || bsize > IMG_MAX_BACKING_NAME || boff > clen ||
			    bsize > clen - boff) {
				r = fail(err, errlen, -EINVAL, "%s: invalid backing file name field", path);
				goto out;
			}
			memcpy(h->backing, c + boff, bsize);
			h->backing[bsize] = '\0';
			if (strlen(h->backing) != bsize) {
				r = fail(err, errlen, -EINVAL, "%s: backing file name contains NUL", path);
				goto out;
			}
			h->has_backing = true;
			if (boff > hlen)
				ext_end = boff;
		}
	}
	for (ext = hlen; ext + 8 <= ext_end;) {
		uint32_t type = get_be32(c + ext), len = get_be32(c + ext + 4);

		if (type == QCOW2_EXT_END)
			break;
		if (len > ext_end - ext - 8)
			break; /* malformed: ignore the rest, as QEMU would refuse */
		if (type == QCOW2_EXT_BACKING_FORMAT && len < sizeof(h->backing_fmt)) {
			memcpy(h->backing_fmt, c + ext + 8, len);
			h->backing_fmt[len] = '\0';
		}
		ext += 8 + (((uint64_t)len + 7) & ~7ull);
	}
	r = 0;
out:
	free(c);
	return r;
}

/* The path of backing file @name of the image at @path: relative names
 * are relative to @path's directory. */
static int backing_path(const char *path, const char *name, char *out, size_t outlen)
{
	char *copy, *dir;
	int n;

	if (name[0] == '/') {
		n = snprintf(out, outlen, "%s", name);
		return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
	}
	copy = strdup(path);
	if (!copy)
		return -ENOMEM;
	dir = dirname(copy);
	n = strcmp(dir, ".") ? snprintf(out, outlen, "%s/%s", dir, name)
			     : snprintf(out, outlen, "%s", name);
	free(copy);
	return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

static int parse_format(const char *s, enum blk_format *out)
{
	if (!strcmp(s, "raw"))
		*out = BLK_FORMAT_RAW;
	else if (!strcmp(s, "qcow2"))
		*out = BLK_FORMAT_QCOW2;
	else
		return -EINVAL;
	return 0;
}

/* Open @path read-only and parse its header. */
static int img_probe(const char *path, struct img_hdr *h, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK), r;

	if (fd < 0)
		return fail(err, errlen, -errno, "cannot open %s: %s", path, strerror(errno));
	r = img_read_header(fd, path, h, err, errlen);
	close(fd);
	return r;
}

/* fsync the directory holding @path, so that a rename or link is durable. */
static int sync_dir_of(const char *path)
{
	char *copy = strdup(path);
	int fd, r = 0;

	if (!copy)
		return -ENOMEM;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(copy);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

/* A fresh temporary name next to @path, created with O_EXCL; *@fd is open
 * read-write on it. */
static int temp_create(const char *path, char *tmp, size_t tmplen, int *fd)
{
	for (unsigned i = 0; i < 100; i++) {
		int n = snprintf(tmp, tmplen, "%s.tmp-%ld-%u", path, (long)getpid(), i);

		if (n < 0 || (size_t)n >= tmplen)
			return -ENAMETOOLONG;
		*fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (*fd >= 0)
			return 0;
		if (errno != EEXIST)
			return -errno;
	}
	return -EEXIST;
}

/* Write a qcow2 v3 image of @size bytes (64 KiB clusters, 16-bit
 * refcounts) to @fd: header cluster (header, backing format extension,
 * end extension, backing file name), refcount table, one refcount block,
 * L1 table; then fsync.  @backing NULL: no backing file. */
static int qcow2_write_new(int fd, uint64_t size, const char *backing, const char *backing_fmt)
{
	uint64_t l1_entries = (size + (IMG_CLUSTER << (IMG_CLUSTER_BITS - 3)) - 1) >>
			      (IMG_CLUSTER_BITS + IMG_CLUSTER_BITS - 3);
	uint64_t l1_clusters = (l1_entries * 8 + IMG_CLUSTER - 1) / IMG_CLUSTER;
	uint64_t total, off;
	uint8_t *c;
	int r;

	if (l1_clusters == 0)
		l1_clusters = 1;
	total = 3 + l1_clusters;
	c = calloc(1, IMG_CLUSTER);
	if (!c)
		return -ENOMEM;
	/* Header (v3, 104 bytes). */
	put_be32(c + 0, QCOW2_MAGIC);
	put_be32(c + 4, 3);
	put_be32(c + 20, IMG_CLUSTER_BITS);
	put_be64(c + 24, size);
	put_be32(c + 36, (uint32_t)l1_entries);
	put_be64(c + 40, 3 * IMG_CLUSTER);  /* L1 table */
	put_be64(c + 48, 1 * IMG_CLUSTER);  /* refcount table */
	put_be32(c + 56, 1);
	put_be32(c + 96, 4);                /* refcount order: 16 bits */
	put_be32(c + 100, 104);             /* header length */
	off = 104;
	if (backing) {
		size_t blen = strlen(backing), flen = strlen(backing_fmt);

		put_be32(c + off, QCOW2_EXT_BACKING_FORMAT);
		put_be32(c + off + 4, (uint32_t)flen);
		memcpy(c + off + 8, backing_fmt, flen);
		off += 8 + ((flen + 7) & ~(size_t)7);
		off += 8; /* end of extensions: zeroes */
		put_be64(c + 8, off);
		put_be32(c + 16, (uint32_t)blen);
		memcpy(c + off, backing, blen);
	}
	r = fd_pwrite_full(fd, c, IMG_CLUSTER, 0);
	if (r)
		goto out;
	/* Refcount table: one block, at cluster 2. */
	memset(c, 0, IMG_CLUSTER);
	put_be64(c, 2 * IMG_CLUSTER);
	r = fd_pwrite_full(fd, c, IMG_CLUSTER, IMG_CLUSTER);
	if (r)
		goto out;
	/* Refcount block: every cluster of the file counted once. */
	memset(c, 0, IMG_CLUSTER);
	for (uint64_t i = 0; i < total; i++)
		put_be16(c + 2 * i, 1);
	r = fd_pwrite_full(fd, c, IMG_CLUSTER, 2 * IMG_CLUSTER);
	if (r)
		goto out;
	/* L1 table: empty. */
	if (ftruncate(fd, (off_t)(total * IMG_CLUSTER)) < 0) {
		r = -errno;
		goto out;
	}
	if (fsync(fd) < 0)
		r = -errno;
out:
	free(c);
	return r;
}

/* Write a new qcow2 image to a temporary name next to @path, fsynced; its
 * name goes to @tmp.  The caller links or renames it into place. */
static int write_temp_image(const char *path, uint64_t size, const char *backing,
			    const char *backing_fmt, char *tmp, size_t tmplen, char *err,
			    size_t errlen)
{
	int fd, r;

	r = temp_create(path, tmp, tmplen, &fd);
	if (r)
		return fail(err, errlen, r, "cannot create a temporary file next to %s: %s", path,
			    strerror(-r));
	r = qcow2_write_new(fd, size, backing, backing_fmt);
	if (close(fd) < 0 && !r)
		r = -errno;
	if (r) {
		unlink(tmp);
		return fail(err, errlen, r, "cannot write %s: %s", tmp, strerror(-r));
	}
	return 0;
}

/* Lock @path as the block layer does (include/vmrun/image_lock.h: flock
 * and QEMU's lock bytes, non-blocking) as a writer (@mode EXCLUSIVE) or a
 * reader (SHARED); *@fd holds the lock until closed.  -EBUSY names the
 * other user's kind ("in use by another process (QEMU or vmrun)"). */
static int lock_image_as(const char *path, enum blk_lock mode, int *fd, char *err,
			 size_t errlen)
{
	int r;

	/* O_NONBLOCK: a FIFO must not hang the open (the probe refuses it). */
	*fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (*fd < 0)
		return fail(err, errlen, -errno, "cannot open %s: %s", path, strerror(errno));
	r = image_lock_change(*fd, path, BLK_LOCK_NONE, mode, err, errlen);
	if (r) {
		close(*fd);
		*fd = -1;
	}
	return r;
}

static int lock_image(const char *path, int *fd, char *err, size_t errlen)
{
	return lock_image_as(path, BLK_LOCK_EXCLUSIVE, fd, err, errlen);
}

/* ------------------------------------------------------------------ create */

static int parse_img_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long n;

	/* Plain numbers are bytes (as qemu-img); suffixes as --mem. */
	if (*s >= '0' && *s <= '9') {
		errno = 0;
		n = strtoull(s, &end, 10);
		if (!*end) {
			if (errno)
				return -ERANGE;
			*out = n;
			return 0;
		}
	}
	return cli_parse_size(s, out);
}

static int img_create(int argc, char *const argv[])
{
	const char *backing = NULL, *bfmt_arg = NULL, *file = NULL, *size_arg = NULL;
	char err[PATH_MAX + 256], bpath[PATH_MAX], tmp[PATH_MAX];
	enum blk_format bfmt = BLK_FORMAT_AUTO;
	struct img_hdr bh;
	uint64_t size = 0;
	struct stat st;
	int r;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-b") || !strcmp(argv[i], "-F")) {
			if (i + 1 >= argc) {
				fprintf(stderr, "vmrun img create: %s needs a value\n", argv[i]);
				return IMG_USAGE;
			}
			if (argv[i][1] == 'b')
				backing = argv[++i];
			else
				bfmt_arg = argv[++i];
		} else if (argv[i][0] == '-' && argv[i][1]) {
			fprintf(stderr, "vmrun img create: unknown option '%s'\n", argv[i]);
			return IMG_USAGE;
		} else if (!file) {
			file = argv[i];
		} else if (!size_arg) {
			size_arg = argv[i];
		} else {
			fprintf(stderr, "vmrun img create: unexpected argument '%s'\n", argv[i]);
			return IMG_USAGE;
		}
	}
	if (!file || (!size_arg && !backing)) {
		fprintf(stderr, "usage: vmrun img create [-b BACKING [-F raw|qcow2]] FILE [SIZE]\n");
		return IMG_USAGE;
	}
	if (bfmt_arg && !backing) {
		fprintf(stderr, "vmrun img create: -F needs -b\n");
		return IMG_USAGE;
	}
	if (bfmt_arg && parse_format(bfmt_arg, &bfmt)) {
		fprintf(stderr, "vmrun img create: -F: unknown format '%s' (raw or qcow2)\n",
			bfmt_arg);
		return IMG_USAGE;
	}
	if (size_arg) {
		r = parse_img_size(size_arg, &size);
		if (r || size == 0 || size > IMG_MAX_SIZE) {
			fprintf(stderr, "vmrun img create: invalid size '%s' (a number of bytes with"
				" an optional K, M, G or T suffix, 512 bytes to 2P)\n", size_arg);
			return IMG_USAGE;
		}
		size = (size + 511) & ~(uint64_t)511;
	}
	if (backing && (!*backing || strlen(backing) > IMG_MAX_BACKING_NAME)) {
		fprintf(stderr, "vmrun img create: invalid backing file name\n");
		return IMG_USAGE;
	}
	if (lstat(file, &st) == 0) {
		fprintf(stderr, "vmrun img create: %s: already exists\n", file);
		return IMG_FAILED;
	}
	if (errno != ENOENT) {
		fprintf(stderr, "vmrun img create: %s: %s\n", file, strerror(errno));
		return IMG_FAILED;
	}
	if (backing) {
		r = backing_path(file, backing, bpath, sizeof(bpath));
		if (r) {
			fprintf(stderr, "vmrun img create: backing file name too long\n");
			return IMG_USAGE;
		}
		r = img_probe(bpath, &bh, err, sizeof(err));
		if (r) {
			fprintf(stderr, "vmrun img create: backing file: %s\n", err);
			return IMG_FAILED;
		}
		if (bfmt == BLK_FORMAT_AUTO)
			bfmt = bh.format;
		else if (bfmt == BLK_FORMAT_QCOW2 && bh.format != BLK_FORMAT_QCOW2) {
			fprintf(stderr, "vmrun img create: backing file %s is not a qcow2 image\n",
				bpath);
			return IMG_FAILED;
		}
		if (bfmt == BLK_FORMAT_RAW && bh.format == BLK_FORMAT_RAW)
			bh.size = bh.file_size;
		if (!size_arg)
			size = bh.size;
		if (size == 0 || size > IMG_MAX_SIZE) {
			fprintf(stderr, "vmrun img create: the backing file's size (%" PRIu64
				" bytes) cannot be used; give SIZE\n", size);
			return IMG_FAILED;
		}
		size = (size + 511) & ~(uint64_t)511;
	}
	r = write_temp_image(file, size, backing, blk_format_name(bfmt), tmp, sizeof(tmp), err,
			     sizeof(err));
	if (r) {
		fprintf(stderr, "vmrun img create: %s\n", err);
		return IMG_FAILED;
	}
	/* link() never replaces: an existing FILE (a race) is left alone. */
	if (link(tmp, file) < 0) {
		int e = errno;

		unlink(tmp);
		fprintf(stderr, "vmrun img create: %s: %s\n", file,
			e == EEXIST ? "already exists" : strerror(e));
		return IMG_FAILED;
	}
	unlink(tmp);
	r = sync_dir_of(file);
	if (r) {
		fprintf(stderr, "vmrun img create: syncing the directory of %s: %s\n", file,
			strerror(-r));
		return IMG_FAILED;
	}
	return IMG_OK;
}

/* -------------------------------------------------------------------- info */

static int img_info(int argc, char *const argv[])
{
	const char *file = NULL;
	char err[PATH_MAX + 256], path[PATH_MAX], next[PATH_MAX];
	bool as_json = false;
	json_t *top = NULL, *chain = NULL;
	struct img_hdr h;
	int status = IMG_FAILED, lock_fds[IMG_MAX_CHAIN + 1];
	unsigned n_locks = 0;
	bool force_share = false;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			as_json = true;
		} else if (!strcmp(argv[i], "-U") || !strcmp(argv[i], "--force-share")) {
			force_share = true;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			fprintf(stderr, "vmrun img info: unknown option '%s'\n", argv[i]);
			return IMG_USAGE;
		} else if (!file) {
			file = argv[i];
		} else {
			fprintf(stderr, "vmrun img info: unexpected argument '%s'\n", argv[i]);
			return IMG_USAGE;
		}
	}
	if (!file) {
		fprintf(stderr, "usage: vmrun img info [-U] FILE [--json]\n");
		return IMG_USAGE;
	}
	if (strlen(file) >= sizeof(path)) {
		fprintf(stderr, "vmrun img info: file name too long\n");
		return IMG_USAGE;
	}
	snprintf(path, sizeof(path), "%s", file);
	chain = json_array();
	for (unsigned level = 0;; level++) {
		json_t *o;

		if (level > IMG_MAX_CHAIN) {
			fprintf(stderr, "vmrun img info: %s: backing chain deeper than %u (a loop?)\n",
				file, IMG_MAX_CHAIN);
			goto out;
		}
		/* A reader's lock on each level, held to the end, as
		 * `qemu-img info` takes them: a writer (a running vmrun or
		 * QEMU) refuses it, unless -U shares everything. */
		if (!force_share) {
			int r = lock_image_as(path, BLK_LOCK_SHARED, &lock_fds[n_locks], err,
					      sizeof(err));

			if (r) {
				fprintf(stderr, "vmrun img info: %s%s%s\n", level ? "backing file: " : "",
					err, r == -EBUSY ? " (-U reads it anyway)" : "");
				goto out;
			}
			n_locks++;
		}
		if (img_probe(path, &h, err, sizeof(err))) {
			fprintf(stderr, "vmrun img info: %s%s\n", level ? "backing file: " : "", err);
			goto out;
		}
		/* Names are shown made valid UTF-8 (vmrun/utf8.h): jansson
		 * refuses raw bytes, and a level must not vanish for that. */
		o = json_pack("{s:o,s:s,s:I,s:I}", "filename", utf8_json_string(path), "format",
			      blk_format_name(h.format), "virtual-size", (json_int_t)h.size,
			      "actual-size", (json_int_t)h.file_size);
		if (h.format == BLK_FORMAT_QCOW2) {
			json_object_set_new(o, "cluster-size",
					    json_integer((json_int_t)1 << h.cluster_bits));
			json_object_set_new(o, "compat",
					    json_string(h.version == 2 ? "0.10" : "1.1"));
		}
		if (h.has_backing) {
			if (backing_path(path, h.backing, next, sizeof(next))) {
				fprintf(stderr, "vmrun img info: %s: backing file name too long\n",
					path);
				json_decref(o);
				goto out;
			}
			json_object_set_new(o, "backing-filename", utf8_json_string(h.backing));
			json_object_set_new(o, "full-backing-filename", utf8_json_string(next));
			if (h.backing_fmt[0])
				json_object_set_new(o, "backing-filename-format",
						    utf8_json_string(h.backing_fmt));
		}
		if (level == 0)
			top = json_deep_copy(o);
		if (!o || !top || json_array_append_new(chain, o)) {
			fprintf(stderr, "vmrun img info: out of memory\n");
			goto out;
		}
		if (!h.has_backing)
			break;
		snprintf(path, sizeof(path), "%s", next);
	}
	json_object_set(top, "backing-chain", chain);
	if (as_json) {
		char *text = json_dumps(top, JSON_INDENT(4) | JSON_PRESERVE_ORDER);

		if (!text) {
			fprintf(stderr, "vmrun img info: out of memory\n");
			goto out;
		}
		printf("%s\n", text);
		free(text);
	} else {
		size_t n = json_array_size(chain);

		for (size_t i = 0; i < n; i++) {
			json_t *o = json_array_get(chain, i);
			json_t *cs = json_object_get(o, "cluster-size");
			json_t *bf = json_object_get(o, "backing-filename");
			json_t *bff = json_object_get(o, "backing-filename-format");

			if (i)
				printf("\nbacking file (level %zu):\n", i);
			printf("image: %s\n", json_string_value(json_object_get(o, "filename")));
			printf("file format: %s\n", json_string_value(json_object_get(o, "format")));
			printf("virtual size: %" JSON_INTEGER_FORMAT " bytes\n",
			       json_integer_value(json_object_get(o, "virtual-size")));
			printf("disk size: %" JSON_INTEGER_FORMAT " bytes\n",
			       json_integer_value(json_object_get(o, "actual-size")));
			if (cs)
				printf("cluster size: %" JSON_INTEGER_FORMAT "\n",
				       json_integer_value(cs));
			if (bf)
				printf("backing file: %s (actual path: %s)\n", json_string_value(bf),
				       json_string_value(json_object_get(o, "full-backing-filename")));
			if (bff)
				printf("backing file format: %s\n", json_string_value(bff));
		}
	}
	status = IMG_OK;
out:
	while (n_locks)
		close(lock_fds[--n_locks]);
	json_decref(top);
	json_decref(chain);
	return status;
}

/* ---------------------------------------------------------------- snapshot */

/* The steps of a snapshot, shared by `vmrun img snapshot` and the live form
 * (src/snapshot/live.c); the order is the one in the header comment. */

int img_snapshot_prepare(const char *file, struct img_snapshot *s, char *err, size_t errlen)
{
	char *copy;
	const char *base_name;
	struct img_hdr h;
	struct stat st;
	unsigned n;
	int fd, r;

	memset(s, 0, sizeof(*s));
	if (lstat(file, &st) < 0)
		return fail(err, errlen, -errno, "cannot stat %s: %s", file, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return fail(err, errlen, -EINVAL, "%s is not a regular file", file);
	fd = open(file, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return fail(err, errlen, -errno, "cannot open %s: %s", file, strerror(errno));
	r = img_read_header(fd, file, &h, err, errlen);
	close(fd);
	if (r)
		return r;
	if (h.size == 0 || h.size > IMG_MAX_SIZE || (h.size & 511))
		return fail(err, errlen, -EINVAL, "%s: size %" PRIu64 " cannot be snapshotted", file,
			    h.size);
	if (snprintf(s->file, sizeof(s->file), "%s", file) >= (int)sizeof(s->file))
		return fail(err, errlen, -ENAMETOOLONG, "%s: name too long", file);
	for (n = 1;; n++) {
		int len = snprintf(s->base, sizeof(s->base), "%s.base-%u", file, n);

		if (len < 0 || (size_t)len >= sizeof(s->base))
			return fail(err, errlen, -ENAMETOOLONG, "%s: name too long", file);
		if (lstat(s->base, &st) < 0 && errno == ENOENT)
			break;
		if (n == 100000)
			return fail(err, errlen, -EEXIST, "%s: no free name %s.base-N", file, file);
	}
	copy = strdup(s->base);
	if (!copy)
		return fail(err, errlen, -ENOMEM, "out of memory");
	base_name = basename(copy);
	r = write_temp_image(file, h.size, base_name, blk_format_name(h.format), s->tmp,
			     sizeof(s->tmp), err, errlen);
	free(copy);
	if (r)
		return r;
	/* Both names on the old image first; FILE itself is never missing. */
	if (link(file, s->base) < 0) {
		r = -errno;
		unlink(s->tmp);
		return fail(err, errlen, r, "cannot link %s to %s: %s", file, s->base, strerror(-r));
	}
	r = sync_dir_of(file);
	if (r) {
		unlink(s->tmp);
		unlink(s->base);
		return fail(err, errlen, r, "syncing the directory of %s: %s", file, strerror(-r));
	}
	s->prepared = true;
	return 0;
}

int img_create_overlay(const char *path, const char *backing, uint64_t *size, char *err,
		       size_t errlen)
{
	char tmp[PATH_MAX];
	struct img_hdr h;
	int r;

	if (backing[0] != '/')
		return fail(err, errlen, -EINVAL, "%s: the backing file name must be absolute",
			    backing);
	r = img_probe(backing, &h, err, errlen);
	if (r)
		return r;
	if (h.size == 0 || h.size > IMG_MAX_SIZE || (h.size & 511))
		return fail(err, errlen, -EINVAL, "%s: size %" PRIu64 " cannot back an overlay",
			    backing, h.size);
	r = write_temp_image(path, h.size, backing, blk_format_name(h.format), tmp, sizeof(tmp), err,
			     errlen);
	if (r)
		return r;
	/* link() refuses an existing @path: nothing is ever overwritten. */
	if (link(tmp, path) < 0) {
		r = -errno;
		unlink(tmp);
		return fail(err, errlen, r, "cannot create %s: %s", path, strerror(-r));
	}
	unlink(tmp);
	r = sync_dir_of(path);
	if (r)
		return fail(err, errlen, r, "syncing the directory of %s: %s", path, strerror(-r));
	if (size)
		*size = h.size;
	return 0;
}

int img_snapshot_switch(struct img_snapshot *s, char *err, size_t errlen)
{
	int r;

	if (rename(s->tmp, s->file) < 0)
		return fail(err, errlen, -errno, "cannot put the overlay in place of %s: %s", s->file,
			    strerror(errno));
	s->switched = true;
	r = sync_dir_of(s->file);
	if (r)
		return fail(err, errlen, r, "syncing the directory of %s: %s", s->file, strerror(-r));
	return 0;
}

int img_snapshot_finish(struct img_snapshot *s, char *err, size_t errlen)
{
	if (chmod(s->base, 0444) < 0)
		return fail(err, errlen, -errno, "overlay made, but cannot make %s read-only: %s",
			    s->base, strerror(errno));
	return 0;
}

int img_snapshot_abort(struct img_snapshot *s)
{
	int r = 0;

	if (!s->prepared)
		return 0;
	if (s->switched) {
		/* FILE.base-N still names the old image: put it back. */
		if (rename(s->base, s->file) < 0)
			r = -errno;
	} else {
		unlink(s->tmp);
		if (unlink(s->base) < 0)
			r = -errno;
	}
	if (!r)
		r = sync_dir_of(s->file);
	s->prepared = s->switched = false;
	return r;
}

static int img_snapshot(int argc, char *const argv[])
{
	char err[PATH_MAX + 256];
	struct img_snapshot s;
	const char *file;
	int lock_fd = -1, status = IMG_FAILED;
	struct stat st;

	if (argc != 2 || argv[1][0] == '-') {
		fprintf(stderr, "usage: vmrun img snapshot FILE\n");
		return IMG_USAGE;
	}
	file = argv[1];
	if (lstat(file, &st) == 0 && !S_ISREG(st.st_mode)) {
		fprintf(stderr, "vmrun img snapshot: %s is not a regular file\n", file);
		return IMG_FAILED;
	}
	if (lock_image(file, &lock_fd, err, sizeof(err))) {
		fprintf(stderr, "vmrun img snapshot: %s\n", err);
		return IMG_FAILED;
	}
	if (img_snapshot_prepare(file, &s, err, sizeof(err))) {
		fprintf(stderr, "vmrun img snapshot: %s\n", err);
		goto out;
	}
	if (img_snapshot_switch(&s, err, sizeof(err))) {
		fprintf(stderr, "vmrun img snapshot: %s\n", err);
		/* Only a failed rename undoes: after it, the snapshot stands. */
		if (!s.switched)
			img_snapshot_abort(&s);
		goto out;
	}
	if (img_snapshot_finish(&s, err, sizeof(err))) {
		fprintf(stderr, "vmrun img snapshot: %s\n", err);
		goto out;
	}
	printf("%s\n", s.base);
	status = IMG_OK;
out:
	close(lock_fd);
	return status;
}

/* ------------------------------------------------------------------ commit */

/* Walk FILE's L2 tables.  @base NULL: only check that every entry can be
 * copied.  Else copy every allocated cluster into @base. */
static int commit_walk(int fd, const char *file, const struct img_hdr *h, struct blk *base,
		       char *err, size_t errlen)
{
	uint64_t csize = (uint64_t)1 << h->cluster_bits, per_l2 = csize / 8;
	uint64_t *l1 = NULL, *l2 = NULL;
	uint8_t *data = NULL;
	int r = 0;

	if (h->l1_size && (h->l1_offset & (csize - 1) || h->l1_offset > h->file_size ||
			   (uint64_t)h->l1_size * 8 > h->file_size - h->l1_offset))
		return fail(err, errlen, -EINVAL, "%s: L1 table outside the file", file);
	l1 = malloc((size_t)h->l1_size * 8 + 8);
	l2 = malloc(csize);
	data = malloc(csize);
	if (!l1 || !l2 || !data) {
		r = fail(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	r = fd_pread_exact(fd, l1, (size_t)h->l1_size * 8, h->l1_offset);
	if (r) {
		r = fail(err, errlen, r, "cannot read %s: %s", file, strerror(-r));
		goto out;
	}
	for (uint64_t i = 0; i < h->l1_size; i++) {
		uint64_t l2_off = be64toh(l1[i]) & QCOW2_OFFSET_MASK;

		if (!l2_off)
			continue;
		if (l2_off & (csize - 1) || l2_off > h->file_size || csize > h->file_size - l2_off) {
			r = fail(err, errlen, -EINVAL, "%s: L2 table outside the file", file);
			goto out;
		}
		r = fd_pread_exact(fd, l2, csize, l2_off);
		if (r) {
			r = fail(err, errlen, r, "cannot read %s: %s", file, strerror(-r));
			goto out;
		}
		for (uint64_t j = 0; j < per_l2; j++) {
			uint64_t e = be64toh(l2[j]), voff = (i * per_l2 + j) * csize, len, hoff;

			if (voff >= h->size)
				break;
			len = h->size - voff < csize ? h->size - voff : csize;
			if (e & QCOW2_OFLAG_COMPRESSED) {
				r = fail(err, errlen, -ENOTSUP, "%s: compressed clusters cannot be"
					 " committed (convert the image first)", file);
				goto out;
			}
			hoff = e & QCOW2_OFFSET_MASK;
			if (h->version == 3 && (e & QCOW2_OFLAG_ZERO)) {
				if (base) {
					r = blk_io_wait(base, BLK_WRITE_ZEROES, voff, NULL, len);
					if (r) {
						r = fail(err, errlen, r, "writing zeroes to the backing"
							 " file at %" PRIu64 ": %s", voff,
							 strerror(-r));
						goto out;
					}
				}
				continue;
			}
			if (!hoff)
				continue;
			if (hoff & (csize - 1) || hoff > h->file_size || len > h->file_size - hoff) {
				r = fail(err, errlen, -EINVAL, "%s: data cluster outside the file",
					 file);
				goto out;
			}
			if (!base)
				continue;
			r = fd_pread_exact(fd, data, len, hoff);
			if (r) {
				r = fail(err, errlen, r, "cannot read %s: %s", file, strerror(-r));
				goto out;
			}
			r = blk_io_wait(base, BLK_WRITE, voff, data, len);
			if (r) {
				r = fail(err, errlen, r, "writing the backing file at %" PRIu64 ": %s",
					 voff, strerror(-r));
				goto out;
			}
		}
	}
out:
	free(l1);
	free(l2);
	free(data);
	return r;
}

static int img_commit(int argc, char *const argv[])
{
	char err[PATH_MAX + 256], bpath[PATH_MAX], tmp[PATH_MAX];
	struct blk_open_opts opts = { 0 };
	struct blk *base = NULL;
	struct img_hdr h, bh;
	struct stat bst;
	bool restore_mode = false;
	const char *file;
	int lock_fd = -1, r, status = IMG_FAILED;

	if (argc != 2 || argv[1][0] == '-') {
		fprintf(stderr, "usage: vmrun img commit FILE\n");
		return IMG_USAGE;
	}
	file = argv[1];
	if (lock_image(file, &lock_fd, err, sizeof(err))) {
		fprintf(stderr, "vmrun img commit: %s\n", err);
		return IMG_FAILED;
	}
	if (img_read_header(lock_fd, file, &h, err, sizeof(err))) {
		fprintf(stderr, "vmrun img commit: %s\n", err);
		goto out;
	}
	if (h.format != BLK_FORMAT_QCOW2 || !h.has_backing) {
		fprintf(stderr, "vmrun img commit: %s is not a qcow2 overlay with a backing file\n",
			file);
		goto out;
	}
	if (h.incompat & ~QCOW2_INCOMPAT_COMPRESSION) {
		fprintf(stderr, "vmrun img commit: %s: incompatible features 0x%" PRIx64
			" (dirty, corrupt, external data or extended L2) are not supported\n",
			file, h.incompat);
		goto out;
	}
	if (backing_path(file, h.backing, bpath, sizeof(bpath))) {
		fprintf(stderr, "vmrun img commit: %s: backing file name too long\n", file);
		goto out;
	}
	if (img_probe(bpath, &bh, err, sizeof(err))) {
		fprintf(stderr, "vmrun img commit: backing file: %s\n", err);
		goto out;
	}
	if (h.backing_fmt[0]) {
		enum blk_format f;

		if (parse_format(h.backing_fmt, &f)) {
			fprintf(stderr, "vmrun img commit: %s: backing format '%s' not supported\n",
				file, h.backing_fmt);
			goto out;
		}
		opts.format = f;
		if (f == BLK_FORMAT_RAW)
			bh.size = bh.file_size;
	} else {
		opts.format = bh.format;
	}
	if (bh.size < h.size) {
		fprintf(stderr, "vmrun img commit: backing file %s (%" PRIu64 " bytes) is smaller"
			" than %s (%" PRIu64 " bytes)\n", bpath, bh.size, file, h.size);
		goto out;
	}
	/* Check everything before the first write. */
	if (commit_walk(lock_fd, file, &h, NULL, err, sizeof(err))) {
		fprintf(stderr, "vmrun img commit: %s\n", err);
		goto out;
	}
	if (stat(bpath, &bst) < 0) {
		fprintf(stderr, "vmrun img commit: cannot stat %s: %s\n", bpath, strerror(errno));
		goto out;
	}
	if (access(bpath, W_OK) < 0) {
		if (chmod(bpath, (bst.st_mode & 07777) | S_IWUSR) < 0) {
			fprintf(stderr, "vmrun img commit: backing file %s is read-only and cannot"
				" be made writable: %s\n", bpath, strerror(errno));
			goto out;
		}
		restore_mode = true;
	}
	r = blk_open(bpath, &opts, NULL, &base, err, sizeof(err));
	if (r) {
		fprintf(stderr, "vmrun img commit: backing file: %s\n", err);
		goto out;
	}
	if (blk_size(base) < h.size) {
		fprintf(stderr, "vmrun img commit: backing file %s is smaller than %s\n", bpath,
			file);
		goto out;
	}
	if (commit_walk(lock_fd, file, &h, base, err, sizeof(err))) {
		fprintf(stderr, "vmrun img commit: %s (%s still holds all its data)\n", err, file);
		goto out;
	}
	r = blk_io_wait(base, BLK_FLUSH, 0, NULL, 0);
	if (r) {
		fprintf(stderr, "vmrun img commit: flushing %s: %s (%s still holds all its data)\n",
			bpath, strerror(-r), file);
		goto out;
	}
	blk_close(base);
	base = NULL;
	/* The base has everything: empty the overlay. */
	r = write_temp_image(file, h.size, h.backing,
			     h.backing_fmt[0] ? h.backing_fmt : blk_format_name(bh.format), tmp,
			     sizeof(tmp), err, sizeof(err));
	if (r) {
		fprintf(stderr, "vmrun img commit: data committed, but cannot empty the overlay: %s\n",
			err);
		goto out;
	}
	if (rename(tmp, file) < 0) {
		fprintf(stderr, "vmrun img commit: data committed, but cannot replace %s: %s\n",
			file, strerror(errno));
		unlink(tmp);
		goto out;
	}
	r = sync_dir_of(file);
	if (r) {
		fprintf(stderr, "vmrun img commit: syncing the directory of %s: %s\n", file,
			strerror(-r));
		goto out;
	}
	status = IMG_OK;
out:
	blk_close(base);
	if (restore_mode && chmod(bpath, bst.st_mode & 07777) < 0) {
		fprintf(stderr, "vmrun img commit: cannot make %s read-only again: %s\n", bpath,
			strerror(errno));
		status = IMG_FAILED;
	}
	close(lock_fd);
	return status;
}

static const char img_usage[] =
	"usage: vmrun img create [-b BACKING [-F raw|qcow2]] FILE [SIZE]\n"
	"       vmrun img info [-U] FILE [--json]\n"
	"       vmrun img snapshot FILE\n"
	"       vmrun img commit FILE\n";

int img_main(int argc, char *const argv[])
{
	if (argc < 2) {
		fputs(img_usage, stderr);
		return IMG_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
		fputs(img_usage, stdout);
		return IMG_OK;
	}
	if (!strcmp(argv[1], "create"))
		return img_create(argc - 1, argv + 1);
	if (!strcmp(argv[1], "info"))
		return img_info(argc - 1, argv + 1);
	if (!strcmp(argv[1], "snapshot"))
		return img_snapshot(argc - 1, argv + 1);
	if (!strcmp(argv[1], "commit"))
		return img_commit(argc - 1, argv + 1);
	fprintf(stderr, "vmrun img: unknown command '%s' (create, info, snapshot, commit)\n",
		argv[1]);
	return IMG_USAGE;
}

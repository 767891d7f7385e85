/* `vmrun img`: offline qcow2 image creation, inspection, overlay snapshots
 * and commit (include/vmrun/img.h).
 *
 * There is one qcow2 parser, the block layer's: headers come from
 * blk_image_info() (no lock, so `info -U` works on an image a running VM
 * holds, and `snapshot` and `commit` can hold their own lock on FILE), new
 * images from blk_qcow2_create(), and commit reads the overlay through a
 * blk_open() of its top image alone and its blk_top_extent() map.  Data
 * moves through the block layer, which does the qcow2 allocation in its
 * crash-safe order.
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
 * commit FILE:  lock FILE; open its top image through the block layer
 *   (read-only, top_only: every table checked as for a VM) and walk its
 *   whole map, refusing a bad entry, before writing anything; make the base
 *   writable by its owner if it is not (restored afterwards); open the base
 *   through blk_open (writable: it takes its own exclusive lock, so a base
 *   in use is refused); copy each data extent of FILE (compressed clusters
 *   decompressed, zero clusters as WRITE_ZEROES); FLUSH the base; then
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

#define IMG_MAX_CHAIN 16u

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
	r = blk_qcow2_create(fd, size, backing, backing_fmt);
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
	struct blk_image_info bh;
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
		if (r || size == 0 || size > BLK_QCOW2_CREATE_MAX) {
			fprintf(stderr, "vmrun img create: invalid size '%s' (a number of bytes with"
				" an optional K, M, G or T suffix, 512 bytes to 2P)\n", size_arg);
			return IMG_USAGE;
		}
		size = (size + 511) & ~(uint64_t)511;
	}
	if (backing && (!*backing || strlen(backing) > sizeof(bh.backing) - 1)) {
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
		r = blk_backing_path(file, backing, bpath, sizeof(bpath));
		if (r) {
			fprintf(stderr, "vmrun img create: backing file name too long\n");
			return IMG_USAGE;
		}
		/* -F names the format (raw reads a qcow2 file as raw bytes);
		 * without it, the probe's. */
		r = blk_image_info(bpath, bfmt, &bh, err, sizeof(err));
		if (r) {
			fprintf(stderr, "vmrun img create: backing file: %s\n", err);
			return IMG_FAILED;
		}
		bfmt = bh.format;
		if (!size_arg)
			size = bh.size;
		if (size == 0 || size > BLK_QCOW2_CREATE_MAX) {
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
	char err[PATH_MAX + 256], path[PATH_MAX];
	enum blk_format format = BLK_FORMAT_AUTO;
	bool as_json = false;
	json_t *top = NULL, *chain = NULL;
	struct blk_image_info h;
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
		/* Each level as its overlay's header names its format (a
		 * backing file declared raw is not probed), as QEMU reads it. */
		if (blk_image_info(path, format, &h, err, sizeof(err))) {
			fprintf(stderr, "vmrun img info: %s%s\n", level ? "backing file: " : "", err);
			goto out;
		}
		/* Names are shown made valid UTF-8 (vmrun/utf8.h): jansson
		 * refuses raw bytes, and a level must not vanish for that. */
		o = json_pack("{s:o,s:s,s:I,s:I}", "filename", utf8_json_string(path), "format",
			      blk_format_name(h.format), "virtual-size", (json_int_t)h.size,
			      "actual-size", (json_int_t)h.file_size);
		json_object_set_new(o, "dirty-flag", json_boolean(h.dirty));
		if (h.format == BLK_FORMAT_QCOW2) {
			json_object_set_new(o, "cluster-size",
					    json_integer((json_int_t)1 << h.cluster_bits));
			json_object_set_new(o, "compat",
					    json_string(h.version == 2 ? "0.10" : "1.1"));
			/* qemu-img's names for the qcow2 specifics. */
			json_object_set_new(
				o, "format-specific",
				json_pack("{s:s,s:{s:s,s:s,s:i,s:b}}", "type", "qcow2", "data",
					  "compat", h.version == 2 ? "0.10" : "1.1",
					  "compression-type", h.compression ? "zstd" : "zlib",
					  "refcount-bits", (int)h.refcount_bits, "corrupt",
					  (int)h.corrupt));
		}
		if (h.has_backing) {
			json_object_set_new(o, "backing-filename", utf8_json_string(h.backing));
			json_object_set_new(o, "full-backing-filename",
					    utf8_json_string(h.backing_path));
			if (h.backing_format[0])
				json_object_set_new(o, "backing-filename-format",
						    utf8_json_string(h.backing_format));
		}
		if (level == 0)
			top = json_deep_copy(o);
		if (!o || !top || json_array_append_new(chain, o)) {
			fprintf(stderr, "vmrun img info: out of memory\n");
			goto out;
		}
		if (!h.has_backing)
			break;
		/* blk_image_info() accepted only "raw", "qcow2" or none. */
		if (parse_format(h.backing_format, &format))
			format = BLK_FORMAT_AUTO;
		snprintf(path, sizeof(path), "%s", h.backing_path);
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
			json_t *fs = json_object_get(json_object_get(o, "format-specific"), "data");

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
			if (json_is_true(json_object_get(fs, "corrupt")))
				printf("corrupt: true\n");
			if (json_is_true(json_object_get(o, "dirty-flag")))
				printf("dirty: true (lazy refcounts; a writable open repairs it)\n");
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

int img_snapshot_prepare(const char *file, enum blk_format format, struct img_snapshot *s,
			 char *err, size_t errlen)
{
	char *copy;
	const char *base_name;
	struct blk_image_info h;
	struct stat st;
	unsigned n;
	int r;

	memset(s, 0, sizeof(*s));
	if (lstat(file, &st) < 0)
		return fail(err, errlen, -errno, "cannot stat %s: %s", file, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return fail(err, errlen, -EINVAL, "%s is not a regular file", file);
	r = blk_image_info(file, format, &h, err, errlen);
	if (r)
		return r;
	if (h.size == 0 || h.size > BLK_QCOW2_CREATE_MAX || (h.size & 511))
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

int img_create_overlay(const char *path, const char *backing, enum blk_format format,
		       uint64_t *size, char *err, size_t errlen)
{
	char tmp[PATH_MAX];
	struct blk_image_info h;
	int r;

	if (backing[0] != '/')
		return fail(err, errlen, -EINVAL, "%s: the backing file name must be absolute",
			    backing);
	r = blk_image_info(backing, format, &h, err, errlen);
	if (r)
		return r;
	if (h.size == 0 || h.size > BLK_QCOW2_CREATE_MAX || (h.size & 511))
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
	if (img_snapshot_prepare(file, BLK_FORMAT_AUTO, &s, err, sizeof(err))) {
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

/* Walk the extents FILE's top image holds (@top, opened top_only).  @base
 * NULL: only check every mapping entry, before the first write.  Else copy
 * each data extent into @base (compressed clusters come out decompressed)
 * and write zeroes where the top marks zero clusters. */
static int commit_walk(struct blk *top, const char *file, struct blk *base, uint8_t *buf,
		       size_t buflen, char *err, size_t errlen)
{
	uint64_t size = blk_size(top), off = 0;

	while (off < size) {
		enum blk_extent kind;
		uint64_t len;
		int r = blk_top_extent(top, off, size - off, &kind, &len);

		if (r)
			return fail(err, errlen, r, "%s: bad mapping at guest offset %" PRIu64
				    " (%s); nothing can be committed from it", file, off,
				    strerror(-r));
		if (base && kind == BLK_EXTENT_ZERO) {
			r = blk_io_wait(base, BLK_WRITE_ZEROES, off, NULL, len);
			if (r)
				return fail(err, errlen, r, "writing zeroes to the backing file at %"
					    PRIu64 ": %s", off, strerror(-r));
		}
		for (uint64_t done = 0; base && kind == BLK_EXTENT_DATA && done < len;) {
			uint64_t n = len - done < buflen ? len - done : buflen;

			r = blk_io_wait(top, BLK_READ, off + done, buf, n);
			if (r)
				return fail(err, errlen, r, "reading %s at %" PRIu64 ": %s", file,
					    off + done, strerror(-r));
			r = blk_io_wait(base, BLK_WRITE, off + done, buf, n);
			if (r)
				return fail(err, errlen, r, "writing the backing file at %" PRIu64
					    ": %s", off + done, strerror(-r));
			done += n;
		}
		off += len;
	}
	return 0;
}

static int img_commit(int argc, char *const argv[])
{
	char err[PATH_MAX + 256], tmp[PATH_MAX];
	const size_t buflen = 1u << 20;
	struct blk_open_opts top_opts = {
		/* The lock is lock_fd's; the backing file is opened below,
		 * writable, by a handle of its own. */
		.readonly = true, .no_lock = true, .top_only = true, .format = BLK_FORMAT_QCOW2,
	};
	struct blk_open_opts opts = { 0 };
	struct blk *top = NULL, *base = NULL;
	struct blk_image_info h, bh;
	struct stat bst;
	bool restore_mode = false;
	const char *file, *bpath;
	uint8_t *buf = NULL;
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
	if (blk_image_info(file, BLK_FORMAT_AUTO, &h, err, sizeof(err))) {
		fprintf(stderr, "vmrun img commit: %s\n", err);
		goto out;
	}
	if (h.format != BLK_FORMAT_QCOW2 || !h.has_backing) {
		fprintf(stderr, "vmrun img commit: %s is not a qcow2 overlay with a backing file\n",
			file);
		goto out;
	}
	if (h.dirty || h.corrupt) {
		fprintf(stderr, "vmrun img commit: %s is marked %s: repair it first ('qemu-img check"
			" -r all', or%s)\n", file, h.corrupt ? "corrupt" : "dirty",
			h.corrupt ? " never" : " one writable open by vmrun");
		goto out;
	}
	/* Recreated empty at the end: refused now if that cannot be done. */
	if (!h.size || h.size % 512 || h.size > BLK_QCOW2_CREATE_MAX) {
		fprintf(stderr, "vmrun img commit: %s: a virtual size of %" PRIu64 " bytes is not"
			" supported here\n", file, h.size);
		goto out;
	}
	/* The same parser and checks as a VM's disk: every table placed
	 * inside the file and clear of the others, the L1 table's size
	 * bounded. */
	r = blk_open(file, &top_opts, NULL, &top, err, sizeof(err));
	if (r) {
		fprintf(stderr, "vmrun img commit: %s\n", err);
		goto out;
	}
	bpath = h.backing_path;
	if (h.backing_format[0])
		(void)parse_format(h.backing_format, &opts.format); /* raw or qcow2: checked */
	if (blk_image_info(bpath, opts.format, &bh, err, sizeof(err))) {
		fprintf(stderr, "vmrun img commit: backing file: %s\n", err);
		goto out;
	}
	opts.format = bh.format;
	if (bh.size < h.size) {
		fprintf(stderr, "vmrun img commit: backing file %s (%" PRIu64 " bytes) is smaller"
			" than %s (%" PRIu64 " bytes)\n", bpath, bh.size, file, h.size);
		goto out;
	}
	/* Check every mapping entry before the first write. */
	if (commit_walk(top, file, NULL, NULL, 0, err, sizeof(err))) {
		fprintf(stderr, "vmrun img commit: %s\n", err);
		goto out;
	}
	buf = malloc(buflen);
	if (!buf) {
		fprintf(stderr, "vmrun img commit: out of memory\n");
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
	if (blk_size(base) < blk_size(top)) {
		fprintf(stderr, "vmrun img commit: backing file %s is smaller than %s\n", bpath,
			file);
		goto out;
	}
	if (commit_walk(top, file, base, buf, buflen, err, sizeof(err))) {
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
	blk_close(top);
	top = NULL;
	/* The base has everything: empty the overlay. */
	r = write_temp_image(file, h.size, h.backing, blk_format_name(bh.format), tmp,
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
	free(buf);
	blk_close(base);
	blk_close(top);
	if (restore_mode && chmod(h.backing_path, bst.st_mode & 07777) < 0) {
		fprintf(stderr, "vmrun img commit: cannot make %s read-only again: %s\n",
			h.backing_path, strerror(errno));
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

/* `vmrun img COMMAND ...`: offline disk image management (src/snapshot/img.c).
 *
 *   vmrun img create [-b BACKING [-F raw|qcow2]] FILE [SIZE]
 *   vmrun img info FILE [--json]
 *   vmrun img snapshot FILE
 *   vmrun img commit FILE
 *
 * create writes a qcow2 v3 image (64 KiB clusters, 16-bit refcounts) in
 * QEMU's layout; snapshot freezes FILE as a read-only base FILE.base-N and
 * puts a new empty overlay at FILE; commit copies the overlay's allocated
 * clusters into its backing file and empties the overlay (QEMU's
 * `qemu-img commit`).  None of them ever leaves FILE missing or naming a
 * half-written image: new images are written under a temporary name,
 * fsynced, then renamed (or linked) into place.  See README.md, "Disk
 * images", for the naming and the order of every step. */
#ifndef VMRUN_IMG_H
#define VMRUN_IMG_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmrun/block.h"

/* Exit statuses of `vmrun img` (the same values as VMRUN_EXIT_USAGE and
 * VMRUN_EXIT_SETUP). */
enum img_status {
	IMG_OK = 0,
	IMG_USAGE = 2,  /* bad arguments: a one-line message on stderr */
	IMG_FAILED = 4, /* the command failed: a one-line message on stderr; FILE unchanged */
};

/* The steps of an overlay snapshot of FILE, for `vmrun img snapshot` and
 * for a running VM's disk (src/snapshot/live.c), in this order:
 *
 *   img_snapshot_prepare  picks FILE.base-N, writes the new overlay (backing
 *                         "basename(FILE).base-N", FILE's format: @format,
 *                         the one the caller uses it as, or AUTO to probe
 *                         it; a running raw disk is raw whatever its guest
 *                         wrote into it) under a
 *                         temporary name and fsyncs it, links FILE to
 *                         FILE.base-N and fsyncs the directory.  FILE is
 *                         unchanged.  On failure nothing is left behind.
 *   img_snapshot_switch   renames the overlay over FILE and fsyncs the
 *                         directory: from here FILE is the new overlay.
 *   img_snapshot_finish   makes FILE.base-N read-only (0444).
 *   img_snapshot_abort    undoes prepare (and switch, when it happened:
 *                         FILE.base-N is renamed back to FILE).
 *
 * The caller holds FILE's lock (or knows that nobody writes FILE) and has
 * flushed what it wrote.  Each returns 0 or -errno with a one-line reason
 * in @err. */
struct img_snapshot {
	char file[PATH_MAX];
	char base[PATH_MAX];   /* FILE.base-N */
	char tmp[PATH_MAX];    /* the overlay until switch */
	bool prepared, switched;
};

int img_snapshot_prepare(const char *file, enum blk_format format, struct img_snapshot *s,
			 char *err, size_t errlen) __attribute__((warn_unused_result));
int img_snapshot_switch(struct img_snapshot *s, char *err, size_t errlen)
	__attribute__((warn_unused_result));
int img_snapshot_finish(struct img_snapshot *s, char *err, size_t errlen)
	__attribute__((warn_unused_result));
int img_snapshot_abort(struct img_snapshot *s);

/* Create a new, empty qcow2 overlay at @path (which must not exist) over
 * the image @backing (an absolute path, recorded as such) in @format (AUTO
 * probes it; a disk that was raw must be named RAW: its guest may have
 * written a qcow2 header into it).  The overlay is written under a temporary name, fsynced, then
 * linked into place.  Its virtual size (the backing file's) goes to *@size
 * when @size is not NULL.  Returns 0 or -errno with a one-line reason. */
int img_create_overlay(const char *path, const char *backing, enum blk_format format,
		       uint64_t *size, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Run `vmrun img`; @argv[0] is "img".  Returns an enum img_status.
 * Writes results to stdout, errors (one line each) to stderr. */
int img_main(int argc, char *const argv[]);

#endif

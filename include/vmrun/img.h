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

/* Exit statuses of `vmrun img` (the same values as VMRUN_EXIT_USAGE and
 * VMRUN_EXIT_SETUP). */
enum img_status {
	IMG_OK = 0,
	IMG_USAGE = 2,  /* bad arguments: a one-line message on stderr */
	IMG_FAILED = 4, /* the command failed: a one-line message on stderr; FILE unchanged */
};

/* Run `vmrun img`; @argv[0] is "img".  Returns an enum img_status.
 * Writes results to stdout, errors (one line each) to stderr. */
int img_main(int argc, char *const argv[]);

#endif

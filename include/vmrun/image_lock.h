/* Image locks that vmrun and QEMU's tools both understand (src/block/lock.c).
 *
 * vmrun has always taken flock() on its images: a second vmrun cannot
 * write an image one already writes.  QEMU (qemu-system-*, qemu-img,
 * qemu-io, qemu-nbd) ignores flock and instead takes open-file-description
 * byte-range locks (fcntl F_OFD_SETLK, all of them F_RDLCK) in its
 * file-posix driver, one byte per block-layer permission:
 *
 *   byte 100 + bit: this user holds the permission
 *   byte 200 + bit: this user does not let others hold it
 *
 * with the permission bits of QEMU 7.2 (include/block/block-common.h):
 * consistent read 0, write 1, write-unchanged 2, resize 3.  Before using a
 * file, a user asks (F_OFD_GETLK with F_WRLCK) whether anyone else holds
 * byte 200 + p for each permission p it wants, and byte 100 + p for each
 * permission p it does not share: any answer but F_UNLCK is a conflict.
 *
 * vmrun holds both kinds of lock on every image file it opens, so that
 * either side refuses an image the other uses.  Its two kinds of user are
 * the ones QEMU's qcow2 driver makes of an image file (measured against
 * qemu-io 7.2 in /proc/locks):
 *
 *   writer (BLK_LOCK_EXCLUSIVE: a writable disk, `vmrun img snapshot` and
 *   `commit`): holds consistent read, write and resize; shares consistent
 *   read and write-unchanged.  Locks 100, 101, 103, 201, 203.
 *   reader (BLK_LOCK_SHARED: a read-only disk, a backing file, `vmrun img
 *   info`): holds consistent read; shares consistent read and
 *   write-unchanged.  Locks 100, 201, 203.
 *
 * So two readers coexist, a reader keeps every writer off (it does not
 * share write) and a writer keeps every reader and writer off (it holds
 * write).  vmrun takes the same bytes on raw images as on qcow2 ones (QEMU
 * on raw shares resize): vmrun never follows an image that changes size
 * under it.  `qemu-img info -U` (force-share) takes and checks nothing and
 * so works against a running vmrun, as against a running QEMU. */
#ifndef VMRUN_IMAGE_LOCK_H
#define VMRUN_IMAGE_LOCK_H

#include <stddef.h>

#include "vmrun/block.h"

/* QEMU's block-layer permissions, as bits (1 << bit). */
#define IMAGE_PERM_CONSISTENT_READ 0x1u
#define IMAGE_PERM_WRITE           0x2u
#define IMAGE_PERM_WRITE_UNCHANGED 0x4u
#define IMAGE_PERM_RESIZE          0x8u
#define IMAGE_PERM_ALL             0xfu
#define IMAGE_PERM_COUNT           4u

/* Offsets of the lock bytes: permission held, permission not shared. */
#define IMAGE_LOCK_PERM_BASE   100u
#define IMAGE_LOCK_SHARED_BASE 200u

/* Most bytes one mode locks or tests (2 * IMAGE_PERM_COUNT). */
#define IMAGE_LOCK_MAX_BYTES 8u

/* The permissions a holder of @mode holds (*@perm) and lets others hold
 * (*@shared).  NONE holds nothing and shares everything. */
void image_lock_perms(enum blk_lock mode, unsigned *perm, unsigned *shared);

/* The byte offsets a holder of @mode locks (F_RDLCK), ascending, into
 * @out; returns how many. */
unsigned image_lock_held_bytes(enum blk_lock mode, unsigned out[IMAGE_LOCK_MAX_BYTES]);

/* The byte offsets that must not be locked by anyone else before @mode is
 * taken, in the order they are tested (the "not shared" bytes of the
 * permissions @mode holds, then the "held" bytes of those it does not
 * share, as QEMU tests them); returns how many. */
unsigned image_lock_tested_bytes(enum blk_lock mode, unsigned out[IMAGE_LOCK_MAX_BYTES]);

/* QEMU's name of the permission of lock byte @off ("consistent read",
 * "write", "write unchanged", "resize"); "?" for any other offset. */
const char *image_lock_perm_name(unsigned off);

/* Move the locks on @fd, an open file of the image @path (for messages),
 * from @from (what @fd holds now) to @to: flock (EXCLUSIVE: LOCK_EX,
 * SHARED: LOCK_SH, NONE: unlocked) and QEMU's lock bytes.  Never blocks.
 * Returns 0; -EBUSY when another process holds a lock that conflicts, with
 * "PATH: image is in use by another process (QEMU or vmrun): ..." in @err,
 * and @fd back at @from; or another -errno with a reason in @err.  A
 * filesystem (or kernel) without flock or OFD locks is not an error: the
 * lock it lacks is skipped, with a warning when @from is NONE (a first
 * lock, not a change).  @fd may be read-only: every lock is a read lock. */
int image_lock_change(int fd, const char *path, enum blk_lock from, enum blk_lock to, char *err,
		      size_t errlen) __attribute__((warn_unused_result));

#endif

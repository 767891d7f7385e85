/* Image locks vmrun and QEMU both understand (include/vmrun/image_lock.h):
 * flock() for other vmruns, and the open-file-description byte-range locks
 * of QEMU's file-posix driver for QEMU's tools and guests.
 *
 * Inside this file the lock bytes of one mode are an 8-bit mask: bit k
 * (0..3) is byte 100 + k (permission k held), bit 4 + k is byte 200 + k
 * (permission k not shared).  Written from QEMU's documented protocol and
 * its observed behaviour (qemu-io 7.2's entries in /proc/locks), not from
 * its code.
 *
 * OFD locks belong to the open file description, not the process: two
 * open()s of one file in one vmrun see each other's locks as another
 * user's (which is what keeps one image off two disks), while F_OFD_GETLK
 * never reports the asker's own locks (which lets a handle move between
 * modes).  Every lock is F_RDLCK, as QEMU's: locks never conflict with
 * each other, only the F_WRLCK probes of F_OFD_GETLK do. */
#include "vmrun/image_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/file.h>

#include "vmrun/log.h"

#define MASK_BITS 8u

void image_lock_perms(enum blk_lock mode, unsigned *perm, unsigned *shared)
{
	switch (mode) {
	case BLK_LOCK_EXCLUSIVE:
		/* QEMU's qcow2 driver on its file, read-write: metadata
		 * writes may grow the file; nobody else may write or resize
		 * what the format's metadata describes. */
		*perm = IMAGE_PERM_CONSISTENT_READ | IMAGE_PERM_WRITE | IMAGE_PERM_RESIZE;
		*shared = IMAGE_PERM_CONSISTENT_READ | IMAGE_PERM_WRITE_UNCHANGED;
		break;
	case BLK_LOCK_SHARED:
		/* A read-only image or a backing file, as QEMU holds them. */
		*perm = IMAGE_PERM_CONSISTENT_READ;
		*shared = IMAGE_PERM_CONSISTENT_READ | IMAGE_PERM_WRITE_UNCHANGED;
		break;
	default:
		*perm = 0;
		*shared = IMAGE_PERM_ALL;
		break;
	}
}

static unsigned held_mask(enum blk_lock mode)
{
	unsigned perm, shared;

	image_lock_perms(mode, &perm, &shared);
	return perm | (~shared & IMAGE_PERM_ALL) << IMAGE_PERM_COUNT;
}

/* The bytes others must not hold: "not shared" for what we hold, "held"
 * for what we do not share. */
static unsigned tested_mask(enum blk_lock mode)
{
	unsigned perm, shared;

	image_lock_perms(mode, &perm, &shared);
	if (mode == BLK_LOCK_NONE)
		return 0;
	return perm << IMAGE_PERM_COUNT | (~shared & IMAGE_PERM_ALL);
}

static unsigned bit_offset(unsigned k)
{
	return k < IMAGE_PERM_COUNT ? IMAGE_LOCK_PERM_BASE + k
				    : IMAGE_LOCK_SHARED_BASE + (k - IMAGE_PERM_COUNT);
}

unsigned image_lock_held_bytes(enum blk_lock mode, unsigned out[IMAGE_LOCK_MAX_BYTES])
{
	unsigned mask = held_mask(mode), n = 0;

	for (unsigned k = 0; k < MASK_BITS; k++)
		if (mask & 1u << k)
			out[n++] = bit_offset(k);
	return n;
}

/* QEMU's order: the "not shared" bytes (bits 4..7) first. */
static unsigned test_order(unsigned i)
{
	return (i + IMAGE_PERM_COUNT) % MASK_BITS;
}

unsigned image_lock_tested_bytes(enum blk_lock mode, unsigned out[IMAGE_LOCK_MAX_BYTES])
{
	unsigned mask = tested_mask(mode), n = 0;

	for (unsigned i = 0; i < MASK_BITS; i++)
		if (mask & 1u << test_order(i))
			out[n++] = bit_offset(test_order(i));
	return n;
}

const char *image_lock_perm_name(unsigned off)
{
	static const char *const names[IMAGE_PERM_COUNT] = {
		"consistent read", "write", "write unchanged", "resize",
	};

	if (off >= IMAGE_LOCK_PERM_BASE && off < IMAGE_LOCK_PERM_BASE + IMAGE_PERM_COUNT)
		return names[off - IMAGE_LOCK_PERM_BASE];
	if (off >= IMAGE_LOCK_SHARED_BASE && off < IMAGE_LOCK_SHARED_BASE + IMAGE_PERM_COUNT)
		return names[off - IMAGE_LOCK_SHARED_BASE];
	return "?";
}

/* The errors that mean "no such lock here" (a filesystem or kernel without
 * it), as opposed to a conflict or a real failure. */
static bool unsupported(int e)
{
	return e == ENOLCK || e == EOPNOTSUPP || e == EINVAL || e == ENOSYS;
}

/* flock @fd into @mode: 0, -EBUSY, -ENOTSUP (no flock here) or -errno. */
static int flock_to(int fd, enum blk_lock mode)
{
	int op = mode == BLK_LOCK_EXCLUSIVE ? LOCK_EX : mode == BLK_LOCK_SHARED ? LOCK_SH : LOCK_UN;

	if (flock(fd, op | LOCK_NB) == 0)
		return 0;
	if (errno == EWOULDBLOCK)
		return -EBUSY;
	return unsupported(errno) ? -ENOTSUP : -errno;
}

/* Byte @off of @fd read-locked (@type F_RDLCK) or unlocked (F_UNLCK):
 * 0, -EBUSY (someone holds a write lock there), -ENOTSUP or -errno. */
static int ofd_set(int fd, unsigned off, short type)
{
	struct flock fl = {
		.l_type = type, .l_whence = SEEK_SET, .l_start = off, .l_len = 1,
	};

	if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
		return 0;
	if (errno == EAGAIN || errno == EACCES)
		return -EBUSY;
	return unsupported(errno) ? -ENOTSUP : -errno;
}

/* Whether another open file description locks byte @off of @fd: 1 yes,
 * 0 no, -ENOTSUP or -errno. */
static int ofd_taken(int fd, unsigned off)
{
	struct flock fl = {
		.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = off, .l_len = 1,
	};

	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return unsupported(errno) ? -ENOTSUP : -errno;
	return fl.l_type != F_UNLCK;
}

/* Unlock the bytes of @mask on @fd, ignoring errors (an unlock that fails
 * leaves a byte locked until close: too strict, never unsafe). */
static void ofd_unlock_mask(int fd, unsigned mask)
{
	for (unsigned k = 0; k < MASK_BITS; k++)
		if (mask & 1u << k)
			(void)ofd_set(fd, bit_offset(k), F_UNLCK);
}

/* The OFD half of image_lock_change(): take the bytes @to adds, test
 * @to's bytes against others, drop the bytes @to no longer holds.  On
 * failure @fd holds @from's bytes again; *@conflict is the byte found
 * taken (-EBUSY).  -ENOTSUP: no OFD locks here (nothing held). */
static int ofd_change(int fd, enum blk_lock from, enum blk_lock to, unsigned *conflict)
{
	unsigned have = held_mask(from), want = held_mask(to), test = tested_mask(to);
	unsigned added = 0;
	int r;

	for (unsigned k = 0; k < MASK_BITS; k++) {
		if (!(want & ~have & 1u << k))
			continue;
		r = ofd_set(fd, bit_offset(k), F_RDLCK);
		if (r) {
			*conflict = bit_offset(k);
			goto undo;
		}
		added |= 1u << k;
	}
	for (unsigned i = 0; i < MASK_BITS; i++) {
		unsigned k = test_order(i);

		if (!(test & 1u << k))
			continue;
		r = ofd_taken(fd, bit_offset(k));
		if (r) {
			r = r > 0 ? -EBUSY : r;
			*conflict = bit_offset(k);
			goto undo;
		}
	}
	ofd_unlock_mask(fd, have & ~want);
	return 0;
undo:
	ofd_unlock_mask(fd, added);
	return r;
}

int image_lock_change(int fd, const char *path, enum blk_lock from, enum blk_lock to, char *err,
		      size_t errlen)
{
	bool first = from == BLK_LOCK_NONE, have_flock = true;
	unsigned conflict = 0;
	int r;

	if (from == to)
		return 0;
	r = flock_to(fd, to);
	if (r == -EBUSY)
		return errmsg(-EBUSY, err, errlen,
			      "%s: image is in use by another process (QEMU or vmrun): it holds a"
			      " conflicting flock", path);
	if (r == -ENOTSUP) {
		have_flock = false;
		if (first)
			log_warn("%s: the filesystem has no flock; a second vmrun is kept off only"
				 " through QEMU's byte-range locks", path);
	} else if (r) {
		return errmsg(r, err, errlen, "cannot lock %s: %s", path, strerror(-r));
	}

	r = ofd_change(fd, from, to, &conflict);
	if (r == -ENOTSUP) {
		if (first && to != BLK_LOCK_NONE)
			log_warn("%s: cannot take QEMU's byte-range locks here (no F_OFD_SETLK);"
				 " QEMU's tools are not kept off this image", path);
		return 0;
	}
	if (!r)
		return 0;
	/* Back to where @fd was; a failure here only leaves it stricter
	 * (an exclusive flock kept) or looser (a shared one dropped), both
	 * of which the caller's error path handles by closing or retrying. */
	if (have_flock)
		(void)flock_to(fd, from);
	if (r == -EBUSY) {
		bool not_shared = conflict >= IMAGE_LOCK_SHARED_BASE;

		return errmsg(-EBUSY, err, errlen,
			      "%s: image is in use by another process (QEMU or vmrun): it %s \"%s\"",
			      path, not_shared ? "does not share" : "holds",
			      image_lock_perm_name(conflict));
	}
	return errmsg(r, err, errlen, "cannot lock %s (byte %u): %s", path, conflict,
		      strerror(-r));
}

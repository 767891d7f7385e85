/* Image locks QEMU understands (src/block/lock.c, include/vmrun/image_lock.h).
 *
 * The byte layout against QEMU 7.2's (what qemu-io holds in /proc/locks:
 * a read-write qcow2 user 100-101, 103, 201, 203; a read-only one 100,
 * 201, 203), then the semantics on a real file: OFD locks belong to an
 * open file description, so two open()s in this one process are two
 * users, and a third descriptor probes each byte with F_OFD_GETLK as QEMU
 * does.  The integration tests (tests/integration/lock_tests.py) run the
 * same against qemu-img, qemu-io and qemu-nbd. */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "vmrun/image_lock.h"
#include "vmrun/img.h"

struct fix {
	char path[64];
	char err[4200];
};

static int setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));
	int fd;

	assert_non_null(f);
	snprintf(f->path, sizeof(f->path), "/var/tmp/vmrun-lock-XXXXXX");
	fd = mkstemp(f->path);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	close(fd);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fix *f = *state;

	unlink(f->path);
	free(f);
	return 0;
}

static int open_ro(const struct fix *f)
{
	int fd = open(f->path, O_RDONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	return fd;
}

/* Whether another description than @fd's holds byte @off. */
static bool byte_taken(int fd, unsigned off)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = off, .l_len = 1 };

	assert_int_equal(fcntl(fd, F_OFD_GETLK, &fl), 0);
	return fl.l_type != F_UNLCK;
}

/* The set of QEMU lock bytes (100..103, 200..203) others hold, as a mask:
 * bit k for 100 + k, bit 4 + k for 200 + k. */
static unsigned taken_mask(const struct fix *f)
{
	int probe = open_ro(f);
	unsigned mask = 0;

	for (unsigned k = 0; k < 8; k++)
		if (byte_taken(probe, k < 4 ? 100 + k : 200 + k - 4))
			mask |= 1u << k;
	close(probe);
	return mask;
}

#define M(off) (1u << ((off) < 200 ? (off) - 100 : (off) - 200 + 4))

static void test_layout(void **state)
{
	static const unsigned writer_held[] = { 100, 101, 103, 201, 203 };
	static const unsigned writer_tested[] = { 200, 201, 203, 101, 103 };
	static const unsigned reader_held[] = { 100, 201, 203 };
	static const unsigned reader_tested[] = { 200, 101, 103 };
	unsigned got[IMAGE_LOCK_MAX_BYTES], perm, shared, n;

	(void)state;
	image_lock_perms(BLK_LOCK_EXCLUSIVE, &perm, &shared);
	assert_int_equal(perm, IMAGE_PERM_CONSISTENT_READ | IMAGE_PERM_WRITE | IMAGE_PERM_RESIZE);
	assert_int_equal(shared, IMAGE_PERM_CONSISTENT_READ | IMAGE_PERM_WRITE_UNCHANGED);
	image_lock_perms(BLK_LOCK_SHARED, &perm, &shared);
	assert_int_equal(perm, IMAGE_PERM_CONSISTENT_READ);
	assert_int_equal(shared, IMAGE_PERM_CONSISTENT_READ | IMAGE_PERM_WRITE_UNCHANGED);
	image_lock_perms(BLK_LOCK_NONE, &perm, &shared);
	assert_int_equal(perm, 0);
	assert_int_equal(shared, IMAGE_PERM_ALL);

	n = image_lock_held_bytes(BLK_LOCK_EXCLUSIVE, got);
	assert_int_equal(n, 5);
	assert_memory_equal(got, writer_held, sizeof(writer_held));
	n = image_lock_tested_bytes(BLK_LOCK_EXCLUSIVE, got);
	assert_int_equal(n, 5);
	assert_memory_equal(got, writer_tested, sizeof(writer_tested));
	n = image_lock_held_bytes(BLK_LOCK_SHARED, got);
	assert_int_equal(n, 3);
	assert_memory_equal(got, reader_held, sizeof(reader_held));
	n = image_lock_tested_bytes(BLK_LOCK_SHARED, got);
	assert_int_equal(n, 3);
	assert_memory_equal(got, reader_tested, sizeof(reader_tested));
	assert_int_equal(image_lock_held_bytes(BLK_LOCK_NONE, got), 0);
	assert_int_equal(image_lock_tested_bytes(BLK_LOCK_NONE, got), 0);

	assert_string_equal(image_lock_perm_name(100), "consistent read");
	assert_string_equal(image_lock_perm_name(201), "write");
	assert_string_equal(image_lock_perm_name(102), "write unchanged");
	assert_string_equal(image_lock_perm_name(203), "resize");
	assert_string_equal(image_lock_perm_name(104), "?");
}

/* The bytes really held on the file, and flock with them. */
static void test_bytes_on_file(void **state)
{
	struct fix *f = *state;
	int a = open_ro(f), other = open_ro(f);

	assert_int_equal(image_lock_change(a, f->path, BLK_LOCK_NONE, BLK_LOCK_EXCLUSIVE, f->err,
					   sizeof(f->err)), 0);
	assert_int_equal(taken_mask(f), M(100) | M(101) | M(103) | M(201) | M(203));
	assert_int_equal(flock(other, LOCK_SH | LOCK_NB), -1);
	assert_int_equal(image_lock_change(a, f->path, BLK_LOCK_EXCLUSIVE, BLK_LOCK_SHARED, f->err,
					   sizeof(f->err)), 0);
	assert_int_equal(taken_mask(f), M(100) | M(201) | M(203));
	assert_int_equal(flock(other, LOCK_SH | LOCK_NB), 0);
	assert_int_equal(flock(other, LOCK_UN), 0);
	assert_int_equal(image_lock_change(a, f->path, BLK_LOCK_SHARED, BLK_LOCK_NONE, f->err,
					   sizeof(f->err)), 0);
	assert_int_equal(taken_mask(f), 0);
	assert_int_equal(flock(other, LOCK_EX | LOCK_NB), 0);
	close(other);
	/* Taken again after a release (migration's hand-back). */
	assert_int_equal(image_lock_change(a, f->path, BLK_LOCK_NONE, BLK_LOCK_EXCLUSIVE, f->err,
					   sizeof(f->err)), 0);
	assert_int_equal(taken_mask(f), M(100) | M(101) | M(103) | M(201) | M(203));
	close(a);
	assert_int_equal(taken_mask(f), 0);
}

/* Who keeps whom off: two readers coexist, a reader blocks a writer and
 * the reverse, two writers conflict. */
static void test_conflicts(void **state)
{
	struct fix *f = *state;
	int a = open_ro(f), b = open_ro(f);

	assert_int_equal(image_lock_change(a, f->path, BLK_LOCK_NONE, BLK_LOCK_SHARED, f->err,
					   sizeof(f->err)), 0);
	assert_int_equal(image_lock_change(b, f->path, BLK_LOCK_NONE, BLK_LOCK_SHARED, f->err,
					   sizeof(f->err)), 0);
	/* A reader upgrading beside another reader: refused, and still a reader. */
	assert_int_equal(image_lock_change(b, f->path, BLK_LOCK_SHARED, BLK_LOCK_EXCLUSIVE, f->err,
					   sizeof(f->err)), -EBUSY);
	assert_non_null(strstr(f->err, "image is in use by another process (QEMU or vmrun)"));
	assert_int_equal(taken_mask(f), M(100) | M(201) | M(203));
	assert_int_equal(image_lock_change(a, f->path, BLK_LOCK_SHARED, BLK_LOCK_NONE, f->err,
					   sizeof(f->err)), 0);
	assert_int_equal(taken_mask(f), M(100) | M(201) | M(203)); /* b's */
	assert_int_equal(image_lock_change(b, f->path, BLK_LOCK_SHARED, BLK_LOCK_EXCLUSIVE, f->err,
					   sizeof(f->err)), 0);
	/* A writer keeps readers and writers off. */
	assert_int_equal(image_lock_change(a, f->path, BLK_LOCK_NONE, BLK_LOCK_SHARED, f->err,
					   sizeof(f->err)), -EBUSY);
	assert_int_equal(image_lock_change(a, f->path, BLK_LOCK_NONE, BLK_LOCK_EXCLUSIVE, f->err,
					   sizeof(f->err)), -EBUSY);
	assert_int_equal(taken_mask(f), M(100) | M(101) | M(103) | M(201) | M(203));
	close(a);
	close(b);
}

/* QEMU's bytes alone (no flock, as qemu-io holds them) are enough to keep
 * vmrun off, and the message says which permission collided. */
static void test_qemu_bytes_only(void **state)
{
	struct fix *f = *state;
	int q = open_ro(f), a = open_ro(f);
	struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 101, .l_len = 1 };

	/* A QEMU writer on a raw image that shares everything but holds write. */
	assert_int_equal(fcntl(q, F_OFD_SETLK, &fl), 0);
	assert_int_equal(image_lock_change(a, f->path, BLK_LOCK_NONE, BLK_LOCK_SHARED, f->err,
					   sizeof(f->err)), -EBUSY);
	assert_non_null(strstr(f->err, "it holds \"write\""));
	/* Nothing of ours left behind: neither the bytes nor the flock. */
	assert_int_equal(taken_mask(f), M(101));
	assert_int_equal(flock(q, LOCK_EX | LOCK_NB), 0);
	close(q);
	assert_int_equal(image_lock_change(a, f->path, BLK_LOCK_NONE, BLK_LOCK_EXCLUSIVE, f->err,
					   sizeof(f->err)), 0);
	close(a);
}

/* The block layer: a qcow2 overlay locks its top as a writer and its
 * backing file as a reader; blk_set_lock() moves the top (live snapshot:
 * SHARED; migration: NONE, then EXCLUSIVE again) and a refused re-take
 * leaves the handle as it was. */
static void test_blk_locks(void **state)
{
	struct fix *f = *state, top = { .path = "" };
	struct blk_open_opts opts = { .no_aio = true, .format = BLK_FORMAT_QCOW2 };
	struct blk *b;
	int other;

	snprintf(top.path, sizeof(top.path), "%.48s.top", f->path);
	unlink(top.path);
	assert_int_equal(img_create_overlay(top.path, f->path, BLK_FORMAT_AUTO, NULL, f->err, sizeof(f->err)), 0);
	assert_int_equal(blk_open(top.path, &opts, NULL, &b, f->err, sizeof(f->err)), 0);
	assert_int_equal(taken_mask(&top), M(100) | M(101) | M(103) | M(201) | M(203));
	assert_int_equal(taken_mask(f), M(100) | M(201) | M(203));

	assert_int_equal(blk_set_lock(b, BLK_LOCK_SHARED), 0);
	assert_int_equal(taken_mask(&top), M(100) | M(201) | M(203));
	assert_int_equal(blk_set_lock(b, BLK_LOCK_NONE), 0);
	assert_int_equal(taken_mask(&top), 0);
	/* Someone else reads it meanwhile: the writer's lock cannot come back. */
	other = open_ro(&top);
	assert_int_equal(image_lock_change(other, top.path, BLK_LOCK_NONE, BLK_LOCK_SHARED,
					   f->err, sizeof(f->err)), 0);
	assert_int_equal(blk_set_lock(b, BLK_LOCK_EXCLUSIVE), -EBUSY);
	close(other);
	assert_int_equal(taken_mask(&top), 0);
	assert_int_equal(blk_set_lock(b, BLK_LOCK_EXCLUSIVE), 0);
	assert_int_equal(taken_mask(&top), M(100) | M(101) | M(103) | M(201) | M(203));
	/* A second open of the image in this process is another user. */
	{
		struct blk *b2;

		assert_int_equal(blk_open(top.path, &opts, NULL, &b2, f->err, sizeof(f->err)),
				 -EBUSY);
		assert_non_null(strstr(f->err, "image is in use by another process"));
	}
	blk_close(b);
	assert_int_equal(taken_mask(&top), 0);
	assert_int_equal(taken_mask(f), 0);
	/* no_lock (an incoming migration's first look): nothing on the top
	 * until a lock is asked for. */
	opts.no_lock = true;
	assert_int_equal(blk_open(top.path, &opts, NULL, &b, f->err, sizeof(f->err)), 0);
	assert_int_equal(taken_mask(&top), 0);
	assert_int_equal(taken_mask(f), M(100) | M(201) | M(203));
	assert_int_equal(blk_set_lock(b, BLK_LOCK_EXCLUSIVE), 0);
	assert_int_equal(taken_mask(&top), M(100) | M(101) | M(103) | M(201) | M(203));
	blk_close(b);
	unlink(top.path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layout),
		cmocka_unit_test_setup_teardown(test_bytes_on_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_conflicts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_qemu_bytes_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_blk_locks, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

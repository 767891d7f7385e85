/* The raw block backend (src/block/raw.c), against include/vmrun/block.h.
 *
 * Every data test runs in four modes: Linux AIO and the preadv/pwritev
 * fallback, each with the page cache and with O_DIRECT (cache=none).  The
 * image lives in /var/tmp (a real filesystem, where O_DIRECT works; /tmp
 * may be tmpfs); plain pread/pwrite on a second descriptor is the oracle.
 * Requests are driven by a real struct evloop: submit, then run the loop
 * until the done callbacks have counted up to the target. */
#include "unit.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <linux/magic.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "vmrun/block.h"
#include "vmrun/evloop.h"

#define KiB 1024u
#define MiB (1024u * 1024u)
#define IMG_SIZE (2 * MiB)
#define BLK4K 4096u
#define IMG_DIR "/var/tmp"

struct mode {
	const char *name;
	bool no_aio;
	enum blk_cache cache;
};

static const struct mode mode_aio = { "aio", false, BLK_CACHE_WRITEBACK };
static const struct mode mode_sync = { "sync", true, BLK_CACHE_WRITEBACK };
static const struct mode mode_aio_direct = { "aio+direct", false, BLK_CACHE_NONE };
static const struct mode mode_sync_direct = { "sync+direct", true, BLK_CACHE_NONE };

struct fix {
	const struct mode *mode;
	struct evloop loop;
	struct blk *b;
	char path[64];
	int fd;                /* the oracle: plain pread/pwrite on the image */
	unsigned completed;    /* done callbacks so far */
	unsigned target;       /* stop the loop when completed reaches it */
	bool in_submit;        /* a blk_submit() is on the stack */
	bool done_in_submit;   /* a done callback ran inside blk_submit() */
};

struct treq {
	struct blk_req req;
	struct fix *f;
	int result;
	int calls;
	struct iovec iov[8];
	uint8_t *mem;          /* malloc'd, freed by treq_free() */
	void *ctx;             /* for tests with their own callbacks */
};

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

static uint8_t pat(uint64_t off, unsigned seed)
{
	uint64_t x = (off + 1) * 0x9E3779B97F4A7C15ull + seed * 0xD1B54A32D192ED03ull;

	x ^= x >> 31;
	return (uint8_t)(x >> 24);
}

static void pat_fill(uint8_t *p, uint64_t off, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = pat(off + i, seed);
}

static void pat_check(const uint8_t *p, uint64_t off, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++) {
		if (p[i] != pat(off + i, seed))
			fail_msg("byte at image offset %llu is %#x, want %#x (seed %u)",
				 (unsigned long long)(off + i), p[i], pat(off + i, seed), seed);
	}
}

static void zero_check(const uint8_t *p, uint64_t off, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (p[i])
			fail_msg("byte at image offset %llu is %#x, want 0",
				 (unsigned long long)(off + i), p[i]);
	}
}

/* The oracle: what the file holds at [@off, @off + @len). */
static void oracle_check(struct fix *f, uint64_t off, size_t len, unsigned seed)
{
	uint8_t *p = malloc(len);

	assert_non_null(p);
	assert_int_equal(pread(f->fd, p, len, (off_t)off), (ssize_t)len);
	pat_check(p, off, len, seed);
	free(p);
}

static void oracle_zero(struct fix *f, uint64_t off, size_t len)
{
	uint8_t *p = malloc(len);

	assert_non_null(p);
	assert_int_equal(pread(f->fd, p, len, (off_t)off), (ssize_t)len);
	zero_check(p, off, len);
	free(p);
}

static void oracle_write(struct fix *f, uint64_t off, size_t len, unsigned seed)
{
	uint8_t *p = malloc(len);

	assert_non_null(p);
	pat_fill(p, off, len, seed);
	assert_int_equal(pwrite(f->fd, p, len, (off_t)off), (ssize_t)len);
	free(p);
}

static void on_done(struct blk_req *req, int result)
{
	struct treq *t = req->opaque;
	struct fix *f = t->f;

	if (f->in_submit)
		f->done_in_submit = true;
	t->calls++;
	t->result = result;
	f->completed++;
	if (f->completed >= f->target)
		f->loop.stop = true;
}

static void treq_init(struct treq *t, struct fix *f, enum blk_op op, uint64_t off, uint64_t len)
{
	memset(t, 0, sizeof(*t));
	t->f = f;
	t->req.op = op;
	t->req.offset = off;
	t->req.len = len;
	t->req.done = on_done;
	t->req.opaque = t;
	t->result = 1; /* not a valid result: "never completed" */
}

/* A READ or WRITE of @len bytes in one buffer at @mem + @misalign; a
 * WRITE carries pattern @seed for its image offset. */
static void treq_rw(struct treq *t, struct fix *f, enum blk_op op, uint64_t off, size_t len,
		    size_t misalign, unsigned seed)
{
	treq_init(t, f, op, off, len);
	t->mem = malloc(len + misalign + 1);
	assert_non_null(t->mem);
	memset(t->mem, 0xaa, len + misalign + 1);
	t->iov[0].iov_base = t->mem + misalign;
	t->iov[0].iov_len = len;
	t->req.iov = t->iov;
	t->req.iovcnt = 1;
	if (op == BLK_WRITE)
		pat_fill(t->iov[0].iov_base, off, len, seed);
}

static void treq_free(struct treq *t)
{
	free(t->mem);
	t->mem = NULL;
}

static int submit(struct fix *f, struct treq *t)
{
	int r;

	f->in_submit = true;
	r = blk_submit(f->b, &t->req);
	f->in_submit = false;
	return r;
}

/* Run the loop until @target callbacks have run in all. */
static void run_until(struct fix *f, unsigned target)
{
	f->target = target;
	if (f->completed < target) {
		f->loop.stop = false;
		assert_int_equal(evloop_run(&f->loop), 0);
	}
	assert_int_equal(f->completed, target);
	assert_false(f->done_in_submit);
}

/* Submit @t, run it to completion, and return its result. */
static int do_req(struct fix *f, struct treq *t)
{
	assert_int_equal(submit(f, t), 0);
	run_until(f, f->completed + 1);
	assert_int_equal(t->calls, 1);
	return t->result;
}

static int open_blk(struct fix *f, const struct blk_open_opts *o)
{
	char err[256] = "";
	int r = blk_open(f->path, o, &f->loop, &f->b, err, sizeof(err));

	if (r)
		print_message("blk_open: %s\n", err);
	return r;
}

static void reopen(struct fix *f, bool readonly, enum blk_cache cache)
{
	struct blk_open_opts o = { .readonly = readonly, .cache = cache,
				   .no_aio = f->mode->no_aio };

	blk_close(f->b);
	f->b = NULL;
	assert_int_equal(open_blk(f, &o), 0);
}

/* Whether a plain open of @path with O_DIRECT is accepted here. */
static bool fs_takes_odirect(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* The open flags of the one descriptor of this process on @path other
 * than @except (the backend's), from /proc/self/fdinfo. */
static int backend_fd_flags(const char *path, int except)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int flags = -1, found = 0;

	assert_non_null(d);
	while ((de = readdir(d))) {
		char link[128], target[256], line[128];
		int fd = atoi(de->d_name);
		ssize_t n;
		FILE *fi;

		if (de->d_name[0] == '.' || fd == except || fd == dirfd(d))
			continue;
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		n = readlink(link, target, sizeof(target) - 1);
		if (n < 0)
			continue;
		target[n] = '\0';
		if (strcmp(target, path))
			continue;
		snprintf(link, sizeof(link), "/proc/self/fdinfo/%d", fd);
		fi = fopen(link, "r");
		assert_non_null(fi);
		while (fgets(line, sizeof(line), fi)) {
			if (!strncmp(line, "flags:", 6))
				flags = (int)strtol(line + 6, NULL, 8);
		}
		fclose(fi);
		found++;
	}
	closedir(d);
	assert_int_equal(found, 1);
	return flags;
}

/* 512 distinct 4 KiB block numbers of the image, in a fixed random order. */
static void shuffled_blocks(unsigned *blocks, unsigned n, uint32_t seed)
{
	for (unsigned i = 0; i < n; i++)
		blocks[i] = i;
	for (unsigned i = n - 1; i > 0; i--) {
		unsigned j, tmp;

		seed = seed * 1664525u + 1013904223u;
		j = (seed >> 8) % (i + 1);
		tmp = blocks[i];
		blocks[i] = blocks[j];
		blocks[j] = tmp;
	}
}

/* ------------------------------------------------------------------ */
/* Fixture: an IMG_SIZE image holding pattern 0, open in the test's mode */

static int fix_create_file(struct fix *f, const char *dir, uint64_t size)
{
	uint8_t *p;

	snprintf(f->path, sizeof(f->path), "%s/vmrun-blk-XXXXXX", dir);
	f->fd = mkstemp(f->path);
	if (f->fd < 0)
		return -1;
	p = malloc(size);
	if (!p)
		return -1;
	pat_fill(p, 0, size, 0);
	if (pwrite(f->fd, p, size, 0) != (ssize_t)size) {
		free(p);
		return -1;
	}
	free(p);
	return 0;
}

static int fix_setup_in(void **state, const char *dir)
{
	const struct mode *m = *state;
	struct blk_open_opts o = { .cache = m->cache, .no_aio = m->no_aio };
	struct fix *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	f->mode = m;
	f->fd = -1;
	*state = f;
	if (evloop_init(&f->loop))
		return -1;
	if (fix_create_file(f, dir, IMG_SIZE))
		return -1;
	return open_blk(f, &o) ? -1 : 0;
}

static int fix_setup(void **state)
{
	return fix_setup_in(state, IMG_DIR);
}

/* The same in /dev/shm; *@state is NULL (the test skips) where that is
 * not a tmpfs. */
static int fix_setup_tmpfs(void **state)
{
	struct statfs sfs;

	if (statfs("/dev/shm", &sfs) || sfs.f_type != TMPFS_MAGIC) {
		*state = NULL;
		return 0;
	}
	return fix_setup_in(state, "/dev/shm");
}

static int fix_teardown(void **state)
{
	struct fix *f = *state;

	if (!f)
		return 0;
	blk_close(f->b);
	evloop_exit(&f->loop);
	if (f->fd >= 0) {
		close(f->fd);
		unlink(f->path);
	}
	free(f);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Tests                                                               */

static void test_open_and_read_pattern(void **state)
{
	struct fix *f = *state;
	struct treq t;
	int flags;

	assert_int_equal(blk_size(f->b), IMG_SIZE);
	assert_int_equal(blk_block_size(f->b), 512);
	assert_false(blk_readonly(f->b));
	assert_true(blk_can_discard(f->b));
	if (f->mode->no_aio)
		assert_false(blk_uses_aio(f->b));
	else if (!blk_uses_aio(f->b))
		print_message("note: Linux AIO unavailable here; mode %s runs preadv/pwritev\n",
			      f->mode->name);

	/* The backend's descriptor carries O_DIRECT exactly for cache=none
	 * (where the filesystem takes it). */
	flags = backend_fd_flags(f->path, f->fd);
	assert_true(flags >= 0);
	if (f->mode->cache != BLK_CACHE_NONE)
		assert_false(flags & O_DIRECT);
	else if (fs_takes_odirect(f->path))
		assert_true(flags & O_DIRECT);
	else
		print_message("note: %s refuses O_DIRECT; not checked\n", IMG_DIR);

	/* The fixture wrote pattern 0 with pwrite; pattern 5 goes over
	 * part of it the same way, after the open. */
	oracle_write(f, 16 * KiB, 8 * KiB, 5);
	treq_rw(&t, f, BLK_READ, 8192, 64 * KiB, 0, 0);
	assert_int_equal(do_req(f, &t), 0);
	pat_check(t.iov[0].iov_base, 8192, 8 * KiB, 0);
	pat_check((uint8_t *)t.iov[0].iov_base + 8 * KiB, 16 * KiB, 8 * KiB, 5);
	pat_check((uint8_t *)t.iov[0].iov_base + 16 * KiB, 24 * KiB, 48 * KiB, 0);
	assert_int_equal(blk_inflight(f->b), 0);
	treq_free(&t);
}

static void test_write_then_oracle(void **state)
{
	struct fix *f = *state;
	const uint64_t off = 3 * BLK4K + 512, len = 12 * KiB;
	struct treq w, r;

	treq_rw(&w, f, BLK_WRITE, off, len, 0, 7);
	assert_int_equal(do_req(f, &w), 0);
	oracle_check(f, off, len, 7);
	oracle_check(f, off - 512, 512, 0); /* neighbours untouched */
	oracle_check(f, off + len, 512, 0);

	treq_rw(&r, f, BLK_READ, off - 512, len + 1024, 0, 0);
	assert_int_equal(do_req(f, &r), 0);
	pat_check(r.iov[0].iov_base, off - 512, 512, 0);
	pat_check((uint8_t *)r.iov[0].iov_base + 512, off, len, 7);
	pat_check((uint8_t *)r.iov[0].iov_base + 512 + len, off + len, 512, 0);
	treq_free(&w);
	treq_free(&r);
}

/* @n concurrent 4 KiB writes to random distinct blocks, then @n reads of
 * them; more than a virtio queue's worth when @n is large. */
static void concurrent_rw(struct fix *f, unsigned n)
{
	unsigned blocks[IMG_SIZE / BLK4K];
	struct treq *t = calloc(n, sizeof(*t));

	assert_non_null(t);
	assert_true(n <= ARRAY_LEN(blocks));
	shuffled_blocks(blocks, ARRAY_LEN(blocks), n);

	for (unsigned i = 0; i < n; i++) {
		treq_rw(&t[i], f, BLK_WRITE, (uint64_t)blocks[i] * BLK4K, BLK4K, 0, 100 + i);
		assert_int_equal(submit(f, &t[i]), 0);
	}
	assert_int_equal(blk_inflight(f->b), n);
	run_until(f, n);
	assert_int_equal(blk_inflight(f->b), 0);
	for (unsigned i = 0; i < n; i++) {
		assert_int_equal(t[i].calls, 1);
		assert_int_equal(t[i].result, 0);
		oracle_check(f, (uint64_t)blocks[i] * BLK4K, BLK4K, 100 + i);
		treq_free(&t[i]);
	}

	for (unsigned i = 0; i < n; i++) {
		treq_rw(&t[i], f, BLK_READ, (uint64_t)blocks[i] * BLK4K, BLK4K, 0, 0);
		assert_int_equal(submit(f, &t[i]), 0);
	}
	assert_int_equal(blk_inflight(f->b), n);
	run_until(f, 2 * n);
	for (unsigned i = 0; i < n; i++) {
		assert_int_equal(t[i].calls, 1);
		assert_int_equal(t[i].result, 0);
		pat_check(t[i].iov[0].iov_base, (uint64_t)blocks[i] * BLK4K, BLK4K, 100 + i);
		treq_free(&t[i]);
	}
	free(t);
}

static void test_concurrent_64(void **state)
{
	concurrent_rw(*state, 64);
}

/* Past the 128 iocb slots: the rest waits in the FIFO, nothing is lost. */
static void test_concurrent_beyond_depth(void **state)
{
	concurrent_rw(*state, 400);
}

/* Several segments of odd sizes and addresses, one empty. */
static void test_vectored(void **state)
{
	struct fix *f = *state;
	static const size_t wsz[] = { 7, 505, 1001, 0, 1047, 2000, 1584 };
	static const size_t rsz[] = { 1, 1023, 3000, 2120 };
	const uint64_t off = 64 * KiB, len = 6 * KiB;
	uint8_t *seg[ARRAY_LEN(wsz)];
	struct treq w, r;
	uint64_t pos = off;

	treq_init(&w, f, BLK_WRITE, off, len);
	for (unsigned i = 0; i < ARRAY_LEN(wsz); i++) {
		seg[i] = malloc(wsz[i] + 2);
		assert_non_null(seg[i]);
		w.iov[i].iov_base = seg[i] + 1 + (i & 1);
		w.iov[i].iov_len = wsz[i];
		pat_fill(w.iov[i].iov_base, pos, wsz[i], 9);
		pos += wsz[i];
	}
	assert_int_equal(pos, off + len);
	w.req.iov = w.iov;
	w.req.iovcnt = ARRAY_LEN(wsz);
	assert_int_equal(do_req(f, &w), 0);
	oracle_check(f, off, len, 9);
	for (unsigned i = 0; i < ARRAY_LEN(wsz); i++)
		free(seg[i]);

	treq_init(&r, f, BLK_READ, off, len);
	pos = off;
	for (unsigned i = 0; i < ARRAY_LEN(rsz); i++) {
		seg[i] = malloc(rsz[i] + 1);
		assert_non_null(seg[i]);
		r.iov[i].iov_base = seg[i] + 1;
		r.iov[i].iov_len = rsz[i];
		pos += rsz[i];
	}
	assert_int_equal(pos, off + len);
	r.req.iov = r.iov;
	r.req.iovcnt = ARRAY_LEN(rsz);
	assert_int_equal(do_req(f, &r), 0);
	pos = off;
	for (unsigned i = 0; i < ARRAY_LEN(rsz); i++) {
		pat_check(r.iov[i].iov_base, pos, rsz[i], 9);
		pos += rsz[i];
		free(seg[i]);
	}
}

/* More segments than preadv takes (IOV_MAX, 1024): still one request. */
static void test_many_segments(void **state)
{
	struct fix *f = *state;
	const unsigned n = 1100;
	const uint64_t off = 1 * MiB, len = (uint64_t)n * 512;
	struct iovec *iov = calloc(n, sizeof(*iov));
	uint8_t *mem = malloc(len + n);
	struct treq w, r;
	uint64_t pos = 0;

	assert_non_null(iov);
	assert_non_null(mem);
	/* Segments of 511 and 513 bytes, one byte apart in memory. */
	for (unsigned i = 0; i < n; i++) {
		iov[i].iov_base = mem + pos + i;
		iov[i].iov_len = i % 2 ? 513 : 511;
		pat_fill(iov[i].iov_base, off + pos, iov[i].iov_len, 61);
		pos += iov[i].iov_len;
	}
	assert_int_equal(pos, len);
	treq_init(&w, f, BLK_WRITE, off, len);
	w.req.iov = iov;
	w.req.iovcnt = n;
	assert_int_equal(do_req(f, &w), 0);
	oracle_check(f, off, len, 61);

	memset(mem, 0, len + n);
	treq_init(&r, f, BLK_READ, off, len);
	r.req.iov = iov;
	r.req.iovcnt = n;
	assert_int_equal(do_req(f, &r), 0);
	pos = 0;
	for (unsigned i = 0; i < n; i++) {
		pat_check(iov[i].iov_base, off + pos, iov[i].iov_len, 61);
		pos += iov[i].iov_len;
	}
	free(mem);
	free(iov);
}

/* A 5000-byte image is 5120 bytes to the guest: the last sector's tail
 * past the end of the file reads as zeroes. */
static void test_read_past_eof(void **state)
{
	struct fix *f = *state;
	static const size_t rsz[] = { 2500, 2000, 620 };
	struct treq t, v, bad;
	uint8_t *mem;
	uint64_t pos = 0;

	blk_close(f->b);
	f->b = NULL;
	assert_int_equal(ftruncate(f->fd, 5000), 0);
	reopen(f, false, f->mode->cache);
	assert_int_equal(blk_size(f->b), 5120);

	treq_rw(&t, f, BLK_READ, 4096, 1024, 0, 0);
	assert_int_equal(do_req(f, &t), 0);
	pat_check(t.iov[0].iov_base, 4096, 904, 0);
	zero_check((uint8_t *)t.iov[0].iov_base + 904, 5000, 120);
	treq_free(&t);

	/* The same through several segments, the end inside the last. */
	treq_init(&v, f, BLK_READ, 0, 5120);
	mem = malloc(5120 + 3);
	assert_non_null(mem);
	memset(mem, 0xaa, 5120 + 3);
	for (unsigned i = 0; i < ARRAY_LEN(rsz); i++) {
		v.iov[i].iov_base = mem + 1 + pos;
		v.iov[i].iov_len = rsz[i];
		pos += rsz[i];
	}
	v.req.iov = v.iov;
	v.req.iovcnt = ARRAY_LEN(rsz);
	assert_int_equal(do_req(f, &v), 0);
	pat_check(mem + 1, 0, 5000, 0);
	zero_check(mem + 1 + 5000, 5000, 120);
	free(mem);

	/* One sector further is past the image. */
	treq_rw(&bad, f, BLK_READ, 5120, 512, 0, 0);
	assert_int_equal(submit(f, &bad), -EINVAL);
	treq_free(&bad);
}

/* The file shrinks under an open image: the lost part reads as zeroes. */
static void test_read_after_shrink(void **state)
{
	struct fix *f = *state;
	struct treq a, b;

	assert_int_equal(ftruncate(f->fd, 512 * KiB), 0);
	assert_int_equal(blk_size(f->b), IMG_SIZE);

	treq_rw(&a, f, BLK_READ, MiB, 8 * KiB, 0, 0);
	assert_int_equal(do_req(f, &a), 0);
	zero_check(a.iov[0].iov_base, MiB, 8 * KiB);

	treq_rw(&b, f, BLK_READ, 512 * KiB - 4 * KiB, 8 * KiB, 0, 0);
	assert_int_equal(do_req(f, &b), 0);
	pat_check(b.iov[0].iov_base, 512 * KiB - 4 * KiB, 4 * KiB, 0);
	zero_check((uint8_t *)b.iov[0].iov_base + 4 * KiB, 512 * KiB, 4 * KiB);
	treq_free(&a);
	treq_free(&b);
}

/* A write stopped part way (RLIMIT_FSIZE cuts it at the limit): the first
 * part lands, the rest is retried and fails with the kernel's error. */
static void test_short_write(void **state)
{
	struct fix *f = *state;
	struct rlimit old, lim;
	void (*old_sig)(int);
	struct treq w;
	int r;

	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = MiB + 2048;
	old_sig = signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);

	treq_rw(&w, f, BLK_WRITE, MiB, 4096, 0, 13);
	assert_int_equal(submit(f, &w), 0);
	run_until(f, 1);
	r = w.result;

	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, old_sig);
	assert_int_equal(r, -EFBIG);
	oracle_check(f, MiB, 2048, 13);
	oracle_check(f, MiB + 2048, 2048, 0);
	treq_free(&w);
}

static void test_flush(void **state)
{
	struct fix *f = *state;
	struct treq w, fl, fl2;

	treq_rw(&w, f, BLK_WRITE, 0, 4096, 0, 21);
	assert_int_equal(do_req(f, &w), 0);
	treq_init(&fl, f, BLK_FLUSH, 0, 0);
	assert_int_equal(do_req(f, &fl), 0);
	oracle_check(f, 0, 4096, 21);
	treq_free(&w);

	/* A flush beside writes in flight, and with garbage in offset/len. */
	treq_rw(&w, f, BLK_WRITE, 8192, 4096, 0, 22);
	treq_init(&fl2, f, BLK_FLUSH, 12345, 77);
	assert_int_equal(submit(f, &w), 0);
	assert_int_equal(submit(f, &fl2), 0);
	run_until(f, f->completed + 2);
	assert_int_equal(w.result, 0);
	assert_int_equal(fl2.result, 0);
	treq_free(&w);
}

static void test_flush_unsafe(void **state)
{
	struct fix *f = *state;
	struct treq w, fl;

	reopen(f, false, BLK_CACHE_UNSAFE);
	treq_rw(&w, f, BLK_WRITE, 4096, 4096, 0, 23);
	assert_int_equal(do_req(f, &w), 0);
	treq_init(&fl, f, BLK_FLUSH, 0, 0);
	assert_int_equal(do_req(f, &fl), 0);
	oracle_check(f, 4096, 4096, 23);
	treq_free(&w);
}

static void test_discard(void **state)
{
	struct fix *f = *state;
	const uint64_t off = 256 * KiB, len = 64 * KiB;
	struct treq t;

	treq_init(&t, f, BLK_DISCARD, off, len);
	assert_int_equal(do_req(f, &t), 0);
	oracle_check(f, off - 4096, 4096, 0);
	oracle_check(f, off + len, 4096, 0);
	if (blk_can_discard(f->b))
		oracle_zero(f, off, len);
	else
		print_message("note: no hole punching on %s; discard not checked\n", IMG_DIR);
	assert_int_equal(lseek(f->fd, 0, SEEK_END), IMG_SIZE); /* size kept */
}

static void test_write_zeroes(void **state)
{
	struct fix *f = *state;
	const uint64_t off = 512 * KiB + 4096, len = 36 * KiB + 512;
	struct treq z, r;

	treq_init(&z, f, BLK_WRITE_ZEROES, off, len);
	assert_int_equal(do_req(f, &z), 0);
	oracle_zero(f, off, len);
	oracle_check(f, off - 512, 512, 0);
	oracle_check(f, off + len, 512, 0);

	treq_rw(&r, f, BLK_READ, off, len, 0, 0);
	assert_int_equal(do_req(f, &r), 0);
	zero_check(r.iov[0].iov_base, off, len);
	treq_free(&r);
}

static void test_readonly(void **state)
{
	struct fix *f = *state;
	struct treq w, d, z, r, fl;

	reopen(f, true, f->mode->cache);
	assert_true(blk_readonly(f->b));
	assert_false(blk_can_discard(f->b));

	treq_rw(&w, f, BLK_WRITE, 0, 4096, 0, 31);
	treq_init(&d, f, BLK_DISCARD, 0, 4096);
	treq_init(&z, f, BLK_WRITE_ZEROES, 0, 4096);
	assert_int_equal(submit(f, &w), -EROFS);
	assert_int_equal(submit(f, &d), -EROFS);
	assert_int_equal(submit(f, &z), -EROFS);
	assert_int_equal(blk_inflight(f->b), 0);

	treq_rw(&r, f, BLK_READ, 0, 4096, 0, 0);
	treq_init(&fl, f, BLK_FLUSH, 0, 0);
	assert_int_equal(submit(f, &r), 0);
	assert_int_equal(submit(f, &fl), 0);
	run_until(f, 2);
	assert_int_equal(r.result, 0);
	assert_int_equal(fl.result, 0);
	pat_check(r.iov[0].iov_base, 0, 4096, 0);
	assert_int_equal(w.calls + d.calls + z.calls, 0);
	oracle_check(f, 0, 4096, 0);
	treq_free(&w);
	treq_free(&r);
}

static void test_refused(void **state)
{
	struct fix *f = *state;
	struct treq t[10], ok;
	unsigned n = 0;

	treq_rw(&t[n++], f, BLK_READ, 100, 512, 0, 0);          /* unaligned offset */
	treq_rw(&t[n++], f, BLK_READ, 0, 100, 0, 0);            /* unaligned length */
	treq_rw(&t[n++], f, BLK_WRITE, IMG_SIZE, 512, 0, 0);    /* past the end */
	treq_rw(&t[n++], f, BLK_READ, IMG_SIZE - 512, 1024, 0, 0); /* crosses it */
	treq_init(&t[n++], f, BLK_WRITE_ZEROES, IMG_SIZE - 512, UINT64_MAX - 511); /* wraps */
	treq_init(&t[n++], f, BLK_DISCARD, UINT64_MAX - 511, 1024);
	treq_rw(&t[n], f, BLK_READ, 0, 1024, 0, 0);             /* len != iov total */
	t[n++].req.len = 512;
	treq_rw(&t[n], f, BLK_READ, 0, 512, 0, 0);              /* no iov */
	t[n++].req.iov = NULL;
	treq_init(&t[n], f, BLK_READ, 0, 0);                    /* unknown op */
	t[n++].req.op = (enum blk_op)99;
	treq_rw(&t[n], f, BLK_READ, 0, 512, 0, 0);              /* no callback */
	t[n++].req.done = NULL;
	assert_int_equal(n, ARRAY_LEN(t));

	for (unsigned i = 0; i < n; i++) {
		int r = submit(f, &t[i]);

		if (r != -EINVAL)
			fail_msg("request %u: %d, want -EINVAL", i, r);
	}
	assert_int_equal(blk_inflight(f->b), 0);

	/* An empty read at the very end is fine, and completes. */
	treq_init(&ok, f, BLK_READ, IMG_SIZE, 0);
	assert_int_equal(do_req(f, &ok), 0);
	for (unsigned i = 0; i < n; i++) {
		assert_int_equal(t[i].calls, 0);
		treq_free(&t[i]);
	}
}

/* Memory O_DIRECT refuses (odd addresses) still moves the right bytes. */
static void test_misaligned_memory(void **state)
{
	struct fix *f = *state;
	struct treq w, r;

	treq_rw(&w, f, BLK_WRITE, 128 * KiB, 8 * KiB, 3, 11);
	assert_int_equal(do_req(f, &w), 0);
	oracle_check(f, 128 * KiB, 8 * KiB, 11);

	treq_rw(&r, f, BLK_READ, 128 * KiB - 512, 8 * KiB + 1024, 1, 0);
	assert_int_equal(do_req(f, &r), 0);
	pat_check(r.iov[0].iov_base, 128 * KiB - 512, 512, 0);
	pat_check((uint8_t *)r.iov[0].iov_base + 512, 128 * KiB, 8 * KiB, 11);
	pat_check((uint8_t *)r.iov[0].iov_base + 512 + 8 * KiB, 136 * KiB, 512, 0);
	/* Nothing written around the caller's buffer. */
	assert_int_equal(r.mem[0], 0xaa);
	assert_int_equal(r.mem[1 + 8 * KiB + 1024], 0xaa);
	treq_free(&w);
	treq_free(&r);
}

/* Each done callback submits the next request, every kind in turn: done
 * never runs inside blk_submit(), even for the synchronous kinds. */
struct chain {
	struct fix *f;
	struct treq t[30];
	unsigned next;
};

static void chain_submit(struct chain *c);

static void chain_done(struct blk_req *req, int result)
{
	struct treq *t = req->opaque;
	struct chain *c = t->ctx;

	on_done(req, result);
	assert_int_equal(result, 0);
	if (c->next < ARRAY_LEN(c->t))
		chain_submit(c);
}

static void chain_submit(struct chain *c)
{
	static const enum blk_op ops[] = { BLK_WRITE, BLK_READ, BLK_FLUSH,
					   BLK_WRITE_ZEROES, BLK_DISCARD };
	unsigned i = c->next++;
	struct treq *t = &c->t[i];
	static uint8_t buf[4096];

	treq_init(t, c->f, ops[i % ARRAY_LEN(ops)], (uint64_t)i * 4096, 4096);
	t->req.done = chain_done;
	t->ctx = c;
	if (t->req.op == BLK_WRITE || t->req.op == BLK_READ) {
		t->iov[0].iov_base = buf;
		t->iov[0].iov_len = sizeof(buf);
		t->req.iov = t->iov;
		t->req.iovcnt = 1;
	}
	assert_int_equal(submit(c->f, t), 0);
}

static void test_done_never_in_submit(void **state)
{
	struct fix *f = *state;
	struct chain c = { .f = f };

	chain_submit(&c);
	run_until(f, ARRAY_LEN(c.t));
	assert_int_equal(blk_inflight(f->b), 0);
	for (unsigned i = 0; i < ARRAY_LEN(c.t); i++)
		assert_int_equal(c.t[i].calls, 1);
}

/* blk_drain() runs everything to completion with the loop idle. */
static void test_drain_without_loop(void **state)
{
	struct fix *f = *state;
	unsigned blocks[IMG_SIZE / BLK4K];
	struct treq t[70];

	shuffled_blocks(blocks, ARRAY_LEN(blocks), 5);
	for (unsigned i = 0; i < 64; i++) {
		enum blk_op op = i % 2 ? BLK_READ : BLK_WRITE;

		treq_rw(&t[i], f, op, (uint64_t)blocks[i] * BLK4K, BLK4K, 0, 200 + i);
		assert_int_equal(submit(f, &t[i]), 0);
	}
	treq_init(&t[64], f, BLK_FLUSH, 0, 0);
	treq_init(&t[65], f, BLK_WRITE_ZEROES, (uint64_t)blocks[64] * BLK4K, BLK4K);
	treq_init(&t[66], f, BLK_DISCARD, (uint64_t)blocks[65] * BLK4K, BLK4K);
	treq_init(&t[67], f, BLK_FLUSH, 0, 0);
	treq_rw(&t[68], f, BLK_READ, (uint64_t)blocks[66] * BLK4K, BLK4K, 5, 0);
	treq_rw(&t[69], f, BLK_WRITE, (uint64_t)blocks[67] * BLK4K, BLK4K, 7, 269);
	for (unsigned i = 64; i < ARRAY_LEN(t); i++)
		assert_int_equal(submit(f, &t[i]), 0);
	assert_int_equal(blk_inflight(f->b), ARRAY_LEN(t));
	assert_int_equal(f->completed, 0);

	blk_drain(f->b);
	assert_int_equal(blk_inflight(f->b), 0);
	assert_int_equal(f->completed, ARRAY_LEN(t));
	assert_false(f->done_in_submit);
	for (unsigned i = 0; i < ARRAY_LEN(t); i++) {
		uint64_t off = t[i].req.offset;

		assert_int_equal(t[i].calls, 1);
		assert_int_equal(t[i].result, 0);
		if (t[i].req.op == BLK_WRITE)
			oracle_check(f, off, BLK4K, 200 + i);
		else if (t[i].req.op == BLK_READ)
			pat_check(t[i].iov[0].iov_base, off, BLK4K, 0);
		treq_free(&t[i]);
	}
	oracle_zero(f, (uint64_t)blocks[64] * BLK4K, BLK4K);

	/* The loop has nothing left to do: a request after the drain still
	 * completes through it. */
	treq_rw(&t[0], f, BLK_READ, 0, 512, 0, 0);
	assert_int_equal(do_req(f, &t[0]), 0);
	treq_free(&t[0]);
}

/* blk_close() completes what is in flight before it lets go. */
static void test_close_drains(void **state)
{
	struct fix *f = *state;
	struct treq t[40];

	for (unsigned i = 0; i < ARRAY_LEN(t); i++) {
		treq_rw(&t[i], f, BLK_WRITE, (uint64_t)i * BLK4K, BLK4K, 0, 300 + i);
		assert_int_equal(submit(f, &t[i]), 0);
	}
	blk_close(f->b);
	f->b = NULL;
	assert_int_equal(f->completed, ARRAY_LEN(t));
	assert_false(f->done_in_submit);
	for (unsigned i = 0; i < ARRAY_LEN(t); i++) {
		assert_int_equal(t[i].result, 0);
		oracle_check(f, (uint64_t)i * BLK4K, BLK4K, 300 + i);
		treq_free(&t[i]);
	}
}

static void test_in_use(void **state)
{
	struct fix *f = *state;
	struct blk_open_opts rw = { .cache = f->mode->cache, .no_aio = f->mode->no_aio };
	struct blk_open_opts ro = rw;
	struct blk *b2 = (struct blk *)1, *b3 = NULL;
	char err[256] = "";

	ro.readonly = true;
	assert_int_equal(blk_open(f->path, &rw, &f->loop, &b2, err, sizeof(err)), -EBUSY);
	assert_null(b2);
	assert_one_line_naming(err, f->path);
	assert_one_line_naming(err, "in use by another process");

	err[0] = '\0';
	assert_int_equal(blk_open(f->path, &ro, &f->loop, &b2, err, sizeof(err)), -EBUSY);
	assert_one_line_naming(err, "in use");

	/* Readers share. */
	blk_close(f->b);
	f->b = NULL;
	assert_int_equal(blk_open(f->path, &ro, &f->loop, &f->b, err, sizeof(err)), 0);
	assert_int_equal(blk_open(f->path, &ro, &f->loop, &b3, err, sizeof(err)), 0);
	assert_int_equal(blk_open(f->path, &rw, &f->loop, &b2, err, sizeof(err)), -EBUSY);
	blk_close(b3);
}

static void test_open_errors(void **state)
{
	struct evloop loop;
	struct blk_open_opts o = { 0 };
	struct blk *b = (struct blk *)1;
	char path[64], err[256] = "";

	assert_int_equal(evloop_init(&loop), 0);
	snprintf(path, sizeof(path), "%s/vmrun-blk-missing-%d", IMG_DIR, (int)getpid());
	assert_int_equal(blk_open(path, &o, &loop, &b, err, sizeof(err)), -ENOENT);
	assert_null(b);
	assert_one_line_naming(err, path);

	err[0] = '\0';
	assert_int_equal(blk_open("/dev/null", &o, &loop, &b, err, sizeof(err)), -EINVAL);
	assert_one_line_naming(err, "/dev/null");

	err[0] = '\0';
	assert_true(blk_open(IMG_DIR, &o, &loop, &b, err, sizeof(err)) < 0);
	assert_one_line_naming(err, IMG_DIR);

	blk_close(NULL);
	evloop_exit(&loop);
}

/* Without an event loop, completions run in blk_drain() only. */
static void test_no_loop(void **state)
{
	struct fix *f = *state;
	struct blk_open_opts o = { .cache = f->mode->cache, .no_aio = f->mode->no_aio };
	char err[256] = "";
	struct treq w, r;

	blk_close(f->b);
	f->b = NULL;
	assert_int_equal(blk_open(f->path, &o, NULL, &f->b, err, sizeof(err)), 0);
	treq_rw(&w, f, BLK_WRITE, 0, 8192, 0, 71);
	treq_rw(&r, f, BLK_READ, 8192, 4096, 0, 0);
	assert_int_equal(submit(f, &w), 0);
	assert_int_equal(submit(f, &r), 0);
	assert_int_equal(f->completed, 0);
	blk_drain(f->b);
	assert_int_equal(f->completed, 2);
	assert_int_equal(w.result, 0);
	assert_int_equal(r.result, 0);
	oracle_check(f, 0, 8192, 71);
	pat_check(r.iov[0].iov_base, 8192, 4096, 0);
	treq_free(&w);
	treq_free(&r);
}

/* cache=none on tmpfs: where tmpfs refuses O_DIRECT the backend falls back
 * to the page cache (with a warning); either way the data is right. */
static void test_tmpfs_cache_none(void **state)
{
	struct fix *f = *state;
	struct treq w, r;
	int flags;

	if (!f) {
		print_message("note: /dev/shm is not a tmpfs here; test skipped\n");
		skip();
	}
	flags = backend_fd_flags(f->path, f->fd);
	if (fs_takes_odirect(f->path)) {
		print_message("note: tmpfs takes O_DIRECT on this kernel; fallback not exercised\n");
		assert_true(flags & O_DIRECT);
	} else {
		assert_false(flags & O_DIRECT);
	}
	treq_rw(&w, f, BLK_WRITE, 4096, 8192, 1, 41);
	assert_int_equal(do_req(f, &w), 0);
	oracle_check(f, 4096, 8192, 41);
	treq_rw(&r, f, BLK_READ, 4096, 8192, 3, 0);
	assert_int_equal(do_req(f, &r), 0);
	pat_check(r.iov[0].iov_base, 4096, 8192, 41);
	treq_free(&w);
	treq_free(&r);

	/* tmpfs has no FALLOC_FL_ZERO_RANGE: write-zeroes punches a hole. */
	treq_init(&w, f, BLK_WRITE_ZEROES, 64 * KiB, 16 * KiB);
	assert_int_equal(do_req(f, &w), 0);
	oracle_zero(f, 64 * KiB, 16 * KiB);
	oracle_check(f, 80 * KiB, 4 * KiB, 0);
	treq_init(&w, f, BLK_DISCARD, 128 * KiB, 16 * KiB);
	assert_int_equal(do_req(f, &w), 0);
	assert_true(blk_can_discard(f->b));
	oracle_zero(f, 128 * KiB, 16 * KiB);
}

/* A block device, named by VMRUN_TEST_BLOCKDEV (its first MiB is
 * overwritten: point it at a scratch loop device, e.g.
 * `losetup -f --show /var/tmp/scratch.img`).  Skipped without it. */
static void test_block_device(void **state)
{
	const struct mode *modes[] = { &mode_aio, &mode_sync, &mode_aio_direct,
				       &mode_sync_direct };
	const char *dev = getenv("VMRUN_TEST_BLOCKDEV");
	struct fix f;

	if (!dev || !*dev) {
		print_message("note: VMRUN_TEST_BLOCKDEV not set; block device path not tested\n");
		skip();
	}
	for (unsigned m = 0; m < ARRAY_LEN(modes); m++) {
		struct blk_open_opts o = { .cache = modes[m]->cache, .no_aio = modes[m]->no_aio };
		struct treq w, r, z;
		uint64_t size;

		memset(&f, 0, sizeof(f));
		f.mode = modes[m];
		snprintf(f.path, sizeof(f.path), "%s", dev);
		f.fd = open(dev, O_RDWR | O_CLOEXEC);
		assert_true(f.fd >= 0);
		assert_int_equal(evloop_init(&f.loop), 0);
		assert_int_equal(open_blk(&f, &o), 0);
		size = (uint64_t)lseek(f.fd, 0, SEEK_END);
		assert_int_equal(blk_size(f.b), size - size % blk_block_size(f.b));
		assert_true(size >= MiB);
		print_message("%s (%s): %llu bytes, block size %u, aio %d\n", dev, modes[m]->name,
			      (unsigned long long)blk_size(f.b), blk_block_size(f.b),
			      blk_uses_aio(f.b));

		treq_rw(&w, &f, BLK_WRITE, 64 * KiB, 64 * KiB, 1, 50 + m);
		assert_int_equal(do_req(&f, &w), 0);
		oracle_check(&f, 64 * KiB, 64 * KiB, 50 + m);
		treq_rw(&r, &f, BLK_READ, 64 * KiB, 64 * KiB, 0, 0);
		assert_int_equal(do_req(&f, &r), 0);
		pat_check(r.iov[0].iov_base, 64 * KiB, 64 * KiB, 50 + m);

		treq_init(&z, &f, BLK_WRITE_ZEROES, 64 * KiB, 16 * KiB);
		assert_int_equal(do_req(&f, &z), 0);
		oracle_zero(&f, 64 * KiB, 16 * KiB);
		oracle_check(&f, 80 * KiB, 48 * KiB, 50 + m);
		treq_init(&z, &f, BLK_DISCARD, 256 * KiB, 64 * KiB);
		assert_int_equal(do_req(&f, &z), 0);
		treq_init(&z, &f, BLK_FLUSH, 0, 0);
		assert_int_equal(do_req(&f, &z), 0);
		treq_free(&w);
		treq_free(&r);

		blk_close(f.b);
		evloop_exit(&f.loop);
		close(f.fd);
	}
}

#define FOUR_MODES(fn)                                                                       \
	cmocka_unit_test_prestate_setup_teardown(fn, fix_setup, fix_teardown,                \
						 (void *)&mode_aio),                         \
	cmocka_unit_test_prestate_setup_teardown(fn, fix_setup, fix_teardown,                \
						 (void *)&mode_sync),                        \
	cmocka_unit_test_prestate_setup_teardown(fn, fix_setup, fix_teardown,                \
						 (void *)&mode_aio_direct),                  \
	cmocka_unit_test_prestate_setup_teardown(fn, fix_setup, fix_teardown,                \
						 (void *)&mode_sync_direct)

static const struct mode mode_aio_tmpfs = { "aio+direct tmpfs", false, BLK_CACHE_NONE };
static const struct mode mode_sync_tmpfs = { "sync+direct tmpfs", true, BLK_CACHE_NONE };

int main(void)
{
	const struct CMUnitTest tests[] = {
		FOUR_MODES(test_open_and_read_pattern),
		FOUR_MODES(test_write_then_oracle),
		FOUR_MODES(test_concurrent_64),
		FOUR_MODES(test_concurrent_beyond_depth),
		FOUR_MODES(test_vectored),
		FOUR_MODES(test_many_segments),
		FOUR_MODES(test_read_past_eof),
		FOUR_MODES(test_read_after_shrink),
		FOUR_MODES(test_short_write),
		FOUR_MODES(test_flush),
		FOUR_MODES(test_flush_unsafe),
		FOUR_MODES(test_discard),
		FOUR_MODES(test_write_zeroes),
		FOUR_MODES(test_readonly),
		FOUR_MODES(test_refused),
		FOUR_MODES(test_misaligned_memory),
		FOUR_MODES(test_done_never_in_submit),
		FOUR_MODES(test_drain_without_loop),
		FOUR_MODES(test_close_drains),
		FOUR_MODES(test_in_use),
		FOUR_MODES(test_no_loop),
		cmocka_unit_test(test_open_errors),
		cmocka_unit_test(test_block_device),
		cmocka_unit_test_prestate_setup_teardown(test_tmpfs_cache_none, fix_setup_tmpfs,
							 fix_teardown, (void *)&mode_aio_tmpfs),
		cmocka_unit_test_prestate_setup_teardown(test_tmpfs_cache_none, fix_setup_tmpfs,
							 fix_teardown, (void *)&mode_sync_tmpfs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The qcow2 block backend (src/block/qcow2.c) and format probing, against
 * include/vmrun/block.h, with qemu-img as the oracle: images made by
 * qemu-img (several cluster sizes, compat levels, refcount widths,
 * compressed, backing chains) are read whole and compared with
 * `qemu-img convert -O raw`; random writes go to the image and to a raw
 * reference in parallel, then `qemu-img check` must be clean and
 * `qemu-img compare` must find them equal.  Hostile headers are made by
 * patching bytes of a valid image.  Tests that need qemu-img print a skip
 * note where it is missing. */
#include "unit.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vmrun/block.h"
#include "vmrun/evloop.h"

#define KiB 1024u
#define MiB (1024u * 1024u)
#define IMG_DIR "/var/tmp"

struct ctx {
	struct evloop loop;
	struct blk *b;
	char dir[64];
	unsigned completed;
	bool in_submit;
	bool done_in_submit;
	int result;
};

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

static bool have_qemu_img(void)
{
	static int have = -1;

	if (have < 0)
		have = system("command -v qemu-img >/dev/null 2>&1 && "
			      "command -v qemu-io >/dev/null 2>&1") == 0;
	if (!have)
		print_message("SKIP: qemu-img/qemu-io not installed (qemu-utils)\n");
	return have;
}

/* Run a shell command (in @c's directory); its exit status. */
__attribute__((format(printf, 2, 3))) static int sh(struct ctx *c, const char *fmt, ...)
{
	char cmd[2048], full[2304];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	snprintf(full, sizeof(full), "cd %s && { %s ; } >/dev/null 2>&1", c->dir, cmd);
	st = system(full);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void path_of(const struct ctx *c, const char *name, char *out, size_t len)
{
	snprintf(out, len, "%s/%s", c->dir, name);
}

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	snprintf(c->dir, sizeof(c->dir), IMG_DIR "/vmrun-qcow2-XXXXXX");
	assert_non_null(mkdtemp(c->dir));
	assert_int_equal(evloop_init(&c->loop), 0);
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;
	char cmd[128];

	blk_close(c->b);
	evloop_exit(&c->loop);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", c->dir);
	if (system(cmd) != 0)
		print_message("cannot remove %s\n", c->dir);
	free(c);
	return 0;
}

static int open_img(struct ctx *c, const char *name, bool readonly, enum blk_format fmt,
		    char *err, size_t errlen)
{
	struct blk_open_opts o = { .readonly = readonly, .no_aio = true, .format = fmt };
	char path[128];

	blk_close(c->b);
	c->b = NULL;
	path_of(c, name, path, sizeof(path));
	err[0] = 0;
	return blk_open(path, &o, &c->loop, &c->b, err, errlen);
}

static void open_ok(struct ctx *c, const char *name, bool readonly, enum blk_format fmt)
{
	char err[512];
	int r = open_img(c, name, readonly, fmt, err, sizeof(err));

	if (r)
		fail_msg("blk_open(%s): %s", name, err);
}

static void close_img(struct ctx *c)
{
	blk_close(c->b);
	c->b = NULL;
}

static void on_done(struct blk_req *req, int result)
{
	struct ctx *c = req->opaque;

	if (c->in_submit)
		c->done_in_submit = true;
	c->result = result;
	c->completed++;
	c->loop.stop = true;
}

/* One request, run to completion: its result. */
static int io(struct ctx *c, enum blk_op op, uint64_t off, void *buf, uint64_t len)
{
	struct iovec iov = { buf, len };
	struct blk_req req = { .op = op, .offset = off, .len = len, .iov = &iov, .iovcnt = 1,
			       .done = on_done, .opaque = c };
	unsigned want = c->completed + 1;
	int r;

	c->in_submit = true;
	r = blk_submit(c->b, &req);
	c->in_submit = false;
	if (r)
		return r;
	while (c->completed < want) {
		c->loop.stop = false;
		assert_int_equal(evloop_run(&c->loop), 0);
	}
	assert_false(c->done_in_submit);
	return c->result;
}

static uint8_t *read_file(const char *path, uint64_t *len)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	uint8_t *p;

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	p = malloc(st.st_size ? (size_t)st.st_size : 1);
	assert_non_null(p);
	assert_int_equal(pread(fd, p, (size_t)st.st_size, 0), st.st_size);
	close(fd);
	*len = (uint64_t)st.st_size;
	return p;
}

/* The whole disk through blk_* equals the raw file @ref_name. */
static void compare_with_raw(struct ctx *c, const char *ref_name)
{
	char path[128];
	uint64_t len, chunk = 1 * MiB;
	uint8_t *ref, *buf = malloc(chunk);

	path_of(c, ref_name, path, sizeof(path));
	ref = read_file(path, &len);
	assert_non_null(buf);
	assert_int_equal(blk_size(c->b), len);
	for (uint64_t off = 0; off < len; off += chunk) {
		uint64_t n = len - off < chunk ? len - off : chunk;

		assert_int_equal(io(c, BLK_READ, off, buf, n), 0);
		if (memcmp(buf, ref + off, n)) {
			for (uint64_t i = 0; i < n; i++) {
				if (buf[i] != ref[off + i])
					fail_msg("%s: byte %llu is %#x, want %#x", ref_name,
						 (unsigned long long)(off + i), buf[i],
						 ref[off + i]);
			}
		}
	}
	free(ref);
	free(buf);
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Fill @p with data that is half compressible, half noise. */
static void fill(uint8_t *p, uint64_t len, uint64_t seed)
{
	for (uint64_t i = 0; i < len; i++)
		p[i] = (i / 4096) % 2 ? (uint8_t)(i / 512 + seed) : (uint8_t)rnd(&seed);
}

/* A raw file @name of @size bytes: data in some 64 KiB stretches, holes
 * elsewhere. */
static void make_raw(struct ctx *c, const char *name, uint64_t size, uint64_t seed)
{
	char path[128];
	uint8_t *buf = malloc(64 * KiB);
	int fd;

	path_of(c, name, path, sizeof(path));
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	assert_non_null(buf);
	for (uint64_t off = 0; off < size; off += 64 * KiB) {
		if (rnd(&seed) % 3 == 0)
			continue;
		fill(buf, 64 * KiB, seed);
		assert_int_equal(pwrite(fd, buf, 64 * KiB, (off_t)off), (ssize_t)(64 * KiB));
	}
	close(fd);
	free(buf);
}

/* @n random WRITEs and WRITE_ZEROES through blk_* and into the raw file
 * @ref_name alike, a FLUSH every 37. */
static void random_writes(struct ctx *c, const char *ref_name, unsigned n, uint64_t seed,
			  uint64_t max_len)
{
	char path[128];
	uint64_t size = blk_size(c->b);
	uint8_t *buf = malloc(max_len), *zero = calloc(1, max_len);
	int fd;

	path_of(c, ref_name, path, sizeof(path));
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_non_null(buf);
	assert_non_null(zero);
	for (unsigned i = 0; i < n; i++) {
		uint64_t len = (rnd(&seed) % (max_len / 512) + 1) * 512;
		uint64_t off = (rnd(&seed) % (size / 512)) * 512;
		bool zeroes = rnd(&seed) % 8 == 0;

		if (off + len > size)
			len = size - off;
		if (zeroes) {
			assert_int_equal(io(c, BLK_WRITE_ZEROES, off, NULL, len), 0);
			assert_int_equal(pwrite(fd, zero, len, (off_t)off), (ssize_t)len);
		} else {
			fill(buf, len, seed + i);
			assert_int_equal(io(c, BLK_WRITE, off, buf, len), 0);
			assert_int_equal(pwrite(fd, buf, len, (off_t)off), (ssize_t)len);
		}
		/* Now and then: the rest stays pending until blk_close(), and
		 * the reads after this see it from memory. */
		if (i % 37 == 36)
			assert_int_equal(io(c, BLK_FLUSH, 0, NULL, 0), 0);
	}
	close(fd);
	free(buf);
	free(zero);
}

/* qemu-img check finds no error and no leak; qemu-img compare finds the
 * image equal to the raw reference. */
static void qemu_verify(struct ctx *c, const char *img, const char *ref)
{
	int r = sh(c, "qemu-img check -f qcow2 %s", img);

	if (r)
		fail_msg("qemu-img check %s exited %d", img, r);
	r = sh(c, "qemu-img compare -f qcow2 -F raw %s %s", img, ref);
	if (r)
		fail_msg("qemu-img compare %s %s exited %d", img, ref, r);
}

/* ------------------------------------------------------------------ */
/* Reads and writes across formats                                     */

struct variant {
	const char *opts;  /* qemu-img -o */
	uint64_t size;
	unsigned writes;
	uint64_t max_len;
};

static void run_variant(struct ctx *c, const struct variant *v, bool compress)
{
	char ref[32] = "ref.raw";

	print_message("variant: %s%s\n", v->opts, compress ? " (compressed)" : "");
	make_raw(c, "src.raw", v->size, 42);
	assert_int_equal(sh(c, "rm -f img.qcow2 ref.raw && qemu-img convert -f raw -O qcow2 %s"
			    " -o %s src.raw img.qcow2", compress ? "-c" : "", v->opts), 0);
	assert_int_equal(sh(c, "qemu-img convert -f qcow2 -O raw img.qcow2 ref.raw"), 0);

	open_ok(c, "img.qcow2", false, BLK_FORMAT_AUTO);
	assert_int_equal(blk_format(c->b), BLK_FORMAT_QCOW2);
	assert_int_equal(blk_size(c->b), v->size);
	assert_int_equal(blk_block_size(c->b), 512);
	assert_false(blk_readonly(c->b));
	compare_with_raw(c, ref);
	random_writes(c, ref, v->writes, 7 + v->size, v->max_len);
	compare_with_raw(c, ref);
	close_img(c);
	qemu_verify(c, "img.qcow2", ref);

	/* Again, reopened: what reached the file. */
	open_ok(c, "img.qcow2", true, BLK_FORMAT_QCOW2);
	assert_true(blk_readonly(c->b));
	compare_with_raw(c, ref);
	close_img(c);
}

/* Whether this process holds a descriptor on @path opened with O_DIRECT. */
static bool have_direct_fd(const char *path)
{
	char link[64], target[256], info[64], line[128];
	bool found = false;

	for (int fd = 0; fd < 1024 && !found; fd++) {
		ssize_t n;
		FILE *f;

		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		n = readlink(link, target, sizeof(target) - 1);
		if (n < 0)
			continue;
		target[n] = 0;
		if (strcmp(target, path))
			continue;
		snprintf(info, sizeof(info), "/proc/self/fdinfo/%d", fd);
		f = fopen(info, "r");
		if (!f)
			continue;
		while (fgets(line, sizeof(line), f))
			if (!strncmp(line, "flags:", 6) && (strtoul(line + 6, NULL, 8) & O_DIRECT))
				found = true;
		fclose(f);
	}
	return found;
}

/* cache=none: the data clusters go through an O_DIRECT handle, with Linux
 * AIO for reads and overwrites of allocated clusters.  32 requests in
 * flight at once (reads, overwrites, allocating writes, unaligned guest
 * memory), then random writes; reads match the reference, qemu-img finds
 * the image clean and equal to it. */
static void test_cache_none(void **state)
{
	struct ctx *c = *state;
	struct blk_open_opts o = { .cache = BLK_CACHE_NONE };
	enum { N = 32, LEN = 8 * KiB };
	struct blk_req reqs[N];
	struct iovec iov[N];
	uint8_t *bufs = malloc(N * LEN + 1), *ref;
	char path[128], refpath[128], err[512];
	uint64_t size = 8 * MiB, reflen, seed = 99;
	int fd;

	if (!have_qemu_img())
		return;
	assert_non_null(bufs);
	make_raw(c, "src.raw", size, 43);
	assert_int_equal(sh(c, "qemu-img convert -f raw -O qcow2 src.raw img.qcow2 && "
			    "cp src.raw ref.raw"), 0);
	path_of(c, "img.qcow2", path, sizeof(path));
	path_of(c, "ref.raw", refpath, sizeof(refpath));
	if (blk_open(path, &o, &c->loop, &c->b, err, sizeof(err)))
		fail_msg("blk_open cache=none: %s", err);
	assert_true(have_direct_fd(path));

	ref = read_file(refpath, &reflen);
	fd = open(refpath, O_RDWR);
	assert_true(fd >= 0);
	/* Odd requests write (the reference too), even ones read; the +1
	 * makes every buffer unaligned for O_DIRECT. */
	for (unsigned i = 0; i < N; i++) {
		uint64_t off = (rnd(&seed) % (size / LEN)) * LEN;
		uint8_t *p = bufs + 1 + i * LEN;

		while (i) {
			bool clash = false;

			for (unsigned j = 0; j < i; j++)
				clash |= reqs[j].offset == off;
			if (!clash)
				break;
			off = (rnd(&seed) % (size / LEN)) * LEN;
		}
		iov[i] = (struct iovec){ p, LEN };
		reqs[i] = (struct blk_req){ .op = i % 2 ? BLK_WRITE : BLK_READ, .offset = off,
					    .len = LEN, .iov = &iov[i], .iovcnt = 1,
					    .done = on_done, .opaque = c };
		if (i % 2) {
			fill(p, LEN, seed + i);
			assert_int_equal(pwrite(fd, p, LEN, (off_t)off), (ssize_t)LEN);
		}
	}
	c->completed = 0;
	for (unsigned i = 0; i < N; i++)
		assert_int_equal(blk_submit(c->b, &reqs[i]), 0);
	while (c->completed < N) {
		c->loop.stop = false;
		assert_int_equal(evloop_run(&c->loop), 0);
	}
	assert_int_equal(c->result, 0);
	for (unsigned i = 0; i < N; i += 2)
		if (memcmp(bufs + 1 + i * LEN, ref + reqs[i].offset, LEN))
			fail_msg("read %u at %llu differs from the reference", i,
				 (unsigned long long)reqs[i].offset);
	close(fd);
	free(ref);
	free(bufs);
	random_writes(c, "ref.raw", 150, 5, 96 * KiB);
	compare_with_raw(c, "ref.raw");
	close_img(c);
	qemu_verify(c, "img.qcow2", "ref.raw");
}

static const struct variant variants[] = {
	{ "cluster_size=512,compat=1.1,refcount_bits=16", 2 * MiB, 150, 8 * KiB },
	{ "cluster_size=512,compat=0.10", 2 * MiB, 150, 8 * KiB },
	{ "cluster_size=65536,compat=1.1,refcount_bits=1", 8 * MiB, 200, 192 * KiB },
	{ "cluster_size=65536,compat=1.1,refcount_bits=16", 8 * MiB, 200, 192 * KiB },
	{ "cluster_size=65536,compat=1.1,refcount_bits=64", 8 * MiB, 200, 192 * KiB },
	{ "cluster_size=65536,compat=0.10", 8 * MiB, 200, 192 * KiB },
	{ "cluster_size=2097152,compat=1.1,refcount_bits=16", 12 * MiB, 60, 1 * MiB },
	{ "cluster_size=4096,compat=1.1,refcount_bits=4", 4 * MiB, 150, 32 * KiB },
};

static void test_formats(void **state)
{
	struct ctx *c = *state;

	if (!have_qemu_img())
		return;
	for (unsigned i = 0; i < ARRAY_LEN(variants); i++)
		run_variant(c, &variants[i], false);
}

static void test_compressed(void **state)
{
	struct ctx *c = *state;
	static const struct variant zlib = { "cluster_size=65536", 8 * MiB, 150, 128 * KiB };
	static const struct variant zstd = { "cluster_size=65536,compression_type=zstd",
					     8 * MiB, 150, 128 * KiB };
	static const struct variant small = { "cluster_size=4096", 2 * MiB, 150, 16 * KiB };

	if (!have_qemu_img())
		return;
	run_variant(c, &zlib, true);
	run_variant(c, &small, true);
	if (sh(c, "qemu-img create -f qcow2 -o compression_type=zstd probe.qcow2 1M"))
		print_message("SKIP: this qemu-img has no zstd\n");
	else
		run_variant(c, &zstd, true);
}

/* base.raw <- mid.qcow2 (some data of its own) <- top.qcow2, relative
 * names; reads go down the chain, partial writes copy up. */
static void test_backing_chain(void **state)
{
	struct ctx *c = *state;

	if (!have_qemu_img())
		return;
	make_raw(c, "base.raw", 6 * MiB, 3);
	assert_int_equal(sh(c, "qemu-img create -f qcow2 -b base.raw -F raw mid.qcow2"), 0);
	assert_int_equal(sh(c, "qemu-io -f qcow2 -c 'write -P 0x55 1M 100k'"
			    " -c 'write -z 3M 64k' mid.qcow2"), 0);
	/* The top is larger than its backing: the rest reads as zeroes. */
	assert_int_equal(sh(c, "qemu-img create -f qcow2 -o cluster_size=4096 -b mid.qcow2"
			    " -F qcow2 top.qcow2 8M"), 0);
	assert_int_equal(sh(c, "qemu-io -f qcow2 -c 'write -P 0x77 2052k 12k' top.qcow2"), 0);
	assert_int_equal(sh(c, "qemu-img convert -f qcow2 -O raw top.qcow2 ref.raw"), 0);

	open_ok(c, "top.qcow2", false, BLK_FORMAT_QCOW2);
	compare_with_raw(c, "ref.raw");
	random_writes(c, "ref.raw", 200, 99, 24 * KiB);
	compare_with_raw(c, "ref.raw");
	close_img(c);
	qemu_verify(c, "top.qcow2", "ref.raw");
	/* The backing files were not touched. */
	assert_int_equal(sh(c, "qemu-img check -f qcow2 mid.qcow2"), 0);

	/* Format of the backing file probed (no backing format extension). */
	assert_int_equal(sh(c, "qemu-img create -f qcow2 -b top.qcow2 -F qcow2 probe.qcow2 &&"
			    " qemu-img rebase -u -b top.qcow2 probe.qcow2 2>/dev/null ||"
			    " true"), 0);
	open_ok(c, "probe.qcow2", true, BLK_FORMAT_AUTO);
	compare_with_raw(c, "ref.raw");
	close_img(c);
}

/* A process killed at random points while writing leaves an image that
 * qemu-img check finds free of corruption (leaks are allowed: exit 3), and
 * what was written before a completed FLUSH is there. */
static void test_kill9(void **state)
{
	struct ctx *c = *state;

	if (!have_qemu_img())
		return;
	make_raw(c, "base.raw", 4 * MiB, 5);
	assert_int_equal(sh(c, "qemu-img convert -c -f raw -O qcow2 -o cluster_size=4096"
			    " base.raw img.qcow2"), 0);
	for (unsigned round = 0; round < 16; round++) {
		pid_t pid;
		int st, r, pfd[2];
		char ready;

		/* The second half runs with internal snapshots: shared L2
		 * tables and clusters are copied as the child writes. */
		if (round % 4 == 2)
			assert_int_equal(sh(c, "qemu-img snapshot -c s%u img.qcow2", round), 0);
		assert_int_equal(pipe(pfd), 0);
		pid = fork();

		assert_true(pid >= 0);
		if (pid == 0) {
			struct ctx child = { 0 };
			char path[128];
			uint8_t buf[16 * KiB];
			uint64_t seed = 1234 + round;
			struct blk_open_opts o = { .no_aio = true };
			char err[256];

			memcpy(child.dir, c->dir, sizeof(child.dir));
			path_of(c, "img.qcow2", path, sizeof(path));
			close(pfd[0]);
			if (evloop_init(&child.loop) ||
			    blk_open(path, &o, &child.loop, &child.b, err, sizeof(err)))
				_exit(2);
			/* The flushed marker: [0, 64k) holds byte round + 1. */
			memset(buf, (int)round + 1, sizeof(buf));
			for (unsigned i = 0; i < 4; i++) {
				if (io(&child, BLK_WRITE, i * sizeof(buf), buf, sizeof(buf)))
					_exit(3);
			}
			if (io(&child, BLK_FLUSH, 0, NULL, 0) || write(pfd[1], "k", 1) != 1)
				_exit(4);
			for (;;) {
				uint64_t off = 64 * KiB +
					       (rnd(&seed) % ((4 * MiB - 96 * KiB) / 512)) * 512;

				fill(buf, sizeof(buf), seed);
				if (io(&child, BLK_WRITE, off, buf, sizeof(buf)))
					_exit(3);
				if (seed % 4 == 0 && io(&child, BLK_FLUSH, 0, NULL, 0))
					_exit(4);
			}
		}
		close(pfd[1]);
		assert_int_equal(read(pfd[0], &ready, 1), 1);
		close(pfd[0]);
		usleep(2000 + 7919 * (round % 7) + 1000 * round);
		kill(pid, SIGKILL);
		assert_int_equal(waitpid(pid, &st, 0), pid);
		assert_true(WIFSIGNALED(st));
		{
			uint8_t got[64 * KiB];

			open_ok(c, "img.qcow2", true, BLK_FORMAT_QCOW2);
			assert_int_equal(io(c, BLK_READ, 0, got, sizeof(got)), 0);
			close_img(c);
			for (size_t i = 0; i < sizeof(got); i++) {
				if (got[i] != round + 1)
					fail_msg("round %u: flushed byte %zu is %#x", round, i,
						 got[i]);
			}
		}
		r = sh(c, "qemu-img check -f qcow2 img.qcow2");
		print_message("round %u: qemu-img check: %s\n", round,
			      r == 0 ? "clean" : r == 3 ? "leaks only" : "CORRUPT");
		if (r != 0 && r != 3)
			fail_msg("round %u: qemu-img check exited %d", round, r);
		/* Repair the leaks so that the next round starts clean. */
		if (r == 3)
			assert_int_equal(sh(c, "qemu-img check -r leaks -f qcow2 img.qcow2"), 0);
	}
}

/* ------------------------------------------------------------------ */
/* Hostile headers                                                     */

static void patch(struct ctx *c, const char *name, uint64_t off, const void *bytes, size_t len)
{
	char path[128];
	int fd;

	path_of(c, name, path, sizeof(path));
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, bytes, len, (off_t)off), (ssize_t)len);
	close(fd);
}

static void patch_be64(struct ctx *c, const char *name, uint64_t off, uint64_t v)
{
	v = htobe64(v);
	patch(c, name, off, &v, sizeof(v));
}

static uint64_t read_be64(struct ctx *c, const char *name, uint64_t off)
{
	char path[128];
	uint64_t v;
	int fd;

	path_of(c, name, path, sizeof(path));
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &v, sizeof(v), (off_t)off), (ssize_t)sizeof(v));
	close(fd);
	return be64toh(v);
}

static void patch_be32(struct ctx *c, const char *name, uint64_t off, uint32_t v)
{
	v = htobe32(v);
	patch(c, name, off, &v, sizeof(v));
}

/* Opening @name (@readonly) fails with a one-line message naming @needle. */
static void refused(struct ctx *c, const char *name, bool readonly, const char *needle)
{
	char err[512];
	int r = open_img(c, name, readonly, BLK_FORMAT_AUTO, err, sizeof(err));

	if (!r)
		fail_msg("%s opened, want a refusal naming '%s'", name, needle);
	assert_true(r < 0);
	assert_null(c->b);
	print_message("refused as expected: %s\n", err);
	assert_one_line_naming(err, needle);
}

static void fresh(struct ctx *c)
{
	assert_int_equal(sh(c, "rm -f h.qcow2 && qemu-img create -f qcow2 h.qcow2 16M &&"
			    " qemu-io -c 'write -P 1 0 1M' h.qcow2"), 0);
}

static void test_hostile_headers(void **state)
{
	struct ctx *c = *state;

	if (!have_qemu_img())
		return;
	fresh(c);
	open_ok(c, "h.qcow2", false, BLK_FORMAT_AUTO);
	close_img(c);

	patch_be64(c, "h.qcow2", 40, 1ull << 40); /* L1 past EOF */
	refused(c, "h.qcow2", true, "L1 table");
	fresh(c);
	patch_be64(c, "h.qcow2", 40, 0); /* L1 over the header */
	refused(c, "h.qcow2", true, "L1 table");
	fresh(c);
	patch_be64(c, "h.qcow2", 40, 65536 + 1); /* misaligned */
	refused(c, "h.qcow2", true, "L1 table");
	fresh(c);
	patch_be32(c, "h.qcow2", 36, 0x10000000); /* huge L1 */
	refused(c, "h.qcow2", true, "L1 table");
	fresh(c);
	patch_be32(c, "h.qcow2", 36, 0); /* L1 too small for the disk */
	refused(c, "h.qcow2", true, "L1 table");
	fresh(c);
	patch_be64(c, "h.qcow2", 48, 1ull << 40); /* refcount table past EOF */
	refused(c, "h.qcow2", true, "refcount table");
	fresh(c);
	patch_be32(c, "h.qcow2", 56, 0x100000); /* huge refcount table */
	refused(c, "h.qcow2", true, "refcount table");
	fresh(c);
	patch_be64(c, "h.qcow2", 48, 0); /* refcount table over the header */
	refused(c, "h.qcow2", true, "refcount table");
	fresh(c);
	{
		/* L1 and refcount table on the same cluster. */
		uint8_t h[64];
		uint64_t l1;
		char path[128];
		int fd;

		path_of(c, "h.qcow2", path, sizeof(path));
		fd = open(path, O_RDONLY);
		assert_int_equal(pread(fd, h, sizeof(h), 0), (ssize_t)sizeof(h));
		close(fd);
		memcpy(&l1, h + 40, 8);
		patch(c, "h.qcow2", 48, &l1, 8);
		refused(c, "h.qcow2", true, "overlap");
	}
	fresh(c);
	patch_be32(c, "h.qcow2", 20, 30); /* cluster_bits */
	refused(c, "h.qcow2", true, "cluster_bits");
	fresh(c);
	patch_be32(c, "h.qcow2", 4, 4); /* version */
	refused(c, "h.qcow2", true, "version 4");
	fresh(c);
	patch_be32(c, "h.qcow2", 32, 1); /* AES */
	refused(c, "h.qcow2", true, "encrypted");
	fresh(c);
	patch_be64(c, "h.qcow2", 24, 1ull << 62); /* size */
	refused(c, "h.qcow2", true, "size");
	fresh(c);
	patch_be32(c, "h.qcow2", 96, 7); /* refcount_order */
	refused(c, "h.qcow2", true, "refcount_order");
	fresh(c);
	patch_be64(c, "h.qcow2", 72, 1ull << 10); /* unknown incompatible bit */
	refused(c, "h.qcow2", true, "bit 10");
	refused(c, "h.qcow2", false, "incompatible features");
	fresh(c);
	patch_be64(c, "h.qcow2", 72, 1ull << 4); /* extended L2: not supported */
	refused(c, "h.qcow2", true, "extended L2");
	fresh(c);
	patch_be64(c, "h.qcow2", 8, 65000); /* backing name past the cluster */
	patch_be32(c, "h.qcow2", 16, 1000);
	refused(c, "h.qcow2", true, "backing file name");
	fresh(c);
	patch_be32(c, "h.qcow2", 100, 1 << 20); /* header_length */
	refused(c, "h.qcow2", true, "header_length");

	/* Corrupt bit: read-only open works, writable open is refused. */
	fresh(c);
	patch_be64(c, "h.qcow2", 72, 1ull << 1);
	refused(c, "h.qcow2", false, "corrupt");
	open_ok(c, "h.qcow2", true, BLK_FORMAT_AUTO);
	close_img(c);
	/* Dirty bit: a read-only open leaves it; a writable open rebuilds
	 * the refcounts (none wrong here) and clears it. */
	fresh(c);
	patch_be64(c, "h.qcow2", 72, 1ull << 0);
	open_ok(c, "h.qcow2", true, BLK_FORMAT_AUTO);
	close_img(c);
	assert_int_equal(read_be64(c, "h.qcow2", 72), 1);
	open_ok(c, "h.qcow2", false, BLK_FORMAT_AUTO);
	close_img(c);
	assert_int_equal(read_be64(c, "h.qcow2", 72), 0);
	assert_int_equal(sh(c, "qemu-img check -f qcow2 h.qcow2"), 0);
	/* Dirty with a refcount block that points past the end: refused,
	 * naming the repair. */
	fresh(c);
	patch_be64(c, "h.qcow2", 72, 1ull << 0);
	{
		uint64_t rt = read_be64(c, "h.qcow2", 48);

		patch_be64(c, "h.qcow2", rt + 8, 1ull << 40);
	}
	refused(c, "h.qcow2", false, "qemu-img check -r all");
}

/* A corrupt L2 pointer in an otherwise valid image: I/O fails, no crash,
 * nothing written. */
static void test_corrupt_l1_entry(void **state)
{
	struct ctx *c = *state;
	uint8_t h[48], buf[4096];
	uint64_t l1;
	char path[128];
	int fd;

	if (!have_qemu_img())
		return;
	fresh(c);
	path_of(c, "h.qcow2", path, sizeof(path));
	fd = open(path, O_RDONLY);
	assert_int_equal(pread(fd, h, sizeof(h), 0), (ssize_t)sizeof(h));
	close(fd);
	memcpy(&l1, h + 40, 8);
	l1 = be64toh(l1);
	patch_be64(c, "h.qcow2", l1, (1ull << 63) | (1ull << 45)); /* past EOF */
	open_ok(c, "h.qcow2", false, BLK_FORMAT_AUTO);
	assert_int_equal(io(c, BLK_READ, 0, buf, sizeof(buf)), -EIO);
	memset(buf, 1, sizeof(buf));
	assert_int_equal(io(c, BLK_WRITE, 0, buf, sizeof(buf)), -EIO);
	close_img(c);
	patch_be64(c, "h.qcow2", l1, (1ull << 63) | l1); /* the L1 table itself as L2 */
	open_ok(c, "h.qcow2", false, BLK_FORMAT_AUTO);
	assert_int_equal(io(c, BLK_WRITE, 0, buf, sizeof(buf)), -EIO);
	close_img(c);
}

static void test_backing_loop(void **state)
{
	struct ctx *c = *state;

	if (!have_qemu_img())
		return;
	assert_int_equal(sh(c, "qemu-img create -f qcow2 a.qcow2 1M &&"
			    " qemu-img create -f qcow2 -b a.qcow2 -F qcow2 b.qcow2 &&"
			    " qemu-img rebase -u -b b.qcow2 -F qcow2 a.qcow2"), 0);
	refused(c, "a.qcow2", true, "loop");
	refused(c, "b.qcow2", false, "loop");
	/* Itself as its backing file. */
	assert_int_equal(sh(c, "qemu-img create -f qcow2 s.qcow2 1M &&"
			    " qemu-img rebase -u -b s.qcow2 -F qcow2 s.qcow2"), 0);
	refused(c, "s.qcow2", true, "loop");
}

static void test_backing_missing(void **state)
{
	struct ctx *c = *state;

	if (!have_qemu_img())
		return;
	assert_int_equal(sh(c, "qemu-img create -f raw gone.raw 1M &&"
			    " qemu-img create -f qcow2 -b gone.raw -F raw t.qcow2 &&"
			    " rm gone.raw"), 0);
	refused(c, "t.qcow2", true, "gone.raw");
}

static void test_backing_depth(void **state)
{
	struct ctx *c = *state;

	if (!have_qemu_img())
		return;
	assert_int_equal(sh(c, "qemu-img create -f qcow2 l0.qcow2 1M &&"
			    " for i in $(seq 1 20); do qemu-img create -f qcow2 -b l$((i-1)).qcow2"
			    " -F qcow2 l$i.qcow2 || exit 1; done"), 0);
	open_ok(c, "l16.qcow2", true, BLK_FORMAT_AUTO);
	close_img(c);
	refused(c, "l20.qcow2", true, "deeper");
}

/* ------------------------------------------------------------------ */
/* Probing and the magic guard                                          */

static void make_file(struct ctx *c, const char *name, const void *head, size_t len,
		      uint64_t size)
{
	char path[128];
	int fd;

	path_of(c, name, path, sizeof(path));
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	if (len)
		assert_int_equal(pwrite(fd, head, len, 0), (ssize_t)len);
	close(fd);
}

static void test_raw_with_magic_stays_raw(void **state)
{
	struct ctx *c = *state;
	uint8_t buf[512];

	make_file(c, "m.raw", "QFI\xfb\0\0\0\3", 8, 1 * MiB);
	open_ok(c, "m.raw", false, BLK_FORMAT_RAW);
	assert_int_equal(blk_format(c->b), BLK_FORMAT_RAW);
	assert_int_equal(blk_size(c->b), 1 * MiB);
	assert_int_equal(io(c, BLK_READ, 0, buf, sizeof(buf)), 0);
	assert_memory_equal(buf, "QFI\xfb", 4);
	/* Explicitly raw: the guest may write anything, the magic included. */
	assert_int_equal(io(c, BLK_WRITE, 0, buf, sizeof(buf)), 0);
	close_img(c);

	/* The same file probed: it is not a valid qcow2 image. */
	refused(c, "m.raw", true, "m.raw");
}

static void test_probed_raw_refuses_magic(void **state)
{
	struct ctx *c = *state;
	uint8_t buf[4096] = { 0 };
	char path[128];
	uint8_t head[4];
	int fd;

	make_file(c, "p.raw", NULL, 0, 1 * MiB);
	open_ok(c, "p.raw", false, BLK_FORMAT_AUTO);
	assert_int_equal(blk_format(c->b), BLK_FORMAT_RAW);
	memcpy(buf, "QFI\xfb", 4);
	assert_int_equal(io(c, BLK_WRITE, 0, buf, sizeof(buf)), -EPERM);
	/* Elsewhere, or something else at 0: fine. */
	assert_int_equal(io(c, BLK_WRITE, 4096, buf, sizeof(buf)), 0);
	buf[3] = 0xfa;
	assert_int_equal(io(c, BLK_WRITE, 0, buf, sizeof(buf)), 0);
	close_img(c);
	path_of(c, "p.raw", path, sizeof(path));
	fd = open(path, O_RDONLY);
	assert_int_equal(pread(fd, head, 4, 0), 4);
	close(fd);
	assert_memory_equal(head, "QFI\xfa", 4);

	/* The magic split across two iov segments is caught too. */
	open_ok(c, "p.raw", false, BLK_FORMAT_AUTO);
	{
		uint8_t a[2] = { 'Q', 'F' }, b2[510] = { 'I', 0xfb };
		struct iovec iov[2] = { { a, 2 }, { b2, 510 } };
		struct blk_req req = { .op = BLK_WRITE, .offset = 0, .len = 512, .iov = iov,
				       .iovcnt = 2, .done = on_done, .opaque = c };
		unsigned want = c->completed + 1;

		assert_int_equal(blk_submit(c->b, &req), 0);
		while (c->completed < want) {
			c->loop.stop = false;
			assert_int_equal(evloop_run(&c->loop), 0);
		}
		assert_int_equal(c->result, -EPERM);
	}
	close_img(c);
}

static void test_probe_qcow2(void **state)
{
	struct ctx *c = *state;

	if (!have_qemu_img())
		return;
	fresh(c);
	open_ok(c, "h.qcow2", true, BLK_FORMAT_AUTO);
	assert_int_equal(blk_format(c->b), BLK_FORMAT_QCOW2);
	assert_int_equal(blk_size(c->b), 16 * MiB);
	assert_false(blk_can_discard(c->b));
	{
		uint8_t buf[512];

		assert_int_equal(io(c, BLK_WRITE, 0, buf, sizeof(buf)), -EROFS);
	}
	close_img(c);
	/* Forced raw: the qcow2 file's bytes. */
	open_ok(c, "h.qcow2", true, BLK_FORMAT_RAW);
	assert_int_equal(blk_format(c->b), BLK_FORMAT_RAW);
	close_img(c);
	/* A raw file forced as qcow2 is refused. */
	make_file(c, "r.raw", NULL, 0, 1 * MiB);
	{
		char err[256];

		assert_true(open_img(c, "r.raw", true, BLK_FORMAT_QCOW2, err, sizeof(err)) < 0);
		assert_one_line_naming(err, "magic");
	}
}

/* Header extensions and the header itself are left as they were. */
static void test_header_preserved(void **state)
{
	struct ctx *c = *state;
	char path[128];
	uint8_t before[4096], after[4096], buf[65536];
	int fd;

	if (!have_qemu_img())
		return;
	make_raw(c, "b.raw", 4 * MiB, 1);
	assert_int_equal(sh(c, "qemu-img create -f qcow2 -b b.raw -F raw hx.qcow2"), 0);
	path_of(c, "hx.qcow2", path, sizeof(path));
	fd = open(path, O_RDONLY);
	assert_int_equal(pread(fd, before, sizeof(before), 0), (ssize_t)sizeof(before));
	close(fd);
	open_ok(c, "hx.qcow2", false, BLK_FORMAT_AUTO);
	memset(buf, 9, sizeof(buf));
	for (uint64_t off = 0; off < 4 * MiB; off += 256 * KiB)
		assert_int_equal(io(c, BLK_WRITE, off + 512, buf, sizeof(buf)), 0);
	close_img(c);
	fd = open(path, O_RDONLY);
	assert_int_equal(pread(fd, after, sizeof(after), 0), (ssize_t)sizeof(after));
	close(fd);
	assert_memory_equal(before, after, sizeof(before));
	assert_int_equal(sh(c, "qemu-img check hx.qcow2"), 0);
}

/* 512-byte clusters with 64-bit refcounts: one refcount table cluster
 * counts 2 MiB of file, so writing 10 MiB must grow the table (twice). */
static void test_refcount_table_grows(void **state)
{
	struct ctx *c = *state;
	char path[128];
	uint8_t *buf = malloc(64 * KiB);
	int fd;

	if (!have_qemu_img())
		return;
	assert_non_null(buf);
	assert_int_equal(sh(c, "qemu-img create -f qcow2 -o cluster_size=512,refcount_bits=64"
			    " g.qcow2 16M && qemu-img create -f raw ref.raw 16M"), 0);
	path_of(c, "ref.raw", path, sizeof(path));
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	open_ok(c, "g.qcow2", false, BLK_FORMAT_QCOW2);
	for (uint64_t off = 0; off < 10 * MiB; off += 64 * KiB) {
		fill(buf, 64 * KiB, off);
		assert_int_equal(io(c, BLK_WRITE, off + 3 * MiB, buf, 64 * KiB), 0);
		assert_int_equal(pwrite(fd, buf, 64 * KiB, (off_t)(off + 3 * MiB)),
				 (ssize_t)(64 * KiB));
	}
	close(fd);
	random_writes(c, "ref.raw", 100, 5, 4 * KiB);
	compare_with_raw(c, "ref.raw");
	close_img(c);
	qemu_verify(c, "g.qcow2", "ref.raw");
	{
		uint32_t clusters;

		path_of(c, "g.qcow2", path, sizeof(path));
		fd = open(path, O_RDONLY);
		assert_int_equal(pread(fd, &clusters, 4, 56), 4);
		close(fd);
		print_message("refcount table: %u clusters\n", be32toh(clusters));
		assert_true(be32toh(clusters) > 4);
	}
	free(buf);
}

/* DISCARD on v3 frees whole clusters (they read as zeroes, check finds no
 * leak); partial clusters keep their data.  On v2 discard is not offered. */
static void test_discard(void **state)
{
	struct ctx *c = *state;
	uint8_t *buf = malloc(1 * MiB), *zero = calloc(1, 1 * MiB);
	char path[128];
	int fd;

	if (!have_qemu_img())
		return;
	assert_non_null(buf);
	assert_non_null(zero);
	make_raw(c, "src.raw", 4 * MiB, 11);
	assert_int_equal(sh(c, "qemu-img convert -f raw -O qcow2 src.raw d.qcow2 &&"
			    " qemu-img convert -c -f raw -O qcow2 src.raw dc.qcow2 &&"
			    " qemu-img convert -f raw -O qcow2 -o compat=0.10 src.raw d2.qcow2 &&"
			    " cp src.raw ref.raw"), 0);
	path_of(c, "ref.raw", path, sizeof(path));
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	/* [32k, 32k + 1M): clusters 1..15 whole, halves of 0 and 16 kept. */
	assert_int_equal(pwrite(fd, zero, 1 * MiB - 64 * KiB, 64 * KiB),
			 (ssize_t)(1 * MiB - 64 * KiB));
	close(fd);
	for (unsigned i = 0; i < 2; i++) {
		const char *img = i ? "dc.qcow2" : "d.qcow2";

		open_ok(c, img, false, BLK_FORMAT_QCOW2);
		assert_true(blk_can_discard(c->b));
		assert_int_equal(io(c, BLK_DISCARD, 32 * KiB, NULL, 1 * MiB), 0);
		assert_int_equal(io(c, BLK_READ, 64 * KiB, buf, 1 * MiB - 64 * KiB), 0);
		assert_memory_equal(buf, zero, 1 * MiB - 64 * KiB);
		compare_with_raw(c, "ref.raw");
		close_img(c);
		qemu_verify(c, img, "ref.raw");
	}
	open_ok(c, "d2.qcow2", false, BLK_FORMAT_QCOW2);
	assert_false(blk_can_discard(c->b));
	close_img(c);
	free(buf);
	free(zero);
}

/* Random damage to the metadata of valid images: open (writable, else
 * read-only), read, write, close.  Whatever happens must be a clean error
 * or success: no crash, no hang (the sanitizer build checks memory). */
/* Returns whether the damaged image opened. */
static bool fuzz_one(struct ctx *c, const uint8_t *img, uint64_t len, uint64_t *seed)
{
	uint8_t *copy = malloc(len), buf[8192];
	uint64_t span = len < 256 * KiB ? len : 256 * KiB;
	char path[128], err[512];
	unsigned edits = (unsigned)(rnd(seed) % 6) + 1;
	int fd;

	assert_non_null(copy);
	memcpy(copy, img, len);
	/* Targets: the header, the L1 and refcount tables, the L2 tables and
	 * refcount blocks they point to. */
	uint64_t cs = 1ull << (be32toh(*(const uint32_t *)(img + 20)) & 31);
	uint64_t l1 = be64toh(*(const uint64_t *)(img + 40));
	uint64_t rt = be64toh(*(const uint64_t *)(img + 48));
	uint64_t tgt[64];
	unsigned nt = 0;

	tgt[nt++] = 0;
	tgt[nt++] = l1;
	tgt[nt++] = rt;
	for (unsigned i = 0; i < 16 && l1 + 8 * i + 8 <= len && nt < 40; i++) {
		uint64_t e = be64toh(*(const uint64_t *)(img + l1 + 8 * i)) & 0x00fffffffffffe00ull;

		if (e && e < len)
			tgt[nt++] = e;
	}
	for (unsigned i = 0; i < 16 && rt + 8 * i + 8 <= len && nt < 64; i++) {
		uint64_t e = be64toh(*(const uint64_t *)(img + rt + 8 * i)) & ~511ull;

		if (e && e < len)
			tgt[nt++] = e;
	}
	(void)span;
	for (unsigned e = 0; e < edits; e++) {
		uint64_t at = tgt[rnd(seed) % nt] + rnd(seed) % (cs < 4096 ? cs : 4096);

		if (at >= len)
			continue;

		if (rnd(seed) % 2 && at + 8 <= len) {
			uint64_t v = rnd(seed);

			/* An offset-looking value: small, aligned, or huge. */
			if (rnd(seed) % 2)
				v = htobe64((v % (len + 65536)) & ~511ull) | (rnd(seed) % 2 ? 0x80 : 0);
			memcpy(copy + (at & ~7ull), &v, 8);
		} else {
			copy[at] ^= (uint8_t)(1u << (rnd(seed) % 8));
		}
	}
	/* A third of the v3 images claim a crash with lazy refcounts: a
	 * writable open then rebuilds refcounts from the damaged tables. */
	if (len > 80 && be32toh(*(const uint32_t *)(copy + 4)) == 3 && rnd(seed) % 3 == 0)
		copy[79] |= 1;
	path_of(c, "fz.qcow2", path, sizeof(path));
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, copy, len), (ssize_t)len);
	close(fd);
	free(copy);

	if (open_img(c, "fz.qcow2", false, BLK_FORMAT_QCOW2, err, sizeof(err)) &&
	    open_img(c, "fz.qcow2", true, BLK_FORMAT_QCOW2, err, sizeof(err))) {
		assert_one_line_naming(err, NULL);
		return false;
	}
	uint64_t size = blk_size(c->b) / 512 * 512;
	uint64_t limit = size < 4 * MiB ? size : 4 * MiB;

	for (uint64_t off = 0; off + sizeof(buf) <= limit; off += sizeof(buf))
		(void)io(c, BLK_READ, off, buf, sizeof(buf));
	for (unsigned i = 0; i < 24 && size >= sizeof(buf); i++) {
		uint64_t off = (rnd(seed) % (size / 512 - sizeof(buf) / 512 + 1)) * 512;

		memset(buf, (int)i, sizeof(buf));
		if (blk_readonly(c->b))
			(void)io(c, BLK_READ, off, buf, sizeof(buf));
		else if (i % 5 == 4)
			(void)io(c, BLK_WRITE_ZEROES, off, NULL, sizeof(buf));
		else if (i % 7 == 6)
			(void)io(c, BLK_DISCARD, off, NULL, sizeof(buf));
		else
			(void)io(c, BLK_WRITE, off, buf, sizeof(buf));
	}
	(void)io(c, BLK_FLUSH, 0, NULL, 0);
	close_img(c);
	return true;
}

static void test_fuzz_metadata(void **state)
{
	struct ctx *c = *state;
	static const char *const makers[] = {
		"qemu-img convert -f raw -O qcow2 -o cluster_size=512 src.raw f.qcow2",
		"qemu-img convert -c -f raw -O qcow2 -o cluster_size=4096 src.raw f.qcow2",
		"qemu-img convert -f raw -O qcow2 -o cluster_size=4096,compat=0.10 src.raw f.qcow2",
		"qemu-img convert -f raw -O qcow2 -o cluster_size=1024,refcount_bits=2 src.raw"
		" f.qcow2",
	};
	uint64_t seed = 0x5eed;
	char path[128];

	if (!have_qemu_img())
		return;
	make_raw(c, "src.raw", 1 * MiB, 17);
	path_of(c, "f.qcow2", path, sizeof(path));
	for (unsigned m = 0; m < ARRAY_LEN(makers); m++) {
		uint64_t len;
		uint8_t *img;
		unsigned opened = 0;

		assert_int_equal(sh(c, "rm -f f.qcow2 && %s", makers[m]), 0);
		img = read_file(path, &len);
		for (unsigned i = 0; i < 150; i++)
			opened += fuzz_one(c, img, len, &seed);
		print_message("fuzz %u: %u of 150 damaged images opened\n", m, opened);
		free(img);
	}
}

/* Internal snapshots (made by qemu-img) share clusters with the active
 * image: writes copy them first.  The snapshot still holds its data after
 * our writes (qemu-img snapshot -a brings it back). */
static void test_internal_snapshots(void **state)
{
	struct ctx *c = *state;
	static const char *const opts[] = { "cluster_size=65536", "cluster_size=4096 -c",
					    "cluster_size=512,refcount_bits=4" };

	if (!have_qemu_img())
		return;
	make_raw(c, "src.raw", 4 * MiB, 23);
	for (unsigned i = 0; i < ARRAY_LEN(opts); i++) {
		print_message("snapshots: %s\n", opts[i]);
		assert_int_equal(sh(c, "rm -f s.qcow2 && qemu-img convert -f raw -O qcow2 -o %s"
				    " src.raw s.qcow2 && qemu-img snapshot -c one s.qcow2 &&"
				    " cp src.raw ref.raw && cp src.raw one.raw", opts[i]), 0);
		open_ok(c, "s.qcow2", false, BLK_FORMAT_QCOW2);
		random_writes(c, "ref.raw", 120, 31 + i, 80 * KiB);
		compare_with_raw(c, "ref.raw");
		close_img(c);
		qemu_verify(c, "s.qcow2", "ref.raw");

		/* A second snapshot over our writes, more writes. */
		assert_int_equal(sh(c, "qemu-img snapshot -c two s.qcow2 && cp ref.raw two.raw"), 0);
		open_ok(c, "s.qcow2", false, BLK_FORMAT_QCOW2);
		random_writes(c, "ref.raw", 120, 77 + i, 80 * KiB);
		close_img(c);
		qemu_verify(c, "s.qcow2", "ref.raw");

		assert_int_equal(sh(c, "qemu-img snapshot -a two s.qcow2"), 0);
		qemu_verify(c, "s.qcow2", "two.raw");
		assert_int_equal(sh(c, "qemu-img snapshot -a one s.qcow2"), 0);
		qemu_verify(c, "s.qcow2", "one.raw");
		open_ok(c, "s.qcow2", true, BLK_FORMAT_QCOW2);
		compare_with_raw(c, "one.raw");
		close_img(c);
	}
}

/* What `vmrun img` reads through the block layer (include/vmrun/block.h):
 * blk_image_info() of a qemu-made overlay, the extents of its top image
 * alone (top_only) against what qemu-io wrote into it, and a
 * blk_qcow2_create() image that qemu-img checks. */
static void test_top_extent_and_info(void **state)
{
	static const struct {
		uint64_t off, len;
		enum blk_extent kind;
	} want[] = {
		{ 0, 8 * KiB, BLK_EXTENT_DATA },         { 8 * KiB, 56 * KiB, BLK_EXTENT_BELOW },
		{ 64 * KiB, 8 * KiB, BLK_EXTENT_ZERO },  { 72 * KiB, 56 * KiB, BLK_EXTENT_BELOW },
		{ 128 * KiB, 4 * KiB, BLK_EXTENT_DATA }, { 132 * KiB, MiB - 132 * KiB, BLK_EXTENT_BELOW },
	};
	struct blk_open_opts top_only = { .readonly = true, .top_only = true, .no_aio = true };
	struct ctx *c = *state;
	struct blk_image_info info;
	char path[128], base[128], err[512];
	uint8_t buf[4096];
	uint64_t off = 0, len;
	enum blk_extent kind;
	unsigned i = 0;
	int fd;

	if (!have_qemu_img())
		return;
	make_raw(c, "base.raw", MiB, 7);
	assert_int_equal(sh(c, "qemu-img create -f qcow2 -o cluster_size=4096 -b base.raw -F raw"
			    " top.qcow2"), 0);
	assert_int_equal(sh(c, "qemu-io -f qcow2 -c 'write -P 0x31 0 8k' -c 'write -z 64k 8k'"
			    " -c 'write -c -P 0x32 128k 4k' top.qcow2"), 0);
	path_of(c, "top.qcow2", path, sizeof(path));
	path_of(c, "base.raw", base, sizeof(base));

	assert_int_equal(blk_image_info(path, BLK_FORMAT_AUTO, &info, err, sizeof(err)), 0);
	assert_int_equal(info.format, BLK_FORMAT_QCOW2);
	assert_int_equal(info.version, 3);
	assert_int_equal(info.cluster_bits, 12);
	assert_int_equal(info.size, MiB);
	assert_true(info.has_backing && !info.dirty && !info.corrupt);
	assert_string_equal(info.backing, "base.raw");
	assert_string_equal(info.backing_format, "raw");
	assert_string_equal(info.backing_path, base);
	assert_int_equal(blk_image_info(path, BLK_FORMAT_RAW, &info, err, sizeof(err)), 0);
	assert_int_equal(info.format, BLK_FORMAT_RAW);
	assert_false(info.has_backing);
	assert_int_equal(blk_image_info(base, BLK_FORMAT_QCOW2, &info, err, sizeof(err)), -EINVAL);

	/* top_only is for readers. */
	top_only.readonly = false;
	assert_int_equal(blk_open(path, &top_only, NULL, &c->b, err, sizeof(err)), -EINVAL);
	top_only.readonly = true;
	assert_int_equal(blk_open(path, &top_only, NULL, &c->b, err, sizeof(err)), 0);
	while (off < MiB) {
		assert_int_equal(blk_top_extent(c->b, off, MiB, &kind, &len), 0);
		assert_true(i < sizeof(want) / sizeof(want[0]));
		assert_int_equal(off, want[i].off);
		assert_int_equal(len, want[i].len);
		assert_int_equal(kind, want[i].kind);
		off += len;
		i++;
	}
	assert_int_equal(i, sizeof(want) / sizeof(want[0]));
	/* @max bounds an extent; offsets must be sectors inside the image. */
	assert_int_equal(blk_top_extent(c->b, 512, 1024, &kind, &len), 0);
	assert_int_equal(len, 1024);
	assert_int_equal(blk_top_extent(c->b, 100, 512, &kind, &len), -EINVAL);
	assert_int_equal(blk_top_extent(c->b, MiB, 512, &kind, &len), -EINVAL);
	/* The top alone: its data, compressed too, and zeroes for the rest. */
	assert_int_equal(blk_io_wait(c->b, BLK_READ, 128 * KiB, buf, sizeof(buf)), 0);
	for (unsigned k = 0; k < sizeof(buf); k++)
		assert_int_equal(buf[k], 0x32);
	assert_int_equal(blk_io_wait(c->b, BLK_READ, 16 * KiB, buf, sizeof(buf)), 0);
	for (unsigned k = 0; k < sizeof(buf); k++)
		assert_int_equal(buf[k], 0);
	close_img(c);

	/* A new image over it: what qemu-img reads back. */
	path_of(c, "new.qcow2", path, sizeof(path));
	fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0644);
	assert_true(fd >= 0);
	assert_int_equal(blk_qcow2_create(fd, 3 * MiB + 100, NULL, NULL), -EINVAL);
	assert_int_equal(blk_qcow2_create(fd, 0, NULL, NULL), -EINVAL);
	assert_int_equal(blk_qcow2_create(fd, MiB, "top.qcow2", "qcow2"), 0);
	close(fd);
	assert_int_equal(sh(c, "qemu-img check -f qcow2 new.qcow2"), 0);
	assert_int_equal(sh(c, "qemu-img info --output=json new.qcow2 | grep -q"
			    " '\"backing-filename-format\": \"qcow2\"'"), 0);
	assert_int_equal(sh(c, "qemu-img convert -f qcow2 -O raw top.qcow2 a.raw &&"
			    " qemu-img convert -f qcow2 -O raw new.qcow2 b.raw && cmp a.raw b.raw"),
			 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_raw_with_magic_stays_raw, setup, teardown),
		cmocka_unit_test_setup_teardown(test_probed_raw_refuses_magic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_probe_qcow2, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hostile_headers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_l1_entry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backing_loop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backing_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backing_depth, setup, teardown),
		cmocka_unit_test_setup_teardown(test_header_preserved, setup, teardown),
		cmocka_unit_test_setup_teardown(test_formats, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compressed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backing_chain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kill9, setup, teardown),
		cmocka_unit_test_setup_teardown(test_internal_snapshots, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fuzz_metadata, setup, teardown),
		cmocka_unit_test_setup_teardown(test_discard, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refcount_table_grows, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache_none, setup, teardown),
		cmocka_unit_test_setup_teardown(test_top_extent_and_info, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

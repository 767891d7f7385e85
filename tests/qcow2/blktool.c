/* blktool: drive the block backends (include/vmrun/block.h) from the
 * command line, for tests/qcow2/qcow2_tests.py, which checks the results
 * against qemu-img.
 *
 *   blktool read IMAGE [OPTIONS]          the whole virtual disk to stdout
 *   blktool write IMAGE SCRIPT [OPTIONS]  apply SCRIPT (see below)
 *   blktool info IMAGE [OPTIONS]          "format: raw|qcow2" and "size: BYTES"
 *
 * OPTIONS: --format auto|raw|qcow2 (default auto), --cache writeback|none|unsafe,
 *          --no-aio, --kill-after N (write only).
 *
 * SCRIPT, one operation a line ('#' starts a comment; numbers in C syntax):
 *   w OFFSET LEN SEED   write the pattern of SEED (pattern_fill() below)
 *   z OFFSET LEN        write zeroes
 *   d OFFSET LEN        discard
 *   f                   flush
 * Up to QDEPTH operations are in flight at once.  The order of the script
 * is kept where it matters: an operation waits for every in-flight one
 * whose range it overlaps, and a flush waits for everything before it and
 * holds back everything after it until it has completed.  So the image
 * ends as if the script had run one line at a time.
 *
 * Progress goes to stdout, one flushed line per event, so that a test can
 * tell how far a killed run got:
 *   done LINE           the operation on script line LINE completed
 *   flushed LINE        the flush on line LINE completed
 * --kill-after N raises SIGKILL after the Nth completed operation (a
 * flush counts), before printing its "done" line.
 *
 * At the end, stderr gets "blktool: N operations, at most M in flight".
 *
 * Exit status: 0 ok, 1 an I/O error (the operation is named on stderr),
 * 2 usage, script or open error (blk_open()'s message on stderr). */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmrun/block.h"
#include "vmrun/evloop.h"

#define QDEPTH 32
#define SECTOR 512u
#define READ_CHUNK (1024u * 1024u)

struct tool {
	struct evloop loop;
	struct blk *b;
	const char *path;
	unsigned inflight;
	unsigned max_inflight;    /* the most requests in flight at once */
	unsigned long completed; /* operations completed, for --kill-after */
	unsigned long kill_after; /* 0: never */
	int error;                /* first failed operation's result */
};

struct op {
	struct blk_req req;
	struct tool *t;
	char kind; /* 'w', 'z', 'd', 'f', 'r' */
	unsigned line;
	bool busy;
	uint64_t off, len;
	struct iovec iov;
	uint8_t *buf;
};

static void usage(void)
{
	fprintf(stderr,
		"usage: blktool read IMAGE [--format auto|raw|qcow2] [--cache MODE] [--no-aio]\n"
		"       blktool write IMAGE SCRIPT [--format F] [--cache MODE] [--no-aio] "
		"[--kill-after N]\n"
		"       blktool info IMAGE [--format F]\n");
}

/* The test pattern, per 512-byte sector: bytes 0-7 the seed, 8-15 the
 * sector's index on the disk (both little-endian), then bytes that depend
 * on the seed and their position.  tests/qcow2/qcow2_tests.py makes the
 * same bytes. */
static void pattern_fill(uint8_t *p, uint64_t off, uint64_t len, uint64_t seed)
{
	for (uint64_t s = 0; s < len / SECTOR; s++) {
		uint8_t *q = p + s * SECTOR;
		uint64_t sector = off / SECTOR + s;

		for (unsigned i = 0; i < 8; i++) {
			q[i] = (uint8_t)(seed >> (8 * i));
			q[8 + i] = (uint8_t)(sector >> (8 * i));
		}
		for (unsigned i = 16; i < SECTOR; i++)
			q[i] = (uint8_t)(i * 31u + seed * 17u + 1u);
	}
}

static const char *op_name(char kind)
{
	switch (kind) {
	case 'w':
		return "write";
	case 'z':
		return "write-zeroes";
	case 'd':
		return "discard";
	case 'f':
		return "flush";
	default:
		return "read";
	}
}

static void op_done(struct blk_req *req, int result)
{
	struct op *o = req->opaque;
	struct tool *t = o->t;

	o->busy = false;
	t->inflight--;
	t->loop.stop = true;
	if (result) {
		fprintf(stderr, "blktool: %s: %s at offset %" PRIu64 " length %" PRIu64
			" (line %u) failed: %s\n", t->path, op_name(o->kind), o->off, o->len,
			o->line, strerror(-result));
		if (!t->error)
			t->error = result;
		return;
	}
	if (o->kind == 'r')
		return;
	t->completed++;
	if (t->kill_after && t->completed >= t->kill_after) {
		fflush(stdout);
		raise(SIGKILL);
	}
	printf("%s %u\n", o->kind == 'f' ? "flushed" : "done", o->line);
	fflush(stdout);
}

/* Run the loop until at least one more request has completed. */
static int wait_one(struct tool *t)
{
	int r;

	if (!t->inflight)
		return 0;
	t->loop.stop = false;
	r = evloop_run(&t->loop);
	if (r)
		fprintf(stderr, "blktool: event loop: %s\n", strerror(-r));
	return r;
}

static int wait_all(struct tool *t)
{
	while (t->inflight) {
		int r = wait_one(t);

		if (r)
			return r;
	}
	return 0;
}

static int submit(struct tool *t, struct op *o)
{
	static const enum blk_op ops[] = {
		['w'] = BLK_WRITE, ['z'] = BLK_WRITE_ZEROES, ['d'] = BLK_DISCARD,
		['f'] = BLK_FLUSH, ['r'] = BLK_READ,
	};
	int r;

	memset(&o->req, 0, sizeof(o->req));
	o->req.op = ops[(unsigned char)o->kind];
	o->req.offset = o->off;
	o->req.len = o->len;
	if (o->kind == 'w' || o->kind == 'r') {
		o->iov.iov_base = o->buf;
		o->iov.iov_len = o->len;
		o->req.iov = &o->iov;
		o->req.iovcnt = 1;
	}
	o->req.done = op_done;
	o->req.opaque = o;
	o->t = t;
	r = blk_submit(t->b, &o->req);
	if (r) {
		fprintf(stderr, "blktool: %s: %s at offset %" PRIu64 " length %" PRIu64
			" (line %u) refused: %s\n", t->path, op_name(o->kind), o->off, o->len,
			o->line, strerror(-r));
		return r;
	}
	o->busy = true;
	if (++t->inflight > t->max_inflight)
		t->max_inflight = t->inflight;
	return 0;
}

static bool overlaps(const struct op *a, const struct op *b)
{
	return a->off < b->off + b->len && b->off < a->off + a->len;
}

static int parse_u64(const char *s, uint64_t *v)
{
	char *end;

	if (!s)
		return -EINVAL;
	errno = 0;
	*v = strtoull(s, &end, 0);
	if (errno || end == s || *end)
		return -EINVAL;
	return 0;
}

/* One script line into @o (kind 0 for a blank or comment line). */
static int parse_line(char *line, unsigned lineno, struct op *o)
{
	char *words[5], *save = NULL;
	unsigned n = 0;
	uint64_t seed = 0;
	char *hash = strchr(line, '#');

	if (hash)
		*hash = '\0';
	for (char *w = strtok_r(line, " \t\r\n", &save); w; w = strtok_r(NULL, " \t\r\n", &save)) {
		if (n == 5)
			return -EINVAL;
		words[n++] = w;
	}
	o->kind = 0;
	o->line = lineno;
	o->off = o->len = 0;
	if (!n)
		return 0;
	if (strlen(words[0]) != 1 || !strchr("wzdf", words[0][0]))
		return -EINVAL;
	o->kind = words[0][0];
	if (o->kind == 'f')
		return n == 1 ? 0 : -EINVAL;
	if (n != (o->kind == 'w' ? 4u : 3u) || parse_u64(words[1], &o->off) ||
	    parse_u64(words[2], &o->len) || (o->kind == 'w' && parse_u64(words[3], &seed)))
		return -EINVAL;
	if (o->kind == 'w') {
		if (o->len % SECTOR || o->off % SECTOR || o->len > (1u << 30))
			return -EINVAL;
		free(o->buf);
		o->buf = malloc(o->len ? o->len : 1);
		if (!o->buf)
			return -ENOMEM;
		pattern_fill(o->buf, o->off, o->len, seed);
	}
	return 0;
}

static struct op *free_slot(struct op *ops)
{
	for (unsigned i = 0; i < QDEPTH; i++) {
		if (!ops[i].busy)
			return &ops[i];
	}
	return NULL;
}

static int cmd_write(struct tool *t, const char *script)
{
	struct op ops[QDEPTH] = { 0 };
	struct op next = { 0 };
	char *line = NULL;
	size_t cap = 0;
	unsigned lineno = 0;
	int ret = 0;
	FILE *f = fopen(script, "r");

	if (!f) {
		fprintf(stderr, "blktool: cannot open %s: %s\n", script, strerror(errno));
		return 2;
	}
	while (getline(&line, &cap, f) >= 0) {
		struct op *slot;
		bool blocked;

		if (parse_line(line, ++lineno, &next)) {
			fprintf(stderr, "blktool: %s:%u: bad line\n", script, lineno);
			ret = 2;
			break;
		}
		if (!next.kind)
			continue;
		/* Wait for room and for every overlapping request; a flush
		 * is a barrier both ways. */
		do {
			blocked = next.kind == 'f' ? t->inflight > 0 : !free_slot(ops);
			for (unsigned i = 0; i < QDEPTH && !blocked; i++)
				blocked = ops[i].busy && (ops[i].kind == 'f' || overlaps(&ops[i], &next));
			if (blocked && wait_one(t)) {
				ret = 1;
				goto out;
			}
			if (t->error) {
				ret = 1;
				goto out;
			}
		} while (blocked);
		slot = free_slot(ops);
		free(slot->buf);
		*slot = next;
		next.buf = NULL;
		if (submit(t, slot)) {
			ret = 1;
			goto out;
		}
		if (slot->kind == 'f' && wait_all(t)) {
			ret = 1;
			goto out;
		}
	}
	if (!ret && ferror(f)) {
		fprintf(stderr, "blktool: reading %s: %s\n", script, strerror(errno));
		ret = 2;
	}
out:
	if (wait_all(t) && !ret)
		ret = 1;
	if (t->error && !ret)
		ret = 1;
	fprintf(stderr, "blktool: %lu operations, at most %u in flight\n", t->completed,
		t->max_inflight);
	for (unsigned i = 0; i < QDEPTH; i++)
		free(ops[i].buf);
	free(next.buf);
	free(line);
	fclose(f);
	return ret;
}

static int write_all(const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = write(STDOUT_FILENO, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "blktool: writing stdout: %s\n", strerror(errno));
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The whole disk to stdout: up to 8 requests of 1 MiB in flight, written
 * out in order. */
static int cmd_read(struct tool *t)
{
	enum { N = 8 };
	struct op ops[N] = { 0 };
	uint64_t size = blk_size(t->b), off = 0;
	int ret = 0;

	for (unsigned i = 0; i < N; i++) {
		ops[i].buf = malloc(READ_CHUNK);
		if (!ops[i].buf) {
			fprintf(stderr, "blktool: out of memory\n");
			ret = 1;
			goto out;
		}
	}
	while (off < size && !ret) {
		unsigned n = 0;

		for (; n < N && off < size; n++) {
			ops[n].kind = 'r';
			ops[n].off = off;
			ops[n].len = size - off < READ_CHUNK ? size - off : READ_CHUNK;
			off += ops[n].len;
			if (submit(t, &ops[n])) {
				ret = 1;
				break;
			}
		}
		if (wait_all(t) || t->error)
			ret = 1;
		for (unsigned i = 0; i < n && !ret; i++) {
			if (write_all(ops[i].buf, ops[i].len))
				ret = 1;
		}
	}
out:
	if (wait_all(t))
		ret = 1;
	for (unsigned i = 0; i < N; i++)
		free(ops[i].buf);
	return ret;
}

static const char *format_name(const struct blk *b)
{
	switch (blk_format(b)) {
	case BLK_FORMAT_RAW:
		return "raw";
	case BLK_FORMAT_QCOW2:
		return "qcow2";
	default:
		return "auto (?)";
	}
}

int main(int argc, char **argv)
{
	struct blk_open_opts opts = { .cache = BLK_CACHE_WRITEBACK, .format = BLK_FORMAT_AUTO };
	struct tool t = { 0 };
	const char *cmd, *script = NULL;
	char err[512] = "";
	int ret, r, argi = 3;

	if (argc < 3) {
		usage();
		return 2;
	}
	cmd = argv[1];
	t.path = argv[2];
	if (!strcmp(cmd, "write")) {
		if (argc < 4) {
			usage();
			return 2;
		}
		script = argv[3];
		argi = 4;
	} else if (strcmp(cmd, "read") && strcmp(cmd, "info")) {
		usage();
		return 2;
	}
	for (; argi < argc; argi++) {
		const char *a = argv[argi], *v = argi + 1 < argc ? argv[argi + 1] : NULL;
		uint64_t n;

		if (!strcmp(a, "--no-aio")) {
			opts.no_aio = true;
			continue;
		}
		if (!v) {
			usage();
			return 2;
		}
		argi++;
		if (!strcmp(a, "--format") && !strcmp(v, "auto")) {
			opts.format = BLK_FORMAT_AUTO;
		} else if (!strcmp(a, "--format") && !strcmp(v, "raw")) {
			opts.format = BLK_FORMAT_RAW;
		} else if (!strcmp(a, "--format") && !strcmp(v, "qcow2")) {
			opts.format = BLK_FORMAT_QCOW2;
		} else if (!strcmp(a, "--cache") && !strcmp(v, "writeback")) {
			opts.cache = BLK_CACHE_WRITEBACK;
		} else if (!strcmp(a, "--cache") && !strcmp(v, "none")) {
			opts.cache = BLK_CACHE_NONE;
		} else if (!strcmp(a, "--cache") && !strcmp(v, "unsafe")) {
			opts.cache = BLK_CACHE_UNSAFE;
		} else if (!strcmp(a, "--kill-after") && script && !parse_u64(v, &n) && n) {
			t.kill_after = n;
		} else {
			fprintf(stderr, "blktool: bad option %s %s\n", a, v);
			usage();
			return 2;
		}
	}
	opts.readonly = !script;

	if (evloop_init(&t.loop)) {
		fprintf(stderr, "blktool: cannot create the event loop\n");
		return 2;
	}
	r = blk_open(t.path, &opts, &t.loop, &t.b, err, sizeof(err));
	if (r) {
		fprintf(stderr, "blktool: %s\n", err[0] ? err : strerror(-r));
		evloop_exit(&t.loop);
		return 2;
	}
	if (!strcmp(cmd, "info")) {
		printf("format: %s\nsize: %" PRIu64 "\n", format_name(t.b), blk_size(t.b));
		ret = 0;
	} else if (opts.format == BLK_FORMAT_QCOW2 && blk_format(t.b) != BLK_FORMAT_QCOW2) {
		/* A backend that ignores the format asked for would read the
		 * image's bytes as the disk: refuse instead. */
		fprintf(stderr, "blktool: %s: --format qcow2 asked for, but the backend opened it "
			"as %s\n", t.path, format_name(t.b));
		ret = 2;
	} else if (script) {
		ret = cmd_write(&t, script);
	} else {
		ret = cmd_read(&t);
	}
	blk_close(t.b);
	evloop_exit(&t.loop);
	return ret;
}

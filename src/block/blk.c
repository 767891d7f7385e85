/* The request plumbing every block backend shares (include/vmrun/block.h):
 * format probing and dispatch to a per-format struct blk_ops, validation,
 * the list of completed requests whose done() has still to run, the
 * eventfd that makes the event loop run them, and drain.
 *
 * Completion: done() never runs inside blk_submit().  A request that
 * completes synchronously goes on b->done and the eventfd is signalled;
 * Linux AIO completions (raw) signal the same eventfd from the kernel.
 * One handler, on_eventfd(), reaps both.
 *
 * Threads: none of our own.  Every function runs on the event loop thread
 * (or on any one thread while the loop is not running); nothing is locked. */
#include "blk_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmrun/image_lock.h"
#include "vmrun/log.h"

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

void blk_fifo_init(struct req_fifo *f)
{
	f->head = NULL;
	f->tail = &f->head;
}

void blk_fifo_push(struct req_fifo *f, struct blk_req *req)
{
	req->next = NULL;
	*f->tail = req;
	f->tail = &req->next;
}

struct blk_req *blk_fifo_pop(struct req_fifo *f)
{
	struct blk_req *req = f->head;

	if (req) {
		f->head = req->next;
		if (!f->head)
			f->tail = &f->head;
		req->next = NULL;
	}
	return req;
}

/* Sum of @cnt segments into *@total; false when it overflows 64 bits. */
static bool iov_total(const struct iovec *iov, unsigned cnt, uint64_t *total)
{
	uint64_t sum = 0;

	for (unsigned i = 0; i < cnt; i++) {
		if (iov[i].iov_len > UINT64_MAX - sum)
			return false;
		sum += iov[i].iov_len;
	}
	*total = sum;
	return true;
}

void blk_iov_to_buf(const struct iovec *iov, unsigned cnt, void *buf)
{
	char *p = buf;

	for (unsigned i = 0; i < cnt; i++) {
		if (iov[i].iov_len)
			memcpy(p, iov[i].iov_base, iov[i].iov_len);
		p += iov[i].iov_len;
	}
}

void blk_iov_from_buf(const struct iovec *iov, unsigned cnt, const void *buf)
{
	const char *p = buf;

	for (unsigned i = 0; i < cnt; i++) {
		if (iov[i].iov_len)
			memcpy(iov[i].iov_base, p, iov[i].iov_len);
		p += iov[i].iov_len;
	}
}

/* The first @n bytes of the buffer @iov describes (@n no more than its
 * total) into @out. */
static void iov_head(const struct iovec *iov, unsigned cnt, void *out, size_t n)
{
	char *p = out;

	for (unsigned i = 0; i < cnt && n; i++) {
		size_t k = iov[i].iov_len < n ? iov[i].iov_len : n;

		memcpy(p, iov[i].iov_base, k);
		p += k;
		n -= k;
	}
}

/* ------------------------------------------------------------------ */
/* Completion plumbing                                                 */

static void blk_signal(struct blk *b)
{
	uint64_t one = 1;

	/* EAGAIN means the counter is already huge, i.e. signalled. */
	if (write(b->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warn("%s: eventfd write: %s", b->path, strerror(errno));
}

/* The eventfd is signalled only when nobody up the stack is about to empty
 * b->done anyway (on_eventfd(), blk_drain()). */
void blk_req_complete(struct blk *b, struct blk_req *req, int result)
{
	bool was_empty = !b->done.head;

	req->result = result;
	blk_fifo_push(&b->done, req);
	if (was_empty && !b->dispatching)
		blk_signal(b);
}

/* Run done() for every completed request, including those that the
 * callbacks themselves complete.  Pops one at a time so that a callback
 * may submit, or drain, re-entrantly. */
static void run_done(struct blk *b)
{
	struct blk_req *req;

	while ((req = blk_fifo_pop(&b->done))) {
		b->inflight--;
		req->done(req, req->result); /* may free or reuse @req */
	}
}

/* The event loop's handler for b->efd. */
static void on_eventfd(struct ev_source *src, uint32_t events)
{
	struct blk *b = src->opaque;
	uint64_t count;

	(void)events;
	/* Reset the counter first: a completion after this re-arms it. */
	if (read(b->efd, &count, sizeof(count)) < 0 && errno != EAGAIN)
		log_warn("%s: eventfd read: %s", b->path, strerror(errno));
	b->dispatching++;
	if (b->ops->poll)
		b->ops->poll(b, false);
	run_done(b);
	b->dispatching--;
}

/* ------------------------------------------------------------------ */
/* Open and close                                                      */

static void blk_destroy(struct blk *b)
{
	if (b->ops && b->ops->destroy)
		b->ops->destroy(b);
	if (b->fd >= 0)
		close(b->fd); /* also drops its locks (flock, QEMU's bytes) */
	if (b->efd >= 0)
		close(b->efd);
	free(b->path);
	free(b);
}

/* AUTO: qcow2 when the file starts with its magic, else raw.  A file that
 * cannot be opened or read here is left to the raw open to report. */
static enum blk_format blk_probe(const char *path)
{
	char magic[4];
	/* O_NONBLOCK: a FIFO must not hang the probe (raw then refuses it). */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	struct stat st;
	ssize_t n;

	if (fd < 0)
		return BLK_FORMAT_RAW;
	if (fstat(fd, &st) < 0 || (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))) {
		close(fd);
		return BLK_FORMAT_RAW;
	}
	do {
		n = pread(fd, magic, sizeof(magic), 0);
	} while (n < 0 && errno == EINTR);
	close(fd);
	if (n == (ssize_t)sizeof(magic) && !memcmp(magic, BLK_QCOW2_MAGIC, sizeof(magic)))
		return BLK_FORMAT_QCOW2;
	return BLK_FORMAT_RAW;
}

/* Whether @path is a qcow2 overlay: the qcow2 magic and a backing file
 * named in its header (offset and length at bytes 8 and 16).  A file that
 * cannot be read here is left to the raw open to report. */
static bool blk_is_qcow2_overlay(const char *path)
{
	uint8_t h[20];
	/* O_NONBLOCK: a FIFO must not hang this (raw then refuses it). */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	struct stat st;
	uint64_t off = 0;
	uint32_t len = 0;
	ssize_t n;

	if (fd < 0)
		return false;
	if (fstat(fd, &st) < 0 || (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))) {
		close(fd);
		return false;
	}
	do {
		n = pread(fd, h, sizeof(h), 0);
	} while (n < 0 && errno == EINTR);
	close(fd);
	if (n != (ssize_t)sizeof(h) || memcmp(h, BLK_QCOW2_MAGIC, 4))
		return false;
	for (int i = 0; i < 8; i++)
		off = off << 8 | h[8 + i];
	for (int i = 0; i < 4; i++)
		len = len << 8 | h[16 + i];
	return off && len;
}

/* blk_open(), and with @data_file blk_open_data_file(). */
static int blk_open_common(const char *path, const struct blk_open_opts *opts, bool data_file,
			   struct evloop *loop, struct blk **out, char *err, size_t errlen)
{
	static const struct blk_open_opts defaults;
	struct blk *b;
	int r;

	*out = NULL;
	if (!opts)
		opts = &defaults;
	if (opts->top_only && !opts->readonly)
		return errmsg(-EINVAL, err, errlen, "%s: top_only needs a read-only open", path);
	b = calloc(1, sizeof(*b));
	if (!b)
		return errmsg(-ENOMEM, err, errlen, "%s: out of memory", path);
	b->no_lock = data_file || opts->no_lock;
	b->lock = BLK_LOCK_NONE; /* until a format's open takes one */
	b->fd = -1;
	b->efd = -1;
	b->loop = loop;
	b->readonly = opts->readonly;
	b->unsafe = opts->cache == BLK_CACHE_UNSAFE;
	blk_fifo_init(&b->done);
	blk_fifo_init(&b->wait);
	b->ready_tail = &b->ready_head;
	b->path = strdup(path);
	if (!b->path) {
		r = errmsg(-ENOMEM, err, errlen, "%s: out of memory", path);
		goto fail;
	}
	b->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (b->efd < 0) {
		r = errmsg(-errno, err, errlen, "%s: eventfd: %s", path, strerror(errno));
		goto fail;
	}

	switch (data_file ? BLK_FORMAT_RAW : opts->format) {
	case BLK_FORMAT_AUTO:
		b->format = blk_probe(path);
		b->probed_raw = b->format == BLK_FORMAT_RAW;
		break;
	case BLK_FORMAT_RAW:
		/* What a live snapshot leaves under a raw image's name: as
		 * raw, the guest would see the overlay's metadata. */
		if (!data_file && blk_is_qcow2_overlay(path)) {
			r = errmsg(-EINVAL, err, errlen,
				   "%s is a qcow2 overlay (a snapshot's?): use format=qcow2 or leave format out",
				   path);
			goto fail;
		}
		/* fallthrough */
	case BLK_FORMAT_QCOW2:
		b->format = opts->format;
		break;
	default:
		r = errmsg(-EINVAL, err, errlen, "%s: unknown image format %d", path,
			   (int)opts->format);
		goto fail;
	}
	if (b->format == BLK_FORMAT_QCOW2)
		r = qcow2_open(b, path, opts, loop, err, errlen);
	else
		r = raw_open(b, path, opts, err, errlen);
	if (r)
		goto fail;

	if (loop) {
		b->src.fd = b->efd;
		b->src.handler = on_eventfd;
		b->src.opaque = b;
		r = evloop_add(loop, &b->src, EPOLLIN);
		if (r) {
			errmsg(r, err, errlen, "%s: cannot watch completions: %s", path,
			       strerror(-r));
			goto fail;
		}
	}
	*out = b;
	return 0;
fail:
	blk_destroy(b);
	return r;
}

int blk_open(const char *path, const struct blk_open_opts *opts, struct evloop *loop,
	     struct blk **out, char *err, size_t errlen)
{
	return blk_open_common(path, opts, false, loop, out, err, errlen);
}

int blk_open_data_file(const char *path, const struct blk_open_opts *opts, struct evloop *loop,
		       struct blk **out, char *err, size_t errlen)
{
	return blk_open_common(path, opts, true, loop, out, err, errlen);
}

/* ------------------------------------------------------------------ */
/* The interface                                                       */

enum blk_format blk_format(const struct blk *b)
{
	return b->format;
}

const char *blk_format_name(enum blk_format f)
{
	return f == BLK_FORMAT_QCOW2 ? "qcow2" : "raw";
}

uint64_t blk_size(const struct blk *b)
{
	return b->size;
}

unsigned blk_block_size(const struct blk *b)
{
	return b->block_size;
}

bool blk_readonly(const struct blk *b)
{
	return b->readonly;
}

bool blk_can_discard(const struct blk *b)
{
	return !b->readonly && b->discard_ok;
}

bool blk_uses_aio(const struct blk *b)
{
	return b->aio;
}

void blk_get_info(const struct blk *b, struct blk_image_info *info)
{
	if (b->format == BLK_FORMAT_QCOW2) {
		qcow2_get_info(b, info);
		return;
	}
	memset(info, 0, sizeof(*info));
	info->format = BLK_FORMAT_RAW;
	info->size = info->file_size = b->size;
}

int blk_top_extent(struct blk *b, uint64_t offset, uint64_t max, enum blk_extent *kind,
		   uint64_t *len)
{
	if (offset % 512 || offset >= b->size || !max)
		return -EINVAL;
	if (max > b->size - offset)
		max = b->size - offset;
	if (b->format == BLK_FORMAT_QCOW2)
		return qcow2_top_extent(b, offset, max, kind, len);
	*kind = BLK_EXTENT_DATA;
	*len = max;
	return 0;
}

unsigned blk_inflight(const struct blk *b)
{
	return b->inflight;
}

/* The refusals blk_submit() promises: 0 or -errno. */
static int blk_check(const struct blk *b, const struct blk_req *req)
{
	uint64_t total;

	if (!req->done)
		return -EINVAL;
	switch (req->op) {
	case BLK_FLUSH:
		return 0; /* offset and len mean nothing */
	case BLK_READ:
		break;
	case BLK_WRITE:
	case BLK_DISCARD:
	case BLK_WRITE_ZEROES:
		if (b->readonly)
			return -EROFS;
		break;
	default:
		return -EINVAL;
	}
	if (req->offset % b->block_size || req->len % b->block_size)
		return -EINVAL;
	if (req->offset > b->size || req->len > b->size - req->offset)
		return -EINVAL;
	if (req->op == BLK_READ || req->op == BLK_WRITE) {
		if (req->iovcnt && !req->iov)
			return -EINVAL;
		if (!iov_total(req->iov, req->iovcnt, &total) || total != req->len)
			return -EINVAL;
	}
	return 0;
}

/* A raw image whose format was probed must never receive the qcow2 magic
 * in its first bytes: at the next start it would probe as qcow2, with a
 * backing file of the guest's choosing. */
static bool writes_magic(const struct blk *b, const struct blk_req *req)
{
	char head[4];

	if (!b->probed_raw || req->op != BLK_WRITE || req->offset != 0 ||
	    req->len < sizeof(head))
		return false;
	iov_head(req->iov, req->iovcnt, head, sizeof(head));
	return !memcmp(head, BLK_QCOW2_MAGIC, sizeof(head));
}

int blk_submit(struct blk *b, struct blk_req *req)
{
	int r = blk_check(b, req);

	if (r)
		return r;
	req->next = NULL;
	req->result = 0;
	b->inflight++;
	if ((req->op != BLK_FLUSH && req->len == 0) || (req->op == BLK_FLUSH && b->unsafe)) {
		blk_req_complete(b, req, 0);
		return 0;
	}
	if (writes_magic(b, req)) {
		log_warn("%s: refused a write of the qcow2 magic to sector 0 of a probed raw image"
			 " (open it with format=raw to allow it)", b->path);
		blk_req_complete(b, req, -EPERM);
		return 0;
	}
	b->ops->submit(b, req);
	return 0;
}

struct io_wait {
	int result;
	bool done;
};

static void io_wait_done(struct blk_req *req, int result)
{
	struct io_wait *w = req->opaque;

	w->result = result;
	w->done = true;
}

int blk_io_wait(struct blk *b, enum blk_op op, uint64_t offset, void *buf, uint64_t len)
{
	struct io_wait w = { 0 };
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct blk_req req = {
		.op = op, .offset = offset, .len = len, .done = io_wait_done, .opaque = &w,
	};
	int r;

	if (op == BLK_READ || op == BLK_WRITE) {
		req.iov = &iov;
		req.iovcnt = 1;
	}
	r = blk_submit(b, &req);
	if (r)
		return r;
	blk_drain(b);
	return w.done ? w.result : -EIO;
}

int blk_set_lock(struct blk *b, enum blk_lock mode)
{
	int fd = b->ops->lock_fd ? b->ops->lock_fd(b) : b->fd;
	char why[PATH_MAX + 160];
	int r;

	if (fd < 0 || b->readonly)
		return 0;
	/* flock and QEMU's lock bytes move together (a filesystem without
	 * either only warned at open); on -EBUSY the handle keeps the lock
	 * it had.  Callers that retry (migration) must not log each try. */
	r = image_lock_change(fd, b->path, b->lock, mode, why, sizeof(why));
	if (!r)
		b->lock = mode;
	return r;
}

void blk_drain(struct blk *b)
{
	uint64_t count;

	b->dispatching++;
	for (;;) {
		run_done(b);
		if (!b->inflight)
			break;
		if (b->ops->poll && b->ops->poll(b, true))
			continue;
		if (!b->done.head) {
			/* Counted but nowhere: a bug, not worth a hang. */
			log_warn("%s: drain: %u requests lost", b->path, b->inflight);
			break;
		}
	}
	b->dispatching--;
	/* Everything is reaped: a pending signal would only wake the loop
	 * for nothing. */
	if (!b->dispatching && read(b->efd, &count, sizeof(count)) < 0 && errno != EAGAIN)
		log_warn("%s: eventfd read: %s", b->path, strerror(errno));
}

void blk_close(struct blk *b)
{
	if (!b)
		return;
	blk_drain(b);
	if (b->loop)
		evloop_remove(b->loop, &b->src);
	blk_destroy(b);
}

/* The raw block backend (include/vmrun/block.h): regular files and block
 * devices, byte for byte.
 *
 * The request plumbing every backend shares (validation, the completed
 * FIFO, the eventfd, drain) lives in blk.c; this file is the raw engine:
 * open and probe, Linux AIO (a fixed table of iocb slots, a FIFO of
 * requests waiting for a slot, reaping), and the synchronous
 * preadv/pwritev/fallocate/fdatasync paths.
 *
 * Completion: a request that completes synchronously (the preadv/pwritev
 * fallback, DISCARD, WRITE_ZEROES, a refused io_submit...) goes through
 * blk_req_complete(); AIO completions signal the shared eventfd from the
 * kernel (IOCB_FLAG_RESFD) and are reaped by raw_poll().
 *
 * Threads: none of our own.  Every function runs on the event loop thread
 * (or on any one thread while the loop is not running); nothing is locked.
 *
 * O_DIRECT (cache=none): the offset, the length and every iov segment
 * (address and length) must be aligned; a request whose memory is not goes
 * through an aligned bounce buffer, so the caller never has to care. */
#include "blk_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vmrun/image_lock.h"
#include "vmrun/log.h"

#define RAW_SECTOR 512u
/* iocb slots per image: as deep as a virtio-blk queue is long; requests
 * beyond it wait in b->wait. */
#define RAW_QUEUE_DEPTH 128u
#define RAW_REAP_BATCH 32
#define RAW_SUBMIT_BATCH 32
/* Write-zeroes fallback: zeroes written per pwrite. */
#define RAW_ZERO_CHUNK (1u << 20)

/* One READ or WRITE in progress, for the AIO and the synchronous paths
 * alike: where the data goes, and how much has moved. */
struct raw_xfer {
	struct blk_req *req;
	void *bounce;             /* aligned copy of the data, or NULL */
	struct iovec one;         /* the bounce buffer's remainder */
	struct iovec *rest;       /* the caller's iov past a short transfer, or NULL */
	const struct iovec *iov;  /* what the next preadv/pwritev transfers */
	unsigned iovcnt;
	uint64_t done;            /* bytes moved so far */
};

/* An iocb and the request it carries.  A slot is free (on b->free_slots),
 * ready (prepared, on b->ready, not yet accepted by io_submit), or in the
 * kernel. */
struct raw_slot {
	struct iocb iocb;
	struct raw_xfer x; /* x.req is set for every op */
	struct raw_slot *next;
};

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

/* Zero bytes [@from, @to) of the buffer that @iov describes. */
static void iov_zero(const struct iovec *iov, unsigned cnt, uint64_t from, uint64_t to)
{
	uint64_t pos = 0;

	for (unsigned i = 0; i < cnt && pos < to; i++) {
		uint64_t end = pos + iov[i].iov_len;

		if (end > from) {
			uint64_t a = from > pos ? from : pos;
			uint64_t z = to < end ? to : end;

			memset((char *)iov[i].iov_base + (a - pos), 0, z - a);
		}
		pos = end;
	}
}

/* What O_DIRECT accepts as memory: every segment starting on @mem_align
 * and a multiple of @len_align long (the logical block size: the block
 * layer checks segment lengths against it, not only the total). */
static bool iov_dio_aligned(const struct iovec *iov, unsigned cnt, unsigned mem_align,
			    unsigned len_align)
{
	for (unsigned i = 0; i < cnt; i++) {
		if ((uintptr_t)iov[i].iov_base % mem_align || iov[i].iov_len % len_align)
			return false;
	}
	return true;
}

/* A heap copy of @iov without its first @skip bytes; *@outcnt segments.
 * NULL when out of memory. */
static struct iovec *iov_tail(const struct iovec *iov, unsigned cnt, uint64_t skip,
			      unsigned *outcnt)
{
	unsigned i = 0, n;
	struct iovec *t;

	while (i < cnt && skip >= iov[i].iov_len) {
		skip -= iov[i].iov_len;
		i++;
	}
	n = cnt - i;
	t = malloc((n ? n : 1) * sizeof(*t));
	if (!t)
		return NULL;
	memcpy(t, iov + i, n * sizeof(*t));
	if (n) {
		t[0].iov_base = (char *)t[0].iov_base + skip;
		t[0].iov_len -= skip;
	}
	*outcnt = n;
	return t;
}

/* ------------------------------------------------------------------ */
/* Raw: synchronous operations                                         */

static ssize_t raw_rw_once(struct blk *b, bool write, const struct iovec *iov, unsigned cnt,
			   uint64_t off)
{
	ssize_t n;

	do {
		n = write ? pwritev(b->fd, iov, (int)cnt, (off_t)off)
			  : preadv(b->fd, iov, (int)cnt, (off_t)off);
	} while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

/* Prepare @x to move @req: bounce through an aligned buffer where O_DIRECT
 * would refuse the caller's memory, or where the iov is longer than the
 * kernel takes (IOV_MAX).  Returns 0 or -ENOMEM. */
static int xfer_start(struct blk *b, struct raw_xfer *x, struct blk_req *req)
{
	memset(x, 0, sizeof(*x));
	x->req = req;
	if (req->iovcnt > IOV_MAX ||
	    (b->direct && !iov_dio_aligned(req->iov, req->iovcnt, b->mem_align, b->block_size))) {
		if (posix_memalign(&x->bounce, b->mem_align, req->len ? req->len : b->mem_align))
			return -ENOMEM;
		if (req->op == BLK_WRITE)
			blk_iov_to_buf(req->iov, req->iovcnt, x->bounce);
		x->one.iov_base = x->bounce;
		x->one.iov_len = req->len;
		x->iov = &x->one;
		x->iovcnt = 1;
	} else {
		x->iov = req->iov;
		x->iovcnt = req->iovcnt;
	}
	return 0;
}

/* Account the result of one preadv/pwritev of @x: @res bytes, or -errno.
 * Returns 1 when the rest must be issued (x->iov, x->iovcnt and x->done
 * say what and where), 0 when the request is complete, or -errno.
 *
 * A short read means the end of the file (the image was rounded up to a
 * whole sector, or shrank under us): the rest reads as zeroes.  With
 * O_DIRECT an unaligned stop can only be the end of the file, and cannot
 * be continued anyway.  A short write is continued while it makes
 * progress; a write that moves nothing is -EIO. */
static int xfer_advance(struct blk *b, struct raw_xfer *x, int64_t res)
{
	struct blk_req *req = x->req;
	unsigned cnt;

	if (res < 0)
		return (int)res;
	x->done += (uint64_t)res;
	if (x->done >= req->len)
		return 0;
	if (res == 0 || (b->direct && (req->offset + x->done) % b->block_size)) {
		if (req->op != BLK_READ)
			return -EIO;
		if (x->bounce)
			memset((char *)x->bounce + x->done, 0, req->len - x->done);
		else
			iov_zero(req->iov, req->iovcnt, x->done, req->len);
		x->done = req->len;
		return 0;
	}
	if (x->bounce) {
		x->one.iov_base = (char *)x->bounce + x->done;
		x->one.iov_len = req->len - x->done;
		return 1;
	}
	free(x->rest);
	x->rest = iov_tail(req->iov, req->iovcnt, x->done, &cnt);
	if (!x->rest)
		return -ENOMEM;
	x->iov = x->rest;
	x->iovcnt = cnt;
	return 1;
}

/* Finish @x with @result: a successful bounced read is copied out. */
static void xfer_end(struct raw_xfer *x, int result)
{
	if (x->bounce && result == 0 && x->req->op == BLK_READ)
		blk_iov_from_buf(x->req->iov, x->req->iovcnt, x->bounce);
	free(x->bounce);
	free(x->rest);
	x->bounce = NULL;
	x->rest = NULL;
}

/* Carry @x (started, maybe partly done) to its end with preadv/pwritev. */
static int xfer_run_sync(struct blk *b, struct raw_xfer *x)
{
	bool write = x->req->op == BLK_WRITE;
	int r;

	do {
		r = xfer_advance(b, x, raw_rw_once(b, write, x->iov, x->iovcnt,
						   x->req->offset + x->done));
	} while (r == 1);
	return r;
}

static int raw_rw_sync(struct blk *b, struct blk_req *req)
{
	struct raw_xfer x;
	int r = xfer_start(b, &x, req);

	if (r)
		return r;
	r = xfer_run_sync(b, &x);
	xfer_end(&x, r);
	return r;
}

static int raw_flush_sync(struct blk *b)
{
	int r;

	if (b->unsafe)
		return 0;
	do {
		r = fdatasync(b->fd);
	} while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : 0;
}

/* Unsupported is not an error for a discard (a hint): it completes, and
 * blk_can_discard() says false from then on. */
static int raw_discard_sync(struct blk *b, uint64_t off, uint64_t len)
{
	int r;

	if (!b->discard_ok)
		return 0;
	if (b->is_bdev) {
		uint64_t range[2] = { off, len };

		r = ioctl(b->fd, BLKDISCARD, range);
	} else {
		r = fallocate(b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
			      (off_t)len);
	}
	if (r == 0)
		return 0;
	if (errno == EOPNOTSUPP || errno == ENOTTY || (b->is_bdev && errno == EINVAL)) {
		b->discard_ok = false;
		return 0;
	}
	return -errno;
}

static int raw_write_zero_buffers(struct blk *b, uint64_t off, uint64_t len)
{
	size_t chunk = len < RAW_ZERO_CHUNK ? (size_t)len : RAW_ZERO_CHUNK;
	void *zero;
	int r = 0;

	if (posix_memalign(&zero, b->mem_align, chunk))
		return -ENOMEM;
	memset(zero, 0, chunk);
	while (len) {
		size_t n = len < chunk ? (size_t)len : chunk;
		ssize_t w;

		do {
			w = pwrite(b->fd, zero, n, (off_t)off);
		} while (w < 0 && errno == EINTR);
		if (w <= 0) {
			r = w < 0 ? -errno : -EIO;
			break;
		}
		off += (uint64_t)w;
		len -= (uint64_t)w;
	}
	free(zero);
	return r;
}

/* The range must read back as zeroes: ask the filesystem or device to
 * zero it without moving data, then punch a hole (a file's hole reads as
 * zeroes), then write zeroes. */
static int raw_write_zeroes_sync(struct blk *b, uint64_t off, uint64_t len)
{
	int r;

	if (b->zero_ok) {
		if (b->is_bdev) {
			uint64_t range[2] = { off, len };

			r = ioctl(b->fd, BLKZEROOUT, range);
		} else {
			r = fallocate(b->fd, FALLOC_FL_ZERO_RANGE, (off_t)off, (off_t)len);
		}
		if (r == 0)
			return 0;
		if (errno != EOPNOTSUPP && errno != ENOTTY && errno != EINVAL)
			return -errno;
		b->zero_ok = false;
	}
	if (!b->is_bdev && b->discard_ok) {
		r = fallocate(b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
			      (off_t)len);
		if (r == 0)
			return 0;
		if (errno != EOPNOTSUPP)
			return -errno;
		b->discard_ok = false;
	}
	return raw_write_zero_buffers(b, off, len);
}

/* Any request, done here and now.  Returns its result. */
static int raw_do_sync(struct blk *b, struct blk_req *req)
{
	switch (req->op) {
	case BLK_READ:
	case BLK_WRITE:
		return raw_rw_sync(b, req);
	case BLK_FLUSH:
		return raw_flush_sync(b);
	case BLK_DISCARD:
		return raw_discard_sync(b, req->offset, req->len);
	case BLK_WRITE_ZEROES:
		return raw_write_zeroes_sync(b, req->offset, req->len);
	}
	return -EINVAL;
}

/* ------------------------------------------------------------------ */
/* Raw: Linux AIO                                                      */

static void slot_prep(struct blk *b, struct raw_slot *s)
{
	struct blk_req *req = s->x.req;

	if (req->op == BLK_FLUSH)
		io_prep_fdsync(&s->iocb, b->fd);
	else if (req->op == BLK_WRITE)
		io_prep_pwritev(&s->iocb, b->fd, s->x.iov, (int)s->x.iovcnt,
				(long long)(req->offset + s->x.done));
	else
		io_prep_preadv(&s->iocb, b->fd, s->x.iov, (int)s->x.iovcnt,
			       (long long)(req->offset + s->x.done));
	io_set_eventfd(&s->iocb, b->efd);
	s->iocb.data = s;
}

static void ready_push(struct blk *b, struct raw_slot *s)
{
	s->next = NULL;
	*b->ready_tail = s;
	b->ready_tail = &s->next;
}

static struct raw_slot *ready_pop(struct blk *b)
{
	struct raw_slot *s = b->ready_head;

	b->ready_head = s->next;
	if (!b->ready_head)
		b->ready_tail = &b->ready_head;
	return s;
}

/* Free @s and complete its request with @result. */
static void slot_finish(struct blk *b, struct raw_slot *s, int result)
{
	struct blk_req *req = s->x.req;

	if (req->op == BLK_READ || req->op == BLK_WRITE)
		xfer_end(&s->x, result);
	s->x.req = NULL;
	s->next = b->free_slots;
	b->free_slots = s;
	blk_req_complete(b, req, result);
}

/* The slot at the head of b->ready, which io_submit refused, done here
 * and now so that it cannot stall. */
static void slot_run_sync(struct blk *b, struct raw_slot *s)
{
	struct blk_req *req = s->x.req;
	int r;

	if (req->op == BLK_FLUSH)
		r = raw_flush_sync(b);
	else
		r = xfer_run_sync(b, &s->x);
	slot_finish(b, s, r);
}

/* Give waiting requests free slots, and hand ready slots to the kernel.
 * Never waits for the kernel: -EAGAIN leaves them ready for the next
 * completion to retry, unless nothing is in the kernel to complete (then
 * the head is done synchronously, so that nothing stalls). */
static void aio_kick(struct blk *b)
{
	struct blk_req *req;

	while (b->free_slots && (req = blk_fifo_pop(&b->wait))) {
		struct raw_slot *s = b->free_slots;
		int r = 0;

		b->free_slots = s->next;
		if (req->op == BLK_READ || req->op == BLK_WRITE) {
			r = xfer_start(b, &s->x, req);
		} else {
			memset(&s->x, 0, sizeof(s->x));
			s->x.req = req;
		}
		if (r) {
			slot_finish(b, s, r);
			continue;
		}
		if (req->op == BLK_FLUSH && !b->aio_fsync) {
			slot_run_sync(b, s);
			continue;
		}
		slot_prep(b, s);
		ready_push(b, s);
	}

	while (b->ready_head) {
		struct iocb *batch[RAW_SUBMIT_BATCH];
		struct raw_slot *s;
		int n = 0, r;

		for (s = b->ready_head; s && n < RAW_SUBMIT_BATCH; s = s->next)
			batch[n++] = &s->iocb;
		r = io_submit(b->ctx, n, batch);
		if (r > 0) {
			for (int i = 0; i < r; i++)
				ready_pop(b);
			b->kernel_inflight += (unsigned)r;
			continue;
		}
		if (r == 0)
			r = -EAGAIN;
		if (r == -EAGAIN && b->kernel_inflight)
			break;
		s = ready_pop(b);
		if (r == -EAGAIN) {
			slot_run_sync(b, s);
		} else if (r == -EINVAL && s->x.req->op == BLK_FLUSH) {
			/* Kernels before 4.18 have no AIO fsync. */
			b->aio_fsync = false;
			slot_run_sync(b, s);
		} else {
			slot_finish(b, s, r);
		}
	}
}

/* One io_event: finish the request, or issue the rest of a short one. */
static void aio_event(struct blk *b, struct raw_slot *s, long res)
{
	int r;

	b->kernel_inflight--;
	if (s->x.req->op == BLK_FLUSH) {
		slot_finish(b, s, res < 0 ? (int)res : 0);
		return;
	}
	r = xfer_advance(b, &s->x, res);
	if (r == 1) {
		slot_prep(b, s);
		ready_push(b, s);
		return;
	}
	slot_finish(b, s, r);
}

/* Collect finished iocbs onto b->done (their done() is run by the
 * caller), then refill the kernel.  @wait: block up to a second for the
 * first event (blk_drain()); else take only what is there. */
static void aio_reap(struct blk *b, bool wait)
{
	struct io_event ev[RAW_REAP_BATCH];

	for (;;) {
		struct timespec ts = { .tv_sec = wait ? 1 : 0 };
		int n = io_getevents(b->ctx, wait ? 1 : 0, RAW_REAP_BATCH, ev, &ts);

		if (n == -EINTR)
			continue;
		if (n < 0) {
			log_warn("%s: io_getevents: %s", b->path, strerror(-n));
			break;
		}
		for (int i = 0; i < n; i++)
			aio_event(b, ev[i].data, (long)ev[i].res);
		if (n < RAW_REAP_BATCH)
			break;
		wait = false;
	}
	aio_kick(b);
}

/* ------------------------------------------------------------------ */
/* Open, probe, close                                                  */

static void raw_destroy(struct blk *b)
{
	if (b->aio)
		io_destroy(b->ctx);
	free(b->slots);
	b->slots = NULL;
	b->aio = false;
}

/* Open @path, falling back from O_DIRECT to the page cache where the
 * filesystem refuses it.  Only a regular file or a block device: O_NONBLOCK
 * keeps a FIFO without a writer from holding open() forever, fstat refuses
 * it, and the flag goes again.  Sets b->fd and b->direct; -errno with @err. */
static int raw_open_fd(struct blk *b, const char *path, const struct blk_open_opts *opts,
		       char *err, size_t errlen)
{
	int flags = (opts->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK, fl;
	struct stat st;

	b->direct = opts->cache == BLK_CACHE_NONE;
	b->fd = open(path, flags | (b->direct ? O_DIRECT : 0));
	if (b->fd < 0 && b->direct && errno == EINVAL) {
		log_warn("%s: the filesystem refuses O_DIRECT (cache=none); using the page cache",
			 path);
		b->direct = false;
		b->fd = open(path, flags);
	}
	if (b->fd < 0)
		return errmsg(-errno, err, errlen, "cannot open %s: %s", path, strerror(errno));
	if (fstat(b->fd, &st) < 0)
		return errmsg(-errno, err, errlen, "cannot stat %s: %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
		return errmsg(-EINVAL, err, errlen, "%s is not a regular file or block device",
			      path);
	fl = fcntl(b->fd, F_GETFL);
	if (fl < 0 || fcntl(b->fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
		return errmsg(-errno, err, errlen, "%s: fcntl: %s", path, strerror(errno));
	return 0;
}

/* The alignment O_DIRECT wants on a regular file: statx's DIOALIGN where
 * the kernel reports it (6.1+), else 512, which is what every common
 * filesystem on 512e and 512n disks takes. */
static void raw_probe_file_dio(struct blk *b)
{
#ifdef STATX_DIOALIGN
	struct statx stx;

	if (statx(b->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
	    (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align) {
		if (stx.stx_dio_offset_align > b->block_size)
			b->block_size = stx.stx_dio_offset_align;
		if (stx.stx_dio_mem_align > b->mem_align)
			b->mem_align = stx.stx_dio_mem_align;
	}
#endif
}

/* Size, block size and kind of b->fd.  -errno with @err. */
static int raw_probe(struct blk *b, char *err, size_t errlen)
{
	struct stat st;

	if (fstat(b->fd, &st) < 0)
		return errmsg(-errno, err, errlen, "cannot stat %s: %s", b->path, strerror(errno));
	b->block_size = RAW_SECTOR;
	b->mem_align = RAW_SECTOR;
	if (S_ISBLK(st.st_mode)) {
		uint64_t bytes;
		int ssz;

		b->is_bdev = true;
		if (ioctl(b->fd, BLKGETSIZE64, &bytes) < 0)
			return errmsg(-errno, err, errlen, "cannot get the size of %s: %s",
				      b->path, strerror(errno));
		if (b->direct) {
			if (ioctl(b->fd, BLKSSZGET, &ssz) < 0)
				return errmsg(-errno, err, errlen,
					      "cannot get the sector size of %s: %s", b->path,
					      strerror(errno));
			if (ssz < (int)RAW_SECTOR || (ssz & (ssz - 1)))
				return errmsg(-EINVAL, err, errlen,
					      "%s: unusable logical sector size %d", b->path, ssz);
			b->block_size = (unsigned)ssz;
			b->mem_align = (unsigned)ssz;
		}
		/* A partial last sector cannot be addressed: leave it out. */
		b->size = bytes - bytes % b->block_size;
	} else if (S_ISREG(st.st_mode)) {
		if (b->direct)
			raw_probe_file_dio(b);
		/* A file that ends mid-sector is rounded up, like QEMU does:
		 * the tail reads as zeroes and a write there extends it. */
		b->size = (uint64_t)st.st_size;
		if (b->size % b->block_size)
			b->size += b->block_size - b->size % b->block_size;
	} else {
		return errmsg(-EINVAL, err, errlen, "%s is not a regular file or block device",
			      b->path);
	}
	return 0;
}

/* Keep a second vmrun, QEMU's tools (or a second disk of ours) off the
 * image: a writer's locks, or a reader's for a read-only disk
 * (include/vmrun/image_lock.h).  Filesystems without locks only earn a
 * warning. */
static int raw_lock(struct blk *b, char *err, size_t errlen)
{
	enum blk_lock mode = b->readonly ? BLK_LOCK_SHARED : BLK_LOCK_EXCLUSIVE;
	int r = image_lock_change(b->fd, b->path, BLK_LOCK_NONE, mode, err, errlen);

	if (!r)
		b->lock = mode;
	return r;
}

/* Linux AIO where it can be had; false (with a warning) otherwise. */
static bool raw_setup_aio(struct blk *b)
{
	int r = io_setup(RAW_QUEUE_DEPTH, &b->ctx);

	if (r < 0) {
		log_warn("%s: Linux AIO unavailable (io_setup: %s); using preadv/pwritev",
			 b->path, strerror(-r));
		return false;
	}
	b->slots = calloc(RAW_QUEUE_DEPTH, sizeof(*b->slots));
	if (!b->slots) {
		io_destroy(b->ctx);
		return false;
	}
	for (unsigned i = RAW_QUEUE_DEPTH; i-- > 0;) {
		b->slots[i].next = b->free_slots;
		b->free_slots = &b->slots[i];
	}
	b->aio_fsync = true;
	return true;
}

static void raw_submit(struct blk *b, struct blk_req *req)
{
	if (b->aio && (req->op == BLK_READ || req->op == BLK_WRITE ||
		       (req->op == BLK_FLUSH && b->aio_fsync))) {
		blk_fifo_push(&b->wait, req);
		aio_kick(b);
		return;
	}
	/* A FLUSH here follows every write whose done() has run: each of
	 * those finished in the kernel before this fdatasync started. */
	blk_req_complete(b, req, raw_do_sync(b, req));
}

/* Reap AIO completions onto b->done; with @wait (drain), block for one.
 * True while requests are still held here. */
static bool raw_poll(struct blk *b, bool wait)
{
	if (!b->aio)
		return false;
	if (!wait) {
		aio_reap(b, false);
		return b->kernel_inflight || b->ready_head || b->wait.head;
	}
	if (b->kernel_inflight) {
		aio_reap(b, true);
		return true;
	}
	if (b->ready_head || b->wait.head) {
		aio_kick(b);
		return true;
	}
	return false;
}

static const struct blk_ops raw_ops = {
	.name = "raw",
	.submit = raw_submit,
	.poll = raw_poll,
	.destroy = raw_destroy,
};

int raw_open(struct blk *b, const char *path, const struct blk_open_opts *opts, char *err,
	     size_t errlen)
{
	int r;

	b->ops = &raw_ops;
	r = raw_open_fd(b, path, opts, err, errlen);
	if (r)
		return r;
	r = raw_probe(b, err, errlen);
	if (r)
		return r;
	r = b->no_lock ? 0 : raw_lock(b, err, errlen);
	if (r)
		return r;
	b->discard_ok = !b->readonly;
	b->zero_ok = !b->readonly;
	if (!opts->no_aio)
		b->aio = raw_setup_aio(b);
	return 0;
}

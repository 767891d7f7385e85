/* Private to src/block/: the struct blk every backend shares, and the
 * per-format operations table behind include/vmrun/block.h.
 *
 * blk.c owns the request plumbing (validation, the completed-request FIFO,
 * the eventfd that makes the event loop run done(), drain, close); each
 * format (raw.c, qcow2.c) fills a static const struct blk_ops and its own
 * fields of struct blk.  Everything runs on the event loop thread (or on one
 * thread while the loop is not running); nothing is locked. */
#ifndef VMRUN_BLK_INTERNAL_H
#define VMRUN_BLK_INTERNAL_H

#include <libaio.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "vmrun/block.h"
#include "vmrun/evloop.h"

/* The qcow2 magic, the first four bytes of every qcow2 image. */
#define BLK_QCOW2_MAGIC "QFI\xfb"

struct req_fifo {
	struct blk_req *head;
	struct blk_req **tail;
};

struct raw_slot;
struct qcow2;

struct blk_ops {
	const char *name;
	/* @req passed blk_check(); b->inflight counts it.  Complete it with
	 * blk_req_complete(), now or later; never call done() directly. */
	void (*submit)(struct blk *b, struct blk_req *req);
	/* Optional: move requests the backend holds toward b->done.  @wait:
	 * may block (blk_drain()).  Returns true when the backend still holds
	 * requests (so drain must call again). */
	bool (*poll)(struct blk *b, bool wait);
	/* Free everything the format owns (not the generic fields). */
	void (*destroy)(struct blk *b);
	/* Optional: the file that holds the image's lock (b->fd when NULL). */
	int (*lock_fd)(const struct blk *b);
};

struct blk {
	/* --- every backend --- */
	const struct blk_ops *ops;
	enum blk_format format;
	char *path;
	struct evloop *loop;   /* NULL: completions run only in blk_drain() */
	struct ev_source src;  /* watches efd */
	int efd;               /* eventfd: AIO completions and b->done */
	uint64_t size;
	unsigned block_size;   /* offsets and lengths are multiples of it */
	unsigned mem_align;    /* O_DIRECT buffer alignment */
	bool readonly;
	bool probed_raw;       /* raw by probe: refuse writing the qcow2 magic at 0 */
	bool no_lock;          /* a second handle on a file another one holds locked */
	enum blk_lock lock;    /* what the lock file holds (include/vmrun/image_lock.h) */
	unsigned inflight;     /* accepted, done() not run yet */
	unsigned dispatching;  /* >0: a caller up the stack runs b->done to empty */
	struct req_fifo done;  /* completed, result in req->result */

	/* --- the image file (raw; qcow2 uses fd and unsafe) --- */
	int fd;
	bool is_bdev;
	bool direct;           /* opened O_DIRECT */
	bool unsafe;           /* cache=unsafe: FLUSH is a no-op */
	bool discard_ok;       /* hole punching / BLKDISCARD not refused yet */
	bool zero_ok;          /* FALLOC_FL_ZERO_RANGE / BLKZEROOUT not refused yet */

	/* --- raw, Linux AIO --- */
	bool aio;
	bool aio_fsync;        /* the kernel accepts IOCB_CMD_FDSYNC */
	io_context_t ctx;
	struct raw_slot *slots;
	struct raw_slot *free_slots;
	struct raw_slot *ready_head, **ready_tail;
	unsigned kernel_inflight;
	struct req_fifo wait;  /* accepted, waiting for a free slot */

	/* --- qcow2 --- */
	struct qcow2 *qcow2;
};

/* blk.c */
void blk_fifo_init(struct req_fifo *f);
void blk_fifo_push(struct req_fifo *f, struct blk_req *req);
struct blk_req *blk_fifo_pop(struct req_fifo *f);
void blk_iov_to_buf(const struct iovec *iov, unsigned cnt, void *buf);
void blk_iov_from_buf(const struct iovec *iov, unsigned cnt, const void *buf);
/* @req is finished with @result: queue its done() for the loop. */
void blk_req_complete(struct blk *b, struct blk_req *req, int result);

/* A raw handle on the data of an image file that another handle of ours
 * holds (and has locked): the qcow2 backend's O_DIRECT + Linux AIO path to
 * its data clusters.  No lock is taken; the format is raw, never probed.
 * Otherwise as blk_open(). */
int blk_open_data_file(const char *path, const struct blk_open_opts *opts, struct evloop *loop,
		       struct blk **out, char *err, size_t errlen) __attribute__((warn_unused_result));

/* raw.c: open @path as raw into @b (generic fields already set). */
int raw_open(struct blk *b, const char *path, const struct blk_open_opts *opts, char *err,
	     size_t errlen) __attribute__((warn_unused_result));

/* qcow2.c: open @path as qcow2 into @b (generic fields already set); with
 * cache=none, its data clusters go through a blk_open_data_file() handle
 * attached to @loop. */
int qcow2_open(struct blk *b, const char *path, const struct blk_open_opts *opts,
	       struct evloop *loop, char *err, size_t errlen) __attribute__((warn_unused_result));

/* qcow2.c: blk_get_info() and blk_top_extent() for a qcow2 @b (the
 * range already checked and clipped to the image). */
void qcow2_get_info(const struct blk *b, struct blk_image_info *info);
int qcow2_top_extent(struct blk *b, uint64_t offset, uint64_t max, enum blk_extent *kind,
		     uint64_t *len) __attribute__((warn_unused_result));

#endif

// SPDX-License-Identifier: MIT
/*
 * virtio-blk (virtio 1.2, section 5.2) on a block backend.
 *
 * Requests are parsed on the event loop thread under dev.lock (the
 * transport calls queue_notify there), handed to the backend, and completed
 * from the backend's callbacks on the same thread.  Nothing the guest wrote
 * is trusted: the request header is copied out before use, every range is
 * checked against the disk, and the data buffers were bounds-checked
 * against guest RAM by virtq_pop().  A write is acknowledged (status byte
 * and used ring) only after the backend completed it, and a FLUSH only after
 * fdatasync() returned: what the guest saw acknowledged survives vmrun
 * being killed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmrun/guest_mem.h"
#include "vmrun/log.h"
#include "vmrun/state.h"
#include "vmrun/virtio_blk.h"

#define BLK_HDR_BYTES 16
#define BLK_DISCARD_SEG_BYTES 16
#define VIRTIO_BLK_WZ_F_UNMAP 1

struct blk_req_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

struct blk_discard_seg {
	uint64_t sector;
	uint32_t num_sectors;
	uint32_t flags;
};

/* One request handed to the backend.  @iov and @segs (the guest buffers
 * the device writes, marked dirty on completion) follow the struct. */
struct virtio_blk_inflight {
	struct blk_req br;
	struct virtio_blk *b;
	uint16_t head;
	uint32_t written;      /* bytes written into the chain on success, status included */
	uint8_t *status_host;  /* the status byte, checked at pop */
	uint64_t status_gpa;
	unsigned n_dirty;
	struct virtq_seg *dirty;
	struct iovec iov[];
};

static void put_le16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put_le32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_le64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static uint64_t capacity_sectors(const struct virtio_blk *b)
{
	return blk_size(b->backend) / VIRTIO_BLK_SECTOR;
}

/* Whether [sector, sector + bytes / 512) lies on the disk. */
static bool range_ok(const struct virtio_blk *b, uint64_t sector, uint64_t bytes)
{
	uint64_t cap = capacity_sectors(b);

	return sector <= cap && bytes / VIRTIO_BLK_SECTOR <= cap - sector;
}

/* Hand chain @head back with @status in its last byte.  dev.lock held. */
static void finish(struct virtio_blk *b, uint16_t head, uint8_t *status_host, uint64_t status_gpa,
		   uint8_t status, uint32_t written)
{
	*status_host = status;
	guest_mem_mark_dirty(b->mem, status_gpa, 1);
	if (virtq_push(&b->vq, head, written) == 0 && virtq_should_interrupt(&b->vq))
		b->dev.interrupt_used(&b->dev, 0);
}

static void on_backend_done(struct blk_req *br, int result)
{
	struct virtio_blk_inflight *f = br->opaque;
	struct virtio_blk *b = f->b;
	uint8_t status = result == 0 ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;

	pthread_mutex_lock(&b->dev.lock);
	if (result == 0)
		for (unsigned i = 0; i < f->n_dirty; i++)
			guest_mem_mark_dirty(b->mem, f->dirty[i].gpa, f->dirty[i].len);
	else
		log_warn("%s: I/O error at byte %llu: %s", b->name, (unsigned long long)br->offset,
			 strerror(-result));
	/* A device reset waits for this completion before it resets the
	 * queue, so the queue is still the one the request came from. */
	if (b->vq.ready)
		finish(b, f->head, f->status_host, f->status_gpa, status,
		       result == 0 ? f->written : 1);
	if (--b->inflight == 0)
		pthread_cond_broadcast(&b->idle);
	pthread_mutex_unlock(&b->dev.lock);
	free(f);
}

/* A request that needs the backend: build the in-flight record with the
 * iovec for stream bytes [@off, @off + @len) of in[] (@into_guest) or out[],
 * and submit it.  Returns 0 when submitted, else a virtio status for an
 * immediate completion. */
static uint8_t submit(struct virtio_blk *b, const struct virtq_req *req, enum blk_op op,
		      uint64_t disk_off, uint64_t len, bool into_guest, uint64_t data_off,
		      uint32_t written)
{
	unsigned max_iov = into_guest ? req->n_in : req->n_out;
	struct virtio_blk_inflight *f;
	int n = 0, r;

	f = calloc(1, sizeof(*f) + max_iov * (sizeof(struct iovec) + sizeof(struct virtq_seg)));
	if (!f)
		return VIRTIO_BLK_S_IOERR;
	if (op == BLK_READ || op == BLK_WRITE) {
		n = virtq_req_iov(req, into_guest, data_off, len, f->iov, max_iov);
		if (n < 0) {
			free(f);
			return VIRTIO_BLK_S_IOERR;
		}
	}
	f->b = b;
	f->head = req->head;
	f->written = written;
	f->status_host = (uint8_t *)req->in[req->n_in - 1].host + req->in[req->n_in - 1].len - 1;
	f->status_gpa = req->in[req->n_in - 1].gpa + req->in[req->n_in - 1].len - 1;
	if (op == BLK_READ) {
		/* Over-marking the status byte's segment is harmless. */
		f->dirty = (struct virtq_seg *)(f->iov + max_iov);
		f->n_dirty = req->n_in;
		memcpy(f->dirty, req->in, req->n_in * sizeof(*req->in));
	}
	f->br = (struct blk_req){ .op = op, .offset = disk_off, .len = len, .iov = f->iov,
				  .iovcnt = (unsigned)n, .done = on_backend_done, .opaque = f };
	r = blk_submit(b->backend, &f->br);
	if (r < 0) {
		free(f);
		return VIRTIO_BLK_S_IOERR;
	}
	b->inflight++;
	return VIRTIO_BLK_S_OK;
}

/* DISCARD and WRITE_ZEROES: one segment per request (max_*_seg is 1). */
static uint8_t handle_discard(struct virtio_blk *b, const struct virtq_req *req, uint32_t type,
			      bool *submitted)
{
	struct blk_discard_seg seg;

	if (b->readonly)
		return VIRTIO_BLK_S_IOERR;
	if (req->out_bytes != BLK_HDR_BYTES + BLK_DISCARD_SEG_BYTES ||
	    virtq_req_read(req, BLK_HDR_BYTES, &seg, sizeof(seg)) != sizeof(seg))
		return VIRTIO_BLK_S_IOERR;
	if (type == VIRTIO_BLK_T_DISCARD && seg.flags)
		return VIRTIO_BLK_S_UNSUPP;
	if (seg.flags & ~(uint32_t)VIRTIO_BLK_WZ_F_UNMAP)
		return VIRTIO_BLK_S_UNSUPP;
	if (seg.num_sectors > VIRTIO_BLK_MAX_DISCARD_SECTORS ||
	    !range_ok(b, seg.sector, (uint64_t)seg.num_sectors * VIRTIO_BLK_SECTOR))
		return VIRTIO_BLK_S_IOERR;
	if (seg.num_sectors == 0)
		return VIRTIO_BLK_S_OK;
	if (type == VIRTIO_BLK_T_DISCARD && !blk_can_discard(b->backend))
		return VIRTIO_BLK_S_OK; /* discard is a hint */
	*submitted = true;
	return submit(b, req, type == VIRTIO_BLK_T_DISCARD ? BLK_DISCARD : BLK_WRITE_ZEROES,
		      seg.sector * VIRTIO_BLK_SECTOR, (uint64_t)seg.num_sectors * VIRTIO_BLK_SECTOR,
		      false, 0, 1);
}

/* One chain.  Returns false for a chain no driver would send (no room for
 * the header or the status byte): the device then needs a reset. */
static bool handle_request(struct virtio_blk *b, const struct virtq_req *req)
{
	struct blk_req_hdr hdr;
	uint64_t data_len = 0;
	uint32_t written = 1;
	uint8_t status = VIRTIO_BLK_S_OK;
	bool submitted = false;

	if (req->n_in == 0 || req->out_bytes < BLK_HDR_BYTES ||
	    virtq_req_read(req, 0, &hdr, sizeof(hdr)) != sizeof(hdr))
		return false;
	switch (hdr.type) {
	case VIRTIO_BLK_T_IN:
		data_len = req->in_bytes - 1;
		if (data_len % VIRTIO_BLK_SECTOR || !range_ok(b, hdr.sector, data_len)) {
			status = VIRTIO_BLK_S_IOERR;
		} else if (data_len) {
			submitted = true;
			status = submit(b, req, BLK_READ, hdr.sector * VIRTIO_BLK_SECTOR, data_len, true,
					0, (uint32_t)(data_len + 1));
		}
		break;
	case VIRTIO_BLK_T_OUT:
		data_len = req->out_bytes - BLK_HDR_BYTES;
		if (b->readonly || data_len % VIRTIO_BLK_SECTOR || !range_ok(b, hdr.sector, data_len)) {
			status = VIRTIO_BLK_S_IOERR;
		} else if (data_len) {
			submitted = true;
			status = submit(b, req, BLK_WRITE, hdr.sector * VIRTIO_BLK_SECTOR, data_len,
					false, BLK_HDR_BYTES, 1);
		}
		break;
	case VIRTIO_BLK_T_FLUSH:
		if (!b->flush_ignored) {
			submitted = true;
			status = submit(b, req, BLK_FLUSH, 0, 0, false, 0, 1);
		}
		break;
	case VIRTIO_BLK_T_GET_ID: {
		size_t n = req->in_bytes - 1 < VIRTIO_BLK_ID_BYTES ? req->in_bytes - 1 :
								      VIRTIO_BLK_ID_BYTES;

		written += (uint32_t)virtq_req_write(b->mem, req, 0, b->serial, n);
		break;
	}
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES:
		status = handle_discard(b, req, hdr.type, &submitted);
		break;
	default:
		status = VIRTIO_BLK_S_UNSUPP;
		break;
	}
	if (!submitted || status != VIRTIO_BLK_S_OK) {
		const struct virtq_seg *last = &req->in[req->n_in - 1];

		finish(b, req->head, (uint8_t *)last->host + last->len - 1, last->gpa + last->len - 1,
		       status, status == VIRTIO_BLK_S_OK ? written : 1);
	}
	return true;
}

static void blk_queue_notify(struct virtio_device *dev, unsigned q)
{
	struct virtio_blk *b = dev->opaque;
	int r;

	(void)q;
	do {
		virtq_notify_disable(&b->vq);
		while ((r = virtq_pop(&b->vq, b->scratch)) == 1) {
			if (!handle_request(b, b->scratch)) {
				dev->needs_reset(dev, "request without header or status byte");
				return;
			}
		}
		if (r < 0) {
			dev->needs_reset(dev, "malformed descriptor chain");
			return;
		}
	} while (virtq_notify_enable(&b->vq));
}

static void blk_config_read(struct virtio_device *dev, uint32_t off, void *data, unsigned size)
{
	struct virtio_blk *b = dev->opaque;

	memcpy(data, b->config + off, size);
}

static void blk_config_write(struct virtio_device *dev, uint32_t off, const void *data,
			     unsigned size)
{
	(void)dev, (void)off, (void)data, (void)size; /* nothing writable (no CONFIG_WCE) */
}

/* dev.lock held; wait until every request in flight has completed. */
static void blk_reset(struct virtio_device *dev)
{
	struct virtio_blk *b = dev->opaque;

	while (b->inflight)
		pthread_cond_wait(&b->idle, &dev->lock);
}

static const struct virtio_device_ops blk_ops = {
	.config_read = blk_config_read,
	.config_write = blk_config_write,
	.queue_notify = blk_queue_notify,
	.reset = blk_reset,
};

static void build_config(struct virtio_blk *b)
{
	uint8_t *c = b->config;

	memset(c, 0, sizeof(b->config));
	put_le64(c + 0, capacity_sectors(b));
	put_le32(c + 8, VIRTIO_BLK_SIZE_MAX);
	put_le32(c + 12, VIRTIO_BLK_SEG_MAX);
	put_le32(c + 20, blk_block_size(b->backend));
	c[24] = 0;                /* physical_block_exp */
	c[25] = 0;                /* alignment_offset */
	put_le16(c + 26, 1);      /* min_io_size, in blk_size units */
	put_le32(c + 28, 0);      /* opt_io_size: none */
	put_le16(c + 34, 1);      /* num_queues */
	put_le32(c + 36, VIRTIO_BLK_MAX_DISCARD_SECTORS);
	put_le32(c + 40, 1);      /* max_discard_seg */
	put_le32(c + 44, blk_block_size(b->backend) / VIRTIO_BLK_SECTOR);
	put_le32(c + 48, VIRTIO_BLK_MAX_DISCARD_SECTORS);
	put_le32(c + 52, 1);      /* max_write_zeroes_seg */
	c[56] = 1;                /* write_zeroes_may_unmap */
}

int virtio_blk_init(struct virtio_blk *b, const struct guest_mem *mem, struct blk *backend,
		    unsigned index, const char *serial, bool flush_ignored)
{
	uint64_t features = VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC) |
			    VIRTIO_BIT(VIRTIO_F_EVENT_IDX) | VIRTIO_BIT(VIRTIO_BLK_F_SIZE_MAX) |
			    VIRTIO_BIT(VIRTIO_BLK_F_SEG_MAX) | VIRTIO_BIT(VIRTIO_BLK_F_BLK_SIZE) |
			    VIRTIO_BIT(VIRTIO_BLK_F_TOPOLOGY) | VIRTIO_BIT(VIRTIO_BLK_F_FLUSH);

	memset(b, 0, sizeof(*b));
	b->scratch = malloc(sizeof(*b->scratch));
	if (!b->scratch)
		return -ENOMEM;
	b->backend = backend;
	b->mem = mem;
	b->readonly = blk_readonly(backend);
	b->flush_ignored = flush_ignored;
	snprintf(b->name, sizeof(b->name), "virtio-blk%u", index);
	if (serial) /* NUL-terminated only when shorter than the field */
		memcpy(b->serial, serial, strnlen(serial, sizeof(b->serial)));
	else
		snprintf(b->serial, sizeof(b->serial), "vmrun-disk%u", index);
	if (b->readonly)
		features |= VIRTIO_BIT(VIRTIO_BLK_F_RO);
	else
		features |= VIRTIO_BIT(VIRTIO_BLK_F_WRITE_ZEROES) |
			    (blk_can_discard(backend) ? VIRTIO_BIT(VIRTIO_BLK_F_DISCARD) : 0);
	build_config(b);
	pthread_cond_init(&b->idle, NULL);
	b->vq.mem = mem;
	b->dev = (struct virtio_device){
		.name = b->name,
		.device_id = VIRTIO_ID_BLOCK,
		.features = features,
		.config_size = sizeof(b->config),
		.num_queues = 1,
		.vqs = &b->vq,
		.ops = &blk_ops,
		.opaque = b,
	};
	pthread_mutex_init(&b->dev.lock, NULL);
	return 0;
}

int virtio_blk_replace_backend(struct virtio_blk *b, struct blk *backend, struct blk **old)
{
	int r = 0;

	/* A smaller block size is fine (the driver aligns to the larger one);
	 * discard is checked per request (a hint either way). */
	if (blk_size(backend) != blk_size(b->backend) ||
	    blk_block_size(backend) > blk_block_size(b->backend) ||
	    blk_readonly(backend) != b->readonly)
		return -EINVAL;
	/* vCPU threads read the configuration space under the lock. */
	pthread_mutex_lock(&b->dev.lock);
	if (b->inflight) {
		r = -EBUSY;
	} else {
		*old = b->backend;
		b->backend = backend;
	}
	pthread_mutex_unlock(&b->dev.lock);
	return r;
}

void virtio_blk_exit(struct virtio_blk *b)
{
	if (!b->scratch)
		return;
	blk_close(b->backend); /* drains: every completion has run */
	b->backend = NULL;
	pthread_cond_destroy(&b->idle);
	pthread_mutex_destroy(&b->dev.lock);
	free(b->scratch);
	b->scratch = NULL;
}

/* ---- quiesce, state ---- */

#define VIRTIO_BLK_STATE_VERSION 1

void virtio_blk_quiesce(struct virtio_blk *b)
{
	/* Completions run on this (the loop's) thread inside blk_drain(),
	 * each pushing its used entry: afterwards the device holds no chain. */
	blk_drain(b->backend);
}

void virtio_blk_save(struct virtio_blk *b, struct state_writer *w, const char *node)
{
	pthread_mutex_lock(&b->dev.lock);
	state_begin(w, VIRTIO_BLK_STATE_VERSION, "%s/blk", node);
	state_put_u64(w, "capacity", capacity_sectors(b));
	state_put_u32(w, "block-size", blk_block_size(b->backend));
	state_put_u32(w, "readonly", b->readonly);
	state_put_bytes(w, "serial", b->serial, sizeof(b->serial));
	state_put_u32(w, "inflight", b->inflight);
	pthread_mutex_unlock(&b->dev.lock);
}

int virtio_blk_load(struct virtio_blk *b, struct state_reader *r, const char *node)
{
	int n = state_node(r, true, "%s/blk", node);
	uint64_t cap;
	uint32_t bs, ro, inflight;
	char serial[VIRTIO_BLK_ID_BYTES];

	if (state_version(r, n, 1, VIRTIO_BLK_STATE_VERSION) < 0)
		return r->err;
	state_get_u64(r, n, "capacity", &cap);
	state_get_u32(r, n, "block-size", &bs);
	state_get_u32_range(r, n, "readonly", 0, 1, &ro);
	state_get_bytes(r, n, "serial", serial, sizeof(serial));
	state_get_u32_range(r, n, "inflight", 0, 0, &inflight);
	if (r->err)
		return r->err;
	/* The driver read these from the configuration space: the disk under
	 * the restored device must match them. */
	if (cap != capacity_sectors(b) || bs < blk_block_size(b->backend) || (bool)ro != b->readonly ||
	    memcmp(serial, b->serial, sizeof(serial)))
		return state_reject(r, -EINVAL,
				    "state: %s: saved with %llu sectors, block size %u%s; the disk now has %llu sectors, block size %u%s",
				    b->name, (unsigned long long)cap, bs, ro ? ", read-only" : "",
				    (unsigned long long)capacity_sectors(b), blk_block_size(b->backend),
				    b->readonly ? ", read-only" : "");
	return 0;
}

/* virtio core (src/virtio/): split virtqueues (virtio 1.2, section 2.7),
 * feature negotiation, and the interface between a device model and its
 * transport.
 *
 * A device model (virtio-blk, virtio-net) knows nothing of the transport; a
 * transport (virtio-mmio, later virtio-pci) knows nothing of the device.
 * They meet in struct virtio_device: the device fills in its ops, features
 * and queues; the transport owns the status register, feature negotiation,
 * queue registers and interrupts.
 *
 * Guest memory is hostile.  Every ring and buffer address goes through
 * guest_mem_ptr(); a chain that points outside RAM, loops, is longer than
 * the queue, nests indirect tables or is otherwise malformed is refused,
 * and the device is then marked DEVICE_NEEDS_RESET by its transport: vmrun
 * never crashes and never touches host memory outside guest RAM.  Every
 * byte the device writes into guest memory (buffers, used ring) is marked
 * in src/mmu's dirty log (guest_mem_mark_dirty()). */
#ifndef VMRUN_VIRTIO_H
#define VMRUN_VIRTIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct guest_mem;

/* ---- feature bits (virtio 1.2, section 6) ---- */

#define VIRTIO_BIT(b) (1ull << (b))
#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32
#define VIRTIO_F_ACCESS_PLATFORM 33

/* ---- device status (section 2.1) ---- */

#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED 128

/* ---- split virtqueue ---- */

/* Largest queue vmrun offers (QueueNumMax); the driver may pick any power of
 * two up to it. */
#define VIRTQ_MAX_SIZE 256

/* Ring layout (section 2.7): descriptor flags and ring flags. */
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY 1

struct virtq {
	const struct guest_mem *mem;
	/* Set by the transport from the driver's registers before
	 * virtq_enable(); read-only while ready. */
	uint16_t size; /* entries: a power of two, 1..VIRTQ_MAX_SIZE */
	uint64_t desc_gpa, avail_gpa, used_gpa;
	bool event_idx; /* VIRTIO_F_EVENT_IDX negotiated */
	bool indirect;  /* VIRTIO_F_INDIRECT_DESC negotiated */
	bool ready;     /* virtq_enable() succeeded and no reset since */
	/* Device-side state. */
	uint16_t last_avail_idx;      /* next avail ring slot to consume */
	uint16_t used_idx;            /* the used->idx the device last published */
	uint16_t signalled_used;      /* used_idx at the last virtq_should_interrupt() (EVENT_IDX) */
	bool signalled_used_valid;
	bool notify_disabled;         /* virtq_notify_disable() in force */
};

/* One guest buffer of a chain, already translated and bounds-checked: @host
 * points at @len bytes of guest RAM starting at guest-physical @gpa. */
struct virtq_seg {
	uint64_t gpa;
	void *host;
	uint32_t len;
};

/* A descriptor chain taken from the avail ring.  The device-readable
 * segments come first (out[]: driver to device), the device-writable ones
 * after them (in[]: device to driver), as section 2.7.4.2 requires. */
struct virtq_req {
	uint16_t head;  /* to hand back with virtq_push() */
	unsigned n_out, n_in;
	uint64_t out_bytes, in_bytes;
	struct virtq_seg out[VIRTQ_MAX_SIZE];
	struct virtq_seg in[VIRTQ_MAX_SIZE];
};

/* Back to the state after a device reset: not ready, every index 0.  Keeps
 * @mem. */
void virtq_reset(struct virtq *vq);

/* The driver set QueueReady: check that the descriptor table (16 * size
 * bytes, 16-byte aligned), avail ring (6 + 2 * size, 2-aligned) and used
 * ring (6 + 8 * size, 4-aligned) lie in guest RAM and that size is a power
 * of two within VIRTQ_MAX_SIZE; then mark the queue ready with its indices
 * at 0.  Returns 0, or -EINVAL (queue stays not ready). */
int virtq_enable(struct virtq *vq) __attribute__((warn_unused_result));

/* Take the next available chain into @req.  Returns 1 with @req filled, 0
 * when the avail ring holds nothing new (or the queue is not ready), or
 * -EINVAL for a malformed avail ring or chain: avail->idx more than size
 * ahead, a head or next index >= size, a buffer outside RAM or with length
 * 0, a chain longer than size (which also catches loops), a readable
 * descriptor after a writable one, an indirect descriptor when INDIRECT_DESC
 * was not negotiated, one with NEXT also set, one inside an indirect table,
 * or a table whose length is 0, not a multiple of 16 or over size entries.
 * After -EINVAL the device must stop using the queue (the transport marks
 * it NEEDS_RESET); last_avail_idx has not moved. */
int virtq_pop(struct virtq *vq, struct virtq_req *req) __attribute__((warn_unused_result));

/* Hand chain @head back with @written bytes written into its in[] buffers:
 * one used ring element, then used->idx (with release ordering, so the
 * driver sees the element and the data first).  Marks the used ring and
 * nothing else dirty (the data writes are the caller's, see
 * virtq_req_write()).  Returns 0, or -EINVAL when the queue is not ready. */
int virtq_push(struct virtq *vq, uint16_t head, uint32_t written);

/* virtq_push() for @n chains at once (@heads[i] with @written[i] bytes):
 * the elements, then one used->idx store and one dirty mark for the lot, so
 * the driver sees them together (a mergeable RX frame's buffers).  Returns
 * 0, or -EINVAL when the queue is not ready or a head is out of range
 * (nothing is pushed then). */
int virtq_push_n(struct virtq *vq, const uint16_t *heads, const uint32_t *written, unsigned n);

/* After one or more virtq_push(): whether the driver wants an interrupt now
 * (VIRTQ_AVAIL_F_NO_INTERRUPT clear, or with EVENT_IDX, used_event crossed
 * since the last interrupt, section 2.7.10).  Records the interrupt as sent
 * when it returns true. */
bool virtq_should_interrupt(struct virtq *vq);

/* Ask the driver not to notify while the device is already polling the
 * queue (VIRTQ_USED_F_NO_NOTIFY, or avail_event left behind with
 * EVENT_IDX). */
void virtq_notify_disable(struct virtq *vq);

/* Ask for notifications again.  Returns true when chains arrived while they
 * were off: the caller must poll once more, or it would miss them. */
bool virtq_notify_enable(struct virtq *vq);

/* Copy up to @len bytes from offset @off of @req's device-readable data
 * (out[] taken as one stream).  Returns the bytes copied (fewer when the
 * chain holds less). */
size_t virtq_req_read(const struct virtq_req *req, uint64_t off, void *dst, size_t len);

/* Copy @len bytes to offset @off of @req's device-writable space (in[] as
 * one stream) and mark them dirty.  Returns the bytes copied. */
size_t virtq_req_write(const struct guest_mem *mem, const struct virtq_req *req, uint64_t off,
		       const void *src, size_t len);

/* Fill @iov (room for @max entries) with the segments of in[] (@writable)
 * or out[] covering stream bytes [@off, @off + @len).  Returns the number
 * of entries, or -EINVAL when the chain holds fewer than @off + @len bytes
 * or more than @max entries would be needed. */
int virtq_req_iov(const struct virtq_req *req, bool writable, uint64_t off, uint64_t len,
		  struct iovec *iov, unsigned max);

/* ---- feature negotiation ---- */

/* "Feature @bit needs feature @needs": a dependency the driver's accepted
 * set must respect (e.g. a device's MQ needs its control queue). */
struct virtio_feature_dep {
	unsigned bit;
	unsigned needs;
};

/* The check at FEATURES_OK (section 3.1.1): @accepted must be a subset of
 * @offered, include VIRTIO_F_VERSION_1 (vmrun offers modern devices only),
 * and respect every dependency in @deps.  Returns 0, or -EINVAL with the
 * reason (naming the bit) in @why. */
int virtio_features_check(uint64_t offered, uint64_t accepted,
			  const struct virtio_feature_dep *deps, size_t n_deps,
			  char *why, size_t whylen) __attribute__((warn_unused_result));

/* ---- device <-> transport ---- */

struct virtio_device;

struct virtio_device_ops {
	/* Read/write @size (1, 2, 4 or 8) bytes at @offset of the device's
	 * configuration space; the transport has checked that
	 * offset + size <= config_size. */
	void (*config_read)(struct virtio_device *dev, uint32_t offset, void *data, unsigned size);
	void (*config_write)(struct virtio_device *dev, uint32_t offset, const void *data,
			     unsigned size);
	/* DRIVER_OK was set: features are final (dev->driver_features), the
	 * ready queues are enabled.  Runs on the vCPU thread that wrote the
	 * status, under @lock, like reset and queue_disable.  Returns 0, or
	 * -errno to fail the device (the transport then sets NEEDS_RESET). */
	int (*activate)(struct virtio_device *dev);
	/* Optional: the driver wrote 0 to queue @q's ready register.  The
	 * device lets go of every chain of @q it holds and does not touch the
	 * queue until it is ready again (its rings may move meanwhile);
	 * requests in flight complete without a used entry. */
	void (*queue_disable)(struct virtio_device *dev, unsigned q);
	/* The driver notified queue @q.  Always on the event loop thread
	 * (an ioeventfd, or the MMIO exit path forwarding to it). */
	void (*queue_notify)(struct virtio_device *dev, unsigned q);
	/* The driver reset the device (status 0).  Before returning, every
	 * request in flight has completed or been cancelled, and nothing will
	 * touch the queues any more. */
	void (*reset)(struct virtio_device *dev);
};

struct virtio_device {
	/* Filled in by the device model. */
	const char *name;         /* for messages: "virtio-blk0" */
	uint32_t device_id;       /* 2: block, 1: network */
	uint64_t features;        /* offered, VIRTIO_F_VERSION_1 included */
	const struct virtio_feature_dep *deps;
	size_t n_deps;
	uint32_t config_size;     /* bytes of device configuration space */
	unsigned num_queues;
	struct virtq *vqs;        /* num_queues of them, mem set */
	const struct virtio_device_ops *ops;
	void *opaque;             /* the device model's own state */

	/* Owned by the transport.  @lock guards the device: the transport
	 * holds it around register accesses (vCPU threads) and every ops
	 * call; device code that runs on the event loop (completions) takes
	 * it too.  ops->reset may wait on a condition variable with it. */
	pthread_mutex_t lock;
	uint64_t driver_features; /* accepted by the driver */
	uint8_t status;
	uint32_t config_generation;
	/* Raise the device's interrupt for a used buffer on queue @q (only
	 * call after virtq_should_interrupt() said yes) or for a configuration
	 * change.  Callable from any thread. */
	void (*interrupt_used)(struct virtio_device *dev, unsigned q);
	void (*interrupt_config)(struct virtio_device *dev);
	/* The device hit a malformed queue or failed: set NEEDS_RESET and tell
	 * the driver (configuration interrupt).  The device stops processing
	 * until the driver resets it.  Callable from any thread. */
	void (*needs_reset)(struct virtio_device *dev, const char *why);
	/* Whether the device may touch guest memory and signal message
	 * interrupts now: false while PCI Bus Master Enable is clear.  NULL
	 * (virtio-mmio) means always.  Callable from any thread. */
	bool (*dma_allowed)(const struct virtio_device *dev);
	void *transport;
};

/* @dev may start new work on guest memory (dev->dma_allowed). */
static inline bool virtio_device_dma_allowed(const struct virtio_device *dev)
{
	return !dev->dma_allowed || dev->dma_allowed(dev);
}

/* ---- state (src/virtio/state.c, include/vmrun/state.h) ---- */

struct state_reader;
struct state_writer;

/* Write @dev's status, features and every queue's registers and indices
 * into node @node, which the caller (the transport) began; queues go to
 * @node/queue@N.  Caller holds dev->lock; the device is quiesced. */
void virtio_device_save(struct virtio_device *dev, struct state_writer *w, const char *node);

/* Load them from node @node into @dev, built with the same shape (device
 * ID, queue count and offered features must match).  Every ready queue is
 * checked as virtq_enable() checks it, its indices kept.  Does not call
 * the device's ops: the caller activates the device when DRIVER_OK is set.
 * Returns 0 or -errno with the reason recorded in @r. */
int virtio_device_load(struct virtio_device *dev, struct state_reader *r, const char *node)
	__attribute__((warn_unused_result));

#endif

/* virtio-blk device model (virtio 1.2, section 5.2), src/virtio/blk.c.
 *
 * One request queue.  Requests go to a block backend (vmrun/block.h) and
 * complete on the event loop thread.  Supported: IN, OUT, FLUSH, GET_ID,
 * DISCARD and WRITE_ZEROES; read-only disks (VIRTIO_BLK_F_RO) fail writes
 * with IOERR.  The device knows nothing of its transport (vmrun/virtio.h). */
#ifndef VMRUN_VIRTIO_BLK_H
#define VMRUN_VIRTIO_BLK_H

#include <stdbool.h>
#include <stdint.h>

#include "vmrun/block.h"
#include "vmrun/virtio.h"

#define VIRTIO_ID_BLOCK 2

/* Feature bits (section 5.2.3). */
#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_TOPOLOGY 10
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

/* Request types and status values (section 5.2.6). */
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2

#define VIRTIO_BLK_ID_BYTES 20
#define VIRTIO_BLK_SECTOR 512
/* What the device advertises. */
#define VIRTIO_BLK_SEG_MAX (VIRTQ_MAX_SIZE - 2)   /* data segments per request */
#define VIRTIO_BLK_SIZE_MAX (1u << 20)            /* bytes per segment */
#define VIRTIO_BLK_MAX_DISCARD_SECTORS (1u << 22) /* 2 GiB per request */

struct virtio_blk_inflight;

struct virtio_blk {
	struct virtio_device dev;
	struct virtq vq;
	struct blk *backend;
	const struct guest_mem *mem;
	char serial[VIRTIO_BLK_ID_BYTES]; /* GET_ID; not NUL-terminated when full */
	bool readonly;
	bool flush_ignored; /* cache=unsafe: FLUSH completes at once */
	uint8_t config[60]; /* struct virtio_blk_config, little-endian */
	unsigned inflight;
	pthread_cond_t idle; /* inflight reached 0 (dev.lock) */
	struct virtq_req *scratch; /* the chain being parsed (loop thread, dev.lock) */
	char name[24];
};

/* Build the device on @backend (opened by the caller, closed by
 * virtio_blk_exit()).  @serial may be NULL (then "vmrun-disk<index>").
 * Fills b->dev for a transport.  Returns 0 or -errno. */
int virtio_blk_init(struct virtio_blk *b, const struct guest_mem *mem, struct blk *backend,
		    unsigned index, const char *serial, bool flush_ignored)
	__attribute__((warn_unused_result));

/* Put @backend in place of the device's backend (a live snapshot) and
 * return the old one in *@old, for the caller to close.  Call on the event
 * loop thread with nothing in flight (blk_drain() the old backend first);
 * @backend must have the same size and writability and a block size no
 * larger, since the driver already read them from the configuration space.  Returns 0,
 * -EBUSY (requests in flight) or -EINVAL (a different geometry). */
int virtio_blk_replace_backend(struct virtio_blk *b, struct blk *backend, struct blk **old)
	__attribute__((warn_unused_result));

/* Wait for requests in flight, close the backend, free what init took. */
void virtio_blk_exit(struct virtio_blk *b);

struct state_reader;
struct state_writer;

/* Complete every request in flight (their used entries are pushed), so
 * the device holds no chain.  Event loop thread, with the transport
 * quiesced (no new request is popped). */
void virtio_blk_quiesce(struct virtio_blk *b);

/* Save / check the device model's view of its disk (capacity, block size,
 * read-only, serial) under @node/blk; a restore refuses a disk that differs
 * from what the driver read.  Load returns 0 or -errno with the reason
 * recorded in @r. */
void virtio_blk_save(struct virtio_blk *b, struct state_writer *w, const char *node);
int virtio_blk_load(struct virtio_blk *b, struct state_reader *r, const char *node)
	__attribute__((warn_unused_result));

#endif

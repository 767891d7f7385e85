/* The fake guest driver shared by fuzz_virtio_blk.c and fuzz_virtio_net.c:
 * it brings a device up through its virtio-mmio register window, as a
 * guest's driver would, then plays a short program of register accesses
 * and notifications, with the rings and buffers in guest RAM taken from the
 * input.  The event loop is real; fzv_pump() dispatches what is ready
 * without blocking.
 *
 * Input (after the device target's own bytes):
 *   u64       driver features (VERSION_1 always added)
 *   u8 * NQ   per queue: bits 0-2 log2 of its size (mod 7: 1..64 entries),
 *             bit 7: leave it not ready
 *   u8        program length (mod 17)
 *   6 * len   the program: {u8 op, u8 arg, u32 val}, see fzv_run()
 *   the rest  guest RAM from address 0 (at most 64 KiB of the 2 MiB).
 * Queue q's rings lie in page q: descriptor table at q * 4096, avail ring
 * after it, used ring after that (4-aligned); buffers anywhere else. */
#ifndef VMRUN_FUZZ_VIRTIO_DEV_H
#define VMRUN_FUZZ_VIRTIO_DEV_H

#include <sys/epoll.h>

#include "fuzz_common.h"
#include "vmrun/evloop.h"
#include "vmrun/guest_mem.h"
#include "vmrun/virtio.h"
#include "vmrun/virtio_mmio.h"

#define FZV_RAM (2u << 20)
#define FZV_IMAGE_MAX (64u << 10)
#define FZV_BASE 0xd0000000ull
#define FZV_MAX_PROGRAM 16

struct fzv_op {
	uint8_t op, arg;
	uint32_t val;
};

struct fzv {
	struct guest_mem gm; /* kept from input to input, cleared each time */
	struct evloop loop;
	struct virtio_mmio m;
	uint64_t features;
	uint8_t qcfg[VIRTIO_MMIO_MAX_QUEUES];
	unsigned n_ops;
	struct fzv_op ops[FZV_MAX_PROGRAM];
};

static inline uint32_t fzv_rd(struct fzv *v, uint64_t off)
{
	uint32_t val = 0;

	(void)v->m.region.ops->read(&v->m.region, off, &val, 4);
	return val;
}

static inline void fzv_wr(struct fzv *v, uint64_t off, uint32_t val)
{
	(void)v->m.region.ops->write(&v->m.region, off, &val, 4);
}

/* Dispatch ready event-loop sources until none is (at most 64 rounds: a
 * source that stays ready is a finding, but a blocked device may keep a
 * tap "writable" forever, so do not abort). */
static inline void fzv_pump(struct fzv *v)
{
	for (unsigned round = 0; round < 64; round++) {
		struct epoll_event ev[16];
		int k = epoll_wait(v->loop.epfd, ev, 16, 0);

		if (k <= 0)
			return;
		for (int i = 0; i < k; i++) {
			struct ev_source *src = ev[i].data.ptr;

			src->handler(src, ev[i].events);
		}
	}
}

/* Read the common part of the input; @nq queues.  Returns false when the
 * RAM cannot be had. */
static inline bool fzv_parse(struct fzv *v, struct fz *f, unsigned nq)
{
	const uint8_t *img;
	size_t img_len;
	uint8_t *ram;

	if (!v->gm.mapping && guest_mem_init(&v->gm, FZV_RAM))
		return false;
	ram = guest_mem_ptr(&v->gm, 0, FZV_RAM);
	memset(ram, 0, FZV_RAM);
	v->features = fz_u64(f) | VIRTIO_BIT(VIRTIO_F_VERSION_1);
	for (unsigned q = 0; q < nq; q++)
		v->qcfg[q] = fz_u8(f);
	v->n_ops = fz_u8(f) % (FZV_MAX_PROGRAM + 1);
	for (unsigned i = 0; i < v->n_ops; i++) {
		v->ops[i].op = fz_u8(f);
		v->ops[i].arg = fz_u8(f);
		v->ops[i].val = fz_u32(f);
	}
	img = fz_take(f, FZV_IMAGE_MAX, &img_len);
	memcpy(ram, img, img_len);
	return true;
}

/* Section 3.1.1 with the input's features, queues set up in their pages,
 * DRIVER_OK.  The device may refuse any step; the program runs anyway. */
static inline void fzv_start(struct fzv *v, unsigned nq)
{
	fzv_wr(v, VIRTIO_MMIO_STATUS, 0);
	fzv_wr(v, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
	fzv_wr(v, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	fzv_wr(v, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	fzv_wr(v, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)v->features);
	fzv_wr(v, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	fzv_wr(v, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(v->features >> 32));
	fzv_wr(v, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
					      VIRTIO_STATUS_FEATURES_OK);
	for (unsigned q = 0; q < nq; q++) {
		uint32_t size = 1u << ((v->qcfg[q] & 7) % 7);
		uint64_t desc = q * 4096ull, avail = desc + 16ull * size;
		uint64_t used = (avail + 6 + 2ull * size + 3) & ~3ull;

		fzv_wr(v, VIRTIO_MMIO_QUEUE_SEL, q);
		fzv_wr(v, VIRTIO_MMIO_QUEUE_NUM, size);
		fzv_wr(v, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)desc);
		fzv_wr(v, VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
		fzv_wr(v, VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)avail);
		fzv_wr(v, VIRTIO_MMIO_QUEUE_DRIVER_HIGH, 0);
		fzv_wr(v, VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)used);
		fzv_wr(v, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, 0);
		if (!(v->qcfg[q] & 0x80))
			fzv_wr(v, VIRTIO_MMIO_QUEUE_READY, 1);
	}
	fzv_wr(v, VIRTIO_MMIO_STATUS, fzv_rd(v, VIRTIO_MMIO_STATUS) | VIRTIO_STATUS_DRIVER_OK);
}

/* The program.  op % 4:
 *   0  notify queue arg (QueueNotify), then pump the loop
 *   1  write val to register (arg * 4) of the window, config space included
 *   2  read register (arg * 4)
 *   3  @extra(v, arg, val, opaque): the device target's own step
 * With no program at all, every queue is notified once. */
static inline void fzv_run(struct fzv *v, unsigned nq,
			   void (*extra)(struct fzv *v, uint8_t arg, uint32_t val, void *opaque),
			   void *opaque)
{
	if (!v->n_ops) {
		for (unsigned q = 0; q < nq; q++)
			fzv_wr(v, VIRTIO_MMIO_QUEUE_NOTIFY, q);
		fzv_pump(v);
		return;
	}
	for (unsigned i = 0; i < v->n_ops; i++) {
		const struct fzv_op *o = &v->ops[i];
		uint64_t off = ((uint64_t)o->arg * 4) % VIRTIO_MMIO_WINDOW;

		switch (o->op % 4) {
		case 0:
			fzv_wr(v, VIRTIO_MMIO_QUEUE_NOTIFY, o->arg % (nq + 1));
			fzv_pump(v);
			break;
		case 1:
			fzv_wr(v, off, o->val);
			break;
		case 2:
			(void)fzv_rd(v, off);
			break;
		default:
			if (extra)
				extra(v, o->arg, o->val, opaque);
			break;
		}
	}
	fzv_pump(v);
}

#endif

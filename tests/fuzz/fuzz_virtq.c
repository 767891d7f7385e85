// SPDX-License-Identifier: MIT
/*
 * Fuzz target for the split virtqueue's chain walker (src/virtio/virtqueue.c,
 * include/vmrun/virtio.h): what a hostile driver controls is the descriptor
 * table, the avail ring and the indirect tables in guest RAM.
 *
 * Input:
 *   byte 0    bits 4-7: log2 of the queue size (mod 9: 1..256 entries);
 *             bit 0: INDIRECT_DESC negotiated; bit 1: EVENT_IDX negotiated
 *   byte 1    pops to try (1..16)
 *   bytes 2-3 the device's starting avail/used index (index wrap-around)
 *   the rest  guest RAM from address 0 (at most 64 KiB; the 1 MiB RAM is
 *             zero past it): descriptor table at 0, avail ring right after
 *             it (16 * size), used ring after that (4-aligned); descriptor
 *             addresses, lengths, flags and next indices as the input says.
 * Each chain that virtq_pop() accepts is read in full, written with a
 * pattern, cut into iovecs at offsets the chain's own bytes give, and
 * pushed back; the notification calls run in between.  virtq_pop()
 * refusing a malformed chain is fine; a crash, a sanitizer report, a chain
 * whose segments are not inside guest RAM or a timeout is a finding.
 */
#include <errno.h>
#include <sys/uio.h>

#include "fuzz_common.h"
#include "vmrun/guest_mem.h"
#include "vmrun/virtio.h"

#define RAM_BYTES (1u << 20)
#define IMAGE_MAX (64u << 10)

static void check_seg(const struct guest_mem *gm, const struct virtq_seg *s)
{
	/* The walker promised a translated, bounds-checked buffer. */
	if (!s->len || guest_mem_ptr(gm, s->gpa, s->len) != s->host)
		abort();
}

static void use_chain(struct virtq *vq, const struct guest_mem *gm, struct virtq_req *req,
		      uint8_t *scratch, size_t scratch_len)
{
	struct iovec iov[8];
	uint64_t off = 0, len = 0;
	size_t n;
	uint32_t written;

	for (unsigned i = 0; i < req->n_out; i++)
		check_seg(gm, &req->out[i]);
	for (unsigned i = 0; i < req->n_in; i++)
		check_seg(gm, &req->in[i]);
	if (req->n_out > vq->size || req->n_in > vq->size || req->head >= vq->size)
		abort();
	n = virtq_req_read(req, 0, scratch, scratch_len);
	if (n > req->out_bytes)
		abort();
	/* The first 16 readable bytes choose a range to map as iovecs. */
	if (n >= 16) {
		memcpy(&off, scratch, 8);
		memcpy(&len, scratch + 8, 8);
	}
	(void)virtq_req_iov(req, false, off % (req->out_bytes + 1), len % 65536, iov, 8);
	(void)virtq_req_iov(req, true, off % (req->in_bytes + 1), len % 65536, iov, 8);
	(void)virtq_req_iov(req, true, off, len, iov, 8);
	memset(scratch, 0xa5, scratch_len);
	written = (uint32_t)virtq_req_write(gm, req, off % 4096, scratch, scratch_len);
	if (written > req->in_bytes)
		abort();
	(void)virtq_push(vq, req->head, written);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct guest_mem gm;
	static struct virtq_req *req;
	static uint8_t *scratch;
	const size_t scratch_len = 4096;
	struct fz f = { data, size };
	struct virtq vq;
	uint8_t b0, pops;
	uint16_t start;
	const uint8_t *img;
	size_t img_len;
	uint8_t *ram;

	fz_quiet();
	if (!gm.mapping && guest_mem_init(&gm, RAM_BYTES))
		abort();
	if (!req && !(req = malloc(sizeof(*req))))
		abort();
	if (!scratch && !(scratch = malloc(scratch_len)))
		abort();
	ram = guest_mem_ptr(&gm, 0, RAM_BYTES);
	if (!ram)
		abort();
	/* A fresh RAM for each input (the device wrote into the last one). */
	memset(ram, 0, RAM_BYTES);

	b0 = fz_u8(&f);
	pops = (fz_u8(&f) & 15) + 1;
	start = fz_u16(&f);
	img = fz_take(&f, IMAGE_MAX, &img_len);
	memcpy(ram, img, img_len);

	memset(&vq, 0, sizeof(vq));
	vq.mem = &gm;
	vq.size = (uint16_t)(1u << ((b0 >> 4) % 9));
	vq.indirect = b0 & 1;
	vq.event_idx = b0 & 2;
	vq.desc_gpa = 0;
	vq.avail_gpa = 16ull * vq.size;
	vq.used_gpa = (vq.avail_gpa + 6 + 2ull * vq.size + 3) & ~3ull;
	if (virtq_enable(&vq))
		abort(); /* the layout above is always valid */
	vq.last_avail_idx = vq.used_idx = start;

	for (unsigned i = 0; i < pops; i++) {
		int r;

		if (i & 1)
			virtq_notify_disable(&vq);
		else
			(void)virtq_notify_enable(&vq);
		r = virtq_pop(&vq, req);
		if (r <= 0)
			break;
		use_chain(&vq, &gm, req, scratch, scratch_len);
		(void)virtq_should_interrupt(&vq);
	}
	{
		/* Several heads at once, as mergeable RX uses them. */
		uint16_t heads[2] = { start, (uint16_t)(start >> 8) };
		uint32_t written[2] = { 1, 2 };

		(void)virtq_push_n(&vq, heads, written, 2);
		(void)virtq_should_interrupt(&vq);
	}
	virtq_reset(&vq);
	return 0;
}

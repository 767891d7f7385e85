/* Split virtqueues and feature negotiation, against include/vmrun/virtio.h.
 *
 * Each test runs a fake guest (16 MiB of guest_mem) and plays the driver
 * itself: it lays out the descriptor table, the avail ring and indirect
 * tables in guest memory the way a driver would (virtio 1.2, section 2.7),
 * then checks what the device side makes of them.  Expected values come
 * from the spec's layouts and rules, not from running the code.  The
 * hostile cases check that every malformed ring is refused with -EINVAL and
 * that nothing was consumed (last_avail_idx did not move). */
#include "unit.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/uio.h>

#include "vmrun/guest_mem.h"
#include "vmrun/virtio.h"

#define MiB (1ull << 20)
#define RAM (16 * MiB)

/* Where the fake driver puts things. */
#define DESC 0x10000ull  /* descriptor table, 16-aligned */
#define AVAIL 0x20000ull /* avail ring */
#define USED 0x30000ull  /* used ring: page 0x30 */
#define IND 0x40000ull   /* indirect tables */
#define IND2 0x48000ull
#define BUF 0x100000ull  /* data buffers */

#define R 0 /* device-readable */
#define W VIRTQ_DESC_F_WRITE
#define N VIRTQ_DESC_F_NEXT
#define I VIRTQ_DESC_F_INDIRECT

struct drv {
	struct guest_mem gm;
	struct virtq vq;
	struct virtq_req req;
	uint64_t used_gpa;  /* where drv_start() puts the used ring */
	uint16_t avail_idx; /* the driver's avail->idx */
};

static int setup(void **state)
{
	struct drv *d = calloc(1, sizeof(*d));

	if (!d)
		return -1;
	if (guest_mem_init(&d->gm, RAM) != 0) {
		free(d);
		return -1;
	}
	d->vq.mem = &d->gm;
	d->used_gpa = USED;
	*state = d;
	return 0;
}

static int teardown(void **state)
{
	struct drv *d = *state;

	guest_mem_exit(&d->gm);
	free(d);
	return 0;
}

/* ---- the fake driver ---- */

static uint8_t *gptr(struct drv *d, uint64_t gpa, uint64_t len)
{
	uint8_t *p = guest_mem_ptr(&d->gm, gpa, len);

	assert_non_null(p);
	return p;
}

static uint16_t rd16(struct drv *d, uint64_t gpa)
{
	uint16_t v;

	memcpy(&v, gptr(d, gpa, 2), 2);
	return v;
}

static uint32_t rd32(struct drv *d, uint64_t gpa)
{
	uint32_t v;

	memcpy(&v, gptr(d, gpa, 4), 4);
	return v;
}

static void wr16(struct drv *d, uint64_t gpa, uint16_t v)
{
	memcpy(gptr(d, gpa, 2), &v, 2);
}

static uint64_t used_event_gpa(struct drv *d)
{
	return AVAIL + 4 + 2ull * d->vq.size;
}

static uint64_t avail_event_gpa(struct drv *d)
{
	return d->used_gpa + 4 + 8ull * d->vq.size;
}

static void clear_dirty(struct drv *d)
{
	for (unsigned r = 0; r < d->gm.n_regions; r++)
		for (size_t w = 0; w < d->gm.regions[r].dirty_words; w++)
			(void)guest_mem_dirty_take(&d->gm, r, w);
}

static bool page_dirty(struct drv *d, uint64_t gpa)
{
	uint64_t page = gpa >> GUEST_PAGE_SHIFT;

	return d->gm.regions[0].dirty[page / 64] >> (page % 64) & 1;
}

static unsigned dirty_count(struct drv *d)
{
	unsigned n = 0;

	for (unsigned r = 0; r < d->gm.n_regions; r++)
		for (size_t w = 0; w < d->gm.regions[r].dirty_words; w++)
			n += (unsigned)__builtin_popcountll(d->gm.regions[r].dirty[w]);
	return n;
}

/* Zero the rings like a driver allocating them, set the queue registers and
 * enable the queue. */
static void drv_start(struct drv *d, uint16_t size, bool event_idx, bool indirect)
{
	memset(gptr(d, DESC, 16ull * size), 0, 16ull * size);
	memset(gptr(d, AVAIL, 6 + 2ull * size), 0, 6 + 2ull * size);
	memset(gptr(d, d->used_gpa, 6 + 8ull * size), 0, 6 + 8ull * size);
	d->vq.size = size;
	d->vq.desc_gpa = DESC;
	d->vq.avail_gpa = AVAIL;
	d->vq.used_gpa = d->used_gpa;
	d->vq.event_idx = event_idx;
	d->vq.indirect = indirect;
	assert_int_equal(virtq_enable(&d->vq), 0);
	assert_true(d->vq.ready);
	d->avail_idx = 0;
	clear_dirty(d);
}

/* Descriptor @i of the table at @table. */
static void desc_at(struct drv *d, uint64_t table, unsigned i, uint64_t addr, uint32_t len,
		    uint16_t flags, uint16_t next)
{
	uint8_t *p = gptr(d, table + 16ull * i, 16);

	memcpy(p, &addr, 8);
	memcpy(p + 8, &len, 4);
	memcpy(p + 12, &flags, 2);
	memcpy(p + 14, &next, 2);
}

static void desc(struct drv *d, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
		 uint16_t next)
{
	desc_at(d, DESC, i, addr, len, flags, next);
}

/* Put @head in the next avail slot, then publish it through avail->idx. */
static void publish(struct drv *d, uint16_t head)
{
	wr16(d, AVAIL + 4 + 2ull * (d->avail_idx % d->vq.size), head);
	d->avail_idx++;
	wr16(d, AVAIL + 2, d->avail_idx);
}

/* The driver's side of section 2.7.10: kick after moving avail->idx from
 * @old to @new when avail_event lies in [old, new). */
static bool driver_would_kick(struct drv *d, uint16_t old, uint16_t new)
{
	uint16_t ev = rd16(d, avail_event_gpa(d));

	return (uint16_t)(new - ev - 1) < (uint16_t)(new - old);
}

static void used_elem(struct drv *d, unsigned slot, uint32_t *id, uint32_t *len)
{
	*id = rd32(d, d->used_gpa + 4 + 8ull * slot);
	*len = rd32(d, d->used_gpa + 4 + 8ull * slot + 4);
}

static void pop_ok(struct drv *d, uint16_t head)
{
	assert_int_equal(virtq_pop(&d->vq, &d->req), 1);
	assert_int_equal(d->req.head, head);
}

/* The queue refuses what is published and consumes nothing, however often
 * it is asked. */
static void expect_malformed(struct drv *d)
{
	uint16_t before = d->vq.last_avail_idx;

	assert_int_equal(virtq_pop(&d->vq, &d->req), -EINVAL);
	assert_int_equal(d->vq.last_avail_idx, before);
	assert_int_equal(virtq_pop(&d->vq, &d->req), -EINVAL);
	assert_int_equal(d->vq.last_avail_idx, before);
}

/* Start a queue of 8 and consume one good chain (descriptor 7), so that
 * last_avail_idx is 1 when the hostile chain comes. */
static void hostile_start(struct drv *d, bool indirect)
{
	drv_start(d, 8, false, indirect);
	desc(d, 7, BUF, 64, R, 0);
	publish(d, 7);
	pop_ok(d, 7);
	assert_int_equal(d->vq.last_avail_idx, 1);
}

/* ---- enable, reset ---- */

static void test_enable_and_reset(void **state)
{
	struct drv *d = *state;

	/* Not ready yet: nothing to pop, nothing to push. */
	assert_int_equal(virtq_pop(&d->vq, &d->req), 0);
	assert_int_equal(virtq_push(&d->vq, 0, 0), -EINVAL);
	assert_false(virtq_should_interrupt(&d->vq));

	drv_start(d, 8, true, true);
	assert_int_equal(d->vq.last_avail_idx, 0);
	assert_int_equal(d->vq.used_idx, 0);
	assert_int_equal(virtq_pop(&d->vq, &d->req), 0); /* empty */

	desc(d, 0, BUF, 8, R, 0);
	publish(d, 0);
	pop_ok(d, 0);
	assert_int_equal(virtq_push(&d->vq, 0, 0), 0);

	virtq_reset(&d->vq);
	assert_false(d->vq.ready);
	assert_ptr_equal(d->vq.mem, &d->gm);
	assert_int_equal(d->vq.last_avail_idx, 0);
	assert_int_equal(d->vq.used_idx, 0);
	assert_int_equal(d->vq.size, 0);
	assert_false(d->vq.event_idx);
	assert_int_equal(virtq_pop(&d->vq, &d->req), 0);
	assert_int_equal(virtq_push(&d->vq, 0, 0), -EINVAL);
	/* A reset queue with no size cannot be enabled until it gets one. */
	assert_int_equal(virtq_enable(&d->vq), -EINVAL);
	/* Re-enabled, it starts from index 0 again. */
	drv_start(d, 8, false, false);
	assert_int_equal(d->vq.last_avail_idx, 0);
}

static void expect_enable_fails(struct drv *d, uint16_t size, uint64_t desc_gpa,
				uint64_t avail_gpa, uint64_t used_gpa)
{
	d->vq.size = size;
	d->vq.desc_gpa = desc_gpa;
	d->vq.avail_gpa = avail_gpa;
	d->vq.used_gpa = used_gpa;
	d->vq.ready = true; /* must come back false */
	assert_int_equal(virtq_enable(&d->vq), -EINVAL);
	assert_false(d->vq.ready);
	assert_int_equal(virtq_pop(&d->vq, &d->req), 0);
}

static void expect_enable_ok(struct drv *d, uint16_t size, uint64_t desc_gpa,
			     uint64_t avail_gpa, uint64_t used_gpa)
{
	d->vq.size = size;
	d->vq.desc_gpa = desc_gpa;
	d->vq.avail_gpa = avail_gpa;
	d->vq.used_gpa = used_gpa;
	assert_int_equal(virtq_enable(&d->vq), 0);
	assert_true(d->vq.ready);
}

static void test_enable_rejects_size(void **state)
{
	struct drv *d = *state;
	static const uint16_t bad[] = { 0, 3, 6, 12, 255, 257, 384, 512, 1024, 32768 };

	for (size_t i = 0; i < ARRAY_LEN(bad); i++)
		expect_enable_fails(d, bad[i], DESC, AVAIL, USED);
	/* Powers of two from 1 to VIRTQ_MAX_SIZE are all fine. */
	for (unsigned s = 1; s <= VIRTQ_MAX_SIZE; s *= 2)
		expect_enable_ok(d, (uint16_t)s, DESC, AVAIL, USED);
}

static void test_enable_rejects_alignment(void **state)
{
	struct drv *d = *state;

	/* Section 2.7: descriptor table 16, avail 2, used 4. */
	expect_enable_fails(d, 8, DESC + 8, AVAIL, USED);
	expect_enable_fails(d, 8, DESC + 4, AVAIL, USED);
	expect_enable_fails(d, 8, DESC + 1, AVAIL, USED);
	expect_enable_fails(d, 8, DESC, AVAIL + 1, USED);
	expect_enable_fails(d, 8, DESC, AVAIL, USED + 2);
	expect_enable_fails(d, 8, DESC, AVAIL, USED + 1);
	/* The smallest legal alignments are accepted. */
	expect_enable_ok(d, 8, DESC + 16, AVAIL + 2, USED + 4);
}

static void test_enable_rejects_outside_ram(void **state)
{
	struct drv *d = *state;
	const uint64_t desc_len = 16 * 8, avail_len = 6 + 2 * 8, used_len = 6 + 8 * 8;

	/* Entirely outside. */
	expect_enable_fails(d, 8, RAM, AVAIL, USED);
	expect_enable_fails(d, 8, DESC, RAM, USED);
	expect_enable_fails(d, 8, DESC, AVAIL, RAM);
	expect_enable_fails(d, 8, 0xfffffffffffffff0ull, AVAIL, USED);
	/* Straddling the end of RAM by a few bytes: the last field (used_event,
	 * avail_event) or the last descriptor sticks out. */
	expect_enable_fails(d, 8, RAM - desc_len + 16, AVAIL, USED);
	expect_enable_fails(d, 8, DESC, RAM - avail_len + 2, USED);
	expect_enable_fails(d, 8, DESC, AVAIL, RAM - used_len + 2); /* 4-aligned */
	/* Ending exactly at the end of RAM is fine (used: 70 bytes, so the
	 * 4-aligned start leaves 2 spare bytes). */
	expect_enable_ok(d, 8, RAM - desc_len, AVAIL, USED);
	expect_enable_ok(d, 8, DESC, RAM - avail_len, USED);
	expect_enable_ok(d, 8, DESC, AVAIL, RAM - used_len - 2);
	/* The same at the largest size. */
	expect_enable_fails(d, 256, RAM - 16 * 256 + 16, AVAIL, USED);
	expect_enable_ok(d, 256, RAM - 16 * 256, AVAIL, USED);
	/* No memory at all. */
	d->vq.mem = NULL;
	expect_enable_fails(d, 8, DESC, AVAIL, USED);
	d->vq.mem = &d->gm;
}

/* ---- well-formed chains ---- */

static void test_single_readable(void **state)
{
	struct drv *d = *state;

	drv_start(d, 8, false, false);
	desc(d, 3, BUF + 0x10, 100, R, 0);
	publish(d, 3);
	assert_int_equal(virtq_pop(&d->vq, &d->req), 1);
	assert_int_equal(d->req.head, 3);
	assert_int_equal(d->req.n_out, 1);
	assert_int_equal(d->req.n_in, 0);
	assert_int_equal(d->req.out_bytes, 100);
	assert_int_equal(d->req.in_bytes, 0);
	assert_int_equal(d->req.out[0].gpa, BUF + 0x10);
	assert_ptr_equal(d->req.out[0].host, guest_mem_ptr(&d->gm, BUF + 0x10, 1));
	assert_int_equal(d->req.out[0].len, 100);
	assert_int_equal(d->vq.last_avail_idx, 1);
	/* Consumed: the ring is empty now. */
	assert_int_equal(virtq_pop(&d->vq, &d->req), 0);
	assert_int_equal(d->vq.last_avail_idx, 1);
	/* Popping reads only: nothing in guest memory became dirty. */
	assert_int_equal(dirty_count(d), 0);
}

static void test_multi_segment_chain(void **state)
{
	struct drv *d = *state;

	drv_start(d, 8, false, false);
	/* 5 -> 2 -> 7 -> 0 -> 4: two readable, three writable, out of order in
	 * the table like a driver's free list leaves them. */
	desc(d, 5, BUF + 0x0000, 16, R | N, 2);
	desc(d, 2, BUF + 0x1000, 512, R | N, 7);
	desc(d, 7, BUF + 0x2000, 4096, W | N, 0);
	desc(d, 0, BUF + 0x4000, 100, W | N, 4);
	desc(d, 4, BUF + 0x5000, 1, W, 6); /* next ignored without NEXT */
	publish(d, 5);
	/* A second chain behind it. */
	desc(d, 1, BUF + 0x6000, 32, W, 0);
	publish(d, 1);

	pop_ok(d, 5);
	assert_int_equal(d->req.n_out, 2);
	assert_int_equal(d->req.n_in, 3);
	assert_int_equal(d->req.out_bytes, 16 + 512);
	assert_int_equal(d->req.in_bytes, 4096 + 100 + 1);
	assert_int_equal(d->req.out[0].gpa, BUF);
	assert_int_equal(d->req.out[0].len, 16);
	assert_int_equal(d->req.out[1].gpa, BUF + 0x1000);
	assert_int_equal(d->req.out[1].len, 512);
	assert_int_equal(d->req.in[0].gpa, BUF + 0x2000);
	assert_int_equal(d->req.in[0].len, 4096);
	assert_int_equal(d->req.in[1].gpa, BUF + 0x4000);
	assert_int_equal(d->req.in[1].len, 100);
	assert_int_equal(d->req.in[2].gpa, BUF + 0x5000);
	assert_int_equal(d->req.in[2].len, 1);
	for (unsigned i = 0; i < 3; i++)
		assert_ptr_equal(d->req.in[i].host, guest_mem_ptr(&d->gm, d->req.in[i].gpa, 1));

	pop_ok(d, 1);
	assert_int_equal(d->req.n_out, 0);
	assert_int_equal(d->req.n_in, 1);
	assert_int_equal(d->req.in_bytes, 32);
	assert_int_equal(d->vq.last_avail_idx, 2);
	assert_int_equal(virtq_pop(&d->vq, &d->req), 0);
}

static void test_buffer_at_end_of_ram(void **state)
{
	struct drv *d = *state;

	/* The last byte of RAM is still RAM. */
	drv_start(d, 8, false, false);
	desc(d, 0, RAM - 16, 16, W, 0);
	publish(d, 0);
	pop_ok(d, 0);
	assert_int_equal(d->req.in[0].gpa, RAM - 16);
	assert_int_equal(d->req.in[0].len, 16);
}

static void test_indirect_chain(void **state)
{
	struct drv *d = *state;

	drv_start(d, 8, false, true);
	/* Table of 4 entries, chain 0 -> 2 -> 1 (entry 3 unused).  The table's
	 * own entries hold ring-sized next values only within the table. */
	desc_at(d, IND, 0, BUF + 0x100, 16, R | N, 2);
	desc_at(d, IND, 2, BUF + 0x200, 200, W | N, 1);
	desc_at(d, IND, 1, BUF + 0x400, 1, W, 0);
	desc_at(d, IND, 3, 0xdead0000000ull, 0, R, 7); /* garbage, not in the chain */
	desc(d, 6, IND, 4 * 16, I, 0);
	publish(d, 6);
	pop_ok(d, 6);
	assert_int_equal(d->req.n_out, 1);
	assert_int_equal(d->req.n_in, 2);
	assert_int_equal(d->req.out[0].gpa, BUF + 0x100);
	assert_int_equal(d->req.in[0].gpa, BUF + 0x200);
	assert_int_equal(d->req.in[0].len, 200);
	assert_int_equal(d->req.in[1].gpa, BUF + 0x400);
	assert_int_equal(d->req.out_bytes, 16);
	assert_int_equal(d->req.in_bytes, 201);

	/* Section 2.7.5.3.2: normal descriptors followed by one indirect. */
	desc(d, 1, BUF + 0x800, 8, R | N, 3);
	desc(d, 3, IND2, 2 * 16, I, 0);
	desc_at(d, IND2, 0, BUF + 0x900, 24, R | N, 1);
	desc_at(d, IND2, 1, BUF + 0xa00, 48, W, 0);
	publish(d, 1);
	pop_ok(d, 1);
	assert_int_equal(d->req.n_out, 2);
	assert_int_equal(d->req.n_in, 1);
	assert_int_equal(d->req.out[0].gpa, BUF + 0x800);
	assert_int_equal(d->req.out[1].gpa, BUF + 0x900);
	assert_int_equal(d->req.in[0].gpa, BUF + 0xa00);
	assert_int_equal(d->req.out_bytes, 32);
	assert_int_equal(d->req.in_bytes, 48);

	/* A table of exactly size entries, all chained, is the limit. */
	for (unsigned i = 0; i < 8; i++)
		desc_at(d, IND, i, BUF + 0x1000 * i, 8, W | (i < 7 ? N : 0), (uint16_t)(i + 1));
	desc(d, 0, IND, 8 * 16, I, 0);
	publish(d, 0);
	pop_ok(d, 0);
	assert_int_equal(d->req.n_in, 8);
	assert_int_equal(d->req.in[7].gpa, BUF + 0x7000);
	assert_int_equal(d->vq.last_avail_idx, 3);
}

/* Largest queue, longest chains: fills req->out[] and req->in[] to the last
 * entry (ASan sees an overrun of either). */
static void test_max_size_chains(void **state)
{
	struct drv *d = *state;

	drv_start(d, VIRTQ_MAX_SIZE, false, true);
	for (unsigned i = 0; i < VIRTQ_MAX_SIZE; i++)
		desc(d, i, BUF + 0x10 * i, 0x10, (i < 128 ? R : W) | (i < 255 ? N : 0),
		     (uint16_t)(i + 1));
	publish(d, 0);
	pop_ok(d, 0);
	assert_int_equal(d->req.n_out, 128);
	assert_int_equal(d->req.n_in, 128);
	assert_int_equal(d->req.in[127].gpa, BUF + 0x10 * 255);

	for (unsigned i = 0; i < VIRTQ_MAX_SIZE; i++)
		desc_at(d, IND, i, BUF + 0x10 * i, 0x10, W | (i < 255 ? N : 0), (uint16_t)(i + 1));
	desc(d, 9, IND, 16 * VIRTQ_MAX_SIZE, I, 0);
	publish(d, 9);
	pop_ok(d, 9);
	assert_int_equal(d->req.n_out, 0);
	assert_int_equal(d->req.n_in, VIRTQ_MAX_SIZE);
	assert_int_equal(d->req.in_bytes, 0x10 * VIRTQ_MAX_SIZE);

	for (unsigned i = 0; i < VIRTQ_MAX_SIZE; i++)
		desc_at(d, IND, i, BUF + 0x10 * i, 0x10, R | (i < 255 ? N : 0), (uint16_t)(i + 1));
	publish(d, 9);
	pop_ok(d, 9);
	assert_int_equal(d->req.n_out, VIRTQ_MAX_SIZE);
	assert_int_equal(d->req.n_in, 0);
}

/* ---- used ring ---- */

static void test_push_used_ring(void **state)
{
	struct drv *d = *state;
	uint32_t id, len;

	drv_start(d, 4, false, false);
	for (unsigned i = 0; i < 4; i++)
		desc(d, i, BUF + 0x1000 * i, 64, W, 0);
	publish(d, 2);
	publish(d, 0);
	pop_ok(d, 2);
	pop_ok(d, 0);
	clear_dirty(d);

	/* Completion order need not be submission order. */
	assert_int_equal(virtq_push(&d->vq, 0, 17), 0);
	used_elem(d, 0, &id, &len);
	assert_int_equal(id, 0);
	assert_int_equal(len, 17);
	assert_int_equal(rd16(d, USED + 2), 1);
	assert_int_equal(d->vq.used_idx, 1);
	/* The used ring's page, and nothing else: not the buffer pages. */
	assert_true(page_dirty(d, USED));
	assert_int_equal(dirty_count(d), 1);

	assert_int_equal(virtq_push(&d->vq, 2, 64), 0);
	used_elem(d, 1, &id, &len);
	assert_int_equal(id, 2);
	assert_int_equal(len, 64);
	assert_int_equal(rd16(d, USED + 2), 2);
	/* The device never writes used->flags on its own. */
	assert_int_equal(rd16(d, USED), 0);

	/* The used ring wraps at size: the 5th element goes to slot 0. */
	for (uint16_t h = 1; h <= 3; h++)
		assert_int_equal(virtq_push(&d->vq, h, h * 10u), 0);
	used_elem(d, 0, &id, &len);
	assert_int_equal(id, 3);
	assert_int_equal(len, 30);
	used_elem(d, 3, &id, &len);
	assert_int_equal(id, 2);
	assert_int_equal(len, 20);
	assert_int_equal(rd16(d, USED + 2), 5);

	/* A head that cannot be one of this queue's descriptors. */
	assert_int_equal(virtq_push(&d->vq, 4, 0), -EINVAL);
	assert_int_equal(rd16(d, USED + 2), 5);
}

static void test_push_dirty_across_pages(void **state)
{
	struct drv *d = *state;

	/* Used ring from 0x30ff0: flags and idx on page 0x30, element slot 0 at
	 * 0x30ff4 (page 0x30), slot 2 at 0x31004 (page 0x31). */
	d->used_gpa = 0x30ff0;
	drv_start(d, 8, false, false);
	desc(d, 0, BUF, 8, W, 0);
	for (unsigned i = 0; i < 3; i++) {
		publish(d, 0);
		pop_ok(d, 0);
	}
	assert_int_equal(virtq_push(&d->vq, 0, 1), 0);
	assert_int_equal(virtq_push(&d->vq, 0, 2), 0);
	clear_dirty(d);
	assert_int_equal(virtq_push(&d->vq, 0, 3), 0);
	assert_int_equal(rd32(d, 0x31004 + 4), 3);
	assert_true(page_dirty(d, 0x31000)); /* the element */
	assert_true(page_dirty(d, 0x30000)); /* used->idx */
	assert_int_equal(dirty_count(d), 2);
	assert_int_equal(rd16(d, 0x30ff2), 3);
}

/* ---- copying to and from chains ---- */

/* Readable segments of 10, 20 and 30 bytes at scattered addresses, then
 * writable ones of 0x1800 (over a page boundary) and 16. */
static void mixed_chain(struct drv *d)
{
	drv_start(d, 8, false, false);
	desc(d, 0, BUF + 0x0000, 10, R | N, 1);
	desc(d, 1, BUF + 0x3000, 20, R | N, 2);
	desc(d, 2, BUF + 0x5000, 30, R | N, 3);
	desc(d, 3, 0x200000, 0x1800, W | N, 4);
	desc(d, 4, 0x300000, 16, W, 0);
	for (unsigned i = 0; i < 10; i++)
		gptr(d, BUF + i, 1)[0] = (uint8_t)i;
	for (unsigned i = 0; i < 20; i++)
		gptr(d, BUF + 0x3000 + i, 1)[0] = (uint8_t)(10 + i);
	for (unsigned i = 0; i < 30; i++)
		gptr(d, BUF + 0x5000 + i, 1)[0] = (uint8_t)(30 + i);
	publish(d, 0);
	pop_ok(d, 0);
	clear_dirty(d);
}

static void test_req_read(void **state)
{
	struct drv *d = *state;
	uint8_t buf[64];

	mixed_chain(d);
	/* The readable stream is bytes 0..59. */
	memset(buf, 0xee, sizeof(buf));
	assert_int_equal(virtq_req_read(&d->req, 0, buf, 60), 60);
	for (unsigned i = 0; i < 60; i++)
		assert_int_equal(buf[i], i);
	/* Across both boundaries. */
	memset(buf, 0xee, sizeof(buf));
	assert_int_equal(virtq_req_read(&d->req, 8, buf, 25), 25);
	for (unsigned i = 0; i < 25; i++)
		assert_int_equal(buf[i], 8 + i);
	assert_int_equal(buf[25], 0xee);
	/* Starting exactly on a boundary. */
	assert_int_equal(virtq_req_read(&d->req, 30, buf, 4), 4);
	assert_int_equal(buf[0], 30);
	assert_int_equal(buf[3], 33);
	/* Short at the end, nothing past it. */
	memset(buf, 0xee, sizeof(buf));
	assert_int_equal(virtq_req_read(&d->req, 55, buf, 64), 5);
	assert_int_equal(buf[4], 59);
	assert_int_equal(buf[5], 0xee);
	assert_int_equal(virtq_req_read(&d->req, 60, buf, 1), 0);
	assert_int_equal(virtq_req_read(&d->req, UINT64_MAX, buf, 1), 0);
	assert_int_equal(virtq_req_read(&d->req, 0, buf, 0), 0);
	/* Reading never touches the writable part nor marks anything. */
	assert_int_equal(dirty_count(d), 0);
}

static void test_req_write_marks_dirty(void **state)
{
	struct drv *d = *state;
	uint8_t src[32];

	mixed_chain(d);
	for (unsigned i = 0; i < sizeof(src); i++)
		src[i] = (uint8_t)(0xa0 + i);
	/* Bytes 0x17f8..0x1807 of the writable stream: the last 8 bytes of
	 * the first segment (0x2017f8, page 0x201) and the first 8 of the
	 * second (0x300000, page 0x300). */
	assert_int_equal(virtq_req_write(&d->gm, &d->req, 0x17f8, src, 16), 16);
	assert_memory_equal(gptr(d, 0x2017f8, 8), src, 8);
	assert_memory_equal(gptr(d, 0x300000, 8), src + 8, 8);
	assert_int_equal(gptr(d, 0x300008, 1)[0], 0);
	assert_true(page_dirty(d, 0x201000));
	assert_true(page_dirty(d, 0x300000));
	assert_int_equal(dirty_count(d), 2);

	/* Short at the end: 8 bytes left after offset 0x1808. */
	clear_dirty(d);
	assert_int_equal(virtq_req_write(&d->gm, &d->req, 0x1808, src, 32), 8);
	assert_memory_equal(gptr(d, 0x300008, 8), src, 8);
	assert_int_equal(dirty_count(d), 1);
	/* Nothing at or past the end, nothing marked. */
	clear_dirty(d);
	assert_int_equal(virtq_req_write(&d->gm, &d->req, 0x1810, src, 1), 0);
	assert_int_equal(virtq_req_write(&d->gm, &d->req, UINT64_MAX, src, 1), 0);
	assert_int_equal(dirty_count(d), 0);

	/* A write that covers the first page and a bit of the second. */
	assert_int_equal(virtq_req_write(&d->gm, &d->req, 0xff0, src, 32), 32);
	assert_memory_equal(gptr(d, 0x200ff0, 32), src, 32);
	assert_true(page_dirty(d, 0x200000));
	assert_true(page_dirty(d, 0x201000));
	assert_int_equal(dirty_count(d), 2);
}

static void test_req_iov(void **state)
{
	struct drv *d = *state;
	struct iovec iov[4];
	uint8_t *b0, *b1, *b2;

	mixed_chain(d);
	b0 = gptr(d, BUF, 1);
	b1 = gptr(d, BUF + 0x3000, 1);
	b2 = gptr(d, BUF + 0x5000, 1);

	/* Bytes [5, 35) of out[]: 5 of the first, all 20 of the second, 5
	 * of the third. */
	assert_int_equal(virtq_req_iov(&d->req, false, 5, 30, iov, 4), 3);
	assert_ptr_equal(iov[0].iov_base, b0 + 5);
	assert_int_equal(iov[0].iov_len, 5);
	assert_ptr_equal(iov[1].iov_base, b1);
	assert_int_equal(iov[1].iov_len, 20);
	assert_ptr_equal(iov[2].iov_base, b2);
	assert_int_equal(iov[2].iov_len, 5);
	/* Inside one segment. */
	assert_int_equal(virtq_req_iov(&d->req, false, 12, 3, iov, 4), 1);
	assert_ptr_equal(iov[0].iov_base, b1 + 2);
	assert_int_equal(iov[0].iov_len, 3);
	/* The whole stream, exactly. */
	assert_int_equal(virtq_req_iov(&d->req, false, 0, 60, iov, 3), 3);
	assert_int_equal(iov[2].iov_len, 30);
	/* Would need more entries than there is room for. */
	assert_int_equal(virtq_req_iov(&d->req, false, 0, 60, iov, 2), -EINVAL);
	assert_int_equal(virtq_req_iov(&d->req, false, 5, 30, iov, 0), -EINVAL);
	/* More than the chain holds. */
	assert_int_equal(virtq_req_iov(&d->req, false, 0, 61, iov, 4), -EINVAL);
	assert_int_equal(virtq_req_iov(&d->req, false, 50, 11, iov, 4), -EINVAL);
	assert_int_equal(virtq_req_iov(&d->req, false, 61, 0, iov, 4), -EINVAL);
	assert_int_equal(virtq_req_iov(&d->req, false, 1, UINT64_MAX, iov, 4), -EINVAL);
	assert_int_equal(virtq_req_iov(&d->req, false, UINT64_MAX, 2, iov, 4), -EINVAL);
	/* Empty range at the end: no entries. */
	assert_int_equal(virtq_req_iov(&d->req, false, 60, 0, iov, 4), 0);

	/* The writable side: in[] is 0x1800 + 16 bytes. */
	assert_int_equal(virtq_req_iov(&d->req, true, 0x1000, 0x810, iov, 4), 2);
	assert_ptr_equal(iov[0].iov_base, gptr(d, 0x201000, 1));
	assert_int_equal(iov[0].iov_len, 0x800);
	assert_ptr_equal(iov[1].iov_base, gptr(d, 0x300000, 1));
	assert_int_equal(iov[1].iov_len, 16);
	assert_int_equal(virtq_req_iov(&d->req, true, 0x1000, 0x811, iov, 4), -EINVAL);
}

/* ---- notification suppression ---- */

static void test_no_interrupt_flag(void **state)
{
	struct drv *d = *state;

	drv_start(d, 8, false, false);
	desc(d, 0, BUF, 8, W, 0);
	publish(d, 0);
	pop_ok(d, 0);
	assert_int_equal(virtq_push(&d->vq, 0, 0), 0);
	assert_true(virtq_should_interrupt(&d->vq));
	/* Without EVENT_IDX, used_event is ignored (here it says "not yet"). */
	wr16(d, used_event_gpa(d), 100);
	assert_int_equal(virtq_push(&d->vq, 0, 0), 0);
	assert_true(virtq_should_interrupt(&d->vq));
	/* The driver asks for no interrupts. */
	wr16(d, AVAIL, VIRTQ_AVAIL_F_NO_INTERRUPT);
	assert_int_equal(virtq_push(&d->vq, 0, 0), 0);
	assert_false(virtq_should_interrupt(&d->vq));
	/* Unrelated flag bits do not suppress. */
	wr16(d, AVAIL, 0x8000);
	assert_true(virtq_should_interrupt(&d->vq));
	wr16(d, AVAIL, 0);
	assert_true(virtq_should_interrupt(&d->vq));
}

static void push_one(struct drv *d)
{
	assert_int_equal(virtq_push(&d->vq, 0, 0), 0);
}

static void test_event_idx_interrupts(void **state)
{
	struct drv *d = *state;

	drv_start(d, 8, true, false);
	desc(d, 0, BUF, 8, W, 0);
	/* used_event 0: the entry written at index 0 must interrupt. */
	push_one(d);
	assert_true(virtq_should_interrupt(&d->vq));

	/* used_event 2: interrupt when the entry at index 2 is written, i.e.
	 * used->idx goes from 2 to 3, and not for the entries at 1 or 3. */
	wr16(d, used_event_gpa(d), 2);
	push_one(d); /* entry 1, idx 2 */
	assert_false(virtq_should_interrupt(&d->vq));
	push_one(d); /* entry 2, idx 3 */
	assert_true(virtq_should_interrupt(&d->vq));
	push_one(d); /* entry 3, idx 4 */
	assert_false(virtq_should_interrupt(&d->vq));

	/* A batch: entries 4, 5, 6, then one check; 5 was among them. */
	wr16(d, used_event_gpa(d), 5);
	push_one(d);
	push_one(d);
	push_one(d);
	assert_int_equal(rd16(d, USED + 2), 7);
	assert_true(virtq_should_interrupt(&d->vq));
	/* Checked again with nothing new: no second interrupt. */
	assert_false(virtq_should_interrupt(&d->vq));

	/* Section 2.7.10: with EVENT_IDX the device ignores NO_INTERRUPT. */
	wr16(d, AVAIL, VIRTQ_AVAIL_F_NO_INTERRUPT);
	wr16(d, used_event_gpa(d), 7);
	push_one(d); /* entry 7, idx 8 */
	assert_true(virtq_should_interrupt(&d->vq));
	wr16(d, AVAIL, 0);

	/* used_event far ahead: nothing. */
	wr16(d, used_event_gpa(d), 100);
	push_one(d); /* entry 8, idx 9 */
	assert_false(virtq_should_interrupt(&d->vq));
	/* The driver moves used_event back to an entry already written and
	 * checked (8): that entry did not match when it was written, so the
	 * next one (9) does not interrupt either. */
	wr16(d, used_event_gpa(d), 8);
	push_one(d); /* entry 9, idx 10 */
	assert_false(virtq_should_interrupt(&d->vq));
	wr16(d, used_event_gpa(d), 10);
	push_one(d); /* entry 10, idx 11 */
	assert_true(virtq_should_interrupt(&d->vq));
}

static void test_notify_flags(void **state)
{
	struct drv *d = *state;

	/* Not ready: nothing to report, nothing written. */
	assert_false(virtq_notify_enable(&d->vq));

	drv_start(d, 8, false, false);
	desc(d, 0, BUF, 8, R, 0);
	virtq_notify_disable(&d->vq);
	assert_int_equal(rd16(d, USED), VIRTQ_USED_F_NO_NOTIFY);
	assert_true(page_dirty(d, USED));
	/* Nothing arrived: no need to poll again; notifications back on. */
	clear_dirty(d);
	assert_false(virtq_notify_enable(&d->vq));
	assert_int_equal(rd16(d, USED), 0);
	assert_true(page_dirty(d, USED));

	/* A chain arrives while they are off: enable says so. */
	virtq_notify_disable(&d->vq);
	publish(d, 0);
	assert_true(virtq_notify_enable(&d->vq));
	assert_int_equal(rd16(d, USED), 0);
	pop_ok(d, 0);
	assert_false(virtq_notify_enable(&d->vq));
	/* The used ring's avail_event is left alone without EVENT_IDX. */
	assert_int_equal(rd16(d, avail_event_gpa(d)), 0);
}

static void test_notify_event_idx(void **state)
{
	struct drv *d = *state;

	drv_start(d, 8, true, false);
	desc(d, 0, BUF, 8, R, 0);
	publish(d, 0);
	pop_ok(d, 0);
	assert_int_equal(virtq_pop(&d->vq, &d->req), 0);
	/* Polling with notifications on: avail_event names the next slot, so
	 * the driver's next chain (avail->idx 1 -> 2) kicks. */
	assert_int_equal(rd16(d, avail_event_gpa(d)), 1);
	assert_true(page_dirty(d, avail_event_gpa(d)));
	assert_true(driver_would_kick(d, 1, 2));

	/* Off: two chains come and are consumed, avail_event stays behind, so
	 * the driver does not kick for a third. */
	virtq_notify_disable(&d->vq);
	publish(d, 0);
	publish(d, 0);
	pop_ok(d, 0);
	pop_ok(d, 0);
	assert_int_equal(virtq_pop(&d->vq, &d->req), 0);
	assert_int_equal(rd16(d, avail_event_gpa(d)), 1);
	assert_false(driver_would_kick(d, 3, 4));
	/* With EVENT_IDX, used->flags stays 0 (section 2.7.10). */
	assert_int_equal(rd16(d, USED), 0);

	/* On again, nothing pending: avail_event catches up to 3. */
	assert_false(virtq_notify_enable(&d->vq));
	assert_int_equal(rd16(d, avail_event_gpa(d)), 3);
	assert_true(driver_would_kick(d, 3, 4));

	/* Off, a chain arrives, on: poll again. */
	virtq_notify_disable(&d->vq);
	publish(d, 0);
	assert_true(virtq_notify_enable(&d->vq));
	pop_ok(d, 0);
	assert_false(virtq_notify_enable(&d->vq));
	assert_int_equal(rd16(d, avail_event_gpa(d)), 4);
	assert_int_equal(rd16(d, USED), 0);
}

/* ---- index wrap-around ---- */

static void test_avail_idx_wraps(void **state)
{
	struct drv *d = *state;
	uint32_t id, len;

	drv_start(d, 8, true, false);
	for (unsigned i = 0; i < 8; i++)
		desc(d, i, BUF + 0x100 * i, 0x10, W, 0);
	/* The driver's and the device's indices run freely up to 65534. */
	for (unsigned i = 0; i < 65534; i++) {
		publish(d, (uint16_t)(i % 8));
		pop_ok(d, (uint16_t)(i % 8));
		assert_int_equal(virtq_push(&d->vq, d->req.head, 1), 0);
	}
	assert_int_equal(d->vq.last_avail_idx, 65534);
	assert_int_equal(rd16(d, USED + 2), 65534);
	(void)virtq_should_interrupt(&d->vq); /* the first check of this queue */

	/* Three chains: avail->idx goes 65535, 0, 1; slots 6, 7, 0. */
	publish(d, 5);
	publish(d, 3);
	publish(d, 1);
	assert_int_equal(rd16(d, AVAIL + 2), 1);
	pop_ok(d, 5);
	pop_ok(d, 3);
	pop_ok(d, 1);
	assert_int_equal(d->vq.last_avail_idx, 1);
	assert_int_equal(virtq_pop(&d->vq, &d->req), 0);
	/* used_event 65535: the entry at 65534 does not interrupt, the entry
	 * at 65535 does (used->idx 65535 -> 0). */
	wr16(d, used_event_gpa(d), 65535);
	assert_int_equal(virtq_push(&d->vq, 5, 50), 0);
	assert_false(virtq_should_interrupt(&d->vq));
	assert_int_equal(virtq_push(&d->vq, 3, 30), 0);
	assert_int_equal(rd16(d, USED + 2), 0);
	assert_true(virtq_should_interrupt(&d->vq));
	wr16(d, used_event_gpa(d), 0);
	assert_int_equal(virtq_push(&d->vq, 1, 10), 0);
	assert_true(virtq_should_interrupt(&d->vq));
	assert_int_equal(rd16(d, USED + 2), 1);
	used_elem(d, 65534 % 8, &id, &len);
	assert_int_equal(id, 5);
	assert_int_equal(len, 50);
	used_elem(d, 65535 % 8, &id, &len);
	assert_int_equal(id, 3);
	used_elem(d, 0, &id, &len);
	assert_int_equal(id, 1);
	assert_int_equal(len, 10);
	/* avail_event follows across the wrap: the next chain kicks. */
	assert_int_equal(rd16(d, avail_event_gpa(d)), 1);
	assert_true(driver_would_kick(d, 1, 2));

	/* Exactly size chains ahead across the wrap is legal; one more is not. */
	for (unsigned i = 0; i < 8; i++)
		publish(d, 2);
	assert_int_equal(rd16(d, AVAIL + 2), 9);
	for (unsigned i = 0; i < 8; i++)
		pop_ok(d, 2);
}

/* ---- hostile drivers ---- */

static void test_bad_head(void **state)
{
	struct drv *d = *state;

	hostile_start(d, false);
	/* Good-looking descriptors where the out-of-range indices would land
	 * if the table were indexed unchecked (guest RAM, so no crash), so
	 * that only the index check can refuse them. */
	desc(d, 8, BUF, 8, R, 0);
	desc(d, 0xffff, BUF, 8, R, 0);
	publish(d, 8); /* == size */
	expect_malformed(d);
	wr16(d, AVAIL + 4 + 2 * 1, 0xffff); /* same slot, another value */
	expect_malformed(d);
	/* The driver fixes the slot: the queue moves again. */
	wr16(d, AVAIL + 4 + 2 * 1, 7);
	pop_ok(d, 7);
}

static void test_bad_next(void **state)
{
	struct drv *d = *state;

	hostile_start(d, false);
	desc(d, 8, BUF, 8, R, 0);      /* see test_bad_head */
	desc(d, 0xffff, BUF, 8, R, 0);
	desc(d, 0, BUF, 8, R | N, 8);
	publish(d, 0);
	expect_malformed(d);
	desc(d, 0, BUF, 8, R | N, 0xffff);
	expect_malformed(d);
	/* The same descriptor without NEXT: next is not looked at. */
	desc(d, 0, BUF, 8, R, 0xffff);
	pop_ok(d, 0);
}

static void test_addr_outside_ram(void **state)
{
	struct drv *d = *state;

	hostile_start(d, false);
	desc(d, 0, RAM, 1, R, 0);
	publish(d, 0);
	expect_malformed(d);
	desc(d, 0, 0xfee00000, 4, W, 0); /* the LAPIC, not RAM */
	expect_malformed(d);
	desc(d, 0, 1ull << 40, 4096, W, 0);
	expect_malformed(d);
	/* In the middle of a chain. */
	desc(d, 0, BUF, 8, R | N, 1);
	desc(d, 1, RAM + 0x1000, 8, W, 0);
	expect_malformed(d);
}

static void test_addr_len_wraps(void **state)
{
	struct drv *d = *state;

	hostile_start(d, false);
	/* addr + len wraps to 0x100, which would look like RAM to a naive
	 * addr + len <= end check. */
	desc(d, 0, UINT64_MAX - 0xff, 0x200, R, 0);
	publish(d, 0);
	expect_malformed(d);
	desc(d, 0, UINT64_MAX, 1, W, 0);
	expect_malformed(d);
	desc(d, 0, 0xfffffffffffff000ull, 0xffffffffu, W, 0);
	expect_malformed(d);
}

static void test_buffer_straddles_end(void **state)
{
	struct drv *d = *state;

	hostile_start(d, false);
	desc(d, 0, RAM - 8, 16, R, 0);
	publish(d, 0);
	expect_malformed(d);
	desc(d, 0, RAM - 1, 2, W, 0);
	expect_malformed(d);
	desc(d, 0, 0, 0xffffffffu, W, 0); /* 4 GiB from 0 in 16 MiB of RAM */
	expect_malformed(d);
	desc(d, 0, RAM - 8, 8, W, 0);    /* the last 8 bytes are fine */
	pop_ok(d, 0);
}

static void test_zero_length(void **state)
{
	struct drv *d = *state;

	hostile_start(d, false);
	desc(d, 0, BUF, 0, R, 0);
	publish(d, 0);
	expect_malformed(d);
	desc(d, 0, BUF, 8, R | N, 1);
	desc(d, 1, BUF + 0x100, 0, W, 0);
	expect_malformed(d);
}

static void test_loop(void **state)
{
	struct drv *d = *state;

	hostile_start(d, false);
	/* 0 -> 1 -> 0 -> ... */
	desc(d, 0, BUF, 8, R | N, 1);
	desc(d, 1, BUF + 0x100, 8, R | N, 0);
	publish(d, 0);
	expect_malformed(d);
	/* A descriptor pointing at itself, writable so a device that only
	 * watched for readable-after-writable would not notice. */
	desc(d, 0, BUF, 8, W | N, 0);
	expect_malformed(d);
	/* A loop further down: 0 -> 1 -> 2 -> 3 -> 2. */
	desc(d, 0, BUF, 8, R | N, 1);
	desc(d, 1, BUF, 8, R | N, 2);
	desc(d, 2, BUF, 8, W | N, 3);
	desc(d, 3, BUF, 8, W | N, 2);
	expect_malformed(d);
}

static void test_chain_longer_than_size(void **state)
{
	struct drv *d = *state;

	/* With no loop in the ring, only an indirect table can make a chain
	 * longer than the queue: 2 direct + a table of 7 = 9 > 8 buffers. */
	hostile_start(d, true);
	for (unsigned i = 0; i < 7; i++)
		desc_at(d, IND, i, BUF + 0x10 * i, 8, W | (i < 6 ? N : 0), (uint16_t)(i + 1));
	desc(d, 0, BUF, 8, R | N, 1);
	desc(d, 1, BUF, 8, R | N, 2);
	desc(d, 2, IND, 7 * 16, I, 0);
	publish(d, 0);
	expect_malformed(d);
	/* One direct descriptor fewer: 1 + 7 = 8 buffers, the limit. */
	desc(d, 0, BUF, 8, R | N, 2);
	pop_ok(d, 0);
	assert_int_equal(d->req.n_out, 1);
	assert_int_equal(d->req.n_in, 7);

	/* A loop inside an indirect table: 0 -> 1 -> 0. */
	desc_at(d, IND2, 0, BUF, 8, R | N, 1);
	desc_at(d, IND2, 1, BUF, 8, R | N, 0);
	desc(d, 3, IND2, 2 * 16, I, 0);
	publish(d, 3);
	expect_malformed(d);
}

static void test_readable_after_writable(void **state)
{
	struct drv *d = *state;

	hostile_start(d, true);
	desc(d, 0, BUF, 8, W | N, 1);
	desc(d, 1, BUF + 0x100, 8, R, 0);
	publish(d, 0);
	expect_malformed(d);
	/* The same inside an indirect table. */
	desc_at(d, IND, 0, BUF, 8, R | N, 1);
	desc_at(d, IND, 1, BUF, 8, W | N, 2);
	desc_at(d, IND, 2, BUF, 8, R, 0);
	desc(d, 0, IND, 3 * 16, I, 0);
	expect_malformed(d);
	/* Across the switch into the table: writable direct, readable
	 * indirect entry. */
	desc(d, 0, BUF, 8, W | N, 1);
	desc(d, 1, IND, 3 * 16, I, 0);
	expect_malformed(d);
}

static void test_indirect_not_negotiated(void **state)
{
	struct drv *d = *state;

	hostile_start(d, false);
	desc_at(d, IND, 0, BUF, 8, R, 0);
	desc(d, 0, IND, 16, I, 0);
	publish(d, 0);
	expect_malformed(d);
}

static void test_indirect_with_next(void **state)
{
	struct drv *d = *state;

	hostile_start(d, true);
	desc_at(d, IND, 0, BUF, 8, R, 0);
	desc(d, 0, IND, 16, I | N, 1);
	desc(d, 1, BUF, 8, W, 0);
	publish(d, 0);
	expect_malformed(d);
	/* Without NEXT it is fine. */
	desc(d, 0, IND, 16, I, 1);
	pop_ok(d, 0);
}

static void test_indirect_in_indirect(void **state)
{
	struct drv *d = *state;

	hostile_start(d, true);
	desc_at(d, IND2, 0, BUF, 8, R, 0);
	desc_at(d, IND, 0, BUF, 8, R | N, 1);
	desc_at(d, IND, 1, IND2, 16, I, 0);
	desc(d, 0, IND, 2 * 16, I, 0);
	publish(d, 0);
	expect_malformed(d);
	/* As the table's first entry. */
	desc_at(d, IND, 0, IND2, 16, I, 0);
	expect_malformed(d);
	/* A table that points at itself. */
	desc_at(d, IND, 0, IND, 16, I, 0);
	desc(d, 0, IND, 16, I, 0);
	expect_malformed(d);
}

static void test_indirect_bad_length(void **state)
{
	struct drv *d = *state;

	hostile_start(d, true);
	for (unsigned i = 0; i < 9; i++)
		desc_at(d, IND, i, BUF, 8, R, 0);
	desc(d, 0, IND, 0, I, 0);
	publish(d, 0);
	expect_malformed(d);
	desc(d, 0, IND, 24, I, 0);     /* not a multiple of 16 */
	expect_malformed(d);
	desc(d, 0, IND, 15, I, 0);
	expect_malformed(d);
	desc(d, 0, IND, 9 * 16, I, 0); /* 9 entries > size 8 */
	expect_malformed(d);
	desc(d, 0, IND, 0xfffffff0u, I, 0);
	expect_malformed(d);
	desc(d, 0, IND, 8 * 16, I, 0); /* 8: fine */
	pop_ok(d, 0);
}

static void test_indirect_table_outside_ram(void **state)
{
	struct drv *d = *state;

	hostile_start(d, true);
	desc(d, 0, RAM, 16, I, 0);
	publish(d, 0);
	expect_malformed(d);
	/* Straddles the end; its first entry, the only one in RAM, is a
	 * complete chain, so only checking the whole table refuses it. */
	desc_at(d, RAM - 16, 0, BUF, 8, R, 0);
	desc(d, 0, RAM - 16, 2 * 16, I, 0);
	expect_malformed(d);
	desc(d, 0, UINT64_MAX - 15, 2 * 16, I, 0); /* wraps */
	expect_malformed(d);
	desc_at(d, RAM - 32, 0, BUF, 8, R | N, 1);
	desc_at(d, RAM - 32, 1, BUF, 8, W, 0);
	desc(d, 0, RAM - 32, 2 * 16, I, 0); /* the last 32 bytes: fine */
	pop_ok(d, 0);
}

static void test_indirect_next_past_table(void **state)
{
	struct drv *d = *state;

	/* Entry 1 of a 2-entry table names entry 2: below the queue size,
	 * but past the table's end. */
	hostile_start(d, true);
	desc_at(d, IND, 0, BUF, 8, R | N, 1);
	desc_at(d, IND, 1, BUF, 8, R | N, 2);
	desc_at(d, IND, 2, BUF, 8, R, 0);
	desc(d, 0, IND, 2 * 16, I, 0);
	publish(d, 0);
	expect_malformed(d);
	desc(d, 0, IND, 3 * 16, I, 0);
	pop_ok(d, 0);
	assert_int_equal(d->req.n_out, 3);
}

static void test_avail_idx_jump(void **state)
{
	struct drv *d = *state;

	hostile_start(d, false);
	for (unsigned i = 0; i < 8; i++)
		desc(d, i, BUF, 8, R, 0);
	/* 9 ahead of last_avail_idx 1 in a queue of 8. */
	wr16(d, AVAIL + 2, 1 + 9);
	expect_malformed(d);
	/* Far ahead (or, read the other way, behind). */
	wr16(d, AVAIL + 2, 0);
	expect_malformed(d);
	wr16(d, AVAIL + 2, 0x8001);
	expect_malformed(d);
	/* Exactly 8 ahead: legal, and all of them pop. */
	for (unsigned s = 0; s < 8; s++)
		wr16(d, AVAIL + 4 + 2 * s, (uint16_t)s);
	wr16(d, AVAIL + 2, 1 + 8);
	for (unsigned i = 0; i < 8; i++)
		pop_ok(d, (uint16_t)((1 + i) % 8));
	assert_int_equal(virtq_pop(&d->vq, &d->req), 0);
}

static void test_rings_moved_outside_ram(void **state)
{
	struct drv *d = *state;

	/* A transport that changed the registers of a ready queue (against
	 * the contract) still gets no access outside RAM. */
	hostile_start(d, false);
	publish(d, 7);
	d->vq.avail_gpa = RAM - 2;
	assert_int_equal(virtq_pop(&d->vq, &d->req), -EINVAL);
	assert_int_equal(d->vq.last_avail_idx, 1);
	d->vq.avail_gpa = AVAIL;
	d->vq.desc_gpa = RAM;
	assert_int_equal(virtq_pop(&d->vq, &d->req), -EINVAL);
	assert_int_equal(d->vq.last_avail_idx, 1);
	d->vq.desc_gpa = DESC;
	d->vq.used_gpa = RAM - 4;
	assert_int_equal(virtq_push(&d->vq, 7, 0), -EINVAL);
	d->vq.used_gpa = USED;
	pop_ok(d, 7);
}

/* ---- feature negotiation ---- */

#define V1 VIRTIO_BIT(VIRTIO_F_VERSION_1)

static void test_features_ok(void **state)
{
	static const struct virtio_feature_dep deps[] = { { 22, 17 } };
	uint64_t offered = V1 | VIRTIO_BIT(VIRTIO_F_EVENT_IDX) |
			   VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC) | VIRTIO_BIT(17) | VIRTIO_BIT(22);
	char why[128] = "";

	(void)state;
	assert_int_equal(virtio_features_check(offered, offered, deps, 1, why, sizeof(why)), 0);
	assert_int_equal(virtio_features_check(offered, V1, deps, 1, why, sizeof(why)), 0);
	assert_int_equal(virtio_features_check(offered, V1 | VIRTIO_BIT(VIRTIO_F_EVENT_IDX),
					       deps, 1, why, sizeof(why)), 0);
	/* The needed bit alone is fine; so are both. */
	assert_int_equal(virtio_features_check(offered, V1 | VIRTIO_BIT(17), deps, 1, why,
					       sizeof(why)), 0);
	assert_int_equal(virtio_features_check(offered, V1 | VIRTIO_BIT(17) | VIRTIO_BIT(22),
					       deps, 1, why, sizeof(why)), 0);
	assert_int_equal(virtio_features_check(V1, V1, NULL, 0, NULL, 0), 0);
}

static void test_features_not_subset(void **state)
{
	uint64_t offered = V1 | VIRTIO_BIT(VIRTIO_F_EVENT_IDX);
	char why[128] = "";

	(void)state;
	assert_int_equal(virtio_features_check(offered, V1 | VIRTIO_BIT(41), NULL, 0, why,
					       sizeof(why)), -EINVAL);
	assert_one_line_naming(why, "bit 41");
	assert_int_equal(virtio_features_check(offered, V1 | VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC),
					       NULL, 0, why, sizeof(why)), -EINVAL);
	assert_one_line_naming(why, "bit 28");
	assert_one_line_naming(why, "INDIRECT_DESC");
	/* VERSION_1 accepted but not offered is still not a subset. */
	assert_int_equal(virtio_features_check(VIRTIO_BIT(0), VIRTIO_BIT(0) | V1, NULL, 0, why,
					       sizeof(why)), -EINVAL);
	assert_one_line_naming(why, "bit 32");
	assert_int_equal(virtio_features_check(offered, UINT64_MAX, NULL, 0, why, sizeof(why)),
			 -EINVAL);
}

static void test_features_need_version_1(void **state)
{
	uint64_t offered = V1 | VIRTIO_BIT(VIRTIO_F_EVENT_IDX);
	char why[128] = "";

	(void)state;
	assert_int_equal(virtio_features_check(offered, VIRTIO_BIT(VIRTIO_F_EVENT_IDX), NULL, 0,
					       why, sizeof(why)), -EINVAL);
	assert_one_line_naming(why, "bit 32");
	assert_one_line_naming(why, "VERSION_1");
	assert_int_equal(virtio_features_check(offered, 0, NULL, 0, why, sizeof(why)), -EINVAL);
	assert_one_line_naming(why, "VERSION_1");
}

static void test_features_dependency(void **state)
{
	static const struct virtio_feature_dep deps[] = {
		{ 17, 16 },
		{ 22, 17 },
		{ VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC }, /* made up, to name both */
	};
	uint64_t offered = V1 | VIRTIO_BIT(16) | VIRTIO_BIT(17) | VIRTIO_BIT(22) |
			   VIRTIO_BIT(VIRTIO_F_EVENT_IDX) | VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC);
	char why[128] = "";

	(void)state;
	assert_int_equal(virtio_features_check(offered, V1 | VIRTIO_BIT(16) | VIRTIO_BIT(22),
					       deps, ARRAY_LEN(deps), why, sizeof(why)), -EINVAL);
	assert_one_line_naming(why, "bit 22");
	assert_one_line_naming(why, "bit 17");
	assert_int_equal(virtio_features_check(offered, V1 | VIRTIO_BIT(17), deps,
					       ARRAY_LEN(deps), why, sizeof(why)), -EINVAL);
	assert_one_line_naming(why, "bit 17");
	assert_one_line_naming(why, "bit 16");
	assert_int_equal(virtio_features_check(offered, V1 | VIRTIO_BIT(VIRTIO_F_EVENT_IDX), deps,
					       ARRAY_LEN(deps), why, sizeof(why)), -EINVAL);
	assert_one_line_naming(why, "EVENT_IDX");
	assert_one_line_naming(why, "INDIRECT_DESC");
	assert_int_equal(virtio_features_check(offered, offered, deps, ARRAY_LEN(deps), why,
					       sizeof(why)), 0);
}

static void test_features_why_buffer(void **state)
{
	static const struct virtio_feature_dep bad_dep[] = { { 64, 0 } };
	char small[9];

	(void)state;
	/* No room for a reason: still refused, nothing written. */
	assert_int_equal(virtio_features_check(V1, 0, NULL, 0, NULL, 0), -EINVAL);
	assert_int_equal(virtio_features_check(V1, 0, NULL, 0, NULL, 16), -EINVAL);
	/* A short buffer is truncated and terminated, not overrun. */
	memset(small, 'x', sizeof(small));
	assert_int_equal(virtio_features_check(V1, 0, NULL, 0, small, 8), -EINVAL);
	assert_int_equal(strlen(small), 7);
	assert_int_equal(small[8], 'x');
	/* A dependency table naming a bit past 63 is refused, not shifted. */
	assert_int_equal(virtio_features_check(V1, V1, bad_dep, 1, small, sizeof(small)), -EINVAL);
}

#define VQ_TEST(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		VQ_TEST(test_enable_and_reset),
		VQ_TEST(test_enable_rejects_size),
		VQ_TEST(test_enable_rejects_alignment),
		VQ_TEST(test_enable_rejects_outside_ram),
		VQ_TEST(test_single_readable),
		VQ_TEST(test_multi_segment_chain),
		VQ_TEST(test_buffer_at_end_of_ram),
		VQ_TEST(test_indirect_chain),
		VQ_TEST(test_max_size_chains),
		VQ_TEST(test_push_used_ring),
		VQ_TEST(test_push_dirty_across_pages),
		VQ_TEST(test_req_read),
		VQ_TEST(test_req_write_marks_dirty),
		VQ_TEST(test_req_iov),
		VQ_TEST(test_no_interrupt_flag),
		VQ_TEST(test_event_idx_interrupts),
		VQ_TEST(test_notify_flags),
		VQ_TEST(test_notify_event_idx),
		VQ_TEST(test_avail_idx_wraps),
		VQ_TEST(test_bad_head),
		VQ_TEST(test_bad_next),
		VQ_TEST(test_addr_outside_ram),
		VQ_TEST(test_addr_len_wraps),
		VQ_TEST(test_buffer_straddles_end),
		VQ_TEST(test_zero_length),
		VQ_TEST(test_loop),
		VQ_TEST(test_chain_longer_than_size),
		VQ_TEST(test_readable_after_writable),
		VQ_TEST(test_indirect_not_negotiated),
		VQ_TEST(test_indirect_with_next),
		VQ_TEST(test_indirect_in_indirect),
		VQ_TEST(test_indirect_bad_length),
		VQ_TEST(test_indirect_table_outside_ram),
		VQ_TEST(test_indirect_next_past_table),
		VQ_TEST(test_avail_idx_jump),
		VQ_TEST(test_rings_moved_outside_ram),
		cmocka_unit_test(test_features_ok),
		cmocka_unit_test(test_features_not_subset),
		cmocka_unit_test(test_features_need_version_1),
		cmocka_unit_test(test_features_dependency),
		cmocka_unit_test(test_features_why_buffer),
	};

	return cmocka_run_group_tests_name("virtq", tests, NULL, NULL);
}

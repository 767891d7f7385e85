/* virtio-net (src/virtio/net.c) driven through its virtio-mmio register
 * window by a small driver in this file, without KVM and without a real
 * tap: the "tap" is one end of a SOCK_SEQPACKET socketpair (one datagram =
 * 12-byte vnet header + frame), the test holds the other end.  The event
 * loop is real; pump() dispatches what is ready without blocking. */
#include "unit.h"
#include "virtio_driver.h"
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include "vmrun/evloop.h"
#include "vmrun/guest_mem.h"
#include "vmrun/tap.h"
#include "vmrun/virtio_mmio.h"
#include "vmrun/virtio_net.h"

#define MiB (1ull << 20)
#define BASE 0xd0000000ull
#define QSIZE 64
#define RING(q) (0x100000ull + (q) * 0x10000ull)
#define BUFS 0x200000ull
#define HDR VIRTIO_NET_HDR_BYTES

struct dq {
	uint16_t avail_idx, used_seen, next_desc;
};

struct rig {
	struct guest_mem gm;
	struct evloop loop;
	struct virtio_net n;
	struct virtio_mmio m;
	int peer; /* the test's end of the "tap" */
	int peer2; /* pair 1's (setup_mq), else -1 */
	struct dq q[5];
	uint64_t next_buf;
};

static uint32_t rd(struct rig *r, uint64_t off)
{
	return mmio_rd(&r->m, off);
}

static void wr(struct rig *r, uint64_t off, uint32_t v)
{
	mmio_wr(&r->m, off, v);
}

static void *gp(struct rig *r, uint64_t gpa, uint64_t len)
{
	void *p = guest_mem_ptr(&r->gm, gpa, len);

	assert_non_null(p);
	return p;
}

static uint8_t *gb(struct rig *r, uint64_t gpa, uint64_t len)
{
	return gp(r, gpa, len);
}

/* Dispatch ready event-loop sources until none is; returns how many
 * dispatch rounds that took (a source that stays ready forever: fail). */
static unsigned pump(struct rig *r)
{
	unsigned rounds = 0;

	for (;;) {
		struct epoll_event ev[16];
		int k = epoll_wait(r->loop.epfd, ev, 16, 0);

		assert_true(k >= 0);
		if (k == 0)
			return rounds;
		for (int i = 0; i < k; i++) {
			struct ev_source *src = ev[i].data.ptr;

			src->handler(src, ev[i].events);
		}
		if (++rounds > 1000)
			fail_msg("the event loop never goes idle: a source spins");
	}
}

/* The rig with @queues pairs, each "tap queue" a socketpair. */
static int setup_queues(void **state, unsigned queues)
{
	struct rig *r = calloc(1, sizeof(*r));
	struct virtio_net_config_opts opts = { .tap = "test0", .index = 0, .mac_given = true,
					       .mac = { 0x02, 0x11, 0x22, 0x33, 0x44, 0x55 },
					       .tap_fd_given = true, .queues = queues };
	struct virtio_mmio_host host;
	char err[300];
	int sv[2];

	assert_non_null(r);
	assert_int_equal(guest_mem_init(&r->gm, 16 * MiB), 0);
	assert_int_equal(evloop_init(&r->loop), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	opts.tap_fd = sv[0];
	r->peer = sv[1];
	r->peer2 = -1;
	if (queues > 1) {
		assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
		opts.tap_fds_more[0] = sv[0];
		r->peer2 = sv[1];
	}
	if (virtio_net_init(&r->n, &r->gm, &r->loop, &opts, err, sizeof(err)))
		fail_msg("virtio_net_init: %s", err);
	host = (struct virtio_mmio_host){ .vm_fd = -1, .loop = &r->loop };
	if (virtio_mmio_init(&r->m, &r->n.dev, BASE, 5, &host, err, sizeof(err)))
		fail_msg("virtio_mmio_init: %s", err);
	r->next_buf = BUFS;
	*state = r;
	return 0;
}

static int setup(void **state)
{
	return setup_queues(state, 1);
}

static int setup_mq(void **state)
{
	return setup_queues(state, 2);
}

static int teardown(void **state)
{
	struct rig *r = *state;

	virtio_net_exit(&r->n);
	virtio_mmio_exit(&r->m);
	if (r->peer >= 0)
		close(r->peer);
	if (r->peer2 >= 0)
		close(r->peer2);
	evloop_exit(&r->loop);
	guest_mem_exit(&r->gm);
	free(r);
	return 0;
}

/* Section 3.1.1 up to FEATURES_OK with @features; returns the status. */
static uint32_t negotiate(struct rig *r, uint64_t features)
{
	return mmio_negotiate(&r->m, features);
}

/* Negotiate, set up @nq queues, DRIVER_OK. */
static void start_queues(struct rig *r, uint64_t features, unsigned nq)
{
	assert_true(negotiate(r, VIRTIO_BIT(VIRTIO_F_VERSION_1) | features) &
		    VIRTIO_STATUS_FEATURES_OK);
	for (unsigned q = 0; q < nq; q++) {
		uint64_t at = RING(q);

		wr(r, VIRTIO_MMIO_QUEUE_SEL, q);
		wr(r, VIRTIO_MMIO_QUEUE_NUM, QSIZE);
		wr(r, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)at);
		wr(r, VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
		wr(r, VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)(at + 0x1000));
		wr(r, VIRTIO_MMIO_QUEUE_DRIVER_HIGH, 0);
		wr(r, VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)(at + 0x2000));
		wr(r, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, 0);
		wr(r, VIRTIO_MMIO_QUEUE_READY, 1);
		memset(&r->q[q], 0, sizeof(r->q[q]));
	}
	wr(r, VIRTIO_MMIO_STATUS, rd(r, VIRTIO_MMIO_STATUS) | VIRTIO_STATUS_DRIVER_OK);
	assert_int_equal(rd(r, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET, 0);
}

/* Negotiate, set up both queues, DRIVER_OK. */
static void start(struct rig *r, uint64_t features)
{
	start_queues(r, features, 2);
}

static uint64_t alloc_buf(struct rig *r, uint64_t len)
{
	uint64_t gpa = r->next_buf;

	r->next_buf += (len + 0xfff) & ~0xfffull;
	assert_true(r->next_buf < 16 * MiB);
	return gpa;
}

/* Post a chain of @n buffers on queue @q: gpa[i], len[i], device-writable
 * when write[i].  Returns the head.  Notifies when @notify. */
static uint16_t post(struct rig *r, unsigned q, unsigned n, const uint64_t *gpa,
		     const uint32_t *len, const bool *write, bool notify)
{
	struct dq *d = &r->q[q];
	uint8_t *desc = gp(r, RING(q), 16 * QSIZE);
	uint16_t head = d->next_desc, *avail = gp(r, RING(q) + 0x1000, 6 + 2 * QSIZE);

	for (unsigned i = 0; i < n; i++) {
		uint16_t idx = (uint16_t)((head + i) % QSIZE);
		uint16_t flags = (uint16_t)((write[i] ? VIRTQ_DESC_F_WRITE : 0) |
					    (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
		uint16_t next = (uint16_t)((idx + 1) % QSIZE);

		memcpy(desc + 16 * idx, &gpa[i], 8);
		memcpy(desc + 16 * idx + 8, &len[i], 4);
		memcpy(desc + 16 * idx + 12, &flags, 2);
		memcpy(desc + 16 * idx + 14, &next, 2);
	}
	d->next_desc = (uint16_t)((head + n) % QSIZE);
	avail[2 + d->avail_idx % QSIZE] = head;
	__atomic_store_n(&avail[1], ++d->avail_idx, __ATOMIC_RELEASE);
	if (notify)
		wr(r, VIRTIO_MMIO_QUEUE_NOTIFY, q);
	return head;
}

/* The next used element of queue @q, or false when there is none. */
static bool used(struct rig *r, unsigned q, uint32_t *id, uint32_t *len)
{
	struct dq *d = &r->q[q];
	uint8_t *u = gp(r, RING(q) + 0x2000, 6 + 8 * QSIZE);
	uint16_t idx;

	memcpy(&idx, u + 2, 2);
	if (idx == d->used_seen)
		return false;
	memcpy(id, u + 4 + 8 * (d->used_seen % QSIZE), 4);
	memcpy(len, u + 8 + 8 * (d->used_seen % QSIZE), 4);
	d->used_seen++;
	return true;
}

/* Post one TX frame: the header in its own buffer, @len bytes of frame of
 * byte value @fill split in two buffers. */
static uint16_t post_tx(struct rig *r, uint32_t len, uint8_t fill, bool notify)
{
	uint64_t gpa[3];
	uint32_t lens[3] = { HDR, len / 2, len - len / 2 };
	bool w[3] = { false, false, false };
	uint8_t *h;

	gpa[0] = alloc_buf(r, HDR);
	gpa[1] = alloc_buf(r, lens[1] ? lens[1] : 1);
	gpa[2] = alloc_buf(r, lens[2]);
	h = gp(r, gpa[0], HDR);
	memset(h, 0, HDR);
	h[0] = 1;     /* NEEDS_CSUM */
	h[6] = 34;    /* csum_start */
	h[8] = 16;    /* csum_offset */
	memset(gp(r, gpa[1], lens[1] ? lens[1] : 1), fill, lens[1]);
	memset(gp(r, gpa[2], lens[2]), fill + 1, lens[2]);
	return lens[1] ? post(r, 1, 3, gpa, lens, w, notify) :
			 post(r, 1, 2, (uint64_t[]){ gpa[0], gpa[2] }, (uint32_t[]){ HDR, lens[2] },
			      w, notify);
}

static void clear_dirty(struct rig *r)
{
	for (unsigned i = 0; i < r->gm.n_regions; i++)
		for (size_t w = 0; w < r->gm.regions[i].dirty_words; w++)
			(void)guest_mem_dirty_take(&r->gm, i, w);
}

static bool page_dirty(struct rig *r, uint64_t gpa)
{
	uint64_t page = gpa >> GUEST_PAGE_SHIFT;

	return r->gm.regions[0].dirty[page / 64] >> (page % 64) & 1;
}

/* Send a frame of @len bytes (value @fill + position) into the "tap". */
static void tap_send(struct rig *r, uint32_t len, uint8_t fill)
{
	uint8_t *buf = calloc(1, HDR + len);

	assert_non_null(buf);
	for (uint32_t i = 0; i < len; i++)
		buf[HDR + i] = (uint8_t)(fill + i);
	buf[0] = 2; /* DATA_VALID: passes through */
	assert_int_equal(send(r->peer, buf, HDR + len, 0), (ssize_t)(HDR + len));
	free(buf);
}

static void check_frame(const uint8_t *p, uint32_t len, uint8_t fill)
{
	for (uint32_t i = 0; i < len; i++)
		if (p[i] != (uint8_t)(fill + i))
			fail_msg("frame byte %u is 0x%02x, wanted 0x%02x", i, p[i], (uint8_t)(fill + i));
}

/* Post @n RX chains of one @size-byte buffer each; returns the first gpa
 * (the chains are @stride apart). */
static uint64_t post_rx(struct rig *r, unsigned n, uint32_t size, bool notify)
{
	uint64_t first = 0;

	for (unsigned i = 0; i < n; i++) {
		uint64_t gpa = alloc_buf(r, size);
		bool w = true;

		if (!i)
			first = gpa;
		memset(gp(r, gpa, size), 0xee, size);
		post(r, 0, 1, &gpa, &size, &w, notify && i + 1 == n);
	}
	return first;
}

static void test_config_and_features(void **state)
{
	struct rig *r = *state;
	uint8_t cfg[12];
	uint64_t f;

	assert_int_equal(rd(r, VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_NET);
	wr(r, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	f = rd(r, VIRTIO_MMIO_DEVICE_FEATURES);
	wr(r, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
	f |= (uint64_t)rd(r, VIRTIO_MMIO_DEVICE_FEATURES) << 32;
	for (unsigned b = 0; b < 64; b++) {
		static const unsigned want[] = { VIRTIO_F_VERSION_1, VIRTIO_NET_F_MAC,
						 VIRTIO_NET_F_STATUS, VIRTIO_NET_F_MTU,
						 VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_CSUM,
						 VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_HOST_TSO4,
						 VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_GUEST_TSO4,
						 VIRTIO_NET_F_GUEST_TSO6 };

		for (unsigned i = 0; i < ARRAY_LEN(want); i++)
			if (want[i] == b && !(f >> b & 1))
				fail_msg("feature bit %u not offered", b);
	}
	for (unsigned i = 0; i < sizeof(cfg); i++)
		assert_int_equal(r->m.region.ops->read(&r->m.region, VIRTIO_MMIO_CONFIG + i, &cfg[i], 1),
				 0);
	assert_memory_equal(cfg, ((uint8_t[]){ 0x02, 0x11, 0x22, 0x33, 0x44, 0x55 }), 6);
	assert_int_equal(cfg[6] | cfg[7] << 8, VIRTIO_NET_S_LINK_UP);
	assert_int_equal(cfg[10] | cfg[11] << 8, 1500);
	/* Offload dependencies: HOST_TSO4 without CSUM, GUEST_TSO6 without
	 * GUEST_CSUM are refused; with them, accepted. */
	assert_int_equal(negotiate(r, VIRTIO_BIT(VIRTIO_F_VERSION_1) |
					      VIRTIO_BIT(VIRTIO_NET_F_HOST_TSO4)) &
				 VIRTIO_STATUS_FEATURES_OK, 0);
	assert_int_equal(negotiate(r, VIRTIO_BIT(VIRTIO_F_VERSION_1) |
					      VIRTIO_BIT(VIRTIO_NET_F_GUEST_TSO6)) &
				 VIRTIO_STATUS_FEATURES_OK, 0);
	assert_int_not_equal(negotiate(r, VIRTIO_BIT(VIRTIO_F_VERSION_1) |
						  VIRTIO_BIT(VIRTIO_NET_F_HOST_TSO4) |
						  VIRTIO_BIT(VIRTIO_NET_F_CSUM) |
						  VIRTIO_BIT(VIRTIO_NET_F_GUEST_TSO6) |
						  VIRTIO_BIT(VIRTIO_NET_F_GUEST_CSUM)) &
				     VIRTIO_STATUS_FEATURES_OK, 0);
}

static void test_derived_mac(void **state)
{
	struct virtio_net a, b;
	struct virtio_net_config_opts o = { .tap = "tapX", .index = 1, .tap_fd_given = true };
	char err[200];
	int sv[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	o.tap_fd = sv[0];
	assert_int_equal(virtio_net_init(&a, NULL, NULL, &o, err, sizeof(err)), 0);
	o.tap_fd = sv[1];
	assert_int_equal(virtio_net_init(&b, NULL, NULL, &o, err, sizeof(err)), 0);
	/* Stable, locally administered, unicast. */
	assert_memory_equal(a.mac, b.mac, 6);
	assert_int_equal(a.mac[0] & 3, 2);
	assert_memory_equal(a.config, a.mac, 6);
	virtio_net_exit(&a);
	virtio_net_exit(&b);
}

/* Errors name the tap, on one line. */
static void test_tap_errors(void **state)
{
	struct virtio_net_config_opts o = { .tap = "badfd0", .tap_fd_given = true, .tap_fd = -1 };
	struct virtio_net n;
	struct tap t;
	char err[300];

	(void)state;
	assert_int_equal(tap_open(&t, "a-name-far-too-long-for-linux", err, sizeof(err)), -EINVAL);
	assert_one_line_naming(err, "a-name-far-too-long-for-linux");
	assert_int_equal(t.fd, -1);
	tap_close(&t);
	assert_int_equal(virtio_net_init(&n, NULL, NULL, &o, err, sizeof(err)), -EBADF);
	assert_one_line_naming(err, "badfd0");
	virtio_net_exit(&n); /* harmless after a failed init */
}

static void test_tx(void **state)
{
	struct rig *r = *state;
	uint8_t buf[HDR + 2000];
	uint32_t id = 0, len = 0;
	uint16_t h1, h2;

	start(r, VIRTIO_BIT(VIRTIO_NET_F_CSUM) | VIRTIO_BIT(VIRTIO_NET_F_HOST_TSO4));
	h1 = post_tx(r, 1000, 0x10, false);
	h2 = post_tx(r, 60, 0x30, true);
	pump(r);
	assert_int_equal(recv(r->peer, buf, sizeof(buf), MSG_DONTWAIT), HDR + 1000);
	assert_int_equal(buf[0], 1);
	assert_int_equal(buf[6], 34);
	assert_int_equal(buf[8], 16);
	for (unsigned i = 0; i < 1000; i++)
		assert_int_equal(buf[HDR + i], i < 500 ? 0x10 : 0x11);
	assert_int_equal(recv(r->peer, buf, sizeof(buf), MSG_DONTWAIT), HDR + 60);
	assert_int_equal(buf[HDR], 0x30);
	assert_int_equal(buf[HDR + 59], 0x31);
	assert_int_equal(recv(r->peer, buf, sizeof(buf), MSG_DONTWAIT), -1);
	assert_true(used(r, 1, &id, &len));
	assert_int_equal(id, h1);
	assert_int_equal(len, 0);
	assert_true(used(r, 1, &id, &len));
	assert_int_equal(id, h2);
	assert_false(used(r, 1, &id, &len));
	assert_int_equal(rd(r, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_VRING,
			 VIRTIO_MMIO_INT_VRING);
	assert_int_equal(r->n.stats.tx_frames, 2);
	assert_int_equal(r->n.stats.tx_bytes, 1060);
}

static void test_tx_malformed(void **state)
{
	struct rig *r = *state;
	uint8_t buf[HDR + 100];
	uint64_t g = alloc_buf(r, 70000);
	uint32_t id = 0, len = 0;
	bool ro[2] = { false, false }, rw[2] = { false, true };

	start(r, 0);
	/* Header only 8 bytes; a writable buffer in a TX chain; a frame of
	 * 12 + 69988 bytes; then a good frame. */
	post(r, 1, 1, &g, (uint32_t[]){ 8 }, ro, false);
	post(r, 1, 2, (uint64_t[]){ g, g + 4096 }, (uint32_t[]){ HDR, 64 }, rw, false);
	post(r, 1, 2, (uint64_t[]){ g, g + 4096 }, (uint32_t[]){ HDR, 65551 }, ro, false);
	post_tx(r, 100, 0x50, true);
	pump(r);
	for (unsigned i = 0; i < 4; i++) {
		assert_true(used(r, 1, &id, &len));
		assert_int_equal(len, 0);
	}
	assert_int_equal(recv(r->peer, buf, sizeof(buf), MSG_DONTWAIT), HDR + 100);
	assert_int_equal(recv(r->peer, buf, sizeof(buf), MSG_DONTWAIT), -1);
	assert_int_equal(r->n.stats.tx_dropped, 3);
	assert_int_equal(r->n.stats.tx_frames, 1);
	assert_int_equal(rd(r, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET, 0);
	/* A malformed ring (head index past the queue) is not a frame: the
	 * device needs a reset, vmrun goes on. */
	{
		uint16_t *avail = gp(r, RING(1) + 0x1000, 6 + 2 * QSIZE);

		avail[2 + r->q[1].avail_idx % QSIZE] = QSIZE + 3;
		__atomic_store_n(&avail[1], ++r->q[1].avail_idx, __ATOMIC_RELEASE);
		wr(r, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
		pump(r);
		assert_int_equal(rd(r, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET,
				 VIRTIO_STATUS_NEEDS_RESET);
	}
}

/* The tap (here the socket) full: TX stops, waits for EPOLLOUT without
 * spinning, and loses nothing. */
static void test_tx_backpressure(void **state)
{
	struct rig *r = *state;
	uint8_t *buf = malloc(HDR + 40000);
	unsigned n = 0, frames = 20; /* 3 descriptors each: within QSIZE */
	uint32_t id = 0, len = 0;

	assert_non_null(buf);
	start(r, 0);
	for (unsigned i = 0; i < frames; i++)
		post_tx(r, 40000, (uint8_t)(2 * i), i + 1 == frames);
	pump(r); /* terminates: the device waits for EPOLLOUT */
	while (used(r, 1, &id, &len))
		n++;
	assert_true(n < frames); /* the socket cannot hold 20 * 40 KB */
	assert_int_equal(r->n.stats.tx_frames, n);
	for (unsigned i = 0; i < frames; i++) {
		assert_int_equal(recv(r->peer, buf, HDR + 40000, MSG_DONTWAIT), HDR + 40000);
		assert_int_equal(buf[HDR], (uint8_t)(2 * i));
		assert_int_equal(buf[HDR + 39999], (uint8_t)(2 * i + 1));
		pump(r);
	}
	while (used(r, 1, &id, &len))
		n++;
	assert_int_equal(n, frames);
	assert_int_equal(r->n.stats.tx_frames, frames);
	assert_int_equal(r->n.stats.tx_dropped, 0);
	free(buf);
}

/* Without MRG_RXBUF: one frame per chain, num_buffers 1, every byte
 * written marked dirty; a frame too big for the chain is dropped. */
static void test_rx_simple(void **state)
{
	struct rig *r = *state;
	uint32_t id = 0, len = 0;
	uint64_t g;
	uint8_t *p;

	start(r, VIRTIO_BIT(VIRTIO_NET_F_GUEST_CSUM));
	g = post_rx(r, 2, 2048, true);
	pump(r);
	clear_dirty(r);
	tap_send(r, 100, 0x40);
	tap_send(r, 3000, 0x70); /* too big for a 2048-byte chain */
	tap_send(r, 1500, 0x90);
	pump(r);
	assert_true(used(r, 0, &id, &len));
	assert_int_equal(id, 0);
	assert_int_equal(len, HDR + 100);
	p = gp(r, g, 2048);
	assert_int_equal(p[0], 2);
	assert_int_equal(p[10] | p[11] << 8, 1); /* num_buffers */
	check_frame(p + HDR, 100, 0x40);
	assert_int_equal(p[HDR + 100], 0xee);
	assert_true(page_dirty(r, g));
	assert_true(used(r, 0, &id, &len));
	assert_int_equal(id, 1);
	assert_int_equal(len, HDR + 1500);
	check_frame(gb(r, g + 4096, 2048) + HDR, 1500, 0x90);
	assert_true(page_dirty(r, g + 4096));
	assert_false(used(r, 0, &id, &len));
	assert_int_equal(r->n.stats.rx_frames, 2);
	assert_int_equal(r->n.stats.rx_dropped, 1);
	assert_int_equal(rd(r, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_VRING,
			 VIRTIO_MMIO_INT_VRING);
}

/* Without GUEST_CSUM the flags the guest sees are 0 (section 5.1.6.4.1),
 * even when the tap says DATA_VALID. */
static void test_rx_flags_without_guest_csum(void **state)
{
	struct rig *r = *state;
	uint32_t id = 0, len = 0;
	uint64_t g;
	uint8_t *p;

	start(r, 0);
	g = post_rx(r, 1, 2048, true);
	pump(r);
	tap_send(r, 64, 0x10); /* flags DATA_VALID */
	pump(r);
	assert_true(used(r, 0, &id, &len));
	assert_int_equal(len, HDR + 64);
	p = gp(r, g, 2048);
	assert_int_equal(p[0], 0);
	check_frame(p + HDR, 64, 0x10);
}

/* MRG_RXBUF with page-sized buffers, enough for any frame: the device
 * reads straight into them (one readv()).  What the driver sees must be
 * the same as through the bounce buffer: num_buffers, lengths, the data,
 * the flags (cleared without GUEST_CSUM), dirty pages; a runt is dropped
 * without using a buffer; with too few buffers posted it still works. */
static void test_rx_direct(void **state)
{
	struct rig *r = *state;
	uint32_t id = 0, len = 0, off = 0;
	uint8_t got[HDR + 10000];
	uint64_t g;

	start(r, VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF));
	g = post_rx(r, 20, 4096, true); /* 80 KiB, contiguous: more than any frame */
	pump(r);
	clear_dirty(r);
	assert_int_equal(send(r->peer, "runt", 4, 0), 4);
	tap_send(r, 10000, 0x31);
	tap_send(r, 60, 0x71);
	pump(r);
	assert_int_equal(r->n.stats.rx_dropped, 1);
	for (unsigned i = 0; i < 3; i++) {
		assert_true(used(r, 0, &id, &len));
		assert_int_equal(id, i);
		assert_int_equal(len, i < 2 ? 4096 : HDR + 10000 - 8192);
		memcpy(got + off, gb(r, g + 4096 * i, len), len);
		assert_true(page_dirty(r, g + 4096 * i));
		off += len;
	}
	assert_int_equal(got[0], 0); /* DATA_VALID from the tap, no GUEST_CSUM */
	assert_int_equal(got[10] | got[11] << 8, 3);
	check_frame(got + HDR, 10000, 0x31);
	assert_true(used(r, 0, &id, &len));
	assert_int_equal(id, 3);
	assert_int_equal(len, HDR + 60);
	assert_int_equal(gb(r, g + 4096 * 3, 12)[10], 1);
	check_frame(gb(r, g + 4096 * 3, len) + HDR, 60, 0x71);
	assert_false(page_dirty(r, g + 4096 * 4));
	assert_false(used(r, 0, &id, &len));
	assert_int_equal(r->n.stats.rx_frames, 2);
}

/* Page-sized buffers, but only 16 KiB of them: too few for the largest
 * frame, so no direct read; a 5000-byte frame still arrives whole. */
static void test_rx_direct_few_buffers(void **state)
{
	struct rig *r = *state;
	uint32_t id = 0, len = 0;
	uint8_t got[HDR + 5000];
	uint64_t g;

	start(r, VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF) | VIRTIO_BIT(VIRTIO_NET_F_GUEST_CSUM));
	g = post_rx(r, 4, 4096, true);
	pump(r);
	tap_send(r, 5000, 0x12);
	pump(r);
	assert_true(used(r, 0, &id, &len));
	assert_int_equal(len, 4096);
	memcpy(got, gb(r, g, 4096), 4096);
	assert_true(used(r, 0, &id, &len));
	assert_int_equal(len, HDR + 5000 - 4096);
	memcpy(got + 4096, gb(r, g + 4096, len), len);
	assert_int_equal(got[0], 2); /* DATA_VALID passes with GUEST_CSUM */
	assert_int_equal(got[10] | got[11] << 8, 2);
	check_frame(got + HDR, 5000, 0x12);
	assert_false(used(r, 0, &id, &len));
}

/* MRG_RXBUF: a frame spans chains; num_buffers in the first says how many. */
static void test_rx_mergeable(void **state)
{
	struct rig *r = *state;
	uint8_t got[HDR + 3000];
	uint32_t id = 0, len = 0, off = 0;
	uint64_t g;

	start(r, VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF));
	g = post_rx(r, 4, 1024, true);
	clear_dirty(r);
	tap_send(r, 3000, 0x21);
	tap_send(r, 200, 0x61);
	pump(r);
	for (unsigned i = 0; i < 3; i++) {
		assert_true(used(r, 0, &id, &len));
		assert_int_equal(id, i);
		assert_int_equal(len, i < 2 ? 1024 : HDR + 3000 - 2048);
		memcpy(got + off, gb(r, g + 4096 * i, len), len);
		assert_true(page_dirty(r, g + 4096 * i));
		off += len;
	}
	assert_int_equal(got[10] | got[11] << 8, 3);
	check_frame(got + HDR, 3000, 0x21);
	assert_true(used(r, 0, &id, &len));
	assert_int_equal(id, 3);
	assert_int_equal(len, HDR + 200);
	assert_int_equal(gb(r, g + 3 * 4096, 2)[10], 1);
	check_frame(gb(r, g + 3 * 4096, 1024) + HDR, 200, 0x61);
	assert_false(page_dirty(r, g + 4 * 4096));
	assert_int_equal(r->n.stats.rx_frames, 2);
}

/* No RX buffers: nothing is read from the tap and nothing spins; frames
 * posted later arrive in order, none lost, including the one read while a
 * mergeable frame waited for its second chain. */
static void test_rx_backpressure(void **state)
{
	struct rig *r = *state;
	uint32_t id = 0, len = 0;
	uint64_t g;

	start(r, VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF));
	for (unsigned i = 0; i < 5; i++)
		tap_send(r, 1000 + 100 * i, (uint8_t)(0x10 * i));
	assert_true(pump(r) <= 2);
	/* The tap is no longer watched although it holds frames. */
	{
		struct epoll_event ev;

		assert_int_equal(epoll_wait(r->loop.epfd, &ev, 1, 0), 0);
	}
	assert_int_equal(r->n.stats.rx_frames + r->n.stats.rx_dropped, 0);
	/* Two chains of 2048: frames 0 and 1. */
	g = post_rx(r, 2, 2048, true);
	pump(r);
	for (unsigned i = 0; i < 2; i++) {
		assert_true(used(r, 0, &id, &len));
		assert_int_equal(len, HDR + 1000 + 100 * i);
		check_frame(gb(r, g + 4096 * i, len) + HDR, len - HDR, (uint8_t)(0x10 * i));
	}
	assert_false(used(r, 0, &id, &len));
	/* One chain of 1024: frame 2 (1200 bytes) needs two; it waits in the
	 * bounce buffer. */
	g = post_rx(r, 1, 1024, true);
	pump(r);
	assert_false(used(r, 0, &id, &len));
	post_rx(r, 3, 1024, true);
	pump(r);
	assert_true(used(r, 0, &id, &len));
	assert_int_equal(len, 1024);
	assert_int_equal(gb(r, g, 12)[10], 2);
	check_frame(gb(r, g, 1024) + HDR, 1024 - HDR, 0x20);
	assert_true(used(r, 0, &id, &len));
	assert_int_equal(len, HDR + 1200 - 1024);
	/* Frame 3 (1300 bytes) in the last two chains; frame 4 waits. */
	assert_true(used(r, 0, &id, &len));
	assert_true(used(r, 0, &id, &len));
	assert_false(used(r, 0, &id, &len));
	g = post_rx(r, 1, 4096, true);
	pump(r);
	assert_true(used(r, 0, &id, &len));
	assert_int_equal(len, HDR + 1400);
	check_frame(gb(r, g, len) + HDR, 1400, 0x40);
	assert_int_equal(r->n.stats.rx_frames, 5);
	assert_int_equal(r->n.stats.rx_dropped, 0);
}

/* The tap goes away (here: the socket standing in for it is closed): the
 * device stops watching it instead of spinning on its EPOLLHUP/EPOLLERR,
 * reports the link down and raises a configuration interrupt. */
static void test_tap_gone(void **state)
{
	struct rig *r = *state;
	uint32_t gen;

	start(r, VIRTIO_BIT(VIRTIO_NET_F_STATUS));
	post_rx(r, 2, 2048, true);
	pump(r);
	assert_int_equal(rd(r, VIRTIO_MMIO_CONFIG + 4) >> 16, VIRTIO_NET_S_LINK_UP);
	gen = rd(r, VIRTIO_MMIO_CONFIG_GENERATION);
	wr(r, VIRTIO_MMIO_INTERRUPT_ACK, rd(r, VIRTIO_MMIO_INTERRUPT_STATUS));
	close(r->peer);
	r->peer = -1;
	pump(r); /* fails if the source stays ready */
	assert_int_equal(rd(r, VIRTIO_MMIO_CONFIG + 4) >> 16, 0);
	assert_int_not_equal(rd(r, VIRTIO_MMIO_CONFIG_GENERATION), gen);
	assert_true(rd(r, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG);
	assert_int_equal(pump(r), 0);
}

/* The same before the driver started the device: nothing may read the
 * closed socket, and it must not spin either. */
static void test_tap_gone_before_start(void **state)
{
	struct rig *r = *state;

	close(r->peer);
	r->peer = -1;
	pump(r);
	assert_int_equal(pump(r), 0);
	assert_int_equal(rd(r, VIRTIO_MMIO_CONFIG + 4) >> 16, 0);
}

/* The driver takes the RX queue out of service (QueueReady 0) while the
 * device holds a chain from it, rebuilds the ring and enables it again:
 * the next frame goes into the new ring's chain, never the stale one. */
static void test_rx_queue_disabled(void **state)
{
	struct rig *r = *state;
	uint32_t id = 0, len = 0;
	uint64_t g;

	start(r, 0);
	post_rx(r, 1, 2048, true); /* head 0, held: the tap is empty */
	pump(r);
	wr(r, VIRTIO_MMIO_QUEUE_SEL, 0);
	wr(r, VIRTIO_MMIO_QUEUE_READY, 0);
	memset(gp(r, RING(0), 0x3000), 0, 0x3000);
	memset(&r->q[0], 0, sizeof(r->q[0]));
	r->q[0].next_desc = 5;
	wr(r, VIRTIO_MMIO_QUEUE_READY, 1);
	g = post_rx(r, 1, 2048, true); /* head 5 */
	tap_send(r, 80, 0x33);
	pump(r);
	assert_true(used(r, 0, &id, &len));
	assert_int_equal(id, 5);
	assert_int_equal(len, HDR + 80);
	check_frame(gb(r, g, 2048) + HDR, 80, 0x33);
	assert_false(used(r, 0, &id, &len));
}

/* Post one TX frame on queue @q: a zeroed header, then @len bytes of
 * frame, byte i being @fill + i (check_frame()); notifies. */
static uint16_t post_tx_q(struct rig *r, unsigned q, uint32_t len, uint8_t fill)
{
	uint64_t gpa[2] = { alloc_buf(r, HDR), alloc_buf(r, len) };
	uint32_t lens[2] = { HDR, len };
	bool w[2] = { false, false };
	uint8_t *f = gp(r, gpa[1], len);

	memset(gp(r, gpa[0], HDR), 0, HDR);
	for (uint32_t i = 0; i < len; i++)
		f[i] = (uint8_t)(fill + i);
	return post(r, q, 2, gpa, lens, w, true);
}

/* Send a control command (class, cmd, @data) on queue @cq; returns the
 * device's ack byte. */
static uint8_t ctrl(struct rig *r, unsigned cq, uint8_t cls, uint8_t cmd, const void *data,
		    uint32_t len)
{
	uint64_t g[2] = { alloc_buf(r, 64), alloc_buf(r, 1) };
	uint32_t l[2] = { 2 + len, 1 }, id, ulen;
	bool w[2] = { false, true };
	uint8_t *out = gp(r, g[0], 2 + len), *ack = gp(r, g[1], 1);
	uint16_t head;

	out[0] = cls;
	out[1] = cmd;
	memcpy(out + 2, data, len);
	*ack = 0xee;
	head = post(r, cq, 2, g, l, w, true);
	pump(r);
	assert_true(used(r, cq, &id, &ulen));
	assert_int_equal(id, head);
	assert_int_equal(ulen, 1);
	return *ack;
}

/* Multiqueue: MQ and CTRL_VQ offered with queues=2, max_virtqueue_pairs
 * 2; pair 1 carries nothing until VQ_PAIRS_SET 2, then frames go through
 * tap queue 1 both ways; bad pair counts and unknown commands get ERR and
 * change nothing. */
static void test_mq(void **state)
{
	struct rig *r = *state;
	uint8_t two[2] = { 2, 0 }, three[2] = { 3, 0 }, zero[2] = { 0, 0 }, buf[2048];
	uint32_t id = 0, len = 0;
	uint64_t g;

	wr(r, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	assert_true(rd(r, VIRTIO_MMIO_DEVICE_FEATURES) & VIRTIO_BIT(VIRTIO_NET_F_MQ));
	assert_true(rd(r, VIRTIO_MMIO_DEVICE_FEATURES) & VIRTIO_BIT(VIRTIO_NET_F_CTRL_VQ));
	assert_int_equal(rd(r, VIRTIO_MMIO_CONFIG + 8) & 0xffff, 2);
	start_queues(r, VIRTIO_BIT(VIRTIO_NET_F_MQ) | VIRTIO_BIT(VIRTIO_NET_F_CTRL_VQ), 5);

	/* Pair 1 not in use yet: its buffers and frames wait. */
	g = alloc_buf(r, 2048);
	{
		uint32_t l = 2048;
		bool w = true;

		memset(gp(r, g, 2048), 0xee, 2048);
		post(r, 2, 1, &g, &l, &w, true);
	}
	memset(buf, 0, sizeof(buf));
	buf[HDR] = 0x5a;
	assert_int_equal(send(r->peer2, buf, HDR + 100, 0), HDR + 100);
	pump(r);
	assert_false(used(r, 2, &id, &len));

	assert_int_equal(ctrl(r, 4, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, three, 2),
			 VIRTIO_NET_ERR);
	assert_int_equal(ctrl(r, 4, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, zero, 2),
			 VIRTIO_NET_ERR);
	assert_int_equal(ctrl(r, 4, 0 /* RX mode */, 0, zero, 1), VIRTIO_NET_ERR);
	pump(r);
	assert_false(used(r, 2, &id, &len));

	assert_int_equal(ctrl(r, 4, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, two, 2),
			 VIRTIO_NET_OK);
	pump(r);
	assert_true(used(r, 2, &id, &len));
	assert_int_equal(len, HDR + 100);
	assert_int_equal(gb(r, g, 2048)[HDR], 0x5a);

	/* TX on queue 3 leaves through tap queue 1, not 0. */
	post_tx_q(r, 3, 300, 0x44);
	pump(r);
	assert_true(used(r, 3, &id, &len));
	assert_int_equal(recv(r->peer2, buf, sizeof(buf), MSG_DONTWAIT), HDR + 300);
	check_frame(buf + HDR, 300, 0x44);
	assert_int_equal(recv(r->peer, buf, sizeof(buf), MSG_DONTWAIT), -1);
	assert_int_equal(rd(r, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET, 0);
}

/* A device reset while frames wait: nothing crashes, the device works
 * again after the driver sets it up anew. */
static void test_reset(void **state)
{
	struct rig *r = *state;
	uint32_t id = 0, len = 0;

	start(r, VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF));
	post_rx(r, 1, 1024, true);
	tap_send(r, 1500, 1);
	pump(r);
	wr(r, VIRTIO_MMIO_STATUS, 0);
	tap_send(r, 100, 2);
	pump(r);
	r->next_buf = BUFS;
	start(r, 0);
	post_rx(r, 1, 2048, true);
	pump(r);
	assert_true(used(r, 0, &id, &len));
	assert_int_equal(len, HDR + 100);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_config_and_features, setup, teardown),
		cmocka_unit_test(test_derived_mac),
		cmocka_unit_test(test_tap_errors),
		cmocka_unit_test_setup_teardown(test_tx, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tx_malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tx_backpressure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_simple, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_flags_without_guest_csum, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_mergeable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_direct, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_direct_few_buffers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_backpressure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_queue_disabled, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mq, setup_mq, teardown),
		cmocka_unit_test_setup_teardown(test_tap_gone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tap_gone_before_start, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

// SPDX-License-Identifier: MIT
/*
 * Fuzz target for virtio-net (src/virtio/net.c) behind its virtio-mmio
 * transport: the TX path (virtio_net_hdr_v1 with its GSO and checksum
 * fields, then the frame, in any chain layout), the RX path into the
 * guest's buffers (mergeable or not), and the control queue (MQ).  The
 * "tap" is one end of a SOCK_SEQPACKET socketpair per queue pair, as in
 * tests/unit/test_virtio_net.c; the target holds the other ends.
 *
 * Input: byte 0 (bit 0: two queue pairs, MQ and a control queue, five
 * queues; else one pair, two queues), then fuzz_virtio_dev.h's driver
 * input.  The program's device step (op 3), by arg % 3: 0 the "network"
 * sends a datagram (vnet header + frame) of val % 2048 bytes taken from
 * guest RAM offset 0x5000 + arg * 16 of the input's image; 1 the target
 * reads what the device sent (the tap becomes writable again); 2 the tap
 * of pair 0 goes away (its peer closed).
 */
#include <sys/socket.h>

#include "fuzz_virtio_dev.h"
#include "vmrun/virtio_net.h"

struct net_rig {
	struct virtio_net n;
	int peer[2];
};

static void net_step(struct fzv *v, uint8_t arg, uint32_t val, void *opaque)
{
	struct net_rig *r = opaque;
	uint8_t buf[2048];

	switch (arg % 3) {
	case 0: {
		size_t len = val % sizeof(buf);
		const uint8_t *src = guest_mem_ptr(&v->gm, 0x5000 + arg * 16u, len);
		int p = r->peer[(val >> 16) & 1];

		if (src && p >= 0)
			(void)send(p, src, len, MSG_DONTWAIT);
		break;
	}
	case 1:
		for (int i = 0; i < 2; i++)
			while (r->peer[i] >= 0 && recv(r->peer[i], buf, sizeof(buf), MSG_DONTWAIT) > 0)
				;
		break;
	default:
		if (r->peer[0] >= 0) {
			close(r->peer[0]);
			r->peer[0] = -1;
		}
		break;
	}
	fzv_pump(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fzv v;
	static struct net_rig r;
	struct fz f = { data, size };
	struct virtio_net_config_opts opts = { .tap = "fuzz0", .mac_given = true,
					       .mac = { 0x02, 0x11, 0x22, 0x33, 0x44, 0x55 },
					       .tap_fd_given = true };
	struct virtio_mmio_host host;
	unsigned nq;
	char err[512];
	int sv[2];

	fz_quiet();
	opts.queues = (fz_u8(&f) & 1) ? 2 : 1;
	nq = opts.queues == 2 ? 5 : 2;
	if (!fzv_parse(&v, &f, nq))
		abort();
	if (evloop_init(&v.loop))
		abort();
	r.peer[0] = r.peer[1] = -1;
	for (unsigned i = 0; i < opts.queues; i++) {
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv))
			abort();
		if (i == 0)
			opts.tap_fd = sv[0];
		else
			opts.tap_fds_more[i - 1] = sv[0];
		r.peer[i] = sv[1];
	}
	if (virtio_net_init(&r.n, &v.gm, &v.loop, &opts, err, sizeof(err))) {
		fprintf(stderr, "fuzz_virtio_net: %s\n", err);
		abort();
	}
	host = (struct virtio_mmio_host){ .vm_fd = -1, .loop = &v.loop };
	if (virtio_mmio_init(&v.m, &r.n.dev, FZV_BASE, 5, &host, err, sizeof(err))) {
		fprintf(stderr, "fuzz_virtio_net: %s\n", err);
		abort();
	}
	fzv_start(&v, nq);
	fzv_run(&v, nq, net_step, &r);
	virtio_net_exit(&r.n);
	virtio_mmio_exit(&v.m);
	for (int i = 0; i < 2; i++)
		if (r.peer[i] >= 0)
			close(r.peer[i]);
	evloop_exit(&v.loop);
	return 0;
}

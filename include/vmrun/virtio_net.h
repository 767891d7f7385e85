/* virtio-net device model over a tap interface (virtio 1.2, section 5.1),
 * src/virtio/net.c with the tap backend in src/net/tap.c.
 *
 * RX and TX queue pairs on the virtio core (more than one: MQ, a control
 * queue and a multi-queue tap); frames move between the guest's buffers
 * and the tap on the event loop thread, with backpressure both ways (no RX
 * buffers: stop reading the tap; tap full: wait for it to be writable).
 * The device knows nothing of its transport (vmrun/virtio.h). */
#ifndef VMRUN_VIRTIO_NET_H
#define VMRUN_VIRTIO_NET_H

#include <stdbool.h>
#include <stdint.h>

#include "vmrun/evloop.h"
#include "vmrun/virtio.h"

#define VIRTIO_ID_NET 1
#define VIRTIO_NET_MAX_PAIRS 8  /* queue pairs (--net ...,queues=N): VMRUN_MAX_NET_QUEUES */
/* RX 2k and TX 2k+1 for pair k, then the control queue (with MQ). */
#define VIRTIO_NET_MAX_QUEUES (2 * VIRTIO_NET_MAX_PAIRS + 1)

struct virtio_net_config_opts {
	const char *tap;     /* interface name: opened if it exists, else created */
	uint8_t mac[6];
	bool mac_given;      /* false: a stable locally administered MAC is derived */
	unsigned index;      /* for names and the derived MAC */
	unsigned queues;     /* queue pairs, 1 to VIRTIO_NET_MAX_PAIRS (0: 1); more than one
			      * opens a multi-queue tap and offers MQ and a control queue */
	/* Tests: use this open fd as the tap instead of opening @tap (a
	 * SOCK_SEQPACKET socket, one datagram per vnet header + frame); the
	 * device then owns it. */
	bool tap_fd_given;
	int tap_fd;
	int tap_fds_more[VIRTIO_NET_MAX_PAIRS - 1]; /* pairs 1.. with tap_fd_given */
};

/* Feature bits (virtio 1.2, section 5.1.3). */
#define VIRTIO_NET_F_CSUM 0
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_MTU 3
#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_HOST_TSO4 11
#define VIRTIO_NET_F_HOST_TSO6 12
#define VIRTIO_NET_F_MRG_RXBUF 15
#define VIRTIO_NET_F_STATUS 16
#define VIRTIO_NET_F_CTRL_VQ 17
#define VIRTIO_NET_F_MQ 22

/* Control queue commands (section 5.1.6.5): only MQ's is known. */
#define VIRTIO_NET_CTRL_MQ 4
#define VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET 0
#define VIRTIO_NET_OK 0
#define VIRTIO_NET_ERR 1

#define VIRTIO_NET_S_LINK_UP 1
#define VIRTIO_NET_MTU 1500
#define VIRTIO_NET_HDR_BYTES 12   /* virtio_net_hdr_v1: VERSION_1 always has num_buffers */
#define VIRTIO_NET_MAX_FRAME 65550 /* largest frame (after the header) either way */

/* Counters, under dev.lock. */
struct virtio_net_stats {
	uint64_t tx_frames, tx_bytes;  /* written to the tap */
	uint64_t tx_dropped;           /* malformed chains, or the tap refused the frame */
	uint64_t rx_frames, rx_bytes;  /* delivered into guest buffers */
	uint64_t rx_dropped;           /* no buffer could ever hold it */
	uint64_t tx_gso, rx_gso;       /* of the frames, those with a GSO type in the header */
};

struct virtio_net {
	struct virtio_device dev;
	struct virtq vqs[VIRTIO_NET_MAX_QUEUES];
	const struct guest_mem *mem;
	struct evloop *loop;
	char name[24];
	uint8_t mac[6];
	uint8_t config[12];  /* struct virtio_net_config: mac, status, max_virtqueue_pairs, mtu */
	struct virtio_net_stats stats;
	unsigned queue_pairs;        /* configured (tap queues) */
	unsigned queue_pairs_active; /* in use: 1, or what the driver set (MQ); under dev.lock */
	bool link_up;                /* under dev.lock */
	void *priv;          /* the model's own state (src/virtio/net.c) */
};

/* Open (or create) the tap and build the device.  Returns 0 or -errno with
 * a one-line reason naming the tap in @err. */
int virtio_net_init(struct virtio_net *n, const struct guest_mem *mem, struct evloop *loop,
		    const struct virtio_net_config_opts *opts, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Close the tap and free what init took (after the vCPUs stopped). */
void virtio_net_exit(struct virtio_net *n);

struct state_reader;
struct state_writer;

/* Stop touching guest RAM: the taps are no longer watched, and the chains
 * the device popped but did not use are handed back to their rings (the
 * avail index rewound), so a save holds no half-done chain.  A frame read
 * from the tap and not delivered stays in the device.  Event loop thread;
 * idempotent.  virtio_net_resume() watches the taps again. */
void virtio_net_quiesce(struct virtio_net *n);
void virtio_net_resume(struct virtio_net *n);

/* Save / load the device model's own state (MAC, queue pairs in use, link)
 * under @node/net; @node is its transport's node.  Load runs after the
 * transport's load and re-activation, and refuses another MAC or pair
 * count.  Returns 0 or -errno with the reason recorded in @r. */
void virtio_net_save(struct virtio_net *n, struct state_writer *w, const char *node);
int virtio_net_load(struct virtio_net *n, struct state_reader *r, const char *node)
	__attribute__((warn_unused_result));

/* Tell the network where the guest is now (after a live migration): a
 * broadcast RARP frame from the guest's MAC, written into the tap, so that
 * bridges and switches learn the port.  Returns 0 or -errno. */
int virtio_net_announce(struct virtio_net *n) __attribute__((warn_unused_result));

#endif

/* bench_net_harness: virtio-net throughput with no guest, for bench/net.py
 * to compare against net_floor (plain read/write on a tap).
 *
 * The program plays the guest's virtio-net driver itself, in-process, on
 * the real device model (src/virtio/net.c), tap backend (src/net/tap.c),
 * transport (src/virtio/mmio.c) and virtqueue code, all run by vmrun's
 * event loop, the way bench/blk.c does for virtio-blk:
 *  - fake guest RAM from guest_mem_init() holds the two split virtqueues
 *    (RX 0, TX 1, 256 entries each), 256 RX buffers and 256 TX buffers;
 *  - the transport is driven through its register window only
 *    (m.region.ops->read/write, 32-bit accesses): magic, version, device
 *    id, the status handshake, feature negotiation, the MAC and link
 *    status from the configuration space, queue set-up, DRIVER_OK,
 *    QueueNotify kicks, InterruptStatus and InterruptAck;
 *  - there is no KVM (vm_fd -1): a QueueNotify write reaches the device
 *    through the notify eventfd on the event loop, the path an ioeventfd
 *    takes, and the used-buffer interrupt is caught by chaining
 *    dev.interrupt_used; it ends evloop_run() the way an irqfd wakes a
 *    vCPU.  With EVENT_IDX (negotiated unless --no-event-idx) the driver
 *    asks for an interrupt at the next used buffer and kicks only when
 *    avail_event says so, like Linux's virtio_ring.
 *
 * Features: VERSION_1, MAC, STATUS, MRG_RXBUF and EVENT_IDX for every
 * point; for the 64 KiB points also CSUM, HOST_TSO4, GUEST_CSUM and
 * GUEST_TSO4 (so the device tells the tap to hand over TSO frames).  The
 * frames are those of bench/net_frames.h, the floor's bytes exactly.
 *
 * Points (--points, comma-separated):
 *   tx64, tx64k  TX (guest to host): every TX buffer holds one frame
 *                behind its vnet header, one descriptor per chain; the
 *                driver keeps all 256 chains posted, stamps a new
 *                sequence number into each before posting it, and counts
 *                the chains the device hands back (the device's own
 *                counters must agree: every one written to the tap, none
 *                dropped).  Timed from the first post to the last
 *                completion.
 *   rx64, rx64k  RX (host to guest): the device is set up with no RX
 *                buffers, "ready" is printed, and the harness waits for a
 *                line "go N" on stdin: by then the injector (net_floor
 *                inject) has queued N frames in the tap.  Then 256
 *                writable buffers are posted (1536 bytes for 64-byte
 *                frames; 4096 for 64 KiB ones, which then span 16 buffers
 *                through MRG_RXBUF) and the N frames are taken from the
 *                used ring, checked (length, GSO type and size, sequence
 *                numbers 0, 1, 2, ...: nothing lost, nothing reordered)
 *                and their buffers posted again at once.  Timed from the
 *                first post to the N-th frame.
 * --verify compares every byte of every RX frame, and for TX captures what
 * the tap received with an AF_PACKET socket and compares every captured
 * frame (the capture may miss some under load; it must see at least one).
 *
 * Usage: bench_net_harness --tap NAME [--points LIST] [--time S] [--verify]
 *                          [--json] [--no-event-idx]
 * Exit status: 0 when every point ran clean, 1 when a frame was wrong, the
 * device dropped one, needed a reset or stopped (hang), 2 on a usage or
 * set-up error. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <linux/if.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "drv.h"
#include "net_frames.h"
#include "vmrun/virtio_net.h"

#define QUEUE_SIZE DRV_QUEUE_SIZE
#define RXQ 0
#define TXQ 1
#define RXBUF_SMALL 1536u
#define RXBUF_LARGE 4096u
#define MAX_NUM_BUFFERS 64u /* more buffers than this for one frame is an error */

/* Fake guest-physical layout. */
#define GPA_QUEUES 0x10000ull /* queue q: desc, avail, used at + DRV_VQ_BYTES * q */
#define GPA_RXBUF 0x100000ull /* buffer i at GPA_RXBUF + i * RXBUF_LARGE */
#define GPA_TXBUF 0x200000ull /* buffer i at GPA_TXBUF + i * TX_STRIDE */
#define TX_STRIDE 0x11000ull  /* a vnet header and 64 KiB, page-rounded */
#define RAM_BYTES (GPA_TXBUF + QUEUE_SIZE * TX_STRIDE + (2ull << 20))

struct point {
	const char *name;
	enum netb_dir dir;
	size_t size;
};

static const struct point all_points[] = {
	{ "tx64", NETB_TX, NETB_SMALL },
	{ "rx64", NETB_RX, NETB_SMALL },
	{ "tx64k", NETB_TX, NETB_LARGE },
	{ "rx64k", NETB_RX, NETB_LARGE },
};
#define N_ALL (sizeof(all_points) / sizeof(all_points[0]))

struct result {
	uint64_t frames, bytes, foreign, verified;
	struct drv_counts c; /* errors, kicks, interrupts, hung, needs_reset */
	struct virtio_net_stats dev; /* the device's counters over the point */
	double seconds, cpu_seconds;
};

/* One queue: the kit's rings plus which descriptors are posted (every
 * chain is one descriptor). */
struct dq {
	struct drv_vq vq;
	bool busy[QUEUE_SIZE];  /* descriptor i is posted */
	unsigned n_busy;
};

struct drv {
	struct drv_kit k;
	struct virtio_net net;
	bool net_up;
	const char *tap;

	/* Options. */
	struct drv_opts opt;

	/* The running point. */
	const struct point *pt;
	struct result *res;
	struct dq q[2];
	uint32_t rxbuf;         /* bytes per RX buffer */
	uint64_t tx_seq;        /* next TX sequence number */
	uint8_t *expect, *frame; /* verify scratch: NETB_HDR + NETB_LARGE each */
};

static uint8_t *gpa_ptr(struct drv *d, uint64_t gpa, uint64_t len)
{
	return drv_ptr(&d->k, gpa, len);
}

/* Reset the device and bring it up again as a driver does (virtio 1.2,
 * sections 3.1.1 and 5.1.5) with the features the point needs, the MAC
 * and link status checked, both queues on fresh rings.  Returns 0 or
 * -errno (reason printed). */
static int drv_probe(struct drv *d)
{
	static const uint8_t guest_mac[6] = NETB_GUEST_MAC;
	uint64_t need;
	uint32_t v;
	uint8_t mac[6];
	int r;

	need = VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_NET_F_MAC) |
	       VIRTIO_BIT(VIRTIO_NET_F_STATUS) | VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF);
	if (d->pt->size > NETB_SMALL)
		need |= VIRTIO_BIT(VIRTIO_NET_F_CSUM) | VIRTIO_BIT(VIRTIO_NET_F_HOST_TSO4) |
			VIRTIO_BIT(VIRTIO_NET_F_GUEST_CSUM) | VIRTIO_BIT(VIRTIO_NET_F_GUEST_TSO4);
	r = drv_start(&d->k, VIRTIO_ID_NET, need, !d->opt.no_event_idx);
	if (r < 0)
		return r;
	/* struct virtio_net_config: mac[6], status (le16). */
	for (unsigned i = 0; i < 6; i++)
		mac[i] = (uint8_t)drv_config_read(&d->k, i, 1);
	v = drv_config_read(&d->k, 6, 2);
	if (memcmp(mac, guest_mac, 6) || !(v & VIRTIO_NET_S_LINK_UP)) {
		fprintf(stderr, "bench_net: configuration space: MAC %02x:%02x:%02x:%02x:%02x:%02x, "
			"status %#x (want the given MAC, link up)\n", mac[0], mac[1], mac[2], mac[3],
			mac[4], mac[5], v);
		return -EINVAL;
	}
	for (unsigned q = 0; q < 2; q++) {
		memset(d->q[q].busy, 0, sizeof(d->q[q].busy));
		d->q[q].n_busy = 0;
		r = drv_vq_setup(&d->k, &d->q[q].vq);
		if (r < 0)
			return r;
	}
	return drv_driver_ok(&d->k);
}

/* Put descriptor @i on @v's avail ring (published by drv_publish()). */
static void post(struct dq *v, unsigned i)
{
	v->busy[i] = true;
	v->n_busy++;
	drv_post(&v->vq, (uint16_t)i);
}

/* ------------------------------------------------------------------ */
/* TX                                                                  */

static uint8_t *tx_buf(struct drv *d, unsigned i)
{
	return gpa_ptr(d, GPA_TXBUF + i * TX_STRIDE, NETB_HDR + d->pt->size);
}

/* Stamp the next sequence number into TX buffer @i and post it. */
static void tx_post(struct drv *d, unsigned i)
{
	netb_set_seq(tx_buf(d, i) + NETB_HDR, NETB_TX, d->pt->size, d->tx_seq++);
	post(&d->q[TXQ], i);
}

/* Take every TX completion; repost each buffer while @refill. */
static void tx_reap(struct drv *d, bool refill)
{
	struct dq *v = &d->q[TXQ];
	uint64_t before = d->res->frames;

	do {
		uint16_t used_idx = drv_used_idx(&v->vq);

		while (v->vq.last_used != used_idx) {
			uint32_t id, len;

			drv_used_elem(&v->vq, v->vq.last_used++, &id, &len);
			if (id >= QUEUE_SIZE || !v->busy[id]) {
				drv_error(&d->k, "TX used element names descriptor %u, not one "
					  "posted", id);
				continue;
			}
			v->busy[id] = false;
			v->n_busy--;
			if (len != 0)
				drv_error(&d->k, "TX used length %u, want 0", len);
			d->res->frames++;
			d->res->bytes += d->pt->size;
			if (refill)
				tx_post(d, id);
		}
	} while (drv_rearm(&d->k, &v->vq));
	if (d->res->frames != before)
		d->k.last_progress = now_s();
}

/* ------------------------------------------------------------------ */
/* RX                                                                  */

static uint8_t *rx_buf(struct drv *d, unsigned i)
{
	return gpa_ptr(d, GPA_RXBUF + (uint64_t)i * RXBUF_LARGE, d->rxbuf);
}

/* Check one received frame spread over the buffers of used elements
 * [first, first + n) (lengths already checked against the buffers). */
static void rx_check(struct drv *d, uint16_t first, unsigned n, uint64_t total)
{
	const size_t size = d->pt->size;
	uint32_t id, len;
	const uint8_t *b0;
	uint64_t seq;
	size_t at;

	drv_used_elem(&d->q[RXQ].vq, first, &id, &len);
	b0 = rx_buf(d, id);
	if (!netb_is_ours(b0 + NETB_HDR, len - NETB_HDR, NETB_RX, size)) {
		d->res->foreign++;
		return;
	}
	if (total != NETB_HDR + size || netb_check_hdr(b0, size) < 0) {
		drv_error(&d->k, "frame of %" PRIu64 " bytes in %u buffers, GSO type %u size %u",
			  total, n, b0[1], b0[4] | b0[5] << 8);
		return;
	}
	seq = netb_get_seq(b0 + NETB_HDR, NETB_RX, size);
	if (seq != d->res->frames)
		drv_error(&d->k, "sequence number %" PRIu64 ", want %" PRIu64, seq, d->res->frames);
	if (d->opt.verify) {
		uint64_t off = 0;

		for (unsigned k = 0; k < n; k++) {
			drv_used_elem(&d->q[RXQ].vq, (uint16_t)(first + k), &id, &len);
			memcpy(d->frame + off, rx_buf(d, id), len);
			off += len;
		}
		if (netb_check_frame(d->frame + NETB_HDR, size, NETB_RX, size, seq, d->expect, &at) < 0)
			drv_error(&d->k, "frame %" PRIu64 " differs at byte %zu", seq, at);
		else
			d->res->verified++;
	}
	d->res->frames++;
	d->res->bytes += size;
}

/* Take every complete frame from the used ring and post its buffers
 * again.  Returns whether any frame came. */
static bool rx_reap(struct drv *d)
{
	struct dq *v = &d->q[RXQ];
	bool got = false;

	do {
		uint16_t used_idx = drv_used_idx(&v->vq);

		while (v->vq.last_used != used_idx) {
			uint16_t avail_n = (uint16_t)(used_idx - v->vq.last_used);
			uint32_t id, len;
			uint16_t nb;
			uint64_t total = 0;
			bool bad = false;

			drv_used_elem(&v->vq, v->vq.last_used, &id, &len);
			if (id >= QUEUE_SIZE || !v->busy[id] || len < NETB_HDR || len > d->rxbuf) {
				drv_error(&d->k, "RX used element %u: descriptor %u, length %u",
					     v->vq.last_used, id, len);
				return got;
			}
			memcpy(&nb, rx_buf(d, id) + 10, 2); /* num_buffers */
			if (nb == 0 || nb > MAX_NUM_BUFFERS) {
				drv_error(&d->k, "RX frame with num_buffers %u", nb);
				return got;
			}
			if (nb > avail_n)
				break; /* the rest of the frame is not used yet */
			for (uint16_t k = 0; k < nb; k++) {
				drv_used_elem(&v->vq, (uint16_t)(v->vq.last_used + k), &id, &len);
				if (id >= QUEUE_SIZE || !v->busy[id] || len > d->rxbuf ||
				    (k + 1 < nb && len != d->rxbuf))
					bad = true;
				total += len;
			}
			if (bad) {
				drv_error(&d->k, "RX frame over %u buffers with a bad element", nb);
				return got;
			}
			rx_check(d, v->vq.last_used, nb, total);
			for (uint16_t k = 0; k < nb; k++) {
				drv_used_elem(&v->vq, v->vq.last_used++, &id, &len);
				v->busy[id] = false;
				v->n_busy--;
				post(v, id);
			}
			got = true;
		}
	} while (drv_rearm(&d->k, &v->vq));
	return got;
}

/* ------------------------------------------------------------------ */
/* TX capture (--verify)                                               */

/* An AF_PACKET socket that sees what the tap receives.  Returns the fd or
 * -1 (reason printed). */
static int capture_open(const char *tap)
{
	struct sockaddr_ll sll;
	struct ifreq ifr;
	int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_ALL));
	int rcvbuf = 16 << 20;

	if (fd < 0) {
		fprintf(stderr, "bench_net: AF_PACKET: %s\n", strerror(errno));
		return -1;
	}
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", tap);
	memset(&sll, 0, sizeof(sll));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(ETH_P_ALL);
	if (ioctl(fd, SIOCGIFINDEX, &ifr) < 0 ||
	    (sll.sll_ifindex = ifr.ifr_ifindex,
	     bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0)) {
		fprintf(stderr, "bench_net: AF_PACKET on %s: %s\n", tap, strerror(errno));
		close(fd);
		return -1;
	}
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf));
	return fd;
}

/* Check every frame the capture holds that the tap received from us. */
static void capture_check(struct drv *d, int fd)
{
	const size_t size = d->pt->size;
	uint64_t last = 0;
	bool any = false;

	for (;;) {
		struct sockaddr_ll from;
		socklen_t fl = sizeof(from);
		ssize_t got = recvfrom(fd, d->frame, NETB_HDR + NETB_LARGE, MSG_TRUNC,
				       (struct sockaddr *)&from, &fl);
		uint64_t seq;
		size_t at = 0;

		if (got < 0)
			break;
		if (from.sll_pkttype == PACKET_OUTGOING ||
		    !netb_is_ours(d->frame, (size_t)got, NETB_TX, size))
			continue;
		seq = netb_get_seq(d->frame, NETB_TX, size);
		if ((any && seq <= last) ||
		    netb_check_frame(d->frame, (size_t)got, NETB_TX, size, seq, d->expect, &at) < 0)
			drv_error(&d->k, "the tap received frame %" PRIu64 " (%zd bytes) wrong at "
				  "byte %zu", seq, got, at);
		else
			d->res->verified++;
		any = true;
		last = seq;
	}
	if (!any)
		drv_error(&d->k, "the capture on the tap saw none of the frames");
}

/* ------------------------------------------------------------------ */
/* Points                                                              */

static void stats_delta(struct virtio_net_stats *out, const struct virtio_net_stats *a,
			const struct virtio_net_stats *b)
{
	out->tx_frames = b->tx_frames - a->tx_frames;
	out->tx_bytes = b->tx_bytes - a->tx_bytes;
	out->tx_dropped = b->tx_dropped - a->tx_dropped;
	out->rx_frames = b->rx_frames - a->rx_frames;
	out->rx_bytes = b->rx_bytes - a->rx_bytes;
	out->rx_dropped = b->rx_dropped - a->rx_dropped;
	out->tx_gso = b->tx_gso - a->tx_gso;
	out->rx_gso = b->rx_gso - a->rx_gso;
}

static int run_tx(struct drv *d, double seconds)
{
	struct dq *v = &d->q[TXQ];
	double t0, deadline;
	int cap = -1;

	for (unsigned i = 0; i < QUEUE_SIZE; i++) {
		netb_build(tx_buf(d, i), NETB_TX, d->pt->size, 0);
		drv_desc_set(&v->vq, i, GPA_TXBUF + i * TX_STRIDE,
			     (uint32_t)(NETB_HDR + d->pt->size), 0, 0);
	}
	if (d->opt.verify && (cap = capture_open(d->tap)) < 0)
		return -1;
	t0 = now_s();
	deadline = t0 + seconds;
	d->k.last_progress = t0;
	for (unsigned i = 0; i < QUEUE_SIZE; i++)
		tx_post(d, i);
	drv_publish(&d->k, &d->q[TXQ].vq);
	while (v->n_busy) {
		bool more;

		if (drv_wait_interrupt(&d->k) < 0)
			break;
		more = now_s() < deadline;
		tx_reap(d, more);
		if (more)
			drv_publish(&d->k, &d->q[TXQ].vq);
	}
	d->res->seconds = now_s() - t0;
	if (cap >= 0) {
		capture_check(d, cap);
		close(cap);
	}
	return 0;
}

static int run_rx(struct drv *d)
{
	struct dq *v = &d->q[RXQ];
	uint64_t want;
	double t0;

	for (unsigned i = 0; i < QUEUE_SIZE; i++)
		drv_desc_set(&v->vq, i, GPA_RXBUF + (uint64_t)i * RXBUF_LARGE, d->rxbuf,
			     VIRTQ_DESC_F_WRITE, 0);
	want = netb_ready_go();
	if (!want) {
		fprintf(stderr, "bench_net: %s: no \"go N\" on stdin\n", d->pt->name);
		d->res->c.errors++;
		return -1;
	}
	/* The device has been reading nothing so far: no buffers. */
	t0 = now_s();
	d->k.last_progress = t0;
	for (unsigned i = 0; i < QUEUE_SIZE; i++)
		post(v, i);
	drv_publish(&d->k, &d->q[RXQ].vq);
	while (d->res->frames < want && !d->res->c.errors) {
		if (drv_wait_interrupt(&d->k) < 0)
			break;
		if (rx_reap(d))
			d->k.last_progress = now_s();
		drv_publish(&d->k, &d->q[RXQ].vq);
	}
	d->res->seconds = now_s() - t0;
	return 0;
}

/* Run one point for @seconds.  Returns 0, or -1 when it failed. */
static int run_point(struct drv *d, const struct point *pt, double seconds, struct result *res)
{
	const struct dq *v = &d->q[pt->dir == NETB_TX ? TXQ : RXQ];
	struct virtio_net_stats before;
	double cpu0;

	memset(res, 0, sizeof(*res));
	drv_begin(&d->k, &res->c, "%s", pt->name);
	d->res = res;
	d->pt = pt;
	d->tx_seq = 0;
	d->rxbuf = pt->size > NETB_SMALL ? RXBUF_LARGE : RXBUF_SMALL;
	if (drv_probe(d) < 0) {
		drv_end(&d->k);
		d->res = NULL;
		res->c.errors++;
		return -1;
	}
	before = d->net.stats;
	cpu0 = cpu_s();
	if (pt->dir == NETB_TX)
		(void)run_tx(d, seconds);
	else
		(void)run_rx(d);
	res->cpu_seconds = cpu_s() - cpu0;
	stats_delta(&res->dev, &before, &d->net.stats);
	if (res->c.hung)
		fprintf(stderr, "bench_net: %s: HANG: nothing for %.0f s; %s queue: driver avail idx "
			"%u, used idx seen %u, used->idx %u, posted %u; device rx %" PRIu64
			" tx %" PRIu64 " frames\n", pt->name, DRV_HANG_S,
			pt->dir == NETB_TX ? "TX" : "RX", v->vq.avail_idx, v->vq.last_used,
			drv_used_idx(&v->vq), v->n_busy, res->dev.rx_frames, res->dev.tx_frames);
	if (res->c.needs_reset)
		fprintf(stderr, "bench_net: %s: the device set NEEDS_RESET\n", pt->name);
	if (pt->dir == NETB_TX && !res->c.hung &&
	    (res->dev.tx_dropped || res->dev.tx_frames != res->frames))
		drv_error(&d->k, "the device wrote %" PRIu64 " frames to the tap and dropped %"
			  PRIu64 "; the driver got %" PRIu64 " back", res->dev.tx_frames,
			  res->dev.tx_dropped, res->frames);
	if (pt->dir == NETB_RX && res->dev.rx_dropped)
		drv_error(&d->k, "the device dropped %" PRIu64 " frames", res->dev.rx_dropped);
	if (res->c.hung || res->c.needs_reset)
		res->c.errors++;
	drv_end(&d->k);
	d->res = NULL;
	return res->c.errors ? -1 : 0;
}

/* ------------------------------------------------------------------ */
/* Set-up                                                              */

/* The fake guest with virtio-net on tap @tap (opened, or created).
 * Returns 0 or -errno (reason printed); on failure too, teardown() must
 * follow. */
static int setup(struct drv *d, const char *tap)
{
	struct virtio_net_config_opts opts = { .tap = tap, .mac = NETB_GUEST_MAC, .mac_given = true };
	char err[320];
	int r;

	d->tap = tap;
	r = drv_init(&d->k, "bench_net", RAM_BYTES);
	if (r < 0)
		return r;
	d->expect = malloc(NETB_HDR + NETB_LARGE);
	d->frame = malloc(NETB_HDR + NETB_LARGE + 4096);
	if (!d->expect || !d->frame)
		return -ENOMEM;
	for (unsigned q = 0; q < 2; q++)
		drv_vq_init(&d->k, &d->q[q].vq, q, GPA_QUEUES + DRV_VQ_BYTES * q);
	r = virtio_net_init(&d->net, &d->k.gm, &d->k.loop, &opts, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "bench_net: %s\n", err);
		return r;
	}
	d->net_up = true;
	d->k.pci = d->opt.pci;
	return drv_attach(&d->k, &d->net.dev);
}

static void teardown(struct drv *d)
{
	drv_detach(&d->k);
	if (d->net_up)
		virtio_net_exit(&d->net);
	drv_exit(&d->k);
	free(d->expect);
	free(d->frame);
}

/* ------------------------------------------------------------------ */
/* Arguments                                                           */

#define MAX_POINTS 16

/* "all" or NAME[,...] into @pts.  Returns the count or -1. */
static int parse_points(const char *arg, const struct point **pts)
{
	char buf[256], *save = NULL, *tok;
	int n = 0;

	if (!strcmp(arg, "all")) {
		for (unsigned i = 0; i < N_ALL; i++)
			pts[n++] = &all_points[i];
		return n;
	}
	if (strlen(arg) >= sizeof(buf))
		return -1;
	strcpy(buf, arg);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		unsigned i;

		for (i = 0; i < N_ALL && strcmp(tok, all_points[i].name); i++)
			;
		if (i == N_ALL || n >= MAX_POINTS)
			return -1;
		pts[n++] = &all_points[i];
	}
	return n;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: bench_net_harness --tap NAME [options]\n"
		"  --tap NAME       the tap interface (opened, or created if missing)\n"
		"  --points LIST    all (default) or comma-separated tx64, rx64, tx64k, rx64k\n"
		"  --time S         seconds per TX point (default 3)\n"
		"  --verify         compare every byte (TX: through an AF_PACKET capture)\n"
		"  --pci            the device on virtio-pci with MSI-X (default: virtio-mmio)\n"
		"  --no-event-idx   do not negotiate VIRTIO_F_EVENT_IDX\n"
		"  --json           one JSON object per point instead of a table\n"
		"An RX point prints \"ready\" and waits for \"go N\" on stdin; by then N frames\n"
		"must be queued in the tap: net_floor inject --tap NAME --size 64|64k --count N\n");
}

int main(int argc, char **argv)
{
	static struct drv drv;
	struct drv *d = &drv;
	const struct point *pts[MAX_POINTS];
	const char *tap = NULL;
	double seconds = 3.0;
	int n_points = -1, status = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--tap") && v) {
			tap = v;
			i++;
		} else if (!strcmp(a, "--points") && v) {
			n_points = parse_points(v, pts);
			if (n_points < 0) {
				fprintf(stderr, "bench_net: bad --points %s\n", v);
				return 2;
			}
			i++;
		} else if (!strcmp(a, "--time") && v) {
			seconds = strtod(v, NULL);
			if (!(seconds > 0)) {
				usage(stderr);
				return 2;
			}
			i++;
		} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else if (!drv_opt_flag(&d->opt, a)) {
			usage(stderr);
			return 2;
		}
	}
	if (!tap) {
		usage(stderr);
		return 2;
	}
	if (n_points < 0)
		n_points = parse_points("all", pts);
	if (setup(d, tap) < 0) {
		teardown(d);
		return 2;
	}
	if (!d->opt.json)
		printf("%-7s %12s %10s %8s %10s %8s %8s %8s\n", "point", "frames/s", "Gbit/s", "errors",
		       "frames", "kicks/f", "irqs/f", "us/f");
	for (int i = 0; i < n_points; i++) {
		const struct point *pt = pts[i];
		struct result res;
		int r = run_point(d, pt, seconds, &res);
		double fps = res.seconds > 0 ? (double)res.frames / res.seconds : 0;
		double gbps = res.seconds > 0 ? (double)res.bytes * 8 / res.seconds / 1e9 : 0;
		double per = res.frames ? 1.0 / (double)res.frames : 0;

		if (d->opt.json)
			printf("{\"point\": \"%s\", \"dir\": \"%s\", \"size\": %zu, \"seconds\": %.6f, "
			       "\"frames\": %" PRIu64 ", \"bytes\": %" PRIu64 ", \"fps\": %.1f, "
			       "\"gbps\": %.4f, \"errors\": %" PRIu64 ", \"foreign\": %" PRIu64 ", "
			       "\"verified\": %" PRIu64 ", \"kicks\": %" PRIu64 ", \"interrupts\": %"
			       PRIu64 ", \"cpu_seconds\": %.4f, \"dev_tx_frames\": %" PRIu64 ", "
			       "\"dev_tx_dropped\": %" PRIu64 ", \"dev_tx_gso\": %" PRIu64 ", "
			       "\"dev_rx_frames\": %" PRIu64 ", \"dev_rx_dropped\": %" PRIu64 ", "
			       "\"dev_rx_gso\": %" PRIu64 ", \"hung\": %s, \"needs_reset\": %s, "
			       "\"event_idx\": %s}\n",
			       pt->name, pt->dir == NETB_TX ? "tx" : "rx", pt->size, res.seconds,
			       res.frames, res.bytes, fps, gbps, res.c.errors, res.foreign,
			       res.verified, res.c.kicks, res.c.interrupts, res.cpu_seconds,
			       res.dev.tx_frames, res.dev.tx_dropped, res.dev.tx_gso,
			       res.dev.rx_frames, res.dev.rx_dropped, res.dev.rx_gso,
			       res.c.hung ? "true" : "false", res.c.needs_reset ? "true" : "false",
			       d->k.event_idx ? "true" : "false");
		else
			printf("%-7s %12.0f %10.3f %8" PRIu64 " %10" PRIu64 " %8.3f %8.3f %8.3f\n",
			       pt->name, fps, gbps, res.c.errors, res.frames,
			       (double)res.c.kicks * per, (double)res.c.interrupts * per, res.cpu_seconds * 1e6 * per);
		fflush(stdout);
		if (r < 0) {
			status = 1;
			if (res.c.hung || res.c.needs_reset)
				return 1; /* the device is stuck: no teardown */
		}
	}
	teardown(d);
	return status;
}

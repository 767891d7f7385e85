// SPDX-License-Identifier: MIT
/*
 * virtio-net (virtio 1.2, section 5.1) over a tap (src/net/tap.c).
 *
 * Queue pairs: RX queue 2k and TX queue 2k+1 move frames through tap queue
 * k.  With more than one pair (--net ...,queues=N) the tap is a multi-queue
 * tap (IFF_MULTI_QUEUE, one descriptor per pair) and the device offers MQ
 * and a control queue (index 2N); the driver starts with one pair and asks
 * for more with VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET; the tap queues of the
 * pairs not in use are detached, so the kernel steers no frames to them.
 * Everything runs on the event loop thread under dev.lock: queue
 * notifications (the transport holds the lock around ops->queue_notify)
 * and the taps' readiness (on_tap(), which takes it).
 *
 * TX: each chain is a 12-byte virtio_net_hdr_v1 and a frame; it goes to the
 * tap with one writev() straight from guest memory, the guest's header
 * being the tap's vnet header.  A chain no driver would send (header short,
 * frame over VIRTIO_NET_MAX_FRAME, device-writable buffers) is dropped,
 * counted and handed back with 0 bytes written.  When the tap says EAGAIN
 * the chain is kept, TX stops and the tap is watched for EPOLLOUT; TX goes
 * on from that chain once it is writable.
 *
 * RX: a frame is read from the tap only when at least one RX chain is
 * held, into a bounce buffer big enough for any frame, then copied into
 * the chains.  With MRG_RXBUF a frame spans as many chains as it needs
 * (num_buffers in the header of the first); without, it must fit one chain
 * or it is dropped.  When the chains run out, the frame stays in the bounce
 * buffer, the tap's EPOLLIN is switched off, and the next RX notification
 * (the guest posted buffers) resumes: a frame read is never lost to a
 * shortage of buffers, and a guest that posts none never makes vmrun spin.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <unistd.h>

#include "vmrun/guest_mem.h"
#include "vmrun/log.h"
#include "vmrun/state.h"
#include "vmrun/tap.h"
#include "vmrun/virtio_net.h"

#define BOUNCE_BYTES (VIRTIO_NET_HDR_BYTES + VIRTIO_NET_MAX_FRAME)
/* Frames moved per tap wake-up before other sources get their turn (the
 * tap is level-triggered: what is left fires again). */
#define RX_BATCH 64
/* rx_direct() only when a frame of any size fits this many buffers. */
#define RX_DIRECT_MAX_SEGS 24

_Static_assert(VIRTIO_NET_HDR_BYTES == TAP_VNET_HDR_BYTES, "the tap carries the guest's header");

/* An RX chain taken from the avail ring and not yet used: its writable
 * segments live in net_pair.segs[first .. first + n). */
struct rx_chain {
	uint16_t head;
	unsigned first, n;
	uint64_t bytes;
};

/* One queue pair and its tap queue. */
struct net_pair {
	struct virtio_net *n;
	unsigned rxq, txq;        /* queue indices: 2k, 2k + 1 */
	struct tap tap;
	struct ev_source src;     /* the tap queue on the event loop */
	uint32_t watching;        /* events src is registered for */
	bool eof;                 /* the tap is gone (deleted, or a test's socket closed):
				   * no longer watched, link down */
	bool in_loop;             /* src is in the event loop (attached, not gone) */
	/* TX: a chain the tap refused with EAGAIN, to send first. */
	struct virtq_req *tx_held;
	bool tx_blocked;
	/* RX: the held chains (at most the queue's size) and their segments. */
	struct rx_chain chains[VIRTQ_MAX_SIZE];
	unsigned n_chains;
	struct virtq_seg *segs;
	unsigned n_segs, segs_cap;
	uint8_t *bounce;          /* header + frame read from the tap */
	size_t bounce_len;        /* 0: empty */
	struct iovec *iov;        /* VIRTQ_MAX_SIZE entries, for writev */
	uint64_t mark_gpa, mark_len; /* rx_copy()'s dirty run not yet marked */
	uint16_t push_heads[VIRTQ_MAX_SIZE]; /* a frame's chains, for virtq_push_n() */
	uint32_t push_lens[VIRTQ_MAX_SIZE];
};

struct net_priv {
	struct virtio_net *n;
	struct net_pair pairs[VIRTIO_NET_MAX_PAIRS];
	unsigned n_pairs;         /* configured (tap queues opened) */
	unsigned active_pairs;    /* in use: 1, or what VQ_PAIRS_SET asked for */
	unsigned ctrl_q;          /* the control queue's index; n_pairs * 2 + 1 when none */
	bool mrg_rxbuf;
	bool guest_csum;          /* GUEST_CSUM negotiated: RX flags pass through */
	bool active;              /* activate() ran, no reset since */
	bool link_lost;           /* a tap queue went away: link down for good */
	bool quiesced;            /* virtio_net_quiesce(): nothing touches guest RAM */
	struct virtq_req *scratch;
	unsigned warned;          /* rate limit for guest-caused warnings */
};

static void put_le16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

/* A warning the guest can cause: the first few only. */
static void net_warn(struct virtio_net *n, const char *what)
{
	struct net_priv *p = n->priv;

	if (p->warned < 8)
		log_warn("%s: %s%s", n->name, what, ++p->warned == 8 ? " (no more such warnings)" : "");
}

static bool running(const struct virtio_net *n)
{
	const struct net_priv *p = n->priv;

	return p->active && (n->dev.status & VIRTIO_STATUS_DRIVER_OK) &&
	       !(n->dev.status & VIRTIO_STATUS_NEEDS_RESET) && virtio_device_dma_allowed(&n->dev);
}

/* Watch pair @q's tap queue for @events (EPOLLIN: frames to read;
 * EPOLLOUT: room to write).  dev.lock held. */
static void watch(struct net_pair *q, uint32_t events)
{
	if (events == q->watching || !q->n->loop || q->eof)
		return;
	if (evloop_modify(q->n->loop, &q->src, events) < 0)
		log_warn("%s: epoll on tap %s: %s", q->n->name, q->tap.name, strerror(errno));
	q->watching = events;
}

static void interrupt(struct virtio_net *n, unsigned q)
{
	if (virtq_should_interrupt(&n->vqs[q]))
		n->dev.interrupt_used(&n->dev, q);
}

/* ---- TX ---- */

/* Send @req's frame.  Returns 1 when the chain is done with (sent or
 * dropped: the caller pushes it), 0 when the tap is full (EAGAIN). */
static int tx_one(struct net_pair *q, const struct virtq_req *req)
{
	struct virtio_net *n = q->n;
	struct net_priv *p = n->priv;
	ssize_t w;
	int cnt;

	if (req->n_in || req->out_bytes < VIRTIO_NET_HDR_BYTES ||
	    req->out_bytes > VIRTIO_NET_HDR_BYTES + VIRTIO_NET_MAX_FRAME) {
		net_warn(n, req->n_in ? "TX chain with device-writable buffers dropped" :
			    req->out_bytes < VIRTIO_NET_HDR_BYTES ? "TX chain shorter than the header dropped" :
								     "TX frame too long dropped");
		n->stats.tx_dropped++;
		return 1;
	}
	cnt = virtq_req_iov(req, false, 0, req->out_bytes, q->iov, VIRTQ_MAX_SIZE);
	if (cnt < 0) { /* cannot happen: n_out <= VIRTQ_MAX_SIZE */
		n->stats.tx_dropped++;
		return 1;
	}
	do
		w = writev(q->tap.fd, q->iov, cnt);
	while (w < 0 && errno == EINTR);
	if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return 0;
	if (w < 0) {
		/* EINVAL for a GSO header the tap refuses, EIO while it is down... */
		if (p->warned < 8) {
			char why[128];

			snprintf(why, sizeof(why), "tap %s refused a frame: %s", q->tap.name,
				 strerror(errno));
			net_warn(n, why);
		}
		n->stats.tx_dropped++;
		return 1;
	}
	n->stats.tx_frames++;
	n->stats.tx_bytes += req->out_bytes - VIRTIO_NET_HDR_BYTES;
	if (q->iov[0].iov_len >= 2 && ((const uint8_t *)q->iov[0].iov_base)[1])
		n->stats.tx_gso++; /* gso_type, byte 1 of the header */
	return 1;
}

/* Send what pair @q's TX queue holds, the held chain first.  dev.lock
 * held. */
static void tx_run(struct net_pair *q)
{
	struct virtio_net *n = q->n;
	struct net_priv *p = n->priv;
	struct virtq *vq = &n->vqs[q->txq];
	bool pushed = false;
	int r;

	if (!vq->ready)
		return;
	if (q->tx_held) {
		if (!tx_one(q, q->tx_held))
			return; /* still full: EPOLLOUT stays on */
		(void)virtq_push(vq, q->tx_held->head, 0);
		pushed = true;
		free(q->tx_held);
		q->tx_held = NULL;
	}
	q->tx_blocked = false;
	watch(q, q->watching & ~(uint32_t)EPOLLOUT);
	do {
		virtq_notify_disable(vq);
		while ((r = virtq_pop(vq, p->scratch)) == 1) {
			if (!tx_one(q, p->scratch)) {
				/* Keep the chain; notifications stay off until the tap drains. */
				q->tx_held = p->scratch;
				p->scratch = malloc(sizeof(*p->scratch));
				if (!p->scratch) {
					p->scratch = q->tx_held;
					q->tx_held = NULL;
					(void)virtq_push(vq, p->scratch->head, 0);
					n->stats.tx_dropped++;
					net_warn(n, "out of memory: TX frame dropped");
					continue;
				}
				q->tx_blocked = true;
				watch(q, q->watching | EPOLLOUT);
				goto out;
			}
			(void)virtq_push(vq, p->scratch->head, 0);
			pushed = true;
		}
		if (r < 0) {
			n->dev.needs_reset(&n->dev, "malformed TX descriptor chain");
			goto out;
		}
	} while (virtq_notify_enable(vq));
out:
	if (pushed)
		interrupt(n, q->txq);
}

/* ---- RX ---- */

/* The tap is gone for good: the interface was deleted (reads fail with
 * EBADFD and epoll reports EPOLLERR whatever we ask for), or the socket a
 * test stands in for it was closed.  Stop watching it, or the loop would
 * spin on its error, and tell the driver the link is down.  dev.lock held. */
static void tap_lost(struct net_pair *q, const char *why)
{
	struct virtio_net *n = q->n;
	struct net_priv *p = n->priv;

	if (q->eof)
		return;
	if (n->loop && q->in_loop)
		evloop_remove(n->loop, &q->src);
	q->in_loop = false;
	q->eof = true;
	q->watching = 0;
	if (p->link_lost)
		return; /* said once, for the first queue of the tap */
	log_warn("%s: tap %s %s; the link is down", n->name, q->tap.name, why);
	p->link_lost = true;
	n->link_up = false;
	put_le16(n->config + 6, 0);
	n->dev.config_generation++;
	if (n->dev.status & VIRTIO_STATUS_DRIVER_OK)
		n->dev.interrupt_config(&n->dev);
}

static void rx_drop_chains(struct net_pair *q)
{
	q->n_chains = 0;
	q->n_segs = 0;
}

/* Take one more RX chain from pair @q's avail ring into q->chains.
 * Returns 1, 0 when there is none, -EINVAL for a malformed ring or chain
 * (the device then needs a reset). */
static int rx_take_chain(struct net_pair *q)
{
	struct virtio_net *n = q->n;
	struct net_priv *p = n->priv;
	struct virtq_req *req = p->scratch;
	struct rx_chain *c;
	int r;

	if (q->n_chains >= n->vqs[q->rxq].size)
		return 0;
	r = virtq_pop(&n->vqs[q->rxq], req);
	if (r <= 0)
		return r;
	if (req->n_out || req->in_bytes < VIRTIO_NET_HDR_BYTES)
		return -EINVAL; /* no driver posts these: RX chains are writable, header included */
	if (q->n_segs + req->n_in > q->segs_cap) {
		unsigned cap = q->segs_cap * 2 > q->n_segs + req->n_in ? q->segs_cap * 2 :
									    q->n_segs + req->n_in;
		struct virtq_seg *s = realloc(q->segs, cap * sizeof(*s));

		if (!s)
			return -ENOMEM;
		q->segs = s;
		q->segs_cap = cap;
	}
	c = &q->chains[q->n_chains++];
	c->head = req->head;
	c->first = q->n_segs;
	c->n = req->n_in;
	c->bytes = req->in_bytes;
	memcpy(q->segs + q->n_segs, req->in, req->n_in * sizeof(*req->in));
	q->n_segs += req->n_in;
	return 1;
}

/* Copy @len bytes of @src to offset @off of chain @c; mark them dirty. */
static void rx_copy(struct net_pair *q, const struct rx_chain *c, uint64_t off, const uint8_t *src,
		    uint64_t len)
{
	for (unsigned i = 0; i < c->n && len; i++) {
		const struct virtq_seg *s = &q->segs[c->first + i];
		uint64_t k;

		if (off >= s->len) {
			off -= s->len;
			continue;
		}
		k = s->len - off < len ? s->len - off : len;
		memcpy((uint8_t *)s->host + off, src, k);
		/* Extends the pending run when contiguous (rx_mark_flush()). */
		if (q->mark_len && q->mark_gpa + q->mark_len == s->gpa + off) {
			q->mark_len += k;
		} else {
			if (q->mark_len)
				guest_mem_mark_dirty(q->n->mem, q->mark_gpa, q->mark_len);
			q->mark_gpa = s->gpa + off;
			q->mark_len = k;
		}
		src += k;
		len -= k;
		off = 0;
	}
}

/* Mark dirty what rx_copy() wrote since the last call, as few runs as the
 * guest addresses allow; before the chains are pushed. */
static void rx_mark_flush(struct net_pair *q)
{
	if (q->mark_len)
		guest_mem_mark_dirty(q->n->mem, q->mark_gpa, q->mark_len);
	q->mark_len = 0;
}

/* Forget the first @k held chains (they were pushed). */
static void rx_consume(struct net_pair *q, unsigned k)
{
	unsigned segs = 0;

	if (k == q->n_chains) {
		rx_drop_chains(q);
		return;
	}
	for (unsigned i = 0; i < k; i++)
		segs += q->chains[i].n;
	memmove(q->chains, q->chains + k, (q->n_chains - k) * sizeof(q->chains[0]));
	q->n_chains -= k;
	memmove(q->segs, q->segs + segs, (q->n_segs - segs) * sizeof(q->segs[0]));
	q->n_segs -= segs;
	for (unsigned i = 0; i < q->n_chains; i++)
		q->chains[i].first -= segs;
}

/* Hand the first @k held chains to the driver, @total bytes of frame in
 * them in order (the bytes in place and marked dirty), in one used-ring
 * update; forget them and count the frame. */
static void rx_push_frame(struct net_pair *q, unsigned k, uint64_t total)
{
	struct virtio_net *n = q->n;
	uint64_t left = total;

	for (unsigned i = 0; i < k; i++) {
		uint64_t len = left < q->chains[i].bytes ? left : q->chains[i].bytes;

		q->push_heads[i] = q->chains[i].head;
		q->push_lens[i] = (uint32_t)len;
		left -= len;
	}
	(void)virtq_push_n(&n->vqs[q->rxq], q->push_heads, q->push_lens, k);
	rx_consume(q, k);
	n->stats.rx_frames++;
	n->stats.rx_bytes += total - VIRTIO_NET_HDR_BYTES;
}

/* Deliver the frame in the bounce buffer.  Returns 1 when it is gone
 * (delivered or dropped), 0 when more chains are needed, -EINVAL for a
 * malformed RX chain. */
static int rx_deliver(struct net_pair *q, bool *pushed)
{
	struct virtio_net *n = q->n;
	struct net_priv *p = n->priv;
	struct virtq *vq = &n->vqs[q->rxq];
	uint64_t need = q->bounce_len, have = 0, off = 0;
	unsigned k = 0;
	int r;

	/* Section 5.1.6.4.1: without GUEST_CSUM the flags must be zero.  The
	 * tap sets DATA_VALID on frames the host already checked whatever
	 * its offloads (e.g. from a NIC that verifies checksums), so clear
	 * them here; NEEDS_CSUM and GSO it sends only with the offloads. */
	if (!p->guest_csum)
		q->bounce[0] = 0;

	if (!p->mrg_rxbuf) {
		if (!q->n_chains && (r = rx_take_chain(q)) <= 0)
			return r;
		if (q->chains[0].bytes < need) {
			/* Without MRG_RXBUF a chain holds a whole frame: this one never fits. */
			n->stats.rx_dropped++;
			net_warn(n, "RX chain too small for a frame (no MRG_RXBUF): frame dropped");
			return 1;
		}
		put_le16(q->bounce + 10, 1); /* num_buffers */
		rx_copy(q, &q->chains[0], 0, q->bounce, need);
		k = 1;
		goto push;
	}
	for (;;) {
		for (; k < q->n_chains && have < need; k++)
			have += q->chains[k].bytes;
		if (have >= need)
			break;
		r = rx_take_chain(q);
		if (r < 0)
			return r;
		if (r == 0) {
			if (q->n_chains >= vq->size) {
				/* Every buffer of the queue is held and still too few. */
				n->stats.rx_dropped++;
				net_warn(n, "RX queue too small for a frame: frame dropped");
				return 1;
			}
			return 0;
		}
	}
	put_le16(q->bounce + 10, (uint16_t)k);
	for (unsigned i = 0; i < k; i++) {
		uint64_t len = need - off < q->chains[i].bytes ? need - off : q->chains[i].bytes;

		rx_copy(q, &q->chains[i], 0, q->bounce + off, len);
		off += len;
	}
push:
	/* The whole frame marked (one run when the buffers are contiguous),
	 * then handed over. */
	rx_mark_flush(q);
	rx_push_frame(q, k, need);
	*pushed = true;
	if (q->bounce[1])
		n->stats.rx_gso++;
	return 1;
}

/* Mark [@gpa, @gpa + @len) dirty, joined with the pending run when it
 * continues it (flushed by rx_mark_flush()). */
static void rx_mark(struct net_pair *q, uint64_t gpa, uint64_t len)
{
	if (q->mark_len && q->mark_gpa + q->mark_len == gpa) {
		q->mark_len += len;
		return;
	}
	rx_mark_flush(q);
	q->mark_gpa = gpa;
	q->mark_len = len;
}

/* With MRG_RXBUF: read the next frame straight into the held RX chains
 * (one readv(), host-contiguous buffers joined into one iovec entry), with
 * no bounce buffer and no second copy.  The chains held must be able to
 * take a frame of any size first.  Returns 1 when a frame was handled
 * (delivered, or dropped as shorter than the header), 0 when the guest has
 * not posted enough buffers for that (the caller reads into the bounce
 * buffer instead, which needs only what the frame takes), -EAGAIN when
 * the tap is empty, -EPIPE when it is gone (errno says why), or -EINVAL /
 * -ENOMEM from taking a chain. */
static int rx_direct(struct net_pair *q, bool *pushed)
{
	struct virtio_net *n = q->n;
	struct net_priv *p = n->priv;
	uint64_t have = 0, left;
	unsigned k = 0, cnt = 0, used;
	uint8_t le[2];
	ssize_t got;
	int r;

	if (!p->mrg_rxbuf)
		return 0;
	/* Small buffers (what drivers post for small packets) would need a
	 * long iovec for every frame, and cost more than the copy: judged by
	 * the first chain, the bounce path takes them. */
	if (q->n_chains &&
	    q->chains[0].bytes * RX_DIRECT_MAX_SEGS < (uint64_t)BOUNCE_BYTES * q->chains[0].n)
		return 0;
	for (;;) {
		for (; k < q->n_chains && have < BOUNCE_BYTES; k++)
			have += q->chains[k].bytes;
		if (have >= BOUNCE_BYTES)
			break;
		r = rx_take_chain(q);
		if (r <= 0)
			return r;
	}
	for (unsigned c = 0; c < k; c++) {
		for (unsigned i = 0; i < q->chains[c].n; i++) {
			const struct virtq_seg *sg = &q->segs[q->chains[c].first + i];

			if (cnt && (uint8_t *)q->iov[cnt - 1].iov_base + q->iov[cnt - 1].iov_len ==
					   (uint8_t *)sg->host) {
				q->iov[cnt - 1].iov_len += sg->len;
				continue;
			}
			if (cnt == VIRTQ_MAX_SIZE)
				return 0; /* too scattered: the bounce path copes */
			q->iov[cnt].iov_base = sg->host;
			q->iov[cnt++].iov_len = sg->len;
		}
	}
	do
		got = readv(q->tap.fd, q->iov, (int)cnt);
	while (got < 0 && errno == EINTR);
	if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return -EAGAIN;
	if (got <= 0) {
		if (!got)
			errno = 0;
		return -EPIPE;
	}
	if (got < VIRTIO_NET_HDR_BYTES) {
		n->stats.rx_dropped++; /* nothing used: the chains stay held */
		return 1;
	}
	for (used = 0, have = 0; have < (uint64_t)got; used++)
		have += q->chains[used].bytes;
	/* The header as the driver must see it: flags cleared without
	 * GUEST_CSUM (see rx_deliver()), num_buffers set. */
	if (!p->guest_csum)
		rx_copy(q, &q->chains[0], 0, (const uint8_t[]){ 0 }, 1);
	le[0] = (uint8_t)used;
	le[1] = (uint8_t)(used >> 8);
	rx_copy(q, &q->chains[0], 10, le, 2);
	{
		const struct virtq_seg *s0 = &q->segs[q->chains[0].first];

		if (s0->len >= 2 && ((const uint8_t *)s0->host)[1])
			n->stats.rx_gso++; /* gso_type, header byte 1 */
	}
	left = (uint64_t)got;
	for (unsigned c = 0; c < used && left; c++) {
		for (unsigned i = 0; i < q->chains[c].n && left; i++) {
			const struct virtq_seg *sg = &q->segs[q->chains[c].first + i];
			uint64_t part = sg->len < left ? sg->len : left;

			rx_mark(q, sg->gpa, part);
			left -= part;
		}
	}
	rx_mark_flush(q);
	rx_push_frame(q, used, (uint64_t)got);
	*pushed = true;
	return 1;
}

/* Move frames from the tap into the guest while both have some; decide
 * whether to keep watching the tap for EPOLLIN.  dev.lock held. */
static void rx_run(struct net_pair *q)
{
	struct virtio_net *n = q->n;
	struct virtq *vq = &n->vqs[q->rxq];
	bool pushed = false, want_in = true;
	int r = 0;

	if (!vq->ready) {
		watch(q, q->watching & ~(uint32_t)EPOLLIN);
		return;
	}
	for (unsigned done = 0; done < RX_BATCH;) {
		if (!q->bounce_len) {
			ssize_t got;

			if (!q->n_chains) {
				virtq_notify_disable(vq);
				r = rx_take_chain(q);
				if (r == 0 && virtq_notify_enable(vq))
					r = rx_take_chain(q); /* posted meanwhile */
				if (r < 0)
					goto bad;
				if (r == 0) {
					want_in = false; /* no buffers: wait for the RX notify */
					break;
				}
			}
			r = rx_direct(q, &pushed);
			if (r == 1) {
				done++;
				continue;
			}
			if (r == -EAGAIN)
				break; /* tap empty: EPOLLIN stays on */
			if (r == -EPIPE) {
				char why[96];

				snprintf(why, sizeof(why), "cannot be read (%s)",
					 errno ? strerror(errno) : "end of file");
				tap_lost(q, why);
				return;
			}
			if (r < 0)
				goto bad;
			do
				got = read(q->tap.fd, q->bounce, BOUNCE_BYTES);
			while (got < 0 && errno == EINTR);
			if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break; /* tap empty: EPOLLIN stays on */
			if (got <= 0) {
				char why[96];

				snprintf(why, sizeof(why), "cannot be read (%s)",
					 got ? strerror(errno) : "end of file");
				tap_lost(q, why);
				return;
			}
			if (got < VIRTIO_NET_HDR_BYTES) {
				n->stats.rx_dropped++;
				done++;
				continue;
			}
			q->bounce_len = (size_t)got;
		}
		r = rx_deliver(q, &pushed);
		if (r < 0)
			goto bad;
		if (r == 0) {
			/* Out of chains with a frame in hand: notifications on, and
			 * try again if buffers came in meanwhile. */
			if (virtq_notify_enable(vq))
				continue;
			want_in = false;
			break;
		}
		q->bounce_len = 0;
		done++;
	}
	if (pushed)
		interrupt(n, q->rxq);
	watch(q, want_in ? q->watching | EPOLLIN : q->watching & ~(uint32_t)EPOLLIN);
	return;
bad:
	if (pushed)
		interrupt(n, q->rxq);
	watch(q, q->watching & ~(uint32_t)EPOLLIN);
	n->dev.needs_reset(&n->dev, r == -ENOMEM ? "out of memory for RX chains" :
				     "malformed RX descriptor chain");
}

/* ---- control queue (MQ) ---- */

/* Attach the tap queues of pairs [0, @pairs) and detach the others, so the
 * kernel steers frames only to queues the driver uses; a detached queue
 * leaves the event loop (it would poll as EPOLLERR).  dev.lock held. */
static int set_active_pairs(struct virtio_net *n, unsigned pairs)
{
	struct net_priv *p = n->priv;
	char why[200];
	int r = 0;

	for (unsigned k = 0; k < p->n_pairs && p->n_pairs > 1; k++) {
		struct net_pair *q = &p->pairs[k];
		bool on = k < pairs;

		if (q->eof)
			continue;
		if (!on && q->in_loop) {
			if (n->loop)
				evloop_remove(n->loop, &q->src);
			q->in_loop = false;
			q->watching = 0;
		}
		if (tap_set_queue_enabled(&q->tap, on, why, sizeof(why)) < 0) {
			log_warn("%s: %s", n->name, why);
			r = -EIO;
			continue;
		}
		if (on && !q->in_loop) {
			if (n->loop && evloop_add(n->loop, &q->src, 0) < 0) {
				log_warn("%s: epoll on tap %s queue %u: %s", n->name, q->tap.name, k,
					 strerror(errno));
				r = -EIO;
				continue;
			}
			q->in_loop = true;
			q->watching = 0;
		}
	}
	if (!r)
		p->active_pairs = n->queue_pairs_active = pairs;
	return r;
}

/* One control command (section 5.1.6.5): class and command, their data,
 * and a writable ack byte.  Only MQ's VQ_PAIRS_SET is known; anything else
 * gets VIRTIO_NET_ERR.  Returns the bytes written (1), or 0 for a chain no
 * driver would send (no room for the header or the ack). */
static uint32_t ctrl_one(struct virtio_net *n, const struct virtq_req *req)
{
	struct net_priv *p = n->priv;
	uint8_t hdr[2], ack = VIRTIO_NET_ERR, le[2];
	unsigned pairs;

	if (!req->n_in || req->out_bytes < sizeof(hdr) ||
	    virtq_req_read(req, 0, hdr, sizeof(hdr)) != sizeof(hdr))
		return 0;
	if (hdr[0] == VIRTIO_NET_CTRL_MQ && hdr[1] == VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET &&
	    (n->dev.driver_features & VIRTIO_BIT(VIRTIO_NET_F_MQ)) &&
	    req->out_bytes >= sizeof(hdr) + 2 &&
	    virtq_req_read(req, sizeof(hdr), le, 2) == 2) {
		pairs = le[0] | (unsigned)le[1] << 8;
		if (pairs >= 1 && pairs <= p->n_pairs && set_active_pairs(n, pairs) == 0) {
			ack = VIRTIO_NET_OK;
			/* Frames may already wait on the queues just attached. */
			for (unsigned k = 0; k < pairs; k++)
				watch(&p->pairs[k], p->pairs[k].watching | EPOLLIN);
		}
	}
	if (virtq_req_write(n->mem, req, req->in_bytes - 1, &ack, 1) != 1)
		return 0;
	return 1;
}

static void ctrl_run(struct virtio_net *n)
{
	struct net_priv *p = n->priv;
	struct virtq *vq = &n->vqs[p->ctrl_q];
	bool pushed = false;
	int r;

	if (!vq->ready)
		return;
	while ((r = virtq_pop(vq, p->scratch)) == 1) {
		uint32_t w = ctrl_one(n, p->scratch);

		(void)virtq_push(vq, p->scratch->head, w);
		pushed = true;
		if (!w) {
			n->dev.needs_reset(&n->dev, "malformed control command chain");
			break;
		}
	}
	if (r < 0)
		n->dev.needs_reset(&n->dev, "malformed control queue");
	if (pushed)
		interrupt(n, p->ctrl_q);
}

/* ---- event loop and ops ---- */

static void on_tap(struct ev_source *src, uint32_t events)
{
	struct net_pair *q = src->opaque;
	struct virtio_net *n = q->n;
	struct net_priv *p = n->priv;

	pthread_mutex_lock(&n->dev.lock);
	if (q->eof || !q->in_loop || p->quiesced) {
		/* Removed from the loop already, or quiesced: a wake-up in
		 * flight (resume watches the tap again). */
	} else if (events & EPOLLERR) {
		/* An attached tap queue reports an error only once the tap is
		 * deleted. */
		tap_lost(q, "was deleted");
	} else if ((events & EPOLLHUP) && !running(n)) {
		/* A test's socket closed while nothing may read it. */
		tap_lost(q, "was closed");
	} else if (!running(n) || (unsigned)(q - p->pairs) >= p->active_pairs) {
		watch(q, 0);
	} else {
		if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && q->tx_blocked)
			tx_run(q);
		if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
			rx_run(q);
	}
	pthread_mutex_unlock(&n->dev.lock);
}

static void net_queue_notify(struct virtio_device *dev, unsigned vq)
{
	struct virtio_net *n = dev->opaque;
	struct net_priv *p = n->priv;
	struct net_pair *q;

	if (!p->active || p->quiesced)
		return;
	if (vq == p->ctrl_q) {
		ctrl_run(n);
		return;
	}
	if (vq / 2 >= p->active_pairs)
		return; /* a queue of a pair not in use: nothing to do until it is */
	q = &p->pairs[vq / 2];
	if (vq == q->rxq)
		rx_run(q); /* buffers posted: resumes a stopped RX */
	else if (!q->tx_blocked)
		tx_run(q);
	else
		watch(q, q->watching | EPOLLOUT); /* the tap's room resumes TX (again
						     watched after a pause in running()) */
}

static int net_activate(struct virtio_device *dev)
{
	struct virtio_net *n = dev->opaque;
	struct net_priv *p = n->priv;
	uint64_t f = dev->driver_features;
	unsigned off = 0;
	char why[200];

	if (f & VIRTIO_BIT(VIRTIO_NET_F_GUEST_CSUM))
		off |= TAP_OFFLOAD_CSUM;
	if (f & VIRTIO_BIT(VIRTIO_NET_F_GUEST_TSO4))
		off |= TAP_OFFLOAD_TSO4;
	if (f & VIRTIO_BIT(VIRTIO_NET_F_GUEST_TSO6))
		off |= TAP_OFFLOAD_TSO6;
	/* Offloads belong to the interface: any one of its queues sets them. */
	if (tap_set_offload(&p->pairs[0].tap, off, why, sizeof(why)) < 0) {
		log_warn("%s: %s", n->name, why);
		return -EIO;
	}
	p->mrg_rxbuf = f & VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF);
	p->guest_csum = f & VIRTIO_BIT(VIRTIO_NET_F_GUEST_CSUM);
	/* Section 5.1.2: the control queue follows the pairs there are, which
	 * is one unless MQ was negotiated. */
	p->ctrl_q = !(f & VIRTIO_BIT(VIRTIO_NET_F_CTRL_VQ)) ? VIRTIO_NET_MAX_QUEUES :
		    (f & VIRTIO_BIT(VIRTIO_NET_F_MQ)) ? 2 * p->n_pairs : 2;
	/* One pair until the driver asks for more (section 5.1.6.5.5). */
	if (set_active_pairs(n, 1) < 0)
		return -EIO;
	p->active = true;
	log_debug("%s: driver features 0x%llx, tap offloads 0x%x", n->name, (unsigned long long)f,
		  off);
	/* Frames may be waiting already: rx_run() stops watching if the guest
	 * has posted no buffers yet. */
	watch(&p->pairs[0], EPOLLIN);
	return 0;
}

/* The driver took queue @vq out of service: the chains held from it
 * belong to rings that may move; forget them (a frame read and not
 * delivered stays in the bounce buffer for the queue's return). */
static void net_queue_disable(struct virtio_device *dev, unsigned vq)
{
	struct virtio_net *n = dev->opaque;
	struct net_priv *p = n->priv;
	struct net_pair *q;

	if (vq / 2 >= p->n_pairs)
		return; /* the control queue holds nothing between notifications */
	q = &p->pairs[vq / 2];
	if (vq == q->rxq) {
		rx_drop_chains(q);
		watch(q, q->watching & ~(uint32_t)EPOLLIN);
	} else {
		free(q->tx_held);
		q->tx_held = NULL;
		q->tx_blocked = false;
		watch(q, q->watching & ~(uint32_t)EPOLLOUT);
	}
}

/* dev.lock held; nothing is in flight outside it (every tap access is
 * synchronous), so forgetting the held chains is all it takes. */
static void net_reset(struct virtio_device *dev)
{
	struct virtio_net *n = dev->opaque;
	struct net_priv *p = n->priv;

	p->active = false;
	for (unsigned k = 0; k < p->n_pairs; k++) {
		struct net_pair *q = &p->pairs[k];

		watch(q, 0);
		free(q->tx_held);
		q->tx_held = NULL;
		q->tx_blocked = false;
		rx_drop_chains(q);
		/* A frame read but not delivered is lost with the link's reset. */
		if (q->bounce_len)
			n->stats.rx_dropped++;
		q->bounce_len = 0;
	}
}

static void net_config_read(struct virtio_device *dev, uint32_t off, void *data, unsigned size)
{
	struct virtio_net *n = dev->opaque;

	memcpy(data, n->config + off, size);
}

static void net_config_write(struct virtio_device *dev, uint32_t off, const void *data,
			     unsigned size)
{
	(void)dev, (void)off, (void)data, (void)size; /* MAC is read-only (no CTRL_MAC_ADDR) */
}

static const struct virtio_device_ops net_ops = {
	.config_read = net_config_read,
	.config_write = net_config_write,
	.activate = net_activate,
	.queue_notify = net_queue_notify,
	.reset = net_reset,
	.queue_disable = net_queue_disable,
};

static const struct virtio_feature_dep net_deps[] = {
	{ VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_CSUM },
	{ VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_CSUM },
	{ VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_CSUM },
	{ VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_CSUM },
	{ VIRTIO_NET_F_MQ, VIRTIO_NET_F_CTRL_VQ },
};

/* A stable locally administered unicast MAC: 02 then 5 bytes of an FNV-1a
 * hash of the tap's name and the device index. */
static void derive_mac(uint8_t mac[6], const char *tap, unsigned index)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (const char *s = tap ? tap : ""; *s; s++)
		h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
	h = (h ^ index) * 0x100000001b3ull;
	mac[0] = 0x02;
	for (unsigned i = 1; i < 6; i++)
		mac[i] = (uint8_t)(h >> (8 * (i - 1)));
}

static void net_free_priv(struct virtio_net *n)
{
	struct net_priv *p = n->priv;

	if (!p)
		return;
	for (unsigned k = 0; k < VIRTIO_NET_MAX_PAIRS; k++) {
		struct net_pair *q = &p->pairs[k];

		if (q->in_loop && n->loop)
			evloop_remove(n->loop, &q->src);
		tap_close(&q->tap);
		free(q->tx_held);
		free(q->segs);
		free(q->bounce);
		free(q->iov);
	}
	free(p->scratch);
	free(p);
	n->priv = NULL;
}

/* Open pair @k's tap queue (or adopt the test's fd) and its buffers. */
static int pair_init(struct virtio_net *n, unsigned k, const struct virtio_net_config_opts *opts,
		     char *err, size_t errlen)
{
	struct net_priv *p = n->priv;
	struct net_pair *q = &p->pairs[k];
	int r;

	q->n = n;
	q->rxq = 2 * k;
	q->txq = 2 * k + 1;
	q->bounce = malloc(BOUNCE_BYTES);
	q->iov = calloc(VIRTQ_MAX_SIZE, sizeof(*q->iov));
	q->segs_cap = VIRTQ_MAX_SIZE;
	q->segs = calloc(q->segs_cap, sizeof(*q->segs));
	if (!q->bounce || !q->iov || !q->segs)
		return errmsg(-ENOMEM, err, errlen, "--net tap=%s: out of memory", opts->tap);
	if (opts->tap_fd_given) {
		int fd = k ? opts->tap_fds_more[k - 1] : opts->tap_fd;

		r = tap_open_fd(&q->tap, fd, opts->tap);
		if (r)
			return errmsg(r, err, errlen, "--net tap=%s: fd %d: %s", opts->tap, fd,
				      strerror(-r));
	} else {
		char why[300];

		r = tap_open_queue(&q->tap, opts->tap, p->n_pairs > 1, why, sizeof(why));
		if (r)
			return errmsg(r, err, errlen, "--net tap=%s: %s", opts->tap, why);
	}
	q->src = (struct ev_source){ .fd = q->tap.fd, .handler = on_tap, .opaque = q };
	if (n->loop) {
		r = evloop_add(n->loop, &q->src, 0);
		if (r < 0)
			return errmsg(r, err, errlen, "--net tap=%s: epoll: %s", opts->tap,
				      strerror(-r));
	}
	q->in_loop = true;
	return 0;
}

int virtio_net_init(struct virtio_net *n, const struct guest_mem *mem, struct evloop *loop,
		    const struct virtio_net_config_opts *opts, char *err, size_t errlen)
{
	uint64_t features = VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC) |
			    VIRTIO_BIT(VIRTIO_F_EVENT_IDX) | VIRTIO_BIT(VIRTIO_NET_F_MAC) |
			    VIRTIO_BIT(VIRTIO_NET_F_STATUS) | VIRTIO_BIT(VIRTIO_NET_F_MTU) |
			    VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF) | VIRTIO_BIT(VIRTIO_NET_F_CSUM) |
			    VIRTIO_BIT(VIRTIO_NET_F_GUEST_CSUM) | VIRTIO_BIT(VIRTIO_NET_F_HOST_TSO4) |
			    VIRTIO_BIT(VIRTIO_NET_F_HOST_TSO6) | VIRTIO_BIT(VIRTIO_NET_F_GUEST_TSO4) |
			    VIRTIO_BIT(VIRTIO_NET_F_GUEST_TSO6);
	unsigned pairs = opts->queues ? opts->queues : 1;
	struct net_priv *p;
	int r;

	memset(n, 0, sizeof(*n));
	n->mem = mem;
	n->loop = loop;
	snprintf(n->name, sizeof(n->name), "virtio-net%u", opts->index);
	if (pairs > VIRTIO_NET_MAX_PAIRS)
		return errmsg(-EINVAL, err, errlen, "--net tap=%s: queues=%u: at most %u", opts->tap,
			      pairs, VIRTIO_NET_MAX_PAIRS);
	p = calloc(1, sizeof(*p));
	if (!p)
		return errmsg(-ENOMEM, err, errlen, "--net tap=%s: out of memory", opts->tap);
	n->priv = p;
	p->n = n;
	p->n_pairs = n->queue_pairs = pairs;
	p->active_pairs = n->queue_pairs_active = 1;
	n->link_up = true;
	p->ctrl_q = VIRTIO_NET_MAX_QUEUES;
	for (unsigned k = 0; k < VIRTIO_NET_MAX_PAIRS; k++)
		p->pairs[k].tap.fd = -1;
	p->scratch = malloc(sizeof(*p->scratch));
	if (!p->scratch) {
		r = errmsg(-ENOMEM, err, errlen, "--net tap=%s: out of memory", opts->tap);
		goto fail;
	}
	for (unsigned k = 0; k < pairs; k++) {
		r = pair_init(n, k, opts, err, errlen);
		if (r)
			goto fail;
	}
	if (pairs > 1)
		features |= VIRTIO_BIT(VIRTIO_NET_F_CTRL_VQ) | VIRTIO_BIT(VIRTIO_NET_F_MQ);

	if (opts->mac_given)
		memcpy(n->mac, opts->mac, 6);
	else
		derive_mac(n->mac, opts->tap, opts->index);
	memcpy(n->config, n->mac, 6);
	put_le16(n->config + 6, VIRTIO_NET_S_LINK_UP);
	put_le16(n->config + 8, (uint16_t)pairs); /* max_virtqueue_pairs (read with MQ) */
	put_le16(n->config + 10, VIRTIO_NET_MTU);

	for (unsigned q = 0; q < VIRTIO_NET_MAX_QUEUES; q++)
		n->vqs[q].mem = mem;
	n->dev = (struct virtio_device){
		.name = n->name,
		.device_id = VIRTIO_ID_NET,
		.features = features,
		.deps = net_deps,
		.n_deps = sizeof(net_deps) / sizeof(net_deps[0]),
		.config_size = sizeof(n->config),
		/* The pairs and, with more than one, the control queue. */
		.num_queues = pairs > 1 ? 2 * pairs + 1 : 2,
		.vqs = n->vqs,
		.ops = &net_ops,
		.opaque = n,
	};
	pthread_mutex_init(&n->dev.lock, NULL);
	return 0;
fail:
	net_free_priv(n);
	return r;
}

void virtio_net_exit(struct virtio_net *n)
{
	struct net_priv *p = n->priv;

	if (!p)
		return;
	log_debug("%s: tap %s: tx %llu frames (%llu GSO) %llu bytes %llu dropped, rx %llu frames "
		  "(%llu GSO) %llu bytes %llu dropped", n->name, p->pairs[0].tap.name,
		  (unsigned long long)n->stats.tx_frames, (unsigned long long)n->stats.tx_gso,
		  (unsigned long long)n->stats.tx_bytes, (unsigned long long)n->stats.tx_dropped,
		  (unsigned long long)n->stats.rx_frames, (unsigned long long)n->stats.rx_gso,
		  (unsigned long long)n->stats.rx_bytes, (unsigned long long)n->stats.rx_dropped);
	net_free_priv(n);
	pthread_mutex_destroy(&n->dev.lock);
}

/* ---- quiesce, resume, state ---- */

#define VIRTIO_NET_STATE_VERSION 1

void virtio_net_quiesce(struct virtio_net *n)
{
	struct net_priv *p = n->priv;

	pthread_mutex_lock(&n->dev.lock);
	if (!p->quiesced) {
		for (unsigned k = 0; k < p->n_pairs; k++) {
			struct net_pair *q = &p->pairs[k];

			watch(q, 0);
			/* Chains popped and not used go back to the ring: they
			 * were the last ones taken, so rewinding the index by
			 * their count hands exactly them back, and the guest's
			 * ring still holds them (it cannot reuse a slot the
			 * device has not used). */
			n->vqs[q->rxq].last_avail_idx -= (uint16_t)q->n_chains;
			rx_drop_chains(q);
			if (q->tx_held) {
				n->vqs[q->txq].last_avail_idx--;
				free(q->tx_held);
				q->tx_held = NULL;
			}
			q->tx_blocked = false;
		}
		p->quiesced = true;
	}
	pthread_mutex_unlock(&n->dev.lock);
}

void virtio_net_resume(struct virtio_net *n)
{
	struct net_priv *p = n->priv;

	pthread_mutex_lock(&n->dev.lock);
	p->quiesced = false;
	if (running(n))
		for (unsigned k = 0; k < p->active_pairs; k++)
			watch(&p->pairs[k], EPOLLIN);
	pthread_mutex_unlock(&n->dev.lock);
}

void virtio_net_save(struct virtio_net *n, struct state_writer *w, const char *node)
{
	struct net_priv *p = n->priv;

	pthread_mutex_lock(&n->dev.lock);
	state_begin(w, VIRTIO_NET_STATE_VERSION, "%s/net", node);
	state_put_bytes(w, "mac", n->mac, sizeof(n->mac));
	state_put_u32(w, "queue-pairs", p->n_pairs);
	state_put_u32(w, "queue-pairs-active", p->active_pairs);
	state_put_u32(w, "link-up", n->link_up);
	pthread_mutex_unlock(&n->dev.lock);
}

int virtio_net_load(struct virtio_net *n, struct state_reader *r, const char *node)
{
	struct net_priv *p = n->priv;
	int nn = state_node(r, true, "%s/net", node), e = 0;
	uint8_t mac[6];
	uint32_t pairs, active, link;

	if (state_version(r, nn, 1, VIRTIO_NET_STATE_VERSION) < 0)
		return r->err;
	state_get_bytes(r, nn, "mac", mac, sizeof(mac));
	state_get_u32_range(r, nn, "queue-pairs", 1, VIRTIO_NET_MAX_PAIRS, &pairs);
	state_get_u32_range(r, nn, "queue-pairs-active", 1, VIRTIO_NET_MAX_PAIRS, &active);
	state_get_u32_range(r, nn, "link-up", 0, 1, &link);
	if (r->err)
		return r->err;
	if (memcmp(mac, n->mac, sizeof(mac)) || pairs != p->n_pairs || active > pairs)
		return state_reject(r, -EINVAL, "state: %s: saved with another MAC or %u queue pairs (this one has %u)",
				    n->name, pairs, p->n_pairs);
	pthread_mutex_lock(&n->dev.lock);
	/* activate() (run before this, when the driver had started the
	 * device) put one pair in use; the driver may have asked for more. */
	if (p->active && active != p->active_pairs && set_active_pairs(n, active) < 0)
		e = state_reject(r, -EIO, "state: %s: cannot attach %u tap queues", n->name, active);
	pthread_mutex_unlock(&n->dev.lock);
	return e;
}

int virtio_net_announce(struct virtio_net *n)
{
	struct net_priv *p = n->priv;
	/* vnet header (no offload), then an Ethernet broadcast RARP request
	 * from the guest's MAC, as QEMU announces a migrated guest. */
	uint8_t f[TAP_VNET_HDR_BYTES + 14 + 28] = { 0 };
	uint8_t *eth = f + TAP_VNET_HDR_BYTES, *arp = eth + 14;
	int r = 0;

	if (!p || !p->n_pairs || p->pairs[0].tap.fd < 0)
		return -ENODEV;
	memset(eth, 0xff, 6);
	memcpy(eth + 6, n->mac, 6);
	eth[12] = 0x80; /* ETH_P_RARP */
	eth[13] = 0x35;
	arp[1] = 1;     /* hardware: Ethernet */
	arp[2] = 0x08;  /* protocol: IPv4 */
	arp[4] = 6;
	arp[5] = 4;
	arp[7] = 3;     /* RARP request */
	memcpy(arp + 8, n->mac, 6);
	memcpy(arp + 18, n->mac, 6);
	if (write(p->pairs[0].tap.fd, f, sizeof(f)) != (ssize_t)sizeof(f))
		r = -errno;
	return r;
}

// SPDX-License-Identifier: MIT
/*
 * virtio-net (virtio 1.2, section 5.1) over a tap (src/net/tap.c).
 *
 * Queue 0 is RX, queue 1 TX.  Everything runs on the event loop thread
 * under dev.lock: queue notifications (the transport holds the lock around
 * ops->queue_notify) and the tap's readiness (on_tap(), which takes it).
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
#include "vmrun/tap.h"
#include "vmrun/virtio_net.h"

#define RXQ 0
#define TXQ 1
#define BOUNCE_BYTES (VIRTIO_NET_HDR_BYTES + VIRTIO_NET_MAX_FRAME)
/* Frames moved per tap wake-up before other sources get their turn (the
 * tap is level-triggered: what is left fires again). */
#define RX_BATCH 64

_Static_assert(VIRTIO_NET_HDR_BYTES == TAP_VNET_HDR_BYTES, "the tap carries the guest's header");

/* An RX chain taken from the avail ring and not yet used: its writable
 * segments live in net_priv.segs[first .. first + n). */
struct rx_chain {
	uint16_t head;
	unsigned first, n;
	uint64_t bytes;
};

struct net_priv {
	struct virtio_net *n;
	struct tap tap;
	struct ev_source src;     /* the tap on the event loop */
	uint32_t watching;        /* events src is registered for */
	bool mrg_rxbuf;
	bool guest_csum;          /* GUEST_CSUM negotiated: RX flags pass through */
	bool active;              /* activate() ran, no reset since */
	bool eof;                 /* the tap is gone (deleted, or a test's socket closed):
				   * no longer watched, link down */
	struct virtq_req *scratch;
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
	unsigned warned;          /* rate limit for guest-caused warnings */
	uint64_t mark_gpa, mark_len; /* rx_copy()'s dirty run not yet marked */
	uint16_t push_heads[VIRTQ_MAX_SIZE]; /* a frame's chains, for virtq_push_n() */
	uint32_t push_lens[VIRTQ_MAX_SIZE];
};

static void put_le16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

/* A warning the guest can cause: the first few only. */
static void net_warn(struct net_priv *p, const char *what)
{
	if (p->warned < 8)
		log_warn("%s: %s%s", p->n->name, what, ++p->warned == 8 ? " (no more such warnings)" : "");
}

static bool running(const struct virtio_net *n)
{
	const struct net_priv *p = n->priv;

	return p->active && (n->dev.status & VIRTIO_STATUS_DRIVER_OK) &&
	       !(n->dev.status & VIRTIO_STATUS_NEEDS_RESET);
}

/* Watch the tap for @events (EPOLLIN: frames to read; EPOLLOUT: room to
 * write).  dev.lock held. */
static void watch(struct net_priv *p, uint32_t events)
{
	if (events == p->watching || !p->n->loop || p->eof)
		return;
	if (evloop_modify(p->n->loop, &p->src, events) < 0)
		log_warn("%s: epoll on tap %s: %s", p->n->name, p->tap.name, strerror(errno));
	p->watching = events;
}

static void interrupt(struct virtio_net *n, unsigned q)
{
	if (virtq_should_interrupt(&n->vqs[q]))
		n->dev.interrupt_used(&n->dev, q);
}

/* ---- TX ---- */

/* Send @req's frame.  Returns 1 when the chain is done with (sent or
 * dropped: the caller pushes it), 0 when the tap is full (EAGAIN). */
static int tx_one(struct virtio_net *n, const struct virtq_req *req)
{
	struct net_priv *p = n->priv;
	ssize_t w;
	int cnt;

	if (req->n_in || req->out_bytes < VIRTIO_NET_HDR_BYTES ||
	    req->out_bytes > VIRTIO_NET_HDR_BYTES + VIRTIO_NET_MAX_FRAME) {
		net_warn(p, req->n_in ? "TX chain with device-writable buffers dropped" :
			    req->out_bytes < VIRTIO_NET_HDR_BYTES ? "TX chain shorter than the header dropped" :
								     "TX frame too long dropped");
		n->stats.tx_dropped++;
		return 1;
	}
	cnt = virtq_req_iov(req, false, 0, req->out_bytes, p->iov, VIRTQ_MAX_SIZE);
	if (cnt < 0) { /* cannot happen: n_out <= VIRTQ_MAX_SIZE */
		n->stats.tx_dropped++;
		return 1;
	}
	do
		w = writev(p->tap.fd, p->iov, cnt);
	while (w < 0 && errno == EINTR);
	if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return 0;
	if (w < 0) {
		/* EINVAL for a GSO header the tap refuses, EIO while it is down... */
		if (p->warned < 8) {
			char why[128];

			snprintf(why, sizeof(why), "tap %s refused a frame: %s", p->tap.name,
				 strerror(errno));
			net_warn(p, why);
		}
		n->stats.tx_dropped++;
		return 1;
	}
	n->stats.tx_frames++;
	n->stats.tx_bytes += req->out_bytes - VIRTIO_NET_HDR_BYTES;
	if (p->iov[0].iov_len >= 2 && ((const uint8_t *)p->iov[0].iov_base)[1])
		n->stats.tx_gso++; /* gso_type, byte 1 of the header */
	return 1;
}

/* Send what the TX queue holds, the held chain first.  dev.lock held. */
static void tx_run(struct virtio_net *n)
{
	struct net_priv *p = n->priv;
	struct virtq *vq = &n->vqs[TXQ];
	bool pushed = false;
	int r;

	if (!vq->ready)
		return;
	if (p->tx_held) {
		if (!tx_one(n, p->tx_held))
			return; /* still full: EPOLLOUT stays on */
		(void)virtq_push(vq, p->tx_held->head, 0);
		pushed = true;
		free(p->tx_held);
		p->tx_held = NULL;
	}
	p->tx_blocked = false;
	watch(p, p->watching & ~(uint32_t)EPOLLOUT);
	do {
		virtq_notify_disable(vq);
		while ((r = virtq_pop(vq, p->scratch)) == 1) {
			if (!tx_one(n, p->scratch)) {
				/* Keep the chain; notifications stay off until the tap drains. */
				p->tx_held = p->scratch;
				p->scratch = malloc(sizeof(*p->scratch));
				if (!p->scratch) {
					p->scratch = p->tx_held;
					p->tx_held = NULL;
					(void)virtq_push(vq, p->scratch->head, 0);
					n->stats.tx_dropped++;
					net_warn(p, "out of memory: TX frame dropped");
					continue;
				}
				p->tx_blocked = true;
				watch(p, p->watching | EPOLLOUT);
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
		interrupt(n, TXQ);
}

/* ---- RX ---- */

/* The tap is gone for good: the interface was deleted (reads fail with
 * EBADFD and epoll reports EPOLLERR whatever we ask for), or the socket a
 * test stands in for it was closed.  Stop watching it, or the loop would
 * spin on its error, and tell the driver the link is down.  dev.lock held. */
static void tap_lost(struct virtio_net *n, const char *why)
{
	struct net_priv *p = n->priv;

	if (p->eof)
		return;
	log_warn("%s: tap %s %s; the link is down", n->name, p->tap.name, why);
	if (n->loop)
		evloop_remove(n->loop, &p->src);
	p->eof = true;
	p->watching = 0;
	put_le16(n->config + 6, 0);
	n->dev.config_generation++;
	if (n->dev.status & VIRTIO_STATUS_DRIVER_OK)
		n->dev.interrupt_config(&n->dev);
}

static void rx_drop_chains(struct net_priv *p)
{
	p->n_chains = 0;
	p->n_segs = 0;
}

/* Take one more RX chain from the avail ring into p->chains.  Returns 1,
 * 0 when there is none, -EINVAL for a malformed ring or chain (the device
 * then needs a reset). */
static int rx_take_chain(struct virtio_net *n)
{
	struct net_priv *p = n->priv;
	struct virtq_req *req = p->scratch;
	struct rx_chain *c;
	int r;

	if (p->n_chains >= n->vqs[RXQ].size)
		return 0;
	r = virtq_pop(&n->vqs[RXQ], req);
	if (r <= 0)
		return r;
	if (req->n_out || req->in_bytes < VIRTIO_NET_HDR_BYTES)
		return -EINVAL; /* no driver posts these: RX chains are writable, header included */
	if (p->n_segs + req->n_in > p->segs_cap) {
		unsigned cap = p->segs_cap * 2 > p->n_segs + req->n_in ? p->segs_cap * 2 :
									    p->n_segs + req->n_in;
		struct virtq_seg *s = realloc(p->segs, cap * sizeof(*s));

		if (!s)
			return -ENOMEM;
		p->segs = s;
		p->segs_cap = cap;
	}
	c = &p->chains[p->n_chains++];
	c->head = req->head;
	c->first = p->n_segs;
	c->n = req->n_in;
	c->bytes = req->in_bytes;
	memcpy(p->segs + p->n_segs, req->in, req->n_in * sizeof(*req->in));
	p->n_segs += req->n_in;
	return 1;
}

/* Copy @len bytes of @src to offset @off of chain @c; mark them dirty. */
static void rx_copy(struct net_priv *p, const struct rx_chain *c, uint64_t off, const uint8_t *src,
		    uint64_t len)
{
	for (unsigned i = 0; i < c->n && len; i++) {
		const struct virtq_seg *s = &p->segs[c->first + i];
		uint64_t k;

		if (off >= s->len) {
			off -= s->len;
			continue;
		}
		k = s->len - off < len ? s->len - off : len;
		memcpy((uint8_t *)s->host + off, src, k);
		/* Extends the pending run when contiguous (rx_mark_flush()). */
		if (p->mark_len && p->mark_gpa + p->mark_len == s->gpa + off) {
			p->mark_len += k;
		} else {
			if (p->mark_len)
				guest_mem_mark_dirty(p->n->mem, p->mark_gpa, p->mark_len);
			p->mark_gpa = s->gpa + off;
			p->mark_len = k;
		}
		src += k;
		len -= k;
		off = 0;
	}
}

/* Mark dirty what rx_copy() wrote since the last call, as few runs as the
 * guest addresses allow; before the chains are pushed. */
static void rx_mark_flush(struct net_priv *p)
{
	if (p->mark_len)
		guest_mem_mark_dirty(p->n->mem, p->mark_gpa, p->mark_len);
	p->mark_len = 0;
}

/* Forget the first @k held chains (they were pushed). */
static void rx_consume(struct net_priv *p, unsigned k)
{
	unsigned segs = 0;

	if (k == p->n_chains) {
		rx_drop_chains(p);
		return;
	}
	for (unsigned i = 0; i < k; i++)
		segs += p->chains[i].n;
	memmove(p->chains, p->chains + k, (p->n_chains - k) * sizeof(p->chains[0]));
	p->n_chains -= k;
	memmove(p->segs, p->segs + segs, (p->n_segs - segs) * sizeof(p->segs[0]));
	p->n_segs -= segs;
	for (unsigned i = 0; i < p->n_chains; i++)
		p->chains[i].first -= segs;
}

/* Deliver the frame in the bounce buffer.  Returns 1 when it is gone
 * (delivered or dropped), 0 when more chains are needed, -EINVAL for a
 * malformed RX chain. */
static int rx_deliver(struct virtio_net *n, bool *pushed)
{
	struct net_priv *p = n->priv;
	struct virtq *vq = &n->vqs[RXQ];
	uint64_t need = p->bounce_len, have = 0;
	unsigned k = 0;
	int r;

	/* Section 5.1.6.4.1: without GUEST_CSUM the flags must be zero.  The
	 * tap sets DATA_VALID on frames the host already checked whatever
	 * its offloads (e.g. from a NIC that verifies checksums), so clear
	 * them here; NEEDS_CSUM and GSO it sends only with the offloads. */
	if (!p->guest_csum)
		p->bounce[0] = 0;

	if (!p->mrg_rxbuf) {
		if (!p->n_chains && (r = rx_take_chain(n)) <= 0)
			return r;
		if (p->chains[0].bytes < need) {
			/* Without MRG_RXBUF a chain holds a whole frame: this one never fits. */
			n->stats.rx_dropped++;
			net_warn(p, "RX chain too small for a frame (no MRG_RXBUF): frame dropped");
			return 1;
		}
		put_le16(p->bounce + 10, 1); /* num_buffers */
		rx_copy(p, &p->chains[0], 0, p->bounce, need);
		rx_mark_flush(p);
		(void)virtq_push(vq, p->chains[0].head, (uint32_t)need);
		rx_consume(p, 1);
		*pushed = true;
		goto done;
	}
	for (;;) {
		for (; k < p->n_chains && have < need; k++)
			have += p->chains[k].bytes;
		if (have >= need)
			break;
		r = rx_take_chain(n);
		if (r < 0)
			return r;
		if (r == 0) {
			if (p->n_chains >= vq->size) {
				/* Every buffer of the queue is held and still too few. */
				n->stats.rx_dropped++;
				net_warn(p, "RX queue too small for a frame: frame dropped");
				return 1;
			}
			return 0;
		}
	}
	put_le16(p->bounce + 10, (uint16_t)k);
	{
		uint64_t off = 0;

		for (unsigned i = 0; i < k; i++) {
			uint64_t len = need - off < p->chains[i].bytes ? need - off : p->chains[i].bytes;

			rx_copy(p, &p->chains[i], 0, p->bounce + off, len);
			off += len;
		}
		/* The whole frame marked (one run when the buffers are
		 * contiguous), then handed over. */
		rx_mark_flush(p);
		off = 0;
		for (unsigned i = 0; i < k; i++) {
			uint64_t len = need - off < p->chains[i].bytes ? need - off : p->chains[i].bytes;

			p->push_heads[i] = p->chains[i].head;
			p->push_lens[i] = (uint32_t)len;
			off += len;
		}
		(void)virtq_push_n(vq, p->push_heads, p->push_lens, k);
	}
	rx_consume(p, k);
	*pushed = true;
done:
	n->stats.rx_frames++;
	n->stats.rx_bytes += need - VIRTIO_NET_HDR_BYTES;
	if (p->bounce[1])
		n->stats.rx_gso++;
	return 1;
}

/* Move frames from the tap into the guest while both have some; decide
 * whether to keep watching the tap for EPOLLIN.  dev.lock held. */
static void rx_run(struct virtio_net *n)
{
	struct net_priv *p = n->priv;
	struct virtq *vq = &n->vqs[RXQ];
	bool pushed = false, want_in = true;
	int r = 0;

	if (!vq->ready) {
		watch(p, p->watching & ~(uint32_t)EPOLLIN);
		return;
	}
	for (unsigned done = 0; done < RX_BATCH;) {
		if (!p->bounce_len) {
			ssize_t got;

			if (!p->n_chains) {
				virtq_notify_disable(vq);
				r = rx_take_chain(n);
				if (r == 0 && virtq_notify_enable(vq))
					r = rx_take_chain(n); /* posted meanwhile */
				if (r < 0)
					goto bad;
				if (r == 0) {
					want_in = false; /* no buffers: wait for the RX notify */
					break;
				}
			}
			do
				got = read(p->tap.fd, p->bounce, BOUNCE_BYTES);
			while (got < 0 && errno == EINTR);
			if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break; /* tap empty: EPOLLIN stays on */
			if (got <= 0) {
				char why[96];

				snprintf(why, sizeof(why), "cannot be read (%s)",
					 got ? strerror(errno) : "end of file");
				tap_lost(n, why);
				return;
			}
			if (got < VIRTIO_NET_HDR_BYTES) {
				n->stats.rx_dropped++;
				done++;
				continue;
			}
			p->bounce_len = (size_t)got;
		}
		r = rx_deliver(n, &pushed);
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
		p->bounce_len = 0;
		done++;
	}
	if (pushed)
		interrupt(n, RXQ);
	watch(p, want_in ? p->watching | EPOLLIN : p->watching & ~(uint32_t)EPOLLIN);
	return;
bad:
	if (pushed)
		interrupt(n, RXQ);
	watch(p, p->watching & ~(uint32_t)EPOLLIN);
	n->dev.needs_reset(&n->dev, r == -ENOMEM ? "out of memory for RX chains" :
				     "malformed RX descriptor chain");
}

/* ---- event loop and ops ---- */

static void on_tap(struct ev_source *src, uint32_t events)
{
	struct net_priv *p = src->opaque;
	struct virtio_net *n = p->n;

	pthread_mutex_lock(&n->dev.lock);
	if (p->eof) {
		/* Removed from the loop already: a wake-up in flight. */
	} else if (events & EPOLLERR) {
		/* A tap reports an error only once it is detached (deleted). */
		tap_lost(n, "was deleted");
	} else if ((events & EPOLLHUP) && !running(n)) {
		/* A test's socket closed while nothing may read it. */
		tap_lost(n, "was closed");
	} else if (!running(n)) {
		watch(p, 0);
	} else {
		if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && p->tx_blocked)
			tx_run(n);
		if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
			rx_run(n);
	}
	pthread_mutex_unlock(&n->dev.lock);
}

static void net_queue_notify(struct virtio_device *dev, unsigned q)
{
	struct virtio_net *n = dev->opaque;
	struct net_priv *p = n->priv;

	if (!p->active)
		return;
	if (q == RXQ)
		rx_run(n); /* buffers posted: resumes a stopped RX */
	else if (q == TXQ && !p->tx_blocked)
		tx_run(n);
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
	if (tap_set_offload(&p->tap, off, why, sizeof(why)) < 0) {
		log_warn("%s: %s", n->name, why);
		return -EIO;
	}
	p->mrg_rxbuf = f & VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF);
	p->guest_csum = f & VIRTIO_BIT(VIRTIO_NET_F_GUEST_CSUM);
	p->active = true;
	log_debug("%s: driver features 0x%llx, tap offloads 0x%x", n->name, (unsigned long long)f,
		  off);
	/* Frames may be waiting already: rx_run() stops watching if the guest
	 * has posted no buffers yet. */
	watch(p, EPOLLIN);
	return 0;
}

/* dev.lock held; nothing is in flight outside it (every tap access is
 * synchronous), so forgetting the held chains is all it takes. */
/* The driver took queue @q out of service: the chains held from it
 * belong to rings that may move; forget them (a frame read and not
 * delivered stays in the bounce buffer for the queue's return). */
static void net_queue_disable(struct virtio_device *dev, unsigned q)
{
	struct virtio_net *n = dev->opaque;
	struct net_priv *p = n->priv;

	if (q == RXQ) {
		rx_drop_chains(p);
		watch(p, p->watching & ~(uint32_t)EPOLLIN);
	} else if (q == TXQ) {
		free(p->tx_held);
		p->tx_held = NULL;
		p->tx_blocked = false;
		watch(p, p->watching & ~(uint32_t)EPOLLOUT);
	}
}

static void net_reset(struct virtio_device *dev)
{
	struct virtio_net *n = dev->opaque;
	struct net_priv *p = n->priv;

	p->active = false;
	watch(p, 0);
	free(p->tx_held);
	p->tx_held = NULL;
	p->tx_blocked = false;
	rx_drop_chains(p);
	/* A frame read but not delivered is lost with the link's reset. */
	if (p->bounce_len)
		n->stats.rx_dropped++;
	p->bounce_len = 0;
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
	free(p->scratch);
	free(p->tx_held);
	free(p->segs);
	free(p->bounce);
	free(p->iov);
	free(p);
	n->priv = NULL;
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
	struct net_priv *p;
	int r;

	memset(n, 0, sizeof(*n));
	n->mem = mem;
	n->loop = loop;
	snprintf(n->name, sizeof(n->name), "virtio-net%u", opts->index);
	p = calloc(1, sizeof(*p));
	if (!p)
		return errmsg(-ENOMEM, err, errlen, "--net tap=%s: out of memory", opts->tap);
	n->priv = p;
	p->n = n;
	p->tap.fd = -1;
	p->scratch = malloc(sizeof(*p->scratch));
	p->bounce = malloc(BOUNCE_BYTES);
	p->iov = calloc(VIRTQ_MAX_SIZE, sizeof(*p->iov));
	p->segs_cap = VIRTQ_MAX_SIZE;
	p->segs = calloc(p->segs_cap, sizeof(*p->segs));
	if (!p->scratch || !p->bounce || !p->iov || !p->segs) {
		r = errmsg(-ENOMEM, err, errlen, "--net tap=%s: out of memory", opts->tap);
		goto fail;
	}
	if (opts->tap_fd_given) {
		r = tap_open_fd(&p->tap, opts->tap_fd, opts->tap);
		if (r) {
			errmsg(r, err, errlen, "--net tap=%s: fd %d: %s", opts->tap, opts->tap_fd,
			       strerror(-r));
			goto fail;
		}
	} else {
		char why[300];

		r = tap_open(&p->tap, opts->tap, why, sizeof(why));
		if (r) {
			errmsg(r, err, errlen, "--net tap=%s: %s", opts->tap, why);
			goto fail;
		}
	}
	p->src = (struct ev_source){ .fd = p->tap.fd, .handler = on_tap, .opaque = p };
	if (loop && (r = evloop_add(loop, &p->src, 0)) < 0) {
		errmsg(r, err, errlen, "--net tap=%s: epoll: %s", opts->tap, strerror(-r));
		goto fail;
	}

	if (opts->mac_given)
		memcpy(n->mac, opts->mac, 6);
	else
		derive_mac(n->mac, opts->tap, opts->index);
	memcpy(n->config, n->mac, 6);
	put_le16(n->config + 6, VIRTIO_NET_S_LINK_UP);
	put_le16(n->config + 8, 1);  /* max_virtqueue_pairs (meaningful with MQ only) */
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
		.num_queues = VIRTIO_NET_MAX_QUEUES,
		.vqs = n->vqs,
		.ops = &net_ops,
		.opaque = n,
	};
	pthread_mutex_init(&n->dev.lock, NULL);
	return 0;
fail:
	tap_close(&p->tap);
	net_free_priv(n);
	return r;
}

void virtio_net_exit(struct virtio_net *n)
{
	struct net_priv *p = n->priv;

	if (!p)
		return;
	log_debug("%s: tap %s: tx %llu frames (%llu GSO) %llu bytes %llu dropped, rx %llu frames "
		  "(%llu GSO) %llu bytes %llu dropped", n->name, p->tap.name,
		  (unsigned long long)n->stats.tx_frames, (unsigned long long)n->stats.tx_gso,
		  (unsigned long long)n->stats.tx_bytes, (unsigned long long)n->stats.tx_dropped,
		  (unsigned long long)n->stats.rx_frames, (unsigned long long)n->stats.rx_gso,
		  (unsigned long long)n->stats.rx_bytes, (unsigned long long)n->stats.rx_dropped);
	if (n->loop)
		evloop_remove(n->loop, &p->src);
	tap_close(&p->tap);
	net_free_priv(n);
	pthread_mutex_destroy(&n->dev.lock);
}

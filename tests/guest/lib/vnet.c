/* virtio-net driver for the test guests (vnet.h). */
#include "vnet.h"

static inline void barrier(void)
{
	__asm__ volatile("" ::: "memory");
}

/* Put descriptor @head into @q's avail ring (published by vq_kick()). */
static void avail_put(struct vdev *q, uint16_t head)
{
	volatile uint16_t *avail = q->mem.avail;

	avail[2 + (q->avail_idx & (q->size - 1))] = head;
	q->avail_idx++;
}

void vnet_rx_post_all(struct vnet *n)
{
	for (uint16_t i = 0; i < VNET_QSIZE; i++) {
		n->rx.mem.desc[i] = (struct vq_desc){ .addr = (uintptr_t)n->rxbuf[i],
						      .len = VNET_BUF,
						      .flags = VQ_DESC_F_WRITE };
		vnet_rx_done(n, i);
	}
	vnet_rx_kick(n);
}

int vnet_open(struct vnet *n, const struct virtio_mmio_dev *m, uint64_t features,
	      bool withhold_rx)
{
	int err;

	err = vdev_probe(&n->rx, m, VIRTIO_ID_NET);
	if (!err)
		err = vdev_negotiate(&n->rx, features);
	if (!err)
		err = vq_setup(&n->rx, &n->rx, 0, VNET_QSIZE);
	if (!err)
		err = vq_setup(&n->tx, &n->rx, 1, VNET_QSIZE);
	if (err)
		return err;
	for (unsigned i = 0; i < 6; i++)
		n->mac[i] = (features & VNET_F_MAC) ? vdev_config8(&n->rx, VNET_CFG_MAC + i) : 0;
	n->mtu = 1500;
	if (features & VNET_F_MTU)
		n->mtu = (uint16_t)(vdev_config8(&n->rx, VNET_CFG_MTU) |
				    vdev_config8(&n->rx, VNET_CFG_MTU + 1) << 8);
	for (uint16_t i = 0; i < VNET_QSIZE; i++) {
		if (!withhold_rx) {
			n->rx.mem.desc[i] = (struct vq_desc){ .addr = (uintptr_t)n->rxbuf[i],
							      .len = VNET_BUF,
							      .flags = VQ_DESC_F_WRITE };
			avail_put(&n->rx, i);
		}
		n->tx_free[i] = (uint16_t)(VNET_QSIZE - 1 - i);
	}
	n->n_tx_free = VNET_QSIZE;
	n->rx_posted = 0;
	/* Buffers first, so that the first frame finds them (section 3.1.1:
	 * the driver may make buffers available before DRIVER_OK). */
	barrier();
	n->rx.mem.avail[1] = n->rx.avail_idx;
	n->rx.kicked_idx = n->rx.avail_idx;
	err = vdev_driver_ok(&n->rx);
	if (err)
		return err;
	if (!withhold_rx)
		vdev_write(&n->rx, VMMIO_QUEUE_NOTIFY, 0);
	return 0;
}

bool vnet_rx(struct vnet *n, uint16_t *id, uint8_t **buf, uint32_t *len)
{
	struct vq_used_elem e;

	if (!vq_get(&n->rx, &e))
		return false;
	*id = (uint16_t)(e.id & (VNET_QSIZE - 1));
	*buf = n->rxbuf[*id];
	*len = e.len > VNET_BUF || e.id >= VNET_QSIZE ? VNET_BUF + 1 : e.len;
	return true;
}

void vnet_rx_done(struct vnet *n, uint16_t id)
{
	avail_put(&n->rx, id);
	n->rx_posted++;
}

void vnet_rx_kick(struct vnet *n)
{
	if (!n->rx_posted)
		return;
	n->rx_posted = 0;
	vq_kick(&n->rx);
}

unsigned vnet_tx_reclaim(struct vnet *n, unsigned *bad)
{
	struct vq_used_elem e;
	unsigned k = 0;

	while (vq_get(&n->tx, &e)) {
		if (e.id >= VNET_QSIZE || n->n_tx_free >= VNET_QSIZE) {
			if (bad)
				++*bad;
			continue;
		}
		n->tx_free[n->n_tx_free++] = (uint16_t)e.id;
		k++;
	}
	return k;
}

int vnet_tx_slot(struct vnet *n)
{
	if (!n->n_tx_free)
		vnet_tx_reclaim(n, NULL);
	if (!n->n_tx_free)
		return -1;
	return n->tx_free[--n->n_tx_free];
}

void vnet_tx_raw(struct vnet *n, int slot, const void *addr, uint32_t len, bool writable)
{
	n->tx.mem.desc[slot] = (struct vq_desc){ .addr = (uintptr_t)addr,
						 .len = len,
						 .flags = writable ? VQ_DESC_F_WRITE : 0 };
	avail_put(&n->tx, (uint16_t)slot);
	vq_kick(&n->tx);
}

void vnet_tx_send(struct vnet *n, int slot, uint32_t frame_len)
{
	vnet_tx_raw(n, slot, n->txbuf[slot], VNET_HDR_BYTES + frame_len, false);
}

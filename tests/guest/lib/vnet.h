/* A minimal virtio-net driver for the test guests (virtio 1.2, section
 * 5.1) on lib/virtio.c's transport and split virtqueues.
 *
 * Queue 0 is RX, queue 1 TX, each VNET_QSIZE entries.  Every buffer is one
 * descriptor of VNET_BUF bytes: an RX buffer is descriptor i of the RX
 * queue, a TX slot descriptor i of the TX queue, for the life of the
 * device, so a used element's id names its buffer.  RX buffers are
 * reposted as they are consumed; TX slots are reclaimed from the used ring
 * when one is wanted.  Nothing here waits: the caller polls vnet_rx() and
 * decides how to sleep (lib/virtio.c's note on interrupts applies).
 *
 * Every frame starts with the 12-byte struct vnet_hdr (VERSION_1 always
 * has num_buffers).  With MRG_RXBUF a received frame spans num_buffers
 * buffers, the header in the first only. */
#ifndef VMRUN_TEST_GUEST_VNET_H
#define VMRUN_TEST_GUEST_VNET_H

#include "virtio.h"

#define VIRTIO_ID_NET 1

/* Feature bits (section 5.1.3), as masks. */
#define VNET_F_CSUM VF_BIT(0)
#define VNET_F_GUEST_CSUM VF_BIT(1)
#define VNET_F_MTU VF_BIT(3)
#define VNET_F_MAC VF_BIT(5)
#define VNET_F_GUEST_TSO4 VF_BIT(7)
#define VNET_F_HOST_TSO4 VF_BIT(11)
#define VNET_F_MRG_RXBUF VF_BIT(15)
#define VNET_F_STATUS VF_BIT(16)

/* Byte offsets in struct virtio_net_config. */
#define VNET_CFG_MAC 0
#define VNET_CFG_STATUS 6
#define VNET_CFG_MTU 10
#define VNET_S_LINK_UP 1

/* struct virtio_net_hdr_v1 (section 5.1.6). */
struct vnet_hdr {
	uint8_t flags;
	uint8_t gso_type;
	uint16_t hdr_len;
	uint16_t gso_size;
	uint16_t csum_start;
	uint16_t csum_offset;
	uint16_t num_buffers;
} __attribute__((packed));

#define VNET_HDR_BYTES 12
#define VNET_HDR_F_NEEDS_CSUM 1
#define VNET_HDR_F_DATA_VALID 2
#define VNET_GSO_NONE 0
#define VNET_GSO_TCPV4 1

#define VNET_QSIZE 64
#define VNET_BUF 2048 /* header and a 1514-byte frame fit */

struct vnet {
	struct vdev rx;  /* queue 0; also holds the device's negotiation state */
	struct vdev tx;  /* queue 1 */
	uint8_t mac[6];
	uint16_t mtu;    /* from the config space with F_MTU, else 1500 */
	uint16_t tx_free[VNET_QSIZE];
	unsigned n_tx_free;
	unsigned rx_posted; /* RX buffers reposted since the last vnet_rx_kick() */
	uint8_t rxbuf[VNET_QSIZE][VNET_BUF] __attribute__((aligned(4096)));
	uint8_t txbuf[VNET_QSIZE][VNET_BUF];
};

/* Probe the device at @m (virtio-net), accept @features (a subset of what
 * it offers, VERSION_1 among them), set up both queues, post every RX
 * buffer unless @withhold_rx (then vnet_rx_post_all() does it later) and
 * set DRIVER_OK.  @n is large: keep it in .noinit.  Returns 0 or
 * -VDEV_E_*. */
int vnet_open(struct vnet *n, const struct virtio_mmio_dev *m, uint64_t features,
	      bool withhold_rx);

/* Post every RX buffer and notify: once, after vnet_open(..., true). */
void vnet_rx_post_all(struct vnet *n);

/* The next used RX buffer, if there is one: *@id names it (vnet_rx_done()
 * gives it back), *@buf is its start (the header, in the first buffer of a
 * frame) and *@len the bytes the device wrote.  A used element with a len
 * over VNET_BUF or an id outside the queue comes back with *@len ==
 * VNET_BUF + 1, for the caller to count as a device error. */
bool vnet_rx(struct vnet *n, uint16_t *id, uint8_t **buf, uint32_t *len);

/* Give RX buffer @id back to the device (published by vnet_rx_kick()). */
void vnet_rx_done(struct vnet *n, uint16_t id);

/* Publish the RX buffers given back and notify the device. */
void vnet_rx_kick(struct vnet *n);

/* Reclaim the TX slots the device has used.  Returns how many; each
 * used element's id outside the queue counts in *@bad when @bad is set. */
unsigned vnet_tx_reclaim(struct vnet *n, unsigned *bad);

/* A free TX slot (reclaiming first), or -1 when all are in flight.  Its
 * buffer, vnet->txbuf[slot], takes a header then the frame. */
int vnet_tx_slot(struct vnet *n);

/* Send slot @slot's header and @frame_len frame bytes, and notify. */
void vnet_tx_send(struct vnet *n, int slot, uint32_t frame_len);

/* Send one descriptor of @len bytes at @addr through slot @slot instead of
 * its buffer (device-writable with @writable): chains no driver should
 * send, or a frame larger than a slot. */
void vnet_tx_raw(struct vnet *n, int slot, const void *addr, uint32_t len, bool writable);

#endif

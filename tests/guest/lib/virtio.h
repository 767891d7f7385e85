/* A minimal virtio driver for the test guests: the virtio-mmio version-2
 * transport (virtio 1.2, section 4.2), one split virtqueue (section 2.7),
 * and the virtio-blk request format (section 5.2.6).
 *
 * Written from the specification, not from vmrun's device code, so that
 * the guests check the device against the standard.  Everything polls:
 * vq_wait() spins on the used ring, and a device that never answers hangs
 * the guest, which the host test ends with vmrun --timeout.  A guest that
 * wants interrupts routes vdev.irq itself (ioapic_route()).
 *
 * Use: virtio_mmio_scan() finds the devices the command line declares;
 * vdev_probe() checks one and reads its features; vdev_start() negotiates,
 * sets up queue 0 and sets DRIVER_OK.  A device with several queues (net)
 * takes the same steps one at a time: vdev_negotiate(), vq_setup() for each
 * queue (each a struct vdev of its own), vdev_driver_ok().  Requests go in with vq_add() (any
 * number) and vq_kick() (publish and notify), and come back through
 * vq_get() / vq_wait().  The caller never has more descriptors in flight
 * than the queue holds: descriptors are taken round-robin. */
#ifndef VMRUN_TEST_GUEST_VIRTIO_H
#define VMRUN_TEST_GUEST_VIRTIO_H

#include "guest.h"

/* ---- virtio-mmio registers (section 4.2.2) ---- */
#define VMMIO_MAGIC_VALUE 0x000
#define VMMIO_VERSION 0x004
#define VMMIO_DEVICE_ID 0x008
#define VMMIO_DEVICE_FEATURES 0x010
#define VMMIO_DEVICE_FEATURES_SEL 0x014
#define VMMIO_DRIVER_FEATURES 0x020
#define VMMIO_DRIVER_FEATURES_SEL 0x024
#define VMMIO_QUEUE_SEL 0x030
#define VMMIO_QUEUE_NUM_MAX 0x034
#define VMMIO_QUEUE_NUM 0x038
#define VMMIO_QUEUE_READY 0x044
#define VMMIO_QUEUE_NOTIFY 0x050
#define VMMIO_INTERRUPT_STATUS 0x060
#define VMMIO_INTERRUPT_ACK 0x064
#define VMMIO_STATUS 0x070
#define VMMIO_QUEUE_DESC_LOW 0x080
#define VMMIO_QUEUE_DESC_HIGH 0x084
#define VMMIO_QUEUE_DRIVER_LOW 0x090
#define VMMIO_QUEUE_DRIVER_HIGH 0x094
#define VMMIO_QUEUE_DEVICE_LOW 0x0a0
#define VMMIO_QUEUE_DEVICE_HIGH 0x0a4
#define VMMIO_CONFIG_GENERATION 0x0fc
#define VMMIO_CONFIG 0x100

#define VMMIO_MAGIC 0x74726976 /* "virt" */
#define VMMIO_INT_VRING 1
#define VMMIO_INT_CONFIG 2

/* ---- device status (section 2.1) ---- */
#define VSTAT_ACKNOWLEDGE 1
#define VSTAT_DRIVER 2
#define VSTAT_DRIVER_OK 4
#define VSTAT_FEATURES_OK 8
#define VSTAT_NEEDS_RESET 64
#define VSTAT_FAILED 128

/* ---- feature bits, as masks (section 6 and 5.2.3) ---- */
#define VF_BIT(b) (1ull << (b))
#define VF_INDIRECT_DESC VF_BIT(28)
#define VF_EVENT_IDX VF_BIT(29)
#define VF_VERSION_1 VF_BIT(32)
#define VBLK_F_SIZE_MAX VF_BIT(1)
#define VBLK_F_SEG_MAX VF_BIT(2)
#define VBLK_F_RO VF_BIT(5)
#define VBLK_F_BLK_SIZE VF_BIT(6)
#define VBLK_F_FLUSH VF_BIT(9)
#define VBLK_F_TOPOLOGY VF_BIT(10)
#define VBLK_F_DISCARD VF_BIT(13)
#define VBLK_F_WRITE_ZEROES VF_BIT(14)

#define VIRTIO_ID_BLOCK 2

/* ---- virtio-blk (section 5.2) ---- */
#define VBLK_T_IN 0
#define VBLK_T_OUT 1
#define VBLK_T_FLUSH 4
#define VBLK_T_GET_ID 8
#define VBLK_T_DISCARD 11
#define VBLK_T_WRITE_ZEROES 13
#define VBLK_S_OK 0
#define VBLK_S_IOERR 1
#define VBLK_S_UNSUPP 2
#define VBLK_SECTOR 512
#define VBLK_ID_BYTES 20
#define VBLK_WZ_F_UNMAP 1

/* Byte offsets in struct virtio_blk_config. */
#define VBLK_CFG_CAPACITY 0
#define VBLK_CFG_SIZE_MAX 8
#define VBLK_CFG_SEG_MAX 12
#define VBLK_CFG_BLK_SIZE 20
#define VBLK_CFG_MAX_DISCARD_SECTORS 36
#define VBLK_CFG_MAX_DISCARD_SEG 40
#define VBLK_CFG_DISCARD_ALIGN 44
#define VBLK_CFG_MAX_WZ_SECTORS 48
#define VBLK_CFG_MAX_WZ_SEG 52

/* The request header, and the one segment of DISCARD / WRITE_ZEROES. */
struct vblk_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

struct vblk_range {
	uint64_t sector;
	uint32_t num_sectors;
	uint32_t flags;
};

/* ---- split virtqueue (section 2.7) ---- */
#define VQ_MAX 256          /* largest queue this driver sets up */
#define VQ_INDIRECT_MAX 16  /* entries of each indirect table */

#define VQ_DESC_F_NEXT 1
#define VQ_DESC_F_WRITE 2
#define VQ_DESC_F_INDIRECT 4
#define VQ_USED_F_NO_NOTIFY 1

struct vq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct vq_used_elem {
	uint32_t id;
	uint32_t len;
};

/* One buffer of a request: @len bytes at @addr, written by the device when
 * @writable.  Device-readable buffers come first. */
struct vq_buf {
	const void *addr;
	uint32_t len;
	bool writable;
};

/* Rings and indirect tables of one queue: the descriptor table, avail ring
 * and used ring on pages of their own. */
struct vq_mem {
	struct vq_desc desc[VQ_MAX];
	uint16_t avail[4096 / 2]; /* flags, idx, ring[size], used_event */
	uint8_t used[4096];       /* flags, idx, elem[size], avail_event */
	struct vq_desc indirect[VQ_MAX][VQ_INDIRECT_MAX];
} __attribute__((aligned(4096)));

/* ---- virtio-pci (section 4.1) ---- */

/* Capability types and common configuration offsets (4.1.4). */
#define VPCI_CAP_COMMON 1
#define VPCI_CAP_NOTIFY 2
#define VPCI_CAP_ISR 3
#define VPCI_CAP_DEVICE 4
#define VPCI_DFSELECT 0x00
#define VPCI_DF 0x04
#define VPCI_GFSELECT 0x08
#define VPCI_GF 0x0c
#define VPCI_MSIX_CONFIG 0x10
#define VPCI_NUMQ 0x12
#define VPCI_STATUS 0x14
#define VPCI_CFGGEN 0x15
#define VPCI_Q_SELECT 0x16
#define VPCI_Q_SIZE 0x18
#define VPCI_Q_MSIX 0x1a
#define VPCI_Q_ENABLE 0x1c
#define VPCI_Q_NOFF 0x1e
#define VPCI_Q_DESCLO 0x20
#define VPCI_Q_AVAILLO 0x28
#define VPCI_Q_USEDLO 0x30

/* A virtio-pci function as vpci_scan() found it: where its capabilities
 * put the structures (guest-physical, in its BARs as vmrun assigned them),
 * its MSI-X table, and the ISR bits read but not yet acknowledged (reading
 * the ISR clears it; vdev_read(VMMIO_INTERRUPT_STATUS) keeps what it read
 * until VMMIO_INTERRUPT_ACK, as on virtio-mmio). */
struct vpci {
	unsigned slot;
	uint32_t device_id;   /* virtio device ID (PCI device ID - 0x1040) */
	uintptr_t common, notify, isr, device;
	uint32_t notify_mult;
	uint8_t msix_cap;     /* 0: none */
	uintptr_t msix_table;
	unsigned msix_vectors;
	unsigned intx_pin;    /* IOAPIC pin of INTA# (vmrun: 16 + (slot - 1) % 8) */
	uint32_t isr_latched;
};

/* One virtio device: virtio-mmio as the command line declares it, or, with
 * @pci set, a virtio-pci function (@base is then its common configuration,
 * @irq its INTx IOAPIC pin). */
struct virtio_mmio_dev {
	uint64_t base;
	uint64_t size;
	unsigned irq;
	struct vpci *pci;
};

/* A driven device.  Storage is the caller's (it is large: keep it in
 * .noinit); vdev_probe() sets every field. */
struct vdev {
	uintptr_t base;
	unsigned irq;
	struct vpci *pci;       /* NULL: virtio-mmio */
	uintptr_t notify_addr;  /* virtio-pci: this queue's notification address */
	uint64_t offered;  /* DeviceFeatures */
	uint64_t features; /* accepted by vdev_start() */
	uint16_t queue;    /* queue index (QueueSel, QueueNotify) */
	uint16_t size;     /* queue size */
	uint16_t avail_idx;    /* next avail->idx to publish */
	uint16_t kicked_idx;   /* avail->idx at the last vq_kick() */
	uint16_t last_used;    /* used elements consumed */
	uint16_t next_desc;    /* round-robin descriptor allocation */
	unsigned kicks;        /* QueueNotify writes */
	struct vq_mem mem;
};

/* Failure codes of vdev_probe() / vdev_start() (negated). */
enum vdev_error {
	VDEV_E_MAGIC = 1,    /* MagicValue is not "virt" */
	VDEV_E_VERSION,      /* Version is not 2 */
	VDEV_E_DEVICE_ID,    /* another device type */
	VDEV_E_RESET,        /* status did not read back 0 after a reset */
	VDEV_E_FEATURES,     /* a wanted feature is not offered */
	VDEV_E_FEATURES_OK,  /* FEATURES_OK did not stick */
	VDEV_E_QUEUE,        /* queue 0 missing, too small, or did not become ready */
	VDEV_E_DRIVER_OK,    /* the device flagged NEEDS_RESET or FAILED at DRIVER_OK */
};

/* Parse every "virtio_mmio.device=SIZE@BASE:IRQ" word of the command line
 * (SIZE and BASE decimal or 0x hex, with an optional K/M/G suffix) into
 * @out, at most @max.  Returns how many were found. */
unsigned virtio_mmio_scan(struct virtio_mmio_dev *out, unsigned max);

/* Enumerate PCI bus 0 through configuration mechanism #1 (ports 0xCF8 and
 * 0xCFC) for modern virtio functions (vendor 0x1af4, device 0x1040 + ID,
 * revision >= 1), turn on memory decoding and bus mastering, walk each
 * capability list for the common, notify, ISR and device structures and
 * MSI-X, and append them to @out (at most @max), with @pci (room for @max)
 * holding their details.  Returns how many were found. */
unsigned vpci_scan(struct virtio_mmio_dev *out, struct vpci *pci, unsigned max);

/* Every device: the command line's virtio-mmio ones, then the PCI ones. */
unsigned virtio_scan(struct virtio_mmio_dev *out, unsigned max);

/* virtio-pci behind the virtio-mmio register offsets: the test guests
 * speak VMMIO_* to every device, and for a PCI one each register is
 * carried to its field in the common configuration, ISR, notification or
 * device configuration structure (MagicValue and Version read as
 * virtio-mmio's, DeviceID from the PCI device ID). */
uint32_t vpci_read(const struct vdev *d, uint32_t reg);
/* Set or clear Bus Master Enable in @d's command register (memory decoding
 * stays on).  @d must be on PCI. */
void vpci_bus_master(const struct vdev *d, bool on);
void vpci_write(const struct vdev *d, uint32_t reg, uint32_t v);

static inline uint32_t vdev_read(const struct vdev *d, uint32_t reg)
{
	if (d->pci)
		return vpci_read(d, reg);
	return mmio_read32(d->base + reg);
}

static inline void vdev_write(const struct vdev *d, uint32_t reg, uint32_t v)
{
	if (d->pci)
		vpci_write(d, reg, v);
	else
		mmio_write32(d->base + reg, v);
}

/* Send @d's interrupts (configuration and every queue) to @vector on the
 * LAPIC @apic_id: virtio-mmio and PCI INTx (cmdline virtio.intx=1) through
 * the IOAPIC pin, otherwise MSI-X (every vector to the same message). */
void vdev_route_irq(struct vdev *d, uint8_t vector, unsigned apic_id);

/* Reset the device at @m, check magic, version 2 and @device_id, set
 * ACKNOWLEDGE and DRIVER, and read the offered features into d->offered.
 * Returns 0 or -VDEV_E_*. */
int vdev_probe(struct vdev *d, const struct virtio_mmio_dev *m, uint32_t device_id);

/* After vdev_probe(): accept @features (VERSION_1 must be among them; every
 * bit must be offered), set FEATURES_OK and check it stuck, set up queue 0
 * with @qsize entries (a power of two <= VQ_MAX), and set DRIVER_OK.  On
 * failure the driver sets FAILED.  Returns 0 or -VDEV_E_*. */
int vdev_start(struct vdev *d, uint64_t features, uint16_t qsize);

/* The steps of vdev_start(), for a device with more than one queue.
 * vdev_negotiate(): accept @features (VERSION_1 among them, every bit
 * offered) and check FEATURES_OK stuck.  vq_setup(): make @q drive queue
 * @index of @d's device (after vdev_negotiate(); @q may be @d itself)
 * with @qsize entries.  vdev_driver_ok(): set DRIVER_OK and check it
 * stuck.  On failure each sets FAILED.  Return 0 or -VDEV_E_*. */
int vdev_negotiate(struct vdev *d, uint64_t features);
int vq_setup(struct vdev *q, const struct vdev *d, uint16_t index, uint16_t qsize);
int vdev_driver_ok(struct vdev *d);

/* Device configuration space: 8 or 32 bits at @off; 64 bits read as two
 * halves under an unchanged ConfigGeneration. */
uint8_t vdev_config8(const struct vdev *d, uint32_t off);
uint32_t vdev_config32(const struct vdev *d, uint32_t off);
uint64_t vdev_config64(const struct vdev *d, uint32_t off);

/* Put a chain of the @n buffers into the next avail slot, directly (@n
 * descriptors) or, with @indirect, through the head descriptor's indirect
 * table (one descriptor; @n <= VQ_INDIRECT_MAX).  Not visible to the device
 * before vq_kick().  Returns the head descriptor's index. */
uint16_t vq_add(struct vdev *d, const struct vq_buf *bufs, unsigned n, bool indirect);

/* Publish the added chains (avail->idx) and notify the device unless it
 * asked not to be (used->flags NO_NOTIFY, or avail_event with EVENT_IDX). */
void vq_kick(struct vdev *d);

/* Take the next used element into *@e, if there is one.  used_event
 * (EVENT_IDX) is the caller's to set: a polling driver needs none. */
bool vq_get(struct vdev *d, struct vq_used_elem *e);

/* vq_get(), spinning until an element arrives. */
void vq_wait(struct vdev *d, struct vq_used_elem *e);

/* The used ring's idx as the device last published it. */
uint16_t vq_used_idx(const struct vdev *d);

/* Pointers to the ring fields a test inspects or sets directly. */
volatile uint16_t *vq_used_event(struct vdev *d);
volatile uint16_t *vq_avail_event(struct vdev *d);

/* One synchronous virtio-blk request of type @type at @sector, with no
 * other request of @d in flight: a header, the @n buffers of @data (at most
 * VQ_INDIRECT_MAX - 2; device-writable ones after readable ones), then a
 * status byte; as direct descriptors or (@indirect) one indirect table.
 * *@used_len gets the used element's len when not NULL.  Returns the status
 * byte, or VBLK_BAD_USED when the used element names another chain. */
#define VBLK_BAD_USED 0x100
int vblk_req(struct vdev *d, uint32_t type, uint64_t sector, const struct vq_buf *data,
	     unsigned n, bool indirect, uint32_t *used_len);

#endif

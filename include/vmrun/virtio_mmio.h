/* virtio-mmio transport, version 2 ("modern") registers (virtio 1.2,
 * section 4.2), src/virtio/mmio.c.
 *
 * Each device gets a 0x200-byte register window in the MMIO hole and an
 * IOAPIC pin.  Queue notifications arrive through one ioeventfd per queue on
 * the QueueNotify register (so a notify never goes through the vCPU's exit
 * handler) and are handled on the event loop thread; the interrupt is
 * raised through an irqfd.  The guest learns of the device from its kernel
 * command line: virtio_mmio.device=0x200@BASE:IRQ, as Linux expects. */
#ifndef VMRUN_VIRTIO_MMIO_H
#define VMRUN_VIRTIO_MMIO_H

#include <stdint.h>

#include "vmrun/bus.h"
#include "vmrun/evloop.h"
#include "vmrun/virtio.h"
#include "vmrun/virtio_transport.h"

#define VIRTIO_MMIO_WINDOW 0x200
#define VIRTIO_MMIO_MAX_QUEUES 17 /* virtio-net: 8 queue pairs and a control queue */

/* Register offsets (section 4.2.2). */
#define VIRTIO_MMIO_MAGIC_VALUE 0x000 /* "virt" */
#define VIRTIO_MMIO_VERSION 0x004
#define VIRTIO_MMIO_DEVICE_ID 0x008
#define VIRTIO_MMIO_VENDOR_ID 0x00c
#define VIRTIO_MMIO_DEVICE_FEATURES 0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES 0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_QUEUE_SEL 0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX 0x034
#define VIRTIO_MMIO_QUEUE_NUM 0x038
#define VIRTIO_MMIO_QUEUE_READY 0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY 0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS 0x060
#define VIRTIO_MMIO_INTERRUPT_ACK 0x064
#define VIRTIO_MMIO_STATUS 0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW 0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH 0x084
#define VIRTIO_MMIO_QUEUE_DRIVER_LOW 0x090
#define VIRTIO_MMIO_QUEUE_DRIVER_HIGH 0x094
#define VIRTIO_MMIO_QUEUE_DEVICE_LOW 0x0a0
#define VIRTIO_MMIO_QUEUE_DEVICE_HIGH 0x0a4
#define VIRTIO_MMIO_CONFIG_GENERATION 0x0fc
#define VIRTIO_MMIO_CONFIG 0x100

#define VIRTIO_MMIO_MAGIC 0x74726976
#define VIRTIO_MMIO_VENDOR 0x4e55524d /* "MRUN" */
#define VIRTIO_MMIO_INT_VRING 1
#define VIRTIO_MMIO_INT_CONFIG 2

struct virtio_mmio;

/* What the transport needs from the VM: register ioeventfds and irqfds
 * with KVM.  In unit tests these may be stubs (fd -1: notifications then go
 * through the register write path only). */
struct virtio_mmio_host {
	int vm_fd; /* -1: no KVM (unit tests) */
	struct evloop *loop;
};

struct virtio_mmio {
	struct bus_region region;
	struct virtio_device *dev;
	struct virtio_mmio_host host;
	uint32_t irq;
	int irqfd; /* eventfd bound to @irq with KVM_IRQFD, or -1 */
	struct virtio_notifier notify[VIRTIO_MMIO_MAX_QUEUES]; /* also the ioeventfds */
	bool ioeventfd_registered[VIRTIO_MMIO_MAX_QUEUES];
	/* Register state (dev->lock). */
	uint32_t device_features_sel, driver_features_sel, queue_sel;
	uint32_t interrupt_status;
	char cmdline_arg[64]; /* "virtio_mmio.device=0x200@0x...:N" */
	bool quiesced; /* notify sources out of the loop (virtio_mmio_quiesce()) */
};

/* Set up the transport for @dev at guest-physical @base with interrupt line
 * @irq: register window (claim it on the MMIO bus yourself: m->region),
 * ioeventfds and irqfd with KVM, the event loop sources, and the guest
 * command-line declaration in m->cmdline_arg.  @dev must be filled in by
 * its device model first.  Returns 0 or -errno with a reason in @err. */
int virtio_mmio_init(struct virtio_mmio *m, struct virtio_device *dev, uint64_t base, uint32_t irq,
		     const struct virtio_mmio_host *host, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Undo virtio_mmio_init() (after the vCPUs stopped). */
void virtio_mmio_exit(struct virtio_mmio *m);

struct state_reader;
struct state_writer;

/* Stop taking queue notifications (their ioeventfds leave the event loop;
 * what arrives meanwhile stays counted); idempotent.  Event loop thread. */
void virtio_mmio_quiesce(struct virtio_mmio *m);
/* Take them again, and poll every ready queue once (a restored guest's
 * chains, and those a device handed back while quiesced, get no other
 * notification). */
void virtio_mmio_resume(struct virtio_mmio *m);

/* Save the transport's registers, placement and the device's virtio state
 * (vmrun/virtio.h) under /devices/@kind@<base>, e.g. "virtio-blk". */
void virtio_mmio_save(struct virtio_mmio *m, struct state_writer *w, const char *kind);
/* Load them into a transport built at the same base and IRQ (refused
 * otherwise).  Returns 0 or -errno with the reason recorded in @r. */
int virtio_mmio_load(struct virtio_mmio *m, struct state_reader *r, const char *kind)
	__attribute__((warn_unused_result));
/* After a load: a device the driver had started (DRIVER_OK) is activated
 * again, which re-applies its host-side set-up.  Returns 0 or -errno. */
int virtio_mmio_activate_loaded(struct virtio_mmio *m) __attribute__((warn_unused_result));

#endif

/* virtio-pci transport, modern only (virtio 1.2, section 4.1),
 * src/virtio/pci.c.
 *
 * One PCI function per virtio device (vmrun/pci.h), vendor 0x1af4, device
 * 0x1040 + the virtio device ID, revision 1:
 *   BAR0, 16 KiB memory: common configuration at 0x0000, ISR at 0x1000,
 *        device configuration at 0x2000, queue notifications at 0x3000
 *        (queue q at 0x3000 + 4 * q: notify_off_multiplier 4);
 *   BAR1, 4 KiB memory: the MSI-X table at 0x000 (one vector per queue and
 *        one for configuration changes), the PBA at 0x800.
 * Capabilities: MSI-X, then the vendor-specific common, notify, ISR and
 * device-configuration capabilities, and the PCI configuration access
 * capability (section 4.1.4.9: bar, offset and length select 1, 2 or 4
 * naturally aligned bytes of BAR0 or BAR1, and pci_cfg_data reads or writes
 * them).
 *
 * Notifications arrive through one ioeventfd per queue (registered at the
 * notify address wherever BAR0 is decoded, moved with it) and are handled on
 * the event loop thread, as on virtio-mmio.  Interrupts: with MSI-X enabled,
 * each vector has a GSI routed to its MSI message (KVM_SET_GSI_ROUTING,
 * updated when the guest changes the entry) and an irqfd; a masked vector
 * (its entry's mask bit or the function mask) sets its pending bit instead,
 * and fires when unmasked.  Without MSI-X: INTA#, level-triggered, asserted
 * while the ISR is non-zero; reading the ISR clears it and the line.  The
 * ISR's bits are set with MSI-X as well (as QEMU does), for drivers that
 * poll it; the line then stays low. */
#ifndef VMRUN_VIRTIO_PCI_H
#define VMRUN_VIRTIO_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include "vmrun/evloop.h"
#include "vmrun/pci.h"
#include "vmrun/virtio.h"
#include "vmrun/virtio_transport.h"

#define VIRTIO_PCI_VENDOR 0x1af4
#define VIRTIO_PCI_DEVICE_BASE 0x1040
#define VIRTIO_PCI_MAX_QUEUES 17 /* virtio-net: 8 queue pairs and a control queue */
#define VIRTIO_PCI_MAX_VECTORS (VIRTIO_PCI_MAX_QUEUES + 1)
#define VIRTIO_MSI_NO_VECTOR 0xffff

/* BAR0 layout. */
#define VIRTIO_PCI_BAR 0
#define VIRTIO_PCI_BAR_SIZE 0x4000
#define VIRTIO_PCI_COMMON_OFF 0x0000
#define VIRTIO_PCI_COMMON_LEN 0x38
#define VIRTIO_PCI_ISR_OFF 0x1000
#define VIRTIO_PCI_DEVICE_OFF 0x2000
#define VIRTIO_PCI_NOTIFY_OFF 0x3000
#define VIRTIO_PCI_NOTIFY_MULT 4
/* BAR1 layout. */
#define VIRTIO_PCI_MSIX_BAR 1
#define VIRTIO_PCI_MSIX_BAR_SIZE 0x1000
#define VIRTIO_PCI_MSIX_TABLE 0x000
#define VIRTIO_PCI_MSIX_PBA 0x800

/* Vendor capability types (section 4.1.4). */
#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG 3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4
#define VIRTIO_PCI_CAP_PCI_CFG 5 /* a window onto the BARs through configuration space */

/* Common configuration registers (section 4.1.4.3). */
#define VIRTIO_PCI_COMMON_DFSELECT 0x00
#define VIRTIO_PCI_COMMON_DF 0x04
#define VIRTIO_PCI_COMMON_GFSELECT 0x08
#define VIRTIO_PCI_COMMON_GF 0x0c
#define VIRTIO_PCI_COMMON_MSIX 0x10
#define VIRTIO_PCI_COMMON_NUMQ 0x12
#define VIRTIO_PCI_COMMON_STATUS 0x14
#define VIRTIO_PCI_COMMON_CFGGENERATION 0x15
#define VIRTIO_PCI_COMMON_Q_SELECT 0x16
#define VIRTIO_PCI_COMMON_Q_SIZE 0x18
#define VIRTIO_PCI_COMMON_Q_MSIX 0x1a
#define VIRTIO_PCI_COMMON_Q_ENABLE 0x1c
#define VIRTIO_PCI_COMMON_Q_NOFF 0x1e
#define VIRTIO_PCI_COMMON_Q_DESCLO 0x20
#define VIRTIO_PCI_COMMON_Q_DESCHI 0x24
#define VIRTIO_PCI_COMMON_Q_AVAILLO 0x28
#define VIRTIO_PCI_COMMON_Q_AVAILHI 0x2c
#define VIRTIO_PCI_COMMON_Q_USEDLO 0x30
#define VIRTIO_PCI_COMMON_Q_USEDHI 0x34

#define VIRTIO_PCI_ISR_QUEUE 1
#define VIRTIO_PCI_ISR_CONFIG 2

/* MSI-X capability: Message Control bits. */
#define PCI_MSIX_FLAGS_ENABLE 0x8000
#define PCI_MSIX_FLAGS_MASKALL 0x4000
#define PCI_MSIX_ENTRY_CTRL_MASKBIT 1

struct virtio_pci;

/* What the transport needs from the VM. */
struct virtio_pci_host {
	int vm_fd; /* -1: no KVM (unit tests): no ioeventfds, irqfds or routes */
	struct evloop *loop;
	struct pci_bus *bus;
	/* Without KVM: where MSI messages go (unit tests); may be NULL. */
	void (*msi)(void *opaque, uint64_t addr, uint32_t data);
	void *msi_opaque;
};

struct virtio_pci_msix_entry {
	uint32_t addr_lo, addr_hi, data, ctrl;
};

struct virtio_pci {
	struct pci_function fn;
	struct virtio_device *dev;
	struct virtio_pci_host host;
	int slot;
	struct virtio_notifier notify[VIRTIO_PCI_MAX_QUEUES]; /* also the ioeventfds */
	/* Where the ioeventfds are registered (bus lock): BAR0's address
	 * while it is decoded. */
	bool ioeventfds_on;
	uint64_t ioeventfd_base;
	/* MSI-X (dev->lock). */
	unsigned n_vectors;
	struct virtio_pci_msix_entry msix[VIRTIO_PCI_MAX_VECTORS];
	uint64_t pba;
	bool msix_enabled, msix_masked; /* from Message Control */
	uint8_t msix_cap;               /* its offset in configuration space */
	uint8_t cfg_cap;                /* the PCI configuration access capability's */
	uint32_t gsi_base;              /* vector v: GSI gsi_base + v */
	int irqfd[VIRTIO_PCI_MAX_VECTORS];
	uint64_t msi_sent;              /* messages delivered, for tests */
	/* virtio registers (dev->lock). */
	uint32_t device_features_sel, driver_features_sel;
	uint16_t queue_sel;
	uint16_t config_vector, queue_vector[VIRTIO_PCI_MAX_QUEUES];
	uint8_t isr;
	bool quiesced;
	char node_name[48];
};

/* Set up the transport for @dev (filled in by its device model) as a PCI
 * function and put it on @host->bus (the next free slot; BARs assigned,
 * decoding off until the guest or pci_bus_enable_all() turns it on);
 * eventfds, irqfds and event-loop sources with KVM when @host->vm_fd >= 0.
 * Returns 0 or -errno with a reason in @err; virtio_pci_exit() undoes a
 * partial set-up. */
int virtio_pci_init(struct virtio_pci *p, struct virtio_device *dev,
		    const struct virtio_pci_host *host, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Undo virtio_pci_init() (after the vCPUs stopped).  The function stays in
 * its bus slot (the bus goes away with the VM). */
void virtio_pci_exit(struct virtio_pci *p);

/* The guest's address of the function, "0000:00:SS.0". */
void virtio_pci_address(const struct virtio_pci *p, char *buf, size_t len);

struct state_reader;
struct state_writer;

/* As virtio_mmio_quiesce()/virtio_mmio_resume(). */
void virtio_pci_quiesce(struct virtio_pci *p);
void virtio_pci_resume(struct virtio_pci *p);

/* The state node of the device, "/devices/@kind@pci-SS", for the model's
 * sub-node. */
void virtio_pci_node(const struct virtio_pci *p, const char *kind, char *buf, size_t len);
/* Save configuration space, MSI-X table and PBA, the virtio registers and
 * the device's virtio state (vmrun/virtio.h) under virtio_pci_node(). */
void virtio_pci_save(struct virtio_pci *p, struct state_writer *w, const char *kind);
/* Load them into a transport built in the same slot with the same shape.
 * Returns 0 or -errno with the reason recorded in @r. */
int virtio_pci_load(struct virtio_pci *p, struct state_reader *r, const char *kind)
	__attribute__((warn_unused_result));
/* After a load: activate a device its driver had started.  0 or -errno. */
int virtio_pci_activate_loaded(struct virtio_pci *p) __attribute__((warn_unused_result));

#endif

/* A PCI host bridge and its bus 0 (src/devices/pci.c): configuration
 * mechanism #1 on ports 0xCF8 (address) and 0xCFC-0xCFF (data), up to 32
 * single-function devices, memory BARs decoded inside one MMIO window, the
 * capability list, INTx lines on IOAPIC pins and the VM's MSI routes
 * (KVM_SET_GSI_ROUTING).
 *
 * Guest layout (x86): the host bridge is 00:00.0; devices take slots 1..31
 * in build order.  Slot S raises INTA# on IOAPIC pin
 * PCI_INTX_GSI_BASE + (S - 1) % PCI_INTX_PINS (the MP table says so).  BARs
 * are assigned by vmrun, as firmware would, upwards from the window's base;
 * a guest may move them anywhere inside the window.  A BAR is decoded only
 * while the function's Memory Space bit is set, the BAR lies wholly inside
 * the window and it overlaps no other decoded BAR: a guest that moves one
 * onto RAM, outside the window or onto another device gets a warning and a
 * BAR that answers nothing until it is moved back.
 *
 * Threads and locks: configuration and BAR accesses come from vCPU threads.
 * @lock (a read-write lock) guards configuration space and BAR placement:
 * configuration accesses take it for writing, BAR accesses for reading.  A
 * function's callbacks run under it; they may take their device's own lock
 * (order: bus lock, then device lock, then the bus's INTx and route locks).
 * Nothing is allocated after pci_bus_init() but the MSI route table. */
#ifndef VMRUN_PCI_H
#define VMRUN_PCI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmrun/bus.h"

#define PCI_CFG_ADDR_PORT 0xcf8
#define PCI_CFG_DATA_PORT 0xcfc
#define PCI_CFG_SIZE 256
#define PCI_MAX_SLOTS 32
#define PCI_NUM_BARS 6

/* INTx wiring: IOAPIC pins 16..23, above the ISA IRQs. */
#define PCI_INTX_GSI_BASE 16
#define PCI_INTX_PINS 8
/* MSI routes take GSIs from here up (KVM's default table ends at 23). */
#define PCI_MSI_GSI_BASE 24
#define PCI_MSI_MAX_GSIS 1024

/* Configuration space registers (type 0 header). */
#define PCI_VENDOR_ID 0x00
#define PCI_DEVICE_ID 0x02
#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_REVISION_ID 0x08
#define PCI_CLASS_PROG 0x09
#define PCI_CACHE_LINE_SIZE 0x0c
#define PCI_LATENCY_TIMER 0x0d
#define PCI_HEADER_TYPE 0x0e
#define PCI_BAR0 0x10
#define PCI_SUBSYSTEM_VENDOR_ID 0x2c
#define PCI_SUBSYSTEM_ID 0x2e
#define PCI_ROM_ADDRESS 0x30
#define PCI_CAPABILITY_LIST 0x34
#define PCI_INTERRUPT_LINE 0x3c
#define PCI_INTERRUPT_PIN 0x3d
#define PCI_CAP_START 0x40

#define PCI_COMMAND_IO 0x1
#define PCI_COMMAND_MEMORY 0x2
#define PCI_COMMAND_MASTER 0x4
#define PCI_COMMAND_INTX_DISABLE 0x400
#define PCI_STATUS_INTERRUPT 0x08
#define PCI_STATUS_CAP_LIST 0x10

#define PCI_CAP_ID_VNDR 0x09
#define PCI_CAP_ID_MSIX 0x11

struct pci_bus;
struct pci_function;

struct pci_function_ops {
	/* Access @size (1, 2, 4 or 8) bytes at @offset of BAR @bar; the bus has
	 * checked offset + size <= the BAR's size.  Reads start zeroed. */
	void (*bar_read)(struct pci_function *fn, unsigned bar, uint64_t offset, void *data,
			 unsigned size);
	void (*bar_write)(struct pci_function *fn, unsigned bar, uint64_t offset,
			  const void *data, unsigned size);
	/* Optional: BAR @bar is now decoded at guest-physical @addr (@mapped),
	 * or no longer decoded.  Called for every change, under the bus lock
	 * (the transport moves its ioeventfds here). */
	void (*bar_map)(struct pci_function *fn, unsigned bar, bool mapped, uint64_t addr);
	/* Optional: the guest wrote @size bytes at @offset of configuration
	 * space (the writable bits are already applied); the function reacts
	 * to its capabilities' registers here. */
	void (*config_written)(struct pci_function *fn, uint32_t offset, unsigned size);
	/* Optional: the guest reads @size bytes at @offset of configuration
	 * space; *@val holds what the bytes say, the function may replace it
	 * (a register whose value is computed at read time). */
	void (*config_read)(struct pci_function *fn, uint32_t offset, unsigned size, uint32_t *val);
};

struct pci_bar {
	uint64_t size;   /* a power of two >= 4096; 0: not implemented */
	bool mapped;     /* decoded at @addr now */
	uint64_t addr;   /* where it is decoded (valid while mapped) */
	bool refused;    /* last placement was refused (warned once per placement) */
};

struct pci_function {
	/* Filled by pci_function_init(); then by the owner through
	 * pci_function_add_bar() and pci_function_add_cap(). */
	uint8_t cfg[PCI_CFG_SIZE];   /* configuration space as the guest reads it */
	uint8_t wmask[PCI_CFG_SIZE]; /* bits the guest may write */
	struct pci_bar bars[PCI_NUM_BARS];
	uint8_t cap_end;             /* where the next capability goes */
	uint8_t last_cap;            /* offset of the last capability, 0: none */
	const struct pci_function_ops *ops;
	void *opaque;
	const char *name;
	/* Set by pci_bus_add(). */
	struct pci_bus *bus;
	unsigned slot;
	/* INTx (the bus's intx_lock). */
	bool intx_level;
};

/* How the bus reaches the VM: the IOAPIC pin levels, and (without KVM, in
 * unit tests) MSI messages. */
struct pci_host_ops {
	/* Drive IOAPIC input @gsi to @level (KVM_IRQ_LINE). */
	void (*set_irq)(void *opaque, unsigned gsi, bool level);
};

struct pci_bus {
	struct pci_function *slots[PCI_MAX_SLOTS]; /* slot 0: the host bridge */
	struct pci_function host_bridge;
	struct bus_region addr_region, data_region; /* ports 0xCF8, 0xCFC */
	struct bus_region window;                   /* the MMIO window, on the MMIO bus */
	uint64_t next_bar;                          /* BAR assignment cursor */
	uint32_t config_address;                    /* @lock */
	pthread_rwlock_t lock;
	/* INTx: functions asserting each pin (intx_lock). */
	pthread_mutex_t intx_lock;
	uint32_t intx_assert[PCI_INTX_PINS]; /* bitmask of slots */
	const struct pci_host_ops *host;
	void *host_opaque;
	/* MSI routes (route_lock): KVM's default irqchip routes followed by
	 * one MSI route per used GSI; pushed whole with KVM_SET_GSI_ROUTING. */
	int vm_fd; /* -1: no KVM (unit tests) */
	pthread_mutex_t route_lock;
	void *routes; /* struct kvm_irq_routing with room for every GSI */
	unsigned n_msi_gsis;  /* GSIs handed out */
	uint64_t route_updates; /* KVM_SET_GSI_ROUTING calls, for tests */
	unsigned warned;      /* rate limit for guest-caused warnings */
};

/* Set up @bus: the host bridge at 00:00.0, the port regions (claim
 * bus->addr_region and bus->data_region on the port bus yourself) and the
 * MMIO window [@win_base, @win_base + @win_len) (claim bus->window on the
 * MMIO bus).  @host may be NULL (INTx goes nowhere).  @vm_fd -1: no KVM.
 * Returns 0 or -errno. */
int pci_bus_init(struct pci_bus *bus, uint64_t win_base, uint64_t win_len, int vm_fd,
		 const struct pci_host_ops *host, void *host_opaque)
	__attribute__((warn_unused_result));
void pci_bus_exit(struct pci_bus *bus);

/* Start @fn as a type 0 header for @vendor:@device, revision @rev, class
 * @class (24 bits: base, sub, prog-if), subsystem @subvendor:@subdevice,
 * INTA# when @intx.  @ops and @opaque are kept. */
void pci_function_init(struct pci_function *fn, const char *name, uint16_t vendor,
		       uint16_t device, uint8_t rev, uint32_t class, uint16_t subvendor,
		       uint16_t subdevice, bool intx, const struct pci_function_ops *ops,
		       void *opaque);

/* Give @fn a 32-bit non-prefetchable memory BAR @bar of @size bytes (a power
 * of two, 4 KiB to 256 MiB).  Before pci_bus_add().  0 or -EINVAL. */
int pci_function_add_bar(struct pci_function *fn, unsigned bar, uint64_t size)
	__attribute__((warn_unused_result));

/* Append a capability with ID @id and @len bytes of @body (the bytes after
 * the ID and next pointer; @len counts them, not the 2-byte header) to @fn's
 * list.  Its offset goes to *@offset.  The caller then marks what the guest
 * may write with pci_function_set_wmask().  0 or -ENOSPC. */
int pci_function_add_cap(struct pci_function *fn, uint8_t id, const void *body, unsigned len,
			 uint8_t *offset) __attribute__((warn_unused_result));

/* Let the guest write the bits of @mask (@len bytes, little-endian) at
 * @offset of configuration space. */
void pci_function_set_wmask(struct pci_function *fn, unsigned offset, const void *mask,
			    unsigned len);

/* Put @fn in the next free slot, assign its BARs in the window and leave
 * decoding off (the guest, or pci_bus_enable_all(), turns it on).  Returns
 * the slot (1..31) or -ENOSPC. */
int pci_bus_add(struct pci_bus *bus, struct pci_function *fn) __attribute__((warn_unused_result));

/* Turn Memory Space and Bus Master on for every function, as firmware
 * does before it hands over to a kernel that does not enumerate (the
 * guest may turn them off again). */
void pci_bus_enable_all(struct pci_bus *bus);

/* Configuration space access as through 0xCF8/0xCFC, for bus 0 and
 * function 0 of @slot: @offset + @size <= 256, @size 1, 2 or 4 (anything
 * else reads all-ones and writes nothing).  An absent slot reads
 * all-ones.  Takes the bus lock. */
uint32_t pci_config_read(struct pci_bus *bus, unsigned slot, unsigned offset, unsigned size);
void pci_config_write(struct pci_bus *bus, unsigned slot, unsigned offset, unsigned size,
		      uint32_t val);

/* Drive @fn's INTA# to @level (shared pins are the OR of their functions;
 * the Interrupt Disable bit holds it low).  Any thread. */
void pci_function_set_intx(struct pci_function *fn, bool level);
/* The IOAPIC pin of @fn's INTA#. */
unsigned pci_function_intx_gsi(const struct pci_function *fn);

/* Hand out @n consecutive GSIs for MSI routes; the first goes to *@first.
 * Before the vCPUs run.  0 or -ENOSPC. */
int pci_msi_alloc(struct pci_bus *bus, unsigned n, uint32_t *first)
	__attribute__((warn_unused_result));
/* Route GSI @gsi (from pci_msi_alloc) to the MSI message @addr/@data, or
 * remove its route (@valid false), and push the table to KVM.  Any thread.
 * 0 or -errno. */
int pci_msi_route(struct pci_bus *bus, uint32_t gsi, bool valid, uint64_t addr, uint32_t data);

struct state_reader;
struct state_writer;

/* The bus's own state, node /pci-bus: the configuration address latched at
 * 0xCF8 (a guest may be saved between its write of 0xCF8 and its access to
 * 0xCFC) and the host bridge's configuration space. */
void pci_bus_save(struct pci_bus *bus, struct state_writer *w);

/* Load what pci_bus_save() wrote.  A state without /pci-bus (written by an
 * older vmrun) leaves the bus as built.  0 or -errno (reason in @r). */
int pci_bus_load(struct pci_bus *bus, struct state_reader *r) __attribute__((warn_unused_result));

/* Save @fn's configuration space under node @node (begun by the caller):
 * property "pci-config". */
void pci_function_save(struct pci_function *fn, struct state_writer *w);
/* Load it into @fn, built with the same shape: only bits the guest could
 * write are taken from the stream (the rest must match), then the BARs are
 * placed as the guest had them.  0 or -errno with the reason in @r. */
int pci_function_load(struct pci_function *fn, struct state_reader *r, int node)
	__attribute__((warn_unused_result));

#endif

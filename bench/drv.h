/* The fake guest driver kit for in-process device benchmarks
 * (bench_blk_harness, bench_net_harness).
 *
 * A harness plays a guest's virtio driver itself, in the same process as
 * the real device model, the virtio-mmio transport and vmrun's event loop.
 * The kit is the part every such driver has:
 *  - the fake guest: its RAM (guest_mem), the event loop, the transport
 *    without KVM (vm_fd -1: a QueueNotify write reaches the device through
 *    the notify eventfd on the loop, the path an ioeventfd takes), and the
 *    device's interrupts caught by chaining dev.interrupt_used and
 *    dev.interrupt_config: they end evloop_run() the way an irqfd wakes a
 *    vCPU;
 *  - a watchdog (a timerfd on the loop) that marks the running point hung
 *    when it made no progress for DRV_HANG_S seconds;
 *  - the register window as a guest sees it (32-bit accesses through
 *    m.region.ops), the start-up handshake and feature negotiation;
 *  - split virtqueues of DRV_QUEUE_SIZE entries: set-up, descriptors, the
 *    avail ring with kicks only when the device asks (EVENT_IDX or
 *    used->flags), the used ring with re-arming like Linux's
 *    virtqueue_enable_cb().
 *
 * Life cycle: drv_init(), then the harness makes its device on k->gm and
 * k->loop, drv_attach(); per point drv_begin() ... drv_end(); at the end
 * drv_detach(), the device's own exit, drv_exit().  Everything runs on one
 * thread: the loop's. */
#ifndef VMRUN_BENCH_DRV_H
#define VMRUN_BENCH_DRV_H

#include <stdbool.h>
#include <stdint.h>

#include "bench_time.h"
#include "vmrun/evloop.h"
#include "vmrun/guest_mem.h"
#include "vmrun/virtio.h"
#include "vmrun/virtio_mmio.h"
#include "vmrun/virtio_pci.h"

#define DRV_QUEUE_SIZE 256u
#define DRV_HANG_S 10.0        /* no progress for this long with work pending */
#define DRV_MAX_REPORTED_ERRORS 10
#define DRV_MMIO_BASE 0xd0000000ull
#define DRV_MMIO_IRQ 5

/* The flags every harness takes; all false by default. */
struct drv_opts {
	bool no_event_idx; /* --no-event-idx: do not negotiate VIRTIO_F_EVENT_IDX */
	bool verify;       /* --verify: check the data, not only the counts */
	bool json;         /* --json: one JSON object per point, not a table */
	bool pci;          /* --pci: the device on virtio-pci (MSI-X), not virtio-mmio */
};

/* If @arg is one of the flags of struct drv_opts, set it in @o and return
 * true; else return false and leave @o alone. */
bool drv_opt_flag(struct drv_opts *o, const char *arg);

/* What the kit counts for the running point; part of the harness's result. */
struct drv_counts {
	uint64_t errors;     /* drv_error() calls, event-loop failures */
	uint64_t kicks;      /* QueueNotify writes */
	uint64_t interrupts; /* used-buffer interrupts */
	bool hung;           /* the watchdog gave up */
	bool needs_reset;    /* the device set NEEDS_RESET */
};

/* The driver's view of one split virtqueue: descriptor table at gpa, avail
 * ring at gpa + 0x1000, used ring at gpa + 0x2000. */
struct drv_vq {
	unsigned index;      /* the queue's number */
	uint64_t gpa;
	uint8_t *desc, *avail, *used;
	uint16_t avail_idx;  /* next avail ring slot to fill */
	uint16_t kicked_idx; /* avail_idx at the last kick decision */
	uint16_t last_used;  /* next used ring slot to read */
};

/* Bytes of guest RAM one queue's rings take at drv_vq's gpa. */
#define DRV_VQ_BYTES 0x3000ull

struct drv_kit {
	const char *name; /* message prefix: "bench_blk" */
	struct guest_mem gm;
	struct evloop loop;
	struct virtio_mmio mmio;
	bool mmio_up;
	/* --pci (set k->pci before drv_attach()): the device is a virtio-pci
	 * function on a PCI bus of its own, reached through the bus's MMIO
	 * window; the VMMIO_* register offsets the kit speaks are carried to
	 * the virtio-pci structures, and interrupts are MSI-X messages (config
	 * on vector 0, queue q on q + 1) caught where an irqfd would fire. */
	bool pci;
	struct pci_bus pcibus;
	struct bus pcimmio;
	struct virtio_pci vp;
	bool pci_up;
	uint64_t bar0, bar1;
	uint32_t isr_latched;
	struct virtio_device *dev;
	void (*transport_interrupt_used)(struct virtio_device *dev, unsigned q);
	void (*transport_interrupt_config)(struct virtio_device *dev);
	struct ev_source watchdog;

	bool event_idx;     /* VIRTIO_F_EVENT_IDX negotiated */
	bool config_irq;    /* a configuration interrupt came */
	struct drv_counts *cnt; /* the running point's, or NULL */
	char where[64];     /* the running point, for messages */
	double last_progress; /* now_s() of the last progress */
};

/* Set up guest RAM of @ram_bytes (rounded up to 2 MiB) and the event loop
 * for the harness @name.  Returns 0 or -errno (reason printed); on failure
 * too, drv_exit() must follow. */
int drv_init(struct drv_kit *k, const char *name, uint64_t ram_bytes);

/* Put @dev (made on k->gm and k->loop) behind a virtio-mmio transport with
 * no KVM, catch its interrupts and start the watchdog.  Returns 0 or
 * -errno (reason printed); on failure too, drv_detach() must follow. */
int drv_attach(struct drv_kit *k, struct virtio_device *dev);

/* Undo drv_attach() as far as it got; then the harness tears its device
 * down.  Only with no request in flight: a hung device is left alone. */
void drv_detach(struct drv_kit *k);

/* Undo drv_init() as far as it got. */
void drv_exit(struct drv_kit *k);

/* Host pointer to [@gpa, @gpa + @len) of guest RAM; the range must be in it. */
void *drv_ptr(struct drv_kit *k, uint64_t gpa, uint64_t len);

/* Start a point: count into @cnt (zeroed here), name it @where in
 * messages (printf format), no configuration interrupt seen yet. */
void drv_begin(struct drv_kit *k, struct drv_counts *cnt, const char *where, ...)
	__attribute__((format(printf, 3, 4)));

/* End the point: nothing is counted any more. */
void drv_end(struct drv_kit *k);

/* Count an error of the running point and print it, prefixed with the
 * harness and the point, the first DRV_MAX_REPORTED_ERRORS times. */
void drv_error(struct drv_kit *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A 32-bit read or write of register @off of the transport, as a guest's
 * MMIO access; a read that fails gives UINT32_MAX, a write that fails is
 * lost (the device shows it through its status). */
uint32_t drv_read32(struct drv_kit *k, uint64_t off);
void drv_write32(struct drv_kit *k, uint64_t off, uint32_t v);

/* A @size-byte (1, 2 or 4) read of configuration space offset @off;
 * UINT32_MAX when it fails. */
uint32_t drv_config_read(struct drv_kit *k, uint32_t off, unsigned size);

/* A 64-bit configuration field, read as two 32-bit halves inside one
 * configuration generation (what Linux's virtio_cread64() does). */
uint64_t drv_config_read64(struct drv_kit *k, uint32_t off);

/* Reset the device and take it to FEATURES_OK as a driver does (virtio
 * 1.2, section 3.1.1): it must be a virtio-mmio version 2 device with
 * @device_id offering every feature of @need; the driver accepts @need,
 * plus VIRTIO_F_EVENT_IDX when @event_idx and offered (k->event_idx says).
 * Returns 0 or -errno (reason printed). */
int drv_start(struct drv_kit *k, uint32_t device_id, uint64_t need, bool event_idx);

/* Give queue @vq->index fresh, zeroed rings at @vq->gpa (indexes back to
 * 0) and make it ready.  Between drv_start() and drv_driver_ok().
 * Returns 0 or -errno (reason printed). */
int drv_vq_setup(struct drv_kit *k, struct drv_vq *vq);

/* Set DRIVER_OK; the device must take it.  Returns 0 or -errno (reason
 * printed). */
int drv_driver_ok(struct drv_kit *k);

/* Bind @vq's host pointers to its rings at @gpa, queue number @index. */
void drv_vq_init(struct drv_kit *k, struct drv_vq *vq, unsigned index, uint64_t gpa);

/* Write descriptor @i of @vq. */
void drv_desc_set(struct drv_vq *vq, unsigned i, uint64_t gpa, uint32_t len, uint16_t flags,
		  uint16_t next);

/* Put chain head @head on the avail ring, not yet visible to the device:
 * see drv_publish(). */
void drv_post(struct drv_vq *vq, uint16_t head);

/* Publish the chains posted since the last call and kick the queue when
 * the device asks for it (virtio 1.2, section 2.7.13).  Inside a point
 * (drv_begin()): kicks are counted. */
void drv_publish(struct drv_kit *k, struct drv_vq *vq);

/* The device's used->idx (acquire: the elements before it are visible). */
uint16_t drv_used_idx(const struct drv_vq *vq);

/* Used element @idx of @vq: chain head id and length. */
void drv_used_elem(const struct drv_vq *vq, uint16_t idx, uint32_t *id, uint32_t *len);

/* Ask for an interrupt at the next used buffer of @vq (used_event, with
 * EVENT_IDX), then say whether one landed meanwhile: the caller must
 * look at the used ring again (Linux's virtqueue_enable_cb()). */
bool drv_rearm(struct drv_kit *k, struct drv_vq *vq);

/* Inside a point (drv_begin()), with k->last_progress kept current by
 * the caller: sleep in the event loop until the device interrupts or the
 * watchdog gives up, then acknowledge the interrupt like an ISR.  Returns
 * 0, or -errno when the point must stop: the loop's error (counted as an
 * error), -ETIMEDOUT when hung, -EIO when the device needs a reset (the
 * counts say which). */
int drv_wait_interrupt(struct drv_kit *k);

#endif

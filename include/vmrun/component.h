/* The VM's component table (src/vm.c): every part of the machine whose
 * state the guest can see (vCPUs, the in-kernel irqchip and PIT, serial,
 * RTC, each virtio device with its transport and disk) registers once, in
 * build order, with the hooks below.  Quiesce, save, load, resume, query
 * and destroy are walks over this one table: a new device adds an entry,
 * never a line in each operation.
 *
 * Threads: quiesce, resume, save and query run on the event loop thread
 * (the control socket's), with every vCPU parked for quiesce and save.
 * load runs on the main thread before any vCPU thread or the loop starts.
 * destroy runs last, after the vCPU threads are joined. */
#ifndef VMRUN_COMPONENT_H
#define VMRUN_COMPONENT_H

#include <jansson.h>

struct state_reader;
struct state_writer;

struct vm_component_ops {
	/* Stop touching guest memory and guest-visible state: requests in
	 * flight complete, chains popped but not finished are handed back to
	 * the ring (the guest re-offers them), host-side sources stop.
	 * Idempotent.  Optional. */
	void (*quiesce)(void *obj);
	/* Undo quiesce (also called once after a restore, before the vCPUs
	 * run): sources watched again, every ready queue polled once.
	 * Optional. */
	void (*resume)(void *obj);
	/* Write the component's node(s); errors go to @w.  Optional. */
	void (*save)(void *obj, struct state_writer *w);
	/* Read them back into a component built with the same shape, and
	 * re-apply their host-side effects (IRQ levels, tap offloads, ...).
	 * Returns 0 or -errno with the reason recorded in @r.  Optional (then
	 * the component has no state). */
	int (*load)(void *obj, struct state_reader *r);
	/* A JSON object for query-status's @group array, or NULL.  Optional. */
	json_t *(*query)(void *obj);
	const char *group; /* "disks", "nets", or NULL */
	/* Release what the component's init acquired.  Optional. */
	void (*destroy)(void *obj);
};

struct vm_component {
	char name[48]; /* for messages: "serial", "virtio-blk@0xd0000000" */
	const struct vm_component_ops *ops;
	void *obj;
};

#define VM_MAX_COMPONENTS 32

#endif

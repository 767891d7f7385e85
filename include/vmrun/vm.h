/* struct vm: one virtual machine and everything it owns (src/vm.c).
 * All state hangs off it; two VMs can coexist in one process. */
#ifndef VMRUN_VM_H
#define VMRUN_VM_H

#include <pthread.h>
#include <sys/types.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "vmrun/boot.h"
#include "vmrun/bus.h"
#include "vmrun/component.h"
#include "vmrun/config.h"
#include "vmrun/console.h"
#include "vmrun/virtio_blk.h"
#include "vmrun/virtio_mmio.h"
#include "vmrun/virtio_net.h"
#include "vmrun/control.h"
#include "vmrun/devices.h"
#include "vmrun/evloop.h"
#include "vmrun/guest_mem.h"

struct kvm_run;
struct kvm_cpuid2;
struct snapshot;

/* A virtio device's place in the VM, for its component hooks. */
struct vm_device {
	struct vm *vm;
	unsigned index; /* into vm->blks/blk_mmio or vm->nets/net_mmio */
};

enum vcpu_request {
	VCPU_RUN,
	VCPU_PAUSE,
	VCPU_STOP,
};

struct vcpu {
	struct vm *vm;
	unsigned id;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool thread_started;
	bool parked;   /* out of KVM_RUN, waiting on vm->state_cond (state_lock) */
	bool finished; /* the thread has returned (state_lock) */
	/* KVM binary statistics (halt watch); -1 when unavailable. */
	int stats_fd;
	off_t blocking_off;
	/* Recorded by the vCPU thread itself each time it parks (state_lock):
	 * halted with interrupts disabled and nothing pending. */
	bool halted_for_good;
};

struct vm {
	const struct vm_config *cfg;
	int kvm_fd;
	int vm_fd;
	size_t run_mmap_size;
	struct guest_mem mem;
	struct bus pio_bus;
	struct bus mmio_bus;
	struct device_host dev_host;
	struct serial serial;
	/* --disk: virtio-blk devices on virtio-mmio (vm_build_disks()). */
	struct virtio_blk *blks;
	struct virtio_mmio *blk_mmio;
	unsigned n_blks;
	/* --net: virtio-net devices on virtio-mmio, after the disks. */
	struct virtio_net *nets;
	struct virtio_mmio *net_mmio;
	unsigned n_nets;
	/* virtio_mmio.device=... for the guest, one word per device */
	char device_cmdline[(VMRUN_MAX_DISKS + VMRUN_MAX_NICS) * 48];
	struct i8042 i8042;
	struct debug_exit debug_exit;
	struct probe_ports probe_ports;
	struct rtc rtc;
	struct boot_setup boot;
	struct kvm_cpuid2 *cpuid; /* KVM_GET_SUPPORTED_CPUID, patched per vCPU */
	/* Nested host without VT-x/AMD-V and no --no-nested-workarounds: the
	 * instruction fallback runs (vmrun/nested.h, vmrun/insn.h).  Set once
	 * by vm_build(), read-only afterwards. */
	bool nested_workarounds;
	struct vcpu *vcpus;
	unsigned n_vcpus;

	/* Every component, in build order (vmrun/component.h). */
	struct vm_component comps[VM_MAX_COMPONENTS];
	unsigned n_comps;
	struct vm_device blk_slots[VMRUN_MAX_DISKS], net_slots[VMRUN_MAX_NICS];
	bool devices_quiesced; /* vm_quiesce() in force (event loop thread) */
	/* Build from saved state instead of a kernel (NULL: first boot). */
	struct snapshot *restore;
	bool start_paused;      /* vCPUs park before their first KVM_RUN */
	struct timespec process_start; /* main()'s entry, for the restore figure and --exit-json */
	/* vCPU 0's first KVM_RUN (CLOCK_MONOTONIC), written once by its
	 * thread before that call; read after the vCPUs were joined. */
	bool entered;
	struct timespec first_run;
	/* The state of the current pause, taken by its first save, so that
	 * every save until the resume writes the same machine (the TSC and
	 * clocks would otherwise tick on); the disk bases that save froze. */
	void *pause_state;
	size_t pause_state_len;
	char pause_disk_base[VMRUN_MAX_DISKS][VMRUN_DISK_PATH_MAX + 32];

	/* vCPU run state: the pause/resume/stop state machine. */
	pthread_mutex_t state_lock;
	pthread_cond_t state_cond; /* vCPUs wait here while paused */
	pthread_cond_t ack_cond;   /* the main thread waits here for parked vCPUs */
	enum vcpu_request request;
	unsigned n_parked;

	/* How the run ends: first request_exit wins. */
	atomic_bool exiting;
	int exit_status;
	char exit_reason[64];
	bool exit_quit; /* the winner was the operator's quit (control socket, Ctrl-A x) */
	int exit_eventfd; /* vCPU threads -> main loop */

	struct evloop loop;
	struct console console;
	struct ev_source exit_src, signal_src, timer_src, stdin_src, rx_src, halt_watch_src;
	int rx_eventfd; /* the UART has room for input again */
	bool stdin_polled; /* stdin is an epoll source (not a regular file) */
	bool stdin_open;
	struct control control;
	bool control_active;
	struct timespec started;
};

/* Build the VM for @cfg (which must outlive it).  Two steps: the machine's
 * shape (KVM checks, memory, irqchip, vCPUs, devices, disks, NICs, each
 * registered in the component table), then its contents: for a first boot
 * (@restore NULL) the kernel and the boot vCPU's registers; for a restore
 * the saved state of every component (@restore from snapshot_open(), its
 * memory file mapped as guest RAM).  @vm is caller storage.  On failure
 * returns -errno with a one-line message in @err; vm_destroy() must still
 * be called. */
int vm_build(struct vm *vm, const struct vm_config *cfg, struct snapshot *restore, char *err,
	     size_t errlen) __attribute__((warn_unused_result));

/* Register a component (vmrun/component.h) in build order; the builder's
 * steps call it as each part comes into existence.  Returns 0 or -ENOSPC. */
int vm_register(struct vm *vm, const char *name, const struct vm_component_ops *ops, void *obj)
	__attribute__((warn_unused_result));

/* Walk the table: quiesce every device (vCPUs paused first) / resume them.
 * Event loop thread (or before the loop runs).  Idempotent. */
void vm_quiesce(struct vm *vm);
void vm_resume_devices(struct vm *vm);

/* Freeze disk @i's image as a read-only base (a live overlay snapshot,
 * vmrun/disk_snapshot.h): its name goes to @base.  Event loop thread.
 * Returns 0 or -errno with one line in @err. */
int vm_disk_freeze(struct vm *vm, unsigned i, char *base, size_t baselen, char *err,
		   size_t errlen) __attribute__((warn_unused_result));

/* Pause vCPUs and quiesce devices / resume both: what the control socket's
 * pause and resume do.  vm_pause returns 0 or -errno. */
int vm_pause(struct vm *vm) __attribute__((warn_unused_result));
void vm_resume(struct vm *vm);

/* Run until the guest or the operator ends it; returns the exit status
 * (enum vmrun_exit_status, or a debug-exit status). */
int vm_run(struct vm *vm);

/* Fill @rep (vmrun/exit_report.h) with what vm_run() returning @status
 * leaves to report: kind, debug-exit value, reason and the times to the
 * first guest instruction and console byte.  ms_total and the version are
 * the caller's.  Call after vm_run(), before vm_destroy(). */
struct exit_report;
void vm_exit_report(const struct vm *vm, int status, struct exit_report *rep);

/* Release everything vm_build() acquired; safe after a failed build. */
void vm_destroy(struct vm *vm);

/* End the run with @status (first caller wins); callable from any thread. */
void vm_request_exit(struct vm *vm, int status, const char *reason);

/* ---- src/vcpu/vcpu.c ---- */

/* Create vCPU @id: KVM_CREATE_VCPU, the kvm_run mapping and its CPUID. */
int vcpu_init(struct vm *vm, struct vcpu *vcpu, unsigned id) __attribute__((warn_unused_result));
void vcpu_exit(struct vcpu *vcpu);

/* Start every vCPU thread.  Returns 0 or -errno. */
int vcpus_start(struct vm *vm) __attribute__((warn_unused_result));

/* Park every running vCPU outside KVM_RUN and wait until each acknowledged.
 * Returns 0, or -ETIMEDOUT if one did not within a few seconds. */
int vcpus_pause(struct vm *vm) __attribute__((warn_unused_result));
/* Let the vCPUs run again and wait (a few seconds at most) until each parked
 * one has left its pause. */
void vcpus_resume(struct vm *vm);

/* Stop and join every vCPU thread. */
void vcpus_stop(struct vm *vm);

/* Whether the vCPUs are paused (the main thread's view). */
bool vcpus_paused(struct vm *vm);

/* ---- src/vcpu/halt_watch.c ---- */

/* Open @v's KVM statistics and find its "blocking" counter; on any failure
 * the watch works without it (stats_fd -1). */
void vcpu_stats_open(struct vcpu *v);
void vcpu_stats_close(struct vcpu *v);

/* Called by @v's own thread while parked: set v->halted_for_good. */
void vcpu_record_halt_state(struct vcpu *v);

/* Main thread, periodically: end the run with VMRUN_EXIT_HLT once every vCPU
 * is halted with interrupts disabled and nothing pending, a state no guest
 * leaves (Linux's halt and its poweroff without ACPI).  Does nothing while
 * the operator paused the guest. */
void vm_halt_watch_check(struct vm *vm);

#endif

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
#include "vmrun/pci.h"
#include "vmrun/virtio_mmio.h"
#include "vmrun/virtio_net.h"
#include "vmrun/virtio_pci.h"
#include "vmrun/control.h"
#include "vmrun/devices.h"
#include "vmrun/evloop.h"
#include "vmrun/acpi.h"
#include "vmrun/guest_mem.h"
#include "vmrun/pvpanic.h"
#include "vmrun/sandbox.h"

struct kvm_run;
struct kvm_cpuid2;
struct snapshot;
struct migration;
struct state_reader;

/* A virtio device's place in the VM, for its component hooks. */
struct vm_device {
	struct vm *vm;
	unsigned index; /* into vm->blks/blk_mmio/blk_pci or vm->nets/net_mmio/net_pci */
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
	/* "nmi" asked for one (atomic): injected (KVM_NMI) by the vCPU's own
	 * thread before its next KVM_RUN. */
	bool nmi_pending;
	/* Auto-converge: when this vCPU last came out of a throttle sleep
	 * (its own thread only). */
	struct timespec throttle_woke;
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
	/* PCI bus 0 and its host bridge (vmrun/pci.h), always present. */
	struct pci_bus pci;
	bool pci_ready;
	/* --disk: virtio-blk devices on virtio-mmio or virtio-pci, as each
	 * disk's transport= says (vm_build_disks()): disk i uses blk_mmio[i]
	 * or blk_pci[i]. */
	struct virtio_blk *blks;
	struct virtio_mmio *blk_mmio;
	struct virtio_pci *blk_pci;
	unsigned n_blks;
	/* --net: virtio-net devices, after the disks, likewise. */
	struct virtio_net *nets;
	struct virtio_mmio *net_mmio;
	struct virtio_pci *net_pci;
	unsigned n_nets;
	/* virtio_mmio.device=... for the guest, one word per device */
	char device_cmdline[(VMRUN_MAX_DISKS + VMRUN_MAX_NICS) * 48];
	struct i8042 i8042;
	struct debug_exit debug_exit;
	struct probe_ports probe_ports;
	struct rtc rtc;
	/* ACPI's PM1 and reset registers (unless --acpi off) and pvpanic
	 * (unless --no-pvpanic): vm_build_platform(). */
	struct acpi_pm acpi_pm;
	struct pvpanic pvpanic;
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

	/* vm_call_on_loop(): one call at a time from another thread. */
	pthread_mutex_t call_lock;
	pthread_cond_t call_cond;
	struct vm_loop_call *call_pending;
	bool calls_closed; /* the loop has stopped: calls fail */
	int call_eventfd;
	struct ev_source call_src;
	/* The outgoing migration (src/migrate/source.c), or NULL. */
	struct migration *migration;
	/* Auto-converge: each vCPU sleeps this many thousandths of
	 * VCPU_THROTTLE_PERIOD_US when kicked (vcpus_throttle_kick()). */
	atomic_uint throttle_permille;
	/* Set by a completed outgoing migration: the run ended because the
	 * guest now runs elsewhere. */
	bool migrated_away;
	/* Capabilities, --user and the seccomp filters, applied by vm_run()
	 * before the vCPUs start; each thread enters its filter itself. */
	struct sandbox sandbox;
};

/* Run @fn(@vm, @arg) on the event loop thread (the devices' thread) and
 * wait for it; for threads other than the loop's (the migration sender).
 * Returns @fn's result, or -ECANCELED when the loop stopped before it ran. */
struct vm_loop_call {
	int (*fn)(struct vm *vm, void *arg);
	void *arg;
	int result;
	bool done;
};
int vm_call_on_loop(struct vm *vm, int (*fn)(struct vm *vm, void *arg), void *arg);

/* The whole machine's state stream (the components' save hooks after the
 * description, snapshot_describe() without disk bases) of a paused,
 * quiesced VM, malloc'd into *@blob.  Event loop thread.  Returns 0 or
 * -errno with one line in @err. */
int vm_state_blob(struct vm *vm, void **blob, size_t *len, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Load a state stream's components into a VM built from an incoming
 * migration's description; devices stay quiesced until vm_run().  Main
 * thread, before vm_run().  Returns 0 or -errno with one line in @err. */
int vm_load_components(struct vm *vm, struct state_reader *r, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Open each disk of an incoming migration again, now locked, in place of
 * the unlocked handle the build opened (whose cached metadata may be
 * stale).  Main thread.  Returns 0 or -errno with one line in @err. */
int vm_take_disks(struct vm *vm, char *err, size_t errlen) __attribute__((warn_unused_result));

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

/* Throttling (auto-converge): kick every vCPU out of KVM_RUN; each then
 * sleeps long enough that its sleep is vm->throttle_permille of its time
 * (at most VCPU_THROTTLE_MAX_SLEEP_US at once; a pause or stop request
 * ends the sleep).  The caller kicks once per VCPU_THROTTLE_PERIOD_US. */
#define VCPU_THROTTLE_PERIOD_US 10000
#define VCPU_THROTTLE_MAX_SLEEP_US 1000000
void vcpus_throttle_kick(struct vm *vm);

/* A non-maskable interrupt for every vCPU: each thread injects it before
 * its next KVM_RUN (kicked out of the current one; a paused vCPU takes it
 * when resumed). */
void vcpus_nmi(struct vm *vm);

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

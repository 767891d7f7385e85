// SPDX-License-Identifier: MIT
/*
 * Halt watch: notice a guest that has stopped for good.
 *
 * Without ACPI a Linux guest cannot power itself off: `poweroff` and `halt`
 * end in every CPU executing HLT with interrupts disabled.  With the
 * in-kernel LAPIC such a HLT never leaves KVM_RUN, so without this watch
 * vmrun would wait for --timeout.  A vCPU halted with RFLAGS.IF clear and no
 * NMI or exception pending can only be woken by an NMI or INIT, which only
 * another running vCPU could send; once every vCPU is in that state at the
 * same moment (or waits for the INIT/SIPI that only a running CPU could
 * send), nothing can ever run again and the run ends with
 * VMRUN_EXIT_HLT.  (Linux's idle loop halts with interrupts enabled, and an
 * offline CPU halted with them disabled is woken by INIT from a CPU that is
 * still running: neither is mistaken for the end.)
 *
 * The check runs once a second from the main loop.  Cheap first: each
 * vCPU's KVM binary statistics carry "blocking" (the vCPU sleeps in KVM's
 * halt path); only when every vCPU is blocking are they paused, so that the
 * snapshot of their states is consistent, and each parked vCPU thread
 * records its own state (vcpu_record_halt_state()).
 */
#include <errno.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "vmrun/exit_status.h"
#include "vmrun/log.h"
#include "vmrun/vm.h"

#define RFLAGS_IF (1ull << 9)

/* Find the "blocking" counter in @fd's descriptor table; its byte offset in
 * the file, or -1. */
static off_t stats_find_blocking(int fd)
{
	struct kvm_stats_header hdr;
	size_t desc_size;
	char *descs = NULL;
	off_t found = -1;

	if (pread(fd, &hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr))
		return -1;
	if (hdr.num_desc == 0 || hdr.num_desc > 4096 || hdr.name_size == 0 || hdr.name_size > 4096)
		return -1;
	desc_size = sizeof(struct kvm_stats_desc) + hdr.name_size;
	descs = malloc(desc_size * hdr.num_desc);
	if (!descs)
		return -1;
	if (pread(fd, descs, desc_size * hdr.num_desc, hdr.desc_offset) !=
	    (ssize_t)(desc_size * hdr.num_desc))
		goto out;
	for (uint32_t i = 0; i < hdr.num_desc; i++) {
		struct kvm_stats_desc *d = (struct kvm_stats_desc *)(descs + i * desc_size);

		if (strncmp(d->name, "blocking", hdr.name_size) == 0 && d->size == 1) {
			found = (off_t)hdr.data_offset + d->offset;
			break;
		}
	}
out:
	free(descs);
	return found;
}

void vcpu_stats_open(struct vcpu *v)
{
	v->stats_fd = -1;
	v->blocking_off = -1;
	if (ioctl(v->vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_BINARY_STATS_FD) <= 0)
		return;
	v->stats_fd = ioctl(v->fd, KVM_GET_STATS_FD, NULL);
	if (v->stats_fd < 0) {
		v->stats_fd = -1;
		return;
	}
	v->blocking_off = stats_find_blocking(v->stats_fd);
}

void vcpu_stats_close(struct vcpu *v)
{
	if (v->stats_fd >= 0)
		close(v->stats_fd);
	v->stats_fd = -1;
}

/* Whether @v may be halted: true when KVM says it sleeps in its halt path,
 * and also when the statistic is unavailable (the pause then decides). */
static bool vcpu_maybe_blocking(struct vcpu *v)
{
	uint64_t val;

	if (v->stats_fd < 0 || v->blocking_off < 0)
		return true;
	if (pread(v->stats_fd, &val, sizeof(val), v->blocking_off) != (ssize_t)sizeof(val))
		return true;
	return val != 0;
}

void vcpu_record_halt_state(struct vcpu *v)
{
	struct kvm_mp_state mp;
	struct kvm_regs regs;
	struct kvm_vcpu_events ev;

	v->halted_for_good = false;
	if (ioctl(v->fd, KVM_GET_MP_STATE, &mp) < 0)
		return;
	/* An AP waiting for INIT/SIPI needs a running CPU to start it. */
	if (mp.mp_state == KVM_MP_STATE_UNINITIALIZED || mp.mp_state == KVM_MP_STATE_INIT_RECEIVED) {
		v->halted_for_good = true;
		return;
	}
	if (mp.mp_state != KVM_MP_STATE_HALTED)
		return;
	if (ioctl(v->fd, KVM_GET_REGS, &regs) < 0 || (regs.rflags & RFLAGS_IF))
		return;
	if (ioctl(v->fd, KVM_GET_VCPU_EVENTS, &ev) < 0)
		return;
	if (ev.nmi.pending || ev.nmi.injected || ev.exception.injected || ev.smi.pending)
		return;
	v->halted_for_good = true;
}

void vm_halt_watch_check(struct vm *vm)
{
	bool all_halted = true;

	if (atomic_load(&vm->exiting) || vcpus_paused(vm))
		return;
	for (unsigned i = 0; i < vm->n_vcpus; i++)
		if (!vcpu_maybe_blocking(&vm->vcpus[i]))
			return;
	if (vcpus_pause(vm) < 0) {
		vcpus_resume(vm);
		return;
	}
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		if (!vm->vcpus[i].halted_for_good)
			all_halted = false;
	}
	if (all_halted) {
		vm_request_exit(vm, VMRUN_EXIT_HLT, "all-vcpus-halted");
		return; /* vcpus_stop() wakes the parked threads */
	}
	vcpus_resume(vm);
}

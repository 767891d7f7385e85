/* x86 KVM state in the state stream (src/arch/x86_64/kvm_state.c): each
 * vCPU's registers and in-kernel LAPIC, and the VM's in-kernel PIC, IOAPIC,
 * PIT and clock.  Nodes (include/vmrun/state.h), each with its own version:
 *
 *   /cpus                 the CPUID table the vCPUs were given, as one u32
 *                         array per column ("cpuid-function", "cpuid-index",
 *                         ... "cpuid-edx"), and "#address-cells"/"#size-cells"
 *                         for the cpu nodes' "reg"; x86_cpuid_save() owns
 *                         this node and its version
 *   /cpus/cpu@N           one per vCPU (N decimal, "reg" = <N>): "rip",
 *                         "rflags", "cr3", "efer", "apic-base", segments,
 *                         "msr-index"/"msr-value", "lapic", "xsave", ...
 *   /kvm/pic-master, /kvm/pic-slave, /kvm/ioapic, /kvm/pit, /kvm/clock
 *
 * The property layouts are listed at the top of kvm_state.c.  Loading
 * validates every length and range before anything reaches KVM.
 *
 * Every function here is called while no vCPU is inside KVM_RUN (the vCPUs
 * are parked or not started yet); any thread may call them. */
#ifndef VMRUN_X86_STATE_H
#define VMRUN_X86_STATE_H

#include <stddef.h>

struct kvm_cpuid2;
struct state_reader;
struct state_writer;

/* Save the CPUID table @cpuid (as KVM_SET_CPUID2 got it) under /cpus. */
void x86_cpuid_save(const struct kvm_cpuid2 *cpuid, struct state_writer *w);

/* Load /cpus's CPUID table into @out (room for @max_entries entries; more
 * in the stream is refused) and check it against this host
 * (KVM_GET_SUPPORTED_CPUID on @kvm_fd): every feature bit the guest saw in
 * leaves 1, 7 (all sub-leaves), 0xd (sub-leaf 1) and 0x80000001 must be
 * supported here, or it fails naming the leaves, registers and bits
 * missing.  Bits a VMM or the guest sets rather than the hardware
 * (hypervisor, HTT, OSXSAVE, OSPKE, and the TSC-deadline timer where KVM
 * emulates it) are not compared.  The caller then gives @out to each vCPU
 * (x86_cpuid_patch() sets the APIC IDs).  Returns 0 or -errno (-ENOTSUP for
 * missing features) with the reason recorded in @r; on failure @out's
 * contents are unspecified. */
int x86_cpuid_load(int kvm_fd, struct state_reader *r, struct kvm_cpuid2 *out,
		   unsigned max_entries) __attribute__((warn_unused_result));

/* Save vCPU @id (@vcpu_fd) under /cpus/cpu@<id>: MP state, regs, sregs,
 * XSAVE (KVM_GET_XSAVE2's size where supported), XCRs, debug registers,
 * LAPIC, every MSR KVM_GET_MSR_INDEX_LIST names that reads back, vCPU
 * events, and the TSC frequency.  Nothing in the vCPU changes.  An ioctl
 * that fails is logged (log_error) and its -errno becomes @w's error. */
void x86_vcpu_save(int kvm_fd, int vcpu_fd, unsigned id, struct state_writer *w);

/* Load vCPU @id's state from the stream into @vcpu_fd, a vCPU created with
 * its CPUID already set.  The order matters and is documented in the code
 * (TSC frequency, sregs, regs, XSAVE, XCRs, LAPIC, MSRs with the TSC before
 * TSC_DEADLINE, debug registers, MP state, events last).  Returns 0 or
 * -errno with the reason recorded in @r (a field out of range, an MSR this
 * host refuses, a TSC frequency it cannot provide); after a failure the vCPU
 * may be partly loaded: discard it. */
int x86_vcpu_load(int kvm_fd, int vcpu_fd, unsigned id, struct state_reader *r)
	__attribute__((warn_unused_result));

/* Save the VM's PIC master and slave, IOAPIC, PIT (KVM_GET_PIT2) and KVM
 * clock (with KVM_CLOCK_REALTIME where the host has it).  Needs
 * KVM_CREATE_IRQCHIP and KVM_CREATE_PIT2 done on @vm_fd. */
void x86_vm_save(int kvm_fd, int vm_fd, struct state_writer *w);

/* Load them into @vm_fd (irqchip and PIT created, vCPUs loaded first).  The
 * clock is set with KVM_CLOCK_REALTIME when both the save and this host had
 * it, so the guest's clock has advanced by the real time that passed.
 * Order: PIC master, slave, IOAPIC, PIT, clock.  Returns 0 or -errno with
 * the reason recorded in @r (after a failure the VM may be partly loaded). */
int x86_vm_load(int kvm_fd, int vm_fd, struct state_reader *r)
	__attribute__((warn_unused_result));

#endif

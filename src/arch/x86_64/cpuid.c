/* The CPUID table each vCPU gets: KVM's supported set, made per-vCPU.
 * (On nested hosts without VT-x, KVM_SET_CPUID2 may be ignored by the
 * platform; the table is still what a real host's guest sees.) */
#include <linux/kvm.h>

#include "vmrun/x86.h"

#define CPUID_1_ECX_HYPERVISOR (1u << 31)
#define CPUID_1_EDX_HTT (1u << 28)
#define CPUID_TOPO_LEVEL_SMT 1u
#define CPUID_TOPO_LEVEL_CORE 2u

/* Bits needed to number @n things (0 for 1). */
static unsigned bits_for(unsigned n)
{
	unsigned b = 0;

	while ((1u << b) < n)
		b++;
	return b;
}

void x86_cpuid_patch(struct kvm_cpuid2 *cpuid, unsigned vcpu_id, unsigned ncpus)
{
	unsigned core_bits = bits_for(ncpus);

	for (uint32_t i = 0; i < cpuid->nent; i++) {
		struct kvm_cpuid_entry2 *e = &cpuid->entries[i];

		switch (e->function) {
		case 1:
			/* EBX[31:24] initial APIC ID, EBX[23:16] logical
			 * processors per package. */
			e->ebx = (e->ebx & 0x0000ffffu) | (vcpu_id << 24) |
				 ((ncpus & 0xffu) << 16);
			e->ecx |= CPUID_1_ECX_HYPERVISOR;
			if (ncpus > 1)
				e->edx |= CPUID_1_EDX_HTT;
			else
				e->edx &= ~CPUID_1_EDX_HTT;
			break;
		case 4:
			/* EAX[31:26]: cores per package - 1; one thread per core. */
			e->eax = (e->eax & 0x03ffffffu) | (((ncpus - 1) & 0x3fu) << 26);
			e->eax &= ~(0xfffu << 14);
			break;
		case 0xb:
		case 0x1f:
			/* Extended topology: level 0 SMT (one thread), level 1
			 * core (ncpus), then the terminating invalid level. */
			if (e->index == 0) {
				e->eax = 0;
				e->ebx = 1;
				e->ecx = CPUID_TOPO_LEVEL_SMT << 8;
			} else if (e->index == 1) {
				e->eax = core_bits;
				e->ebx = ncpus;
				e->ecx = (CPUID_TOPO_LEVEL_CORE << 8) | 1;
			} else {
				e->eax = 0;
				e->ebx = 0;
				e->ecx = e->index & 0xff;
			}
			e->edx = vcpu_id;
			break;
		default:
			break;
		}
	}
}

/* Register dump for runs that end in an error: what a developer needs to see
 * where the guest was and what it executed. */
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vmrun/guest_mem.h"
#include "vmrun/x86.h"

static void dump_segment(const char *name, const struct kvm_segment *s)
{
	fprintf(stderr, "  %-4s sel=0x%04x base=0x%016llx limit=0x%08x type=%u dpl=%u p=%u l=%u db=%u\n",
		name, s->selector, (unsigned long long)s->base, s->limit, s->type, s->dpl,
		s->present, s->l, s->db);
}

void x86_dump_vcpu(int vcpu_fd, unsigned vcpu_id, const struct guest_mem *gm)
{
	struct kvm_regs r;
	struct kvm_sregs s;
	struct kvm_translation tr = { 0 };

	if (ioctl(vcpu_fd, KVM_GET_REGS, &r) < 0 || ioctl(vcpu_fd, KVM_GET_SREGS, &s) < 0) {
		fprintf(stderr, "vmrun: vCPU %u: registers unavailable\n", vcpu_id);
		return;
	}
	fprintf(stderr,
		"vmrun: vCPU %u registers:\n"
		"  rip=0x%016llx rflags=0x%08llx\n"
		"  rax=0x%016llx rbx=0x%016llx rcx=0x%016llx rdx=0x%016llx\n"
		"  rsi=0x%016llx rdi=0x%016llx rsp=0x%016llx rbp=0x%016llx\n"
		"  r8 =0x%016llx r9 =0x%016llx r10=0x%016llx r11=0x%016llx\n"
		"  r12=0x%016llx r13=0x%016llx r14=0x%016llx r15=0x%016llx\n"
		"  cr0=0x%016llx cr2=0x%016llx cr3=0x%016llx cr4=0x%016llx\n"
		"  efer=0x%llx apic_base=0x%llx\n",
		vcpu_id, r.rip, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp,
		r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, s.cr0, s.cr2, s.cr3, s.cr4,
		s.efer, s.apic_base);
	dump_segment("cs", &s.cs);
	dump_segment("ss", &s.ss);
	dump_segment("ds", &s.ds);
	dump_segment("tr", &s.tr);
	fprintf(stderr, "  gdt base=0x%llx limit=0x%x idt base=0x%llx limit=0x%x\n",
		s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit);

	tr.linear_address = s.cs.base + r.rip;
	if (ioctl(vcpu_fd, KVM_TRANSLATE, &tr) == 0 && tr.valid) {
		const uint8_t *code = guest_mem_ptr(gm, tr.physical_address, 1);

		if (code) {
			/* Stay inside the page: the next one may not be RAM. */
			unsigned n = 4096 - (unsigned)(tr.physical_address & 0xfff);

			n = n < 16 ? n : 16;
			fprintf(stderr, "  code at 0x%llx:", (unsigned long long)tr.physical_address);
			for (unsigned i = 0; i < n; i++)
				fprintf(stderr, " %02x", code[i]);
			fputc('\n', stderr);
		}
	}
}

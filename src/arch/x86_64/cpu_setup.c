/* Initial vCPU state for the two boot protocols, and the boot GDT and page
 * tables they rely on. */
#include <errno.h>
#include <stdbool.h>
#include <linux/kvm.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vmrun/guest_mem.h"
#include "vmrun/x86.h"

#define CR0_PE (1ull << 0)
#define CR0_ET (1ull << 4)
#define CR0_NE (1ull << 5)
#define CR0_PG (1ull << 31)
#define CR4_PAE (1ull << 5)
#define EFER_LME (1ull << 8)
#define EFER_LMA (1ull << 10)
#define PTE_P 0x1ull
#define PTE_RW 0x2ull
#define PTE_PS 0x80ull

/* GDT descriptors: base 0, limit 4 GiB, granularity 4 KiB. */
#define GDT_CODE64 0x00af9b000000ffffull /* L=1, DPL0, execute/read, accessed */
#define GDT_DATA   0x00cf93000000ffffull /* D/B=1, DPL0, read/write, accessed */
#define GDT_CODE32 0x00cf9b000000ffffull /* D/B=1, DPL0, execute/read, accessed */

int x86_write_boot_tables(const struct guest_mem *gm)
{
	uint64_t gdt[5] = { 0, 0, GDT_CODE64, GDT_DATA, GDT_CODE32 };
	uint64_t *pml4 = guest_mem_ptr(gm, X86_PML4, 4096);
	uint64_t *pdpt = guest_mem_ptr(gm, X86_PDPT, 4096);
	uint64_t *pd = guest_mem_ptr(gm, X86_PD, 4 * 4096);
	int r;

	r = guest_mem_write(gm, X86_BOOT_GDT, gdt, sizeof(gdt));
	if (r)
		return r;
	if (!pml4 || !pdpt || !pd)
		return -EFAULT;
	memset(pml4, 0, 4096);
	memset(pdpt, 0, 4096);
	pml4[0] = X86_PDPT | PTE_P | PTE_RW;
	for (uint64_t i = 0; i < 4; i++) {
		pdpt[i] = (X86_PD + i * 4096) | PTE_P | PTE_RW;
		for (uint64_t j = 0; j < 512; j++)
			pd[i * 512 + j] = ((i << 30) | (j << 21)) | PTE_P | PTE_RW | PTE_PS;
	}
	return 0;
}

static struct kvm_segment flat_segment(uint16_t selector, uint8_t type, bool code64, bool db)
{
	return (struct kvm_segment){
		.base = 0, .limit = 0xffffffff, .selector = selector, .type = type,
		.present = 1, .dpl = 0, .db = db, .s = 1, .l = code64, .g = 1,
	};
}

static int set_entry_state(int vcpu_fd, struct kvm_sregs *sregs, struct kvm_regs *regs)
{
	if (ioctl(vcpu_fd, KVM_SET_SREGS, sregs) < 0)
		return -errno;
	if (ioctl(vcpu_fd, KVM_SET_REGS, regs) < 0)
		return -errno;
	return 0;
}

static void load_data_segments(struct kvm_sregs *s, struct kvm_segment ds)
{
	s->ds = s->es = s->fs = s->gs = s->ss = ds;
}

int x86_setup_long_mode(int vcpu_fd, uint64_t entry, uint64_t boot_params)
{
	struct kvm_sregs s;
	struct kvm_regs regs = { 0 };

	if (ioctl(vcpu_fd, KVM_GET_SREGS, &s) < 0)
		return -errno;
	s.cs = flat_segment(X86_BOOT_CS, 0xb, true, false);
	load_data_segments(&s, flat_segment(X86_BOOT_DS, 0x3, false, true));
	s.gdt.base = X86_BOOT_GDT;
	s.gdt.limit = 5 * 8 - 1;
	s.cr3 = X86_PML4;
	s.cr4 = CR4_PAE;
	s.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_PG;
	s.efer = EFER_LME | EFER_LMA;
	regs.rflags = 0x2;
	regs.rip = entry;
	regs.rsi = boot_params;
	regs.rsp = X86_BOOT_STACK;
	return set_entry_state(vcpu_fd, &s, &regs);
}

int x86_setup_pvh(int vcpu_fd, uint64_t entry, uint64_t start_info)
{
	struct kvm_sregs s;
	struct kvm_regs regs = { 0 };

	if (ioctl(vcpu_fd, KVM_GET_SREGS, &s) < 0)
		return -errno;
	s.cs = flat_segment(X86_BOOT_CS32, 0xb, false, true);
	load_data_segments(&s, flat_segment(X86_BOOT_DS, 0x3, false, true));
	s.gdt.base = X86_BOOT_GDT;
	s.gdt.limit = 5 * 8 - 1;
	s.cr0 = CR0_PE | CR0_ET;
	s.cr3 = 0;
	s.cr4 = 0;
	s.efer = 0;
	regs.rflags = 0x2;
	regs.rip = entry;
	regs.rbx = start_info;
	return set_entry_state(vcpu_fd, &s, &regs);
}

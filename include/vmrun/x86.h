/* x86-64 machine layout and CPU set-up (src/arch/x86_64/). */
#ifndef VMRUN_X86_H
#define VMRUN_X86_H

#include <stddef.h>
#include <stdint.h>

struct guest_mem;
struct kvm_cpuid2;

/* Guest-physical layout.  RAM fills [0, 3 GiB) and continues at 4 GiB; the
 * hole [3 GiB, 4 GiB) holds MMIO: the IOAPIC, LAPIC and KVM's TSS pages. */
#define X86_MMIO_HOLE_START 0xc0000000ull
#define X86_MMIO_HOLE_END   0x100000000ull
#define X86_IOAPIC_BASE     0xfec00000ull
#define X86_LAPIC_BASE      0xfee00000ull
#define X86_IDENTITY_MAP    0xfffbc000ull /* KVM_SET_IDENTITY_MAP_ADDR, one page */
#define X86_TSS_ADDR        0xfffbd000ull /* KVM_SET_TSS_ADDR, three pages */
/* PCI memory BARs (vmrun/pci.h): clear of the virtio-mmio windows at
 * 0xd0000000 and of the IOAPIC.  PCI slot S's INTA# is IOAPIC pin
 * X86_PCI_INTX_PIN(S), as the MP table says. */
#define X86_PCI_MMIO_BASE   0xe0000000ull
#define X86_PCI_MMIO_SIZE   0x10000000ull
#define X86_PCI_SLOTS       32
#define X86_PCI_INTX_PIN(slot) (16u + ((slot) - 1u) % 8u)

/* Low memory used by the boot path (all below 1 MiB). */
#define X86_BOOT_GDT        0x0500ull
#define X86_PVH_START_INFO  0x6000ull  /* struct hvm_start_info, then its memmap */
#define X86_BOOT_PARAMS     0x7000ull  /* Linux zero page */
#define X86_BOOT_STACK      0x8ff0ull
#define X86_PML4            0x9000ull  /* PML4, PDPT, 4 PDs: identity map of 4 GiB */
#define X86_PDPT            0xa000ull
#define X86_PD              0xb000ull
#define X86_CMDLINE         0x20000ull
#define X86_EBDA_START      0x9fc00ull /* reserved from here to 1 MiB */
#define X86_MPTABLE         0xf0000ull
#define X86_HIGH_MEM        0x100000ull /* kernels load at or above 1 MiB */

#define X86_BOOT_CS 0x10
#define X86_BOOT_DS 0x18
#define X86_BOOT_CS32 0x20

#define E820_RAM 1
#define E820_RESERVED 2
#define X86_E820_MAX 8

struct e820_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
} __attribute__((packed));

/* RAM ranges for @ram_size bytes around the MMIO hole: fills @gpa/@size
 * (at most 2 entries) and returns their number. */
unsigned x86_layout_ram(uint64_t ram_size, uint64_t gpa[2], uint64_t size[2]);

/* The guest's e820 map for @ram_size bytes: low RAM below the EBDA, the
 * reserved EBDA/BIOS area, RAM from 1 MiB to the hole, RAM above 4 GiB.
 * Returns the number of entries written (at most @max), or -ENOSPC. */
int x86_e820_build(uint64_t ram_size, struct e820_entry *out, unsigned max);

/* Build an Intel MP table (floating pointer at @gpa, configuration table right
 * after it) for @ncpus CPUs with APIC IDs 0..ncpus-1 and one IOAPIC with ID
 * @ncpus, PCI bus 0 (INTA# of slots 1-31 on X86_PCI_INTX_PIN) and ISA bus 1
 * (IRQs 0-15 wired to IOAPIC pins 0-15), into @buf (host view of @gpa).  Returns the bytes used, or -ENOSPC when @len is too small. */
int x86_mptable_build(void *buf, size_t len, uint64_t gpa, unsigned ncpus);

/* Patch a copy of KVM_GET_SUPPORTED_CPUID's table for vCPU @vcpu_id of
 * @ncpus: APIC IDs in leaves 1, 0xb and 0x1f, the logical processor count,
 * the hypervisor bit and a flat one-core-per-vCPU topology.  @cpuid is
 * modified in place. */
void x86_cpuid_patch(struct kvm_cpuid2 *cpuid, unsigned vcpu_id, unsigned ncpus);

/* Write the boot GDT and identity page tables (first 4 GiB, 2 MiB pages)
 * into guest memory.  Returns 0 or -EFAULT. */
int x86_write_boot_tables(const struct guest_mem *gm) __attribute__((warn_unused_result));

/* Put vCPU @vcpu_fd in 64-bit long mode per the Linux x86-64 boot protocol:
 * flat CS/DS from the boot GDT, paging with the identity map, RIP = @entry,
 * RSI = @boot_params.  x86_write_boot_tables() must have run.  0 or -errno. */
int x86_setup_long_mode(int vcpu_fd, uint64_t entry, uint64_t boot_params)
	__attribute__((warn_unused_result));

/* Put vCPU @vcpu_fd in the PVH entry state: 32-bit protected mode, paging off,
 * flat segments, EIP = @entry, EBX = @start_info.  0 or -errno. */
int x86_setup_pvh(int vcpu_fd, uint64_t entry, uint64_t start_info)
	__attribute__((warn_unused_result));

/* Print the vCPU's registers, segments, control registers and, when RIP
 * translates to RAM, the instruction bytes there, to stderr. */
void x86_dump_vcpu(int vcpu_fd, unsigned vcpu_id, const struct guest_mem *gm);

#endif

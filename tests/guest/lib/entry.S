/* Boot glue shared by every test guest: the two entry points (the Linux x86-64
 * boot protocol's 64-bit entry, ELF e_entry, and the PVH 32-bit entry named by
 * the Xen ELF note), the guest's own GDT, identity page tables and boot stack.
 *
 * Both entries converge on long_common with EDI = entry kind and RSI = the
 * command line's physical address (0 if none), then call
 * guest_boot(kind, cmdline) in lib/boot.c.  Nothing the loader set up is
 * relied on beyond what each protocol promises. */

#define KIND_LINUX64 1 /* as in lib/kit.h */
#define KIND_PVH 2

#define PVH_MAGIC 0x336ec578
#define PVH_CMDLINE_PADDR 24      /* u64 in struct hvm_start_info */
#define BP_EXT_CMD_LINE_PTR 0x0c8 /* u32 in struct boot_params: high half */
#define BP_CMD_LINE_PTR 0x228     /* u32 in struct boot_params: low half */

#define SEL_KCODE64 0x08
#define SEL_KDATA 0x10
#define SEL_KCODE32 0x18

#define MSR_EFER 0xc0000080
#define EFER_LME 0x100
#define CR0_PE 0x1
#define CR0_PG 0x80000000
#define CR4_PAE 0x20

#define PTE_TABLE 0x7      /* present, writable, user: ring 3 may use every page */
#define PTE_LARGE 0x87     /* the same plus PS: a 2 MiB page */
#define PTE_UNCACHED 0x18  /* PWT | PCD, for the MMIO hole [3 GiB, 4 GiB) */
#define PD_ENTRIES 2048    /* 4 GiB of 2 MiB pages */
#define PD_MMIO_FIRST 1536 /* 3 GiB / 2 MiB */

#define BOOT_STACK_SIZE 16384

/* Zero [__bss_start, __bss_end): C globals and the page tables live there.
 * Assembles the same in 32-bit and 64-bit code (RDI/RCX zero-extend). */
.macro ZERO_BSS
	mov $__bss_start, %edi
	mov $__bss_end, %ecx
	sub %edi, %ecx
	shr $2, %ecx
	xor %eax, %eax
	rep stosl
.endm

/* Fill the zeroed page tables: PML4[0] -> PDPT, PDPT[0..3] -> 4 PDs, PD
 * entries identity-map 4 GiB in 2 MiB pages.  32-bit addressing on purpose:
 * the same bytes work in both modes and every table lies below 4 GiB. */
.macro BUILD_PAGE_TABLES
	movl $(pdpt + PTE_TABLE), pml4
	movl $(pd + 0x0000 + PTE_TABLE), pdpt
	movl $(pd + 0x1000 + PTE_TABLE), pdpt + 8
	movl $(pd + 0x2000 + PTE_TABLE), pdpt + 16
	movl $(pd + 0x3000 + PTE_TABLE), pdpt + 24
	xor %ecx, %ecx
91:	mov %ecx, %eax
	shl $21, %eax
	or $PTE_LARGE, %eax
	cmp $PD_MMIO_FIRST, %ecx
	jb 92f
	or $PTE_UNCACHED, %eax
92:	mov %eax, pd(,%ecx,8)
	inc %ecx
	cmp $PD_ENTRIES, %ecx
	jne 91b
.endm

/* ---- PVH note: the 32-bit entry's physical address (XEN_ELFNOTE_PHYS32_ENTRY) ---- */
	.section .note.pvh, "a", @note
	.balign 4
	.long 4                 /* n_namesz: "Xen\0" */
	.long 4                 /* n_descsz: a 32-bit address */
	.long 18                /* n_type: XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.long pvh_start32
	/* An empty note (no name, no descriptor).  QEMU 7.2 reads the
	 * descriptor of a 64-bit ELF as 8 bytes whatever n_descsz says; the
	 * zero n_namesz here becomes the high half it reads. */
	.long 0, 0, 0

	.section .text.entry, "ax"

/* ---- PVH entry: 32-bit protected mode, paging off, EBX = hvm_start_info ---- */
	.code32
	.globl pvh_start32
pvh_start32:
	cli
	cld
	xor %esi, %esi                  /* no command line unless the info says so */
	cmpl $PVH_MAGIC, (%ebx)
	jne 1f
	cmpl $0, PVH_CMDLINE_PADDR + 4(%ebx)
	jne 1f                          /* above 4 GiB: outside our map, ignore */
	mov PVH_CMDLINE_PADDR(%ebx), %esi
1:	lgdt gdt_ptr                    /* 32-bit LGDT reads the low half of the base */
	ljmp $SEL_KCODE32, $2f
2:	mov $SEL_KDATA, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov %eax, %fs
	mov %eax, %gs
	ZERO_BSS                        /* keeps ESI */
	BUILD_PAGE_TABLES
	mov $CR4_PAE, %eax
	mov %eax, %cr4
	mov $pml4, %eax
	mov %eax, %cr3
	mov $MSR_EFER, %ecx
	rdmsr
	or $EFER_LME, %eax
	wrmsr
	mov %cr0, %eax
	or $(CR0_PG | CR0_PE), %eax
	mov %eax, %cr0                  /* long mode (compatibility) is now active */
	ljmp $SEL_KCODE64, $3f
	.code64
3:	mov %esi, %esi                  /* upper halves are undefined after the switch */
	mov $KIND_PVH, %edi
	jmp long_common

/* ---- Linux 64-bit entry (ELF e_entry): long mode, RSI = boot_params ---- */
	.globl _start64
_start64:
	cli
	cld
	mov BP_EXT_CMD_LINE_PTR(%rsi), %eax
	shl $32, %rax
	mov BP_CMD_LINE_PTR(%rsi), %edx
	or %rdx, %rax
	mov %rax, %rsi                  /* RSI = command line, kept through the set-up */
	ZERO_BSS
	BUILD_PAGE_TABLES
	/* CR4 exactly PAE: drops whatever else the loader set (SMEP would stop
	 * the kernel running ring-3 pages; PGE is unneeded). */
	mov $CR4_PAE, %eax
	mov %rax, %cr4
	mov $pml4, %eax
	mov %rax, %cr3
	lgdt gdt_ptr
	mov $boot_stack_top, %esp       /* the protocol promises no stack */
	pushq $SEL_KCODE64
	pushq $4f
	lretq                           /* reload CS from our GDT */
4:	mov $KIND_LINUX64, %edi

/* EDI = kind, RSI = command line; CS is ours, paging on our tables. */
long_common:
	mov $SEL_KDATA, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov %eax, %fs
	mov %eax, %gs
	mov $boot_stack_top, %esp
	pushq $2                        /* RFLAGS: IF, DF, AC, NT all clear */
	popfq
	xor %ebp, %ebp
	call guest_boot
5:	cli
	hlt
	jmp 5b

/* ---- The guest's GDT: writable, since the CPU sets accessed bits and
 * tss_load() fills the TSS descriptor ---- */
	.section .data
	.balign 16
	.globl gdt
gdt:
	.quad 0                         /* 0x00 null */
	.quad 0x00af9b000000ffff        /* 0x08 kernel code, 64-bit */
	.quad 0x00cf93000000ffff        /* 0x10 kernel data, flat 4 GiB */
	.quad 0x00cf9b000000ffff        /* 0x18 kernel code, 32-bit (PVH and AP start-up) */
	.quad 0x00cff3000000ffff        /* 0x20 user data, DPL 3 */
	.quad 0x00affb000000ffff        /* 0x28 user code, 64-bit, DPL 3 */
	.quad 0, 0                      /* 0x30 64-bit TSS (16 bytes), see tss_load() */
gdt_end:

	.balign 8
	.globl gdt_ptr
gdt_ptr:
	.word gdt_end - gdt - 1
	.quad gdt

/* ---- Page tables: zeroed with the BSS, filled by BUILD_PAGE_TABLES ---- */
	.section .bss
	.balign 4096
	.globl pml4
pml4:	.skip 4096
pdpt:	.skip 4096
pd:	.skip 4 * 4096

/* ---- Boot stack: never needs zeroing ---- */
	.section .noinit, "aw", @nobits
	.balign 16
boot_stack:
	.skip BOOT_STACK_SIZE
boot_stack_top:

	.section .note.GNU-stack, "", @progbits

/* AP start-up code for the kit's lib/smp.c (the smp and smptimer guests).
 * ap_tramp_install() copies [smp_tramp_start, smp_tramp_end) to physical
 * 0x8000 (AP_TRAMP_BASE in guest.h) and fills the parameter block at its
 * end; a SIPI with vector 0x08 starts the AP at 0800:0000 in real mode.  The
 * AP goes real -> 32-bit protected -> long mode on the BSP's GDT and page
 * tables, claims a stack slot, and calls the C entry.  Assembled for where it
 * runs, not where it is linked: every absolute address goes through ABS(). */

#define TRAMP_BASE 0x8000
#define REL(x) ((x) - smp_tramp_start)
#define ABS(x) (REL(x) + TRAMP_BASE)

#define SEL_KCODE64 0x08
#define SEL_KDATA 0x10
#define SEL_KCODE32 0x18
#define MSR_EFER 0xc0000080
#define EFER_LME 0x100
#define CR0_PE 0x1
#define CR0_PG 0x80000000
#define CR4_PAE 0x20

	/* Data to the linker: it is only ever executed from the copy. */
	.section .rodata.smp_tramp, "a"
	.globl smp_tramp_start, smp_tramp_end, smp_tramp_params

	.code16
smp_tramp_start:
	cli
	cld
	mov %cs, %ax                    /* 0x0800: DS addresses the copy */
	mov %ax, %ds
	lgdtl REL(tramp_gdtr)           /* 32-bit base: the GDT is above 1 MiB */
	mov %cr0, %eax
	or $CR0_PE, %eax
	mov %eax, %cr0
	ljmpl $SEL_KCODE32, $ABS(tramp32)

	.code32
tramp32:
	mov $SEL_KDATA, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov %eax, %fs
	mov %eax, %gs
	mov $CR4_PAE, %eax
	mov %eax, %cr4
	mov ABS(tramp_cr3), %eax
	mov %eax, %cr3
	mov $MSR_EFER, %ecx
	rdmsr
	or $EFER_LME, %eax
	wrmsr
	mov %cr0, %eax
	or $CR0_PG, %eax
	mov %eax, %cr0
	ljmp $SEL_KCODE64, $ABS(tramp64)

	.code64
tramp64:
	/* Stack slot i gets [base + i * size, base + (i + 1) * size).  The
	 * atomic claim lets several APs start at once. */
	mov $1, %eax
	lock xadd %eax, ABS(tramp_next)
	cmp ABS(tramp_nstacks), %eax
	jae 1f                          /* more APs than stacks: park */
	inc %eax
	imul ABS(tramp_stack_size), %eax
	add ABS(tramp_stack_base), %rax
	mov %rax, %rsp
	pushq $2                        /* RFLAGS: IF, DF, AC, NT all clear */
	popfq
	xor %ebp, %ebp
	mov ABS(tramp_entry), %rax
	call *%rax
1:	cli
	hlt
	jmp 1b

	/* Parameter block; struct tramp_params in lib/smp.c mirrors it. */
	.balign 8
smp_tramp_params:
	.word 0                         /* padding: aligns the GDTR base */
tramp_gdtr:
	.word 0                         /* GDT limit */
	.long 0                         /* GDT base (32-bit) */
tramp_cr3:
	.long 0
tramp_next:
	.long 0                         /* next stack slot to claim */
tramp_nstacks:
	.long 0
tramp_stack_size:
	.long 0
tramp_stack_base:
	.quad 0
tramp_entry:
	.quad 0                         /* void (*)(void), never returns */
smp_tramp_end:

	.section .note.GNU-stack, "", @progbits

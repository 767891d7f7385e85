/* Ring 3 (CPL 3) for the test guests, where the development machines run
 * guest code natively while CPL 0 is interpreted: user_start(), the way into
 * user mode with IOPL 3 on stacks of the kit's own, and the #GP handler that
 * finishes ring 3's port I/O where the CPU refuses it despite IOPL 3.  Used
 * by cpl3, snapcount and memtouch.  The IRETQ itself is user_iret(), inline
 * in guest.h, so that emul can use it without pulling in these stacks. */
#include "guest.h"

#define KSTACK_SIZE 8192
#define USTACK_SIZE 16384
#define RFLAGS_FIXED 0x2    /* bit 1 always reads as one */
#define RFLAGS_IOPL3 0x3000 /* ring 3 may use IN/OUT and CLI/STI */

/* The stack ring-3 interrupts and exceptions switch to (TSS RSP0): lets the
 * kit's exception report work for a fault in user mode.  .noinit: nothing
 * reads them before writing, and zeroing them would run interpreted. */
static uint8_t user_kstack[KSTACK_SIZE] __attribute__((section(".noinit"), aligned(16)));
static uint8_t user_ustack[USTACK_SIZE] __attribute__((section(".noinit"), aligned(16)));

/* A ring-3 IN/OUT that faulted although user_start() granted IOPL 3 is
 * performed here and skipped.  On VT-x/AMD-V hosts ring 3's port I/O never
 * faults.  The development machines' nested KVM (kvm_pvm) runs ring 3 with
 * IOPL 0 whatever the guest set (the #GP frame shows RFLAGS IOPL 0), so the
 * frame's IOPL cannot be checked.  Only the guests' printing and exit come
 * through here; their loops stay in ring 3.  Anything else is reported as
 * usual. */
void user_io_gp_handler(struct isr_frame *f)
{
	const uint8_t *ip = (const uint8_t *)f->rip;
	unsigned size = 4, len = 1;
	uint16_t port;
	uint8_t op;

	if ((f->cs & 3) != 3)
		isr_unexpected(f);
	if (*ip == 0x66) { /* operand-size prefix: 16-bit */
		size = 2;
		ip++;
		len++;
	}
	op = *ip;
	if (op == 0xe4 || op == 0xe5 || op == 0xe6 || op == 0xe7) {
		port = ip[1]; /* imm8 port */
		len++;
	} else if (op == 0xec || op == 0xed || op == 0xee || op == 0xef) {
		port = (uint16_t)f->rdx;
	} else {
		isr_unexpected(f);
	}
	if (!(op & 1)) /* even opcodes move AL */
		size = 1;
	if (op & 2) { /* OUT */
		if (size == 1)
			outb(port, (uint8_t)f->rax);
		else if (size == 2)
			outw(port, (uint16_t)f->rax);
		else
			outl(port, (uint32_t)f->rax);
	} else if (size == 1) {
		f->rax = (f->rax & ~0xffull) | inb(port);
	} else if (size == 2) {
		f->rax = (f->rax & ~0xffffull) | inw(port);
	} else {
		f->rax = inl(port); /* a 32-bit result zero-extends */
	}
	f->rip += len;
}

noreturn void user_start(void (*fn)(void))
{
	/* As if @fn had been called: RSP + 8 is 16-byte aligned. */
	uint64_t usp = (uint64_t)(user_ustack + sizeof(user_ustack)) - 8;

	tss_load((uint64_t)(user_kstack + sizeof(user_kstack)));
	idt_set_handler(13, user_io_gp_handler);
	user_iret((uint64_t)fn, usp, RFLAGS_IOPL3 | RFLAGS_FIXED);
}

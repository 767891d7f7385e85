/* cpl3: drop to ring 3 with IOPL 3 and run a compute loop there, where this
 * platform runs guest code natively.  Checks the privilege switch (TSS, user
 * segments, user-accessible page tables) and gives the host a CPU-bound
 * guest workload with a checkable result.  Ring 3 does its own port I/O
 * (serial, debug exit) through IOPL; user-mode syscall is broken on the
 * development platform, so nothing here needs the kernel again. */
#include "guest.h"

#define KSTACK_SIZE 8192
#define USTACK_SIZE 16384
#define RFLAGS_FIXED 0x2    /* bit 1 always reads as one */
#define RFLAGS_IOPL3 0x3000 /* ring 3 may use IN/OUT and CLI/STI */
#define LCG_MUL 6364136223846793005ull
#define LCG_ADD 1442695040888963407ull

/* The stack ring-3 exceptions switch to (TSS RSP0): lets the kit's
 * exception report work for a fault in user mode. */
static uint8_t kstack[KSTACK_SIZE] __attribute__((section(".noinit"), aligned(16)));
static uint8_t ustack[USTACK_SIZE] __attribute__((section(".noinit"), aligned(16)));

/* Ring-3 body: check CPL, run the LCG, report and exit from ring 3. */
static noreturn void user_main(void)
{
	unsigned cpl = cpu_cpl();
	uint64_t iters, x;

	if (cpl != 3) {
		gprintf("cpl3: FAIL cpl=%u\n", cpl);
		guest_exit(1);
	}
	iters = (uint64_t)cmdline_get_int("iters", 100000000);
	x = (uint64_t)cmdline_get_int("seed", 1);
	for (uint64_t i = 0; i < iters; i++) {
		x = x * LCG_MUL + LCG_ADD;
		/* Opaque to the optimiser: no closed form, no vectorising. */
		__asm__ volatile("" : "+r"(x));
	}
	gprintf("cpl3: cpl=%u iters=%lu result=0x%016lx\n", cpl, iters, x);
	guest_exit(0);
}

/* #GP handler: a ring-3 IN/OUT that faulted although guest_main granted
 * IOPL 3 is performed here and skipped.  On VT-x/AMD-V hosts ring 3's port
 * I/O never faults.  The development machines' nested KVM (kvm_pvm) runs
 * ring 3 with IOPL 0 whatever the guest set (the #GP frame shows RFLAGS
 * IOPL 0), so the frame's IOPL cannot be checked.  Only the serial output
 * and the exit come through here; the loop itself stays in ring 3.
 * Anything else is reported as usual. */
static void gp_handler(struct isr_frame *f)
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

int guest_main(void)
{
	/* As if user_main had been called: RSP + 8 is 16-byte aligned. */
	uint64_t usp = (uint64_t)(ustack + sizeof(ustack)) - 8;

	tss_load((uint64_t)(kstack + sizeof(kstack)));
	idt_set_handler(13, gp_handler);
	__asm__ volatile("pushq %[ss]\n\t"
			 "pushq %[sp]\n\t"
			 "pushq %[fl]\n\t"
			 "pushq %[cs]\n\t"
			 "pushq %[ip]\n\t"
			 "iretq"
			 :
			 : [ss] "i"(SEL_UDATA), [sp] "r"(usp), [fl] "i"(RFLAGS_IOPL3 | RFLAGS_FIXED),
			   [cs] "i"(SEL_UCODE64), [ip] "r"((uint64_t)user_main)
			 : "memory");
	__builtin_unreachable();
}

/* emul: at CPL 0, the instructions that a nested KVM without VT-x/AMD-V
 * cannot emulate (POPCNT, CLAC/STAC, FWAIT, the fences, INT3, SYSRET, the
 * SSE state instructions and moves Linux uses in kernel_fpu_begin()), plus
 * a ring-3 SYSCALL, which such a host executes only half-way.  vmrun's
 * instruction fallback (include/vmrun/insn.h) finishes them there; on a host
 * with VT-x/AMD-V the CPU runs them itself.  Either way every result is
 * checked here against what the architecture says.
 *
 * The guest is built with -mno-popcnt and no int3 like every test guest:
 * the instructions appear only in the inline assembly below. */
#include "guest.h"

#define RFLAGS_ARITH 0x8d5ull /* CF PF AF ZF SF OF */
#define RFLAGS_ZF 0x40ull
#define RFLAGS_AC 0x40000ull
#define RFLAGS_FIXED 0x2ull

#define MSR_EFER 0xc0000080u
#define MSR_STAR 0xc0000081u
#define MSR_LSTAR 0xc0000082u
#define MSR_FMASK 0xc0000084u
#define EFER_SCE 0x1ull
#define FMASK_LINUX 0x47700ull /* TF DF IF IOPL NT AC, as Linux */

/* The SYSCALL entry lives alone in this 2 MiB page, which the test makes
 * supervisor-only: a half-done SYSCALL then faults fetching it at CPL 3,
 * exactly as a Linux kernel's entry does.  Nothing of the image is there
 * (it is checked). */
#define ENTRY_PAGE 0x600000ull
#define PD_INDEX(a) ((a) >> 21)
#define PTE_US 0x4ull
#define PTE_ADDR 0x000ffffffffff000ull

#define KSTACK_SIZE 8192
#define USTACK_SIZE 8192

static uint8_t kstack[KSTACK_SIZE] __attribute__((section(".noinit"), aligned(16)));
static uint8_t ustack[USTACK_SIZE] __attribute__((section(".noinit"), aligned(16)));

static volatile unsigned bp_hits;
static volatile uint64_t bp_rip;

static noreturn void fail(const char *what, uint64_t got, uint64_t want)
{
	gprintf("emul: FAIL %s got 0x%lx want 0x%lx\n", what, got, want);
	guest_exit(1);
}

static void expect(const char *what, uint64_t got, uint64_t want)
{
	if (got != want)
		fail(what, got, want);
}

static inline uint64_t rdmsr(uint32_t msr)
{
	uint32_t lo, hi;

	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return (uint64_t)hi << 32 | lo;
}

static inline void wrmsr(uint32_t msr, uint64_t v)
{
	__asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
}

static bool cpu_has_smap(void)
{
	uint32_t a = 7, b, c = 0, d;

	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
	return b & (1u << 20);
}

/* POPCNT r64, r32, r16 and m64, with every arithmetic flag set before:
 * all end up clear but ZF, which says whether the source was zero. */
#define POPCNT(insn, dst, src, flags)                                              \
	__asm__ volatile("pushfq\n\t"                                              \
			 "orq $0x8d5, (%%rsp)\n\t"                                 \
			 "popfq\n\t" insn "\n\t"                                   \
			 "pushfq\n\t"                                              \
			 "popq %[fl]"                                              \
			 : [d] "+r"(dst), [fl] "=&r"(flags)                         \
			 : [s] "r"(src)                                            \
			 : "cc", "memory")

/* Beyond the kit's 4 GiB identity map: not present. */
#define UNMAPPED 0x500000010ull

static volatile uint64_t pf_cr2, pf_err, pf_resume;
static volatile unsigned pf_hits;

static void pf_handler(struct isr_frame *f)
{
	uint64_t cr2;

	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	pf_hits++;
	pf_cr2 = cr2;
	pf_err = f->error;
	expect("popcnt #PF rip", f->rip, pf_resume); /* a fault: at the instruction */
	f->rip += 5;                                   /* skip the 5-byte POPCNT */
}

/* A memory operand that is not mapped: #PF with CR2 and the error code of a
 * supervisor read of a missing page. */
static void check_popcnt_fault(void)
{
	uint64_t d = 7, at;

	idt_set_handler(14, pf_handler);
	__asm__ volatile("leaq 1f(%%rip), %[at]\n\t"
			 "movq %[at], %[resume]\n"
			 "1:\tpopcntq (%[p]), %[d]" /* f3 48 0f b8 /r: 5 bytes */
			 : [d] "+r"(d), [at] "=&r"(at), [resume] "=m"(pf_resume)
			 : [p] "a"(UNMAPPED)
			 : "cc", "memory");
	idt_set_handler(14, NULL);
	expect("popcnt #PF hits", pf_hits, 1);
	expect("popcnt #PF cr2", pf_cr2, UNMAPPED);
	expect("popcnt #PF error", pf_err, 0);
	expect("popcnt #PF result", d, 7);
}

static void check_popcnt(void)
{
	static const uint64_t word = 0x0101010101010101ull;
	uint64_t d, f;

	d = 0;
	POPCNT("popcntq %[s], %[d]", d, 0xf0f0f0f0f0f0f0f1ull, f);
	expect("popcnt r64", d, 33);
	expect("popcnt r64 flags", f & RFLAGS_ARITH, 0);
	d = ~0ull; /* a 32-bit result clears the upper half */
	POPCNT("popcntl %k[s], %k[d]", d, 0xffffffff80000001ull, f);
	expect("popcnt r32", d, 2);
	d = 0x1234567890abcdefull; /* a 16-bit result keeps the rest */
	POPCNT("popcntw %w[s], %w[d]", d, 0xffffffffffff00ffull, f);
	expect("popcnt r16", d, 0x1234567890ab0008ull);
	d = 5;
	POPCNT("popcntq %[s], %[d]", d, 0ull, f);
	expect("popcnt zero", d, 0);
	expect("popcnt zero flags", f & RFLAGS_ARITH, RFLAGS_ZF);
	d = 0;
	POPCNT("popcntq (%[s]), %[d]", d, &word, f);
	expect("popcnt m64", d, 8);
	check_popcnt_fault();
	gprintf("emul: popcnt ok\n");
}

static uint64_t read_rflags(void)
{
	uint64_t f;

	__asm__ volatile("pushfq; popq %0" : "=r"(f) : : "memory");
	return f;
}

static void check_clac_stac(void)
{
	if (!cpu_has_smap()) {
		gprintf("emul: clac/stac skipped (no SMAP)\n");
		return;
	}
	__asm__ volatile("stac" ::: "cc", "memory");
	expect("stac: rflags.ac", read_rflags() & RFLAGS_AC, RFLAGS_AC);
	__asm__ volatile("clac" ::: "cc", "memory");
	expect("clac: rflags.ac", read_rflags() & RFLAGS_AC, 0);
	gprintf("emul: clac/stac ok\n");
}

static void check_fwait_fences(void)
{
	uint64_t x = 0x5a5a;

	__asm__ volatile("fwait" : "+r"(x) : : "memory");
	__asm__ volatile("lfence; mfence; sfence" : "+r"(x) : : "memory");
	expect("fwait/fences", x, 0x5a5a);
	gprintf("emul: fwait ok\n");
}

#define CR0_MP 0x2ull
#define CR0_EM 0x4ull
#define CR0_TS 0x8ull
#define CR4_OSFXSR 0x200ull

/* SSE at CPL 0, as Linux runs it between kernel_fpu_begin() and _end():
 * MXCSR in and out, XMM loads, XORs, stores and moves to and from general
 * registers.  Each instruction the fallback finishes must leave its result
 * in the vCPU's SSE state, where the next one finds it. */
static void check_sse(void)
{
	static const uint8_t src[16] __attribute__((aligned(16))) = {
		0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
		0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x01,
	};
	static uint8_t dst[16] __attribute__((aligned(16)));
	uint64_t cr0, cr4, q = 0;
	uint32_t mx = 0, d = 0;

	__asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
	__asm__ volatile("mov %0, %%cr0" : : "r"((cr0 & ~(CR0_EM | CR0_TS)) | CR0_MP));
	__asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
	__asm__ volatile("mov %0, %%cr4" : : "r"(cr4 | CR4_OSFXSR));
	__asm__ volatile("stmxcsr %0" : "=m"(mx));
	expect("stmxcsr after reset", mx, 0x1f80);
	mx = 0x7f80; /* round toward zero, all exceptions masked */
	__asm__ volatile("ldmxcsr %0" : : "m"(mx));
	mx = 0;
	__asm__ volatile("stmxcsr %0" : "=m"(mx));
	expect("ldmxcsr then stmxcsr", mx, 0x7f80);
	mx = 0x1f80;
	__asm__ volatile("ldmxcsr %0" : : "m"(mx));
	__asm__ volatile("movdqu %[s], %%xmm1\n\t"
			 "pxor %%xmm2, %%xmm2\n\t"
			 "pxor %%xmm1, %%xmm2\n\t"
			 "movdqa %%xmm2, %[d]\n\t"
			 "movq %%xmm2, %[q]\n\t"
			 "movd %[v], %%xmm3\n\t"
			 "movd %%xmm3, %[out]"
			 : [d] "=m"(dst), [q] "=&r"(q), [out] "=r"(d)
			 : [s] "m"(src), [v] "r"(0xcafef00du)
			 : "memory"); /* -mgeneral-regs-only: no XMM register to clobber */
	for (unsigned i = 0; i < 16; i++)
		expect("movdqu/pxor/movdqa", dst[i], src[i]);
	expect("movq r64, xmm", q, 0x8877665544332211ull);
	expect("movd xmm, r32 and back", d, 0xcafef00d);
	gprintf("emul: sse ok\n");
}

static void bp_handler(struct isr_frame *f)
{
	bp_hits++;
	bp_rip = f->rip;
}

static void check_int3(void)
{
	uint64_t after;

	idt_set_handler(3, bp_handler);
	/* #BP is a trap: the frame's RIP is the instruction after INT3. */
	__asm__ volatile("leaq 1f(%%rip), %0\n\t"
			 "int3\n"
			 "1:"
			 : "=r"(after) : : "memory");
	expect("int3 hits", bp_hits, 1);
	expect("int3 rip", bp_rip, after);
	idt_set_handler(3, NULL);
	gprintf("emul: int3 ok\n");
}

/* ---- SYSCALL from ring 3, SYSRET back ----
 *
 * Ring 3 runs user_code: SYSCALL, then UD2.  The SYSCALL goes (through a
 * trampoline in ENTRY_PAGE) to syscall_entry at CPL 0, which checks the
 * state in syscall_check() and SYSRETs to the UD2; its #UD, taken from
 * ring 3, checks where SYSRET went and ends the test.  The #PF gate points
 * at pf_entry, whose first instruction is CLAC, like Linux's. */
void syscall_check(uint64_t rcx, uint64_t r11, uint64_t cs, uint64_t ss, uint64_t rflags);
extern const char user_code[], user_after_syscall[], syscall_entry[], pf_entry[];

__asm__(".text\n"
	"	.globl user_code, user_after_syscall, syscall_entry, pf_entry\n"
	"user_code:\n"
	"	mov $39, %eax\n"
	"	syscall\n"
	"user_after_syscall:\n"
	"	ud2\n"
	"syscall_entry:\n"          /* CPL 0 on the user's stack, RAX clobbered */
	"	push %rcx\n"
	"	push %r11\n"
	"	mov %rcx, %rdi\n"
	"	mov %r11, %rsi\n"
	"	mov %cs, %edx\n"
	"	mov %ss, %ecx\n"
	"	pushfq\n"
	"	pop %r8\n"
	"	call syscall_check\n"
	"	pop %r11\n"
	"	pop %rcx\n"
	"	sysretq\n"
	"pf_entry:\n"
	"	clac\n"
	"	jmp isr_stubs + 14 * 16\n");

void syscall_check(uint64_t rcx, uint64_t r11, uint64_t cs, uint64_t ss, uint64_t rflags)
{
	expect("syscall: cs", cs, 0x08);
	expect("syscall: ss", ss, 0x10);
	expect("syscall: rcx", rcx, (uint64_t)user_after_syscall);
	expect("syscall: r11", r11 & (RFLAGS_FIXED | RFLAGS_ARITH), RFLAGS_FIXED); /* ring 3's */
	expect("syscall: rflags", rflags & FMASK_LINUX, 0);
	gprintf("emul: syscall ok\n");
}

static void ud_handler(struct isr_frame *f)
{
	expect("sysret: cs", f->cs, 0x2b);
	expect("sysret: ss", f->ss, 0x23);
	expect("sysret: rip", f->rip, (uint64_t)user_after_syscall);
	gprintf("emul: sysret ok\n");
	gprintf("emul: ok\n");
	guest_exit(0);
}

/* Point IDT vector @vec of the loaded IDT at @handler. */
static void idt_patch(unsigned vec, const void *handler)
{
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) idtr;
	uint8_t *gate;
	uint64_t a = (uint64_t)handler;

	__asm__ volatile("sidt %0" : "=m"(idtr));
	gate = (uint8_t *)idtr.base + vec * 16;
	gate[0] = (uint8_t)a;
	gate[1] = (uint8_t)(a >> 8);
	gate[6] = (uint8_t)(a >> 16);
	gate[7] = (uint8_t)(a >> 24);
	for (int i = 0; i < 4; i++)
		gate[8 + i] = (uint8_t)(a >> (32 + 8 * i));
}

/* Make the 2 MiB page at ENTRY_PAGE supervisor-only and put a jump to
 * syscall_entry at its start. */
static void entry_page_setup(void)
{
	uint64_t cr3, *pml4, *pdpt, *pd;
	uint8_t *p = phys_ptr(ENTRY_PAGE);
	uint64_t target = (uint64_t)syscall_entry;

	__asm__ volatile("mov %%cr3, %0" : "=r"(cr3));
	pml4 = phys_ptr(cr3 & PTE_ADDR);
	pdpt = phys_ptr(pml4[0] & PTE_ADDR);
	pd = phys_ptr(pdpt[0] & PTE_ADDR);
	pd[PD_INDEX(ENTRY_PAGE)] &= ~PTE_US;
	__asm__ volatile("invlpg (%0)" : : "r"(p) : "memory");
	p[0] = 0x48; /* movabs $syscall_entry, %rax */
	p[1] = 0xb8;
	for (int i = 0; i < 8; i++)
		p[2 + i] = (uint8_t)(target >> (8 * i));
	p[10] = 0xff; /* jmp *%rax */
	p[11] = 0xe0;
}

static noreturn void check_syscall_sysret(void)
{
	uint64_t usp = (uint64_t)(ustack + sizeof(ustack));

	if ((uint64_t)(ustack + sizeof(ustack)) > ENTRY_PAGE || (uint64_t)kstack > ENTRY_PAGE)
		fail("image reaches the entry page", (uint64_t)(ustack + sizeof(ustack)), ENTRY_PAGE);
	tss_load((uint64_t)(kstack + sizeof(kstack)));
	entry_page_setup();
	idt_patch(14, pf_entry);
	idt_set_handler(6, ud_handler);
	wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SCE);
	wrmsr(MSR_STAR, (0x18ull << 48) | (0x08ull << 32));
	wrmsr(MSR_LSTAR, ENTRY_PAGE);
	wrmsr(MSR_FMASK, FMASK_LINUX);
	user_iret((uint64_t)user_code, usp, RFLAGS_FIXED);
}

int guest_main(void)
{
	char action[16] = "";

	cmdline_get("action", action, sizeof(action));
	if (!memcmp(action, "crc32", 6)) {
		/* SSE4.2 CRC32 (crc32c-intel's instruction), which KVM's
		 * emulator lacks and the fallback finishes: CRC-32C. */
		uint32_t crc = 0;

		__asm__ volatile("crc32l %1, %0" : "+r"(crc) : "r"(0x12345678u));
		expect("crc32l", crc, 0xfa745634u);
		gprintf("emul: crc32 ran: 0x%x\n", crc);
		return 0;
	}
	if (!memcmp(action, "andn", 5)) {
		/* An instruction the fallback does not know (a VEX-encoded
		 * BMI1 one; KVM's emulator has no VEX either): vmrun ends the
		 * run there, naming it. */
		uint32_t r;

		__asm__ volatile("andn %%ecx, %%eax, %%edx" /* c4 e2 78 f2 d1 */
				 : "=d"(r) : "a"(0xf0f0f0f0u), "c"(0xff00ff00u));
		gprintf("emul: andn ran: 0x%x\n", r);
		return 0;
	}
	check_popcnt();
	check_clac_stac();
	check_fwait_fences();
	check_sse();
	check_int3();
	if (!cpu_has_smap()) {
		/* The #PF entry's CLAC is what brings a half-done SYSCALL to
		 * the VMM; without SMAP there is none. */
		gprintf("emul: syscall skipped (no SMAP)\n");
		gprintf("emul: ok\n");
		return 0;
	}
	check_syscall_sysret();
}

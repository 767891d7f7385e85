/* The instruction fallback (include/vmrun/insn.h) against the CPU that runs
 * this test.
 *
 * Every instruction the emulator claims to know is executed natively too,
 * from the same bytes at the same address and with the same registers: the
 * bytes go into an executable page followed by RET, native_run() loads every
 * general register but RSP and RFLAGS from a struct, calls the page and
 * stores them back.  A fault or trap arrives as a signal whose context gives
 * the vector (REG_TRAPNO), the error code and RIP; the handler resumes at the
 * RET.  The emulator runs on an insn_cpu at CPL 3 with the host's CPUID
 * features and a read_mem that reads this process's memory, and must agree
 * on the registers, the arithmetic flags, RIP and the exception.
 *
 * The SSE instructions run the same way with the XMM registers and MXCSR
 * loaded from, and saved to, an FXSAVE image around the bytes, and stores
 * compared byte for byte in a memory window (compare_fx()).
 *
 * What CPL 3 cannot show is checked against the architecture's definition
 * (Intel SDM vol. 2) instead, and said so: CLAC/STAC and SYSRET at CPL 0
 * (natively they are #UD / #GP at CPL 3, which is compared), INT3's gate
 * check, FWAIT's #NM and #MF, the SSE #UD/#NM rules (CR0.EM, CR0.TS,
 * CR4.OSFXSR, CPUID features), LSL at CPL 0 and on the system descriptors
 * user space cannot create, and the syscall repair on a fake state. */
#include "unit.h"

#include <asm/ldt.h>
#include <asm/prctl.h>
#include <cpuid.h>
#include <errno.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <ucontext.h>
#include <unistd.h>

#include "vmrun/guest_mem.h"
#include "vmrun/insn.h"

/* ---- running bytes natively ---- */

struct native_regs {
	uint64_t gpr[INSN_NR_GPRS]; /* gpr[INSN_RSP] is neither loaded nor stored */
	uint64_t rflags;
};

void native_run(struct native_regs *st, const void *code);

__asm__(".text\n"
	".globl native_run\n"
	".type native_run, @function\n"
	"native_run:\n"
	"	push %rbx\n push %rbp\n push %r12\n push %r13\n push %r14\n push %r15\n"
	"	push %rdi\n"           /* the struct */
	"	push %rsi\n"           /* the code */
	"	pushq 128(%rdi)\n popfq\n"
	"	mov 0(%rdi), %rax\n mov 8(%rdi), %rcx\n mov 16(%rdi), %rdx\n mov 24(%rdi), %rbx\n"
	"	mov 40(%rdi), %rbp\n mov 48(%rdi), %rsi\n mov 64(%rdi), %r8\n mov 72(%rdi), %r9\n"
	"	mov 80(%rdi), %r10\n mov 88(%rdi), %r11\n mov 96(%rdi), %r12\n mov 104(%rdi), %r13\n"
	"	mov 112(%rdi), %r14\n mov 120(%rdi), %r15\n mov 56(%rdi), %rdi\n"
	"	call *(%rsp)\n"
	"	pushfq\n"
	"	xchg %rdi, 16(%rsp)\n" /* the struct back; the guest RDI on the stack */
	"	mov %rax, 0(%rdi)\n mov %rcx, 8(%rdi)\n mov %rdx, 16(%rdi)\n mov %rbx, 24(%rdi)\n"
	"	mov %rbp, 40(%rdi)\n mov %rsi, 48(%rdi)\n mov %r8, 64(%rdi)\n mov %r9, 72(%rdi)\n"
	"	mov %r10, 80(%rdi)\n mov %r11, 88(%rdi)\n mov %r12, 96(%rdi)\n mov %r13, 104(%rdi)\n"
	"	mov %r14, 112(%rdi)\n mov %r15, 120(%rdi)\n"
	"	pop %rax\n mov %rax, 128(%rdi)\n"
	"	mov 8(%rsp), %rax\n mov %rax, 56(%rdi)\n"
	"	add $16, %rsp\n"
	"	pop %r15\n pop %r14\n pop %r13\n pop %r12\n pop %rbp\n pop %rbx\n"
	"	ret\n"
	".size native_run, .-native_run\n");

#define CODE_DATA_OFF 0x800 /* data in the code page, for RIP-relative operands */

/* What the signal handler saw.  Signal handlers can only reach file-scope
 * state; this is test scaffolding, not vmrun. */
static struct {
	uint8_t *page;
	size_t len;
	int trapno; /* -1: no exception */
	uint64_t err, rip, cr2;
} nat;

static void on_signal(int sig, siginfo_t *si, void *ucv)
{
	ucontext_t *uc = ucv;
	greg_t *g = uc->uc_mcontext.gregs;

	nat.trapno = (int)g[REG_TRAPNO];
	nat.err = (uint64_t)g[REG_ERR];
	nat.rip = (uint64_t)g[REG_RIP];
	nat.cr2 = (uint64_t)g[REG_CR2];
	if (sig == SIGFPE && uc->uc_mcontext.fpregs) {
		/* #MF: clear the x87 exception, or every later x87 op traps. */
		uc->uc_mcontext.fpregs->swd = 0;
		uc->uc_mcontext.fpregs->cwd = 0x37f;
	}
	if (sig != SIGTRAP) /* a fault: resume at the RET */
		g[REG_RIP] = (greg_t)(nat.page + nat.len);
}

static const int trap_signals[] = { SIGILL, SIGSEGV, SIGBUS, SIGTRAP, SIGFPE };

static int setup(void **state)
{
	nat.page = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return nat.page == MAP_FAILED ? -1 : 0;
}

static int teardown(void **state)
{
	munmap(nat.page, 4096);
	return 0;
}

/* Run @n bytes at nat.page natively on @st (updated in place). */
static void run_native(const uint8_t *b, size_t n, struct native_regs *st)
{
	struct sigaction sa = { .sa_sigaction = on_signal, .sa_flags = SA_SIGINFO };
	struct sigaction old[ARRAY_LEN(trap_signals)];

	sigemptyset(&sa.sa_mask);
	assert_true(n < CODE_DATA_OFF);
	memcpy(nat.page, b, n);
	nat.page[n] = 0xc3; /* ret */
	nat.len = n;
	nat.trapno = -1;
	__builtin___clear_cache((char *)nat.page, (char *)nat.page + n + 1);
	/* cmocka installs its own handlers around every test: ours go in
	 * for the one call and the previous ones come back after it. */
	for (size_t i = 0; i < ARRAY_LEN(trap_signals); i++)
		assert_int_equal(sigaction(trap_signals[i], &sa, &old[i]), 0);
	native_run(st, nat.page);
	for (size_t i = 0; i < ARRAY_LEN(trap_signals); i++)
		sigaction(trap_signals[i], &old[i], NULL);
}

/* ---- the emulator on the same state ---- */

static uint32_t host_features(void)
{
	unsigned a, b, c, d;
	uint32_t f = 0;

	if (__get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 23)))
		f |= INSN_FEAT_POPCNT;
	if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 20)))
		f |= INSN_FEAT_SMAP;
	if (__get_cpuid(1, &a, &b, &c, &d)) {
		f |= c & (1u << 9) ? INSN_FEAT_SSSE3 : 0;
		f |= c & (1u << 19) ? INSN_FEAT_SSE41 : 0;
		f |= c & (1u << 20) ? INSN_FEAT_SSE42 : 0;
		f |= c & (1u << 1) ? INSN_FEAT_PCLMUL : 0;
	}
	return f;
}

/* This process's memory as the emulator's linear memory.  A read the kernel
 * refuses is a user-mode #PF on a missing page. */
static int self_read(void *ctx, uint64_t la, void *buf, size_t len, unsigned access,
		     struct insn_exception *fault)
{
	struct iovec local = { buf, len }, remote = { (void *)la, len };
	ssize_t n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);

	if (n == (ssize_t)len)
		return 0;
	*fault = (struct insn_exception){ .vector = INSN_VEC_PF, .has_error_code = true,
					  .error_code = INSN_PF_USER, .cr2 = la + (n > 0 ? n : 0) };
	return -EFAULT;
}

static int fsw_clear(void *ctx, uint16_t *fsw)
{
	*fsw = 0;
	return 0;
}

/* Linux's IDT as CPL 3 sees it for INT3: a DPL-3 gate at vector 3. */
static uint8_t fake_idt[16 * 16];

/* The descriptor tables cpu_from_native() hands the emulator for LSL: none
 * (GDTR and LDTR empty) unless a test sets them. */
static struct {
	uint64_t gdt_base, ldt_base;
	uint16_t gdt_limit;
	uint32_t ldt_limit;
	bool ldt_usable;
} lsl_tables;

static void cpu_from_native(struct insn_cpu *c, const struct native_regs *st)
{
	uint64_t fs = 0, gs = 0;

	memset(c, 0, sizeof(*c));
	memcpy(c->gpr, st->gpr, sizeof(c->gpr));
	c->rip = (uint64_t)nat.page;
	c->rflags = st->rflags;
	c->cpl = 3;
	c->long64 = true;
	c->cr0 = 0x80050033; /* PG AM WP NE ET MP PE, as Linux runs */
	c->cr4 = INSN_CR4_PAE;
	c->efer = INSN_EFER_LMA | INSN_EFER_SCE | INSN_EFER_NXE;
	syscall(SYS_arch_prctl, ARCH_GET_FS, &fs);
	syscall(SYS_arch_prctl, ARCH_GET_GS, &gs);
	c->fs_base = fs;
	c->gs_base = gs;
	memset(fake_idt, 0, sizeof(fake_idt));
	fake_idt[INSN_VEC_BP * 16 + 5] = 0xee; /* present, DPL 3, interrupt gate */
	c->idt_base = (uint64_t)fake_idt;
	c->idt_limit = sizeof(fake_idt) - 1;
	c->gdt_base = lsl_tables.gdt_base;
	c->gdt_limit = lsl_tables.gdt_limit;
	c->ldt_base = lsl_tables.ldt_base;
	c->ldt_limit = lsl_tables.ldt_limit;
	c->ldt_usable = lsl_tables.ldt_usable;
	c->features = host_features();
	c->read_mem = self_read;
	c->read_fsw = fsw_clear;
}

static void seed_regs(struct native_regs *st, uint64_t seed)
{
	for (unsigned i = 0; i < INSN_NR_GPRS; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		st->gpr[i] = seed ^ (seed >> 29);
	}
	st->gpr[INSN_RSP] = 0;
	/* Every arithmetic flag set, so that clearing them shows. */
	st->rflags = INSN_RFLAGS_FIXED | INSN_RFLAGS_ARITH;
}

/* Run @b natively and emulated from @in and check that they agree; returns
 * the emulator's action.  @len_used is how many of the bytes form the
 * instruction (the rest, if any, is never reached). */
static enum insn_action compare(const uint8_t *b, size_t n, const struct native_regs *in)
{
	struct native_regs st = *in;
	struct insn_cpu c;
	struct insn_result res;
	struct insn dec;
	enum insn_action a;

	cpu_from_native(&c, in);
	memcpy(nat.page, b, n); /* RIP-relative operands read from the page */
	a = insn_step(&c, b, n, &dec, &res);
	run_native(b, n, &st);

	if (a == INSN_UNKNOWN)
		fail_msg("emulator does not know bytes it should (%s); native trap %d", res.why,
			 nat.trapno);
	if (nat.trapno < 0) {
		if (a != INSN_EMULATED)
			fail_msg("native ran, emulator raised vector %u", res.exc.vector);
		assert_int_equal(c.rip, (uint64_t)nat.page + n);
		assert_int_equal(dec.len, n);
		for (unsigned i = 0; i < INSN_NR_GPRS; i++)
			if (i != INSN_RSP && c.gpr[i] != st.gpr[i])
				fail_msg("gpr %u: emulated 0x%llx, native 0x%llx", i,
					 (unsigned long long)c.gpr[i], (unsigned long long)st.gpr[i]);
		assert_int_equal(c.rflags & INSN_RFLAGS_ARITH, st.rflags & INSN_RFLAGS_ARITH);
		return a;
	}
	if (a != INSN_EXCEPTION)
		fail_msg("native raised vector %d, emulator completed the instruction", nat.trapno);
	assert_int_equal(res.exc.vector, nat.trapno);
	if (nat.trapno == INSN_VEC_GP || nat.trapno == INSN_VEC_SS || nat.trapno == INSN_VEC_PF)
		assert_int_equal(res.exc.error_code, nat.err);
	if (nat.trapno == INSN_VEC_PF)
		assert_int_equal(res.exc.cr2, nat.cr2);
	/* Faults: RIP at the instruction; #BP: past it. */
	assert_int_equal(c.rip, nat.rip);
	for (unsigned i = 0; i < INSN_NR_GPRS; i++)
		if (i != INSN_RSP)
			assert_int_equal(c.gpr[i], st.gpr[i]);
	return a;
}

#define BYTES(...) ((const uint8_t[]){ __VA_ARGS__ }), sizeof((const uint8_t[]){ __VA_ARGS__ })

static void expect_native(enum insn_action want, const uint8_t *b, size_t n,
			  const struct native_regs *in)
{
	assert_int_equal(compare(b, n, in), want);
}

/* ---- POPCNT ---- */

static void test_popcnt_register_forms(void **state)
{
	struct native_regs in;

	if (!(host_features() & INSN_FEAT_POPCNT))
		skip();
	seed_regs(&in, 1);
	expect_native(INSN_EMULATED, BYTES(0xf3, 0x0f, 0xb8, 0xc1), &in);             /* eax, ecx */
	expect_native(INSN_EMULATED, BYTES(0xf3, 0x48, 0x0f, 0xb8, 0xc1), &in);       /* rax, rcx */
	expect_native(INSN_EMULATED, BYTES(0x66, 0xf3, 0x0f, 0xb8, 0xc1), &in);       /* ax, cx */
	expect_native(INSN_EMULATED, BYTES(0xf3, 0x66, 0x0f, 0xb8, 0xc1), &in);       /* F3 first */
	expect_native(INSN_EMULATED, BYTES(0x66, 0xf3, 0x48, 0x0f, 0xb8, 0xc1), &in); /* W beats 66 */
	expect_native(INSN_EMULATED, BYTES(0xf3, 0x4d, 0x0f, 0xb8, 0xf9), &in);       /* r15, r9 */
	expect_native(INSN_EMULATED, BYTES(0xf3, 0x44, 0x0f, 0xb8, 0xc0), &in);       /* r8d, eax */
	expect_native(INSN_EMULATED, BYTES(0xf3, 0x41, 0x0f, 0xb8, 0xd4), &in);       /* edx, r12d */
	expect_native(INSN_EMULATED, BYTES(0xf3, 0x0f, 0xb8, 0xed), &in);             /* ebp, ebp */
}

static void test_popcnt_values(void **state)
{
	static const uint64_t values[] = {
		0, 1, 0x8000000000000000ull, ~0ull, 0xffffffffull, 0xffff0000ull,
		0x00010000ull, 0x5555555555555555ull, 0xffffffff00000000ull, 0x10000ull,
	};
	struct native_regs in;

	if (!(host_features() & INSN_FEAT_POPCNT))
		skip();
	for (size_t i = 0; i < ARRAY_LEN(values); i++) {
		seed_regs(&in, i + 7);
		in.gpr[INSN_RBX] = values[i];
		expect_native(INSN_EMULATED, BYTES(0xf3, 0x48, 0x0f, 0xb8, 0xc3), &in);
		expect_native(INSN_EMULATED, BYTES(0xf3, 0x0f, 0xb8, 0xc3), &in);
		expect_native(INSN_EMULATED, BYTES(0x66, 0xf3, 0x0f, 0xb8, 0xc3), &in);
		/* Flags in the other state too: all arithmetic flags clear. */
		in.rflags = INSN_RFLAGS_FIXED;
		expect_native(INSN_EMULATED, BYTES(0xf3, 0x48, 0x0f, 0xb8, 0xc3), &in);
	}
}

/* A pseudo-random sweep over registers, operand sizes and values. */
static void test_popcnt_random(void **state)
{
	uint64_t x = 42;

	if (!(host_features() & INSN_FEAT_POPCNT))
		skip();
	for (unsigned i = 0; i < 300; i++) {
		struct native_regs in;
		uint8_t b[6];
		size_t n = 0;
		unsigned reg, rm, size;

		x = x * 6364136223846793005ull + 1442695040888963407ull;
		seed_regs(&in, x);
		reg = (unsigned)(x >> 20) & 15;
		rm = (unsigned)(x >> 24) & 15;
		size = (unsigned)(x >> 28) % 3;
		if (reg == INSN_RSP || rm == INSN_RSP)
			continue; /* RSP is the harness's own */
		if (x & (1ull << 40))
			in.gpr[rm] &= in.gpr[rm] >> 7; /* fewer bits set, sometimes zero */
		if (size == 0)
			b[n++] = 0x66;
		b[n++] = 0xf3;
		if (size == 2 || reg >= 8 || rm >= 8)
			b[n++] = (uint8_t)(0x40 | (size == 2 ? 8 : 0) | (reg >= 8 ? 4 : 0) | (rm >= 8 ? 1 : 0));
		b[n++] = 0x0f;
		b[n++] = 0xb8;
		b[n++] = (uint8_t)(0xc0 | (reg & 7) << 3 | (rm & 7));
		expect_native(INSN_EMULATED, b, n, &in);
	}
}

static __thread uint64_t tls_word = 0x0123456789abcdefull;

static void test_popcnt_memory_forms(void **state)
{
	static uint64_t word[4] = { 0xf0f0f0f0f0f0f0f0ull, 0x1ull, 0, ~0ull };
	uint64_t fs = 0, rip_data = 0xdeadbeefcafef00dull;
	struct native_regs in;
	int32_t d;

	if (!(host_features() & INSN_FEAT_POPCNT))
		skip();
	seed_regs(&in, 3);
	in.gpr[INSN_RBX] = (uint64_t)word;
	in.gpr[INSN_RCX] = 1;
	in.gpr[INSN_R13] = (uint64_t)word + 16;
	in.gpr[INSN_R12] = (uint64_t)word + 8;
	expect_native(INSN_EMULATED, BYTES(0xf3, 0x48, 0x0f, 0xb8, 0x03), &in);       /* [rbx] */
	expect_native(INSN_EMULATED, BYTES(0xf3, 0x0f, 0xb8, 0x03), &in);             /* dword */
	expect_native(INSN_EMULATED, BYTES(0x66, 0xf3, 0x0f, 0xb8, 0x03), &in);       /* word */
	expect_native(INSN_EMULATED, BYTES(0xf3, 0x48, 0x0f, 0xb8, 0x44, 0x8b, 0x04), &in); /* [rbx+rcx*4+4] */
	expect_native(INSN_EMULATED, BYTES(0xf3, 0x48, 0x0f, 0xb8, 0x84, 0xcb, 0x08, 0, 0, 0), &in); /* [rbx+rcx*8+8] disp32 */
	expect_native(INSN_EMULATED, BYTES(0xf3, 0x49, 0x0f, 0xb8, 0x45, 0x08), &in); /* [r13+8] */
	expect_native(INSN_EMULATED, BYTES(0xf3, 0x49, 0x0f, 0xb8, 0x04, 0x24), &in); /* [r12] via SIB */
	in.gpr[INSN_R12] = 24;
	in.gpr[INSN_R10] = 8;
	expect_native(INSN_EMULATED, BYTES(0xf3, 0x4a, 0x0f, 0xb8, 0x04, 0x23), &in); /* [rbx+r12] */
	expect_native(INSN_EMULATED, BYTES(0xf3, 0x4a, 0x0f, 0xb8, 0x04, 0x13), &in); /* [rbx+r10] */
	/* Segment prefixes that 64-bit mode ignores, and a REX that a later
	 * prefix cancels. */
	expect_native(INSN_EMULATED, BYTES(0x2e, 0x3e, 0x26, 0x36, 0xf3, 0x48, 0x0f, 0xb8, 0x03), &in);
	expect_native(INSN_EMULATED, BYTES(0x48, 0xf3, 0x0f, 0xb8, 0x03), &in);
	expect_native(INSN_EMULATED, BYTES(0xf3, 0x48, 0x40, 0x0f, 0xb8, 0x03), &in);

	/* [rip+disp32]: 8 bytes at CODE_DATA_OFF of the code page. */
	memcpy(nat.page + CODE_DATA_OFF, &rip_data, sizeof(rip_data));
	d = CODE_DATA_OFF - 9;
	expect_native(INSN_EMULATED, BYTES(0xf3, 0x48, 0x0f, 0xb8, 0x05, (uint8_t)d, (uint8_t)(d >> 8), 0, 0), &in);

	/* FS: a thread-local word, at fs_base + d. */
	syscall(SYS_arch_prctl, ARCH_GET_FS, &fs);
	d = (int32_t)((uint64_t)&tls_word - fs);
	assert_int_equal((uint64_t)(int64_t)d, (uint64_t)&tls_word - fs);
	expect_native(INSN_EMULATED, BYTES(0x64, 0xf3, 0x48, 0x0f, 0xb8, 0x04, 0x25, (uint8_t)d,
					   (uint8_t)(d >> 8), (uint8_t)(d >> 16), (uint8_t)(d >> 24)), &in);
}

/* The 67 prefix: a 32-bit effective address, zero-extended. */
static void test_popcnt_addrsize(void **state)
{
	const uint64_t low = 0x10000000;
	uint64_t *p = mmap((void *)low, 4096, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	struct native_regs in;

	if (!(host_features() & INSN_FEAT_POPCNT))
		skip();
	if (p != (uint64_t *)low)
		skip();
	p[1] = 0x00ff00ff00ff00ffull;
	seed_regs(&in, 5);
	in.gpr[INSN_RBX] = 0xabcd000000000000ull | (low + 8); /* high half dropped */
	expect_native(INSN_EMULATED, BYTES(0x67, 0xf3, 0x48, 0x0f, 0xb8, 0x03), &in);
	in.gpr[INSN_RBX] = low + 4;
	in.gpr[INSN_RCX] = 0xffffffff; /* wraps at 4 GiB: low + 4 - 1 + 5 */
	expect_native(INSN_EMULATED, BYTES(0x67, 0xf3, 0x48, 0x0f, 0xb8, 0x44, 0x0b, 0x05), &in);
	munmap(p, 4096);
}

static void test_popcnt_faults(void **state)
{
	struct native_regs in;
	uint8_t *gap;

	if (!(host_features() & INSN_FEAT_POPCNT))
		skip();
	seed_regs(&in, 9);
	/* Non-canonical: #SS through RBP (also with a DS override), #GP
	 * through any other base, R13 included, and through FS. */
	in.gpr[INSN_RBP] = 0x8000000000000000ull;
	in.gpr[INSN_R13] = 0x8000000000000000ull;
	in.gpr[INSN_RCX] = 0x8000000000000000ull;
	in.gpr[INSN_RBX] = 0;
	expect_native(INSN_EXCEPTION, BYTES(0xf3, 0x0f, 0xb8, 0x45, 0x00), &in);
	expect_native(INSN_EXCEPTION, BYTES(0x3e, 0xf3, 0x0f, 0xb8, 0x45, 0x00), &in);
	expect_native(INSN_EXCEPTION, BYTES(0x64, 0xf3, 0x0f, 0xb8, 0x45, 0x00), &in);
	expect_native(INSN_EXCEPTION, BYTES(0xf3, 0x41, 0x0f, 0xb8, 0x45, 0x00), &in);
	expect_native(INSN_EXCEPTION, BYTES(0xf3, 0x0f, 0xb8, 0x04, 0x0b), &in); /* [rbx+rcx] */
	in.gpr[INSN_RCX] = 0;
	expect_native(INSN_EXCEPTION, BYTES(0xf3, 0x0f, 0xb8, 0x44, 0x0d, 0x00), &in); /* [rbp+rcx] */
	/* The address wraps to canonical: an ordinary (here missing) page. */
	in.gpr[INSN_RCX] = 0x8000000000000000ull;
	expect_native(INSN_EXCEPTION, BYTES(0xf3, 0x0f, 0xb8, 0x44, 0x0d, 0x00), &in);

	/* A missing page: #PF, user, read, not present; CR2 the address. */
	gap = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(gap != MAP_FAILED);
	munmap(gap, 4096);
	in.gpr[INSN_RBX] = (uint64_t)gap + 0x10;
	expect_native(INSN_EXCEPTION, BYTES(0xf3, 0x48, 0x0f, 0xb8, 0x03), &in);

	/* #UD: LOCK; no F3; F2 after F3.  F3 after F2 is POPCNT. */
	expect_native(INSN_EXCEPTION, BYTES(0xf0, 0xf3, 0x0f, 0xb8, 0xc1), &in);
	expect_native(INSN_EXCEPTION, BYTES(0x0f, 0xb8, 0xc1), &in);
	expect_native(INSN_EXCEPTION, BYTES(0xf3, 0xf2, 0x0f, 0xb8, 0xc1), &in);
	expect_native(INSN_EMULATED, BYTES(0xf2, 0xf3, 0x0f, 0xb8, 0xc1), &in);

	/* 15 bytes run; 16 are #GP(0). */
	expect_native(INSN_EMULATED, BYTES(0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e,
					   0x2e, 0xf3, 0x0f, 0xb8, 0xc1), &in);
	expect_native(INSN_EXCEPTION, BYTES(0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e,
					    0x2e, 0x2e, 0xf3, 0x0f, 0xb8, 0xc1), &in);
}

/* Without POPCNT in the guest's CPUID the instruction is #UD (architectural). */
static void test_popcnt_feature_off(void **state)
{
	struct insn_cpu c = { .long64 = true, .rip = 0x1000 };
	struct insn_result res;
	struct insn in;

	assert_int_equal(insn_step(&c, BYTES(0xf3, 0x0f, 0xb8, 0xc1), &in, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, INSN_VEC_UD);
	assert_int_equal(c.rip, 0x1000);
}

/* ---- FWAIT, fences, INT3: natively ---- */

static void test_fwait_native(void **state)
{
	struct native_regs in;

	seed_regs(&in, 11);
	expect_native(INSN_EMULATED, BYTES(0x9b), &in);
	expect_native(INSN_EMULATED, BYTES(0x66, 0x9b), &in);
	expect_native(INSN_EMULATED, BYTES(0x48, 0x9b), &in);
	expect_native(INSN_EMULATED, BYTES(0xf3, 0x9b), &in);
	expect_native(INSN_EXCEPTION, BYTES(0xf0, 0x9b), &in);
}

/* A pending unmasked x87 exception: FWAIT raises #MF (vector 16).  The
 * bytes unmask divide-by-zero, divide 1 by 0 (which only records it) and
 * FWAIT; the emulator starts at the FWAIT with FSW.ES set, as the natively
 * executed prefix leaves it. */
static int fsw_pending(void *ctx, uint16_t *fsw)
{
	*fsw = 0x8084; /* B, ES, ZE */
	return 0;
}

static void test_fwait_mf_native(void **state)
{
	static uint16_t cw = 0x37b; /* all masked but ZE */
	struct native_regs st;
	struct insn_cpu c;
	struct insn_result res;
	struct insn dec;
	uint8_t code[32];
	size_t n = 0;

	seed_regs(&st, 13);
	st.gpr[INSN_RBX] = (uint64_t)&cw;
	code[n++] = 0xd9; code[n++] = 0x2b;               /* fldcw [rbx] */
	code[n++] = 0xd9; code[n++] = 0xe8;               /* fld1 */
	code[n++] = 0xd9; code[n++] = 0xee;               /* fldz */
	code[n++] = 0xde; code[n++] = 0xf9;               /* fdivp: records ZE */
	code[n++] = 0x9b;                                 /* fwait: #MF */
	run_native(code, n, &st);
	assert_int_equal(nat.trapno, INSN_VEC_MF);
	assert_int_equal(nat.rip, (uint64_t)nat.page + n - 1);
	__asm__ volatile("fninit");

	seed_regs(&st, 13);
	cpu_from_native(&c, &st);
	c.cr0 |= INSN_CR0_NE;
	c.read_fsw = fsw_pending;
	assert_int_equal(insn_step(&c, BYTES(0x9b), &dec, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, nat.trapno);
	assert_int_equal(c.rip, (uint64_t)nat.page);
}

/* #NM when CR0.MP and CR0.TS are both set (architectural: CPL 3 cannot set
 * CR0); FERR# reporting (CR0.NE clear) is left to the caller. */
static void test_fwait_architectural(void **state)
{
	struct insn_cpu c = { .long64 = true, .rip = 0x1000, .read_fsw = fsw_clear };
	struct insn_result res;
	struct insn in;

	c.cr0 = INSN_CR0_MP | INSN_CR0_TS;
	assert_int_equal(insn_step(&c, BYTES(0x9b), &in, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, INSN_VEC_NM);
	c.cr0 = INSN_CR0_TS; /* TS alone: WAIT is not affected */
	assert_int_equal(insn_step(&c, BYTES(0x9b), &in, &res), INSN_EMULATED);
	assert_int_equal(c.rip, 0x1001);
	c.cr0 = 0;
	c.read_fsw = fsw_pending;
	assert_int_equal(insn_step(&c, BYTES(0x9b), &in, &res), INSN_UNKNOWN);
	c.read_fsw = NULL;
	assert_int_equal(insn_step(&c, BYTES(0x9b), &in, &res), INSN_UNKNOWN);
}

static void test_fences_native(void **state)
{
	struct native_regs in;
	struct insn_cpu c;
	struct insn_result res;
	struct insn dec;

	seed_regs(&in, 17);
	for (unsigned m = 0xe8; m <= 0xff; m++)
		expect_native(INSN_EMULATED, BYTES(0x0f, 0xae, (uint8_t)m), &in);
	expect_native(INSN_EMULATED, BYTES(0x48, 0x0f, 0xae, 0xf0), &in);
	expect_native(INSN_EXCEPTION, BYTES(0xf0, 0x0f, 0xae, 0xe8), &in);
	/* With 66/F2/F3 these are other instructions: not ours. */
	cpu_from_native(&c, &in);
	assert_int_equal(insn_step(&c, BYTES(0x66, 0x0f, 0xae, 0xf0), &dec, &res), INSN_UNKNOWN);
	assert_int_equal(insn_step(&c, BYTES(0xf3, 0x0f, 0xae, 0xe8), &dec, &res), INSN_UNKNOWN);
	/* 0F AE with a memory operand or /0-/4 (FXSAVE, LDMXCSR, ...): unknown. */
	assert_int_equal(insn_step(&c, BYTES(0x0f, 0xae, 0x00), &dec, &res), INSN_UNKNOWN);
	assert_int_equal(insn_step(&c, BYTES(0x0f, 0xae, 0xe0), &dec, &res), INSN_UNKNOWN);
}

static void test_int3_native(void **state)
{
	struct native_regs in;

	seed_regs(&in, 19);
	expect_native(INSN_EXCEPTION, BYTES(0xcc), &in);
	expect_native(INSN_EXCEPTION, BYTES(0x66, 0xcc), &in);
	expect_native(INSN_EXCEPTION, BYTES(0xf3, 0xcc), &in);
	expect_native(INSN_EXCEPTION, BYTES(0x64, 0xcc), &in);
	expect_native(INSN_EXCEPTION, BYTES(0x48, 0xcc), &in);
	expect_native(INSN_EXCEPTION, BYTES(0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e,
					    0x2e, 0x2e, 0x2e, 0x2e, 0xcc), &in);
	/* #UD and #GP(0) instead of #BP. */
	expect_native(INSN_EXCEPTION, BYTES(0xf0, 0xcc), &in);
	expect_native(INSN_EXCEPTION, BYTES(0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e,
					    0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0xcc), &in);
}

/* At CPL 3 INT3 needs a DPL-3 gate, else #GP(IDT vector 3); at CPL 0 the
 * gate is not looked at (architectural). */
static void test_int3_gate_check(void **state)
{
	struct native_regs in;
	struct insn_cpu c;
	struct insn_result res;
	struct insn dec;

	seed_regs(&in, 23);
	cpu_from_native(&c, &in);
	fake_idt[INSN_VEC_BP * 16 + 5] = 0x8e; /* DPL 0 */
	assert_int_equal(insn_step(&c, BYTES(0xcc), &dec, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, INSN_VEC_GP);
	assert_true(res.exc.has_error_code);
	assert_int_equal(res.exc.error_code, 3 * 8 + 2);
	assert_int_equal(c.rip, (uint64_t)nat.page); /* a fault */
	c.idt_limit = 3 * 16 + 14; /* gate 3 beyond the limit */
	fake_idt[INSN_VEC_BP * 16 + 5] = 0xee;
	assert_int_equal(insn_step(&c, BYTES(0xcc), &dec, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, INSN_VEC_GP);
	c.cpl = 0;
	c.read_mem = NULL;
	assert_int_equal(insn_step(&c, BYTES(0xcc), &dec, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, INSN_VEC_BP);
	assert_false(res.exc.has_error_code);
	assert_int_equal(c.rip, (uint64_t)nat.page + 1);
}

/* ---- CLAC/STAC ---- */

/* At CPL 3 both are #UD, natively too. */
static void test_clac_stac_cpl3_native(void **state)
{
	struct native_regs in;

	seed_regs(&in, 29);
	expect_native(INSN_EXCEPTION, BYTES(0x0f, 0x01, 0xca), &in);
	expect_native(INSN_EXCEPTION, BYTES(0x0f, 0x01, 0xcb), &in);
	expect_native(INSN_EXCEPTION, BYTES(0x48, 0x0f, 0x01, 0xcb), &in);
}

/* At CPL 0 (architectural: CPL 3 cannot run them): AC cleared / set, RIP
 * past the bytes, RF cleared, nothing else touched. */
static void test_clac_stac_cpl0(void **state)
{
	struct insn_cpu c = { .long64 = true, .features = INSN_FEAT_SMAP, .rip = 0xffffffff81000000ull };
	struct insn_cpu before;
	struct insn_result res;
	struct insn in;

	for (unsigned i = 0; i < INSN_NR_GPRS; i++)
		c.gpr[i] = 0x1111111111111111ull * i;
	c.rflags = INSN_RFLAGS_FIXED | INSN_RFLAGS_ARITH | INSN_RFLAGS_RF;
	before = c;
	assert_int_equal(insn_step(&c, BYTES(0x0f, 0x01, 0xcb), &in, &res), INSN_EMULATED);
	assert_int_equal(in.op, INSN_OP_STAC);
	assert_int_equal(c.rflags, INSN_RFLAGS_FIXED | INSN_RFLAGS_ARITH | INSN_RFLAGS_AC);
	assert_int_equal(c.rip, before.rip + 3);
	assert_memory_equal(c.gpr, before.gpr, sizeof(c.gpr));
	assert_int_equal(insn_step(&c, BYTES(0x0f, 0x01, 0xcb), &in, &res), INSN_EMULATED);
	assert_true(c.rflags & INSN_RFLAGS_AC); /* STAC twice: still set */
	assert_int_equal(insn_step(&c, BYTES(0x0f, 0x01, 0xca), &in, &res), INSN_EMULATED);
	assert_int_equal(in.op, INSN_OP_CLAC);
	assert_int_equal(c.rflags, INSN_RFLAGS_FIXED | INSN_RFLAGS_ARITH);
	assert_int_equal(c.rip, before.rip + 9);
	/* Segment overrides and REX are ignored, and count in the length. */
	assert_int_equal(insn_step(&c, BYTES(0x65, 0x48, 0x0f, 0x01, 0xcb), &in, &res), INSN_EMULATED);
	assert_int_equal(c.rip, before.rip + 14);
	assert_true(c.rflags & INSN_RFLAGS_AC);
	assert_memory_equal(c.gpr, before.gpr, sizeof(c.gpr));
}

static void test_clac_stac_refused(void **state)
{
	struct insn_cpu c = { .long64 = true, .features = INSN_FEAT_SMAP, .rip = 0x1000,
			      .rflags = INSN_RFLAGS_FIXED };
	struct insn_result res;
	struct insn in;

	assert_int_equal(insn_step(&c, BYTES(0xf0, 0x0f, 0x01, 0xcb), &in, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, INSN_VEC_UD);
	/* ERETU / ERETS (FRED) and 66: not CLAC. */
	assert_int_equal(insn_step(&c, BYTES(0xf3, 0x0f, 0x01, 0xca), &in, &res), INSN_UNKNOWN);
	assert_int_equal(insn_step(&c, BYTES(0xf2, 0x0f, 0x01, 0xca), &in, &res), INSN_UNKNOWN);
	assert_int_equal(insn_step(&c, BYTES(0x66, 0x0f, 0x01, 0xca), &in, &res), INSN_UNKNOWN);
	c.features = 0; /* no SMAP in CPUID: #UD */
	assert_int_equal(insn_step(&c, BYTES(0x0f, 0x01, 0xcb), &in, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, INSN_VEC_UD);
	c.features = INSN_FEAT_SMAP;
	c.cpl = 1;
	assert_int_equal(insn_step(&c, BYTES(0x0f, 0x01, 0xcb), &in, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, INSN_VEC_UD);
	assert_int_equal(c.rip, 0x1000);
	assert_int_equal(c.rflags, INSN_RFLAGS_FIXED);
	c.cpl = 0;
	c.long64 = false;
	assert_int_equal(insn_step(&c, BYTES(0x0f, 0x01, 0xcb), &in, &res), INSN_UNKNOWN);
}

/* ---- SYSRET ---- */

static int fake_msr(void *ctx, uint32_t index, uint64_t *value)
{
	const uint64_t *msrs = ctx; /* STAR, LSTAR, FMASK */

	switch (index) {
	case INSN_MSR_STAR: *value = msrs[0]; return 0;
	case INSN_MSR_LSTAR: *value = msrs[1]; return 0;
	case INSN_MSR_FMASK: *value = msrs[2]; return 0;
	default: return -EINVAL;
	}
}

/* Linux's STAR: kernel CS 0x10, user base 0x23 (SS 0x2b, CS 0x33). */
static const uint64_t linux_msrs[3] = { 0x0023001000000000ull, 0xffffffff81a00080ull, 0x47700 };

static void test_sysret_cpl3_native(void **state)
{
	struct native_regs in;

	seed_regs(&in, 31);
	expect_native(INSN_EXCEPTION, BYTES(0x48, 0x0f, 0x07), &in);
	expect_native(INSN_EXCEPTION, BYTES(0x0f, 0x07), &in);
}

static void test_sysret_cpl0(void **state)
{
	struct insn_cpu c = { .long64 = true, .efer = INSN_EFER_LMA | INSN_EFER_SCE,
			      .rip = 0xffffffff81a00100ull, .rflags = INSN_RFLAGS_FIXED,
			      .ctx = (void *)linux_msrs, .read_msr = fake_msr };
	struct insn_cpu start;
	struct insn_result res;
	struct insn in;

	c.gpr[INSN_RCX] = 0x7fffdeadbeefull;
	c.gpr[INSN_R11] = 0xffffffffffffffffull;
	start = c;
	assert_int_equal(insn_step(&c, BYTES(0x48, 0x0f, 0x07), &in, &res), INSN_EMULATED);
	assert_int_equal(c.rip, 0x7fffdeadbeefull);
	assert_int_equal(c.rflags, (0xffffffffffffffffull & 0x3c7fd7) | 2);
	assert_true(c.segs_changed);
	assert_int_equal(c.cs_sel, 0x33);
	assert_int_equal(c.ss_sel, 0x2b);
	assert_true(c.cs_long);
	assert_int_equal(c.cpl, 3);
	assert_int_equal(c.gpr[INSN_RCX], start.gpr[INSN_RCX]);

	/* SYSRET without REX.W: to compatibility mode, EIP = ECX. */
	c = start;
	c.gpr[INSN_RCX] = 0xffffffff08048000ull;
	c.gpr[INSN_R11] = 0x202;
	assert_int_equal(insn_step(&c, BYTES(0x0f, 0x07), &in, &res), INSN_EMULATED);
	assert_int_equal(c.rip, 0x08048000);
	assert_int_equal(c.rflags, 0x202);
	assert_int_equal(c.cs_sel, 0x23);
	assert_int_equal(c.ss_sel, 0x2b);
	assert_false(c.cs_long);

	/* #GP(0): non-canonical RCX (Intel), CPL > 0; #UD: EFER.SCE clear, LOCK. */
	c = start;
	c.gpr[INSN_RCX] = 0x0000800000000000ull;
	assert_int_equal(insn_step(&c, BYTES(0x48, 0x0f, 0x07), &in, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, INSN_VEC_GP);
	assert_int_equal(c.rip, start.rip);
	assert_false(c.segs_changed);
	c = start;
	c.efer = INSN_EFER_LMA;
	assert_int_equal(insn_step(&c, BYTES(0x48, 0x0f, 0x07), &in, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, INSN_VEC_UD);
	c = start;
	assert_int_equal(insn_step(&c, BYTES(0xf0, 0x48, 0x0f, 0x07), &in, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, INSN_VEC_UD);
	c.read_msr = NULL;
	assert_int_equal(insn_step(&c, BYTES(0x48, 0x0f, 0x07), &in, &res), INSN_UNKNOWN);
}

/* ---- SSE state: LDMXCSR, STMXCSR, the SSE moves, XGETBV ----
 *
 * The XMM registers and MXCSR go in and out of the native run through an
 * FXSAVE image: FXRSTOR right before the bytes run, FXSAVE right after (no
 * C code in between that could use an XMM register), and the test's own
 * state back afterwards.  The emulator gets the same image as its struct
 * insn_sse.  A memory operand the instruction may store to is a "window":
 * the emulator runs on it first, its bytes are kept and the window reset,
 * then the CPU runs, and both results must match. */

#define FX_MXCSR 24
#define FX_MXCSR_MASK 28
#define FX_XMM 160

struct fx {
	uint8_t b[512];
} __attribute__((aligned(16)));

struct window {
	uint8_t *p;
	size_t len;
};

static void run_native_fx(const uint8_t *b, size_t n, struct native_regs *st, struct fx *fx)
{
	struct sigaction sa = { .sa_sigaction = on_signal, .sa_flags = SA_SIGINFO };
	struct sigaction old[ARRAY_LEN(trap_signals)];
	static struct fx own;

	sigemptyset(&sa.sa_mask);
	assert_true(n < CODE_DATA_OFF);
	memcpy(nat.page, b, n);
	nat.page[n] = 0xc3; /* ret */
	nat.len = n;
	nat.trapno = -1;
	__builtin___clear_cache((char *)nat.page, (char *)nat.page + n + 1);
	for (size_t i = 0; i < ARRAY_LEN(trap_signals); i++)
		assert_int_equal(sigaction(trap_signals[i], &sa, &old[i]), 0);
	__asm__ volatile("fxsave64 %0" : "=m"(own));
	__asm__ volatile("fxrstor64 %0" : : "m"(*fx));
	native_run(st, nat.page);
	__asm__ volatile("fxsave64 %0" : "=m"(*fx));
	__asm__ volatile("fxrstor64 %0" : : "m"(own));
	for (size_t i = 0; i < ARRAY_LEN(trap_signals); i++)
		sigaction(trap_signals[i], &old[i], NULL);
}

/* This process's memory for stores: a page the kernel does not let us
 * write is a user-mode write #PF, present when it can be read. */
static int self_write(void *ctx, uint64_t la, const void *buf, size_t len, unsigned access,
		      struct insn_exception *fault)
{
	struct iovec local = { (void *)buf, len }, remote = { (void *)la, len };
	uint8_t probe;

	/* All pages first, as the CPU: a store that faults writes nothing. */
	for (uint64_t a = la; a < la + len; a = (a | 4095) + 1) {
		struct iovec pl = { &probe, 1 }, pr = { (void *)a, 1 };
		bool readable = process_vm_readv(getpid(), &pl, 1, &pr, 1, 0) == 1;

		if (!readable || process_vm_writev(getpid(), &pl, 1, &pr, 1, 0) != 1) {
			*fault = (struct insn_exception){
				.vector = INSN_VEC_PF, .has_error_code = true,
				.error_code = INSN_PF_USER | INSN_PF_WRITE | (readable ? INSN_PF_PRESENT : 0),
				.cr2 = a < la ? la : a };
			return -EFAULT;
		}
	}
	if (process_vm_writev(getpid(), &local, 1, &remote, 1, 0) != (ssize_t)len)
		return -EIO;
	return 0;
}

static uint64_t native_xgetbv(uint32_t index)
{
	uint32_t lo, hi;

	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(index));
	return (uint64_t)hi << 32 | lo;
}

static bool host_osxsave(void)
{
	unsigned a, b, c, d;

	return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 27));
}

static int self_xcr(void *ctx, uint32_t index, uint64_t *value)
{
	*value = native_xgetbv(index);
	return 0;
}

static uint32_t host_features_sse(void)
{
	unsigned a, b, c, d;
	uint32_t f = host_features();

	if (host_osxsave() && __get_cpuid_count(0xd, 1, &a, &b, &c, &d) && (a & (1u << 2)))
		f |= INSN_FEAT_XGETBV1;
	return f;
}

/* An FXSAVE image with pseudo-random XMM registers and MXCSR 0x1f80. */
static void seed_fx(struct fx *fx, uint64_t seed)
{
	uint32_t mxcsr = 0x1f80;

	__asm__ volatile("fxsave64 %0" : "=m"(*fx));
	for (unsigned i = 0; i < 256; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		fx->b[FX_XMM + i] = (uint8_t)(seed >> 33);
	}
	memcpy(fx->b + FX_MXCSR, &mxcsr, 4);
}

static void sse_from_fx(struct insn_sse *sse, const struct fx *fx)
{
	memcpy(sse->xmm, fx->b + FX_XMM, sizeof(sse->xmm));
	memcpy(&sse->mxcsr, fx->b + FX_MXCSR, 4);
	memcpy(&sse->mxcsr_mask, fx->b + FX_MXCSR_MASK, 4);
}

/* compare() with the SSE state and a memory window @w (or none). */
static enum insn_action compare_fx(const uint8_t *b, size_t n, const struct native_regs *in,
				   const struct fx *fx_in, const struct window *w)
{
	struct native_regs st = *in;
	struct fx fx = *fx_in;
	struct insn_sse sse, sse_in;
	struct insn_cpu c;
	struct insn_result res;
	struct insn dec;
	enum insn_action a;
	uint8_t before[64], emulated[64];
	size_t wl = w ? w->len : 0;

	assert_true(wl <= sizeof(before));
	if (wl)
		memcpy(before, w->p, wl);
	cpu_from_native(&c, in);
	c.cr4 |= INSN_CR4_OSFXSR | (host_osxsave() ? INSN_CR4_OSXSAVE : 0);
	c.features = host_features_sse();
	c.write_mem = self_write;
	c.read_xcr = self_xcr;
	sse_from_fx(&sse, &fx);
	sse_in = sse;
	c.sse = &sse;
	memcpy(nat.page, b, n);
	a = insn_step(&c, b, n, &dec, &res);
	if (wl) {
		memcpy(emulated, w->p, wl);
		memcpy(w->p, before, wl);
	}
	run_native_fx(b, n, &st, &fx);

	if (a == INSN_UNKNOWN)
		fail_msg("emulator does not know bytes it should (%s); native trap %d", res.why,
			 nat.trapno);
	for (unsigned i = 0; i < INSN_NR_GPRS; i++)
		if (i != INSN_RSP && c.gpr[i] != st.gpr[i])
			fail_msg("gpr %u: emulated 0x%llx, native 0x%llx", i,
				 (unsigned long long)c.gpr[i], (unsigned long long)st.gpr[i]);
	for (unsigned i = 0; i < 16; i++)
		if (memcmp(sse.xmm[i], fx.b + FX_XMM + 16 * i, 16))
			fail_msg("xmm%u differs", i);
	assert_memory_equal(&sse.mxcsr, fx.b + FX_MXCSR, 4);
	if (wl)
		assert_memory_equal(emulated, w->p, wl);
	if (nat.trapno < 0) {
		if (a != INSN_EMULATED)
			fail_msg("native ran, emulator raised vector %u", res.exc.vector);
		assert_int_equal(c.rip, (uint64_t)nat.page + n);
		assert_int_equal(dec.len, n);
		assert_int_equal(c.rflags & INSN_RFLAGS_ARITH, st.rflags & INSN_RFLAGS_ARITH);
		return a;
	}
	if (a != INSN_EXCEPTION)
		fail_msg("native raised vector %d, emulator completed the instruction", nat.trapno);
	assert_int_equal(res.exc.vector, nat.trapno);
	if (nat.trapno == INSN_VEC_GP || nat.trapno == INSN_VEC_SS || nat.trapno == INSN_VEC_PF)
		assert_int_equal(res.exc.error_code, nat.err);
	if (nat.trapno == INSN_VEC_PF)
		assert_int_equal(res.exc.cr2, nat.cr2);
	assert_int_equal(c.rip, nat.rip);
	assert_false(c.sse_changed);
	assert_memory_equal(&sse, &sse_in, sizeof(sse)); /* a fault writes nothing */
	return a;
}

static void expect_fx(enum insn_action want, const uint8_t *b, size_t n,
		      const struct native_regs *in, const struct fx *fx, const struct window *w)
{
	assert_int_equal(compare_fx(b, n, in, fx, w), want);
}

/* A page whose second half is followed by a read-only page, and a missing
 * one after that: stores across the end fault. */
static uint8_t *edge_pages(void)
{
	uint8_t *p = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	assert_true(p != MAP_FAILED);
	for (unsigned k = 0; k < 4096; k += 4)
		*(uint32_t *)(p + 4096 + k) = 0x1f80; /* a valid MXCSR to load */
	assert_int_equal(mprotect(p + 4096, 4096, PROT_READ), 0);
	assert_int_equal(munmap(p + 8192, 4096), 0);
	return p;
}

static void test_mxcsr_native(void **state)
{
	static uint32_t word[8] __attribute__((aligned(16)));
	uint32_t mask, good[] = { 0x1f80, 0x9fc0, 0x0000, 0x7f80, 0x1fbf, 0x6000 };
	struct window win = { (uint8_t *)word, sizeof(word) };
	struct native_regs in;
	struct fx fx;
	uint8_t *edge;
	int32_t d;

	seed_regs(&in, 37);
	seed_fx(&fx, 37);
	memcpy(&mask, fx.b + FX_MXCSR_MASK, 4);
	if (!mask)
		mask = 0xffbf;
	in.gpr[INSN_RBX] = (uint64_t)word;
	in.gpr[INSN_RBP] = (uint64_t)word + 8;
	in.gpr[INSN_RCX] = 1;
	in.gpr[INSN_R12] = (uint64_t)word + 4;
	in.gpr[INSN_R13] = (uint64_t)word + 12;
	for (size_t i = 0; i < ARRAY_LEN(good); i++) {
		for (unsigned k = 0; k < 8; k++)
			word[k] = good[i] & mask;
		expect_fx(INSN_EMULATED, BYTES(0x0f, 0xae, 0x13), &in, &fx, &win);             /* ldmxcsr [rbx] */
		expect_fx(INSN_EMULATED, BYTES(0x0f, 0xae, 0x54, 0x8b, 0x04), &in, &fx, &win); /* [rbx+rcx*4+4] */
		expect_fx(INSN_EMULATED, BYTES(0x0f, 0xae, 0x55, 0x04), &in, &fx, &win);       /* [rbp+4] */
		expect_fx(INSN_EMULATED, BYTES(0x41, 0x0f, 0xae, 0x14, 0x24), &in, &fx, &win); /* [r12] */
		expect_fx(INSN_EMULATED, BYTES(0x41, 0x0f, 0xae, 0x55, 0x00), &in, &fx, &win); /* [r13] */
		expect_fx(INSN_EMULATED, BYTES(0x0f, 0xae, 0x94, 0xcb, 0x08, 0, 0, 0), &in, &fx, &win);
	}
	/* STMXCSR of several MXCSR values, to every form. */
	for (size_t i = 0; i < ARRAY_LEN(good); i++) {
		uint32_t v = good[i] & mask;

		memcpy(fx.b + FX_MXCSR, &v, 4);
		memset(word, 0xa5, sizeof(word));
		expect_fx(INSN_EMULATED, BYTES(0x0f, 0xae, 0x1b), &in, &fx, &win);             /* stmxcsr [rbx] */
		expect_fx(INSN_EMULATED, BYTES(0x0f, 0xae, 0x5c, 0x8b, 0x04), &in, &fx, &win);
		expect_fx(INSN_EMULATED, BYTES(0x0f, 0xae, 0x5d, 0x04), &in, &fx, &win);
		expect_fx(INSN_EMULATED, BYTES(0x41, 0x0f, 0xae, 0x1c, 0x24), &in, &fx, &win);
		expect_fx(INSN_EMULATED, BYTES(0x48, 0x0f, 0xae, 0x1b), &in, &fx, &win);       /* REX.W: the same */
		expect_fx(INSN_EMULATED, BYTES(0x2e, 0x0f, 0xae, 0x1b), &in, &fx, &win);       /* CS: ignored */
	}
	seed_fx(&fx, 37);
	/* RIP-relative and FS-relative. */
	memcpy(nat.page + CODE_DATA_OFF, &good[1], 4);
	d = CODE_DATA_OFF - 7;
	expect_fx(INSN_EMULATED, BYTES(0x0f, 0xae, 0x15, (uint8_t)d, (uint8_t)(d >> 8), 0, 0), &in, &fx, NULL);
	{
		uint64_t fs = 0;

		syscall(SYS_arch_prctl, ARCH_GET_FS, &fs);
		tls_word = 0x1f80;
		d = (int32_t)((uint64_t)&tls_word - fs);
		expect_fx(INSN_EMULATED, BYTES(0x64, 0x0f, 0xae, 0x14, 0x25, (uint8_t)d, (uint8_t)(d >> 8),
					       (uint8_t)(d >> 16), (uint8_t)(d >> 24)), &in, &fx, NULL);
	}

	/* Reserved bits: #GP(0), MXCSR unchanged. */
	word[0] = 0x10000 | 0x1f80;
	expect_fx(INSN_EXCEPTION, BYTES(0x0f, 0xae, 0x13), &in, &fx, &win);
	word[0] = 0x80001f80;
	expect_fx(INSN_EXCEPTION, BYTES(0x0f, 0xae, 0x13), &in, &fx, &win);
	if (!(mask & 0x40)) {
		word[0] = 0x1fc0; /* DAZ where the CPU lacks it */
		expect_fx(INSN_EXCEPTION, BYTES(0x0f, 0xae, 0x13), &in, &fx, &win);
	}
	word[0] = ~mask & 0xffffffffu;
	expect_fx(INSN_EXCEPTION, BYTES(0x0f, 0xae, 0x13), &in, &fx, &win);

	/* #UD: a register operand, LOCK. */
	expect_fx(INSN_EXCEPTION, BYTES(0x0f, 0xae, 0xd0), &in, &fx, NULL);
	expect_fx(INSN_EXCEPTION, BYTES(0x0f, 0xae, 0xd8), &in, &fx, NULL);
	expect_fx(INSN_EXCEPTION, BYTES(0xf0, 0x0f, 0xae, 0x13), &in, &fx, &win);

	/* Non-canonical: #SS(0) through RBP, #GP(0) otherwise. */
	in.gpr[INSN_RBP] = 0x8000000000000000ull;
	in.gpr[INSN_RDX] = 0x8000000000000000ull;
	expect_fx(INSN_EXCEPTION, BYTES(0x0f, 0xae, 0x55, 0x00), &in, &fx, NULL);
	expect_fx(INSN_EXCEPTION, BYTES(0x0f, 0xae, 0x5d, 0x00), &in, &fx, NULL);
	expect_fx(INSN_EXCEPTION, BYTES(0x0f, 0xae, 0x12), &in, &fx, NULL);
	expect_fx(INSN_EXCEPTION, BYTES(0x0f, 0xae, 0x1a), &in, &fx, NULL);

	/* #PF: a missing page (read and write), a read-only page (write), and
	 * a store whose last byte lies on the read-only page. */
	edge = edge_pages();
	in.gpr[INSN_RBX] = (uint64_t)edge + 8192;
	expect_fx(INSN_EXCEPTION, BYTES(0x0f, 0xae, 0x13), &in, &fx, NULL);
	expect_fx(INSN_EXCEPTION, BYTES(0x0f, 0xae, 0x1b), &in, &fx, NULL);
	in.gpr[INSN_RBX] = (uint64_t)edge + 4096;
	expect_fx(INSN_EMULATED, BYTES(0x0f, 0xae, 0x13), &in, &fx, NULL);
	expect_fx(INSN_EXCEPTION, BYTES(0x0f, 0xae, 0x1b), &in, &fx, NULL);
	win = (struct window){ edge + 4096 - 8, 8 };
	in.gpr[INSN_RBX] = (uint64_t)edge + 4096 - 2;
	expect_fx(INSN_EXCEPTION, BYTES(0x0f, 0xae, 0x1b), &in, &fx, &win);
	in.gpr[INSN_RBX] = (uint64_t)edge + 8192 - 2; /* read across into the missing page */
	expect_fx(INSN_EXCEPTION, BYTES(0x0f, 0xae, 0x13), &in, &fx, NULL);
	munmap(edge, 8192);
}

/* The moves and XORs, register and memory forms, every prefix that picks
 * them, high registers through REX.R/REX.B. */
static void test_sse_moves_native(void **state)
{
	static uint8_t buf[64] __attribute__((aligned(16)));
	static const uint8_t ops[][4] = {
		/* prefix (0: none), opcode */
		{ 0x66, 0x6f }, { 0xf3, 0x6f }, { 0x66, 0x7f }, { 0xf3, 0x7f }, /* movdqa/u */
		{ 0x00, 0x28 }, { 0x00, 0x29 }, { 0x00, 0x10 }, { 0x00, 0x11 }, /* movaps/ups */
		{ 0x66, 0x28 }, { 0x66, 0x29 }, { 0x66, 0x10 }, { 0x66, 0x11 }, /* movapd/upd */
		{ 0x66, 0x6e }, { 0x66, 0x7e }, { 0xf3, 0x7e }, { 0x66, 0xd6 }, /* movd/movq */
		{ 0x66, 0xef }, { 0x00, 0x57 }, { 0x66, 0x57 },                 /* pxor, xorps, xorpd */
	};
	struct window win = { buf, sizeof(buf) };
	struct native_regs in;
	struct fx fx;

	for (size_t i = 0; i < ARRAY_LEN(ops); i++) {
		for (unsigned form = 0; form < 10; form++) {
			uint8_t b[12];
			size_t n = 0;
			uint8_t rex = 0;

			seed_regs(&in, 41 + i * 16 + form);
			seed_fx(&fx, 43 + i * 16 + form);
			for (unsigned k = 0; k < sizeof(buf); k++)
				buf[k] = (uint8_t)(k * 7 + i);
			in.gpr[INSN_RBX] = (uint64_t)buf + 16;
			in.gpr[INSN_R9] = (uint64_t)buf + 32;
			in.gpr[INSN_RCX] = 2;
			if (ops[i][0])
				b[n++] = ops[i][0];
			switch (form) {
			case 0: rex = 0; break;          /* xmm1, xmm2 / [rbx] */
			case 1: rex = 0x44; break;       /* xmm9 (REX.R) */
			case 2: rex = 0x41; break;       /* xmm10 / r9 (REX.B) */
			case 3: rex = 0x4d; break;       /* REX.WRB */
			case 4: rex = 0x48; break;       /* REX.W: movq forms */
			default: rex = form & 1 ? 0x48 : 0; break;
			}
			if (rex)
				b[n++] = rex;
			b[n++] = 0x0f;
			b[n++] = ops[i][1];
			switch (form) {
			case 0: case 1: case 3: case 4:
				b[n++] = 0xca;             /* reg 1, rm 2 */
				break;
			case 2:
				b[n++] = 0x11;             /* reg 2, [r9] with REX.B */
				break;
			case 5: case 6:
				b[n++] = 0x13;             /* [rbx] */
				break;
			case 7:
				b[n++] = 0x54; b[n++] = 0x4b; b[n++] = 0xfc; /* [rbx+rcx*2-4] */
				break;
			case 8:
				b[n++] = 0x53; b[n++] = 0xf0;              /* [rbx-16] */
				break;
			default:
				b[n++] = 0x5b; b[n++] = 0x08;              /* [rbx+8]: misaligned by 8 */
				break;
			}
			/* Register and aligned forms run; misaligned ones run or
			 * #GP(0), as the CPU decides: compare_fx() checks both. */
			(void)compare_fx(b, n, &in, &fx, &win);
		}
	}
	/* The mandatory prefix is the last F2/F3, else 66: 66 F3 is MOVDQU
	 * (misaligned fine), F3 66 too. */
	seed_regs(&in, 47);
	seed_fx(&fx, 47);
	in.gpr[INSN_RBX] = (uint64_t)buf + 8;
	expect_fx(INSN_EMULATED, BYTES(0x66, 0xf3, 0x0f, 0x6f, 0x03), &in, &fx, &win);
	expect_fx(INSN_EMULATED, BYTES(0xf3, 0x66, 0x0f, 0x7f, 0x03), &in, &fx, &win);
	expect_fx(INSN_EXCEPTION, BYTES(0x66, 0x0f, 0x7f, 0x03), &in, &fx, &win);
	expect_fx(INSN_EXCEPTION, BYTES(0xf0, 0x66, 0x0f, 0xef, 0xc0), &in, &fx, NULL); /* LOCK */
	expect_fx(INSN_EMULATED, BYTES(0x66, 0x0f, 0xef, 0xc0), &in, &fx, NULL);        /* pxor xmm0, xmm0 */
	expect_fx(INSN_EMULATED, BYTES(0x66, 0x45, 0x0f, 0xef, 0xff), &in, &fx, NULL);  /* pxor xmm15, xmm15 */
	/* movd to a 32-bit register zero-extends; movq to eax with REX.W. */
	expect_fx(INSN_EMULATED, BYTES(0x66, 0x0f, 0x7e, 0xc0), &in, &fx, NULL);
	expect_fx(INSN_EMULATED, BYTES(0x66, 0x49, 0x0f, 0x7e, 0xc7), &in, &fx, NULL);  /* movq r15, xmm0 */
	expect_fx(INSN_EMULATED, BYTES(0x66, 0x4c, 0x0f, 0x6e, 0xf8), &in, &fx, NULL);  /* movq xmm15, rax */
}

/* The SSE2/SSSE3 integer operations blake2s_compress_ssse3 (Debian's
 * kernel, random.c) runs, and their neighbours: register and memory forms,
 * aligned and not, every immediate of the shuffles and shifts that matters. */
static void test_sse_integer_native(void **state)
{
	static uint8_t buf[64] __attribute__((aligned(16)));
	static const uint8_t ops[] = { 0xfe, 0xd4, 0xdb, 0xdf, 0xeb, 0x62, 0x6c };
	struct window win = { buf, sizeof(buf) };
	struct native_regs in;
	struct fx fx;

	for (size_t i = 0; i < ARRAY_LEN(ops); i++) {
		for (unsigned form = 0; form < 5; form++) {
			static const uint8_t modrm[5][2] = {
				{ 0xca, 0 }, { 0xff, 0 }, { 0x13, 0 }, { 0x53, 0x10 }, { 0x53, 0x08 },
			};
			uint8_t b[8];
			size_t n = 0;

			seed_regs(&in, 71 + i * 8 + form);
			seed_fx(&fx, 73 + i * 8 + form);
			for (unsigned k = 0; k < sizeof(buf); k++)
				buf[k] = (uint8_t)(k * 13 + i * 7 + 0xf0);
			in.gpr[INSN_RBX] = (uint64_t)buf;
			b[n++] = 0x66;
			if (form == 1)
				b[n++] = 0x45; /* xmm15, xmm15 */
			b[n++] = 0x0f;
			b[n++] = ops[i];
			b[n++] = modrm[form][0];
			if (modrm[form][0] == 0x53)
				b[n++] = modrm[form][1];
			/* [rbx+8] is misaligned: #GP(0) on the CPU too. */
			(void)compare_fx(b, n, &in, &fx, &win);
		}
	}
	/* PSHUFD: every imm8 in steps, register and memory. */
	seed_regs(&in, 79);
	seed_fx(&fx, 79);
	in.gpr[INSN_RBX] = (uint64_t)buf;
	for (unsigned imm = 0; imm < 256; imm += 7) {
		expect_fx(INSN_EMULATED, BYTES(0x66, 0x0f, 0x70, 0xc1, (uint8_t)imm), &in, &fx, NULL);
		expect_fx(INSN_EMULATED, BYTES(0x66, 0x44, 0x0f, 0x70, 0x03, (uint8_t)imm), &in, &fx, &win);
	}
	expect_fx(INSN_EMULATED, BYTES(0x66, 0x0f, 0x70, 0xc0, 0x93), &in, &fx, NULL);
	expect_fx(INSN_EMULATED, BYTES(0x66, 0x0f, 0x70, 0xdb, 0x4e), &in, &fx, NULL);
	/* PSHUFB: selectors with and without bit 7, as blake2s's rotations. */
	if (host_features() & INSN_FEAT_SSSE3) {
		for (unsigned k = 0; k < 16; k++)
			buf[k] = (uint8_t)((k * 5 + 3) & 15) | (k % 5 == 0 ? 0x80 : 0);
		expect_fx(INSN_EMULATED, BYTES(0x66, 0x0f, 0x38, 0x00, 0xd9), &in, &fx, NULL); /* xmm3, xmm1 */
		expect_fx(INSN_EMULATED, BYTES(0x66, 0x0f, 0x38, 0x00, 0x1b), &in, &fx, &win); /* xmm3, [rbx] */
		expect_fx(INSN_EMULATED, BYTES(0x66, 0x41, 0x0f, 0x38, 0x00, 0xdc), &in, &fx, NULL);
		in.gpr[INSN_RBX] = (uint64_t)buf + 4;
		expect_fx(INSN_EXCEPTION, BYTES(0x66, 0x0f, 0x38, 0x00, 0x1b), &in, &fx, &win);
		in.gpr[INSN_RBX] = (uint64_t)buf;
	}
	/* The shifts: words, dwords, qwords, bytes; counts 0, 1, inside,
	 * at and past the width. */
	{
		static const uint8_t groups[][2] = {
			{ 0x71, 2 }, { 0x71, 4 }, { 0x71, 6 }, { 0x72, 2 }, { 0x72, 4 }, { 0x72, 6 },
			{ 0x73, 2 }, { 0x73, 3 }, { 0x73, 6 }, { 0x73, 7 },
		};
		static const uint8_t counts[] = { 0, 1, 7, 12, 15, 16, 20, 25, 31, 32, 33, 63, 64, 200 };

		for (size_t g = 0; g < ARRAY_LEN(groups); g++)
			for (size_t k = 0; k < ARRAY_LEN(counts); k++) {
				uint8_t modrm = (uint8_t)(0xc0 | groups[g][1] << 3 | 1);

				seed_fx(&fx, 83 + g * 16 + k);
				expect_fx(INSN_EMULATED, BYTES(0x66, 0x0f, groups[g][0], modrm, counts[k]),
					  &in, &fx, NULL);
				expect_fx(INSN_EMULATED, BYTES(0x66, 0x41, 0x0f, groups[g][0], modrm,
							       counts[k]), &in, &fx, NULL);
			}
	}
	/* A memory operand in the shift group is #UD. */
	expect_fx(INSN_EXCEPTION, BYTES(0x66, 0x0f, 0x72, 0x13, 0x04), &in, &fx, NULL);
	/* RIP-relative with an immediate after the displacement. */
	{
		int32_t d = CODE_DATA_OFF - 9; /* 9 bytes, the imm8 included */

		memset(nat.page + CODE_DATA_OFF, 0x3c, 16);
		expect_fx(INSN_EMULATED, BYTES(0x66, 0x0f, 0x70, 0x05, (uint8_t)d, (uint8_t)(d >> 8), 0, 0, 0x1b),
			  &in, &fx, NULL);
	}
}

/* What the crc32c-intel, crc32-pclmul and crct10dif-pclmul modules run:
 * CRC32 (a general-register instruction, every size and both byte-register
 * sets), PCLMULQDQ (every lane pair), PBLENDVB, PMOVZXDQ, PEXTRD/Q, PINSRW,
 * PEXTRW, in the forms those modules use and a few more. */
static void test_sse41_crc32_native(void **state)
{
	static uint8_t buf[64] __attribute__((aligned(16)));
	struct window win = { buf, sizeof(buf) };
	struct native_regs in;
	struct fx fx;
	uint32_t f = host_features();

	seed_regs(&in, 89);
	seed_fx(&fx, 89);
	for (unsigned k = 0; k < sizeof(buf); k++)
		buf[k] = (uint8_t)(k * 29 + 5);
	in.gpr[INSN_RBX] = (uint64_t)buf;
	in.gpr[INSN_RCX] = (uint64_t)buf + 3; /* CRC32 has no alignment rule */
	if (f & INSN_FEAT_SSE42) {
		expect_fx(INSN_EMULATED, BYTES(0xf2, 0x0f, 0x38, 0xf0, 0x01), &in, &fx, &win);       /* crc32b (%rcx),%eax */
		expect_fx(INSN_EMULATED, BYTES(0xf2, 0x44, 0x0f, 0x38, 0xf0, 0xc3), &in, &fx, NULL); /* crc32 %bl,%r8d */
		expect_fx(INSN_EMULATED, BYTES(0xf2, 0x0f, 0x38, 0xf0, 0xc7), &in, &fx, NULL);       /* crc32 %bh,%eax */
		expect_fx(INSN_EMULATED, BYTES(0xf2, 0x40, 0x0f, 0x38, 0xf0, 0xc7), &in, &fx, NULL); /* crc32 %dil,%eax */
		expect_fx(INSN_EMULATED, BYTES(0x66, 0xf2, 0x0f, 0x38, 0xf1, 0x01), &in, &fx, &win); /* crc32w */
		expect_fx(INSN_EMULATED, BYTES(0xf2, 0x44, 0x0f, 0x38, 0xf1, 0x01), &in, &fx, &win); /* crc32l (%rcx),%r8d */
		expect_fx(INSN_EMULATED, BYTES(0xf2, 0x4c, 0x0f, 0x38, 0xf1, 0x41, 0x08), &in, &fx, &win); /* crc32q 8(%rcx),%r8 */
		expect_fx(INSN_EMULATED, BYTES(0xf2, 0x48, 0x0f, 0x38, 0xf1, 0xc6), &in, &fx, NULL); /* crc32q %rsi,%rax */
		expect_fx(INSN_EMULATED, BYTES(0xf2, 0x48, 0x0f, 0x38, 0xf0, 0xc6), &in, &fx, NULL); /* crc32b %sil,%rax */
		expect_fx(INSN_EXCEPTION, BYTES(0xf0, 0xf2, 0x0f, 0x38, 0xf1, 0xc6), &in, &fx, NULL); /* LOCK */
		for (unsigned k = 0; k < 40; k++) { /* values */
			seed_regs(&in, 900 + k);
			expect_fx(INSN_EMULATED, BYTES(0xf2, 0x48, 0x0f, 0x38, 0xf1, 0xc6), &in, &fx, NULL);
			expect_fx(INSN_EMULATED, BYTES(0xf2, 0x0f, 0x38, 0xf1, 0xd9), &in, &fx, NULL);
		}
		in.gpr[INSN_RBX] = (uint64_t)buf;
	}
	if (f & INSN_FEAT_PCLMUL) {
		for (unsigned imm = 0; imm < 0x20; imm++) {
			seed_fx(&fx, 91 + imm);
			expect_fx(INSN_EMULATED, BYTES(0x66, 0x0f, 0x3a, 0x44, 0xc8, (uint8_t)imm), &in, &fx, NULL);
		}
		expect_fx(INSN_EMULATED, BYTES(0x66, 0x45, 0x0f, 0x3a, 0x44, 0xea, 0x11), &in, &fx, NULL);
		expect_fx(INSN_EMULATED, BYTES(0x66, 0x0f, 0x3a, 0x44, 0x0b, 0x01), &in, &fx, &win);  /* [rbx] */
		in.gpr[INSN_RBX] = (uint64_t)buf + 8;
		expect_fx(INSN_EXCEPTION, BYTES(0x66, 0x0f, 0x3a, 0x44, 0x0b, 0x01), &in, &fx, &win); /* misaligned */
		in.gpr[INSN_RBX] = (uint64_t)buf;
	}
	if (f & INSN_FEAT_SSE41) {
		seed_fx(&fx, 97);
		memset(fx.b + FX_XMM, 0, 16); /* XMM0, the blend mask: some bytes with bit 7 */
		for (unsigned k = 0; k < 16; k += 3)
			fx.b[FX_XMM + k] = (uint8_t)(0x80 | k);
		fx.b[FX_XMM + 1] = 0x7f;
		expect_fx(INSN_EMULATED, BYTES(0x66, 0x0f, 0x38, 0x10, 0xca), &in, &fx, NULL);       /* pblendvb %xmm2,%xmm1 */
		expect_fx(INSN_EMULATED, BYTES(0x66, 0x0f, 0x38, 0x10, 0x0b), &in, &fx, &win);       /* [rbx] */
		expect_fx(INSN_EMULATED, BYTES(0x66, 0x0f, 0x38, 0x35, 0x4b, 0x04), &in, &fx, &win); /* pmovzxdq 4(%rbx) */
		expect_fx(INSN_EMULATED, BYTES(0x66, 0x0f, 0x38, 0x35, 0xc1), &in, &fx, NULL);
		for (unsigned imm = 0; imm < 8; imm++) {
			expect_fx(INSN_EMULATED, BYTES(0x66, 0x0f, 0x3a, 0x16, 0xc8, (uint8_t)imm), &in, &fx, NULL);
			expect_fx(INSN_EMULATED, BYTES(0x66, 0x48, 0x0f, 0x3a, 0x16, 0xc8, (uint8_t)imm), &in, &fx, NULL);
			expect_fx(INSN_EMULATED, BYTES(0x66, 0x0f, 0x3a, 0x16, 0x0b, (uint8_t)imm), &in, &fx, &win);
		}
	}
	for (unsigned imm = 0; imm < 10; imm++) {
		expect_fx(INSN_EMULATED, BYTES(0x66, 0x0f, 0xc4, 0xc7, (uint8_t)imm), &in, &fx, NULL);       /* pinsrw %edi */
		expect_fx(INSN_EMULATED, BYTES(0x66, 0x44, 0x0f, 0xc4, 0xc7, (uint8_t)imm), &in, &fx, NULL); /* %xmm8 */
		expect_fx(INSN_EMULATED, BYTES(0x66, 0x0f, 0xc4, 0x0b, (uint8_t)imm), &in, &fx, &win);       /* m16 */
		expect_fx(INSN_EMULATED, BYTES(0x66, 0x0f, 0xc5, 0xc0, (uint8_t)imm), &in, &fx, NULL);       /* pextrw */
		expect_fx(INSN_EMULATED, BYTES(0x66, 0x4d, 0x0f, 0xc5, 0xc7, (uint8_t)imm), &in, &fx, NULL);
	}
}

/* Faults: non-canonical (#SS through RSP/RBP, else #GP), missing and
 * read-only pages, a 16-byte store across into a read-only page (nothing
 * written), a load across into a missing one. */
static void test_sse_faults_native(void **state)
{
	struct native_regs in;
	struct window win;
	struct fx fx;
	uint8_t *edge = edge_pages();

	seed_regs(&in, 53);
	seed_fx(&fx, 53);
	in.gpr[INSN_RBP] = 0x8000000000000000ull;
	in.gpr[INSN_RBX] = 0x0000800000000000ull;
	expect_fx(INSN_EXCEPTION, BYTES(0xf3, 0x0f, 0x6f, 0x45, 0x00), &in, &fx, NULL);
	expect_fx(INSN_EXCEPTION, BYTES(0xf3, 0x0f, 0x7f, 0x03), &in, &fx, NULL);
	expect_fx(INSN_EXCEPTION, BYTES(0x66, 0x0f, 0x6e, 0x03), &in, &fx, NULL);
	/* Just below the canonical limit: the last byte decides. */
	in.gpr[INSN_RBX] = 0x00007ffffffffff8ull;
	expect_fx(INSN_EXCEPTION, BYTES(0xf3, 0x0f, 0x6f, 0x03), &in, &fx, NULL);

	memset(edge, 0x5a, 8192 - 4096);
	win = (struct window){ edge + 4096 - 16, 16 };
	in.gpr[INSN_RBX] = (uint64_t)edge + 4096 - 8;
	expect_fx(INSN_EXCEPTION, BYTES(0xf3, 0x0f, 0x7f, 0x03), &in, &fx, &win);  /* movdqu store */
	expect_fx(INSN_EXCEPTION, BYTES(0x66, 0x0f, 0xd6, 0x43, 0x04), &in, &fx, &win); /* movq store */
	expect_fx(INSN_EMULATED, BYTES(0xf3, 0x0f, 0x6f, 0x03), &in, &fx, &win);   /* load: fine */
	in.gpr[INSN_RBX] = (uint64_t)edge + 8192 - 8;
	expect_fx(INSN_EXCEPTION, BYTES(0xf3, 0x0f, 0x6f, 0x03), &in, &fx, NULL);  /* into the gap */
	expect_fx(INSN_EXCEPTION, BYTES(0x66, 0x0f, 0xef, 0x03), &in, &fx, NULL);  /* pxor: #GP first */
	in.gpr[INSN_RBX] = (uint64_t)edge + 8192;
	expect_fx(INSN_EXCEPTION, BYTES(0x66, 0x0f, 0xef, 0x03), &in, &fx, NULL);  /* pxor: #PF */
	expect_fx(INSN_EXCEPTION, BYTES(0x66, 0x0f, 0x7f, 0x03), &in, &fx, NULL);
	munmap(edge, 8192);
}

static void test_xgetbv_native(void **state)
{
	struct native_regs in;
	struct fx fx;

	if (!host_osxsave())
		skip();
	seed_regs(&in, 59);
	seed_fx(&fx, 59);
	in.gpr[INSN_RCX] = 0xffffffff00000000ull; /* ECX = 0: the upper half is ignored */
	expect_fx(INSN_EMULATED, BYTES(0x0f, 0x01, 0xd0), &in, &fx, NULL);
	expect_fx(INSN_EMULATED, BYTES(0x48, 0x0f, 0x01, 0xd0), &in, &fx, NULL);
	in.gpr[INSN_RCX] = 2;
	expect_fx(INSN_EXCEPTION, BYTES(0x0f, 0x01, 0xd0), &in, &fx, NULL);
	in.gpr[INSN_RCX] = 0x80000000;
	expect_fx(INSN_EXCEPTION, BYTES(0x0f, 0x01, 0xd0), &in, &fx, NULL);
	in.gpr[INSN_RCX] = 1; /* XINUSE where the CPU has it, else #GP(0) */
	if (host_features_sse() & INSN_FEAT_XGETBV1) {
		/* XINUSE changes as the test's own code runs: only where the
		 * value lands is compared, through a fixed XCR 1. */
		struct insn_cpu c;
		struct insn_result res;
		struct insn dec;

		seed_regs(&in, 61);
		cpu_from_native(&c, &in);
		c.gpr[INSN_RCX] = 1;
		c.cr4 |= INSN_CR4_OSXSAVE;
		c.features = INSN_FEAT_XGETBV1;
		c.read_xcr = self_xcr;
		assert_int_equal(insn_step(&c, BYTES(0x0f, 0x01, 0xd0), &dec, &res), INSN_EMULATED);
		assert_int_equal(c.gpr[INSN_RDX], 0);
		assert_int_equal(c.gpr[INSN_RAX] & ~native_xgetbv(0), 0);
	} else {
		expect_fx(INSN_EXCEPTION, BYTES(0x0f, 0x01, 0xd0), &in, &fx, NULL);
	}
	in.gpr[INSN_RCX] = 0;
	expect_fx(INSN_EXCEPTION, BYTES(0xf0, 0x0f, 0x01, 0xd0), &in, &fx, NULL); /* LOCK */
}

/* What CPL 3 cannot show (SDM vol. 2): CR0.EM or no CR4.OSFXSR is #UD,
 * CR0.TS #NM; XGETBV without CR4.OSXSAVE is #UD; no SSE state or no
 * memory callbacks leave the instruction to the caller. */
static void test_sse_architectural(void **state)
{
	static uint8_t m[16] __attribute__((aligned(16)));
	struct insn_sse sse = { .mxcsr = 0x1f80 }, sse0;
	struct insn_cpu c = { .long64 = true, .rip = 0x1000, .cr4 = INSN_CR4_OSFXSR,
			      .read_mem = self_read, .write_mem = self_write, .sse = &sse };
	struct insn_cpu start;
	struct insn_result res;
	struct insn in;

	c.gpr[INSN_RBX] = (uint64_t)m;
	start = c;
	sse0 = sse;
	c.cr0 = INSN_CR0_TS;
	assert_int_equal(insn_step(&c, BYTES(0x0f, 0xae, 0x13), &in, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, INSN_VEC_NM);
	assert_int_equal(c.rip, 0x1000);
	c.cr0 = INSN_CR0_EM | INSN_CR0_TS; /* #UD before #NM */
	assert_int_equal(insn_step(&c, BYTES(0x66, 0x0f, 0xef, 0xc0), &in, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, INSN_VEC_UD);
	c = start;
	c.cr4 = 0;
	assert_int_equal(insn_step(&c, BYTES(0x0f, 0xae, 0x1b), &in, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, INSN_VEC_UD);
	assert_memory_equal(&sse, &sse0, sizeof(sse));
	/* CPL 0 is no different from CPL 3 for these. */
	c = start;
	c.cpl = 0;
	memset(m, 0, sizeof(m));
	m[1] = 0x9f;
	assert_int_equal(insn_step(&c, BYTES(0x0f, 0xae, 0x13), &in, &res), INSN_EMULATED);
	assert_int_equal(sse.mxcsr, 0x9f00);
	assert_true(c.sse_changed);
	/* MXCSR_MASK 0 means 0xffbf: DAZ (bit 6) is reserved then. */
	c = start;
	m[0] = 0x40;
	assert_int_equal(insn_step(&c, BYTES(0x0f, 0xae, 0x13), &in, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, INSN_VEC_GP);
	sse.mxcsr_mask = 0xffff;
	assert_int_equal(insn_step(&c, BYTES(0x0f, 0xae, 0x13), &in, &res), INSN_EMULATED);
	assert_int_equal(sse.mxcsr, 0x9f40);
	/* Without the SSE state, or without the memory callbacks: unknown. */
	c = start;
	c.sse = NULL;
	assert_int_equal(insn_step(&c, BYTES(0x66, 0x0f, 0xef, 0xc0), &in, &res), INSN_UNKNOWN);
	c = start;
	c.write_mem = NULL;
	assert_int_equal(insn_step(&c, BYTES(0x0f, 0xae, 0x1b), &in, &res), INSN_UNKNOWN);
	assert_memory_equal(&c, &start, offsetof(struct insn_cpu, write_mem));
	/* Prefixes that make other instructions: unknown (F3 0F AE /2 with a
	 * register is WRFSBASE; MMX forms; MOVSS/MOVSD). */
	c = start;
	assert_int_equal(insn_step(&c, BYTES(0xf3, 0x0f, 0xae, 0xd0), &in, &res), INSN_UNKNOWN);
	assert_int_equal(insn_step(&c, BYTES(0x0f, 0x6f, 0xc1), &in, &res), INSN_UNKNOWN);
	assert_int_equal(insn_step(&c, BYTES(0xf3, 0x0f, 0x10, 0xc1), &in, &res), INSN_UNKNOWN);
	assert_int_equal(insn_step(&c, BYTES(0xf2, 0x0f, 0x6f, 0xc1), &in, &res), INSN_UNKNOWN);
	/* Without the CPUID feature: #UD, before CR0.TS's #NM. */
	c = start;
	c.cr0 = INSN_CR0_TS;
	assert_int_equal(insn_step(&c, BYTES(0x66, 0x0f, 0x38, 0x00, 0xc1), &in, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, INSN_VEC_UD);
	assert_int_equal(insn_step(&c, BYTES(0x66, 0x0f, 0x3a, 0x44, 0xc1, 0), &in, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, INSN_VEC_UD);
	assert_int_equal(insn_step(&c, BYTES(0x66, 0x0f, 0x38, 0x10, 0xc1), &in, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, INSN_VEC_UD);
	assert_int_equal(insn_step(&c, BYTES(0xf2, 0x0f, 0x38, 0xf1, 0xc1), &in, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, INSN_VEC_UD);
	c.features = INSN_FEAT_SSSE3 | INSN_FEAT_SSE42;
	assert_int_equal(insn_step(&c, BYTES(0x66, 0x0f, 0x38, 0x00, 0xc1), &in, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, INSN_VEC_NM);
	assert_int_equal(insn_step(&c, BYTES(0xf2, 0x0f, 0x38, 0xf1, 0xc1), &in, &res), INSN_EMULATED); /* no #NM: not SSE */
	/* XGETBV: #UD without CR4.OSXSAVE; XCR 1 #GP(0) without the feature. */
	c = start;
	assert_int_equal(insn_step(&c, BYTES(0x0f, 0x01, 0xd0), &in, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, INSN_VEC_UD);
	c.cr4 |= INSN_CR4_OSXSAVE;
	c.gpr[INSN_RCX] = 1;
	assert_int_equal(insn_step(&c, BYTES(0x0f, 0x01, 0xd0), &in, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, INSN_VEC_GP);
	c.gpr[INSN_RCX] = 0;
	assert_int_equal(insn_step(&c, BYTES(0x0f, 0x01, 0xd0), &in, &res), INSN_UNKNOWN); /* no read_xcr */
}

/* ---- LSL ----
 *
 * Natively, LSL at CPL 3 reads this process's LDT, which modify_ldt(2)
 * fills (Linux writes DPL-3 code and data descriptors only, with the
 * accessed bit set), and the kernel's GDT, where 0x10 and 0x18 are its
 * DPL-0 code and data.  The emulator gets tables of its own in a buffer: the
 * LDT built from the same struct user_desc fields, a GDT with flat DPL-0
 * code and data at those two selectors.  What user space cannot create (DPL
 * 0 seen from CPL 0, RPL above DPL, system descriptors, a fault reading a
 * descriptor) is checked against the SDM on tables built by hand. */

/* A code, data or system-segment descriptor's first 8 bytes (SDM vol. 3A,
 * 3.4.5): @access is byte 5 (type, S, DPL, P), @flags the nibble above the
 * limit in byte 6 (AVL, L, D/B, G). */
static uint64_t seg_desc(uint32_t base, uint32_t limit, uint8_t access, uint8_t flags)
{
	return (limit & 0xffffull) | (uint64_t)(base & 0xffffff) << 16 | (uint64_t)access << 40 |
	       (uint64_t)(limit >> 16 & 0xf) << 48 | (uint64_t)(flags & 0xf) << 52 |
	       (uint64_t)(base >> 24) << 56;
}

#define ACC_P 0x80u
#define ACC_DPL3 0x60u
#define ACC_S 0x10u
#define FLAG_AVL 0x1u
#define FLAG_L 0x2u
#define FLAG_DB 0x4u
#define FLAG_G 0x8u

/* The descriptor modify_ldt(2) makes of @u: DPL 3, S set, accessed; a
 * read_exec_only data segment is read-only, a read_exec_only code segment
 * execute-only.  L comes from u->lm only with @honour_lm: current kernels
 * write L = 0 whatever lm says (older ones copied it). */
static uint64_t desc_from_user(const struct user_desc *u, bool honour_lm)
{
	uint8_t access = ACC_DPL3 | ACC_S | (uint8_t)(u->contents << 2) | (u->read_exec_only ? 0 : 2) | 1;
	uint8_t flags = (u->useable ? FLAG_AVL : 0) | (u->lm && honour_lm ? FLAG_L : 0) |
			(u->seg_32bit ? FLAG_DB : 0) | (u->limit_in_pages ? FLAG_G : 0);

	if (!u->seg_not_present)
		access |= ACC_P;
	return seg_desc(u->base_addr, u->limit, access, flags);
}

/* The LDT entries the native test writes, at their entry_number: limits
 * with and without G, data (read-write, read-only, expand-down, 16-bit),
 * code (32-bit, 64-bit, execute-only), a not-present data segment and a
 * not-present conforming code segment (Linux takes contents = 3 only with
 * seg_not_present), and an empty entry (all zero: a system descriptor of
 * type 0, which LSL refuses).  The LDT then has LSL_LDT_ENTRIES entries. */
#define LSL_LDT_ENTRIES 12
static const struct user_desc lsl_ldt[] = {
	{ .entry_number = 0, .base_addr = 0x1000, .limit = 0x12345, .seg_32bit = 1, .useable = 1 },
	{ .entry_number = 1, .limit = 0xfffff, .seg_32bit = 1, .read_exec_only = 1, .limit_in_pages = 1 },
	{ .entry_number = 2, .limit = 0x00fff, .seg_32bit = 1, .contents = 1, .limit_in_pages = 1 },
	{ .entry_number = 3, .base_addr = 0xabc000, .limit = 0xabcde, .seg_32bit = 1, .contents = 2 },
	{ .entry_number = 4, .limit = 0xfffff, .contents = 2, .limit_in_pages = 1, .lm = 1 }, /* 64-bit code */
	{ .entry_number = 5, .limit = 0x55, .seg_32bit = 1, .contents = 3, .limit_in_pages = 1,
	  .seg_not_present = 1 },
	{ .entry_number = 6, .limit = 0x777, .seg_32bit = 1, .seg_not_present = 1 },
	{ .entry_number = 7, .limit = 0xffff },
	{ .entry_number = 8, .limit = 0, .seg_32bit = 1 },
	{ .entry_number = 9, .limit = 0x1, .seg_32bit = 1, .contents = 2, .read_exec_only = 1 },
	{ .entry_number = 10, .base_addr = 0xfffff000, .limit = 0x80001, .seg_32bit = 1,
	  .limit_in_pages = 1, .useable = 1 },
	/* Linux's "empty" entry: it writes eight zero bytes. */
	{ .entry_number = 11, .read_exec_only = 1, .seg_not_present = 1 },
};

/* Write lsl_ldt[] into this process's LDT and build the emulator's tables
 * in @gdt (4 entries) and @ldt (LSL_LDT_ENTRIES) from the same fields.
 * Returns 0, or -errno from modify_ldt(2). */
static int lsl_tables_setup(uint64_t gdt[4], uint64_t ldt[LSL_LDT_ENTRIES])
{
	uint64_t back[LSL_LDT_ENTRIES], old_kernel[LSL_LDT_ENTRIES];

	memset(ldt, 0, LSL_LDT_ENTRIES * sizeof(*ldt));
	memset(old_kernel, 0, sizeof(old_kernel));
	for (size_t i = 0; i < ARRAY_LEN(lsl_ldt); i++) {
		struct user_desc u = lsl_ldt[i];
		bool empty = u.seg_not_present && u.read_exec_only && !u.limit && !u.base_addr &&
			     !u.contents;

		if (syscall(SYS_modify_ldt, 0x11, &u, sizeof(u)) != 0)
			return -errno;
		ldt[u.entry_number] = empty ? 0 : desc_from_user(&u, false);
		old_kernel[u.entry_number] = empty ? 0 : desc_from_user(&u, true);
	}
	/* The kernel's own bytes (func 0 reads the LDT) must be what the
	 * emulator is given: otherwise the comparison below compares tables,
	 * not LSL.  L does not matter to LSL; which one the kernel wrote is
	 * taken. */
	assert_int_equal(syscall(SYS_modify_ldt, 0, back, sizeof(back)), sizeof(back));
	for (unsigned i = 0; i < LSL_LDT_ENTRIES; i++) {
		if (back[i] == old_kernel[i])
			ldt[i] = old_kernel[i];
		if (back[i] != ldt[i])
			fail_msg("LDT entry %u: kernel 0x%016llx, built 0x%016llx", i,
				 (unsigned long long)back[i], (unsigned long long)ldt[i]);
	}
	gdt[0] = 0;
	gdt[1] = 0;
	gdt[2] = seg_desc(0, 0xfffff, ACC_P | ACC_S | 0xb, FLAG_L | FLAG_G);  /* 0x10: kernel code */
	gdt[3] = seg_desc(0, 0xfffff, ACC_P | ACC_S | 0x3, FLAG_DB | FLAG_G); /* 0x18: kernel data */
	lsl_tables.gdt_base = (uint64_t)gdt;
	lsl_tables.gdt_limit = 4 * 8 - 1;
	lsl_tables.ldt_base = (uint64_t)ldt;
	lsl_tables.ldt_limit = LSL_LDT_ENTRIES * 8 - 1;
	lsl_tables.ldt_usable = true;
	return 0;
}

static void test_lsl_native(void **state)
{
	static uint64_t gdt[4], ldt[LSL_LDT_ENTRIES];
	/* 32-, 16- and 64-bit operand size, each with a register source (CX
	 * into AX; R14W into R9 with REX.B and REX.R) and a memory one ([RBX]). */
	static const struct {
		uint8_t b[5];
		size_t n;
	} forms[] = {
		{ { 0x0f, 0x03, 0xc1 }, 3 },       { { 0x66, 0x0f, 0x03, 0xc1 }, 4 },
		{ { 0x48, 0x0f, 0x03, 0xc1 }, 4 }, { { 0x45, 0x0f, 0x03, 0xce }, 4 },
		{ { 0x66, 0x45, 0x0f, 0x03, 0xce }, 5 }, { { 0x4d, 0x0f, 0x03, 0xce }, 4 },
		{ { 0x0f, 0x03, 0x03 }, 3 },       { { 0x66, 0x0f, 0x03, 0x03 }, 4 },
		{ { 0x48, 0x0f, 0x03, 0x03 }, 4 },
	};
	uint16_t sels[LSL_LDT_ENTRIES * 4 + 16], mem_sel[4];
	size_t n_sels = 0;
	struct native_regs in;
	uint64_t old;
	int r;

	r = lsl_tables_setup(gdt, ldt);
	if (r == -ENOSYS || r == -EPERM) {
		print_message("modify_ldt(2) unavailable (%s): LSL native comparison skipped\n",
			      strerror(-r));
		skip();
	}
	assert_int_equal(r, 0);

	/* Every LDT entry and one past the end, with every RPL; the null
	 * selector with every RPL; the kernel's DPL-0 code and data; far past
	 * the LDT. */
	for (unsigned idx = 0; idx <= LSL_LDT_ENTRIES; idx++)
		for (unsigned rpl = 0; rpl < 4; rpl++)
			sels[n_sels++] = (uint16_t)(idx << 3 | 4 | rpl);
	for (unsigned rpl = 0; rpl < 4; rpl++)
		sels[n_sels++] = (uint16_t)rpl;
	sels[n_sels++] = 0x10;
	sels[n_sels++] = 0x13;
	sels[n_sels++] = 0x18;
	sels[n_sels++] = 0x1b;
	sels[n_sels++] = 0xfffc | 4 | 3;
	sels[n_sels++] = 0x7ffc;

	for (size_t s = 0; s < n_sels; s++)
		for (size_t f = 0; f < ARRAY_LEN(forms); f++)
			for (unsigned flags = 0; flags < 2; flags++) {
				seed_regs(&in, s * 31 + f);
				/* Only bits 15:0 of a register source count. */
				in.gpr[INSN_RCX] = (in.gpr[INSN_RCX] & ~0xffffull) | sels[s];
				in.gpr[INSN_R14] = (in.gpr[INSN_R14] & ~0xffffull) | sels[s];
				/* A memory source is one word: the next is garbage. */
				mem_sel[0] = sels[s];
				mem_sel[1] = 0xffff;
				mem_sel[2] = 0x1234;
				in.gpr[INSN_RBX] = (uint64_t)mem_sel;
				if (flags) /* ZF clear before, so that setting it shows */
					in.rflags = INSN_RFLAGS_FIXED | INSN_RFLAGS_CF;
				expect_native(INSN_EMULATED, forms[f].b, forms[f].n, &in);
			}

	/* The harness agrees with itself trivially if LSL failed everywhere:
	 * the values the SDM gives for a few entries, natively. */
	seed_regs(&in, 77);
	in.gpr[INSN_RCX] = 0 << 3 | 4 | 3; /* 0x12345, byte-granular */
	run_native(BYTES(0x48, 0x0f, 0x03, 0xc1), &in);
	assert_int_equal(in.gpr[INSN_RAX], 0x12345);
	assert_true(in.rflags & INSN_RFLAGS_ZF);
	in.gpr[INSN_RCX] = 5 << 3 | 4 | 3; /* not present, conforming, G: 0x55fff */
	run_native(BYTES(0x0f, 0x03, 0xc1), &in);
	assert_int_equal(in.gpr[INSN_RAX], 0x55fff);
	in.gpr[INSN_RCX] = 10 << 3 | 4 | 3; /* G: 0x80001fff */
	old = in.gpr[INSN_RAX] = 0x1111222233334444ull;
	run_native(BYTES(0x66, 0x0f, 0x03, 0xc1), &in);
	assert_int_equal(in.gpr[INSN_RAX], (old & ~0xffffull) | 0x1fff);
	in.gpr[INSN_RCX] = 0x10; /* kernel code from CPL 3: refused */
	run_native(BYTES(0x48, 0x0f, 0x03, 0xc1), &in);
	assert_false(in.rflags & INSN_RFLAGS_ZF);
	assert_int_equal(in.gpr[INSN_RAX], (old & ~0xffffull) | 0x1fff);

	/* Prefixes LSL ignores; LOCK is #UD; a source that faults. */
	seed_regs(&in, 78);
	in.gpr[INSN_RCX] = 3 << 3 | 4 | 3;
	expect_native(INSN_EMULATED, BYTES(0xf3, 0x0f, 0x03, 0xc1), &in);
	expect_native(INSN_EMULATED, BYTES(0xf2, 0x48, 0x0f, 0x03, 0xc1), &in);
	expect_native(INSN_EMULATED, BYTES(0x2e, 0x66, 0x0f, 0x03, 0xc1), &in);
	expect_native(INSN_EXCEPTION, BYTES(0xf0, 0x0f, 0x03, 0xc1), &in);
	expect_native(INSN_EXCEPTION, BYTES(0xf0, 0x48, 0x0f, 0x03, 0x03), &in);
	in.gpr[INSN_RBX] = 0x8000000000000000ull; /* non-canonical: #GP(0) */
	expect_native(INSN_EXCEPTION, BYTES(0x0f, 0x03, 0x03), &in);
	in.gpr[INSN_RBP] = 0x8000000000000000ull; /* through RBP: #SS(0) */
	expect_native(INSN_EXCEPTION, BYTES(0x0f, 0x03, 0x45, 0x00), &in);
	{
		uint8_t *gap = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		assert_true(gap != MAP_FAILED);
		munmap(gap, 4096);
		in.gpr[INSN_RBX] = (uint64_t)gap + 0xffe;
		expect_native(INSN_EXCEPTION, BYTES(0x48, 0x0f, 0x03, 0x03), &in);
	}
	{
		/* The source is one word whatever the operand size: the last
		 * two bytes before a missing page are enough. */
		uint8_t *p = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
				  -1, 0);
		uint16_t sel = 3 << 3 | 4 | 3;

		assert_true(p != MAP_FAILED);
		assert_int_equal(munmap(p + 4096, 4096), 0);
		memcpy(p + 4094, &sel, sizeof(sel));
		in.gpr[INSN_RBX] = (uint64_t)p + 4094;
		expect_native(INSN_EMULATED, BYTES(0x48, 0x0f, 0x03, 0x03), &in);
		expect_native(INSN_EMULATED, BYTES(0x0f, 0x03, 0x03), &in);
		munmap(p, 4096);
	}
	memset(&lsl_tables, 0, sizeof(lsl_tables));
}

/* A table read_mem for the architectural tests: host memory at the linear
 * address, except a #PF (supervisor read, not present) at and above
 * lsl_fault_la when that is set; every access's flags are recorded. */
static uint64_t lsl_fault_la;
static unsigned lsl_accesses[4], lsl_n_accesses;

static int lsl_read(void *ctx, uint64_t la, void *buf, size_t len, unsigned access,
		    struct insn_exception *fault)
{
	if (lsl_n_accesses < ARRAY_LEN(lsl_accesses))
		lsl_accesses[lsl_n_accesses++] = access;
	if (lsl_fault_la && la + len > lsl_fault_la) {
		*fault = (struct insn_exception){ .vector = INSN_VEC_PF, .has_error_code = true,
						  .error_code = access & INSN_ACC_USER ? INSN_PF_USER : 0,
						  .cr2 = la > lsl_fault_la ? la : lsl_fault_la };
		return -EFAULT;
	}
	memcpy(buf, (const void *)la, len);
	return 0;
}

/* Run LSL on selector @sel (in CX; the rest of RCX garbage) in all three
 * operand sizes, starting with ZF the opposite of what @ok wants, and check
 * the result: @limit written as each size writes it and ZF set, or the
 * destination unchanged and ZF clear; every other flag as it was, RF
 * cleared, RIP past the instruction. */
static void expect_lsl(const struct insn_cpu *base, uint16_t sel, bool ok, uint32_t limit)
{
	static const struct {
		uint8_t b[4];
		size_t n;
		unsigned size;
	} forms[] = {
		{ { 0x66, 0x0f, 0x03, 0xc1 }, 4, 2 },
		{ { 0x0f, 0x03, 0xc1 }, 3, 4 },
		{ { 0x48, 0x0f, 0x03, 0xc1 }, 4, 8 },
	};

	for (size_t f = 0; f < ARRAY_LEN(forms); f++) {
		struct insn_cpu c = *base;
		struct insn_result res;
		struct insn in;
		uint64_t old = 0xa5a5a5a5a5a5a5a5ull, want = old, flags;

		c.gpr[INSN_RAX] = old;
		c.gpr[INSN_RCX] = 0xdeadbeef00000000ull | sel;
		c.rflags = INSN_RFLAGS_FIXED | INSN_RFLAGS_ARITH | INSN_RFLAGS_RF | INSN_RFLAGS_AC;
		if (!ok)
			c.rflags &= ~INSN_RFLAGS_CF; /* something besides ZF clear */
		else
			c.rflags &= ~INSN_RFLAGS_ZF;
		flags = c.rflags & ~INSN_RFLAGS_RF;
		if (insn_step(&c, forms[f].b, forms[f].n, &in, &res) != INSN_EMULATED)
			fail_msg("selector 0x%x size %u: action %d (%s)", sel, forms[f].size,
				 res.action, res.why ? res.why : "exception");
		assert_int_equal(in.op, INSN_OP_LSL);
		assert_int_equal(c.rip, base->rip + forms[f].n);
		if (ok) {
			want = forms[f].size == 2 ? (old & ~0xffffull) | (limit & 0xffff) : limit;
			flags |= INSN_RFLAGS_ZF;
		} else {
			flags &= ~INSN_RFLAGS_ZF;
		}
		if (c.gpr[INSN_RAX] != want || c.rflags != flags)
			fail_msg("selector 0x%x size %u: RAX 0x%llx RFLAGS 0x%llx, want 0x%llx 0x%llx",
				 sel, forms[f].size, (unsigned long long)c.gpr[INSN_RAX],
				 (unsigned long long)c.rflags, (unsigned long long)want,
				 (unsigned long long)flags);
	}
}

/* A GDT with what only CPL 0 or a kernel can set up. */
static uint64_t lsl_gdt[32];

static void lsl_arch_cpu(struct insn_cpu *c, unsigned cpl)
{
	memset(c, 0, sizeof(*c));
	c->long64 = true;
	c->cpl = cpl;
	c->rip = 0xffffffff81000000ull;
	c->gdt_base = (uint64_t)lsl_gdt;
	c->gdt_limit = sizeof(lsl_gdt) - 1;
	c->read_mem = lsl_read;
	lsl_fault_la = 0;
	lsl_n_accesses = 0;
}

/* A 16-byte system descriptor at GDT index @idx: type @type, DPL 0,
 * present, the upper half zero. */
static void lsl_gdt_system(unsigned idx, uint8_t type, uint32_t limit, uint8_t flags)
{
	lsl_gdt[idx] = seg_desc(0x12345678, limit, ACC_P | type, flags);
	lsl_gdt[idx + 1] = 0xffffffffull; /* base 63:32; type field 0 */
}

static void test_lsl_architectural(void **state)
{
	static uint64_t ldt[2];
	static const uint8_t refused[] = { 0x0, 0x1, 0x3, 0x4, 0x5, 0x6, 0x7, 0x8, 0xa, 0xc, 0xd,
					   0xe, 0xf };
	struct insn_cpu c, before;
	struct insn_result res;
	struct insn in;

	memset(lsl_gdt, 0, sizeof(lsl_gdt));
	lsl_gdt[1] = seg_desc(0, 0xfffff, ACC_P | ACC_S | 0xb, FLAG_L | FLAG_G);         /* 0x08 */
	lsl_gdt[2] = seg_desc(0, 0x5a5a5, ACC_P | ACC_S | 0x3, FLAG_DB);                 /* 0x10 */
	lsl_gdt[3] = seg_desc(0, 0x01234, ACC_P | 0x40 | ACC_S | 0x3, 0);               /* 0x18: DPL 2 */
	lsl_gdt[4] = seg_desc(0, 0xfffff, ACC_P | ACC_S | 0xf, FLAG_DB | FLAG_G);        /* 0x20: conforming, DPL 0 */
	lsl_gdt[5] = seg_desc(0, 0x00777, ACC_S | 0x3, 0);                               /* 0x28: not present */
	lsl_gdt[6] = seg_desc(0, 0x00abc, ACC_P | ACC_DPL3 | ACC_S | 0xb, FLAG_L | FLAG_G); /* 0x30 */
	lsl_gdt_system(8, 0x9, 0x67, 0);          /* 0x40: 64-bit TSS */
	lsl_gdt_system(10, 0xb, 0x2067, 0);       /* 0x50: busy 64-bit TSS */
	lsl_gdt_system(12, 0x2, 0x1ff, FLAG_G);   /* 0x60: LDT, page-granular */

	/* CPL 0, DPL 0 code and data: natively unreachable from CPL 3. */
	lsl_arch_cpu(&c, 0);
	expect_lsl(&c, 0x08, true, 0xffffffff);
	expect_lsl(&c, 0x10, true, 0x5a5a5);
	expect_lsl(&c, 0x28, true, 0x777); /* Present is not checked */
	expect_lsl(&c, 0x18, true, 0x1234);
	expect_lsl(&c, 0x1a, true, 0x1234); /* RPL 2 = DPL 2 */
	expect_lsl(&c, 0x30, true, 0xabcfff);
	/* RPL above DPL; CPL above DPL; conforming code ignores both. */
	expect_lsl(&c, 0x0b, false, 0);
	expect_lsl(&c, 0x11, false, 0);
	expect_lsl(&c, 0x1b, false, 0);
	expect_lsl(&c, 0x23, true, 0xffffffff);
	c.cpl = 2;
	expect_lsl(&c, 0x18, true, 0x1234);
	expect_lsl(&c, 0x10, false, 0);
	expect_lsl(&c, 0x08, false, 0);
	c.cpl = 3;
	expect_lsl(&c, 0x18, false, 0);
	expect_lsl(&c, 0x20, true, 0xffffffff);
	expect_lsl(&c, 0x33, true, 0xabcfff);
	c.cpl = 0;

	/* System descriptors: LDT, 64-bit TSS (available, busy) only. */
	expect_lsl(&c, 0x40, true, 0x67);
	expect_lsl(&c, 0x50, true, 0x2067);
	expect_lsl(&c, 0x60, true, 0x1fffff);
	expect_lsl(&c, 0x43, false, 0); /* RPL 3 > DPL 0 */
	c.cpl = 3;
	expect_lsl(&c, 0x40, false, 0);
	c.cpl = 0;
	for (size_t i = 0; i < ARRAY_LEN(refused); i++) {
		lsl_gdt_system(14, refused[i], 0x67, 0);
		expect_lsl(&c, 0x70, false, 0);
	}
	/* The upper half of a TSS descriptor looks like type 0: refused. */
	expect_lsl(&c, 0x48, false, 0);
	/* A 16-byte descriptor must lie within the limit as a whole: with
	 * its upper half past the limit it is refused; the upper half is not
	 * read (a fault there would show). */
	lsl_gdt_system(14, 0x9, 0x67, 0);
	c.gdt_limit = 14 * 8 + 15;
	expect_lsl(&c, 0x70, true, 0x67);
	c.gdt_limit = 14 * 8 + 14;
	expect_lsl(&c, 0x70, false, 0);
	c.gdt_limit = 14 * 8 + 7;
	expect_lsl(&c, 0x70, false, 0);
	lsl_fault_la = (uint64_t)&lsl_gdt[15];
	c.gdt_limit = sizeof(lsl_gdt) - 1;
	expect_lsl(&c, 0x70, true, 0x67);
	/* An 8-byte descriptor right at the limit is within it. */
	lsl_fault_la = 0;
	c.gdt_limit = 2 * 8 + 7;
	expect_lsl(&c, 0x10, true, 0x5a5a5);
	c.gdt_limit = 2 * 8 + 6;
	expect_lsl(&c, 0x10, false, 0);
	c.gdt_limit = sizeof(lsl_gdt) - 1;

	/* The null selector, any RPL, whatever GDT entry 0 holds (the CPU
	 * never reads it); past the GDT. */
	expect_lsl(&c, 0x0, false, 0);
	expect_lsl(&c, 0x3, false, 0);
	lsl_gdt[0] = seg_desc(0, 0x12345, ACC_P | ACC_DPL3 | ACC_S | 0x3, 0);
	expect_lsl(&c, 0x0, false, 0);
	expect_lsl(&c, 0x3, false, 0);
	lsl_gdt[0] = 0;
	expect_lsl(&c, 32 * 8, false, 0);
	expect_lsl(&c, 0xffff & ~4, false, 0);

	/* The LDT: entry 0 is a real entry (TI = 1 is never null); past its
	 * limit and without an LDT, refused. */
	ldt[0] = seg_desc(0, 0x00042, ACC_P | ACC_S | 0x3, 0);
	ldt[1] = seg_desc(0, 0x00043, ACC_P | ACC_DPL3 | ACC_S | 0x3, FLAG_G);
	c.ldt_base = (uint64_t)ldt;
	c.ldt_limit = sizeof(ldt) - 1;
	expect_lsl(&c, 0x4, false, 0); /* no LDT: ldt_usable false */
	c.ldt_usable = true;
	expect_lsl(&c, 0x4, true, 0x42);
	expect_lsl(&c, 0x7, false, 0);
	expect_lsl(&c, 0xf, true, 0x43fff);
	expect_lsl(&c, 0x14, false, 0);
	c.ldt_limit = 14;
	expect_lsl(&c, 0xc, false, 0);

	/* The descriptor read: an implicit supervisor access even at CPL 3
	 * with AC set; the memory source an ordinary user one. */
	lsl_arch_cpu(&c, 3);
	{
		static uint16_t sel = 0x33;

		c.gpr[INSN_RBX] = (uint64_t)&sel;
		c.rflags = INSN_RFLAGS_FIXED | INSN_RFLAGS_AC;
		assert_int_equal(insn_step(&c, BYTES(0x0f, 0x03, 0x03), &in, &res), INSN_EMULATED);
		assert_int_equal(c.gpr[INSN_RAX], 0xabcfff);
		assert_int_equal(lsl_n_accesses, 2);
		assert_int_equal(lsl_accesses[0], INSN_ACC_USER | INSN_ACC_AC);
		assert_int_equal(lsl_accesses[1], 0);
	}

	/* A #PF reading the descriptor is the guest's, and leaves the state
	 * as it was; so do #UD for LOCK and an unknown without read_mem. */
	lsl_arch_cpu(&c, 0);
	c.gpr[INSN_RCX] = 0x10;
	c.rflags = INSN_RFLAGS_FIXED | INSN_RFLAGS_ZF;
	lsl_fault_la = (uint64_t)&lsl_gdt[2] + 4;
	before = c;
	assert_int_equal(insn_step(&c, BYTES(0x48, 0x0f, 0x03, 0xc1), &in, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, INSN_VEC_PF);
	assert_true(res.exc.has_error_code);
	assert_int_equal(res.exc.error_code, 0);
	assert_int_equal(res.exc.cr2, lsl_fault_la);
	assert_memory_equal(&c, &before, sizeof(c));
	lsl_fault_la = 0;
	assert_int_equal(insn_step(&c, BYTES(0xf0, 0x48, 0x0f, 0x03, 0xc1), &in, &res), INSN_EXCEPTION);
	assert_int_equal(res.exc.vector, INSN_VEC_UD);
	assert_memory_equal(&c, &before, sizeof(c));
	c.read_mem = NULL;
	before = c;
	assert_int_equal(insn_step(&c, BYTES(0x48, 0x0f, 0x03, 0xc1), &in, &res), INSN_UNKNOWN);
	assert_memory_equal(&c, &before, sizeof(c));
	/* Without a descriptor to read, no memory access is needed. */
	c.gpr[INSN_RCX] = 0;
	assert_int_equal(insn_step(&c, BYTES(0x48, 0x0f, 0x03, 0xc1), &in, &res), INSN_EMULATED);
	assert_false(c.rflags & INSN_RFLAGS_ZF);
	/* Not in 64-bit mode: not ours. */
	c = before;
	c.long64 = false;
	assert_int_equal(insn_step(&c, BYTES(0x48, 0x0f, 0x03, 0xc1), &in, &res), INSN_UNKNOWN);
}

/* ---- the decoder ---- */

static void test_decode_lengths(void **state)
{
	static const struct {
		uint8_t b[INSN_MAX_LEN];
		size_t n;
		int want;      /* insn_decode()'s result */
		unsigned len;
	} cases[] = {
		{ { 0xcc }, 1, 0, 1 },
		{ { 0x9b }, 1, 0, 1 },
		{ { 0xf3, 0x0f, 0xb8, 0xc1 }, 4, 0, 4 },
		{ { 0xf3, 0x0f, 0xb8, 0x04, 0x24 }, 5, 0, 5 },             /* SIB */
		{ { 0xf3, 0x0f, 0xb8, 0x04, 0x25, 1, 2, 3, 4 }, 9, 0, 9 }, /* SIB, no base, disp32 */
		{ { 0xf3, 0x41, 0x0f, 0xb8, 0x04, 0x25, 1, 2, 3, 4 }, 10, 0, 10 }, /* the same with REX.B */
		{ { 0xf3, 0x0f, 0xb8, 0x44, 0x24, 8 }, 6, 0, 6 },          /* SIB + disp8 */
		{ { 0xf3, 0x0f, 0xb8, 0x84, 0x24, 1, 2, 3, 4 }, 9, 0, 9 }, /* SIB + disp32 */
		{ { 0xf3, 0x0f, 0xb8, 0x05, 1, 2, 3, 4 }, 8, 0, 8 },       /* RIP-relative */
		{ { 0xf3, 0x0f, 0xb8, 0x45, 8 }, 5, 0, 5 },                /* [rbp+8] */
		{ { 0xf3, 0x0f, 0xb8, 0x85, 1, 2, 3, 4 }, 8, 0, 8 },       /* [rbp+disp32] */
		{ { 0x0f, 0x01, 0xca }, 3, 0, 3 },
		{ { 0x0f, 0xae, 0xf8 }, 3, 0, 3 },
		{ { 0x48, 0x0f, 0x07 }, 3, 0, 3 },
		{ { 0xf3, 0x0f, 0xb8, 0x84, 0x24, 1, 2, 3 }, 8, -EAGAIN, 0 }, /* disp cut short */
		{ { 0xf3, 0x0f }, 2, -EAGAIN, 0 },
		{ { 0x66, 0x66 }, 2, -EAGAIN, 0 },
		{ { 0x0f, 0x01, 0xd0 }, 3, 0, 3 },       /* xgetbv */
		{ { 0x48, 0x0f, 0x03, 0xc0 }, 4, 0, 4 }, /* lsl rax, ax (Linux's NMI entry) */
		{ { 0x66, 0x0f, 0x03, 0x44, 0x24, 0x08 }, 6, 0, 6 }, /* lsl ax, [rsp+8] */
		{ { 0x0f, 0x03 }, 2, -EAGAIN, 0 },
		{ { 0x0f, 0x02, 0xc1 }, 3, -ENOENT, 0 }, /* lar: not handled */
		{ { 0x0f, 0x01, 0xd1 }, 3, -ENOENT, 0 }, /* xsetbv */
		{ { 0x0f, 0xae, 0x54, 0x24, 0x04 }, 5, 0, 5 },       /* ldmxcsr [rsp+4] */
		{ { 0x66, 0x44, 0x0f, 0x6f, 0x84, 0x24, 1, 2, 3, 4 }, 10, 0, 10 }, /* movdqa xmm8, [rsp+d32] */
		{ { 0xf3, 0x0f, 0x7e, 0xc1 }, 4, 0, 4 },             /* movq xmm0, xmm1 */
		{ { 0x0f, 0xae, 0x00 }, 3, -ENOENT, 0 },             /* fxsave */
		{ { 0x0f, 0xef, 0xc0 }, 3, -ENOENT, 0 },             /* MMX pxor */
		{ { 0xf2, 0x0f, 0x10, 0xc1 }, 4, -ENOENT, 0 },       /* movsd */
		{ { 0x0f, 0x0b }, 2, -ENOENT, 0 },       /* ud2 */
		{ { 0x90 }, 1, -ENOENT, 0 },
		{ { 0xcd, 0x03 }, 2, -ENOENT, 0 },       /* int 3: not INT3 */
		{ { 0x0f, 0x05 }, 2, -ENOENT, 0 },       /* syscall */
		{ { 0x0f, 0x01, 0xf8 }, 3, -ENOENT, 0 }, /* swapgs */
		{ { 0x0f, 0xae, 0x28 }, 3, -ENOENT, 0 }, /* xrstor */
		{ { 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e },
		  15, -E2BIG, 0 },
		/* 13 prefixes + POPCNT with ModRM: the ModRM is byte 16. */
		{ { 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0xf3, 0x0f, 0xb8 },
		  15, -E2BIG, 0 },
	};

	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		struct insn in;
		int r = insn_decode(cases[i].b, cases[i].n, &in);

		if (r != cases[i].want)
			fail_msg("case %zu: insn_decode() %d, want %d", i, r, cases[i].want);
		if (!r && in.len != cases[i].len)
			fail_msg("case %zu: length %u, want %u", i, in.len, cases[i].len);
	}
}

static void test_decode_operands(void **state)
{
	struct insn in;

	/* F3 REX.WRXB 0F B8 /r with SIB: reg r9, base r13, index r10, scale 4, disp8. */
	assert_int_equal(insn_decode(BYTES(0xf3, 0x4f, 0x0f, 0xb8, 0x4c, 0x95, 0x10), &in), 0);
	assert_int_equal(in.reg, INSN_R9);
	assert_true(in.mem);
	assert_int_equal(in.base, INSN_R13);
	assert_int_equal(in.index, INSN_R10);
	assert_int_equal(in.scale, 4);
	assert_int_equal(in.disp, 0x10);
	assert_int_equal(in.rep, 0xf3);
	/* Index RSP means none, index R12 (REX.X) is real. */
	assert_int_equal(insn_decode(BYTES(0xf3, 0x0f, 0xb8, 0x04, 0x24), &in), 0);
	assert_int_equal(in.index, INSN_REG_NONE);
	assert_int_equal(in.base, INSN_RSP);
	assert_int_equal(insn_decode(BYTES(0xf3, 0x42, 0x0f, 0xb8, 0x04, 0x24), &in), 0);
	assert_int_equal(in.index, INSN_R12);
	/* Negative displacements, RIP-relative, segment and size prefixes. */
	assert_int_equal(insn_decode(BYTES(0x64, 0x67, 0x66, 0xf3, 0x0f, 0xb8, 0x05, 0xfc, 0xff, 0xff, 0xff), &in), 0);
	assert_true(in.rip_relative);
	assert_int_equal(in.disp, -4);
	assert_int_equal(in.seg, INSN_SEG_FS);
	assert_true(in.addrsize);
	assert_true(in.opsize);
	assert_int_equal(in.base, INSN_REG_NONE);
	assert_int_equal(insn_decode(BYTES(0x65, 0x64, 0xf3, 0x0f, 0xb8, 0x43, 0x80), &in), 0);
	assert_int_equal(in.seg, INSN_SEG_FS); /* the last one */
	assert_int_equal(in.disp, -128);
	/* A REX before a legacy prefix is dropped; the last REX counts. */
	assert_int_equal(insn_decode(BYTES(0x48, 0xf3, 0x0f, 0xb8, 0xc1), &in), 0);
	assert_int_equal(in.rex, 0);
	assert_int_equal(insn_decode(BYTES(0xf3, 0x48, 0x41, 0x0f, 0xb8, 0xc1), &in), 0);
	assert_int_equal(in.rex, 0x41);
	assert_int_equal(in.rm_reg, INSN_R9);
	assert_int_equal(insn_decode(BYTES(0xf0, 0xcc), &in), 0);
	assert_true(in.lock);
}

/* Everything the emulator refuses leaves the state alone. */
static void test_unknown_leaves_state(void **state)
{
	struct insn_cpu c = { .long64 = true, .rip = 0x5000, .rflags = 0x246 }, before;
	struct insn_result res;
	struct insn in;

	c.gpr[INSN_RAX] = 42;
	before = c;
	assert_int_equal(insn_step(&c, BYTES(0x0f, 0x01, 0xd1), &in, &res), INSN_UNKNOWN);
	assert_non_null(res.why);
	assert_memory_equal(&c, &before, sizeof(c));
	assert_int_equal(insn_step(&c, BYTES(0xf3, 0x0f), &in, &res), INSN_UNKNOWN);
	assert_memory_equal(&c, &before, sizeof(c));
	c.long64 = false;
	before = c;
	assert_int_equal(insn_step(&c, BYTES(0xcc), &in, &res), INSN_UNKNOWN);
	assert_memory_equal(&c, &before, sizeof(c));
}

static void test_cpuid_features(void **state)
{
	struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + 3 * sizeof(struct kvm_cpuid_entry2));

	assert_non_null(cpuid);
	assert_int_equal(insn_cpuid_features(NULL), 0);
	cpuid->nent = 3;
	cpuid->entries[0] = (struct kvm_cpuid_entry2){ .function = 1, .ecx = 1u << 23 };
	cpuid->entries[1] = (struct kvm_cpuid_entry2){ .function = 7, .index = 1, .ebx = 1u << 20 };
	cpuid->entries[2] = (struct kvm_cpuid_entry2){ .function = 0x80000001, .ecx = ~0u };
	assert_int_equal(insn_cpuid_features(cpuid), INSN_FEAT_POPCNT);
	cpuid->entries[1].index = 0;
	assert_int_equal(insn_cpuid_features(cpuid), INSN_FEAT_POPCNT | INSN_FEAT_SMAP);
	cpuid->entries[0].ecx = ~(1u << 23 | 1u << 9 | 1u << 19 | 1u << 20 | 1u << 1);
	assert_int_equal(insn_cpuid_features(cpuid), INSN_FEAT_SMAP);
	cpuid->entries[0].ecx = 1u << 9; /* SSSE3 */
	assert_int_equal(insn_cpuid_features(cpuid), INSN_FEAT_SMAP | INSN_FEAT_SSSE3);
	cpuid->entries[0].ecx = 1u << 19 | 1u << 20 | 1u << 1; /* SSE4.1, SSE4.2, PCLMULQDQ */
	assert_int_equal(insn_cpuid_features(cpuid),
			 INSN_FEAT_SMAP | INSN_FEAT_SSE41 | INSN_FEAT_SSE42 | INSN_FEAT_PCLMUL);
	cpuid->entries[0].ecx = 0;
	/* XGETBV with ECX = 1: CPUID.(0DH,1):EAX[2], subleaf 1 only. */
	cpuid->entries[2] = (struct kvm_cpuid_entry2){ .function = 0xd, .index = 0, .eax = 1u << 2 };
	assert_int_equal(insn_cpuid_features(cpuid), INSN_FEAT_SMAP);
	cpuid->entries[2].index = 1;
	assert_int_equal(insn_cpuid_features(cpuid), INSN_FEAT_SMAP | INSN_FEAT_XGETBV1);
	free(cpuid);
}

/* ---- the syscall repair, on a fake state ---- */

/* The vCPU as kvm_pvm leaves it at the #PF handler's CLAC after a user-mode
 * SYSCALL at 0x401000 (Linux's selectors and MSRs). */
static void broken_syscall(struct insn_cpu *c, struct insn_syscall_probe *p)
{
	memset(c, 0, sizeof(*c));
	memset(p, 0, sizeof(*p));
	c->long64 = true;
	c->cpl = 0;
	c->efer = INSN_EFER_LMA | INSN_EFER_SCE | INSN_EFER_NXE;
	c->rip = 0xffffffff81a00a40ull;      /* asm_exc_page_fault */
	c->gpr[INSN_RSP] = 0xfffffe0000002fd8ull; /* the #PF frame on the entry stack */
	c->gpr[INSN_RCX] = 0x401002;          /* past the SYSCALL */
	c->gpr[INSN_R11] = 0x246;             /* the user's RFLAGS */
	c->gpr[INSN_RAX] = 39;                /* getpid */
	c->rflags = 0x2;
	c->cr2 = linux_msrs[1];
	p->star = linux_msrs[0];
	p->lstar = linux_msrs[1];
	p->fmask = linux_msrs[2];
	p->frame = (struct insn_pf_frame){ .error = 0x15, .rip = linux_msrs[1], .cs = 0x33,
					   .rflags = 0x246 & ~0x47700ull, .rsp = 0x7ffc0000e000ull,
					   .ss = 0x2b };
	p->at_pf_entry = true;
	p->syscall_before_rcx = true;
}

static void test_syscall_repair(void **state)
{
	struct insn_cpu c, before;
	struct insn_syscall_probe p;

	broken_syscall(&c, &p);
	before = c;
	assert_true(insn_syscall_repair(&c, &p));
	assert_int_equal(c.rip, linux_msrs[1]);
	assert_int_equal(c.gpr[INSN_RSP], 0x7ffc0000e000ull);
	assert_int_equal(c.rflags, 0x2 | (0x246 & ~0x47700ull));
	assert_int_equal(c.cs_sel, 0x10);
	assert_int_equal(c.ss_sel, 0x18);
	assert_true(c.cs_long);
	assert_true(c.segs_changed);
	assert_int_equal(c.cpl, 0);
	/* What SYSCALL itself set stays: RCX, R11, and every other register. */
	for (unsigned i = 0; i < INSN_NR_GPRS; i++)
		if (i != INSN_RSP)
			assert_int_equal(c.gpr[i], before.gpr[i]);

	/* RF and the FMASK bits go even when the frame still has them. */
	broken_syscall(&c, &p);
	p.frame.rflags = 0x10246 | 0x40000;
	assert_true(insn_syscall_repair(&c, &p));
	assert_int_equal(c.rflags, 0x2 | (0x246 & ~0x47700ull));
}

static void test_syscall_repair_refused(void **state)
{
	struct insn_cpu c, before;
	struct insn_syscall_probe p;

	for (int k = 0; k < 12; k++) {
		broken_syscall(&c, &p);
		switch (k) {
		case 0: p.frame.rip = p.lstar + 1; break;       /* a fault elsewhere */
		case 1: p.frame.cs = 0x10; break;               /* from the kernel */
		case 2: p.frame.ss = 0x18; break;
		case 3: p.frame.error = 0x7; break;             /* a write */
		case 4: p.frame.error = 0x11; break;            /* a supervisor access */
		case 5: p.at_pf_entry = false; break;           /* CLAC elsewhere */
		case 6: p.syscall_before_rcx = false; break;
		case 7: c.cr2 = 0x1000; break;
		case 8: c.cpl = 3; break;
		case 9: c.efer &= ~INSN_EFER_SCE; break;
		case 10: p.lstar = 0; p.frame.rip = 0; c.cr2 = 0; break;
		case 11: p.star = 0; break;                    /* no kernel CS */
		}
		before = c;
		if (insn_syscall_repair(&c, &p))
			fail_msg("case %d: repaired", k);
		assert_memory_equal(&c, &before, sizeof(c));
	}
}

/* ---- the page walk ---- */

#define MiB (1ull << 20)
#define GiB (1ull << 30)
#define PT_P 0x1ull
#define PT_RW 0x2ull
#define PT_US 0x4ull
#define PT_PS 0x80ull
#define PT_NX (1ull << 63)

struct walk_env {
	struct guest_mem gm;
	struct insn_paging pg;
};

static void put64(struct walk_env *e, uint64_t gpa, uint64_t v)
{
	assert_int_equal(guest_mem_write(&e->gm, gpa, &v, sizeof(v)), 0);
}

/* 16 MiB of guest RAM; tables at 1 MiB.  Linear layout:
 *   0x0000_0000_0040_0000  4 KiB pages -> 0x200000 (user, rw), 0x209000 (supervisor, ro)
 *   0x0000_0000_0060_0000  2 MiB page  -> 0x600000 (user, rw)
 *   0x0000_0000_4000_0000  1 GiB page  -> 0 (supervisor, nx)
 *   0xffff_8000_0000_0000  4 KiB page  -> 0x300000 (supervisor), 0x...1000 -> 0x280000 */
static int walk_setup(void **state)
{
	struct walk_env *e = calloc(1, sizeof(*e));
	const uint64_t pml4 = 0x100000, pdpt = 0x101000, pd = 0x102000, pt = 0x103000;
	const uint64_t pdpt_hi = 0x104000, pd_hi = 0x105000, pt_hi = 0x106000;

	if (!e || guest_mem_init(&e->gm, 16 * MiB))
		return -1;
	put64(e, pml4 + 0 * 8, pdpt | PT_P | PT_RW | PT_US);
	put64(e, pdpt + 0 * 8, pd | PT_P | PT_RW | PT_US);
	put64(e, pdpt + 1 * 8, 0 | PT_P | PT_RW | PT_PS | PT_NX);       /* 1 GiB at 1 GiB */
	put64(e, pd + 2 * 8, pt | PT_P | PT_RW | PT_US);                /* 4 MiB */
	put64(e, pd + 3 * 8, 0x600000 | PT_P | PT_RW | PT_US | PT_PS);  /* 6 MiB, 2 MiB page */
	put64(e, pt + 0 * 8, 0x200000 | PT_P | PT_RW | PT_US);
	put64(e, pt + 1 * 8, 0x209000 | PT_P);                          /* supervisor, read-only */
	put64(e, pt + 2 * 8, 0x20a000 | PT_P | PT_RW | PT_US | PT_NX);
	/* 0x403000 not present */
	put64(e, pml4 + 256 * 8, pdpt_hi | PT_P | PT_RW);
	put64(e, pdpt_hi, pd_hi | PT_P | PT_RW);
	put64(e, pd_hi, pt_hi | PT_P | PT_RW);
	put64(e, pt_hi + 0 * 8, 0x300000 | PT_P | PT_RW);
	put64(e, pt_hi + 1 * 8, 0x280000 | PT_P | PT_RW);
	e->pg = (struct insn_paging){ .cr0 = INSN_CR0_PG | INSN_CR0_WP, .cr3 = pml4,
				      .cr4 = INSN_CR4_PAE, .efer = INSN_EFER_LMA | INSN_EFER_NXE };
	*state = e;
	return 0;
}

static int walk_teardown(void **state)
{
	struct walk_env *e = *state;

	guest_mem_exit(&e->gm);
	free(e);
	return 0;
}

/* Translate and return the GPA, or ~0 with the fault's error code in *err. */
static uint64_t xlate(struct walk_env *e, uint64_t la, unsigned access, uint32_t *err)
{
	struct insn_exception f;
	uint64_t gpa = 0;
	int r = insn_translate(&e->gm, &e->pg, la, access, &gpa, &f);

	if (r == 0)
		return gpa;
	assert_int_equal(r, -EFAULT);
	*err = f.error_code;
	if (f.vector == INSN_VEC_PF)
		assert_int_equal(f.cr2, la);
	else
		*err = 0x1000 | f.vector; /* #GP */
	return ~0ull;
}

static void test_walk_sizes(void **state)
{
	struct walk_env *e = *state;
	uint32_t err = 0;

	assert_int_equal(xlate(e, 0x400123, 0, &err), 0x200123);
	assert_int_equal(xlate(e, 0x401fff, 0, &err), 0x209fff);
	assert_int_equal(xlate(e, 0x7abcde, 0, &err), 0x7abcde);          /* 2 MiB */
	assert_int_equal(xlate(e, 0x40000000 + 0x1234567, 0, &err), 0x1234567); /* 1 GiB */
	assert_int_equal(xlate(e, 0xffff800000000042ull, 0, &err), 0x300042);
	assert_int_equal(xlate(e, 0xffff800000001042ull, 0, &err), 0x280042);
}

static void test_walk_faults(void **state)
{
	struct walk_env *e = *state;
	uint32_t err = 0;

	/* Not present: P clear; the access kind in the other bits. */
	assert_int_equal(xlate(e, 0x403000, 0, &err), ~0ull);
	assert_int_equal(err, 0);
	assert_int_equal(xlate(e, 0x403000, INSN_ACC_USER | INSN_ACC_WRITE, &err), ~0ull);
	assert_int_equal(err, INSN_PF_USER | INSN_PF_WRITE);
	assert_int_equal(xlate(e, 0x403000, INSN_ACC_FETCH, &err), ~0ull);
	assert_int_equal(err, INSN_PF_FETCH);
	assert_int_equal(xlate(e, 0x10000000000ull, 0, &err), ~0ull); /* PML4E 2 missing */
	/* U/S: a CPL-3 access to a supervisor page. */
	assert_int_equal(xlate(e, 0x401000, INSN_ACC_USER, &err), ~0ull);
	assert_int_equal(err, INSN_PF_PRESENT | INSN_PF_USER);
	assert_int_equal(xlate(e, 0xffff800000000000ull, INSN_ACC_USER, &err), ~0ull);
	/* R/W: supervisor writes to a read-only page fault only with CR0.WP. */
	assert_int_equal(xlate(e, 0x401000, INSN_ACC_WRITE, &err), ~0ull);
	assert_int_equal(err, INSN_PF_PRESENT | INSN_PF_WRITE);
	e->pg.cr0 &= ~INSN_CR0_WP;
	assert_int_equal(xlate(e, 0x401000, INSN_ACC_WRITE, &err), 0x209000);
	e->pg.cr0 |= INSN_CR0_WP;
	/* NX: no fetch from the 1 GiB page or from 0x402000. */
	assert_int_equal(xlate(e, 0x40000000, INSN_ACC_FETCH, &err), ~0ull);
	assert_int_equal(err, INSN_PF_PRESENT | INSN_PF_FETCH);
	assert_int_equal(xlate(e, 0x402000, INSN_ACC_FETCH | INSN_ACC_USER, &err), ~0ull);
	assert_int_equal(xlate(e, 0x402000, INSN_ACC_USER, &err), 0x20a000);
	/* Non-canonical: #GP, not #PF. */
	assert_int_equal(xlate(e, 0x0000800000000000ull, 0, &err), ~0ull);
	assert_int_equal(err, 0x1000 | INSN_VEC_GP);
	/* The VMM's own look ignores rights, not presence. */
	assert_int_equal(xlate(e, 0x401000, INSN_ACC_USER | INSN_ACC_NOCHECK, &err), 0x209000);
	assert_int_equal(xlate(e, 0x403000, INSN_ACC_NOCHECK, &err), ~0ull);
}

static void test_walk_smep_smap(void **state)
{
	struct walk_env *e = *state;
	uint32_t err = 0;

	/* Supervisor fetch from a user page: fine without SMEP, #PF with it. */
	assert_int_equal(xlate(e, 0x400000, INSN_ACC_FETCH, &err), 0x200000);
	e->pg.cr4 |= INSN_CR4_SMEP;
	assert_int_equal(xlate(e, 0x400000, INSN_ACC_FETCH, &err), ~0ull);
	assert_int_equal(err, INSN_PF_PRESENT | INSN_PF_FETCH);
	assert_int_equal(xlate(e, 0x400000, 0, &err), 0x200000); /* data: not SMEP's business */
	e->pg.cr4 &= ~INSN_CR4_SMEP;
	/* Supervisor data access to a user page: #PF with SMAP unless AC. */
	e->pg.cr4 |= INSN_CR4_SMAP;
	assert_int_equal(xlate(e, 0x400000, 0, &err), ~0ull);
	assert_int_equal(err, INSN_PF_PRESENT);
	assert_int_equal(xlate(e, 0x400000, INSN_ACC_AC, &err), 0x200000);
	assert_int_equal(xlate(e, 0x400000, INSN_ACC_USER, &err), 0x200000);
	e->pg.cr4 &= ~INSN_CR4_SMAP;
	/* Without EFER.NXE bit 63 is reserved, and there is no fetch bit. */
	e->pg.efer &= ~INSN_EFER_NXE;
	assert_int_equal(xlate(e, 0x40000000, 0, &err), ~0ull);
	assert_int_equal(err, INSN_PF_PRESENT | INSN_PF_RSVD);
	assert_int_equal(xlate(e, 0x403000, INSN_ACC_FETCH, &err), ~0ull);
	assert_int_equal(err, 0);
	e->pg.efer |= INSN_EFER_NXE;
}

static void test_walk_odd_tables(void **state)
{
	struct walk_env *e = *state;
	struct insn_exception f;
	struct insn_paging pg = e->pg;
	uint64_t gpa;
	uint32_t err = 0;

	/* PS in a PML4E is reserved. */
	put64(e, 0x100000 + 3 * 8, 0 | PT_P | PT_PS);
	assert_int_equal(xlate(e, 3ull << 39, 0, &err), ~0ull);
	assert_int_equal(err, INSN_PF_PRESENT | INSN_PF_RSVD);
	/* A table outside RAM: the VMM cannot tell. */
	put64(e, 0x100000 + 4 * 8, (64 * GiB) | PT_P);
	assert_int_equal(insn_translate(&e->gm, &e->pg, 4ull << 39, 0, &gpa, &f), -ENXIO);
	/* Paging off, or not IA-32e paging: not ours. */
	pg.cr0 &= ~INSN_CR0_PG;
	assert_int_equal(insn_translate(&e->gm, &pg, 0x400000, 0, &gpa, &f), -ENOTSUP);
	pg = e->pg;
	pg.efer &= ~INSN_EFER_LMA;
	assert_int_equal(insn_translate(&e->gm, &pg, 0x400000, 0, &gpa, &f), -ENOTSUP);
	/* CR3 pointing outside RAM. */
	pg = e->pg;
	pg.cr3 = 32 * GiB;
	assert_int_equal(insn_translate(&e->gm, &pg, 0x400000, 0, &gpa, &f), -ENXIO);
}

/* 5-level paging: one more table, 57-bit canonical addresses. */
static void test_walk_la57(void **state)
{
	struct walk_env *e = *state;
	struct insn_paging pg = e->pg;
	struct insn_exception f;
	uint64_t gpa = 0;

	put64(e, 0x107000 + 1 * 8, 0x100000 | PT_P | PT_RW | PT_US); /* PML5[1] -> the PML4 */
	pg.cr3 = 0x107000;
	pg.cr4 |= INSN_CR4_LA57;
	assert_int_equal(insn_translate(&e->gm, &pg, (1ull << 48) | 0x400010, 0, &gpa, &f), 0);
	assert_int_equal(gpa, 0x200010);
	assert_true(insn_canonical(&pg, 0xff00000000000000ull));
	assert_false(insn_canonical(&e->pg, 0xff00000000000000ull));
	assert_int_equal(insn_translate(&e->gm, &pg, 0x0100000000000000ull, 0, &gpa, &f), -EFAULT);
	assert_int_equal(f.vector, INSN_VEC_GP);
}

/* A store through insn_write_linear(): across two physically distant pages
 * it writes both, sets the accessed bits on the way and the dirty bit of
 * each page's entry, and marks the pages dirty; one that faults on its
 * second page writes nothing. */
static void test_write_linear(void **state)
{
	struct walk_env *e = *state;
	struct insn_exception f;
	uint8_t want[16], got[16], zero[16] = { 0 };
	uint64_t pte;

	for (int i = 0; i < 16; i++)
		want[i] = (uint8_t)(0x30 + i);
	while (guest_mem_dirty_take(&e->gm, 0, 0x300000 / 4096 / 64))
		;
	assert_int_equal(insn_write_linear(&e->gm, &e->pg, 0xffff800000000ff8ull, want, 16, 0, &f), 0);
	assert_int_equal(guest_mem_read(&e->gm, 0x300ff8, got, 8), 0);
	assert_int_equal(guest_mem_read(&e->gm, 0x280000, got + 8, 8), 0);
	assert_memory_equal(got, want, 16);
	assert_int_equal(guest_mem_read(&e->gm, 0x106000, &pte, 8), 0);
	assert_int_equal(pte & 0x60, 0x60); /* A and D */
	assert_int_equal(guest_mem_read(&e->gm, 0x106008, &pte, 8), 0);
	assert_int_equal(pte & 0x60, 0x60);
	assert_int_equal(guest_mem_read(&e->gm, 0x104000, &pte, 8), 0);
	assert_int_equal(pte & 0x60, 0x20); /* A only above the leaf */
	assert_true(guest_mem_dirty_take(&e->gm, 0, 0x300000 / 4096 / 64) & (1ull << (0x300000 / 4096 % 64)));
	/* 0x401ff8: the user page, then the supervisor read-only one (CR0.WP). */
	assert_int_equal(guest_mem_write(&e->gm, 0x200ff8, zero, 8), 0);
	assert_int_equal(insn_write_linear(&e->gm, &e->pg, 0x400ff8, want, 16, 0, &f), -EFAULT);
	assert_int_equal(f.vector, INSN_VEC_PF);
	assert_int_equal(f.error_code, INSN_PF_PRESENT | INSN_PF_WRITE);
	assert_int_equal(f.cr2, 0x401000);
	assert_int_equal(guest_mem_read(&e->gm, 0x200ff8, got, 8), 0);
	assert_memory_equal(got, zero, 8);
	assert_int_equal(guest_mem_read(&e->gm, 0x103000, &pte, 8), 0);
	assert_int_equal(pte & 0x40, 0); /* no D for a store that did not happen */
	/* Into a missing page; too long; outside RAM. */
	assert_int_equal(insn_write_linear(&e->gm, &e->pg, 0x402ffc, want, 8, 0, &f), -EFAULT);
	assert_int_equal(f.cr2, 0x403000);
	assert_int_equal(insn_write_linear(&e->gm, &e->pg, 0x400000, want, INSN_WRITE_MAX + 1, 0, &f),
			 -EINVAL);
	put64(e, 0x103000 + 5 * 8, (64 * GiB) | PT_P | PT_RW);
	assert_int_equal(insn_write_linear(&e->gm, &e->pg, 0x405000, want, 8, 0, &f), -ENXIO);
}

/* A read across a page boundary into a physically distant page; one into a
 * missing page reports the bytes it got. */
static void test_read_linear_crossing(void **state)
{
	struct walk_env *e = *state;
	struct insn_exception f;
	uint8_t buf[16], want[16];
	size_t done = 0;

	for (int i = 0; i < 16; i++)
		want[i] = (uint8_t)(0xa0 + i);
	assert_int_equal(guest_mem_write(&e->gm, 0x300ff8, want, 8), 0);
	assert_int_equal(guest_mem_write(&e->gm, 0x280000, want + 8, 8), 0);
	assert_int_equal(insn_read_linear(&e->gm, &e->pg, 0xffff800000000ff8ull, buf, 16, 0, &done, &f), 0);
	assert_int_equal(done, 16);
	assert_memory_equal(buf, want, 16);
	assert_int_equal(guest_mem_write(&e->gm, 0x20aff9, want, 7), 0);
	assert_int_equal(insn_read_linear(&e->gm, &e->pg, 0x402ff9, buf, 15, 0, &done, &f), -EFAULT);
	assert_int_equal(done, 7);
	assert_memory_equal(buf, want, 7);
	assert_int_equal(f.vector, INSN_VEC_PF);
	assert_int_equal(f.cr2, 0x403000);
}

int main(void)
{
	const struct CMUnitTest native[] = {
		cmocka_unit_test(test_popcnt_register_forms),
		cmocka_unit_test(test_popcnt_values),
		cmocka_unit_test(test_popcnt_random),
		cmocka_unit_test(test_popcnt_memory_forms),
		cmocka_unit_test(test_popcnt_addrsize),
		cmocka_unit_test(test_popcnt_faults),
		cmocka_unit_test(test_fwait_native),
		cmocka_unit_test(test_fwait_mf_native),
		cmocka_unit_test(test_fences_native),
		cmocka_unit_test(test_int3_native),
		cmocka_unit_test(test_int3_gate_check),
		cmocka_unit_test(test_clac_stac_cpl3_native),
		cmocka_unit_test(test_sysret_cpl3_native),
		cmocka_unit_test(test_mxcsr_native),
		cmocka_unit_test(test_sse_moves_native),
		cmocka_unit_test(test_sse_integer_native),
		cmocka_unit_test(test_sse41_crc32_native),
		cmocka_unit_test(test_sse_faults_native),
		cmocka_unit_test(test_xgetbv_native),
		cmocka_unit_test(test_lsl_native),
	};
	const struct CMUnitTest pure[] = {
		cmocka_unit_test(test_popcnt_feature_off),
		cmocka_unit_test(test_fwait_architectural),
		cmocka_unit_test(test_clac_stac_cpl0),
		cmocka_unit_test(test_clac_stac_refused),
		cmocka_unit_test(test_sysret_cpl0),
		cmocka_unit_test(test_decode_lengths),
		cmocka_unit_test(test_decode_operands),
		cmocka_unit_test(test_unknown_leaves_state),
		cmocka_unit_test(test_cpuid_features),
		cmocka_unit_test(test_sse_architectural),
		cmocka_unit_test(test_lsl_architectural),
		cmocka_unit_test(test_syscall_repair),
		cmocka_unit_test(test_syscall_repair_refused),
		cmocka_unit_test_setup_teardown(test_walk_sizes, walk_setup, walk_teardown),
		cmocka_unit_test_setup_teardown(test_walk_faults, walk_setup, walk_teardown),
		cmocka_unit_test_setup_teardown(test_walk_smep_smap, walk_setup, walk_teardown),
		cmocka_unit_test_setup_teardown(test_walk_odd_tables, walk_setup, walk_teardown),
		cmocka_unit_test_setup_teardown(test_walk_la57, walk_setup, walk_teardown),
		cmocka_unit_test_setup_teardown(test_read_linear_crossing, walk_setup, walk_teardown),
		cmocka_unit_test_setup_teardown(test_write_linear, walk_setup, walk_teardown),
	};
	int failed = cmocka_run_group_tests_name("native", native, setup, teardown);

	return failed + cmocka_run_group_tests_name("pure", pure, NULL, NULL);
}

/* Instruction fallback emulator for nested hosts without VT-x/AMD-V.
 *
 * On such hosts (PLATFORM.md: kvm_pvm) KVM runs guest CPL-0 code through
 * its own instruction emulator, which gives up on a few instructions a stock
 * Linux kernel executes: KVM_RUN returns KVM_EXIT_INTERNAL_ERROR with suberror
 * KVM_INTERNAL_ERROR_EMULATION, RIP still at the instruction.  This module
 * finishes those instructions for KVM, as the CPU would:
 *
 *   int3                RIP past it, then #BP (a trap)
 *   clac, stac          RFLAGS.AC (CPL 0 only, else #UD)
 *   popcnt r, r/m       16/32/64-bit, register and memory operands
 *   fwait               a no-op, or #NM / #MF as the CPU raises them
 *   lfence/mfence/sfence  no-ops (the exit to the VMM serialises)
 *   sysret              back to CPL 3 (64-bit and compatibility mode)
 *   ldmxcsr, stmxcsr    MXCSR from / to memory (#GP on reserved bits)
 *   xgetbv              XCR0, and XINUSE where the CPU has XGETBV with ECX = 1
 *   SSE moves           movdqa/movdqu/movaps/movups/movapd/movupd, movd/movq
 *                       (xmm <-> r/m32/64, xmm <-> xmm/m64), pxor/xorps/xorpd
 *   SSE2/SSSE3 integer  paddd, paddq, pand, pandn, por, punpckldq, punpcklqdq,
 *                       pshufd, pshufb, the shifts by an immediate (0F 71-73),
 *                       pinsrw, pextrw; SSE4.1 pblendvb, pmovzxdq, pextrd/q;
 *                       pclmulqdq: what Linux runs between kernel_fpu_begin()
 *                       and _end() (Debian's kernel: blake2s_compress_ssse3
 *                       for random.c; the crc32c/crc32/crct10dif modules)
 *   crc32               SSE4.2 CRC-32C of r/m8/16/32/64 (crc32c-intel)
 *   lsl r, r/m16        segment limit from the GDT or LDT (Linux's NMI and
 *                       paranoid entry read the per-CPU number with it on
 *                       CPUs without RDPID)
 *
 * plus the repair of a broken user-mode SYSCALL (insn_syscall_repair()).
 * Anything else is INSN_UNKNOWN: the caller ends the run with a register dump
 * and the instruction bytes.  Only 64-bit code is handled (EFER.LMA and CS.L):
 * everything this platform fails on runs there.
 *
 * Three layers, each usable without the next:
 *   1. insn_decode() and insn_emulate(): pure functions over bytes and a
 *      struct insn_cpu, unit-tested against the host CPU (tests/unit/test_insn.c);
 *   2. insn_translate() / insn_read_linear(): the guest's own 4- or 5-level
 *      page tables walked in guest memory (guest_mem_ptr() only);
 *   3. insn_fallback_handle(): the KVM glue the vCPU loop calls.
 *
 * Nothing here keeps state between calls. */
#ifndef VMRUN_INSN_H
#define VMRUN_INSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct guest_mem;
struct kvm_cpuid2;
struct kvm_run;

#define INSN_MAX_LEN 15 /* longer is #GP(0) on every x86-64 CPU */

/* General registers in instruction-encoding order (ModRM/REX numbers). */
enum insn_gpr {
	INSN_RAX, INSN_RCX, INSN_RDX, INSN_RBX, INSN_RSP, INSN_RBP, INSN_RSI, INSN_RDI,
	INSN_R8, INSN_R9, INSN_R10, INSN_R11, INSN_R12, INSN_R13, INSN_R14, INSN_R15,
	INSN_NR_GPRS,
};

#define INSN_REG_NONE 0xff

/* RFLAGS bits this module reads or writes. */
#define INSN_RFLAGS_CF 0x1ull
#define INSN_RFLAGS_FIXED 0x2ull /* bit 1 reads as one */
#define INSN_RFLAGS_PF 0x4ull
#define INSN_RFLAGS_AF 0x10ull
#define INSN_RFLAGS_ZF 0x40ull
#define INSN_RFLAGS_SF 0x80ull
#define INSN_RFLAGS_TF 0x100ull
#define INSN_RFLAGS_OF 0x800ull
#define INSN_RFLAGS_RF 0x10000ull
#define INSN_RFLAGS_AC 0x40000ull
#define INSN_RFLAGS_ARITH (INSN_RFLAGS_CF | INSN_RFLAGS_PF | INSN_RFLAGS_AF | INSN_RFLAGS_ZF | \
			   INSN_RFLAGS_SF | INSN_RFLAGS_OF)
/* What SYSRET loads from R11 (Intel SDM: RFLAGS <- (R11 & 3C7FD7H) | 2). */
#define INSN_SYSRET_RFLAGS_MASK 0x3c7fd7ull

#define INSN_CR0_MP 0x2ull
#define INSN_CR0_EM 0x4ull
#define INSN_CR0_TS 0x8ull
#define INSN_CR0_NE 0x20ull
#define INSN_CR0_WP 0x10000ull
#define INSN_CR0_PG 0x80000000ull
#define INSN_CR4_PAE 0x20ull
#define INSN_CR4_OSFXSR 0x200ull
#define INSN_CR4_OSXSAVE 0x40000ull
#define INSN_CR4_LA57 0x1000ull
#define INSN_CR4_SMEP 0x100000ull
#define INSN_CR4_SMAP 0x200000ull
#define INSN_EFER_SCE 0x1ull
#define INSN_EFER_LMA 0x400ull
#define INSN_EFER_NXE 0x800ull

#define INSN_MSR_STAR 0xc0000081u
#define INSN_MSR_LSTAR 0xc0000082u
#define INSN_MSR_FMASK 0xc0000084u

/* Exception vectors this module raises. */
#define INSN_VEC_UD 6
#define INSN_VEC_BP 3
#define INSN_VEC_NM 7
#define INSN_VEC_SS 12
#define INSN_VEC_GP 13
#define INSN_VEC_PF 14
#define INSN_VEC_MF 16

/* Page-fault error code bits (Intel SDM vol. 3, 4.7). */
#define INSN_PF_PRESENT 0x1u /* a protection violation, not a missing page */
#define INSN_PF_WRITE 0x2u
#define INSN_PF_USER 0x4u
#define INSN_PF_RSVD 0x8u
#define INSN_PF_FETCH 0x10u

/* CPUID features the emulated instructions depend on (insn_cpu.features). */
#define INSN_FEAT_POPCNT 0x1u /* CPUID.01H:ECX[23] */
#define INSN_FEAT_SMAP 0x2u   /* CPUID.(07H,0):EBX[20] */
#define INSN_FEAT_XGETBV1 0x4u /* CPUID.(0DH,1):EAX[2]: XGETBV with ECX = 1 */
#define INSN_FEAT_SSSE3 0x8u   /* CPUID.01H:ECX[9] (PSHUFB) */
#define INSN_FEAT_SSE41 0x10u  /* CPUID.01H:ECX[19] */
#define INSN_FEAT_SSE42 0x20u  /* CPUID.01H:ECX[20] (CRC32) */
#define INSN_FEAT_PCLMUL 0x40u /* CPUID.01H:ECX[1] */

/* The exception the guest takes. */
struct insn_exception {
	uint8_t vector;
	bool has_error_code;
	uint32_t error_code;
	uint64_t cr2; /* #PF only: the faulting linear address */
};

/* Kinds of linear-memory access (insn_translate(), insn_cpu.read_mem). */
#define INSN_ACC_WRITE 0x1u  /* else a read */
#define INSN_ACC_FETCH 0x2u  /* instruction fetch */
#define INSN_ACC_USER 0x4u   /* a CPL-3 access; else supervisor */
#define INSN_ACC_AC 0x8u     /* RFLAGS.AC was set (SMAP lets supervisor data accesses through) */
#define INSN_ACC_NOCHECK 0x10u /* the VMM's own look: presence only, no permission checks */

/* The SSE state the SSE instructions read and write (FXSAVE's view). */
struct insn_sse {
	uint8_t xmm[16][16];  /* XMM0..XMM15, little-endian bytes */
	uint32_t mxcsr;
	uint32_t mxcsr_mask;  /* the MXCSR bits the CPU implements (FXSAVE's
				 MXCSR_MASK; 0 means the architectural 0xffbf) */
};

/* The vCPU state the emulator reads and writes. */
struct insn_cpu {
	uint64_t gpr[INSN_NR_GPRS]; /* enum insn_gpr order */
	uint64_t rip;
	uint64_t rflags;
	unsigned cpl;       /* 0..3 */
	bool long64;        /* 64-bit code: EFER.LMA and CS.L; else everything is INSN_UNKNOWN */
	uint64_t cr0, cr2, cr4, efer;
	uint64_t fs_base, gs_base;
	uint64_t idt_base;  /* linear */
	uint16_t idt_limit;
	/* The descriptor tables LSL reads: GDTR, and LDTR's cached base and
	 * byte-granular limit; ldt_usable is false when LDTR holds no LDT
	 * (loaded with a null selector), which fails every TI = 1 selector. */
	uint64_t gdt_base;  /* linear */
	uint16_t gdt_limit;
	uint64_t ldt_base;  /* linear */
	uint32_t ldt_limit;
	bool ldt_usable;
	uint32_t features;  /* INSN_FEAT_*, from the guest's CPUID */

	/* Set by an emulated SYSRET or insn_syscall_repair(): load flat CS and
	 * SS with these selectors, DPL = their RPL, CS 64-bit when cs_long. */
	bool segs_changed;
	uint16_t cs_sel, ss_sel;
	bool cs_long;

	/* The SSE registers, for the SSE instructions; NULL makes those
	 * INSN_UNKNOWN.  sse_changed is set when an instruction that
	 * completed wrote them (the caller then writes them back); a fault
	 * leaves *sse untouched. */
	struct insn_sse *sse;
	bool sse_changed;

	/* Callbacks into the caller; @ctx is theirs.  A NULL callback makes
	 * the instructions that need it INSN_UNKNOWN.
	 * read_msr: 0, or -errno when the MSR cannot be read.
	 * read_mem: @len bytes at linear address @la with @access (INSN_ACC_*)
	 *   into @buf: 0; -EFAULT with @fault filled when the guest takes that
	 *   exception (#PF); any other -errno when the VMM cannot tell.
	 * write_mem: the same for a store of @len bytes from @buf (@access has
	 *   INSN_ACC_WRITE); on any error nothing has been written.
	 * read_fsw: the x87 status word; 0 or -errno.
	 * read_xcr: extended control register @index (0: XCR0; 1: XCR0 AND
	 *   XINUSE); 0, or -errno when it cannot be read. */
	void *ctx;
	int (*read_msr)(void *ctx, uint32_t index, uint64_t *value);
	int (*read_mem)(void *ctx, uint64_t la, void *buf, size_t len, unsigned access,
			struct insn_exception *fault);
	int (*write_mem)(void *ctx, uint64_t la, const void *buf, size_t len, unsigned access,
			 struct insn_exception *fault);
	int (*read_fsw)(void *ctx, uint16_t *fsw);
	int (*read_xcr)(void *ctx, uint32_t index, uint64_t *value);
};

enum insn_op {
	INSN_OP_INT3,
	INSN_OP_FWAIT,
	INSN_OP_CLAC,
	INSN_OP_STAC,
	INSN_OP_POPCNT,
	INSN_OP_LFENCE,
	INSN_OP_MFENCE,
	INSN_OP_SFENCE,
	INSN_OP_SYSRET,
	INSN_OP_LDMXCSR,
	INSN_OP_STMXCSR,
	INSN_OP_XGETBV,
	/* SSE moves and logic: which one is in struct insn.sse. */
	INSN_OP_SSE,
	INSN_OP_CRC32,
	INSN_OP_LSL,
};

/* The SSE operations INSN_OP_SSE covers: the form decides the operands. */
enum insn_sse_op {
	INSN_SSE_LOAD128,   /* xmm(reg) <- xmm/m128 (movdqa/u, movaps/ups, movapd/upd) */
	INSN_SSE_STORE128,  /* xmm/m128 <- xmm(reg) */
	INSN_SSE_MOVD_TO_XMM,   /* xmm(reg) <- r/m32 or r/m64 (REX.W), zero-extended */
	INSN_SSE_MOVD_FROM_XMM, /* r/m32 or r/m64 (REX.W) <- xmm(reg) */
	INSN_SSE_MOVQ_LOAD, /* xmm(reg) <- xmm/m64, upper half zeroed (F3 0F 7E) */
	INSN_SSE_MOVQ_STORE,/* xmm/m64 <- xmm(reg) low half; an xmm destination's upper half zeroed (66 0F D6) */
	INSN_SSE_XOR,       /* xmm(reg) ^= xmm/m128 (pxor, xorps, xorpd) */
	/* xmm(reg) = xmm(reg) OP xmm/m128, 66 0F xx (aligned): */
	INSN_SSE_PADDD, INSN_SSE_PADDQ, INSN_SSE_PAND, INSN_SSE_PANDN, INSN_SSE_POR,
	INSN_SSE_PUNPCKLDQ, INSN_SSE_PUNPCKLQDQ,
	INSN_SSE_PSHUFB,    /* 66 0F 38 00 (SSSE3) */
	INSN_SSE_PSHUFD,    /* xmm(reg) <- xmm/m128 shuffled by imm8 */
	INSN_SSE_SHIFT_IMM, /* 66 0F 71/72/73 /n ib: xmm(rm) shifted by imm8 (struct insn.sse_group) */
	INSN_SSE_PBLENDVB,  /* 66 0F 38 10: bytes of xmm/m128 where XMM0's byte has bit 7 */
	INSN_SSE_PMOVZXDQ,  /* 66 0F 38 35: xmm(reg) <- two dwords of xmm/m64, zero-extended */
	INSN_SSE_PCLMULQDQ, /* 66 0F 3A 44 ib */
	INSN_SSE_PEXTRD,    /* 66 0F 3A 16 ib: r/m32 (REX.W: r/m64) <- a lane of xmm(reg) */
	INSN_SSE_PINSRW,    /* 66 0F C4 ib: word imm8 of xmm(reg) <- r32/m16 */
	INSN_SSE_PEXTRW,    /* 66 0F C5 ib: r32(reg) <- word imm8 of xmm(rm) */
};

enum insn_seg {
	INSN_SEG_DEFAULT, /* no override that matters: CS/DS/ES/SS prefixes are ignored in 64-bit mode */
	INSN_SEG_FS,
	INSN_SEG_GS,
};

/* One decoded instruction. */
struct insn {
	enum insn_op op;
	uint8_t len;        /* bytes, prefixes included; <= INSN_MAX_LEN */
	bool lock;          /* F0 */
	uint8_t rep;        /* the last of F2/F3, 0 if neither */
	bool opsize;        /* 66 */
	bool addrsize;      /* 67 */
	enum insn_seg seg;  /* the last FS/GS override */
	uint8_t rex;        /* the REX byte in force (right before the opcode), 0 if none */

	/* SSE (INSN_OP_SSE): the operation, and whether a memory operand
	 * must be 16-byte aligned (movdqa, movaps, movapd, pxor, xorps). */
	enum insn_sse_op sse;
	bool aligned;
	uint8_t sse_group;  /* INSN_SSE_SHIFT_IMM: the opcode, 0x71, 0x72 or 0x73 */
	uint8_t imm;        /* an imm8 operand (pshufd, the shifts) */

	/* The ModRM operand (popcnt, lsl, the fences, ldmxcsr, the SSE moves). */
	bool has_modrm;
	uint8_t modrm;
	uint8_t reg;        /* ModRM.reg with REX.R */
	bool mem;           /* r/m is memory; else rm_reg is the register */
	uint8_t rm_reg;     /* register operand (with REX.B) */
	uint8_t base, index;/* memory: registers or INSN_REG_NONE */
	uint8_t scale;      /* 1, 2, 4, 8 */
	int32_t disp;
	bool rip_relative;
};

/* Decode the instruction at the start of @buf (@avail bytes fetched).
 * Returns 0 with @out filled; -ENOENT when the opcode is not one this module
 * handles (the length is then unknown); -E2BIG when the instruction is longer
 * than INSN_MAX_LEN (the CPU raises #GP(0)); -EAGAIN when it continues past
 * @avail. */
int insn_decode(const uint8_t *buf, size_t avail, struct insn *out)
	__attribute__((warn_unused_result));

enum insn_action {
	INSN_EMULATED,  /* @cpu holds the state after the instruction: resume */
	INSN_EXCEPTION, /* @cpu holds the state to deliver res->exc from (RIP at
			   the instruction for faults, past it for #BP) */
	INSN_UNKNOWN,   /* not handled; @cpu is unchanged, res->why says why */
};

struct insn_result {
	enum insn_action action;
	struct insn_exception exc; /* INSN_EXCEPTION */
	const char *why;           /* INSN_UNKNOWN: a static one-line reason */
};

/* Execute @in (decoded from the bytes at cpu->rip) on @cpu, as the CPU
 * would, and say what the caller must do next in @res (also returned).
 * Never touches memory other than through cpu->read_mem. */
enum insn_action insn_emulate(struct insn_cpu *cpu, const struct insn *in, struct insn_result *res);

/* insn_decode() then insn_emulate() on the bytes at RIP; an over-long
 * instruction becomes #GP(0). */
enum insn_action insn_step(struct insn_cpu *cpu, const uint8_t *buf, size_t avail,
			   struct insn *in, struct insn_result *res);

/* Name of @op ("popcnt", ...). */
const char *insn_op_name(enum insn_op op);

/* Whether @op reads or writes the SSE state (struct insn_sse). */
bool insn_op_uses_sse(enum insn_op op);

/* The INSN_FEAT_* bits @cpuid (KVM_SET_CPUID2's table) reports; 0 for NULL. */
uint32_t insn_cpuid_features(const struct kvm_cpuid2 *cpuid);

/* ---- the broken user-mode SYSCALL (PLATFORM.md) ----
 *
 * kvm_pvm executes a CPL-3 SYSCALL half-way: RCX, R11, RIP = LSTAR and the
 * masked RFLAGS are set, CS/SS stay the user's.  Fetching LSTAR at CPL 3 then
 * page-faults; the CPU delivers that #PF on the kernel stack, and the
 * handler's first instruction (Linux: CLAC) exits to the VMM.  There the
 * #PF frame shows what happened, and the VMM makes it the SYSCALL it was. */

/* The frame the CPU pushes for an exception with an error code from CPL 3,
 * as found at RSP on the handler's first instruction. */
struct insn_pf_frame {
	uint64_t error, rip, cs, rflags, rsp, ss;
};

struct insn_syscall_probe {
	struct insn_pf_frame frame;
	bool at_pf_entry;        /* RIP is IDT vector 14's handler (past an ENDBR64 there) */
	bool syscall_before_rcx; /* the two bytes before RCX are 0F 05 (SYSCALL) */
	uint64_t star, lstar, fmask;
};

/* If @p shows a SYSCALL broken as above (CPL 0 at the #PF handler, SYSCALL
 * enabled, a CPL-3 #PF frame whose RIP and CR2 are LSTAR for a user-mode
 * access, a SYSCALL instruction right before RCX), rewrite @cpu into that
 * SYSCALL's result: RIP = LSTAR, RSP = the user's (from the frame), RFLAGS =
 * the frame's & ~FMASK & ~RF, CS/SS from STAR at CPL 0; RCX and R11 stay.
 * Returns true when it did, false (and @cpu untouched) otherwise. */
bool insn_syscall_repair(struct insn_cpu *cpu, const struct insn_syscall_probe *p);

/* ---- the guest's page tables ---- */

/* What a page walk needs from the vCPU. */
struct insn_paging {
	uint64_t cr0, cr3, cr4, efer;
};

/* Whether @la is canonical for @pg (48 bits, or 57 with CR4.LA57). */
bool insn_canonical(const struct insn_paging *pg, uint64_t la);

/* Translate linear @la for an @access (INSN_ACC_*) through the 4-level
 * (5-level with CR4.LA57) page tables at CR3, read with guest_mem_ptr():
 * 4 KiB, 2 MiB and 1 GiB pages, present, R/W (with CR0.WP), U/S, NX (with
 * EFER.NXE), SMEP and SMAP (with RFLAGS.AC as INSN_ACC_AC); a PS bit in a
 * PML4E/PML5E or NX without EFER.NXE is a reserved-bit fault.  Accessed and
 * dirty bits are not set and MAXPHYADDR is not checked.
 * Returns 0 with @gpa; -EFAULT with @fault (a #PF, or #GP(0) for a
 * non-canonical @la) when the guest would fault; -ENOTSUP when paging is not
 * IA-32e paging; -ENXIO when a page table lies outside RAM. */
int insn_translate(const struct guest_mem *gm, const struct insn_paging *pg, uint64_t la,
		   unsigned access, uint64_t *gpa, struct insn_exception *fault)
	__attribute__((warn_unused_result));

/* Read @len bytes at linear @la into @buf, page by page (the pages need not
 * be physically contiguous).  Returns 0, or insn_translate()'s error for the
 * first page that fails (-ENXIO too for a page outside RAM); @done, when
 * non-NULL, gets the bytes read before it. */
int insn_read_linear(const struct guest_mem *gm, const struct insn_paging *pg, uint64_t la,
		     void *buf, size_t len, unsigned access, size_t *done,
		     struct insn_exception *fault) __attribute__((warn_unused_result));

/* Write @len bytes from @buf at linear @la for a store with @access
 * (INSN_ACC_WRITE is added): every page is translated first, so that a
 * store that faults anywhere writes nothing, as on the CPU; then the bytes go
 * in, the pages are marked dirty (guest_mem_mark_dirty()), and the accessed
 * and dirty bits are set in the guest's page-table entries as the CPU sets
 * them.  At most INSN_WRITE_MAX bytes.  Returns 0, or insn_translate()'s
 * error (-ENXIO too for a page outside RAM, -EINVAL for @len too big). */
#define INSN_WRITE_MAX 64
int insn_write_linear(const struct guest_mem *gm, const struct insn_paging *pg, uint64_t la,
		      const void *buf, size_t len, unsigned access,
		      struct insn_exception *fault) __attribute__((warn_unused_result));

/* ---- KVM glue ---- */

/* What insn_fallback_handle() saw, for the caller's message. */
struct insn_report {
	uint64_t rip;           /* linear */
	uint8_t bytes[INSN_MAX_LEN];
	unsigned n_bytes;       /* 0 when none could be fetched */
	char what[128];         /* one line: what was done, or why not */
};

/* Finish the instruction at which vCPU @vcpu_fd stopped with
 * KVM_EXIT_INTERNAL_ERROR / KVM_INTERNAL_ERROR_EMULATION (@run its kvm_run).
 * Reads its registers, fetches the bytes at RIP through the guest's page
 * tables in @gm (KVM's own copy of them in @run when the fetch fails),
 * emulates the instruction or repairs a broken SYSCALL, and writes the
 * result back (KVM_SET_REGS, KVM_SET_SREGS, KVM_SET_VCPU_EVENTS for an
 * exception; KVM_SET_XSAVE, or KVM_SET_FPU where KVM_GET_XSAVE fails, for
 * the SSE registers, read only for an SSE instruction); the caller then
 * re-enters KVM_RUN.  @cpuid is the table the
 * vCPU was given (for the CPUID features), or NULL.
 * Returns 0 when the vCPU may run on; -ENOENT when the instruction is not
 * handled; -errno when an ioctl failed.  @rep is filled in every case. */
int insn_fallback_handle(int vcpu_fd, const struct kvm_run *run, const struct guest_mem *gm,
			 const struct kvm_cpuid2 *cpuid, struct insn_report *rep)
	__attribute__((warn_unused_result));

#endif

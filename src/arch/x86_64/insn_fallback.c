/* The instruction fallback emulator's pure part: decode the few instructions
 * KVM's emulator gives up on under a nested host without VT-x/AMD-V, and
 * execute them on a struct insn_cpu as the CPU would (include/vmrun/insn.h).
 *
 * Decoding follows the Intel SDM (vol. 2, chapter 2) for 64-bit mode; each
 * rule below was also checked on the host CPU (tests/unit/test_insn.c runs
 * the same bytes natively):
 *   - legacy prefixes in any order and number; of F2/F3 the last one counts
 *     (F2 F3 0F B8 is POPCNT, F3 F2 0F B8 is #UD);
 *   - a REX byte counts only right before the opcode, and of several REX
 *     bytes only the last: F3 48 40 0F B8 is a 32-bit POPCNT;
 *   - CS/DS/ES/SS overrides are ignored, FS/GS add their base;
 *   - the default segment of a memory operand is SS when its base register
 *     is RSP or RBP (not R12/R13), and a non-canonical SS address is #SS(0),
 *     any other #GP(0);
 *   - more than 15 bytes is #GP(0), whatever they are;
 *   - an SSE instruction's mandatory prefix is the last F2/F3 when there is
 *     one, else 66 (66 F3 0F 6F is MOVDQU); REX.W matters only to MOVD/MOVQ. */
#include <errno.h>
#include <linux/kvm.h>
#include <string.h>

#include "vmrun/insn.h"

#define REX_W 0x8
#define REX_R 0x4
#define REX_X 0x2
#define REX_B 0x1

#define CPUID_1_ECX_POPCNT (1u << 23)
#define CPUID_1_ECX_SSSE3 (1u << 9)
#define CPUID_1_ECX_SSE41 (1u << 19)
#define CPUID_1_ECX_SSE42 (1u << 20)
#define CPUID_1_ECX_PCLMUL (1u << 1)
#define CPUID_7_EBX_SMAP (1u << 20)
#define CPUID_D1_EAX_XGETBV1 (1u << 2)

#define MXCSR_MASK_DEFAULT 0xffbfu /* SDM vol. 1, 11.6.6: MXCSR_MASK 0 in FXSAVE's image */

const char *insn_op_name(enum insn_op op)
{
	switch (op) {
	case INSN_OP_INT3: return "int3";
	case INSN_OP_FWAIT: return "fwait";
	case INSN_OP_CLAC: return "clac";
	case INSN_OP_STAC: return "stac";
	case INSN_OP_POPCNT: return "popcnt";
	case INSN_OP_LFENCE: return "lfence";
	case INSN_OP_MFENCE: return "mfence";
	case INSN_OP_SFENCE: return "sfence";
	case INSN_OP_SYSRET: return "sysret";
	case INSN_OP_LDMXCSR: return "ldmxcsr";
	case INSN_OP_STMXCSR: return "stmxcsr";
	case INSN_OP_XGETBV: return "xgetbv";
	case INSN_OP_SSE: return "sse";
	case INSN_OP_CRC32: return "crc32";
	case INSN_OP_LSL: return "lsl";
	}
	return "?";
}

bool insn_op_uses_sse(enum insn_op op)
{
	return op == INSN_OP_LDMXCSR || op == INSN_OP_STMXCSR || op == INSN_OP_SSE;
}

uint32_t insn_cpuid_features(const struct kvm_cpuid2 *cpuid)
{
	uint32_t f = 0;

	if (!cpuid)
		return 0;
	for (uint32_t i = 0; i < cpuid->nent; i++) {
		const struct kvm_cpuid_entry2 *e = &cpuid->entries[i];

		if (e->function == 1 && (e->ecx & CPUID_1_ECX_POPCNT))
			f |= INSN_FEAT_POPCNT;
		if (e->function == 1 && (e->ecx & CPUID_1_ECX_SSSE3))
			f |= INSN_FEAT_SSSE3;
		if (e->function == 1 && (e->ecx & CPUID_1_ECX_SSE41))
			f |= INSN_FEAT_SSE41;
		if (e->function == 1 && (e->ecx & CPUID_1_ECX_SSE42))
			f |= INSN_FEAT_SSE42;
		if (e->function == 1 && (e->ecx & CPUID_1_ECX_PCLMUL))
			f |= INSN_FEAT_PCLMUL;
		if (e->function == 7 && e->index == 0 && (e->ebx & CPUID_7_EBX_SMAP))
			f |= INSN_FEAT_SMAP;
		if (e->function == 0xd && e->index == 1 && (e->eax & CPUID_D1_EAX_XGETBV1))
			f |= INSN_FEAT_XGETBV1;
	}
	return f;
}

/* ---- decoding ---- */

/* Byte @i of the instruction, or an error when it lies past 15 bytes
 * (-E2BIG) or past what was fetched (-EAGAIN). */
static int need(size_t i, size_t avail)
{
	if (i >= INSN_MAX_LEN)
		return -E2BIG;
	if (i >= avail)
		return -EAGAIN;
	return 0;
}

/* Decode the ModRM operand at @buf[*pos] (ModRM, SIB, displacement) into
 * @in, advancing *pos past it. */
static int decode_modrm(const uint8_t *buf, size_t avail, size_t *pos, struct insn *in)
{
	size_t i = *pos;
	unsigned mod, rm, disp_len = 0;
	int r;

	if ((r = need(i, avail)))
		return r;
	in->has_modrm = true;
	in->modrm = buf[i++];
	mod = in->modrm >> 6;
	rm = in->modrm & 7;
	in->reg = (uint8_t)(((in->modrm >> 3) & 7) | (in->rex & REX_R ? 8 : 0));
	in->base = in->index = INSN_REG_NONE;
	in->scale = 1;
	if (mod == 3) {
		in->mem = false;
		in->rm_reg = (uint8_t)(rm | (in->rex & REX_B ? 8 : 0));
		*pos = i;
		return 0;
	}
	in->mem = true;
	if (rm == 4) {
		uint8_t sib, idx, base;

		if ((r = need(i, avail)))
			return r;
		sib = buf[i++];
		idx = (uint8_t)(((sib >> 3) & 7) | (in->rex & REX_X ? 8 : 0));
		base = sib & 7;
		in->scale = (uint8_t)(1u << (sib >> 6));
		if (idx != INSN_RSP) /* index 4 without REX.X: none (R12 is fine) */
			in->index = idx;
		if (base == 5 && mod == 0)
			disp_len = 4; /* no base, disp32 (also with REX.B) */
		else
			in->base = (uint8_t)(base | (in->rex & REX_B ? 8 : 0));
	} else if (rm == 5 && mod == 0) {
		in->rip_relative = true;
		disp_len = 4;
	} else {
		in->base = (uint8_t)(rm | (in->rex & REX_B ? 8 : 0));
	}
	if (mod == 1)
		disp_len = 1;
	else if (mod == 2)
		disp_len = 4;
	if (disp_len) {
		if ((r = need(i + disp_len - 1, avail)))
			return r;
		if (disp_len == 1) {
			in->disp = (int8_t)buf[i];
		} else {
			uint32_t d = (uint32_t)buf[i] | (uint32_t)buf[i + 1] << 8 |
				     (uint32_t)buf[i + 2] << 16 | (uint32_t)buf[i + 3] << 24;

			in->disp = (int32_t)d;
		}
		i += disp_len;
	}
	*pos = i;
	return 0;
}

/* The SSE instruction 0F @op2 with mandatory prefix @mp (0, 0x66, 0xf2,
 * 0xf3) into @in->sse and @in->aligned; false when it is not one handled
 * here (MMX forms without a prefix, MOVSS/MOVSD, ...). */
static bool decode_sse(uint8_t op2, uint8_t mp, struct insn *in)
{
	bool ps_pd = mp == 0 || mp == 0x66; /* the ...PS / ...PD forms */

	switch (op2) {
	case 0x10: /* movups, movupd */
	case 0x11:
		if (!ps_pd)
			return false;
		in->sse = op2 == 0x10 ? INSN_SSE_LOAD128 : INSN_SSE_STORE128;
		return true;
	case 0x28: /* movaps, movapd */
	case 0x29:
		if (!ps_pd)
			return false;
		in->sse = op2 == 0x28 ? INSN_SSE_LOAD128 : INSN_SSE_STORE128;
		in->aligned = true;
		return true;
	case 0x57: /* xorps, xorpd */
		if (!ps_pd)
			return false;
		in->sse = INSN_SSE_XOR;
		in->aligned = true;
		return true;
	case 0x6f: /* 66: movdqa, F3: movdqu */
	case 0x7f:
		if (mp != 0x66 && mp != 0xf3)
			return false;
		in->sse = op2 == 0x6f ? INSN_SSE_LOAD128 : INSN_SSE_STORE128;
		in->aligned = mp == 0x66;
		return true;
	case 0x6e: /* 66: movd/movq xmm, r/m */
		if (mp != 0x66)
			return false;
		in->sse = INSN_SSE_MOVD_TO_XMM;
		return true;
	case 0x7e: /* 66: movd/movq r/m, xmm; F3: movq xmm, xmm/m64 */
		if (mp == 0x66)
			in->sse = INSN_SSE_MOVD_FROM_XMM;
		else if (mp == 0xf3)
			in->sse = INSN_SSE_MOVQ_LOAD;
		else
			return false;
		return true;
	case 0xd6: /* 66: movq xmm/m64, xmm */
		if (mp != 0x66)
			return false;
		in->sse = INSN_SSE_MOVQ_STORE;
		return true;
	case 0xef: /* 66: pxor */
		if (mp != 0x66)
			return false;
		in->sse = INSN_SSE_XOR;
		in->aligned = true;
		return true;
	}
	/* The 66-prefixed SSE2 integer forms (without 66 they are MMX). */
	if (mp != 0x66)
		return false;
	in->aligned = true;
	switch (op2) {
	case 0xfe: in->sse = INSN_SSE_PADDD; return true;
	case 0xd4: in->sse = INSN_SSE_PADDQ; return true;
	case 0xdb: in->sse = INSN_SSE_PAND; return true;
	case 0xdf: in->sse = INSN_SSE_PANDN; return true;
	case 0xeb: in->sse = INSN_SSE_POR; return true;
	case 0x62: in->sse = INSN_SSE_PUNPCKLDQ; return true;
	case 0x6c: in->sse = INSN_SSE_PUNPCKLQDQ; return true;
	case 0x70: in->sse = INSN_SSE_PSHUFD; return true;
	case 0x71: case 0x72: case 0x73:
		in->sse = INSN_SSE_SHIFT_IMM;
		in->sse_group = op2;
		return true;
	case 0xc4: in->sse = INSN_SSE_PINSRW; in->aligned = false; return true;
	case 0xc5: in->sse = INSN_SSE_PEXTRW; return true;
	}
	return false;
}

/* The three-byte opcodes 0F 38 @op3 and 0F 3A @op3 (@op2) with mandatory
 * prefix @mp into @in (op, sse, aligned); false when not handled here. */
static bool decode_3byte(uint8_t op2, uint8_t op3, uint8_t mp, struct insn *in)
{
	in->op = INSN_OP_SSE;
	in->aligned = true;
	if (op2 == 0x38 && mp == 0xf2 && (op3 == 0xf0 || op3 == 0xf1)) {
		in->op = INSN_OP_CRC32; /* a general-register instruction */
		in->aligned = false;
		in->sse_group = op3; /* F0: a byte source; F1: 16/32/64 bits */
		return true;
	}
	if (mp != 0x66)
		return false;
	if (op2 == 0x38) {
		switch (op3) {
		case 0x00: in->sse = INSN_SSE_PSHUFB; return true;
		case 0x10: in->sse = INSN_SSE_PBLENDVB; return true;
		case 0x35: in->sse = INSN_SSE_PMOVZXDQ; in->aligned = false; return true;
		}
		return false;
	}
	switch (op3) {
	case 0x44: in->sse = INSN_SSE_PCLMULQDQ; return true;
	case 0x16: in->sse = INSN_SSE_PEXTRD; in->aligned = false; return true;
	}
	return false;
}

/* Whether the SSE operation @op has an imm8 after its ModRM operand. */
static bool sse_has_imm(enum insn_sse_op op)
{
	return op == INSN_SSE_PSHUFD || op == INSN_SSE_SHIFT_IMM || op == INSN_SSE_PCLMULQDQ ||
	       op == INSN_SSE_PEXTRD || op == INSN_SSE_PINSRW || op == INSN_SSE_PEXTRW;
}

int insn_decode(const uint8_t *buf, size_t avail, struct insn *in)
{
	size_t i = 0;
	uint8_t op, op2;
	int r;

	memset(in, 0, sizeof(*in));
	for (;; i++) {
		if ((r = need(i, avail)))
			return r;
		switch (buf[i]) {
		case 0xf0: in->lock = true; break;
		case 0xf2: case 0xf3: in->rep = buf[i]; break;
		case 0x66: in->opsize = true; break;
		case 0x67: in->addrsize = true; break;
		case 0x2e: case 0x36: case 0x3e: case 0x26: break; /* null prefixes in 64-bit mode */
		case 0x64: in->seg = INSN_SEG_FS; break;
		case 0x65: in->seg = INSN_SEG_GS; break;
		default:
			if ((buf[i] & 0xf0) == 0x40) {
				in->rex = buf[i]; /* the last one wins */
				continue;
			}
			goto opcode;
		}
		in->rex = 0; /* a REX followed by a legacy prefix is ignored */
	}
opcode:
	op = buf[i++];
	switch (op) {
	case 0xcc:
		in->op = INSN_OP_INT3;
		break;
	case 0x9b:
		in->op = INSN_OP_FWAIT;
		break;
	case 0x0f:
		if ((r = need(i, avail)))
			return r;
		op2 = buf[i++];
		if (op2 == 0x07) {
			in->op = INSN_OP_SYSRET;
		} else if (op2 == 0x01) {
			if ((r = need(i, avail)))
				return r;
			if (buf[i] == 0xd0)
				in->op = INSN_OP_XGETBV;
			else if (buf[i] == 0xca || buf[i] == 0xcb)
				in->op = buf[i] == 0xca ? INSN_OP_CLAC : INSN_OP_STAC;
			else
				return -ENOENT;
			in->has_modrm = true;
			in->modrm = buf[i++];
		} else if (op2 == 0x03) {
			in->op = INSN_OP_LSL;
			if ((r = decode_modrm(buf, avail, &i, in)))
				return r;
		} else if (op2 == 0xb8) {
			in->op = INSN_OP_POPCNT;
			if ((r = decode_modrm(buf, avail, &i, in)))
				return r;
		} else if (op2 == 0xae) {
			/* 0F AE /5, /6, /7 with a register operand: the fences
			 * (every r/m value, as the CPU decodes them); /2 and
			 * /3: LDMXCSR and STMXCSR (a register operand is #UD,
			 * or with F3 RDFSBASE and friends). */
			unsigned ext;

			if ((r = need(i, avail)))
				return r;
			ext = (buf[i] >> 3) & 7;
			if (buf[i] >= 0xe8)
				in->op = buf[i] < 0xf0 ? INSN_OP_LFENCE :
					 buf[i] < 0xf8 ? INSN_OP_MFENCE : INSN_OP_SFENCE;
			else if (ext == 2 || ext == 3)
				in->op = ext == 2 ? INSN_OP_LDMXCSR : INSN_OP_STMXCSR;
			else
				return -ENOENT;
			if ((r = decode_modrm(buf, avail, &i, in)))
				return r;
		} else if (op2 == 0x38 || op2 == 0x3a) {
			if ((r = need(i, avail)))
				return r;
			if (!decode_3byte(op2, buf[i++], in->rep ? in->rep : in->opsize ? 0x66 : 0, in))
				return -ENOENT;
			if ((r = decode_modrm(buf, avail, &i, in)))
				return r;
			if (in->op == INSN_OP_SSE && sse_has_imm(in->sse)) {
				if ((r = need(i, avail)))
					return r;
				in->imm = buf[i++];
			}
		} else if (decode_sse(op2, in->rep ? in->rep : in->opsize ? 0x66 : 0, in)) {
			in->op = INSN_OP_SSE;
			if ((r = decode_modrm(buf, avail, &i, in)))
				return r;
			if (sse_has_imm(in->sse)) {
				if ((r = need(i, avail)))
					return r;
				in->imm = buf[i++];
			}
		} else {
			return -ENOENT;
		}
		break;
	default:
		return -ENOENT;
	}
	if (i > INSN_MAX_LEN)
		return -E2BIG;
	in->len = (uint8_t)i;
	return 0;
}

/* ---- execution ---- */

static enum insn_action unknown(struct insn_result *res, const char *why)
{
	res->action = INSN_UNKNOWN;
	res->why = why;
	return INSN_UNKNOWN;
}

static enum insn_action raise_exc(struct insn_result *res, uint8_t vector, bool has_error,
				  uint32_t error)
{
	res->action = INSN_EXCEPTION;
	res->exc = (struct insn_exception){ .vector = vector, .has_error_code = has_error,
					    .error_code = error };
	return INSN_EXCEPTION;
}

/* The instruction completed: RIP past it, RF cleared (SDM: RF is cleared at
 * the end of every instruction that completes). */
static enum insn_action done(struct insn_cpu *cpu, const struct insn *in, struct insn_result *res)
{
	cpu->rip += in->len;
	cpu->rflags &= ~INSN_RFLAGS_RF;
	res->action = INSN_EMULATED;
	return INSN_EMULATED;
}

static bool canonical_la(const struct insn_cpu *cpu, uint64_t la)
{
	struct insn_paging pg = { .cr4 = cpu->cr4 };

	return insn_canonical(&pg, la);
}

/* The linear address of memory operand @in (64-bit mode); @ss_default is set
 * when the access goes to SS (base RSP or RBP, no FS/GS override). */
static uint64_t operand_address(const struct insn_cpu *cpu, const struct insn *in, bool *ss_default)
{
	uint64_t ea = (uint64_t)(int64_t)in->disp;

	if (in->rip_relative)
		ea += cpu->rip + in->len;
	if (in->base != INSN_REG_NONE)
		ea += cpu->gpr[in->base];
	if (in->index != INSN_REG_NONE)
		ea += cpu->gpr[in->index] * in->scale;
	if (in->addrsize)
		ea = (uint32_t)ea;
	*ss_default = false;
	switch (in->seg) {
	case INSN_SEG_FS:
		return cpu->fs_base + ea;
	case INSN_SEG_GS:
		return cpu->gs_base + ea;
	case INSN_SEG_DEFAULT:
		break;
	}
	*ss_default = in->base == INSN_RSP || in->base == INSN_RBP;
	return ea;
}

static enum insn_action emulate_popcnt(struct insn_cpu *cpu, const struct insn *in,
				       struct insn_result *res)
{
	unsigned size = in->rex & REX_W ? 8 : in->opsize ? 2 : 4;
	uint64_t src = 0, count, *dst = &cpu->gpr[in->reg];

	/* POPCNT is F3 0F B8; without F3 (or with F2 after it) the bytes are
	 * #UD on x86-64. */
	if (in->lock || in->rep != 0xf3 || !(cpu->features & INSN_FEAT_POPCNT))
		return raise_exc(res, INSN_VEC_UD, false, 0);
	if (in->mem) {
		bool ss;
		uint64_t la = operand_address(cpu, in, &ss);
		unsigned access = (cpu->cpl == 3 ? INSN_ACC_USER : 0) |
				  (cpu->rflags & INSN_RFLAGS_AC ? INSN_ACC_AC : 0);
		struct insn_exception fault;
		uint8_t b[8];
		int r;

		if (!canonical_la(cpu, la) || !canonical_la(cpu, la + size - 1))
			return raise_exc(res, ss ? INSN_VEC_SS : INSN_VEC_GP, true, 0);
		if (!cpu->read_mem)
			return unknown(res, "popcnt: no memory access");
		r = cpu->read_mem(cpu->ctx, la, b, size, access, &fault);
		if (r == -EFAULT) {
			res->action = INSN_EXCEPTION;
			res->exc = fault;
			return INSN_EXCEPTION;
		}
		if (r)
			return unknown(res, "popcnt: memory operand unreadable");
		for (unsigned k = 0; k < size; k++)
			src |= (uint64_t)b[k] << (8 * k);
	} else {
		src = cpu->gpr[in->rm_reg];
	}
	if (size == 2)
		src &= 0xffff;
	else if (size == 4)
		src &= 0xffffffff;
	count = (uint64_t)__builtin_popcountll(src);
	if (size == 2)
		*dst = (*dst & ~0xffffull) | count; /* a 16-bit write keeps the rest */
	else
		*dst = count; /* 32-bit writes zero-extend */
	cpu->rflags &= ~INSN_RFLAGS_ARITH;
	if (!src)
		cpu->rflags |= INSN_RFLAGS_ZF;
	return done(cpu, in, res);
}

static enum insn_action emulate_clac_stac(struct insn_cpu *cpu, const struct insn *in,
					  struct insn_result *res)
{
	/* F2/F3 0F 01 CA are FRED's ERETS/ERETU; 66 is undefined. */
	if (in->rep || in->opsize)
		return unknown(res, "clac/stac with a 66/F2/F3 prefix");
	if (in->lock || cpu->cpl != 0 || !(cpu->features & INSN_FEAT_SMAP))
		return raise_exc(res, INSN_VEC_UD, false, 0);
	if (in->op == INSN_OP_CLAC)
		cpu->rflags &= ~INSN_RFLAGS_AC;
	else
		cpu->rflags |= INSN_RFLAGS_AC;
	return done(cpu, in, res);
}

static enum insn_action emulate_fwait(struct insn_cpu *cpu, const struct insn *in,
				      struct insn_result *res)
{
	uint16_t fsw = 0;

	if (in->lock)
		return raise_exc(res, INSN_VEC_UD, false, 0);
	if ((cpu->cr0 & (INSN_CR0_MP | INSN_CR0_TS)) == (INSN_CR0_MP | INSN_CR0_TS))
		return raise_exc(res, INSN_VEC_NM, false, 0);
	if (!cpu->read_fsw || cpu->read_fsw(cpu->ctx, &fsw))
		return unknown(res, "fwait: x87 status unavailable");
	if (fsw & 0x80) { /* FSW.ES: an unmasked x87 exception is pending */
		if (!(cpu->cr0 & INSN_CR0_NE))
			return unknown(res, "fwait: pending x87 exception with CR0.NE clear (FERR#)");
		return raise_exc(res, INSN_VEC_MF, false, 0);
	}
	return done(cpu, in, res);
}

/* INT3 is a software interrupt: from CPL > 0 the IDT gate's DPL must allow
 * it (else #GP with the IDT error code), a check that injecting #BP through
 * KVM would skip. */
static enum insn_action emulate_int3(struct insn_cpu *cpu, const struct insn *in,
				     struct insn_result *res)
{
	const uint32_t idt_error = INSN_VEC_BP * 8 + 2; /* IDT bit set, EXT clear */

	if (in->lock)
		return raise_exc(res, INSN_VEC_UD, false, 0);
	if (cpu->cpl > 0) {
		struct insn_exception fault;
		uint8_t gate[16];
		int r;

		if ((uint32_t)cpu->idt_limit < INSN_VEC_BP * 16 + 15)
			return raise_exc(res, INSN_VEC_GP, true, idt_error);
		if (!cpu->read_mem)
			return unknown(res, "int3 at CPL > 0: no memory access");
		r = cpu->read_mem(cpu->ctx, cpu->idt_base + INSN_VEC_BP * 16, gate, sizeof(gate),
				  INSN_ACC_NOCHECK, &fault);
		if (r)
			return unknown(res, "int3 at CPL > 0: IDT unreadable");
		if (((gate[5] >> 5) & 3) < cpu->cpl)
			return raise_exc(res, INSN_VEC_GP, true, idt_error);
	}
	/* A trap: delivered with RIP past the instruction. */
	cpu->rip += in->len;
	cpu->rflags &= ~INSN_RFLAGS_RF;
	return raise_exc(res, INSN_VEC_BP, false, 0);
}

static enum insn_action emulate_fence(struct insn_cpu *cpu, const struct insn *in,
				      struct insn_result *res)
{
	/* With 66/F2/F3 these bytes are other instructions (TPAUSE, UMWAIT,
	 * INCSSP, ...). */
	if (in->rep || in->opsize)
		return unknown(res, "fence with a 66/F2/F3 prefix");
	if (in->lock)
		return raise_exc(res, INSN_VEC_UD, false, 0);
	return done(cpu, in, res);
}

/* SYSRET (Intel SDM vol. 2B): back to CPL 3 with RIP from RCX and RFLAGS
 * from R11; CS and SS from STAR[63:48]. */
static enum insn_action emulate_sysret(struct insn_cpu *cpu, const struct insn *in,
				       struct insn_result *res)
{
	bool to64 = in->rex & REX_W;
	uint64_t star;
	uint16_t base;

	if (in->lock || !(cpu->efer & INSN_EFER_SCE))
		return raise_exc(res, INSN_VEC_UD, false, 0);
	if (cpu->cpl != 0)
		return raise_exc(res, INSN_VEC_GP, true, 0);
	if (to64 && !canonical_la(cpu, cpu->gpr[INSN_RCX]))
		return raise_exc(res, INSN_VEC_GP, true, 0);
	if (!cpu->read_msr || cpu->read_msr(cpu->ctx, INSN_MSR_STAR, &star))
		return unknown(res, "sysret: STAR unreadable");
	base = (uint16_t)(star >> 48);
	cpu->rip = to64 ? cpu->gpr[INSN_RCX] : (uint32_t)cpu->gpr[INSN_RCX];
	cpu->rflags = (cpu->gpr[INSN_R11] & INSN_SYSRET_RFLAGS_MASK) | INSN_RFLAGS_FIXED;
	cpu->cs_sel = (uint16_t)((to64 ? base + 16 : base) | 3);
	cpu->ss_sel = (uint16_t)((base + 8) | 3);
	cpu->cs_long = to64;
	cpu->segs_changed = true;
	cpu->cpl = 3;
	res->action = INSN_EMULATED;
	return INSN_EMULATED;
}

/* ---- SSE state: LDMXCSR, STMXCSR, the moves, XGETBV ---- */

/* The linear address of @in's memory operand of @size bytes, checked as the
 * CPU checks it before the access: canonical (#SS(0) through SS, else
 * #GP(0)), then with @in->aligned 16-byte aligned (#GP(0), whatever the
 * segment).  Returns true with *la; false with the exception in @res.
 * Alignment checking (#AC) is not done: it needs CPL 3, and guest code at
 * CPL 3 runs natively on this platform. */
static bool operand_la(const struct insn_cpu *cpu, const struct insn *in, unsigned size,
		       uint64_t *la, struct insn_result *res)
{
	bool ss;

	*la = operand_address(cpu, in, &ss);
	if (!canonical_la(cpu, *la) || !canonical_la(cpu, *la + size - 1)) {
		raise_exc(res, ss ? INSN_VEC_SS : INSN_VEC_GP, true, 0);
		return false;
	}
	if (in->aligned && (*la & 15)) {
		raise_exc(res, INSN_VEC_GP, true, 0);
		return false;
	}
	return true;
}

static unsigned data_access(const struct insn_cpu *cpu)
{
	return (cpu->cpl == 3 ? INSN_ACC_USER : 0) |
	       (cpu->rflags & INSN_RFLAGS_AC ? INSN_ACC_AC : 0);
}

/* Read @size bytes of @in's memory operand into @buf.  Returns true when
 * they were read; false with @res filled (the exception, or unknown). */
static bool load_operand(struct insn_cpu *cpu, const struct insn *in, void *buf, unsigned size,
			 struct insn_result *res)
{
	struct insn_exception fault;
	uint64_t la;
	int r;

	if (!operand_la(cpu, in, size, &la, res))
		return false;
	if (!cpu->read_mem) {
		unknown(res, "no memory access for the operand");
		return false;
	}
	r = cpu->read_mem(cpu->ctx, la, buf, size, data_access(cpu), &fault);
	if (r == -EFAULT) {
		res->action = INSN_EXCEPTION;
		res->exc = fault;
		return false;
	}
	if (r) {
		unknown(res, "memory operand unreadable");
		return false;
	}
	return true;
}

/* Store @size bytes from @buf to @in's memory operand; as load_operand(). */
static bool store_operand(struct insn_cpu *cpu, const struct insn *in, const void *buf,
			  unsigned size, struct insn_result *res)
{
	struct insn_exception fault;
	uint64_t la;
	int r;

	if (!operand_la(cpu, in, size, &la, res))
		return false;
	if (!cpu->write_mem) {
		unknown(res, "sse: no memory writes");
		return false;
	}
	r = cpu->write_mem(cpu->ctx, la, buf, size, data_access(cpu) | INSN_ACC_WRITE, &fault);
	if (r == -EFAULT) {
		res->action = INSN_EXCEPTION;
		res->exc = fault;
		return false;
	}
	if (r) {
		unknown(res, "sse: memory operand not writable by the VMM");
		return false;
	}
	return true;
}

/* The checks every SSE instruction makes first (SDM vol. 2, "SIMD
 * Floating-Point Exceptions" tables): LOCK, CR0.EM or no CR4.OSFXSR is
 * #UD, then CR0.TS is #NM.  Returns true when the instruction may go on. */
static bool sse_allowed(struct insn_cpu *cpu, const struct insn *in, struct insn_result *res)
{
	if (in->lock || (cpu->cr0 & INSN_CR0_EM) || !(cpu->cr4 & INSN_CR4_OSFXSR)) {
		raise_exc(res, INSN_VEC_UD, false, 0);
		return false;
	}
	if (cpu->cr0 & INSN_CR0_TS) {
		raise_exc(res, INSN_VEC_NM, false, 0);
		return false;
	}
	if (!cpu->sse) {
		unknown(res, "sse: registers unavailable");
		return false;
	}
	return true;
}

static void put_le(uint8_t *b, uint64_t v, unsigned size)
{
	for (unsigned k = 0; k < size; k++)
		b[k] = (uint8_t)(v >> (8 * k));
}

static uint64_t get_le(const uint8_t *b, unsigned size)
{
	uint64_t v = 0;

	for (unsigned k = 0; k < size; k++)
		v |= (uint64_t)b[k] << (8 * k);
	return v;
}

/* LDMXCSR m32 / STMXCSR m32 (0F AE /2, /3). */
static enum insn_action emulate_mxcsr(struct insn_cpu *cpu, const struct insn *in,
				      struct insn_result *res)
{
	uint32_t mask;
	uint8_t b[4];

	/* F3 0F AE /2, /3 with a register are WRFSBASE/WRGSBASE-like
	 * instructions; with 66 or F2 the bytes are not documented. */
	if (in->rep || in->opsize)
		return unknown(res, "ldmxcsr/stmxcsr with a 66/F2/F3 prefix");
	if (!in->mem)
		return raise_exc(res, INSN_VEC_UD, false, 0);
	if (!sse_allowed(cpu, in, res))
		return res->action;
	if (in->op == INSN_OP_STMXCSR) {
		put_le(b, cpu->sse->mxcsr, 4);
		if (!store_operand(cpu, in, b, 4, res))
			return res->action;
		return done(cpu, in, res);
	}
	if (!load_operand(cpu, in, b, 4, res))
		return res->action;
	mask = cpu->sse->mxcsr_mask ? cpu->sse->mxcsr_mask : MXCSR_MASK_DEFAULT;
	if ((uint32_t)get_le(b, 4) & ~mask)
		return raise_exc(res, INSN_VEC_GP, true, 0);
	cpu->sse->mxcsr = (uint32_t)get_le(b, 4);
	cpu->sse_changed = true;
	return done(cpu, in, res);
}

/* @d = @d OP @s for the two-operand SSE2/SSSE3 integer operations (PSHUFD:
 * @d = @s shuffled).  Lanes are little-endian, as on the CPU and the host. */
static void sse_alu(uint8_t d[16], const uint8_t s[16], const struct insn *in)
{
	uint32_t a[4], b[4], r[4];
	uint64_t qa[2], qb[2];
	uint8_t t[16];

	memcpy(a, d, 16);
	memcpy(b, s, 16);
	memcpy(qa, d, 16);
	memcpy(qb, s, 16);
	switch (in->sse) {
	case INSN_SSE_PADDD:
		for (int k = 0; k < 4; k++)
			r[k] = a[k] + b[k];
		break;
	case INSN_SSE_PADDQ:
		qa[0] += qb[0];
		qa[1] += qb[1];
		memcpy(r, qa, 16);
		break;
	case INSN_SSE_PAND:
	case INSN_SSE_PANDN:
	case INSN_SSE_POR:
		for (int k = 0; k < 4; k++)
			r[k] = in->sse == INSN_SSE_PAND ? a[k] & b[k] :
			       in->sse == INSN_SSE_PANDN ? ~a[k] & b[k] : a[k] | b[k];
		break;
	case INSN_SSE_PUNPCKLDQ:
		r[0] = a[0];
		r[1] = b[0];
		r[2] = a[1];
		r[3] = b[1];
		break;
	case INSN_SSE_PUNPCKLQDQ:
		qa[1] = qb[0];
		memcpy(r, qa, 16);
		break;
	case INSN_SSE_PSHUFD:
		for (int k = 0; k < 4; k++)
			r[k] = b[(in->imm >> (2 * k)) & 3];
		break;
	case INSN_SSE_PSHUFB:
		for (int k = 0; k < 16; k++)
			t[k] = s[k] & 0x80 ? 0 : d[s[k] & 15];
		memcpy(r, t, 16);
		break;
	default:
		return;
	}
	memcpy(d, r, 16);
}

/* The shifts by an immediate, 66 0F 71/72/73 /n ib, on @x: words (71),
 * dwords (72), qwords and whole-register byte shifts (73).  A count past the
 * element width gives 0 (PSRA: the sign).  False for a /n that is not one. */
static bool sse_shift(uint8_t x[16], const struct insn *in)
{
	unsigned n = (in->modrm >> 3) & 7, c = in->imm;
	uint8_t t[16] = { 0 };

	if (in->sse_group == 0x73 && (n == 3 || n == 7)) { /* PSRLDQ, PSLLDQ: bytes */
		if (c > 16)
			c = 16;
		for (unsigned k = 0; k < 16; k++) {
			if (n == 3 && k + c < 16)
				t[k] = x[k + c];
			if (n == 7 && k >= c)
				t[k] = x[k - c];
		}
		memcpy(x, t, 16);
		return true;
	}
	if (n != 2 && n != 6 && !(n == 4 && in->sse_group != 0x73))
		return false;
	{
		unsigned width = in->sse_group == 0x71 ? 16 : in->sse_group == 0x72 ? 32 : 64;
		unsigned bytes = width / 8;

		for (unsigned k = 0; k < 16; k += bytes) {
			uint64_t v = get_le(x + k, bytes), mask = width == 64 ? ~0ull : (1ull << width) - 1;
			bool neg = v >> (width - 1);

			if (n == 2)
				v = c >= width ? 0 : v >> c;
			else if (n == 6)
				v = c >= width ? 0 : (v << c) & mask;
			else /* PSRAW, PSRAD */
				v = c >= width ? (neg ? mask : 0) :
				    ((v >> c) | (neg && c ? (mask << (width - c)) & mask : 0));
			put_le(x + k, v, bytes);
		}
	}
	return true;
}

/* The 128-bit carry-less product of @a and @b into @out (PCLMULQDQ). */
static void clmul64(uint64_t a, uint64_t b, uint8_t out[16])
{
	uint64_t lo = 0, hi = 0;

	for (unsigned k = 0; k < 64; k++)
		if (b >> k & 1) {
			lo ^= a << k;
			hi ^= k ? a >> (64 - k) : 0;
		}
	put_le(out, lo, 8);
	put_le(out + 8, hi, 8);
}

/* Whether the guest's CPUID has what @in needs beyond SSE2 (which every
 * x86-64 CPU has); without it the instruction is #UD. */
static bool sse_feature(const struct insn_cpu *cpu, const struct insn *in)
{
	switch (in->sse) {
	case INSN_SSE_PSHUFB:
		return cpu->features & INSN_FEAT_SSSE3;
	case INSN_SSE_PBLENDVB:
	case INSN_SSE_PMOVZXDQ:
	case INSN_SSE_PEXTRD:
		return cpu->features & INSN_FEAT_SSE41;
	case INSN_SSE_PCLMULQDQ:
		return cpu->features & INSN_FEAT_PCLMUL;
	default:
		return true;
	}
}

/* CRC32 r32/r64, r/m8/16/32/64 (F2 0F 38 F0/F1, SSE4.2): CRC-32C
 * (Castagnoli, bit-reflected) of the source bytes, starting from the
 * destination's low 32 bits; the result is zero-extended, flags unchanged. */
static enum insn_action emulate_crc32(struct insn_cpu *cpu, const struct insn *in,
				      struct insn_result *res)
{
	unsigned size = in->sse_group == 0xf0 ? 1 : in->rex & REX_W ? 8 : in->opsize ? 2 : 4;
	uint32_t crc = (uint32_t)cpu->gpr[in->reg];
	uint8_t b[8];

	if (in->lock || !(cpu->features & INSN_FEAT_SSE42))
		return raise_exc(res, INSN_VEC_UD, false, 0);
	if (in->mem) {
		if (!load_operand(cpu, in, b, size, res))
			return res->action;
	} else if (size == 1 && !in->rex && in->rm_reg >= 4 && in->rm_reg < 8) {
		b[0] = (uint8_t)(cpu->gpr[in->rm_reg - 4] >> 8); /* AH, CH, DH, BH */
	} else {
		put_le(b, cpu->gpr[in->rm_reg], size);
	}
	for (unsigned k = 0; k < size; k++) {
		crc ^= b[k];
		for (int bit = 0; bit < 8; bit++)
			crc = crc & 1 ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
	}
	cpu->gpr[in->reg] = crc;
	return done(cpu, in, res);
}

/* The SSE moves and XORs (INSN_OP_SSE).  Every fault is found before the
 * first register is written, so a fault leaves the state as it was. */
static enum insn_action emulate_sse(struct insn_cpu *cpu, const struct insn *in,
				    struct insn_result *res)
{
	uint8_t *dst = cpu->sse ? cpu->sse->xmm[in->reg] : NULL, v[16] = { 0 };
	unsigned wide = in->rex & REX_W ? 8 : 4;

	if (!sse_feature(cpu, in))
		return raise_exc(res, INSN_VEC_UD, false, 0);
	if (!sse_allowed(cpu, in, res))
		return res->action;
	switch (in->sse) {
	case INSN_SSE_LOAD128:
	case INSN_SSE_XOR:
		if (in->mem) {
			if (!load_operand(cpu, in, v, 16, res))
				return res->action;
		} else {
			memcpy(v, cpu->sse->xmm[in->rm_reg], 16);
		}
		if (in->sse == INSN_SSE_XOR)
			for (unsigned k = 0; k < 16; k++)
				dst[k] ^= v[k];
		else
			memcpy(dst, v, 16);
		break;
	case INSN_SSE_STORE128:
		if (in->mem) {
			if (!store_operand(cpu, in, dst, 16, res))
				return res->action;
		} else {
			memcpy(cpu->sse->xmm[in->rm_reg], dst, 16);
		}
		break;
	case INSN_SSE_MOVD_TO_XMM:
		if (in->mem) {
			if (!load_operand(cpu, in, v, wide, res))
				return res->action;
		} else {
			put_le(v, cpu->gpr[in->rm_reg], wide);
		}
		memcpy(dst, v, 16); /* zero-extended to 128 bits */
		break;
	case INSN_SSE_MOVD_FROM_XMM:
		if (in->mem) {
			if (!store_operand(cpu, in, dst, wide, res))
				return res->action;
		} else {
			cpu->gpr[in->rm_reg] = get_le(dst, wide); /* a 32-bit write zero-extends */
		}
		return done(cpu, in, res); /* no XMM register written */
	case INSN_SSE_MOVQ_LOAD:
		if (in->mem) {
			if (!load_operand(cpu, in, v, 8, res))
				return res->action;
		} else {
			memcpy(v, cpu->sse->xmm[in->rm_reg], 8);
		}
		memcpy(dst, v, 16);
		break;
	case INSN_SSE_MOVQ_STORE:
		if (in->mem) {
			if (!store_operand(cpu, in, dst, 8, res))
				return res->action;
		} else {
			memcpy(v, dst, 8);
			memcpy(cpu->sse->xmm[in->rm_reg], v, 16);
		}
		break;
	case INSN_SSE_SHIFT_IMM:
		/* Register forms only: the memory encodings are not defined. */
		if (in->mem)
			return raise_exc(res, INSN_VEC_UD, false, 0);
		if (!sse_shift(cpu->sse->xmm[in->rm_reg], in))
			return unknown(res, "sse: shift group member not handled");
		break;
	case INSN_SSE_PBLENDVB:
	case INSN_SSE_PCLMULQDQ:
		if (in->mem) {
			if (!load_operand(cpu, in, v, 16, res))
				return res->action;
		} else {
			memcpy(v, cpu->sse->xmm[in->rm_reg], 16);
		}
		if (in->sse == INSN_SSE_PBLENDVB) {
			for (unsigned k = 0; k < 16; k++)
				if (cpu->sse->xmm[0][k] & 0x80)
					dst[k] = v[k];
		} else {
			clmul64(get_le(dst + (in->imm & 1 ? 8 : 0), 8),
				get_le(v + (in->imm & 0x10 ? 8 : 0), 8), dst);
		}
		break;
	case INSN_SSE_PMOVZXDQ:
		if (in->mem) {
			if (!load_operand(cpu, in, v, 8, res))
				return res->action;
		} else {
			memcpy(v, cpu->sse->xmm[in->rm_reg], 8);
		}
		memcpy(v + 8, v + 4, 4);
		memset(v + 4, 0, 4);
		memset(v + 12, 0, 4);
		memcpy(dst, v, 16);
		break;
	case INSN_SSE_PEXTRD: {
		const uint8_t *lane = dst + (in->imm & (wide == 8 ? 1 : 3)) * wide;

		if (in->mem) {
			if (!store_operand(cpu, in, lane, wide, res))
				return res->action;
		} else {
			cpu->gpr[in->rm_reg] = get_le(lane, wide);
		}
		return done(cpu, in, res); /* no XMM register written */
	}
	case INSN_SSE_PINSRW:
		if (in->mem) {
			if (!load_operand(cpu, in, v, 2, res))
				return res->action;
		} else {
			put_le(v, cpu->gpr[in->rm_reg], 2);
		}
		memcpy(dst + (in->imm & 7) * 2, v, 2);
		break;
	case INSN_SSE_PEXTRW:
		/* 66 0F C5: the register form only; reg is the general register. */
		if (in->mem)
			return raise_exc(res, INSN_VEC_UD, false, 0);
		cpu->gpr[in->reg] = get_le(cpu->sse->xmm[in->rm_reg] + (in->imm & 7) * 2, 2);
		return done(cpu, in, res);
	case INSN_SSE_PSHUFB:
	case INSN_SSE_PADDD:
	case INSN_SSE_PADDQ:
	case INSN_SSE_PAND:
	case INSN_SSE_PANDN:
	case INSN_SSE_POR:
	case INSN_SSE_PUNPCKLDQ:
	case INSN_SSE_PUNPCKLQDQ:
	case INSN_SSE_PSHUFD:
		if (in->mem) {
			if (!load_operand(cpu, in, v, 16, res))
				return res->action;
		} else {
			memcpy(v, cpu->sse->xmm[in->rm_reg], 16);
		}
		sse_alu(dst, v, in);
		break;
	default:
		return unknown(res, "sse: unknown operation");
	}
	cpu->sse_changed = true;
	return done(cpu, in, res);
}

/* ---- LSL ---- */

/* Descriptor bytes 5 and 6 (SDM vol. 3A, 3.4.5). */
#define DESC_TYPE 0x0fu      /* byte 5 */
#define DESC_S 0x10u         /* byte 5: code or data, else system */
#define DESC_DPL_SHIFT 5     /* byte 5 */
#define DESC_G 0x80u         /* byte 6 */
#define DESC_CODE_CONFORMING 0xcu /* type bits: code (8) and conforming (4) */

#define SEL_TI 0x4u
#define SEL_RPL 0x3u

/* Whether a system descriptor of @type is one LSL accepts in IA-32e mode
 * (SDM vol. 2A, LSL, "Segment and Gate Descriptor Types"): the LDT and the
 * 64-bit TSS, available or busy.  The 16-bit TSS types (1, 3) are reserved
 * there and the gates never qualify.  Type 0, what the upper half of a
 * 16-byte descriptor reads as, is refused too, although early editions of
 * that table (253666-024) mark it valid: a selector pointing into the middle
 * of a TSS descriptor names no segment whose limit means anything. */
static bool lsl_system_type(unsigned type)
{
	return type == 0x2 || type == 0x9 || type == 0xb;
}

/* Read the first 8 bytes of the descriptor @sel names into @d, and set
 * *@room to the offset of its table's last byte from the descriptor's first
 * (so a 16-byte descriptor fits when *@room >= 15).  Returns 0; -ENOENT when
 * LSL fails on the selector alone (null, TI = 1 without an LDT, past the
 * table's limit); -EFAULT when the read ended the instruction instead, @res
 * saying how (the guest's #PF, or unknown). */
static int lsl_descriptor(struct insn_cpu *cpu, uint16_t sel, uint8_t d[8], uint64_t *room,
			  struct insn_result *res)
{
	uint64_t base, limit, off = sel & ~(uint64_t)(SEL_TI | SEL_RPL);
	struct insn_exception fault;
	int r;

	if (sel & SEL_TI) {
		if (!cpu->ldt_usable)
			return -ENOENT;
		base = cpu->ldt_base;
		limit = cpu->ldt_limit;
	} else {
		if (off == 0) /* the null selector: GDT entry 0 is never read */
			return -ENOENT;
		base = cpu->gdt_base;
		limit = cpu->gdt_limit;
	}
	if (off + 7 > limit)
		return -ENOENT;
	*room = limit - off;
	if (!cpu->read_mem) {
		unknown(res, "lsl: no memory access");
		return -EFAULT;
	}
	/* An implicit supervisor access, whatever the CPL: SMAP applies to it
	 * regardless of RFLAGS.AC (SDM vol. 3A, 4.6). */
	r = cpu->read_mem(cpu->ctx, base + off, d, 8, 0, &fault);
	if (r == -EFAULT) {
		res->action = INSN_EXCEPTION;
		res->exc = fault;
		return -EFAULT;
	}
	if (r) {
		unknown(res, "lsl: descriptor unreadable");
		return -EFAULT;
	}
	return 0;
}

/* LSL r16/r32/r64, r/m16 (0F 03 /r, Intel SDM vol. 2A): the byte-granular
 * limit of the segment whose selector is the source, ZF = 1; or ZF = 0 and
 * the destination unchanged when the selector is null, past its table's
 * limit, names a type LSL does not accept, or a non-conforming segment the
 * CPL or the RPL may not see (either above the DPL).  The Present bit is not
 * looked at.  Other flags are unchanged.
 *
 * A system descriptor is 16 bytes in IA-32e mode; the SDM has LSL check
 * that the selector "points to a descriptor that is within the limits of
 * the GDT or LDT", so one whose upper half lies past the limit fails (ZF = 0)
 * like one wholly past it.  The upper half itself is not read: the limit is
 * in the lower half, and the LSL pseudo-code checks nothing in the upper.
 *
 * The source is 16 bits whatever the operand size (a register's low 16, or
 * a word of memory); the result is written as a 16-bit register write (the
 * rest of the register kept) or a 32/64-bit one (zero-extended). */
static enum insn_action emulate_lsl(struct insn_cpu *cpu, const struct insn *in,
				    struct insn_result *res)
{
	unsigned size = in->rex & REX_W ? 8 : in->opsize ? 2 : 4;
	uint64_t *dst = &cpu->gpr[in->reg], room = 0;
	unsigned type, dpl;
	uint32_t limit;
	uint8_t d[8], b[2];
	uint16_t sel;
	bool ok;
	int r;

	if (in->lock)
		return raise_exc(res, INSN_VEC_UD, false, 0);
	if (in->mem) {
		if (!load_operand(cpu, in, b, 2, res))
			return res->action;
		sel = (uint16_t)get_le(b, 2);
	} else {
		sel = (uint16_t)cpu->gpr[in->rm_reg];
	}
	r = lsl_descriptor(cpu, sel, d, &room, res);
	if (r == -EFAULT)
		return res->action;
	ok = r == 0;
	if (ok) {
		type = d[5] & DESC_TYPE;
		dpl = (d[5] >> DESC_DPL_SHIFT) & 3;
		if (!(d[5] & DESC_S))
			ok = lsl_system_type(type) && room >= 15;
		if (ok && !((d[5] & DESC_S) && (type & DESC_CODE_CONFORMING) == DESC_CODE_CONFORMING))
			ok = cpu->cpl <= dpl && (sel & SEL_RPL) <= dpl;
	}
	if (!ok) {
		cpu->rflags &= ~INSN_RFLAGS_ZF;
		return done(cpu, in, res);
	}
	limit = (uint32_t)d[0] | (uint32_t)d[1] << 8 | (uint32_t)(d[6] & 0xf) << 16;
	if (d[6] & DESC_G)
		limit = limit << 12 | 0xfff;
	if (size == 2)
		*dst = (*dst & ~0xffffull) | (limit & 0xffff); /* a 16-bit write keeps the rest */
	else
		*dst = limit; /* zero-extended */
	cpu->rflags |= INSN_RFLAGS_ZF;
	return done(cpu, in, res);
}

/* XGETBV (0F 01 D0): EDX:EAX <- XCR[ECX]. */
static enum insn_action emulate_xgetbv(struct insn_cpu *cpu, const struct insn *in,
				       struct insn_result *res)
{
	uint32_t index = (uint32_t)cpu->gpr[INSN_RCX];
	uint64_t v;

	if (in->rep || in->opsize)
		return unknown(res, "xgetbv with a 66/F2/F3 prefix");
	if (in->lock || !(cpu->cr4 & INSN_CR4_OSXSAVE))
		return raise_exc(res, INSN_VEC_UD, false, 0);
	if (index > 1 || (index == 1 && !(cpu->features & INSN_FEAT_XGETBV1)))
		return raise_exc(res, INSN_VEC_GP, true, 0);
	if (!cpu->read_xcr || cpu->read_xcr(cpu->ctx, index, &v))
		return unknown(res, "xgetbv: XCR unreadable");
	cpu->gpr[INSN_RAX] = (uint32_t)v;
	cpu->gpr[INSN_RDX] = v >> 32;
	return done(cpu, in, res);
}

enum insn_action insn_emulate(struct insn_cpu *cpu, const struct insn *in, struct insn_result *res)
{
	struct insn_cpu saved = *cpu;
	enum insn_action a;

	memset(res, 0, sizeof(*res));
	if (!cpu->long64)
		return unknown(res, "not in 64-bit mode");
	switch (in->op) {
	case INSN_OP_INT3: a = emulate_int3(cpu, in, res); break;
	case INSN_OP_FWAIT: a = emulate_fwait(cpu, in, res); break;
	case INSN_OP_CLAC:
	case INSN_OP_STAC: a = emulate_clac_stac(cpu, in, res); break;
	case INSN_OP_POPCNT: a = emulate_popcnt(cpu, in, res); break;
	case INSN_OP_LFENCE:
	case INSN_OP_MFENCE:
	case INSN_OP_SFENCE: a = emulate_fence(cpu, in, res); break;
	case INSN_OP_SYSRET: a = emulate_sysret(cpu, in, res); break;
	case INSN_OP_LDMXCSR:
	case INSN_OP_STMXCSR: a = emulate_mxcsr(cpu, in, res); break;
	case INSN_OP_XGETBV: a = emulate_xgetbv(cpu, in, res); break;
	case INSN_OP_SSE: a = emulate_sse(cpu, in, res); break;
	case INSN_OP_CRC32: a = emulate_crc32(cpu, in, res); break;
	case INSN_OP_LSL: a = emulate_lsl(cpu, in, res); break;
	default: a = unknown(res, "unknown operation"); break;
	}
	/* Faults and unknown instructions leave the state as it was; only
	 * #BP (a trap) moves RIP, which emulate_int3() did on purpose. */
	if (a == INSN_UNKNOWN || (a == INSN_EXCEPTION && res->exc.vector != INSN_VEC_BP))
		*cpu = saved;
	return a;
}

enum insn_action insn_step(struct insn_cpu *cpu, const uint8_t *buf, size_t avail,
			   struct insn *in, struct insn_result *res)
{
	int r = insn_decode(buf, avail, in);

	memset(res, 0, sizeof(*res));
	if (r == -E2BIG)
		return cpu->long64 ? raise_exc(res, INSN_VEC_GP, true, 0) :
				     unknown(res, "not in 64-bit mode");
	if (r == -EAGAIN)
		return unknown(res, "instruction continues past the bytes fetched");
	if (r)
		return unknown(res, "unknown instruction");
	return insn_emulate(cpu, in, res);
}

/* ---- the broken user-mode SYSCALL ---- */

bool insn_syscall_repair(struct insn_cpu *cpu, const struct insn_syscall_probe *p)
{
	const struct insn_pf_frame *f = &p->frame;
	uint16_t kcs = (uint16_t)((p->star >> 32) & 0xfffc);

	if (!cpu->long64 || cpu->cpl != 0 || !(cpu->efer & INSN_EFER_SCE))
		return false;
	if (!p->at_pf_entry || !p->syscall_before_rcx || !p->lstar)
		return false;
	/* The #PF came from CPL 3 fetching LSTAR: user-mode, not a write. */
	if (f->rip != p->lstar || cpu->cr2 != p->lstar || (f->cs & 3) != 3 || (f->ss & 3) != 3)
		return false;
	if (!(f->error & INSN_PF_USER) || (f->error & INSN_PF_WRITE))
		return false;
	/* SYSCALL left RCX at the next instruction. */
	if (cpu->gpr[INSN_RCX] < 2 || !kcs)
		return false;
	cpu->rip = p->lstar;
	cpu->gpr[INSN_RSP] = f->rsp;
	cpu->rflags = (f->rflags & ~p->fmask & ~INSN_RFLAGS_RF) | INSN_RFLAGS_FIXED;
	cpu->cs_sel = kcs;
	cpu->ss_sel = (uint16_t)(kcs + 8);
	cpu->cs_long = true;
	cpu->segs_changed = true;
	cpu->cpl = 0;
	return true;
}

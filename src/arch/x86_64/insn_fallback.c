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
 *   - more than 15 bytes is #GP(0), whatever they are. */
#include <errno.h>
#include <linux/kvm.h>
#include <string.h>

#include "vmrun/insn.h"

#define REX_W 0x8
#define REX_R 0x4
#define REX_X 0x2
#define REX_B 0x1

#define CPUID_1_ECX_POPCNT (1u << 23)
#define CPUID_7_EBX_SMAP (1u << 20)

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
	}
	return "?";
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
		if (e->function == 7 && e->index == 0 && (e->ebx & CPUID_7_EBX_SMAP))
			f |= INSN_FEAT_SMAP;
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
			if (buf[i] != 0xca && buf[i] != 0xcb)
				return -ENOENT;
			in->op = buf[i] == 0xca ? INSN_OP_CLAC : INSN_OP_STAC;
			in->has_modrm = true;
			in->modrm = buf[i++];
		} else if (op2 == 0xb8) {
			in->op = INSN_OP_POPCNT;
			if ((r = decode_modrm(buf, avail, &i, in)))
				return r;
		} else if (op2 == 0xae) {
			/* 0F AE /5, /6, /7 with a register operand: the fences
			 * (every r/m value, as the CPU decodes them). */
			if ((r = need(i, avail)))
				return r;
			if (buf[i] < 0xe8)
				return -ENOENT;
			in->op = buf[i] < 0xf0 ? INSN_OP_LFENCE :
				 buf[i] < 0xf8 ? INSN_OP_MFENCE : INSN_OP_SFENCE;
			if ((r = decode_modrm(buf, avail, &i, in)))
				return r;
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

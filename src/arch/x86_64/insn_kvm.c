/* The instruction fallback's KVM glue (include/vmrun/insn.h): from a
 * KVM_INTERNAL_ERROR_EMULATION exit to registers written back, through the
 * pure decoder/emulator in insn_fallback.c and the page walk in insn_mmu.c.
 *
 * Everything lives on the stack of the calling vCPU thread; the only shared
 * thing read is guest memory (page tables, the IDT, the exception frame),
 * which another vCPU may be changing: every value read from it is checked
 * before use, and a translation that fails ends in INSN_UNKNOWN, never in a
 * guess. */
#include <cpuid.h>
#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vmrun/guest_mem.h"
#include "vmrun/insn.h"

#define IDT_GATE_SIZE 16
#define ENDBR64_LEN 4

static const uint8_t endbr64[ENDBR64_LEN] = { 0xf3, 0x0f, 0x1e, 0xfa };

/* The legacy region of an XSAVE image (FXSAVE's layout, SDM vol. 1, 10.5.1)
 * and the XSAVE header's XSTATE_BV. */
#define FX_MXCSR 24
#define FX_MXCSR_MASK 28
#define FX_XMM 160
#define XSAVE_XSTATE_BV 512
#define XFEATURE_FP_SSE 0x3ull /* x87 and SSE components */

/* The vCPU's SSE registers, read only for an SSE instruction: through
 * KVM_GET_XSAVE, whose header says which components hold state (a write
 * through KVM_SET_FPU alone would be lost when the SSE component is in its
 * initial state there), else KVM_GET_FPU (KVM_GET_XSAVE fails where the
 * guest's XSAVE area is larger than struct kvm_xsave). */
struct sse_io {
	bool xsave;
	struct kvm_xsave xs;
	struct kvm_fpu fpu;
};

struct glue {
	int fd;
	const struct guest_mem *gm;
	struct insn_paging pg;
};

/* MXCSR_MASK of the CPU vmrun runs on: the guest's FXSAVE (emulated by KVM
 * on the host's CPU, or run natively) reports the same. */
static uint32_t host_mxcsr_mask(void)
{
	uint8_t fx[512] __attribute__((aligned(16)));
	uint32_t mask;

	memset(fx, 0, sizeof(fx));
	__asm__ volatile("fxsave64 %0" : "=m"(fx));
	memcpy(&mask, fx + FX_MXCSR_MASK, sizeof(mask));
	return mask;
}

static int sse_read(int fd, struct sse_io *io, struct insn_sse *sse)
{
	memset(sse, 0, sizeof(*sse));
	io->xsave = ioctl(fd, KVM_GET_XSAVE, &io->xs) == 0;
	if (io->xsave) {
		const uint8_t *x = (const uint8_t *)io->xs.region;

		memcpy(&sse->mxcsr, x + FX_MXCSR, 4);
		memcpy(sse->xmm, x + FX_XMM, sizeof(sse->xmm));
	} else {
		if (ioctl(fd, KVM_GET_FPU, &io->fpu) < 0)
			return -errno;
		sse->mxcsr = io->fpu.mxcsr;
		memcpy(sse->xmm, io->fpu.xmm, sizeof(sse->xmm));
	}
	sse->mxcsr_mask = host_mxcsr_mask();
	return 0;
}

static int sse_write(int fd, struct sse_io *io, const struct insn_sse *sse)
{
	if (io->xsave) {
		uint8_t *x = (uint8_t *)io->xs.region;
		uint64_t bv;

		memcpy(x + FX_MXCSR, &sse->mxcsr, 4);
		memcpy(x + FX_XMM, sse->xmm, sizeof(sse->xmm));
		/* The x87 and SSE components now hold what the image says
		 * (KVM_GET_XSAVE fills a component in its initial state with
		 * its initial values). */
		memcpy(&bv, x + XSAVE_XSTATE_BV, 8);
		bv |= XFEATURE_FP_SSE;
		memcpy(x + XSAVE_XSTATE_BV, &bv, 8);
		return ioctl(fd, KVM_SET_XSAVE, &io->xs) < 0 ? -errno : 0;
	}
	io->fpu.mxcsr = sse->mxcsr;
	memcpy(io->fpu.xmm, sse->xmm, sizeof(sse->xmm));
	return ioctl(fd, KVM_SET_FPU, &io->fpu) < 0 ? -errno : 0;
}

static int glue_read_msrs(int fd, const uint32_t *index, uint64_t *value, unsigned n)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[4];
	} m;

	if (n > 4)
		return -EINVAL;
	memset(&m, 0, sizeof(m));
	m.hdr.nmsrs = n;
	for (unsigned i = 0; i < n; i++)
		m.e[i].index = index[i];
	if (ioctl(fd, KVM_GET_MSRS, &m) != (int)n)
		return -EIO;
	for (unsigned i = 0; i < n; i++)
		value[i] = m.e[i].data;
	return 0;
}

static int glue_read_msr(void *ctx, uint32_t index, uint64_t *value)
{
	const struct glue *g = ctx;

	return glue_read_msrs(g->fd, &index, value, 1);
}

static int glue_read_mem(void *ctx, uint64_t la, void *buf, size_t len, unsigned access,
			 struct insn_exception *fault)
{
	const struct glue *g = ctx;

	return insn_read_linear(g->gm, &g->pg, la, buf, len, access, NULL, fault);
}

static int glue_write_mem(void *ctx, uint64_t la, const void *buf, size_t len, unsigned access,
			  struct insn_exception *fault)
{
	const struct glue *g = ctx;

	return insn_write_linear(g->gm, &g->pg, la, buf, len, access, fault);
}

/* XCR0 from KVM_GET_XCRS; XCR 1 (XINUSE AND XCR0) from the XSAVE header KVM
 * keeps, whose XSTATE_BV its XSAVE wrote from XINUSE. */
static int glue_read_xcr(void *ctx, uint32_t index, uint64_t *value)
{
	const struct glue *g = ctx;
	struct kvm_xsave xs;
	struct kvm_xcrs xcrs;
	uint64_t xcr0 = 0, bv;

	memset(&xcrs, 0, sizeof(xcrs));
	if (ioctl(g->fd, KVM_GET_XCRS, &xcrs) < 0)
		return -errno;
	for (uint32_t i = 0; i < xcrs.nr_xcrs && i < KVM_MAX_XCRS; i++)
		if (xcrs.xcrs[i].xcr == 0)
			xcr0 = xcrs.xcrs[i].value;
	if (index == 0) {
		*value = xcr0;
		return 0;
	}
	if (index != 1 || ioctl(g->fd, KVM_GET_XSAVE, &xs) < 0)
		return -EINVAL;
	memcpy(&bv, (const uint8_t *)xs.region + XSAVE_XSTATE_BV, 8);
	*value = xcr0 & bv;
	return 0;
}

static int glue_read_fsw(void *ctx, uint16_t *fsw)
{
	const struct glue *g = ctx;
	struct kvm_fpu fpu;

	if (ioctl(g->fd, KVM_GET_FPU, &fpu) < 0)
		return -errno;
	*fsw = fpu.fsw;
	return 0;
}

/* The INSN_FEAT_* bits of the CPU vmrun runs on. */
static uint32_t host_features(void)
{
	unsigned a, b, c, d;
	uint32_t f = 0;

	if (__get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 23)))
		f |= INSN_FEAT_POPCNT;
	if (__get_cpuid(1, &a, &b, &c, &d)) {
		f |= c & (1u << 9) ? INSN_FEAT_SSSE3 : 0;
		f |= c & (1u << 19) ? INSN_FEAT_SSE41 : 0;
		f |= c & (1u << 20) ? INSN_FEAT_SSE42 : 0;
		f |= c & (1u << 1) ? INSN_FEAT_PCLMUL : 0;
	}
	if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 20)))
		f |= INSN_FEAT_SMAP;
	if (__get_cpuid_count(0xd, 1, &a, &b, &c, &d) && (a & (1u << 2)))
		f |= INSN_FEAT_XGETBV1;
	return f;
}

static void regs_to_cpu(const struct kvm_regs *r, const struct kvm_sregs *s, struct insn_cpu *c)
{
	const __u64 *src[INSN_NR_GPRS] = {
		&r->rax, &r->rcx, &r->rdx, &r->rbx, &r->rsp, &r->rbp, &r->rsi, &r->rdi,
		&r->r8, &r->r9, &r->r10, &r->r11, &r->r12, &r->r13, &r->r14, &r->r15,
	};

	for (unsigned i = 0; i < INSN_NR_GPRS; i++)
		c->gpr[i] = *src[i];
	c->rip = r->rip;
	c->rflags = r->rflags;
	/* Linux and the test guests use non-conforming code segments only, so
	 * CPL is CS.RPL. */
	c->cpl = s->cs.selector & 3;
	c->long64 = (s->efer & INSN_EFER_LMA) && s->cs.l;
	c->cr0 = s->cr0;
	c->cr2 = s->cr2;
	c->cr4 = s->cr4;
	c->efer = s->efer;
	c->fs_base = s->fs.base;
	c->gs_base = s->gs.base;
	c->idt_base = s->idt.base;
	c->idt_limit = s->idt.limit;
	c->gdt_base = s->gdt.base;
	c->gdt_limit = s->gdt.limit;
	/* LDTR's cache as KVM reports it: the limit already byte-granular;
	 * LDTR loaded with a null selector reads as unusable (VMX) or not
	 * present (SVM), and holds no LDT either way. */
	c->ldt_base = s->ldt.base;
	c->ldt_limit = s->ldt.limit;
	c->ldt_usable = !s->ldt.unusable && s->ldt.present;
}

static void cpu_to_regs(const struct insn_cpu *c, struct kvm_regs *r)
{
	__u64 *dst[INSN_NR_GPRS] = {
		&r->rax, &r->rcx, &r->rdx, &r->rbx, &r->rsp, &r->rbp, &r->rsi, &r->rdi,
		&r->r8, &r->r9, &r->r10, &r->r11, &r->r12, &r->r13, &r->r14, &r->r15,
	};

	for (unsigned i = 0; i < INSN_NR_GPRS; i++)
		*dst[i] = c->gpr[i];
	r->rip = c->rip;
	r->rflags = c->rflags;
}

/* A flat 4 GiB segment as SYSCALL/SYSRET load them (Intel SDM vol. 2B). */
static struct kvm_segment flat_segment(uint16_t sel, bool code, bool code64)
{
	return (struct kvm_segment){
		.base = 0, .limit = 0xffffffff, .selector = sel, .type = code ? 0xb : 0x3,
		.present = 1, .dpl = sel & 3, .db = code && code64 ? 0 : 1, .s = 1,
		.l = code && code64, .g = 1,
	};
}

/* Whether RIP is IDT vector 14's handler, or just past an ENDBR64 there
 * (kernels built with IBT start every entry with one). */
static bool at_page_fault_entry(const struct glue *g, const struct insn_cpu *c)
{
	struct insn_exception fault;
	uint8_t gate[IDT_GATE_SIZE], head[ENDBR64_LEN];
	uint64_t target;

	if ((uint32_t)c->idt_limit < INSN_VEC_PF * IDT_GATE_SIZE + IDT_GATE_SIZE - 1)
		return false;
	if (insn_read_linear(g->gm, &g->pg, c->idt_base + INSN_VEC_PF * IDT_GATE_SIZE, gate,
			     sizeof(gate), INSN_ACC_NOCHECK, NULL, &fault))
		return false;
	if (!(gate[5] & 0x80)) /* not present */
		return false;
	target = (uint64_t)gate[0] | (uint64_t)gate[1] << 8 | (uint64_t)gate[6] << 16 |
		 (uint64_t)gate[7] << 24 | (uint64_t)gate[8] << 32 | (uint64_t)gate[9] << 40 |
		 (uint64_t)gate[10] << 48 | (uint64_t)gate[11] << 56;
	if (c->rip == target)
		return true;
	if (c->rip != target + ENDBR64_LEN)
		return false;
	return !insn_read_linear(g->gm, &g->pg, target, head, sizeof(head), INSN_ACC_NOCHECK,
				 NULL, &fault) &&
	       !memcmp(head, endbr64, sizeof(head));
}

/* CLAC at CPL 0 may be the page-fault entry after a broken user-mode
 * SYSCALL (insn_syscall_repair()).  Returns true when @c was rewritten.  Cheap
 * checks first: CLAC runs thousands of times per boot, almost always
 * elsewhere. */
static bool try_syscall_repair(const struct glue *g, struct insn_cpu *c)
{
	static const uint32_t msrs[3] = { INSN_MSR_STAR, INSN_MSR_LSTAR, INSN_MSR_FMASK };
	struct insn_syscall_probe p = { 0 };
	struct insn_exception fault;
	uint64_t v[3];
	uint8_t sc[2];

	if (c->cpl != 0 || !(c->efer & INSN_EFER_SCE))
		return false;
	if (insn_read_linear(g->gm, &g->pg, c->gpr[INSN_RSP], &p.frame, sizeof(p.frame),
			     INSN_ACC_NOCHECK, NULL, &fault))
		return false;
	if ((p.frame.cs & 3) != 3 || p.frame.cs > 0xffff || (p.frame.ss & 3) != 3 ||
	    p.frame.rip != c->cr2)
		return false;
	if (glue_read_msrs(g->fd, msrs, v, 3))
		return false;
	p.star = v[0];
	p.lstar = v[1];
	p.fmask = v[2];
	p.at_pf_entry = at_page_fault_entry(g, c);
	p.syscall_before_rcx =
		c->gpr[INSN_RCX] >= 2 &&
		!insn_read_linear(g->gm, &g->pg, c->gpr[INSN_RCX] - 2, sc, sizeof(sc),
				  INSN_ACC_NOCHECK, NULL, &fault) &&
		sc[0] == 0x0f && sc[1] == 0x05;
	return insn_syscall_repair(c, &p);
}

static int inject(int fd, const struct insn_exception *exc)
{
	struct kvm_vcpu_events ev;

	if (ioctl(fd, KVM_GET_VCPU_EVENTS, &ev) < 0)
		return -errno;
	if (ev.exception.injected || ev.exception.pending)
		return -EBUSY; /* KVM is delivering one already: do not stack another */
	ev.exception.injected = 1;
	ev.exception.pending = 0;
	ev.exception.nr = exc->vector;
	ev.exception.has_error_code = exc->has_error_code;
	ev.exception.error_code = exc->error_code;
	ev.exception_has_payload = 0;
	ev.exception_payload = 0;
	ev.interrupt.shadow = 0; /* the instruction is over */
	ev.flags &= ~(__u32)KVM_VCPUEVENT_VALID_PAYLOAD;
	if (ioctl(fd, KVM_SET_VCPU_EVENTS, &ev) < 0)
		return -errno;
	return 0;
}

static const char *vector_name(uint8_t v)
{
	switch (v) {
	case INSN_VEC_BP: return "#BP";
	case INSN_VEC_UD: return "#UD";
	case INSN_VEC_NM: return "#NM";
	case INSN_VEC_SS: return "#SS";
	case INSN_VEC_GP: return "#GP";
	case INSN_VEC_PF: return "#PF";
	case INSN_VEC_MF: return "#MF";
	default: return "exception";
	}
}

/* Write @c back to the vCPU: registers, segments (SYSRET, SYSCALL repair)
 * and CR2 (#PF), then the exception.  KVM_SET_REGS drops a pending
 * exception, so the exception goes last. */
static int write_back(int fd, const struct insn_cpu *c, struct kvm_regs *r, struct kvm_sregs *s,
		      const struct insn_result *res)
{
	bool pf = res->action == INSN_EXCEPTION && res->exc.vector == INSN_VEC_PF;

	cpu_to_regs(c, r);
	if (ioctl(fd, KVM_SET_REGS, r) < 0)
		return -errno;
	if (c->segs_changed || pf) {
		if (c->segs_changed) {
			s->cs = flat_segment(c->cs_sel, true, c->cs_long);
			s->ss = flat_segment(c->ss_sel, false, false);
		}
		if (pf)
			s->cr2 = res->exc.cr2;
		if (ioctl(fd, KVM_SET_SREGS, s) < 0)
			return -errno;
	}
	return res->action == INSN_EXCEPTION ? inject(fd, &res->exc) : 0;
}

/* The instruction bytes at RIP: fetched through the guest's page tables,
 * else the copy KVM put in the exit (when it says it did). */
static void fetch(const struct glue *g, const struct insn_cpu *c, const struct kvm_run *run,
		  struct insn_report *rep)
{
	struct insn_exception fault;
	size_t n = 0;

	(void)!insn_read_linear(g->gm, &g->pg, c->rip, rep->bytes, sizeof(rep->bytes),
				INSN_ACC_FETCH | (c->cpl == 3 ? INSN_ACC_USER : 0), &n, &fault);
	rep->n_bytes = (unsigned)n;
	if (n == 0 && (run->emulation_failure.flags &
		       KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) &&
	    run->emulation_failure.ndata >= 3) {
		unsigned k = run->emulation_failure.insn_size;

		k = k < sizeof(rep->bytes) ? k : (unsigned)sizeof(rep->bytes);
		memcpy(rep->bytes, run->emulation_failure.insn_bytes, k);
		rep->n_bytes = k;
	}
}

int insn_fallback_handle(int vcpu_fd, const struct kvm_run *run, const struct guest_mem *gm,
			 const struct kvm_cpuid2 *cpuid, struct insn_report *rep)
{
	struct glue g = { .fd = vcpu_fd, .gm = gm };
	struct insn_cpu c = { 0 };
	struct insn_sse sse;
	struct sse_io sse_io;
	struct insn_result res;
	struct kvm_sregs s;
	struct kvm_regs r;
	struct insn in;
	int err;

	memset(rep, 0, sizeof(*rep));
	if (ioctl(vcpu_fd, KVM_GET_REGS, &r) < 0 || ioctl(vcpu_fd, KVM_GET_SREGS, &s) < 0) {
		err = -errno;
		snprintf(rep->what, sizeof(rep->what), "cannot read the registers");
		return err;
	}
	regs_to_cpu(&r, &s, &c);
	rep->rip = c.rip;
	g.pg = (struct insn_paging){ .cr0 = s.cr0, .cr3 = s.cr3, .cr4 = s.cr4, .efer = s.efer };
	/* What the guest's CPUID says: the table vmrun set, or the host's own
	 * where the nested KVM ignores KVM_SET_CPUID2 (PLATFORM.md).  Either
	 * may be what the guest saw, so a feature in either counts: the
	 * feature check only turns an instruction the CPU lacks into #UD, and
	 * a guest runs these only after finding them in its CPUID. */
	c.features = insn_cpuid_features(cpuid) | host_features();
	c.ctx = &g;
	c.read_msr = glue_read_msr;
	c.read_mem = glue_read_mem;
	c.write_mem = glue_write_mem;
	c.read_fsw = glue_read_fsw;
	c.read_xcr = glue_read_xcr;

	if (!c.long64) {
		snprintf(rep->what, sizeof(rep->what), "not in 64-bit mode");
		return -ENOENT;
	}
	fetch(&g, &c, run, rep);
	if (rep->n_bytes == 0) {
		snprintf(rep->what, sizeof(rep->what), "instruction at RIP not readable");
		return -ENOENT;
	}
	if (!insn_decode(rep->bytes, rep->n_bytes, &in) && in.op == INSN_OP_CLAC &&
	    try_syscall_repair(&g, &c)) {
		snprintf(rep->what, sizeof(rep->what), "repaired a user-mode syscall to 0x%llx",
			 (unsigned long long)c.rip);
		res = (struct insn_result){ .action = INSN_EMULATED };
		return write_back(vcpu_fd, &c, &r, &s, &res);
	}
	/* The SSE registers only for an instruction that needs them. */
	if (!insn_decode(rep->bytes, rep->n_bytes, &in) && insn_op_uses_sse(in.op)) {
		err = sse_read(vcpu_fd, &sse_io, &sse);
		if (err) {
			snprintf(rep->what, sizeof(rep->what), "cannot read the SSE registers: %s",
				 strerror(-err));
			return err;
		}
		c.sse = &sse;
	}
	switch (insn_step(&c, rep->bytes, rep->n_bytes, &in, &res)) {
	case INSN_EMULATED:
		snprintf(rep->what, sizeof(rep->what), "emulated %s", insn_op_name(in.op));
		break;
	case INSN_EXCEPTION:
		snprintf(rep->what, sizeof(rep->what), "injected %s", vector_name(res.exc.vector));
		break;
	case INSN_UNKNOWN:
		snprintf(rep->what, sizeof(rep->what), "%s", res.why);
		return -ENOENT;
	}
	err = c.sse_changed ? sse_write(vcpu_fd, &sse_io, &sse) : 0;
	if (!err)
		err = write_back(vcpu_fd, &c, &r, &s, &res);
	if (err)
		snprintf(rep->what, sizeof(rep->what), "cannot write the vCPU state back: %s",
			 strerror(-err));
	return err;
}

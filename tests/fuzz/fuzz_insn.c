// SPDX-License-Identifier: MIT
/*
 * Fuzz target for the instruction fallback of nested hosts
 * (src/arch/x86_64/insn_fallback.c, insn_mmu.c; include/vmrun/insn.h):
 * the decoder on any byte string, the emulator on a fake vCPU whose
 * registers, SSE state, MSRs and memory come from the input (no KVM, as
 * tests/unit/test_insn.c drives it), and the page walk through page tables
 * in a fake guest RAM.
 *
 * Input, in order (short inputs read as zeroes):
 *   u8       bytes of the instruction available (mod 17)
 *   16       the instruction bytes
 *   u8       bit 0: 64-bit code; bit 1: no SSE state; bit 2: no memory
 *            callbacks; bit 3: callbacks fail with -EIO rather than #PF
 *   the vCPU: 16 GPRs, RIP, RFLAGS, u8 CPL (mod 4), CR0, CR2, CR4, EFER,
 *            FS base, GS base, IDT base, u16 IDT limit, u32 features
 *   the SSE registers (16 x 16 bytes, MXCSR, MXCSR mask)
 *   u64 MSR value, u16 FSW, u64 XCR value
 *   paging: CR0, CR3, CR4, EFER, u64 linear address, u8 access
 *   the rest: memory, the linear window [0, 64 KiB) of the fake memory
 *            callbacks and the start of the page walk's 2 MiB RAM.
 * A crash, a sanitizer report, an instruction length over 15 or past the
 * available bytes, or a store the emulator does not mark as one is a
 * finding.
 */
#include <errno.h>

#include "fuzz_common.h"
#include "vmrun/guest_mem.h"
#include "vmrun/insn.h"

#define WINDOW (64u << 10)

struct fake {
	uint8_t mem[WINDOW];
	uint64_t msr, xcr;
	uint16_t fsw;
	bool fail_eio;
};

static int fake_access(struct fake *fk, uint64_t la, size_t len, unsigned access,
		       struct insn_exception *fault)
{
	if (la < WINDOW && len <= WINDOW - la)
		return 0;
	if (fk->fail_eio)
		return -EIO;
	*fault = (struct insn_exception){ .vector = INSN_VEC_PF, .has_error_code = true,
					  .error_code = access & INSN_ACC_WRITE ? INSN_PF_WRITE : 0,
					  .cr2 = la };
	return -EFAULT;
}

static int fake_read_mem(void *ctx, uint64_t la, void *buf, size_t len, unsigned access,
			 struct insn_exception *fault)
{
	struct fake *fk = ctx;
	int r = fake_access(fk, la, len, access, fault);

	if (!r)
		memcpy(buf, fk->mem + la, len);
	return r;
}

static int fake_write_mem(void *ctx, uint64_t la, const void *buf, size_t len, unsigned access,
			  struct insn_exception *fault)
{
	struct fake *fk = ctx;
	int r = fake_access(fk, la, len, access, fault);

	if (!(access & INSN_ACC_WRITE))
		abort(); /* a store must say so */
	if (!r)
		memcpy(fk->mem + la, buf, len);
	return r;
}

static int fake_read_msr(void *ctx, uint32_t index, uint64_t *value)
{
	struct fake *fk = ctx;

	if (fk->fail_eio)
		return -EIO;
	*value = fk->msr ^ index;
	return 0;
}

static int fake_read_fsw(void *ctx, uint16_t *fsw)
{
	struct fake *fk = ctx;

	*fsw = fk->fsw;
	return fk->fail_eio ? -EIO : 0;
}

static int fake_read_xcr(void *ctx, uint32_t index, uint64_t *value)
{
	struct fake *fk = ctx;

	if (fk->fail_eio || index > 1)
		return -EINVAL;
	*value = fk->xcr;
	return 0;
}

static void page_walk(struct fz *f, const uint8_t *img, size_t img_len)
{
	static struct guest_mem gm;
	struct insn_paging pg;
	struct insn_exception fault;
	uint64_t la, gpa;
	unsigned access;
	uint8_t buf[INSN_WRITE_MAX + 1];
	uint8_t *ram;

	if (!gm.mapping && guest_mem_init(&gm, 2u << 20))
		abort();
	ram = guest_mem_ptr(&gm, 0, 2u << 20);
	memset(ram, 0, 2u << 20);
	memcpy(ram, img, img_len);
	pg.cr0 = fz_u64(f);
	pg.cr3 = fz_u64(f);
	pg.cr4 = fz_u64(f);
	pg.efer = fz_u64(f);
	la = fz_u64(f);
	access = fz_u8(f);
	(void)insn_canonical(&pg, la);
	/* A translation may end outside RAM (MAXPHYADDR is not checked): only
	 * the reads and writes below must then refuse it. */
	fz_ignore(insn_translate(&gm, &pg, la, access, &gpa, &fault));
	fz_ignore(insn_read_linear(&gm, &pg, la, buf, sizeof(buf), access, NULL, &fault));
	memset(buf, 0x5a, sizeof(buf));
	fz_ignore(insn_write_linear(&gm, &pg, la, buf, INSN_WRITE_MAX, access, &fault));
	fz_ignore(insn_write_linear(&gm, &pg, la, buf, sizeof(buf), access, &fault));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fake fk;
	struct fz f = { data, size };
	struct insn_cpu cpu;
	struct insn_sse sse;
	struct insn in;
	struct insn_result res;
	uint8_t bytes[16], flags;
	size_t avail, img_len;
	const uint8_t *img;
	int r;

	fz_quiet();
	avail = fz_u8(&f) % 17;
	fz_bytes(&f, bytes, sizeof(bytes));
	flags = fz_u8(&f);

	r = insn_decode(bytes, avail, &in);
	if (r == 0 && (in.len == 0 || in.len > INSN_MAX_LEN || in.len > avail))
		abort();
	if (r == 0)
		(void)insn_op_name(in.op), (void)insn_op_uses_sse(in.op);

	memset(&cpu, 0, sizeof(cpu));
	for (unsigned i = 0; i < INSN_NR_GPRS; i++)
		cpu.gpr[i] = fz_u64(&f);
	cpu.rip = fz_u64(&f);
	cpu.rflags = fz_u64(&f);
	cpu.cpl = fz_u8(&f) % 4;
	cpu.long64 = flags & 1;
	cpu.cr0 = fz_u64(&f);
	cpu.cr2 = fz_u64(&f);
	cpu.cr4 = fz_u64(&f);
	cpu.efer = fz_u64(&f);
	cpu.fs_base = fz_u64(&f);
	cpu.gs_base = fz_u64(&f);
	cpu.idt_base = fz_u64(&f);
	cpu.idt_limit = fz_u16(&f);
	cpu.features = fz_u32(&f);
	fz_bytes(&f, sse.xmm, sizeof(sse.xmm));
	sse.mxcsr = fz_u32(&f);
	sse.mxcsr_mask = fz_u32(&f);
	fk.msr = fz_u64(&f);
	fk.fsw = fz_u16(&f);
	fk.xcr = fz_u64(&f);
	fk.fail_eio = flags & 8;
	if (!(flags & 2))
		cpu.sse = &sse;
	cpu.ctx = &fk;
	cpu.read_msr = fake_read_msr;
	cpu.read_fsw = fake_read_fsw;
	cpu.read_xcr = fake_read_xcr;
	if (!(flags & 4)) {
		cpu.read_mem = fake_read_mem;
		cpu.write_mem = fake_write_mem;
	}

	/* The paging fields come before the memory image in the input. */
	{
		struct fz pf = f;
		uint8_t skip[8 * 5 + 1];

		fz_bytes(&f, skip, sizeof(skip));
		img = fz_take(&f, WINDOW, &img_len);
		memset(fk.mem, 0, sizeof(fk.mem));
		memcpy(fk.mem, img, img_len);
		(void)insn_step(&cpu, bytes, avail, &in, &res);
		if (res.action == INSN_UNKNOWN && !res.why)
			abort(); /* "res->why says why" */
		page_walk(&pf, img, img_len);
	}
	return 0;
}

// SPDX-License-Identifier: MIT
/*
 * KVM-level round trip of include/vmrun/x86_state.h, without vmrun's VM
 * builder: VM A gets distinctive vCPU, irqchip, PIT and clock state by raw
 * ioctls; it is saved through the state stream (state_writer, then
 * state_writer_finish, then state_reader_open) and loaded into a second,
 * fresh VM B, whose state must then read back the same (the TSC, the KVM
 * clock and the LAPIC's current timer count within a tolerance, since
 * they run).  Loading the same stream into B a second time must give the
 * same again.  Then every property of every node is damaged in turn
 * (truncated by a byte, by a cell, emptied; filled with 0xff; random bytes)
 * in a stream whose footer and CRC are made valid again, so that only the
 * loaders' own checks stand between it and KVM: each truncation must be
 * refused with a message, and nothing may crash (run it under ASan).
 *
 * Exit status: 0 pass, 1 fail, 77 skip (no usable /dev/kvm).
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <libfdt.h>
#include <linux/kvm.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "vmrun/state.h"
#include "vmrun/x86.h"
#include "vmrun/x86_state.h"

#define NCPUS 2
#define MEM_SIZE (2u << 20)
#define CPUID_MAX 256
#define MAX_MSRS 1024

#define MSR_IA32_TSC 0x10u
#define MSR_IA32_TSC_DEADLINE 0x6e0u
#define MSR_IA32_SYSENTER_ESP 0x175u
#define MSR_STAR 0xc0000081u
#define MSR_LSTAR 0xc0000082u
#define MSR_KERNEL_GS_BASE 0xc0000102u

#define APIC_TASKPRI 0x80
#define APIC_SPIV 0xf0
#define APIC_LVTT 0x320
#define APIC_LVT0 0x350
#define APIC_TMICT 0x380
#define APIC_TMCCT 0x390
#define APIC_TDCR 0x3e0

#define TEST_TSC (1ull << 40)
#define TEST_DEADLINE (TEST_TSC + (1ull << 38)) /* minutes away: never fires here */
#define LVTT_CPU0 0x300ecu /* periodic, masked, vector 0xec */
#define LVTT_CPU1 0x500ecu /* TSC deadline, masked, vector 0xec */
#define TEST_CLOCK 1000000000000ull /* 1000 s: far from a fresh VM's clock */
#define TOLERANCE_NS 20000000000ull /* 20 s: this host is slow and nested */

struct ctx {
	int kvm_fd;
	struct kvm_cpuid2 *cpuid; /* KVM_GET_SUPPORTED_CPUID */
	struct kvm_msr_list *msrs;
	int failures;
	int notes;
};

struct tvm {
	int vm_fd;
	int vcpu[NCPUS];
	void *mem;
};

/* Everything the round trip compares, for one VM. */
struct vcpu_snap {
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	uint8_t xsave[16384];
	size_t xsave_len;
	struct kvm_xcrs xcrs;
	struct kvm_debugregs dbg;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events ev;
	struct kvm_mp_state mp;
	int tsc_khz;
	uint32_t msr_index[MAX_MSRS];
	uint64_t msr_value[MAX_MSRS];
	bool msr_ok[MAX_MSRS];
};

struct vm_snap {
	struct vcpu_snap cpu[NCPUS];
	struct kvm_irqchip pic[2];
	struct kvm_irqchip ioapic;
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clock;
};

static void fail(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct ctx *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("FAIL: ", stdout);
	vprintf(fmt, ap);
	fputc('\n', stdout);
	va_end(ap);
	c->failures++;
}

static void note(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct ctx *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("note: ", stdout);
	vprintf(fmt, ap);
	fputc('\n', stdout);
	va_end(ap);
	c->notes++;
}

/* A fatal set-up error: the test cannot go on. */
static void die(const char *what)
{
	printf("FAIL: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void xioctl(int fd, unsigned long req, void *arg, const char *what)
{
	if (ioctl(fd, req, arg) < 0)
		die(what);
}

/* ---- building a VM the way vm.c does ---- */

static struct kvm_cpuid2 *cpuid_alloc(void)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + CPUID_MAX * sizeof(c->entries[0]));

	if (!c)
		die("calloc");
	c->nent = CPUID_MAX;
	return c;
}

/* A VM with the TSS and identity map where vm.c puts them, 2 MiB of RAM,
 * the in-kernel irqchip and PIT, and NCPUS vCPUs each given @cpuid patched
 * with its APIC ID. */
static void tvm_create(struct ctx *c, struct tvm *t, const struct kvm_cpuid2 *cpuid)
{
	uint64_t identity = X86_IDENTITY_MAP;
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	struct kvm_userspace_memory_region region = { 0 };
	size_t cpuid_bytes = sizeof(*cpuid) + cpuid->nent * sizeof(cpuid->entries[0]);
	struct kvm_cpuid2 *mine = malloc(cpuid_bytes);

	if (!mine)
		die("malloc");
	t->vm_fd = ioctl(c->kvm_fd, KVM_CREATE_VM, 0);
	if (t->vm_fd < 0)
		die("KVM_CREATE_VM");
	if (ioctl(t->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)X86_TSS_ADDR) < 0)
		die("KVM_SET_TSS_ADDR");
	xioctl(t->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &identity, "KVM_SET_IDENTITY_MAP_ADDR");
	t->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (t->mem == MAP_FAILED)
		die("mmap");
	region.memory_size = MEM_SIZE;
	region.userspace_addr = (uint64_t)(uintptr_t)t->mem;
	xioctl(t->vm_fd, KVM_SET_USER_MEMORY_REGION, &region, "KVM_SET_USER_MEMORY_REGION");
	if (ioctl(t->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		die("KVM_CREATE_IRQCHIP");
	xioctl(t->vm_fd, KVM_CREATE_PIT2, &pit, "KVM_CREATE_PIT2");
	for (unsigned i = 0; i < NCPUS; i++) {
		t->vcpu[i] = ioctl(t->vm_fd, KVM_CREATE_VCPU, (unsigned long)i);
		if (t->vcpu[i] < 0)
			die("KVM_CREATE_VCPU");
		memcpy(mine, cpuid, cpuid_bytes);
		x86_cpuid_patch(mine, i, NCPUS);
		xioctl(t->vcpu[i], KVM_SET_CPUID2, mine, "KVM_SET_CPUID2");
	}
	free(mine);
}

static void tvm_destroy(struct tvm *t)
{
	for (unsigned i = 0; i < NCPUS; i++)
		close(t->vcpu[i]);
	close(t->vm_fd);
	munmap(t->mem, MEM_SIZE);
}

/* ---- distinctive state ---- */

/* One MSR through KVM_GET_MSRS or KVM_SET_MSRS: true when KVM did it. */
static bool msr_io(int vcpu_fd, unsigned long req, uint32_t index, uint64_t *value)
{
	union {
		struct kvm_msrs h;
		uint8_t bytes[sizeof(struct kvm_msrs) + sizeof(struct kvm_msr_entry)];
	} m;

	memset(&m, 0, sizeof(m));
	m.h.nmsrs = 1;
	m.h.entries[0].index = index;
	m.h.entries[0].data = *value;
	if (ioctl(vcpu_fd, req, &m) != 1)
		return false;
	*value = m.h.entries[0].data;
	return true;
}

static void set_msr(int vcpu_fd, uint32_t index, uint64_t value)
{
	if (!msr_io(vcpu_fd, KVM_SET_MSRS, index, &value)) {
		printf("FAIL: KVM_SET_MSRS 0x%x\n", index);
		exit(1);
	}
}

static void lapic_set(struct kvm_lapic_state *l, unsigned reg, uint32_t v)
{
	memcpy(&l->regs[reg], &v, 4);
}

static uint32_t lapic_get(const struct kvm_lapic_state *l, unsigned reg)
{
	uint32_t v;

	memcpy(&v, &l->regs[reg], 4);
	return v;
}

static void set_vcpu_state(struct ctx *c, int fd, unsigned id)
{
	struct kvm_regs regs;
	struct kvm_sregs s;
	struct kvm_lapic_state lapic;
	struct kvm_debugregs dbg;
	struct kvm_xcrs xcrs = { .nr_xcrs = 1, .xcrs[0] = { .xcr = 0, .value = 0x3 } };
	struct kvm_vcpu_events ev;
	struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_HALTED };
	uint8_t *xsave = calloc(1, 4096);
	uint64_t *r64 = (uint64_t *)&regs;

	if (!xsave)
		die("calloc");
	if (x86_setup_long_mode(fd, 0x100000 + id * 0x1000, X86_BOOT_PARAMS))
		die("x86_setup_long_mode");
	xioctl(fd, KVM_GET_SREGS, &s, "KVM_GET_SREGS");
	s.fs.base = 0x7f0000001000ull + id;
	s.gs.base = 0xffff888000000000ull + id * 0x40;
	s.cr2 = 0xdead000ull + id;
	s.idt.base = 0x3000;
	s.idt.limit = 0xfff;
	s.tr = (struct kvm_segment){ .base = 0x4000 + id * 0x100, .limit = 0x67,
				     .selector = 0x28, .type = 11, .present = 1 };
	s.efer |= 1; /* SCE */
	xioctl(fd, KVM_SET_SREGS, &s, "KVM_SET_SREGS");

	for (unsigned i = 0; i < sizeof(regs) / 8; i++)
		r64[i] = 0x1111000000000000ull * (i % 15 + 1) + id * 0x100 + i;
	regs.rip = 0x100000 + id * 0x1000 + 0x42;
	regs.rflags = 0x246;
	xioctl(fd, KVM_SET_REGS, &regs, "KVM_SET_REGS");

	/* x87 control word, MXCSR rounding bits and XMM0, with XSTATE_BV
	 * saying x87 and SSE state are present. */
	xioctl(fd, KVM_GET_XSAVE, xsave, "KVM_GET_XSAVE");
	xsave[0] = 0x7f;
	xsave[1] = 0x02;
	xsave[24] = 0x80;
	xsave[25] = 0x7f;
	for (unsigned i = 0; i < 16; i++)
		xsave[160 + i] = (uint8_t)(0xa0 + i + id);
	xsave[512] |= 0x3;
	xioctl(fd, KVM_SET_XSAVE, xsave, "KVM_SET_XSAVE");
	free(xsave);
	if (ioctl(fd, KVM_SET_XCRS, &xcrs) < 0)
		note(c, "cpu%u: KVM_SET_XCRS XCR0=3: %s (XCR0 keeps its default)", id,
		     strerror(errno));

	xioctl(fd, KVM_GET_LAPIC, &lapic, "KVM_GET_LAPIC");
	lapic_set(&lapic, APIC_SPIV, 0x1ff);
	lapic_set(&lapic, APIC_TASKPRI, 0x20);
	/* cpu0's timer counts down from TMICT; cpu1's is in TSC-deadline
	 * mode, whose MSR write only sticks once the LAPIC is in that mode
	 * (the load order's LAPIC-before-MSRs rule). */
	lapic_set(&lapic, APIC_LVTT, id ? LVTT_CPU1 : LVTT_CPU0);
	lapic_set(&lapic, APIC_TDCR, 0xb);
	lapic_set(&lapic, APIC_TMICT, id ? 0 : 0x123456);
	lapic_set(&lapic, APIC_LVT0, id ? 0x10000 : 0x700);
	xioctl(fd, KVM_SET_LAPIC, &lapic, "KVM_SET_LAPIC");

	set_msr(fd, MSR_IA32_SYSENTER_ESP, 0x12345678 + id);
	set_msr(fd, MSR_KERNEL_GS_BASE, 0xffff888012345000ull + id);
	set_msr(fd, MSR_LSTAR, 0xffffffff81000000ull + id * 16);
	set_msr(fd, MSR_STAR, 0x0023001000000000ull);
	set_msr(fd, MSR_IA32_TSC, TEST_TSC);
	if (id)
		set_msr(fd, MSR_IA32_TSC_DEADLINE, TEST_DEADLINE);

	memset(&dbg, 0, sizeof(dbg));
	xioctl(fd, KVM_GET_DEBUGREGS, &dbg, "KVM_GET_DEBUGREGS");
	for (unsigned i = 0; i < 4; i++)
		dbg.db[i] = 0x1000 * (i + 1) + id;
	dbg.dr7 = 0x10401;
	dbg.flags = 0;
	xioctl(fd, KVM_SET_DEBUGREGS, &dbg, "KVM_SET_DEBUGREGS");

	if (id == 0)
		xioctl(fd, KVM_SET_MP_STATE, &mp, "KVM_SET_MP_STATE");

	xioctl(fd, KVM_GET_VCPU_EVENTS, &ev, "KVM_GET_VCPU_EVENTS");
	ev.flags &= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW |
		    KVM_VCPUEVENT_VALID_SMM;
	ev.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW;
	ev.interrupt.shadow = KVM_X86_SHADOW_INT_MOV_SS;
	ev.nmi.masked = 1;
	ev.nmi.pending = id == 0;
	xioctl(fd, KVM_SET_VCPU_EVENTS, &ev, "KVM_SET_VCPU_EVENTS");
}

static void set_vm_state(struct tvm *t)
{
	struct kvm_irqchip chip = { .chip_id = KVM_IRQCHIP_PIC_MASTER };
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clock = { .clock = TEST_CLOCK };

	xioctl(t->vm_fd, KVM_GET_IRQCHIP, &chip, "KVM_GET_IRQCHIP master");
	chip.chip.pic.imr = 0xa5;
	chip.chip.pic.irq_base = 0x20;
	chip.chip.pic.elcr = 0x20;
	xioctl(t->vm_fd, KVM_SET_IRQCHIP, &chip, "KVM_SET_IRQCHIP master");
	chip = (struct kvm_irqchip){ .chip_id = KVM_IRQCHIP_PIC_SLAVE };
	xioctl(t->vm_fd, KVM_GET_IRQCHIP, &chip, "KVM_GET_IRQCHIP slave");
	chip.chip.pic.imr = 0x5a;
	chip.chip.pic.irq_base = 0x28;
	xioctl(t->vm_fd, KVM_SET_IRQCHIP, &chip, "KVM_SET_IRQCHIP slave");
	chip = (struct kvm_irqchip){ .chip_id = KVM_IRQCHIP_IOAPIC };
	xioctl(t->vm_fd, KVM_GET_IRQCHIP, &chip, "KVM_GET_IRQCHIP ioapic");
	chip.chip.ioapic.id = 3;
	chip.chip.ioapic.ioregsel = 0x12;
	chip.chip.ioapic.redirtbl[4].bits = (1ull << 56) | (1u << 16) | 0x34;
	chip.chip.ioapic.redirtbl[9].bits = (1u << 16) | (1u << 15) | 0x39;
	xioctl(t->vm_fd, KVM_SET_IRQCHIP, &chip, "KVM_SET_IRQCHIP ioapic");

	/* Channels 1 and 2: channel 0 would start KVM's PIT timer, whose
	 * interrupts would change the PIC's IRR between save and compare. */
	xioctl(t->vm_fd, KVM_GET_PIT2, &pit, "KVM_GET_PIT2");
	pit.channels[1].count = 0x4321;
	pit.channels[1].mode = 2;
	pit.channels[1].rw_mode = 3;
	pit.channels[1].read_state = 3;
	pit.channels[1].write_state = 3;
	pit.channels[2].count = 0x1234;
	pit.channels[2].mode = 3;
	pit.channels[2].gate = 1;
	xioctl(t->vm_fd, KVM_SET_PIT2, &pit, "KVM_SET_PIT2");

	xioctl(t->vm_fd, KVM_SET_CLOCK, &clock, "KVM_SET_CLOCK");
}

/* ---- reading a VM back ---- */

static void snap_vcpu(struct ctx *c, int fd, struct vcpu_snap *s)
{
	int size = ioctl(c->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);

	memset(s, 0, sizeof(*s));
	xioctl(fd, KVM_GET_REGS, &s->regs, "KVM_GET_REGS");
	xioctl(fd, KVM_GET_SREGS, &s->sregs, "KVM_GET_SREGS");
	s->xsave_len = size > 4096 ? (size_t)size : 4096;
	if (s->xsave_len > sizeof(s->xsave)) {
		printf("FAIL: XSAVE area of %zu bytes: raise the test's buffer\n", s->xsave_len);
		exit(1);
	}
	xioctl(fd, size > 0 ? KVM_GET_XSAVE2 : KVM_GET_XSAVE, s->xsave, "KVM_GET_XSAVE");
	xioctl(fd, KVM_GET_XCRS, &s->xcrs, "KVM_GET_XCRS");
	xioctl(fd, KVM_GET_DEBUGREGS, &s->dbg, "KVM_GET_DEBUGREGS");
	xioctl(fd, KVM_GET_LAPIC, &s->lapic, "KVM_GET_LAPIC");
	xioctl(fd, KVM_GET_VCPU_EVENTS, &s->ev, "KVM_GET_VCPU_EVENTS");
	xioctl(fd, KVM_GET_MP_STATE, &s->mp, "KVM_GET_MP_STATE");
	s->tsc_khz = ioctl(fd, KVM_GET_TSC_KHZ, 0);
	for (uint32_t i = 0; i < c->msrs->nmsrs && i < MAX_MSRS; i++) {
		s->msr_index[i] = c->msrs->indices[i];
		s->msr_ok[i] = msr_io(fd, KVM_GET_MSRS, s->msr_index[i], &s->msr_value[i]);
	}
}

static void snap_vm(struct ctx *c, struct tvm *t, struct vm_snap *s)
{
	memset(s, 0, sizeof(*s));
	for (unsigned i = 0; i < NCPUS; i++)
		snap_vcpu(c, t->vcpu[i], &s->cpu[i]);
	for (unsigned i = 0; i < 2; i++) {
		s->pic[i].chip_id = i;
		xioctl(t->vm_fd, KVM_GET_IRQCHIP, &s->pic[i], "KVM_GET_IRQCHIP");
	}
	s->ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
	xioctl(t->vm_fd, KVM_GET_IRQCHIP, &s->ioapic, "KVM_GET_IRQCHIP");
	xioctl(t->vm_fd, KVM_GET_PIT2, &s->pit, "KVM_GET_PIT2");
	xioctl(t->vm_fd, KVM_GET_CLOCK, &s->clock, "KVM_GET_CLOCK");
}

static bool seg_eq(const struct kvm_segment *a, const struct kvm_segment *b)
{
	return a->base == b->base && a->limit == b->limit && a->selector == b->selector &&
	       a->type == b->type && a->present == b->present && a->dpl == b->dpl &&
	       a->db == b->db && a->s == b->s && a->l == b->l && a->g == b->g &&
	       a->avl == b->avl && a->unusable == b->unusable;
}

static bool sregs_eq(const struct kvm_sregs *a, const struct kvm_sregs *b)
{
	return seg_eq(&a->cs, &b->cs) && seg_eq(&a->ds, &b->ds) && seg_eq(&a->es, &b->es) &&
	       seg_eq(&a->fs, &b->fs) && seg_eq(&a->gs, &b->gs) && seg_eq(&a->ss, &b->ss) &&
	       seg_eq(&a->tr, &b->tr) && seg_eq(&a->ldt, &b->ldt) &&
	       a->gdt.base == b->gdt.base && a->gdt.limit == b->gdt.limit &&
	       a->idt.base == b->idt.base && a->idt.limit == b->idt.limit &&
	       a->cr0 == b->cr0 && a->cr2 == b->cr2 && a->cr3 == b->cr3 && a->cr4 == b->cr4 &&
	       a->cr8 == b->cr8 && a->efer == b->efer && a->apic_base == b->apic_base &&
	       !memcmp(a->interrupt_bitmap, b->interrupt_bitmap, sizeof(a->interrupt_bitmap));
}

static uint64_t absdiff(uint64_t a, uint64_t b)
{
	return a > b ? a - b : b - a;
}

/* The first differing byte of two buffers, or -1. */
static long first_diff(const void *a, const void *b, size_t len)
{
	const uint8_t *x = a, *y = b;

	for (size_t i = 0; i < len; i++)
		if (x[i] != y[i])
			return (long)i;
	return -1;
}

/* @b must hold what @a held; @what names the comparison. */
static void compare_vm(struct ctx *c, const char *what, const struct vm_snap *a,
		       const struct vm_snap *b)
{
	for (unsigned i = 0; i < NCPUS; i++) {
		const struct vcpu_snap *x = &a->cpu[i], *y = &b->cpu[i];
		uint64_t tsc_tol = (uint64_t)(x->tsc_khz > 0 ? x->tsc_khz : 3000000) *
				   (TOLERANCE_NS / 1000000);
		long d;

		if (memcmp(&x->regs, &y->regs, sizeof(x->regs)))
			fail(c, "%s: cpu%u regs differ (rip 0x%llx vs 0x%llx)", what, i,
			     (unsigned long long)x->regs.rip, (unsigned long long)y->regs.rip);
		if (!sregs_eq(&x->sregs, &y->sregs))
			fail(c, "%s: cpu%u sregs differ (cr3 0x%llx/0x%llx fs.base 0x%llx/0x%llx apic_base 0x%llx/0x%llx)",
			     what, i, (unsigned long long)x->sregs.cr3,
			     (unsigned long long)y->sregs.cr3, (unsigned long long)x->sregs.fs.base,
			     (unsigned long long)y->sregs.fs.base,
			     (unsigned long long)x->sregs.apic_base,
			     (unsigned long long)y->sregs.apic_base);
		if ((d = first_diff(x->xsave, y->xsave, x->xsave_len)) >= 0)
			fail(c, "%s: cpu%u XSAVE areas differ first at byte %ld", what, i, d);
		if (x->xcrs.nr_xcrs != y->xcrs.nr_xcrs ||
		    memcmp(x->xcrs.xcrs, y->xcrs.xcrs, x->xcrs.nr_xcrs * sizeof(x->xcrs.xcrs[0])))
			fail(c, "%s: cpu%u XCRs differ (XCR0 0x%llx vs 0x%llx)", what, i,
			     (unsigned long long)x->xcrs.xcrs[0].value,
			     (unsigned long long)y->xcrs.xcrs[0].value);
		if (memcmp(x->dbg.db, y->dbg.db, sizeof(x->dbg.db)) || x->dbg.dr6 != y->dbg.dr6 ||
		    x->dbg.dr7 != y->dbg.dr7)
			fail(c, "%s: cpu%u debug registers differ", what, i);
		for (unsigned off = 0; off < KVM_APIC_REG_SIZE; off += 4) {
			uint32_t u = lapic_get(&x->lapic, off), v = lapic_get(&y->lapic, off);

			/* The current count runs down (and restarts at load). */
			if (off == APIC_TMCCT)
				continue;
			if (u != v)
				fail(c, "%s: cpu%u LAPIC register 0x%03x: 0x%x vs 0x%x", what, i,
				     off, u, v);
		}
		if ((d = first_diff(&x->ev, &y->ev, sizeof(x->ev))) >= 0)
			fail(c, "%s: cpu%u vCPU events differ first at byte %ld", what, i, d);
		if (x->mp.mp_state != y->mp.mp_state)
			fail(c, "%s: cpu%u MP state %u vs %u", what, i, x->mp.mp_state,
			     y->mp.mp_state);
		if (x->tsc_khz != y->tsc_khz)
			fail(c, "%s: cpu%u TSC kHz %d vs %d", what, i, x->tsc_khz, y->tsc_khz);
		for (unsigned k = 0; k < c->msrs->nmsrs && k < MAX_MSRS; k++) {
			if (!x->msr_ok[k])
				continue;
			if (!y->msr_ok[k]) {
				fail(c, "%s: cpu%u MSR 0x%x no longer reads", what, i,
				     x->msr_index[k]);
				continue;
			}
			if (x->msr_index[k] == MSR_IA32_TSC) {
				if (absdiff(x->msr_value[k], y->msr_value[k]) > tsc_tol)
					fail(c, "%s: cpu%u TSC 0x%llx vs 0x%llx", what, i,
					     (unsigned long long)x->msr_value[k],
					     (unsigned long long)y->msr_value[k]);
			} else if (x->msr_value[k] != y->msr_value[k]) {
				fail(c, "%s: cpu%u MSR 0x%x: 0x%llx vs 0x%llx", what, i,
				     x->msr_index[k], (unsigned long long)x->msr_value[k],
				     (unsigned long long)y->msr_value[k]);
			}
		}
	}
	for (unsigned i = 0; i < 2; i++)
		if (memcmp(&a->pic[i].chip.pic, &b->pic[i].chip.pic, sizeof(a->pic[i].chip.pic)))
			fail(c, "%s: PIC %s differs (imr 0x%x vs 0x%x)", what, i ? "slave" : "master",
			     a->pic[i].chip.pic.imr, b->pic[i].chip.pic.imr);
	if (memcmp(&a->ioapic.chip.ioapic, &b->ioapic.chip.ioapic, sizeof(a->ioapic.chip.ioapic)))
		fail(c, "%s: IOAPIC differs", what);
	for (unsigned i = 0; i < 3; i++) {
		struct kvm_pit_channel_state x = a->pit.channels[i], y = b->pit.channels[i];

		x.count_load_time = y.count_load_time = 0; /* host time, restarts at load */
		if (memcmp(&x, &y, sizeof(x)))
			fail(c, "%s: PIT channel %u differs (count 0x%x vs 0x%x, mode %u vs %u)",
			     what, i, x.count, y.count, x.mode, y.mode);
	}
	if (a->pit.flags != b->pit.flags)
		fail(c, "%s: PIT flags differ", what);
	if (absdiff(a->clock.clock, b->clock.clock) > TOLERANCE_NS)
		fail(c, "%s: KVM clock %llu vs %llu ns", what, (unsigned long long)a->clock.clock,
		     (unsigned long long)b->clock.clock);
}

/* That VM A really holds the distinctive values: a round trip that lost
 * them all would otherwise pass. */
static void check_distinctive(struct ctx *c, const struct vm_snap *a)
{
	for (unsigned i = 0; i < NCPUS; i++) {
		const struct vcpu_snap *x = &a->cpu[i];
		bool gsbase = false, deadline = false;

		if (x->regs.rip != 0x100000 + i * 0x1000 + 0x42 || x->regs.rflags != 0x246)
			fail(c, "cpu%u: rip/rflags not as set", i);
		if (x->sregs.fs.base != 0x7f0000001000ull + i || x->sregs.cr2 != 0xdead000ull + i)
			fail(c, "cpu%u: sregs not as set", i);
		if (lapic_get(&x->lapic, APIC_TMICT) != (i ? 0 : 0x123456) ||
		    lapic_get(&x->lapic, APIC_LVTT) != (i ? LVTT_CPU1 : LVTT_CPU0))
			fail(c, "cpu%u: LAPIC timer not as set (LVTT 0x%x)", i,
			     lapic_get(&x->lapic, APIC_LVTT));
		if (x->xsave[160] != 0xa0 + i)
			note(c, "cpu%u: XMM0 not as set (this host's KVM_SET_XSAVE)", i);
		if (x->dbg.db[0] != 0x1000 + i || x->dbg.dr7 != 0x10401)
			fail(c, "cpu%u: debug registers not as set", i);
		if (!x->ev.nmi.masked || x->ev.interrupt.shadow != KVM_X86_SHADOW_INT_MOV_SS)
			note(c, "cpu%u: vCPU events not as set (nmi.masked %u, shadow %u)", i,
			     x->ev.nmi.masked, x->ev.interrupt.shadow);
		for (unsigned k = 0; k < c->msrs->nmsrs && k < MAX_MSRS; k++)
			if (x->msr_index[k] == MSR_KERNEL_GS_BASE && x->msr_ok[k] &&
			    x->msr_value[k] == 0xffff888012345000ull + i)
				gsbase = true;
		for (unsigned k = 0; k < c->msrs->nmsrs && k < MAX_MSRS; k++)
			if (x->msr_index[k] == MSR_IA32_TSC_DEADLINE && x->msr_ok[k] &&
			    x->msr_value[k] == (i ? TEST_DEADLINE : 0))
				deadline = true;
		if (!gsbase)
			fail(c, "cpu%u: MSR_KERNEL_GS_BASE not as set", i);
		if (!deadline)
			fail(c, "cpu%u: MSR_IA32_TSC_DEADLINE not as set", i);
	}
	if (a->cpu[0].mp.mp_state != KVM_MP_STATE_HALTED)
		note(c, "cpu0: MP state %u, not HALTED", a->cpu[0].mp.mp_state);
	if (a->pic[0].chip.pic.imr != 0xa5 || a->pic[1].chip.pic.imr != 0x5a)
		fail(c, "PIC masks not as set");
	if (a->ioapic.chip.ioapic.redirtbl[4].bits != ((1ull << 56) | (1u << 16) | 0x34))
		fail(c, "IOAPIC pin 4 not as set");
	if (a->pit.channels[1].count != 0x4321 || a->pit.channels[2].count != 0x1234)
		fail(c, "PIT counts not as set");
	if (a->clock.clock < TEST_CLOCK || a->clock.clock > TEST_CLOCK + TOLERANCE_NS)
		fail(c, "KVM clock not as set");
}

/* ---- the stream ---- */

static int save_all(struct ctx *c, struct tvm *t, const struct kvm_cpuid2 *cpuid, void **out,
		    size_t *len)
{
	struct state_writer w;
	int e = state_writer_init(&w);

	if (!e) {
		x86_cpuid_save(cpuid, &w);
		for (unsigned i = 0; i < NCPUS; i++)
			x86_vcpu_save(c->kvm_fd, t->vcpu[i], i, &w);
		x86_vm_save(c->kvm_fd, t->vm_fd, &w);
		e = state_writer_finish(&w, out, len);
	}
	state_writer_free(&w);
	return e;
}

/* Load every part, stopping at the first refusal, as a restore does. */
static int load_all(struct ctx *c, struct tvm *t, struct state_reader *r)
{
	int e = 0;

	for (unsigned i = 0; i < NCPUS && !e; i++)
		e = x86_vcpu_load(c->kvm_fd, t->vcpu[i], i, r);
	if (!e)
		e = x86_vm_load(c->kvm_fd, t->vm_fd, r);
	return e;
}

/* @fdt (its totalsize) with a valid footer, as state_writer_finish makes it. */
static void *wrap(const void *fdt, size_t *len)
{
	struct state_footer f = { .magic = STATE_FOOTER_MAGIC };
	size_t blob = fdt_totalsize(fdt);
	uint8_t *buf = malloc(blob + sizeof(f));

	if (!buf)
		die("malloc");
	memcpy(buf, fdt, blob);
	f.format = htole32(STATE_FORMAT_VERSION);
	f.blob_len = htole64(blob);
	f.crc32 = htole32((uint32_t)crc32(0L, buf, (uInt)blob));
	memcpy(buf + blob, &f, sizeof(f));
	*len = blob + sizeof(f);
	return buf;
}

enum damage { TRUNC_BYTE, TRUNC_CELL, EMPTY, ALL_ONES, RANDOM, N_DAMAGE };

static const char *const damage_names[] = { "truncated by a byte", "truncated by a cell",
					    "emptied", "all 0xff", "random bytes" };

/* A copy of @orig with property @name of node @path damaged as @how says;
 * NULL when the damage does not apply (an empty property cannot shrink). */
static void *damage(const void *orig, const char *path, const char *name, enum damage how,
		    unsigned *seed, size_t *len)
{
	size_t cap = fdt_totalsize(orig) + 4096;
	void *fdt = malloc(cap);
	const uint8_t *v;
	uint8_t *nv = NULL;
	int node, plen, nlen;
	void *out = NULL;

	if (!fdt)
		die("malloc");
	if (fdt_open_into(orig, fdt, (int)cap) < 0)
		goto done;
	node = fdt_path_offset(fdt, path);
	v = node >= 0 ? fdt_getprop(fdt, node, name, &plen) : NULL;
	if (!v)
		goto done;
	nlen = plen;
	switch (how) {
	case TRUNC_BYTE:
		nlen = plen - 1;
		break;
	case TRUNC_CELL:
		nlen = plen >= 4 ? plen - 4 : -1;
		break;
	case EMPTY:
		nlen = plen ? 0 : -1;
		break;
	default:
		break;
	}
	if (nlen < 0)
		goto done;
	nv = malloc((size_t)plen + 1);
	if (!nv)
		die("malloc");
	memcpy(nv, v, (size_t)plen);
	for (int i = 0; i < nlen; i++) {
		if (how == ALL_ONES)
			nv[i] = 0xff;
		else if (how == RANDOM)
			nv[i] = (uint8_t)rand_r(seed);
	}
	if (fdt_setprop(fdt, node, name, nv, nlen) < 0 || fdt_pack(fdt) < 0)
		goto done;
	out = wrap(fdt, len);
done:
	free(nv);
	free(fdt);
	return out;
}

struct prop_ref {
	char path[STATE_PATH_MAX];
	char name[64];
};

/* Every (node, property) of @fdt into *@out; returns the count. */
static size_t list_props(const void *fdt, struct prop_ref **out)
{
	size_t n = 0, cap = 64;
	struct prop_ref *l = malloc(cap * sizeof(*l));
	int depth = 0, node, prop;

	if (!l)
		die("malloc");
	for (node = fdt_next_node(fdt, -1, &depth); node >= 0;
	     node = fdt_next_node(fdt, node, &depth)) {
		fdt_for_each_property_offset(prop, fdt, node) {
			const char *name;

			if (!fdt_getprop_by_offset(fdt, prop, &name, NULL))
				continue;
			if (n == cap) {
				cap *= 2;
				l = realloc(l, cap * sizeof(*l));
				if (!l)
					die("realloc");
			}
			if (fdt_get_path(fdt, node, l[n].path, sizeof(l[n].path)) < 0)
				continue;
			snprintf(l[n].name, sizeof(l[n].name), "%s", name);
			n++;
		}
	}
	*out = l;
	return n;
}

/* Every property of @stream damaged every way, each loaded into the scratch
 * VM @t: truncations must be refused with a message; nothing may crash. */
static void test_damage(struct ctx *c, const void *stream, size_t stream_len, struct tvm *t)
{
	struct state_reader r;
	struct prop_ref *props;
	struct kvm_cpuid2 *cpuid = cpuid_alloc();
	unsigned seed = 12345, tried = 0, refused = 0;
	size_t n;

	if (state_reader_open(&r, stream, stream_len)) {
		fail(c, "the good stream does not open: %s", r.msg);
		free(cpuid);
		return;
	}
	n = list_props(r.fdt, &props);
	for (size_t p = 0; p < n; p++) {
		for (int how = 0; how < N_DAMAGE; how++) {
			size_t len;
			void *bad = damage(r.fdt, props[p].path, props[p].name, (enum damage)how,
					   &seed, &len);
			struct state_reader br;
			int e;

			if (!bad)
				continue;
			tried++;
			e = state_reader_open(&br, bad, len);
			if (e) {
				fail(c, "%s:%s %s: the reader refused the structure: %s",
				     props[p].path, props[p].name, damage_names[how], br.msg);
				free(bad);
				continue;
			}
			cpuid->nent = CPUID_MAX;
			e = x86_cpuid_load(c->kvm_fd, &br, cpuid, CPUID_MAX);
			if (!e)
				e = load_all(c, t, &br);
			if (e) {
				refused++;
				if (!br.err || !br.msg[0])
					fail(c, "%s:%s %s: refused (%d) without a message",
					     props[p].path, props[p].name, damage_names[how], e);
			} else if (how <= EMPTY) {
				fail(c, "%s:%s %s: accepted", props[p].path, props[p].name,
				     damage_names[how]);
			}
			if (how == TRUNC_BYTE && p < 3)
				printf("  e.g. %s:%s %s: %s\n", props[p].path, props[p].name,
				       damage_names[how], br.msg);
			free(bad);
		}
	}
	printf("damage: %zu properties, %u damaged streams, %u refused\n", n, tried, refused);
	free(props);
	free(cpuid);
}

/* @stream with property @name of node @path set to @data (@len bytes),
 * footer made valid, loaded (CPUID, vCPUs, VM) into @t.  Returns the first
 * loader's error or 0; its message goes to @msg. */
static int load_modified(struct ctx *c, const void *stream, size_t stream_len, struct tvm *t,
			 const char *path, const char *name, const void *data, size_t len,
			 char *msg, size_t msglen)
{
	struct state_reader r;
	struct kvm_cpuid2 *cpuid = cpuid_alloc();
	size_t cap = stream_len + len + 4096, out_len;
	void *fdt = malloc(cap), *out;
	int node, e;

	if (!fdt)
		die("malloc");
	if (state_reader_open(&r, stream, stream_len) || fdt_open_into(r.fdt, fdt, (int)cap) < 0)
		die("reopening the stream");
	node = fdt_path_offset(fdt, path);
	if (node < 0 || fdt_setprop(fdt, node, name, data, (int)len) < 0 || fdt_pack(fdt) < 0) {
		printf("FAIL: cannot modify %s:%s\n", path, name);
		exit(1);
	}
	out = wrap(fdt, &out_len);
	e = state_reader_open(&r, out, out_len);
	if (!e)
		e = x86_cpuid_load(c->kvm_fd, &r, cpuid, CPUID_MAX);
	if (!e)
		e = load_all(c, t, &r);
	snprintf(msg, msglen, "%s", r.msg);
	free(out);
	free(fdt);
	free(cpuid);
	return e;
}

/* A property of @stream as a copy (@len bytes); the caller frees. */
static void *prop_copy(const void *stream, size_t stream_len, const char *path,
		       const char *name, size_t extra, size_t *len)
{
	struct state_reader r;
	const void *v;
	void *copy;
	int node, l;

	if (state_reader_open(&r, stream, stream_len))
		die("reopening the stream");
	node = fdt_path_offset(r.fdt, path);
	v = node >= 0 ? fdt_getprop(r.fdt, node, name, &l) : NULL;
	if (!v) {
		printf("FAIL: no %s:%s in the stream\n", path, name);
		exit(1);
	}
	copy = calloc(1, (size_t)l + extra);
	if (!copy)
		die("calloc");
	memcpy(copy, v, (size_t)l);
	*len = (size_t)l;
	return copy;
}

/* One modified property: refused with @want in the message, or (@want
 * NULL) accepted. */
static void expect_load(struct ctx *c, const void *stream, size_t stream_len, struct tvm *t,
			const char *path, const char *name, const void *data, size_t len,
			const char *want, const char *what)
{
	char msg[256];
	int e = load_modified(c, stream, stream_len, t, path, name, data, len, msg, sizeof(msg));

	if (!want && e)
		fail(c, "%s: refused: %s", what, msg);
	else if (want && !e)
		fail(c, "%s: accepted", what);
	else if (want && !strstr(msg, want))
		fail(c, "%s: refused, but the message lacks '%s': %s", what, want, msg);
	else
		printf("%s: %s%s\n", what, want ? "refused: " : "accepted", want ? msg : "");
}

/* Values in range for their property's length but wrong: each must be
 * refused with a message that says what is wrong; tolerable differences
 * (a TSC within 250 ppm, a longer XSAVE area whose extra bytes are zero)
 * must be accepted. */
static void test_hostile_values(struct ctx *c, const void *stream, size_t stream_len,
				struct tvm *t)
{
	int xsize = ioctl(c->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	bool tsc_control = ioctl(c->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_CONTROL) > 0;
	int khz = ioctl(t->vcpu[0], KVM_GET_TSC_KHZ, 0);
	fdt32_t v32;
	fdt64_t v64;
	uint8_t *p;
	size_t len;

	if (khz > 0) {
		v32 = cpu_to_fdt32((uint32_t)khz + (uint32_t)khz / 10000); /* 100 ppm */
		expect_load(c, stream, stream_len, t, "/cpus/cpu@0", "tsc-khz", &v32, 4, NULL,
			    "TSC 100 ppm off");
		v32 = cpu_to_fdt32((uint32_t)khz + (uint32_t)khz / 100); /* 1% */
		expect_load(c, stream, stream_len, t, "/cpus/cpu@0", "tsc-khz", &v32, 4,
			    tsc_control ? NULL : "ppm", "TSC 1% off");
	} else {
		note(c, "KVM_GET_TSC_KHZ failed: TSC frequency checks not tested");
	}

	p = prop_copy(stream, stream_len, "/cpus/cpu@0", "xsave", 64, &len);
	if (xsize <= (int)len) {
		expect_load(c, stream, stream_len, t, "/cpus/cpu@0", "xsave", p, len + 64, NULL,
			    "XSAVE area 64 zero bytes longer");
		p[len + 10] = 1;
		expect_load(c, stream, stream_len, t, "/cpus/cpu@0", "xsave", p, len + 64,
			    "beyond this host", "XSAVE area with state beyond this host's");
	}
	free(p);

	p = prop_copy(stream, stream_len, "/cpus/cpu@1", "msr-index", 0, &len);
	v32 = cpu_to_fdt32(0xdeadbeef);
	memcpy(p, &v32, 4);
	expect_load(c, stream, stream_len, t, "/cpus/cpu@1", "msr-index", p, len,
		    "MSR 0xdeadbeef", "an MSR KVM does not know");
	free(p);

	v32 = cpu_to_fdt32(KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_TRIPLE_FAULT);
	expect_load(c, stream, stream_len, t, "/cpus/cpu@0", "event-flags", &v32, 4, "0x20",
		    "an unknown vCPU event flag");

	p = prop_copy(stream, stream_len, "/cpus/cpu@0", "cs", 0, &len);
	v32 = cpu_to_fdt32(4);
	memcpy(p + 6 * 4, &v32, 4); /* dpl */
	expect_load(c, stream, stream_len, t, "/cpus/cpu@0", "cs", p, len, "'cs' cell 6",
		    "a segment with DPL 4");
	free(p);

	v32 = cpu_to_fdt32(0);
	expect_load(c, stream, stream_len, t, "/cpus/cpu@1", "reg", &v32, 4, "reg",
		    "cpu@1 saying it is vCPU 0");

	v64 = cpu_to_fdt64(X86_IOAPIC_BASE + 0x1000);
	expect_load(c, stream, stream_len, t, "/kvm/ioapic", "base-address", &v64, 8,
		    "base address", "a moved IOAPIC");

	p = prop_copy(stream, stream_len, "/kvm/pit", "count", 0, &len);
	v32 = cpu_to_fdt32(0x10001);
	memcpy(p, &v32, 4);
	expect_load(c, stream, stream_len, t, "/kvm/pit", "count", p, len, "'count' cell 0",
		    "a PIT count above 0x10000");
	free(p);

	v32 = cpu_to_fdt32(2);
	expect_load(c, stream, stream_len, t, "/kvm/pit", "version", &v32, 4, "version 2",
		    "a PIT node from a newer vmrun");

	v32 = cpu_to_fdt32(0x100);
	expect_load(c, stream, stream_len, t, "/kvm/pic-master", "imr", &v32, 4, "'imr'",
		    "a PIC mask wider than 8 bits");
}

static uint64_t prop_u64(const void *stream, size_t stream_len, const char *path,
			 const char *name)
{
	size_t len;
	uint8_t *p = prop_copy(stream, stream_len, path, name, 0, &len);
	uint64_t v = len == 8 ? fdt64_ld((const fdt64_t *)p) : 0;

	free(p);
	return v;
}

/* KVM_CLOCK_REALTIME: a save whose wall-clock stamp is 100 s older must
 * come back with the guest clock 100 s further on (the guest slept through
 * the time between save and restore); without it, the clock goes on from
 * the saved value. */
static void test_clock_realtime(struct ctx *c, const void *stream, size_t stream_len,
				struct tvm *t)
{
	int caps = ioctl(c->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_ADJUST_CLOCK);
	size_t len;
	uint8_t *fp = prop_copy(stream, stream_len, "/kvm/clock", "flags", 0, &len);
	uint32_t flags = len == 4 ? fdt32_ld((const fdt32_t *)fp) : 0;
	uint64_t clock = prop_u64(stream, stream_len, "/kvm/clock", "clock");
	uint64_t realtime = prop_u64(stream, stream_len, "/kvm/clock", "realtime");
	const uint64_t back = 100000000000ull;
	struct kvm_clock_data now;
	fdt64_t v64 = cpu_to_fdt64(realtime - back);
	char msg[256];
	bool expect = (flags & KVM_CLOCK_REALTIME) && caps > 0 && (caps & KVM_CLOCK_REALTIME);
	uint64_t ahead;

	free(fp);
	if (load_modified(c, stream, stream_len, t, "/kvm/clock", "realtime", &v64, 8, msg,
			  sizeof(msg))) {
		fail(c, "clock: a load with an older realtime stamp: %s", msg);
		return;
	}
	memset(&now, 0, sizeof(now));
	xioctl(t->vm_fd, KVM_GET_CLOCK, &now, "KVM_GET_CLOCK");
	ahead = now.clock > clock ? now.clock - clock : 0;
	if (expect && (ahead < back || ahead > back + TOLERANCE_NS))
		fail(c, "clock: KVM_CLOCK_REALTIME: %llu ns ahead of the save, expected %llu",
		     (unsigned long long)ahead, (unsigned long long)back);
	else if (!expect && ahead > TOLERANCE_NS)
		fail(c, "clock: without KVM_CLOCK_REALTIME the clock jumped %llu ns",
		     (unsigned long long)ahead);
	else
		printf("clock: %s: guest clock %llu ms ahead of the save\n",
		       expect ? "KVM_CLOCK_REALTIME, stamp 100 s older" : "plain clock",
		       (unsigned long long)(ahead / 1000000));
	if (!expect)
		note(c, "KVM_CLOCK_REALTIME not in the save (flags 0x%x) or not on this host (0x%x)",
		     flags, caps);
}

/* A table asking for a leaf 7 feature this host lacks must be refused,
 * naming the leaf, register and bit. */
static void test_cpuid_refusal(struct ctx *c)
{
	struct kvm_cpuid2 *t = cpuid_alloc(), *out = cpuid_alloc();
	struct kvm_cpuid_entry2 *leaf7 = NULL;
	struct state_writer w;
	struct state_reader r;
	void *buf = NULL;
	size_t len;
	uint32_t bit = 0;
	char want[64];

	memcpy(t, c->cpuid, sizeof(*t) + c->cpuid->nent * sizeof(t->entries[0]));
	for (uint32_t i = 0; i < t->nent; i++)
		if (t->entries[i].function == 7 && t->entries[i].index == 0)
			leaf7 = &t->entries[i];
	for (unsigned b = 0; leaf7 && b < 32 && !bit; b++)
		if (!(leaf7->ebx & (1u << b)))
			bit = 1u << b;
	if (!bit) {
		note(c, "no leaf 7 or no clear bit in its EBX: CPUID refusal not tested");
		goto out;
	}
	leaf7->ebx |= bit;
	if (state_writer_init(&w))
		die("state_writer_init");
	x86_cpuid_save(t, &w);
	if (state_writer_finish(&w, &buf, &len))
		die("state_writer_finish");
	state_writer_free(&w);
	if (state_reader_open(&r, buf, len))
		die("state_reader_open");
	snprintf(want, sizeof(want), "leaf 0x7.0 ebx 0x%08x", bit);
	if (!x86_cpuid_load(c->kvm_fd, &r, out, CPUID_MAX))
		fail(c, "CPUID with leaf 7 EBX bit 0x%x (unsupported) was accepted", bit);
	else if (!strstr(r.msg, want))
		fail(c, "CPUID refusal does not name '%s': %s", want, r.msg);
	else
		printf("cpuid refusal: %s\n", r.msg);
	/* Too many entries for the caller's room. */
	if (state_reader_open(&r, buf, len))
		die("state_reader_open");
	if (!x86_cpuid_load(c->kvm_fd, &r, out, 3))
		fail(c, "a CPUID table larger than max_entries was accepted");
out:
	free(buf);
	free(out);
	free(t);
}

/* With an argument, the saved stream is also written to that file (for
 * `dtc -I dtb -O dts FILE`; dtc ignores the footer). */
int main(int argc, char **argv)
{
	struct ctx c = { .kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC) };
	struct kvm_msr_list probe = { 0 };
	struct kvm_cpuid2 *loaded, *saved;
	struct tvm a, b, scratch;
	struct vm_snap *sa = malloc(sizeof(*sa)), *sb = malloc(sizeof(*sb)),
		       *sb2 = malloc(sizeof(*sb2));
	struct state_reader r;
	void *stream = NULL;
	size_t len;
	int e;

	if (c.kvm_fd < 0) {
		printf("SKIP: /dev/kvm: %s\n", strerror(errno));
		return 77;
	}
	if (!sa || !sb || !sb2)
		die("malloc");
	c.cpuid = cpuid_alloc();
	xioctl(c.kvm_fd, KVM_GET_SUPPORTED_CPUID, c.cpuid, "KVM_GET_SUPPORTED_CPUID");
	if (ioctl(c.kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
		die("KVM_GET_MSR_INDEX_LIST");
	c.msrs = calloc(1, sizeof(*c.msrs) + probe.nmsrs * sizeof(c.msrs->indices[0]));
	if (!c.msrs)
		die("calloc");
	c.msrs->nmsrs = probe.nmsrs;
	xioctl(c.kvm_fd, KVM_GET_MSR_INDEX_LIST, c.msrs, "KVM_GET_MSR_INDEX_LIST");

	/* VM A, distinctive state, saved with the CPUID table as vmrun keeps
	 * it (patched for its last vCPU: the hypervisor and HTT bits). */
	tvm_create(&c, &a, c.cpuid);
	for (unsigned i = 0; i < NCPUS; i++)
		set_vcpu_state(&c, a.vcpu[i], i);
	set_vm_state(&a);
	saved = cpuid_alloc();
	memcpy(saved, c.cpuid, sizeof(*saved) + c.cpuid->nent * sizeof(saved->entries[0]));
	x86_cpuid_patch(saved, NCPUS - 1, NCPUS);
	e = save_all(&c, &a, saved, &stream, &len);
	if (e) {
		fail(&c, "save: %s", strerror(-e));
		return 1;
	}
	snap_vm(&c, &a, sa);
	check_distinctive(&c, sa);
	printf("saved: %zu bytes of state\n", len);
	if (argc > 1) {
		FILE *f = fopen(argv[1], "wb");

		if (!f || fwrite(stream, 1, len, f) != len || fclose(f))
			die(argv[1]);
	}

	/* VM B: CPUID from the stream, then the state. */
	if (state_reader_open(&r, stream, len)) {
		fail(&c, "state_reader_open: %s", r.msg);
		return 1;
	}
	loaded = cpuid_alloc();
	e = x86_cpuid_load(c.kvm_fd, &r, loaded, CPUID_MAX);
	if (e) {
		fail(&c, "x86_cpuid_load: %s", r.msg);
		return 1;
	}
	if (loaded->nent != saved->nent ||
	    memcmp(loaded->entries, saved->entries, loaded->nent * sizeof(loaded->entries[0])))
		fail(&c, "the CPUID table does not round-trip (%u vs %u entries)", loaded->nent,
		     saved->nent);
	tvm_create(&c, &b, loaded);
	e = load_all(&c, &b, &r);
	if (e) {
		fail(&c, "load into B: %s", r.msg);
		return 1;
	}
	snap_vm(&c, &b, sb);
	compare_vm(&c, "A -> B", sa, sb);

	/* The same stream into B again. */
	e = load_all(&c, &b, &r);
	if (e)
		fail(&c, "second load into B: %s", r.msg);
	snap_vm(&c, &b, sb2);
	compare_vm(&c, "B, loaded twice", sb, sb2);

	test_cpuid_refusal(&c);
	tvm_create(&c, &scratch, c.cpuid);
	test_hostile_values(&c, stream, len, &scratch);
	test_clock_realtime(&c, stream, len, &scratch);
	test_damage(&c, stream, len, &scratch);

	tvm_destroy(&scratch);
	tvm_destroy(&b);
	tvm_destroy(&a);
	free(stream);
	free(loaded);
	free(saved);
	free(c.cpuid);
	free(c.msrs);
	free(sa);
	free(sb);
	free(sb2);
	close(c.kvm_fd);
	printf("%s: %d failure(s), %d note(s)\n", c.failures ? "FAIL" : "PASS", c.failures,
	       c.notes);
	return c.failures ? 1 : 0;
}

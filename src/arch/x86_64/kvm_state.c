// SPDX-License-Identifier: MIT
/*
 * x86 KVM state in the state stream (include/vmrun/x86_state.h).
 *
 * Small kernel structs are stored field by field as named properties, so
 * that `dtc -I dtb -O dts` shows an operator rip, cr3 or an IOAPIC pin
 * without a decoder; the two big opaque ones (the LAPIC's 1 KiB register
 * page and the XSAVE area) are stored as raw bytes.  Layouts of the array
 * properties:
 *
 *   segments cs ds es fs gs ss tr ldt   u32 x13: base-hi base-lo limit
 *       selector type present dpl db s l g avl unusable
 *   gdt, idt                            u32 x3: base-hi base-lo limit
 *   exception   u32 x6: injected nr has-error-code pending error-code has-payload
 *   interrupt   u32 x4: injected nr soft shadow
 *   nmi         u32 x3: injected pending masked
 *   smi         u32 x4: smm pending smm-inside-nmi latched-init
 *   db          u64 x4: DR0-DR3
 *   msr-index/msr-value, xcr-index/xcr-value: parallel arrays (u32, u64)
 *   /kvm/pit: each channel field an array of 3 cells (channel 0, 1, 2)
 *   /kvm/ioapic: redirtbl u64 x24
 *   /cpus: cpuid-function, -index, -flags, -eax, -ebx, -ecx, -edx
 *
 * Scalars are u32 or u64 by the kernel field's width; kernel fields keep
 * their names with '-' for '_' (but the PIT's "status", called "status-byte",
 * and the events' "flags", called "event-flags").
 *
 * Loading trusts nothing: every property's presence and exact length is
 * checked by the state reader, every count taken from a length is bounded
 * before it sizes anything, and every value that must fit a narrower kernel
 * field is range-checked, so a hostile stream gets a one-line refusal in
 * r->msg, never an out-of-bounds access.  The loaders read every property
 * the savers write, so a damaged property is always noticed.
 */
#include "vmrun/x86_state.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vmrun/log.h"
#include "vmrun/state.h"
#include "vmrun/x86.h"

/* Node versions: bump one when its properties change meaning, and keep
 * loading the older layout for a release (STATE_FORMAT_OLDEST's rule). */
#define X86_CPUS_VERSION 1
#define X86_VCPU_VERSION 1
#define X86_PIC_VERSION 1
#define X86_IOAPIC_VERSION 1
#define X86_PIT_VERSION 1
#define X86_CLOCK_VERSION 1

#define MSR_IA32_TSC 0x00000010u
#define MSR_IA32_TSC_DEADLINE 0x000006e0u

/* KVM refuses more than 255 MSRs per KVM_GET/SET_MSRS (MAX_IO_MSRS). */
#define X86_MSR_BATCH 64u
/* Far above any KVM's list (a few hundred): bounds a hostile count. */
#define X86_MAX_MSRS 4096u
/* The XSAVE area: 4 KiB, more with AMX (11 KiB); 1 MiB bounds a hostile one. */
#define X86_XSAVE_LEGACY 4096u
#define X86_XSAVE_MAX (1u << 20)
/* KVM itself uses 250 ppm: a vCPU within it of the host runs unscaled. */
#define X86_TSC_TOLERANCE_PPM 250u
#define X86_CPUID_SUPPORTED_MAX 4096u

#define CPUID_1_ECX_TSC_DEADLINE (1u << 24)
#define CPUID_1_ECX_OSXSAVE (1u << 27)
#define CPUID_1_ECX_HYPERVISOR (1u << 31)
#define CPUID_1_EDX_HTT (1u << 28)
#define CPUID_7_ECX_OSPKE (1u << 4)

#define EVENT_FLAGS_LOADABLE                                                    \
	(KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR |   \
	 KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM)

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* A named field of a kernel struct: where it is and how wide. */
struct field {
	const char *name;
	size_t off;
	unsigned size; /* 1, 2, 4 or 8 bytes */
};

#define FIELD(type, member, prop) { prop, offsetof(type, member), sizeof(((type *)0)->member) }

static const struct field regs_fields[] = {
	FIELD(struct kvm_regs, rax, "rax"), FIELD(struct kvm_regs, rbx, "rbx"),
	FIELD(struct kvm_regs, rcx, "rcx"), FIELD(struct kvm_regs, rdx, "rdx"),
	FIELD(struct kvm_regs, rsi, "rsi"), FIELD(struct kvm_regs, rdi, "rdi"),
	FIELD(struct kvm_regs, rsp, "rsp"), FIELD(struct kvm_regs, rbp, "rbp"),
	FIELD(struct kvm_regs, r8, "r8"), FIELD(struct kvm_regs, r9, "r9"),
	FIELD(struct kvm_regs, r10, "r10"), FIELD(struct kvm_regs, r11, "r11"),
	FIELD(struct kvm_regs, r12, "r12"), FIELD(struct kvm_regs, r13, "r13"),
	FIELD(struct kvm_regs, r14, "r14"), FIELD(struct kvm_regs, r15, "r15"),
	FIELD(struct kvm_regs, rip, "rip"), FIELD(struct kvm_regs, rflags, "rflags"),
};

static const struct field sregs_u64_fields[] = {
	FIELD(struct kvm_sregs, cr0, "cr0"), FIELD(struct kvm_sregs, cr2, "cr2"),
	FIELD(struct kvm_sregs, cr3, "cr3"), FIELD(struct kvm_sregs, cr4, "cr4"),
	FIELD(struct kvm_sregs, cr8, "cr8"), FIELD(struct kvm_sregs, efer, "efer"),
	FIELD(struct kvm_sregs, apic_base, "apic-base"),
};

static const struct field sregs_segments[] = {
	FIELD(struct kvm_sregs, cs, "cs"), FIELD(struct kvm_sregs, ds, "ds"),
	FIELD(struct kvm_sregs, es, "es"), FIELD(struct kvm_sregs, fs, "fs"),
	FIELD(struct kvm_sregs, gs, "gs"), FIELD(struct kvm_sregs, ss, "ss"),
	FIELD(struct kvm_sregs, tr, "tr"), FIELD(struct kvm_sregs, ldt, "ldt"),
};

static const struct field sregs_dtables[] = {
	FIELD(struct kvm_sregs, gdt, "gdt"), FIELD(struct kvm_sregs, idt, "idt"),
};

static const struct field pic_fields[] = {
	FIELD(struct kvm_pic_state, last_irr, "last-irr"),
	FIELD(struct kvm_pic_state, irr, "irr"),
	FIELD(struct kvm_pic_state, imr, "imr"),
	FIELD(struct kvm_pic_state, isr, "isr"),
	FIELD(struct kvm_pic_state, priority_add, "priority-add"),
	FIELD(struct kvm_pic_state, irq_base, "irq-base"),
	FIELD(struct kvm_pic_state, read_reg_select, "read-reg-select"),
	FIELD(struct kvm_pic_state, poll, "poll"),
	FIELD(struct kvm_pic_state, special_mask, "special-mask"),
	FIELD(struct kvm_pic_state, init_state, "init-state"),
	FIELD(struct kvm_pic_state, auto_eoi, "auto-eoi"),
	FIELD(struct kvm_pic_state, rotate_on_auto_eoi, "rotate-on-auto-eoi"),
	FIELD(struct kvm_pic_state, special_fully_nested_mode, "special-fully-nested-mode"),
	FIELD(struct kvm_pic_state, init4, "init4"),
	FIELD(struct kvm_pic_state, elcr, "elcr"),
	FIELD(struct kvm_pic_state, elcr_mask, "elcr-mask"),
};

/* The PIT channel fields but count_load_time (a host ktime: saved for the
 * operator, ignored by KVM_SET_PIT2, which restarts each count).  "status"
 * is called "status-byte": dtc wants a property named status to be a
 * string. */
static const struct field pit_fields[] = {
	FIELD(struct kvm_pit_channel_state, count, "count"),
	FIELD(struct kvm_pit_channel_state, latched_count, "latched-count"),
	FIELD(struct kvm_pit_channel_state, count_latched, "count-latched"),
	FIELD(struct kvm_pit_channel_state, status_latched, "status-latched"),
	FIELD(struct kvm_pit_channel_state, status, "status-byte"),
	FIELD(struct kvm_pit_channel_state, read_state, "read-state"),
	FIELD(struct kvm_pit_channel_state, write_state, "write-state"),
	FIELD(struct kvm_pit_channel_state, write_latch, "write-latch"),
	FIELD(struct kvm_pit_channel_state, rw_mode, "rw-mode"),
	FIELD(struct kvm_pit_channel_state, mode, "mode"),
	FIELD(struct kvm_pit_channel_state, bcd, "bcd"),
	FIELD(struct kvm_pit_channel_state, gate, "gate"),
};

static uint64_t field_load(const void *base, const struct field *f)
{
	const uint8_t *p = (const uint8_t *)base + f->off;
	uint64_t v64;
	uint32_t v32;
	uint16_t v16;

	switch (f->size) {
	case 1:
		return *p;
	case 2:
		memcpy(&v16, p, 2);
		return v16;
	case 4:
		memcpy(&v32, p, 4);
		return v32;
	default:
		memcpy(&v64, p, 8);
		return v64;
	}
}

static void field_store(void *base, const struct field *f, uint64_t v)
{
	uint8_t *p = (uint8_t *)base + f->off;
	uint32_t v32 = (uint32_t)v;
	uint16_t v16 = (uint16_t)v;

	switch (f->size) {
	case 1:
		*p = (uint8_t)v;
		break;
	case 2:
		memcpy(p, &v16, 2);
		break;
	case 4:
		memcpy(p, &v32, 4);
		break;
	default:
		memcpy(p, &v, 8);
		break;
	}
}

/* The largest value a field of @size bytes holds. */
static uint64_t field_max(unsigned size)
{
	return size >= 8 ? UINT64_MAX : (1ull << (size * 8)) - 1;
}

/* ---- small helpers ---- */

/* An ioctl on the save path: 0, or -errno after logging @what. */
static int save_ioctl(int fd, unsigned long req, void *arg, const char *where, const char *what)
{
	if (ioctl(fd, req, arg) < 0) {
		int e = -errno;

		log_error("%s: %s: %s", where, what, strerror(-e));
		return e;
	}
	return 0;
}

/* An ioctl on the load path: 0, or -errno recorded in @r naming @what. */
static int load_ioctl(struct state_reader *r, int fd, unsigned long req, void *arg,
		      const char *where, const char *what)
{
	if (ioctl(fd, req, arg) < 0) {
		int e = -errno;

		return state_reject(r, e, "state: %s: %s refused: %s", where, what, strerror(-e));
	}
	return 0;
}

/* The number of @cell-byte cells in array property @name, at most @max.
 * Returns 0 or -errno (recorded in @r). */
static int get_count(struct state_reader *r, int node, const char *where, const char *name,
		     size_t cell, size_t max, size_t *n)
{
	const void *p;
	size_t len;
	int e;

	*n = 0;
	e = state_get_blob(r, node, name, cell * max, &p, &len);
	if (e)
		return e;
	if (len % cell)
		return state_reject(r, -EINVAL,
				    "state: %s: '%s' has %zu bytes, not whole %zu-byte cells",
				    where, name, len, cell);
	*n = len / cell;
	return 0;
}

/* A u32 array of exactly @n cells, each at most @max. */
static int get_u32s_max(struct state_reader *r, int node, const char *where, const char *name,
			uint32_t *out, size_t n, uint32_t max)
{
	int e = state_get_u32s(r, node, name, out, n);

	if (e)
		return e;
	for (size_t i = 0; i < n; i++)
		if (out[i] > max)
			return state_reject(r, -EINVAL,
					    "state: %s: '%s' cell %zu = %u is above %u",
					    where, name, i, out[i], max);
	return 0;
}

/* Fields of @base listed in @f, each its own property. */
static void put_fields(struct state_writer *w, const void *base, const struct field *f, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (f[i].size == 8)
			state_put_u64(w, f[i].name, field_load(base, &f[i]));
		else
			state_put_u32(w, f[i].name, (uint32_t)field_load(base, &f[i]));
	}
}

static int get_fields(struct state_reader *r, int node, void *base, const struct field *f,
		      size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t v64;
		uint32_t v32;
		int e;

		if (f[i].size == 8) {
			e = state_get_u64(r, node, f[i].name, &v64);
		} else {
			e = state_get_u32_range(r, node, f[i].name, 0,
						(uint32_t)field_max(f[i].size), &v32);
			v64 = v32;
		}
		if (e)
			return e;
		field_store(base, &f[i], v64);
	}
	return 0;
}

/* ---- CPUID ---- */

/* The table's columns, one u32 array each, in kvm_cpuid_entry2's order. */
static const char *const cpuid_props[] = {
	"cpuid-function", "cpuid-index", "cpuid-flags", "cpuid-eax",
	"cpuid-ebx", "cpuid-ecx", "cpuid-edx",
};

void x86_cpuid_save(const struct kvm_cpuid2 *cpuid, struct state_writer *w)
{
	size_t n = cpuid->nent;
	uint32_t *v;

	if (w->err)
		return;
	v = malloc((n ? n : 1) * sizeof(*v));
	if (!v) {
		state_fail(w, -ENOMEM);
		return;
	}
	state_begin(w, X86_CPUS_VERSION, "/cpus");
	/* As a device tree's /cpus has them, for each cpu@N's "reg" = <N>:
	 * dtc checks them. */
	state_put_u32(w, "#address-cells", 1);
	state_put_u32(w, "#size-cells", 0);
	for (size_t k = 0; k < ARRAY_SIZE(cpuid_props); k++) {
		for (size_t i = 0; i < n; i++) {
			const struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
			const uint32_t cells[] = { e->function, e->index, e->flags, e->eax,
						   e->ebx, e->ecx, e->edx };

			v[i] = cells[k];
		}
		state_put_u32s(w, cpuid_props[k], v, n);
	}
	free(v);
}

/* KVM_GET_SUPPORTED_CPUID, grown until it fits.  The caller frees. */
static int cpuid_get_supported(int kvm_fd, struct kvm_cpuid2 **out)
{
	for (unsigned n = 256; n <= X86_CPUID_SUPPORTED_MAX; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));

		if (!c)
			return -ENOMEM;
		c->nent = n;
		int e;

		if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
			*out = c;
			return 0;
		}
		e = -errno;
		free(c);
		if (e != -E2BIG)
			return e;
	}
	return -E2BIG;
}

static const struct kvm_cpuid_entry2 *cpuid_find(const struct kvm_cpuid2 *c, uint32_t function,
						 uint32_t index)
{
	for (uint32_t i = 0; i < c->nent; i++) {
		const struct kvm_cpuid_entry2 *e = &c->entries[i];

		if (e->function != function)
			continue;
		if (!(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e->index == index)
			return e;
	}
	return NULL;
}

/* Which registers of (function, index) hold feature bits, and which bits of
 * them a VMM or the guest's own state sets rather than the host's hardware
 * (x86_cpuid_patch's hypervisor and HTT bits, OSXSAVE and OSPKE, which
 * follow CR4, and the TSC-deadline timer that KVM emulates).  Registers in
 * eax, ebx, ecx, edx order; a mask of 0 means "not a feature register". */
static bool cpuid_feature_regs(uint32_t function, uint32_t index, bool tsc_deadline,
			       uint32_t check[4], uint32_t ignore[4])
{
	memset(check, 0, 4 * sizeof(check[0]));
	memset(ignore, 0, 4 * sizeof(ignore[0]));
	switch (function) {
	case 1:
		check[2] = check[3] = UINT32_MAX;
		ignore[2] = CPUID_1_ECX_OSXSAVE | CPUID_1_ECX_HYPERVISOR |
			    (tsc_deadline ? CPUID_1_ECX_TSC_DEADLINE : 0);
		ignore[3] = CPUID_1_EDX_HTT;
		return true;
	case 7:
		/* Sub-leaf 0's eax is the number of sub-leaves, not features. */
		check[0] = index ? UINT32_MAX : 0;
		check[1] = check[2] = check[3] = UINT32_MAX;
		ignore[2] = index ? 0 : CPUID_7_ECX_OSPKE;
		return true;
	case 0xd:
		if (index != 1)
			return false;
		check[0] = check[2] = check[3] = UINT32_MAX;
		return true;
	case 0x80000001:
		check[2] = check[3] = UINT32_MAX;
		return true;
	default:
		return false;
	}
}

/* Append "leaf L.I reg 0xbits" to @msg (@len bytes), keeping it terminated. */
static void cpuid_note_missing(char *msg, size_t len, uint32_t function, uint32_t index,
			       unsigned reg, uint32_t bits)
{
	static const char *const regs[] = { "eax", "ebx", "ecx", "edx" };
	size_t used = strlen(msg);

	if (used + 1 < len)
		snprintf(msg + used, len - used, "%sleaf 0x%x.%u %s 0x%08x", used ? ", " : "",
			 function, index, regs[reg], bits);
}

static int cpuid_check_host(int kvm_fd, struct state_reader *r, const struct kvm_cpuid2 *saved)
{
	struct kvm_cpuid2 *host = NULL;
	bool tsc_deadline = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0;
	char missing[160] = "";
	int e = cpuid_get_supported(kvm_fd, &host);

	if (e)
		return state_reject(r, e, "state: KVM_GET_SUPPORTED_CPUID: %s", strerror(-e));
	for (uint32_t i = 0; i < saved->nent; i++) {
		const struct kvm_cpuid_entry2 *s = &saved->entries[i];
		const struct kvm_cpuid_entry2 *h;
		uint32_t check[4], ignore[4];
		uint32_t sv[4] = { s->eax, s->ebx, s->ecx, s->edx };

		if (!cpuid_feature_regs(s->function, s->index, tsc_deadline, check, ignore))
			continue;
		h = cpuid_find(host, s->function, s->index);
		for (unsigned k = 0; k < 4; k++) {
			uint32_t hv = h ? (k == 0 ? h->eax : k == 1 ? h->ebx : k == 2 ? h->ecx : h->edx)
					: 0;
			uint32_t lack = sv[k] & check[k] & ~ignore[k] & ~hv;

			if (lack)
				cpuid_note_missing(missing, sizeof(missing), s->function, s->index,
						   k, lack);
		}
	}
	free(host);
	if (missing[0])
		return state_reject(r, -ENOTSUP,
				    "state: the snapshot's CPU features are missing on this host: %s",
				    missing);
	return 0;
}

int x86_cpuid_load(int kvm_fd, struct state_reader *r, struct kvm_cpuid2 *out,
		   unsigned max_entries)
{
	uint32_t *v = NULL, cells;
	size_t n;
	int node, e;

	node = state_node(r, true, "/cpus");
	if (node < 0)
		return node;
	e = state_version(r, node, 1, X86_CPUS_VERSION);
	if (e < 0)
		return e;
	if ((e = state_get_u32_range(r, node, "#address-cells", 1, 1, &cells)) ||
	    (e = state_get_u32_range(r, node, "#size-cells", 0, 0, &cells)))
		return e;
	e = get_count(r, node, "/cpus", "cpuid-function", 4, X86_CPUID_SUPPORTED_MAX, &n);
	if (e)
		return e;
	if (n == 0 || n > max_entries)
		return state_reject(r, -EINVAL, "state: /cpus: %zu CPUID entries; 1 to %u allowed",
				    n, max_entries);
	v = malloc(n * sizeof(*v));
	if (!v)
		return state_reject(r, -ENOMEM, "state: out of memory");
	memset(out->entries, 0, n * sizeof(out->entries[0]));
	for (size_t k = 0; k < ARRAY_SIZE(cpuid_props); k++) {
		e = state_get_u32s(r, node, cpuid_props[k], v, n);
		if (e)
			goto out;
		for (size_t i = 0; i < n; i++) {
			struct kvm_cpuid_entry2 *c = &out->entries[i];
			uint32_t *dst[] = { &c->function, &c->index, &c->flags, &c->eax,
					    &c->ebx, &c->ecx, &c->edx };

			*dst[k] = v[i];
		}
	}
	out->nent = (uint32_t)n;
	out->padding = 0;
	e = cpuid_check_host(kvm_fd, r, out);
out:
	free(v);
	return e;
}

/* ---- vCPU: save ---- */

static int xsave_size(int kvm_fd)
{
	int n = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);

	return n > (int)X86_XSAVE_LEGACY ? n : (int)X86_XSAVE_LEGACY;
}

static void put_segment(struct state_writer *w, const char *name, const struct kvm_segment *s)
{
	const uint32_t c[13] = {
		(uint32_t)(s->base >> 32), (uint32_t)s->base, s->limit, s->selector, s->type,
		s->present, s->dpl, s->db, s->s, s->l, s->g, s->avl, s->unusable,
	};

	state_put_u32s(w, name, c, ARRAY_SIZE(c));
}

static void put_sregs(struct state_writer *w, const struct kvm_sregs *s)
{
	uint64_t bitmap[ARRAY_SIZE(s->interrupt_bitmap)];

	for (size_t i = 0; i < ARRAY_SIZE(sregs_segments); i++)
		put_segment(w, sregs_segments[i].name,
			    (const struct kvm_segment *)((const uint8_t *)s + sregs_segments[i].off));
	for (size_t i = 0; i < ARRAY_SIZE(sregs_dtables); i++) {
		const struct kvm_dtable *d =
			(const struct kvm_dtable *)((const uint8_t *)s + sregs_dtables[i].off);
		const uint32_t c[3] = { (uint32_t)(d->base >> 32), (uint32_t)d->base, d->limit };

		state_put_u32s(w, sregs_dtables[i].name, c, 3);
	}
	put_fields(w, s, sregs_u64_fields, ARRAY_SIZE(sregs_u64_fields));
	for (size_t i = 0; i < ARRAY_SIZE(bitmap); i++)
		bitmap[i] = s->interrupt_bitmap[i];
	state_put_u64s(w, "interrupt-bitmap", bitmap, ARRAY_SIZE(bitmap));
}

static int save_xsave(int kvm_fd, int vcpu_fd, const char *where, struct state_writer *w)
{
	int size = xsave_size(kvm_fd);
	bool xsave2 = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2) > 0;
	struct kvm_xsave *x = calloc(1, (size_t)size);
	int e;

	if (!x)
		return -ENOMEM;
	if (xsave2)
		e = save_ioctl(vcpu_fd, KVM_GET_XSAVE2, x, where, "KVM_GET_XSAVE2");
	else
		e = save_ioctl(vcpu_fd, KVM_GET_XSAVE, x, where, "KVM_GET_XSAVE");
	if (!e)
		state_put_bytes(w, "xsave", x, (size_t)size);
	free(x);
	return e;
}

static int save_xcrs(int kvm_fd, int vcpu_fd, const char *where, struct state_writer *w)
{
	struct kvm_xcrs x = { 0 };
	uint32_t idx[KVM_MAX_XCRS];
	uint64_t val[KVM_MAX_XCRS];
	int e;

	if (ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) > 0) {
		e = save_ioctl(vcpu_fd, KVM_GET_XCRS, &x, where, "KVM_GET_XCRS");
		if (e)
			return e;
		if (x.nr_xcrs > KVM_MAX_XCRS)
			return -EIO;
	}
	for (uint32_t i = 0; i < x.nr_xcrs; i++) {
		idx[i] = x.xcrs[i].xcr;
		val[i] = x.xcrs[i].value;
	}
	state_put_u32s(w, "xcr-index", idx, x.nr_xcrs);
	state_put_u64s(w, "xcr-value", val, x.nr_xcrs);
	return 0;
}

/* KVM_GET_MSR_INDEX_LIST on the system fd.  *@out is malloc'd. */
static int msr_index_list(int kvm_fd, struct kvm_msr_list **out)
{
	struct kvm_msr_list probe = { 0 };
	struct kvm_msr_list *l;

	if (ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
		return -errno;
	if (probe.nmsrs > X86_MAX_MSRS)
		return -E2BIG;
	l = calloc(1, sizeof(*l) + probe.nmsrs * sizeof(l->indices[0]));
	if (!l)
		return -ENOMEM;
	l->nmsrs = probe.nmsrs;
	if (ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, l) < 0) {
		int e = -errno;

		free(l);
		return e;
	}
	*out = l;
	return 0;
}

/* Every listed MSR that reads back, in batches.  KVM_GET_MSRS stops at the
 * first MSR it cannot read and returns how many it read: that one is
 * skipped (an MSR this vCPU's CPUID does not offer) and the batch goes on
 * after it. */
static int save_msrs(int kvm_fd, int vcpu_fd, const char *where, struct state_writer *w)
{
	struct kvm_msr_list *list = NULL;
	struct kvm_msrs *batch = NULL;
	uint32_t *idx = NULL;
	uint64_t *val = NULL;
	size_t n = 0;
	int e = msr_index_list(kvm_fd, &list);

	if (e) {
		log_error("%s: KVM_GET_MSR_INDEX_LIST: %s", where, strerror(-e));
		return e;
	}
	batch = calloc(1, sizeof(*batch) + X86_MSR_BATCH * sizeof(batch->entries[0]));
	idx = malloc((list->nmsrs + 1) * sizeof(*idx));
	val = malloc((list->nmsrs + 1) * sizeof(*val));
	if (!batch || !idx || !val) {
		e = -ENOMEM;
		goto out;
	}
	for (uint32_t next = 0; next < list->nmsrs;) {
		uint32_t want = list->nmsrs - next;
		int got;

		if (want > X86_MSR_BATCH)
			want = X86_MSR_BATCH;
		memset(batch->entries, 0, want * sizeof(batch->entries[0]));
		batch->nmsrs = want;
		for (uint32_t i = 0; i < want; i++)
			batch->entries[i].index = list->indices[next + i];
		got = ioctl(vcpu_fd, KVM_GET_MSRS, batch);
		if (got < 0 || (uint32_t)got > want) {
			e = got < 0 ? -errno : -EIO;
			log_error("%s: KVM_GET_MSRS: %s", where, strerror(-e));
			goto out;
		}
		for (int i = 0; i < got; i++) {
			idx[n] = batch->entries[i].index;
			val[n] = batch->entries[i].data;
			n++;
		}
		next += (uint32_t)got;
		if ((uint32_t)got < want) {
			log_debug("%s: MSR 0x%x does not read back: not saved", where,
				  list->indices[next]);
			next++;
		}
	}
	state_put_u32s(w, "msr-index", idx, n);
	state_put_u64s(w, "msr-value", val, n);
out:
	free(val);
	free(idx);
	free(batch);
	free(list);
	return e;
}

static void put_events(struct state_writer *w, const struct kvm_vcpu_events *ev)
{
	const uint32_t exc[6] = {
		ev->exception.injected, ev->exception.nr, ev->exception.has_error_code,
		ev->exception.pending, ev->exception.error_code, ev->exception_has_payload,
	};
	const uint32_t irq[4] = { ev->interrupt.injected, ev->interrupt.nr, ev->interrupt.soft,
				  ev->interrupt.shadow };
	const uint32_t nmi[3] = { ev->nmi.injected, ev->nmi.pending, ev->nmi.masked };
	const uint32_t smi[4] = { ev->smi.smm, ev->smi.pending, ev->smi.smm_inside_nmi,
				  ev->smi.latched_init };

	state_put_u32s(w, "exception", exc, 6);
	state_put_u64(w, "exception-payload", ev->exception_payload);
	state_put_u32s(w, "interrupt", irq, 4);
	state_put_u32s(w, "nmi", nmi, 3);
	state_put_u32s(w, "smi", smi, 4);
	state_put_u32(w, "triple-fault", ev->triple_fault.pending);
	state_put_u32(w, "sipi-vector", ev->sipi_vector);
	state_put_u32(w, "event-flags", ev->flags);
}

void x86_vcpu_save(int kvm_fd, int vcpu_fd, unsigned id, struct state_writer *w)
{
	char where[32];
	struct kvm_mp_state mp;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_debugregs dbg;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events ev;
	uint64_t db[4];
	int khz, e;

	if (w->err)
		return;
	snprintf(where, sizeof(where), "cpu@%u", id);
	state_begin(w, X86_VCPU_VERSION, "/cpus/cpu@%u", id);
	/* The vCPU ID again, as a device tree's cpu@N has it (and dtc wants). */
	state_put_u32(w, "reg", id);

	/* 0 = unknown (KVM_GET_TSC_KHZ failed): the load then skips the check. */
	khz = ioctl(vcpu_fd, KVM_GET_TSC_KHZ, 0);
	state_put_u32(w, "tsc-khz", khz > 0 ? (uint32_t)khz : 0);

	if ((e = save_ioctl(vcpu_fd, KVM_GET_MP_STATE, &mp, where, "KVM_GET_MP_STATE")))
		goto fail;
	state_put_u32(w, "mp-state", mp.mp_state);

	if ((e = save_ioctl(vcpu_fd, KVM_GET_REGS, &regs, where, "KVM_GET_REGS")))
		goto fail;
	put_fields(w, &regs, regs_fields, ARRAY_SIZE(regs_fields));

	if ((e = save_ioctl(vcpu_fd, KVM_GET_SREGS, &sregs, where, "KVM_GET_SREGS")))
		goto fail;
	put_sregs(w, &sregs);

	if ((e = save_xsave(kvm_fd, vcpu_fd, where, w)))
		goto fail;
	if ((e = save_xcrs(kvm_fd, vcpu_fd, where, w)))
		goto fail;

	if ((e = save_ioctl(vcpu_fd, KVM_GET_DEBUGREGS, &dbg, where, "KVM_GET_DEBUGREGS")))
		goto fail;
	for (unsigned i = 0; i < 4; i++)
		db[i] = dbg.db[i];
	state_put_u64s(w, "db", db, 4);
	state_put_u64(w, "dr6", dbg.dr6);
	state_put_u64(w, "dr7", dbg.dr7);

	if ((e = save_ioctl(vcpu_fd, KVM_GET_LAPIC, &lapic, where, "KVM_GET_LAPIC")))
		goto fail;
	state_put_bytes(w, "lapic", lapic.regs, sizeof(lapic.regs));

	if ((e = save_msrs(kvm_fd, vcpu_fd, where, w)))
		goto fail;

	if ((e = save_ioctl(vcpu_fd, KVM_GET_VCPU_EVENTS, &ev, where, "KVM_GET_VCPU_EVENTS")))
		goto fail;
	put_events(w, &ev);
	return;
fail:
	state_fail(w, e);
}

/* ---- vCPU: load ---- */

/* The TSC frequency: KVM_SET_TSC_KHZ where it differs from this host's and
 * the host can scale; within 250 ppm an unscaled TSC is accepted (KVM's own
 * tolerance); beyond it, a refusal. */
static int load_tsc_khz(int kvm_fd, int vcpu_fd, const char *where, struct state_reader *r,
			int node)
{
	const char *why = "this host's KVM has no KVM_CAP_TSC_CONTROL";
	uint32_t saved;
	int host, e = state_get_u32(r, node, "tsc-khz", &saved);
	uint64_t diff;

	if (e)
		return e;
	host = ioctl(vcpu_fd, KVM_GET_TSC_KHZ, 0);
	if (saved == 0 || host <= 0 || saved == (uint32_t)host)
		return 0;
	if (ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_CONTROL) > 0) {
		if (ioctl(vcpu_fd, KVM_SET_TSC_KHZ, (unsigned long)saved) == 0)
			return 0;
		why = "KVM_SET_TSC_KHZ failed (no TSC scaling in this CPU?)";
	}
	diff = saved > (uint32_t)host ? saved - (uint64_t)host : (uint64_t)host - saved;
	if (diff * 1000000u > (uint64_t)host * X86_TSC_TOLERANCE_PPM)
		return state_reject(r, -ENOTSUP,
				    "state: %s: the snapshot's TSC ran at %u kHz, this host's runs at %d kHz (more than %u ppm apart), and %s",
				    where, saved, host, X86_TSC_TOLERANCE_PPM, why);
	return 0;
}

static int get_segment(struct state_reader *r, int node, const char *where, const char *name,
		       struct kvm_segment *s)
{
	/* Upper bounds per cell: the fields' widths, and the architecture's
	 * for type (4 bits) and dpl (2 bits); the flags are single bits. */
	static const uint32_t max[13] = {
		UINT32_MAX, UINT32_MAX, UINT32_MAX, 0xffff, 15, 1, 3, 1, 1, 1, 1, 1, 1,
	};
	uint32_t c[13];
	int e = state_get_u32s(r, node, name, c, 13);

	if (e)
		return e;
	for (unsigned i = 0; i < 13; i++)
		if (c[i] > max[i])
			return state_reject(r, -EINVAL,
					    "state: %s: segment '%s' cell %u = %u is above %u",
					    where, name, i, c[i], max[i]);
	memset(s, 0, sizeof(*s));
	s->base = ((uint64_t)c[0] << 32) | c[1];
	s->limit = c[2];
	s->selector = (uint16_t)c[3];
	s->type = (uint8_t)c[4];
	s->present = (uint8_t)c[5];
	s->dpl = (uint8_t)c[6];
	s->db = (uint8_t)c[7];
	s->s = (uint8_t)c[8];
	s->l = (uint8_t)c[9];
	s->g = (uint8_t)c[10];
	s->avl = (uint8_t)c[11];
	s->unusable = (uint8_t)c[12];
	return 0;
}

static int get_sregs(struct state_reader *r, int node, const char *where, struct kvm_sregs *s)
{
	uint64_t bitmap[ARRAY_SIZE(s->interrupt_bitmap)];
	int e;

	memset(s, 0, sizeof(*s));
	for (size_t i = 0; i < ARRAY_SIZE(sregs_segments); i++) {
		e = get_segment(r, node, where, sregs_segments[i].name,
				(struct kvm_segment *)((uint8_t *)s + sregs_segments[i].off));
		if (e)
			return e;
	}
	for (size_t i = 0; i < ARRAY_SIZE(sregs_dtables); i++) {
		struct kvm_dtable *d = (struct kvm_dtable *)((uint8_t *)s + sregs_dtables[i].off);
		uint32_t c[3];

		e = state_get_u32s(r, node, sregs_dtables[i].name, c, 3);
		if (e)
			return e;
		if (c[2] > 0xffff)
			return state_reject(r, -EINVAL, "state: %s: '%s' limit 0x%x is above 0xffff",
					    where, sregs_dtables[i].name, c[2]);
		d->base = ((uint64_t)c[0] << 32) | c[1];
		d->limit = (uint16_t)c[2];
	}
	e = get_fields(r, node, s, sregs_u64_fields, ARRAY_SIZE(sregs_u64_fields));
	if (e)
		return e;
	e = state_get_u64s(r, node, "interrupt-bitmap", bitmap, ARRAY_SIZE(bitmap));
	if (e)
		return e;
	for (size_t i = 0; i < ARRAY_SIZE(bitmap); i++)
		s->interrupt_bitmap[i] = bitmap[i];
	return 0;
}

/* The saved XSAVE area into a buffer of this host's size: a shorter one is
 * padded with zeros (its header says which components it holds); a longer
 * one only when the extra bytes are zero (components this host lacks would
 * otherwise be lost).  KVM_SET_XSAVE then checks the header's features. */
static int load_xsave(int kvm_fd, int vcpu_fd, const char *where, struct state_reader *r,
		      int node)
{
	size_t host = (size_t)xsave_size(kvm_fd), len;
	const uint8_t *p;
	struct kvm_xsave *x;
	int e = state_get_blob(r, node, "xsave", X86_XSAVE_MAX, (const void **)&p, &len);

	if (e)
		return e;
	if (len < X86_XSAVE_LEGACY || len % 4)
		return state_reject(r, -EINVAL,
				    "state: %s: 'xsave' has %zu bytes; an XSAVE area is at least %u, in 4-byte words",
				    where, len, X86_XSAVE_LEGACY);
	for (size_t i = host; i < len; i++)
		if (p[i])
			return state_reject(r, -ENOTSUP,
					    "state: %s: the snapshot's XSAVE area (%zu bytes) holds state beyond this host's %zu bytes",
					    where, len, host);
	x = calloc(1, host);
	if (!x)
		return state_reject(r, -ENOMEM, "state: out of memory");
	memcpy(x, p, len < host ? len : host);
	e = load_ioctl(r, vcpu_fd, KVM_SET_XSAVE, x, where, "KVM_SET_XSAVE");
	free(x);
	return e;
}

static int load_xcrs(int kvm_fd, int vcpu_fd, const char *where, struct state_reader *r,
		     int node)
{
	struct kvm_xcrs x = { 0 };
	uint32_t idx[KVM_MAX_XCRS];
	uint64_t val[KVM_MAX_XCRS];
	size_t n;
	int e = get_count(r, node, where, "xcr-index", 4, KVM_MAX_XCRS, &n);

	if (e)
		return e;
	if ((e = state_get_u32s(r, node, "xcr-index", idx, n)) ||
	    (e = state_get_u64s(r, node, "xcr-value", val, n)))
		return e;
	if (n == 0)
		return 0;
	if (ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) <= 0)
		return state_reject(r, -ENOTSUP, "state: %s: the snapshot has XCRs and this host's KVM cannot set them (KVM_CAP_XCRS)",
				    where);
	x.nr_xcrs = (uint32_t)n;
	for (size_t i = 0; i < n; i++) {
		x.xcrs[i].xcr = idx[i];
		x.xcrs[i].value = val[i];
	}
	return load_ioctl(r, vcpu_fd, KVM_SET_XCRS, &x, where, "KVM_SET_XCRS");
}

static int load_lapic(int vcpu_fd, const char *where, struct state_reader *r, int node)
{
	struct kvm_lapic_state lapic;
	int e = state_get_bytes(r, node, "lapic", lapic.regs, sizeof(lapic.regs));

	if (e)
		return e;
	return load_ioctl(r, vcpu_fd, KVM_SET_LAPIC, &lapic, where, "KVM_SET_LAPIC");
}

/* The MSRs in batches, MSR_IA32_TSC first and MSR_IA32_TSC_DEADLINE last
 * (see x86_vcpu_load).  KVM_SET_MSRS returns how many it set, stopping at
 * the first it refuses: that one is named. */
static int load_msrs(int vcpu_fd, const char *where, struct state_reader *r, int node)
{
	struct kvm_msrs *batch = NULL;
	uint32_t *idx = NULL;
	uint64_t *val = NULL;
	size_t *order = NULL, n, k = 0;
	int e = get_count(r, node, where, "msr-index", 4, X86_MAX_MSRS, &n);

	if (e)
		return e;
	idx = malloc((n + 1) * sizeof(*idx));
	val = malloc((n + 1) * sizeof(*val));
	order = malloc((n + 1) * sizeof(*order));
	batch = calloc(1, sizeof(*batch) + X86_MSR_BATCH * sizeof(batch->entries[0]));
	if (!idx || !val || !order || !batch) {
		e = state_reject(r, -ENOMEM, "state: out of memory");
		goto out;
	}
	if ((e = state_get_u32s(r, node, "msr-index", idx, n)) ||
	    (e = state_get_u64s(r, node, "msr-value", val, n)))
		goto out;
	for (size_t i = 0; i < n; i++)
		if (idx[i] == MSR_IA32_TSC)
			order[k++] = i;
	for (size_t i = 0; i < n; i++)
		if (idx[i] != MSR_IA32_TSC && idx[i] != MSR_IA32_TSC_DEADLINE)
			order[k++] = i;
	for (size_t i = 0; i < n; i++)
		if (idx[i] == MSR_IA32_TSC_DEADLINE)
			order[k++] = i;
	for (size_t next = 0; next < n;) {
		size_t want = n - next;
		int set;

		if (want > X86_MSR_BATCH)
			want = X86_MSR_BATCH;
		memset(batch->entries, 0, want * sizeof(batch->entries[0]));
		batch->nmsrs = (uint32_t)want;
		for (size_t i = 0; i < want; i++) {
			batch->entries[i].index = idx[order[next + i]];
			batch->entries[i].data = val[order[next + i]];
		}
		set = ioctl(vcpu_fd, KVM_SET_MSRS, batch);
		if (set < 0) {
			int err = errno;

			e = state_reject(r, -err, "state: %s: KVM_SET_MSRS refused: %s", where,
					 strerror(err));
			goto out;
		}
		if ((size_t)set < want) {
			e = state_reject(r, -EINVAL,
					 "state: %s: this host refuses MSR 0x%x = 0x%llx",
					 where, batch->entries[set].index,
					 (unsigned long long)batch->entries[set].data);
			goto out;
		}
		next += want;
	}
out:
	free(batch);
	free(order);
	free(val);
	free(idx);
	return e;
}

static int load_debugregs(int vcpu_fd, const char *where, struct state_reader *r, int node)
{
	struct kvm_debugregs dbg = { 0 };
	uint64_t db[4], dr6, dr7;
	int e;

	if ((e = state_get_u64s(r, node, "db", db, 4)) ||
	    (e = state_get_u64(r, node, "dr6", &dr6)) ||
	    (e = state_get_u64(r, node, "dr7", &dr7)))
		return e;
	for (unsigned i = 0; i < 4; i++)
		dbg.db[i] = db[i];
	dbg.dr6 = dr6;
	dbg.dr7 = dr7;
	return load_ioctl(r, vcpu_fd, KVM_SET_DEBUGREGS, &dbg, where, "KVM_SET_DEBUGREGS");
}

static int load_events(int vcpu_fd, const char *where, struct state_reader *r, int node)
{
	struct kvm_vcpu_events ev;
	uint32_t exc[6], irq[4], nmi[3], smi[4], triple, sipi, flags;
	uint64_t payload;
	int e;

	if ((e = get_u32s_max(r, node, where, "exception", exc, 6, UINT32_MAX)) ||
	    (e = state_get_u64(r, node, "exception-payload", &payload)) ||
	    (e = get_u32s_max(r, node, where, "interrupt", irq, 4, 0xff)) ||
	    (e = get_u32s_max(r, node, where, "nmi", nmi, 3, 0xff)) ||
	    (e = get_u32s_max(r, node, where, "smi", smi, 4, 0xff)) ||
	    (e = state_get_u32_range(r, node, "triple-fault", 0, 0xff, &triple)) ||
	    (e = state_get_u32(r, node, "sipi-vector", &sipi)) ||
	    (e = state_get_u32(r, node, "event-flags", &flags)))
		return e;
	for (unsigned i = 0; i < 6; i++)
		if (i != 4 && exc[i] > 0xff)
			return state_reject(r, -EINVAL, "state: %s: 'exception' cell %u = %u is above 255",
					    where, i, exc[i]);
	/* The exception payload and a pending triple fault need VM
	 * capabilities vmrun does not enable, so its saves never have them. */
	if (flags & ~(uint32_t)EVENT_FLAGS_LOADABLE)
		return state_reject(r, -EINVAL, "state: %s: vCPU event flags 0x%x: 0x%x unknown to this vmrun",
				    where, flags, flags & ~(uint32_t)EVENT_FLAGS_LOADABLE);
	memset(&ev, 0, sizeof(ev));
	ev.exception.injected = (uint8_t)exc[0];
	ev.exception.nr = (uint8_t)exc[1];
	ev.exception.has_error_code = (uint8_t)exc[2];
	ev.exception.pending = (uint8_t)exc[3];
	ev.exception.error_code = exc[4];
	ev.interrupt.injected = (uint8_t)irq[0];
	ev.interrupt.nr = (uint8_t)irq[1];
	ev.interrupt.soft = (uint8_t)irq[2];
	ev.interrupt.shadow = (uint8_t)irq[3];
	ev.nmi.injected = (uint8_t)nmi[0];
	ev.nmi.pending = (uint8_t)nmi[1];
	ev.nmi.masked = (uint8_t)nmi[2];
	ev.smi.smm = (uint8_t)smi[0];
	ev.smi.pending = (uint8_t)smi[1];
	ev.smi.smm_inside_nmi = (uint8_t)smi[2];
	ev.smi.latched_init = (uint8_t)smi[3];
	ev.sipi_vector = sipi;
	ev.flags = flags;
	/* Without KVM_VCPUEVENT_VALID_PAYLOAD and _TRIPLE_FAULT (refused
	 * above) KVM ignores these; kept for a later version that enables
	 * them. */
	(void)payload;
	(void)triple;
	return load_ioctl(r, vcpu_fd, KVM_SET_VCPU_EVENTS, &ev, where, "KVM_SET_VCPU_EVENTS");
}

/*
 * The load order, and why:
 *
 *  1. TSC frequency.  The guest TSC's scaling must be in place before
 *     anything computes with it: the MSR_IA32_TSC write turns the saved
 *     guest TSC into an offset at the vCPU's rate, and the LAPIC timer and
 *     TSC_DEADLINE convert between TSC ticks and host time at that rate.
 *  2. sregs.  They set the CPU mode (CR0, CR4, EFER) and the APIC base:
 *     KVM_SET_REGS writes RFLAGS through the current mode (on VT-x without
 *     unrestricted guest, real mode keeps a shadow RFLAGS that leaving real
 *     mode would restore over ours), and KVM_SET_LAPIC reads the APIC ID
 *     register as xAPIC or x2APIC by the APIC base's mode.
 *  3. regs.  After the mode, before the events: KVM_SET_REGS clears any
 *     pending exception, which the events then put back.
 *  4. XSAVE, then 5. XCRs.  KVM_SET_XSAVE checks the area against what the
 *     host and the vCPU's CPUID allow, not against XCR0, so either order
 *     works; this is QEMU's.  Both need the CPUID, which the caller set.
 *  6. LAPIC.  After sregs (above); before the MSRs, because a write to
 *     MSR_IA32_TSC_DEADLINE is dropped unless the LAPIC's LVT timer is
 *     already in TSC-deadline mode.
 *  7. MSRs: MSR_IA32_TSC first, so that TSC_DEADLINE (last) is armed
 *     against the restored guest TSC rather than the fresh vCPU's.
 *  8. Debug registers: no dependency on the others.
 *  9. MP state, before the events: KVM_SET_MP_STATE refuses INIT_RECEIVED
 *     and SIPI_RECEIVED while an INIT is latched (SMM), which the events
 *     restore.
 * 10. vCPU events last: a pending or injected exception, interrupt, NMI or
 *     SMI, the interrupt shadow and SMM, which every earlier step may reset
 *     (KVM_SET_REGS drops a pending exception; KVM_SET_SREGS queues the
 *     interrupt bitmap's vector).  Only the KVM_VCPUEVENT_VALID_* flags the
 *     saved events carried are passed on.
 */
int x86_vcpu_load(int kvm_fd, int vcpu_fd, unsigned id, struct state_reader *r)
{
	char where[32];
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	struct kvm_mp_state mp;
	uint32_t reg;
	int node, e;

	snprintf(where, sizeof(where), "cpu@%u", id);
	node = state_node(r, true, "/cpus/cpu@%u", id);
	if (node < 0)
		return node;
	e = state_version(r, node, 1, X86_VCPU_VERSION);
	if (e < 0)
		return e;
	if ((e = state_get_u32_range(r, node, "reg", id, id, &reg)))
		return e;

	if ((e = load_tsc_khz(kvm_fd, vcpu_fd, where, r, node)))
		return e;

	if ((e = get_sregs(r, node, where, &sregs)) ||
	    (e = load_ioctl(r, vcpu_fd, KVM_SET_SREGS, &sregs, where, "KVM_SET_SREGS")))
		return e;

	memset(&regs, 0, sizeof(regs));
	if ((e = get_fields(r, node, &regs, regs_fields, ARRAY_SIZE(regs_fields))) ||
	    (e = load_ioctl(r, vcpu_fd, KVM_SET_REGS, &regs, where, "KVM_SET_REGS")))
		return e;

	if ((e = load_xsave(kvm_fd, vcpu_fd, where, r, node)) ||
	    (e = load_xcrs(kvm_fd, vcpu_fd, where, r, node)) ||
	    (e = load_lapic(vcpu_fd, where, r, node)) ||
	    (e = load_msrs(vcpu_fd, where, r, node)) ||
	    (e = load_debugregs(vcpu_fd, where, r, node)))
		return e;

	memset(&mp, 0, sizeof(mp));
	if ((e = state_get_u32(r, node, "mp-state", &mp.mp_state)) ||
	    (e = load_ioctl(r, vcpu_fd, KVM_SET_MP_STATE, &mp, where, "KVM_SET_MP_STATE")))
		return e;

	return load_events(vcpu_fd, where, r, node);
}

/* ---- VM ---- */

static int save_pic(int vm_fd, unsigned chip, const char *path, struct state_writer *w)
{
	struct kvm_irqchip c = { .chip_id = chip };
	int e = save_ioctl(vm_fd, KVM_GET_IRQCHIP, &c, path, "KVM_GET_IRQCHIP");

	if (e)
		return e;
	state_begin(w, X86_PIC_VERSION, "%s", path);
	put_fields(w, &c.chip.pic, pic_fields, ARRAY_SIZE(pic_fields));
	return 0;
}

static int save_ioapic(int vm_fd, struct state_writer *w)
{
	struct kvm_irqchip c = { .chip_id = KVM_IRQCHIP_IOAPIC };
	const struct kvm_ioapic_state *s = &c.chip.ioapic;
	uint64_t redir[KVM_IOAPIC_NUM_PINS];
	int e = save_ioctl(vm_fd, KVM_GET_IRQCHIP, &c, "/kvm/ioapic", "KVM_GET_IRQCHIP");

	if (e)
		return e;
	for (unsigned i = 0; i < KVM_IOAPIC_NUM_PINS; i++)
		redir[i] = s->redirtbl[i].bits;
	state_begin(w, X86_IOAPIC_VERSION, "/kvm/ioapic");
	state_put_u64(w, "base-address", s->base_address);
	state_put_u32(w, "id", s->id);
	state_put_u32(w, "ioregsel", s->ioregsel);
	state_put_u32(w, "irr", s->irr);
	state_put_u64s(w, "redirtbl", redir, KVM_IOAPIC_NUM_PINS);
	return 0;
}

static int save_pit(int vm_fd, struct state_writer *w)
{
	struct kvm_pit_state2 pit;
	uint32_t cells[3];
	uint64_t load_time[3];
	int e = save_ioctl(vm_fd, KVM_GET_PIT2, &pit, "/kvm/pit", "KVM_GET_PIT2");

	if (e)
		return e;
	state_begin(w, X86_PIT_VERSION, "/kvm/pit");
	state_put_u32(w, "flags", pit.flags);
	for (size_t f = 0; f < ARRAY_SIZE(pit_fields); f++) {
		for (unsigned i = 0; i < 3; i++)
			cells[i] = (uint32_t)field_load(&pit.channels[i], &pit_fields[f]);
		state_put_u32s(w, pit_fields[f].name, cells, 3);
	}
	for (unsigned i = 0; i < 3; i++)
		load_time[i] = (uint64_t)pit.channels[i].count_load_time;
	state_put_u64s(w, "count-load-time", load_time, 3);
	return 0;
}

static int save_clock(int vm_fd, struct state_writer *w)
{
	struct kvm_clock_data c;
	int e;

	memset(&c, 0, sizeof(c));
	e = save_ioctl(vm_fd, KVM_GET_CLOCK, &c, "/kvm/clock", "KVM_GET_CLOCK");
	if (e)
		return e;
	state_begin(w, X86_CLOCK_VERSION, "/kvm/clock");
	state_put_u32(w, "flags", c.flags);
	state_put_u64(w, "clock", c.clock);
	state_put_u64(w, "realtime", c.realtime);
	state_put_u64(w, "host-tsc", c.host_tsc);
	return 0;
}

void x86_vm_save(int kvm_fd, int vm_fd, struct state_writer *w)
{
	int e;

	/* Unused: KVM_GET_CLOCK's flags say which fields it filled
	 * (KVM_CLOCK_REALTIME only where the host has it and its clock is
	 * stable), so nothing needs KVM_CHECK_EXTENSION here. */
	(void)kvm_fd;
	if (w->err)
		return;
	if ((e = save_pic(vm_fd, KVM_IRQCHIP_PIC_MASTER, "/kvm/pic-master", w)) ||
	    (e = save_pic(vm_fd, KVM_IRQCHIP_PIC_SLAVE, "/kvm/pic-slave", w)) ||
	    (e = save_ioapic(vm_fd, w)) || (e = save_pit(vm_fd, w)) || (e = save_clock(vm_fd, w)))
		state_fail(w, e);
}

static int load_pic(int vm_fd, unsigned chip, const char *path, struct state_reader *r)
{
	struct kvm_irqchip c = { .chip_id = chip };
	int node, e;

	node = state_node(r, true, "%s", path);
	if (node < 0)
		return node;
	e = state_version(r, node, 1, X86_PIC_VERSION);
	if (e < 0)
		return e;
	if ((e = get_fields(r, node, &c.chip.pic, pic_fields, ARRAY_SIZE(pic_fields))))
		return e;
	return load_ioctl(r, vm_fd, KVM_SET_IRQCHIP, &c, path, "KVM_SET_IRQCHIP");
}

static int load_ioapic(int vm_fd, struct state_reader *r)
{
	struct kvm_irqchip c = { .chip_id = KVM_IRQCHIP_IOAPIC };
	struct kvm_ioapic_state *s = &c.chip.ioapic;
	uint64_t redir[KVM_IOAPIC_NUM_PINS], base;
	int node, e;

	node = state_node(r, true, "/kvm/ioapic");
	if (node < 0)
		return node;
	e = state_version(r, node, 1, X86_IOAPIC_VERSION);
	if (e < 0)
		return e;
	/* Widths as the IOAPIC's registers have them: a 4-bit ID, an 8-bit
	 * register select, one IRR bit per pin. */
	if ((e = state_get_u64(r, node, "base-address", &base)) ||
	    (e = state_get_u32_range(r, node, "id", 0, 0xf, &s->id)) ||
	    (e = state_get_u32_range(r, node, "ioregsel", 0, 0xff, &s->ioregsel)) ||
	    (e = state_get_u32_range(r, node, "irr", 0, (1u << KVM_IOAPIC_NUM_PINS) - 1, &s->irr)) ||
	    (e = state_get_u64s(r, node, "redirtbl", redir, KVM_IOAPIC_NUM_PINS)))
		return e;
	/* KVM decodes the IOAPIC's MMIO by this address; no guest can move
	 * it, so anything but vmrun's layout is a damaged stream. */
	if (base != X86_IOAPIC_BASE)
		return state_reject(r, -EINVAL, "state: /kvm/ioapic: base address 0x%llx, expected 0x%llx",
				    (unsigned long long)base, (unsigned long long)X86_IOAPIC_BASE);
	s->base_address = base;
	for (unsigned i = 0; i < KVM_IOAPIC_NUM_PINS; i++)
		s->redirtbl[i].bits = redir[i];
	return load_ioctl(r, vm_fd, KVM_SET_IRQCHIP, &c, "/kvm/ioapic", "KVM_SET_IRQCHIP");
}

static int load_pit(int vm_fd, struct state_reader *r)
{
	struct kvm_pit_state2 pit;
	uint64_t load_time[3];
	uint32_t cells[3];
	int node, e;

	node = state_node(r, true, "/kvm/pit");
	if (node < 0)
		return node;
	e = state_version(r, node, 1, X86_PIT_VERSION);
	if (e < 0)
		return e;
	memset(&pit, 0, sizeof(pit));
	if ((e = state_get_u32_range(r, node, "flags", 0,
				     KVM_PIT_FLAGS_HPET_LEGACY | KVM_PIT_FLAGS_SPEAKER_DATA_ON,
				     &pit.flags)))
		return e;
	for (size_t f = 0; f < ARRAY_SIZE(pit_fields); f++) {
		/* A count is 16 bits, 0x10000 standing for 0. */
		uint32_t max = pit_fields[f].off == offsetof(struct kvm_pit_channel_state, count)
				       ? 0x10000u
				       : (uint32_t)field_max(pit_fields[f].size);

		e = get_u32s_max(r, node, "/kvm/pit", pit_fields[f].name, cells, 3, max);
		if (e)
			return e;
		for (unsigned i = 0; i < 3; i++)
			field_store(&pit.channels[i], &pit_fields[f], cells[i]);
	}
	if ((e = state_get_u64s(r, node, "count-load-time", load_time, 3)))
		return e;
	for (unsigned i = 0; i < 3; i++)
		pit.channels[i].count_load_time = (int64_t)load_time[i];
	return load_ioctl(r, vm_fd, KVM_SET_PIT2, &pit, "/kvm/pit", "KVM_SET_PIT2");
}

/* The KVM clock.  With KVM_CLOCK_REALTIME in the save and on this host, KVM
 * adds the wall-clock time since the save, so the guest's clock is right
 * after a restore hours later; otherwise the clock goes on from the saved
 * value. */
static int load_clock(int kvm_fd, int vm_fd, struct state_reader *r)
{
	struct kvm_clock_data c;
	uint64_t clock, realtime, host_tsc;
	uint32_t flags;
	int node, e, caps;

	node = state_node(r, true, "/kvm/clock");
	if (node < 0)
		return node;
	e = state_version(r, node, 1, X86_CLOCK_VERSION);
	if (e < 0)
		return e;
	if ((e = state_get_u32(r, node, "flags", &flags)) ||
	    (e = state_get_u64(r, node, "clock", &clock)) ||
	    (e = state_get_u64(r, node, "realtime", &realtime)) ||
	    (e = state_get_u64(r, node, "host-tsc", &host_tsc)))
		return e;
	(void)host_tsc; /* another host's TSC: for the operator only */
	memset(&c, 0, sizeof(c));
	c.clock = clock;
	caps = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_ADJUST_CLOCK);
	if ((flags & KVM_CLOCK_REALTIME) && caps > 0 && (caps & KVM_CLOCK_REALTIME)) {
		c.flags = KVM_CLOCK_REALTIME;
		c.realtime = realtime;
	}
	return load_ioctl(r, vm_fd, KVM_SET_CLOCK, &c, "/kvm/clock", "KVM_SET_CLOCK");
}

/* The irqchips before the PIT: KVM_SET_PIT2 restarts channel 0's timer at
 * once, and a tick it raises then must land in the restored PIC and IOAPIC
 * rather than be overwritten by them.  The clock last, independent of the
 * rest, as close as possible to the moment the guest resumes. */
int x86_vm_load(int kvm_fd, int vm_fd, struct state_reader *r)
{
	int e;

	if ((e = load_pic(vm_fd, KVM_IRQCHIP_PIC_MASTER, "/kvm/pic-master", r)) ||
	    (e = load_pic(vm_fd, KVM_IRQCHIP_PIC_SLAVE, "/kvm/pic-slave", r)) ||
	    (e = load_ioapic(vm_fd, r)) || (e = load_pit(vm_fd, r)) ||
	    (e = load_clock(kvm_fd, vm_fd, r)))
		return e;
	return 0;
}

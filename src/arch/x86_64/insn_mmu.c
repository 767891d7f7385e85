/* Linear-to-physical translation through the guest's own page tables, for
 * the instruction fallback (include/vmrun/insn.h).
 *
 * The walk is done here rather than with KVM_TRANSLATE because KVM_TRANSLATE
 * reports neither why a translation failed nor the access rights on the way,
 * and a fault the emulator injects must carry the error code the CPU would
 * push (present, write, user, reserved, fetch).  Every table is read through
 * guest_mem_ptr(); a guest's page tables are untrusted input like any other
 * guest memory. */
#include <errno.h>
#include <string.h>

#include "vmrun/guest_mem.h"
#include "vmrun/insn.h"

#define PTE_P 0x1ull
#define PTE_RW 0x2ull
#define PTE_US 0x4ull
#define PTE_A 0x20ull
#define PTE_D 0x40ull
#define PTE_PS 0x80ull
#define PTE_NX (1ull << 63)
#define PTE_ADDR 0x000ffffffffff000ull
#define PAGE_SIZE 4096ull

bool insn_canonical(const struct insn_paging *pg, uint64_t la)
{
	unsigned bits = pg->cr4 & INSN_CR4_LA57 ? 57 : 48;

	return (uint64_t)((int64_t)(la << (64 - bits)) >> (64 - bits)) == la;
}

static int page_fault(struct insn_exception *fault, uint64_t la, unsigned access, uint32_t why,
		      const struct insn_paging *pg)
{
	uint32_t err = why;

	if (access & INSN_ACC_WRITE)
		err |= INSN_PF_WRITE;
	if (access & INSN_ACC_USER)
		err |= INSN_PF_USER;
	/* The fetch bit is reported only where fetches can fault on their own. */
	if ((access & INSN_ACC_FETCH) &&
	    ((pg->efer & INSN_EFER_NXE) || (pg->cr4 & INSN_CR4_SMEP)))
		err |= INSN_PF_FETCH;
	*fault = (struct insn_exception){ .vector = INSN_VEC_PF, .has_error_code = true,
					  .error_code = err, .cr2 = la };
	return -EFAULT;
}

/* Check the rights the walk collected (AND of R/W and U/S, OR of NX over
 * every level) against @access. */
static bool access_allowed(const struct insn_paging *pg, unsigned access, bool writable,
			   bool user, bool nx, uint64_t cr0)
{
	bool user_access = access & INSN_ACC_USER;

	if (access & INSN_ACC_NOCHECK)
		return true;
	if (user_access && !user)
		return false;
	if (access & INSN_ACC_FETCH) {
		if (nx)
			return false;
		if (!user_access && user && (pg->cr4 & INSN_CR4_SMEP))
			return false;
		return true;
	}
	if (!user_access && user && (pg->cr4 & INSN_CR4_SMAP) && !(access & INSN_ACC_AC))
		return false;
	if ((access & INSN_ACC_WRITE) && !writable && (user_access || (cr0 & INSN_CR0_WP)))
		return false;
	return true;
}

/* The walk behind insn_translate(); with @set_ad, once the access is known
 * to be allowed, the accessed bit of every entry on the way and the dirty
 * bit of the last one are set as the CPU sets them for a store (an atomic
 * OR, so that another vCPU's edits of the same entry survive). */
static int walk(const struct guest_mem *gm, const struct insn_paging *pg, uint64_t la,
		unsigned access, uint64_t *gpa, struct insn_exception *fault, bool set_ad)
{
	unsigned levels = pg->cr4 & INSN_CR4_LA57 ? 5 : 4;
	uint64_t table = pg->cr3 & PTE_ADDR, slots[5];
	bool writable = true, user = true, nx = false, nxe = pg->efer & INSN_EFER_NXE;

	if (!(pg->cr0 & INSN_CR0_PG) || !(pg->cr4 & INSN_CR4_PAE) || !(pg->efer & INSN_EFER_LMA))
		return -ENOTSUP;
	if (!insn_canonical(pg, la)) {
		*fault = (struct insn_exception){ .vector = INSN_VEC_GP, .has_error_code = true };
		return -EFAULT;
	}
	for (unsigned level = levels; level >= 1; level--) {
		unsigned shift = 12 + 9 * (level - 1);
		uint64_t slot = table + ((la >> shift) & 511) * 8, e;
		const uint64_t *p = guest_mem_ptr(gm, slot, 8);

		if (!p)
			return -ENXIO;
		slots[levels - level] = slot;
		/* Another vCPU may be editing its tables: one 8-byte read. */
		e = __atomic_load_n(p, __ATOMIC_RELAXED);
		if (!(e & PTE_P))
			return page_fault(fault, la, access, 0, pg);
		if (((e & PTE_NX) && !nxe) || ((e & PTE_PS) && level >= 4))
			return page_fault(fault, la, access, INSN_PF_PRESENT | INSN_PF_RSVD, pg);
		writable = writable && (e & PTE_RW);
		user = user && (e & PTE_US);
		nx = nx || (e & PTE_NX);
		if (level == 1 || (e & PTE_PS)) {
			/* A 4 KiB page, or a 2 MiB / 1 GiB one (bit 12 is PAT there). */
			uint64_t mask = (1ull << shift) - 1;

			if (!access_allowed(pg, access, writable, user, nx, pg->cr0))
				return page_fault(fault, la, access, INSN_PF_PRESENT, pg);
			*gpa = (e & PTE_ADDR & ~mask) | (la & mask);
			for (unsigned k = 0; set_ad && k <= levels - level; k++) {
				uint64_t *q = guest_mem_ptr(gm, slots[k], 8);
				uint64_t bits = k == levels - level ? PTE_A | PTE_D : PTE_A;

				if (q && (__atomic_load_n(q, __ATOMIC_RELAXED) & bits) != bits) {
					__atomic_fetch_or(q, bits, __ATOMIC_RELAXED);
					guest_mem_mark_dirty(gm, slots[k], 8);
				}
			}
			return 0;
		}
		table = e & PTE_ADDR;
	}
	return -ENXIO; /* not reached: level 1 always ends the walk */
}

int insn_translate(const struct guest_mem *gm, const struct insn_paging *pg, uint64_t la,
		   unsigned access, uint64_t *gpa, struct insn_exception *fault)
{
	return walk(gm, pg, la, access, gpa, fault, false);
}

int insn_read_linear(const struct guest_mem *gm, const struct insn_paging *pg, uint64_t la,
		     void *buf, size_t len, unsigned access, size_t *done,
		     struct insn_exception *fault)
{
	uint8_t *out = buf;
	size_t n = 0;
	int r = 0;

	while (n < len) {
		uint64_t gpa, cur = la + n;
		size_t chunk = PAGE_SIZE - (cur & (PAGE_SIZE - 1));
		const void *src;

		if (chunk > len - n)
			chunk = len - n;
		r = insn_translate(gm, pg, cur, access, &gpa, fault);
		if (r)
			break;
		src = guest_mem_ptr(gm, gpa, chunk);
		if (!src) {
			r = -ENXIO;
			break;
		}
		memcpy(out + n, src, chunk);
		n += chunk;
	}
	if (done)
		*done = n;
	return r;
}

int insn_write_linear(const struct guest_mem *gm, const struct insn_paging *pg, uint64_t la,
		      const void *buf, size_t len, unsigned access, struct insn_exception *fault)
{
	/* At most INSN_WRITE_MAX bytes: two pages. */
	uint64_t gpa[2];
	size_t chunk[2], n = 0;
	unsigned pages = 0;
	const uint8_t *in = buf;
	int r;

	if (len == 0 || len > INSN_WRITE_MAX)
		return -EINVAL;
	access |= INSN_ACC_WRITE;
	/* Every page first: a store that faults on its second page writes
	 * nothing on the first. */
	while (n < len) {
		uint64_t cur = la + n;
		size_t c = PAGE_SIZE - (cur & (PAGE_SIZE - 1));

		if (c > len - n)
			c = len - n;
		r = insn_translate(gm, pg, cur, access, &gpa[pages], fault);
		if (r)
			return r;
		if (!guest_mem_ptr(gm, gpa[pages], c))
			return -ENXIO;
		chunk[pages++] = c;
		n += c;
	}
	n = 0;
	for (unsigned k = 0; k < pages; k++) {
		uint64_t g;
		void *dst;

		/* Again, now setting the accessed and dirty bits. */
		r = walk(gm, pg, la + n, access, &g, fault, true);
		if (r)
			return r;
		dst = guest_mem_ptr(gm, g, chunk[k]);
		if (!dst)
			return -ENXIO;
		memcpy(dst, in + n, chunk[k]);
		guest_mem_mark_dirty(gm, g, chunk[k]);
		n += chunk[k];
	}
	return 0;
}

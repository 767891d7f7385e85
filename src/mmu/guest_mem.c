/* Guest RAM: one MAP_NORESERVE reservation, carved into KVM memory slots
 * around the 32-bit MMIO hole, and the checked translation every VMM access
 * to guest memory goes through. */
#include "vmrun/guest_mem.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "vmrun/x86.h"

int guest_mem_init(struct guest_mem *gm, uint64_t ram_size)
{
	uint64_t gpa[2], size[2];
	unsigned n;
	void *map;

	memset(gm, 0, sizeof(*gm));
	if (!ram_size || (ram_size & 0xfff))
		return -EINVAL;
	n = x86_layout_ram(ram_size, gpa, size);
	/* MAP_NORESERVE: the guest pays for the pages it touches, not for
	 * --mem; a 256 MiB guest that runs a hello world costs a few pages. */
	map = mmap(NULL, ram_size, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (map == MAP_FAILED)
		return -errno;
	gm->mapping = map;
	gm->mapping_len = ram_size;
	gm->ram_size = ram_size;
	gm->n_regions = n;
	for (unsigned i = 0, off = 0; i < n; i++) {
		struct guest_mem_region *r = &gm->regions[i];
		uint64_t pages = size[i] >> GUEST_PAGE_SHIFT;

		r->gpa = gpa[i];
		r->size = size[i];
		r->host = gm->mapping + off;
		r->dirty_words = (size_t)((pages + 63) / 64);
		r->dirty = calloc(r->dirty_words, sizeof(uint64_t));
		if (!r->dirty) {
			guest_mem_exit(gm);
			return -ENOMEM;
		}
		off += size[i];
	}
	return 0;
}

int guest_mem_init_file(struct guest_mem *gm, uint64_t ram_size, int fd)
{
	int r = guest_mem_init(gm, ram_size);

	if (r)
		return r;
	/* Each region over its own range of the file, copy-on-write: the
	 * file is never written, pages load on first touch, and the mapping
	 * costs the same for 64 MiB as for 64 GiB. */
	for (unsigned i = 0; i < gm->n_regions; i++) {
		struct guest_mem_region *g = &gm->regions[i];
		void *p = mmap(g->host, g->size, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, fd, (off_t)g->gpa);

		if (p == MAP_FAILED) {
			r = -errno;
			guest_mem_exit(gm);
			return r;
		}
	}
	gm->file_backed = true;
	return 0;
}

void guest_mem_exit(struct guest_mem *gm)
{
	if (gm->mapping)
		munmap(gm->mapping, gm->mapping_len);
	for (unsigned i = 0; i < gm->n_regions; i++)
		free(gm->regions[i].dirty);
	memset(gm, 0, sizeof(*gm));
}

void guest_mem_mark_dirty(const struct guest_mem *gm, uint64_t gpa, uint64_t len)
{
	uint64_t end; /* last byte, saturated */

	if (!len)
		return;
	end = len - 1 > UINT64_MAX - gpa ? UINT64_MAX : gpa + len - 1;
	for (unsigned i = 0; i < gm->n_regions; i++) {
		const struct guest_mem_region *r = &gm->regions[i];
		uint64_t r_end = r->gpa + r->size - 1;
		uint64_t lo = gpa > r->gpa ? gpa : r->gpa;
		uint64_t hi = end < r_end ? end : r_end;

		if (lo > hi)
			continue;
		/* One atomic OR per bitmap word, whatever the range's length. */
		for (uint64_t p = (lo - r->gpa) >> GUEST_PAGE_SHIFT,
			      last = (hi - r->gpa) >> GUEST_PAGE_SHIFT; p <= last;) {
			uint64_t n = last - p + 1 < 64 - p % 64 ? last - p + 1 : 64 - p % 64;
			uint64_t mask = (n == 64 ? ~0ull : ((1ull << n) - 1)) << (p % 64);

			__atomic_fetch_or(&r->dirty[p / 64], mask, __ATOMIC_RELEASE);
			p += n;
		}
	}
}

uint64_t guest_mem_dirty_take(const struct guest_mem *gm, unsigned region, size_t word)
{
	if (region >= gm->n_regions || word >= gm->regions[region].dirty_words)
		return 0;
	return __atomic_exchange_n(&gm->regions[region].dirty[word], 0, __ATOMIC_ACQ_REL);
}

/* (Re)declare every slot with @flags. */
static int set_slots(const struct guest_mem *gm, int vm_fd, uint32_t flags)
{
	for (unsigned i = 0; i < gm->n_regions; i++) {
		struct kvm_userspace_memory_region slot = {
			.slot = i,
			.flags = flags,
			.guest_phys_addr = gm->regions[i].gpa,
			.memory_size = gm->regions[i].size,
			.userspace_addr = (uintptr_t)gm->regions[i].host,
		};

		if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0)
			return -errno;
	}
	return 0;
}

int guest_mem_register(const struct guest_mem *gm, int vm_fd)
{
	return set_slots(gm, vm_fd, 0);
}

int guest_mem_dirty_log_start(struct guest_mem *gm, int vm_fd)
{
	int r;

	if (gm->dirty_logging)
		return 0;
	if (!gm->manual_protect) {
		struct kvm_enable_cap cap = { .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 };
		int have = ioctl(vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);

		if (have <= 0 || !(have & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE))
			return -ENOTSUP;
		cap.args[0] = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE |
			      (have & KVM_DIRTY_LOG_INITIALLY_SET);
		if (ioctl(vm_fd, KVM_ENABLE_CAP, &cap) < 0)
			return -errno;
		gm->manual_protect = true;
	}
	r = set_slots(gm, vm_fd, KVM_MEM_LOG_DIRTY_PAGES);
	if (r) {
		(void)!set_slots(gm, vm_fd, 0);
		return r;
	}
	gm->dirty_logging = true;
	return 0;
}

void guest_mem_dirty_log_stop(struct guest_mem *gm, int vm_fd)
{
	if (!gm->dirty_logging)
		return;
	(void)!set_slots(gm, vm_fd, 0);
	gm->dirty_logging = false;
}

int guest_mem_dirty_fetch(struct guest_mem *gm, int vm_fd, unsigned region, uint64_t *bitmap)
{
	const struct guest_mem_region *r;
	struct kvm_dirty_log log = { .slot = region };
	uint64_t *kvm_bits;

	if (region >= gm->n_regions)
		return -EINVAL;
	r = &gm->regions[region];
	/* KVM writes its whole bitmap: into a scratch one, then ORed in. */
	kvm_bits = calloc(r->dirty_words, sizeof(uint64_t));
	if (!kvm_bits)
		return -ENOMEM;
	log.dirty_bitmap = kvm_bits;
	if (ioctl(vm_fd, KVM_GET_DIRTY_LOG, &log) < 0) {
		int e = -errno;

		free(kvm_bits);
		return e;
	}
	for (size_t w = 0; w < r->dirty_words; w++)
		bitmap[w] |= kvm_bits[w] | guest_mem_dirty_take(gm, region, w);
	free(kvm_bits);
	return 0;
}

int guest_mem_dirty_clear(struct guest_mem *gm, int vm_fd, unsigned region, size_t word,
			  size_t n_words, const uint64_t *mask)
{
	const struct guest_mem_region *r;
	uint64_t pages, first = (uint64_t)word * 64, n;
	struct kvm_clear_dirty_log clr;

	if (region >= gm->n_regions)
		return -EINVAL;
	r = &gm->regions[region];
	pages = r->size >> GUEST_PAGE_SHIFT;
	if (word > r->dirty_words || n_words > r->dirty_words - word)
		return -EINVAL;
	/* KVM wants a multiple of 64 pages, or the run to the slot's end. */
	n = (uint64_t)n_words * 64;
	if (first + n > pages)
		n = pages - first;
	if (!n)
		return 0;
	clr = (struct kvm_clear_dirty_log){ .slot = region, .num_pages = (uint32_t)n,
					    .first_page = first, .dirty_bitmap = (void *)mask };
	return ioctl(vm_fd, KVM_CLEAR_DIRTY_LOG, &clr) < 0 ? -errno : 0;
}

void *guest_mem_ptr(const struct guest_mem *gm, uint64_t gpa, uint64_t len)
{
	if (!len)
		len = 1;
	for (unsigned i = 0; i < gm->n_regions; i++) {
		const struct guest_mem_region *r = &gm->regions[i];

		/* Written so that no sum can overflow: gpa - r->gpa is only
		 * computed once gpa >= r->gpa. */
		if (gpa < r->gpa || gpa - r->gpa >= r->size)
			continue;
		if (len > r->size - (gpa - r->gpa))
			return NULL;
		return r->host + (gpa - r->gpa);
	}
	return NULL;
}

bool guest_page_is_zero(const void *page)
{
	const uint64_t *w = page;

	for (size_t i = 0; i < GUEST_PAGE_SIZE / 8; i += 4)
		if (w[i] | w[i + 1] | w[i + 2] | w[i + 3])
			return false;
	return true;
}

int guest_mem_write(const struct guest_mem *gm, uint64_t gpa, const void *src, size_t len)
{
	void *dst = guest_mem_ptr(gm, gpa, len);

	if (!dst)
		return -EFAULT;
	memcpy(dst, src, len);
	guest_mem_mark_dirty(gm, gpa, len);
	return 0;
}

int guest_mem_read(const struct guest_mem *gm, uint64_t gpa, void *dst, size_t len)
{
	const void *src = guest_mem_ptr(gm, gpa, len);

	if (!src)
		return -EFAULT;
	memcpy(dst, src, len);
	return 0;
}

/* Guest physical memory (src/mmu/).  Every guest-physical access the VMM makes
 * goes through guest_mem_ptr(), the one checked translation. */
#ifndef VMRUN_GUEST_MEM_H
#define VMRUN_GUEST_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GUEST_MEM_MAX_REGIONS 4

#define GUEST_PAGE_SHIFT 12
#define GUEST_PAGE_SIZE (1ull << GUEST_PAGE_SHIFT)

struct guest_mem_region {
	uint64_t gpa;  /* first guest-physical address */
	uint64_t size; /* bytes, a multiple of 4 KiB */
	uint8_t *host; /* host mapping of gpa */
	/* The VMM's own dirty log: one bit per 4 KiB page of this region that
	 * a device wrote (guest_mem_mark_dirty()).  KVM's dirty log sees only
	 * the guest's own writes; migration needs both. */
	uint64_t *dirty;
	size_t dirty_words;
};

struct guest_mem {
	struct guest_mem_region regions[GUEST_MEM_MAX_REGIONS];
	unsigned n_regions;
	uint64_t ram_size;  /* sum of region sizes */
	uint8_t *mapping;   /* one reservation that holds all regions */
	size_t mapping_len;
	bool file_backed;   /* guest_mem_init_file(): regions map a memory file */
	bool dirty_logging; /* guest_mem_dirty_log_start() in force */
	bool manual_protect; /* KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 enabled on the VM */
};

/* Map @ram_size bytes of anonymous, MAP_NORESERVE guest RAM laid out around
 * the 32-bit MMIO hole (x86_layout_ram()).  @gm is caller storage.
 * Returns 0 or -errno. */
int guest_mem_init(struct guest_mem *gm, uint64_t ram_size) __attribute__((warn_unused_result));

/* Like guest_mem_init(), but each region maps bytes [gpa, gpa + size) of
 * @fd (a snapshot's memory file) MAP_PRIVATE: the guest sees the file's
 * contents, its writes stay in this process, the file is never written.
 * The caller checked that the file is large enough (a page past its end
 * would raise SIGBUS) and may close @fd afterwards.  Returns 0 or -errno. */
int guest_mem_init_file(struct guest_mem *gm, uint64_t ram_size, int fd)
	__attribute__((warn_unused_result));

/* Unmap what guest_mem_init() mapped; safe on a zeroed struct. */
void guest_mem_exit(struct guest_mem *gm);

/* Register every region as a KVM memory slot on @vm_fd.  Returns 0 or -errno. */
int guest_mem_register(const struct guest_mem *gm, int vm_fd) __attribute__((warn_unused_result));

/* Host pointer for guest-physical [gpa, gpa + len), or NULL when any byte of
 * that range is outside RAM (or the range wraps).  len == 0 is treated as 1. */
void *guest_mem_ptr(const struct guest_mem *gm, uint64_t gpa, uint64_t len);

/* Whether the 4 KiB at @page (8-byte aligned) are all zero. */
bool guest_page_is_zero(const void *page);

/* Copy to / from guest RAM.  Returns 0, or -EFAULT when the range is not RAM.
 * guest_mem_write() marks what it wrote dirty. */
int guest_mem_write(const struct guest_mem *gm, uint64_t gpa, const void *src, size_t len)
	__attribute__((warn_unused_result));
int guest_mem_read(const struct guest_mem *gm, uint64_t gpa, void *dst, size_t len)
	__attribute__((warn_unused_result));

/* Record that the VMM wrote guest-physical [gpa, gpa + len): every page it
 * touches is set in the dirty log.  Call it after the bytes are in place
 * (a collector that runs in between then sees the page again next round).
 * Bytes outside RAM are ignored.  Safe from any thread. */
void guest_mem_mark_dirty(const struct guest_mem *gm, uint64_t gpa, uint64_t len);

/* Take and clear word @word (pages 64*word .. 64*word+63) of region
 * @region's dirty log, atomically.  0 for a word past the end. */
uint64_t guest_mem_dirty_take(const struct guest_mem *gm, unsigned region, size_t word);

/* ---- dirty logging (live migration) ----
 *
 * KVM logs the guest's own writes per slot (KVM_MEM_LOG_DIRTY_PAGES) only
 * while a migration runs.  With manual protection (KVM_CAP_MANUAL_DIRTY_-
 * LOG_PROTECT2, initially set), starting costs nothing up front: every page
 * counts as dirty until guest_mem_dirty_clear() write-protects it, which
 * the sender does for each chunk just before it reads the chunk's pages;
 * a write after that sets the bit again for the next round. */

/* Turn KVM's dirty log on for every slot of @vm_fd.  Returns 0 or -errno
 * (-ENOTSUP without KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2). */
int guest_mem_dirty_log_start(struct guest_mem *gm, int vm_fd) __attribute__((warn_unused_result));
/* Turn it off again (a finished or failed migration).  Idempotent. */
void guest_mem_dirty_log_stop(struct guest_mem *gm, int vm_fd);

/* Add region @region's dirty pages to @bitmap (one bit per page, the
 * region's dirty_words words; bits already set stay): KVM's log of guest
 * writes and the VMM's own (taken, so cleared: the caller must keep those
 * bits until it sent the pages).  KVM's bits stay set until
 * guest_mem_dirty_clear().  Returns 0 or -errno. */
int guest_mem_dirty_fetch(struct guest_mem *gm, int vm_fd, unsigned region, uint64_t *bitmap)
	__attribute__((warn_unused_result));

/* Clear KVM's dirty bits (and write-protect the pages again) for the pages
 * of region @region set in @mask, which covers pages [64 * @word,
 * 64 * (@word + @n_words)).  Returns 0 or -errno. */
int guest_mem_dirty_clear(struct guest_mem *gm, int vm_fd, unsigned region, size_t word,
			  size_t n_words, const uint64_t *mask) __attribute__((warn_unused_result));

#endif

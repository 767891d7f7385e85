/* Port-I/O and MMIO dispatch (src/devices/bus.c).
 *
 * A device embeds a struct bus_region and claims an address range with
 * bus_register() exactly once; the bus never allocates or frees regions.
 * Registration happens while the VM is built; the set of regions is immutable
 * once vCPUs run, so lookups take no lock.  Accesses that no region claims
 * read as all-ones and writes are dropped, each address logged once. */
#ifndef VMRUN_BUS_H
#define VMRUN_BUS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct bus_region;

struct bus_ops {
	/* @offset is relative to the region's base; @size is 1, 2, 4 or 8.
	 * Return 0, or -errno (the access is then treated as unclaimed data:
	 * reads see all-ones). */
	int (*read)(struct bus_region *region, uint64_t offset, void *data, unsigned size);
	int (*write)(struct bus_region *region, uint64_t offset, const void *data, unsigned size);
};

struct bus_region {
	uint64_t base;
	uint64_t len;
	const struct bus_ops *ops;
	void *opaque; /* the owning device */
	const char *name;
};

#define BUS_MAX_REGIONS 64
#define BUS_LOGGED_MAX 32

struct bus {
	const char *name; /* "port" or "mmio", for messages */
	struct bus_region *regions[BUS_MAX_REGIONS]; /* sorted by base */
	unsigned n_regions;
	pthread_mutex_t log_lock; /* guards the unclaimed-access log below */
	uint64_t logged[BUS_LOGGED_MAX];
	unsigned n_logged;
	bool log_full_reported;
	uint64_t unclaimed_count;
};

void bus_init(struct bus *bus, const char *name);
void bus_exit(struct bus *bus);

/* Claim [region->base, region->base + region->len).  Returns 0, -EEXIST when
 * it overlaps a claimed range, -EINVAL for an empty or wrapping range, or
 * -ENOSPC when the bus is full. */
int bus_register(struct bus *bus, struct bus_region *region) __attribute__((warn_unused_result));

/* The region containing @addr, or NULL. */
struct bus_region *bus_find(const struct bus *bus, uint64_t addr);

/* Dispatch one access of @size bytes (1, 2, 4 or 8) at @addr.  An access not
 * wholly inside one region is unclaimed.  Returns true when a device claimed
 * it; on an unclaimed read @data is filled with 0xff. */
bool bus_read(struct bus *bus, uint64_t addr, void *data, unsigned size);
bool bus_write(struct bus *bus, uint64_t addr, const void *data, unsigned size);

#endif

/* PIO/MMIO bus: a sorted array of device-owned regions, binary-searched. */
#include "vmrun/bus.h"

#include <errno.h>
#include <string.h>

#include "vmrun/log.h"

void bus_init(struct bus *bus, const char *name)
{
	memset(bus, 0, sizeof(*bus));
	bus->name = name;
	pthread_mutex_init(&bus->log_lock, NULL);
}

void bus_exit(struct bus *bus)
{
	pthread_mutex_destroy(&bus->log_lock);
	bus->n_regions = 0;
}

/* Last region with base <= addr, or -1. */
static int bus_index_at_or_below(const struct bus *bus, uint64_t addr)
{
	int lo = 0, hi = (int)bus->n_regions - 1, found = -1;

	while (lo <= hi) {
		int mid = lo + (hi - lo) / 2;

		if (bus->regions[mid]->base <= addr) {
			found = mid;
			lo = mid + 1;
		} else {
			hi = mid - 1;
		}
	}
	return found;
}

int bus_register(struct bus *bus, struct bus_region *region)
{
	uint64_t last;
	int below;
	unsigned pos;

	if (!region->len || !region->ops || region->base + region->len - 1 < region->base)
		return -EINVAL;
	if (bus->n_regions == BUS_MAX_REGIONS)
		return -ENOSPC;
	last = region->base + region->len - 1;
	below = bus_index_at_or_below(bus, last);
	/* Only the region starting at or below our last byte can overlap: the
	 * regions are disjoint and sorted. */
	if (below >= 0) {
		const struct bus_region *r = bus->regions[below];

		if (r->base + (r->len - 1) >= region->base)
			return -EEXIST;
	}
	pos = (unsigned)(below + 1);
	memmove(&bus->regions[pos + 1], &bus->regions[pos],
		(bus->n_regions - pos) * sizeof(bus->regions[0]));
	bus->regions[pos] = region;
	bus->n_regions++;
	return 0;
}

struct bus_region *bus_find(const struct bus *bus, uint64_t addr)
{
	int i = bus_index_at_or_below(bus, addr);
	struct bus_region *r;

	if (i < 0)
		return NULL;
	r = bus->regions[i];
	return addr - r->base < r->len ? r : NULL;
}

/* Log an unclaimed access once per address (up to BUS_LOGGED_MAX addresses):
 * a guest probing absent hardware must not flood stderr. */
static void bus_log_unclaimed(struct bus *bus, uint64_t addr, unsigned size, bool is_write)
{
	bool first = true;

	pthread_mutex_lock(&bus->log_lock);
	bus->unclaimed_count++;
	for (unsigned i = 0; i < bus->n_logged; i++)
		if (bus->logged[i] == addr)
			first = false;
	if (first) {
		if (bus->n_logged < BUS_LOGGED_MAX) {
			bus->logged[bus->n_logged++] = addr;
			log_warn("unclaimed %s %s at 0x%llx (%u bytes)%s", bus->name,
				 is_write ? "write" : "read", (unsigned long long)addr, size,
				 is_write ? ": ignored" : ": reads as all-ones");
		} else if (!bus->log_full_reported) {
			bus->log_full_reported = true;
			log_warn("more unclaimed %s addresses: no longer logged", bus->name);
		}
	}
	pthread_mutex_unlock(&bus->log_lock);
}

static struct bus_region *bus_claim(struct bus *bus, uint64_t addr, unsigned size)
{
	struct bus_region *r = bus_find(bus, addr);

	if (!r || size - 1 > r->len - 1 - (addr - r->base))
		return NULL;
	return r;
}

bool bus_read(struct bus *bus, uint64_t addr, void *data, unsigned size)
{
	struct bus_region *r = bus_claim(bus, addr, size);

	if (r && r->ops->read && r->ops->read(r, addr - r->base, data, size) == 0)
		return true;
	memset(data, 0xff, size);
	if (!r)
		bus_log_unclaimed(bus, addr, size, false);
	return r != NULL;
}

bool bus_write(struct bus *bus, uint64_t addr, const void *data, unsigned size)
{
	struct bus_region *r = bus_claim(bus, addr, size);

	if (r && r->ops->write) {
		(void)r->ops->write(r, addr - r->base, data, size);
		return true;
	}
	if (!r)
		bus_log_unclaimed(bus, addr, size, true);
	return r != NULL;
}

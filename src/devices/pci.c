// SPDX-License-Identifier: MIT
/*
 * PCI host bridge, bus 0, configuration mechanism #1 (vmrun/pci.h).
 *
 * Configuration space is a byte array with a mask of the bits the guest may
 * write: BAR sizing (write all-ones, read back the size mask) falls out of
 * that mask, and no guest write can touch a read-only field.  Every write
 * that may move a BAR re-derives where each BAR is decoded; a placement on
 * RAM, outside the window or over another BAR is refused (not decoded).
 */
#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vmrun/log.h"
#include "vmrun/pci.h"
#include "vmrun/state.h"

#define PCI_HOST_VENDOR 0x1b36 /* Red Hat: the generic host bridge */
#define PCI_HOST_DEVICE 0x0008
#define PCI_WARN_MAX 16

/* KVM's default irqchip routes (arch/x86/kvm/irq_comm.c): GSI 0-15 to the
 * IOAPIC pin and the PIC, 16-23 to the IOAPIC.  KVM_SET_GSI_ROUTING
 * replaces the whole table, so they go with every push. */
#define PCI_DEFAULT_ROUTES (16 * 2 + 8)

struct pci_msi_route {
	bool valid;
	uint64_t addr;
	uint32_t data;
};

struct pci_routes {
	struct pci_msi_route msi[PCI_MSI_MAX_GSIS];
	struct kvm_irq_routing table; /* followed by its entries */
};

static uint32_t cfg_get(const struct pci_function *fn, unsigned off, unsigned size)
{
	uint32_t v = 0;

	for (unsigned i = 0; i < size; i++)
		v |= (uint32_t)fn->cfg[off + i] << (8 * i);
	return v;
}

static void cfg_put(struct pci_function *fn, unsigned off, unsigned size, uint32_t v)
{
	for (unsigned i = 0; i < size; i++)
		fn->cfg[off + i] = (uint8_t)(v >> (8 * i));
}

static void pci_guest_warn(struct pci_bus *bus, const char *fmt, const char *name,
			   unsigned long long a, unsigned long long b)
{
	if (bus->warned >= PCI_WARN_MAX)
		return;
	if (++bus->warned == PCI_WARN_MAX)
		log_warn("pci: more guest errors: no longer logged");
	else
		log_warn(fmt, name, a, b);
}

/* ---- INTx ---- */

static bool intx_disabled(const struct pci_function *fn)
{
	return fn->cfg[PCI_COMMAND + 1] & (PCI_COMMAND_INTX_DISABLE >> 8);
}

unsigned pci_function_intx_gsi(const struct pci_function *fn)
{
	return PCI_INTX_GSI_BASE + (fn->slot - 1) % PCI_INTX_PINS;
}

/* Recompute @fn's contribution to its pin.  Caller holds intx_lock;
 * @disabled is the Interrupt Disable bit. */
static void intx_update(struct pci_function *fn, bool disabled)
{
	struct pci_bus *bus = fn->bus;
	unsigned pin = (fn->slot - 1) % PCI_INTX_PINS;
	uint32_t before = bus->intx_assert[pin], bit = 1u << fn->slot;

	if (fn->intx_level && !disabled)
		bus->intx_assert[pin] |= bit;
	else
		bus->intx_assert[pin] &= ~bit;
	if (!before != !bus->intx_assert[pin] && bus->host && bus->host->set_irq)
		bus->host->set_irq(bus->host_opaque, PCI_INTX_GSI_BASE + pin,
				   bus->intx_assert[pin] != 0);
}

void pci_function_set_intx(struct pci_function *fn, bool level)
{
	struct pci_bus *bus = fn->bus;

	if (!bus || !fn->cfg[PCI_INTERRUPT_PIN])
		return;
	pthread_mutex_lock(&bus->intx_lock);
	fn->intx_level = level;
	/* The command byte is read without the bus lock: a torn read is a
	 * single byte, and a config write re-runs intx_update() afterwards. */
	intx_update(fn, __atomic_load_n(&fn->cfg[PCI_COMMAND + 1], __ATOMIC_RELAXED) &
				(PCI_COMMAND_INTX_DISABLE >> 8));
	pthread_mutex_unlock(&bus->intx_lock);
}

/* ---- BAR placement ---- */

static uint64_t bar_programmed(const struct pci_function *fn, unsigned b)
{
	return cfg_get(fn, PCI_BAR0 + 4 * b, 4) & ~0xfull;
}

static bool bar_wanted(const struct pci_bus *bus, const struct pci_function *fn, unsigned b,
		       uint64_t *addr)
{
	uint64_t a = bar_programmed(fn, b), size = fn->bars[b].size;
	uint64_t wend = bus->window.base + bus->window.len;

	*addr = a;
	return size && (fn->cfg[PCI_COMMAND] & PCI_COMMAND_MEMORY) && a >= bus->window.base &&
	       a < wend && size <= wend - a;
}

static bool bar_overlaps(struct pci_bus *bus, uint64_t addr, uint64_t size)
{
	for (unsigned s = 0; s < PCI_MAX_SLOTS; s++) {
		const struct pci_function *f = bus->slots[s];

		for (unsigned b = 0; f && b < PCI_NUM_BARS; b++) {
			const struct pci_bar *o = &f->bars[b];

			if (o->mapped && addr < o->addr + o->size && o->addr < addr + size)
				return true;
		}
	}
	return false;
}

static void bar_set(struct pci_function *fn, unsigned b, bool mapped, uint64_t addr)
{
	fn->bars[b].mapped = mapped;
	fn->bars[b].addr = addr;
	if (fn->ops && fn->ops->bar_map)
		fn->ops->bar_map(fn, b, mapped, addr);
}

/* Make every BAR's decoding match its registers.  Caller holds the bus
 * lock for writing.  Unmaps first, so that a BAR may move onto a place
 * another one just left. */
static void bars_update(struct pci_bus *bus)
{
	uint64_t addr;

	for (unsigned s = 0; s < PCI_MAX_SLOTS; s++) {
		struct pci_function *f = bus->slots[s];

		for (unsigned b = 0; f && b < PCI_NUM_BARS; b++) {
			struct pci_bar *bar = &f->bars[b];
			bool want = bar_wanted(bus, f, b, &addr);

			if (bar->mapped && (!want || addr != bar->addr))
				bar_set(f, b, false, 0);
		}
	}
	for (unsigned s = 0; s < PCI_MAX_SLOTS; s++) {
		struct pci_function *f = bus->slots[s];

		for (unsigned b = 0; f && b < PCI_NUM_BARS; b++) {
			struct pci_bar *bar = &f->bars[b];
			bool mem = f->cfg[PCI_COMMAND] & PCI_COMMAND_MEMORY;
			bool want = bar_wanted(bus, f, b, &addr);

			if (!bar->size || bar->mapped)
				continue;
			if (mem && !want) {
				/* Sizing leaves all-ones in a BAR for a moment; only
				 * a placement the guest means is worth a warning. */
				if (!bar->refused && (addr | (bar->size - 1) | 0xf) != 0xffffffffu) {
					bar->refused = true;
					pci_guest_warn(bus, "%s: BAR at 0x%llx (%llu bytes) is outside "
						       "the PCI window (RAM or another device): "
						       "not decoded", f->name,
						       (unsigned long long)addr, bar->size);
				}
				continue;
			}
			if (!want)
				continue;
			if (bar_overlaps(bus, addr, bar->size)) {
				if (!bar->refused) {
					bar->refused = true;
					pci_guest_warn(bus, "%s: BAR at 0x%llx (%llu bytes) overlaps "
						       "another BAR: not decoded", f->name,
						       (unsigned long long)addr, bar->size);
				}
				continue;
			}
			bar->refused = false;
			bar_set(f, b, true, addr);
		}
	}
}

/* ---- configuration space ---- */

static struct pci_function *slot_fn(struct pci_bus *bus, unsigned slot)
{
	return slot < PCI_MAX_SLOTS ? bus->slots[slot] : NULL;
}

static bool access_ok(unsigned offset, unsigned size)
{
	return (size == 1 || size == 2 || size == 4) && offset < PCI_CFG_SIZE &&
	       size <= PCI_CFG_SIZE - offset;
}

static uint32_t config_read_locked(struct pci_bus *bus, unsigned slot, unsigned offset,
				   unsigned size)
{
	struct pci_function *fn = slot_fn(bus, slot);
	uint32_t v;

	if (!fn || !access_ok(offset, size))
		return 0xffffffffu >> (32 - 8 * (size >= 1 && size <= 4 ? size : 4));
	v = cfg_get(fn, offset, size);
	/* Status.Interrupt is live. */
	if (offset <= PCI_STATUS && offset + size > PCI_STATUS) {
		bool level;

		pthread_mutex_lock(&bus->intx_lock);
		level = fn->intx_level;
		pthread_mutex_unlock(&bus->intx_lock);
		if (level)
			v |= (uint32_t)PCI_STATUS_INTERRUPT << (8 * (PCI_STATUS - offset));
	}
	if (fn->ops && fn->ops->config_read)
		fn->ops->config_read(fn, offset, size, &v);
	return v;
}

static void config_write_locked(struct pci_bus *bus, unsigned slot, unsigned offset,
				unsigned size, uint32_t val)
{
	struct pci_function *fn = slot_fn(bus, slot);

	if (!fn || !access_ok(offset, size))
		return;
	for (unsigned i = 0; i < size; i++) {
		unsigned o = offset + i;
		uint8_t b = (uint8_t)(val >> (8 * i));

		fn->cfg[o] = (uint8_t)((fn->cfg[o] & ~fn->wmask[o]) | (b & fn->wmask[o]));
	}
	if (offset < PCI_COMMAND + 2 && offset + size > PCI_COMMAND) {
		pthread_mutex_lock(&bus->intx_lock);
		if (fn->cfg[PCI_INTERRUPT_PIN])
			intx_update(fn, intx_disabled(fn));
		pthread_mutex_unlock(&bus->intx_lock);
	}
	if ((offset < PCI_COMMAND + 2 && offset + size > PCI_COMMAND) ||
	    (offset < PCI_BAR0 + 4 * PCI_NUM_BARS && offset + size > PCI_BAR0))
		bars_update(bus);
	if (fn->ops && fn->ops->config_written)
		fn->ops->config_written(fn, offset, size);
}

uint32_t pci_config_read(struct pci_bus *bus, unsigned slot, unsigned offset, unsigned size)
{
	uint32_t v;

	pthread_rwlock_wrlock(&bus->lock);
	v = config_read_locked(bus, slot, offset, size);
	pthread_rwlock_unlock(&bus->lock);
	return v;
}

void pci_config_write(struct pci_bus *bus, unsigned slot, unsigned offset, unsigned size,
		      uint32_t val)
{
	pthread_rwlock_wrlock(&bus->lock);
	config_write_locked(bus, slot, offset, size, val);
	pthread_rwlock_unlock(&bus->lock);
}

/* Decode CONFIG_ADDRESS for a data-port access at byte @k: the slot and
 * register, or false for a disabled address, another bus or function. */
static bool decode_address(uint32_t ca, unsigned k, unsigned *slot, unsigned *reg)
{
	if (!(ca & 0x80000000u) || ((ca >> 16) & 0xff) || ((ca >> 8) & 7))
		return false;
	*slot = (ca >> 11) & 0x1f;
	*reg = (ca & 0xfc) + k;
	return true;
}

static int addr_port_read(struct bus_region *region, uint64_t off, void *data, unsigned size)
{
	struct pci_bus *bus = region->opaque;
	uint32_t v;

	if (off != 0 || size != 4)
		return -EINVAL; /* only dword accesses reach CONFIG_ADDRESS: all-ones */
	pthread_rwlock_wrlock(&bus->lock);
	v = bus->config_address;
	pthread_rwlock_unlock(&bus->lock);
	memcpy(data, &v, 4);
	return 0;
}

static int addr_port_write(struct bus_region *region, uint64_t off, const void *data,
			   unsigned size)
{
	struct pci_bus *bus = region->opaque;
	uint32_t v;

	if (off != 0 || size != 4)
		return 0; /* byte writes (Linux's probe writes 0xCFB): ignored */
	memcpy(&v, data, 4);
	pthread_rwlock_wrlock(&bus->lock);
	bus->config_address = v & 0x80fffffcu;
	pthread_rwlock_unlock(&bus->lock);
	return 0;
}

static int data_port_read(struct bus_region *region, uint64_t off, void *data, unsigned size)
{
	struct pci_bus *bus = region->opaque;
	unsigned slot, reg;
	uint32_t v = 0xffffffffu;

	if (size > 4 || off + size > 4)
		return -EINVAL;
	pthread_rwlock_wrlock(&bus->lock);
	if (decode_address(bus->config_address, (unsigned)off, &slot, &reg))
		v = config_read_locked(bus, slot, reg, size);
	pthread_rwlock_unlock(&bus->lock);
	memcpy(data, &v, size); /* little-endian host */
	return 0;
}

static int data_port_write(struct bus_region *region, uint64_t off, const void *data,
			   unsigned size)
{
	struct pci_bus *bus = region->opaque;
	unsigned slot, reg;
	uint32_t v = 0;

	if (size > 4 || off + size > 4)
		return 0;
	memcpy(&v, data, size);
	pthread_rwlock_wrlock(&bus->lock);
	if (decode_address(bus->config_address, (unsigned)off, &slot, &reg))
		config_write_locked(bus, slot, reg, size, v);
	pthread_rwlock_unlock(&bus->lock);
	return 0;
}

static const struct bus_ops addr_port_ops = { .read = addr_port_read, .write = addr_port_write };
static const struct bus_ops data_port_ops = { .read = data_port_read, .write = data_port_write };

/* ---- the MMIO window ---- */

/* The decoded BAR holding [@gpa, @gpa + @size), or NULL.  Bus lock held. */
static struct pci_function *bar_at(struct pci_bus *bus, uint64_t gpa, unsigned size,
				   unsigned *bar, uint64_t *off)
{
	for (unsigned s = 0; s < PCI_MAX_SLOTS; s++) {
		struct pci_function *f = bus->slots[s];

		for (unsigned b = 0; f && b < PCI_NUM_BARS; b++) {
			const struct pci_bar *o = &f->bars[b];

			if (o->mapped && gpa >= o->addr && gpa - o->addr < o->size &&
			    size <= o->size - (gpa - o->addr)) {
				*bar = b;
				*off = gpa - o->addr;
				return f;
			}
		}
	}
	return NULL;
}

static int window_read(struct bus_region *region, uint64_t off, void *data, unsigned size)
{
	struct pci_bus *bus = region->opaque;
	struct pci_function *fn;
	unsigned bar;
	uint64_t boff;
	int r = -ENOENT;

	pthread_rwlock_rdlock(&bus->lock);
	fn = bar_at(bus, region->base + off, size, &bar, &boff);
	if (fn) {
		memset(data, 0, size);
		fn->ops->bar_read(fn, bar, boff, data, size);
		r = 0;
	}
	pthread_rwlock_unlock(&bus->lock);
	return r; /* nothing decoded there: all-ones */
}

static int window_write(struct bus_region *region, uint64_t off, const void *data, unsigned size)
{
	struct pci_bus *bus = region->opaque;
	struct pci_function *fn;
	unsigned bar;
	uint64_t boff;

	pthread_rwlock_rdlock(&bus->lock);
	fn = bar_at(bus, region->base + off, size, &bar, &boff);
	if (fn)
		fn->ops->bar_write(fn, bar, boff, data, size);
	pthread_rwlock_unlock(&bus->lock);
	return 0;
}

static const struct bus_ops window_ops = { .read = window_read, .write = window_write };

/* ---- functions ---- */

void pci_function_init(struct pci_function *fn, const char *name, uint16_t vendor,
		       uint16_t device, uint8_t rev, uint32_t class, uint16_t subvendor,
		       uint16_t subdevice, bool intx, const struct pci_function_ops *ops,
		       void *opaque)
{
	static const uint8_t command_mask[2] = {
		PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, PCI_COMMAND_INTX_DISABLE >> 8,
	};

	memset(fn, 0, sizeof(*fn));
	fn->name = name;
	fn->ops = ops;
	fn->opaque = opaque;
	cfg_put(fn, PCI_VENDOR_ID, 2, vendor);
	cfg_put(fn, PCI_DEVICE_ID, 2, device);
	fn->cfg[PCI_REVISION_ID] = rev;
	cfg_put(fn, PCI_CLASS_PROG, 3, class);
	cfg_put(fn, PCI_SUBSYSTEM_VENDOR_ID, 2, subvendor);
	cfg_put(fn, PCI_SUBSYSTEM_ID, 2, subdevice);
	fn->cfg[PCI_INTERRUPT_PIN] = intx ? 1 : 0;
	pci_function_set_wmask(fn, PCI_COMMAND, command_mask, 2);
	fn->wmask[PCI_CACHE_LINE_SIZE] = 0xff;
	fn->wmask[PCI_LATENCY_TIMER] = 0xff;
	fn->wmask[PCI_INTERRUPT_LINE] = 0xff;
	fn->cap_end = PCI_CAP_START;
}

void pci_function_set_wmask(struct pci_function *fn, unsigned offset, const void *mask,
			    unsigned len)
{
	if (offset < PCI_CFG_SIZE && len <= PCI_CFG_SIZE - offset)
		memcpy(&fn->wmask[offset], mask, len);
}

int pci_function_add_bar(struct pci_function *fn, unsigned bar, uint64_t size)
{
	uint32_t mask;

	if (bar >= PCI_NUM_BARS || size < 4096 || size > (256u << 20) || (size & (size - 1)) ||
	    fn->bus)
		return -EINVAL;
	fn->bars[bar].size = size;
	mask = (uint32_t)~(size - 1); /* the low bits read 0: memory, 32-bit, not prefetchable */
	pci_function_set_wmask(fn, PCI_BAR0 + 4 * bar, &mask, 4);
	return 0;
}

int pci_function_add_cap(struct pci_function *fn, uint8_t id, const void *body, unsigned len,
			 uint8_t *offset)
{
	unsigned off = fn->cap_end;

	if (off + 2 + len > PCI_CFG_SIZE)
		return -ENOSPC;
	fn->cfg[off] = id;
	fn->cfg[off + 1] = 0;
	memcpy(&fn->cfg[off + 2], body, len);
	if (fn->last_cap)
		fn->cfg[fn->last_cap + 1] = (uint8_t)off;
	else
		fn->cfg[PCI_CAPABILITY_LIST] = (uint8_t)off;
	fn->cfg[PCI_STATUS] |= PCI_STATUS_CAP_LIST;
	fn->last_cap = (uint8_t)off;
	fn->cap_end = (uint8_t)((off + 2 + len + 3) & ~3u);
	if (off + 2 + len + 3 >= PCI_CFG_SIZE)
		fn->cap_end = 0xfc; /* full: the next add fails */
	*offset = (uint8_t)off;
	return 0;
}

int pci_bus_add(struct pci_bus *bus, struct pci_function *fn)
{
	uint64_t cursor = bus->next_bar, wend = bus->window.base + bus->window.len;
	unsigned slot;

	for (slot = 1; slot < PCI_MAX_SLOTS && bus->slots[slot]; slot++)
		;
	if (slot == PCI_MAX_SLOTS)
		return -ENOSPC;
	for (unsigned b = 0; b < PCI_NUM_BARS; b++) {
		uint64_t size = fn->bars[b].size;

		if (!size)
			continue;
		cursor = (cursor + size - 1) & ~(size - 1);
		if (cursor >= wend || size > wend - cursor)
			return -ENOSPC;
		cfg_put(fn, PCI_BAR0 + 4 * b, 4, (uint32_t)cursor);
		cursor += size;
	}
	pthread_rwlock_wrlock(&bus->lock);
	bus->next_bar = cursor;
	fn->bus = bus;
	fn->slot = slot;
	bus->slots[slot] = fn;
	pthread_rwlock_unlock(&bus->lock);
	return (int)slot;
}

void pci_bus_enable_all(struct pci_bus *bus)
{
	pthread_rwlock_wrlock(&bus->lock);
	for (unsigned s = 0; s < PCI_MAX_SLOTS; s++)
		if (bus->slots[s])
			bus->slots[s]->cfg[PCI_COMMAND] |= PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
	bars_update(bus);
	pthread_rwlock_unlock(&bus->lock);
}

/* ---- MSI routes ---- */

int pci_msi_alloc(struct pci_bus *bus, unsigned n, uint32_t *first)
{
	int r = -ENOSPC;

	pthread_mutex_lock(&bus->route_lock);
	if (n <= PCI_MSI_MAX_GSIS - bus->n_msi_gsis) {
		*first = PCI_MSI_GSI_BASE + bus->n_msi_gsis;
		bus->n_msi_gsis += n;
		r = 0;
	}
	pthread_mutex_unlock(&bus->route_lock);
	return r;
}

static void routes_defaults(struct kvm_irq_routing_entry *e)
{
	unsigned n = 0;

	for (unsigned gsi = 0; gsi < 24; gsi++) {
		e[n++] = (struct kvm_irq_routing_entry){
			.gsi = gsi, .type = KVM_IRQ_ROUTING_IRQCHIP,
			.u.irqchip = { .irqchip = KVM_IRQCHIP_IOAPIC, .pin = gsi },
		};
		if (gsi < 16)
			e[n++] = (struct kvm_irq_routing_entry){
				.gsi = gsi, .type = KVM_IRQ_ROUTING_IRQCHIP,
				.u.irqchip = { .irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER :
								   KVM_IRQCHIP_PIC_SLAVE,
					       .pin = gsi % 8 },
			};
	}
}

int pci_msi_route(struct pci_bus *bus, uint32_t gsi, bool valid, uint64_t addr, uint32_t data)
{
	struct pci_routes *rt = bus->routes;
	struct pci_msi_route *m;
	int r = 0;

	if (gsi < PCI_MSI_GSI_BASE || gsi - PCI_MSI_GSI_BASE >= bus->n_msi_gsis)
		return -EINVAL;
	pthread_mutex_lock(&bus->route_lock);
	m = &rt->msi[gsi - PCI_MSI_GSI_BASE];
	if (m->valid == valid && (!valid || (m->addr == addr && m->data == data)))
		goto out;
	*m = (struct pci_msi_route){ .valid = valid, .addr = valid ? addr : 0,
				     .data = valid ? data : 0 };
	bus->route_updates++;
	if (bus->vm_fd >= 0) {
		struct kvm_irq_routing_entry *e = rt->table.entries;
		unsigned n = PCI_DEFAULT_ROUTES;

		routes_defaults(e);
		for (unsigned i = 0; i < bus->n_msi_gsis; i++) {
			if (!rt->msi[i].valid)
				continue;
			e[n++] = (struct kvm_irq_routing_entry){
				.gsi = PCI_MSI_GSI_BASE + i, .type = KVM_IRQ_ROUTING_MSI,
				.u.msi = { .address_lo = (uint32_t)rt->msi[i].addr,
					   .address_hi = (uint32_t)(rt->msi[i].addr >> 32),
					   .data = rt->msi[i].data },
			};
		}
		rt->table.nr = n;
		rt->table.flags = 0;
		if (ioctl(bus->vm_fd, KVM_SET_GSI_ROUTING, &rt->table) < 0) {
			r = -errno;
			log_warn("pci: KVM_SET_GSI_ROUTING: %s", strerror(errno));
		}
	}
out:
	pthread_mutex_unlock(&bus->route_lock);
	return r;
}

/* ---- the bus ---- */

int pci_bus_init(struct pci_bus *bus, uint64_t win_base, uint64_t win_len, int vm_fd,
		 const struct pci_host_ops *host, void *host_opaque)
{
	memset(bus, 0, sizeof(*bus));
	bus->routes = calloc(1, sizeof(struct pci_routes) +
				     (PCI_DEFAULT_ROUTES + PCI_MSI_MAX_GSIS) *
					     sizeof(struct kvm_irq_routing_entry));
	if (!bus->routes)
		return -ENOMEM;
	if (!win_len || win_base + win_len < win_base || win_base + win_len > 0x100000000ull) {
		free(bus->routes);
		bus->routes = NULL;
		return -EINVAL;
	}
	pthread_rwlock_init(&bus->lock, NULL);
	pthread_mutex_init(&bus->intx_lock, NULL);
	pthread_mutex_init(&bus->route_lock, NULL);
	bus->vm_fd = vm_fd;
	bus->host = host;
	bus->host_opaque = host_opaque;
	bus->next_bar = win_base;
	bus->addr_region = (struct bus_region){ .base = PCI_CFG_ADDR_PORT, .len = 4,
						.ops = &addr_port_ops, .opaque = bus,
						.name = "pci-config-address" };
	bus->data_region = (struct bus_region){ .base = PCI_CFG_DATA_PORT, .len = 4,
						.ops = &data_port_ops, .opaque = bus,
						.name = "pci-config-data" };
	bus->window = (struct bus_region){ .base = win_base, .len = win_len, .ops = &window_ops,
					   .opaque = bus, .name = "pci-window" };
	pci_function_init(&bus->host_bridge, "pci-host-bridge", PCI_HOST_VENDOR, PCI_HOST_DEVICE, 0,
			  0x060000, PCI_HOST_VENDOR, 0x1100, false, NULL, NULL);
	bus->host_bridge.bus = bus;
	bus->slots[0] = &bus->host_bridge;
	return 0;
}

void pci_bus_exit(struct pci_bus *bus)
{
	if (!bus->routes)
		return;
	free(bus->routes);
	bus->routes = NULL;
	pthread_rwlock_destroy(&bus->lock);
	pthread_mutex_destroy(&bus->intx_lock);
	pthread_mutex_destroy(&bus->route_lock);
}

/* ---- state ---- */

void pci_function_save(struct pci_function *fn, struct state_writer *w)
{
	uint8_t cfg[PCI_CFG_SIZE];

	pthread_rwlock_rdlock(&fn->bus->lock);
	memcpy(cfg, fn->cfg, sizeof(cfg));
	pthread_rwlock_unlock(&fn->bus->lock);
	state_put_bytes(w, "pci-config", cfg, sizeof(cfg));
	state_put_u32(w, "pci-slot", fn->slot);
}

int pci_function_load(struct pci_function *fn, struct state_reader *r, int node)
{
	struct pci_bus *bus = fn->bus;
	uint8_t cfg[PCI_CFG_SIZE];
	uint32_t slot;

	state_get_bytes(r, node, "pci-config", cfg, sizeof(cfg));
	state_get_u32(r, node, "pci-slot", &slot);
	if (r->err)
		return r->err;
	if (slot != fn->slot)
		return state_reject(r, -EINVAL, "state: %s: saved in PCI slot %u, built in %u",
				    fn->name, slot, fn->slot);
	for (unsigned i = 0; i < PCI_CFG_SIZE; i++)
		if ((cfg[i] ^ fn->cfg[i]) & ~fn->wmask[i])
			return state_reject(r, -EINVAL,
					    "state: %s: PCI configuration byte 0x%x differs "
					    "in a read-only bit", fn->name, i);
	pthread_rwlock_wrlock(&bus->lock);
	memcpy(fn->cfg, cfg, sizeof(cfg));
	pthread_mutex_lock(&bus->intx_lock);
	intx_update(fn, intx_disabled(fn));
	pthread_mutex_unlock(&bus->intx_lock);
	bars_update(bus);
	pthread_rwlock_unlock(&bus->lock);
	return 0;
}

#define PCI_BUS_STATE_VERSION 1

void pci_bus_save(struct pci_bus *bus, struct state_writer *w)
{
	uint32_t config_address;

	pthread_rwlock_rdlock(&bus->lock);
	config_address = bus->config_address;
	pthread_rwlock_unlock(&bus->lock);
	state_begin(w, PCI_BUS_STATE_VERSION, "/pci-bus");
	state_put_u32(w, "config-address", config_address);
	pci_function_save(&bus->host_bridge, w);
}

int pci_bus_load(struct pci_bus *bus, struct state_reader *r)
{
	int node = state_node(r, false, "/pci-bus");
	uint32_t config_address;

	if (node < 0)
		return r->err; /* absent: an older snapshot; 0 unless the stream is broken */
	if (state_version(r, node, 1, PCI_BUS_STATE_VERSION) < 0 ||
	    state_get_u32(r, node, "config-address", &config_address) < 0)
		return r->err;
	if (pci_function_load(&bus->host_bridge, r, node))
		return r->err;
	pthread_rwlock_wrlock(&bus->lock);
	bus->config_address = config_address & 0x80fffffcu; /* as a guest write would latch it */
	pthread_rwlock_unlock(&bus->lock);
	return 0;
}

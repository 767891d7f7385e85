/* The i8042's CPU reset line and the isa-debug-exit port: the two ways a
 * guest without ACPI ends its run on purpose; and the ports every PC guest
 * probes, answered "nothing here". */
#include <stdatomic.h>
#include <string.h>

#include "vmrun/devices.h"
#include "vmrun/exit_status.h"

#define I8042_DATA_PORT 0x60
#define I8042_COMMAND_PORT 0x64
#define I8042_CMD_RESET 0xfe

/* There is no keyboard controller behind the reset line, and a probing
 * driver should learn that at once.  The status port reads "output buffer
 * full, input buffer empty" and the data port 0xff forever: Linux's i8042
 * driver drains at most 16 bytes before it reports "No controller found"
 * (a status of 0 instead would make it wait for command replies, 0xff would
 * make the reset path wait for the input buffer to drain), and a reset
 * through port 0x64 never waits. */
#define I8042_STATUS_NO_CONTROLLER 0x01 /* OBF set, IBF clear */
#define I8042_DATA_NO_CONTROLLER 0xff

static int i8042_read(struct bus_region *region, uint64_t offset, void *data, unsigned size)
{
	struct i8042 *k = region->opaque;

	(void)offset;
	memset(data, region == &k->status_region ? I8042_STATUS_NO_CONTROLLER :
						    I8042_DATA_NO_CONTROLLER, size);
	return 0;
}

static int i8042_write(struct bus_region *region, uint64_t offset, const void *data,
		       unsigned size)
{
	struct i8042 *k = region->opaque;

	if (region == &k->status_region && *(const uint8_t *)data == I8042_CMD_RESET)
		k->host->request_exit(k->host->opaque, VMRUN_EXIT_RESET, "i8042 reset");
	return 0;
}

static const struct bus_ops i8042_ops = { .read = i8042_read, .write = i8042_write };

void i8042_init(struct i8042 *k, const struct device_host *host)
{
	k->host = host;
	k->data_region = (struct bus_region){ .base = I8042_DATA_PORT, .len = 1, .ops = &i8042_ops,
					      .opaque = k, .name = "i8042-data" };
	k->status_region = (struct bus_region){ .base = I8042_COMMAND_PORT, .len = 1,
						.ops = &i8042_ops, .opaque = k, .name = "i8042-cmd" };
}

static int debug_exit_write(struct bus_region *region, uint64_t offset, const void *data,
			    unsigned size)
{
	struct debug_exit *d = region->opaque;
	uint32_t v = 0;

	if (offset != 0)
		return 0; /* only a write to the base port counts, as in QEMU */
	memcpy(&v, data, size > 4 ? 4 : size);
	if (atomic_exchange(&d->fired, true))
		return 0; /* the run is already ending with the first value */
	d->value = v;
	d->host->request_exit(d->host->opaque, vmrun_exit_status_for_debug_exit(v), "debug-exit");
	return 0;
}

static int debug_exit_read(struct bus_region *region, uint64_t offset, void *data, unsigned size)
{
	memset(data, 0xff, size);
	return 0;
}

static const struct bus_ops debug_exit_ops = { .read = debug_exit_read, .write = debug_exit_write };

void debug_exit_init(struct debug_exit *d, const struct device_host *host)
{
	d->host = host;
	atomic_init(&d->fired, false);
	d->value = 0;
	d->region = (struct bus_region){ .base = DEBUG_EXIT_PORT, .len = 4, .ops = &debug_exit_ops,
					 .opaque = d, .name = "debug-exit" };
}

static int probe_port_read(struct bus_region *region, uint64_t offset, void *data, unsigned size)
{
	(void)region;
	(void)offset;
	memset(data, 0xff, size);
	return 0;
}

static int probe_port_write(struct bus_region *region, uint64_t offset, const void *data,
			    unsigned size)
{
	(void)region;
	(void)offset;
	(void)data;
	(void)size;
	return 0;
}

static const struct bus_ops probe_port_ops = { .read = probe_port_read, .write = probe_port_write };

void probe_ports_init(struct probe_ports *p)
{
	static const uint16_t ports[PROBE_PORTS_N] = { 0x80, 0x87, 0x2e9, 0x2f9, 0x3e9 };

	for (unsigned i = 0; i < PROBE_PORTS_N; i++)
		p->regions[i] = (struct bus_region){ .base = ports[i], .len = 1,
						     .ops = &probe_port_ops, .opaque = p,
						     .name = "probe-port" };
}

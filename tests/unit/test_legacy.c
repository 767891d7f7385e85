/* The i8042 reset line and what a probing driver reads from the controller
 * (src/devices/legacy.c).  The expectations follow Linux's i8042 driver
 * (drivers/input/serio/i8042.c): i8042_flush() gives up, and the probe
 * reports "No controller found", when the status register keeps "output
 * buffer full" (bit 0) through 16 data reads; the reboot path's kb_wait()
 * polls until "input buffer full" (bit 1) is clear. */
#include "unit.h"
#include <stdbool.h>
#include "vmrun/bus.h"
#include "vmrun/devices.h"
#include "vmrun/exit_status.h"

#define STR_OBF 0x01
#define STR_IBF 0x02
#define LINUX_I8042_BUFFER_SIZE 16

struct exit_log {
	int status;
	int calls;
};

static void record_exit(void *opaque, int status, const char *reason)
{
	struct exit_log *log = opaque;

	(void)reason;
	log->status = status;
	log->calls++;
}

static uint8_t rd8(struct bus_region *r)
{
	uint8_t v = 0x5a;

	assert_int_equal(r->ops->read(r, 0, &v, 1), 0);
	return v;
}

static void wr8(struct bus_region *r, uint8_t v)
{
	assert_int_equal(r->ops->write(r, 0, &v, 1), 0);
}

static void test_probe_finds_no_controller(void **state)
{
	struct exit_log log = { 0 };
	struct device_host host = { .request_exit = record_exit, .opaque = &log };
	struct i8042 k;
	int drained = 0;

	(void)state;
	i8042_init(&k, &host);
	/* Linux's i8042_flush(): drain while OBF, at most 16 bytes. */
	while (rd8(&k.status_region) & STR_OBF) {
		if (drained++ == LINUX_I8042_BUFFER_SIZE)
			break;
		(void)rd8(&k.data_region);
	}
	assert_int_equal(drained, LINUX_I8042_BUFFER_SIZE + 1); /* -EIO: no controller */
	/* kb_wait() before a reset: the input buffer is never full. */
	assert_int_equal(rd8(&k.status_region) & STR_IBF, 0);
	assert_int_equal(log.calls, 0);
}

static void test_reset_line(void **state)
{
	struct exit_log log = { 0 };
	struct device_host host = { .request_exit = record_exit, .opaque = &log };
	struct i8042 k;

	(void)state;
	i8042_init(&k, &host);
	wr8(&k.data_region, 0xfe); /* a data byte, not a command */
	wr8(&k.status_region, 0xaa); /* self-test: ignored */
	assert_int_equal(log.calls, 0);
	wr8(&k.status_region, 0xfe);
	assert_int_equal(log.calls, 1);
	assert_int_equal(log.status, VMRUN_EXIT_RESET);
}

/* The raw 32-bit value the guest wrote is kept beside the status, which
 * keeps only its low 7 bits; a second write (another vCPU) changes neither. */
static void test_debug_exit_value(void **state)
{
	struct exit_log log = { 0 };
	struct device_host host = { .request_exit = record_exit, .opaque = &log };
	struct debug_exit d;
	uint32_t v = 0x12345680, w = 3;

	(void)state;
	debug_exit_init(&d, &host);
	assert_false(atomic_load(&d.fired));
	assert_int_equal(d.region.ops->write(&d.region, 0, &v, 4), 0);
	assert_int_equal(log.calls, 1);
	assert_int_equal(log.status, vmrun_exit_status_for_debug_exit(v));
	assert_true(atomic_load(&d.fired));
	assert_int_equal(d.value, 0x12345680);
	assert_int_equal(d.region.ops->write(&d.region, 0, &w, 4), 0);
	assert_int_equal(log.calls, 1);
	assert_int_equal(d.value, 0x12345680);
}

/* The ports Linux probes on every PC answer "nothing here" through the bus,
 * which then logs nothing: they are claimed. */
static void test_probe_ports(void **state)
{
	static const uint16_t ports[] = { 0x80, 0x87, 0x2e9, 0x2f9, 0x3e9 };
	struct probe_ports p;
	struct bus bus;

	(void)state;
	bus_init(&bus, "port");
	probe_ports_init(&p);
	for (unsigned i = 0; i < PROBE_PORTS_N; i++)
		assert_int_equal(bus_register(&bus, &p.regions[i]), 0);
	for (unsigned i = 0; i < sizeof(ports) / sizeof(ports[0]); i++) {
		uint8_t b = 0x12;

		assert_true(bus_write(&bus, ports[i], &b, 1));
		b = 0;
		assert_true(bus_read(&bus, ports[i], &b, 1));
		assert_int_equal(b, 0xff);
	}
	assert_int_equal(bus.unclaimed_count, 0);
	bus_exit(&bus);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_probe_finds_no_controller),
		cmocka_unit_test(test_reset_line),
		cmocka_unit_test(test_debug_exit_value),
		cmocka_unit_test(test_probe_ports),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_probe_finds_no_controller),
		cmocka_unit_test(test_reset_line),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

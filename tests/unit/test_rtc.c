/* The CMOS RTC, driven through the port bus as a guest would, against
 * include/vmrun/devices.h, the MC146818A datasheet and the PC/AT CMOS map.
 * Expected dates are worked out by hand from the epoch values below. */
#include "unit.h"

#include <stdbool.h>
#include <stdlib.h>

#include "vmrun/bus.h"
#include "vmrun/devices.h"

#define INDEX 0x70
#define DATA 0x71

/* Register numbers and bits from the datasheet. */
#define SEC 0x00
#define SEC_ALARM 0x01
#define MIN 0x02
#define HOUR 0x04
#define WDAY 0x06
#define MDAY 0x07
#define MONTH 0x08
#define YEAR 0x09
#define REG_A 0x0a
#define REG_B 0x0b
#define REG_C 0x0c
#define REG_D 0x0d
#define CENTURY 0x32

#define B_24H 0x02
#define B_DM_BINARY 0x04

/* 2024-02-29 13:45:07 UTC, a Thursday (weekday 5 with Sunday = 1). */
#define T_LEAP_AFTERNOON 1709214307ll
/* 1999-12-31 23:59:59 UTC, a Friday (weekday 6). */
#define T_Y2K_EVE 946684799ll
/* 2000-01-01 00:00:00 UTC, a Saturday (weekday 7). */
#define T_Y2K 946684800ll
/* 2001-06-10 12:30:00 UTC (noon hour). */
#define T_NOON 992176200ll

struct fx {
	struct bus bus;
	struct rtc rtc;
	int64_t now;
	int clock_calls;
};

static int64_t fake_clock(void *opaque)
{
	struct fx *f = opaque;

	f->clock_calls++;
	return f->now;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	bus_init(&f->bus, "port");
	rtc_init(&f->rtc, fake_clock, f);
	assert_int_equal(bus_register(&f->bus, &f->rtc.region), 0);
	f->now = T_LEAP_AFTERNOON;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	rtc_exit(&f->rtc);
	bus_exit(&f->bus);
	free(f);
	return 0;
}

static void out8(struct fx *f, uint16_t port, uint8_t v)
{
	assert_true(bus_write(&f->bus, port, &v, 1));
}

static uint8_t in8(struct fx *f, uint16_t port)
{
	uint8_t v = 0;

	assert_true(bus_read(&f->bus, port, &v, 1));
	return v;
}

static uint8_t cmos_read(struct fx *f, uint8_t index)
{
	out8(f, INDEX, index);
	return in8(f, DATA);
}

static void cmos_write(struct fx *f, uint8_t index, uint8_t v)
{
	out8(f, INDEX, index);
	out8(f, DATA, v);
}

static void test_claims_ports_70_71(void **state)
{
	struct fx *f = *state;

	assert_ptr_equal(bus_find(&f->bus, 0x70), &f->rtc.region);
	assert_ptr_equal(bus_find(&f->bus, 0x71), &f->rtc.region);
	assert_null(bus_find(&f->bus, 0x72));
	assert_null(bus_find(&f->bus, 0x6f));
}

static void test_bcd_time(void **state)
{
	struct fx *f = *state;

	assert_int_equal(cmos_read(f, SEC), 0x07);
	assert_int_equal(cmos_read(f, MIN), 0x45);
	assert_int_equal(cmos_read(f, HOUR), 0x13);
	assert_int_equal(cmos_read(f, WDAY), 0x05);
	assert_int_equal(cmos_read(f, MDAY), 0x29);
	assert_int_equal(cmos_read(f, MONTH), 0x02);
	assert_int_equal(cmos_read(f, YEAR), 0x24);
	assert_int_equal(cmos_read(f, CENTURY), 0x20);
	assert_true(f->clock_calls >= 8); /* read at each access, nothing cached */
}

static void test_time_follows_clock(void **state)
{
	struct fx *f = *state;

	f->now = T_Y2K_EVE;
	assert_int_equal(cmos_read(f, SEC), 0x59);
	assert_int_equal(cmos_read(f, MIN), 0x59);
	assert_int_equal(cmos_read(f, HOUR), 0x23);
	assert_int_equal(cmos_read(f, WDAY), 0x06);
	assert_int_equal(cmos_read(f, MDAY), 0x31);
	assert_int_equal(cmos_read(f, MONTH), 0x12);
	assert_int_equal(cmos_read(f, YEAR), 0x99);
	assert_int_equal(cmos_read(f, CENTURY), 0x19);
	f->now = T_Y2K;
	assert_int_equal(cmos_read(f, SEC), 0x00);
	assert_int_equal(cmos_read(f, HOUR), 0x00);
	assert_int_equal(cmos_read(f, WDAY), 0x07);
	assert_int_equal(cmos_read(f, MDAY), 0x01);
	assert_int_equal(cmos_read(f, MONTH), 0x01);
	assert_int_equal(cmos_read(f, YEAR), 0x00);
	assert_int_equal(cmos_read(f, CENTURY), 0x20);
}

static void test_binary_mode(void **state)
{
	struct fx *f = *state;

	cmos_write(f, REG_B, B_24H | B_DM_BINARY);
	assert_int_equal(cmos_read(f, REG_B), B_24H | B_DM_BINARY);
	assert_int_equal(cmos_read(f, SEC), 7);
	assert_int_equal(cmos_read(f, MIN), 45);
	assert_int_equal(cmos_read(f, HOUR), 13);
	assert_int_equal(cmos_read(f, WDAY), 5);
	assert_int_equal(cmos_read(f, MDAY), 29);
	assert_int_equal(cmos_read(f, MONTH), 2);
	assert_int_equal(cmos_read(f, YEAR), 24);
	assert_int_equal(cmos_read(f, CENTURY), 20);
	/* Back to BCD. */
	cmos_write(f, REG_B, B_24H);
	assert_int_equal(cmos_read(f, MIN), 0x45);
}

static void test_12_hour_mode(void **state)
{
	struct fx *f = *state;

	cmos_write(f, REG_B, 0); /* 12-hour, BCD */
	assert_int_equal(cmos_read(f, HOUR), 0x80 | 0x01); /* 1 PM */
	f->now = T_Y2K;
	assert_int_equal(cmos_read(f, HOUR), 0x12); /* midnight is 12 AM */
	f->now = T_Y2K_EVE;
	assert_int_equal(cmos_read(f, HOUR), 0x80 | 0x11); /* 11 PM */
	f->now = T_NOON;
	assert_int_equal(cmos_read(f, HOUR), 0x80 | 0x12); /* noon is 12 PM */
	assert_int_equal(cmos_read(f, MIN), 0x30);
	cmos_write(f, REG_B, B_DM_BINARY); /* 12-hour, binary */
	assert_int_equal(cmos_read(f, HOUR), 0x80 | 12);
	f->now = T_LEAP_AFTERNOON;
	assert_int_equal(cmos_read(f, HOUR), 0x80 | 1);
}

static void test_status_registers(void **state)
{
	struct fx *f = *state;

	/* A: UIP clear, 32.768 kHz divider (bits 6-4 = 010). */
	assert_int_equal(cmos_read(f, REG_A) & 0x80, 0);
	assert_int_equal((cmos_read(f, REG_A) >> 4) & 7, 2);
	/* B: 24-hour, BCD by default. */
	assert_int_equal(cmos_read(f, REG_B), B_24H);
	/* C: no interrupt flags.  D: valid RAM and time. */
	assert_int_equal(cmos_read(f, REG_C), 0);
	assert_int_equal(cmos_read(f, REG_D), 0x80);
	/* A's rate bits are stored, its UIP bit is read-only. */
	cmos_write(f, REG_A, 0xa6);
	assert_int_equal(cmos_read(f, REG_A), 0x26);
	/* C and D ignore writes. */
	cmos_write(f, REG_C, 0xff);
	cmos_write(f, REG_D, 0x00);
	assert_int_equal(cmos_read(f, REG_C), 0);
	assert_int_equal(cmos_read(f, REG_D), 0x80);
}

static void test_time_writes_dropped(void **state)
{
	struct fx *f = *state;

	cmos_write(f, SEC, 0x33);
	cmos_write(f, YEAR, 0x77);
	cmos_write(f, CENTURY, 0x18);
	assert_int_equal(cmos_read(f, SEC), 0x07);
	assert_int_equal(cmos_read(f, YEAR), 0x24);
	assert_int_equal(cmos_read(f, CENTURY), 0x20);
	/* The alarm registers are storage. */
	cmos_write(f, SEC_ALARM, 0x42);
	assert_int_equal(cmos_read(f, SEC_ALARM), 0x42);
}

static void test_ram_round_trip(void **state)
{
	struct fx *f = *state;

	/* Unwritten RAM reads 0. */
	for (unsigned i = 0x0e; i < RTC_CMOS_SIZE; i++)
		if (i != CENTURY)
			assert_int_equal(cmos_read(f, (uint8_t)i), 0);
	for (unsigned i = 0x0e; i < RTC_CMOS_SIZE; i++)
		if (i != CENTURY)
			cmos_write(f, (uint8_t)i, (uint8_t)(i * 7 + 3));
	for (unsigned i = 0x0e; i < RTC_CMOS_SIZE; i++)
		if (i != CENTURY)
			assert_int_equal(cmos_read(f, (uint8_t)i), (uint8_t)(i * 7 + 3));
}

static void test_nmi_bit_ignored_for_index(void **state)
{
	struct fx *f = *state;

	assert_int_equal(cmos_read(f, 0x80 | MIN), 0x45);
	assert_true(f->rtc.nmi_masked);
	assert_int_equal(cmos_read(f, MIN), 0x45);
	assert_false(f->rtc.nmi_masked);
	cmos_write(f, 0x80 | 0x40, 0x5a);
	assert_int_equal(cmos_read(f, 0x40), 0x5a);
}

static void test_index_wrap(void **state)
{
	struct fx *f = *state;

	/* The index is 7 bits: 0xff selects 0x7f, the last RAM byte, and
	 * 0x8b selects register B. */
	cmos_write(f, 0x7f, 0x99);
	assert_int_equal(cmos_read(f, 0xff), 0x99);
	assert_int_equal(cmos_read(f, 0x80 | REG_B), B_24H);
	/* The index stays selected across data accesses. */
	out8(f, INDEX, 0x20);
	out8(f, DATA, 0x11);
	assert_int_equal(in8(f, DATA), 0x11);
	assert_int_equal(in8(f, DATA), 0x11);
}

static void test_index_port_write_only(void **state)
{
	struct fx *f = *state;

	out8(f, INDEX, MIN);
	assert_int_equal(in8(f, INDEX), 0xff);
	assert_int_equal(in8(f, DATA), 0x45); /* reading 0x70 did not move the index */
}

static void test_word_access(void **state)
{
	struct fx *f = *state;
	uint8_t w[2] = { 0x30, 0xab }; /* index 0x30, then data 0xab */
	uint16_t v;

	assert_true(bus_write(&f->bus, INDEX, w, 2));
	assert_int_equal(cmos_read(f, 0x30), 0xab);
	out8(f, INDEX, 0x30);
	assert_true(bus_read(&f->bus, INDEX, &v, 2));
	assert_int_equal(v, 0xab00 | 0xff);
}

static void test_two_rtcs_independent(void **state)
{
	struct fx *f = *state;
	struct rtc other;
	struct bus bus;
	uint8_t v = 0x50;

	rtc_init(&other, NULL, NULL); /* the host clock */
	bus_init(&bus, "port");
	assert_int_equal(bus_register(&bus, &other.region), 0);
	cmos_write(f, 0x50, 0x12);
	assert_true(bus_write(&bus, INDEX, &v, 1));
	assert_true(bus_read(&bus, DATA, &v, 1));
	assert_int_equal(v, 0);
	/* The host clock is after 2020 (century 0x20, year >= 0x20). */
	v = CENTURY;
	assert_true(bus_write(&bus, INDEX, &v, 1));
	assert_true(bus_read(&bus, DATA, &v, 1));
	assert_int_equal(v, 0x20);
	bus_exit(&bus);
	rtc_exit(&other);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_claims_ports_70_71, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bcd_time, setup, teardown),
		cmocka_unit_test_setup_teardown(test_time_follows_clock, setup, teardown),
		cmocka_unit_test_setup_teardown(test_binary_mode, setup, teardown),
		cmocka_unit_test_setup_teardown(test_12_hour_mode, setup, teardown),
		cmocka_unit_test_setup_teardown(test_status_registers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_time_writes_dropped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ram_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nmi_bit_ignored_for_index, setup, teardown),
		cmocka_unit_test_setup_teardown(test_index_wrap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_index_port_write_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_word_access, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_rtcs_independent, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

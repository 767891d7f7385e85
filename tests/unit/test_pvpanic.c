/* pvpanic (src/devices/pvpanic.c) against QEMU's specification
 * (docs/specs/pvpanic.rst, pvpanic-pci.rst): the PCI function Linux's
 * pvpanic-pci driver binds (1b36:0011, BAR 0 memory), the ISA port 0x505,
 * the events byte, and hostile accesses (other widths, offsets, bits). */
#include "unit.h"
#include "pci_rig.h"
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "vmrun/bus.h"
#include "vmrun/devices.h"
#include "vmrun/exit_status.h"
#include "vmrun/pci.h"
#include "vmrun/pvpanic.h"
#include "vmrun/state.h"

#define WIN 0xe0000000ull
#define WIN_LEN 0x10000000ull

struct rig {
	struct pci_bus pci;
	struct bus pio, mmio;
	struct pvpanic p;
	struct device_host host;
	int exits, status;
	char reason[64];
};

static void record_exit(void *opaque, int status, const char *reason)
{
	struct rig *r = opaque;

	r->exits++;
	r->status = status;
	snprintf(r->reason, sizeof(r->reason), "%s", reason);
}

static int setup(void **state)
{
	struct rig *r = calloc(1, sizeof(*r));

	assert_non_null(r);
	r->host = (struct device_host){ .request_exit = record_exit, .opaque = r };
	pci_rig_init(&r->pci, &r->pio, &r->mmio, WIN, WIN_LEN, NULL, NULL);
	assert_int_equal(pvpanic_init(&r->p, &r->host), 0);
	assert_int_equal(bus_register(&r->pio, &r->p.isa_region), 0);
	assert_int_equal(pci_bus_add(&r->pci, &r->p.fn), 1);
	*state = r;
	return 0;
}

static int teardown(void **state)
{
	struct rig *r = *state;

	pci_rig_exit(&r->pci, &r->pio, &r->mmio);
	free(r);
	return 0;
}

/* The pvpanic function sits in slot 1. */
static uint32_t cfg_rd(struct rig *r, unsigned reg, unsigned size)
{
	return pci_rig_cfg_read(&r->pio, 1, reg, size);
}

static void cfg_wr(struct rig *r, unsigned reg, unsigned size, uint32_t v)
{
	pci_rig_cfg_write(&r->pio, 1, reg, size, v);
}

/* What pvpanic-pci's probe reads: IDs, class, a 32-bit memory BAR 0. */
static void test_pci_identity(void **state)
{
	struct rig *r = *state;
	uint32_t bar;

	assert_int_equal(cfg_rd(r, 0x00, 2), 0x1b36);
	assert_int_equal(cfg_rd(r, 0x02, 2), 0x0011);
	assert_int_equal(cfg_rd(r, 0x0b, 1), 0x08); /* base class: system peripheral */
	bar = cfg_rd(r, 0x10, 4);
	assert_int_equal(bar & 0xf, 0);             /* memory, 32-bit, not prefetchable */
	assert_true(bar >= WIN && bar < WIN + WIN_LEN);
	/* Sizing: all-ones, then the size mask. */
	cfg_wr(r, 0x10, 4, 0xffffffffu);
	assert_int_equal(cfg_rd(r, 0x10, 4), (uint32_t)~(PVPANIC_BAR_SIZE - 1));
	cfg_wr(r, 0x10, 4, bar);
	assert_int_equal(cfg_rd(r, 0x3d, 1), 0);    /* no INTx */
}

static void test_pci_events(void **state)
{
	struct rig *r = *state;
	uint32_t bar = cfg_rd(r, 0x10, 4);
	uint8_t v8 = 0;
	uint32_t v32 = 0;

	/* Decoding off until Memory Space is set. */
	assert_false(bus_read(&r->mmio, bar, &v8, 1) && v8 != 0xff);
	cfg_wr(r, 0x04, 2, 0x2);
	assert_true(bus_read(&r->mmio, bar, &v8, 1));
	assert_int_equal(v8, PVPANIC_PANICKED | PVPANIC_CRASH_LOADED);
	assert_true(bus_read(&r->mmio, bar, &v32, 4));
	assert_int_equal(v32, 0);                   /* only the byte read gives events */
	assert_true(bus_read(&r->mmio, bar + 1, &v8, 1));
	assert_int_equal(v8, 0);
	/* Hostile: a wide write, another offset, CRASH_LOADED, unknown bits. */
	v32 = 0x01010101;
	assert_true(bus_write(&r->mmio, bar, &v32, 4));
	v8 = PVPANIC_PANICKED;
	assert_true(bus_write(&r->mmio, bar + 1, &v8, 1));
	assert_true(bus_write(&r->mmio, bar + PVPANIC_BAR_SIZE - 1, &v8, 1));
	v8 = PVPANIC_CRASH_LOADED;
	for (int i = 0; i < 10; i++) /* logged a few times, never fatal */
		assert_true(bus_write(&r->mmio, bar, &v8, 1));
	v8 = 0xfc;
	assert_true(bus_write(&r->mmio, bar, &v8, 1));
	assert_int_equal(r->exits, 0);
	/* PANICKED (with other bits): status 16, once. */
	v8 = 0xff;
	assert_true(bus_write(&r->mmio, bar, &v8, 1));
	assert_int_equal(r->exits, 1);
	assert_int_equal(r->status, VMRUN_EXIT_GUEST_CRASH);
	assert_string_equal(r->reason, "guest reported a crash");
	assert_string_equal(vmrun_exit_kind(r->status), "panic");
	v8 = PVPANIC_PANICKED;
	assert_true(bus_write(&r->mmio, bar, &v8, 1));
	assert_int_equal(r->exits, 1);
}

static void test_isa_port(void **state)
{
	struct rig *r = *state;
	uint8_t v8 = 0;
	uint16_t v16 = 0;

	assert_true(bus_read(&r->pio, PVPANIC_ISA_PORT, &v8, 1));
	assert_int_equal(v8, PVPANIC_EVENTS);
	/* A word at 0x505 is not the register: unclaimed, all-ones, ignored. */
	assert_false(bus_read(&r->pio, PVPANIC_ISA_PORT, &v16, 2));
	assert_int_equal(v16, 0xffff);
	v16 = 0x0101;
	bus_write(&r->pio, PVPANIC_ISA_PORT, &v16, 2);
	v8 = PVPANIC_CRASH_LOADED;
	assert_true(bus_write(&r->pio, PVPANIC_ISA_PORT, &v8, 1));
	assert_int_equal(r->exits, 0);
	v8 = PVPANIC_PANICKED;
	assert_true(bus_write(&r->pio, PVPANIC_ISA_PORT, &v8, 1));
	assert_int_equal(r->exits, 1);
	assert_int_equal(r->status, VMRUN_EXIT_GUEST_CRASH);
}

/* The function's configuration space survives a save and load (the BAR
 * where the guest put it), and a stream with a read-only bit changed is
 * refused. */
static void test_save_load(void **state)
{
	struct rig *r = *state, *o;
	struct state_writer w;
	struct state_reader rd;
	void *blob;
	size_t len;
	uint32_t moved = (uint32_t)(WIN + 0x100000);

	cfg_wr(r, 0x04, 2, 0x2);
	cfg_wr(r, 0x10, 4, moved);
	assert_int_equal(state_writer_init(&w), 0);
	pvpanic_save(&r->p, &w);
	assert_int_equal(state_writer_finish(&w, &blob, &len), 0);
	state_writer_free(&w);

	assert_int_equal(setup((void **)&o), 0);
	assert_int_equal(state_reader_open(&rd, blob, len), 0);
	assert_int_equal(pvpanic_load(&o->p, &rd), 0);
	assert_int_equal(cfg_rd(o, 0x10, 4), moved);
	assert_true(o->p.fn.bars[0].mapped);
	assert_int_equal(o->p.fn.bars[0].addr, moved);
	teardown((void **)&o);
	free(blob);

	/* No node: refused with a reason. */
	assert_int_equal(state_writer_init(&w), 0);
	state_begin(&w, 1, "/devices/other");
	assert_int_equal(state_writer_finish(&w, &blob, &len), 0);
	state_writer_free(&w);
	assert_int_equal(state_reader_open(&rd, blob, len), 0);
	assert_true(pvpanic_load(&r->p, &rd) < 0);
	assert_true(rd.msg[0] != '\0');
	free(blob);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_pci_identity, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pci_events, setup, teardown),
		cmocka_unit_test_setup_teardown(test_isa_port, setup, teardown),
		cmocka_unit_test_setup_teardown(test_save_load, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

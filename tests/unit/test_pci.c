/* The PCI host bridge and bus (src/devices/pci.c), driven the way a guest
 * drives it: configuration mechanism #1 through the port bus, BARs through
 * the MMIO bus.  A fake function with two BARs records what reached it. */
#include "unit.h"
#include "pci_rig.h"
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include "vmrun/bus.h"
#include "vmrun/pci.h"
#include "vmrun/state.h"

#define WIN 0xe0000000ull
#define WIN_LEN 0x10000000ull

struct fakefn {
	struct pci_function fn;
	uint8_t bar0[0x1000];
	int maps, unmaps, cfg_writes;
	uint64_t mapped_at;
};

struct rig {
	struct pci_bus pci;
	struct bus pio, mmio;
	struct fakefn a, b;
	int irq_calls;
	bool irq_level[24];
};

static void fake_bar_read(struct pci_function *fn, unsigned bar, uint64_t off, void *data,
			  unsigned size)
{
	struct fakefn *f = fn->opaque;

	if (bar == 0)
		memcpy(data, &f->bar0[off], size);
	else
		memset(data, 0x5a, size);
}

static void fake_bar_write(struct pci_function *fn, unsigned bar, uint64_t off, const void *data,
			   unsigned size)
{
	struct fakefn *f = fn->opaque;

	if (bar == 0)
		memcpy(&f->bar0[off], data, size);
}

static void fake_bar_map(struct pci_function *fn, unsigned bar, bool mapped, uint64_t addr)
{
	struct fakefn *f = fn->opaque;

	if (bar != 0)
		return;
	if (mapped) {
		f->maps++;
		f->mapped_at = addr;
	} else {
		f->unmaps++;
	}
}

static void fake_config_written(struct pci_function *fn, uint32_t off, unsigned size)
{
	(void)off;
	(void)size;
	((struct fakefn *)fn->opaque)->cfg_writes++;
}

static const struct pci_function_ops fake_ops = {
	.bar_read = fake_bar_read, .bar_write = fake_bar_write, .bar_map = fake_bar_map,
	.config_written = fake_config_written,
};

static void set_irq(void *opaque, unsigned gsi, bool level)
{
	struct rig *r = opaque;

	assert_true(gsi >= PCI_INTX_GSI_BASE && gsi < 24);
	r->irq_calls++;
	r->irq_level[gsi] = level;
}

static const struct pci_host_ops host_ops = { .set_irq = set_irq };

static void fake_init(struct fakefn *f, const char *name)
{
	uint8_t body[6] = { 1, 2, 3, 4, 5, 6 }, wm[2] = { 0xff, 0x0f }, at;

	pci_function_init(&f->fn, name, 0x1234, 0x5678, 7, 0x0c0320, 0x1234, 0x1, true, &fake_ops,
			  f);
	assert_int_equal(pci_function_add_bar(&f->fn, 0, 0x1000), 0);
	assert_int_equal(pci_function_add_bar(&f->fn, 2, 0x4000), 0);
	assert_int_equal(pci_function_add_cap(&f->fn, 0x09, body, sizeof(body), &at), 0);
	assert_int_equal(at, 0x40);
	assert_int_equal(pci_function_add_cap(&f->fn, 0x11, body, 4, &at), 0);
	assert_int_equal(at, 0x48);
	pci_function_set_wmask(&f->fn, at + 2, wm, 2);
}

static int setup(void **state)
{
	struct rig *r = calloc(1, sizeof(*r));

	assert_non_null(r);
	pci_rig_init(&r->pci, &r->pio, &r->mmio, WIN, WIN_LEN, &host_ops, r);
	fake_init(&r->a, "fake-a");
	fake_init(&r->b, "fake-b");
	assert_int_equal(pci_bus_add(&r->pci, &r->a.fn), 1);
	assert_int_equal(pci_bus_add(&r->pci, &r->b.fn), 2);
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

/* Configuration mechanism #1, as a guest does it. */
static uint32_t cfg_rd(struct rig *r, unsigned slot, unsigned reg, unsigned size)
{
	return pci_rig_cfg_read(&r->pio, slot, reg, size);
}

static void cfg_wr(struct rig *r, unsigned slot, unsigned reg, unsigned size, uint32_t v)
{
	pci_rig_cfg_write(&r->pio, slot, reg, size, v);
}

static uint32_t mem_rd32(struct rig *r, uint64_t gpa)
{
	uint32_t v = 0;

	bus_read(&r->mmio, gpa, &v, 4);
	return v;
}

static void test_host_bridge_and_absent(void **state)
{
	struct rig *r = *state;
	uint32_t a = 0x80000000u, v;
	uint8_t b = 1;

	/* Linux's probe: a byte to 0xCFB, then CONFIG_ADDRESS must read back. */
	assert_true(bus_write(&r->pio, 0xcfb, &b, 1));
	assert_true(bus_write(&r->pio, 0xcf8, &a, 4));
	assert_true(bus_read(&r->pio, 0xcf8, &v, 4));
	assert_int_equal(v, 0x80000000u);
	assert_int_equal(cfg_rd(r, 0, PCI_CLASS_PROG + 1, 2), 0x0600); /* host bridge */
	assert_int_equal(cfg_rd(r, 0, 0, 4), 0x00081b36);
	assert_int_equal(cfg_rd(r, 1, 0, 4), 0x56781234);
	/* Absent slot, another function, another bus: all-ones. */
	assert_int_equal(cfg_rd(r, 5, 0, 4), 0xffffffffu);
	a = 0x80000100u; /* function 1 */
	assert_true(bus_write(&r->pio, 0xcf8, &a, 4));
	assert_true(bus_read(&r->pio, 0xcfc, &v, 4));
	assert_int_equal(v, 0xffffffffu);
	a = 0x80010800u; /* bus 1, slot 1 */
	assert_true(bus_write(&r->pio, 0xcf8, &a, 4));
	assert_true(bus_read(&r->pio, 0xcfc, &v, 4));
	assert_int_equal(v, 0xffffffffu);
	/* Enable bit clear: nothing. */
	a = 0x00000800u;
	assert_true(bus_write(&r->pio, 0xcf8, &a, 4));
	assert_true(bus_read(&r->pio, 0xcfc, &v, 4));
	assert_int_equal(v, 0xffffffffu);
}

static void test_read_only_fields(void **state)
{
	struct rig *r = *state;

	cfg_wr(r, 1, 0, 4, 0);
	cfg_wr(r, 1, PCI_REVISION_ID, 4, 0);
	cfg_wr(r, 1, PCI_CAPABILITY_LIST, 1, 0x80);
	cfg_wr(r, 1, PCI_INTERRUPT_LINE, 2, 0xffff); /* line writable, pin not */
	assert_int_equal(cfg_rd(r, 1, 0, 4), 0x56781234);
	assert_int_equal(cfg_rd(r, 1, PCI_REVISION_ID, 4), 0x0c032007);
	assert_int_equal(cfg_rd(r, 1, PCI_CAPABILITY_LIST, 1), 0x40);
	assert_int_equal(cfg_rd(r, 1, PCI_INTERRUPT_LINE, 2), 0x01ff);
	/* Command: only Memory, Bus Master and Interrupt Disable stick. */
	cfg_wr(r, 1, PCI_COMMAND, 2, 0xffff);
	assert_int_equal(cfg_rd(r, 1, PCI_COMMAND, 2), 0x0406);
	assert_int_equal(cfg_rd(r, 1, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST, PCI_STATUS_CAP_LIST);
	/* Expansion ROM not implemented: sizing reads 0. */
	cfg_wr(r, 1, PCI_ROM_ADDRESS, 4, 0xffffffffu);
	assert_int_equal(cfg_rd(r, 1, PCI_ROM_ADDRESS, 4), 0);
}

static void test_bar_sizing(void **state)
{
	struct rig *r = *state;
	uint32_t bar0 = cfg_rd(r, 1, PCI_BAR0, 4);

	/* Assigned in the window, in slot order, aligned to their size. */
	assert_int_equal(bar0, (uint32_t)WIN);
	assert_int_equal(cfg_rd(r, 1, PCI_BAR0 + 8, 4), (uint32_t)WIN + 0x4000);
	assert_int_equal(cfg_rd(r, 2, PCI_BAR0, 4), (uint32_t)WIN + 0x8000);
	cfg_wr(r, 1, PCI_BAR0, 4, 0xffffffffu);
	assert_int_equal(cfg_rd(r, 1, PCI_BAR0, 4), 0xfffff000u);
	cfg_wr(r, 1, PCI_BAR0 + 8, 4, 0xffffffffu);
	assert_int_equal(cfg_rd(r, 1, PCI_BAR0 + 8, 4), 0xffffc000u);
	/* Unimplemented BARs size as 0. */
	cfg_wr(r, 1, PCI_BAR0 + 4, 4, 0xffffffffu);
	assert_int_equal(cfg_rd(r, 1, PCI_BAR0 + 4, 4), 0);
	cfg_wr(r, 1, PCI_BAR0 + 20, 4, 0xffffffffu);
	assert_int_equal(cfg_rd(r, 1, PCI_BAR0 + 20, 4), 0);
	/* Restore; the host bridge has no BARs. */
	cfg_wr(r, 1, PCI_BAR0, 4, bar0);
	assert_int_equal(cfg_rd(r, 1, PCI_BAR0, 4), bar0);
	cfg_wr(r, 0, PCI_BAR0, 4, 0xffffffffu);
	assert_int_equal(cfg_rd(r, 0, PCI_BAR0, 4), 0);
	/* Nothing decoded while Memory Space is off. */
	assert_int_equal(r->a.maps, 0);
}

static void test_bar_decode_and_move(void **state)
{
	struct rig *r = *state;

	r->a.bar0[0x10] = 0x77;
	assert_int_equal(mem_rd32(r, WIN + 0x10), 0xffffffffu); /* decoding off */
	cfg_wr(r, 1, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
	assert_int_equal(r->a.maps, 1);
	assert_int_equal(r->a.mapped_at, WIN);
	assert_int_equal(mem_rd32(r, WIN + 0x10), 0x77);
	assert_int_equal(mem_rd32(r, WIN + 0x4000), 0x5a5a5a5a); /* BAR2 */
	/* An access running off the BAR's end is not the BAR's. */
	{
		uint64_t v = 0;

		bus_read(&r->mmio, WIN + 0xffc, &v, 8);
		assert_true(v == ~0ull);
	}
	/* Move BAR0 with two 16-bit writes, as some guests do. */
	cfg_wr(r, 1, PCI_BAR0, 2, 0x0000);
	cfg_wr(r, 1, PCI_BAR0 + 2, 2, 0xe010);
	assert_int_equal(cfg_rd(r, 1, PCI_BAR0, 4), 0xe0100000u);
	assert_int_equal(r->a.mapped_at, 0xe0100000ull);
	assert_int_equal(mem_rd32(r, 0xe0100010ull), 0x77);
	assert_int_equal(mem_rd32(r, WIN + 0x10), 0xffffffffu);
	/* Unaligned, partial data-port accesses: the byte lanes of 0xCFC. */
	assert_int_equal(cfg_rd(r, 1, PCI_BAR0 + 3, 1), 0xe0);
	assert_int_equal(cfg_rd(r, 1, PCI_BAR0 + 1, 2), 0x1000);
	/* Memory Space off: every BAR stops answering. */
	cfg_wr(r, 1, PCI_COMMAND, 2, 0);
	assert_int_equal(mem_rd32(r, 0xe0100010ull), 0xffffffffu);
	assert_int_equal(r->a.unmaps, 2);
}

static void test_bar_onto_ram_or_device(void **state)
{
	struct rig *r = *state;
	uint32_t b_bar0;

	cfg_wr(r, 1, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
	cfg_wr(r, 2, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
	r->a.bar0[0] = 0xaa;
	r->b.bar0[0] = 0xbb;
	b_bar0 = cfg_rd(r, 2, PCI_BAR0, 4);
	assert_int_equal(mem_rd32(r, b_bar0), 0xbb);
	/* Onto RAM (below the window): refused, not decoded anywhere. */
	cfg_wr(r, 2, PCI_BAR0, 4, 0x00100000u);
	assert_int_equal(cfg_rd(r, 2, PCI_BAR0, 4), 0x00100000u); /* reads back */
	assert_false(r->b.fn.bars[0].mapped);
	assert_int_equal(mem_rd32(r, b_bar0), 0xffffffffu);
	/* Onto the other function's BAR0: refused; that one keeps answering. */
	cfg_wr(r, 2, PCI_BAR0, 4, (uint32_t)WIN);
	assert_false(r->b.fn.bars[0].mapped);
	assert_int_equal(mem_rd32(r, WIN), 0xaa);
	/* The window's last bytes are fine; one past its end is not. */
	cfg_wr(r, 2, PCI_BAR0 + 8, 4, (uint32_t)(WIN + WIN_LEN - 0x4000));
	assert_true(r->b.fn.bars[2].mapped);
	cfg_wr(r, 2, PCI_BAR0 + 8, 4, (uint32_t)(WIN + WIN_LEN));
	assert_false(r->b.fn.bars[2].mapped);
	/* Back to a free place: decoded again. */
	cfg_wr(r, 2, PCI_BAR0, 4, b_bar0);
	assert_true(r->b.fn.bars[0].mapped);
	assert_int_equal(mem_rd32(r, b_bar0), 0xbb);
	/* When A leaves, B may take its place. */
	cfg_wr(r, 1, PCI_BAR0, 4, 0xe0200000u);
	cfg_wr(r, 2, PCI_BAR0, 4, (uint32_t)WIN);
	assert_int_equal(mem_rd32(r, WIN), 0xbb);
	assert_int_equal(mem_rd32(r, 0xe0200000u), 0xaa);
}

static void test_capability_walk(void **state)
{
	struct rig *r = *state;
	unsigned at = cfg_rd(r, 1, PCI_CAPABILITY_LIST, 1), n = 0;
	uint8_t ids[4];

	while (at && n < 48) {
		assert_true(at >= 0x40 && at <= 0xfc && !(at & 3));
		ids[n < 4 ? n : 3] = (uint8_t)cfg_rd(r, 1, at, 1);
		at = cfg_rd(r, 1, at + 1, 1);
		n++;
	}
	assert_int_equal(n, 2);
	assert_int_equal(ids[0], 0x09);
	assert_int_equal(ids[1], 0x11);
	assert_int_equal(cfg_rd(r, 1, 0x40, 4), 0x02014809);
	/* Only the bits the owner marked writable change; the owner hears. */
	cfg_wr(r, 1, 0x48, 4, 0xffffffffu);
	assert_int_equal(cfg_rd(r, 1, 0x48, 4), 0x0fff0011u);
	assert_true(r->a.cfg_writes > 0);
	/* A full configuration space refuses more capabilities. */
	{
		struct pci_function f;
		uint8_t body[60] = { 0 }, at2;
		int rc = 0, k = 0;

		pci_function_init(&f, "full", 1, 2, 0, 0, 0, 0, false, NULL, NULL);
		while ((rc = pci_function_add_cap(&f, 0x09, body, sizeof(body), &at2)) == 0)
			k++;
		assert_int_equal(rc, -ENOSPC);
		assert_int_equal(k, 3);
	}
}

static void test_hostile_offsets(void **state)
{
	struct rig *r = *state;

	/* Direct API: sizes other than 1, 2, 4 and offsets past 256. */
	assert_int_equal(pci_config_read(&r->pci, 1, 255, 4), 0xffffffffu);
	assert_int_equal(pci_config_read(&r->pci, 1, 256, 1), 0xff);
	assert_int_equal(pci_config_read(&r->pci, 1, 0, 3), 0xffffff);
	assert_int_equal(pci_config_read(&r->pci, 1, 0, 8), 0xffffffffu);
	assert_int_equal(pci_config_read(&r->pci, 99, 0, 4), 0xffffffffu);
	assert_int_equal(pci_config_read(&r->pci, 1, 0xfe, 2), 0);
	pci_config_write(&r->pci, 1, 0xffff, 4, 0);
	pci_config_write(&r->pci, 1, 0xfe, 4, 0xffffffffu);
	pci_config_write(&r->pci, 1000, 0, 4, 0);
	/* Non-dword CONFIG_ADDRESS reads are not the register. */
	{
		uint16_t v;

		bus_read(&r->pio, 0xcf8, &v, 2);
		assert_int_equal(v, 0xffff);
	}
	/* The last byte of configuration space through the port. */
	cfg_wr(r, 1, 0xff, 1, 0x12);
	assert_int_equal(cfg_rd(r, 1, 0xff, 1), 0);
	assert_int_equal(cfg_rd(r, 1, 0xfe, 2), 0);
}

static void test_intx_shared_pin(void **state)
{
	struct rig *r = *state;
	struct fakefn more[8];
	unsigned gsi = pci_function_intx_gsi(&r->a.fn);

	assert_int_equal(gsi, PCI_INTX_GSI_BASE);
	pci_function_set_intx(&r->a.fn, true);
	assert_true(r->irq_level[gsi]);
	assert_int_equal(cfg_rd(r, 1, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT, PCI_STATUS_INTERRUPT);
	/* Interrupt Disable holds the line low; clearing it raises it again. */
	cfg_wr(r, 1, PCI_COMMAND, 2, PCI_COMMAND_INTX_DISABLE);
	assert_false(r->irq_level[gsi]);
	assert_int_equal(cfg_rd(r, 1, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT, PCI_STATUS_INTERRUPT);
	cfg_wr(r, 1, PCI_COMMAND, 2, 0);
	assert_true(r->irq_level[gsi]);
	/* Slot 9 shares slot 1's pin: the line is the OR. */
	for (unsigned i = 0; i < 7; i++) {
		fake_init(&more[i], "more");
		assert_int_equal(pci_bus_add(&r->pci, &more[i].fn), (int)(3 + i));
	}
	assert_int_equal(pci_function_intx_gsi(&more[6].fn), gsi);
	pci_function_set_intx(&more[6].fn, true);
	pci_function_set_intx(&r->a.fn, false);
	assert_true(r->irq_level[gsi]);
	pci_function_set_intx(&more[6].fn, false);
	assert_false(r->irq_level[gsi]);
	/* Repeating a level does not pulse the line. */
	{
		int calls = r->irq_calls;

		pci_function_set_intx(&more[6].fn, false);
		assert_int_equal(r->irq_calls, calls);
	}
	/* Slot 2 has a pin of its own. */
	assert_int_equal(pci_function_intx_gsi(&r->b.fn), PCI_INTX_GSI_BASE + 1);
}

static void test_msi_routes(void **state)
{
	struct rig *r = *state;
	uint32_t first, second;

	assert_int_equal(pci_msi_alloc(&r->pci, 3, &first), 0);
	assert_int_equal(first, PCI_MSI_GSI_BASE);
	assert_int_equal(pci_msi_alloc(&r->pci, 2, &second), 0);
	assert_int_equal(second, PCI_MSI_GSI_BASE + 3);
	assert_int_equal(pci_msi_alloc(&r->pci, PCI_MSI_MAX_GSIS, &second), -ENOSPC);
	assert_int_equal(pci_msi_route(&r->pci, first, true, 0xfee00000, 0x41), 0);
	assert_int_equal(r->pci.route_updates, 1);
	assert_int_equal(pci_msi_route(&r->pci, first, true, 0xfee00000, 0x41), 0);
	assert_int_equal(r->pci.route_updates, 1); /* unchanged: no push */
	assert_int_equal(pci_msi_route(&r->pci, first, true, 0xfee01000, 0x41), 0);
	assert_int_equal(r->pci.route_updates, 2);
	assert_int_equal(pci_msi_route(&r->pci, 5, true, 0, 0), -EINVAL);
	assert_int_equal(pci_msi_route(&r->pci, first + 5, true, 0, 0), -EINVAL);
}

static void test_state_round_trip(void **state)
{
	struct rig *r = *state;
	struct state_writer w;
	struct state_reader rd;
	void *buf;
	size_t len;
	int n;

	cfg_wr(r, 1, PCI_BAR0, 4, 0xe0300000u);
	cfg_wr(r, 1, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
	assert_int_equal(state_writer_init(&w), 0);
	state_begin(&w, 1, "/devices/fake@1");
	pci_function_save(&r->a.fn, &w);
	assert_int_equal(state_writer_finish(&w, &buf, &len), 0);
	state_writer_free(&w);
	/* Into a fresh bus built the same way. */
	teardown(state);
	setup(state);
	r = *state;
	assert_int_equal(state_reader_open(&rd, buf, len), 0);
	n = state_node(&rd, true, "/devices/fake@1");
	assert_int_equal(pci_function_load(&r->a.fn, &rd, n), 0);
	assert_int_equal(cfg_rd(r, 1, PCI_BAR0, 4), 0xe0300000u);
	assert_true(r->a.fn.bars[0].mapped);
	assert_int_equal(r->a.mapped_at, 0xe0300000ull);
	/* A stream that changes a read-only byte (the device ID) is refused. */
	r->a.fn.cfg[PCI_DEVICE_ID] ^= 1;
	assert_int_equal(state_reader_open(&rd, buf, len), 0);
	n = state_node(&rd, true, "/devices/fake@1");
	assert_int_equal(pci_function_load(&r->a.fn, &rd, n), -EINVAL);
	assert_one_line_naming(rd.msg, "read-only");
	/* And one saved in another slot. */
	assert_int_equal(state_reader_open(&rd, buf, len), 0);
	n = state_node(&rd, true, "/devices/fake@1");
	assert_int_equal(pci_function_load(&r->b.fn, &rd, n), -EINVAL);
	free(buf);
}

/* The latched 0xCF8 survives a save: a guest saved between its address
 * write and its data access reads the register it chose. */
static void test_bus_state_round_trip(void **state)
{
	struct rig *r = *state;
	struct state_writer w;
	struct state_reader rd;
	uint32_t a = 0x80000000u | (1u << 11) | PCI_VENDOR_ID, v = 0;
	void *buf, *empty;
	size_t len, empty_len;

	assert_true(bus_write(&r->pio, 0xcf8, &a, 4));
	assert_int_equal(state_writer_init(&w), 0);
	pci_bus_save(&r->pci, &w);
	assert_int_equal(state_writer_finish(&w, &buf, &len), 0);
	state_writer_free(&w);
	assert_int_equal(state_writer_init(&w), 0);
	state_begin(&w, 1, "/other");
	assert_int_equal(state_writer_finish(&w, &empty, &empty_len), 0);
	state_writer_free(&w);
	teardown(state);
	setup(state);
	r = *state;
	assert_int_equal(state_reader_open(&rd, buf, len), 0);
	assert_int_equal(pci_bus_load(&r->pci, &rd), 0);
	assert_true(bus_read(&r->pio, 0xcfc, &v, 4));
	assert_int_equal(v, r->a.fn.cfg[0] | r->a.fn.cfg[1] << 8 | r->a.fn.cfg[2] << 16 |
				    (uint32_t)r->a.fn.cfg[3] << 24);
	/* A stream from an older vmrun, without /pci-bus: the bus stays as built. */
	a = 0;
	assert_true(bus_write(&r->pio, 0xcf8, &a, 4));
	assert_int_equal(state_reader_open(&rd, empty, empty_len), 0);
	assert_int_equal(pci_bus_load(&r->pci, &rd), 0);
	assert_true(bus_read(&r->pio, 0xcf8, &v, 4));
	assert_int_equal(v, 0);
	/* A host bridge whose read-only identity differs is refused. */
	r->pci.host_bridge.cfg[PCI_DEVICE_ID] ^= 1;
	assert_int_equal(state_reader_open(&rd, buf, len), 0);
	assert_int_equal(pci_bus_load(&r->pci, &rd), -EINVAL);
	free(buf);
	free(empty);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_host_bridge_and_absent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_only_fields, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bar_sizing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bar_decode_and_move, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bar_onto_ram_or_device, setup, teardown),
		cmocka_unit_test_setup_teardown(test_capability_walk, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hostile_offsets, setup, teardown),
		cmocka_unit_test_setup_teardown(test_intx_shared_pin, setup, teardown),
		cmocka_unit_test_setup_teardown(test_msi_routes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_state_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bus_state_round_trip, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

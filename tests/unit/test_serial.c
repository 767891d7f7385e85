/* The 16550A UART, driven through the port bus as a guest would, against
 * include/vmrun/devices.h and the National Semiconductor PC16550D datasheet. */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "vmrun/bus.h"
#include "vmrun/devices.h"

/* Register offsets and bits, from the datasheet. */
#define RBR 0
#define THR 0
#define DLL 0
#define IER 1
#define DLM 1
#define IIR 2
#define FCR 2
#define LCR 3
#define MCR 4
#define LSR 5
#define MSR 6
#define SCR 7

#define LSR_DR 0x01
#define LSR_OE 0x02
#define LSR_THRE 0x20
#define LSR_TEMT 0x40

struct fx {
	struct bus bus;
	struct serial s;
	struct device_host host;
	int pipe_rd, pipe_wr;
	/* What the device did to the host. */
	int n_irq_calls;
	unsigned last_irq;
	int level;      /* the line as last driven */
	int rx_ready_calls;
	int exit_calls;
};

static void fake_set_irq(void *opaque, unsigned irq, int level)
{
	struct fx *f = opaque;

	f->n_irq_calls++;
	f->last_irq = irq;
	f->level = level;
}

static void fake_rx_ready(void *opaque)
{
	struct fx *f = opaque;

	f->rx_ready_calls++;
}

static void fake_request_exit(void *opaque, int status, const char *reason)
{
	struct fx *f = opaque;

	f->exit_calls++; /* a UART never ends the run */
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	int p[2];

	if (!f || pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
		return -1;
	f->pipe_rd = p[0];
	f->pipe_wr = p[1];
	f->host = (struct device_host){ .set_irq = fake_set_irq, .request_exit = fake_request_exit,
					.rx_ready = fake_rx_ready, .opaque = f };
	bus_init(&f->bus, "port");
	serial_init(&f->s, SERIAL_COM1_BASE, SERIAL_COM1_IRQ, f->pipe_wr, &f->host);
	if (bus_register(&f->bus, &f->s.region))
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	serial_exit(&f->s);
	bus_exit(&f->bus);
	close(f->pipe_rd);
	close(f->pipe_wr);
	free(f);
	return 0;
}

static uint8_t inb(struct fx *f, unsigned reg)
{
	uint8_t v = 0xee;

	assert_true(bus_read(&f->bus, SERIAL_COM1_BASE + reg, &v, 1));
	return v;
}

static void outb(struct fx *f, unsigned reg, uint8_t v)
{
	assert_true(bus_write(&f->bus, SERIAL_COM1_BASE + reg, &v, 1));
}

/* Everything transmitted so far. */
static size_t drain_pipe(struct fx *f, uint8_t *buf, size_t cap)
{
	ssize_t n = read(f->pipe_rd, buf, cap);

	if (n < 0) {
		assert_int_equal(errno, EAGAIN);
		return 0;
	}
	return (size_t)n;
}

static void test_region(void **state)
{
	struct fx *f = *state;

	assert_int_equal(f->s.region.base, 0x3f8);
	assert_int_equal(f->s.region.len, 8);
	assert_ptr_equal(bus_find(&f->bus, 0x3ff), &f->s.region);
	assert_null(bus_find(&f->bus, 0x400));
}

static void test_transmit(void **state)
{
	struct fx *f = *state;
	uint8_t out[16];

	outb(f, THR, 'H');
	outb(f, THR, 'i');
	outb(f, THR, '\n');
	outb(f, THR, 0x00);
	outb(f, THR, 0xff);
	assert_int_equal(drain_pipe(f, out, sizeof(out)), 5);
	assert_memory_equal(out, "Hi\n\0\xff", 5);
	assert_int_equal(f->n_irq_calls, 0); /* IER is 0 after reset */
}

static void test_lsr(void **state)
{
	struct fx *f = *state;
	uint8_t out[4];

	assert_int_equal(inb(f, LSR) & (LSR_THRE | LSR_TEMT | LSR_DR), LSR_THRE | LSR_TEMT);
	outb(f, THR, 'x');
	assert_int_equal(inb(f, LSR) & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
	assert_int_equal(serial_receive(&f->s, (const uint8_t *)"k", 1), 1);
	assert_int_equal(inb(f, LSR) & (LSR_THRE | LSR_TEMT | LSR_DR),
			 LSR_THRE | LSR_TEMT | LSR_DR);
	assert_int_equal(inb(f, RBR), 'k');
	assert_int_equal(inb(f, LSR) & LSR_DR, 0);
	assert_int_equal(drain_pipe(f, out, sizeof(out)), 1);
}

static void test_rbr_order(void **state)
{
	struct fx *f = *state;

	assert_int_equal(serial_receive(&f->s, (const uint8_t *)"abc", 3), 3);
	assert_int_equal(serial_receive(&f->s, (const uint8_t *)"de", 2), 2);
	assert_int_equal(inb(f, RBR), 'a');
	assert_int_equal(inb(f, RBR), 'b');
	assert_int_equal(inb(f, RBR), 'c');
	assert_int_equal(inb(f, RBR), 'd');
	assert_true(inb(f, LSR) & LSR_DR);
	assert_int_equal(inb(f, RBR), 'e');
	assert_false(inb(f, LSR) & LSR_DR);
}

static void test_dlab(void **state)
{
	struct fx *f = *state;
	uint8_t out[8];

	outb(f, IER, 0x00);
	outb(f, LCR, 0x80);
	outb(f, DLL, 0x01); /* 115200 baud */
	outb(f, DLM, 0x02);
	assert_int_equal(inb(f, DLL), 0x01);
	assert_int_equal(inb(f, DLM), 0x02);
	assert_int_equal(inb(f, LCR), 0x80);
	assert_int_equal(drain_pipe(f, out, sizeof(out)), 0); /* the DLL write sent nothing */
	outb(f, LCR, 0x03); /* 8N1, DLAB off */
	assert_int_equal(inb(f, LCR), 0x03);
	assert_int_equal(inb(f, IER), 0x00);   /* the DLM write did not reach IER */
	assert_int_equal(f->n_irq_calls, 0);
	outb(f, THR, 'z');
	assert_int_equal(drain_pipe(f, out, sizeof(out)), 1);
	assert_int_equal(out[0], 'z');
	/* The divisor survives. */
	outb(f, LCR, 0x83);
	assert_int_equal(inb(f, DLL), 0x01);
	assert_int_equal(inb(f, DLM), 0x02);
	outb(f, LCR, 0x03);
}

static void test_dlab_hides_rbr(void **state)
{
	struct fx *f = *state;

	assert_int_equal(serial_receive(&f->s, (const uint8_t *)"q", 1), 1);
	outb(f, LCR, 0x80);
	outb(f, DLL, 0x33);
	assert_int_equal(inb(f, DLL), 0x33); /* the divisor, not the data */
	outb(f, LCR, 0x00);
	assert_true(inb(f, LSR) & LSR_DR);   /* still there */
	assert_int_equal(inb(f, RBR), 'q');
}

static void test_scratch(void **state)
{
	struct fx *f = *state;

	outb(f, SCR, 0x5a);
	assert_int_equal(inb(f, SCR), 0x5a);
	outb(f, SCR, 0xa5);
	assert_int_equal(inb(f, SCR), 0xa5);
}

static void test_ier_reads_back(void **state)
{
	struct fx *f = *state;

	outb(f, IER, 0x05);
	assert_int_equal(inb(f, IER), 0x05);
	outb(f, IER, 0x00);
	assert_int_equal(inb(f, IER), 0x00);
}

static void test_thri(void **state)
{
	struct fx *f = *state;

	assert_int_equal(inb(f, IIR), 0x01); /* nothing pending */
	outb(f, IER, 0x02);                  /* THRI, THR empty: raise at once */
	assert_int_equal(f->level, 1);
	assert_int_equal(f->last_irq, SERIAL_COM1_IRQ);
	assert_int_equal(inb(f, IIR), 0x02);
	assert_int_equal(f->level, 0);       /* reading IIR cleared it */
	assert_int_equal(inb(f, IIR), 0x01);
	assert_int_equal(f->level, 0);
	/* A THR write empties at once: THRE interrupt again. */
	outb(f, THR, '.');
	assert_int_equal(f->level, 1);
	assert_int_equal(inb(f, IIR), 0x02);
	assert_int_equal(f->level, 0);
	/* Disabling THRI drops a pending one. */
	outb(f, THR, '.');
	assert_int_equal(f->level, 1);
	outb(f, IER, 0x00);
	assert_int_equal(f->level, 0);
	assert_int_equal(f->exit_calls, 0);
}

static void test_rdi(void **state)
{
	struct fx *f = *state;

	/* Without IER bit 0, data raises nothing. */
	assert_int_equal(serial_receive(&f->s, (const uint8_t *)"1", 1), 1);
	assert_int_equal(f->n_irq_calls, 0);
	assert_int_equal(inb(f, IIR), 0x01);
	outb(f, IER, 0x01); /* data already waiting: raise now */
	assert_int_equal(f->level, 1);
	assert_int_equal(f->last_irq, SERIAL_COM1_IRQ);
	assert_int_equal(inb(f, IIR), 0x04);
	assert_int_equal(f->level, 1);       /* reading IIR does not clear RDI */
	assert_int_equal(inb(f, RBR), '1');
	assert_int_equal(f->level, 0);
	assert_int_equal(inb(f, IIR), 0x01);

	assert_int_equal(serial_receive(&f->s, (const uint8_t *)"23", 2), 2);
	assert_int_equal(f->level, 1);
	assert_int_equal(inb(f, RBR), '2');
	assert_int_equal(f->level, 1);       /* one byte left */
	assert_int_equal(inb(f, RBR), '3');
	assert_int_equal(f->level, 0);
}

static void test_rdi_before_thri(void **state)
{
	struct fx *f = *state;

	outb(f, IER, 0x03);
	assert_int_equal(serial_receive(&f->s, (const uint8_t *)"r", 1), 1);
	/* Received data has the higher priority. */
	assert_int_equal(inb(f, IIR), 0x04);
	assert_int_equal(inb(f, RBR), 'r');
	assert_int_equal(inb(f, IIR), 0x02);
	assert_int_equal(inb(f, IIR), 0x01);
	assert_int_equal(f->level, 0);
}

static void test_fifo_bits(void **state)
{
	struct fx *f = *state;

	assert_int_equal(inb(f, IIR) & 0xc0, 0x00);
	outb(f, FCR, 0x01);
	assert_int_equal(inb(f, IIR), 0xc1);
	outb(f, IER, 0x02);
	assert_int_equal(inb(f, IIR), 0xc2);
	assert_int_equal(inb(f, IIR), 0xc1);
	outb(f, FCR, 0x00);
	assert_int_equal(inb(f, IIR), 0x01);
}

static void test_fcr_clear_rx(void **state)
{
	struct fx *f = *state;

	assert_int_equal(serial_receive(&f->s, (const uint8_t *)"abc", 3), 3);
	outb(f, IER, 0x01);
	assert_int_equal(f->level, 1);
	outb(f, FCR, 0x03); /* enable, clear RX */
	assert_false(inb(f, LSR) & LSR_DR);
	assert_int_equal(f->level, 0);
	assert_int_equal(inb(f, IIR), 0xc1);
	/* New data after the clear is read normally. */
	assert_int_equal(serial_receive(&f->s, (const uint8_t *)"z", 1), 1);
	assert_int_equal(inb(f, RBR), 'z');
}

static void test_loopback(void **state)
{
	struct fx *f = *state;
	uint8_t out[8];

	outb(f, MCR, 0x10);
	outb(f, THR, 'Q');
	assert_int_equal(drain_pipe(f, out, sizeof(out)), 0); /* not on the wire */
	assert_true(inb(f, LSR) & LSR_DR);
	assert_int_equal(inb(f, RBR), 'Q');
	assert_false(inb(f, LSR) & LSR_DR);

	/* MSR's upper nibble follows MCR: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD. */
	outb(f, MCR, 0x10);
	assert_int_equal(inb(f, MSR) & 0xf0, 0x00);
	outb(f, MCR, 0x11);
	assert_int_equal(inb(f, MSR) & 0xf0, 0x20);
	outb(f, MCR, 0x12);
	assert_int_equal(inb(f, MSR) & 0xf0, 0x10);
	outb(f, MCR, 0x14);
	assert_int_equal(inb(f, MSR) & 0xf0, 0x40);
	outb(f, MCR, 0x18);
	assert_int_equal(inb(f, MSR) & 0xf0, 0x80);
	outb(f, MCR, 0x1f);
	assert_int_equal(inb(f, MSR) & 0xf0, 0xf0);

	/* Out of loopback, bytes go to the wire again. */
	outb(f, MCR, 0x0b);
	outb(f, THR, 'W');
	assert_int_equal(drain_pipe(f, out, sizeof(out)), 1);
	assert_int_equal(out[0], 'W');
	assert_false(inb(f, LSR) & LSR_DR);
}

static void test_loopback_rdi(void **state)
{
	struct fx *f = *state;

	outb(f, MCR, 0x18);
	outb(f, IER, 0x01);
	assert_int_equal(f->n_irq_calls, 0);
	outb(f, THR, 'L');
	assert_int_equal(f->level, 1);
	assert_int_equal(inb(f, IIR), 0x04);
	assert_int_equal(inb(f, RBR), 'L');
	assert_int_equal(f->level, 0);
}

static void test_overrun(void **state)
{
	struct fx *f = *state;
	uint8_t buf[SERIAL_RX_BUF];

	memset(buf, 'o', sizeof(buf));
	assert_int_equal(serial_receive(&f->s, buf, sizeof(buf)), SERIAL_RX_BUF);
	/* In loopback a byte arriving at a full receiver is an overrun. */
	outb(f, MCR, 0x10);
	outb(f, THR, 'X');
	assert_true(inb(f, LSR) & LSR_OE);
	assert_false(inb(f, LSR) & LSR_OE); /* reading LSR clears it */
	for (unsigned i = 0; i < SERIAL_RX_BUF; i++)
		assert_int_equal(inb(f, RBR), 'o');
	assert_false(inb(f, LSR) & LSR_DR);
}

static void test_receive_full(void **state)
{
	struct fx *f = *state;
	uint8_t buf[300];

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)i;
	assert_int_equal(serial_rx_space(&f->s), SERIAL_RX_BUF);
	assert_int_equal(serial_receive(&f->s, buf, 100), 100);
	assert_int_equal(serial_rx_space(&f->s), SERIAL_RX_BUF - 100);
	assert_int_equal(serial_receive(&f->s, buf + 100, 200), SERIAL_RX_BUF - 100);
	assert_int_equal(serial_rx_space(&f->s), 0);
	assert_int_equal(serial_receive(&f->s, buf, 1), 0);
	/* Nothing was lost or reordered: the first 256 in order. */
	for (unsigned i = 0; i < SERIAL_RX_BUF; i++)
		assert_int_equal(inb(f, RBR), (uint8_t)i);
	assert_false(inb(f, LSR) & LSR_DR);
	assert_false(inb(f, LSR) & LSR_OE); /* the host kept the rest: no overrun */
}

static void test_rx_ready_after_full(void **state)
{
	struct fx *f = *state;
	uint8_t buf[SERIAL_RX_BUF + 10];
	unsigned i;

	for (i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 3);
	assert_int_equal(serial_receive(&f->s, buf, sizeof(buf)), SERIAL_RX_BUF);
	/* Draining to just above half: not yet. */
	for (i = 0; i < SERIAL_RX_BUF / 2 - 1; i++)
		assert_int_equal(inb(f, RBR), (uint8_t)(i * 3));
	assert_int_equal(f->rx_ready_calls, 0);
	assert_int_equal(serial_rx_space(&f->s), SERIAL_RX_BUF / 2 - 1);
	/* Half: now, once. */
	assert_int_equal(inb(f, RBR), (uint8_t)(i * 3));
	i++;
	assert_int_equal(f->rx_ready_calls, 1);
	for (; i < SERIAL_RX_BUF; i++)
		assert_int_equal(inb(f, RBR), (uint8_t)(i * 3));
	assert_int_equal(f->rx_ready_calls, 1);
	/* The host now offers the rest; the ring wrapped correctly. */
	assert_int_equal(serial_receive(&f->s, buf + SERIAL_RX_BUF, 10), 10);
	for (i = SERIAL_RX_BUF; i < sizeof(buf); i++)
		assert_int_equal(inb(f, RBR), (uint8_t)(i * 3));
	assert_int_equal(f->rx_ready_calls, 1);
}

static void test_no_rx_ready_without_full(void **state)
{
	struct fx *f = *state;
	uint8_t buf[200];

	memset(buf, 'n', sizeof(buf));
	assert_int_equal(serial_receive(&f->s, buf, sizeof(buf)), sizeof(buf));
	for (size_t i = 0; i < sizeof(buf); i++)
		(void)inb(f, RBR);
	assert_int_equal(f->rx_ready_calls, 0);
}

static void test_rx_ready_after_low_water(void **state)
{
	struct fx *f = *state;
	uint8_t buf[SERIAL_RX_BUF - 1];

	/* Everything offered fits, but the space left is below the low-water
	 * mark: the caller stops feeding and waits for rx_ready. */
	memset(buf, 'w', sizeof(buf));
	assert_int_equal(serial_receive(&f->s, buf, sizeof(buf)), sizeof(buf));
	assert_true(serial_rx_space(&f->s) < SERIAL_RX_LOW_WATER);
	for (unsigned i = 0; i < SERIAL_RX_BUF - 1 - SERIAL_RX_BUF / 2; i++)
		(void)inb(f, RBR);
	assert_int_equal(f->rx_ready_calls, 1);
}

/* Regression: a guest that clears the receive FIFO (FCR bit 1, as Linux's
 * 8250 driver does when it opens the port) while the buffer is full must still
 * get rx_ready() fired, or the host never resumes reading stdin. */
static void test_rx_ready_after_fifo_clear(void **state)
{
	struct fx *f = *state;
	uint8_t buf[SERIAL_RX_BUF + 10];

	memset(buf, 'f', sizeof(buf));
	assert_int_equal(serial_receive(&f->s, buf, sizeof(buf)), SERIAL_RX_BUF);
	outb(f, IER, 0x01); /* listening: the reset discards (else it holds) */
	outb(f, FCR, 0x03); /* enable and clear the receive FIFO */
	(void)inb(f, LSR);
	(void)inb(f, RBR);
	assert_int_equal(f->rx_ready_calls, 1);
}

/* Read what the guest can read now, up to @cap bytes, as a driver would:
 * RBR while LSR says data is ready. */
static size_t guest_read_all(struct fx *f, uint8_t *buf, size_t cap)
{
	size_t n = 0;

	while (n < cap && (inb(f, LSR) & LSR_DR))
		buf[n++] = inb(f, RBR);
	return n;
}

/* The hold: a receive-FIFO reset while IER.RDI is off keeps the input and
 * hides it (LSR.DR clear, RBR 0, no interrupt), along with what arrives
 * later, until IER.RDI goes on; then all of it comes, in order. */
static void test_hold_until_rdi(void **state)
{
	struct fx *f = *state;
	uint8_t buf[16];

	assert_int_equal(serial_receive(&f->s, (const uint8_t *)"ab", 2), 2);
	outb(f, FCR, 0x07); /* enable, clear RX and TX, IER still 0 */
	assert_false(inb(f, LSR) & LSR_DR);
	assert_int_equal(inb(f, RBR), 0);
	assert_int_equal(serial_receive(&f->s, (const uint8_t *)"cd", 2), 2);
	assert_false(inb(f, LSR) & LSR_DR);
	/* Other interrupt enables do not open the receiver. */
	outb(f, IER, 0x02);
	assert_int_equal(inb(f, IIR), 0x02 | 0xc0);
	assert_false(inb(f, LSR) & LSR_DR);
	assert_int_equal(f->level, 0);
	/* A second reset while held discards nothing either. */
	outb(f, IER, 0x00);
	outb(f, FCR, 0x07);
	outb(f, IER, 0x05); /* RLSI | RDI: the driver listens */
	assert_int_equal(f->level, 1);
	assert_int_equal(inb(f, IIR), 0x04 | 0xc0);
	assert_int_equal(guest_read_all(f, buf, sizeof(buf)), 4);
	assert_memory_equal(buf, "abcd", 4);
	assert_int_equal(f->level, 0);
	/* Open: IER.RDI off for a moment (Linux's console write) hides nothing. */
	assert_int_equal(serial_receive(&f->s, (const uint8_t *)"e", 1), 1);
	outb(f, IER, 0x00);
	assert_true(inb(f, LSR) & LSR_DR);
	assert_int_equal(inb(f, RBR), 'e');
}

/* Linux 6.1's 8250 register traffic from probe (autoconfig) to open
 * (serial8250_do_startup), with input arriving from the first instant:
 * nothing is lost, the stray RBR reads return nothing, and the input comes
 * in order once the driver enables the receive interrupt. */
static void test_hold_linux_probe_and_open(void **state)
{
	struct fx *f = *state;
	uint8_t buf[64];

	assert_int_equal(serial_receive(&f->s, (const uint8_t *)"echo hi\n", 8), 8);
	/* autoconfig: IER existence test, loopback test, FIFO probe, clear. */
	outb(f, IER, 0x00);
	(void)inb(f, IER);
	outb(f, IER, 0x0f);
	(void)inb(f, IER);
	outb(f, IER, 0x00);
	outb(f, MCR, 0x1a);
	(void)inb(f, MSR);
	outb(f, MCR, 0x08);
	outb(f, FCR, 0x01);
	(void)inb(f, IIR);
	outb(f, FCR, 0x01);
	outb(f, FCR, 0x07);
	outb(f, FCR, 0x00);
	assert_int_equal(inb(f, RBR), 0);
	outb(f, IER, 0x00);
	assert_int_equal(serial_receive(&f->s, (const uint8_t *)"poweroff\n", 9), 9);
	/* startup: clear FIFOs, clear interrupts, THRE test, then listen. */
	outb(f, FCR, 0x01);
	outb(f, FCR, 0x07);
	outb(f, FCR, 0x00);
	(void)inb(f, LSR);
	assert_int_equal(inb(f, RBR), 0);
	(void)inb(f, IIR);
	(void)inb(f, MSR);
	outb(f, LCR, 0x03);
	outb(f, MCR, 0x0b);
	outb(f, IER, 0x02);
	(void)inb(f, LSR);
	(void)inb(f, IIR);
	outb(f, IER, 0x00);
	(void)inb(f, LSR);
	assert_int_equal(inb(f, RBR), 0);
	(void)inb(f, IIR);
	(void)inb(f, MSR);
	assert_int_equal(f->level, 0);
	outb(f, IER, 0x05);
	assert_int_equal(f->level, 1);
	assert_int_equal(guest_read_all(f, buf, sizeof(buf)), 17);
	assert_memory_equal(buf, "echo hi\npoweroff\n", 17);
}

/* Held input counts against the buffer: the host is flow-controlled while
 * the driver is not listening, and rx_ready() fires once it has read. */
static void test_hold_flow_control(void **state)
{
	struct fx *f = *state;
	uint8_t in[SERIAL_RX_BUF + 10], buf[SERIAL_RX_BUF];

	for (unsigned i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)i;
	outb(f, FCR, 0x03);
	assert_int_equal(serial_receive(&f->s, in, sizeof(in)), SERIAL_RX_BUF);
	assert_int_equal(serial_rx_space(&f->s), 0);
	assert_false(inb(f, LSR) & (LSR_DR | LSR_OE));
	assert_int_equal(f->rx_ready_calls, 0);
	outb(f, IER, 0x01);
	assert_int_equal(guest_read_all(f, buf, sizeof(buf)), SERIAL_RX_BUF);
	assert_memory_equal(buf, in, SERIAL_RX_BUF);
	assert_int_equal(f->rx_ready_calls, 1);
}

/* A reset of the receive FIFO while the driver listens discards, as on
 * hardware, and starts no hold. */
static void test_reset_while_listening_discards(void **state)
{
	struct fx *f = *state;

	outb(f, IER, 0x01);
	assert_int_equal(serial_receive(&f->s, (const uint8_t *)"old", 3), 3);
	outb(f, FCR, 0x03);
	assert_false(inb(f, LSR) & LSR_DR);
	outb(f, IER, 0x00);
	assert_int_equal(serial_receive(&f->s, (const uint8_t *)"n", 1), 1);
	assert_true(inb(f, LSR) & LSR_DR);
	assert_int_equal(inb(f, RBR), 'n');
}

/* serial_set_log_fd(): every transmitted byte goes to both. */
static void test_log_fd(void **state)
{
	struct fx *f = *state;
	int p[2];
	uint8_t a[8], b[8];

	assert_int_equal(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
	serial_set_log_fd(&f->s, p[1]);
	outb(f, THR, 'o');
	outb(f, THR, 'k');
	assert_int_equal(drain_pipe(f, a, sizeof(a)), 2);
	assert_int_equal(read(p[0], b, sizeof(b)), 2);
	assert_memory_equal(a, "ok", 2);
	assert_memory_equal(b, "ok", 2);
	serial_set_log_fd(&f->s, -1);
	close(p[0]);
	close(p[1]);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_region),
		T(test_transmit),
		T(test_lsr),
		T(test_rbr_order),
		T(test_dlab),
		T(test_dlab_hides_rbr),
		T(test_scratch),
		T(test_ier_reads_back),
		T(test_thri),
		T(test_rdi),
		T(test_rdi_before_thri),
		T(test_fifo_bits),
		T(test_fcr_clear_rx),
		T(test_loopback),
		T(test_loopback_rdi),
		T(test_overrun),
		T(test_receive_full),
		T(test_rx_ready_after_full),
		T(test_no_rx_ready_without_full),
		T(test_rx_ready_after_low_water),
		T(test_rx_ready_after_fifo_clear),
		T(test_hold_until_rdi),
		T(test_hold_linux_probe_and_open),
		T(test_hold_flow_control),
		T(test_reset_while_listening_discards),
		T(test_log_fd),
	};

	return cmocka_run_group_tests_name("serial", tests, NULL, NULL);
}

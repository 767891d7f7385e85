/* 16550A UART.  Transmission is instantaneous (THR is always empty), input
 * arrives through serial_receive() into a buffer larger than the 16-byte FIFO
 * so the host side can be flow-controlled instead of dropping bytes, and
 * held back from a driver that has not opened the port yet (the rule is in
 * include/vmrun/devices.h, at serial_init()).
 * Register reference: the National Semiconductor PC16550D datasheet. */
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vmrun/devices.h"
#include "vmrun/state.h"

#define UART_RBR_THR 0
#define UART_IER 1
#define UART_IIR_FCR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_MSR 6
#define UART_SCR 7

#define IER_RDI 0x01  /* received data available */
#define IER_THRI 0x02 /* transmitter holding register empty */
#define IER_RLSI 0x04 /* receiver line status */
#define IER_MSI 0x08  /* modem status */

#define IIR_NONE 0x01
#define IIR_MSI 0x00
#define IIR_THRI 0x02
#define IIR_RDI 0x04
#define IIR_RLSI 0x06
#define IIR_FIFO_ENABLED 0xc0

#define FCR_ENABLE 0x01
#define FCR_CLEAR_RX 0x02

#define LCR_DLAB 0x80

#define MCR_DTR 0x01
#define MCR_RTS 0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10

#define LSR_DR 0x01
#define LSR_OE 0x02
#define LSR_THRE 0x20
#define LSR_TEMT 0x40

#define MSR_CTS 0x10
#define MSR_DSR 0x20
#define MSR_RI 0x40
#define MSR_DCD 0x80

static const struct bus_ops serial_ops;

void serial_init(struct serial *s, uint16_t base, unsigned irq, int out_fd,
		 const struct device_host *host)
{
	memset(s, 0, sizeof(*s));
	s->region = (struct bus_region){ .base = base, .len = 8, .ops = &serial_ops,
					 .opaque = s, .name = "serial" };
	s->host = host;
	s->irq = irq;
	s->out_fd = out_fd;
	s->log_fd = -1;
	s->mcr = MCR_OUT2;
	s->msr = MSR_DCD | MSR_DSR | MSR_CTS;
	s->dll = 0x0c; /* 9600 baud */
	pthread_mutex_init(&s->lock, NULL);
}

void serial_exit(struct serial *s)
{
	pthread_mutex_destroy(&s->lock);
}

void serial_set_log_fd(struct serial *s, int fd)
{
	s->log_fd = fd;
}

/* Interrupt identification, highest priority first.  Caller holds the lock. */
static uint8_t serial_iir(const struct serial *s)
{
	if ((s->ier & IER_RLSI) && s->lsr_errors)
		return IIR_RLSI;
	if ((s->ier & IER_RDI) && s->rx_count && !s->rx_hold)
		return IIR_RDI;
	if ((s->ier & IER_THRI) && s->thr_interrupt)
		return IIR_THRI;
	return IIR_NONE;
}

/* Drive the IRQ line from the current state.  Caller holds the lock; the
 * irqchip ioctl is cheap and only issued on a change. */
static void serial_update_irq(struct serial *s)
{
	bool level = serial_iir(s) != IIR_NONE;

	if (level != s->irq_level) {
		s->irq_level = level;
		if (s->host && s->host->set_irq)
			s->host->set_irq(s->host->opaque, s->irq, level);
	}
}

/* Put one byte in the receive buffer; caller holds the lock. */
static bool serial_rx_push(struct serial *s, uint8_t c)
{
	if (s->rx_count == SERIAL_RX_BUF) {
		s->lsr_errors |= LSR_OE;
		return false;
	}
	s->rx[(s->rx_head + s->rx_count) % SERIAL_RX_BUF] = c;
	s->rx_count++;
	return true;
}

static void serial_transmit(struct serial *s, uint8_t c)
{
	if (s->mcr & MCR_LOOP) {
		serial_rx_push(s, c);
		return;
	}
	if (!s->tx_seen) {
		clock_gettime(CLOCK_MONOTONIC, &s->first_tx);
		s->tx_seen = true;
	}
	/* A console that went away (closed pipe, full disk) must not stop
	 * the guest: the byte is dropped. */
	if (s->out_fd >= 0) {
		while (write(s->out_fd, &c, 1) < 0 && errno == EINTR)
			;
	}
	if (s->log_fd >= 0) {
		while (write(s->log_fd, &c, 1) < 0 && errno == EINTR)
			;
	}
}

/* After the guest consumed or discarded input: tell the host once the buffer
 * has drained to half, if it stopped feeding because the buffer was full.
 * Caller holds the lock. */
static void serial_rx_consumed(struct serial *s, bool *notify_space)
{
	if (s->rx_was_full && s->rx_count <= SERIAL_RX_BUF / 2) {
		s->rx_was_full = false;
		*notify_space = true;
	}
}

static uint8_t serial_read_reg(struct serial *s, uint64_t reg, bool *notify_space)
{
	uint8_t v = 0, iir;

	switch (reg) {
	case UART_RBR_THR:
		if (s->lcr & LCR_DLAB)
			return s->dll;
		if (s->rx_count && !s->rx_hold) {
			v = s->rx[s->rx_head];
			s->rx_head = (s->rx_head + 1) % SERIAL_RX_BUF;
			s->rx_count--;
			serial_rx_consumed(s, notify_space);
		}
		return v;
	case UART_IER:
		return (s->lcr & LCR_DLAB) ? s->dlm : s->ier;
	case UART_IIR_FCR:
		iir = serial_iir(s);
		/* Reading IIR while it reports THR-empty clears that source. */
		if (iir == IIR_THRI)
			s->thr_interrupt = false;
		return iir | ((s->fcr & FCR_ENABLE) ? IIR_FIFO_ENABLED : 0);
	case UART_LCR:
		return s->lcr;
	case UART_MCR:
		return s->mcr;
	case UART_LSR:
		v = LSR_THRE | LSR_TEMT | s->lsr_errors | (s->rx_count && !s->rx_hold ? LSR_DR : 0);
		s->lsr_errors = 0;
		return v;
	case UART_MSR:
		if (s->mcr & MCR_LOOP) {
			/* Loopback: the modem inputs follow the outputs. */
			return (uint8_t)(((s->mcr & MCR_RTS) ? MSR_CTS : 0) |
					 ((s->mcr & MCR_DTR) ? MSR_DSR : 0) |
					 ((s->mcr & MCR_OUT1) ? MSR_RI : 0) |
					 ((s->mcr & MCR_OUT2) ? MSR_DCD : 0));
		}
		return s->msr;
	default:
		return s->scr;
	}
}

static void serial_write_reg(struct serial *s, uint64_t reg, uint8_t v, bool *notify_space)
{
	switch (reg) {
	case UART_RBR_THR:
		if (s->lcr & LCR_DLAB) {
			s->dll = v;
			return;
		}
		serial_transmit(s, v);
		s->thr_interrupt = true; /* sent at once: THR is empty again */
		return;
	case UART_IER:
		if (s->lcr & LCR_DLAB) {
			s->dlm = v;
			return;
		}
		/* Enabling THRI with an empty THR raises it immediately. */
		if (!(s->ier & IER_THRI) && (v & IER_THRI))
			s->thr_interrupt = true;
		s->ier = v & 0x0f;
		/* The driver listens now: what was held is delivered. */
		if (v & IER_RDI)
			s->rx_hold = false;
		return;
	case UART_IIR_FCR:
		s->fcr = v & (FCR_ENABLE | 0xc0);
		if ((v & FCR_CLEAR_RX) && !(s->ier & IER_RDI)) {
			/* A driver (re)initialising the port, not listening
			 * yet (Linux at probe and at open): keep the input
			 * for it instead of discarding, and hold it back
			 * until it turns IER.RDI on. */
			s->rx_hold = true;
		} else if (v & FCR_CLEAR_RX) {
			s->rx_head = s->rx_count = 0;
			serial_rx_consumed(s, notify_space);
		}
		return;
	case UART_LCR:
		s->lcr = v;
		return;
	case UART_MCR:
		s->mcr = v & 0x1f;
		return;
	case UART_LSR:
	case UART_MSR:
		return; /* read-only */
	default:
		s->scr = v;
		return;
	}
}

static int serial_read(struct bus_region *region, uint64_t offset, void *data, unsigned size)
{
	struct serial *s = region->opaque;
	bool notify = false;

	memset(data, 0, size);
	pthread_mutex_lock(&s->lock);
	*(uint8_t *)data = serial_read_reg(s, offset, &notify);
	serial_update_irq(s);
	pthread_mutex_unlock(&s->lock);
	if (notify && s->host && s->host->rx_ready)
		s->host->rx_ready(s->host->opaque);
	return 0;
}

static int serial_write(struct bus_region *region, uint64_t offset, const void *data,
			unsigned size)
{
	struct serial *s = region->opaque;
	bool notify = false;

	pthread_mutex_lock(&s->lock);
	serial_write_reg(s, offset, *(const uint8_t *)data, &notify);
	serial_update_irq(s);
	pthread_mutex_unlock(&s->lock);
	if (notify && s->host && s->host->rx_ready)
		s->host->rx_ready(s->host->opaque);
	return 0;
}

static const struct bus_ops serial_ops = {
	.read = serial_read,
	.write = serial_write,
};

size_t serial_receive(struct serial *s, const uint8_t *buf, size_t len)
{
	size_t n = 0;

	pthread_mutex_lock(&s->lock);
	while (n < len && s->rx_count < SERIAL_RX_BUF)
		serial_rx_push(s, buf[n++]);
	if (n < len)
		s->rx_was_full = true;
	serial_update_irq(s);
	pthread_mutex_unlock(&s->lock);
	return n;
}

size_t serial_rx_space(struct serial *s)
{
	size_t space;

	pthread_mutex_lock(&s->lock);
	space = SERIAL_RX_BUF - s->rx_count;
	if (space < SERIAL_RX_LOW_WATER)
		s->rx_was_full = true; /* the caller stops feeding: arm rx_ready */
	pthread_mutex_unlock(&s->lock);
	return space;
}

/* ---- state (include/vmrun/state.h) ---- */

#define SERIAL_STATE_VERSION 1

void serial_save(struct serial *s, struct state_writer *w)
{
	uint8_t fifo[SERIAL_RX_BUF];

	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < s->rx_count; i++)
		fifo[i] = s->rx[(s->rx_head + i) % SERIAL_RX_BUF];
	state_begin(w, SERIAL_STATE_VERSION, "/devices/serial@%x", (unsigned)s->region.base);
	state_put_u32(w, "irq", s->irq);
	state_put_u32(w, "ier", s->ier);
	state_put_u32(w, "lcr", s->lcr);
	state_put_u32(w, "mcr", s->mcr);
	state_put_u32(w, "lsr-errors", s->lsr_errors);
	state_put_u32(w, "msr", s->msr);
	state_put_u32(w, "scr", s->scr);
	state_put_u32(w, "dll", s->dll);
	state_put_u32(w, "dlm", s->dlm);
	state_put_u32(w, "fcr", s->fcr);
	state_put_u32(w, "thr-interrupt", s->thr_interrupt);
	state_put_u32(w, "irq-level", s->irq_level);
	state_put_u32(w, "rx-hold", s->rx_hold);
	/* Input the guest has not read yet, oldest first. */
	state_put_bytes(w, "rx-fifo", fifo, s->rx_count);
	pthread_mutex_unlock(&s->lock);
}

int serial_load(struct serial *s, struct state_reader *r)
{
	int node = state_node(r, true, "/devices/serial@%x", (unsigned)s->region.base);
	uint32_t v[12];
	static const char *const names[] = { "ier", "lcr", "mcr", "lsr-errors", "msr", "scr",
					     "dll", "dlm", "fcr", "thr-interrupt", "irq-level" };
	const void *fifo;
	size_t fifo_len;
	uint32_t irq, hold = 0;

	if (state_version(r, node, 1, SERIAL_STATE_VERSION) < 0)
		return r->err;
	state_get_u32(r, node, "irq", &irq);
	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		state_get_u32_range(r, node, names[i], 0, i >= 9 ? 1 : 0xff, &v[i]);
	state_get_blob(r, node, "rx-fifo", SERIAL_RX_BUF, &fifo, &fifo_len);
	/* Absent in states saved before the hold existed: not holding. */
	if (state_has(r, node, "rx-hold"))
		state_get_u32_range(r, node, "rx-hold", 0, 1, &hold);
	if (r->err)
		return r->err;
	if (irq != s->irq)
		return state_reject(r, -EINVAL, "state: serial@%x on IRQ %u, this machine has it on %u",
				    (unsigned)s->region.base, irq, s->irq);
	pthread_mutex_lock(&s->lock);
	s->ier = (uint8_t)(v[0] & 0x0f);
	s->lcr = (uint8_t)v[1];
	s->mcr = (uint8_t)(v[2] & 0x1f);
	s->lsr_errors = (uint8_t)v[3];
	s->msr = (uint8_t)v[4];
	s->scr = (uint8_t)v[5];
	s->dll = (uint8_t)v[6];
	s->dlm = (uint8_t)v[7];
	s->fcr = (uint8_t)v[8];
	s->thr_interrupt = v[9];
	memcpy(s->rx, fifo, fifo_len);
	s->rx_head = 0;
	s->rx_count = (unsigned)fifo_len;
	s->rx_was_full = false;
	s->rx_hold = hold;
	/* The line's level lives in the restored IOAPIC/PIC; what vmrun
	 * drives must agree with it, so it is re-asserted from the registers. */
	s->irq_level = serial_iir(s) != IIR_NONE;
	if (s->host && s->host->set_irq)
		s->host->set_irq(s->host->opaque, s->irq, s->irq_level);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

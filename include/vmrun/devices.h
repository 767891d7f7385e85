/* Legacy PC devices on the port bus (src/devices/): the 16550A UART, the
 * i8042's reset line, and the isa-debug-exit port. */
#ifndef VMRUN_DEVICES_H
#define VMRUN_DEVICES_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "vmrun/bus.h"

/* How a device reaches the rest of the VM, without knowing struct vm. */
struct device_host {
	/* Drive interrupt line @irq to @level (0/1). */
	void (*set_irq)(void *opaque, unsigned irq, int level);
	/* End the run with exit status @status; @reason names the cause. */
	void (*request_exit)(void *opaque, int status, const char *reason);
	/* The UART's receive buffer has room again (input can resume). */
	void (*rx_ready)(void *opaque);
	void *opaque;
};

/* ---- 16550A UART ---- */

#define SERIAL_COM1_BASE 0x3f8
#define SERIAL_COM1_IRQ 4
#define SERIAL_RX_BUF 256

struct serial {
	struct bus_region region;
	const struct device_host *host;
	unsigned irq;
	int out_fd; /* where transmitted bytes go; -1 discards them */
	int log_fd; /* a second copy of them (serial_set_log_fd); -1: none */

	pthread_mutex_t lock; /* vCPU threads write registers, the loop pushes input */
	uint8_t ier, lcr, mcr, lsr_errors, msr, scr, dll, dlm, fcr;
	bool thr_interrupt; /* THR-empty interrupt pending (cleared by IIR read or THR write) */
	bool irq_level;
	uint8_t rx[SERIAL_RX_BUF];
	unsigned rx_head, rx_count;
	bool rx_was_full; /* tell the host when room appears */
	/* When the guest transmitted its first byte (CLOCK_MONOTONIC; under
	 * lock), for --exit-json's ms_to_first_output.  tx_seen: it did. */
	bool tx_seen;
	struct timespec first_tx;
	/* Input held back for a driver that is (re)opening the port: set by a
	 * receive-FIFO reset while IER.RDI is off, cleared when the guest turns
	 * IER.RDI on.  While set, the bytes in rx[] stay hidden (LSR.DR clear,
	 * RBR reads 0, no interrupt) and a FIFO reset does not discard them. */
	bool rx_hold;
};

/* Initialise a UART at @base with @irq; transmitted bytes are written to
 * @out_fd (or dropped when -1).  Register &s->region on the port bus next.
 *
 * Input is never lost to a driver that opens the port late: when the guest
 * resets the receive FIFO (FCR bit 1) while the received-data interrupt
 * (IER bit 0) is off, as Linux's 8250 driver does at probe and at open,
 * unread input is kept instead of discarded, and everything received is held
 * back (the guest sees an empty receiver) until the guest turns IER bit 0 on;
 * then it is delivered in order.  A reset with IER bit 0 on discards the
 * FIFO as on hardware.  Guests that never reset the FIFO (polling loops) see
 * input as it comes. */
void serial_init(struct serial *s, uint16_t base, unsigned irq, int out_fd,
		 const struct device_host *host);
void serial_exit(struct serial *s);

/* Also write transmitted bytes to @fd (-1: no second copy), e.g. a console
 * log next to stdout.  Call before the guest runs. */
void serial_set_log_fd(struct serial *s, int fd);

/* Offer received bytes to the guest; returns how many were taken (fewer than
 * @len when the buffer is full: the caller keeps the rest and waits for
 * host->rx_ready()). */
size_t serial_receive(struct serial *s, const uint8_t *buf, size_t len);

/* Bytes of free receive buffer space.  Below SERIAL_RX_LOW_WATER the caller
 * is expected to stop feeding: host->rx_ready() then fires once the guest has
 * drained the buffer to half. */
#define SERIAL_RX_LOW_WATER 2
size_t serial_rx_space(struct serial *s);

struct state_reader;
struct state_writer;

/* Save the UART's registers and unread input under /devices/serial@<base>;
 * load them back into a UART built at the same base and IRQ (refused
 * otherwise) and drive its IRQ line to match.  Load returns 0 or -errno
 * with the reason recorded in @r. */
void serial_save(struct serial *s, struct state_writer *w);
int serial_load(struct serial *s, struct state_reader *r) __attribute__((warn_unused_result));

/* ---- i8042 keyboard controller: only the CPU reset line ---- */

struct i8042 {
	struct bus_region data_region;   /* port 0x60 */
	struct bus_region status_region; /* port 0x64 */
	const struct device_host *host;
};

void i8042_init(struct i8042 *k, const struct device_host *host);

/* ---- isa-debug-exit (port 0xf4, 4 bytes) ---- */

#define DEBUG_EXIT_PORT 0xf4

struct debug_exit {
	struct bus_region region;
	const struct device_host *host;
	/* The first write ends the run; later ones (another vCPU racing it)
	 * are dropped, so that @value is the one behind the exit status. */
	atomic_bool fired;
	uint32_t value; /* the raw value of that write (valid once fired) */
};

void debug_exit_init(struct debug_exit *d, const struct device_host *host);

/* ---- ports every PC guest probes: "nothing here", silently ---- */

/* Port 0x80 (POST codes, Linux's I/O delay), 0x87 (DMA page register) and
 * the IER of COM2-COM4 (0x2f9, 0x3e9, 0x2e9), which Linux's 8250 driver
 * probes: reads give all-ones (no UART answers), writes are dropped, and
 * neither logs an "unclaimed port" warning.  Register each of @p->regions on
 * the port bus after probe_ports_init(). */
#define PROBE_PORTS_N 5
struct probe_ports {
	struct bus_region regions[PROBE_PORTS_N];
};

void probe_ports_init(struct probe_ports *p);

/* ---- MC146818 CMOS RTC (ports 0x70 index, 0x71 data) ---- */

#define RTC_INDEX_PORT 0x70
#define RTC_CMOS_SIZE 128

/* The wall clock the RTC shows: seconds since 1970-01-01 00:00:00 UTC.
 * A function pointer so that tests can fix the time. */
typedef int64_t (*rtc_clock_fn)(void *opaque);

/* The host's CLOCK_REALTIME; the default clock. */
int64_t rtc_clock_host(void *opaque);

struct rtc {
	struct bus_region region; /* ports 0x70-0x71 */
	rtc_clock_fn clock;
	void *clock_opaque;

	pthread_mutex_t lock; /* any vCPU may touch the index/data pair */
	uint8_t index;        /* 0..127; bit 7 of an index write is the NMI mask */
	bool nmi_masked;      /* recorded only: vmrun has no NMI source to gate */
	uint8_t cmos[RTC_CMOS_SIZE]; /* RAM, and the stored bits of registers A and B */
};

/* Initialise @rtc showing the time from @clock (rtc_clock_host when NULL)
 * in BCD, 24-hour mode; CMOS RAM reads as zero until written.  Register
 * &rtc->region on the port bus next; rtc_exit() when done. */
void rtc_init(struct rtc *rtc, rtc_clock_fn clock, void *clock_opaque);
void rtc_exit(struct rtc *rtc);

/* Save / load the index register, the NMI mask and CMOS RAM under
 * /devices/rtc@70 (the time itself is the host's). */
void rtc_save(struct rtc *rtc, struct state_writer *w);
int rtc_load(struct rtc *rtc, struct state_reader *r) __attribute__((warn_unused_result));

#endif

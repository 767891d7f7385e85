/* Legacy PC devices on the port bus (src/devices/): the 16550A UART, the
 * i8042's reset line, and the isa-debug-exit port. */
#ifndef VMRUN_DEVICES_H
#define VMRUN_DEVICES_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

	pthread_mutex_t lock; /* vCPU threads write registers, the loop pushes input */
	uint8_t ier, lcr, mcr, lsr_errors, msr, scr, dll, dlm, fcr;
	bool thr_interrupt; /* THR-empty interrupt pending (cleared by IIR read or THR write) */
	bool irq_level;
	uint8_t rx[SERIAL_RX_BUF];
	unsigned rx_head, rx_count;
	bool rx_was_full; /* tell the host when room appears */
};

/* Initialise a UART at @base with @irq; transmitted bytes are written to
 * @out_fd (or dropped when -1).  Register &s->region on the port bus next. */
void serial_init(struct serial *s, uint16_t base, unsigned irq, int out_fd,
		 const struct device_host *host);
void serial_exit(struct serial *s);

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
};

void debug_exit_init(struct debug_exit *d, const struct device_host *host);

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

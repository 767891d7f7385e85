/* echo: interrupt-driven serial input through the whole chain the VMM must
 * model: UART receive interrupt (IER, MCR.OUT2) -> ISA IRQ 4 -> IOAPIC pin 4
 * -> local APIC -> IDT.  The 8259s are masked so only the IOAPIC path can
 * deliver.  Echoes each line as "echo: L"; "exit N" ends the run. */
#include "guest.h"

#define COM1_IRQ 4          /* ISA IRQ 4 = IOAPIC pin 4 (identity wiring) */
#define COM1_VECTOR 0x24
#define SPURIOUS_VECTOR 0x2f
#define RING_SIZE 1024      /* a power of two */
#define LINE_MAX 256        /* lines are at most 200 characters */

/* Bytes from the interrupt handler to the main loop: the handler only
 * writes head, the main loop only tail, on this one CPU. */
static volatile uint8_t ring[RING_SIZE];
static volatile uint32_t ring_head, ring_tail;
static volatile uint32_t rx_irqs;
/* Set while the receive interrupt is off because the ring is full. */
static volatile bool rx_paused;
/* NMIs taken (the host's "nmi" command); the main loop reports each. */
static volatile uint32_t nmis;
static uint32_t nmis_told;

/* COM1 receive interrupt: move bytes from RBR to the ring while both have
 * some, then EOI.  A full ring turns the receive interrupt off instead of
 * dropping bytes: what the guest does not read stays in the UART, and the
 * host stops feeding it (input flow control).  Never prints: the main loop
 * may hold the console lock. */
static void com1_irq(struct isr_frame *f)
{
	(void)f;
	rx_irqs++;
	while (ring_head - ring_tail < RING_SIZE && (inb(COM1_PORT + UART_LSR) & UART_LSR_DR)) {
		ring[ring_head % RING_SIZE] = inb(COM1_PORT + UART_RBR);
		ring_head++;
	}
	if (ring_head - ring_tail == RING_SIZE) {
		outb(COM1_PORT + UART_IER, 0);
		rx_paused = true;
	}
	lapic_eoi();
}

/* The spurious vector takes no EOI by definition. */
static void spurious_irq(struct isr_frame *f)
{
	(void)f;
}

/* The host's NMI (vector 2): counted, reported by the main loop. */
static void nmi_handler(struct isr_frame *f)
{
	(void)f;
	nmis++;
}

/* Next received byte, sleeping with interrupts enabled until there is one;
 * "echo: nmi N" for each NMI taken meanwhile. */
static char getc_wait(void)
{
	char c;

	for (;;) {
		cpu_cli();
		if (nmis != nmis_told) {
			nmis_told = nmis;
			gprintf("echo: nmi %u\n", nmis_told);
		}
		if (ring_tail != ring_head)
			break;
		cpu_sti_hlt();
	}
	c = (char)ring[ring_tail % RING_SIZE];
	ring_tail++;
	/* Half empty again: listen again.  With bytes waiting, enabling IER
	 * raises the UART's line at once (a fresh edge for the IOAPIC). */
	if (rx_paused && ring_head - ring_tail <= RING_SIZE / 2) {
		rx_paused = false;
		outb(COM1_PORT + UART_IER, UART_IER_RDI);
	}
	cpu_sti();
	return c;
}

/* The N of "exit N" (decimal or 0x hex), or -1 when @line is not that. */
static long parse_exit(const char *line)
{
	unsigned long n = 0, base = 10;
	const char *p = line + 5;

	if (memcmp(line, "exit ", 5))
		return -1;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X') && p[2]) {
		base = 16;
		p += 2;
	}
	if (!*p)
		return -1;
	for (; *p; p++) {
		unsigned d;

		if (*p >= '0' && *p <= '9')
			d = (unsigned)(*p - '0');
		else if (base == 16 && *p >= 'a' && *p <= 'f')
			d = (unsigned)(*p - 'a' + 10);
		else if (base == 16 && *p >= 'A' && *p <= 'F')
			d = (unsigned)(*p - 'A' + 10);
		else
			return -1;
		n = n * base + d;
		if (n > 0xffffffffu)
			return -1;
	}
	return (long)n;
}

int guest_main(void)
{
	char line[LINE_MAX];
	size_t len = 0;
	bool after_cr = false;

	/* Both 8259s fully masked: IRQ 4 must come through the IOAPIC. */
	outb(0x21, 0xff);
	outb(0xa1, 0xff);
	idt_set_handler(COM1_VECTOR, com1_irq);
	idt_set_handler(SPURIOUS_VECTOR, spurious_irq);
	idt_set_handler(2, nmi_handler);
	lapic_enable(SPURIOUS_VECTOR);
	ioapic_route(COM1_IRQ, COM1_VECTOR, lapic_id());
	/* OUT2 connects the UART's IRQ output on a PC.  Bytes that arrived
	 * earlier are kept: enabling IER.RDI with data ready raises the line
	 * at once, as on a real 16550, and the handler drains them. */
	outb(COM1_PORT + UART_MCR, UART_MCR_OUT2 | UART_MCR_RTS | UART_MCR_DTR);
	outb(COM1_PORT + UART_IER, UART_IER_RDI);
	gprintf("echo ready\n");

	for (;;) {
		char c = getc_wait();
		long code;

		if (c == '\n' && after_cr) { /* the LF of a CRLF: one line end */
			after_cr = false;
			continue;
		}
		after_cr = c == '\r';
		if (c != '\r' && c != '\n') {
			if (len < LINE_MAX - 1)
				line[len++] = c;
			continue;
		}
		line[len] = '\0';
		len = 0;
		gprintf("echo: %s\n", line);
		code = parse_exit(line);
		if (code >= 0) {
			cpu_cli();
			gprintf("irqs: %u\n", rx_irqs);
			return (int)code;
		}
	}
}

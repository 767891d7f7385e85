/* COM1 output and gprintf.  One lock serialises whole gprintf calls so lines
 * from several CPUs do not interleave. */
#include "kit.h"

/* How long to poll LSR.THRE before writing anyway: bounds the wait where no
 * UART answers, instead of hanging the guest silently. */
#define THRE_POLLS 100000

static struct spinlock console_lock;

void spin_lock(struct spinlock *l)
{
	while (__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE))
		while (l->locked)
			cpu_pause();
}

void spin_unlock(struct spinlock *l)
{
	__atomic_store_n(&l->locked, 0, __ATOMIC_RELEASE);
}

void console_break_lock(void)
{
	spin_unlock(&console_lock);
}

/* Write @c to COM1 once the transmit holding register is free. */
static void uart_putc(char c)
{
	for (unsigned i = 0; i < THRE_POLLS && !(inb(COM1_PORT + UART_LSR) & UART_LSR_THRE); i++)
		cpu_pause();
	outb(COM1_PORT + UART_THR, (uint8_t)c);
}

/* Print @v in @base (10 or 16), at least @width characters wide padded with
 * @pad, with a '-' in front when @neg; returns the characters written. */
static int put_number(unsigned long long v, unsigned base, bool neg, unsigned width, char pad)
{
	char digits[24];
	unsigned n = 0, len;
	int out = 0;

	do {
		digits[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	len = n + (neg ? 1 : 0);
	if (neg && pad == '0') {
		uart_putc('-');
		out++;
	}
	for (; len < width; len++, out++)
		uart_putc(pad);
	if (neg && pad != '0') {
		uart_putc('-');
		out++;
	}
	while (n) {
		uart_putc(digits[--n]);
		out++;
	}
	return out;
}

/* The body of vgprintf(), called with the console lock held. */
static int format(const char *fmt, va_list ap)
{
	int out = 0;

	for (; *fmt; fmt++) {
		unsigned width = 0, lng = 0;
		char pad = ' ';
		unsigned long long u;
		long long s;

		if (*fmt != '%') {
			uart_putc(*fmt);
			out++;
			continue;
		}
		fmt++;
		if (*fmt == '0') {
			pad = '0';
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (unsigned)(*fmt++ - '0');
		while (*fmt == 'l' || *fmt == 'z') {
			lng++;
			fmt++;
		}
		switch (*fmt) {
		case 'd':
		case 'i':
			s = lng ? va_arg(ap, long long) : va_arg(ap, int);
			/* Negate in unsigned arithmetic: LLONG_MIN has no positive twin. */
			out += put_number(s < 0 ? 0ull - (unsigned long long)s : (unsigned long long)s,
					  10, s < 0, width, pad);
			break;
		case 'u':
		case 'x':
			u = lng ? va_arg(ap, unsigned long long) : va_arg(ap, unsigned);
			out += put_number(u, *fmt == 'u' ? 10 : 16, false, width, pad);
			break;
		case 'p':
			uart_putc('0');
			uart_putc('x');
			out += 2 + put_number((uintptr_t)va_arg(ap, void *), 16, false, width, pad);
			break;
		case 's': {
			const char *str = va_arg(ap, const char *);

			if (!str)
				str = "(null)";
			for (size_t len = strlen(str); len < width; len++, out++)
				uart_putc(' ');
			for (; *str; str++, out++)
				uart_putc(*str);
			break;
		}
		case 'c':
			uart_putc((char)va_arg(ap, int));
			out++;
			break;
		case '%':
			uart_putc('%');
			out++;
			break;
		case '\0':
			return out; /* a lone '%' ends the format */
		default:
			uart_putc('%');
			uart_putc(*fmt);
			out += 2;
			break;
		}
	}
	return out;
}

int vgprintf(const char *fmt, va_list ap)
{
	int n;

	spin_lock(&console_lock);
	n = format(fmt, ap);
	spin_unlock(&console_lock);
	return n;
}

int gprintf(const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vgprintf(fmt, ap);
	va_end(ap);
	return n;
}

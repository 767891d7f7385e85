/* rtc: reads the CMOS clock the way a PC kernel does (index to port 0x70,
 * data from 0x71), once in the default BCD mode and once after switching
 * status register B to binary, and round-trips one CMOS RAM byte.  The
 * guest test compares the printed times with the host's UTC clock. */
#include "guest.h"

#define CMOS_INDEX 0x70
#define CMOS_DATA 0x71
#define NMI_DISABLE 0x80 /* kept set while touching the RTC, as Linux does */

#define REG_A 0x0a
#define REG_B 0x0b
#define REG_D 0x0d
#define REG_A_UIP 0x80
#define REG_B_DM_BINARY 0x04
#define RAM_PROBE 0x40

static uint8_t cmos_read(uint8_t index)
{
	outb(CMOS_INDEX, NMI_DISABLE | index);
	return inb(CMOS_DATA);
}

static void cmos_write(uint8_t index, uint8_t v)
{
	outb(CMOS_INDEX, NMI_DISABLE | index);
	outb(CMOS_DATA, v);
}

static unsigned from_bcd(uint8_t v)
{
	return (v >> 4) * 10 + (v & 0x0f);
}

/* Print the clock as "<label>: YYYY-MM-DD HH:MM:SS wday=N". */
static void print_time(const char *label, bool binary)
{
	uint8_t raw[8];
	static const uint8_t regs[8] = { 0x32, 0x09, 0x08, 0x07, 0x04, 0x02, 0x00, 0x06 };
	unsigned v[8];

	while (cmos_read(REG_A) & REG_A_UIP)
		;
	for (int i = 0; i < 8; i++) {
		raw[i] = cmos_read(regs[i]);
		v[i] = binary ? raw[i] : from_bcd(raw[i]);
	}
	gprintf("%s: %02u%02u-%02u-%02u %02u:%02u:%02u wday=%u\n", label, v[0], v[1], v[2], v[3],
		v[4], v[5], v[6], v[7]);
}

int guest_main(void)
{
	uint8_t b = cmos_read(REG_B);

	gprintf("rtc status: A=%02x B=%02x D=%02x\n", cmos_read(REG_A), b, cmos_read(REG_D));
	print_time("rtc bcd", false);
	cmos_write(REG_B, b | REG_B_DM_BINARY);
	print_time("rtc binary", true);
	cmos_write(REG_B, b);
	cmos_write(RAM_PROBE, 0xa5);
	gprintf("rtc ram: %02x\n", cmos_read(RAM_PROBE));
	outb(CMOS_INDEX, 0x0d); /* NMIs back on, as a kernel leaves it */
	return 0;
}

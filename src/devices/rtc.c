/* MC146818-compatible CMOS RTC on ports 0x70/0x71.  The time registers show
 * the clock function's UTC time at each read; nothing ticks in the
 * background, so there is no update cycle (UIP always reads clear) and no
 * periodic, alarm or update interrupt.  Register reference: the Motorola
 * MC146818A datasheet and the PC/AT CMOS map (century at 0x32). */
#include <string.h>
#include <time.h>

#include "vmrun/devices.h"
#include "vmrun/state.h"

#define RTC_SECONDS 0x00
#define RTC_MINUTES 0x02
#define RTC_HOURS 0x04
#define RTC_WEEKDAY 0x06
#define RTC_DAY 0x07
#define RTC_MONTH 0x08
#define RTC_YEAR 0x09
#define RTC_REG_A 0x0a
#define RTC_REG_B 0x0b
#define RTC_REG_C 0x0c
#define RTC_REG_D 0x0d
#define RTC_CENTURY 0x32

#define RTC_INDEX_MASK 0x7f
#define RTC_NMI_MASK 0x80

#define REG_A_UIP 0x80       /* update in progress: never, we have no update cycle */
#define REG_A_DEFAULT 0x26   /* divider 010 (32.768 kHz time base), rate 0110 (1024 Hz) */
#define REG_B_24H 0x02
#define REG_B_DM_BINARY 0x04
#define REG_B_DEFAULT REG_B_24H /* 24-hour, BCD: what a PC BIOS leaves behind */
#define REG_D_VRT 0x80       /* valid RAM and time: the battery is fine */
#define HOUR_PM 0x80         /* 12-hour mode: bit 7 of the hours register */

int64_t rtc_clock_host(void *opaque)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec;
}

static uint8_t to_bcd(unsigned v)
{
	return (uint8_t)(((v / 10) % 10) << 4 | (v % 10));
}

/* @v (0..99) in the data mode register B selects. */
static uint8_t rtc_encode(const struct rtc *rtc, unsigned v)
{
	return (rtc->cmos[RTC_REG_B] & REG_B_DM_BINARY) ? (uint8_t)v : to_bcd(v);
}

/* The hours register: 0-23, or in 12-hour mode 1-12 with bit 7 set for PM
 * (the PM bit is outside the BCD/binary digits). */
static uint8_t rtc_encode_hours(const struct rtc *rtc, unsigned hour)
{
	unsigned h12;

	if (rtc->cmos[RTC_REG_B] & REG_B_24H)
		return rtc_encode(rtc, hour);
	h12 = hour % 12 ? hour % 12 : 12;
	return rtc_encode(rtc, h12) | (hour >= 12 ? HOUR_PM : 0);
}

/* The registers that show the clock (the alarms at 0x01, 0x03, 0x05 are
 * plain storage). */
static bool rtc_is_clock_reg(unsigned index)
{
	return (index <= RTC_YEAR && index != 0x01 && index != 0x03 && index != 0x05) ||
	       index == RTC_CENTURY;
}

/* Register @index as the guest reads it; rtc->lock held. */
static uint8_t rtc_read_reg(struct rtc *rtc, unsigned index)
{
	int64_t secs;
	time_t t;
	struct tm tm;

	if (rtc_is_clock_reg(index)) {
		secs = rtc->clock(rtc->clock_opaque);
		t = (time_t)secs;
		if (secs < 0 || !gmtime_r(&t, &tm))
			memset(&tm, 0, sizeof(tm)); /* a clock before 1970 shows 1900-01-00 */
		switch (index) {
		case RTC_SECONDS: return rtc_encode(rtc, (unsigned)tm.tm_sec);
		case RTC_MINUTES: return rtc_encode(rtc, (unsigned)tm.tm_min);
		case RTC_HOURS: return rtc_encode_hours(rtc, (unsigned)tm.tm_hour);
		case RTC_WEEKDAY: return rtc_encode(rtc, (unsigned)tm.tm_wday + 1); /* Sunday is 1 */
		case RTC_DAY: return rtc_encode(rtc, (unsigned)tm.tm_mday);
		case RTC_MONTH: return rtc_encode(rtc, (unsigned)tm.tm_mon + 1);
		case RTC_YEAR: return rtc_encode(rtc, (unsigned)(tm.tm_year + 1900) % 100);
		default: return rtc_encode(rtc, (unsigned)((tm.tm_year + 1900) / 100) % 100);
		}
	}
	switch (index) {
	case RTC_REG_A: return rtc->cmos[RTC_REG_A] & ~REG_A_UIP;
	case RTC_REG_C: return 0; /* no interrupt flags: we raise no interrupts */
	case RTC_REG_D: return REG_D_VRT;
	default: return rtc->cmos[index];
	}
}

/* The guest writes @v to register @index; rtc->lock held.  The time and
 * century registers belong to the host clock, so writes to them are dropped;
 * registers C and D are read-only. */
static void rtc_write_reg(struct rtc *rtc, unsigned index, uint8_t v)
{
	if (rtc_is_clock_reg(index) || index == RTC_REG_C || index == RTC_REG_D)
		return;
	if (index == RTC_REG_A)
		v &= ~REG_A_UIP;
	rtc->cmos[index] = v;
}

static int rtc_access(struct rtc *rtc, uint64_t offset, uint8_t *data, unsigned size, bool write)
{
	pthread_mutex_lock(&rtc->lock);
	/* The bus hands us only accesses inside [0x70, 0x72); a wider one is
	 * taken byte by byte, index port first, as the two ports would see it. */
	for (unsigned i = 0; i < size; i++) {
		uint64_t port = offset + i;

		if (port == 0 && write) {
			rtc->index = data[i] & RTC_INDEX_MASK;
			rtc->nmi_masked = data[i] & RTC_NMI_MASK;
		} else if (port == 0) {
			data[i] = 0xff; /* the index port is write-only */
		} else if (write) {
			rtc_write_reg(rtc, rtc->index, data[i]);
		} else {
			data[i] = rtc_read_reg(rtc, rtc->index);
		}
	}
	pthread_mutex_unlock(&rtc->lock);
	return 0;
}

static int rtc_read(struct bus_region *region, uint64_t offset, void *data, unsigned size)
{
	return rtc_access(region->opaque, offset, data, size, false);
}

static int rtc_write(struct bus_region *region, uint64_t offset, const void *data, unsigned size)
{
	uint8_t buf[8]; /* a private copy: rtc_access() takes one buffer for both directions */
	unsigned n = size < sizeof(buf) ? size : sizeof(buf);

	memcpy(buf, data, n);
	return rtc_access(region->opaque, offset, buf, n, true);
}

static const struct bus_ops rtc_ops = { .read = rtc_read, .write = rtc_write };

void rtc_init(struct rtc *rtc, rtc_clock_fn clock, void *clock_opaque)
{
	memset(rtc, 0, sizeof(*rtc));
	rtc->region = (struct bus_region){ .base = RTC_INDEX_PORT, .len = 2, .ops = &rtc_ops,
					   .opaque = rtc, .name = "rtc" };
	rtc->clock = clock ? clock : rtc_clock_host;
	rtc->clock_opaque = clock_opaque;
	pthread_mutex_init(&rtc->lock, NULL);
	rtc->cmos[RTC_REG_A] = REG_A_DEFAULT;
	rtc->cmos[RTC_REG_B] = REG_B_DEFAULT;
}

void rtc_exit(struct rtc *rtc)
{
	pthread_mutex_destroy(&rtc->lock);
}

/* ---- state (include/vmrun/state.h) ---- */

#define RTC_STATE_VERSION 1

void rtc_save(struct rtc *rtc, struct state_writer *w)
{
	pthread_mutex_lock(&rtc->lock);
	state_begin(w, RTC_STATE_VERSION, "/devices/rtc@70");
	state_put_u32(w, "index", rtc->index);
	state_put_u32(w, "nmi-masked", rtc->nmi_masked);
	/* The clock registers read the host's time; RAM and registers A-D
	 * as written. */
	state_put_bytes(w, "cmos", rtc->cmos, sizeof(rtc->cmos));
	pthread_mutex_unlock(&rtc->lock);
}

int rtc_load(struct rtc *rtc, struct state_reader *r)
{
	int node = state_node(r, true, "/devices/rtc@70");
	uint32_t index, nmi;
	uint8_t cmos[RTC_CMOS_SIZE];

	if (state_version(r, node, 1, RTC_STATE_VERSION) < 0)
		return r->err;
	state_get_u32_range(r, node, "index", 0, RTC_INDEX_MASK, &index);
	state_get_u32_range(r, node, "nmi-masked", 0, 1, &nmi);
	state_get_bytes(r, node, "cmos", cmos, sizeof(cmos));
	if (r->err)
		return r->err;
	pthread_mutex_lock(&rtc->lock);
	rtc->index = (uint8_t)index;
	rtc->nmi_masked = nmi;
	memcpy(rtc->cmos, cmos, sizeof(cmos));
	pthread_mutex_unlock(&rtc->lock);
	return 0;
}

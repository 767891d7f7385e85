#include "vmrun/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

/* See log_set_quiet() in vmrun/log.h for why this one is process-wide. */
static atomic_bool log_quiet_flag;

void log_set_quiet(bool quiet)
{
	atomic_store(&log_quiet_flag, quiet);
}

bool log_quiet(void)
{
	return atomic_load(&log_quiet_flag);
}

/* One fprintf per line: stderr is unbuffered, and a single call keeps lines
 * from different vCPU threads from interleaving mid-line. */
static void log_line(const char *level, const char *fmt, va_list ap)
{
	char buf[1024];

	vsnprintf(buf, sizeof(buf), fmt, ap);
	fprintf(stderr, "vmrun: %s%s\n", level, buf);
}

void log_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_line("error: ", fmt, ap);
	va_end(ap);
}

void log_warn(const char *fmt, ...)
{
	va_list ap;

	if (log_quiet())
		return;
	va_start(ap, fmt);
	log_line("warning: ", fmt, ap);
	va_end(ap);
}

void log_info(const char *fmt, ...)
{
	va_list ap;

	if (log_quiet())
		return;
	va_start(ap, fmt);
	log_line("", fmt, ap);
	va_end(ap);
}

int errmsg(int r, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return r;
}

void log_debug(const char *fmt, ...)
{
	va_list ap;

	if (!getenv("VMRUN_DEBUG"))
		return;
	va_start(ap, fmt);
	log_line("debug: ", fmt, ap);
	va_end(ap);
}

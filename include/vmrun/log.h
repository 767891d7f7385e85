/* Diagnostics on stderr, each line prefixed "vmrun: ". */
#ifndef VMRUN_LOG_H
#define VMRUN_LOG_H

#include <stddef.h>

__attribute__((format(printf, 1, 2))) void log_error(const char *fmt, ...);
__attribute__((format(printf, 1, 2))) void log_warn(const char *fmt, ...);
/* A line of information ("vmrun: ..."), for what an operator asked for. */
__attribute__((format(printf, 1, 2))) void log_info(const char *fmt, ...);
/* Format a one-line error message into @err (@errlen bytes) and return @r:
 * the shape of every "return -errno with a message" path. */
__attribute__((format(printf, 4, 5)))
int errmsg(int r, char *err, size_t errlen, const char *fmt, ...);

/* Printed only when VMRUN_DEBUG is set in the environment. */
__attribute__((format(printf, 1, 2))) void log_debug(const char *fmt, ...);

#endif

/* Diagnostics on stderr, each line prefixed "vmrun: ". */
#ifndef VMRUN_LOG_H
#define VMRUN_LOG_H

#include <stdbool.h>
#include <stddef.h>

__attribute__((format(printf, 1, 2))) void log_error(const char *fmt, ...);
__attribute__((format(printf, 1, 2))) void log_warn(const char *fmt, ...);
/* A line of information ("vmrun: ..."), for what an operator asked for. */
__attribute__((format(printf, 1, 2))) void log_info(const char *fmt, ...);
/* Format a one-line error message into @err (@errlen bytes) and return @r:
 * the shape of every "return -errno with a message" path. */
__attribute__((format(printf, 4, 5)))
int errmsg(int r, char *err, size_t errlen, const char *fmt, ...);

/* --quiet: from now on log_warn() and log_info() print nothing (errors and
 * the guest's console stay).  Process-wide on purpose, the one exception to
 * "no file-scope mutable state": the sink, stderr, is process-wide too, and
 * the warnings come from code that has no struct vm at hand.  main() calls
 * it before any thread exists. */
void log_set_quiet(bool quiet);
bool log_quiet(void);

/* Printed only when VMRUN_DEBUG is set in the environment. */
__attribute__((format(printf, 1, 2))) void log_debug(const char *fmt, ...);

#endif

/* Diagnostics on stderr, each line prefixed "vmrun: ". */
#ifndef VMRUN_LOG_H
#define VMRUN_LOG_H

__attribute__((format(printf, 1, 2))) void log_error(const char *fmt, ...);
__attribute__((format(printf, 1, 2))) void log_warn(const char *fmt, ...);
/* Printed only when VMRUN_DEBUG is set in the environment. */
__attribute__((format(printf, 1, 2))) void log_debug(const char *fmt, ...);

#endif

/* --exit-json: the verdict of one run as a JSON object, for CI scripts
 * (src/core/exit_report.c).  Documented in README.md, "Exit status". */
#ifndef VMRUN_EXIT_REPORT_H
#define VMRUN_EXIT_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct exit_report {
	int status;          /* the process exit status (vmrun/exit_status.h) */
	const char *kind;    /* vmrun_exit_kind(), or "quit" */
	bool has_debug_exit; /* the guest wrote debug_exit_value to port 0xf4 */
	uint32_t debug_exit_value;
	const char *reason;  /* the one-line reason; "" when none */
	/* Milliseconds from process start; negative: did not happen (null). */
	double ms_to_first_instruction;
	double ms_to_first_output;
	double ms_total;
	const char *version; /* vmrun's version */
};

/* Milliseconds from @from to @to (CLOCK_MONOTONIC readings). */
double exit_report_ms(const struct timespec *from, const struct timespec *to);

/* Write @rep to @path as one JSON object, atomically: a temporary file in the
 * same directory, fsync'd, then renamed over @path (so a reader sees the
 * whole object or no file), and the directory fsync'd.  Returns 0 or -errno
 * with one line in @err; on failure no temporary file is left behind. */
int exit_report_write(const char *path, const struct exit_report *rep, char *err, size_t errlen)
	__attribute__((warn_unused_result));

#endif

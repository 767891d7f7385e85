/* Clocks for the benchmark programs: wall time and this process's CPU time,
 * both in seconds, for differences only. */
#ifndef VMRUN_BENCH_TIME_H
#define VMRUN_BENCH_TIME_H

#include <sys/resource.h>
#include <time.h>

/* Seconds on CLOCK_MONOTONIC. */
static inline double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* User plus system CPU seconds this process has used (every thread). */
static inline double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

#endif

/* A test-only LD_PRELOAD module: open() or openat() of a path that ends in
 * ".stall" writes "open_stall: stalled\n" to stderr and then waits in
 * pause() for good, standing in for a set-up step that blocks (a FIFO, a
 * hung network filesystem).  Only a signal's default action ends the
 * process then, and only where the signal is not blocked: that is what
 * guest_tests.py's test_sigterm_during_setup checks. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

static void stall_if_asked(const char *path)
{
	static const char msg[] = "open_stall: stalled\n";
	size_t n = path ? strlen(path) : 0;

	if (n < 6 || strcmp(path + n - 6, ".stall"))
		return;
	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0)
		_exit(99);
	for (;;)
		pause();
}

/* The mode argument of open() or openat(): there only when @flags create a
 * file, after @flags, the last named parameter of the function it is used in. */
#define CREATE_MODE(flags, mode) \
	do { \
		if ((flags) & (O_CREAT | O_TMPFILE)) { \
			va_list ap; \
			\
			va_start(ap, flags); \
			(mode) = va_arg(ap, mode_t); \
			va_end(ap); \
		} \
	} while (0)

int open(const char *path, int flags, ...)
{
	int (*real)(const char *, int, ...) = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open");
	mode_t mode = 0;

	CREATE_MODE(flags, mode);
	stall_if_asked(path);
	return real(path, flags, mode);
}

int openat(int dfd, const char *path, int flags, ...)
{
	int (*real)(int, const char *, int, ...) =
		(int (*)(int, const char *, int, ...))dlsym(RTLD_NEXT, "openat");
	mode_t mode = 0;

	CREATE_MODE(flags, mode);
	stall_if_asked(path);
	return real(dfd, path, flags, mode);
}

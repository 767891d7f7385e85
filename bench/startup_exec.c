/* startup_exec: run one program, and report its wall time and peak RSS.
 *
 * Usage: startup_exec REPORT_FD TIMEOUT_S PROG [ARG...]
 *
 * Forks, execs PROG with the inherited stdin/stdout/stderr, waits for it and
 * writes "key value" lines to file descriptor REPORT_FD:
 *
 *   wall_ns     CLOCK_MONOTONIC from just before fork() to wait4()'s return
 *   maxrss_kib  the child's ru_maxrss from wait4()
 *   utime_us, stime_us, minflt   the rest of its rusage, for diagnosis
 *   exit        its exit status, or -1 when a signal ended it
 *   signal      the signal that ended it, or 0
 *   timed_out   1 when TIMEOUT_S (> 0) ran out and it was killed
 *
 * Exit status: PROG's, 128 + signal when a signal ended it, 125 on an error
 * of startup_exec itself, 127 when PROG cannot be executed.
 *
 * Why this exists rather than measuring from Python: Linux charges the old
 * address space's peak RSS to a process when it calls execve(), so a child
 * that Python forks or vforks reports at least Python's own peak RSS
 * (~14 MB) in ru_maxrss, far above the ~1.5 MB being measured.  This
 * process is small, and its child's ru_maxrss is the program's own.  It uses
 * fork(), not vfork() or posix_spawn(): a forked child starts with only the
 * few anonymous pages it copied, whereas a vfork child would be charged this
 * process's whole RSS. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXEC_EXIT_ERROR 125
#define EXEC_EXIT_NOEXEC 127

static volatile pid_t child_pid;
static volatile sig_atomic_t timed_out;

static void on_alarm(int sig)
{
	(void)sig;
	timed_out = 1;
	if (child_pid > 0)
		kill(child_pid, SIGKILL);
}

static long long ns_between(const struct timespec *a, const struct timespec *b)
{
	return (long long)(b->tv_sec - a->tv_sec) * 1000000000LL + (b->tv_nsec - a->tv_nsec);
}

static long long tv_us(const struct timeval *tv)
{
	return (long long)tv->tv_sec * 1000000LL + tv->tv_usec;
}

int main(int argc, char *argv[])
{
	struct sigaction sa;
	struct timespec t0, t1;
	struct rusage ru;
	char *end;
	long report_fd, timeout_s;
	int status, code, sig;
	pid_t pid, r;

	if (argc < 4) {
		fprintf(stderr, "usage: startup_exec REPORT_FD TIMEOUT_S PROG [ARG...]\n");
		return EXEC_EXIT_ERROR;
	}
	report_fd = strtol(argv[1], &end, 10);
	if (*end || report_fd < 0 || fcntl((int)report_fd, F_GETFD) < 0) {
		fprintf(stderr, "startup_exec: REPORT_FD %s is not an open descriptor\n", argv[1]);
		return EXEC_EXIT_ERROR;
	}
	timeout_s = strtol(argv[2], &end, 10);
	if (*end || timeout_s < 0) {
		fprintf(stderr, "startup_exec: bad TIMEOUT_S %s\n", argv[2]);
		return EXEC_EXIT_ERROR;
	}
	/* The measured program must not hold the report pipe open. */
	fcntl((int)report_fd, F_SETFD, FD_CLOEXEC);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL); /* no SA_RESTART: wait4() sees EINTR */

	clock_gettime(CLOCK_MONOTONIC, &t0);
	pid = fork();
	if (pid < 0) {
		perror("startup_exec: fork");
		return EXEC_EXIT_ERROR;
	}
	if (pid == 0) {
		execvp(argv[3], argv + 3);
		fprintf(stderr, "startup_exec: %s: %s\n", argv[3], strerror(errno));
		_exit(EXEC_EXIT_NOEXEC);
	}
	child_pid = pid;
	if (timeout_s > 0)
		alarm((unsigned)timeout_s);
	do
		r = wait4(pid, &status, 0, &ru);
	while (r < 0 && errno == EINTR);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	alarm(0);
	if (r < 0) {
		perror("startup_exec: wait4");
		return EXEC_EXIT_ERROR;
	}

	code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
	dprintf((int)report_fd,
		"wall_ns %lld\nmaxrss_kib %ld\nutime_us %lld\nstime_us %lld\nminflt %ld\n"
		"exit %d\nsignal %d\ntimed_out %d\n",
		ns_between(&t0, &t1), ru.ru_maxrss, tv_us(&ru.ru_utime), tv_us(&ru.ru_stime),
		ru.ru_minflt, code, sig, (int)timed_out);
	return sig ? 128 + sig : code;
}

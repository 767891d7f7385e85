/* Unit tests for src/core/sandbox.c: option parsing, --user resolution, and
 * the compiled filters themselves, each loaded in a forked child (the
 * confinement is for good: the test process must stay free).  No /dev/kvm:
 * an ioctl on fd -1 shows whether the filter let the request through
 * (EBADF) or refused it (SIGSYS). */
#include <errno.h>
#include <linux/kvm.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>

#include "vmrun/sandbox.h"

static void test_parse_mode(void **state)
{
	enum sandbox_seccomp m;

	(void)state;
	assert_int_equal(sandbox_parse_mode("on", &m), 0);
	assert_int_equal(m, SANDBOX_SECCOMP_ON);
	assert_int_equal(sandbox_parse_mode("log", &m), 0);
	assert_int_equal(m, SANDBOX_SECCOMP_LOG);
	assert_int_equal(sandbox_parse_mode("off", &m), 0);
	assert_int_equal(m, SANDBOX_SECCOMP_OFF);
	assert_int_equal(sandbox_parse_mode("On", &m), -EINVAL);
	assert_int_equal(sandbox_parse_mode("", &m), -EINVAL);
	assert_int_equal(sandbox_parse_mode(NULL, &m), -EINVAL);
}

static void test_resolve_user(void **state)
{
	struct passwd *nobody = getpwnam("nobody");
	char err[256];
	uid_t u;
	gid_t g;

	(void)state;
	assert_int_equal(sandbox_resolve_user("root", &u, &g, err, sizeof(err)), 0);
	assert_int_equal(u, 0);
	assert_int_equal(g, 0);
	assert_int_equal(sandbox_resolve_user("0:0", &u, &g, err, sizeof(err)), 0);
	assert_int_equal(u, 0);
	/* a number with no passwd entry: its own number as the group */
	assert_null(getpwuid(54321));
	assert_int_equal(sandbox_resolve_user("54321", &u, &g, err, sizeof(err)), 0);
	assert_int_equal(u, 54321);
	assert_int_equal(g, 54321);
	assert_int_equal(sandbox_resolve_user("54321:7", &u, &g, err, sizeof(err)), 0);
	assert_int_equal(g, 7);
	if (nobody) {
		assert_int_equal(sandbox_resolve_user("nobody", &u, &g, err, sizeof(err)), 0);
		assert_int_equal(u, nobody->pw_uid);
		assert_int_equal(g, nobody->pw_gid);
		assert_int_equal(sandbox_resolve_user("nobody:root", &u, &g, err, sizeof(err)), 0);
		assert_int_equal(g, 0);
	}
	assert_int_equal(sandbox_resolve_user("no-such-user-vmrun", &u, &g, err, sizeof(err)),
			 -ENOENT);
	assert_non_null(strstr(err, "no user 'no-such-user-vmrun'"));
	assert_int_equal(sandbox_resolve_user("root:no-such-group-vmrun", &u, &g, err, sizeof(err)),
			 -ENOENT);
	assert_int_equal(sandbox_resolve_user("root:", &u, &g, err, sizeof(err)), -EINVAL);
	assert_int_equal(sandbox_resolve_user(":0", &u, &g, err, sizeof(err)), -EINVAL);
	assert_int_equal(sandbox_resolve_user("", &u, &g, err, sizeof(err)), -EINVAL);
	assert_int_equal(sandbox_resolve_user("-1", &u, &g, err, sizeof(err)), -ENOENT);
	assert_int_equal(sandbox_resolve_user("4294967295", &u, &g, err, sizeof(err)), -ENOENT);
}

static void test_prepare(void **state)
{
	struct sandbox sb;
	char err[256];

	(void)state;
	assert_int_equal(sandbox_prepare(&sb, SANDBOX_SECCOMP_ON, NULL, err, sizeof(err)), 0);
	for (int k = 0; k < SANDBOX_N_THREADS; k++)
		assert_non_null(sb.progs[k]);
	assert_false(sb.confined);
	/* not confined: entering is a no-op, not a filter load */
	assert_int_equal(sandbox_enter(&sb, SANDBOX_VCPU), 0);
	sandbox_exit(&sb);
	assert_int_equal(sandbox_prepare(&sb, SANDBOX_SECCOMP_OFF, NULL, err, sizeof(err)), 0);
	for (int k = 0; k < SANDBOX_N_THREADS; k++)
		assert_null(sb.progs[k]);
	sandbox_exit(&sb);
	assert_int_equal(sandbox_prepare(&sb, SANDBOX_SECCOMP_ON, "no-such-user-vmrun", err,
					 sizeof(err)), -ENOENT);
	sandbox_exit(&sb);
	assert_string_equal(sandbox_thread_name(SANDBOX_VCPU), "vcpu");
	assert_null(sandbox_thread_name(SANDBOX_N_THREADS));
}

/* What a child does once confined as @kind; exits 0 if it survives. */
enum probe {
	PROBE_KVM_RUN,     /* allowed on vCPUs: EBADF */
	PROBE_CREATE_VM,   /* KVM_CREATE_VM: set-up only, refused everywhere */
	PROBE_PACKET,      /* socket(AF_PACKET) */
	PROBE_UNIX_SOCKET, /* socket(AF_UNIX): the main thread's */
	PROBE_OPEN,        /* openat for writing */
	PROBE_EXEC_MAP,    /* mmap with PROT_EXEC */
	PROBE_FORK,        /* clone without CLONE_THREAD */
	PROBE_SIGSYS,      /* rt_sigaction(SIGSYS): disarming the reporter */
	PROBE_EXECVE,
};

/* Fork a child that prepares @mode, confines, enters @kind's filter as a
 * thread named @name, and makes @probe's call.  Returns its wait status;
 * its stderr goes to @errbuf. */
static int run_probe(enum sandbox_seccomp mode, enum sandbox_thread kind, const char *name,
		     enum probe probe, char *errbuf, size_t errlen)
{
	int pfd[2], status;
	ssize_t n, got = 0;
	pid_t pid;

	assert_int_equal(pipe(pfd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sandbox sb;
		char err[256];
		long r = 0;

		dup2(pfd[1], STDERR_FILENO);
		close(pfd[0]);
		prctl(PR_SET_NAME, name);
		if (sandbox_prepare(&sb, mode, NULL, err, sizeof(err)) ||
		    sandbox_confine(&sb, err, sizeof(err)) || sandbox_enter(&sb, kind))
			_exit(100);
		switch (probe) {
		case PROBE_KVM_RUN:
			r = ioctl(-1, KVM_RUN, 0);
			_exit(r < 0 && errno == EBADF ? 0 : 101);
		case PROBE_CREATE_VM:
			r = ioctl(-1, KVM_CREATE_VM, 0);
			break;
		case PROBE_PACKET:
			r = syscall(SYS_socket, AF_PACKET, SOCK_RAW, 0);
			break;
		case PROBE_UNIX_SOCKET:
			r = socket(AF_UNIX, SOCK_STREAM, 0);
			_exit(r >= 0 ? 0 : 102);
		case PROBE_OPEN:
			r = open("/dev/null", O_WRONLY);
			break;
		case PROBE_EXEC_MAP:
			r = (long)mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			break;
		case PROBE_FORK:
			r = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
			if (r == 0)
				_exit(0);
			break;
		case PROBE_SIGSYS: {
			struct sigaction sa = { .sa_handler = SIG_IGN };

			r = sigaction(SIGSYS, &sa, NULL);
			break;
		}
		case PROBE_EXECVE:
			r = execl("/bin/true", "true", (char *)NULL);
			break;
		}
		(void)r;
		_exit(0);
	}
	close(pfd[1]);
	while (got + 1 < (ssize_t)errlen && (n = read(pfd[0], errbuf + got, errlen - 1 - (size_t)got)) > 0)
		got += n;
	errbuf[got] = '\0';
	close(pfd[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

static void assert_killed(int status, const char *err, const char *want)
{
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSYS)
		fail_msg("status 0x%x, want killed by SIGSYS; stderr: %s", status, err);
	if (!strstr(err, want))
		fail_msg("stderr lacks '%s': %s", want, err);
}

static void assert_survived(int status, const char *err)
{
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("status 0x%x, want exit 0; stderr: %s", status, err);
}

static void test_vcpu_filter(void **state)
{
	char err[1024];
	int st;

	(void)state;
	st = run_probe(SANDBOX_SECCOMP_ON, SANDBOX_VCPU, "vcpu3", PROBE_KVM_RUN, err, sizeof(err));
	assert_survived(st, err);
	st = run_probe(SANDBOX_SECCOMP_ON, SANDBOX_VCPU, "vcpu3", PROBE_CREATE_VM, err, sizeof(err));
	assert_killed(st, err, "vmrun: error: seccomp: the vcpu thread 'vcpu3' made a forbidden "
			       "system call: ioctl (16), request 0xae01;");
	st = run_probe(SANDBOX_SECCOMP_ON, SANDBOX_VCPU, "vcpu3", PROBE_PACKET, err, sizeof(err));
	assert_killed(st, err, "the vcpu thread 'vcpu3' made a forbidden system call: socket (41), "
			       "arguments 0x11 0x3 0x0");
	st = run_probe(SANDBOX_SECCOMP_ON, SANDBOX_VCPU, "vcpu3", PROBE_UNIX_SOCKET, err, sizeof(err));
	assert_killed(st, err, "socket (41)");
	st = run_probe(SANDBOX_SECCOMP_ON, SANDBOX_VCPU, "vcpu3", PROBE_OPEN, err, sizeof(err));
	assert_killed(st, err, "openat (257)");
	st = run_probe(SANDBOX_SECCOMP_ON, SANDBOX_VCPU, "vcpu3", PROBE_EXECVE, err, sizeof(err));
	assert_killed(st, err, "execve (59)");
}

static void test_main_filter(void **state)
{
	char err[1024];
	int st;

	(void)state;
	st = run_probe(SANDBOX_SECCOMP_ON, SANDBOX_MAIN, "vmrun", PROBE_UNIX_SOCKET, err, sizeof(err));
	assert_survived(st, err);
	st = run_probe(SANDBOX_SECCOMP_ON, SANDBOX_MAIN, "vmrun", PROBE_OPEN, err, sizeof(err));
	assert_survived(st, err);
	st = run_probe(SANDBOX_SECCOMP_ON, SANDBOX_MAIN, "vmrun", PROBE_KVM_RUN, err, sizeof(err));
	assert_survived(st, err);
	st = run_probe(SANDBOX_SECCOMP_ON, SANDBOX_MAIN, "vmrun", PROBE_PACKET, err, sizeof(err));
	assert_killed(st, err, "the main thread 'vmrun' made a forbidden system call: socket (41)");
	st = run_probe(SANDBOX_SECCOMP_ON, SANDBOX_MAIN, "vmrun", PROBE_CREATE_VM, err, sizeof(err));
	assert_killed(st, err, "ioctl (16), request 0xae01");
	st = run_probe(SANDBOX_SECCOMP_ON, SANDBOX_MAIN, "vmrun", PROBE_EXEC_MAP, err, sizeof(err));
	assert_killed(st, err, "mmap (9)");
	st = run_probe(SANDBOX_SECCOMP_ON, SANDBOX_MAIN, "vmrun", PROBE_FORK, err, sizeof(err));
	assert_killed(st, err, "clone (56)");
	st = run_probe(SANDBOX_SECCOMP_ON, SANDBOX_MAIN, "vmrun", PROBE_EXECVE, err, sizeof(err));
	assert_killed(st, err, "execve (59)");
	/* The reporter cannot be disarmed: killed at once, no line. */
	st = run_probe(SANDBOX_SECCOMP_ON, SANDBOX_MAIN, "vmrun", PROBE_SIGSYS, err, sizeof(err));
	assert_killed(st, err, "");
}

static void test_other_filters(void **state)
{
	char err[1024];
	int st;

	(void)state;
	st = run_probe(SANDBOX_SECCOMP_ON, SANDBOX_THROTTLE, "mig-throttle", PROBE_UNIX_SOCKET, err,
		       sizeof(err));
	assert_killed(st, err, "the throttle thread 'mig-throttle' made a forbidden system call");
	st = run_probe(SANDBOX_SECCOMP_ON, SANDBOX_MIGRATE, "migrate", PROBE_UNIX_SOCKET, err,
		       sizeof(err));
	assert_survived(st, err);
	st = run_probe(SANDBOX_SECCOMP_ON, SANDBOX_MIGRATE, "migrate", PROBE_OPEN, err, sizeof(err));
	assert_killed(st, err, "the migrate thread 'migrate' made a forbidden system call: openat");
	st = run_probe(SANDBOX_SECCOMP_ON, SANDBOX_MIGRATE, "migrate", PROBE_KVM_RUN, err, sizeof(err));
	assert_killed(st, err, "request 0xae80");
}

static void test_log_and_off(void **state)
{
	char err[1024];
	int st;

	(void)state;
	/* log: let through (the kernel logs it) */
	st = run_probe(SANDBOX_SECCOMP_LOG, SANDBOX_VCPU, "vcpu0", PROBE_PACKET, err, sizeof(err));
	assert_survived(st, err);
	st = run_probe(SANDBOX_SECCOMP_LOG, SANDBOX_VCPU, "vcpu0", PROBE_CREATE_VM, err, sizeof(err));
	assert_survived(st, err);
	st = run_probe(SANDBOX_SECCOMP_OFF, SANDBOX_VCPU, "vcpu0", PROBE_OPEN, err, sizeof(err));
	assert_survived(st, err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_mode),
		cmocka_unit_test(test_resolve_user),
		cmocka_unit_test(test_prepare),
		cmocka_unit_test(test_vcpu_filter),
		cmocka_unit_test(test_main_filter),
		cmocka_unit_test(test_other_filters),
		cmocka_unit_test(test_log_and_off),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

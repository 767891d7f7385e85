/* Confinement after set-up: capabilities (libcap-ng), no_new_privs, --user,
 * and a seccomp allow-list per thread kind: written with libseccomp in
 * sandbox_rules.c and compiled to BPF at build time (sandbox_filters_gen.c),
 * so that a run loads fixed programs.  The contract and the order of the
 * calls are in vmrun/sandbox.h.
 *
 * Why the lists look as they do:
 * - Every thread inherits its creator's filter and the kernel applies the
 *   strictest verdict of all stacked filters, so the main thread's list (the
 *   widest: event loop, devices, control socket, snapshots, migration
 *   control) holds everything the other kinds hold.
 * - ioctl is filtered by request number (the low 32 bits: the kernel
 *   compares the command as an unsigned int), per kind.
 * - mmap/mprotect never get PROT_EXEC: vmrun maps no code after set-up.
 * - clone only with CLONE_THREAD (pthread_create); clone3 answers ENOSYS so
 *   that glibc falls back to clone, whose flags a filter can read.  No fork,
 *   no execve, no socket other than AF_UNIX/AF_INET/AF_INET6.
 * - A refused call raises SIGSYS (SCMP_ACT_TRAP); the handler writes one line
 *   naming the call and the thread with async-signal-safe calls only, then
 *   calls rt_sigaction(SIGSYS), which every filter answers with
 *   SCMP_ACT_KILL_PROCESS: the process dies of SIGSYS, and code that took
 *   over a thread cannot disarm the reporter (rt_sigaction on SIGSYS is
 *   never allowed). */
#include "vmrun/sandbox.h"

#include <cap-ng.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pwd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "vmrun/log.h"
#include "sandbox_names.h" /* generated: sandbox_syscall_names[] */
#include "sandbox_filters.h" /* generated: sandbox_filters[kind][mode] */

static const char *const thread_names[SANDBOX_N_THREADS] = {
	[SANDBOX_MAIN] = "main",
	[SANDBOX_VCPU] = "vcpu",
	[SANDBOX_MIGRATE] = "migrate",
	[SANDBOX_THROTTLE] = "throttle",
};

const char *sandbox_thread_name(enum sandbox_thread kind)
{
	return (unsigned)kind < SANDBOX_N_THREADS ? thread_names[kind] : NULL;
}

int sandbox_parse_mode(const char *mode, enum sandbox_seccomp *out)
{
	if (!mode)
		return -EINVAL;
	if (!strcmp(mode, "on"))
		*out = SANDBOX_SECCOMP_ON;
	else if (!strcmp(mode, "log"))
		*out = SANDBOX_SECCOMP_LOG;
	else if (!strcmp(mode, "off"))
		*out = SANDBOX_SECCOMP_OFF;
	else
		return -EINVAL;
	return 0;
}

/* ---- --user ---- */

static int parse_id(const char *s, unsigned long *out)
{
	char *end;

	if (!*s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	*out = strtoul(s, &end, 10);
	if (errno || *end || *out >= (unsigned long)UINT32_MAX)
		return -EINVAL;
	return 0;
}

int sandbox_resolve_user(const char *spec, uid_t *uid, gid_t *gid, char *err, size_t errlen)
{
	char user[256], *colon;
	const char *group = NULL;
	struct passwd *pw;
	unsigned long n;

	if (!spec || !*spec || strlen(spec) >= sizeof(user))
		return errmsg(-EINVAL, err, errlen, "--user: '%s' is not USER[:GROUP]", spec ? spec : "");
	snprintf(user, sizeof(user), "%s", spec);
	colon = strchr(user, ':');
	if (colon) {
		*colon = '\0';
		group = colon + 1;
		if (!*group || !*user)
			return errmsg(-EINVAL, err, errlen, "--user: '%s' is not USER[:GROUP]", spec);
	}
	pw = getpwnam(user);
	if (pw) {
		*uid = pw->pw_uid;
		*gid = pw->pw_gid;
	} else if (!parse_id(user, &n)) {
		*uid = (uid_t)n;
		pw = getpwuid(*uid);
		*gid = pw ? pw->pw_gid : (gid_t)n;
	} else {
		return errmsg(-ENOENT, err, errlen, "--user: no user '%s'", user);
	}
	if (group) {
		struct group *gr = getgrnam(group);

		if (gr)
			*gid = gr->gr_gid;
		else if (!parse_id(group, &n))
			*gid = (gid_t)n;
		else
			return errmsg(-ENOENT, err, errlen, "--user: no group '%s'", group);
	}
	return 0;
}

/* ---- prepare, confine, enter ---- */

int sandbox_prepare(struct sandbox *sb, enum sandbox_seccomp mode, const char *user, char *err,
		    size_t errlen)
{
	const char *test = getenv(SANDBOX_TEST_ENV);
	int r;

	memset(sb, 0, sizeof(*sb));
	sb->mode = mode;
	sb->test_violation = -1;
	if (test)
		for (int k = 0; k < SANDBOX_N_THREADS; k++)
			if (!strcmp(test, thread_names[k]))
				sb->test_violation = k;
	if (user) {
		r = sandbox_resolve_user(user, &sb->uid, &sb->gid, err, errlen);
		if (r)
			return r;
		sb->have_user = true;
	}
	if (mode == SANDBOX_SECCOMP_OFF)
		return 0;
	for (int k = 0; k < SANDBOX_N_THREADS; k++)
		sb->progs[k] = &sandbox_filters[k][mode == SANDBOX_SECCOMP_LOG];
	return 0;
}

/* Append @s to @buf (size @cap) at *@n, async-signal-safe. */
static void put_str(char *buf, size_t cap, size_t *n, const char *s)
{
	while (*s && *n + 1 < cap)
		buf[(*n)++] = *s++;
}

static void put_num(char *buf, size_t cap, size_t *n, unsigned long v, unsigned base)
{
	char tmp[24];
	int i = 0;

	do {
		tmp[i++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v && i < (int)sizeof(tmp));
	if (base == 16)
		put_str(buf, cap, n, "0x");
	while (i > 0 && *n + 1 < cap)
		buf[(*n)++] = tmp[--i];
}

/* SIGSYS from SCMP_ACT_TRAP: name the refused call and the thread on
 * stderr, then end the process (see the top of this file).  Only
 * async-signal-safe calls; the thread's kind comes from its name (vCPU
 * threads are "vcpuN", the migration's "migrate" and "mig-throttle"). */
static void sandbox_sigsys(int sig, siginfo_t *si, void *uctx)
{
	const ucontext_t *uc = uctx;
	char line[320], name[17] = "";
	const char *kind = "main", *call = NULL;
	size_t n = 0;
	int nr = si->si_syscall;

	(void)sig;
	prctl(PR_GET_NAME, name);
	if (!strncmp(name, "vcpu", 4))
		kind = "vcpu";
	else if (!strcmp(name, "migrate"))
		kind = "migrate";
	else if (!strcmp(name, "mig-throttle"))
		kind = "throttle";
	if (nr >= 0 && nr < SANDBOX_NAMES_MAX)
		call = sandbox_syscall_names[nr];
	put_str(line, sizeof(line), &n, "vmrun: error: seccomp: the ");
	put_str(line, sizeof(line), &n, kind);
	put_str(line, sizeof(line), &n, " thread '");
	put_str(line, sizeof(line), &n, name);
	put_str(line, sizeof(line), &n, "' made a forbidden system call: ");
	put_str(line, sizeof(line), &n, call ? call : "?");
	put_str(line, sizeof(line), &n, " (");
	put_num(line, sizeof(line), &n, (unsigned long)nr, 10);
	put_str(line, sizeof(line), &n, ")");
	if (nr == SYS_ioctl) {
		put_str(line, sizeof(line), &n, ", request ");
		put_num(line, sizeof(line), &n,
			(unsigned long)uc->uc_mcontext.gregs[REG_RSI] & 0xffffffffUL, 16);
	} else if (nr == SYS_socket || nr == SYS_prctl || nr == SYS_clone || nr == SYS_mmap ||
		   nr == SYS_mprotect) {
		put_str(line, sizeof(line), &n, ", arguments ");
		put_num(line, sizeof(line), &n, (unsigned long)uc->uc_mcontext.gregs[REG_RDI], 16);
		put_str(line, sizeof(line), &n, " ");
		put_num(line, sizeof(line), &n, (unsigned long)uc->uc_mcontext.gregs[REG_RSI], 16);
		put_str(line, sizeof(line), &n, " ");
		put_num(line, sizeof(line), &n, (unsigned long)uc->uc_mcontext.gregs[REG_RDX], 16);
	}
	put_str(line, sizeof(line), &n, "; vmrun ends here (--seccomp=log to develop)\n");
	(void)!write(STDERR_FILENO, line, n);
	/* No core file full of guest memory. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	/* Killed by the filter: the process dies of SIGSYS. */
	syscall(SYS_rt_sigaction, SIGSYS, NULL, NULL, (size_t)8);
	syscall(SYS_exit_group, 159);
}

/* Empty every capability set; the bounding set needs CAP_SETPCAP, which an
 * unprivileged caller lacks (it has nothing to drop that matters then, and
 * no_new_privs keeps it from gaining any). */
static int drop_caps(struct sandbox *sb, char *err, size_t errlen)
{
	int r;

	capng_clear(CAPNG_SELECT_BOTH);
	capng_get_caps_process();
	if (capng_have_capability(CAPNG_EFFECTIVE, CAP_SETPCAP)) {
		capng_clear(CAPNG_SELECT_BOUNDS);
		r = capng_apply(CAPNG_SELECT_BOUNDS);
		if (r)
			return errmsg(-EPERM, err, errlen, "cannot empty the capability bounding set (%d)", r);
	}
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return errmsg(-errno, err, errlen, "cannot clear the ambient capabilities: %s",
			      strerror(errno));
	if (sb->have_user) {
		/* Groups first: setgid and setgroups need the privilege the
		 * uid switch takes away. */
		if (setgroups(0, NULL) < 0)
			return errmsg(-errno, err, errlen, "--user: setgroups: %s", strerror(errno));
		if (setresgid(sb->gid, sb->gid, sb->gid) < 0)
			return errmsg(-errno, err, errlen, "--user: cannot switch to group %u: %s",
				      (unsigned)sb->gid, strerror(errno));
		if (setresuid(sb->uid, sb->uid, sb->uid) < 0)
			return errmsg(-errno, err, errlen, "--user: cannot switch to user %u: %s",
				      (unsigned)sb->uid, strerror(errno));
	}
	capng_clear(CAPNG_SELECT_CAPS);
	r = capng_apply(CAPNG_SELECT_CAPS);
	if (r)
		return errmsg(-EPERM, err, errlen, "cannot drop capabilities (%d)", r);
	return 0;
}

int sandbox_confine(struct sandbox *sb, char *err, size_t errlen)
{
	struct sigaction sa = { .sa_sigaction = sandbox_sigsys, .sa_flags = SA_SIGINFO };
	int r;

	/* glibc reads /etc/localtime on its first time conversion, even for
	 * gmtime_r (the RTC's); do it now, while files may still be opened
	 * by any thread. */
	tzset();
	if ((r = drop_caps(sb, err, errlen)))
		return r;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return errmsg(-errno, err, errlen, "no_new_privs: %s", strerror(errno));
	sigemptyset(&sa.sa_mask);
	if (sb->mode == SANDBOX_SECCOMP_ON && sigaction(SIGSYS, &sa, NULL) < 0)
		return errmsg(-errno, err, errlen, "SIGSYS handler: %s", strerror(errno));
	sb->confined = true;
	return 0;
}

int sandbox_enter(struct sandbox *sb, enum sandbox_thread kind)
{
	const struct sock_fprog *p;

	if (!sb->confined || (unsigned)kind >= SANDBOX_N_THREADS)
		return 0;
	p = sb->progs[kind];
	if (sb->mode != SANDBOX_SECCOMP_OFF) {
		if (!p)
			return -EINVAL;
		if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, p) < 0)
			return -errno;
	}
	if (sb->test_violation == (int)kind) {
		/* Test-only (SANDBOX_TEST_ENV): a call no thread may make. */
		long fd = syscall(SYS_socket, AF_PACKET, SOCK_RAW, 0);

		if (fd >= 0)
			close((int)fd);
	}
	return 0;
}

void sandbox_exit(struct sandbox *sb)
{
	for (int k = 0; k < SANDBOX_N_THREADS; k++)
		sb->progs[k] = NULL;
}

/* Confinement after set-up: capabilities (libcap-ng), no_new_privs, --user,
 * and a seccomp allow-list per thread kind (libseccomp).  The contract and
 * the order of the calls are in vmrun/sandbox.h.
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
#include <linux/kvm.h>
#include <linux/if_tun.h>
#include <linux/fs.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <pwd.h>
#include <seccomp.h>
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
#include <termios.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "vmrun/log.h"
#include "sandbox_names.h" /* generated: sandbox_syscall_names[] */

struct sandbox_prog {
	struct sock_fprog fprog;
	struct sock_filter insns[];
};

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

/* ---- the allow-lists ---- */

/* Calls every thread makes: memory, locks, time, I/O on fds it already
 * holds, thread exit, signals (not SIGSYS: see below).  sigaltstack: the
 * sanitizer runtimes (ASan) set and clear an alternate signal stack as a
 * thread starts and ends. */
static const int base_calls[] = {
	SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(readv), SCMP_SYS(writev),
	SCMP_SYS(pread64), SCMP_SYS(pwrite64), SCMP_SYS(preadv), SCMP_SYS(pwritev),
	SCMP_SYS(preadv2), SCMP_SYS(pwritev2), SCMP_SYS(close), SCMP_SYS(lseek),
	SCMP_SYS(fstat), SCMP_SYS(newfstatat), SCMP_SYS(statx),
	SCMP_SYS(futex), SCMP_SYS(exit), SCMP_SYS(exit_group), SCMP_SYS(rt_sigreturn),
	SCMP_SYS(rt_sigprocmask), SCMP_SYS(restart_syscall), SCMP_SYS(tgkill),
	SCMP_SYS(getpid), SCMP_SYS(gettid), SCMP_SYS(getuid), SCMP_SYS(geteuid),
	SCMP_SYS(getgid), SCMP_SYS(getegid), SCMP_SYS(clock_gettime), SCMP_SYS(clock_getres),
	SCMP_SYS(clock_nanosleep), SCMP_SYS(nanosleep), SCMP_SYS(gettimeofday),
	SCMP_SYS(munmap), SCMP_SYS(madvise), SCMP_SYS(mremap), SCMP_SYS(brk),
	SCMP_SYS(sched_yield), SCMP_SYS(getrandom), SCMP_SYS(sigaltstack),
};

/* What a vCPU's exit handlers need beyond KVM_RUN: a device register that
 * starts a device opens its notifiers and irqfds (eventfd2) and adds them to
 * the event loop (epoll_ctl).  Queue notifications are eventfd writes; disk
 * and network I/O happen on the main thread, never here. */
static const int vcpu_calls[] = {
	SCMP_SYS(epoll_ctl), SCMP_SYS(eventfd2),
};

/* The migration sender: its socket, the dirty log, the throttler thread,
 * the address lookup (which reads /etc/hosts and friends). */
static const int migrate_calls[] = {
	SCMP_SYS(connect), SCMP_SYS(poll), SCMP_SYS(ppoll),
	SCMP_SYS(sendto), SCMP_SYS(sendmsg), SCMP_SYS(recvfrom), SCMP_SYS(recvmsg),
	SCMP_SYS(setsockopt), SCMP_SYS(getsockopt), SCMP_SYS(getsockname),
	SCMP_SYS(getpeername), SCMP_SYS(shutdown), SCMP_SYS(fcntl), SCMP_SYS(uname),
	SCMP_SYS(set_robust_list), SCMP_SYS(rseq), SCMP_SYS(sched_getaffinity),
	/* guest pages never faulted in are sent as zero without reading them */
	SCMP_SYS(mincore),
};

/* The main thread: everything above, plus files (overlays of live disk
 * snapshots, snapshot directories, --exit-json), the event loop, the
 * control socket's clients, Linux AIO, and starting threads. */
static const int main_calls[] = {
	SCMP_SYS(openat), SCMP_SYS(open), SCMP_SYS(mkdir), SCMP_SYS(mkdirat),
	SCMP_SYS(rename), SCMP_SYS(renameat), SCMP_SYS(renameat2), SCMP_SYS(unlink),
	SCMP_SYS(unlinkat), SCMP_SYS(rmdir), SCMP_SYS(link), SCMP_SYS(linkat),
	SCMP_SYS(readlink), SCMP_SYS(readlinkat), SCMP_SYS(getcwd), SCMP_SYS(access),
	SCMP_SYS(faccessat), SCMP_SYS(faccessat2), SCMP_SYS(stat), SCMP_SYS(lstat),
	SCMP_SYS(fsync), SCMP_SYS(fdatasync), SCMP_SYS(ftruncate), SCMP_SYS(fallocate),
	SCMP_SYS(flock), SCMP_SYS(fcntl), SCMP_SYS(getdents64), SCMP_SYS(fchmod),
	SCMP_SYS(umask), SCMP_SYS(fadvise64), SCMP_SYS(sync_file_range), SCMP_SYS(utimensat),
	SCMP_SYS(epoll_wait), SCMP_SYS(epoll_pwait), SCMP_SYS(epoll_pwait2), SCMP_SYS(epoll_ctl),
	SCMP_SYS(epoll_create1), SCMP_SYS(eventfd2), SCMP_SYS(timerfd_create),
	SCMP_SYS(timerfd_settime), SCMP_SYS(timerfd_gettime), SCMP_SYS(signalfd4),
	SCMP_SYS(pipe2), SCMP_SYS(dup), SCMP_SYS(dup3), SCMP_SYS(accept), SCMP_SYS(accept4),
	SCMP_SYS(select), SCMP_SYS(pselect6), SCMP_SYS(io_setup), SCMP_SYS(io_destroy),
	SCMP_SYS(io_submit), SCMP_SYS(io_getevents), SCMP_SYS(io_pgetevents),
	SCMP_SYS(io_cancel), SCMP_SYS(msync), SCMP_SYS(sysinfo), SCMP_SYS(getrusage),
	/* a snapshot skips the guest pages never faulted in */
	SCMP_SYS(mincore),
	/* a live disk snapshot leaves its frozen base read-only */
	SCMP_SYS(chmod), SCMP_SYS(fchmodat),
};

/* vCPU ioctls (on its own fd): KVM_RUN, the register and state calls of the
 * instruction fallback, the halt watch, the register dump and the saves
 * taken by parked vCPUs. */
static const unsigned long vcpu_ioctls[] = {
	KVM_RUN, KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS, KVM_SET_SREGS, KVM_TRANSLATE,
	KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS, KVM_GET_MSRS, KVM_SET_MSRS, KVM_GET_FPU,
	KVM_SET_FPU, KVM_GET_XSAVE, KVM_GET_XSAVE2, KVM_SET_XSAVE, KVM_GET_XCRS, KVM_SET_XCRS,
	KVM_GET_LAPIC, KVM_SET_LAPIC, KVM_GET_MP_STATE, KVM_SET_MP_STATE, KVM_GET_DEBUGREGS,
	KVM_SET_DEBUGREGS, KVM_GET_TSC_KHZ, KVM_NMI,
	/* on the VM fd, from device models: interrupts, doorbells, MSI routes */
	KVM_IRQ_LINE, KVM_IRQ_LINE_STATUS, KVM_SIGNAL_MSI, KVM_IRQFD, KVM_IOEVENTFD,
	KVM_SET_GSI_ROUTING, KVM_CHECK_EXTENSION,
	/* a NIC's queues attached or detached as the guest's driver chooses */
	TUNSETQUEUE, TUNSETOFFLOAD, TUNSETVNETHDRSZ,
};

/* The migration sender's: the dirty log. */
static const unsigned long migrate_ioctls[] = {
	KVM_GET_DIRTY_LOG, KVM_CLEAR_DIRTY_LOG, KVM_SET_USER_MEMORY_REGION, KVM_CHECK_EXTENSION,
	KVM_ENABLE_CAP,
};

/* The main thread's, beyond the two lists above: VM state (snapshots,
 * migration), the PIT, block devices, the terminal. */
static const unsigned long main_ioctls[] = {
	KVM_GET_CLOCK, KVM_SET_CLOCK, KVM_GET_IRQCHIP, KVM_SET_IRQCHIP, KVM_GET_PIT2,
	KVM_SET_PIT2, KVM_REINJECT_CONTROL, KVM_GET_MSR_INDEX_LIST, KVM_GET_SUPPORTED_CPUID,
	BLKDISCARD, BLKZEROOUT, BLKGETSIZE64, BLKSSZGET, TCGETS, TCSETS, TCSETSW, TCSETSF,
};

#define N(a) (sizeof(a) / sizeof((a)[0]))

static int add_calls(scmp_filter_ctx ctx, const int *calls, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, calls[i], 0);

		/* -EEXIST: listed twice (the main list repeats others) */
		if (r && r != -EEXIST)
			return r;
	}
	return 0;
}

static int add_ioctls(scmp_filter_ctx ctx, const unsigned long *req, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
					 SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffULL,
						 (uint64_t)(uint32_t)req[i]));

		if (r && r != -EEXIST)
			return r;
	}
	return 0;
}

/* Calls with argument checks, shared by every kind: mmap/mprotect without
 * PROT_EXEC, prctl for thread names and the reporter, rt_sigaction on any
 * signal but SIGSYS, which (in on mode) kills: the reporter's last act. */
static int add_common_rules(scmp_filter_ctx ctx, enum sandbox_seccomp mode)
{
	int r;

	if ((r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1,
				  SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0))) ||
	    (r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1,
				  SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0))) ||
	    (r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
				  SCMP_A0(SCMP_CMP_EQ, PR_SET_NAME))) ||
	    (r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
				  SCMP_A0(SCMP_CMP_EQ, PR_GET_NAME))) ||
	    (r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 2,
				  SCMP_A0(SCMP_CMP_EQ, PR_SET_DUMPABLE), SCMP_A1(SCMP_CMP_EQ, 0))) ||
	    (r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(rt_sigaction), 1,
				  SCMP_A0(SCMP_CMP_NE, SIGSYS))))
		return r;
	if (mode == SANDBOX_SECCOMP_ON)
		r = seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS, SCMP_SYS(rt_sigaction), 1,
				     SCMP_A0(SCMP_CMP_EQ, SIGSYS));
	return r;
}

/* Starting threads: clone with CLONE_THREAD only, clone3 -> ENOSYS, and the
 * filter load of the new thread (sandbox_enter()). */
static int add_thread_rules(scmp_filter_ctx ctx)
{
	int r;

	if ((r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
				  SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD))) ||
	    (r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0)) ||
	    (r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(seccomp), 1,
				  SCMP_A0(SCMP_CMP_EQ, SECCOMP_SET_MODE_FILTER))))
		return r;
	return add_calls(ctx, (const int[]){ SCMP_SYS(set_robust_list), SCMP_SYS(rseq) }, 2);
}

/* Sockets: the families vmrun speaks after set-up (control clients are
 * accepted, not created; AF_UNIX is getaddrinfo's nscd probe, AF_INET[6]
 * the migration's connection). */
static int add_socket_rules(scmp_filter_ctx ctx)
{
	static const int families[] = { AF_UNIX, AF_INET, AF_INET6 };

	for (size_t i = 0; i < N(families); i++) {
		int r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
					 SCMP_A0(SCMP_CMP_EQ, (uint64_t)families[i]));

		if (r)
			return r;
	}
	return 0;
}

static int build_rules(scmp_filter_ctx ctx, enum sandbox_thread kind, enum sandbox_seccomp mode)
{
	int r;

	if ((r = add_calls(ctx, base_calls, N(base_calls))) || (r = add_common_rules(ctx, mode)))
		return r;
	switch (kind) {
	case SANDBOX_THROTTLE:
		return 0;
	case SANDBOX_VCPU:
		return add_ioctls(ctx, vcpu_ioctls, N(vcpu_ioctls)) ?:
		       add_calls(ctx, vcpu_calls, N(vcpu_calls));
	case SANDBOX_MIGRATE:
		return add_ioctls(ctx, migrate_ioctls, N(migrate_ioctls)) ?:
		       add_calls(ctx, migrate_calls, N(migrate_calls)) ?:
		       add_socket_rules(ctx) ?: add_thread_rules(ctx) ?:
		       /* getaddrinfo's files: read-only opens only */
		       seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(openat), 1,
					SCMP_A2(SCMP_CMP_MASKED_EQ,
						O_ACCMODE | O_CREAT | O_TRUNC, O_RDONLY));
	case SANDBOX_MAIN:
		return add_ioctls(ctx, vcpu_ioctls, N(vcpu_ioctls)) ?:
		       add_ioctls(ctx, migrate_ioctls, N(migrate_ioctls)) ?:
		       add_ioctls(ctx, main_ioctls, N(main_ioctls)) ?:
		       add_calls(ctx, vcpu_calls, N(vcpu_calls)) ?:
		       add_calls(ctx, migrate_calls, N(migrate_calls)) ?:
		       add_calls(ctx, main_calls, N(main_calls)) ?: add_socket_rules(ctx) ?:
		       add_thread_rules(ctx);
	default:
		return -EINVAL;
	}
}

/* Compile @kind's filter into plain BPF, malloc'd into *@out. */
static int compile_prog(enum sandbox_thread kind, enum sandbox_seccomp mode,
			struct sandbox_prog **out)
{
	uint32_t dflt = mode == SANDBOX_SECCOMP_LOG ? SCMP_ACT_LOG : SCMP_ACT_TRAP;
	struct sandbox_prog *p = NULL;
	scmp_filter_ctx ctx;
	off_t size;
	int r, fd = -1;

	ctx = seccomp_init(dflt);
	if (!ctx)
		return -ENOMEM;
	r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	if (!r)
		r = build_rules(ctx, kind, mode);
	if (r)
		goto out;
	fd = memfd_create("vmrun-seccomp", MFD_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	if ((r = seccomp_export_bpf(ctx, fd)))
		goto out;
	size = lseek(fd, 0, SEEK_END);
	if (size <= 0 || size % sizeof(struct sock_filter) || size > (off_t)(BPF_MAXINSNS * 8)) {
		r = -E2BIG;
		goto out;
	}
	p = malloc(sizeof(*p) + (size_t)size);
	if (!p) {
		r = -ENOMEM;
		goto out;
	}
	if (pread(fd, p->insns, (size_t)size, 0) != size) {
		r = -EIO;
		free(p);
		goto out;
	}
	p->fprog.len = (unsigned short)((size_t)size / sizeof(struct sock_filter));
	p->fprog.filter = p->insns;
	*out = p;
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	seccomp_release(ctx);
	return r;
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
	for (int k = 0; k < SANDBOX_N_THREADS; k++) {
		r = compile_prog((enum sandbox_thread)k, mode, &sb->progs[k]);
		if (r)
			return errmsg(r, err, errlen, "seccomp: cannot build the %s thread's filter: %s",
				      thread_names[k], strerror(-r));
	}
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
	const struct sandbox_prog *p;

	if (!sb->confined || (unsigned)kind >= SANDBOX_N_THREADS)
		return 0;
	p = sb->progs[kind];
	if (sb->mode != SANDBOX_SECCOMP_OFF) {
		if (!p)
			return -EINVAL;
		if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &p->fprog) < 0)
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
	for (int k = 0; k < SANDBOX_N_THREADS; k++) {
		free(sb->progs[k]);
		sb->progs[k] = NULL;
	}
}

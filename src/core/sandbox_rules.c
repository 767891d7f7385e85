/* The seccomp allow-list of each kind of thread, written with libseccomp's
 * rule API.  Only the build-time generator (sandbox_filters_gen.c) links
 * this file: it compiles every list to BPF once, and vmrun loads those
 * programs (sandbox.c) without libseccomp, whose filter compilation cost
 * every run about 300 KiB of resident memory (bench/startup.py).
 *
 * Why the lists look as they do: sandbox.c's header comment. */
#include "sandbox_rules.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <termios.h>

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


scmp_filter_ctx sandbox_rules_filter(enum sandbox_thread kind, enum sandbox_seccomp mode, int *err)
{
	uint32_t dflt = mode == SANDBOX_SECCOMP_LOG ? SCMP_ACT_LOG : SCMP_ACT_TRAP;
	scmp_filter_ctx ctx;
	int r;

	if (mode == SANDBOX_SECCOMP_OFF || (unsigned)kind >= SANDBOX_N_THREADS) {
		*err = -EINVAL;
		return NULL;
	}
	ctx = seccomp_init(dflt);
	if (!ctx) {
		*err = -ENOMEM;
		return NULL;
	}
	r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	if (!r)
		r = build_rules(ctx, kind, mode);
	if (r) {
		seccomp_release(ctx);
		*err = r;
		return NULL;
	}
	return ctx;
}

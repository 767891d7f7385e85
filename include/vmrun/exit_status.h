/* vmrun's process exit statuses: the contract with scripts and CI.
 *
 * Odd statuses belong to the guest: a write of V to the debug-exit port
 * (0xf4, QEMU isa-debug-exit compatible) ends the run with (V << 1) | 1,
 * truncated to 8 bits by the operating system.  Every status vmrun chooses
 * itself is even, so the two never collide.  Documented in README.md.
 */
#ifndef VMRUN_EXIT_STATUS_H
#define VMRUN_EXIT_STATUS_H

enum vmrun_exit_status {
	VMRUN_EXIT_POWEROFF = 0,       /* guest powered off, or quit requested (ctl, Ctrl-A x) */
	VMRUN_EXIT_USAGE = 2,          /* malformed or unknown command-line flag */
	VMRUN_EXIT_SETUP = 4,          /* could not start: KVM missing, bad kernel image, ... */
	VMRUN_EXIT_RESET = 6,          /* guest asked for a reboot (i8042 0xfe, SYSTEM_EVENT reset) */
	VMRUN_EXIT_TRIPLE_FAULT = 8,   /* KVM_EXIT_SHUTDOWN */
	VMRUN_EXIT_HLT = 10,           /* every vCPU halted for good (halt watch), or KVM_EXIT_HLT */
	VMRUN_EXIT_INTERNAL_ERROR = 12,/* KVM_EXIT_INTERNAL_ERROR, e.g. emulation failure */
	VMRUN_EXIT_FAIL_ENTRY = 14,    /* KVM_EXIT_FAIL_ENTRY: hardware refused the vCPU state */
	VMRUN_EXIT_GUEST_CRASH = 16,   /* KVM_SYSTEM_EVENT_CRASH (guest panic notifier) */
	VMRUN_EXIT_HOST_ERROR = 18,    /* vmrun failed while running (ioctl error, unknown exit) */
	VMRUN_EXIT_SIGNAL = 20,        /* vmrun got SIGINT, SIGTERM or SIGHUP */
	VMRUN_EXIT_TIMEOUT = 124,      /* --timeout expired (as timeout(1)) */
};

/* Status for a debug-exit port write of @value, as QEMU's isa-debug-exit. */
static inline int vmrun_exit_status_for_debug_exit(unsigned value)
{
	return (int)(((value << 1) | 1u) & 0xffu);
}

/* The kind of end behind @status, as --exit-json and the control socket's
 * guest-exit event name it.  A quit (control socket, Ctrl-A x) has status 0
 * like a poweroff: struct vm tells them apart and names it "quit". */
static inline const char *vmrun_exit_kind(int status)
{
	if (status & 1)
		return "debug-exit";
	switch (status) {
	case VMRUN_EXIT_POWEROFF: return "poweroff";
	case VMRUN_EXIT_RESET: return "reboot";
	case VMRUN_EXIT_TRIPLE_FAULT: return "triple-fault";
	case VMRUN_EXIT_HLT: return "halt";
	case VMRUN_EXIT_INTERNAL_ERROR: return "internal-error";
	case VMRUN_EXIT_FAIL_ENTRY: return "entry-failure";
	case VMRUN_EXIT_GUEST_CRASH: return "panic";
	case VMRUN_EXIT_SIGNAL: return "signal";
	case VMRUN_EXIT_TIMEOUT: return "timeout";
	default: return "vmrun-failure"; /* 2, 4, 18: vmrun could not start or go on */
	}
}

#endif

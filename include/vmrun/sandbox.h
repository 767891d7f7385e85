/* Confinement after set-up (src/core/sandbox.c): capabilities dropped with
 * libcap-ng, no_new_privs, an optional switch to an unprivileged user, and a
 * seccomp allow-list per thread kind, written with libseccomp
 * (src/core/sandbox_rules.c) and compiled to BPF when vmrun is built.
 *
 * Order, all driven by vm_run():
 *   1. sandbox_prepare(): main thread, before any other thread exists and
 *      before anything is confined: picks every thread kind's built-in BPF
 *      program for the mode, and resolves --user.
 *   2. sandbox_confine(): main thread, still the only thread, after every
 *      privileged open (/dev/kvm, memory, taps, disks, sockets, console) and
 *      before the first vCPU thread starts: user switch, capabilities,
 *      no_new_privs, the SIGSYS reporter.  Threads created afterwards inherit
 *      all of it (capabilities, the bounding set and no_new_privs are
 *      per-thread in Linux, and a new thread copies its creator's).
 *   3. sandbox_enter(kind): each thread, as its run phase starts, loads its
 *      kind's filter.  A thread created later inherits its creator's filter
 *      too; filters stack and the kernel applies the strictest verdict, so a
 *      kind's list must be a subset of its creator's (SANDBOX_MAIN is the
 *      widest).
 */
#ifndef VMRUN_SANDBOX_H
#define VMRUN_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* --seccomp=on|log|off */
enum sandbox_seccomp {
	SANDBOX_SECCOMP_ON,  /* default: a refused call ends vmrun with a log line */
	SANDBOX_SECCOMP_LOG, /* the kernel logs what would be refused; vmrun runs on */
	SANDBOX_SECCOMP_OFF, /* no filters (capabilities are still dropped) */
};

/* Kinds of thread, each with its own allow-list. */
enum sandbox_thread {
	SANDBOX_MAIN,     /* main(): event loop, devices' I/O, control socket, snapshots */
	SANDBOX_VCPU,     /* KVM_RUN and its exit handlers */
	SANDBOX_MIGRATE,  /* the outgoing migration's sender (src/migrate/source.c) */
	SANDBOX_THROTTLE, /* the migration's auto-converge throttler */
	SANDBOX_N_THREADS,
};

/* The test-only hook's environment variable: set to a thread kind's name
 * ("main" or "vcpu"), that thread makes a forbidden call (socket(AF_PACKET))
 * right after its filter is loaded, so that a test can see vmrun die with
 * the log line.  Never set it outside tests. */
#define SANDBOX_TEST_ENV "VMRUN_TEST_SECCOMP_VIOLATION"

struct sock_fprog; /* <linux/filter.h> */

struct sandbox {
	enum sandbox_seccomp mode;
	bool have_user; /* --user given: switch to uid/gid */
	uid_t uid;
	gid_t gid;
	bool confined;  /* sandbox_confine() succeeded */
	int test_violation; /* SANDBOX_TEST_ENV's kind, or -1 */
	/* each kind's BPF program, built into vmrun (sandbox_filters_gen.c);
	 * NULL with --seccomp off */
	const struct sock_fprog *progs[SANDBOX_N_THREADS];
};

/* Parse @mode ("on", "log", "off") into *@out.  Returns 0 or -EINVAL. */
int sandbox_parse_mode(const char *mode, enum sandbox_seccomp *out)
	__attribute__((warn_unused_result));

/* Resolve --user's USER[:GROUP] (names or numbers; GROUP defaults to the
 * user's primary group, or to USER's number when USER is numeric and has no
 * passwd entry).  Reads the passwd and group databases, so it must run
 * before confinement.  Returns 0 or -errno with one line in @err. */
int sandbox_resolve_user(const char *spec, uid_t *uid, gid_t *gid, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Fill @sb (caller storage) for @mode and the optional --user @user (NULL:
 * stay who we are): resolve the user, pick every thread kind's filter
 * (none when @mode is off), read SANDBOX_TEST_ENV.  Main thread, no other
 * thread running, nothing confined yet.  Returns 0 or -errno with one line
 * in @err; sandbox_exit() must still be called. */
int sandbox_prepare(struct sandbox *sb, enum sandbox_seccomp mode, const char *user, char *err,
		    size_t errlen) __attribute__((warn_unused_result));

/* Confine the process: switch to the --user (supplementary groups cleared),
 * empty the capability sets (effective, permitted, inheritable, bounding,
 * ambient), set no_new_privs, and install the SIGSYS reporter that names a
 * refused call on stderr and ends the process.  Main thread, after every
 * privileged open and before any other thread starts.  Returns 0 or -errno
 * with one line in @err (then vmrun must not run the guest). */
int sandbox_confine(struct sandbox *sb, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Load @kind's filter on the calling thread (nothing when seccomp is off or
 * the sandbox was never prepared), then run the test hook if it names
 * @kind.  Returns 0 or -errno; a thread that cannot load its filter must
 * not run (the callers end the run). */
int sandbox_enter(struct sandbox *sb, enum sandbox_thread kind) __attribute__((warn_unused_result));

/* Free the compiled filters (loaded filters stay with their threads). */
void sandbox_exit(struct sandbox *sb);

/* The kind's name ("main", "vcpu", "migrate", "throttle"), NULL if out of
 * range. */
const char *sandbox_thread_name(enum sandbox_thread kind);

#endif

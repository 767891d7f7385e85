/* vCPU threads: the KVM_RUN loop, exit dispatch, and the pause/resume/stop
 * state machine.
 *
 * Kicking a vCPU out of KVM_RUN: the requester sets vm->request under
 * state_lock, then sets kvm_run.immediate_exit and sends VCPU_KICK_SIGNAL.
 * The vCPU clears immediate_exit before it reads vm->request, so whichever
 * order the two threads interleave in, the vCPU either sees the request or
 * enters KVM_RUN with immediate_exit set (returns -EINTR at once) or is
 * interrupted by the signal inside KVM_RUN. */
#include <errno.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <stdarg.h>
#include <time.h>
#include <unistd.h>

#include "vmrun/exit_status.h"
#include "vmrun/insn.h"
#include "vmrun/log.h"
#include "vmrun/vm.h"
#include "vmrun/x86.h"

#define VCPU_KICK_SIGNAL SIGUSR1
#define VCPU_PAUSE_TIMEOUT_S 5

int vcpu_init(struct vm *vm, struct vcpu *vcpu, unsigned id)
{
	int r;

	memset(vcpu, 0, sizeof(*vcpu));
	vcpu->vm = vm;
	vcpu->id = id;
	vcpu->stats_fd = -1;
	vcpu->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)id);
	if (vcpu->fd < 0)
		return -errno;
	vcpu_stats_open(vcpu);
	vcpu->run = mmap(NULL, vm->run_mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu->fd, 0);
	if (vcpu->run == MAP_FAILED) {
		vcpu->run = NULL;
		return -errno;
	}
	x86_cpuid_patch(vm->cpuid, id, vm->n_vcpus);
	r = ioctl(vcpu->fd, KVM_SET_CPUID2, vm->cpuid);
	return r < 0 ? -errno : 0;
}

void vcpu_exit(struct vcpu *vcpu)
{
	vcpu_stats_close(vcpu);
	if (vcpu->run)
		munmap(vcpu->run, vcpu->vm->run_mmap_size);
	if (vcpu->fd >= 0)
		close(vcpu->fd);
	vcpu->run = NULL;
	vcpu->fd = -1;
}

static void vcpu_fail(struct vcpu *v, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* End the run because of this vCPU, with its registers on stderr. */
static void vcpu_fail(struct vcpu *v, int status, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_error("vCPU %u: %s", v->id, msg);
	x86_dump_vcpu(v->fd, v->id, &v->vm->mem);
	vm_request_exit(v->vm, status, msg);
}

static void vcpu_handle_io(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;

	/* data_offset and count come from KVM, not the guest: string I/O
	 * ("rep outsb") hands over count items in the shared page. */
	for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size) {
		if (run->io.direction == KVM_EXIT_IO_OUT)
			bus_write(&v->vm->pio_bus, run->io.port, data, run->io.size);
		else
			bus_read(&v->vm->pio_bus, run->io.port, data, run->io.size);
	}
}

static void vcpu_handle_mmio(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	unsigned len = run->mmio.len;

	if (len == 0 || len > sizeof(run->mmio.data)) {
		memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
		return;
	}
	if (run->mmio.is_write)
		bus_write(&v->vm->mmio_bus, run->mmio.phys_addr, run->mmio.data, len);
	else
		bus_read(&v->vm->mmio_bus, run->mmio.phys_addr, run->mmio.data, len);
}

/* An instruction KVM's emulator gave up on, on a nested host without
 * VT-x/AMD-V: let the fallback finish it (vmrun/insn.h), or end the run with
 * the registers and the instruction bytes.  Returns false when this vCPU must
 * stop. */
static bool vcpu_emulation_fallback(struct vcpu *v)
{
	struct insn_report rep;
	char bytes[3 * INSN_MAX_LEN + 1] = "";
	int r = insn_fallback_handle(v->fd, v->run, &v->vm->mem, v->vm->cpuid, &rep);

	if (!r) {
		log_debug("vCPU %u: rip 0x%llx: %s", v->id, (unsigned long long)rep.rip, rep.what);
		return true;
	}
	for (unsigned i = 0; i < rep.n_bytes; i++)
		snprintf(bytes + 3 * i, sizeof(bytes) - 3 * i, " %02x", rep.bytes[i]);
	vcpu_fail(v, r == -ENOENT ? VMRUN_EXIT_INTERNAL_ERROR : VMRUN_EXIT_HOST_ERROR,
		  "KVM internal error, suberror %u (instruction emulation failed) at rip 0x%llx: %s; instruction bytes%s",
		  KVM_INTERNAL_ERROR_EMULATION, (unsigned long long)rep.rip, rep.what,
		  rep.n_bytes ? bytes : " unavailable");
	return false;
}

static const char *system_event_name(uint32_t type)
{
	switch (type) {
	case KVM_SYSTEM_EVENT_SHUTDOWN: return "shutdown";
	case KVM_SYSTEM_EVENT_RESET: return "reset";
	case KVM_SYSTEM_EVENT_CRASH: return "crash";
	default: return "unknown";
	}
}

/* Handle one KVM_RUN exit.  Returns false when this vCPU must stop. */
static bool vcpu_handle_exit(struct vcpu *v)
{
	struct kvm_run *run = v->run;

	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		vcpu_handle_io(v);
		return true;
	case KVM_EXIT_MMIO:
		vcpu_handle_mmio(v);
		return true;
	case KVM_EXIT_INTR:
		return true;
	case KVM_EXIT_HLT:
		vm_request_exit(v->vm, VMRUN_EXIT_HLT, "hlt");
		return false;
	case KVM_EXIT_SHUTDOWN:
		vcpu_fail(v, VMRUN_EXIT_TRIPLE_FAULT, "triple fault (KVM_EXIT_SHUTDOWN)");
		return false;
	case KVM_EXIT_SYSTEM_EVENT:
		switch (run->system_event.type) {
		case KVM_SYSTEM_EVENT_SHUTDOWN:
			vm_request_exit(v->vm, VMRUN_EXIT_POWEROFF, "poweroff");
			break;
		case KVM_SYSTEM_EVENT_RESET:
			vm_request_exit(v->vm, VMRUN_EXIT_RESET, "reset");
			break;
		case KVM_SYSTEM_EVENT_CRASH:
			vcpu_fail(v, VMRUN_EXIT_GUEST_CRASH, "guest crash (system event)");
			break;
		default:
			vcpu_fail(v, VMRUN_EXIT_HOST_ERROR, "unknown system event %u (%s)",
				  run->system_event.type, system_event_name(run->system_event.type));
			break;
		}
		return false;
	case KVM_EXIT_INTERNAL_ERROR: {
		char data[128] = "";
		size_t off = 0;

		if (run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION && v->vm->nested_workarounds)
			return vcpu_emulation_fallback(v);
		for (uint32_t i = 0; i < run->internal.ndata && i < 16 && off < sizeof(data); i++)
			off += (size_t)snprintf(data + off, sizeof(data) - off, " 0x%llx",
						(unsigned long long)run->internal.data[i]);
		vcpu_fail(v, VMRUN_EXIT_INTERNAL_ERROR, "KVM internal error, suberror %u%s%s%s",
			  run->internal.suberror,
			  run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION ?
				  " (instruction emulation failed)" : "",
			  data[0] ? ", data" : "", data);
		return false;
	}
	case KVM_EXIT_FAIL_ENTRY:
		vcpu_fail(v, VMRUN_EXIT_FAIL_ENTRY,
			  "VM entry failed, hardware reason 0x%llx on host cpu %u",
			  (unsigned long long)run->fail_entry.hardware_entry_failure_reason,
			  run->fail_entry.cpu);
		return false;
	default:
		vcpu_fail(v, VMRUN_EXIT_HOST_ERROR, "unhandled KVM exit reason %u", run->exit_reason);
		return false;
	}
}

/* Wait while paused.  Returns the request in force on leaving. */
static enum vcpu_request vcpu_wait_runnable(struct vcpu *v)
{
	struct vm *vm = v->vm;
	enum vcpu_request req;

	pthread_mutex_lock(&vm->state_lock);
	if (vm->request == VCPU_PAUSE && !v->parked) {
		/* An exit vmrun just handled (port or MMIO read) completes only
		 * in the next KVM_RUN: enter it once with immediate_exit, so
		 * that the registers a save reads hold the finished
		 * instruction (KVM's API documentation, "immediate_exit"). */
		pthread_mutex_unlock(&vm->state_lock);
		v->run->immediate_exit = 1;
		while (ioctl(v->fd, KVM_RUN, 0) == 0 && v->run->exit_reason != KVM_EXIT_INTR) {
			/* Not expected with immediate_exit set, but an exit must
			 * never be dropped. */
			if (!vcpu_handle_exit(v))
				break;
		}
		v->run->immediate_exit = 0;
		pthread_mutex_lock(&vm->state_lock);
	}
	while (vm->request == VCPU_PAUSE) {
		if (!v->parked) {
			vcpu_record_halt_state(v);
			v->parked = true;
			vm->n_parked++;
			pthread_cond_broadcast(&vm->ack_cond);
		}
		pthread_cond_wait(&vm->state_cond, &vm->state_lock);
	}
	if (v->parked) {
		v->parked = false;
		v->halted_for_good = false;
		vm->n_parked--;
		pthread_cond_broadcast(&vm->ack_cond); /* vcpus_resume waits for this */
	}
	req = vm->request;
	pthread_mutex_unlock(&vm->state_lock);
	return req;
}

/* Auto-converge: after a kick, stand still in proportion to the time run
 * since the last sleep, so that sleeping is the throttle's share of the
 * vCPU's time.  Proportional rather than a fixed slice, because a kick can
 * be lost (it lands while the vCPU is out of KVM_RUN) and the vCPU then
 * runs a whole period: it pays for it with a longer sleep.  Kicks during
 * the sleep are ignored; a pause or stop request ends it. */
static void vcpu_throttle(struct vcpu *v)
{
	unsigned pm = atomic_load(&v->vm->throttle_permille);
	struct timespec now, until;
	int64_t ran_us, sleep_us;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (!pm) {
		v->throttle_woke = now;
		return;
	}
	pm = pm > 999 ? 999 : pm;
	ran_us = (int64_t)(now.tv_sec - v->throttle_woke.tv_sec) * 1000000 +
		 (now.tv_nsec - v->throttle_woke.tv_nsec) / 1000;
	if (ran_us < 0 || ran_us > 2 * VCPU_THROTTLE_PERIOD_US)
		ran_us = VCPU_THROTTLE_PERIOD_US;
	sleep_us = ran_us * pm / (1000 - pm);
	if (sleep_us > VCPU_THROTTLE_MAX_SLEEP_US)
		sleep_us = VCPU_THROTTLE_MAX_SLEEP_US;
	until.tv_sec = now.tv_sec + (time_t)(sleep_us / 1000000);
	until.tv_nsec = now.tv_nsec + (long)(sleep_us % 1000000) * 1000;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR) {
		enum vcpu_request req;

		pthread_mutex_lock(&v->vm->state_lock);
		req = v->vm->request;
		pthread_mutex_unlock(&v->vm->state_lock);
		if (req != VCPU_RUN || atomic_load(&v->vm->exiting))
			break;
	}
	clock_gettime(CLOCK_MONOTONIC, &v->throttle_woke);
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	struct vm *vm = v->vm;
	sigset_t kick;
	char name[16];

	snprintf(name, sizeof(name), "vcpu%u", v->id);
	pthread_setname_np(pthread_self(), name);
	sigemptyset(&kick);
	sigaddset(&kick, VCPU_KICK_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &kick, NULL);
	/* This thread's allow-list before its first KVM_RUN (vmrun/sandbox.h). */
	if (sandbox_enter(&vm->sandbox, SANDBOX_VCPU)) {
		vcpu_fail(v, VMRUN_EXIT_HOST_ERROR, "cannot load the seccomp filter");
		goto out;
	}

	for (;;) {
		v->run->immediate_exit = 0;
		if (atomic_load(&vm->exiting) || vcpu_wait_runnable(v) == VCPU_STOP)
			break;
		if (v->id == 0 && !vm->entered) {
			/* The guest's first instruction, for --exit-json; only
			 * this thread writes it, the main thread reads it after
			 * the join. */
			clock_gettime(CLOCK_MONOTONIC, &vm->first_run);
			vm->entered = true;
		}
		/* KVM_NMI from this thread: a vCPU ioctl waits for KVM_RUN to
		 * return, and this thread is where that happens. */
		if (__atomic_exchange_n(&v->nmi_pending, false, __ATOMIC_SEQ_CST) &&
		    ioctl(v->fd, KVM_NMI, 0) < 0)
			log_warn("vcpu%u: cannot inject the NMI: %s", v->id, strerror(errno));
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				vcpu_throttle(v);
				continue;
			}
			vcpu_fail(v, VMRUN_EXIT_HOST_ERROR, "KVM_RUN failed: %s", strerror(errno));
			break;
		}
		if (!vcpu_handle_exit(v))
			break;
	}
out:
	pthread_mutex_lock(&vm->state_lock);
	v->finished = true;
	pthread_cond_broadcast(&vm->ack_cond);
	pthread_mutex_unlock(&vm->state_lock);
	return NULL;
}

static void vcpu_kick_handler(int sig)
{
	(void)sig; /* only there to interrupt KVM_RUN */
}

int vcpus_start(struct vm *vm)
{
	struct sigaction sa = { .sa_handler = vcpu_kick_handler };

	sigemptyset(&sa.sa_mask);
	if (sigaction(VCPU_KICK_SIGNAL, &sa, NULL) < 0) /* no SA_RESTART: KVM_RUN returns EINTR */
		return -errno;
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		int r = pthread_create(&vm->vcpus[i].thread, NULL, vcpu_thread, &vm->vcpus[i]);

		if (r)
			return -r;
		vm->vcpus[i].thread_started = true;
	}
	return 0;
}

static void vcpus_kick_all(struct vm *vm)
{
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		struct vcpu *v = &vm->vcpus[i];

		if (!v->thread_started)
			continue;
		__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
		pthread_kill(v->thread, VCPU_KICK_SIGNAL);
	}
}

void vcpus_nmi(struct vm *vm)
{
	for (unsigned i = 0; i < vm->n_vcpus; i++)
		__atomic_store_n(&vm->vcpus[i].nmi_pending, true, __ATOMIC_SEQ_CST);
	vcpus_kick_all(vm);
}

void vcpus_throttle_kick(struct vm *vm)
{
	vcpus_kick_all(vm);
}

static unsigned vcpus_live(struct vm *vm)
{
	unsigned n = 0;

	for (unsigned i = 0; i < vm->n_vcpus; i++)
		if (vm->vcpus[i].thread_started && !vm->vcpus[i].finished)
			n++;
	return n;
}

int vcpus_pause(struct vm *vm)
{
	struct timespec deadline;
	int r = 0;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += VCPU_PAUSE_TIMEOUT_S;
	pthread_mutex_lock(&vm->state_lock);
	if (vm->request == VCPU_RUN)
		vm->request = VCPU_PAUSE;
	pthread_mutex_unlock(&vm->state_lock);
	vcpus_kick_all(vm);
	pthread_mutex_lock(&vm->state_lock);
	while (vm->request == VCPU_PAUSE && vm->n_parked < vcpus_live(vm) && r == 0)
		r = pthread_cond_timedwait(&vm->ack_cond, &vm->state_lock, &deadline);
	pthread_mutex_unlock(&vm->state_lock);
	return r ? -r : 0;
}

void vcpus_resume(struct vm *vm)
{
	struct timespec deadline;
	int r = 0;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += VCPU_PAUSE_TIMEOUT_S;
	pthread_mutex_lock(&vm->state_lock);
	if (vm->request == VCPU_PAUSE)
		vm->request = VCPU_RUN;
	pthread_cond_broadcast(&vm->state_cond);
	/* Wait until every vCPU has left its parked state, so that whoever
	 * asked (the control socket's "resume") sees them running.  A parked
	 * vCPU only needs the lock to leave, so the deadline is a guard. */
	while (vm->request == VCPU_RUN && vm->n_parked > 0 && r == 0)
		r = pthread_cond_timedwait(&vm->ack_cond, &vm->state_lock, &deadline);
	pthread_mutex_unlock(&vm->state_lock);
}

bool vcpus_paused(struct vm *vm)
{
	bool paused;

	pthread_mutex_lock(&vm->state_lock);
	paused = vm->request == VCPU_PAUSE;
	pthread_mutex_unlock(&vm->state_lock);
	return paused;
}

void vcpus_stop(struct vm *vm)
{
	pthread_mutex_lock(&vm->state_lock);
	vm->request = VCPU_STOP;
	pthread_cond_broadcast(&vm->state_cond);
	pthread_mutex_unlock(&vm->state_lock);
	vcpus_kick_all(vm);
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		if (vm->vcpus[i].thread_started) {
			pthread_join(vm->vcpus[i].thread, NULL);
			vm->vcpus[i].thread_started = false;
		}
	}
}

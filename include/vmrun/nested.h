/* Nested hosts without hardware virtualization (src/arch/x86_64/nested.c).
 *
 * Some hosts offer /dev/kvm from inside a VM whose CPU has no VT-x/AMD-V
 * (PLATFORM.md: kvm_pvm).  There KVM interprets guest CPL-0 code and fails
 * on a few instructions, which the instruction fallback (vmrun/insn.h)
 * finishes, and a stock Linux kernel needs a few arguments to avoid the
 * failures that cannot be finished (XRSTOR, the kvmclock VMCALL) or that are
 * merely slow.  vmrun detects such a host once at start; on hosts with
 * VT-x/AMD-V nothing here is active, and --no-nested-workarounds turns it
 * off everywhere. */
#ifndef VMRUN_NESTED_H
#define VMRUN_NESTED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vm_config;

/* The kernel arguments appended for Linux guests (PLATFORM.md, "Booting
 * stock Linux here"): no XSAVE (XRSTOR cannot be emulated), no kvmclock (its
 * VMCALL hangs), no legacy PTYs (18 s), a reliable TSC, no patching of every
 * LOCK prefix on a uniprocessor (one text_poke each, about 2 s), and CPUID
 * bits cleared: 141 (CMPXCHG16B, which SLUB's fast path would use and KVM's
 * emulator here cannot run), 151 (POPCNT), 297 (ERMS) and 580 (FSRM, the
 * byte-wise `rep movsb` memcpy); 129 (PCLMULQDQ), 137 (SSSE3), 147 and 148
 * (SSE4.1/4.2) and 153 (AES), so that a distribution kernel's crypto and
 * checksum code takes its generic C paths, which KVM's emulator runs,
 * rather than SIMD ones that stop at every instruction for vmrun's
 * fallback (Debian's blake2s self-test alone: over 20 minutes).  SMAP
 * stays: without it, system calls from user space fault on this host.
 * Initcalls of distribution kernels that only check or describe, skipped
 * (Debian 12's, timed with initcall_debug): ftrace's check of every traced
 * function and the trace enum-map worker (10-15 minutes together), the
 * tracefs directories of every trace event (tracer_init_tracefs, 196 s),
 * the self-tests of blake2s (34 s) and of the SP800-108 KDF
 * (crypto_kdf108_init, up to 256 s), and, through cryptomgr.notests, the
 * crypto API's self-test of every algorithm registered.  mitigations=off:
 * guest kernel code is interpreted, never executed speculatively, so
 * retpolines, return thunks and RSB filling only cost interpreted
 * instructions (guest user code runs natively, but the mitigations it
 * would need are the host kernel's). */
#define NESTED_LINUX_ARGS                                                                          \
	"noxsave no-kvmclock pty.legacy_count=0 tsc=reliable noreplace-smp "                       \
	"clearcpuid=129,137,141,147,148,151,153,297,580 mitigations=off cryptomgr.notests "       \
	"initcall_blacklist=ftrace_check_for_weak_functions,trace_eval_init,tracer_init_tracefs,"  \
	"blake2s_mod_init,crypto_kdf108_init"

/* Whether @cpuinfo (the text of /proc/cpuinfo) describes a CPU without
 * hardware virtualization: 1 when its first "flags" line names neither
 * "vmx" nor "svm", 0 when it names one, -ENOENT when there is no flags line
 * (then nothing can be said and nothing is switched on). */
int nested_cpuinfo_lacks_hw_virt(const char *cpuinfo);

/* nested_cpuinfo_lacks_hw_virt() on the file @path (normally
 * "/proc/cpuinfo"; at most its first 64 KiB are read).  -errno when it cannot
 * be read. */
int nested_host_lacks_hw_virt(const char *path);

/* Whether the fallbacks run for @cfg: the host lacks VT-x/AMD-V and @cfg
 * does not say --no-nested-workarounds.  Prints nothing: the VM says so
 * with nested_print_banner() once it starts.  Call once per VM, after
 * /dev/kvm opened. */
bool nested_workarounds_enable(const struct vm_config *cfg);

/* The one notice that the fallbacks are on (a log_info() line, so --quiet
 * silences it).  vm_run() prints it as the guest starts: never before an
 * error that stops the start, such as a missing kernel file. */
void nested_print_banner(void);

/* Whether the kernel image in @buf (@len bytes) is Linux: a bzImage (boot
 * sector signature 0xAA55 at 0x1FE and "HdrS" at 0x202), or an ELF64 file
 * with an ELF note named "Linux" in a PT_NOTE segment (every vmlinux since
 * 4.19 carries its build-salt note) or the "Linux version " banner in its
 * first NESTED_BANNER_SCAN_MAX bytes (never the whole of a file padded to
 * gigabytes).  The project's test guests have none of these. */
#define NESTED_BANNER_SCAN_MAX (64u << 20)
bool nested_image_is_linux(const uint8_t *buf, size_t len);

/* Write to @out (@outlen bytes) the command line @user (NULL: empty) with
 * NESTED_LINUX_ARGS appended, except the words whose key (the part before
 * '=', or the whole word) @user already has: the user's choice wins.  The
 * one exception is initcall_blacklist=, whose occurrences the kernel adds
 * up: vmrun's list is appended beside the user's.
 * Returns 0, or -E2BIG when the result does not fit (nothing useful in
 * @out). */
int nested_cmdline_append(const char *user, char *out, size_t outlen)
	__attribute__((warn_unused_result));

/* The command line for @cfg's guest into @buf (@len bytes, normally
 * VMRUN_CMDLINE_MAX): @cfg->cmdline, plus NESTED_LINUX_ARGS when @enabled
 * (nested_workarounds_enable()) and the kernel file is a Linux image.  A
 * kernel file that cannot be read is left for the loader to report.
 * Returns 0, or -E2BIG with a one-line message in @err. */
int nested_guest_cmdline(const struct vm_config *cfg, bool enabled, char *buf, size_t len,
			 char *err, size_t errlen) __attribute__((warn_unused_result));

#endif

/* Nested-host detection and the Linux kernel arguments, against
 * include/vmrun/nested.h. */
#include "unit.h"

#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "vmrun/config.h"
#include "vmrun/nested.h"

/* Shortened /proc/cpuinfo texts as kernels print them. */
static const char cpuinfo_vmx[] =
	"processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)\n"
	"flags\t\t: fpu vme de pse tsc msr pae vmx smx est popcnt\n"
	"vmx flags\t: vnmi preemption_timer invvpid ept_x_only\n"
	"bugs\t\t: spectre_v1\n\nprocessor\t: 1\nflags\t\t: fpu vmx\n";
static const char cpuinfo_svm[] =
	"processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu vme svm extapic cr8_legacy\n";
static const char cpuinfo_nested[] =
	"processor\t: 0\nvendor_id\t: GenuineIntel\n"
	"flags\t\t: fpu vme de pse tsc msr pae popcnt hypervisor smap smep umip\n"
	"bugs\t\t: spectre_v1\n\nprocessor\t: 1\n"
	"flags\t\t: fpu vme de pse tsc msr pae popcnt hypervisor smap smep umip\n";

static void test_cpuinfo(void **state)
{
	assert_int_equal(nested_cpuinfo_lacks_hw_virt(cpuinfo_vmx), 0);
	assert_int_equal(nested_cpuinfo_lacks_hw_virt(cpuinfo_svm), 0);
	assert_int_equal(nested_cpuinfo_lacks_hw_virt(cpuinfo_nested), 1);
	/* Whole words only: "vmx_foo" or "svmx" are not vmx. */
	assert_int_equal(nested_cpuinfo_lacks_hw_virt("flags\t: fpu vmx_foo svmx\n"), 1);
	assert_int_equal(nested_cpuinfo_lacks_hw_virt("flags\t: vmx"), 0); /* no newline at the end */
	assert_int_equal(nested_cpuinfo_lacks_hw_virt("flags\t:\tfpu\tsvm\n"), 0);
	/* "vmx flags" is not the flags line; without one nothing is known. */
	assert_int_equal(nested_cpuinfo_lacks_hw_virt("vmx flags\t: ept\nbugs\t: x\n"), -ENOENT);
	assert_int_equal(nested_cpuinfo_lacks_hw_virt("flagsx\t: fpu\n"), -ENOENT);
	assert_int_equal(nested_cpuinfo_lacks_hw_virt(""), -ENOENT);
	/* Only the first flags line counts (all CPUs have the same). */
	assert_int_equal(nested_cpuinfo_lacks_hw_virt("flags\t: fpu\nflags\t: vmx\n"), 1);
}

static void test_cpuinfo_file(void **state)
{
	char path[] = "/tmp/vmrun-cpuinfo-XXXXXX";
	int fd = mkstemp(path);
	/* A long file whose flags line sits past the first read. */
	size_t pad = 70 * 1024;
	char *big = malloc(pad + sizeof(cpuinfo_vmx));

	assert_true(fd >= 0);
	assert_non_null(big);
	assert_int_equal(write(fd, cpuinfo_nested, strlen(cpuinfo_nested)),
			 (ssize_t)strlen(cpuinfo_nested));
	assert_int_equal(nested_host_lacks_hw_virt(path), 1);
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(pwrite(fd, cpuinfo_vmx, strlen(cpuinfo_vmx), 0), (ssize_t)strlen(cpuinfo_vmx));
	assert_int_equal(nested_host_lacks_hw_virt(path), 0);
	/* Past the 64 KiB read: no flags line seen. */
	memset(big, 'x', pad);
	big[pad - 1] = '\n';
	memcpy(big + pad, cpuinfo_vmx, sizeof(cpuinfo_vmx));
	assert_int_equal(pwrite(fd, big, pad + strlen(cpuinfo_vmx), 0), (ssize_t)(pad + strlen(cpuinfo_vmx)));
	assert_int_equal(nested_host_lacks_hw_virt(path), -ENOENT);
	close(fd);
	unlink(path);
	free(big);
	assert_int_equal(nested_host_lacks_hw_virt("/nonexistent/cpuinfo"), -ENOENT);
	/* The real file says something definite on x86 Linux. */
	assert_true(nested_host_lacks_hw_virt("/proc/cpuinfo") >= 0);
}

/* ---- Linux images ---- */

static size_t make_elf(uint8_t *buf, size_t cap, const char *note_name, uint32_t note_type)
{
	Elf64_Ehdr eh = { 0 };
	Elf64_Phdr ph = { 0 };
	Elf64_Nhdr nh = { 0 };
	size_t namesz = strlen(note_name) + 1, off = sizeof(eh) + sizeof(ph);
	size_t note_len = sizeof(nh) + ((namesz + 3) & ~3u) + 4;

	assert_true(off + note_len <= cap);
	memset(buf, 0, cap);
	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS64;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	eh.e_type = ET_EXEC;
	eh.e_machine = EM_X86_64;
	eh.e_phoff = sizeof(eh);
	eh.e_phentsize = sizeof(ph);
	eh.e_phnum = 1;
	ph.p_type = PT_NOTE;
	ph.p_offset = off;
	ph.p_filesz = note_len;
	nh.n_namesz = (uint32_t)namesz;
	nh.n_descsz = 4;
	nh.n_type = note_type;
	memcpy(buf, &eh, sizeof(eh));
	memcpy(buf + sizeof(eh), &ph, sizeof(ph));
	memcpy(buf + off, &nh, sizeof(nh));
	memcpy(buf + off + sizeof(nh), note_name, namesz);
	return off + note_len;
}

static void test_image_is_linux(void **state)
{
	uint8_t buf[1024];
	size_t n;

	/* A vmlinux: its build-salt note is named "Linux" (type 0x100). */
	n = make_elf(buf, sizeof(buf), "Linux", 0x100);
	assert_true(nested_image_is_linux(buf, n));
	/* The test guests: a Xen (PVH) note only. */
	n = make_elf(buf, sizeof(buf), "Xen", 18);
	assert_false(nested_image_is_linux(buf, n));
	/* ... unless the banner is there. */
	memcpy(buf + n, "Linux version 6.1.0 (gcc)", 25);
	assert_true(nested_image_is_linux(buf, n + 25));
	/* "Linuxx" or "Linu" are other names. */
	n = make_elf(buf, sizeof(buf), "Linuxx", 1);
	assert_false(nested_image_is_linux(buf, n));
	/* A note segment that claims more than the file holds is ignored. */
	n = make_elf(buf, sizeof(buf), "Linux", 0x100);
	assert_false(nested_image_is_linux(buf, n - 1));
	/* A bzImage: 0xAA55 at 0x1FE and "HdrS" at 0x202. */
	memset(buf, 0, sizeof(buf));
	buf[0x1fe] = 0x55;
	buf[0x1ff] = 0xaa;
	memcpy(buf + 0x202, "HdrS", 4);
	assert_true(nested_image_is_linux(buf, 0x206));
	assert_false(nested_image_is_linux(buf, 0x205));
	buf[0x1ff] = 0;
	assert_false(nested_image_is_linux(buf, sizeof(buf)));
	assert_false(nested_image_is_linux((const uint8_t *)"\x7f" "ELF", 4));
	assert_false(nested_image_is_linux(buf, 0));
}

/* ---- the command line ---- */

static void test_cmdline_append(void **state)
{
	char out[VMRUN_CMDLINE_MAX];

	assert_int_equal(nested_cmdline_append(NULL, out, sizeof(out)), 0);
	assert_string_equal(out, NESTED_LINUX_ARGS);
	assert_int_equal(nested_cmdline_append("", out, sizeof(out)), 0);
	assert_string_equal(out, NESTED_LINUX_ARGS);
	assert_int_equal(nested_cmdline_append("console=ttyS0 panic=-1", out, sizeof(out)), 0);
	assert_string_equal(out, "console=ttyS0 panic=-1 " NESTED_LINUX_ARGS);
	assert_int_equal(nested_cmdline_append("quiet ", out, sizeof(out)), 0);
	assert_string_equal(out, "quiet " NESTED_LINUX_ARGS);
	/* The user's own choice of a key wins; prefixes of a key do not count. */
	assert_int_equal(nested_cmdline_append("tsc=unstable noxsave clearcpuid=1 pty.legacy", out,
					       sizeof(out)), 0);
	assert_string_equal(out, "tsc=unstable noxsave clearcpuid=1 pty.legacy no-kvmclock "
				 "pty.legacy_count=0 noreplace-smp mitigations=off cryptomgr.notests "
				 "initcall_blacklist=ftrace_check_for_weak_functions,trace_eval_init,"
				 "tracer_init_tracefs,blake2s_mod_init,crypto_kdf108_init");
	/* The kernel adds up initcall_blacklist= lists (each occurrence goes
	 * through its __setup() handler): vmrun's joins the user's. */
	assert_int_equal(nested_cmdline_append("initcall_blacklist=init_encrypted", out,
					       sizeof(out)), 0);
	assert_string_equal(out, "initcall_blacklist=init_encrypted " NESTED_LINUX_ARGS);
	assert_int_equal(nested_cmdline_append("noxsave=1 no-kvmclock-x", out, sizeof(out)), 0);
	assert_string_equal(out, "noxsave=1 no-kvmclock-x no-kvmclock pty.legacy_count=0 tsc=reliable "
				 "noreplace-smp clearcpuid=129,137,141,147,148,151,153,297,580 "
				 "mitigations=off cryptomgr.notests "
				 "initcall_blacklist=ftrace_check_for_weak_functions,trace_eval_init,"
				 "tracer_init_tracefs,blake2s_mod_init,crypto_kdf108_init");
}

static void test_cmdline_append_limits(void **state)
{
	const size_t args = strlen(NESTED_LINUX_ARGS);
	char out[512], user[512];

	/* Exactly fits: user + ' ' + args + NUL. */
	memset(user, 'a', sizeof(user));
	user[sizeof(out) - args - 2] = '\0';
	assert_int_equal(nested_cmdline_append(user, out, sizeof(out)), 0);
	assert_int_equal(strlen(out), sizeof(out) - 1);
	user[sizeof(out) - args - 2] = 'a';
	user[sizeof(out) - args - 1] = '\0';
	assert_int_equal(nested_cmdline_append(user, out, sizeof(out)), -E2BIG);
	memset(user, 'a', sizeof(user) - 1);
	user[sizeof(user) - 1] = '\0';
	assert_int_equal(nested_cmdline_append(user, out, sizeof(out)), -E2BIG);
}

static void test_guest_cmdline(void **state)
{
	char linux_path[] = "/tmp/vmrun-bzimage-XXXXXX", other_path[] = "/tmp/vmrun-guest-XXXXXX";
	int lfd = mkstemp(linux_path), ofd = mkstemp(other_path);
	uint8_t hdr[0x210] = { 0 };
	struct vm_config cfg = { .cmdline = "console=ttyS0" };
	char buf[VMRUN_CMDLINE_MAX], err[256] = "";
	char long_line[VMRUN_CMDLINE_MAX];

	assert_true(lfd >= 0 && ofd >= 0);
	hdr[0x1fe] = 0x55;
	hdr[0x1ff] = 0xaa;
	memcpy(hdr + 0x202, "HdrS", 4);
	assert_int_equal(write(lfd, hdr, sizeof(hdr)), (ssize_t)sizeof(hdr));
	assert_int_equal(write(ofd, "not linux at all", 16), 16);

	cfg.kernel_path = linux_path;
	assert_int_equal(nested_guest_cmdline(&cfg, true, buf, sizeof(buf), err, sizeof(err)), 0);
	assert_string_equal(buf, "console=ttyS0 " NESTED_LINUX_ARGS);
	assert_int_equal(nested_guest_cmdline(&cfg, false, buf, sizeof(buf), err, sizeof(err)), 0);
	assert_string_equal(buf, "console=ttyS0");
	cfg.kernel_path = other_path;
	assert_int_equal(nested_guest_cmdline(&cfg, true, buf, sizeof(buf), err, sizeof(err)), 0);
	assert_string_equal(buf, "console=ttyS0");
	/* A missing kernel is the loader's to report. */
	cfg.kernel_path = "/nonexistent/vmlinux";
	cfg.cmdline = NULL;
	assert_int_equal(nested_guest_cmdline(&cfg, true, buf, sizeof(buf), err, sizeof(err)), 0);
	assert_string_equal(buf, "");
	/* No room for the arguments: one line that says what to do. */
	memset(long_line, 'x', sizeof(long_line) - 1);
	long_line[sizeof(long_line) - 1] = '\0';
	long_line[sizeof(long_line) - 40] = '\0';
	cfg.cmdline = long_line;
	cfg.kernel_path = linux_path;
	assert_int_equal(nested_guest_cmdline(&cfg, true, buf, sizeof(buf), err, sizeof(err)), -E2BIG);
	assert_one_line_naming(err, "--no-nested-workarounds");

	close(lfd);
	close(ofd);
	unlink(linux_path);
	unlink(other_path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cpuinfo),
		cmocka_unit_test(test_cpuinfo_file),
		cmocka_unit_test(test_image_is_linux),
		cmocka_unit_test(test_cmdline_append),
		cmocka_unit_test(test_cmdline_append_limits),
		cmocka_unit_test(test_guest_cmdline),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

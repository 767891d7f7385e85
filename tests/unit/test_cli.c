/* cli_parse() and cli_parse_size() against include/vmrun/cli.h and config.h. */
#include "unit.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "vmrun/cli.h"

#define MiB (1ull << 20)
#define GiB (1ull << 30)

static char errbuf[256];

/* Parse "vmrun ARGS..." (a NULL-terminated list).  The strings are literals,
 * so the pointers cfg keeps stay valid. */
static int parse_args(struct vm_config *cfg, const char *const *args)
{
	char *argv[40];
	int argc = 0;

	argv[argc++] = (char *)"vmrun";
	for (; *args; args++) {
		assert_true(argc < (int)ARRAY_LEN(argv) - 1);
		argv[argc++] = (char *)*args;
	}
	argv[argc] = NULL;
	memset(errbuf, 0, sizeof(errbuf));
	return cli_parse(argc, argv, cfg, errbuf, sizeof(errbuf));
}

#define PARSE(cfg, ...) parse_args((cfg), (const char *const[]){ __VA_ARGS__, NULL })

/* The command line must be refused with -EINVAL and a one-line message that
 * names @option. */
static void expect_reject(const char *option, const char *const *args)
{
	struct vm_config cfg;
	int r = parse_args(&cfg, args);

	if (r != -EINVAL)
		fail_msg("expected -EINVAL for option %s, got %d", option, r);
	assert_one_line_naming(errbuf, option);
}

#define REJECT(option, ...) expect_reject((option), (const char *const[]){ __VA_ARGS__, NULL })

static void test_defaults(void **state)
{
	struct vm_config cfg;

	/* Garbage first: cli_parse must fill in every default itself. */
	memset(&cfg, 0xa5, sizeof(cfg));
	assert_int_equal(PARSE(&cfg, "--kernel", "vmlinux"), CLI_OK);
	assert_string_equal(cfg.kernel_path, "vmlinux");
	assert_int_equal(cfg.mem_size, 256 * MiB);
	assert_int_equal(cfg.cpus, 1);
	assert_int_equal(cfg.console, CONSOLE_STDIO);
	assert_int_equal(cfg.boot, BOOT_AUTO);
	assert_null(cfg.initrd_path);
	assert_null(cfg.cmdline);
	assert_null(cfg.api_sock);
	assert_int_equal(cfg.n_disks, 0);
	assert_float_equal(cfg.timeout_s, 0.0, 0.0);
}

static void test_no_state_between_parses(void **state)
{
	struct vm_config cfg;

	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--cpus", "4", "--mem", "1G", "--disk", "d",
			       "--boot", "pvh"),
			 CLI_OK);
	assert_int_equal(cfg.cpus, 4);
	assert_int_equal(PARSE(&cfg, "--kernel", "k2"), CLI_OK);
	assert_int_equal(cfg.cpus, 1);
	assert_int_equal(cfg.mem_size, 256 * MiB);
	assert_int_equal(cfg.n_disks, 0);
	assert_int_equal(cfg.boot, BOOT_AUTO);
	assert_string_equal(cfg.kernel_path, "k2");
}

static void test_separate_value_form(void **state)
{
	struct vm_config cfg;

	assert_int_equal(PARSE(&cfg, "--kernel", "bzk", "--initrd", "rd.img", "--cmdline",
			       "console=ttyS0 quiet", "--mem", "512M", "--cpus", "4", "--console",
			       "none", "--timeout", "30", "--api-sock", "/tmp/vm.sock", "--boot",
			       "linux64"),
			 CLI_OK);
	assert_string_equal(cfg.kernel_path, "bzk");
	assert_string_equal(cfg.initrd_path, "rd.img");
	assert_string_equal(cfg.cmdline, "console=ttyS0 quiet");
	assert_int_equal(cfg.mem_size, 512 * MiB);
	assert_int_equal(cfg.cpus, 4);
	assert_int_equal(cfg.console, CONSOLE_NONE);
	assert_float_equal(cfg.timeout_s, 30.0, 1e-9);
	assert_string_equal(cfg.api_sock, "/tmp/vm.sock");
	assert_int_equal(cfg.boot, BOOT_LINUX64);
}

static void test_equals_form(void **state)
{
	struct vm_config cfg;

	assert_int_equal(PARSE(&cfg, "--kernel=bzk", "--initrd=rd.img",
			       "--cmdline=root=/dev/vda console=ttyS0", "--mem=1G", "--cpus=2",
			       "--console=file:/tmp/out.txt", "--timeout=2.5",
			       "--api-sock=/tmp/a.sock", "--boot=pvh", "--disk=a.img"),
			 CLI_OK);
	assert_string_equal(cfg.kernel_path, "bzk");
	assert_string_equal(cfg.initrd_path, "rd.img");
	/* Only the first '=' separates the name from the value. */
	assert_string_equal(cfg.cmdline, "root=/dev/vda console=ttyS0");
	assert_int_equal(cfg.mem_size, GiB);
	assert_int_equal(cfg.cpus, 2);
	assert_int_equal(cfg.console, CONSOLE_FILE);
	assert_string_equal(cfg.console_path, "/tmp/out.txt");
	assert_float_equal(cfg.timeout_s, 2.5, 1e-9);
	assert_string_equal(cfg.api_sock, "/tmp/a.sock");
	assert_int_equal(cfg.boot, BOOT_PVH);
	assert_int_equal(cfg.n_disks, 1);
	assert_string_equal(cfg.disks[0].spec, "a.img");
}

static void test_parse_size_suffixes(void **state)
{
	static const struct {
		const char *s;
		uint64_t bytes;
	} ok[] = {
		{ "256M", 256 * MiB },
		{ "256m", 256 * MiB },
		{ "1G", GiB },
		{ "1g", GiB },
		{ "4096K", 4096 * 1024ull },
		{ "4k", 4096 },
		{ "512", 512 * MiB }, /* plain numbers are MiB */
		{ "0", 0 },
		{ "512MiB", 512 * MiB },
		{ "1GB", GiB },
		{ "2GiB", 2 * GiB },
		{ "8KiB", 8192 },
		{ "3072M", 3 * GiB },
	};

	for (size_t i = 0; i < ARRAY_LEN(ok); i++) {
		uint64_t out = 0xdeadbeef;
		int r = cli_parse_size(ok[i].s, &out);

		if (r != 0 || out != ok[i].bytes)
			fail_msg("cli_parse_size(\"%s\"): r=%d out=%llu, want %llu", ok[i].s, r,
				 (unsigned long long)out, (unsigned long long)ok[i].bytes);
	}
}

static void test_parse_size_rejects(void **state)
{
	static const char *const bad[] = {
		"abc", "", "-5", "+5", "12Q", "M", "1.5G", "12MX", "12 M", " 12", "1GBB", "0x10",
	};

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		uint64_t out = 77;
		int r = cli_parse_size(bad[i], &out);

		if (r != -EINVAL)
			fail_msg("cli_parse_size(\"%s\") = %d, want -EINVAL", bad[i], r);
		assert_int_equal(out, 77); /* untouched on failure */
	}
}

static void test_parse_size_overflow(void **state)
{
	uint64_t out;

	/* Does not fit 64 bits as a number at all. */
	assert_int_equal(cli_parse_size("99999999999999999999999", &out), -ERANGE);
	/* Fits as a number, overflows once scaled to bytes. */
	assert_int_equal(cli_parse_size("18446744073709551615", &out), -ERANGE);
	assert_int_equal(cli_parse_size("17179869184G", &out), -ERANGE); /* 2^34 GiB = 2^64 */
}

static void test_mem_accepts_limits(void **state)
{
	struct vm_config cfg;

	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--mem", "8M"), CLI_OK);
	assert_int_equal(cfg.mem_size, 8 * MiB);
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--mem", "8196K"), CLI_OK);
	assert_int_equal(cfg.mem_size, 8 * MiB + 4096);
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--mem", "1024G"), CLI_OK);
	assert_int_equal(cfg.mem_size, 1024 * GiB);
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--mem", "512MiB"), CLI_OK);
	assert_int_equal(cfg.mem_size, 512 * MiB);
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--mem=1GB"), CLI_OK);
	assert_int_equal(cfg.mem_size, GiB);
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--mem", "300"), CLI_OK);
	assert_int_equal(cfg.mem_size, 300 * MiB);
}

static void test_mem_rejects(void **state)
{
	REJECT("--mem", "--kernel", "k", "--mem", "abc");
	REJECT("--mem", "--kernel", "k", "--mem", "");
	REJECT("--mem", "--kernel", "k", "--mem=");
	REJECT("--mem", "--kernel", "k", "--mem", "-5");
	REJECT("--mem", "--kernel", "k", "--mem", "12Q");
	REJECT("--mem", "--kernel", "k", "--mem", "0");
	REJECT("--mem", "--kernel", "k", "--mem", "4M");      /* < 8M */
	REJECT("--mem", "--kernel", "k", "--mem", "8188K");   /* 8M - 4K */
	REJECT("--mem", "--kernel", "k", "--mem", "8193K");   /* > 8M, not 4K aligned */
	REJECT("--mem", "--kernel", "k", "--mem", "8194K");   /* 2K aligned only */
	REJECT("--mem", "--kernel", "k", "--mem", "262143K"); /* 256M - 1K */
	REJECT("--mem", "--kernel", "k", "--mem", "1025G");   /* > 1T */
	REJECT("--mem", "--kernel", "k", "--mem", "2048G");
	REJECT("--mem", "--kernel", "k", "--mem", "99999999999999999999999");
}

static void test_cpus(void **state)
{
	struct vm_config cfg;

	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--cpus", "1"), CLI_OK);
	assert_int_equal(cfg.cpus, 1);
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--cpus", "254"), CLI_OK);
	assert_int_equal(cfg.cpus, 254);

	REJECT("--cpus", "--kernel", "k", "--cpus", "0");
	REJECT("--cpus", "--kernel", "k", "--cpus", "255"); /* the xAPIC broadcast ID */
	REJECT("--cpus", "--kernel", "k", "--cpus", "256");
	REJECT("--cpus", "--kernel", "k", "--cpus", "x");
	REJECT("--cpus", "--kernel", "k", "--cpus", "-1");
	REJECT("--cpus", "--kernel", "k", "--cpus", "2x");
	REJECT("--cpus", "--kernel", "k", "--cpus", "");
	REJECT("--cpus", "--kernel", "k", "--cpus", "4294967297");
}

static void test_console(void **state)
{
	struct vm_config cfg;

	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--console", "file:/tmp/x.log"), CLI_OK);
	assert_int_equal(cfg.console, CONSOLE_FILE);
	assert_string_equal(cfg.console_path, "/tmp/x.log");
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--console", "none"), CLI_OK);
	assert_int_equal(cfg.console, CONSOLE_NONE);
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--console", "none", "--console", "stdio"),
			 CLI_OK);
	assert_int_equal(cfg.console, CONSOLE_STDIO);
	assert_null(cfg.console_log);
	/* stdio,log=PATH: stdout and a copy in PATH; the path runs to the end. */
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--console", "stdio,log=/tmp/a,b.log"),
			 CLI_OK);
	assert_int_equal(cfg.console, CONSOLE_STDIO);
	assert_string_equal(cfg.console_log, "/tmp/a,b.log");
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--console=stdio,log=c.log"), CLI_OK);
	assert_string_equal(cfg.console_log, "c.log");
	/* A later --console replaces the whole choice, log included. */
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--console", "stdio,log=c.log", "--console",
			       "stdio"), CLI_OK);
	assert_null(cfg.console_log);
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--console", "stdio,log=c.log", "--console",
			       "file:f.txt"), CLI_OK);
	assert_int_equal(cfg.console, CONSOLE_FILE);
	assert_null(cfg.console_log);

	REJECT("--console", "--kernel", "k", "--console", "stdio,log=");
	REJECT("--console", "--kernel", "k", "--console", "stdio,");
	REJECT("--console", "--kernel", "k", "--console", "stdio,foo=x");
	REJECT("--console", "--kernel", "k", "--console", "bogus");
	REJECT("--console", "--kernel", "k", "--console", "file:");
	REJECT("--console", "--kernel", "k", "--console", "");
}

static void test_timeout(void **state)
{
	struct vm_config cfg;

	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--timeout", "2.5"), CLI_OK);
	assert_float_equal(cfg.timeout_s, 2.5, 1e-9);
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--timeout", "10"), CLI_OK);
	assert_float_equal(cfg.timeout_s, 10.0, 1e-9);

	REJECT("--timeout", "--kernel", "k", "--timeout", "0");
	REJECT("--timeout", "--kernel", "k", "--timeout", "-1");
	REJECT("--timeout", "--kernel", "k", "--timeout", "abc");
	REJECT("--timeout", "--kernel", "k", "--timeout", "");
	REJECT("--timeout", "--kernel", "k", "--timeout", "5s");
	REJECT("--timeout", "--kernel", "k", "--timeout", "nan");
	REJECT("--timeout", "--kernel", "k", "--timeout", "inf");
}

static void test_boot(void **state)
{
	struct vm_config cfg;

	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--boot", "pvh"), CLI_OK);
	assert_int_equal(cfg.boot, BOOT_PVH);
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--boot", "linux64"), CLI_OK);
	assert_int_equal(cfg.boot, BOOT_LINUX64);
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--boot", "auto"), CLI_OK);
	assert_int_equal(cfg.boot, BOOT_AUTO);
	REJECT("--boot", "--kernel", "k", "--boot", "multiboot");
}

static void test_kernel_decompress(void **state)
{
	struct vm_config cfg;

	memset(&cfg, 0xa5, sizeof(cfg));
	assert_int_equal(PARSE(&cfg, "--kernel", "k"), CLI_OK);
	assert_int_equal(cfg.kernel_decompress, KERNEL_DECOMPRESS_HOST);
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--kernel-decompress", "guest"), CLI_OK);
	assert_int_equal(cfg.kernel_decompress, KERNEL_DECOMPRESS_GUEST);
	assert_int_equal(PARSE(&cfg, "--kernel-decompress=host", "--kernel", "k"), CLI_OK);
	assert_int_equal(cfg.kernel_decompress, KERNEL_DECOMPRESS_HOST);
	REJECT("--kernel-decompress", "--kernel", "k", "--kernel-decompress", "qemu");
	REJECT("--kernel-decompress", "--kernel", "k", "--kernel-decompress=");
	REJECT("--kernel-decompress", "--kernel", "k", "--kernel-decompress");
}

static void test_initrd_decompress(void **state)
{
	struct vm_config cfg;

	memset(&cfg, 0xa5, sizeof(cfg));
	assert_int_equal(PARSE(&cfg, "--kernel", "k"), CLI_OK);
	assert_int_equal(cfg.initrd_decompress, KERNEL_DECOMPRESS_HOST);
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--initrd-decompress", "guest"), CLI_OK);
	assert_int_equal(cfg.initrd_decompress, KERNEL_DECOMPRESS_GUEST);
	assert_int_equal(cfg.kernel_decompress, KERNEL_DECOMPRESS_HOST);
	assert_int_equal(PARSE(&cfg, "--initrd-decompress=host", "--kernel", "k"), CLI_OK);
	assert_int_equal(cfg.initrd_decompress, KERNEL_DECOMPRESS_HOST);
	REJECT("--initrd-decompress", "--kernel", "k", "--initrd-decompress", "gzip");
	REJECT("--initrd-decompress", "--kernel", "k", "--initrd-decompress");
}

static void test_no_nested_workarounds(void **state)
{
	struct vm_config cfg;

	memset(&cfg, 0xa5, sizeof(cfg));
	assert_int_equal(PARSE(&cfg, "--kernel", "k"), CLI_OK);
	assert_false(cfg.no_nested_workarounds);
	assert_int_equal(PARSE(&cfg, "--no-nested-workarounds", "--kernel", "k"), CLI_OK);
	assert_true(cfg.no_nested_workarounds);
	assert_int_equal(PARSE(&cfg, "--kernel", "k"), CLI_OK);
	assert_false(cfg.no_nested_workarounds); /* nothing carried over */
	REJECT("--no-nested-workarounds", "--kernel", "k", "--no-nested-workarounds=1");
	REJECT("--no-nested-workaround", "--kernel", "k", "--no-nested-workaround");
}

/* --acpi on|off and --no-pvpanic: the machine's shape, on by default,
 * refused with --restore/--incoming (the snapshot says). */
static void test_acpi_pvpanic(void **state)
{
	struct vm_config cfg;

	(void)state;
	memset(&cfg, 0xa5, sizeof(cfg));
	assert_int_equal(PARSE(&cfg, "--kernel", "k"), CLI_OK);
	assert_false(cfg.no_acpi);
	assert_false(cfg.no_pvpanic);
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--acpi", "off", "--no-pvpanic"), CLI_OK);
	assert_true(cfg.no_acpi);
	assert_true(cfg.no_pvpanic);
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--acpi=on"), CLI_OK);
	assert_false(cfg.no_acpi);
	assert_false(cfg.no_pvpanic);
	REJECT("--acpi", "--kernel", "k", "--acpi", "yes");
	REJECT("--acpi", "--kernel", "k", "--acpi", "");
	REJECT("--no-pvpanic", "--kernel", "k", "--no-pvpanic=1");
	REJECT("--acpi", "--restore", "snap", "--acpi", "off");
	REJECT("--no-pvpanic", "--restore", "snap", "--no-pvpanic");
	REJECT("--no-pvpanic", "--incoming", "tcp:127.0.0.1:0", "--no-pvpanic");
}

static void test_disk(void **state)
{
	struct vm_config cfg;
	char long_path[VMRUN_DISK_PATH_MAX + 8];

	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--disk", "img.qcow"), CLI_OK);
	assert_int_equal(cfg.n_disks, 1);
	assert_string_equal(cfg.disks[0].spec, "img.qcow");
	assert_string_equal(cfg.disks[0].path, "img.qcow");
	assert_false(cfg.disks[0].readonly);
	assert_int_equal(cfg.disks[0].cache, DISK_CACHE_WRITEBACK);
	assert_string_equal(cfg.disks[0].serial, "");

	assert_int_equal(PARSE(&cfg, "--disk", "a.img,readonly,cache=none,serial=disk-A", "--kernel",
			       "k", "--disk=/dev/vdb,cache=unsafe", "--disk", "c,cache=writeback"),
			 CLI_OK);
	assert_int_equal(cfg.n_disks, 3);
	assert_string_equal(cfg.disks[0].path, "a.img");
	assert_true(cfg.disks[0].readonly);
	assert_int_equal(cfg.disks[0].cache, DISK_CACHE_NONE);
	assert_string_equal(cfg.disks[0].serial, "disk-A");
	assert_string_equal(cfg.disks[1].path, "/dev/vdb");
	assert_false(cfg.disks[1].readonly);
	assert_int_equal(cfg.disks[1].cache, DISK_CACHE_UNSAFE);
	assert_int_equal(cfg.disks[2].cache, DISK_CACHE_WRITEBACK);
	assert_int_equal(cfg.disks[2].format, DISK_FORMAT_AUTO);
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--disk", "a,format=raw", "--disk",
			       "b,format=qcow2,readonly"), CLI_OK);
	assert_int_equal(cfg.disks[0].format, DISK_FORMAT_RAW);
	assert_int_equal(cfg.disks[1].format, DISK_FORMAT_QCOW2);
	assert_true(cfg.disks[1].readonly);
	/* A 20-byte serial fits exactly (virtio-blk GET_ID). */
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--disk", "d,serial=12345678901234567890"),
			 CLI_OK);
	assert_string_equal(cfg.disks[0].serial, "12345678901234567890");

	REJECT("--disk", "--kernel", "k", "--disk", "");
	REJECT("empty path", "--kernel", "k", "--disk", ",readonly");
	REJECT("unknown option 'ro'", "--kernel", "k", "--disk", "a.img,ro");
	REJECT("unknown option 'cache=directsync'", "--kernel", "k", "--disk", "a,cache=directsync");
	REJECT("unknown option ''", "--kernel", "k", "--disk", "a,");
	REJECT("unknown option 'format=vmdk'", "--kernel", "k", "--disk", "a,format=vmdk");
	REJECT("serial longer than 20", "--kernel", "k", "--disk", "d,serial=123456789012345678901");
	REJECT("at most 8 disks", "--kernel", "k", "--disk", "1", "--disk", "2", "--disk", "3",
	       "--disk", "4", "--disk", "5", "--disk", "6", "--disk", "7", "--disk", "8", "--disk", "9");
	memset(long_path, 'p', sizeof(long_path) - 1);
	long_path[sizeof(long_path) - 1] = '\0';
	REJECT("path longer than", "--kernel", "k", "--disk", long_path);
}

static void test_net(void **state)
{
	struct vm_config cfg;
	static const uint8_t mac[6] = { 0x02, 0xab, 0x00, 0x10, 0xfe, 0x7f };

	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--net", "tap=vm0"), CLI_OK);
	assert_int_equal(cfg.n_nics, 1);
	assert_string_equal(cfg.nics[0].tap, "vm0");
	assert_false(cfg.nics[0].mac_given);
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--net=mac=02:ab:00:10:fe:7f,tap=t1", "--net",
			       "tap=123456789012345"), CLI_OK);
	assert_int_equal(cfg.n_nics, 2);
	assert_string_equal(cfg.nics[0].tap, "t1");
	assert_true(cfg.nics[0].mac_given);
	assert_memory_equal(cfg.nics[0].mac, mac, 6);
	assert_string_equal(cfg.nics[1].tap, "123456789012345");
	REJECT("tap=NAME is required", "--kernel", "k", "--net", "mac=02:00:00:00:00:01");
	REJECT("tap name longer than 15", "--kernel", "k", "--net", "tap=1234567890123456");
	REJECT("bad mac", "--kernel", "k", "--net", "tap=a,mac=02:00:00:00:00");
	REJECT("bad mac", "--kernel", "k", "--net", "tap=a,mac=02:00:00:00:00:zz");
	REJECT("multicast", "--kernel", "k", "--net", "tap=a,mac=01:00:5e:00:00:01");
	REJECT("unknown option 'vhost=on'", "--kernel", "k", "--net", "tap=a,vhost=on");
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--net", "tap=m"), CLI_OK);
	assert_int_equal(cfg.nics[0].queues, 0); /* one pair unless asked */
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--net", "tap=m,queues=8"), CLI_OK);
	assert_int_equal(cfg.nics[0].queues, 8);
	REJECT("queues=0: a number of queue pairs, 1 to 8", "--kernel", "k", "--net",
	       "tap=a,queues=0");
	REJECT("queues=9", "--kernel", "k", "--net", "tap=a,queues=9");
	REJECT("queues=2x", "--kernel", "k", "--net", "tap=a,queues=2x");
	REJECT("queues=-1", "--kernel", "k", "--net", "tap=a,queues=-1");
	REJECT("queues=99999999999", "--kernel", "k", "--net", "tap=a,queues=99999999999");
	/* transport=: pci by default, mmio on request, nothing else. */
	assert_int_equal(cfg.nics[0].transport, VIRTIO_TRANSPORT_PCI);
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--net", "tap=m,transport=mmio", "--disk",
			       "d,transport=pci", "--disk", "e,transport=mmio", "--disk", "f"),
			 CLI_OK);
	assert_int_equal(cfg.nics[0].transport, VIRTIO_TRANSPORT_MMIO);
	assert_int_equal(cfg.disks[0].transport, VIRTIO_TRANSPORT_PCI);
	assert_int_equal(cfg.disks[1].transport, VIRTIO_TRANSPORT_MMIO);
	assert_int_equal(cfg.disks[2].transport, VIRTIO_TRANSPORT_PCI);
	REJECT("unknown option 'transport=pcie'", "--kernel", "k", "--net", "tap=a,transport=pcie");
	REJECT("unknown option 'transport='", "--kernel", "k", "--disk", "d,transport=");
	REJECT("unknown option 'transport=PCI'", "--kernel", "k", "--disk", "d,transport=PCI");
	REJECT("at most 2 interfaces", "--kernel", "k", "--net", "tap=a", "--net", "tap=b", "--net",
	       "tap=c");
}

static void test_unknown_option(void **state)
{
	REJECT("--frobnicate", "--kernel", "k", "--frobnicate");
	REJECT("--frobnicate", "--kernel", "k", "--frobnicate=3");
	REJECT("--memory", "--kernel", "k", "--memory", "1G");
	REJECT("-m", "--kernel", "k", "-m", "1G");
	REJECT("stray", "--kernel", "k", "stray");
}

static void test_missing_value_at_end(void **state)
{
	REJECT("--mem", "--kernel", "k", "--mem");
	REJECT("--kernel", "--kernel");
	REJECT("--cpus", "--kernel", "k", "--cpus");
	REJECT("--console", "--kernel", "k", "--console");
}

static void test_kernel_required(void **state)
{
	struct vm_config cfg;
	char *argv[] = { (char *)"vmrun", NULL };

	memset(errbuf, 0, sizeof(errbuf));
	assert_int_equal(cli_parse(1, argv, &cfg, errbuf, sizeof(errbuf)), -EINVAL);
	assert_one_line_naming(errbuf, "--kernel");
	REJECT("--kernel", "--mem", "512M", "--cpus", "2");
	REJECT("--kernel", "--kernel", "");
}

static void test_help_version(void **state)
{
	struct vm_config cfg;

	assert_int_equal(PARSE(&cfg, "--help"), CLI_HELP);
	assert_int_equal(PARSE(&cfg, "--version"), CLI_VERSION);
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--help"), CLI_HELP);
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--version"), CLI_VERSION);
	assert_non_null(cli_usage());
	assert_non_null(strstr(cli_usage(), "--kernel"));
}

static void test_small_error_buffer(void **state)
{
	struct vm_config cfg;
	char small[8];
	char *argv[] = { (char *)"vmrun", (char *)"--kernel", (char *)"k", (char *)"--mem",
			 (char *)"definitely-not-a-size", NULL };

	memset(small, 'Z', sizeof(small));
	assert_int_equal(cli_parse(5, argv, &cfg, small, sizeof(small)), -EINVAL);
	/* Truncated, but terminated inside the buffer. */
	assert_non_null(memchr(small, '\0', sizeof(small)));
}

/* --restore DIR: the machine comes from the snapshot; run-time options and
 * the per-host redirections are taken, machine options refused. */
static void test_restore(void **state)
{
	struct vm_config cfg;

	assert_int_equal(PARSE(&cfg, "--restore", "snap", "--paused", "--api-sock", "a.sock",
			       "--console", "none", "--timeout", "5", "--restore-disk", "1=/x/base",
			       "--restore-tap=0=tap7"),
			 CLI_OK);
	assert_string_equal(cfg.restore_dir, "snap");
	assert_null(cfg.kernel_path);
	assert_true(cfg.start_paused);
	assert_string_equal(cfg.api_sock, "a.sock");
	assert_null(cfg.restore_disk[0]);
	assert_string_equal(cfg.restore_disk[1], "/x/base");
	assert_string_equal(cfg.restore_tap[0], "tap7");
	assert_int_equal(cfg.console, CONSOLE_NONE);

	REJECT("--kernel", "--restore", "snap", "--kernel", "vmlinux");
	REJECT("--mem", "--mem", "1G", "--restore", "snap");
	REJECT("--disk", "--restore", "snap", "--disk", "a.img");
	REJECT("--net", "--restore", "snap", "--net", "tap=t0");
	REJECT("--cmdline", "--restore", "snap", "--cmdline", "x");
	REJECT("--restore", "--restore", "");
	REJECT("--restore-disk", "--restore", "snap", "--restore-disk", "8=/x");
	REJECT("--restore-disk", "--restore", "snap", "--restore-disk", "x=/x");
	REJECT("--restore-disk", "--restore", "snap", "--restore-disk", "0=");
	REJECT("--restore-disk", "--restore", "snap", "--restore-disk", "/x");
	REJECT("--restore-tap", "--restore", "snap", "--restore-tap", "2=t");
	REJECT("--restore-tap", "--restore", "snap", "--restore-tap", "0=averyveryverylongname");
	/* The redirections mean nothing without a snapshot. */
	REJECT("--restore-disk", "--kernel", "k", "--restore-disk", "0=/x");
	REJECT("--restore-tap", "--kernel", "k", "--restore-tap", "0=t");
	REJECT("--paused", "--kernel", "k", "--paused=1");
}

static void test_paused_boot(void **state)
{
	struct vm_config cfg;

	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--paused"), CLI_OK);
	assert_true(cfg.start_paused);
	assert_null(cfg.restore_dir);
}

static void test_exit_json_quiet(void **state)
{
	struct vm_config cfg;

	assert_int_equal(PARSE(&cfg, "--kernel", "k"), CLI_OK);
	assert_null(cfg.exit_json);
	assert_false(cfg.quiet);
	assert_int_equal(PARSE(&cfg, "--kernel", "k", "--exit-json", "out.json", "--quiet"), CLI_OK);
	assert_string_equal(cfg.exit_json, "out.json");
	assert_true(cfg.quiet);
	/* Both are run-time options: allowed with --restore. */
	assert_int_equal(PARSE(&cfg, "--restore", "snap", "--exit-json=v.json", "--quiet"), CLI_OK);
	assert_string_equal(cfg.exit_json, "v.json");
	assert_true(cfg.quiet);
	REJECT("--exit-json", "--kernel", "k", "--exit-json", "");
	REJECT("--exit-json", "--kernel", "k", "--exit-json");
	REJECT("--quiet", "--kernel", "k", "--quiet=yes");
}

/* ---- --config FILE ---- */

/* Write @text to a new temporary file; its path goes to @path (64 bytes). */
static void write_config(char *path, const char *text)
{
	int fd;

	strcpy(path, "/tmp/vmrun-cli-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static void test_config_file(void **state)
{
	struct vm_config cfg;
	char path[64];

	write_config(path, "{\"kernel\": \"vmlinux\", \"mem\": \"512M\", \"cpus\": 2,"
			   " \"disk\": [\"a.qcow2,cache=none\", \"b.img,readonly\"],"
			   " \"cmdline\": \"console=ttyS0\", \"console\": \"none\","
			   " \"api-sock\": \"/run/vm.sock\", \"timeout\": 10, \"paused\": true,"
			   " \"no-nested-workarounds\": false}");
	assert_int_equal(PARSE(&cfg, "--config", path), CLI_OK);
	assert_non_null(cfg.cli_owned);
	assert_string_equal(cfg.kernel_path, "vmlinux");
	assert_int_equal(cfg.mem_size, 512 * MiB);
	assert_int_equal(cfg.cpus, 2);
	assert_int_equal(cfg.n_disks, 2);
	assert_string_equal(cfg.disks[0].path, "a.qcow2");
	assert_int_equal(cfg.disks[0].cache, DISK_CACHE_NONE);
	assert_string_equal(cfg.disks[0].spec, "a.qcow2,cache=none");
	assert_true(cfg.disks[1].readonly);
	assert_string_equal(cfg.cmdline, "console=ttyS0");
	assert_int_equal(cfg.console, CONSOLE_NONE);
	assert_string_equal(cfg.api_sock, "/run/vm.sock");
	assert_float_equal(cfg.timeout_s, 10.0, 0.0);
	assert_true(cfg.start_paused);
	assert_false(cfg.no_nested_workarounds);
	/* The strings belong to cfg, not to the file: it may go. */
	unlink(path);
	assert_string_equal(cfg.cmdline, "console=ttyS0");
	cli_config_free(&cfg);
	assert_null(cfg.cli_owned);
	cli_config_free(&cfg); /* twice is harmless */

	/* A plain number for mem is MiB, as on the command line; a real
	 * timeout; the equals form of --config. */
	write_config(path, "{\"kernel\": \"k\", \"mem\": 64, \"timeout\": 2.5}");
	{
		char opt[80];

		snprintf(opt, sizeof(opt), "--config=%s", path);
		assert_int_equal(PARSE(&cfg, opt), CLI_OK);
	}
	assert_int_equal(cfg.mem_size, 64 * MiB);
	assert_float_equal(cfg.timeout_s, 2.5, 0.0);
	cli_config_free(&cfg);
	unlink(path);

	/* Without --config nothing is kept. */
	assert_int_equal(PARSE(&cfg, "--kernel", "k"), CLI_OK);
	assert_null(cfg.cli_owned);
}

static void test_config_command_line_overrides(void **state)
{
	struct vm_config cfg;
	char path[64];

	write_config(path, "{\"kernel\": \"file-kernel\", \"cpus\": 4, \"mem\": \"1G\","
			   " \"disk\": [\"a.img\", \"b.img\"], \"net\": [\"tap=tap0\"]}");
	/* Options before and after --config both win over the file. */
	assert_int_equal(PARSE(&cfg, "--cpus", "2", "--config", path, "--disk", "c.img",
			       "--kernel", "cli-kernel"),
			 CLI_OK);
	assert_string_equal(cfg.kernel_path, "cli-kernel");
	assert_int_equal(cfg.cpus, 2);
	assert_int_equal(cfg.mem_size, 1 * GiB);
	/* A repeatable option on the command line replaces the file's list. */
	assert_int_equal(cfg.n_disks, 1);
	assert_string_equal(cfg.disks[0].path, "c.img");
	/* ... and leaves the other lists alone. */
	assert_int_equal(cfg.n_nics, 1);
	assert_string_equal(cfg.nics[0].tap, "tap0");
	cli_config_free(&cfg);
	/* --help still wins, and leaves nothing behind. */
	assert_int_equal(PARSE(&cfg, "--config", path, "--help"), CLI_HELP);
	unlink(path);
}

/* The file's error, one line that names the file and what is wrong. */
static void expect_config_reject(const char *text, const char *needle)
{
	struct vm_config cfg;
	char path[64];
	int r;

	write_config(path, text);
	r = PARSE(&cfg, "--config", path, "--kernel", "k");
	unlink(path);
	if (r != -EINVAL)
		fail_msg("expected -EINVAL for %s, got %d", text, r);
	assert_one_line_naming(errbuf, path);
	assert_one_line_naming(errbuf, needle);
}

static void test_config_errors(void **state)
{
	struct vm_config cfg;

	/* Unknown keys, flags or not. */
	expect_config_reject("{\"kernal\": \"k\"}", "unknown key 'kernal'");
	expect_config_reject("{\"pasued\": true}", "unknown key 'pasued'");
	expect_config_reject("{\"help\": true}", "unknown key 'help'");
	expect_config_reject("{\"config\": \"other.json\"}", "'config'");
	/* Wrong types. */
	expect_config_reject("{\"cpus\": \"two\"}", "--cpus");
	expect_config_reject("{\"cpus\": true}", "key 'cpus': expected a number or a string, not a boolean");
	expect_config_reject("{\"kernel\": 5}", "key 'kernel': expected a string, not a number");
	expect_config_reject("{\"cmdline\": null}", "not null");
	expect_config_reject("{\"disk\": {\"path\": \"a\"}}", "key 'disk': expected a string or an array");
	expect_config_reject("{\"disk\": [\"a\", 7]}", "key 'disk': item 1 is a number");
	expect_config_reject("{\"paused\": \"yes\"}", "key 'paused': expected true or false");
	/* Values the option itself refuses. */
	expect_config_reject("{\"mem\": \"lots\"}", "--mem: invalid size");
	expect_config_reject("{\"cpus\": 0}", "--cpus");
	expect_config_reject("{\"disk\": [\"a,bogus\"]}", "unknown option 'bogus'");
	/* Malformed files. */
	expect_config_reject("{\"kernel\": \"k\",}", "line 1");
	expect_config_reject("", "--config");
	expect_config_reject("[\"kernel\"]", "expected a JSON object, not an array");
	expect_config_reject("{\"cpus\": 1, \"cpus\": 2}", "duplicate");
	/* Unreadable. */
	assert_int_equal(PARSE(&cfg, "--config", "/nonexistent/vm.json"), -EINVAL);
	assert_one_line_naming(errbuf, "/nonexistent/vm.json");
	/* Given wrong on the command line. */
	REJECT("--config", "--config");
	REJECT("--config", "--config", "a", "--config", "b");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_no_state_between_parses),
		cmocka_unit_test(test_separate_value_form),
		cmocka_unit_test(test_equals_form),
		cmocka_unit_test(test_parse_size_suffixes),
		cmocka_unit_test(test_parse_size_rejects),
		cmocka_unit_test(test_parse_size_overflow),
		cmocka_unit_test(test_mem_accepts_limits),
		cmocka_unit_test(test_mem_rejects),
		cmocka_unit_test(test_cpus),
		cmocka_unit_test(test_console),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_boot),
		cmocka_unit_test(test_kernel_decompress),
		cmocka_unit_test(test_initrd_decompress),
		cmocka_unit_test(test_no_nested_workarounds),
		cmocka_unit_test(test_acpi_pvpanic),
		cmocka_unit_test(test_disk),
		cmocka_unit_test(test_net),
		cmocka_unit_test(test_unknown_option),
		cmocka_unit_test(test_missing_value_at_end),
		cmocka_unit_test(test_kernel_required),
		cmocka_unit_test(test_help_version),
		cmocka_unit_test(test_exit_json_quiet),
		cmocka_unit_test(test_small_error_buffer),
		cmocka_unit_test(test_restore),
		cmocka_unit_test(test_paused_boot),
		cmocka_unit_test(test_config_file),
		cmocka_unit_test(test_config_command_line_overrides),
		cmocka_unit_test(test_config_errors),
	};

	return cmocka_run_group_tests_name("cli", tests, NULL, NULL);
}

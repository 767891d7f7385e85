/* Command-line parsing for `vmrun [OPTIONS]`.  A hand-written loop rather than
 * getopt_long so that it keeps no hidden global state (unit tests parse many
 * command lines in one process) and every error is one line of our own. */
#include "vmrun/cli.h"
#include "vmrun/log.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
	"Usage: vmrun --kernel PATH [--disk PATH[,OPTS]] [--net tap=NAME] [OPTIONS]\n"
	"       vmrun --restore DIR [--paused] [RUN-TIME OPTIONS]\n"
	"       vmrun --incoming tcp:ADDR:PORT [RUN-TIME OPTIONS]  (live migration)\n"
	"       vmrun ctl SOCKET COMMAND [KEY=VALUE ...]\n"
	"       vmrun img create|info|snapshot|commit ...  (disk images; vmrun img --help)\n"
	"       vmrun snapshot show DIR [--json]           (whole-VM snapshots)\n"
	"\n"
	"Boot a guest kernel on /dev/kvm.\n"
	"\n"
	"Options:\n"
	"  --kernel PATH          guest kernel: an ELF64 image (Linux 64-bit entry or PVH note), an ELF32\n"
	"                         image with a PVH note, or a bzImage\n"
	"  --initrd PATH          initial ramdisk handed to the guest\n"
	"  --cmdline STR          guest kernel command line\n"
	"  --mem SIZE             guest RAM; K, M or G suffix, plain numbers are MiB (default 256M)\n"
	"  --cpus N               number of vCPUs (default 1)\n"
	"  --console KIND         stdio (default), stdio,log=PATH (stdout and a log file),\n"
	"                         file:PATH or none\n"
	"  --timeout SECONDS      stop the guest after SECONDS and exit 124\n"
	"  --api-sock PATH        control socket (one JSON object per line)\n"
	"  --boot PROTO           auto (default), linux64 or pvh\n"
	"  --kernel-decompress W  bzImage payload: host (default, vmrun decompresses) or guest\n"
	"  --initrd-decompress W  gzip initrd: host (default, vmrun inflates it) or guest\n"
	"  --disk PATH[,OPTS]     virtio-blk disk: raw or qcow2 image, or block device;\n"
	"                         repeatable; OPTS: readonly, cache=writeback|none|unsafe,\n"
	"                         serial=ID, format=raw|qcow2 (default: probed),\n"
	"                         transport=pci|mmio (default: pci)\n"
	"  --net tap=NAME[,mac=MAC][,queues=N][,transport=mmio|pci]\n"
	"                         virtio-net interface on a tap device, repeatable;\n"
	"                         queues=N: N queue pairs on a multi-queue tap\n"
	"  --acpi on|off          ACPI tables for the guest (default on): poweroff and reboot\n"
	"                         through the FADT's registers; off: the MP table only\n"
	"  --no-pvpanic           no pvpanic device (PCI 1b36:0011 and port 0x505), through\n"
	"                         which a panicking guest ends the run with status 16\n"
	"  --paused               start with the vCPUs paused (until `vmrun ctl SOCK resume`)\n"
	"  --restore DIR          continue the guest saved in DIR (`vmrun ctl SOCK save path=DIR`);\n"
	"                         the machine comes from DIR: only --console, --api-sock,\n"
	"                         --timeout, --paused, --exit-json, --quiet, --seccomp, --user\n"
	"                         and the two below\n"
	"                         may be given with it\n"
	"  --restore-disk N=PATH  disk N's frozen image (--incoming: its image) is PATH on this host\n"
	"  --restore-tap N=NAME   NIC N uses tap NAME on this host\n"
	"  --incoming tcp:ADDR:PORT  wait for one live migration on ADDR:PORT (port 0: any free\n"
	"                         port, printed) and run the guest it brings; takes the same\n"
	"                         options as --restore\n"
	"  --migration-key FILE   secret shared by both ends of a migration: the destination\n"
	"                         accepts only a source that proves it holds it, and the reverse\n"
	"  --exit-json FILE       when the run ends, write its verdict to FILE as one JSON object\n"
	"                         (status, kind, debug-exit value, reason, timings), atomically\n"
	"  --quiet                print only errors and the guest's console (no warnings or notices)\n"
	"  --no-nested-workarounds  on a nested KVM without VT-x/AMD-V: no instruction\n"
	"                         fallbacks, no extra Linux kernel arguments\n"
	"  --seccomp MODE         on (default): a system call outside the thread's allow-list\n"
	"                         ends vmrun with a line naming it; log: the kernel logs it and\n"
	"                         vmrun runs on; off: no filters (capabilities still dropped)\n"
	"  --user USER[:GROUP]    after set-up, run as USER (name or number) and GROUP\n"
	"                         (default: USER's group), supplementary groups cleared\n"
	"  --config FILE          the machine as a JSON object whose keys are these options'\n"
	"                         names ({\"kernel\": \"vmlinux\", \"cpus\": 2, \"disk\": [\"a.img\"]});\n"
	"                         options on the command line override it\n"
	"  --help                 print this help and exit\n"
	"  --version              print the version and exit\n"
	"\n"
	"On a terminal, Ctrl-A x quits and Ctrl-A Ctrl-A sends Ctrl-A.\n"
	"Exit status: the guest's debug-exit value V gives (V << 1) | 1; 0 poweroff or quit;\n"
	"2 usage; 4 setup error; 6 reset; 8 triple fault; 10 halted; 12 KVM internal error;\n"
	"14 entry failure; 16 guest crash; 18 host error; 20 signal; 124 timeout.\n";

const char *cli_usage(void)
{
	return usage_text;
}

int cli_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long n;
	unsigned shift = 20; /* plain numbers are MiB, as QEMU's -m */

	if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
		return -EINVAL;
	errno = 0;
	n = strtoull(s, &end, 10);
	if (end == s)
		return -EINVAL;
	if (errno == ERANGE)
		return -ERANGE;
	switch (*end) {
	case '\0': break;
	case 'k': case 'K': shift = 10; break;
	case 'm': case 'M': shift = 20; break;
	case 'g': case 'G': shift = 30; break;
	case 't': case 'T': shift = 40; break;
	default: return -EINVAL;
	}
	if (*end) {
		end++;
		if (*end == 'i') /* "MiB" */
			end++;
		if (*end == 'B') /* "MB", "MiB": binary units all the same */
			end++;
	}
	if (*end != '\0')
		return -EINVAL;
	if (n > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = (uint64_t)n << shift;
	return 0;
}

static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long v;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (*end || errno)
		return -EINVAL;
	if (v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

/* Options that take a value; the others are flags. */
static const char *const valued_options[] = {
	"kernel", "initrd", "cmdline", "mem", "cpus", "console",
	"timeout", "api-sock", "boot", "disk", "kernel-decompress", "initrd-decompress", "net",
	"exit-json", "acpi",
	"restore", "restore-disk", "restore-tap", "incoming", "migration-key", "seccomp", "user",
	NULL,
};

static bool option_takes_value(const char *name, size_t len)
{
	for (const char *const *o = valued_options; *o; o++)
		if (strlen(*o) == len && !memcmp(*o, name, len))
			return true;
	return false;
}



/* --disk PATH[,readonly][,cache=writeback|none|unsafe][,serial=ID][,format=raw|qcow2]
 * [,transport=mmio|pci]: the
 * path runs to the first comma (a path with commas cannot be given). */
static int parse_disk(const char *spec, struct disk_config *d, char *err, size_t errlen)
{
	const char *comma = strchr(spec, ',');
	size_t path_len = comma ? (size_t)(comma - spec) : strlen(spec);

	memset(d, 0, sizeof(*d));
	d->spec = spec;
	/* PCI by default: what distribution kernels find (they lack
	 * virtio-mmio's command-line devices). */
	d->transport = VIRTIO_TRANSPORT_PCI;
	if (!path_len)
		return errmsg(-EINVAL, err, errlen, "--disk: empty path in '%s'", spec);
	if (path_len >= sizeof(d->path))
		return errmsg(-EINVAL, err, errlen, "--disk: path longer than %d bytes",
			      VMRUN_DISK_PATH_MAX - 1);
	memcpy(d->path, spec, path_len);
	while (comma) {
		const char *opt = comma + 1, *end;
		size_t len;

		comma = strchr(opt, ',');
		end = comma ? comma : opt + strlen(opt);
		len = (size_t)(end - opt);
		if (len == 8 && !memcmp(opt, "readonly", 8)) {
			d->readonly = true;
		} else if (len == 15 && !memcmp(opt, "cache=writeback", 15)) {
			d->cache = DISK_CACHE_WRITEBACK;
		} else if (len == 10 && !memcmp(opt, "cache=none", 10)) {
			d->cache = DISK_CACHE_NONE;
		} else if (len == 12 && !memcmp(opt, "cache=unsafe", 12)) {
			d->cache = DISK_CACHE_UNSAFE;
		} else if (len == 10 && !memcmp(opt, "format=raw", 10)) {
			d->format = DISK_FORMAT_RAW;
		} else if (len == 12 && !memcmp(opt, "format=qcow2", 12)) {
			d->format = DISK_FORMAT_QCOW2;
		} else if (len == 14 && !memcmp(opt, "transport=mmio", 14)) {
			d->transport = VIRTIO_TRANSPORT_MMIO;
		} else if (len == 13 && !memcmp(opt, "transport=pci", 13)) {
			d->transport = VIRTIO_TRANSPORT_PCI;
		} else if (len > 7 && !memcmp(opt, "serial=", 7)) {
			if (len - 7 > VMRUN_DISK_SERIAL_MAX)
				return errmsg(-EINVAL, err, errlen,
					      "--disk %s: serial longer than %d bytes", d->path,
					      VMRUN_DISK_SERIAL_MAX);
			memcpy(d->serial, opt + 7, len - 7);
		} else {
			return errmsg(-EINVAL, err, errlen,
				      "--disk %s: unknown option '%.*s' (readonly, cache=writeback|none|unsafe, serial=ID, format=raw|qcow2, transport=mmio|pci)",
				      d->path, (int)len, opt);
		}
	}
	return 0;
}


/* --net tap=NAME[,mac=XX:XX:XX:XX:XX:XX][,queues=N][,transport=mmio|pci] */
static int parse_net(const char *spec, struct net_config *n, char *err, size_t errlen)
{
	const char *p = spec;

	memset(n, 0, sizeof(*n));
	n->spec = spec;
	n->transport = VIRTIO_TRANSPORT_PCI; /* as for --disk */
	while (*p) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);

		if (len > 4 && !memcmp(p, "tap=", 4)) {
			if (len - 4 >= sizeof(n->tap))
				return errmsg(-EINVAL, err, errlen,
					      "--net: tap name longer than %zu bytes", sizeof(n->tap) - 1);
			memcpy(n->tap, p + 4, len - 4);
			n->tap[len - 4] = '\0';
		} else if (len >= 4 && !memcmp(p, "mac=", 4)) {
			unsigned v[6];
			int used = 0;

			if (len != 4 + 17 ||
			    sscanf(p + 4, "%2x:%2x:%2x:%2x:%2x:%2x%n", &v[0], &v[1], &v[2], &v[3], &v[4],
				   &v[5], &used) < 6 || used != 17)
				return errmsg(-EINVAL, err, errlen, "--net: bad mac '%.*s' (XX:XX:XX:XX:XX:XX)",
					      (int)len - 4, p + 4);
			for (int i = 0; i < 6; i++)
				n->mac[i] = (uint8_t)v[i];
			if (n->mac[0] & 1)
				return errmsg(-EINVAL, err, errlen, "--net: mac %.*s is a multicast address",
					      (int)len - 4, p + 4);
			n->mac_given = true;
		} else if (len > 7 && !memcmp(p, "queues=", 7)) {
			char num[8] = "";
			char *rest;
			unsigned long q;

			if (len - 7 < sizeof(num))
				memcpy(num, p + 7, len - 7);
			q = strtoul(num, &rest, 10);
			if (!num[0] || *rest || num[0] < '0' || num[0] > '9' || q < 1 ||
			    q > VMRUN_MAX_NET_QUEUES)
				return errmsg(-EINVAL, err, errlen,
					      "--net: queues=%.*s: a number of queue pairs, 1 to %d",
					      (int)len - 7, p + 7, VMRUN_MAX_NET_QUEUES);
			n->queues = (unsigned)q;
		} else if (len == 14 && !memcmp(p, "transport=mmio", 14)) {
			n->transport = VIRTIO_TRANSPORT_MMIO;
		} else if (len == 13 && !memcmp(p, "transport=pci", 13)) {
			n->transport = VIRTIO_TRANSPORT_PCI;
		} else {
			return errmsg(-EINVAL, err, errlen,
				      "--net: unknown option '%.*s' (tap=NAME, mac=XX:XX:XX:XX:XX:XX,"
				      " queues=N, transport=mmio|pci)", (int)len, p);
		}
		p += len + (end ? 1 : 0);
	}
	if (!n->tap[0])
		return errmsg(-EINVAL, err, errlen, "--net: tap=NAME is required");
	return 0;
}

/* --kernel-decompress / --initrd-decompress: "host" or "guest". */
static int parse_decompress(const char *name, const char *val, enum kernel_decompress *out,
			    char *err, size_t errlen)
{
	if (!strcmp(val, "host"))
		*out = KERNEL_DECOMPRESS_HOST;
	else if (!strcmp(val, "guest"))
		*out = KERNEL_DECOMPRESS_GUEST;
	else
		return errmsg(-EINVAL, err, errlen, "--%s: invalid value '%s' (host or guest)", name,
			      val);
	return 0;
}

static int apply_option(struct vm_config *cfg, const char *name, const char *val,
			char *err, size_t errlen)
{
	uint64_t size;
	unsigned long n;
	int r;

	if (!strcmp(name, "kernel")) {
		if (!*val)
			return errmsg(-EINVAL, err, errlen, "--kernel: empty path");
		cfg->kernel_path = val;
	} else if (!strcmp(name, "initrd")) {
		if (!*val)
			return errmsg(-EINVAL, err, errlen, "--initrd: empty path");
		cfg->initrd_path = val;
	} else if (!strcmp(name, "cmdline")) {
		if (strlen(val) >= VMRUN_CMDLINE_MAX)
			return errmsg(-EINVAL, err, errlen, "--cmdline: longer than %d bytes",
				    VMRUN_CMDLINE_MAX - 1);
		cfg->cmdline = val;
	} else if (!strcmp(name, "mem")) {
		r = cli_parse_size(val, &size);
		if (r == -ERANGE || (!r && size > VMRUN_MAX_MEM))
			return errmsg(-EINVAL, err, errlen, "--mem: '%s' is too large (at most 1T)", val);
		if (r)
			return errmsg(-EINVAL, err, errlen,
				    "--mem: invalid size '%s' (a number with an optional K, M or G suffix)",
				    val);
		if (size < VMRUN_MIN_MEM)
			return errmsg(-EINVAL, err, errlen, "--mem: '%s' is too small (at least 8M)", val);
		if (size & 0xfff)
			return errmsg(-EINVAL, err, errlen, "--mem: '%s' is not a multiple of 4K", val);
		cfg->mem_size = size;
	} else if (!strcmp(name, "cpus")) {
		r = parse_uint(val, VMRUN_MAX_CPUS, &n);
		if (r || n == 0)
			return errmsg(-EINVAL, err, errlen, "--cpus: invalid count '%s' (1 to %d)", val,
				    VMRUN_MAX_CPUS);
		cfg->cpus = (unsigned)n;
	} else if (!strcmp(name, "console")) {
		cfg->console_log = NULL;
		if (!strcmp(val, "stdio")) {
			cfg->console = CONSOLE_STDIO;
		} else if (!strncmp(val, "stdio,log=", 10) && val[10]) {
			cfg->console = CONSOLE_STDIO;
			cfg->console_log = val + 10;
		} else if (!strcmp(val, "none")) {
			cfg->console = CONSOLE_NONE;
		} else if (!strncmp(val, "file:", 5) && val[5]) {
			cfg->console = CONSOLE_FILE;
			cfg->console_path = val + 5;
		} else {
			return errmsg(-EINVAL, err, errlen,
				    "--console: invalid value '%s' (stdio, stdio,log=PATH, file:PATH or none)",
				    val);
		}
	} else if (!strcmp(name, "timeout")) {
		char *end;
		double t;

		errno = 0;
		t = strtod(val, &end);
		if (end == val || *end || errno || !isfinite(t) || t <= 0 || t > 1e9)
			return errmsg(-EINVAL, err, errlen,
				    "--timeout: invalid value '%s' (seconds, greater than 0)", val);
		cfg->timeout_s = t;
	} else if (!strcmp(name, "seccomp")) {
		if (sandbox_parse_mode(val, &cfg->seccomp))
			return errmsg(-EINVAL, err, errlen, "--seccomp: '%s' is not on, log or off", val);
	} else if (!strcmp(name, "user")) {
		/* Resolved (passwd, group) when the VM starts: vm_run() */
		if (!*val || *val == ':' || strchr(val, ':') != strrchr(val, ':') ||
		    val[strlen(val) - 1] == ':')
			return errmsg(-EINVAL, err, errlen, "--user: '%s' is not USER[:GROUP]", val);
		cfg->user = val;
	} else if (!strcmp(name, "acpi")) {
		if (strcmp(val, "on") && strcmp(val, "off"))
			return errmsg(-EINVAL, err, errlen, "--acpi: invalid value '%s' (on or off)", val);
		cfg->no_acpi = !strcmp(val, "off");
	} else if (!strcmp(name, "exit-json")) {
		if (!*val)
			return errmsg(-EINVAL, err, errlen, "--exit-json: empty path");
		cfg->exit_json = val;
	} else if (!strcmp(name, "api-sock")) {
		if (!*val)
			return errmsg(-EINVAL, err, errlen, "--api-sock: empty path");
		cfg->api_sock = val;
	} else if (!strcmp(name, "boot")) {
		if (!strcmp(val, "auto"))
			cfg->boot = BOOT_AUTO;
		else if (!strcmp(val, "linux64"))
			cfg->boot = BOOT_LINUX64;
		else if (!strcmp(val, "pvh"))
			cfg->boot = BOOT_PVH;
		else
			return errmsg(-EINVAL, err, errlen, "--boot: invalid value '%s' (auto, linux64 or pvh)",
				    val);
	} else if (!strcmp(name, "kernel-decompress")) {
		return parse_decompress(name, val, &cfg->kernel_decompress, err, errlen);
	} else if (!strcmp(name, "initrd-decompress")) {
		return parse_decompress(name, val, &cfg->initrd_decompress, err, errlen);
	} else if (!strcmp(name, "net")) {
		if (cfg->n_nics == VMRUN_MAX_NICS)
			return errmsg(-EINVAL, err, errlen, "--net: at most %d interfaces", VMRUN_MAX_NICS);
		r = parse_net(val, &cfg->nics[cfg->n_nics], err, errlen);
		if (r)
			return r;
		cfg->n_nics++;
	} else if (!strcmp(name, "restore")) {
		if (!*val)
			return errmsg(-EINVAL, err, errlen, "--restore: empty path");
		cfg->restore_dir = val;
	} else if (!strcmp(name, "incoming")) {
		if (strncmp(val, "tcp:", 4) || !strchr(val + 4, ':'))
			return errmsg(-EINVAL, err, errlen, "--incoming: '%s' is not tcp:ADDR:PORT", val);
		cfg->incoming = val;
	} else if (!strcmp(name, "migration-key")) {
		if (!*val)
			return errmsg(-EINVAL, err, errlen, "--migration-key: empty path");
		cfg->migration_key = val;
	} else if (!strcmp(name, "restore-disk") || !strcmp(name, "restore-tap")) {
		bool disk = !strcmp(name, "restore-disk");
		unsigned max = disk ? VMRUN_MAX_DISKS : VMRUN_MAX_NICS;
		const char *eq = strchr(val, '=');
		char num[8] = "";
		unsigned long k;

		if (!eq || eq == val || (size_t)(eq - val) >= sizeof(num) || !eq[1])
			return errmsg(-EINVAL, err, errlen, "--%s: '%s' is not N=%s", name, val,
				      disk ? "PATH" : "NAME");
		memcpy(num, val, (size_t)(eq - val));
		if (parse_uint(num, max - 1, &k))
			return errmsg(-EINVAL, err, errlen, "--%s: '%s': N is 0 to %u", name, num,
				      max - 1);
		if (disk)
			cfg->restore_disk[k] = eq + 1;
		else if (strlen(eq + 1) >= sizeof(cfg->nics[0].tap))
			return errmsg(-EINVAL, err, errlen, "--restore-tap: name longer than %zu bytes",
				      sizeof(cfg->nics[0].tap) - 1);
		else
			cfg->restore_tap[k] = eq + 1;
	} else if (!strcmp(name, "disk")) {
		if (cfg->n_disks == VMRUN_MAX_DISKS)
			return errmsg(-EINVAL, err, errlen, "--disk: at most %d disks", VMRUN_MAX_DISKS);
		r = parse_disk(val, &cfg->disks[cfg->n_disks], err, errlen);
		if (r)
			return r;
		cfg->n_disks++;
	} else {
		return errmsg(-EINVAL, err, errlen, "unknown option '--%s' (see vmrun --help)", name);
	}
	return 0;
}

/* Options that shape the machine: a restore takes them from the snapshot. */
static bool is_machine_option(const char *name)
{
	static const char *const machine[] = { "kernel", "initrd", "cmdline", "mem", "cpus", "boot",
					       "kernel-decompress", "initrd-decompress", "disk",
					       "net", "acpi", "no-pvpanic", NULL };

	for (const char *const *m = machine; *m; m++)
		if (!strcmp(*m, name))
			return true;
	return false;
}

/* cli_parse() without --config: @argv is the whole command line. */
static int parse_argv(int argc, char *const argv[], struct vm_config *cfg, char *err,
		      size_t errlen)
{
	char machine_name[32] = "";

	memset(cfg, 0, sizeof(*cfg));
	cfg->mem_size = VMRUN_DEFAULT_MEM;
	cfg->cpus = 1;
	cfg->console = CONSOLE_STDIO;
	cfg->boot = BOOT_AUTO;
	cfg->kernel_decompress = KERNEL_DECOMPRESS_HOST;
	cfg->initrd_decompress = KERNEL_DECOMPRESS_HOST;

	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		const char *name, *eq, *val = NULL;
		char namebuf[32];
		size_t len;
		int r;

		if (strncmp(arg, "--", 2) || !arg[2])
			return errmsg(-EINVAL, err, errlen, "unexpected argument '%s' (see vmrun --help)", arg);
		name = arg + 2;
		eq = strchr(name, '=');
		len = eq ? (size_t)(eq - name) : strlen(name);
		if (len >= sizeof(namebuf))
			return errmsg(-EINVAL, err, errlen, "unknown option '%.40s' (see vmrun --help)", arg);
		memcpy(namebuf, name, len);
		namebuf[len] = '\0';

		if (!option_takes_value(namebuf, len)) {
			if (eq && (!strcmp(namebuf, "help") || !strcmp(namebuf, "version")))
				return errmsg(-EINVAL, err, errlen, "--%s takes no value", namebuf);
			if (!strcmp(namebuf, "help"))
				return CLI_HELP;
			if (!strcmp(namebuf, "version"))
				return CLI_VERSION;
			if (!strcmp(namebuf, "paused")) {
				if (eq)
					return errmsg(-EINVAL, err, errlen, "--%s takes no value", namebuf);
				cfg->start_paused = true;
				continue;
			}
			if (!strcmp(namebuf, "quiet")) {
				if (eq)
					return errmsg(-EINVAL, err, errlen, "--%s takes no value", namebuf);
				cfg->quiet = true;
				continue;
			}
			if (!strcmp(namebuf, "no-pvpanic")) {
				if (eq)
					return errmsg(-EINVAL, err, errlen, "--%s takes no value", namebuf);
				cfg->no_pvpanic = true;
				if (!machine_name[0]) /* the machine's shape: not with --restore */
					snprintf(machine_name, sizeof(machine_name), "%s", namebuf);
				continue;
			}
			if (!strcmp(namebuf, "no-nested-workarounds")) {
				if (eq)
					return errmsg(-EINVAL, err, errlen, "--%s takes no value", namebuf);
				cfg->no_nested_workarounds = true;
				continue;
			}
			return errmsg(-EINVAL, err, errlen, "unknown option '--%s' (see vmrun --help)", namebuf);
		}
		if (eq) {
			val = eq + 1;
		} else {
			if (i + 1 >= argc)
				return errmsg(-EINVAL, err, errlen, "--%s needs a value", namebuf);
			val = argv[++i];
		}
		r = apply_option(cfg, namebuf, val, err, errlen);
		if (r)
			return r;
		if (is_machine_option(namebuf) && !machine_name[0])
			snprintf(machine_name, sizeof(machine_name), "%s", namebuf);
	}
	if (cfg->restore_dir && cfg->incoming)
		return errmsg(-EINVAL, err, errlen, "--restore and --incoming exclude each other");
	if (cfg->restore_dir || cfg->incoming) {
		if (machine_name[0])
			return errmsg(-EINVAL, err, errlen,
				      "--%s cannot be given with --%s: the machine comes from the %s",
				      machine_name, cfg->incoming ? "incoming" : "restore",
				      cfg->incoming ? "migration stream" : "snapshot");
		return CLI_OK;
	}
	for (unsigned k = 0; k < VMRUN_MAX_DISKS; k++)
		if (cfg->restore_disk[k])
			return errmsg(-EINVAL, err, errlen, "--restore-disk needs --restore DIR or --incoming");
	for (unsigned k = 0; k < VMRUN_MAX_NICS; k++)
		if (cfg->restore_tap[k])
			return errmsg(-EINVAL, err, errlen, "--restore-tap needs --restore DIR or --incoming");
	if (!cfg->kernel_path)
		return errmsg(-EINVAL, err, errlen, "--kernel PATH is required (see vmrun --help)");
	return CLI_OK;
}

/* ---- --config FILE ---- */

/* What a --config file leaves behind for the vm_config it filled: the parsed
 * JSON (its strings are option values), the argv built from it and the
 * command line, and the texts made for it ("--KEY", numbers). */
struct cli_store {
	json_t *json;
	char **argv;     /* argc + 1 entries, NULL-terminated; borrowed strings */
	int argc, cap;
	char **texts;    /* owned: "--KEY" names and numbers as text */
	size_t n_texts;
};

static void store_free(struct cli_store *st)
{
	if (!st)
		return;
	json_decref(st->json);
	for (size_t i = 0; i < st->n_texts; i++)
		free(st->texts[i]);
	free(st->texts);
	free(st->argv);
	free(st);
}

void cli_config_free(struct vm_config *cfg)
{
	store_free(cfg->cli_owned);
	cfg->cli_owned = NULL;
}

static int store_push(struct cli_store *st, char *arg)
{
	if (st->argc + 2 > st->cap) {
		int cap = st->cap ? st->cap * 2 : 32;
		char **a = realloc(st->argv, (size_t)cap * sizeof(*a));

		if (!a)
			return -ENOMEM;
		st->argv = a;
		st->cap = cap;
	}
	st->argv[st->argc++] = arg;
	st->argv[st->argc] = NULL;
	return 0;
}

/* A copy of @text kept in @st (freed with it), or NULL. */
static char *store_text(struct cli_store *st, const char *text)
{
	char **t = realloc(st->texts, (st->n_texts + 1) * sizeof(*t));

	if (!t)
		return NULL;
	st->texts = t;
	t[st->n_texts] = strdup(text);
	return t[st->n_texts] ? t[st->n_texts++] : NULL;
}

/* A JSON number as an option's text, kept in @st. */
static char *store_number(struct cli_store *st, const json_t *v)
{
	char buf[40];

	if (json_is_integer(v))
		snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
	else
		snprintf(buf, sizeof(buf), "%.17g", json_real_value(v));
	return store_text(st, buf);
}

static const char *json_type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: case JSON_REAL: return "a number";
	case JSON_TRUE: case JSON_FALSE: return "a boolean";
	default: return "null";
	}
}

/* The repeatable options: given on the command line, each replaces the
 * file's list. */
static const char *const repeatable_names[4] = { "disk", "net", "restore-disk", "restore-tap" };

static bool option_is_repeatable(const char *name)
{
	for (unsigned k = 0; k < 4; k++)
		if (!strcmp(repeatable_names[k], name))
			return true;
	return false;
}

/* Options whose value may be written as a JSON number. */
static bool option_is_numeric(const char *name)
{
	return !strcmp(name, "mem") || !strcmp(name, "cpus") || !strcmp(name, "timeout");
}

/* The command line as far as --config cares: where the file is, and which
 * repeatable options it gives (those replace the file's lists). */
struct cli_scan {
	const char *config;     /* NULL: no --config */
	int config_args;        /* argv entries --config takes (1 or 2) */
	bool given[4];          /* by repeatable_names[] */
};

/* Walk @argv as parse_argv() will (an option that takes a value and has no
 * '=' consumes the next entry). */
static int scan_argv(int argc, char *const argv[], struct cli_scan *sc, char *err, size_t errlen)
{
	memset(sc, 0, sizeof(*sc));
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i], *eq;
		size_t len;

		if (strncmp(arg, "--", 2) || !arg[2])
			continue;
		eq = strchr(arg + 2, '=');
		len = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
		if (len == 6 && !memcmp(arg + 2, "config", 6)) {
			if (sc->config)
				return errmsg(-EINVAL, err, errlen, "--config given twice");
			if (!eq && i + 1 >= argc)
				return errmsg(-EINVAL, err, errlen, "--config needs a value");
			sc->config = eq ? eq + 1 : argv[i + 1];
			sc->config_args = eq ? 1 : 2;
			if (!*sc->config)
				return errmsg(-EINVAL, err, errlen, "--config: empty path");
		} else {
			for (unsigned k = 0; k < 4; k++)
				if (strlen(repeatable_names[k]) == len &&
				    !memcmp(arg + 2, repeatable_names[k], len))
					sc->given[k] = true;
		}
		if (!eq && option_takes_value(arg + 2, len))
			i++;
		else if (!eq && len == 6 && !memcmp(arg + 2, "config", 6))
			i++;
	}
	return 0;
}

static bool scan_gives(const struct cli_scan *sc, const char *name)
{
	for (unsigned k = 0; k < 4; k++)
		if (!strcmp(repeatable_names[k], name))
			return sc->given[k];
	return false;
}

/* One valued key of the file: check its type and value, then append
 * "--KEY VALUE" to @st's argv unless the command line replaces it. */
static int config_add_value(struct cli_store *st, const struct cli_scan *sc, const char *path,
			    const char *key, json_t *v, char *err, size_t errlen)
{
	bool repeatable = option_is_repeatable(key);
	size_t n = repeatable && json_is_array(v) ? json_array_size(v) : 1;
	struct vm_config scratch;
	char e2[384], opt[40];

	memset(&scratch, 0, sizeof(scratch));
	for (size_t i = 0; i < n; i++) {
		json_t *item = json_is_array(v) && repeatable ? json_array_get(v, i) : v;
		char *val;

		if (json_is_string(item)) {
			val = (char *)json_string_value(item);
		} else if (json_is_number(item) && option_is_numeric(key)) {
			val = store_number(st, item);
			if (!val)
				return errmsg(-ENOMEM, err, errlen, "--config %s: out of memory", path);
		} else if (item != v) {
			return errmsg(-EINVAL, err, errlen,
				      "--config %s: key '%s': item %zu is %s, not a string", path, key, i,
				      json_type_name(item));
		} else {
			return errmsg(-EINVAL, err, errlen, "--config %s: key '%s': expected %s, not %s",
				      path, key,
				      repeatable		? "a string or an array of strings" :
				      option_is_numeric(key) ? "a number or a string" :
							       "a string",
				      json_type_name(item));
		}
		/* The value as the option would take it, with the file named. */
		if (apply_option(&scratch, key, val, e2, sizeof(e2)))
			return errmsg(-EINVAL, err, errlen, "--config %s: %s", path, e2);
		if (scan_gives(sc, key))
			continue; /* the command line's list replaces the file's */
		snprintf(opt, sizeof(opt), "--%s", key);
		if (store_push(st, store_text(st, opt)) || !st->argv[st->argc - 1] ||
		    store_push(st, val))
			return errmsg(-ENOMEM, err, errlen, "--config %s: out of memory", path);
	}
	return 0;
}

/* One key of the file that takes no value: a flag, true or false. */
static int config_add_flag(struct cli_store *st, const char *path, const char *key, json_t *v,
			   char *err, size_t errlen)
{
	char opt[48], e2[384];
	char *probe[] = { (char *)"vmrun", opt, (char *)"--kernel", (char *)"k", NULL };
	struct vm_config scratch;
	int r;

	/* Is it one of parse_argv()'s flags?  Ask it, with a kernel so that
	 * nothing else can fail.  A key with '=' names no option: as "--KEY"
	 * it would be an option with its value ("kernel=x"), past the checks
	 * of config_add_value(). */
	if (strlen(key) + 3 > sizeof(opt) || strchr(key, '='))
		r = -EINVAL;
	else {
		snprintf(opt, sizeof(opt), "--%s", key);
		r = parse_argv(4, probe, &scratch, e2, sizeof(e2));
	}
	if (r != CLI_OK)
		return errmsg(-EINVAL, err, errlen,
			      "--config %s: unknown key '%.40s' (the keys are the long options' names, "
			      "see vmrun --help)", path, key);
	if (!json_is_boolean(v))
		return errmsg(-EINVAL, err, errlen, "--config %s: key '%s': expected true or false, not %s",
			      path, key, json_type_name(v));
	if (json_is_true(v)) {
		char *text = store_text(st, opt);

		if (!text || store_push(st, text))
			return errmsg(-ENOMEM, err, errlen, "--config %s: out of memory", path);
	}
	return 0;
}

/* @sc->config's object as options, into @st's argv (after argv[0]). */
static int config_load(struct cli_store *st, const struct cli_scan *sc, char *err, size_t errlen)
{
	const char *path = sc->config, *key;
	json_error_t jerr;
	json_t *v;
	int r;

	st->json = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (!st->json) {
		if (jerr.line > 0)
			return errmsg(-EINVAL, err, errlen, "--config %s: line %d column %d: %s", path,
				      jerr.line, jerr.column, jerr.text);
		return errmsg(-EINVAL, err, errlen, "--config %s: %s", path, jerr.text);
	}
	if (!json_is_object(st->json))
		return errmsg(-EINVAL, err, errlen, "--config %s: expected a JSON object, not %s", path,
			      json_type_name(st->json));
	json_object_foreach(st->json, key, v) {
		if (!strcmp(key, "config"))
			return errmsg(-EINVAL, err, errlen,
				      "--config %s: key 'config': a configuration file cannot name another",
				      path);
		if (option_takes_value(key, strlen(key)))
			r = config_add_value(st, sc, path, key, v, err, errlen);
		else
			r = config_add_flag(st, path, key, v, err, errlen);
		if (r)
			return r;
	}
	return 0;
}

/* cli_parse() but for its message's last touch. */
static int parse_all(int argc, char *const argv[], struct vm_config *cfg, char *err,
		     size_t errlen)
{
	struct cli_scan sc;
	struct cli_store *st;
	int r;

	cfg->cli_owned = NULL;
	r = scan_argv(argc, argv, &sc, err, errlen);
	if (r)
		return r;
	if (!sc.config)
		return parse_argv(argc, argv, cfg, err, errlen);

	/* argv[0], the file's options, then the command line's without
	 * --config: a later option overrides an earlier one. */
	st = calloc(1, sizeof(*st));
	if (!st || store_push(st, argv[0]))
		r = errmsg(-ENOMEM, err, errlen, "out of memory");
	if (!r)
		r = config_load(st, &sc, err, errlen);
	for (int i = 1; i < argc && !r; i++) {
		const char *arg = argv[i];

		if (!strcmp(arg, "--config") && sc.config_args == 2 &&
		    sc.config == argv[i + 1]) {
			i++;
			continue;
		}
		if (!strncmp(arg, "--config=", 9) && sc.config_args == 1 && sc.config == arg + 9)
			continue;
		if (store_push(st, argv[i]))
			r = errmsg(-ENOMEM, err, errlen, "out of memory");
	}
	if (!r)
		r = parse_argv(st->argc, st->argv, cfg, err, errlen);
	if (r != CLI_OK) {
		store_free(st);
		return r;
	}
	cfg->cli_owned = st;
	return CLI_OK;
}

/* The messages quote values from the command line and the file as given;
 * a control character among them (a newline in an argument, or "\n" in a
 * JSON string) would break the one line cli_parse() promises: each is
 * shown as '?'. */
static void one_line(char *err, size_t errlen)
{
	for (size_t i = 0; i < errlen && err[i]; i++)
		if ((unsigned char)err[i] < 0x20 || err[i] == 0x7f)
			err[i] = '?';
}

int cli_parse(int argc, char *const argv[], struct vm_config *cfg, char *err, size_t errlen)
{
	int r = parse_all(argc, argv, cfg, err, errlen);

	if (r < 0)
		one_line(err, errlen);
	return r;
}

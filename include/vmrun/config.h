/* struct vm_config: everything the command line says about one VM.
 * Filled by cli_parse(), read by vm_build(); holds no logic. */
#ifndef VMRUN_CONFIG_H
#define VMRUN_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "vmrun/sandbox.h"

#define VMRUN_DEFAULT_MEM (256ull << 20)
#define VMRUN_MIN_MEM (8ull << 20)
#define VMRUN_MAX_MEM (1ull << 40)
/* xAPIC IDs are 8 bits: CPUs take 0..253, the IOAPIC 254, and 255 is the
 * broadcast ID. */
#define VMRUN_MAX_CPUS 254
#define VMRUN_MAX_DISKS 8
#define VMRUN_MAX_NICS 2
#define VMRUN_CMDLINE_MAX 4096 /* including the terminating NUL */

enum console_kind {
	CONSOLE_STDIO, /* output to stdout, input from stdin */
	CONSOLE_FILE,  /* output to a file, no input */
	CONSOLE_NONE,  /* output discarded, no input */
};

enum boot_protocol {
	BOOT_AUTO,    /* ELF64: the Linux 64-bit entry (e_entry) */
	BOOT_LINUX64, /* Linux x86-64 boot protocol, boot_params in RSI */
	BOOT_PVH,     /* Xen PVH: 32-bit entry from the ELF note, hvm_start_info in EBX */
};

/* Who decompresses a bzImage's payload. */
enum kernel_decompress {
	KERNEL_DECOMPRESS_HOST,  /* vmrun, into the vmlinux ELF it then loads (default) */
	KERNEL_DECOMPRESS_GUEST, /* the kernel's own decompressor, from its 64-bit entry */
};

#define VMRUN_DISK_PATH_MAX 1024
#define VMRUN_DISK_SERIAL_MAX 20 /* virtio-blk GET_ID: 20 bytes */

/* How a disk's writes reach the image (vmrun/block.h's enum blk_cache). */
enum disk_cache {
	DISK_CACHE_WRITEBACK, /* page cache; the guest's FLUSH is fdatasync (default) */
	DISK_CACHE_NONE,      /* O_DIRECT; FLUSH is fdatasync */
	DISK_CACHE_UNSAFE,    /* page cache; FLUSH is ignored */
};

/* The image format (vmrun/block.h's enum blk_format). */
enum disk_format {
	DISK_FORMAT_AUTO, /* probed: qcow2 by its magic, else raw */
	DISK_FORMAT_RAW,
	DISK_FORMAT_QCOW2,
};

/* How a virtio device reaches the guest (--disk/--net transport=). */
enum virtio_transport_kind {
	/* The values are recorded in snapshots: never renumber. */
	VIRTIO_TRANSPORT_MMIO, /* virtio-mmio, declared on the kernel command line */
	VIRTIO_TRANSPORT_PCI,  /* virtio-pci (modern) on PCI bus 0: the command line's default */
};

/* --disk PATH[,readonly][,cache=writeback|none|unsafe][,serial=ID][,format=raw|qcow2]
 * [,transport=mmio|pci] */
struct disk_config {
	const char *spec; /* as given on the command line (points into argv) */
	char path[VMRUN_DISK_PATH_MAX];
	bool readonly;
	enum disk_cache cache;
	enum disk_format format;
	char serial[VMRUN_DISK_SERIAL_MAX + 1]; /* "" when not given */
	enum virtio_transport_kind transport;
};

/* --net tap=NAME[,mac=MAC][,queues=N][,transport=mmio|pci] */
#define VMRUN_MAX_NET_QUEUES 8 /* queue pairs per NIC (VIRTIO_NET_MAX_PAIRS) */
struct net_config {
	const char *spec;  /* as given (points into argv) */
	char tap[16];      /* IFNAMSIZ */
	uint8_t mac[6];
	bool mac_given;
	unsigned queues;   /* 0: one pair */
	enum virtio_transport_kind transport;
};

struct vm_config {
	const char *kernel_path;  /* required */
	const char *initrd_path;  /* NULL: none */
	const char *cmdline;      /* NULL: empty */
	uint64_t mem_size;        /* bytes, a multiple of 4 KiB */
	unsigned cpus;            /* 1..VMRUN_MAX_CPUS */
	enum console_kind console;
	const char *console_path; /* CONSOLE_FILE only */
	const char *console_log;  /* CONSOLE_STDIO: also copy output here; NULL: no */
	double timeout_s;         /* 0: none */
	const char *api_sock;     /* NULL: no control socket */
	bool no_nested_workarounds; /* --no-nested-workarounds (vmrun/nested.h) */
	enum boot_protocol boot;
	enum kernel_decompress kernel_decompress; /* bzImage only */
	enum kernel_decompress initrd_decompress; /* gzip initrd: inflated by vmrun or the guest */
	unsigned n_disks;
	struct disk_config disks[VMRUN_MAX_DISKS];
	unsigned n_nics;
	struct net_config nics[VMRUN_MAX_NICS];
	/* --restore DIR: build from a snapshot (vmrun/snapshot.h); the machine
	 * comes from it, so the options above that shape a machine are
	 * refused with it. */
	const char *restore_dir;
	const char *restore_disk[VMRUN_MAX_DISKS]; /* --restore-disk N=PATH */
	const char *restore_tap[VMRUN_MAX_NICS];   /* --restore-tap N=NAME */
	bool start_paused;        /* --paused: vCPUs wait for "resume" */
	/* --incoming tcp:ADDR:PORT: build from a live migration (vmrun/migrate.h),
	 * with the same run-time options and overrides as --restore. */
	const char *incoming;
	const char *migration_key; /* --migration-key FILE; NULL: none */
	const char *exit_json;    /* --exit-json FILE: the run's verdict as JSON; NULL: none */
	bool quiet;               /* --quiet: no warnings or information lines */
	/* The machine's firmware tables and panic device (vmrun/acpi.h,
	 * vmrun/pvpanic.h): false means present, the default. */
	bool no_acpi;             /* --acpi off: the MP table only */
	bool no_pvpanic;          /* --no-pvpanic */
	/* Confinement after set-up (vmrun/sandbox.h) */
	enum sandbox_seccomp seccomp; /* --seccomp=on|log|off, default on */
	const char *user;         /* --user USER[:GROUP]; NULL: stay who we are */
	/* --config FILE: what the strings above point into when they came from
	 * the file (vmrun/cli.h: released by cli_config_free); NULL otherwise. */
	void *cli_owned;
};

#endif

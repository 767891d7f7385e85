/* Whole-VM snapshots (src/snapshot/snapshot.c): a directory with the
 * machine's state (state.dtb: the state stream of vmrun/state.h) and its
 * memory (memory.bin, by guest-physical address, sparse), with each disk
 * frozen as a read-only base beside its image.
 *
 *   save     vm_save() on a paused, quiesced VM (the control socket's
 *            "save" command pauses and resumes around it)
 *   restore  snapshot_open() checks everything and yields the machine's
 *            configuration; vm_build() builds that shape over the memory
 *            file and loads the state; the VM then runs as any other.
 *   inspect  `vmrun snapshot show DIR [--json]` (snapshot_main()). */
#ifndef VMRUN_SNAPSHOT_H
#define VMRUN_SNAPSHOT_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmrun/block.h"
#include "vmrun/config.h"
#include "vmrun/state.h"

struct vm;

#define SNAPSHOT_STATE_FILE "state.dtb"
#define SNAPSHOT_MEMORY_FILE "memory.bin"

/* Run-time choices for a restore: the options that do not change the
 * machine, and where its disks and taps are on this host. */
struct snapshot_overrides {
	const char *disk_base[VMRUN_MAX_DISKS]; /* --restore-disk N=PATH, or NULL */
	const char *tap[VMRUN_MAX_NICS];        /* --restore-tap N=NAME, or NULL */
};

/* An opened, checked snapshot: owns the state blob (r points into it), the
 * memory file and the configuration vm_build() gets. */
struct snapshot {
	char dir[PATH_MAX];
	void *blob;
	size_t blob_len;
	struct state_reader r;
	int mem_fd;
	struct vm_config cfg;  /* its strings point into the fields below */
	char disk_paths[VMRUN_MAX_DISKS][VMRUN_DISK_PATH_MAX]; /* what the VM opens */
	bool overlay_created[VMRUN_MAX_DISKS];                 /* ours to remove on failure */
	/* Each frozen base's format as the save recorded it (AUTO: a snapshot
	 * from before "base-format", probed).  Never probed where recorded:
	 * a raw disk's guest may have written a qcow2 header into it. */
	enum blk_format base_format[VMRUN_MAX_DISKS];
	char kernel_label[PATH_MAX + 16];
	/* An incoming migration (snapshot_from_stream()): RAM is anonymous
	 * (mem_fd -1) and filled by the stream, the disks are the shared
	 * images themselves, opened without a lock until the switch-over,
	 * and vm_build() stops after the shape: the state comes later. */
	bool incoming;
};

/* Open snapshot @dir for a restore with the run-time options of @runtime
 * (console, api_sock, timeout, no_nested_workarounds) and @ov.  Checks, in
 * this order and before anything is created: the state file (footer, CRC,
 * structure), its configuration, every disk's frozen base (present, same
 * size and fingerprint as at the save), the memory file's size.  Then it
 * creates each writable disk's new overlay inside @dir.  @s is caller
 * storage; snapshot_close() in any case, with @failed true after a failed
 * restore (the new overlays are removed again).  Returns 0 or -errno with
 * one line in @err. */
int snapshot_open(struct snapshot *s, const char *dir, const struct vm_config *runtime,
		  const struct snapshot_overrides *ov, char *err, size_t errlen)
	__attribute__((warn_unused_result));
void snapshot_close(struct snapshot *s, bool failed);

/* An incoming migration's machine: @blob (@len bytes, malloc'd, 8-byte
 * aligned; owned by @s from now on, even on failure) is the source's
 * description (snapshot_describe() and the CPUID table); @label names the
 * source in messages.  Checks it as snapshot_open() checks a state file,
 * takes the run-time options of @runtime and the disk paths and taps of
 * @ov.  Creates nothing.  Returns 0 or -errno with one line in @err;
 * snapshot_close() in any case. */
int snapshot_from_stream(struct snapshot *s, void *blob, size_t len, const char *label,
			 const struct vm_config *runtime, const struct snapshot_overrides *ov,
			 char *err, size_t errlen) __attribute__((warn_unused_result));

/* The machine's description into @w: /vmrun (format, version, arch),
 * /config (memory, vCPUs, each disk and NIC) and /memory (the RAM layout).
 * With @bases (a snapshot), each disk's frozen base and its fingerprint;
 * without (a migration), the disks are named by their images only. */
void snapshot_describe(struct vm *vm, struct state_writer *w,
		       char bases[][VMRUN_DISK_PATH_MAX + 32]);

/* Save the paused, quiesced VM into @dir (created; an existing directory
 * must be empty): freeze each writable disk (the running VM continues on a
 * new overlay), write state.dtb and memory.bin, fsync.  Runs on the event
 * loop thread.  On success returns 0 and a JSON object describing what
 * was written in *@result; on failure -errno with one line in @err, and
 * @dir holds nothing of this save. */
int vm_save(struct vm *vm, const char *dir, json_t **result, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* `vmrun snapshot show DIR [--json]`; @argv[0] is "snapshot".  Returns an
 * exit status (0, 2 usage, 4 failure). */
int snapshot_main(int argc, char *const argv[]);

#endif

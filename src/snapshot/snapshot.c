// SPDX-License-Identifier: MIT
/*
 * Whole-VM snapshots (include/vmrun/snapshot.h).
 *
 * A snapshot directory holds:
 *   state.dtb   the state stream (vmrun/state.h): /vmrun (who wrote it),
 *               /config (the machine: memory, vCPUs, disks, NICs), /memory
 *               (the layout of memory.bin), then every component's nodes
 *   memory.bin  guest RAM at file offset = guest-physical address (RAM above
 *               4 GiB at 4 GiB), zero pages left as holes
 * and each writable disk is frozen beside its image as FILE.base-N, the
 * running VM going on in a new overlay at FILE, exactly as a live overlay
 * snapshot does it.  A restore writes only into new overlays of its own
 * (DIR/disk<N>-<K>.qcow2), so one snapshot restores any number of times.
 *
 * Everything read back is hostile: the state stream checks itself
 * (state_reader_open()), and every value here is checked before use.
 */
#include "vmrun/snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "vmrun/exit_status.h"
#include "vmrun/fdio.h"
#include "vmrun/img.h"
#include "vmrun/log.h"
#include "vmrun/utf8.h"
#include "vmrun/vm.h"
#include "vmrun/x86.h"

#ifndef VMRUN_VERSION
#define VMRUN_VERSION "unknown"
#endif

#define CONFIG_VERSION 1
#define MEMORY_VERSION 1
/* A disk's fingerprint: CRC-32 of its first and last bytes (headers,
 * tables, the end of the data), with its size: a cheap check that a frozen
 * base is still the file the snapshot was taken on. */
#define FINGERPRINT_BYTES (64u << 10)

/* ---- disks ---- */

static int disk_fingerprint(const char *path, uint64_t *size, uint32_t *crc)
{
	uint8_t *buf = malloc(FINGERPRINT_BYTES);
	struct stat st;
	uint32_t c = 0;
	int fd, r = 0;

	if (!buf)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		free(buf);
		return -errno;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		r = fstat(fd, &st) < 0 ? -errno : -EINVAL;
		goto out;
	}
	*size = (uint64_t)st.st_size;
	for (int part = 0; part < 2; part++) {
		uint64_t len = *size < FINGERPRINT_BYTES ? *size : FINGERPRINT_BYTES;
		uint64_t off = part ? *size - len : 0;

		r = fd_pread_exact(fd, buf, (size_t)len, off);
		if (r)
			goto out;
		c = (uint32_t)crc32(c, buf, (uInt)len);
	}
	*crc = c;
out:
	close(fd);
	free(buf);
	return r;
}

/* ---- memory ---- */

/* Write guest RAM to @fd laid out by guest-physical address, skipping
 * zero pages (they stay holes) and, for anonymous RAM, pages the guest
 * never touched (mincore: never faulted in, so zero).  *@written gets the
 * bytes written. */
static int write_memory(const struct guest_mem *gm, int fd, uint64_t *written)
{
	const uint64_t chunk = 64ull << 20; /* pages examined per mincore() */
	unsigned char *resident = malloc(chunk >> GUEST_PAGE_SHIFT);
	const struct guest_mem_region *last = &gm->regions[gm->n_regions - 1];
	int r = 0;

	*written = 0;
	if (!resident)
		return -ENOMEM;
	if (ftruncate(fd, (off_t)(last->gpa + last->size)) < 0) {
		free(resident);
		return -errno;
	}
	for (unsigned i = 0; i < gm->n_regions && !r; i++) {
		const struct guest_mem_region *g = &gm->regions[i];

		for (uint64_t base = 0; base < g->size && !r; base += chunk) {
			uint64_t n = g->size - base < chunk ? g->size - base : chunk;
			uint64_t pages = n >> GUEST_PAGE_SHIFT, run_start = 0, run_len = 0;
			bool know_resident = !gm->file_backed &&
					     mincore(g->host + base, n, resident) == 0;

			for (uint64_t p = 0; p <= pages && !r; p++) {
				const uint8_t *page = g->host + base + (p << GUEST_PAGE_SHIFT);
				bool data = p < pages && (!know_resident || (resident[p] & 1)) &&
					    !guest_page_is_zero(page);

				if (data) {
					if (!run_len)
						run_start = p << GUEST_PAGE_SHIFT;
					run_len += GUEST_PAGE_SIZE;
					/* Large runs go out in pieces of a chunk. */
					if (p + 1 < pages)
						continue;
				}
				if (run_len) {
					r = fd_pwrite_full(fd, g->host + base + run_start,
							   (size_t)run_len, g->gpa + base + run_start);
					*written += run_len;
					run_len = 0;
				}
			}
		}
	}
	free(resident);
	return r;
}

/* ---- save ---- */

void snapshot_describe(struct vm *vm, struct state_writer *w,
		       char bases[][VMRUN_DISK_PATH_MAX + 32])
{
	const struct vm_config *cfg = vm->cfg;

	state_begin(w, 1, "/vmrun");
	state_put_u32(w, "format", STATE_FORMAT_VERSION);
	state_put_str(w, "vmrun-version", VMRUN_VERSION);
	state_put_str(w, "arch", "x86_64");

	state_begin(w, CONFIG_VERSION, "/config");
	state_put_u64(w, "mem-size", cfg->mem_size);
	state_put_u32(w, "cpus", cfg->cpus);
	state_put_u32(w, "disks", vm->n_blks);
	state_put_u32(w, "nics", vm->n_nets);
	/* The platform (ACPI's registers, pvpanic's port and PCI function):
	 * a snapshot without these properties predates them, and had neither. */
	state_put_u32(w, "acpi", !cfg->no_acpi);
	state_put_u32(w, "pvpanic", !cfg->no_pvpanic);
	for (unsigned i = 0; i < vm->n_blks; i++) {
		const struct disk_config *d = &cfg->disks[i];
		uint64_t size = 0;
		uint32_t crc = 0;
		int r = bases ? disk_fingerprint(bases[i], &size, &crc) : 0;

		if (r)
			state_fail(w, r);
		state_begin(w, CONFIG_VERSION, "/config/disk@%u", i);
		state_put_str(w, "image", d->path);
		state_put_str(w, "format", blk_format_name(blk_format(vm->blks[i].backend)));
		state_put_u32(w, "readonly", d->readonly);
		state_put_u32(w, "cache", (uint32_t)d->cache);
		state_put_str(w, "serial", d->serial);
		state_put_u32(w, "transport", (uint32_t)d->transport);
		if (bases) {
			/* The frozen base's format: a read-only disk is its own
			 * base; a writable one now runs on the overlay the freeze
			 * made, whose header names the base's format. */
			struct blk_image_info top;
			const char *base_format = blk_format_name(blk_format(vm->blks[i].backend));

			if (!d->readonly) {
				blk_get_info(vm->blks[i].backend, &top);
				base_format = top.backing_format[0] ? top.backing_format : NULL;
			}
			if (base_format)
				state_put_str(w, "base-format", base_format);
			state_put_str(w, "base", bases[i]);
			state_put_u64(w, "base-size", size);
			state_put_u32(w, "base-fingerprint", crc);
		}
	}
	for (unsigned j = 0; j < vm->n_nets; j++) {
		state_begin(w, CONFIG_VERSION, "/config/nic@%u", j);
		state_put_str(w, "tap", cfg->nics[j].tap);
		state_put_bytes(w, "mac", vm->nets[j].mac, 6);
		state_put_u32(w, "queues", vm->nets[j].queue_pairs);
		state_put_u32(w, "transport", (uint32_t)cfg->nics[j].transport);
	}

	state_begin(w, MEMORY_VERSION, "/memory");
	state_put_u64(w, "size", vm->mem.ram_size);
	state_put_str(w, "file", SNAPSHOT_MEMORY_FILE);
	for (unsigned i = 0; i < vm->mem.n_regions; i++) {
		uint64_t reg[2] = { vm->mem.regions[i].gpa, vm->mem.regions[i].size };

		state_begin(w, MEMORY_VERSION, "/memory/region@%u", i);
		state_put_u64s(w, "reg", reg, 2);
	}
}

/* The whole state stream of the paused VM: the description, then every
 * component's nodes. */
static int state_blob(struct vm *vm, char bases[][VMRUN_DISK_PATH_MAX + 32], void **blob,
		      size_t *len, char *err, size_t errlen)
{
	struct state_writer w;
	int r = state_writer_init(&w);

	if (!r) {
		snapshot_describe(vm, &w, bases);
		for (unsigned i = 0; i < vm->n_comps; i++)
			if (vm->comps[i].ops->save)
				vm->comps[i].ops->save(vm->comps[i].obj, &w);
		r = state_writer_finish(&w, blob, len);
	}
	state_writer_free(&w);
	if (r)
		return errmsg(r, err, errlen, "cannot save the machine state: %s", strerror(-r));
	return 0;
}

int vm_state_blob(struct vm *vm, void **blob, size_t *len, char *err, size_t errlen)
{
	return state_blob(vm, NULL, blob, len, err, errlen);
}

/* The whole state blob of the paused VM; the first save in a pause takes
 * it, later ones reuse it (vm->pause_state). */
static int take_state(struct vm *vm, char bases[][VMRUN_DISK_PATH_MAX + 32], char *err,
		      size_t errlen)
{
	if (vm->pause_state)
		return 0;
	return state_blob(vm, bases, &vm->pause_state, &vm->pause_state_len, err, errlen);
}

/* Create @dir, or take an existing empty one. */
static int make_dir(const char *dir, bool *created, char *err, size_t errlen)
{
	DIR *d;
	struct dirent *e;

	*created = false;
	if (mkdir(dir, 0755) == 0) {
		*created = true;
		return 0;
	}
	if (errno != EEXIST)
		return errmsg(-errno, err, errlen, "cannot create %s: %s", dir, strerror(errno));
	d = opendir(dir);
	if (!d)
		return errmsg(-errno, err, errlen, "%s: %s", dir, strerror(errno));
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			closedir(d);
			return errmsg(-EEXIST, err, errlen, "%s exists and is not empty", dir);
		}
	closedir(d);
	return 0;
}

static int write_file(int dfd, const char *name, const void *data, size_t len)
{
	int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444), r;

	if (fd < 0)
		return -errno;
	r = fd_pwrite_full(fd, data, len, 0);
	if (!r && fdatasync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

int vm_save(struct vm *vm, const char *dir, json_t **result, char *err, size_t errlen)
{
	char bases[VMRUN_MAX_DISKS][VMRUN_DISK_PATH_MAX + 32];
	char why[PATH_MAX + 256];
	json_t *disks;
	uint64_t mem_written = 0;
	bool created;
	int dfd = -1, mfd = -1, r;

	*result = NULL;
	r = make_dir(dir, &created, err, errlen);
	if (r)
		return r;
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		r = errmsg(-errno, err, errlen, "%s: %s", dir, strerror(errno));
		goto fail;
	}
	/* Each disk's frozen point: its memory and disk state are then one
	 * instant.  A second save in the same pause keeps the first's bases
	 * (nothing was written since). */
	for (unsigned i = 0; i < vm->n_blks; i++) {
		char base[PATH_MAX];

		if (vm->pause_disk_base[i][0])
			continue;
		if (vm->cfg->disks[i].readonly) {
			if (!realpath(vm->cfg->disks[i].path, base)) {
				r = errmsg(-errno, err, errlen, "%s: %s", vm->cfg->disks[i].path,
					   strerror(errno));
				goto fail;
			}
		} else {
			char frozen[PATH_MAX];

			r = vm_disk_freeze(vm, i, frozen, sizeof(frozen), why, sizeof(why));
			if (r) {
				errmsg(r, err, errlen, "disk %u: %s", i, why);
				goto fail;
			}
			if (!realpath(frozen, base)) {
				r = errmsg(-errno, err, errlen, "%s: %s", frozen, strerror(errno));
				goto fail;
			}
		}
		if (strlen(base) >= sizeof(vm->pause_disk_base[i])) {
			r = errmsg(-ENAMETOOLONG, err, errlen, "%s: name too long", base);
			goto fail;
		}
		strcpy(vm->pause_disk_base[i], base);
	}
	memcpy(bases, vm->pause_disk_base, sizeof(bases));
	r = take_state(vm, bases, err, errlen);
	if (r)
		goto fail;
	r = write_file(dfd, SNAPSHOT_STATE_FILE, vm->pause_state, vm->pause_state_len);
	if (r) {
		errmsg(r, err, errlen, "cannot write %s/%s: %s", dir, SNAPSHOT_STATE_FILE,
		       strerror(-r));
		goto fail;
	}
	mfd = openat(dfd, SNAPSHOT_MEMORY_FILE, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
	if (mfd < 0) {
		r = errmsg(-errno, err, errlen, "cannot create %s/%s: %s", dir,
			   SNAPSHOT_MEMORY_FILE, strerror(errno));
		goto fail;
	}
	r = write_memory(&vm->mem, mfd, &mem_written);
	if (!r && fdatasync(mfd) < 0)
		r = -errno;
	if (r) {
		errmsg(r, err, errlen, "cannot write %s/%s: %s", dir, SNAPSHOT_MEMORY_FILE,
		       strerror(-r));
		goto fail;
	}
	close(mfd);
	mfd = -1;
	if (fsync(dfd) < 0) {
		r = errmsg(-errno, err, errlen, "%s: fsync: %s", dir, strerror(errno));
		goto fail;
	}
	close(dfd);
	disks = json_array();
	for (unsigned i = 0; i < vm->n_blks; i++)
		json_array_append_new(disks, json_pack("{s:i,s:o,s:o}", "disk", (int)i, "image",
						       utf8_json_string(vm->cfg->disks[i].path),
						       "base", utf8_json_string(bases[i])));
	*result = json_pack("{s:s,s:[s,s],s:I,s:I,s:I,s:o}", "path", dir, "files",
			    SNAPSHOT_STATE_FILE, SNAPSHOT_MEMORY_FILE, "bytes",
			    (json_int_t)(vm->pause_state_len + mem_written), "state_bytes",
			    (json_int_t)vm->pause_state_len, "memory_bytes",
			    (json_int_t)mem_written, "disks", disks);
	return 0;
fail:
	/* Nothing of this save stays in @dir.  (A disk frozen already stays
	 * frozen: the running VM is on its new overlay, with the same data.) */
	if (mfd >= 0)
		close(mfd);
	if (dfd >= 0) {
		unlinkat(dfd, SNAPSHOT_STATE_FILE, 0);
		unlinkat(dfd, SNAPSHOT_MEMORY_FILE, 0);
		close(dfd);
	}
	if (created)
		rmdir(dir);
	return r;
}

/* ---- restore ---- */

/* Read @dir/state.dtb whole (at most the largest stream plus footer). */
static int read_state(struct snapshot *s, char *err, size_t errlen)
{
	char path[PATH_MAX + 16];
	struct stat st;
	int fd, r;

	snprintf(path, sizeof(path), "%s/%s", s->dir, SNAPSHOT_STATE_FILE);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return errmsg(-errno, err, errlen, "cannot open %s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    (uint64_t)st.st_size > STATE_MAX_BLOB + sizeof(struct state_footer)) {
		close(fd);
		return errmsg(-EINVAL, err, errlen, "%s: not a regular file of a plausible size", path);
	}
	s->blob = malloc((size_t)st.st_size);
	if (!s->blob) {
		close(fd);
		return errmsg(-ENOMEM, err, errlen, "out of memory");
	}
	s->blob_len = (size_t)st.st_size;
	r = fd_pread_exact(fd, s->blob, s->blob_len, 0);
	close(fd);
	if (r)
		return errmsg(r, err, errlen, "cannot read %s: %s", path,
			      r == -EIO ? "it shrank while being read" : strerror(-r));
	if (state_reader_open(&s->r, s->blob, s->blob_len))
		return errmsg(s->r.err, err, errlen, "%s: %s", path, s->r.msg);
	return 0;
}

/* /config into s->cfg (the machine), and the disks' checks.  Creates
 * nothing. */
static int load_config(struct snapshot *s, const struct snapshot_overrides *ov,
		       char bases[][VMRUN_DISK_PATH_MAX], char *err, size_t errlen)
{
	struct state_reader *r = &s->r;
	struct vm_config *cfg = &s->cfg;
	int node = state_node(r, true, "/vmrun");
	uint32_t format, cpus, n_disks, n_nics, acpi = 0, pvpanic = 0;
	char arch[16];
	uint64_t mem;

	state_version(r, node, 1, 1);
	state_get_u32(r, node, "format", &format);
	state_get_str(r, node, "arch", arch, sizeof(arch));
	node = state_node(r, true, "/config");
	state_version(r, node, 1, CONFIG_VERSION);
	state_get_u64(r, node, "mem-size", &mem);
	state_get_u32_range(r, node, "cpus", 1, VMRUN_MAX_CPUS, &cpus);
	state_get_u32_range(r, node, "disks", 0, VMRUN_MAX_DISKS, &n_disks);
	state_get_u32_range(r, node, "nics", 0, VMRUN_MAX_NICS, &n_nics);
	if (state_has(r, node, "acpi"))
		state_get_u32_range(r, node, "acpi", 0, 1, &acpi);
	if (state_has(r, node, "pvpanic"))
		state_get_u32_range(r, node, "pvpanic", 0, 1, &pvpanic);
	if (r->err)
		return errmsg(r->err, err, errlen, "%s/%s: %s", s->dir, SNAPSHOT_STATE_FILE, r->msg);
	if (strcmp(arch, "x86_64"))
		return errmsg(-EINVAL, err, errlen, "%s: a snapshot of an %s machine", s->dir, arch);
	if (mem < VMRUN_MIN_MEM || mem > VMRUN_MAX_MEM || (mem & 0xfff))
		return errmsg(-EINVAL, err, errlen, "%s: memory size %" PRIu64 " out of range", s->dir,
			      mem);
	cfg->mem_size = mem;
	cfg->cpus = cpus;
	cfg->n_disks = n_disks;
	cfg->n_nics = n_nics;
	cfg->no_acpi = !acpi;
	cfg->no_pvpanic = !pvpanic;
	for (unsigned i = 0; i < n_disks; i++) {
		struct disk_config *d = &cfg->disks[i];
		char fmt[8];
		uint32_t ro, cache, crc, have_crc, transport = VIRTIO_TRANSPORT_MMIO;
		uint64_t size, have_size;
		int e;

		node = state_node(r, true, "/config/disk@%u", i);
		state_version(r, node, 1, CONFIG_VERSION);
		/* A migration's disks are on shared storage: the image itself,
		 * which the source still writes, so no fingerprint. */
		state_get_str(r, node, s->incoming ? "image" : "base", bases[i], VMRUN_DISK_PATH_MAX);
		state_get_str(r, node, "format", fmt, sizeof(fmt));
		state_get_u32_range(r, node, "readonly", 0, 1, &ro);
		state_get_u32_range(r, node, "cache", DISK_CACHE_WRITEBACK, DISK_CACHE_UNSAFE, &cache);
		state_get_str(r, node, "serial", d->serial, sizeof(d->serial));
		/* virtio-pci or virtio-mmio; snapshots from before PCI: mmio. */
		if (state_has(r, node, "transport"))
			state_get_u32_range(r, node, "transport", VIRTIO_TRANSPORT_MMIO,
					    VIRTIO_TRANSPORT_PCI, &transport);
		s->base_format[i] = BLK_FORMAT_AUTO;
		if (!s->incoming) {
			char base_fmt[8] = "";

			if (state_has(r, node, "base-format")) {
				state_get_str(r, node, "base-format", base_fmt, sizeof(base_fmt));
				if (!r->err && strcmp(base_fmt, "raw") && strcmp(base_fmt, "qcow2"))
					return errmsg(-EINVAL, err, errlen,
						      "%s: disk %u: unknown base format '%s'", s->dir,
						      i, base_fmt);
				s->base_format[i] = strcmp(base_fmt, "raw") ? BLK_FORMAT_QCOW2
									    : BLK_FORMAT_RAW;
			}
			state_get_u64(r, node, "base-size", &size);
			state_get_u32(r, node, "base-fingerprint", &crc);
		}
		if (r->err)
			return errmsg(r->err, err, errlen, "%s/%s: %s", s->dir, SNAPSHOT_STATE_FILE,
				      r->msg);
		if (strcmp(fmt, "raw") && strcmp(fmt, "qcow2"))
			return errmsg(-EINVAL, err, errlen, "%s: disk %u: unknown format '%s'", s->dir,
				      i, fmt);
		if (ov && ov->disk_base[i]) {
			if (strlen(ov->disk_base[i]) >= VMRUN_DISK_PATH_MAX)
				return errmsg(-ENAMETOOLONG, err, errlen, "--restore-disk %u: path too long", i);
			strcpy(bases[i], ov->disk_base[i]);
		}
		d->readonly = ro;
		d->cache = (enum disk_cache)cache;
		d->transport = (enum virtio_transport_kind)transport;
		d->format = !strcmp(fmt, "raw") ? DISK_FORMAT_RAW : DISK_FORMAT_QCOW2;
		if (s->incoming)
			continue;
		e = disk_fingerprint(bases[i], &have_size, &have_crc);
		if (e)
			return errmsg(e, err, errlen, "disk %u: frozen image %s: %s%s", i, bases[i],
				      strerror(-e), e == -ENOENT ? " (--restore-disk N=PATH names it on this host)" : "");
		if (have_size != size || have_crc != crc)
			return errmsg(-ESTALE, err, errlen,
				      "disk %u: %s changed since the snapshot (size %" PRIu64 ", was %" PRIu64 "; fingerprint %08x, was %08x)",
				      i, bases[i], have_size, size, have_crc, crc);
	}
	for (unsigned j = 0; j < n_nics; j++) {
		struct net_config *n = &cfg->nics[j];
		uint32_t queues, transport = VIRTIO_TRANSPORT_MMIO;

		node = state_node(r, true, "/config/nic@%u", j);
		state_version(r, node, 1, CONFIG_VERSION);
		state_get_str(r, node, "tap", n->tap, sizeof(n->tap));
		state_get_bytes(r, node, "mac", n->mac, sizeof(n->mac));
		state_get_u32_range(r, node, "queues", 1, VMRUN_MAX_NET_QUEUES, &queues);
		if (state_has(r, node, "transport"))
			state_get_u32_range(r, node, "transport", VIRTIO_TRANSPORT_MMIO,
					    VIRTIO_TRANSPORT_PCI, &transport);
		if (r->err)
			return errmsg(r->err, err, errlen, "%s/%s: %s", s->dir, SNAPSHOT_STATE_FILE,
				      r->msg);
		if (ov && ov->tap[j]) {
			if (strlen(ov->tap[j]) >= sizeof(n->tap))
				return errmsg(-ENAMETOOLONG, err, errlen, "--restore-tap %u: name too long", j);
			strcpy(n->tap, ov->tap[j]);
		}
		if (!n->tap[0])
			return errmsg(-EINVAL, err, errlen, "%s: NIC %u has no tap name", s->dir, j);
		n->mac_given = true;
		n->queues = queues;
		n->transport = (enum virtio_transport_kind)transport;
		n->spec = n->tap;
	}
	return 0;
}

/* /memory: the RAM layout this vmrun builds for the configured size. */
static int check_memory_layout(struct snapshot *s, char *err, size_t errlen)
{
	struct state_reader *r = &s->r;
	int node = state_node(r, true, "/memory");
	uint64_t size, gpa[2], len[2];
	unsigned n = x86_layout_ram(s->cfg.mem_size, gpa, len);

	state_version(r, node, 1, MEMORY_VERSION);
	state_get_u64(r, node, "size", &size);
	for (unsigned i = 0; i < n; i++) {
		uint64_t reg[2];

		state_get_u64s(r, state_node(r, true, "/memory/region@%u", i), "reg", reg, 2);
		if (!r->err && (reg[0] != gpa[i] || reg[1] != len[i]))
			state_reject(r, -EINVAL, "state: memory region %u is not where this vmrun puts RAM", i);
	}
	if (r->err)
		return errmsg(r->err, err, errlen, "%s/%s: %s", s->dir, SNAPSHOT_STATE_FILE, r->msg);
	if (size != s->cfg.mem_size)
		return errmsg(-EINVAL, err, errlen, "%s: memory size %" PRIu64 " disagrees with the configuration", s->dir, size);
	return 0;
}

/* memory.bin: present, a regular file exactly as long as the layout. */
static int open_memory(struct snapshot *s, char *err, size_t errlen)
{
	uint64_t gpa[2], len[2], end;
	unsigned n = x86_layout_ram(s->cfg.mem_size, gpa, len);
	char path[PATH_MAX + 16];
	struct stat st;
	int r = check_memory_layout(s, err, errlen);

	if (r)
		return r;
	end = gpa[n - 1] + len[n - 1];
	snprintf(path, sizeof(path), "%s/%s", s->dir, SNAPSHOT_MEMORY_FILE);
	s->mem_fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (s->mem_fd < 0)
		return errmsg(-errno, err, errlen, "cannot open %s: %s", path, strerror(errno));
	if (fstat(s->mem_fd, &st) < 0 || !S_ISREG(st.st_mode))
		return errmsg(-EINVAL, err, errlen, "%s is not a regular file", path);
	/* Shorter would fault (SIGBUS) where the guest reads past its end. */
	if ((uint64_t)st.st_size != end)
		return errmsg(-EINVAL, err, errlen, "%s: %lld bytes, expected %" PRIu64 " (truncated?)",
			      path, (long long)st.st_size, end);
	return 0;
}

/* Run-time options come from this command line. */
static void apply_runtime(struct snapshot *s, const struct vm_config *runtime)
{
	s->cfg.console = runtime->console;
	s->cfg.console_path = runtime->console_path;
	s->cfg.timeout_s = runtime->timeout_s;
	s->cfg.api_sock = runtime->api_sock;
	s->cfg.no_nested_workarounds = runtime->no_nested_workarounds;
	s->cfg.migration_key = runtime->migration_key;
}

int snapshot_from_stream(struct snapshot *s, void *blob, size_t len, const char *label,
			 const struct vm_config *runtime, const struct snapshot_overrides *ov,
			 char *err, size_t errlen)
{
	char paths[VMRUN_MAX_DISKS][VMRUN_DISK_PATH_MAX];
	int r;

	memset(s, 0, sizeof(*s));
	s->mem_fd = -1;
	s->incoming = true;
	s->blob = blob;
	s->blob_len = len;
	snprintf(s->dir, sizeof(s->dir), "%s", label);
	if (state_reader_open(&s->r, s->blob, s->blob_len))
		return errmsg(s->r.err, err, errlen, "%s: %s", label, s->r.msg);
	r = load_config(s, ov, paths, err, errlen);
	if (!r)
		r = check_memory_layout(s, err, errlen);
	if (r)
		return r;
	apply_runtime(s, runtime);
	snprintf(s->kernel_label, sizeof(s->kernel_label), "%s (migrated)", label);
	s->cfg.kernel_path = s->kernel_label;
	for (unsigned i = 0; i < s->cfg.n_disks; i++) {
		struct disk_config *d = &s->cfg.disks[i];

		memcpy(d->path, paths[i], sizeof(d->path));
		d->path[sizeof(d->path) - 1] = '\0';
		d->spec = d->path;
	}
	return 0;
}

int snapshot_open(struct snapshot *s, const char *dir, const struct vm_config *runtime,
		  const struct snapshot_overrides *ov, char *err, size_t errlen)
{
	char bases[VMRUN_MAX_DISKS][VMRUN_DISK_PATH_MAX];
	char absdir[PATH_MAX];
	int r;

	memset(s, 0, sizeof(*s));
	s->mem_fd = -1;
	if (!realpath(dir, absdir))
		return errmsg(-errno, err, errlen, "--restore %s: %s", dir, strerror(errno));
	snprintf(s->dir, sizeof(s->dir), "%s", absdir);
	r = read_state(s, err, errlen);
	if (!r)
		r = load_config(s, ov, bases, err, errlen);
	if (!r)
		r = open_memory(s, err, errlen);
	if (r)
		return r;
	apply_runtime(s, runtime);
	snprintf(s->kernel_label, sizeof(s->kernel_label), "%s (restored)", s->dir);
	s->cfg.kernel_path = s->kernel_label;
	/* Everything checked: now the new overlays, the only files a restore
	 * creates. */
	for (unsigned i = 0; i < s->cfg.n_disks; i++) {
		struct disk_config *d = &s->cfg.disks[i];

		if (d->readonly) {
			snprintf(d->path, sizeof(d->path), "%s", bases[i]);
		} else {
			for (unsigned k = 1;; k++) {
				char why[PATH_MAX + 128];
				int n = snprintf(d->path, sizeof(d->path), "%s/disk%u-%u.qcow2", s->dir, i, k);

				if (n < 0 || (size_t)n >= sizeof(d->path))
					return errmsg(-ENAMETOOLONG, err, errlen, "%s: name too long", s->dir);
				r = img_create_overlay(d->path, bases[i], s->base_format[i], NULL, why,
						       sizeof(why));
				if (!r)
					break;
				if (r != -EEXIST || k == 10000)
					return errmsg(r, err, errlen, "disk %u: %s", i, why);
			}
			s->overlay_created[i] = true;
			d->format = DISK_FORMAT_QCOW2;
		}
		d->spec = d->path;
	}
	return 0;
}

void snapshot_close(struct snapshot *s, bool failed)
{
	for (unsigned i = 0; failed && i < s->cfg.n_disks; i++)
		if (s->overlay_created[i])
			unlink(s->cfg.disks[i].path);
	if (s->mem_fd >= 0)
		close(s->mem_fd);
	s->mem_fd = -1;
	free(s->blob);
	s->blob = NULL;
}

/* ---- vmrun snapshot show ---- */

static int show(const char *dir, bool as_json)
{
	struct snapshot s;
	struct state_reader *r = &s.r;
	char err[PATH_MAX + 256], path[PATH_MAX + 16], version[64] = "", bases[VMRUN_MAX_DISKS][VMRUN_DISK_PATH_MAX];
	struct stat st;
	uint32_t format = 0, cpus = 0, n_disks = 0, n_nics = 0;
	uint64_t mem = 0, file_size = 0, allocated = 0, expected_file = 0;
	json_t *disks, *nics, *nodes;
	int node, depth = 0;

	memset(&s, 0, sizeof(s));
	s.mem_fd = -1;
	snprintf(s.dir, sizeof(s.dir), "%s", dir);
	if (read_state(&s, err, sizeof(err))) {
		fprintf(stderr, "vmrun: %s\n", err);
		snapshot_close(&s, false);
		return VMRUN_EXIT_SETUP;
	}
	node = state_node(r, false, "/vmrun");
	state_get_u32(r, node, "format", &format);
	state_get_str(r, node, "vmrun-version", version, sizeof(version));
	node = state_node(r, false, "/config");
	state_get_u64(r, node, "mem-size", &mem);
	state_get_u32(r, node, "cpus", &cpus);
	state_get_u32_range(r, node, "disks", 0, VMRUN_MAX_DISKS, &n_disks);
	state_get_u32_range(r, node, "nics", 0, VMRUN_MAX_NICS, &n_nics);
	if (r->err) {
		fprintf(stderr, "vmrun: %s: %s\n", dir, r->msg);
		snapshot_close(&s, false);
		return VMRUN_EXIT_SETUP;
	}
	if (mem >= VMRUN_MIN_MEM && mem <= VMRUN_MAX_MEM) {
		uint64_t gpa[2], len[2];
		unsigned n = x86_layout_ram(mem, gpa, len);

		expected_file = gpa[n - 1] + len[n - 1];
	}
	snprintf(path, sizeof(path), "%s/%s", dir, SNAPSHOT_MEMORY_FILE);
	if (stat(path, &st) == 0) {
		file_size = (uint64_t)st.st_size;
		allocated = (uint64_t)st.st_blocks * 512;
	}
	disks = json_array();
	nics = json_array();
	nodes = json_array();
	for (unsigned i = 0; i < n_disks; i++) {
		char image[VMRUN_DISK_PATH_MAX] = "", fmt[8] = "";
		uint32_t ro = 0;
		uint64_t size = 0;

		node = state_node(r, false, "/config/disk@%u", i);
		state_get_str(r, node, "image", image, sizeof(image));
		state_get_str(r, node, "base", bases[i], sizeof(bases[i]));
		state_get_str(r, node, "format", fmt, sizeof(fmt));
		state_get_u32(r, node, "readonly", &ro);
		state_get_u64(r, node, "base-size", &size);
		json_array_append_new(disks, json_pack("{s:i,s:o,s:o,s:o,s:b,s:I}", "disk", (int)i,
						       "image", utf8_json_string(image), "base",
						       utf8_json_string(bases[i]), "format",
						       utf8_json_string(fmt),
						       "readonly", (int)ro, "base_size", (json_int_t)size));
	}
	for (unsigned j = 0; j < n_nics; j++) {
		char tap[16] = "", mac[18] = "";
		uint8_t m[6] = { 0 };

		node = state_node(r, false, "/config/nic@%u", j);
		state_get_str(r, node, "tap", tap, sizeof(tap));
		state_get_bytes(r, node, "mac", m, sizeof(m));
		snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3],
			 m[4], m[5]);
		json_array_append_new(nics, json_pack("{s:i,s:s,s:s}", "nic", (int)j, "tap", tap, "mac",
						      mac));
	}
	for (node = state_next_node(r, -1, &depth); node >= 0;
	     node = state_next_node(r, node, &depth)) {
		char p[STATE_PATH_MAX];
		uint32_t v = 0;

		if (state_path(r, node, p, sizeof(p)) < 0)
			break;
		if (state_has(r, node, "version"))
			state_get_u32(r, node, "version", &v);
		json_array_append_new(nodes, json_pack("{s:s,s:i}", "node", p, "version", (int)v));
	}
	if (as_json) {
		json_t *o = json_pack("{s:s,s:i,s:s,s:I,s:i,s:I,s:I,s:I,s:b,s:o,s:o,s:o}", "path", dir,
				      "format_version", (int)format, "vmrun_version", version,
				      "mem_bytes", (json_int_t)mem, "cpus", (int)cpus, "state_bytes",
				      (json_int_t)s.blob_len, "memory_file_bytes",
				      (json_int_t)file_size, "memory_allocated_bytes",
				      (json_int_t)allocated, "memory_file_complete",
				      file_size == expected_file, "disks", disks, "nics", nics, "nodes",
				      nodes);

		json_dumpf(o, stdout, JSON_INDENT(2));
		fputc('\n', stdout);
		json_decref(o);
	} else {
		size_t k;
		json_t *e;

		printf("snapshot %s\n", dir);
		printf("  state format %u, written by vmrun %s, %zu bytes\n", format, version, s.blob_len);
		printf("  memory %" PRIu64 " MiB in %s (%" PRIu64 " bytes, %" PRIu64 " allocated)\n",
		       mem >> 20, SNAPSHOT_MEMORY_FILE, file_size, allocated);
		printf("  vCPUs %u\n", cpus);
		if (file_size != expected_file)
			printf("  WARNING: %s should be %" PRIu64 " bytes: it is missing or truncated, and a restore will refuse it\n",
			       SNAPSHOT_MEMORY_FILE, expected_file);
		json_array_foreach(disks, k, e)
			printf("  disk %zu: %s (%s%s), frozen base %s\n", k,
			       json_string_value(json_object_get(e, "image")),
			       json_string_value(json_object_get(e, "format")),
			       json_is_true(json_object_get(e, "readonly")) ? ", read-only" : "",
			       json_string_value(json_object_get(e, "base")));
		json_array_foreach(nics, k, e)
			printf("  nic %zu: tap %s, mac %s\n", k,
			       json_string_value(json_object_get(e, "tap")),
			       json_string_value(json_object_get(e, "mac")));
		printf("\nstate (as `dtc -I dtb -O dts %s/%s` shows it):\n\n", dir, SNAPSHOT_STATE_FILE);
		state_print(r, stdout);
		json_decref(disks);
		json_decref(nics);
		json_decref(nodes);
	}
	snapshot_close(&s, false);
	return 0;
}

int snapshot_main(int argc, char *const argv[])
{
	bool as_json = false;
	const char *dir = NULL;

	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		puts("Usage: vmrun snapshot show DIR [--json]\n"
		     "\n"
		     "Print a whole-VM snapshot's configuration, sizes, versions and device state\n"
		     "(made by `vmrun ctl SOCK save path=DIR`; restored by `vmrun --restore DIR`).");
		return 0;
	}
	if (argc < 3 || strcmp(argv[1], "show")) {
		fprintf(stderr, "vmrun snapshot: usage: vmrun snapshot show DIR [--json]\n");
		return VMRUN_EXIT_USAGE;
	}
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			as_json = true;
		} else if (!dir && argv[i][0] != '-') {
			dir = argv[i];
		} else {
			fprintf(stderr, "vmrun snapshot: unexpected argument '%s'\n", argv[i]);
			return VMRUN_EXIT_USAGE;
		}
	}
	if (!dir) {
		fprintf(stderr, "vmrun snapshot: usage: vmrun snapshot show DIR [--json]\n");
		return VMRUN_EXIT_USAGE;
	}
	return show(dir, as_json);
}

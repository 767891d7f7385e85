/* bench_blk_harness: virtio-blk throughput with no guest, for bench/blk.py
 * to compare against fio on the same file.
 *
 * The program plays the guest's virtio-blk driver itself, in-process, on
 * the real device model (src/virtio/blk.c), transport (src/virtio/mmio.c),
 * virtqueue code and raw backend with Linux AIO (src/block/raw.c), all run
 * by vmrun's event loop:
 *  - fake guest RAM from guest_mem_init() holds the split virtqueue (256
 *    entries), one request header and status byte per slot, and one data
 *    buffer per slot (page-aligned, one descriptor each);
 *  - the transport is driven through its register window only
 *    (m.region.ops->read/write, 32-bit accesses like a guest's MMIO): magic,
 *    version and device id, the status handshake, feature negotiation
 *    (VERSION_1, and EVENT_IDX unless --no-event-idx), the capacity from the
 *    configuration space, queue set-up, DRIVER_OK, QueueNotify kicks,
 *    InterruptStatus and InterruptAck;
 *  - the transport has no KVM (vm_fd -1): a QueueNotify write reaches the
 *    device through the notify eventfd on the event loop, exactly the path
 *    an ioeventfd takes.  The interrupt, a no-op without KVM, is caught by
 *    chaining dev.interrupt_used (bench/drv.c): it ends evloop_run()
 *    the way an irqfd would wake a vCPU, so the driver only looks at the used
 *    ring when the device asked for it (used_event honoured with EVENT_IDX).
 *
 * Each point keeps exactly QD requests in flight for --time seconds: a
 * completed slot is refilled at once, new chains are published in one
 * avail->idx store per interrupt, and the driver kicks only when the device
 * asks for it (avail_event with EVENT_IDX, else used->flags).  Then the
 * requests in flight are drained; IOPS and bytes/s are taken over the whole
 * time, first submission to last completion, which is what fio's
 * --time_based reports.  Every completion is checked: its id must be a
 * chain in flight, its used length what the request wrote, its status byte
 * VIRTIO_BLK_S_OK.  With --verify the data are checked as well: every
 * 512-byte sector of a file made by --create starts with a stamp of its
 * own number, writes stamp their sectors the same way, and reads compare.
 *
 * Usage:
 *   bench_blk_harness --file PATH [--create MIB] [--points LIST] [--time S]
 *                     [--cache none|writeback|unsafe] [--no-event-idx]
 *                     [--verify] [--json]
 *   bench_blk_harness --scratch DIR [--create MIB] ...   (a temporary file)
 * LIST is "all" (the eight standard points), "none", or comma-separated
 * RW:BS:QD with RW one of randread, randwrite, read, write, BS in bytes or
 * with a k/m suffix, QD 1..64: "randread:4k:32,write:1m:1".
 *
 * Exit status: 0 when every point ran without an error, 1 when a request
 * failed, the device needed a reset, or it stopped completing (hang), 2 on
 * a usage or set-up error. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "drv.h"
#include "vmrun/block.h"
#include "vmrun/virtio_blk.h"

#define DESCS_PER_REQ 3u /* header, data, status */
#define MAX_QD 64u       /* 3 descriptors each must fit DRV_QUEUE_SIZE */
#define MAX_BS (1u << 20) /* the device's size_max: one data descriptor */
#define SECTOR 512u

/* Fake guest-physical layout. */
#define GPA_QUEUE 0x10000ull  /* desc, avail, used: DRV_VQ_BYTES */
#define GPA_HDRS 0x13000ull   /* 16 bytes per slot */
#define GPA_STATUS 0x14000ull /* 1 byte per slot */
#define GPA_DATA 0x100000ull  /* slot i at GPA_DATA + i * bs */

#define STAMP_KEY UINT64_C(0x766d72756e626c6b) /* "vmrunblk" */

enum rw_kind { RW_RANDREAD, RW_RANDWRITE, RW_READ, RW_WRITE };

static const char *const rw_names[] = { "randread", "randwrite", "read", "write" };

struct point {
	enum rw_kind rw;
	uint32_t bs;
	unsigned qd;
};

/* What one point measured. */
struct result {
	uint64_t ios, bytes;
	struct drv_counts c; /* errors, kicks, interrupts, hung, needs_reset */
	double seconds, cpu_seconds;
};

/* The fake guest: its RAM, the device under test and the driver's state. */
struct drv {
	struct drv_kit k;
	struct blk *backend;
	struct virtio_blk blk;

	/* Options. */
	struct drv_opts opt;
	uint64_t disk_bytes;

	/* Driver state for the running point. */
	struct drv_vq vq;
	bool in_flight[MAX_QD];
	unsigned n_in_flight;
	uint64_t req_off[MAX_QD]; /* disk byte offset of each slot's request */
	const struct point *pt;
	uint64_t seq_next, rng;
	struct result *res;
};

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

static uint64_t xorshift64(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

static uint64_t stamp_of(uint64_t sector)
{
	return sector ^ STAMP_KEY;
}

static void *gpa_ptr(struct drv *d, uint64_t gpa, uint64_t len)
{
	return drv_ptr(&d->k, gpa, len);
}

/* Reset the device and bring it up again as a driver does (virtio 1.2,
 * sections 3.1.1 and 4.2.3): VERSION_1, EVENT_IDX unless --no-event-idx,
 * the capacity checked against the file, queue 0 on fresh rings.  Returns
 * 0 or -errno (reason printed). */
static int drv_probe(struct drv *d)
{
	uint64_t capacity;
	int r;

	r = drv_start(&d->k, VIRTIO_ID_BLOCK, VIRTIO_BIT(VIRTIO_F_VERSION_1), !d->opt.no_event_idx);
	if (r < 0)
		return r;
	capacity = drv_config_read64(&d->k, 0);
	if (capacity * SECTOR != d->disk_bytes) {
		fprintf(stderr, "bench_blk: capacity %" PRIu64 " sectors, the file has %" PRIu64
			" bytes\n", capacity, d->disk_bytes);
		return -EINVAL;
	}
	r = drv_vq_setup(&d->k, &d->vq);
	return r < 0 ? r : drv_driver_ok(&d->k);
}

/* ------------------------------------------------------------------ */
/* Requests                                                            */

static uint64_t slot_data_gpa(const struct drv *d, unsigned slot)
{
	return GPA_DATA + (uint64_t)slot * d->pt->bs;
}

static bool pt_writes(const struct point *pt)
{
	return pt->rw == RW_RANDWRITE || pt->rw == RW_WRITE;
}

/* Build slot @slot's three descriptors: header, data, status.  The chain
 * is the same for every request of the point; only the header changes. */
static void slot_chain(struct drv *d, unsigned slot)
{
	uint16_t head = (uint16_t)(slot * DESCS_PER_REQ);
	uint16_t data_flags = pt_writes(d->pt) ? 0 : VIRTQ_DESC_F_WRITE;

	drv_desc_set(&d->vq, head, GPA_HDRS + 16ull * slot, 16, VIRTQ_DESC_F_NEXT, head + 1);
	drv_desc_set(&d->vq, head + 1u, slot_data_gpa(d, slot), d->pt->bs,
		     VIRTQ_DESC_F_NEXT | data_flags, head + 2);
	drv_desc_set(&d->vq, head + 2u, GPA_STATUS + slot, 1, VIRTQ_DESC_F_WRITE, 0);
}

/* Where the next request goes (bytes). */
static uint64_t next_offset(struct drv *d)
{
	uint64_t blocks = d->disk_bytes / d->pt->bs, off;

	if (d->pt->rw == RW_RANDREAD || d->pt->rw == RW_RANDWRITE)
		return (xorshift64(&d->rng) % blocks) * d->pt->bs;
	off = d->seq_next;
	d->seq_next = off + d->pt->bs >= blocks * d->pt->bs ? 0 : off + d->pt->bs;
	return off;
}

/* Fill slot @slot with a new request and put it on the avail ring (not yet
 * published: see drv_publish()). */
static void slot_post(struct drv *d, unsigned slot)
{
	uint8_t *hdr = gpa_ptr(d, GPA_HDRS + 16ull * slot, 16);
	uint8_t *status = gpa_ptr(d, GPA_STATUS + slot, 1);
	uint32_t type = pt_writes(d->pt) ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN;
	uint64_t off = next_offset(d), sector = off / SECTOR, zero = 0;

	memcpy(hdr, &type, 4);
	memcpy(hdr + 4, &zero, 4);
	memcpy(hdr + 8, &sector, 8);
	*status = 0xff; /* the device must overwrite it */
	if (d->opt.verify && pt_writes(d->pt)) {
		uint8_t *data = gpa_ptr(d, slot_data_gpa(d, slot), d->pt->bs);

		for (uint32_t s = 0; s < d->pt->bs / SECTOR; s++) {
			uint64_t st = stamp_of(sector + s);

			memcpy(data + (uint64_t)s * SECTOR, &st, 8);
		}
	}
	d->req_off[slot] = off;
	d->in_flight[slot] = true;
	d->n_in_flight++;
	drv_post(&d->vq, (uint16_t)(slot * DESCS_PER_REQ));
}

/* Check a completed read's data against the stamps. */
static void verify_read(struct drv *d, unsigned slot)
{
	const uint8_t *data = gpa_ptr(d, slot_data_gpa(d, slot), d->pt->bs);
	uint64_t sector = d->req_off[slot] / SECTOR;

	for (uint32_t s = 0; s < d->pt->bs / SECTOR; s++) {
		uint64_t got;

		memcpy(&got, data + (uint64_t)s * SECTOR, 8);
		if (got != stamp_of(sector + s)) {
			drv_error(&d->k, "read at byte %" PRIu64 ": sector %" PRIu64 " holds the "
				  "stamp of sector %" PRIu64, d->req_off[slot], sector + s,
				  got ^ STAMP_KEY);
			return;
		}
	}
}

/* Check used element @idx (chain @id, length @len) and free its slot.
 * Returns the slot, or -1 when @id is no chain in flight. */
static int complete(struct drv *d, uint16_t idx, uint32_t id, uint32_t len)
{
	unsigned slot = id / DESCS_PER_REQ;
	uint32_t want_len = pt_writes(d->pt) ? 1 : d->pt->bs + 1;
	uint8_t status;

	if (id % DESCS_PER_REQ || slot >= d->pt->qd || !d->in_flight[slot]) {
		drv_error(&d->k, "used element %u names chain %u, not one in flight", idx, id);
		return -1;
	}
	d->in_flight[slot] = false;
	d->n_in_flight--;
	status = *(const uint8_t *)gpa_ptr(d, GPA_STATUS + slot, 1);
	if (status != VIRTIO_BLK_S_OK)
		drv_error(&d->k, "request at byte %" PRIu64 ": status %u", d->req_off[slot],
			  status);
	else if (len != want_len)
		drv_error(&d->k, "request at byte %" PRIu64 ": used length %u, want %u",
			  d->req_off[slot], len, want_len);
	else if (d->opt.verify && !pt_writes(d->pt))
		verify_read(d, slot);
	d->res->ios++;
	d->res->bytes += d->pt->bs;
	return (int)slot;
}

/* Take every new used element; refill each slot while @refill.  Returns
 * the number taken. */
static unsigned reap(struct drv *d, bool refill)
{
	struct drv_vq *vq = &d->vq;
	unsigned n = 0;

	do {
		uint16_t used_idx = drv_used_idx(vq);

		while (vq->last_used != used_idx) {
			uint32_t id, len;
			int slot;

			drv_used_elem(vq, vq->last_used, &id, &len);
			slot = complete(d, vq->last_used++, id, len);
			if (slot < 0)
				continue;
			n++;
			if (refill)
				slot_post(d, (unsigned)slot);
		}
	} while (drv_rearm(&d->k, vq));
	return n;
}

static void print_hang(struct drv *d)
{
	const uint8_t *used = d->vq.used;

	fprintf(stderr, "bench_blk: %s: HANG: no completion for %.0f s with %u requests "
		"in flight; driver avail idx %u, used idx seen %u, used->idx %u, avail_event %u, "
		"used->flags %#x; device last_avail_idx %u used_idx %u, virtio-blk inflight %u, "
		"backend inflight %u, status %#x\n",
		d->k.where, DRV_HANG_S, d->n_in_flight, d->vq.avail_idx, d->vq.last_used,
		drv_used_idx(&d->vq),
		__atomic_load_n((const uint16_t *)(used + 4 + 8 * DRV_QUEUE_SIZE), __ATOMIC_RELAXED),
		__atomic_load_n((const uint16_t *)used, __ATOMIC_RELAXED),
		d->blk.vq.last_avail_idx, d->blk.vq.used_idx, d->blk.inflight,
		blk_inflight(d->backend), drv_read32(&d->k, VIRTIO_MMIO_STATUS));
}

/* Run one point for @seconds.  Returns 0, or -1 when it failed. */
static int run_point(struct drv *d, const struct point *pt, double seconds, struct result *res)
{
	double t0, deadline, cpu0;

	memset(res, 0, sizeof(*res));
	drv_begin(&d->k, &res->c, "%s:%u:qd%u", rw_names[pt->rw], pt->bs, pt->qd);
	d->res = res;
	d->pt = pt;
	d->seq_next = 0;
	d->rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)pt->rw << 32) ^ pt->bs ^ pt->qd;
	d->n_in_flight = 0;
	memset(d->in_flight, 0, sizeof(d->in_flight));
	if (drv_probe(d) < 0) {
		drv_end(&d->k);
		d->res = NULL;
		res->c.errors++;
		return -1;
	}
	for (unsigned s = 0; s < pt->qd; s++) {
		slot_chain(d, s);
		/* Buffers a guest wrote: touched pages, not the zero page. */
		memset(gpa_ptr(d, slot_data_gpa(d, s), pt->bs), 0x5a + s, pt->bs);
	}

	cpu0 = cpu_s();
	t0 = now_s();
	deadline = t0 + seconds;
	d->k.last_progress = t0;
	for (unsigned s = 0; s < pt->qd; s++)
		slot_post(d, s);
	drv_publish(&d->k, &d->vq);
	while (d->n_in_flight) {
		bool more;

		if (drv_wait_interrupt(&d->k) < 0)
			break;
		more = now_s() < deadline;
		if (reap(d, more))
			d->k.last_progress = now_s();
		if (more)
			drv_publish(&d->k, &d->vq);
	}
	res->seconds = now_s() - t0;
	res->cpu_seconds = cpu_s() - cpu0;
	drv_end(&d->k);
	d->res = NULL;
	if (res->c.hung)
		print_hang(d);
	if (res->c.needs_reset)
		fprintf(stderr, "bench_blk: %s: the device set NEEDS_RESET (status %#x)\n",
			d->k.where, drv_read32(&d->k, VIRTIO_MMIO_STATUS));
	if (res->c.hung || res->c.needs_reset) {
		res->c.errors++;
		/* Requests may still be in flight: the reset below would wait
		 * for them forever on a hung backend, so leave the device as it
		 * is and let the caller give up. */
		return -1;
	}
	return res->c.errors ? -1 : 0;
}

/* ------------------------------------------------------------------ */
/* Set-up                                                              */

/* The fake guest with RAM for @max_qd slots of @max_bs bytes and the raw
 * or qcow2 file @path behind virtio-blk.  Returns 0 or -errno (reason
 * printed); on failure too, teardown() must follow. */
static int setup(struct drv *d, const char *path, enum blk_cache cache, unsigned max_qd,
			uint32_t max_bs)
{
	struct blk_open_opts opts = { .readonly = false, .cache = cache };
	char err[256];
	int r;

	r = drv_init(&d->k, "bench_blk", GPA_DATA + (uint64_t)max_qd * max_bs);
	if (r < 0)
		return r;
	drv_vq_init(&d->k, &d->vq, 0, GPA_QUEUE);
	r = blk_open(path, &opts, &d->k.loop, &d->backend, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "bench_blk: %s\n", err);
		return r;
	}
	d->disk_bytes = blk_size(d->backend);
	r = virtio_blk_init(&d->blk, &d->k.gm, d->backend, 0, NULL, false);
	if (r < 0) {
		fprintf(stderr, "bench_blk: virtio_blk_init: %s\n", strerror(-r));
		blk_close(d->backend);
		d->backend = NULL;
		return r;
	}
	d->k.pci = d->opt.pci;
	return drv_attach(&d->k, &d->blk.dev);
}

static void teardown(struct drv *d)
{
	drv_detach(&d->k);
	if (d->blk.scratch)
		virtio_blk_exit(&d->blk); /* closes the backend */
	else
		blk_close(d->backend);
	drv_exit(&d->k);
}

/* ------------------------------------------------------------------ */
/* The test file                                                       */

/* Write @mib MiB of stamped sectors to @fd (preallocated first, so that
 * every block is real and reads hit the disk). */
static int fill_file(int fd, const char *path, uint64_t mib)
{
	const size_t chunk = 1u << 20;
	uint8_t *buf = calloc(1, chunk);
	int r = 0;

	if (!buf)
		return -ENOMEM;
	if (ftruncate(fd, 0) < 0 || (r = posix_fallocate(fd, 0, (off_t)(mib << 20))) != 0) {
		r = r ? -r : -errno;
		fprintf(stderr, "bench_blk: cannot allocate %" PRIu64 " MiB for %s: %s\n", mib, path,
			strerror(-r));
		free(buf);
		return r;
	}
	for (uint64_t m = 0; m < mib; m++) {
		for (size_t s = 0; s < chunk / SECTOR; s++) {
			uint64_t st = stamp_of((m << 20) / SECTOR + s);

			memcpy(buf + s * SECTOR, &st, 8);
			memset(buf + s * SECTOR + 8, (int)(s & 0xff) | 1, SECTOR - 8);
		}
		if (pwrite(fd, buf, chunk, (off_t)(m << 20)) != (ssize_t)chunk) {
			r = errno ? -errno : -EIO;
			fprintf(stderr, "bench_blk: writing %s: %s\n", path, strerror(-r));
			break;
		}
	}
	if (!r && fdatasync(fd) < 0)
		r = -errno;
	free(buf);
	return r;
}

/* Whether @path takes O_DIRECT (what cache=none gets; the backend falls
 * back to the page cache, with a warning, where it does not). */
static bool file_takes_direct(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* ------------------------------------------------------------------ */
/* Arguments                                                           */

static int parse_size(const char *s, uint32_t *out)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);

	if (end == s)
		return -1;
	if (*end == 'k' || *end == 'K')
		v <<= 10, end++;
	else if (*end == 'm' || *end == 'M')
		v <<= 20, end++;
	if (*end || v == 0 || v % SECTOR || v > MAX_BS)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

static const struct point default_points[] = {
	{ RW_RANDREAD, 4096, 1 },     { RW_RANDREAD, 4096, 32 },
	{ RW_RANDWRITE, 4096, 1 },    { RW_RANDWRITE, 4096, 32 },
	{ RW_READ, 1u << 20, 1 },     { RW_READ, 1u << 20, 32 },
	{ RW_WRITE, 1u << 20, 1 },    { RW_WRITE, 1u << 20, 32 },
};

#define MAX_POINTS 64

/* "all", "none" or RW:BS:QD[,...] into @pts.  Returns the count or -1. */
static int parse_points(const char *arg, struct point *pts)
{
	char buf[1024], *save = NULL, *tok;
	int n = 0;

	if (!strcmp(arg, "all")) {
		memcpy(pts, default_points, sizeof(default_points));
		return (int)(sizeof(default_points) / sizeof(default_points[0]));
	}
	if (!strcmp(arg, "none"))
		return 0;
	if (strlen(arg) >= sizeof(buf))
		return -1;
	strcpy(buf, arg);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *rw = tok, *bs = strchr(tok, ':'), *qd, *end;
		unsigned long q;
		int k;

		if (!bs || !(qd = strchr(bs + 1, ':')) || n >= MAX_POINTS)
			return -1;
		*bs++ = 0;
		*qd++ = 0;
		for (k = 0; k < 4 && strcmp(rw, rw_names[k]); k++)
			;
		q = strtoul(qd, &end, 10);
		if (k == 4 || parse_size(bs, &pts[n].bs) < 0 || *end || q < 1 || q > MAX_QD)
			return -1;
		pts[n].rw = (enum rw_kind)k;
		pts[n].qd = (unsigned)q;
		n++;
	}
	return n;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: bench_blk_harness (--file PATH | --scratch DIR) [options]\n"
		"  --file PATH        the disk image (a regular file or block device)\n"
		"  --scratch DIR      use a temporary file in DIR, removed at exit\n"
		"  --create MIB       (re)create the file first: MIB MiB, preallocated and\n"
		"                     filled with per-sector stamps (default 64 with --scratch)\n"
		"  --points LIST      all (default), none, or RW:BS:QD[,...]; RW is randread,\n"
		"                     randwrite, read or write, BS bytes (k, m suffixes), QD 1..%u\n"
		"  --time S           seconds per point (default 3)\n"
		"  --cache MODE       none (O_DIRECT, default), writeback or unsafe\n"
		"  --no-event-idx     do not negotiate VIRTIO_F_EVENT_IDX\n"
		"  --verify           check read data against the stamps (needs a --create file)\n"
		"  --pci              the device on virtio-pci with MSI-X (default: virtio-mmio)\n"
		"  --json             one JSON object per point instead of a table\n",
		MAX_QD);
}

int main(int argc, char **argv)
{
	static struct drv drv;
	struct drv *d = &drv;
	struct point pts[MAX_POINTS];
	const char *path = NULL, *scratch = NULL;
	char scratch_path[PATH_MAX];
	enum blk_cache cache = BLK_CACHE_NONE;
	double seconds = 3.0;
	uint64_t create_mib = 0;
	bool direct;
	unsigned max_qd = 1;
	uint32_t max_bs = SECTOR;
	int n_points = -1, status = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool has_value = true;

		if (!strcmp(a, "--file") && v) {
			path = v;
		} else if (!strcmp(a, "--scratch") && v) {
			scratch = v;
		} else if (!strcmp(a, "--create") && v) {
			create_mib = strtoull(v, NULL, 10);
			if (!create_mib) {
				usage(stderr);
				return 2;
			}
		} else if (!strcmp(a, "--points") && v) {
			n_points = parse_points(v, pts);
			if (n_points < 0) {
				fprintf(stderr, "bench_blk: bad --points %s\n", v);
				return 2;
			}
		} else if (!strcmp(a, "--time") && v) {
			seconds = strtod(v, NULL);
			if (!(seconds > 0)) {
				usage(stderr);
				return 2;
			}
		} else if (!strcmp(a, "--cache") && v) {
			if (!strcmp(v, "none"))
				cache = BLK_CACHE_NONE;
			else if (!strcmp(v, "writeback"))
				cache = BLK_CACHE_WRITEBACK;
			else if (!strcmp(v, "unsafe"))
				cache = BLK_CACHE_UNSAFE;
			else {
				usage(stderr);
				return 2;
			}
		} else {
			has_value = false;
			if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
				usage(stdout);
				return 0;
			} else if (!drv_opt_flag(&d->opt, a)) {
				usage(stderr);
				return 2;
			}
		}
		if (has_value)
			i++;
	}
	if (!path == !scratch) {
		usage(stderr);
		return 2;
	}
	if (n_points < 0)
		n_points = parse_points("all", pts);

	if (scratch) {
		int fd;

		snprintf(scratch_path, sizeof(scratch_path), "%s/bench_blk.XXXXXX", scratch);
		fd = mkstemp(scratch_path);
		if (fd < 0) {
			fprintf(stderr, "bench_blk: cannot create a file in %s: %s\n", scratch,
				strerror(errno));
			return 2;
		}
		close(fd);
		path = scratch_path;
		if (!create_mib)
			create_mib = 64;
	}
	if (create_mib) {
		int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);

		if (fd < 0) {
			fprintf(stderr, "bench_blk: cannot create %s: %s\n", path, strerror(errno));
			status = 2;
			goto out_unlink;
		}
		if (fill_file(fd, path, create_mib) < 0)
			status = 2;
		close(fd);
		if (status)
			goto out_unlink;
	}
	if (n_points == 0)
		goto out_unlink;

	for (int i = 0; i < n_points; i++) {
		if (pts[i].qd > max_qd)
			max_qd = pts[i].qd;
		if (pts[i].bs > max_bs)
			max_bs = pts[i].bs;
	}
	direct = cache == BLK_CACHE_NONE && file_takes_direct(path);
	if (setup(d, path, cache, max_qd, max_bs) < 0) {
		status = 2;
		goto out;
	}
	for (int i = 0; i < n_points; i++) {
		if (pts[i].bs > d->disk_bytes) {
			fprintf(stderr, "bench_blk: %s is smaller than one %u-byte block\n", path,
				pts[i].bs);
			status = 2;
			goto out;
		}
	}
	if (!d->opt.json)
		printf("%-22s %10s %10s %8s %10s %8s %8s\n", "point", "IOPS", "MB/s", "errors",
		       "requests", "kicks/rq", "irqs/rq");
	for (int i = 0; i < n_points; i++) {
		const struct point *pt = &pts[i];
		struct result res;
		char name[48];
		int r = run_point(d, pt, seconds, &res);
		double iops = res.seconds > 0 ? (double)res.ios / res.seconds : 0;
		double mbps = res.seconds > 0 ? (double)res.bytes / res.seconds / 1e6 : 0;

		if (pt->bs % (1u << 20) == 0)
			snprintf(name, sizeof(name), "%s-%um-qd%u", rw_names[pt->rw], pt->bs >> 20, pt->qd);
		else if (pt->bs % 1024 == 0)
			snprintf(name, sizeof(name), "%s-%uk-qd%u", rw_names[pt->rw], pt->bs >> 10, pt->qd);
		else
			snprintf(name, sizeof(name), "%s-%u-qd%u", rw_names[pt->rw], pt->bs, pt->qd);
		if (d->opt.json)
			printf("{\"point\": \"%s\", \"rw\": \"%s\", \"bs\": %u, \"qd\": %u, "
			       "\"seconds\": %.6f, \"ios\": %" PRIu64 ", \"bytes\": %" PRIu64 ", "
			       "\"iops\": %.1f, \"mbps\": %.2f, \"errors\": %" PRIu64 ", "
			       "\"kicks\": %" PRIu64 ", \"interrupts\": %" PRIu64 ", "
			       "\"cpu_seconds\": %.4f, \"hung\": %s, \"needs_reset\": %s, "
			       "\"event_idx\": %s, \"direct\": %s, \"aio\": %s, \"cache\": \"%s\"}\n",
			       name, rw_names[pt->rw], pt->bs, pt->qd, res.seconds, res.ios, res.bytes,
			       iops, mbps, res.c.errors, res.c.kicks, res.c.interrupts,
			       res.cpu_seconds, res.c.hung ? "true" : "false",
			       res.c.needs_reset ? "true" : "false", d->k.event_idx ? "true" : "false",
			       direct ? "true" : "false",
			       blk_uses_aio(d->backend) ? "true" : "false",
			       cache == BLK_CACHE_NONE ? "none" :
			       cache == BLK_CACHE_WRITEBACK ? "writeback" : "unsafe");
		else
			printf("%-22s %10.0f %10.1f %8" PRIu64 " %10" PRIu64 " %8.3f %8.3f\n", name, iops,
			       mbps, res.c.errors, res.ios,
			       res.ios ? (double)res.c.kicks / (double)res.ios : 0.0,
			       res.ios ? (double)res.c.interrupts / (double)res.ios : 0.0);
		fflush(stdout);
		if (r < 0) {
			status = 1;
			if (res.c.hung || res.c.needs_reset) {
				/* The device cannot be reset safely with requests
				 * stuck in it: stop here, without tearing down. */
				if (scratch)
					unlink(scratch_path);
				return 1;
			}
		}
	}
out:
	teardown(d);
out_unlink:
	if (scratch)
		unlink(scratch_path);
	return status;
}

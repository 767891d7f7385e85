// SPDX-License-Identifier: MIT
/*
 * Fuzz target for the virtio-blk request path (src/virtio/blk.c) behind its
 * virtio-mmio transport, on a 64 KiB raw disk in the scratch directory:
 * request headers and types, sectors, segment layouts, discard/write-zeroes
 * segments, GET_ID, flushes, and resets with requests in flight.
 *
 * Input: byte 0 (bit 0: a read-only disk; bit 1: cache=unsafe, FLUSH
 * ignored), then fuzz_virtio_dev.h's driver input for one queue.  The
 * program's device step (op 3) quiesces the device (every request in
 * flight completes).  A refused request (IOERR, UNSUPP, NEEDS_RESET) is
 * fine; a crash, a sanitizer report, a hang, or a disk that grew is a
 * finding.
 */
#include <fcntl.h>
#include <sys/stat.h>

#include "fuzz_virtio_dev.h"
#include "vmrun/block.h"
#include "vmrun/virtio_blk.h"

#define DISK_BYTES (64u << 10)

static void blk_step(struct fzv *v, uint8_t arg, uint32_t val, void *opaque)
{
	(void)v, (void)arg, (void)val;
	virtio_blk_quiesce(opaque);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fzv v;
	static struct virtio_blk b;
	static char path[300];
	struct fz f = { data, size };
	struct blk_open_opts opts = { .no_aio = true, .format = BLK_FORMAT_RAW };
	struct virtio_mmio_host host;
	struct blk *disk;
	struct stat st;
	char err[512];
	uint8_t flags;

	fz_quiet();
	if (!path[0])
		fz_scratch_path(path, sizeof(path), "blk.raw");
	flags = fz_u8(&f);
	if (!fzv_parse(&v, &f, 1))
		abort();
	/* A fresh, zeroed disk for each input. */
	fz_fresh_file(path, DISK_BYTES);
	opts.readonly = flags & 1;
	opts.cache = flags & 2 ? BLK_CACHE_UNSAFE : BLK_CACHE_WRITEBACK;
	if (evloop_init(&v.loop))
		abort();
	if (blk_open(path, &opts, &v.loop, &disk, err, sizeof(err))) {
		fprintf(stderr, "fuzz_virtio_blk: %s\n", err);
		abort();
	}
	if (virtio_blk_init(&b, &v.gm, disk, 0, "fuzz-serial", flags & 2))
		abort();
	host = (struct virtio_mmio_host){ .vm_fd = -1, .loop = &v.loop };
	if (virtio_mmio_init(&v.m, &b.dev, FZV_BASE, 5, &host, err, sizeof(err))) {
		fprintf(stderr, "fuzz_virtio_blk: %s\n", err);
		abort();
	}
	fzv_start(&v, 1);
	fzv_run(&v, 1, blk_step, &b);
	virtio_blk_exit(&b); /* drains: every completion runs */
	virtio_mmio_exit(&v.m);
	evloop_exit(&v.loop);
	if (stat(path, &st) || st.st_size != DISK_BYTES)
		abort(); /* a request went past the end of the disk */
	return 0;
}

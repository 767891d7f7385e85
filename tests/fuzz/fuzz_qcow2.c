// SPDX-License-Identifier: MIT
/*
 * Fuzz target for the qcow2 driver (src/block/qcow2.c) through the block
 * layer's interface (include/vmrun/block.h): open a mutated image, then
 * read, write, write zeroes, discard and flush at offsets from the input.
 * The image lies in the scratch directory as "top", over a backing file
 * "base" (both from the input; backing names are kept inside the
 * directory, fuzz_common.h).
 *
 * Input:
 *   u8        bit 0: open read-only; bit 1: format probed (else qcow2 given)
 *   u8        operations (mod 9), then per operation
 *             {u8 op, u64 offset, u32 length}: offsets modulo the virtual
 *             size plus a page, both rounded down to 512 bytes, lengths
 *             modulo 256 KiB; op % 5: read, write, write zeroes, discard,
 *             flush
 *   u32       length of the top image, the top image, then the base.
 * A refusal at open or of a request is fine (with its message); a crash, a
 * sanitizer report, a hang, or a write (or write zeroes) that does not
 * read back as written is a finding.
 */
#include <errno.h>

#include "fuzz_common.h"
#include "vmrun/block.h"

#define OPS_MAX 8
#define IO_MAX (256u << 10)

struct op {
	uint8_t op;
	uint64_t off;
	uint32_t len;
};

static uint8_t wbuf[IO_MAX], rbuf[IO_MAX];

static void run_op(struct blk *b, const struct op *o, unsigned i)
{
	uint64_t size = blk_size(b);
	uint64_t off = (o->off % (size + 4096)) & ~511ull;
	uint64_t len = (o->len % IO_MAX) & ~511ull;
	bool ro = blk_readonly(b);

	switch (o->op % 5) {
	case 0:
		fz_ignore(blk_io_wait(b, BLK_READ, off, rbuf, len));
		break;
	case 1:
		memset(wbuf, 0x40 + (int)i, len);
		if (blk_io_wait(b, BLK_WRITE, off, wbuf, len) == 0 && !ro) {
			if (blk_io_wait(b, BLK_READ, off, rbuf, len) == 0 && memcmp(rbuf, wbuf, len)) {
				fprintf(stderr, "fuzz_qcow2: a write at %llu (%llu bytes) does not read back\n",
					(unsigned long long)off, (unsigned long long)len);
				abort();
			}
		}
		break;
	case 2:
		if (blk_io_wait(b, BLK_WRITE_ZEROES, off, NULL, len) == 0 && !ro && len) {
			memset(wbuf, 0, len);
			if (blk_io_wait(b, BLK_READ, off, rbuf, len) == 0 && memcmp(rbuf, wbuf, len)) {
				fprintf(stderr, "fuzz_qcow2: write zeroes at %llu (%llu bytes) does not read back as zeroes\n",
					(unsigned long long)off, (unsigned long long)len);
				abort();
			}
		}
		break;
	case 3:
		fz_ignore(blk_io_wait(b, BLK_DISCARD, off, NULL, len));
		break;
	default:
		fz_ignore(blk_io_wait(b, BLK_FLUSH, 0, NULL, 0));
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char top[300], base[300];
	struct fz f = { data, size };
	struct blk_open_opts opts = { .no_aio = true };
	struct op ops[OPS_MAX];
	unsigned n_ops;
	const uint8_t *p;
	uint8_t *img;
	size_t got;
	struct blk *b;
	char err[1024] = "";
	uint8_t flags;
	uint32_t top_len;

	fz_quiet();
	if (!top[0]) {
		fz_scratch_path(top, sizeof(top), "top");
		fz_scratch_path(base, sizeof(base), "base");
	}
	flags = fz_u8(&f);
	n_ops = fz_u8(&f) % (OPS_MAX + 1);
	for (unsigned i = 0; i < n_ops; i++) {
		ops[i].op = fz_u8(&f);
		ops[i].off = fz_u64(&f);
		ops[i].len = fz_u32(&f);
	}
	top_len = fz_u32(&f);
	p = fz_take(&f, top_len, &got);
	img = malloc(got ? got : 1);
	if (!img)
		abort();
	memcpy(img, p, got);
	fz_qcow2_confine_backing(img, got);
	if (fz_write_file(top, img, got))
		abort();
	free(img);
	p = fz_take(&f, f.left, &got);
	img = malloc(got ? got : 1);
	if (!img)
		abort();
	memcpy(img, p, got);
	fz_qcow2_confine_backing(img, got);
	if (fz_write_file(base, img, got))
		abort();
	free(img);

	opts.readonly = flags & 1;
	opts.format = flags & 2 ? BLK_FORMAT_AUTO : BLK_FORMAT_QCOW2;
	if (blk_open(top, &opts, NULL, &b, err, sizeof(err))) {
		fz_check_message(err);
		return 0;
	}
	for (unsigned i = 0; i < n_ops; i++)
		run_op(b, &ops[i], i);
	blk_close(b);
	return 0;
}

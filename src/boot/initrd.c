// SPDX-License-Identifier: MIT
/*
 * Host-side inflation of a gzip initramfs (--initrd-decompress=host).
 *
 * Linux unpacks a gzip initramfs itself, but on a nested host without
 * VT-x/AMD-V its inflate loop is interpreted: 27 s for a 2 MB busybox
 * archive (PLATFORM.md), against milliseconds here.  The kernel accepts the
 * same archive uncompressed, so vmrun hands it over inflated.  Only an
 * initrd that is gzip from start to end is touched (one or more members, as
 * `cat a.gz b.gz` makes, with zero padding between or after them, which the
 * kernel skips too); anything else, such as an uncompressed microcode
 * archive in front of a compressed one, goes to the guest as it is.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "vmrun/boot.h"
#include "vmrun/log.h"

#define GZIP_MAGIC0 0x1f
#define GZIP_MAGIC1 0x8b
#define INFLATE_FIRST_ALLOC (4u << 20)

static bool at_gzip_member(const uint8_t *p, size_t left)
{
	return left >= 2 && p[0] == GZIP_MAGIC0 && p[1] == GZIP_MAGIC1;
}

/* Grow *@buf (capacity *@cap) towards @limit bytes.  0, -EFBIG at the
 * limit, -ENOMEM. */
static int grow(uint8_t **buf, size_t *cap, size_t limit)
{
	size_t ncap = *cap ? *cap * 2 : INFLATE_FIRST_ALLOC;
	uint8_t *p;

	if (*cap >= limit)
		return -EFBIG;
	if (ncap > limit || ncap < *cap)
		ncap = limit;
	p = realloc(*buf, ncap);
	if (!p)
		return -ENOMEM;
	*buf = p;
	*cap = ncap;
	return 0;
}

int initrd_gunzip(const uint8_t *in, size_t in_len, uint64_t max, uint8_t **out,
		  size_t *out_len, char *err, size_t errlen)
{
	/* One byte past @max proves "too big" whatever zlib buffers. */
	size_t limit = max >= SIZE_MAX ? SIZE_MAX : (size_t)max + 1;
	uint8_t *buf = NULL;
	size_t cap = 0, len = 0, pos = 0;
	z_stream z;
	int r = 0;

	*out = NULL;
	*out_len = 0;
	/* zlib counts input in 32 bits; no real initrd comes near that. */
	if (!at_gzip_member(in, in_len) || in_len > UINT_MAX)
		return 0;
	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) /* 16: gzip wrapper only */
		return errmsg(-ENOMEM, err, errlen, "out of memory for inflating the initrd");
	while (pos < in_len) {
		if (!at_gzip_member(in + pos, in_len - pos)) {
			r = 0; /* mixed content: the guest gets the original */
			goto out;
		}
		inflateReset(&z);
		z.next_in = (Bytef *)(in + pos);
		z.avail_in = (uInt)(in_len - pos);
		for (;;) {
			int zr;

			if (len == cap && (r = grow(&buf, &cap, limit)) < 0) {
				r = r == -EFBIG ?
				    errmsg(-EFBIG, err, errlen, "inflates to more than %llu MiB of guest RAM",
					   (unsigned long long)(max >> 20)) :
				    errmsg(r, err, errlen, "out of memory for inflating the initrd");
				goto out;
			}
			z.next_out = buf + len;
			z.avail_out = cap - len > UINT_MAX ? UINT_MAX : (uInt)(cap - len);
			zr = inflate(&z, Z_NO_FLUSH);
			len = (size_t)(z.next_out - buf);
			if (zr == Z_STREAM_END)
				break;
			if (zr == Z_BUF_ERROR && z.avail_in == 0 && z.avail_out > 0) {
				r = errmsg(-EINVAL, err, errlen, "gzip data is truncated");
				goto out;
			}
			if (zr != Z_OK && zr != Z_BUF_ERROR) {
				r = errmsg(zr == Z_MEM_ERROR ? -ENOMEM : -EINVAL, err, errlen,
					   "gzip data is corrupt (%s)", z.msg ? z.msg : "bad data");
				goto out;
			}
		}
		pos = (size_t)(z.next_in - in);
		while (pos < in_len && in[pos] == 0)
			pos++;
	}
	if (len > max) {
		r = errmsg(-EFBIG, err, errlen, "inflates to more than %llu MiB of guest RAM",
			   (unsigned long long)(max >> 20));
		goto out;
	}
	*out = buf;
	*out_len = len;
	buf = NULL;
	r = 1;
out:
	inflateEnd(&z);
	free(buf);
	return r;
}

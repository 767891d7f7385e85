/* bzImage kernels, per the Linux x86 boot protocol
 * (Documentation/arch/x86/boot.rst): the setup header, the protected-mode
 * kernel and its compressed payload, which vmrun decompresses on the host
 * into the vmlinux ELF (or leaves to the kernel's own decompressor).
 *
 * The image is untrusted: every offset and size is checked against the file
 * length in 64-bit arithmetic that cannot overflow (all inputs are at most
 * 32 bits wide), and decompressed output is bounded so that a small file
 * cannot make vmrun allocate without limit. */
#include <bzlib.h>
#include <errno.h>
#include <limits.h>
#include <lz4.h>
#include <lzma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "vmrun/boot.h"
#include "vmrun/guest_mem.h"
#include "vmrun/log.h"

#define HDR_JUMP_OFFSET 0x200 /* a short jump whose displacement byte gives the header's end */
#define HDR_MAGIC_OFFSET 0x202
#define SECTOR 512
#define DEFAULT_SETUP_SECTS 4 /* setup_sects == 0 means 4 (boot.rst) */
#define DEFAULT_LOAD_ADDR 0x100000ull
#define DEFAULT_INITRD_END 0x38000000ull /* boot.rst's default initrd_addr_max + 1 */
#define HEAP_END_PTR 0xfe00 /* end of the setup heap, relative to the real-mode code, - 0x200 */

/* Header bytes (from 0x1f1) that each protocol level must have, up to and
 * including the last field vmrun reads at that level. */
#define HDR_END_206 0x23c /* cmdline_size */
#define HDR_END_208 0x250 /* payload_length */
#define HDR_END_210 0x264 /* init_size */

/* Decompression: liblzma's memory limit (Linux uses dictionaries up to
 * 64 MiB), the first output allocation when the payload's size trailer is
 * useless, and lz4's legacy block size. */
#define LZMA_MEMLIMIT (256ull << 20)
#define OUT_INITIAL (1u << 20)
#define LZ4_LEGACY_MAGIC 0x184c2102u
#define LZ4_LEGACY_BLOCK (8u << 20)

_Static_assert(sizeof(struct setup_header) == 0x26c - BZIMAGE_HDR_OFFSET, "setup_header size");

static bool in_file(uint64_t off, uint64_t size, size_t len)
{
	return off <= len && size <= len - off;
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

bool bzimage_detect(const uint8_t *buf, size_t len)
{
	return len >= HDR_MAGIC_OFFSET + 4 && rd32(buf + HDR_MAGIC_OFFSET) == BOOT_HDR_MAGIC;
}

const char *bzimage_codec_name(enum bzimage_codec codec)
{
	switch (codec) {
	case BZIMAGE_CODEC_NONE: return "uncompressed";
	case BZIMAGE_CODEC_GZIP: return "gzip";
	case BZIMAGE_CODEC_XZ: return "xz";
	case BZIMAGE_CODEC_LZMA: return "lzma";
	case BZIMAGE_CODEC_ZSTD: return "zstd";
	case BZIMAGE_CODEC_LZ4: return "lz4";
	case BZIMAGE_CODEC_BZIP2: return "bzip2";
	default: return "unknown";
	}
}

struct codec_magic {
	enum bzimage_codec codec;
	uint8_t len;
	uint8_t bytes[6];
};

/* The formats' own magic numbers; lzma-alone has none, but Linux always
 * writes properties 0x5d with a dictionary below 16 MiB ("5d 00 00"). */
static const struct codec_magic codec_magics[] = {
	{ BZIMAGE_CODEC_NONE, 4, { 0x7f, 'E', 'L', 'F' } },
	{ BZIMAGE_CODEC_GZIP, 2, { 0x1f, 0x8b } },
	{ BZIMAGE_CODEC_XZ, 6, { 0xfd, '7', 'z', 'X', 'Z', 0x00 } },
	{ BZIMAGE_CODEC_LZMA, 3, { 0x5d, 0x00, 0x00 } },
	{ BZIMAGE_CODEC_ZSTD, 4, { 0x28, 0xb5, 0x2f, 0xfd } },
	{ BZIMAGE_CODEC_LZ4, 4, { 0x02, 0x21, 0x4c, 0x18 } },
	{ BZIMAGE_CODEC_BZIP2, 3, { 'B', 'Z', 'h' } },
};

static enum bzimage_codec codec_identify(const uint8_t *p, uint64_t len)
{
	for (size_t i = 0; i < sizeof(codec_magics) / sizeof(codec_magics[0]); i++)
		if (len >= codec_magics[i].len && !memcmp(p, codec_magics[i].bytes, codec_magics[i].len))
			return codec_magics[i].codec;
	return BZIMAGE_CODEC_UNKNOWN;
}

int bzimage_parse(const uint8_t *buf, size_t len, struct bzimage *bz, char *err, size_t errlen)
{
	struct setup_header *h = &bz->hdr;
	unsigned setup_sects;
	uint64_t hdr_end, need_end;
	uint16_t version;

	memset(bz, 0, sizeof(*bz));
	if (!bzimage_detect(buf, len))
		return errmsg(-ENOEXEC, err, errlen, "not a bzImage (no \"HdrS\" at 0x202)");
	if (len < 0x208)
		return errmsg(-ENOEXEC, err, errlen, "truncated setup header");
	version = (uint16_t)(buf[0x206] | buf[0x207] << 8);
	if (version < BZIMAGE_MIN_VERSION)
		return errmsg(-ENOEXEC, err, errlen,
			      "boot protocol %u.%02u is too old (vmrun needs 2.06 or later)",
			      version >> 8, version & 0xff);

	/* The header ends where the jump at 0x200 lands; only that much of
	 * it is the kernel's, the rest of the zero page is the loader's. */
	hdr_end = HDR_MAGIC_OFFSET + (uint64_t)buf[HDR_JUMP_OFFSET + 1];
	need_end = version >= 0x020a ? HDR_END_210 : version >= 0x0208 ? HDR_END_208 : HDR_END_206;
	if (hdr_end < need_end)
		return errmsg(-ENOEXEC, err, errlen,
			      "setup header ends at 0x%llx, too short for boot protocol %u.%02u",
			      (unsigned long long)hdr_end, version >> 8, version & 0xff);
	if (hdr_end > BZIMAGE_HDR_OFFSET + sizeof(*h))
		hdr_end = BZIMAGE_HDR_OFFSET + sizeof(*h); /* newer fields vmrun does not know */
	if (hdr_end > len)
		return errmsg(-ENOEXEC, err, errlen, "truncated setup header");
	bz->hdr_len = (size_t)(hdr_end - BZIMAGE_HDR_OFFSET);
	memcpy(h, buf + BZIMAGE_HDR_OFFSET, bz->hdr_len);

	setup_sects = h->setup_sects ? h->setup_sects : DEFAULT_SETUP_SECTS;
	bz->pm_offset = ((uint64_t)setup_sects + 1) * SECTOR;
	if (bz->pm_offset >= len)
		return errmsg(-ENOEXEC, err, errlen,
			      "setup_sects %u puts the kernel at 0x%llx, past the end of the file (%zu bytes)",
			      h->setup_sects, (unsigned long long)bz->pm_offset, len);
	bz->pm_size = len - bz->pm_offset;
	/* syssize counts 16-byte paragraphs of protected-mode kernel. */
	if ((uint64_t)h->syssize * 16 > bz->pm_size)
		return errmsg(-ENOEXEC, err, errlen,
			      "truncated: the header announces %llu bytes of kernel, the file has %llu",
			      (unsigned long long)h->syssize * 16, (unsigned long long)bz->pm_size);
	if (h->syssize)
		bz->pm_size = (uint64_t)h->syssize * 16;

	if (version < 0x0208)
		return 0;
	/* payload_offset counts from the start of the protected-mode kernel. */
	bz->payload_offset = bz->pm_offset + h->payload_offset;
	bz->payload_size = h->payload_length;
	if (!bz->payload_size || !in_file(bz->payload_offset, bz->payload_size, len) ||
	    bz->payload_offset + bz->payload_size > bz->pm_offset + bz->pm_size)
		return errmsg(-ENOEXEC, err, errlen,
			      "payload (offset 0x%x, %u bytes) is not inside the kernel's 0x%llx bytes",
			      h->payload_offset, h->payload_length, (unsigned long long)bz->pm_size);
	bz->has_payload = true;
	bz->codec = codec_identify(buf + bz->payload_offset, bz->payload_size);
	return 0;
}

/* ---- host-side decompression ---- */

/* The growing output buffer.  It is allowed one byte more than @max, so
 * that output of exactly @max bytes completes and one more byte proves the
 * stream too large, whatever the decoder's buffering. */
struct outbuf {
	uint8_t *p;
	size_t len, cap;
	size_t limit; /* max + 1 */
};

/* Make room for more output: double the buffer, or make it @want bytes
 * when that is more, never past the limit.  0, -EFBIG when the buffer
 * already holds the limit, or -ENOMEM. */
static int outbuf_grow(struct outbuf *o, size_t want)
{
	size_t ncap;
	uint8_t *p;

	if (o->cap >= o->limit)
		return -EFBIG;
	ncap = o->cap > o->limit / 2 ? o->limit : o->cap * 2;
	if (ncap < want)
		ncap = want;
	if (ncap > o->limit)
		ncap = o->limit;
	p = realloc(o->p, ncap);
	if (!p)
		return -ENOMEM;
	o->p = p;
	o->cap = ncap;
	return 0;
}

/* Why a decoder stopped, for the one-line message. */
enum decode_result {
	DECODE_OK,
	DECODE_TRUNCATED,
	DECODE_CORRUPT,
	DECODE_TOO_BIG,
	DECODE_NOMEM,
};

static enum decode_result grow_result(int r)
{
	return r == -EFBIG ? DECODE_TOO_BIG : DECODE_NOMEM;
}

/* zlib and liblzma count in uInt/size_t windows: feed them at most this
 * much output space per call so the counters never wrap. */
static unsigned out_window(const struct outbuf *o)
{
	size_t room = o->cap - o->len;

	return room > UINT_MAX ? UINT_MAX : (unsigned)room;
}

static enum decode_result decode_gzip(const uint8_t *in, size_t in_len, struct outbuf *o,
				      const char **why)
{
	z_stream z;
	enum decode_result res = DECODE_CORRUPT;
	int r;

	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) /* 16: a gzip wrapper only */
		return DECODE_NOMEM;
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)in_len; /* payload_length is 32 bits */
	for (;;) {
		if (o->len == o->cap) {
			r = outbuf_grow(o, OUT_INITIAL);
			if (r) {
				res = grow_result(r);
				break;
			}
		}
		z.next_out = o->p + o->len;
		z.avail_out = out_window(o);
		r = inflate(&z, Z_NO_FLUSH);
		o->len = (size_t)(z.next_out - o->p);
		if (r == Z_STREAM_END) {
			res = DECODE_OK;
			break;
		}
		if (r == Z_BUF_ERROR && z.avail_in == 0) {
			res = DECODE_TRUNCATED;
			break;
		}
		if (r != Z_OK && r != Z_BUF_ERROR) {
			res = r == Z_MEM_ERROR ? DECODE_NOMEM : DECODE_CORRUPT;
			*why = z.msg;
			break;
		}
	}
	inflateEnd(&z);
	return res;
}

/* xz (@alone false) or lzma-alone (@alone true): one stream; what follows
 * it (Linux's size trailer) is ignored. */
static enum decode_result decode_lzma(const uint8_t *in, size_t in_len, struct outbuf *o,
				      bool alone, const char **why)
{
	lzma_stream s = LZMA_STREAM_INIT;
	enum decode_result res = DECODE_CORRUPT;
	lzma_ret r;

	r = alone ? lzma_alone_decoder(&s, LZMA_MEMLIMIT) : lzma_stream_decoder(&s, LZMA_MEMLIMIT, 0);
	if (r != LZMA_OK)
		return DECODE_NOMEM;
	s.next_in = in;
	s.avail_in = in_len;
	for (;;) {
		if (o->len == o->cap) {
			int g = outbuf_grow(o, OUT_INITIAL);

			if (g) {
				res = grow_result(g);
				break;
			}
		}
		s.next_out = o->p + o->len;
		s.avail_out = o->cap - o->len;
		r = lzma_code(&s, LZMA_FINISH); /* all input is there from the start */
		o->len = (size_t)(s.next_out - o->p);
		if (r == LZMA_STREAM_END) {
			res = DECODE_OK;
			break;
		}
		if (r == LZMA_OK)
			continue;
		if (r == LZMA_BUF_ERROR && s.avail_in == 0 && s.avail_out > 0) {
			res = DECODE_TRUNCATED;
		} else if (r == LZMA_MEM_ERROR) {
			res = DECODE_NOMEM;
		} else if (r == LZMA_MEMLIMIT_ERROR) {
			*why = "needs more decoder memory than vmrun allows";
		} else if (r == LZMA_BUF_ERROR && s.avail_out == 0) {
			continue; /* grow on the next round */
		} else {
			*why = r == LZMA_FORMAT_ERROR ? "bad header" :
			       r == LZMA_OPTIONS_ERROR ? "unsupported options" :
			       r == LZMA_DATA_ERROR ? "bad data" : "decoder error";
		}
		break;
	}
	lzma_end(&s);
	return res;
}

static enum decode_result decode_zstd(const uint8_t *in, size_t in_len, struct outbuf *o,
				      const char **why)
{
	ZSTD_DStream *d = ZSTD_createDStream();
	ZSTD_inBuffer ib = { in, in_len, 0 };
	enum decode_result res = DECODE_CORRUPT;

	if (!d)
		return DECODE_NOMEM;
	/* The default window limit (ZSTD_WINDOWLOG_LIMIT_DEFAULT, 128 MiB)
	 * bounds the decoder's own memory. */
	for (;;) {
		ZSTD_outBuffer ob;
		size_t r;

		if (o->len == o->cap) {
			int g = outbuf_grow(o, OUT_INITIAL);

			if (g) {
				res = grow_result(g);
				break;
			}
		}
		ob = (ZSTD_outBuffer){ o->p, o->cap, o->len };
		r = ZSTD_decompressStream(d, &ob, &ib);
		o->len = ob.pos;
		if (ZSTD_isError(r)) {
			*why = ZSTD_getErrorName(r);
			break;
		}
		if (r == 0) { /* one whole frame: the size trailer after it is ignored */
			res = DECODE_OK;
			break;
		}
		if (ib.pos == ib.size && ob.pos < ob.size) {
			res = DECODE_TRUNCATED; /* flushed all it could and wants more input */
			break;
		}
	}
	ZSTD_freeDStream(d);
	return res;
}

static enum decode_result decode_bzip2(const uint8_t *in, size_t in_len, struct outbuf *o,
				       const char **why)
{
	bz_stream s;
	enum decode_result res = DECODE_CORRUPT;
	int r;

	memset(&s, 0, sizeof(s));
	if (BZ2_bzDecompressInit(&s, 0, 0) != BZ_OK)
		return DECODE_NOMEM;
	s.next_in = (char *)in;
	s.avail_in = (unsigned)in_len; /* payload_length is 32 bits */
	for (;;) {
		if (o->len == o->cap) {
			r = outbuf_grow(o, OUT_INITIAL);
			if (r) {
				res = grow_result(r);
				break;
			}
		}
		s.next_out = (char *)(o->p + o->len);
		s.avail_out = out_window(o);
		r = BZ2_bzDecompress(&s);
		o->len = (size_t)((uint8_t *)s.next_out - o->p);
		if (r == BZ_STREAM_END) {
			res = DECODE_OK;
			break;
		}
		if (r != BZ_OK) {
			res = r == BZ_MEM_ERROR ? DECODE_NOMEM : DECODE_CORRUPT;
			*why = r == BZ_DATA_ERROR_MAGIC ? "bad header" : "bad data";
			break;
		}
		if (s.avail_in == 0 && s.avail_out > 0) {
			res = DECODE_TRUNCATED;
			break;
		}
	}
	BZ2_bzDecompressEnd(&s);
	return res;
}

/* lz4's legacy frame: the magic, then blocks of [32-bit compressed size]
 * [data], each at most 8 MiB when decompressed.  The stream has no end
 * marker: it ends with the input, or (Linux) with the 4-byte size trailer. */
static enum decode_result decode_lz4(const uint8_t *in, size_t in_len, struct outbuf *o,
				     const char **why)
{
	size_t pos = 4;

	while (pos < in_len) {
		size_t left = in_len - pos, room;
		uint32_t c;
		int n, g;

		if (left == 4 && o->len > 0)
			break; /* the size trailer: no block is that short */
		if (left < 4)
			return DECODE_TRUNCATED;
		c = rd32(in + pos);
		if (c == LZ4_LEGACY_MAGIC) { /* concatenated streams */
			pos += 4;
			continue;
		}
		if (c == 0 || c > (uint32_t)LZ4_COMPRESSBOUND(LZ4_LEGACY_BLOCK)) {
			*why = "bad block size";
			return DECODE_CORRUPT;
		}
		if (c > left - 4)
			return DECODE_TRUNCATED;
		if (o->cap - o->len < LZ4_LEGACY_BLOCK && o->cap < o->limit) {
			g = outbuf_grow(o, o->len + LZ4_LEGACY_BLOCK);
			if (g)
				return grow_result(g);
		}
		room = o->cap - o->len;
		if (room > LZ4_LEGACY_BLOCK)
			room = LZ4_LEGACY_BLOCK;
		n = LZ4_decompress_safe((const char *)in + pos + 4, (char *)o->p + o->len, (int)c,
					(int)room);
		if (n < 0) {
			uint8_t *probe;

			if (room == LZ4_LEGACY_BLOCK) {
				*why = "bad block";
				return DECODE_CORRUPT;
			}
			/* Out of room below the limit: a block that would
			 * decode in full room is a too-large kernel, not a
			 * corrupt one. */
			probe = malloc(LZ4_LEGACY_BLOCK);
			if (!probe)
				return DECODE_NOMEM;
			n = LZ4_decompress_safe((const char *)in + pos + 4, (char *)probe, (int)c,
						LZ4_LEGACY_BLOCK);
			free(probe);
			if (n < 0) {
				*why = "bad block";
				return DECODE_CORRUPT;
			}
			return DECODE_TOO_BIG;
		}
		o->len += (size_t)n;
		pos += 4 + c;
	}
	return DECODE_OK;
}

int bzimage_decompress(const struct bzimage *bz, const uint8_t *buf, uint64_t max,
		       uint8_t **out, size_t *out_len, char *err, size_t errlen)
{
	const uint8_t *in = buf + bz->payload_offset;
	size_t in_len = (size_t)bz->payload_size;
	const char *name = bzimage_codec_name(bz->codec), *why = NULL;
	struct outbuf o = { 0 };
	enum decode_result res;
	uint64_t hint;
	int r;

	*out = NULL;
	*out_len = 0;
	if (!bz->has_payload) {
		unsigned v = bz->hdr.version;

		return errmsg(-ENOEXEC, err, errlen,
			      "boot protocol %u.%02u does not locate its payload (2.08+ does); try --kernel-decompress=guest",
			      v >> 8, v & 0xff);
	}
	if (bz->codec == BZIMAGE_CODEC_UNKNOWN) {
		char magic[16] = "";
		size_t used = 0;

		for (size_t i = 0; i < 4 && i < in_len; i++)
			used += (size_t)snprintf(magic + used, sizeof(magic) - used, "%s%02x",
						 i ? " " : "", in[i]);
		return errmsg(-ENOEXEC, err, errlen,
			      "cannot decompress the payload: unknown format (starts %s; vmrun knows gzip, xz, lzma, zstd, lz4, bzip2); try --kernel-decompress=guest",
			      magic);
	}
	if (max > BZIMAGE_MAX_KERNEL)
		max = BZIMAGE_MAX_KERNEL;
	o.limit = (size_t)max + 1;

	/* Linux appends the uncompressed size to every payload: a good first
	 * allocation, never trusted beyond that. */
	hint = in_len >= 4 ? rd32(in + in_len - 4) : 0;
	if (bz->codec == BZIMAGE_CODEC_NONE)
		hint = in_len;
	if (hint && hint < o.limit) {
		r = outbuf_grow(&o, (size_t)hint + 1);
		if (r)
			return errmsg(r, err, errlen, "out of memory for the decompressed kernel");
	}

	switch (bz->codec) {
	case BZIMAGE_CODEC_NONE:
		/* The hint allocated in_len + 1 bytes unless that is past the limit. */
		res = o.cap > in_len ? DECODE_OK : DECODE_TOO_BIG;
		if (res == DECODE_OK) {
			memcpy(o.p, in, in_len);
			o.len = in_len;
		}
		break;
	case BZIMAGE_CODEC_GZIP: res = decode_gzip(in, in_len, &o, &why); break;
	case BZIMAGE_CODEC_XZ: res = decode_lzma(in, in_len, &o, false, &why); break;
	case BZIMAGE_CODEC_LZMA: res = decode_lzma(in, in_len, &o, true, &why); break;
	case BZIMAGE_CODEC_ZSTD: res = decode_zstd(in, in_len, &o, &why); break;
	case BZIMAGE_CODEC_LZ4: res = decode_lz4(in, in_len, &o, &why); break;
	default: res = decode_bzip2(in, in_len, &o, &why); break;
	}
	if (res == DECODE_OK && o.len > max)
		res = DECODE_TOO_BIG;
	if (res == DECODE_OK && o.len == 0) {
		res = DECODE_CORRUPT;
		why = "no data";
	}
	switch (res) {
	case DECODE_OK:
		*out = o.p;
		*out_len = o.len;
		return 0;
	case DECODE_TRUNCATED:
		r = errmsg(-ENOEXEC, err, errlen, "%s payload is truncated", name);
		break;
	case DECODE_CORRUPT:
		r = errmsg(-ENOEXEC, err, errlen,
			   "cannot decompress the %s payload (%s); try --kernel-decompress=guest", name,
			   why ? why : "bad data");
		break;
	case DECODE_TOO_BIG:
		r = errmsg(-EFBIG, err, errlen,
			   "%s payload decompresses to more than %llu MiB (the bound is the smaller of guest RAM and %llu MiB)",
			   name, (unsigned long long)(max >> 20),
			   (unsigned long long)(BZIMAGE_MAX_KERNEL >> 20));
		break;
	default:
		r = errmsg(-ENOMEM, err, errlen, "out of memory decompressing the %s payload", name);
		break;
	}
	free(o.p);
	return r;
}

/* ---- guest-side decompression and boot_params ---- */

int bzimage_load_protected(const struct bzimage *bz, const uint8_t *buf,
			   const struct guest_mem *gm, uint64_t *load_addr, uint64_t *entry,
			   uint64_t *end, char *err, size_t errlen)
{
	const struct setup_header *h = &bz->hdr;
	uint64_t load = 0, need = bz->pm_size;
	uint8_t *dst;

	/* xloadflags (2.12+) says whether the 64-bit entry exists; 2.12 also
	 * has pref_address and init_size (2.10+). */
	if (h->version < 0x020c || !(h->xloadflags & BZIMAGE_XLF_KERNEL_64))
		return errmsg(-ENOEXEC, err, errlen,
			      "the kernel has no 64-bit entry point (xloadflags lacks XLF_KERNEL_64); it cannot decompress itself here");
	load = h->pref_address;
	if (h->init_size > need)
		need = h->init_size; /* in-place decompression needs this much */
	if (!load)
		load = h->code32_start ? h->code32_start : DEFAULT_LOAD_ADDR;
	if (load < X86_HIGH_MEM)
		return errmsg(-ENOEXEC, err, errlen,
			      "the kernel wants to load at 0x%llx, below 1 MiB where the boot structures live",
			      (unsigned long long)load);
	dst = guest_mem_ptr(gm, load, need);
	if (!dst)
		return errmsg(-ENOSPC, err, errlen,
			      "the kernel needs RAM at 0x%llx-0x%llx to decompress itself; try a larger --mem",
			      (unsigned long long)load, (unsigned long long)(load + need));
	memcpy(dst, buf + bz->pm_offset, (size_t)bz->pm_size);
	*load_addr = load;
	*entry = load + BZIMAGE_ENTRY64_OFFSET;
	*end = load + need;
	return 0;
}

uint64_t bzimage_initrd_end_max(const struct bzimage *bz)
{
	/* initrd_addr_max is the last byte the initrd may occupy (2.03+). */
	return bz->hdr.initrd_addr_max ? (uint64_t)bz->hdr.initrd_addr_max + 1 : DEFAULT_INITRD_END;
}

int bzimage_boot_params(struct boot_params *bp, const struct bzimage *bz,
			const struct boot_info *info)
{
	struct setup_header *h = &bp->hdr;
	int r = boot_params_build(bp, info);

	if (r)
		return r;
	/* The kernel's header as the file has it, then what a loader writes. */
	memcpy(h, &bz->hdr, bz->hdr_len);
	h->type_of_loader = BOOT_LOADER_UNDEFINED;
	h->loadflags |= BOOT_LOADFLAG_LOADED_HIGH | BOOT_LOADFLAG_CAN_USE_HEAP;
	h->heap_end_ptr = HEAP_END_PTR;
	h->vid_mode = 0xffff; /* "normal" */
	h->cmd_line_ptr = (uint32_t)info->cmdline_gpa;
	h->ramdisk_image = (uint32_t)info->initrd_gpa;
	h->ramdisk_size = (uint32_t)info->initrd_size;
	/* A pointer the kernel would follow: never the file's. */
	h->setup_data = 0;
	return 0;
}

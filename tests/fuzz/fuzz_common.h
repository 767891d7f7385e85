/* Helpers shared by the fuzz targets of tests/fuzz/ (see README.md).
 *
 * Each target is one LLVMFuzzerTestOneInput(); these helpers cut its input
 * into fields (a cursor that never reads past the end: a short input reads
 * as zeroes), keep vmrun's warnings off stderr, and make the scratch
 * directory the file-based targets write their images into.  Everything here
 * is test code: file-scope state is fine (one input at a time). */
#ifndef VMRUN_FUZZ_COMMON_H
#define VMRUN_FUZZ_COMMON_H

#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmrun/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A result the target does not look at (gcc's warn_unused_result ignores a
 * cast to void). */
static inline void fz_ignore(long r)
{
	(void)r;
}

/* A read cursor over the input. */
struct fz {
	const uint8_t *p;
	size_t left;
};

static inline void fz_bytes(struct fz *f, void *dst, size_t n)
{
	size_t k = n < f->left ? n : f->left;

	memcpy(dst, f->p, k);
	memset((uint8_t *)dst + k, 0, n - k);
	f->p += k;
	f->left -= k;
}

static inline uint8_t fz_u8(struct fz *f)
{
	uint8_t v;

	fz_bytes(f, &v, 1);
	return v;
}

static inline uint16_t fz_u16(struct fz *f)
{
	uint16_t v;

	fz_bytes(f, &v, 2);
	return v;
}

static inline uint32_t fz_u32(struct fz *f)
{
	uint32_t v;

	fz_bytes(f, &v, 4);
	return v;
}

static inline uint64_t fz_u64(struct fz *f)
{
	uint64_t v;

	fz_bytes(f, &v, 8);
	return v;
}

/* Take the next @n bytes (fewer when the input ends) as a slice. */
static inline const uint8_t *fz_take(struct fz *f, size_t n, size_t *got)
{
	const uint8_t *p = f->p;

	*got = n < f->left ? n : f->left;
	f->p += *got;
	f->left -= *got;
	return p;
}

/* Warnings about the hostile input are expected by the million: keep them
 * off stderr (errors still print; a target checks messages itself). */
static inline void fz_quiet(void)
{
	static bool done;

	if (!done) {
		log_set_quiet(true);
		done = true;
	}
}

/* A refusal must come with one line of text. */
static inline void fz_check_message(const char *err)
{
	if (!err[0] || strchr(err, '\n')) {
		fprintf(stderr, "fuzz: a refusal without its one-line message: \"%s\"\n", err);
		abort();
	}
}

static char fz_scratch[256];

static inline int fz_remove_one(const char *path, const struct stat *st, int type,
				struct FTW *ftw)
{
	(void)st, (void)type, (void)ftw;
	return remove(path) ? 0 : 0; /* best effort */
}

static inline void fz_scratch_remove(void)
{
	if (fz_scratch[0])
		nftw(fz_scratch, fz_remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A private scratch directory for the file-based targets (images, backing
 * files), made once per process under $TMPDIR (default /tmp) and removed
 * at exit: its path, or NULL when it cannot be made. */
static inline const char *fz_scratch_dir(void)
{
	if (!fz_scratch[0]) {
		const char *t = getenv("TMPDIR");

		snprintf(fz_scratch, sizeof(fz_scratch), "%s/vmrun-fuzz-XXXXXX", t && *t ? t : "/tmp");
		if (!mkdtemp(fz_scratch)) {
			fz_scratch[0] = 0;
			return NULL;
		}
		atexit(fz_scratch_remove);
	}
	return fz_scratch;
}

/* Put the path of @name in the scratch directory into @buf (@size bytes).
 * Aborts when the directory cannot be made: a target without its files
 * would test nothing. */
static inline void fz_scratch_path(char *buf, size_t size, const char *name)
{
	const char *dir = fz_scratch_dir();

	if (!dir || snprintf(buf, size, "%s/%s", dir, name) >= (int)size)
		abort();
}

/* Make @path a fresh file of @size zero bytes (created or truncated), as
 * the device targets want a clean disk for each input; aborts on failure. */
static inline void fz_fresh_file(const char *path, off_t size)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0 || ftruncate(fd, size))
		abort();
	close(fd);
}

/* Write @len bytes to @path (created or truncated).  Returns 0 or -1. */
static inline int fz_write_file(const char *path, const void *buf, size_t len)
{
	FILE *f = fopen(path, "wb");
	int r = 0;

	if (!f)
		return -1;
	if (len && fwrite(buf, 1, len, f) != len)
		r = -1;
	if (fclose(f))
		r = -1;
	return r;
}

/* A qcow2 image from the input may name a backing file (header bytes 8..19:
 * be64 offset, be32 length of the name).  The targets open images in their
 * scratch directory, where a relative name stays inside it; an absolute or
 * ../ name would have them open (or, for `img commit`, write) any file of
 * the machine that runs the fuzzer.  So every '/' of the name is made '_'
 * in the copy @img (@len bytes): the name's parsing is still fuzzed, its
 * reach is not. */
static inline void fz_qcow2_confine_backing(uint8_t *img, size_t len)
{
	uint64_t off = 0;
	uint32_t n = 0;

	if (len < 20 || memcmp(img, "QFI\xfb", 4))
		return;
	for (int i = 0; i < 8; i++)
		off = off << 8 | img[8 + i];
	for (int i = 0; i < 4; i++)
		n = n << 8 | img[16 + i];
	if (off >= len)
		return;
	for (uint64_t i = off; i < len && i - off < n; i++)
		if (img[i] == '/')
			img[i] = '_';
}

#endif

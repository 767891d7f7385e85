// SPDX-License-Identifier: MIT
/*
 * Fuzz target for `vmrun img` (src/snapshot/img.c): info (text and JSON),
 * commit and snapshot on a mutated qcow2 image "img" over a backing file
 * "base" in the scratch directory, both from the input (backing names are
 * kept inside the directory, fuzz_common.h).  img_main() is called as the
 * command line calls it; its results go to /dev/null.
 *
 * Input:
 *   u8   bit 0: also `img commit`; bit 1: also `img snapshot`
 *   u32  length of the image, the image, then the backing file.
 * Any exit status is fine; a crash, a sanitizer report or a hang is a
 * finding, and so is a failed commit that changed the backing file.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "fuzz_common.h"
#include "vmrun/img.h"

static char dir_path[256], img_path[300], base_path[300];

static int run_img(const char *cmd, const char *arg, const char *arg2)
{
	char *argv[] = { (char *)"img", (char *)cmd, (char *)arg, (char *)arg2, NULL };
	int saved, devnull, r;

	fflush(stdout);
	saved = dup(1);
	devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (saved < 0 || devnull < 0 || dup2(devnull, 1) < 0)
		abort();
	r = img_main(arg2 ? 4 : 3, argv);
	fflush(stdout);
	if (dup2(saved, 1) < 0)
		abort();
	close(saved);
	close(devnull);
	return r;
}

/* Remove what the last input left (snapshot's FILE.base-N, temporaries). */
static void clean_dir(void)
{
	DIR *d = opendir(dir_path);
	struct dirent *e;

	if (!d)
		abort();
	while ((e = readdir(d)))
		if (e->d_name[0] != '.' || (e->d_name[1] && (e->d_name[1] != '.' || e->d_name[2])))
			(void)unlinkat(dirfd(d), e->d_name, 0);
	closedir(d);
}

static uint8_t *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long n;

	*len = 0;
	if (!f)
		return NULL;
	if (!fseek(f, 0, SEEK_END) && (n = ftell(f)) >= 0 && !fseek(f, 0, SEEK_SET)) {
		buf = malloc(n ? (size_t)n : 1);
		if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n)
			*len = (size_t)n;
	}
	fclose(f);
	return buf;
}

static int write_part(const char *path, struct fz *f, size_t n)
{
	size_t got;
	const uint8_t *p = fz_take(f, n, &got);
	uint8_t *img = malloc(got ? got : 1);
	int r;

	if (!img)
		abort();
	memcpy(img, p, got);
	fz_qcow2_confine_backing(img, got);
	r = fz_write_file(path, img, got);
	free(img);
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f = { data, size };
	uint8_t flags;
	uint32_t img_len;

	fz_quiet();
	if (!dir_path[0]) {
		fz_scratch_path(dir_path, sizeof(dir_path), "img");
		if (mkdir(dir_path, 0700) && errno != EEXIST)
			abort();
		snprintf(img_path, sizeof(img_path), "%s/img", dir_path);
		snprintf(base_path, sizeof(base_path), "%s/base", dir_path);
	}
	clean_dir();
	flags = fz_u8(&f);
	img_len = fz_u32(&f);
	if (write_part(img_path, &f, img_len) || write_part(base_path, &f, f.left))
		abort();

	(void)run_img("info", img_path, NULL);
	(void)run_img("info", img_path, "--json");
	if (flags & 1) {
		size_t before_len, after_len;
		uint8_t *before = read_file(base_path, &before_len), *after;

		if (run_img("commit", img_path, NULL) != IMG_OK) {
			after = read_file(base_path, &after_len);
			if (before && after &&
			    (before_len != after_len || memcmp(before, after, before_len))) {
				fprintf(stderr, "fuzz_img: a failed commit changed the backing file\n");
				abort();
			}
			free(after);
		}
		free(before);
	}
	if (flags & 2)
		(void)run_img("snapshot", img_path, NULL);
	return 0;
}

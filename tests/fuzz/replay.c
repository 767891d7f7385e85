// SPDX-License-Identifier: MIT
/*
 * Corpus replay without libFuzzer: feeds each file named on the command line,
 * and each regular file inside each directory named there (in name order,
 * not recursing), to LLVMFuzzerTestOneInput(), the same way libFuzzer would
 * (one exact-size heap copy per input, so AddressSanitizer sees any read
 * past its end).  ctest runs it over the committed corpus in every build;
 * under -DVMRUN_SANITIZE=ON that is the fuzz target under ASan and UBSan.
 *
 * Exit status: 0 when every input ran, 1 when an input could not be read or
 * no input was found at all (a wrong path must not pass as an empty corpus).
 * A bug in the target crashes or aborts, as under libFuzzer.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long len;

	if (!f) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (fseek(f, 0, SEEK_END) || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET))
		goto fail;
	buf = malloc(len ? (size_t)len : 1);
	if (!buf || (len && fread(buf, 1, (size_t)len, f) != (size_t)len))
		goto fail;
	fclose(f);
	LLVMFuzzerTestOneInput(buf, (size_t)len);
	free(buf);
	return 0;
fail:
	fprintf(stderr, "replay: %s: cannot read\n", path);
	free(buf);
	fclose(f);
	return -1;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

/* Returns the number of inputs run, or -1. */
static int run_dir(const char *dir)
{
	struct dirent **ents;
	int n = scandir(dir, &ents, NULL, by_name), ran = 0, bad = 0;

	if (n < 0) {
		fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
		return -1;
	}
	for (int i = 0; i < n; i++) {
		char path[4096];
		struct stat st;

		snprintf(path, sizeof(path), "%s/%s", dir, ents[i]->d_name);
		if (ents[i]->d_name[0] != '.' && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
			if (run_file(path))
				bad = 1;
			else
				ran++;
		}
		free(ents[i]);
	}
	free(ents);
	return bad ? -1 : ran;
}

int main(int argc, char **argv)
{
	int total = 0, bad = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE_OR_DIR...\n", argv[0]);
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		struct stat st;
		int n;

		if (stat(argv[i], &st)) {
			fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
			bad = 1;
			continue;
		}
		n = S_ISDIR(st.st_mode) ? run_dir(argv[i]) : (run_file(argv[i]) ? -1 : 1);
		if (n < 0)
			bad = 1;
		else
			total += n;
	}
	printf("replay: %d inputs\n", total);
	if (!total) {
		fprintf(stderr, "replay: no inputs found\n");
		return 1;
	}
	return bad;
}

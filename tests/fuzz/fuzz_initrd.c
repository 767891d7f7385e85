// SPDX-License-Identifier: MIT
/*
 * Fuzz target for the initrd inflater, initrd_gunzip() (src/boot/initrd.c):
 * gzip members, padding, trailers, truncation and bombs.  The input is the
 * initrd file; the first byte also picks the output bound (1 KiB to 8 MiB),
 * so that both sides of the bound are reached.  A result of 1 must come
 * with at most that many bytes, 0 with none (NULL, 0), a refusal
 * must carry its message; anything else is a finding.
 */
#include <errno.h>

#include "fuzz_common.h"
#include "vmrun/boot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t max = size ? 1024ull << (data[0] % 14) : 1024;
	uint8_t *out = NULL;
	size_t out_len = 12345;
	char err[512] = "";
	int r;

	fz_quiet();
	r = initrd_gunzip(data, size, max, &out, &out_len, err, sizeof(err));
	if (r == 1) {
		if (out_len > max || (out_len && !out))
			abort();
		free(out);
	} else if (r == 0) {
		if (out || out_len)
			abort();
	} else {
		fz_check_message(err);
		if (out)
			abort();
	}
	return 0;
}

// SPDX-License-Identifier: MIT
/*
 * Fuzz target for what an incoming migration's destination parses
 * (src/migrate/wire.c, src/migrate/dest.c's checks, snapshot_from_stream()):
 * the input is a stream of records exactly as a source sends them on the
 * socket ({u32 type, u32 length} then the payload), which the target walks
 * as the destination does:
 *   - each header is checked against mig_max_len() (a record the
 *     destination would refuse ends the walk, as it ends the migration);
 *   - HELLO: the magic and version, then the machine's description through
 *     snapshot_from_stream() (state stream, configuration, memory layout),
 *     with an empty run-time configuration;
 *   - PAGES: mig_pages_apply() into a 4 MiB guest RAM (the layout of a real
 *     guest: pages past it must be refused);
 *   - STATE: state_reader_open() and the description's checks again;
 *   - ABORT/REFUSE text, and everything else: its type and length only.
 * A refusal must come with a one-line message; anything else that goes
 * wrong is a crash, a sanitizer report or a timeout.
 *
 * The same file serves libFuzzer (-DVMRUN_FUZZ=ON with clang) and the
 * corpus replay driver (replay.c) that ctest runs on every build.
 */
#include <endian.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/migrate/wire.h"
#include "vmrun/config.h"
#include "vmrun/guest_mem.h"
#include "vmrun/snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_message(const char *err)
{
	if (!err[0] || strchr(err, '\n'))
		abort(); /* a refusal without its one line */
}

static void try_description(const uint8_t *p, size_t len)
{
	static const struct vm_config runtime; /* nothing given on the command line */
	struct snapshot *s = calloc(1, sizeof(*s));
	void *blob = malloc(len ? len : 1);
	char err[1024] = "";

	if (!s || !blob) {
		free(s);
		free(blob);
		return;
	}
	memcpy(blob, p, len);
	if (snapshot_from_stream(s, blob, len, "fuzz", &runtime, NULL, err, sizeof(err)))
		check_message(err);
	snapshot_close(s, false);
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct guest_mem gm;
	static bool have_mem;
	struct mig_pages_stats st = { 0 };
	size_t off = 0;

	if (!have_mem) {
		if (guest_mem_init(&gm, 4ull << 20))
			abort();
		have_mem = true;
	}
	while (size - off >= sizeof(struct mig_hdr)) {
		struct mig_hdr h;
		uint32_t type, len;
		const uint8_t *p;
		char err[1024] = "";

		memcpy(&h, data + off, sizeof(h));
		off += sizeof(h);
		type = le32toh(h.type);
		len = le32toh(h.len);
		if (!type || type >= MIG_TYPE_END || len > mig_max_len(type) || len > size - off)
			break; /* the destination refuses it and stops */
		p = data + off;
		off += len;
		switch (type) {
		case MIG_HELLO: {
			struct mig_hello hello;

			if (len < sizeof(hello))
				break;
			memcpy(&hello, p, sizeof(hello));
			if (memcmp(hello.magic, MIG_MAGIC, 8))
				break;
			try_description(p + sizeof(hello), len - sizeof(hello));
			break;
		}
		case MIG_PAGES: {
			/* An aligned copy, as the destination's own buffer. */
			uint8_t *copy = malloc(len ? len : 1);

			if (!copy)
				break;
			memcpy(copy, p, len);
			if (mig_pages_apply(&gm, copy, len, &st, err, sizeof(err)))
				check_message(err);
			free(copy);
			break;
		}
		case MIG_STATE:
			try_description(p, len);
			break;
		default:
			break;
		}
	}
	return 0;
}

// SPDX-License-Identifier: MIT
/*
 * Fuzz target for `vmrun --config FILE` (src/cli.c): the file's JSON object
 * read with jansson, each key checked as the option it names (strings,
 * numbers for mem/cpus/timeout, arrays for the repeatable options, true or
 * false for the flags), then merged with the rest of the command line
 * (which overrides it, a repeatable option there replacing the file's
 * list) and parsed by cli_parse() as one command line.  The file is written
 * to the scratch directory; every --config the command line gives names it,
 * so that no input can make the fuzzer read another file.
 *
 * Input:
 *   u8      bits 0-3: the number of command-line arguments besides
 *           --config (mod 9); bit 4: the "--config=FILE" form rather than
 *           "--config FILE"; bits 5-7: where --config goes among them
 *           (mod count + 1)
 *   then    the arguments, each ended by a NUL (the last may run to the end
 *           of the input; at most 256 bytes each)
 *   the rest the file's contents.
 *
 * Besides a crash, a sanitizer report (LeakSanitizer included: every
 * CLI_OK is released with cli_config_free(), twice) or a hang, a finding
 * is: a refusal without its one-line message; an accepted configuration
 * outside the limits vmrun/config.h gives (no kernel without --restore or
 * --incoming, a count or size out of range, a string that is not one); a
 * second parse of the same input that disagrees with the first.
 */
#include <errno.h>
#include <math.h>

#include "fuzz_common.h"
#include "vmrun/cli.h"
#include "vmrun/config.h"

#define MAX_ARGS 8
#define ARG_MAX_LEN 256

static void fail(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz_config: %s: %s\n", what, detail);
	abort();
}

/* Every string @cfg points to is readable to its NUL (ASan sees a pointer
 * into freed or foreign memory); returns a hash of their text, for the
 * second parse to match. */
static uint64_t touch(const char *s, uint64_t h)
{
	if (!s)
		return h * 31 + 1;
	for (size_t i = 0, n = strlen(s); i < n; i++)
		h = h * 131 + (uint8_t)s[i];
	return h * 31 + 2;
}

static uint64_t check_config(const struct vm_config *c)
{
	const char *strs[] = { c->kernel_path, c->initrd_path, c->cmdline, c->console_path,
			       c->console_log, c->api_sock, c->restore_dir, c->incoming,
			       c->migration_key, c->exit_json, c->user };
	uint64_t h = c->mem_size ^ (uint64_t)c->cpus << 48;

	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
		h = touch(strs[i], h);
	if (!c->restore_dir && !c->incoming && !c->kernel_path)
		fail("accepted without a kernel", "");
	if (c->restore_dir && c->incoming)
		fail("accepted with --restore and --incoming", "");
	if (c->cpus < 1 || c->cpus > VMRUN_MAX_CPUS)
		fail("cpus out of range", "");
	if (c->mem_size < VMRUN_MIN_MEM || c->mem_size > VMRUN_MAX_MEM || (c->mem_size & 0xfff))
		fail("mem out of range", "");
	if (c->cmdline && strlen(c->cmdline) >= VMRUN_CMDLINE_MAX)
		fail("cmdline too long", "");
	if (c->timeout_s < 0 || !isfinite(c->timeout_s) || c->timeout_s > 1e9)
		fail("timeout out of range", "");
	if (c->n_disks > VMRUN_MAX_DISKS || c->n_nics > VMRUN_MAX_NICS)
		fail("too many disks or NICs", "");
	for (unsigned i = 0; i < c->n_disks; i++) {
		const struct disk_config *d = &c->disks[i];

		if (!memchr(d->path, 0, sizeof(d->path)) || !d->path[0] ||
		    !memchr(d->serial, 0, sizeof(d->serial)))
			fail("a disk's path or serial is not a string", d->path);
		h = touch(d->spec, touch(d->path, touch(d->serial, h)));
		h = h * 7 + (d->readonly | d->cache << 1 | d->format << 4 | d->transport << 8);
	}
	for (unsigned i = 0; i < c->n_nics; i++) {
		const struct net_config *n = &c->nics[i];

		if (!memchr(n->tap, 0, sizeof(n->tap)) || !n->tap[0])
			fail("a NIC's tap name is not a string", "");
		h = touch(n->spec, touch(n->tap, h));
		for (unsigned k = 0; k < 6; k++)
			h = h * 7 + n->mac[k];
	}
	for (unsigned k = 0; k < VMRUN_MAX_DISKS; k++)
		h = touch(c->restore_disk[k], h);
	for (unsigned k = 0; k < VMRUN_MAX_NICS; k++)
		h = touch(c->restore_tap[k], h);
	if (!c->restore_dir && !c->incoming)
		for (unsigned k = 0; k < VMRUN_MAX_DISKS; k++)
			if (c->restore_disk[k] || (k < VMRUN_MAX_NICS && c->restore_tap[k]))
				fail("--restore-disk or --restore-tap accepted alone", "");
	h = h * 7 + (c->console | c->boot << 3 | c->kernel_decompress << 6 |
		     c->initrd_decompress << 8 | c->seccomp << 10);
	h = h * 7 + (c->start_paused | c->quiet << 1 | c->no_acpi << 2 | c->no_pvpanic << 3 |
		     c->no_nested_workarounds << 4);
	return h;
}

/* cli_parse() once; the hash of what it accepted, or of the refusal's
 * result and text. */
static uint64_t parse_once(int argc, char **argv)
{
	struct vm_config cfg;
	char err[512];
	uint64_t h;
	int r;

	memset(&cfg, 0xa5, sizeof(cfg)); /* cli_parse() must not read what it did not set */
	err[0] = '\0';
	r = cli_parse(argc, argv, &cfg, err, sizeof(err));
	if (r < 0) {
		if (r != -EINVAL)
			fail("an error that is not -EINVAL", err);
		fz_check_message(err);
		return touch(err, 1);
	}
	if (r == CLI_HELP || r == CLI_VERSION)
		return (uint64_t)r;
	if (r != CLI_OK)
		fail("an unknown result", "");
	h = check_config(&cfg);
	cli_config_free(&cfg);
	cli_config_free(&cfg); /* twice is harmless (vmrun/cli.h) */
	return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char path[300], config_eq[310];
	struct fz f = { data, size };
	char args[MAX_ARGS][ARG_MAX_LEN + 1], *argv[MAX_ARGS + 4];
	const uint8_t *file;
	size_t file_len;
	unsigned n, at;
	uint8_t flags;
	int argc = 0;

	fz_quiet();
	if (!path[0]) {
		fz_scratch_path(path, sizeof(path), "config.json");
		snprintf(config_eq, sizeof(config_eq), "--config=%s", path);
	}
	flags = fz_u8(&f);
	n = (flags & 15) % (MAX_ARGS + 1);
	at = (unsigned)(flags >> 5) % (n + 1);
	for (unsigned i = 0; i < n; i++) {
		const uint8_t *nul = memchr(f.p, 0, f.left);
		size_t len = nul ? (size_t)(nul - f.p) : f.left, got;
		const uint8_t *p = fz_take(&f, len, &got);

		if (len > ARG_MAX_LEN)
			len = ARG_MAX_LEN;
		memcpy(args[i], p, len);
		args[i][len] = '\0';
		if (nul)
			(void)fz_u8(&f); /* the NUL */
	}
	file = fz_take(&f, f.left, &file_len);
	if (fz_write_file(path, file, file_len))
		abort();

	argv[argc++] = (char *)"vmrun";
	for (unsigned i = 0; i <= n; i++) {
		if (i == at) {
			if (flags & 16) {
				argv[argc++] = config_eq;
			} else {
				argv[argc++] = (char *)"--config";
				argv[argc++] = path;
			}
		}
		if (i == n)
			break;
		/* A --config of the input names our file too (then cli_parse()
		 * refuses it as given twice): "--config" alone would take the
		 * next argument, whatever it is, as a path. */
		if (!strcmp(args[i], "--config") || !strncmp(args[i], "--config=", 9))
			argv[argc++] = config_eq;
		else
			argv[argc++] = args[i];
	}
	argv[argc] = NULL;

	if (parse_once(argc, argv) != parse_once(argc, argv))
		fail("two parses of the same input disagree", "");
	return 0;
}

/* Command-line parsing: argv into a struct vm_config, nothing else. */
#ifndef VMRUN_CLI_H
#define VMRUN_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "vmrun/config.h"

enum cli_result {
	CLI_OK = 0,     /* @cfg is filled: run the VM */
	CLI_HELP = 1,   /* --help was given: print cli_usage() and exit 0 */
	CLI_VERSION = 2,/* --version was given */
};

/* Parse the options of `vmrun [OPTIONS]` (argv[0] is the program name).
 * Fills @cfg (defaults first) with pointers into @argv, which must outlive it.
 * With --config FILE, the file's JSON object is read first (its keys are the
 * long options' names) and the command line overrides it: a repeatable
 * option given on the command line replaces the file's list.  The strings
 * from the file are then owned by @cfg (cfg->cli_owned): call
 * cli_config_free(@cfg) once @cfg is no longer used.
 * Returns a CLI_* value, or -EINVAL with a one-line message (no newline, no
 * program prefix) in @err; only CLI_OK leaves anything to free. */
int cli_parse(int argc, char *const argv[], struct vm_config *cfg, char *err,
	      size_t errlen) __attribute__((warn_unused_result));

/* Release what cli_parse() kept for @cfg (--config's strings); the pointers
 * in @cfg that came from the file are invalid afterwards.  Safe on a @cfg
 * without a file, and twice. */
void cli_config_free(struct vm_config *cfg);

/* Parse a size such as "256M", "1G", "4096K" or "512" (plain numbers are MiB).
 * Returns 0 and the byte count in @out, or -EINVAL (malformed) / -ERANGE. */
int cli_parse_size(const char *s, uint64_t *out) __attribute__((warn_unused_result));

/* The --help text. */
const char *cli_usage(void);

#endif

/* The serial console's host side (src/core/console.c): where output goes
 * (stdout, a file, both, or nowhere), stdin in raw mode when it is a
 * terminal, and the Ctrl-A escape, which works with every --console kind
 * while stdin is a terminal in the foreground. */
#ifndef VMRUN_CONSOLE_H
#define VMRUN_CONSOLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <termios.h>

#include "vmrun/config.h"

#define CONSOLE_ESCAPE 0x01 /* Ctrl-A */

struct console {
	int out_fd;      /* -1: output discarded */
	bool out_owned;  /* out_fd was opened by us (file:PATH) */
	int log_fd;      /* stdio,log=PATH: a copy of the output (ours); -1: none */
	int in_fd;       /* -1: no input */
	bool in_is_tty;  /* escape sequences and raw mode apply */
	bool in_escape_only; /* the guest's console is elsewhere: stdin only for Ctrl-A */
	int help_fd;     /* where Ctrl-A h writes the escape keys; -1: nowhere */
	bool raw_active;
	struct termios saved;
	bool escape_seen; /* the previous input byte was Ctrl-A */
};

/* Open the console described by @cfg: stdio (with cfg->console_log, also
 * a copy of the output in that file, created or truncated), file:PATH or
 * none.  With file: or none and a terminal on stdin in the foreground,
 * stdin is still read, for the Ctrl-A escape only.  A FIFO with no reader
 * is an error (-ENXIO), never a wait.  Returns 0 or -errno with @err set. */
int console_open(struct console *c, const struct vm_config *cfg, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Put a terminal stdin in raw mode (no echo, no line editing, no signals),
 * keeping output post-processing so "\n" still returns the carriage.  When
 * stdin is read for the escape only, Ctrl-C and Ctrl-Z keep their signals:
 * they would have nowhere else to go. */
void console_enter_raw(struct console *c);

/* Restore the terminal; safe to call more than once, and on every exit path. */
void console_restore(struct console *c);

void console_close(struct console *c);

/* Run @n input bytes through the escape filter: Ctrl-A x sets *@quit and
 * stops; Ctrl-A h writes the escape keys to c->help_fd and yields nothing;
 * Ctrl-A Ctrl-A yields one Ctrl-A; Ctrl-A followed by anything else yields
 * both bytes.  Writes at most @n + 1 bytes to @out and returns how many.
 * Without a terminal the bytes pass unchanged; with c->in_escape_only
 * nothing is yielded (the escapes still act). */
size_t console_filter_input(struct console *c, const uint8_t *in, size_t n, uint8_t *out,
			    bool *quit);

#endif

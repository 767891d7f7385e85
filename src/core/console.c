#include "vmrun/console.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Open @path for the console's output: created or truncated.  O_NONBLOCK so
 * that a FIFO with no reader fails (ENXIO) instead of holding open()
 * forever; then cleared, so a FIFO's reader paces the output as a file
 * would.  The fd, or -errno with a one-line message naming @what. */
static int console_open_out(const char *path, const char *what, char *err, size_t errlen)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NONBLOCK, 0644), r;
	int fl;

	if (fd < 0) {
		r = -errno;
		if (r == -ENXIO)
			snprintf(err, errlen, "%s%s: a FIFO with no reader: start its reader first",
				 what, path);
		else
			snprintf(err, errlen, "%s%s: %s", what, path, strerror(-r));
		return r;
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		r = -errno;
		close(fd);
		snprintf(err, errlen, "%s%s: %s", what, path, strerror(-r));
		return r;
	}
	return fd;
}

int console_open(struct console *c, const struct vm_config *cfg, char *err, size_t errlen)
{
	memset(c, 0, sizeof(*c));
	c->out_fd = -1;
	c->log_fd = -1;
	c->in_fd = -1;
	c->help_fd = STDERR_FILENO;
	switch (cfg->console) {
	case CONSOLE_STDIO:
		c->out_fd = STDOUT_FILENO;
		c->in_fd = STDIN_FILENO;
		c->in_is_tty = isatty(STDIN_FILENO);
		if (!cfg->console_log)
			break;
		c->log_fd = console_open_out(cfg->console_log, "--console stdio,log=", err, errlen);
		if (c->log_fd < 0) {
			int r = c->log_fd;

			c->log_fd = -1;
			return r;
		}
		break;
	case CONSOLE_FILE:
		c->out_fd = console_open_out(cfg->console_path, "--console file:", err, errlen);
		if (c->out_fd < 0) {
			int r = c->out_fd;

			c->out_fd = -1;
			return r;
		}
		c->out_owned = true;
		break;
	case CONSOLE_NONE:
		break;
	}
	/* The console is not on this terminal, but Ctrl-A x and h are: only
	 * for a foreground vmrun (a background one reading the terminal would
	 * be stopped by SIGTTIN). */
	if (cfg->console != CONSOLE_STDIO && isatty(STDIN_FILENO) &&
	    tcgetpgrp(STDIN_FILENO) == getpgrp()) {
		c->in_fd = STDIN_FILENO;
		c->in_is_tty = true;
		c->in_escape_only = true;
	}
	return 0;
}

void console_enter_raw(struct console *c)
{
	struct termios raw;

	if (!c->in_is_tty || c->raw_active || tcgetattr(c->in_fd, &c->saved) < 0)
		return;
	raw = c->saved;
	raw.c_iflag &= ~(unsigned)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
	raw.c_lflag &= ~(unsigned)(ECHO | ECHONL | ICANON | IEXTEN);
	if (!c->in_escape_only)
		raw.c_lflag &= ~(unsigned)ISIG;
	raw.c_cflag &= ~(unsigned)(CSIZE | PARENB);
	raw.c_cflag |= CS8;
	raw.c_cc[VMIN] = 1;
	raw.c_cc[VTIME] = 0;
	if (tcsetattr(c->in_fd, TCSANOW, &raw) == 0)
		c->raw_active = true;
}

void console_restore(struct console *c)
{
	if (c->raw_active) {
		tcsetattr(c->in_fd, TCSANOW, &c->saved);
		c->raw_active = false;
	}
}

void console_close(struct console *c)
{
	console_restore(c);
	if (c->out_owned && c->out_fd >= 0)
		close(c->out_fd);
	c->out_fd = -1;
	c->out_owned = false;
	if (c->log_fd >= 0)
		close(c->log_fd);
	c->log_fd = -1;
}

/* Ctrl-A h: the escape keys, on the terminal (raw mode keeps output
 * post-processing, so "\n" is a whole new line). */
static void console_print_help(const struct console *c)
{
	static const char help[] =
		"\nvmrun: escape keys, after Ctrl-A:\n"
		"  x       quit vmrun (exit status 0)\n"
		"  h       this help\n"
		"  Ctrl-A  send one Ctrl-A to the guest\n";

	if (c->help_fd >= 0)
		(void)!write(c->help_fd, help, sizeof(help) - 1);
}

size_t console_filter_input(struct console *c, const uint8_t *in, size_t n, uint8_t *out,
			    bool *quit)
{
	size_t o = 0;

	*quit = false;
	if (!c->in_is_tty) {
		memcpy(out, in, n);
		return n;
	}
	for (size_t i = 0; i < n; i++) {
		uint8_t b = in[i];

		if (!c->escape_seen) {
			if (b == CONSOLE_ESCAPE)
				c->escape_seen = true;
			else
				out[o++] = b;
			continue;
		}
		c->escape_seen = false;
		if (b == 'x' || b == 'X') {
			*quit = true;
			break;
		}
		if (b == 'h' || b == 'H') {
			console_print_help(c);
			continue;
		}
		if (b != CONSOLE_ESCAPE)
			out[o++] = CONSOLE_ESCAPE;
		out[o++] = b;
	}
	/* The guest's console is elsewhere: nothing typed here is for it. */
	return c->in_escape_only ? 0 : o;
}

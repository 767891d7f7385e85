#include "vmrun/console.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int console_open(struct console *c, const struct vm_config *cfg, char *err, size_t errlen)
{
	memset(c, 0, sizeof(*c));
	c->out_fd = -1;
	c->in_fd = -1;
	switch (cfg->console) {
	case CONSOLE_STDIO:
		c->out_fd = STDOUT_FILENO;
		c->in_fd = STDIN_FILENO;
		c->in_is_tty = isatty(STDIN_FILENO);
		break;
	case CONSOLE_FILE:
		c->out_fd = open(cfg->console_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (c->out_fd < 0) {
			int r = -errno;

			snprintf(err, errlen, "--console file:%s: %s", cfg->console_path, strerror(-r));
			return r;
		}
		c->out_owned = true;
		break;
	case CONSOLE_NONE:
		break;
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
	raw.c_lflag &= ~(unsigned)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
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
			return o;
		}
		if (b != CONSOLE_ESCAPE)
			out[o++] = CONSOLE_ESCAPE;
		out[o++] = b;
	}
	return o;
}

/* console_filter_input(), the Ctrl-A escape, and console_open()'s log copy,
 * against include/vmrun/console.h. */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "vmrun/console.h"

static void make_console(struct console *c, bool tty)
{
	memset(c, 0, sizeof(*c));
	c->out_fd = -1;
	c->in_fd = -1;
	c->log_fd = -1;
	c->help_fd = -1;
	c->in_is_tty = tty;
}

/* Filter @n bytes; checks the n + 1 bound on the output. */
static size_t filter(struct console *c, const void *in, size_t n, uint8_t *out, bool *quit)
{
	uint8_t buf[256];
	size_t o;

	assert_true(n + 2 <= sizeof(buf));
	memset(buf, 0xee, sizeof(buf));
	*quit = !*quit; /* must be set either way */
	o = console_filter_input(c, in, n, buf, quit);
	assert_true(o <= n + 1);
	assert_int_equal(buf[n + 1], 0xee);
	memcpy(out, buf, o);
	return o;
}

static void test_plain_bytes_pass(void **state)
{
	struct console c;
	uint8_t out[64];
	bool quit = true;
	static const uint8_t in[] = { 'h', 'e', 'l', 'l', 'o', '\r', 0x00, 0x03, 0x1b, 0x7f, 0xff, 'x' };

	make_console(&c, true);
	assert_int_equal(filter(&c, in, sizeof(in), out, &quit), sizeof(in));
	assert_memory_equal(out, in, sizeof(in));
	assert_false(quit);
	assert_int_equal(filter(&c, "", 0, out, &quit), 0);
	assert_false(quit);
}

static void test_ctrl_a_x_quits(void **state)
{
	struct console c;
	uint8_t out[64];
	bool quit = false;

	make_console(&c, true);
	/* Bytes before the escape are kept; after it, nothing is. */
	assert_int_equal(filter(&c, "ab\x01xcd", 6, out, &quit), 2);
	assert_memory_equal(out, "ab", 2);
	assert_true(quit);

	make_console(&c, true);
	quit = false;
	assert_int_equal(filter(&c, "\x01x", 2, out, &quit), 0);
	assert_true(quit);
}

static void test_ctrl_a_ctrl_a(void **state)
{
	struct console c;
	uint8_t out[64];
	bool quit = true;

	make_console(&c, true);
	assert_int_equal(filter(&c, "\x01\x01", 2, out, &quit), 1);
	assert_int_equal(out[0], 0x01);
	assert_false(quit);
	/* The escape state is consumed: a following 'x' is just an 'x'. */
	assert_int_equal(filter(&c, "x", 1, out, &quit), 1);
	assert_int_equal(out[0], 'x');
	assert_false(quit);

	assert_int_equal(filter(&c, "a\x01\x01\x01\x01z", 6, out, &quit), 4);
	assert_memory_equal(out, "a\x01\x01z", 4);
}

static void test_ctrl_a_other(void **state)
{
	struct console c;
	uint8_t out[64];
	bool quit = true;

	make_console(&c, true);
	assert_int_equal(filter(&c, "\x01" "b", 2, out, &quit), 2);
	assert_memory_equal(out, "\x01" "b", 2);
	assert_false(quit);
	assert_int_equal(filter(&c, "q\x01" "c" "d", 4, out, &quit), 4);
	assert_memory_equal(out, "q\x01" "cd", 4);
}

static void test_escape_split_across_calls(void **state)
{
	struct console c;
	uint8_t out[64];
	bool quit = true;

	make_console(&c, true);
	assert_int_equal(filter(&c, "ab\x01", 3, out, &quit), 2);
	assert_memory_equal(out, "ab", 2);
	assert_false(quit);
	assert_int_equal(filter(&c, "x", 1, out, &quit), 0);
	assert_true(quit);

	make_console(&c, true);
	quit = false;
	assert_int_equal(filter(&c, "\x01", 1, out, &quit), 0);
	assert_false(quit);
	/* The held Ctrl-A and the next byte: n + 1 bytes out of n in. */
	assert_int_equal(filter(&c, "b", 1, out, &quit), 2);
	assert_memory_equal(out, "\x01" "b", 2);

	make_console(&c, true);
	assert_int_equal(filter(&c, "\x01", 1, out, &quit), 0);
	assert_int_equal(filter(&c, "\x01", 1, out, &quit), 1);
	assert_int_equal(out[0], 0x01);
	assert_false(quit);
}

static void test_not_a_tty_passes_everything(void **state)
{
	struct console c;
	uint8_t out[64];
	bool quit = true;
	static const uint8_t in[] = { 'a', 0x01, 'x', 0x01, 0x01, 0x01, 'b', 0x01 };

	make_console(&c, false);
	assert_int_equal(filter(&c, in, sizeof(in), out, &quit), sizeof(in));
	assert_memory_equal(out, in, sizeof(in));
	assert_false(quit);
	assert_int_equal(filter(&c, "x", 1, out, &quit), 1);
	assert_int_equal(out[0], 'x');
	assert_false(quit);
}

/* Ctrl-A h: the escape keys on help_fd, nothing to the guest, and the
 * filter goes on with the bytes after it. */
static void test_ctrl_a_h_prints_help(void **state)
{
	struct console c;
	uint8_t out[64];
	char help[512];
	bool quit = true;
	int p[2];
	ssize_t n;

	assert_int_equal(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
	make_console(&c, true);
	c.help_fd = p[1];
	assert_int_equal(filter(&c, "a\x01hb", 4, out, &quit), 2);
	assert_memory_equal(out, "ab", 2);
	assert_false(quit);
	n = read(p[0], help, sizeof(help) - 1);
	assert_true(n > 0);
	help[n] = 0;
	assert_non_null(strstr(help, "Ctrl-A"));
	assert_non_null(strstr(help, "x "));
	assert_non_null(strstr(help, "quit"));
	/* Split across reads, and upper case, too. */
	assert_int_equal(filter(&c, "\x01", 1, out, &quit), 0);
	assert_int_equal(filter(&c, "H", 1, out, &quit), 0);
	assert_true(read(p[0], help, sizeof(help)) > 0);
	/* A plain 'h' is for the guest. */
	assert_int_equal(filter(&c, "h", 1, out, &quit), 1);
	assert_int_equal(out[0], 'h');
	assert_int_equal(read(p[0], help, sizeof(help)), -1);
	close(p[0]);
	close(p[1]);
}

/* --console file: or none on a terminal: stdin is read for the escape only.
 * Ctrl-A x still quits, Ctrl-A h still helps, nothing reaches the guest. */
static void test_escape_only(void **state)
{
	struct console c;
	uint8_t out[64];
	char help[512];
	bool quit = true;
	int p[2];

	assert_int_equal(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
	make_console(&c, true);
	c.in_escape_only = true;
	c.help_fd = p[1];
	assert_int_equal(filter(&c, "ls\r\x01\x01q", 6, out, &quit), 0);
	assert_false(quit);
	assert_int_equal(filter(&c, "\x01h", 2, out, &quit), 0);
	assert_true(read(p[0], help, sizeof(help)) > 0);
	assert_false(quit);
	assert_int_equal(filter(&c, "abc\x01xdef", 8, out, &quit), 0);
	assert_true(quit);
	close(p[0]);
	close(p[1]);
}

/* stdio,log=PATH: console_open() creates (or truncates) the log, keeps
 * stdout as the output, and console_close() closes it. */
static void test_open_stdio_log(void **state)
{
	char dir[] = "/tmp/vmrun-console-XXXXXX", path[64], bad[96];
	struct vm_config cfg = { .console = CONSOLE_STDIO };
	struct console c;
	char err[256] = "";
	int fd;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/log", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "old", 3), 3);
	close(fd);
	cfg.console_log = path;
	assert_int_equal(console_open(&c, &cfg, err, sizeof(err)), 0);
	assert_int_equal(c.out_fd, STDOUT_FILENO);
	assert_true(c.log_fd > STDERR_FILENO);
	assert_int_equal(write(c.log_fd, "new", 3), 3);
	console_close(&c);
	assert_int_equal(c.log_fd, -1);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	{
		char buf[8];

		assert_int_equal(read(fd, buf, sizeof(buf)), 3);
		assert_memory_equal(buf, "new", 3);
	}
	close(fd);
	unlink(path);
	/* A log that cannot be created is named. */
	snprintf(bad, sizeof(bad), "%s/no/such/log", dir);
	cfg.console_log = bad;
	assert_int_equal(console_open(&c, &cfg, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "--console stdio,log="));
	assert_non_null(strstr(err, bad));
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_bytes_pass),
		cmocka_unit_test(test_ctrl_a_x_quits),
		cmocka_unit_test(test_ctrl_a_ctrl_a),
		cmocka_unit_test(test_ctrl_a_other),
		cmocka_unit_test(test_escape_split_across_calls),
		cmocka_unit_test(test_not_a_tty_passes_everything),
		cmocka_unit_test(test_ctrl_a_h_prints_help),
		cmocka_unit_test(test_escape_only),
		cmocka_unit_test(test_open_stdio_log),
	};

	return cmocka_run_group_tests_name("console", tests, NULL, NULL);
}

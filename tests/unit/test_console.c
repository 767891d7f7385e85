/* console_filter_input(), the Ctrl-A escape, against include/vmrun/console.h. */
#include "unit.h"

#include <stdbool.h>

#include "vmrun/console.h"

static void make_console(struct console *c, bool tty)
{
	memset(c, 0, sizeof(*c));
	c->out_fd = -1;
	c->in_fd = -1;
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_bytes_pass),
		cmocka_unit_test(test_ctrl_a_x_quits),
		cmocka_unit_test(test_ctrl_a_ctrl_a),
		cmocka_unit_test(test_ctrl_a_other),
		cmocka_unit_test(test_escape_split_across_calls),
		cmocka_unit_test(test_not_a_tty_passes_everything),
	};

	return cmocka_run_group_tests_name("console", tests, NULL, NULL);
}

/* Shared preamble of the cmocka unit tests: the headers cmocka.h needs, and a
 * few small helpers.  Everything here is static inline so that a test file
 * that does not use a helper gets no warning. */
#ifndef VMRUN_TESTS_UNIT_H
#define VMRUN_TESTS_UNIT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* @msg is a non-empty single line (no '\n' anywhere) that contains @needle. */
static inline void assert_one_line_naming(const char *msg, const char *needle)
{
	assert_non_null(msg);
	assert_true(msg[0] != '\0');
	assert_null(strchr(msg, '\n'));
	if (needle && !strstr(msg, needle))
		fail_msg("message '%s' does not name '%s'", msg, needle);
}

#endif

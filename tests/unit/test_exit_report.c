/* --exit-json's file (src/core/exit_report.c): one JSON object with every
 * key, null where nothing happened, written whole or not at all. */
#include "unit.h"
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "vmrun/exit_report.h"

/* The number of entries in @dir besides . and .. */
static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static void test_write_debug_exit(void **state)
{
	char dir[] = "/tmp/vmrun-exit-report-XXXXXX", path[64], err[256];
	struct exit_report rep = { .status = 1, .kind = "debug-exit", .has_debug_exit = true,
				   .debug_exit_value = 0xffffff80u, .reason = "debug-exit",
				   .ms_to_first_instruction = 1.2345678,
				   .ms_to_first_output = -1, .ms_total = 20.5, .version = "9.9" };
	json_error_t jerr;
	json_t *o;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/exit.json", dir);
	assert_int_equal(exit_report_write(path, &rep, err, sizeof(err)), 0);
	assert_int_equal(count_entries(dir), 1); /* no temporary file left */
	o = json_load_file(path, 0, &jerr);
	assert_non_null(o);
	assert_int_equal(json_integer_value(json_object_get(o, "status")), 1);
	assert_string_equal(json_string_value(json_object_get(o, "kind")), "debug-exit");
	assert_int_equal(json_integer_value(json_object_get(o, "debug_exit_value")), 0xffffff80u);
	assert_string_equal(json_string_value(json_object_get(o, "reason")), "debug-exit");
	assert_float_equal(json_real_value(json_object_get(o, "ms_to_first_instruction")), 1.235,
			   1e-9);
	assert_true(json_is_null(json_object_get(o, "ms_to_first_output")));
	assert_float_equal(json_real_value(json_object_get(o, "ms_total")), 20.5, 1e-9);
	assert_string_equal(json_string_value(json_object_get(o, "vmrun_version")), "9.9");
	assert_int_equal(json_object_size(o), 8);
	json_decref(o);

	/* A second report replaces the first whole. */
	rep = (struct exit_report){ .status = 4, .kind = "vmrun-failure", .reason = "x",
				    .ms_to_first_instruction = -1, .ms_to_first_output = -1 };
	assert_int_equal(exit_report_write(path, &rep, err, sizeof(err)), 0);
	o = json_load_file(path, 0, &jerr);
	assert_non_null(o);
	assert_true(json_is_null(json_object_get(o, "debug_exit_value")));
	assert_true(json_is_null(json_object_get(o, "ms_to_first_instruction")));
	assert_int_equal(json_integer_value(json_object_get(o, "status")), 4);
	json_decref(o);
	assert_int_equal(count_entries(dir), 1);
	unlink(path);
	rmdir(dir);
}

static void test_write_fails_cleanly(void **state)
{
	char dir[] = "/tmp/vmrun-exit-report-XXXXXX", path[96], err[256] = "";
	struct exit_report rep = { .status = 0, .kind = "poweroff", .reason = "poweroff",
				   .ms_to_first_instruction = -1, .ms_to_first_output = -1 };

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/missing/exit.json", dir);
	assert_int_equal(exit_report_write(path, &rep, err, sizeof(err)), -ENOENT);
	assert_one_line_naming(err, path);
	/* A directory where the file should go: the rename fails, and the
	 * temporary file goes with it. */
	snprintf(path, sizeof(path), "%s/sub", dir);
	assert_int_equal(mkdir(path, 0755), 0);
	assert_true(exit_report_write(path, &rep, err, sizeof(err)) < 0);
	assert_one_line_naming(err, path);
	assert_int_equal(count_entries(dir), 1);
	rmdir(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_write_debug_exit),
		cmocka_unit_test(test_write_fails_cleanly),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

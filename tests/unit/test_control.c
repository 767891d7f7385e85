/* The control socket, against include/vmrun/control.h: control_handle_line()
 * with fake operations, then the real unix socket on an evloop. */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vmrun/control.h"
#include "vmrun/ctl.h"
#include "vmrun/evloop.h"
#include "vmrun/utf8.h"

struct fake_vm {
	int n_query, n_pause, n_resume, n_quit, n_snapshot;
	json_t *snapshot_args;  /* a copy of the last args seen */
	int pause_result, resume_result, quit_result;
	bool status_fails;
};

static json_t *fake_query_status(void *opaque)
{
	struct fake_vm *vm = opaque;

	vm->n_query++;
	if (vm->status_fails)
		return NULL;
	return json_pack("{s:s,s:i}", "state", "running", "vcpus", 2);
}

static int fake_pause(void *opaque)
{
	struct fake_vm *vm = opaque;

	vm->n_pause++;
	return vm->pause_result;
}

static int fake_resume(void *opaque)
{
	struct fake_vm *vm = opaque;

	vm->n_resume++;
	return vm->resume_result;
}

static int fake_quit(void *opaque)
{
	struct fake_vm *vm = opaque;

	vm->n_quit++;
	return vm->quit_result;
}

/* Succeeds for {"disk": 0}, fails with a reason for anything else. */
static json_t *fake_snapshot(void *opaque, json_t *args, char *err, size_t errlen)
{
	struct fake_vm *vm = opaque;
	json_t *disk = json_object_get(args, "disk");

	vm->n_snapshot++;
	json_decref(vm->snapshot_args);
	vm->snapshot_args = json_deep_copy(args);
	if (json_is_integer(disk) && json_integer_value(disk) == 0)
		return json_pack("{s:s}", "base", "d.base-1");
	if (json_is_string(disk) && !strcmp(json_string_value(disk), "bytes")) {
		/* A reason naming a path that is not UTF-8. */
		snprintf(err, errlen, "cannot create /tmp/d\xff\xfe.base-1: Permission denied");
		return NULL;
	}
	snprintf(err, errlen, "no such disk");
	return NULL;
}

static const struct control_ops fake_ops = {
	.query_status = fake_query_status,
	.pause = fake_pause,
	.resume = fake_resume,
	.quit = fake_quit,
	.disk_snapshot = fake_snapshot,
};

static const struct control_ops fake_ops_no_disks = {
	.query_status = fake_query_status,
	.pause = fake_pause,
	.resume = fake_resume,
	.quit = fake_quit,
};

/* ---- control_handle_line ---- */

static struct control ctl;
static struct fake_vm vm;

static int setup_handle(void **state)
{
	memset(&ctl, 0, sizeof(ctl));
	memset(&vm, 0, sizeof(vm));
	ctl.ops = &fake_ops;
	ctl.opaque = &vm;
	return 0;
}

static json_t *handle(const char *line)
{
	json_t *reply = control_handle_line(&ctl, line, strlen(line));

	assert_non_null(reply);
	assert_true(json_is_object(reply));
	return reply;
}

static void assert_ok(json_t *reply)
{
	json_t *ok = json_object_get(reply, "ok");

	assert_true(json_is_true(ok));
	assert_true(json_is_object(json_object_get(reply, "result")));
	assert_null(json_object_get(reply, "error"));
}

static void assert_failed(json_t *reply)
{
	json_t *ok = json_object_get(reply, "ok");
	json_t *error = json_object_get(reply, "error");

	assert_true(json_is_false(ok));
	assert_true(json_is_string(error));
	assert_true(json_string_length(error) > 0);
	assert_null(json_object_get(reply, "result"));
	/* A reply is one line on the socket. */
	{
		char *text = json_dumps(reply, JSON_COMPACT);

		assert_non_null(text);
		assert_null(strchr(text, '\n'));
		free(text);
	}
}

static void test_query_status_number_id(void **state)
{
	json_t *reply = handle("{\"id\": 7, \"cmd\": \"query-status\"}");
	json_t *result;

	assert_ok(reply);
	assert_true(json_is_integer(json_object_get(reply, "id")));
	assert_int_equal(json_integer_value(json_object_get(reply, "id")), 7);
	result = json_object_get(reply, "result");
	assert_string_equal(json_string_value(json_object_get(result, "state")), "running");
	assert_int_equal(vm.n_query, 1);
	assert_int_equal(vm.n_pause + vm.n_resume + vm.n_quit, 0);
	json_decref(reply);
}

static void test_query_status_string_id(void **state)
{
	json_t *reply = handle("{\"cmd\":\"query-status\",\"id\":\"req-42\",\"args\":{}}");

	assert_ok(reply);
	assert_string_equal(json_string_value(json_object_get(reply, "id")), "req-42");
	json_decref(reply);
}

static void test_no_id(void **state)
{
	json_t *reply = handle("{\"cmd\":\"query-status\"}");
	json_t *id = json_object_get(reply, "id");

	assert_ok(reply);
	assert_true(id == NULL || json_is_null(id));
	json_decref(reply);
}

static void test_pause_resume_quit(void **state)
{
	json_t *reply;

	reply = handle("{\"id\":1,\"cmd\":\"pause\"}");
	assert_ok(reply);
	assert_int_equal(json_integer_value(json_object_get(reply, "id")), 1);
	assert_int_equal(vm.n_pause, 1);
	json_decref(reply);

	reply = handle("{\"id\":2,\"cmd\":\"resume\"}");
	assert_ok(reply);
	assert_int_equal(json_integer_value(json_object_get(reply, "id")), 2);
	assert_int_equal(vm.n_resume, 1);
	json_decref(reply);

	reply = handle("{\"id\":3,\"cmd\":\"quit\"}");
	assert_ok(reply);
	assert_int_equal(json_integer_value(json_object_get(reply, "id")), 3);
	assert_int_equal(vm.n_quit, 1);
	json_decref(reply);

	assert_int_equal(vm.n_pause, 1);
	assert_int_equal(vm.n_resume, 1);
}

static void test_op_failure(void **state)
{
	json_t *reply;

	vm.pause_result = -EBUSY;
	reply = handle("{\"id\":9,\"cmd\":\"pause\"}");
	assert_failed(reply);
	assert_int_equal(json_integer_value(json_object_get(reply, "id")), 9);
	assert_int_equal(vm.n_pause, 1);
	json_decref(reply);

	vm.resume_result = -EINVAL;
	reply = handle("{\"id\":\"r\",\"cmd\":\"resume\"}");
	assert_failed(reply);
	assert_string_equal(json_string_value(json_object_get(reply, "id")), "r");
	json_decref(reply);

	vm.quit_result = -EIO;
	reply = handle("{\"cmd\":\"quit\"}");
	assert_failed(reply);
	json_decref(reply);
}

static void test_query_status_failure(void **state)
{
	json_t *reply;

	vm.status_fails = true;
	reply = handle("{\"id\":5,\"cmd\":\"query-status\"}");
	assert_failed(reply);
	assert_int_equal(json_integer_value(json_object_get(reply, "id")), 5);
	json_decref(reply);
}

static void test_bad_requests(void **state)
{
	static const char *const bad[] = {
		"{",
		"}",
		"not json",
		"",
		" ",
		"{\"cmd\":\"pause\"",
		"{\"cmd\":\"pause\"}}",
		"{\"cmd\":\"pause\",\"cmd\":\"quit\"}", /* duplicate key */
		"[{\"cmd\":\"pause\"}]",
		"[]",
		"\"pause\"",
		"42",
		"null",
		"{}",
		"{\"id\":1}",
		"{\"id\":1,\"cmd\":5}",
		"{\"id\":1,\"cmd\":null}",
		"{\"id\":1,\"cmd\":[\"pause\"]}",
		"{\"id\":1,\"cmd\":{\"name\":\"pause\"}}",
		"{\"id\":1,\"cmd\":true}",
		"{\"id\":1,\"cmd\":\"reboot\"}",
		"{\"id\":1,\"cmd\":\"\"}",
		"{\"id\":1,\"cmd\":\"PAUSE\"}",
		"{\"id\":1,\"cmd\":\"pause \"}",
		"{\"id\":1,\"Cmd\":\"pause\"}",
		"\xff\xfe{\"cmd\":\"pause\"}",
	};

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		json_t *reply = control_handle_line(&ctl, bad[i], strlen(bad[i]));

		if (!reply || !json_is_object(reply))
			fail_msg("request %zu (%s): no reply object", i, bad[i]);
		assert_failed(reply);
		json_decref(reply);
	}
	assert_int_equal(vm.n_pause + vm.n_resume + vm.n_quit, 0);
}

/* "snapshot" hands its args object to the VM and relays result or reason;
 * missing args are an empty object, args of another type are refused. */
static void test_snapshot_args(void **state)
{
	json_t *reply, *want;

	(void)state;
	reply = handle("{\"id\":3,\"cmd\":\"snapshot\",\"args\":{\"disk\":0}}");
	assert_ok(reply);
	assert_string_equal(json_string_value(json_object_get(json_object_get(reply, "result"),
								"base")), "d.base-1");
	want = json_pack("{s:i}", "disk", 0);
	assert_true(json_equal(vm.snapshot_args, want));
	json_decref(want);
	json_decref(reply);

	reply = handle("{\"cmd\":\"snapshot\"}");
	assert_failed(reply);
	assert_non_null(strstr(json_string_value(json_object_get(reply, "error")), "no such disk"));
	assert_int_equal(json_object_size(vm.snapshot_args), 0);
	json_decref(reply);
	assert_int_equal(vm.n_snapshot, 2);

	reply = handle("{\"cmd\":\"snapshot\",\"args\":[0]}");
	assert_failed(reply);
	json_decref(reply);
	reply = handle("{\"cmd\":\"pause\",\"args\":\"x\"}");
	assert_failed(reply);
	json_decref(reply);
	assert_int_equal(vm.n_snapshot, 2);
	assert_int_equal(vm.n_pause, 0);

	ctl.ops = &fake_ops_no_disks;
	reply = handle("{\"cmd\":\"snapshot\",\"args\":{\"disk\":0}}");
	assert_failed(reply);
	assert_non_null(strstr(json_string_value(json_object_get(reply, "error")), "no disks"));
	json_decref(reply);
	assert_int_equal(vm.n_snapshot, 2);
	json_decref(vm.snapshot_args);
	vm.snapshot_args = NULL;
}

static void test_bad_request_echoes_id(void **state)
{
	json_t *reply = handle("{\"id\":11,\"cmd\":\"frobnicate\"}");

	assert_failed(reply);
	assert_int_equal(json_integer_value(json_object_get(reply, "id")), 11);
	json_decref(reply);
	reply = handle("{\"id\":\"x\",\"cmd\":17}");
	assert_failed(reply);
	assert_string_equal(json_string_value(json_object_get(reply, "id")), "x");
	json_decref(reply);
}

static void test_deep_nesting(void **state)
{
	size_t n = 100000;
	char *line = malloc(2 * n + 1);
	json_t *reply;

	assert_non_null(line);
	memset(line, '[', n);
	memset(line + n, ']', n);
	line[2 * n] = '\0';
	reply = control_handle_line(&ctl, line, 2 * n);
	assert_non_null(reply);
	assert_failed(reply);
	json_decref(reply);
	free(line);
}

static void test_length_is_respected(void **state)
{
	/* Only @len bytes are the request; what follows is not looked at. */
	static const char buf[] = "{\"id\":1,\"cmd\":\"pause\"}GARBAGE";
	json_t *reply = control_handle_line(&ctl, buf, strlen("{\"id\":1,\"cmd\":\"pause\"}"));

	assert_non_null(reply);
	assert_ok(reply);
	assert_int_equal(vm.n_pause, 1);
	json_decref(reply);

	/* A NUL inside the line is malformed, not a terminator. */
	reply = control_handle_line(&ctl, "{\"cmd\":\"quit\"}\0{", 16);
	assert_non_null(reply);
	assert_failed(reply);
	assert_int_equal(vm.n_quit, 0);
	json_decref(reply);
}


/* "help" answers one line for every command, and every command it names
 * (and the greeting lists) is known to the dispatcher. */
static void test_help_lists_every_command(void **state)
{
	json_t *reply = handle("{\"id\": 1, \"cmd\": \"help\"}");
	json_t *greeting = control_greeting(), *names, *cmds, *name;
	size_t i;

	assert_ok(reply);
	cmds = json_object_get(json_object_get(reply, "result"), "commands");
	assert_true(json_is_object(cmds));
	assert_non_null(greeting);
	names = json_object_get(json_object_get(greeting, "greeting"), "commands");
	assert_true(json_is_array(names));
	assert_int_equal(json_array_size(names), json_object_size(cmds));
	json_array_foreach(names, i, name) {
		json_t *line = json_object_get(cmds, json_string_value(name));
		char req[128];
		json_t *r;

		assert_true(json_is_string(line));
		assert_true(json_string_length(line) > 0);
		assert_null(strchr(json_string_value(line), '\n'));
		snprintf(req, sizeof(req), "{\"cmd\": \"%s\"}", json_string_value(name));
		r = handle(req);
		if (json_is_false(json_object_get(r, "ok")))
			assert_null(strstr(json_string_value(json_object_get(r, "error")),
					   "unknown command"));
		json_decref(r);
	}
	assert_non_null(json_object_get(cmds, "help"));
	assert_non_null(json_object_get(cmds, "query-status"));
	json_decref(greeting);
	json_decref(reply);
	json_decref(vm.snapshot_args); /* the snapshot command's call above */
	vm.snapshot_args = NULL;
	/* An unknown command's error names "help". */
	reply = handle("{\"cmd\": \"frobnicate\"}");
	assert_failed(reply);
	assert_non_null(strstr(json_string_value(json_object_get(reply, "error")), "help"));
	json_decref(reply);
}

/* Numbers at sensible precision: a value rounded to milliseconds prints as
 * such, not with 17 significant digits. */
static void test_dump_line_precision(void **state)
{
	json_t *o = json_pack("{s:f,s:f,s:I}", "uptime_s", (double)1508 / 1000.0, "tenth", 0.1,
			      "n", (json_int_t)17179869184);
	size_t len = 0;
	char *text = control_dump_line(o, &len);

	assert_non_null(text);
	assert_int_equal(len, strlen("{\"uptime_s\":1.508,\"tenth\":0.1,\"n\":17179869184}\n"));
	assert_memory_equal(text, "{\"uptime_s\":1.508,\"tenth\":0.1,\"n\":17179869184}\n", len);
	free(text);
	json_decref(o);
}

/* ---- the socket ---- */

static char tmpdir[64];

static int setup_dir(void **state)
{
	memset(&vm, 0, sizeof(vm));
	strcpy(tmpdir, "/tmp/vmrun-unit-XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "%s/ctl.sock", tmpdir);
	unlink(cmd);
	snprintf(cmd, sizeof(cmd), "%s/other.sock", tmpdir);
	unlink(cmd);
	return rmdir(tmpdir) == 0 ? 0 : -1;
}

static void sock_path(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", tmpdir, name);
}

/* One round of the event loop: wait up to @timeout_ms, dispatch what fired. */
static int loop_once(struct evloop *loop, int timeout_ms)
{
	struct epoll_event evs[16];
	int n = epoll_wait(loop->epfd, evs, 16, timeout_ms);

	for (int i = 0; i < n; i++) {
		struct ev_source *src = evs[i].data.ptr;

		if (src->fd >= 0)
			src->handler(src, evs[i].events);
	}
	return n;
}

static int client_connect(const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_true(strlen(path) < sizeof(addr.sun_path));
	strcpy(addr.sun_path, path);
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		close(fd);
		return -errno;
	}
	return fd;
}

static void client_send(int fd, const char *s)
{
	size_t len = strlen(s);

	assert_int_equal(send(fd, s, len, MSG_NOSIGNAL), (ssize_t)len);
}

struct reader {
	char buf[8192];
	size_t len;
	unsigned greetings; /* greeting lines skipped by read_replies */
};

/* Run the loop until @want more complete lines arrived on @fd (or ~3 s
 * passed); returns them parsed, in order, in @out. */
static void read_replies(struct evloop *loop, int fd, struct reader *rd, json_t **out,
			 unsigned want)
{
	unsigned got = 0;

	for (int round = 0; round < 300 && got < want; round++) {
		char *nl;
		ssize_t n;

		loop_once(loop, 10);
		n = recv(fd, rd->buf + rd->len, sizeof(rd->buf) - 1 - rd->len, MSG_DONTWAIT);
		if (n > 0)
			rd->len += (size_t)n;
		while (got < want && (nl = memchr(rd->buf, '\n', rd->len)) != NULL) {
			json_error_t jerr;
			size_t line_len = (size_t)(nl - rd->buf);

			out[got] = json_loadb(rd->buf, line_len, 0, &jerr);
			if (!out[got])
				fail_msg("reply is not JSON: %.*s (%s)", (int)line_len, rd->buf,
					 jerr.text);
			if (json_object_get(out[got], "greeting")) {
				/* Each client's first line; tested on its own. */
				assert_int_equal(rd->greetings, 0);
				rd->greetings++;
				json_decref(out[got]);
			} else {
				got++;
			}
			memmove(rd->buf, nl + 1, rd->len - line_len - 1);
			rd->len -= line_len + 1;
		}
	}
	if (got < want)
		fail_msg("got %u replies, wanted %u", got, want);
}

static void test_socket_requests(void **state)
{
	struct evloop loop;
	struct control c;
	char path[128], err[256] = "";
	struct reader *rd = calloc(1, sizeof(*rd));
	json_t *r[4];
	int fd;

	assert_non_null(rd);
	sock_path(path, sizeof(path), "ctl.sock");
	assert_int_equal(evloop_init(&loop), 0);
	assert_int_equal(control_init(&c, &loop, path, &fake_ops, &vm, err, sizeof(err)), 0);
	{
		struct stat st;

		assert_int_equal(stat(path, &st), 0);
		assert_true(S_ISSOCK(st.st_mode));
	}

	fd = client_connect(path);
	assert_true(fd >= 0);
	/* Two requests and a malformed line in one write. */
	client_send(fd, "{\"id\":1,\"cmd\":\"query-status\"}\n"
			"{\"id\":\"two\",\"cmd\":\"pause\"}\n"
			"this is not json\n");
	read_replies(&loop, fd, rd, r, 3);
	assert_true(json_is_true(json_object_get(r[0], "ok")));
	assert_int_equal(json_integer_value(json_object_get(r[0], "id")), 1);
	assert_true(json_is_object(json_object_get(r[0], "result")));
	assert_true(json_is_true(json_object_get(r[1], "ok")));
	assert_string_equal(json_string_value(json_object_get(r[1], "id")), "two");
	assert_true(json_is_false(json_object_get(r[2], "ok")));
	assert_true(json_is_string(json_object_get(r[2], "error")));
	assert_int_equal(vm.n_pause, 1);
	for (int i = 0; i < 3; i++)
		json_decref(r[i]);

	/* A request split over two writes, ended by CRLF. */
	client_send(fd, "{\"id\":4,\"cmd\":");
	loop_once(&loop, 50);
	assert_int_equal(vm.n_resume, 0);
	client_send(fd, "\"resume\"}\r\n");
	read_replies(&loop, fd, rd, r, 1);
	assert_true(json_is_true(json_object_get(r[0], "ok")));
	assert_int_equal(json_integer_value(json_object_get(r[0], "id")), 4);
	assert_int_equal(vm.n_resume, 1);
	json_decref(r[0]);

	/* A second client is served too, and both get events. */
	{
		int fd2 = client_connect(path);
		struct reader *rd2 = calloc(1, sizeof(*rd2));

		assert_true(fd2 >= 0);
		assert_non_null(rd2);
		client_send(fd2, "{\"id\":5,\"cmd\":\"query-status\"}\n");
		read_replies(&loop, fd2, rd2, r, 1);
		assert_int_equal(json_integer_value(json_object_get(r[0], "id")), 5);
		json_decref(r[0]);

		time_t before = time(NULL), after;

		control_emit_event(&c, "guest-exit", json_pack("{s:i}", "status", 3));
		after = time(NULL);
		read_replies(&loop, fd, rd, r, 1);
		read_replies(&loop, fd2, rd2, r + 1, 1);
		for (int i = 0; i < 2; i++) {
			json_t *ts = json_object_get(r[i], "timestamp");
			json_int_t us = json_integer_value(json_object_get(ts, "microseconds"));

			/* Every event carries the wall-clock time it was sent. */
			assert_true(json_is_integer(json_object_get(ts, "seconds")));
			assert_true(json_integer_value(json_object_get(ts, "seconds")) >= before);
			assert_true(json_integer_value(json_object_get(ts, "seconds")) <= after);
			assert_true(json_is_integer(json_object_get(ts, "microseconds")));
			assert_true(us >= 0 && us < 1000000);
			assert_string_equal(json_string_value(json_object_get(r[i], "event")),
					    "guest-exit");
			assert_int_equal(json_integer_value(json_object_get(
						 json_object_get(r[i], "data"), "status")),
					 3);
			json_decref(r[i]);
		}
		close(fd2);
		free(rd2);
		/* The loop notices the hang-up and keeps serving the other. */
		for (int i = 0; i < 5; i++)
			loop_once(&loop, 10);
	}
	client_send(fd, "{\"id\":6,\"cmd\":\"quit\"}\n");
	read_replies(&loop, fd, rd, r, 1);
	assert_true(json_is_true(json_object_get(r[0], "ok")));
	assert_int_equal(vm.n_quit, 1);
	json_decref(r[0]);

	close(fd);
	loop_once(&loop, 10);
	control_exit(&c);
	assert_int_equal(access(path, F_OK), -1); /* unlinked */
	evloop_exit(&loop);
	free(rd);
}

/* The first line a client receives, before asking anything, is the greeting:
 * vmrun's version, the protocol version and the command names. */
static void test_socket_greeting(void **state)
{
	struct evloop loop;
	struct control c;
	char path[128], err[256] = "", buf[4096];
	size_t have = 0;
	json_t *g, *body, *names, *r[1];
	struct reader *rd = calloc(1, sizeof(*rd));
	char *nl = NULL;
	bool has_help = false;
	size_t i;
	json_t *name;
	int fd;

	assert_non_null(rd);
	sock_path(path, sizeof(path), "ctl.sock");
	assert_int_equal(evloop_init(&loop), 0);
	assert_int_equal(control_init(&c, &loop, path, &fake_ops, &vm, err, sizeof(err)), 0);
	fd = client_connect(path);
	assert_true(fd >= 0);
	for (int round = 0; round < 300 && !nl; round++) {
		ssize_t n;

		loop_once(&loop, 10);
		n = recv(fd, buf + have, sizeof(buf) - 1 - have, MSG_DONTWAIT);
		if (n > 0)
			have += (size_t)n;
		nl = memchr(buf, '\n', have);
	}
	assert_non_null(nl);
	g = json_loadb(buf, (size_t)(nl - buf), 0, NULL);
	assert_non_null(g);
	body = json_object_get(g, "greeting");
	assert_true(json_is_object(body));
	assert_true(json_is_string(json_object_get(body, "vmrun")));
	assert_true(json_string_length(json_object_get(body, "vmrun")) > 0);
	assert_int_equal(json_integer_value(json_object_get(body, "protocol")),
			 CONTROL_PROTOCOL_VERSION);
	names = json_object_get(body, "commands");
	assert_true(json_is_array(names));
	json_array_foreach(names, i, name)
		has_help |= !strcmp(json_string_value(name), "help");
	assert_true(has_help);
	json_decref(g);
	/* Nothing else arrived unasked; the first reply follows. */
	assert_int_equal(have, (size_t)(nl - buf) + 1);
	client_send(fd, "{\"id\":1,\"cmd\":\"query-status\"}\n");
	read_replies(&loop, fd, rd, r, 1);
	assert_int_equal(rd->greetings, 0);
	assert_int_equal(json_integer_value(json_object_get(r[0], "id")), 1);
	json_decref(r[0]);
	close(fd);
	loop_once(&loop, 10);
	control_exit(&c);
	evloop_exit(&loop);
	free(rd);
}

static void test_socket_refuses_regular_file(void **state)
{
	struct evloop loop;
	struct control c;
	char path[128], err[256] = "";
	int fd;

	sock_path(path, sizeof(path), "ctl.sock");
	fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "keep", 4), 4);
	close(fd);
	assert_int_equal(evloop_init(&loop), 0);
	assert_int_equal(control_init(&c, &loop, path, &fake_ops, &vm, err, sizeof(err)), -EEXIST);
	assert_one_line_naming(err, NULL);
	{
		/* The file is left alone. */
		struct stat st;

		assert_int_equal(stat(path, &st), 0);
		assert_true(S_ISREG(st.st_mode));
		assert_int_equal(st.st_size, 4);
	}
	evloop_exit(&loop);
}

static void test_socket_replaces_stale(void **state)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct evloop loop;
	struct control c;
	char path[128], err[256] = "";
	struct reader *rd = calloc(1, sizeof(*rd));
	json_t *r[1];
	int stale, fd;

	assert_non_null(rd);
	sock_path(path, sizeof(path), "ctl.sock");
	/* A socket file nobody listens on, as a killed vmrun leaves behind. */
	stale = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(stale >= 0);
	strcpy(addr.sun_path, path);
	assert_int_equal(bind(stale, (struct sockaddr *)&addr, sizeof(addr)), 0);
	close(stale);
	assert_int_equal(client_connect(path), -ECONNREFUSED);

	assert_int_equal(evloop_init(&loop), 0);
	assert_int_equal(control_init(&c, &loop, path, &fake_ops, &vm, err, sizeof(err)), 0);
	fd = client_connect(path);
	assert_true(fd >= 0);
	client_send(fd, "{\"id\":1,\"cmd\":\"query-status\"}\n");
	read_replies(&loop, fd, rd, r, 1);
	assert_true(json_is_true(json_object_get(r[0], "ok")));
	json_decref(r[0]);
	close(fd);
	control_exit(&c);
	evloop_exit(&loop);
	free(rd);
}

static void test_socket_refuses_live(void **state)
{
	struct evloop loop;
	struct control first, second;
	char path[128], err[256] = "";
	int fd;

	sock_path(path, sizeof(path), "ctl.sock");
	assert_int_equal(evloop_init(&loop), 0);
	assert_int_equal(control_init(&first, &loop, path, &fake_ops, &vm, err, sizeof(err)), 0);
	err[0] = '\0';
	assert_true(control_init(&second, &loop, path, &fake_ops, &vm, err, sizeof(err)) < 0);
	assert_one_line_naming(err, NULL);
	/* The first one still works. */
	fd = client_connect(path);
	assert_true(fd >= 0);
	close(fd);
	loop_once(&loop, 10);
	control_exit(&first);
	evloop_exit(&loop);
}

/* Wait (running the loop) until the server hangs up on @fd; returns true
 * when it did.  What arrives before the hang-up is dropped. */
static bool wait_hangup(struct evloop *loop, int fd)
{
	char junk[4096];

	for (int round = 0; round < 300; round++) {
		ssize_t n;

		loop_once(loop, 10);
		n = recv(fd, junk, sizeof(junk), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN))
			return true;
	}
	return false;
}

static void test_socket_line_too_long(void **state)
{
	struct evloop loop;
	struct control c;
	char path[128], err[256] = "";
	struct reader *rd = calloc(1, sizeof(*rd));
	size_t big = CONTROL_LINE_MAX + 4096;
	char *line = malloc(big);
	json_t *r[1];
	int fd, other;

	assert_non_null(rd);
	assert_non_null(line);
	memset(line, ' ', big);
	sock_path(path, sizeof(path), "ctl.sock");
	assert_int_equal(evloop_init(&loop), 0);
	assert_int_equal(control_init(&c, &loop, path, &fake_ops, &vm, err, sizeof(err)), 0);
	fd = client_connect(path);
	other = client_connect(path);
	assert_true(fd >= 0 && other >= 0);
	loop_once(&loop, 10);

	/* More than CONTROL_LINE_MAX bytes without a newline: disconnected. */
	{
		size_t off = 0;

		for (int round = 0; round < 300 && off < big; round++) {
			ssize_t n = send(fd, line + off, big - off, MSG_NOSIGNAL | MSG_DONTWAIT);

			if (n > 0)
				off += (size_t)n;
			else if (n < 0 && errno != EAGAIN)
				break; /* already hung up on */
			loop_once(&loop, 10);
		}
	}
	assert_true(wait_hangup(&loop, fd));
	close(fd);

	/* The other client is not affected. */
	client_send(other, "{\"id\":1,\"cmd\":\"query-status\"}\n");
	read_replies(&loop, other, rd, r, 1);
	assert_true(json_is_true(json_object_get(r[0], "ok")));
	json_decref(r[0]);
	close(other);
	loop_once(&loop, 10);
	control_exit(&c);
	evloop_exit(&loop);
	free(line);
	free(rd);
}

static void test_socket_all_clients_served(void **state)
{
	struct evloop loop;
	struct control c;
	char path[128], err[256] = "";
	struct reader *rd = calloc(1, sizeof(*rd));
	int fds[CONTROL_MAX_CLIENTS];
	json_t *r[1];

	assert_non_null(rd);
	sock_path(path, sizeof(path), "ctl.sock");
	assert_int_equal(evloop_init(&loop), 0);
	assert_int_equal(control_init(&c, &loop, path, &fake_ops, &vm, err, sizeof(err)), 0);
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++) {
		fds[i] = client_connect(path);
		assert_true(fds[i] >= 0);
		loop_once(&loop, 10);
	}
	/* One more than the maximum: whatever it gets, the others go on. */
	{
		int extra = client_connect(path);

		if (extra >= 0) {
			assert_true(wait_hangup(&loop, extra));
			close(extra);
		}
	}
	for (int i = CONTROL_MAX_CLIENTS - 1; i >= 0; i--) {
		char req[64];

		snprintf(req, sizeof(req), "{\"id\":%d,\"cmd\":\"query-status\"}\n", 100 + i);
		client_send(fds[i], req);
		memset(rd, 0, sizeof(*rd));
		read_replies(&loop, fds[i], rd, r, 1);
		assert_int_equal(json_integer_value(json_object_get(r[0], "id")), 100 + i);
		json_decref(r[0]);
	}
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
		close(fds[i]);
	loop_once(&loop, 10);
	control_exit(&c);
	evloop_exit(&loop);
	free(rd);
}

/* ---- replies are valid JSON whatever the input (vmrun/utf8.h) ---- */

static void expect_valid(const char *in, size_t len, size_t cap, const char *want)
{
	char out[64];

	assert_true(cap <= sizeof(out));
	utf8_make_valid(out, cap, in, len);
	assert_string_equal(out, want);
	assert_true(utf8_valid(out, strlen(out)));
}

static void test_utf8_make_valid(void **state)
{
	(void)state;
	expect_valid("plain", 5, 64, "plain");
	expect_valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14, 64,
		     "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
	expect_valid("a\xff" "b", 3, 64, "a\\xffb");
	expect_valid("\x80", 1, 64, "\\x80");                 /* stray continuation */
	expect_valid("\xc3", 1, 64, "\\xc3");                 /* truncated */
	expect_valid("\xc0\xaf", 2, 64, "\\xc0\\xaf");        /* overlong '/' */
	expect_valid("\xe0\x80\xaf", 3, 64, "\\xe0\\x80\\xaf"); /* overlong */
	expect_valid("\xed\xa0\x80", 3, 64, "\\xed\\xa0\\x80"); /* surrogate */
	expect_valid("\xf4\x90\x80\x80", 4, 64, "\\xf4\\x90\\x80\\x80"); /* > U+10FFFF */
	expect_valid("\xf0\x9f\x98", 3, 64, "\\xf0\\x9f\\x98");
	/* Cut between characters and escapes, never inside one. */
	expect_valid("ab\xc3\xa9", 4, 4, "ab");
	expect_valid("ab\xc3\xa9", 4, 5, "ab\xc3\xa9");
	expect_valid("a\xff", 2, 5, "a");
	expect_valid("a\xff", 2, 6, "a\\xff");
	assert_false(utf8_valid("\xff", 1));
	assert_true(utf8_valid("", 0));

	json_t *j = utf8_json_string("/tmp/d\xff.qcow2");

	assert_non_null(j);
	assert_string_equal(json_string_value(j), "/tmp/d\\xff.qcow2");
	json_decref(j);
}

/* An unknown command of a few hundred multi-byte characters: the error
 * message quoting it is cut at 255 bytes, wherever that falls inside a
 * character (1..3 ASCII bytes first move the cut through each position of
 * 2, 3 and 4-byte characters): the reply must still be there and be JSON. */
static void test_error_cut_mid_character(void **state)
{
	static const char *const chars[] = { "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80" };

	(void)state;
	for (size_t c = 0; c < ARRAY_LEN(chars); c++) {
		for (size_t shift = 0; shift < 4; shift++) {
			json_t *req = json_object(), *reply;
			char name[1200] = "", *line;
			const char *e;
			size_t len;

			memset(name, 'x', shift);
			name[shift] = '\0';
			while (strlen(name) + strlen(chars[c]) < 1000)
				strcat(name, chars[c]);
			json_object_set_new(req, "id", json_integer(5));
			json_object_set_new(req, "cmd", json_string(name));
			line = json_dumps(req, JSON_COMPACT);
			assert_non_null(line);
			reply = control_handle_line(&ctl, line, strlen(line));
			if (!reply)
				fail_msg("char %zu shift %zu: no reply", c, shift);
			assert_failed(reply);
			e = json_string_value(json_object_get(reply, "error"));
			assert_non_null(strstr(e, "unknown command"));
			assert_true(strlen(e) <= 255);
			assert_true(utf8_valid(e, strlen(e)));
			assert_int_equal(json_integer_value(json_object_get(reply, "id")), 5);
			free(control_dump_line(reply, &len));
			json_decref(reply);
			json_decref(req);
			free(line);
		}
	}
}

/* A reason naming a path that is not UTF-8 arrives, escaped. */
static void test_error_not_utf8(void **state)
{
	json_t *reply;
	const char *e;

	(void)state;
	reply = handle("{\"id\":2,\"cmd\":\"snapshot\",\"args\":{\"disk\":\"bytes\"}}");
	assert_failed(reply);
	e = json_string_value(json_object_get(reply, "error"));
	assert_string_equal(e, "snapshot failed: cannot create /tmp/d\\xff\\xfe.base-1: "
			       "Permission denied");
	json_decref(reply);
	json_decref(vm.snapshot_args);
	vm.snapshot_args = NULL;
}

/* ---- vmrun ctl never waits forever ---- */

static int listen_at(const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	strcpy(addr.sun_path, path);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(fd, 8), 0);
	return fd;
}

/* A listener that never accepts (connect completes in its backlog) and a
 * server that acknowledges wait-exit but never sends the exit event: both
 * end in CTL_TIMEOUT after --timeout. */
static void test_ctl_reply_timeout(void **state)
{
	char path[128];
	int lfd, st;
	pid_t pid;

	(void)state;
	sock_path(path, sizeof(path), "ctl.sock");
	lfd = listen_at(path);
	{
		char *argv[] = { "ctl", "--timeout=1", path, "query-status", NULL };

		assert_int_equal(ctl_main(4, argv), CTL_TIMEOUT);
	}
	{
		char *argv[] = { "ctl", "--timeout", "x", path, "query-status", NULL };

		assert_int_equal(ctl_main(5, argv), CTL_USAGE);
	}
	close(lfd);
	unlink(path);

	lfd = listen_at(path);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		static const char ack[] = "{\"greeting\":{}}\n{\"id\":1,\"ok\":true,\"result\":{}}\n";
		int c = accept(lfd, NULL, NULL);
		char b[256];

		if (c < 0 || write(c, ack, sizeof(ack) - 1) != (ssize_t)(sizeof(ack) - 1))
			_exit(1);
		/* Hold the connection until the client gives up. */
		while (read(c, b, sizeof(b)) > 0)
			;
		_exit(0);
	}
	{
		char *argv[] = { "ctl", "--timeout=1", path, "wait-exit", NULL };

		assert_int_equal(ctl_main(4, argv), CTL_TIMEOUT);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	close(lfd);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_query_status_number_id, setup_handle),
		cmocka_unit_test_setup(test_query_status_string_id, setup_handle),
		cmocka_unit_test_setup(test_no_id, setup_handle),
		cmocka_unit_test_setup(test_pause_resume_quit, setup_handle),
		cmocka_unit_test_setup(test_op_failure, setup_handle),
		cmocka_unit_test_setup(test_query_status_failure, setup_handle),
		cmocka_unit_test_setup(test_bad_requests, setup_handle),
		cmocka_unit_test_setup(test_bad_request_echoes_id, setup_handle),
		cmocka_unit_test_setup(test_snapshot_args, setup_handle),
		cmocka_unit_test_setup(test_deep_nesting, setup_handle),
		cmocka_unit_test_setup(test_length_is_respected, setup_handle),
		cmocka_unit_test_setup(test_help_lists_every_command, setup_handle),
		cmocka_unit_test_setup(test_dump_line_precision, setup_handle),
		cmocka_unit_test_setup_teardown(test_socket_greeting, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_socket_requests, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_socket_refuses_regular_file, setup_dir,
						teardown_dir),
		cmocka_unit_test_setup_teardown(test_socket_replaces_stale, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_socket_refuses_live, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_socket_line_too_long, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_socket_all_clients_served, setup_dir,
						teardown_dir),
		cmocka_unit_test(test_utf8_make_valid),
		cmocka_unit_test_setup(test_error_cut_mid_character, setup_handle),
		cmocka_unit_test_setup(test_error_not_utf8, setup_handle),
		cmocka_unit_test_setup_teardown(test_ctl_reply_timeout, setup_dir, teardown_dir),
	};

	return cmocka_run_group_tests_name("control", tests, NULL, NULL);
}

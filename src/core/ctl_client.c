/* `vmrun ctl`: send one request, print its reply's result as JSON on stdout.
 * The special command `wait-exit` prints the guest-exit event instead, so a
 * script can wait for the guest without polling. */
#include "vmrun/ctl.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "vmrun/control.h"

static json_t *parse_args(int argc, char *const argv[])
{
	json_t *args = json_object();

	for (int i = 0; i < argc; i++) {
		const char *eq = strchr(argv[i], '=');
		char key[64];

		if (!eq || eq == argv[i] || (size_t)(eq - argv[i]) >= sizeof(key)) {
			fprintf(stderr, "vmrun ctl: argument '%s' is not KEY=VALUE\n", argv[i]);
			json_decref(args);
			return NULL;
		}
		memcpy(key, argv[i], (size_t)(eq - argv[i]));
		key[eq - argv[i]] = '\0';
		json_object_set_new(args, key, json_string(eq + 1));
	}
	return args;
}

/* Read one line from @fd into @buf; returns its length or -1. */
static ssize_t read_line(int fd, char *buf, size_t cap, size_t *have)
{
	for (;;) {
		char *nl = memchr(buf, '\n', *have);
		ssize_t n;

		if (nl)
			return nl - buf;
		if (*have == cap)
			return -1;
		n = read(fd, buf + *have, cap - *have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		*have += (size_t)n;
	}
}

static int ctl_connect(const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(addr.sun_path)) {
		fprintf(stderr, "vmrun ctl: socket path too long: %s\n", path);
		return -1;
	}
	strcpy(addr.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		fprintf(stderr, "vmrun ctl: cannot connect to %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

int ctl_main(int argc, char *const argv[])
{
	bool wait_exit;
	json_t *args, *req;
	char *text, *buf;
	size_t have = 0;
	int fd, status = CTL_NO_CONNECT;

	if (argc < 3) {
		fprintf(stderr, "usage: vmrun ctl SOCKET COMMAND [KEY=VALUE ...]\n"
				"commands: query-status, pause, resume, quit, wait-exit, help,\n"
				"          snapshot disk=N|PATH (a live overlay snapshot of a disk)\n");
		return CTL_USAGE;
	}
	args = parse_args(argc - 3, argv + 3);
	if (!args)
		return CTL_USAGE;
	wait_exit = !strcmp(argv[2], "wait-exit");
	fd = ctl_connect(argv[1]);
	if (fd < 0) {
		json_decref(args);
		return CTL_NO_CONNECT;
	}
	/* wait-exit asks for the status: any reply keeps the connection open
	 * until the guest-exit event arrives. */
	req = json_pack("{s:i,s:s,s:o}", "id", 1, "cmd", wait_exit ? "query-status" : argv[2],
			"args", args);
	text = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	buf = malloc(CONTROL_LINE_MAX);
	if (!text || !buf) {
		free(text);
		free(buf);
		close(fd);
		return CTL_FAILED;
	}
	if (dprintf(fd, "%s\n", text) < 0) {
		fprintf(stderr, "vmrun ctl: send failed: %s\n", strerror(errno));
		goto out;
	}
	for (;;) {
		ssize_t len = read_line(fd, buf, CONTROL_LINE_MAX, &have);
		json_t *msg, *ev;

		if (len < 0) {
			fprintf(stderr, "vmrun ctl: connection closed before a reply\n");
			status = CTL_NO_CONNECT;
			break;
		}
		msg = json_loadb(buf, (size_t)len, 0, NULL);
		memmove(buf, buf + len + 1, have - (size_t)len - 1);
		have -= (size_t)len + 1;
		if (!msg)
			continue;
		if (json_object_get(msg, "greeting")) {
			/* The first line on connect; replies and events follow. */
			json_decref(msg);
			continue;
		}
		ev = json_object_get(msg, "event");
		if (wait_exit) {
			if (!ev) {
				/* Our request was answered: vmrun knows this
				 * client and will send it the exit event. */
				fprintf(stderr, "vmrun ctl: waiting for the guest to exit\n");
			} else if (json_is_string(ev) && !strcmp(json_string_value(ev), "guest-exit")) {
				char *out = json_dumps(json_object_get(msg, "data"),
						       JSON_COMPACT | JSON_REAL_PRECISION(15));

				printf("%s\n", out ? out : "{}");
				free(out);
				json_decref(msg);
				status = CTL_OK;
				break;
			}
		} else if (!ev) {
			json_t *ok = json_object_get(msg, "ok");

			if (json_is_true(ok)) {
				char *out = json_dumps(json_object_get(msg, "result"),
						 JSON_COMPACT | JSON_REAL_PRECISION(15));

				printf("%s\n", out ? out : "{}");
				free(out);
				status = CTL_OK;
			} else {
				json_t *e = json_object_get(msg, "error");

				fprintf(stderr, "vmrun ctl: %s\n",
					json_is_string(e) ? json_string_value(e) : "request failed");
				status = CTL_FAILED;
			}
			json_decref(msg);
			break;
		}
		json_decref(msg);
	}
out:
	free(text);
	free(buf);
	close(fd);
	return status;
}

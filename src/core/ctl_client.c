/* `vmrun ctl`: send one request, print its reply's result as JSON on stdout.
 * The special command `wait-exit` prints the guest-exit event instead, so a
 * script can wait for the guest without polling.
 *
 * Never waits forever on a vmrun that does not answer: connecting, sending
 * and the reply share one limit, --timeout=SECONDS (0: none).  By default
 * CTL_TIMEOUT_DEFAULT_S, CTL_TIMEOUT_SAVE_S for `save` (it writes all of
 * guest RAM), and for `wait-exit` the default for the acknowledgement but
 * none for the guest-exit event itself (a guest may run for days). */
#include "vmrun/ctl.h"

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "vmrun/control.h"
#include "vmrun/utf8.h"

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
		/* A JSON string is UTF-8: a value that is not cannot be sent
		 * as it is (vmrun's names for such paths: vmrun/utf8.h). */
		if (!utf8_valid(argv[i], strlen(argv[i]))) {
			fprintf(stderr, "vmrun ctl: argument '%s' is not valid UTF-8\n", key);
			json_decref(args);
			return NULL;
		}
		json_object_set_new(args, key, json_string(eq + 1));
	}
	return args;
}

static int64_t now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Read one line from @fd into @buf; returns its length, -1 when the
 * connection ended, -2 when @deadline (now_ms() time; < 0: none) passed. */
static ssize_t read_line(int fd, char *buf, size_t cap, size_t *have, int64_t deadline)
{
	for (;;) {
		char *nl = memchr(buf, '\n', *have);
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		ssize_t n;
		int left = -1;

		if (nl)
			return nl - buf;
		if (*have == cap)
			return -1;
		if (deadline >= 0) {
			int64_t d = deadline - now_ms();

			if (d <= 0)
				return -2;
			left = d > 1000000 ? 1000000 : (int)d;
		}
		n = poll(&pfd, 1, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			continue; /* the deadline check above decides */
		n = read(fd, buf + *have, cap - *have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		*have += (size_t)n;
	}
}

/* Connect to @path; connect() and send() give up after @timeout_s seconds
 * (a listener whose backlog is full blocks connect; 0: no limit). */
static int ctl_connect(const char *path, unsigned timeout_s)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = timeout_s };
	int fd;

	if (strlen(path) >= sizeof(addr.sun_path)) {
		fprintf(stderr, "vmrun ctl: socket path too long: %s\n", path);
		return -1;
	}
	strcpy(addr.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && timeout_s)
		(void)!setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		fprintf(stderr, "vmrun ctl: cannot connect to %s: %s\n", path,
			errno == EAGAIN ? "timed out (vmrun does not accept)" : strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* --timeout=SECONDS or --timeout SECONDS at @argv[*i]; returns 0, 1 when
 * @argv[*i] is not that option, or -1 (message printed). */
static int parse_timeout(int argc, char *const argv[], int *i, long *timeout_s)
{
	const char *v;
	char *end;

	if (!strncmp(argv[*i], "--timeout=", 10))
		v = argv[*i] + 10;
	else if (!strcmp(argv[*i], "--timeout") && *i + 1 < argc)
		v = argv[++*i];
	else
		return 1;
	errno = 0;
	*timeout_s = strtol(v, &end, 10);
	if (!*v || *end || errno || *timeout_s < 0 || *timeout_s > CTL_TIMEOUT_MAX_S) {
		fprintf(stderr, "vmrun ctl: --timeout wants whole seconds, 0..%d (0: no limit)\n",
			CTL_TIMEOUT_MAX_S);
		return -1;
	}
	return 0;
}

int ctl_main(int argc, char *const argv[])
{
	bool wait_exit, got_reply = false, timeout_given;
	json_t *args, *req;
	char *text, *buf;
	size_t have = 0;
	long timeout_s = -1;
	int64_t deadline;
	int fd, status = CTL_NO_CONNECT, first = 1;

	while (first < argc && !strncmp(argv[first], "--timeout", 9)) {
		int r = parse_timeout(argc, argv, &first, &timeout_s);

		if (r < 0)
			return CTL_USAGE;
		if (r > 0)
			break;
		first++;
	}
	argc -= first - 1;
	argv += first - 1;
	if (argc < 3 || argv[1][0] == '-') {
		fprintf(stderr, "usage: vmrun ctl [--timeout=SECONDS] SOCKET COMMAND [KEY=VALUE ...]\n"
				"commands: query-status, pause, resume, quit, wait-exit, help,\n"
				"          snapshot disk=N|PATH (a live overlay snapshot of a disk)\n"
				"          save path=DIR (a whole-VM snapshot),\n"
				"          migrate uri=tcp:HOST:PORT [downtime_ms=N] [max_bandwidth=B],\n"
				"          query-migrate, migrate-cancel (live migration)\n"
				"a reply is awaited %d s (save: %d s; wait-exit: %d s for the\n"
				"acknowledgement, then no limit; migrate: no limit), or --timeout (0: no limit)\n",
			CTL_TIMEOUT_DEFAULT_S, CTL_TIMEOUT_SAVE_S, CTL_TIMEOUT_DEFAULT_S);
		return CTL_USAGE;
	}
	if (!utf8_valid(argv[2], strlen(argv[2]))) {
		fprintf(stderr, "vmrun ctl: the command name is not valid UTF-8\n");
		return CTL_USAGE;
	}
	args = parse_args(argc - 3, argv + 3);
	if (!args)
		return CTL_USAGE;
	wait_exit = !strcmp(argv[2], "wait-exit");
	timeout_given = timeout_s >= 0;
	if (!timeout_given)
		timeout_s = !strcmp(argv[2], "save")	? CTL_TIMEOUT_SAVE_S :
			    !strcmp(argv[2], "migrate") ? 0 /* ends by itself (max_seconds) */ :
							  CTL_TIMEOUT_DEFAULT_S;
	deadline = timeout_s ? now_ms() + timeout_s * 1000 : -1;
	fd = ctl_connect(argv[1], (unsigned)timeout_s);
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
		fprintf(stderr, "vmrun ctl: out of memory\n");
		free(text);
		free(buf);
		close(fd);
		return CTL_FAILED;
	}
	if (dprintf(fd, "%s\n", text) < 0) {
		fprintf(stderr, "vmrun ctl: send failed: %s\n",
			errno == EAGAIN ? "timed out (vmrun does not read)" : strerror(errno));
		goto out;
	}
	for (;;) {
		/* wait-exit: once acknowledged, the event may take as long
		 * as the guest runs, unless --timeout limits it. */
		bool unlimited = wait_exit && got_reply && !timeout_given;
		ssize_t len = read_line(fd, buf, CONTROL_LINE_MAX, &have, unlimited ? -1 : deadline);
		json_t *msg, *ev;

		if (len == -2) {
			fprintf(stderr, "vmrun ctl: no %s from %s within %ld s (--timeout)\n",
				wait_exit && got_reply ? "guest-exit event" : "reply", argv[1],
				timeout_s);
			status = CTL_TIMEOUT;
			break;
		}
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
				got_reply = true;
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
				json_t *res = json_object_get(msg, "result");
				const char *st = json_string_value(json_object_get(res, "status"));
				char *out = json_dumps(res, JSON_COMPACT | JSON_REAL_PRECISION(15));

				printf("%s\n", out ? out : "{}");
				free(out);
				status = CTL_OK;
				/* A migration that ended without completing is a
				 * failure, with its statistics on stdout. */
				if (!strcmp(argv[2], "migrate") && (!st || strcmp(st, "completed"))) {
					const char *why = json_string_value(json_object_get(res, "error"));

					fprintf(stderr, "vmrun ctl: migration %s: %s\n", st ? st : "failed",
						why ? why : "no reason given");
					status = CTL_FAILED;
				}
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

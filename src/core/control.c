#include "vmrun/control.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "vmrun/log.h"
#include "vmrun/utf8.h"

static json_t *reply_error(json_t *id, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* An error message is cut to 255 bytes; the cut falls between characters,
 * and bytes from outside that are not UTF-8 are escaped (vmrun/utf8.h), so
 * that jansson accepts it: a message it refused would be no reply at all. */
static json_t *reply_error(json_t *id, const char *fmt, ...)
{
	char full[1024], msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(full, sizeof(full), fmt, ap);
	va_end(ap);
	utf8_make_valid(msg, sizeof(msg), full, strlen(full));
	return json_pack("{s:O?,s:b,s:s}", "id", id, "ok", 0, "error", msg);
}

/* Sent when a reply cannot be built or serialised (out of memory), so that
 * a request never goes unanswered. */
static const char reply_failed[] =
	"{\"id\":null,\"ok\":false,\"error\":\"internal error: the reply could not be built\"}\n";

static json_t *reply_ok(json_t *id, json_t *result)
{
	return json_pack("{s:O?,s:b,s:o}", "id", id, "ok", 1, "result",
			 result ? result : json_object());
}

#ifndef VMRUN_VERSION
#define VMRUN_VERSION "unknown"
#endif

/* Every command, with the one line "help" answers; the greeting lists the
 * names.  Kept in step with run_command() by test_help_lists_every_command. */
static const struct control_command {
	const char *name;
	const char *help;
} control_commands[] = {
	{ "query-status", "the run state, vCPUs, memory, disks, NICs and uptime" },
	{ "pause", "stop every vCPU; answers once all of them are parked" },
	{ "resume", "run the vCPUs again; answers once all of them left the pause" },
	{ "quit", "end the run (exit status 0)" },
	{ "nmi", "a non-maskable interrupt on every vCPU (QEMU's nmi: a guest kernel's crash dump "
		 "or backtrace)" },
	{ "snapshot", "args {\"disk\": N or PATH}: a live overlay snapshot of a disk" },
	{ "save", "args {\"path\": DIR}: a whole-VM snapshot (vmrun --restore DIR)" },
	{ "migrate", "args {\"uri\": \"tcp:HOST:PORT\", \"downtime_ms\", \"max_bandwidth\"}: live "
		     "migration; answers when it ended, with its statistics" },
	{ "query-migrate", "the migration's state and progress" },
	{ "migrate-cancel", "stop the migration; the guest runs on here" },
	{ "help", "this list" },
};

#define CONTROL_N_COMMANDS (sizeof(control_commands) / sizeof(control_commands[0]))

json_t *control_greeting(void)
{
	json_t *names = json_array();

	for (size_t i = 0; i < CONTROL_N_COMMANDS; i++)
		json_array_append_new(names, json_string(control_commands[i].name));
	return json_pack("{s:{s:s,s:i,s:o}}", "greeting", "vmrun", VMRUN_VERSION, "protocol",
			 CONTROL_PROTOCOL_VERSION, "commands", names);
}

char *control_dump_line(const json_t *obj, size_t *len)
{
	/* 15 significant digits: a value rounded to milliseconds prints as
	 * 1.508, not as 1.5080000000000000 or 1.5081706590000001. */
	char *text = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(15));
	size_t n;

	if (!text)
		return NULL;
	n = strlen(text);
	text[n] = '\n'; /* replaces the NUL; json_dumps output is n + 1 bytes */
	*len = n + 1;
	return text;
}

/* Commands: name, handler.  A handler returns 0 or -errno.  @args is the
 * request's "args" object (never NULL). */
static json_t *run_command(struct control *ctl, json_t *id, const char *cmd, json_t *args)
{
	int r;

	if (!strcmp(cmd, "help")) {
		json_t *list = json_object();

		for (size_t i = 0; i < CONTROL_N_COMMANDS; i++)
			json_object_set_new(list, control_commands[i].name,
					    json_string(control_commands[i].help));
		return reply_ok(id, json_pack("{s:o}", "commands", list));
	}
	if (!strcmp(cmd, "snapshot")) {
		char err[512] = "";
		json_t *res = ctl->ops->disk_snapshot ?
				      ctl->ops->disk_snapshot(ctl->opaque, args, err, sizeof(err)) :
				      NULL;

		if (!ctl->ops->disk_snapshot)
			snprintf(err, sizeof(err), "no disks");
		return res ? reply_ok(id, res) : reply_error(id, "snapshot failed: %s",
							     err[0] ? err : "no reason given");
	}
	if (!strcmp(cmd, "save")) {
		char err[512] = "";
		json_t *res = ctl->ops->save ? ctl->ops->save(ctl->opaque, args, err, sizeof(err)) :
				  NULL;

		if (!ctl->ops->save)
			snprintf(err, sizeof(err), "not supported");
		return res ? reply_ok(id, res) : reply_error(id, "save failed: %s",
							     err[0] ? err : "no reason given");
	}
	if (!strcmp(cmd, "migrate") || !strcmp(cmd, "query-migrate") ||
	    !strcmp(cmd, "migrate-cancel")) {
		char err[512] = "";

		if (!ctl->ops->migrate)
			return reply_error(id, "%s: not supported", cmd);
		if (!strcmp(cmd, "query-migrate")) {
			json_t *st = ctl->ops->query_migrate(ctl->opaque);

			return st ? reply_ok(id, st) : reply_error(id, "query-migrate failed");
		}
		if (!strcmp(cmd, "migrate-cancel")) {
			r = ctl->ops->migrate_cancel(ctl->opaque, err, sizeof(err));
			return r ? reply_error(id, "migrate-cancel failed: %s", err) :
				   reply_ok(id, ctl->ops->query_migrate(ctl->opaque));
		}
		struct control_deferred later = {
			.client = ctl->current_client,
			.generation = ctl->current_client >= 0 ?
					      ctl->clients[ctl->current_client].generation : 0,
			.id = json_incref(id),
		};

		r = ctl->ops->migrate(ctl->opaque, args, &later, err, sizeof(err));
		if (r) {
			json_decref(later.id);
			return reply_error(id, "migrate failed: %s", err[0] ? err : strerror(-r));
		}
		ctl->deferred = true;
		return NULL;
	}
	if (!strcmp(cmd, "query-status")) {
		json_t *st = ctl->ops->query_status(ctl->opaque);

		return st ? reply_ok(id, st) : reply_error(id, "query-status failed");
	}
	if (!strcmp(cmd, "pause"))
		r = ctl->ops->pause(ctl->opaque);
	else if (!strcmp(cmd, "resume"))
		r = ctl->ops->resume(ctl->opaque);
	else if (!strcmp(cmd, "quit"))
		r = ctl->ops->quit(ctl->opaque);
	else if (!strcmp(cmd, "nmi"))
		r = ctl->ops->nmi ? ctl->ops->nmi(ctl->opaque) : -ENOTSUP;
	else
		return reply_error(id, "unknown command '%s' (query-status, pause, resume, quit, nmi, "
				       "snapshot, save, migrate, query-migrate, migrate-cancel, help)", cmd);
	if (r)
		return reply_error(id, "%s failed: %s", cmd, strerror(-r));
	return reply_ok(id, ctl->ops->query_status(ctl->opaque));
}

json_t *control_handle_line(struct control *ctl, const char *line, size_t len)
{
	json_error_t jerr;
	json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr), *id, *cmd, *args, *reply;

	if (!req)
		return reply_error(NULL, "malformed JSON: %s", jerr.text);
	if (!json_is_object(req)) {
		json_decref(req);
		return reply_error(NULL, "a request must be a JSON object");
	}
	id = json_object_get(req, "id");
	cmd = json_object_get(req, "cmd");
	/* A missing "args" is an empty object (owned by req from here). */
	args = json_object_get(req, "args");
	if (!args) {
		args = json_object();
		json_object_set_new(req, "args", args);
	}
	if (!json_is_string(cmd))
		reply = reply_error(id, "missing \"cmd\" string");
	else if (!json_is_object(args))
		reply = reply_error(id, "\"args\" must be an object");
	else
		reply = run_command(ctl, id, json_string_value(cmd), args);
	json_decref(req);
	return reply;
}

static void client_close(struct control_client *cl)
{
	if (cl->src.fd < 0)
		return;
	evloop_remove(cl->ctl->loop, &cl->src);
	close(cl->src.fd);
	cl->src.fd = -1;
	cl->len = 0;
}

/* Send one JSON object and a newline.  A client that cannot take a small
 * reply right now is not reading: it is disconnected rather than allowed to
 * block the loop.  A reply (@is_reply) that cannot be serialised, or none
 * at all (@obj NULL), is answered with reply_failed instead. */
static void client_send(struct control_client *cl, json_t *obj, bool is_reply)
{
	size_t len = 0;
	char *text = obj ? control_dump_line(obj, &len) : NULL;
	ssize_t n;

	if (!text && !is_reply) {
		client_close(cl);
		return;
	}
	if (text) {
		n = send(cl->src.fd, text, len, MSG_DONTWAIT | MSG_NOSIGNAL);
		free(text);
	} else {
		len = sizeof(reply_failed) - 1;
		n = send(cl->src.fd, reply_failed, len, MSG_DONTWAIT | MSG_NOSIGNAL);
	}
	if (n != (ssize_t)len)
		client_close(cl);
}

static void client_handle(struct ev_source *src, uint32_t events)
{
	struct control_client *cl = src->opaque;
	ssize_t n;

	if (events & (EPOLLERR | EPOLLHUP) && !(events & EPOLLIN)) {
		client_close(cl);
		return;
	}
	n = recv(src->fd, cl->buf + cl->len, CONTROL_LINE_MAX - cl->len, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		client_close(cl);
		return;
	}
	cl->len += (size_t)n;
	for (;;) {
		char *nl = memchr(cl->buf, '\n', cl->len);
		size_t line_len;
		json_t *reply;

		if (!nl)
			break;
		line_len = (size_t)(nl - cl->buf);
		if (line_len && cl->buf[line_len - 1] == '\r')
			line_len--;
		if (line_len) {
			cl->ctl->current_client = (int)(cl - cl->ctl->clients);
			cl->ctl->deferred = false;
			reply = control_handle_line(cl->ctl, cl->buf, line_len);
			cl->ctl->current_client = -1;
			/* A deferred reply comes through control_complete(). */
			if (!cl->ctl->deferred)
				client_send(cl, reply, true);
			json_decref(reply);
			if (cl->src.fd < 0)
				return; /* closed while replying */
		}
		memmove(cl->buf, nl + 1, cl->len - (size_t)(nl + 1 - cl->buf));
		cl->len -= (size_t)(nl + 1 - cl->buf);
	}
	if (cl->len == CONTROL_LINE_MAX) {
		json_t *reply = reply_error(NULL, "line longer than %d bytes", CONTROL_LINE_MAX);

		client_send(cl, reply, true);
		json_decref(reply);
		client_close(cl);
	}
}

static void control_accept(struct ev_source *src, uint32_t events)
{
	struct control *ctl = src->opaque;
	int fd = accept4(src->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

	if (fd < 0)
		return;
	for (unsigned i = 0; i < CONTROL_MAX_CLIENTS; i++) {
		struct control_client *cl = &ctl->clients[i];

		if (cl->src.fd >= 0)
			continue;
		if (!cl->buf)
			cl->buf = malloc(CONTROL_LINE_MAX);
		if (!cl->buf)
			break;
		cl->src = (struct ev_source){ .fd = fd, .handler = client_handle, .opaque = cl };
		cl->len = 0;
		cl->generation = ++ctl->generations;
		if (evloop_add(ctl->loop, &cl->src, EPOLLIN | EPOLLRDHUP)) {
			cl->src.fd = -1;
			break;
		}
		/* The greeting comes first, before any reply or event. */
		json_t *hello = control_greeting();

		if (hello)
			client_send(cl, hello, false);
		else
			client_close(cl);
		json_decref(hello);
		return;
	}
	/* Full: say why, then hang up. */
	static const char busy[] = "{\"id\":null,\"ok\":false,\"error\":\"too many control clients\"}\n";
	(void)!send(fd, busy, sizeof(busy) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
	close(fd);
}

/* Returns 0 when @path may be bound: absent, or a socket nobody listens on. */
static int control_claim_path(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, r;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "--api-sock %s: exists and is not a socket", path);
		return -EEXIST;
	}
	strcpy(addr.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	r = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
	close(fd);
	if (r == 0) {
		snprintf(err, errlen, "--api-sock %s: another process is listening there", path);
		return -EADDRINUSE;
	}
	return unlink(path) < 0 ? -errno : 0; /* stale socket of a dead vmrun */
}

int control_init(struct control *ctl, struct evloop *loop, const char *path,
		 const struct control_ops *ops, void *opaque, char *err, size_t errlen)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd, r;

	memset(ctl, 0, sizeof(*ctl));
	ctl->listen_src.fd = -1;
	for (unsigned i = 0; i < CONTROL_MAX_CLIENTS; i++) {
		ctl->clients[i].src.fd = -1;
		ctl->clients[i].ctl = ctl;
	}
	ctl->loop = loop;
	ctl->current_client = -1;
	ctl->ops = ops;
	ctl->opaque = opaque;
	if (strlen(path) >= sizeof(addr.sun_path)) {
		snprintf(err, errlen, "--api-sock %s: path longer than %zu bytes", path,
			 sizeof(addr.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	err[0] = '\0';
	r = control_claim_path(path, err, errlen);
	if (r) {
		if (!err[0])
			snprintf(err, errlen, "--api-sock %s: %s", path, strerror(-r));
		return r;
	}
	strcpy(addr.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 8) < 0) {
		r = -errno;
		if (fd >= 0)
			close(fd);
		snprintf(err, errlen, "--api-sock %s: %s", path, strerror(-r));
		return r;
	}
	strcpy(ctl->path, path);
	ctl->listen_src = (struct ev_source){ .fd = fd, .handler = control_accept, .opaque = ctl };
	r = evloop_add(loop, &ctl->listen_src, EPOLLIN);
	if (r) {
		snprintf(err, errlen, "--api-sock %s: %s", path, strerror(-r));
		control_exit(ctl);
	}
	return r;
}

void control_exit(struct control *ctl)
{
	for (unsigned i = 0; i < CONTROL_MAX_CLIENTS; i++) {
		client_close(&ctl->clients[i]);
		free(ctl->clients[i].buf);
		ctl->clients[i].buf = NULL;
	}
	if (ctl->listen_src.fd >= 0) {
		evloop_remove(ctl->loop, &ctl->listen_src);
		close(ctl->listen_src.fd);
		ctl->listen_src.fd = -1;
		unlink(ctl->path);
	}
}

void control_complete(struct control *ctl, struct control_deferred *d, json_t *result,
		      const char *error)
{
	json_t *reply = error ? reply_error(d->id, "%s", error) : reply_ok(d->id, result);

	if (error)
		json_decref(result);
	if (d->client >= 0 && d->client < CONTROL_MAX_CLIENTS) {
		struct control_client *cl = &ctl->clients[d->client];

		if (cl->src.fd >= 0 && cl->generation == d->generation)
			client_send(cl, reply, true);
	}
	json_decref(reply);
	json_decref(d->id);
	d->id = NULL;
	d->client = -1;
}

void control_emit_event(struct control *ctl, const char *name, json_t *data)
{
	struct timespec now;
	json_t *ev;

	/* Wall-clock time, as QEMU's QMP events carry it. */
	clock_gettime(CLOCK_REALTIME, &now);
	ev = json_pack("{s:s,s:o,s:{s:I,s:I}}", "event", name, "data",
		       data ? data : json_object(), "timestamp", "seconds", (json_int_t)now.tv_sec,
		       "microseconds", (json_int_t)(now.tv_nsec / 1000));

	if (!ev)
		return;
	for (unsigned i = 0; i < CONTROL_MAX_CLIENTS; i++)
		if (ctl->clients[i].src.fd >= 0)
			client_send(&ctl->clients[i], ev, false);
	json_decref(ev);
}

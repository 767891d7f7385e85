// SPDX-License-Identifier: MIT
/*
 * Fuzz target for the control socket's request handling (src/core/control.c,
 * include/vmrun/control.h): the JSON request lines a client sends, against
 * a fake VM whose operations succeed or fail as the request's "args" say
 * (a failing one returns the text of args "why" as its reason, cut at the
 * reason buffer's size wherever that falls, UTF-8 characters included).
 *
 * Input: byte 0, bit 0 clear: each '\n'-separated line goes through
 * control_handle_line(), and every reply must serialise with
 * control_dump_line(); bit 0 set: the bytes go through a real control socket
 * in the scratch directory as a client's stream (line framing, CR LF,
 * deferred migrate replies), and every line that comes back must be a JSON
 * object.  Byte 1 says which operations fail.  A crash, a sanitizer report,
 * a missing reply or one that is not JSON is a finding.
 */
#include <errno.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "fuzz_common.h"
#include "vmrun/control.h"
#include "vmrun/evloop.h"

struct fake_vm {
	uint8_t fail;            /* bit per operation */
	struct control *ctl;
	struct control_deferred later;
	bool have_later;
	char later_why[600];
};

static const char *why_of(json_t *args)
{
	json_t *w = json_object_get(args, "why");

	return json_is_string(w) ? json_string_value(w) : "";
}

static json_t *fake_status(void *o)
{
	struct fake_vm *vm = o;

	return vm->fail & 1 ? NULL : json_pack("{s:s}", "state", "running");
}

static int fake_pause(void *o)
{
	return ((struct fake_vm *)o)->fail & 2 ? -EBUSY : 0;
}

static int fake_quit(void *o)
{
	return ((struct fake_vm *)o)->fail & 4 ? -EIO : 0;
}

static json_t *fake_snapshot(void *o, json_t *args, char *err, size_t errlen)
{
	struct fake_vm *vm = o;

	if (vm->fail & 8) {
		snprintf(err, errlen, "%s", why_of(args));
		return NULL;
	}
	return json_pack("{s:O}", "args", args);
}

static json_t *fake_save(void *o, json_t *args, char *err, size_t errlen)
{
	struct fake_vm *vm = o;

	if (vm->fail & 16) {
		snprintf(err, errlen, "cannot save %s", why_of(args));
		return NULL;
	}
	return json_object();
}

static int fake_migrate(void *o, json_t *args, struct control_deferred *later, char *err,
			size_t errlen)
{
	struct fake_vm *vm = o;

	if (vm->fail & 32) {
		snprintf(err, errlen, "%s", why_of(args));
		return -ECONNREFUSED;
	}
	if (vm->have_later) /* one migration at a time */
		control_complete(vm->ctl, &vm->later, NULL, "superseded");
	vm->later = *later;
	vm->have_later = true;
	snprintf(vm->later_why, sizeof(vm->later_why), "%s", why_of(args));
	return 0;
}

static json_t *fake_query_migrate(void *o)
{
	return ((struct fake_vm *)o)->fail & 64 ? NULL : json_pack("{s:s}", "state", "none");
}

static int fake_cancel(void *o, char *err, size_t errlen)
{
	if (((struct fake_vm *)o)->fail & 128) {
		snprintf(err, errlen, "nothing to cancel");
		return -ENOENT;
	}
	return 0;
}

static const struct control_ops ops = {
	.query_status = fake_status,
	.pause = fake_pause,
	.resume = fake_pause,
	.quit = fake_quit,
	.disk_snapshot = fake_snapshot,
	.save = fake_save,
	.migrate = fake_migrate,
	.query_migrate = fake_query_migrate,
	.migrate_cancel = fake_cancel,
};

/* A deferred reply, as the migration's end would send it. */
static void finish_later(struct fake_vm *vm)
{
	if (!vm->have_later)
		return;
	vm->have_later = false;
	if (vm->later_why[0])
		control_complete(vm->ctl, &vm->later, NULL, vm->later_why);
	else
		control_complete(vm->ctl, &vm->later, json_object(), NULL);
}

static void direct(struct fake_vm *vm, const uint8_t *p, size_t len)
{
	static struct control ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.ops = &ops;
	ctl.opaque = vm;
	ctl.current_client = -1;
	vm->ctl = &ctl;
	while (len) {
		const uint8_t *nl = memchr(p, '\n', len);
		size_t line = nl ? (size_t)(nl - p) : len;
		json_t *reply;

		ctl.deferred = false;
		reply = control_handle_line(&ctl, (const char *)p, line);
		if (!ctl.deferred) {
			size_t out_len;
			char *out = reply ? control_dump_line(reply, &out_len) : NULL;

			if (!out) {
				fprintf(stderr, "fuzz_control: no reply that can be sent\n");
				abort();
			}
			free(out);
		}
		json_decref(reply);
		finish_later(vm);
		p += line + (nl ? 1 : 0);
		len -= line + (nl ? 1 : 0);
	}
}

static void pump(struct evloop *loop)
{
	for (unsigned round = 0; round < 64; round++) {
		struct epoll_event ev[8];
		int k = epoll_wait(loop->epfd, ev, 8, 0);

		if (k <= 0)
			return;
		for (int i = 0; i < k; i++) {
			struct ev_source *src = ev[i].data.ptr;

			src->handler(src, ev[i].events);
		}
	}
}

/* Every line the server sent must be a JSON object. */
static void check_replies(int fd)
{
	static char buf[1 << 18];
	size_t len = 0;
	ssize_t n;

	while (len < sizeof(buf) && (n = recv(fd, buf + len, sizeof(buf) - len, MSG_DONTWAIT)) > 0)
		len += (size_t)n;
	for (char *p = buf, *end = buf + len, *nl; p < end && (nl = memchr(p, '\n', (size_t)(end - p)));
	     p = nl + 1) {
		json_t *o = json_loadb(p, (size_t)(nl - p), 0, NULL);

		if (!json_is_object(o)) {
			fprintf(stderr, "fuzz_control: the server sent a line that is not a JSON object\n");
			abort();
		}
		json_decref(o);
	}
}

static void via_socket(struct fake_vm *vm, const uint8_t *p, size_t len)
{
	static struct control ctl;
	static char path[300];
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct evloop loop;
	char err[512];
	int fd;

	if (!path[0])
		fz_scratch_path(path, sizeof(path), "ctl.sock");
	if (evloop_init(&loop))
		abort();
	vm->ctl = &ctl;
	if (control_init(&ctl, &loop, path, &ops, vm, err, sizeof(err))) {
		fprintf(stderr, "fuzz_control: %s\n", err);
		abort();
	}
	if (strlen(path) >= sizeof(addr.sun_path))
		abort(); /* control_init() refused it already */
	memcpy(addr.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)))
		abort();
	pump(&loop); /* accept, greeting */
	while (len) {
		/* In pieces, as a stream may arrive; the server's replies are
		 * read as they come so that it never sees a stalled client. */
		size_t piece = len < 4096 ? len : 4096;
		ssize_t n = send(fd, p, piece, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n <= 0)
			break;
		p += n;
		len -= (size_t)n;
		pump(&loop);
		finish_later(vm);
		pump(&loop);
		check_replies(fd);
	}
	finish_later(vm);
	check_replies(fd);
	close(fd);
	pump(&loop);
	control_exit(&ctl);
	evloop_exit(&loop);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fake_vm vm = { 0 };
	struct fz f = { data, size };
	uint8_t mode;
	const uint8_t *rest;
	size_t len;

	fz_quiet();
	mode = fz_u8(&f);
	vm.fail = fz_u8(&f);
	rest = fz_take(&f, f.left, &len);
	if (mode & 1)
		via_socket(&vm, rest, len);
	else
		direct(&vm, rest, len);
	return 0;
}

/* The control socket (src/core/control.c): a unix stream socket speaking one
 * JSON object per line.
 *
 *   request  {"id": 7, "cmd": "pause", "args": {...}}   ("id" and "args" optional)
 *   reply    {"id": 7, "ok": true, "result": {...}}
 *            {"id": 7, "ok": false, "error": "why"}
 *   event    {"event": "guest-exit", "data": {...},
 *             "timestamp": {"seconds": S, "microseconds": U}}  (to every client;
 *             wall clock, as QEMU's QMP)
 *   greeting {"greeting": {"vmrun": VERSION, "protocol": 1, "commands": [...]}}
 *            (the first line each client receives, on connect)
 *
 * Several clients may be connected; a malformed line gets an error reply, a
 * line over CONTROL_LINE_MAX or a client that stops reading is disconnected;
 * none of it touches the guest.  Runs on the main thread's event loop. */
#ifndef VMRUN_CONTROL_H
#define VMRUN_CONTROL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "vmrun/evloop.h"

#define CONTROL_MAX_CLIENTS 8
/* Raised when a command or reply changes incompatibly; new commands and new
 * keys in a result do not raise it. */
#define CONTROL_PROTOCOL_VERSION 1
#define CONTROL_LINE_MAX 65536

/* What the control socket can ask of the VM.  Each returns 0 or -errno;
 * query_status returns a new JSON object (or NULL on failure).
 * disk_snapshot (command "snapshot", may be NULL: "no disks") takes the
 * request's "args" object (never NULL; {"disk": INDEX or PATH}) and
 * returns the new result object, or NULL with a one-line reason in @err. */
/* A request whose reply comes later (control_complete()): which client
 * asked, and its "id". */
struct control_deferred {
	int client;          /* index into control.clients; -1: none */
	unsigned long long generation; /* that slot's connection when it asked */
	json_t *id;          /* a reference, or NULL */
};

struct control_ops {
	json_t *(*query_status)(void *opaque);
	int (*pause)(void *opaque);
	int (*resume)(void *opaque);
	int (*quit)(void *opaque);
	/* "nmi": a non-maskable interrupt for every vCPU, delivered as each
	 * next enters the guest (after "resume" when paused).  May be NULL. */
	int (*nmi)(void *opaque);
	json_t *(*disk_snapshot)(void *opaque, json_t *args, char *err, size_t errlen);
	/* "save" {"path": DIR}: a whole-VM snapshot (vmrun/snapshot.h); the
	 * result describes what was written, or NULL with the reason in @err. */
	json_t *(*save)(void *opaque, json_t *args, char *err, size_t errlen);
	/* "migrate" {"uri": "tcp:HOST:PORT", ...}: returns 0 when the
	 * migration started (the reply comes through control_complete() with
	 * @later, which the op then owns), or -errno with @err.  May be NULL. */
	int (*migrate)(void *opaque, json_t *args, struct control_deferred *later, char *err,
		       size_t errlen);
	/* "query-migrate": a new JSON object.  "migrate-cancel": 0 or -errno
	 * with @err.  NULL with migrate. */
	json_t *(*query_migrate)(void *opaque);
	int (*migrate_cancel)(void *opaque, char *err, size_t errlen);
};

struct control;

struct control_client {
	struct ev_source src; /* src.fd < 0: slot free */
	struct control *ctl;
	char *buf;            /* CONTROL_LINE_MAX bytes */
	size_t len;
	unsigned long long generation; /* counts connections in this slot */
};

struct control {
	struct ev_source listen_src;
	struct evloop *loop;
	const struct control_ops *ops;
	void *opaque;
	char path[108];
	struct control_client clients[CONTROL_MAX_CLIENTS];
	unsigned long long generations;
	int current_client; /* the client whose line is being run; -1: none */
	bool deferred;      /* that line's reply comes later */
};

/* Bind @path (replacing a stale socket, refusing a live one or a non-socket)
 * and watch it on @loop.  Returns 0 or -errno with @err set. */
int control_init(struct control *ctl, struct evloop *loop, const char *path,
		 const struct control_ops *ops, void *opaque, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Disconnect every client, close and unlink the socket. */
void control_exit(struct control *ctl);

/* The reply to a deferred request: ok with @result (stolen; NULL: {}),
 * or, with @error set, that error.  Dropped when the client has gone.
 * Releases @d's reference. */
void control_complete(struct control *ctl, struct control_deferred *d, json_t *result,
		      const char *error);

/* Send {"event": @name, "data": @data} to every client; steals @data. */
void control_emit_event(struct control *ctl, const char *name, json_t *data);

/* The greeting object sent to each client on connect (caller decrefs), or
 * NULL when out of memory. */
json_t *control_greeting(void);

/* @obj as one protocol line: compact JSON, reals at 15 significant digits
 * (a rounded value prints as written), then '\n'.  Returns a malloc'd buffer
 * (not NUL-terminated; caller frees) and its length in @len, or NULL. */
char *control_dump_line(const json_t *obj, size_t *len);

/* Execute one request line and return the reply object (caller decrefs).
 * Exposed for unit tests; clients go through the socket. */
json_t *control_handle_line(struct control *ctl, const char *line, size_t len);

#endif

/* Pre-copy live migration over TCP (src/migrate/; the stream is described
 * in src/migrate/wire.h, the design in src/migrate/README.md).
 *
 * Source: the control socket's "migrate" starts a sender thread that
 * turns on dirty logging, sends all of RAM, then rounds of the pages
 * dirtied meanwhile, and when what is left fits the downtime limit, pauses
 * the guest, sends the rest and the machine's state, hands the disks over
 * and commits.  Any failure before the commit leaves the guest running
 * here as before.  A successful migration ends this vmrun with status 0.
 *
 * Destination: `vmrun --incoming tcp:ADDR:PORT` (main.c) accepts one
 * connection, authenticates it, builds the machine the source describes,
 * receives RAM and state into it, takes the disks and runs the guest. */
#ifndef VMRUN_MIGRATE_H
#define VMRUN_MIGRATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmrun/control.h"
#include "vmrun/snapshot.h"

struct vm;
struct vm_config;

#define MIGRATE_DOWNTIME_MS_DEFAULT 10
#define MIGRATE_MAX_ROUNDS 60        /* then it fails (after throttling all the way) */
#define MIGRATE_MAX_SECONDS_DEFAULT 600

/* ---- source (event loop thread) ---- */

/* "migrate" {"uri": "tcp:HOST:PORT", "downtime_ms": N, "max_bandwidth": B,
 * "max_seconds": S} (numbers as JSON numbers or strings): start the
 * sender.  @later (taken over) gets the final statistics when it ends.
 * Returns 0, or -errno with @err (malformed arguments, one already
 * running, no dirty logging). */
int migrate_start(struct vm *vm, json_t *args, struct control_deferred *later, char *err,
		  size_t errlen) __attribute__((warn_unused_result));

/* "query-migrate": status and progress (a new object). */
json_t *migrate_query(struct vm *vm);

/* "migrate-cancel": stop the migration before its commit; the guest runs
 * on here.  -ENOENT when none runs. */
int migrate_cancel(struct vm *vm, char *err, size_t errlen) __attribute__((warn_unused_result));

/* A migration is running (setup to completing) / in its stop-and-copy,
 * where the guest is the migration's: the control socket refuses what
 * would change it (save, snapshot; resume while stopping). */
bool migrate_running(struct vm *vm);
bool migrate_stopping(struct vm *vm);

/* Check at start-up that the --migration-key file @path is usable, so a
 * source learns it now rather than at its first migration.  Returns 0 or
 * -errno with one line in @err. */
int migrate_check_key(const char *path, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* The run is ending: cancel a migration in progress, join and free it. */
void migrate_shutdown(struct vm *vm);

/* ---- destination (main thread, before vm_run()) ---- */

struct migrate_incoming {
	int listen_fd, fd;
	char where[160];     /* "tcp:ADDR:PORT" as listened on, for messages */
	char peer[80];       /* the source's address */
	struct snapshot snap; /* the machine the source described */
	bool snap_open;
	uint8_t key[4096];
	size_t keylen;
	uint8_t nonce_d[32], nonce_s[32];
	void *buf;           /* one record */
	size_t cap;
	/* statistics */
	uint64_t pages, zero_pages, bytes;
	double ms_transfer, ms_switch;
};

/* Listen on @runtime->incoming, print the address, accept one source,
 * authenticate it (@runtime->migration_key) and read its description into
 * @in->snap, ready for vm_build().  Returns 0 or -errno with one line in
 * @err; migrate_incoming_close() in any case. */
int migrate_incoming_accept(struct migrate_incoming *in, const struct vm_config *runtime,
			    char *err, size_t errlen) __attribute__((warn_unused_result));

/* The build of @in->snap's machine failed for @why: tell the source. */
void migrate_incoming_refuse(struct migrate_incoming *in, const char *why);

/* Receive the migration into @vm (built from @in->snap): answer READY,
 * take pages and state, take the disks over, and wait for the commit.
 * Returns 0 when @vm may run, or -errno with one line in @err (the source
 * was told and keeps its guest). */
int migrate_incoming_receive(struct migrate_incoming *in, struct vm *vm, char *err,
			     size_t errlen) __attribute__((warn_unused_result));

void migrate_incoming_close(struct migrate_incoming *in, bool failed);

#endif

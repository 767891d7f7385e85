// SPDX-License-Identifier: MIT
/* The source of a live migration (include/vmrun/migrate.h): the control
 * socket's commands on the event loop thread, and the sender thread.
 *
 * The sender owns the connection and the dirty bitmaps.  What must happen
 * on the devices' thread (describing the machine, pausing and quiescing,
 * saving the state, handing the disk locks over, resuming after a failure,
 * the final reply) it asks of the loop through vm_call_on_loop(); the loop
 * never waits for the sender, so "migrate-cancel" and "query-migrate" are
 * answered at any time. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "vmrun/log.h"
#include "vmrun/migrate.h"
#include "vmrun/snapshot.h"
#include "vmrun/state.h"
#include "vmrun/vm.h"
#include "vmrun/x86_state.h"
#include "wire.h"

#define IO_TIMEOUT_S 30       /* a peer silent this long is gone */
#define CONNECT_TIMEOUT_MS 10000
#define CHUNK_WORDS 8         /* bitmap words per KVM_CLEAR_DIRTY_LOG: 512 pages, 2 MiB */
#define STATE_MS_ESTIMATE 2.0 /* sending and loading the state, before it is measured */

enum mig_status {
	MS_NONE,
	MS_SETUP,
	MS_ACTIVE,
	MS_COMPLETING,
	MS_COMPLETED,
	MS_FAILED,
	MS_CANCELLED,
};

static const char *const status_names[] = {
	[MS_NONE] = "none",		[MS_SETUP] = "setup",	   [MS_ACTIVE] = "active",
	[MS_COMPLETING] = "completing", [MS_COMPLETED] = "completed", [MS_FAILED] = "failed",
	[MS_CANCELLED] = "cancelled",
};

struct migration {
	struct vm *vm;
	pthread_t thread, throttler;
	bool thread_started, throttler_started;
	atomic_bool cancel, stop_throttler;
	int sock; /* -1 when none; shut down (not closed) by a cancel */

	char host[256], port[16];
	uint64_t downtime_ms, max_bandwidth, max_seconds;
	struct control_deferred later;
	uint8_t key[MIG_KEY_MAX];
	size_t keylen;

	/* Progress, for query-migrate (lock). */
	pthread_mutex_t lock;
	enum mig_status status;
	unsigned round;
	uint64_t remaining_pages, dirty_rate, bandwidth, bytes, pages, zero_pages;
	double expected_downtime_ms, total_ms, downtime_ms_measured, setup_ms;
	/* The downtime's parts: pausing and saving, the last pages and the
	 * state on the wire until the destination loaded them, the disk
	 * hand-over, the commit until the destination runs the guest. */
	double ms_stop, ms_last_pages, ms_loaded, ms_disks, ms_commit;
	uint64_t last_pages;
	unsigned max_throttle; /* permille, the most auto-converge applied */
	char error[512];

	/* The sender's own. */
	uint64_t *bitmap[GUEST_MEM_MAX_REGIONS];
	struct timespec t_start, t_round; /* the migration's and this round's start */
	uint64_t round_bytes0;            /* m->bytes when this round started */
	bool paused_here, was_paused, disks_released, committed;
	void *state;
	size_t state_len;
	void *describe;
	size_t describe_len;
};

/* ---- arguments ---- */

/* A non-negative integer given as a JSON number or a decimal string. */
static int arg_u64(json_t *args, const char *name, uint64_t def, uint64_t max, uint64_t *out,
		   char *err, size_t errlen)
{
	json_t *v = json_object_get(args, name);
	unsigned long long n;
	char *end;

	*out = def;
	if (!v)
		return 0;
	if (json_is_integer(v) && json_integer_value(v) >= 0) {
		n = (unsigned long long)json_integer_value(v);
	} else if (json_is_string(v) && json_string_value(v)[0] >= '0' &&
		   json_string_value(v)[0] <= '9') {
		errno = 0;
		n = strtoull(json_string_value(v), &end, 10);
		if (*end || errno)
			return errmsg(-EINVAL, err, errlen, "\"%s\": not a whole number", name);
	} else {
		return errmsg(-EINVAL, err, errlen, "\"%s\": not a whole number", name);
	}
	if (n > max)
		return errmsg(-ERANGE, err, errlen, "\"%s\": at most %" PRIu64, name, max);
	*out = n;
	return 0;
}

/* "tcp:HOST:PORT" (HOST may be [v6]). */
static int parse_uri(const char *uri, char *host, size_t hostlen, char *port, size_t portlen)
{
	const char *h, *colon;
	size_t hl;

	if (strncmp(uri, "tcp:", 4))
		return -EINVAL;
	h = uri + 4;
	colon = strrchr(h, ':');
	if (!colon || !colon[1] || strlen(colon + 1) >= portlen)
		return -EINVAL;
	hl = (size_t)(colon - h);
	if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	if (hl >= hostlen)
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	strcpy(port, colon + 1);
	for (const char *p = port; *p; p++)
		if (*p < '0' || *p > '9')
			return -EINVAL;
	return 0;
}

/* ---- progress ---- */

static void set_status(struct migration *m, enum mig_status st)
{
	pthread_mutex_lock(&m->lock);
	m->status = st;
	pthread_mutex_unlock(&m->lock);
}

static json_t *stats_json(struct migration *m, bool final)
{
	json_t *o;

	pthread_mutex_lock(&m->lock);
	o = json_pack("{s:s,s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:i}", "status",
		      status_names[m->status], "round", (int)m->round, "remaining_pages",
		      (json_int_t)m->remaining_pages, "dirty_rate", (json_int_t)m->dirty_rate,
		      "bandwidth", (json_int_t)m->bandwidth, "bytes", (json_int_t)m->bytes, "pages",
		      (json_int_t)m->pages, "zero_pages", (json_int_t)m->zero_pages,
		      "expected_downtime_ms", m->expected_downtime_ms, "throttle_percent",
		      (int)((final ? m->max_throttle : atomic_load(&m->vm->throttle_permille)) / 10));
	if (o) {
		json_object_set_new(o, "rounds", json_integer(m->round));
		json_object_set_new(o, "throttle_permille",
				    json_integer(final ? m->max_throttle :
							 atomic_load(&m->vm->throttle_permille)));
		json_object_set_new(o, "total_ms", json_real(final ? m->total_ms : ms_since(&m->t_start)));
		json_object_set_new(o, "setup_ms", json_real(m->setup_ms));
		if (final && m->status == MS_COMPLETED) {
			json_object_set_new(o, "downtime_ms", json_real(m->downtime_ms_measured));
			json_object_set_new(o, "downtime", json_pack("{s:f,s:f,s:f,s:f,s:f,s:I}",
				"stop_ms", m->ms_stop, "last_pages_ms", m->ms_last_pages, "state_loaded_ms",
				m->ms_loaded, "disks_ms", m->ms_disks, "commit_ms", m->ms_commit,
				"last_pages", (json_int_t)m->last_pages));
		}
		if (m->error[0])
			json_object_set_new(o, "error", json_string(m->error));
	}
	pthread_mutex_unlock(&m->lock);
	return o;
}

/* ---- work on the event loop thread ---- */

static int describe_on_loop(struct vm *vm, void *arg)
{
	struct migration *m = arg;
	struct state_writer w;
	int r = state_writer_init(&w);

	if (!r) {
		snapshot_describe(vm, &w, NULL);
		x86_cpuid_save(vm->cpuid, &w);
		r = state_writer_finish(&w, &m->describe, &m->describe_len);
	}
	state_writer_free(&w);
	return r;
}

/* Stop the guest: vCPUs parked, devices quiet, disks flushed, the state
 * saved. */
static int stop_on_loop(struct vm *vm, void *arg)
{
	struct migration *m = arg;
	char err[512];
	int r;

	m->was_paused = vcpus_paused(vm);
	r = vm_pause(vm);
	m->paused_here = true;
	if (r) {
		snprintf(m->error, sizeof(m->error), "cannot pause the vCPUs: %s", strerror(-r));
		return r;
	}
	/* What the guest wrote must be on the shared storage before the
	 * destination opens it (and qcow2 metadata out of our caches). */
	for (unsigned i = 0; i < vm->n_blks; i++) {
		if (blk_readonly(vm->blks[i].backend))
			continue;
		r = blk_io_wait(vm->blks[i].backend, BLK_FLUSH, 0, NULL, 0);
		if (r) {
			snprintf(m->error, sizeof(m->error), "disk %u: flush failed: %s", i,
				 strerror(-r));
			return r;
		}
	}
	r = vm_state_blob(vm, &m->state, &m->state_len, err, sizeof(err));
	if (r)
		snprintf(m->error, sizeof(m->error), "%s", err);
	return r;
}

static int release_disks_on_loop(struct vm *vm, void *arg)
{
	struct migration *m = arg;

	m->disks_released = true;
	for (unsigned i = 0; i < vm->n_blks; i++) {
		int r = blk_set_lock(vm->blks[i].backend, BLK_LOCK_NONE);

		if (r) {
			snprintf(m->error, sizeof(m->error), "disk %u: cannot release its lock: %s", i,
				 strerror(-r));
			return r;
		}
	}
	return 0;
}

/* After a failure: the disks back (the destination released them when it
 * gave up) and the guest running as before. */
static int recover_on_loop(struct vm *vm, void *arg)
{
	struct migration *m = arg;

	if (m->disks_released) {
		for (unsigned i = 0; i < vm->n_blks; i++) {
			int r = -EBUSY;

			/* The destination may still be closing the image. */
			for (int tries = 0; tries < 200 && r == -EBUSY; tries++) {
				r = blk_set_lock(vm->blks[i].backend, BLK_LOCK_EXCLUSIVE);
				if (r == -EBUSY)
					usleep(10000);
			}
			if (r)
				log_error("migration: disk %u: cannot take its lock back: %s", i,
					  strerror(-r));
		}
		m->disks_released = false;
	}
	if (m->paused_here && !m->was_paused)
		vm_resume(vm);
	m->paused_here = false;
	return 0;
}

/* The end, on the loop: the reply, the event, and after a success the
 * end of this vmrun. */
static int report_on_loop(struct vm *vm, void *arg)
{
	struct migration *m = arg;
	json_t *stats = stats_json(m, true);
	bool ok = m->status == MS_COMPLETED;

	if (vm->control_active) {
		control_emit_event(&vm->control, "migration", json_deep_copy(stats));
		control_complete(&vm->control, &m->later, stats, NULL);
	} else {
		json_decref(stats);
	}
	if (ok) {
		log_info("migration completed: %" PRIu64 " pages (%" PRIu64 " zero) and %" PRIu64
			 " bytes in %.1f ms, %u rounds, downtime %.2f ms (stop %.2f, last %" PRIu64
			 " pages %.2f, state loaded %.2f, disks %.2f, commit %.2f)",
			 m->pages, m->zero_pages, m->bytes, m->total_ms, m->round,
			 m->downtime_ms_measured, m->ms_stop, m->last_pages, m->ms_last_pages,
			 m->ms_loaded, m->ms_disks, m->ms_commit);
		vm->migrated_away = true;
		vm_request_exit(vm, 0, "migrated");
	} else {
		log_warn("migration %s: %s; the guest runs on here", status_names[m->status], m->error);
	}
	return 0;
}

/* ---- the connection ---- */

static int connect_to(struct migration *m, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
	struct timeval tv = { .tv_sec = IO_TIMEOUT_S };
	int r = getaddrinfo(m->host[0] ? m->host : "localhost", m->port, &hints, &res), fd = -1;
	int one = 1;

	if (r)
		return errmsg(-EHOSTUNREACH, err, errlen, "%s: %s", m->host, gai_strerror(r));
	r = -ECONNREFUSED;
	for (ai = res; ai && fd < 0; ai = ai->ai_next) {
		struct pollfd p;

		fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0) {
			r = -errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
			r = -errno;
			close(fd);
			fd = -1;
			continue;
		}
		p = (struct pollfd){ .fd = fd, .events = POLLOUT };
		if (poll(&p, 1, CONNECT_TIMEOUT_MS) != 1) {
			r = -ETIMEDOUT;
			close(fd);
			fd = -1;
			continue;
		}
		socklen_t l = sizeof(r);
		int soerr = 0;

		getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &l);
		if (soerr) {
			r = -soerr;
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	if (fd < 0)
		return errmsg(r, err, errlen, "cannot connect to %s:%s: %s", m->host, m->port,
			      strerror(-r));
	/* Blocking from here, with limits; small records go out at once. */
	fcntl(fd, F_SETFL, 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	pthread_mutex_lock(&m->lock);
	m->sock = fd;
	pthread_mutex_unlock(&m->lock);
	if (atomic_load(&m->cancel))
		shutdown(fd, SHUT_RDWR);
	return 0;
}

static int handshake(struct migration *m, char *err, size_t errlen)
{
	union {
		struct mig_challenge c;
		uint8_t raw[MIG_MAC_LEN + sizeof(struct mig_challenge) + 1024];
	} in;
	struct mig_hello hello = { .version = htole32(MIG_VERSION) };
	struct iovec iov[2];
	uint8_t mac[MIG_MAC_LEN];
	uint32_t len, flags, newest, oldest;
	int r;

	r = mig_expect(m->sock, MIG_CHALLENGE, &in, sizeof(in), &len, err, errlen);
	if (r)
		return r;
	if (len != sizeof(in.c) || memcmp(in.c.magic, MIG_MAGIC, 8))
		return errmsg(-EPROTO, err, errlen, "%s:%s is not a vmrun waiting for a migration",
			      m->host, m->port);
	newest = le32toh(in.c.version_newest);
	oldest = le32toh(in.c.version_oldest);
	flags = le32toh(in.c.flags);
	if (MIG_VERSION < oldest || MIG_VERSION > newest)
		return errmsg(-EPROTONOSUPPORT, err, errlen,
			      "the destination speaks stream versions %u to %u, this vmrun %u", oldest,
			      newest, MIG_VERSION);
	if ((flags & MIG_CHALLENGE_FLAG_AUTH) && !m->keylen)
		return errmsg(-EACCES, err, errlen,
			      "authentication: the destination requires a key (--migration-key FILE on this vmrun)");
	if (!(flags & MIG_CHALLENGE_FLAG_AUTH) && m->keylen)
		return errmsg(-EACCES, err, errlen,
			      "authentication: the destination has no key and cannot prove who it is; not sending the guest");
	memcpy(hello.magic, MIG_MAGIC, 8);
	r = mig_nonce(hello.nonce);
	if (!r && m->keylen) {
		hello.flags = htole32(MIG_HELLO_FLAG_AUTH);
		r = mig_mac(m->key, m->keylen, "vmrun-migrate source", in.c.nonce, hello.nonce,
			    hello.mac);
	}
	if (r)
		return errmsg(r, err, errlen, "authentication: %s", strerror(-r));
	r = vm_call_on_loop(m->vm, describe_on_loop, m);
	if (r)
		return errmsg(r, err, errlen, "cannot describe the machine: %s", strerror(-r));
	iov[0] = (struct iovec){ .iov_base = &hello, .iov_len = sizeof(hello) };
	iov[1] = (struct iovec){ .iov_base = m->describe, .iov_len = m->describe_len };
	r = mig_sendv(m->sock, MIG_HELLO, iov, 2);
	if (r)
		return errmsg(r, err, errlen, "sending the handshake: %s", strerror(-r));
	uint8_t nonce_d[MIG_NONCE_LEN];

	memcpy(nonce_d, in.c.nonce, sizeof(nonce_d));
	r = mig_expect(m->sock, MIG_READY, &in, sizeof(in), &len, err, errlen);
	if (r)
		return r;
	if (len != MIG_MAC_LEN)
		return errmsg(-EPROTO, err, errlen, "malformed READY record");
	if (m->keylen) {
		r = mig_mac(m->key, m->keylen, "vmrun-migrate destination", hello.nonce, nonce_d, mac);
		if (r)
			return errmsg(r, err, errlen, "authentication: %s", strerror(-r));
		if (!mig_mac_equal(mac, in.raw))
			return errmsg(-EACCES, err, errlen,
				      "authentication failed: the destination does not hold this key");
	}
	return 0;
}

/* ---- pages ---- */

struct batch {
	struct mig_pages_hdr hdr;
	uint64_t entry[MIG_BATCH_PAGES];
	struct iovec iov[MIG_BATCH_PAGES + 2];
	unsigned n, n_data;
};

static int batch_flush(struct migration *m, struct batch *b)
{
	uint64_t bytes = sizeof(b->hdr) + (uint64_t)b->n * 8 + (uint64_t)b->n_data * GUEST_PAGE_SIZE;
	int r;

	if (!b->n)
		return 0;
	if (atomic_load(&m->cancel))
		return -ECANCELED;
	b->hdr.count = htole32(b->n);
	b->iov[0] = (struct iovec){ .iov_base = &b->hdr, .iov_len = sizeof(b->hdr) };
	b->iov[1] = (struct iovec){ .iov_base = b->entry, .iov_len = (size_t)b->n * 8 };
	r = mig_sendv(m->sock, MIG_PAGES, b->iov, 2 + (int)b->n_data);
	if (r)
		return r;
	pthread_mutex_lock(&m->lock);
	m->bytes += bytes + sizeof(struct mig_hdr);
	m->pages += b->n;
	m->zero_pages += b->n - b->n_data;
	if (m->remaining_pages >= b->n)
		m->remaining_pages -= b->n;
	pthread_mutex_unlock(&m->lock);
	b->n = b->n_data = 0;
	if (m->max_bandwidth) {
		/* Pace to the limit: sleep until the bytes sent so far in this
		 * round are due (a pause between rounds earns no burst). */
		double due_ms = (double)(m->bytes - m->round_bytes0) * 1e3 / (double)m->max_bandwidth -
				ms_since(&m->t_round);

		if (due_ms > 0) {
			struct timespec t = { .tv_sec = (time_t)(due_ms / 1e3),
					      .tv_nsec = (long)((due_ms - (double)(time_t)(due_ms / 1e3) * 1e3) * 1e6) };

			nanosleep(&t, NULL);
		}
	}
	return 0;
}

/* Queue the page at @gpa (host @page); a zero page goes without data,
 * and in the first pass not at all (the destination's RAM starts zeroed). */
static int batch_add(struct migration *m, struct batch *b, uint64_t gpa, uint8_t *page,
		     bool first_pass)
{
	bool zero = guest_page_is_zero(page);

	if (zero && first_pass) {
		pthread_mutex_lock(&m->lock);
		m->zero_pages++;
		if (m->remaining_pages)
			m->remaining_pages--;
		pthread_mutex_unlock(&m->lock);
		return 0;
	}
	b->entry[b->n++] = htole64(gpa | (zero ? MIG_PAGE_ZERO : 0));
	if (!zero)
		b->iov[2 + b->n_data++] = (struct iovec){ .iov_base = page, .iov_len = GUEST_PAGE_SIZE };
	return b->n == MIG_BATCH_PAGES ? batch_flush(m, b) : 0;
}

/* Send region @ri's pages set in m->bitmap (or, in the first pass, every
 * page the guest ever touched), chunk by chunk: KVM's dirty bits for the
 * chunk are cleared (the pages write-protected again) just before its
 * pages are read, so a write after that is caught by the next round. */
static int send_region(struct migration *m, struct batch *b, unsigned ri, bool first_pass)
{
	struct vm *vm = m->vm;
	const struct guest_mem_region *g = &vm->mem.regions[ri];
	uint64_t *bm = m->bitmap[ri];
	unsigned char resident[CHUNK_WORDS * 64];
	uint64_t all[CHUNK_WORDS];
	int r;

	memset(all, 0xff, sizeof(all));
	for (size_t w = 0; w < g->dirty_words; w += CHUNK_WORDS) {
		size_t nw = g->dirty_words - w < CHUNK_WORDS ? g->dirty_words - w : CHUNK_WORDS;
		uint64_t first = (uint64_t)w * 64, pages = g->size >> GUEST_PAGE_SHIFT;
		uint64_t n = pages - first < nw * 64 ? pages - first : nw * 64;
		bool any = first_pass, know_resident;

		for (size_t k = 0; k < nw && !any; k++)
			any = bm[w + k] != 0;
		if (!any)
			continue;
		r = guest_mem_dirty_clear(&vm->mem, vm->vm_fd, ri, w, nw, first_pass ? all : bm + w);
		if (r)
			return r;
		know_resident = first_pass && !vm->mem.file_backed &&
				mincore(g->host + (first << GUEST_PAGE_SHIFT), n << GUEST_PAGE_SHIFT,
					resident) == 0;
		for (uint64_t p = 0; p < n; p++) {
			uint64_t page = first + p;

			if (!first_pass && !(bm[page / 64] & (1ull << (page % 64))))
				continue;
			if (know_resident && !(resident[p] & 1)) {
				/* Never touched: zero, and already zero there. */
				pthread_mutex_lock(&m->lock);
				m->zero_pages++;
				if (m->remaining_pages)
					m->remaining_pages--;
				pthread_mutex_unlock(&m->lock);
				continue;
			}
			r = batch_add(m, b, g->gpa + (page << GUEST_PAGE_SHIFT),
				      g->host + (page << GUEST_PAGE_SHIFT), first_pass);
			if (r)
				return r;
		}
		if (!first_pass)
			memset(bm + w, 0, nw * sizeof(uint64_t));
	}
	return 0;
}

static int send_round(struct migration *m, bool first_pass)
{
	struct batch *b = calloc(1, sizeof(*b));
	int r = b ? 0 : -ENOMEM;

	for (unsigned i = 0; i < m->vm->mem.n_regions && !r; i++)
		r = send_region(m, b, i, first_pass);
	if (!r)
		r = batch_flush(m, b);
	free(b);
	return r;
}

/* Add every region's dirty set to m->bitmap (ORed: pages fetched before
 * and not sent yet stay, which matters for vmrun's own device writes, whose
 * log a fetch takes and clears); *@count gets the pages now in it.  A
 * round's send_region() clears the words it sent. */
static int fetch_dirty(struct migration *m, uint64_t *count)
{
	struct vm *vm = m->vm;

	*count = 0;
	for (unsigned i = 0; i < vm->mem.n_regions; i++) {
		const struct guest_mem_region *g = &vm->mem.regions[i];
		int r;

		r = guest_mem_dirty_fetch(&vm->mem, vm->vm_fd, i, m->bitmap[i]);
		if (r)
			return r;
		for (size_t w = 0; w < g->dirty_words; w++)
			*count += (uint64_t)__builtin_popcountll(m->bitmap[i][w]);
	}
	return 0;
}

/* ---- auto-converge ---- */

static void *throttler_main(void *arg)
{
	struct migration *m = arg;
	const struct timespec period = { .tv_nsec = VCPU_THROTTLE_PERIOD_US * 1000L };

	pthread_setname_np(pthread_self(), "mig-throttle");
	/* Only sleeps and kicks: the narrowest list (vmrun/sandbox.h). */
	if (sandbox_enter(&m->vm->sandbox, SANDBOX_THROTTLE))
		return NULL;
	while (!atomic_load(&m->stop_throttler)) {
		nanosleep(&period, NULL);
		if (atomic_load(&m->vm->throttle_permille))
			vcpus_throttle_kick(m->vm);
	}
	return NULL;
}

/* The next step of auto-converge, in thousandths of the time the vCPUs
 * stand still: 20%, 30%, ... 90%, then ever closer to all of it, because a
 * guest whose every first write to a page traps (dirty logging) still
 * dirties pages fast with 1% of its time. */
static void throttle_more(struct migration *m)
{
	static const unsigned steps[] = { 200, 300, 400, 500, 600, 700, 800, 900,
					  950, 980, 990, 995, 998, 999 };
	unsigned pm = atomic_load(&m->vm->throttle_permille), next = steps[0];

	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		next = steps[i];
		if (steps[i] > pm)
			break;
	}
	atomic_store(&m->vm->throttle_permille, next);
	if (next > m->max_throttle)
		m->max_throttle = next;
	if (!m->throttler_started &&
	    pthread_create(&m->throttler, NULL, throttler_main, m) == 0)
		m->throttler_started = true;
	log_info("migration: the guest dirties memory faster than the link carries it; its vCPUs now stand still %.1f%% of the time",
		 next / 10.0);
}

static void throttle_stop(struct migration *m)
{
	atomic_store(&m->vm->throttle_permille, 0);
	if (m->throttler_started) {
		atomic_store(&m->stop_throttler, true);
		pthread_join(m->throttler, NULL);
		m->throttler_started = false;
	}
}

/* ---- the sender ---- */

static int migrate_run(struct migration *m, char *err, size_t errlen)
{
	struct vm *vm = m->vm;
	uint64_t dirty = 0;
	double state_ms = STATE_MS_ESTIMATE;
	int r;

	r = connect_to(m, err, errlen);
	if (!r)
		r = handshake(m, err, errlen);
	if (r)
		return r;
	for (unsigned i = 0; i < vm->mem.n_regions; i++) {
		m->bitmap[i] = calloc(vm->mem.regions[i].dirty_words, sizeof(uint64_t));
		if (!m->bitmap[i])
			return errmsg(-ENOMEM, err, errlen, "out of memory");
	}
	r = guest_mem_dirty_log_start(&vm->mem, vm->vm_fd);
	if (r)
		return errmsg(r, err, errlen, "cannot log dirty pages: %s",
			      r == -ENOTSUP ? "this KVM has no manual dirty-log protection" :
					      strerror(-r));
	pthread_mutex_lock(&m->lock);
	m->setup_ms = ms_since(&m->t_start);
	m->status = MS_ACTIVE;
	m->remaining_pages = vm->mem.ram_size >> GUEST_PAGE_SHIFT;
	pthread_mutex_unlock(&m->lock);

	/* Rounds: all of RAM, then what was dirtied meanwhile, until the rest
	 * fits the downtime limit. */
	for (bool first = true;; first = false) {
		uint64_t bytes0 = m->bytes;
		uint32_t len;
		char buf[1100];
		double ms;

		clock_gettime(CLOCK_MONOTONIC, &m->t_round);
		m->round_bytes0 = bytes0;
		r = send_round(m, first);
		if (!r)
			r = mig_send(m->sock, MIG_SYNC, NULL, 0);
		if (r)
			return errmsg(r, err, errlen, "%s", r == -ECANCELED ? "cancelled" :
					"sending memory: " "the connection failed");
		/* The round is over when it is in the destination's RAM. */
		r = mig_expect(m->sock, MIG_SYNCED, buf, sizeof(buf), &len, err, errlen);
		if (r)
			return r;
		ms = ms_since(&m->t_round);
		r = fetch_dirty(m, &dirty);
		if (r)
			return errmsg(r, err, errlen, "KVM_GET_DIRTY_LOG: %s", strerror(-r));
		pthread_mutex_lock(&m->lock);
		m->round++;
		m->remaining_pages = dirty;
		if (ms > 0.5 && m->bytes > bytes0)
			m->bandwidth = (uint64_t)((double)(m->bytes - bytes0) * 1e3 / ms);
		m->dirty_rate = ms > 0.5 ? (uint64_t)((double)dirty * GUEST_PAGE_SIZE * 1e3 / ms) : 0;
		m->expected_downtime_ms =
			(m->bandwidth ? (double)dirty * GUEST_PAGE_SIZE * 1e3 / (double)m->bandwidth : 0) +
			state_ms;
		pthread_mutex_unlock(&m->lock);
		if (m->expected_downtime_ms <= (double)m->downtime_ms || !dirty)
			break;
		if (m->round >= MIGRATE_MAX_ROUNDS || ms_since(&m->t_start) > (double)m->max_seconds * 1e3)
			return errmsg(-ETIMEDOUT, err, errlen,
				      "did not converge: %" PRIu64 " pages still dirty after %u rounds (dirty rate %" PRIu64 " B/s, bandwidth %" PRIu64 " B/s)",
				      dirty, m->round, m->dirty_rate, m->bandwidth);
		/* The guest dirtied at least half of what the link carried:
		 * it will not converge by itself. */
		if (m->round >= 2 && m->dirty_rate * 2 > m->bandwidth &&
		    atomic_load(&vm->throttle_permille) < 999)
			throttle_more(m);
	}

	/* Stop and copy. */
	struct timespec t_pause;
	uint32_t len;
	char buf[1100];

	struct timespec t_phase;

	set_status(m, MS_COMPLETING);
	clock_gettime(CLOCK_MONOTONIC, &t_pause);
	r = vm_call_on_loop(vm, stop_on_loop, m);
	if (r)
		return errmsg(r, err, errlen, "%s", m->error[0] ? m->error : "cannot stop the guest");
	throttle_stop(m);
	r = fetch_dirty(m, &dirty);
	if (r)
		return errmsg(r, err, errlen, "KVM_GET_DIRTY_LOG: %s", strerror(-r));
	pthread_mutex_lock(&m->lock);
	m->remaining_pages = m->last_pages = dirty;
	pthread_mutex_unlock(&m->lock);
	m->ms_stop = ms_since(&t_pause);
	clock_gettime(CLOCK_MONOTONIC, &t_phase);
	r = send_round(m, false);
	m->ms_last_pages = ms_since(&t_phase);
	clock_gettime(CLOCK_MONOTONIC, &t_phase);
	if (!r)
		r = mig_send(m->sock, MIG_STATE, m->state, m->state_len);
	if (r)
		return errmsg(r, err, errlen, "sending the last pages and the state: %s",
			      r == -ECANCELED ? "cancelled" : strerror(-r));
	m->bytes += m->state_len + sizeof(struct mig_hdr);
	r = mig_expect(m->sock, MIG_LOADED, buf, sizeof(buf), &len, err, errlen);
	if (r)
		return r;
	m->ms_loaded = ms_since(&t_phase);
	clock_gettime(CLOCK_MONOTONIC, &t_phase);
	if (atomic_load(&m->cancel))
		return errmsg(-ECANCELED, err, errlen, "cancelled");
	r = vm_call_on_loop(vm, release_disks_on_loop, m);
	if (!r)
		r = mig_send(m->sock, MIG_RELEASED, NULL, 0);
	if (r)
		return errmsg(r, err, errlen, "%s", m->error[0] ? m->error : strerror(-r));
	r = mig_expect(m->sock, MIG_TAKEN, buf, sizeof(buf), &len, err, errlen);
	if (r)
		return r;
	m->ms_disks = ms_since(&t_phase);
	clock_gettime(CLOCK_MONOTONIC, &t_phase);
	if (atomic_load(&m->cancel))
		return errmsg(-ECANCELED, err, errlen, "cancelled");
	/* The point of no return: from here the guest is the destination's. */
	pthread_mutex_lock(&m->lock);
	m->committed = true;
	pthread_mutex_unlock(&m->lock);
	r = mig_send(m->sock, MIG_COMMIT, NULL, 0);
	if (!r)
		r = mig_expect(m->sock, MIG_RUNNING, buf, sizeof(buf), &len, err, errlen);
	pthread_mutex_lock(&m->lock);
	m->ms_commit = ms_since(&t_phase);
	m->downtime_ms_measured = ms_since(&t_pause);
	pthread_mutex_unlock(&m->lock);
	if (r)
		return errmsg(r, err, errlen,
			      "no confirmation after the commit (%s): the guest may be running on the destination; it stays paused here (`resume` it only if the destination does not run it)",
			      err);
	return 0;
}

static void *sender_main(void *arg)
{
	struct migration *m = arg;
	struct vm *vm = m->vm;
	char err[512] = "";
	int r;

	pthread_setname_np(pthread_self(), "migrate");
	r = sandbox_enter(&vm->sandbox, SANDBOX_MIGRATE);
	if (r)
		snprintf(err, sizeof(err), "cannot load the seccomp filter: %s", strerror(-r));
	else
		r = migrate_run(m, err, sizeof(err));
	throttle_stop(m);
	guest_mem_dirty_log_stop(&vm->mem, vm->vm_fd);
	if (r) {
		/* Tell the destination (it may be gone), then give the guest
		 * back its disks and its vCPUs, unless the commit was sent. */
		if (m->sock >= 0 && !m->committed)
			(void)!mig_send(m->sock, MIG_ABORT, err, strlen(err));
		if (!m->committed)
			(void)!vm_call_on_loop(vm, recover_on_loop, m);
	}
	pthread_mutex_lock(&m->lock);
	if (m->sock >= 0)
		close(m->sock);
	m->sock = -1;
	m->total_ms = ms_since(&m->t_start);
	m->status = !r ? MS_COMPLETED : atomic_load(&m->cancel) ? MS_CANCELLED : MS_FAILED;
	if (r)
		snprintf(m->error, sizeof(m->error), "%s", err);
	pthread_mutex_unlock(&m->lock);
	if (vm_call_on_loop(vm, report_on_loop, m) == -ECANCELED) {
		json_decref(m->later.id);
		m->later.id = NULL;
	}
	return NULL;
}

/* ---- the control socket's side (event loop thread) ---- */

static void migration_free(struct migration *m)
{
	if (!m)
		return;
	if (m->thread_started)
		pthread_join(m->thread, NULL);
	for (unsigned i = 0; i < GUEST_MEM_MAX_REGIONS; i++)
		free(m->bitmap[i]);
	free(m->state);
	free(m->describe);
	json_decref(m->later.id);
	pthread_mutex_destroy(&m->lock);
	explicit_bzero(m->key, sizeof(m->key));
	free(m);
}

bool migrate_running(struct vm *vm)
{
	bool running;

	if (!vm->migration)
		return false;
	pthread_mutex_lock(&vm->migration->lock);
	running = vm->migration->status == MS_SETUP || vm->migration->status == MS_ACTIVE ||
		  vm->migration->status == MS_COMPLETING;
	pthread_mutex_unlock(&vm->migration->lock);
	return running;
}

int migrate_start(struct vm *vm, json_t *args, struct control_deferred *later, char *err,
		  size_t errlen)
{
	json_t *uri = json_object_get(args, "uri");
	struct migration *m;
	int r;

	if (migrate_running(vm))
		return errmsg(-EBUSY, err, errlen, "a migration is already running (query-migrate)");
	if (!json_is_string(uri))
		return errmsg(-EINVAL, err, errlen, "\"uri\": tcp:HOST:PORT of `vmrun --incoming`");
	m = calloc(1, sizeof(*m));
	if (!m)
		return errmsg(-ENOMEM, err, errlen, "out of memory");
	pthread_mutex_init(&m->lock, NULL);
	m->vm = vm;
	m->sock = -1;
	if (parse_uri(json_string_value(uri), m->host, sizeof(m->host), m->port, sizeof(m->port))) {
		migration_free(m);
		return errmsg(-EINVAL, err, errlen, "\"uri\": '%s' is not tcp:HOST:PORT",
			      json_string_value(uri));
	}
	if ((r = arg_u64(args, "downtime_ms", MIGRATE_DOWNTIME_MS_DEFAULT, 600000, &m->downtime_ms,
			 err, errlen)) ||
	    (r = arg_u64(args, "max_bandwidth", 0, UINT64_MAX / 2, &m->max_bandwidth, err, errlen)) ||
	    (r = arg_u64(args, "max_seconds", MIGRATE_MAX_SECONDS_DEFAULT, 86400 * 30,
			 &m->max_seconds, err, errlen))) {
		migration_free(m);
		return r;
	}
	if (vm->cfg->migration_key) {
		r = mig_key_load(vm->cfg->migration_key, m->key, &m->keylen, err, errlen);
		if (r) {
			migration_free(m);
			return r;
		}
	}
	/* The previous migration (failed or cancelled) goes now. */
	migration_free(vm->migration);
	vm->migration = m;
	m->status = MS_SETUP;
	m->later = *later;
	later->id = NULL;
	clock_gettime(CLOCK_MONOTONIC, &m->t_start);
	r = pthread_create(&m->thread, NULL, sender_main, m);
	if (r) {
		m->status = MS_FAILED;
		m->later.id = later->id = NULL;
		return errmsg(-r, err, errlen, "cannot start the migration thread: %s", strerror(r));
	}
	m->thread_started = true;
	log_info("migration to %s:%s started (downtime limit %" PRIu64 " ms)", m->host, m->port,
		 m->downtime_ms);
	return 0;
}

int migrate_check_key(const char *path, char *err, size_t errlen)
{
	uint8_t *key = malloc(MIG_KEY_MAX);
	size_t len;
	int r;

	if (!key)
		return errmsg(-ENOMEM, err, errlen, "out of memory");
	r = mig_key_load(path, key, &len, err, errlen);
	explicit_bzero(key, MIG_KEY_MAX);
	free(key);
	return r;
}

bool migrate_stopping(struct vm *vm)
{
	bool stopping;

	if (!vm->migration)
		return false;
	pthread_mutex_lock(&vm->migration->lock);
	stopping = vm->migration->status == MS_COMPLETING;
	pthread_mutex_unlock(&vm->migration->lock);
	return stopping;
}

json_t *migrate_query(struct vm *vm)
{
	if (!vm->migration)
		return json_pack("{s:s}", "status", "none");
	return stats_json(vm->migration, !migrate_running(vm));
}

int migrate_cancel(struct vm *vm, char *err, size_t errlen)
{
	struct migration *m = vm->migration;

	if (!migrate_running(vm))
		return errmsg(-ENOENT, err, errlen, "no migration is running");
	atomic_store(&m->cancel, true);
	pthread_mutex_lock(&m->lock);
	/* Past the commit a cancel changes nothing; before it, the sender's
	 * blocked send or receive fails at once. */
	if (m->sock >= 0 && !m->committed)
		shutdown(m->sock, SHUT_RDWR);
	pthread_mutex_unlock(&m->lock);
	return 0;
}

void migrate_shutdown(struct vm *vm)
{
	struct migration *m = vm->migration;

	if (!m)
		return;
	atomic_store(&m->cancel, true);
	pthread_mutex_lock(&m->lock);
	if (m->sock >= 0 && !m->committed)
		shutdown(m->sock, SHUT_RDWR);
	pthread_mutex_unlock(&m->lock);
	migration_free(m);
	vm->migration = NULL;
}

// SPDX-License-Identifier: MIT
/* The destination of a live migration (include/vmrun/migrate.h): one
 * connection, accepted, authenticated and read on the main thread before
 * the guest runs.  Everything the source sends is hostile until checked:
 * record lengths (mig_recv()), the description (snapshot_from_stream()),
 * pages (mig_pages_apply()), the state (state_reader_open() and each
 * component's load). */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "vmrun/config.h"
#include "vmrun/log.h"
#include "vmrun/migrate.h"
#include "vmrun/state.h"
#include "vmrun/vm.h"
#include "wire.h"

#define IO_TIMEOUT_S 30

/* Say why on the wire (best effort: the source may be gone). */
static void send_text(struct migrate_incoming *in, uint32_t type, const char *why)
{
	if (in->fd >= 0)
		(void)!mig_send(in->fd, type, why, strlen(why) < 1024 ? strlen(why) : 1023);
}

static int listen_on(struct migrate_incoming *in, const char *uri, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *res, *ai;
	char host[256], port[16], shown[INET6_ADDRSTRLEN];
	const char *h = uri + 4, *colon = strrchr(h, ':');
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	size_t hl = (size_t)(colon - h);
	int one = 1, r, fd = -1;

	if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	if (hl >= sizeof(host) || strlen(colon + 1) >= sizeof(port))
		return errmsg(-EINVAL, err, errlen, "--incoming %s: address too long", uri);
	memcpy(host, h, hl);
	host[hl] = '\0';
	strcpy(port, colon + 1);
	r = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
	if (r)
		return errmsg(-EINVAL, err, errlen, "--incoming %s: %s", uri, gai_strerror(r));
	r = -EADDRNOTAVAIL;
	for (ai = res; ai && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			r = -errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 1) < 0) {
			r = -errno;
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	if (fd < 0)
		return errmsg(r, err, errlen, "--incoming %s: %s", uri, strerror(-r));
	in->listen_fd = fd;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
		return errmsg(-errno, err, errlen, "getsockname: %s", strerror(errno));
	if (ss.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, shown, sizeof(shown));
	else
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, shown, sizeof(shown));
	snprintf(in->where, sizeof(in->where), ss.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u",
		 shown,
		 ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port :
						  ((struct sockaddr_in *)&ss)->sin_port));
	/* A script waits for this line to know where to send the guest;
	 * printed even with --quiet. */
	fprintf(stderr, "vmrun: migration: listening on %s\n", in->where);
	return 0;
}

int migrate_incoming_accept(struct migrate_incoming *in, const struct vm_config *runtime,
			    char *err, size_t errlen)
{
	struct mig_challenge c = { .version_newest = htole32(MIG_VERSION),
				   .version_oldest = htole32(MIG_VERSION_OLDEST) };
	struct timeval tv = { .tv_sec = IO_TIMEOUT_S };
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct snapshot_overrides ov;
	struct mig_hello hello;
	uint32_t type, len;
	char why[600];
	void *blob;
	int r, one = 1;

	memset(in, 0, sizeof(*in));
	in->listen_fd = in->fd = -1;
	in->snap.mem_fd = -1;
	in->cap = mig_max_len(MIG_PAGES) > mig_max_len(MIG_STATE) ? mig_max_len(MIG_PAGES) :
								    mig_max_len(MIG_STATE);
	in->buf = malloc(in->cap);
	if (!in->buf)
		return errmsg(-ENOMEM, err, errlen, "out of memory");
	if (runtime->migration_key) {
		r = mig_key_load(runtime->migration_key, in->key, &in->keylen, err, errlen);
		if (r)
			return r;
	}
	r = listen_on(in, runtime->incoming, err, errlen);
	if (r)
		return r;
	if (!in->keylen)
		log_warn("migration: no --migration-key: any process that can reach %s may send a guest",
			 in->where);
	do {
		in->fd = accept4(in->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
	} while (in->fd < 0 && errno == EINTR);
	if (in->fd < 0)
		return errmsg(-errno, err, errlen, "accept: %s", strerror(errno));
	/* One migration: nobody else gets in. */
	close(in->listen_fd);
	in->listen_fd = -1;
	if (ss.ss_family == AF_INET6) {
		char a[INET6_ADDRSTRLEN];

		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, a, sizeof(a));
		snprintf(in->peer, sizeof(in->peer), "[%s]", a);
	} else {
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, in->peer, sizeof(in->peer));
	}
	setsockopt(in->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(in->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(in->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	/* The challenge, then the source's answer and description. */
	memcpy(c.magic, MIG_MAGIC, 8);
	c.flags = htole32(in->keylen ? MIG_CHALLENGE_FLAG_AUTH : 0);
	r = mig_nonce(in->nonce_d);
	if (r)
		return errmsg(r, err, errlen, "getrandom: %s", strerror(-r));
	memcpy(c.nonce, in->nonce_d, sizeof(c.nonce));
	r = mig_send(in->fd, MIG_CHALLENGE, &c, sizeof(c));
	if (r)
		return errmsg(r, err, errlen, "migration from %s: %s", in->peer, strerror(-r));
	r = mig_recv(in->fd, &type, in->buf, in->cap, &len, why, sizeof(why));
	if (r)
		return errmsg(r, err, errlen, "migration from %s: %s", in->peer, why);
	if (type != MIG_HELLO || len < sizeof(hello)) {
		send_text(in, MIG_REFUSE, "not a vmrun migration stream");
		return errmsg(-EPROTO, err, errlen, "migration from %s: malformed stream (%s record of %u bytes first)",
			      in->peer, mig_type_name(type), len);
	}
	memcpy(&hello, in->buf, sizeof(hello));
	if (memcmp(hello.magic, MIG_MAGIC, 8) || le32toh(hello.version) < MIG_VERSION_OLDEST ||
	    le32toh(hello.version) > MIG_VERSION) {
		send_text(in, MIG_REFUSE, "unsupported stream version");
		return errmsg(-EPROTONOSUPPORT, err, errlen,
			      "migration from %s: stream version %u (this vmrun takes %u to %u)", in->peer,
			      le32toh(hello.version), MIG_VERSION_OLDEST, MIG_VERSION);
	}
	memcpy(in->nonce_s, hello.nonce, sizeof(in->nonce_s));
	if (in->keylen) {
		uint8_t mac[MIG_MAC_LEN];

		r = mig_mac(in->key, in->keylen, "vmrun-migrate source", in->nonce_d, in->nonce_s, mac);
		if (r || !(le32toh(hello.flags) & MIG_HELLO_FLAG_AUTH) || !mig_mac_equal(mac, hello.mac)) {
			send_text(in, MIG_REFUSE, "authentication failed");
			return errmsg(-EACCES, err, errlen,
				      "migration from %s refused: authentication failed (no or another --migration-key)",
				      in->peer);
		}
	}
	/* The description, 8-byte aligned for the state reader. */
	blob = malloc(len - sizeof(hello) + 1);
	if (!blob)
		return errmsg(-ENOMEM, err, errlen, "out of memory");
	memcpy(blob, (uint8_t *)in->buf + sizeof(hello), len - sizeof(hello));
	memcpy(ov.disk_base, runtime->restore_disk, sizeof(ov.disk_base));
	memcpy(ov.tap, runtime->restore_tap, sizeof(ov.tap));
	snprintf(why, sizeof(why), "tcp:%s", in->peer);
	in->snap_open = true;
	r = snapshot_from_stream(&in->snap, blob, len - sizeof(hello), why, runtime, &ov, err, errlen);
	if (r)
		send_text(in, MIG_REFUSE, err);
	return r;
}

void migrate_incoming_refuse(struct migrate_incoming *in, const char *why)
{
	send_text(in, MIG_REFUSE, why);
}

/* Fail with @r and @err after telling the source. */
static int abort_with(struct migrate_incoming *in, int r, const char *err)
{
	send_text(in, MIG_ABORT, err);
	return r;
}

/* One PAGES record of @len bytes (header read): its entries, checked,
 * then the data straight into guest RAM.  -EPROTO for a malformed record
 * (reason in @err), another -errno for the connection. */
static int receive_pages(struct migrate_incoming *in, struct vm *vm, uint32_t len,
			 struct mig_pages_stats *st, char *err, size_t errlen)
{
	struct iovec iov[MIG_BATCH_PAGES];
	struct mig_pages_hdr h;
	size_t head_len;
	uint32_t count;
	int n = 0, r;

	if (len < sizeof(h))
		return errmsg(-EPROTO, err, errlen, "malformed stream: PAGES record of %u bytes", len);
	r = mig_recv_payload(in->fd, MIG_PAGES, in->buf, sizeof(h), err, errlen);
	if (r)
		return r;
	memcpy(&h, in->buf, sizeof(h));
	count = le32toh(h.count);
	if (count > MIG_BATCH_PAGES || len < sizeof(h) + (size_t)count * 8)
		return errmsg(-EPROTO, err, errlen, "malformed stream: PAGES header (count %u)", count);
	head_len = sizeof(h) + (size_t)count * 8;
	r = mig_recv_payload(in->fd, MIG_PAGES, (uint8_t *)in->buf + sizeof(h), head_len - sizeof(h),
			     err, errlen);
	if (r)
		return r;
	r = mig_pages_check(&vm->mem, in->buf, head_len, len, &count, err, errlen);
	if (r)
		return r;
	for (uint32_t i = 0; i < count; i++) {
		bool zero;
		uint8_t *page = mig_page_entry(&vm->mem, in->buf, i, &zero);

		if (zero)
			mig_page_zero(page);
		else
			iov[n++] = (struct iovec){ .iov_base = page, .iov_len = GUEST_PAGE_SIZE };
	}
	r = mig_readv(in->fd, iov, n);
	if (r)
		return errmsg(r, err, errlen, "PAGES record cut short: %s",
			      r == -EPIPE ? "the connection ended" : strerror(-r));
	st->pages += count;
	st->zero_pages += count - (uint32_t)n;
	return 0;
}

int migrate_incoming_receive(struct migrate_incoming *in, struct vm *vm, char *err,
			     size_t errlen)
{
	struct mig_pages_stats st = { 0 };
	struct timespec t0, t_state;
	struct state_reader sr;
	uint8_t mac[MIG_MAC_LEN] = { 0 };
	uint32_t type, len;
	char why[600];
	int r;

	if (in->keylen &&
	    mig_mac(in->key, in->keylen, "vmrun-migrate destination", in->nonce_s, in->nonce_d, mac))
		return abort_with(in, -EIO, "authentication: HMAC failed");
	r = mig_send(in->fd, MIG_READY, mac, sizeof(mac));
	if (r)
		return errmsg(r, err, errlen, "migration from %s: %s", in->peer, strerror(-r));
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		r = mig_recv_header(in->fd, &type, &len, in->cap, why, sizeof(why));
		if (r)
			return errmsg(r, err, errlen, "migration from %s: %s", in->peer, why);
		in->bytes += len + sizeof(struct mig_hdr);
		if (type == MIG_PAGES) {
			r = receive_pages(in, vm, len, &st, why, sizeof(why));
			if (r == -EPROTO)
				return errmsg(abort_with(in, r, why), err, errlen,
					      "migration from %s: %s", in->peer, why);
			if (r)
				return errmsg(r, err, errlen, "migration from %s: %s", in->peer, why);
			continue;
		}
		r = mig_recv_payload(in->fd, type, in->buf, len, why, sizeof(why));
		if (r)
			return errmsg(r, err, errlen, "migration from %s: %s", in->peer, why);
		if (type == MIG_STATE)
			break;
		if (type == MIG_SYNC) {
			r = mig_send(in->fd, MIG_SYNCED, NULL, 0);
			if (r)
				return errmsg(r, err, errlen, "migration from %s: %s", in->peer,
					      strerror(-r));
			continue;
		}
		if (type == MIG_ABORT) {
			size_t l = len < 512 ? len : 512;

			memcpy(why, in->buf, l);
			why[l] = '\0';
			for (size_t i = 0; i < l; i++)
				if ((unsigned char)why[i] < 0x20)
					why[i] = '?';
			return errmsg(-ECONNABORTED, err, errlen, "migration from %s: the source gave up: %s",
				      in->peer, why);
		}
		snprintf(why, sizeof(why), "malformed stream: %s record during the transfer",
			 mig_type_name(type));
		return errmsg(abort_with(in, -EPROTO, why), err, errlen, "migration from %s: %s",
			      in->peer, why);
	}
	in->pages = st.pages;
	in->zero_pages = st.zero_pages;
	in->ms_transfer = ms_since(&t0);
	clock_gettime(CLOCK_MONOTONIC, &t_state);
	/* The state: checked whole, then loaded component by component. */
	if (state_reader_open(&sr, in->buf, len)) {
		snprintf(why, sizeof(why), "state: %s", sr.msg);
		return errmsg(abort_with(in, sr.err, why), err, errlen, "migration from %s: %s",
			      in->peer, why);
	}
	r = vm_load_components(vm, &sr, why, sizeof(why));
	if (r)
		return errmsg(abort_with(in, r, why), err, errlen, "migration from %s: %s", in->peer,
			      why);
	r = mig_send(in->fd, MIG_LOADED, NULL, 0);
	if (!r)
		r = mig_expect(in->fd, MIG_RELEASED, why, sizeof(why), &len, err, errlen);
	if (r)
		return r == -ECONNABORTED || r == -EPROTO ? r :
			       errmsg(r, err, errlen, "migration from %s: %s", in->peer, strerror(-r));
	r = vm_take_disks(vm, why, sizeof(why));
	if (r)
		return errmsg(abort_with(in, r, why), err, errlen, "migration from %s: %s", in->peer,
			      why);
	r = mig_send(in->fd, MIG_TAKEN, NULL, 0);
	if (!r)
		r = mig_expect(in->fd, MIG_COMMIT, why, sizeof(why), &len, err, errlen);
	if (r)
		return r == -ECONNABORTED || r == -EPROTO ? r :
			       errmsg(r, err, errlen, "migration from %s: %s", in->peer, strerror(-r));
	/* Ours now.  The source waits for this word to exit. */
	(void)!mig_send(in->fd, MIG_RUNNING, NULL, 0);
	in->ms_switch = ms_since(&t_state);
	log_info("migration from %s: %" PRIu64 " pages received (%" PRIu64 " as zero entries), %" PRIu64
		 " bytes in %.1f ms; state loaded and disks taken in %.2f ms",
		 in->peer, in->pages, in->zero_pages, in->bytes, in->ms_transfer, in->ms_switch);
	close(in->fd);
	in->fd = -1;
	return 0;
}

void migrate_incoming_close(struct migrate_incoming *in, bool failed)
{
	if (in->fd >= 0)
		close(in->fd);
	if (in->listen_fd >= 0)
		close(in->listen_fd);
	in->fd = in->listen_fd = -1;
	if (in->snap_open)
		snapshot_close(&in->snap, failed);
	in->snap_open = false;
	free(in->buf);
	in->buf = NULL;
	explicit_bzero(in->key, sizeof(in->key));
}

// SPDX-License-Identifier: MIT
/* The migration stream's records, its authentication and the destination's
 * page parser (src/migrate/wire.h). */
#include "wire.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <nettle/hmac.h>
#include <nettle/memops.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "vmrun/log.h"
#include "vmrun/state.h"

#define MIG_TEXT_MAX 1024 /* REFUSE and ABORT reasons */

uint32_t mig_max_len(uint32_t type)
{
	switch (type) {
	case MIG_CHALLENGE: return sizeof(struct mig_challenge);
	case MIG_HELLO: return sizeof(struct mig_hello) + (1u << 20);
	case MIG_READY: return MIG_MAC_LEN;
	case MIG_REFUSE:
	case MIG_ABORT: return MIG_TEXT_MAX;
	case MIG_PAGES:
		return sizeof(struct mig_pages_hdr) + MIG_BATCH_PAGES * (8 + GUEST_PAGE_SIZE);
	case MIG_STATE: return STATE_MAX_BLOB + sizeof(struct state_footer);
	default: return 0;
	}
}

const char *mig_type_name(uint32_t type)
{
	static const char *const names[MIG_TYPE_END] = {
		[MIG_CHALLENGE] = "CHALLENGE", [MIG_HELLO] = "HELLO",	  [MIG_READY] = "READY",
		[MIG_REFUSE] = "REFUSE",       [MIG_PAGES] = "PAGES",	  [MIG_STATE] = "STATE",
		[MIG_LOADED] = "LOADED",       [MIG_RELEASED] = "RELEASED", [MIG_TAKEN] = "TAKEN",
		[MIG_COMMIT] = "COMMIT",       [MIG_RUNNING] = "RUNNING",   [MIG_ABORT] = "ABORT",
		[MIG_SYNC] = "SYNC",	       [MIG_SYNCED] = "SYNCED",
	};

	return type && type < MIG_TYPE_END ? names[type] : "unknown";
}

int mig_key_load(const char *path, uint8_t *key, size_t *len, char *err, size_t errlen)
{
	struct stat st;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		return errmsg(-errno, err, errlen, "--migration-key %s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return errmsg(-EINVAL, err, errlen, "--migration-key %s: not a regular file", path);
	}
	/* @key holds MIG_KEY_MAX bytes: one more read tells a longer file. */
	n = read(fd, key, MIG_KEY_MAX);
	if (n == MIG_KEY_MAX) {
		uint8_t extra;

		if (read(fd, &extra, 1) == 1)
			n = MIG_KEY_MAX + 1;
	}
	close(fd);
	if (n < 0)
		return errmsg(-errno, err, errlen, "--migration-key %s: %s", path, strerror(errno));
	if (n < MIG_KEY_MIN || n > MIG_KEY_MAX)
		return errmsg(-EINVAL, err, errlen,
			      "--migration-key %s: %zd bytes; a key is %d to %d bytes (e.g. `head -c 32 /dev/urandom > FILE`)",
			      path, n, MIG_KEY_MIN, MIG_KEY_MAX);
	if (st.st_mode & 077)
		log_warn("--migration-key %s can be read by others (chmod 600 it)", path);
	*len = (size_t)n;
	return 0;
}

int mig_mac(const uint8_t *key, size_t keylen, const char *label, const uint8_t *a,
	    const uint8_t *b, uint8_t mac[MIG_MAC_LEN])
{
	uint8_t msg[64 + 2 * MIG_NONCE_LEN];
	size_t l = strlen(label);
	struct hmac_sha256_ctx ctx;

	if (l > 64)
		return -EINVAL;
	memcpy(msg, label, l);
	memcpy(msg + l, a, MIG_NONCE_LEN);
	memcpy(msg + l + MIG_NONCE_LEN, b, MIG_NONCE_LEN);
	hmac_sha256_set_key(&ctx, keylen, key);
	hmac_sha256_update(&ctx, l + 2 * MIG_NONCE_LEN, msg);
	hmac_sha256_digest(&ctx, MIG_MAC_LEN, mac);
	return 0;
}

bool mig_mac_equal(const uint8_t *x, const uint8_t *y)
{
	return memeql_sec(x, y, MIG_MAC_LEN);
}

int mig_nonce(uint8_t *nonce)
{
	size_t have = 0;

	while (have < MIG_NONCE_LEN) {
		ssize_t n = getrandom(nonce + have, MIG_NONCE_LEN - have, 0);

		if (n < 0 && errno != EINTR)
			return -errno;
		if (n > 0)
			have += (size_t)n;
	}
	return 0;
}

/* Write all of @iov (modified as it goes). */
static int writev_all(int fd, struct iovec *iov, int n)
{
	while (n > 0) {
		struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)(n > IOV_MAX ? IOV_MAX : n) };
		ssize_t w = sendmsg(fd, &msg, MSG_NOSIGNAL);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return errno == ECONNRESET ? -EPIPE : errno == EAGAIN ? -ETIMEDOUT : -errno;
		}
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

int mig_sendv(int fd, uint32_t type, struct iovec *iov, int n)
{
	struct iovec all[1 + MIG_BATCH_PAGES + 4];
	struct mig_hdr h = { .type = htole32(type) };
	size_t total = 0;

	if (n < 0 || n > MIG_BATCH_PAGES + 3)
		return -EINVAL;
	for (int i = 0; i < n; i++)
		total += iov[i].iov_len;
	if (total > mig_max_len(type) && !(total == 0))
		return -EMSGSIZE;
	h.len = htole32((uint32_t)total);
	all[0] = (struct iovec){ .iov_base = &h, .iov_len = sizeof(h) };
	memcpy(all + 1, iov, (size_t)n * sizeof(*iov));
	return writev_all(fd, all, n + 1);
}

int mig_send(int fd, uint32_t type, const void *payload, size_t len)
{
	struct iovec iov = { .iov_base = (void *)payload, .iov_len = len };

	return mig_sendv(fd, type, &iov, len ? 1 : 0);
}

static int read_all(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = recv(fd, p, len, MSG_WAITALL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == ECONNRESET ? -EPIPE : errno == EAGAIN ? -ETIMEDOUT : -errno;
		}
		if (n == 0)
			return -EPIPE;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int mig_readv(int fd, struct iovec *iov, int n)
{
	while (n > 0) {
		struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)(n > IOV_MAX ? IOV_MAX : n) };
		ssize_t got = recvmsg(fd, &msg, MSG_WAITALL);

		if (got < 0) {
			if (errno == EINTR)
				continue;
			return errno == ECONNRESET ? -EPIPE : errno == EAGAIN ? -ETIMEDOUT : -errno;
		}
		if (got == 0)
			return -EPIPE;
		while (n > 0 && (size_t)got >= iov->iov_len) {
			got -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + got;
			iov->iov_len -= (size_t)got;
		}
	}
	return 0;
}

int mig_recv_header(int fd, uint32_t *type, uint32_t *len, size_t cap, char *err, size_t errlen)
{
	struct mig_hdr h;
	int r = read_all(fd, &h, sizeof(h));

	if (r)
		return errmsg(r, err, errlen, "%s", r == -EPIPE ? "the connection ended" :
							r == -ETIMEDOUT ? "the peer stopped sending" : strerror(-r));
	*type = le32toh(h.type);
	*len = le32toh(h.len);
	if (!*type || *type >= MIG_TYPE_END)
		return errmsg(-EPROTO, err, errlen, "malformed stream: unknown record type %u", *type);
	if (*len > mig_max_len(*type) || *len > cap)
		return errmsg(-EPROTO, err, errlen, "malformed stream: %s record of %u bytes (at most %u)",
			      mig_type_name(*type), *len,
			      mig_max_len(*type) < cap ? mig_max_len(*type) : (uint32_t)cap);
	return 0;
}

int mig_recv_payload(int fd, uint32_t type, void *buf, size_t len, char *err, size_t errlen)
{
	int r = len ? read_all(fd, buf, len) : 0;

	if (r)
		return errmsg(r, err, errlen, "%s record cut short: %s", mig_type_name(type),
			      r == -EPIPE ? "the connection ended" : strerror(-r));
	return 0;
}

int mig_recv(int fd, uint32_t *type, void *buf, size_t cap, uint32_t *len, char *err,
	     size_t errlen)
{
	int r = mig_recv_header(fd, type, len, cap, err, errlen);

	return r ? r : mig_recv_payload(fd, *type, buf, *len, err, errlen);
}

int mig_expect(int fd, uint32_t want, void *buf, size_t cap, uint32_t *len, char *err,
	       size_t errlen)
{
	uint32_t type, n;
	int r = mig_recv(fd, &type, buf, cap, &n, err, errlen);

	if (r)
		return r;
	if ((type == MIG_ABORT || type == MIG_REFUSE) && type != want) {
		char why[MIG_TEXT_MAX + 1];
		size_t l = n < MIG_TEXT_MAX ? n : MIG_TEXT_MAX;

		memcpy(why, buf, l);
		why[l] = '\0';
		for (size_t i = 0; i < l; i++)
			if ((unsigned char)why[i] < 0x20 || why[i] == 0x7f)
				why[i] = '?'; /* a hostile peer's text goes to a terminal */
		return errmsg(-ECONNABORTED, err, errlen, "the other side %s: %s",
			      type == MIG_REFUSE ? "refused" : "aborted", why);
	}
	if (type != want)
		return errmsg(-EPROTO, err, errlen, "malformed stream: %s record where %s belongs",
			      mig_type_name(type), mig_type_name(want));
	*len = n;
	return 0;
}

int mig_pages_check(const struct guest_mem *gm, const void *head, size_t head_len,
		    size_t total_len, uint32_t *count, char *err, size_t errlen)
{
	const uint8_t *p = head;
	struct mig_pages_hdr h;
	uint64_t nonzero = 0;

	if (head_len < sizeof(h) || total_len < sizeof(h))
		return errmsg(-EPROTO, err, errlen, "malformed stream: PAGES record of %zu bytes",
			      total_len);
	memcpy(&h, p, sizeof(h));
	h.count = le32toh(h.count);
	h.flags = le32toh(h.flags);
	if (h.flags || h.count > MIG_BATCH_PAGES || head_len != sizeof(h) + (size_t)h.count * 8 ||
	    total_len < head_len)
		return errmsg(-EPROTO, err, errlen, "malformed stream: PAGES header (count %u, flags %#x)",
			      h.count, h.flags);
	for (uint32_t i = 0; i < h.count; i++) {
		uint64_t e;

		memcpy(&e, p + sizeof(h) + (size_t)i * 8, 8);
		e = le64toh(e);
		if (e & (GUEST_PAGE_SIZE - 1) & ~MIG_PAGE_ZERO)
			return errmsg(-EPROTO, err, errlen, "malformed stream: page entry %#llx",
				      (unsigned long long)e);
		if (!guest_mem_ptr(gm, e & ~(GUEST_PAGE_SIZE - 1), GUEST_PAGE_SIZE))
			return errmsg(-EPROTO, err, errlen,
				      "malformed stream: page %#llx is not guest RAM",
				      (unsigned long long)(e & ~(GUEST_PAGE_SIZE - 1)));
		nonzero += !(e & MIG_PAGE_ZERO);
	}
	if (total_len != head_len + nonzero * GUEST_PAGE_SIZE)
		return errmsg(-EPROTO, err, errlen,
			      "malformed stream: PAGES record of %zu bytes for %u pages (%llu with data)",
			      total_len, h.count, (unsigned long long)nonzero);
	*count = h.count;
	return 0;
}

uint8_t *mig_page_entry(const struct guest_mem *gm, const void *head, uint32_t i, bool *zero)
{
	uint64_t e;

	memcpy(&e, (const uint8_t *)head + sizeof(struct mig_pages_hdr) + (size_t)i * 8, 8);
	e = le64toh(e);
	*zero = e & MIG_PAGE_ZERO;
	return guest_mem_ptr(gm, e & ~(GUEST_PAGE_SIZE - 1), GUEST_PAGE_SIZE);
}

void mig_page_zero(uint8_t *page)
{
	/* Reading a page never touched costs nothing; writing it would
	 * allocate it. */
	if (!guest_page_is_zero(page))
		memset(page, 0, GUEST_PAGE_SIZE);
}

int mig_pages_apply(const struct guest_mem *gm, const void *buf, size_t len,
		    struct mig_pages_stats *st, char *err, size_t errlen)
{
	const uint8_t *data;
	uint32_t count = 0;
	size_t head_len;
	int r;

	if (len < sizeof(struct mig_pages_hdr))
		return errmsg(-EPROTO, err, errlen, "malformed stream: PAGES record of %zu bytes", len);
	memcpy(&count, buf, 4);
	count = le32toh(count);
	if (count > MIG_BATCH_PAGES)
		return errmsg(-EPROTO, err, errlen, "malformed stream: PAGES of %u pages", count);
	head_len = sizeof(struct mig_pages_hdr) + (size_t)count * 8;
	if (len < head_len)
		return errmsg(-EPROTO, err, errlen, "malformed stream: PAGES record of %zu bytes", len);
	r = mig_pages_check(gm, buf, head_len, len, &count, err, errlen);
	if (r)
		return r;
	data = (const uint8_t *)buf + head_len;
	for (uint32_t i = 0; i < count; i++) {
		bool zero;
		uint8_t *dst = mig_page_entry(gm, buf, i, &zero);

		if (zero) {
			mig_page_zero(dst);
			st->zero_pages++;
		} else {
			memcpy(dst, data, GUEST_PAGE_SIZE);
			data += GUEST_PAGE_SIZE;
		}
		st->pages++;
	}
	return 0;
}

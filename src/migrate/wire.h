/* The migration stream (src/migrate/): records on one TCP connection.
 *
 * Every record is an 8-byte header, {u32 type, u32 length}, little-endian,
 * then @length bytes of payload.  The conversation:
 *
 *   dst -> src  CHALLENGE  magic, newest and oldest version, flags, nonce_d
 *   src -> dst  HELLO      magic, version, flags, nonce_s,
 *                          HMAC(key, "vmrun-migrate source" nonce_d nonce_s),
 *                          then the machine's description (a state stream:
 *                          /vmrun, /config, /memory, /cpus)
 *   dst -> src  READY      HMAC(key, "vmrun-migrate destination" nonce_s nonce_d)
 *               or REFUSE  a reason (text)
 *   src -> dst  PAGES ...  rounds of pages (below), as many records as needed,
 *                          each round followed by SYNC, which the destination
 *                          answers with SYNCED once it has applied the round
 *                          (so that no page waits in a socket buffer when the
 *                          source stops the guest, and the bandwidth measured
 *                          is the one that reaches guest RAM)
 *   src -> dst  STATE      the whole state stream of the paused machine
 *   dst -> src  LOADED     (or ABORT with a reason)
 *   src -> dst  RELEASED   the source gave up its disk locks
 *   dst -> src  TAKEN      the destination opened and locked the disks
 *   src -> dst  COMMIT     the source will not run the guest again
 *   dst -> src  RUNNING    the destination runs it
 *
 * Either side may send ABORT (a reason) instead of what comes next.
 *
 * PAGES: {u32 count, u32 flags (0)} then @count u64 entries, each a page's
 * guest-physical address with MIG_PAGE_ZERO in bit 0 for a page that reads
 * as zeroes, then 4 KiB of data for each entry without that bit, in order.
 *
 * Everything read is hostile: lengths, counts and addresses are checked
 * before use (mig_pages_apply()), a record longer than its type allows is
 * refused before it is read. */
#ifndef VMRUN_MIGRATE_WIRE_H
#define VMRUN_MIGRATE_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "vmrun/guest_mem.h"

#define MIG_MAGIC "VMRUNMIG"
#define MIG_VERSION 1        /* this vmrun's stream */
#define MIG_VERSION_OLDEST 1 /* the oldest it accepts (this one and the one before, once there is one) */

#define MIG_NONCE_LEN 32
#define MIG_MAC_LEN 32 /* HMAC-SHA256 */
#define MIG_KEY_MIN 16
#define MIG_KEY_MAX 4096

#define MIG_BATCH_PAGES 256 /* pages per PAGES record: 1 MiB of data */
#define MIG_PAGE_ZERO 1ull

enum mig_type {
	MIG_CHALLENGE = 1,
	MIG_HELLO,
	MIG_READY,
	MIG_REFUSE,
	MIG_PAGES,
	MIG_STATE,
	MIG_LOADED,
	MIG_RELEASED,
	MIG_TAKEN,
	MIG_COMMIT,
	MIG_RUNNING,
	MIG_ABORT,
	MIG_SYNC,   /* src -> dst, after each round: answer when all before it is in RAM */
	MIG_SYNCED, /* dst -> src */
	MIG_TYPE_END,
};

struct mig_hdr {
	uint32_t type;
	uint32_t len;
};

#define MIG_CHALLENGE_FLAG_AUTH 1u /* the destination has a key */
#define MIG_HELLO_FLAG_AUTH 1u     /* the source has a key */

struct mig_challenge {
	char magic[8];
	uint32_t version_newest;
	uint32_t version_oldest;
	uint32_t flags;
	uint32_t reserved;
	uint8_t nonce[MIG_NONCE_LEN];
};

struct mig_hello {
	char magic[8];
	uint32_t version;
	uint32_t flags;
	uint8_t nonce[MIG_NONCE_LEN];
	uint8_t mac[MIG_MAC_LEN];
	/* then the description */
};

struct mig_pages_hdr {
	uint32_t count;
	uint32_t flags;
};

/* The largest payload each record type may have (0: none allowed). */
uint32_t mig_max_len(uint32_t type);
const char *mig_type_name(uint32_t type);

/* A shared secret from @path into @key (MIG_KEY_MAX bytes of room):
 * MIG_KEY_MIN..MIG_KEY_MAX bytes, used as they are.  A file others can
 * read earns a warning.  Returns 0 or -errno
 * with one line in @err. */
int mig_key_load(const char *path, uint8_t *key, size_t *len, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* HMAC-SHA256 of @label then @a then @b under @key into @mac. */
int mig_mac(const uint8_t *key, size_t keylen, const char *label, const uint8_t *a,
	    const uint8_t *b, uint8_t mac[MIG_MAC_LEN]) __attribute__((warn_unused_result));
/* Constant-time comparison of two MACs. */
bool mig_mac_equal(const uint8_t *x, const uint8_t *y);
/* MIG_NONCE_LEN random bytes.  Returns 0 or -errno. */
int mig_nonce(uint8_t *nonce) __attribute__((warn_unused_result));

/* Send one record: header and @len bytes of @payload (may be NULL when
 * @len is 0).  Returns 0 or -errno (-EPIPE: the peer went away). */
int mig_send(int fd, uint32_t type, const void *payload, size_t len)
	__attribute__((warn_unused_result));
/* Send one record whose payload is @n iovecs (their total is the length). */
struct iovec;
int mig_sendv(int fd, uint32_t type, struct iovec *iov, int n) __attribute__((warn_unused_result));

/* Receive one record's header, check its type is known and its length
 * within mig_max_len(), then its payload into @buf (@cap bytes).  Returns 0
 * with *@type and *@len set, or -errno: -EPIPE for a connection that ended,
 * -EPROTO for a malformed header (a reason in @err). */
int mig_recv(int fd, uint32_t *type, void *buf, size_t cap, uint32_t *len, char *err,
	     size_t errlen) __attribute__((warn_unused_result));

/* Fill all of @iov (@n entries, modified as it goes) from @fd.  Returns 0
 * or -errno (-EPIPE: the connection ended). */
int mig_readv(int fd, struct iovec *iov, int n) __attribute__((warn_unused_result));

/* mig_recv() in two steps: the header (checked as mig_recv() does, and
 * against @cap), then @len bytes of payload into @buf. */
int mig_recv_header(int fd, uint32_t *type, uint32_t *len, size_t cap, char *err, size_t errlen)
	__attribute__((warn_unused_result));
int mig_recv_payload(int fd, uint32_t type, void *buf, size_t len, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Receive one record and require @want; an ABORT or REFUSE instead yields
 * -ECONNABORTED with the peer's reason in @err.  *@len gets the length. */
int mig_expect(int fd, uint32_t want, void *buf, size_t cap, uint32_t *len, char *err,
	       size_t errlen) __attribute__((warn_unused_result));

/* What mig_pages_apply() counted. */
struct mig_pages_stats {
	uint64_t pages;      /* entries applied */
	uint64_t zero_pages; /* of which zero pages */
};

/* Check a PAGES record before its data is read: @head (@head_len bytes)
 * is its header and entries, @total_len the record's whole length.  Every
 * entry must be page-aligned guest RAM with known flags, and @total_len
 * exactly the header, the entries and one page per non-zero entry.
 * Returns 0 with *@count, or -EPROTO with the reason in @err. */
int mig_pages_check(const struct guest_mem *gm, const void *head, size_t head_len,
		    size_t total_len, uint32_t *count, char *err, size_t errlen)
	__attribute__((warn_unused_result));
/* Entry @i of a checked record: the page's host address, and whether it
 * is a zero page. */
uint8_t *mig_page_entry(const struct guest_mem *gm, const void *head, uint32_t i, bool *zero);
/* Make @page zero, without allocating one that already is. */
void mig_page_zero(uint8_t *page);

/* Apply one PAGES payload (@len bytes at @buf) to @gm: every entry's
 * address must be page-aligned guest RAM, the flags known, and @len exactly
 * the header, the entries and one page per non-zero entry.  Nothing is
 * written unless the whole payload checks.  Returns 0 or -EPROTO with the
 * reason in @err. */
int mig_pages_apply(const struct guest_mem *gm, const void *buf, size_t len,
		    struct mig_pages_stats *st, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Milliseconds of CLOCK_MONOTONIC since @t0 (both ends' statistics). */
static inline double ms_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

#endif

/* The migration stream's wire layer (src/migrate/wire.h): records over a
 * socket pair, hostile headers and PAGES records, the HMAC handshake's
 * primitives and key files.  No /dev/kvm. */
#include "unit.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../src/migrate/wire.h"
#include "vmrun/guest_mem.h"

#define MiB (1ull << 20)

static struct guest_mem gm;

static int setup_mem(void **state)
{
	(void)state;
	return guest_mem_init(&gm, 16 * MiB);
}

static int teardown_mem(void **state)
{
	(void)state;
	guest_mem_exit(&gm);
	return 0;
}

/* A PAGES payload: @n entries from @entries, data pages filled with @fill. */
static size_t make_pages(uint8_t *buf, const uint64_t *entries, unsigned n, uint8_t fill)
{
	struct mig_pages_hdr h = { .count = htole32(n) };
	size_t off = sizeof(h);

	memcpy(buf, &h, sizeof(h));
	for (unsigned i = 0; i < n; i++) {
		uint64_t e = htole64(entries[i]);

		memcpy(buf + off, &e, 8);
		off += 8;
	}
	for (unsigned i = 0; i < n; i++) {
		if (entries[i] & MIG_PAGE_ZERO)
			continue;
		memset(buf + off, fill + (int)i, GUEST_PAGE_SIZE);
		off += GUEST_PAGE_SIZE;
	}
	return off;
}

static void test_pages_apply(void **state)
{
	static uint8_t buf[3 * 8 + 8 + 3 * 4096];
	uint64_t e[3] = { 0x10000, 0x20000 | MIG_PAGE_ZERO, 0x30000 };
	struct mig_pages_stats st = { 0 };
	char err[256];
	size_t len;
	uint8_t *p1 = guest_mem_ptr(&gm, 0x10000, 4096), *p2 = guest_mem_ptr(&gm, 0x20000, 4096),
		*p3 = guest_mem_ptr(&gm, 0x30000, 4096);

	(void)state;
	memset(p2, 0x77, 4096); /* a zero page must clear what was there */
	len = make_pages(buf, e, 3, 0x40);
	assert_int_equal(mig_pages_apply(&gm, buf, len, &st, err, sizeof(err)), 0);
	assert_int_equal(p1[0], 0x40);
	assert_int_equal(p1[4095], 0x40);
	assert_int_equal(p3[0], 0x42);
	assert_true(guest_page_is_zero(p2));
	assert_int_equal(st.pages, 3);
	assert_int_equal(st.zero_pages, 1);
}

/* Each malformed record is refused whole: nothing of it is written. */
static void test_pages_hostile(void **state)
{
	static uint8_t buf[8 + 8 * 300 + 2 * 4096];
	uint8_t *target = guest_mem_ptr(&gm, 0x50000, 4096);
	struct mig_pages_stats st = { 0 };
	char err[256];
	size_t len;
	struct {
		uint64_t e[2];
		unsigned n;
		long trim; /* bytes cut from (or, negative, added to) the valid length */
		const char *needle;
	} cases[] = {
		{ { 0x50000, 0x50001 | 0x10 }, 2, 0, "page entry" },        /* unknown flag bits */
		{ { 0x50000, 0x50800 }, 2, 0, "page entry" },              /* not page-aligned */
		{ { 0x50000, 16 * MiB }, 2, 0, "not guest RAM" },          /* past the end */
		{ { 0x50000, 0xfffffffffffff000ull }, 2, 0, "not guest RAM" },
		{ { 0x50000, 0x60000 }, 2, 1, "bytes for" },                /* one byte short */
		{ { 0x50000, 0x60000 }, 2, -4096, "bytes for" },            /* a page too many */
		{ { 0x50000, 0x60000 | MIG_PAGE_ZERO }, 2, -4096, "bytes for" },
	};

	(void)state;
	for (size_t c = 0; c < ARRAY_LEN(cases); c++) {
		memset(target, 0x11, 4096);
		len = make_pages(buf, cases[c].e, cases[c].n, 0x99);
		len = (size_t)((long)len - cases[c].trim);
		err[0] = '\0';
		assert_int_equal(mig_pages_apply(&gm, buf, len, &st, err, sizeof(err)), -EPROTO);
		assert_one_line_naming(err, cases[c].needle);
		assert_int_equal(target[0], 0x11); /* the valid first entry was not applied */
	}
	/* A count beyond a batch, flags set, a record shorter than its header. */
	struct mig_pages_hdr h = { .count = htole32(MIG_BATCH_PAGES + 1) };

	memcpy(buf, &h, sizeof(h));
	assert_int_equal(mig_pages_apply(&gm, buf, sizeof(buf), &st, err, sizeof(err)), -EPROTO);
	h = (struct mig_pages_hdr){ .count = 0, .flags = htole32(1) };
	memcpy(buf, &h, sizeof(h));
	assert_int_equal(mig_pages_apply(&gm, buf, sizeof(h), &st, err, sizeof(err)), -EPROTO);
	assert_int_equal(mig_pages_apply(&gm, buf, 3, &st, err, sizeof(err)), -EPROTO);
	h = (struct mig_pages_hdr){ .count = htole32(100) };
	memcpy(buf, &h, sizeof(h));
	assert_int_equal(mig_pages_apply(&gm, buf, sizeof(h) + 8 * 99, &st, err, sizeof(err)), -EPROTO);
}

static void test_records(void **state)
{
	int sv[2];
	uint8_t buf[64];
	uint32_t type, len;
	char err[256];
	struct mig_hdr h;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(mig_send(sv[0], MIG_READY, "0123456789abcdef0123456789abcdef", 32), 0);
	assert_int_equal(mig_recv(sv[1], &type, buf, sizeof(buf), &len, err, sizeof(err)), 0);
	assert_int_equal(type, MIG_READY);
	assert_int_equal(len, 32);
	assert_memory_equal(buf, "0123456789abcdef", 16);

	/* ABORT where LOADED belongs: the peer's reason, control bytes made safe. */
	assert_int_equal(mig_send(sv[0], MIG_ABORT, "disk\n0 gone\x1b[2J", 16), 0);
	assert_int_equal(mig_expect(sv[1], MIG_LOADED, buf, sizeof(buf), &len, err, sizeof(err)),
			 -ECONNABORTED);
	assert_one_line_naming(err, "disk?0 gone");
	assert_null(strchr(err, '\x1b'));

	/* Unknown type, and a length beyond what the type allows. */
	h = (struct mig_hdr){ .type = htole32(99), .len = 0 };
	assert_int_equal(write(sv[0], &h, sizeof(h)), (ssize_t)sizeof(h));
	assert_int_equal(mig_recv(sv[1], &type, buf, sizeof(buf), &len, err, sizeof(err)), -EPROTO);
	assert_one_line_naming(err, "unknown record type");
	h = (struct mig_hdr){ .type = htole32(MIG_READY), .len = htole32(33) };
	assert_int_equal(write(sv[0], &h, sizeof(h)), (ssize_t)sizeof(h));
	assert_int_equal(mig_recv(sv[1], &type, buf, sizeof(buf), &len, err, sizeof(err)), -EPROTO);
	assert_one_line_naming(err, "READY");
	h = (struct mig_hdr){ .type = htole32(MIG_COMMIT), .len = htole32(1) };
	assert_int_equal(write(sv[0], &h, sizeof(h)), (ssize_t)sizeof(h));
	assert_int_equal(mig_recv(sv[1], &type, buf, sizeof(buf), &len, err, sizeof(err)), -EPROTO);

	/* A record cut short by the peer going away. */
	h = (struct mig_hdr){ .type = htole32(MIG_READY), .len = htole32(32) };
	assert_int_equal(write(sv[0], &h, sizeof(h)), (ssize_t)sizeof(h));
	assert_int_equal(write(sv[0], "abc", 3), 3);
	close(sv[0]);
	assert_int_equal(mig_recv(sv[1], &type, buf, sizeof(buf), &len, err, sizeof(err)), -EPIPE);
	assert_one_line_naming(err, "cut short");
	assert_int_equal(mig_recv(sv[1], &type, buf, sizeof(buf), &len, err, sizeof(err)), -EPIPE);
	close(sv[1]);
}

static void test_mac(void **state)
{
	const uint8_t key[] = "0123456789abcdef-secret";
	uint8_t a[MIG_NONCE_LEN], b[MIG_NONCE_LEN], m1[MIG_MAC_LEN], m2[MIG_MAC_LEN];
	/* Computed independently, with Python's hmac module:
	 * hmac.new(b"k"*16, b"L"+bytes(range(32))+bytes(range(32,64)),
	 *          hashlib.sha256).digest() */
	static const uint8_t want[MIG_MAC_LEN] = {
		0x06, 0x41, 0xb7, 0xa6, 0x6b, 0x3f, 0xb6, 0x40, 0xc4, 0x05, 0xe6,
		0xce, 0xae, 0x0b, 0xc6, 0x87, 0x06, 0xe7, 0xb4, 0x37, 0x19, 0x13,
		0x31, 0x52, 0x97, 0xc1, 0xaa, 0x64, 0x20, 0xaf, 0x09, 0x89,
	};
	uint8_t k16[16];

	(void)state;
	for (int i = 0; i < 32; i++) {
		a[i] = (uint8_t)i;
		b[i] = (uint8_t)(32 + i);
	}
	memset(k16, 'k', sizeof(k16));
	assert_int_equal(mig_mac(k16, sizeof(k16), "L", a, b, m1), 0);
	assert_memory_equal(m1, want, MIG_MAC_LEN);
	/* Different label, key or order: different MAC. */
	assert_int_equal(mig_mac(key, sizeof(key) - 1, "vmrun-migrate source", a, b, m1), 0);
	assert_int_equal(mig_mac(key, sizeof(key) - 1, "vmrun-migrate destination", a, b, m2), 0);
	assert_false(mig_mac_equal(m1, m2));
	assert_int_equal(mig_mac(key, sizeof(key) - 1, "vmrun-migrate source", b, a, m2), 0);
	assert_false(mig_mac_equal(m1, m2));
	assert_int_equal(mig_mac(key, sizeof(key) - 2, "vmrun-migrate source", a, b, m2), 0);
	assert_false(mig_mac_equal(m1, m2));
	assert_int_equal(mig_mac(key, sizeof(key) - 1, "vmrun-migrate source", a, b, m2), 0);
	assert_true(mig_mac_equal(m1, m2));
	/* Nonces differ from call to call. */
	assert_int_equal(mig_nonce(a), 0);
	assert_int_equal(mig_nonce(b), 0);
	assert_memory_not_equal(a, b, MIG_NONCE_LEN);
}

static void test_key_file(void **state)
{
	char path[] = "/tmp/vmrun-test-key-XXXXXX";
	uint8_t key[MIG_KEY_MAX];
	size_t len = 0;
	char err[256];
	int fd = mkstemp(path);

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "short", 5), 5);
	assert_int_equal(mig_key_load(path, key, &len, err, sizeof(err)), -EINVAL);
	assert_one_line_naming(err, "bytes");
	assert_int_equal(write(fd, "-and-now-long-enough", 20), 20);
	assert_int_equal(mig_key_load(path, key, &len, err, sizeof(err)), 0);
	assert_int_equal(len, 25);
	assert_memory_equal(key, "short-and-now-long-enough", 25);
	close(fd);
	unlink(path);
	assert_int_equal(mig_key_load(path, key, &len, err, sizeof(err)), -ENOENT);
	assert_one_line_naming(err, path);
	assert_int_equal(mig_key_load("/tmp", key, &len, err, sizeof(err)), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pages_apply),
		cmocka_unit_test(test_pages_hostile),
		cmocka_unit_test(test_records),
		cmocka_unit_test(test_mac),
		cmocka_unit_test(test_key_file),
	};

	return cmocka_run_group_tests(tests, setup_mem, teardown_mem);
}

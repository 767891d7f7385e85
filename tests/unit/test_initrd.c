/* Host-side inflation of a gzip initrd (initrd_gunzip, src/boot/initrd.c).
 * The gzip data comes from zlib's own compressor; the expected output is the
 * input it was made from. */
#include "unit.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include "vmrun/boot.h"

struct blob {
	uint8_t *p;
	size_t len;
};

/* A cpio-like plaintext: compressible, but not trivially. */
static struct blob plaintext(size_t len, unsigned seed)
{
	struct blob b = { malloc(len), len };
	uint32_t x = seed * 2654435761u + 1;

	assert_non_null(b.p);
	for (size_t i = 0; i < len; i++) {
		x = x * 1103515245u + 12345u;
		b.p[i] = (i % 64 < 40) ? (uint8_t)("070701initramfs"[i % 15]) : (uint8_t)(x >> 24);
	}
	return b;
}

static struct blob gzip_of(const struct blob *in)
{
	struct blob out = { malloc(compressBound((uLong)in->len) + 64), 0 };
	z_stream z = { 0 };

	assert_non_null(out.p);
	assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
	z.next_in = in->p;
	z.avail_in = (uInt)in->len;
	z.next_out = out.p;
	z.avail_out = (uInt)(compressBound((uLong)in->len) + 64);
	assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
	out.len = z.total_out;
	deflateEnd(&z);
	return out;
}

/* @a then @b, with @pad zero bytes between them. */
static struct blob concat(const struct blob *a, size_t pad, const struct blob *b)
{
	struct blob c = { calloc(1, a->len + pad + b->len), a->len + pad + b->len };

	assert_non_null(c.p);
	if (a->len)
		memcpy(c.p, a->p, a->len);
	if (b->len)
		memcpy(c.p + a->len + pad, b->p, b->len);
	return c;
}

static void test_not_gzip_untouched(void **state)
{
	struct blob plain = plaintext(5000, 1);
	uint8_t *out = (uint8_t *)1;
	size_t out_len = 99;
	char err[200];

	(void)state;
	assert_int_equal(initrd_gunzip(plain.p, plain.len, 1 << 20, &out, &out_len, err, sizeof(err)), 0);
	assert_null(out);
	assert_int_equal(out_len, 0);
	assert_int_equal(initrd_gunzip(plain.p, 1, 1 << 20, &out, &out_len, err, sizeof(err)), 0);
	assert_int_equal(initrd_gunzip(plain.p, 0, 1 << 20, &out, &out_len, err, sizeof(err)), 0);
	free(plain.p);
}

static void test_one_member(void **state)
{
	/* Larger than the first allocation (4 MiB), so the buffer grows. */
	struct blob plain = plaintext(9u << 20, 2), gz = gzip_of(&plain);
	uint8_t *out;
	size_t out_len;
	char err[200];

	(void)state;
	assert_int_equal(initrd_gunzip(gz.p, gz.len, 64u << 20, &out, &out_len, err, sizeof(err)), 1);
	assert_int_equal(out_len, plain.len);
	assert_memory_equal(out, plain.p, plain.len);
	free(out);
	free(plain.p);
	free(gz.p);
}

static void test_members_and_padding(void **state)
{
	struct blob a = plaintext(70000, 3), b = plaintext(123457, 4);
	struct blob ga = gzip_of(&a), gb = gzip_of(&b);
	struct blob both = concat(&ga, 3, &gb), padded = concat(&both, 512, &(struct blob){ 0 });
	uint8_t *out;
	size_t out_len;
	char err[200];

	(void)state;
	assert_int_equal(initrd_gunzip(padded.p, padded.len, 1 << 20, &out, &out_len, err, sizeof(err)), 1);
	assert_int_equal(out_len, a.len + b.len);
	assert_memory_equal(out, a.p, a.len);
	assert_memory_equal(out + a.len, b.p, b.len);
	free(out);
	free(a.p), free(b.p), free(ga.p), free(gb.p), free(both.p), free(padded.p);
}

static void test_mixed_content_untouched(void **state)
{
	/* gzip, then an uncompressed archive: the kernel copes, vmrun leaves it. */
	struct blob a = plaintext(4000, 5), ga = gzip_of(&a), mixed = concat(&ga, 0, &a);
	uint8_t *out;
	size_t out_len;
	char err[200];

	(void)state;
	assert_int_equal(initrd_gunzip(mixed.p, mixed.len, 1 << 20, &out, &out_len, err, sizeof(err)), 0);
	assert_null(out);
	free(a.p), free(ga.p), free(mixed.p);
}

static void test_truncated_and_corrupt(void **state)
{
	struct blob a = plaintext(200000, 6), ga = gzip_of(&a);
	uint8_t *out;
	size_t out_len;
	char err[200];

	(void)state;
	assert_int_equal(initrd_gunzip(ga.p, ga.len / 2, 1 << 20, &out, &out_len, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "truncated"));
	assert_null(out);
	/* Wreck the deflate data after the 10-byte header. */
	memset(ga.p + 10, 0xff, 64);
	assert_int_equal(initrd_gunzip(ga.p, ga.len, 1 << 20, &out, &out_len, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "corrupt"));
	assert_null(out);
	free(a.p), free(ga.p);
}

static void test_too_big(void **state)
{
	struct blob a = plaintext(300000, 7), ga = gzip_of(&a);
	uint8_t *out;
	size_t out_len;
	char err[200];

	(void)state;
	assert_int_equal(initrd_gunzip(ga.p, ga.len, a.len - 1, &out, &out_len, err, sizeof(err)),
			 -EFBIG);
	assert_null(out);
	/* Exactly the bound fits. */
	assert_int_equal(initrd_gunzip(ga.p, ga.len, a.len, &out, &out_len, err, sizeof(err)), 1);
	assert_int_equal(out_len, a.len);
	free(out);
	free(a.p), free(ga.p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_not_gzip_untouched),
		cmocka_unit_test(test_one_member),
		cmocka_unit_test(test_members_and_padding),
		cmocka_unit_test(test_mixed_content_untouched),
		cmocka_unit_test(test_truncated_and_corrupt),
		cmocka_unit_test(test_too_big),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

// SPDX-License-Identifier: MIT
/*
 * A small AML emitter (vmrun/acpi.h), enough for vmrun's DSDT: names,
 * integers, strings, EISA IDs, packages, buffers holding resource templates,
 * scopes, devices and methods.  Encodings from the ACPI specification,
 * chapter 20 ("ACPI Machine Language Specification") and 6.4 (resource
 * descriptors).
 *
 * Objects that carry a PkgLength are written body first: opening one records
 * where its PkgLength goes, closing it measures the body, picks the shortest
 * PkgLength encoding that fits and moves the body up to make room.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vmrun/acpi.h"

#define AML_ZERO 0x00
#define AML_ONE 0x01
#define AML_NAME_OP 0x08
#define AML_BYTE_PREFIX 0x0a
#define AML_WORD_PREFIX 0x0b
#define AML_DWORD_PREFIX 0x0c
#define AML_STRING_PREFIX 0x0d
#define AML_QWORD_PREFIX 0x0e
#define AML_SCOPE_OP 0x10
#define AML_BUFFER_OP 0x11
#define AML_PACKAGE_OP 0x12
#define AML_METHOD_OP 0x14
#define AML_DUAL_NAME_PREFIX 0x2e
#define AML_MULTI_NAME_PREFIX 0x2f
#define AML_EXT_OP_PREFIX 0x5b
#define AML_DEVICE_OP 0x82 /* after AML_EXT_OP_PREFIX */
#define AML_ROOT_CHAR '\\'
#define AML_PARENT_CHAR '^'
#define AML_RETURN_OP 0xa4
#define AML_ONES_OP 0xff
#define AML_PKGLENGTH_MAX (1u << 28)

void aml_init(struct aml *a)
{
	memset(a, 0, sizeof(*a));
}

void aml_free(struct aml *a)
{
	free(a->buf);
	memset(a, 0, sizeof(*a));
}

int aml_finish(struct aml *a, const uint8_t **out, size_t *len)
{
	if (!a->err && a->depth)
		a->err = -EINVAL; /* an object left open */
	if (a->err)
		return a->err;
	*out = a->buf;
	*len = a->len;
	return 0;
}

/* Room for @n more bytes; false (and the error recorded) when there is none. */
static bool aml_reserve(struct aml *a, size_t n)
{
	size_t cap;
	uint8_t *b;

	if (a->err)
		return false;
	if (n <= a->cap - a->len)
		return true;
	if (n > AML_PKGLENGTH_MAX || a->len > AML_PKGLENGTH_MAX) {
		a->err = -ENOSPC;
		return false;
	}
	cap = a->cap ? a->cap : 256;
	while (cap - a->len < n)
		cap *= 2;
	b = realloc(a->buf, cap);
	if (!b) {
		a->err = -ENOMEM;
		return false;
	}
	a->buf = b;
	a->cap = cap;
	return true;
}

void aml_bytes(struct aml *a, const void *p, size_t n)
{
	if (!aml_reserve(a, n))
		return;
	memcpy(a->buf + a->len, p, n);
	a->len += n;
}

static void aml_byte(struct aml *a, uint8_t b)
{
	aml_bytes(a, &b, 1);
}

static void aml_le(struct aml *a, uint64_t v, unsigned n)
{
	uint8_t b[8];

	for (unsigned i = 0; i < n; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	aml_bytes(a, b, n);
}

static bool name_char_ok(char c, bool first)
{
	return (c >= 'A' && c <= 'Z') || c == '_' || (!first && c >= '0' && c <= '9');
}

void aml_name_string(struct aml *a, const char *name)
{
	char segs[AML_MAX_DEPTH][4];
	unsigned n = 0;
	const char *p = name;

	if (a->err)
		return;
	if (*p == AML_ROOT_CHAR) {
		aml_byte(a, AML_ROOT_CHAR);
		p++;
	} else {
		while (*p == AML_PARENT_CHAR) {
			aml_byte(a, AML_PARENT_CHAR);
			p++;
		}
	}
	while (*p) {
		unsigned k = 0;

		if (n == AML_MAX_DEPTH) {
			a->err = -EINVAL;
			return;
		}
		while (*p && *p != '.') {
			if (k == 4 || !name_char_ok(*p, k == 0)) {
				a->err = -EINVAL;
				return;
			}
			segs[n][k++] = *p++;
		}
		if (!k) {
			a->err = -EINVAL; /* an empty segment: "A..B", a trailing dot */
			return;
		}
		while (k < 4)
			segs[n][k++] = '_';
		n++;
		if (*p == '.' && !*++p) {
			a->err = -EINVAL;
			return;
		}
	}
	if (n == 0) {
		aml_byte(a, AML_ZERO); /* NullName */
	} else if (n == 2) {
		aml_byte(a, AML_DUAL_NAME_PREFIX);
	} else if (n > 2) {
		aml_byte(a, AML_MULTI_NAME_PREFIX);
		aml_byte(a, (uint8_t)n);
	}
	for (unsigned i = 0; i < n; i++)
		aml_bytes(a, segs[i], 4);
}

void aml_integer(struct aml *a, uint64_t v)
{
	if (v == 0) {
		aml_byte(a, AML_ZERO);
	} else if (v == 1) {
		aml_byte(a, AML_ONE);
	} else if (v == UINT64_MAX) {
		aml_byte(a, AML_ONES_OP);
	} else if (v <= 0xff) {
		aml_byte(a, AML_BYTE_PREFIX);
		aml_le(a, v, 1);
	} else if (v <= 0xffff) {
		aml_byte(a, AML_WORD_PREFIX);
		aml_le(a, v, 2);
	} else if (v <= 0xffffffffu) {
		aml_byte(a, AML_DWORD_PREFIX);
		aml_le(a, v, 4);
	} else {
		aml_byte(a, AML_QWORD_PREFIX);
		aml_le(a, v, 8);
	}
}

void aml_string(struct aml *a, const char *s)
{
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p < 0x01 || (unsigned char)*p > 0x7f) {
			if (!a->err)
				a->err = -EINVAL; /* AML strings are ASCII */
			return;
		}
	aml_byte(a, AML_STRING_PREFIX);
	aml_bytes(a, s, strlen(s) + 1);
}

/* "PNP0A03": three letters (5 bits each) and four hex digits, stored as a
 * big-endian 32-bit number. */
void aml_eisaid(struct aml *a, const char *id)
{
	uint32_t v = 0;

	if (strlen(id) != 7) {
		if (!a->err)
			a->err = -EINVAL;
		return;
	}
	for (unsigned i = 0; i < 3; i++) {
		if (id[i] < 'A' || id[i] > 'Z') {
			if (!a->err)
				a->err = -EINVAL;
			return;
		}
		v = v << 5 | (uint32_t)(id[i] - 0x40);
	}
	for (unsigned i = 3; i < 7; i++) {
		char c = id[i];
		unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0') :
			     c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10) : 16;

		if (d == 16) {
			if (!a->err)
				a->err = -EINVAL;
			return;
		}
		v = v << 4 | d;
	}
	aml_integer(a, __builtin_bswap32(v));
}

void aml_name(struct aml *a, const char *name)
{
	aml_byte(a, AML_NAME_OP);
	aml_name_string(a, name);
}

/* Open an object whose PkgLength follows the opcode bytes already written. */
static void aml_open(struct aml *a)
{
	if (a->err)
		return;
	if (a->depth == AML_MAX_DEPTH) {
		a->err = -EINVAL;
		return;
	}
	a->is_buffer[a->depth] = false;
	a->open[a->depth++] = a->len;
}

void aml_end(struct aml *a)
{
	size_t at, body, total;
	unsigned n;
	uint8_t enc[4];

	if (a->err)
		return;
	if (!a->depth) {
		a->err = -EINVAL;
		return;
	}
	at = a->open[--a->depth];
	body = a->len - at;
	if (a->is_buffer[a->depth]) {
		uint32_t size = (uint32_t)(body - 5); /* after the DWordConst */

		for (unsigned i = 0; i < 4; i++)
			a->buf[at + 1 + i] = (uint8_t)(size >> (8 * i));
	}
	/* The PkgLength counts itself: 1 byte up to 63, then 1 + 1..3 bytes
	 * carrying 4 + 8k bits. */
	if (body + 1 < 64)
		n = 1;
	else if (body + 2 < (1u << 12))
		n = 2;
	else if (body + 3 < (1u << 20))
		n = 3;
	else if (body + 4 < AML_PKGLENGTH_MAX)
		n = 4;
	else {
		a->err = -ENOSPC;
		return;
	}
	total = body + n;
	if (n == 1) {
		enc[0] = (uint8_t)total;
	} else {
		enc[0] = (uint8_t)(((n - 1) << 6) | (total & 0xf));
		for (unsigned i = 1; i < n; i++)
			enc[i] = (uint8_t)(total >> (4 + 8 * (i - 1)));
	}
	if (!aml_reserve(a, n))
		return;
	memmove(a->buf + at + n, a->buf + at, body);
	memcpy(a->buf + at, enc, n);
	a->len += n;
}

void aml_scope_begin(struct aml *a, const char *name)
{
	aml_byte(a, AML_SCOPE_OP);
	aml_open(a);
	aml_name_string(a, name);
}

void aml_device_begin(struct aml *a, const char *name)
{
	aml_byte(a, AML_EXT_OP_PREFIX);
	aml_byte(a, AML_DEVICE_OP);
	aml_open(a);
	aml_name_string(a, name);
}

void aml_method_begin(struct aml *a, const char *name, unsigned nargs)
{
	if (nargs > 7) {
		if (!a->err)
			a->err = -EINVAL;
		return;
	}
	aml_byte(a, AML_METHOD_OP);
	aml_open(a);
	aml_name_string(a, name);
	aml_byte(a, (uint8_t)nargs); /* NotSerialized, SyncLevel 0 */
}

void aml_return(struct aml *a)
{
	aml_byte(a, AML_RETURN_OP);
}

void aml_package_begin(struct aml *a, unsigned n_elements)
{
	if (n_elements > 255) {
		if (!a->err)
			a->err = -EINVAL; /* a Package holds at most 255 (VarPackage more) */
		return;
	}
	aml_byte(a, AML_PACKAGE_OP);
	aml_open(a);
	aml_byte(a, (uint8_t)n_elements);
}

/* A buffer's size is an integer inside its PkgLength, known only at its
 * end: the bytes go after a DWordConst placeholder that aml_end() fills. */
void aml_buffer_begin(struct aml *a)
{
	aml_byte(a, AML_BUFFER_OP);
	aml_open(a);
	if (a->err)
		return;
	a->is_buffer[a->depth - 1] = true;
	aml_byte(a, AML_DWORD_PREFIX);
	aml_le(a, 0, 4);
}

/* Resource descriptors (ACPI 6.4, 6.4.2 small and 6.4.3 large). */
#define RT_IRQ 0x22         /* small item: IRQ mask, length 2 */
#define RT_IO 0x47          /* small item: I/O port, length 7 */
#define RT_END 0x79         /* small item: end tag, length 1 */
#define RT_DWORD_ADDR 0x87  /* large item: DWord address space */
#define RT_WORD_ADDR 0x88   /* large item: Word address space */
#define RT_TYPE_MEMORY 0
#define RT_TYPE_IO 1
#define RT_TYPE_BUS 2
/* General flags: producer (bit 0 clear), positive decode, min and max fixed. */
#define RT_FLAGS_PRODUCER_FIXED 0x0c

static void rt_word(struct aml *a, uint8_t type, uint8_t type_flags, uint16_t min, uint16_t max)
{
	aml_byte(a, RT_WORD_ADDR);
	aml_le(a, 13, 2); /* bytes after the length field */
	aml_byte(a, type);
	aml_byte(a, RT_FLAGS_PRODUCER_FIXED);
	aml_byte(a, type_flags);
	aml_le(a, 0, 2);   /* granularity */
	aml_le(a, min, 2);
	aml_le(a, max, 2);
	aml_le(a, 0, 2);   /* translation offset */
	aml_le(a, (uint32_t)max - min + 1, 2);
}

void aml_rt_word_bus(struct aml *a, uint16_t min, uint16_t max)
{
	rt_word(a, RT_TYPE_BUS, 0, min, max);
}

void aml_rt_word_io(struct aml *a, uint16_t min, uint16_t max)
{
	rt_word(a, RT_TYPE_IO, 0x03 /* ISA and non-ISA ranges */, min, max);
}

void aml_rt_dword_memory(struct aml *a, uint32_t min, uint32_t max)
{
	aml_byte(a, RT_DWORD_ADDR);
	aml_le(a, 23, 2);
	aml_byte(a, RT_TYPE_MEMORY);
	aml_byte(a, RT_FLAGS_PRODUCER_FIXED);
	aml_byte(a, 0x01); /* read-write, non-cacheable */
	aml_le(a, 0, 4);   /* granularity */
	aml_le(a, min, 4);
	aml_le(a, max, 4);
	aml_le(a, 0, 4);
	aml_le(a, (uint64_t)max - min + 1, 4);
}

void aml_rt_io(struct aml *a, uint16_t port, uint8_t len)
{
	aml_byte(a, RT_IO);
	aml_byte(a, 0x01); /* decodes 16 address bits */
	aml_le(a, port, 2);
	aml_le(a, port, 2);
	aml_byte(a, 1);    /* alignment */
	aml_byte(a, len);
}

void aml_rt_irq(struct aml *a, unsigned irq)
{
	if (irq > 15) {
		if (!a->err)
			a->err = -EINVAL;
		return;
	}
	aml_byte(a, RT_IRQ);
	aml_le(a, 1u << irq, 2);
}

void aml_rt_end(struct aml *a)
{
	aml_byte(a, RT_END);
	aml_byte(a, 0); /* checksum 0: "treat as correct" */
}

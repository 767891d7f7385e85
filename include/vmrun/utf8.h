/* Byte strings from outside (paths, names read from files, command names)
 * made fit for JSON (src/core/utf8.c).  jansson refuses a string that is not
 * valid UTF-8, so a raw path would make a reply or a report vanish.
 *
 * The made-valid form: valid UTF-8 sequences are kept as they are; each byte
 * that does not begin one (a stray continuation byte, a truncated or overlong
 * sequence, a surrogate, a code point past U+10FFFF) becomes the four
 * characters \xHH, as Python's "backslashreplace" writes it.  Different
 * names stay different, and a valid name is shown unchanged (a name that
 * literally contains "\xHH" is the one ambiguous case). */
#ifndef VMRUN_UTF8_H
#define VMRUN_UTF8_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* The length of the valid UTF-8 sequence at @s (at most @len bytes): 1..4,
 * or 0 when @s[0] does not begin one. */
size_t utf8_seq_len(const char *s, size_t len);

/* True when the @len bytes at @s are valid UTF-8 (no NUL check). */
bool utf8_valid(const char *s, size_t len);

/* Write the made-valid form of the @len bytes at @s into @out (@cap bytes,
 * @cap >= 1), NUL-terminated, cut at a character or escape boundary when it
 * does not fit.  Returns the length written (without the NUL). */
size_t utf8_make_valid(char *out, size_t cap, const char *s, size_t len);

/* The made-valid form of the C string @s, malloc'd (caller frees), or NULL
 * when out of memory. */
char *utf8_make_valid_dup(const char *s);

/* json_string() of the made-valid form of @s; NULL only when out of memory
 * (a NULL @s gives JSON null). */
json_t *utf8_json_string(const char *s);

#endif

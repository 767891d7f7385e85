/* key=value lookups in the kernel command line (space-separated words). */
#include "guest.h"

/* The value of the first word "@key=..." in the command line, its length in
 * *@len; NULL when no word has that key. */
static const char *cmdline_find(const char *key, size_t *len)
{
	const char *p = guest_cmdline();
	size_t klen = strlen(key);

	while (*p) {
		const char *word, *end;

		while (*p == ' ' || *p == '\t' || *p == '\n')
			p++;
		word = p;
		while (*p && *p != ' ' && *p != '\t' && *p != '\n')
			p++;
		end = p;
		if ((size_t)(end - word) > klen && !memcmp(word, key, klen) && word[klen] == '=') {
			*len = (size_t)(end - word) - klen - 1;
			return word + klen + 1;
		}
	}
	return NULL;
}

bool cmdline_get(const char *key, char *buf, size_t len)
{
	size_t vlen, n;
	const char *v = cmdline_find(key, &vlen);

	if (!v)
		return false;
	if (!len)
		return true;
	n = vlen < len - 1 ? vlen : len - 1;
	memcpy(buf, v, n);
	buf[n] = '\0';
	return true;
}

long cmdline_get_int(const char *key, long dflt)
{
	size_t vlen, i = 0;
	const char *v = cmdline_find(key, &vlen);
	unsigned long n = 0, base = 10;
	bool neg = false;

	if (!v || !vlen)
		return dflt;
	if (v[0] == '-') {
		neg = true;
		i++;
	}
	if (vlen - i > 2 && v[i] == '0' && (v[i + 1] == 'x' || v[i + 1] == 'X')) {
		base = 16;
		i += 2;
	}
	if (i == vlen)
		return dflt;
	for (; i < vlen; i++) {
		char c = v[i];
		unsigned d;

		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (base == 16 && c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (base == 16 && c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			return dflt;
		/* Wraps modulo 2^64 on overflow: lets seed= take any 64-bit value. */
		n = n * base + d;
	}
	return neg ? -(long)n : (long)n;
}

/* Nested hosts without VT-x/AMD-V: detection, and the kernel arguments a
 * Linux guest gets there (include/vmrun/nested.h). */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmrun/config.h"
#include "vmrun/log.h"
#include "vmrun/nested.h"

#define CPUINFO_MAX (64 * 1024)

/* Whether the word @w (@n bytes) occurs, space-separated, in @s up to @end. */
static bool has_word(const char *s, const char *end, const char *w, size_t n)
{
	while (s < end) {
		const char *e;

		while (s < end && (*s == ' ' || *s == '\t'))
			s++;
		e = s;
		while (e < end && *e != ' ' && *e != '\t')
			e++;
		if ((size_t)(e - s) == n && !memcmp(s, w, n))
			return true;
		s = e;
	}
	return false;
}

int nested_cpuinfo_lacks_hw_virt(const char *cpuinfo)
{
	const char *line = cpuinfo;

	while (line && *line) {
		const char *end = strchr(line, '\n'), *colon;

		if (!end)
			end = line + strlen(line);
		/* "flags\t\t: fpu vme ..." (x86); other fields never start so. */
		if (!strncmp(line, "flags", 5) && (line[5] == ' ' || line[5] == '\t' || line[5] == ':') &&
		    (colon = memchr(line, ':', (size_t)(end - line)))) {
			bool hw = has_word(colon + 1, end, "vmx", 3) || has_word(colon + 1, end, "svm", 3);

			return hw ? 0 : 1;
		}
		line = *end ? end + 1 : NULL;
	}
	return -ENOENT;
}

int nested_host_lacks_hw_virt(const char *path)
{
	char buf[CPUINFO_MAX + 1];
	size_t n = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	buf[0] = '\0';
	while (n < CPUINFO_MAX) {
		ssize_t k = read(fd, buf + n, CPUINFO_MAX - n);
		const char *flags;

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			r = k < 0 ? -errno : 0;
			break;
		}
		n += (size_t)k;
		buf[n] = '\0';
		/* The first CPU's whole flags line is enough: on a host with
		 * many CPUs the rest is long to format. */
		flags = strstr(buf, "\nflags");
		if (flags && strchr(flags + 1, '\n'))
			break;
	}
	close(fd);
	return r ? r : nested_cpuinfo_lacks_hw_virt(buf);
}

bool nested_workarounds_enable(const struct vm_config *cfg)
{
	if (cfg->no_nested_workarounds || nested_host_lacks_hw_virt("/proc/cpuinfo") != 1)
		return false;
	return true;
}

void nested_print_banner(void)
{
	log_info("nested KVM without VT-x/AMD-V detected: instruction fallbacks on "
		 "(--no-nested-workarounds disables)");
}

/* ---- is it Linux? ---- */

static bool in_file(uint64_t off, uint64_t size, size_t len)
{
	return off <= len && size <= len - off;
}

/* A note named "Linux" in one PT_NOTE segment [off, off + size), looked for
 * in its first MiB (a vmlinux's notes take a few hundred bytes). */
static bool notes_name_linux(const uint8_t *buf, uint64_t off, uint64_t size)
{
	uint64_t pos = off, end = off + (size < (1u << 20) ? size : (1u << 20));

	while (end - pos >= sizeof(Elf64_Nhdr)) {
		Elf64_Nhdr nh;
		uint64_t name_len, desc_len;

		memcpy(&nh, buf + pos, sizeof(nh));
		pos += sizeof(nh);
		name_len = ((uint64_t)nh.n_namesz + 3) & ~3ull;
		desc_len = ((uint64_t)nh.n_descsz + 3) & ~3ull;
		if (name_len > end - pos || desc_len > end - pos - name_len)
			return false; /* truncated: stop looking */
		if (nh.n_namesz == 6 && !memcmp(buf + pos, "Linux", 6))
			return true;
		pos += name_len + desc_len;
	}
	return false;
}

static bool elf_is_linux(const uint8_t *buf, size_t len)
{
	Elf64_Ehdr eh;

	if (len < sizeof(eh))
		return false;
	memcpy(&eh, buf, sizeof(eh));
	if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_phentsize != sizeof(Elf64_Phdr))
		return false;
	if (in_file(eh.e_phoff, (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr), len)) {
		for (unsigned i = 0; i < eh.e_phnum; i++) {
			Elf64_Phdr ph;

			memcpy(&ph, buf + eh.e_phoff + i * sizeof(ph), sizeof(ph));
			if (ph.p_type == PT_NOTE && in_file(ph.p_offset, ph.p_filesz, len) &&
			    notes_name_linux(buf, ph.p_offset, ph.p_filesz))
				return true;
		}
	}
	/* init/version.c's linux_banner, in every Linux image: in .rodata,
	 * right after .text, so within the first NESTED_BANNER_SCAN_MAX bytes
	 * (a file padded to gigabytes is not read through). */
	return memmem(buf, len < NESTED_BANNER_SCAN_MAX ? len : NESTED_BANNER_SCAN_MAX,
		      "Linux version ", 14) != NULL;
}

bool nested_image_is_linux(const uint8_t *buf, size_t len)
{
	if (len >= 0x206 && buf[0x1fe] == 0x55 && buf[0x1ff] == 0xaa && !memcmp(buf + 0x202, "HdrS", 4))
		return true;
	if (len >= SELFMAG && !memcmp(buf, ELFMAG, SELFMAG))
		return elf_is_linux(buf, len);
	return false;
}

static bool file_is_linux(const char *path)
{
	struct stat st;
	void *p;
	bool linux_image;
	/* O_NONBLOCK: a FIFO must not hang this (the loader refuses it). */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		return false;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
		close(fd);
		return false;
	}
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return false;
	linux_image = nested_image_is_linux(p, (size_t)st.st_size);
	munmap(p, (size_t)st.st_size);
	return linux_image;
}

/* ---- the command line ---- */

/* Whether @cmdline has a word with the key of @word (@n bytes): "tsc=unstable"
 * has the key of "tsc=reliable", "noxsave" that of "noxsave". */
static bool has_key(const char *cmdline, const char *word, size_t n)
{
	const char *eq = memchr(word, '=', n);
	size_t klen = eq ? (size_t)(eq - word) : n;
	const char *s = cmdline;

	while (*s) {
		const char *e;

		while (*s == ' ' || *s == '\t')
			s++;
		e = s;
		while (*e && *e != ' ' && *e != '\t')
			e++;
		if ((size_t)(e - s) >= klen && !memcmp(s, word, klen) &&
		    ((size_t)(e - s) == klen || s[klen] == '='))
			return true;
		s = e;
	}
	return false;
}

/* Whether the kernel reads every occurrence of @word's key (@n bytes) and
 * adds each one's list to the others': initcall_blacklist= is a __setup()
 * handler, called once per occurrence, appending to one list.  A user's own
 * list then does not displace vmrun's; both apply.  (clearcpuid= is not
 * such a key: the kernel reads its first occurrence only.) */
static bool key_accumulates(const char *word, size_t n)
{
	static const char key[] = "initcall_blacklist=";

	return n > sizeof(key) - 1 && !memcmp(word, key, sizeof(key) - 1);
}

int nested_cmdline_append(const char *user, char *out, size_t outlen)
{
	const char *w = NESTED_LINUX_ARGS;
	size_t used;

	if (!user)
		user = "";
	used = strlen(user);
	if (used >= outlen)
		return -E2BIG;
	memcpy(out, user, used + 1);
	while (*w) {
		size_t n = strcspn(w, " ");

		if (key_accumulates(w, n) || !has_key(user, w, n)) {
			size_t sep = used > 0 && out[used - 1] != ' ' ? 1 : 0;

			if (used + sep + n >= outlen)
				return -E2BIG;
			if (sep)
				out[used++] = ' ';
			memcpy(out + used, w, n);
			used += n;
			out[used] = '\0';
		}
		w += n;
		while (*w == ' ')
			w++;
	}
	return 0;
}

int nested_guest_cmdline(const struct vm_config *cfg, bool enabled, char *buf, size_t len,
			 char *err, size_t errlen)
{
	const char *user = cfg->cmdline ? cfg->cmdline : "";

	if (enabled && file_is_linux(cfg->kernel_path)) {
		if (nested_cmdline_append(user, buf, len))
			return errmsg(-E2BIG, err, errlen,
				      "--cmdline: no room for the %zu bytes of nested-host kernel arguments (at most %zu bytes in all); shorten it or use --no-nested-workarounds",
				      strlen(NESTED_LINUX_ARGS) + 1, len - 1);
		return 0;
	}
	if (strlen(user) >= len)
		return errmsg(-E2BIG, err, errlen, "--cmdline: longer than %zu bytes", len - 1);
	memcpy(buf, user, strlen(user) + 1);
	return 0;
}

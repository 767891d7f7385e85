/* boot_load(): from the configuration's file names to a guest ready to
 * enter: kernel segments, initrd, command line, boot tables. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmrun/boot.h"
#include "vmrun/guest_mem.h"
#include "vmrun/log.h"

/* Highest initrd end Linux accepts from a loader that knows nothing of the
 * kernel's own initrd_addr_max (boot protocol < 2.03 default). */
#define INITRD_ADDR_MAX 0x38000000ull

/* Map a whole file read-only.  Returns 0, or -errno with a message. */
static int map_file(const char *path, const char *what, const uint8_t **buf, size_t *len,
		    char *err, size_t errlen)
{
	struct stat st;
	void *p;
	int fd = open(path, O_RDONLY | O_CLOEXEC), r;

	if (fd < 0) {
		r = -errno;
		return errmsg(r, err, errlen, "%s %s: %s", what, path, strerror(-r));
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return errmsg(-EINVAL, err, errlen, "%s %s: not a regular file", what, path);
	}
	if (st.st_size == 0) {
		close(fd);
		return errmsg(-ENOEXEC, err, errlen, "%s %s: empty file", what, path);
	}
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	r = -errno;
	close(fd);
	if (p == MAP_FAILED)
		return errmsg(r, err, errlen, "%s %s: %s", what, path, strerror(-r));
	*buf = p;
	*len = (size_t)st.st_size;
	return 0;
}

/* Place the initrd at the top of low RAM, above the kernel. */
static int load_initrd(const struct guest_mem *gm, const char *path, uint64_t kernel_end,
		       struct boot_info *info, char *err, size_t errlen)
{
	const uint8_t *buf;
	size_t len;
	uint64_t top = gm->regions[0].size, gpa;
	int r = map_file(path, "--initrd", &buf, &len, err, errlen);

	if (r)
		return r;
	if (top > INITRD_ADDR_MAX)
		top = INITRD_ADDR_MAX;
	if (len > top || ((top - len) & ~0xfffull) < kernel_end) {
		munmap((void *)buf, len);
		return errmsg(-ENOSPC, err, errlen,
				 "--initrd %s: %zu bytes do not fit in guest RAM above the kernel; try a larger --mem",
				 path, len);
	}
	gpa = (top - len) & ~0xfffull;
	r = guest_mem_write(gm, gpa, buf, len);
	munmap((void *)buf, len);
	if (r)
		return errmsg(r, err, errlen, "--initrd %s: outside guest RAM", path);
	info->initrd_gpa = gpa;
	info->initrd_size = len;
	return 0;
}

int boot_load(const struct guest_mem *gm, const struct vm_config *cfg, struct boot_setup *out,
	      char *err, size_t errlen)
{
	const char *cmdline = cfg->cmdline ? cfg->cmdline : "";
	struct boot_info info = { .ram_size = gm->ram_size, .cmdline_gpa = X86_CMDLINE };
	struct elf_image img;
	const uint8_t *buf;
	char why[256];
	size_t len;
	int r;

	r = map_file(cfg->kernel_path, "--kernel", &buf, &len, err, errlen);
	if (r)
		return r;
	r = elf_parse(buf, len, &img, why, sizeof(why));
	if (!r)
		r = elf_load(&img, buf, gm, why, sizeof(why));
	munmap((void *)buf, len);
	if (r)
		return errmsg(r, err, errlen, "--kernel %s: %s", cfg->kernel_path, why);

	if (cfg->boot == BOOT_PVH && !img.has_pvh)
		return errmsg(-ENOEXEC, err, errlen,
				 "--kernel %s: --boot pvh, but the image has no PVH entry note",
				 cfg->kernel_path);

	info.cmdline_len = (uint32_t)strlen(cmdline);
	r = guest_mem_write(gm, X86_CMDLINE, cmdline, info.cmdline_len + 1);
	if (r)
		return errmsg(r, err, errlen, "cannot write the command line to guest RAM");
	if (cfg->initrd_path) {
		r = load_initrd(gm, cfg->initrd_path, img.highest, &info, err, errlen);
		if (r)
			return r;
	}
	r = x86_write_boot_tables(gm);
	if (!r) {
		uint8_t *mp = guest_mem_ptr(gm, X86_MPTABLE, 0x10000);

		r = mp ? x86_mptable_build(mp, 0x10000, X86_MPTABLE, cfg->cpus) : -EFAULT;
		r = r < 0 ? r : 0;
	}
	if (r)
		return errmsg(r, err, errlen, "cannot write the boot tables: %s", strerror(-r));

	if (cfg->boot == BOOT_PVH) {
		r = pvh_start_info_build(gm, X86_PVH_START_INFO, &info);
		out->protocol = BOOT_PVH;
		out->entry = img.pvh_entry;
		out->arg = X86_PVH_START_INFO;
	} else {
		struct boot_params *bp = guest_mem_ptr(gm, X86_BOOT_PARAMS, sizeof(*bp));

		r = bp ? boot_params_build(bp, &info) : -EFAULT;
		out->protocol = BOOT_LINUX64;
		out->entry = img.entry;
		out->arg = X86_BOOT_PARAMS;
	}
	if (r)
		return errmsg(r, err, errlen, "cannot write the boot information: %s", strerror(-r));
	return 0;
}

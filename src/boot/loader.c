/* boot_load(): from the configuration's file names to a guest ready to
 * enter: kernel (an ELF vmlinux, or a bzImage), initrd, command line, boot
 * tables. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
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

/* Map a whole file read-only.  Only a regular file: O_NONBLOCK keeps a FIFO
 * without a writer from holding open() forever, and fstat then refuses it.
 * An empty file is an error, or with @empty_ok *@buf NULL and *@len 0.
 * Returns 0, or -errno with a message. */
static int map_file(const char *path, const char *what, bool empty_ok, const uint8_t **buf,
		    size_t *len, char *err, size_t errlen)
{
	struct stat st;
	void *p;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK), r;

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
		if (!empty_ok)
			return errmsg(-ENOEXEC, err, errlen, "%s %s: empty file", what, path);
		*buf = NULL;
		*len = 0;
		return 0;
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

/* What boot_load() needs to know of the loaded kernel, whatever its format. */
struct kernel {
	uint64_t entry;          /* 64-bit entry, guest-physical */
	bool is32;               /* an ELF32 kernel: the PVH entry is its only one */
	bool has_pvh;
	uint64_t pvh_entry;
	uint64_t end;            /* end of the RAM the kernel occupies */
	uint64_t initrd_end_max; /* the initrd must end at or below this */
	bool is_bzimage;
	struct bzimage bz;       /* is_bzimage: its setup header goes into boot_params */
};

static int load_elf(const struct guest_mem *gm, const uint8_t *buf, size_t len,
		    struct kernel *k, char *why, size_t whylen)
{
	struct elf_image img;
	int r = elf_parse(buf, len, &img, why, whylen);

	if (!r)
		r = elf_load(&img, buf, gm, why, whylen);
	if (r)
		return r;
	k->entry = img.entry;
	k->is32 = img.is32;
	k->has_pvh = img.has_pvh;
	k->pvh_entry = img.pvh_entry;
	k->end = img.highest;
	return 0;
}

/* A bzImage: decompress its payload here and load the vmlinux ELF inside,
 * or (--kernel-decompress=guest) load the protected-mode kernel for its own
 * decompressor. */
static int load_bzimage(const struct guest_mem *gm, const struct vm_config *cfg,
			const uint8_t *buf, size_t len, struct kernel *k, char *why,
			size_t whylen)
{
	uint64_t max = gm->ram_size, load;
	uint8_t *vmlinux;
	size_t vmlinux_len;
	char inner[200];
	int r = bzimage_parse(buf, len, &k->bz, why, whylen);

	if (r)
		return r;
	k->is_bzimage = true;
	k->initrd_end_max = bzimage_initrd_end_max(&k->bz);
	if (cfg->kernel_decompress == KERNEL_DECOMPRESS_GUEST) {
		if (cfg->boot == BOOT_PVH)
			return errmsg(-EINVAL, why, whylen,
				      "--boot pvh needs the PVH note of the decompressed kernel: use --kernel-decompress=host");
		return bzimage_load_protected(&k->bz, buf, gm, &load, &k->entry, &k->end, why, whylen);
	}
	r = bzimage_decompress(&k->bz, buf, max, &vmlinux, &vmlinux_len, why, whylen);
	if (r)
		return r;
	r = load_elf(gm, vmlinux, vmlinux_len, k, inner, sizeof(inner));
	free(vmlinux);
	if (r)
		return errmsg(r, why, whylen, "the decompressed %s payload: %s",
			      bzimage_codec_name(k->bz.codec), inner);
	return 0;
}

/* Place the initrd at the top of low RAM, above the kernel and ending at or
 * below @end_max.  An empty one (an empty file, or gzip that inflates to
 * nothing) leaves @info without an initrd, as if there were no --initrd. */
static int load_initrd(const struct guest_mem *gm, const struct vm_config *cfg, uint64_t kernel_end,
		       uint64_t end_max, struct boot_info *info, char *err, size_t errlen)
{
	const char *path = cfg->initrd_path;
	const uint8_t *mapped, *buf;
	uint8_t *inflated = NULL;
	size_t mapped_len, len;
	uint64_t top = gm->regions[0].size, gpa;
	char why[200];
	int r = map_file(path, "--initrd", true, &mapped, &mapped_len, err, errlen);

	if (r)
		return r;
	if (!mapped_len)
		return 0; /* an empty initrd: the guest gets none */
	if (top > end_max)
		top = end_max;
	buf = mapped;
	len = mapped_len;
	if (cfg->initrd_decompress == KERNEL_DECOMPRESS_HOST && top > kernel_end) {
		r = initrd_gunzip(mapped, mapped_len, top - kernel_end, &inflated, &len, why,
				  sizeof(why));
		if (r < 0 && r != -EFBIG) {
			munmap((void *)mapped, mapped_len);
			return errmsg(r, err, errlen, "--initrd %s: %s", path, why);
		}
		if (r == 1) {
			buf = inflated;
		} else {
			/* Not gzip throughout, or too big inflated: the
			 * guest gets the file as it is. */
			if (r == -EFBIG)
				log_warn("--initrd %s: %s; handing it over compressed", path, why);
			len = mapped_len;
		}
	}
	if (!len) {
		/* Inflated to nothing (an empty archive): like an empty
		 * file, no initrd; not a zero-length one at the top of RAM. */
		munmap((void *)mapped, mapped_len);
		free(inflated);
		return 0;
	}
	if (len > top || ((top - len) & ~0xfffull) < kernel_end) {
		munmap((void *)mapped, mapped_len);
		free(inflated);
		return errmsg(-ENOSPC, err, errlen,
				 "--initrd %s: %zu bytes%s do not fit in guest RAM above the kernel; try a larger --mem",
				 path, len, inflated ? " (inflated)" : "");
	}
	gpa = (top - len) & ~0xfffull;
	r = guest_mem_write(gm, gpa, buf, len);
	munmap((void *)mapped, mapped_len);
	free(inflated);
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
	struct kernel k = { .initrd_end_max = INITRD_ADDR_MAX };
	const uint8_t *buf;
	char why[256];
	size_t len;
	int r;

	r = map_file(cfg->kernel_path, "--kernel", false, &buf, &len, err, errlen);
	if (r)
		return r;
	if (len >= SELFMAG && !memcmp(buf, ELFMAG, SELFMAG))
		r = load_elf(gm, buf, len, &k, why, sizeof(why));
	else if (bzimage_detect(buf, len))
		r = load_bzimage(gm, cfg, buf, len, &k, why, sizeof(why));
	else
		r = errmsg(-ENOEXEC, why, sizeof(why),
			   "neither an ELF kernel nor a bzImage (not an ELF file, no \"HdrS\" at 0x202)");
	munmap((void *)buf, len);
	if (r)
		return errmsg(r, err, errlen, "--kernel %s: %s", cfg->kernel_path, why);

	if (cfg->boot == BOOT_PVH && !k.has_pvh)
		return errmsg(-ENOEXEC, err, errlen,
				 "--kernel %s: --boot pvh, but the image has no PVH entry note",
				 cfg->kernel_path);
	if (k.is32 && cfg->boot == BOOT_LINUX64)
		return errmsg(-ENOEXEC, err, errlen,
				 "--kernel %s: a 32-bit ELF kernel has no 64-bit entry: use --boot pvh (or auto)",
				 cfg->kernel_path);

	info.cmdline_len = (uint32_t)strlen(cmdline);
	if (k.is_bzimage && info.cmdline_len > k.bz.hdr.cmdline_size) {
		/* Protocol 2.06+ says how much the kernel copies; it would
		 * cut the rest off itself, so say so here. */
		log_warn("--cmdline: %u bytes, but the kernel takes at most %u: truncated",
			 info.cmdline_len, k.bz.hdr.cmdline_size);
		info.cmdline_len = k.bz.hdr.cmdline_size;
	}
	r = guest_mem_write(gm, X86_CMDLINE, cmdline, info.cmdline_len);
	if (!r)
		r = guest_mem_write(gm, X86_CMDLINE + info.cmdline_len, "", 1);
	if (r)
		return errmsg(r, err, errlen, "cannot write the command line to guest RAM");
	if (cfg->initrd_path) {
		r = load_initrd(gm, cfg, k.end, k.initrd_end_max, &info, err, errlen);
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

	if (cfg->boot == BOOT_PVH || k.is32) { /* a 32-bit ELF: PVH, whatever --boot says */
		r = pvh_start_info_build(gm, X86_PVH_START_INFO, &info);
		out->protocol = BOOT_PVH;
		out->entry = k.pvh_entry;
		out->arg = X86_PVH_START_INFO;
	} else {
		struct boot_params *bp = guest_mem_ptr(gm, X86_BOOT_PARAMS, sizeof(*bp));

		if (!bp)
			r = -EFAULT;
		else if (k.is_bzimage)
			r = bzimage_boot_params(bp, &k.bz, &info);
		else
			r = boot_params_build(bp, &info);
		out->protocol = BOOT_LINUX64;
		out->entry = k.entry;
		out->arg = X86_BOOT_PARAMS;
	}
	if (r)
		return errmsg(r, err, errlen, "cannot write the boot information: %s", strerror(-r));
	return 0;
}

// SPDX-License-Identifier: MIT
/*
 * Fuzz target for the kernel loaders (src/boot/): ELF64 and ELF32/PVH
 * (elf.c), bzImage setup headers and payload decompressors, gzip, xz, lzma,
 * zstd, lz4 and bzip2 (bzimage.c), and the loader that ties them to an
 * initrd and the boot tables (loader.c, initrd.c), on a 16 MiB guest:
 * decompression bombs must stop at the guest's RAM.
 *
 * Input:
 *   u8   bits 0-1: --boot auto, linux64, pvh; bit 2: --kernel-decompress
 *        guest; bit 3: --initrd-decompress guest; bit 4: an initrd;
 *        bit 5: two vCPUs
 *   u32  length of the kernel file, the kernel, then the initrd file.
 * Both files go to the scratch directory and through boot_load() as
 * `vmrun --kernel K --initrd I` would; the parsers are then called
 * directly too (elf_parse() on the kernel, and on a bzImage,
 * bzimage_parse(), bzimage_decompress() and elf_parse() on its payload).
 * A refusal must come with its one-line message; a crash, a sanitizer
 * report, a hang or an output over the bound is a finding.
 */
#include <stdlib.h>

#include "fuzz_common.h"
#include "vmrun/boot.h"
#include "vmrun/config.h"
#include "vmrun/guest_mem.h"

#define RAM_BYTES (16u << 20)

static void direct(const uint8_t *k, size_t len)
{
	struct elf_image img;
	struct bzimage bz;
	uint8_t *out = NULL;
	size_t out_len = 0;
	char err[512] = "";

	if (elf_parse(k, len, &img, err, sizeof(err)))
		fz_check_message(err);
	if (!bzimage_detect(k, len))
		return;
	err[0] = 0;
	if (bzimage_parse(k, len, &bz, err, sizeof(err))) {
		fz_check_message(err);
		return;
	}
	(void)bzimage_codec_name(bz.codec);
	(void)bzimage_initrd_end_max(&bz);
	err[0] = 0;
	if (bzimage_decompress(&bz, k, RAM_BYTES, &out, &out_len, err, sizeof(err))) {
		fz_check_message(err);
		return;
	}
	if (out_len > RAM_BYTES)
		abort(); /* the bound did not hold */
	err[0] = 0;
	if (elf_parse(out, out_len, &img, err, sizeof(err)))
		fz_check_message(err);
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct guest_mem gm;
	static char kpath[300], ipath[300];
	struct fz f = { data, size };
	struct vm_config cfg;
	struct boot_setup setup;
	const uint8_t *k, *ird;
	size_t k_len, ird_len;
	char err[1024] = "";
	uint8_t flags;

	fz_quiet();
	if (!kpath[0]) {
		fz_scratch_path(kpath, sizeof(kpath), "kernel");
		fz_scratch_path(ipath, sizeof(ipath), "initrd");
	}
	if (!gm.mapping && guest_mem_init(&gm, RAM_BYTES))
		abort();
	flags = fz_u8(&f);
	k = fz_take(&f, fz_u32(&f), &k_len);
	ird = fz_take(&f, f.left, &ird_len);
	if (fz_write_file(kpath, k, k_len) || fz_write_file(ipath, ird, ird_len))
		abort();

	memset(&cfg, 0, sizeof(cfg));
	cfg.kernel_path = kpath;
	cfg.initrd_path = flags & 16 ? ipath : NULL;
	cfg.cmdline = "console=ttyS0 panic=-1";
	cfg.mem_size = RAM_BYTES;
	cfg.cpus = flags & 32 ? 2 : 1;
	cfg.boot = (flags & 3) == 1 ? BOOT_LINUX64 : (flags & 3) == 2 ? BOOT_PVH : BOOT_AUTO;
	cfg.kernel_decompress = flags & 4 ? KERNEL_DECOMPRESS_GUEST : KERNEL_DECOMPRESS_HOST;
	cfg.initrd_decompress = flags & 8 ? KERNEL_DECOMPRESS_GUEST : KERNEL_DECOMPRESS_HOST;
	if (boot_load(&gm, &cfg, &setup, err, sizeof(err)))
		fz_check_message(err);
	direct(k, k_len);
	return 0;
}

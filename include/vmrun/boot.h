/* Kernel loading and boot information (src/boot/).
 *
 * The parsers work on an in-memory image and guest memory only, so unit tests
 * can feed them crafted files; boot_load() is the one entry the VM builder
 * calls. */
#ifndef VMRUN_BOOT_H
#define VMRUN_BOOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmrun/config.h"
#include "vmrun/x86.h"

struct guest_mem;

/* ---- initrd ---- */

/* When @in (@in_len bytes) is gzip from start to end (one or more members,
 * zero padding allowed between and after them), inflate it into a new heap
 * buffer *@out of *@out_len bytes (the caller frees it) and return 1.
 * Return 0, with *@out NULL and *@out_len 0, for anything else (not gzip,
 * or other data after a member), which the guest then gets as it is.  Corrupt or
 * truncated gzip data is -EINVAL, more than @max bytes of output -EFBIG,
 * each with a one-line reason in @err. */
int initrd_gunzip(const uint8_t *in, size_t in_len, uint64_t max, uint8_t **out,
		  size_t *out_len, char *err, size_t errlen) __attribute__((warn_unused_result));

/* ---- ELF (ELF64 x86-64; ELF32 i386 with a PVH note) ---- */

#define ELF_MAX_LOAD_SEGMENTS 16
#define ELF_MAX_PHDRS 64
#define XEN_ELFNOTE_PHYS32_ENTRY 18

struct elf_segment {
	uint64_t paddr;  /* where it goes in guest-physical memory */
	uint64_t vaddr;
	uint64_t offset; /* in the file */
	uint64_t filesz;
	uint64_t memsz;  /* >= filesz; the rest is zeroed */
};

struct elf_image {
	bool is32;          /* an ELF32 file: only its PVH entry can be used */
	uint64_t entry;     /* guest-physical 64-bit entry (is32: the PVH entry) */
	bool has_pvh;
	uint64_t pvh_entry; /* guest-physical 32-bit entry (PVH note) */
	uint64_t lowest, highest; /* guest-physical span of the segments: [lowest, highest) */
	unsigned n_segments;
	struct elf_segment segments[ELF_MAX_LOAD_SEGMENTS];
};

/* Parse an ELF64 x86-64 executable, or an ELF32 i386 one with a PVH note
 * (without one it is refused), in @buf (@len bytes): its PT_LOAD segments
 * (an ELF32 one must end at or below 4 GiB), entry point (translated to a
 * physical address when it is a virtual one) and PVH note.  Checks
 * everything against @len: a truncated file,
 * a segment outside the file, overlapping segments or an entry outside every
 * segment is -ENOEXEC with a one-line reason in @err.  So is a file that is
 * no kernel but an ordinary program: position-independent (ET_DYN), or, with
 * no PVH note, one with an interpreter, a dynamic section, TLS or RELRO. */
int elf_parse(const uint8_t *buf, size_t len, struct elf_image *img, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Copy @img's segments from @buf into guest memory, zeroing the BSS parts.
 * Every segment must be inside RAM and at or above X86_HIGH_MEM (the boot
 * structures live below); else -ENOEXEC with a reason in @err. */
int elf_load(const struct elf_image *img, const uint8_t *buf, const struct guest_mem *gm,
	     char *err, size_t errlen) __attribute__((warn_unused_result));

/* ---- Linux boot_params ("zero page"), Documentation/arch/x86/boot.rst ---- */

struct setup_header {
	uint8_t setup_sects;
	uint16_t root_flags;
	uint32_t syssize;
	uint16_t ram_size;
	uint16_t vid_mode;
	uint16_t root_dev;
	uint16_t boot_flag;
	uint16_t jump;
	uint32_t header;
	uint16_t version;
	uint32_t realmode_swtch;
	uint16_t start_sys_seg;
	uint16_t kernel_version;
	uint8_t type_of_loader;
	uint8_t loadflags;
	uint16_t setup_move_size;
	uint32_t code32_start;
	uint32_t ramdisk_image;
	uint32_t ramdisk_size;
	uint32_t bootsect_kludge;
	uint16_t heap_end_ptr;
	uint8_t ext_loader_ver;
	uint8_t ext_loader_type;
	uint32_t cmd_line_ptr;
	uint32_t initrd_addr_max;
	uint32_t kernel_alignment;
	uint8_t relocatable_kernel;
	uint8_t min_alignment;
	uint16_t xloadflags;
	uint32_t cmdline_size;
	uint32_t hardware_subarch;
	uint64_t hardware_subarch_data;
	uint32_t payload_offset;
	uint32_t payload_length;
	uint64_t setup_data;
	uint64_t pref_address;
	uint32_t init_size;
	uint32_t handover_offset;
	uint32_t kernel_info_offset;
} __attribute__((packed));

#define BOOT_E820_MAX 128

struct boot_params {
	uint8_t pad0[0x070];
	uint64_t acpi_rsdp_addr; /* 0x070: where the RSDP is (protocol 2.14); 0: scan for it */
	uint8_t pad0b[0x0c0 - 0x078];
	uint32_t ext_ramdisk_image;
	uint32_t ext_ramdisk_size;
	uint32_t ext_cmd_line_ptr;
	uint8_t pad1[0x1e8 - 0x0cc];
	uint8_t e820_entries;
	uint8_t pad2[0x1f1 - 0x1e9];
	struct setup_header hdr;
	uint8_t pad3[0x2d0 - 0x1f1 - sizeof(struct setup_header)];
	struct e820_entry e820_table[BOOT_E820_MAX];
	uint8_t pad4[0x1000 - 0x2d0 - BOOT_E820_MAX * sizeof(struct e820_entry)];
} __attribute__((packed));

#define BOOT_HDR_MAGIC 0x53726448u /* "HdrS" */
#define BOOT_FLAG_MAGIC 0xaa55
#define BOOT_PROTOCOL_VERSION 0x020f
#define BOOT_LOADFLAG_LOADED_HIGH 0x01
#define BOOT_LOADFLAG_CAN_USE_HEAP 0x80
#define BOOT_LOADER_UNDEFINED 0xff

struct boot_info {
	uint64_t ram_size;
	uint64_t cmdline_gpa;
	uint32_t cmdline_len; /* without the NUL */
	uint64_t initrd_gpa;  /* 0 with initrd_size 0: none */
	uint64_t initrd_size;
};

/* Fill @bp (a whole zero page) for a kernel entered through the 64-bit entry:
 * header magic, loader type, command line, initrd and the e820 map.
 * Returns 0 or -ENOSPC (e820 overflow). */
int boot_params_build(struct boot_params *bp, const struct boot_info *info)
	__attribute__((warn_unused_result));

/* ---- PVH hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h) ---- */

#define HVM_START_MAGIC 0x336ec578u

struct hvm_start_info {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
	uint64_t memmap_paddr;
	uint32_t memmap_entries;
	uint32_t reserved;
} __attribute__((packed));

struct hvm_modlist_entry {
	uint64_t paddr;
	uint64_t size;
	uint64_t cmdline_paddr;
	uint64_t reserved;
} __attribute__((packed));

struct hvm_memmap_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
	uint32_t reserved;
} __attribute__((packed));

/* Lay out, at @gpa in guest memory, an hvm_start_info followed by its
 * module list (the initrd, if any) and memory map.  Returns 0 or -EFAULT. */
int pvh_start_info_build(const struct guest_mem *gm, uint64_t gpa, const struct boot_info *info)
	__attribute__((warn_unused_result));

/* ---- bzImage (Documentation/arch/x86/boot.rst) ---- */

#define BZIMAGE_HDR_OFFSET 0x1f1       /* the setup header in the file and in boot_params */
#define BZIMAGE_MIN_VERSION 0x0206     /* cmdline_size; the oldest protocol vmrun boots */
#define BZIMAGE_MAX_KERNEL (512ull << 20) /* bound on a host-decompressed kernel */
#define BZIMAGE_XLF_KERNEL_64 0x0001   /* xloadflags: 64-bit entry at load address + 0x200 */
#define BZIMAGE_ENTRY64_OFFSET 0x200

enum bzimage_codec {
	BZIMAGE_CODEC_UNKNOWN,
	BZIMAGE_CODEC_NONE, /* an uncompressed ELF payload */
	BZIMAGE_CODEC_GZIP,
	BZIMAGE_CODEC_XZ,
	BZIMAGE_CODEC_LZMA,
	BZIMAGE_CODEC_ZSTD,
	BZIMAGE_CODEC_LZ4,  /* the legacy frame format Linux uses */
	BZIMAGE_CODEC_BZIP2,
};

/* What bzimage_parse() found; offsets are into the file and all checked
 * against its length. */
struct bzimage {
	struct setup_header hdr; /* the image's header bytes; zero past hdr_len */
	size_t hdr_len;          /* bytes of header in the image, from 0x1f1 */
	uint64_t pm_offset;      /* the protected-mode kernel: (setup_sects + 1) * 512 */
	uint64_t pm_size;        /* its bytes in the file */
	bool has_payload;        /* protocol >= 2.08: payload_offset/length are valid */
	uint64_t payload_offset;
	uint64_t payload_size;
	enum bzimage_codec codec;
};

/* True when @buf (@len bytes) carries the "HdrS" setup header magic. */
bool bzimage_detect(const uint8_t *buf, size_t len);

/* Parse the setup header of the bzImage in @buf (@len bytes): protocol
 * version (at least 2.06), header length, where the protected-mode kernel and
 * (2.08+) the compressed payload lie, and the payload's compression.  A field
 * pointing past the end of the file is -ENOEXEC with a reason in @err. */
int bzimage_parse(const uint8_t *buf, size_t len, struct bzimage *bz, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* "gzip", "xz", ... for messages. */
const char *bzimage_codec_name(enum bzimage_codec codec);

/* Decompress the payload of @bz (parsed from @buf) on the host into a new
 * heap buffer *@out (*@out_len bytes, the caller frees it).  More than @max
 * bytes of output is -EFBIG; an unknown format, a corrupt or truncated stream
 * is -ENOEXEC; every error has a one-line reason in @err. */
int bzimage_decompress(const struct bzimage *bz, const uint8_t *buf, uint64_t max,
		       uint8_t **out, size_t *out_len, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* For --kernel-decompress=guest: copy the protected-mode kernel of @bz into
 * @gm at its preferred address (pref_address, else code32_start, else 1 MiB)
 * with init_size bytes of RAM from there, for the kernel's own decompressor.
 * Sets *@entry to its 64-bit entry (load address + 0x200) and *@end to the
 * end of the RAM it needs.  0, or -ENOEXEC/-ENOSPC with a reason in @err. */
int bzimage_load_protected(const struct bzimage *bz, const uint8_t *buf,
			   const struct guest_mem *gm, uint64_t *load_addr, uint64_t *entry,
			   uint64_t *end, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Highest end address (exclusive) of an initrd this kernel accepts. */
uint64_t bzimage_initrd_end_max(const struct bzimage *bz);

/* Fill @bp as boot_params_build() does, then put the image's own setup
 * header in it and set the fields a loader writes: type_of_loader, loadflags,
 * heap, command line, initrd, video mode.  @info->cmdline_len must already
 * be capped at the kernel's cmdline_size.  0 or -ENOSPC (e820 overflow). */
int bzimage_boot_params(struct boot_params *bp, const struct bzimage *bz,
			const struct boot_info *info) __attribute__((warn_unused_result));

/* ---- the loader ---- */

struct boot_setup;
/* Tell the kernel loaded by boot_load() (@bs) where the ACPI RSDP is:
 * boot_params.acpi_rsdp_addr or hvm_start_info.rsdp_paddr, whichever
 * @bs->arg points at.  0 or -EFAULT. */
int boot_set_acpi_rsdp(const struct guest_mem *gm, const struct boot_setup *bs, uint64_t rsdp)
	__attribute__((warn_unused_result));

struct boot_setup {
	enum boot_protocol protocol; /* BOOT_LINUX64 or BOOT_PVH */
	uint64_t entry;              /* guest-physical */
	uint64_t arg;                /* boot_params (RSI) or hvm_start_info (EBX) */
};

/* Load the kernel, initrd and command line of @cfg into @gm, write the boot
 * tables, and say how the boot vCPU must start.  Errors are -errno with a
 * one-line message naming the file in @err. */
int boot_load(const struct guest_mem *gm, const struct vm_config *cfg, struct boot_setup *out,
	      char *err, size_t errlen) __attribute__((warn_unused_result));

#endif

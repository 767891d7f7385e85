/* The information a kernel gets at entry: Linux boot_params or PVH
 * hvm_start_info, both describing the same memory map, command line and
 * initrd. */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "vmrun/boot.h"
#include "vmrun/guest_mem.h"

_Static_assert(sizeof(struct boot_params) == 4096, "boot_params is one page");
_Static_assert(offsetof(struct boot_params, hdr) == 0x1f1, "hdr offset");
_Static_assert(offsetof(struct boot_params, e820_table) == 0x2d0, "e820 offset");
_Static_assert(offsetof(struct boot_params, hdr.cmd_line_ptr) == 0x228, "cmd_line_ptr");
_Static_assert(offsetof(struct boot_params, hdr.kernel_info_offset) == 0x268, "hdr end");
_Static_assert(sizeof(struct hvm_start_info) == 56, "start_info size");
_Static_assert(offsetof(struct boot_params, acpi_rsdp_addr) == 0x070, "acpi_rsdp_addr");
_Static_assert(offsetof(struct boot_params, ext_ramdisk_image) == 0x0c0, "ext_ramdisk_image");

int boot_params_build(struct boot_params *bp, const struct boot_info *info)
{
	int n;

	memset(bp, 0, sizeof(*bp));
	bp->hdr.boot_flag = BOOT_FLAG_MAGIC;
	bp->hdr.header = BOOT_HDR_MAGIC;
	bp->hdr.version = BOOT_PROTOCOL_VERSION;
	bp->hdr.type_of_loader = BOOT_LOADER_UNDEFINED;
	bp->hdr.loadflags = BOOT_LOADFLAG_LOADED_HIGH | BOOT_LOADFLAG_CAN_USE_HEAP;
	bp->hdr.vid_mode = 0xffff; /* "normal" */
	bp->hdr.heap_end_ptr = 0xfe00;
	bp->hdr.cmd_line_ptr = (uint32_t)info->cmdline_gpa;
	bp->ext_cmd_line_ptr = (uint32_t)(info->cmdline_gpa >> 32);
	bp->hdr.cmdline_size = VMRUN_CMDLINE_MAX - 1;
	if (info->initrd_size) {
		bp->hdr.ramdisk_image = (uint32_t)info->initrd_gpa;
		bp->ext_ramdisk_image = (uint32_t)(info->initrd_gpa >> 32);
		bp->hdr.ramdisk_size = (uint32_t)info->initrd_size;
		bp->ext_ramdisk_size = (uint32_t)(info->initrd_size >> 32);
	}
	n = x86_e820_build(info->ram_size, bp->e820_table, BOOT_E820_MAX);
	if (n < 0)
		return n;
	bp->e820_entries = (uint8_t)n;
	return 0;
}

int pvh_start_info_build(const struct guest_mem *gm, uint64_t gpa, const struct boot_info *info)
{
	struct e820_entry e820[X86_E820_MAX];
	struct hvm_start_info si = {
		.magic = HVM_START_MAGIC,
		.version = 1,
		.cmdline_paddr = info->cmdline_gpa,
	};
	uint64_t next = gpa + sizeof(si);
	int n, r;

	if (info->initrd_size) {
		struct hvm_modlist_entry mod = { .paddr = info->initrd_gpa, .size = info->initrd_size };

		si.nr_modules = 1;
		si.modlist_paddr = next;
		r = guest_mem_write(gm, next, &mod, sizeof(mod));
		if (r)
			return r;
		next += sizeof(mod);
	}
	n = x86_e820_build(info->ram_size, e820, X86_E820_MAX);
	if (n < 0)
		return n;
	si.memmap_paddr = next;
	si.memmap_entries = (uint32_t)n;
	for (int i = 0; i < n; i++) {
		struct hvm_memmap_entry m = { e820[i].addr, e820[i].size, e820[i].type, 0 };

		r = guest_mem_write(gm, next, &m, sizeof(m));
		if (r)
			return r;
		next += sizeof(m);
	}
	return guest_mem_write(gm, gpa, &si, sizeof(si));
}

int boot_set_acpi_rsdp(const struct guest_mem *gm, const struct boot_setup *bs, uint64_t rsdp)
{
	uint64_t at = bs->arg + (bs->protocol == BOOT_PVH ?
					 offsetof(struct hvm_start_info, rsdp_paddr) :
					 offsetof(struct boot_params, acpi_rsdp_addr));

	return guest_mem_write(gm, at, &rsdp, sizeof(rsdp));
}

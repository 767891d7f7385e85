/* ELF kernel images: program headers, entry point and the PVH note.  ELF64
 * x86-64 files, and ELF32 i386 files that carry a PVH note (their only entry
 * vmrun can use: the PVH entry is 32-bit code either way).  The headers of
 * both classes are read into one form (the ELF64 structures) and checked
 * the same way.  The file is untrusted: every offset and size is checked
 * against the file length with arithmetic that cannot overflow. */
#include <elf.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "vmrun/boot.h"
#include "vmrun/guest_mem.h"
#include "vmrun/log.h"

/* True when [off, off + size) lies inside a file of @len bytes. */
static bool in_file(uint64_t off, uint64_t size, size_t len)
{
	return off <= len && size <= len - off;
}

/* Walk the notes of one PT_NOTE segment looking for Xen's PHYS32_ENTRY. */
static int elf_find_pvh_note(const uint8_t *buf, const Elf64_Phdr *ph, struct elf_image *img)
{
	uint64_t pos = ph->p_offset, end = ph->p_offset + ph->p_filesz;

	while (end - pos >= sizeof(Elf64_Nhdr)) {
		Elf64_Nhdr nh;
		uint64_t name_len, desc_len;

		memcpy(&nh, buf + pos, sizeof(nh));
		pos += sizeof(nh);
		name_len = ((uint64_t)nh.n_namesz + 3) & ~3ull;
		desc_len = ((uint64_t)nh.n_descsz + 3) & ~3ull;
		if (name_len > end - pos || desc_len > end - pos - name_len)
			return -1; /* truncated note */
		if (nh.n_type == XEN_ELFNOTE_PHYS32_ENTRY && nh.n_namesz == 4 &&
		    !memcmp(buf + pos, "Xen", 4)) {
			const uint8_t *desc = buf + pos + name_len;

			if (nh.n_descsz == 4) {
				uint32_t e;

				memcpy(&e, desc, 4);
				img->pvh_entry = e;
			} else if (nh.n_descsz == 8) {
				memcpy(&img->pvh_entry, desc, 8);
			} else {
				return -1;
			}
			img->has_pvh = true;
		}
		pos += name_len + desc_len;
	}
	return 0;
}

/* The segment that contains physical address @pa, or NULL. */
static const struct elf_segment *segment_at(const struct elf_image *img, uint64_t pa)
{
	for (unsigned i = 0; i < img->n_segments; i++) {
		const struct elf_segment *s = &img->segments[i];

		if (pa >= s->paddr && pa - s->paddr < s->memsz)
			return s;
	}
	return NULL;
}

/* What a program header of type @type says when only an ordinary (user
 * space) program has it, or NULL.  A kernel image is never linked with an
 * interpreter, dynamic section, TLS template or RELRO segment. */
static const char *elf_program_mark(uint32_t type)
{
	switch (type) {
	case PT_INTERP: return "a program interpreter, PT_INTERP";
	case PT_DYNAMIC: return "a dynamic section, PT_DYNAMIC";
	case PT_TLS: return "thread-local storage, PT_TLS";
	case PT_GNU_RELRO: return "a RELRO segment, PT_GNU_RELRO";
	default: return NULL;
	}
}

/* The ELF header of either class as an Elf64_Ehdr (the fields used here);
 * @buf holds at least the header of its class. */
static void read_ehdr(const uint8_t *buf, bool is32, Elf64_Ehdr *eh)
{
	Elf32_Ehdr e32;

	if (!is32) {
		memcpy(eh, buf, sizeof(*eh));
		return;
	}
	memcpy(&e32, buf, sizeof(e32));
	memset(eh, 0, sizeof(*eh));
	eh->e_type = e32.e_type;
	eh->e_machine = e32.e_machine;
	eh->e_entry = e32.e_entry;
	eh->e_phoff = e32.e_phoff;
	eh->e_phentsize = e32.e_phentsize;
	eh->e_phnum = e32.e_phnum;
}

/* Program header @i of the table at @phoff (inside the file: checked by the
 * caller) as an Elf64_Phdr. */
static void read_phdr(const uint8_t *buf, bool is32, uint64_t phoff, unsigned i, Elf64_Phdr *ph)
{
	Elf32_Phdr p32;

	if (!is32) {
		memcpy(ph, buf + phoff + (uint64_t)i * sizeof(*ph), sizeof(*ph));
		return;
	}
	memcpy(&p32, buf + phoff + (uint64_t)i * sizeof(p32), sizeof(p32));
	*ph = (Elf64_Phdr){ .p_type = p32.p_type, .p_flags = p32.p_flags, .p_offset = p32.p_offset,
			    .p_vaddr = p32.p_vaddr, .p_paddr = p32.p_paddr,
			    .p_filesz = p32.p_filesz, .p_memsz = p32.p_memsz,
			    .p_align = p32.p_align };
}

int elf_parse(const uint8_t *buf, size_t len, struct elf_image *img, char *err, size_t errlen)
{
	const char *program_mark = NULL;
	size_t ehdr_size, phdr_size;
	bool is32;
	Elf64_Ehdr eh;

	memset(img, 0, sizeof(*img));
	if (len < EI_NIDENT || memcmp(buf, ELFMAG, SELFMAG))
		return errmsg(-ENOEXEC, err, errlen, "not an ELF file");
	if (buf[EI_CLASS] != ELFCLASS64 && buf[EI_CLASS] != ELFCLASS32)
		return errmsg(-ENOEXEC, err, errlen, "not a 32- or 64-bit ELF file (class %u)",
			      buf[EI_CLASS]);
	is32 = buf[EI_CLASS] == ELFCLASS32;
	ehdr_size = is32 ? sizeof(Elf32_Ehdr) : sizeof(Elf64_Ehdr);
	phdr_size = is32 ? sizeof(Elf32_Phdr) : sizeof(Elf64_Phdr);
	if (len < ehdr_size)
		return errmsg(-ENOEXEC, err, errlen, "truncated ELF header");
	read_ehdr(buf, is32, &eh);
	if (buf[EI_DATA] != ELFDATA2LSB || eh.e_machine != (is32 ? EM_386 : EM_X86_64))
		return errmsg(-ENOEXEC, err, errlen, is32 ? "a 32-bit ELF file, but not for i386" :
							     "not an x86-64 ELF file");
	if (eh.e_type == ET_DYN)
		return errmsg(-ENOEXEC, err, errlen,
			      "not a kernel: a position-independent program or shared library (ELF type DYN); want a vmlinux, a PVH kernel or a bzImage");
	if (eh.e_type != ET_EXEC)
		return errmsg(-ENOEXEC, err, errlen, "not an ELF executable (type %u)", eh.e_type);
	if (eh.e_phentsize != phdr_size || eh.e_phnum == 0 || eh.e_phnum > ELF_MAX_PHDRS)
		return errmsg(-ENOEXEC, err, errlen, "bad program header table (%u entries of %u bytes)",
				eh.e_phnum, eh.e_phentsize);
	if (!in_file(eh.e_phoff, (uint64_t)eh.e_phnum * phdr_size, len))
		return errmsg(-ENOEXEC, err, errlen, "truncated: program headers past the end of the file");
	img->is32 = is32;

	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		struct elf_segment *s;

		read_phdr(buf, is32, eh.e_phoff, i, &ph);
		if (!program_mark)
			program_mark = elf_program_mark(ph.p_type);
		if (ph.p_type == PT_NOTE) {
			if (!in_file(ph.p_offset, ph.p_filesz, len))
				return errmsg(-ENOEXEC, err, errlen, "truncated: note segment past the end of the file");
			if (elf_find_pvh_note(buf, &ph, img))
				return errmsg(-ENOEXEC, err, errlen, "malformed note in segment %u", i);
			continue;
		}
		if (ph.p_type != PT_LOAD)
			continue;
		if (ph.p_filesz > ph.p_memsz)
			return errmsg(-ENOEXEC, err, errlen, "segment %u: file size larger than memory size", i);
		if (ph.p_memsz == 0)
			continue;
		if (!in_file(ph.p_offset, ph.p_filesz, len))
			return errmsg(-ENOEXEC, err, errlen,
					"truncated: segment %u (offset 0x%llx, 0x%llx bytes) is past the end of the file",
					i, (unsigned long long)ph.p_offset, (unsigned long long)ph.p_filesz);
		if (ph.p_paddr + ph.p_memsz < ph.p_paddr)
			return errmsg(-ENOEXEC, err, errlen, "segment %u wraps around the address space", i);
		if (is32 && ph.p_paddr + ph.p_memsz > 0x100000000ull)
			return errmsg(-ENOEXEC, err, errlen, "segment %u of a 32-bit ELF file ends past 4 GiB", i);
		if (img->n_segments == ELF_MAX_LOAD_SEGMENTS)
			return errmsg(-ENOEXEC, err, errlen, "more than %d loadable segments", ELF_MAX_LOAD_SEGMENTS);
		for (unsigned j = 0; j < img->n_segments; j++) {
			const struct elf_segment *o = &img->segments[j];

			if (ph.p_paddr < o->paddr + o->memsz && o->paddr < ph.p_paddr + ph.p_memsz)
				return errmsg(-ENOEXEC, err, errlen,
						"segments overlap at physical 0x%llx",
						(unsigned long long)(ph.p_paddr > o->paddr ? ph.p_paddr : o->paddr));
		}
		s = &img->segments[img->n_segments++];
		*s = (struct elf_segment){ ph.p_paddr, ph.p_vaddr, ph.p_offset, ph.p_filesz, ph.p_memsz };
		if (img->n_segments == 1 || s->paddr < img->lowest)
			img->lowest = s->paddr;
		if (s->paddr + s->memsz > img->highest)
			img->highest = s->paddr + s->memsz;
	}
	if (!img->n_segments)
		return errmsg(-ENOEXEC, err, errlen, "no loadable segments");
	if (is32 && !img->has_pvh)
		return errmsg(-ENOEXEC, err, errlen,
			      "a 32-bit ELF file without a PVH note (Xen ELF note %d, PHYS32_ENTRY): vmrun enters a 32-bit kernel only through its PVH entry; want a 64-bit vmlinux, a PVH kernel or a bzImage",
			      XEN_ELFNOTE_PHYS32_ENTRY);
	/* A PVH note says "kernel"; without one, what only an ordinary
	 * program has says the opposite, before it dies in the guest. */
	if (program_mark && !img->has_pvh)
		return errmsg(-ENOEXEC, err, errlen,
			      "not a kernel: an ordinary program (it has %s) with no PVH note; want a vmlinux, a PVH kernel or a bzImage",
			      program_mark);

	/* e_entry is physical for Linux's vmlinux; a virtual one is translated
	 * through the segment whose virtual range holds it.  A 32-bit file has
	 * no 64-bit entry: only its PVH entry (checked below) is used. */
	img->entry = is32 ? img->pvh_entry : eh.e_entry;
	if (!is32 && !segment_at(img, img->entry)) {
		bool found = false;

		for (unsigned i = 0; i < img->n_segments; i++) {
			const struct elf_segment *s = &img->segments[i];

			if (eh.e_entry >= s->vaddr && eh.e_entry - s->vaddr < s->memsz) {
				img->entry = s->paddr + (eh.e_entry - s->vaddr);
				found = true;
				break;
			}
		}
		if (!found)
			return errmsg(-ENOEXEC, err, errlen, "entry point 0x%llx is outside every segment",
					(unsigned long long)eh.e_entry);
	}
	if (img->has_pvh && (img->pvh_entry > 0xffffffffull || !segment_at(img, img->pvh_entry)))
		return errmsg(-ENOEXEC, err, errlen, "PVH entry 0x%llx is outside every segment",
				(unsigned long long)img->pvh_entry);
	return 0;
}

int elf_load(const struct elf_image *img, const uint8_t *buf, const struct guest_mem *gm,
	     char *err, size_t errlen)
{
	for (unsigned i = 0; i < img->n_segments; i++) {
		const struct elf_segment *s = &img->segments[i];
		uint8_t *dst;

		if (s->paddr < X86_HIGH_MEM)
			return errmsg(-ENOEXEC, err, errlen,
					"segment at 0x%llx is below 1 MiB, where the boot structures live",
					(unsigned long long)s->paddr);
		dst = guest_mem_ptr(gm, s->paddr, s->memsz);
		if (!dst)
			return errmsg(-ENOEXEC, err, errlen,
					"segment 0x%llx-0x%llx is outside guest RAM (%llu MiB); try a larger --mem",
					(unsigned long long)s->paddr,
					(unsigned long long)(s->paddr + s->memsz),
					(unsigned long long)(gm->ram_size >> 20));
		memcpy(dst, buf + s->offset, s->filesz);
		memset(dst + s->filesz, 0, s->memsz - s->filesz);
	}
	return 0;
}

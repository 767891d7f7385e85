/* startup_floor: the least a VMM has to do to run a test guest to its exit,
 * for bench/startup.py to compare vmrun against.
 *
 * One VM, one 256 MiB MAP_NORESERVE memory slot (vmrun's default size), the
 * guest ELF's PT_LOAD segments, a boot GDT, identity page tables over the
 * first 1 GiB, an empty boot_params page, one vCPU entered in 64-bit long
 * mode at e_entry with RSI = boot_params, then KVM_RUN until the guest writes
 * to the debug-exit port.  No irqchip, no CPUID table, no threads, no event
 * loop, no error recovery: a floor, not a VMM.
 *
 * Port I/O: OUT 0xf4 ends the run with status (value << 1) | 1, like vmrun's
 * debug-exit device; OUT 0x3f8 goes to stdout; IN 0x3fd (UART LSR) reads
 * 0x60 (transmitter empty); every other IN reads 0xff, every other OUT is
 * dropped.
 *
 * Usage: startup_floor GUEST.elf */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GUEST_RAM (256ull << 20)

/* Guest-physical layout, all in low memory below the guest's 1 MiB. */
#define TSS_ADDR    0xfffbd000ull /* KVM_SET_TSS_ADDR: three pages, outside RAM */
#define GDT_ADDR    0x1000ull
#define BOOT_PARAMS 0x7000ull
#define PML4_ADDR   0x9000ull
#define PDPT_ADDR   0xa000ull
#define PD_ADDR     0xb000ull
#define CMDLINE     0x20000ull
#define BP_CMD_LINE_PTR 0x228 /* u32 in struct boot_params */

#define SEL_CODE64 0x10
#define SEL_DATA   0x18

#define CR0_PE (1ull << 0)
#define CR0_ET (1ull << 4)
#define CR0_NE (1ull << 5)
#define CR0_PG (1ull << 31)
#define CR4_PAE (1ull << 5)
#define EFER_LME (1ull << 8)
#define EFER_LMA (1ull << 10)

#define PTE_PRESENT  0x1ull
#define PTE_WRITE    0x2ull
#define PTE_HUGE     0x80ull

#define PORT_DEBUG_EXIT 0xf4
#define PORT_COM1_THR   0x3f8
#define PORT_COM1_LSR   0x3fd
#define LSR_TX_EMPTY    0x60 /* THRE | TEMT */

/* Exit statuses of the floor itself; a guest exit is always odd. */
#define FLOOR_EXIT_SETUP 2
#define FLOOR_EXIT_GUEST 4

static const char *prog = "startup_floor";

static void __attribute__((noreturn, format(printf, 1, 2))) fail(const char *fmt, ...);

static void fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(FLOOR_EXIT_SETUP);
}

/* ioctl() that dies with @what on failure. */
static int xioctl(int fd, unsigned long req, void *arg, const char *what)
{
	int r = ioctl(fd, req, arg);

	if (r < 0)
		fail("%s: %s", what, strerror(errno));
	return r;
}

/* pread() exactly @len bytes at @off, or die. */
static void read_exact(int fd, void *buf, size_t len, uint64_t off, const char *path)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			fail("%s: short read", path);
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
}

/* Copy the PT_LOAD segments of the ELF at @path into @ram straight from the
 * file (BSS is already zero: the mapping is fresh).  Returns e_entry. */
static uint64_t load_elf(const char *path, uint8_t *ram)
{
	Elf64_Ehdr eh;
	struct stat st;
	uint64_t fsize;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0)
		fail("%s: %s", path, strerror(errno));
	fsize = (uint64_t)st.st_size;
	if (fsize < sizeof(eh))
		fail("%s: too short for an ELF header", path);
	read_exact(fd, &eh, sizeof(eh), 0, path);
	if (memcmp(eh.e_ident, ELFMAG, SELFMAG) || eh.e_ident[EI_CLASS] != ELFCLASS64)
		fail("%s: not an ELF64 file", path);
	if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phoff > fsize ||
	    (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr) > fsize - eh.e_phoff)
		fail("%s: program headers out of bounds", path);

	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;

		read_exact(fd, &ph, sizeof(ph), eh.e_phoff + i * sizeof(ph), path);
		if (ph.p_type != PT_LOAD)
			continue;
		if (ph.p_filesz > ph.p_memsz || ph.p_offset > fsize ||
		    ph.p_filesz > fsize - ph.p_offset || ph.p_paddr > GUEST_RAM ||
		    ph.p_memsz > GUEST_RAM - ph.p_paddr)
			fail("%s: segment %u out of bounds", path, i);
		if (ph.p_filesz)
			read_exact(fd, ram + ph.p_paddr, ph.p_filesz, ph.p_offset, path);
	}
	close(fd);
	return eh.e_entry;
}

/* GDT, identity page tables (1 GiB in 2 MiB pages), boot_params with an
 * empty command line. */
static void write_boot_tables(uint8_t *ram)
{
	const uint64_t gdt[4] = {
		0, 0,
		0x00af9b000000ffffull, /* 0x10: code, 64-bit, DPL0 */
		0x00cf93000000ffffull, /* 0x18: data, flat 4 GiB, DPL0 */
	};
	uint64_t *pml4 = (uint64_t *)(ram + PML4_ADDR);
	uint64_t *pdpt = (uint64_t *)(ram + PDPT_ADDR);
	uint64_t *pd = (uint64_t *)(ram + PD_ADDR);
	uint32_t cmdline = CMDLINE;

	memcpy(ram + GDT_ADDR, gdt, sizeof(gdt));
	pml4[0] = PDPT_ADDR | PTE_PRESENT | PTE_WRITE;
	pdpt[0] = PD_ADDR | PTE_PRESENT | PTE_WRITE;
	for (uint64_t i = 0; i < 512; i++)
		pd[i] = (i << 21) | PTE_PRESENT | PTE_WRITE | PTE_HUGE;
	/* ram is fresh: boot_params and the command line are already zero. */
	memcpy(ram + BOOT_PARAMS + BP_CMD_LINE_PTR, &cmdline, sizeof(cmdline));
}

static struct kvm_segment flat_segment(uint16_t selector, uint8_t type, int code64)
{
	return (struct kvm_segment){
		.base = 0, .limit = 0xffffffff, .selector = selector, .type = type,
		.present = 1, .s = 1, .g = 1, .l = (uint8_t)code64, .db = (uint8_t)!code64,
	};
}

static void setup_vcpu(int vcpu, uint64_t entry)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	xioctl(vcpu, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
	sregs.cs = flat_segment(SEL_CODE64, 0xb, 1);
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = flat_segment(SEL_DATA, 0x3, 0);
	sregs.gdt.base = GDT_ADDR;
	sregs.gdt.limit = 4 * 8 - 1;
	sregs.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_PG;
	sregs.cr3 = PML4_ADDR;
	sregs.cr4 = CR4_PAE;
	sregs.efer = EFER_LME | EFER_LMA;
	xioctl(vcpu, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");

	memset(&regs, 0, sizeof(regs));
	regs.rflags = 0x2;
	regs.rip = entry;
	regs.rsi = BOOT_PARAMS;
	xioctl(vcpu, KVM_SET_REGS, &regs, "KVM_SET_REGS");
}

/* Handle one KVM_EXIT_IO.  Returns -1 to keep running, or the exit status. */
static int handle_io(struct kvm_run *run)
{
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	uint32_t value = 0;

	if (run->io.direction == KVM_EXIT_IO_IN) {
		memset(data, run->io.port == PORT_COM1_LSR ? LSR_TX_EMPTY : 0xff,
		       (size_t)run->io.size * run->io.count);
		return -1;
	}
	if (run->io.port == PORT_DEBUG_EXIT) {
		memcpy(&value, data, run->io.size < sizeof(value) ? run->io.size : sizeof(value));
		return (int)((value << 1) | 1);
	}
	if (run->io.port == PORT_COM1_THR)
		fwrite(data, run->io.size, run->io.count, stdout);
	return -1;
}

int main(int argc, char *argv[])
{
	struct kvm_userspace_memory_region slot;
	struct kvm_run *run;
	uint8_t *ram;
	uint64_t entry;
	int kvm, vm, vcpu, run_size, status = -1;

	if (argc != 2) {
		fprintf(stderr, "usage: %s GUEST.elf\n", prog);
		return FLOOR_EXIT_SETUP;
	}

	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		fail("/dev/kvm: %s", strerror(errno));
	vm = xioctl(kvm, KVM_CREATE_VM, 0, "KVM_CREATE_VM");
	xioctl(vm, KVM_SET_TSS_ADDR, (void *)(uintptr_t)TSS_ADDR, "KVM_SET_TSS_ADDR");

	ram = mmap(NULL, GUEST_RAM, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (ram == MAP_FAILED)
		fail("mmap guest RAM: %s", strerror(errno));
	slot = (struct kvm_userspace_memory_region){
		.slot = 0, .guest_phys_addr = 0, .memory_size = GUEST_RAM,
		.userspace_addr = (uintptr_t)ram,
	};
	xioctl(vm, KVM_SET_USER_MEMORY_REGION, &slot, "KVM_SET_USER_MEMORY_REGION");

	entry = load_elf(argv[1], ram);
	write_boot_tables(ram);

	vcpu = xioctl(vm, KVM_CREATE_VCPU, 0, "KVM_CREATE_VCPU");
	run_size = xioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, NULL, "KVM_GET_VCPU_MMAP_SIZE");
	run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		fail("mmap kvm_run: %s", strerror(errno));
	setup_vcpu(vcpu, entry);

	while (status < 0) {
		if (ioctl(vcpu, KVM_RUN, NULL) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			fail("KVM_RUN: %s", strerror(errno));
		}
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			status = handle_io(run);
			break;
		case KVM_EXIT_MMIO:
			if (!run->mmio.is_write)
				memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
			break;
		default:
			fflush(stdout);
			fprintf(stderr, "%s: guest stopped: KVM exit reason %u\n", prog,
				run->exit_reason);
			return FLOOR_EXIT_GUEST;
		}
	}
	/* stdout is fully buffered when it is a pipe: one write at the end. */
	fflush(stdout);
	return status;
}

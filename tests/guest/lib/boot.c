/* What runs between lib/entry.S and guest_main(): remember how the guest was
 * entered, keep a copy of the command line, install the IDT; plus the exit
 * path and the TSS, which belong to the same CPU set-up. */
#include "kit.h"

#define CMDLINE_MAX 1024
#define FOUR_GIB (1ull << 32)

static const char *entry_kind = "unknown";
/* A copy, because the loader's page may sit where a guest puts its own data
 * (the smp guest's AP trampoline, for one). */
static char cmdline[CMDLINE_MAX];

/* The 64-bit TSS layout (Intel SDM vol. 3, 8.7); only RSP0 matters here. */
struct tss64 {
	uint32_t reserved0;
	uint64_t rsp[3];
	uint64_t reserved1;
	uint64_t ist[7];
	uint64_t reserved2;
	uint16_t reserved3;
	uint16_t iomap_base;
} __attribute__((packed));

_Static_assert(sizeof(struct tss64) == 104, "64-bit TSS is 104 bytes");

static struct tss64 tss;
extern uint64_t gdt[];

noreturn void guest_boot(unsigned kind, uint64_t cmdline_pa)
{
	entry_kind = kind == KIND_PVH ? "pvh" : kind == KIND_LINUX64 ? "linux64" : "unknown";
	if (cmdline_pa && cmdline_pa < FOUR_GIB) {
		const char *src = phys_ptr(cmdline_pa);

		for (size_t i = 0; i < CMDLINE_MAX - 1 && src[i]; i++)
			cmdline[i] = src[i];
	}
	idt_init();
	guest_exit((unsigned)guest_main());
}

const char *guest_entry_kind(void)
{
	return entry_kind;
}

const char *guest_cmdline(void)
{
	return cmdline;
}

noreturn void cpu_park(void)
{
	for (;;)
		__asm__ volatile("cli; hlt" ::: "memory");
}

noreturn void guest_exit(unsigned code)
{
	outl(DEBUG_EXIT_PORT, code);
	/* Only reached without a debug-exit device.  HLT would #GP at CPL 3. */
	if (cpu_cpl() == 3)
		for (;;)
			cpu_pause();
	cpu_park();
}

void tss_load(uint64_t rsp0)
{
	uint64_t base = (uint64_t)&tss, limit = sizeof(tss) - 1;

	tss.rsp[0] = rsp0;
	/* No I/O bitmap: an offset past the limit.  Ring-3 port access then
	 * depends on RFLAGS.IOPL alone. */
	tss.iomap_base = sizeof(tss);
	/* System descriptor: type 9 (available 64-bit TSS), present, DPL 0. */
	gdt[SEL_TSS / 8] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ull << 40) |
			   ((limit >> 16 & 0xf) << 48) | ((base >> 24 & 0xff) << 56);
	gdt[SEL_TSS / 8 + 1] = base >> 32;
	__asm__ volatile("ltr %w0" : : "r"((uint16_t)SEL_TSS) : "memory");
}

/* The test-guest kit: what every freestanding vmrun test guest links.
 *
 * A guest defines guest_main(); lib/entry.S boots it from either the Linux
 * x86-64 boot protocol (ELF e_entry) or the PVH note, on the guest's own GDT,
 * identity page tables (4 GiB, 2 MiB pages, user-accessible) and stack, with
 * an IDT whose exception handlers print the fault and exit with
 * GUEST_EXIT_EXCEPTION.  Guest kernel code runs interpreted on the
 * development machines (about 4 M instructions/s), so everything here is
 * deliberately small and does no work it does not have to.
 */
#ifndef VMRUN_TEST_GUEST_H
#define VMRUN_TEST_GUEST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdnoreturn.h>

/* ---- Selectors of the guest's own GDT (lib/entry.S) ---- */
#define SEL_KCODE64 0x08
#define SEL_KDATA   0x10
#define SEL_KCODE32 0x18
#define SEL_UDATA   0x23 /* 0x20 | RPL 3 */
#define SEL_UCODE64 0x2b /* 0x28 | RPL 3 */
#define SEL_TSS     0x30

/* ---- Fixed platform addresses (same under vmrun and QEMU microvm) ---- */
#define COM1_PORT        0x3f8
#define DEBUG_EXIT_PORT  0xf4
#define LAPIC_BASE       0xfee00000ul
#define IOAPIC_BASE      0xfec00000ul

/* 16550 registers, offsets from COM1_PORT. */
#define UART_RBR 0 /* read: receive buffer */
#define UART_THR 0 /* write: transmit holding */
#define UART_IER 1
#define UART_IIR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_LSR_DR   0x01 /* a received byte waits in RBR */
#define UART_LSR_THRE 0x20 /* THR can take a byte */
#define UART_IER_RDI  0x01 /* interrupt on received data */
#define UART_MCR_DTR  0x01
#define UART_MCR_RTS  0x02
#define UART_MCR_OUT2 0x08 /* gates the UART's interrupt line on PCs */

/* Exit codes the kit itself uses (see README.md). */
#define GUEST_EXIT_EXCEPTION     0x7e /* unexpected exception or interrupt */

/* ---- Port I/O ---- */

/* Read one byte from I/O port @port. */
static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

/* Read one 16-bit word from I/O port @port. */
static inline uint16_t inw(uint16_t port)
{
	uint16_t v;
	__asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

/* Read one 32-bit word from I/O port @port. */
static inline uint32_t inl(uint16_t port)
{
	uint32_t v;
	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

/* Write byte @v to I/O port @port. */
static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

/* Write 16-bit word @v to I/O port @port. */
static inline void outw(uint16_t port, uint16_t v)
{
	__asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}

/* Write 32-bit word @v to I/O port @port. */
static inline void outl(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

/* ---- Memory-mapped I/O: one access of exactly the named width ---- */

/* Pointer to guest-physical address @pa (identity mapped).  The empty asm
 * hides the constant from GCC, which otherwise warns about (and may
 * mis-optimise) dereferencing fixed low addresses. */
static inline void *phys_ptr(uintptr_t pa)
{
	__asm__("" : "+r"(pa));
	return (void *)pa;
}

/* Load 1 byte from MMIO address @pa. */
static inline uint8_t mmio_read8(uintptr_t pa)
{
	uint8_t v;
	__asm__ volatile("movb (%1), %0" : "=q"(v) : "r"(pa) : "memory");
	return v;
}

/* Load 2 bytes from MMIO address @pa. */
static inline uint16_t mmio_read16(uintptr_t pa)
{
	uint16_t v;
	__asm__ volatile("movw (%1), %0" : "=r"(v) : "r"(pa) : "memory");
	return v;
}

/* Load 4 bytes from MMIO address @pa. */
static inline uint32_t mmio_read32(uintptr_t pa)
{
	uint32_t v;
	__asm__ volatile("movl (%1), %0" : "=r"(v) : "r"(pa) : "memory");
	return v;
}

/* Load 8 bytes from MMIO address @pa. */
static inline uint64_t mmio_read64(uintptr_t pa)
{
	uint64_t v;
	__asm__ volatile("movq (%1), %0" : "=r"(v) : "r"(pa) : "memory");
	return v;
}

/* Store 1 byte @v at MMIO address @pa. */
static inline void mmio_write8(uintptr_t pa, uint8_t v)
{
	__asm__ volatile("movb %0, (%1)" : : "q"(v), "r"(pa) : "memory");
}

/* Store 2 bytes @v at MMIO address @pa. */
static inline void mmio_write16(uintptr_t pa, uint16_t v)
{
	__asm__ volatile("movw %0, (%1)" : : "r"(v), "r"(pa) : "memory");
}

/* Store 4 bytes @v at MMIO address @pa. */
static inline void mmio_write32(uintptr_t pa, uint32_t v)
{
	__asm__ volatile("movl %0, (%1)" : : "r"(v), "r"(pa) : "memory");
}

/* Store 8 bytes @v at MMIO address @pa. */
static inline void mmio_write64(uintptr_t pa, uint64_t v)
{
	__asm__ volatile("movq %0, (%1)" : : "r"(v), "r"(pa) : "memory");
}

/* ---- CPU ---- */

/* Disable maskable interrupts. */
static inline void cpu_cli(void)
{
	__asm__ volatile("cli" ::: "memory");
}

/* Enable maskable interrupts. */
static inline void cpu_sti(void)
{
	__asm__ volatile("sti" ::: "memory");
}

/* Enable interrupts and halt until one arrives; the STI shadow makes the
 * pair atomic, so an interrupt pending at the STI still wakes the HLT. */
static inline void cpu_sti_hlt(void)
{
	__asm__ volatile("sti; hlt" ::: "memory");
}

/* Spin-wait hint. */
static inline void cpu_pause(void)
{
	__asm__ volatile("pause" ::: "memory");
}

/* The current privilege level (CS.RPL). */
static inline unsigned cpu_cpl(void)
{
	uint16_t cs;
	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	return cs & 3;
}

/* Halt this CPU for good with interrupts off (CPL 0 only). */
noreturn void cpu_park(void);

/* Fill the GDT's TSS descriptor with a TSS whose RSP0 is @rsp0 (the stack
 * ring-3 interrupts and exceptions switch to) and load it (LTR).  Call once,
 * on one CPU: the descriptor becomes busy. */
void tss_load(uint64_t rsp0);

/* ---- Serial console (COM1) ---- */

/* A test-and-set spinlock (XCHG); zero-initialised means unlocked. */
struct spinlock {
	volatile uint32_t locked;
};

/* Take @l, spinning with PAUSE while another CPU holds it. */
void spin_lock(struct spinlock *l);

/* Release @l, which the caller holds. */
void spin_unlock(struct spinlock *l);

/* Print @fmt to COM1 under the console lock; returns the characters
 * written.  Understands %s %c %d %i %u %x %p %% with an optional 0 flag,
 * a width and the l, ll and z length modifiers (%lx, %llx, %016lx, ...).
 * Never call it from an interrupt handler that may interrupt a print. */
int gprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* gprintf() with a va_list. */
int vgprintf(const char *fmt, va_list ap);

/* ---- Boot information ---- */

/* The guest's entry point, called once on the boot CPU after the kit's set-up;
 * its return value goes to guest_exit(). */
int guest_main(void);

/* "linux64" or "pvh": the entry the loader used. */
const char *guest_entry_kind(void);

/* The kernel command line the loader passed (a copy; "" if none). */
const char *guest_cmdline(void);

/* Copy the value of the first command-line word "@key=value" into @buf
 * (@len bytes, always NUL-terminated, truncated if needed).  Returns false,
 * leaving @buf untouched, when there is no such word. */
bool cmdline_get(const char *key, char *buf, size_t len);

/* The value of "@key=N" as a number (decimal, or hex with 0x; a leading '-'
 * negates), or @dflt when the word is absent or not a number. */
long cmdline_get_int(const char *key, long dflt);

/* Write @code to the debug-exit port (vmrun and QEMU isa-debug-exit then end
 * with status (code << 1) | 1), then stop this CPU for good: CLI; HLT at
 * CPL 0, a PAUSE loop at CPL 3 where HLT would fault. */
noreturn void guest_exit(unsigned code);

/* ---- Interrupts ---- */

#define IDT_VECTORS 48 /* exceptions 0-31 and vectors 0x20-0x2f */

/* The interrupted context as lib/isr.S saves it (caller-saved registers,
 * then the vector, error code and the CPU's interrupt frame). */
struct isr_frame {
	uint64_t r11, r10, r9, r8, rdi, rsi, rdx, rcx, rax;
	uint64_t vector, error;
	uint64_t rip, cs, rflags, rsp, ss;
};

/* An interrupt handler: runs at CPL 0 with interrupts disabled. */
typedef void (*isr_handler_t)(struct isr_frame *frame);

/* Route vector @vec (< IDT_VECTORS) to @fn; NULL restores the default, which
 * prints "guest: unexpected vector ..." and exits with GUEST_EXIT_EXCEPTION. */
void idt_set_handler(unsigned vec, isr_handler_t fn);

/* Report @frame as "guest: unexpected vector ..." and exit with
 * GUEST_EXIT_EXCEPTION: what the default handler does, for a handler that
 * finds it cannot deal with an event after all. */
noreturn void isr_unexpected(struct isr_frame *frame);

/* Load the kit's IDT on this CPU (the boot CPU's is loaded at start-up;
 * other CPUs call this themselves). */
void idt_load(void);

/* ---- Local APIC (xAPIC, MMIO) and IOAPIC ---- */

#define LAPIC_ID    0x020
#define LAPIC_EOI   0x0b0
#define LAPIC_SVR   0x0f0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define LAPIC_SVR_ENABLE 0x100
#define ICR_INIT     0x00000500u
#define ICR_STARTUP  0x00000600u
#define ICR_ASSERT   0x00004000u
#define ICR_BUSY     0x00001000u /* delivery status: send pending */
#define ICR_ALL_BUT_SELF 0x000c0000u /* destination shorthand */

/* Read local APIC register @reg (byte offset). */
static inline uint32_t lapic_read(uint32_t reg)
{
	return mmio_read32(LAPIC_BASE + reg);
}

/* Write @v to local APIC register @reg (byte offset). */
static inline void lapic_write(uint32_t reg, uint32_t v)
{
	mmio_write32(LAPIC_BASE + reg, v);
}

/* This CPU's APIC ID. */
static inline unsigned lapic_id(void)
{
	return lapic_read(LAPIC_ID) >> 24;
}

/* Signal end of interrupt to this CPU's local APIC. */
static inline void lapic_eoi(void)
{
	lapic_write(LAPIC_EOI, 0);
}

/* Software-enable this CPU's local APIC with spurious vector @spurious
 * (low nibble 0xf, for old APICs that hard-wire it). */
void lapic_enable(uint8_t spurious);

/* Send the IPI @icr_lo (delivery mode, level, vector) to the CPU with APIC ID
 * @dest (physical destination), after waiting for the previous one to leave. */
void lapic_send_ipi(unsigned dest, uint32_t icr_lo);

/* Read IOAPIC register @reg through the index/data window. */
uint32_t ioapic_read(uint32_t reg);

/* Write @v to IOAPIC register @reg through the index/data window. */
void ioapic_write(uint32_t reg, uint32_t v);

/* Route IOAPIC input @pin to @vector on APIC ID @dest: fixed delivery,
 * physical destination, edge triggered, active high, unmasked. */
void ioapic_route(unsigned pin, uint8_t vector, unsigned dest);

/* ---- Application processors (lib/smp.c, lib/smp_tramp.S) ---- */

/* Where ap_tramp_install() puts the AP trampoline (at most 256 bytes); the
 * start-up IPIs carry vector AP_TRAMP_BASE >> 12. */
#define AP_TRAMP_BASE 0x8000

/* Copy the AP trampoline to physical AP_TRAMP_BASE (overwriting what was
 * there) and fill its parameter block, before any ap_start*() (boot CPU,
 * CPL 0).  A started AP goes real -> protected -> long mode on this CPU's GDT
 * and page tables (CR3), interrupts off, no IDT loaded (call idt_load()
 * first thing), and calls @entry, which must never return.  APs take stack
 * slots in arrival order: the i-th (from 0) runs on [@stacks + i *
 * @stack_size, @stacks + (i + 1) * @stack_size) from its top (16-byte align
 * @stacks and @stack_size); APs past @nstacks stop in CLI; HLT without
 * calling @entry.  Call it again only when no AP is still starting. */
void ap_tramp_install(void *stacks, unsigned nstacks, uint32_t stack_size, void (*entry)(void));

/* Start the CPU with APIC ID @apic_id: INIT, then two start-up IPIs into the
 * trampoline, with a short pause (2000 PAUSEs) after INIT and after the first
 * SIPI.  Returns once the IPIs are sent: wait for the AP to show up yourself,
 * with no timeout of your own if the host bounds the run. */
void ap_start(unsigned apic_id);

/* ap_start() for every CPU but this one at once (destination shorthand "all
 * excluding self"): for guests that do not need the APIC IDs. */
void ap_start_all(void);

/* ---- Ring 3 (lib/user.c) ---- */

/* Enter ring 3 at @rip with RSP = @rsp and RFLAGS = @rflags (include bit 1,
 * 0x2), through IRETQ with CS SEL_UCODE64 and SS SEL_UDATA.  Call at CPL 0
 * after tss_load(), so that interrupts and exceptions in ring 3 have a stack
 * to switch to; the kit's page tables are user-accessible.  Never returns:
 * the code at @rip ends with guest_exit(). */
static inline noreturn void user_iret(uint64_t rip, uint64_t rsp, uint64_t rflags)
{
	__asm__ volatile("pushq %[ss]\n\t"
			 "pushq %[sp]\n\t"
			 "pushq %[fl]\n\t"
			 "pushq %[cs]\n\t"
			 "pushq %[ip]\n\t"
			 "iretq"
			 :
			 : [ss] "i"(SEL_UDATA), [sp] "r"(rsp), [fl] "r"(rflags),
			   [cs] "i"(SEL_UCODE64), [ip] "r"(rip)
			 : "memory");
	__builtin_unreachable();
}

/* Run @fn in ring 3 with RFLAGS.IOPL 3 and interrupts off, on the kit's own
 * 16 KiB user stack (RSP as if @fn had been called), after tss_load() of the
 * kit's own 8 KiB kernel stack and with user_io_gp_handler() on #GP.  @fn
 * must never return (it ends with guest_exit(), which works at CPL 3).  Call
 * once, on the boot CPU at CPL 0 (tss_load()'s rule). */
noreturn void user_start(void (*fn)(void));

/* ---- RAM above 4 GiB (lib/highmem.c) ---- */

#define GUEST_FOUR_GIB (4ul << 30)
#define GUEST_HIGH_GIB_MAX 60 /* RAM mapped above 4 GiB: up to 64 GiB in all */

/* Map guest-physical [4 GiB, @end) 1:1 with 2 MiB user pages, writable (the
 * kit's tables map the first 4 GiB).  0 (also when @end <= 4 GiB), or -1
 * when @end lies beyond GUEST_HIGH_GIB_MAX GiB above 4 GiB. */
int guest_map_high(uint64_t end);

/* The #GP handler user_start() installs: a ring-3 IN or OUT (imm8 or DX
 * port; 8, 16 or 32 bits, 16 with a 0x66 prefix) that faulted despite IOPL 3
 * is performed at CPL 0 and skipped, with the frame's RAX updated as the CPU
 * would have.  This is for nested KVM without VT-x/AMD-V (kvm_pvm), which
 * runs ring 3 with IOPL 0 whatever the guest sets.  Any other #GP, and any
 * from ring 0, goes to isr_unexpected(). */
void user_io_gp_handler(struct isr_frame *f);

/* ---- What GCC may call even in freestanding code ---- */
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

#endif

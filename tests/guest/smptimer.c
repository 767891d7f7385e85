/* smptimer: timer interrupts on several CPUs, for whole-VM snapshot/restore
 * tests.  Every CPU runs its local APIC timer in periodic mode; the boot CPU
 * also takes the PIT's channel 0 (rate generator) through the IOAPIC, the
 * 8259s masked.  Each CPU sleeps in `sti; hlt` and prints a progress line
 * every few ticks; once every CPU has seen its target of LAPIC ticks and the
 * boot CPU as many PIT ticks, the boot CPU prints "smptimer done" and exits 0.
 * Restored from a snapshot, a guest whose timers were not brought back stops
 * making progress, on one CPU or for one timer, and never finishes.
 *
 * The APs are started with INIT-SIPI-SIPI broadcast to all but self, through
 * the kit's trampoline (lib/smp.c, as the smp guest), and number themselves
 * in the order they arrive: CPU 0 is the boot CPU. */
#include "guest.h"

#define MAX_CPUS 4
#define AP_STACK_SIZE 8192

#define LAPIC_VECTOR_BASE 0x20 /* CPU i's timer: 0x20 + i */
#define PIT_VECTOR 0x28
#define SPURIOUS_VECTOR 0x2f

#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_INIT 0x380
#define LAPIC_TIMER_DIV 0x3e0
#define LVT_TIMER_PERIODIC 0x20000
#define LAPIC_DIV_16 0x3

#define PIT_CH0 0x40
#define PIT_CMD 0x43
#define PIT_CH0_LOHI_MODE2 0x34 /* channel 0, lobyte/hibyte, rate generator, binary */
#define PIC1_DATA 0x21
#define PIC2_DATA 0xa1

static uint8_t ap_stacks[MAX_CPUS][AP_STACK_SIZE] __attribute__((section(".noinit"), aligned(16)));
static volatile uint32_t lapic_ticks[MAX_CPUS];
static volatile uint32_t pit_ticks;
static volatile uint32_t cpus_online = 1; /* the boot CPU */
static volatile uint32_t cpus_done;       /* CPUs past their target */
static unsigned ncpus, target, every;
static uint32_t lapic_count;

/* CPU i's LAPIC timer: count it, EOI.  Never prints (see gprintf). */
static void lapic_tick(struct isr_frame *f)
{
	lapic_ticks[f->vector - LAPIC_VECTOR_BASE]++;
	lapic_eoi();
}

static void pit_tick(struct isr_frame *f)
{
	(void)f;
	pit_ticks++;
	lapic_eoi();
}

/* The spurious vector takes no EOI by definition. */
static void spurious_irq(struct isr_frame *f)
{
	(void)f;
}

/* Start this CPU's LAPIC timer: periodic, vector 0x20 + @cpu. */
static void lapic_timer_start(unsigned cpu)
{
	lapic_enable(SPURIOUS_VECTOR);
	lapic_write(LAPIC_TIMER_DIV, LAPIC_DIV_16);
	lapic_write(LAPIC_LVT_TIMER, LVT_TIMER_PERIODIC | (LAPIC_VECTOR_BASE + cpu));
	lapic_write(LAPIC_TIMER_INIT, lapic_count);
}

/* Sleep until the ticks move, printing a line at every @every-th LAPIC
 * tick, until this CPU (and on CPU 0 the PIT) reached the target. */
static void tick_loop(unsigned cpu)
{
	uint32_t next = every;
	bool done = false;

	for (;;) {
		uint32_t lt, pt;

		cpu_cli();
		lt = lapic_ticks[cpu];
		pt = pit_ticks;
		if (cpu == 0 && done && cpus_done >= ncpus)
			break;
		if (lt < next || done) {
			cpu_sti_hlt();
			continue;
		}
		cpu_sti();
		next = (lt / every + 1) * every;
		if (cpu == 0)
			gprintf("tick cpu0 lapic %u pit %u\n", lt, pt);
		else
			gprintf("tick cpu%u lapic %u\n", cpu, lt);
		if (lt >= target && (cpu != 0 || pt >= target)) {
			done = true;
			__asm__ volatile("lock incl %0" : "+m"(cpus_done) : : "memory");
		}
	}
	/* CPU 0 only: every CPU reached its target. */
	cpu_sti();
}

/* C entry of every AP, on its own stack (see ap_tramp_install()). */
static noreturn void ap_main(void)
{
	unsigned cpu;

	idt_load();
	cpu = __atomic_fetch_add(&cpus_online, 1, __ATOMIC_SEQ_CST);
	if (cpu >= MAX_CPUS)
		cpu_park();
	lapic_timer_start(cpu);
	tick_loop(cpu);
	for (;;)
		cpu_sti_hlt();
}

int guest_main(void)
{
	long pit_div = cmdline_get_int("pit_div", 11932); /* about 100 Hz */
	unsigned pit_pin = (unsigned)cmdline_get_int("pit_pin", 0);

	ncpus = (unsigned)cmdline_get_int("cpus", 2);
	target = (unsigned)cmdline_get_int("ticks", 300);
	every = (unsigned)cmdline_get_int("every", 25);
	/* 10 ms at KVM's 1 GHz APIC bus clock, divided by 16. */
	lapic_count = (uint32_t)cmdline_get_int("lapic_count", 625000);
	if (ncpus < 1 || ncpus > MAX_CPUS || !every || !target || pit_div < 2 ||
	    pit_div > 0xffff || pit_pin > 23 || !lapic_count) {
		gprintf("smptimer: FAIL bad parameters\n");
		return 1;
	}
	gprintf("smptimer: cpus %u ticks %u every %u\n", ncpus, target, every);
	for (unsigned i = 0; i < MAX_CPUS; i++)
		idt_set_handler(LAPIC_VECTOR_BASE + i, lapic_tick);
	idt_set_handler(PIT_VECTOR, pit_tick);
	idt_set_handler(SPURIOUS_VECTOR, spurious_irq);

	lapic_enable(SPURIOUS_VECTOR);
	if (ncpus > 1) {
		ap_tramp_install(ap_stacks, MAX_CPUS, AP_STACK_SIZE, ap_main);
		ap_start_all();
		/* No timeout: the host bounds the run (vmrun --timeout). */
		while (cpus_online < ncpus)
			cpu_pause();
	}
	gprintf("smptimer: %u cpus online\n", ncpus);

	/* PIT channel 0 -> ISA IRQ 0 -> IOAPIC pin 0 (vmrun's MP table and
	 * KVM's default routing; QEMU's MP table overrides it to pin 2). */
	outb(PIC1_DATA, 0xff);
	outb(PIC2_DATA, 0xff);
	ioapic_route(pit_pin, PIT_VECTOR, lapic_id());
	outb(PIT_CMD, PIT_CH0_LOHI_MODE2);
	outb(PIT_CH0, (uint8_t)pit_div);
	outb(PIT_CH0, (uint8_t)(pit_div >> 8));
	lapic_timer_start(0);
	tick_loop(0);
	gprintf("smptimer done\n");
	return 0;
}

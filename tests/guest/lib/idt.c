/* The kit's IDT: IDT_VECTORS interrupt gates into lib/isr.S's stubs, a
 * handler table, and a default handler that reports and exits. */
#include "kit.h"

#define GATE_INTERRUPT 0x8e /* present, DPL 0, 64-bit interrupt gate: IF cleared */
#define ISR_STUB_SIZE 16

struct idt_gate {
	uint16_t offset_lo;
	uint16_t selector;
	uint8_t ist;
	uint8_t type;
	uint16_t offset_mid;
	uint32_t offset_hi;
	uint32_t reserved;
};

_Static_assert(sizeof(struct idt_gate) == 16, "64-bit IDT gate is 16 bytes");

extern const char isr_stubs[];

static struct idt_gate idt[IDT_VECTORS];
static isr_handler_t handlers[IDT_VECTORS];

void idt_init(void)
{
	for (unsigned v = 0; v < IDT_VECTORS; v++) {
		uint64_t a = (uint64_t)(isr_stubs + v * ISR_STUB_SIZE);

		idt[v] = (struct idt_gate){
			.offset_lo = (uint16_t)a,
			.selector = SEL_KCODE64,
			.type = GATE_INTERRUPT,
			.offset_mid = (uint16_t)(a >> 16),
			.offset_hi = (uint32_t)(a >> 32),
		};
	}
	idt_load();
}

void idt_load(void)
{
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) idtr = { sizeof(idt) - 1, (uint64_t)idt };

	__asm__ volatile("lidt %0" : : "m"(idtr) : "memory");
}

void idt_set_handler(unsigned vec, isr_handler_t fn)
{
	if (vec < IDT_VECTORS)
		handlers[vec] = fn;
}

/* The registered handler, else the report of an unexpected event. */
void isr_dispatch(struct isr_frame *f)
{
	isr_handler_t fn = f->vector < IDT_VECTORS ? handlers[f->vector] : NULL;

	if (fn) {
		fn(f);
		return;
	}
	isr_unexpected(f);
}

noreturn void isr_unexpected(struct isr_frame *f)
{
	uint64_t cr2;

	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	console_break_lock(); /* the fault may have hit inside gprintf() */
	gprintf("guest: unexpected vector %lu err=0x%lx rip=0x%lx cs=0x%lx rflags=0x%lx cr2=0x%lx\n",
		f->vector, f->error, f->rip, f->cs, f->rflags, cr2);
	guest_exit(GUEST_EXIT_EXCEPTION);
}

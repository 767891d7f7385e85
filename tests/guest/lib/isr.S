/* Interrupt entry stubs: one 16-byte stub per vector (lib/idt.c points the
 * IDT at isr_stubs + 16 * vector), each pushing a uniform (error code,
 * vector) pair before the common path saves the caller-saved registers and
 * calls isr_dispatch(struct isr_frame *). */

#define IDT_VECTORS 48

	.text
	.balign 16
	.globl isr_stubs
isr_stubs:
	.set vec, 0
	.rept IDT_VECTORS
	.balign 16
	/* Exceptions that push an error code themselves. */
	.if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
	.else
	pushq $0
	.endif
	pushq $vec
	jmp isr_common
	.set vec, vec + 1
	.endr

/* The CPU pushed 40 bytes onto a 16-byte aligned stack, the stub 16 more;
 * nine registers make 128 bytes, so RSP is aligned again at the call. */
isr_common:
	push %rax
	push %rcx
	push %rdx
	push %rsi
	push %rdi
	push %r8
	push %r9
	push %r10
	push %r11
	mov %rsp, %rdi
	cld
	call isr_dispatch
	pop %r11
	pop %r10
	pop %r9
	pop %r8
	pop %rdi
	pop %rsi
	pop %rdx
	pop %rcx
	pop %rax
	add $16, %rsp                   /* vector and error code */
	iretq

	.section .note.GNU-stack, "", @progbits

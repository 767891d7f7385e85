/* Split virtqueues, device side (virtio 1.2, section 2.7).
 *
 * Everything the guest can write is hostile and may change under our feet:
 * every guest-shared field is read exactly once into a local (never read
 * twice and trust both), every guest value is range-checked before it
 * indexes anything, and every guest-physical range goes through
 * guest_mem_ptr() with its full length, each time it is used.  The ring
 * areas are translated again on every call rather than cached: that keeps
 * struct virtq free of host pointers and makes a transport that changed
 * size or an address while the queue was ready (a contract violation) a
 * wrong answer at worst, never an access outside guest RAM.
 *
 * Layouts, little-endian (x86, so le*toh() compile to nothing):
 *   descriptor  { le64 addr; le32 len; le16 flags; le16 next; }   16 bytes
 *   avail ring  { le16 flags; le16 idx; le16 ring[size]; le16 used_event; }
 *   used ring   { le16 flags; le16 idx; { le32 id; le32 len; } ring[size];
 *                 le16 avail_event; }
 *
 * Memory ordering, against a driver on another CPU (Linux virtio_ring.c):
 * - avail->idx is loaded with acquire before the ring entry and the
 *   descriptors it publishes are read;
 * - used->idx is stored with release after the used element (and, through
 *   program order, the caller's data writes into the buffers);
 * - a full fence separates our store of used->idx from the load of
 *   used_event / avail->flags (virtq_should_interrupt()), and our store of
 *   avail_event / used->flags from the load of avail->idx
 *   (virtq_notify_enable(), virtq_pop()): both are store-then-load
 *   handshakes, which x86 reorders without an mfence, and the lost wakeup
 *   they would cause is a hung guest.
 *
 * Threads: one virtq is used by one thread at a time (the device's); the
 * guest is the only concurrent party. */
#include "vmrun/virtio.h"

#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "vmrun/guest_mem.h"
#include "vmrun/log.h"

#define VQ_DESC_BYTES 16u

/* Byte offsets inside the rings. */
#define VQ_RING_FLAGS 0u
#define VQ_RING_IDX 2u
#define VQ_RING_ENTRIES 4u
#define VQ_AVAIL_ENTRY_BYTES 2u
#define VQ_USED_ENTRY_BYTES 8u

/* A descriptor as read from guest memory: a private copy, so that the
 * guest rewriting the table after our checks cannot change what we use. */
struct vq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

static uint64_t vq_desc_bytes(uint16_t size)
{
	return (uint64_t)VQ_DESC_BYTES * size;
}

static uint64_t vq_avail_bytes(uint16_t size)
{
	return VQ_RING_ENTRIES + (uint64_t)VQ_AVAIL_ENTRY_BYTES * size + 2;
}

static uint64_t vq_used_bytes(uint16_t size)
{
	return VQ_RING_ENTRIES + (uint64_t)VQ_USED_ENTRY_BYTES * size + 2;
}

/* Host pointers to the whole of each ring area, or NULL when any byte of it
 * is outside RAM.  virtq_enable() checked them once; checking again costs a
 * few compares and keeps every access bounds-checked on its own. */
static uint8_t *vq_desc_table(const struct virtq *vq)
{
	return guest_mem_ptr(vq->mem, vq->desc_gpa, vq_desc_bytes(vq->size));
}

static uint8_t *vq_avail(const struct virtq *vq)
{
	return guest_mem_ptr(vq->mem, vq->avail_gpa, vq_avail_bytes(vq->size));
}

static uint8_t *vq_used(const struct virtq *vq)
{
	return guest_mem_ptr(vq->mem, vq->used_gpa, vq_used_bytes(vq->size));
}

/* Single loads and stores of ring fields.  The ring areas are 2-byte (avail)
 * and 4-byte (used) aligned (virtq_enable() checked), and guest RAM regions
 * are page aligned in the host, so these are naturally aligned accesses. */
static uint16_t vq_load16(const uint8_t *p, int order)
{
	return le16toh(__atomic_load_n((const uint16_t *)p, order));
}

static void vq_store16(uint8_t *p, uint16_t v, int order)
{
	__atomic_store_n((uint16_t *)p, htole16(v), order);
}

static void vq_store32(uint8_t *p, uint32_t v)
{
	__atomic_store_n((uint32_t *)p, htole32(v), __ATOMIC_RELAXED);
}

/* Copy one descriptor out of guest memory.  Indirect tables need not be
 * aligned, hence memcpy; the compiler barrier after it forbids the compiler
 * to re-read the guest's copy instead of ours (the double fetch that a
 * plain struct copy would allow). */
static void vq_read_desc(const uint8_t *p, struct vq_desc *d)
{
	uint8_t raw[VQ_DESC_BYTES];

	memcpy(raw, p, sizeof(raw));
	__asm__ __volatile__("" ::: "memory");
	memcpy(&d->addr, raw, 8);
	memcpy(&d->len, raw + 8, 4);
	memcpy(&d->flags, raw + 12, 2);
	memcpy(&d->next, raw + 14, 2);
	d->addr = le64toh(d->addr);
	d->len = le32toh(d->len);
	d->flags = le16toh(d->flags);
	d->next = le16toh(d->next);
}

/* Refuse a malformed ring: returns -EINVAL.  The reason goes to the debug
 * log only: the transport warns (rate-limited by the reset the guest must do
 * before it can fail again) and marks the device NEEDS_RESET. */
__attribute__((format(printf, 2, 3)))
static int vq_malformed(const struct virtq *vq, const char *fmt, ...)
{
	char buf[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	log_debug("virtqueue (desc 0x%llx): %s", (unsigned long long)vq->desc_gpa, buf);
	return -EINVAL;
}

void virtq_reset(struct virtq *vq)
{
	const struct guest_mem *mem = vq->mem;

	/* Section 2.4: after a reset the queue registers hold their initial
	 * values, so size, addresses and the negotiated ring features go too;
	 * the transport sets them again before the next virtq_enable(). */
	memset(vq, 0, sizeof(*vq));
	vq->mem = mem;
}

int virtq_enable(struct virtq *vq)
{
	vq->ready = false;
	if (!vq->mem)
		return -EINVAL;
	/* A power of two (section 2.7: the ring index wraps with & (size - 1)
	 * and the 16-bit free-running indices stay consistent only then). */
	if (!vq->size || vq->size > VIRTQ_MAX_SIZE || (vq->size & (vq->size - 1)))
		return -EINVAL;
	/* Section 2.7 alignment: 16 for descriptors, 2 for avail, 4 for used. */
	if ((vq->desc_gpa & 15) || (vq->avail_gpa & 1) || (vq->used_gpa & 3))
		return -EINVAL;
	if (!vq_desc_table(vq) || !vq_avail(vq) || !vq_used(vq))
		return -EINVAL;
	vq->last_avail_idx = 0;
	vq->used_idx = 0;
	/* Unknown until the first check: the first virtq_should_interrupt()
	 * with EVENT_IDX then interrupts unconditionally.  One spurious
	 * interrupt is harmless; a missed one can hang the driver. */
	vq->signalled_used = 0;
	vq->signalled_used_valid = false;
	vq->notify_disabled = false;
	vq->ready = true;
	return 0;
}

/* Write avail_event (EVENT_IDX) if it does not already hold @val, then
 * fence, so that a later load of avail->idx cannot pass the store.  The
 * store is skipped when the value is already there: then it was published
 * (and fenced) before, and we spare a dirty page and an mfence per pop.
 * @used is the translated used ring. */
static void vq_set_avail_event(struct virtq *vq, uint8_t *used, uint16_t val)
{
	uint64_t off = VQ_RING_ENTRIES + (uint64_t)VQ_USED_ENTRY_BYTES * vq->size;

	if (vq_load16(used + off, __ATOMIC_RELAXED) == val)
		return;
	vq_store16(used + off, val, __ATOMIC_RELAXED);
	guest_mem_mark_dirty(vq->mem, vq->used_gpa + off, 2);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* Walk the chain that starts at @head into @req.  Returns 0, or -EINVAL
 * for anything malformed (@req is then partly filled and meaningless).
 *
 * Termination: every iteration either adds a buffer (at most
 * min(size, VIRTQ_MAX_SIZE) of them, which is what catches loops, in the
 * ring or in an indirect table) or enters an indirect table, which can
 * happen once per chain (the indirect descriptor ends the ring part of the
 * chain: NEXT is refused on it, and INDIRECT inside a table is refused).
 * The indirect descriptor itself is not a buffer and does not count. */
static int vq_walk_chain(struct virtq *vq, uint16_t head, struct virtq_req *req)
{
	unsigned limit = vq->size < VIRTQ_MAX_SIZE ? vq->size : VIRTQ_MAX_SIZE;
	const uint8_t *table = vq_desc_table(vq);
	uint32_t table_n = vq->size; /* entries in the current table */
	uint32_t idx = head;
	bool in_indirect = false;
	unsigned n_bufs = 0;

	req->head = head;
	req->n_out = req->n_in = 0;
	req->out_bytes = req->in_bytes = 0;
	if (!table)
		return vq_malformed(vq, "descriptor table outside RAM");
	if (head >= vq->size)
		return vq_malformed(vq, "head index %u >= queue size %u", head, vq->size);
	for (;;) {
		struct vq_desc d;
		struct virtq_seg *seg;
		void *host;

		if (idx >= table_n)
			return vq_malformed(vq, "next index %u >= %u%s", idx, table_n,
					    in_indirect ? " (indirect table entries)" : "");
		vq_read_desc(table + (uint64_t)VQ_DESC_BYTES * idx, &d);

		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			if (!vq->indirect)
				return vq_malformed(vq, "indirect descriptor %u, INDIRECT_DESC "
						    "not negotiated", idx);
			if (in_indirect)
				return vq_malformed(vq, "indirect descriptor inside an indirect "
						    "table");
			if (d.flags & VIRTQ_DESC_F_NEXT)
				return vq_malformed(vq, "indirect descriptor %u has NEXT set",
						    idx);
			if (!d.len || d.len % VQ_DESC_BYTES || d.len / VQ_DESC_BYTES > vq->size)
				return vq_malformed(vq, "indirect table of %u bytes (queue "
						    "size %u)", d.len, vq->size);
			table = guest_mem_ptr(vq->mem, d.addr, d.len);
			if (!table)
				return vq_malformed(vq, "indirect table 0x%llx+%u outside RAM",
						    (unsigned long long)d.addr, d.len);
			/* Section 2.7.5.3: the table's chain starts at entry 0;
			 * the WRITE flag of the indirect descriptor is ignored. */
			table_n = d.len / VQ_DESC_BYTES;
			idx = 0;
			in_indirect = true;
			continue;
		}

		if (n_bufs == limit)
			return vq_malformed(vq, "chain longer than the queue size %u (a loop?)",
					    vq->size);
		if (!d.len)
			return vq_malformed(vq, "zero-length buffer in descriptor %u", idx);
		host = guest_mem_ptr(vq->mem, d.addr, d.len);
		if (!host)
			return vq_malformed(vq, "buffer 0x%llx+%u outside RAM",
					    (unsigned long long)d.addr, d.len);
		if (d.flags & VIRTQ_DESC_F_WRITE) {
			seg = &req->in[req->n_in++];
			req->in_bytes += d.len;
		} else {
			/* Section 2.7.4.2: readable buffers come first. */
			if (req->n_in)
				return vq_malformed(vq, "readable descriptor %u after a "
						    "writable one", idx);
			seg = &req->out[req->n_out++];
			req->out_bytes += d.len;
		}
		seg->gpa = d.addr;
		seg->host = host;
		seg->len = d.len;
		n_bufs++;

		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			return 0;
		idx = d.next;
	}
}

int virtq_pop(struct virtq *vq, struct virtq_req *req)
{
	uint16_t avail_idx, pending, head;
	uint8_t *avail, *used;
	int r;

	if (!vq->ready)
		return 0;
	avail = vq_avail(vq);
	used = vq_used(vq);
	if (!avail || !used)
		return vq_malformed(vq, "ring outside RAM");
	/* With EVENT_IDX and notifications on, keep avail_event at the first
	 * slot not yet consumed, so the driver kicks for the next chain it
	 * adds; the fence inside orders that store before the avail->idx load
	 * below (otherwise both sides could miss the other's update and the
	 * queue would stall).  While notifications are off it is left behind,
	 * which is what suppresses them. */
	if (vq->event_idx && !vq->notify_disabled)
		vq_set_avail_event(vq, used, vq->last_avail_idx);

	/* Acquire: the ring entry and descriptors are read after the index
	 * that published them. */
	avail_idx = vq_load16(avail + VQ_RING_IDX, __ATOMIC_ACQUIRE);
	pending = (uint16_t)(avail_idx - vq->last_avail_idx);
	if (!pending)
		return 0;
	if (pending > vq->size)
		return vq_malformed(vq, "avail->idx %u is %u ahead of %u (queue size %u)",
				    avail_idx, pending, vq->last_avail_idx, vq->size);
	/* size is a power of two, so & (size - 1) is the ring slot (and
	 * < size even if it were not). */
	head = vq_load16(avail + VQ_RING_ENTRIES +
			 VQ_AVAIL_ENTRY_BYTES * (uint64_t)(vq->last_avail_idx & (vq->size - 1)),
			 __ATOMIC_RELAXED);
	r = vq_walk_chain(vq, head, req);
	if (r < 0)
		return r;
	vq->last_avail_idx++;
	return 1;
}

int virtq_push(struct virtq *vq, uint16_t head, uint32_t written)
{
	uint64_t elem_off;
	uint8_t *used;

	if (!vq->ready || head >= vq->size)
		return -EINVAL;
	used = vq_used(vq);
	if (!used)
		return -EINVAL;
	elem_off = VQ_RING_ENTRIES +
		   VQ_USED_ENTRY_BYTES * (uint64_t)(vq->used_idx & (vq->size - 1));
	vq_store32(used + elem_off, head);
	vq_store32(used + elem_off + 4, written);
	vq->used_idx++;
	/* Release: the driver that sees the new idx sees the element and the
	 * data the caller wrote into the buffers before this call. */
	vq_store16(used + VQ_RING_IDX, vq->used_idx, __ATOMIC_RELEASE);
	/* After the bytes are in place (guest_mem_mark_dirty()'s contract). */
	/* idx and the element in one call: one atomic while they share a
	 * bitmap word (a used ring of up to 256 entries is one page). */
	guest_mem_mark_dirty(vq->mem, vq->used_gpa + VQ_RING_IDX,
			     elem_off + VQ_USED_ENTRY_BYTES - VQ_RING_IDX);
	return 0;
}

int virtq_push_n(struct virtq *vq, const uint16_t *heads, const uint32_t *written, unsigned n)
{
	uint8_t *used;

	if (!vq->ready || n > vq->size)
		return -EINVAL;
	for (unsigned i = 0; i < n; i++)
		if (heads[i] >= vq->size)
			return -EINVAL;
	used = vq_used(vq);
	if (!used)
		return -EINVAL;
	for (unsigned i = 0; i < n; i++) {
		uint64_t off = VQ_RING_ENTRIES +
			       VQ_USED_ENTRY_BYTES * (uint64_t)((vq->used_idx + i) & (vq->size - 1));

		vq_store32(used + off, heads[i]);
		vq_store32(used + off + 4, written[i]);
	}
	vq->used_idx = (uint16_t)(vq->used_idx + n);
	vq_store16(used + VQ_RING_IDX, vq->used_idx, __ATOMIC_RELEASE);
	/* idx and every element: the whole ring is at most a few pages. */
	guest_mem_mark_dirty(vq->mem, vq->used_gpa + VQ_RING_IDX,
			     VQ_RING_ENTRIES + VQ_USED_ENTRY_BYTES * (uint64_t)vq->size - VQ_RING_IDX);
	return 0;
}

bool virtq_should_interrupt(struct virtq *vq)
{
	uint16_t used_event, old, new;
	const uint8_t *avail;
	bool valid;

	if (!vq->ready)
		return false;
	avail = vq_avail(vq);
	if (!avail)
		return false;
	/* Our used->idx store must be visible before we read what the driver
	 * asked for; the driver does the mirror image (write flags or
	 * used_event, fence, read used->idx). */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!vq->event_idx)
		return !(vq_load16(avail + VQ_RING_FLAGS, __ATOMIC_RELAXED) &
			 VIRTQ_AVAIL_F_NO_INTERRUPT);

	used_event = vq_load16(avail + VQ_RING_ENTRIES +
			       VQ_AVAIL_ENTRY_BYTES * (uint64_t)vq->size, __ATOMIC_RELAXED);
	/* Section 2.7.10: interrupt when used->idx stepped over used_event,
	 * i.e. used_event lies in [old, new) of the indices published since
	 * the previous check.  The window starts at the previous check, not
	 * the previous interrupt: a window that only grew would count a
	 * crossing the driver had not asked for yet (used_event moved back
	 * into it later) and, past 65536 entries, wrap and miss real ones. */
	old = vq->signalled_used;
	new = vq->used_idx;
	valid = vq->signalled_used_valid;
	vq->signalled_used = new;
	vq->signalled_used_valid = true;
	if (!valid)
		return true;
	return (uint16_t)(new - used_event - 1) < (uint16_t)(new - old);
}

void virtq_notify_disable(struct virtq *vq)
{
	uint8_t *used;

	if (!vq->ready)
		return;
	vq->notify_disabled = true;
	/* With EVENT_IDX, virtq_pop() stops advancing avail_event: the driver
	 * kicks at most once more.  The device must keep used->flags 0 then
	 * (section 2.7.10), so it is not touched. */
	if (vq->event_idx)
		return;
	used = vq_used(vq);
	if (!used)
		return;
	/* Written, not read-modify-written: the device owns used->flags, and
	 * NO_NOTIFY is its only defined bit. */
	vq_store16(used + VQ_RING_FLAGS, VIRTQ_USED_F_NO_NOTIFY, __ATOMIC_RELAXED);
	guest_mem_mark_dirty(vq->mem, vq->used_gpa + VQ_RING_FLAGS, 2);
}

bool virtq_notify_enable(struct virtq *vq)
{
	const uint8_t *avail;
	uint8_t *used;
	uint16_t avail_idx;

	if (!vq->ready)
		return false;
	vq->notify_disabled = false;
	avail = vq_avail(vq);
	used = vq_used(vq);
	if (!avail || !used)
		return false;
	if (vq->event_idx) {
		/* Kick me when the slot I will consume next is filled. */
		vq_set_avail_event(vq, used, vq->last_avail_idx);
	} else {
		vq_store16(used + VQ_RING_FLAGS, 0, __ATOMIC_RELAXED);
		guest_mem_mark_dirty(vq->mem, vq->used_gpa + VQ_RING_FLAGS, 2);
	}
	/* The request to be notified must be visible before we look for
	 * chains: a driver that added one meanwhile either sees the request
	 * and kicks, or we see its chain here. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	avail_idx = vq_load16(avail + VQ_RING_IDX, __ATOMIC_ACQUIRE);
	return avail_idx != vq->last_avail_idx;
}

/* Copy between host memory and stream bytes [@off, @off + @len) of @segs
 * (@n of them) taken as one stream: from @src into guest memory when
 * @to_guest (marking what was written dirty in @mem), otherwise out of
 * guest memory into @dst.  Returns the bytes copied. */
static size_t vq_segs_copy(const struct guest_mem *mem, const struct virtq_seg *segs,
			   unsigned n, uint64_t off, bool to_guest, uint8_t *dst,
			   const uint8_t *src, size_t len)
{
	size_t done = 0;

	if (n > VIRTQ_MAX_SIZE)
		n = VIRTQ_MAX_SIZE;
	for (unsigned i = 0; i < n && done < len; i++) {
		uint64_t chunk;

		if (off >= segs[i].len) {
			off -= segs[i].len;
			continue;
		}
		chunk = segs[i].len - off;
		if (chunk > len - done)
			chunk = len - done;
		if (to_guest) {
			memcpy((uint8_t *)segs[i].host + off, src + done, chunk);
			guest_mem_mark_dirty(mem, segs[i].gpa + off, chunk);
		} else {
			memcpy(dst + done, (const uint8_t *)segs[i].host + off, chunk);
		}
		done += chunk;
		off = 0;
	}
	return done;
}

size_t virtq_req_read(const struct virtq_req *req, uint64_t off, void *dst, size_t len)
{
	return vq_segs_copy(NULL, req->out, req->n_out, off, false, dst, NULL, len);
}

size_t virtq_req_write(const struct guest_mem *mem, const struct virtq_req *req, uint64_t off,
		       const void *src, size_t len)
{
	return vq_segs_copy(mem, req->in, req->n_in, off, true, NULL, src, len);
}

int virtq_req_iov(const struct virtq_req *req, bool writable, uint64_t off, uint64_t len,
		  struct iovec *iov, unsigned max)
{
	const struct virtq_seg *segs = writable ? req->in : req->out;
	unsigned n = writable ? req->n_in : req->n_out;
	uint64_t total = 0;
	unsigned cnt = 0;

	if (n > VIRTQ_MAX_SIZE)
		n = VIRTQ_MAX_SIZE;
	/* From the segments themselves rather than the *_bytes totals, so
	 * the two can never disagree about what exists. */
	for (unsigned i = 0; i < n; i++)
		total += segs[i].len;
	if (len > total || off > total - len)
		return -EINVAL;
	for (unsigned i = 0; i < n && len; i++) {
		uint64_t chunk;

		if (off >= segs[i].len) {
			off -= segs[i].len;
			continue;
		}
		chunk = segs[i].len - off;
		if (chunk > len)
			chunk = len;
		if (cnt == max)
			return -EINVAL;
		iov[cnt].iov_base = (uint8_t *)segs[i].host + off;
		iov[cnt].iov_len = chunk;
		cnt++;
		len -= chunk;
		off = 0;
	}
	return (int)cnt;
}

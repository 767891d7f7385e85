/* A Linux tap interface as a virtio-net backend (src/net/tap.c).
 *
 * The tap is opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, non-blocking,
 * with a 12-byte vnet header (struct virtio_net_hdr_v1 with num_buffers) in
 * front of every frame in both directions, so the guest's virtio-net header
 * passes through unchanged.  One read() returns one frame, one write() or
 * writev() sends one. */
#ifndef VMRUN_TAP_H
#define VMRUN_TAP_H

#include <stdbool.h>
#include <stddef.h>

#define TAP_VNET_HDR_BYTES 12
#define TAP_NAME_MAX 16 /* IFNAMSIZ, with the terminating NUL */

/* Offloads the tap may hand us (what the guest accepts): TUNSETOFFLOAD's
 * TUN_F_* bits, named here so that callers need no <linux/if_tun.h>. */
#define TAP_OFFLOAD_CSUM 0x01 /* partial checksums (TUN_F_CSUM) */
#define TAP_OFFLOAD_TSO4 0x02 /* TUN_F_TSO4; needs CSUM */
#define TAP_OFFLOAD_TSO6 0x04 /* TUN_F_TSO6; needs CSUM */

struct tap {
	int fd;                    /* -1 when closed */
	char name[TAP_NAME_MAX];   /* the interface's name, for messages */
	bool is_tap;               /* false: an adopted fd (tests), no tap ioctls */
};

/* Attach to the tap interface @name, or create it (which needs
 * CAP_NET_ADMIN), through /dev/net/tun, and set the vnet header size.  @t
 * is caller storage.  Returns 0, or -errno with a one-line reason naming
 * the tap in @err (-ENOENT: no /dev/net/tun; -EPERM: not allowed to create
 * or attach; -EBUSY: in use by another process). */
int tap_open(struct tap *t, const char *name, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* tap_open() for one queue of a multi-queue tap (@multi_queue:
 * IFF_MULTI_QUEUE): each call opens (the first may create) one more queue
 * of the same interface, up to the kernel's limit.  An existing tap made
 * without multi_queue refuses it (-EINVAL, said in @err). */
int tap_open_queue(struct tap *t, const char *name, bool multi_queue, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Multi-queue taps: attach (@enabled) or detach this queue (TUNSETQUEUE);
 * the kernel steers no frames to a detached queue, whose descriptor then
 * polls as EPOLLERR (keep it out of epoll until it is attached again).
 * Idempotent; a no-op on an adopted fd.  Returns 0 or -errno with a
 * reason in @err. */
int tap_set_queue_enabled(struct tap *t, bool enabled, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Use @fd, already open, as the tap: each datagram a vnet header and a
 * frame, as on a tap (unit tests pass one end of a SOCK_SEQPACKET
 * socketpair).  Makes it non-blocking; @t then owns @fd.  Offload requests
 * on it succeed without effect.  Returns 0 or -errno. */
int tap_open_fd(struct tap *t, int fd, const char *name) __attribute__((warn_unused_result));

/* Tell the tap which offloads (TAP_OFFLOAD_* bits) the guest accepts on
 * received frames; 0 for none.  Returns 0 or -errno with a reason in @err. */
int tap_set_offload(struct tap *t, unsigned offloads, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Close the tap (a tap vmrun created disappears with it unless it was
 * made persistent beforehand).  Safe on a closed @t. */
void tap_close(struct tap *t);

#endif

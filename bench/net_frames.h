/* The frames bench/net moves, shared by bench_net_harness (bench/net.c) and
 * net_floor (bench/net_floor.c) so that vmrun and the floor move exactly
 * the same bytes.
 *
 * Every frame travels behind a 12-byte virtio_net_hdr_v1 (the tap's vnet
 * header, IFF_VNET_HDR with TUNSETVNETHDRSZ 12).  Four kinds, by direction
 * and size:
 *  - TX (guest to host), 64 bytes: Ethernet to the tap's MAC, IPv4 UDP
 *    from NETB_GUEST_IP to NETB_TAP_IP port 9 (nobody listens: the host
 *    stack takes the frame through IP and UDP and drops it), 22 bytes of
 *    payload; the vnet header is all zero.
 *  - TX, 64 KiB (NETB_LARGE, 65214 bytes): Ethernet, IPv4, TCP to
 *    NETB_TAP_IP port 5001 with 65160 bytes of payload, the vnet header asking
 *    for TSO (NEEDS_CSUM, GSO_TCPV4, gso_size NETB_GSO_SIZE) with the TCP
 *    checksum field holding the pseudo-header sum, as a driver sends it.
 *  - RX (host to guest), 64 bytes: Ethernet to the guest's MAC with the
 *    local experimental EtherType 0x88b5 and 50 bytes of payload.
 *  - RX, 64 KiB: the mirror of the TX one (tap to guest addresses), the
 *    injector hands it to the tap as one GSO packet.
 * Payload bytes follow a fixed pattern, except for 8-byte stamps at payload
 * offsets 0, 512, 1024, ...: stamp(seq, off), so that a frame or a piece of
 * one that lands in the wrong place is caught.
 *
 * Header-only, static functions: include it from one .c file each. */
#ifndef VMRUN_BENCH_NET_FRAMES_H
#define VMRUN_BENCH_NET_FRAMES_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define NETB_HDR 12              /* virtio_net_hdr_v1 */
#define NETB_SMALL 64            /* frame bytes after the header */
/* The large frame: 45 full segments of NETB_GSO_SIZE behind Ethernet, IPv4
 * and TCP headers, 65214 bytes.  The largest TSO frame Linux's TCP builds
 * is a whole number of segments under the device's gso_max_size (65536),
 * and a frame of 65536 bytes or more is segmented in software before a
 * tap sees it. */
#define NETB_GSO_SIZE 1448
#define NETB_LARGE (14 + 20 + 20 + 45 * NETB_GSO_SIZE)
#define NETB_STAMP_EVERY 512
#define NETB_ETHERTYPE_RX 0x88b5
#define NETB_TAP_IP 0x0ad50001u   /* 10.213.0.1, the tap's address */
#define NETB_GUEST_IP 0x0ad50002u /* 10.213.0.2 */
#define NETB_TAP_MAC { 0x02, 0x76, 0x6d, 0x00, 0x00, 0x01 }
#define NETB_GUEST_MAC { 0x02, 0x76, 0x6d, 0x00, 0x00, 0x02 }

/* virtio_net_hdr fields (virtio 1.2, section 5.1.6). */
#define NETB_HDR_F_NEEDS_CSUM 1
#define NETB_GSO_NONE 0
#define NETB_GSO_TCPV4 1

enum netb_dir { NETB_TX, NETB_RX }; /* TX: guest to host; RX: host to guest */

/* Where the payload starts in the frame (after the vnet header). */
static inline size_t netb_payload_off(enum netb_dir dir, size_t size)
{
	if (size > NETB_SMALL)
		return 14 + 20 + 20;
	return dir == NETB_TX ? 14 + 20 + 8 : 14;
}

static inline void netb_put16(uint8_t *p, uint16_t v) /* big endian */
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void netb_put32(uint8_t *p, uint32_t v)
{
	netb_put16(p, (uint16_t)(v >> 16));
	netb_put16(p + 2, (uint16_t)v);
}

static inline void netb_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline uint16_t netb_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

static inline uint64_t netb_stamp(uint64_t seq, size_t off)
{
	return (seq * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)off << 44) ^ 0x766d72756e6e6574ull;
}

/* Write stamp(seq, .) into the payload of the frame at @frame (after the
 * vnet header) of @size bytes. */
static inline void netb_set_seq(uint8_t *frame, enum netb_dir dir, size_t size, uint64_t seq)
{
	size_t po = netb_payload_off(dir, size);

	for (size_t off = 0; po + off + 8 <= size; off += NETB_STAMP_EVERY) {
		uint64_t s = netb_stamp(seq, off);

		memcpy(frame + po + off, &s, 8);
	}
}

/* The sequence number stamped at payload offset 0, or UINT64_MAX when
 * that stamp belongs to no sequence number (recovering seq from the stamp
 * needs the inverse of the multiplier). */
static inline uint64_t netb_get_seq(const uint8_t *frame, enum netb_dir dir, size_t size)
{
	const uint64_t inv = 0xf1de83e19937733dull; /* 0x9e3779b97f4a7c15^-1 mod 2^64 */
	uint64_t s;

	memcpy(&s, frame + netb_payload_off(dir, size), 8);
	return (s ^ 0x766d72756e6e6574ull) * inv;
}

/* Build vnet header + frame of @size (NETB_SMALL or NETB_LARGE) bytes for
 * @dir into @buf (NETB_HDR + size bytes), stamped with @seq. */
static inline void netb_build(uint8_t *buf, enum netb_dir dir, size_t size, uint64_t seq)
{
	static const uint8_t tap_mac[6] = NETB_TAP_MAC, guest_mac[6] = NETB_GUEST_MAC;
	uint8_t *hdr = buf, *f = buf + NETB_HDR, *ip = f + 14, *l4 = ip + 20;
	uint32_t src = dir == NETB_TX ? NETB_GUEST_IP : NETB_TAP_IP;
	uint32_t dst = dir == NETB_TX ? NETB_TAP_IP : NETB_GUEST_IP;
	size_t po = netb_payload_off(dir, size);
	uint32_t sum = 0;

	memset(buf, 0, NETB_HDR + size);
	memcpy(f, dir == NETB_TX ? tap_mac : guest_mac, 6);
	memcpy(f + 6, dir == NETB_TX ? guest_mac : tap_mac, 6);
	for (size_t i = po; i < size; i++)
		f[i] = (uint8_t)(i * 7 + 3);
	if (size == NETB_SMALL && dir == NETB_RX) {
		netb_put16(f + 12, NETB_ETHERTYPE_RX);
		netb_set_seq(f, dir, size, seq);
		return;
	}
	netb_put16(f + 12, 0x0800);
	ip[0] = 0x45;
	netb_put16(ip + 2, (uint16_t)(size - 14));
	netb_put16(ip + 6, 0x4000); /* DF */
	ip[8] = 64;
	ip[9] = size == NETB_SMALL ? 17 : 6;
	netb_put32(ip + 12, src);
	netb_put32(ip + 16, dst);
	for (unsigned i = 0; i < 20; i += 2)
		sum += (uint32_t)(ip[i] << 8 | ip[i + 1]);
	netb_put16(ip + 10, (uint16_t)~netb_fold(sum));
	if (size == NETB_SMALL) {
		netb_put16(l4, 40000);
		netb_put16(l4 + 2, 9);
		netb_put16(l4 + 4, (uint16_t)(size - 14 - 20)); /* checksum 0: none */
	} else {
		uint32_t tcp_len = (uint32_t)(size - 14 - 20);

		netb_put16(l4, dir == NETB_TX ? 40001 : 5001);
		netb_put16(l4 + 2, dir == NETB_TX ? 5001 : 40001);
		netb_put32(l4 + 4, 1);
		netb_put32(l4 + 8, 1);
		l4[12] = 5 << 4;
		l4[13] = 0x18; /* PSH ACK */
		netb_put16(l4 + 14, 65535);
		/* CHECKSUM_PARTIAL: the field holds the pseudo-header sum. */
		sum = (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + 6 + tcp_len;
		netb_put16(l4 + 16, netb_fold(sum));
		hdr[0] = NETB_HDR_F_NEEDS_CSUM;
		hdr[1] = NETB_GSO_TCPV4;
		netb_le16(hdr + 2, 14 + 20 + 20);    /* hdr_len */
		netb_le16(hdr + 4, NETB_GSO_SIZE);   /* gso_size */
		netb_le16(hdr + 6, 14 + 20);         /* csum_start */
		netb_le16(hdr + 8, 16);              /* csum_offset */
	}
	netb_set_seq(f, dir, size, seq);
}

/* Check a received vnet header @hdr: the GSO type and size the frame kind
 * carries.  Returns 0 or -EBADMSG. */
static inline int netb_check_hdr(const uint8_t *hdr, size_t size)
{
	if (size == NETB_SMALL)
		return hdr[1] == NETB_GSO_NONE ? 0 : -EBADMSG;
	if (hdr[1] != NETB_GSO_TCPV4 || (hdr[4] | hdr[5] << 8) != NETB_GSO_SIZE)
		return -EBADMSG;
	return 0;
}

/* Whether @frame (after the vnet header, @len bytes) is one of ours at
 * all: the right destination MAC and EtherType.  Anything else (a frame
 * the host stack sent on its own) is foreign and not counted. */
static inline bool netb_is_ours(const uint8_t *frame, size_t len, enum netb_dir dir, size_t size)
{
	static const uint8_t tap_mac[6] = NETB_TAP_MAC, guest_mac[6] = NETB_GUEST_MAC;
	uint16_t type;

	if (len < 14)
		return false;
	type = (uint16_t)(frame[12] << 8 | frame[13]);
	if (memcmp(frame, dir == NETB_TX ? tap_mac : guest_mac, 6))
		return false;
	if (size == NETB_SMALL && dir == NETB_RX)
		return type == NETB_ETHERTYPE_RX;
	return type == 0x0800 && len >= 34 && frame[14 + 9] == (size == NETB_SMALL ? 17 : 6) &&
	       !memcmp(frame + 6, dir == NETB_TX ? guest_mac : tap_mac, 6);
}

/* Compare @frame (after the vnet header, @len bytes) with what
 * netb_build() makes for @seq, byte for byte; @expect is scratch of
 * NETB_HDR + size bytes.  Returns 0, or -EBADMSG with the first differing
 * offset in @at. */
static inline int netb_check_frame(const uint8_t *frame, size_t len, enum netb_dir dir, size_t size,
				   uint64_t seq, uint8_t *expect, size_t *at)
{
	*at = 0;
	if (len != size) {
		*at = len < size ? len : size;
		return -EBADMSG;
	}
	netb_build(expect, dir, size, seq);
	for (size_t i = 0; i < size; i++) {
		if (frame[i] != expect[NETB_HDR + i]) {
			*at = i;
			return -EBADMSG;
		}
	}
	return 0;
}

/* The RX hand-shake with bench/net.py: print "ready" on stdout, then read
 * a line "go N" from stdin (the injector has queued N frames in the tap by
 * then).  Returns N, or 0 when stdin ended or said something else. */
static inline uint64_t netb_ready_go(void)
{
	char line[64];
	unsigned long long n;

	printf("ready\n");
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin) || sscanf(line, "go %llu", &n) != 1)
		return 0;
	return n;
}

#endif

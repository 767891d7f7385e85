/* net: a tiny IPv4 host on vmrun's virtio-net (lib/vnet.c), for the network
 * tests in tests/integration/net_tests.py.  The contract (lines, commands,
 * exit codes) is in tests/guest/README.md, section "net".
 *
 * Parameters (command line):
 *   net.ip=A.B.C.D    this guest's address (required)
 *   net.echo=P        UDP echo port (default 7): every datagram comes back
 *   net.ctl=P         control port (default 9), commands below
 *   net.offload=0|1   negotiate CSUM and GUEST_CSUM (default 1)
 *   net.peer=A.B.C.D  the other guest, for the "go" command
 *   net.count=N       datagrams and echo requests "go" sends (default 5, <= 14)
 *   net.dev=K         use the K-th virtio-net device (default 0)
 *   net.tcp=P         TCP port of the one-connection responder (default 5001)
 *   net.tso=0|1       negotiate HOST_TSO4, GUEST_TSO4 and MRG_RXBUF too
 *                     (default 0; needs net.offload=1)
 *   net.rxwait=0|1    post no RX buffer until a byte arrives on COM1
 *                     (default 0): the device must hold off meanwhile
 *
 * It answers ARP requests for net.ip, ICMP echo requests and UDP datagrams
 * to net.echo (same payload, ports and addresses swapped).  With CSUM the
 * UDP it sends carries VIRTIO_NET_HDR_F_NEEDS_CSUM and only the pseudo-
 * header sum, the device (the host's stack) completing it.  Received UDP
 * and ICMP checksums are verified in software unless the header says
 * NEEDS_CSUM or DATA_VALID.  The main loop waits for the device's
 * interrupt with sti; hlt and never spins.
 *
 * TCP, just enough for the segmentation offloads: the guest accepts one
 * connection at a time on net.tcp (a new SYN replaces it), and once it is
 * established sends the peer one segment of min(window, 65495) bytes,
 * with net.tso as a single GSO frame (gso_type TCPV4, gso_size the
 * peer's MSS) that the host splits.  Whatever the peer sends is checked
 * against the stream pattern, acknowledged at once, and counted (frames
 * with a GSO type and more than 1514 bytes separately); the peer's FIN
 * gets a FIN back and the "tcp closed" line. */
#include "vnet.h"

#define IRQ_VECTOR 0x25
#define SPURIOUS_VECTOR 0x2f
#define MAX_DEVS 16
#define MAX_COUNT 14 /* 16 + 100 * 13 bytes: the largest fits the MTU */
#define CLIENT_PORT 40000
#define ICMP_ID 0x7e57
#define BIG_BYTES (80u << 10)
#define RXBIG_BYTES (VNET_HDR_BYTES + 65550)
#define TCP_MSS 1460
#define TCP_WINDOW 65535
#define TCP_MAX_SEG 65495 /* 20 + 20 + this is the largest IPv4 packet */

/* Exit codes. */
enum {
	F_USAGE = 1, /* no net.ip, or no such virtio-net device */
	F_INIT = 2,  /* vnet_open() failed (error printed) */
};

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_ARP 0x0806
#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

static struct vnet net __attribute__((section(".noinit")));
/* What the malformed-chain command points the device at. */
static uint8_t big[BIG_BYTES] __attribute__((section(".noinit"), aligned(4096)));
/* A frame that spans several RX buffers (MRG_RXBUF), put back together. */
static uint8_t rxbig[RXBIG_BYTES] __attribute__((section(".noinit"), aligned(4096)));
static struct virtio_mmio_dev devs[MAX_DEVS];

static uint8_t my_ip[4], peer_ip[4], peer_mac[6];
static bool has_peer, peer_known, offload, tso, rxwait, stop;
static unsigned echo_port, ctl_port, count, tcp_port;

/* The one TCP connection. */
enum { TCP_NONE, TCP_SYN_RCVD, TCP_ESTABLISHED, TCP_CLOSED };
static struct {
	int state;
	uint8_t mac[6], ip[4];
	unsigned port, mss;
	uint32_t irs, iss, snd_nxt, rcv_nxt;
	uint64_t rx_bytes;
	bool rx_bad;
} tcp;
static uint16_t ip_id;
static uint32_t udp_back, icmp_back; /* bit i: reply i from the peer arrived */
static bool peer_reported;
static volatile unsigned irqs;

static struct {
	unsigned rx, tx, arp, icmp, udp, csum_tx, rx_needs_csum, rx_data_valid, rx_checked;
	unsigned bad_csum, bad_frame, bad_hdr, bad_used, tx_full, ctl;
	unsigned tcp_rx, gso_rx, gso_tx, max_rx_frame;
} st;

/* ---- bytes ---- */

typedef uint32_t u32_unaligned __attribute__((aligned(1), may_alias));
typedef uint16_t u16_unaligned __attribute__((aligned(1), may_alias));

static uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static void put_be16(uint8_t *p, unsigned v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void copy(void *dst, const void *src, size_t n)
{
	uint8_t *d = dst;
	const uint8_t *s = src;

	for (; n >= 4; n -= 4, d += 4, s += 4)
		*(u32_unaligned *)d = *(const u32_unaligned *)s;
	while (n--)
		*d++ = *s++;
}

static bool same(const uint8_t *a, const uint8_t *b, size_t n)
{
	for (; n >= 4; n -= 4, a += 4, b += 4)
		if (*(const u32_unaligned *)a != *(const u32_unaligned *)b)
			return false;
	while (n--)
		if (*a++ != *b++)
			return false;
	return true;
}

/* The Internet checksum (RFC 1071) in memory byte order: add @n bytes at
 * @p to @s.  Every piece but the last must have an even length. */
static uint64_t csum_add(uint64_t s, const uint8_t *p, size_t n)
{
	for (; n >= 4; n -= 4, p += 4)
		s += *(const u32_unaligned *)p;
	if (n >= 2) {
		s += *(const u16_unaligned *)p;
		p += 2;
		n -= 2;
	}
	if (n)
		s += *p; /* the low byte in memory order: padded with a zero */
	return s;
}

/* Fold @s to 16 bits (not inverted), in memory byte order. */
static uint16_t csum_fold(uint64_t s)
{
	s = (s & 0xffffffffu) + (s >> 32);
	s = (s & 0xffffffffu) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (uint16_t)s;
}

/* The sum of the IPv4 pseudo-header of @ip (its addresses) for @proto and
 * an L4 length @len. */
static uint64_t pseudo_sum(const uint8_t *ip, uint8_t proto, unsigned len)
{
	uint8_t ph[4] = { 0, proto, (uint8_t)(len >> 8), (uint8_t)len };

	return csum_add(csum_add(0, ip + 12, 8), ph, 4);
}

static void put_csum(uint8_t *p, uint16_t folded)
{
	*(u16_unaligned *)p = (uint16_t)~folded;
}

/* ---- sending ---- */

static unsigned parse_ip(const char *s, uint8_t ip[4])
{
	unsigned part = 0, v = 0, digits = 0;

	for (;; s++) {
		if (*s >= '0' && *s <= '9' && digits < 3) {
			v = v * 10 + (unsigned)(*s - '0');
			digits++;
		} else if ((*s == '.' && part < 3) || (!*s && part == 3)) {
			if (!digits || v > 255)
				return 0;
			ip[part++] = (uint8_t)v;
			if (!*s)
				return 1;
			v = digits = 0;
		} else {
			return 0;
		}
	}
}

/* A TX slot with a zeroed header, or NULL (counted) when all are in flight. */
static uint8_t *tx_begin(int *slot)
{
	uint8_t *b;

	*slot = vnet_tx_slot(&net);
	if (*slot < 0) {
		st.tx_full++;
		return NULL;
	}
	b = net.txbuf[*slot];
	for (unsigned i = 0; i < VNET_HDR_BYTES; i++)
		b[i] = 0;
	return b;
}

static void tx_end(int slot, uint32_t frame_len)
{
	vnet_tx_send(&net, slot, frame_len);
	st.tx++;
}

/* Ethernet and IPv4 headers at @f (20-byte IP header) for @l4len bytes of
 * @proto to @dst_ip at @dst_mac. */
static void ip_header(uint8_t *f, const uint8_t *dst_mac, const uint8_t *dst_ip, uint8_t proto,
		      unsigned l4len)
{
	uint8_t *ip = f + ETH_HLEN;

	copy(f, dst_mac, 6);
	copy(f + 6, net.mac, 6);
	put_be16(f + 12, ETH_P_IP);
	ip[0] = 0x45;
	ip[1] = 0;
	put_be16(ip + 2, 20 + l4len);
	put_be16(ip + 4, ip_id++);
	put_be16(ip + 6, 0x4000); /* DF */
	ip[8] = 64;
	ip[9] = proto;
	ip[10] = ip[11] = 0;
	copy(ip + 12, my_ip, 4);
	copy(ip + 16, dst_ip, 4);
	put_csum(ip + 10, csum_fold(csum_add(0, ip, 20)));
}

/* Finish the UDP header at @udp (ports and length set) of the datagram in
 * IPv4 packet @ip: NEEDS_CSUM with the pseudo-header sum when the device
 * takes CSUM, else the whole checksum. */
static void udp_csum(uint8_t *hdr, uint8_t *ip, uint8_t *udp, unsigned ulen)
{
	struct vnet_hdr *h = (struct vnet_hdr *)hdr;
	uint64_t s = pseudo_sum(ip, IPPROTO_UDP, ulen);

	udp[6] = udp[7] = 0;
	if (offload) {
		h->flags = VNET_HDR_F_NEEDS_CSUM;
		h->csum_start = (uint16_t)(udp - (hdr + VNET_HDR_BYTES));
		h->csum_offset = 6;
		*(u16_unaligned *)(udp + 6) = csum_fold(s);
		st.csum_tx++;
	} else {
		uint16_t c = (uint16_t)~csum_fold(csum_add(s, udp, ulen));

		*(u16_unaligned *)(udp + 6) = c ? c : 0xffff; /* 0 means "none" */
	}
}

static void send_udp(const uint8_t *dst_mac, const uint8_t *dst_ip, unsigned sport,
		     unsigned dport, const uint8_t *payload, unsigned len)
{
	uint8_t *b, *f, *udp;
	int slot;

	if (len > net.mtu - 28u || !(b = tx_begin(&slot)))
		return;
	f = b + VNET_HDR_BYTES;
	ip_header(f, dst_mac, dst_ip, IPPROTO_UDP, 8 + len);
	udp = f + ETH_HLEN + 20;
	put_be16(udp, sport);
	put_be16(udp + 2, dport);
	put_be16(udp + 4, 8 + len);
	copy(udp + 8, payload, len);
	udp_csum(b, f + ETH_HLEN, udp, 8 + len);
	tx_end(slot, ETH_HLEN + 20 + 8 + len);
}

static void send_arp(unsigned op, const uint8_t *dst_mac, const uint8_t *tha, const uint8_t *tpa)
{
	static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	uint8_t *b, *f, *a;
	int slot;

	if (!(b = tx_begin(&slot)))
		return;
	f = b + VNET_HDR_BYTES;
	copy(f, dst_mac ? dst_mac : bcast, 6);
	copy(f + 6, net.mac, 6);
	put_be16(f + 12, ETH_P_ARP);
	a = f + ETH_HLEN;
	put_be16(a, 1);
	put_be16(a + 2, ETH_P_IP);
	a[4] = 6;
	a[5] = 4;
	put_be16(a + 6, op);
	copy(a + 8, net.mac, 6);
	copy(a + 14, my_ip, 4);
	copy(a + 18, tha, 6);
	copy(a + 24, tpa, 4);
	tx_end(slot, ETH_HLEN + 28);
}

/* Payload byte i of datagram or echo request @n to the peer. */
static uint8_t peer_pattern(unsigned n, unsigned i)
{
	return (uint8_t)(n * 31 + i * 7 + 1);
}

static unsigned peer_len(unsigned n)
{
	return 16 + 100 * n;
}

/* The peer's datagrams and echo requests not answered yet. */
static void peer_send(void)
{
	static uint8_t pl[1500];

	for (unsigned n = 0; n < count; n++) {
		unsigned len = peer_len(n);

		for (unsigned i = 0; i < len; i++)
			pl[i] = peer_pattern(n, i);
		if (!(udp_back & (1u << n)))
			send_udp(peer_mac, peer_ip, CLIENT_PORT, echo_port, pl, len);
		if (!(icmp_back & (1u << n))) {
			uint8_t *b, *f, *icmp;
			int slot;

			if (!(b = tx_begin(&slot)))
				continue;
			f = b + VNET_HDR_BYTES;
			ip_header(f, peer_mac, peer_ip, IPPROTO_ICMP, 8 + len);
			icmp = f + ETH_HLEN + 20;
			icmp[0] = 8;
			icmp[1] = 0;
			icmp[2] = icmp[3] = 0;
			put_be16(icmp + 4, ICMP_ID);
			put_be16(icmp + 6, n);
			copy(icmp + 8, pl, len);
			put_csum(icmp + 2, csum_fold(csum_add(0, icmp, 8 + len)));
			tx_end(slot, ETH_HLEN + 20 + 8 + len);
		}
	}
}

static void peer_check_done(void)
{
	uint32_t all = (1u << count) - 1;

	if (peer_reported || udp_back != all || icmp_back != all)
		return;
	peer_reported = true;
	gprintf("net: peer %u.%u.%u.%u mac %02x:%02x:%02x:%02x:%02x:%02x udp %u/%u icmp %u/%u\n",
		peer_ip[0], peer_ip[1], peer_ip[2], peer_ip[3], peer_mac[0], peer_mac[1],
		peer_mac[2], peer_mac[3], peer_mac[4], peer_mac[5], count, count, count, count);
}

/* Chains no driver may send: a header short of 12 bytes, a frame over
 * 65550 bytes, a device-writable buffer, and a 2-byte frame.  Each must
 * come back used; then everything goes on as before. */
static void send_malformed(void)
{
	int s[4];
	unsigned back = 0;

	/* Every slot free first, so that coming back is countable. */
	while (net.n_tx_free < VNET_QSIZE) {
		cpu_cli();
		if (!vnet_tx_reclaim(&net, &st.bad_used))
			cpu_sti_hlt();
		cpu_sti();
	}
	for (unsigned i = 0; i < 4; i++)
		s[i] = vnet_tx_slot(&net);
	for (unsigned i = 0; i < VNET_HDR_BYTES + 2; i++)
		net.txbuf[s[0]][i] = net.txbuf[s[3]][i] = 0;
	vnet_tx_raw(&net, s[0], net.txbuf[s[0]], 8, false);
	vnet_tx_raw(&net, s[1], big, VNET_HDR_BYTES + 70000, false);
	vnet_tx_raw(&net, s[2], net.txbuf[s[2]], VNET_HDR_BYTES + 60, true);
	vnet_tx_raw(&net, s[3], net.txbuf[s[3]], VNET_HDR_BYTES + 2, false);
	while (back < 4) {
		unsigned k;

		cpu_cli();
		k = vnet_tx_reclaim(&net, &st.bad_used);
		back += k;
		if (!k)
			cpu_sti_hlt();
		cpu_sti();
	}
	gprintf("net: malformed 4 sent, 4 returned\n");
}

/* ---- TCP ---- */

/* Byte @off of either direction's TCP stream. */
static uint8_t tcp_pattern(uint64_t off)
{
	return (uint8_t)(off * 131 + (off >> 8));
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
	put_be16(p, v >> 16);
	put_be16(p + 2, v & 0xffff);
}

/* Ethernet, IPv4 and TCP headers at @b + VNET_HDR_BYTES for a segment of
 * @len payload bytes (already in place after a 20-byte TCP header, or
 * after 24 bytes with the MSS option on a SYN); returns the frame length. */
static unsigned tcp_headers(uint8_t *b, unsigned flags, uint32_t seq, unsigned len)
{
	uint8_t *f = b + VNET_HDR_BYTES, *th = f + ETH_HLEN + 20;
	unsigned thl = flags & TCP_SYN ? 24 : 20;

	ip_header(f, tcp.mac, tcp.ip, IPPROTO_TCP, thl + len);
	put_be16(th, tcp_port);
	put_be16(th + 2, tcp.port);
	put_be32(th + 4, seq);
	put_be32(th + 8, flags & TCP_ACK ? tcp.rcv_nxt : 0);
	th[12] = (uint8_t)(thl / 4 << 4);
	th[13] = (uint8_t)flags;
	put_be16(th + 14, TCP_WINDOW);
	th[16] = th[17] = th[18] = th[19] = 0;
	if (thl == 24) {
		th[20] = 2; /* MSS */
		th[21] = 4;
		put_be16(th + 22, TCP_MSS);
	}
	return ETH_HLEN + 20 + thl + len;
}

/* A segment without payload: full checksum here. */
static void tcp_send_ctl(unsigned flags)
{
	uint8_t *b, *f;
	unsigned flen, thl = flags & TCP_SYN ? 24 : 20;
	int slot;

	if (!(b = tx_begin(&slot)))
		return;
	flen = tcp_headers(b, flags, flags & TCP_SYN ? tcp.iss : tcp.snd_nxt, 0);
	f = b + VNET_HDR_BYTES;
	put_csum(f + ETH_HLEN + 20 + 16, csum_fold(csum_add(pseudo_sum(f + ETH_HLEN, IPPROTO_TCP, thl),
							    f + ETH_HLEN + 20, thl)));
	tx_end(slot, flen);
}

/* Without net.tso: @len bytes of the stream from offset @off in one
 * segment of at most the MSS, its checksum computed here. */
static void tcp_send_seg(unsigned off, unsigned len)
{
	uint8_t *b, *f, *th;
	unsigned flen;
	int slot;

	while ((slot = vnet_tx_slot(&net)) < 0)
		cpu_pause();
	b = net.txbuf[slot];
	for (unsigned i = 0; i < VNET_HDR_BYTES; i++)
		b[i] = 0;
	f = b + VNET_HDR_BYTES;
	th = f + ETH_HLEN + 20;
	for (unsigned i = 0; i < len; i++)
		th[20 + i] = tcp_pattern(off + i);
	flen = tcp_headers(b, TCP_ACK, tcp.snd_nxt + off, len);
	put_csum(th + 16, csum_fold(csum_add(pseudo_sum(f + ETH_HLEN, IPPROTO_TCP, 20 + len), th,
					     20 + len)));
	tx_end(slot, flen);
}

/* The data sent once the connection is up: @len bytes of the stream from
 * offset 0.  With net.tso it is one GSO frame in `big` with segments of
 * the peer's MSS, the checksum left to the device (NEEDS_CSUM, the
 * pseudo-header sum over the whole length); without, MSS-sized segments. */
static void tcp_send_data(unsigned len)
{
	struct vnet_hdr *h = (struct vnet_hdr *)big;
	uint8_t *f = big + VNET_HDR_BYTES, *th = f + ETH_HLEN + 20;
	unsigned flen;
	int slot;

	if (!tso || len <= tcp.mss) {
		for (unsigned off = 0; off < len; off += tcp.mss)
			tcp_send_seg(off, len - off < tcp.mss ? len - off : tcp.mss);
		tcp.snd_nxt += len;
		gprintf("net: tcp sent %u bytes in %u frames, gso none mss %u\n", len,
			(len + tcp.mss - 1) / tcp.mss, tcp.mss);
		return;
	}
	while ((slot = vnet_tx_slot(&net)) < 0)
		cpu_pause();
	for (unsigned i = 0; i < VNET_HDR_BYTES; i++)
		big[i] = 0;
	for (unsigned i = 0; i < len; i++)
		th[20 + i] = tcp_pattern(i);
	flen = tcp_headers(big, TCP_ACK | 0x08 /* PSH */, tcp.snd_nxt, len);
	h->flags = VNET_HDR_F_NEEDS_CSUM;
	h->csum_start = ETH_HLEN + 20;
	h->csum_offset = 16;
	*(u16_unaligned *)(th + 16) = csum_fold(pseudo_sum(f + ETH_HLEN, IPPROTO_TCP, 20 + len));
	h->gso_type = VNET_GSO_TCPV4;
	h->gso_size = (uint16_t)tcp.mss;
	h->hdr_len = ETH_HLEN + 20 + 20;
	st.gso_tx++;
	st.csum_tx++;
	vnet_tx_raw(&net, slot, big, VNET_HDR_BYTES + flen, false);
	st.tx++;
	tcp.snd_nxt += len;
	gprintf("net: tcp sent %u bytes in 1 frames, gso tcpv4 mss %u\n", len, tcp.mss);
}

/* TCP segment @th of @l4len bytes in IPv4 packet @ip of frame @f. */
static void handle_tcp(uint8_t *f, uint8_t *ip, uint8_t *th, unsigned l4len)
{
	unsigned thl, flags, len;
	uint32_t seq, ack;

	if (l4len < 20 || (thl = (th[12] >> 4) * 4u) < 20 || thl > l4len) {
		st.bad_frame++;
		return;
	}
	if (be16(th + 2) != tcp_port)
		return;
	flags = th[13];
	seq = be32(th + 4);
	ack = be32(th + 8);
	len = l4len - thl;
	st.tcp_rx++;
	if ((flags & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
		tcp.state = TCP_SYN_RCVD;
		copy(tcp.mac, f + 6, 6);
		copy(tcp.ip, ip + 12, 4);
		tcp.port = be16(th);
		tcp.irs = seq;
		tcp.rcv_nxt = seq + 1;
		tcp.iss = 0x10000;
		tcp.snd_nxt = tcp.iss + 1;
		tcp.rx_bytes = 0;
		tcp.rx_bad = false;
		tcp.mss = 536;
		for (unsigned o = 20; o + 1 < thl;) { /* options: take the MSS */
			unsigned kind = th[o], olen = kind <= 1 ? 1 : th[o + 1];

			if (kind == 0 || olen < 1 || o + olen > thl)
				break;
			if (kind == 2 && olen == 4)
				tcp.mss = be16(th + o + 2);
			o += olen;
		}
		if (tcp.mss > TCP_MSS)
			tcp.mss = TCP_MSS;
		tcp_send_ctl(TCP_SYN | TCP_ACK);
		return;
	}
	if (tcp.state == TCP_NONE || tcp.port != be16(th) || !same(tcp.ip, ip + 12, 4) ||
	    (flags & TCP_RST))
		return;
	if (tcp.state == TCP_SYN_RCVD && (flags & TCP_ACK) && ack == tcp.iss + 1) {
		unsigned win = be16(th + 14);

		tcp.state = TCP_ESTABLISHED;
		tcp_send_data(win < TCP_MAX_SEG ? win : TCP_MAX_SEG);
	}
	if (tcp.state != TCP_ESTABLISHED)
		return;
	if (seq != tcp.rcv_nxt) {
		tcp_send_ctl(TCP_ACK); /* out of order or a repeat: say where we are */
		return;
	}
	for (unsigned i = 0; i < len; i++)
		if (th[thl + i] != tcp_pattern(tcp.rx_bytes + i))
			tcp.rx_bad = true;
	tcp.rx_bytes += len;
	tcp.rcv_nxt += len;
	if (flags & TCP_FIN) {
		tcp.rcv_nxt++;
		tcp.state = TCP_CLOSED;
		tcp_send_ctl(TCP_ACK | TCP_FIN);
		tcp.snd_nxt++;
		gprintf("net: tcp closed rx %lu bytes %s gso_rx %u max_rx_frame %u\n",
			(unsigned long)tcp.rx_bytes, tcp.rx_bad ? "BAD" : "ok", st.gso_rx,
			st.max_rx_frame);
	} else if (len) {
		tcp_send_ctl(TCP_ACK);
	}
}

/* ---- receiving ---- */

/* Control datagram @pl (@len bytes) in UDP @udp of IPv4 packet @ip, from
 * @src_mac. */
static void handle_ctl(const uint8_t *ip, const uint8_t *udp, const uint8_t *src_mac,
		       const uint8_t *pl, unsigned len)
{
	static const uint8_t ok[] = "ok";

	st.ctl++;
	if (len == 4 && same(pl, (const uint8_t *)"quit", 4)) {
		stop = true;
	} else if (len == 2 && same(pl, (const uint8_t *)"go", 2) && has_peer) {
		if (!peer_known)
			send_arp(1, NULL, (const uint8_t *)"\0\0\0\0\0\0", peer_ip);
		else
			peer_send();
	} else if (len == 3 && same(pl, (const uint8_t *)"bad", 3)) {
		send_malformed();
	} else {
		return;
	}
	send_udp(src_mac, ip + 12, be16(udp + 2), be16(udp), ok, 2);
}

/* UDP datagram @udp of @l4len bytes in IPv4 packet @ip of frame @f. */
static void handle_udp(uint8_t *f, uint8_t *ip, uint8_t *udp, unsigned l4len)
{
	unsigned ulen = be16(udp + 4), dport = be16(udp + 2), sport = be16(udp);
	const uint8_t *pl = udp + 8;

	if (l4len < 8 || ulen < 8 || ulen > l4len) {
		st.bad_frame++;
		return;
	}
	if (dport == echo_port) {
		send_udp(f + 6, ip + 12, dport, sport, pl, ulen - 8);
		st.udp++;
	} else if (dport == ctl_port) {
		handle_ctl(ip, udp, f + 6, pl, ulen - 8);
	} else if (dport == CLIENT_PORT && has_peer && same(ip + 12, peer_ip, 4)) {
		for (unsigned n = 0; n < count; n++) {
			unsigned len = peer_len(n), i;

			if (ulen - 8 != len)
				continue;
			for (i = 0; i < len && pl[i] == peer_pattern(n, i); i++)
				;
			if (i == len)
				udp_back |= 1u << n;
		}
		peer_check_done();
	}
}

/* ICMP message @icmp of @l4len bytes in IPv4 packet @ip of frame @f. */
static void handle_icmp(uint8_t *f, uint8_t *ip, uint8_t *icmp, unsigned l4len)
{
	uint8_t *b, *r;
	int slot;

	if (l4len < 8)
		return;
	if (icmp[0] == 0 && has_peer && be16(icmp + 4) == ICMP_ID && same(ip + 12, peer_ip, 4)) {
		unsigned n = be16(icmp + 6), i;

		if (n < count && l4len - 8 == peer_len(n)) {
			for (i = 0; i < l4len - 8 && icmp[8 + i] == peer_pattern(n, i); i++)
				;
			if (i == l4len - 8)
				icmp_back |= 1u << n;
		}
		peer_check_done();
		return;
	}
	if (icmp[0] != 8 || icmp[1] != 0 || l4len > net.mtu - 20u || !(b = tx_begin(&slot)))
		return;
	r = b + VNET_HDR_BYTES;
	ip_header(r, f + 6, ip + 12, IPPROTO_ICMP, l4len);
	copy(r + ETH_HLEN + 20, icmp, l4len);
	r[ETH_HLEN + 20] = 0; /* echo reply */
	r[ETH_HLEN + 22] = r[ETH_HLEN + 23] = 0;
	put_csum(r + ETH_HLEN + 22, csum_fold(csum_add(0, r + ETH_HLEN + 20, l4len)));
	tx_end(slot, ETH_HLEN + 20 + l4len);
	st.icmp++;
}

/* ARP packet @a of @len bytes. */
static void handle_arp(const uint8_t *a, unsigned len)
{
	unsigned op;

	if (len < 28 || be16(a) != 1 || be16(a + 2) != ETH_P_IP || a[4] != 6 || a[5] != 4) {
		st.bad_frame++;
		return;
	}
	op = be16(a + 6);
	if (has_peer && same(a + 14, peer_ip, 4) && (op == 1 || op == 2)) {
		bool first = !peer_known;

		copy(peer_mac, a + 8, 6);
		peer_known = true;
		if (first && op == 2)
			peer_send();
	}
	if (op == 1 && same(a + 24, my_ip, 4)) {
		send_arp(2, a + 8, a + 8, a + 14);
		st.arp++;
	}
}

/* The IPv4 packet in frame @f (@flen bytes) with header @h. */
static void handle_ip(const struct vnet_hdr *h, uint8_t *f, unsigned flen)
{
	uint8_t *ip = f + ETH_HLEN, *l4;
	unsigned ihl, tot, l4len, proto;
	bool trusted = false;

	if (flen < ETH_HLEN + 20 || (ip[0] >> 4) != 4) {
		st.bad_frame++;
		return;
	}
	ihl = (ip[0] & 15u) * 4;
	tot = be16(ip + 2);
	if (ihl < 20 || tot < ihl || tot > flen - ETH_HLEN) {
		st.bad_frame++;
		return;
	}
	if (!same(ip + 16, my_ip, 4))
		return;
	if (csum_fold(csum_add(0, ip, ihl)) != 0xffff) {
		st.bad_csum++;
		return;
	}
	if (be16(ip + 6) & 0x3fff)
		return; /* a fragment: not for this host */
	proto = ip[9];
	l4 = ip + ihl;
	l4len = tot - ihl;
	if (h->flags & VNET_HDR_F_NEEDS_CSUM) {
		st.rx_needs_csum++; /* a partial checksum: the data is good */
		trusted = true;
	} else if (h->flags & VNET_HDR_F_DATA_VALID) {
		st.rx_data_valid++;
		trusted = true;
	}
	if (proto == IPPROTO_TCP) {
		if (!trusted) {
			st.rx_checked++;
			if (csum_fold(csum_add(pseudo_sum(ip, IPPROTO_TCP, l4len), l4, l4len)) != 0xffff) {
				st.bad_csum++;
				return;
			}
		}
		handle_tcp(f, ip, l4, l4len);
	} else if (proto == IPPROTO_UDP) {
		if (!trusted && l4len >= 8 && (l4[6] | l4[7])) {
			st.rx_checked++;
			if (csum_fold(csum_add(pseudo_sum(ip, IPPROTO_UDP, l4len), l4, l4len)) !=
			    0xffff) {
				st.bad_csum++;
				return;
			}
		}
		handle_udp(f, ip, l4, l4len);
	} else if (proto == IPPROTO_ICMP) {
		if (!trusted) {
			st.rx_checked++;
			if (csum_fold(csum_add(0, l4, l4len)) != 0xffff) {
				st.bad_csum++;
				return;
			}
		}
		handle_icmp(f, ip, l4, l4len);
	}
}

/* One received frame: header and Ethernet frame, @len bytes at @buf. */
static void handle_frame(uint8_t *buf, uint32_t len)
{
	const struct vnet_hdr *h = (const struct vnet_hdr *)buf;
	uint8_t *f = buf + VNET_HDR_BYTES;
	unsigned flen = len - VNET_HDR_BYTES, type;
	bool bcast = true;

	st.rx++;
	if (len < VNET_HDR_BYTES + ETH_HLEN || len > RXBIG_BYTES) {
		st.bad_frame++;
		return;
	}
	/* Flags only with GUEST_CSUM, GSO only with GUEST_TSO4, and then
	 * TCPv4 only with NEEDS_CSUM (section 5.1.6.4). */
	if ((h->flags & ~(VNET_HDR_F_NEEDS_CSUM | VNET_HDR_F_DATA_VALID)) ||
	    (h->flags && !offload) ||
	    (h->gso_type != VNET_GSO_NONE &&
	     (!tso || h->gso_type != VNET_GSO_TCPV4 || !(h->flags & VNET_HDR_F_NEEDS_CSUM)))) {
		st.bad_hdr++;
		return;
	}
	if (h->gso_type && flen > ETH_HLEN + 1500u)
		st.gso_rx++;
	if (flen > st.max_rx_frame)
		st.max_rx_frame = flen;
	for (unsigned i = 0; i < 6; i++)
		bcast = bcast && f[i] == 0xff;
	if (!bcast && !same(f, net.mac, 6))
		return;
	type = be16(f + 12);
	if (type == ETH_P_ARP)
		handle_arp(f + ETH_HLEN, flen - ETH_HLEN);
	else if (type == ETH_P_IP)
		handle_ip(h, f, flen);
}

/* Handle every frame the device has delivered; returns how many. */
static unsigned poll_rx(void)
{
	unsigned k = 0;
	uint16_t id;
	uint8_t *buf;
	uint32_t len;

	while (vnet_rx(&net, &id, &buf, &len)) {
		unsigned nb = len >= VNET_HDR_BYTES && len <= VNET_BUF ?
				      ((struct vnet_hdr *)buf)->num_buffers : 0;
		uint32_t total;
		bool bad = false;

		k++;
		/* Without MRG_RXBUF every frame is one buffer: num_buffers 1. */
		if (nb == 1 || !nb || nb > VNET_QSIZE || !tso) {
			if (nb == 1)
				handle_frame(buf, len);
			else
				st.bad_hdr++;
			vnet_rx_done(&net, id);
			continue;
		}
		/* The device uses all @nb buffers before it publishes the
		 * last: the rest come at once. */
		copy(rxbig, buf, len);
		total = len;
		vnet_rx_done(&net, id);
		for (unsigned i = 1; i < nb; i++) {
			while (!vnet_rx(&net, &id, &buf, &len))
				cpu_pause();
			if (len > VNET_BUF || total + len > RXBIG_BYTES)
				bad = true;
			else
				copy(rxbig + total, buf, len);
			total += len;
			vnet_rx_done(&net, id);
		}
		vnet_rx_kick(&net);
		if (bad)
			st.bad_hdr++;
		else
			handle_frame(rxbig, total);
	}
	vnet_rx_kick(&net);
	return k;
}

static void on_irq(struct isr_frame *f)
{
	(void)f;
	vdev_write(&net.rx, VMMIO_INTERRUPT_ACK, vdev_read(&net.rx, VMMIO_INTERRUPT_STATUS));
	irqs++;
	lapic_eoi();
}

static void on_spurious(struct isr_frame *f)
{
	(void)f;
}

int guest_main(void)
{
	char s[32];
	unsigned n, want = (unsigned)cmdline_get_int("net.dev", 0), k = 0;
	const struct virtio_mmio_dev *m = NULL;
	uint64_t features = VF_VERSION_1 | VNET_F_MAC | VNET_F_STATUS | VNET_F_MTU;
	int err;

	if (!cmdline_get("net.ip", s, sizeof(s)) || !parse_ip(s, my_ip)) {
		gprintf("net: FAIL no net.ip=A.B.C.D\n");
		return F_USAGE;
	}
	has_peer = cmdline_get("net.peer", s, sizeof(s)) && parse_ip(s, peer_ip);
	echo_port = (unsigned)cmdline_get_int("net.echo", 7);
	ctl_port = (unsigned)cmdline_get_int("net.ctl", 9);
	offload = cmdline_get_int("net.offload", 1) != 0;
	count = (unsigned)cmdline_get_int("net.count", 5);
	tcp_port = (unsigned)cmdline_get_int("net.tcp", 5001);
	tso = offload && cmdline_get_int("net.tso", 0) != 0;
	if (count > MAX_COUNT)
		count = MAX_COUNT;
	n = virtio_scan(devs, MAX_DEVS);
	for (unsigned i = 0; i < n && !m; i++)
		if ((devs[i].pci ? devs[i].pci->device_id == VIRTIO_ID_NET :
		     mmio_read32(devs[i].base + VMMIO_MAGIC_VALUE) == VMMIO_MAGIC &&
		     mmio_read32(devs[i].base + VMMIO_DEVICE_ID) == VIRTIO_ID_NET) && k++ == want)
			m = &devs[i];
	if (!m) {
		gprintf("net: FAIL no virtio-net device %u\n", want);
		return F_USAGE;
	}
	if (offload)
		features |= VNET_F_CSUM | VNET_F_GUEST_CSUM;
	if (tso)
		features |= VNET_F_HOST_TSO4 | VNET_F_GUEST_TSO4 | VNET_F_MRG_RXBUF;

	outb(0x21, 0xff);
	outb(0xa1, 0xff);
	idt_set_handler(IRQ_VECTOR, on_irq);
	idt_set_handler(SPURIOUS_VECTOR, on_spurious);
	lapic_enable(SPURIOUS_VECTOR);
	rxwait = cmdline_get_int("net.rxwait", 0) != 0;
	err = vnet_open(&net, m, features, rxwait);
	if (err) {
		gprintf("net: FAIL vnet_open: %d (offered 0x%lx)\n", err, net.rx.offered);
		return F_INIT;
	}
	vdev_route_irq(&net.rx, IRQ_VECTOR, lapic_id());
	gprintf("net: transport %s\n", m->pci ? "pci" : "mmio");
	gprintf("net: ready mac %02x:%02x:%02x:%02x:%02x:%02x ip %u.%u.%u.%u mtu %u csum %u "
		"guest_csum %u tso %u link %s\n",
		net.mac[0], net.mac[1], net.mac[2], net.mac[3], net.mac[4], net.mac[5], my_ip[0],
		my_ip[1], my_ip[2], my_ip[3], net.mtu, offload, offload, tso,
		vdev_config32(&net.rx, 4) >> 16 & VNET_S_LINK_UP ? "up" : "down");

	if (rxwait) {
		/* Polling COM1 spins this vCPU, not vmrun's device thread. */
		while (!(inb(COM1_PORT + UART_LSR) & UART_LSR_DR))
			cpu_pause();
		(void)inb(COM1_PORT + UART_RBR);
		vnet_rx_post_all(&net);
		gprintf("net: rx buffers posted\n");
	}
	while (!stop) {
		if (poll_rx())
			continue;
		vnet_tx_reclaim(&net, &st.bad_used);
		cpu_cli();
		if (vq_used_idx(&net.rx) == net.rx.last_used)
			cpu_sti_hlt();
		cpu_sti();
	}
	gprintf("net: stats rx %u tx %u arp %u icmp %u udp %u ctl %u csum_tx %u rx_needs_csum %u "
		"rx_data_valid %u rx_checked %u bad_csum %u bad_frame %u bad_hdr %u bad_used %u "
		"tx_full %u tcp_rx %u gso_rx %u gso_tx %u max_rx_frame %u irqs %u\n",
		st.rx, st.tx, st.arp, st.icmp, st.udp, st.ctl, st.csum_tx, st.rx_needs_csum,
		st.rx_data_valid, st.rx_checked, st.bad_csum, st.bad_frame, st.bad_hdr, st.bad_used,
		st.tx_full, st.tcp_rx, st.gso_rx, st.gso_tx, st.max_rx_frame, irqs);
	return 0;
}

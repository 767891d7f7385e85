/* net_floor: the floor for bench/net, and its frame injector.
 *
 * The least a VMM's tap path can do: move the frames of bench/net_frames.h
 * through a tap fd with plain write() and read(), one frame per call, the
 * tap opened like vmrun opens it (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, a
 * 12-byte vnet header, TUNSETOFFLOAD as a guest that negotiated
 * GUEST_CSUM and GUEST_TSO4 makes vmrun set it for 64 KiB frames, none for
 * 64-byte ones):
 *
 *   net_floor tx --tap NAME --size 64|64k --time S [--buffers N]
 *       writes frames (TX kind, guest to host) for S seconds, a new
 *       sequence number stamped into each, and counts the writes the tap
 *       accepted;
 *   net_floor rx --tap NAME --size 64|64k [--buffers N] [--verify]
 *       attaches, prints "ready", waits for a line "go COUNT" on stdin
 *       (the injector has queued COUNT frames in the tap by then), and
 *       reads COUNT frames (RX kind), timed from the first read() to the
 *       last.  Sequence numbers must be 0, 1, 2, ...: the queue had room
 *       for every frame.  --verify compares every byte;
 *   net_floor inject --tap NAME --size 64|64k --count COUNT
 *       queues COUNT RX-kind frames into the tap from the host side (an
 *       AF_PACKET socket bound to the tap, PACKET_QDISC_BYPASS, sendmmsg()
 *       in batches; 64 KiB frames as one GSO packet each through
 *       PACKET_VNET_HDR) and prints {"sent": COUNT}.  The tap's
 *       txqueuelen must hold them all: a refused frame is an error.
 *
 * tx and rx cycle through N frame buffers (--buffers, default 1), one per
 * call, so that the floor touches as much memory as the harness's rings
 * do (bench/net.py passes the harness's numbers: a floor that always
 * writes one cache-hot buffer would be faster than any driver can be).
 *
 * tx and rx print one JSON object: frames, bytes (frame bytes without the
 * vnet header), seconds, cpu_seconds, foreign (frames not ours, rx),
 * errors.  Exit status 0, 1 when a frame was wrong or a call failed, 2 on
 * a usage or set-up error. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/if.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_time.h"
#include "net_frames.h"

#define INJECT_BATCH 64
#define MAX_REPORTED 10

/* Attach to tap @name as vmrun does, blocking, with the offloads a guest
 * that negotiated GUEST_CSUM and GUEST_TSO4 asks for when @size is large.
 * Returns the fd or -errno (reason printed). */
static int tap_attach(const char *name, size_t size)
{
	struct ifreq ifr;
	int hdr = NETB_HDR, fd;
	unsigned long off = size > NETB_SMALL ? TUN_F_CSUM | TUN_F_TSO4 : 0;

	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "net_floor: /dev/net/tun: %s\n", strerror(errno));
		return -errno;
	}
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0 ||
	    ioctl(fd, TUNSETOFFLOAD, off) < 0) {
		int r = -errno;

		fprintf(stderr, "net_floor: tap %s: %s\n", name, strerror(-r));
		close(fd);
		return r;
	}
	return fd;
}

static void print_result(uint64_t frames, size_t size, double seconds, double cpu,
			 uint64_t foreign, uint64_t errors)
{
	printf("{\"frames\": %" PRIu64 ", \"bytes\": %" PRIu64 ", \"seconds\": %.6f, "
	       "\"cpu_seconds\": %.4f, \"foreign\": %" PRIu64 ", \"errors\": %" PRIu64 "}\n",
	       frames, frames * (uint64_t)size, seconds, cpu, foreign, errors);
	fflush(stdout);
}

static int run_tx(const char *tap, size_t size, double seconds, unsigned n_bufs)
{
	const size_t stride = (NETB_HDR + size + 4095) & ~(size_t)4095;
	uint8_t *bufs = malloc(stride * n_bufs);
	uint64_t frames = 0, errors = 0;
	double t0, t, cpu0;
	int fd;

	if (!bufs)
		return 2;
	fd = tap_attach(tap, size);
	if (fd < 0) {
		free(bufs);
		return 2;
	}
	for (unsigned i = 0; i < n_bufs; i++)
		netb_build(bufs + stride * i, NETB_TX, size, 0);
	cpu0 = cpu_s();
	t0 = t = now_s();
	while (t - t0 < seconds) {
		uint8_t *buf = bufs + stride * (frames % n_bufs);
		ssize_t w;

		netb_set_seq(buf + NETB_HDR, NETB_TX, size, frames);
		w = write(fd, buf, NETB_HDR + size);
		if (w != (ssize_t)(NETB_HDR + size)) {
			if (errors++ < MAX_REPORTED)
				fprintf(stderr, "net_floor: write to %s: %s\n", tap,
					w < 0 ? strerror(errno) : "short write");
			if (errors > 1000)
				break;
		} else {
			frames++;
		}
		/* The clock every 16 frames, about as often as the harness
		 * reads it (once per interrupt, and per batch of completions). */
		if (!(frames & 15))
			t = now_s();
	}
	t = now_s();
	print_result(frames, size, t - t0, cpu_s() - cpu0, 0, errors);
	close(fd);
	free(bufs);
	return errors ? 1 : 0;
}

static int run_rx(const char *tap, size_t size, int verify, unsigned n_bufs)
{
	const size_t stride = (NETB_HDR + size + 4096 + 4095) & ~(size_t)4095;
	uint8_t *bufs = malloc(stride * n_bufs), *expect = malloc(NETB_HDR + size);
	uint64_t frames = 0, foreign = 0, errors = 0, reads = 0, want;
	double t0, cpu0;
	int fd;

	if (!bufs || !expect) {
		free(bufs);
		free(expect);
		return 2;
	}
	fd = tap_attach(tap, size);
	if (fd < 0) {
		free(bufs);
		free(expect);
		return 2;
	}
	memset(bufs, 0, stride * n_bufs); /* touched, as a guest's buffers are */
	want = netb_ready_go();
	if (!want) {
		fprintf(stderr, "net_floor: no \"go N\" on stdin\n");
		close(fd);
		free(bufs);
		free(expect);
		return 2;
	}
	cpu0 = cpu_s();
	t0 = now_s();
	while (frames < want) {
		uint8_t *buf = bufs + stride * (reads++ % n_bufs);
		ssize_t got = read(fd, buf, stride);
		const uint8_t *f = buf + NETB_HDR;
		uint64_t seq;
		size_t at = 0;

		if (got < 0) {
			fprintf(stderr, "net_floor: read from %s: %s\n", tap, strerror(errno));
			errors++;
			break;
		}
		if (got < NETB_HDR || !netb_is_ours(f, (size_t)got - NETB_HDR, NETB_RX, size)) {
			foreign++;
			continue;
		}
		seq = netb_get_seq(f, NETB_RX, size);
		if ((size_t)got != NETB_HDR + size || netb_check_hdr(buf, size) < 0 || seq != frames ||
		    (verify && netb_check_frame(f, (size_t)got - NETB_HDR, NETB_RX, size, seq, expect,
						&at) < 0)) {
			if (errors++ < MAX_REPORTED)
				fprintf(stderr, "net_floor: bad frame: %zd bytes, gso type %u size %u, "
					"seq %" PRIu64 " (want %" PRIu64 "), byte %zu\n", got, buf[1],
					buf[4] | buf[5] << 8, seq, frames, at);
		}
		frames++;
	}
	print_result(frames, size, now_s() - t0, cpu_s() - cpu0, foreign, errors);
	close(fd);
	free(bufs);
	free(expect);
	return errors ? 1 : 0;
}

/* Queue @count frames into the tap from the host side; the reader must
 * have room for all of them (the tap's txqueuelen).  Prints
 * {"sent": N}.  Returns 0, or 1 when the tap refused a frame. */
static int run_inject(const char *tap, size_t size, uint64_t count)
{
	static struct mmsghdr msgs[INJECT_BATCH];
	static struct iovec iov[INJECT_BATCH];
	/* PACKET_VNET_HDR takes the 10-byte virtio_net_hdr, without num_buffers. */
	size_t hdr = size > NETB_SMALL ? 10 : 0, len = hdr + size;
	uint8_t *bufs = malloc((NETB_HDR + size) * INJECT_BATCH);
	struct sockaddr_ll sll;
	struct ifreq ifr;
	uint64_t sent = 0;
	int fd, one = 1, status = 0;

	if (!bufs)
		return 2;
	fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0); /* protocol 0: receives nothing */
	if (fd < 0) {
		fprintf(stderr, "net_floor: AF_PACKET socket: %s\n", strerror(errno));
		free(bufs);
		return 2;
	}
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", tap);
	memset(&sll, 0, sizeof(sll));
	sll.sll_family = AF_PACKET;
	sll.sll_ifindex = ioctl(fd, SIOCGIFINDEX, &ifr) < 0 ? 0 : ifr.ifr_ifindex;
	sll.sll_protocol = htons(size > NETB_SMALL ? ETH_P_IP : NETB_ETHERTYPE_RX);
	if (!sll.sll_ifindex || bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0 ||
	    setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)) < 0 ||
	    (hdr && setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one)) < 0)) {
		fprintf(stderr, "net_floor: AF_PACKET on %s: %s\n", tap, strerror(errno));
		close(fd);
		free(bufs);
		return 2;
	}
	/* Buffer i: a 12-byte vnet header and the frame; the socket is given
	 * the last @hdr bytes of the header (the first 10 of virtio_net_hdr_v1
	 * are virtio_net_hdr, moved there) and the frame. */
	for (unsigned i = 0; i < INJECT_BATCH; i++) {
		uint8_t *b = bufs + (NETB_HDR + size) * i;

		netb_build(b, NETB_RX, size, 0);
		if (hdr)
			memmove(b + NETB_HDR - hdr, b, hdr);
		iov[i].iov_base = b + NETB_HDR - hdr;
		iov[i].iov_len = len;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	while (sent < count) {
		unsigned batch = count - sent < INJECT_BATCH ? (unsigned)(count - sent) : INJECT_BATCH;
		int n;

		for (unsigned i = 0; i < batch; i++)
			netb_set_seq(bufs + (NETB_HDR + size) * i + NETB_HDR, NETB_RX, size, sent + i);
		n = sendmmsg(fd, msgs, batch, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			/* ENOBUFS: the tap's queue is full, or nobody reads it. */
			fprintf(stderr, "net_floor: inject into %s after %" PRIu64 " frames: %s\n", tap,
				sent, strerror(errno));
			status = 1;
			break;
		}
		sent += (unsigned)n;
	}
	printf("{\"sent\": %" PRIu64 "}\n", sent);
	close(fd);
	free(bufs);
	return status;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: net_floor tx --tap NAME --size 64|64k --time S [--buffers N]\n"
		   "       net_floor rx --tap NAME --size 64|64k [--buffers N] [--verify]\n"
		   "       net_floor inject --tap NAME --size 64|64k --count N\n");
}

int main(int argc, char **argv)
{
	const char *mode, *tap = NULL;
	size_t size = NETB_SMALL;
	double seconds = 0;
	unsigned n_bufs = 1;
	uint64_t count = 0;
	int verify = 0;

	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	mode = argv[1];
	for (int i = 2; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(argv[i], "--tap") && v) {
			tap = v;
		} else if (!strcmp(argv[i], "--size") && v) {
			size = !strcmp(v, "64") ? NETB_SMALL : !strcmp(v, "64k") ? NETB_LARGE : 0;
		} else if (!strcmp(argv[i], "--time") && v) {
			seconds = strtod(v, NULL);
		} else if (!strcmp(argv[i], "--buffers") && v) {
			n_bufs = (unsigned)strtoul(v, NULL, 10);
		} else if (!strcmp(argv[i], "--count") && v) {
			count = strtoull(v, NULL, 10);
		} else if (!strcmp(argv[i], "--verify")) {
			verify = 1;
			continue;
		} else {
			usage(stderr);
			return 2;
		}
		i++;
	}
	if (!tap || !size || n_bufs < 1 || n_bufs > 4096) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(mode, "tx") && seconds > 0)
		return run_tx(tap, size, seconds, n_bufs);
	if (!strcmp(mode, "rx"))
		return run_rx(tap, size, verify, n_bufs);
	if (!strcmp(mode, "inject") && count)
		return run_inject(tap, size, count);
	usage(stderr);
	return 2;
}

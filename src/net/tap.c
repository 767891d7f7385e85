// SPDX-License-Identifier: MIT
/*
 * Tap backend for virtio-net: /dev/net/tun with IFF_TAP | IFF_NO_PI |
 * IFF_VNET_HDR.  The vnet header size is 12 bytes (virtio_net_hdr_v1, with
 * num_buffers), the header every VERSION_1 driver uses, so TX chains go to
 * the tap as they are and RX frames come with their header in place.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "vmrun/log.h"
#include "vmrun/tap.h"

_Static_assert(TAP_NAME_MAX == IFNAMSIZ, "tap names are interface names");
_Static_assert(TAP_OFFLOAD_CSUM == TUN_F_CSUM && TAP_OFFLOAD_TSO4 == TUN_F_TSO4 &&
		       TAP_OFFLOAD_TSO6 == TUN_F_TSO6,
	       "TAP_OFFLOAD_* are TUN_F_*");

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

int tap_open(struct tap *t, const char *name, char *err, size_t errlen)
{
	return tap_open_queue(t, name, false, err, errlen);
}

int tap_open_queue(struct tap *t, const char *name, bool multi_queue, char *err, size_t errlen)
{
	struct ifreq ifr;
	int hdr = TAP_VNET_HDR_BYTES, r;

	memset(t, 0, sizeof(*t));
	t->fd = -1;
	if (!name || !name[0] || strlen(name) >= IFNAMSIZ)
		return errmsg(-EINVAL, err, errlen, "tap '%s': an interface name is 1 to %d characters",
			      name ? name : "", IFNAMSIZ - 1);
	snprintf(t->name, sizeof(t->name), "%s", name);
	t->fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (t->fd < 0) {
		r = -errno;
		return errmsg(r, err, errlen, "tap %s: /dev/net/tun: %s%s", name, strerror(-r),
			      r == -ENOENT ? " (no tun device node: modprobe tun, or mknod "
					     "/dev/net/tun c 10 200)" : "");
	}
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (multi_queue ? IFF_MULTI_QUEUE : 0);
	memcpy(ifr.ifr_name, name, strlen(name));
	if (ioctl(t->fd, TUNSETIFF, &ifr) < 0) {
		r = -errno;
		errmsg(r, err, errlen, "tap %s: TUNSETIFF: %s%s", name, strerror(-r),
		       r == -EPERM ? " (creating a tap, or attaching to one owned by another user, "
				     "needs CAP_NET_ADMIN; or create it first with `ip tuntap add "
				     "NAME mode tap user $USER`)" :
		       r == -EBUSY ? " (the interface is in use by another process, or is not "
				     "a single-queue tap)" :
		       r == -EINVAL && multi_queue ?
				" (queues=N needs a multi-queue tap: `ip tuntap add NAME mode tap "
				"multi_queue`, or let vmrun create it)" :
		       r == -EINVAL ? " (is it a tun rather than a tap interface, or a multi-queue "
				      "one? then give queues=N)" : "");
		goto fail;
	}
	if (ioctl(t->fd, TUNSETVNETHDRSZ, &hdr) < 0) {
		r = -errno;
		errmsg(r, err, errlen, "tap %s: TUNSETVNETHDRSZ %d: %s", name, hdr, strerror(-r));
		goto fail;
	}
	/* No offloads until the guest negotiated them (tap_set_offload()). */
	if (ioctl(t->fd, TUNSETOFFLOAD, 0u) < 0) {
		r = -errno;
		errmsg(r, err, errlen, "tap %s: TUNSETOFFLOAD: %s", name, strerror(-r));
		goto fail;
	}
	t->is_tap = true;
	return 0;
fail:
	close(t->fd);
	t->fd = -1;
	return r;
}

int tap_open_fd(struct tap *t, int fd, const char *name)
{
	int r;

	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "%s", name ? name : "fd");
	t->fd = fd;
	r = set_nonblock(fd);
	if (r) {
		t->fd = -1;
		return r;
	}
	return 0;
}

int tap_set_queue_enabled(struct tap *t, bool enabled, char *err, size_t errlen)
{
	struct ifreq ifr;

	if (!t->is_tap)
		return 0;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = enabled ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE;
	/* EINVAL: already in that state (or a single-queue tap, which has
	 * only the one queue, always attached). */
	if (ioctl(t->fd, TUNSETQUEUE, &ifr) < 0 && errno != EINVAL)
		return errmsg(-errno, err, errlen, "tap %s: TUNSETQUEUE %s: %s", t->name,
			      enabled ? "attach" : "detach", strerror(errno));
	return 0;
}

int tap_set_offload(struct tap *t, unsigned offloads, char *err, size_t errlen)
{
	if (!t->is_tap)
		return 0;
	if (ioctl(t->fd, TUNSETOFFLOAD, (unsigned long)offloads) < 0)
		return errmsg(-errno, err, errlen, "tap %s: TUNSETOFFLOAD 0x%x: %s", t->name, offloads,
			      strerror(errno));
	return 0;
}

void tap_close(struct tap *t)
{
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
}

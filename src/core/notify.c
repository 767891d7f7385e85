/* sd_notify without libsystemd: the protocol is one datagram of
 * newline-separated VAR=VALUE lines to the AF_UNIX socket in NOTIFY_SOCKET
 * (systemd's sd_notify(3)). */
#include "vmrun/notify.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int notify_send(const char *socket_path, const char *state)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	size_t len = socket_path ? strlen(socket_path) : 0;
	socklen_t addrlen;
	ssize_t n;
	int fd, r = 0;

	if (!len)
		return 0;
	if ((socket_path[0] != '/' && socket_path[0] != '@') || len < 2 ||
	    len > sizeof(addr.sun_path))
		return -EINVAL;
	if (socket_path[0] == '/' && len == sizeof(addr.sun_path))
		return -EINVAL; /* no room for the NUL a path needs */
	memcpy(addr.sun_path, socket_path, len);
	if (socket_path[0] == '@')
		addr.sun_path[0] = '\0'; /* abstract: the name is the bytes after it, no NUL */
	addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
			      (socket_path[0] == '/' ? 1 : 0));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&addr, addrlen);
	if (n < 0)
		r = -errno;
	else if ((size_t)n != strlen(state))
		r = -EMSGSIZE;
	close(fd);
	return r;
}

/* Readiness for service supervisors: systemd's sd_notify protocol, written
 * with a plain sendto (src/core/notify.c; libsystemd is not a dependency). */
#ifndef VMRUN_NOTIFY_H
#define VMRUN_NOTIFY_H

/* Send @state (for example "READY=1") as one datagram to the unix socket
 * named by @socket_path: a filesystem path, or '@' then a name in the
 * abstract namespace (how systemd's NOTIFY_SOCKET spells it).  @socket_path
 * NULL or empty: nothing to do, returns 0.  Returns 0 or -errno
 * (-EINVAL: not an absolute path nor '@NAME', or too long for sun_path). */
int notify_send(const char *socket_path, const char *state) __attribute__((warn_unused_result));

#endif

/* `vmrun ctl SOCKET COMMAND [KEY=VALUE ...]`: the control-socket client for
 * scripts (src/core/ctl_client.c). */
#ifndef VMRUN_CTL_H
#define VMRUN_CTL_H

/* Exit statuses of `vmrun ctl`. */
enum ctl_status {
	CTL_OK = 0,         /* the command succeeded; its result is on stdout */
	CTL_FAILED = 1,     /* vmrun answered with an error */
	CTL_USAGE = 2,      /* bad arguments */
	CTL_NO_CONNECT = 3, /* no vmrun at SOCKET, or the connection broke */
	CTL_TIMEOUT = 4,    /* no reply (or no guest-exit event) within the limit */
};

/* How long `vmrun ctl` waits for a reply without --timeout, in seconds:
 * every command but save (which writes all of guest RAM), and the
 * acknowledgement of wait-exit (its event has no limit by default). */
#define CTL_TIMEOUT_DEFAULT_S 30
#define CTL_TIMEOUT_SAVE_S 600
#define CTL_TIMEOUT_MAX_S 86400000

/* Run the client; @argv[0] is "ctl".  Returns an enum ctl_status. */
int ctl_main(int argc, char *const argv[]);

#endif

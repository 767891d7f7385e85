/* --exit-json: the run's verdict as one JSON object, written atomically. */
#include "vmrun/exit_report.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmrun/fdio.h"
#include "vmrun/log.h"

double exit_report_ms(const struct timespec *from, const struct timespec *to)
{
	return (double)(to->tv_sec - from->tv_sec) * 1e3 +
	       (double)(to->tv_nsec - from->tv_nsec) / 1e6;
}

/* A time in ms, to the microsecond, or null when it did not happen. */
static json_t *ms_value(double ms)
{
	double us;

	if (ms < 0 || !isfinite(ms))
		return json_null();
	/* Rounded to the nearest microsecond without libm (whose load alone
	 * costs every run resident memory): exact below 2^53 us. */
	us = ms * 1e3;
	if (us < 0x1p53)
		us = (double)(uint64_t)(us + 0.5);
	return json_real(us / 1e3);
}

static json_t *exit_report_json(const struct exit_report *rep)
{
	json_t *o = json_object();

	if (!o)
		return NULL;
	json_object_set_new(o, "status", json_integer(rep->status));
	json_object_set_new(o, "kind", json_string(rep->kind));
	json_object_set_new(o, "debug_exit_value", rep->has_debug_exit ?
				   json_integer((json_int_t)rep->debug_exit_value) : json_null());
	json_object_set_new(o, "reason", json_string(rep->reason ? rep->reason : ""));
	json_object_set_new(o, "ms_to_first_instruction", ms_value(rep->ms_to_first_instruction));
	json_object_set_new(o, "ms_to_first_output", ms_value(rep->ms_to_first_output));
	json_object_set_new(o, "ms_total", ms_value(rep->ms_total));
	json_object_set_new(o, "vmrun_version", json_string(rep->version ? rep->version : ""));
	return o;
}

/* The directory part of @path into @dir ("." when it has none). */
static void dir_of(const char *path, char *dir, size_t len)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		snprintf(dir, len, ".");
	else if (slash == path)
		snprintf(dir, len, "/");
	else
		snprintf(dir, len, "%.*s", (int)(slash - path), path);
}

int exit_report_write(const char *path, const struct exit_report *rep, char *err, size_t errlen)
{
	char tmp[PATH_MAX], dir[PATH_MAX];
	json_t *o = exit_report_json(rep);
	char *text = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER |
					       JSON_REAL_PRECISION(15)) : NULL;
	size_t len;
	int fd = -1, r = 0, dfd;

	json_decref(o);
	if (!text)
		return errmsg(-ENOMEM, err, errlen, "--exit-json %s: out of memory", path);
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path) >= (int)sizeof(tmp)) {
		free(text);
		return errmsg(-ENAMETOOLONG, err, errlen, "--exit-json %s: path too long", path);
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		free(text);
		return errmsg(r, err, errlen, "--exit-json %s: cannot create a file beside it: %s",
			      path, strerror(-r));
	}
	len = strlen(text);
	text[len] = '\n'; /* json_dumps' NUL becomes the final newline */
	r = fd_pwrite_full(fd, text, len + 1, 0);
	free(text);
	if (!r && fchmod(fd, 0644) < 0)
		r = -errno;
	if (!r && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && !r)
		r = -errno;
	if (!r && rename(tmp, path) < 0)
		r = -errno;
	if (r) {
		unlink(tmp);
		return errmsg(r, err, errlen, "--exit-json %s: %s", path, strerror(-r));
	}
	/* The rename itself reaches the disk with its directory. */
	dir_of(path, dir, sizeof(dir));
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		(void)fsync(dfd);
		close(dfd);
	}
	return 0;
}

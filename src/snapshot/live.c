// SPDX-License-Identifier: MIT
/*
 * Live overlay snapshots (include/vmrun/disk_snapshot.h).
 *
 * Everything runs on the event loop thread, the thread that parses the
 * disk's requests and runs their completions: while this code runs, the
 * device takes no new request (the guest's notifications wait in their
 * eventfd), so once the backend is drained nothing is in flight until the
 * new image is in place.  vCPUs keep running; a vCPU that touches the
 * device's registers meanwhile only waits for dev.lock during the swap.
 *
 * File steps and their crash safety are img.c's (include/vmrun/img.h):
 * a crash at any point leaves FILE naming either the old image or the new
 * overlay over FILE.base-N, both with the same guest-visible contents.
 */
#include "vmrun/disk_snapshot.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "vmrun/img.h"
#include "vmrun/log.h"

/* Undo img_snapshot_prepare/switch and take the old image's exclusive lock
 * back; what cannot be undone is logged (the old image stays in use). */
static void roll_back(struct blk *old, struct img_snapshot *s, bool shared)
{
	int r = img_snapshot_abort(s);

	if (r)
		log_warn("%s: snapshot undone only in part (%s): %s still names the old image",
			 s->file, strerror(-r), s->base);
	if (shared) {
		r = blk_set_lock(old, BLK_LOCK_EXCLUSIVE);
		if (r)
			log_warn("%s: cannot take the exclusive lock back: %s", s->file,
				 strerror(-r));
	}
}

int disk_snapshot_live(struct virtio_blk *vb, const char *file, const struct blk_open_opts *opts,
		       struct evloop *loop, char *base, size_t baselen, char *err, size_t errlen)
{
	struct blk *old = vb->backend, *top = NULL, *replaced = NULL;
	struct blk_open_opts top_opts = *opts;
	struct img_snapshot s;
	char why[PATH_MAX + 256];
	int r;

	if (blk_readonly(old))
		return errmsg(-EROFS, err, errlen, "%s is a read-only disk", file);
	/* Everything acknowledged so far goes into the base, durably. */
	blk_drain(old);
	r = blk_io_wait(old, BLK_FLUSH, 0, NULL, 0);
	if (r)
		return errmsg(r, err, errlen, "%s: flush before the snapshot: %s", file, strerror(-r));
	/* The format the disk runs as, never a probe: a raw disk's guest may
	 * have written a qcow2 header (naming a backing file) into it. */
	r = img_snapshot_prepare(file, blk_format(old), &s, why, sizeof(why));
	if (r)
		return errmsg(r, err, errlen, "%s", why);
	if ((size_t)snprintf(base, baselen, "%s", s.base) >= baselen) {
		roll_back(old, &s, false);
		return errmsg(-ENAMETOOLONG, err, errlen, "%s: name too long", s.base);
	}
	/* The overlay opens the old image as its backing file (a shared lock)
	 * while this handle still holds it. */
	r = blk_set_lock(old, BLK_LOCK_SHARED);
	if (r) {
		roll_back(old, &s, false);
		return errmsg(r, err, errlen, "%s: cannot share the image's lock: %s", file,
			    strerror(-r));
	}
	r = img_snapshot_switch(&s, why, sizeof(why));
	if (r) {
		roll_back(old, &s, true);
		return errmsg(r, err, errlen, "%s", why);
	}
	top_opts.readonly = false;
	top_opts.format = BLK_FORMAT_QCOW2;
	r = blk_open(file, &top_opts, loop, &top, why, sizeof(why));
	if (r) {
		roll_back(old, &s, true);
		return errmsg(r, err, errlen, "cannot open the new overlay: %s", why);
	}
	r = virtio_blk_replace_backend(vb, top, &replaced);
	if (r) {
		blk_close(top);
		roll_back(old, &s, true);
		return errmsg(r, err, errlen, "%s: the new overlay does not fit the device: %s", file,
			    strerror(-r));
	}
	blk_close(replaced);
	r = img_snapshot_finish(&s, why, sizeof(why));
	if (r)
		log_warn("%s", why); /* done, but the base is still writable */
	return 0;
}

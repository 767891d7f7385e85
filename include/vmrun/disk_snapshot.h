/* Live overlay snapshots of a running VM's disk (src/snapshot/live.c).
 *
 * The running form of `vmrun img snapshot FILE`: FILE becomes the read-only
 * base FILE.base-N and a new, empty qcow2 overlay on it takes FILE's name
 * and becomes the disk's image, while the guest runs.  The device stops
 * taking requests only for the switch itself (it runs on the same event
 * loop thread), never for a vCPU pause. */
#ifndef VMRUN_DISK_SNAPSHOT_H
#define VMRUN_DISK_SNAPSHOT_H

#include <stddef.h>

#include "vmrun/block.h"
#include "vmrun/evloop.h"
#include "vmrun/virtio_blk.h"

/* Snapshot the disk @vb, whose image is @file, opened with @opts.  Call on
 * the event loop thread @loop that runs the device and its backend.
 *
 * Steps: complete the requests in flight and FLUSH the image (everything
 * the guest wrote so far is in the base and durable); write the overlay
 * and link FILE.base-N (img_snapshot_prepare); share the image's lock;
 * rename the overlay over FILE; open it (the base underneath is the old
 * image); put it under the device; close the old handle; make the base
 * read-only.  When a step fails before the device switched, everything is
 * undone (FILE names the old image again, which stays in use, its lock
 * exclusive again).
 *
 * Returns 0 with FILE.base-N in @base, or -errno with a one-line reason in
 * @err: -EROFS for a read-only disk, -EBUSY when another process holds the
 * image, or the error of the step that failed. */
int disk_snapshot_live(struct virtio_blk *vb, const char *file, const struct blk_open_opts *opts,
		       struct evloop *loop, char *base, size_t baselen, char *err, size_t errlen)
	__attribute__((warn_unused_result));

#endif

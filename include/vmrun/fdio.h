/* Whole-buffer positioned I/O on a file descriptor (src/core/fdio.c), for
 * the code that reads and writes image files synchronously. */
#ifndef VMRUN_FDIO_H
#define VMRUN_FDIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Read @len bytes at @off, retrying short reads and EINTR.  Returns the
 * bytes read (fewer than @len only at the end of the file), or -errno. */
ssize_t fd_pread_full(int fd, void *buf, size_t len, uint64_t off);

/* fd_pread_full() of exactly @len bytes: 0, -EIO when the file holds
 * fewer, or -errno. */
int fd_pread_exact(int fd, void *buf, size_t len, uint64_t off);

/* Write all @len bytes at @off, retrying short writes and EINTR.  Returns
 * 0, or -errno (-EIO when the kernel writes nothing). */
int fd_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);

#endif

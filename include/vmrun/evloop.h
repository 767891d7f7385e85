/* A minimal epoll loop (src/core/evloop.c), run by the main thread. */
#ifndef VMRUN_EVLOOP_H
#define VMRUN_EVLOOP_H

#include <stdbool.h>
#include <stdint.h>

struct ev_source {
	int fd;
	/* Called with the epoll events that fired. */
	void (*handler)(struct ev_source *src, uint32_t events);
	void *opaque;
};

struct evloop {
	int epfd;
	bool stop; /* set by a handler to make evloop_run() return */
	/* The batch evloop_run() is dispatching: evloop_remove() clears the
	 * entries of the source it removes, so that a handler may remove and
	 * free another source whose event is still pending in the batch. */
	struct epoll_event *batch;
	int batch_n;
};

int evloop_init(struct evloop *loop) __attribute__((warn_unused_result));
void evloop_exit(struct evloop *loop);

/* Watch @src->fd for @events (EPOLLIN, ...); @src must outlive the watch.
 * Returns 0 or -errno (-EPERM for a regular file, which epoll cannot watch). */
int evloop_add(struct evloop *loop, struct ev_source *src, uint32_t events)
	__attribute__((warn_unused_result));
/* Change the events watched (0 pauses the source). */
int evloop_modify(struct evloop *loop, struct ev_source *src, uint32_t events);
void evloop_remove(struct evloop *loop, struct ev_source *src);

/* Dispatch events until a handler sets loop->stop.  Returns 0 or -errno. */
int evloop_run(struct evloop *loop);

#endif

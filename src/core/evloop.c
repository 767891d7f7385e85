#include "vmrun/evloop.h"

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

int evloop_init(struct evloop *loop)
{
	loop->stop = false;
	loop->batch = NULL;
	loop->batch_n = 0;
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	return loop->epfd < 0 ? -errno : 0;
}

void evloop_exit(struct evloop *loop)
{
	if (loop->epfd >= 0)
		close(loop->epfd);
	loop->epfd = -1;
}

int evloop_add(struct evloop *loop, struct ev_source *src, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = src };

	return epoll_ctl(loop->epfd, EPOLL_CTL_ADD, src->fd, &ev) < 0 ? -errno : 0;
}

int evloop_modify(struct evloop *loop, struct ev_source *src, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = src };

	return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, src->fd, &ev) < 0 ? -errno : 0;
}

void evloop_remove(struct evloop *loop, struct ev_source *src)
{
	epoll_ctl(loop->epfd, EPOLL_CTL_DEL, src->fd, NULL);
	/* Its events already fetched must not reach it: the owner may free
	 * it as soon as this returns. */
	for (int i = 0; i < loop->batch_n; i++)
		if (loop->batch[i].data.ptr == src)
			loop->batch[i].data.ptr = NULL;
}

int evloop_run(struct evloop *loop)
{
	struct epoll_event events[16], *outer = loop->batch;
	int outer_n = loop->batch_n, r = 0;

	while (!loop->stop) {
		int n = epoll_wait(loop->epfd, events, 16, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			break;
		}
		/* A handler may remove (and free) a later source in this
		 * batch: evloop_remove() clears its entries here. */
		loop->batch = events;
		loop->batch_n = n;
		for (int i = 0; i < n && !loop->stop; i++) {
			struct ev_source *src = events[i].data.ptr;

			if (src && src->fd >= 0)
				src->handler(src, events[i].events);
		}
		loop->batch = outer;
		loop->batch_n = outer_n;
	}
	return r;
}

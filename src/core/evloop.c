#include "vmrun/evloop.h"

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

int evloop_init(struct evloop *loop)
{
	loop->stop = false;
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
}

int evloop_run(struct evloop *loop)
{
	struct epoll_event events[16];

	while (!loop->stop) {
		int n = epoll_wait(loop->epfd, events, 16, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		/* A handler may remove (and free) a later source in this
		 * batch; sources are therefore never freed while the loop
		 * runs: owners close them and mark them unused instead. */
		for (int i = 0; i < n && !loop->stop; i++) {
			struct ev_source *src = events[i].data.ptr;

			if (src->fd >= 0)
				src->handler(src, events[i].events);
		}
	}
	return 0;
}

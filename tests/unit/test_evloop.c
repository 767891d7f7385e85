/* The event loop (src/core/evloop.c): a handler may remove and free a
 * source whose event is still pending in the batch being dispatched; that
 * event must never reach it (a live disk snapshot frees the old image's
 * completion source this way). */
#include "unit.h"

#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "vmrun/evloop.h"

struct ctx {
	struct evloop loop;
	unsigned calls;
	struct pair_src *survivor;
	struct ev_source done; /* ends the loop, one round later */
};

struct pair_src {
	struct ev_source src;
	struct pair_src *other;
	struct ctx *c;
};

/* The first one to run removes and frees the other; the rest of the
 * batch is dispatched; the loop ends at the next round. */
static void on_ready(struct ev_source *src, uint32_t events)
{
	struct pair_src *s = src->opaque;
	uint64_t one = 1;

	(void)events;
	s->c->calls++;
	s->c->survivor = s;
	evloop_remove(&s->c->loop, &s->other->src);
	close(s->other->src.fd);
	free(s->other); /* ASan reports any later use */
	evloop_remove(&s->c->loop, src);
	assert_int_equal(write(s->c->done.fd, &one, 8), 8);
}

static void on_done(struct ev_source *src, uint32_t events)
{
	struct ctx *c = src->opaque;

	(void)events;
	c->loop.stop = true;
}

static void test_remove_pending_source(void **state)
{
	struct ctx c = { .calls = 0 };
	struct pair_src *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
	uint64_t one = 1;

	(void)state;
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(evloop_init(&c.loop), 0);
	*a = (struct pair_src){ .other = b, .c = &c };
	*b = (struct pair_src){ .other = a, .c = &c };
	a->src = (struct ev_source){ .fd = eventfd(0, EFD_CLOEXEC), .handler = on_ready, .opaque = a };
	b->src = (struct ev_source){ .fd = eventfd(0, EFD_CLOEXEC), .handler = on_ready, .opaque = b };
	assert_true(a->src.fd >= 0 && b->src.fd >= 0);
	/* Both ready before the loop runs: one epoll_wait returns both. */
	assert_int_equal(write(a->src.fd, &one, 8), 8);
	assert_int_equal(write(b->src.fd, &one, 8), 8);
	c.done = (struct ev_source){ .fd = eventfd(0, EFD_CLOEXEC), .handler = on_done, .opaque = &c };
	assert_true(c.done.fd >= 0);
	assert_int_equal(evloop_add(&c.loop, &a->src, EPOLLIN), 0);
	assert_int_equal(evloop_add(&c.loop, &b->src, EPOLLIN), 0);
	assert_int_equal(evloop_add(&c.loop, &c.done, EPOLLIN), 0);
	assert_int_equal(evloop_run(&c.loop), 0);
	/* The freed source's pending event never ran its handler. */
	assert_int_equal(c.calls, 1);
	assert_null(c.loop.batch);
	close(c.survivor->src.fd);
	free(c.survivor);
	close(c.done.fd);
	evloop_exit(&c.loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_remove_pending_source),
	};

	return cmocka_run_group_tests_name("evloop", tests, NULL, NULL);
}

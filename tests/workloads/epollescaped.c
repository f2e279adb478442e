// An epoll whose only registration is a pipe read end that this process no longer holds: the
// child it forked keeps the read end open, the parent closed it. Nothing in the parent's fd table
// leads to the watched file, so a dump must refuse it (naming the epoll's fd).
// Prints "epoll E child C" then "tick N" every 20 ms.
#include <stdio.h>
#include <sys/epoll.h>
#include <unistd.h>

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	int p[2];
	if (pipe(p)) return 1;
	int ep = epoll_create1(0);
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 1 };
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev)) return 1;
	pid_t c = fork();
	if (c == 0) {
		for (;;) pause();
	}
	close(p[0]);
	printf("epoll %d child %d\n", ep, c);
	for (long n = 1;; n++) {
		usleep(20000);
		printf("tick %ld\n", n);
	}
}

// An event loop over every anon-inode file kind: eventfd (plain and EFD_SEMAPHORE), signalfd,
// a periodic timerfd inside a nested epoll, an absolute CLOCK_REALTIME timerfd, inotify with
// holes in its wd numbers, and a one-shot epoll registration that already fired.
// usage: eventfiles DIR   (DIR/a and DIR/b must exist; DIR is watched for IN_CREATE)
// It prints "ready wd=W" once set up, "tick T" as the timer fires, "inotify wd=W name=N" for
// files created in DIR, and on SIGUSR2 (read through the signalfd) it checks the counters:
// "check eventfd=5 sem=1,1,1,EAGAIN abs=S" (S: seconds left on the absolute timer), then
// re-arms the one-shot registration with epoll_ctl(MOD) and prints "rearmed data=efd1".
// "BAD ..." on anything unexpected. SIGTERM ends it.
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) { printf("BAD %s: %s\n", what, strerror(errno)); exit(1); }

static int efd, sem, sfd, tfd, abst, ino, inner, outer;

static void add(int ep, int fd, uint32_t events, uint64_t data)
{
	struct epoll_event ev = { .events = events, .data.u64 = data };
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)) die("epoll_ctl");
}

int main(int argc, char **argv)
{
	if (argc < 2) return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	char path[4096];

	efd = eventfd(5, EFD_NONBLOCK);
	sem = eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK);
	if (efd < 0 || sem < 0) die("eventfd");

	sigset_t m;
	sigemptyset(&m);
	sigaddset(&m, SIGUSR2);
	sigaddset(&m, SIGTERM);
	if (sigprocmask(SIG_BLOCK, &m, NULL)) die("sigprocmask");
	sfd = signalfd(-1, &m, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0) die("signalfd");

	tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	struct itimerspec per = { .it_interval = { 0, 50000000 }, .it_value = { 0, 50000000 } };
	if (tfd < 0 || timerfd_settime(tfd, 0, &per, NULL)) die("timerfd periodic");
	abst = timerfd_create(CLOCK_REALTIME, 0);
	struct itimerspec at = { 0 };
	clock_gettime(CLOCK_REALTIME, &at.it_value);
	at.it_value.tv_sec += 1000;
	if (abst < 0 || timerfd_settime(abst, TFD_TIMER_ABSTIME, &at, NULL)) die("timerfd absolute");

	ino = inotify_init1(IN_NONBLOCK);
	if (ino < 0) die("inotify_init1");
	snprintf(path, sizeof path, "%s/a", argv[1]);
	int w1 = inotify_add_watch(ino, path, IN_MODIFY);
	snprintf(path, sizeof path, "%s/b", argv[1]);
	int w2 = inotify_add_watch(ino, path, IN_ATTRIB);
	if (w1 < 0 || w2 < 0 || inotify_rm_watch(ino, w1)) die("inotify watches");
	int wd = inotify_add_watch(ino, argv[1], IN_CREATE);
	if (wd < 0) die("inotify_add_watch dir");

	inner = epoll_create1(0);
	outer = epoll_create1(EPOLL_CLOEXEC);
	if (inner < 0 || outer < 0) die("epoll_create1");
	add(inner, tfd, EPOLLIN, 0x7100);
	add(outer, sfd, EPOLLIN, 0x5100);
	add(outer, inner, EPOLLIN, 0x1a00);
	add(outer, ino, EPOLLIN, 0x1b00);
	add(outer, efd, EPOLLIN | EPOLLONESHOT, 0xefd0);

	printf("ready wd=%d\n", wd);
	uint64_t ticks = 0;
	int fired = 0;
	for (;;) {
		struct epoll_event evs[8];
		int n = epoll_wait(outer, evs, 8, 1000);
		if (n < 0 && errno == EINTR) continue;
		if (n < 0) die("epoll_wait");
		for (int i = 0; i < n; i++) {
			uint64_t d = evs[i].data.u64;
			if (d == 0x1a00) {
				struct epoll_event e;
				if (epoll_wait(inner, &e, 1, 0) == 1) {
					uint64_t t;
					if (e.data.u64 != 0x7100) { printf("BAD inner data %llx\n", (unsigned long long)e.data.u64); exit(1); }
					if (read(tfd, &t, 8) == 8) { ticks += t; printf("tick %llu\n", (unsigned long long)ticks); }
				}
			} else if (d == 0x5100) {
				struct signalfd_siginfo si;
				if (read(sfd, &si, sizeof si) != sizeof si) die("read signalfd");
				if (si.ssi_signo == SIGTERM) return 0;
				if (si.ssi_signo != SIGUSR2) { printf("BAD signal %u\n", si.ssi_signo); exit(1); }
				uint64_t v = 0, s[3] = {0};
				if (read(efd, &v, 8) != 8) die("read eventfd");
				for (int k = 0; k < 3; k++)
					if (read(sem, &s[k], 8) != 8) die("read semaphore");
				uint64_t x;
				int again = read(sem, &x, 8) < 0 && errno == EAGAIN;
				struct itimerspec left;
				if (timerfd_gettime(abst, &left)) die("timerfd_gettime");
				printf("check eventfd=%llu sem=%llu,%llu,%llu,%s abs=%lld\n", (unsigned long long)v,
				       (unsigned long long)s[0], (unsigned long long)s[1], (unsigned long long)s[2],
				       again ? "EAGAIN" : "more", (long long)left.it_value.tv_sec);
				x = 1;
				if (write(efd, &x, 8) != 8) die("write eventfd");
				struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT, .data.u64 = 0xefd1 };
				if (epoll_ctl(outer, EPOLL_CTL_MOD, efd, &ev)) die("epoll_ctl MOD");
			} else if (d == 0x1b00) {
				char buf[4096] __attribute__((aligned(8)));
				ssize_t len = read(ino, buf, sizeof buf);
				for (char *p = buf; len > 0 && p < buf + len;) {
					struct inotify_event *e = (struct inotify_event *)p;
					printf("inotify wd=%d name=%s\n", e->wd, e->len ? e->name : "");
					p += sizeof *e + e->len;
				}
			} else if (d == 0xefd0) {
				if (fired++) { printf("BAD one-shot eventfd fired again\n"); exit(1); }
				printf("oneshot fired\n");
			} else if (d == 0xefd1) {
				uint64_t v;
				if (read(efd, &v, 8) != 8) die("read eventfd");
				printf("rearmed data=efd1\n");
			} else {
				printf("BAD data %llx\n", (unsigned long long)d);
				exit(1);
			}
		}
	}
}

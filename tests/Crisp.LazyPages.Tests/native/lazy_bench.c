/*
 * Fault-path benchmark client for the lazy-pages daemon: maps MIB MiB at a fixed address,
 * registers it with its own uffd, hands it over (CRIU's hand-off), then touches one byte per page
 *   seq:  every page in order       rand: COUNT random pages (fixed seed)
 * and prints "touch_s=<seconds> pages=<n> sum=<x>". finish=now sends restore-finished before
 * touching (prefetch runs alongside), finish=after sends it after (pure faults).
 *   lazy_bench SOCKET MIB seq|rand finish=now|after [COUNT]
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define BASE 0x600000000000UL

static int sk;
static void send_word(uint32_t v) { if (send(sk, &v, 4, 0) != 4) { perror("send"); exit(2); } }
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

int main(int argc, char **argv)
{
	if (argc < 5) return 2;
	unsigned long pages = strtoul(argv[2], 0, 0) * 256;
	int rnd = !strcmp(argv[3], "rand"), finish_now = !strncmp(argv[4], "finish=now", 10);
	int wait_first = !strcmp(argv[4], "finish=now-wait"); /* let prefetch finish, then touch */
	unsigned long count = argc > 5 ? strtoul(argv[5], 0, 0) : pages;
	if (mmap((void *)BASE, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != (void *)BASE) return 2;
	int uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP };
	struct uffdio_register reg = { .range = { BASE, pages * 4096 }, .mode = UFFDIO_REGISTER_MODE_MISSING };
	if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) || ioctl(uffd, UFFDIO_REGISTER, &reg)) { perror("uffd"); return 2; }
	sk = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	strncpy(sun.sun_path, argv[1], sizeof sun.sun_path - 1);
	if (connect(sk, (struct sockaddr *)&sun, sizeof sun)) { perror("connect"); return 2; }
	send_word(getpid());
	char dummy = 0, ctl[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { &dummy, 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl };
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET; c->cmsg_type = SCM_RIGHTS; c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &uffd, sizeof uffd);
	if (sendmsg(sk, &mh, 0) != 1) return 2;
	close(uffd);
	usleep(20000); /* let the daemon take the uffd in */
	if (finish_now) send_word(0x52535446);
	if (wait_first) sleep(3);
	volatile uint64_t sum = 0;
	uint64_t x = 88172645463325252ULL;
	double t0 = now();
	for (unsigned long i = 0; i < count; i++) {
		unsigned long k = i;
		if (rnd) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; k = x % pages; }
		sum += *(volatile uint64_t *)(BASE + k * 4096);
	}
	double t1 = now();
	printf("touch_s=%.4f pages=%lu sum=%lx\n", t1 - t0, count, (unsigned long)sum);
	if (!finish_now) send_word(0x52535446);
	return 0;
}

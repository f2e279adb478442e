/*
 * A lazily "restored" process for the lazy-pages daemon tests. It makes its own userfaultfd (events
 * FORK, REMAP, REMOVE, UNMAP and POISON), registers a region, hands the uffd to the daemon with
 * CRIU's hand-off (pid as int, then the fd with a one-byte payload, then 0x52535446), and then
 * checks every byte it can see against the pattern the test's page source serves, across
 * madvise(DONTNEED), munmap, mremap and fork.
 *
 *   lazy_client SOCKET early|late|exit [nopoison]
 *     early: the restore-finished word is sent after the events (everything is a fault then)
 *     late:  it is sent at once (prefetch races with faults and events)
 *     exit:  it is sent at once, then the client exits without reading anything (the daemon must
 *            notice that its process died)
 *     nopoison: UFFD_FEATURE_POISON is not asked for (the daemon must kill instead)
 * Exit: 0 all good, 3 wrong data, 42 SIGBUS (poisoned page), 2 setup error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif

#define PS 4096UL
#define BASE 0x600000000000UL
#define MOVED 0x610000000000UL
#define NPAGES 8192UL
#define HOLE_START 1000UL /* pages [HOLE_START, HOLE_END) are not in the image: zeros */
#define HOLE_END 1100UL

static uint64_t word(uint64_t a) { return a * 0x9E3779B97F4A7C15ULL ^ 0x5EEDULL; }
static char *page(unsigned long k) { return (char *)(BASE + k * PS); }

static void die(const char *what) { fprintf(stderr, "lazy_client: %s: %s\n", what, strerror(errno)); _exit(2); }

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	char msg[96];
	int n = snprintf(msg, sizeof msg, "lazy_client %d: SIGBUS at %p\n", getpid(), si->si_addr);
	write(2, msg, n);
	_exit(42);
}

/* checks the page at runtime address p that was at image page k; zero: expect zeros */
static void check(const char *p, unsigned long k, int zero, const char *what)
{
	const uint64_t *w = (const uint64_t *)p;
	uint64_t img = BASE + k * PS;
	int hole = k >= HOLE_START && k < HOLE_END;
	for (int i = 0; i < 512; i++) {
		uint64_t want = (zero || hole) ? 0 : word(img + i * 8);
		if (w[i] != want) {
			fprintf(stderr, "lazy_client %d: %s: wrong data at %p (image page %lu word %d): %#lx, want %#lx\n",
				getpid(), what, (void *)(w + i), k, i, (unsigned long)w[i], (unsigned long)want);
			_exit(3);
		}
	}
}

static void check_range(unsigned long from, unsigned long to, int zero, const char *what)
{
	for (unsigned long k = from; k < to; k++)
		check(page(k), k, zero, what);
}

static int sk;
static void send_word(uint32_t v)
{
	if (send(sk, &v, sizeof v, 0) != sizeof v) die("send word");
}

static void send_fd(int fd)
{
	char dummy = 0, ctl[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { &dummy, 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl };
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof fd);
	if (sendmsg(sk, &mh, 0) != 1) die("sendmsg uffd");
}

int main(int argc, char **argv)
{
	if (argc < 3) { fprintf(stderr, "usage: lazy_client SOCKET early|late|exit\n"); return 2; }
	int late = !strcmp(argv[2], "late");
	setvbuf(stdout, NULL, _IONBF, 0);

	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO };
	sigaction(SIGBUS, &sa, NULL);

	if (mmap((void *)BASE, NPAGES * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != (void *)BASE)
		die("mmap");
	int uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0) die("userfaultfd");
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP |
		UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP };
	if (argc < 4 || strcmp(argv[3], "nopoison"))
		api.features |= UFFD_FEATURE_POISON;
	if (ioctl(uffd, UFFDIO_API, &api)) die("UFFDIO_API");
	struct uffdio_register reg = { .range = { BASE, NPAGES * PS }, .mode = UFFDIO_REGISTER_MODE_MISSING };
	if (ioctl(uffd, UFFDIO_REGISTER, &reg)) die("UFFDIO_REGISTER");

	sk = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	strncpy(sun.sun_path, argv[1], sizeof sun.sun_path - 1);
	if (connect(sk, (struct sockaddr *)&sun, sizeof sun)) die("connect");
	send_word(getpid());
	send_fd(uffd);
	close(uffd); /* the daemon holds it now; when it closes it the range is plain memory again */
	if (late)
		send_word(0x52535446);
	if (!strcmp(argv[2], "exit")) {
		send_word(0x52535446);
		printf("EXIT\n");
		_exit(0);
	}

	/* sequential, then scattered reads */
	check_range(0, 600, 0, "sequential");
	for (unsigned long k = 2000; k < 3000; k += 37)
		check(page(k), k, 0, "scattered");
	check_range(HOLE_START - 4, HOLE_END + 4, 0, "hole");

	/* MADV_DONTNEED: never-touched pages and touched pages read zeros afterwards */
	if (madvise(page(3000), 10 * PS, MADV_DONTNEED)) die("madvise");
	if (madvise(page(0), 16 * PS, MADV_DONTNEED)) die("madvise");
	check_range(3000, 3010, 1, "after DONTNEED (untouched)");
	check_range(0, 16, 1, "after DONTNEED (touched)");
	*(volatile uint64_t *)page(3005) = 0x1234;
	if (*(volatile uint64_t *)page(3005) != 0x1234) { fprintf(stderr, "write after DONTNEED lost\n"); _exit(3); }
	*(volatile uint64_t *)page(3005) = 0;

	/* munmap a lazy range */
	if (munmap(page(4000), 100 * PS)) die("munmap");

	/* mremap: a partly touched range moves; its data still comes from the old image address */
	check_range(5000, 5010, 0, "before mremap");
	if (mremap(page(5000), 200 * PS, 200 * PS, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)MOVED) != (void *)MOVED)
		die("mremap");
	for (unsigned long i = 0; i < 200; i++)
		check((char *)(MOVED + i * PS), 5000 + i, 0, "moved");

	/* fork: the child sees the parent's memory, lazy pages included */
	pid_t child = fork();
	if (child < 0) die("fork");
	if (child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		check_range(6000, 7000, 0, "child");
		check_range(100, 200, 0, "child (filled before fork)");
		check_range(3000, 3010, 1, "child (removed before fork)");
		for (unsigned long i = 0; i < 200; i++)
			check((char *)(MOVED + i * PS), 5000 + i, 0, "child moved");
		_exit(0);
	}
	int st;
	if (waitpid(child, &st, 0) != child) die("waitpid");
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "lazy_client: child failed (status %#x)\n", st);
		_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 4);
	}

	if (!late)
		send_word(0x52535446);

	/* everything the parent still maps */
	check_range(16, 3000, 0, "final");
	check_range(3000, 3010, 1, "final removed");
	check_range(3010, 4000, 0, "final");
	check_range(4100, 5000, 0, "final");
	check_range(5200, NPAGES, 0, "final");
	for (unsigned long i = 0; i < 200; i++)
		check((char *)(MOVED + i * PS), 5000 + i, 0, "final moved");
	printf("OK\n");
	return 0;
}

// Guard regions (madvise MADV_GUARD_INSTALL, Linux 6.13+), checked by the program itself after
// a restore. Eight private anonymous pages, each written with its index; pages 2-3 and 6 are
// then guarded (a guard zaps what was there). It prints "ready" (or "skip ..." when the kernel
// has no guards); on SIGUSR1 it checks that every page outside the guards still holds its
// index, that a write to each guarded page raises SIGSEGV, and prints "check ok" or "BAD ...".
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

static volatile sig_atomic_t go;
static sigjmp_buf jump;
static volatile sig_atomic_t armed;

static void on_usr1(int s) { (void)s; go = 1; }
static void on_segv(int s) { (void)s; if (armed) siglongjmp(jump, 1); }

static int faults(volatile char *p)
{
	armed = 1;
	if (sigsetjmp(jump, 1)) { armed = 0; return 1; }
	*p = 'x';
	armed = 0;
	return 0;
}

static int guarded(int i) { return i == 2 || i == 3 || i == 6; }

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGUSR1, on_usr1);
	signal(SIGSEGV, on_segv);
	long ps = sysconf(_SC_PAGESIZE);
	char *m = mmap(NULL, 8 * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED) { printf("BAD mmap: %s\n", strerror(errno)); return 1; }
	for (int i = 0; i < 8; i++) memset(m + i * ps, 'a' + i, ps);
	if (madvise(m + 2 * ps, 2 * ps, MADV_GUARD_INSTALL) || madvise(m + 6 * ps, ps, MADV_GUARD_INSTALL)) {
		printf(errno == EINVAL ? "skip no MADV_GUARD_INSTALL\n" : "BAD madvise: %s\n", strerror(errno));
		return 0;
	}
	printf("ready\n");
	while (1) {
		while (!go) usleep(1000);
		go = 0;
		const char *bad = NULL;
		for (int i = 0; i < 8 && !bad; i++) {
			char *p = m + i * ps;
			if (guarded(i)) { if (!faults(p)) bad = "a guarded page took a write"; }
			else if (p[0] != 'a' + i || p[ps - 1] != 'a' + i) bad = "a page outside the guards lost its bytes";
		}
		printf(bad ? "BAD %s\n" : "check ok\n", bad);
	}
}

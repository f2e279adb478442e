/*
 * lazyops: memory operations on lazily restored ranges, for crisp's lazy restore tests.
 *
 *   lazyops MIB LOGFILE
 *
 * Maps MIB MiB of private anonymous memory, fills every 8-byte word with a pattern of its
 * address, appends "ready pid=P base=ADDR" to LOGFILE and waits for SIGUSR1 (dump it then).
 * On SIGUSR1 (after a lazy restore) it works at once, before the daemon's prefetch gets
 * there, on ranges near the end of the region (prefetch starts at the beginning):
 *   - madvise(MADV_DONTNEED) on a range: it must read zeros, and a write there must stick;
 *   - munmap of a range, then a new anonymous mapping in its place: zeros, not old data;
 *   - mremap of a range, a few of its pages touched first, to a new address: the pattern of
 *     the old address must be there, in every word;
 *   - fork: the child checks every byte of the region (and the moved range), so does the parent.
 * Before each operation it counts, from /proc/self/pagemap, how many of the range's pages were
 * not present yet (still lazy), and logs "lazy dontneed=A munmap=B mremap=C".
 * Result line: "lazyops ok" or "lazyops BAD <what>"; exit 0 on ok, 3 on bad data.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PS 4096UL

static int logfd;
static volatile sig_atomic_t go;
static uint64_t pattern(uint64_t addr) { return addr * 0x9E3779B97F4A7C15ULL ^ 0xC0FFEEULL; }

static void logf_(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
	va_end(ap);
	buf[n++] = '\n';
	write(logfd, buf, n);
}

static void on_usr1(int sig) { (void)sig; go = 1; }

/* pages of [p, p+n pages) not present in memory (never filled since the restore) */
static long absent(const char *p, unsigned long n)
{
	int fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0) return -1;
	long count = 0;
	for (unsigned long i = 0; i < n; i++) {
		uint64_t e;
		if (pread(fd, &e, 8, ((uintptr_t)p / PS + i) * 8) != 8) { count = -1; break; }
		if (!(e & (1ULL << 63)) && !(e & (1ULL << 62))) count++;
	}
	close(fd);
	return count;
}

/* every word of [p, p+len) must be pattern(orig + offset), or zero when orig == 0 */
static int check(const char *p, unsigned long len, uintptr_t orig, const char *what)
{
	const uint64_t *w = (const uint64_t *)p;
	for (unsigned long i = 0; i < len / 8; i++) {
		uint64_t want = orig ? pattern(orig + i * 8) : 0;
		if (w[i] != want) {
			logf_("lazyops BAD %s (pid %d): word at %p is %#lx, want %#lx", what, getpid(), (void *)(w + i),
			      (unsigned long)w[i], (unsigned long)want);
			return 0;
		}
	}
	return 1;
}

int main(int argc, char **argv)
{
	if (argc < 3) { fprintf(stderr, "usage: lazyops MIB LOGFILE\n"); return 2; }
	unsigned long len = strtoul(argv[1], NULL, 10) << 20, pages = len / PS;
	logfd = open(argv[2], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (logfd < 0) return 2;
	char *base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	/* a reserved place for the mremap target, away from the region */
	char *target = mmap(NULL, 512 * PS, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED || target == MAP_FAILED) { logf_("lazyops BAD mmap: %s", strerror(errno)); return 2; }
	for (unsigned long i = 0; i < len / 8; i++) ((uint64_t *)base)[i] = pattern((uintptr_t)base + i * 8);

	struct sigaction sa = { .sa_handler = on_usr1 };
	sigaction(SIGUSR1, &sa, NULL);
	logf_("ready pid=%d base=%p", getpid(), (void *)base);
	while (!go) pause();

	/* the ranges: from the end of the region backwards */
	char *dn = base + (pages - 64) * PS;          /* 64 pages: DONTNEED */
	char *um = base + (pages - 192) * PS;         /* 64 pages: munmap, then mapped again */
	char *mr = base + (pages - 512) * PS;         /* 256 pages: mremap'ed to target */
	long a_dn = absent(dn, 64), a_um = absent(um, 64), a_mr = absent(mr, 256);

	if (madvise(dn, 64 * PS, MADV_DONTNEED)) { logf_("lazyops BAD madvise: %s", strerror(errno)); return 2; }
	if (munmap(um, 64 * PS)) { logf_("lazyops BAD munmap: %s", strerror(errno)); return 2; }
	if (mmap(um, 64 * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != um) {
		logf_("lazyops BAD mmap again: %s", strerror(errno));
		return 2;
	}
	int ok = check(mr, 8 * PS, (uintptr_t)mr, "mremap source, touched before the move");
	if (mremap(mr, 256 * PS, 256 * PS, MREMAP_MAYMOVE | MREMAP_FIXED, target) != target) {
		logf_("lazyops BAD mremap: %s", strerror(errno));
		return 2;
	}
	logf_("lazy dontneed=%ld munmap=%ld mremap=%ld", a_dn, a_um, a_mr);

	ok = ok && check(dn, 64 * PS, 0, "after MADV_DONTNEED") && check(um, 64 * PS, 0, "new mapping where munmap was");
	((volatile uint64_t *)dn)[5] = 0x1234;
	if (((volatile uint64_t *)dn)[5] != 0x1234) { logf_("lazyops BAD write after DONTNEED lost"); ok = 0; }
	((volatile uint64_t *)dn)[5] = 0;

	pid_t child = fork();
	if (child < 0) { logf_("lazyops BAD fork: %s", strerror(errno)); return 2; }
	const char *who = child == 0 ? "child" : "parent";
	char what[64];
	snprintf(what, sizeof what, "%s: region", who);
	ok = ok && check(base, (pages - 512) * PS, (uintptr_t)base, what);
	snprintf(what, sizeof what, "%s: moved range", who);
	ok = ok && check(target, 256 * PS, (uintptr_t)mr, what);
	snprintf(what, sizeof what, "%s: between moved and unmapped", who);
	ok = ok && check(mr + 256 * PS, 64 * PS, (uintptr_t)(mr + 256 * PS), what);
	snprintf(what, sizeof what, "%s: dontneed/munmap ranges", who);
	ok = ok && check(um, 64 * PS, 0, what) && check(um + 64 * PS, 64 * PS, (uintptr_t)(um + 64 * PS), what) && check(dn, 64 * PS, 0, what);
	if (child == 0) _exit(ok ? 0 : 3);

	int st;
	while (waitpid(child, &st, 0) < 0 && errno == EINTR) ;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		if (ok) logf_("lazyops BAD child status %#x", st);
		ok = 0;
	}
	if (ok) logf_("lazyops ok");
	return ok ? 0 : 3;
}

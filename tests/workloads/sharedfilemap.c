// Shared mappings of a regular file FILE: one PROT_READ|PROT_WRITE, one PROT_READ only of the same
// file opened O_RDWR (it may be made writable later with mprotect: the file's open mode allows it),
// and a private read-only one. On SIGUSR1: writes through the first, makes the second writable and
// writes through it, and reads both back from the file with pread; prints "check ok" or "BAD what".
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t checks;
static void on_usr1(int s) { (void)s; checks++; }
static char *rw, *ro, *priv;
static const char *file;

#define BAD(...) do { printf("BAD "); printf(__VA_ARGS__); printf("\n"); fflush(stdout); return; } while (0)

static void check(int n)
{
	char buf[16], want[16];
	if (priv[0] != 'p') BAD("private mapping holds %c", priv[0]);
	snprintf(want, sizeof(want), "rw%d", n);
	memcpy(rw, want, strlen(want) + 1);
	if (mprotect(ro, 4096, PROT_READ | PROT_WRITE) < 0) BAD("mprotect of the read-only shared mapping: %m");
	snprintf(ro + 100, 16, "ro%d", n);
	if (msync(rw, 8192, MS_SYNC) < 0) BAD("msync: %m");
	int fd = open(file, O_RDONLY);
	if (pread(fd, buf, sizeof(buf), 0) < 0 || strcmp(buf, want)) BAD("file holds %.15s, not %s", buf, want);
	if (pread(fd, buf, sizeof(buf), 4096 + 100) < 0 || strncmp(buf, ro + 100, 4)) BAD("file holds %.15s at 4196", buf);
	close(fd);
	mprotect(ro, 4096, PROT_READ);
	printf("check ok\n");
	fflush(stdout);
}

int main(int argc, char **argv)
{
	if (argc < 2) return 2;
	file = argv[1];
	int fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || ftruncate(fd, 3 * 4096) < 0) return 1;
	pwrite(fd, "p", 1, 2 * 4096);
	rw = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ro = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 4096);
	priv = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 2 * 4096);
	close(fd);
	if (rw == MAP_FAILED || ro == MAP_FAILED || priv == MAP_FAILED) return 1;
	signal(SIGUSR1, on_usr1);
	printf("ready %p %p\n", (void *)rw, (void *)ro);
	fflush(stdout);
	int done = 0;
	for (;;) {
		if (checks != done) { done = checks; check(done); }
		usleep(10000);
	}
}

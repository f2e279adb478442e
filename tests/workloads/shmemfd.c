// Shared anonymous memory that is also a file: a MAP_SHARED|MAP_ANONYMOUS mapping of 4 pages,
// its shmem file opened O_RDWR (then O_APPEND, offset 5) through /proc/self/map_files (the fd shows
// "/dev/zero (deleted)"), a private mapping of that fd at page 1 (page 0 of it written: its own
// copy) and a shared one at page 2. A child forked after that shares the anonymous mapping.
// On SIGUSR1 the parent checks that all of them are still one object (a write through one is
// seen through the others, the copied page keeps its own bytes, the child's write is seen) and
// that the fd kept its offset and flags; prints "check ok" or "BAD what".
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PG 4096
static volatile sig_atomic_t checks;
static void on_usr1(int s) { (void)s; checks++; }

static int *anon, *priv, *shared2;
static int fd, round_;
static pid_t child;

#define BAD(...) do { printf("BAD "); printf(__VA_ARGS__); printf("\n"); fflush(stdout); return; } while (0)

static void check(void)
{
	round_++;
	int v;
	if (anon[0] != 1 || anon[PG / 4] != 11 || anon[2 * PG / 4] != 111) BAD("anon pages %d %d %d", anon[0], anon[PG / 4], anon[2 * PG / 4]);
	if (priv[0] != 22) BAD("the private copy holds %d", priv[0]);
	if (priv[PG / 4] != anon[2 * PG / 4]) BAD("private mapping's untouched page is not the object's");
	anon[3 * PG / 4] = 444 + round_;
	if (priv[2 * PG / 4] != 444 + round_) BAD("private mapping does not see the object's page 3");
	if (shared2[PG / 4] != 444 + round_) BAD("second shared mapping does not see page 3");
	if (pread(fd, &v, sizeof(v), 3 * PG) != sizeof(v) || v != 444 + round_) BAD("the fd does not read page 3");
	shared2[0] = 333 + round_;
	if (anon[2 * PG / 4] != 333 + round_) BAD("a write through the second shared mapping is not seen");
	if (anon[3 * PG / 4 + 1] != 777) BAD("the child's write (%d) is not there", anon[3 * PG / 4 + 1]);
	if (lseek(fd, 0, SEEK_CUR) != 5) BAD("fd offset %ld", (long)lseek(fd, 0, SEEK_CUR));
	int fl = fcntl(fd, F_GETFL);
	if ((fl & O_ACCMODE) != O_RDWR || !(fl & O_APPEND)) BAD("fd flags 0%o", fl);
	anon[2 * PG / 4] = 111;
	printf("check ok\n");
	fflush(stdout);
}

int main(void)
{
	anon = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (anon == MAP_FAILED) return 1;
	anon[0] = 1;
	anon[PG / 4] = 11;
	anon[2 * PG / 4] = 111;
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/map_files/%lx-%lx", (unsigned long)anon, (unsigned long)anon + 4 * PG);
	fd = open(path, O_RDWR);
	if (fd < 0) { perror("open map_files"); return 1; }
	if (lseek(fd, 5, SEEK_SET) != 5 || fcntl(fd, F_SETFL, O_APPEND) < 0) return 1;
	priv = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, PG);
	shared2 = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 2 * PG);
	if (priv == MAP_FAILED || shared2 == MAP_FAILED) return 1;
	priv[0] = 22;
	child = fork();
	if (child == 0) {
		anon[3 * PG / 4 + 1] = 777;
		for (;;) pause();
	}
	signal(SIGUSR1, on_usr1);
	while (anon[3 * PG / 4 + 1] != 777) usleep(1000);
	printf("ready %d\n", child);
	fflush(stdout);
	int done = 0;
	for (;;) {
		if (checks != done) { done = checks; check(); }
		usleep(10000);
	}
}

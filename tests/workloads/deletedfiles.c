// Files a dump must carry beyond their names: a deleted regular file still open (sparse, with
// bytes far apart and an offset), a deleted file still mapped shared, a removed directory still
// open, a named FIFO holding buffered bytes (read end and a read-write end), a deleted FIFO, and
// file locks: a POSIX lock on a byte range and a flock. argv[1] is a directory to work in.
// On SIGUSR1 it prints one "check ..." line of what it observes without changing any of it
// (the FIFO bytes are read back into the FIFO), so the line before a dump and after a restore
// must be equal. Also prints "tick N" every 20 ms.
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t want;
static void on_usr1(int s) { (void)s; want = 1; }

static int ghost, mapped_fd, dir, fifo_r, fifo_rw, gfifo, locked;
static char *map;

// 'Y' when another process sees both our POSIX lock on [start, start+len) and our flock.
static char lock_state(short type, off_t start, off_t len)
{
	// Another process asks (F_GETLK answers for others only), through a description of its own.
	int p[2];
	if (pipe(p) < 0) return -1;
	pid_t c = fork();
	if (c == 0) {
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
		char r = 'n';
		int fd = open("locked", O_RDWR);
		if (fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type == type && fl.l_pid == getppid()) r = 'y';
		if (flock(fd, LOCK_EX | LOCK_NB) < 0) r = r == 'y' ? 'Y' : 'f';   // the flock is held too
		write(p[1], &r, 1);
		_exit(0);
	}
	char r = '?';
	close(p[1]);
	read(p[0], &r, 1);
	close(p[0]);
	waitpid(c, NULL, 0);
	return r;
}

static void check(void)
{
	struct stat gs, ds, fs;
	fstat(ghost, &gs); fstat(dir, &ds); fstat(gfifo, &fs);
	char head[6] = "", far[5] = "", fifo[32] = "", link[256] = "", p[64];
	pread(ghost, head, 5, 0);
	pread(ghost, far, 4, 1 << 20);
	snprintf(p, sizeof p, "/proc/self/fd/%d", ghost);
	readlink(p, link, sizeof link - 1);
	int n = read(fifo_r, fifo, sizeof fifo - 1);
	if (n > 0) write(fifo_rw, fifo, n);
	printf("check ghost=%s far=%s pos=%ld size=%ld blocks_small=%d nlink=%ld deleted=%d map=%.6s dir_nlink=%ld "
	       "fifo=%s gfifo_mode=%o lock=%c\n",
	       head, far, (long)lseek(ghost, 0, SEEK_CUR), (long)gs.st_size, gs.st_blocks < 64, (long)gs.st_nlink,
	       strstr(link, " (deleted)") != NULL, map, (long)ds.st_nlink, fifo, fs.st_mode & 07777, lock_state(F_WRLCK, 10, 5));
}

int main(int argc, char **argv)
{
	if (argc < 2 || chdir(argv[1]) < 0) return 1;
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGUSR1, on_usr1);
	ghost = open("ghost", O_RDWR | O_CREAT | O_TRUNC, 0640);
	pwrite(ghost, "hello", 5, 0);
	pwrite(ghost, "far!", 4, 1 << 20);
	lseek(ghost, 3, SEEK_SET);
	unlink("ghost");
	mapped_fd = open("mapped", O_RDWR | O_CREAT | O_TRUNC, 0600);
	ftruncate(mapped_fd, 4096);
	map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mapped_fd, 0);
	close(mapped_fd);
	unlink("mapped");
	memcpy(map, "mapped", 6);
	mkdir("gone", 0755);
	dir = open("gone", O_RDONLY | O_DIRECTORY);
	rmdir("gone");
	mkfifo("fifo", 0600);
	fifo_rw = open("fifo", O_RDWR);
	fifo_r = open("fifo", O_RDONLY | O_NONBLOCK);
	write(fifo_rw, "queued", 6);
	mkfifo("gfifo", 0604);
	gfifo = open("gfifo", O_RDWR);
	unlink("gfifo");
	locked = open("locked", O_RDWR | O_CREAT, 0600);
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 10, .l_len = 5 };
	if (fcntl(locked, F_SETLK, &fl) < 0 || flock(locked, LOCK_SH) < 0) return 2;
	printf("ready\n");
	for (long tick = 1;; tick++) {
		if (want) { want = 0; check(); }
		usleep(20000);
		printf("tick %ld\n", tick);
	}
}

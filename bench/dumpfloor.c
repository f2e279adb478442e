// dumpfloor: the machine's floor for dumping SIZE MiB of a process's memory to tmpfs, with no
// checkpoint tool: a child touches SIZE MiB of anonymous memory (as memtouch does) and waits;
// the parent copies that memory out of it into a file in DIR two ways, then kills and reaps it.
//
//   dumpfloor SIZE_MIB DIR
//
// prints
//   readv+write: S s      process_vm_readv into a 4 MiB buffer, write(2) to the file (two copies)
//   readv into mapping: S s   process_vm_readv straight into the file, mmap'ed shared (one copy)
//   kill: S s             SIGKILL to reaped: the kernel freeing SIZE MiB
// A dump cannot copy the pages faster than the better of the first two (the bytes must land in
// tmpfs pages), and a dump that leaves no process behind also pays the third.
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
	perror(what);
	exit(1);
}

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: dumpfloor SIZE_MIB DIR\n");
		return 2;
	}
	size_t size = (size_t)atol(argv[1]) << 20;
	int ready[2];
	if (pipe(ready)) die("pipe");
	// The child's memory at a known address: the parent maps it first, the child inherits the
	// address (fork) and touches it itself, so the pages are the child's own.
	uint8_t *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) die("mmap");
	pid_t child = fork();
	if (child < 0) die("fork");
	if (child == 0) {
		for (size_t i = 0; i < size; i += 4096)
			for (size_t j = 0; j < 4096; j += 8) *(uint64_t *)(mem + i + j) = (i + j) * 0x9E3779B97F4A7C15ull;
		if (write(ready[1], "r", 1) != 1) _exit(1);
		for (;;) pause();
	}
	munmap(mem, size); // the parent's copy was never touched
	char c;
	if (read(ready[0], &c, 1) != 1) die("child");

	char path[4096];
	snprintf(path, sizeof path, "%s/dumpfloor-pages.img", argv[2]);

	// 1. process_vm_readv into a buffer, write(2) to tmpfs.
	size_t chunk = 4 << 20;
	uint8_t *buf = malloc(chunk);
	memset(buf, 0, chunk);
	int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
	if (fd < 0) die("open");
	double t0 = now();
	for (size_t off = 0; off < size; off += chunk) {
		size_t n = size - off < chunk ? size - off : chunk;
		struct iovec local = {buf, n}, remote = {mem + off, n};
		if (process_vm_readv(child, &local, 1, &remote, 1, 0) != (ssize_t)n) die("process_vm_readv");
		for (size_t w = 0; w < n;) {
			ssize_t k = write(fd, buf + w, n - w);
			if (k <= 0) die("write");
			w += k;
		}
	}
	double t1 = now();
	close(fd);
	unlink(path);
	printf("readv+write: %.4f s\n", t1 - t0);

	// 2. process_vm_readv straight into the file's pages (shared mapping of a tmpfs file).
	fd = open(path, O_CREAT | O_TRUNC | O_RDWR, 0600);
	if (fd < 0) die("open");
	double t2 = now();
	if (ftruncate(fd, size)) die("ftruncate");
	uint8_t *dst = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (dst == MAP_FAILED) die("mmap file");
	for (size_t off = 0; off < size; off += chunk) {
		size_t n = size - off < chunk ? size - off : chunk;
		struct iovec local = {dst + off, n}, remote = {mem + off, n};
		if (process_vm_readv(child, &local, 1, &remote, 1, 0) != (ssize_t)n) die("process_vm_readv");
	}
	munmap(dst, size);
	double t3 = now();
	close(fd);
	unlink(path);
	printf("readv into mapping: %.4f s\n", t3 - t2);

	// 3. The kill: SIGKILL until reaped.
	double t4 = now();
	kill(child, SIGKILL);
	if (waitpid(child, NULL, 0) != child) die("waitpid");
	printf("kill: %.4f s\n", now() - t4);
	return 0;
}

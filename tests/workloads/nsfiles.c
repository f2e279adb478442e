// Open namespace files, checked by the program itself after a restore. It opens
// /proc/self/ns/net and /proc/self/ns/uts (its own namespaces); with the argument "foreign" it
// also holds fd 10, the net namespace of a child that made one of its own (unshare) and exited:
// a namespace no process is in. It prints "ready"; on SIGUSR1 it checks that each fd still
// names the namespace it named (same link, and setns(fd, 0) would pick that kind: the link's
// KIND:[INO] matches /proc/self/ns/KIND for its own ones) and prints "check ok" or "BAD ...".
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

static void link_of(const char *path, char *buf, size_t n)
{
	ssize_t r = readlink(path, buf, n - 1);
	buf[r < 0 ? 0 : r] = 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGUSR1, on_usr1);
	int net = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC), uts = open("/proc/self/ns/uts", O_RDONLY);
	if (net < 0 || uts < 0) { printf("BAD open ns\n"); return 1; }
	if (argc > 1 && !strcmp(argv[1], "foreign")) {
		int p[2];
		if (pipe(p)) return 1;
		pid_t c = fork();
		if (c == 0) {
			char b = unshare(CLONE_NEWNET) ? 'n' : 'y';
			if (write(p[1], &b, 1) != 1) _exit(1);
			pause();
			_exit(0);
		}
		char b;
		if (read(p[0], &b, 1) != 1 || b != 'y') { printf("BAD unshare\n"); return 1; }
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/ns/net", c);
		int f = open(path, O_RDONLY);
		if (f < 0 || dup2(f, 10) != 10) { printf("BAD foreign ns\n"); return 1; }
		close(f);
		kill(c, SIGKILL);
		waitpid(c, NULL, 0);
	}
	char netLink[64], utsLink[64], want[64], got[64], path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", net);
	link_of(path, netLink, sizeof(netLink));
	snprintf(path, sizeof(path), "/proc/self/fd/%d", uts);
	link_of(path, utsLink, sizeof(utsLink));
	printf("ready\n");
	while (1) {
		while (!go) usleep(1000);
		go = 0;
		const char *bad = NULL;
		snprintf(path, sizeof(path), "/proc/self/fd/%d", net);
		link_of(path, got, sizeof(got));
		link_of("/proc/self/ns/net", want, sizeof(want));
		if (strcmp(got, want) || strcmp(got, netLink)) bad = "the net namespace fd names another namespace";
		snprintf(path, sizeof(path), "/proc/self/fd/%d", uts);
		link_of(path, got, sizeof(got));
		link_of("/proc/self/ns/uts", want, sizeof(want));
		if (!bad && (strcmp(got, want) || strcmp(got, utsLink))) bad = "the uts namespace fd names another namespace";
		if (!bad && (fcntl(net, F_GETFD) != FD_CLOEXEC || fcntl(uts, F_GETFD) != 0)) bad = "close-on-exec flags changed";
		printf(bad ? "BAD %s\n" : "check ok\n", bad);
	}
}

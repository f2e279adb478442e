// Seccomp filters and pidfds, checked by the program itself after a restore.
// The main thread installs two filters (the older makes getppid fail with EPERM, the newer makes
// getpgid fail with EACCES) after PR_SET_NO_NEW_PRIVS; a second thread, started before, installs
// one of its own (getsid fails with ENOTSUP) and is otherwise unfiltered. A child process sleeps;
// the parent holds a pidfd on it and one on a second child that already exited and was reaped.
// It prints "ready CHILD" once set up; on SIGUSR1 it checks, in both threads, that each filter
// still answers as installed and nothing else is filtered, that the live child's pidfd signals
// it (pidfd_send_signal 0) and the dead one's says ESRCH, and prints "check ok" or "BAD ...".
// SIGTERM ends it (and the child, which dies with its parent: PR_SET_PDEATHSIG).
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t go;
static volatile int thread_result = -1, thread_asked;
static int live_fd, dead_fd;

static void on_usr1(int s) { (void)s; go = 1; }

static int deny(int nr, int err)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | err),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = 4, .filter = f };
	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

// 0 if syscall nr fails with err (or succeeds when err is 0).
static int answers(long nr, int err)
{
	errno = 0;
	long r = syscall(nr, 0);
	return err ? (r == -1 && errno == err ? 0 : -1) : (r >= 0 ? 0 : -1);
}

static void *thread(void *arg)
{
	(void)arg;
	if (deny(SYS_getsid, ENOTSUP)) { printf("BAD thread seccomp: %s\n", strerror(errno)); exit(1); }
	while (1) {
		if (thread_asked) {
			thread_asked = 0;
			thread_result = answers(SYS_getsid, ENOTSUP) || answers(SYS_getppid, 0) || answers(SYS_getpgid, 0);
		}
		usleep(1000);
	}
	return NULL;
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGUSR1, on_usr1);
	pid_t child = fork();
	if (child == 0) { prctl(PR_SET_PDEATHSIG, SIGKILL); while (1) pause(); }
	pid_t gone = fork();
	if (gone == 0) _exit(0);
	live_fd = syscall(SYS_pidfd_open, child, 0);
	dead_fd = syscall(SYS_pidfd_open, gone, 0);
	if (live_fd < 0 || dead_fd < 0) { printf("BAD pidfd_open: %s\n", strerror(errno)); return 1; }
	waitpid(gone, NULL, 0);

	pthread_t t;
	pthread_create(&t, NULL, thread, NULL);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) { printf("BAD no_new_privs\n"); return 1; }
	if (deny(SYS_getppid, EPERM) || deny(SYS_getpgid, EACCES)) { printf("BAD seccomp: %s\n", strerror(errno)); return 1; }
	usleep(100000);
	printf("ready %d\n", child);
	while (1) {
		while (!go) usleep(1000);
		go = 0;
		thread_result = -1;
		thread_asked = 1;
		while (thread_result < 0) usleep(1000);
		const char *bad = NULL;
		if (answers(SYS_getppid, EPERM)) bad = "main thread: getppid not EPERM";
		else if (answers(SYS_getpgid, EACCES)) bad = "main thread: getpgid not EACCES";
		else if (answers(SYS_getsid, 0)) bad = "main thread: getsid filtered";
		else if (thread_result) bad = "second thread's filters differ";
		else if (syscall(SYS_pidfd_send_signal, live_fd, 0, NULL, 0)) bad = "live child's pidfd does not signal it";
		else if (syscall(SYS_pidfd_send_signal, dead_fd, 0, NULL, 0) == 0 || errno != ESRCH) bad = "dead child's pidfd is not dead";
		printf(bad ? "BAD %s\n" : "check ok\n", bad);
	}
}

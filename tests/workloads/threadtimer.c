/* A POSIX timer that signals one thread (SIGEV_THREAD_ID, as glibc's SIGEV_THREAD timers do for
 * their helper thread): every 10 ms SIGRTMIN goes to the worker thread, whose handler counts the
 * hits that land on it and the ones that land on any other thread. On SIGUSR1 the main thread
 * appends "report tid=T hits=N wrong=W" to LOG (T: the worker's tid as the process sees it).
 * Two signals stay pending for good, blocked everywhere: SIGRTMIN+2 queued to the worker alone
 * (tgkill) and SIGRTMIN+3 to the process (kill), so a dump always carries one private and one
 * shared pending signal.
 * usage: threadtimer LOG */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile pid_t target;
static volatile long hits, wrong;
static volatile sig_atomic_t report;

static void on_tick(int sig) { (void)sig; if (gettid() == target) hits++; else wrong++; }
static void on_usr1(int sig) { (void)sig; report = 1; }

static void *worker(void *arg)
{
	(void)arg;
	sigset_t rt;
	sigemptyset(&rt);
	sigaddset(&rt, SIGRTMIN);
	pthread_sigmask(SIG_UNBLOCK, &rt, NULL);
	syscall(SYS_tgkill, getpid(), gettid(), SIGRTMIN + 2);
	target = gettid();
	for (;;) pause();
	return NULL;
}

static void say(const char *log, const char *what)
{
	FILE *f = fopen(log, "a");
	if (!f) exit(1);
	fprintf(f, "%s tid=%d hits=%ld wrong=%ld\n", what, (int)target, hits, wrong);
	fclose(f);
}

int main(int argc, char **argv)
{
	if (argc < 2) return 2;
	signal(SIGRTMIN, on_tick);
	signal(SIGUSR1, on_usr1);
	sigset_t rt;
	sigemptyset(&rt);
	sigaddset(&rt, SIGRTMIN);
	sigaddset(&rt, SIGRTMIN + 2);
	sigaddset(&rt, SIGRTMIN + 3);
	pthread_sigmask(SIG_BLOCK, &rt, NULL); /* only the worker takes SIGRTMIN; no thread the other two */
	kill(getpid(), SIGRTMIN + 3);
	pthread_t th;
	if (pthread_create(&th, NULL, worker, NULL)) return 1;
	while (!target) usleep(1000);
	struct sigevent sev;
	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = SIGEV_THREAD_ID;
	sev.sigev_signo = SIGRTMIN;
	sev._sigev_un._tid = target;
	timer_t t;
	if (timer_create(CLOCK_MONOTONIC, &sev, &t)) { perror("timer_create"); return 1; }
	struct itimerspec its = { { 0, 10 * 1000 * 1000 }, { 0, 10 * 1000 * 1000 } };
	if (timer_settime(t, 0, &its, NULL)) return 1;
	while (hits < 3) usleep(1000);
	say(argv[1], "ready");
	for (;;) {
		usleep(10000);
		if (report) { report = 0; say(argv[1], "report"); }
	}
}

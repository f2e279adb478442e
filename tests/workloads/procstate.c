// procstate: puts itself into a process state far from the defaults, then reports that state
// as the kernel shows it to the process itself, on every SIGUSR1.
//
//   procstate LOG
//
// Set up (as root): capabilities lowered in every set (CAP_CHOWN out of effective, CAP_MKNOD
// out of permitted, CAP_SYS_BOOT out of the bounding set, CAP_NET_RAW inheritable and ambient),
// SECBIT_KEEP_CAPS, no_new_privs, child subreaper, parent-death signal SIGWINCH (ignored by
// default), THP disabled, SCHED_BATCH with nice 7, an audit login uid, a private expedited
// membarrier registration, ITIMER_REAL (interval 1000 s, first expiry in 3600 s) and
// ITIMER_VIRTUAL (interval 2000 s, first in 5000 s of CPU time), two POSIX timers (the first
// deleted again, so the live one's id is not the first the kernel hands out): CLOCK_MONOTONIC,
// SIGRTMIN+1 with sigev_value 0x5eed, interval 500 s, first expiry in 7200 s; a pipe whose
// read end is O_ASYNC, owned by the process (F_SETOWN) with F_SETSIG SIGWINCH; SIGTRAP caught,
// blocked and pending.
//
// Writes "ready" once set up; each SIGUSR1 appends one line
//   state caps=EFF/PRM/INH bnd=X amb=X secbits=N nnp=N subreaper=N pdeath=N thp=N policy=N
//         nice=N loginuid=N membarrier=X real=ISEC/VSEC virt=ISEC/VSEC ptimer=ID:ISEC/VSEC fown=PID/SIG/ASYNC
// (VSEC: seconds left, which only goes down).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_IS_SET 1
#endif
#define MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED (1 << 4)
#define MEMBARRIER_CMD_GET_REGISTRATIONS (1 << 9)

static volatile sig_atomic_t report;
static timer_t ptimer;
static int owned[2];
static FILE *out;

static void on_usr1(int sig) { (void)sig; report = 1; }

static void die(const char *what)
{
	fprintf(out, "error %s: %s\n", what, strerror(errno));
	fflush(out);
	exit(1);
}

static void get_caps(struct __user_cap_data_struct d[2])
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	if (syscall(SYS_capget, &h, d)) die("capget");
}

static int last_cap(void)
{
	int n = 40;
	FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "r");
	if (f) { if (fscanf(f, "%d", &n) != 1) n = 40; fclose(f); }
	return n;
}

static void write_state(void)
{
	struct __user_cap_data_struct d[2];
	get_caps(d);
	unsigned long long eff = d[0].effective | (unsigned long long)d[1].effective << 32;
	unsigned long long prm = d[0].permitted | (unsigned long long)d[1].permitted << 32;
	unsigned long long inh = d[0].inheritable | (unsigned long long)d[1].inheritable << 32;
	unsigned long long bnd = 0, amb = 0;
	for (int c = 0; c <= last_cap(); c++) {
		if (prctl(PR_CAPBSET_READ, c, 0, 0, 0) == 1) bnd |= 1ULL << c;
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, c, 0, 0) == 1) amb |= 1ULL << c;
	}
	int subreaper = -1, pdeath = -1;
	prctl(PR_GET_CHILD_SUBREAPER, &subreaper, 0, 0, 0);
	prctl(PR_GET_PDEATHSIG, &pdeath, 0, 0, 0);
	char loginuid[32] = "?";
	FILE *f = fopen("/proc/self/loginuid", "r");
	if (f) { if (!fgets(loginuid, sizeof loginuid, f)) strcpy(loginuid, "?"); fclose(f); }
	loginuid[strcspn(loginuid, "\n")] = 0;
	struct itimerval real, virt;
	getitimer(ITIMER_REAL, &real);
	getitimer(ITIMER_VIRTUAL, &virt);
	struct itimerspec pt;
	if (timer_gettime(ptimer, &pt)) die("timer_gettime");
	errno = 0;
	int nice = getpriority(PRIO_PROCESS, 0);
	fprintf(out, "state caps=%llx/%llx/%llx bnd=%llx amb=%llx secbits=%d nnp=%d subreaper=%d pdeath=%d thp=%d policy=%d "
		     "nice=%d loginuid=%s membarrier=%lx real=%ld/%ld virt=%ld/%ld ptimer=%ld:%ld/%ld fown=%d/%d/%d\n",
		eff, prm, inh, bnd, amb, prctl(PR_GET_SECUREBITS, 0, 0, 0, 0), prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
		subreaper, pdeath, prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0), sched_getscheduler(0), nice, loginuid,
		syscall(SYS_membarrier, MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0),
		(long)real.it_interval.tv_sec, (long)real.it_value.tv_sec, (long)virt.it_interval.tv_sec, (long)virt.it_value.tv_sec,
		(long)(intptr_t)ptimer, (long)pt.it_interval.tv_sec, (long)pt.it_value.tv_sec,
		fcntl(owned[0], F_GETOWN) == getpid(), fcntl(owned[0], F_GETSIG), (fcntl(owned[0], F_GETFL) & O_ASYNC) != 0);
	fflush(out);
}

int main(int argc, char **argv)
{
	if (argc < 2) return 2;
	out = fopen(argv[1], "a");
	if (!out) return 2;

	if (prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0)) die("PR_CAPBSET_DROP");
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];
	get_caps(d);
	d[0].effective &= ~(1u << CAP_CHOWN);
	d[0].effective &= ~(1u << CAP_MKNOD);
	d[0].permitted &= ~(1u << CAP_MKNOD);
	d[0].inheritable |= 1u << CAP_NET_RAW;
	if (syscall(SYS_capset, &h, d)) die("capset");
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_RAW, 0, 0)) die("PR_CAP_AMBIENT_RAISE");
	if (prctl(PR_SET_SECUREBITS, 1 << 4 /* SECURE_KEEP_CAPS */, 0, 0, 0)) die("PR_SET_SECUREBITS");
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) die("PR_SET_CHILD_SUBREAPER");
	if (prctl(PR_SET_PDEATHSIG, SIGWINCH, 0, 0, 0)) die("PR_SET_PDEATHSIG");
	if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)) die("PR_SET_THP_DISABLE");
	struct sched_param sp = { 0 };
	if (sched_setscheduler(0, SCHED_BATCH, &sp)) die("sched_setscheduler");
	if (setpriority(PRIO_PROCESS, 0, 7)) die("setpriority");
	int lfd = open("/proc/self/loginuid", O_WRONLY);
	if (lfd < 0 || write(lfd, "4242", 4) != 4) die("loginuid");
	close(lfd);
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0)) die("membarrier");
	struct itimerval real = { { 1000, 0 }, { 3600, 0 } }, virt = { { 2000, 0 }, { 5000, 0 } };
	if (setitimer(ITIMER_REAL, &real, NULL) || setitimer(ITIMER_VIRTUAL, &virt, NULL)) die("setitimer");
	struct sigevent sev = { 0 };
	sev.sigev_notify = SIGEV_SIGNAL;
	sev.sigev_signo = SIGRTMIN + 1;
	sev.sigev_value.sival_ptr = (void *)0x5eed;
	timer_t first;
	if (timer_create(CLOCK_MONOTONIC, &sev, &first) || timer_create(CLOCK_MONOTONIC, &sev, &ptimer) || timer_delete(first))
		die("timer_create");
	struct itimerspec pv = { { 500, 0 }, { 7200, 0 } };
	if (timer_settime(ptimer, 0, &pv, NULL)) die("timer_settime");
	if (pipe(owned) || fcntl(owned[0], F_SETOWN, getpid()) || fcntl(owned[0], F_SETSIG, SIGWINCH) ||
	    fcntl(owned[0], F_SETFL, fcntl(owned[0], F_GETFL) | O_ASYNC))
		die("pipe owner");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) die("PR_SET_NO_NEW_PRIVS");

	struct sigaction sa = { 0 };
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	/* SIGTRAP: a handler of its own, blocked, and one pending for the process (zdtm sigtrap's
	 * state: an injector's int3 would unblock it and take the pending one). */
	sa.sa_handler = on_usr1;
	sigaction(SIGTRAP, &sa, NULL);
	sigset_t trap;
	sigemptyset(&trap);
	sigaddset(&trap, SIGTRAP);
	sigprocmask(SIG_BLOCK, &trap, NULL);
	kill(getpid(), SIGTRAP);
	fprintf(out, "ready %d\n", getpid());
	fflush(out);
	for (;;) {
		pause();
		if (report) { report = 0; write_state(); }
	}
}

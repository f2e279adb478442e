/*
 * nestedpids: a tree with pid namespaces inside it, for nested pid-namespace tests.
 *
 *   nestedpids LOGFILE [sibling|unforked]
 *
 *   root            (whatever it is: a plain process, or init of its own pid namespace)
 *    └─ n1          clone(CLONE_NEWPID): init (pid 1) of namespace L1
 *        ├─ g1      fork: pid 2 of L1
 *        └─ n2      unshare(CLONE_NEWPID) in n1, then fork: init of namespace L2 (below L1)
 *            └─ g2  fork: pid 2 of L2
 *
 * Every process keeps 2 MiB of its own pattern. On SIGUSR1 (a parent forwards it to its
 * children first, by the pids fork gave it) each appends
 *
 *   report NAME pid=P ppid=Q kids=K1:S1,K2:S2 mem=ok|bad
 *
 * (getpid, getppid, each child's pid as fork returned it and whether getpgid() finds it in the
 * process's own namespace, and the pattern check) to LOGFILE (O_APPEND). The root also writes
 * "tick N" every 50 ms. "ready" follows once all five have reported at start.
 *
 * Shapes crisp refuses (a second argument): "sibling": the root calls unshare(CLONE_NEWPID) and
 * forks twice, so its second child is pid 2 of a namespace whose init is its sibling;
 * "unforked": the root calls unshare(CLONE_NEWPID) and forks nothing. The root then reports
 * (kids as above) and writes "ready".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MEM (2u << 20)

static int logfd;
static volatile sig_atomic_t report_requested;
static pid_t kids[2];
static int nkids;
static unsigned char *mem;
static unsigned seed;

static void on_usr1(int sig) { (void)sig; report_requested = 1; }

static void fill(unsigned s)
{
    seed = s;
    mem = malloc(MEM);
    if (!mem) _exit(6);
    for (size_t i = 0; i < MEM; i++) mem[i] = (unsigned char)(i * 31 + s * 7 + (i >> 12));
}

static int mem_ok(void)
{
    for (size_t i = 0; i < MEM; i++)
        if (mem[i] != (unsigned char)(i * 31 + seed * 7 + (i >> 12))) return 0;
    return 1;
}

static void report(const char *name)
{
    char line[512], k[128] = "";
    size_t o = 0;
    for (int i = 0; i < nkids; i++)
        o += snprintf(k + o, sizeof k - o, "%s%d:%s", i ? "," : "", kids[i], getpgid(kids[i]) >= 0 ? "seen" : "unseen");
    int len = snprintf(line, sizeof line, "report %s pid=%d ppid=%d kids=%s mem=%s\n",
                       name, getpid(), getppid(), nkids ? k : "-", mem_ok() ? "ok" : "bad");
    if (write(logfd, line, len) != len) _exit(3);
}

static void serve(const char *name, int ticking)
{
    sigset_t usr1, old;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    long tick = 0;
    for (;;) {
        sigprocmask(SIG_BLOCK, &usr1, &old);
        if (!report_requested) {
            if (ticking) {
                sigprocmask(SIG_SETMASK, &old, NULL);
                struct timespec ts = { 0, 50 * 1000 * 1000 };
                nanosleep(&ts, NULL);
                char t[64];
                int n = snprintf(t, sizeof t, "tick %ld\n", ++tick);
                if (write(logfd, t, n) != n) _exit(3);
                while (waitpid(-1, NULL, WNOHANG) > 0) {}
                continue;
            }
            sigset_t none;
            sigemptyset(&none);
            sigsuspend(&none);
        }
        int go = report_requested;
        report_requested = 0;
        sigprocmask(SIG_UNBLOCK, &usr1, NULL);
        if (go) {
            for (int i = 0; i < nkids; i++) kill(kids[i], SIGUSR1);
            report(name);
        }
        while (waitpid(-1, NULL, WNOHANG) > 0) {}
    }
}

static int notify_fd;

static void started(const char *name)
{
    report(name);
    if (write(notify_fd, "x", 1) != 1) _exit(5);
}

static void leaf(const char *name, unsigned s)
{
    nkids = 0;
    fill(s);
    started(name);
    serve(name, 0);
}

static void n2(void)
{
    nkids = 0;
    fill(4);
    pid_t g = fork();
    if (g < 0) _exit(4);
    if (g == 0) leaf("g2", 5);
    kids[nkids++] = g;
    started("n2");
    serve("n2", 0);
}

static void n1(void)
{
    nkids = 0;
    fill(2);
    pid_t g = fork();
    if (g < 0) _exit(4);
    if (g == 0) leaf("g1", 3);
    kids[nkids++] = g;
    /* The second level: this process's later children go into a new namespace. */
    if (unshare(CLONE_NEWPID) != 0) _exit(7);
    pid_t n = fork();
    if (n < 0) _exit(4);
    if (n == 0) n2();
    kids[nkids++] = n;
    started("n1");
    serve("n1", 0);
}

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: nestedpids LOGFILE\n"); return 2; }
    logfd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (logfd < 0) { perror("open"); return 1; }
    struct sigaction sa = { .sa_handler = on_usr1 };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    int fds[2];
    char ch;
    if (pipe(fds) != 0) return 1;
    notify_fd = fds[1];
    fill(1);
    if (argc > 2) {
        int sibling = strcmp(argv[2], "sibling") == 0;
        if (!sibling && strcmp(argv[2], "unforked") != 0) { fprintf(stderr, "unknown shape %s\n", argv[2]); return 2; }
        if (unshare(CLONE_NEWPID) != 0) { perror("unshare(CLONE_NEWPID)"); return 1; }
        for (int i = 0; sibling && i < 2; i++) {
            pid_t k = fork();
            if (k < 0) return 1;
            if (k == 0) leaf(i ? "s2" : "s1", 6 + i);
            kids[nkids++] = k;
            if (read(fds[0], &ch, 1) != 1) return 1;
        }
        report("root");
        if (write(logfd, "ready\n", 6) != 6) return 1;
        serve("root", 1);
    }
    /* fork-like: no new stack, the child runs on a copy of this one. */
    long c = syscall(SYS_clone, CLONE_NEWPID | SIGCHLD, NULL, NULL, NULL, NULL);
    if (c < 0) { perror("clone(CLONE_NEWPID)"); return 1; }
    if (c == 0) n1();
    kids[nkids++] = (pid_t)c;
    for (int got = 0; got < 4; got++)
        if (read(fds[0], &ch, 1) != 1) return 1;
    close(fds[0]);
    report("root");
    if (write(logfd, "ready\n", 6) != 6) return 1;
    serve("root", 1);
}

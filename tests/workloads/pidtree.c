/*
 * pidtree: a small process tree that reports who it is, for pid-namespace tests.
 *
 *   pidtree LOGFILE
 *
 * Meant to run as init (pid 1) of its own pid namespace. It forks child "a" and child "b";
 * "a" forks the grandchild "g"; "b" makes its own process group. Every process appends
 *
 *   report NAME pid=P ppid=Q pgid=G sid=S self=X
 *
 * (getpid, getppid, getpgid(0), getsid(0), and readlink("/proc/self")) to LOGFILE (O_APPEND),
 * once at start and again on each SIGUSR1, which a parent forwards to its children first.
 * "ready" follows the root's first report once all four have reported. Children report from
 * their own processes, so a restored tree answers with what the kernel tells each one there.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static int logfd;
static volatile sig_atomic_t report_requested;
static pid_t kids[2];
static int nkids;

static void on_usr1(int sig) { (void)sig; report_requested = 1; }

static void report(const char *name)
{
    char self[64] = "?", line[256];
    ssize_t n = readlink("/proc/self", self, sizeof self - 1);
    if (n > 0) self[n] = 0;
    int len = snprintf(line, sizeof line, "report %s pid=%d ppid=%d pgid=%d sid=%d self=%s\n",
                       name, getpid(), getppid(), getpgid(0), getsid(0), self);
    if (write(logfd, line, len) != len) _exit(3);
}

static void loop(const char *name)
{
    sigset_t none;
    sigemptyset(&none);
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    for (;;) {
        sigprocmask(SIG_BLOCK, &usr1, NULL);
        while (!report_requested) sigsuspend(&none);
        report_requested = 0;
        sigprocmask(SIG_UNBLOCK, &usr1, NULL);
        for (int i = 0; i < nkids; i++) kill(kids[i], SIGUSR1);
        report(name);
        while (waitpid(-1, NULL, WNOHANG) > 0) {}
    }
}

/* Each child reports, then tells its parent through the pipe. */
static pid_t spawn(const char *name, int notify, void (*body)(int))
{
    pid_t p = fork();
    if (p < 0) _exit(4);
    if (p == 0) {
        nkids = 0;
        body(notify);
        report(name);
        if (write(notify, "x", 1) != 1) _exit(5);
        loop(name);
    }
    return p;
}

static void none(int notify) { (void)notify; }
static void own_group(int notify) { (void)notify; setpgid(0, 0); }
static void with_grandchild(int notify)
{
    kids[nkids++] = spawn("g", notify, none);
}

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: pidtree LOGFILE\n"); return 2; }
    logfd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (logfd < 0) { perror("open"); return 1; }
    struct sigaction sa = { .sa_handler = on_usr1 };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    int fds[2];
    if (pipe(fds) != 0) return 1;
    kids[nkids++] = spawn("a", fds[1], with_grandchild);
    kids[nkids++] = spawn("b", fds[1], own_group);
    char c;
    for (int got = 0; got < 3; got++)
        if (read(fds[0], &c, 1) != 1) return 1;
    close(fds[0]);
    close(fds[1]);
    report("root");
    if (write(logfd, "ready\n", 6) != 6) return 1;
    loop("root");
}

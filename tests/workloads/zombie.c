/* A parent that leaves its exited child unreaped until SIGUSR1.
 * usage: zombie exit|signal
 * The child exits with code 7 ("exit") or is killed by SIGTERM ("signal"). The parent prints
 * "child PID", then "tick N" every 20 ms; on SIGUSR1 it reaps the child with waitpid() and prints
 * "reaped PID exited 7" / "reaped PID signal 15", or "waitpid error ERRNO". */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t reap;

static void on_usr1(int sig) { (void)sig; reap = 1; }

int main(int argc, char **argv)
{
    int by_signal = argc > 1 && strcmp(argv[1], "signal") == 0;
    signal(SIGUSR1, on_usr1);
    pid_t c = fork();
    if (c < 0) return 2;
    if (c == 0) {
        if (by_signal) kill(getpid(), SIGTERM);
        _exit(7);
    }
    printf("child %d\n", (int)c);
    fflush(stdout);
    for (long i = 1;; i++) {
        if (reap) {
            int st;
            pid_t r = waitpid(c, &st, 0);
            if (r < 0) printf("waitpid error %d\n", errno);
            else if (WIFEXITED(st)) printf("reaped %d exited %d\n", (int)r, WEXITSTATUS(st));
            else if (WIFSIGNALED(st)) printf("reaped %d signal %d\n", (int)r, WTERMSIG(st));
            else printf("reaped %d status 0x%x\n", (int)r, st);
            fflush(stdout);
            return 0;
        }
        printf("tick %ld\n", i);
        fflush(stdout);
        usleep(20000);
    }
}

/* Waits in pause() for SIGUSR1, the way many daemons wait: a flag set by the handler and
 * checked around pause(). Prints "ready", then "got" once the signal came.
 * usage: pauseloop LOGFILE */
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
#include <fcntl.h>
#include <string.h>
static volatile sig_atomic_t go;
static void h(int s) { (void)s; go = 1; }
int main(int argc, char **argv) {
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
    struct sigaction sa; memset(&sa, 0, sizeof sa); sa.sa_handler = h; sigaction(SIGUSR1, &sa, 0);
    dprintf(fd, "ready\n");
    while (!go) pause();
    dprintf(fd, "got\n");
    return 0;
}

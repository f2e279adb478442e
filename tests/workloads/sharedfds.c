/* A parent and its forked child sharing open file descriptions.
 * usage: sharedfds SHAREDFILE
 * The child writes 1, 2, 3... to a pipe every 20 ms and "c N" lines to SHAREDFILE; the parent
 * reads the numbers from the pipe, prints "got N" on stdout and writes "p N" lines to SHAREDFILE.
 * SHAREDFILE is opened once, before the fork, without O_APPEND: the two processes write through
 * one file offset, so no line overwrites another only if the description stays shared.
 * On end of file on the pipe the parent prints "eof" and exits 1. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 2) return 2;
    int p[2];
    if (pipe(p) != 0) return 3;
    int f = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (f < 0) return 4;
    pid_t c = fork();
    if (c < 0) return 5;
    if (c == 0) {
        close(p[0]);
        for (long i = 1;; i++) {
            char b[64];
            int n = snprintf(b, sizeof b, "%ld\n", i);
            if (write(p[1], b, n) != n) _exit(6);
            n = snprintf(b, sizeof b, "c %ld\n", i);
            if (write(f, b, n) != n) _exit(7);
            usleep(20000);
        }
    }
    close(p[1]);
    printf("child %d\n", (int)c);
    fflush(stdout);
    char buf[256];
    size_t len = 0;
    for (;;) {
        ssize_t r = read(p[0], buf + len, sizeof buf - len - 1);
        if (r == 0) { printf("eof\n"); fflush(stdout); return 1; }
        if (r < 0) { printf("read error\n"); fflush(stdout); return 1; }
        len += (size_t)r;
        buf[len] = 0;
        char *start = buf, *nl;
        while ((nl = strchr(start, '\n')) != NULL) {
            *nl = 0;
            long n = atol(start);
            printf("got %ld\n", n);
            fflush(stdout);
            char b[64];
            int k = snprintf(b, sizeof b, "p %ld\n", n);
            if (write(f, b, k) != k) return 8;
            start = nl + 1;
        }
        len = strlen(start);
        memmove(buf, start, len);
    }
}

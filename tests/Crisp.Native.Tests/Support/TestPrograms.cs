using Crisp.TestSupport;

namespace Crisp.Native.Tests;

/// <summary>C sources of the processes the injection tests freeze.</summary>
public static class TestPrograms
{
    /// <summary>
    /// argv[1] = status file. Keeps a 1 MiB buffer with a known checksum, counts loops, and
    /// rewrites "counter ok|BAD &amp;counter" at offset 0 of the file every 2 ms.
    /// </summary>
    public const string Counter = """
        #define _GNU_SOURCE
        #include <stdio.h>
        #include <stdlib.h>
        #include <unistd.h>
        #include <fcntl.h>
        #include <time.h>
        static volatile unsigned long counter;
        int main(int argc, char **argv) {
          size_t n = 1 << 20;
          unsigned char *buf = malloc(n);
          unsigned long expect = 0;
          for (size_t i = 0; i < n; i++) { buf[i] = (unsigned char)(i * 7 + 3); expect += buf[i] * (i % 13 + 1); }
          int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
          for (;;) {
            counter++;
            unsigned long sum = 0;
            for (size_t i = 0; i < n; i++) sum += buf[i] * (i % 13 + 1);
            char line[128];
            int len = snprintf(line, sizeof line, "%20lu %s %p\n", counter, sum == expect ? "ok " : "BAD", (void *)&counter);
            pwrite(fd, line, len, 0);
            struct timespec ts = { 0, 2 * 1000 * 1000 };
            nanosleep(&ts, 0);
          }
        }
        """;

    /// <summary>argv[1] = status file. 4 spinning threads, each bumping its own counter; main prints them.</summary>
    public const string Threads = """
        #define _GNU_SOURCE
        #include <stdio.h>
        #include <pthread.h>
        #include <unistd.h>
        #include <fcntl.h>
        #include <time.h>
        #define N 4
        static volatile unsigned long counters[N];
        static void *spin(void *arg) { long i = (long)arg; for (;;) counters[i]++; return 0; }
        int main(int argc, char **argv) {
          pthread_t t[N];
          for (long i = 0; i < N; i++) pthread_create(&t[i], 0, spin, (void *)i);
          int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
          for (;;) {
            char line[256];
            int len = snprintf(line, sizeof line, "%p %20lu %20lu %20lu %20lu\n", (void *)counters,
                               counters[0], counters[1], counters[2], counters[3]);
            pwrite(fd, line, len, 0);
            struct timespec ts = { 0, 2 * 1000 * 1000 };
            nanosleep(&ts, 0);
          }
        }
        """;

    /// <summary>
    /// Reads lines from stdin (blocking read on a pipe) and appends "got LINE" to argv[1];
    /// SIGUSR1 (SA_RESTART) appends "usr1".
    /// </summary>
    public const string PipeReader = """
        #define _GNU_SOURCE
        #include <stdio.h>
        #include <unistd.h>
        #include <fcntl.h>
        #include <string.h>
        #include <signal.h>
        static int fd;
        static void on_usr1(int s) { (void)s; write(fd, "usr1\n", 5); }
        int main(int argc, char **argv) {
          fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
          struct sigaction sa;
          memset(&sa, 0, sizeof sa);
          sa.sa_handler = on_usr1;
          sa.sa_flags = SA_RESTART;
          sigaction(SIGUSR1, &sa, 0);
          write(fd, "ready\n", 6);
          char buf[256];
          for (;;) {
            ssize_t n = read(0, buf, sizeof buf);
            if (n <= 0) { write(fd, "eof\n", 4); return 0; }
            write(fd, "got ", 4);
            write(fd, buf, n);
          }
        }
        """;

    /// <summary>Counts raw nanosleep(SYS_nanosleep) rounds of 200 ms into argv[1]; SIGUSR1 handler counts too.</summary>
    public const string Sleeper = """
        #define _GNU_SOURCE
        #include <stdio.h>
        #include <unistd.h>
        #include <fcntl.h>
        #include <signal.h>
        #include <time.h>
        #include <sys/syscall.h>
        static volatile sig_atomic_t usr1;
        static void on_usr1(int s) { (void)s; usr1++; }
        int main(int argc, char **argv) {
          signal(SIGUSR1, on_usr1);
          int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
          unsigned long rounds = 0;
          for (;;) {
            char line[128];
            int len = snprintf(line, sizeof line, "%20lu %10d\n", rounds, (int)usr1);
            pwrite(fd, line, len, 0);
            struct timespec ts = { 0, 200 * 1000 * 1000 };
            syscall(SYS_nanosleep, &ts, NULL);
            rounds++;
          }
        }
        """;

    /// <summary>Forks one child; both bump counters forever and report them in argv[1].parent / argv[1].child.</summary>
    public const string Forker = """
        #define _GNU_SOURCE
        #include <stdio.h>
        #include <string.h>
        #include <unistd.h>
        #include <fcntl.h>
        #include <time.h>
        int main(int argc, char **argv) {
          char path[512];
          pid_t c = fork();
          snprintf(path, sizeof path, "%s.%s", argv[1], c == 0 ? "child" : "parent");
          int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
          unsigned long n = 0;
          for (;;) {
            char line[64];
            int len = snprintf(line, sizeof line, "%20lu %d\n", ++n, (int)getpid());
            pwrite(fd, line, len, 0);
            struct timespec ts = { 0, 2 * 1000 * 1000 };
            nanosleep(&ts, 0);
          }
        }
        """;

    /// <summary>The main thread leaves with pthread_exit; one worker thread keeps counting into argv[1].</summary>
    public const string ZombieLeader = """
        #define _GNU_SOURCE
        #include <stdio.h>
        #include <pthread.h>
        #include <unistd.h>
        #include <fcntl.h>
        #include <time.h>
        static int fd;
        static void *work(void *arg) {
          (void)arg;
          for (unsigned long n = 1;; n++) {
            char line[64];
            int len = snprintf(line, sizeof line, "%20lu\n", n);
            pwrite(fd, line, len, 0);
            struct timespec ts = { 0, 2 * 1000 * 1000 };
            nanosleep(&ts, 0);
          }
          return 0;
        }
        int main(int argc, char **argv) {
          fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
          pthread_t t;
          pthread_create(&t, 0, work, 0);
          pthread_exit(0);
        }
        """;
}

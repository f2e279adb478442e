/* The machine's floor for moving a lazy process's memory over loopback, no checkpoint tool
 * involved: what "all pages moved" of a post-copy migration cannot beat on this machine.
 * A sender process writes SIZE MiB of its own (already written) memory to a TCP connection on
 * 127.0.0.1; the receiver reads it in 512 KiB chunks and puts each chunk into a range
 * registered with userfaultfd by UFFDIO_COPY, as a lazy-pages daemon does. Sender and receiver
 * are separate processes, so the two cores work in parallel as they do in a migration.
 * Two rows: the connection alone (received bytes dropped), and the connection feeding UFFDIO_COPY.
 * Each time runs from the sender's first write to the receiver's last byte placed; the pages are
 * checked afterwards (a word per page), so a short or misplaced copy fails the probe.
 * build: gcc -O2 -o netcopy bench/netcopy.c
 * usage: ./netcopy SIZE_MIB */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (512UL << 10)

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static void die(const char *what) { perror(what); exit(1); }

static void *anon(size_t sz)
{
    void *p = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) die("mmap");
    return p;
}

/* A listening socket on 127.0.0.1 at a port the kernel picks. */
static int listener(int *port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t l = sizeof a;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 1) || getsockname(s, (struct sockaddr *)&a, &l))
        die("listen");
    *port = ntohs(a.sin_port);
    return s;
}

/* The sender: fills its memory first (not timed), waits for the go byte, writes it all. */
static pid_t sender(size_t sz, int port, int go)
{
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid) return pid;
    unsigned char *m = anon(sz);
    for (size_t o = 0; o < sz; o += 4096) *(unsigned long *)(m + o) = o ^ 0x5a5a5a5aUL;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a)) die("connect");
    char b;
    if (read(go, &b, 1) != 1) die("go");
    for (size_t o = 0; o < sz;) {
        ssize_t n = write(s, m + o, sz - o < CHUNK ? sz - o : CHUNK);
        if (n <= 0) die("write");
        o += n;
    }
    close(s);
    _exit(0);
}

static void read_full(int s, char *b, size_t n)
{
    for (size_t o = 0; o < n;) {
        ssize_t r = read(s, b + o, n - o);
        if (r <= 0) die("read");
        o += r;
    }
}

/* One transfer; with uffd, each chunk goes into dst by UFFDIO_COPY. Returns the seconds. */
static double run(size_t sz, int uffd, char *dst)
{
    int port, gp[2];
    int l = listener(&port);
    if (pipe(gp)) die("pipe");
    pid_t pid = sender(sz, port, gp[0]);
    int s = accept(l, NULL, NULL);
    if (s < 0) die("accept");
    char *buf = anon(CHUNK);
    memset(buf, 0, CHUNK);
    double t0 = now();
    if (write(gp[1], "g", 1) != 1) die("go");
    for (size_t o = 0; o < sz; o += CHUNK) {
        read_full(s, buf, CHUNK);
        if (uffd < 0) continue;
        struct uffdio_copy c = { .dst = (unsigned long)dst + o, .src = (unsigned long)buf, .len = CHUNK };
        if (ioctl(uffd, UFFDIO_COPY, &c) || c.copy != (long long)CHUNK) die("UFFDIO_COPY");
    }
    double t = now() - t0;
    int st;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st)) { fprintf(stderr, "sender failed\n"); exit(1); }
    close(s); close(l); close(gp[0]); close(gp[1]);
    munmap(buf, CHUNK);
    return t;
}

int main(int argc, char **argv)
{
    if (argc != 2) { fprintf(stderr, "usage: %s SIZE_MIB\n", argv[0]); return 2; }
    size_t sz = strtoul(argv[1], NULL, 0) << 20;
    if (!sz || sz % CHUNK) { fprintf(stderr, "SIZE_MIB must be a positive multiple of 0.5\n"); return 2; }
    signal(SIGPIPE, SIG_IGN);

    double tn = run(sz, -1, NULL);
    printf("loopback TCP alone: %.3f s (%.2f GiB/s)\n", tn, sz / tn / (1 << 30));

    int u = syscall(SYS_userfaultfd, O_CLOEXEC);
    if (u < 0) die("userfaultfd");
    struct uffdio_api api = { .api = UFFD_API };
    if (ioctl(u, UFFDIO_API, &api)) die("UFFDIO_API");
    char *dst = anon(sz);
    struct uffdio_register r = { .range = { .start = (unsigned long)dst, .len = sz }, .mode = UFFDIO_REGISTER_MODE_MISSING };
    if (ioctl(u, UFFDIO_REGISTER, &r)) die("UFFDIO_REGISTER");
    double tc = run(sz, u, dst);
    for (size_t o = 0; o < sz; o += 4096)
        if (*(unsigned long *)(dst + o) != (o ^ 0x5a5a5a5aUL)) { fprintf(stderr, "page at %zu differs\n", o); return 1; }
    printf("loopback TCP into UFFDIO_COPY: %.3f s (%.2f GiB/s)\n", tc, sz / tc / (1 << 30));
    return 0;
}

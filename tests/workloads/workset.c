/*
 * workset: a process whose working set is a scattered subset of its memory, for working-set
 * prefetch (crisp lazy-pages --prefetch-order).
 *
 *   workset MIB LOGFILE PAGES
 *
 * Holds MIB MiB of private anonymous memory filled with a pattern, appends "ready pid=P" to
 * LOGFILE, then waits. On SIGUSR1 it reads PAGES pages picked by a fixed pseudo-random sequence
 * (the same pages in the same order every time, in every run: the order is computed, not stored
 * in memory, so reading it costs no page of its own), checking each one's first word, timed: the
 * "first read of the working set", and appends "workset ok read_ns=T pages=PAGES" or
 * "workset BAD ...". On SIGUSR2 it verifies every word of the buffer, appends "check ok" or
 * "check BAD word=W", and exits with status 0 (1 if bad).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t read_requested, exit_requested;
static void on_usr1(int s) { (void)s; read_requested = 1; }
static void on_usr2(int s) { (void)s; exit_requested = 1; }

static uint64_t pattern(size_t i) { return (i * 0x9E3779B97F4A7C15ull) ^ 0x5eed5eed5eedull; }

static uint64_t splitmix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 4) { fprintf(stderr, "usage: workset MIB LOGFILE PAGES\n"); return 2; }
    size_t mib = strtoul(argv[1], 0, 10), want = strtoul(argv[3], 0, 10);
    int fd = open(argv[2], O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) { perror("open"); return 1; }
    size_t nwords = mib << 17, npages = mib << 8, per_page = 4096 / 8;
    uint64_t *w = mmap(NULL, nwords * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (w == MAP_FAILED) { perror("mmap"); return 1; }
    for (size_t i = 0; i < nwords; i++) w[i] = pattern(i);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1; sigaction(SIGUSR1, &sa, 0);
    sa.sa_handler = on_usr2; sigaction(SIGUSR2, &sa, 0);
    dprintf(fd, "ready pid=%d\n", getpid());
    for (;;) {
        while (!read_requested && !exit_requested) pause();
        if (exit_requested) {
            for (size_t i = 0; i < nwords; i++)
                if (w[i] != pattern(i)) { dprintf(fd, "check BAD word=%zu\n", i); return 1; }
            dprintf(fd, "check ok\n");
            return 0;
        }
        read_requested = 0;
        uint64_t t0 = now_ns();
        size_t bad = (size_t)-1;
        for (size_t k = 0; k < want; k++) {
            size_t i = (size_t)(splitmix(k) % npages) * per_page;
            if (w[i] != pattern(i) && bad == (size_t)-1) bad = i;
        }
        uint64_t t1 = now_ns();
        if (bad == (size_t)-1) dprintf(fd, "workset ok read_ns=%llu pages=%zu\n", (unsigned long long)(t1 - t0), want);
        else dprintf(fd, "workset BAD word=%zu\n", bad);
    }
}

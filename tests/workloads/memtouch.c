/*
 * memtouch: the workload crisp's tests and benchmarks dump and restore.
 *
 *   memtouch MIB LOGFILE [THREADS]
 *
 * Holds MIB MiB of private anonymous memory filled with a pattern (with THREADS > 0,
 * each extra pthread holds its own MIB MiB buffer with its own pattern and counter).
 * Every 10 ms it appends "tick N REALTIME_NS [thread counters]" to LOGFILE (O_APPEND).
 * On SIGUSR1 it reads one byte of every page of every buffer (timed, the "first touch"
 * after a lazy restore), then verifies every buffer's checksum and appends
 * "check ok touch_ns=T sum=S" or "check BAD ...".
 * On SIGUSR2 it exits with status 0 after writing "bye N".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 16

struct buffer {
    uint64_t *words;
    size_t nwords;
    uint64_t seed;
    uint64_t expected;
    volatile uint64_t counter;
};

static struct buffer bufs[MAX_THREADS + 1];
static int nbufs;
static int logfd;
static volatile sig_atomic_t check_requested, exit_requested;

static uint64_t pattern(uint64_t seed, size_t i) { return (i * 0x9E3779B97F4A7C15ull) ^ seed; }

static uint64_t checksum(const struct buffer *b)
{
    uint64_t s = 0;
    for (size_t i = 0; i < b->nwords; i++)
        s = (s << 7 | s >> 57) ^ b->words[i];
    return s;
}

static void fill(struct buffer *b, size_t mib, uint64_t seed)
{
    b->nwords = mib * (1024 * 1024 / 8);
    b->words = mmap(NULL, b->nwords * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b->words == MAP_FAILED) { perror("mmap"); exit(1); }
    b->seed = seed;
    for (size_t i = 0; i < b->nwords; i++)
        b->words[i] = pattern(seed, i);
    b->expected = checksum(b);
}

static uint64_t now_ns(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void logline(const char *line)
{
    size_t n = strlen(line);
    if (write(logfd, line, n) != (ssize_t)n) _exit(3);
}

static void *worker(void *arg)
{
    struct buffer *b = arg;
    struct timespec ms = {0, 1000000};
    for (;;) {
        b->counter++;
        nanosleep(&ms, NULL);
    }
    return NULL;
}

static void on_usr1(int sig) { (void)sig; check_requested = 1; }
static void on_usr2(int sig) { (void)sig; exit_requested = 1; }

static void check(void)
{
    volatile uint8_t sink = 0;
    uint64_t t0 = now_ns(CLOCK_MONOTONIC);
    for (int k = 0; k < nbufs; k++) {
        const uint8_t *p = (const uint8_t *)bufs[k].words;
        for (size_t off = 0; off < bufs[k].nwords * 8; off += 4096)
            sink += p[off];
    }
    uint64_t touch = now_ns(CLOCK_MONOTONIC) - t0;
    char line[256];
    for (int k = 0; k < nbufs; k++) {
        uint64_t s = checksum(&bufs[k]);
        if (s != bufs[k].expected) {
            snprintf(line, sizeof line, "check BAD buffer=%d sum=%016llx expected=%016llx\n", k,
                     (unsigned long long)s, (unsigned long long)bufs[k].expected);
            logline(line);
            return;
        }
    }
    snprintf(line, sizeof line, "check ok touch_ns=%llu sum=%016llx\n", (unsigned long long)touch,
             (unsigned long long)bufs[0].expected);
    logline(line);
}

int main(int argc, char **argv)
{
    if (argc < 3) { fprintf(stderr, "usage: %s MIB LOGFILE [THREADS]\n", argv[0]); return 2; }
    size_t mib = strtoul(argv[1], NULL, 10);
    int threads = argc > 3 ? atoi(argv[3]) : 0;
    if (threads < 0 || threads > MAX_THREADS) { fprintf(stderr, "bad thread count\n"); return 2; }
    logfd = open(argv[2], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0) { perror("open"); return 1; }

    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);

    nbufs = 1 + threads;
    for (int k = 0; k < nbufs; k++)
        fill(&bufs[k], mib, 0x5EED0000ull + k);
    pthread_t tids[MAX_THREADS];
    for (int k = 1; k < nbufs; k++)
        pthread_create(&tids[k - 1], NULL, worker, &bufs[k]);

    char line[512];
    snprintf(line, sizeof line, "ready pid=%d mib=%zu threads=%d sum=%016llx\n", getpid(), mib, threads,
             (unsigned long long)bufs[0].expected);
    logline(line);

    struct timespec tick = {0, 10000000};
    for (uint64_t n = 1;; n++) {
        bufs[0].counter = n;
        int len = snprintf(line, sizeof line, "tick %llu %llu", (unsigned long long)n,
                           (unsigned long long)now_ns(CLOCK_REALTIME));
        for (int k = 1; k < nbufs; k++)
            len += snprintf(line + len, sizeof line - len, " t%d=%llu", k, (unsigned long long)bufs[k].counter);
        snprintf(line + len, sizeof line - len, "\n");
        logline(line);
        if (check_requested) { check_requested = 0; check(); }
        if (exit_requested) {
            snprintf(line, sizeof line, "bye %llu\n", (unsigned long long)n);
            logline(line);
            return 0;
        }
        nanosleep(&tick, NULL);
    }
}

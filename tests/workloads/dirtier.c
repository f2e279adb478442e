/*
 * dirtier: a workload that keeps writing its memory, for incremental dumps and pre-copy.
 *
 *   dirtier MIB LOGFILE PERCENT_PER_SECOND
 *
 * Holds MIB MiB of private anonymous memory. Every page carries a generation: its words are
 * a function of (page index, generation), and a separate array holds every page's generation;
 * a global total counts every page write. Every 10 ms it rewrites the next PERCENT/100 of the
 * pages per second (a rotating window, so a second's writes touch PERCENT% of the memory),
 * then appends "tick N REALTIME_NS written=W" to LOGFILE (O_APPEND); within a tick, after every
 * 1024 page writes, "progress N REALTIME_NS written=W" (a tick's writes can take longer than the
 * copy a test wants to see them overlap, where page writes fault).
 * Lines as memtouch's: "ready pid=P mib=M", on SIGUSR1 one byte of every page is read (timed)
 * and every page is checked against the generation array, and the array's sum against the
 * total: "check ok touch_ns=T sum=S" or "check BAD page=I ...". A page restored from an image
 * older than its last write, a stale generation array, or zeros, all read as BAD.
 * On SIGUSR2 it exits with status 0 after writing "bye N".
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

#define WORDS_PER_PAGE 512

static uint64_t *mem;
static uint64_t *gens;
static size_t npages;
static volatile uint64_t total_writes;
static int logfd;
static volatile sig_atomic_t check_requested, exit_requested;

static uint64_t word(size_t page, uint64_t gen, size_t i)
{
    return ((page * 0x9E3779B97F4A7C15ull) ^ (gen * 0xC2B2AE3D27D4EB4Full) ^ i) | 1;
}

static void write_page(size_t page)
{
    uint64_t gen = gens[page] + 1;
    uint64_t *p = mem + page * WORDS_PER_PAGE;
    for (size_t i = 0; i < WORDS_PER_PAGE; i++)
        p[i] = word(page, gen, i);
    gens[page] = gen;
    total_writes++;
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

static void on_usr1(int sig) { (void)sig; check_requested = 1; }
static void on_usr2(int sig) { (void)sig; exit_requested = 1; }

static void check(void)
{
    volatile uint8_t sink = 0;
    uint64_t t0 = now_ns(CLOCK_MONOTONIC);
    const uint8_t *b = (const uint8_t *)mem;
    for (size_t off = 0; off < npages * 4096; off += 4096)
        sink += b[off];
    uint64_t touch = now_ns(CLOCK_MONOTONIC) - t0;
    char line[256];
    uint64_t sum = 0, hash = 0;
    for (size_t page = 0; page < npages; page++) {
        const uint64_t *p = mem + page * WORDS_PER_PAGE;
        for (size_t i = 0; i < WORDS_PER_PAGE; i++) {
            if (p[i] != word(page, gens[page], i)) {
                snprintf(line, sizeof line, "check BAD page=%zu word=%zu gen=%llu\n", page, i, (unsigned long long)gens[page]);
                logline(line);
                return;
            }
        }
        sum += gens[page] - 1;
        hash = (hash ^ gens[page]) * 0x100000001b3ull;
    }
    if (sum != total_writes) {
        snprintf(line, sizeof line, "check BAD generations sum to %llu, %llu writes were made\n",
                 (unsigned long long)sum, (unsigned long long)total_writes);
        logline(line);
        return;
    }
    snprintf(line, sizeof line, "check ok touch_ns=%llu sum=%016llx writes=%llu\n", (unsigned long long)touch,
             (unsigned long long)hash, (unsigned long long)total_writes);
    logline(line);
}

int main(int argc, char **argv)
{
    if (argc < 4) { fprintf(stderr, "usage: %s MIB LOGFILE PERCENT_PER_SECOND\n", argv[0]); return 2; }
    size_t mib = strtoul(argv[1], NULL, 10);
    double pct = strtod(argv[3], NULL);
    logfd = open(argv[2], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0) { perror("open"); return 1; }

    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);

    npages = mib * 256;
    mem = mmap(NULL, npages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    gens = mmap(NULL, npages * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED || gens == MAP_FAILED) { perror("mmap"); return 1; }
    for (size_t page = 0; page < npages; page++)
        write_page(page);
    total_writes = 0; /* generation 1 everywhere is the start */

    char line[256];
    snprintf(line, sizeof line, "ready pid=%d mib=%zu mem=%lx\n", getpid(), mib, (unsigned long)mem);
    logline(line);

    double per_tick = (double)npages * pct / 100.0 / 100.0, owed = 0;
    size_t next = 0;
    struct timespec tick = {0, 10000000};
    for (uint64_t n = 1;; n++) {
        owed += per_tick;
        while (owed >= 1) {
            write_page(next);
            next = (next + 1) % npages;
            owed -= 1;
            if (total_writes % 1024 == 0) {
                snprintf(line, sizeof line, "progress %llu %llu written=%llu\n", (unsigned long long)n,
                         (unsigned long long)now_ns(CLOCK_REALTIME), (unsigned long long)total_writes);
                logline(line);
            }
        }
        snprintf(line, sizeof line, "tick %llu %llu written=%llu\n", (unsigned long long)n,
                 (unsigned long long)now_ns(CLOCK_REALTIME), (unsigned long long)total_writes);
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

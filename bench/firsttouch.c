/* First-touch cost of pages on this machine, no crisp involved (docs/LAZY-PAGES.md).
 * Prints the time for one read of every 4 KiB page of SIZE MiB after the pages were filled:
 * by the process itself, by UFFDIO_COPY, through /proc/self/mem, and as 2 MiB huge pages
 * moved in with UFFDIO_MOVE; then reading a FILE through a fresh mapping against pread.
 * build: gcc -O2 -o firsttouch bench/firsttouch.c
 * usage: sudo ./firsttouch SIZE_MIB FILE   (FILE e.g. a 1 GiB file on /dev/shm) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define H (2UL << 20)
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
struct uffdio_move { unsigned long long dst, src, len, mode; long long move; };
#define UFFDIO_MOVE 0xC028AA05
#endif

static size_t sz;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static double touch(const char *p, size_t len) { double t = now(); volatile long s = 0; for (size_t i = 0; i < len; i += 4096) s += p[i]; return now() - t; }
static char *amap(size_t len, int huge)
{
    char *p = mmap(NULL, len + H, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    p = (char *)(((unsigned long)p + H - 1) & ~(H - 1));
    if (huge) madvise(p, len, MADV_HUGEPAGE);
    return p;
}
static int uffd_for(char *p, size_t len, unsigned long long features)
{
    int u = syscall(SYS_userfaultfd, O_CLOEXEC);
    struct uffdio_api a = { .api = UFFD_API, .features = features };
    struct uffdio_register r = { .range = { (unsigned long)p, len }, .mode = UFFDIO_REGISTER_MODE_MISSING };
    if (u < 0 || ioctl(u, UFFDIO_API, &a) || ioctl(u, UFFDIO_REGISTER, &r)) { perror("userfaultfd"); exit(1); }
    return u;
}

int main(int argc, char **argv)
{
    if (argc < 3) { fprintf(stderr, "usage: %s SIZE_MIB FILE\n", argv[0]); return 2; }
    sz = strtoul(argv[1], NULL, 10) << 20;
    char *src = amap(sz, 0);
    memset(src, 7, sz);

    char *a = amap(sz, 0);
    memcpy(a, src, sz);
    printf("self-written:        read %.3f s\n", touch(a, sz));

    char *b = amap(sz, 0);
    int u = uffd_for(b, sz, 0);
    double tc = now();
    for (size_t o = 0; o < sz; o += 512 << 10) {
        struct uffdio_copy c = { .dst = (unsigned long)b + o, .src = (unsigned long)src + o, .len = 512 << 10 };
        if (ioctl(u, UFFDIO_COPY, &c)) { perror("UFFDIO_COPY"); return 1; }
    }
    tc = now() - tc;
    printf("UFFDIO_COPY fill:    %.3f s in 512 KiB chunks (%.2f GiB/s)\n", tc, sz / tc / (1 << 30));
    printf("UFFDIO_COPY:         read %.3f s\n", touch(b, sz));

    char *c = amap(sz, 0);
    int mem = open("/proc/self/mem", O_RDWR);
    for (size_t o = 0; o < sz; o += 8 << 20) pwrite(mem, src + o, 8 << 20, (off_t)(unsigned long)(c + o));
    printf("/proc/self/mem:      read %.3f s\n", touch(c, sz));

    char *d = amap(sz, 0), *stage = amap(64 << 20, 1);
    int u2 = uffd_for(d, sz, UFFD_FEATURE_MOVE);
    double t = now();
    for (size_t o = 0; o < sz; o += 64 << 20) {
        size_t n = sz - o < (64 << 20) ? sz - o : (64 << 20);
        pwrite(mem, src + o, n, (off_t)(unsigned long)stage);
        struct uffdio_move m = { .dst = (unsigned long)d + o, .src = (unsigned long)stage, .len = n };
        if (ioctl(u2, UFFDIO_MOVE, &m)) { perror("UFFDIO_MOVE"); return 1; }
    }
    double fill = now() - t;
    printf("2 MiB UFFDIO_MOVE:   read %.3f s (filling them took %.3f s)\n", touch(d, sz), fill);

    int f = open(argv[2], O_RDONLY);
    off_t fsz = lseek(f, 0, SEEK_END);
    char *fm = mmap(NULL, fsz, PROT_READ, MAP_PRIVATE, f, 0);
    printf("file %ld MiB, mmap:  read %.3f s\n", (long)(fsz >> 20), touch(fm, fsz));
    char *buf = malloc(8 << 20);
    memset(buf, 0, 8 << 20);
    t = now();
    for (off_t o = 0; o < fsz; o += 8 << 20) pread(f, buf, 8 << 20, o);
    printf("file %ld MiB, pread: %.3f s\n", (long)(fsz >> 20), now() - t);
    return 0;
}

/* First-touch cost of pages on this machine, no crisp involved (docs/LAZY-PAGES.md).
 * Prints the time for one read of every 4 KiB page of SIZE MiB after the pages were filled:
 * by the process itself, by UFFDIO_COPY, through /proc/self/mem, by the kernel alone
 * (MAP_POPULATE), through a second mapping of page-cache pages, by pread into a THP-enabled
 * range, by UFFDIO_COPY followed by MADV_COLLAPSE, and as 2 MiB huge pages moved in with
 * UFFDIO_MOVE; then reading a FILE through a fresh mapping against pread.
 * Each row also gives the page faults the process took (getrusage ru_minflt) while filling and
 * while reading, the range's AnonHugePages (smaps) and the change of /proc/vmstat's pgfault and
 * thp_* counters, so what a read costs can be told apart from faults and from page size.
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
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define H (2UL << 20)
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
struct uffdio_move { unsigned long long dst, src, len, mode; long long move; };
#define UFFDIO_MOVE 0xC028AA05
#endif
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

static size_t sz;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static long minflt(void) { struct rusage r; getrusage(RUSAGE_SELF, &r); return r.ru_minflt + r.ru_majflt; }

/* /proc/vmstat counters that say whether the kernel faulted or built huge pages. */
static const char *vmnames[] = { "pgfault", "thp_fault_alloc", "thp_fault_fallback", "thp_collapse_alloc", "thp_collapse_alloc_failed", "thp_split_pmd" };
#define NVM (sizeof vmnames / sizeof *vmnames)
static void vmstat(long *v)
{
    char name[64]; long x;
    FILE *f = fopen("/proc/vmstat", "r");
    memset(v, 0, NVM * sizeof *v);
    if (!f) return;
    while (fscanf(f, "%63s %ld", name, &x) == 2)
        for (size_t i = 0; i < NVM; i++) if (!strcmp(name, vmnames[i])) v[i] = x;
    fclose(f);
}

/* AnonHugePages (kB) of the mapping that contains p, from /proc/self/smaps. */
static long anon_huge_kb(const void *p)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char l[512]; int in = 0; long kb = -1;
    if (!f) return -1;
    while (fgets(l, sizeof l, f)) {
        unsigned long a, b;
        if (sscanf(l, "%lx-%lx ", &a, &b) == 2 && strchr(l, '-') < strchr(l, ' ')) in = (unsigned long)p >= a && (unsigned long)p < b;
        else if (in && !strncmp(l, "AnonHugePages:", 14)) { kb = atol(l + 14); break; }
    }
    fclose(f);
    return kb;
}

/* One read of every 4 KiB page; the time, the faults taken and the vmstat change are printed
 * after the row's name in the form "read T s" that bench.py parses. */
static void touchrow(const char *name, const char *p, size_t len)
{
    long v0[NVM], v1[NVM], f = minflt();
    vmstat(v0);
    double t = now(); volatile long s = 0;
    for (size_t i = 0; i < len; i += 4096) s += p[i];
    t = now() - t;
    long faults = minflt() - f;
    vmstat(v1);
    printf("%-20s read %.3f s  (%.2f us/4K page, faults %ld, AnonHugePages %ld MiB", name, t, t * 1e6 / (len / 4096), faults, anon_huge_kb(p) / 1024);
    for (size_t i = 0; i < NVM; i++) if (v1[i] != v0[i]) printf(", %s +%ld", vmnames[i], v1[i] - v0[i]);
    t = now(); s = 0;
    for (size_t i = 0; i < len; i += 4096) s += p[i];
    printf("; second read %.3f s)\n", now() - t);
}
static double fillstart; static long fillflt;
static void fillbegin(void) { fillflt = minflt(); fillstart = now(); }
static void fillend(const char *what) { printf("  fill: %s %.3f s, faults %ld\n", what, now() - fillstart, minflt() - fillflt); }

static char *amap(size_t len, int huge)
{
    char *p = mmap(NULL, len + H, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    p = (char *)(((unsigned long)p + H - 1) & ~(H - 1));
    if (huge) madvise(p, len, MADV_HUGEPAGE);
    return p;
}
static void aunmap(char *p, size_t len) { munmap(p, len); }
static int uffd_for(char *p, size_t len, unsigned long long features)
{
    int u = syscall(SYS_userfaultfd, O_CLOEXEC);
    struct uffdio_api a = { .api = UFFD_API, .features = features };
    struct uffdio_register r = { .range = { (unsigned long)p, len }, .mode = UFFDIO_REGISTER_MODE_MISSING };
    if (u < 0 || ioctl(u, UFFDIO_API, &a) || ioctl(u, UFFDIO_REGISTER, &r)) { perror("userfaultfd"); exit(1); }
    return u;
}
static void copy_in(int u, char *dst, const char *src, size_t chunk)
{
    for (size_t o = 0; o < sz; o += chunk) {
        struct uffdio_copy c = { .dst = (unsigned long)dst + o, .src = (unsigned long)src + o, .len = chunk };
        if (ioctl(u, UFFDIO_COPY, &c)) { perror("UFFDIO_COPY"); exit(1); }
    }
}
static void check(const char *name, const char *p, const char *src)
{
    if (memcmp(p, src, sz)) { printf("%s: CONTENT MISMATCH\n", name); exit(1); }
}
static void show(const char *path)
{
    char b[256] = "?"; FILE *f = fopen(path, "r");
    if (f) { if (!fgets(b, sizeof b, f)) strcpy(b, "?"); fclose(f); }
    b[strcspn(b, "\n")] = 0;
    printf("%s: %s\n", path, b);
}

int main(int argc, char **argv)
{
    if (argc < 3) { fprintf(stderr, "usage: %s SIZE_MIB FILE\n", argv[0]); return 2; }
    sz = strtoul(argv[1], NULL, 10) << 20;
    show("/sys/kernel/mm/transparent_hugepage/enabled");
    show("/sys/kernel/mm/transparent_hugepage/defrag");
    show("/sys/bus/virtio/drivers/virtio_balloon/virtio0/features"); /* bit 5: free page reporting */
    char *src = amap(sz, 0);
    for (size_t o = 0; o < sz; o += 4096) memset(src + o, (int)(o >> 12) * 7 + 1, 4096);
    int mem = open("/proc/self/mem", O_RDWR);

    char *a = amap(sz, 0);
    fillbegin(); memcpy(a, src, sz); fillend("memcpy by the process");
    touchrow("self-written:", a, sz);
    check("self-written", a, src); aunmap(a, sz);

    char *b = amap(sz, 0);
    int u = uffd_for(b, sz, 0);
    double tc = now();
    copy_in(u, b, src, 512 << 10);
    tc = now() - tc;
    printf("UFFDIO_COPY fill:    %.3f s in 512 KiB chunks (%.2f GiB/s)\n", tc, sz / tc / (1 << 30));
    touchrow("UFFDIO_COPY:", b, sz);
    check("UFFDIO_COPY", b, src); aunmap(b, sz); close(u);

    char *c = amap(sz, 0);
    fillbegin();
    for (size_t o = 0; o < sz; o += 8 << 20) pwrite(mem, src + o, 8 << 20, (off_t)(unsigned long)(c + o));
    fillend("pwrite to /proc/self/mem");
    touchrow("/proc/self/mem:", c, sz);
    check("/proc/self/mem", c, src); aunmap(c, sz);

    /* No data at all: the kernel maps zeroed pages, the process has not touched them. */
    fillbegin();
    char *z = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    fillend("MAP_POPULATE, zeroed by the kernel");
    touchrow("MAP_POPULATE:", z, sz);
    aunmap(z, sz);

    /* Page-cache pages the process has read moments ago through one mapping, read again
     * through a second, prefaulted mapping: only the new 4 KiB translations are new. */
    int mfd = memfd_create("firsttouch", 0);
    if (mfd < 0 || ftruncate(mfd, sz)) { perror("memfd"); return 1; }
    char *m1 = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    memcpy(m1, src, sz);
    char *m2 = mmap(NULL, sz, PROT_READ, MAP_SHARED | MAP_POPULATE, mfd, 0);
    touchrow("memfd 2nd mapping:", m2, sz);
    check("memfd 2nd mapping", m2, src); munmap(m1, sz); munmap(m2, sz); close(mfd);

    /* pread into a THP-enabled range: the fault in copy_to_user allocates a huge page. */
    int sf = memfd_create("firsttouch-src", 0);
    if (sf < 0 || write(sf, src, sz) != (ssize_t)sz) { perror("memfd write"); return 1; }
    char *e = amap(sz, 0);
    fillbegin(); pread(sf, e, sz, 0); fillend("pread into 4 KiB pages");
    touchrow("pread, 4 KiB:", e, sz);
    check("pread 4K", e, src); aunmap(e, sz);
    char *g = amap(sz, 1);
    fillbegin(); pread(sf, g, sz, 0); fillend("pread into a MADV_HUGEPAGE range");
    touchrow("pread, THP:", g, sz);
    check("pread THP", g, src); aunmap(g, sz); close(sf);

    /* UFFDIO_COPY (4 KiB PTEs even in a THP-enabled range), then MADV_COLLAPSE of the whole
     * range: what a lazy-pages daemon could do with process_madvise once an extent is in. */
    char *k = amap(sz, 1);
    int u3 = uffd_for(k, sz, 0);
    fillbegin(); copy_in(u3, k, src, H); fillend("UFFDIO_COPY, 2 MiB chunks, MADV_HUGEPAGE range");
    double tk = now(); int rc = madvise(k, sz, MADV_COLLAPSE); tk = now() - tk;
    printf("  MADV_COLLAPSE of it: %s, %.3f s, AnonHugePages %ld MiB\n", rc ? "failed" : "ok", tk, anon_huge_kb(k) / 1024);
    touchrow("COPY+COLLAPSE:", k, sz);
    check("UFFDIO_COPY+MADV_COLLAPSE", k, src); aunmap(k, sz); close(u3);

    char *d = amap(sz, 0), *stage = amap(64 << 20, 1);
    int u2 = uffd_for(d, sz, UFFD_FEATURE_MOVE);
    double t = now();
    for (size_t o = 0; o < sz; o += 64 << 20) {
        size_t n = sz - o < (64 << 20) ? sz - o : (64 << 20);
        pwrite(mem, src + o, n, (off_t)(unsigned long)stage);
        struct uffdio_move mv = { .dst = (unsigned long)d + o, .src = (unsigned long)stage, .len = n };
        if (ioctl(u2, UFFDIO_MOVE, &mv)) { perror("UFFDIO_MOVE"); return 1; }
    }
    double fill = now() - t;
    printf("  fill: 2 MiB UFFDIO_MOVE (pwrite into a THP staging range, then move) %.3f s\n", fill);
    touchrow("2 MiB UFFDIO_MOVE:", d, sz);
    check("UFFDIO_MOVE", d, src); aunmap(d, sz);

    int f = open(argv[2], O_RDONLY);
    off_t fsz = lseek(f, 0, SEEK_END);
    char *fm = mmap(NULL, fsz, PROT_READ, MAP_PRIVATE, f, 0);
    touchrow("file mmap:", fm, fsz);
    char *buf = malloc(8 << 20);
    memset(buf, 0, 8 << 20);
    t = now();
    for (off_t o = 0; o < fsz; o += 8 << 20) pread(f, buf, 8 << 20, o);
    printf("file %ld MiB, pread: %.3f s\n", (long)(fsz >> 20), now() - t);
    return 0;
}

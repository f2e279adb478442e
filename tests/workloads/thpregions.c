/* Two 8 MiB regions of private anonymous memory, each 2 MiB-aligned: one MADV_HUGEPAGE (the
 * kernel backs it with transparent huge pages when it can), one MADV_NOHUGEPAGE; every word
 * holds a value derived from its region and place. Prints "ready HUGE NOHUGE" (addresses in
 * hex), then on SIGUSR1 checks every word of both and prints "check ok" or "check bad R OFF".
 * usage: thpregions */
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#define H (2UL << 20)
#define N (8UL << 20)
static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }
static unsigned long value(int r, unsigned long w) { return (r + 1) * 0x9E3779B97F4A7C15UL ^ (w * 0x100000001B3UL); }

static unsigned long *region(int advice)
{
    char *p = mmap(NULL, N + H, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); _exit(1); }
    p = (char *)(((unsigned long)p + H - 1) & ~(H - 1));
    if (madvise(p, N, advice)) { perror("madvise"); _exit(1); }
    return (unsigned long *)p;
}

int main(void)
{
    unsigned long *r[2] = { region(MADV_HUGEPAGE), region(MADV_NOHUGEPAGE) };
    for (int k = 0; k < 2; k++)
        for (unsigned long w = 0; w < N / 8; w++) r[k][w] = value(k, w);
    signal(SIGUSR1, on_usr1);
    printf("ready %lx %lx\n", (unsigned long)r[0], (unsigned long)r[1]);
    fflush(stdout);
    for (;;) {
        while (!go) pause();
        go = 0;
        int bad = 0;
        for (int k = 0; k < 2 && !bad; k++)
            for (unsigned long w = 0; w < N / 8; w++)
                if (r[k][w] != value(k, w)) { printf("check bad %d %lx\n", k, w * 8); bad = 1; break; }
        if (!bad) printf("check ok\n");
        fflush(stdout);
    }
}

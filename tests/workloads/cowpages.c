/* Private anonymous pages shared copy-on-write by a parent and its child after fork: the child
 * writes page 3 and drops page 5, the parent writes page 7, the other 13 stay shared. Prints
 * "addr 0x...", "child PID", then each process checks its own bytes every 100 ms and prints
 * "ok P N" (P: p or c, N counting up) or "bad P page I". */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { PAGES = 16, PAGE = 4096 };

static int expected(int child, int i)
{
    if (child && i == 3) return 0x77;
    if (child && i == 5) return 0;
    if (!child && i == 7) return 0x55;
    return i + 1;
}

static void check(char *a, int child)
{
    for (long n = 0;; n++) {
        for (int i = 0; i < PAGES; i++)
            for (int k = 0; k < PAGE; k += 512)
                if ((unsigned char)a[i * PAGE + k] != expected(child, i)) {
                    printf("bad %c page %d\n", child ? 'c' : 'p', i);
                    fflush(stdout);
                    _exit(1);
                }
        printf("ok %c %ld\n", child ? 'c' : 'p', n);
        fflush(stdout);
        usleep(100000);
    }
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    char *a = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED) return 1;
    for (int i = 0; i < PAGES; i++) memset(a + i * PAGE, i + 1, PAGE);
    printf("addr %p\n", (void *)a);
    pid_t c = fork();
    if (c < 0) return 1;
    if (c == 0) {
        memset(a + 3 * PAGE, 0x77, PAGE);
        madvise(a + 5 * PAGE, PAGE, MADV_DONTNEED);
        check(a, 1);
    }
    memset(a + 7 * PAGE, 0x55, PAGE);
    printf("child %d\n", c);
    check(a, 0);
}

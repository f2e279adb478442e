/* Pages of every kind a dump tells apart, then waits: written anonymous pages, anonymous pages
 * only read (mapped to the shared zero page), untouched ones, and in a private file mapping one
 * copy-on-written page next to a page only read from the file.
 * usage: pagekinds FILE(>= 64 KiB) READYFILE */
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3) return 2;
    size_t n = 1024;
    char *a = mmap(NULL, n * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    volatile char sink = 0;
    for (size_t i = 0; i < n; i++) {
        if (i % 3 == 0) a[i * 4096] = 1;
        else if (i % 3 == 1) sink += a[i * 4096];
    }
    int fd = open(argv[1], O_RDONLY);
    char *f = mmap(NULL, 16 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (a == MAP_FAILED || f == MAP_FAILED) return 1;
    f[0] = 1;
    sink += f[5 * 4096];
    FILE *r = fopen(argv[2], "w");
    fprintf(r, "ready %lx %lx\n", (unsigned long)a, (unsigned long)f);
    fclose(r);
    for (;;) pause();
}

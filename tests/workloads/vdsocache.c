// vdsocache LOG: resolves the vDSO's clock_gettime, gettimeofday, time and getcpu itself at
// start-up (as glibc does) and keeps the pointers. A tick line every 10 ms; on SIGUSR1 it calls
// each cached pointer many times, bracketed by the real system calls, and writes
// "vdso ok N" or "vdso BAD what". After a restore whose vDSO became a proxy, the cached
// pointers land in the dumped vDSO's code, which must jump to the running kernel's.
#define _GNU_SOURCE
#include <elf.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef int (*cgt_t)(clockid_t, struct timespec *);
typedef int (*gtod_t)(struct timeval *, void *);
typedef time_t (*time_fn)(time_t *);
typedef long (*getcpu_t)(unsigned *, unsigned *, void *);

static volatile sig_atomic_t check_requested;
static void on_usr1(int sig) { (void)sig; check_requested = 1; }

static void *vdso_sym(const char *name)
{
	unsigned long base = getauxval(AT_SYSINFO_EHDR);
	if (!base) return NULL;
	Elf64_Ehdr *eh = (Elf64_Ehdr *)base;
	Elf64_Phdr *ph = (Elf64_Phdr *)(base + eh->e_phoff);
	unsigned long load = 0;
	Elf64_Dyn *dyn = NULL;
	for (int i = 0; i < eh->e_phnum; i++) {
		if (ph[i].p_type == PT_LOAD && !load) load = base + ph[i].p_offset - ph[i].p_vaddr;
		if (ph[i].p_type == PT_DYNAMIC) dyn = (Elf64_Dyn *)(base + ph[i].p_offset);
	}
	if (!dyn) return NULL;
	Elf64_Sym *symtab = NULL; const char *strtab = NULL; Elf32_Word *hash = NULL;
	for (; dyn->d_tag != DT_NULL; dyn++) {
		if (dyn->d_tag == DT_SYMTAB) symtab = (Elf64_Sym *)(load + dyn->d_un.d_ptr);
		if (dyn->d_tag == DT_STRTAB) strtab = (const char *)(load + dyn->d_un.d_ptr);
		if (dyn->d_tag == DT_HASH) hash = (Elf32_Word *)(load + dyn->d_un.d_ptr);
	}
	if (!symtab || !strtab || !hash) return NULL;
	for (Elf32_Word i = 0; i < hash[1]; i++)
		if (symtab[i].st_shndx != SHN_UNDEF && strcmp(strtab + symtab[i].st_name, name) == 0)
			return (void *)(load + symtab[i].st_value);
	return NULL;
}

static long long ns(const struct timespec *t) { return t->tv_sec * 1000000000LL + t->tv_nsec; }

static cgt_t cgt; static gtod_t gtod; static time_fn tm; static getcpu_t gcpu;

static const char *check(void)
{
	static const clockid_t clocks[] = { CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME, CLOCK_MONOTONIC_RAW };
	long ncpu = sysconf(_SC_NPROCESSORS_CONF);
	for (int i = 0; i < 2000; i++) {
		for (unsigned c = 0; c < sizeof clocks / sizeof clocks[0]; c++) {
			struct timespec a, b, v;
			syscall(SYS_clock_gettime, clocks[c], &a);
			if (cgt(clocks[c], &v) != 0) return "clock_gettime failed";
			syscall(SYS_clock_gettime, clocks[c], &b);
			if (ns(&v) < ns(&a) || ns(&v) > ns(&b)) return "clock_gettime out of order";
		}
		struct timeval a, b, v;
		syscall(SYS_gettimeofday, &a, NULL);
		if (gtod(&v, NULL) != 0) return "gettimeofday failed";
		syscall(SYS_gettimeofday, &b, NULL);
		long long av = a.tv_sec * 1000000LL + a.tv_usec, vv = v.tv_sec * 1000000LL + v.tv_usec, bv = b.tv_sec * 1000000LL + b.tv_usec;
		if (vv < av || vv > bv) return "gettimeofday out of order";
		time_t t0 = syscall(SYS_time, NULL), t = tm(NULL), t1 = syscall(SYS_time, NULL);
		if (t < t0 || t > t1) return "time out of order";
		unsigned cpu = ~0u, node = ~0u;
		if (gcpu(&cpu, &node, NULL) != 0 || cpu >= (unsigned)ncpu) return "getcpu wrong";
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 2) { fprintf(stderr, "usage: vdsocache LOG\n"); return 2; }
	FILE *log = fopen(argv[1], "a");
	if (!log) return 1;
	setvbuf(log, NULL, _IOLBF, 0);
	cgt = (cgt_t)vdso_sym("__vdso_clock_gettime");
	gtod = (gtod_t)vdso_sym("__vdso_gettimeofday");
	tm = (time_fn)vdso_sym("__vdso_time");
	gcpu = (getcpu_t)vdso_sym("__vdso_getcpu");
	if (!cgt || !gtod || !tm || !gcpu) { fprintf(log, "no vdso symbols\n"); return 1; }
	signal(SIGUSR1, on_usr1);
	const char *bad = check();
	fprintf(log, "ready vdso=%lx cgt=%p %s\n", getauxval(AT_SYSINFO_EHDR), (void *)cgt, bad ? bad : "selftest-ok");
	for (long n = 0;; n++) {
		if (check_requested) {
			check_requested = 0;
			bad = check();
			if (bad) fprintf(log, "vdso BAD %s\n", bad);
			else fprintf(log, "vdso ok %ld\n", n);
		}
		struct timespec d = { 0, 10 * 1000 * 1000 };
		nanosleep(&d, NULL);
		fprintf(log, "tick %ld\n", n);
	}
}

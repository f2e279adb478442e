// memfd descriptors: a sealable memfd with sparse contents, a second description of the same
// inode (opened through /proc/self/fd), a dup of the first, and an unsealable memfd; a shared
// mapping of the first and a private mapping of the second with a copy-on-write page.
// On SIGUSR1 it prints one "check ..." line of everything it can observe (names, offsets, sizes,
// seals, bytes, whether two descriptions share the inode), without changing any of it, so the
// line before a dump and after a restore must be equal. Also prints "tick N" every 20 ms.
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile sig_atomic_t want;
static void on_usr1(int s) { (void)s; want = 1; }

static int m1, m2, other, dupd;
static char *shared, *priv;

static void check(void)
{
	char n1[64] = "", n2[64] = "", p[64], head[12] = "", tail[5] = "", m2b[2] = "";
	snprintf(p, sizeof p, "/proc/self/fd/%d", m1);
	readlink(p, n1, sizeof n1 - 1);
	snprintf(p, sizeof p, "/proc/self/fd/%d", m2);
	readlink(p, n2, sizeof n2 - 1);
	struct stat s1, s2, s3;
	fstat(m1, &s1); fstat(other, &s2); fstat(m2, &s3);
	pread(m1, head, 11, 0);
	pread(other, tail, 4, (1 << 20) + 5);
	pread(m2, m2b, 1, 0);
	// One inode: a byte written through one description is read through the other.
	char b = 0, c = 0, was;
	pread(m1, &was, 1, 100);
	b = was ^ 0x5a;
	pwrite(m1, &b, 1, 100);
	pread(other, &c, 1, 100);
	pwrite(m1, &was, 1, 100);
	// The shared mapping is the inode: a byte stored through it is read through the fd.
	char d = 0;
	shared[200] = 'S';
	pread(other, &d, 1, 200);
	shared[200] = 0;
	printf("check n1=%s n2=%s pos1=%ld posdup=%ld pos2=%ld size1=%ld size2=%ld mode=%o seals1=%#x seals2=%#x "
	       "head=%s tail=%s m2=%s same_inode=%d shared_bytes=%d dup_shares_offset=%d fl2=%#x map=%.5s map_shared=%d priv=%c\n",
	       n1, n2, (long)lseek(m1, 0, SEEK_CUR), (long)lseek(dupd, 0, SEEK_CUR), (long)lseek(other, 0, SEEK_CUR),
	       (long)s1.st_size, (long)s3.st_size, s1.st_mode & 07777, fcntl(m1, F_GET_SEALS), fcntl(m2, F_GET_SEALS),
	       head, tail, m2b, s1.st_ino == s2.st_ino, b == c, lseek(m1, 0, SEEK_CUR) == lseek(dupd, 0, SEEK_CUR),
	       fcntl(other, F_GETFL) & O_ACCMODE, shared, d == 'S', priv[0]);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGUSR1, on_usr1);
	m1 = memfd_create("crisp-test", MFD_ALLOW_SEALING);
	m2 = memfd_create("plain", 0);
	if (m1 < 0 || m2 < 0) return 1;
	if (write(m1, "hello memfd", 11) != 11) return 1;
	if (pwrite(m1, "tail", 4, (1 << 20) + 5) != 4) return 1;
	if (write(m2, "x", 1) != 1) return 1;
	fchmod(m1, 0640);
	lseek(m1, 6, SEEK_SET);
	if (fcntl(m1, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW)) return 1;
	char p[64];
	snprintf(p, sizeof p, "/proc/self/fd/%d", m1);
	other = open(p, O_RDONLY);
	lseek(other, 3, SEEK_SET);
	dupd = dup(m1);
	shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, m1, 0);
	priv = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, m2, 0);
	if (shared == MAP_FAILED || priv == MAP_FAILED) return 1;
	priv[0] = 'P'; // the file keeps 'x'
	printf("ready\n");
	for (long n = 1;; n++) {
		if (want) { want = 0; check(); }
		usleep(20000);
		printf("tick %ld\n", n);
	}
}

// Two AIO contexts (io_setup, raw syscalls), checked by the program itself after a restore.
// Ring A (io_setup 64): requests completed and read up to 2 slots before the ring's end, then 5
// left unread, so its tail wrapped round below its head (their data fields 1000..1004). Ring B (io_setup 1):
// empty, never used. It prints "ready" once set up; on SIGUSR1 it checks that both rings have
// the head, tail and size they had, that ring A's 5 unread events come out of io_getevents in
// order with their data, that a new request on each completes and is read back, and prints
// "check ok" or "BAD ...". The process then sets the rings up as before for the next round.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct aio_ring {
	unsigned id, nr, head, tail, magic, compat_features, incompat_features, header_length;
	struct io_event io_events[];
};

static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

static int devnull;
static char byte;

static int submit(aio_context_t ctx, unsigned long long data)
{
	struct iocb cb = { .aio_data = data, .aio_lio_opcode = IOCB_CMD_PWRITE, .aio_fildes = devnull,
			   .aio_buf = (unsigned long)&byte, .aio_nbytes = 1 };
	struct iocb *p = &cb;
	return syscall(SYS_io_submit, ctx, 1, &p) == 1 ? 0 : -1;
}

static int reap(aio_context_t ctx, unsigned long long want)
{
	struct io_event ev;
	struct timespec ts = { 0, 0 };
	if (syscall(SYS_io_getevents, ctx, 1, 1, &ev, &ts) != 1) return -1;
	return ev.data == want && ev.res == 1 ? 0 : -1;
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGUSR1, on_usr1);
	devnull = open("/dev/null", O_WRONLY);
	aio_context_t a = 0, b = 0;
	if (devnull < 0 || syscall(SYS_io_setup, 64, &a) || syscall(SYS_io_setup, 1, &b)) {
		printf("BAD setup: %s\n", strerror(errno));
		return 1;
	}
	volatile struct aio_ring *ra = (void *)a, *rb = (void *)b;
	// Completed and read at once up to just before the ring's end.
	for (unsigned i = 0; i < ra->nr - 2; i++)
		if (submit(a, i) || reap(a, i)) { printf("BAD warm-up %u\n", i); return 1; }
	while (1) {
		for (unsigned long long d = 1000; d < 1005; d++)
			if (submit(a, d)) { printf("BAD submit %llu\n", d); return 1; }
		unsigned head = ra->head, tail = ra->tail, nr = ra->nr, bh = rb->head, bt = rb->tail, bn = rb->nr;
		printf("ready head=%u tail=%u nr=%u\n", head, tail, nr);
		while (!go) usleep(1000);
		go = 0;
		const char *bad = NULL;
		if (ra->head != head || ra->tail != tail || ra->nr != nr) bad = "ring A's head, tail or size changed";
		else if (rb->head != bh || rb->tail != bt || rb->nr != bn) bad = "ring B's head, tail or size changed";
		for (unsigned long long d = 1000; !bad && d < 1005; d++)
			if (reap(a, d)) bad = "ring A's unread events are not the ones left";
		if (!bad && (submit(a, 7) || reap(a, 7))) bad = "ring A does not complete a new request";
		if (!bad && (submit(b, 8) || reap(b, 8))) bad = "ring B does not complete a new request";
		printf(bad ? "BAD %s\n" : "check ok\n", bad);
	}
}

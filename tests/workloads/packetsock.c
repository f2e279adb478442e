// Packet sockets, each checked by the program itself after a restore (SIGUSR1):
//  - a SOCK_RAW socket for every protocol bound to lo, TPACKET_V2, PACKET_AUXDATA, promiscuous
//    membership on lo, rx and tx rings mapped at RING: after the restore the rx ring at the same
//    address must receive a UDP datagram this program sends itself over lo;
//  - a SOCK_DGRAM socket for IPv4 bound to lo, PACKET_RESERVE 8, PACKET_ORIGDEV, fanout group 7,
//    a unicast membership;
//  - a SOCK_PACKET socket bound to "lo" and one not bound.
// Prints "ready RING" once set up, then "check ok" or "BAD what" for each SIGUSR1.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FRAME 2048
#define RX_BLOCKS 4
#define BLOCK 4096

static volatile sig_atomic_t checks;
static void on_usr1(int sig) { (void)sig; checks++; }

static int raw, dgram, spkt, spkt_unbound;
static char *ring;
static unsigned lo;

struct mreq_max { int ifindex; unsigned short type, alen; unsigned char addr[32]; };

#define BAD(...) do { printf("BAD "); printf(__VA_ARGS__); printf("\n"); fflush(stdout); return; } while (0)

static int opt(int fd, int name)
{
	int v = -1;
	socklen_t l = sizeof(v);
	if (getsockopt(fd, SOL_PACKET, name, &v, &l) < 0) return -1000 - errno;
	return v;
}

static int drop(int fd, int type, int alen)
{
	struct mreq_max m = { .ifindex = (int)lo, .type = (unsigned short)type, .alen = (unsigned short)alen };
	return setsockopt(fd, SOL_PACKET, PACKET_DROP_MEMBERSHIP, &m, sizeof(m));
}

static int add(int fd, int type, int alen)
{
	struct mreq_max m = { .ifindex = (int)lo, .type = (unsigned short)type, .alen = (unsigned short)alen };
	return setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &m, sizeof(m));
}

static int bound_to(int fd, unsigned short proto)
{
	struct sockaddr_ll a;
	socklen_t l = sizeof(a);
	if (getsockname(fd, (struct sockaddr *)&a, &l) < 0) return 0;
	return a.sll_family == AF_PACKET && a.sll_ifindex == (int)lo && a.sll_protocol == htons(proto);
}

static int spkt_name(int fd, const char *want)
{
	struct sockaddr a;
	socklen_t l = sizeof(a);
	memset(&a, 0, sizeof(a));
	if (getsockname(fd, &a, &l) < 0) return 0;
	return a.sa_family == AF_PACKET && strcmp(a.sa_data, want) == 0;
}

static int mapped_here(void)
{
	struct stat st;
	char line[512];
	int found = 0;
	fstat(raw, &st);
	FILE *f = fopen("/proc/self/maps", "r");
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long start;
		unsigned long long ino;
		if (sscanf(line, "%lx-%*x %*s %*s %*x:%*x %llu", &start, &ino) == 2 && start == (unsigned long)ring && ino == st.st_ino) found = 1;
	}
	if (f) fclose(f);
	return found;
}

// Sends a datagram with a fresh payload to 127.0.0.1 and waits (5 s at most) for a frame of the rx
// ring holding it, handing every other frame back to the kernel (lo carries other traffic too).
static int ring_receives(void)
{
	char payload[32];
	snprintf(payload, sizeof(payload), "crisp-ring-%d-%ld", getpid(), (long)time(NULL));
	int u = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(9), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int frames = RX_BLOCKS * BLOCK / FRAME;
	for (int i = 0; i < frames; i++) ((struct tpacket2_hdr *)(ring + i * FRAME))->tp_status = TP_STATUS_KERNEL;
	__sync_synchronize();
	sendto(u, payload, strlen(payload), 0, (struct sockaddr *)&to, sizeof(to));
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int got = 0;
	for (int round = 0; !got; round++) {
		for (int i = 0; i < frames && !got; i++) {
			struct tpacket2_hdr *h = (struct tpacket2_hdr *)(ring + i * FRAME);
			if (!(h->tp_status & TP_STATUS_USER)) continue;
			char *data = (char *)h + h->tp_mac;
			if (memmem(data, h->tp_snaplen, payload, strlen(payload))) got = 1;
			h->tp_status = TP_STATUS_KERNEL;
		}
		clock_gettime(CLOCK_MONOTONIC, &t);
		if (got || t.tv_sec - t0.tv_sec > 5) break;
		if (round % 50 == 49) sendto(u, payload, strlen(payload), 0, (struct sockaddr *)&to, sizeof(to));
		struct pollfd p = { .fd = raw, .events = POLLIN };
		poll(&p, 1, 100);
	}
	close(u);
	return got;
}

static void check(void)
{
	if (!bound_to(raw, ETH_P_ALL)) BAD("raw socket not bound to lo for ETH_P_ALL");
	if (opt(raw, PACKET_VERSION) != TPACKET_V2) BAD("raw version %d", opt(raw, PACKET_VERSION));
	if (opt(raw, PACKET_AUXDATA) != 1) BAD("raw auxdata %d", opt(raw, PACKET_AUXDATA));
	if (!mapped_here()) BAD("no mapping of the raw socket at %p", (void *)ring);
	if (!ring_receives()) BAD("the rx ring at %p got nothing", (void *)ring);
	if (drop(raw, PACKET_MR_PROMISC, 0) < 0) BAD("raw promisc membership lost: %s", strerror(errno));
	if (add(raw, PACKET_MR_PROMISC, 0) < 0) BAD("promisc membership not added again: %s", strerror(errno));
	if (!bound_to(dgram, ETH_P_IP)) BAD("dgram socket not bound to lo for ETH_P_IP");
	if (opt(dgram, PACKET_RESERVE) != 8) BAD("dgram reserve %d", opt(dgram, PACKET_RESERVE));
	if (opt(dgram, PACKET_ORIGDEV) != 1) BAD("dgram origdev %d", opt(dgram, PACKET_ORIGDEV));
	if (opt(dgram, PACKET_FANOUT) != 7) BAD("dgram fanout 0x%x", opt(dgram, PACKET_FANOUT));
	if (opt(raw, PACKET_FANOUT) != 0) BAD("raw fanout 0x%x", opt(raw, PACKET_FANOUT));
	if (drop(dgram, PACKET_MR_UNICAST, ETH_ALEN) < 0) BAD("dgram unicast membership lost: %s", strerror(errno));
	if (add(dgram, PACKET_MR_UNICAST, ETH_ALEN) < 0) BAD("unicast membership not added again: %s", strerror(errno));
	if (!spkt_name(spkt, "lo")) BAD("SOCK_PACKET socket not bound to lo");
	if (!spkt_name(spkt_unbound, "")) BAD("unbound SOCK_PACKET socket bound");
	printf("check ok\n");
	fflush(stdout);
}

#define DIE(what) do { printf("BAD setup %s: %s\n", what, strerror(errno)); fflush(stdout); return 1; } while (0)

int main(void)
{
	lo = if_nametoindex("lo");
	raw = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	dgram = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_IP));
	spkt = socket(AF_PACKET, SOCK_PACKET, htons(ETH_P_ALL));
	spkt_unbound = socket(AF_PACKET, SOCK_PACKET, htons(ETH_P_ALL));
	if (raw < 0 || dgram < 0 || spkt < 0 || spkt_unbound < 0) DIE("socket");
	struct sockaddr_ll a = { .sll_family = AF_PACKET, .sll_ifindex = (int)lo };
	if (bind(raw, (struct sockaddr *)&a, sizeof(a)) < 0 || bind(dgram, (struct sockaddr *)&a, sizeof(a)) < 0) DIE("bind");
	struct sockaddr sa = { .sa_family = AF_PACKET };
	strcpy(sa.sa_data, "lo");
	if (bind(spkt, &sa, sizeof(sa)) < 0) DIE("bind SOCK_PACKET");
	int v = TPACKET_V2, one = 1, rsv = 8, fanout = 7 | (PACKET_FANOUT_HASH << 16);
	if (setsockopt(raw, SOL_PACKET, PACKET_VERSION, &v, sizeof(v)) < 0) DIE("PACKET_VERSION");
	if (setsockopt(raw, SOL_PACKET, PACKET_AUXDATA, &one, sizeof(one)) < 0) DIE("PACKET_AUXDATA");
	if (add(raw, PACKET_MR_PROMISC, 0) < 0) DIE("promisc");
	struct tpacket_req rx = { BLOCK, RX_BLOCKS, FRAME, RX_BLOCKS * BLOCK / FRAME }, tx = { BLOCK, 1, FRAME, BLOCK / FRAME };
	if (setsockopt(raw, SOL_PACKET, PACKET_RX_RING, &rx, sizeof(rx)) < 0) DIE("PACKET_RX_RING");
	if (setsockopt(raw, SOL_PACKET, PACKET_TX_RING, &tx, sizeof(tx)) < 0) DIE("PACKET_TX_RING");
	ring = mmap(NULL, (RX_BLOCKS + 1) * BLOCK, PROT_READ | PROT_WRITE, MAP_SHARED, raw, 0);
	if (ring == MAP_FAILED) DIE("mmap");
	if (setsockopt(dgram, SOL_PACKET, PACKET_RESERVE, &rsv, sizeof(rsv)) < 0) DIE("PACKET_RESERVE");
	if (setsockopt(dgram, SOL_PACKET, PACKET_ORIGDEV, &one, sizeof(one)) < 0) DIE("PACKET_ORIGDEV");
	if (setsockopt(dgram, SOL_PACKET, PACKET_FANOUT, &fanout, sizeof(fanout)) < 0) DIE("PACKET_FANOUT");
	if (add(dgram, PACKET_MR_UNICAST, ETH_ALEN) < 0) DIE("unicast");
	signal(SIGUSR1, on_usr1);
	printf("ready %p\n", (void *)ring);
	fflush(stdout);
	int done = 0;
	for (;;) {
		if (checks != done) {
			done = checks;
			check();
		}
		usleep(10000);
	}
}

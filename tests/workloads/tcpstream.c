/*
 * Two ends of one TCP connection, each sending the other a stream of TOTAL bytes whose every
 * byte is a hash of its offset (so a lost, duplicated or reordered byte shows at its offset) and
 * checking what it receives. Paced: CHUNK bytes every 10 ms, so a dump lands mid-stream.
 *
 *   tcpstream server ADDR PORT TOTAL LOG        listen, accept one, stream
 *   tcpstream client ADDR PORT TOTAL LOG        connect, stream
 *   tcpstream pair   ADDR PORT TOTAL LOG        both ends in this tree (fork: child is the client)
 *   tcpstream server ADDR 0 ...                 port 0: the kernel's choice, printed on "listening"
 *
 * LOG lines: "listening PORT", "connected", "progress sent=N recv=M" (every 64 KiB or so), then
 * "done sent=N recv=M" and exit 0, or "bad at offset N: got X want Y" and exit 1.
 * A reader that pauses (env TCPSTREAM_READ_PAUSE_MS for the server) lets the send queue fill.
 * TCPSTREAM_NETLINK=1: the server also holds a netlink socket, opened after the connection (a
 * dump refuses it after the connection was locked: the failure path).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 8192

static FILE *logf;

static unsigned char byte_at(uint64_t i, uint32_t seed)
{
	uint32_t x = (uint32_t)i * 0x9E3779B1u + seed + (uint32_t)(i >> 32) * 0x85EBCA6Bu;
	x ^= x >> 15;
	x *= 0x85EBCA6Bu;
	x ^= x >> 13;
	x *= 0xC2B2AE35u;
	x ^= x >> 16;
	return (unsigned char)x;
}

static void say(const char *role, const char *fmt, ...)
{
	va_list ap;
	fprintf(logf, "%s ", role);
	va_start(ap, fmt);
	vfprintf(logf, fmt, ap);
	va_end(ap);
	fputc('\n', logf);
	fflush(logf);
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int parse_addr(const char *addr, int port, struct sockaddr_storage *ss, socklen_t *len)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, addr, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons(port);
		*len = sizeof(*a4);
		return AF_INET;
	}
	if (inet_pton(AF_INET6, addr, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons(port);
		*len = sizeof(*a6);
		return AF_INET6;
	}
	fprintf(stderr, "bad address %s\n", addr);
	exit(2);
}

static int stream(int fd, const char *role, uint32_t out_seed, uint32_t in_seed, uint64_t total, int pause_ms)
{
	unsigned char buf[CHUNK], in[65536];
	uint64_t sent = 0, recvd = 0, last_report = 0;
	double next_send = now_ms(), next_read = now_ms();
	int wr_closed = 0;
	while (recvd < total || sent < total) {
		struct pollfd p = { .fd = fd, .events = POLLIN | (sent < total ? POLLOUT : 0) };
		double t = now_ms();
		int timeout = 10;
		if (poll(&p, 1, timeout) < 0) {
			if (errno == EINTR)
				continue;
			say(role, "error poll: %s", strerror(errno));
			return 1;
		}
		t = now_ms();
		if ((p.revents & POLLOUT) && sent < total && t >= next_send) {
			size_t n = total - sent < CHUNK ? total - sent : CHUNK;
			for (size_t i = 0; i < n; i++)
				buf[i] = byte_at(sent + i, out_seed);
			ssize_t w = send(fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (w < 0 && errno != EAGAIN && errno != EINTR) {
				say(role, "error send: %s", strerror(errno));
				return 1;
			}
			if (w > 0)
				sent += w;
			next_send = t + 10;
		}
		if ((p.revents & (POLLIN | POLLHUP | POLLERR)) && t >= next_read) {
			ssize_t r = recv(fd, in, sizeof(in), MSG_DONTWAIT);
			if (r < 0 && errno != EAGAIN && errno != EINTR) {
				say(role, "error recv: %s", strerror(errno));
				return 1;
			}
			if (r == 0) {
				say(role, "error eof at recv=%llu", (unsigned long long)recvd);
				return 1;
			}
			for (ssize_t i = 0; i < r; i++) {
				unsigned char want = byte_at(recvd + i, in_seed);
				if (in[i] != want) {
					say(role, "bad at offset %llu: got %u want %u", (unsigned long long)(recvd + i), in[i], want);
					return 1;
				}
			}
			if (r > 0)
				recvd += r;
			if (pause_ms)
				next_read = t + pause_ms;
		}
		if (sent + recvd - last_report >= 65536) {
			say(role, "progress sent=%llu recv=%llu", (unsigned long long)sent, (unsigned long long)recvd);
			last_report = sent + recvd;
		}
		(void)wr_closed;
	}
	say(role, "done sent=%llu recv=%llu", (unsigned long long)sent, (unsigned long long)recvd);
	return 0;
}

static int listener(const char *addr, int port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fam = parse_addr(addr, port, &ss, &len);
	int l = socket(fam, SOCK_STREAM, 0), one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l, (struct sockaddr *)&ss, len) || listen(l, 4)) {
		say("server", "error bind/listen: %s", strerror(errno));
		exit(1);
	}
	len = sizeof(ss);
	getsockname(l, (struct sockaddr *)&ss, &len);
	int p = ntohs(fam == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port : ((struct sockaddr_in6 *)&ss)->sin6_port);
	say("server", "listening %d", p);
	return l;
}

static int connector(const char *addr, int port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fam = parse_addr(addr, port, &ss, &len);
	int fd = socket(fam, SOCK_STREAM, 0);
	for (int i = 0; i < 500; i++) {
		if (connect(fd, (struct sockaddr *)&ss, len) == 0)
			return fd;
		if (errno != ECONNREFUSED) {
			say("client", "error connect: %s", strerror(errno));
			exit(1);
		}
		usleep(10000);
	}
	say("client", "error connect: refused for 5 s");
	exit(1);
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: tcpstream server|client|pair ADDR PORT TOTAL LOG\n");
		return 2;
	}
	const char *mode = argv[1], *addr = argv[2];
	int port = atoi(argv[3]);
	uint64_t total = strtoull(argv[4], NULL, 0);
	logf = fopen(argv[5], "a");
	if (!logf)
		return 2;
	setvbuf(logf, NULL, _IOLBF, 0);
	const char *pause = getenv("TCPSTREAM_READ_PAUSE_MS");
	int pause_ms = pause ? atoi(pause) : 0;
	if (!strcmp(mode, "server")) {
		int l = listener(addr, port);
		int fd = accept(l, NULL, NULL);
		close(l);
		if (getenv("TCPSTREAM_NETLINK"))
			socket(AF_NETLINK, SOCK_RAW, 0);
		say("server", "connected");
		return stream(fd, "server", 1, 2, total, pause_ms);
	}
	if (!strcmp(mode, "client")) {
		int fd = connector(addr, port);
		say("client", "connected");
		return stream(fd, "client", 2, 1, total, 0);
	}
	if (!strcmp(mode, "pair")) {
		int l = listener(addr, port);
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		getsockname(l, (struct sockaddr *)&ss, &len);
		int p = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port : ((struct sockaddr_in6 *)&ss)->sin6_port);
		pid_t child = fork();
		if (child == 0) {
			close(l);
			int fd = connector(addr, p);
			say("client", "connected");
			_exit(stream(fd, "client", 2, 1, total, 0));
		}
		int fd = accept(l, NULL, NULL);
		close(l);
		say("server", "connected");
		int rc = stream(fd, "server", 1, 2, total, pause_ms);
		int st;
		waitpid(child, &st, 0);
		say("pair", "exit server=%d client=%d", rc, WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
		return rc || !WIFEXITED(st) || WEXITSTATUS(st);
	}
	return 2;
}

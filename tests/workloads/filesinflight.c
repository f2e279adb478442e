/* Files in flight: descriptors sent over unix sockets (SCM_RIGHTS) and not received yet.
 * usage: filesinflight
 * Before "ready": over a datagram socketpair, the read end of a pipe (then closed here, so only
 * the queue holds it; the write end stays) and, in one message, an eventfd with counter 7 and a
 * bound UDP socket (both closed here); over a stream socketpair, after some bytes, one end of
 * another stream socketpair that has bytes queued for it (closed here: the other end stays), then
 * more bytes; over a seqpacket socketpair an epoll (closed here) that watches the kept pipe's
 * write end, with the pipe's read end sent a second time, so that one file is in flight twice.
 * On SIGUSR1 it receives everything, checks every file's state and prints "check ok" or
 * "check BAD <what>"; then it waits for the next SIGUSR1 (and checks nothing more). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

static int send_fds(int via, const char *data, size_t len, const int *fds, int n)
{
    char control[CMSG_SPACE(4 * sizeof(int))] = {0};
    struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = CMSG_SPACE(n * sizeof(int)) };
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(n * sizeof(int));
    memcpy(CMSG_DATA(c), fds, n * sizeof(int));
    return sendmsg(via, &mh, 0) == (ssize_t)len ? 0 : -1;
}

/* Receives one message: its bytes into buf (len read returned), its descriptors into fds (count into *n). */
static ssize_t recv_fds(int via, char *buf, size_t len, int *fds, int *n)
{
    char control[CMSG_SPACE(4 * sizeof(int))];
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
    ssize_t r = recvmsg(via, &mh, MSG_DONTWAIT);
    *n = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); r >= 0 && c; c = CMSG_NXTHDR(&mh, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            *n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            memcpy(fds, CMSG_DATA(c), *n * sizeof(int));
        }
    return r;
}

int main(void)
{
    int dg[2], st[2], sp[2], inner[2], p[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) || socketpair(AF_UNIX, SOCK_STREAM, 0, st) ||
        socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp) || socketpair(AF_UNIX, SOCK_STREAM, 0, inner) || pipe(p)) return 3;

    if (send_fds(dg[0], "pipe", 4, &p[0], 1)) return 4;
    int ev = eventfd(7, 0);
    int udp = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in ia = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t il = sizeof ia;
    if (ev < 0 || udp < 0 || bind(udp, (struct sockaddr *)&ia, il) || getsockname(udp, (struct sockaddr *)&ia, &il)) return 5;
    int two[2] = { ev, udp };
    if (send_fds(dg[0], "ev+udp", 6, two, 2)) return 6;
    close(ev);
    close(udp);

    if (send(inner[0], "inner", 5, 0) != 5) return 7;
    if (send(st[0], "abc", 3, 0) != 3 || send_fds(st[0], "D", 1, &inner[1], 1) || send(st[0], "efg", 3, 0) != 3) return 8;
    close(inner[1]);

    int ep = epoll_create1(0);
    struct epoll_event e = { .events = EPOLLOUT, .data.u64 = 0x1122334455667788ull };
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, p[1], &e)) return 9;
    int epr[2] = { ep, p[0] };
    if (send_fds(sp[0], "ep", 2, epr, 2)) return 10;
    close(ep);
    close(p[0]);

    signal(SIGUSR1, on_usr1);
    printf("ready\n");
    fflush(stdout);
    while (!go) pause();

    const char *bad = NULL;
    char b[64];
    int fds[4], n;
    int rp = -1, rev = -1, rudp = -1, rin = -1, rep = -1, rp2 = -1;
    if (recv_fds(dg[1], b, sizeof b, fds, &n) != 4 || memcmp(b, "pipe", 4) || n != 1) bad = "datagram 1";
    else rp = fds[0];
    if (!bad && (recv_fds(dg[1], b, sizeof b, fds, &n) != 6 || memcmp(b, "ev+udp", 6) || n != 2)) bad = "datagram 2";
    else if (!bad) { rev = fds[0]; rudp = fds[1]; }
    /* A stream read gives the bytes up to and with the ones the files came with (the kernel's rule). */
    if (!bad && (recv_fds(st[1], b, 16, fds, &n) != 4 || memcmp(b, "abcD", 4) || n != 1)) bad = "stream bytes with the file";
    else if (!bad) rin = fds[0];
    if (!bad && (recv(st[1], b, 3, MSG_DONTWAIT) != 3 || memcmp(b, "efg", 3))) bad = "stream bytes after the file";
    if (!bad && (recv_fds(sp[1], b, sizeof b, fds, &n) != 2 || memcmp(b, "ep", 2) || n != 2)) bad = "seqpacket";
    else if (!bad) { rep = fds[0]; rp2 = fds[1]; }

    uint64_t v = 0;
    if (!bad && (write(p[1], "x", 1) != 1 || read(rp, b, 1) != 1 || b[0] != 'x')) bad = "pipe from the datagram";
    if (!bad && (write(p[1], "y", 1) != 1 || read(rp2, b, 1) != 1 || b[0] != 'y')) bad = "pipe from the seqpacket";
    if (!bad && (read(rev, &v, 8) != 8 || v != 7)) bad = "eventfd counter";
    struct sockaddr_in ra;
    socklen_t rl = sizeof ra;
    if (!bad && (getsockname(rudp, (struct sockaddr *)&ra, &rl) || ra.sin_port != ia.sin_port || ra.sin_addr.s_addr != ia.sin_addr.s_addr))
        bad = "UDP socket's address";
    if (!bad && (recv(rin, b, sizeof b, MSG_DONTWAIT) != 5 || memcmp(b, "inner", 5))) bad = "queued data of the socket in flight";
    if (!bad && (send(rin, "back", 4, 0) != 4 || recv(inner[0], b, sizeof b, MSG_DONTWAIT) != 4 || memcmp(b, "back", 4)))
        bad = "peer of the socket in flight";
    struct epoll_event got = {0};
    if (!bad && (epoll_wait(rep, &got, 1, 0) != 1 || got.data.u64 != 0x1122334455667788ull || !(got.events & EPOLLOUT)))
        bad = "epoll registration";
    if (bad) printf("check BAD %s\n", bad);
    else printf("check ok\n");
    fflush(stdout);
    for (;;) pause();
}

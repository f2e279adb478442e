/* Sockets of every kind crisp restores, with state that only a faithful restore keeps.
 * usage: unixsockets ABSTRACT_NAME
 * Before "ready PORT": a stream, a datagram and a seqpacket socketpair with data queued in both
 * directions; the stream pair shut down for writing one way after its data; an abstract
 * listening stream socket with one connection not accepted yet;
 * a TCP listener on 127.0.0.1 (port 0: the kernel's choice, printed).
 * On SIGUSR1 it checks all of it and prints "check ok" or "check BAD <what>". */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

static int expect(int fd, const char *want, int flags)
{
    char b[64] = {0};
    ssize_t n = recv(fd, b, sizeof b - 1, flags);
    return n == (ssize_t)strlen(want) && memcmp(b, want, n) == 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) return 2;
    int st[2], dg[2], sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, st) || socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) ||
        socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp)) return 3;
    send(st[0], "s0>1", 4, 0); send(st[1], "s1>0", 4, 0);
    shutdown(st[0], SHUT_WR);
    send(dg[0], "d0>1a", 5, 0); send(dg[0], "d0>1b", 5, 0); send(dg[1], "d1>0", 4, 0);
    send(sp[0], "p0>1a", 5, 0); send(sp[0], "p0>1b", 5, 0); send(sp[1], "p1>0", 4, 0);

    struct sockaddr_un ua = { .sun_family = AF_UNIX };
    size_t nl = strlen(argv[1]);
    memcpy(ua.sun_path + 1, argv[1], nl);
    socklen_t ul = offsetof(struct sockaddr_un, sun_path) + 1 + nl;
    int ls = socket(AF_UNIX, SOCK_STREAM, 0), cl = socket(AF_UNIX, SOCK_STREAM, 0);
    if (bind(ls, (struct sockaddr *)&ua, ul) || listen(ls, 7) || connect(cl, (struct sockaddr *)&ua, ul)) return 4;

    int tl = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(tl, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in ia = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t il = sizeof ia;
    if (bind(tl, (struct sockaddr *)&ia, il) || listen(tl, 9) || getsockname(tl, (struct sockaddr *)&ia, &il)) return 5;

    signal(SIGUSR1, on_usr1);
    printf("ready %d\n", ntohs(ia.sin_port));
    fflush(stdout);
    for (;;) {
        while (!go) pause();
        go = 0;
        const char *bad = NULL;
        if (!expect(st[1], "s0>1", MSG_DONTWAIT)) bad = "stream data 0>1";
        else if (!expect(st[0], "s1>0", MSG_DONTWAIT)) bad = "stream data 1>0";
        else if (recv(st[1], (char[4]){0}, 4, MSG_DONTWAIT) != 0) bad = "stream shutdown (no end of file)";
        else if (!expect(dg[1], "d0>1a", MSG_DONTWAIT) || !expect(dg[1], "d0>1b", MSG_DONTWAIT)) bad = "datagrams 0>1";
        else if (!expect(dg[0], "d1>0", MSG_DONTWAIT)) bad = "datagram 1>0";
        else if (!expect(sp[1], "p0>1a", MSG_DONTWAIT) || !expect(sp[1], "p0>1b", MSG_DONTWAIT)) bad = "seqpackets 0>1";
        else if (!expect(sp[0], "p1>0", MSG_DONTWAIT)) bad = "seqpacket 1>0";
        else {
            int a = accept(ls, NULL, NULL);
            if (a < 0) bad = "no pending connection to accept";
            else if (send(cl, "hello", 5, 0) != 5 || !expect(a, "hello", 0)) bad = "pending connection";
            else if (send(a, "back", 4, 0) != 4 || !expect(cl, "back", 0)) bad = "pending connection, other way";
            else {
                struct sockaddr_in got; socklen_t gl = sizeof got;
                int tc = socket(AF_INET, SOCK_STREAM, 0);
                if (getsockname(tl, (struct sockaddr *)&got, &gl) || got.sin_port != ia.sin_port) bad = "TCP listener's port";
                else if (connect(tc, (struct sockaddr *)&ia, sizeof ia) || accept(tl, NULL, NULL) < 0) bad = "TCP listener does not accept";
            }
        }
        printf("check %s%s\n", bad ? "BAD " : "ok", bad ? bad : "");
        fflush(stdout);
    }
}

/*
 * ipcns: System V objects in the IPC namespace it runs in, reported on request.
 *
 *   ipcns LOGFILE
 *
 * Makes a shared memory segment (key 0x5eed, 3 pages and 100 bytes, filled with a pattern)
 * and attaches it, a semaphore set (key 0x5eee) with values 7 0 42, and a message queue
 * (key 0x5eef) with three messages of types 1..3; their ids are not the first ones (one of each
 * kind is made and removed before). Then appends, at start and on each SIGUSR1,
 *
 *   report shm=ID sum=S nattch=N maps=1 shared=1 sem=ID:7,0,42 msg=ID:3:1/msg-one,...
 *
 * sum is an FNV-1a hash of the segment read through its attachment; maps=1 when
 * /proc/self/maps shows the attachment at its address as /SYSV00005eed; shared=1 when a byte
 * written through a second attachment of the id shows through the first (the attachment is the
 * segment, not a copy); the messages are read with MSG_COPY, so the queue stays as it was.
 * "ready" follows the first report.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <unistd.h>

#ifndef MSG_COPY
#define MSG_COPY 040000
#endif

#define SHM_SIZE (3 * 4096 + 100)

static volatile sig_atomic_t report_requested;
static void on_usr1(int sig) { (void)sig; report_requested = 1; }

static int logfd, shmid, semid, msqid;
static unsigned char *seg;

static void die(const char *what) { dprintf(logfd, "error %s\n", what); _exit(2); }

static int maps_ok(void)
{
    char want[64], line[512];
    snprintf(want, sizeof want, "%lx-", (unsigned long)seg);
    FILE *f = fopen("/proc/self/maps", "r");
    int ok = 0;
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, want, strlen(want)) == 0 && strstr(line, "/SYSV00005eed")) ok = 1;
    fclose(f);
    return ok;
}

static void report(void)
{
    char line[1024];
    int len = 0;
    uint32_t h = 2166136261u;
    for (int i = 0; i < SHM_SIZE; i++) h = (h ^ seg[i]) * 16777619u;
    struct shmid_ds ds;
    if (shmctl(shmid, IPC_STAT, &ds) < 0) die("shmctl");
    unsigned char *other = shmat(shmid, NULL, 0);
    if (other == (void *)-1) die("shmat");
    other[4096] ^= 0xff;
    int shared = seg[4096] == other[4096];
    other[4096] ^= 0xff;
    shmdt(other);
    unsigned short v[3];
    if (semctl(semid, 0, GETALL, v) < 0) die("semctl");
    len += snprintf(line + len, sizeof line - len, "report shm=%d sum=%08x nattch=%lu maps=%d shared=%d sem=%d:%u,%u,%u",
                    shmid, h, (unsigned long)ds.shm_nattch, maps_ok(), shared, semid, v[0], v[1], v[2]);
    struct msqid_ds q;
    if (msgctl(msqid, IPC_STAT, &q) < 0) die("msgctl");
    len += snprintf(line + len, sizeof line - len, " msg=%d:%lu:", msqid, (unsigned long)q.msg_qnum);
    for (unsigned long i = 0; i < q.msg_qnum; i++) {
        struct { long mtype; char mtext[256]; } m;
        ssize_t n = msgrcv(msqid, &m, sizeof m.mtext - 1, i, IPC_NOWAIT | MSG_COPY);
        if (n < 0) die("msgrcv");
        m.mtext[n] = 0;
        len += snprintf(line + len, sizeof line - len, "%s%ld/%s", i ? "," : "", m.mtype, m.mtext);
    }
    line[len++] = '\n';
    if (write(logfd, line, len) != len) _exit(3);
}

int main(int argc, char **argv)
{
    if (argc != 2) return 1;
    logfd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (logfd < 0) return 1;
    /* One of each made and removed first: the ids kept have a sequence number above 0. */
    shmctl(shmget(IPC_PRIVATE, 4096, 0600), IPC_RMID, NULL);
    semctl(semget(IPC_PRIVATE, 1, 0600), 0, IPC_RMID);
    msgctl(msgget(IPC_PRIVATE, 0600), IPC_RMID, NULL);
    shmid = shmget(0x5eed, SHM_SIZE, IPC_CREAT | 0640);
    if (shmid < 0) die("shmget");
    seg = shmat(shmid, NULL, 0);
    if (seg == (void *)-1) die("shmat");
    for (int i = 0; i < SHM_SIZE; i++) seg[i] = (unsigned char)(i * 7 + 3);
    semid = semget(0x5eee, 3, IPC_CREAT | 0600);
    if (semid < 0) die("semget");
    unsigned short init[3] = {7, 0, 42};
    if (semctl(semid, 0, SETALL, init) < 0) die("semctl");
    msqid = msgget(0x5eef, IPC_CREAT | 0600);
    if (msqid < 0) die("msgget");
    const char *texts[] = {"msg-one", "the second message", "3"};
    for (int i = 0; i < 3; i++) {
        struct { long mtype; char mtext[64]; } m = {i + 1, ""};
        strcpy(m.mtext, texts[i]);
        if (msgsnd(msqid, &m, strlen(texts[i]), 0) < 0) die("msgsnd");
    }
    signal(SIGUSR1, on_usr1);
    report();
    dprintf(logfd, "ready\n");
    for (;;) {
        pause();
        if (report_requested) { report_requested = 0; report(); }
    }
}

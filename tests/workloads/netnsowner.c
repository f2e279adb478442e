/*
 * A tree that owns its network namespace, set up as zdtm's socket-tcp-*-nfconntrack tests do:
 *
 *   netnsowner SETUP PROGRAM ARGS...
 *
 * unshare(CLONE_NEWNET), then runs the shell script SETUP in the new namespace (bring lo up, add
 * addresses, nftables or iptables rules, or a device crisp must refuse), then execs PROGRAM with
 * ARGS: the dumped tree is PROGRAM and whatever it forks, all in this namespace. Exits 3 if the
 * setup fails.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: netnsowner SETUP PROGRAM ARGS...\n");
		return 2;
	}
	if (unshare(CLONE_NEWNET)) {
		perror("unshare(CLONE_NEWNET)");
		return 3;
	}
	pid_t p = fork();
	if (p == 0) {
		execl("/bin/sh", "sh", "-e", argv[1], (char *)NULL);
		_exit(127);
	}
	int st;
	if (p < 0 || waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "netnsowner: setup %s failed\n", argv[1]);
		return 3;
	}
	execv(argv[2], argv + 2);
	perror("execv");
	return 127;
}

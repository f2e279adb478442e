#!/bin/bash
# zdtm's network-namespace tests (netns, netns-nf, netns-nft, netns-nft-ipt, …) against crisp, in a
# network namespace the dumped tree owns. zdtm.py runs them only in its ns/uns flavors (the test
# in namespaces of its own), which ../shared/criu/zdtm-run.sh skips; here each test is started by
# `unshare --net` (lo brought up first), so the test and the tree it forks own a fresh network
# namespace that crisp, in the host's, dumps and restores (README, Namespaces). Otherwise as
# zdtm-run.sh: start with `make NAME.pid`, dump (the test is killed), restore detached, SIGTERM,
# PASS/FAIL from NAME.out. A CRIU-* nftables table left in the host's ruleset fails the test.
#
# usage: tests/zdtm/owned-netns.sh CR_BINARY RESULTS_FILE TEST...
# env:   ZDTM (built test/zdtm/static dir), STEP_S (timeout per step, default 30), KEEP=1 keeps images
set -u
CR=${1:?criu-like binary}; RES=${2:?results file}; shift 2
ZDTM=${ZDTM:?ZDTM=.../test/zdtm/static}
STEP_S=${STEP_S:-30}
cd "$ZDTM" || exit 2
IMGROOT=$(mktemp -d /tmp/zdtm-netns-img.XXXX)
: >"$RES"
gone() { local i; for i in $(seq $((STEP_S * 20))); do [ -e "/proc/$1" ] || return 0; sleep 0.05; done; return 1; }
first_error() { cat "$@" 2>/dev/null | grep -m1 -iE 'error|refus|unsupported|fail' | cut -c1-200; }
killtree() { local p; for p in $(ls /proc | grep -E '^[0-9]+$'); do [ "$(readlink "/proc/$p/cwd" 2>/dev/null)" = "$ZDTM" ] || continue; tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q "^\./$1 " && kill -9 "$p" 2>/dev/null; done; }
leftlock() { nft list tables 2>/dev/null | grep -q 'CRIU-'; }
for t in "$@"; do
	make -s "$t" >/dev/null 2>&1
	[ -x "$t" ] || { echo "$t SKIP not-built" >>"$RES"; continue; }
	opts=$(python3 -c "import ast,sys; d=ast.literal_eval(open(sys.argv[1]).read()); print(d.get('opts',''))" "$t.desc" 2>/dev/null)
	rm -f "$t.pid" "$t.out" "$t.out.inprogress"; rm -rf "$t.test" "$t.dir.test"
	img=$IMGROOT/$t; rm -rf "$img"; mkdir -p "$img"
	if ! timeout -k 3 "$STEP_S" unshare --net sh -c 'ip link set lo up && exec make -s "$0.pid"' "$t" </dev/null >"$img/start.out" 2>&1 || [ ! -s "$t.pid" ]; then
		echo "$t SKIP start-failed" >>"$RES"; killtree "$t"; continue
	fi
	pid=$(cat "$t.pid")
	# shellcheck disable=SC2086
	if ! timeout "$STEP_S" "$CR" dump -t "$pid" -D "$img" -o dump.log -v4 $opts </dev/null >"$img/dump.out" 2>&1; then
		echo "$t FAIL dump: $(first_error "$img/dump.out" "$img/dump.log")" >>"$RES"; kill -9 "$pid" 2>/dev/null; killtree "$t"; continue
	fi
	gone "$pid" || { kill -9 "$pid" 2>/dev/null; gone "$pid"; }
	# shellcheck disable=SC2086
	if ! timeout "$STEP_S" "$CR" restore -D "$img" -d -o restore.log -v4 --pidfile "$img/rpid" $opts </dev/null >"$img/restore.out" 2>&1; then
		echo "$t FAIL restore: $(first_error "$img/restore.out" "$img/restore.log")" >>"$RES"; kill -9 "$pid" 2>/dev/null; killtree "$t"; continue
	fi
	kill -TERM "$pid" 2>/dev/null
	if ! gone "$pid"; then kill -9 "$pid" 2>/dev/null; killtree "$t"; echo "$t FAIL hang-after-restore" >>"$RES"; continue; fi
	for i in $(seq 100); do [ -f "$t.out" ] && grep -q "PASS\|FAIL\|ERR" "$t.out" && break; sleep 0.05; done
	if leftlock; then echo "$t FAIL left a CRIU-* nftables table in the host's ruleset" >>"$RES"
	elif grep -q PASS "$t.out" 2>/dev/null; then echo "$t PASS" >>"$RES"
	else echo "$t FAIL check: $(tail -c 300 "$t.out" 2>/dev/null | tr '\n' ' ' | cut -c1-200)" >>"$RES"; fi
	killtree "$t"
	[ "${KEEP:-0}" = 1 ] || rm -rf "$img"
done
[ "${KEEP:-0}" = 1 ] || rm -rf "$IMGROOT"
{
	for r in PASS FAIL SKIP; do echo "$r ($(awk -v r=$r '$2 == r' "$RES" | wc -l)): $(awk -v r=$r '$2 == r {print $1}' "$RES" | tr '\n' ' ')"; done
	echo "of $# tests"
} | tee -a "$RES"

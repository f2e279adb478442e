#!/bin/bash
# zdtm's socket-tcp* tests against crisp (or criu4).
#
# Like ../shared/criu/zdtm-run.sh (start with `make NAME.pid`, dump, restore detached, SIGTERM,
# PASS/FAIL from NAME.out), plus what these tests need from zdtm.py: the .desc's dopts/ropts
# (dump-only and restore-only options, e.g. socket-tcp-close0 dumps with --tcp-established and
# restores with --tcp-close) besides opts, and the test's .hook run at --pre-dump/--post-restore
# as zdtm does (ZDTM_TEST_PID, ZDTM_IMG_DIR set; a hook that fails at --pre-dump fails the test).
# The client half of most of them is the test's own child forked before test_init (test_ext_init):
# it stays outside the dumped tree, a live peer for the connection. Afterwards no CRIU-* nftables
# table may be left: a test that leaves one fails.
#
# Tests zdtm runs only in the ns/uns flavors (their own namespaces, e.g. socket-tcp-closed) run in a
# network namespace this script makes for them (lo up), test, dump and restore all inside it: it is
# crisp's namespace too, so the tree does not own it and it is not dumped; the result line says
# "PASS (private netns)". (The nfconntrack tests unshare a namespace of their own: that one is dumped.) Rules a test adds to iptables/ip6tables (socket-tcp-syn-sent adds a DROP
# and removes it only after a restore that worked) are removed after it, whatever happened, so one
# failed test cannot break the next ones.
#
# usage: tests/zdtm/socket-tcp.sh CR_BINARY RESULTS_FILE [TEST...]   (default: every socket-tcp* test)
#   e.g. ZDTM=/tmp/zdtm-x/test/zdtm/static tests/zdtm/socket-tcp.sh /tmp/crisp.sh /tmp/res.txt
# prints one line per test and a PASS/FAIL summary at the end (also appended to RESULTS_FILE).
# env:   ZDTM (built test/zdtm/static dir), STEP_S (timeout per step, default 30), KEEP=1 keeps images
set -u
CR=${1:?criu-like binary, e.g. a wrapper running crisp.dll}; RES=${2:?results file}; shift 2
ZDTM=${ZDTM:?ZDTM=.../test/zdtm/static}
STEP_S=${STEP_S:-30}
cd "$ZDTM" || exit 2
if [ $# -gt 0 ]; then TESTS=("$@"); else mapfile -t TESTS < <(ls socket-tcp*.c | sed 's/\.c$//'); fi
make -s -k "${TESTS[@]}" >/dev/null 2>&1
IMGROOT=$(mktemp -d /tmp/zdtm-tcp-img.XXXX)
: >"$RES"
desc() { python3 -c "import ast,sys; d=ast.literal_eval(open(sys.argv[1]).read()) if __import__('os').path.exists(sys.argv[1]) else {}; print(d.get(sys.argv[2],'') if sys.argv[2]!='flavor' else d.get('flavor','h ns uns'))" "$1.desc" "$2" 2>/dev/null; }
gone() { local i; for i in $(seq $((STEP_S * 20))); do [ -e "/proc/$1" ] || return 0; sleep 0.05; done; return 1; }
first_error() { cat "$@" 2>/dev/null | grep -m1 -iE 'error|refus|unsupported|fail' | cut -c1-200; }
hook() { [ -x "$1.hook" ] || return 0; ZDTM_TEST_PID=$2 ZDTM_IMG_DIR=$3 timeout "$STEP_S" /usr/bin/python3 "./$1.hook" "$4" >>"$3/hook.out" 2>&1; }
leftlock() { $NS nft list tables 2>/dev/null | grep -q 'CRIU-'; }
# A lock a failed step left is reported, then removed: the next test (and other users of the host) must
# not inherit it. Only this test's: the table named by the run id in its inventory.img.
droplocks() { local t; for t in $($NS nft list tables 2>/dev/null | awk '$3 ~ /^CRIU-/ {print $3}'); do grep -qa -- "${t#CRIU-}" "$img/1/inventory.img" 2>/dev/null && $NS nft delete table inet "$t"; done; }
killtree() { local p; for p in $(ls /proc | grep -E '^[0-9]+$'); do [ "$(readlink "/proc/$p/cwd" 2>/dev/null)" = "$ZDTM" ] || continue; tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q "^\./$1 " && kill -9 "$p" 2>/dev/null; done; }
# iptables rules as `iptables -S` prints them, for every table and tool a test may have used.
fwtools() { local x; for x in iptables ip6tables iptables-legacy ip6tables-legacy; do command -v "$x" >/dev/null && echo "$x"; done; }
fwrules() { local x tb; for x in $(fwtools); do for tb in filter nat mangle raw; do $NS "$x" -w -t "$tb" -S 2>/dev/null | grep '^-A ' | sed "s|^|$x $tb |"; done; done; }
# Removes the rules added since $1 (a fwrules listing), newest first.
fwclean() { local line; fwrules | grep -vxF -f <(printf '%s\n' "$1") | tac | while read -r x tb rule; do
	echo "$t NOTE removed a rule the test left: $x -t $tb $rule" >>"$RES"; eval "$NS $x -w -t $tb ${rule/#-A/-D}"; done; }
run_one() {
	local t=$1
	[ -x "$t" ] || { echo "$t SKIP not-built" >>"$RES"; return; }
	opts=$(desc "$t" opts); dopts=$(desc "$t" dopts); ropts=$(desc "$t" ropts)
	rm -f "$t.pid" "$t.out" "$t.out.inprogress" "$t.out.external"
	img=$IMGROOT/$t; rm -rf "$img"; mkdir -p "$img/1"
	if ! $NS timeout -k 3 "$STEP_S" make -s "$t.pid" </dev/null >"$img/start.out" 2>&1 || [ ! -s "$t.pid" ]; then
		echo "$t SKIP start-failed" >>"$RES"; killtree "$t"; return
	fi
	pid=$(cat "$t.pid")
	hook "$t" "$pid" "$img" --pre-dump || { echo "$t FAIL hook --pre-dump" >>"$RES"; kill -9 "$pid"; killtree "$t"; return; }
	# shellcheck disable=SC2086
	if ! $NS timeout "$STEP_S" "$CR" dump -t "$pid" -D "$img/1" -o dump.log -v4 $opts $dopts </dev/null >"$img/dump.out" 2>&1; then
		echo "$t FAIL dump: $(first_error "$img/dump.out" "$img/1/dump.log")" >>"$RES"
		kill -9 "$pid" 2>/dev/null; killtree "$t"; leftlock && echo "$t LEFT-LOCK after failed dump" >>"$RES"; droplocks; return
	fi
	gone "$pid" || { kill -9 "$pid" 2>/dev/null; gone "$pid"; }
	# shellcheck disable=SC2086
	if ! $NS timeout "$STEP_S" "$CR" restore -D "$img/1" -d -o restore.log -v4 --pidfile "$img/rpid" $opts $ropts </dev/null >"$img/restore.out" 2>&1; then
		echo "$t FAIL restore: $(first_error "$img/restore.out" "$img/1/restore.log")" >>"$RES"
		kill -9 "$pid" 2>/dev/null; killtree "$t"; leftlock && echo "$t LEFT-LOCK after failed restore" >>"$RES"; droplocks; return
	fi
	hook "$t" "$pid" "$img" --post-restore || echo "$t NOTE hook --post-restore failed (see $img/hook.out)" >>"$RES"
	kill -TERM "$pid" 2>/dev/null
	if ! gone "$pid"; then kill -9 "$pid" 2>/dev/null; killtree "$t"; echo "$t FAIL hang-after-restore" >>"$RES"; return; fi
	for i in $(seq 100); do [ -f "$t.out" ] && grep -q "PASS\|FAIL\|ERR" "$t.out" && break; sleep 0.05; done
	if leftlock; then echo "$t FAIL left a CRIU-* nftables table" >>"$RES"; droplocks
	elif grep -q PASS "$t.out" 2>/dev/null; then echo "$t PASS$NOTE" >>"$RES"
	else echo "$t FAIL check: $(tail -c 300 "$t.out" 2>/dev/null | tr '\n' ' ' | cut -c1-200)" >>"$RES"; fi
	killtree "$t"
	[ "${KEEP:-0}" = 1 ] || rm -rf "$img"
}
for t in "${TESTS[@]}"; do
	NS=; NOTE=; netns=
	case " $(desc "$t" flavor) " in
	*" h "*) ;;
	*) netns=crisp-zdtm-$$-${t//[^a-z0-9]/}; netns=${netns:0:48}
	   ip netns add "$netns" && ip -n "$netns" link set lo up || { echo "$t SKIP no-netns" >>"$RES"; continue; }
	   NS="ip netns exec $netns"; NOTE=" (private netns)";;
	esac
	fw0=$(fwrules); n0=$(grep -c '' "$RES")
	run_one "$t"
	fwclean "$fw0"
	[ -n "$netns" ] && ip netns del "$netns"
	tail -n "+$((n0 + 1))" "$RES"
done
[ "${KEEP:-0}" = 1 ] || rm -rf "$IMGROOT"
{
	for r in PASS FAIL SKIP; do echo "$r ($(awk -v r=$r '$2 == r' "$RES" | wc -l)): $(awk -v r=$r '$2 == r {print $1}' "$RES" | tr '\n' ' ')"; done
	echo "of ${#TESTS[@]} tests"
} | tee -a "$RES"

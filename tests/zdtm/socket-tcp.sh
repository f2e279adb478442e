#!/bin/bash
# zdtm's socket-tcp* tests against crisp (or criu4), in the host's network namespace.
#
# Like ../shared/criu/zdtm-run.sh (start with `make NAME.pid`, dump, restore detached, SIGTERM,
# PASS/FAIL from NAME.out), plus what these tests need from zdtm.py: the .desc's dopts/ropts
# (dump-only and restore-only options, e.g. socket-tcp-close0 dumps with --tcp-established and
# restores with --tcp-close) besides opts, and the test's .hook run at --pre-dump/--post-restore
# as zdtm does (ZDTM_TEST_PID, ZDTM_IMG_DIR set; a hook that fails fails the test). The client
# half of most of them is the test's own child forked before test_init (test_ext_init): it stays
# outside the dumped tree, a live peer for the connection. Afterwards no CRIU-* nftables table may
# be left: a test that leaves one fails.
#
# usage: tests/zdtm/socket-tcp.sh CR_BINARY RESULTS_FILE [TEST...]   (default: every socket-tcp* test)
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
leftlock() { nft list tables 2>/dev/null | grep -q 'CRIU-'; }
# A lock a failed step left is reported, then removed: the next test (and other users of the host) must
# not inherit it. Only this test's: the table named by the run id in its inventory.img.
droplocks() { local t; for t in $(nft list tables 2>/dev/null | awk '$3 ~ /^CRIU-/ {print $3}'); do grep -qa -- "${t#CRIU-}" "$img/1/inventory.img" 2>/dev/null && nft delete table inet "$t"; done; }
killtree() { local p; for p in $(ls /proc | grep -E '^[0-9]+$'); do [ "$(readlink "/proc/$p/cwd" 2>/dev/null)" = "$ZDTM" ] || continue; tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q "^\./$1 " && kill -9 "$p" 2>/dev/null; done; }
for t in "${TESTS[@]}"; do
	[ -x "$t" ] || { echo "$t SKIP not-built" >>"$RES"; continue; }
	case " $(desc "$t" flavor) " in *" h "*) ;; *) echo "$t SKIP namespaces-only" >>"$RES"; continue;; esac
	opts=$(desc "$t" opts); dopts=$(desc "$t" dopts); ropts=$(desc "$t" ropts)
	rm -f "$t.pid" "$t.out" "$t.out.inprogress" "$t.out.external"
	img=$IMGROOT/$t; rm -rf "$img"; mkdir -p "$img/1"
	if ! timeout -k 3 "$STEP_S" make -s "$t.pid" </dev/null >"$img/start.out" 2>&1 || [ ! -s "$t.pid" ]; then
		echo "$t SKIP start-failed" >>"$RES"; killtree "$t"; continue
	fi
	pid=$(cat "$t.pid")
	hook "$t" "$pid" "$img" --pre-dump || { echo "$t FAIL hook --pre-dump" >>"$RES"; kill -9 "$pid"; killtree "$t"; continue; }
	# shellcheck disable=SC2086
	if ! timeout "$STEP_S" "$CR" dump -t "$pid" -D "$img/1" -o dump.log -v4 $opts $dopts </dev/null >"$img/dump.out" 2>&1; then
		echo "$t FAIL dump: $(first_error "$img/dump.out" "$img/1/dump.log")" >>"$RES"
		kill -9 "$pid" 2>/dev/null; killtree "$t"; leftlock && echo "$t LEFT-LOCK after failed dump" >>"$RES"; droplocks; continue
	fi
	gone "$pid" || { kill -9 "$pid" 2>/dev/null; gone "$pid"; }
	# shellcheck disable=SC2086
	if ! timeout "$STEP_S" "$CR" restore -D "$img/1" -d -o restore.log -v4 --pidfile "$img/rpid" $opts $ropts </dev/null >"$img/restore.out" 2>&1; then
		echo "$t FAIL restore: $(first_error "$img/restore.out" "$img/1/restore.log")" >>"$RES"
		kill -9 "$pid" 2>/dev/null; killtree "$t"; leftlock && echo "$t LEFT-LOCK after failed restore" >>"$RES"; droplocks; continue
	fi
	hook "$t" "$pid" "$img" --post-restore || echo "$t NOTE hook --post-restore failed (see $img/hook.out)" >>"$RES"
	kill -TERM "$pid" 2>/dev/null
	if ! gone "$pid"; then kill -9 "$pid" 2>/dev/null; killtree "$t"; echo "$t FAIL hang-after-restore" >>"$RES"; continue; fi
	for i in $(seq 100); do [ -f "$t.out" ] && grep -q "PASS\|FAIL\|ERR" "$t.out" && break; sleep 0.05; done
	if leftlock; then echo "$t FAIL left a CRIU-* nftables table" >>"$RES"; droplocks
	elif grep -q PASS "$t.out" 2>/dev/null; then echo "$t PASS" >>"$RES"
	else echo "$t FAIL check: $(tail -c 300 "$t.out" 2>/dev/null | tr '\n' ' ' | cut -c1-200)" >>"$RES"; fi
	killtree "$t"
	[ "${KEEP:-0}" = 1 ] || rm -rf "$img"
done
[ "${KEEP:-0}" = 1 ] || rm -rf "$IMGROOT"
grep -c ' PASS$' "$RES" | sed 's/^/PASS: /'

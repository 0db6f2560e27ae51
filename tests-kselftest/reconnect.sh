#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The server goes away and comes back: the kernel finds no listener (or a
# new server that does not know the log and answers -ESRCH), replays CTR and
# RESUME every 2 s until a server answers, then retries the request; the
# writes that waited complete and the mirror stays consistent. A resume
# itself is not retried (as in the C module): it fails at once.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_trace.sh"
require_env dmsetup losetup ulog-test-server

ktap_print_header
ktap_set_plan 14
trap cleanup_all EXIT

load_module
mark_log
start_mark=$LOG_MARK
make_legs 2 16
S=32768
rm -f "$TRACE"
start_test_server
dmsetup create dmlu-rc --table "$(mirror_table $S "dmlu-rc-1 clustered-core 1024 nosync")"
luid=$(luids_of_ctr "$S clustered-core 1024 nosync" | tail -n1)

# 1. No server at all when the writes come.
stop_test_server
mark_log
rm -f "$WORK/written"
( dd if=/dev/urandom of=/dev/mapper/dmlu-rc bs=1M count=4 oflag=direct status=none \
	&& touch "$WORK/written" ) &
writer=$!
# Three attempts: two gaps to measure below.
attempts() { [ "$(log_since_mark | grep -c "rc-1\] attempting to contact")" -ge "$1" ]; }
eventually 60 attempts 3
waiting() { [ ! -e "$WORK/written" ] && log_has "rc-1\] userspace log server not found"; }
check "with no server the writes wait, and the log says so" waiting
mv "$TRACE" "$WORK/trace.before"
start_test_server
wait "$writer"
check "once a server is back the writes complete" test -e "$WORK/written"
replayed() {
	[ "$(trace_of "$luid" | awk '{sub("type=", "", $4); print $4}' | head -n2 | tr '\n' ' ')" = "CTR RESUME " ]
}
check "the new server got CTR then RESUME, for the same log (luid)" replayed
same_ctr() { grep " luid=$luid type=CTR " "$TRACE" | grep -q "ctr=\"$S clustered-core 1024 nosync\""; }
check "... with the same CTR string" same_ctr
check "... then the waiting request and the rest" \
	bash -c "grep -q ' luid=$luid type=MARK_REGION ' '$TRACE' || grep -q ' luid=$luid type=FLUSH ' '$TRACE'"
check "the kernel log tells of the reconnection" log_has "rc-1\] reconnected to userspace log server"
# Seconds between the attempts to reach a server, from the log's timestamps.
attempt_gaps() {
	log_since_mark | awk -F'[][]' '/rc-1\] attempting to contact/ {
		t = $2 + 0; if (p) printf "%.2f\n", t - p; p = t }'
}
every_2s() {
	local gaps
	gaps=$(attempt_gaps)
	echo "# seconds between attempts: $(echo $gaps)"
	# Never sooner than 2 s; later only by what a loaded machine adds.
	[ -n "$gaps" ] && ! awk '$1 < 1.9 || $1 > 6' <<<"$gaps" | grep -q .
}
check "... after attempts 2 s apart" every_2s

# 2. The server dies holding a request: after the 15 s resend a new server,
# which does not know the log, answers -ESRCH and gets CTR and RESUME.
stop_test_server
start_test_server --fault MARK_REGION:exit:1
mark_log
rm -f "$WORK/written"
( dd if=/dev/urandom of=/dev/mapper/dmlu-rc bs=1M count=4 seek=8 oflag=direct status=none \
	&& touch "$WORK/written" ) &
writer=$!
# The server took the MARK_REGION and exited holding it.
server_gone() { ! kill -0 "$TS_PID" 2>/dev/null; }
eventually 30 server_gone
TS_PID=""
start_test_server
wait "$writer"
check "a server crash holding a request: the writes still complete" test -e "$WORK/written"
timed_out_then_replayed() {
	log_has "request timed out: \[MARK_REGION/" && log_has "rc-1\] reconnected to userspace log server"
}
check "... after a timeout, a -ESRCH answer and a replayed CTR and RESUME" timed_out_then_replayed

# 3. A resume with no server fails at once instead of waiting for one; the
# next write brings the log back.
dmsetup suspend dmlu-rc
stop_test_server
mark_log
check "with no server a resume returns at once (RESUME is not retried)" \
	timeout 10 dmsetup resume dmlu-rc
check "... and the mirror says the log resume failed" log_has "log resume failed"
rm -f "$WORK/written"
mark_log
( dd if=/dev/urandom of=/dev/mapper/dmlu-rc bs=1M count=1 seek=12 oflag=direct status=none \
	&& touch "$WORK/written" ) &
writer=$!
# The write is waiting for a server.
eventually 30 log_has "rc-1\] (userspace log server not found|attempting to contact)"
start_test_server
wait "$writer"
check "... and a write after it completes once a server is back" test -e "$WORK/written"

dmsetup remove dmlu-rc
check "the legs are identical" legs_identical
LOG_MARK=$start_mark
check "no flush failed: every request the writers caused was answered" fails log_has "flush failed"

ktap_finished

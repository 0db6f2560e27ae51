#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Bad replies from the server get a clear log line and an error for that
# request, never a crash or a wrong answer: EAGAIN (as an ack or in the
# error field) resends; an ack without the data, too much or too little
# data, a data_size that disagrees with the message, an odd errno, all fail
# the request; a reply naming another log is ignored; a reply later than
# the 15 s resend is dropped and the resent request answered; replies from
# a process without CAP_SYS_ADMIN are ignored. A refused group of marks or
# clears is sent again one region per request; a resync region beyond the
# log is refused; a failed IN_SYNC means "not in sync";
# a failed lazy FLUSH raises a table event; with integrated_flush a refused
# FLUSH fails the flush and keeps its marks.
#
# `dmsetup status` asks GET_SYNC_COUNT (a failure shows as 0 regions in
# sync) and STATUS_INFO (a failure shows as "userspace 1 COM_FAILURE").

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_trace.sh"
require_env dmsetup losetup ulog-test-server

ktap_print_header
ktap_set_plan 35
trap cleanup_all EXIT

load_module
make_legs 2 16
S=32768
n=0

# scenario [fault rules...]: a fresh mirror, served by a server that applies
# the rules; sets LUID. GET_SYNC_COUNT rules skip the one the table load asks.
# KEYWORD (integrated_flush), SYNC (nosync) and FEATURES (1 handle_errors)
# shape the table.
scenario() {
	dmsetup remove dmlu-rf 2>/dev/null
	stop_test_server
	rm -f "$TRACE"
	local r rules=()
	for r in "$@"; do rules+=(--fault "$r"); done
	start_test_server "${rules[@]}"
	n=$((n + 1))
	dmsetup create dmlu-rf --table \
		"$(mirror_table $S "dmlu-rf-$n ${KEYWORD:+$KEYWORD }clustered-core 1024 ${SYNC:-nosync}" \
			"${FEATURES:-1 handle_errors}")"
	LUID=$(luids_of_ctr "$S clustered-core 1024" | tail -n1)
	mark_log
}
in_sync_count() { [ "$(sync_of dmlu-rf)" = "$1/32" ]; }
status_is() { dmsetup status dmlu-rf | grep -q -- " $1\$"; }

scenario STATUS_INFO:eagain:2
check "EAGAIN acks: the request is resent until answered" status_is "1 ulog-test-server"
check "... three STATUS_INFO requests seen" test "$(count_type "$LUID" STATUS_INFO)" = 3

scenario STATUS_INFO:eagain-reply:1
check "-EAGAIN in the error field resends too" status_is "1 ulog-test-server"

scenario GET_SYNC_COUNT:ack-only:1:1
check "ack without the data: request fails (0 in sync)" in_sync_count 0
check "... logged" log_has "bad reply to GET_SYNC_COUNT: 0 bytes of data"
check "... and the next request works again" in_sync_count 32

scenario GET_SYNC_COUNT:too-much:1:1
check "72 bytes for an 8-byte answer: request fails" in_sync_count 0
check "... logged as insufficient space" log_has "insufficient space to receive package \[GET_SYNC_COUNT\] \(72 vs 8\)"

scenario GET_SYNC_COUNT:short:1:1
check "4 bytes for an 8-byte answer: request fails" bash -c \
	'dmsetup status dmlu-rf | grep -q " 0/32 "'
check "... logged" log_has "bad reply to GET_SYNC_COUNT: 4 bytes of data"

scenario GET_SYNC_COUNT:bad-data-size:1:1
check "data_size beyond the message: request fails" in_sync_count 0
check "... logged" log_has "bad reply to GET_SYNC_COUNT: data_size 108 but 8 bytes of data"

scenario GET_SYNC_COUNT:ack-error=70000:1:1
odd_errno() { in_sync_count 0 && log_has "ack with errno 70000"; }
check "ack with errno 70000: request fails, logged" odd_errno

# Answers the request cannot have: refused as malformed, not believed.
scenario GET_SYNC_COUNT:value=40:1:1
impossible_count() { in_sync_count 0 && log_has "bad reply to GET_SYNC_COUNT: 40"; }
check "a sync count above the 32 regions is refused (0 in sync), logged" impossible_count
FEATURES=0 scenario IN_SYNC:value=2:1
dd if=/dev/zero of=/dev/mapper/dmlu-rf bs=4k count=1 seek=1536 oflag=direct status=none
check "an IN_SYNC answer of 2 is refused, logged" log_has "bad reply to IN_SYNC: Some\(2\)"

scenario STATUS_INFO:truncated:1
check "a message shorter than a header is ignored; the resent request answered" \
	status_is "1 ulog-test-server"
check "... logged" log_has "incomplete message received \(expected 160, got 100\)"

# A slow first FLUSH lets a 4-region write queue up behind it.
scenario FLUSH:late=2000:1 MARK_REGION:error=22:1:1
dd if=/dev/zero of=/dev/mapper/dmlu-rf bs=4k count=1 seek=2048 oflag=direct status=none &
first=$!
sleep 0.5
dd if=/dev/zero of=/dev/mapper/dmlu-rf bs=2M count=1 oflag=direct status=none
wait "$first"
check "a refused group of 4 marks is sent again one region per request" \
	test "$(region_counts "$LUID" MARK_REGION)" = "1 4 1 1 1 1 "

# Clears come grouped when several regions turn clean before the mirror's
# thread runs, which depends on timing: up to 8 writes of 4 regions each.
scenario 'CLEAR_REGION@2:error=22:1'
group=""
for try in 1 2 3 4 5 6 7 8; do
	dd if=/dev/zero of=/dev/mapper/dmlu-rf bs=2M count=1 seek=$((try % 4 + 2)) oflag=direct status=none
	sleep 1
	group=$(trace_of "$LUID" | grep " type=CLEAR_REGION .* fault=" | head -n1)
	[ -n "$group" ] && break
done
singles_after() {
	local at r
	at=$(grep -n " luid=$LUID type=CLEAR_REGION .* fault=" "$TRACE" | head -n1 | cut -d: -f1)
	for r in $(field "$group" regions | tr , ' '); do
		tail -n +"$((at + 1))" "$TRACE" | grep " luid=$LUID type=CLEAR_REGION " |
			grep -Eq "regions=$r( |\$)" || return 1
	done
}
if [ -n "$group" ]; then
	check "a refused group of clears ($(field "$group" regions)) is sent again one region per request" \
		singles_after
	dump_traces_if_failed "$LUID"
else
	ktap_test_skip "a refused group of clears: no clears came grouped in 8 writes"
fi

# A resync region beyond the log's 32 is refused; the resync goes on once
# the mirror's thread runs again (a write wakes it, as after any failed
# GET_RESYNC_WORK, in the C module too).
SYNC=sync scenario GET_RESYNC_WORK:value2=5000:1
sleep 1
# Asked right after the resume, maybe before the scenario's mark_log.
refused_5000() { dmesg | grep -q "rf-$n\] bad reply to GET_RESYNC_WORK: (Some(1), Some(5000))"; }
check "a resync region of 5000 (of 32) is refused, logged" refused_5000
dd if=/dev/zero of=/dev/mapper/dmlu-rf bs=4k count=1 seek=$((31 * 128)) oflag=direct status=none
never_5000() { wait_sync dmlu-rf 120 && ! grep -q " luid=$LUID type=SET_REGION_SYNC .*regions=5000" "$TRACE"; }
check "... and the mirror resyncs to 32/32 without it" never_5000

# IN_SYNC failing: the region counts as out of sync (as in the C module),
# so dm-raid1 writes the default leg only, for a resync to copy.
FEATURES=0 scenario IN_SYNC:error=5:1
dd if=/dev/urandom of=/dev/mapper/dmlu-rf bs=4k count=1 seek=1280 oflag=direct status=none
block_of() { dd if="$1" bs=4k skip=1280 count=1 iflag=direct status=none | od -An -tx1 | md5sum; }
check "a failed IN_SYNC counts as not in sync: the write went to the default leg only" \
	test "$(block_of "${LEGS[0]}")" != "$(block_of "${LEGS[1]}")"

# Without handle_errors the mirror writes on when its log fails.
FEATURES=0 scenario FLUSH:error=5:1
events() { dmsetup info dmlu-rf | awk '/Event number/ {print $3}'; }
ev0=$(events)
dd if=/dev/zero of=/dev/mapper/dmlu-rf bs=4k count=1 seek=128 oflag=direct status=none
check "a failed FLUSH raises a table event" test "$(events)" -gt "$ev0"
check "... and is logged" log_has "flush failed"
dd if=/dev/zero of=/dev/mapper/dmlu-rf bs=4k count=1 seek=256 oflag=direct status=none
remarked() {
	[ "$(trace_of "$LUID" | grep " type=MARK_REGION " | grep -cE "regions=([0-9]+,)*1(,| |$)")" -ge 2 ]
}
check "... and its marks go out again with the next flush, not lost" remarked

# The write's FLUSH is answered; the lazy FLUSH of its clear, 3 s later, fails.
FEATURES=0 scenario FLUSH:error=5:1:1
ev0=$(events)
dd if=/dev/zero of=/dev/mapper/dmlu-rf bs=4k count=1 seek=128 oflag=direct status=none
wait_trace "$LUID" CLEAR_REGION 10 >/dev/null
sleep 4.5
lazy_failed() { [ "$(events)" -gt "$ev0" ] && log_has "lazy flush failed"; }
check "a failed lazy FLUSH raises a table event too, logged" lazy_failed

# With integrated_flush the marks ride in the FLUSH: a refused one fails the
# flush, with no one-region-at-a-time fallback (as in the C module); the
# marks stay for the next flush.
KEYWORD=integrated_flush FEATURES=0 scenario FLUSH:error=22:1
flushes_with() { trace_of "$LUID" | grep " type=FLUSH " | grep -cE "regions=([0-9]+,)*$1(,| |\$)"; }
dd if=/dev/zero of=/dev/mapper/dmlu-rf bs=4k count=1 seek=768 oflag=direct status=none # region 6
sleep 1
# No fallback: the request after the refused FLUSH is not a FLUSH again.
not_resent() {
	trace_of "$LUID" | awk 'refused && !next_seen { bad = $4 == "type=FLUSH"; next_seen = 1 }
		/ type=FLUSH .* fault=/ { refused = 1 }
		END { exit !next_seen || bad }' && log_has "flush failed"
}
check "integrated_flush: a refused FLUSH fails the flush, not resent one region at a time, logged" not_resent
dd if=/dev/zero of=/dev/mapper/dmlu-rf bs=4k count=1 seek=1280 oflag=direct status=none
sleep 1
check "... and its mark rides again with the next flush" test "$(flushes_with 6)" -ge 2
dump_traces_if_failed "$LUID"

scenario STATUS_INFO:error=5:1
check "server error: status says userspace 1 COM_FAILURE" status_is "userspace 1 COM_FAILURE"

scenario STATUS_INFO:wrong-luid:1
check "a reply naming another log is ignored; the resent request is answered" \
	status_is "1 ulog-test-server"
ignored_then_resent() { log_has "names another log" && log_has "request timed out: \[STATUS_INFO/"; }
check "... logged, with the timeout and resend" ignored_then_resent

scenario GET_SYNC_COUNT:late=17000:1:1
check "a reply after the 15 s resend is dropped; the resent request answered" in_sync_count 32
check "... logged as a timeout" log_has "request timed out: \[GET_SYNC_COUNT/"

# Only an unprivileged server listens: its replies are ignored, the load
# waits; a privileged server then answers the resent CTR.
dmsetup remove dmlu-rf 2>/dev/null
stop_test_server
mark_log
start_test_server --user 65534
( dmsetup create dmlu-rf --table "$(mirror_table $S "dmlu-rf-unpriv clustered-core 1024 nosync")" \
	&& touch "$WORK/created" ) &
creator=$!
sleep 3
unpriv_ignored() { log_has "without CAP_SYS_ADMIN" && [ ! -e "$WORK/created" ]; }
check "replies from a process without CAP_SYS_ADMIN are ignored" unpriv_ignored
unpriv=$TS_PID
TS_PID=""
start_test_server
wait_for_file "$WORK/created" 30
check "... the load completes once a privileged server answers" test -e "$WORK/created"
wait "$creator"
kill "$unpriv" 2>/dev/null
wait "$unpriv" 2>/dev/null
rm -f "$WORK/created"

ktap_finished

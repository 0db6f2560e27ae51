#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Bad replies from the server get a log line and are dropped; only a
# well-formed answer to the very request completes it, so a stray, garbled
# or hostile message can never fail a request (a failed IN_SYNC would send
# a write to one leg only). EAGAIN (as an ack or in the error field)
# resends. An ack without the data, too much or too little data, a
# data_size or cn_msg.len that disagrees with the data, an odd errno or
# error field, an answer the request cannot have, a reply naming another
# log, uuid or type, a duplicate: dropped, and the good answer that follows
# is taken; a garbled answer alone is resent after the 15 s timeout. Replies
# as cmirrord sends them (luid 0, a flag above the type) are taken. A
# reply later than the resend is dropped and the resent request answered;
# replies from a process without CAP_SYS_ADMIN are ignored. A server error
# for IN_SYNC is asked again until answered, so the write reaches both
# legs. A refused group of marks or clears is sent again one region per
# request; a failed FLUSH raises a table event and keeps its marks, a failed
# lazy FLUSH raises one too; with integrated_flush a refused FLUSH fails the
# flush and keeps its marks.
#
# `dmsetup status` asks GET_SYNC_COUNT (a failure shows the last count the
# server gave) and STATUS_INFO (a failure shows "userspace 1 COM_FAILURE";
# bytes that are no text show as ?).

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_trace.sh"
require_env dmsetup losetup ulog-test-server

ktap_print_header
ktap_set_plan 39
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
	timeout 60 dmsetup create dmlu-rf --table \
		"$(mirror_table $S "dmlu-rf-$n ${KEYWORD:+$KEYWORD }clustered-core 1024 ${SYNC:-nosync}" \
			"${FEATURES:-1 handle_errors}")"
	LUID=$(luids_of_ctr "$S clustered-core 1024" | tail -n1)
	mark_log
}
in_sync_count() { [ "$(sync_of dmlu-rf)" = "$1/32" ]; }
status_is() { dmsetup status dmlu-rf | grep -q -- " $1\$"; }
# timed_out TYPE: a request of TYPE of this scenario's mirror timed out
# (since its creation: a request asked right after the load may time out
# before the scenario's mark_log).
timed_out() { dmesg | grep -Eq "rf-$n\] request timed out: \[$1/"; }

scenario STATUS_INFO:eagain:2
check "EAGAIN acks: the request is resent until answered" status_is "1 ulog-test-server"
check "... three STATUS_INFO requests seen" test "$(count_type "$LUID" STATUS_INFO)" = 3

scenario STATUS_INFO:eagain-reply:1
check "-EAGAIN in the error field resends too" status_is "1 ulog-test-server"

# Each garbled answer is followed at once by the good one: the good one must
# be what the request gets, without a timeout (so the first was dropped,
# not taken).
garbled() {
	local fault=$1 logged=$2
	scenario "GET_SYNC_COUNT:$fault+good:1:1"
	dropped_then_good() {
		in_sync_count 32 && log_has "$logged" && ! timed_out GET_SYNC_COUNT &&
			! log_has "GET_SYNC_COUNT failed"
	}
	check "$3: dropped and logged; the good answer after it taken" dropped_then_good
}
GSC="dropped a reply to GET_SYNC_COUNT request [0-9]+"
garbled ack-only "$GSC: 0 bytes of data, expected 8" "an ack without the data"
garbled too-much "$GSC: 72 bytes of data, expected 8" "72 bytes for an 8-byte answer"
garbled short "$GSC: 4 bytes of data, expected 8" "4 bytes for an 8-byte answer"
garbled bad-data-size "dropped a malformed message for request [0-9]+: data_size 108 but 8 bytes" \
	"data_size beyond the message"
garbled short-cn-len "dropped a malformed message for request [0-9]+: data_size 8 but 0 bytes" \
	"the right data cut off by cn_msg.len"
garbled ack-error=70000 "$GSC: ack with errno 70000" "an ack with errno 70000"
garbled value=33 "$GSC: impossible answer \(33, 0\)" "a sync count of 33, one above the 32 regions"
garbled wrong-luid "$GSC: it names another log" "a reply naming another luid"
garbled wrong-uuid "$GSC: it names another log" "a reply naming another uuid"
garbled wrong-type "$GSC: it names request type 8" "a reply naming another request type"
garbled truncated "dropped a malformed message for request [0-9]+: incomplete message \(expected 160 bytes, got 100\)" \
	"a message shorter than a header"

scenario GET_SYNC_COUNT:duplicate:1:1
dup_ignored() { in_sync_count 32 && in_sync_count 32; }
check "a duplicate of the good answer completes the request once; the next one is answered" dup_ignored

# Alone, a garbled answer leaves the request waiting: it is sent again
# after the 15 s resend timeout, and the resent one answered.
scenario GET_SYNC_COUNT:short-cn-len:1:1
check "a garbled answer alone: the request is resent after the timeout and answered" in_sync_count 32
check "... logged as a timeout" timed_out GET_SYNC_COUNT

# cmirrord answers every request it sends through the cluster with luid 0,
# and sets a flag above the type inside the cluster.
cmirrord_style() {
	dmsetup status dmlu-rf | grep -q " 32/32 1 AA 1 ulog-test-server\$" &&
		dd if=/dev/zero of=/dev/mapper/dmlu-rf bs=4k count=1 seek=512 oflag=direct status=none &&
		! timed_out "[A-Z_]+"
}
scenario any:luid-zero
check "replies with luid 0, as cmirrord sends them, answer every request" cmirrord_style
scenario any:type-flag
check "replies with a flag above the 8 type bits answer every request" cmirrord_style

# An IN_SYNC answer of 2, then the good one: the write goes to both legs.
block_of() { dd if="$1" bs=4k skip="$2" count=1 iflag=direct status=none | od -An -tx1 | md5sum; }
both_legs() {
	dd if=/dev/urandom of=/dev/mapper/dmlu-rf bs=4k count=1 seek="$1" oflag=direct status=none &&
		[ "$(block_of "${LEGS[0]}" "$1")" = "$(block_of "${LEGS[1]}" "$1")" ]
}
FEATURES=0 scenario IN_SYNC:value=2+good:1
in_sync_2() {
	both_legs 1536 && log_has "dropped a reply to IN_SYNC request [0-9]+: impossible answer \(2, 0\)" &&
		! log_has "IN_SYNC of region .* failed"
}
check "an IN_SYNC answer of 2 is dropped, logged; the write reaches both legs" in_sync_2

# A server error for IN_SYNC: asked again until answered (the C module
# takes it as "not in sync", and dm-raid1 writes the default leg only).
FEATURES=0 scenario IN_SYNC:error=5:2
in_sync_refused() { both_legs 1280 && log_has "IN_SYNC of region 10 failed: .*asking again"; }
check "a refused IN_SYNC is asked again: the write reaches both legs, logged" in_sync_refused
check "... after two refusals, three IN_SYNC for that region" \
	test "$(trace_of "$LUID" | grep -cE " type=IN_SYNC .*regions=10( |\$)")" -ge 3

# A status line with a newline, a NUL and 0xff in it stays one line of text.
scenario STATUS_INFO:garbage:1
printable() {
	local st
	st=$(dmsetup status dmlu-rf)
	[ "$(wc -l <<<"$st")" = 1 ] && grep -q " 1 ulog-test-server???? tail\$" <<<"$st"
}
check "a status line's bytes that are no text show as ?" printable

# A refused GET_SYNC_COUNT: the status keeps the last count the server gave.
scenario GET_SYNC_COUNT:error=5:1:1
last_count() { in_sync_count 32 && log_has "GET_SYNC_COUNT failed: .*the last count, 32, stands"; }
check "a refused GET_SYNC_COUNT shows the last count (32/32), not 0, logged" last_count

# A slow first FLUSH lets a 4-region write queue up behind it. Only a group
# is refused (@2): a write that came too late to queue whole (a slow guest)
# cannot fail a one-region flush, which with handle_errors holds the
# mirror's writes for good.
scenario FLUSH:late=4000:1 MARK_REGION@2:error=22:1
dd if=/dev/zero of=/dev/mapper/dmlu-rf bs=4k count=1 seek=2048 oflag=direct status=none &
first=$!
wait_trace "$LUID" FLUSH 30 >/dev/null # at the server, held 4 s
dd if=/dev/zero of=/dev/mapper/dmlu-rf bs=2M count=1 oflag=direct status=none
wait "$first"
# sent_alone_after TYPE: each region of the first group of TYPE the server
# refused was sent again alone after it.
sent_alone_after() {
	local line at r
	line=$(grep -n " luid=$LUID type=$1 .* fault=" "$TRACE" | head -n1)
	at=${line%%:*}
	for r in $(field "${line#*:}" regions | tr , ' '); do
		tail -n +"$((at + 1))" "$TRACE" | grep " luid=$LUID type=$1 " |
			grep -Eq "regions=$r( |\$)" || return 1
	done
}
mark_group=$(trace_of "$LUID" | grep " type=MARK_REGION .* fault=" | head -n1)
if [ -n "$mark_group" ]; then
	check "a refused group of marks ($(field "$mark_group" regions)) is sent again one region per request" \
		sent_alone_after MARK_REGION
	dump_traces_if_failed "$LUID"
else
	ktap_test_skip "a refused group of marks: the write's marks came in no group"
fi

# Clears come grouped when several regions turn clean before the mirror's
# thread runs, which depends on timing: up to 8 writes of 4 regions each.
scenario 'CLEAR_REGION@2:error=22:1'
group=""
for try in 1 2 3 4 5 6 7 8; do
	dd if=/dev/zero of=/dev/mapper/dmlu-rf bs=2M count=1 seek=$((try % 4 + 2)) oflag=direct status=none
	refused_clears() {
		group=$(trace_of "$LUID" | grep " type=CLEAR_REGION .* fault=" | head -n1)
		[ -n "$group" ]
	}
	eventually 3 refused_clears && break
done
if [ -n "$group" ]; then
	check "a refused group of clears ($(field "$group" regions)) is sent again one region per request" \
		sent_alone_after CLEAR_REGION
	dump_traces_if_failed "$LUID"
else
	ktap_test_skip "a refused group of clears: no clears came grouped in 8 writes"
fi

# A resync region beyond the log's 32 is dropped; the good answer after it
# keeps the resync going.
SYNC=sync scenario GET_RESYNC_WORK:value2=5000+good:1
never_5000() { wait_sync dmlu-rf 120 && ! grep -q " luid=$LUID type=SET_REGION_SYNC .*regions=5000" "$TRACE"; }
check "a resync region of 5000 (of 32) is dropped: the mirror resyncs to 32/32 without it" never_5000
# Asked right after the resume, maybe before the scenario's mark_log.
dropped_5000() { dmesg | grep -Eq "dropped a reply to GET_RESYNC_WORK request [0-9]+: impossible answer \(1, 5000\)"; }
check "... logged" dropped_5000

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
lazy_failed() { [ "$(events)" -gt "$ev0" ] && log_has "lazy flush failed"; }
check "a failed lazy FLUSH raises a table event too, logged" eventually 15 lazy_failed

# With integrated_flush the marks ride in the FLUSH: a refused one fails the
# flush, with no one-region-at-a-time fallback (as in the C module); the
# marks stay for the next flush.
KEYWORD=integrated_flush FEATURES=0 scenario FLUSH:error=22:1
flushes_with() { trace_of "$LUID" | grep " type=FLUSH " | grep -cE "regions=([0-9]+,)*$1(,| |\$)"; }
dd if=/dev/zero of=/dev/mapper/dmlu-rf bs=4k count=1 seek=768 oflag=direct status=none # region 6
# No fallback: the request after the refused FLUSH is not a FLUSH again.
not_resent() {
	trace_of "$LUID" | awk 'refused && !next_seen { bad = $4 == "type=FLUSH"; next_seen = 1 }
		/ type=FLUSH .* fault=/ { refused = 1 }
		END { exit !next_seen || bad }' && log_has "flush failed"
}
check "integrated_flush: a refused FLUSH fails the flush, not resent one region at a time, logged" \
	eventually 15 not_resent
dd if=/dev/zero of=/dev/mapper/dmlu-rf bs=4k count=1 seek=1280 oflag=direct status=none
rides_again() { [ "$(flushes_with 6)" -ge 2 ]; }
check "... and its mark rides again with the next flush" eventually 15 rides_again
dump_traces_if_failed "$LUID"

scenario STATUS_INFO:error=5:1
check "server error: status says userspace 1 COM_FAILURE" status_is "userspace 1 COM_FAILURE"

scenario GET_SYNC_COUNT:late=22000:1:1
check "a reply after the 15 s resend is dropped; the resent request answered" in_sync_count 32
check "... logged as a timeout" timed_out GET_SYNC_COUNT

# Only an unprivileged server listens: its replies are ignored, the load
# waits; a privileged server then answers the resent CTR.
dmsetup remove dmlu-rf 2>/dev/null
stop_test_server
mark_log
start_test_server --user 65534
( dmsetup create dmlu-rf --table "$(mirror_table $S "dmlu-rf-unpriv clustered-core 1024 nosync")" \
	&& touch "$WORK/created" ) &
creator=$!
eventually 30 log_has "without CAP_SYS_ADMIN"
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

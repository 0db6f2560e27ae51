#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# A server that stops answering for longer than the module's 15 s resend
# timeout, then comes back. dm-ulogd serves two mirrors under fio writes:
# t1 is resyncing (sync, 16 MiB in 8 KiB regions), t2 is in sync. dm-ulogd
# is stopped with SIGSTOP for 20 s (long form, DMLU_STRESS=1: three times,
# 20, 35 and 50 s), then continued. The module must have timed out and resent; the
# server then sees the old and the new copy of each request. I/O resumes,
# nothing is lost: no writer error, no request failure, both mirrors resync
# to 100% and their legs are byte-identical.
#
# A GET_RESYNC_WORK the kernel sends again (after a timeout, or an EAGAIN
# ack: here ulog-fuzz sends EAGAIN acks to a few, which the module must
# treat as "resend") must not leave a region out of sync forever: the server
# answered the first copy too, and dm-raid1 recovers one region at a time,
# so the server must hand out the same region again (as cmirrord does,
# "Re-requesting work"), not the next one.
#
# Then, with ulog-test-server: a flush whose MARK_REGION and FLUSH (sent
# together) both go unanswered must cost one resend timeout, 15 s, as in the
# C module (which resends the MARK_REGION, then sends the FLUSH to the server
# that answers again), not one full timeout per request that was in flight.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_stress.sh"
require_env dmsetup losetup dm-ulogd fio

STOPS=$(by_form "20" "20 35 50")
nstops=$(wc -w <<<"$STOPS")

ktap_print_header
ktap_set_plan $((nstops * 2 + 10))
trap stress_cleanup EXIT

unload_module
load_module
mark_log
su_start -v
ok=1
mirror_create t1 16 16 sync || ok=0
mirror_create t2 16 64 nosync || ok=0
check "t1 (resyncing, 16 MiB in 8 KiB regions) and t2 (in sync) served by dm-ulogd" test $ok = 1
writer_start t1
writer_start t2
writers_progress 30 t1 t2 >/dev/null

for s in $STOPS; do
	sleep 1
	before=$(mirror_sync t1)
	timeouts=$(kernel_says 'request timed out')
	kill -STOP "$SU_PID"
	sleep "$s"
	check "during ${s}s of SIGSTOP the module timed out and resent (t1 at $before)" \
		test "$(kernel_says 'request timed out')" -gt "$timeouts"
	kill -CONT "$SU_PID"
	check "after SIGCONT every mirror writes again within 30 s" \
		writers_progress 30 t1 t2
	lap "stop of ${s}s and recovery"
done
writers_stop
note "writes: t1 $(writer_count t1), t2 $(writer_count t2)"
check "no writer saw an I/O error" test "$(writer_errors)" = 0
writer_error_lines | sed 's/^/# /'
failures=$(kernel_says "$REQUEST_FAILURES")
check "no request failed ($failures failure lines in the kernel log)" test "$failures" = 0
both_sync() { mirror_wait_sync t1 "$1" 40 && mirror_wait_sync t2 "$1" 40; }
if ! checkr "both mirrors resync to 100%" both_sync "$(by_form 240 600)"; then
	# Which GET_RESYNC_WORK timed out, what the server answered to it and
	# to its resend, and whether that region was ever reported synced.
	for seq in $(log_since_mark | grep -o 'GET_RESYNC_WORK/[0-9]*' | cut -d/ -f2); do
		note "GET_RESYNC_WORK seq $seq timed out in the kernel and was resent"
		grep -A3000 "seq $seq GET_RESYNC_WORK" "$SU_LOG" | grep 'GET_RESYNC_WORK' | head -n 2 | sed 's/^/#   server: /'
		r=$(grep "seq $seq GET_RESYNC_WORK" "$SU_LOG" | sed -n 's/.*-> 0 \[1 \([0-9]*\)\].*/\1/p')
		[ -n "$r" ] && note "SET_REGION_SYNC of region $r received afterwards: $(grep -c "SET_REGION_SYNC .*\[$r 1\]" "$SU_LOG")"
	done
	note "dm-ulogd: $(su_stats | grep -o '"uuid":"dmlus-t1"[^}]*"in_sync":[0-9]*')"
fi
both_identical() { mirror_legs_identical t1 && mirror_legs_identical t2; }
check "legs byte-identical" both_identical
check "dm-ulogd still serving" su_alive
mirror_remove t1
mirror_remove t2
note "module DTR lines: $(dtr_sum timeouts) timeouts"

lap "t1 and t2 checked"

# Resent GET_RESYNC_WORK.
check "t5 (resyncing, 8 MiB in 8 KiB regions) served by dm-ulogd" mirror_create t5 8 16 sync
ulog-fuzz --eagain GET_RESYNC_WORK --messages 10 --max-seconds 30 >"$WORK/fuzz-eagain.out" 2>&1
acks=$(sed -n 's/^sent=//p' "$WORK/fuzz-eagain.out")
if ! checkr "after $acks EAGAIN acks to GET_RESYNC_WORK (the module resends), t5 still resyncs to 100%" \
	mirror_wait_sync t5 180 30; then
	awk '/dmlus-t5/ && /GET_RESYNC_WORK/ && match($0, /-> 0 \[1 [0-9]+\]/) {
		r = substr($0, RSTART + 8, RLENGTH - 9)
		if (pending != "" && n++ < 3) print "dm-ulogd handed out region " pending ", then " r " before " pending " was synced: " prev " / " $0
		pending = r; prev = $0
	}
	/dmlus-t5/ && /SET_REGION_SYNC/ { pending = "" }' "$SU_LOG" | sed 's/^/# /'
fi
mirror_remove t5
su_stop

lap "t5 checked"

# One timeout for a window of lost requests.
start_test_server --fault MARK_REGION:drop:1 --fault FLUSH:drop:1
check "mirror t3 served by ulog-test-server, dropping the first MARK_REGION and FLUSH" \
	mirror_create t3 4 64 nosync
t=$(date +%s)
dd if=/dev/urandom of=/dev/mapper/dmlus-t3 bs=4k count=1 oflag=direct status=none
took=$(($(date +%s) - t))
log_since_mark | grep 'dmlus-t3.*timed out' | sed 's/^/# /'
check "the write whose MARK_REGION and FLUSH were both lost took one resend timeout (${took}s; at most 24 s)" \
	test "$took" -le 24
mirror_remove t3
stop_test_server
unload_module

ktap_finished

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Memory pressure. Kernel fault injection (failslab and fail_page_alloc,
# sleeping allocations included) fails allocations of the per-CPU kworkers,
# where kmirrord, kcopyd and the module's lazy flush run, so the module's
# paths meet failures: connector messages that cannot be allocated (the
# module tries again for up to 1 s; past that the request fails, and a flush
# puts its marks back), clear nodes that cannot be allocated (clears
# dropped). Meanwhile fio writes every region of two
# in-sync mirrors exactly once, and a third mirror resyncs under writes. The
# servers are ulog-test-server, whose trace is the oracle for marks.
#
# Checks: faults were injected (counted from the debugfs "times" budget),
# their reports ("FAULT_INJECTION: forcing a failure" and a stack dump) are
# not splats for scripts/splat-patterns while real splat lines are; no
# writer error (the mirrors have no handle_errors: a log failure does not
# fail writes); no mark lost: every region whose IN_SYNC request reached
# the server (dm_rh_get_state asks, __rh_alloc gets the same answer), which
# made dm-raid1 treat it as clean, was marked to the server; after the injection
# stops, every mirror is in sync with identical legs.
#
# Then a burst that fails every non-sleeping allocation of the kworkers
# (failslab at 100% with ignore-gfp-wait) while hundreds of writes held by
# dm-delay legs complete and the server is stopped for 3 s (kmirrord waits
# for it, the regions of the completed writes pile up to be cleared): the
# clear nodes (GFP_ATOMIC, 32 in reserve per log) run out, clears are
# dropped and counted on the DTR line, and nothing else suffers (connector
# messages are GFP_NOIO: they still go out): no writer error, legs
# identical.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_stress.sh"
require_env dmsetup losetup ulog-test-server fio

FS=/sys/kernel/debug/failslab
FP=/sys/kernel/debug/fail_page_alloc
BUDGET=1000000
PCT=$(by_form 5 5)
ROUNDS=$(by_form 1 4)
# m1 and m2, written once each (8 KiB regions: 128 per MiB).
M1MB=$(by_form 8 16)
M2MB=$(by_form 6 12)
R1=$((M1MB * 128)) R2=$((M2MB * 128))
PATTERNS=/usr/libexec/dmlu/splat-patterns

ktap_print_header
[ -d "$FS" ] && [ -d "$FP" ] || { ktap_skip_all "no failslab/fail_page_alloc in debugfs"; exit "$KSFT_SKIP"; }
ktap_set_plan $((ROUNDS * 9 + 3))
trap 'fi_off; stress_cleanup' EXIT

# fi_on DIR PERCENT [IGNORE_GFP_WAIT [VERBOSE]]: fail PERCENT% of the
# allocations of marked tasks (sleeping ones too unless IGNORE_GFP_WAIT is
# Y), reporting each (rate-limited) with a stack dump unless VERBOSE is 1.
fi_on() {
	echo 0 >"$1/probability"
	echo Y >"$1/task-filter"
	echo "${3:-N}" >"$1/ignore-gfp-wait"
	[ -e "$1/ignore-gfp-highmem" ] && echo N >"$1/ignore-gfp-highmem"
	[ -e "$1/min-order" ] && echo 0 >"$1/min-order"
	echo 1 >"$1/interval"
	echo 0 >"$1/space"
	echo "${4:-2}" >"$1/verbose"
	echo "$BUDGET" >"$1/times"
	echo "$2" >"$1/probability"
}
fi_off() {
	local d p
	for d in "$FS" "$FP"; do [ -w "$d/probability" ] && echo 0 >"$d/probability"; done
	[ -e "$WORK/fi.stop" ] || touch "$WORK/fi.stop"
	for p in /proc/[0-9]*; do { echo 0 >"$p/make-it-fail"; } 2>/dev/null; done
	return 0
}
fi_count() { echo $((BUDGET - $(cat "$1/times"))); }

# Mark the per-CPU kworkers (kworker/N:M, not the unbound kworker/uN:M of
# the loop devices, not the high-priority kworker/N:MH of kblockd), again
# and again: new ones start while the test runs.
mark_kworkers() {
	local p c
	rm -f "$WORK/fi.stop"
	while [ ! -e "$WORK/fi.stop" ]; do
		for p in /proc/[0-9]*; do
			{ read -r c <"$p/comm"; } 2>/dev/null || continue
			[[ $c =~ ^kworker/[0-9]+:[0-9]+([-+].*)?$ ]] && { echo 1 >"$p/make-it-fail"; } 2>/dev/null
		done
		sleep 0.5
	done
}

# mark_audit LUID: "<owed> <marked> <lost>" for log LUID from the trace:
# regions whose IN_SYNC reached the server (answered "in sync": dm-raid1
# took them as clean and had to mark them; a request that failed in the
# kernel never gets there), regions marked (MARK_REGION or FLUSH), and owed
# regions never marked.
mark_audit() {
	awk -v l="luid=$1" '$3 == l {
		for (i = 5; i <= NF; i++) if ($i ~ /^regions=/) {
			n = split(substr($i, 9), r, ",")
			for (j = 1; j <= n; j++) if (r[j] != "") {
				if ($4 == "type=IN_SYNC") asked[r[j]]++
				else if ($4 == "type=MARK_REGION" || $4 == "type=FLUSH") marked[r[j]] = 1
			}
		}
	} END {
		o = 0; m = 0; lost = 0
		for (k in marked) m++
		for (k in asked) { o++; if (!(k in marked)) lost++ }
		print o, m, lost
	}' "$TRACE"
}

unload_module
load_module
rm -f "$TRACE"
start_test_server
total_slab=0 total_page=0 total_writes=0 total_sendfail=0 total_flushfail=0 total_dropped=0
for round in $(seq "$ROUNDS"); do
	mark_log
	# m1 and m2: in sync, 8 KiB regions, each written exactly once (their
	# sizes differ so that their CTR strings tell their luids apart); m3
	# resyncs under random writes. No handle_errors: a failed flush (the
	# log could not record marks) must not fail writes; it puts its marks
	# back for the next flush.
	ok=1
	mirror_create m1 "$M1MB" 16 nosync "0" || ok=0
	mirror_create m2 "$M2MB" 16 nosync "0" || ok=0
	mirror_create m3 16 64 sync "0" || ok=0
	l1=$(luid_of_ctr "ctr=\"$((M1MB * 2048)) clustered-core 16 nosync\"")
	l2=$(luid_of_ctr "ctr=\"$((M2MB * 2048)) clustered-core 16 nosync\"")
	[ -n "$l1" ] && [ -n "$l2" ] || ok=0
	[ $ok = 1 ] || { ktap_test_fail "round $round: mirrors created"; continue; }

	fi_on "$FS" "$PCT"
	fi_on "$FP" "$PCT"
	mark_kworkers &
	marker=$!
	writer_start m3
	once=(--rw=randwrite --bs=8k --direct=1 --ioengine=libaio --iodepth=16)
	fio --name=m1 --filename=/dev/mapper/dmlus-m1 "${once[@]}" --output="$WORK/once.m1.out" &
	f1=$!
	fio --name=m2 --filename=/dev/mapper/dmlus-m2 "${once[@]}" --output="$WORK/once.m2.out" &
	f2=$!
	wait $f1; r1=$?
	wait $f2; r2=$?
	fi_off
	lap "round $round: phase A writes done"
	wait $marker
	writers_stop
	slab=$(fi_count "$FS") page=$(fi_count "$FP")
	total_slab=$((total_slab + slab)) total_page=$((total_page + page))
	sendfail=$(kernel_says 'unable to send log request')
	flushfail=$(kernel_says 'flush failed')
	total_sendfail=$((total_sendfail + sendfail)) total_flushfail=$((total_flushfail + flushfail))
	note "round $round: $slab failslab and $page fail_page_alloc injections," \
		"$(kernel_says 'FAULT_INJECTION: forcing a failure') reported;" \
		"$sendfail requests and $flushfail flushes failed:" \
		$(log_since_mark | grep -o 'unable to send log request [A-Z_]*' | sort | uniq -c | awk '{print $NF "x" $1}')
	check "round $round: faults injected into the module's kworkers" test "$slab" -gt 0 -a "$page" -gt 0
	errs=$(cat "$WORK"/once.m*.out | grep -Ec 'err= *[1-9]|io_u error')
	check "round $round: every write succeeded (fio: $r1 $r2, writer: $(writer_errors) errors)" \
		test "$r1" = 0 -a "$r2" = 0 -a "$errs" = 0 -a "$(writer_errors)" = 0
	writer_error_lines | sed 's/^/# /'
	total_writes=$((total_writes + R1 + R2 + $(writer_count m3)))
	read -r o1 k1 x1 <<<"$(mark_audit "$l1")"
	read -r o2 k2 x2 <<<"$(mark_audit "$l2")"
	check "round $round: no mark lost (m1: $k1 of $R1 regions marked, $o1 owed, $x1 lost; m2: $k2 of $R2, $o2 owed, $x2 lost)" \
		test "$x1" = 0 -a "$x2" = 0 -a "$o1" -gt $((R1 / 2)) -a "$o2" -gt $((R2 / 2))
	all_sync() { mirror_wait_sync m1 "$1" 30 && mirror_wait_sync m2 "$1" 30 && mirror_wait_sync m3 "$1" 30; }
	check "round $round: after the injection every mirror is in sync" all_sync "$(by_form 240 400)"
	all_identical() { mirror_legs_identical m1 && mirror_legs_identical m2 && mirror_legs_identical m3; }
	check "round $round: legs byte-identical" all_identical
	mirror_remove m1
	mirror_remove m2
	mirror_remove m3
	note "round $round: $(dtr_sum 'sends retried') sends retried for want of memory (DTR lines)"
	lap "round $round: phase A checked"

	# Phase B: clears dropped. m4's legs delay writes by 1.5 s; in the
	# burst the server is stopped for 3 s (kmirrord waits for its answer),
	# so that hundreds of marked writes complete meanwhile; when it answers
	# again, kmirrord clears all those regions in one pass.
	mark_log
	ok=1
	d0=$(new_loop "$WORK/m4.leg0" 4) && d1=$(new_loop "$WORK/m4.leg1" 4) || ok=0
	MLEGS[m4]="$d0 $d1"
	dmsetup create dmlus-zdelay0 --table "0 8192 delay $d0 0 0 $d0 0 1500" || ok=0
	dmsetup create dmlus-zdelay1 --table "0 8192 delay $d1 0 0 $d1 0 1500" || ok=0
	dmsetup create dmlus-m4 --table "0 8192 mirror userspace 4 dmlus-m4 clustered-core 8 nosync 2 /dev/mapper/dmlus-zdelay0 0 /dev/mapper/dmlus-zdelay1 0 0" || ok=0
	[ $ok = 1 ] || ktap_test_fail "round $round: m4 over dm-delay legs created"
	fio --name=m4 --filename=/dev/mapper/dmlus-m4 --rw=randwrite --bs=4k --direct=1 \
		--ioengine=libaio --iodepth=256 --output="$WORK/once.m4.out" &
	f4=$!
	sleep 2
	fi_on "$FS" 100 Y 1
	mark_kworkers &
	marker=$!
	kill -STOP "$TS_PID"
	sleep 3
	kill -CONT "$TS_PID"
	sleep 2
	fi_off
	wait $marker
	wait $f4; r4=$?
	burst=$(fi_count "$FS")
	note "round $round: burst of $burst failslab injections (non-sleeping allocations of the kworkers)"
	check "round $round: the burst failed allocations" test "$burst" -gt 0
	errs=$(grep -Ec 'err= *[1-9]|io_u error' "$WORK/once.m4.out")
	check "round $round: m4's 1024 writes succeeded during the burst (fio: $r4)" test "$r4" = 0 -a "$errs" = 0
	m4_ok() { mirror_wait_sync m4 60 && mirror_legs_identical m4; }
	check "round $round: m4 in sync, legs identical" m4_ok
	dmsetup remove dmlus-m4
	dmsetup remove dmlus-zdelay0
	dmsetup remove dmlus-zdelay1
	losetup -d "$d0"
	losetup -d "$d1"
	unset "MLEGS[m4]"
	dropped=$(log_since_mark | grep 'dmlus-m4\] destroyed' | grep -Eo '[0-9]+ clears dropped' | grep -Eo '^[0-9]+')
	total_dropped=$((total_dropped + ${dropped:-0}))
	# Dropping clears is allowed, not required: whether the pile-up outruns
	# the 32 reserved nodes depends on timing.
	if [ "${dropped:-0}" -gt 0 ]; then
		ktap_test_pass "round $round: clears dropped and counted (m4's DTR line: $dropped)"
	else
		ktap_test_skip "round $round: no clear dropped this time (m4's DTR line: ${dropped:-none})"
	fi
	log_since_mark | grep 'dmlus-m4\] destroyed' | sed 's/^/# /'
	lap "round $round: phase B done"
done
note "in all: $total_slab failslab + $total_page fail_page_alloc injections, $total_writes writes," \
	"$total_sendfail requests and $total_flushfail flushes failed, $total_dropped clears dropped"

# The reports of fault injection are not splats; real splats are.
if [ -r "$PATTERNS" ]; then
	fi_lines=$(dmesg | grep -c 'FAULT_INJECTION: forcing a failure')
	check "$fi_lines fault injection reports (with stack dumps) match no splat pattern" \
		bash -c '! dmesg | grep -A40 "FAULT_INJECTION: forcing a failure" | grep -qF -f "$1"' _ "$PATTERNS"
	real_splats() {
		local line
		while read -r line; do
			grep -qF -f "$PATTERNS" <<<"$line" || { note "not caught: $line"; return 1; }
		done <<'EOF'
BUG: KASAN: slab-use-after-free in dmlu_flush+0x12/0x40 [dm_log_userspace]
WARNING: CPU: 1 PID: 42 at drivers/md/dm-raid1.c:100 do_writes+0x1/0x2
BUG: sleeping function called from invalid context at kernel/locking/mutex.c:283
WARNING: possible circular locking dependency detected
Oops: general protection fault, probably for non-canonical address 0xdffffc0000000000
INFO: task kworker/0:1:42 blocked for more than 120 seconds.
unreferenced object 0xffff888004f3c000 (size 64):
rust_kernel: panicked at src/log.rs:10:5:
EOF
	}
	check "real splat lines still match scripts/splat-patterns" real_splats
	check "dm-log-userspace unloads after the injection" unload_module
else
	ktap_test_skip "no $PATTERNS in the guest"
	ktap_test_skip "no $PATTERNS in the guest"
	check "dm-log-userspace unloads after the injection" unload_module
fi
stop_test_server

ktap_finished

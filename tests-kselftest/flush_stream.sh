#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The requests a flush sends, as the server sees them: marks and clears in
# groups of at most 32 regions, all of a flush in flight at once, a FLUSH
# only when marks were sent, a lazy FLUSH 3 s after clears sent alone (not
# cancelled by more clears-only flushes, unlike the C module), and with
# integrated_flush the marks inside FLUSH requests.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_trace.sh"
require_env dmsetup losetup ulog-test-server

ktap_print_header
ktap_set_plan 14
trap cleanup_all EXIT

load_module
rm -f "$TRACE"
# A slow first FLUSH holds the mirror's thread while a 40-region write
# queues up behind it; the slow first group of its marks lets the server see
# whether the rest was sent without waiting; a slow second CLEAR lets the
# other clears pile up; slow resync steps make the resync last ~8 s.
start_test_server --fault FLUSH:late=3000:1 --fault MARK_REGION:late=500:1:1 \
	--fault CLEAR_REGION:late=1000:1:1 --fault SET_REGION_SYNC:late=60
make_legs 6 64
ALL=("${LEGS[@]}")
S=131072

# awk over one log's trace: t (ms), ty (type), n (regions) per line.
# Extra `-v name=value` options may come before the program.
trace_awk() {
	local luid=$1 opts=()
	shift
	while [ "$1" = -v ]; do opts+=(-v "$2"); shift 2; done
	trace_of "$luid" | awk "${opts[@]}" '{
		t = substr($1, 3) + 0; ty = substr($4, 6); n = 0
		for (i = 5; i <= NF; i++) if ($i ~ /^regions=./) n = split(substr($i, 9), _, ",")
	} '"$*"
}

LEGS=("${ALL[@]:0:2}")
dmsetup create dmlu-fa --table "$(mirror_table $S "dmlu-flush-a clustered-core 1024 nosync")"
a=$(luids_of_ctr "$S clustered-core 1024 nosync" | tail -n1)
# The data first: reading 20 MiB of /dev/urandom takes seconds under TCG,
# which would leave the write too little of the slow FLUSH to queue behind.
dd if=/dev/urandom of="$WORK/random-20m" bs=20M count=1 status=none
dd if=/dev/zero of=/dev/mapper/dmlu-fa bs=4k count=1 oflag=direct status=none &
first=$!
# The first write's FLUSH is at the server (held 3 s): the next queues.
wait_trace "$a" FLUSH 30 >/dev/null
dd if="$WORK/random-20m" of=/dev/mapper/dmlu-fa bs=20M count=1 seek=1 oflag=direct status=none
wait "$first"
rm -f "$WORK/random-20m"
# Until the clears' lazy FLUSH came: a FLUSH after clears and no marks
# (every check below looks before it).
lazy_came() {
	trace_awk "$a" 'ty == "MARK_REGION" { m = 1 } ty == "CLEAR_REGION" { c = 1 }
		ty == "FLUSH" { if (c && !m) ok = 1; m = 0; c = 0 } END { exit !ok }'
}
eventually 30 lazy_came

check "40 regions marked in one flush: MARK_REGION of 32 and of 8, then one FLUSH" \
	trace_awk "$a" '{ s = s ty ":" n " " } END { exit index(s, "MARK_REGION:32 MARK_REGION:8 FLUSH:0 ") == 0 }'
check "no mark or clear group holds more than 32 regions" \
	trace_awk "$a" '(ty == "MARK_REGION" || ty == "CLEAR_REGION") && n > 32 { bad = 1 } END { exit bad }'
check "the flush's requests were all in flight at once (sent before the first was answered)" \
	trace_awk "$a" 'ty == "MARK_REGION" && n == 32 && $6 == "pending=1" { ok = 1 } END { exit !ok }'
check "the 40 clears went in groups too" \
	trace_awk "$a" 'ty == "CLEAR_REGION" && n > 1 { ok = 1 } END { exit !ok }'
# The lazy FLUSH is timed from the first clears since the last FLUSH: later
# clears do not push it back. tc is the time of those first clears.
check "a FLUSH is sent only when marks were, or lazily 2.5 s or more after clears" \
	trace_awk "$a" 'ty == "MARK_REGION" { m = 1 } ty == "CLEAR_REGION" && !tc { tc = t }
		ty == "FLUSH" { if (!m && (!tc || t - tc < 2500)) bad = 1; m = 0; tc = 0 } END { exit bad }'
check "clears alone got their lazy FLUSH 2.5 to 10 s later" \
	trace_awk "$a" 'ty == "CLEAR_REGION" { if (!tc) tc = t; next }
		ty == "FLUSH" && tc && t - tc >= 2500 && t - tc <= 10000 { ok = 1 } { tc = 0 } END { exit !ok }'

LEGS=("${ALL[@]:2:2}")
dmsetup create dmlu-fb --table "$(mirror_table $S "dmlu-flush-b integrated_flush clustered-core 1024 sync")"
b=$(luids_of_ctr "$S clustered-core 1024 sync" | tail -n1)
wait_sync dmlu-fb 60
check "integrated_flush: the resync's clears keep getting lazy FLUSHes (never cancelled)" \
	trace_awk "$b" 'ty == "CLEAR_REGION" { if (!first) first = t; last = t }
		ty == "FLUSH" && n == 0 { f[++nf] = t }
		END { for (i = 1; i <= nf; i++) if (f[i] > first && f[i] < last) ok = 1
		      exit !(ok && last - first > 4000) }'
# (dd returns once the write is done, so after its flush.)
dd if=/dev/urandom of=/dev/mapper/dmlu-fb bs=1M count=4 seek=8 oflag=direct status=none
check "integrated_flush: no MARK_REGION is ever sent" \
	test "$(count_type "$b" MARK_REGION)" = 0
check "integrated_flush: the marks travel in FLUSH requests" \
	trace_awk "$b" 'ty == "FLUSH" && n > 0 { ok = 1 } END { exit !ok }'
# A flush with marks commits earlier clears: the pending lazy FLUSH goes.
LEGS=("${ALL[@]:4:2}")
dmsetup create dmlu-fc --table "$(mirror_table $S "dmlu-flush-c clustered-core 1024 nosync")"
c=$(luids_of_ctr "$S clustered-core 1024 nosync" | tail -n1)
dd if=/dev/zero of=/dev/mapper/dmlu-fc bs=4k count=1 oflag=direct status=none
tc=$(wait_trace "$c" CLEAR_REGION 30 0)
# A spacing, not a wait: the second write's own lazy FLUSH then falls after
# the window where the first one's would have come.
sleep 1
dd if=/dev/zero of=/dev/mapper/dmlu-fc bs=4k count=1 seek=1024 oflag=direct status=none
# (A FLUSH right after a MARK_REGION is the second write's own, which may
# come late on a slow guest: only a lazy one counts.)
cancelled() {
	trace_awk "$c" -v tc="$tc" 'ty == "FLUSH" && prev != "MARK_REGION" && t > tc + 2600 && t < tc + 3600 { bad = 1 }
		{ prev = ty } END { exit bad }'
}
next_lazy() { trace_awk "$c" -v tc="$tc" 'ty == "FLUSH" && t > tc + 3600 { ok = 1 } END { exit !ok }'; }
# The next clears' FLUSH comes after the window the first one would have had.
check "... the next clears get theirs" eventually 30 next_lazy
check "a flush with marks cancels the pending lazy FLUSH" cancelled

dd if=/dev/zero of=/dev/mapper/dmlu-fc bs=4k count=1 seek=2048 oflag=direct status=none
tc=$(wait_trace "$c" CLEAR_REGION 30 16)
dmsetup suspend dmlu-fc
# Suspend and removal both start with PRESUSPEND; the lazy FLUSH of the
# clears at tc is due at tc + 3000. When PRESUSPEND comes before that, a
# FLUSH must follow it before POSTSUSPEND (or DTR). On a machine too slow
# to suspend within 2.5 s nothing is pending any more: no verdict.
early_flush_before() {
	trace_awk "$c" -v tc="$tc" -v until="$1" 'ty == "PRESUSPEND" && t >= tc && !tp { tp = t }
		ty == "FLUSH" && tp { f = 1 }
		ty == until && tp { exit !f } END { exit !f }'
}
suspended_in_time() {
	trace_awk "$c" -v tc="$tc" 'ty == "PRESUSPEND" && t >= tc { ok = t < tc + 2500; exit } END { exit !ok }'
}
early_flush_check() {
	if suspended_in_time; then
		check "$1 runs the pending lazy FLUSH before $2" early_flush_before "$2"
	else
		ktap_test_skip "$1 runs the pending lazy FLUSH before $2 (PRESUSPEND came after the FLUSH was due)"
	fi
}
early_flush_check suspend POSTSUSPEND
dmsetup resume dmlu-fc
dd if=/dev/zero of=/dev/mapper/dmlu-fc bs=4k count=1 seek=3072 oflag=direct status=none
tc=$(wait_trace "$c" CLEAR_REGION 30 24)
dmsetup remove dmlu-fc
early_flush_check removal DTR

dmsetup remove dmlu-fa
dmsetup remove dmlu-fb
both_identical() {
	LEGS=("${ALL[@]:0:2}"); legs_identical || return 1
	LEGS=("${ALL[@]:2:2}"); legs_identical
}
check "both mirrors' legs are identical" both_identical
LEGS=("${ALL[@]}")

dump_traces_if_failed "$a" "$b" "$c"
ktap_finished

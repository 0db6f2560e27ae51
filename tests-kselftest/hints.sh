#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# When the log answers without asking: IS_REMOTE_RECOVERING is asked at most
# once per 250 ms per log (the C module shares one limit between all logs),
# not at all below the in-sync hint; once every region is known in sync,
# GET_RESYNC_WORK is not asked either; a resume forgets the hint; an
# IS_REMOTE_RECOVERING answer moves the hint; a failed one means
# "recovering".

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_trace.sh"
require_env dmsetup losetup ulog-test-server

ktap_print_header
ktap_set_plan 10
trap cleanup_all EXIT

load_module
make_legs 6 16
ALL=("${LEGS[@]}")
S=32768
rm -f "$TRACE"
# Regions stay out of sync: writes keep asking IS_REMOTE_RECOVERING.
start_test_server --stall-resync

LEGS=("${ALL[@]:0:2}")
dmsetup create dmlu-ha --table "$(mirror_table $S "dmlu-hint-a clustered-core 1024 sync")"
LEGS=("${ALL[@]:2:2}")
dmsetup create dmlu-hb --table "$(mirror_table $S "dmlu-hint-b clustered-core 1024 sync")"
luids=($(luids_of_ctr "$S clustered-core 1024 sync"))

# Query times (ms) of one log.
queries() { trace_of "$1" | awk '$4 == "type=IS_REMOTE_RECOVERING" {print substr($1, 3)}'; }
spaced() {
	local luid
	for luid in "${luids[@]}"; do
		queries "$luid" | awk 'NR > 1 && $1 - p < 200 {bad = 1} {p = $1; n++}
			END {exit bad || n < 3}' || return 1
	done
}
# Two logs asked less than 200 ms apart: a limit shared by the logs (as in
# the C module) never allows it.
independent() {
	{ queries "${luids[0]}" | sed 's/$/ a/'; queries "${luids[1]}" | sed 's/$/ b/'; } |
		sort -n | awk 'NR > 1 && $2 != pl && $1 - pt < 200 {ok = 1} {pt = $1; pl = $2}
			END {exit !ok}'
}
asked_enough() {
	local luid
	for luid in "${luids[@]}"; do [ "$(queries "$luid" | wc -l)" -ge 5 ] || return 1; done
	independent
}

# Writers on both mirrors, at least 4 s and until each log asked 5 times
# and the two logs were once asked close together (a loaded machine writes
# slowly; with a shared limit that never comes, and the check fails).
writer() {
	local i=0
	while [ ! -e "$WORK/stop-writers" ]; do
		dd if=/dev/zero of="/dev/mapper/$1" bs=4k count=1 seek=$((i % 32 * 128)) \
			oflag=direct status=none
		i=$((i + 1))
	done
}
rm -f "$WORK/stop-writers"
writer dmlu-ha &
wa=$!
writer dmlu-hb &
wb=$!
sleep 4
eventually 120 asked_enough
touch "$WORK/stop-writers"
wait "$wa" "$wb"
check "each log asks IS_REMOTE_RECOVERING repeatedly, never twice within 250 ms" spaced
check "the limit is per log: two logs are asked within 250 ms of each other" independent

# Mapping a read cannot block: in_sync says EWOULDBLOCK and the mirror's
# thread asks the server instead.
dd if=/dev/mapper/dmlu-ha of=/dev/null bs=4k count=1 skip=$((5 * 128)) iflag=direct status=none
asked_in_sync() { wait_trace "${luids[0]}" IN_SYNC 5 5 >/dev/null; }
check "a read of a region out of sync is answered through IN_SYNC" asked_in_sync

# In sync: no more queries of either kind.
stop_test_server
start_test_server
LEGS=("${ALL[@]:4:2}")
dmsetup create dmlu-hc --table "$(mirror_table $S "dmlu-hint-c clustered-core 1024 nosync")"
c=$(luids_of_ctr "$S clustered-core 1024 nosync" | tail -n1)
dd if=/dev/zero of=/dev/mapper/dmlu-hc bs=4k count=1 oflag=direct status=none
# A write is done with the log once its region is cleared.
wait_trace "$c" CLEAR_REGION 30 0 >/dev/null
before=$(( $(count_type "$c" IS_REMOTE_RECOVERING) + $(count_type "$c" GET_RESYNC_WORK) ))
for i in $(seq 20); do
	dd if=/dev/zero of=/dev/mapper/dmlu-hc bs=4k count=1 seek=$((i * 128)) oflag=direct status=none
done
wait_trace "$c" CLEAR_REGION 30 20 >/dev/null
after=$(( $(count_type "$c" IS_REMOTE_RECOVERING) + $(count_type "$c" GET_RESYNC_WORK) ))
check "in sync: 20 writes ask neither IS_REMOTE_RECOVERING nor GET_RESYNC_WORK" test "$before" = "$after"
check "... and at least one was asked before the hint was known" test "$before" -gt 0
dump_traces_if_failed "$c"

dmsetup suspend dmlu-hc
dmsetup resume dmlu-hc
dd if=/dev/zero of=/dev/mapper/dmlu-hc bs=4k count=1 seek=256 oflag=direct status=none
asked_again() { [ $(($(count_type "$c" IS_REMOTE_RECOVERING) + $(count_type "$c" GET_RESYNC_WORK))) -gt "$after" ]; }
check "a resume forgets the hint: the server is asked again" eventually 15 asked_again

LEGS=("${ALL[@]}")
dmsetup remove dmlu-ha
dmsetup remove dmlu-hb
dmsetup remove dmlu-hc
check "all mirrors removed" bash -c '! dmsetup ls | grep -q dmlu-h'

# A failed IS_REMOTE_RECOVERING counts as "recovering" (as in the C module):
# the write is requeued and waits for a later answer, not marked at once.
stop_test_server
start_test_server --stall-resync --fault IS_REMOTE_RECOVERING:error=5:1
LEGS=("${ALL[@]:0:2}")
dmsetup create dmlu-hd --table "$(mirror_table $S "dmlu-hint-d clustered-core 1024 sync")"
d=$(luids_of_ctr "$S clustered-core 1024 sync" | tail -n1)
dd if=/dev/zero of=/dev/mapper/dmlu-hd bs=4k count=1 seek=$((7 * 128)) oflag=direct status=none
waited() {
	trace_of "$d" | awk '$4 == "type=IS_REMOTE_RECOVERING" { if (/ fault=/) failed = 1; else if (failed) again = 1 }
		$4 == "type=MARK_REGION" && failed && !again { bad = 1 }
		END { exit bad || !failed || !again }'
}
check "a failed IS_REMOTE_RECOVERING counts as recovering: the write waits for the next answer" waited
dmsetup remove dmlu-hd

# The in-sync hint of an IS_REMOTE_RECOVERING answer is kept: regions below
# it are not asked about again (the sync count, 0 here, never sets it).
stop_test_server
start_test_server --stall-resync --remote-hint 16
dmsetup create dmlu-he --table "$(mirror_table $S "dmlu-hint-e clustered-core 1024 sync")"
e=$(luids_of_ctr "$S clustered-core 1024 sync" | tail -n1)
write_region() {
	sleep 0.3 # past the 250 ms limit: every write may ask
	dd if=/dev/zero of=/dev/mapper/dmlu-he bs=4k count=1 seek=$(($1 * 128)) oflag=direct status=none
}
write_region 20
first=$(count_type "$e" IS_REMOTE_RECOVERING)
for r in 0 3 7 11 15; do write_region "$r"; done
below=$(count_type "$e" IS_REMOTE_RECOVERING)
write_region 24
above=$(count_type "$e" IS_REMOTE_RECOVERING)
check "an IS_REMOTE_RECOVERING answer sets the hint: 5 writes below region 16 ask nothing" \
	test "$first" -ge 1 -a "$below" = "$first"
check "... while a write at region 24 asks again" test "$above" -gt "$below"
dump_traces_if_failed "$e"
dmsetup remove dmlu-he
LEGS=("${ALL[@]}")

ktap_finished

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# A clustered-disk log's state survives a SIGKILL of dm-ulogd. The mirror
# (with `sync`) resyncs onto a leg behind dm-delay; the delay device is then
# suspended, which freezes the resync at k regions in sync and holds a write
# to region 0 (already in sync) after the log marked it. dm-ulogd is killed
# and restarted: it still has k regions in sync (not 0: the replayed `sync`
# log would start over; not 128), and region 0 still marked: its first
# commit after the restart (for a write to region 1) writes the whole image
# from its state, with region 0 dirty. Once the leg is released the writes
# complete, the resync finishes and the legs match. A control run shows the
# same kill with the state directory wiped does lose the state.

DIR=$(dirname "$0")
. "$DIR/lib.sh"
. "$DIR/lib_ulogd.sh"
require_env dmsetup losetup dm-ulogd blockdev od

ktap_print_header
ktap_set_plan 18
WRITERS=()
# The held writes must be let go before the mirror can be removed.
trap 'dmsetup resume $SLOW 2>/dev/null; for w in "${WRITERS[@]}"; do wait $w; done; ulogd_cleanup' EXIT

NAME=dmlu-dr UUID=dmlu-dr-0001 SLOW=dmlu-dr-slow
SECTORS=131072 # 64 MiB: 128 regions of 1024 sectors

load_module
start_ulogd
make_legs 2 64
make_loop LOGDEV 4
LN=$(devnum "$LOGDEV")
dd if=/dev/urandom of="${LEGS[0]}" bs=1M count=64 oflag=direct status=none
make_delay $SLOW "${LEGS[1]}" 300
MLEGS=("${LEGS[0]}" /dev/mapper/$SLOW)
check "clustered-disk mirror with sync, leg 1 behind a 300 ms write delay" \
	dmsetup create $NAME --table "$(mirror_line $SECTORS "userspace 5 $UUID clustered-disk $LN 1024 sync")"
check "resync under way: 16 regions in sync" wait_in_sync_at_least $NAME 16 120

# Freeze: I/O to leg 1 now waits, so the resync stops where it is.
dmsetup suspend $SLOW
stable_count() {
	local a b
	b=$(in_sync_of $NAME)
	while :; do
		sleep 2
		a=$b b=$(in_sync_of $NAME)
		[ "$a" = "$b" ] && break
	done
	echo "$b"
}
K=$(stable_count)
check "resync frozen at $K regions (16 <= k < 128)" test "$K" -ge 16 -a "$K" -lt 128
# held_write REGION: a 64 KiB write into REGION (in sync): marked and
# flushed, then held at leg 1.
held_write() {
	dd if=/dev/urandom of=/dev/mapper/$NAME bs=64k count=1 seek=$(($1 * 8)) \
		oflag=direct status=none &
	WRITERS+=($!)
}
dirty_on_disk() { [ "$(disk_region_clean "$LOGDEV" "$1")" = 0 ]; }
wait_dirty() {
	local i
	for i in $(seq 50); do dirty_on_disk "$1" && return 0; sleep 0.2; done
	return 1
}
held_write 0
check "the write marked region 0 on the log device" wait_dirty 0
clean_is() {
	local n
	n=$(disk_clean_count "$LOGDEV" 128)
	[ "$n" = "$1" ] || { echo "# $n regions clean on disk, expected $1"; return 1; }
}
check "on disk: the k-1 other regions in sync are clean" clean_is $((K - 1))
check "the write is still held" kill -0 "${WRITERS[0]}"

kill_ulogd
sleep 1
check "dm-ulogd restarted after SIGKILL" start_ulogd
check "it restored the log with $K/128 regions in sync" \
	ulogd_log_has "log '$UUID' .*restored \(clustered-disk resumed, $K/128 regions in sync\)"
check "the mirror sees $K/128 in sync: not reset, not complete" test "$(sync_of $NAME)" = "$K/128"
held_write 1
check "a write to region 1: the restarted server committed its mark" wait_dirty 1
check "that commit wrote the whole image from the state: region 0 still marked" \
	dirty_on_disk 0
check "exactly k-2 regions clean on disk" clean_is $((K - 2))

# Release leg 1: the writes complete and the resync finishes.
set_delay $SLOW "${LEGS[1]}" 0
writes_done() {
	local w rc=0
	for w in "${WRITERS[@]}"; do wait "$w" || rc=1; done
	WRITERS=()
	return $rc
}
check "the held writes completed without error" writes_done
check "resync completes: 128/128" wait_sync $NAME 180
check "legs identical" legs_identical
clean_all() {
	local i
	for i in $(seq 50); do clean_is 128 >/dev/null && return 0; sleep 0.2; done
	clean_is 128
}
check "all 128 regions clean on disk once idle" clean_all

# Control: the same crash with the state directory wiped loses the state:
# the kernel replays the `sync` constructor, which starts over. (The kernel
# side then asks for no resync work until the next resume: its in-sync hint
# still says the mirror is in sync. Hence the suspend/resume.)
kill_ulogd
rm -rf "$ULOGD_STATE/logs"
start_ulogd
check "control: without the state file the log starts over (< 128 in sync)" \
	test "$(in_sync_of $NAME)" -lt 128
dmsetup suspend $NAME && dmsetup resume $NAME
check "control: after a resume it resyncs to 128/128, legs identical" \
	eval 'wait_sync $NAME 180 && legs_identical'

ktap_finished

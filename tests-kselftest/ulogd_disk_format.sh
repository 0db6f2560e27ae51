#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# dm-ulogd's disk logs use the on-disk format of the kernel's own `disk`
# log (drivers/md/dm-log.c), both ways, on one log device:
#  1. a mirror with the kernel disk log resyncs part way (leg 1 sits behind
#     dm-delay), is written and removed: k1 regions in sync, and the device
#     says k1 regions clean;
#  2. a clustered-disk mirror served by dm-ulogd over that device (leg 1
#     frozen, so nothing moves) starts with exactly k1/128 in sync, resyncs
#     some more and is removed at k2: the device says k2 regions clean;
#  3. the kernel disk log over the device dm-ulogd left starts with exactly
#     k2/128 in sync and finishes the resync.
# Leg 0 holds data and leg 1 zeros, so the legs only end identical if each
# region was copied by one of the three logs: none trusted a region wrongly.

DIR=$(dirname "$0")
. "$DIR/lib.sh"
. "$DIR/lib_ulogd.sh"
require_env dmsetup losetup dm-ulogd blockdev od

ktap_print_header
ktap_set_plan 17
trap ulogd_cleanup EXIT

NAME=dmlu-fmt SLOW=dmlu-fmt-slow UUID=dmlu-fmt-0001
SECTORS=131072 # 64 MiB: 128 regions of 1024 sectors

load_module
start_ulogd
make_legs 2 64
make_loop LOGDEV 4
LN=$(devnum "$LOGDEV")
dd if=/dev/urandom of="${LEGS[0]}" bs=1M count=64 oflag=direct status=none
make_delay $SLOW "${LEGS[1]}" 300
MLEGS=("${LEGS[0]}" /dev/mapper/$SLOW)
KERNEL_LOG="disk 2 $LOGDEV 1024"
ULOGD_LOG_ARGS="userspace 4 $UUID clustered-disk $LN 1024"

header_is() {
	local got
	got=$(disk_header "$LOGDEV")
	[ "$got" = "$MIRROR_MAGIC 2 128" ] || { echo "# header: $got"; return 1; }
}
clean_is() {
	local n
	n=$(disk_clean_count "$LOGDEV" 128)
	[ "$n" = "$1" ] || { echo "# $n regions clean on disk, expected $1"; return 1; }
}
sync_is() {
	local got
	got=$(sync_of $NAME)
	[ "$got" = "$1" ] || { echo "# $NAME: $got in sync, expected $1"; return 1; }
}

# 1. The kernel's disk log, part way through its resync.
check "mirror with the kernel disk log on $LN loads" \
	dmsetup create $NAME --table "$(mirror_line $SECTORS "$KERNEL_LOG")"
check "kernel disk log: resync under way (16 regions)" wait_in_sync_at_least $NAME 16 120
dd if=/dev/urandom of=/dev/mapper/$NAME bs=1M count=1 oflag=direct status=none
dd if=/dev/urandom of=/dev/mapper/$NAME bs=1M count=1 seek=60 oflag=direct status=none
dmsetup suspend $NAME # stops the resync, flushes the log
K1=$(in_sync_of $NAME)
dmsetup remove $NAME
check "removed at $K1/128 (16 <= k1 < 120)" test "$K1" -ge 16 -a "$K1" -lt 120
check "kernel wrote dm-log's header: magic, version 2, 128 regions" header_is
check "kernel's bitmap says k1 = $K1 regions clean" clean_is "$K1"

# 2. dm-ulogd reads it; leg 1 frozen so the count shows what was read.
dmsetup suspend $SLOW
check "clustered-disk mirror (default mode) over the same log device loads" \
	dmsetup create $NAME --table "$(mirror_line $SECTORS "$ULOGD_LOG_ARGS")"
check "dm-ulogd trusts the kernel's bitmap: exactly $K1/128 in sync" sync_is "$K1/128"
check "dm-ulogd says so: 'resumed from $LN: $K1/128 regions in sync'" \
	ulogd_log_has "log '$UUID' .*resumed from $LN: $K1/128 regions in sync$"
set_delay $SLOW "${LEGS[1]}" 300
check "dm-ulogd resyncs further (k1 + 8)" wait_in_sync_at_least $NAME $((K1 + 8)) 120
dmsetup suspend $NAME
K2=$(in_sync_of $NAME)
dmsetup remove $NAME
check "removed at $K2/128 (k1 + 8 <= k2 < 128)" test "$K2" -ge $((K1 + 8)) -a "$K2" -lt 128
check "dm-ulogd left dm-log's header" header_is
check "dm-ulogd's bitmap says k2 = $K2 regions clean" clean_is "$K2"

# 3. The kernel reads what dm-ulogd wrote.
dmsetup suspend $SLOW
check "kernel disk log over dm-ulogd's device loads" \
	dmsetup create $NAME --table "$(mirror_line $SECTORS "$KERNEL_LOG")"
check "kernel trusts dm-ulogd's bitmap: exactly $K2/128 in sync" sync_is "$K2/128"
set_delay $SLOW "${LEGS[1]}" 0
check "kernel finishes the resync: 128/128" wait_sync $NAME 180
check "legs identical: every region was copied by one of the logs" legs_identical
dmsetup remove $NAME
check "all 128 regions clean on the device after removal" clean_is 128

ktap_finished

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# A mirror with a `clustered-disk` userspace log served by dm-ulogd, the log
# device a loop device named by major:minor: created with `sync` (a real
# resync), shown as cmirrord shows it, the log device held by the kernel,
# the dm-log on-disk header and clean bitmap written, fio writes made
# durable, suspend/resume (with `sync` a resume resyncs everything, as
# dm-log does), a reload with the same uuid in the default mode (the new log
# trusts what the device says: no resync), a `nosync` mirror, and removal.

DIR=$(dirname "$0")
. "$DIR/lib.sh"
. "$DIR/lib_ulogd.sh"
require_env dmsetup losetup dm-ulogd fio blockdev od

ktap_print_header
ktap_set_plan 25
trap ulogd_cleanup EXIT

NAME=dmlu-disk
UUID=dmlu-disk-0001
SECTORS=131072 # 64 MiB: 128 regions of 1024 sectors

load_module
start_ulogd
make_legs 2 64
make_loop LOGDEV 4
LN=$(devnum "$LOGDEV") LEG0=$(devnum "${LEGS[0]}") LEG1=$(devnum "${LEGS[1]}")
dd if=/dev/urandom of="${LEGS[0]}" bs=1M count=64 oflag=direct status=none

logargs="$UUID clustered-disk $LN 1024 sync"
table=$(mirror_table $SECTORS "$logargs")
check "clustered-disk mirror with sync on log device $LN loads" \
	dmsetup create $NAME --table "$table"
check "dm-ulogd constructed the log on $LN" \
	ulogd_log_has "log '$UUID' .*created: 128 regions of 1024 sectors, clustered-disk on $LN$"
expect_table="0 $SECTORS mirror userspace 5 $logargs 2 $LEG0 0 $LEG1 0 1 handle_errors"
table_is() {
	local got
	got=$(dmsetup table $NAME)
	[ "$got" = "$1" ] || { echo "# table: '$got', expected '$1'"; return 1; }
}
check "dmsetup table gives back the log arguments" table_is "$expect_table"
status_is() {
	local got
	got=$(log_status_of $NAME)
	[ "$got" = "$1" ] || { echo "# log status: '$got', expected '$1'"; return 1; }
}
check "status ends with '3 clustered-disk $LN A', as cmirrord prints it" \
	status_is "3 clustered-disk $LN A"
held() { dmsetup deps $NAME | grep -q "(${LN%:*}, ${LN#*:})" && [ -n "$(ls /sys/block/"${LOGDEV#/dev/}"/holders)" ]; }
check "the kernel holds the log device the CTR reply named" held
check "resync reaches 128/128" wait_sync $NAME 180
check "the resync copied leg 0 over leg 1: legs identical" legs_identical

header_is() {
	local got
	got=$(disk_header "$LOGDEV")
	[ "$got" = "$MIRROR_MAGIC 2 128" ] || { echo "# header: $got"; return 1; }
}
check "log device header: dm-log's magic, version 2, 128 regions" header_is
# Clears reach the device lazily (the kernel flushes them 3 s later).
clean_on_disk() {
	local i n
	for i in $(seq 50); do
		n=$(disk_clean_count "$LOGDEV" 128)
		[ "$n" = "$1" ] && return 0
		sleep 0.2
	done
	echo "# $n regions clean on disk, expected $1"
	return 1
}
check "log device bitmap: all 128 regions clean once idle" clean_on_disk 128

before=$(ulogd_stats)
check "fio: 8 MiB of random 4 KiB writes through the mirror, verified" \
	fio --name=disk --filename=/dev/mapper/$NAME --rw=randwrite --bs=4k --size=8M \
	--direct=1 --ioengine=psync --verify=crc32c --verify_fatal=1 --output="$WORK/fio.out"
after=$(ulogd_stats)
check "marks were made durable: the FLUSHes wrote and synced the device" \
	test "$(json_num "$after" disk_syncs)" -gt "$(json_num "$before" disk_syncs)" \
	-a "$(json_num "$after" regions_marked)" -gt 0
check "legs identical after the writes" legs_identical
check "all regions clean on disk again once idle" clean_on_disk 128

# dm-log's `sync`: every resume starts a full resync.
check "suspend" dmsetup suspend $NAME
check "status shows the log state while suspended" status_is "3 clustered-disk $LN A"
# Counted by the server, not watched in the status: on a fast kernel the
# resync can be over before the status is read.
recovered0=$(op_count "$(ulogd_stats)" SET_REGION_SYNC)
dmsetup resume $NAME
full_resync() {
	wait_sync $NAME 180 &&
		[ $(($(op_count "$(ulogd_stats)" SET_REGION_SYNC) - recovered0)) -ge 128 ]
}
check "resume with sync: the device is reinitialised, all 128 regions resync" full_resync
check "and the legs are identical" legs_identical

# Reload in the default mode: the new instance is constructed before the
# old one is destroyed, and at its resume reads the device: all clean.
logargs="$UUID clustered-disk $LN 1024"
table=$(mirror_table $SECTORS "$logargs")
luids() { ulogd_stats | grep -o "\"uuid\":\"$UUID\",\"luid\":[0-9]*" | sed 's/.*://'; }
old=$(luids)
reload() {
	dmsetup reload $NAME --table "$table" || return 1
	local during
	during=$(luids | wc -l)
	dmsetup resume $NAME || return 1
	[ "$during" = 2 ] && [ "$(luids)" != "$old" ] && [ "$(luids | wc -l)" = 1 ] ||
		{ echo "# luids: old $old, during $during, now $(luids)"; return 1; }
}
check "reload (default mode, same uuid): new log before the old one's DTR" reload
check "table now without sync" table_is "0 $SECTORS mirror userspace 4 $logargs 2 $LEG0 0 $LEG1 0 1 handle_errors"
check "the new log read the device: 128/128 at once, no resync" test "$(sync_of $NAME)" = 128/128
dmsetup suspend $NAME && dmsetup resume $NAME
check "default mode: suspend/resume keeps 128/128" test "$(sync_of $NAME)" = 128/128

check "remove: log gone from the server, device released" bash -c "
	dmsetup remove $NAME &&
	dm-ulogd stats --json --state-dir '$ULOGD_STATE' | grep -q '\"logs_active\":0,' &&
	[ -z \"\$(ls /sys/block/${LOGDEV#/dev/}/holders)\" ]"

# nosync on a blank log device: all in sync at once, and said so on disk.
dd if=/dev/zero of="$LOGDEV" bs=1M count=4 oflag=direct status=none
dmsetup create $NAME --table "$(mirror_table $SECTORS "dmlu-disk-0002 clustered-disk $LN 1024 nosync")"
check "nosync: 128/128 at once" test "$(sync_of $NAME)" = 128/128
check "nosync: the device says all 128 regions clean" eval 'header_is && clean_on_disk 128'
dmsetup remove $NAME
check "no request failed in the server" test "$(json_num "$(ulogd_stats)" errors)" = 0

ktap_finished

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# A mirror with a `clustered-core` userspace log served by dm-ulogd, through
# its whole life: created with `sync` over legs holding different data (so
# a real resync copies leg 0 over leg 1), shown as cmirrord shows it,
# written with fio, suspended and resumed, reloaded with the same uuid (the
# new table's log is constructed before the old one is destroyed), removed;
# then a `nosync` mirror, which trusts the legs and copies nothing.

DIR=$(dirname "$0")
. "$DIR/lib.sh"
. "$DIR/lib_ulogd.sh"
require_env dmsetup losetup dm-ulogd fio blockdev

ktap_print_header
ktap_set_plan 21
trap ulogd_cleanup EXIT

NAME=dmlu-core
UUID=dmlu-core-0001
SECTORS=131072 # 64 MiB: 128 regions of 1024 sectors

load_module
start_ulogd
make_legs 2 64
# Leg 0 gets data, leg 1 stays zero: only a resync makes them equal.
dd if=/dev/urandom of="${LEGS[0]}" bs=1M count=64 oflag=direct status=none
LEG0=$(devnum "${LEGS[0]}") LEG1=$(devnum "${LEGS[1]}")
check "legs differ before the mirror exists" bash -c "! cmp -s ${LEGS[0]} ${LEGS[1]}"

table=$(mirror_table $SECTORS "$UUID clustered-core 1024 sync")
check "clustered-core mirror with sync loads, served by dm-ulogd" \
	dmsetup create $NAME --table "$table"
check "dm-ulogd constructed the log: 128 regions of 1024 sectors" \
	ulogd_log_has "log '$UUID' .*created: 128 regions of 1024 sectors, clustered-core$"
expect_table="0 $SECTORS mirror userspace 4 $UUID clustered-core 1024 sync 2 $LEG0 0 $LEG1 0 1 handle_errors"
same_table() {
	local got
	got=$(dmsetup table $NAME)
	[ "$got" = "$expect_table" ] || { echo "# table: '$got'"; return 1; }
}
check "dmsetup table gives back the log arguments" same_table
status_is() {
	local got
	got=$(log_status_of $NAME)
	[ "$got" = "$1" ] || { echo "# log status: '$got', expected '$1'"; return 1; }
}
check "status ends with the log status as cmirrord prints it: '1 clustered-core'" \
	status_is "1 clustered-core"
check "resync reaches 128/128" wait_sync $NAME 180
check "the resync copied leg 0 over leg 1: legs identical" legs_identical
check "both legs alive (AA)" test "$(health_of $NAME)" = AA

# Random writes, read back and verified by fio.
check "fio: 8 MiB of random 4 KiB writes through the mirror, verified" \
	fio --name=core --filename=/dev/mapper/$NAME --rw=randwrite --bs=4k --size=8M \
	--direct=1 --ioengine=psync --verify=crc32c --verify_fatal=1 \
	--output="$WORK/fio.out"
stats=$(ulogd_stats)
check "the writes were marked and flushed (regions_marked, FLUSH > 0)" \
	test "$(json_num "$stats" regions_marked)" -gt 0 -a "$(op_count "$stats" FLUSH)" -gt 0
check "legs identical after the writes" legs_identical

# Suspend and resume: the server follows the lifecycle.
log_state() { ulogd_stats | grep -o "\"uuid\":\"$UUID\",\"luid\":[0-9]*,\"type\":\"[a-z-]*\",\"state\":\"[a-z]*\"" | sed 's/.*"state":"\([a-z]*\)"/\1/'; }
dmsetup suspend $NAME
check "dmsetup suspend: the server has the log suspended" test "$(log_state)" = suspended
dmsetup resume $NAME
check "dmsetup resume: resumed, still 128/128" \
	test "$(log_state)" = resumed -a "$(sync_of $NAME)" = 128/128
dd if=/dev/urandom of=/dev/mapper/$NAME bs=1M count=4 seek=20 oflag=direct status=none
check "writes after the resume reach both legs" legs_identical

# Reload with the same uuid: CTR of the new table (new luid) first, then
# suspend of the old table, RESUME of the new one, DTR of the old one.
luids() { ulogd_stats | grep -o "\"uuid\":\"$UUID\",\"luid\":[0-9]*" | sed 's/.*://'; }
old=$(luids)
dmsetup reload $NAME --table "$table"
during=$(luids | tr '\n' ' ')
new=$(luids | grep -vx "$old")
reload_order() {
	[ "$(wc -w <<<"$during")" = 2 ] && [ -n "$new" ] || { echo "# logs after reload: $during"; return 1; }
	dmsetup resume $NAME || return 1
	[ "$(luids)" = "$new" ] || { echo "# logs after resume: $(luids)"; return 1; }
	local created destroyed
	created=$(grep -n "(luid $new): created" "$ULOGD_LOG" | cut -d: -f1)
	destroyed=$(grep -n "(luid $old): destroyed" "$ULOGD_LOG" | cut -d: -f1)
	[ -n "$created" ] && [ -n "$destroyed" ] && [ "$created" -lt "$destroyed" ]
}
check "reload: new log (new luid) constructed before the old one is destroyed" reload_order
check "after the reload: same table, resynced to 128/128 (a new core log with sync)" \
	eval 'same_table && wait_sync $NAME 180'
check "legs identical after the reload" legs_identical

check "remove: no log left in the server, state file gone" bash -c "
	dmsetup remove $NAME &&
	dm-ulogd stats --json --state-dir '$ULOGD_STATE' | grep -q '\"logs_active\":0,' &&
	[ -z \"\$(ls -A '$ULOGD_STATE/logs')\" ]"

# nosync: every region is taken as in sync, nothing is copied.
dd if=/dev/urandom of="${LEGS[0]}" bs=1M count=64 oflag=direct status=none
table=$(mirror_table $SECTORS "dmlu-core-0002 clustered-core 1024 nosync")
dmsetup create $NAME --table "$table"
check "nosync: 128/128 at once" test "$(sync_of $NAME)" = 128/128
dd if=/dev/urandom of=/dev/mapper/$NAME bs=1M count=2 oflag=direct status=none
check "nosync: written data on both legs, the rest never copied" \
	bash -c "cmp -n 2097152 ${LEGS[0]} ${LEGS[1]} && ! cmp -s ${LEGS[0]} ${LEGS[1]}"
dmsetup remove $NAME
check "no request failed in the server" test "$(json_num "$(ulogd_stats)" errors)" = 0

ktap_finished

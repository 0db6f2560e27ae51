#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# `dm-ulogd stats --json` counts requests by type: after known workloads on
# a clustered-core mirror (construction, a full resync of 128 regions,
# sequential writes over 8 regions, status queries, suspend/resume,
# removal) each counter says exactly what the kernel sent; `--reset`
# zeroes them; the text form names the logs.

DIR=$(dirname "$0")
. "$DIR/lib.sh"
. "$DIR/lib_ulogd.sh"
require_env dmsetup losetup dm-ulogd

ktap_print_header
ktap_set_plan 14
trap ulogd_cleanup EXIT

NAME=dmlu-stats UUID=dmlu-stats-0001
SECTORS=131072 # 64 MiB: 128 regions of 1024 sectors

load_module
start_ulogd
make_legs 2 64

# expect JSON "TYPE=N ..." : each request type's total count is N.
expect() {
	local json=$1 pair t n got bad=0
	shift
	for pair in "$@"; do
		t=${pair%%=*} n=${pair#*=}
		got=$(op_count "$json" "$t")
		[ "$got" = "$n" ] || { echo "# $t: $got requests, expected $n"; bad=1; }
	done
	return $bad
}
# settle: wait for the kernel's lazy FLUSH of the last clears (3 s after
# them): a FLUSH counted after the clear count stopped moving. Bounded: if
# it came already, 12 s go by and the checks read a settled log anyway.
settle() {
	local s c f last_c=-1 f_at=0 end=$((SECONDS + 12))
	while [ "$SECONDS" -lt "$end" ]; do
		s=$(ulogd_stats)
		c=$(json_num "$s" regions_cleared) f=$(op_count "$s" FLUSH)
		if [ "$c" != "$last_c" ]; then
			last_c=$c f_at=$f
		elif [ "$f" -gt "$f_at" ]; then
			return 0
		fi
		sleep 0.3
	done
}

dmsetup create $NAME --table "$(mirror_table $SECTORS "$UUID clustered-core 1024 sync")"
wait_sync $NAME 180
settle
s=$(ulogd_stats)
check "construction: CTR 1, GET_REGION_SIZE 1, RESUME 1; nothing failed" \
	expect "$s" CTR=1 GET_REGION_SIZE=1 RESUME=1 INVALID=0 DTR=0
check "resync of 128 regions: SET_REGION_SYNC 128, 128 regions cleared" \
	eval 'expect "$s" SET_REGION_SYNC=128 && [ "$(json_num "$s" regions_cleared)" = 128 ]'
check "GET_RESYNC_WORK asked at least once per region" \
	test "$(op_count "$s" GET_RESYNC_WORK)" -ge 128
check "the log's entry: clustered-core, resumed, 128/128 in sync" \
	grep -q "\"uuid\":\"$UUID\",\"luid\":[0-9]*,\"type\":\"clustered-core\",\"state\":\"resumed\",\"region_size\":1024,\"regions\":128,\"in_sync\":128,\"device\":null" <<<"$s"

dm-ulogd stats --reset --state-dir "$ULOGD_STATE" >/dev/null
s=$(ulogd_stats)
check "--reset zeroes the counters" test "$(json_num "$s" requests)" = 0

# 4 MiB written in 1 MiB writes, one after the other: each marks two
# regions, which are cleared once it completes.
dd if=/dev/urandom of=/dev/mapper/$NAME bs=1M count=4 oflag=direct status=none
settle
s=$(ulogd_stats)
check "4 MiB over regions 0-7: 8 regions marked, 8 cleared" \
	test "$(json_num "$s" regions_marked) $(json_num "$s" regions_cleared)" = "8 8"
check "marks went out as MARK_REGION and FLUSH requests" \
	test "$(op_count "$s" MARK_REGION)" -ge 1 -a "$(op_count "$s" FLUSH)" -ge 4
check "an in-sync mirror asks for no resync work" expect "$s" GET_RESYNC_WORK=0 SET_REGION_SYNC=0

dm-ulogd stats --reset --state-dir "$ULOGD_STATE" >/dev/null
for i in 1 2 3 4 5; do dmsetup status $NAME >/dev/null; done
check "5 x dmsetup status: STATUS_INFO 5, GET_SYNC_COUNT 5, nothing else" \
	eval 'expect "$(ulogd_stats)" STATUS_INFO=5 GET_SYNC_COUNT=5 &&
		[ "$(json_num "$(ulogd_stats)" requests)" = 10 ]'

dm-ulogd stats --reset --state-dir "$ULOGD_STATE" >/dev/null
dmsetup suspend $NAME
dmsetup resume $NAME
check "suspend/resume: PRESUSPEND 1, POSTSUSPEND 1, RESUME 1" \
	expect "$(ulogd_stats)" PRESUSPEND=1 POSTSUSPEND=1 RESUME=1
check "the text form names the log and its state" \
	bash -c "dm-ulogd stats --state-dir '$ULOGD_STATE' | grep -q '$UUID'"

dmsetup remove $NAME
s=$(ulogd_stats)
check "removal: DTR 1, no live log" \
	eval 'expect "$s" DTR=1 && [ "$(json_num "$s" logs_active)" = 0 ]'
check "no request failed, none malformed or ignored" \
	test "$(json_num "$s" errors) $(json_num "$s" malformed) $(json_num "$s" ignored)" = "0 0 0"
check "stats without a server fails cleanly" \
	bash -c "! dm-ulogd stats --state-dir '$WORK/nowhere' 2>/dev/null"

ktap_finished

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# A mirror with a userspace log, served by the test server: the table loads,
# the server sees CTR "<sectors> <args>", GET_REGION_SIZE and RESUME, data
# written reaches both legs, status and table read back as the C module
# prints them, the IMA measurement gets nothing from the log, each region
# written costs one IN_SYNC, and removal sends DTR.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_trace.sh"
require_env dmsetup losetup ulog-test-server

ktap_print_header
ktap_set_plan 11
trap cleanup_all EXIT

load_module
rm -f "$TRACE"
start_test_server --status "1 ulog-test-server"
make_legs 2 64
uuid=dmlu-basic-0001
table=$(mirror_table 131072 "$uuid clustered-core 1024 nosync")
check "mirror with a userspace log loads" dmsetup create dmlu-basic --table "$table"
luid=$(luid_of_ctr "131072 clustered-core 1024 nosync")
check "server got CTR \"131072 clustered-core 1024 nosync\" with a luid" test -n "$luid"
# dm-raid1's constructor also asks for the sync count.
ctr_sequence() {
	local got
	got=$(trace_types "$luid" | awk '/MARK_REGION/ {exit} {print}' | tr '\n' ' ')
	case "$got" in
	"CTR GET_REGION_SIZE "*RESUME*) return 0 ;;
	*) echo "# got: $got"; return 1 ;;
	esac
}
check "then GET_REGION_SIZE, and RESUME before any mark" ctr_sequence
check "table line as the C module prints it" bash -c \
	'dmsetup table dmlu-basic | grep -q "mirror userspace 4 $1 clustered-core 1024 nosync 2 "' _ "$uuid"
check "status: all regions in sync, the server's status string" bash -c \
	'dmsetup status dmlu-basic | grep -Eq " 128/128 1 AA 1 ulog-test-server$"'
# The IMA measurement (`dmsetup measure`) gets nothing from the log, as
# from the C module: its status for STATUSTYPE_IMA is empty.
check "IMA measurement: the log adds nothing after log_type_status=" bash -c \
	'dmsetup measure dmlu-basic | grep -Eq "keep_log=[yn],log_type_status=;"'
check "8 MiB written with O_DIRECT" \
	dd if=/dev/urandom of=/dev/mapper/dmlu-basic bs=1M count=8 oflag=direct status=none
check "both legs hold the same data" legs_identical
marked_and_flushed() { trace_types "$luid" | grep -q MARK_REGION && trace_types "$luid" | grep -q FLUSH; }
check "writes were marked and flushed" marked_and_flushed
# dm-raid1 asks IN_SYNC twice about a region it is about to write (its state,
# then again as it enters its region hash): the second question gets the
# answer to the first, until the flush that ends the pass.
asked_once() {
	local asked regions
	asked=$(trace_of "$luid" | grep -c " type=IN_SYNC ")
	regions=$(trace_of "$luid" | grep " type=IN_SYNC " | sed 's/.* regions=//' | sort -u | wc -l)
	echo "# IN_SYNC: $asked requests for $regions regions"
	# Twice per region without the memo; a region emptied and written
	# again in a later pass is asked again.
	[ "$regions" -ge 16 ] && [ "$asked" -lt $((2 * regions)) ]
}
check "regions written were asked IN_SYNC once a pass, not twice" asked_once
dmsetup remove dmlu-basic
last_is_dtr() { [ "$(trace_types "$luid" | tail -n1)" = DTR ]; }
check "removal sends DTR" last_is_dtr

ktap_finished

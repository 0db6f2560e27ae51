#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Constructing and destroying userspace logs: the CTR string and the table
# line, bad table arguments, a server that refuses or sends a bad region
# size (the log is then destroyed again with DTR), no server at all, a
# reload with the same uuid, luids that are unique and no kernel address,
# and a module that cannot go while a log exists.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_trace.sh"
require_env dmsetup losetup ulog-test-server

ktap_print_header
ktap_set_plan 23
trap cleanup_all EXIT

leaks_reset
load_module
make_legs 2 16
S=32768
create() { dmsetup create dmlu-ctr --table "$(mirror_table $S "$1")" 2>/dev/null; }

mark_log
check "without a server the table fails to load" fails create "dmlu-ctr-1 clustered-core 1024 nosync"
check "... saying the server is not found" log_has "ctr-1\] userspace log server not found"

rm -f "$TRACE"
start_test_server
mark_log
check "two arguments are refused" fails create "dmlu-ctr-2 clustered-core"
check "... with a message saying why" log_has "too few arguments \(2\)"
long=$(printf 'u%.0s' $(seq 129))
check "a 129-byte uuid is refused" fails create "$long clustered-core 1024"
check "... with a message saying why" log_has "uuid is 129 bytes long, at most 128"

mark_log
big=$(printf 'x%.0s' $(seq 400))
check "server arguments too long for one request are refused" fails create "dmlu-ctr-4 core $big"
check "... with a message saying why" log_has "412-byte constructor string, at most 332"

mark_log
check "a CTR the server refuses fails the load" fails create "dmlu-ctr-3 bogus-type 1024"
check "... with the server's error" log_has "ctr-3\] userspace log server failed to create log"

for size in 1000 0; do
	stop_test_server
	start_test_server --region-size "$size"
	mark_log
	check "region size $size from the server fails the load" fails create "dmlu-ctr-$size clustered-core 1024"
	luid=$(luid_of_ctr "clustered-core 1024" )
	undone() {
		[ "$(trace_of "$luid" | awk '{sub("type=", "", $4); printf "%s ", $4}')" = \
			"CTR GET_REGION_SIZE DTR " ] && log_has "region size $size: not a power of two"
	}
	check "... logs why and destroys the server's log with DTR" undone
done

stop_test_server
start_test_server
check "integrated_flush table loads" create "dmlu-ctr-9 integrated_flush clustered-core 1024 nosync"
luid1=$(luid_of_ctr "$S clustered-core 1024 nosync")
ctr_line=$(grep " luid=$luid1 type=CTR " "$TRACE")
check "CTR string is \"<sectors> <args>\" without uuid and keyword" \
	grep -q "ctr=\"$S clustered-core 1024 nosync\"" <<<"$ctr_line"
check "table line repeats every argument, keyword included" bash -c \
	'dmsetup table dmlu-ctr | grep -q " mirror userspace 5 dmlu-ctr-9 integrated_flush clustered-core 1024 nosync 2 "'
not_kernel_address() { [ "${#luid1}" -lt 19 ] || [[ "$luid1" < 9223372036854775808 ]]; }
check "luid is below 2^63, never a kernel address" not_kernel_address

check "the module cannot be removed while a log exists" fails rmmod dm_log_userspace

table=$(dmsetup table dmlu-ctr)
dmsetup reload dmlu-ctr --table "$table"
dmsetup resume dmlu-ctr
luid2=$(luid_of_ctr "$S clustered-core 1024 nosync" | tail -n1)
check "a reload with the same uuid gets a new luid" test "$luid2" != "$luid1"
new_before_old() { [ "$(line_of "$luid2" CTR)" -lt "$(line_of "$luid1" DTR)" ]; }
check "... whose CTR comes before the old log's DTR" new_before_old

dmsetup remove dmlu-ctr
check "after removal the module unloads" rmmod dm_log_userspace
stop_test_server
if leaks_found; then
	ktap_test_fail "failed and successful constructions leaked nothing (kmemleak)"
else
	ktap_test_pass "failed and successful constructions leaked nothing (kmemleak)"
fi

ktap_finished

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Constructing and destroying userspace logs: the CTR string and the table
# line, bad table arguments, a server that refuses or sends a bad region
# size (the log is then destroyed again with DTR), the log device a CTR
# reply names (held, refused without its NUL, let go when the construction
# fails after it was taken), no server at all, a
# reload with the same uuid, luids that are unique and no kernel address,
# and a module that cannot go while a log exists.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_trace.sh"
require_env dmsetup losetup ulog-test-server

ktap_print_header
ktap_set_plan 32
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
check "... with a message saying why" log_has "411-byte constructor string, at most 332"
# "32768 core " and 321 more bytes make 332, the most a request carries.
fill() { printf 'y%.0s' $(seq "$1"); }
mark_log
create "dmlu-ctr-fit core $(fill 321)"
check "a constructor string of exactly 332 bytes goes to the server whole (no NUL)" \
	grep -q " type=CTR size=332 .* ctr=\"$S core $(fill 321)\"" "$TRACE"
over_refused() { fails create "dmlu-ctr-over core $(fill 322)" && ! grep -q " type=CTR size=333 " "$TRACE"; }
check "... and 333 bytes are refused, sent nowhere" over_refused
check "... with a message saying why" log_has "333-byte constructor string, at most 332"

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

# The log device of a disk log's server, named in the CTR reply.
rm -f "$WORK/logdev"
truncate -s 1M "$WORK/logdev"
logdev=$(losetup -f)
losetup "$logdev" "$WORK/logdev"
holders() { ls "/sys/block/${logdev#/dev/}/holders"; }
# requests_of CTR-PATTERN: the request types of the last log whose CTR
# string matches.
requests_of() { trace_of "$(luid_of_ctr "$1")" | awk '{sub("type=", "", $4); printf "%s ", $4}'; }
stop_test_server
start_test_server --ctr-device "$logdev"
create "dmlu-ctr-dev clustered-disk $logdev 1024 nosync"
held() { holders | grep -q dm-; }
check "a device named by the CTR reply is held by the table" held
dmsetup remove dmlu-ctr
check "... and let go on removal" test -z "$(holders)"

stop_test_server
start_test_server --ctr-device "$logdev" --fault CTR:short+good:1
mark_log
no_nul() {
	create "dmlu-ctr-nonul clustered-disk $logdev 1024 nosync" && held &&
		log_has "dropped a reply to CTR request [0-9]+: device name not NUL-terminated" &&
		! log_has "request timed out"
}
check "a device name without its NUL is dropped, logged; the good reply after it taken" no_nul
dmsetup remove dmlu-ctr

stop_test_server
start_test_server --ctr-device /dev/dmlu-no-such-device
mark_log
nodev() {
	fails create "dmlu-ctr-nodev clustered-disk none 1024 nosync" &&
		log_has "tr-nodev\] failed to register /dev/dmlu-no-such-device with device-mapper"
}
check "a device that cannot be opened fails the load, logged" nodev

# 2^40 sectors in regions of one sector: the marks cannot be allocated once
# the device is held (the table's size is only checked at resume).
stop_test_server
start_test_server --ctr-device "$logdev" --region-size 1
mark_log
huge() {
	! dmsetup create dmlu-ctr --table \
		"$(mirror_table 1099511627776 "dmlu-ctr-huge clustered-disk $logdev 2147483648 nosync")" 2>/dev/null &&
		log_has "ctr-huge\] no memory for 1099511627776 regions" &&
		[ "$(requests_of "clustered-disk $logdev 2147483648 nosync")" = "CTR GET_REGION_SIZE DTR " ]
}
check "a failure after the device is held (no memory for 2^40 regions) fails the load, logged, DTR sent" huge
let_go() { fails log_has "dm_put_device call missing" && test -z "$(holders)"; }
check "... and the device is let go: no 'dm_put_device call missing', no holder" let_go
losetup -d "$logdev"

stop_test_server
start_test_server
check "integrated_flush table loads" create "dmlu-ctr-9 integrated_flush clustered-core 1024 nosync"
luid1=$(luid_of_ctr "$S clustered-core 1024 nosync")
ctr_line=$(grep " luid=$luid1 type=CTR " "$TRACE")
check "CTR string is \"<sectors> <args>\" without uuid and keyword" \
	grep -q "ctr=\"$S clustered-core 1024 nosync\"" <<<"$ctr_line"
check "table line repeats every argument, keyword included" bash -c \
	'dmsetup table dmlu-ctr | grep -q " mirror userspace 5 dmlu-ctr-9 integrated_flush clustered-core 1024 nosync 2 "'
# A decimal of 19 digits or fewer than 2^63's, compared as strings of the
# same length (bash's integers stop at 2^63 - 1).
below_2_63() { [ "${#1}" -lt 19 ] || { [ "${#1}" = 19 ] && [[ "$1" < 9223372036854775808 ]]; }; }
not_kernel_address() { below_2_63 "$luid1"; }
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
leak_check "failed and successful constructions leaked nothing (kmemleak)"

ktap_finished

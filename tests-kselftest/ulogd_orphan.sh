#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# A clustered-disk mirror removed while dm-ulogd is down: its DTR never
# reaches the server, whose state file for the log survives. Device numbers
# are reused (here the log's loop device is given another file holding
# someone's data), so when the server comes back it must not write to, nor
# hold open, the device of a log it only knows from a state file: that log
# may not exist any more. A mirror that still exists is served as usual.

DIR=$(dirname "$0")
. "$DIR/lib.sh"
. "$DIR/lib_ulogd.sh"
require_env dmsetup losetup dm-ulogd blockdev md5sum

ktap_print_header
ktap_set_plan 8
trap ulogd_cleanup EXIT

SECTORS=65536 # 32 MiB: 64 regions of 1024 sectors

load_module
start_ulogd
make_legs 2 32
make_loop LOGDEV 4
LN=$(devnum "$LOGDEV")
dmsetup create dmlu-orphan --table "$(mirror_table $SECTORS "dmlu-orphan-1 clustered-disk $LN 1024 sync")"
check "clustered-disk mirror on $LN in sync" wait_sync dmlu-orphan 120

ulogd_quiet 4 # no lazy flush pending (it would wait for a server)
kill_ulogd
# Removed while no server listens: the DTR is lost.
check "the mirror can be removed while the server is down" dmsetup remove dmlu-orphan
check "the server's state file for the log is left behind" \
	test -n "$(ls -A "$ULOGD_STATE/logs")"

# The device number goes to someone else's data.
losetup -d "$LOGDEV"
yes "someone else's data" | head -c 4194304 >"$WORK/other"
losetup "$LOGDEV" "$WORK/other" || echo "# cannot reattach $LOGDEV"
check "$LOGDEV is $LN again, over other data" test "$(devnum "$LOGDEV")" = "$LN"
sum=$(md5sum <"$WORK/other")

start_ulogd
holds_dev() {
	local fd
	for fd in /proc/"$ULOGD_PID"/fd/*; do
		[ -b "$fd" ] && [ "$(devnum "$fd")" = "$LN" ] && return 0
	done
	return 1
}
check "the restarted server does not hold $LN open" eval '! holds_dev'
check "nor wrote to it" test "$(md5sum <"$WORK/other")" = "$sum"
stop_ulogd
check "nor at its orderly exit (SIGTERM)" test "$(md5sum <"$WORK/other")" = "$sum"

# The server still serves a mirror that does exist, on the same device.
start_ulogd
dmsetup create dmlu-orphan --table "$(mirror_table $SECTORS "dmlu-orphan-2 clustered-disk $LN 1024 sync")"
check "a new mirror on $LN is served: in sync" wait_sync dmlu-orphan 120

ktap_finished

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# dm-ulogd killed with SIGKILL and restarted while two mirrors (one with a
# clustered-core log, one with a clustered-disk log) are being written: the
# writers see no error, only a pause (a request lost with the server is
# resent by the kernel after 15 s; one sent while no server listens is
# replayed after the restart), the server reloads both logs from its state
# files, the data written is what was last written, and both mirrors end in
# sync with identical legs and healthy logs.

DIR=$(dirname "$0")
. "$DIR/lib.sh"
. "$DIR/lib_ulogd.sh"
require_env dmsetup losetup dm-ulogd blockdev

ktap_print_header
ktap_set_plan 15
trap 'stop_writers; ulogd_cleanup' EXIT

SECTORS=65536 # 32 MiB: 64 regions of 1024 sectors
MB=8          # written per pass

load_module
start_ulogd
make_legs 4 32
make_loop LOGDEV 4
LN=$(devnum "$LOGDEV")
CORE=dmlu-rs-core DISK=dmlu-rs-disk
LEGS_ALL=("${LEGS[@]}")
LEGS=("${LEGS_ALL[0]}" "${LEGS_ALL[1]}")
dmsetup create $CORE --table "$(mirror_table $SECTORS "dmlu-rs-core-1 clustered-core 1024 sync")"
LEGS=("${LEGS_ALL[2]}" "${LEGS_ALL[3]}")
dmsetup create $DISK --table "$(mirror_table $SECTORS "dmlu-rs-disk-1 clustered-disk $LN 1024 sync")"
LEGS=("${LEGS_ALL[@]}")
check "both mirrors in sync before the writes" eval "wait_sync $CORE 120 && wait_sync $DISK 120"

for f in A B; do
	dd if=/dev/urandom of="$WORK/data$f" bs=1M count=$MB status=none
done

# writer NAME: rewrites the first MB MiB of the mirror, alternating two
# data sets, until $WORK/NAME.stop exists; counts passes in NAME.passes and
# exits 1 at the first failed write.
writer() {
	local name=$1 pass=0 f
	while [ ! -e "$WORK/$name.stop" ]; do
		f=$WORK/data$([ $((pass % 2)) = 0 ] && echo A || echo B)
		if ! dd if="$f" of=/dev/mapper/"$name" bs=256k oflag=direct conv=fsync status=none \
			2>>"$WORK/$name.err"; then
			echo "pass $pass: dd failed" >>"$WORK/$name.err"
			return 1
		fi
		pass=$((pass + 1))
		echo "$pass $f" >"$WORK/$name.passes"
	done
}
passes() {
	local p
	p=$(cut -d' ' -f1 "$WORK/$1.passes" 2>/dev/null)
	echo "${p:-0}"
}
WRITERS=()
start_writers() {
	local n
	for n in $CORE $DISK; do
		rm -f "$WORK/$n.stop" "$WORK/$n.passes" "$WORK/$n.err"
		writer $n &
		WRITERS+=($!)
	done
}
# stop_writers: ask them to finish their pass; 0 if both exited 0.
stop_writers() {
	local pid rc=0
	touch "$WORK/$CORE.stop" "$WORK/$DISK.stop"
	for pid in "${WRITERS[@]}"; do wait "$pid" || rc=1; done
	WRITERS=()
	return $rc
}
# progressed NAME FROM SECONDS: NAME finished two passes after FROM (one
# wholly after the restart).
progressed() {
	local i
	for i in $(seq "$(($3 * 5))"); do
		[ "$(passes "$1")" -ge "$(($2 + 2))" ] && return 0
		sleep 0.2
	done
	echo "# $1: $(passes "$1") passes, expected $(($2 + 2)) within $3 s"
	return 1
}

mark_log
start_writers
check "writers running on both mirrors" eval "progressed $CORE 0 60 && progressed $DISK 0 60"

# Two crashes: restarted after 1 s, then after 6 s (the kernel keeps
# retrying meanwhile).
for down in 1 6; do
	c=$(passes $CORE) d=$(passes $DISK)
	kill_ulogd
	t0=$(date +%s)
	sleep $down
	check "server restarted after SIGKILL and ${down} s down" start_ulogd
	restarts=$((${restarts:-0} + 1))
	check "it restored both logs from their state files" \
		test "$(grep -c "2 restored, 0 unusable" "$ULOGD_LOG")" = $restarts
	check "both writers went on after the restart" \
		eval "progressed $CORE $c 90 && progressed $DISK $d 90"
	echo "# writes resumed $(($(date +%s) - t0)) s after the kill"
done

# How the kernel got through (our module's words; informational).
log_since_mark | grep -E 'server not found|reconnected|timed out' | sed 's/^/# kernel: /'
check "no writer saw an I/O error" stop_writers
same_as_last() {
	local n f
	for n in $CORE $DISK; do
		f=$(cut -d' ' -f2 "$WORK/$n.passes")
		cmp -n $((MB << 20)) "$f" /dev/mapper/$n >/dev/null || { echo "# $n differs from $f"; return 1; }
	done
}
check "each mirror holds what was last written" same_as_last
check "both mirrors end in sync" eval "wait_sync $CORE 120 && wait_sync $DISK 120"
check "legs of the core mirror identical" \
	eval 'LEGS=("${LEGS_ALL[0]}" "${LEGS_ALL[1]}"); legs_identical'
check "legs of the disk mirror identical" \
	eval 'LEGS=("${LEGS_ALL[2]}" "${LEGS_ALL[3]}"); legs_identical'
LEGS=("${LEGS_ALL[@]}")
check "legs and logs healthy: AA, '1 clustered-core', '3 clustered-disk $LN A'" eval "
	[ \"\$(health_of $CORE) \$(health_of $DISK)\" = 'AA AA' ] &&
	[ \"\$(log_status_of $CORE)\" = '1 clustered-core' ] &&
	[ \"\$(log_status_of $DISK)\" = '3 clustered-disk $LN A' ]"
no_mirror_errors() {
	! log_since_mark | grep -Ei 'raid1|region hash|I/O error|dirty log' | sed 's/^/# /' | grep .
}
check "no mirror or I/O error in the kernel log" no_mirror_errors

ktap_finished

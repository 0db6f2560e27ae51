#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# `make demo`, inside the guest: the product end to end, for a human to
# watch. Our Rust dm-log-userspace module is loaded, dm-ulogd serves the
# log, a device-mapper mirror over two loop devices is created with a
# `clustered-core 1024 sync` userspace log, written, resynced to 100% while
# we watch, checked (legs identical, data read back), and torn down.
# Exits non-zero at the first failure, saying where.

set -u
MODULE=${DMLU_MODULE:-/lib/modules/dmlu/rust/dm-log-userspace.ko}
WORK=/tmp/demo
NAME=demo-mirror
UUID=demo-mirror-0001
LEG_MB=256
export DM_DISABLE_UDEV=1

section() { printf '\n=== %s ===\n' "$*"; }
say() { printf '%s\n' "$*"; }
# run CMD...: echo the command, then run it; any failure ends the demo.
run() {
	printf '$ %s\n' "$*"
	"$@" || fail "'$*' exited $?"
}
fail() {
	printf '\nDEMO FAILED: %s\n' "$*"
	exit 1
}

ULOGD_PID=""
LEGS=()
teardown() {
	local rc=$?
	dmsetup remove $NAME 2>/dev/null
	[ -n "$ULOGD_PID" ] && kill "$ULOGD_PID" 2>/dev/null && wait "$ULOGD_PID" 2>/dev/null
	for dev in "${LEGS[@]}"; do losetup -d "$dev" 2>/dev/null; done
	grep -q '^dm_log_userspace ' /proc/modules && rmmod dm_log_userspace
	rm -rf "$WORK"
	exit $rc
}
trap teardown EXIT

mkdir -p "$WORK"
section "1. Load the Rust dm-log-userspace module"
run insmod "$MODULE"
say "kernel says: $(dmesg | grep 'dm_log_userspace: version' | tail -n1)"
run grep -E '^dmlogusr' /proc/net/connector

section "2. Start dm-ulogd, the userspace log server"
printf '$ dm-ulogd --timestamps &\n'
dm-ulogd --timestamps >"$WORK/ulogd.log" 2>&1 &
ULOGD_PID=$!
for _ in $(seq 50); do dm-ulogd stats >/dev/null 2>&1 && break; sleep 0.1; done
dm-ulogd stats >/dev/null 2>&1 || fail "dm-ulogd did not start: $(cat "$WORK/ulogd.log")"
say "server says: $(head -n1 "$WORK/ulogd.log")"

section "3. Two loop devices as the mirror's legs (${LEG_MB} MiB each)"
for i in 0 1; do
	run truncate -s ${LEG_MB}M "$WORK/leg$i"
	dev=$(losetup -f) || fail "no free loop device"
	run losetup "$dev" "$WORK/leg$i"
	LEGS+=("$dev")
done
say "leg 0 gets old contents, leg 1 stays blank: only a resync can make them equal"
run dd if=/dev/urandom of="${LEGS[0]}" bs=1M count=$LEG_MB oflag=direct status=none
say "and 32 MiB of new data to write through the mirror:"
run dd if=/dev/urandom of="$WORK/data" bs=1M count=32 status=none

section "4. Create the mirror with a userspace log: clustered-core 1024 sync"
sectors=$((LEG_MB * 2048))
table="0 $sectors mirror userspace 4 $UUID clustered-core 1024 sync 2 ${LEGS[0]} 0 ${LEGS[1]} 0 1 handle_errors"
run dmsetup create $NAME --table "$table"
run dmsetup table $NAME
run dmsetup status $NAME
say "(status: legs, regions in sync/total, health per leg, then the log's own status)"

section "5. Write 32 MiB through the mirror while the resync runs, and watch it"
printf '$ dd if=%s of=/dev/mapper/%s bs=1M seek=16 oflag=direct conv=fsync &\n' "$WORK/data" $NAME
dd if="$WORK/data" of=/dev/mapper/$NAME bs=1M seek=16 oflag=direct conv=fsync status=none &
writer=$!
now_ds() { local us=${EPOCHREALTIME/./}; echo $((us / 100000)); } # tenths of a second
start=$(now_ds)
last=""
while :; do
	s=$(dmsetup status $NAME | awk '{print $(5 + $4)}')
	[ -n "$s" ] || fail "no status for $NAME"
	done_=${s%/*} total=${s#*/}
	pct=$((done_ * 100 / total))
	if [ "$s" != "$last" ]; then
		bar=$(printf '%*s' $((pct / 5)) '' | tr ' ' '#')
		t=$(($(now_ds) - start))
		printf '  %3d.%d s  [%-20s] %3d%%  %s regions in sync\n' \
			$((t / 10)) $((t % 10)) "$bar" "$pct" "$s"
		last=$s
	fi
	[ "$done_" = "$total" ] && break
	[ $(($(now_ds) - start)) -gt 3000 ] && fail "resync stuck at $s after 300 s"
	sleep 0.2
done
wait $writer || fail "the write through the mirror failed"
say "resync complete; the write finished without error"
run dmsetup status $NAME

section "6. Verify"
sync
echo 3 >/proc/sys/vm/drop_caches
run cmp "${LEGS[0]}" "${LEGS[1]}"
say "legs identical: all ${LEG_MB} MiB"
run cmp -n $((32 << 20)) "$WORK/data" /dev/mapper/$NAME 0 $((16 << 20))
say "the 32 MiB written read back unchanged"

section "7. What the server did: dm-ulogd stats"
run dm-ulogd stats

section "8. Tear down"
run dmsetup remove $NAME
say "server log:"
sed 's/^/  /' "$WORK/ulogd.log"
run kill "$ULOGD_PID"
wait "$ULOGD_PID"
ULOGD_PID=""
for dev in "${LEGS[@]}"; do run losetup -d "$dev"; done
LEGS=()
run rmmod dm_log_userspace
say "kernel says: $(dmesg | grep 'dm_log_userspace: version' | tail -n1)"

printf '\nDEMO PASSED: a mirror with a userspace log served by dm-ulogd was created, written, resynced to 100%% with identical legs, and removed.\n'

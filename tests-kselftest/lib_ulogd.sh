#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Helpers for the tests that serve mirrors with dm-ulogd (tools/dm-ulogd):
# starting, killing and querying the server, extra loop devices (log
# devices), dm-delay legs that slow or stop a resync, the kernel disk log's
# on-disk format, and a teardown for all of it. Source after lib.sh and
# `trap ulogd_cleanup EXIT`.

# The server the tests run: private state directory, log file (one per
# test: the tests count lines in it).
ULOGD_STATE=${ULOGD_STATE:-$WORK/ulogd-state}
ULOGD_LOG=${ULOGD_LOG:-$WORK/ulogd.log}
ULOGD_PID=""
: >"$ULOGD_LOG"

ulogd_running() { [ -n "$ULOGD_PID" ] && kill -0 "$ULOGD_PID" 2>/dev/null; }

# start_ulogd [dm-ulogd options]: start the server in the background and
# wait until it answers on its control socket (its netlink socket is open
# and its state files are loaded by then).
start_ulogd() {
	local i
	mkdir -p "$ULOGD_STATE"
	echo "--- start $(date +%T) $*" >>"$ULOGD_LOG"
	dm-ulogd --state-dir "$ULOGD_STATE" "$@" >>"$ULOGD_LOG" 2>&1 &
	ULOGD_PID=$!
	for i in $(seq 100); do
		dm-ulogd stats --state-dir "$ULOGD_STATE" >/dev/null 2>&1 && return 0
		kill -0 "$ULOGD_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "# dm-ulogd did not come up; its log:"
	sed 's/^/# /' "$ULOGD_LOG" | tail -n 20
	return 1
}

# stop_ulogd: SIGTERM (the server commits and exits; logs stay in its
# state directory).
stop_ulogd() {
	[ -n "$ULOGD_PID" ] || return 0
	kill "$ULOGD_PID" 2>/dev/null
	wait "$ULOGD_PID" 2>/dev/null
	ULOGD_PID=""
}

# kill_ulogd: SIGKILL, as a crash would.
kill_ulogd() {
	[ -n "$ULOGD_PID" ] || return 1
	kill -9 "$ULOGD_PID" 2>/dev/null
	wait "$ULOGD_PID" 2>/dev/null
	echo "--- killed $(date +%T)" >>"$ULOGD_LOG"
	ULOGD_PID=""
}

# ulogd_stats: the running server's counters as one line of JSON.
ulogd_stats() { dm-ulogd stats --json --state-dir "$ULOGD_STATE"; }

# op_count JSON TYPE: requests of TYPE in the server's total counters
# (the first "by_type" object of the JSON is the total one).
op_count() {
	grep -o "\"$2\":{\"count\":[0-9]*" <<<"$1" | head -n1 | grep -o '[0-9]*$'
}

# json_num JSON KEY: the first number stored under "KEY".
json_num() {
	grep -o "\"$2\":[0-9.]*" <<<"$1" | head -n1 | cut -d: -f2
}

# ulogd_quiet SECONDS: wait (up to 60 s) until the server has had no request
# for SECONDS. The kernel flushes clears lazily 3 s after them, and a mirror
# with a flush pending cannot be suspended or removed while no server runs.
ulogd_quiet() {
	local last="" now n=0 end=$((SECONDS + 60))
	while [ "$SECONDS" -le "$end" ]; do
		now=$(json_num "$(ulogd_stats)" requests)
		if [ "$now" = "$last" ]; then
			n=$((n + 1))
			[ "$n" -ge "$1" ] && return 0
		else
			n=0 last=$now
		fi
		sleep 1
	done
	return 1
}

# ulogd_log_has PATTERN: the server's log matches PATTERN (ERE).
ulogd_log_has() { grep -Eq -- "$1" "$ULOGD_LOG"; }

# --- devices -----------------------------------------------------------------

LOOPS=()

# make_loop VAR SIZE_MB: a loop device over a zeroed file on tmpfs, its
# path stored in VAR.
make_loop() {
	local f dev
	f="$WORK/loop-$1"
	rm -f "$f"
	truncate -s "${2}M" "$f"
	dev=$(losetup -f) && losetup "$dev" "$f" || return 1
	LOOPS+=("$dev")
	printf -v "$1" '%s' "$dev"
}

free_loops() {
	local dev
	for dev in "${LOOPS[@]}"; do losetup -d "$dev" 2>/dev/null; done
	LOOPS=()
	rm -f "$WORK"/loop-*
}

# devnum DEV: "major:minor" of a block device.
devnum() {
	local t
	t=$(stat -L -c '%t %T' "$1") || return 1
	set -- $t
	echo "$((0x$1)):$((0x$2))"
}

sectors_of() { blockdev --getsz "$1"; }

# make_delay NAME DEV MS: a dm-delay device over DEV whose writes take MS
# milliseconds (reads are not delayed): a leg that slows the resync down.
make_delay() {
	dmsetup create "$1" --table "$(delay_table "$2" "$3")"
}
delay_table() { echo "0 $(sectors_of "$1") delay $1 0 0 $1 0 $2"; }

# set_delay NAME DEV MS: give the delay device another write delay (I/O
# queued while it was suspended goes through the new table).
set_delay() {
	dmsetup reload "$1" --table "$(delay_table "$2" "$3")" && dmsetup resume "$1"
}

# mirror_line SECTORS "LOG TYPE, COUNT AND ARGS" [features]: a mirror table
# with any log, e.g. "disk 2 /dev/loop2 1024" or
# "userspace 5 uuid clustered-disk 7:2 1024 sync", over MLEGS if set (e.g.
# a delay device over a leg), else over LEGS.
MLEGS=()
mirror_line() {
	local legs="" dev devs=("${LEGS[@]}")
	[ ${#MLEGS[@]} -gt 0 ] && devs=("${MLEGS[@]}")
	for dev in "${devs[@]}"; do legs="$legs $dev 0"; done
	echo "0 $1 mirror $2 ${#devs[@]}$legs ${3:-1 handle_errors}"
}

# in_sync_of NAME / total_of NAME: the two halves of the mirror's sync ratio.
in_sync_of() { local s; s=$(sync_of "$1") && echo "${s%/*}"; }
total_of() { local s; s=$(sync_of "$1") && echo "${s#*/}"; }

# A mirror status line: <start> <len> mirror <#legs> <legs...> <in sync>/<total>
# 1 <health chars> <log status...>.
# log_status_of NAME: the log's part, e.g. "1 clustered-core".
log_status_of() {
	dmsetup status "$1" | awk '{for (i = 8 + $4; i <= NF; i++) printf "%s%s", $i, (i < NF ? " " : "\n")}'
}

# health_of NAME: the legs' health characters, e.g. "AA".
health_of() { dmsetup status "$1" | awk '{print $(7 + $4)}'; }

# wait_in_sync_at_least NAME N SECONDS: wait until N regions are in sync.
wait_in_sync_at_least() {
	local n end=$((SECONDS + $3))
	while [ "$SECONDS" -le "$end" ]; do
		n=$(in_sync_of "$1")
		[ -n "$n" ] && [ "$n" -ge "$2" ] && return 0
		sleep 0.2
	done
	echo "# $1: fewer than $2 regions in sync after $3 s: $(dmsetup status "$1")"
	return 1
}

# --- the kernel disk log's on-disk format (drivers/md/dm-log.c) -------------

MIRROR_MAGIC=1298748018 # 0x4D695272, "MiRr"

# disk_header DEV: "magic version nr_regions" of a log device.
disk_header() {
	local mv nr
	mv=$(dd if="$1" bs=4096 count=1 iflag=direct status=none | od -An -tu4 -N8) || return 1
	nr=$(dd if="$1" bs=4096 count=1 iflag=direct status=none | od -An -tu8 -j8 -N8) || return 1
	echo $mv $nr
}

# disk_clean_count DEV REGIONS: how many of the first REGIONS regions the
# log device's clean bitmap (at byte 1024, bit i of byte i/8) calls clean.
disk_clean_count() {
	dd if="$1" bs=4096 count=$(((1024 + ($2 + 7) / 8 + 4095) / 4096)) iflag=direct status=none |
		od -An -tu1 -v -j1024 -N$((($2 + 7) / 8)) |
		awk -v n="$2" '{for (i = 1; i <= NF; i++) { v = $i
			for (b = 0; b < 8; b++) { if (r < n && v % 2) c++; r++; v = int(v / 2) } } }
			END {print c + 0}'
}

# disk_region_clean DEV REGION: 1 if the log device calls REGION clean.
disk_region_clean() {
	dd if="$1" bs=4096 count=$(((1024 + $2 / 8 + 4096) / 4096)) iflag=direct status=none |
		od -An -tu1 -v -j$((1024 + $2 / 8)) -N1 |
		awk -v b=$(($2 % 8)) '{v = $1; for (i = 0; i < b; i++) v = int(v / 2); print v % 2}'
}

# --- teardown ------------------------------------------------------------------

# Tear down everything the dm-ulogd tests make: devices suspended by a test
# are resumed first (a mirror over a suspended leg cannot be removed), then
# mirrors, then the devices under them, the server, its state, the loops.
ulogd_cleanup() {
	local dm round
	if [ "${KTAP_CNT_FAIL:-0}" -gt 0 ]; then
		echo "# dm-ulogd's log (last 40 lines):"
		tail -n 40 "$ULOGD_LOG" | sed 's/^/#   /'
	fi
	# A mirror whose server is gone may be retrying a request: let it finish.
	if dmsetup table 2>/dev/null | grep -q ' mirror userspace ' && ! ulogd_running; then
		start_ulogd >/dev/null
	fi
	for dm in $(dmsetup ls 2>/dev/null | awk '/^dmlu/ {print $1}'); do
		dmsetup info "$dm" 2>/dev/null | grep -q SUSPENDED && dmsetup resume "$dm" 2>/dev/null
	done
	for round in 1 2 3; do
		for dm in $(dmsetup ls 2>/dev/null | awk '/^dmlu/ {print $1}'); do
			dmsetup remove "$dm" 2>/dev/null
		done
	done
	stop_ulogd
	cleanup_all
	free_loops
	rm -rf "$ULOGD_STATE"
}

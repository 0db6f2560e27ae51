#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Helpers of the stress kselftests (stress_*.sh): the short form by default
# (part of `make check`), the long form with DMLU_STRESS=1 (`make stress`).
# Source after lib.sh and `trap stress_cleanup EXIT`.
#
# Mirrors here have their own legs (several mirrors at once), are named
# dmlus-*, and are written by background writers that record every error.

STRESS=${DMLU_STRESS:-0}

# by_form SHORT LONG: the value for this run's form.
by_form() {
	if [ "$STRESS" = 1 ]; then echo "$2"; else echo "$1"; fi
}

# checkr "what it shows" command args...: check, returning the command's
# status (to print diagnostics after a failure).
checkr() {
	local what=$1
	shift
	if "$@"; then
		ktap_test_pass "$what"
	else
		ktap_test_fail "$what"
		return 1
	fi
}

# note TEXT: a KTAP diagnostic line (figures for the report).
note() { echo "# $*"; }

# now: seconds since boot, with decimals.
now() { cut -d' ' -f1 /proc/uptime; }

# lap TEXT: a diagnostic line with the seconds since the previous lap (or
# the start of the test): where the test spends its time.
LAP_T=$(now)
lap() {
	local t
	t=$(now)
	note "[$(awk -v a="$LAP_T" -v b="$t" 'BEGIN {printf "%.0f", b - a}')s] $*"
	LAP_T=$t
}

# rand N: a random number in 0..N-1.
rand() { echo $((RANDOM % $1)); }

# --- the server: our own dm-ulogd, with a private state directory ---------

SU_STATE=$WORK/stress-ulogd
SU_LOG=$WORK/stress-ulogd.log
SU_PID=""

su_start() {
	local i
	mkdir -p "$SU_STATE"
	echo "--- start $(now)" >>"$SU_LOG"
	dm-ulogd --state-dir "$SU_STATE" --no-mlock "$@" >>"$SU_LOG" 2>&1 &
	SU_PID=$!
	for i in $(seq 200); do
		dm-ulogd stats --state-dir "$SU_STATE" >/dev/null 2>&1 && return 0
		kill -0 "$SU_PID" 2>/dev/null || break
		sleep 0.1
	done
	note "dm-ulogd did not come up:"
	tail -n 20 "$SU_LOG" | sed 's/^/# /'
	return 1
}

su_stop() {
	[ -n "$SU_PID" ] || return 0
	kill "$SU_PID" 2>/dev/null
	wait "$SU_PID" 2>/dev/null
	SU_PID=""
}

su_kill() {
	[ -n "$SU_PID" ] || return 1
	kill -9 "$SU_PID" 2>/dev/null
	wait "$SU_PID" 2>/dev/null
	echo "--- SIGKILL $(now)" >>"$SU_LOG"
	SU_PID=""
}

su_alive() { [ -n "$SU_PID" ] && kill -0 "$SU_PID" 2>/dev/null; }

su_stats() { dm-ulogd stats --json --state-dir "$SU_STATE"; }

# json_first JSON KEY: the first number stored under "KEY".
json_first() {
	grep -o "\"$2\":[0-9.]*" <<<"$1" | head -n1 | cut -d: -f2
}

# --- mirrors over their own loop devices ------------------------------------

declare -A MLEGS=()

# new_loop FILE SIZE_MB: a loop device over a new file; prints its path.
new_loop() {
	local dev
	rm -f "$1"
	truncate -s "${2}M" "$1" || return 1
	dev=$(losetup -f) || return 1
	[ -b "$dev" ] || mknod "$dev" b 7 "${dev#/dev/loop}" || return 1
	losetup "$dev" "$1" || return 1
	echo "$dev"
}

# mirror_legs NAME SIZE_MB [NLEGS]: the legs (2) of mirror NAME, in MLEGS.
mirror_legs() {
	local name=$1 mb=$2 nlegs=${3:-2} devs="" dev i
	for i in $(seq 0 $((nlegs - 1))); do
		dev=$(new_loop "$WORK/$name.leg$i" "$mb") || return 1
		devs="$devs $dev"
	done
	MLEGS[$name]=${devs# }
}

# mirror_create NAME SIZE_MB REGION_SECTORS SYNC [FEATURES] [NLEGS]: a
# mirror of NLEGS (2) legs with a userspace log (clustered-core, uuid
# dmlus-NAME), SYNC being sync or nosync. Uses the legs of mirror_legs if
# it ran for NAME.
mirror_create() {
	local name=$1 mb=$2 region=$3 sync=$4 features=${5:-"2 handle_errors keep_log"}
	[ -n "${MLEGS[$name]:-}" ] || mirror_legs "$name" "$mb" "${6:-2}" || return 1
	dmsetup create "dmlus-$name" --table "$(mirror_table_of "$@")"
}

# mirror_table_of NAME SIZE_MB REGION SYNC [FEATURES]: the same table for a
# reload (new luid, same uuid and legs).
mirror_table_of() {
	local name=$1 mb=$2 region=$3 sync=$4 features=${5:-"2 handle_errors keep_log"}
	local legs="" dev n=0
	for dev in ${MLEGS[$name]}; do legs="$legs $dev 0"; n=$((n + 1)); done
	echo "0 $((mb * 2048)) mirror userspace 4 dmlus-$name clustered-core $region $sync $n$legs $features"
}

# mirror_remove NAME [nolegs]: remove the mirror and (unless nolegs) its legs.
mirror_remove() {
	dmsetup remove "dmlus-$1" || return 1
	[ "${2:-}" = nolegs ] || mirror_free_legs "$1"
}

mirror_free_legs() {
	local dev
	for dev in ${MLEGS[$1]}; do losetup -d "$dev" 2>/dev/null; done
	rm -f "$WORK/$1".leg*
	unset "MLEGS[$1]"
}

# mirror_sync NAME: "<in sync>/<total>".
mirror_sync() { sync_of "dmlus-$1"; }

# mirror_wait_sync NAME SECONDS [STALL]: wait until every region of NAME is
# in sync; give up after SECONDS, or once the sync count has not moved for
# STALL seconds (default 60).
mirror_wait_sync() {
	local name=$1 limit=$2 stall=${3:-60} s last="" since t
	t=$(date +%s)
	since=$t
	while :; do
		s=$(mirror_sync "$name")
		[ -n "$s" ] && [ "${s%/*}" = "${s#*/}" ] && return 0
		[ "$s" != "$last" ] && { last=$s; since=$(date +%s); }
		if [ $(($(date +%s) - t)) -ge "$limit" ] || [ $(($(date +%s) - since)) -ge "$stall" ]; then
			note "dmlus-$name not in sync after $(($(date +%s) - t))s, stuck at $s for $(($(date +%s) - since))s"
			return 1
		fi
		sleep 0.5
	done
}

# mirror_legs_identical NAME: every leg equals the first (read around the
# page cache).
mirror_legs_identical() {
	local first="" dev
	sync
	echo 3 >/proc/sys/vm/drop_caches
	for dev in ${MLEGS[$1]}; do
		if [ -z "$first" ]; then
			first=$dev
		elif ! cmp -s "$first" "$dev"; then
			note "dmlus-$1: $dev differs from $first: $(cmp "$first" "$dev" 2>&1 | head -n1)"
			return 1
		fi
	done
}

# mirror_health NAME: the health characters of the status line (AA...).
mirror_health() {
	dmsetup status "dmlus-$1" | awk '{print $(7 + $4)}'
}

# --- writers ------------------------------------------------------------------

# A writer is fio writing 4 to 64 KiB blocks of random data at random
# offsets of a mirror, O_DIRECT, 4 in flight, until writers_stop. fio stops
# at its first failed write and reports it ("err=", "io_u error").
declare -A WPID=()

# writer_start NAME [fio options]: writes to /dev/mapper/dmlus-NAME.
writer_start() {
	local name=$1
	shift
	rm -f "$WORK/writer.$name.out"
	fio --name="$name" --filename="/dev/mapper/dmlus-$name" --rw=randwrite \
		--bsrange=4k-64k --direct=1 --ioengine=libaio --iodepth=4 \
		--time_based --runtime=100000 --output="$WORK/writer.$name.out" "$@" \
		>"$WORK/writer.$name.log" 2>&1 &
	WPID[$name]=$!
}

# writer_count NAME: writes completed on dmlus-NAME since it was created.
writer_count() {
	local minor
	minor=$(dmsetup info -c --noheadings -o minor "dmlus-$1" 2>/dev/null) || { echo 0; return; }
	awk '{print $5}' "/sys/block/dm-${minor// /}/stat" 2>/dev/null || echo 0
}

# writers_stop: stop every writer and wait for it. A writer that had already
# ended (fio stops at an error) is reported.
writers_stop() {
	local name
	for name in "${!WPID[@]}"; do
		if ! kill -0 "${WPID[$name]}" 2>/dev/null; then
			echo "writer $name ended by itself" >>"$WORK/writer.$name.log"
		fi
		kill -INT "${WPID[$name]}" 2>/dev/null
	done
	for name in "${!WPID[@]}"; do wait "${WPID[$name]}" 2>/dev/null; done
	WPID=()
}

# checked_writer_start NAME: mirror-check writes /dev/mapper/dmlus-NAME
# (4 threads, runs of 1 to 16 blocks, never overlapping) until
# writers_stop, which has it store the last acknowledged write of every
# block in $WORK/NAME.journal, for legs_hold_acked.
checked_writer_start() {
	local name=$1
	rm -f "$WORK/writer.$name.out" "$WORK/$name.journal"
	mirror-check write "/dev/mapper/dmlus-$name" --journal "$WORK/$name.journal" \
		--seed "$RANDOM$RANDOM" >"$WORK/writer.$name.out" 2>"$WORK/writer.$name.log" &
	WPID[$name]=$!
}

# legs_hold_acked NAME: every leg of NAME holds the last acknowledged write
# of every block its checked writer wrote (and zeros where it wrote none).
legs_hold_acked() {
	local rc
	sync
	echo 3 >/proc/sys/vm/drop_caches
	# shellcheck disable=SC2086
	mirror-check verify --journal "$WORK/$1.journal" ${MLEGS[$1]} >"$WORK/verify.$1.out" 2>&1
	rc=$?
	sed "s/^/# $1: /" "$WORK/verify.$1.out"
	return $rc
}

# writer_errors: failed writes reported by the writers stopped so far.
writer_errors() {
	cat "$WORK"/writer.*.out "$WORK"/writer.*.log 2>/dev/null |
		grep -Ec 'err= *[1-9]|io_u error|Input/output error|ended by itself|^errors=[1-9]|mirror-check:'
}

# writer_error_lines: what they said, for the report.
writer_error_lines() {
	cat "$WORK"/writer.*.out "$WORK"/writer.*.log 2>/dev/null |
		grep -E 'err= *[1-9]|io_u error|Input/output error|ended by itself|^errors=[1-9]|mirror-check:' | head -n 5
}

# writes_total NAME...: writes completed on those mirrors.
writes_total() {
	local name t=0
	for name in "$@"; do t=$((t + $(writer_count "$name"))); done
	echo "$t"
}

# writers_progress SECONDS NAME...: each named mirror completes a write
# within SECONDS.
writers_progress() {
	local limit=$1 name i ok
	shift
	declare -A start=()
	for name in "$@"; do start[$name]=$(writer_count "$name"); done
	for i in $(seq $((limit * 5))); do
		ok=1
		for name in "$@"; do
			[ "$(writer_count "$name")" -gt "${start[$name]}" ] || ok=0
		done
		[ $ok = 1 ] && return 0
		sleep 0.2
	done
	for name in "$@"; do
		[ "$(writer_count "$name")" -gt "${start[$name]}" ] ||
			note "dmlus-$name completed no write in ${limit}s"
	done
	return 1
}

# --- the kernel log -------------------------------------------------------------

# kernel_says PATTERN: lines since mark_log matching PATTERN (ERE), counted.
kernel_says() { log_since_mark | grep -Ec -- "$1"; }

# The module's DTR lines since mark_log: "destroyed: ... N timeouts, N clears dropped".
dtr_sum() {
	# dtr_sum FIELD: sum of "<n> FIELD" over the DTR lines.
	log_since_mark | grep 'destroyed:' | grep -Eo "[0-9]+ $1" | awk '{s += $1} END {print s + 0}'
}

# ignored_counters: after rmmod, "unprivileged malformed unmatched" from the
# module's unload line.
ignored_counters() {
	dmesg | grep 'messages ignored:' | tail -n1 |
		sed -E 's/.*messages ignored: ([0-9]+) unprivileged, ([0-9]+) malformed, ([0-9]+) unmatched.*/\1 \2 \3/'
}

# Lines that mean a request failed in the module (a refused IN_SYNC or
# SET_REGION_SYNC is asked again, and says so).
REQUEST_FAILURES='flush failed|lazy flush failed|unable to send log request|failed to allocate memory to clear|failed: .*asking again'

stress_cleanup() {
	local name dm
	writers_stop
	# Twice: stacked devices (mirrors over dm-delay legs) go top first.
	for dm in $(dmsetup ls 2>/dev/null | awk '/^dmlus-/ {print $1}' | sort -r) \
		$(dmsetup ls 2>/dev/null | awk '/^dmlus-/ {print $1}' | sort -r); do
		dmsetup resume "$dm" 2>/dev/null
		dmsetup remove "$dm" 2>/dev/null
	done
	for dm in $(dmsetup ls 2>/dev/null | awk '/^dmlus-/ {print $1}'); do
		dmsetup remove --force "$dm" 2>/dev/null
	done
	for name in "${!MLEGS[@]}"; do
		for dev in ${MLEGS[$name]}; do losetup -d "$dev" 2>/dev/null; done
	done
	MLEGS=()
	su_stop
	stop_test_server
	rm -rf "$WORK"/*.leg* "$SU_STATE"
	unload_module
}

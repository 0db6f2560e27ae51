#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# `make bench`, inside the guest (perf kernel): the same workloads on five
# systems in one boot, on the same legs, served by the same dm-ulogd:
#   rust    mirror, userspace log, our module        (clustered-core)
#   c       mirror, userspace log, the in-tree C module (clustered-core)
#   core    mirror, kernel core log
#   disk    mirror, kernel disk log
#   linear  dm-linear on one leg: the ceiling
# The two userspace-log modules register the same log type and connector
# id, so the one a system needs is swapped in (rmmod, insmod) just before.
# Systems are rotated from one round to the next, so that drift in the
# emulator's speed hits all of them alike.
#
# Each measurement prints one line `DMLU-BENCH {json}`; scripts/bench-report.py
# turns them into the tables. Lines starting with `#` are progress for humans.
#
# Environment (defaults in brackets):
#   DMLU_BENCH_RUNS [3]          rounds (the report takes medians)
#   DMLU_BENCH_RUNTIME [10]      fio seconds per run, after DMLU_BENCH_RAMP [2]
#   DMLU_BENCH_TESTS             comma-separated, of rand-qd<N>-j<N> and seq-1m
#                                [rand-qd1-j1,rand-qd1-j4,rand-qd8-j4,seq-1m]
#   DMLU_BENCH_SYSTEMS [rust,c,core,disk,linear]
#   DMLU_BENCH_LEG_MB [256]      legs of the fio mirrors
#   DMLU_BENCH_RESYNC_MB [1024]  legs of the resync mirror (0: no resync test)
#   DMLU_BENCH_RESYNC_RUNS [RUNS]

set -u
RUST_KO=${DMLU_MODULE:-/lib/modules/dmlu/rust/dm-log-userspace.ko}
C_KO=${DMLU_C_MODULE:-/lib/modules/dmlu/c/dm-log-userspace.ko}
RUNS=${DMLU_BENCH_RUNS:-3}
RUNTIME=${DMLU_BENCH_RUNTIME:-10}
RAMP=${DMLU_BENCH_RAMP:-2}
TESTS=${DMLU_BENCH_TESTS:-rand-qd1-j1,rand-qd1-j4,rand-qd8-j4,seq-1m}
SYSTEMS=${DMLU_BENCH_SYSTEMS:-rust,c,core,disk,linear}
LEG_MB=${DMLU_BENCH_LEG_MB:-256}
RESYNC_MB=${DMLU_BENCH_RESYNC_MB:-1024}
RESYNC_RUNS=${DMLU_BENCH_RESYNC_RUNS:-$RUNS}
REGION=1024 # sectors, as the anchors in performance.md
WORK=/tmp/bench
ULOGD_STATE=$WORK/ulogd
export DM_DISABLE_UDEV=1

IFS=, read -r -a TEST_LIST <<<"$TESTS"
IFS=, read -r -a SYSTEM_LIST <<<"$SYSTEMS"

say() { printf '# %s\n' "$*"; }
fail() {
	printf 'BENCH FAILED: %s\n' "$*"
	exit 1
}
# emit JSON-FIELDS: one result line for the host (fields without braces).
emit() { printf 'DMLU-BENCH {%s}\n' "$1"; }

ULOGD_PID="" LOADED="" DEVS=()
teardown() {
	local rc=$? d
	for d in $(dmsetup ls 2>/dev/null | awk '/^bench-/ {print $1}'); do
		dmsetup remove "$d" 2>/dev/null
	done
	[ -n "$ULOGD_PID" ] && kill "$ULOGD_PID" 2>/dev/null && wait "$ULOGD_PID" 2>/dev/null
	for d in "${DEVS[@]}"; do losetup -d "$d" 2>/dev/null; done
	grep -q '^dm_log_userspace ' /proc/modules && rmmod dm_log_userspace
	rm -rf "$WORK"
	exit $rc
}
trap teardown EXIT

# use_module rust|c: the userspace-log module a system needs, swapped in.
use_module() {
	[ "$LOADED" = "$1" ] && return 0
	if grep -q '^dm_log_userspace ' /proc/modules; then
		rmmod dm_log_userspace || fail "rmmod dm_log_userspace ($LOADED)"
	fi
	case "$1" in
	rust) insmod "$RUST_KO" || fail "insmod $RUST_KO" ;;
	c) insmod "$C_KO" || fail "insmod $C_KO" ;;
	esac
	LOADED=$1
}

# attach_loop VAR FILE: VAR := a new loop device over FILE.
attach_loop() {
	local dev
	dev=$(losetup -f) || fail "no free loop device"
	losetup "$dev" "$2" || fail "losetup $dev $2"
	DEVS+=("$dev")
	printf -v "$1" '%s' "$dev"
}
# new_loop VAR FILE MB: the same over a new FILE on tmpfs, its pages
# allocated (every system then writes to the same, allocated, memory).
new_loop() {
	dd if=/dev/zero of="$2" bs=1M count="$3" status=none || fail "dd $2"
	attach_loop "$1" "$2"
}
free_loop() {
	local dev=$1 keep=() d
	losetup -d "$dev" || fail "losetup -d $dev"
	for d in "${DEVS[@]}"; do [ "$d" = "$dev" ] || keep+=("$d"); done
	DEVS=("${keep[@]}")
}

# table SYSTEM SECTORS sync|nosync LEG0 LEG1 LOGDEV UUID
table() {
	local sys=$1 sectors=$2 mode=$3 l0=$4 l1=$5 logdev=$6 uuid=$7
	local legs="2 $l0 0 $l1 0 1 handle_errors"
	case "$sys" in
	rust | c) echo "0 $sectors mirror userspace 4 $uuid clustered-core $REGION $mode $legs" ;;
	core) echo "0 $sectors mirror core 2 $REGION $mode $legs" ;;
	disk) echo "0 $sectors mirror disk 3 $logdev $REGION $mode $legs" ;;
	linear) echo "0 $sectors linear $l0 0" ;;
	*) fail "unknown system $sys" ;;
	esac
}

is_userspace() { [ "$1" = rust ] || [ "$1" = c ]; }

# writes_done NAME: writes completed by the dm device (field 5 of its stat).
writes_done() {
	local minor
	minor=$(dmsetup info -c --noheadings -o minor "$1") || return 1
	awk '{print $5}' "/sys/block/dm-$minor/stat"
}

ulogd() { dm-ulogd "$@" --state-dir "$ULOGD_STATE"; }
# ulogd_total: the server's total counters since the last reset, as JSON.
ulogd_total() {
	local s
	s=$(ulogd stats --json) || return 1
	s=${s#*\"total\":}
	echo "${s%%,\"logs\":*}"
}

# dtr_counters: the module's own counters from its last "destroyed" line,
# as JSON fields (only our module prints them).
dtr_counters() {
	dmesg | grep 'dm_log_userspace.*destroyed:' | tail -n1 |
		sed -n 's/.*destroyed: \([0-9]*\) requests in \([0-9]*\) round trips; \([0-9]*\) flushes in \([0-9]*\) round trips.*/"module":{"requests":\1,"round_trips":\2,"flushes":\3,"flush_round_trips":\4}/p'
}

# probe_ms: milliseconds of a fixed CPU-bound job. The emulator shares the
# host's cores with whatever else runs there; a probe far above the boot's
# usual one flags a run that was starved (the report counts them).
probe_ms() {
	local t0=${EPOCHREALTIME/./}
	dd if=/dev/zero of=/dev/null bs=64k count=2000 status=none
	echo $(((${EPOCHREALTIME/./} - t0) / 1000))
}

# fio_args TEST: the fio options of a workload.
fio_args() {
	local qd nj
	case "$1" in
	rand-qd*-j*)
		qd=${1#rand-qd} qd=${qd%%-*} nj=${1##*-j}
		echo "--rw=randwrite --bs=4k --iodepth=$qd --numjobs=$nj"
		;;
	seq-1m) echo "--rw=write --bs=1m --iodepth=1 --numjobs=1" ;;
	*) fail "unknown test $1" ;;
	esac
}

# measure TEST SYSTEM RUN: one fio run on a fresh mirror of SYSTEM.
SEQ=0
measure() {
	local test=$1 sys=$2 run=$3 name uuid w0 w1 p0 p1 out wr total="null" dtr=""
	SEQ=$((SEQ + 1))
	name=bench-$sys-$SEQ uuid=bench-$sys-$SEQ
	is_userspace "$sys" && use_module "$sys"
	dmsetup create "$name" --table "$(table "$sys" $((LEG_MB * 2048)) nosync "$LEG0" "$LEG1" "$LOGDEV" "$uuid")" ||
		fail "dmsetup create $name ($sys)"
	is_userspace "$sys" && { ulogd stats --reset >/dev/null || fail "dm-ulogd stats"; }
	p0=$(probe_ms)
	w0=$(writes_done "$name")
	out=$WORK/fio.json
	# shellcheck disable=SC2046 # fio_args is a list of options
	fio --name=bench --filename="/dev/mapper/$name" $(fio_args "$test") \
		--direct=1 --ioengine=libaio --group_reporting --time_based \
		--runtime="$RUNTIME" --ramp_time="$RAMP" --percentile_list=50:99 \
		--output-format=json --output="$out" >/dev/null 2>"$WORK/fio.err" ||
		fail "fio $test on $sys: $(head -c 500 "$WORK/fio.err")"
	w1=$(writes_done "$name")
	is_userspace "$sys" && total=$(ulogd_total)
	p1=$(probe_ms)
	dmsetup remove "$name" || fail "dmsetup remove $name"
	[ "$sys" = rust ] && dtr=$(dtr_counters)
	# The write statistics only: the job's "write" object, whitespace gone.
	wr=$(tr -d ' \n\t' <"$out")
	wr=${wr#*\"write\":}
	wr=${wr%%,\"trim\":*}
	emit "\"test\":\"$test\",\"system\":\"$sys\",\"run\":$run,\"writes\":$((w1 - w0)),\"probe_ms\":[$p0,$p1],\"fio\":$wr,\"ulogd\":$total${dtr:+,$dtr}"
	awk -v t="$test" -v s="$sys" -v r="$run" -v w="$wr" -v p="$p0/$p1" 'BEGIN {
		match(w, /"iops":[0-9.]+/); iops = substr(w, RSTART + 7, RLENGTH - 7)
		match(w, /"bw":[0-9]+/); bw = substr(w, RSTART + 5, RLENGTH - 5)
		match(w, /"99.000000":[0-9]+/); p99 = substr(w, RSTART + 12, RLENGTH - 12)
		printf "# %-12s run %s %-6s %8.0f IOPS %7.1f MiB/s  p99 %7.2f ms  (probe %s ms)\n", t, r, s, iops, bw / 1024, p99 / 1e6, p
	}'
}

# resync SYSTEM RUN: time from creating a `sync` mirror to 100% in sync.
resync() {
	local sys=$1 run=$2 name uuid l0 l1 p0 p1 start now s total="null" dtr="" secs
	SEQ=$((SEQ + 1))
	name=bench-$sys-$SEQ uuid=bench-$sys-$SEQ
	is_userspace "$sys" && use_module "$sys"
	# Fresh sparse legs: reading leg 0 allocates nothing, so the memory used
	# is one leg's size.
	truncate -s "${RESYNC_MB}M" "$WORK/rleg0" "$WORK/rleg1"
	attach_loop l0 "$WORK/rleg0"
	attach_loop l1 "$WORK/rleg1"
	is_userspace "$sys" && { ulogd stats --reset >/dev/null || fail "dm-ulogd stats"; }
	p0=$(probe_ms)
	start=${EPOCHREALTIME/./}
	dmsetup create "$name" --table "$(table "$sys" $((RESYNC_MB * 2048)) sync "$l0" "$l1" "$LOGDEV" "$uuid")" ||
		fail "dmsetup create $name ($sys)"
	while :; do
		s=$(dmsetup status "$name" | awk '{print $(5 + $4)}')
		now=${EPOCHREALTIME/./}
		[ -n "$s" ] && [ "${s%/*}" = "${s#*/}" ] && break
		[ $((now - start)) -gt 900000000 ] && fail "$sys: resync stuck at $s after 900 s"
		sleep 0.1
	done
	secs=$(awk -v us=$((now - start)) 'BEGIN {printf "%.2f", us / 1e6}')
	is_userspace "$sys" && total=$(ulogd_total)
	p1=$(probe_ms)
	dmsetup remove "$name" || fail "dmsetup remove $name"
	[ "$sys" = rust ] && dtr=$(dtr_counters)
	free_loop "$l0"
	free_loop "$l1"
	rm -f "$WORK/rleg0" "$WORK/rleg1"
	emit "\"test\":\"resync\",\"system\":\"$sys\",\"run\":$run,\"mib\":$RESYNC_MB,\"regions\":${s#*/},\"seconds\":$secs,\"probe_ms\":[$p0,$p1],\"ulogd\":$total${dtr:+,$dtr}"
	say "resync       run $run $(printf '%-6s' "$sys") ${RESYNC_MB} MiB in $secs s  (probe $p0/$p1 ms)"
}

# rotated N: SYSTEM_LIST rotated left by N.
rotated() {
	local n=${#SYSTEM_LIST[@]} i
	for ((i = 0; i < n; i++)); do echo "${SYSTEM_LIST[(i + $1) % n]}"; done
}

mkdir -p "$WORK" "$ULOGD_STATE"
cfg="\"runs\":$RUNS,\"runtime_s\":$RUNTIME,\"ramp_s\":$RAMP,\"leg_mib\":$LEG_MB,\"resync_mib\":$RESYNC_MB"
cfg="$cfg,\"region_sectors\":$REGION,\"kernel\":\"$(uname -r)\",\"cpus\":$(nproc)"
cfg="$cfg,\"mem_mib\":$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo),\"fio\":\"$(fio --version)\""
emit "\"config\":{$cfg}"

dm-ulogd --state-dir "$ULOGD_STATE" >"$WORK/ulogd.log" 2>&1 &
ULOGD_PID=$!
for _ in $(seq 50); do ulogd stats >/dev/null 2>&1 && break; sleep 0.1; done
ulogd stats >/dev/null 2>&1 || fail "dm-ulogd did not start: $(cat "$WORK/ulogd.log")"

LEG0="" LEG1="" LOGDEV=""
new_loop LEG0 "$WORK/leg0" "$LEG_MB"
new_loop LEG1 "$WORK/leg1" "$LEG_MB"
new_loop LOGDEV "$WORK/logdev" 4

say "systems: ${SYSTEM_LIST[*]}; tests: ${TEST_LIST[*]}; $RUNS runs of ${RAMP}+${RUNTIME} s"
for ((run = 1; run <= RUNS; run++)); do
	for ((t = 0; t < ${#TEST_LIST[@]}; t++)); do
		for sys in $(rotated $(((run - 1) * ${#TEST_LIST[@]} + t))); do
			measure "${TEST_LIST[t]}" "$sys" "$run"
		done
	done
done

free_loop "$LEG0"
free_loop "$LEG1"
rm -f "$WORK/leg0" "$WORK/leg1"
if [ "$RESYNC_MB" -gt 0 ]; then
	mirrored=()
	for sys in "${SYSTEM_LIST[@]}"; do [ "$sys" = linear ] || mirrored+=("$sys"); done
	SYSTEM_LIST=("${mirrored[@]}")
	for ((run = 1; run <= RESYNC_RUNS; run++)); do
		for sys in $(rotated $((run - 1))); do resync "$sys" "$run"; done
	done
fi
emit "\"done\":true"

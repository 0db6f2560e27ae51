#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Helpers shared by the dm-log-userspace kselftests: KTAP output, loading
# the module, mirrors over loop devices, and the kernel log.

DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The programs installed with the tests come first.
PATH=$DIR:$PATH
. "$DIR/../kselftest/ktap_helpers.sh"

# Our module; the in-tree C module it replaces, for comparisons.
DMLU_MODULE=${DMLU_MODULE:-/lib/modules/dmlu/rust/dm-log-userspace.ko}
DMLU_C_MODULE=${DMLU_C_MODULE:-/lib/modules/dmlu/c/dm-log-userspace.ko}
export DM_DISABLE_UDEV=1

# Skip the whole test unless we are root with what the tests need; then
# start from a clean machine.
require_env() {
	local p
	[ "$(id -u)" = 0 ] || { ktap_skip_all "must run as root"; exit "$KSFT_SKIP"; }
	[ -f "$DMLU_MODULE" ] || { ktap_skip_all "no module at $DMLU_MODULE"; exit "$KSFT_SKIP"; }
	for p in "$@"; do
		command -v "$p" >/dev/null || { ktap_skip_all "$p not found"; exit "$KSFT_SKIP"; }
	done
	fresh_start
}

# What an earlier test killed at its timeout may have left: servers, test
# mirrors (top devices first), loop devices over test files, a module
# (maybe the C one). Each test starts without them.
fresh_start() {
	local dm i
	killall -q ulog-test-server dm-ulogd mirror-check fio corosync
	killall -q -9 cmirrord syslogd
	for i in 1 2 3; do
		for dm in $(dmsetup ls 2>/dev/null | awk '/^dmlu/ {print $1}' | sort -r); do
			dmsetup resume "$dm" 2>/dev/null
			dmsetup remove "$dm" 2>/dev/null || [ "$i" -lt 3 ] || dmsetup remove --force "$dm" 2>/dev/null
		done
	done
	losetup -a 2>/dev/null | grep -F "$WORK/" | cut -d: -f1 | while read -r dev; do
		losetup -d "$dev" 2>/dev/null
	done
	unload_module
}

# Run a check: `check "what it shows" command args...`.
check() {
	local what=$1; shift
	if "$@"; then
		ktap_test_pass "$what"
	else
		ktap_test_fail "$what"
	fi
}

module_loaded() {
	grep -q '^dm_log_userspace ' /proc/modules
}

load_module() {
	module_loaded || insmod "$DMLU_MODULE"
}

unload_module() {
	! module_loaded || rmmod dm_log_userspace
}

# The kernel log since `mark_log` was called, found by a marker line written
# to /dev/kmsg: a line count breaks once the ring buffer wraps, which a run
# of every test (KUnit output, fault injection reports) makes it do. With
# the marker gone too, the whole log.
mark_log() {
	LOG_MARK="dmlu-mark-$RANDOM$RANDOM"
	echo "$LOG_MARK" >/dev/kmsg
}
log_since_mark() {
	if [ -n "${LOG_MARK:-}" ] && dmesg | grep -q "$LOG_MARK"; then
		dmesg | sed -n "/$LOG_MARK/,\$p"
	else
		dmesg
	fi
}

# kmemleak. `leaks_reset` sets aside what it found before the test (after
# a scan, so that nothing older is reported later); `leak_check WHAT` is
# one KTAP result: after two scans, any unreferenced object fails it, its
# report shown. A scan or a report that fails is a failure; a kernel
# without kmemleak gets a SKIP, never a pass.
KMEMLEAK=/sys/kernel/debug/kmemleak
leaks_reset() {
	[ -e "$KMEMLEAK" ] || return 0
	echo scan >"$KMEMLEAK" && echo clear >"$KMEMLEAK"
}
leak_check() {
	local report leaks
	if [ ! -e "$KMEMLEAK" ]; then
		ktap_test_skip "$1 (this kernel has no kmemleak)"
		return
	fi
	# An object is reported once it is 5 s old and two scans found no
	# reference to it.
	sleep 6
	if ! { echo scan >"$KMEMLEAK" && sleep 1 && echo scan >"$KMEMLEAK" && report=$(cat "$KMEMLEAK"); }; then
		ktap_test_fail "$1 (kmemleak could not scan or report)"
		return
	fi
	leaks=$(grep -c 'unreferenced object' <<<"$report")
	if [ "$leaks" = 0 ]; then
		ktap_test_pass "$1"
	else
		ktap_test_fail "$1 ($leaks unreferenced objects)"
		head -n 40 <<<"$report" | sed 's/^/# kmemleak: /'
	fi
}

# --- mirrors over loop devices -------------------------------------------

WORK=${WORK:-/tmp/dmlu-test}
mkdir -p "$WORK"
LEGS=()

# make_legs N SIZE_MB: N loop devices over files on tmpfs, in LEGS.
make_legs() {
	local i dev
	LEGS=()
	for i in $(seq 0 $(($1 - 1))); do
		rm -f "$WORK/leg$i"
		truncate -s "${2}M" "$WORK/leg$i"
		dev=$(losetup -f)
		losetup "$dev" "$WORK/leg$i" || return 1
		LEGS+=("$dev")
	done
}

free_legs() {
	local dev
	for dev in "${LEGS[@]}"; do losetup -d "$dev" 2>/dev/null; done
	LEGS=()
	rm -f "$WORK"/leg*
}

# mirror_table SECTORS "LOG ARGS" [features]: a mirror table over LEGS with
# a userspace log whose arguments are LOG ARGS (uuid first).
mirror_table() {
	local sectors=$1 logargs=$2 features=${3:-"1 handle_errors"} legs="" dev
	local n
	n=$(wc -w <<<"$logargs")
	for dev in "${LEGS[@]}"; do legs="$legs $dev 0"; done
	echo "0 $sectors mirror userspace $n $logargs ${#LEGS[@]}$legs $features"
}

# sync_of NAME: "<in sync>/<total>" from the mirror status line.
sync_of() {
	dmsetup status "$1" | awk '{print $(5 + $4)}'
}

# wait_sync NAME SECONDS: wait until every region is in sync.
wait_sync() {
	local s end=$((SECONDS + $2))
	# By the clock: each status costs requests, slow under TCG.
	while [ "$SECONDS" -le "$end" ]; do
		s=$(sync_of "$1")
		[ -n "$s" ] && [ "${s%/*}" = "${s#*/}" ] && return 0
		sleep 0.2
	done
	echo "# $1 not in sync after $2 s: $(dmsetup status "$1")"
	return 1
}

# legs_identical [BYTES]: the legs hold the same data (read around caches).
legs_identical() {
	local bytes=${1:-} first=${LEGS[0]} dev
	sync
	echo 3 >/proc/sys/vm/drop_caches
	for dev in "${LEGS[@]:1}"; do
		if [ -n "$bytes" ]; then
			cmp -n "$bytes" "$first" "$dev" >/dev/null || return 1
		else
			cmp "$first" "$dev" >/dev/null || return 1
		fi
	done
}

# --- the test server -------------------------------------------------------

TS_PID=""
TRACE=$WORK/trace

# start_test_server [ulog-test-server options]: start it, tracing to TRACE.
start_test_server() {
	rm -f "$WORK/ts.ready"
	ulog-test-server --ready "$WORK/ts.ready" --trace "$TRACE" "$@" 2>>"$WORK/ts.err" &
	TS_PID=$!
	wait_for_file "$WORK/ts.ready" 5
}

stop_test_server() {
	[ -n "$TS_PID" ] || return 0
	kill "$TS_PID" 2>/dev/null
	wait "$TS_PID" 2>/dev/null
	TS_PID=""
}

# eventually SECONDS command [args...]: wait, by the clock, until the
# command succeeds; fails after SECONDS. Tests wait on conditions, never on
# a sleep sized for a fast machine.
eventually() {
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.2
	done
}

wait_for_file() {
	local i
	for i in $(seq "$(($2 * 10))"); do
		[ -e "$1" ] && return 0
		sleep 0.1
	done
	return 1
}

# trace_types LUID: the request types the server saw for LUID, one a line.
trace_types() {
	awk -v l="luid=$1" '$3 == l {sub("type=", "", $4); print $4}' "$TRACE"
}

# luid_of_ctr PATTERN: the luid of the CTR whose string matches PATTERN.
luid_of_ctr() {
	grep "type=CTR" "$TRACE" | grep -- "$1" | tail -n1 | awk '{sub("luid=", "", $3); print $3}'
}

# Tear down whatever a test left: mirrors, servers, legs, the module.
cleanup_all() {
	local dm
	for dm in $(dmsetup ls 2>/dev/null | awk '/^dmlu/ {print $1}'); do
		dmsetup remove --force "$dm" 2>/dev/null
	done
	stop_test_server
	killall -q dm-ulogd
	free_legs
	unload_module
}

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Helpers shared by the dm-log-userspace kselftests: KTAP output, loading
# the module, mirrors over loop devices, and the kernel log.

DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$DIR/../kselftest/ktap_helpers.sh"

# Our module; the in-tree C module it replaces, for comparisons.
DMLU_MODULE=${DMLU_MODULE:-/lib/modules/dmlu/rust/dm-log-userspace.ko}
DMLU_C_MODULE=${DMLU_C_MODULE:-/lib/modules/dmlu/c/dm-log-userspace.ko}
export DM_DISABLE_UDEV=1

# Skip the whole test unless we are root with what the tests need.
require_env() {
	local p
	[ "$(id -u)" = 0 ] || { ktap_skip_all "must run as root"; exit "$KSFT_SKIP"; }
	[ -f "$DMLU_MODULE" ] || { ktap_skip_all "no module at $DMLU_MODULE"; exit "$KSFT_SKIP"; }
	for p in "$@"; do
		command -v "$p" >/dev/null || { ktap_skip_all "$p not found"; exit "$KSFT_SKIP"; }
	done
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

# The kernel log since `mark_log` was called.
mark_log() {
	LOG_MARK=$(dmesg | wc -l)
}
log_since_mark() {
	dmesg | tail -n +"$((${LOG_MARK:-0} + 1))"
}

# Forget what kmemleak found so far; `leaks_since` reports new leaks.
leaks_reset() {
	[ -w /sys/kernel/debug/kmemleak ] || return 0
	echo scan >/sys/kernel/debug/kmemleak
	echo clear >/sys/kernel/debug/kmemleak
}
leaks_found() {
	[ -r /sys/kernel/debug/kmemleak ] || return 1
	# kmemleak only reports objects older than a few seconds, seen twice.
	sleep 6
	echo scan >/sys/kernel/debug/kmemleak
	echo scan >/sys/kernel/debug/kmemleak
	cat /sys/kernel/debug/kmemleak | grep -q 'unreferenced object'
}

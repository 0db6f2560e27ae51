#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# In the guest, for scripts/mutants.sh: runs kselftests against the modules
# in /extra (shipped by rootfs.sh from DMLU_GUEST_EXTRA). /extra/plan has a
# line per module: NAME TEST[,TEST...]; NAME.ko is the module. The line
# named "original" (the unmutated module) comes first when present: every
# test must pass on it, or nothing else runs. For every other module its
# tests run in order until one fails (a "not ok", a nonzero exit, a kernel
# splat, or the time limit): that test killed it. A test stops at its first
# "not ok". Results, one line each, for the host:
#   DMLU-MUTANT-ORIGINAL TEST pass|fail SECONDS
#   DMLU-MUTANT-START NAME
#   DMLU-MUTANT NAME killed|survived TEST|- SECONDS [first failure]
#   DMLU-MUTANT-POISONED NAME     (the module could not be unloaded: the
#                                  host boots again for the rest)
# /extra/limits may give "TEST SECONDS": each test's limit for a mutant
# (else twice the original's time plus 60 s, or 900 s).

cd /kselftest/dm-log-userspace || exit 1
set -m
. ./lib.sh
SPLATS=/usr/libexec/dmlu/splat-patterns
declare -A LIMIT
if [ -f /extra/limits ]; then
	while read -r t s; do LIMIT[$t]=$s; done </extra/limits
fi

# Kills the test's process group: TERM (its EXIT trap cleans up), then KILL.
stop_group() {
	local i
	kill -TERM -- "-$1" 2>/dev/null
	for i in $(seq 20); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.5
	done
	kill -KILL -- "-$1" 2>/dev/null
}

# run_test KO TEST LIMIT: sets VERDICT (pass, fail, splat, timeout), WHY
# (the first failure) and SECS.
run_test() {
	local ko=$1 t=$2 limit=$3 pid start log=/tmp/mutant-test.log rc mark
	mark="dmlu-mutant-$RANDOM$RANDOM"
	echo "$mark" >/dev/kmsg
	start=$SECONDS
	# Job control (set -m below) gives the test a process group of its own.
	DMLU_MODULE=$ko "./$t" >"$log" 2>&1 </dev/null &
	pid=$!
	VERDICT=""
	while kill -0 "$pid" 2>/dev/null; do
		if grep -aq '^not ok ' "$log"; then
			VERDICT=fail
			stop_group "$pid"
			break
		fi
		if [ $((SECONDS - start)) -ge "$limit" ]; then
			VERDICT=timeout
			stop_group "$pid"
			break
		fi
		sleep 1
	done
	wait "$pid"
	rc=$?
	SECS=$((SECONDS - start))
	WHY=$(grep -a -m1 '^not ok ' "$log" || true)
	if [ -z "$VERDICT" ]; then
		if [ "$rc" != 0 ] || [ -n "$WHY" ]; then VERDICT=fail; else VERDICT=pass; fi
		[ -n "$WHY" ] || WHY="exit $rc"
	fi
	[ "$VERDICT" = timeout ] && WHY="no result within ${limit}s"
	if dmesg | sed -n "/$mark/,\$p" | grep -a -q -F -f "$SPLATS"; then
		VERDICT=splat
		WHY="kernel splat: $(dmesg | sed -n "/$mark/,\$p" | grep -a -m1 -F -f "$SPLATS")"
	fi
	WHY=$(tr -s '\t\n' '  ' <<<"$WHY")
	if [ "$VERDICT" != pass ]; then
		sed 's/^/# | /' "$log" | tail -n 15
	fi
}

# Leaves no mirror, server or module behind; false if the module stays.
clean_up() {
	timeout 120 bash -c '. ./lib.sh; fresh_start' >/dev/null 2>&1
	! module_loaded || rmmod dm_log_userspace 2>/dev/null
	! module_loaded
}

while read -r name tests; do
	[ -n "$name" ] || continue
	ko=/extra/$name.ko
	if [ "$name" = original ]; then
		for t in ${tests//,/ }; do
			run_test "$ko" "$t" 1800
			echo "DMLU-MUTANT-ORIGINAL $t $VERDICT $SECS $WHY"
			[ "$VERDICT" = pass ] || exit 1
			LIMIT[$t]=${LIMIT[$t]:-$((2 * SECS + 60))}
			clean_up || { echo "DMLU-MUTANT-POISONED original"; exit 1; }
		done
		continue
	fi
	echo "DMLU-MUTANT-START $name"
	killed="" total=0
	for t in ${tests//,/ }; do
		run_test "$ko" "$t" "${LIMIT[$t]:-900}"
		total=$((total + SECS))
		clean_up || { echo "DMLU-MUTANT $name killed $t $total $VERDICT: $WHY"; echo "DMLU-MUTANT-POISONED $name"; exit 0; }
		if [ "$VERDICT" != pass ]; then
			killed=$t
			break
		fi
	done
	if [ -n "$killed" ]; then
		echo "DMLU-MUTANT $name killed $killed $total $VERDICT: $WHY"
	else
		echo "DMLU-MUTANT $name survived - $total"
	fi
done </extra/plan
echo "DMLU-MUTANT-END"

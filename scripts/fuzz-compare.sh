#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make fuzz-compare`: our module and the in-tree C module through the same
# hostile-reply fuzzing (tests-kselftest/stress_fuzz.sh, same seed), each in
# its own boot of the debug kernel (KASAN), and a table of what it cost
# each: KASAN reports, writes failed, request failures logged, leg blocks
# that do not hold the last acknowledged write, the mirrors' final health.
# The C module is expected to fail the test's checks; this prints figures,
# and fails only when our module's run fails.
#
# Usage: scripts/fuzz-compare.sh [--series 6.12] [--long] [--seed N]
. "$(dirname "$0")/lib.sh"

series=$KERNEL_SERIES stress=0 seed=$RANDOM$RANDOM
while [ $# -gt 0 ]; do
	case "$1" in
	--series) series=$2; shift ;;
	--long) stress=1 ;;
	--seed) seed=$2; shift ;;
	-h|--help) sed -n '3,13p' "$0"; exit 0 ;;
	*) die "unknown option $1 (see --help)" ;;
	esac
	shift
done
out="$TOP/out/fuzz-compare"
mkdir -p "$out"

# figures DIR NAME: one table row from a run's KTAP and kernel log.
figures() {
	local line kasan
	line=$(grep -a '# fuzz figures:' "$1/ktap.log" | tail -n1)
	kasan=$(grep -ac 'BUG: KASAN' "$1/console.log" || true)
	fig() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line "; }
	printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$2" "$(fig messages)" "$kasan" \
		"$(fig writer_errors)" "$(fig failure_lines)" "$(fig resent)" "$(fig leg_mismatches)"
}

rows=()
rc=0
for m in ours c; do
	module=/lib/modules/dmlu/rust/dm-log-userspace.ko
	[ "$m" = c ] && module=/lib/modules/dmlu/c/dm-log-userspace.ko
	log "stress_fuzz.sh with the $m module (seed $seed)"
	if ! "$TOP/scripts/guest.sh" --flavour debug --series "$series" --tests stress_fuzz.sh \
		--env "DMLU_MODULE=$module" --env "DMLU_FUZZ_SEED=$seed" --env "DMLU_STRESS=$stress" \
		--out "$out/$m" >"$out/$m.log" 2>&1; then
		[ "$m" = ours ] && rc=1
	fi
	rows+=("$(figures "$out/$m" "$m")")
done

{
	echo "stress_fuzz.sh on the $series debug kernel (KASAN), seed $seed, $([ "$stress" = 1 ] && echo long || echo short) form:"
	echo
	echo '| module | hostile messages | KASAN reports | writes failed | request failures logged | requests resent | leg blocks not holding the last acknowledged write |'
	echo '|---|---:|---:|---:|---:|---:|---:|'
	printf '%s\n' "${rows[@]}"
} | tee "$out/figures.md"
[ "$rc" = 0 ] || die "our module failed stress_fuzz.sh (see $out/ours.log)"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make bench`: boot the perf kernel once in QEMU, run scripts/guest/bench.sh
# there (our module, the in-tree C module, the core and disk logs and
# dm-linear, on the same legs, rotated, repeated), and render the results
# as out/bench/bench.md, bench.json and bench.png. Prints figures; fails
# only if the run itself fails.
#
# Environment: DMLU_BENCH_RUNS, DMLU_BENCH_RUNTIME, DMLU_BENCH_RAMP,
# DMLU_BENCH_TESTS, DMLU_BENCH_SYSTEMS, DMLU_BENCH_LEG_MB,
# DMLU_BENCH_RESYNC_MB, DMLU_BENCH_RESYNC_RUNS are passed to the guest (see
# scripts/guest/bench.sh); DMLU_BENCH_QUICK=1 is a short run for development
# (1 round of 1+3 s, 256 MiB resync). DMLU_BENCH_OUT (out/bench) is where
# results go.
. "$(dirname "$0")/lib.sh"

out=${DMLU_BENCH_OUT:-$TOP/out/bench}
if [ "${DMLU_BENCH_QUICK:-0}" = 1 ]; then
	: "${DMLU_BENCH_RUNS:=1}" "${DMLU_BENCH_RUNTIME:=3}" "${DMLU_BENCH_RAMP:=1}"
	: "${DMLU_BENCH_RESYNC_MB:=256}"
fi
envs=()
for v in RUNS RUNTIME RAMP TESTS SYSTEMS LEG_MB RESYNC_MB RESYNC_RUNS; do
	name=DMLU_BENCH_$v
	[ -n "${!name:-}" ] && envs+=(--env "$name=${!name}")
done

# A generous wall-clock limit from the amount of work: under TCG on a busy
# machine a run can take twice its nominal time.
runs=${DMLU_BENCH_RUNS:-3} runtime=${DMLU_BENCH_RUNTIME:-10} ramp=${DMLU_BENCH_RAMP:-2}
tests=${DMLU_BENCH_TESTS:-a,b,c,d} systems=${DMLU_BENCH_SYSTEMS:-a,b,c,d,e}
n_tests=$(tr ',' '\n' <<<"$tests" | grep -c .)
n_systems=$(tr ',' '\n' <<<"$systems" | grep -c .)
nominal=$((runs * n_tests * n_systems * (runtime + ramp + 5) + ${DMLU_BENCH_RESYNC_RUNS:-$runs} * n_systems * 30 + 120))
log "about $((nominal / 60)) minutes of guest time (limit $((2 * nominal / 60)))"

rm -f "$out"/bench.{md,json,png,dat}
# The resync legs live in the guest's tmpfs: room for a 1 GiB leg.
"$TOP/scripts/guest.sh" --flavour perf --mem 3072 --timeout $((2 * nominal)) --out "$out" \
	--run /usr/libexec/dmlu/bench.sh "${envs[@]}"
python3 "$TOP/scripts/bench-report.py" "$out/ktap.log" "$out"
log "results: $out/bench.md, $out/bench.json$([ -f "$out/bench.png" ] && echo ", $out/bench.png")"

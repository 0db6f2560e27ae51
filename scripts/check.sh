#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make check`: everything, on a fresh Debian 12 machine as root. Installs
# what is missing, builds (or reuses) the test kernels, runs the lint gates
# (the module's against each kernel) and the host unit tests, then the
# kselftests in QEMU:
#   DMLU_SERIES="6.12 7.3"  debug kernels (clang, KASAN, lockdep, kmemleak),
#                           booted: the first with every kselftest, the
#                           others with the set that differs between series
#                           (and the module's KUnit suites, on 7.3)
#   DMLU_STOCK_SERIES="7.3" Debian's own kernel, unmodified (no kernel built;
#                           scripts/stock-kernel.sh): its headers made usable
#                           by scripts/rust-headers.sh and checked against its
#                           symbols, the module built with its toolchain, its
#                           vmlinuz booted with the kselftests that need the
#                           C module's writes (the cmirrord comparison)
#   DMLU_BUILD_SERIES=""    perf kernels (gcc) built and linted against, not
#                           booted: `make check-reach` sets "7.2", the series
#                           in between, out of make check for its budget
# Any of them empty skips that part.
. "$(dirname "$0")/lib.sh"

read -r -a series <<<"${DMLU_SERIES-6.12 7.3}"
read -r -a build_series <<<"${DMLU_BUILD_SERIES-}"
read -r -a stock_series <<<"${DMLU_STOCK_SERIES-7.3}"

t0=$(date +%s)
stage() { log "=== $* ($(($(date +%s) - t0)) s)"; }

stage "prerequisites"
"$TOP/scripts/deps.sh"
export PATH="$HOME/.cargo/bin:$PATH"

kbuilds=()
for sr in "${series[@]}"; do
	stage "debug kernel $sr"
	kbuilds+=("$("$TOP/scripts/kernel.sh" debug "$sr")")
done
for sr in "${build_series[@]}"; do
	stage "perf kernel $sr (gcc, build check)"
	kbuilds+=("$("$TOP/scripts/kernel.sh" perf "$sr")")
done

stage "lint"
[ ${#kbuilds[@]} -gt 0 ] || die "no kernel to lint against: DMLU_SERIES and DMLU_BUILD_SERIES are both empty"
"$TOP/scripts/lint.sh" "${kbuilds[0]}" "" "${kbuilds[@]:1}"

stage "host unit tests"
mkdir -p "$TOP/out"
quiet "$TOP/out/host-tests.log" bash -c "cd '$TOP/tools' && cargo test --locked"
log "host unit tests: $(grep -h '^test result' "$TOP/out/host-tests.log" |
	awk '{p += $4; f += $6} END {print p " passed, " f " failed"}')"

# The kselftests, as QEMU guests run DMLU_PARALLEL (2) at a time, longest
# first (a TCG guest keeps about one core busy):
#   the first debug series  every kselftest, in two guests: the functional
#                           tests and the stress tests' short form
#   later debug series      what differs between series: load (and KUnit),
#                           tables, the reply checks
#   the stock kernel        load, tables, and what needs a kernel without
#                           DEBUG_ATOMIC_SLEEP: the C module's writes and
#                           the cmirrord comparison (which must run there)
# DMLU_TESTS=a.sh,b.sh runs that list in one guest per series instead.
# TEST_PROGS of tests-kselftest/Makefile, continuation lines included.
listed=$(awk '/^TEST_PROGS/ {on = 1} on {print; on = /\\$/}' "$TOP/tests-kselftest/Makefile" |
	grep -oE '[a-z0-9_]+\.sh')
functional=$(grep -v '^stress_' <<<"$listed" | paste -sd, -)
stress=$(grep '^stress_' <<<"$listed" | paste -sd, -)
reach=module_load.sh,mirror_basic.sh,log_ctr.sh,reply_faults.sh
stock_set=module_load.sh,mirror_basic.sh,cmirrord.sh,ulogd_c_module.sh

# label|flavour|series|tests|guest environment
runs=()
for i in "${!series[@]}"; do
	sr=${series[$i]}
	if [ -n "${DMLU_TESTS:-}" ]; then
		runs+=("$sr-debug|debug|$sr|$DMLU_TESTS|")
	elif [ "$i" = 0 ]; then
		runs+=("$sr-debug|debug|$sr|$functional|" "$sr-debug-stress|debug|$sr|$stress|")
	else
		runs+=("$sr-debug|debug|$sr|$reach|")
	fi
done
for sr in "${stock_series[@]}"; do
	runs+=("$sr-stock|stock|$sr|${DMLU_TESTS:-$stock_set}|DMLU_REQUIRE_C_MODULE=1")
done

stage "kselftests in QEMU: ${#runs[@]} guests, ${DMLU_PARALLEL:-2} at a time (logs in out/check/)"
mkdir -p "$TOP/out/check"
rm -f "$TOP/out/check/"*.rc
guest_run() {
	local label=$1 flavour=$2 sr=$3 tests=$4 env=$5 t rc=0
	t=$(date +%s)
	"$TOP/scripts/guest.sh" --flavour "$flavour" --series "$sr" --tests "$tests" \
		--out "$TOP/out/$label" ${env:+--env "$env"} >"$TOP/out/check/$label.log" 2>&1 || rc=$?
	echo "$rc" >"$TOP/out/check/$label.rc"
	if [ "$rc" = 0 ]; then
		log "$label: passed in $(($(date +%s) - t)) s ($(grep -a -m1 'kselftests: ' "$TOP/out/check/$label.log" | sed 's/.*kselftests: //'))"
	else
		log "$label: FAILED in $(($(date +%s) - t)) s; the end of out/check/$label.log:"
		tail -n 40 "$TOP/out/check/$label.log" >&2
	fi
}
for run in "${runs[@]}"; do
	IFS='|' read -r label flavour sr tests env <<<"$run"
	while [ "$(jobs -rp | wc -l)" -ge "${DMLU_PARALLEL:-2}" ]; do wait -n || true; done
	log "$label: $flavour $sr, $(tr ',' '\n' <<<"$tests" | grep -c .) kselftests"
	guest_run "$label" "$flavour" "$sr" "$tests" "$env" &
done
wait
failed=()
for run in "${runs[@]}"; do
	label=${run%%|*}
	[ "$(cat "$TOP/out/check/$label.rc" 2>/dev/null)" = 0 ] || failed+=("$label")
done
[ ${#failed[@]} -eq 0 ] || die "kselftests failed on: ${failed[*]} (logs in out/check/ and out/<label>/)"

stage "make check passed"

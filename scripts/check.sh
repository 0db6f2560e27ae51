#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make check`: everything, on a fresh Debian 12 machine as root. Installs
# what is missing, builds (or reuses) the test kernels, runs the lint gates
# (the module's against each kernel) and the host unit tests, then the
# kselftests in QEMU:
#   DMLU_SERIES="6.12 7.3"  debug kernels (clang, KASAN, lockdep), booted:
#                           every kselftest (on 7.3 with the module's KUnit
#                           suites; the stress tests' short form on the first
#                           series only)
#   DMLU_BUILD_SERIES="7.2" perf kernels (gcc), built against warning-free
#                           (clippy), not booted: the series in between
#   DMLU_STOCK_SERIES="7.3" Debian's own kernel, unmodified (no kernel built;
#                           scripts/stock-kernel.sh): its headers made usable
#                           by scripts/rust-headers.sh and checked against its
#                           symbols, the module built with its toolchain, its
#                           vmlinuz booted with the functional kselftests
# Any of them empty skips that part.
. "$(dirname "$0")/lib.sh"

read -r -a series <<<"${DMLU_SERIES-6.12 7.3}"
read -r -a build_series <<<"${DMLU_BUILD_SERIES-7.2}"
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

# The short stress tests (stress_*.sh, 25 minutes under TCG) run on the
# first series only, so that both series fit CI's 90 minutes from a cold
# cache; DMLU_STRESS_ALL_SERIES=1 runs them on every series.
all_but_stress=$(grep -oE '[a-z0-9_]+\.sh' "$TOP/tests-kselftest/Makefile" |
	grep -vE '^(lib|stress_)' | paste -sd, -)

# Every series runs even when one fails, so one check shows them all.
failed=()
for sr in "${series[@]}"; do
	stage "kselftests in QEMU (debug kernel $sr)"
	tests=${DMLU_TESTS:-}
	if [ -z "$tests" ] && [ "$sr" != "${series[0]}" ] && [ "${DMLU_STRESS_ALL_SERIES:-0}" != 1 ]; then
		tests=$all_but_stress
	fi
	"$TOP/scripts/guest.sh" --flavour debug --series "$sr" ${tests:+--tests "$tests"} \
		|| failed+=("$sr")
done
for sr in "${stock_series[@]}"; do
	stage "Debian's stock $sr: headers, module, kselftests in QEMU"
	"$TOP/scripts/guest.sh" --flavour stock --series "$sr" --tests "${DMLU_TESTS:-$all_but_stress}" \
		--env DMLU_REQUIRE_C_MODULE=1 \
		|| failed+=("stock-$sr")
done
[ ${#failed[@]} -eq 0 ] || die "kselftests failed on: ${failed[*]} (logs in out/<series>-<flavour>/)"

stage "make check passed"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make check`: everything, on a fresh Debian 12 machine as root. Installs
# what is missing, builds (or reuses) the debug test kernel, runs the lint
# gates and the host unit tests, then the kselftests in QEMU.
. "$(dirname "$0")/lib.sh"

t0=$(date +%s)
stage() { log "=== $* ($(($(date +%s) - t0)) s)"; }

stage "prerequisites"
"$TOP/scripts/deps.sh"
export PATH="$HOME/.cargo/bin:$PATH"

stage "debug kernel ${KERNEL_SERIES}"
kbuild=$("$TOP/scripts/kernel.sh" debug)

stage "lint"
"$TOP/scripts/lint.sh" "$kbuild"

stage "host unit tests"
mkdir -p "$TOP/out"
quiet "$TOP/out/host-tests.log" bash -c "cd '$TOP/tools' && cargo test --locked"
log "host unit tests: $(grep -h '^test result' "$TOP/out/host-tests.log" |
	awk '{p += $4; f += $6} END {print p " passed, " f " failed"}')"

stage "kselftests in QEMU (debug kernel)"
"$TOP/scripts/guest.sh" --flavour debug ${DMLU_TESTS:+--tests "$DMLU_TESTS"}

stage "make check passed"

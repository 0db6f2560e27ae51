#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make stress`: the long form of the stress kselftests (DMLU_STRESS=1) on
# the debug kernel: 100,000 fuzzed messages, 20 SIGKILLs of dm-ulogd, rounds
# of fault injection, 200 reload cycles and 100 module loads, three server
# stops. `make check` runs their short form. Each test may run for up to an
# hour (the kselftest timeout is overridden); the guest gets 3 hours.
#
# Usage: scripts/stress.sh [guest.sh options]
# DMLU_STRESS_TESTS=stress_fuzz.sh,stress_kill.sh runs only those.
. "$(dirname "$0")/lib.sh"

tests=${DMLU_STRESS_TESTS:-stress_fuzz.sh,stress_kill.sh,stress_mem.sh,stress_scale.sh,stress_timeout.sh}
run="cd,/kselftest,&&,./run_kselftest.sh,-o,${DMLU_STRESS_TEST_TIMEOUT:-3600}"
for t in ${tests//,/ }; do
	run="$run,-t,dm-log-userspace:$t"
done
"$TOP/scripts/deps.sh"
exec "$TOP/scripts/guest.sh" --flavour debug --run "$run" --env DMLU_STRESS=1 \
	--timeout "${DMLU_STRESS_TIMEOUT:-10800}" --out "$TOP/out/stress" "$@"

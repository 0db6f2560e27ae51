#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Server crashes. Three mirrors resync and are written by fio while dm-ulogd
# is killed with SIGKILL at random moments and restarted (3 times in the
# short form, 20 with DMLU_STRESS=1). Mostly the server is back within 2 s;
# every other kill (short form: the second) it stays down 17 to 19 s, past
# the 15 s resend timeout, so that the resend finds no listener (ESRCH) and
# the module replays CTR and RESUME every 2 s until the server is back.
# After each restart every mirror must complete writes again within 60 s
# (the new server restores the logs from its state files). At the end: no
# writer error, no request failure, resync to 100%, legs byte-identical, the
# server serving the three logs.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_stress.sh"
require_env dmsetup losetup dm-ulogd fio

KILLS=$(by_form 3 20)
MB=16
NAMES=(k1 k2 k3)

ktap_print_header
ktap_set_plan 10
trap stress_cleanup EXIT

unload_module
load_module
mark_log
su_start
made=0
for n in "${NAMES[@]}"; do mirror_create "$n" "$MB" 64 sync && made=$((made + 1)); done
check "${#NAMES[@]} mirrors (sync, $MB MiB) served by dm-ulogd" test $made = ${#NAMES[@]}
for n in "${NAMES[@]}"; do writer_start "$n"; done
writers_progress 30 "${NAMES[@]}" >/dev/null

survived=0 slowest=0 total_down=0 long_downs=0
for k in $(seq "$KILLS"); do
	# A random moment: 0 to 4 s of normal service first.
	sleep "$(rand 4).$(rand 10)"
	writes=$(writes_total "${NAMES[@]}")
	su_kill
	t_kill=$(now)
	# Down for 0 to 2 s, or past the resend timeout.
	if [ $((k % 2)) = 0 ]; then
		down=$((17 + $(rand 3)))
		long_downs=$((long_downs + 1))
		sleep "$down"
	else
		sleep "$(rand 2).$(rand 10)"
	fi
	su_start || break
	if ! writers_progress 60 "${NAMES[@]}"; then
		note "kill $k: the mirrors did not recover within 60 s of the restart"
		break
	fi
	took=$(awk -v a="$t_kill" -v b="$(now)" 'BEGIN {printf "%d", b - a + 0.5}')
	lap "kill $k: $writes writes before it; every mirror writing again ${took}s after the kill"
	[ "$took" -gt "$slowest" ] && slowest=$took
	total_down=$((total_down + took))
	survived=$k
done
check "$survived of $KILLS SIGKILLs of dm-ulogd survived (slowest recovery ${slowest}s)" \
	test "$survived" = "$KILLS"
writers_stop
note "writes: $(writes_total "${NAMES[@]}"), recovery time $total_down s in all"
check "no writer saw an I/O error" test "$(writer_errors)" = 0
writer_error_lines | sed 's/^/# /'
failures=$(kernel_says "$REQUEST_FAILURES")
check "no request failed ($failures failure lines in the kernel log)" test "$failures" = 0
[ "$failures" = 0 ] || log_since_mark | grep -E "$REQUEST_FAILURES" | head -n 5 | sed 's/^/# /'
reconnects=$(kernel_says 'reconnected to userspace log server')
note "kernel log: $(kernel_says 'request timed out') timeouts, $(kernel_says 'userspace log server not found') 'server not found', $reconnects reconnections"
check "after the $long_downs kills that outlasted the resend timeout, logs reconnected (CTR and RESUME replayed: $reconnects)" \
	test "$reconnects" -gt 0
all_sync() {
	local n
	for n in "${NAMES[@]}"; do mirror_wait_sync "$n" "$1" || return 1; done
}
check "every mirror resyncs to 100%" all_sync "$(by_form 240 600)"
all_identical() {
	local n
	for n in "${NAMES[@]}"; do mirror_legs_identical "$n" || return 1; done
}
check "legs byte-identical" all_identical
stats=$(su_stats)
check "dm-ulogd serves the ${#NAMES[@]} logs" test "$(json_first "$stats" logs_active)" = ${#NAMES[@]}
removed=0
for n in "${NAMES[@]}"; do mirror_remove "$n" && removed=$((removed + 1)); done
check "mirrors removed" test $removed = ${#NAMES[@]}
note "module DTR lines: $(dtr_sum timeouts) timeouts"
su_stop
unload_module
check "module unloaded" bash -c '! grep -q "^dm_log_userspace " /proc/modules'

ktap_finished

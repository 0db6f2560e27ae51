#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Reply fuzzing. While two mirrors resync and are written, served by
# dm-ulogd, ulog-fuzz sends hostile connector messages to the module, as root
# and, at the same time, as an unprivileged user (uid 65534, dropped after
# opening the socket): random bytes, truncated and oversized messages,
# cn_msg.len and data_size that lie, replies to live and dead sequence
# numbers, other logs' identities, huge data_size, acks with errnos 0,
# EAGAIN, 4096 and 0xffffffff. Short form 20,000 messages, long form
# (DMLU_STRESS=1) 100,000.
#
# What may legitimately happen: the root fuzzer never forges a reply a live
# request would accept (full replies to live sequence numbers always name
# another luid, uuid or type; acks to live ones are EAGAIN only, for
# idempotent requests; everything else goes to sequence numbers dead for
# sure or never issued; see tools/ulog-fuzz/src/gen.rs). So no request may
# fail: the mirrors use "handle_errors keep_log", where any log failure fails
# the writes with EIO. The unprivileged fuzzer forges error replies that
# would fail live requests: the module must ignore all of its messages, and
# count each one.
#
# A third mirror, f3, is the exception on purpose: the root fuzzer answers
# its live requests with replies that name the right log and type but lie
# about their size (data_size beyond the message, cut by cn_msg.len, huge,
# wrong for the request) or carry an error field or ack errno that is no
# errno. The module must refuse them without reading past the message
# (KASAN watches), so f3's requests fail, legitimately; f3 has no
# handle_errors, so its writer still sees no error, and its legs are not
# compared (a failed IN_SYNC makes dm-raid1 write only the default leg).
#
# Checks: no writer error, no request failure in the kernel log, both
# mirrors resync to 100% with identical legs, dm-ulogd survived and created
# no log from the forged CTRs it was sent, every unprivileged message counted
# as such at unload, every root message that reached the module counted as
# malformed or unmatched (but the EAGAIN acks to live requests).

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_stress.sh"
require_env dmsetup losetup dm-ulogd ulog-fuzz

ROOT_MSGS=$(by_form 12000 60000)
USER_MSGS=$(by_form 8000 40000)
# Spread over time so that the fuzz meets resync, writes and flushes.
ROOT_RATE=$(by_form 600 600)
USER_RATE=$(by_form 400 400)
MB=$(by_form 16 64)
SEED=${DMLU_FUZZ_SEED:-$RANDOM$RANDOM}

ktap_print_header
ktap_set_plan 14
trap stress_cleanup EXIT

unload_module
load_module
mark_log
t0=$(now)
su_start
check "mirror dmlus-f1 (sync, ${MB} MiB, 32 KiB regions) served by dm-ulogd" mirror_create f1 "$MB" 64 sync
check "mirror dmlus-f2 likewise" mirror_create f2 "$MB" 64 sync
check "mirror dmlus-f3 (nosync, no handle_errors), the victim of lying replies" \
	mirror_create f3 16 64 nosync 0
writer_start f1
writer_start f2
writer_start f3
sleep 1
stats0=$(su_stats)

note "fuzz seed $SEED: root $ROOT_MSGS messages at <= $ROOT_RATE/s, uid 65534 $USER_MSGS at <= $USER_RATE/s"
ulog-fuzz --seed "$SEED" --messages "$ROOT_MSGS" --rate "$ROOT_RATE" --max-seconds 900 --victim dmlus-f3 \
	>"$WORK/fuzz-root.out" 2>&1 &
root_pid=$!
ulog-fuzz --seed "$((SEED + 1))" --user 65534 --messages "$USER_MSGS" --rate "$USER_RATE" \
	--max-seconds 900 >"$WORK/fuzz-user.out" 2>&1 &
user_pid=$!
wait $root_pid; root_rc=$?
wait $user_pid; user_rc=$?
lap "fuzzers done"
sed 's/^/# root: /' "$WORK/fuzz-root.out" | grep -v 'class\..*=0$'
sed 's/^/# uid 65534: /' "$WORK/fuzz-user.out" | grep -v 'class\..*=0$'
fig() { sed -n "s/^$2=//p" "$WORK/fuzz-$1.out"; }
sent=$(($(fig root sent) + $(fig user sent)))
check "the fuzzers sent $sent messages (root $(fig root sent), uid 65534 $(fig user sent))" \
	test "$root_rc" = 0 -a "$user_rc" = 0 -a "$sent" -ge $((ROOT_MSGS + USER_MSGS))
check "they aimed $(($(fig root live) + $(fig user live))) at live requests ($(fig root requests_seen) requests seen)" \
	test "$(fig root live)" -gt 0 -a "$(fig user live)" -gt 0

check "the writers go on after the fuzz" writers_progress 30 f1 f2 f3
writers_stop
note "writes: $(writes_total f1 f2 f3) in $(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%d", b - a}') s"
check "no writer saw an I/O error" test "$(writer_errors)" = 0
writer_error_lines | sed 's/^/# /'
failures=$(log_since_mark | grep -E "$REQUEST_FAILURES" | grep -vc 'dmlus-f3')
check "no request of f1 or f2 failed ($failures failure lines in the kernel log)" test "$failures" = 0
[ "$failures" = 0 ] || log_since_mark | grep -E "$REQUEST_FAILURES" | grep -v 'dmlus-f3' | head -n 5 | sed 's/^/# /'
victim_fail=$(log_since_mark | grep -E "$REQUEST_FAILURES" | grep -c 'dmlus-f3')
check "the $(fig root victim) lying replies to f3 made its requests fail ($victim_fail failure lines, rate-limited)" \
	test "$victim_fail" -gt 0 -o "$(fig root victim)" = 0
log_since_mark | grep -E "$REQUEST_FAILURES" | grep 'dmlus-f3' | sort -u -k3 | head -n 4 | sed 's/^/# /'
sync_ok() { mirror_wait_sync f1 "$1" && mirror_wait_sync f2 "$1"; }
check "both mirrors resync to 100%" sync_ok "$(by_form 240 600)"
lap "in sync"
legs_ok() { mirror_legs_identical f1 && mirror_legs_identical f2; }
check "legs byte-identical" legs_ok
stats1=$(su_stats)
logs=$(json_first "$stats1" logs_active)
forged=$(grep -c 'fuzz-forged' <<<"$stats1")
check "dm-ulogd alive, serving exactly the 3 logs (none from $(fig root class.server_multicast) forged multicasts)" \
	test "$(su_alive && echo y)" = y -a "$logs" = 3 -a "$forged" = 0
note "dm-ulogd socket: received $(json_first "$stats1" received), ignored $(json_first "$stats1" ignored), malformed $(json_first "$stats1" malformed), overruns $(json_first "$stats1" overruns) (before the fuzz: ignored $(json_first "$stats0" ignored))"

mirror_remove f1
mirror_remove f2
mirror_remove f3
su_stop
unload_module
read -r unpriv malformed unmatched <<<"$(ignored_counters)"
note "module: messages ignored: $unpriv unprivileged, $malformed malformed, $unmatched unmatched"
note "timeouts $(dtr_sum timeouts)"
check "every message of uid 65534 that reached the module ignored as unprivileged ($(fig user reached))" \
	test "${unpriv:-x}" = "$(fig user reached)"
root_min=$(($(fig root reached) - $(fig root live_eagain) - $(fig root victim)))
check "root messages that reached it ($(fig root reached), but $(fig root live_eagain) EAGAIN acks and $(fig root victim) lying replies to live requests) counted malformed or unmatched" \
	test "$((${malformed:-0} + ${unmatched:-0}))" -ge "$root_min"

ktap_finished

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
# A third mirror, f3 (nosync, no handle_errors), gets the worst of it: the
# root fuzzer answers its live requests with replies that lie about their
# size (data_size beyond the message, cut by cn_msg.len, huge, wrong for the
# request), carry an error field or ack errno that is no errno, or bring a
# plausible answer ("not in sync") cut off by cn_msg.len or naming another
# log. The module must drop them all without reading past the message
# (KASAN watches), and f3's requests must wait for the server's answers: a
# taken lie about IN_SYNC sends a write to one leg only, while the region
# counts as in sync.
#
# The writers are mirror-check: every block written holds its number, a
# generation and known bytes, and each writer stores the last acknowledged
# write of every block when it stops.
#
# Checks: no writer error, no request failure in the kernel log, the mirrors
# in sync, every leg of every mirror (f3's too) holding exactly the last
# acknowledged writes, dm-ulogd survived and created no log from the forged
# CTRs it was sent, every unprivileged message counted as such at unload,
# every root message that reached the module counted as malformed or
# unmatched (but the EAGAIN acks to live requests).

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_stress.sh"
require_env dmsetup losetup dm-ulogd ulog-fuzz mirror-check

ROOT_MSGS=$(by_form 12000 60000)
USER_MSGS=$(by_form 8000 40000)
# Spread over time so that the fuzz meets resync, writes and flushes.
ROOT_RATE=$(by_form 600 600)
USER_RATE=$(by_form 400 400)
MB=$(by_form 16 64)
SEED=${DMLU_FUZZ_SEED:-$RANDOM$RANDOM}

ktap_print_header
ktap_set_plan 16
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
checked_writer_start f1
checked_writer_start f2
checked_writer_start f3
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
failures=$(log_since_mark | grep -Ec "$REQUEST_FAILURES")
check "no request of any mirror failed, f3's included ($failures failure lines in the kernel log)" \
	test "$failures" = 0
[ "$failures" = 0 ] || log_since_mark | grep -E "$REQUEST_FAILURES" | head -n 5 | sed 's/^/# /'
dropped=$(log_since_mark | grep -c "dropped a reply to .* request\|dropped a malformed message")
check "the fuzzers' $(fig root victim) lying replies to f3 were aimed at live requests, and the drops logged" \
	test "$(fig root victim)" -gt 0 -a "$dropped" -gt 0
log_since_mark | grep "dropped a reply to .* request\|dropped a malformed message" | head -n 4 | sed 's/^/# /'
sync_ok() { mirror_wait_sync f1 "$1" && mirror_wait_sync f2 "$1" && mirror_wait_sync f3 "$1"; }
check "the mirrors are in sync (f1 and f2 resynced to 100%)" sync_ok "$(by_form 240 600)"
lap "in sync"
legs_ok() { mirror_legs_identical f1 && mirror_legs_identical f2 && mirror_legs_identical f3; }
check "each mirror's legs byte-identical" legs_ok
acked_ok() { legs_hold_acked f1 && legs_hold_acked f2 && legs_hold_acked f3; }
check "every leg of every mirror holds the last acknowledged write of each block" acked_ok
f3_status() { [ "$(mirror_health f3)" = AA ]; }
check "f3's legs are both alive (AA)" f3_status
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
mism=$(cat "$WORK"/verify.*.out 2>/dev/null | grep -o 'mismatches=[0-9]*' | cut -d= -f2 | awk '{s += $1} END {print s + 0}')
note "fuzz figures: messages=$sent writes=$(cat "$WORK"/writer.*.out 2>/dev/null | sed -n 's/^writes=//p' | awk '{s += $1} END {print s + 0}') writer_errors=$(writer_errors) failure_lines=$failures dropped_lines=$dropped resent=$(log_since_mark | grep -q 'destroyed:' && dtr_sum timeouts || echo n/a) malformed=${malformed:-?} unmatched=${unmatched:-?} unprivileged=${unpriv:-?} leg_mismatches=$mism"
check "every message of uid 65534 that reached the module ignored as unprivileged ($(fig user reached))" \
	test "${unpriv:-x}" = "$(fig user reached)"
root_min=$(($(fig root reached) - $(fig root live_eagain)))
check "root messages that reached it ($(fig root reached), but $(fig root live_eagain) EAGAIN acks to live requests) counted malformed or unmatched" \
	test "$((${malformed:-0} + ${unmatched:-0}))" -ge "$root_min"

ktap_finished

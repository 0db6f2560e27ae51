#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Scale and lifecycle churn.
# - 64 mirrors with userspace logs at once (2 MiB legs, 128 loop devices;
#   16 in the short form, which must fit make check's time under TCG), all
#   resyncing and written by as many fio jobs, served by one dm-ulogd: every
#   write succeeds, every mirror resyncs, legs identical. Their deferred
#   work shares the module's one workqueue: one rescuer thread, not one per
#   mirror.
# - Table reloads (a new log instance, same uuid) and suspend/resume cycles
#   of two mirrors while fio writes to them: 10 of each per mirror in the
#   short form, 100 with DMLU_STRESS=1.
# - Module load/unload: 20 cycles (100), every fifth with a mirror created,
#   written, checked and removed in between; no leak (kmemleak).

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_stress.sh"
require_env dmsetup losetup dm-ulogd fio

N=$(by_form 16 64)
CYCLES=$(by_form 10 100)
LOADS=$(by_form 20 100)
RUNTIME=$(by_form 10 90)

ktap_print_header
ktap_set_plan 14
trap stress_cleanup EXIT

unload_module
leaks_reset
load_module
mark_log
su_start

# --- N mirrors ------------------------------------------------------------------
for i in $(seq "$N"); do mirror_legs "s$i" 2; done
lap "$(losetup -a | wc -l) loop devices"
# Created 8 at a time: their CTR round trips overlap.
pids=()
for i in $(seq "$N"); do
	mirror_create "s$i" 2 64 sync &
	pids+=($!)
	[ $((i % 8)) = 0 ] && { wait "${pids[@]}"; pids=(); }
done
# (A bare `wait` would wait for dm-ulogd too.)
[ ${#pids[@]} -eq 0 ] || wait "${pids[@]}"
made=$(dmsetup ls | grep -c '^dmlus-s')
lap "$made mirrors created"
check "$made of $N mirrors created" test "$made" = "$N"
# The rescuer of workqueue "dmlogd" is "kworker/R-dmlogd" (its comm cut to
# 15 characters).
rescuers=$(cat /proc/[0-9]*/comm 2>/dev/null | grep -c '^kworker/R-dmlog')
check "one workqueue rescuer thread for $made logs ($rescuers)" test "$rescuers" = 1
note "dm-ulogd serving $(json_first "$(su_stats)" logs_active) logs"
jobs=$WORK/scale.fio
{
	echo "[global]"
	echo "rw=randwrite"
	echo "bsrange=4k-32k"
	echo "direct=1"
	echo "ioengine=libaio"
	echo "iodepth=2"
	echo "time_based=1"
	echo "runtime=$RUNTIME"
	echo "thread=1"
	for i in $(seq "$N"); do
		printf '[s%d]\nfilename=/dev/mapper/dmlus-s%d\n' "$i" "$i"
	done
} >"$jobs"
fio "$jobs" --output="$WORK/scale.out"
rc=$?
lap "fio done"
errs=$(grep -Ec 'err= *[1-9]|io_u error' "$WORK/scale.out")
check "$N fio writers for ${RUNTIME}s, every write succeeded (fio rc $rc)" test "$rc" = 0 -a "$errs" = 0
writes=0
for i in $(seq "$N"); do writes=$((writes + $(writer_count "s$i"))); done
note "$writes writes to $N mirrors"
check "all $N mirrors wrote" test "$(grep -c 'err= 0' "$WORK/scale.out")" = "$N"
all_sync() {
	local i
	for i in $(seq "$N"); do mirror_wait_sync "s$i" "$1" || return 1; done
}
check "all $N mirrors resync to 100%" all_sync "$(by_form 300 600)"
lap "in sync"
all_identical() {
	local i
	for i in $(seq "$N"); do mirror_legs_identical "s$i" || return 1; done
}
check "legs of all $N mirrors byte-identical" all_identical
pids=()
for i in $(seq "$N"); do
	dmsetup remove "dmlus-s$i" &
	pids+=($!)
	[ $((i % 8)) = 0 ] && { wait "${pids[@]}"; pids=(); }
done
# (A bare `wait` would wait for dm-ulogd too.)
[ ${#pids[@]} -eq 0 ] || wait "${pids[@]}"
removed=$((N - $(dmsetup ls | grep -c '^dmlus-s')))
for i in $(seq "$N"); do mirror_free_legs "s$i"; done
lap "$removed mirrors removed"
check "$removed mirrors removed" test "$removed" = "$N"

# --- reloads and suspend/resume under writes ------------------------------------
ok=1
mirror_create r1 16 64 sync || ok=0
mirror_create r2 16 64 nosync || ok=0
check "two mirrors for reloads (one resyncing)" test $ok = 1
writer_start r1
writer_start r2
reloads=0 suspends=0 fail=""
for c in $(seq "$CYCLES"); do
	for n in r1 r2; do
		if [ $((c % 2)) = 0 ]; then
			dmsetup reload "dmlus-$n" --table "$(mirror_table_of "$n" 16 64 $([ $n = r1 ] && echo sync || echo nosync))" &&
				dmsetup suspend "dmlus-$n" && dmsetup resume "dmlus-$n" || fail="reload $c of $n"
			reloads=$((reloads + 1))
		else
			dmsetup suspend "dmlus-$n" && dmsetup resume "dmlus-$n" || fail="suspend/resume $c of $n"
			suspends=$((suspends + 1))
		fi
	done
	[ -z "$fail" ] || break
	[ $((c % 5)) = 0 ] && ! writers_progress 30 r1 r2 && fail="no writes after cycle $c" && break
done
lap "$reloads reloads, $suspends suspend/resume cycles"
check "$reloads reloads and $suspends suspend/resume cycles under writes${fail:+ (failed: $fail)}" test -z "$fail"
writers_stop
note "writes: r1 $(writer_count r1), r2 $(writer_count r2)"
check "no writer saw an I/O error" test "$(writer_errors)" = 0
writer_error_lines | sed 's/^/# /'
both() { mirror_wait_sync r1 "$1" && mirror_wait_sync r2 "$1" && mirror_legs_identical r1 && mirror_legs_identical r2; }
check "after the reloads both mirrors resync, legs identical" both "$(by_form 240 600)"
failures=$(kernel_says "$REQUEST_FAILURES")
check "no request failed ($failures failure lines in the kernel log)" test "$failures" = 0
[ "$failures" = 0 ] || log_since_mark | grep -E "$REQUEST_FAILURES" | head -n 5 | sed 's/^/# /'
mirror_remove r1
mirror_remove r2
su_stop

# --- module load/unload -----------------------------------------------------------
unload_module
done_loads=0
for c in $(seq "$LOADS"); do
	insmod "$DMLU_MODULE" || break
	if [ $((c % 5)) = 0 ]; then
		su_start || break
		mirror_create "l$c" 4 64 sync || break
		dd if=/dev/urandom of="/dev/mapper/dmlus-l$c" bs=64k count=16 oflag=direct status=none || break
		mirror_wait_sync "l$c" 60 || break
		mirror_legs_identical "l$c" || break
		mirror_remove "l$c" || break
		su_stop
	fi
	rmmod dm_log_userspace || break
	done_loads=$c
done
lap "$done_loads load/unload cycles"
check "$done_loads of $LOADS load/unload cycles (every fifth with a mirror)" test "$done_loads" = "$LOADS"
leak_check "no memory leaked (kmemleak)"

ktap_finished

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Boot a test kernel in QEMU with our module, tools and kselftests, run the
# kselftests (or a command), print the guest's output, and fail if a test
# failed, the guest did not finish (panic, hang, wall-clock limit) or the
# kernel log shows a splat. QEMU is never left running.
#
# Usage: scripts/guest.sh [--flavour debug|perf|stock] [--series 6.12] [--tests t1,t2]
#                         [--run 'cmd,arg,...'] [--env NAME=VALUE]... [--timeout SECS]
#                         [--out DIR] [--smp N] [--mem MB] [--kvm] [--repeat N]
#
# --env sets a variable in the guest's environment (tests read e.g.
# DMLU_STRESS); values cannot hold spaces. --run takes a command whose
# arguments are separated by commas. --repeat runs the kselftests N times
# in a row in the one guest, and each must pass every time.
. "$(dirname "$0")/lib.sh"

flavour=debug series=$KERNEL_SERIES mode=check args="" limit=3000
smp=2 mem=2048 kvm=0 out="" envs=() repeat=1
while [ $# -gt 0 ]; do
	case "$1" in
	--flavour) flavour=$2; shift ;;
	--series) series=$2; shift ;;
	--tests) args=$2; shift ;;
	--run) mode=run; args=$2; shift ;;
	--env) envs+=("$2"); shift ;;
	--timeout) limit=$2; shift ;;
	--out) out=$2; shift ;;
	--smp) smp=$2; shift ;;
	--mem) mem=$2; shift ;;
	--kvm) kvm=1 ;;
	--repeat) repeat=$2; shift ;;
	-h|--help) sed -n '3,16p' "$0"; exit 0 ;;
	*) die "unknown option $1 (see --help)" ;;
	esac
	shift
done
out=${out:-$TOP/out/$series-$flavour}
mkdir -p "$out"
# Absolute: the kselftest install below runs make -C in the kernel tree.
out=$(cd "$out" && pwd)

kbuild=$("$TOP/scripts/kernel.sh" "$flavour" "$series")
log "kernel: $kbuild"
if [ "$flavour" = stock ]; then
	# Debian's own kernel: the module is built in a chroot with the
	# kernel's toolchain, against its headers (scripts/stock-kernel.sh).
	ko=$("$TOP/scripts/stock-kernel.sh" module "$series" "$out/module")
else
	ko=$("$TOP/scripts/build-module.sh" "$kbuild" "$out/module" DMLU_KUNIT=1)
fi
tools=$("$TOP/scripts/build-tools.sh")

# The kselftests and the programs they run, installed by their own Makefile
# through the kernel tree's selftests machinery.
rm -rf "$out/kselftest"
quiet "$out/kselftest-install.log" make -C "$TOP/tests-kselftest" install \
	KDIR="$kbuild" INSTALL_PATH="$out/kselftest" DMLU_TOOLS="$tools"
cpio=$("$TOP/scripts/rootfs.sh" "$kbuild" "$ko" "$tools" "$out/kselftest" "$out")

console="$out/console.log" ktap="$out/ktap.log"
: >"$console"; : >"$ktap"
accel=(-accel tcg)
[ "$kvm" = 1 ] && accel=(-enable-kvm -cpu host)
cmdline="console=ttyS0 panic=-1 loglevel=7 log_buf_len=4M dmlu.mode=$mode"
# A distribution kernel checks the IO-APIC timer at boot, which a loaded
# TCG host can fail (a panic): skip the check, as VMs usually do.
[ "$flavour" = stock ] && cmdline="$cmdline no_timer_check"
[ -n "$args" ] && cmdline="$cmdline dmlu.args=$args"
for e in "${envs[@]}"; do cmdline="$cmdline dmlu.env.$e"; done
[ "$repeat" -gt 1 ] && cmdline="$cmdline dmlu.repeat=$repeat"

qemu_pid="" tail_pid="" dog_pid=""
cleanup() {
	local p
	for p in "$qemu_pid" "$dog_pid" "$tail_pid"; do
		[ -n "$p" ] && kill -9 "$p" 2>/dev/null
	done
	wait 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "booting ($flavour, ${smp} vCPUs, ${mem} MiB, limit ${limit}s); kernel log: $console"
start=$(date +%s)
# QEMU is our own child, so cleanup kills the emulator itself; the
# watchdog enforces the wall-clock limit.
qemu-system-x86_64 "${accel[@]}" -nodefaults -no-reboot \
	-display none -smp "$smp" -m "$mem" \
	-kernel "$kbuild/arch/x86/boot/bzImage" -initrd "$cpio" -append "$cmdline" \
	-serial "file:$console" -serial "file:$ktap" \
	</dev/null >"$out/qemu.log" 2>&1 &
qemu_pid=$!
rm -f "$out/limit-reached"
(
	deadline=$(($(date +%s) + limit))
	while kill -0 "$qemu_pid" 2>/dev/null; do
		if [ "$(date +%s)" -ge "$deadline" ]; then
			touch "$out/limit-reached"
			kill -9 "$qemu_pid"
		fi
		sleep 1
	done
) 2>/dev/null &
dog_pid=$!
tail -n +1 -f "$ktap" &
tail_pid=$!
wait "$qemu_pid" 2>/dev/null || true
qemu_pid=""
kill "$dog_pid" 2>/dev/null
dog_pid=""
sleep 0.2
kill "$tail_pid" 2>/dev/null
tail_pid=""
elapsed=$(($(date +%s) - start))

fail=()
[ -e "$out/limit-reached" ] && fail+=("wall-clock limit of ${limit}s reached")
done_line=$(grep -a '^DMLU-GUEST-DONE' "$ktap" | tail -n1 | tr -d '\r' || true)
if [ -z "$done_line" ]; then
	fail+=("the guest did not finish (panic, hang or limit)")
	grep -a -m1 -E 'Kernel panic' "$console" >&2 || true
fi
guest_rc=${done_line#*rc=}
[ "$mode" = run ] && [ -n "$done_line" ] && [ "$guest_rc" != 0 ] && fail+=("command exited $guest_rc")
not_ok=$(grep -a -E '^(# )*not ok ' "$ktap" | grep -v -a '# SKIP' || true)
[ -n "$not_ok" ] && fail+=("failed tests:"$'\n'"$not_ok")
splats=$(grep -a -n -F -f "$TOP/scripts/splat-patterns" "$console" || true)
[ -n "$splats" ] && fail+=("kernel log splats (in $console):"$'\n'"$(head -n 20 <<<"$splats")")

passed=$(grep -a -c -E '^ok ' "$ktap" || true)
log "guest ran ${elapsed}s; top-level tests passed: $passed"

# Counted runs: every kselftest asked for (the --tests list, else every one
# installed) must have run and passed; a test that did not run, or skipped
# itself whole, fails the run, and so does an empty list. The checks that
# tests skip inside are listed.
if [ "$mode" = check ]; then
	if [ -n "$args" ]; then
		expected=$(tr ',' '\n' <<<"$args" | sed '/^$/d')
	else
		expected=$(sed -n 's/^dm-log-userspace://p' "$out/kselftest/kselftest-list.txt")
	fi
	n_expected=$(grep -c . <<<"$expected" || true)
	[ "$n_expected" -gt 0 ] || fail+=("no kselftest was listed to run")
	missing=() skipped=()
	results=$(tr -d '\r' <"$ktap" | grep -a -E '^(not )?ok [0-9]+ selftests: ' || true)
	while read -r t; do
		[ -n "$t" ] || continue
		lines=$(grep -E "^(not )?ok [0-9]+ selftests: dm-log-userspace: $t( |\$)" <<<"$results" || true)
		runs=$(grep -c . <<<"$lines" || true)
		if [ "$runs" -eq 0 ]; then
			missing+=("$t")
		elif [ "$runs" -lt "$repeat" ]; then
			missing+=("$t (ran $runs of $repeat times)")
		elif [[ "$lines" == *"# SKIP"* ]]; then
			skipped+=("$t")
		fi
	done <<<"$expected"
	ran=$((n_expected - ${#missing[@]}))
	log "kselftests: $ran of $n_expected ran$([ "$repeat" = 1 ] || echo " $repeat times each, $(grep -a -c -E '^not ok [0-9]+ selftests: ' "$ktap" || true) failed runs")"
	[ ${#missing[@]} -eq 0 ] || fail+=("kselftests that did not run: ${missing[*]}")
	[ ${#skipped[@]} -eq 0 ] || fail+=("kselftests that skipped themselves: ${skipped[*]}")
	inner_skips=$(grep -a -E '^# ok [0-9]+ .*# SKIP' "$ktap" || true)
	[ -z "$inner_skips" ] || log "checks skipped inside tests:"$'\n'"$inner_skips"
fi

# KUnit (src/kunit.rs): on a kernel with CONFIG_KUNIT=y the module's suites
# run each time it loads, and their KTAP is in the kernel log. A failed case
# fails the run, and so do suites that never ran although the module loaded.
# (The serial console ends lines with \r; outputs are read whole before
# grep -q, which under pipefail would fail the pipeline by SIGPIPE.)
kconsole=$(tr -d '\r' <"$console")
sections=$(readelf -SW "$ko")
if grep -qx 'CONFIG_KUNIT=y' "$kbuild/.config" && ! grep -q '\.kunit_test_suites' <<<"$sections"; then
	log "KUnit: this kernel's crate has no #[kunit_tests]: the module has no suites here"
elif grep -qx 'CONFIG_KUNIT=y' "$kbuild/.config"; then
	ktap_re='^\[[ 0-9.]+\] +'
	suites_ok=$(grep -a -c -E "${ktap_re}ok [0-9]+ dm_log_userspace_" <<<"$kconsole" || true)
	cases=$({ grep -a -o -E '# Totals: pass:[0-9]+ fail:[0-9]+' <<<"$kconsole" || true; } |
		awk -F'[: ]' '{p += $5; f += $7} END {printf "%d passed, %d failed", p, f}')
	kunit_bad=$(grep -a -E "${ktap_re}not ok [0-9]+ |ASSERTION FAILED" <<<"$kconsole" || true)
	log "KUnit: $suites_ok suite runs passed; cases: $cases"
	[ -n "$kunit_bad" ] && fail+=("KUnit failures (in $console):"$'\n'"$(head -n 20 <<<"$kunit_bad")")
	# Every suite the module has must have passed at least once.
	for suite in $(grep -o 'kunit_tests(dm_log_userspace_[a-z_0-9]*)' "$TOP/src/kunit.rs" |
		sed 's/kunit_tests(\(.*\))/\1/'); do
		grep -a -q -E "${ktap_re}ok [0-9]+ $suite\$" <<<"$kconsole" ||
			fail+=("KUnit suite $suite never passed")
	done
fi
if [ ${#fail[@]} -gt 0 ]; then
	for f in "${fail[@]}"; do printf '[guest.sh] FAIL: %s\n' "$f" >&2; done
	exit 1
fi
log "PASS"

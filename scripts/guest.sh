#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Boot a test kernel in QEMU with our module, tools and kselftests, run the
# kselftests (or a command), print the guest's output, and fail if a test
# failed, the guest did not finish (panic, hang, wall-clock limit) or the
# kernel log shows a splat. QEMU is never left running.
#
# Usage: scripts/guest.sh [--flavour debug|perf] [--series 6.12] [--tests t1,t2]
#                         [--run 'cmd,arg,...'] [--env NAME=VALUE]... [--timeout SECS]
#                         [--out DIR] [--smp N] [--mem MB] [--kvm]
#
# --env sets a variable in the guest's environment (tests read e.g.
# DMLU_STRESS); values cannot hold spaces. --run takes a command whose
# arguments are separated by commas.
. "$(dirname "$0")/lib.sh"

flavour=debug series=$KERNEL_SERIES mode=check args="" limit=3000
smp=2 mem=2048 kvm=0 out="" envs=()
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
	-h|--help) sed -n '3,17p' "$0"; exit 0 ;;
	*) die "unknown option $1 (see --help)" ;;
	esac
	shift
done
out=${out:-$TOP/out/$series-$flavour}
mkdir -p "$out"
# Absolute: the kselftest install below runs make -C in the kernel tree.
out=$(cd "$out" && pwd)

kbuild=$("$TOP/scripts/kernel.sh" "$flavour" "$series")
ksrc=$(readlink -f "$kbuild/source")
log "kernel: $kbuild"
ko=$("$TOP/scripts/build-module.sh" "$kbuild" "$out/module")
tools=$("$TOP/scripts/build-tools.sh")

# Install the kselftests through the kernel tree's own machinery (one run at
# a time: the tree is shared by every checkout on this machine).
kst_src="$ksrc/tools/testing/selftests/dm-log-userspace"
rm -rf "$out/kselftest"
(
	flock 8
	rsync -a --delete --exclude ulog-test-server "$TOP/tests-kselftest/" "$kst_src/"
	quiet "$out/kselftest-install.log" make -C "$ksrc/tools/testing/selftests" \
		TARGETS=dm-log-userspace install INSTALL_PATH="$out/kselftest"
) 8>"$ksrc/.dmlu-kselftest.lock"
cpio=$("$TOP/scripts/rootfs.sh" "$kbuild" "$ko" "$tools" "$out/kselftest" "$out")

console="$out/console.log" ktap="$out/ktap.log"
: >"$console"; : >"$ktap"
accel=(-accel tcg)
[ "$kvm" = 1 ] && accel=(-enable-kvm -cpu host)
cmdline="console=ttyS0 panic=-1 loglevel=7 dmlu.mode=$mode"
[ -n "$args" ] && cmdline="$cmdline dmlu.args=$args"
for e in "${envs[@]}"; do cmdline="$cmdline dmlu.env.$e"; done

qemu_pid="" tail_pid=""
cleanup() {
	[ -n "$qemu_pid" ] && kill -9 "$qemu_pid" 2>/dev/null
	[ -n "$tail_pid" ] && kill "$tail_pid" 2>/dev/null
	wait 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "booting ($flavour, ${smp} vCPUs, ${mem} MiB, limit ${limit}s); kernel log: $console"
start=$(date +%s)
timeout -k 5 "$limit" qemu-system-x86_64 "${accel[@]}" -nodefaults -no-reboot \
	-display none -smp "$smp" -m "$mem" \
	-kernel "$kbuild/arch/x86/boot/bzImage" -initrd "$cpio" -append "$cmdline" \
	-serial "file:$console" -serial "file:$ktap" \
	</dev/null >"$out/qemu.log" 2>&1 &
qemu_pid=$!
tail -n +1 -f "$ktap" &
tail_pid=$!
qemu_rc=0
wait "$qemu_pid" || qemu_rc=$?
qemu_pid=""
sleep 0.2
kill "$tail_pid" 2>/dev/null
tail_pid=""
elapsed=$(($(date +%s) - start))

fail=()
[ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ] && fail+=("wall-clock limit of ${limit}s reached")
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
if [ ${#fail[@]} -gt 0 ]; then
	for f in "${fail[@]}"; do printf '[guest.sh] FAIL: %s\n' "$f" >&2; done
	exit 1
fi
log "PASS"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make cluster-check`: dm-ulogd --cluster on two QEMU guests (TCG, 1 vCPU
# each) sharing one disk and a private link, with corosync 3 between them
# (the recipe of /work/shared/reference/cluster.md). Both nodes load the
# same mirror with a clustered-core userspace log; the host drives the
# scenario phase by phase (scripts/guest/cluster-node.sh runs each command
# in the guest) and checks:
#
#   base        corosync membership 2; dm-ulogd --cluster on both; the same
#               mirror on both, in sync, same status; each node reads what
#               the other wrote (O_DIRECT)
#   concurrent  both nodes write the same regions (not the same blocks) at
#               once: every block reads back, the legs are identical
#   figures     4 KiB random writes (fio, O_DIRECT, iodepth 1): IOPS per
#               node alone and both at once, group messages per write
#   kill        node 2 is killed (its QEMU) while both write: node 1 drops
#               it, resyncs its regions, the legs end identical; node 2
#               boots again, rejoins the log, and both agree again
#
# It fails on any "not ok", a node that did not finish, a kernel splat, or
# the wall-clock limit; QEMU is never left running. Output in out/cluster:
# <boot>/out.log (each node's KTAP and diagnostics), <boot>/console.log
# (kernel log), host.ktap, figures.md.
#
# The private link is UDP between the two QEMU processes by default;
# --link tcp is cluster.md's recipe (a socket netdev stream, node 1
# listening), where some corosync rounds take about 40 ms more (the host
# TCP's delayed ACK against Nagle, by the look of it): node 1's writes run
# at about 22 IOPS there against about 150 over UDP. cmirrord's figures in
# cluster.md were measured on that stream.
#
# Usage: scripts/cluster.sh [--flavour perf|debug] [--phases base,concurrent,figures,kill]
#                           [--link udp|tcp] [--timeout SECS] [--mem MB] [--out DIR]
. "$(dirname "$0")/lib.sh"

flavour=perf limit=3600 mem=512 out="" phases=base,concurrent,figures,kill link=udp
while [ $# -gt 0 ]; do
	case "$1" in
	--flavour) flavour=$2; shift ;;
	--phases) phases=$2; shift ;;
	--link) link=$2; shift ;;
	--timeout) limit=$2; shift ;;
	--mem) mem=$2; shift ;;
	--out) out=$2; shift ;;
	-h|--help) sed -n '3,35p' "$0"; exit 0 ;;
	*) die "unknown option $1 (see --help)" ;;
	esac
	shift
done
phase_on() { [[ ",$phases," == *",$1,"* ]]; }
out=${out:-$TOP/out/cluster}
mkdir -p "$out"
out=$(cd "$out" && pwd)
start=$(date +%s)
deadline=$((start + limit))

# --- Build: prerequisites, kernel, module, the cluster dm-ulogd, rootfs.
DMLU_CLUSTER=1 "$TOP/scripts/deps.sh"
kbuild=$("$TOP/scripts/kernel.sh" "$flavour")
log "kernel: $kbuild"
ko=$("$TOP/scripts/build-module.sh" "$kbuild" "$out/module")
export PATH="$HOME/.cargo/bin:$PATH"
# Dynamically linked (libcpg is a shared library), in a target directory of
# its own so the static tools of the other tests are left alone.
(cd "$TOP/tools" && cargo build --quiet --release --locked -p dm-ulogd --features cluster \
	--bin dm-ulogd --target-dir "$out/target" >&2) || die "cargo build of dm-ulogd --features cluster failed"
ulogd="$out/target/release/dm-ulogd"

root="$out/rootfs"
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc/corosync,proc,sys,dev,tmp,run,root}
mkdir -p "$root"/var/{lib/corosync,log/corosync} "$root/lib/modules/dmlu/rust"
ln -s ../run "$root/var/run"
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
	[ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
add_program() { # as scripts/rootfs.sh: a program and the libraries ldd lists
	local src=$1 dst=$2 lib
	install -D -m 755 "$src" "$root$dst"
	for lib in $(ldd "$src" 2>/dev/null | grep -o '/[^ ]*'); do
		[ -e "$root$lib" ] && continue
		install -D -m 755 "$lib" "$root$lib"
		strip --strip-unneeded "$root$lib" 2>/dev/null || true
	done
}
add_program /bin/bash /bin/bash
add_program /usr/sbin/dmsetup /usr/sbin/dmsetup
add_program /usr/bin/fio /usr/bin/fio
add_program /bin/dd /usr/bin/dd
add_program /usr/sbin/corosync /usr/sbin/corosync
for t in corosync-quorumtool corosync-cfgtool corosync-cmapctl corosync-cpgtool; do
	add_program "/usr/sbin/$t" "/usr/sbin/$t"
done
add_program "$ulogd" /usr/sbin/dm-ulogd
install -m 644 "$ko" "$root/lib/modules/dmlu/rust/dm-log-userspace.ko"
install -m 755 "$TOP/scripts/guest/cluster-node.sh" "$root/init"
cat >"$root/etc/corosync/corosync.conf" <<'EOF'
totem {
	version: 2
	cluster_name: dmlu
	transport: knet
	crypto_cipher: none
	crypto_hash: none
	token: 10000
	join: 1000
}
nodelist {
	node {
		ring0_addr: 10.99.0.1
		nodeid: 1
		name: n1
	}
	node {
		ring0_addr: 10.99.0.2
		nodeid: 2
		name: n2
	}
}
quorum {
	provider: corosync_votequorum
	two_node: 1
}
logging {
	to_stderr: yes
	to_syslog: no
	to_logfile: no
	timestamp: on
}
EOF
mkdir -p "$root/etc/corosync/uidgid.d"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
printf '127.0.0.1 localhost\n10.99.0.1 n1\n10.99.0.2 n2\n' >"$root/etc/hosts"
cpio="$out/initramfs.cpio"
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) >"$cpio"

# --- The guests.
rm -rf "$out"/n1 "$out"/n2 "$out"/n2b "$out/host.ktap" "$out/figures.md"
img="$out/shared.img"
rm -f "$img"
truncate -s $((4096 * 512 + 2 * 64 * 1048576)) "$img"
[ "$link" = tcp ] || [ "$link" = udp ] || die "--link is tcp or udp"
port=$((20000 + $$ % 20000))
while ss -ltun 2>/dev/null | grep -E ":($port|$((port + 1))) " >/dev/null; do port=$((port + 2)); done

declare -A qpid=() sent=() shown=()
cleanup() {
	local b
	for b in "${!qpid[@]}"; do
		[ -z "${qpid[$b]}" ] || kill -9 "${qpid[$b]}" 2>/dev/null || true
		qpid[$b]=""
	done
	wait 2>/dev/null
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# boot NAME NODE: one guest; NAME names this boot. The private link is a
# TCP stream between the two QEMUs (node 1 listens) or UDP datagrams (node N
# on port+N-1).
boot() {
	local b=$1 node=$2 d="$out/$1" net
	if [ "$link" = tcp ]; then
		net="socket,id=n0,$([ "$node" = 1 ] && echo listen || echo connect)=127.0.0.1:$port"
	else
		net="socket,id=n0,udp=127.0.0.1:$((port + 2 - node)),localaddr=127.0.0.1:$((port + node - 1))"
	fi
	mkdir -p "$d"
	mkfifo "$d/cmd.in" "$d/cmd.out"
	: >"$d/out.log"
	qemu-system-x86_64 -accel tcg -nodefaults -no-reboot -display none -smp 1 -m "$mem" \
		-kernel "$kbuild/arch/x86/boot/bzImage" -initrd "$cpio" \
		-append "console=ttyS0 panic=-1 loglevel=7 dmlu.node=$node dmlu.boot=$b" \
		-serial "file:$d/console.log" -serial "file:$d/out.log" -serial "pipe:$d/cmd" \
		-drive "file=$img,format=raw,if=virtio,cache=none,file.locking=off" \
		-netdev "$net" \
		-device "virtio-net-pci,netdev=n0,mac=52:54:00:99:00:0$node" \
		</dev/null >"$d/qemu.log" 2>&1 &
	qpid[$b]=$!
	sent[$b]=0 shown[$b]=0
	log "booted $b (node $node, pid ${qpid[$b]}, -netdev $net)"
}

lines() { tr -d '\r' <"$out/$1/out.log"; }
# Print the new output lines of every running boot, prefixed.
show_new() {
	local b n
	for b in "${!qpid[@]}"; do
		n=$(lines "$b" | wc -l)
		[ "$n" -gt "${shown[$b]}" ] || continue
		lines "$b" | sed -n "$((shown[$b] + 1)),${n}p" | sed "s/^/[$b] /"
		shown[$b]=$n
	done
}
over() { [ "$(date +%s)" -ge "$deadline" ]; }
alive() { [ -n "${qpid[$1]:-}" ] && kill -0 "${qpid[$1]}" 2>/dev/null; }

# wait_for NAME PATTERN SECS: until the boot's output has a line matching.
wait_for() {
	local b=$1 pat=$2 t=$(($(date +%s) + $3))
	while ! lines "$b" | grep -E "$pat" >/dev/null; do
		show_new
		over && die "wall-clock limit of ${limit}s reached"
		alive "$b" || die "$b: QEMU exited (see $out/$b/console.log)"
		[ "$(date +%s)" -lt "$t" ] || die "$b: no '$pat' after $3 s"
		sleep 1
	done
	show_new
}
# send NAME COMMAND...: a command to a guest; wait_done NAME SECS: its end.
send() {
	local b=$1; shift
	printf '%s\n' "$*" >"$out/$b/cmd.in"
	sent[$b]=$((sent[$b] + 1))
}
wait_done() {
	local b=$1 t=$(($(date +%s) + $2))
	while [ "$(lines "$b" | grep -c '^DONE ')" -lt "${sent[$b]}" ]; do
		show_new
		over && die "wall-clock limit of ${limit}s reached"
		alive "$b" || die "$b: QEMU exited (see $out/$b/console.log)"
		[ "$(date +%s)" -lt "$t" ] || die "$b: command ${sent[$b]} did not finish within $2 s"
		sleep 1
	done
	show_new
}
# on SECS NAME... -- COMMAND: the same command on several guests at once.
on() {
	local secs=$1 b names=(); shift
	while [ "$1" != -- ]; do names+=("$1"); shift; done
	shift
	for b in "${names[@]}"; do send "$b" "$@"; done
	for b in "${names[@]}"; do wait_done "$b" "$secs"; done
}
# last NAME PREFIX: the last output line starting with PREFIX, without it.
last() { lines "$1" | grep "^$2 " | tail -n1 | cut -d' ' -f2-; }

hn=0
host_check() { # DESC CMD...
	local d=$1; shift
	hn=$((hn + 1))
	if "$@"; then echo "ok $hn - host: $d"; else echo "not ok $hn - host: $d"; fi | tee -a "$out/host.ktap"
}
same() { [ -n "$1" ] && [ "$1" = "$2" ]; }
phase() { log "--- $* ($(($(date +%s) - start)) s)"; }

phase "booting node 1, then node 2 once node 1 listens"
boot n1 1
if [ "$link" = tcp ]; then
	for _ in $(seq 50); do ss -ltn | grep ":$port " >/dev/null && break; sleep 0.2; done
fi
boot n2 2
wait_for n1 '^READY' 600
wait_for n2 '^READY' 600

phase "base: membership, servers, the mirror on both nodes"
on 300 n1 n2 -- members 240
on 120 n1 n2 -- ulogd
on 600 n1 -- mirror
on 600 n2 -- mirror
on 1200 n1 n2 -- sync 1100
host_check "both nodes show the same mirror status" same "$(last n1 STATUS)" "$(last n2 STATUS)"
on 300 n1 -- write 0 4
md5a=$(last n1 MD5 | cut -d' ' -f3)
on 300 n2 -- verify 0 4 "$md5a"
on 300 n2 -- write 8 4
md5b=$(last n2 MD5 | cut -d' ' -f3)
on 300 n1 -- verify 8 4 "$md5b"

if phase_on concurrent; then
	phase "concurrent: both nodes write the same regions, distinct blocks"
	send n1 stripe 0 16 4
	send n2 stripe 1 16 4
	wait_done n1 1200
	wait_done n2 1200
	send n1 stripe 0 16 4 verify
	send n2 stripe 1 16 4 verify
	wait_done n1 600
	wait_done n2 600
	on 600 n1 n2 -- legs
	host_check "both nodes read the same legs" same "$(last n1 LEGS)" "$(last n2 LEGS)"
fi

if phase_on figures; then
	phase "figures: 4 KiB random writes, one node alone, then both at once"
	on 300 n1 -- linear 10
	on 300 n1 -- iops alone 10 48 8
	on 300 n2 -- iops alone 10 56 8
	send n1 iops both 10 48 8
	send n2 iops both 10 56 8
	wait_done n1 300
	wait_done n2 300
	# Each alone again, in the other order: TCG timing drifts with the
	# host's load, so a figure is only worth what its repeat says.
	on 300 n2 -- iops alone2 10 56 8
	on 300 n1 -- iops alone2 10 48 8
fi

if phase_on kill; then
	phase "kill: node 2 dies while both nodes write"
	send n1 bg 90 32 4
	send n2 bg 90 40 4
	wait_done n1 120
	wait_done n2 120
	sleep 5
	kill -9 "${qpid[n2]}"
	wait "${qpid[n2]}" 2>/dev/null || true
	qpid[n2]=""
	log "killed node 2's QEMU"
	on 1200 n1 -- survive 600
	on 600 n1 -- legs
	phase "rejoin: node 2 boots again"
	boot n2b 2
	wait_for n2b '^READY' 600
	on 300 n2b -- members 240
	on 120 n2b -- ulogd
	on 600 n2b -- mirror
	on 1200 n1 n2b -- sync 1100
	host_check "both nodes show the same mirror status after the rejoin" \
		same "$(last n1 STATUS)" "$(last n2b STATUS)"
	on 600 n1 n2b -- legs
	host_check "both nodes read the same legs after the rejoin" same "$(last n1 LEGS)" "$(last n2b LEGS)"
	on 300 n2b -- verify 0 4 "$md5a"
	on 300 n2b -- verify 8 4 "$md5b"
	if phase_on concurrent; then
		send n1 stripe 0 16 4 verify
		send n2b stripe 1 16 4 verify
		wait_done n1 600
		wait_done n2b 600
	fi
	n2=n2b
else
	n2=n2
fi

phase "finish"
send n1 finish
send "$n2" finish
for b in n1 "$n2"; do
	wait_for "$b" '^DMLU-GUEST-DONE' 300
	for _ in $(seq 60); do alive "$b" || break; sleep 1; done
done
cleanup
elapsed=$(($(date +%s) - start))

# --- Verdict.
fail=()
for b in n1 n2 n2b; do
	[ -f "$out/$b/out.log" ] || continue
	nok=$(lines "$b" | grep -E '^not ok ' || true)
	[ -n "$nok" ] && fail+=("$b: failed checks:"$'\n'"$nok")
	splats=$(grep -a -n -F -f "$TOP/scripts/splat-patterns" "$out/$b/console.log" || true)
	[ -n "$splats" ] && fail+=("$b: kernel log splats:"$'\n'"$(head -n 20 <<<"$splats")")
done
for b in n1 "$n2"; do
	lines "$b" | grep '^DMLU-GUEST-DONE' >/dev/null || fail+=("$b did not finish")
done
grep -q '^not ok' "$out/host.ktap" 2>/dev/null && fail+=("host checks failed: $(grep '^not ok' "$out/host.ktap")")

if phase_on figures; then
	fig() { # BOOT LABEL FIELD
		lines "$1" | grep "^FIGURE $2 " | tail -n1 | tr ' ' '\n' | sed -n "s/^$3=//p"
	}
	per() { # messages per write, two decimals
		awk -v m="$1" -v w="$2" 'BEGIN { if (w > 0) printf "%.2f", m / w; else print "-" }'
	}
	{
		echo "| 4 KiB random writes, O_DIRECT, iodepth 1, 10 s; link: $link | IOPS node 1 | IOPS node 2 | group messages per write | waited rounds per write |"
		echo "|---|---|---|---|---|"
		for l in alone alone2 both; do
			m=$(($(fig n1 $l messages) + $(fig n2 $l messages)))
			w=$(($(fig n1 $l writes) + $(fig n2 $l writes)))
			r=$(($(fig n1 $l rounds) + $(fig n2 $l rounds)))
			case $l in
			alone) what="each node alone" ;;
			alone2) what="each node alone, again (node 2 first)" ;;
			both) what="both nodes at once" ;;
			esac
			echo "| dm-ulogd --cluster: $what | $(fig n1 $l iops) | $(fig n2 $l iops) | $(per $m $w) | $(per $r $w) |"
		done
		echo "| dm-linear on the shared disk (no log), node 1 alone | $(fig n1 linear iops) | | | |"
		echo "| cmirrord (cluster.md, TCP link): one node alone | 7.4 | | about 6 | about 6 (one CPG round per request) |"
		echo "| cmirrord (cluster.md, TCP link): both nodes at once | about 4 | about 4 | about 6 | about 6 |"
		echo "| dm-linear (cluster.md) | about 1900 | | | |"
	} >"$out/figures.md"
	cat "$out/figures.md"
fi

log "ran ${elapsed}s; checks passed: $(cat "$out"/n1/out.log "$out"/n2/out.log "$out"/n2b/out.log "$out/host.ktap" 2>/dev/null | tr -d '\r' | grep -c '^ok ')"
if [ ${#fail[@]} -gt 0 ]; then
	for f in "${fail[@]}"; do printf '[cluster.sh] FAIL: %s\n' "$f" >&2; done
	exit 1
fi
log "PASS"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make cluster-check`: clustered mirrors on QEMU guests (TCG, 1 vCPU each)
# sharing one disk and a private link, with corosync 3 between them (the
# recipe of /work/shared/reference/cluster.md). Every node loads the same
# mirror with a userspace log; the host drives the scenario phase by phase
# (scripts/guest/cluster-node.sh runs each command in the guest) and checks
# what each phase must show. Without --nodes, four suites run in turn:
#
#   two     2 nodes, clustered-core, corosync two_node (--nodes 2):
#     base        membership; the servers; the mirror on both, in sync, same
#                 status; each node reads what the other wrote (O_DIRECT)
#     concurrent  both write the same regions, distinct blocks: every block
#                 reads back, the legs are identical
#     journal     all write their own part at once with mirror-check: both
#                 legs hold every node's last acknowledged writes, and the
#                 legs are identical
#     figures     4 KiB random writes (fio, O_DIRECT, iodepth 1): IOPS per
#                 node alone and both at once, group messages per write
#     kill        node 2 is killed (its QEMU) while both write: node 1 drops
#                 it, resyncs its regions, the legs end identical; node 2
#                 boots again, rejoins, and both agree again
#
#   three   3 nodes, clustered-disk on the shared disk (--nodes 3):
#     base        membership of 3; the mirror on all three, in sync
#     partition   all write; node 3 is cut off: it loses quorum and its
#                 writes stop, nodes 1 and 2 go on; the link comes back: the
#                 histories merge, node 3's writes finish, the legs end
#                 identical on every node
#     suspend     all write; `dmsetup suspend` on all three at once
#                 completes; resume; the legs end identical
#     rejoin      all write; node 2 is killed; the others go on; node 2
#                 boots again and rejoins while they write; all agree
#     powercut    all write; every QEMU is killed at once; all boot again:
#                 the first mirror up resyncs exactly the regions the log
#                 device has dirty (checked against the device, read from
#                 the host), and the legs end identical
#
#   cmirrord  2 nodes, LVM2's cmirrord on both, our module on both
#             (--servers cmirrord,cmirrord): base, concurrent, journal
#   mixed     the same with our module on node 1 and the in-tree C module
#             on node 2 (--modules ours,c; a kernel that builds it:
#             CONFIG_DM_LOG_USERSPACE=m, the perf kernel)
#
# Each node's log server and kernel module are parameters: --servers
# dm-ulogd|cmirrord,... and --modules ours|c,... (one per node). cmirrord
# is scripts/cmirrord.sh's build (or --cmirrord DIR, holding cmirrord and
# the libdevmapper.so.1.02 it links). A passive listener on every node
# traces the requests its kernel sends: their counts, per node and type,
# end each suite. --fault bypass makes the last node's journal writes go to
# leg 0 alone, to show the journal and legs checks fail.
#
# It fails on any "not ok", a node that did not finish, a kernel splat, or
# the wall-clock limit; QEMU is never left running. Output in out/cluster
# (or --out): <suite>/<boot>/out.log (each node's KTAP and diagnostics),
# <suite>/<boot>/console.log (kernel log), <suite>/host.ktap, figures.md.
#
# Links: two nodes talk over UDP between the two QEMU processes (--link
# udp, the default) or a TCP stream (--link tcp, cluster.md's recipe, where
# some corosync rounds take about 40 ms more); three over a multicast
# group on the host's loopback (--link mcast).
#
# Usage: scripts/cluster.sh [--suite two|three|cmirrord|mixed]
#                           [--nodes 2|3] [--phases p1,p2] [--log core|disk]
#                           [--servers s1,s2,...] [--modules m1,m2,...]
#                           [--cmirrord DIR] [--fault bypass]
#                           [--link udp|tcp|mcast]
#                           [--flavour perf|debug] [--timeout SECS]
#                           [--mem MB] [--out DIR]
. "$(dirname "$0")/lib.sh"

flavour=perf limit=7200 mem=448 out="" nodes="" phases="" link="" logtype=""
servers="" modules="" cmirrord="" fault="" suite=""
while [ $# -gt 0 ]; do
	case "$1" in
	--suite) suite=$2; shift ;;
	--nodes) nodes=$2; shift ;;
	--phases) phases=$2; shift ;;
	--log) logtype=$2; shift ;;
	--servers) servers=$2; shift ;;
	--modules) modules=$2; shift ;;
	--cmirrord) cmirrord=$2; shift ;;
	--fault) fault=$2; shift ;;
	--link) link=$2; shift ;;
	--flavour) flavour=$2; shift ;;
	--timeout) limit=$2; shift ;;
	--mem) mem=$2; shift ;;
	--out) out=$2; shift ;;
	-h|--help) sed -n '3,76p' "$0"; exit 0 ;;
	*) die "unknown option $1 (see --help)" ;;
	esac
	shift
done
out=${out:-$TOP/out/cluster}
mkdir -p "$out"
out=$(cd "$out" && pwd)

case $suite in
"") ;;
two) nodes=2 ;;
three) nodes=3 ;;
cmirrord) nodes=2 servers=${servers:-cmirrord,cmirrord} phases=${phases:-base,concurrent,journal} ;;
mixed) nodes=2 servers=${servers:-cmirrord,cmirrord} modules=${modules:-ours,c}
	phases=${phases:-base,concurrent,journal} ;;
*) die "--suite is two, three, cmirrord or mixed" ;;
esac
case $fault in "" | bypass) ;; *) die "--fault is bypass" ;; esac

# No --suite or --nodes: every suite, each in its own directory, one verdict.
if [ -z "$nodes" ]; then
	start=$(date +%s) rc=0
	args=(--flavour "$flavour" --timeout "$limit" --mem "$mem")
	for s in two three cmirrord mixed; do
		t0=$(date +%s)
		"$0" "${args[@]}" --suite $s --out "$out/$s" || rc=1
		log "suite $s: $(($(date +%s) - t0)) s"
	done
	log "every suite ran in $(($(date +%s) - start)) s: $([ $rc = 0 ] && echo PASS || echo FAIL)"
	exit $rc
fi

case $nodes in
2) phases=${phases:-base,concurrent,journal,figures,kill} link=${link:-udp} logtype=${logtype:-core} ;;
3) phases=${phases:-base,partition,suspend,rejoin,powercut} link=${link:-mcast} logtype=${logtype:-disk} ;;
*) die "--nodes is 2 or 3" ;;
esac
[ "$nodes" = 2 ] || [ "$link" = mcast ] || die "three nodes need --link mcast"
servers=${servers:-$(printf 'dm-ulogd%.0s,' $(seq "$nodes") | sed 's/,$//')}
modules=${modules:-$(printf 'ours%.0s,' $(seq "$nodes") | sed 's/,$//')}
IFS=, read -r -a server_of <<<"$servers"
IFS=, read -r -a module_of <<<"$modules"
[ ${#server_of[@]} = "$nodes" ] && [ ${#module_of[@]} = "$nodes" ] ||
	die "--servers and --modules name one per node"
for s in "${server_of[@]}"; do
	case $s in
	dm-ulogd) ;;
	cmirrord) cmirrord=${cmirrord:-$("$TOP/scripts/cmirrord.sh")} ||
		die "scripts/cmirrord.sh failed"
		[ -x "$cmirrord/cmirrord" ] || die "no cmirrord in $cmirrord (--cmirrord DIR)" ;;
	*) die "unknown server $s" ;;
	esac
done
for m in "${module_of[@]}"; do
	case $m in ours | c) ;; *) die "unknown module $m" ;; esac
done
phase_on() { [[ ",$phases," == *",$1,"* ]]; }
start=$(date +%s)
deadline=$((start + limit))

# --- Build: prerequisites, kernel, module, the cluster dm-ulogd, rootfs.
DMLU_CLUSTER=1 "$TOP/scripts/deps.sh"
kbuild=$("$TOP/scripts/kernel.sh" "$flavour")
log "kernel: $kbuild"
ko=$("$TOP/scripts/build-module.sh" "$kbuild" "$out/module")
c_ko="$kbuild/drivers/md/dm-log-userspace.ko"
[[ "$modules" != *c* ]] || [ -f "$c_ko" ] || die "no in-tree C module at $c_ko (CONFIG_DM_LOG_USERSPACE=m)"
export PATH="$HOME/.cargo/bin:$PATH"
# Dynamically linked (libcpg is a shared library), in a target directory of
# its own so the static tools of the other tests are left alone.
(cd "$TOP/tools" && cargo build --quiet --release --locked -p dm-ulogd --features cluster \
	--bin dm-ulogd --target-dir "$TOP/out/cluster-target" >&2) ||
	die "cargo build of dm-ulogd --features cluster failed"
ulogd="$TOP/out/cluster-target/release/dm-ulogd"
# Static: the request listener and mirror-check.
tools=$("$TOP/scripts/build-tools.sh")

root="$out/rootfs"
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc/corosync,proc,sys,dev,tmp,run,root}
mkdir -p "$root"/var/{lib/corosync,log/corosync} "$root/lib/modules/dmlu/rust" "$root/lib/modules/dmlu/c"
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
add_program /usr/bin/timeout /usr/bin/timeout
add_program /usr/sbin/corosync /usr/sbin/corosync
for t in corosync-quorumtool corosync-cfgtool corosync-cmapctl corosync-cpgtool; do
	add_program "/usr/sbin/$t" "/usr/sbin/$t"
done
add_program "$ulogd" /usr/sbin/dm-ulogd
add_program "$tools/ulog-test-server" /usr/bin/ulog-test-server
add_program "$tools/mirror-check" /usr/bin/mirror-check
if [ -n "$cmirrord" ]; then
	# The libdevmapper cmirrord was built with (dmsetup takes it too).
	install -D -m 755 "$cmirrord/libdevmapper.so.1.02" "$root/lib/x86_64-linux-gnu/libdevmapper.so.1.02"
	add_program "$cmirrord/cmirrord" /usr/sbin/cmirrord
fi
install -m 644 "$ko" "$root/lib/modules/dmlu/rust/dm-log-userspace.ko"
[ ! -f "$c_ko" ] || install -m 644 "$c_ko" "$root/lib/modules/dmlu/c/dm-log-userspace.ko"
install -m 755 "$TOP/scripts/guest/cluster-node.sh" "$root/init"
{
	cat <<'EOF'
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
EOF
	for i in $(seq "$nodes"); do
		printf '\tnode {\n\t\tring0_addr: 10.99.0.%s\n\t\tnodeid: %s\n\t\tname: n%s\n\t}\n' "$i" "$i" "$i"
	done
	echo "}"
	echo "quorum {"
	echo "	provider: corosync_votequorum"
	[ "$nodes" = 2 ] && echo "	two_node: 1"
	echo "}"
	cat <<'EOF'
logging {
	to_stderr: yes
	to_syslog: no
	to_logfile: no
	timestamp: on
}
EOF
} >"$root/etc/corosync/corosync.conf"
mkdir -p "$root/etc/corosync/uidgid.d"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
{ echo "127.0.0.1 localhost"; for i in $(seq "$nodes"); do echo "10.99.0.$i n$i"; done; } >"$root/etc/hosts"
cpio="$out/initramfs.cpio"
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) >"$cpio"

# --- The guests.
rm -rf "$out"/n[0-9]* "$out/host.ktap" "$out/figures.md"
img="$out/shared.img"
rm -f "$img"
truncate -s $((4096 * 512 + 2 * 64 * 1048576)) "$img"
case $link in udp | tcp | mcast) ;; *) die "--link is udp, tcp or mcast" ;; esac
port=$((20000 + $$ % 20000))
while ss -ltun 2>/dev/null | grep -E ":($port|$((port + 1))|$((port + 2))) " >/dev/null; do port=$((port + 3)); done
mcast="230.0.$((($$ % 200) + 1)).$((($$ / 200 % 200) + 1)):$port"

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

# boot NAME NODE: one guest; NAME names this boot.
boot() {
	local b=$1 node=$2 d="$out/$1" net i=$(($2 - 1))
	case $link in
	tcp) net="socket,id=n0,$([ "$node" = 1 ] && echo listen || echo connect)=127.0.0.1:$port" ;;
	udp) net="socket,id=n0,udp=127.0.0.1:$((port + 2 - node)),localaddr=127.0.0.1:$((port + node - 1))" ;;
	mcast) net="socket,id=n0,mcast=$mcast,localaddr=127.0.0.1" ;;
	esac
	rm -rf "$d"
	mkdir -p "$d"
	# clocksource=hpet: under TCG on a loaded host the TSC can calibrate
	# ten times too slow (PIT against HPET); the guest's clock then runs
	# ten times too fast and corosync's token times out.
	mkfifo "$d/cmd.in" "$d/cmd.out"
	: >"$d/out.log"
	qemu-system-x86_64 -accel tcg -nodefaults -no-reboot -display none -smp 1 -m "$mem" \
		-kernel "$kbuild/arch/x86/boot/bzImage" -initrd "$cpio" \
		-append "console=ttyS0 panic=-1 loglevel=7 clocksource=hpet dmlu.node=$node dmlu.boot=$b dmlu.server=${server_of[$i]} dmlu.module=${module_of[$i]} dmlu.log=$logtype$([ -n "$fault" ] && [ "$node" = "$nodes" ] && echo " dmlu.fault=$fault")" \
		-serial "file:$d/console.log" -serial "file:$d/out.log" -serial "pipe:$d/cmd" \
		-drive "file=$img,format=raw,if=virtio,cache=none,file.locking=off" \
		-netdev "$net" \
		-device "virtio-net-pci,netdev=n0,mac=52:54:00:99:00:0$node" \
		</dev/null >"$d/qemu.log" 2>&1 &
	qpid[$b]=$!
	sent[$b]=0 shown[$b]=0
	log "booted $b (node $node: ${server_of[$i]}, module ${module_of[$i]}; pid ${qpid[$b]}, -netdev $net)"
}
kill_boot() {
	kill -9 "${qpid[$1]}" 2>/dev/null || true
	wait "${qpid[$1]}" 2>/dev/null || true
	qpid[$1]=""
	log "killed $1's QEMU"
}

lines() { tr -d '\r' <"$out/$1/out.log"; }
# Print the new output lines of every running boot, prefixed.
show_new() {
	local b n
	for b in "${!qpid[@]}"; do
		[ -f "$out/$b/out.log" ] || continue
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
		# (It may have printed the line and powered off since the grep.)
		alive "$b" || lines "$b" | grep -E "$pat" >/dev/null ||
			die "$b: QEMU exited (see $out/$b/console.log)"
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
all_same() { local a=$1; shift; for x in "$@"; do same "$a" "$x" || return 1; done; }
phase() { log "--- $* ($(($(date +%s) - start)) s)"; }

# The nodes' current boots (node i is ${cur[i]}).
declare -a cur=()
all_boots() { local i; for i in $(seq "$nodes"); do echo "${cur[$i]}"; done; }

# start_nodes SUFFIX: boot every node (as n<i><SUFFIX>), wait for corosync,
# start the servers, create the mirror on each in turn and wait for sync.
start_nodes() {
	local i b
	for i in $(seq "$nodes"); do
		cur[$i]="n$i$1"
		boot "${cur[$i]}" "$i"
		if [ "$link" = tcp ] && [ "$i" = 1 ]; then
			for _ in $(seq 50); do ss -ltn | grep ":$port " >/dev/null && break; sleep 0.2; done
		fi
	done
	for b in $(all_boots); do wait_for "$b" '^READY' 900; done
	# shellcheck disable=SC2046 # one argument per boot
	on 600 $(all_boots) -- members "$nodes" 480
	# shellcheck disable=SC2046
	on 120 $(all_boots) -- server
	for b in $(all_boots); do on 900 "$b" -- mirror 840; done
}
# legs_agree WHAT: every node reads the legs identical, the same on all.
legs_agree() {
	local b md5s=()
	# shellcheck disable=SC2046
	on 900 $(all_boots) -- legs
	for b in $(all_boots); do md5s+=("$(last "$b" LEGS)"); done
	host_check "every node reads the same legs $1" all_same "${md5s[@]}"
}
# status_agree WHAT: every node shows the same mirror status.
status_agree() {
	local b st=()
	for b in $(all_boots); do st+=("$(last "$b" STATUS)"); done
	host_check "every node shows the same mirror status $1" all_same "${st[@]}"
}
# all_write SECONDS: each node writes its own 8 MiB (from 32 MiB on, past
# what the other phases verify), in the background.
all_write() {
	local i
	for i in $(seq "$nodes"); do send "${cur[$i]}" bg "$1" $((24 + 8 * i)) 8; done
	for i in $(seq "$nodes"); do wait_done "${cur[$i]}" 120; done
}
all_bgwait() {
	local b
	for b in $(all_boots); do send "$b" bgwait "$1"; done
	for b in $(all_boots); do wait_done "$b" $(($1 + 60)); done
}

phase "booting $nodes nodes (${servers}; modules ${modules}; ${logtype} log; ${link} link)"
start_nodes ""
# shellcheck disable=SC2046
on 1500 $(all_boots) -- sync 1400
status_agree "once in sync"

if phase_on base; then
	phase "base: each node reads what the others wrote"
	on 300 n1 -- write 0 4
	md5a=$(last n1 MD5 | cut -d' ' -f3)
	on 300 n2 -- verify 0 4 "$md5a"
	on 300 n2 -- write 4 4
	md5b=$(last n2 MD5 | cut -d' ' -f3)
	on 300 n1 -- verify 4 4 "$md5b"
	[ "$nodes" = 3 ] && on 300 n3 -- verify 0 4 "$md5a"
fi

if phase_on concurrent; then
	phase "concurrent: two nodes write the same regions, distinct blocks"
	send n1 stripe 0 16 4
	send n2 stripe 1 16 4
	wait_done n1 1200
	wait_done n2 1200
	send n1 stripe 0 16 4 verify
	send n2 stripe 1 16 4 verify
	wait_done n1 600
	wait_done n2 600
	legs_agree "after concurrent writes"
fi

if phase_on journal; then
	phase "journal: every node writes its own part at once (mirror-check)"
	# shellcheck disable=SC2046 # one argument per boot
	on 1800 $(all_boots) -- jwrite 128
	# shellcheck disable=SC2046
	on 600 $(all_boots) -- jverify
	legs_agree "after every node wrote its part"
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
	all_write 90
	sleep 5
	kill_boot "${cur[2]}"
	on 1200 n1 -- survive 600
	on 600 n1 -- bgwait 600
	on 1500 n1 -- sync 1400
	on 600 n1 -- legs
	phase "rejoin: node 2 boots again"
	cur[2]=n2b
	boot n2b 2
	wait_for n2b '^READY' 900
	on 600 n2b -- members "$nodes" 480
	on 120 n2b -- server
	on 900 n2b -- mirror 840
	on 1500 n1 n2b -- sync 1400
	status_agree "after the rejoin"
	legs_agree "after the rejoin"
	if phase_on base; then
		on 300 n2b -- verify 0 4 "$md5a"
		on 300 n2b -- verify 4 4 "$md5b"
	fi
	if phase_on concurrent; then
		send n1 stripe 0 16 4 verify
		send n2b stripe 1 16 4 verify
		wait_done n1 600
		wait_done n2b 600
	fi
fi

if phase_on partition; then
	phase "partition: node 3 is cut off while all write"
	all_write 150
	sleep 10
	on 60 "${cur[3]}" -- isolate
	on 600 "${cur[3]}" -- quorum NO 300
	on 600 "${cur[1]}" "${cur[2]}" -- quorum YES 300
	on 60 "${cur[3]}" -- waiting
	# The minority's writes stop; the majority's go on.
	send "${cur[1]}" progress 20
	send "${cur[2]}" progress 20
	send "${cur[3]}" progress 20
	for b in $(all_boots); do wait_done "$b" 120; done
	p1=$(last "${cur[1]}" PROGRESS) p2=$(last "${cur[2]}" PROGRESS) p3=$(last "${cur[3]}" PROGRESS)
	log "writes in 20 s cut off: node 1 $p1, node 2 $p2, node 3 $p3"
	host_check "the majority goes on writing while node 3 is cut off ($p1, $p2 writes in 20 s)" \
		test "${p1:-0}" -gt 0 -a "${p2:-0}" -gt 0
	host_check "node 3's writes stop while it has no quorum ($p3 writes in 20 s)" \
		test "${p3:-1}" -eq 0
	phase "partition: node 3 comes back"
	on 60 "${cur[3]}" -- reconnect
	on 600 "${cur[3]}" -- quorum YES 300
	all_bgwait 600
	# shellcheck disable=SC2046
	on 1500 $(all_boots) -- sync 1400
	status_agree "after the merge"
	legs_agree "after the merge"
fi

if phase_on suspend; then
	phase "suspend: dmsetup suspend on every node at once, while all write"
	all_write 60
	sleep 5
	# shellcheck disable=SC2046
	on 600 $(all_boots) -- suspend 300
	# shellcheck disable=SC2046
	on 600 $(all_boots) -- resume 300
	all_bgwait 600
	# shellcheck disable=SC2046
	on 1500 $(all_boots) -- sync 1400
	legs_agree "after suspending every node"
fi

if phase_on rejoin; then
	phase "rejoin: node 2 is killed and boots again while the others write"
	all_write 240
	sleep 5
	kill_boot "${cur[2]}"
	on 1200 "${cur[1]}" -- survive 600
	cur[2]=n2r
	boot n2r 2
	wait_for n2r '^READY' 900
	on 600 n2r -- members "$nodes" 480
	on 120 n2r -- server
	on 900 n2r -- mirror 840
	for i in 1 3; do send "${cur[$i]}" bgwait 600; done
	for i in 1 3; do wait_done "${cur[$i]}" 660; done
	# shellcheck disable=SC2046
	on 1500 $(all_boots) -- sync 1400
	status_agree "after the rejoin"
	legs_agree "after the rejoin"
fi

if phase_on powercut; then
	phase "powercut: every node dies at once while all write"
	all_write 120
	sleep 15
	for b in $(all_boots); do kill_boot "$b"; done
	# What the log device says, read from the host: regions clean in dm-log's
	# bitmap (at byte 1024 of the device, bit i of byte i/8).
	regions=128
	clean=$(dd if="$img" bs=4096 count=1 status=none | od -An -tu1 -v -j1024 -N$((regions / 8)) |
		awk '{for (i = 1; i <= NF; i++) { v = $i; for (b = 0; b < 8; b++) { c += v % 2; v = int(v / 2) } } }
			END {print c + 0}')
	log "the log device calls $clean of $regions regions clean"
	host_check "writes were in flight: some regions dirty on the log device ($((regions - clean)))" \
		test "$clean" -lt "$regions"
	host_check "not everything dirty ($clean clean)" test "$clean" -gt 0
	phase "powercut: every node boots again"
	start_nodes c
	# What the first node up started the state from (dm-ulogd says).
	first=$(lines "${cur[1]}" | sed -n 's/.*starting it from log device [0-9:]*: \([0-9]*\) of.*/\1/p' | head -n1)
	host_check "the first mirror up resyncs exactly the dirty regions (${first:-?} in sync, the device said $clean)" \
		test "${first:-x}" = "$clean"
	# shellcheck disable=SC2046
	on 1500 $(all_boots) -- sync 1400
	legs_agree "after the power cut"
fi

phase "finish"
# shellcheck disable=SC2046
on 120 $(all_boots) -- requests
for b in $(all_boots); do log "requests of $b: $(last "$b" REQUESTS)"; done
for b in $(all_boots); do send "$b" finish; done
for b in $(all_boots); do
	wait_for "$b" '^DMLU-GUEST-DONE' 300
	for _ in $(seq 60); do alive "$b" || break; sleep 1; done
done
cleanup
elapsed=$(($(date +%s) - start))

# --- Verdict.
fail=()
for d in "$out"/n*/; do
	b=$(basename "$d")
	nok=$(lines "$b" | grep -E '^not ok ' || true)
	[ -n "$nok" ] && fail+=("$b: failed checks:"$'\n'"$nok")
	splats=$(grep -a -n -F -f "$TOP/scripts/splat-patterns" "$out/$b/console.log" || true)
	[ -n "$splats" ] && fail+=("$b: kernel log splats:"$'\n'"$(head -n 20 <<<"$splats")")
done
for b in $(all_boots); do
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
		echo "| 4 KiB random writes, O_DIRECT, iodepth 1, 10 s; link: $link; servers: $servers | IOPS node 1 | IOPS node 2 | group messages per write | waited rounds per write |"
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
			echo "| $what | $(fig n1 $l iops) | $(fig n2 $l iops) | $(per $m $w) | $(per $r $w) |"
		done
		echo "| dm-linear on the shared disk (no log), node 1 alone | $(fig n1 linear iops) | | | |"
	} >"$out/figures.md"
	cat "$out/figures.md"
fi

log "ran ${elapsed}s; checks passed: $(cat "$out"/n*/out.log "$out/host.ktap" 2>/dev/null | tr -d '\r' | grep -c '^ok ')"
if [ ${#fail[@]} -gt 0 ]; then
	for f in "${fail[@]}"; do printf '[cluster.sh] FAIL: %s\n' "$f" >&2; done
	exit 1
fi
log "PASS"

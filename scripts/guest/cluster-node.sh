#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# /init of one node of the cluster tests (`make cluster-check`,
# scripts/cluster.sh). The kernel command line says who the node is:
#
#   dmlu.node=N         node N, address 10.99.0.N on the private link
#   dmlu.boot=NAME      the name of this boot (n1, n2b, ...)
#   dmlu.server=S       the log server: dm-ulogd (--cluster) or cmirrord
#   dmlu.module=M       the kernel module: ours (the Rust module) or c (the
#                       in-tree C module)
#   dmlu.log=L          the mirror's log: core (clustered-core) or disk
#                       (clustered-disk on a dm-linear of the shared disk)
#   dmlu.fault=F        a fault, to show the checks fail: bypass (this
#                       node's journal writes go to leg 0 alone, neither
#                       marked nor mirrored)
#
# Every node shares one virtio disk, /dev/vda:
#
#   sectors 0-2047        the log device (dm-linear cl-log), disk logs
#   sectors 2048-4095     scratch (dm-linear cl-scratch, for figures)
#   leg 0                 LEG_SECTORS from sector 4096 (dm-linear cl-leg0)
#   leg 1                 LEG_SECTORS after it      (dm-linear cl-leg1)
#
# and the same mirror over the two legs, with a userspace log. At boot the
# node mounts what it needs, brings its link up, loads the module and
# starts corosync, says READY, then runs the commands the host writes on
# the third serial port (/dev/ttyS2), one per line, answering each with
# "DONE <command> rc=<n>". Output, with KTAP-style "ok N - ..." /
# "not ok N - ..." lines, goes to the second serial port. `finish` tears
# everything down, prints DMLU-GUEST-DONE and powers off.

export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
export HOME=/root DM_DISABLE_UDEV=1
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs -o size=50% tmp /tmp
mount -t tmpfs run /run
mkdir -p /dev/shm /dev/pts
mount -t tmpfs shm /dev/shm
ln -sf /proc/self/fd /dev/fd
exec </dev/null >/dev/ttyS1 2>&1
stty -F /dev/ttyS1 raw -echo 2>/dev/null
stty -F /dev/ttyS2 raw -echo 2>/dev/null

arg() { sed -n "s/.*dmlu\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
NODE=$(arg node)
BOOT=$(arg boot)
SERVER=$(arg server)
MODULE=$(arg module)
LOGTYPE=$(arg log)
FAULT=$(arg fault)
LEG_SECTORS=131072          # 64 MiB per leg
REGION=1024                 # sectors: 512 KiB regions, 128 of them
REGIONS=$((LEG_SECTORS / REGION))
NAME=cm
UUID=DMLU-cluster-mirror-0001
SERVER_LOG=/tmp/server.log
TRACE=/tmp/requests.trace     # every request the kernel sent (a listener)
PART_MB=10                    # each node's part for mirror-check
COROSYNC_LOG=/tmp/corosync.log

n=0
ok() { n=$((n + 1)); echo "ok $n - $BOOT: $*"; }
not_ok() { n=$((n + 1)); echo "not ok $n - $BOOT: $*"; return 1; }
# check DESC CMD...: ok when CMD succeeds.
check() { local d=$1; shift; if "$@"; then ok "$d"; else not_ok "$d"; fi; }
now() { date +%s; }
status() { dmsetup status $NAME 2>/dev/null; }
# "in-sync/total" of the mirror.
sync_ratio() { status | awk '{print $(5 + $4)}'; }
all_in_sync() { [ -n "$1" ] && [ "${1%/*}" = "${1#*/}" ]; }
server_pid() { cat /tmp/server.pid 2>/dev/null; }
# Writes the mirror device completed (field 5 of its block stat).
dm_writes() {
	local d
	for d in /sys/block/dm-*; do
		[ "$(cat "$d/dm/name" 2>/dev/null)" = "$NAME" ] || continue
		awk '{print $5}' "$d/stat"
		return
	done
	echo 0
}
# json_num JSON KEY: the first number stored under "KEY".
json_num() { grep -o "\"$2\":[0-9.]*" <<<"$1" | head -n1 | cut -d: -f2; }
# The server's cumulative counters: "<group messages> <flushes> <waited
# rounds>" (dm-ulogd only; "0 0 0" for another server).
counters() {
	local j
	[ "$SERVER" = dm-ulogd ] || { echo 0 0 0; return; }
	j=$(dm-ulogd stats --json) || { echo 0 0 0; return; }
	# The cluster object comes last: its counters are the groups' totals.
	j=${j##*\"cluster\":}
	echo "$(json_num "$j" messages) $(json_num "$j" flushes) $(json_num "$j" waited_rounds)"
}

# Commands from the host. Each prints its own ok/not ok lines.

# members COUNT TIMEOUT: wait for a corosync membership of COUNT nodes.
cmd_members() {
	local t0 nodes=""
	t0=$(now)
	while [ $(($(now) - t0)) -lt "${2:-180}" ]; do
		nodes=$(corosync-quorumtool -s 2>/dev/null | awk '/^Nodes:/ {print $2}')
		[ "$nodes" = "$1" ] && break
		sleep 1
	done
	corosync-quorumtool -s 2>&1 | grep -E '^(Nodes|Quorate|Ring ID)' | sed 's/^/# /'
	check "corosync membership of $1 (after $(($(now) - t0)) s)" [ "$nodes" = "$1" ]
}

# server: start the log server.
cmd_server() {
	case $SERVER in
	dm-ulogd)
		dm-ulogd --cluster --timestamps >$SERVER_LOG 2>&1 &
		echo $! >/tmp/server.pid
		for _ in $(seq 100); do
			dm-ulogd stats >/dev/null 2>&1 && break
			sleep 0.2
		done
		sed 's/^/# server: /' $SERVER_LOG
		check "dm-ulogd --cluster serving" dm-ulogd stats
		;;
	cmirrord)
		# It logs to syslog.
		syslogd -n -O /tmp/syslog >/dev/null 2>&1 &
		cmirrord -f >$SERVER_LOG 2>&1 &
		echo $! >/tmp/server.pid
		sleep 2
		check "cmirrord running" kill -0 "$(server_pid)"
		;;
	*) not_ok "unknown server '$SERVER'" ;;
	esac
}

linear() { # NAME START SECTORS
	dmsetup create "$1" --table "0 $3 linear /dev/vda $2"
}

make_devices() {
	linear cl-leg0 4096 $LEG_SECTORS && linear cl-leg1 $((4096 + LEG_SECTORS)) $LEG_SECTORS &&
		{ [ "$LOGTYPE" != disk ] || linear cl-log 0 2048; }
}

# mirror [TIMEOUT]: the legs (and log device) over the shared disk and the
# mirror on them (it joins the log's group: a node without quorum waits).
cmd_mirror() {
	local t0 table logargs rc
	check "devices: dm-linear over /dev/vda" make_devices || return 1
	case $LOGTYPE in
	disk) logargs="$UUID clustered-disk /dev/mapper/cl-log $REGION" ;;
	*) logargs="$UUID clustered-core $REGION sync" ;;
	esac
	# shellcheck disable=SC2086 # count the words
	set -- "${1:-600}" $logargs
	table="0 $LEG_SECTORS mirror userspace $(($# - 1)) $logargs"
	table="$table 2 /dev/mapper/cl-leg0 0 /dev/mapper/cl-leg1 0 1 handle_errors"
	echo "# table: $table"
	t0=$(now)
	timeout "$1" dmsetup create $NAME -u "$UUID" --table "$table"
	rc=$?
	check "mirror created (joined the log's group in $(($(now) - t0)) s)" [ $rc = 0 ]
	echo "STATUS $(status)"
	grep -E "joining|holds|received|starting|left|merged|lost|error|warning" $SERVER_LOG |
		sed 's/^/# server: /'
}

# sync TIMEOUT: wait until every region is in sync; print the status.
cmd_sync() {
	local t0 r=""
	t0=$(now)
	while [ $(($(now) - t0)) -lt "${1:-600}" ]; do
		r=$(sync_ratio)
		all_in_sync "$r" && break
		sleep 1
	done
	echo "STATUS $(status)"
	check "mirror in sync: $r (after $(($(now) - t0)) s)" all_in_sync "$r"
}

# status: print the mirror's status line.
cmd_status() {
	echo "STATUS $(status)"
}

# write OFF_MB COUNT_MB: random data through the mirror; prints its md5.
cmd_write() {
	dd if=/dev/urandom of=/tmp/w bs=1M count="$2" status=none
	echo "MD5 $1 $2 $(md5sum </tmp/w | cut -d' ' -f1)"
	check "wrote $2 MiB at $1 MiB (O_DIRECT)" \
		dd if=/tmp/w of=/dev/mapper/$NAME bs=1M seek="$1" oflag=direct conv=fsync status=none
}

# verify OFF_MB COUNT_MB MD5: read back (O_DIRECT) what a node wrote.
cmd_verify() {
	local sum
	sum=$(dd if=/dev/mapper/$NAME bs=1M skip="$1" count="$2" iflag=direct status=none | md5sum | cut -d' ' -f1)
	check "read $2 MiB at $1 MiB written by a node: md5 matches" [ "$sum" = "$3" ]
}

# stripe PART OFF_MB MB [verify]: every other 4 KiB block of the area, from
# block PART (0 or 1), so two nodes write the same regions but not the same
# blocks; fio checks its own blocks (after writing, or only check them).
cmd_stripe() {
	local mode=(--do_verify=1) what=written
	[ "${4:-}" = verify ] && mode=(--verify_only) what=verified
	if fio --name=stripe --filename=/dev/mapper/$NAME --rw=write:4k --bs=4k --direct=1 \
		--ioengine=psync --offset=$(($2 * 1048576 + $1 * 4096)) --size=$(($3 * 1048576)) \
		--verify=crc32c "${mode[@]}" --output-format=terse >/tmp/stripe.out 2>&1; then
		ok "stripe $1: every other 4 KiB block of $3 MiB at $2 MiB $what"
	else
		head -c 2000 /tmp/stripe.out | sed 's/^/# /'
		not_ok "stripe $1: every other 4 KiB block of $3 MiB at $2 MiB $what"
	fi
}

# legs: the two legs read O_DIRECT are identical; prints their md5.
cmd_legs() {
	local a b
	a=$(dd if=/dev/mapper/cl-leg0 bs=1M iflag=direct status=none | md5sum | cut -d' ' -f1)
	b=$(dd if=/dev/mapper/cl-leg1 bs=1M iflag=direct status=none | md5sum | cut -d' ' -f1)
	echo "LEGS $a $b"
	check "legs identical ($a)" [ -n "$a" -a "$a" = "$b" ]
}

# iops LABEL SECONDS OFF_MB MB: 4 KiB random writes, O_DIRECT, iodepth 1,
# and the group messages this node sent per write.
cmd_iops() {
	local label=$1 c0 c1 t iops kb writes msgs rounds
	c0=$(counters)
	fio --name=iops --filename=/dev/mapper/$NAME --rw=randwrite --bs=4k --direct=1 \
		--ioengine=psync --iodepth=1 --offset=$(($3 * 1048576)) --size=$(($4 * 1048576)) \
		--runtime="$2" --time_based --output-format=terse >/tmp/iops.out 2>&1
	c1=$(counters)
	t=$(tail -n1 /tmp/iops.out)
	kb=$(cut -d';' -f47 <<<"$t") iops=$(cut -d';' -f49 <<<"$t")
	writes=$((kb / 4))
	# shellcheck disable=SC2086 # two lists of three numbers
	set -- $c0 $c1
	msgs=$(($4 - $1)) rounds=$(($6 - $3))
	echo "FIGURE $label node=$NODE iops=$iops writes=$writes messages=$msgs rounds=$rounds"
	check "fio $label: $iops IOPS, $writes writes, $msgs group messages, $rounds waited rounds" \
		[ "$writes" -gt 0 ]
}

# linear SECONDS: the same fio run on a dm-linear over the shared disk's
# scratch sectors, for comparison (no log, no cluster).
cmd_linear() {
	local t iops
	linear cl-scratch 2048 2048 || { not_ok "dm-linear scratch device"; return 1; }
	fio --name=linear --filename=/dev/mapper/cl-scratch --rw=randwrite --bs=4k --direct=1 \
		--ioengine=psync --iodepth=1 --runtime="$1" --time_based --output-format=terse >/tmp/iops.out 2>&1
	dmsetup remove cl-scratch
	t=$(tail -n1 /tmp/iops.out)
	iops=$(cut -d';' -f49 <<<"$t")
	echo "FIGURE linear node=$NODE iops=$iops writes=$(($(cut -d';' -f47 <<<"$t") / 4)) messages=0 rounds=0"
	check "fio on dm-linear: $iops IOPS" [ "${iops:-0}" -gt 0 ]
}

# bg SECONDS OFF_MB MB: random writes in the background, time based.
cmd_bg() {
	fio --name=bg --filename=/dev/mapper/$NAME --rw=randwrite --bs=4k --direct=1 \
		--ioengine=psync --offset=$(($2 * 1048576)) --size=$(($3 * 1048576)) \
		--runtime="$1" --time_based --output-format=terse >/tmp/bg.out 2>&1 &
	echo $! >/tmp/bg.pid
	sleep 2
	check "writing in the background" kill -0 "$(cat /tmp/bg.pid)"
}

# bgwait TIMEOUT: the background writes finish without an error.
cmd_bgwait() {
	local t0 pid r
	t0=$(now) pid=$(cat /tmp/bg.pid)
	while kill -0 "$pid" 2>/dev/null && [ $(($(now) - t0)) -lt "$1" ]; do sleep 1; done
	if kill -0 "$pid" 2>/dev/null; then
		not_ok "background writes did not finish within $1 s"
		return 1
	fi
	wait "$pid"
	r=$?,$(tail -n1 /tmp/bg.out | cut -d';' -f5)
	check "background writes finished ($(($(tail -n1 /tmp/bg.out | cut -d';' -f47) / 4)) writes; fio rc,error $r)" \
		[ "$r" = 0,0 ]
}

# writes: the writes the mirror completed so far.
cmd_writes() {
	echo "WRITES $(dm_writes)"
}

# progress SECONDS: writes the mirror completes within SECONDS.
cmd_progress() {
	local a b
	a=$(dm_writes)
	sleep "$1"
	b=$(dm_writes)
	echo "PROGRESS $((b - a))"
}

# quorum YES|NO TIMEOUT: wait until this node's partition is quorate (or
# not), as corosync and the log server see it.
cmd_quorum() {
	local t0 q="" want
	want=$([ "$1" = YES ] && echo Yes || echo No)
	t0=$(now)
	while [ $(($(now) - t0)) -lt "$2" ]; do
		q=$(corosync-quorumtool -s 2>/dev/null | awk '/^Quorate:/ {print $2}')
		[ "$q" = "$want" ] && break
		sleep 1
	done
	corosync-quorumtool -s 2>&1 | grep -E '^(Nodes|Quorate|Ring ID)' | sed 's/^/# /'
	check "quorate: $want (after $(($(now) - t0)) s)" [ "$q" = "$want" ]
	if [ "$SERVER" = dm-ulogd ]; then
		sleep 2
		dm-ulogd stats | grep -E '^cluster|cluster:' | sed 's/^/# /'
	fi
}

# waiting: the log server says this node's FLUSHes wait for quorum.
cmd_waiting() {
	local j
	j=$(dm-ulogd stats --json)
	grep -o '"waiting_for":[^,]*' <<<"$j" | sed 's/^/# /'
	check "dm-ulogd: the log waits for quorum" grep -q '"waiting_for":"no quorum"' <<<"$j"
}

# isolate / reconnect: cut this node off the private link, or back.
cmd_isolate() {
	check "link down: this node is cut off" ip link set eth0 down
}
cmd_reconnect() {
	ip link set eth0 up
	ip addr add "10.99.0.$NODE/24" dev eth0 2>/dev/null
	check "link up: this node is back" ip link show eth0
}

# suspend TIMEOUT / resume TIMEOUT: the mirror, with a time limit.
cmd_suspend() {
	local t0 rc
	t0=$(now)
	timeout "$1" dmsetup suspend $NAME
	rc=$?
	check "dmsetup suspend completed (in $(($(now) - t0)) s)" [ $rc = 0 ]
}
cmd_resume() {
	local t0 rc
	t0=$(now)
	timeout "$1" dmsetup resume $NAME
	rc=$?
	check "dmsetup resume completed (in $(($(now) - t0)) s)" [ $rc = 0 ]
}

# survive TIMEOUT: another node was killed: wait until our server drops it,
# the resync is over and our own writes finished.
cmd_survive() {
	local t0
	t0=$(now)
	while [ $(($(now) - t0)) -lt "${1:-300}" ]; do
		grep -q 'left with\|left' $SERVER_LOG && break
		sleep 1
	done
	grep -E 'left|ESRCH|restart its resync' $SERVER_LOG | sed 's/^/# server: /'
	check "the dead node left the log's group (noticed after $(($(now) - t0)) s)" \
		grep -q 'left' $SERVER_LOG
	echo "# status now: $(status)"
}

# clean: how many regions the log device calls clean (disk logs).
cmd_clean() {
	local c
	c=$(dd if=/dev/mapper/cl-log bs=4096 count=1 iflag=direct status=none |
		od -An -tu1 -v -j1024 -N$(((REGIONS + 7) / 8)) |
		awk -v n=$REGIONS '{for (i = 1; i <= NF; i++) { v = $i
			for (b = 0; b < 8; b++) { if (r < n && v % 2) c++; r++; v = int(v / 2) } } }
			END {print c + 0}')
	echo "CLEAN $c"
}

# Node N's part of the mirror for mirror-check: PART_MB from 32 MiB +
# PART_MB * (N - 1), written by no other node and no earlier phase.
part_start() { echo $(((32 + PART_MB * (NODE - 1)) * 2048)); }

# jwrite WRITES: mirror-check writes this node's part through the mirror
# (all nodes at once), and journals the last acknowledged write of every
# block.
cmd_jwrite() {
	local dev=/dev/mapper/$NAME what="the mirror" rc
	if [ "$FAULT" = bypass ]; then
		dev=/dev/mapper/cl-leg0 what="leg 0 alone (fault: bypass)"
	fi
	dmsetup create cl-part --table "0 $((PART_MB * 2048)) linear $dev $(part_start)" ||
		{ not_ok "dm-linear over this node's part"; return 1; }
	mirror-check write /dev/mapper/cl-part --journal /tmp/journal --seed "$NODE" \
		--writes "$1" >/tmp/jwrite.out 2>&1
	rc=$?
	dmsetup remove cl-part
	sed 's/^/# mirror-check: /' /tmp/jwrite.out
	grep -q '^errors=0$' /tmp/jwrite.out || rc=1
	check "mirror-check: $1 writes of $PART_MB MiB at $(($(part_start) / 2048)) MiB through $what" \
		[ $rc = 0 ]
}

# jverify: both legs hold, in this node's part, the last write the mirror
# acknowledged for every block (zeros where none).
cmd_jverify() {
	local rc
	dmsetup create cl-part0 --table "0 $((PART_MB * 2048)) linear /dev/mapper/cl-leg0 $(part_start)" &&
		dmsetup create cl-part1 --table "0 $((PART_MB * 2048)) linear /dev/mapper/cl-leg1 $(part_start)" ||
		{ not_ok "dm-linears over this node's part of the legs"; return 1; }
	mirror-check verify --journal /tmp/journal /dev/mapper/cl-part0 /dev/mapper/cl-part1 \
		>/tmp/jverify.out 2>&1
	rc=$?
	dmsetup remove cl-part1; dmsetup remove cl-part0
	sed 's/^/# mirror-check: /' /tmp/jverify.out
	check "mirror-check: both legs hold this node's acknowledged writes" [ $rc = 0 ]
}

# requests: what the kernel sent this node's log server so far, as a
# passive listener traced it: in all and per type.
cmd_requests() {
	local total types
	total=$(wc -l <$TRACE 2>/dev/null || echo 0)
	types=$(sed -n 's/.* type=\([A-Z_]*\) .*/\1/p' $TRACE 2>/dev/null | sort | uniq -c |
		awk '{printf " %s=%s", $2, $1}')
	echo "REQUESTS node=$NODE module=$MODULE server=$SERVER total=$total$types"
	check "the kernel sent $SERVER $total requests (traced)" [ "$total" -gt 0 ]
}

cmd_dump() {
	echo "# --- server log"; sed 's/^/# /' $SERVER_LOG
	[ -f /tmp/syslog ] && { echo "# --- syslog (tail)"; tail -n 40 /tmp/syslog | sed 's/^/# /'; }
	echo "# --- corosync log (tail)"; tail -n 30 $COROSYNC_LOG | sed 's/^/# /'
	echo "# --- status: $(status)"
	[ "$SERVER" = dm-ulogd ] && dm-ulogd stats 2>&1 | sed 's/^/# stats: /'
}

cmd_finish() {
	local pid
	dmsetup remove $NAME || not_ok "mirror removed"
	dmsetup remove cl-leg1; dmsetup remove cl-leg0; dmsetup remove cl-log 2>/dev/null
	pid=$(server_pid)
	if [ -n "$pid" ]; then
		kill "$pid"
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
	fi
	cmd_dump
	kill "$(cat /tmp/corosync.pid)" 2>/dev/null
	kill "$(cat /tmp/listener.pid)" 2>/dev/null
	rmmod dm_log_userspace
	echo "1..$n"
}

# Boot.
hostname "n$NODE"
ip link set lo up
ip addr add "10.99.0.$NODE/24" dev eth0
ip link set eth0 up
mkdir -p /var/lib/corosync /var/log/corosync /run/corosync
echo "DMLU-CLUSTER-START node=$NODE boot=$BOOT server=$SERVER module=$MODULE log=$LOGTYPE${FAULT:+ fault=$FAULT} kernel=$(uname -r) cpus=$(nproc)"
case $MODULE in
c) check "the in-tree C module loaded" insmod /lib/modules/dmlu/c/dm-log-userspace.ko ;;
*) check "our module loaded" insmod /lib/modules/dmlu/rust/dm-log-userspace.ko ;;
esac
# A passive listener traces every request the kernel sends (the server
# answers them): the request counts per node.
ulog-test-server --listen-only --trace $TRACE --ready /tmp/listener.ready 2>/tmp/listener.err &
echo $! >/tmp/listener.pid
for _ in $(seq 50); do [ -f /tmp/listener.ready ] && break; sleep 0.1; done
check "request listener ready" [ -f /tmp/listener.ready ]
corosync -f >$COROSYNC_LOG 2>&1 &
echo $! >/tmp/corosync.pid
sleep 1
check "corosync started" kill -0 "$(cat /tmp/corosync.pid)"
echo "READY node=$NODE"

exec 3</dev/ttyS2
while IFS= read -r -u 3 line; do
	line=${line%$'\r'}
	[ -n "$line" ] || continue
	# shellcheck disable=SC2086 # a command and its arguments
	set -- $line
	cmd=$1; shift
	echo "# command: $line"
	if declare -F "cmd_$cmd" >/dev/null; then
		"cmd_$cmd" "$@"
		rc=$?
	else
		not_ok "unknown command '$cmd'"
		rc=1
	fi
	echo "DONE $cmd rc=$rc"
	[ "$cmd" = finish ] && break
done
echo "DMLU-GUEST-DONE rc=0"
sync
poweroff -f

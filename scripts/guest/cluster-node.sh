#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# /init of one node of the two-node cluster test (`make cluster-check`,
# scripts/cluster.sh). The node is dmlu.node=1|2 on the kernel command line;
# its address is 10.99.0.<node>, on the private link to the other guest.
# Both nodes share one virtio disk, /dev/vda:
#
#   sectors 0-4095        reserved
#   leg 0                 LEG_SECTORS from sector 4096 (dm-linear cl-leg0)
#   leg 1                 LEG_SECTORS after it      (dm-linear cl-leg1)
#
# and the same mirror over the two legs, with a clustered-core userspace log
# served by `dm-ulogd --cluster`. At boot the node mounts what it needs,
# brings its link up, loads our module and starts corosync, says READY, then
# runs the commands the host writes on the third serial port (/dev/ttyS2),
# one per line, and answers each with "DONE <command> rc=<n>". Output, with
# KTAP-style "ok N - ..." / "not ok N - ..." lines, goes to the second serial
# port. `finish` tears everything down, prints DMLU-GUEST-DONE and powers off.

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
MODULE=/lib/modules/dmlu/rust/dm-log-userspace.ko
LEG_SECTORS=131072          # 64 MiB per leg
REGION=1024                 # sectors: 512 KiB regions, 128 of them
NAME=cm
UUID=DMLU-cluster-mirror-0001
ULOGD_LOG=/tmp/ulogd.log
COROSYNC_LOG=/tmp/corosync.log

n=0
ok() { n=$((n + 1)); echo "ok $n - n$NODE: $*"; }
not_ok() { n=$((n + 1)); echo "not ok $n - n$NODE: $*"; return 1; }
# check DESC CMD...: ok when CMD succeeds.
check() { local d=$1; shift; if "$@"; then ok "$d"; else not_ok "$d"; fi; }
now() { date +%s; }
status() { dmsetup status $NAME 2>/dev/null; }
# "in-sync/total" of the mirror.
sync_ratio() { status | awk '{print $(5 + $4)}'; }
all_in_sync() { [ -n "$1" ] && [ "${1%/*}" = "${1#*/}" ]; }
ulogd_pid() { cat /tmp/ulogd.pid 2>/dev/null; }

# The log server's cumulative counters (SIGUSR1 makes it log them): prints
# "<group messages> <flushes> <waited rounds>".
counters() {
	local before pid
	pid=$(ulogd_pid)
	before=$(grep -c 'stats: cluster totals' $ULOGD_LOG)
	kill -USR1 "$pid" || return 1
	for _ in $(seq 100); do
		[ "$(grep -c 'stats: cluster totals' $ULOGD_LOG)" -gt "$before" ] && break
		sleep 0.1
	done
	grep 'stats: cluster totals' $ULOGD_LOG | tail -n1 |
		sed -E 's/.*totals: [0-9]+ requests, ([0-9]+) flushes, ([0-9]+) group messages.* ([0-9]+) waited rounds.*/\2 \1 \3/'
}

# Commands from the host. Each prints its own ok/not ok lines.

# members TIMEOUT: wait for a corosync membership of two nodes.
cmd_members() {
	local t0 nodes=""
	t0=$(now)
	while [ $(($(now) - t0)) -lt "${1:-180}" ]; do
		nodes=$(corosync-quorumtool -s 2>/dev/null | awk '/^Nodes:/ {print $2}')
		[ "$nodes" = 2 ] && break
		sleep 1
	done
	corosync-quorumtool -s 2>&1 | grep -E '^(Nodes|Quorate|Ring ID)' | sed 's/^/# /'
	check "corosync membership of 2 (after $(($(now) - t0)) s)" [ "$nodes" = 2 ]
}

# ulogd: start dm-ulogd --cluster.
cmd_ulogd() {
	dm-ulogd --cluster --timestamps >$ULOGD_LOG 2>&1 &
	echo $! >/tmp/ulogd.pid
	for _ in $(seq 100); do
		grep -q 'serving clustered userspace logs' $ULOGD_LOG && break
		sleep 0.2
	done
	sed 's/^/# ulogd: /' $ULOGD_LOG
	check "dm-ulogd --cluster serving" grep -q 'serving clustered userspace logs' $ULOGD_LOG
}

make_legs() {
	dmsetup create cl-leg0 --table "0 $LEG_SECTORS linear /dev/vda 4096" &&
		dmsetup create cl-leg1 --table "0 $LEG_SECTORS linear /dev/vda $((4096 + LEG_SECTORS))"
}

# mirror: the two legs over the shared disk and the mirror on them.
cmd_mirror() {
	local t0 table
	check "legs: two dm-linear over /dev/vda" make_legs || return 1
	table="0 $LEG_SECTORS mirror userspace 4 $UUID clustered-core $REGION sync"
	table="$table 2 /dev/mapper/cl-leg0 0 /dev/mapper/cl-leg1 0 1 handle_errors"
	echo "# table: $table"
	t0=$(now)
	dmsetup create $NAME -u "$UUID" --table "$table"
	check "mirror created (joined the log's group in $(($(now) - t0)) s)" [ $? = 0 ]
	grep -E "joining|holds|received|left|takes over" $ULOGD_LOG | sed 's/^/# ulogd: /'
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
# reserved sectors, for comparison (no log, no cluster).
cmd_linear() {
	local t iops
	dmsetup create cl-scratch --table "0 4096 linear /dev/vda 0" || { not_ok "dm-linear scratch device"; return 1; }
	fio --name=linear --filename=/dev/mapper/cl-scratch --rw=randwrite --bs=4k --direct=1 \
		--ioengine=psync --iodepth=1 --runtime="$1" --time_based --output-format=terse >/tmp/iops.out 2>&1
	dmsetup remove cl-scratch
	t=$(tail -n1 /tmp/iops.out)
	iops=$(cut -d';' -f49 <<<"$t")
	echo "FIGURE linear node=$NODE iops=$iops writes=$(($(cut -d';' -f47 <<<"$t") / 4)) messages=0 rounds=0"
	check "fio on dm-linear: $iops IOPS" [ "${iops:-0}" -gt 0 ]
}

# bg SECONDS OFF_MB MB: random writes in the background (for the kill test).
cmd_bg() {
	fio --name=bg --filename=/dev/mapper/$NAME --rw=randwrite --bs=4k --direct=1 \
		--ioengine=psync --offset=$(($2 * 1048576)) --size=$(($3 * 1048576)) \
		--runtime="$1" --time_based --output-format=terse >/tmp/bg.out 2>&1 &
	echo $! >/tmp/bg.pid
	sleep 2
	check "writing in the background" kill -0 "$(cat /tmp/bg.pid)"
}

# survive TIMEOUT: the other node was killed: wait until our server drops it,
# the resync is over and our own writes finished.
cmd_survive() {
	local t0 r
	t0=$(now)
	while [ $(($(now) - t0)) -lt "${1:-300}" ]; do
		grep -q 'left with' $ULOGD_LOG && break
		sleep 1
	done
	grep -E 'left|ESRCH|asking the kernel' $ULOGD_LOG | sed 's/^/# ulogd: /'
	check "the dead node left the log's group (noticed after $(($(now) - t0)) s)" \
		grep -q 'left with' $ULOGD_LOG
	echo "# status now: $(status)"
	wait "$(cat /tmp/bg.pid)"
	r=$?
	r=$r,$(tail -n1 /tmp/bg.out | cut -d';' -f5)
	check "our writes went on and finished ($(($(tail -n1 /tmp/bg.out | cut -d';' -f47) / 4)) writes; fio rc,error $r)" \
		[ "$r" = 0,0 ]
	cmd_sync 600
}

cmd_dump() {
	echo "# --- dm-ulogd log"; sed 's/^/# /' $ULOGD_LOG
	echo "# --- corosync log (tail)"; tail -n 30 $COROSYNC_LOG | sed 's/^/# /'
	echo "# --- status: $(status)"
}

cmd_finish() {
	local pid
	dmsetup remove $NAME || not_ok "mirror removed"
	dmsetup remove cl-leg1; dmsetup remove cl-leg0
	pid=$(ulogd_pid)
	if [ -n "$pid" ]; then
		kill "$pid"
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
	fi
	cmd_dump
	kill "$(cat /tmp/corosync.pid)" 2>/dev/null
	rmmod dm_log_userspace
	echo "1..$n"
}

# Boot.
hostname "n$NODE"
ip link set lo up
ip addr add "10.99.0.$NODE/24" dev eth0
ip link set eth0 up
mkdir -p /var/lib/corosync /var/log/corosync /run/corosync
echo "DMLU-CLUSTER-START node=$NODE boot=$BOOT kernel=$(uname -r) cpus=$(nproc)"
check "module loaded" insmod $MODULE
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

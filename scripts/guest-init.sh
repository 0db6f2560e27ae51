#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# /init of the test guest. Runs what the kernel command line asks for
# (dmlu.mode=check|demo|bench|stress|run, dmlu.args=...), writes its output to
# the second serial port, where the host reads it, and powers off.

export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs -o size=75% tmp /tmp
mount -t tmpfs run /run
mount -t debugfs debugfs /sys/kernel/debug
mkdir -p /dev/shm /dev/pts
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
mount -t tmpfs shm /dev/shm

arg() { sed -n "s/.*dmlu\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
mode=$(arg mode)
# Several arguments travel comma-separated.
args=$(arg args | tr ',' ' ')
# dmlu.repeat=N: the kselftests N times in a row (flakiness runs).
repeat=$(arg repeat)

# dmlu.env.NAME=VALUE on the command line becomes NAME=VALUE here.
for word in $(cat /proc/cmdline); do
	case "$word" in
	dmlu.env.*=*) word=${word#dmlu.env.}; export "${word%%=*}=${word#*=}" ;;
	esac
done
export DMLU_MODULE=${DMLU_MODULE:-/lib/modules/dmlu/rust/dm-log-userspace.ko}
export DMLU_C_MODULE=${DMLU_C_MODULE:-/lib/modules/dmlu/c/dm-log-userspace.ko}
export DM_DISABLE_UDEV=1
# Modules the kernel has as modules rather than built in (rootfs.sh).
if [ -f /etc/modules-preload ]; then
	for m in $(cat /etc/modules-preload); do modprobe "$m" || echo "modprobe $m failed" >/dev/ttyS1; done
fi

run() {
	echo "DMLU-GUEST-START mode=$mode kernel=$(uname -r) cpus=$(nproc)"
	case "$mode" in
	check)
		cd /kselftest || return 1
		set -- -c dm-log-userspace
		if [ -n "$args" ]; then
			set --
			for t in $args; do set -- "$@" -t "dm-log-userspace:$t"; done
		fi
		i=0
		while [ "$i" -lt "${repeat:-1}" ]; do
			i=$((i + 1))
			[ "${repeat:-1}" = 1 ] || echo "DMLU-REPEAT $i of $repeat"
			./run_kselftest.sh "$@"
		done
		;;
	run)
		# One command from the host, e.g. a benchmark or the demo.
		sh -c "$args"
		;;
	*)
		echo "unknown dmlu.mode '$mode'"
		return 1
		;;
	esac
}

run >/dev/ttyS1 2>&1
echo "DMLU-GUEST-DONE rc=$?" >/dev/ttyS1
sync
poweroff -f

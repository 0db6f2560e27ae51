#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# PID 1 of the package test's guest (scripts/deb-test.sh): a Debian root
# file system booted on Debian's own kernel. Installs the packages, checks
# that DKMS built our module for this kernel and that modprobe loads it,
# runs a mirror with a userspace log served by dm-ulogd, purges the
# packages and checks that nothing of them is left. Prints DEB-TEST lines.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
export DM_DISABLE_UDEV=1

krel=$(uname -r)
fails=0
ok() { echo "DEB-TEST ok: $*"; }
bad() { echo "DEB-TEST FAIL: $*"; fails=$((fails + 1)); }
check() { # description, command...
	d=$1; shift
	if "$@"; then ok "$d"; else bad "$d"; fi
}

# Every path of the system, but what apt, dpkg, logs and caches (man-db's
# index) change on their own, and the signing key DKMS makes once for all
# its modules: after the purge, any path not there before is one the
# packages left.
paths() {
	find /etc /usr /var /opt /srv -xdev \( -path /var/log -o -path /var/cache \
		-o -path /var/lib/apt -o -path /var/lib/dpkg -o -path /var/lib/dkms/mok.key \
		-o -path /var/lib/dkms/mok.pub \) -prune -o -print | sort
}

run() {
	echo "DEB-TEST start: kernel $krel"
	paths >/tmp/paths.before
	start=$(date +%s)
	# No network here: every dependency is already installed.
	if apt-get install -y /root/dm-log-userspace-dkms_*.deb /root/dm-ulogd_*.deb \
		>/tmp/apt.log 2>&1; then
		ok "apt-get install of both packages ($(($(date +%s) - start)) s)"
	else
		tail -n 40 /tmp/apt.log
		bad "apt-get install"
	fi
	tail -n 15 /tmp/apt.log
	ko=$(modinfo -n dm-log-userspace 2>/dev/null)
	case "$ko" in
	/lib/modules/$krel/updates/dkms/dm-log-userspace.ko*) ok "DKMS built the module for $krel: $ko" ;;
	*) bad "modinfo -n dm-log-userspace is '$ko', not DKMS's"
		cat /var/lib/dkms/dm-log-userspace/*/build/make.log 2>/dev/null | tail -n 30 ;;
	esac
	check "modprobe dm-log-userspace" modprobe dm-log-userspace
	# The loaded module, not the file: ours is out of tree, so it taints
	# the kernel with O; the in-tree C module does not.
	taint=$(cat /sys/module/dm_log_userspace/taint 2>/dev/null)
	case "$taint" in
	*O*) ok "the loaded module is ours (taint '$taint'): $(modinfo -F description dm-log-userspace)" ;;
	*) bad "the loaded dm_log_userspace is not out of tree (taint '$taint'): the in-tree C module" ;;
	esac

	modprobe loop
	dm-ulogd >/tmp/ulogd.log 2>&1 &
	ulogd=$!
	sleep 2
	truncate -s 32M /tmp/leg0 /tmp/leg1
	l0=$(losetup -f --show /tmp/leg0)
	l1=$(losetup -f --show /tmp/leg1)
	if dmsetup create m0 --table "0 65536 mirror userspace 4 deb-m0 clustered-core 1024 nosync 2 $l0 0 $l1 0 1 handle_errors"; then
		ok "a mirror with a userspace log"
		head -c 4194304 /dev/urandom >/tmp/data
		dd if=/tmp/data of=/dev/mapper/m0 bs=1M oflag=direct status=none
		dd if=/dev/mapper/m0 of=/tmp/back bs=1M count=4 iflag=direct status=none
		check "data written through the mirror reads back" cmp -s /tmp/data /tmp/back
		dd if="$l0" of=/tmp/back0 bs=1M count=4 iflag=direct status=none
		dd if="$l1" of=/tmp/back1 bs=1M count=4 iflag=direct status=none
		check "and is on the first leg" cmp -s /tmp/data /tmp/back0
		check "and on the second leg" cmp -s /tmp/data /tmp/back1
		echo "DEB-TEST status: $(dmsetup status m0)"
		check "dmsetup remove" dmsetup remove m0
	else
		bad "dmsetup create (server log: $(tail -n 5 /tmp/ulogd.log))"
	fi
	kill "$ulogd"; wait "$ulogd" 2>/dev/null
	losetup -d "$l0" "$l1"
	check "rmmod dm_log_userspace" rmmod dm_log_userspace

	if apt-get purge -y dm-log-userspace-dkms dm-ulogd >/tmp/purge.log 2>&1; then
		ok "apt-get purge"
	else
		tail -n 20 /tmp/purge.log
		bad "apt-get purge"
	fi
	paths >/tmp/paths.after
	left=$(comm -13 /tmp/paths.before /tmp/paths.after)
	if [ -z "$left" ]; then
		ok "purge left nothing ($(wc -l </tmp/paths.before) paths compared)"
	else
		bad "purge left: $(echo $left)"
	fi
	if modinfo -n dm-log-userspace 2>/dev/null | grep -q '/kernel/drivers/md/'; then
		ok "modprobe resolves dm-log-userspace to the in-tree module again"
	else
		bad "after purge, modinfo -n dm-log-userspace is '$(modinfo -n dm-log-userspace 2>&1)'"
	fi
}

run 2>&1
if [ "$fails" = 0 ]; then echo "DEB-TEST PASS"; else echo "DEB-TEST FAILED: $fails"; fi
sync
echo o >/proc/sysrq-trigger
sleep 10

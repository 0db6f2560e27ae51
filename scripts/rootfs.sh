#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Assemble the guest's root filesystem as an initramfs: busybox, the
# programs the tests drive (dmsetup, fio, bash, coreutils' timeout), both
# dm-log-userspace modules (ours and the kernel's C one), the userspace tools
# and the installed kselftests (and DMLU_GUEST_EXTRA, a directory, as
# /extra). Prints the path of the cpio archive.
#
# Usage: scripts/rootfs.sh <kernel build dir> <our .ko> <tools dir> <kselftest dir> <out dir>
. "$(dirname "$0")/lib.sh"

kbuild=${1:?} ko=${2:?} tools=${3:?} kst=${4:?} out=${5:?}
root="$out/rootfs"
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc,proc,sys,dev,tmp,run,mnt,root}
mkdir -p "$root/lib/modules/dmlu/rust" "$root/lib/modules/dmlu/c" "$root/usr/libexec/dmlu"

# busybox and its applets; the real programs below replace some of them.
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
	[ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done

# A dynamic program and the libraries it loads, stripped.
add_program() {
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
add_program /usr/bin/timeout /usr/bin/timeout
add_program /bin/dd /usr/bin/dd
add_program /usr/bin/kmod /usr/bin/kmod
ln -sf kmod "$root/usr/bin/modinfo"
# LVM2's cmirrord on a single-node corosync (tests-kselftest/cmirrord.sh).
cmirrord=$("$TOP/scripts/cmirrord.sh")
install -D -m 755 "$cmirrord/libdevmapper.so.1.02" "$root/lib/x86_64-linux-gnu/libdevmapper.so.1.02"
add_program "$cmirrord/cmirrord" /usr/sbin/cmirrord
for prog in corosync corosync-quorumtool corosync-cfgtool; do
	add_program "/usr/sbin/$prog" "/usr/sbin/$prog"
done
mkdir -p "$root/etc/corosync/uidgid.d" "$root/var/lib/corosync" "$root/var/log/corosync"
ln -s ../run "$root/var/run"

# Those the kselftests installed with them are linked, not copied twice.
for prog in "$tools"/*; do
	[ -f "$prog" ] && [ -x "$prog" ] || continue
	if [ -f "$kst/dm-log-userspace/${prog##*/}" ]; then
		ln -s "/kselftest/dm-log-userspace/${prog##*/}" "$root/usr/bin/"
	else
		install -m 755 "$prog" "$root/usr/bin/"
	fi
done

install -m 644 "$ko" "$root/lib/modules/dmlu/rust/dm-log-userspace.ko"
for m in drivers/md/dm-log-userspace.ko drivers/block/brd.ko; do
	[ -f "$kbuild/$m" ] && install -m 644 "$kbuild/$m" "$root/lib/modules/dmlu/c/"
done

# A kernel whose device-mapper, loop and brd are modules (Debian's): the
# modules with their modules.dep, and the list guest-init.sh loads first.
if [ -d "$kbuild/modules/lib/modules" ]; then
	cp -a "$kbuild/modules/lib" "$root/"
	install -m 644 "$kbuild/modules/preload" "$root/etc/modules-preload"
	ln -sf kmod "$root/usr/bin/modprobe"
fi

cp -a "$kst" "$root/kselftest"
# Extra files for one run (scripts/mutants.sh ships its modules so).
if [ -n "${DMLU_GUEST_EXTRA:-}" ]; then
	mkdir -p "$root/extra"
	cp -a "$DMLU_GUEST_EXTRA/." "$root/extra/"
fi
install -m 755 "$TOP/scripts/guest-init.sh" "$root/init"
cp -a "$TOP/scripts/guest/." "$root/usr/libexec/dmlu/" 2>/dev/null || true
# What guest.sh calls a splat, for tests that check fault-injection reports are not.
cp "$TOP/scripts/splat-patterns" "$root/usr/libexec/dmlu/"

cat >"$root/etc/passwd" <<'PW'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PW
cat >"$root/etc/group" <<'GR'
root:x:0:
nogroup:x:65534:
GR

(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) >"$out/initramfs.cpio"
printf '%s\n' "$out/initramfs.cpio"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make deb-check`: the Debian packages end to end on Debian's own kernel.
# Builds the source package (debian/) with dpkg-buildpackage in a chroot of
# the release the stock kernel was built on, then boots that kernel in QEMU
# on a copy of the chroot as its root file system (over virtio-9p), where:
# `apt-get install ./dm-log-userspace-dkms_*.deb ./dm-ulogd_*.deb` builds
# the module for the booted kernel through DKMS, `modprobe dm-log-userspace`
# loads ours (from updates/dkms, not the in-tree C module), a mirror with a
# userspace log served by dm-ulogd is written and read back, and
# `apt-get purge` removes every file the packages brought.
#
# The module's build by DKMS under TCG dominates the run.
#
# Usage: scripts/deb-test.sh [series]     (default: 7.3)
. "$(dirname "$0")/lib.sh"

series=${1:-7.3}
out="$TOP/out/deb-$series"
rm -rf "$out"
mkdir -p "$out"
tree=$("$TOP/scripts/stock-kernel.sh" dir "$series")
release=$(cat "$tree/include/config/kernel.release")
stock=$(dirname "$tree")
root=$(cat "$stock/chroot")
# The chroot's suites (debian-chroot.sh names it <suite>+<extra suite>...).
IFS=+ read -r -a suites <<<"$(basename "$root")"
extras=()
for s in "${suites[@]:1}"; do extras+=("linux-headers-$release/$s"); done

# What the guest needs to install and exercise the packages (dkms, dmsetup;
# no network there), and the tools to build them; their Build-Depends come
# from debian/control below.
log "guest packages in $(basename "$root")"
"$TOP/scripts/debian-chroot.sh" "${suites[0]}" "${extras[@]}" build-essential dpkg-dev \
	dkms dmsetup kmod util-linux >/dev/null

in_chroot() {
	local r=$1; shift
	unshare --mount --fork sh -c '
		r=$1; shift
		mount -t proc proc "$r/proc" && mount --rbind /dev "$r/dev" &&
		exec chroot "$r" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
			LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"' sh "$r" "$@"
}

# The packages, rebuilt when a tracked file changed.
src_hash=$(cd "$TOP" && git ls-files -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
if [ "$(cat "$root/build/.src-hash" 2>/dev/null)" != "$src_hash" ] || ! ls "$root"/build/*.deb >/dev/null 2>&1; then
	log "dpkg-buildpackage (log: $out/build.log)"
	rm -rf "$root/build" && mkdir -p "$root/build/src"
	git -C "$TOP" ls-files -z | (cd "$TOP" && xargs -0 cp --parents -d -t "$root/build/src")
	log "Build-Depends of debian/control (log: $out/build-dep.log)"
	quiet "$out/build-dep.log" in_chroot "$root" apt-get build-dep -y --no-install-recommends /build/src
	start=$(date +%s)
	quiet "$out/build.log" in_chroot "$root" sh -c 'cd /build/src && dpkg-buildpackage -us -uc -b'
	# dh_auto_test ran dm-ulogd's tests (not skipped, none failed).
	passed=$(grep -a '^test result: ok\.' "$out/build.log" | awk '{ n += $4 } END { print n + 0 }')
	[ "$passed" -gt 0 ] || die "dpkg-buildpackage ran no tests (see $out/build.log)"
	log "packages built in $(($(date +%s) - start)) s; $passed tests passed"
	printf '%s\n' "$src_hash" >"$root/build/.src-hash"
fi
cp "$root"/build/*.deb "$out/"
ls "$out"/*.deb >&2

# The guest's root: a copy of the chroot with the kernel's modules (the
# headers there were made usable for Rust by scripts/rust-headers.sh) and
# the packages to install.
log "guest root file system"
groot="$out/root"
cp -a "$root" "$groot"
rm -rf "$groot/build" "$groot/dmlu"
mkdir -p "$groot/lib/modules/$release"
cp -a "$stock/debs/usr/lib/modules/$release/." "$groot/lib/modules/$release/"
# With the guest's own depmod: the host's may write another set of index
# files (trixie's kmod adds modules.weakdep), which the guest's depmod
# would then add as if the packages had.
chroot "$groot" depmod "$release"
cp "$out"/*.deb "$groot/root/"
install -m 755 "$TOP/scripts/guest/deb-test-guest.sh" "$groot/sbin/dmlu-deb-test"

# A tiny initramfs: load virtio-9p, mount the root, switch to it. The
# guest is the root's only user while it runs: cache=loose lets it cache
# and read ahead (depmod and the DKMS build read hundreds of MB).
ird="$out/initramfs"
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/modules}
cp /bin/busybox "$ird/bin/"
for a in sh mount switch_root insmod mkdir echo poweroff; do ln -s busybox "$ird/bin/$a"; done
for m in netfs 9pnet 9pnet_virtio 9p; do
	f=$(find "$stock/debs/usr/lib/modules/$release/kernel" -name "$m.ko.xz" | head -n1)
	xz -dc "$f" >"$ird/lib/modules/$m.ko"
done
cat >"$ird/init" <<'EOF'
#!/bin/sh
mount -t proc proc /proc
mount -t devtmpfs dev /dev
for m in netfs 9pnet 9pnet_virtio 9p; do insmod /lib/modules/$m.ko; done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose root /newroot || { echo "no 9p root"; poweroff -f; }
exec switch_root /newroot /sbin/dmlu-deb-test
EOF
chmod 755 "$ird/init"
(cd "$ird" && find . | cpio -o -H newc --quiet) >"$out/initramfs.cpio"

log "booting Debian's $release on it (log: $out/console.log)"
start=$(date +%s)
timeout 7200 qemu-system-x86_64 -accel tcg -nodefaults -no-reboot -display none -smp 2 -m 3072 \
	-kernel "$tree/arch/x86/boot/bzImage" -initrd "$out/initramfs.cpio" \
	-append "console=ttyS0 panic=-1 rw no_timer_check" \
	-virtfs "local,path=$groot,mount_tag=root,security_model=passthrough,id=root" \
	-serial "file:$out/console.log" </dev/null >"$out/qemu.log" 2>&1 || true
log "guest ran $(($(date +%s) - start)) s"
grep -a '^DEB-TEST' "$out/console.log" >&2 || true
grep -aq '^DEB-TEST PASS' "$out/console.log" || die "the package test failed (see $out/console.log)"
rm -rf "$groot"
log "PASS"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Debian's own kernel of a series, unmodified, for the tests: its packages
# (linux-image, linux-modules, linux-headers) from the Debian archive, a
# Debian chroot with exactly the toolchain the kernel was built with (the
# suite whose rustc is the kernel's; its gcc and bindgen), the headers made
# usable for Rust modules there by scripts/rust-headers.sh (checked against
# the kernel's symbols), and our module built in that chroot against them.
# No kernel is built.
#
# Usage: scripts/stock-kernel.sh dir <series>
#          prepare everything (cached) and print a directory laid out like a
#          kernel build tree for scripts/guest.sh: arch/x86/boot/bzImage (the
#          kernel's vmlinuz), .config, source (the linux-source tree, for the
#          kselftests), drivers/md/dm-log-userspace.ko (the in-tree C module)
#          and modules/ (the kernel's modules the tests need, with their
#          dependencies, and preload: the ones to load first)
#        scripts/stock-kernel.sh module <series> <outdir> [make args]
#          build dm-log-userspace.ko against the stock headers in the chroot,
#          warning-free, and print its path
. "$(dirname "$0")/lib.sh"

action=${1:?usage: stock-kernel.sh dir|module <series> ...}
series=${2:?usage: stock-kernel.sh dir|module <series> ...}
shift 2

# The newest Debian kernel package of the series for amd64.
image=$(debian_apt_cache pkgnames "linux-image-$series." 2>/dev/null |
	grep -E "^linux-image-$series\.[0-9]+\+deb[0-9]+-amd64$" | sort -V | tail -n1)
[ -n "$image" ] || die "Debian has no linux-image-$series.*-amd64 (suites: $DEBIAN_SUITES)"
release=${image#linux-image-}
abi=${release%-amd64}
stock="$CACHE/stock/$release"
mkdir -p "$stock"

# The toolchain of the kernel, from its packaged .config.
fetch_debs() {
	local d
	# Since 7.x the image package is empty and depends on linux-binary
	# (the vmlinuz) and linux-modules.
	local pkgs=("linux-image-$release" "linux-modules-$release" "linux-headers-$release"
		"linux-headers-$abi-common" "linux-kbuild-$abi")
	debian_apt_cache show "linux-binary-$release" >/dev/null 2>&1 && pkgs+=("linux-binary-$release")
	for d in $(debian_download "${pkgs[@]}"); do
		dpkg -x "$d" "$stock/debs"
	done
}

chroot_for_kernel() {
	local config="$stock/debs/usr/src/linux-headers-$release/.config" rustc_text rustc_version
	local image_suite suite="" s
	rustc_text=$(sed -n 's/^CONFIG_RUSTC_VERSION_TEXT="\(.*\)"$/\1/p' "$config")
	[ -n "$rustc_text" ] || die "$release was built without Rust (no CONFIG_RUSTC_VERSION_TEXT)"
	rustc_version=$(cut -d' ' -f2 <<<"$rustc_text")
	image_suite=$(debian_apt_cache madison "linux-image-$release" | awk -F'|' '{print $3}' |
		awk '{print $2}' | cut -d/ -f1 | head -n1)
	# The suites whose rustc is the kernel's: the image's own if it is one.
	local matching
	matching=$(debian_apt_cache madison rustc | awk -F'|' -v v="$rustc_version" \
		'{gsub(/ /, "", $2)} index($2, v "+") == 1 {split($3, a, " "); split(a[2], b, "/"); print b[1]}')
	[ -n "$matching" ] || die "no Debian suite has rustc $rustc_version, which built $release"
	for s in $matching; do
		[ "$s" = "$image_suite" ] && suite=$s
	done
	suite=${suite:-$(head -n1 <<<"$matching")}
	local cc
	cc=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\([^ ]*\) .*/\1/p' "$config")
	cc=${cc#x86_64-linux-gnu-}
	local headers="linux-headers-$release"
	[ "$image_suite" = "$suite" ] || headers="$headers/$image_suite"
	"$TOP/scripts/debian-chroot.sh" "$suite" rustc rust-src bindgen "$cc" libclang-dev make flex \
		bison bc libelf-dev libssl-dev openssl python3 kmod cpio xz-utils rsync dwarves "$headers"
}

# Run a command in the chroot, with /proc and /dev, in a mount namespace of
# its own (nothing stays mounted when it ends).
in_chroot() {
	local root=$1; shift
	unshare --mount --fork sh -c '
		root=$1; shift
		mount -t proc proc "$root/proc" && mount --rbind /dev "$root/dev" &&
		exec chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
			LC_ALL=C.UTF-8 JOBS="$JOBS" "$@"' sh "$root" "$@"
}

# Our sources (what a module build needs, and the scripts) into the chroot.
copy_tree() {
	local root=$1
	mkdir -p "$root/dmlu"
	rsync -a --delete --exclude '*.o' --exclude '*.ko' --exclude '.*.cmd' \
		--exclude bindings_generated.rs \
		"$TOP/Kbuild" "$TOP/VERSION" "$TOP/Makefile" "$TOP/dkms.conf" "$TOP/src" "$TOP/include" \
		"$TOP/scripts" "$root/dmlu/"
}

prepare() {
	exec 9>"$stock/.lock"
	flock 9
	local key
	# Bump when rust-headers.sh or this recipe changes what they produce.
	key=$(content_hash "recipe=1")
	if [ -f "$stock/.done-$key" ]; then
		cat "$stock/.done-$key"
		return
	fi
	rm -rf "$stock/tree" "$stock"/.done-*
	if [ ! -f "$stock/.debs-done" ]; then
		rm -rf "$stock/debs"
		log "Debian's $release: fetching its packages"
		fetch_debs
		touch "$stock/.debs-done"
	fi
	local root
	root=$(chroot_for_kernel)

	# The headers made usable for Rust modules, from the matching
	# linux-source, in the chroot (as a user of that release would).
	local srctar
	if [ -f "$stock/.headers-$key" ] && [ -f "$root/usr/src/linux-headers-$release/rust/.rust-headers-installed" ]; then
		log "headers already made usable for Rust in $(basename "$root")"
	else
	srctar=$("$TOP/scripts/kernel-source.sh" "$series")
	install -D -m 644 "$srctar" "$root/usr/src/linux-source-$series.tar.xz"
	copy_tree "$root"
	log "rust-headers.sh in the $(basename "$root") chroot; log: $stock/rust-headers.log"
	local start
	start=$(date +%s)
	in_chroot "$root" /dmlu/scripts/rust-headers.sh --work /var/tmp/rust-headers \
		"/usr/src/linux-headers-$release" >"$stock/rust-headers.log" 2>&1 \
		|| { tail -n 30 "$stock/rust-headers.log" >&2; die "rust-headers.sh failed for $release"; }
	log "headers ready in $(($(date +%s) - start)) s: $(grep -o 'all [0-9]* Rust symbols.*' "$stock/rust-headers.log")"
	rm -rf "$root/var/tmp/rust-headers"
	touch "$stock/.headers-$key"
	fi

	# The tree scripts/guest.sh boots.
	local tree="$stock/tree" mods="$stock/debs/lib/modules/$release"
	[ -d "$mods" ] || mods="$stock/debs/usr/lib/modules/$release"
	mkdir -p "$tree/arch/x86/boot" "$tree/drivers/md" "$tree/drivers/block"
	local vmlinuz
	for vmlinuz in "$mods/vmlinuz" "$stock/debs/boot/vmlinuz-$release" ""; do
		[ -f "$vmlinuz" ] && break
	done
	[ -n "$vmlinuz" ] || die "no vmlinuz in Debian's packages of $release"
	cp "$vmlinuz" "$tree/arch/x86/boot/bzImage"
	cp "$stock/debs/usr/src/linux-headers-$release/.config" "$tree/.config"
	mkdir -p "$tree/include/config"
	printf '%s\n' "$release" >"$tree/include/config/kernel.release"
	ln -sfn "$("$TOP/scripts/kernel.sh" source "$series")" "$tree/source"
	# The modules the tests load, decompressed (busybox's insmod reads
	# plain ELF), with what they depend on; the C module beside them.
	local want=(dm-mod dm-log dm-region-hash dm-mirror dm-delay dm-flakey loop brd)
	local m f dep
	mkdir -p "$tree/modules/lib/modules/$release"
	cp "$mods"/modules.builtin* "$tree/modules/lib/modules/$release/" 2>/dev/null || true
	add_module() {
		local path
		path=$(cd "$mods" && find kernel -name "$1.ko*" | head -n1)
		[ -n "$path" ] || die "$release has no module $1"
		local out="$tree/modules/lib/modules/$release/${path%.xz}"
		mkdir -p "$(dirname "$out")"
		case "$path" in
		*.xz) xz -dc "$mods/$path" >"$out" ;;
		*) cp "$mods/$path" "$out" ;;
		esac
		for dep in $(modinfo -F depends "$out" | tr ',' ' '); do
			[ -f "$tree/modules/.have-$dep" ] || { touch "$tree/modules/.have-$dep"; add_module "$dep"; }
		done
	}
	for m in "${want[@]}"; do
		touch "$tree/modules/.have-$m"
		add_module "$m"
	done
	rm -f "$tree/modules"/.have-*
	depmod -b "$tree/modules" "$release" 2>/dev/null
	xz -dc "$(cd "$mods" && find "$PWD/kernel" -name 'dm-log-userspace.ko*' | head -n1)" \
		>"$tree/drivers/md/dm-log-userspace.ko"
	cp "$tree/modules/lib/modules/$release/kernel/drivers/block/brd.ko" "$tree/drivers/block/"
	printf '%s\n' dm-mod dm-mirror dm-delay dm-flakey loop >"$tree/modules/preload"
	printf '%s\n' "$root" >"$stock/chroot"
	printf '%s\n' "$tree" >"$stock/.done-$key"
	cat "$stock/.done-$key"
}

build_module() {
	local out=${1:?usage: stock-kernel.sh module <series> <outdir> [make args]}
	shift
	prepare >/dev/null
	local root
	root=$(cat "$stock/chroot")
	copy_tree "$root"
	mkdir -p "$out"
	out=$(cd "$out" && pwd)
	local ko
	if ! ko=$(in_chroot "$root" /dmlu/scripts/build-module.sh "/lib/modules/$release/build" \
		/var/tmp/dmlu-module "$@" 2>"$out/build.err"); then
		cat "$out/build.err" >&2
		die "the module did not build against Debian's $release"
	fi
	cp "$root/var/tmp/dmlu-module/build.log" "$out/build.log"
	cp "$root$ko" "$out/dm-log-userspace.ko"
	# modpost checked every symbol the module imports against the kernel's
	# Module.symvers; a warning there fails build-module.sh.
	printf '%s\n' "$out/dm-log-userspace.ko"
}

case "$action" in
dir) prepare ;;
module) build_module "$@" ;;
*) die "unknown action '$action' (dir, module)" ;;
esac

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Create (or reuse) a Debian chroot of one suite with the given packages and
# print its path. It provides the exact toolchain a Debian kernel was built
# with (its gcc, Debian's rustc and bindgen of that release) on a machine of
# another release, and a Debian root filesystem for the stock-kernel guest.
# The chroot lives under ~/.cache, one per suite (and extra suites); the
# packages asked for are installed into it when missing.
#
# Usage: scripts/debian-chroot.sh <suite> [package[/suite]...]
#   A package written name/suite comes from that suite (e.g. a kernel's
#   headers from trixie-backports); its suite is added to the chroot's
#   apt sources.
. "$(dirname "$0")/lib.sh"

suite=${1:?usage: debian-chroot.sh <suite> [packages...]}
shift
pkgs=("$@")

# The extra suites named by name/suite packages.
extra=()
for p in "${pkgs[@]}"; do
	case "$p" in */*) extra+=("${p#*/}") ;; esac
done
mapfile -t extra < <(printf '%s\n' "${extra[@]}" | sed '/^$/d' | sort -u)
root="$CACHE/chroot/$suite"
[ ${#extra[@]} -eq 0 ] || root="$root$(printf -- '+%s' "${extra[@]}")"
mkdir -p "$CACHE/chroot"
exec 9>"$root.lock"
flock 9

in_chroot() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
	DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }
# Install the packages missing from the chroot.
add_packages() {
	local missing=() p
	for p in "${pkgs[@]}"; do
		in_chroot dpkg-query -W -f='${Status}\n' "${p%%/*}" 2>/dev/null |
			grep -q '^install ok installed$' || missing+=("$p")
	done
	[ ${#missing[@]} -gt 0 ] || return 0
	log "installing into $(basename "$root"): ${missing[*]}"
	quiet "$root.apt.log" in_chroot apt-get install -y --no-install-recommends "${missing[@]}"
	in_chroot apt-get clean
}

if [ -f "$root/.done" ]; then
	add_packages
	printf '%s\n' "$root"
	exit 0
fi
[ "$(id -u)" = 0 ] || die "creating a chroot needs root"
command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap)"

rm -rf "$root"
log "debootstrap $suite into $root (a few minutes)"
start=$(date +%s)
quiet "$root.debootstrap.log" debootstrap --variant=minbase \
	--keyring=/usr/share/keyrings/debian-archive-keyring.gpg "$suite" "$root" "$DEBIAN_MIRROR"

{
	printf 'deb %s %s main\n' "$DEBIAN_MIRROR" "$suite"
	for s in "${extra[@]}"; do
		printf 'deb %s %s main\n' "$DEBIAN_MIRROR" "$s"
	done
} >"$root/etc/apt/sources.list"
# No daemons may start inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

quiet "$root.apt.log" in_chroot apt-get update
add_packages
log "chroot ready in $(($(date +%s) - start)) s"
touch "$root/.done"
printf '%s\n' "$root"

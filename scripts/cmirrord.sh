#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build (or reuse) LVM2's cmirrord, the cluster log server of LVM2, from
# Debian's own lvm2 source package (Debian builds lvm2 without it), and
# print the directory holding `cmirrord` and the `libdevmapper.so.1.02` it
# links. The build lives under ~/.cache, keyed by the source version and
# this recipe, so a second run costs nothing.
#
# The source comes with `apt-get source` from a private apt state that has
# a deb-src line for the machine's release, so the machine's own sources
# are left alone. Needs corosync's libcpg (libcpg-dev).
#
# Usage: scripts/cmirrord.sh
. "$(dirname "$0")/lib.sh"

# Bump when the recipe below changes.
RECIPE=1
CONFIGURE=(--enable-cmirrord --disable-readline --disable-udev_sync --disable-selinux
	--disable-blkid_wiping --disable-dmeventd --with-thin=none --with-cache=none
	--with-vdo=none --with-writecache=none --with-integrity=none)

codename=$(. /etc/os-release && echo "${VERSION_CODENAME:?}")
apt_dir="$CACHE/apt-src-$codename"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
printf 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' \
	"$mirror" "$codename" >"$apt_dir/sources.list"
apt_opts=(-o Dir::Etc::sourcelist="$apt_dir/sources.list" -o Dir::Etc::sourceparts=/dev/null
	-o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache::archives="$apt_dir/archives"
	-o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root)

# The version Debian has, from the lists (fetched once a day at most; one
# update at a time, as guests are prepared in parallel).
exec 8>"$apt_dir/.update.lock"
flock 8
lists_age=$(($(date +%s) - $(stat -c %Y "$apt_dir/lists/partial" 2>/dev/null || echo 0)))
if ! compgen -G "$apt_dir/lists/*_Sources*" >/dev/null || [ "$lists_age" -gt 86400 ]; then
	apt-get "${apt_opts[@]}" update -qq >/dev/null 2>&1 \
		|| die "apt-get update of the deb-src lists for $codename failed (network?)"
	touch "$apt_dir/lists/partial"
fi
version=$(apt-cache "${apt_opts[@]}" showsrc lvm2 2>/dev/null | sed -n 's/^Version: //p' | sort -V | tail -n1)
exec 8>&-
[ -n "$version" ] || die "no lvm2 source package in $codename's deb-src lists"

key=$(content_hash "$version" "${CONFIGURE[*]}" "recipe=$RECIPE")
dir="$CACHE/cmirrord/lvm2-$version-$key"
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if [ -f "$dir/.done" ]; then
	printf '%s\n' "$dir"
	exit 0
fi

for p in libcpg-dev libcorosync-common-dev pkg-config libaio-dev libblkid-dev dpkg-dev; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' \
		|| die "cmirrord needs $p: run scripts/deps.sh as root (DMLU_CLUSTER=1)"
done

src="$dir/src"
rm -rf "$src" "$dir/dl" && mkdir -p "$dir/dl"
log "fetching lvm2 $version source"
(cd "$dir/dl" && apt-get "${apt_opts[@]}" source --download-only "lvm2=$version" >"$dir/fetch.log" 2>&1) \
	|| die "apt-get source lvm2=$version failed (see $dir/fetch.log)"
quiet "$dir/unpack.log" dpkg-source -x "$dir"/dl/lvm2_*.dsc "$src"

log "building cmirrord from lvm2 $version; logs in $dir"
start=$(date +%s)
(cd "$src" && quiet "$dir/configure.log" ./configure "${CONFIGURE[@]}")
quiet "$dir/libdm.log" make -C "$src/libdm" -j"$JOBS"
quiet "$dir/cmirrord.log" make -C "$src/daemons/cmirrord"
install -m 755 "$src/daemons/cmirrord/cmirrord" "$dir/cmirrord"
install -m 755 "$src/libdm/ioctl/libdevmapper.so.1.02" "$dir/libdevmapper.so.1.02"
printf '%s\n' "$version" >"$dir/version"
rm -rf "$src" "$dir/dl"
log "built in $(($(date +%s) - start)) s"
touch "$dir/.done"
printf '%s\n' "$dir"
